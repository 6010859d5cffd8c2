//! OTLP/HTTP trace receivers for the export tests: `POST /v1/traces` on 127.0.0.1, decoded on
//! the official OTLP schema, each span turned into one JSON object, in two back-ends behind one
//! type, [`OtlpReceiver`]:
//!
//! - [`Backend::InProcess`] (tier 1, `cargo test`): an axum server on its own runtime, decoding
//!   with the prost message types of the `opentelemetry-proto` crate;
//! - [`Backend::Python`] (tier 2, `.ci/tier2-otlp.sh`): `otlp_receiver.py` beside this file, a
//!   child process decoding with the generated classes of the `opentelemetry-proto` package from
//!   PyPI. Its interpreter is `$QIFLOW_TEST_PYTHON`, else `python3` on `PATH`; without it, or
//!   without the package, starting it panics saying how to install them.
//!
//! Both write the same JSON for a span (the fields are listed at the top of
//! `otlp_receiver.py`): ids as lowercase hex, `kind` and `status.code` as the enum names
//! (`"SPAN_KIND_SERVER"`, `"STATUS_CODE_ERROR"`), attributes flattened to `{key: value}`,
//! `resource` the resource's attributes, `scope` the instrumentation scope's name. Every span a
//! receiver decodes is kept, whatever [`Mode`] makes it answer.
//!
//! The Python back-end's counters ([`OtlpReceiver::requests`], `errors`, `encodings`) come from
//! the lines it prints and may trail its answer by a moment: call
//! [`OtlpReceiver::wait_for_requests`] before reading them. Its spans are written before it
//! prints a request's line, so once `wait_for_requests(n)` returns, the spans of those `n`
//! requests are there.
//!
//! ```ignore
//! let receiver = OtlpReceiver::start(); // in-process, answering 200
//! // … point an exporter at receiver.endpoint() and export …
//! let spans = receiver.wait_for(2, Duration::from_secs(10));
//! let root = by_name(&spans, "GET /users/{id}");
//! assert_eq!(root["attributes"]["http.route"], "/users/{id}");
//! ```
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use prost::Message;
use serde_json::{Map, Value, json};

/// The path of the traces signal.
pub const TRACES_PATH: &str = "/v1/traces";

/// The Python packages the Python back-end needs, pinned (`.ci/run` installs this file).
pub const PYTHON_REQUIREMENTS: &str = include_str!("otlp-requirements.txt");

/// Which server decodes the exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In this process: axum and the `opentelemetry-proto` crate's prost types.
    InProcess,
    /// `otlp_receiver.py`: the `opentelemetry-proto` package from PyPI.
    Python,
}

