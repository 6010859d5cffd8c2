//! Error capture against an in-process Sentry envelope endpoint: what the real `sentry` client
//! sends through qiflow's transport, scrubbing, and exact accounting when Sentry is down, hangs,
//! rate-limits or fails (those with the `sentry` feature); and what capture does without Sentry.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[cfg(feature = "sentry")]
#[path = "support/sentry.rs"]
mod support;

use std::time::Duration;
#[cfg(feature = "sentry")]
use std::time::Instant;

use qiflow_core::capture::{ErrorDetail, Severity};
#[cfg(feature = "sentry")]
use qiflow_core::capture::{ErrorKind, ErrorReport, Resolution, Stacktrace};
use qiflow_core::request::{RequestInfo, RequestOutcome};
use qiflow_core::secret::Secret;
#[cfg(feature = "sentry")]
use qiflow_core::worker::PipelineStats;
use qiflow_core::{Guard, Observer};
#[cfg(feature = "sentry")]
use support::{FakeSentry, Mode, closed_port_dsn};

/// A bound the tests wait at most for background work; reaching it is a failure, not a figure.
const PATIENCE: Duration = Duration::from_secs(20);

fn observer(dsn: Option<String>, budget: Duration) -> (Observer, Guard) {
    let mut config = qiflow_core::test::quiet_config();
    config.service.name = "shop".into();
    config.service.version = "1.2.3".into();
    config.service.environment = "staging".into();
    config.errors.sentry_dsn = dsn.map(Secret::new);
    Observer::builder(config)
        .install_global(false)
        .flush_budget(budget)
        .build()
        .unwrap()
}

#[cfg(feature = "sentry")]
fn errors(stats: &[PipelineStats]) -> PipelineStats {
    stats.iter().find(|s| s.name == "errors").unwrap().clone()
}

#[derive(Debug)]
struct QueryFailed {
    source: std::io::Error,
}

impl std::fmt::Display for QueryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loading user 42 failed")
    }
}

impl std::error::Error for QueryFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The incoming trace context of [`failing_request`].
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A failing request through the core, as every adapter drives it: credentials in the host, a
/// token and a password in the query, a handler error with a source.
fn failing_request(observer: &Observer, i: usize) {
    let info = RequestInfo::new("GET", format!("/users/{i}"))
        .with_route("/users/{id}")
        .with_request_id(format!("req-{i}"))
        .with_query("page=2&token=CANARY&password=CANARY")
        .with_host("admin:CANARY@shop.test")
        .with_user_agent("tests")
        .with_traceparent(TRACEPARENT);
    let in_flight = observer.begin_request(info);
    let error = QueryFailed {
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "db down"),
    };
    in_flight.finish(RequestOutcome::new(500).with_error(ErrorDetail::from_error(&error)));
}

