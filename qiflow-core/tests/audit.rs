#![allow(clippy::unwrap_used)]
//! The audit trail on real files: round trip, the tamper matrix, retention, compression,
//! encryption, losses, and a SIGKILLed writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use qiflow_core::audit::{AuditEvent, AuditQuery, FileAuditSink, FileStore, Outcome, verify_dir};
use qiflow_core::secret::Keyring;
use qiflow_core::test::quiet_config;

const KEY: &[u8] = b"a signing key of some length!!";

fn event(i: u64) -> AuditEvent {
    AuditEvent::builder(format!("user{}", i % 3), "doc.update")
        .resource(format!("doc/{i}"))
        .outcome(if i.is_multiple_of(5) {
            Outcome::Denied
        } else {
            Outcome::Success
        })
        .request_id(format!("req-{i}"))
        .metadata("i", i)
        .build()
}

/// Writes `n` records in batches of `batch` into `dir`, sealing at the end (a clean shutdown).
fn write_trail(
    dir: &Path,
    n: u64,
    batch: u64,
    builder: impl Fn(PathBuf) -> qiflow_core::audit::FileAuditSinkBuilder,
) {
    let mut sink = builder(dir.to_owned()).open().unwrap();
    let events: Vec<_> = (0..n).map(event).collect();
    for chunk in events.chunks(batch as usize) {
        sink.append(chunk).unwrap();
    }
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
}

/// A trail directory `audit` in a temp dir of its own, so its witness (`audit.witness.json`,
/// beside it) is removed with it.
struct Trail {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Trail {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn witness(&self) -> PathBuf {
        self.dir.with_file_name("audit.witness.json")
    }
}

fn trail() -> Trail {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    Trail { _tmp: tmp, dir }
}

fn keyed(dir: PathBuf) -> qiflow_core::audit::FileAuditSinkBuilder {
    FileAuditSink::builder(dir)
        .signing_key(Some(KEY))
        .digest_every(10)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("audit-"))
        .collect();
    all.sort();
    all
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

#[test]
fn a_clean_trail_verifies_and_ends_sealed() {
    let dir = trail();
    write_trail(dir.path(), 95, 7, keyed);
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert_eq!(v.records, 95);
    assert!(v.digests >= 10, "{v:?}");
    assert!(!v.open_tail());
    // Without the key the chain still verifies, but the signatures are not checked.
    let v = verify_dir(dir.path(), None).unwrap();
    assert_eq!(v.unchecked_signatures, v.digests);
    // With the wrong key, the first digest fails.
    let err = verify_dir(dir.path(), Some(b"wrong key wrong key")).unwrap_err();
    assert!(err.reason.contains("signature"), "{err}");
}

#[test]
fn tamper_matrix_each_change_is_detected_at_the_right_record() {
    // One changed byte in one record.
    let dir = trail();
    write_trail(dir.path(), 50, 10, keyed);
    let seg = &segments(dir.path())[0];
    let mut l = lines(seg);
    l[17] = l[17].replace("doc/", "doc-");
    let victim = seq_of(&l[17]);
    put_lines(seg, &l);
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert_eq!(err.seq, victim, "{err}");
    assert_eq!(err.location.line, 18, "{err}");
    assert!(err.reason.contains("changed"), "{err}");

    // A deleted record: the next one names the missing seq.
    let dir = trail();
    write_trail(dir.path(), 50, 10, keyed);
    let seg = &segments(dir.path())[0];
    let mut l = lines(seg);
    let gone = seq_of(&l[20]);
    l.remove(20);
    put_lines(seg, &l);
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert!(
        err.reason
            .contains(&format!("record seq {gone} is missing")),
        "{err}"
    );
    assert_eq!(err.location.line, 21);

    // An inserted record with a valid-looking hash (a copy of another with a new seq and a
    // recomputed hash): the break is at the line after it, naming it.
    let dir = trail();
    write_trail(dir.path(), 50, 10, keyed);
    let seg = &segments(dir.path())[0];
    let mut l = lines(seg);
    let forged = {
        let prev: serde_json::Value = serde_json::from_str(&l[4]).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&l[3]).unwrap();
        v["seq"] = prev["seq"].as_u64().unwrap().into();
        v["seq"] = (prev["seq"].as_u64().unwrap() + 1).into();
        v["prev_hash"] = prev["hash"].clone();
        v["actor"] = "mallory".into();
        let mut line = qiflow_core::audit::Line::parse(v.to_string().as_bytes()).unwrap();
        let json = serde_json::to_string(&line).unwrap();
        line = qiflow_core::audit::Line::parse(json.as_bytes()).unwrap();
        let mut v: serde_json::Value = serde_json::to_value(&line).unwrap();
        v["hash"] = line.compute_hash().into();
        v.to_string()
    };
    l.insert(5, forged);
    put_lines(seg, &l);
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert_eq!(err.location.line, 7, "{err}");
    assert!(
        err.reason.contains(":6)"),
        "names the inserted line 6: {err}"
    );

    // Two records swapped.
    let dir = trail();
    write_trail(dir.path(), 50, 10, keyed);
    let seg = &segments(dir.path())[0];
    let mut l = lines(seg);
    l.swap(30, 31);
    let first_out_of_place = seq_of(&l[30]);
    put_lines(seg, &l);
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert_eq!(err.seq, first_out_of_place, "{err}");
    assert_eq!(err.location.line, 31);
    assert!(
        err.reason.contains("missing") || err.reason.contains("order"),
        "{err}"
    );

    // A cut tail: the final digest and some records gone: an open tail.
    let dir = trail();
    write_trail(dir.path(), 55, 10, keyed);
    let seg = &segments(dir.path())[0];
    let mut l = lines(seg);
    l.truncate(l.len() - 3);
    put_lines(seg, &l);
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert!(v.open_tail(), "{v:?}");
    assert_eq!(v.unsealed, 3);
    // Cut mid-line: a torn tail, still an open tail, and the record before it verified.
    let text = std::fs::read(seg).unwrap();
    std::fs::write(seg, &text[..text.len() - 20]).unwrap();
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert!(v.torn_tail && v.open_tail(), "{v:?}");

    // A deleted middle segment.
    let dir = trail();
    write_trail(dir.path(), 300, 10, |d| keyed(d).segment_size(4096));
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    let first_after = seq_of(&lines(&segs[2])[0]);
    let first_missing = seq_of(&lines(&segs[1])[0]);
    std::fs::remove_file(&segs[1]).unwrap();
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert_eq!(err.seq, first_after, "{err}");
    assert!(err.reason.contains(&format!("{first_missing}..")), "{err}");
    assert!(
        err.location.source.contains(&format!("{first_after:020}")),
        "{err}"
    );

