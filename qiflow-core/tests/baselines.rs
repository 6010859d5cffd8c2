//! Baselines on a manual clock (no sleeps): a latency step alerts within one window and resolves
//! after recovery, steady traffic never alerts, nothing alerts before `min_samples`, an error
//! spike alerts, the state file keeps what was learned across a restart, and the route cap holds.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use qiflow_core::alert::AlertStatus;
use qiflow_core::test::{ManualClock, RecordingChannel};
use qiflow_core::{Guard, Observer};

const WINDOW: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

struct Bench {
    observer: Observer,
    clock: Arc<ManualClock>,
    channel: RecordingChannel,
    _guard: Guard,
}

fn start(state_file: Option<&std::path::Path>, clock: Option<Arc<ManualClock>>) -> Bench {
    let clock = clock.unwrap_or_else(|| {
        Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ))
    });
    let mut config = qiflow_core::test::quiet_config();
    config.baseline.window = WINDOW;
    config.baseline.min_samples = 50;
    config.baseline.deviation_factor = 2.0;
    config.baseline.slow_request = Duration::from_secs(5);
    if let Some(path) = state_file {
        config.baseline.state_file = path.to_path_buf();
    }
    config.alerts.group_wait = Duration::ZERO;
    config.alerts.min_level = qiflow_core::config::AlertLevel::Info;
    let channel = RecordingChannel::new();
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .clock(clock.clone())
        .alert_channel("rec", channel.clone())
        .build()
        .unwrap();
    Bench {
        observer,
        clock,
        channel,
        _guard: guard,
    }
}

impl Bench {
    /// One window of traffic: `n` requests of `latency` (every `fail_every`th failing), spread
    /// over the window, then the evaluation at its end.
    fn window(&self, n: u32, latency: Duration, fail_every: u32) {
        let baselines = self.observer.baselines().unwrap();
        let step = WINDOW / n;
        for i in 0..n {
            self.clock.advance(step);
            let failed = fail_every > 0 && i % fail_every == 0;
            baselines.record_request("GET", "/users/{id}", latency, failed);
        }
        // The worker evaluates on its own ticks too: either way, this window is evaluated once.
        baselines.evaluate();
        let now_ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(
            now_ms(baselines.last_evaluated()),
            now_ms(qiflow_core::clock::Clock::now(&*self.clock)),
            "the window ending now was evaluated"
        );
        assert!(self.observer.flush(WAIT));
    }

    /// The (name, status) of every alert notified so far.
    fn notified(&self) -> Vec<(String, AlertStatus)> {
        self.channel
            .sent()
            .into_iter()
            .flat_map(|n| n.alerts)
            .map(|n| (n.alert.name.clone(), n.alert.status))
            .collect()
    }
}

const MS10: Duration = Duration::from_millis(10);

