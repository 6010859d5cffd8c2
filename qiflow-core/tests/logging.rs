//! Logging end to end: real files in temp dirs, through the pipeline and the rotating file.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use qiflow_core::config::{Compression, OverflowPolicy, Rotation};
use qiflow_core::{Config, Guard, Observer};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

fn config(dir: &Path) -> Config {
    let mut c = qiflow_core::test::quiet_config();
    c.logging.dir = dir.to_path_buf();
    c.logging.rotation = Rotation::Never;
    c.logging.compress = Compression::None;
    c
}

fn start(config: Config) -> (Observer, Guard, Dispatch) {
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .flush_budget(Duration::from_secs(30))
        .build()
        .unwrap();
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(observer.log_layer()));
    (observer, guard, dispatch)
}

/// Every line in the active file and the archives (gzip decompressed), in no particular order.
fn all_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Temporary files, and the lock that keeps a second instance out of the directory.
        if name.ends_with(".tmp") || name == ".qiflow.lock" {
            continue;
        }
        let mut text = String::new();
        if name.ends_with(".gz") {
            flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = std::fs::read_to_string(&path).unwrap();
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends with a torn line"
        );
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}

fn json_lines(dir: &Path) -> Vec<serde_json::Value> {
    all_lines(dir)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn lines_carry_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.service.instance = "web-7".into();
    let (_observer, guard, dispatch) = start(c);
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("request", request_id = "req-1", route = "/users/{id}");
        let _entered = span.enter();
        let inner = tracing::info_span!("db", table = "users");
        let _inner = inner.enter();
        // A field named like the instance does not replace it: it becomes `fields.instance`.
        tracing::warn!(target: "app::api", user_id = 42u64, ok = true, ratio = 0.5, instance = "forged", "slow query");
    });
    drop(guard);
    let lines = json_lines(dir.path());
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    let ts = l["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-28T13:04:05.123Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
    assert_eq!(l["level"], "WARN");
    assert_eq!(l["target"], "app::api");
    assert_eq!(l["instance"], "web-7");
    assert_eq!(l["fields.instance"], "forged");
    assert_eq!(l["message"], "slow query");
    assert_eq!(l["user_id"], 42);
    assert_eq!(l["ok"], true);
    assert_eq!(l["ratio"], 0.5);
    assert_eq!(l["request_id"], "req-1");
    assert_eq!(l["route"], "/users/{id}");
    assert_eq!(l["table"], "users");
}

#[test]
fn hostile_values_never_forge_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_observer, guard, dispatch) = start(config(dir.path()));
    let hostile = [
        "a\nb",
        "a\r\nb",
        "\r",
        "x\u{2028}y\u{2029}z",
        "\x1b[31mred\x1b[0m",
        "\x1b]0;title\x07",
        "nul\0",
        "{\"level\":\"ERROR\"}\n{\"forged\":true}",
    ];
    tracing::dispatcher::with_default(&dispatch, || {
        for value in hostile {
            tracing::info!(value, "message {value}");
        }
    });
    drop(guard);
    let raw = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert!(!raw.contains(['\r', '\0', '\x1b', '\u{2028}', '\u{2029}']));
    let lines = json_lines(dir.path());
    assert_eq!(lines.len(), hostile.len());
    for (line, value) in lines.iter().zip(hostile) {
        assert_eq!(line["value"], value);
        assert_eq!(line["message"], format!("message {value}"));
        assert!(line.get("forged").is_none());
    }
}

#[test]
fn sensitive_fields_are_redacted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.logging.redact = vec!["ssn".into()];
    let (_observer, guard, dispatch) = start(c);
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("req", authorization = "Bearer CANARY-1");
        let _e = span.enter();
        tracing::info!(
            password = "CANARY-2",
            passwd = "CANARY-3",
            client_secret = "CANARY-4",
            access_token = "CANARY-5",
            cookie = "CANARY-6",
            api_key = "CANARY-7",
            customer_ssn = "CANARY-8",
            user = "ada",
            "login"
        );
    });
    drop(guard);
    let raw = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert!(!raw.contains("CANARY"), "{raw}");
    let line = &json_lines(dir.path())[0];
    for key in [
        "password",
        "passwd",
        "client_secret",
        "access_token",
        "cookie",
        "api_key",
        "customer_ssn",
        "authorization",
    ] {
        assert_eq!(line[key], "[REDACTED]", "{key}");
    }
    assert_eq!(line["user"], "ada");
}

