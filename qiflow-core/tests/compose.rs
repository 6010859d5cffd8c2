//! With `install_global(false)`, the host composes qiflow's pieces itself: the tracing layers and
//! the filter under its own subscriber (beside its fmt layer and its `EnvFilter`), the metrics
//! recorder in a fan-out with its own, the panic hook, and (feature `sentry`) the Sentry client
//! on sentry's hub. Each test installs a different process-wide piece, and this binary is theirs
//! alone: globals are per process.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[cfg(feature = "sentry")]
#[path = "support/sentry.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qiflow_core::{Guard, Observer};

const PATIENCE: Duration = Duration::from_secs(20);

fn observer(configure: impl FnOnce(&mut qiflow_core::Config)) -> (Observer, Guard) {
    let mut config = qiflow_core::test::quiet_config();
    configure(&mut config);
    Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap()
}

fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("app.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What the host's fmt layer writes: kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The host keeps its registry, its fmt layer and its `EnvFilter`; qiflow's layers sit beside
/// them under qiflow's filter. `set_log_level` changes qiflow's filter only.
#[test]
fn qiflow_beside_the_hosts_fmt_layer_and_env_filter() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let dir = tempfile::tempdir().unwrap();
    let (observer, guard) = observer(|c| c.logging.dir = dir.path().to_path_buf());
    observer.set_log_level("info").unwrap();
    let host_output = Captured::default();
    let writer = host_output.clone();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(tracing_subscriber::EnvFilter::new("warn")),
        )
        .with(
            observer
                .log_layer()
                .and_then(observer.capture_layer())
                .with_filter(observer.log_filter()),
        )
        .init();

    tracing::info!(step = 1, "an info line");
    tracing::warn!(step = 1, "a warning");
    tracing::debug!(step = 1, "a debug line");
    assert_eq!(observer.set_log_level("debug").unwrap(), "info");
    tracing::debug!(step = 2, "a debug line");
    tracing::error!(order = 7, "payment failed");
    log::info!("through the log crate");

    assert!(observer.flush(PATIENCE));
    let lines = log_lines(dir.path());
    let seen: Vec<(String, i64)> = lines
        .iter()
        .filter(|l| l["step"].is_i64())
        .map(|l| {
            (
                l["message"].as_str().unwrap().to_owned(),
                l["step"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("an info line".to_owned(), 1),
            ("a warning".to_owned(), 1),
            ("a debug line".to_owned(), 2)
        ]
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "through the log crate")
    );
    // qiflow's capture layer made a report of the error event.
    let errors = observer.error_store().to_json();
    assert!(errors.contains("payment failed"), "{errors}");
    // The host's fmt layer kept its own filter: warnings and the error, no debug line.
    let host = host_output.text();
    assert!(
        host.contains("a warning") && host.contains("payment failed"),
        "{host}"
    );
    assert!(
        !host.contains("an info line") && !host.contains("a debug line"),
        "{host}"
    );
    drop(guard);
}

