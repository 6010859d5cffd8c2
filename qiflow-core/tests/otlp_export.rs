//! OTLP export of sampled requests (`[tracing] otlp_endpoint`) to a receiver built on the
//! official protobuf schema: names, semantic-convention attributes, parents, status, resource;
//! sampling; and exact accounting with a hung or refusing collector, the guard within its
//! budget. Each check runs against the in-process receiver here and, `#[ignore]`d, against the
//! Python one in tier 2 (`.ci/tier2-otlp.sh`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "support/otlp.rs"]
mod otlp;

use std::time::{Duration, Instant};

use otlp::{Backend, Mode, OtlpReceiver};
use qiflow_core::request::{RequestInfo, RequestOutcome};
use qiflow_core::worker::PipelineStats;
use qiflow_core::{Guard, Observer};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const PATIENCE: Duration = Duration::from_secs(20);

fn observer(receiver: &OtlpReceiver, ratio: f64, budget: Duration) -> (Observer, Guard) {
    let mut config = qiflow_core::test::quiet_config();
    config.service.name = "checkout".into();
    config.service.version = "1.4.2".into();
    config.service.environment = "staging".into();
    config.tracing.otlp_endpoint = Some(receiver.endpoint());
    config.tracing.sample_ratio = ratio;
    config.tracing.timeout = Duration::from_secs(2);
    Observer::builder(config)
        .install_global(false)
        .flush_budget(budget)
        .build()
        .unwrap()
}

fn traces(stats: &[PipelineStats]) -> &PipelineStats {
    stats.iter().find(|s| s.name == "traces").unwrap()
}

fn request(observer: &Observer, path: &str, traceparent: Option<&str>, status: u16) -> String {
    let mut info = RequestInfo::new("GET", path.to_owned())
        .with_route("/users/{id}")
        .with_query("page=2&token=CANARY")
        .with_host("shop.test")
        .with_user_agent("tests");
    if let Some(value) = traceparent {
        info = info.with_traceparent(value.to_owned());
    }
    let in_flight = observer.begin_request(info);
    let span_id = in_flight.id().span_id().to_owned();
    in_flight.finish(RequestOutcome::new(status));
    span_id
}

fn spans_arrive_with_names_attributes_parents_status_and_resource(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Ok);
    let (observer, guard) = observer(&receiver, 1.0, Duration::from_secs(5));
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let ok_span = request(&observer, "/users/7", Some(&incoming), 200);
    let failed_span = request(&observer, "/users/8", None, 503);
    drop(guard);
    let spans = receiver.wait_for(2, PATIENCE);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let ok = spans
        .iter()
        .find(|s| s["span_id"] == ok_span.as_str())
        .unwrap();
    assert_eq!(ok["name"], "GET /users/{id}");
    assert_eq!(ok["kind"], "SPAN_KIND_SERVER");
    assert_eq!(ok["trace_id"], TRACE_ID);
    assert_eq!(ok["parent_span_id"], PARENT_ID);
    let attributes = &ok["attributes"];
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["http.route"], "/users/{id}");
    assert_eq!(attributes["url.path"], "/users/7");
    assert_eq!(attributes["server.address"], "shop.test");
    assert_eq!(attributes["user_agent.original"], "tests");
    assert_eq!(attributes["http.response.status_code"], 200);
    let query = attributes["url.query"].as_str().unwrap();
    assert!(
        query.contains("token=[REDACTED]") && !query.contains("CANARY"),
        "{query}"
    );
    assert_ne!(ok["status"]["code"], "STATUS_CODE_ERROR", "{ok}");
    let resource = &ok["resource"];
    assert_eq!(resource["service.name"], "checkout");
    assert_eq!(resource["service.version"], "1.4.2");
    assert_eq!(resource["deployment.environment.name"], "staging");
    assert!(
        resource["host.name"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{resource}"
    );
    let failed = spans
        .iter()
        .find(|s| s["span_id"] == failed_span.as_str())
        .unwrap();
    assert_eq!(failed["status"]["code"], "STATUS_CODE_ERROR", "{failed}");
    assert_eq!(failed["attributes"]["error.type"], "503");
    assert!(
        failed["parent_span_id"].as_str().is_none_or(str::is_empty),
        "{failed}"
    );
    assert_ne!(failed["trace_id"], TRACE_ID);
    let stats = observer.stats();
    let traces = traces(&stats);
    assert_eq!(
        (traces.submitted, traces.delivered, traces.dropped()),
        (2, 2, 0)
    );
}

