//! The [`Alert`] and the [`Notification`] a channel receives.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::config::AlertLevel;

/// Whether an alert is firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition is over.
    Resolved,
}

impl AlertStatus {
    /// `"firing"` or `"resolved"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// The lowercase name of a level (`"warning"`).
pub fn level_name(level: AlertLevel) -> &'static str {
    match level {
        AlertLevel::Info => "info",
        AlertLevel::Warning => "warning",
        AlertLevel::Error => "error",
        AlertLevel::Critical => "critical",
    }
}

/// Something worth telling a human: raised with [`Observer::alert`](crate::Observer::alert).
///
/// Two alerts with the same fingerprint are the same alert: repeats within `[alerts] cooldown`
/// are counted, not sent. The fingerprint defaults to a hash of the name and labels; set one with
/// [`Alert::fingerprint`] to choose what counts as "the same".
///
/// ```
/// use qiflow_core::alert::{Alert, AlertLevel};
///
/// let alert = Alert::new("disk_full", AlertLevel::Critical)
///     .summary("/var is 97% full")
///     .label("host", "db-1")
///     .source("disk-monitor");
/// assert_eq!(alert.level(), AlertLevel::Critical);
/// // The same name and labels give the same fingerprint.
/// let again = Alert::new("disk_full", AlertLevel::Critical).label("host", "db-1");
/// assert_eq!(alert.fingerprint_value(), again.fingerprint_value());
/// // Resolving it later:
/// let resolved = again.resolved();
/// assert!(resolved.is_resolved());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Alert {
    /// The alert's name (`alertname` in Alertmanager): what is wrong, as an identifier.
    pub name: String,
    /// Severity.
    pub level: AlertLevel,
    /// One line for humans.
    pub summary: String,
    /// More detail for humans.
    pub description: String,
    /// Labels: what the alert is about (`route`, `host`); they select channels and silences,
    /// and (unless a fingerprint is set) make the alert's identity.
    pub labels: BTreeMap<String, String>,
    /// Annotations: facts about this occurrence that are not its identity (`request_id`,
    /// `trace_id` of the request that raised it). Shown by the channels (Alertmanager's
    /// annotations, the webhook's `annotations`, `{{annotations}}` in templates); never part of
    /// the fingerprint, nor matched by silences.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The channels it goes to, by name; empty (the default): every channel whose level and
    /// matchers take it. Never part of the fingerprint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// What raised it (`"baseline"`, `"errors"`, a component name).
    pub source: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// When the alert started (set when it is raised, if not given).
    #[serde(with = "time_opt")]
    pub starts_at: Option<SystemTime>,
    /// When a resolved alert ended (set when it is resolved, if not given).
    #[serde(with = "time_opt")]
    pub ends_at: Option<SystemTime>,
    fingerprint: Option<String>,
}

impl Alert {
    /// A firing alert named `name` at `level`, with nothing else set.
    pub fn new(name: impl Into<String>, level: AlertLevel) -> Self {
        Self {
            name: name.into(),
            level,
            summary: String::new(),
            description: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            channels: Vec::new(),
            source: String::new(),
            status: AlertStatus::Firing,
            starts_at: None,
            ends_at: None,
            fingerprint: None,
        }
    }

    /// Sets the one-line summary.
    #[must_use]
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds (or replaces) a label.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds (or replaces) an annotation: a fact about this occurrence (an id, a link) that
    /// must not make it a different alert.
    ///
    /// ```
    /// use qiflow_core::alert::{Alert, AlertLevel};
    ///
    /// let first = Alert::new("payment_failed", AlertLevel::Error).annotation("order", "17");
    /// let second = Alert::new("payment_failed", AlertLevel::Error).annotation("order", "18");
    /// assert_eq!(first.fingerprint_value(), second.fingerprint_value());
    /// ```
    #[must_use]
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sends the alert to the channel `name` only (call again to add more), instead of every
    /// channel whose level and matchers take it. A name no channel has sends it nowhere.
    ///
    /// ```
    /// use qiflow_core::alert::{Alert, AlertLevel};
    ///
    /// let alert = Alert::new("backup_failed", AlertLevel::Error).channel("oncall-email");
    /// assert_eq!(alert.channels, ["oncall-email"]);
    /// ```
    #[must_use]
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.push(name.into());
        self
    }

    /// Sets what raised the alert.
    #[must_use]
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the fingerprint: alerts with the same one are deduplicated. Defaults to a hash of
    /// the name and labels.
    #[must_use]
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// Sets when the alert started. Defaults to when it is raised.
    #[must_use]
    pub fn starts_at(mut self, at: SystemTime) -> Self {
        self.starts_at = Some(at);
        self
    }

    /// This alert, resolved: raising it sends a resolved notification to the channels that were
    /// told it fired (matched by fingerprint), and ends it in `/qiflow/api/alerts`.
    #[must_use]
    pub fn resolved(mut self) -> Self {
        self.status = AlertStatus::Resolved;
        self
    }

    /// A resolved alert for `fingerprint`, for callers that kept only the fingerprint.
    pub fn resolve(fingerprint: impl Into<String>) -> Self {
        Self::new("", AlertLevel::Info)
            .fingerprint(fingerprint)
            .resolved()
    }

    /// The severity.
    pub fn level(&self) -> AlertLevel {
        self.level
    }

    /// Whether this is a resolved alert.
    pub fn is_resolved(&self) -> bool {
        self.status == AlertStatus::Resolved
    }

    /// The fingerprint: the one set, else a hex SHA-256 prefix of the name and labels.
    pub fn fingerprint_value(&self) -> String {
        if let Some(fp) = &self.fingerprint {
            return fp.clone();
        }
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        for (k, v) in &self.labels {
            hasher.update([0u8]);
            hasher.update(k.as_bytes());
            hasher.update([1u8]);
            hasher.update(v.as_bytes());
        }
        hex::encode(&hasher.finalize()[..8])
    }

    /// The labels plus `alertname` (the name) and `severity` (the level), which matchers see.
    pub fn match_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("alertname".into(), self.name.clone());
        labels.insert("severity".into(), level_name(self.level).into());
        labels
    }

    pub(crate) fn set_fingerprint(&mut self, fingerprint: String) {
        self.fingerprint = Some(fingerprint);
    }
}

