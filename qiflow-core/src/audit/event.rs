//! [`AuditEvent`]: who did what to which resource, and how it ended.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::logging::Redactor;
use crate::propagation::TraceId;
use crate::scope::RequestId;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The actor was not allowed to do it (401, 403, a failed login).
    Denied,
    /// It was allowed but failed (5xx, an error).
    Failure,
    /// It did not finish: the client went away (disconnected) before the response was sent,
    /// whether or not the handler ran.
    Aborted,
}

impl Outcome {
    /// The outcome's name as stored: `success`, `denied`, `failure` or `aborted`.
    ///
    /// ```
    /// use qiflow_core::audit::Outcome;
    /// assert_eq!(Outcome::Aborted.as_str(), "aborted");
    /// assert_eq!("aborted".parse::<Outcome>(), Ok(Outcome::Aborted));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
            Self::Aborted => "aborted",
        }
    }

    /// The outcome of an HTTP status: 401 and 403 are `denied`, 5xx `failure`, anything else
    /// `success`.
    ///
    /// ```
    /// use qiflow_core::audit::Outcome;
    /// assert_eq!(Outcome::from_status(403), Outcome::Denied);
    /// assert_eq!(Outcome::from_status(503), Outcome::Failure);
    /// assert_eq!(Outcome::from_status(201), Outcome::Success);
    /// ```
    pub fn from_status(status: u16) -> Self {
        match status {
            401 | 403 => Self::Denied,
            500..=599 => Self::Failure,
            _ => Self::Success,
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "success" => Ok(Self::Success),
            "denied" => Ok(Self::Denied),
            "failure" => Ok(Self::Failure),
            "aborted" => Ok(Self::Aborted),
            other => Err(format!(
                "unknown outcome {other:?}; use success, denied, failure or aborted"
            )),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest actor, action, resource or request id kept; longer values are cut (on a
/// character boundary) and marked.
pub const MAX_FIELD_LEN: usize = 1024;
/// The longest metadata (as JSON) kept; past it, the metadata is replaced by a note saying so.
pub const MAX_METADATA_LEN: usize = 16 * 1024;

/// One audit event: who (`actor`) did what (`action`) to what (`resource`), how it ended
/// (`outcome`), in which request and trace, with free-form `metadata`.
///
/// The id (UUID v7) and the timestamp (UTC, microseconds) are set when the event is built.
/// An event recorded inside a request without a request id or a trace id gets the request's
/// ([`Observer::audit`](crate::Observer::audit) fills them in).
/// Metadata keys that look like secrets (`password`, `token`, …, and `[logging] redact`) are
/// stored as `"[REDACTED]"` by [`Observer::audit`](crate::Observer::audit).
///
/// ```
/// use qiflow_core::audit::{AuditEvent, Outcome};
/// use qiflow_core::propagation::TraceId;
///
/// let event = AuditEvent::builder("alice", "user.login")
///     .resource("session")
///     .outcome(Outcome::Denied)
///     .request_id("req-1")
///     .trace_id(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap())
///     .metadata("reason", "bad password")
///     .build();
/// assert_eq!(event.actor(), "alice");
/// assert_eq!(event.trace_id().unwrap().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(event.outcome(), Outcome::Denied);
/// assert_eq!(event.metadata()["reason"], "bad password");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub(crate) id: uuid::Uuid,
    pub(crate) timestamp: OffsetDateTime,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) resource: String,
    pub(crate) outcome: Outcome,
    pub(crate) request_id: Option<String>,
    pub(crate) trace_id: Option<TraceId>,
    pub(crate) metadata: Map<String, Value>,
}

impl AuditEvent {
    /// A builder for an event by `actor` doing `action`. Defaults: resource `""`, outcome
    /// `success`, no request id, no metadata, timestamp now.
    pub fn builder(actor: impl Into<String>, action: impl Into<String>) -> AuditEventBuilder {
        AuditEventBuilder {
            actor: actor.into(),
            action: action.into(),
            resource: String::new(),
            outcome: Outcome::Success,
            request_id: None,
            trace_id: None,
            metadata: Map::new(),
            timestamp: None,
        }
    }

    /// The event id, a UUID v7.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// When the event happened (UTC, microsecond precision).
    pub fn timestamp(&self) -> OffsetDateTime {
        self.timestamp
    }

    /// Who acted.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// What they did.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// What they did it to.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The request it happened in.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The trace it happened in, stored as the record's `trace_id` (32 lowercase hex digits).
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    /// Fills in the request id and the trace id of `request` where the event has none.
    pub(crate) fn fill_from(&mut self, request: &RequestId) {
        if self.request_id.is_none() {
            self.request_id = Some(cap(request.as_str().to_owned()));
        }
        if self.trace_id.is_none() {
            self.trace_id = Some(request.trace().trace_id());
        }
    }

    /// Free-form details.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Replaces the values of sensitive metadata keys (at any depth) by `"[REDACTED]"`.
    pub(crate) fn redact(&mut self, redactor: &Redactor) {
        for (key, value) in self.metadata.iter_mut() {
            redact_value(key, value, redactor, 0);
        }
    }
}

fn redact_value(key: &str, value: &mut Value, redactor: &Redactor, depth: usize) {
    if redactor.is_sensitive(key) {
        *value = Value::String("[REDACTED]".into());
        return;
    }
    if depth >= 16 {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact_value(k, v, redactor, depth + 1);
            }
        }
        Value::Array(items) => {
            for v in items {
                redact_value(key, v, redactor, depth + 1);
            }
        }
        _ => {}
    }
}

