//! Prometheus metrics: qiflow's own recorder, the HTTP server metrics, and route-label capping.
//!
//! qiflow records its metrics into its own [`PrometheusRecorder`], so they work whether or not a
//! global `metrics` recorder is installed. `init` also installs that recorder globally (unless
//! [`ObserverBuilder::install_global`](crate::ObserverBuilder::install_global) says not to), so
//! `metrics::counter!` calls in the application appear on `/metrics` too.
//!
//! Names follow the OpenTelemetry HTTP semantic conventions (DESIGN.md §3). [`CATALOGUE`] lists
//! every metric with its labels and HELP text; the main ones:
//!
//! - `http_server_requests_total{method,route,status}`
//! - `http_server_request_duration_seconds{method,route,status}` (histogram, `[metrics] buckets`)
//! - `http_server_active_requests{method,route}`
//! - `qiflow_build_info{service,environment,version,commit,service_instance_id}` (`commit` when set)
//! - `qiflow_dropped_total{pipeline,reason}` (reasons: `queue_full`, `closed`, `sink_error`, `shutdown`, `rate_limited`)
//!
//! With `[metrics] global_labels` on (the default), every series also carries `service` and
//! `environment` from `[service]`. The version is on `qiflow_build_info` only (the `_info`
//! pattern): a deploy does not start every series anew. Join it where a query needs it:
//! `… * on (job, instance) group_left (version) qiflow_build_info`.
//! - `qiflow_alerts_sent_total{channel,outcome}`, `qiflow_alert_send_duration_seconds{channel}`
//!   (histogram), `qiflow_alerts_queue_depth` (see [`crate::alert`])
//!
//! `route` is the route template, never the raw path: requests that matched no route are
//! `route="unmatched"`, and past `[metrics] max_routes` distinct templates new ones fold into
//! `route="other"`. Methods outside the standard ones are `method="_OTHER"`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::Config;

mod active;
pub(crate) mod check;
mod latency;

use active::{ActiveGauge, ActiveRegistry};
use latency::{LatencyHistogram, LatencyRegistry};

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// The route label of routes past `[metrics] max_routes`.
pub const OTHER: &str = "other";

/// What a metric is: the `# TYPE` line of its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonic counter (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A histogram (`_bucket{le}`, `_sum`, `_count`).
    Histogram,
}