    // The whole file rewritten with a recomputed chain by someone without the key: digests are
    // recomputed unkeyed (or with a guessed key).
    let dir = trail();
    write_trail(dir.path(), 50, 10, keyed);
    let seg = &segments(dir.path())[0];
    let forged_dir = trail();
    {
        // Same events but actor changed in record 3, written by the attacker's own sink.
        let mut sink = FileAuditSink::builder(forged_dir.path())
            .digest_every(10)
            .open()
            .unwrap();
        let events: Vec<_> = (0..50)
            .map(|i| {
                if i == 3 {
                    AuditEvent::builder("mallory", "doc.update").build()
                } else {
                    event(i)
                }
            })
            .collect();
        for chunk in events.chunks(10) {
            sink.append(chunk).unwrap();
        }
        sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    }
    let forged_seg = &segments(forged_dir.path())[0];
    std::fs::copy(forged_seg, seg).unwrap();
    assert!(
        verify_dir(dir.path(), None).is_ok(),
        "the chain alone cannot tell"
    );
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert!(
        err.reason.contains("not keyed") || err.reason.contains("signature"),
        "{err}"
    );
    assert_eq!(err.seq, 10, "the first digest: {err}");
    // ... and with a guessed key instead of none.
    let guess_dir = trail();
    write_trail(guess_dir.path(), 50, 10, |d| {
        FileAuditSink::builder(d)
            .signing_key(Some(b"guessed key guessed"))
            .digest_every(10)
    });
    std::fs::copy(&segments(guess_dir.path())[0], seg).unwrap();
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert!(err.reason.contains("signature does not match"), "{err}");
    assert_eq!(err.seq, 10);
}

#[test]
fn a_deleted_oldest_segment_is_detected_but_retention_is_not_tampering() {
    let dir = trail();
    write_trail(dir.path(), 300, 10, |d| keyed(d).segment_size(4096));
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[0]).unwrap();
    let err = verify_dir(dir.path(), Some(KEY)).unwrap_err();
    assert!(err.reason.contains("older segments were deleted"), "{err}");

    // Retention by the sink: segments closed long ago are deleted, the rest verifies.
    let dir = trail();
    let clock = Arc::new(qiflow_core::test::ManualClock::new(SystemTime::now()));
    let mut sink = keyed(dir.path().to_owned())
        .segment_size(4096)
        .retention(Some(Duration::from_secs(3600)))
        .clock(clock.clone())
        .open()
        .unwrap();
    for i in 0..10 {
        let batch: Vec<_> = (i * 20..i * 20 + 20).map(event).collect();
        sink.append(&batch).unwrap();
    }
    let before = segments(dir.path()).len();
    clock.advance(Duration::from_secs(7200));
    for i in 10..30 {
        let batch: Vec<_> = (i * 20..i * 20 + 20).map(event).collect();
        sink.append(&batch).unwrap();
    }
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    let after = segments(dir.path());
    assert!(before > 2);
    let first = seq_of(&lines(&after[0])[0]);
    assert!(first > 0, "old segments were deleted");
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert_eq!(v.first_seq, first);
    assert!(v.records < 600 && v.records > 0);
}

#[test]
fn compressed_and_encrypted_segments_verify_and_query() {
    let dir = trail();
    let keyring = Arc::new(Keyring::parse(&Keyring::generate_key()).unwrap());
    {
        let k = keyring.clone();
        write_trail(dir.path(), 200, 10, move |d| {
            keyed(d)
                .segment_size(4096)
                .compress(true)
                .keyring(Some(k.clone()))
        });
    }
    let names: Vec<String> = segments(dir.path())
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".jsonl.gz")), "{names:?}");
    let raw: String = names
        .iter()
        .filter(|n| n.ends_with(".jsonl"))
        .map(|n| std::fs::read_to_string(n).unwrap())
        .collect();
    assert!(!raw.contains("doc.update"), "records are encrypted at rest");
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert_eq!(v.records, 200);
    let store = FileStore::new(dir.path(), Some(keyring));
    let mut q = AuditQuery::new();
    q.actor = Some("user1".into());
    q.limit = Some(20);
    let page = store.query_blocking(&q).unwrap();
    assert_eq!(page.records.len(), 20);
    assert!(page.records.iter().all(|r| r.actor == "user1"));
    assert!(
        page.records.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let mut all = page.records.len();
    let mut next = page.next;
    while let Some(before) = next {
        q.before = Some(before);
        let p = store.query_blocking(&q).unwrap();
        all += p.records.len();
        next = p.next;
    }
    assert_eq!(all, (0..200).filter(|i| i % 3 == 1).count());
}

#[test]
fn observer_audit_end_to_end_with_redaction_metrics_and_query() {
    let dir = trail();
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().to_owned();
    config.audit.signing_key = Some(qiflow_core::secret::Secret::new(
        String::from_utf8(KEY.to_vec()).unwrap(),
    ));
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    for i in 0..30 {
        observer.audit(event(i)).unwrap();
    }
    observer
        .audit(
            AuditEvent::builder("demo", "user.login")
                .metadata("password", "CANARY-secret")
                .metadata("nested", serde_json::json!({"token": "CANARY-2", "ok": 1}))
                .build(),
        )
        .unwrap();
    assert!(observer.flush(Duration::from_secs(5)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut q = AuditQuery::new();
    q.action = Some("user.login".into());
    let page = rt.block_on(observer.audit_query(&q)).unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].metadata["password"], "[REDACTED]");
    // The record names the instance that wrote it (part of what its hash covers).
    assert_eq!(
        page.records[0].instance.as_deref(),
        Some(observer.config().service.instance.as_str())
    );
    let text = observer.render_metrics();
    assert!(
        // The 31 events and this start's `service.deployed`.
        text.contains("qiflow_audit_records_total{sink=\"file\",outcome=\"written\"} 32"),
        "{text}"
    );
    drop(guard);
    let all: String = segments(dir.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!all.contains("CANARY"));
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert_eq!(v.records, 32);
    assert!(!v.open_tail());
}

