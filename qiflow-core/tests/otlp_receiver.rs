//! The OTLP test receivers (`tests/support/otlp.rs`) proven against the stock exporter:
//! `opentelemetry-otlp`'s HTTP/protobuf span exporter, under an `SdkTracerProvider`, sends spans
//! to each receiver, and what arrives is what was sent (names, kinds, ids and parents, attributes
//! of each type, events, links, status, resource attributes, scope); gzip bodies decode; each
//! mode answers as documented (a refusal is not retried, unavailable is, a hung receiver never
//! answers); what a receiver cannot take is reported, never silently dropped.
//!
//! Tier 1 runs every check against the in-process receiver. Tier 2 (`.ci/tier2-otlp.sh`) runs
//! the `#[ignore]`d twins against the Python receiver (the `opentelemetry-proto` package from
//! PyPI), and checks that both receivers write the same JSON for the same export.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "support/otlp.rs"]
mod otlp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Compression, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_semantic_conventions::attribute::{
    DEPLOYMENT_ENVIRONMENT_NAME, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE,
    SERVICE_NAME, SERVICE_VERSION, URL_PATH,
};
use otlp::{Backend, Mode, OtlpReceiver, RpcStatus, by_name};
use prost::Message as _;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// The incoming `traceparent`'s ids the root span continues.
const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";

/// The stock OTLP/HTTP protobuf exporter to `receiver` (uncompressed without `compression`).
fn exporter(
    receiver: &OtlpReceiver,
    compression: Option<Compression>,
    timeout: Duration,
) -> opentelemetry_otlp::SpanExporter {
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(receiver.endpoint())
        .with_timeout(timeout);
    match compression {
        Some(compression) => builder.with_compression(compression),
        None => builder,
    }
    .build()
    .expect("the OTLP exporter builds")
}

/// The resource a qiflow service describes itself with (`[service]`).
fn resource() -> Resource {
    Resource::builder()
        .with_service_name("checkout")
        .with_attributes([
            KeyValue::new(SERVICE_VERSION, "1.4.0"),
            KeyValue::new(DEPLOYMENT_ENVIRONMENT_NAME, "staging"),
            KeyValue::new("host.name", "web-1"),
        ])
        .build()
}

/// A provider exporting each span as it ends (simple processor) to every exporter given.
fn simple_provider(exporters: Vec<opentelemetry_otlp::SpanExporter>) -> SdkTracerProvider {
    exporters
        .into_iter()
        .fold(
            SdkTracerProvider::builder().with_resource(resource()),
            |builder, exporter| builder.with_simple_exporter(exporter),
        )
        .build()
}

/// A provider with the batch processor (its own thread) in front of `exporter`.
fn batch_provider(exporter: opentelemetry_otlp::SpanExporter) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(exporter)
        .build()
}

/// The ids of the spans [`a_request`] made.
struct Made {
    root: SpanContext,
    child: SpanContext,
    linked: SpanContext,
}

/// A server span continuing a remote parent (as from a `traceparent`), with a child that has an
/// event and a link; the root ends with a 500 and an error status.
fn a_request(provider: &SdkTracerProvider) -> Made {
    let scope = InstrumentationScope::builder("qiflow-test")
        .with_version("1.2.3")
        .build();
    let tracer = provider.tracer_with_scope(scope);
    let remote = SpanContext::new(
        TraceId::from_hex(REMOTE_TRACE).unwrap(),
        SpanId::from_hex(REMOTE_SPAN).unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "opaque")]).unwrap(),
    );
    let linked = SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let incoming = Context::new().with_remote_span_context(remote);
    let root = tracer
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new(HTTP_REQUEST_METHOD, "GET"),
            KeyValue::new(HTTP_ROUTE, "/users/{id}"),
            KeyValue::new(URL_PATH, "/users/42"),
            KeyValue::new("qiflow.sampled_ratio", 0.25),
            KeyValue::new("qiflow.retried", false),
            KeyValue::new(
                "qiflow.tags",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ),
        ])
        .start_with_context(&tracer, &incoming);
    let root_cx = incoming.with_span(root);
    let mut child = tracer
        .span_builder("load user")
        .with_kind(SpanKind::Internal)
        .with_links(vec![Link::with_context(linked.clone())])
        .start_with_context(&tracer, &root_cx);
    child.add_event(
        "cache miss",
        vec![KeyValue::new("cache.key", "user:42"), KeyValue::new("n", 3)],
    );
    let child_ids = child.span_context().clone();
    child.end();
    let root = root_cx.span();
    root.set_attribute(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, 500));
    root.set_status(Status::error("the profile store timed out"));
    let root_ids = root.span_context().clone();
    root.end();
    Made {
        root: root_ids,
        child: child_ids,
        linked,
    }
}