/// One metric qiflow exports on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The family name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The labels qiflow sets, besides the global ones (`service`, `environment`).
    pub labels: &'static [&'static str],
    /// The HELP text.
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric qiflow itself exports, with its labels and HELP text. The shipped Prometheus
/// rules and Grafana dashboard (`docs/prometheus`, `docs/grafana`) use only these names, and a
/// test checks that every metric name in qiflow's source is listed here.
pub const CATALOGUE: &[MetricInfo] = &[
    metric(
        "http_server_requests_total",
        MetricKind::Counter,
        &["method", "route", "status"],
        "HTTP requests served, by method, route template and status code.",
    ),
    metric(
        latency::NAME,
        MetricKind::Histogram,
        &["method", "route", "status"],
        latency::HELP,
    ),
    metric(
        active::NAME,
        MetricKind::Gauge,
        &["method", "route"],
        active::HELP,
    ),
    metric(
        "qiflow_client_disconnects_total",
        MetricKind::Counter,
        &["method", "route"],
        "Requests whose client went away before the response head was ready.",
    ),
    metric(
        "qiflow_admin_requests_total",
        MetricKind::Counter,
        &["endpoint", "status"],
        "Requests to the operator surface (/metrics, health, /qiflow/api), by endpoint and status code; 401 and 403 are refusals.",
    ),
    metric(
        "qiflow_trace_context_invalid_total",
        MetricKind::Counter,
        &["header"],
        "Incoming trace context headers ignored as malformed (traceparent, tracestate); the request started a new trace.",
    ),
    metric(
        "qiflow_build_info",
        MetricKind::Gauge,
        &[
            "service",
            "environment",
            "version",
            "commit",
            "service_instance_id",
        ],
        "Always 1; the labels name the service, its environment, version, commit ([service] commit, when set) and this instance ([service] instance).",
    ),
    metric(
        "qiflow_dropped_total",
        MetricKind::Counter,
        &["pipeline", "reason"],
        "Items qiflow could not deliver (log lines, error reports, audit records, alerts), by pipeline and reason.",
    ),
    metric(
        "qiflow_errors_captured_total",
        MetricKind::Counter,
        &["kind"],
        "Errors captured, by kind.",
    ),
    metric(
        "qiflow_errors_forwarded_total",
        MetricKind::Counter,
        &["reporter", "outcome"],
        "Error reports offered to a remote reporter (Sentry), by reporter and outcome (sent, sampled_out, rate_limited, failed).",
    ),
    metric(
        "qiflow_alerts_sent_total",
        MetricKind::Counter,
        &["channel", "outcome"],
        "Alerts by channel and outcome (sent, failed, rate_limited, queue_full, abandoned).",
    ),
    metric(
        "qiflow_alert_send_duration_seconds",
        MetricKind::Histogram,
        &["channel"],
        "Duration of each alert delivery attempt, by channel.",
    ),
    metric(
        "qiflow_alerts_queue_depth",
        MetricKind::Gauge,
        &[],
        "Alerts waiting: queued for the router, grouped, or being sent.",
    ),
    metric(
        "qiflow_audit_records_total",
        MetricKind::Counter,
        &["sink", "outcome"],
        "Audit records by sink and outcome.",
    ),
    metric(
        "qiflow_audit_sealed_records",
        MetricKind::Gauge,
        &[],
        "Audit records sealed by the trail's digests since it began; it never goes down unless the trail was cut back or replaced.",
    ),
    metric(
        "qiflow_audit_last_digest_timestamp_seconds",
        MetricKind::Gauge,
        &[],
        "Unix time of the audit trail's last durable digest (0: none yet).",
    ),
    metric(
        "qiflow_baseline_p95_seconds",
        MetricKind::Gauge,
        &["method", "route"],
        "The learned normal p95 latency of a route.",
    ),
    metric(
        "qiflow_baseline_error_ratio",
        MetricKind::Gauge,
        &["method", "route"],
        "The learned normal error rate of a route (failed / all).",
    ),
    metric(
        "qiflow_baseline_deviations_total",
        MetricKind::Counter,
        &["route"],
        "Latency or error-rate deviations from a route's learned baseline.",
    ),
    metric(
        "qiflow_slow_requests_total",
        MetricKind::Counter,
        &["method", "route"],
        "Requests slower than [baseline] slow_request or their route's baseline p99 times slow_p99_factor.",
    ),
    metric(
        "process_cpu_seconds_total",
        MetricKind::Counter,
        &[],
        "Total user and system CPU time spent in seconds (whole seconds; [metrics] system).",
    ),
    metric(
        "process_resident_memory_bytes",
        MetricKind::Gauge,
        &[],
        "Resident memory size in bytes.",
    ),
    metric(
        "process_virtual_memory_bytes",
        MetricKind::Gauge,
        &[],
        "Virtual memory size in bytes.",
    ),
    metric(
        "process_open_fds",
        MetricKind::Gauge,
        &[],
        "Number of open file descriptors.",
    ),
    metric(
        "process_max_fds",
        MetricKind::Gauge,
        &[],
        "Maximum number of open file descriptors.",
    ),
    metric(
        "process_threads",
        MetricKind::Gauge,
        &[],
        "Number of OS threads in the process.",
    ),
    metric(
        "process_start_time_seconds",
        MetricKind::Gauge,
        &[],
        "Start time of the process since the Unix epoch in seconds.",
    ),
    metric(
        "system_cpu_utilization_ratio",
        MetricKind::Gauge,
        &[],
        "The machine's CPU use over the last [metrics] system_interval, from 0 to 1 (all cores).",
    ),
    metric(
        "system_load_average",
        MetricKind::Gauge,
        &["period"],
        "The machine's load average over 1, 5 and 15 minutes.",
    ),
    metric(
        "system_memory_total_bytes",
        MetricKind::Gauge,
        &[],
        "The machine's memory in bytes.",
    ),
    metric(
        "system_memory_available_bytes",
        MetricKind::Gauge,
        &[],
        "The machine's memory available to start new work without swapping, in bytes.",
    ),
    metric(
        "system_cgroup_memory_limit_bytes",
        MetricKind::Gauge,
        &[],
        "The memory limit of the process's cgroup in bytes (absent outside a limited cgroup).",
    ),
    metric(
        "system_filesystem_size_bytes",
        MetricKind::Gauge,
        &["volume", "mountpoint"],
        "Size of the filesystem holding qiflow's logs (volume=\"logs\") or audit trail (volume=\"audit\"), in bytes.",
    ),
    metric(
        "system_filesystem_available_bytes",
        MetricKind::Gauge,
        &["volume", "mountpoint"],
        "Space available to qiflow on the filesystem holding its logs or audit trail, in bytes.",
    ),
    metric(
        "system_disk_read_bytes_total",
        MetricKind::Counter,
        &["volume", "mountpoint"],
        "Bytes read from the disk holding qiflow's logs or audit trail.",
    ),
    metric(
        "system_disk_written_bytes_total",
        MetricKind::Counter,
        &["volume", "mountpoint"],
        "Bytes written to the disk holding qiflow's logs or audit trail.",
    ),
    metric(
        "system_network_receive_bytes_total",
        MetricKind::Counter,
        &["interface"],
        "Bytes received on a network interface (the first 16 by name).",
    ),
    metric(
        "system_network_transmit_bytes_total",
        MetricKind::Counter,
        &["interface"],
        "Bytes sent on a network interface (the first 16 by name).",
    ),
    metric(
        "qiflow_deployment_timestamp_seconds",
        MetricKind::Gauge,
        &[],
        "When this deployment (this start of the service) began, in seconds since the Unix epoch; changes() of it marks deployments.",
    ),
    metric(
        "qiflow_job_runs_total",
        MetricKind::Counter,
        &["job", "outcome"],
        "Runs of a scheduled job, by how they ended: success, failure or timeout (past max_runtime).",
    ),
    metric(
        "qiflow_job_duration_seconds",
        MetricKind::Histogram,
        &["job"],
        "How long a scheduled job's runs took, from start to end.",
    ),
    metric(
        "qiflow_job_last_success_timestamp_seconds",
        MetricKind::Gauge,
        &["job"],
        "When a scheduled job last succeeded, in seconds since the Unix epoch.",
    ),
    metric(
        "qiflow_job_max_interval_seconds",
        MetricKind::Gauge,
        &["job"],
        "The longest a scheduled job may go between two successes before it is overdue: the gap between its next two scheduled starts, plus grace and max_runtime.",
    ),
    metric(
        "qiflow_job_state",
        MetricKind::Gauge,
        &["job", "state"],
        "A scheduled job's state: 1 on the series of its state (new, up, running, late, down, failed), 0 on the others.",
    ),
    metric(
        "qiflow_authz_decisions_total",
        MetricKind::Counter,
        &["decision", "permission"],
        "Permission checks by decision (granted, denied, unauthenticated) and permission (the first 256 a process parses; the rest are other).",
    ),
    metric(
        "qiflow_authz_untracked_denials_total",
        MetricKind::Counter,
        &[],
        "Denials not counted toward [authz.denial_alert] because 10,000 actors were already watched (still audited).",
    ),
    metric(
        "db_client_operation_duration_seconds",
        MetricKind::Histogram,
        &["db_system", "db_operation", "outcome", "pool"],
        "Calls to a registered dependency (Observer::dependency), by system, operation (the first 64 per dependency; the rest are other), outcome (ok, error) and dependency.",
    ),
    metric(
        "http_client_request_duration_seconds",
        MetricKind::Histogram,
        &["server_address", "method", "status"],
        "Outgoing HTTP calls through qiflow's reqwest-middleware (Dependency::http_middleware), by server, method and status code (error: no response); the first 64 triples per dependency, then server_address=other.",
    ),
    metric(
        "redis_memory_used_bytes",
        MetricKind::Gauge,
        &["pool"],
        "A Redis server's used_memory (INFO), for a dependency registered with Dependency::redis.",
    ),
    metric(
        "redis_memory_max_bytes",
        MetricKind::Gauge,
        &["pool"],
        "A Redis server's maxmemory (INFO; 0: no limit).",
    ),
    metric(
        "redis_connected_clients",
        MetricKind::Gauge,
        &["pool"],
        "A Redis server's connected_clients (INFO).",
    ),
    metric(
        "redis_instantaneous_ops_per_sec",
        MetricKind::Gauge,
        &["pool"],
        "A Redis server's instantaneous_ops_per_sec (INFO).",
    ),
    metric(
        "redis_error_replies_total",
        MetricKind::Counter,
        &["pool"],
        "A Redis server's total_error_replies (INFO): error replies it sent, to every client.",
    ),
    metric(
        "redis_evicted_keys_total",
        MetricKind::Counter,
        &["pool"],
        "A Redis server's evicted_keys (INFO): keys evicted for maxmemory.",
    ),
    metric(
        "db_client_connection_count",
        MetricKind::Gauge,
        &["pool", "state"],
        "Connections of a registered pool, by state (idle, used).",
    ),
    metric(
        "db_client_connection_max",
        MetricKind::Gauge,
        &["pool"],
        "The most connections a registered pool opens.",
    ),
    metric(
        "db_client_connection_pending_requests",
        MetricKind::Gauge,
        &["pool"],
        "Callers waiting for a connection of a registered pool.",
    ),
    metric(
        "db_client_connection_wait_time_seconds",
        MetricKind::Histogram,
        &["pool"],
        "Time callers waited for a connection of a registered pool: acquires timed by Dependency::acquire, or a pool's own totals (bb8).",
    ),
    metric(
        "qiflow_dependency_slow_total",
        MetricKind::Counter,
        &["pool"],
        "Calls to a registered dependency at or over its [dependencies.NAME] slow threshold.",
    ),
    metric(
        "qiflow_dependency_errors_total",
        MetricKind::Counter,
        &["pool", "class"],
        "Failed calls to a registered dependency, by class (connection, timeout, query).",
    ),
    metric(
        "qiflow_dependency_error_ratio",
        MetricKind::Gauge,
        &["pool"],
        "The share of a registered dependency's calls that failed over its [dependencies.NAME] error_window, as the error-rate alert (dependency_errors) judges it.",
    ),
];

