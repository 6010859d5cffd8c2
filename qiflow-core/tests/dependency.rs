//! Dependencies registered with `Observer::dependency`: calls timed and counted, slow calls
//! logged once with the statement normalized, pools sampled and saturation alerted, readiness
//! checks cached and bounded (tier 1: no server; `.ci/tier2-deps.sh` runs them against
//! PostgreSQL).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use qiflow_core::config::Loader;
use qiflow_core::dependency::{DependencyKind, ErrorClass, MAX_OPERATIONS, PoolSample};
use qiflow_core::health::CheckResult;
use qiflow_core::{Guard, Observer};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt as _;

const CANARY: &str = "CANARY-d3p-51";

fn start(extra: &str, log_dir: &Path) -> (Observer, Guard, Dispatch) {
    let mut config = Loader::new()
        .toml_str(format!(
            "[alerts]\ngroup_wait = \"0s\"\n{extra}\n[dependencies.main-db]\nslow = \"80ms\"\nmax_pending = 2\ntimeout = \"300ms\"\ncache = \"1s\"\n"
        ))
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap();
    let quiet = qiflow_core::test::quiet_config();
    config.admin = quiet.admin;
    config.service.state_dir = quiet.service.state_dir;
    config.alerts.state_file = quiet.alerts.state_file;
    config.baseline.state_file = quiet.baseline.state_file;
    config.audit.enabled = false;
    config.metrics.system = false;
    config.metrics.global_labels = false;
    config.logging.dir = log_dir.to_path_buf();
    config.logging.stdout = false;
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(observer.log_layer()));
    (observer, guard, dispatch)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

mod dependency_support;
use dependency_support::{active, errors, series};

fn io_error(kind: std::io::ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, "test")
}

#[test]
fn calls_are_timed_by_operation_and_errors_counted_by_class() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    // The same name is the same dependency.
    assert_eq!(
        observer.dependency("main-db", DependencyKind::Redis).kind(),
        DependencyKind::Postgres
    );
    let rt = rt();
    rt.block_on(async {
        for _ in 0..3 {
            db.query("SELECT * FROM users WHERE id = $1", async {
                Ok::<_, std::io::Error>(())
            })
            .await
            .unwrap();
        }
        let refused = db
            .observe("SELECT", async {
                Err::<(), _>(io_error(std::io::ErrorKind::ConnectionRefused))
            })
            .await;
        assert!(refused.is_err(), "the result is handed back unchanged");
        let _ = db
            .observe("INSERT", async {
                Err::<(), _>(io_error(std::io::ErrorKind::TimedOut))
            })
            .await;
        let _ = db
            .observe("INSERT", async {
                Err::<(), _>(io_error(std::io::ErrorKind::InvalidData))
            })
            .await;
        let elapsed = db
            .observe("SELECT", async {
                tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>()).await
            })
            .await;
        assert!(elapsed.is_err());
    });
    let h = "db_client_operation_duration_seconds_count";
    assert_eq!(
        series(
            &observer,
            &format!(
                "{h}{{db_system=\"postgresql\",db_operation=\"SELECT\",outcome=\"ok\",pool=\"main-db\"}}"
            )
        ),
        Some(3.0)
    );
    assert_eq!(
        series(
            &observer,
            &format!(
                "{h}{{db_system=\"postgresql\",db_operation=\"SELECT\",outcome=\"error\",pool=\"main-db\"}}"
            )
        ),
        Some(2.0)
    );
    let errors = |class: &str| {
        series(
            &observer,
            &format!("qiflow_dependency_errors_total{{pool=\"main-db\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(errors("connection"), Some(1.0));
    assert_eq!(errors("timeout"), Some(2.0));
    assert_eq!(errors("query"), Some(1.0));
    assert_eq!(
        ErrorClass::of(&io_error(std::io::ErrorKind::BrokenPipe)),
        ErrorClass::Connection
    );
}

#[test]
fn operations_are_bounded_then_folded_into_other() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let cache = observer.dependency("cache", DependencyKind::Redis);
    for i in 0..MAX_OPERATIONS + 10 {
        cache.record(&format!("OP{i}"), None, Duration::from_micros(50), None);
    }
    let text = observer.render_metrics();
    let ops = text
        .lines()
        .filter(|l| {
            l.starts_with("db_client_operation_duration_seconds_count{")
                && l.contains("outcome=\"ok\"")
        })
        .count();
    assert_eq!(
        ops,
        MAX_OPERATIONS + 1,
        "{MAX_OPERATIONS} operations and other"
    );
    assert!(text.contains(
        "db_client_operation_duration_seconds_count{db_system=\"redis\",db_operation=\"other\",outcome=\"ok\",pool=\"cache\"} 10"
    ));
}

#[test]
fn a_slow_query_is_one_line_one_count_one_alert_and_no_value_leaks() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, guard, dispatch) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    let statement = format!("SELECT pg_sleep(0.1) WHERE note = '{CANARY}' AND id = 4217");
    tracing::dispatcher::with_default(&dispatch, || {
        rt().block_on(async {
            // Under the threshold: nothing.
            db.query(&statement, async { Ok::<_, std::io::Error>(()) })
                .await
                .unwrap();
            db.query(&statement, async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, std::io::Error>(())
            })
            .await
            .unwrap();
        });
    });
    assert!(observer.flush(Duration::from_secs(10)));
    assert_eq!(
        series(&observer, "qiflow_dependency_slow_total{pool=\"main-db\"}"),
        Some(1.0)
    );
    let view = observer.alerts().view();
    let slow: Vec<_> = view
        .active
        .iter()
        .filter(|a| a.alert.name == "dependency_slow")
        .collect();
    assert_eq!(slow.len(), 1, "{:?}", view.active);
    let alert = &slow[0].alert;
    assert_eq!(
        alert.labels.get("pool").map(String::as_str),
        Some("main-db")
    );
    assert_eq!(
        alert.labels.get("db_operation").map(String::as_str),
        Some("SELECT")
    );
    assert_eq!(
        alert.description,
        "SELECT pg_sleep(?) WHERE note = ? AND id = ?"
    );
    drop(guard);
    let text = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("qiflow::dependency"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["pool"], "main-db");
    assert_eq!(line["operation"], "SELECT");
    assert_eq!(
        line["statement"],
        "SELECT pg_sleep(?) WHERE note = ? AND id = ?"
    );
    assert!(line["duration_ms"].as_u64().unwrap() >= 100);
    // The canary is nowhere: not in the log, the alert, nor a label on /metrics.
    assert!(!text.contains(CANARY) && !text.contains("4217"));
    assert!(!format!("{alert:?}").contains(CANARY));
    assert!(!observer.render_metrics().contains(CANARY));
}

