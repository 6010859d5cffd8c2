//! Per-route baselines: recording, the learned normal, detection and persistence.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::window::{Snapshot, Window};
use crate::alert::{Alert, AlertLevel, Alerts};
use crate::clock::Clock;
use crate::config::BaselineConfig;
use crate::metrics::Metrics;

/// How much one closed window moves the learned baseline (an exponentially weighted mean).
const ALPHA: f64 = 0.2;
/// How much a window that deviated moves it: a lasting shift becomes the new normal slowly,
/// an incident barely shifts it.
const ALPHA_DEVIATING: f64 = 0.05;
/// At most one `qiflow::slow` line per route per this many milliseconds (the rest are counted).
const SLOW_LOG_EVERY_MS: u64 = 1_000;
/// The slow requests [`Baselines::recent_slow`] keeps (those logged, newest first).
pub const RECENT_SLOW: usize = 50;

/// A slow request that was logged (`qiflow::slow`), as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SlowRequest {
    /// When it finished (RFC 3339).
    pub at: String,
    /// `GET`, …
    pub method: &'static str,
    /// The route template.
    pub route: String,
    /// Its latency, ms.
    pub latency_ms: f64,
    /// The route's learned p99 then, ms (`None` while learning).
    pub baseline_p99_ms: Option<f64>,
    /// Its request id.
    pub request_id: String,
    /// Its trace id (`None` for work recorded outside a request).
    pub trace_id: Option<String>,
}

/// What is normal for a route, learned from closed windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Learned {
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Failed / all.
    pub error_rate: f64,
    /// Closed windows learned from (with at least `min_samples` requests each).
    pub windows: u64,
}

impl Learned {
    fn learn(&mut self, s: &Snapshot, alpha: f64) {
        let (p50, p95, p99) = (
            s.quantile_ms(0.5).unwrap_or(0.0),
            s.quantile_ms(0.95).unwrap_or(0.0),
            s.quantile_ms(0.99).unwrap_or(0.0),
        );
        if self.windows == 0 {
            *self = Self {
                p50_ms: p50,
                p95_ms: p95,
                p99_ms: p99,
                error_rate: s.error_rate(),
                windows: 1,
            };
            return;
        }
        let mix = |old: f64, new: f64| old + alpha * (new - old);
        self.p50_ms = mix(self.p50_ms, p50);
        self.p95_ms = mix(self.p95_ms, p95);
        self.p99_ms = mix(self.p99_ms, p99);
        self.error_rate = mix(self.error_rate, s.error_rate());
        self.windows += 1;
    }
}

/// One route's state.
pub(crate) struct RouteBaseline {
    method: &'static str,
    route: String,
    window: Window,
    learned: Mutex<Learned>,
    /// The learned p99 in microseconds (for the slow check on the request path); 0: none yet.
    p99_us: AtomicU64,
    /// Which alerts are firing: bit 0 latency, bit 1 error rate.
    firing: AtomicU64,
    last_slow_log_ms: AtomicU64,
    /// `qiflow_slow_requests_total{method,route}`, registered with the route.
    slow: Option<metrics::Counter>,
}

/// Every route's baseline, the settings, and where alerts go.
pub struct Baselines {
    config: BaselineConfig,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    alerts: Option<Alerts>,
    max_routes: usize,
    routes: Mutex<HashMap<(&'static str, String), Arc<RouteBaseline>>>,
    /// Learned baselines loaded from the state file, waiting for their route's first request.
    loaded: Mutex<HashMap<(String, String), Learned>>,
    /// When the last evaluation ran, ms since the epoch; held for the whole evaluation, so
    /// one window is evaluated once, whoever calls.
    last_evaluated_ms: Mutex<u64>,
    /// The latest logged slow requests, newest first, at most [`RECENT_SLOW`].
    recent_slow: Mutex<VecDeque<SlowRequest>>,
}

impl std::fmt::Debug for Baselines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baselines")
            .field("window", &self.config.window)
            .finish_non_exhaustive()
    }
}

/// The state file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    routes: Vec<StoredRoute>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredRoute {
    method: String,
    route: String,
    #[serde(flatten)]
    learned: Learned,
}

/// One route in `/qiflow/api/baselines`.
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    /// `GET`, …
    pub method: String,
    /// The route template.
    pub route: String,
    /// The live window.
    pub window: WindowView,
    /// The learned baseline (`null` before the first closed window with enough samples).
    pub baseline: Option<Learned>,
    /// Whether the latency deviation alert is firing.
    pub latency_deviating: bool,
    /// Whether the error-rate alert is firing.
    pub errors_deviating: bool,
}

