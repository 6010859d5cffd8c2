//! Scheduled jobs (`[[jobs]]`, `Observer::job`): states with a manual clock, alerts once per
//! incident through a real webhook receiver, the state file across a restart, the backup check,
//! HTTP check-ins and their access rules, and the configuration's key paths.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use qiflow_core::Observer;
use qiflow_core::admin::AdminRequest;
use qiflow_core::jobs::JobState;
use qiflow_core::test::{ADMIN_TOKEN, ManualClock};
use support::{Receiver, config, wait_until};

const MIN: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A write token named `writer` (the test token) and a read token named `viewer`.
fn tokens(writer: &str) -> Vec<qiflow_core::config::AdminToken> {
    vec![
        qiflow_core::config::AdminToken::new(
            writer,
            ADMIN_TOKEN,
            qiflow_core::config::TokenScope::Write,
        ),
        qiflow_core::config::AdminToken::new(
            "viewer",
            "viewer-token-0123456789abcdef",
            qiflow_core::config::TokenScope::Read,
        ),
    ]
}

/// An observer whose alerts go to `receiver`, with `jobs_toml` appended, on a manual clock.
fn observer(
    receiver: &Receiver,
    jobs_toml: &str,
    clock: Arc<ManualClock>,
    state_dir: Option<&std::path::Path>,
) -> (Observer, qiflow_core::Guard) {
    let mut config = config(&format!(
        "[alerts]\ngroup_wait = \"0s\"\ncooldown = \"24h\"\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n{jobs_toml}",
        receiver.url("/hook")
    ));
    if let Some(dir) = state_dir {
        config.service.state_dir = dir.to_path_buf();
    }
    config.admin.tokens = tokens("ops");
    Observer::builder(config)
        .install_global(false)
        .clock(clock)
        .build()
        .unwrap()
}

const HOURLY: &str =
    "[[jobs]]\nname = \"sync\"\nevery = \"1h\"\ngrace = \"5m\"\nlabels = { team = \"db\" }\n";

