//! `init` installs the process-wide pieces: host `tracing` events reach qiflow's log file and host
//! `metrics` calls reach `/metrics`, with the global labels from `[service]` (`service` and
//! `environment`; the version only on `qiflow_build_info`). (Its own test binary: globals are per process.)

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

#[test]
fn init_installs_the_subscriber_and_the_metrics_recorder() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.logging.dir = dir.path().to_path_buf();
    config.metrics.global_labels = true;
    config.service.name = "shop".into();
    config.service.environment = "prod".into();
    config.service.version = "1.2.3".into();
    let (observer, guard) = qiflow_core::init(&config).unwrap();

    metrics::counter!("app_orders_total", "kind" => "book").increment(2);
    tracing::info!(order = 7u64, "order placed");
    log::warn!("from the log crate");

    let text = observer.render_metrics();
    assert!(
        text.contains(r#"app_orders_total{service="shop",environment="prod",kind="book"} 2"#),
        "{text}"
    );
    // The version is on qiflow_build_info only, so a deploy does not start every series anew.
    assert!(
        text.contains(r#"qiflow_build_info{service="shop",environment="prod",version="1.2.3"} 1"#),
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