/// Buckets of `db_client_operation_duration_seconds`: the OpenTelemetry database client
/// histogram's advice, from a millisecond to ten seconds.
const DB_OPERATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Buckets of `qiflow_job_duration_seconds`: from a one-second cleanup to a day-long export.
const JOB_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];

/// Buckets of `qiflow_alert_send_duration_seconds`: from a local log line to a slow SMTP relay.
const ALERT_SEND_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// qiflow's metrics: the recorder, its render handle, and the route-label cap.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// `http_server_request_duration_seconds`, kept by qiflow (see [`latency`]).
    latency: LatencyRegistry,
    /// `http_server_active_requests`, kept by qiflow (see [`active`]).
    active: ActiveRegistry,
    enabled: bool,
    max_routes: usize,
    /// Known route templates and their cached metric handles.
    routes: RwLock<HashMap<Arc<str>, Arc<RouteMetrics>, foldhash::fast::RandomState>>,
    unmatched: Arc<RouteMetrics>,
    other: Arc<RouteMetrics>,
}

/// The standard methods, in the order of [`METHODS`]' slots; `_OTHER` is the last slot.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The metric handles of one route label, registered once and reused by every request, so the
/// request path never builds a [`Key`] or looks one up in the registry.
pub(crate) struct RouteMetrics {
    label: SharedString,
    methods: [OnceLock<MethodMetrics>; METHODS.len()],
}