/// One alert inside a [`Notification`], with how often it was raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notice {
    /// The alert (its latest occurrence).
    pub alert: Alert,
    /// The fingerprint.
    pub fingerprint: String,
    /// How many times it was raised since the last notification about it (at least 1): the
    /// repeats that `[alerts] cooldown` held back are counted here, including those an earlier
    /// run of the service counted ([`Notice::before_restart`]).
    pub count: u64,
    /// Since when `count` was counted: the previous notification about this alert, or when it
    /// was first seen. `None` when not known (a notice made by hand).
    #[serde(default, with = "time_opt", skip_serializing_if = "Option::is_none")]
    pub since: Option<SystemTime>,
    /// How many of `count` were counted before the service last restarted: held back by the
    /// cooldown, kept in `[alerts] state_file`, and carried into this run's first notification.
    #[serde(default)]
    pub before_restart: u64,
}

/// What a channel sends: one or more alerts gathered within `[alerts] group_wait`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notification {
    /// The channel's name.
    pub channel: String,
    /// `[service] name`.
    pub service: String,
    /// `[service] environment`.
    pub environment: String,
    /// `[service] instance`: which instance of the service sends it.
    #[serde(default)]
    pub instance: String,
    /// The alerts, in the order they were raised.
    pub alerts: Vec<Notice>,
}

impl Notification {
    /// A notification of `alerts` for `channel` (channels and tests build them this way).
    pub fn new(channel: impl Into<String>, alerts: Vec<Notice>) -> Self {
        Self {
            channel: channel.into(),
            service: String::new(),
            environment: String::new(),
            instance: String::new(),
            alerts,
        }
    }

    /// The highest level in the notification.
    pub fn level(&self) -> AlertLevel {
        self.alerts
            .iter()
            .map(|n| n.alert.level)
            .max()
            .unwrap_or(AlertLevel::Info)
    }

    /// `firing` if any alert fires, else `resolved`.
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|n| !n.alert.is_resolved()) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }
}

impl Notice {
    /// A notice of `alert` raised `count` times.
    pub fn new(alert: Alert, count: u64) -> Self {
        Self {
            fingerprint: alert.fingerprint_value(),
            alert,
            count,
            since: None,
            before_restart: 0,
        }
    }

    /// The count in words, as the default templates show it (`{{times}}`): `once`, `50 times
    /// since 2026-12-06T10:00:00Z`, and, when part of it was counted before the last restart,
    /// `250 times since 2026-12-06T10:00:00Z, including 200 before the last restart`.
    ///
    /// ```
    /// use qiflow_core::alert::{Alert, AlertLevel, Notice};
    ///
    /// let notice = Notice::new(Alert::new("disk_full", AlertLevel::Error), 1);
    /// assert_eq!(notice.times(), "once");
    /// let notice = Notice::new(Alert::new("disk_full", AlertLevel::Error), 3);
    /// assert_eq!(notice.times(), "3 times");
    /// ```
    pub fn times(&self) -> String {
        let mut text = match self.count {
            0 | 1 => "once".to_owned(),
            n => format!("{n} times"),
        };
        if let Some(since) = self.since.filter(|_| self.count > 1) {
            text.push_str(" since ");
            text.push_str(&rfc3339(since));
        }
        if self.before_restart > 0 {
            text.push_str(&format!(
                ", including {} before the last restart",
                self.before_restart.min(self.count)
            ));
        }
        text
    }
}

/// RFC 3339 text of a time, in UTC.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

pub(crate) mod time_req {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*at))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }
}

pub(crate) mod time_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        at: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&super::rfc3339(*at)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        Ok(text.and_then(|t| super::parse_rfc3339(&t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_16_hex_digits_of_the_name_and_labels_digest() {
        // Fingerprints are kept in the state file across restarts: the format must never change.
        let alert = Alert::new("disk_full", AlertLevel::Critical).label("host", "db-1");
        assert_eq!(alert.fingerprint_value(), "f13c187eafdac40b");
        let set = Alert::new("disk_full", AlertLevel::Critical).fingerprint("mine");
        assert_eq!(set.fingerprint_value(), "mine");
    }
}
