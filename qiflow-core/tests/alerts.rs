//! The alert router: dedup with cooldown and counts, restarts, grouping, rate limits, silences,
//! resolves, retries, bounded memory and exact counters. Channels are `RecordingChannel`s; time
//! is a `ManualClock`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qiflow_core::alert::{Alert, AlertChannel, AlertLevel, AlertStatus, Notification, SendError};
use qiflow_core::test::{ManualClock, RecordingChannel};
use qiflow_core::worker::BoxFuture;
use qiflow_core::{Guard, Observer};
use support::{config, wait_until};

const WAIT: Duration = Duration::from_secs(10);

fn start() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

fn build(toml: &str, clock: &Arc<ManualClock>, channel: &RecordingChannel) -> (Observer, Guard) {
    Observer::builder(config(toml))
        .install_global(false)
        .clock(clock.clone())
        .alert_channel("rec", channel.clone())
        .build()
        .unwrap()
}

fn disk(host: &str) -> Alert {
    Alert::new("disk_full", AlertLevel::Critical)
        .summary("/var is full")
        .label("host", host)
        .source("test")
}

fn metric(observer: &Observer, line_start: &str) -> f64 {
    let text = observer.render_metrics();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn ten_thousand_identical_alerts_make_one_notification_per_cooldown_with_the_count() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"0s\"\ncooldown = \"5m\"\nqueue_capacity = 20000\n",
        &clock,
        &channel,
    );
    for _ in 0..10_000 {
        observer.alert(disk("db-1"));
    }
    assert!(observer.flush(WAIT));
    let sent = channel.sent();
    assert_eq!(sent.len(), 1, "one notification within the cooldown");
    let view = observer.alerts().view();
    assert_eq!(view.active.len(), 1);
    let first = sent[0].alerts[0].count;
    assert_eq!(
        first + view.active[0].suppressed,
        10_000,
        "every repeat is counted"
    );
    assert_eq!(view.active[0].count, 10_000);

    // Still within the cooldown: nothing new.
    clock.advance(Duration::from_secs(299));
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 1);

    // The cooldown is over: the next one goes out carrying every repeat since the first.
    clock.advance(Duration::from_secs(2));
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    let sent = channel.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(first + sent[1].alerts[0].count, 10_002);
    // Counted since the first notification, all in this run.
    let second = &sent[1].alerts[0];
    assert_eq!(
        second.since,
        Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    );
    assert_eq!(second.before_restart, 0);
    assert!(
        second
            .times()
            .ends_with(" times since 2027-01-15T08:00:00Z"),
        "{}",
        second.times()
    );
    assert_eq!(observer.alerts().dropped(), 0);
    assert_eq!(
        metric(
            &observer,
            "qiflow_alerts_sent_total{channel=\"rec\",outcome=\"sent\"}"
        ),
        2.0
    );
}

#[test]
fn a_restart_within_the_cooldown_does_not_page_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/alerts.json");
    let toml = format!(
        "[alerts]\ngroup_wait = \"0s\"\ncooldown = \"10m\"\nstate_file = {:?}\n",
        state.display().to_string()
    );
    let clock = start();
    let first = RecordingChannel::new();
    {
        let (observer, guard) = build(&toml, &clock, &first);
        observer.alert(disk("db-1"));
        drop(guard);
    }
    assert_eq!(first.sent().len(), 1);
    assert!(state.exists(), "the state file is written");

    clock.advance(Duration::from_secs(60));
    let second = RecordingChannel::new();
    let (observer, guard) = build(&toml, &clock, &second);
    observer.alert(disk("db-1"));
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    assert!(
        second.sent().is_empty(),
        "redeploy within the cooldown: no page"
    );
    assert_eq!(observer.alerts().view().active[0].suppressed, 2);
    drop(guard);

    // After the cooldown, a third process sends it with the repeats held back before.
    clock.advance(Duration::from_secs(600));
    let third = RecordingChannel::new();
    let (observer, guard) = build(&toml, &clock, &third);
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    let sent = third.sent();
    assert_eq!(sent.len(), 1);
    let notice = &sent[0].alerts[0];
    assert_eq!(notice.count, 3);
    // The count says that most of it is from before the restart, and since when it counts.
    assert_eq!(notice.before_restart, 2);
    let first_sent = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(notice.since, Some(first_sent));
    assert_eq!(
        notice.times(),
        "3 times since 2027-01-15T08:00:00Z, including 2 before the last restart"
    );
    // The next one, within this run, carries nothing from before.
    clock.advance(Duration::from_secs(601));
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    let sent = third.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].alerts[0].before_restart, 0);
    assert_eq!(sent[1].alerts[0].times(), "once");
    drop(guard);
}