#[test]
fn a_latency_step_alerts_within_one_window_and_resolves_after_recovery() {
    let b = start(None, None);
    for _ in 0..5 {
        b.window(200, MS10, 0);
    }
    assert!(b.notified().is_empty(), "steady: {:?}", b.notified());
    b.window(200, Duration::from_millis(200), 0);
    assert_eq!(
        b.notified(),
        [("latency_deviation".to_owned(), AlertStatus::Firing)],
        "one alert, in the first window of 200 ms"
    );
    let view: serde_json::Value =
        serde_json::from_str(&b.observer.baselines().unwrap().to_json()).unwrap();
    let route = &view["routes"][0];
    assert_eq!(route["route"], "/users/{id}");
    assert_eq!(route["latency_deviating"], true);
    let p95 = route["window"]["p95_ms"].as_f64().unwrap();
    assert!((190.0..=210.0).contains(&p95), "{route}");
    let baseline_p95 = route["baseline"]["p95_ms"].as_f64().unwrap();
    assert!(
        baseline_p95 < 30.0,
        "an incident barely moves the baseline: {route}"
    );
    // Back to normal: resolved.
    b.window(200, MS10, 0);
    assert_eq!(
        b.notified(),
        [
            ("latency_deviation".to_owned(), AlertStatus::Firing),
            ("latency_deviation".to_owned(), AlertStatus::Resolved)
        ]
    );
    let metrics = b.observer.render_metrics();
    assert!(
        metrics.contains("qiflow_baseline_deviations_total{route=\"/users/{id}\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("qiflow_baseline_p95_seconds{method=\"GET\",route=\"/users/{id}\"}"));
}

#[test]
fn steady_traffic_over_hours_never_alerts() {
    let b = start(None, None);
    // Three hours of one-minute windows, latencies wandering ±30% around 10 ms.
    for w in 0..180u32 {
        let jitter = 1.0 + 0.3 * ((w as f64) * 0.7).sin();
        b.window(100, MS10.mul_f64(jitter), 50);
    }
    assert!(b.notified().is_empty(), "{:?}", b.notified());
}

#[test]
fn nothing_alerts_before_min_samples() {
    let b = start(None, None);
    for _ in 0..5 {
        b.window(40, MS10, 0); // below min_samples = 50: not even learned
    }
    b.window(40, Duration::from_secs(2), 0);
    assert!(b.notified().is_empty());
    let view = b.observer.baselines().unwrap().view();
    assert!(
        view[0].baseline.is_none(),
        "nothing learned below min_samples"
    );
}

#[test]
fn an_error_rate_spike_alerts() {
    let b = start(None, None);
    for _ in 0..5 {
        b.window(200, MS10, 100); // 1% errors
    }
    b.window(200, MS10, 4); // 25% errors
    assert_eq!(
        b.notified(),
        [("error_rate_deviation".to_owned(), AlertStatus::Firing)]
    );
}

#[test]
fn a_restart_keeps_the_learned_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baselines.json");
    let clock = {
        let b = start(Some(&path), None);
        for _ in 0..5 {
            b.window(200, MS10, 0);
        }
        b.clock.clone()
        // The guard's drop saves the state file.
    };
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["routes"][0]["route"], "/users/{id}");
    assert_eq!(saved["routes"][0]["windows"], 5);
    #[cfg(unix)]
    {
        // Created private: only the owner reads what the service learned.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    // A new process: the first window of 200 ms alerts at once, against what was learned.
    let b = start(Some(&path), Some(clock));
    b.window(200, Duration::from_millis(200), 0);
    assert_eq!(
        b.notified(),
        [("latency_deviation".to_owned(), AlertStatus::Firing)]
    );
}

#[test]
fn ten_thousand_routes_stay_within_the_cap() {
    let b = start(None, None);
    let baselines = b.observer.baselines().unwrap();
    for i in 0..10_000 {
        baselines.record_request("GET", &format!("/r/{i}"), MS10, false);
    }
    let cap = b.observer.config().metrics.max_routes;
    assert_eq!(baselines.route_count(), cap + 1, "the cap plus `other`");
    let view = baselines.view();
    let other = view.iter().find(|r| r.route == "other").unwrap();
    assert_eq!(other.window.count, 10_000 - cap as u64);
}

/// Counts `qiflow::slow` events and keeps their fields.
#[derive(Clone, Default)]
struct SlowEvents(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SlowEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "qiflow::slow" {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[test]
fn slow_requests_are_logged_once_a_second_and_all_counted() {
    use tracing_subscriber::layer::SubscriberExt;
    let b = start(None, None);
    let events = SlowEvents::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    tracing::subscriber::with_default(subscriber, || {
        let baselines = b.observer.baselines().unwrap();
        // A storm: 1,000 slow requests within 2 s of clock time.
        for _ in 0..1_000 {
            b.clock.advance(Duration::from_millis(2));
            baselines.record_request("POST", "/orders", Duration::from_secs(6), false);
        }
    });
    let lines = events.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "one line per second per route: {lines:?}");
    assert!(lines[0].contains("route=\"/orders\""), "{}", lines[0]);
    assert!(lines[0].contains("latency_ms=6000"), "{}", lines[0]);
    let metrics = b.observer.render_metrics();
    assert!(
        metrics.contains("qiflow_slow_requests_total{method=\"POST\",route=\"/orders\"} 1000"),
        "every slow request is counted: {metrics}"
    );
}
