//! Subject and body templates: text with `{{field}}` or `{{field|filter}}` placeholders.
//!
//! Fields: `name`, `level`, `LEVEL` (upper case), `summary`, `description`, `source`,
//! `fingerprint`, `status`, `count`, `times` (the count in words, with since when and how much of
//! it was counted before the last restart: [`Notice::times`]), `count_since`, `starts_at`,
//! `ends_at` (RFC 3339), `labels` (`k=v, k=v`), `labels.<key>`, `annotations` (`k=v, k=v`: the
//! request and trace ids of an alert raised in a request), `annotations.<key>`, `service`,
//! `environment`, `channel`; the SMS channel adds `to` and `message`.
//! Filters: `json` (escaped for the inside of a JSON string), `url` (percent-encoded), `upper`,
//! `oneline` (line breaks become spaces). An unknown field or filter is an error when the channel
//! is built, naming the template.

use std::borrow::Cow;

use super::model::{Notice, level_name, rfc3339};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    Json,
    Url,
    Upper,
    Oneline,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Field { name: String, filters: Vec<Filter> },
}

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// The fields every template may use (plus `labels.<key>` and `annotations.<key>`).
const FIELDS: &[&str] = &[
    "name",
    "level",
    "LEVEL",
    "summary",
    "description",
    "source",
    "fingerprint",
    "status",
    "count",
    "times",
    "count_since",
    "starts_at",
    "ends_at",
    "labels",
    "annotations",
    "service",
    "environment",
    "instance",
    "channel",
];

impl Template {
    /// Parses `text`; `extra` names fields the caller adds (SMS: `to`, `message`).
    pub(crate) fn parse(text: &str, extra: &[&str]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!(
                    "a \"{{{{\" at byte {} has no closing \"}}}}\"",
                    text.len() - rest.len() + start
                ));
            };
            let mut pieces = after[..end].split('|').map(str::trim);
            let name = pieces.next().unwrap_or_default().to_owned();
            if !(FIELDS.contains(&name.as_str())
                || extra.contains(&name.as_str())
                || ["labels.", "annotations."]
                    .iter()
                    .any(|prefix| name.strip_prefix(prefix).is_some_and(|k| !k.is_empty())))
            {
                return Err(format!(
                    "unknown field {{{{{name}}}}}; use one of {}, labels.<key>, annotations.<key>{}",
                    FIELDS.join(", "),
                    extra.iter().map(|e| format!(", {e}")).collect::<String>()
                ));
            }
            let mut filters = Vec::new();
            for f in pieces {
                filters.push(match f {
                    "json" => Filter::Json,
                    "url" => Filter::Url,
                    "upper" => Filter::Upper,
                    "oneline" => Filter::Oneline,
                    other => {
                        return Err(format!(
                            "unknown filter {other:?} in {{{{{name}|{other}}}}}; use json, url, upper or oneline"
                        ));
                    }
                });
            }
            parts.push(Part::Field { name, filters });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Renders with `lookup` giving each field's value (unknown ones render empty).
    pub(crate) fn render_with<'a>(&self, lookup: impl Fn(&str) -> Option<Cow<'a, str>>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field { name, filters } => {
                    let mut value: Cow<'_, str> = lookup(name).unwrap_or_default();
                    for f in filters {
                        value = Cow::Owned(apply(f, &value));
                    }
                    out.push_str(&value);
                }
            }
        }
        out
    }

    /// Renders over one alert of a notification.
    pub(crate) fn render(
        &self,
        ctx: &Context<'_>,
        notice: &Notice,
        extra: &[(&str, &str)],
    ) -> String {
        self.render_with(|name| {
            if let Some((_, v)) = extra.iter().find(|(k, _)| *k == name) {
                return Some(Cow::Owned((*v).to_owned()));
            }
            field(ctx, notice, name)
        })
    }
}

/// What a template sees besides the alert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// `[service] name`.
    pub(crate) service: &'a str,
    /// `[service] environment`.
    pub(crate) environment: &'a str,
    /// `[service] instance`.
    pub(crate) instance: &'a str,
    /// The channel's name.
    pub(crate) channel: &'a str,
}