#[test]
fn alerts_within_group_wait_go_out_as_one_notification() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build("[alerts]\ngroup_wait = \"30s\"\n", &clock, &channel);
    for host in ["db-1", "db-2", "db-3"] {
        observer.alert(disk(host));
    }
    assert!(wait_until(WAIT, || observer.alerts().view().channels[0]
        .pending
        == 3));
    assert!(channel.sent().is_empty(), "held for group_wait");
    clock.advance(Duration::from_secs(30));
    assert!(wait_until(WAIT, || channel.sent().len() == 1));
    let n = &channel.sent()[0];
    assert_eq!(n.alerts.len(), 3);
    assert_eq!(n.service, "checkout");
    assert_eq!(observer.alerts().queued(), 0);
}

#[test]
fn group_by_sends_each_group_on_its_own_clock() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"30s\"\ngroup_by = [\"alertname\", \"host\"]\n",
        &clock,
        &channel,
    );
    let hosts = |n: &qiflow_core::alert::Notification| -> Vec<String> {
        let mut hosts: Vec<String> = n
            .alerts
            .iter()
            .map(|a| format!("{}@{}", a.alert.name, a.alert.labels["host"]))
            .collect();
        hosts.sort();
        hosts
    };
    // Two groups start now: disk_full on db-1 (two alerts, by mount) and disk_full on db-2.
    observer.alert(disk("db-1").label("mount", "/var"));
    observer.alert(disk("db-1").label("mount", "/srv"));
    observer.alert(disk("db-2"));
    assert!(wait_until(WAIT, || observer.alerts().view().channels[0]
        .pending
        == 3));
    clock.advance(Duration::from_secs(20));
    // A third group starts 20 s later: another alert name on db-1.
    observer.alert(
        Alert::new("cpu_hot", AlertLevel::Critical)
            .label("host", "db-1")
            .source("test"),
    );
    assert!(wait_until(WAIT, || observer.alerts().view().channels[0]
        .pending
        == 4));
    assert!(
        channel.sent().is_empty(),
        "every group waits for group_wait"
    );

    clock.advance(Duration::from_secs(10));
    assert!(wait_until(WAIT, || channel.sent().len() == 2));
    let mut sent: Vec<Vec<String>> = channel.sent().iter().map(hosts).collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            vec!["disk_full@db-1".to_owned(), "disk_full@db-1".to_owned()],
            vec!["disk_full@db-2".to_owned()],
        ]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(channel.sent().len(), 2, "the younger group still waits");

    clock.advance(Duration::from_secs(20));
    assert!(wait_until(WAIT, || channel.sent().len() == 3));
    assert_eq!(hosts(&channel.sent()[2]), ["cpu_hot@db-1"]);
    assert_eq!(observer.alerts().queued(), 0);
}

#[test]
fn the_guard_flush_sends_waiting_groups_at_once() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, guard) = build("[alerts]\ngroup_wait = \"1h\"\n", &clock, &channel);
    observer.alert(disk("db-1"));
    let report = guard.shutdown();
    assert!(report.timed_out.is_empty());
    assert_eq!(channel.sent().len(), 1);
}

