//! The traffic history behind the dashboard: every [`STEP`] the worker reads the request path's
//! own counters ([`Metrics::route_samples`]) and keeps, per (method, route) and for the whole
//! service, the last [`POINTS`] steps' request rate, error ratio and p95 latency.
//!
//! Nothing here runs on the request path: the counters are the ones `/metrics` renders, read
//! with relaxed loads. Memory is bounded: 16 bytes a point, [`POINTS`] points a series, one
//! series per (method, route) the metrics know (at most `[metrics] max_routes` routes, plus
//! `unmatched` and `other`), and the cumulative counts of the last [`WINDOW_STEPS`] steps for
//! the one-minute percentiles.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::SharedString;
use serde::Serialize;

use crate::metrics::{Metrics, RouteSample};

/// The spacing of history points.
pub const STEP: Duration = Duration::from_secs(2);
/// Points kept per series: 15 minutes at [`STEP`].
pub const POINTS: usize = 450;
/// The steps the per-route percentiles are computed over (one minute).
pub const WINDOW_STEPS: usize = 30;

/// A series' key: method and route template.
type Key = (&'static str, SharedString);

/// The history of one series, oldest point first.
#[derive(Debug, Default)]
struct Series {
    rps: VecDeque<f32>,
    error_ratio: VecDeque<f32>,
    /// `NaN`: no request in the step.
    p95_ms: VecDeque<f32>,
}

impl Series {
    /// A series that starts now, padded to `len` points of no traffic so every series of the
    /// history has the same length.
    fn padded(len: usize) -> Self {
        Self {
            rps: std::iter::repeat_n(0.0, len).collect(),
            error_ratio: std::iter::repeat_n(0.0, len).collect(),
            p95_ms: std::iter::repeat_n(f32::NAN, len).collect(),
        }
    }

    fn push(&mut self, point: &Delta, bounds: &[f64]) {
        if self.rps.len() == POINTS {
            self.rps.pop_front();
            self.error_ratio.pop_front();
            self.p95_ms.pop_front();
        }
        self.rps.push_back(point.rate() as f32);
        self.error_ratio.push_back(point.error_ratio() as f32);
        self.p95_ms
            .push_back(quantile_ms(bounds, &point.buckets, 0.95).map_or(f32::NAN, |ms| ms as f32));
    }

    fn view(&self) -> HistoryView {
        HistoryView {
            rps: self.rps.iter().map(|v| round2(f64::from(*v))).collect(),
            error_ratio: self
                .error_ratio
                .iter()
                .map(|v| round4(f64::from(*v)))
                .collect(),
            p95_ms: self
                .p95_ms
                .iter()
                .map(|v| (!v.is_nan()).then(|| round2(f64::from(*v))))
                .collect(),
        }
    }
}

/// A series' points, oldest first, as the dashboard's JSON has them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct HistoryView {
    pub(crate) rps: Vec<f64>,
    pub(crate) error_ratio: Vec<f64>,
    pub(crate) p95_ms: Vec<Option<f64>>,
}

/// What happened between two samples.
#[derive(Debug, Default)]
struct Delta {
    seconds: f64,
    requests: u64,
    errors: u64,
    buckets: Vec<u64>,
}

