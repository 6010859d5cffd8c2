#![allow(clippy::unwrap_used)]
//! Tier 2: `deadpool_postgres`, `sqlx` and `bb8` pools registered as dependencies, against the
//! real server that `.ci/tier2-audit.sh` starts (`QIFLOW_TEST_POSTGRES_URL`,
//! `QIFLOW_TEST_POSTGRES_CTL`): slow queries, the pool's figures under concurrent load,
//! saturation, and readiness following the server down and up. Run by hand without them, they
//! fail saying how to get the server. They stop and start the one server: the script runs them
//! with `--test-threads=1`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use qiflow_core::Observer;
use qiflow_core::dependency::DependencyKind;

const HOWTO: &str = "run `bash .ci/tier2-audit.sh`: it starts a throwaway PostgreSQL and sets QIFLOW_TEST_POSTGRES_URL and QIFLOW_TEST_POSTGRES_CTL";

mod dependency_support;
use dependency_support::{active, errors, series};

fn env(name: &str) -> String {
    dependency_support::env(name, HOWTO)
}

fn ctl(what: &str) {
    dependency_support::ctl("QIFLOW_TEST_POSTGRES_CTL", HOWTO, what);
}

fn pool(url: &str, size: usize) -> Pool {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}

fn observer() -> (Observer, qiflow_core::Guard) {
    observer_logging_to(None)
}