#[test]
fn a_huge_field_is_capped_at_a_utf8_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (_observer, guard, dispatch) = start(config(dir.path()));
    let huge = "é".repeat(512 * 1024); // 1 MiB
    tracing::dispatcher::with_default(&dispatch, || tracing::info!(body = huge.as_str(), "big"));
    drop(guard);
    let line = &json_lines(dir.path())[0];
    let body = line["body"].as_str().unwrap();
    assert!(
        body.len() <= qiflow_core::logging::FIELD_CAP + 64,
        "{}",
        body.len()
    );
    assert!(
        body.contains("…[truncated "),
        "{}",
        &body[body.len() - 40..]
    );
}

#[test]
fn the_guard_writes_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (observer, guard, dispatch) = start(config(dir.path()));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..20_000u32 {
            tracing::info!(i, "queued");
        }
    });
    let report = guard.shutdown();
    let logs = report.stats.iter().find(|s| s.name == "logs").unwrap();
    assert_eq!(logs.submitted, 20_000);
    assert_eq!(logs.delivered, 20_000, "{logs:?}");
    assert_eq!(json_lines(dir.path()).len(), 20_000);
    drop(observer);
}

#[test]
fn drop_mode_counts_exactly_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.logging.overflow = OverflowPolicy::Drop;
    c.logging.queue_capacity = 16;
    let (observer, guard, dispatch) = start(c);
    std::thread::scope(|scope| {
        for t in 0..4u32 {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..20_000u32 {
                        tracing::info!(t, i, "flood");
                    }
                })
            });
        }
    });
    let report = guard.shutdown();
    let logs = report
        .stats
        .iter()
        .find(|s| s.name == "logs")
        .unwrap()
        .clone();
    let lines = json_lines(dir.path());
    let written = lines.iter().filter(|l| l["message"] == "flood").count() as u64;
    assert_eq!(logs.submitted, 80_000);
    assert_eq!(written + logs.dropped(), 80_000, "{logs:?}");
    assert_eq!(written, logs.delivered);
    if logs.dropped() > 0 {
        // Drops are reported in the log itself.
        let reported: u64 = lines
            .iter()
            .filter(|l| l["target"] == "qiflow::logging")
            .map(|l| l["dropped"].as_u64().unwrap())
            .sum();
        assert!(reported > 0 && reported <= logs.dropped());
    }
    drop(observer);
}

#[test]
fn eight_threads_through_50_rotations_with_gzip_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.logging.max_size = 256 * 1024;
    c.logging.max_backups = 10_000;
    c.logging.compress = Compression::Gzip;
    let (observer, guard, dispatch) = start(c);
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 100_000;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..PER_THREAD {
                        tracing::info!(t, i, "line");
                    }
                })
            });
        }
    });
    let report = guard.shutdown();
    let logs = report
        .stats
        .iter()
        .find(|s| s.name == "logs")
        .unwrap()
        .clone();
    assert_eq!(logs.delivered, THREADS * PER_THREAD, "{logs:?}");
    drop(observer);
    // Wait for the background compressor to finish the last archives: every file but the
    // active one ends in `.gz` (no `.tmp`, no archive still uncompressed).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(dir.path()).unwrap().any(|e| {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        name != "app.log" && !name.ends_with(".gz")
    }) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let archives = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "app.log")
        .count();
    assert!(archives >= 50, "only {archives} rotations");
    let mut seen = HashSet::new();
    for line in all_lines(dir.path()) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let key = (v["t"].as_u64().unwrap(), v["i"].as_u64().unwrap());
        assert!(seen.insert(key), "duplicate {key:?}");
    }
    assert_eq!(seen.len() as u64, THREADS * PER_THREAD);
}