impl Delta {
    fn between(seconds: f64, now: &RouteSample, before: Option<&RouteSample>) -> Self {
        let Some(before) = before else {
            return Self {
                seconds,
                requests: now.requests,
                errors: now.errors,
                buckets: now.buckets.clone(),
            };
        };
        Self {
            seconds,
            requests: now.requests.saturating_sub(before.requests),
            errors: now.errors.saturating_sub(before.errors),
            buckets: now
                .buckets
                .iter()
                .zip(before.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    fn add(&mut self, other: &Delta) {
        self.seconds = other.seconds;
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn error_ratio(&self) -> f64 {
        if self.requests > 0 {
            self.errors as f64 / self.requests as f64
        } else {
            0.0
        }
    }
}

/// The figures of one series now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Current {
    /// Requests per second since the last step at least a second old.
    pub(crate) rps: f64,
    /// 5xx / all over the last minute (0 without requests).
    pub(crate) error_ratio: f64,
    /// Requests in flight now.
    pub(crate) in_flight: i64,
    /// Requests finished since start.
    pub(crate) requests_total: u64,
    /// Percentiles over the last minute, ms (`None` without requests), from the latency
    /// buckets (interpolated within a bucket, as Prometheus' `histogram_quantile` does).
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

/// One route now and its history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteTraffic {
    pub(crate) method: &'static str,
    pub(crate) route: SharedString,
    pub(crate) current: Current,
    pub(crate) history: HistoryView,
}

/// The service and every route, now and over the history.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrafficView {
    pub(crate) total: Current,
    pub(crate) history: HistoryView,
    pub(crate) routes: Vec<RouteTraffic>,
}

/// The history, filled by [`Traffic::tick`] every [`STEP`] on the worker.
pub(crate) struct Traffic {
    metrics: Metrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The cumulative samples of the last steps (newest last), at most `WINDOW_STEPS + 1`.
    samples: VecDeque<(Instant, HashMap<Key, RouteSample>)>,
    total: Series,
    routes: HashMap<Key, Series>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic").finish_non_exhaustive()
    }
}

fn keyed(samples: Vec<RouteSample>) -> HashMap<Key, RouteSample> {
    samples
        .into_iter()
        .map(|s| ((s.method, s.route.clone()), s))
        .collect()
}

impl Traffic {
    /// A history of `metrics`' request counters; empty until the first [`Traffic::tick`].
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes a sample now and adds a point to every series (the first tick only sets the
    /// starting counts).
    pub(crate) fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let sample = keyed(self.metrics.route_samples());
        let bounds = self.metrics.bounds();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        if let Some((then, before)) = state.samples.back() {
            let seconds = now.duration_since(*then).as_secs_f64();
            let mut total = Delta {
                seconds,
                ..Delta::default()
            };
            let len = state.total.rps.len();
            for (key, current) in &sample {
                let delta = Delta::between(seconds, current, before.get(key));
                total.add(&delta);
                state
                    .routes
                    .entry(key.clone())
                    .or_insert_with(|| Series::padded(len))
                    .push(&delta, bounds);
            }
            state.total.push(&total, bounds);
        }
        if state.samples.len() > WINDOW_STEPS {
            state.samples.pop_front();
        }
        state.samples.push_back((now, sample));
    }

    /// The service and its routes now (a fresh sample compared with the newest step at least a
    /// second old), with their histories; routes by requests per second, then by total.
    pub(crate) fn view(&self) -> TrafficView {
        self.view_at(Instant::now())
    }

