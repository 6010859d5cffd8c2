//! `GET /qiflow/api/overview`: what the dashboard shows, gathered from the capabilities that own
//! it (see [`crate::dashboard`]). The health checks and the audit verification are cached here,
//! so any number of open pages costs one run of each per period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};

use super::Observer;
use crate::admin::{AdminResponse, Admitted};
use crate::dashboard::history::{Current, HistoryView, Traffic};
use crate::dashboard::{HEALTH_EVERY, POINTS, STEP, VERIFY_EVERY};
use crate::health::HealthReport;

/// The error groups and audit records the overview lists (the newest).
const ERROR_GROUPS: usize = 20;
const AUDIT_RECORDS: usize = 10;

/// The dashboard's state in the hub: the traffic history and the cached slow answers.
#[derive(Debug)]
pub(super) struct Dashboard {
    pub(super) traffic: Arc<Traffic>,
    health: Mutex<Option<(Instant, Value)>>,
    health_running: AtomicBool,
    /// The newest audit records, read at most once per [`STEP`].
    audit_records: Mutex<Option<(Instant, Vec<Value>)>>,
    verification: Arc<Mutex<Option<(Instant, Value)>>>,
    verifying: Arc<AtomicBool>,
}

impl Dashboard {
    pub(super) fn new(traffic: Arc<Traffic>) -> Self {
        Self {
            traffic,
            health: Mutex::new(None),
            health_running: AtomicBool::new(false),
            audit_records: Mutex::new(None),
            verification: Arc::new(Mutex::new(None)),
            verifying: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The overview's document (see `docs/dashboard.md`, "The overview's JSON").
#[derive(Serialize)]
struct Overview<'a> {
    service: ServiceView<'a>,
    caller: CallerView<'a>,
    generated_at: String,
    step_seconds: u64,
    history_points: usize,
    traffic: TotalView<'a>,
    routes: Vec<RouteView<'a>>,
    slow: Vec<crate::baseline::SlowRequest>,
    errors: ErrorsView<'a>,
    alerts: crate::alert::AlertsView,
    health: Value,
    audit: Value,
    system: Option<crate::system::Snapshot>,
    pipelines: Vec<PipelineView>,
    jobs: Vec<crate::jobs::JobView>,
    /// The registered dependencies (`Observer::dependency`).
    dependencies: Vec<crate::dependency::DependencyView>,
    /// The newest permission denials (at most [`DENIALS_SHOWN`]).
    denials: Vec<crate::authz::Denial>,
}

/// How many recent denials the overview carries.
const DENIALS_SHOWN: usize = 10;

#[derive(Serialize)]
struct ServiceView<'a> {
    name: &'a str,
    environment: &'a str,
    version: &'a str,
    uptime_seconds: u64,
}

#[derive(Serialize)]
struct CallerView<'a> {
    name: &'a str,
    scope: Option<&'static str>,
}

/// The whole service: its figures now and its history.
#[derive(Serialize)]
struct TotalView<'a> {
    #[serde(flatten)]
    current: &'a Current,
    history: &'a HistoryView,
}

#[derive(Serialize)]
struct ErrorsView<'a> {
    recorded: u64,
    groups: &'a [crate::capture::ErrorGroup],
}

#[derive(Serialize)]
struct PipelineView {
    name: &'static str,
    capacity: Option<u64>,
    queued: u64,
    in_flight: u64,
    submitted: u64,
    delivered: u64,
    dropped: u64,
}

/// One route in the overview: its traffic, and its baseline when baselines are on.
#[derive(Serialize)]
struct RouteView<'a> {
    method: &'static str,
    route: &'a str,
    #[serde(flatten)]
    current: Current,
    baseline: Option<crate::baseline::Learned>,
    latency_deviating: bool,
    errors_deviating: bool,
    history: &'a HistoryView,
}