/// The observer, writing its log lines to files in `logs` when given.
fn observer_logging_to(logs: Option<&std::path::Path>) -> (Observer, qiflow_core::Guard) {
    let mut config = qiflow_core::config::Loader::new()
        .toml_str(
            "[alerts]\ngroup_wait = \"0s\"\n[dependencies.main-db]\nslow = \"200ms\"\nmax_pending = 2\ncache = \"500ms\"\ntimeout = \"1s\"\n",
        )
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap();
    let quiet = qiflow_core::test::quiet_config();
    config.admin = quiet.admin;
    config.logging = quiet.logging;
    if let Some(logs) = logs {
        config.logging.dir = logs.to_path_buf();
    }
    config.service.state_dir = quiet.service.state_dir;
    config.alerts.state_file = quiet.alerts.state_file;
    config.baseline.state_file = quiet.baseline.state_file;
    config.audit.enabled = false;
    config.metrics.global_labels = false;
    config.metrics.system = false;
    Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap()
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn a_postgres_pool_is_timed_sampled_saturated_and_its_readiness_follows_the_server() {
    let url = env("QIFLOW_TEST_POSTGRES_URL");
    let (observer, _guard) = observer();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = pool(&url, 4);
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    db.deadpool_postgres(&pool);

    rt.block_on(async {
        // A real query over the threshold: one count, one alert; one under it: none.
        let client = pool.get().await.unwrap();
        let fast = "SELECT 1";
        db.query(fast, client.simple_query(fast)).await.unwrap();
        let slow = "SELECT pg_sleep(0.3)";
        db.query(slow, client.simple_query(slow)).await.unwrap();
        drop(client);
    });
    assert!(observer.flush(Duration::from_secs(10)));
    assert_eq!(
        series(&observer, "qiflow_dependency_slow_total{pool=\"main-db\"}"),
        Some(1.0)
    );
    assert_eq!(active(&observer, "dependency_slow").len(), 1);
    assert_eq!(
        series(
            &observer,
            "db_client_operation_duration_seconds_count{db_system=\"postgresql\",db_operation=\"SELECT\",outcome=\"ok\",pool=\"main-db\"}"
        ),
        Some(2.0)
    );
    // A failing query is a `query` error.
    rt.block_on(async {
        let client = pool.get().await.unwrap();
        let bad = "SELECT * FROM no_such_table";
        assert!(db.query(bad, client.simple_query(bad)).await.is_err());
    });
    assert_eq!(errors(&observer, "main-db", "query"), Some(1.0));

    // Concurrent load: four connections held in long queries, three callers waiting. The
    // gauges are the pool's own figures, and three waiters over max_pending 2 saturate it.
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            let pool = pool.clone();
            held.push(tokio::spawn(async move {
                let c = pool.get().await.unwrap();
                c.simple_query("SELECT pg_sleep(1.5)").await.unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let pool = pool.clone();
            waiting.push(tokio::spawn(async move {
                let _c = pool.get().await.unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = pool.status();
        let sample = db.sample().unwrap();
        assert_eq!(
            (sample.used, sample.idle, sample.max, sample.pending),
            (
                (status.size - status.available) as u64,
                status.available as u64,
                status.max_size as u64,
                status.waiting as u64
            )
        );
        assert_eq!((sample.used, sample.pending), (4, 3), "{status:?}");
        for h in held.into_iter().chain(waiting) {
            h.await.unwrap();
        }
    });
    assert_eq!(
        series(
            &observer,
            "db_client_connection_pending_requests{pool=\"main-db\"}"
        ),
        Some(3.0)
    );
    assert_eq!(active(&observer, "dependency_saturated").len(), 1);

    readiness_follows_the_server(&observer, &rt);
}

/// Readiness follows the server: 200, 503 once it is stopped (within one cache period), 200
/// again once it is back.
fn readiness_follows_the_server(observer: &Observer, rt: &tokio::runtime::Runtime) {
    let ready = || rt.block_on(observer.readiness());
    assert_eq!(ready().http_status(), 200);
    ctl("stop");
    std::thread::sleep(Duration::from_millis(600));
    let down = ready();
    ctl("start");
    assert_eq!(down.http_status(), 503, "{:?}", down.checks);
    assert!(down.checks["dependency:main-db"].duration_us.is_some());
    std::thread::sleep(Duration::from_millis(600));
    let mut back = ready();
    for _ in 0..20 {
        if back.http_status() == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        back = ready();
    }
    assert_eq!(back.http_status(), 200, "{:?}", back.checks);
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn a_sqlx_pool_is_timed_sampled_saturated_and_its_readiness_follows_the_server() {
    let url = env("QIFLOW_TEST_POSTGRES_URL");
    let logs = tempfile::tempdir().unwrap();
    let (observer, guard) = observer_logging_to(Some(logs.path()));
    // As `init` installs it: the level filter (info) in front of the log layer. (sqlx logs each
    // statement, literals and all, at debug on `sqlx::query` by itself: docs/dependencies.md.)
    let dispatch = {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(observer.log_filter())
                .with(observer.log_layer()),
        )
    };
    let rt = multi_thread();
    let pool = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(3)
                .acquire_timeout(Duration::from_secs(1))
                .connect(&url),
        )
        .unwrap();
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    db.sqlx(&pool);

    // Statements run on the pool itself: one over the threshold (with a canary literal), one
    // under, one failing.
    tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let fast = "SELECT 1";
            db.query(fast, sqlx::query(fast).execute(&pool))
                .await
                .unwrap();
            db.query(SLOW_CANARY, sqlx::query(SLOW_CANARY).execute(&pool))
                .await
                .unwrap();
            let bad = "SELECT * FROM no_such_table";
            assert!(
                db.query(bad, sqlx::query(bad).execute(&pool))
                    .await
                    .is_err()
            );
        });
    });
    assert_eq!(
        series(&observer, "qiflow_dependency_slow_total{pool=\"main-db\"}"),
        Some(1.0)
    );
    assert_eq!(active(&observer, "dependency_slow").len(), 1);
    assert_eq!(
        series(
            &observer,
            "db_client_operation_duration_seconds_count{db_system=\"postgresql\",db_operation=\"SELECT\",outcome=\"ok\",pool=\"main-db\"}"
        ),
        Some(2.0)
    );
    assert_eq!(errors(&observer, "main-db", "query"), Some(1.0));

    // Concurrent load: three connections held, three callers waiting in `acquire`. The gauges
    // are the pool's own figures, the waiters the callers inside `acquire`, and three waiters
    // over max_pending 2 saturate it.
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (db, pool) = (db.clone(), pool.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = db.acquire(pool.acquire()).await.unwrap();
                sqlx::query("SELECT pg_sleep(0.8)")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..3 {
            let (db, pool) = (db.clone(), pool.clone());
            tasks.push(tokio::spawn(async move {
                drop(db.acquire(pool.acquire()).await.unwrap());
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (size, idle) = (u64::from(pool.size()), pool.num_idle() as u64);
        let sample = db.sample().unwrap();
        assert_eq!(
            (sample.used, sample.idle, sample.max, sample.pending),
            (size - idle, idle, 3, db.acquiring())
        );
        assert_eq!((sample.used, sample.pending), (3, 3));
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(active(&observer, "dependency_saturated").len(), 1);
    let waits = series(
        &observer,
        "db_client_connection_wait_time_seconds_count{pool=\"main-db\"}",
    );
    assert_eq!(waits, Some(6.0));
    db.sample();
    assert_eq!(
        active(&observer, "dependency_saturated").len(),
        0,
        "room again"
    );

    // Exhausted: every connection held, a statement on the pool times out acquiring, which is
    // a `timeout` error and saturates the pool.
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            let pool = pool.clone();
            held.push(tokio::spawn(async move {
                let mut c = pool.acquire().await.unwrap();
                sqlx::query("SELECT pg_sleep(1.5)")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let result = db
            .query("SELECT 1", sqlx::query("SELECT 1").execute(&pool))
            .await;
        assert!(
            matches!(result, Err(sqlx::Error::PoolTimedOut)),
            "{result:?}"
        );
        for h in held {
            h.await.unwrap();
        }
    });
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(1.0));
    assert_eq!(active(&observer, "dependency_saturated").len(), 1);

    readiness_follows_the_server(&observer, &rt);

    // Exactly one slow line, the statement normalized: the canary is in no line, no alert and
    // no label.
    let alerts = format!("{:?}", observer.alerts().view());
    let metrics = observer.render_metrics();
    drop(guard);
    let text = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    let slow: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("qiflow::dependency") && l.contains("slow postgresql call"))
        .collect();
    assert_eq!(slow.len(), 1, "{text}");
    assert!(
        slow[0].contains("SELECT pg_sleep(?) WHERE ? <> ?"),
        "{}",
        slow[0]
    );
    for (what, text) in [("log", &text), ("alerts", &alerts), ("metrics", &metrics)] {
        let found: Vec<&str> = text.lines().filter(|l| l.contains(CANARY)).collect();
        assert!(found.is_empty(), "the canary is in the {what}: {found:?}");
    }
}

const CANARY: &str = "CANARY-pg-7731";
const SLOW_CANARY: &str = "SELECT pg_sleep(0.3) WHERE 'CANARY-pg-7731' <> 'x'";

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn a_bb8_pool_reports_its_waiters_waits_and_time_outs_and_its_readiness_follows_the_server() {
    let url = env("QIFLOW_TEST_POSTGRES_URL");
    let (observer, _guard) = observer();
    let rt = multi_thread();
    let manager =
        bb8_postgres::PostgresConnectionManager::new_from_stringlike(&url, tokio_postgres::NoTls)
            .unwrap();
    let pool = rt
        .block_on(
            bb8::Pool::builder()
                .max_size(2)
                .connection_timeout(Duration::from_millis(500))
                .build(manager),
        )
        .unwrap();
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    db.bb8(&pool);

    rt.block_on(async {
        let c = pool.get().await.unwrap();
        let slow = "SELECT pg_sleep(0.3)";
        db.query(slow, c.simple_query(slow)).await.unwrap();
    });
    assert_eq!(
        series(&observer, "qiflow_dependency_slow_total{pool=\"main-db\"}"),
        Some(1.0)
    );
    assert_eq!(active(&observer, "dependency_slow").len(), 1);

    // Both connections held a second; two more gets wait, and give up after bb8's 500 ms.
    rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            held.push(tokio::spawn(async move {
                let c = pool.get().await.unwrap();
                c.simple_query("SELECT pg_sleep(1.0)").await.unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Two callers wait in `acquire` (bb8's own count of waiting gets drifts with every
        // cancelled one, so qiflow counts these).
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let (db, pool) = (db.clone(), pool.clone());
            waiting.push(tokio::spawn(async move {
                db.acquire(pool.get()).await.map(drop)
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = pool.state();
        let sample = db.sample().unwrap();
        assert_eq!(
            (sample.used, sample.idle, sample.max, sample.pending),
            (
                u64::from(state.connections - state.idle_connections),
                u64::from(state.idle_connections),
                2,
                2
            ),
            "{state:?}"
        );
        for w in waiting {
            assert!(matches!(w.await.unwrap(), Err(bb8::RunError::TimedOut)));
        }
        for h in held {
            h.await.unwrap();
        }
    });
    db.sample();
    let stats = pool.state().statistics;
    assert_eq!(stats.get_timed_out, 2);
    assert_eq!(errors(&observer, "main-db", "timeout"), Some(2.0));
    assert_eq!(active(&observer, "dependency_saturated").len(), 1);
    // The wait histogram holds every completed get, and the pool's own wait total.
    assert_eq!(
        series(
            &observer,
            "db_client_connection_wait_time_seconds_count{pool=\"main-db\"}"
        ),
        Some((stats.get_direct + stats.get_waited + stats.get_timed_out) as f64)
    );
    let waited = series(
        &observer,
        "db_client_connection_wait_time_seconds_sum{pool=\"main-db\"}",
    )
    .unwrap();
    assert!(
        (waited - stats.get_wait_time.as_secs_f64()).abs() < 1e-6 && waited >= 1.0,
        "{waited} vs {:?}",
        stats.get_wait_time
    );
    db.sample();
    assert_eq!(
        active(&observer, "dependency_saturated").len(),
        0,
        "room again"
    );

    readiness_follows_the_server(&observer, &rt);
}
