//! Prometheus metrics: qiflow's own recorder, the HTTP server metrics, and route-label capping.
//!
//! qiflow records its metrics into its own [`PrometheusRecorder`], so they work whether or not a
//! global `metrics` recorder is installed. `init` also installs that recorder globally (unless
//! [`ObserverBuilder::install_global`](crate::ObserverBuilder::install_global) says not to), so
//! `metrics::counter!` calls in the application appear on `/metrics` too.
//!
//! Names follow the OpenTelemetry HTTP semantic conventions (DESIGN.md §3):
//!
//! - `http_server_requests_total{method,route,status}`
//! - `http_server_request_duration_seconds{method,route,status}` (histogram, `[metrics] buckets`)
//! - `http_server_active_requests{method,route}`
//! - `qiflow_build_info{service,environment,version}`
//! - `qiflow_dropped_total{pipeline}`
//! - `qiflow_alerts_sent_total{channel,outcome}`, `qiflow_alert_send_duration_seconds{channel}`
//!   (histogram), `qiflow_alerts_queue_depth` (see [`crate::alert`])
//!
//! `route` is the route template, never the raw path: requests that matched no route are
//! `route="unmatched"`, and past `[metrics] max_routes` distinct templates new ones fold into
//! `route="other"`. Methods outside the standard ones are `method="_OTHER"`.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::Config;

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// The route label of routes past `[metrics] max_routes`.
pub const OTHER: &str = "other";

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
    enabled: bool,
    max_routes: usize,
    routes: RwLock<HashSet<Arc<str>>>,
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
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "http_server_request_duration_seconds".into(),
                ),
                &m.buckets,
            )
            .map_err(|e| format!("metrics.buckets: {e}"))?
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "qiflow_alert_send_duration_seconds".into(),
                ),
                ALERT_SEND_BUCKETS,
            )
            .map_err(|e| format!("alert send buckets: {e}"))?
            .build_recorder();
        let handle = recorder.handle();
        let this = Self {
            inner: Arc::new(Inner {
                recorder: Arc::new(recorder),
                handle,
                enabled: m.enabled,
                max_routes: m.max_routes,
                routes: RwLock::new(HashSet::new()),
            }),
        };
        this.describe();
        let s = &config.service;
        this.gauge(
            "qiflow_build_info",
            vec![
                Label::new("service", s.name.clone()),
                Label::new("environment", s.environment.clone()),
                Label::new("version", s.version.clone()),
            ],
        )
        .set(1.0);
        Ok(this)
    }

    fn describe(&self) {
        let r = &self.inner.recorder;
        let d = |name: &'static str, unit: Option<Unit>, help: &'static str| (name, unit, help);
        let counters = [
            d(
                "http_server_requests_total",
                None,
                "HTTP requests served, by method, route template and status code.",
            ),
            d(
                "qiflow_dropped_total",
                None,
                "Items qiflow could not deliver (log lines, error reports, audit records, alerts), by pipeline.",
            ),
            d(
                "qiflow_alerts_sent_total",
                None,
                "Alerts by channel and outcome (sent, failed, rate_limited, queue_full, abandoned).",
            ),
            d(
                "qiflow_audit_records_total",
                None,
                "Audit records by sink and outcome.",
            ),
            d(
                "qiflow_errors_captured_total",
                None,
                "Errors captured, by kind.",
            ),
            d(
                "qiflow_baseline_deviations_total",
                None,
                "Latency or error-rate deviations from a route's learned baseline.",
            ),
            d(
                "qiflow_client_disconnects_total",
                None,
                "Requests whose client went away before the response head was ready.",
            ),
        ];
        for (name, unit, help) in counters {
            r.describe_counter(name.into(), unit, help.into());
        }
        r.describe_histogram(
            "http_server_request_duration_seconds".into(),
            Some(Unit::Seconds),
            "Time from the request's arrival to its response head, by method, route template and status code.".into(),
        );
        r.describe_histogram(
            "qiflow_alert_send_duration_seconds".into(),
            Some(Unit::Seconds),
            "Duration of each alert delivery attempt, by channel.".into(),
        );
        r.describe_gauge(
            "qiflow_alerts_queue_depth".into(),
            None,
            "Alerts waiting: queued for the router, grouped, or being sent.".into(),
        );
        r.describe_gauge(
            "http_server_active_requests".into(),
            None,
            "Requests in flight, by method and route template.".into(),
        );
        r.describe_gauge(
            "qiflow_build_info".into(),
            None,
            "Always 1; the labels name the service, its environment and version.".into(),
        );
    }

    /// Whether `[metrics] enabled` is on.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The Prometheus text exposition of every metric (what `GET /metrics` serves).
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Drains histogram buckets so memory stays bounded; called periodically by the worker.
    pub(crate) fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// A recorder handle for installing globally (`metrics::set_global_recorder`).
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

    /// The route label for a matched template (capped) or an unmatched request.
    pub fn route_label(&self, route: Option<&str>) -> SharedString {
        let Some(route) = route else {
            return SharedString::const_str(UNMATCHED);
        };
        if let Some(known) = self
            .inner
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
        {
            return SharedString::from(known.to_string());
        }
        let mut routes = self
            .inner
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if routes.len() >= self.inner.max_routes && !routes.contains(route) {
            return SharedString::const_str(OTHER);
        }
        let route: Arc<str> = Arc::from(route);
        routes.insert(route.clone());
        SharedString::from(route.to_string())
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

/// Forwards to qiflow's recorder, so it can be installed globally while qiflow keeps it.
pub(crate) struct SharedRecorder(Arc<PrometheusRecorder>);

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