#[test]
fn an_unwritable_directory_never_panics_and_counts_losses() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where the log directory should be").unwrap();
    let (_observer, guard, dispatch) = start(config(&blocker));
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..100u32 {
            tracing::info!(i, "nowhere to go");
        }
    });
    let report = guard.shutdown();
    let logs = report.stats.iter().find(|s| s.name == "logs").unwrap();
    assert_eq!(logs.submitted, 100);
    assert_eq!(logs.dropped(), 100, "{logs:?}");
}

/// A real full disk: a 1 MiB tmpfs. Needs root and mount permission, so it is run by `.ci/run`
/// (as root) with `--ignored`; run by hand without them, it fails saying so.
#[test]
#[ignore = "needs root to mount a tmpfs; run by .ci/run (cargo test --test logging -- --ignored --exact a_full_disk_counts_losses_and_recovers)"]
fn a_full_disk_counts_losses_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tiny");
    std::fs::create_dir(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "cannot mount a tmpfs at {}: this test needs root and mount permission (CI runs it as \
         root from .ci/run); the injected-error unit tests in logging::rotate cover the same path \
         without root",
        mount.display()
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let filler = mount.join("filler");
    let mut c = config(&mount);
    c.logging.max_size = 64 * 1024 * 1024;
    let (observer, guard, dispatch) = start(c);
    // Fill the disk, leaving no room.
    let _ = std::fs::write(&filler, vec![b'x'; 1024 * 1024]);
    let payload = "p".repeat(200);
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..2_000u32 {
            tracing::info!(i, payload = payload.as_str(), "while full");
        }
    });
    assert!(observer.flush(Duration::from_secs(10)));
    let during = observer
        .stats()
        .into_iter()
        .find(|s| s.name == "logs")
        .unwrap();
    assert!(during.dropped_sink_error > 0, "{during:?}");
    assert_eq!(during.delivered + during.dropped(), 2_000, "{during:?}");
    // Space returns: writing resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..100u32 {
            tracing::info!(i, "after recovery");
        }
    });
    let report = guard.shutdown();
    let logs = report.stats.iter().find(|s| s.name == "logs").unwrap();
    assert_eq!(logs.delivered + logs.dropped(), 2_100, "{logs:?}");
    let lines = json_lines(&mount);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["message"] == "after recovery")
            .count(),
        100
    );
    let written_while_full = lines
        .iter()
        .filter(|l| l["message"] == "while full")
        .count() as u64;
    assert_eq!(written_while_full, during.delivered);
}

/// The child side of `a_sigkill_loses_no_flushed_line`: run only by that test, through
/// `--ignored --exact`, with `QIFLOW_TEST_CHILD_DIR` set.
#[test]
#[ignore = "entry point of a child process; run by a_sigkill_loses_no_flushed_line"]
fn child_writer() {
    use std::io::Write as _;
    let dir = std::env::var("QIFLOW_TEST_CHILD_DIR").unwrap_or_else(|_| {
        panic!(
            "child_writer is the child process of a_sigkill_loses_no_flushed_line, which runs it \
             with QIFLOW_TEST_CHILD_DIR set; run that test instead"
        )
    });
    let mut c = config(Path::new(&dir));
    c.logging.max_size = 64 * 1024;
    c.logging.max_backups = 100_000;
    c.logging.compress = Compression::Gzip;
    let (observer, _guard, dispatch) = start(c);
    let mut out = std::io::stdout().lock();
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0u64.. {
            tracing::info!(
                i,
                pad = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "child line"
            );
            if i % 500 == 499 {
                assert!(observer.flush(Duration::from_secs(10)));
                writeln!(out, "flushed {i}").unwrap();
                out.flush().unwrap();
            }
        }
    });
}

#[test]
fn a_sigkill_loses_no_flushed_line() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QIFLOW_TEST_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last_flushed = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("flushed ") {
            let n: u64 = n.trim().parse().unwrap();
            last_flushed = Some(n);
            if n >= 20_000 {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    child.wait().unwrap();
    let last_flushed = last_flushed.expect("the child never reported a flush");

    // Every archive is whole (a `.tmp` left mid-compression does not count), every line parses,
    // and every line flushed before the kill is there.
    let seen: HashSet<u64> = json_lines(dir.path())
        .iter()
        .map(|l| l["i"].as_u64().unwrap())
        .collect();
    let missing: Vec<u64> = (0..=last_flushed)
        .filter(|i| !seen.contains(i))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "lines flushed before the kill are missing: {missing:?}…"
    );

    // The next start continues: leftovers are recovered and new lines are appended.
    let before = std::fs::read_to_string(dir.path().join("app.log")).unwrap_or_default();
    let (_observer, guard, dispatch) = start(config(dir.path()));
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("after restart"));
    drop(guard);
    let after = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert!(after.starts_with(&before));
    assert!(
        after.ends_with("\"message\":\"after restart\"}\n"),
        "{}",
        &after[after.len().saturating_sub(200)..]
    );
}