#[test]
fn spans_arrive_in_process() {
    spans_arrive_with_names_attributes_parents_status_and_resource(Backend::InProcess);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn spans_arrive_in_python() {
    spans_arrive_with_names_attributes_parents_status_and_resource(Backend::Python);
}

#[test]
fn a_quarter_is_exported_at_ratio_one_quarter_and_callers_decide_for_theirs() {
    let receiver = OtlpReceiver::start_with(Backend::InProcess, Mode::Ok);
    let (observer, guard) = observer(&receiver, 0.25, Duration::from_secs(5));
    for i in 0..400 {
        request(&observer, &format!("/users/{i}"), None, 200);
    }
    // A sampled caller is exported whatever the ratio; an unsampled one is not.
    request(
        &observer,
        "/users/x",
        Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01")),
        200,
    );
    request(
        &observer,
        "/users/y",
        Some(&format!("00-{TRACE_ID}-{PARENT_ID}-00")),
        200,
    );
    drop(guard);
    let stats = observer.stats();
    let traces = traces(&stats);
    let exported = traces.delivered;
    assert!(
        (60..=140).contains(&exported),
        "{exported} of 401 exported at 0.25"
    );
    let spans = receiver.wait_for(exported as usize, PATIENCE);
    assert_eq!(spans.len() as u64, exported);
    assert_eq!(
        spans.iter().filter(|s| s["trace_id"] == TRACE_ID).count(),
        1,
        "the sampled caller's span, and only it"
    );
}

fn a_dead_collector_costs_the_guard_its_budget_and_every_span_is_accounted(mode: Mode) {
    let receiver = OtlpReceiver::start_with(Backend::InProcess, mode);
    let budget = Duration::from_secs(3);
    let (observer, guard) = observer(&receiver, 1.0, budget);
    for i in 0..50 {
        request(&observer, &format!("/users/{i}"), None, 200);
    }
    let started = Instant::now();
    drop(guard);
    let took = started.elapsed();
    assert!(
        took < budget + Duration::from_secs(2),
        "{mode:?}: shutdown took {took:?}"
    );
    let stats = observer.stats();
    let traces = traces(&stats);
    assert_eq!(traces.submitted, 50, "{mode:?}: {traces:?}");
    assert_eq!(traces.delivered, 0, "{mode:?}: {traces:?}");
    assert_eq!(
        traces.delivered + traces.dropped(),
        50,
        "{mode:?}: exported + dropped = finished sampled spans: {traces:?}"
    );
    let metrics = observer.render_metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("qiflow_dropped_total{pipeline=\"traces\"")),
        "{metrics}"
    );
}

#[test]
fn a_hung_collector_is_given_up_at_the_budget() {
    a_dead_collector_costs_the_guard_its_budget_and_every_span_is_accounted(Mode::Hang);
}

#[test]
fn a_refusing_collector_drops_and_counts() {
    a_dead_collector_costs_the_guard_its_budget_and_every_span_is_accounted(Mode::Refuse);
}

/// Handlers' spans (`#[tracing::instrument]`) inside a sampled request are exported as children
/// of the request's span, nested ones under their parent; inside an unsampled request, nothing.
fn child_spans_are_exported_under_the_request(backend: Backend) {
    use tracing_subscriber::layer::SubscriberExt;

    #[tracing::instrument(fields(order = id))]
    fn load_order(id: u32) {
        let _inner = tracing::info_span!("query", table = "orders").entered();
    }

    let receiver = OtlpReceiver::start_with(backend, Mode::Ok);
    let (observer, guard) = observer(&receiver, 1.0, Duration::from_secs(5));
    let subscriber = tracing_subscriber::registry()
        .with(observer.log_layer())
        .with(observer.trace_layer());
    let request_span = tracing::subscriber::with_default(subscriber, || {
        let in_flight = observer.begin_request(
            RequestInfo::new("GET", "/users/7")
                .with_route("/users/{id}")
                .with_traceparent(format!("00-{TRACE_ID}-{PARENT_ID}-01")),
        );
        in_flight.span().in_scope(|| load_order(7));
        let span_id = in_flight.id().span_id().to_owned();
        in_flight.finish(RequestOutcome::new(200));
        // Unsampled: its spans are not exported.
        let unsampled = observer.begin_request(
            RequestInfo::new("GET", "/users/8")
                .with_traceparent(format!("00-{TRACE_ID}-{PARENT_ID}-00")),
        );
        unsampled.span().in_scope(|| load_order(8));
        unsampled.finish(RequestOutcome::new(200));
        span_id
    });
    drop(guard);
    let spans = receiver.wait_for(3, PATIENCE);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let load = spans.iter().find(|s| s["name"] == "load_order").unwrap();
    let query = spans.iter().find(|s| s["name"] == "query").unwrap();
    assert_eq!(load["trace_id"], TRACE_ID);
    assert_eq!(load["parent_span_id"], request_span.as_str());
    assert_eq!(load["kind"], "SPAN_KIND_INTERNAL");
    assert_eq!(load["attributes"]["order"], "7");
    assert_eq!(query["parent_span_id"], load["span_id"]);
    assert_eq!(query["attributes"]["table"], "orders");
    assert!(
        spans.iter().all(|s| s["attributes"]["order"] != "8"),
        "{spans:#?}"
    );
}

#[test]
fn child_spans_in_process() {
    child_spans_are_exported_under_the_request(Backend::InProcess);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn child_spans_in_python() {
    child_spans_are_exported_under_the_request(Backend::Python);
}