    fn view_at(&self, now: Instant) -> TrafficView {
        let sample = keyed(self.metrics.route_samples());
        let bounds = self.metrics.bounds();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = state
            .samples
            .iter()
            .rev()
            .find(|(at, _)| now.saturating_duration_since(*at) >= Duration::from_secs(1))
            .or(state.samples.front());
        let oldest = state.samples.front();
        let mut total_rate = Delta::default();
        let mut total_window = Delta::default();
        let mut total = Current {
            rps: 0.0,
            error_ratio: 0.0,
            in_flight: 0,
            requests_total: 0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        };
        let mut routes = Vec::with_capacity(sample.len());
        for (key, current) in &sample {
            let rate = match recent {
                Some((at, before)) => Delta::between(
                    now.saturating_duration_since(*at).as_secs_f64(),
                    current,
                    before.get(key),
                ),
                None => Delta::default(),
            };
            let window = match oldest {
                Some((at, before)) => Delta::between(
                    now.saturating_duration_since(*at).as_secs_f64(),
                    current,
                    before.get(key),
                ),
                None => Delta::between(0.0, current, None),
            };
            total_rate.add(&rate);
            total_window.add(&window);
            total.in_flight += current.active;
            total.requests_total += current.requests;
            routes.push(RouteTraffic {
                method: key.0,
                route: key.1.clone(),
                current: figures(&rate, &window, (current.active, current.requests), bounds),
                history: state
                    .routes
                    .get(key)
                    .map(Series::view)
                    .unwrap_or_else(|| Series::padded(state.total.rps.len()).view()),
            });
        }
        total = figures(
            &total_rate,
            &total_window,
            (total.in_flight, total.requests_total),
            bounds,
        );
        routes.sort_by(|a, b| {
            b.current
                .rps
                .total_cmp(&a.current.rps)
                .then(b.current.requests_total.cmp(&a.current.requests_total))
                .then_with(|| a.route.cmp(&b.route))
                .then(a.method.cmp(b.method))
        });
        TrafficView {
            total,
            history: state.total.view(),
            routes,
        }
    }
}

/// The figures of a series from its rate span, its one-minute window, and its requests in
/// flight and finished now.
fn figures(
    rate: &Delta,
    window: &Delta,
    (in_flight, requests_total): (i64, u64),
    bounds: &[f64],
) -> Current {
    let q = |q| quantile_ms(bounds, &window.buckets, q).map(round2);
    Current {
        rps: round2(rate.rate()),
        // Over the minute: a rare failure stays visible between two polls.
        error_ratio: round4(window.error_ratio()),
        in_flight,
        requests_total,
        p50_ms: q(0.5),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
    }
}

/// The `q` quantile, ms, of observations counted per bucket (`counts` has one slot per bound,
/// then `+Inf`): linear within the bucket that holds it, from the bucket's lower bound (0 for
/// the first); in the `+Inf` bucket, the highest bound. `None` without observations.
pub(crate) fn quantile_ms(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, count) in counts.iter().enumerate() {
        let next = seen + count;
        if *count > 0 && next as f64 >= rank {
            let Some(upper) = bounds.get(i) else {
                return bounds.last().map(|b| b * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - seen as f64) / *count as f64;
            return Some((lower + (upper - lower) * within.clamp(0.0, 1.0)) * 1000.0);
        }
        seen = next;
    }
    bounds.last().map(|b| b * 1000.0)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_quantile_is_interpolated_within_its_bucket_and_capped_at_the_highest_bound() {
        let bounds = [0.01, 0.1, 1.0];
        // 10 under 10 ms, 10 between 10 and 100 ms.
        assert_eq!(quantile_ms(&bounds, &[10, 10, 0, 0], 0.5), Some(10.0));
        let p75 = quantile_ms(&bounds, &[10, 10, 0, 0], 0.75).unwrap();
        assert!((p75 - 55.0).abs() < 1e-9, "{p75}");
        assert_eq!(quantile_ms(&bounds, &[0, 0, 0, 5], 0.99), Some(1000.0));
        assert_eq!(quantile_ms(&bounds, &[0, 0, 0, 0], 0.5), None);
    }

    fn quiet_metrics() -> Metrics {
        Metrics::new(&crate::test::quiet_config()).unwrap()
    }

    fn serve(metrics: &Metrics, route: &str, status: u16, ms: u64, n: usize) {
        let handles = metrics.route(Some(route));
        let label = handles.label().clone();
        for _ in 0..n {
            handles.method(metrics, "GET").record(
                metrics,
                "GET",
                &label,
                status,
                Duration::from_millis(ms),
            );
        }
    }

    #[test]
    fn each_step_becomes_a_point_of_rate_error_ratio_and_p95_per_route_and_for_the_service() {
        let metrics = quiet_metrics();
        let traffic = Traffic::new(metrics.clone());
        let t0 = Instant::now();
        serve(&metrics, "/a", 200, 3, 5);
        traffic.tick_at(t0);
        serve(&metrics, "/a", 200, 3, 6);
        serve(&metrics, "/a", 500, 3, 2);
        serve(&metrics, "/b", 200, 700, 4);
        traffic.tick_at(t0 + STEP);
        let view = traffic.view_at(t0 + STEP + Duration::from_millis(1500));
        assert_eq!(view.history.rps, vec![6.0]);
        assert_eq!(view.history.error_ratio, vec![0.1667]);
        let a = view.routes.iter().find(|r| &*r.route == "/a").unwrap();
        assert_eq!(a.history.rps, vec![4.0]);
        assert_eq!(a.history.error_ratio, vec![0.25]);
        assert_eq!(a.current.requests_total, 13);
        // Nothing since the last step: the rate over the last 1.5 s is 0.
        assert_eq!(a.current.rps, 0.0);
        // The error ratio is the minute's (here: since the first step, 2 failures of 8).
        assert_eq!(a.current.error_ratio, 0.25);
        let b = view.routes.iter().find(|r| &*r.route == "/b").unwrap();
        // A route seen for the first time in a step is padded to the history's length.
        assert_eq!(b.history.rps, vec![2.0]);
        let p95 = b.history.p95_ms[0].unwrap();
        assert!(p95 > 500.0 && p95 <= 1000.0, "{p95}");
        assert_eq!(view.total.requests_total, 17);
    }

    #[test]
    fn in_flight_requests_and_the_rate_since_the_last_step_are_read_at_view_time() {
        let metrics = quiet_metrics();
        let traffic = Traffic::new(metrics.clone());
        let t0 = Instant::now();
        traffic.tick_at(t0);
        serve(&metrics, "/a", 200, 1, 10);
        let handles = metrics.route(Some("/a"));
        handles.method(&metrics, "GET").active().increment();
        let view = traffic.view_at(t0 + Duration::from_secs(2));
        assert_eq!(view.total.rps, 5.0);
        assert_eq!(view.total.in_flight, 1);
        assert!(view.history.rps.is_empty());
        assert!(view.routes[0].current.p50_ms.is_some());
    }

    #[test]
    fn the_history_keeps_at_most_its_points() {
        let metrics = quiet_metrics();
        let traffic = Traffic::new(metrics.clone());
        serve(&metrics, "/a", 200, 1, 1);
        let t0 = Instant::now();
        for i in 0..(POINTS as u32 + 20) {
            traffic.tick_at(t0 + STEP * i);
        }
        let view = traffic.view_at(t0 + STEP * (POINTS as u32 + 20));
        assert_eq!(view.history.rps.len(), POINTS);
        assert_eq!(view.routes[0].history.rps.len(), POINTS);
        assert!(traffic.state.lock().unwrap().samples.len() <= WINDOW_STEPS + 1);
    }
}
