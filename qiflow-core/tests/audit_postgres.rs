#![allow(clippy::unwrap_used)]
//! Tier 2: the PostgreSQL audit sink against a real server, started by `.ci/tier2-audit.sh`,
//! which runs these tests with `--ignored` and the server in the environment:
//!
//! - `QIFLOW_TEST_POSTGRES_URL`: a plain (no TLS) server, e.g. `postgres://qiflow@127.0.0.1:PORT/postgres`
//! - `QIFLOW_TEST_POSTGRES_CTL`: a script taking `stop` / `start` for that server
//! - `QIFLOW_TEST_POSTGRES_TLS_URL`: a second server that accepts TLS connections only, with a
//!   certificate for `127.0.0.1` (not `localhost`) issued by the CA in
//!   `QIFLOW_TEST_POSTGRES_CA` (PEM); `QIFLOW_TEST_POSTGRES_WRONG_CA` is another CA
//!
//! Run by hand without them, they fail saying how to get the server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use qiflow_core::audit::{
    AuditEvent, AuditQuery, ChainVerified, Outcome, PostgresAuditSink, PostgresStore, Verified,
    verify_postgres,
};
use qiflow_core::propagation::TraceId;
use qiflow_core::test::quiet_config;

const HOWTO: &str = "run `bash .ci/tier2-audit.sh`: it starts a throwaway PostgreSQL (initdb/pg_ctl from /usr/lib/postgresql/*/bin; `apt-get install -y postgresql` if missing) and sets QIFLOW_TEST_POSTGRES_URL and QIFLOW_TEST_POSTGRES_CTL";
const KEY: &[u8] = b"tier two signing key";

/// The one chain a test wrote.
fn one(chains: Vec<ChainVerified>) -> Verified {
    assert_eq!(chains.len(), 1, "one chain expected: {chains:?}");
    chains.into_iter().next().unwrap().verified
}

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

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}; {HOWTO}"));
    tokio::spawn(conn);
    client
}

async fn reset(url: &str) {
    client(url)
        .await
        .batch_execute(
            "DROP TABLE IF EXISTS qiflow_audit; DROP TABLE IF EXISTS qiflow_audit_witness",
        )
        .await
        .unwrap();
}

/// Runs `body` with the server's URL on a runtime of its own, the tables dropped first.
fn on_fresh_tables<F: std::future::Future<Output = ()>>(body: impl FnOnce(String) -> F) {
    let (url, _) = tier2();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reset(&url).await;
        body(url).await;
    });
}

/// The trace of event `i`: the same for every ten events, none for multiples of three.
fn trace_of(i: u64) -> Option<TraceId> {
    (!i.is_multiple_of(3)).then(|| TraceId::from_bytes(u128::from(i / 10 + 1).to_be_bytes()))?
}