/// `n` short spans of one trace, for the batch and mode checks.
fn some_spans(provider: &SdkTracerProvider, n: usize) {
    let tracer = provider.tracer("qiflow-test");
    tracer.in_span("batch root", |cx| {
        for i in 0..n.saturating_sub(1) {
            let mut span = tracer.start_with_context(format!("step {i}"), &cx);
            span.set_attribute(KeyValue::new("step", i as i64));
            span.end();
        }
    });
}

fn check_stock_export(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Ok);
    let provider = simple_provider(vec![exporter(&receiver, None, Duration::from_secs(10))]);
    let made = a_request(&provider);
    provider.shutdown().expect("the provider shuts down");
    let spans = receiver.wait_for(2, WAIT);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    // Sent one by one, not compressed.
    receiver.wait_for_requests(2, WAIT);
    assert_eq!(receiver.requests(), 2);
    assert_eq!(receiver.encodings(), ["identity", "identity"]);
    assert_eq!(receiver.errors(), Vec::<String>::new());

    let root = by_name(&spans, "GET /users/{id}");
    let child = by_name(&spans, "load user");
    // Ids and parents: the root continues the remote trace, under the remote span.
    assert_eq!(root["trace_id"], REMOTE_TRACE);
    assert_eq!(root["trace_id"], made.root.trace_id().to_string());
    assert_eq!(root["span_id"], made.root.span_id().to_string());
    assert_eq!(root["parent_span_id"], REMOTE_SPAN);
    assert_eq!(root["trace_state"], "vendor=opaque");
    assert_eq!(child["trace_id"], REMOTE_TRACE);
    assert_eq!(child["span_id"], made.child.span_id().to_string());
    assert_eq!(child["parent_span_id"], root["span_id"]);
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(child["kind"], "SPAN_KIND_INTERNAL");
    // Attributes, each type.
    assert_eq!(
        root["attributes"],
        json!({
            "http.request.method": "GET",
            "http.route": "/users/{id}",
            "url.path": "/users/42",
            "http.response.status_code": 500,
            "qiflow.sampled_ratio": 0.25,
            "qiflow.retried": false,
            "qiflow.tags": ["a", "b"],
        })
    );
    assert_eq!(
        root["status"],
        json!({"code": "STATUS_CODE_ERROR", "message": "the profile store timed out"})
    );
    assert_eq!(child["status"]["code"], "STATUS_CODE_UNSET");
    // Events and links.
    assert_eq!(child["events"].as_array().unwrap().len(), 1, "{child:#}");
    assert_eq!(child["events"][0]["name"], "cache miss");
    assert_eq!(
        child["events"][0]["attributes"],
        json!({"cache.key": "user:42", "n": 3})
    );
    assert_eq!(
        child["links"],
        json!([{
            "trace_id": made.linked.trace_id().to_string(),
            "span_id": made.linked.span_id().to_string(),
            "trace_state": "",
            "attributes": {},
        }])
    );
    // Times: in order, child within its parent.
    let time = |span: &serde_json::Value, key: &str| span[key].as_u64().unwrap();
    assert!(time(root, "start_time_unix_nano") > 1_600_000_000_000_000_000);
    assert!(time(root, "start_time_unix_nano") <= time(child, "start_time_unix_nano"));
    assert!(time(child, "end_time_unix_nano") <= time(root, "end_time_unix_nano"));
    let event_time = child["events"][0]["time_unix_nano"].as_u64().unwrap();
    assert!(time(child, "start_time_unix_nano") <= event_time);
    // Resource and scope.
    for span in [root, child] {
        let resource = &span["resource"];
        assert_eq!(resource[SERVICE_NAME], "checkout", "{resource:#}");
        assert_eq!(resource[SERVICE_VERSION], "1.4.0");
        assert_eq!(resource[DEPLOYMENT_ENVIRONMENT_NAME], "staging");
        assert_eq!(resource["host.name"], "web-1");
        assert_eq!(resource["telemetry.sdk.language"], "rust");
        assert_eq!(span["scope"], "qiflow-test");
        assert_eq!(span["scope_version"], "1.2.3");
        assert_eq!(span["dropped_attributes_count"], 0);
    }
}