/// What a receiver answers to an export it decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200` with an empty `ExportTraceServiceResponse`.
    Ok,
    /// Reads the request and never answers; the connection stays open.
    Hang,
    /// `400` with a `google.rpc.Status` body: permanent, so an exporter following the OTLP/HTTP
    /// specification drops the batch without retrying (the stock exporter does).
    Refuse,
    /// `503` with a `google.rpc.Status` body: retryable by the specification, so an exporter
    /// retries with backoff within its own limits (the stock one: 3 retries within its timeout).
    Unavailable,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Hang => "hang",
            Mode::Refuse => "refuse",
            Mode::Unavailable => "unavailable",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer (its first two fields).
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code`: 3 (invalid argument) when refused, 14 (unavailable).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Why.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// What a receiver has seen.
#[derive(Debug, Default)]
struct Log {
    /// Requests read, answered or not (those it could not take too).
    requests: usize,
    /// Spans decoded, in the order they arrived (in-process back-end; Python's are in a file).
    spans: Vec<Value>,
    /// Requests it could not take: wrong path, content type or encoding, undecodable body.
    errors: Vec<String>,
    /// The `Content-Encoding` of each request it decoded (`identity` without one).
    encodings: Vec<String>,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1; stopped when dropped.
pub struct OtlpReceiver {
    backend: Backend,
    mode: Mode,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    server: Server,
}

enum Server {
    InProcess(Option<tokio::runtime::Runtime>),
    Python(Python),
}

struct Python {
    child: Mutex<Child>,
    spans_file: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl OtlpReceiver {
    /// An in-process receiver answering `200`.
    pub fn start() -> Self {
        Self::start_with(Backend::InProcess, Mode::Ok)
    }

    /// An in-process receiver answering as `mode` says.
    pub fn start_mode(mode: Mode) -> Self {
        Self::start_with(Backend::InProcess, mode)
    }

    /// The Python receiver (`otlp_receiver.py`) answering as `mode` says.
    ///
    /// # Panics
    ///
    /// When the interpreter or its `opentelemetry-proto` package is missing, saying how to
    /// install them.
    pub fn python(mode: Mode) -> Self {
        Self::start_with(Backend::Python, mode)
    }

    /// A receiver of `backend` answering as `mode` says.
    pub fn start_with(backend: Backend, mode: Mode) -> Self {
        match backend {
            Backend::InProcess => Self::in_process(mode),
            Backend::Python => {
                let interpreter =
                    std::env::var("QIFLOW_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
                Self::python_with(&interpreter, &[], mode)
            }
        }
    }

    /// The URL to export traces to: `http://127.0.0.1:PORT/v1/traces` (what
    /// `opentelemetry-otlp`'s `with_endpoint` and `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` take).
    pub fn endpoint(&self) -> String {
        format!("http://{}{TRACES_PATH}", self.addr)
    }

    /// The base URL, `http://127.0.0.1:PORT` (what `OTEL_EXPORTER_OTLP_ENDPOINT` takes).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its back-end.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What it answers.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every span decoded so far, in the order they arrived.
    pub fn spans(&self) -> Vec<Value> {
        match &self.server {
            Server::InProcess(_) => self.log.lock().unwrap().spans.clone(),
            Server::Python(python) => read_spans_file(&python.spans_file),
        }
    }

    /// Requests read so far, answered or not, including those it could not take.
    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().requests
    }

    /// The requests it could not take (path, content type, encoding, undecodable body), why.
    pub fn errors(&self) -> Vec<String> {
        self.log.lock().unwrap().errors.clone()
    }

    /// The `Content-Encoding` of each export it decoded, in order (`"identity"` or `"gzip"`).
    pub fn encodings(&self) -> Vec<String> {
        self.log.lock().unwrap().encodings.clone()
    }

    /// Waits until at least `n` spans have arrived and returns every span so far.
    ///
    /// # Panics
    ///
    /// When fewer than `n` arrived within `timeout` (or the Python receiver died), with what it
    /// saw.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            self.check_alive();
            if Instant::now() >= deadline {
                panic!(
                    "{}: {} of {n} spans within {timeout:?}; {}",
                    self.describe(),
                    spans.len(),
                    self.seen()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until at least `n` requests have been read (answered or not).
    ///
    /// # Panics
    ///
    /// When fewer arrived within `timeout` (or the Python receiver died), with what it saw.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.requests() < n {
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "{}: {} of {n} requests within {timeout:?}; {}",
                self.describe(),
                self.requests(),
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn describe(&self) -> String {
        format!(
            "the {:?} OTLP receiver on {} (mode {})",
            self.backend,
            self.addr,
            self.mode.flag()
        )
    }

    fn seen(&self) -> String {
        let log = self.log.lock().unwrap();
        let mut seen = format!("{} requests, errors {:?}", log.requests, log.errors);
        if let Server::Python(python) = &self.server {
            seen.push_str(&format!(
                "; its stderr: {:?}",
                python.stderr.lock().unwrap()
            ));
        }
        seen
    }

    /// Panics when the Python receiver has exited.
    fn check_alive(&self) {
        if let Server::Python(python) = &self.server
            && let Ok(Some(status)) = python.child.lock().unwrap().try_wait()
        {
            panic!("{} exited ({status}); {}", self.describe(), self.seen());
        }
    }

    fn in_process(mode: Mode) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let state = Shared {
            log: log.clone(),
            mode,
        };
        let app = axum::Router::new()
            .route(TRACES_PATH, axum::routing::post(export))
            .fallback(not_traces)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            backend: Backend::InProcess,
            mode,
            addr,
            log,
            server: Server::InProcess(Some(runtime)),
        }
    }

    /// Starts `otlp_receiver.py` with `interpreter` (and `args` before the script).
    ///
    /// # Panics
    ///
    /// When the interpreter cannot be started or lacks the packages, saying how to get them.
    pub fn python_with(interpreter: &str, args: &[&str], mode: Mode) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
        let dir = tempfile::Builder::new()
            .prefix("qiflow-otlp-receiver-")
            .tempdir()
            .unwrap();
        let spans_file = dir.path().join("spans.jsonl");
        let install = format!(
            "install it: {interpreter} -m pip install {} (the pins of \
             qiflow-core/tests/support/otlp-requirements.txt), or point QIFLOW_TEST_PYTHON at a \
             python3 that has it",
            python_pins()
        );
        let mut child = Command::new(interpreter)
            .args(args)
            .arg("-u")
            .arg(&script)
            .args(["--mode", mode.flag()])
            .arg(&spans_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("the Python OTLP receiver: cannot run {interpreter:?} ({e}): it needs CPython 3 with the opentelemetry-proto package; {install}")
            });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The first line is the port; the rest are `request …` and `error …` lines.
        let log = Arc::new(Mutex::new(Log::default()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines_log = log.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = port_tx.send(first);
            }
            for line in lines.map_while(Result::ok) {
                let mut log = lines_log.lock().unwrap();
                if line.starts_with("request ") {
                    log.requests += 1;
                    // request <n> spans=<k> encoding=<e> answer=<a>
                    if let Some(encoding) = line
                        .split_whitespace()
                        .find_map(|word| word.strip_prefix("encoding="))
                    {
                        log.encodings.push(encoding.to_owned());
                    }
                } else if let Some(error) = line.strip_prefix("error ") {
                    // error <n> <reason>
                    log.requests += 1;
                    let reason = error.split_once(' ').map_or(error, |(_, reason)| reason);
                    log.errors.push(reason.to_owned());
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line.trim().parse::<u16>().unwrap_or_else(|_| {
                panic!("the Python OTLP receiver printed {line:?}, not its port")
            }),
            Err(_) => {
                // It exited (or hangs) before listening: say why.
                let _ = child.kill();
                let status = child.wait().unwrap();
                std::thread::sleep(Duration::from_millis(100)); // the stderr reader's last bytes
                let stderr = stderr.lock().unwrap().clone();
                if status.code() == Some(3) {
                    panic!(
                        "the Python OTLP receiver: {interpreter:?} lacks the opentelemetry-proto package; {install}. Its stderr: {stderr}"
                    );
                }
                panic!(
                    "the Python OTLP receiver ({interpreter:?} {}) did not start ({status}); its stderr: {stderr}",
                    script.display()
                );
            }
        };
        Self {
            backend: Backend::Python,
            mode,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            server: Server::Python(Python {
                child: Mutex::new(child),
                spans_file,
                stderr,
                _dir: dir,
            }),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        match &mut self.server {
            Server::InProcess(runtime) => {
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
            Server::Python(python) => {
                let mut child = python.child.lock().unwrap();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The span named `name` among `spans`.
///
/// # Panics
///
/// When there is none, or more than one, listing the names there are.
pub fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<_> = spans.iter().filter(|s| s["name"] == name).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "{} spans named {name:?} among {:?}",
            found.len(),
            spans.iter().map(|s| &s["name"]).collect::<Vec<_>>()
        ),
    }
}

/// `opentelemetry-proto==… protobuf==…`, from the requirements file.
pub fn python_pins() -> String {
    PYTHON_REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The complete lines of the Python receiver's spans file (a line being written is left for
/// the next read).
fn read_spans_file(path: &Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e} in {line:?}", path.display()))
        })
        .collect()
}

#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Log>>,
    mode: Mode,
}

