//! W3C trace context through the core, as every adapter drives it: an incoming `traceparent`
//! continued, handed on by `inject`, ignored under `propagation = "none"`, malformed headers
//! counted, the sampling flag, the response's `traceparent`, and the `[tracing]` checks.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;

use qiflow_core::config::{Loader, Propagation};
use qiflow_core::propagation::{self, Parent, TRACEPARENT, TRACESTATE};
use qiflow_core::request::{RequestInfo, RequestOutcome};
use qiflow_core::{Config, Observer};
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn incoming(flags: &str) -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-{flags}")
}

/// Runs `f` inside a request with these headers, under a subscriber carrying qiflow's layers
/// (what `init` installs), and returns what `f` returned and the request's ids.
fn in_request<R>(
    config: Config,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    f: impl FnOnce() -> R,
) -> (R, String, String, Option<String>, String) {
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(observer.log_layer());
    tracing::subscriber::with_default(subscriber, || {
        let mut info = RequestInfo::new("GET", "/orders");
        if let Some(value) = traceparent {
            info = info.with_traceparent(value);
        }
        if let Some(value) = tracestate {
            info = info.with_tracestate(value);
        }
        let in_flight = observer.begin_request(info);
        let out = in_flight.span().in_scope(f);
        let trace_id = in_flight.id().trace_id().to_owned();
        let span_id = in_flight.id().span_id().to_owned();
        let response = in_flight.response_traceparent();
        in_flight.finish(RequestOutcome::new(200));
        (out, trace_id, span_id, response, observer.render_metrics())
    })
}