#[test]
fn pool_figures_are_sampled_and_saturation_raised_then_resolved() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    let pending = Arc::new(AtomicU64::new(0));
    let figures = pending.clone();
    db.pool(move || {
        let waiting = figures.load(Ordering::Relaxed);
        PoolSample::new(
            if waiting > 0 { 0 } else { 3 },
            if waiting > 0 { 8 } else { 5 },
            8,
            waiting,
        )
    });
    let gauge = |name: &str| series(&observer, name);
    assert_eq!(
        gauge("db_client_connection_count{pool=\"main-db\",state=\"idle\"}"),
        Some(3.0)
    );
    assert_eq!(
        gauge("db_client_connection_count{pool=\"main-db\",state=\"used\"}"),
        Some(5.0)
    );
    assert_eq!(
        gauge("db_client_connection_max{pool=\"main-db\"}"),
        Some(8.0)
    );
    // Two waiters: at max_pending, not over it.
    pending.store(2, Ordering::Relaxed);
    db.sample();
    assert!(!saturated(&observer));
    pending.store(5, Ordering::Relaxed);
    let sample = db.sample().unwrap();
    assert_eq!(sample.pending, 5);
    assert_eq!(
        gauge("db_client_connection_pending_requests{pool=\"main-db\"}"),
        Some(5.0)
    );
    assert!(saturated(&observer), "5 waiters over max_pending 2");
    pending.store(0, Ordering::Relaxed);
    db.sample();
    assert!(!saturated(&observer), "resolved once the pool has room");
    // A timed-out acquire raises it too, and counts as a timeout.
    db.acquire_timed_out();
    assert!(saturated(&observer));
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(1.0));
    // The sample after a time-out keeps it raised (the pool had none free then); the next one
    // with room resolves it.
    db.sample();
    assert!(saturated(&observer), "a time-out since the last sample");
    db.sample();
    assert!(!saturated(&observer), "a clean sample with room");
}