/// A sink that never finishes: the queue fills, callers wait `block_timeout`, then the record
/// is lost: counted, and the loss hook called.
#[test]
fn a_full_queue_loses_records_loudly() {
    struct Stuck;
    impl qiflow_core::audit::AuditSink for Stuck {
        fn write<'a>(
            &'a mut self,
            _: &'a [AuditEvent],
        ) -> qiflow_core::worker::BoxFuture<'a, Result<(), qiflow_core::audit::AuditError>>
        {
            Box::pin(std::future::pending())
        }
    }
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.queue_capacity = 2;
    config.audit.batch_size = 1;
    config.audit.block_timeout = Duration::from_millis(20);
    let lost = Arc::new(AtomicU64::new(0));
    let l = lost.clone();
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .audit_sink(Stuck, None)
        .on_audit_loss(move |loss| {
            l.fetch_add(loss.records, Ordering::SeqCst);
        })
        .flush_budget(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut errors = 0;
    for i in 0..10 {
        if observer.audit(event(i)).is_err() {
            errors += 1;
        }
    }
    assert!(errors >= 6, "{errors}");
    assert_eq!(lost.load(Ordering::SeqCst), errors);
    let text = observer.render_metrics();
    assert!(
        text.contains(&format!(
            "qiflow_audit_records_total{{sink=\"custom\",outcome=\"lost\"}} {errors}"
        )),
        "{text}"
    );
    // The guard's budget runs out on the stuck sink: what was queued or in flight is lost too,
    // and reported: every one of the 10 records, and this start's `service.deployed`, is
    // accounted for.
    drop(guard);
    assert_eq!(lost.load(Ordering::SeqCst), 11);
    assert!(
        observer
            .render_metrics()
            .contains("qiflow_audit_records_total{sink=\"custom\",outcome=\"lost\"} 11")
    );
}

#[test]
fn auto_audit_rules_and_outcomes() {
    use qiflow_core::audit::{ActorSource, AutoAudit};
    let auto = AutoAudit::new(
        &["POST /login".into(), "* /admin/*".into()],
        ActorSource::Header("x-user".into()),
    )
    .unwrap();
    assert!(auto.matches("POST", "/login"));
    assert!(!auto.matches("GET", "/login"));
    assert!(auto.matches("DELETE", "/admin/users/{id}"));
    assert_eq!(
        auto.actor(&|h| (h == "x-user").then(|| "alice".to_owned())),
        Some("alice".into())
    );
    assert!(AutoAudit::new(&["/login".into()], ActorSource::None).is_err());

    let dir = trail();
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().to_owned();
    config.audit.routes = vec!["POST /login".into()];
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    for status in [200u16, 401, 503] {
        let info = qiflow_core::request::RequestInfo::new("POST", "/login")
            .with_route("/login")
            .with_actor("bob");
        observer
            .begin_request(info)
            .finish(qiflow_core::request::RequestOutcome::new(status));
    }
    let info = qiflow_core::request::RequestInfo::new("GET", "/hello").with_route("/hello");
    observer
        .begin_request(info)
        .finish(qiflow_core::request::RequestOutcome::new(200));
    drop(guard);
    let page = FileStore::new(dir.path(), None)
        .query_blocking(&AuditQuery::new())
        .unwrap();
    let outcomes: Vec<_> = page
        .records
        .iter()
        .map(|r| (r.actor.as_str(), r.action.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("bob", "POST /login", Outcome::Failure),
            ("bob", "POST /login", Outcome::Denied),
            ("bob", "POST /login", Outcome::Success),
            ("qiflow", "service.deployed", Outcome::Success)
        ]
    );
}

