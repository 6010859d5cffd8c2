#![allow(clippy::unwrap_used)]
//! Tier 2: a `deadpool_postgres` pool registered as a dependency, against the real server that
//! `.ci/tier2-audit.sh` starts (`QIFLOW_TEST_POSTGRES_URL`, `QIFLOW_TEST_POSTGRES_CTL`): slow
//! queries, the pool's figures under concurrent load, saturation, and readiness following the
//! server down and up. Run by hand without them, they fail saying how to get the server.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use qiflow_core::Observer;
use qiflow_core::dependency::DependencyKind;

const HOWTO: &str = "run `bash .ci/tier2-audit.sh`: it starts a throwaway PostgreSQL and sets QIFLOW_TEST_POSTGRES_URL and QIFLOW_TEST_POSTGRES_CTL";

mod dependency_support;
use dependency_support::series;

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
    let alerts = observer.alerts().view().active;
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.alert.name == "dependency_slow")
            .count(),
        1
    );
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
    assert_eq!(
        series(
            &observer,
            "qiflow_dependency_errors_total{pool=\"main-db\",class=\"query\"}"
        ),
        Some(1.0)
    );

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
    assert!(observer.flush(Duration::from_secs(5)));
    assert!(
        observer
            .alerts()
            .view()
            .active
            .iter()
            .any(|a| a.alert.name == "dependency_saturated")
    );

    // Readiness follows the server: 200, 503 once it is stopped (within one cache period),
    // 200 again once it is back.
    let ready = |rt: &tokio::runtime::Runtime| rt.block_on(observer.readiness());
    assert_eq!(ready(&rt).http_status(), 200);
    ctl("stop");
    std::thread::sleep(Duration::from_millis(600));
    let down = ready(&rt);
    ctl("start");
    assert_eq!(down.http_status(), 503, "{:?}", down.checks);
    let check = &down.checks["dependency:main-db"];
    assert!(check.duration_us.is_some(), "{check:?}");
    std::thread::sleep(Duration::from_millis(600));
    let mut back = ready(&rt);
    for _ in 0..20 {
        if back.http_status() == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        back = ready(&rt);
    }
    assert_eq!(back.http_status(), 200, "{:?}", back.checks);
}