const PROTOBUF: &str = "application/x-protobuf";

fn protobuf(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
}

fn refuse(shared: &Shared, status: StatusCode, reason: String) -> Response {
    let mut log = shared.log.lock().unwrap();
    log.requests += 1;
    log.errors.push(reason.clone());
    let body = RpcStatus {
        code: 3,
        message: reason,
    };
    protobuf(status, body.encode_to_vec())
}

async fn not_traces(State(shared): State<Shared>, request: axum::extract::Request) -> Response {
    let reason = format!(
        "{} {}: only POST {TRACES_PATH}",
        request.method(),
        request.uri()
    );
    refuse(&shared, StatusCode::NOT_FOUND, reason)
}

async fn export(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let content_type = text(header::CONTENT_TYPE);
    if content_type.split(';').next().unwrap_or("").trim() != PROTOBUF {
        let reason = format!("content-type {content_type:?}: not {PROTOBUF}");
        return refuse(&shared, StatusCode::UNSUPPORTED_MEDIA_TYPE, reason);
    }
    let encoding = match text(header::CONTENT_ENCODING) {
        e if e.is_empty() => "identity".to_owned(),
        e => e,
    };
    let decoded = match encoding.as_str() {
        "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .map(|_| out)
                .map_err(|e| e.to_string())
        }
        other => {
            let reason = format!("content-encoding {other:?}: not gzip");
            return refuse(&shared, StatusCode::UNSUPPORTED_MEDIA_TYPE, reason);
        }
    };
    let request = match decoded
        .and_then(|bytes| ExportTraceServiceRequest::decode(&bytes[..]).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(e) => {
            let reason = format!("body does not decode ({encoding}): {e}");
            return refuse(&shared, StatusCode::BAD_REQUEST, reason);
        }
    };
    {
        let mut log = shared.log.lock().unwrap();
        log.spans.extend(spans_json(&request));
        log.requests += 1;
        log.encodings.push(encoding);
    }
    match shared.mode {
        Mode::Ok => protobuf(
            StatusCode::OK,
            ExportTraceServiceResponse::default().encode_to_vec(),
        ),
        Mode::Hang => std::future::pending().await,
        Mode::Refuse => protobuf(
            StatusCode::BAD_REQUEST,
            RpcStatus {
                code: 3,
                message: "refused by the qiflow test receiver (permanent: do not retry)".into(),
            }
            .encode_to_vec(),
        ),
        Mode::Unavailable => protobuf(
            StatusCode::SERVICE_UNAVAILABLE,
            RpcStatus {
                code: 14,
                message: "unavailable (the qiflow test receiver's unavailable mode)".into(),
            }
            .encode_to_vec(),
        ),
    }
}