pub(crate) fn field<'a>(ctx: &Context<'_>, notice: &Notice, name: &str) -> Option<Cow<'a, str>> {
    let a = &notice.alert;
    let v = match name {
        "name" => a.name.clone(),
        "level" => level_name(a.level).to_owned(),
        "LEVEL" => level_name(a.level).to_uppercase(),
        "summary" => a.summary.clone(),
        "description" => a.description.clone(),
        "source" => a.source.clone(),
        "fingerprint" => notice.fingerprint.clone(),
        "status" => a.status.as_str().to_owned(),
        "count" => notice.count.to_string(),
        "times" => notice.times(),
        "count_since" => notice.since.map(rfc3339).unwrap_or_default(),
        "starts_at" => a.starts_at.map(rfc3339).unwrap_or_default(),
        "ends_at" => a.ends_at.map(rfc3339).unwrap_or_default(),
        "labels" => pairs(&a.labels),
        "annotations" => pairs(&a.annotations),
        "service" => ctx.service.to_owned(),
        "environment" => ctx.environment.to_owned(),
        "instance" => ctx.instance.to_owned(),
        "channel" => ctx.channel.to_owned(),
        other => match other.strip_prefix("labels.") {
            Some(key) => a.labels.get(key)?.clone(),
            None => a
                .annotations
                .get(other.strip_prefix("annotations.")?)?
                .clone(),
        },
    };
    Some(Cow::Owned(v))
}

/// `k=v, k=v`.
fn pairs(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn apply(filter: &Filter, value: &str) -> String {
    match filter {
        Filter::Json => {
            let quoted = serde_json::to_string(value).unwrap_or_default();
            quoted[1..quoted.len().saturating_sub(1).max(1)].to_owned()
        }
        Filter::Url => {
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        }
        Filter::Upper => value.to_uppercase(),
        Filter::Oneline => oneline(value),
    }
}

/// `text` with every line break (CR, LF and the Unicode line separators) replaced by a space.
pub(crate) fn oneline(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' | '\n' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => ' ',
            c => c,
        })
        .collect()
}

/// `text` cut to at most `max` characters, ending with `…` when cut.
#[cfg_attr(not(feature = "http-channels"), allow(dead_code))] // for the SMS channel
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, AlertLevel};

    fn ctx() -> Context<'static> {
        Context {
            service: "svc",
            environment: "prod",
            instance: "web-1",
            channel: "ops",
        }
    }

    #[test]
    fn renders_fields_labels_and_filters() {
        let t = Template::parse(
            "[{{LEVEL}}] {{name}} on {{labels.host}} x{{count}}: {{summary|json}} {{summary|url}}",
            &[],
        )
        .unwrap();
        let n = Notice::new(
            Alert::new("disk", AlertLevel::Error)
                .summary("a \"b\" c")
                .label("host", "db-1"),
            3,
        );
        assert_eq!(
            t.render(&ctx(), &n, &[]),
            "[ERROR] disk on db-1 x3: a \\\"b\\\" c a%20%22b%22%20c"
        );
    }

    #[test]
    fn the_default_body_says_how_much_of_the_count_is_from_before_the_last_restart() {
        use std::time::{Duration, UNIX_EPOCH};

        let body = Template::parse(crate::alert::channels::DEFAULT_BODY, &[]).unwrap();
        let mut n = Notice::new(Alert::new("disk", AlertLevel::Error), 250);
        n.since = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        n.before_restart = 200;
        let text = body.render(&ctx(), &n, &[]);
        assert!(
            text.starts_with(
                "ERROR disk is firing (raised 250 times since 2027-01-15T08:00:00Z, \
                 including 200 before the last restart)\n"
            ),
            "{text}"
        );
        let fields = Template::parse("{{count}} {{count_since}}", &[]).unwrap();
        assert_eq!(fields.render(&ctx(), &n, &[]), "250 2027-01-15T08:00:00Z");
        // Nothing from before: no mention of a restart.
        n.before_restart = 0;
        assert!(!body.render(&ctx(), &n, &[]).contains("restart"));
    }

    #[test]
    fn unknown_fields_and_filters_are_errors() {
        assert!(
            Template::parse("{{nope}}", &[])
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            Template::parse("{{name|shout}}", &[])
                .unwrap_err()
                .contains("unknown filter")
        );
        assert!(
            Template::parse("{{name", &[])
                .unwrap_err()
                .contains("no closing")
        );
        assert!(Template::parse("{{to}}", &["to"]).is_ok());
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("héllo wörld", 5), "héll…");
        assert_eq!(truncate_chars("short", 5), "short");
        assert_eq!(oneline("a\r\nb"), "a  b");
    }
}
