//! The local store of error groups behind `/qiflow/api/errors`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use super::{ErrorKind, ErrorReport, Severity, Stacktrace};

/// One group of reports with the same fingerprint (error type, normalized message, route).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ErrorGroup {
    /// The grouping key.
    pub fingerprint: String,
    /// The outermost error type.
    pub type_name: String,
    /// The message of the latest report.
    pub message: String,
    /// The whole chain of the latest report, joined with `": "`.
    pub chain: String,
    /// The route, when the reports came from requests.
    pub route: Option<String>,
    /// Where the latest report came from.
    pub kind: ErrorKind,
    /// The highest severity seen.
    pub severity: Severity,
    /// Reports in the group since the process started.
    pub count: u64,
    /// The first report's time.
    #[serde(with = "super::rfc3339")]
    pub first_seen: SystemTime,
    /// The latest report's time.
    #[serde(with = "super::rfc3339")]
    pub last_seen: SystemTime,
    /// The latest report's request id, to find its log lines.
    pub last_request_id: Option<String>,
    /// The latest report's trace id (W3C), to find its trace.
    pub last_trace_id: Option<String>,
    /// The latest report's HTTP status.
    pub last_status: Option<u16>,
    /// The latest report's stack trace (panics), resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<Stacktrace>,
}

/// Error groups, bounded: past `capacity` groups the least recently seen one is evicted (and
/// counted in [`ErrorStore::evicted`]).
#[derive(Debug)]
pub struct ErrorStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<String, ErrorGroup>,
    recorded: u64,
    evicted: u64,
}

/// The JSON served at `/qiflow/api/errors`.
#[derive(Debug, Serialize)]
struct View<'a> {
    /// Reports recorded since the start.
    recorded: u64,
    /// Groups evicted to keep the store bounded.
    evicted: u64,
    capacity: usize,
    /// Newest first.
    groups: &'a [ErrorGroup],
}

impl ErrorStore {
    /// A store of at most `capacity` groups (`[errors] recent_capacity`).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a report to its group.
    pub fn record(&self, report: &ErrorReport) {
        let mut inner = self.lock();
        inner.recorded += 1;
        let request_id = report.request.as_ref().map(|r| r.request_id.clone());
        let trace_id = report.request.as_ref().and_then(|r| r.trace_id.clone());
        if let Some(group) = inner.groups.get_mut(&report.fingerprint) {
            group.count += 1;
            group.last_seen = group.last_seen.max(report.timestamp);
            group.message = report.detail.top_message().to_owned();
            group.chain = report.detail.to_string();
            group.kind = report.kind;
            group.severity = group.severity.max(report.severity);
            group.last_request_id = request_id;
            group.last_trace_id = trace_id;
            group.last_status = report.status;
            group.stacktrace.clone_from(&report.stacktrace);
            return;
        }
        if inner.groups.len() >= self.capacity {
            let oldest = inner
                .groups
                .values()
                .min_by_key(|g| g.last_seen)
                .map(|g| g.fingerprint.clone());
            if let Some(oldest) = oldest {
                inner.groups.remove(&oldest);
                inner.evicted += 1;
            }
        }
        inner.groups.insert(
            report.fingerprint.clone(),
            ErrorGroup {
                fingerprint: report.fingerprint.clone(),
                type_name: report.detail.type_name().to_owned(),
                message: report.detail.top_message().to_owned(),
                chain: report.detail.to_string(),
                route: report.route().map(str::to_owned),
                kind: report.kind,
                severity: report.severity,
                count: 1,
                first_seen: report.timestamp,
                last_seen: report.timestamp,
                last_request_id: request_id,
                last_trace_id: trace_id,
                last_status: report.status,
                stacktrace: report.stacktrace.clone(),
            },
        );
    }

    /// The groups, most recently seen first.
    pub fn groups(&self) -> Vec<ErrorGroup> {
        let mut groups: Vec<ErrorGroup> = self.lock().groups.values().cloned().collect();
        groups.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| b.count.cmp(&a.count))
        });
        groups
    }

    /// Reports recorded since the start.
    pub fn recorded(&self) -> u64 {
        self.lock().recorded
    }

    /// Groups evicted to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// The JSON document of `/qiflow/api/errors`:
    /// `{"recorded":…,"evicted":…,"capacity":…,"groups":[…]}`, newest group first.
    pub fn to_json(&self) -> String {
        let groups = self.groups();
        let (recorded, evicted) = {
            let inner = self.lock();
            (inner.recorded, inner.evicted)
        };
        serde_json::to_string(&View {
            recorded,
            evicted,
            capacity: self.capacity,
            groups: &groups,
        })
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialize the error store: {e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{ErrorDetail, fingerprint};
    use std::time::Duration;

    fn report(message: &str, at: u64) -> ErrorReport {
        let mut r = ErrorReport::new(
            ErrorKind::Manual,
            Severity::Error,
            ErrorDetail::message(Some("E"), message),
        );
        r.timestamp = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
        r.fingerprint = fingerprint("E", message, None);
        r
    }

    #[test]
    fn groups_count_and_the_store_stays_bounded() {
        let store = ErrorStore::new(2);
        store.record(&report("user 1 missing", 1));
        store.record(&report("user 2 missing", 2));
        store.record(&report("disk full", 3));
        let groups = store.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].message, "disk full");
        assert_eq!(groups[1].count, 2);
        assert_eq!(groups[1].message, "user 2 missing");
        store.record(&report("timeout", 4));
        assert_eq!(store.evicted(), 1, "the least recently seen group goes");
        assert!(store.groups().iter().all(|g| g.message != "user 2 missing"));
        let json: serde_json::Value = serde_json::from_str(&store.to_json()).unwrap();
        assert_eq!(json["recorded"], 4);
        assert_eq!(json["groups"][0]["message"], "timeout");
        assert_eq!(json["groups"][0]["first_seen"], "1970-01-01T00:00:04.000Z");
    }
}