/// Every span of `request` as the receivers' JSON.
pub fn spans_json(request: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map_or_else(Map::new, |r| attributes(&r.attributes));
        for scope_spans in &resource_spans.scope_spans {
            let (scope, version) = scope_spans
                .scope
                .as_ref()
                .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
            for span in &scope_spans.spans {
                out.push(span_json(span, &resource, scope, version));
            }
        }
    }
    out
}

fn span_json(span: &Span, resource: &Map<String, Value>, scope: &str, version: &str) -> Value {
    let kind = span::SpanKind::try_from(span.kind)
        .map_or_else(|_| span.kind.to_string(), |k| k.as_str_name().to_owned());
    let (code, message) = span
        .status
        .as_ref()
        .map_or((0, ""), |s| (s.code, &*s.message));
    let code = status::StatusCode::try_from(code)
        .map_or_else(|_| code.to_string(), |c| c.as_str_name().to_owned());
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "time_unix_nano": e.time_unix_nano,
                "attributes": attributes(&e.attributes),
            })
        })
        .collect();
    let links: Vec<Value> = span
        .links
        .iter()
        .map(|l| {
            json!({
                "trace_id": hex::encode(&l.trace_id),
                "span_id": hex::encode(&l.span_id),
                "trace_state": l.trace_state,
                "attributes": attributes(&l.attributes),
            })
        })
        .collect();
    json!({
        "trace_id": hex::encode(&span.trace_id),
        "span_id": hex::encode(&span.span_id),
        "parent_span_id": hex::encode(&span.parent_span_id),
        "trace_state": span.trace_state,
        "flags": span.flags,
        "name": span.name,
        "kind": kind,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "attributes": attributes(&span.attributes),
        "events": events,
        "links": links,
        "dropped_attributes_count": span.dropped_attributes_count,
        "dropped_events_count": span.dropped_events_count,
        "dropped_links_count": span.dropped_links_count,
        "status": {"code": code, "message": message},
        "resource": resource,
        "scope": scope,
        "scope_version": version,
    })
}

fn attributes(key_values: &[KeyValue]) -> Map<String, Value> {
    key_values
        .iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn value(value: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => json!(s),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::IntValue(i)) => json!(i),
        // serde_json has no NaN or infinity: null, as the Python receiver writes.
        Some(V::DoubleValue(d)) => json!(d),
        Some(V::ArrayValue(a)) => a.values.iter().map(|v| self::value(Some(v))).collect(),
        Some(V::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(V::BytesValue(b)) => json!(hex::encode(b)),
        // Not set, or a string index (profiles only).
        Some(V::StringValueStrindex(_)) | None => Value::Null,
    }
}