/// A window's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    /// Requests in the window.
    pub count: u64,
    /// Requests per second.
    pub rate: f64,
    /// Failed / all.
    pub error_rate: f64,
    /// Requests in flight on average (latency sum / window length).
    pub concurrency: f64,
    /// Median latency, ms (`null` when empty).
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Baselines {
    /// Baselines for `config`, loading `state_file` when it exists. A state file that cannot be
    /// read or parsed is an error naming it (move it away to start from nothing).
    pub(crate) fn new(
        config: BaselineConfig,
        max_routes: usize,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        alerts: Option<Alerts>,
    ) -> Result<Self, String> {
        let mut loaded = HashMap::new();
        if !config.state_file.as_os_str().is_empty() {
            match std::fs::read(&config.state_file) {
                Ok(bytes) => {
                    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
                        format!(
                            "baseline.state_file: cannot parse {} ({e}); move it away to start learning anew",
                            config.state_file.display()
                        )
                    })?;
                    for r in state.routes {
                        loaded.insert((r.method, r.route), r.learned);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(format!(
                        "baseline.state_file: cannot read {}: {e}",
                        config.state_file.display()
                    ));
                }
            }
        }
        let now = millis(clock.now());
        Ok(Self {
            config,
            clock,
            metrics,
            alerts,
            max_routes: max_routes.max(1),
            routes: Mutex::new(HashMap::new()),
            loaded: Mutex::new(loaded),
            last_evaluated_ms: Mutex::new(now),
            recent_slow: Mutex::new(VecDeque::with_capacity(RECENT_SLOW)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BaselineConfig {
        &self.config
    }

    /// A route's baseline, made on its first request (the middleware caches it next to the
    /// route's metric handles, so this runs once per route and method). Past `[metrics]
    /// max_routes` routes, new ones share `other`.
    pub(crate) fn route(&self, method: &'static str, route: &str) -> Arc<RouteBaseline> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = routes.get(&(method, route.to_owned())) {
            return known.clone();
        }
        let route = if routes.len() >= self.max_routes {
            crate::metrics::OTHER
        } else {
            route
        };
        let key = (method, route.to_owned());
        if let Some(known) = routes.get(&key) {
            return known.clone();
        }
        let learned = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(method.to_owned(), route.to_owned()))
            .unwrap_or_default();
        let this = Arc::new(RouteBaseline {
            method,
            route: route.to_owned(),
            window: Window::new(self.config.window),
            p99_us: AtomicU64::new((learned.p99_ms * 1000.0) as u64),
            learned: Mutex::new(learned),
            firing: AtomicU64::new(0),
            last_slow_log_ms: AtomicU64::new(0),
            slow: self.metrics.enabled().then(|| {
                self.metrics.counter(
                    "qiflow_slow_requests_total",
                    vec![
                        metrics::Label::new("method", method),
                        metrics::Label::new("route", route.to_owned()),
                    ],
                )
            }),
        });
        routes.insert(key, this.clone());
        this
    }

    /// Records one operation of `method` on `route` taking `latency`: what the middleware does
    /// for every request, for work it does not see (a job queue, a gRPC call). Takes a lock to
    /// find the route; the middleware's own path does not.
    pub fn record_request(&self, method: &str, route: &str, latency: Duration, failed: bool) {
        let method = crate::metrics::method_label(method);
        let route = self.route(method, route);
        self.record(&route, self.clock.now(), latency, failed, "", "");
    }

    /// Every route's state, at this moment.
    fn all_routes(&self) -> Vec<Arc<RouteBaseline>> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Routes with a baseline (at most `[metrics] max_routes`, plus `other`).
    pub fn route_count(&self) -> usize {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Records a request finished `at` (the request path: lock-free, no clock read), and logs it
    /// as slow when it is (`qiflow::slow`, at most once a second per route; every one is
    /// counted; the logged ones are kept for [`Baselines::recent_slow`]).
    pub(crate) fn record(
        &self,
        route: &RouteBaseline,
        at: SystemTime,
        latency: Duration,
        failed: bool,
        request_id: &str,
        trace_id: &str,
    ) {
        let now = millis(at);
        route.window.record(now, latency, failed);
        let us = latency.as_micros() as u64;
        let p99 = route.p99_us.load(Ordering::Relaxed);
        let by_baseline = self.config.slow_p99_factor > 0.0
            && p99 > 0
            && us as f64 > p99 as f64 * self.config.slow_p99_factor;
        if latency >= self.config.slow_request || by_baseline {
            self.slow(route, at, latency, p99, (request_id, trace_id));
        }
    }

    /// The latest slow requests that were logged, newest first (at most [`RECENT_SLOW`]).
    pub fn recent_slow(&self) -> Vec<SlowRequest> {
        self.recent_slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn slow(
        &self,
        route: &RouteBaseline,
        at: SystemTime,
        latency: Duration,
        p99_us: u64,
        (request_id, trace_id): (&str, &str),
    ) {
        let now = millis(at);
        if let Some(slow) = &route.slow {
            slow.increment(1);
        }
        let last = route.last_slow_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SLOW_LOG_EVERY_MS
            || route
                .last_slow_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tracing::warn!(
            target: "qiflow::slow",
            parent: None,
            method = route.method,
            route = route.route.as_str(),
            request_id,
            latency_ms = crate::request::millis(latency),
            baseline_p99_ms = p99_us as f64 / 1000.0,
            slow_request_ms = self.config.slow_request.as_secs_f64() * 1000.0,
            "slow request"
        );
        // At most once a second per route (above), so this lock is off the common path.
        let mut recent = self
            .recent_slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_SLOW {
            recent.pop_back();
        }
        recent.push_front(SlowRequest {
            at: crate::alert::rfc3339(at),
            method: route.method,
            route: route.route.clone(),
            latency_ms: crate::request::millis(latency),
            baseline_p99_ms: (p99_us > 0).then(|| p99_us as f64 / 1000.0),
            request_id: request_id.to_owned(),
            trace_id: (!trace_id.is_empty()).then(|| trace_id.to_owned()),
        });
    }

    /// Compares every route's window with its baseline and learns from it, when a window has
    /// passed since the last time (the worker calls this every second; tests call it with a
    /// manual clock). Returns whether it ran.
    pub fn evaluate(&self) -> bool {
        let mut last = self
            .last_evaluated_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = millis(self.clock.now());
        let window_ms = self.config.window.as_millis() as u64;
        if now.saturating_sub(*last) < window_ms {
            return false;
        }
        *last = now;
        let routes = self.all_routes();
        for route in &routes {
            self.evaluate_route(route, now);
        }
        self.save(&routes);
        true
    }

    fn evaluate_route(&self, route: &RouteBaseline, now: u64) {
        let s = route.window.snapshot(now);
        let mut learned = route.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let enough = s.count >= self.config.min_samples;
        let mut latency_bad = false;
        let mut errors_bad = false;
        if enough && learned.windows > 0 {
            let p95 = s.quantile_ms(0.95).unwrap_or(0.0);
            latency_bad = p95 > self.config.deviation_factor * learned.p95_ms;
            errors_bad = s.error_rate() > learned.error_rate + self.config.error_rate_margin;
            self.transition(route, 0, latency_bad, || {
                format!(
                    "p95 {p95:.1} ms over the last {} against a baseline p95 of {:.1} ms ({:.1}×, limit {}×)",
                    humantime::format_duration(self.config.window),
                    learned.p95_ms,
                    p95 / learned.p95_ms.max(f64::MIN_POSITIVE),
                    self.config.deviation_factor
                )
            });
            self.transition(route, 1, errors_bad, || {
                format!(
                    "error rate {:.1}% over the last {} against a baseline of {:.1}% (margin {:.1} points)",
                    s.error_rate() * 100.0,
                    humantime::format_duration(self.config.window),
                    learned.error_rate * 100.0,
                    self.config.error_rate_margin * 100.0
                )
            });
        }
        if enough {
            let alpha = if latency_bad || errors_bad {
                ALPHA_DEVIATING
            } else {
                ALPHA
            };
            learned.learn(&s, alpha);
            route
                .p99_us
                .store((learned.p99_ms * 1000.0) as u64, Ordering::Relaxed);
            if self.metrics.enabled() {
                let labels = || {
                    vec![
                        metrics::Label::new("method", route.method),
                        metrics::Label::new("route", route.route.clone()),
                    ]
                };
                self.metrics
                    .gauge("qiflow_baseline_p95_seconds", labels())
                    .set(learned.p95_ms / 1000.0);
                self.metrics
                    .gauge("qiflow_baseline_error_ratio", labels())
                    .set(learned.error_rate);
            }
        }
    }

    /// Raises or resolves alert `bit` (0 latency, 1 errors) when its state changes.
    fn transition(
        &self,
        route: &RouteBaseline,
        bit: u32,
        bad: bool,
        detail: impl FnOnce() -> String,
    ) {
        let mask = 1 << bit;
        let was = route.firing.load(Ordering::Relaxed) & mask != 0;
        if bad == was {
            return;
        }
        if bad {
            route.firing.fetch_or(mask, Ordering::Relaxed);
            if self.metrics.enabled() {
                self.metrics
                    .counter(
                        "qiflow_baseline_deviations_total",
                        vec![metrics::Label::new("route", route.route.clone())],
                    )
                    .increment(1);
            }
        } else {
            route.firing.fetch_and(!mask, Ordering::Relaxed);
        }
        let (name, what) = if bit == 0 {
            ("latency_deviation", "latency")
        } else {
            ("error_rate_deviation", "error rate")
        };
        let fingerprint = format!("baseline:{name}:{} {}", route.method, route.route);
        let Some(alerts) = &self.alerts else { return };
        let alert = if bad {
            Alert::new(name, AlertLevel::Warning)
                .summary(format!(
                    "{} {}: {what} above its baseline",
                    route.method, route.route
                ))
                .description(detail())
                .label("method", route.method)
                .label("route", route.route.clone())
                .source("baseline")
                .fingerprint(fingerprint)
        } else {
            Alert::resolve(fingerprint)
        };
        let _ = alerts.raise(alert);
    }

    /// Writes the learned baselines to `state_file` (atomically: a temp file created `0600`, then
    /// a rename).
    fn save(&self, routes: &[Arc<RouteBaseline>]) {
        let path: &PathBuf = &self.config.state_file;
        if path.as_os_str().is_empty() {
            return;
        }
        let mut state = StateFile::default();
        for route in routes {
            let learned = *route.learned.lock().unwrap_or_else(PoisonError::into_inner);
            if learned.windows > 0 {
                state.routes.push(StoredRoute {
                    method: route.method.to_owned(),
                    route: route.route.clone(),
                    learned,
                });
            }
        }
        // Routes not seen since the start keep what was loaded for them.
        for ((method, route), learned) in self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            state.routes.push(StoredRoute {
                method: method.clone(),
                route: route.clone(),
                learned: *learned,
            });
        }
        let result = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::files::write_atomic(path, &json, crate::files::PRIVATE_MODE));
        if let Err(e) = result {
            tracing::warn!(target: "qiflow::baseline", path = %path.display(), error = %e, "cannot write the baseline state file");
        }
    }

    /// When the last evaluation ran (at start: when the baselines were made).
    pub fn last_evaluated(&self) -> SystemTime {
        let ms = *self
            .last_evaluated_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Saves the state file now (the guard calls this at shutdown).
    pub(crate) fn persist(&self) {
        let routes = self.all_routes();
        self.save(&routes);
    }

    /// Every route's live window and baseline: the `/qiflow/api/baselines` view.
    pub fn view(&self) -> Vec<RouteView> {
        let now = millis(self.clock.now());
        let mut routes = self.all_routes();
        routes.sort_by(|a, b| (&a.route, a.method).cmp(&(&b.route, b.method)));
        routes
            .iter()
            .map(|r| {
                let s = r.window.snapshot(now);
                let learned = *r.learned.lock().unwrap_or_else(PoisonError::into_inner);
                let firing = r.firing.load(Ordering::Relaxed);
                RouteView {
                    method: r.method.to_owned(),
                    route: r.route.clone(),
                    window: WindowView {
                        count: s.count,
                        rate: s.rate(),
                        error_rate: s.error_rate(),
                        concurrency: s.concurrency(),
                        p50_ms: s.quantile_ms(0.5),
                        p95_ms: s.quantile_ms(0.95),
                        p99_ms: s.quantile_ms(0.99),
                    },
                    baseline: (learned.windows > 0).then_some(learned),
                    latency_deviating: firing & 1 != 0,
                    errors_deviating: firing & 2 != 0,
                }
            })
            .collect()
    }

    /// The view as JSON: `{"window_seconds":…,"routes":[…]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "window_seconds": self.config.window.as_secs_f64(),
            "min_samples": self.config.min_samples,
            "deviation_factor": self.config.deviation_factor,
            "routes": self.view(),
        })
        .to_string()
    }
}