#[cfg(feature = "sentry")]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(feature = "sentry")]
#[test]
fn the_sentry_client_delivers_scrubbed_events_with_request_context() {
    let sentry = FakeSentry::start(Mode::Ok);
    let (observer, guard) = observer(Some(sentry.dsn()), Duration::from_secs(5));
    failing_request(&observer, 42);
    // A 404 is not an error under the default policy.
    observer
        .begin_request(RequestInfo::new("GET", "/nope"))
        .finish(RequestOutcome::new(404));
    assert!(observer.flush(PATIENCE));
    drop(guard);

    let received = sentry.accepted();
    assert_eq!(received.len(), 1, "one event for the 500, none for the 404");
    let request = &received[0];
    assert_eq!(request.path, "/api/42/envelope/");
    let auth = request.header("x-sentry-auth").unwrap();
    assert!(auth.contains("sentry_key=public"), "{auth}");
    let raw = String::from_utf8_lossy(&request.body);
    assert!(!raw.contains("CANARY"), "a secret reached Sentry: {raw}");

    let event = request.event().unwrap();
    // `error` is Sentry's default level, which the SDK leaves out.
    assert!(event.get("level").is_none_or(|l| l == "error"), "{event}");
    assert_eq!(event["release"], "1.2.3");
    assert_eq!(event["environment"], "staging");
    // Which instance reported it: `[service] instance` (generated here).
    let instance = &observer.config().service.instance;
    assert!(!instance.is_empty());
    assert_eq!(event["server_name"], instance.as_str(), "{event}");
    assert_eq!(event["tags"]["request_id"], "req-42");
    assert_eq!(event["tags"]["route"], "/users/{id}");
    assert_eq!(event["tags"]["status"], "500");
    // Sentry links the error to the request's trace: the incoming trace, the request's own span.
    let trace = &event["contexts"]["trace"];
    assert_eq!(
        trace["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{event}"
    );
    let span_id = trace["span_id"].as_str().unwrap();
    assert_eq!(span_id.len(), 16, "{event}");
    assert_ne!(span_id, "00f067aa0ba902b7", "{event}");
    let exceptions = event["exception"]["values"].as_array().unwrap();
    assert_eq!(exceptions.len(), 2, "{event}");
    // Sentry's order: the innermost cause first, the outermost error last.
    assert_eq!(exceptions[0]["value"], "db down");
    assert_eq!(exceptions[1]["value"], "loading user 42 failed");
    assert!(
        exceptions[1]["type"]
            .as_str()
            .unwrap()
            .ends_with("QueryFailed"),
        "{event}"
    );
    assert_eq!(event["request"]["method"], "GET");
    let url = event["request"]["url"].as_str().unwrap();
    assert!(url.starts_with("http://shop.test/users/42"), "{url}");
    let query = event["request"]["query_string"].as_str().unwrap();
    assert!(
        query.contains("page=2") && query.contains("token=[REDACTED]"),
        "{query}"
    );
    assert!(
        event["request"]
            .get("headers")
            .is_none_or(|h| h.as_object().is_none_or(|h| h.is_empty()))
    );
    assert!(event.get("user").is_none(), "no user was set: {event}");

    // The same report is grouped locally.
    let groups = observer.error_store().groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].count, 1);
    assert_eq!(groups[0].route.as_deref(), Some("/users/{id}"));
    assert_eq!(groups[0].last_request_id.as_deref(), Some("req-42"));
    assert_eq!(
        groups[0].last_trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(groups[0].severity, Severity::Error);
    let stats = errors(&observer.stats());
    assert_eq!(
        (stats.submitted, stats.delivered, stats.dropped()),
        (1, 1, 0)
    );
}

#[test]
fn a_malformed_dsn_is_a_config_error_naming_the_key() {
    let mut config = qiflow_core::test::quiet_config();
    config.errors.sentry_dsn = Some(Secret::new("https://public@[::1"));
    let err = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), qiflow_core::InitErrorKind::Config);
    assert!(err.to_string().contains("errors.sentry_dsn"), "{err}");
}

#[cfg(feature = "sentry")]
/// What every failure mode must keep: requests never wait for Sentry, the guard returns within
/// its budget, and `submitted == delivered + dropped`.
fn survives(mode: Option<Mode>, reports: usize) -> (PipelineStats, usize, String) {
    let sentry = mode.map(FakeSentry::start);
    let dsn = sentry
        .as_ref()
        .map_or_else(closed_port_dsn, FakeSentry::dsn);
    let budget = Duration::from_secs(1);
    let (observer, guard) = observer(Some(dsn), budget);
    for i in 0..reports {
        failing_request(&observer, i);
    }
    // Let the worker meet the failure before shutting down.
    wait_for("the first attempt", || {
        let s = errors(&observer.stats());
        s.delivered + s.dropped() > 0 || sentry.as_ref().is_some_and(|s| s.requests() > 0)
    });
    let started = Instant::now();
    let report = guard.shutdown();
    let took = started.elapsed();
    assert!(
        took < budget + Duration::from_secs(2),
        "the guard took {took:?} with a budget of {budget:?}"
    );
    let stats = errors(&report.stats);
    assert_eq!(stats.submitted, reports as u64);
    assert_eq!(
        stats.delivered + stats.dropped(),
        stats.submitted,
        "every report delivered or counted: {stats:?}"
    );
    let metrics = observer.render_metrics();
    (stats, sentry.map_or(0, |s| s.requests()), metrics)
}

#[cfg(feature = "sentry")]
#[test]
fn sentry_down_drops_and_counts_without_slowing_requests() {
    let (stats, _, metrics) = survives(None, 20);
    assert_eq!(stats.delivered, 0);
    assert!(stats.dropped_sink_error > 0, "{stats:?}");
    assert!(
        metrics.contains(&format!(
            "qiflow_dropped_total{{pipeline=\"errors\",reason=\"sink_error\"}} {}",
            stats.dropped_sink_error
        )),
        "{metrics}"
    );
}

#[cfg(feature = "sentry")]
#[test]
fn sentry_that_never_answers_cannot_hold_shutdown() {
    let (stats, requests, _) = survives(Some(Mode::Hang), 20);
    assert_eq!(stats.delivered, 0);
    assert!(requests >= 1);
    assert!(
        stats.dropped_shutdown > 0,
        "abandoned at the deadline: {stats:?}"
    );
}