#[test]
fn a_call_that_times_out_waiting_for_the_pool_saturates_it_and_another_time_out_does_not() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    let rt = rt();
    // The server answered nothing in time: a timeout, not the pool's.
    rt.block_on(db.query("SELECT 1", async {
        Err::<(), _>(io_error(std::io::ErrorKind::TimedOut))
    }))
    .unwrap_err();
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(1.0));
    assert!(!saturated(&observer));
    // The pool had no connection free in time (deadpool's own error): saturated too.
    rt.block_on(db.query("SELECT 1", async {
        Err::<(), _>(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ))
    }))
    .unwrap_err();
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(2.0));
    assert!(saturated(&observer));
}

/// Whether `dependency_saturated` is raised, once the pipelines are flushed.
fn saturated(observer: &Observer) -> bool {
    !active(observer, "dependency_saturated").is_empty()
}

#[test]
fn acquires_are_timed_their_waiters_counted_and_a_time_out_saturates() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    // A pool of one connection: a semaphore with one permit.
    let pool = Arc::new(tokio::sync::Semaphore::new(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let held = db.acquire(pool.clone().acquire_owned()).await.unwrap();
        assert_eq!(db.acquiring(), 0);
        // Three callers wait while the one connection is held.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (db, pool) = (db.clone(), pool.clone());
                tokio::spawn(async move {
                    drop(db.acquire(pool.acquire_owned()).await.unwrap());
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(db.acquiring(), 3);
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(db.acquiring(), 0);
        // A caller that gives up (the future dropped) is counted out too.
        let held = pool.clone().acquire_owned().await.unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            db.acquire(pool.clone().acquire_owned()),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(db.acquiring(), 0);
        // An acquire that fails with a time-out saturates the pool.
        let timed_out = db
            .acquire(tokio::time::timeout(
                Duration::from_millis(50),
                pool.clone().acquire_owned(),
            ))
            .await;
        assert!(timed_out.is_err());
        drop(held);
    });
    assert_eq!(
        series(
            &observer,
            "db_client_connection_wait_time_seconds_count{pool=\"main-db\"}"
        ),
        Some(5.0),
        "the held one, three waiters and the timed-out one (the dropped one never ended)"
    );
    let waited = series(
        &observer,
        "db_client_connection_wait_time_seconds_sum{pool=\"main-db\"}",
    )
    .unwrap();
    assert!(
        waited >= 3.0 * 0.15 + 0.05,
        "three waits of 150 ms and one of 50 ms: {waited}"
    );
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(1.0));
    assert!(saturated(&observer));
}

#[test]
fn a_pool_s_own_acquire_totals_feed_the_wait_histogram_and_saturation() {
    use qiflow_core::dependency::AcquireTotals;
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    let totals = Arc::new(std::sync::Mutex::new(AcquireTotals::default()));
    let figures = totals.clone();
    db.pool(move || PoolSample::new(1, 1, 2, 0).with_acquires(*figures.lock().unwrap()));
    let count = || {
        series(
            &observer,
            "db_client_connection_wait_time_seconds_count{pool=\"main-db\"}",
        )
    };
    let sum = || {
        series(
            &observer,
            "db_client_connection_wait_time_seconds_sum{pool=\"main-db\"}",
        )
        .unwrap()
    };
    let bucket = |le: &str| {
        series(
            &observer,
            &format!(
                "db_client_connection_wait_time_seconds_bucket{{pool=\"main-db\",le=\"{le}\"}}"
            ),
        )
    };
    // 10 direct gets and 4 that waited 2 s between them: sum and count exact, the 4 at 0.5 s.
    *totals.lock().unwrap() = AcquireTotals::new(10, 4, 0, Duration::from_secs(2));
    db.sample();
    assert_eq!(count(), Some(14.0));
    assert!((sum() - 2.0).abs() < 1e-9, "{}", sum());
    assert_eq!(bucket("0.001"), Some(10.0));
    assert_eq!(bucket("0.5"), Some(14.0));
    // Only the growth counts: 2 more direct, and one that timed out after 1 s.
    *totals.lock().unwrap() = AcquireTotals::new(12, 4, 1, Duration::from_secs(3));
    db.sample();
    assert_eq!(count(), Some(17.0));
    assert!((sum() - 3.0).abs() < 1e-9, "{}", sum());
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(1.0));
    assert!(saturated(&observer), "a timed-out get saturates");
    // No growth: nothing recorded; the next clean sample with room resolves it.
    db.sample();
    db.sample();
    assert_eq!(count(), Some(17.0));
    assert!(!saturated(&observer));
}

