#![allow(clippy::unwrap_used)]
//! Tier 2: the PostgreSQL audit sink against a real server, started by `.ci/tier2-audit.sh`,
//! which runs these tests with `--ignored` and the server in the environment:
//!
//! - `QIFLOW_TEST_POSTGRES_URL`: a plain (no TLS) server, e.g. `postgres://qiflow@127.0.0.1:PORT/postgres`
//! - `QIFLOW_TEST_POSTGRES_CTL`: a script taking `stop` / `start` for that server
//!
//! Run by hand without them, they fail saying how to get the server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use qiflow_core::audit::{
    AuditEvent, AuditQuery, Outcome, PostgresAuditSink, PostgresStore, verify_postgres,
};
use qiflow_core::test::quiet_config;

const HOWTO: &str = "run `bash .ci/tier2-audit.sh`: it starts a throwaway PostgreSQL (initdb/pg_ctl from /usr/lib/postgresql/*/bin; `apt-get install -y postgresql` if missing) and sets QIFLOW_TEST_POSTGRES_URL and QIFLOW_TEST_POSTGRES_CTL";
const KEY: &[u8] = b"tier two signing key";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; {HOWTO}"))
}

fn tier2() -> (String, String) {
    (
        env("QIFLOW_TEST_POSTGRES_URL"),
        env("QIFLOW_TEST_POSTGRES_CTL"),
    )
}

fn ctl(script: &str, what: &str) {
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(what)
        .status()
        .unwrap();
    assert!(status.success(), "{script} {what} failed");
}

async fn reset(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; {HOWTO}"));
    tokio::spawn(conn);
    client
        .batch_execute("DROP TABLE IF EXISTS qiflow_audit")
        .await
        .unwrap();
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::builder(format!("user{}", i % 4), "order.create")
        .resource(format!("order/{i}"))
        .outcome(if i.is_multiple_of(7) {
            Outcome::Failure
        } else {
            Outcome::Success
        })
        .request_id(format!("req-{i}"))
        .metadata("i", i)
        .metadata(
            "detail",
            serde_json::json!({"z": 1.5, "a": [1, "two", null], "m": {"y": true}}),
        )
        .build()
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_sink_survives_a_restart_without_loss_or_duplicates() {
    let (url, ctl_script) = tier2();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(reset(&url));

    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.sink = qiflow_core::config::AuditSinkKind::Postgres;
    config.audit.postgres_url = Some(qiflow_core::secret::Secret::new(url.clone()));
    config.audit.signing_key = Some(qiflow_core::secret::Secret::new(
        String::from_utf8(KEY.to_vec()).unwrap(),
    ));
    config.audit.batch_size = 50;
    config.audit.flush_interval = Duration::from_millis(5);
    config.audit.digest_every = 120;
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .flush_budget(Duration::from_secs(20))
        .build()
        .unwrap();

    const N: u64 = 1200;
    let acked = rt.block_on(async {
        let mut waits = Vec::new();
        for i in 0..N {
            waits.push(tokio::spawn(observer.audit_durable(event(i))));
            if i == 400 {
                // Mid-stream: the server goes away and comes back; the writer retries.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let s = ctl_script.clone();
                tokio::task::spawn_blocking(move || ctl(&s, "stop"))
                    .await
                    .unwrap();
            }
            if i == 700 {
                // Records submitted while the server was down wait (the writer retries them);
                // none is acknowledged before it is back.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let waiting = waits[450..700].iter().filter(|w| !w.is_finished()).count();
                assert_eq!(
                    waiting, 250,
                    "records were acknowledged while the server was down"
                );
                let s = ctl_script.clone();
                tokio::task::spawn_blocking(move || ctl(&s, "start"))
                    .await
                    .unwrap();
            }
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut ok = 0;
        for w in waits {
            w.await.unwrap().unwrap();
            ok += 1;
        }
        ok
    });
    assert_eq!(acked, N);
    drop(guard); // seals with a digest

    rt.block_on(async {
        let verified = verify_postgres(&url, Some(KEY)).await.unwrap();
        assert_eq!(verified.records, N, "{verified:?}");
        assert!(!verified.open_tail(), "{verified:?}");
        // No duplicates: every event id once.
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT id) FROM qiflow_audit WHERE kind = 'record'",
                &[],
            )
            .await
            .unwrap();
        let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!((rows, distinct), (N as i64, N as i64));

        // Queries: by actor and outcome, paged, newest first.
        let store = PostgresStore::new(&url, None).unwrap();
        let mut q = AuditQuery::new();
        q.actor = Some("user1".into());
        q.limit = Some(100);
        let mut seen = HashSet::new();
        loop {
            let page = qiflow_core::audit::AuditStore::query(&store, &q)
                .await
                .unwrap();
            assert!(page.records.iter().all(|r| r.actor == "user1"));
            assert!(page.records.windows(2).all(|w| w[0].seq > w[1].seq));
            seen.extend(page.records.iter().map(|r| r.id.clone()));
            match page.next {
                Some(n) => q.before = Some(n),
                None => break,
            }
        }
        assert_eq!(
            seen.len() as u64,
            (0..N).filter(|i| i % 4 == 1).count() as u64
        );
        let mut q = AuditQuery::new();
        q.outcome = Some(Outcome::Failure);
        q.limit = Some(1000);
        let page = qiflow_core::audit::AuditStore::query(&store, &q)
            .await
            .unwrap();
        assert_eq!(
            page.records.len() as u64,
            (0..N).filter(|i| i % 7 == 0).count() as u64
        );
        let mut q = AuditQuery::new();
        q.from = Some("2000-01-01T00:00:00Z".into());
        q.to = Some("2001-01-01T00:00:00Z".into());
        assert!(
            qiflow_core::audit::AuditStore::query(&store, &q)
                .await
                .unwrap()
                .records
                .is_empty()
        );

        // Tampering in the table is caught, naming the row.
        client
            .batch_execute("UPDATE qiflow_audit SET actor = 'mallory' WHERE seq = 77")
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert_eq!(broken.seq, 77, "{broken}");
        assert!(broken.reason.contains("changed"), "{broken}");
        client
            .batch_execute("DELETE FROM qiflow_audit WHERE seq = 300")
            .await
            .unwrap();
        client
            .batch_execute("UPDATE qiflow_audit SET actor = 'user1' WHERE seq = 77")
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(
            broken.reason.contains("record seq 300 is missing"),
            "{broken}"
        );
    });

    // A new sink resumes the chain from the table.
    rt.block_on(async {
        reset(&url).await;
        let clock: Arc<dyn qiflow_core::clock::Clock> = Arc::new(qiflow_core::clock::SystemClock);
        for round in 0..2u64 {
            let mut sink = PostgresAuditSink::new(&url, Some(KEY), None, clock.clone()).unwrap();
            let batch: Vec<_> = (round * 10..round * 10 + 10).map(event).collect();
            qiflow_core::audit::AuditSink::write(&mut sink, &batch)
                .await
                .unwrap();
            if round == 1 {
                qiflow_core::audit::AuditSink::seal(
                    &mut sink,
                    qiflow_core::audit::SealReason::Flush,
                )
                .await
                .unwrap();
            }
        }
        let verified = verify_postgres(&url, Some(KEY)).await.unwrap();
        assert_eq!(verified.records, 20);
        assert!(!verified.open_tail());
    });
}
