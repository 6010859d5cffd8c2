#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]
//! Tier 2: a Redis server registered as a dependency, against the real server that
//! `.ci/tier2-redis.sh` starts (`QIFLOW_TEST_REDIS_URL`, and `QIFLOW_TEST_REDIS_CTL` taking `stop`
//! and `start`): the gauges equal the server's own `INFO`, and readiness follows the server down
//! and up. Run by hand without them, they fail saying how to get the server.

use std::time::Duration;

use qiflow_core::Observer;
use qiflow_core::dependency::DependencyKind;

const HOWTO: &str = "run `bash .ci/tier2-redis.sh`: it starts a throwaway redis-server on loopback (apt-get install -y redis-server) and sets QIFLOW_TEST_REDIS_URL and QIFLOW_TEST_REDIS_CTL";

mod dependency_support;
use dependency_support::series;

fn env(name: &str) -> String {
    dependency_support::env(name, HOWTO)
}

fn ctl(what: &str) {
    dependency_support::ctl("QIFLOW_TEST_REDIS_CTL", HOWTO, what);
}

/// The server's own figure `key` from `INFO`, over the test's connection (a new connection
/// would change the error count: a client announces its name, which a server before 7.2 refuses).
async fn info(c: &mut redis::aio::MultiplexedConnection, key: &str) -> f64 {
    let text: String = redis::cmd("INFO").query_async(c).await.unwrap();
    text.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("{key}:"))?.parse().ok())
        .unwrap_or_else(|| panic!("INFO has no {key}"))
}

#[test]
#[ignore = "tier 2: needs Redis; run by .ci/tier2-redis.sh"]
fn a_redis_server_s_info_becomes_gauges_and_its_ping_readiness() {
    let url = env("QIFLOW_TEST_REDIS_URL");
    let mut config = qiflow_core::test::quiet_config();
    config.dependencies.insert("cache".into(), {
        let mut d = qiflow_core::config::DependencyConfig::default();
        d.cache = Duration::ZERO;
        d.timeout = Duration::from_secs(1);
        d
    });
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let cache = observer.dependency("cache", DependencyKind::Redis);
    cache.redis(&client);

    rt.block_on(async {
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        // A memory limit, an error reply, and some data.
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory", "104857600"])
            .query_async(&mut c)
            .await
            .unwrap();
        let bad: redis::RedisResult<()> = redis::cmd("NO_SUCH_COMMAND").query_async(&mut c).await;
        assert!(bad.is_err());
        for i in 0..100 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg("x".repeat(1000))
                .query_async(&mut c)
                .await
                .unwrap();
        }
        cache.sample_remote().await;
        let gauge = |name: &str| series(&observer, &format!("{name}{{pool=\"cache\"}}")).unwrap();
        assert_eq!(gauge("redis_memory_max_bytes"), 104_857_600.0);
        assert_eq!(
            gauge("redis_error_replies_total"),
            info(&mut c, "total_error_replies").await
        );
        assert_eq!(
            gauge("redis_evicted_keys_total"),
            info(&mut c, "evicted_keys").await
        );
        // Two clients at least: this test's connection and the sampler's.
        assert!(gauge("redis_connected_clients") >= 1.0);
        let used = gauge("redis_memory_used_bytes");
        let now = info(&mut c, "used_memory").await;
        assert!(
            (used - now).abs() / now < 0.2,
            "used_memory gauge {used} against INFO's {now}"
        );
        assert!(used > 100_000.0, "100 values of 1 kB are in it: {used}");
    });

    let ready = |rt: &tokio::runtime::Runtime| rt.block_on(observer.readiness());
    let up = ready(&rt);
    assert_eq!(up.http_status(), 200, "{:?}", up.checks);
    assert_eq!(
        up.checks["dependency:cache"].status,
        qiflow_core::health::Status::Healthy
    );
    ctl("stop");
    let down = ready(&rt);
    ctl("start");
    assert_eq!(down.http_status(), 503, "{:?}", down.checks);
    std::thread::sleep(Duration::from_millis(300));
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