/// Events inside a request (the `request` span, a child span, another thread that entered the
/// span) carry the request's fields; the event's own fields win; the query is redacted; the user
/// id set later is there too. Both formats.
#[test]
fn events_in_a_request_carry_its_fields() {
    use qiflow_core::request::{RequestInfo, RequestOutcome};

    for format in [
        qiflow_core::config::LogFormat::Json,
        qiflow_core::config::LogFormat::Pretty,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.logging.format = format;
        let (observer, guard, dispatch) = start(config);
        tracing::dispatcher::with_default(&dispatch, || {
            let in_flight = observer.begin_request(
                RequestInfo::new("GET", "/users/42")
                    .with_route("/users/{id}")
                    .with_request_id("req-7")
                    .with_query("page=2&token=CANARY")
                    .with_host("shop.test"),
            );
            let span = in_flight.span().clone();
            span.in_scope(|| {
                tracing::info!(target: "app", "before the user is known");
                assert!(qiflow_core::capture::set_user_id("u-9"));
                tracing::info_span!("db", table = "users").in_scope(|| {
                    tracing::info!(target: "app", { url.path = "mine" }, "in a child span");
                });
            });
            let elsewhere = span.clone();
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    elsewhere.in_scope(|| tracing::info!(target: "app", "on another thread"));
                });
            })
            .join()
            .unwrap();
            in_flight.finish(RequestOutcome::new(200));
        });
        drop(guard);
        let lines = all_lines(dir.path());
        let find = |message: &str| {
            lines
                .iter()
                .find(|l| l.contains(message))
                .unwrap_or_else(|| panic!("no line with {message:?} in {lines:#?}"))
                .clone()
        };
        let (before, child, other) = (
            find("before the user is known"),
            find("in a child span"),
            find("on another thread"),
        );
        assert!(!lines.iter().any(|l| l.contains("CANARY")), "{lines:#?}");
        match format {
            qiflow_core::config::LogFormat::Json => {
                for line in [&before, &child, &other] {
                    let l: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(l["request_id"], "req-7", "{line}");
                    assert_eq!(l["http.request.method"], "GET", "{line}");
                    assert_eq!(l["http.route"], "/users/{id}", "{line}");
                    assert_eq!(l["url.query"], "page=2&token=[REDACTED]", "{line}");
                    assert_eq!(l["server.address"], "shop.test", "{line}");
                }
                let child: serde_json::Value = serde_json::from_str(&child).unwrap();
                assert_eq!(child["url.path"], "mine", "the event's own field wins");
                assert_eq!(child["table"], "users");
                assert_eq!(child["enduser.id"], "u-9");
                let before: serde_json::Value = serde_json::from_str(&before).unwrap();
                assert_eq!(before["url.path"], "/users/42");
                assert!(before.get("enduser.id").is_none(), "{before}");
                let other: serde_json::Value = serde_json::from_str(&other).unwrap();
                assert_eq!(other["enduser.id"], "u-9");
            }
            _ => {
                for line in [&before, &child, &other] {
                    for field in [
                        "request_id=req-7",
                        "http.request.method=GET",
                        "http.route=/users/{id}",
                        "url.query=\"page=2&token=[REDACTED]\"",
                        "server.address=shop.test",
                    ] {
                        assert!(line.contains(field), "{field} missing in {line}");
                    }
                }
                assert!(child.contains("url.path=mine") && !child.contains("/users/42"));
                assert!(child.contains("enduser.id=u-9"), "{child}");
                assert!(before.contains("url.path=/users/42"), "{before}");
            }
        }
    }
}