#[cfg(feature = "sentry")]
#[test]
fn a_429_backs_off_for_its_retry_after() {
    let (stats, requests, metrics) =
        survives(Some(Mode::TooMany(vec![("Retry-After", "30".into())])), 20);
    assert_eq!(requests, 1, "no request while backing off");
    assert_eq!(stats.dropped_rate_limited, 20, "{stats:?}");
    assert!(
        metrics.contains("qiflow_dropped_total{pipeline=\"errors\",reason=\"rate_limited\"} 20"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "qiflow_errors_forwarded_total{reporter=\"sentry\",outcome=\"rate_limited\"} 20"
        ),
        "{metrics}"
    );
}

#[cfg(feature = "sentry")]
#[test]
fn a_500_is_retried_once_then_sending_backs_off() {
    let (stats, requests, _) = survives(Some(Mode::Status(500)), 20);
    assert_eq!(requests, 2, "one retry, then the backoff holds the rest");
    assert_eq!(stats.dropped_sink_error, 20, "{stats:?}");
}

#[cfg(feature = "sentry")]
#[test]
fn sending_resumes_after_the_rate_limit_passes() {
    let sentry = FakeSentry::start(Mode::TooMany(vec![("Retry-After", "1".into())]));
    let (observer, _guard) = observer(Some(sentry.dsn()), Duration::from_secs(5));
    failing_request(&observer, 1);
    assert!(observer.flush(PATIENCE));
    sentry.set_mode(Mode::Ok);
    // Reports keep coming; once the second has passed, one reaches Sentry.
    wait_for("delivery after the backoff", || {
        failing_request(&observer, 2);
        assert!(observer.flush(PATIENCE));
        !sentry.accepted().is_empty()
    });
    let stats = errors(&observer.stats());
    assert_eq!(stats.delivered + stats.dropped(), stats.submitted);
    assert!(stats.dropped_rate_limited >= 1);
}

#[cfg(feature = "sentry")]
/// The stack of a report as the panic hook takes it, from a function the test can find.
#[inline(never)]
fn stack_taken_here() -> Stacktrace {
    std::hint::black_box(Stacktrace::capture())
}

#[cfg(feature = "sentry")]
#[test]
fn a_panic_stack_reaches_sentry_as_native_frames_with_debug_images() {
    let sentry = FakeSentry::start(Mode::Ok);
    let (observer, guard) = observer(Some(sentry.dsn()), Duration::from_secs(5));
    let mut report = ErrorReport::new(
        ErrorKind::Panic,
        Severity::Fatal,
        ErrorDetail::message(Some("panic"), "the ledger is negative"),
    );
    report.stacktrace = Some(stack_taken_here());
    assert!(
        report
            .stacktrace
            .as_ref()
            .unwrap()
            .frames
            .iter()
            .all(|f| f.function.is_none()),
        "the caller's thread holds addresses only"
    );
    observer.capture(report);
    assert!(observer.flush(PATIENCE));
    drop(guard);

    // Resolved on the worker before the store and the reporters saw it.
    let groups = observer.error_store().groups();
    let trace = groups[0].stacktrace.as_ref().unwrap();
    assert_eq!(trace.resolution, Resolution::Resolved, "{trace}");
    assert!(trace.frames.len() <= qiflow_core::capture::MAX_FRAMES);

    let received = sentry.accepted();
    assert_eq!(received.len(), 1);
    let event = received[0].event().unwrap();
    assert_eq!(event["platform"], "native", "{event}");
    let exception = event["exception"]["values"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    let frames = exception["stacktrace"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), trace.frames.len());
    // Sentry's order: the outermost frame first, the innermost last.
    let ours = frames
        .iter()
        .rposition(|f| {
            f["function"]
                .as_str()
                .is_some_and(|n| n.ends_with("stack_taken_here"))
        })
        .unwrap_or_else(|| panic!("no frame of stack_taken_here in {exception}"));
    let frame = &frames[ours];
    assert!(
        frame["filename"].as_str().unwrap().ends_with("capture.rs"),
        "{frame}"
    );
    assert!(frame["lineno"].as_u64().is_some(), "{frame}");
    let addr = frame["instruction_addr"].as_str().unwrap();
    assert_eq!(
        u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap(),
        trace.frames[frames.len() - 1 - ours].instruction_addr
    );
    // The loaded objects with their build ids (`code_id`, and `id` derived from it), for
    // Sentry to resolve the addresses again from uploaded debug files.
    let images = event["debug_meta"]["images"].as_array().unwrap();
    assert!(images.iter().any(|i| i["code_id"].is_string()), "{event}");
    assert!(
        images
            .iter()
            .all(|i| i["id"].is_string() && i["image_addr"].is_string()),
        "{images:?}"
    );
}

