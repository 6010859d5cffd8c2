//! The body of `POST /qiflow/api/alerts/silences`, checked: the operator surface
//! ([`crate::admin`]) turns it into a silence.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::model::parse_rfc3339;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    matchers: BTreeMap<String, String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    all: bool,
}

/// A silence asked for over HTTP, checked against `[alerts] max_silence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewSilence {
    pub(crate) matchers: BTreeMap<String, String>,
    pub(crate) expires_at: SystemTime,
    /// How long it lasts from when it was asked for.
    pub(crate) length: Duration,
    pub(crate) comment: String,
}

/// Parses and checks `{"matchers":{…},"duration":"2h"|"expires_at":"<RFC 3339>","comment":"…",
/// "all":false}`. A silence may last at most `max` from `now`; one whose matchers match every
/// alert (each value only `*`) needs `"all": true`. The error says what is wrong and how to fix
/// it.
pub(crate) fn parse_new_silence(
    body: &[u8],
    now: SystemTime,
    max: Duration,
) -> Result<NewSilence, String> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body must be JSON like {{\"matchers\":{{\"alertname\":\"disk_full\"}},\"duration\":\"2h\",\"comment\":\"…\"}}: {e}"
        )
    })?;
    let expires_at = match (&body.expires_at, &body.duration) {
        (Some(at), None) => parse_rfc3339(at)
            .ok_or_else(|| format!("expires_at: {at:?} is not an RFC 3339 time"))?,
        (None, Some(d)) => match humantime::parse_duration(d) {
            Ok(d) if d > Duration::ZERO => now.checked_add(d).ok_or_else(|| {
                format!("duration: {d:?} is too long; the most is [alerts] max_silence")
            })?,
            _ => {
                return Err(format!(
                    "duration: {d:?} is not a positive duration like \"2h\""
                ));
            }
        },
        _ => return Err("give exactly one of expires_at and duration".into()),
    };
    let length = expires_at.duration_since(now).unwrap_or_default();
    if length > max {
        return Err(format!(
            "the silence would last {}, longer than [alerts] max_silence ({}); ask for less, or \
             raise max_silence in the configuration",
            humantime::format_duration(round_to_seconds(length)),
            humantime::format_duration(max)
        ));
    }
    if body.matchers.is_empty() {
        return Err(
            "a silence needs at least one label matcher (one without would hide every alert)"
                .into(),
        );
    }
    if matches_everything(&body.matchers) && !body.all {
        return Err(
            "these matchers match every alert; to silence everything on purpose, add \"all\": true"
                .into(),
        );
    }
    Ok(NewSilence {
        matchers: body.matchers,
        expires_at,
        length,
        comment: body.comment,
    })
}

/// Whether every alert matches: each value is only `*`s (`""` matches a missing label only).
fn matches_everything(matchers: &BTreeMap<String, String>) -> bool {
    matchers
        .values()
        .all(|pattern| !pattern.is_empty() && pattern.bytes().all(|b| b == b'*'))
}

fn round_to_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn a_silence_is_capped_by_max_silence() {
        let ok = parse_new_silence(
            br#"{"matchers":{"alertname":"disk_full"},"duration":"24h"}"#,
            now(),
            DAY,
        )
        .unwrap();
        assert_eq!(ok.expires_at, now() + DAY);
        let e = parse_new_silence(
            br#"{"matchers":{"alertname":"disk_full"},"duration":"25h"}"#,
            now(),
            DAY,
        )
        .unwrap_err();
        assert!(e.contains("longer than [alerts] max_silence (1day)"), "{e}");
        let e = parse_new_silence(
            br#"{"matchers":{"alertname":"x"},"expires_at":"2099-01-01T00:00:00Z"}"#,
            now(),
            DAY,
        )
        .unwrap_err();
        assert!(e.contains("max_silence"), "{e}");
        let e = parse_new_silence(
            br#"{"matchers":{"alertname":"x"},"duration":"100000000000y"}"#,
            now(),
            DAY,
        )
        .unwrap_err();
        assert!(e.contains("longer than [alerts] max_silence"), "{e}");
    }

    #[test]
    fn silencing_everything_needs_all_true() {
        for matchers in [
            r#"{"alertname":"*"}"#,
            r#"{"alertname":"**","severity":"*"}"#,
        ] {
            let body = format!(r#"{{"matchers":{matchers},"duration":"1h"}}"#);
            let e = parse_new_silence(body.as_bytes(), now(), DAY).unwrap_err();
            assert!(e.contains("\"all\": true"), "{matchers}: {e}");
            let body = format!(r#"{{"matchers":{matchers},"duration":"1h","all":true}}"#);
            assert!(parse_new_silence(body.as_bytes(), now(), DAY).is_ok());
        }
        // Anything narrower is fine without it.
        for matchers in [
            r#"{"alertname":"*","severity":"warning"}"#,
            r#"{"alertname":"db*"}"#,
            r#"{"route":""}"#,
        ] {
            let body = format!(r#"{{"matchers":{matchers},"duration":"1h"}}"#);
            assert!(
                parse_new_silence(body.as_bytes(), now(), DAY).is_ok(),
                "{matchers}"
            );
        }
        let e = parse_new_silence(br#"{"matchers":{},"duration":"1h","all":true}"#, now(), DAY)
            .unwrap_err();
        assert!(e.contains("at least one label matcher"), "{e}");
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        for (body, expected) in [
            (&b"nope"[..], "must be JSON"),
            (br#"{"matchers":{"a":"b"}}"#, "exactly one of"),
            (
                br#"{"matchers":{"a":"b"},"duration":"1h","expires_at":"2030-01-01T00:00:00Z"}"#,
                "exactly one of",
            ),
            (br#"{"matchers":{"a":"b"},"duration":"-1h"}"#, "positive"),
            (br#"{"matchers":{"a":"b"},"expires_at":"soon"}"#, "RFC 3339"),
            (
                br#"{"matchers":{"a":"b"},"duration":"1h","extra":1}"#,
                "unknown field",
            ),
        ] {
            let e = parse_new_silence(body, now(), DAY).unwrap_err();
            assert!(
                e.contains(expected),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