fn check_gzip_batch(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Ok);
    let provider = batch_provider(exporter(
        &receiver,
        Some(Compression::Gzip),
        Duration::from_secs(10),
    ));
    some_spans(&provider, 50);
    provider.force_flush().expect("the batch is exported");
    let spans = receiver.wait_for(50, WAIT);
    assert_eq!(spans.len(), 50);
    receiver.wait_for_requests(1, WAIT);
    assert_eq!(receiver.encodings(), ["gzip"], "one gzip-encoded export");
    let root = by_name(&spans, "batch root");
    assert_eq!(root["parent_span_id"], "");
    for i in 0..49 {
        let step = by_name(&spans, &format!("step {i}"));
        assert_eq!(step["parent_span_id"], root["span_id"]);
        assert_eq!(step["trace_id"], root["trace_id"]);
        assert_eq!(step["attributes"]["step"], i);
    }
    provider.shutdown().expect("the provider shuts down");
}

fn check_refuse(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Refuse);
    let provider = batch_provider(exporter(&receiver, None, Duration::from_secs(10)));
    some_spans(&provider, 3);
    let flushed = provider.force_flush();
    assert!(
        flushed.is_err(),
        "a refused export is an error: {flushed:?}"
    );
    receiver.wait_for_requests(1, WAIT);
    // Kept as decoded, and not sent again: 400 is permanent.
    assert_eq!(receiver.spans().len(), 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.requests(), 1, "a 400 is not retried");
    assert_eq!(receiver.errors(), Vec::<String>::new());
    let _ = provider.shutdown();

    let (status, body) = post(receiver.addr(), "/v1/traces", &protobuf_headers(), &empty());
    assert_eq!(status, 400);
    let refusal = RpcStatus::decode(&body[..]).expect("a google.rpc.Status body");
    assert_eq!(refusal.code, 3);
    assert!(refusal.message.contains("do not retry"), "{refusal:?}");
}

fn check_unavailable(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Unavailable);
    let provider = batch_provider(exporter(&receiver, None, Duration::from_secs(10)));
    some_spans(&provider, 1);
    let flushed = provider.force_flush();
    assert!(flushed.is_err(), "no export succeeds: {flushed:?}");
    // 503 is retryable: the stock exporter sends the batch again.
    receiver.wait_for_requests(2, WAIT);
    let spans = receiver.spans();
    assert!(spans.len() >= 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s["span_id"] == spans[0]["span_id"]));
    let _ = provider.shutdown();

    let (status, body) = post(receiver.addr(), "/v1/traces", &protobuf_headers(), &empty());
    assert_eq!(status, 503);
    assert_eq!(RpcStatus::decode(&body[..]).unwrap().code, 14);
}

fn check_hang(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Hang);
    // A raw request: read, never answered.
    let mut stream = send(receiver.addr(), "/v1/traces", &protobuf_headers(), &empty());
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0; 64];
    let read = stream.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a hung receiver answers nothing: {read:?} {:?}",
        read.as_ref().map(|n| String::from_utf8_lossy(&buf[..*n]))
    );
    receiver.wait_for_requests(1, WAIT);

    // The stock exporter gives up after its timeout (retrying within it).
    let provider = batch_provider(exporter(&receiver, None, Duration::from_millis(500)));
    some_spans(&provider, 2);
    let flushed = provider.force_flush();
    assert!(flushed.is_err(), "no answer is an error: {flushed:?}");
    receiver.wait_for_requests(2, WAIT);
    // Read, perhaps more than once (the exporter may retry within its timeout).
    let spans = receiver.wait_for(2, WAIT);
    let mut names: Vec<_> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names, ["batch root", "step 0"]);
    let _ = provider.shutdown();
}