#[test]
fn resolving_by_fingerprint_tells_the_channels_that_were_paged() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build("[alerts]\ngroup_wait = \"0s\"\n", &clock, &channel);
    let alert = disk("db-1");
    let fp = alert.fingerprint_value();
    observer.alert(alert);
    assert!(observer.flush(WAIT));
    clock.advance(Duration::from_secs(5));
    observer.alert(Alert::resolve(&fp));
    assert!(observer.flush(WAIT));
    let sent = channel.sent();
    assert_eq!(sent.len(), 2);
    let resolved = &sent[1].alerts[0];
    assert_eq!(resolved.alert.status, AlertStatus::Resolved);
    assert_eq!(
        resolved.alert.name, "disk_full",
        "filled in from the firing alert"
    );
    assert_eq!(
        resolved.alert.ends_at,
        Some(UNIX_EPOCH + Duration::from_secs(1_800_000_005))
    );
    assert!(observer.alerts().view().active.is_empty());
    // A resolve of something never seen sends nothing.
    observer.alert(disk("never").resolved());
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 2);
}

#[test]
fn silences_from_config_and_api_hold_back_matching_alerts_until_they_expire() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"0s\"\ncooldown = \"0s\"\n[[alerts.silences]]\nmatchers = { host = \"db-*\" }\nexpires = \"2030-01-01T00:00:00Z\"\ncomment = \"maintenance\"\n",
        &clock,
        &channel,
    );
    observer.alert(disk("db-1"));
    observer.alert(disk("web-1"));
    assert!(observer.flush(WAIT));
    let sent = channel.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].alerts[0].alert.labels["host"], "web-1");

    let until = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 3600);
    let silence = observer
        .alerts()
        .silence(
            BTreeMap::from([("alertname".into(), "disk_*".into())]),
            until,
            "all disks",
        )
        .unwrap();
    observer.alert(disk("web-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 1, "silenced by the API silence");
    let view = observer.alerts().view();
    assert_eq!(view.silenced.len(), 2);
    assert!(view.active.iter().all(|a| a.silenced));

    // Removing the API silence lets web-1 through again; db-1 stays under the config one.
    assert!(observer.alerts().unsilence(&silence.id));
    observer.alert(disk("web-1"));
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 2);

    // An expired silence ends by itself.
    observer
        .alerts()
        .silence(
            BTreeMap::from([("host".into(), "web-1".into())]),
            clock_now(&clock) + Duration::from_secs(60),
            "",
        )
        .unwrap();
    observer.alert(disk("web-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 2);
    clock.advance(Duration::from_secs(61));
    observer.alert(disk("web-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 3);

    assert!(
        observer
            .alerts()
            .silence(BTreeMap::new(), until, "")
            .is_err()
    );
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    use qiflow_core::clock::Clock;
    clock.now()
}

#[test]
fn the_rate_limit_drops_and_counts_the_overflow() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"0s\"\nrate_limit = 2\n",
        &clock,
        &channel,
    );
    for i in 0..5 {
        observer.alert(disk(&format!("db-{i}")));
        assert!(observer.flush(WAIT));
    }
    assert_eq!(channel.sent().len(), 2);
    assert_eq!(observer.alerts().dropped(), 3);
    assert_eq!(
        metric(
            &observer,
            "qiflow_alerts_sent_total{channel=\"rec\",outcome=\"rate_limited\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &observer,
            "qiflow_dropped_total{pipeline=\"alerts\",reason=\"channel\"}"
        ),
        3.0
    );
    // The bucket refills: one token per 30 s at 2 per minute.
    clock.advance(Duration::from_secs(30));
    observer.alert(disk("db-9"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 3);
}

#[test]
fn below_min_level_is_not_sent() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"0s\"\nmin_level = \"error\"\n",
        &clock,
        &channel,
    );
    observer.alert(Alert::new("slow", AlertLevel::Warning));
    observer.alert(Alert::new("broken", AlertLevel::Error));
    assert!(observer.flush(WAIT));
    let sent = channel.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].alerts[0].alert.name, "broken");
}

