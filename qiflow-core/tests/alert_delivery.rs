//! Delivery when the receiver misbehaves: down, 500, 429 with Retry-After, 400, never
//! answering. Retries are bounded and back off, each attempt is timed out, a notification is
//! delivered exactly once after recovery, the guard's drop keeps its budget, counters are exact.
// The webhook channel: the `http-channels` feature.
#![cfg(feature = "http-channels")]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use qiflow_core::Observer;
use qiflow_core::alert::{Alert, AlertLevel};
use support::{Receiver, Reply, config, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn observer(url: &str, extra: &str) -> (Observer, qiflow_core::Guard) {
    Observer::builder(config(&format!(
        "[alerts]\ngroup_wait = \"0s\"\nretry_initial = \"40ms\"\nretry_max = \"200ms\"\n{extra}\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\ntimeout = \"300ms\"\n"
    )))
    .install_global(false)
    .flush_budget(Duration::from_secs(1))
    .build()
    .unwrap()
}

fn alert() -> Alert {
    Alert::new("queue_stuck", AlertLevel::Error).summary("jobs wait")
}

fn metric(observer: &Observer, line_start: &str) -> f64 {
    let text = observer.render_metrics();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0.0)
}

fn outcome(observer: &Observer, outcome: &str) -> f64 {
    metric(
        observer,
        &format!("qiflow_alerts_sent_total{{channel=\"hook\",outcome=\"{outcome}\"}}"),
    )
}

#[test]
fn answers_500_are_retried_with_growing_pauses_then_delivered_once() {
    let receiver = Receiver::start(vec![Reply::Status(500, "oops"), Reply::Status(503, "busy")]);
    let (observer, _guard) = observer(&receiver.url("/"), "");
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    // Equal jitter: the first pause is in [20, 40) ms, the second in [40, 80) ms.
    assert!(gap1 >= Duration::from_millis(20), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(40), "{gap2:?}");
    assert_eq!(outcome(&observer, "sent"), 1.0);
    assert_eq!(outcome(&observer, "failed"), 0.0);
    assert_eq!(observer.alerts().dropped(), 0);
    assert_eq!(
        metric(
            &observer,
            "qiflow_alert_send_duration_seconds_count{channel=\"hook\"}"
        ),
        3.0
    );
    let report = observer.runtime().block_on(observer.readiness());
    assert_eq!(
        report.checks["alerts"].status,
        qiflow_core::health::Status::Healthy
    );
}

#[test]
fn answer_429_is_retried_after_its_retry_after() {
    let receiver = Receiver::start(vec![Reply::RetryAfter(1)]);
    let (observer, _guard) = observer(&receiver.url("/"), "");
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(990), "waited {gap:?}");
    assert_eq!(outcome(&observer, "sent"), 1.0);
}

#[test]
fn answer_400_is_not_retried_and_degrades_readiness() {
    let receiver = Receiver::start(vec![Reply::Status(400, "bad payload")]);
    let (observer, _guard) = observer(&receiver.url("/"), "");
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    assert_eq!(receiver.count(), 1);
    assert_eq!(outcome(&observer, "failed"), 1.0);
    assert_eq!(observer.alerts().dropped(), 1);
    assert_eq!(
        metric(
            &observer,
            "qiflow_dropped_total{pipeline=\"alerts\",reason=\"channel\"}"
        ),
        1.0
    );
    let report = observer.runtime().block_on(observer.readiness());
    let check = &report.checks["alerts"];
    assert_eq!(check.status, qiflow_core::health::Status::Degraded);
    let detail = check.detail.as_deref().unwrap();
    assert!(
        detail.contains("hook") && detail.contains("400") && detail.contains("bad payload"),
        "{detail}"
    );
    assert!(
        !detail.contains("http://"),
        "no URL (tokens) in the detail: {detail}"
    );
    // The next success clears it.
    observer.alert(Alert::new("other", AlertLevel::Error));
    assert!(observer.flush(WAIT));
    let report = observer.runtime().block_on(observer.readiness());
    assert_eq!(
        report.checks["alerts"].status,
        qiflow_core::health::Status::Healthy
    );
}

#[test]
fn a_receiver_that_never_answers_is_timed_out_and_given_up_at_the_deadline() {
    let receiver = Receiver::start(vec![Reply::Hang; 100]);
    let (observer, _guard) = observer(&receiver.url("/"), "retry_deadline = \"1500ms\"");
    let started = Instant::now();
    observer.alert(alert());
    assert!(observer.flush(WAIT));
    let took = started.elapsed();
    // Each attempt is cut at 300 ms; with pauses of 20-200 ms (jittered), 1.5 s allows 2 to 5
    // attempts: 5 when every pause comes out short.
    let attempts = receiver.count();
    assert!((2..=5).contains(&attempts), "{attempts} attempts");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let recent = &observer.alerts().view().recent[0];
    assert_eq!(recent.outcome, "failed");
    assert_eq!(recent.attempts as usize, attempts);
    assert!(
        recent
            .error
            .as_deref()
            .unwrap()
            .contains("no answer within 300ms")
    );
    assert_eq!(outcome(&observer, "failed"), 1.0);
    assert_eq!(observer.alerts().dropped(), 1);
}

#[test]
fn the_guard_drop_keeps_its_budget_and_counts_what_it_abandons() {
    let receiver = Receiver::start(vec![Reply::Hang; 100]);
    let (observer, guard) = observer(&receiver.url("/"), "retry_deadline = \"10m\"");
    observer.alert(alert());
    observer.alert(Alert::new("second", AlertLevel::Error));
    assert!(wait_until(WAIT, || receiver.count() >= 1));
    let started = Instant::now();
    drop(guard);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the guard took {took:?}"
    );
    assert_eq!(outcome(&observer, "abandoned"), 2.0);
    assert_eq!(observer.alerts().dropped(), 2);
    assert_eq!(
        outcome(&observer, "sent") + outcome(&observer, "failed"),
        0.0
    );
}

#[test]
fn a_receiver_that_is_down_gets_the_alert_exactly_once_when_it_comes_back() {
    // A free port with nothing listening.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (observer, _guard) = observer(&format!("http://{addr}/"), "retry_deadline = \"30s\"");
    observer.alert(alert());
    let attempts = |o: &Observer| {
        metric(
            o,
            "qiflow_alert_send_duration_seconds_count{channel=\"hook\"}",
        )
    };
    assert!(
        wait_until(WAIT, || attempts(&observer) >= 3.0),
        "refused attempts are retried"
    );
    let receiver = Receiver::start_on(addr, vec![], "ok");
    assert!(wait_until(WAIT, || receiver.count() == 1));
    assert!(observer.flush(WAIT));
    assert_eq!(receiver.count(), 1, "delivered exactly once");
    assert_eq!(outcome(&observer, "sent"), 1.0);
    assert_eq!(outcome(&observer, "failed"), 0.0);
    assert_eq!(observer.alerts().dropped(), 0);
    assert_eq!(observer.alerts().queued(), 0);
}