/// The handles of one (route, method): the in-flight gauge, the disconnect counter, and the
/// request counter and latency histogram per status code seen so far.
pub(crate) struct MethodMetrics {
    active: Arc<ActiveGauge>,
    disconnects: Counter,
    /// The route's baseline, made on its first finished request.
    baseline: OnceLock<Arc<crate::baseline::RouteBaseline>>,
    /// Status codes are at most three digits, so this holds at most 900 entries; in practice a
    /// handful, searched linearly.
    statuses: RwLock<Vec<(u16, Counter, Arc<LatencyHistogram>)>>,
}

impl RouteMetrics {
    fn new(label: SharedString) -> Self {
        Self {
            label,
            methods: Default::default(),
        }
    }

    /// The route label (`/users/{id}`, `unmatched` or `other`).
    pub(crate) fn label(&self) -> &SharedString {
        &self.label
    }

    /// The handles for `method` (a value of [`method_label`]), registered on first use.
    pub(crate) fn method(&self, metrics: &Metrics, method: &'static str) -> &MethodMetrics {
        let slot = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        self.methods[slot].get_or_init(|| {
            let labels = vec![
                Label::new("method", method),
                Label::new("route", self.label.clone()),
            ];
            MethodMetrics {
                active: metrics.inner.active.series(method, &self.label),
                disconnects: metrics.counter("qiflow_client_disconnects_total", labels),
                baseline: OnceLock::new(),
                statuses: RwLock::new(Vec::new()),
            }
        })
    }
}