fn event(i: u64) -> AuditEvent {
    let builder = AuditEvent::builder(format!("user{}", i % 4), "order.create");
    let builder = match trace_of(i) {
        Some(trace) => builder.trace_id(trace),
        None => builder,
    };
    builder
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
    // The N events and this start's `service.deployed`.
    let stored = N + 1;

    rt.block_on(async {
        let verified = one(verify_postgres(&url, Some(KEY)).await.unwrap());
        assert_eq!(verified.records, stored, "{verified:?}");
        assert!(!verified.open_tail(), "{verified:?}");
        // The witness row holds the last digest.
        assert_eq!(verified.witness, verified.last_seal, "{verified:?}");
        assert_eq!(verified.last_seal.as_ref().unwrap().sealed_records, stored);
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
        assert_eq!((rows, distinct), (stored as i64, stored as i64));

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
        // By trace id: the records of one trace, which carry it through the table.
        let trace = trace_of(41).unwrap().to_string();
        let q = AuditQuery::from_query_string(&format!("trace_id={trace}&limit=100")).unwrap();
        let page = qiflow_core::audit::AuditStore::query(&store, &q)
            .await
            .unwrap();
        let mut traced: Vec<_> = page.records.iter().map(|r| r.resource.clone()).collect();
        traced.sort();
        let expected: Vec<_> = (40..50u64)
            .filter(|i| !i.is_multiple_of(3))
            .map(|i| format!("order/{i}"))
            .collect();
        assert_eq!(traced, expected);
        assert!(
            page.records
                .iter()
                .all(|r| r.trace_id.as_deref() == Some(trace.as_str()))
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
        let actor: String = client
            .query_one("SELECT actor FROM qiflow_audit WHERE seq = 77", &[])
            .await
            .unwrap()
            .get(0);
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
            .execute(
                "UPDATE qiflow_audit SET actor = $1 WHERE seq = 77",
                &[&actor],
            )
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(
            broken.reason.contains("record seq 300 is missing"),
            "{broken}"
        );
    });

    // A new sink resumes the chain from the table; the table is made as qiflow made it before
    // records carried a trace id, and the sink adds the column.
    rt.block_on(async {
        reset(&url).await;
        client(&url)
            .await
            .batch_execute(
                "CREATE TABLE qiflow_audit (seq BIGINT PRIMARY KEY, kind TEXT NOT NULL, id TEXT, \
                 timestamp TEXT, ts TIMESTAMPTZ, actor TEXT, action TEXT, resource TEXT, \
                 outcome TEXT, request_id TEXT, metadata TEXT, enc TEXT, digest TEXT, \
                 prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
            )
            .await
            .unwrap();
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
        let verified = one(verify_postgres(&url, Some(KEY)).await.unwrap());
        assert_eq!(verified.records, 20);
        assert!(!verified.open_tail());
        let traced = client(&url)
            .await
            .query_one(
                "SELECT count(*) FROM qiflow_audit WHERE trace_id IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(
            traced,
            (0..20u64).filter(|i| trace_of(*i).is_some()).count() as i64
        );
    });
}

fn sink(url: &str) -> PostgresAuditSink {
    let clock: Arc<dyn qiflow_core::clock::Clock> = Arc::new(qiflow_core::clock::SystemClock);
    PostgresAuditSink::new(url, Some(KEY), None, clock)
        .unwrap()
        .digest_every(10)
}

/// Writes `events` through a new sink and seals; returns what the sink reported.
async fn write_and_seal(
    url: &str,
    events: std::ops::Range<u64>,
) -> Result<Vec<qiflow_core::audit::SinkNotice>, qiflow_core::audit::AuditError> {
    use qiflow_core::audit::AuditSink as _;
    let mut sink = sink(url);
    let batch: Vec<_> = events.map(event).collect();
    sink.write(&batch).await?;
    sink.seal(qiflow_core::audit::SealReason::Flush).await?;
    Ok(sink.take_notices())
}

fn alarms(notices: &[qiflow_core::audit::SinkNotice]) -> Vec<qiflow_core::audit::AuditAlarm> {
    notices
        .iter()
        .filter_map(|n| match n {
            qiflow_core::audit::SinkNotice::Alarm(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_witness_row_catches_a_cut_table_and_seqs_continue_past_it() {
    use qiflow_core::audit::AlarmKind;
    on_fresh_tables(|url| async move {
        let notices = write_and_seal(&url, 0..35).await.unwrap();
        assert!(alarms(&notices).is_empty(), "a first start: {notices:?}");
        let v = one(verify_postgres(&url, Some(KEY)).await.unwrap());
        let w = v.witness.clone().unwrap();
        assert_eq!(Some(&w), v.last_seal.as_ref());
        assert_eq!(w.sealed_records, 35);

        // Rows deleted from the end, back to the first digest: the table alone looks closed.
        let db = client(&url).await;
        let first_digest: i64 = db
            .query_one(
                "SELECT min(seq) FROM qiflow_audit WHERE kind = 'digest'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        db.execute("DELETE FROM qiflow_audit WHERE seq > $1", &[&first_digest])
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(
            broken.reason.contains(&format!(
                "the trail ends at seq {first_digest} but the witness sealed seq {}",
                w.seq
            )),
            "{broken}"
        );

        // The next start alarms and continues after the witness.
        let notices = write_and_seal(&url, 100..103).await.unwrap();
        let found = alarms(&notices);
        assert_eq!(found.len(), 1, "{notices:?}");
        assert_eq!(found[0].kind, AlarmKind::TrailCut);
        assert!(
            found[0]
                .message
                .contains(&format!("continue at seq {}", w.seq + 1)),
            "{}",
            found[0].message
        );
        let next: i64 = db
            .query_one(
                "SELECT min(seq) FROM qiflow_audit WHERE seq > $1",
                &[&first_digest],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(next as u64, w.seq + 1, "seqs are not reused");
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(
            broken.reason.contains(&format!(
                "records seq {}..={} are missing",
                first_digest + 1,
                w.seq
            )),
            "{broken}"
        );
        let notices = write_and_seal(&url, 200..201).await.unwrap();
        assert!(alarms(&notices).is_empty(), "raised once: {notices:?}");

        // A deleted witness row: verify fails, the next start alarms and writes it again.
        reset(&url).await;
        write_and_seal(&url, 0..12).await.unwrap();
        db.execute("DELETE FROM qiflow_audit_witness", &[])
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(broken.reason.contains("has no witness row"), "{broken}");
        let notices = write_and_seal(&url, 12..14).await.unwrap();
        assert_eq!(
            alarms(&notices)[0].kind,
            AlarmKind::WitnessMissing,
            "{notices:?}"
        );
        let v = one(verify_postgres(&url, Some(KEY)).await.unwrap());
        assert_eq!(v.records, 14);
        assert_eq!(v.witness, v.last_seal);
    });
}

/// `qiflow::audit` warnings, captured from every thread.
fn captured_warnings() -> Arc<std::sync::Mutex<Vec<String>>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    static LINES: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<String>>>> =
        std::sync::OnceLock::new();
    LINES
        .get_or_init(|| {
            struct Capture(Arc<std::sync::Mutex<Vec<String>>>);
            impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
                fn on_event(
                    &self,
                    event: &tracing::Event<'_>,
                    _: tracing_subscriber::layer::Context<'_, S>,
                ) {
                    struct Message(String);
                    impl tracing::field::Visit for Message {
                        fn record_debug(
                            &mut self,
                            _: &tracing::field::Field,
                            v: &dyn std::fmt::Debug,
                        ) {
                            self.0.push_str(&format!("{v:?} "));
                        }
                    }
                    if event.metadata().target() == "qiflow::audit"
                        && *event.metadata().level() == tracing::Level::WARN
                    {
                        let mut m = Message(String::new());
                        event.record(&mut m);
                        self.0.lock().unwrap().push(m.0);
                    }
                }
            }
            let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(Capture(lines.clone())),
            )
            .unwrap();
            lines
        })
        .clone()
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}{}{params}", if url.contains('?') { '&' } else { '?' })
}

#[test]
#[ignore = "tier 2: needs PostgreSQL with TLS; run by .ci/tier2-audit.sh"]
fn postgres_sslmodes_against_servers_with_and_without_tls() {
    let (plain, _) = tier2();
    let tls = env("QIFLOW_TEST_POSTGRES_TLS_URL");
    let ca = env("QIFLOW_TEST_POSTGRES_CA");
    let wrong_ca = env("QIFLOW_TEST_POSTGRES_WRONG_CA");
    let warnings = captured_warnings();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain_warned = |w: &[String]| w.iter().any(|l| l.contains("connected without TLS"));
    rt.block_on(async {
        reset(&plain).await;
        let mut n = 0u64;
        let mut next = || {
            n += 3;
            n - 3..n
        };
        // The TLS-only server: every mode that speaks TLS gets in; `disable` is refused by
        // the server (hostnossl … reject), which proves it really sends no TLS.
        for params in [
            "sslmode=require".to_owned(),
            "sslmode=prefer".to_owned(),
            format!("sslmode=verify-full&sslrootcert={ca}"),
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            format!("sslmode=require&sslrootcert={ca}"),
        ] {
            let url = with_params(&tls, &params);
            write_and_seal(&url, next())
                .await
                .unwrap_or_else(|e| panic!("{params}: {e}"));
            verify_postgres(&url, Some(KEY))
                .await
                .unwrap_or_else(|e| panic!("{params}: {e}"));
        }
        assert!(!plain_warned(&warnings.lock().unwrap()), "prefer used TLS");
        for (params, says) in [
            ("sslmode=disable".to_owned(), "no encryption"),
            (
                format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
                "certificate",
            ),
            (
                format!("sslmode=verify-ca&sslrootcert={wrong_ca}"),
                "certificate",
            ),
            (
                format!("sslmode=require&sslrootcert={wrong_ca}"),
                "certificate",
            ),
            // Without sslrootcert: the Mozilla roots, which did not issue the test CA.
            ("sslmode=verify-full".to_owned(), "certificate"),
        ] {
            let url = with_params(&tls, &params);
            let err = write_and_seal(&url, next()).await.unwrap_err().to_string();
            assert!(err.contains(says), "{params}: {err}");
        }
        // The certificate names 127.0.0.1, not localhost: verify-full checks the name,
        // verify-ca does not.
        let localhost = tls.replace("127.0.0.1", "localhost");
        let url = with_params(&localhost, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let err = write_and_seal(&url, next()).await.unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
        let url = with_params(&localhost, &format!("sslmode=verify-ca&sslrootcert={ca}"));
        write_and_seal(&url, next()).await.unwrap();

        // The plain server: disable and prefer connect (prefer with a warning); require does not.
        write_and_seal(&with_params(&plain, "sslmode=disable"), next())
            .await
            .unwrap();
        assert!(!plain_warned(&warnings.lock().unwrap()));
        write_and_seal(&plain, next()).await.unwrap();
        assert!(
            plain_warned(&warnings.lock().unwrap()),
            "prefer fell back to plain without a warning: {:?}",
            warnings.lock().unwrap()
        );
        let err = write_and_seal(&with_params(&plain, "sslmode=require"), next())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS") || err.contains("SSL"), "{err}");
    });
}

/// A signing key set on a table sealed without one: the sink alarms at its first batch, seals
/// the table under the key, and `verify_postgres` with the key accepts it, saying which part
/// was sealed without a key. Removing the key again is an alarm too.
#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_a_signing_key_added_to_an_existing_table_is_noticed_and_sealed() {
    use qiflow_core::audit::{AlarmKind, AuditSink as _};
    let (url, _) = tier2();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let with_key = |key: Option<&[u8]>| {
        let clock: Arc<dyn qiflow_core::clock::Clock> = Arc::new(qiflow_core::clock::SystemClock);
        PostgresAuditSink::new(&url, key, None, clock)
            .unwrap()
            .digest_every(10)
    };
    rt.block_on(async {
        reset(&url).await;
        let mut unkeyed = with_key(None);
        unkeyed
            .write(&(0..15).map(event).collect::<Vec<_>>())
            .await
            .unwrap();
        unkeyed
            .seal(qiflow_core::audit::SealReason::Flush)
            .await
            .unwrap();
        drop(unkeyed);
        let before = one(verify_postgres(&url, None).await.unwrap());
        let last_unkeyed = before.unkeyed_until.unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(
            broken.reason.contains("no keyed digest follows"),
            "{broken}"
        );

        let mut keyed = with_key(Some(KEY));
        keyed
            .write(&(15..18).map(event).collect::<Vec<_>>())
            .await
            .unwrap();
        keyed
            .seal(qiflow_core::audit::SealReason::Flush)
            .await
            .unwrap();
        let found = alarms(&keyed.take_notices());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, AlarmKind::SigningKeyAdded);
        assert!(
            found[0]
                .message
                .contains(&format!("sealed without a key up to seq {last_unkeyed}")),
            "{}",
            found[0].message
        );
        drop(keyed);
        let v = one(verify_postgres(&url, Some(KEY)).await.unwrap());
        assert_eq!(v.records, 18);
        assert_eq!(v.unkeyed_until, Some(last_unkeyed));
        assert_eq!(v.first_keyed.map(|k| k.0), Some(last_unkeyed + 1));

        let mut unkeyed = with_key(None);
        unkeyed.write(&[event(18)]).await.unwrap();
        let found = alarms(&unkeyed.take_notices());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, AlarmKind::SigningKeyChanged);
    });
}

/// A sink writing the chain of `instance`.
fn sink_of(url: &str, instance: &str) -> PostgresAuditSink {
    sink(url).instance(instance)
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_instances_write_their_own_chains_at_once_and_each_verifies() {
    use qiflow_core::audit::AuditSink as _;
    on_fresh_tables(|url| async move {
        // Three instances at once, interleaving their batches in the one table.
        let writers: Vec<_> = ["web-a", "web-b", "web-c"]
            .into_iter()
            .enumerate()
            .map(|(n, name)| {
                let url = url.clone();
                tokio::spawn(async move {
                    let mut sink = sink_of(&url, name);
                    for round in 0..20u64 {
                        let from = n as u64 * 1000 + round * 5;
                        let batch: Vec<_> = (from..from + 5).map(event).collect();
                        sink.write(&batch).await.unwrap();
                    }
                    sink.seal(qiflow_core::audit::SealReason::Flush)
                        .await
                        .unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let chains = verify_postgres(&url, Some(KEY)).await.unwrap();
        let names: Vec<_> = chains.iter().map(|c| c.instance.as_str()).collect();
        assert_eq!(names, ["web-a", "web-b", "web-c"]);
        for c in &chains {
            assert_eq!(c.verified.records, 100, "{c:?}");
            assert!(!c.verified.open_tail(), "{c:?}");
            assert_eq!(c.verified.witness, c.verified.last_seal, "{c:?}");
        }

        // Each record names its instance; pages run newest first across the chains.
        let store = PostgresStore::new(&url, None).unwrap();
        let mut q = AuditQuery::new();
        q.limit = Some(70);
        let mut seen = Vec::new();
        loop {
            let page = qiflow_core::audit::AuditStore::query(&store, &q)
                .await
                .unwrap();
            seen.extend(page.records);
            match page.next {
                Some(n) => q.before = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 300);
        for r in &seen {
            let i: u64 = r.resource.trim_start_matches("order/").parse().unwrap();
            let expected = ["web-a", "web-b", "web-c"][(i / 1000) as usize];
            assert_eq!(r.instance.as_deref(), Some(expected), "{r:?}");
        }
        let ids: HashSet<_> = seen.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids.len(), 300, "no record twice across pages");

        // A changed row is found, and the instance of its chain named.
        let db = client(&url).await;
        let actor: String = db
            .query_one(
                "SELECT actor FROM qiflow_audit WHERE instance = 'web-b' AND seq = 33",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        db.batch_execute(
            "UPDATE qiflow_audit SET actor = 'mallory' WHERE instance = 'web-b' AND seq = 33",
        )
        .await
        .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert_eq!(broken.seq, 33, "{broken}");
        assert!(broken.to_string().contains("instance web-b"), "{broken}");
        db.execute(
            "UPDATE qiflow_audit SET actor = $1 WHERE instance = 'web-b' AND seq = 33",
            &[&actor],
        )
        .await
        .unwrap();
        one_ok(&url, 3).await;

        // A chain whose rows were all deleted is caught by its witness row.
        db.batch_execute("DELETE FROM qiflow_audit WHERE instance = 'web-c'")
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(broken.to_string().contains("instance web-c"), "{broken}");
        assert!(broken.reason.contains("has no rows"), "{broken}");
    });
}

/// Verifies the table, expecting `chains` chains, all whole.
async fn one_ok(url: &str, chains: usize) {
    let found = verify_postgres(url, Some(KEY)).await.unwrap();
    assert_eq!(found.len(), chains, "{found:?}");
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_two_processes_as_one_instance_are_refused_not_interleaved() {
    use qiflow_core::audit::AuditSink as _;
    on_fresh_tables(|url| async move {
        let mut first = sink_of(&url, "web-1");
        let mut second = sink_of(&url, "web-1");
        // Both resume the same (empty) chain (a seal with nothing to seal only reads it), then
        // both append.
        second
            .seal(qiflow_core::audit::SealReason::Flush)
            .await
            .unwrap();
        first.write(&[event(0)]).await.unwrap();
        let e = second.write(&[event(1)]).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"web-1\"") && text.contains("[service] instance"),
            "{text}"
        );
        // The chain holds the first writer's record only, and verifies.
        first
            .seal(qiflow_core::audit::SealReason::Flush)
            .await
            .unwrap();
        let v = one(verify_postgres(&url, Some(KEY)).await.unwrap());
        assert_eq!(v.records, 1);
    });
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_a_table_of_one_chain_is_migrated_and_keeps_verifying() {
    use qiflow_core::audit::AuditSink as _;
    on_fresh_tables(|url| async move {
        // A chain written without an instance, then the tables put back in the shape of the
        // version before chains: `seq` the key, no `instance` or `pos`, one witness row.
        let mut old = sink(&url);
        old.write(&(0..25).map(event).collect::<Vec<_>>())
            .await
            .unwrap();
        old.seal(qiflow_core::audit::SealReason::Flush)
            .await
            .unwrap();
        drop(old);
        client(&url)
            .await
            .batch_execute(
                "DROP INDEX qiflow_audit_pos, qiflow_audit_actor_pos, qiflow_audit_action_pos,
                     qiflow_audit_resource_pos;
                 ALTER TABLE qiflow_audit DROP CONSTRAINT qiflow_audit_pkey;
                 ALTER TABLE qiflow_audit DROP COLUMN instance, DROP COLUMN pos;
                 ALTER TABLE qiflow_audit ADD PRIMARY KEY (seq);
                 CREATE INDEX qiflow_audit_actor ON qiflow_audit (actor, seq);
                 ALTER TABLE qiflow_audit_witness DROP CONSTRAINT qiflow_audit_witness_pkey;
                 ALTER TABLE qiflow_audit_witness DROP COLUMN instance;
                 ALTER TABLE qiflow_audit_witness ADD PRIMARY KEY (id);
                 ALTER TABLE qiflow_audit_witness ADD CHECK (id = 1);",
            )
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(broken.reason.contains("earlier qiflow"), "{broken}");

        // Two instances start on it at once: the table is migrated once, the old chain is
        // kept as it was, and each instance begins its own.
        let starts: Vec<_> = ["web-1", "web-2"]
            .into_iter()
            .map(|name| {
                let url = url.clone();
                tokio::spawn(async move {
                    let mut s = sink_of(&url, name);
                    s.write(&(100..110).map(event).collect::<Vec<_>>())
                        .await
                        .unwrap();
                    s.seal(qiflow_core::audit::SealReason::Flush).await.unwrap();
                })
            })
            .collect();
        for s in starts {
            s.await.unwrap();
        }
        let chains = verify_postgres(&url, Some(KEY)).await.unwrap();
        let found: Vec<_> = chains
            .iter()
            .map(|c| (c.instance.as_str(), c.verified.records))
            .collect();
        assert_eq!(found, [("", 25), ("web-1", 10), ("web-2", 10)]);
        // The old chain's records carry no instance (they hash as they were written).
        let store = PostgresStore::new(&url, None).unwrap();
        let mut q = AuditQuery::new();
        q.limit = Some(1000);
        let page = qiflow_core::audit::AuditStore::query(&store, &q)
            .await
            .unwrap();
        assert_eq!(page.records.len(), 45);
        assert_eq!(
            page.records.iter().filter(|r| r.instance.is_none()).count(),
            25
        );
        // Newest first: the old chain's records come last.
        assert!(page.records[20..].iter().all(|r| r.instance.is_none()));
    });
}

#[test]
#[ignore = "tier 2: needs PostgreSQL; run by .ci/tier2-audit.sh"]
fn postgres_retention_prunes_each_instance_s_own_chain_and_it_still_verifies() {
    use qiflow_core::audit::AuditSink as _;
    const DAY: Duration = Duration::from_secs(86_400);
    on_fresh_tables(|url| async move {
        let clock = Arc::new(qiflow_core::test::ManualClock::new(
            std::time::SystemTime::now(),
        ));
        let sink_at = |instance: &str, retention: Option<Duration>| {
            let c: Arc<dyn qiflow_core::clock::Clock> = clock.clone();
            PostgresAuditSink::new(&url, Some(KEY), None, c)
                .unwrap()
                .digest_every(10)
                .instance(instance)
                .retention(retention)
        };
        // Day 0: both instances write 30 records (three digests each).
        let mut a = sink_at("web-a", Some(2 * DAY));
        let mut b = sink_at("web-b", None);
        for sink in [&mut a, &mut b] {
            sink.write(&(0..30).map(event).collect::<Vec<_>>())
                .await
                .unwrap();
        }
        // Day 3: web-a's first 30 records are past its retention; its next digest cuts them.
        // web-b keeps everything (no retention of its own; nobody else touches its chain).
        clock.advance(3 * DAY);
        for sink in [&mut a, &mut b] {
            sink.write(&(30..45).map(event).collect::<Vec<_>>())
                .await
                .unwrap();
            sink.seal(qiflow_core::audit::SealReason::Flush)
                .await
                .unwrap();
        }
        let db = client(&url).await;
        let first = |instance: &'static str| {
            let db = &db;
            async move {
                db.query_one(
                    "SELECT min(seq), count(*) FILTER (WHERE kind = 'record') FROM qiflow_audit WHERE instance = $1",
                    &[&instance],
                )
                .await
                .unwrap()
            }
        };
        let row = first("web-a").await;
        let (a_first, a_records): (i64, i64) = (row.get(0), row.get(1));
        // Three digests sealed 10 records each: rows up to the third (seq 32) are gone.
        assert_eq!(
            a_first, 33,
            "web-a's chain starts after its last old digest"
        );
        assert_eq!(a_records, 15);
        let row = first("web-b").await;
        let (b_first, b_records): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!((b_first, b_records), (0, 45), "web-b's chain is untouched");

        let chains = verify_postgres(&url, Some(KEY)).await.unwrap();
        let a_v = &chains
            .iter()
            .find(|c| c.instance == "web-a")
            .unwrap()
            .verified;
        assert_eq!(a_v.first_seq, 33);
        assert_eq!(a_v.records, 15);
        assert!(!a_v.open_tail());
        let b_v = &chains
            .iter()
            .find(|c| c.instance == "web-b")
            .unwrap()
            .verified;
        assert_eq!(b_v.records, 45);

        // A row deleted beyond what retention recorded is still caught.
        db.batch_execute("DELETE FROM qiflow_audit WHERE instance = 'web-a' AND seq = 33")
            .await
            .unwrap();
        let broken = verify_postgres(&url, Some(KEY)).await.unwrap_err();
        assert!(broken.to_string().contains("instance web-a"), "{broken}");
        assert!(
            broken
                .reason
                .contains("retention kept everything from seq 33"),
            "{broken}"
        );
    });
}