#[test]
fn without_sentry_reports_still_reach_the_local_store_and_the_api() {
    let (observer, _guard) = observer(None, Duration::from_secs(5));
    for i in 0..5 {
        failing_request(&observer, i);
    }
    // A panic caught by the middleware (no hook in this test binary).
    observer
        .begin_request(RequestInfo::new("GET", "/panic").with_route("/panic"))
        .finish(RequestOutcome::panicked("boom at step 3"));
    assert!(observer.flush(PATIENCE));
    let json: serde_json::Value = serde_json::from_str(&observer.error_store().to_json()).unwrap();
    assert_eq!(json["recorded"], 6);
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(
        groups.len(),
        2,
        "five failures of one kind, one panic: {json}"
    );
    let panic = groups.iter().find(|g| g["kind"] == "panic").unwrap();
    assert_eq!(panic["type_name"], "panic");
    assert_eq!(panic["severity"], "fatal");
    assert_eq!(panic["message"], "boom at step 3");
    assert_eq!(panic["route"], "/panic");
    assert_eq!(panic["last_status"], 500);
    let failure = groups.iter().find(|g| g["kind"] == "handler").unwrap();
    assert_eq!(failure["count"], 5);
    assert_eq!(failure["chain"], "loading user 42 failed: db down");
    let metrics = observer.render_metrics();
    assert!(
        metrics.contains("qiflow_errors_captured_total{kind=\"handler\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qiflow_errors_captured_total{kind=\"panic\"} 1"),
        "{metrics}"
    );
}

#[test]
fn client_errors_are_captured_only_when_the_policy_says_so() {
    let mut config = qiflow_core::test::quiet_config();
    config.errors.capture = qiflow_core::config::CapturePolicy::ClientAndServerErrors;
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    observer
        .begin_request(RequestInfo::new("GET", "/users/1").with_route("/users/{id}"))
        .finish(RequestOutcome::new(404));
    observer
        .begin_request(RequestInfo::new("GET", "/users/1").with_route("/users/{id}"))
        .finish(RequestOutcome::new(200));
    assert!(observer.flush(PATIENCE));
    let groups = observer.error_store().groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].severity, Severity::Warning);
    assert_eq!(groups[0].last_status, Some(404));
}

#[test]
fn reports_become_error_alerts_deduplicated_by_fingerprint() {
    let channel = qiflow_core::test::RecordingChannel::new();
    let mut config = qiflow_core::test::quiet_config();
    config.alerts.group_wait = Duration::ZERO;
    config.alerts.cooldown = Duration::from_secs(300);
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .alert_channel("rec", channel.clone())
        .build()
        .unwrap();
    // Five failures of one kind (one fingerprint), then a panic (another).
    for i in 0..5 {
        failing_request(&observer, i);
    }
    observer
        .begin_request(RequestInfo::new("GET", "/panic").with_route("/panic"))
        .finish(RequestOutcome::panicked("boom"));
    assert!(observer.flush(PATIENCE));

    let notices: Vec<_> = channel.sent().into_iter().flat_map(|n| n.alerts).collect();
    let failures: Vec<_> = notices.iter().filter(|n| n.alert.name == "error").collect();
    let panics: Vec<_> = notices.iter().filter(|n| n.alert.name == "panic").collect();
    assert_eq!(
        failures.len(),
        1,
        "one notification per cooldown: {notices:#?}"
    );
    assert_eq!(panics.len(), 1, "{notices:#?}");
    let failure = &failures[0].alert;
    assert_eq!(failure.level, qiflow_core::config::AlertLevel::Error);
    assert_eq!(failure.source, "errors");
    assert_eq!(failure.labels["route"], "/users/{id}");
    // The failing request's ids are annotations, not labels: every failure is the same alert.
    assert!(!failure.labels.contains_key("request_id"), "{failure:?}");
    assert!(!failure.annotations["request_id"].is_empty(), "{failure:?}");
    assert_eq!(failure.annotations["trace_id"].len(), 32, "{failure:?}");
    assert!(
        failure
            .summary
            .ends_with("QueryFailed: loading user 42 failed"),
        "{}",
        failure.summary
    );
    // The repeats are counted, not sent.
    let view = observer.alerts().view();
    let active = view
        .active
        .iter()
        .find(|a| a.alert.name == "error")
        .unwrap();
    assert_eq!(failures[0].count + active.suppressed, 5);
}
