//! Silences: label matchers that hold back matching alerts until they expire.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A silence: alerts whose labels (plus `alertname` and `severity`) match every matcher are not
/// sent until `expires_at`. From `[[alerts.silences]]` or [`Alerts::silence`](super::Alerts::silence)
/// (and `POST /qiflow/api/alerts/silences`); they survive restarts in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Silence {
    /// Its id (for removing it).
    pub id: String,
    /// Label matchers (`*` in a value matches any run of characters).
    pub matchers: BTreeMap<String, String>,
    /// When it ends (RFC 3339 in JSON).
    #[serde(with = "super::model::time_req")]
    pub expires_at: SystemTime,
    /// Why.
    pub comment: String,
    /// `"config"` or `"api"`.
    pub created_by: String,
}

impl Silence {
    /// Whether it is in force at `now`.
    pub fn active(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }

    /// Whether `labels` match every matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        matchers_match(&self.matchers, labels)
    }
}

/// Whether `labels` match every matcher (a missing label matches only `""` or `"*"`).
pub(crate) fn matchers_match(
    matchers: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    matchers.iter().all(|(k, pattern)| {
        glob(
            pattern,
            labels.get(k).map(String::as_str).unwrap_or_default(),
        )
    })
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match remaining.find(piece) {
            Some(i) => remaining = &remaining[i + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("db-*", "db-1"));
        assert!(glob("*", ""));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(!glob("db-*", "web-1"));
        assert!(glob("exact", "exact"));
        assert!(!glob("*ab", "b"));
    }

    #[test]
    fn missing_labels_match_only_empty_or_star() {
        let labels = BTreeMap::from([("host".to_owned(), "db-1".to_owned())]);
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(matchers_match(&m("host", "db-*"), &labels));
        assert!(!matchers_match(&m("route", "/x"), &labels));
        assert!(matchers_match(&m("route", "*"), &labels));
    }
}
