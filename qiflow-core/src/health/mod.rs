//! Health reports served at `/health/live`, `/health/ready` and `/health`.
//!
//! The JSON shape is `{"status":"healthy"|"degraded"|"unhealthy","checks":{…}, …}`; adapters
//! answer 503 when [`HealthReport::http_status`] says so.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Observer;

/// Overall or per-check health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Everything works.
    Healthy,
    /// Working, with a problem worth a look (answered with 200).
    Degraded,
    /// Not able to serve (answered with 503).
    Unhealthy,
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CheckResult {
    /// The check's status.
    pub status: Status,
    /// What was found, for humans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A health report, serialized as the endpoints' JSON body.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The worst status of all checks.
    pub status: Status,
    /// Per-check results, by check name.
    pub checks: BTreeMap<String, CheckResult>,
    /// `[service] name`.
    pub service: String,
    /// `[service] version`.
    pub version: String,
    /// Seconds since the observer was built.
    pub uptime_seconds: u64,
}

impl HealthReport {
    /// Liveness: the process is up and its background worker answers.
    pub(crate) fn live(observer: &Observer) -> Self {
        let service = &observer.config().service;
        Self {
            status: Status::Healthy,
            checks: BTreeMap::new(),
            service: service.name.clone(),
            version: service.version.clone(),
            uptime_seconds: observer.uptime().as_secs(),
        }
    }

    /// Readiness: the state of every pipeline.
    pub(crate) fn ready(observer: &Observer) -> Self {
        let mut report = Self::live(observer);
        for stats in observer.stats() {
            let (status, detail) = if stats.dropped_sink_error > 0 {
                (
                    Status::Degraded,
                    Some(format!(
                        "{} dropped (sink errors {}, queue full {}, shutdown {})",
                        stats.dropped(),
                        stats.dropped_sink_error,
                        stats.dropped_queue_full,
                        stats.dropped_shutdown
                    )),
                )
            } else if stats.dropped() > 0 {
                (
                    Status::Healthy,
                    Some(format!(
                        "{} dropped (queue full {})",
                        stats.dropped(),
                        stats.dropped_queue_full
                    )),
                )
            } else {
                (Status::Healthy, None)
            };
            report.status = report.status.max(status);
            report.checks.insert(
                format!("pipeline:{}", stats.name),
                CheckResult { status, detail },
            );
        }
        report
    }

    /// The HTTP status code to answer with: 503 when unhealthy, else 200.
    pub fn http_status(&self) -> u16 {
        match self.status {
            Status::Unhealthy => 503,
            Status::Healthy | Status::Degraded => 200,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"status":"unhealthy","checks":{}}"#.to_owned())
    }
}