fn qiflow(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qiflow"))
        .args(args)
        .env_remove("QIFLOW_CONFIG")
        .env_remove("QIFLOW__AUDIT__POSTGRES_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn cli_verify_exit_codes_and_messages() {
    let dir = trail();
    write_trail(dir.path(), 42, 10, keyed);
    let config = dir.path().with_file_name("qiflow.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\ndir = {:?}\nsigning_key = {:?}\n",
            dir.path().display().to_string(),
            std::str::from_utf8(KEY).unwrap()
        ),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let c = config.to_str().unwrap();
    let (code, text) = qiflow(&["audit", "verify", d, "--config", c]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok: ") && text.contains("42 records"),
        "{text}"
    );
    assert!(text.contains("sealed: 42 records up to seq"), "{text}");
    assert!(text.contains("witness: sealed seq"), "{text}");
    // Without the key: ok, with a warning that signatures were not checked; the witness
    // beside the trail is found and checked.
    let (code, text) = qiflow(&["audit", "verify", d]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("not checked"), "{text}");
    assert!(text.contains("witness: sealed seq"), "{text}");
    // The directory from the config.
    let (code, _) = qiflow(&["audit", "verify", "--config", c]);
    assert_eq!(code, 0);

    // An open tail (records after the last digest: a crash) fails unless allowed.
    {
        let mut sink = keyed(dir.path().to_owned()).open().unwrap();
        sink.append(&[event(42), event(43)]).unwrap();
        // dropped without a digest
    }
    let (code, text) = qiflow(&["audit", "verify", d, "--config", c]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("open tail: 2 record(s)"), "{text}");
    let (code, text) = qiflow(&["audit", "verify", d, "--config", c, "--allow-open-tail"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("44 records"), "{text}");

    // Cut back to the digest before the last: the witness names the gap.
    let seg = &segments(dir.path())[0];
    let all = lines(seg);
    let digests: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].contains("\"kind\":\"digest\""))
        .collect();
    let keep = digests[digests.len() - 2];
    let mut l = all[..=keep].to_vec();
    put_lines(seg, &l);
    let w = witness_of(&dir);
    let from = seq_of(&l[keep]) + 1;
    let (code, text) = qiflow(&["audit", "verify", d, "--config", c]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "the trail ends at seq {} but the witness sealed seq {} at {}: records seq {from}..={} are missing",
            from - 1,
            w.seq,
            w.timestamp,
            w.seq
        )),
        "{text}"
    );
    // The witness named directly, kept elsewhere.
    let elsewhere = dir.path().with_file_name("copy.json");
    std::fs::rename(dir.witness(), &elsewhere).unwrap();
    let (code, text) = qiflow(&[
        "audit",
        "verify",
        d,
        "--witness",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("are missing"), "{text}");
    // No witness anywhere: the config expects one (it was deleted): broken.
    let (code, text) = qiflow(&["audit", "verify", d, "--config", c]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the witness is missing"), "{text}");
    // Nothing given and none beside the trail: a note, not a failure.
    let (code, text) = qiflow(&["audit", "verify", d]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("note: no witness checked") && text.contains("cannot be detected"),
        "{text}"
    );
    let (code, text) = qiflow(&["audit", "verify", d, "--witness", "/nonexistent/w.json"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the witness is missing"), "{text}");

    // A changed record is named.
    l[7] = l[7].replace("user", "resu");
    let seq = seq_of(&l[7]);
    put_lines(seg, &l);
    let (code, text) = qiflow(&["audit", "verify", d]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(":8: record seq {seq}: hash does not match")),
        "{text}"
    );

    let (code, text) = qiflow(&["audit", "verify", "/nonexistent/trail"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot list"), "{text}");

    // --postgres never takes the URL from the command line, and says where to put it.
    let (code, text) = qiflow(&[
        "audit",
        "verify",
        "--postgres",
        "postgres://app:s3cret@db.internal/app",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("takes no URL on the command line") && text.contains("postgres_url"),
        "{text}"
    );
    let (code, text) = qiflow(&["audit", "verify", "--postgres"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("needs the database URL") && text.contains("QIFLOW__AUDIT__POSTGRES_URL"),
        "{text}"
    );
    let (code, text) = qiflow(&["audit", "verify", "--postgres", "--config", c]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("needs the database URL"), "{text}");
}

/// The child of `sigkill_during_batched_writes`: writes records from 4 threads until killed,
/// printing `acked <i>` once each is durably stored.
#[test]
#[ignore = "entry point of a child process; run by sigkill_during_batched_writes_loses_no_acknowledged_record"]
fn crash_child() {
    let dir = std::env::var("QIFLOW_AUDIT_CRASH_DIR").unwrap_or_else(|_| {
        panic!(
            "crash_child is the child process of sigkill_during_batched_writes_loses_no_acknowledged_record, \
             which runs it with QIFLOW_AUDIT_CRASH_DIR set; run that test instead"
        )
    });
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.into();
    config.audit.batch_size = 50;
    config.audit.flush_interval = Duration::from_millis(2);
    config.audit.digest_every = 170;
    config.audit.signing_key = Some(qiflow_core::secret::Secret::new(
        String::from_utf8(KEY.to_vec()).unwrap(),
    ));
    let (observer, _guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let base: u64 = std::env::var("QIFLOW_AUDIT_CRASH_BASE")
        .unwrap()
        .parse()
        .unwrap();
    let next = Arc::new(AtomicU64::new(base));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let observer = observer.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    rt.block_on(observer.audit_durable(event(i))).unwrap();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn sigkill_during_batched_writes_loses_no_acknowledged_record() {
    use std::io::BufRead;
    let dir = trail();
    let mut open_tails = 0;
    for round in 0..3u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("QIFLOW_AUDIT_CRASH_DIR", dir.path())
            .env("QIFLOW_AUDIT_CRASH_BASE", (round * 1_000_000).to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(i) = line.strip_prefix("acked ") {
                acked.push(i.parse::<u64>().unwrap());
                if acked.len() as u64 >= 400 + round * 137 {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        // The trail verifies up to the last complete record; an open tail is expected.
        let v = verify_dir(dir.path(), Some(KEY)).unwrap();
        assert!(v.records as usize >= acked.len(), "{v:?}");
        open_tails += usize::from(v.open_tail());
        let mut stored = std::collections::HashSet::new();
        let mut q = AuditQuery::new();
        q.limit = Some(1000);
        loop {
            let p = FileStore::new(dir.path(), None).query_blocking(&q).unwrap();
            for r in &p.records {
                if r.request_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("req-"))
                {
                    stored.insert(r.metadata["i"].as_u64().unwrap());
                }
            }
            match p.next {
                Some(n) => q.before = Some(n),
                None => break,
            }
        }
        for i in &acked {
            assert!(
                stored.contains(i),
                "acknowledged record {i} lost in round {round}"
            );
        }
    }
    assert!(open_tails > 0, "no kill landed between digests");
    // The next start continues the chain and a clean shutdown seals it.
    let mut sink = keyed(dir.path().to_owned()).open().unwrap();
    sink.append(&[event(9_000_000)]).unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert!(!v.open_tail(), "{v:?}");
}

#[test]
fn the_api_view_is_token_protected_and_validates_its_query() {
    use qiflow_core::admin::AdminRequest;
    use qiflow_core::audit::AuditQuery;
    let dir = trail();
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().to_owned();
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    for i in 0..12 {
        observer.audit(event(i)).unwrap();
    }
    assert!(observer.flush(Duration::from_secs(5)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = |observer: &qiflow_core::Observer, query: &str, token: Option<&str>| {
        let mut request = AdminRequest::new("GET", "/qiflow/api/audit").query(Some(query));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let answer = rt.block_on(observer.admin(request));
        (answer.status(), answer.text().into_owned())
    };
    let bearer = qiflow_core::test::authorization();
    let bearer = Some(bearer.as_str());
    assert_eq!(api(&observer, "", None).0, 401);
    assert_eq!(api(&observer, "", Some("Bearer nope")).0, 401);
    let (status, body) = api(&observer, "actor=user2&limit=2", bearer);
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    let next = page["next"].as_u64().unwrap();
    let (_, older) = api(
        &observer,
        &format!("actor=user2&limit=2&before={next}"),
        bearer,
    );
    let older: serde_json::Value = serde_json::from_str(&older).unwrap();
    assert!(older["records"][0]["seq"].as_u64().unwrap() < next);
    for bad in ["outcome=maybe", "limit=x", "from=yesterday", "colour=red"] {
        let (status, body) = api(&observer, bad, bearer);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    // The documented range of `limit` is enforced, and the answer names it.
    for bad in ["limit=0", "limit=1001", "limit=5000", "limit=-1"] {
        let (status, body) = api(&observer, bad, bearer);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("use 1 to 1000"), "{bad}: {body}");
    }
    for good in ["limit=1", "limit=1000"] {
        assert_eq!(api(&observer, good, bearer).0, 200, "{good}");
    }
    assert!(AuditQuery::from_query_string("outcome=denied&from=2026-01-01T00:00:00Z").is_ok());
    drop(guard);

    // Auditing off: 503.
    let (observer, guard) = qiflow_core::Observer::builder(quiet_config())
        .install_global(false)
        .build()
        .unwrap();
    assert_eq!(api(&observer, "", bearer).0, 503);
    drop(guard);
}

#[test]
fn encryption_at_rest_through_the_observer_needs_a_keyring() {
    let dir = trail();
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().to_owned();
    config.audit.encrypt = true;
    // No keyring in the environment of this test, and none given: a clear error at build.
    if std::env::var_os("QIFLOW_MASTER_KEY").is_none()
        && std::env::var_os("QIFLOW_MASTER_KEY_FILE").is_none()
    {
        let err = qiflow_core::Observer::builder(config.clone())
            .install_global(false)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), qiflow_core::InitErrorKind::Audit);
        assert!(err.to_string().contains("audit.encrypt"), "{err}");
    }
    let keyring = Arc::new(Keyring::parse(&Keyring::generate_key()).unwrap());
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .audit_keyring(keyring)
        .build()
        .unwrap();
    observer
        .audit(
            AuditEvent::builder("carol", "secret.read")
                .resource("vault/1")
                .build(),
        )
        .unwrap();
    assert!(observer.flush(Duration::from_secs(5)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let page = rt
        .block_on(observer.audit_query(&AuditQuery::new()))
        .unwrap();
    assert_eq!(page.records[0].actor, "carol");
    drop(guard);
    let raw: String = segments(dir.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        !raw.contains("carol") && raw.contains("\"kind\":\"encrypted\""),
        "{raw}"
    );
    // Carol's record and this start's `service.deployed`.
    assert_eq!(verify_dir(dir.path(), None).unwrap().records, 2);
}

#[test]
fn resuming_after_a_crash_is_not_fooled_by_metadata_that_looks_like_a_digest() {
    let dir = trail();
    {
        let mut sink = keyed(dir.path().to_owned())
            .segment_size(4096)
            .digest_every(1000)
            .open()
            .unwrap();
        while segments(dir.path()).len() < 2 {
            sink.append(&[event(1)]).unwrap();
        }
        let tricky = AuditEvent::builder("x", "y")
            .metadata("kind", "digest")
            .build();
        sink.append(&[tricky.clone(), tricky]).unwrap();
        // dropped without a seal: a crash with an open tail
    }
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert!(v.open_tail());
    let mut sink = keyed(dir.path().to_owned())
        .segment_size(4096)
        .open()
        .unwrap();
    sink.append(&[event(2)]).unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    let v = verify_dir(dir.path(), Some(KEY)).unwrap();
    assert!(!v.open_tail(), "{v:?}");
}

#[test]
fn an_aborted_outcome_is_stored_queried_and_verified() {
    let dir = trail();
    let mut sink = keyed(dir.path().to_owned()).open().unwrap();
    let aborted = AuditEvent::builder("carol", "POST /orders")
        .outcome(Outcome::Aborted)
        .build();
    sink.append(&[event(1), aborted, event(2)]).unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    let raw: String = segments(dir.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(raw.contains("\"outcome\":\"aborted\""), "{raw}");
    let mut q = qiflow_core::audit::AuditQuery::from_query_string("outcome=aborted").unwrap();
    q.limit = Some(10);
    let page = FileStore::new(dir.path(), None).query_blocking(&q).unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].actor, "carol");
    assert_eq!(page.records[0].outcome, Outcome::Aborted);
    assert_eq!(verify_dir(dir.path(), Some(KEY)).unwrap().records, 3);
}

fn alarms(sink: &mut FileAuditSink) -> Vec<qiflow_core::audit::AuditAlarm> {
    use qiflow_core::audit::{AuditSink as _, SinkNotice};
    sink.take_notices()
        .into_iter()
        .filter_map(|n| match n {
            SinkNotice::Alarm(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn witness_of(t: &Trail) -> qiflow_core::audit::Seal {
    qiflow_core::audit::WitnessFile::new(t.witness())
        .read()
        .unwrap()
        .expect("a witness beside the trail")
}

/// Item: the tamper matrix's cut tails, which the trail alone cannot show: the newest segment
/// deleted, and the trail truncated exactly after a digest. The witness names the gap.
#[test]
fn a_trail_cut_back_to_an_earlier_digest_is_caught_by_its_witness() {
    use qiflow_core::audit::verify_dir_with_witness;

    // The newest segment deleted: the one before it ends with a digest, so the trail alone
    // looks closed.
    let t = trail();
    write_trail(t.path(), 300, 10, |d| keyed(d).segment_size(4096));
    let segs = segments(t.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let w = witness_of(&t);
    assert_eq!(w.sealed_records, 300);
    let newest_first = seq_of(&lines(segs.last().unwrap())[0]);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let v = verify_dir(t.path(), Some(KEY)).unwrap();
    assert!(
        !v.open_tail(),
        "the cut is invisible without the witness: {v:?}"
    );
    let err = verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).unwrap_err();
    assert_eq!(err.seq, newest_first, "{err}");
    assert!(
        err.reason.contains(&format!(
            "the trail ends at seq {} but the witness sealed seq {} at {}: records seq {newest_first}..={} are missing",
            newest_first - 1,
            w.seq,
            w.timestamp,
            w.seq
        )),
        "{err}"
    );

    // Truncated right after a digest in the middle of the only segment.
    let t = trail();
    write_trail(t.path(), 55, 10, keyed);
    let seg = &segments(t.path())[0];
    let mut l = lines(seg);
    let cut = l
        .iter()
        .position(|line| line.contains("\"kind\":\"digest\"") && seq_of(line) > 20)
        .unwrap();
    let last_kept = seq_of(&l[cut]);
    l.truncate(cut + 1);
    put_lines(seg, &l);
    let v = verify_dir(t.path(), Some(KEY)).unwrap();
    assert!(!v.open_tail(), "{v:?}");
    let err = verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).unwrap_err();
    assert!(
        err.reason.contains(&format!(
            "the trail ends at seq {last_kept} but the witness sealed seq {}",
            witness_of(&t).seq
        )),
        "{err}"
    );
    // The intact trail verifies against the same witness.
    let t = trail();
    write_trail(t.path(), 55, 10, keyed);
    let v = verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).unwrap();
    assert_eq!(v.witness.as_ref().map(|w| w.seq), v.last_seq);
    assert_eq!(v.last_seal.as_ref().unwrap().sealed_records, 55);
}

/// After a cut, the next start raises a critical alarm and continues after the witness: no
/// seq is used twice, and the new lines chain onto the lost digest, so putting the lost
/// segment back makes the trail whole again.
#[test]
fn after_a_cut_sequence_numbers_continue_past_the_witness() {
    use qiflow_core::audit::{AlarmKind, verify_dir_with_witness};
    let t = trail();
    write_trail(t.path(), 300, 10, |d| keyed(d).segment_size(4096));
    let w = witness_of(&t);
    let newest = segments(t.path()).pop().unwrap();
    let kept = std::fs::read(&newest).unwrap();
    let lost_from = seq_of(&lines(&newest)[0]);
    std::fs::remove_file(&newest).unwrap();

    let mut sink = keyed(t.path().to_owned())
        .segment_size(4096)
        .open()
        .unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, AlarmKind::TrailCut);
    assert!(found[0].kind.is_critical());
    assert!(
        found[0]
            .message
            .contains(&format!("records seq {lost_from}..={} are missing", w.seq))
            && found[0]
                .message
                .contains(&format!("continue at seq {}", w.seq + 1)),
        "{}",
        found[0].message
    );
    // The continuation is a segment of its own, opened by a `continue` digest at the seq
    // after the witness's.
    let newest_now = segments(t.path()).pop().unwrap();
    assert_ne!(newest_now, newest);
    let first = lines(&newest_now)[0].clone();
    assert_eq!(seq_of(&first), w.seq + 1, "seqs are not reused: {first}");
    assert!(first.contains("\"reason\":\"continue\""), "{first}");
    assert_eq!(sink.next_seq(), w.seq + 2);
    sink.append(&[event(1000), event(1001)]).unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    drop(sink);
    let after = witness_of(&t);
    // Two records and a digest (after a `segment` digest when the live segment was full).
    assert!(after.seq >= w.seq + 3, "{after:?}");
    assert_eq!(
        after.sealed_records,
        w.sealed_records + 2,
        "the count goes on"
    );

    // The gap stays visible...
    let err = verify_dir(t.path(), Some(KEY)).unwrap_err();
    assert!(
        err.reason
            .contains(&format!("records seq {lost_from}..={} are missing", w.seq)),
        "{err}"
    );
    // ... until the lost segment is put back: then the whole trail verifies.
    std::fs::write(&newest, kept).unwrap();
    let v = verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).unwrap();
    assert_eq!(v.records, 302);
    assert_eq!(v.last_seal.unwrap().sealed_records, 302);
    assert!(v.witness.is_some());

    // A restart with nothing wrong raises nothing.
    let mut sink = keyed(t.path().to_owned())
        .segment_size(4096)
        .open()
        .unwrap();
    assert!(alarms(&mut sink).is_empty());
}

/// A deleted witness is reported (not silently accepted) and written again; a witness of
/// another trail is a mismatch; a witness left behind by a crash is brought up to date.
#[test]
fn a_missing_or_foreign_witness_is_reported() {
    use qiflow_core::audit::{AlarmKind, verify_dir_with_witness};
    let t = trail();
    write_trail(t.path(), 40, 10, keyed);
    std::fs::remove_file(t.witness()).unwrap();
    let err = verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).unwrap_err();
    assert!(err.reason.contains("the witness is missing"), "{err}");
    assert!(err.location.source.ends_with("audit.witness.json"), "{err}");
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, AlarmKind::WitnessMissing);
    assert!(
        found[0].message.contains("is missing"),
        "{}",
        found[0].message
    );
    drop(sink);
    assert!(verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).is_ok());

    // A first start (no trail, no witness) is not an alarm.
    let fresh = trail();
    let mut sink = keyed(fresh.path().to_owned()).open().unwrap();
    assert!(alarms(&mut sink).is_empty());

    // The witness of another trail of the same length.
    let other = trail();
    write_trail(other.path(), 40, 10, keyed);
    std::fs::copy(other.witness(), t.witness()).unwrap();
    let err = verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).unwrap_err();
    assert!(err.reason.contains("rewritten from here"), "{err}");
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found[0].kind, AlarmKind::WitnessMismatch, "{found:?}");
    drop(sink);

    // A witness one digest behind (a crash between the digest and the witness): updated.
    let t = trail();
    write_trail(t.path(), 20, 10, keyed);
    let old = std::fs::read(t.witness()).unwrap();
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    sink.append(&[event(50)]).unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    drop(sink);
    let newest = witness_of(&t);
    std::fs::write(t.witness(), old).unwrap();
    assert!(verify_dir_with_witness(t.path(), Some(KEY), &t.witness()).is_ok());
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    assert!(alarms(&mut sink).is_empty());
    assert_eq!(witness_of(&t), newest);

    // A damaged witness: reported, and replaced at the next digest.
    std::fs::write(t.witness(), "{not json").unwrap();
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found[0].kind, AlarmKind::WitnessMissing, "{found:?}");
    assert!(found[0].message.contains("not a witness file"), "{found:?}");
}

#[cfg(unix)]
#[test]
fn segments_and_the_witness_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let t = trail();
    write_trail(t.path(), 200, 10, |d| {
        keyed(d).segment_size(4096).compress(true)
    });
    assert_eq!(mode(t.path()), 0o700, "the trail directory");
    let segs = segments(t.path());
    assert!(segs.iter().any(|p| p.to_string_lossy().ends_with(".gz")));
    for seg in &segs {
        assert_eq!(mode(seg), 0o600, "{}", seg.display());
    }
    assert_eq!(mode(&t.witness()), 0o600);
}

/// Through the observer: every digest sets the gauges and logs a `qiflow::audit` line; a cut
/// trail raises a critical alert at start.
#[test]
fn the_observer_publishes_seals_and_alerts_on_a_cut_trail() {
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps the `qiflow::audit` events' fields.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            if event.metadata().target() == "qiflow::audit" {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }
    let capture = Capture::default();
    // The writer logs on qiflow's worker threads: a global subscriber sees them.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .unwrap();

    let start = |t: &Trail| {
        let mut config = quiet_config();
        config.audit.enabled = true;
        config.audit.dir = t.path().to_owned();
        config.audit.digest_every = 10;
        config.audit.signing_key = Some(qiflow_core::secret::Secret::new(
            String::from_utf8(KEY.to_vec()).unwrap(),
        ));
        qiflow_core::Observer::builder(config)
            .install_global(false)
            .build()
            .unwrap()
    };
    let alert = |observer: &qiflow_core::Observer, name: &str| {
        observer
            .alerts()
            .view()
            .active
            .into_iter()
            .find(|a| a.alert.name == name)
    };
    // 10 records sealed (the witness then kept as an old copy), then this start's
    // `service.deployed` and 15 more through the observer. Returns the old witness and the last
    // seal.
    let setup = |t: &Trail| {
        write_trail(t.path(), 10, 10, keyed);
        let old = std::fs::read(t.witness()).unwrap();
        let (observer, guard) = start(t);
        for i in 10..25 {
            observer.audit(event(i)).unwrap();
        }
        assert!(observer.flush(Duration::from_secs(5)));
        let text = observer.render_metrics();
        assert!(text.contains("qiflow_audit_sealed_records 26"), "{text}");
        let stamp: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("qiflow_audit_last_digest_timestamp_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - stamp).abs() < 60.0, "{stamp} vs {now}");
        drop(guard);
        assert!(alert(&observer, "audit_trail_cut").is_none());
        // Cut the trail back to its first digest.
        let seg = &segments(t.path())[0];
        let mut l = lines(seg);
        let cut = l
            .iter()
            .position(|line| line.contains("\"kind\":\"digest\""))
            .unwrap();
        l.truncate(cut + 1);
        put_lines(seg, &l);
        (old, witness_of(t))
    };

    // The witness intact: a critical alert at start, and the count goes on past it.
    let t = trail();
    let (_, w) = setup(&t);
    let logged = capture.0.lock().unwrap().clone();
    assert!(
        logged.iter().any(|l| l.contains("audit trail sealed")
            && l.contains(&format!("seq={} ", w.seq))
            && l.contains("sealed_records=26 ")
            && l.contains(&w.hash)),
        "{logged:#?}"
    );
    let (observer, guard) = start(&t);
    let found = (0..400)
        .find_map(|_| {
            let found = alert(&observer, "audit_trail_cut");
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            found
        })
        .expect("an audit_trail_cut alert");
    assert_eq!(
        found.alert.level(),
        qiflow_core::alert::AlertLevel::Critical
    );
    assert!(
        found
            .alert
            .description
            .contains(&format!("sealed seq {}", w.seq)),
        "{:?}",
        found.alert
    );
    assert_eq!(found.alert.labels["sink"], "file");
    assert!(
        observer
            .render_metrics()
            .contains("qiflow_audit_sealed_records 26")
    );
    observer.audit(event(99)).unwrap();
    drop(guard);
    let err = verify_dir(t.path(), Some(KEY)).unwrap_err();
    assert!(err.reason.contains("are missing"), "{err}");

    // The witness put back to its old copy as well: nothing on this machine can tell, but the
    // gauge drops from 26 to 11 (the 10 of the old copy and this start's `service.deployed`),
    // which the shipped Prometheus rule catches.
    let t = trail();
    let (old, _) = setup(&t);
    std::fs::write(t.witness(), old).unwrap();
    let (observer, guard) = start(&t);
    assert!(observer.flush(Duration::from_secs(5)));
    let text = observer.render_metrics();
    assert!(text.contains("qiflow_audit_sealed_records 11"), "{text}");
    assert!(alert(&observer, "audit_trail_cut").is_none());
    drop(guard);
    let logged = capture.0.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("alarm=\"audit_trail_cut\"")),
        "{logged:#?}"
    );
}

/// A custom sink reports its own seals and alarms: the observer publishes them like the file
/// sink's (gauges, alert), the start-up ones once the pipeline is built.
#[test]
fn a_custom_sink_publishes_seals_and_alarms() {
    use qiflow_core::audit::{AlarmKind, AuditAlarm, AuditError, AuditSink, Seal, SinkNotice};
    struct Reporting {
        notices: Vec<SinkNotice>,
        written: u64,
    }
    impl AuditSink for Reporting {
        fn write<'a>(
            &'a mut self,
            batch: &'a [AuditEvent],
        ) -> qiflow_core::worker::BoxFuture<'a, Result<(), AuditError>> {
            self.written += batch.len() as u64;
            self.notices.push(SinkNotice::Sealed(Seal::new(
                self.written + 1,
                self.written,
                "2030-01-01T00:00:00.000000Z",
                "ab".repeat(32),
                "cd".repeat(32),
            )));
            Box::pin(async { Ok(()) })
        }
        fn take_notices(&mut self) -> Vec<SinkNotice> {
            std::mem::take(&mut self.notices)
        }
    }
    let mut config = quiet_config();
    config.audit.enabled = true;
    let sink = Reporting {
        notices: vec![SinkNotice::Alarm(AuditAlarm::new(
            AlarmKind::WitnessMismatch,
            "the custom store differs from its witness",
        ))],
        written: 0,
    };
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .audit_sink(sink, None)
        .build()
        .unwrap();
    for i in 0..3 {
        observer.audit(event(i)).unwrap();
    }
    assert!(observer.flush(Duration::from_secs(5)));
    let text = observer.render_metrics();
    // The 3 events and this start's `service.deployed`.
    assert!(text.contains("qiflow_audit_sealed_records 4"), "{text}");
    assert!(
        text.contains("qiflow_audit_last_digest_timestamp_seconds 1893456000"),
        "{text}"
    );
    let found = observer
        .alerts()
        .view()
        .active
        .into_iter()
        .find(|a| a.alert.name == "audit_witness_mismatch")
        .expect("the start-up alarm as an alert");
    assert_eq!(
        found.alert.level(),
        qiflow_core::alert::AlertLevel::Critical
    );
    assert_eq!(found.alert.labels["sink"], "custom");
    drop(guard);
}

