//! `init` installs the process-wide pieces: host `tracing` events reach qiflow's log file, host
//! `metrics` calls reach `/metrics`, with the global labels from `[service]` (`service` and
//! `environment`; the version only on `qiflow_build_info`), and (feature `sentry`) host
//! `sentry::capture_message` calls reach Sentry through qiflow's transport. (Its own test
//! binary: globals are per process.)

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[cfg(feature = "sentry")]
#[path = "support/sentry.rs"]
mod support;

use std::time::Duration;

#[test]
fn init_installs_the_subscriber_and_the_metrics_recorder() {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(feature = "sentry")]
    let sentry = support::FakeSentry::start(support::Mode::Ok);
    let mut config = qiflow_core::test::quiet_config();
    #[cfg(feature = "sentry")]
    {
        config.errors.sentry_dsn = Some(sentry.dsn().into());
    }
    config.logging.dir = dir.path().to_path_buf();
    config.metrics.global_labels = true;
    config.service.name = "shop".into();
    config.service.environment = "prod".into();
    config.service.version = "1.2.3".into();
    let (observer, guard) = qiflow_core::init(&config).unwrap();

    metrics::counter!("app_orders_total", "kind" => "book").increment(2);
    tracing::info!(order = 7u64, "order placed");
    log::warn!("from the log crate");
    #[cfg(feature = "sentry")]
    sentry::capture_message("from the host's sentry call", sentry::Level::Warning);

    let text = observer.render_metrics();
    assert!(
        text.contains(r#"app_orders_total{service="shop",environment="prod",kind="book"} 2"#),
        "{text}"
    );
    // The version is on qiflow_build_info only, so a deploy does not start every series anew.
    assert!(
        text.lines().any(|l| l.starts_with(
            r#"qiflow_build_info{service="shop",environment="prod",version="1.2.3",service_instance_id=""#
        ) && l.ends_with(r#""} 1"#)),
        "{text}"
    );
    for line in text.lines().filter(|l| l.contains("version=")) {
        assert!(line.starts_with("qiflow_build_info{"), "{line}");
    }

    // A second init in the same process says what to do instead of silently doing nothing.
    let err = qiflow_core::init(&config).unwrap_err();
    assert_eq!(err.kind(), qiflow_core::InitErrorKind::GlobalAlreadySet);
    assert!(err.to_string().contains("install_global(false)"), "{err}");

    assert!(observer.flush(Duration::from_secs(5)));
    #[cfg(feature = "sentry")]
    {
        // Through qiflow's transport: delivered by the `sentry` pipeline and counted.
        let received = sentry.accepted();
        assert_eq!(received.len(), 1, "{received:?}");
        let event = received[0].event().unwrap();
        assert_eq!(event["message"], "from the host's sentry call", "{event}");
        assert_eq!(event["environment"], "prod", "{event}");
        let stats = observer.stats();
        let hub = stats.iter().find(|s| s.name == "sentry").unwrap();
        assert_eq!(hub.delivered, 1, "{hub:?}");
        assert!(
            observer.render_metrics().contains(
                r#"qiflow_errors_forwarded_total{service="shop",environment="prod",reporter="sentry",outcome="sent"} 1"#
            ),
            "{}",
            observer.render_metrics()
        );
    }
    drop(guard);
    let log = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert!(
        log.contains(r#""message":"order placed","order":7"#),
        "{log}"
    );
    assert!(
        log.contains(r#""level":"WARN""#) && log.contains("from the log crate"),
        "{log}"
    );
}