impl Observer {
    /// `GET /qiflow/api/overview`: serialized straight from the capabilities' views (no JSON
    /// tree in between: the history alone is thousands of numbers).
    pub(super) async fn overview(&self, admitted: &Admitted) -> AdminResponse {
        let Some(dashboard) = &self.inner.dashboard else {
            return AdminResponse::error(404, "the dashboard is off ([admin] dashboard = false)");
        };
        let config = self.config();
        let traffic = dashboard.traffic.view();
        let baselines = self.baselines().map(|b| b.view()).unwrap_or_default();
        let routes: Vec<RouteView<'_>> = traffic
            .routes
            .iter()
            .map(|r| {
                let learned = baselines
                    .iter()
                    .find(|b| b.method == r.method && b.route == *r.route);
                let mut current = r.current.clone();
                if let Some(view) = learned {
                    // The baseline's own window: the figures its deviation check compares.
                    if view.window.count > 0 {
                        current.p50_ms = view.window.p50_ms;
                        current.p95_ms = view.window.p95_ms;
                        current.p99_ms = view.window.p99_ms;
                    }
                }
                RouteView {
                    method: r.method,
                    route: &r.route,
                    current,
                    baseline: learned.and_then(|v| v.baseline),
                    latency_deviating: learned.is_some_and(|v| v.latency_deviating),
                    errors_deviating: learned.is_some_and(|v| v.errors_deviating),
                    history: &r.history,
                }
            })
            .collect();
        let mut groups = self.error_store().groups();
        groups.truncate(ERROR_GROUPS);
        let stats = self.stats();
        let overview = Overview {
            service: ServiceView {
                name: &config.service.name,
                environment: &config.service.environment,
                version: &config.service.version,
                uptime_seconds: self.uptime().as_secs(),
            },
            caller: CallerView {
                name: admitted.caller.name(),
                scope: admitted.caller.scope().map(|s| s.as_str()),
            },
            generated_at: crate::alert::rfc3339(SystemTime::now()),
            step_seconds: STEP.as_secs(),
            history_points: POINTS,
            traffic: TotalView {
                current: &traffic.total,
                history: &traffic.history,
            },
            routes,
            slow: self
                .baselines()
                .map(|b| b.recent_slow())
                .unwrap_or_default(),
            errors: ErrorsView {
                recorded: self.error_store().recorded(),
                groups: &groups,
            },
            alerts: self.alerts().view(),
            health: self.cached_health(dashboard).await,
            audit: self.audit_overview(dashboard).await,
            system: self.inner.system_sample.as_ref().and_then(|s| s.get()),
            pipelines: stats
                .iter()
                .map(|s| PipelineView {
                    name: s.name,
                    capacity: s.capacity,
                    queued: s.queued,
                    in_flight: s.in_flight,
                    submitted: s.submitted,
                    delivered: s.delivered,
                    dropped: s.dropped(),
                })
                .collect(),
            jobs: self.jobs().view(),
            dependencies: self.inner.dependencies.views(),
            denials: {
                let mut denials = self.authz_denials();
                denials.truncate(DENIALS_SHOWN);
                denials
            },
        };
        match serde_json::to_vec(&overview) {
            Ok(body) => AdminResponse::json(200, body),
            Err(e) => AdminResponse::error(500, &format!("cannot serialize the overview: {e}")),
        }
    }