/// The host installs a fan-out of qiflow's recorder and its own; `metrics::counter!` in host
/// code reaches both, and qiflow's `/metrics`.
#[test]
fn the_metrics_recorder_in_the_hosts_fan_out() {
    let (observer, guard) = observer(|_| {});
    let debugging = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = debugging.snapshotter();
    let fanout = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(observer.metrics_recorder())
        .add_recorder(debugging)
        .build();
    metrics::set_global_recorder(fanout).unwrap();

    metrics::counter!("app_orders_total", "kind" => "book").increment(3);
    metrics::gauge!("app_queue_depth").set(5.0);

    let text = observer.render_metrics();
    assert!(
        text.contains(r#"app_orders_total{kind="book"} 3"#),
        "{text}"
    );
    assert!(text.contains("app_queue_depth 5"), "{text}");
    let theirs = snapshotter.snapshot().into_vec();
    assert!(
        theirs
            .iter()
            .any(|(key, _, _, value)| key.key().name() == "app_orders_total"
                && *value == metrics_util::debugging::DebugValue::Counter(3)),
        "{theirs:?}"
    );
    drop(guard);
}

/// The host installs qiflow's panic hook itself: a panic becomes a report.
#[test]
fn the_panic_hook_installed_by_the_host() {
    let (observer, guard) = observer(|_| {});
    observer.install_panic_hook();
    let panicked = std::thread::Builder::new()
        .name("host-worker".into())
        .spawn(|| {
            let empty: Vec<u8> = Vec::new();
            empty[usize::from(empty.is_empty())] // the panic: `PANIC_LINE`
        })
        .unwrap()
        .join();
    assert!(panicked.is_err());
    assert!(observer.flush(PATIENCE));
    let errors = observer.error_store().to_json();
    assert!(errors.contains("index out of bounds"), "{errors}");
    assert!(errors.contains(r#""kind":"panic""#), "{errors}");
    // The panicking thread's stack, resolved by qiflow's worker: the closure's frame, named in
    // full (`…::the_panic_hook_installed_by_the_host::{{closure}}`) or, inlined under line tables
    // only, by its short name (`{closure#1}`), at its file.
    assert!(
        errors.contains("the_panic_hook_installed_by_the_host::{{closure}}")
            || errors.contains(r#""function":"{closure#1}","file":""#),
        "{errors}"
    );
    let line = include_str!("compose.rs")
        .lines()
        .position(|l| l.ends_with("// the panic: `PANIC_LINE`"))
        .unwrap()
        + 1;
    assert!(
        errors.contains(&format!(r#"tests/compose.rs","line":{line}"#)),
        "{errors}"
    );
    drop(guard);
}

/// The host binds qiflow's Sentry client to sentry's main hub: its own `sentry::capture_message`
/// goes through qiflow's transport (the `sentry` pipeline), delivered, then failed and counted
/// when Sentry answers 500.
#[cfg(feature = "sentry")]
#[test]
fn the_sentry_client_on_the_hosts_hub() {
    use support::{FakeSentry, Mode};

    let sentry = FakeSentry::start(Mode::Ok);
    let (observer, guard) = observer(|c| {
        c.errors.sentry_dsn = Some(sentry.dsn().into());
        c.service.environment = "staging".into();
    });
    let client = observer.sentry_client().expect("a DSN is configured");
    sentry::Hub::main().bind_client(Some(client));

    sentry::capture_message("the host speaks", sentry::Level::Warning);
    assert!(observer.flush(PATIENCE));
    let received = sentry.accepted();
    assert_eq!(received.len(), 1, "{received:?}");
    let event = received[0].event().unwrap();
    assert_eq!(event["message"], "the host speaks", "{event}");
    assert_eq!(event["level"], "warning", "{event}");
    assert_eq!(event["environment"], "staging", "{event}");

    sentry.set_mode(Mode::Status(500));
    sentry::capture_message("lost to a 500", sentry::Level::Error);
    assert!(observer.flush(PATIENCE));
    let stats = observer.stats();
    let hub = stats.iter().find(|s| s.name == "sentry").unwrap();
    assert_eq!((hub.submitted, hub.delivered), (2, 1), "{hub:?}");
    assert_eq!(hub.dropped_sink_error, 1, "{hub:?}");
    let metrics = observer.render_metrics();
    for line in [
        r#"qiflow_errors_forwarded_total{reporter="sentry",outcome="sent"} 1"#,
        r#"qiflow_errors_forwarded_total{reporter="sentry",outcome="failed"} 1"#,
        r#"qiflow_dropped_total{pipeline="sentry",reason="sink_error"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    drop(guard);
}

/// Without a DSN there is no client to bind.
#[test]
fn no_sentry_client_without_a_dsn() {
    let (observer, guard) = observer(|_| {});
    #[cfg(feature = "sentry")]
    assert!(observer.sentry_client().is_none());
    assert!(!observer.stats().iter().any(|s| s.name == "sentry"));
    drop(guard);
}