/// The alert notifications the receiver got: (status, alertname) of each alert in each body.
fn notifications(receiver: &Receiver) -> Vec<(String, String)> {
    receiver
        .received()
        .iter()
        .flat_map(|r| {
            let body = r.json();
            body["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|a| {
                    (
                        a["status"].as_str().unwrap_or("").to_owned(),
                        a["name"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_late_then_down_job_alerts_once_and_resolves_once_when_it_succeeds_again() {
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    let (observer, _guard) = observer(&receiver, HOURLY, clock.clone(), None);
    let job = observer.job("sync");
    job.start().success();
    observer.jobs().evaluate();
    assert_eq!(job.state(), JobState::Up);
    clock.advance(64 * MIN);
    observer.jobs().evaluate();
    assert_eq!(job.state(), JobState::Up, "within grace");
    clock.advance(2 * MIN);
    observer.jobs().evaluate();
    assert_eq!(job.state(), JobState::Late);
    assert!(wait_until(WAIT, || receiver.count() >= 1));
    clock.advance(60 * MIN);
    observer.jobs().evaluate();
    assert_eq!(job.state(), JobState::Down);
    job.start().success();
    observer.jobs().evaluate();
    assert_eq!(job.state(), JobState::Up);
    assert!(observer.flush(WAIT));
    assert!(
        wait_until(WAIT, || notifications(&receiver).len() >= 2),
        "{:?}",
        notifications(&receiver)
    );
    let got = notifications(&receiver);
    let firing: Vec<_> = got.iter().filter(|(s, _)| s == "firing").collect();
    let resolved: Vec<_> = got.iter().filter(|(s, _)| s == "resolved").collect();
    assert_eq!(firing.len(), 1, "one alert for the incident: {got:?}");
    assert_eq!(firing[0].1, "job_late");
    assert_eq!(resolved.len(), 1, "one resolve: {got:?}");
    let body = receiver.received()[0].json();
    let alert = &body["alerts"][0];
    assert_eq!(alert["labels"]["job"], "sync");
    assert_eq!(alert["labels"]["team"], "db");
    assert!(
        alert["description"].as_str().unwrap().contains("every 1h"),
        "{alert}"
    );
    let metrics = observer.render_metrics();
    for line in [
        "qiflow_job_runs_total{job=\"sync\",outcome=\"success\"} 2",
        "qiflow_job_state{job=\"sync\",state=\"up\"} 1",
        "qiflow_job_state{job=\"sync\",state=\"down\"} 0",
        "qiflow_job_max_interval_seconds{job=\"sync\"} 3900",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("qiflow_job_last_success_timestamp_seconds{job=\"sync\"} "));
    assert!(metrics.contains("qiflow_job_duration_seconds_bucket{job=\"sync\",le=\"1\"} 2"));
}

#[test]
fn a_failed_a_dropped_and_a_timed_out_run_each_fail_the_job() {
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    let (observer, _guard) = observer(
        &receiver,
        "[[jobs]]\nname = \"report\"\nschedule = \"0 * * * *\"\nmax_runtime = \"10m\"\n",
        clock.clone(),
        None,
    );
    let job = observer.job("report");
    job.start().fail("the database refused the connection");
    assert_eq!(job.state(), JobState::Failed);
    let view = observer.jobs().view();
    assert_eq!(
        view[0].last_error.as_deref(),
        Some("the database refused the connection")
    );
    job.start().success();
    assert_eq!(job.state(), JobState::Up);
    drop(job.start());
    assert_eq!(job.state(), JobState::Failed);
    assert!(
        observer.jobs().view()[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("dropped")
    );
    let _run = job.start();
    assert_eq!(job.state(), JobState::Running);
    clock.advance(11 * MIN);
    observer.jobs().evaluate();
    assert_eq!(job.state(), JobState::Failed);
    let metrics = observer.render_metrics();
    for line in [
        "qiflow_job_runs_total{job=\"report\",outcome=\"failure\"} 2",
        "qiflow_job_runs_total{job=\"report\",outcome=\"timeout\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn run_wraps_a_future_and_an_error_fails_the_run() {
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    let (observer, _guard) = observer(&receiver, "", clock, None);
    let job = observer.job("adhoc.export");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ok: Result<u32, String> = rt.block_on(job.run(async { Ok(7) }));
    assert_eq!(ok, Ok(7));
    assert_eq!(job.state(), JobState::Up);
    let err: Result<u32, String> = rt.block_on(job.run(async { Err("disk full".to_owned()) }));
    assert!(err.is_err());
    assert_eq!(job.state(), JobState::Failed);
    let view = observer.jobs().view();
    assert!(!view[0].declared);
    assert_eq!(view[0].schedule, None);
    assert_eq!(view[0].last_error.as_deref(), Some("disk full"));
    // A bad name is refused, and its check-ins do nothing.
    let bad = observer.job("no spaces/please");
    assert_eq!(bad.name(), None);
    bad.start().success();
    assert_eq!(observer.jobs().view().len(), 1);
}

#[test]
fn the_state_file_carries_a_job_across_a_restart_and_missed_runs_are_forgiven_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    {
        let (observer, guard) = observer(&receiver, HOURLY, clock.clone(), Some(dir.path()));
        observer.job("sync").start().size(4096).success();
        observer.jobs().evaluate();
        drop(guard);
    }
    let file = dir.path().join("jobs.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"sync\""), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Down for three hours: two runs missed meanwhile.
    clock.advance(180 * MIN);
    {
        let (observer, _guard) = observer(&receiver, HOURLY, clock.clone(), Some(dir.path()));
        observer.jobs().evaluate();
        let view = &observer.jobs().view()[0];
        assert_eq!(view.state, JobState::Up, "{view:?}");
        assert_eq!(view.last_size, Some(4096));
    }
    let strict = format!("{HOURLY}alert_missed_while_down = true\n");
    let (observer, _guard) = observer(&receiver, &strict, clock.clone(), Some(dir.path()));
    observer.jobs().evaluate();
    assert_eq!(observer.job("sync").state(), JobState::Down);
}

#[test]
fn a_backup_that_leaves_an_empty_or_broken_file_fails() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let pattern = dir.path().join("db-*.sql.gz");
    let toml = format!(
        "[[jobs]]\nname = \"backup\"\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nexpect_file = \"{}\"\nmin_size = \"20B\"\nmax_age = \"1h\"\n",
        pattern.display()
    );
    let (observer, _guard) = observer(&receiver, &toml, clock, None);
    let job = observer.job("backup");
    let settled = |job: &qiflow_core::jobs::Job| {
        assert!(wait_until(WAIT, || job.state() != JobState::Running));
        job.state()
    };
    // No file at all.
    job.start().success();
    assert_eq!(settled(&job), JobState::Failed);
    assert!(
        observer.jobs().view()[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no file matches")
    );
    // A real gzip archive.
    let good = dir.path().join("db-1.sql.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b"INSERT INTO t VALUES (1);\n".repeat(200))
        .unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&good, &bytes).unwrap();
    job.start().success();
    assert_eq!(settled(&job), JobState::Up);
    // The next one is empty.
    std::thread::sleep(Duration::from_millis(20));
    let empty = dir.path().join("db-2.sql.gz");
    std::fs::write(&empty, b"").unwrap();
    job.start().success();
    assert_eq!(settled(&job), JobState::Failed);
    let why = observer.jobs().view()[0].last_error.clone().unwrap();
    assert!(
        why.contains("db-2.sql.gz") && why.contains("min_size"),
        "{why}"
    );
    // Then one cut short: the gzip stream does not decode to its end.
    std::thread::sleep(Duration::from_millis(20));
    let cut = dir.path().join("db-3.sql.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    job.start().success();
    assert_eq!(settled(&job), JobState::Failed);
    let why = observer.jobs().view()[0].last_error.clone().unwrap();
    assert!(why.contains("does not read to its end"), "{why}");
}

#[test]
fn http_check_ins_need_a_write_token_are_audited_and_show_in_the_view() {
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("");
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    config.admin.tokens = tokens("cron");
    drop(receiver);
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .clock(clock)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |method: &str, path: &str, token: Option<&str>, body: &str| {
        let mut request = AdminRequest::new(method, path).body(body.as_bytes().to_vec());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        rt.block_on(observer.admin(request))
    };
    let path = "/qiflow/api/jobs/pg-dump/start";
    assert_eq!(ask("POST", path, None, "").status(), 401);
    assert_eq!(
        ask("POST", path, Some("viewer-token-0123456789abcdef"), "").status(),
        403
    );
    assert_eq!(ask("GET", path, Some(ADMIN_TOKEN), "").status(), 405);
    assert_eq!(
        ask(
            "POST",
            "/qiflow/api/jobs/pg-dump/finish",
            Some(ADMIN_TOKEN),
            ""
        )
        .status(),
        404
    );
    let started = ask("POST", path, Some(ADMIN_TOKEN), "");
    assert_eq!(started.status(), 200, "{}", started.text());
    let view: serde_json::Value = serde_json::from_slice(started.body()).unwrap();
    assert_eq!(view["state"], "running");
    let bad = ask(
        "POST",
        "/qiflow/api/jobs/pg-dump/success",
        Some(ADMIN_TOKEN),
        "{\"bytes\": 1}",
    );
    assert_eq!(bad.status(), 400);
    assert!(bad.text().contains("message"), "{}", bad.text());
    let done = ask(
        "POST",
        "/qiflow/api/jobs/pg-dump/fail",
        Some(ADMIN_TOKEN),
        "{\"exit_code\": 2, \"message\": \"pg_dump: connection refused\"}",
    );
    assert_eq!(done.status(), 200, "{}", done.text());
    let list = ask(
        "GET",
        "/qiflow/api/jobs",
        Some("viewer-token-0123456789abcdef"),
        "",
    );
    assert_eq!(list.status(), 200);
    let jobs: serde_json::Value = serde_json::from_slice(list.body()).unwrap();
    assert_eq!(jobs[0]["name"], "pg-dump");
    assert_eq!(jobs[0]["state"], "failed");
    assert_eq!(jobs[0]["last_exit_code"], 2);
    assert_eq!(jobs[0]["last_error"], "pg_dump: connection refused");
    assert!(observer.flush(WAIT));
    let mut query = qiflow_core::audit::AuditQuery::new();
    query.actor = Some("cron".into());
    let page = rt.block_on(observer.audit_query(&query)).unwrap();
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["qiflow.job.fail", "qiflow.job.success", "qiflow.job.start"],
        "newest first; the refused success is recorded as a failure"
    );
    assert_eq!(page.records[0].resource, "job/pg-dump");
}

#[test]
fn a_bad_schedule_or_time_zone_is_refused_at_load_naming_its_key() {
    for (toml, key) in [
        (
            "[[jobs]]\nname = \"backup\"\nschedule = \"0 25 * * *\"\n",
            "jobs.backup.schedule",
        ),
        (
            "[[jobs]]\nname = \"backup\"\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Atlantis\"\n",
            "jobs.backup.timezone",
        ),
        ("[[jobs]]\nname = \"backup\"\n", "jobs.backup.schedule"),
        ("[[jobs]]\nname = \"a b\"\nevery = \"1h\"\n", "jobs.0.name"),
        (
            "[[jobs]]\nname = \"x\"\nevery = \"1h\"\n[[jobs]]\nname = \"x\"\nevery = \"2h\"\n",
            "jobs.x.name",
        ),
        (
            "[[jobs]]\nname = \"x\"\nevery = \"1h\"\nexpect_file = \"/var/[backups\"\n",
            "jobs.x.expect_file",
        ),
        (
            "[[jobs]]\nname = \"x\"\nevery = \"1h\"\nalert_channels = [\"pager\"]\n",
            "jobs.x.alert_channels",
        ),
    ] {
        let error = qiflow_core::config::Loader::new()
            .toml_str(toml)
            .env(Vec::<(String, String)>::new())
            .load()
            .unwrap_err()
            .to_string();
        assert!(error.contains(key), "{key} in: {error}");
    }
}

#[test]
fn a_job_can_be_declared_from_the_environment() {
    let config = qiflow_core::config::Loader::new()
        .toml_str("")
        .env(vec![
            ("QIFLOW__JOBS__0__NAME".to_owned(), "cleanup".to_owned()),
            ("QIFLOW__JOBS__0__EVERY".to_owned(), "15m".to_owned()),
        ])
        .load()
        .unwrap();
    assert_eq!(config.jobs.len(), 1);
    assert_eq!(config.jobs[0].name, "cleanup");
    assert_eq!(config.jobs[0].every, Some(Duration::from_secs(900)));
}

#[test]
fn alert_channels_send_a_jobs_alerts_to_those_channels_only() {
    let all = Receiver::start(vec![]);
    let oncall = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    let toml = format!(
        "[[alerts.channels]]\nkind = \"webhook\"\nname = \"oncall\"\nurl = \"{}\"\n{HOURLY}alert_channels = [\"oncall\"]\n",
        oncall.url("/oncall")
    );
    let (observer, _guard) = observer(&all, &toml, clock.clone(), None);
    observer.job("sync").start().fail("exit 1");
    observer.jobs().evaluate();
    // An alert of another source still goes to every channel.
    observer.alert(qiflow_core::alert::Alert::new(
        "disk_full",
        qiflow_core::alert::AlertLevel::Error,
    ));
    assert!(observer.flush(WAIT));
    assert!(wait_until(WAIT, || {
        notifications(&oncall).len() >= 2 && !notifications(&all).is_empty()
    }));
    let names = |r: &Receiver| -> Vec<String> {
        notifications(r).into_iter().map(|(_, name)| name).collect()
    };
    assert_eq!(names(&all), ["disk_full"]);
    let mut got = names(&oncall);
    got.sort();
    assert_eq!(got, ["disk_full", "job_failed"]);
}

#[test]
fn a_restart_in_the_middle_of_a_period_keeps_the_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]);
    let clock = Arc::new(ManualClock::new(t0()));
    let due_before = {
        let (observer, guard) = observer(&receiver, HOURLY, clock.clone(), Some(dir.path()));
        observer.job("sync").start().success();
        observer.jobs().evaluate();
        let due = observer.jobs().view()[0].next_due.clone().unwrap();
        drop(guard);
        due
    };
    clock.advance(30 * MIN);
    let (observer, _guard) = observer(&receiver, HOURLY, clock.clone(), Some(dir.path()));
    let view = &observer.jobs().view()[0];
    assert_eq!(view.state, JobState::Up);
    assert_eq!(view.next_due.as_deref(), Some(due_before.as_str()));
    clock.advance(36 * MIN);
    observer.jobs().evaluate();
    assert_eq!(
        observer.job("sync").state(),
        JobState::Late,
        "due + grace passed"
    );
}