impl MethodMetrics {
    /// `http_server_active_requests{method,route}`.
    pub(crate) fn active(&self) -> &ActiveGauge {
        &self.active
    }

    /// `qiflow_client_disconnects_total{method,route}`.
    pub(crate) fn disconnects(&self) -> &Counter {
        &self.disconnects
    }

    /// The route's baseline, made by `make` the first time.
    pub(crate) fn baseline(
        &self,
        make: impl FnOnce() -> Arc<crate::baseline::RouteBaseline>,
    ) -> &Arc<crate::baseline::RouteBaseline> {
        self.baseline.get_or_init(make)
    }

    /// Counts one finished request and records its latency, registering the handles for a
    /// status code the first time it is seen.
    pub(crate) fn record(
        &self,
        metrics: &Metrics,
        method: &'static str,
        route: &SharedString,
        status: u16,
        latency: std::time::Duration,
    ) {
        let bounds = metrics.inner.latency.bounds();
        {
            let statuses = self.statuses.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter, histogram)) = statuses.iter().find(|(s, ..)| *s == status) {
                counter.increment(1);
                histogram.record(bounds, latency);
                return;
            }
        }
        let mut statuses = self
            .statuses
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let index = match statuses.iter().position(|(s, ..)| *s == status) {
            Some(index) => index,
            None => {
                let label = status_label(status);
                let labels = vec![
                    Label::new("method", method),
                    Label::new("route", route.clone()),
                    Label::new("status", label.clone()),
                ];
                let histogram = metrics.inner.latency.series(&[
                    ("method", method),
                    ("route", route),
                    ("status", &label),
                ]);
                statuses.push((
                    status,
                    metrics.counter("http_server_requests_total", labels),
                    histogram,
                ));
                statuses.len() - 1
            }
        };
        let (_, counter, histogram) = &statuses[index];
        counter.increment(1);
        histogram.record(bounds, latency);
    }
}