fn invalid(metrics: &str, header: &str) -> Option<f64> {
    let series = format!("qiflow_trace_context_invalid_total{{header=\"{header}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

#[test]
fn an_incoming_trace_is_continued_and_handed_on() {
    let parent = incoming("01");
    let (headers, trace_id, span_id, response, metrics) = in_request(
        qiflow_core::test::quiet_config(),
        Some(&parent),
        Some("vendor=abc"),
        || {
            let mut headers = HashMap::new();
            assert!(propagation::inject(&mut headers));
            let current = propagation::current().unwrap();
            (headers, current)
        },
    );
    let (headers, current) = headers;
    assert_eq!(trace_id, TRACE_ID);
    assert_ne!(span_id, PARENT_ID);
    assert_eq!(current.parent_span_id().unwrap().to_string(), PARENT_ID);
    assert_eq!(current.span_id().to_string(), span_id);
    // The call the handler makes is a child of the request's span, in the same trace.
    let out = Parent::parse(&headers[TRACEPARENT]).unwrap();
    assert_eq!(out.trace_id().to_string(), TRACE_ID);
    assert_eq!(out.span_id().to_string(), span_id);
    assert!(out.is_sampled());
    assert_eq!(headers[TRACESTATE], "vendor=abc");
    // `respond` is off by default; nothing was malformed.
    assert_eq!(response, None);
    assert_eq!(invalid(&metrics, "traceparent"), Some(0.0), "{metrics}");
}

#[test]
fn outside_a_request_nothing_is_handed_on() {
    let mut headers: HashMap<String, String> = HashMap::new();
    assert!(!propagation::inject(&mut headers));
    assert!(propagation::current().is_none());
}

#[test]
fn malformed_headers_start_a_new_trace_and_are_counted() {
    let (_, trace_id, _, _, metrics) = in_request(
        qiflow_core::test::quiet_config(),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("vendor=abc"),
        || (),
    );
    assert_ne!(trace_id, TRACE_ID);
    assert_eq!(trace_id.len(), 32);
    assert_eq!(invalid(&metrics, "traceparent"), Some(1.0), "{metrics}");
    // A valid traceparent with a malformed tracestate: the trace goes on, the state is dropped.
    let ((headers, _), trace_id, _, _, metrics) = in_request(
        qiflow_core::test::quiet_config(),
        Some(&incoming("01")),
        Some("no-equals-sign"),
        || {
            let mut headers = HashMap::new();
            assert!(propagation::inject(&mut headers));
            (headers, ())
        },
    );
    assert_eq!(trace_id, TRACE_ID);
    assert!(!headers.contains_key(TRACESTATE), "{headers:?}");
    assert_eq!(invalid(&metrics, "tracestate"), Some(1.0), "{metrics}");
}

#[test]
fn propagation_none_ignores_incoming_context_and_hands_on_none() {
    let mut config = qiflow_core::test::quiet_config();
    config.tracing.propagation = Propagation::None;
    config.tracing.respond = true;
    let (injected, trace_id, _, response, metrics) =
        in_request(config, Some(&incoming("01")), None, || {
            let mut headers: HashMap<String, String> = HashMap::new();
            propagation::inject(&mut headers)
        });
    assert!(!injected);
    assert_ne!(trace_id, TRACE_ID, "the incoming trace was ignored");
    assert_eq!(
        trace_id.len(),
        32,
        "the request still has a trace of its own"
    );
    assert_eq!(response, None);
    assert_eq!(invalid(&metrics, "traceparent"), Some(0.0), "{metrics}");
}

#[test]
fn the_caller_decides_sampling_and_new_traces_follow_the_ratio() {
    let mut config = qiflow_core::test::quiet_config();
    config.tracing.sample_ratio = 0.0;
    config.tracing.respond = true;
    // A sampled caller stays sampled, whatever the ratio.
    let (_, _, span_id, response, _) =
        in_request(config.clone(), Some(&incoming("01")), None, || ());
    let response = response.unwrap();
    assert_eq!(response, format!("00-{TRACE_ID}-{span_id}-01"));
    // An unsampled caller stays unsampled.
    let (_, _, _, response, _) = in_request(config.clone(), Some(&incoming("00")), None, || ());
    assert!(response.unwrap().ends_with("-00"));
    // A new trace with ratio 0 is not sampled; with 1 it is.
    let (_, trace_id, _, response, _) = in_request(config.clone(), None, None, || ());
    let response = response.unwrap();
    assert!(response.starts_with(&format!("00-{trace_id}-")) && response.ends_with("-00"));
    config.tracing.sample_ratio = 1.0;
    let (_, _, _, response, _) = in_request(config, None, None, || ());
    assert!(response.unwrap().ends_with("-01"));
}

#[test]
fn the_tracing_section_is_checked_on_load() {
    let error = Loader::new()
        .toml_str("[tracing]\nsample_ratio = 1.5\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err();
    let problem = error
        .problems()
        .iter()
        .find(|p| p.path() == "tracing.sample_ratio")
        .unwrap_or_else(|| panic!("{error}"));
    assert!(problem.to_string().contains("use 0.0"), "{problem}");
    let error = Loader::new()
        .toml_str("[tracing]\npropagation = \"b3\"\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err();
    assert!(error.to_string().contains("tracing"), "{error}");
    let config = Loader::new()
        .toml_str("[tracing]\npropagation = \"none\"\nrespond = true\nsample_ratio = 0.25\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap();
    assert_eq!(config.tracing.propagation, Propagation::None);
    assert!(config.tracing.respond);
    assert_eq!(config.tracing.sample_ratio, 0.25);
    // Export headers without an endpoint go nowhere: advice, not an error.
    let config = Loader::new()
        .toml_str("[tracing.headers]\nX-Api-Key = \"k\"\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap();
    let advice = config
        .warnings()
        .iter()
        .find(|w| w.path() == "tracing.headers")
        .unwrap_or_else(|| panic!("{:?}", config.warnings()));
    assert!(advice.to_string().contains("otlp_endpoint"), "{advice}");
}

/// Audit records and alerts made inside a request carry its trace: the application's own
/// `observer.audit(…)` and `observer.alert(…)` (which name neither id), and the automatic audit
/// record of an audited route. Outside a request, a record has no trace id, and its stored line
/// has no `trace_id` key at all, so records written before the field existed hash as they did.
#[test]
fn audit_records_and_alerts_raised_in_a_request_carry_its_trace() {
    use qiflow_core::alert::{Alert, AlertLevel};
    use qiflow_core::audit::{AuditEvent, AuditQuery, FileStore};

    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("audit");
    let mut config = qiflow_core::test::quiet_config();
    config.audit.enabled = true;
    config.audit.dir = trail.clone();
    config.audit.routes = vec!["POST /orders".into()];
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(observer.log_layer());
    let request_id = tracing::subscriber::with_default(subscriber, || {
        let info = RequestInfo::new("POST", "/orders")
            .with_route("/orders")
            .with_traceparent(incoming("01"));
        let in_flight = observer.begin_request(info);
        in_flight.span().in_scope(|| {
            observer
                .audit(AuditEvent::builder("alice", "order.create").build())
                .unwrap();
            observer.alert(Alert::new("stock_low", AlertLevel::Warning).label("sku", "A1"));
        });
        let id = in_flight.id().as_str().to_owned();
        in_flight.finish(RequestOutcome::new(201));
        // The same alert raised in another request is the same alert.
        let in_flight = observer.begin_request(RequestInfo::new("POST", "/orders"));
        in_flight.span().in_scope(|| {
            observer.alert(Alert::new("stock_low", AlertLevel::Warning).label("sku", "A1"));
        });
        in_flight.finish(RequestOutcome::new(201));
        id
    });
    observer
        .audit(AuditEvent::builder("cron", "orders.purge").build())
        .unwrap();

    assert!(observer.flush(std::time::Duration::from_secs(10)));
    let active = observer.alerts().view().active;
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0].count, 2, "{active:?}");
    assert!(!active[0].alert.labels.contains_key("trace_id"));
    // The latest occurrence: the second request, a new trace of its own.
    let latest = &active[0].alert.annotations;
    assert_eq!(latest["trace_id"].len(), 32, "{latest:?}");
    assert_ne!(latest["trace_id"], TRACE_ID, "{latest:?}");
    assert_ne!(latest["request_id"], request_id, "{latest:?}");
    drop(guard);

    let store = FileStore::new(&trail, None);
    let query = AuditQuery::from_query_string(&format!("trace_id={TRACE_ID}")).unwrap();
    let traced = store.query_blocking(&query).unwrap().records;
    let actions: Vec<_> = traced.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["POST /orders", "order.create"], "{traced:?}");
    for record in &traced {
        assert_eq!(record.request_id.as_deref(), Some(request_id.as_str()));
        assert_eq!(record.trace_id.as_deref(), Some(TRACE_ID));
    }
    let by_request = AuditQuery::from_query_string(&format!("request_id={request_id}")).unwrap();
    assert_eq!(store.query_blocking(&by_request).unwrap().records, traced);
    let all = store.query_blocking(&AuditQuery::new()).unwrap().records;
    let purge = all.iter().find(|r| r.action == "orders.purge").unwrap();
    assert_eq!(
        (purge.request_id.as_deref(), purge.trace_id.as_deref()),
        (None, None)
    );
    let stored = std::fs::read_dir(&trail)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    let purge_line = stored.lines().find(|l| l.contains("orders.purge")).unwrap();
    assert!(!purge_line.contains("trace_id"), "{purge_line}");
    let verified = qiflow_core::audit::verify_dir(&trail, None).unwrap();
    // The four events and this start's `service.deployed`.
    assert_eq!(verified.records, 5);
    assert!(
        AuditQuery::from_query_string("trace_id=XYZ")
            .unwrap_err()
            .contains("trace_id")
    );
}