    /// The readiness report, run again when older than [`HEALTH_EVERY`] (by one caller at a
    /// time; the others show the previous one, or `null` before the first).
    async fn cached_health(&self, dashboard: &Dashboard) -> Value {
        let cached = || {
            dashboard
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        let fresh = cached().filter(|(at, _)| at.elapsed() < HEALTH_EVERY);
        if let Some((_, report)) = fresh {
            return report;
        }
        if dashboard.health_running.swap(true, Ordering::AcqRel) {
            return cached().map(|(_, r)| r).unwrap_or(Value::Null);
        }
        let report: HealthReport = self.readiness().await;
        let value = json!({
            "status": report.status,
            "checked_at": crate::alert::rfc3339(SystemTime::now()),
            "checks": report.checks,
        });
        *dashboard
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), value.clone()));
        dashboard.health_running.store(false, Ordering::Release);
        value
    }

    /// The newest audit records, and the trail's latest verification (started on the worker
    /// when older than [`VERIFY_EVERY`]; `pending` until the first one ends).
    async fn audit_overview(&self, dashboard: &Dashboard) -> Value {
        let audit = &self.config().audit;
        if !audit.enabled {
            return json!({ "enabled": false, "records": [], "verification": {
                "state": "unavailable",
                "checked_at": null,
                "records": null,
                "last_seq": null,
                "sealed_seq": null,
                "unsealed": null,
                "detail": "auditing is off ([audit] enabled = false)",
            }});
        }
        let cached = dashboard
            .audit_records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < STEP)
            .map(|(_, records)| records.clone());
        let records = match cached {
            Some(records) => records,
            None => {
                let mut query = crate::audit::AuditQuery::new();
                query.limit = Some(AUDIT_RECORDS);
                let records: Vec<Value> = match self.audit_query(&query).await {
                    Ok(page) => page
                        .records
                        .iter()
                        .map(|r| {
                            json!({
                                "seq": r.seq,
                                "timestamp": r.timestamp,
                                "actor": r.actor,
                                "action": r.action,
                                "resource": r.resource,
                                "outcome": r.outcome,
                                "request_id": r.request_id,
                            })
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                *dashboard
                    .audit_records
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), records.clone()));
                records
            }
        };
        let verification = {
            let cached = dashboard
                .verification
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let stale = cached
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= VERIFY_EVERY);
            if stale && !dashboard.verifying.swap(true, Ordering::AcqRel) {
                self.start_verification(dashboard);
            }
            cached.map(|(_, v)| v).unwrap_or_else(|| {
                json!({
                    "state": "pending",
                    "checked_at": null,
                    "records": null,
                    "last_seq": null,
                    "sealed_seq": null,
                    "unsealed": null,
                    "detail": "verifying the trail",
                })
            })
        };
        json!({ "enabled": true, "records": records, "verification": verification })
    }

    /// Verifies the trail on the worker (files: on a blocking thread; PostgreSQL: a connection
    /// of its own) and stores the outcome for the overview.
    fn start_verification(&self, dashboard: &Dashboard) {
        let audit = self.config().audit.clone();
        #[cfg(feature = "postgres")]
        let instance = self.config().service.instance.clone();
        let slot = dashboard.verification.clone();
        let verifying = dashboard.verifying.clone();
        self.runtime().spawn(async move {
            let key = audit
                .signing_key
                .as_ref()
                .map(|k| k.expose().as_bytes().to_vec());
            let result = match (&audit.sink, &audit.postgres_url) {
                #[cfg(feature = "postgres")]
                (crate::config::AuditSinkKind::Postgres, Some(url)) => {
                    // Every instance's chain is verified; the figures are this instance's.
                    crate::audit::verify_postgres(url.expose(), key.as_deref())
                        .await
                        .map(|chains| {
                            chains
                                .into_iter()
                                .find(|c| c.instance == instance)
                                .map(|c| c.verified)
                        })
                }
                _ => {
                    let dir = audit.dir.clone();
                    let witness = audit.witness_path();
                    tokio::task::spawn_blocking(move || {
                        if !holds_segments(&dir) {
                            // A trail with no record yet: nothing to verify, nothing broken.
                            return Ok(None);
                        }
                        crate::audit::verify_dir_with_witness(&dir, key.as_deref(), &witness)
                            .map(Some)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::audit::Broken {
                            seq: 0,
                            location: crate::audit::Location {
                                source: "qiflow".into(),
                                line: 0,
                            },
                            reason: format!("the verification did not finish: {e}"),
                        })
                    })
                }
            };
            let checked_at = crate::alert::rfc3339(SystemTime::now());
            let value = match result {
                Ok(None) => json!({
                    "state": "verified",
                    "checked_at": checked_at,
                    "records": 0,
                    "last_seq": null,
                    "sealed_seq": null,
                    "unsealed": 0,
                    "detail": "no records yet",
                }),
                Ok(Some(v)) => json!({
                    "state": "verified",
                    "checked_at": checked_at,
                    "records": v.records,
                    "last_seq": v.last_seq,
                    "sealed_seq": v.last_seal.as_ref().map(|s| s.seq),
                    "unsealed": v.unsealed,
                    "detail": null,
                }),
                Err(broken) => json!({
                    "state": "broken",
                    "checked_at": checked_at,
                    "records": null,
                    "last_seq": null,
                    "sealed_seq": null,
                    "unsealed": null,
                    "detail": broken.to_string(),
                }),
            };
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), value));
            verifying.store(false, Ordering::Release);
        });
    }
}

/// Whether `dir` holds an audit segment (`audit-*.jsonl`).
fn holds_segments(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
    })
}