/// Status codes as label values without allocating for the common ones.
fn status_label(status: u16) -> SharedString {
    const COMMON: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(code, _)| *code == status) {
        Some((_, text)) => SharedString::const_str(text),
        None => SharedString::from(status.to_string()),
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.inner.enabled)
            .field("max_routes", &self.inner.max_routes)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Builds the recorder from `[metrics]` and `[service]`.
    pub(crate) fn new(config: &Config) -> Result<Self, String> {
        let m = &config.metrics;
        let s = &config.service;
        let mut builder = PrometheusBuilder::new();
        let mut global = Vec::new();
        if m.global_labels {
            // Added at render time: no cost on the request path. A series' own label of the same
            // name wins (qiflow_build_info's are the same values anyway). Not the version: it
            // changes with every deploy, and would start every series anew; it is on
            // qiflow_build_info only.
            for (name, value) in [("service", &s.name), ("environment", &s.environment)] {
                if !value.is_empty() {
                    builder = builder.add_global_label(name, value.clone());
                    global.push((name, value.as_str()));
                }
            }
        }
        if m.buckets.is_empty() || m.buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err("metrics.buckets: give at least one bound, in ascending order".to_owned());
        }
        let recorder = builder
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "qiflow_alert_send_duration_seconds".into(),
                ),
                ALERT_SEND_BUCKETS,
            )
            .map_err(|e| format!("alert send buckets: {e}"))?
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("qiflow_job_duration_seconds".into()),
                JOB_DURATION_BUCKETS,
            )
            .map_err(|e| format!("job duration buckets: {e}"))?
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "db_client_operation_duration_seconds".into(),
                ),
                DB_OPERATION_BUCKETS,
            )
            .map_err(|e| format!("dependency operation buckets: {e}"))?
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "http_client_request_duration_seconds".into(),
                ),
                DB_OPERATION_BUCKETS,
            )
            .map_err(|e| format!("HTTP client buckets: {e}"))?
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "db_client_connection_wait_time_seconds".into(),
                ),
                DB_OPERATION_BUCKETS,
            )
            .map_err(|e| format!("connection wait buckets: {e}"))?
            .build_recorder();
        let handle = recorder.handle();
        let this = Self {
            inner: Arc::new(Inner {
                recorder: Arc::new(recorder),
                handle,
                latency: LatencyRegistry::new(&m.buckets, &global),
                active: ActiveRegistry::new(&global),
                enabled: m.enabled,
                max_routes: m.max_routes,
                routes: RwLock::new(HashMap::default()),
                unmatched: Arc::new(RouteMetrics::new(SharedString::const_str(UNMATCHED))),
                other: Arc::new(RouteMetrics::new(SharedString::const_str(OTHER))),
            }),
        };
        this.describe();
        let mut build = vec![
            Label::new("service", s.name.clone()),
            Label::new("environment", s.environment.clone()),
            Label::new("version", s.version.clone()),
        ];
        if !s.commit.is_empty() {
            build.push(Label::new("commit", s.commit.clone()));
        }
        if !s.instance.is_empty() {
            // Not `instance`: Prometheus sets that target label on every scraped series and
            // renames an exported one to `exported_instance`.
            build.push(Label::new("service_instance_id", s.instance.clone()));
        }
        this.gauge("qiflow_build_info", build).set(1.0);
        Ok(this)
    }

    fn describe(&self) {
        let r = &self.inner.recorder;
        for metric in CATALOGUE {
            let (name, help) = (metric.name.into(), metric.help.into());
            match metric.kind {
                // qiflow renders the request histogram and the in-flight gauge itself, with
                // their own HELP lines.
                MetricKind::Histogram if metric.name == latency::NAME => {}
                MetricKind::Gauge if metric.name == active::NAME => {}
                MetricKind::Counter => r.describe_counter(name, None, help),
                MetricKind::Gauge => r.describe_gauge(name, None, help),
                MetricKind::Histogram => r.describe_histogram(name, Some(Unit::Seconds), help),
            }
        }
    }

    /// Whether `[metrics] enabled` is on.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The Prometheus text exposition of every metric (what `GET /metrics` serves).
    pub fn render(&self) -> String {
        let mut text = self.inner.handle.render();
        self.inner.latency.render(&mut text);
        self.inner.active.render(&mut text);
        text
    }

    /// Drains histogram buckets so memory stays bounded; called periodically by the worker.
    pub(crate) fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// A recorder handle for installing globally (`metrics::set_global_recorder`) or in a
    /// fan-out.
    pub(crate) fn global_recorder(&self) -> SharedRecorder {
        SharedRecorder(self.inner.recorder.clone())
    }

    /// A counter on qiflow's recorder.
    pub fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.inner
            .recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// A gauge on qiflow's recorder.
    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.inner
            .recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    /// A histogram on qiflow's recorder.
    pub fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.inner
            .recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    /// The cached handles for a route: the template's own while fewer than `[metrics]
    /// max_routes` are known, else `other`; `unmatched` for `None`.
    pub(crate) fn route(&self, route: Option<&str>) -> Arc<RouteMetrics> {
        let Some(route) = route else {
            return self.inner.unmatched.clone();
        };
        if let Some(known) = self
            .inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            return known.clone();
        }
        let mut routes = self
            .inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = routes.get(route) {
            return known.clone();
        }
        if routes.len() >= self.inner.max_routes {
            return self.inner.other.clone();
        }
        let name: Arc<str> = Arc::from(route);
        let entry = Arc::new(RouteMetrics::new(SharedString::from(name.clone())));
        routes.insert(name, entry.clone());
        entry
    }
}