/// Builds an [`AuditEvent`]; see [`AuditEvent::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AuditEventBuilder {
    actor: String,
    action: String,
    resource: String,
    outcome: Outcome,
    request_id: Option<String>,
    trace_id: Option<TraceId>,
    metadata: Map<String, Value>,
    timestamp: Option<SystemTime>,
}

impl AuditEventBuilder {
    /// What the action was done to (`user/42`, `invoice:2024-17`). Defaults to `""`.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = resource.into();
        self
    }

    /// How it ended. Defaults to [`Outcome::Success`].
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// The request it happened in (handlers get it from the `RequestId` extractor).
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// The trace it happened in. Inside a request, [`Observer::audit`](crate::Observer::audit)
    /// sets the request's when none is given; outside one (a job, a message consumer), pass the
    /// trace the work belongs to.
    pub fn trace_id(mut self, trace_id: TraceId) -> Self {
        self.trace_id = Some(trace_id);
        self
    }

    /// Adds one metadata entry (anything `serde_json::Value` converts from).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// When the event happened. Defaults to now (the system clock).
    pub fn timestamp(mut self, at: SystemTime) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// The event, with a new UUID v7 id.
    pub fn build(self) -> AuditEvent {
        let at = OffsetDateTime::from(self.timestamp.unwrap_or_else(SystemTime::now));
        // Microseconds: what PostgreSQL's timestamptz keeps, so both sinks hash the same value.
        let micros = at.nanosecond() / 1_000 * 1_000;
        let timestamp = at.replace_nanosecond(micros).unwrap_or(at);
        let mut metadata = canonical_map(self.metadata);
        if serde_json::to_vec(&metadata).map_or(0, |v| v.len()) > MAX_METADATA_LEN {
            metadata = Map::new();
            metadata.insert(
                "truncated".into(),
                Value::String(format!(
                    "metadata longer than {MAX_METADATA_LEN} bytes was dropped"
                )),
            );
        }
        AuditEvent {
            id: uuid::Uuid::now_v7(),
            timestamp,
            actor: cap(self.actor),
            action: cap(self.action),
            resource: cap(self.resource),
            outcome: self.outcome,
            request_id: self.request_id.map(cap),
            trace_id: self.trace_id,
            metadata,
        }
    }
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_FIELD_LEN {
        let mut end = MAX_FIELD_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("…[truncated]");
    }
    s
}

/// The same value with every object's keys in sorted order, whatever map type serde_json was
/// built with, so a record hashes the same after a round trip through any store.
pub(crate) fn canonical_value(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(canonical_map(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_value).collect()),
        other => other,
    }
}

pub(crate) fn canonical_map(map: Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(k, v)| (k, canonical_value(v)))
        .collect()
}