/// A signing key set on a trail sealed without one: the sink says so when it opens the trail
/// (an alarm, raised as a warning alert), seals the trail under the key at once, and `verify`
/// with the key accepts it, telling which part was sealed without a key. Before that start,
/// `verify` with the key fails saying what to do.
#[test]
fn a_signing_key_added_to_an_existing_trail_is_noticed_sealed_and_reported_by_part() {
    use qiflow_core::audit::AlarmKind;

    let t = trail();
    let unkeyed = |d: PathBuf| FileAuditSink::builder(d).digest_every(10);
    write_trail(t.path(), 25, 5, unkeyed);
    let before = verify_dir(t.path(), None).unwrap();
    assert_eq!(before.first_keyed, None);
    let last_unkeyed = before.unkeyed_until.unwrap();
    assert_eq!(Some(last_unkeyed), before.last_seq);
    // The key given before the service started with it: fails, saying why and what to do.
    let err = verify_dir(t.path(), Some(KEY)).unwrap_err();
    assert_eq!(err.seq, 10, "the first unkeyed digest: {err}");
    assert!(err.reason.contains("no keyed digest follows"), "{err}");
    assert!(
        err.reason.contains(&format!(
            "the digests from seq 10 to {last_unkeyed} are unkeyed"
        )),
        "{err}"
    );
    assert!(
        err.reason.contains("start the service once with the key"),
        "{err}"
    );

    // The service starts with the key: an alarm, and a keyed digest right away.
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, AlarmKind::SigningKeyAdded);
    assert_eq!(found[0].kind.alert_name(), "audit_signing_key_added");
    assert!(
        found[0]
            .message
            .contains(&format!("sealed without a key up to seq {last_unkeyed}")),
        "{}",
        found[0].message
    );
    assert_eq!(sink.next_seq(), last_unkeyed + 2, "one `key` digest");
    let v = verify_dir(t.path(), Some(KEY)).unwrap();
    assert_eq!(v.unkeyed_until, Some(last_unkeyed));
    assert_eq!(v.first_keyed.as_ref().map(|k| k.0), Some(last_unkeyed + 1));
    let key_line = lines(&segments(t.path())[0]).pop().unwrap();
    assert!(key_line.contains("\"reason\":\"key\""), "{key_line}");
    // It goes on keyed, and verifies whole.
    sink.append(&(25..40).map(event).collect::<Vec<_>>())
        .unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    drop(sink);
    let v = verify_dir(t.path(), Some(KEY)).unwrap();
    assert_eq!(v.records, 40);
    assert_eq!(v.unkeyed_until, Some(last_unkeyed));
    // A second start with the same key has nothing to say.
    let mut sink = keyed(t.path().to_owned()).open().unwrap();
    assert!(alarms(&mut sink).is_empty());
    drop(sink);

    // The key removed: an alarm (an error alert), and `verify` with the key names the first
    // unkeyed digest after keyed ones.
    let mut sink = unkeyed(t.path().to_owned()).open().unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, AlarmKind::SigningKeyChanged);
    assert!(
        found[0]
            .message
            .contains("no [audit] signing_key is set now"),
        "{}",
        found[0].message
    );
    sink.append(&[event(40)]).unwrap();
    sink.seal(qiflow_core::audit::SealReason::Flush).unwrap();
    drop(sink);
    let err = verify_dir(t.path(), Some(KEY)).unwrap_err();
    assert!(
        err.reason
            .contains("digest is not keyed, but the digests before it are"),
        "{err}"
    );
}