/// What one (method, route) has served so far, read from the request path's own counters
/// (`http_server_request_duration_seconds` and `http_server_active_requests`) without touching
/// them: what the dashboard's history is made of.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteSample {
    pub(crate) method: &'static str,
    pub(crate) route: SharedString,
    /// Requests in flight now.
    pub(crate) active: i64,
    /// Requests finished, every status.
    pub(crate) requests: u64,
    /// Requests finished with a 5xx status.
    pub(crate) errors: u64,
    /// Requests per latency bucket (not cumulative; one per bound of [`Metrics::bounds`], then
    /// `+Inf`), every status.
    pub(crate) buckets: Vec<u64>,
}

impl Metrics {
    /// The latency buckets' upper bounds, seconds.
    pub(crate) fn bounds(&self) -> &[f64] {
        self.inner.latency.bounds()
    }

    /// Every (method, route) that has seen a request: cumulative counts, read with relaxed
    /// loads (a few atomics per status code; the request path is not slowed).
    pub(crate) fn route_samples(&self) -> Vec<RouteSample> {
        let mut routes: Vec<Arc<RouteMetrics>> = self
            .inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        routes.push(self.inner.unmatched.clone());
        routes.push(self.inner.other.clone());
        let width = self.inner.latency.bounds().len() + 1;
        let mut samples = Vec::new();
        for route in &routes {
            for (slot, method) in route.methods.iter().zip(METHODS) {
                let Some(handles) = slot.get() else {
                    continue;
                };
                let mut sample = RouteSample {
                    method,
                    route: route.label.clone(),
                    active: handles.active.get(),
                    requests: 0,
                    errors: 0,
                    buckets: vec![0; width],
                };
                let statuses = handles
                    .statuses
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                for (status, _, histogram) in statuses.iter() {
                    let count = histogram.add_counts(&mut sample.buckets);
                    sample.requests += count;
                    if *status >= 500 {
                        sample.errors += count;
                    }
                }
                samples.push(sample);
            }
        }
        samples
    }
}

/// The standard method names; anything else is `_OTHER` (OpenTelemetry's convention), so a
/// client cannot create series with made-up methods.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// qiflow's Prometheus recorder, shared: what [`Observer::metrics_recorder`](crate::Observer::metrics_recorder)
/// hands out and `init` installs as the global `metrics` recorder. Everything recorded through
/// it is on qiflow's `/metrics`; clones record into the same recorder.
#[derive(Clone)]
pub struct SharedRecorder(Arc<PrometheusRecorder>);

impl std::fmt::Debug for SharedRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRecorder").finish_non_exhaustive()
    }
}

impl Recorder for SharedRecorder {
    fn describe_counter(&self, key: metrics::KeyName, unit: Option<Unit>, d: SharedString) {
        self.0.describe_counter(key, unit, d);
    }
    fn describe_gauge(&self, key: metrics::KeyName, unit: Option<Unit>, d: SharedString) {
        self.0.describe_gauge(key, unit, d);
    }
    fn describe_histogram(&self, key: metrics::KeyName, unit: Option<Unit>, d: SharedString) {
        self.0.describe_histogram(key, unit, d);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(key, metadata)
    }
}