fn check_what_it_cannot_take(backend: Backend) {
    let receiver = OtlpReceiver::start_with(backend, Mode::Ok);
    let garbage = post(
        receiver.addr(),
        "/v1/traces",
        &protobuf_headers(),
        b"\xff\xff\xff",
    );
    assert_eq!(garbage.0, 400);
    let json = post(
        receiver.addr(),
        "/v1/traces",
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(json.0, 415);
    let brotli = post(
        receiver.addr(),
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "br"),
        ],
        &empty(),
    );
    assert_eq!(brotli.0, 415);
    let logs = post(receiver.addr(), "/v1/logs", &protobuf_headers(), &empty());
    assert_eq!(logs.0, 404);
    receiver.wait_for_requests(4, WAIT);
    let errors = receiver.errors();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].contains("does not decode"), "{errors:#?}");
    assert!(errors[1].contains("application/json"), "{errors:#?}");
    assert!(errors[2].contains("\"br\""), "{errors:#?}");
    assert!(errors[3].contains("/v1/logs"), "{errors:#?}");
    assert_eq!(receiver.requests(), 4);
    assert!(receiver.spans().is_empty());
    // An empty export is fine: 200, nothing recorded.
    let ok = post(receiver.addr(), "/v1/traces", &protobuf_headers(), &empty());
    assert_eq!(ok.0, 200);
    receiver.wait_for_requests(5, WAIT);
    assert_eq!(receiver.errors().len(), 4);
    assert_eq!(receiver.encodings(), ["identity"]);
}

fn protobuf_headers() -> [(&'static str, &'static str); 1] {
    [("content-type", "application/x-protobuf")]
}

fn empty() -> Vec<u8> {
    ExportTraceServiceRequest::default().encode_to_vec()
}

/// Sends one HTTP/1.1 request (`Connection: close`) and returns the stream, unread.
fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// One request; the status and the body of the answer.
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = send(addr, path, headers, body);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head:?}"));
    (status, answer[split + 4..].to_vec())
}

// Tier 1: the in-process receiver.

#[test]
fn in_process_receives_the_stock_exporter_s_spans() {
    check_stock_export(Backend::InProcess);
}

#[test]
fn in_process_decodes_a_gzip_batch() {
    check_gzip_batch(Backend::InProcess);
}

#[test]
fn in_process_refuses_and_is_not_retried() {
    check_refuse(Backend::InProcess);
}

#[test]
fn in_process_unavailable_is_retried() {
    check_unavailable(Backend::InProcess);
}

#[test]
fn in_process_hang_never_answers() {
    check_hang(Backend::InProcess);
}

#[test]
fn in_process_reports_what_it_cannot_take() {
    check_what_it_cannot_take(Backend::InProcess);
}

#[test]
#[should_panic(expected = "-m pip install opentelemetry-proto==")]
fn a_missing_interpreter_fails_saying_how_to_install() {
    let _ = OtlpReceiver::python_with("/nonexistent/python3", &[], Mode::Ok);
}

#[test]
#[should_panic(expected = "-m pip install opentelemetry-proto==")]
fn a_missing_package_fails_saying_how_to_install() {
    // `-I -S`: isolated, without site-packages, so without opentelemetry-proto, as on a machine
    // that lacks it.
    let _ = OtlpReceiver::python_with("python3", &["-I", "-S"], Mode::Ok);
}

// Tier 2: the Python receiver, on the `opentelemetry-proto` package from PyPI.

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn python_receives_the_stock_exporter_s_spans() {
    check_stock_export(Backend::Python);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn python_decodes_a_gzip_batch() {
    check_gzip_batch(Backend::Python);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn python_refuses_and_is_not_retried() {
    check_refuse(Backend::Python);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn python_unavailable_is_retried() {
    check_unavailable(Backend::Python);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn python_hang_never_answers() {
    check_hang(Backend::Python);
}

#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn python_reports_what_it_cannot_take() {
    check_what_it_cannot_take(Backend::Python);
}

/// One export, sent to both receivers: the same JSON from each (so a test passing on one
/// passes on the other).
#[test]
#[ignore = "tier 2: needs python3 with opentelemetry-proto; run by .ci/tier2-otlp.sh"]
fn both_receivers_write_the_same_json() {
    let python = OtlpReceiver::python(Mode::Ok);
    let in_process = OtlpReceiver::start();
    let provider = simple_provider(vec![
        exporter(&python, Some(Compression::Gzip), Duration::from_secs(10)),
        exporter(&in_process, None, Duration::from_secs(10)),
    ]);
    a_request(&provider);
    some_spans(&provider, 5);
    provider.shutdown().expect("the provider shuts down");
    let sorted = |receiver: &OtlpReceiver| {
        let mut spans = receiver.wait_for(7, WAIT);
        spans.sort_by(|a, b| a["span_id"].as_str().cmp(&b["span_id"].as_str()));
        spans
    };
    let (from_python, from_rust) = (sorted(&python), sorted(&in_process));
    assert_eq!(from_python.len(), 7);
    assert_eq!(from_python, from_rust);
}