/// A trail keyed with one key, opened with another: the sink says the key changed.
#[test]
fn a_changed_signing_key_is_noticed_when_the_trail_opens() {
    use qiflow_core::audit::AlarmKind;

    let t = trail();
    write_trail(t.path(), 12, 4, keyed);
    let mut sink = FileAuditSink::builder(t.path().to_owned())
        .signing_key(Some(b"another key of some length"))
        .open()
        .unwrap();
    let found = alarms(&mut sink);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, AlarmKind::SigningKeyChanged);
    assert_eq!(found[0].kind.alert_name(), "audit_signing_key_changed");
    assert!(
        found[0]
            .message
            .contains("is not signed with the configured [audit] signing_key"),
        "{}",
        found[0].message
    );
    // Nothing written at open for a changed key.
    assert_eq!(
        sink.next_seq(),
        verify_dir(t.path(), Some(KEY)).unwrap().last_seq.unwrap() + 1
    );
}

/// Through the observer: the alarm is logged and raised as a warning alert at start.
#[test]
fn a_signing_key_added_through_the_observer_raises_a_warning_alert() {
    let t = trail();
    write_trail(t.path(), 5, 5, |d| {
        FileAuditSink::builder(d).digest_every(10)
    });
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = t.path().to_owned();
    config.audit.signing_key = Some(qiflow_core::secret::Secret::new(
        String::from_utf8(KEY.to_vec()).unwrap(),
    ));
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let found = (0..400)
        .find_map(|_| {
            let found = observer
                .alerts()
                .view()
                .active
                .into_iter()
                .find(|a| a.alert.name == "audit_signing_key_added");
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            found
        })
        .expect("an audit_signing_key_added alert");
    assert_eq!(found.alert.level(), qiflow_core::alert::AlertLevel::Warning);
    assert!(
        found.alert.description.contains("sealed without a key"),
        "{:?}",
        found.alert
    );
    drop(guard);
    let v = verify_dir(t.path(), Some(KEY)).unwrap();
    assert!(
        v.unkeyed_until.is_some() && v.first_keyed.is_some(),
        "{v:?}"
    );
}