#[test]
fn an_error_rate_over_error_ratio_is_alerted_once_with_its_classes_then_resolved() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start(
        "[dependencies.cache]\nerror_ratio = 0.1\nerror_window = \"1s\"",
        logs.path(),
    );
    let db = observer.dependency("cache", DependencyKind::Redis);
    let errors = |observer: &Observer| active(observer, "dependency_errors");
    let call = |rt: &tokio::runtime::Runtime, fail: Option<std::io::ErrorKind>| {
        rt.block_on(db.observe("GET", async {
            match fail {
                Some(kind) => Err(io_error(kind)),
                None => Ok(()),
            }
        }))
        .ok();
    };
    let rt = rt();
    db.sample();
    // Too few calls to judge: 3 of 5 failing raises nothing.
    for i in 0..5 {
        call(
            &rt,
            (i < 3).then_some(std::io::ErrorKind::ConnectionRefused),
        );
    }
    db.sample();
    assert!(errors(&observer).is_empty(), "under MIN_CALLS");
    // 30 calls, 3 refused and 2 timed out: 5 of 35 in the window, over 10%.
    for i in 0..30 {
        let fail = match i {
            0..3 => Some(std::io::ErrorKind::ConnectionRefused),
            3..5 => Some(std::io::ErrorKind::TimedOut),
            _ => None,
        };
        call(&rt, fail);
    }
    db.sample();
    db.sample(); // judged again while over: still one alert
    let raised = errors(&observer);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let description = raised[0].alert.description.clone();
    assert!(
        description.contains("8 of 35 calls failed")
            && description.contains("6 connection, 2 timeout, 0 query"),
        "{description}"
    );
    let ratio = series(&observer, "qiflow_dependency_error_ratio{pool=\"cache\"}").unwrap();
    assert!((ratio - 8.0 / 35.0).abs() < 1e-9, "{ratio}");
    assert!(db.view().erroring);
    // A window later, too few calls to judge, some failing (callers backing off): still raised.
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..5 {
        call(
            &rt,
            (i < 2).then_some(std::io::ErrorKind::ConnectionRefused),
        );
    }
    db.sample();
    assert_eq!(errors(&observer).len(), 1, "not well again on 5 calls");
    // Another window later, 25 calls that succeed: resolved.
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..25 {
        call(&rt, None);
    }
    db.sample();
    assert!(errors(&observer).is_empty());
    assert_eq!(
        series(&observer, "qiflow_dependency_error_ratio{pool=\"cache\"}"),
        Some(0.0)
    );
}

#[test]
fn sampling_often_thins_the_error_window_but_keeps_its_base() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start(
        "[dependencies.cache]\nerror_ratio = 0.5\nerror_window = \"1h\"",
        logs.path(),
    );
    let db = observer.dependency("cache", DependencyKind::Redis);
    let rt = rt();
    db.sample();
    for i in 0..30 {
        rt.block_on(db.observe("GET", async move {
            if i < 10 {
                Err(io_error(std::io::ErrorKind::ConnectionReset))
            } else {
                Ok(())
            }
        }))
        .ok();
    }
    // Far more samples than the window keeps: the calls before them still count.
    for _ in 0..1_500 {
        db.sample();
    }
    let ratio = series(&observer, "qiflow_dependency_error_ratio{pool=\"cache\"}").unwrap();
    assert!((ratio - 10.0 / 30.0).abs() < 1e-9, "{ratio}");
}