#[test]
fn failed_attempts_are_retried_and_delivered_once() {
    let clock = start();
    let channel = RecordingChannel::failing_first(3);
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"0s\"\nretry_initial = \"5ms\"\nretry_max = \"20ms\"\n",
        &clock,
        &channel,
    );
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.attempts(), 4);
    assert_eq!(channel.sent().len(), 1);
    let recent = &observer.alerts().view().recent[0];
    assert_eq!((recent.outcome.as_str(), recent.attempts), ("sent", 4));
    assert_eq!(observer.alerts().dropped(), 0);
}

/// A channel that waits for a permit per notification, then records it.
#[derive(Clone)]
struct GateChannel {
    gate: Arc<tokio::sync::Semaphore>,
    inner: RecordingChannel,
    /// Sends that reached the gate.
    entered: Arc<std::sync::atomic::AtomicU64>,
}

impl AlertChannel for GateChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            self.gate.acquire().await.unwrap().forget();
            self.inner.send(n).await
        })
    }
}

#[test]
fn distinct_alerts_past_the_channel_queue_are_dropped_and_counted() {
    let clock = start();
    let gate = GateChannel {
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        inner: RecordingChannel::new(),
        entered: Arc::default(),
    };
    // The receiver is stuck: the channel's queue fills at 1,000 (50 in flight, 950 waiting).
    let (observer, _guard) = Observer::builder(config(
        "[alerts]\ngroup_wait = \"0s\"\nqueue_capacity = 5000\n",
    ))
    .install_global(false)
    .clock(clock.clone())
    .alert_channel("rec", gate.clone())
    .build()
    .unwrap();
    for i in 0..3_000 {
        observer.alert(disk(&format!("db-{i}")));
    }
    assert!(wait_until(WAIT, || {
        observer.alerts().view().channels[0].pending == 1_000
            && observer.alerts().dropped() == 2_000
    }));
    assert_eq!(
        metric(
            &observer,
            "qiflow_alerts_sent_total{channel=\"rec\",outcome=\"queue_full\"}"
        ),
        2000.0
    );
    assert_eq!(metric(&observer, "qiflow_alerts_queue_depth"), 1000.0);
    gate.gate.add_permits(1_000);
    assert!(observer.flush(WAIT));
    let delivered: usize = gate.inner.sent().iter().map(|n| n.alerts.len()).sum();
    assert_eq!(delivered, 1_000);
    assert_eq!(
        metric(
            &observer,
            "qiflow_alerts_sent_total{channel=\"rec\",outcome=\"sent\"}"
        ),
        1000.0
    );
}

#[test]
fn the_log_channel_is_the_default() {
    let (observer, _guard) = Observer::builder(config("[alerts]\ngroup_wait = \"0s\"\n"))
        .install_global(false)
        .build()
        .unwrap();
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    let view = observer.alerts().view();
    assert_eq!(view.channels[0].name, "log");
    assert_eq!(view.recent[0].outcome, "sent");
}

#[test]
fn alerts_after_shutdown_are_counted_as_dropped() {
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, guard) = build("", &clock, &channel);
    drop(guard);
    observer.alert(disk("db-1"));
    assert_eq!(observer.alerts().dropped(), 1);
}

#[test]
fn sensitive_labels_are_redacted_like_the_logs() {
    let clock = start();
    let channel = RecordingChannel::new();
    let mut config = config("[alerts]\ngroup_wait = \"0s\"\n");
    config.logging.redact = vec!["ssn".into()];
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .clock(clock.clone())
        .alert_channel("rec", channel.clone())
        .build()
        .unwrap();
    observer.alert(
        disk("db-1")
            .label("api_token", "tok-123")
            .label("customer_ssn", "078-05-1120"),
    );
    assert!(observer.flush(WAIT));
    let labels = &channel.sent()[0].alerts[0].alert.labels;
    assert_eq!(labels["api_token"], "[REDACTED]");
    assert_eq!(labels["customer_ssn"], "[REDACTED]");
    assert_eq!(labels["host"], "db-1");
}