/// `qiflow audit verify` on a trail whose key was added later: before the service started with
/// the key it fails saying what to do; after, it passes and says which part is keyed.
#[test]
fn cli_verify_says_which_part_of_the_trail_is_keyed() {
    let t = trail();
    write_trail(t.path(), 20, 5, |d| {
        FileAuditSink::builder(d).digest_every(10)
    });
    let config = t.path().with_file_name("qiflow.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\ndir = {:?}\nsigning_key = {:?}\n",
            t.path().display().to_string(),
            std::str::from_utf8(KEY).unwrap()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let (code, text) = qiflow(&["audit", "verify", "--config", c]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no keyed digest follows"), "{text}");
    // Without the key: fine, and said to be unkeyed.
    let d = t.path().to_str().unwrap();
    let (code, text) = qiflow(&["audit", "verify", d]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("unkeyed: no digest is keyed (seq 0..=21)"),
        "{text}"
    );

    drop(keyed(t.path().to_owned()).open().unwrap());
    let (code, text) = qiflow(&["audit", "verify", "--config", c]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("keyed: digests from seq 22 (")
            && text.contains("seq 0..=21 were sealed without a key"),
        "{text}"
    );
}

#[test]
fn a_durable_record_does_not_wait_out_the_flush_interval() {
    let dir = trail();
    let mut config = quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.dir.clone();
    // A batch would gather for a minute; a caller waiting for its record must not.
    config.audit.flush_interval = Duration::from_secs(60);
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..3 {
        let stored = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), observer.audit_durable(event(i))).await
        });
        assert!(
            matches!(stored, Ok(Ok(()))),
            "record {i} not stored within 20 s of a 60 s flush interval: {stored:?}"
        );
    }
    // It is in the trail (the lines on disk), before any flush or shutdown.
    let on_disk: usize = segments(&dir.dir)
        .iter()
        .map(|s| lines(s).iter().filter(|l| l.contains("\"doc/")).count())
        .sum();
    assert_eq!(on_disk, 3);
    drop(guard);
}