#[test]
fn readiness_pings_are_cached_bounded_and_degrade_when_not_critical() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start(
        "[dependencies.cache]\ncritical = false\ncache = \"0s\"\ntimeout = \"200ms\"",
        logs.path(),
    );
    let rt = rt();
    let pings = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (counted, state) = (pings.clone(), up.clone());
    observer
        .dependency("main-db", DependencyKind::Postgres)
        .readiness(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            let up = state.load(Ordering::Relaxed);
            async move {
                if up {
                    CheckResult::healthy()
                } else {
                    CheckResult::unhealthy("connection refused")
                }
            }
        });
    let report = rt.block_on(observer.readiness());
    assert_eq!(report.http_status(), 200);
    assert!(report.checks.contains_key("dependency:main-db"));
    // A burst of probes within `cache` (1 s) pings once.
    for _ in 0..5 {
        rt.block_on(observer.readiness());
    }
    assert_eq!(pings.load(Ordering::Relaxed), 1);
    // Down, once the cached answer is older than `cache`: a critical dependency fails readiness.
    up.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1100));
    let report = rt.block_on(observer.readiness());
    assert_eq!(report.http_status(), 503, "{:?}", report.checks);
    // A non-critical one that hangs: bounded by its timeout, and only degraded.
    observer
        .dependency("cache", DependencyKind::Redis)
        .readiness(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            CheckResult::healthy()
        });
    up.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1100));
    let started = std::time::Instant::now();
    let report = rt.block_on(observer.readiness());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.http_status(), 200, "{:?}", report.checks);
    let cache = &report.checks["dependency:cache"];
    assert_eq!(cache.status, qiflow_core::health::Status::Degraded);
    assert!(
        cache.detail.as_deref().unwrap().contains("no answer"),
        "{cache:?}"
    );
}

#[test]
fn bad_dependency_settings_name_their_key() {
    let err = Loader::new()
        .toml_str("[dependencies.main-db]\nslow = \"0s\"\ncache = \"5m\"\nretries = 3\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("dependencies.main-db.retries"), "{err}");
    let err = Loader::new()
        .toml_str("[dependencies.main-db]\nslow = \"0s\"\ncache = \"5m\"\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("dependencies.main-db.slow"), "{err}");
    assert!(err.contains("dependencies.main-db.cache"), "{err}");
}

#[test]
fn dependency_settings_come_from_the_environment_too() {
    let config = Loader::new()
        .toml_str("[dependencies.orders_db]\nslow = \"1s\"\n")
        .env([
            ("QIFLOW__DEPENDENCIES__ORDERS_DB__SLOW", "3s"),
            ("QIFLOW__DEPENDENCIES__CACHE__CRITICAL", "false"),
        ])
        .load()
        .unwrap();
    assert_eq!(
        config.dependencies["orders_db"].slow,
        Duration::from_secs(3)
    );
    assert!(!config.dependencies["cache"].critical);
}

#[test]
fn a_variable_s_underscore_stands_for_a_dash_in_the_name() {
    let logs = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.logging.dir = logs.path().to_path_buf();
    let config = Loader::new()
        .env([("QIFLOW__DEPENDENCIES__ORDERS_DB__SLOW", "10ms")])
        .toml_str("")
        .load()
        .map(|mut c| {
            c.metrics.global_labels = false;
            c.logging = config.logging.clone();
            c.admin = config.admin.clone();
            c.service.state_dir = config.service.state_dir.clone();
            c.alerts.state_file = config.alerts.state_file.clone();
            c.baseline.state_file = config.baseline.state_file.clone();
            c.audit.enabled = false;
            c
        })
        .unwrap();
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let db = observer.dependency("orders-db", DependencyKind::Postgres);
    db.record("SELECT", None, Duration::from_millis(20), None);
    assert_eq!(
        series(
            &observer,
            "qiflow_dependency_slow_total{pool=\"orders-db\"}"
        ),
        Some(1.0),
        "20 ms is slow under the 10 ms the variable set"
    );
}

#[test]
fn the_overview_shows_each_dependency() {
    let logs = tempfile::tempdir().unwrap();
    let (observer, _guard, _) = start("", logs.path());
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    db.pool(|| PoolSample::new(1, 7, 8, 0));
    db.record("SELECT", None, Duration::from_millis(1), None);
    db.record(
        "SELECT",
        None,
        Duration::from_millis(90),
        Some(ErrorClass::Query),
    );
    db.readiness(|| async { CheckResult::healthy() });
    let rt = rt();
    rt.block_on(observer.readiness());
    let answer = rt.block_on(observer.admin(
        qiflow_core::admin::AdminRequest::new("GET", "/qiflow/api/overview").header(
            "authorization",
            format!("Bearer {}", qiflow_core::test::ADMIN_TOKEN),
        ),
    ));
    assert_eq!(answer.status(), 200);
    let overview: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    let d = &overview["dependencies"][0];
    assert_eq!(d["name"], "main-db");
    assert_eq!(d["system"], "postgresql");
    assert_eq!(
        (
            d["calls"].as_u64(),
            d["failed"].as_u64(),
            d["slow"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(d["pool"]["used"], 7);
    assert_eq!(d["pool"]["max"], 8);
    assert_eq!(d["readiness"]["status"], "healthy");
}