/// A channel that panics on every send.
struct PanickingChannel;

impl AlertChannel for PanickingChannel {
    fn send<'a>(&'a self, _: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async { panic!("channel bug") })
    }
}

#[test]
fn a_panicking_channel_fails_its_notifications_and_keeps_running() {
    let clock = start();
    let (observer, _guard) = Observer::builder(config("[alerts]\ngroup_wait = \"0s\"\n"))
        .install_global(false)
        .clock(clock.clone())
        .alert_channel("buggy", PanickingChannel)
        .build()
        .unwrap();
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    observer.alert(disk("db-2"));
    assert!(observer.flush(WAIT), "the dispatcher still runs");
    let view = observer.alerts().view();
    assert_eq!(view.recent.len(), 2);
    assert!(
        view.recent
            .iter()
            .all(|r| r.outcome == "failed" && r.attempts == 1)
    );
    assert!(
        view.channels[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("panicked")
    );
    assert_eq!(observer.alerts().dropped(), 2);
}

#[test]
fn a_resolve_during_the_firing_send_still_reaches_the_channel() {
    let clock = start();
    let gate = GateChannel {
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        inner: RecordingChannel::new(),
        entered: Arc::default(),
    };
    let (observer, _guard) = Observer::builder(config("[alerts]\ngroup_wait = \"0s\"\n"))
        .install_global(false)
        .clock(clock.clone())
        .alert_channel("rec", gate.clone())
        .build()
        .unwrap();
    let alert = disk("db-1");
    let fp = alert.fingerprint_value();
    observer.alert(alert);
    // The firing notification is being sent (held at the gate) when the resolve arrives.
    assert!(wait_until(WAIT, || gate
        .entered
        .load(std::sync::atomic::Ordering::SeqCst)
        == 1));
    observer.alert(Alert::resolve(&fp));
    assert!(wait_until(WAIT, || observer
        .alerts()
        .view()
        .active
        .is_empty()));
    gate.gate.add_permits(2);
    assert!(observer.flush(WAIT));
    let sent = gate.inner.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].alerts[0].alert.status, AlertStatus::Firing);
    assert_eq!(sent[1].alerts[0].alert.status, AlertStatus::Resolved);
}

#[test]
fn an_alert_nobody_received_is_tried_again_on_its_next_occurrence() {
    let clock = start();
    let channel = RecordingChannel::failing_first(1);
    let (observer, _guard) = build(
        "[alerts]\ngroup_wait = \"0s\"\ncooldown = \"5m\"\nretry_deadline = \"1ms\"\n",
        &clock,
        &channel,
    );
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    assert!(channel.sent().is_empty());
    assert_eq!(observer.alerts().view().recent[0].outcome, "failed");
    // Within the cooldown, but the first notification reached nobody: this one goes out,
    // counting both occurrences.
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    let sent = channel.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].alerts[0].count, 2);
    // Now it was received: the cooldown holds the next one back.
    observer.alert(disk("db-1"));
    assert!(observer.flush(WAIT));
    assert_eq!(channel.sent().len(), 1);
}

#[test]
fn the_state_file_is_written_soon_after_a_notification_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alerts.json");
    let clock = start();
    let channel = RecordingChannel::new();
    let (observer, _guard) = build(
        &format!(
            "[alerts]\ngroup_wait = \"0s\"\nstate_file = {:?}\n",
            state.display().to_string()
        ),
        &clock,
        &channel,
    );
    assert!(!state.exists(), "nothing happened yet: no file");
    observer.alert(disk("db-1"));
    assert!(wait_until(WAIT, || {
        std::fs::read_to_string(&state).is_ok_and(|text| text.contains("disk_full"))
    }));
    assert_eq!(channel.sent().len(), 1);
    #[cfg(unix)]
    {
        // Created private, and no temporary file is left beside it.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["alerts.json"]);
    }
}
