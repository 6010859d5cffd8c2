//! The conformance suite shared by the three examples (`quickstart` on axum, `actix-app` on
//! actix-web, `tower-hyper` on plain hyper + tower): the same cases, checked identically against
//! each example's real binary over loopback HTTP/1.1.
//!
//! Not a crate: each example includes this file in an integration test with
//! `#[path = "../../conformance/cases.rs"] mod cases;` and calls
//! `cases::run_all(env!("CARGO_BIN_EXE_<example>"))`. It needs nothing beyond the standard
//! library and `serde_json` (a dependency of every example).
//!
//! What [`run_all`] checks, after starting the binary on a free port in a fresh temp dir (logs to
//! `<tmp>/logs`, the audit trail to `<tmp>/audit`, stdout logging off, spans exported over OTLP
//! to a receiver in the suite, no `QIFLOW*` or `OTEL_*` variable inherited):
//!
//! - (a) request ids are generated: a UUID v7 on `GET /users/7` (200, JSON);
//! - (b) a sane incoming `x-request-id` is honoured and echoed, an insane one (`bad"quote`) is
//!   replaced;
//! - (c) `/fail` → 500, `/panic` → 500, each with `x-request-id` and the JSON body
//!   `{"error":"internal server error","request_id":…}` (the same id, no internals), and the
//!   server lives on; `POST /login` → 200 for `demo`/`demo` and 401 otherwise, unknown paths →
//!   404, `/slow?ms=N` → 200;
//! - (d) `/metrics`: the RED series with route templates (`/users/{id}`, `unmatched`), no raw
//!   path in any label, the histogram, the in-flight gauge, `qiflow_build_info` (the only series
//!   with the `version` label; every series has `service` and `environment`), `# HELP` for every
//!   family, and no series for qiflow's own endpoints;
//! - (e) `/health/live`, `/health/ready`, `/health`: 200 JSON `{"status":"healthy","checks":{…}}`
//!   with the operator token, `{"status":"healthy"}` alone without;
//! - (i) closed by default: every `/qiflow/` view and write answers 401 without a token, with a
//!   wrong one or another scheme (a JSON body saying how to get in, `www-authenticate`);
//!   `/metrics` answers; the token made at start (`data/admin-token`, 64 hex digits, `0600`)
//!   opens the views; 404 and 405 only behind the token;
//! - (j) silences: a silence of everything needs `"all": true`, none outlasts `max_silence`,
//!   each attempt is audited with the token's name as actor, deleting too;
//! - (k) operator requests have `qiflow::admin` lines (refusals at warn), the start-up line names
//!   the token file, no plain start-up line is printed (stdout is not a terminal), and the token
//!   is in no other file;
//! - (l) a second server with `[[admin.tokens]]`: a `read` token reads and gets 403 on a write
//!   (audited as denied under its name), a `write` token's silence is audited under its name,
//!   and no token file is made;
//! - (m) on that server, `[audit] routes = ["GET /slow"]`: a client that leaves while the
//!   handler sleeps leaves a record: `aborted` where the framework drops the request (axum,
//!   hyper), the handler's outcome where it runs the handler to its end (actix-web); the `read`
//!   token's `PUT /qiflow/api/loggers` is 403 and audited as denied;
//! - (p) the dashboard: `GET /qiflow/` from a browser is the page (public, with its CSP, no
//!   data), its script and style answer (gzip, `304` with the ETag), `/qiflow/api/overview`
//!   answers 401 to a stranger and the suite's requests, routes and errors with the token;
//! - (o) the log level at runtime: `GET /qiflow/api/loggers` answers the filter in force
//!   (`"info"`, from `[logging] level`: `RUST_LOG` is not passed on); a `PUT` of a filter that
//!   does not parse is 400 naming the directive and changes nothing; a `PUT` of
//!   `"info,<example>=debug"` with the write token turns on the `debug!` line of
//!   `GET /users/{id}`: it is in the log for the request after the change, not for those before
//!   it nor after the level is put back; each attempt is audited (actor `admin`) and each change
//!   logged at `qiflow::admin` with the previous and the new filter;
//! - (f) SIGTERM while a request is in flight: the request finishes, the process exits 0 within
//!   15 s;
//! - (g) the log file: exactly one access line (`"target":"qiflow::access"`) per observed request,
//!   with `method`, `route`, `path`, `status`, `latency_ms`, `request_id`, `user_agent`; an `error`
//!   field on `/fail`, `"panicked":true` on `/panic`, no error on 2xx and 4xx (4xx are not
//!   errors); no access line for `/metrics` or the health endpoints; the login password nowhere.
//! - (h) the audit trail: `GET /qiflow/api/audit?action=user.login` lists the two logins
//!   (`mallory` denied, `demo` success, newest first) with their request ids; after the graceful
//!   shutdown the trail on disk has exactly those two records, is sealed by a digest (no open
//!   tail), and every line's hash chain holds.
//! - (n) W3C trace context: an incoming `traceparent` is continued (its trace id on the access
//!   line, the handler's log line with the same span id, and the error report of `/fail`), a
//!   malformed one starts a new trace and is counted, every access line has a `trace_id` and a
//!   `span_id`; responses carry `traceparent` only with `[tracing] respond = true` (the second
//!   server); a third server with `propagation = "none"` ignores an incoming `traceparent` (a
//!   trace of its own on the access and handler lines, nothing counted as malformed, no
//!   `traceparent` on the response). The exported spans (the binaries are built with qiflow-core's `otlp` feature; the
//!   first server has `[tracing] otlp_endpoint` pointing at the suite's own OTLP/HTTP receiver,
//!   which decodes the protobuf by hand and is itself checked on a hand-built export first):
//!   after shutdown every observed request was exported exactly once as a `SERVER` span (its
//!   `qiflow.request_id` attribute), the traced `GET /hello` with the incoming trace id, the
//!   caller's span as parent, the span id of its access line, its route and status; the traced
//!   `/fail` with status `ERROR`; the request with the malformed `traceparent` as the root of a
//!   new trace (its access line's trace id, no parent, no other span in it); every export was
//!   uncompressed protobuf `POST /v1/traces` that decoded.
//! - (q) permission checks, on a server of their own (its own temp dir and audit trail, so the
//!   counts of (h) do not move) with a `write` token, the demo's `[authz]` roles (`viewer`:
//!   `orders:read`; `admin` inherits `viewer` and has `orders:*`), the users `demo`, `admin`,
//!   `probe` and `trickle`, and `[authz.denial_alert] count = 5, window = "10m"`. The examples'
//!   stand-in authentication takes the user from `X-Demo-User`. No user: `GET /orders` is 401
//!   naming `orders:read`. `demo` reads (200) but `POST /orders` is 403 naming `orders:write`
//!   and not its roles, audited as `authz.denied` (actor `demo`, resource `orders:write`,
//!   outcome `denied`, the 403's request id). `admin` reads through `viewer` and writes through
//!   `orders:*`. `PUT /qiflow/api/authz/users/demo` (`{"roles":["admin"]}`) is 401 without a
//!   token and changes nothing; with the token it is 200, `demo` may write at once, and the
//!   change is audited as `authz.changed` (actor the token's name, roles before and after);
//!   `DELETE` gives `demo` back its configured roles (403 again). Two denials of `trickle`
//!   and seven of `probe` raise exactly one `authz_denials` alert, once, for `probe`.
//!   `GET /qiflow/api/authz` shows `admin`'s effective permissions and every denial, newest
//!   first; `GET /qiflow/api/audit/stats` counts them; `/metrics` has
//!   `qiflow_authz_decisions_total{decision="denied",permission="orders:write"}`. After the
//!   graceful shutdown the trail is sealed, its chain holds, and it has every `authz.denied`
//!   and `authz.changed` record. A configuration whose roles inherit in a cycle is refused at
//!   start: the binary exits non-zero within 10 s, its stderr naming `authz.roles.a.inherits`
//!   and the cycle.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The user agent every request of the suite sends; the access lines must carry it.
const USER_AGENT: &str = "qiflow-conformance/1";

/// A wrong password sent to `POST /login`: it must appear in no log line and no output.
const CANARY_PASSWORD: &str = "CANARY-pw-123";

/// The trace and the caller's span of the incoming `traceparent` the suite sends.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// How many distinct unknown paths the suite requests.
const UNKNOWN_PATHS: usize = 20;

/// How long the binary may take to answer `/health/live` after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the binary may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one request may take (the slowest is the in-flight `/slow` during shutdown).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the request in flight at SIGTERM runs.
const IN_FLIGHT_MS: u64 = 1_500;

/// How long the binary may take to refuse a configuration it cannot run with and exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every case against the server binary `bin`, panicking with a message naming the case
/// and the stack on the first failure. The temp dir is removed on success and kept (its path in
/// the message) on failure.
pub(crate) fn run_all(bin: &str) {
    the_otlp_decoder_reads_what_it_should(&stack_name(bin));
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let mut server = Server::start(
        bin,
        None,
        &[("QIFLOW__TRACING__OTLP_ENDPOINT", endpoint.as_str())],
    );
    let mut suite = Suite {
        addr: server.addr,
        stack: stack_name(bin),
        observed: Vec::new(),
        token: server.generated_token(),
        operator_writes: 0,
    };

    suite.request_ids_are_generated();
    suite.request_ids_are_honoured_or_replaced();
    suite.demo_routes_answer();
    suite.metrics_use_route_templates();
    suite.health_endpoints_answer();
    suite.the_operator_surface_is_closed_to_strangers();
    suite.trace_context_is_continued();
    suite.errors_are_captured();
    suite.baselines_are_recorded();
    suite.the_dashboard_is_served();
    suite.logins_are_audited();
    suite.operator_writes_are_audited();
    let users = suite.the_log_level_changes_at_runtime();
    suite.sigterm_finishes_in_flight_requests_and_exits_0(&mut server);
    suite.access_lines_match_the_requests(&server.dir);
    suite.log_lines_carry_the_trace(&server.dir);
    suite.exported_spans_continue_the_trace(&server.dir, &receiver);
    suite.debug_lines_follow_the_level(&server.dir, &users);
    suite.operator_requests_are_logged_without_the_token(&server.dir);
    suite.the_password_is_never_written(&server.dir);
    suite.the_audit_trail_is_sealed(&server.dir);
    server.cleanup();

    scoped_tokens_read_and_write(bin);
    propagation_none_ignores_the_incoming_trace(bin);
    permission_checks_are_enforced_and_audited(bin);
}

/// A request the middleware observed, as the client saw it.
#[derive(Debug, Clone)]
struct Observed {
    method: &'static str,
    /// The path without the query string.
    path: String,
    status: u16,
    request_id: String,
}

/// The state the cases share: the server's address and the observed requests so far.
struct Suite {
    addr: SocketAddr,
    stack: String,
    observed: Vec<Observed>,
    /// The operator token the server made at start (`data/admin-token`).
    token: String,
    /// Operator writes sent (each is one audit record).
    operator_writes: usize,
}

impl Suite {
    /// Sends a request and returns the response, failing the suite on a transport error.
    fn send(
        &self,
        method: &'static str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, target, headers, body)
            .unwrap_or_else(|e| panic!("[{}] {method} {target}: {e}", self.stack))
    }

    /// Sends a request to the operator surface with the server's generated token.
    fn operator(&self, method: &'static str, target: &str, body: &[u8]) -> Response {
        let bearer = format!("Bearer {}", self.token);
        self.send(method, target, &[("authorization", &bearer)], body)
    }

    /// Sends a request the middleware observes, checks its status and that it carries a request
    /// id, and remembers it for the access-line case.
    fn observed(
        &mut self,
        method: &'static str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        status: u16,
    ) -> Response {
        let response = self.send(method, target, headers, body);
        assert_eq!(
            response.status,
            status,
            "[{}] {method} {target}: status; body: {}",
            self.stack,
            response.text()
        );
        let request_id = response
            .header("x-request-id")
            .unwrap_or_else(|| {
                panic!(
                    "[{}] {method} {target}: no x-request-id on the response: {:?}",
                    self.stack, response.headers
                )
            })
            .to_owned();
        let path = target.split('?').next().unwrap_or(target).to_owned();
        self.observed.push(Observed {
            method,
            path,
            status,
            request_id,
        });
        response
    }

    /// (n) W3C trace context: a valid incoming `traceparent` is continued (its trace id on the
    /// error report of `/fail`, and, checked after shutdown, on the access lines and the
    /// handler's log lines); a malformed one starts a new trace and is counted on
    /// `qiflow_trace_context_invalid_total{header="traceparent"}`; with `[tracing] respond` off
    /// (the default) no response carries `traceparent`.
    fn trace_context_is_continued(&mut self) {
        let stack = self.stack.clone();
        let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
        for (path, id, status) in [("/hello", "trace-hello", 200), ("/fail", "trace-fail", 500)] {
            let response = self.observed(
                "GET",
                path,
                &[("traceparent", &traceparent), ("x-request-id", id)],
                b"",
                status,
            );
            assert!(
                response.header("traceparent").is_none(),
                "[{stack}] respond is off, yet {path} answered a traceparent: {:?}",
                response.headers
            );
        }
        self.observed(
            "GET",
            "/users/8",
            &[
                ("traceparent", "00-not-a-trace-01"),
                ("x-request-id", "trace-bad"),
            ],
            b"",
            200,
        );
        let metrics = without_global_labels(&self.send("GET", "/metrics", &[], b"").text());
        assert_eq!(
            sample(
                &metrics,
                "qiflow_trace_context_invalid_total{header=\"traceparent\"}"
            ),
            Some(1.0),
            "[{stack}] the malformed traceparent is counted:\n{}",
            tail(&metrics)
        );
        // The error report of /fail carries the incoming trace (reports reach the store on
        // qiflow's worker: wait, bounded).
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let response = self.operator("GET", "/qiflow/api/errors", b"");
            let json: Value = serde_json::from_slice(&response.body).unwrap_or_default();
            let traced = json["groups"].as_array().is_some_and(|groups| {
                groups
                    .iter()
                    .any(|g| g["last_request_id"] == "trace-fail" && g["last_trace_id"] == TRACE_ID)
            });
            if traced {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{stack}] no error group with the trace id of /fail: {json}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (n, after shutdown) every access line has a trace id and a span id; the requests that
    /// sent a valid `traceparent` continue its trace with a span of their own, and the handler's
    /// line inside such a request carries the same ids as its access line; the malformed one
    /// started a new trace.
    fn log_lines_carry_the_trace(&self, dir: &Path) {
        let stack = &self.stack;
        let log = dir.join("logs").join("app.log");
        let text = std::fs::read_to_string(&log)
            .unwrap_or_else(|e| panic!("[{stack}] cannot read {}: {e}", log.display()));
        let values: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let is_hex = |v: &Value, len: usize| {
            v.as_str().is_some_and(|s| {
                s.len() == len
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        };
        let access = |id: &str| {
            values
                .iter()
                .find(|v| v["target"] == "qiflow::access" && v["request_id"] == id)
                .unwrap_or_else(|| panic!("[{stack}] no access line for {id}"))
        };
        for line in values.iter().filter(|v| v["target"] == "qiflow::access") {
            assert!(is_hex(&line["trace_id"], 32), "[{stack}] trace_id: {line}");
            assert!(is_hex(&line["span_id"], 16), "[{stack}] span_id: {line}");
        }
        for id in ["trace-hello", "trace-fail"] {
            let line = access(id);
            assert_eq!(line["trace_id"], TRACE_ID, "[{stack}] {line}");
            assert_ne!(line["span_id"], PARENT_SPAN_ID, "[{stack}] {line}");
        }
        let hello = access("trace-hello");
        let said = values
            .iter()
            .find(|v| v["message"] == "said hello" && v["request_id"] == "trace-hello")
            .unwrap_or_else(|| panic!("[{stack}] no handler line for trace-hello"));
        assert_eq!(said["trace_id"], TRACE_ID, "[{stack}] {said}");
        assert_eq!(said["span_id"], hello["span_id"], "[{stack}] {said}");
        let bad = access("trace-bad");
        assert_ne!(bad["trace_id"], TRACE_ID, "[{stack}] {bad}");
    }

    /// (n, after shutdown) the exported spans: the guard's shutdown flushed one `SERVER` span
    /// per observed request to the OTLP receiver (each request sampled: `sample_ratio` is 1.0 and
    /// the incoming `traceparent` is sampled). The traced `GET /hello` continues the incoming
    /// trace with the caller's span as its parent and the span id of its access line; the
    /// traced `/fail` has status `ERROR`; the malformed `traceparent`'s request is the root of a
    /// trace of its own.
    fn exported_spans_continue_the_trace(&self, dir: &Path, receiver: &OtlpReceiver) {
        let stack = &self.stack;
        let (spans, errors) = receiver.take();
        assert!(
            errors.is_empty(),
            "[{stack}] the OTLP receiver refused or could not decode exports: {errors:?}"
        );
        let servers: Vec<&ExportedSpan> = spans
            .iter()
            .filter(|s| s.kind == SPAN_KIND_SERVER)
            .collect();
        let exported = |id: &str| -> Vec<&ExportedSpan> {
            servers
                .iter()
                .copied()
                .filter(|s| s.attribute("qiflow.request_id") == Some(id))
                .collect()
        };
        for request in &self.observed {
            let found = exported(&request.request_id);
            assert_eq!(
                found.len(),
                1,
                "[{stack}] {request:?}: SERVER spans exported with its request id: {found:#?}\n\
                 ({} spans received)",
                spans.len()
            );
        }
        let log = dir.join("logs").join("app.log");
        let text = std::fs::read_to_string(&log)
            .unwrap_or_else(|e| panic!("[{stack}] cannot read {}: {e}", log.display()));
        let access = |id: &str| -> Value {
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["target"] == "qiflow::access" && v["request_id"] == id)
                .unwrap_or_else(|| panic!("[{stack}] no access line for {id}"))
        };

        for (id, name, status, code) in [
            ("trace-hello", "GET /hello", 200, 0),
            ("trace-fail", "GET /fail", 500, STATUS_CODE_ERROR),
        ] {
            let span = exported(id)[0];
            let line = access(id);
            assert_eq!(span.name, name, "[{stack}] {id}: {span:#?}");
            assert_eq!(span.trace_id, TRACE_ID, "[{stack}] {id}: {span:#?}");
            assert_eq!(
                span.parent_span_id, PARENT_SPAN_ID,
                "[{stack}] {id}: the caller's span is the parent: {span:#?}"
            );
            assert_eq!(
                Some(span.span_id.as_str()),
                line["span_id"].as_str(),
                "[{stack}] {id}: the exported span is the access line's: {span:#?}\n{line}"
            );
            assert_eq!(
                span.status_code, code,
                "[{stack}] {id}: status code: {span:#?}"
            );
            assert_eq!(
                span.attributes.get("http.response.status_code"),
                Some(&Value::from(status)),
                "[{stack}] {id}: {span:#?}"
            );
            assert_eq!(
                span.attribute("http.route"),
                name.strip_prefix("GET "),
                "[{stack}] {id}: {span:#?}"
            );
            assert!(
                0 < span.start_unix_nano && span.start_unix_nano <= span.end_unix_nano,
                "[{stack}] {id}: span times: {span:#?}"
            );
            assert_eq!(
                span.resource.get("service.name"),
                Some(&Value::from("conformance")),
                "[{stack}] {id}: the resource: {span:#?}"
            );
        }

        let bad = exported("trace-bad")[0];
        let line = access("trace-bad");
        assert!(
            bad.trace_id != TRACE_ID && Some(bad.trace_id.as_str()) == line["trace_id"].as_str(),
            "[{stack}] the malformed traceparent's request is exported with the new trace of its \
             access line ({line}): {bad:#?}"
        );
        assert!(
            bad.parent_span_id.is_empty(),
            "[{stack}] the malformed traceparent's request has no parent: {bad:#?}"
        );
        let sharing = servers
            .iter()
            .filter(|s| s.trace_id == bad.trace_id)
            .count();
        assert_eq!(
            sharing, 1,
            "[{stack}] the new trace {} is that request's alone",
            bad.trace_id
        );
    }

    /// (a) `GET /users/7`: 200, JSON, and a generated UUID v7 request id; ids differ per request.
    fn request_ids_are_generated(&mut self) {
        let stack = self.stack.clone();
        let response = self.observed("GET", "/users/7", &[], b"", 200);
        let id = response
            .header("x-request-id")
            .unwrap_or_default()
            .to_owned();
        assert!(
            is_uuid_v7(&id),
            "[{stack}] generated id is not a UUID v7: {id:?}"
        );
        assert!(
            response
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "[{stack}] /users/7 content-type: {:?}",
            response.headers
        );
        let user: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "[{stack}] /users/7 body is not JSON ({e}): {}",
                response.text()
            )
        });
        assert_eq!(user["id"], 7, "[{stack}] /users/7 body: {user}");

        let again = self.observed("GET", "/users/7", &[], b"", 200);
        let other = again.header("x-request-id").unwrap_or_default();
        assert!(is_uuid_v7(other), "[{stack}] {other:?}");
        assert_ne!(other, id, "[{stack}] two requests got the same id");
    }

    /// (b) A sane incoming id is honoured and echoed; an insane one is replaced by a new UUID v7.
    fn request_ids_are_honoured_or_replaced(&mut self) {
        let stack = self.stack.clone();
        let honoured = self.observed("GET", "/hello", &[("x-request-id", "conf-123")], b"", 200);
        assert_eq!(
            honoured.header("x-request-id"),
            Some("conf-123"),
            "[{stack}] a sane incoming x-request-id is echoed"
        );
        let replaced = self.observed("GET", "/hello", &[("x-request-id", "bad\"quote")], b"", 200);
        let id = replaced.header("x-request-id").unwrap_or_default();
        assert!(
            is_uuid_v7(id),
            "[{stack}] an insane x-request-id is replaced by a UUID v7, got {id:?}"
        );
    }

    /// A 500 of a handler error or a panic: `application/json`, exactly
    /// `{"error":"internal server error","request_id":<its x-request-id>}`, no internals.
    fn is_qiflow_500(&self, response: &Response, path: &str) {
        let stack = &self.stack;
        assert!(
            response
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "[{stack}] {path}: content-type: {:?}",
            response.headers
        );
        let id = response.header("x-request-id").unwrap_or_default();
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!(
                "[{stack}] {path}: the 500's body is not JSON ({e}): {:?}",
                response.text()
            )
        });
        assert_eq!(
            body,
            serde_json::json!({"error": "internal server error", "request_id": id}),
            "[{stack}] {path}: the 500's body"
        );
    }

    /// (c) The demo routes: handler error and panic → 500 with qiflow's JSON body (the request
    /// id, no internals; the server lives on), login 200/401, unknown paths 404, `/slow` 200.
    fn demo_routes_answer(&mut self) {
        let stack = self.stack.clone();
        let hello = self.observed("GET", "/hello", &[], b"", 200);
        assert!(
            hello.text().contains("hello"),
            "[{stack}] /hello body: {}",
            hello.text()
        );
        let failed = self.observed("GET", "/fail", &[], b"", 500);
        self.is_qiflow_500(&failed, "/fail");
        for _ in 0..2 {
            let panicked = self.observed("GET", "/panic", &[], b"", 500);
            self.is_qiflow_500(&panicked, "/panic");
            // The server lives on after a panic.
            self.observed("GET", "/hello", &[], b"", 200);
        }
        let json = [("content-type", "application/json")];
        let good = br#"{"user":"demo","password":"demo"}"#;
        self.observed("POST", "/login", &json, good, 200);
        let bad = format!(r#"{{"user":"mallory","password":"{CANARY_PASSWORD}"}}"#);
        self.observed("POST", "/login", &json, bad.as_bytes(), 401);
        for i in 0..UNKNOWN_PATHS {
            self.observed("GET", &format!("/conformance/probe-{i}.php"), &[], b"", 404);
        }
        let slow = self.observed("GET", "/slow?ms=20", &[], b"", 200);
        assert!(
            slow.text().contains("20"),
            "[{stack}] /slow?ms=20 body: {}",
            slow.text()
        );
    }

    /// (d) `/metrics`: the RED series by route template, bounded labels, HELP text.
    fn metrics_use_route_templates(&mut self) {
        let stack = self.stack.clone();
        let response = self.send("GET", "/metrics", &[], b"");
        assert_eq!(
            response.status,
            200,
            "[{stack}] /metrics: {}",
            response.text()
        );
        assert!(
            response
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("text/plain")),
            "[{stack}] /metrics content-type: {:?}",
            response.headers
        );
        let raw = response.text();
        // Every series carries the global labels from `[service]` (set by `start` below) ...
        for line in raw.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            assert!(
                line.contains(GLOBAL_LABELS),
                "[{stack}] /metrics: {line:?} lacks the global labels {GLOBAL_LABELS}"
            );
        }
        // The version is on qiflow_build_info only: a deploy does not start every series anew.
        // So is the instance id (generated and kept in the state directory here).
        let build_info =
            format!("qiflow_build_info{{{GLOBAL_LABELS},version=\"9.9.9\",service_instance_id=\"");
        let instance = raw
            .lines()
            .find_map(|l| l.strip_prefix(build_info.as_str())?.strip_suffix("\"} 1"));
        assert!(
            instance.is_some_and(|id| !id.is_empty()),
            "[{stack}] /metrics lacks qiflow_build_info with the version and the instance id:\n{raw}"
        );
        for line in raw.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                !line.contains("version=") || line.starts_with("qiflow_build_info{"),
                "[{stack}] /metrics: {line:?} carries the version (only qiflow_build_info may)"
            );
        }
        // ... which the checks below leave out.
        let text = without_global_labels(&raw);
        let panics = self.observed.iter().filter(|o| o.path == "/panic").count();
        for (series, value) in [
            (
                r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"}"#,
                2,
            ),
            (
                r#"http_server_requests_total{method="GET",route="/fail",status="500"}"#,
                1,
            ),
            (
                r#"http_server_requests_total{method="GET",route="/panic",status="500"}"#,
                panics,
            ),
            (
                r#"http_server_requests_total{method="POST",route="/login",status="200"}"#,
                1,
            ),
            (
                r#"http_server_requests_total{method="POST",route="/login",status="401"}"#,
                1,
            ),
            (
                r#"http_server_requests_total{method="GET",route="unmatched",status="404"}"#,
                UNKNOWN_PATHS,
            ),
            (
                r#"http_server_requests_total{method="GET",route="/slow",status="200"}"#,
                1,
            ),
            (
                r#"http_server_active_requests{method="GET",route="/users/{id}"}"#,
                0,
            ),
            (
                r#"http_server_request_duration_seconds_count{method="GET",route="unmatched",status="404"}"#,
                UNKNOWN_PATHS,
            ),
        ] {
            assert_eq!(
                sample(&text, series),
                Some(value as f64),
                "[{stack}] /metrics: {series} should be {value}:\n{text}"
            );
        }
        for needle in [
            r#"http_server_request_duration_seconds_bucket{method="GET",route="/users/{id}",status="200",le=""#,
            r#"http_server_request_duration_seconds_count{method="GET",route="/panic",status="500"}"#,
            "# TYPE http_server_request_duration_seconds histogram",
            "# TYPE http_server_requests_total counter",
            "# TYPE http_server_active_requests gauge",
        ] {
            assert!(
                text.contains(needle),
                "[{stack}] /metrics lacks {needle}:\n{text}"
            );
        }
        // Route labels are templates: no raw path, and qiflow's own endpoints are not observed.
        for raw in [
            "probe-",
            "/users/7",
            "/conformance",
            "route=\"/health",
            "route=\"/metrics",
        ] {
            assert!(
                !text.contains(raw),
                "[{stack}] /metrics contains {raw:?}:\n{text}"
            );
        }
        // Every family has HELP text (promtool would refuse it otherwise).
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for family in [
            "http_server_requests_total",
            "http_server_request_duration_seconds",
            "http_server_active_requests",
            "qiflow_build_info",
        ] {
            assert!(
                families.contains(&family),
                "[{stack}] /metrics has no # TYPE for {family}:\n{text}"
            );
        }
        for family in families {
            assert!(
                text.lines().any(|l| l
                    .strip_prefix("# HELP ")
                    .and_then(|l| l.strip_prefix(family))
                    .is_some_and(|rest| rest.starts_with(' ') && rest.len() > 1)),
                "[{stack}] /metrics has no # HELP for {family}:\n{text}"
            );
        }
    }

    /// (e) The health endpoints: 200, JSON, healthy, with a `checks` object for the operator;
    /// readiness shows strangers its status only.
    fn health_endpoints_answer(&mut self) {
        let stack = self.stack.clone();
        for path in ["/health/ready", "/health"] {
            let response = self.send("GET", path, &[], b"");
            assert_eq!(
                (response.status, response.text().as_str()),
                (200, r#"{"status":"healthy"}"#),
                "[{stack}] {path} without a token shows the status only"
            );
        }
        for path in ["/health/live", "/health/ready", "/health"] {
            let response = self.operator("GET", path, b"");
            assert_eq!(
                response.status,
                200,
                "[{stack}] {path}: {}",
                response.text()
            );
            assert!(
                response
                    .header("content-type")
                    .is_some_and(|ct| ct.starts_with("application/json")),
                "[{stack}] {path} content-type: {:?}",
                response.headers
            );
            let report: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
                panic!("[{stack}] {path} is not JSON ({e}): {}", response.text())
            });
            assert_eq!(report["status"], "healthy", "[{stack}] {path}: {report}");
            assert!(
                report["checks"].is_object(),
                "[{stack}] {path} has no checks object: {report}"
            );
        }
    }

    /// (e2) `/qiflow/api/errors`: the panic and the handler error are captured, with the same
    /// report fields on every stack; no 4xx is.
    fn errors_are_captured(&mut self) {
        let stack = self.stack.clone();
        // Reports reach the store on qiflow's worker, each panic's after its stack is resolved
        // there: wait for all of them (bounded).
        let panics = self.observed.iter().filter(|o| o.path == "/panic").count();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let json = loop {
            let response = self.operator("GET", "/qiflow/api/errors", b"");
            assert_eq!(
                response.status,
                200,
                "[{stack}] /qiflow/api/errors: {}",
                response.text()
            );
            let json: Value = serde_json::from_slice(&response.body)
                .unwrap_or_else(|e| panic!("[{stack}] /qiflow/api/errors is not JSON ({e})"));
            let groups = json["groups"].as_array().map_or(0, Vec::len);
            let panics_counted = json["groups"].as_array().is_some_and(|groups| {
                groups
                    .iter()
                    .any(|g| g["kind"] == "panic" && g["count"] == panics)
            });
            if (groups >= 2 && panics_counted) || Instant::now() >= deadline {
                break json;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let groups = json["groups"].as_array().cloned().unwrap_or_default();
        let panic = groups
            .iter()
            .find(|g| g["kind"] == "panic")
            .unwrap_or_else(|| panic!("[{stack}] no panic captured: {json}"));
        assert_eq!(panic["type_name"], "panic", "[{stack}] {panic}");
        assert_eq!(panic["severity"], "fatal", "[{stack}] {panic}");
        assert_eq!(panic["route"], "/panic", "[{stack}] {panic}");
        assert_eq!(
            panic["message"], "index out of bounds: the len is 0 but the index is 0",
            "[{stack}] {panic}"
        );
        assert_eq!(panic["count"], panics, "[{stack}] {panic}");
        let last = panic["last_request_id"].as_str().unwrap_or_default();
        assert!(
            self.observed
                .iter()
                .any(|o| o.path == "/panic" && o.request_id == last),
            "[{stack}] the panic's request id {last:?} is not one of the /panic requests"
        );
        let fail = groups
            .iter()
            .find(|g| g["route"] == "/fail")
            .unwrap_or_else(|| panic!("[{stack}] /fail not captured: {json}"));
        assert_eq!(fail["kind"], "handler", "[{stack}] {fail}");
        assert_eq!(fail["last_status"], 500, "[{stack}] {fail}");
        // 401, 404, 415 and 422 answers were sent too: none is an error under "5xx".
        for group in &groups {
            let status = group["last_status"].as_u64().unwrap_or(500);
            assert!(status >= 500, "[{stack}] a {status} was captured: {group}");
        }
        assert_eq!(groups.len(), 2, "[{stack}] {json}");
    }

    /// (e3) `/qiflow/api/baselines`: every demo route the suite called has a live window, under
    /// its template.
    fn baselines_are_recorded(&mut self) {
        let stack = self.stack.clone();
        let response = self.operator("GET", "/qiflow/api/baselines", b"");
        assert_eq!(
            response.status,
            200,
            "[{stack}] /qiflow/api/baselines: {}",
            response.text()
        );
        let json: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("[{stack}] /qiflow/api/baselines is not JSON ({e})"));
        let routes = json["routes"].as_array().cloned().unwrap_or_default();
        let users = routes
            .iter()
            .find(|r| r["route"] == "/users/{id}" && r["method"] == "GET")
            .unwrap_or_else(|| panic!("[{stack}] no baseline for GET /users/{{id}}: {json}"));
        let sent = self
            .observed
            .iter()
            .filter(|o| o.path.starts_with("/users/"))
            .count();
        assert_eq!(users["window"]["count"], sent, "[{stack}] {users}");
        assert!(users["window"]["p50_ms"].is_number(), "[{stack}] {users}");
        assert!(
            routes
                .iter()
                .all(|r| !r["route"].as_str().unwrap_or("").contains("/users/7")),
            "[{stack}] a raw path became a route: {json}"
        );
    }

    /// (f) SIGTERM with a request in flight: it finishes with 200, then the process exits 0.
    fn sigterm_finishes_in_flight_requests_and_exits_0(&mut self, server: &mut Server) {
        let stack = self.stack.clone();
        let addr = self.addr;
        let target = format!("/slow?ms={IN_FLIGHT_MS}");
        let in_flight = std::thread::spawn(move || request(addr, "GET", &target, &[], b""));
        // Signal only once the server has the request: its in-flight gauge says so.
        let gauge = r#"http_server_active_requests{method="GET",route="/slow"}"#;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let metrics = without_global_labels(&self.send("GET", "/metrics", &[], b"").text());
            if sample(&metrics, gauge) == Some(1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline && !in_flight.is_finished(),
                "[{stack}] the /slow request never showed in {gauge}:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "[{stack}] kill -TERM failed: {kill}");

        let response = in_flight
            .join()
            .expect("the in-flight request thread")
            .unwrap_or_else(|e| {
                panic!("[{stack}] the request in flight at SIGTERM did not finish: {e}")
            });
        assert_eq!(
            response.status,
            200,
            "[{stack}] the request in flight at SIGTERM: {}",
            response.text()
        );
        self.observed.push(Observed {
            method: "GET",
            path: "/slow".into(),
            status: 200,
            request_id: response
                .header("x-request-id")
                .unwrap_or_default()
                .to_owned(),
        });

        let status = server.wait_exit(EXIT_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "[{stack}] still running {EXIT_TIMEOUT:?} after SIGTERM{}",
                server.output()
            )
        });
        assert!(
            status.success(),
            "[{stack}] exit status after SIGTERM: {status}{}",
            server.output()
        );
        assert!(
            sent.elapsed() < EXIT_TIMEOUT,
            "[{stack}] took {:?} to exit",
            sent.elapsed()
        );
    }

    /// (g) Exactly one access line per observed request, with every field; errors only on 5xx;
    /// none for `/metrics` and the health endpoints.
    fn access_lines_match_the_requests(&self, dir: &Path) {
        let stack = &self.stack;
        let log = dir.join("logs").join("app.log");
        let text = std::fs::read_to_string(&log)
            .unwrap_or_else(|e| panic!("[{stack}] cannot read {}: {e}", log.display()));
        let mut access = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "[{stack}] {}:{} is not JSON ({e}): {line}",
                    log.display(),
                    n + 1
                )
            });
            if value["target"] == "qiflow::access" {
                access.push(value);
            }
        }
        for line in &access {
            let path = line["path"].as_str().unwrap_or_default();
            assert!(
                !path.starts_with("/metrics") && !path.starts_with("/health"),
                "[{stack}] qiflow's own endpoints have no access line: {line}"
            );
        }
        assert_eq!(
            access.len(),
            self.observed.len(),
            "[{stack}] one access line per observed request; lines:\n{}",
            lines(&access)
        );
        for request in &self.observed {
            let matching: Vec<&Value> = access
                .iter()
                .filter(|l| l["request_id"] == request.request_id.as_str())
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "[{stack}] {request:?}: access lines with its request id:\n{}",
                lines(&access)
            );
            let line = matching[0];
            let route = route_of(&request.path);
            assert_eq!(line["method"], request.method, "[{stack}] method: {line}");
            assert_eq!(line["route"], route, "[{stack}] route: {line}");
            assert_eq!(
                line["path"],
                request.path.as_str(),
                "[{stack}] path: {line}"
            );
            assert_eq!(line["status"], request.status, "[{stack}] status: {line}");
            assert!(
                line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
                "[{stack}] latency_ms: {line}"
            );
            assert_eq!(
                line["user_agent"], USER_AGENT,
                "[{stack}] user_agent: {line}"
            );
            assert!(
                line["message"].is_string() && line["timestamp"].is_string(),
                "[{stack}] message and timestamp: {line}"
            );
            let error = line.get("error").and_then(Value::as_str);
            let panicked = line.get("panicked").and_then(Value::as_bool) == Some(true);
            match request.path.as_str() {
                "/fail" => {
                    assert!(
                        error.is_some_and(|e| !e.is_empty()),
                        "[{stack}] /fail carries its error: {line}"
                    );
                    assert!(!panicked, "[{stack}] /fail did not panic: {line}");
                }
                "/panic" => {
                    assert!(panicked, "[{stack}] /panic is marked panicked: {line}");
                }
                _ => assert!(
                    error.is_none() && !panicked,
                    "[{stack}] a {} is not an error: {line}",
                    request.status
                ),
            }
        }
        assert!(
            access.iter().any(|l| l["request_id"] == "conf-123"),
            "[{stack}] the honoured request id reaches the access line"
        );
        assert!(
            access
                .iter()
                .any(|l| l["path"] == "/slow" && l["latency_ms"].as_f64() >= Some(20.0)),
            "[{stack}] /slow?ms=20 took at least 20 ms:\n{}",
            lines(&access)
        );
    }

    /// (h) The two logins are in the audit view, newest first.
    fn logins_are_audited(&mut self) {
        let stack = self.stack.clone();
        // Records are written within `[audit] flush_interval` (1 s by default).
        let deadline = Instant::now() + Duration::from_secs(10);
        let page = loop {
            let response =
                self.operator("GET", "/qiflow/api/audit?action=user.login&limit=10", b"");
            assert_eq!(
                response.status,
                200,
                "[{stack}] /qiflow/api/audit: {}",
                response.text()
            );
            let page: Value = serde_json::from_str(&response.text()).unwrap_or_else(|e| {
                panic!(
                    "[{stack}] /qiflow/api/audit is not JSON ({e}): {}",
                    response.text()
                )
            });
            let done = page["records"].as_array().is_some_and(|r| r.len() >= 2);
            if done || Instant::now() > deadline {
                break page;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let records = page["records"].as_array().cloned().unwrap_or_default();
        let seen: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                (
                    r["actor"].as_str().unwrap_or("").to_owned(),
                    r["outcome"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("mallory".to_owned(), "denied".to_owned()),
                ("demo".to_owned(), "success".to_owned())
            ],
            "[{stack}] audited logins: {page}"
        );
        assert!(
            records.iter().all(
                |r| r["request_id"].as_str().is_some_and(|id| !id.is_empty())
                    && r["resource"] == "session"
                    && r["hash"].as_str().is_some_and(|h| h.len() == 64)
            ),
            "[{stack}] audit records carry request ids and hashes: {page}"
        );
    }

    /// (h) After the graceful shutdown: two records, sealed, and the hash chain holds.
    fn the_audit_trail_is_sealed(&self, dir: &Path) {
        let stack = &self.stack;
        let lines = trail_lines(dir, stack);
        let records: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "record").collect();
        let logins = records
            .iter()
            .filter(|r| r["action"] == "user.login")
            .count();
        assert_eq!(logins, 2, "[{stack}] login records on disk: {lines:?}");
        let writes = records
            .iter()
            .filter(|r| {
                r["action"].as_str().is_some_and(|a| {
                    a.starts_with("qiflow.silence.") || a.starts_with("qiflow.loggers.")
                })
            })
            .count();
        assert_eq!(
            writes, self.operator_writes,
            "[{stack}] operator write records on disk: {lines:?}"
        );
        // The first record is this start of the service (`service.deployed`).
        assert_eq!(
            records.first().map(|r| &r["action"]),
            Some(&Value::from("service.deployed")),
            "[{stack}] the deployment record first: {lines:?}"
        );
        assert_eq!(
            records.len(),
            1 + logins + writes,
            "[{stack}] audit records on disk: {lines:?}"
        );
        assert_sealed_chain(&lines, stack);
    }

    /// (p) The dashboard: `GET /qiflow/` from a browser answers the page to anyone, with its
    /// Content-Security-Policy and no data; its script and style answer (gzip-compressed when
    /// asked, `304` when the client holds them); `GET /qiflow/api/overview` answers 401 to a
    /// stranger and, with the token, the requests, routes and error groups the suite made.
    fn the_dashboard_is_served(&self) {
        let stack = self.stack.clone();
        let browser = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
        let page = self.send("GET", "/qiflow/", &browser, b"");
        assert_eq!(page.status, 200, "[{stack}] the page: {}", page.text());
        assert!(
            page.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "[{stack}] {:?}",
            page.headers
        );
        assert!(
            page.header("content-security-policy")
                .is_some_and(|c| c.contains("default-src 'none'")),
            "[{stack}] the page has a CSP: {:?}",
            page.headers
        );
        assert!(
            page.text().contains("/qiflow/app.js") && !page.text().contains("conformance"),
            "[{stack}] the page names its script and holds no data"
        );
        for file in ["/qiflow/app.js", "/qiflow/app.css"] {
            let plain = self.send("GET", file, &[], b"");
            assert_eq!(plain.status, 200, "[{stack}] {file}");
            let gzip = self.send("GET", file, &[("accept-encoding", "gzip")], b"");
            assert_eq!(
                gzip.header("content-encoding"),
                Some("gzip"),
                "[{stack}] {file}"
            );
            assert!(
                gzip.body.starts_with(&[0x1f, 0x8b]),
                "[{stack}] {file} is gzip"
            );
            assert!(gzip.body.len() < plain.body.len(), "[{stack}] {file}");
            let etag = plain.header("etag").unwrap_or_default().to_owned();
            let again = self.send("GET", file, &[("if-none-match", etag.as_str())], b"");
            assert_eq!(again.status, 304, "[{stack}] {file} with its ETag");
        }
        let stranger = self.send("GET", "/qiflow/api/overview", &browser, b"");
        assert_eq!(stranger.status, 401, "[{stack}] {}", stranger.text());
        let response = self.operator("GET", "/qiflow/api/overview", b"");
        assert_eq!(response.status, 200, "[{stack}] {}", response.text());
        let view: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("[{stack}] the overview is not JSON ({e})"));
        let served = view["traffic"]["requests_total"].as_u64().unwrap_or(0);
        assert!(
            served >= self.observed.len() as u64,
            "[{stack}] the overview counts {served} requests; the suite made {}",
            self.observed.len()
        );
        let routes = view["routes"].as_array().cloned().unwrap_or_default();
        assert!(
            routes.iter().any(|r| r["route"] == "/users/{id}"),
            "[{stack}] the overview's routes: {routes:?}"
        );
        assert!(
            view["errors"]["groups"]
                .as_array()
                .is_some_and(|g| !g.is_empty()),
            "[{stack}] the overview's error groups: {}",
            view["errors"]
        );
        assert_eq!(view["service"]["name"], "conformance", "[{stack}]");
    }

    /// (i) Closed by default: every view and write of `/qiflow/` answers 401 to a stranger (no
    /// token, a wrong one, another scheme), with a body that says how to get in; `/metrics`
    /// answers; the generated token is 64 hex digits in a file only the owner can read, and
    /// opens the views.
    fn the_operator_surface_is_closed_to_strangers(&mut self) {
        let stack = self.stack.clone();
        let wrong = format!("Bearer {}", "0".repeat(64));
        let basic = format!("Basic {}", self.token);
        let requests: [(&'static str, &str, &[u8]); 10] = [
            ("GET", "/qiflow/", b""),
            ("GET", "/qiflow/api/errors", b""),
            ("GET", "/qiflow/api/baselines", b""),
            ("GET", "/qiflow/api/alerts", b""),
            ("GET", "/qiflow/api/audit", b""),
            ("GET", "/qiflow/api/no-such-view", b""),
            (
                "POST",
                "/qiflow/api/alerts/silences",
                br#"{"matchers":{"alertname":"*"},"duration":"9999h","all":true}"#,
            ),
            ("DELETE", "/qiflow/api/alerts/silences/x", b""),
            ("GET", "/qiflow/api/loggers", b""),
            ("PUT", "/qiflow/api/loggers", br#"{"filter":"trace"}"#),
        ];
        for (method, target, body) in requests {
            for headers in [
                &[][..],
                &[("authorization", wrong.as_str())][..],
                &[("authorization", basic.as_str())][..],
            ] {
                let response = self.send(method, target, headers, body);
                assert_eq!(
                    response.status,
                    401,
                    "[{stack}] {method} {target} with {headers:?}: {}",
                    response.text()
                );
                let json: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
                    panic!("[{stack}] the 401 is not JSON ({e}): {}", response.text())
                });
                assert!(
                    json["message"].as_str().is_some_and(
                        |m| m.contains("Authorization: Bearer") && m.contains("token_file")
                    ),
                    "[{stack}] the 401 says how to get in: {json}"
                );
                assert!(
                    response
                        .header("www-authenticate")
                        .is_some_and(|v| v.starts_with("Bearer")),
                    "[{stack}] {:?}",
                    response.headers
                );
            }
        }
        assert_eq!(
            self.send("GET", "/metrics", &[], b"").status,
            200,
            "[{stack}] /metrics is public"
        );
        assert_eq!(self.token.len(), 64, "[{stack}] token {:?}", self.token);
        assert!(
            self.token.bytes().all(|b| b.is_ascii_hexdigit()),
            "[{stack}]"
        );
        for target in [
            "/qiflow/",
            "/qiflow/api/errors",
            "/qiflow/api/baselines",
            "/qiflow/api/alerts",
            "/qiflow/api/audit",
        ] {
            let response = self.operator("GET", target, b"");
            assert_eq!(
                response.status,
                200,
                "[{stack}] {target}: {}",
                response.text()
            );
            assert_eq!(
                response.header("cache-control"),
                Some("no-store"),
                "[{stack}] {target}"
            );
        }
        let index: Value =
            serde_json::from_slice(&self.operator("GET", "/qiflow/", b"").body).unwrap_or_default();
        assert_eq!(index["caller"], "admin", "[{stack}] {index}");
        assert_eq!(index["scope"], "write", "[{stack}] {index}");
        let missing = self.operator("GET", "/qiflow/api/no-such-view", b"");
        assert_eq!(missing.status, 404, "[{stack}] {}", missing.text());
        let wrong_method = self.operator("PUT", "/qiflow/api/errors", b"");
        assert_eq!(
            wrong_method.status,
            405,
            "[{stack}] {}",
            wrong_method.text()
        );
        assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"), "[{stack}]");
    }

    /// (j) Silences need a write token and are audited with the token's name as the actor; a
    /// silence of everything needs `"all": true`, and none may outlast `[alerts] max_silence`.
    fn operator_writes_are_audited(&mut self) {
        let stack = self.stack.clone();
        let create = |suite: &mut Self, body: &str| {
            suite.operator_writes += 1;
            suite.operator("POST", "/qiflow/api/alerts/silences", body.as_bytes())
        };
        let everything = create(self, r#"{"matchers":{"alertname":"*"},"duration":"1h"}"#);
        assert_eq!(everything.status, 400, "[{stack}] {}", everything.text());
        let error: Value = serde_json::from_slice(&everything.body).unwrap_or_default();
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("\"all\": true")),
            "[{stack}] {error}"
        );
        let long = create(
            self,
            r#"{"matchers":{"alertname":"disk_full"},"duration":"48h"}"#,
        );
        assert_eq!(long.status, 400, "[{stack}] {}", long.text());
        assert!(
            long.text().contains("max_silence"),
            "[{stack}] {}",
            long.text()
        );
        let created = create(
            self,
            r#"{"matchers":{"alertname":"disk_full"},"duration":"2h","comment":"conformance"}"#,
        );
        assert_eq!(created.status, 201, "[{stack}] {}", created.text());
        let silence: Value = serde_json::from_slice(&created.body).unwrap_or_default();
        let id = silence["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(silence["created_by"], "admin", "[{stack}] {silence}");
        let alerts: Value =
            serde_json::from_slice(&self.operator("GET", "/qiflow/api/alerts", b"").body)
                .unwrap_or_default();
        assert!(
            alerts["silenced"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["id"] == id.as_str())),
            "[{stack}] {alerts}"
        );
        self.operator_writes += 1;
        let deleted = self.operator("DELETE", &format!("/qiflow/api/alerts/silences/{id}"), b"");
        assert_eq!(deleted.status, 204, "[{stack}] {}", deleted.text());
        let page = self.audit_page("action=qiflow.silence.create", 3);
        let records = page["records"].as_array().cloned().unwrap_or_default();
        let outcomes: Vec<(&str, &str)> = records
            .iter()
            .map(|r| {
                (
                    r["actor"].as_str().unwrap_or_default(),
                    r["outcome"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("admin", "success"),
                ("admin", "failure"),
                ("admin", "failure")
            ],
            "[{stack}] {page}"
        );
        assert_eq!(
            records[0]["resource"],
            format!("silence/{id}"),
            "[{stack}] {page}"
        );
        assert_eq!(records[0]["metadata"]["matchers"]["alertname"], "disk_full");
        assert_eq!(
            records[0]["metadata"]["duration_seconds"], 7200,
            "[{stack}] {page}"
        );
        let page = self.audit_page("action=qiflow.silence.delete", 1);
        assert_eq!(page["records"][0]["actor"], "admin", "[{stack}] {page}");
        assert_eq!(page["records"][0]["resource"], format!("silence/{id}"));
    }

    /// (o) The log filter changes at runtime through `PUT /qiflow/api/loggers`: the `debug!`
    /// line of `GET /users/{id}` shows only while the example's target is at `debug`. Returns the
    /// request ids of the three `/users/{id}` requests: before, during and after the change.
    fn the_log_level_changes_at_runtime(&mut self) -> [String; 3] {
        let stack = self.stack.clone();
        let debug_filter = format!("info,{}=debug", stack.replace('-', "_"));
        let current: Value =
            serde_json::from_slice(&self.operator("GET", "/qiflow/api/loggers", b"").body)
                .unwrap_or_default();
        assert_eq!(
            current,
            serde_json::json!({"filter": "info", "source": "logging.level"}),
            "[{stack}]"
        );
        let user = |suite: &mut Self, id: u32| {
            let response = suite.observed("GET", &format!("/users/{id}"), &[], b"", 200);
            response
                .header("x-request-id")
                .unwrap_or_default()
                .to_owned()
        };
        let before = user(self, 101);

        self.operator_writes += 1;
        let refused = self.operator(
            "PUT",
            "/qiflow/api/loggers",
            br#"{"filter":"info,tower=loud"}"#,
        );
        assert_eq!(refused.status, 400, "[{stack}] {}", refused.text());
        assert!(
            refused
                .text()
                .contains(r#"the directive \"tower=loud\" is not valid"#),
            "[{stack}] {}",
            refused.text()
        );

        self.operator_writes += 1;
        let body = serde_json::json!({ "filter": debug_filter }).to_string();
        let changed = self.operator("PUT", "/qiflow/api/loggers", body.as_bytes());
        assert_eq!(changed.status, 200, "[{stack}] {}", changed.text());
        let answer: Value = serde_json::from_slice(&changed.body).unwrap_or_default();
        assert_eq!(
            answer["filter"],
            debug_filter.as_str(),
            "[{stack}] {answer}"
        );
        assert_eq!(answer["previous"], "info", "[{stack}] {answer}");
        let during = user(self, 102);

        self.operator_writes += 1;
        let back = self.operator("PUT", "/qiflow/api/loggers", br#"{"filter":"info"}"#);
        assert_eq!(back.status, 200, "[{stack}] {}", back.text());
        let answer: Value = serde_json::from_slice(&back.body).unwrap_or_default();
        assert_eq!(
            answer["previous"],
            debug_filter.as_str(),
            "[{stack}] {answer}"
        );
        let after = user(self, 103);

        let page = self.audit_page("action=qiflow.loggers.set", 3);
        let records = page["records"].as_array().cloned().unwrap_or_default();
        let seen: Vec<(&str, &str, &str)> = records
            .iter()
            .map(|r| {
                (
                    r["actor"].as_str().unwrap_or_default(),
                    r["outcome"].as_str().unwrap_or_default(),
                    r["metadata"]["filter"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("admin", "success", "info"),
                ("admin", "success", debug_filter.as_str()),
                ("admin", "failure", "info,tower=loud"),
            ],
            "[{stack}] {page}"
        );
        assert_eq!(
            records[1]["metadata"]["previous"], "info",
            "[{stack}] {page}"
        );
        assert_eq!(records[1]["resource"], "loggers", "[{stack}] {page}");
        [before, during, after]
    }

    /// (o) In the log: the handler's `debug!` line for the request made while the example's
    /// target was at `debug` only, and a `qiflow::admin` line for each change.
    fn debug_lines_follow_the_level(&self, dir: &Path, users: &[String; 3]) {
        let stack = &self.stack;
        let log = std::fs::read_to_string(dir.join("logs").join("app.log")).unwrap_or_default();
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let debug: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"] == "user looked up")
            .collect();
        assert_eq!(debug.len(), 1, "[{stack}] debug lines: {debug:?}");
        assert_eq!(debug[0]["level"], "DEBUG", "[{stack}] {}", debug[0]);
        assert_eq!(
            debug[0]["request_id"],
            users[1].as_str(),
            "[{stack}] {}",
            debug[0]
        );
        assert_eq!(debug[0]["id"], 102, "[{stack}] {}", debug[0]);
        let debug_filter = format!("info,{}=debug", stack.replace('-', "_"));
        let changes: Vec<(&str, &str)> = lines
            .iter()
            .filter(|l| l["target"] == "qiflow::admin" && l["message"] == "log filter changed")
            .map(|l| {
                (
                    l["previous"].as_str().unwrap_or_default(),
                    l["filter"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("info", debug_filter.as_str()),
                (debug_filter.as_str(), "info")
            ],
            "[{stack}]"
        );
    }

    /// The audit view for `query`, once it holds at least `count` records (bounded wait).
    fn audit_page(&self, query: &str, count: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = self.operator("GET", &format!("/qiflow/api/audit?{query}"), b"");
            let page: Value = serde_json::from_slice(&response.body).unwrap_or_default();
            let done = page["records"].as_array().is_some_and(|r| r.len() >= count);
            if done || Instant::now() > deadline {
                return page;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// (k) Operator requests have their own lines (`target="qiflow::admin"`, refusals at warn);
    /// the start-up line names the token file; the token itself is in no log line and no output.
    fn operator_requests_are_logged_without_the_token(&self, dir: &Path) {
        let stack = &self.stack;
        let log = std::fs::read_to_string(dir.join("logs").join("app.log")).unwrap_or_default();
        let admin: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "qiflow::admin")
            .collect();
        assert!(
            admin.iter().any(|l| l["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("admin-token"))),
            "[{stack}] no start-up line naming the token file:\n{}",
            lines(&admin)
        );
        assert!(
            admin.iter().any(|l| l["level"] == "WARN"
                && l["status"] == 401
                && l["path"] == "/qiflow/api/audit"),
            "[{stack}] refusals are logged:\n{}",
            lines(&admin)
        );
        assert!(
            admin.iter().any(|l| l["status"] == 201
                && l["actor"] == "admin"
                && l["path"] == "/qiflow/api/alerts/silences"),
            "[{stack}] writes are logged:\n{}",
            lines(&admin)
        );
        // stdout is a file here, not a terminal: no plain start-up line on stderr, only the JSON.
        let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
        assert!(
            !stderr.contains("qiflow: operator surface"),
            "[{stack}] a plain start-up line with stdout not a terminal:\n{stderr}"
        );
        for file in files_under(dir) {
            if file.ends_with("data/admin-token") {
                continue;
            }
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !contains(&bytes, self.token.as_bytes()),
                "[{stack}] the operator token was written to {}",
                file.display()
            );
        }
    }

    /// The login password is in no file the server wrote and in none of its output.
    fn the_password_is_never_written(&self, dir: &Path) {
        for file in files_under(dir) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !contains(&bytes, CANARY_PASSWORD.as_bytes()),
                "[{}] the login password was written to {}",
                self.stack,
                file.display()
            );
        }
    }
}

/// (l) Tokens with names and scopes from the configuration: a `read` token reads but cannot
/// write (403, audited as denied under its name); a `write` token's silence is audited under
/// its name; no token file is made.
fn scoped_tokens_read_and_write(bin: &str) {
    const READER: &str = "conformance-reader-token-0123456789";
    const WRITER: &str = "conformance-writer-token-0123456789";
    let config = format!(
        "[audit]\nroutes = [\"GET /slow\"]\n\n[tracing]\nrespond = true\n\n\
         [[admin.tokens]]\nname = \"reader\"\ntoken = \"{READER}\"\nscope = \"read\"\n\n\
         [[admin.tokens]]\nname = \"writer\"\ntoken = \"{WRITER}\"\nscope = \"write\"\n"
    );
    let mut server = Server::start(bin, Some(&config), &[]);
    let stack = stack_name(bin);
    let suite = Suite {
        addr: server.addr,
        stack: stack.clone(),
        observed: Vec::new(),
        token: WRITER.to_owned(),
        operator_writes: 0,
    };
    assert!(
        !server.dir.join("data/admin-token").exists(),
        "[{stack}] a token file was made although tokens are configured"
    );
    // (n) with `[tracing] respond = true` the response names the request's span.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let response = suite.send("GET", "/hello", &[("traceparent", &traceparent)], b"");
    let answered = response.header("traceparent").unwrap_or_default();
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")) && answered.ends_with("-01"),
        "[{stack}] the response's traceparent continues the trace: {:?}",
        response.headers
    );
    assert_eq!(answered.len(), 55, "[{stack}] {answered}");
    assert!(!answered.contains(PARENT_SPAN_ID), "[{stack}] {answered}");
    let reader = format!("Bearer {READER}");
    let as_reader = |method, target: &str, body: &[u8]| {
        suite.send(method, target, &[("authorization", &reader)], body)
    };
    let errors = as_reader("GET", "/qiflow/api/errors", b"");
    assert_eq!(errors.status, 200, "[{stack}] {}", errors.text());
    let body = br#"{"matchers":{"alertname":"disk_full"},"duration":"1h"}"#;
    let refused = as_reader("POST", "/qiflow/api/alerts/silences", body);
    assert_eq!(refused.status, 403, "[{stack}] {}", refused.text());
    assert!(
        refused.text().contains("read scope"),
        "[{stack}] {}",
        refused.text()
    );
    let created = suite.operator("POST", "/qiflow/api/alerts/silences", body);
    assert_eq!(created.status, 201, "[{stack}] {}", created.text());
    let page = suite.audit_page("action=qiflow.silence.create", 2);
    let seen: Vec<(&str, &str)> = page["records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|r| {
                    (
                        r["actor"].as_str().unwrap_or_default(),
                        r["outcome"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        seen,
        [("writer", "success"), ("reader", "denied")],
        "[{stack}] {page}"
    );
    let refused = as_reader("PUT", "/qiflow/api/loggers", br#"{"filter":"trace"}"#);
    assert_eq!(refused.status, 403, "[{stack}] {}", refused.text());
    let page = suite.audit_page("action=qiflow.loggers.set", 1);
    assert_eq!(page["records"][0]["actor"], "reader", "[{stack}] {page}");
    assert_eq!(page["records"][0]["outcome"], "denied", "[{stack}] {page}");
    suite.a_client_that_leaves_an_audited_request_leaves_an_aborted_record();
    server.stop();
    server.cleanup();
}

/// (n) A third server with `[tracing] propagation = "none"` (and `respond = true`): an incoming
/// `traceparent` is neither continued nor counted as malformed, the request gets a trace of its
/// own (on its access line and its handler's line), and no response carries `traceparent`.
fn propagation_none_ignores_the_incoming_trace(bin: &str) {
    let config = "[tracing]\npropagation = \"none\"\nrespond = true\n";
    let mut server = Server::start(bin, Some(config), &[]);
    let stack = stack_name(bin);
    let suite = Suite {
        addr: server.addr,
        stack: stack.clone(),
        observed: Vec::new(),
        token: server.generated_token(),
        operator_writes: 0,
    };
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let response = suite.send(
        "GET",
        "/hello",
        &[
            ("traceparent", &traceparent),
            ("x-request-id", "trace-none"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "[{stack}] {}", response.text());
    assert!(
        response.header("traceparent").is_none(),
        "[{stack}] propagation = \"none\" answered a traceparent: {:?}",
        response.headers
    );
    let metrics = suite.send("GET", "/metrics", &[], b"").text();
    let invalid = sample(
        &without_global_labels(&metrics),
        "qiflow_trace_context_invalid_total{header=\"traceparent\"}",
    );
    assert!(
        invalid.unwrap_or(0.0) == 0.0,
        "[{stack}] an ignored traceparent was counted as malformed: {invalid:?}"
    );
    server.stop();
    let log = server.dir.join("logs").join("app.log");
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("[{stack}] cannot read {}: {e}", log.display()));
    let values: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let access = values
        .iter()
        .find(|v| v["target"] == "qiflow::access" && v["request_id"] == "trace-none")
        .unwrap_or_else(|| panic!("[{stack}] no access line for trace-none"));
    let trace_id = access["trace_id"].as_str().unwrap_or_default();
    assert_eq!(trace_id.len(), 32, "[{stack}] {access}");
    assert_ne!(
        trace_id, TRACE_ID,
        "[{stack}] the ignored trace was continued: {access}"
    );
    let said = values
        .iter()
        .find(|v| v["message"] == "said hello" && v["request_id"] == "trace-none")
        .unwrap_or_else(|| panic!("[{stack}] no handler line for trace-none"));
    assert_eq!(said["trace_id"], access["trace_id"], "[{stack}] {said}");
    server.cleanup();
}

/// (q) Permission checks on a server of their own: the guards of `GET /orders` (`orders:read`)
/// and `POST /orders` (`orders:write`) answer 401 without a user and 403 without the
/// permission, every denial is audited with its request id, an operator's change of a user's
/// roles through `PUT /qiflow/api/authz/users/{id}` takes effect at once and is audited, a
/// burst of denials raises one `authz_denials` alert for its actor, and a cycle of `inherits`
/// stops the binary at start.
fn permission_checks_are_enforced_and_audited(bin: &str) {
    const WRITER: &str = "conformance-authz-writer-token-0123456789";
    const WRITER_NAME: &str = "authz-writer";
    let config = format!(
        "[[admin.tokens]]\nname = \"{WRITER_NAME}\"\ntoken = \"{WRITER}\"\nscope = \"write\"\n\n\
         [authz.roles.viewer]\npermissions = [\"orders:read\"]\n\n\
         [authz.roles.admin]\ninherits = [\"viewer\"]\npermissions = [\"orders:*\"]\n\n\
         [authz.users]\ndemo = [\"viewer\"]\nadmin = [\"admin\"]\nprobe = [\"viewer\"]\n\
         trickle = [\"viewer\"]\n\n\
         [authz.denial_alert]\ncount = 5\nwindow = \"10m\"\n"
    );
    // Its own temp dir: its audit trail (`<tmp>/audit`) and state (`<tmp>/data`) are its own.
    let mut server = Server::start(bin, Some(&config), &[]);
    let stack = stack_name(bin);
    let suite = Suite {
        addr: server.addr,
        stack: stack.clone(),
        observed: Vec::new(),
        token: WRITER.to_owned(),
        operator_writes: 0,
    };
    // `/orders` as `user` (the `X-Demo-User` header of the examples' stand-in authentication).
    let orders = |method: &'static str, user: Option<&str>| {
        let headers: Vec<(&str, &str)> = user.map(|u| ("x-demo-user", u)).into_iter().collect();
        suite.send(method, "/orders", &headers, b"")
    };
    let json = |response: &Response, what: &str| -> Value {
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("[{stack}] {what}: not JSON ({e}): {}", response.text()))
    };
    // The denials so far: each is an audit record, a recent denial and a count on the metric.
    let mut denied = 0usize;

    // No user: 401, naming the permission.
    let anonymous = orders("GET", None);
    assert_eq!(
        anonymous.status,
        401,
        "[{stack}] GET /orders without a user: {}",
        anonymous.text()
    );
    let body = json(&anonymous, "the 401 of GET /orders");
    assert_eq!(body["error"], "unauthenticated", "[{stack}] {body}");
    assert_eq!(body["permission"], "orders:read", "[{stack}] {body}");

    // `demo` is a viewer: reads, may not write; the refusal names the permission, not the roles.
    let listed = orders("GET", Some("demo"));
    assert_eq!(
        listed.status,
        200,
        "[{stack}] GET /orders as demo: {}",
        listed.text()
    );
    let list = json(&listed, "GET /orders as demo");
    assert!(
        list.as_array().is_some_and(|orders| !orders.is_empty()),
        "[{stack}] GET /orders answers a JSON list: {list}"
    );
    let refused = orders("POST", Some("demo"));
    denied += 1;
    assert_eq!(
        refused.status,
        403,
        "[{stack}] POST /orders as demo: {}",
        refused.text()
    );
    let body = json(&refused, "the 403 of POST /orders");
    assert_eq!(body["error"], "forbidden", "[{stack}] {body}");
    assert_eq!(body["permission"], "orders:write", "[{stack}] {body}");
    assert!(
        !refused.text().contains("viewer"),
        "[{stack}] the refusal names the principal's roles: {body}"
    );
    let refused_id = refused
        .header("x-request-id")
        .unwrap_or_else(|| {
            panic!(
                "[{stack}] no x-request-id on the 403: {:?}",
                refused.headers
            )
        })
        .to_owned();
    let page = suite.audit_page("action=authz.denied", 1);
    let record = page["records"]
        .as_array()
        .and_then(|records| records.iter().find(|r| r["actor"] == "demo"))
        .unwrap_or_else(|| panic!("[{stack}] no authz.denied record of demo: {page}"));
    assert_eq!(record["resource"], "orders:write", "[{stack}] {record}");
    assert_eq!(record["outcome"], "denied", "[{stack}] {record}");
    assert_eq!(
        record["request_id"],
        refused_id.as_str(),
        "[{stack}] the denial's record carries the 403's request id: {record}"
    );
    let metadata = &record["metadata"];
    assert_eq!(metadata["permission"], "orders:write", "[{stack}] {record}");
    assert_eq!(metadata["method"], "POST", "[{stack}] {record}");
    assert_eq!(metadata["route"], "/orders", "[{stack}] {record}");
    assert_eq!(metadata["path"], "/orders", "[{stack}] {record}");

    // `admin` reads through `viewer` (inheritance) and writes through `orders:*` (wildcard).
    let read = orders("GET", Some("admin"));
    assert_eq!(
        read.status,
        200,
        "[{stack}] GET /orders as admin: {}",
        read.text()
    );
    let written = orders("POST", Some("admin"));
    assert!(
        (200..300).contains(&written.status),
        "[{stack}] POST /orders as admin: {} {}",
        written.status,
        written.text()
    );
    json(&written, "POST /orders as admin");

    // An operator's change of demo's roles: refused without a token, in force at once with it.
    let make_admin = br#"{"roles":["admin"]}"#;
    let stranger = suite.send("PUT", "/qiflow/api/authz/users/demo", &[], make_admin);
    assert_eq!(
        stranger.status,
        401,
        "[{stack}] PUT /qiflow/api/authz/users/demo without a token: {}",
        stranger.text()
    );
    let view = json(
        &suite.operator("GET", "/qiflow/api/authz", b""),
        "GET /qiflow/api/authz",
    );
    assert_eq!(
        view["changed_users"],
        serde_json::json!({}),
        "[{stack}] a PUT without a token changed the policy: {view}"
    );
    let changed = suite.operator("PUT", "/qiflow/api/authz/users/demo", make_admin);
    assert_eq!(
        changed.status,
        200,
        "[{stack}] PUT /qiflow/api/authz/users/demo: {}",
        changed.text()
    );
    let promoted = orders("POST", Some("demo"));
    assert!(
        (200..300).contains(&promoted.status),
        "[{stack}] POST /orders as demo made admin, without a restart: {} {}",
        promoted.status,
        promoted.text()
    );
    let page = suite.audit_page("action=authz.changed", 1);
    let record = &page["records"][0];
    assert_eq!(record["actor"], WRITER_NAME, "[{stack}] {page}");
    assert_eq!(record["resource"], "authz/users/demo", "[{stack}] {page}");
    assert_eq!(record["outcome"], "success", "[{stack}] {page}");
    assert_eq!(
        record["metadata"]["before"]["roles"],
        serde_json::json!(["viewer"]),
        "[{stack}] {page}"
    );
    assert_eq!(
        record["metadata"]["after"]["roles"],
        serde_json::json!(["admin"]),
        "[{stack}] {page}"
    );
    let reset = suite.operator("DELETE", "/qiflow/api/authz/users/demo", b"");
    assert_eq!(
        reset.status,
        200,
        "[{stack}] DELETE /qiflow/api/authz/users/demo: {}",
        reset.text()
    );
    let demoted = orders("POST", Some("demo"));
    denied += 1;
    assert_eq!(
        demoted.status,
        403,
        "[{stack}] POST /orders as demo, its configured roles back: {}",
        demoted.text()
    );
    let page = suite.audit_page("action=authz.changed", 2);
    let record = &page["records"][0];
    assert_eq!(record["actor"], WRITER_NAME, "[{stack}] {page}");
    assert_eq!(
        (
            &record["metadata"]["before"]["roles"],
            &record["metadata"]["after"]["roles"]
        ),
        (
            &serde_json::json!(["admin"]),
            &serde_json::json!(["viewer"])
        ),
        "[{stack}] the DELETE's record: {page}"
    );

    // A burst of denials: `probe` reaches `[authz.denial_alert] count` (5), `trickle` does not.
    for (user, times) in [("trickle", 2), ("probe", 7)] {
        for _ in 0..times {
            let response = orders("POST", Some(user));
            denied += 1;
            assert_eq!(
                response.status,
                403,
                "[{stack}] POST /orders as {user}: {}",
                response.text()
            );
        }
    }
    let is_denial_alert = |active: &Value| active["alert"]["name"] == "authz_denials";
    let deadline = Instant::now() + Duration::from_secs(10);
    let alerts = loop {
        let alerts = json(
            &suite.operator("GET", "/qiflow/api/alerts", b""),
            "GET /qiflow/api/alerts",
        );
        let raised = alerts["active"]
            .as_array()
            .is_some_and(|active| active.iter().any(is_denial_alert));
        if raised || Instant::now() > deadline {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let raised: Vec<&Value> = alerts["active"]
        .as_array()
        .map(|active| active.iter().filter(|a| is_denial_alert(a)).collect())
        .unwrap_or_default();
    // Exactly one, and it is probe's: none for trickle (nor demo).
    assert_eq!(
        raised.len(),
        1,
        "[{stack}] one authz_denials alert: {alerts}"
    );
    assert_eq!(
        raised[0]["alert"]["labels"]["actor"], "probe",
        "[{stack}] {alerts}"
    );
    assert_eq!(
        raised[0]["fingerprint"], "authz_denials:probe",
        "[{stack}] {alerts}"
    );
    assert_eq!(
        raised[0]["count"], 1,
        "[{stack}] raised once, not once per denial past the threshold: {alerts}"
    );

    // The policy as compiled, and the recent denials, newest first.
    let view = json(
        &suite.operator("GET", "/qiflow/api/authz", b""),
        "GET /qiflow/api/authz",
    );
    let effective = |role: &str| -> Vec<String> {
        view["roles"][role]["effective"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let admin = effective("admin");
    assert!(
        admin.iter().any(|p| p == "orders:read") && admin.iter().any(|p| p == "orders:*"),
        "[{stack}] admin's effective permissions: {view}"
    );
    assert_eq!(effective("viewer"), ["orders:read"], "[{stack}] {view}");
    assert_eq!(
        view["users"]["probe"],
        serde_json::json!(["viewer"]),
        "[{stack}] {view}"
    );
    assert_eq!(
        view["changed_users"],
        serde_json::json!({}),
        "[{stack}] the DELETE left an operator change: {view}"
    );
    let recent = view["recent_denials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recent.len(), denied, "[{stack}] recent denials: {view}");
    let newest = &recent[0];
    assert_eq!(
        (
            &newest["actor"],
            &newest["permission"],
            &newest["method"],
            &newest["route"]
        ),
        (
            &Value::from("probe"),
            &Value::from("orders:write"),
            &Value::from("POST"),
            &Value::from("/orders")
        ),
        "[{stack}] the newest denial: {view}"
    );
    assert!(
        recent
            .iter()
            .any(|d| d["actor"] == "demo" && d["request_id"] == refused_id.as_str()),
        "[{stack}] demo's denial with its request id: {view}"
    );

    // Every denial reached the trail, and the stats count them.
    let page = suite.audit_page("action=authz.denied&limit=100", denied);
    assert_eq!(
        page["records"].as_array().map_or(0, Vec::len),
        denied,
        "[{stack}] authz.denied records: {page}"
    );
    let stats = json(
        &suite.operator("GET", "/qiflow/api/audit/stats", b""),
        "GET /qiflow/api/audit/stats",
    );
    assert_eq!(
        stats["by_action"]["authz.denied"], denied,
        "[{stack}] {stats}"
    );
    assert_eq!(stats["by_action"]["authz.changed"], 2, "[{stack}] {stats}");

    let metrics = without_global_labels(&suite.send("GET", "/metrics", &[], b"").text());
    let series = r#"qiflow_authz_decisions_total{decision="denied",permission="orders:write"}"#;
    assert_eq!(
        sample(&metrics, series),
        Some(denied as f64),
        "[{stack}] {series}:\n{metrics}"
    );
    let series =
        r#"qiflow_authz_decisions_total{decision="unauthenticated",permission="orders:read"}"#;
    assert_eq!(
        sample(&metrics, series),
        Some(1.0),
        "[{stack}] {series}:\n{metrics}"
    );

    // After the graceful shutdown, the trail verifies and holds every decision and change.
    server.stop();
    let status = server
        .exited
        .unwrap_or_else(|| panic!("[{stack}] no exit status"));
    assert!(
        status.success(),
        "[{stack}] exit status after SIGTERM: {status}{}",
        server.output()
    );
    let lines = trail_lines(&server.dir, &stack);
    assert_sealed_chain(&lines, &stack);
    let records: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "record").collect();
    let on_disk = |action: &str| records.iter().filter(|r| r["action"] == action).count();
    assert_eq!(
        on_disk("authz.denied"),
        denied,
        "[{stack}] authz.denied records on disk: {lines:?}"
    );
    assert_eq!(
        on_disk("authz.changed"),
        2,
        "[{stack}] authz.changed records on disk: {lines:?}"
    );
    assert!(
        records.iter().any(|r| r["action"] == "authz.denied"
            && r["actor"] == "demo"
            && r["request_id"] == refused_id.as_str()),
        "[{stack}] demo's denial on disk: {lines:?}"
    );
    server.cleanup();

    // Roles that inherit in a cycle: refused at start, naming the key.
    let cycle = "[authz.roles.a]\ninherits = [\"b\"]\n\n[authz.roles.b]\ninherits = [\"a\"]\n";
    let started = Instant::now();
    let mut refused = match Server::try_start(bin, Some(cycle), &[]) {
        Ok(running) => panic!(
            "[{stack}] started although its roles inherit in a cycle{}",
            running.output()
        ),
        Err(exited) => exited,
    };
    let took = started.elapsed();
    let status = refused
        .exited
        .unwrap_or_else(|| panic!("[{stack}] no exit status{}", refused.output()));
    assert!(
        !status.success(),
        "[{stack}] a cycle of inherits: exit status {status}{}",
        refused.output()
    );
    assert!(
        took < REFUSAL_TIMEOUT,
        "[{stack}] took {took:?} to refuse a cycle of inherits"
    );
    let stderr = std::fs::read_to_string(refused.dir.join("stderr.txt")).unwrap_or_default();
    assert!(
        stderr.contains("authz.roles.a.inherits") && stderr.contains("cycle"),
        "[{stack}] the refusal names the key and the cycle:{}",
        refused.output()
    );
    refused.cleanup();
}

impl Suite {
    /// (m) `[audit] routes = ["GET /slow"]`: a client that goes away while the handler sleeps
    /// still leaves a record. axum and hyper drop the request when the client leaves: outcome
    /// `aborted`. actix-web runs the handler to its end whatever the client does, so its
    /// record carries the handler's outcome (`success`).
    fn a_client_that_leaves_an_audited_request_leaves_an_aborted_record(&self) {
        let stack = &self.stack;
        let id = "conformance-leaves-early";
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("[{stack}] connect: {e}"));
        write!(
            stream,
            "GET /slow?ms=1500 HTTP/1.1\r\nhost: {}\r\nuser-agent: {USER_AGENT}\r\nx-request-id: {id}\r\n\r\n",
            self.addr
        )
        .unwrap_or_else(|e| panic!("[{stack}] write: {e}"));
        // Leave once the handler runs: the in-flight gauge says so.
        let gauge = r#"http_server_active_requests{method="GET",route="/slow"}"#;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while sample(
            &without_global_labels(&self.send("GET", "/metrics", &[], b"").text()),
            gauge,
        ) != Some(1.0)
        {
            assert!(Instant::now() < deadline, "[{stack}] /slow never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        drop(stream);
        let expected = if stack == "actix-app" {
            "success"
        } else {
            "aborted"
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let record = loop {
            let page = self.audit_page("action=GET%20%2Fslow", 1);
            let record = page["records"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["request_id"] == id))
                .cloned();
            match record {
                Some(record) => break record,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                None => panic!("[{stack}] no record of the request whose client left: {page}"),
            }
        };
        assert_eq!(record["outcome"], expected, "[{stack}] {record}");
        assert_eq!(record["resource"], "/slow", "[{stack}] {record}");
    }
}

/// Every line of the audit trail under `<dir>/audit`, its segments in order.
fn trail_lines(dir: &Path, stack: &str) -> Vec<Value> {
    let mut lines: Vec<Value> = Vec::new();
    let mut segments: Vec<PathBuf> = files_under(&dir.join("audit"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".jsonl"))
        .collect();
    segments.sort();
    for seg in &segments {
        let text = std::fs::read_to_string(seg).unwrap_or_default();
        for line in text.lines() {
            lines.push(serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "[{stack}] {} has a line that is not JSON ({e}): {line}",
                    seg.display()
                )
            }));
        }
    }
    lines
}

/// The trail after a graceful shutdown verifies: it ends with the shutdown digest (no open
/// tail), and every line's `prev_hash` is the hash of the line before it, its `seq` the next one.
fn assert_sealed_chain(lines: &[Value], stack: &str) {
    assert_eq!(
        lines.last().map(|l| l["kind"].clone()),
        Some(Value::from("digest")),
        "[{stack}] the trail ends with the shutdown digest: {lines:?}"
    );
    for pair in lines.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "[{stack}] chain: {lines:?}"
        );
        assert_eq!(
            pair[1]["seq"].as_u64(),
            pair[0]["seq"].as_u64().map(|s| s + 1),
            "[{stack}] seq: {lines:?}"
        );
    }
}

/// The route template the middleware should report for a path of the suite.
fn route_of(path: &str) -> &str {
    if path.starts_with("/users/") {
        "/users/{id}"
    } else if path.starts_with("/conformance/") {
        "unmatched"
    } else {
        path
    }
}

/// The labels `[metrics] global_labels` adds to every series, as `start` configures `[service]`
/// (the version is not one of them).
const GLOBAL_LABELS: &str = r#"service="conformance",environment="test""#;

/// The exposition with [`GLOBAL_LABELS`] taken out of every label set.
fn without_global_labels(text: &str) -> String {
    text.replace(&format!("{GLOBAL_LABELS},"), "")
        .replace(&format!("{{{GLOBAL_LABELS}}}"), "")
}

/// The value of the sample `series` (its name and labels, exactly) in a Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Whether `id` is a UUID v7 in its hyphenated form.
fn is_uuid_v7(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
        && bytes[14] == b'7'
        && matches!(bytes[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B')
}

fn lines(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The example's name, from its binary's path, for messages.
fn stack_name(bin: &str) -> String {
    Path::new(bin)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.to_owned())
}

/// The example's process, in its own temp dir; killed on drop if a case fails first.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    exited: Option<ExitStatus>,
    clean: bool,
}

impl Server {
    /// Starts `bin` on a free loopback port in a new temp dir, with the configuration file
    /// `config` and the environment variables `env` besides the suite's, and waits for
    /// `/health/live`.
    ///
    /// Starts `bin` on a port that was free a moment ago. Another process can take such a port
    /// before the binary binds it (a client's ephemeral port, say); then the binary exits with
    /// "Address already in use" and this tries again on a new port, up to five times.
    fn start(bin: &str, config: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start(bin, config, env) {
                Ok(server) => return server,
                Err(mut failed)
                    if failed.output().contains("Address already in use") && attempt < 5 =>
                {
                    failed.cleanup();
                    attempt += 1;
                }
                Err(failed) => panic!(
                    "{bin} exited before it was ready: {}{}",
                    failed.exited.map_or_else(String::new, |s| s.to_string()),
                    failed.output()
                ),
            }
        }
    }

    /// Starts `bin`; `Err` with the exited server when it stops before it is ready.
    fn try_start(bin: &str, config: Option<&str>, env: &[(&str, &str)]) -> Result<Self, Self> {
        let dir = temp_dir(&stack_name(bin));
        let addr = free_port();
        let stdout = File::create(dir.join("stdout.txt")).expect("create stdout.txt");
        let stderr = File::create(dir.join("stderr.txt")).expect("create stderr.txt");
        let mut command = Command::new(bin);
        // Only the suite's settings: nothing from the developer's environment (`OTEL_*` would
        // change the OTLP exporter's protocol, compression or headers).
        for (name, _) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            if name_str.starts_with("QIFLOW") || name_str.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        if let Some(config) = config {
            let path = dir.join("qiflow.toml");
            std::fs::write(&path, config).expect("write qiflow.toml");
            command.env("QIFLOW_CONFIG", path);
        }
        // The level in force is the configuration's (case (o) expects "info").
        command.env_remove("RUST_LOG");
        command
            .current_dir(&dir)
            .env("QIFLOW_ADDR", addr.to_string())
            .env("QIFLOW__LOGGING__DIR", dir.join("logs"))
            .env("QIFLOW__LOGGING__STDOUT", "false")
            .env("QIFLOW__AUDIT__DIR", dir.join("audit"))
            .env("QIFLOW__SERVICE__NAME", "conformance")
            .env("QIFLOW__SERVICE__ENVIRONMENT", "test")
            .env("QIFLOW__SERVICE__VERSION", "9.9.9")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut server = Self {
            child,
            addr,
            dir,
            exited: None,
            clean: false,
        };
        if server.wait_ready(bin) {
            Ok(server)
        } else {
            Err(server)
        }
    }

    /// Waits (bounded) until `/health/live` answers 200: `true`; `false` when the process exits
    /// first.
    fn wait_ready(&mut self, bin: &str) -> bool {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return false;
            }
            if let Ok(response) = request(self.addr, "GET", "/health/live", &[], b"")
                && response.status == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "{bin} did not answer /health/live on {} within {STARTUP_TIMEOUT:?}{}",
                self.addr,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr and stdout, and where its files are, for failure messages.
    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "\n--- files kept in {}\n--- stderr:\n{}\n--- stdout:\n{}",
            self.dir.display(),
            tail(&read("stderr.txt")),
            tail(&read("stdout.txt"))
        )
    }

    /// The token the server made at start (`<dir>/data/admin-token`).
    fn generated_token(&self) -> String {
        let path = self.dir.join("data/admin-token");
        let token = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}{}", path.display(), self.output()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map_or(0, |m| m.permissions().mode() & 0o777);
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
        }
        token.trim().to_owned()
    }

    /// SIGTERM, then waits for the exit (bounded).
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(
            self.wait_exit(EXIT_TIMEOUT).is_some(),
            "the server did not exit after SIGTERM{}",
            self.output()
        );
    }

    /// Removes the temp dir (after every case passed).
    fn cleanup(&mut self) {
        self.clean = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.clean {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("conformance: files kept in {}", self.dir.display());
        }
    }
}

/// The last 60 lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A new, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "qiflow-conformance-{name}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// An HTTP response: status, headers (names lower case) and the decoded body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request with `connection: close` and reads the whole response.
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\nuser-agent: {USER_AGENT}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

/// Parses a whole HTTP/1.1 response (status line, headers, body by content-length, chunked
/// encoding or connection close).
fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of head in {} bytes", raw.len())))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| invalid(e.to_string()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if value("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = value("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        rest.get(..len)
            .ok_or_else(|| invalid(format!("body cut short: {} of {len} bytes", rest.len())))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body.
fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("chunk size line cut short"))?;
        let size_line = std::str::from_utf8(&rest[..eol]).map_err(|e| invalid(e.to_string()))?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or_else(|| invalid("chunk cut short"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------------------------
// An OTLP/HTTP trace receiver, std only: enough of HTTP/1.1 to take the exporter's POSTs, and
// enough of protobuf to read the spans of an `ExportTraceServiceRequest`.
//
// qiflow exports without compression: `opentelemetry-otlp` compresses only when asked, through
// its builder (qiflow does not ask) or `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION`, which `start`
// does not pass on. A request with a `content-encoding` is refused and recorded as an error.
// ---------------------------------------------------------------------------------------------

/// The most bytes one export may carry (qiflow's batches of 512 spans are far below).
const MAX_EXPORT_BYTES: usize = 16 << 20;

/// The OTLP `SpanKind` of a request's span.
const SPAN_KIND_SERVER: u64 = 2;

/// The OTLP `Status.code` of a failed span.
const STATUS_CODE_ERROR: u64 = 2;

/// One span as exported, decoded from the protobuf.
#[derive(Debug, Clone, Default)]
struct ExportedSpan {
    /// Ids as lowercase hex; `parent_span_id` is empty for a root span.
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    /// `SpanKind`: 1 internal, 2 server, 3 client, …
    kind: u64,
    start_unix_nano: u64,
    end_unix_nano: u64,
    /// The span's attributes, each value as JSON (string, bool, integer or float).
    attributes: serde_json::Map<String, Value>,
    /// `Status.code` (0 unset, 1 ok, 2 error) and its message.
    status_code: u64,
    status_message: String,
    /// The attributes of the resource the span was exported under.
    resource: serde_json::Map<String, Value>,
}

impl ExportedSpan {
    /// The string attribute `key`, if it is there.
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

/// What the receiver has taken so far.
#[derive(Debug, Default)]
struct Received {
    /// Every span decoded, in the order they arrived.
    spans: Vec<ExportedSpan>,
    /// Requests it refused or could not decode, each with why.
    errors: Vec<String>,
}

/// An OTLP/HTTP receiver on a loopback port: each connection on a thread of its own, each
/// `POST /v1/traces` decoded before it is answered `200`, so an exporter that got its answer
/// has its spans here. Stops accepting when dropped.
struct OtlpReceiver {
    addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Received>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port, accepting on a thread of its own.
    fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Received::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shared, stopping) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let received = shared.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve_exports(stream, &received) {
                        lock(&received).errors.push(format!("connection: {e}"));
                    }
                });
            }
        });
        Self {
            addr,
            received,
            stop,
        }
    }

    /// The traces URL, for `[tracing] otlp_endpoint`.
    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// The spans and errors so far.
    fn take(&self) -> (Vec<ExportedSpan>, Vec<String>) {
        let received = lock(&self.received);
        (received.spans.clone(), received.errors.clone())
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// The receiver's state, even if a connection's thread panicked while holding it.
fn lock(received: &std::sync::Mutex<Received>) -> std::sync::MutexGuard<'_, Received> {
    received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves the requests of one connection (keep-alive) until the peer closes it. A request that
/// is not a well-formed, uncompressed protobuf `POST /v1/traces` is answered 4xx and recorded
/// as an error; one whose body does not decode, 400 and an error.
fn serve_exports(stream: TcpStream, received: &std::sync::Mutex<Received>) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        // The request line, then headers up to the empty line.
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // closed between requests
        }
        let request_line = line.trim_end().to_owned();
        let (mut length, mut content_type, mut encoding) = (None, String::new(), None);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(invalid(format!(
                    "closed inside the head of {request_line:?}"
                )));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(invalid(format!("bad header line {header:?}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "content-type" => content_type = value.to_ascii_lowercase(),
                "content-encoding" if !value.eq_ignore_ascii_case("identity") => {
                    encoding = Some(value.to_owned());
                }
                "transfer-encoding" => {
                    return Err(invalid(format!(
                        "{request_line}: transfer-encoding {value}"
                    )));
                }
                _ => {}
            }
        }
        let Some(length) = length.filter(|&n| n <= MAX_EXPORT_BYTES) else {
            respond(&mut writer, "411 Length Required")?;
            return Err(invalid(format!("{request_line}: no usable content-length")));
        };
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let refusal = if request_line != "POST /v1/traces HTTP/1.1" {
            Some((
                "404 Not Found",
                format!("unexpected request {request_line:?}"),
            ))
        } else if content_type != "application/x-protobuf" {
            Some((
                "415 Unsupported Media Type",
                format!("content-type {content_type:?}"),
            ))
        } else if let Some(encoding) = encoding {
            Some((
                "415 Unsupported Media Type",
                format!("content-encoding {encoding:?}"),
            ))
        } else {
            match decode_export(&body) {
                Ok(spans) => {
                    lock(received).spans.extend(spans);
                    None
                }
                Err(e) => Some(("400 Bad Request", format!("undecodable export: {e}"))),
            }
        };
        match refusal {
            None => respond(&mut writer, "200 OK")?,
            Some((status, why)) => {
                lock(received).errors.push(why);
                respond(&mut writer, status)?;
            }
        }
    }
}

/// Answers with `status` and an empty protobuf body (an empty `ExportTraceServiceResponse`
/// for 200: every field of it is optional).
fn respond(writer: &mut TcpStream, status: &str) -> std::io::Result<()> {
    write!(
        writer,
        "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
    )?;
    writer.flush()
}

/// A protobuf field's value, by wire type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: bytes, a string or an embedded message.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
    /// Wire types 3 and 4 (deprecated groups): skipped whole, never decoded.
    Group,
}

/// Reads the fields of one protobuf message from a byte slice. Every read is bounds-checked and
/// returns an error on malformed input instead of panicking.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// How deeply groups may nest before the input is called malformed.
    const MAX_GROUP_DEPTH: u32 = 32;

    /// Reads the fields of `message` (an encoded message without its own length).
    fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    /// The next field as (number, value); `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (number, wire_type) = self.key()?;
        if wire_type == 4 {
            return Err(format!("end of group {number} without a start"));
        }
        Ok(Some((number, self.value(number, wire_type, 0)?)))
    }

    /// A field's key: its number and wire type (`number << 3 | wire_type`, as a varint).
    fn key(&mut self) -> Result<(u64, u64), String> {
        let key = self.varint()?;
        match key >> 3 {
            0 => Err("field number 0".into()),
            number => Ok((number, key & 7)),
        }
    }

    /// The value of a field of `wire_type`. A group (3) is read up to its matching end (4, the
    /// same number), nested groups included, and skipped.
    fn value(&mut self, number: u64, wire_type: u64, depth: u32) -> Result<Wire<'a>, String> {
        Ok(match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.array()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                Wire::Bytes(self.bytes(len)?)
            }
            3 if depth >= Self::MAX_GROUP_DEPTH => return Err("groups nested too deeply".into()),
            3 => loop {
                if self.rest.is_empty() {
                    return Err(format!("group {number} not ended"));
                }
                match self.key()? {
                    (n, 4) if n == number => break Wire::Group,
                    (n, 4) => return Err(format!("group {number} ended as {n}")),
                    (n, t) => self.value(n, t, depth + 1)?,
                };
            },
            5 => Wire::Fixed32(u32::from_le_bytes(self.array()?)),
            other => return Err(format!("field {number}: wire type {other} does not exist")),
        })
    }

    /// A base-128 varint: 7 bits per byte, least significant first, at most 10 bytes.
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.rest.split_first().ok_or("varint cut short")?;
            self.rest = rest;
            if i == 9 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// The next `n` bytes.
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(format!("{n} bytes wanted, {} left", self.rest.len()));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// The next `N` bytes as an array (a fixed32 or fixed64, little endian).
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.bytes(N)?);
        Ok(array)
    }
}

/// The bytes of a length-delimited field, or an error naming the field.
fn bytes_of<'a>(what: &str, value: Wire<'a>) -> Result<&'a [u8], String> {
    match value {
        Wire::Bytes(bytes) => Ok(bytes),
        other => Err(format!("{what}: expected bytes, found {other:?}")),
    }
}

/// A string field (UTF-8, as protobuf requires).
fn string_of(what: &str, value: Wire<'_>) -> Result<String, String> {
    let bytes = bytes_of(what, value)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("{what}: {e}"))
}

/// A varint field.
fn varint_of(what: &str, value: Wire<'_>) -> Result<u64, String> {
    match value {
        Wire::Varint(v) => Ok(v),
        other => Err(format!("{what}: expected a varint, found {other:?}")),
    }
}

/// An id field (`trace_id` 16 bytes, span ids 8; empty for no parent) as lowercase hex.
fn id_of(what: &str, value: Wire<'_>, len: usize) -> Result<String, String> {
    let bytes = bytes_of(what, value)?;
    if !bytes.is_empty() && bytes.len() != len {
        return Err(format!("{what}: {} bytes, not {len}", bytes.len()));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Decodes an `ExportTraceServiceRequest` into its spans, each with its resource's attributes.
///
/// ```text
/// ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
/// ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
/// Resource      { repeated KeyValue attributes = 1; }
/// ScopeSpans    { repeated Span spans = 2; }
/// ```
///
/// Fields not listed here, at every level, are skipped by their wire type.
fn decode_export(message: &[u8]) -> Result<Vec<ExportedSpan>, String> {
    let mut spans = Vec::new();
    let mut request = Fields::new(message);
    while let Some((number, value)) = request.next_field()? {
        if number != 1 {
            continue;
        }
        // One ResourceSpans: its resource may come after its spans, so collect both first.
        let (mut resource, mut found) = (serde_json::Map::new(), Vec::new());
        let mut resource_spans = Fields::new(bytes_of("resource_spans", value)?);
        while let Some((number, value)) = resource_spans.next_field()? {
            match number {
                1 => {
                    let mut fields = Fields::new(bytes_of("resource", value)?);
                    while let Some((number, value)) = fields.next_field()? {
                        if number == 1 {
                            let (key, value) = decode_key_value(bytes_of("attributes", value)?)?;
                            resource.insert(key, value);
                        }
                    }
                }
                2 => {
                    let mut scope_spans = Fields::new(bytes_of("scope_spans", value)?);
                    while let Some((number, value)) = scope_spans.next_field()? {
                        if number == 2 {
                            found.push(decode_span(bytes_of("spans", value)?)?);
                        }
                    }
                }
                _ => {}
            }
        }
        for mut span in found {
            span.resource = resource.clone();
            spans.push(span);
        }
    }
    Ok(spans)
}

/// Decodes one `Span`:
///
/// ```text
/// Span { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3;
///        bytes parent_span_id = 4; string name = 5; SpanKind kind = 6;
///        fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
///        repeated KeyValue attributes = 9; …; Status status = 15; }
/// Status { string message = 2; StatusCode code = 3; }
/// ```
fn decode_span(message: &[u8]) -> Result<ExportedSpan, String> {
    let mut span = ExportedSpan::default();
    let mut fields = Fields::new(message);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, _) => span.trace_id = id_of("trace_id", value, 16)?,
            (2, _) => span.span_id = id_of("span_id", value, 8)?,
            (4, _) => span.parent_span_id = id_of("parent_span_id", value, 8)?,
            (5, _) => span.name = string_of("name", value)?,
            (6, _) => span.kind = varint_of("kind", value)?,
            (7, Wire::Fixed64(nanos)) => span.start_unix_nano = nanos,
            (8, Wire::Fixed64(nanos)) => span.end_unix_nano = nanos,
            (7 | 8, other) => return Err(format!("span times: not a fixed64: {other:?}")),
            (9, _) => {
                let (key, value) = decode_key_value(bytes_of("attributes", value)?)?;
                span.attributes.insert(key, value);
            }
            (15, _) => {
                let mut status = Fields::new(bytes_of("status", value)?);
                while let Some((number, value)) = status.next_field()? {
                    match number {
                        2 => span.status_message = string_of("status.message", value)?,
                        3 => span.status_code = varint_of("status.code", value)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if span.trace_id.is_empty() || span.span_id.is_empty() {
        return Err(format!("a span without a trace id or a span id: {span:?}"));
    }
    Ok(span)
}

/// Decodes a `KeyValue { string key = 1; AnyValue value = 2; }` with
/// `AnyValue { oneof { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
/// double double_value = 4; … } }`. The other kinds of value (arrays, maps, bytes) become
/// `null`: qiflow exports none.
fn decode_key_value(message: &[u8]) -> Result<(String, Value), String> {
    let (mut key, mut json) = (String::new(), Value::Null);
    let mut fields = Fields::new(message);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => key = string_of("key", value)?,
            2 => {
                let mut any = Fields::new(bytes_of("value", value)?);
                while let Some((number, value)) = any.next_field()? {
                    json = match (number, value) {
                        (1, _) => Value::from(string_of("string_value", value)?),
                        (2, Wire::Varint(b)) => Value::from(b != 0),
                        // int64 on the wire: two's complement in 64 bits.
                        (3, Wire::Varint(i)) => Value::from(i as i64),
                        (4, Wire::Fixed64(bits)) => Value::from(f64::from_bits(bits)),
                        (2..=4, other) => {
                            return Err(format!("AnyValue field {number}: {other:?}"));
                        }
                        _ => Value::Null,
                    };
                }
            }
            _ => {}
        }
    }
    Ok((key, json))
}

/// The OTLP decoder itself, before any server starts: a hand-built export with every wire type
/// among its unknown fields decodes to the spans it holds; each malformed input, and every
/// truncation of the good one, gives an error or a shorter result, never a panic.
fn the_otlp_decoder_reads_what_it_should(stack: &str) {
    // Protobuf by hand: a key is the varint `number << 3 | wire_type`.
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }
    fn key(number: u64, wire_type: u64) -> Vec<u8> {
        varint(number << 3 | wire_type)
    }
    fn var(number: u64, v: u64) -> Vec<u8> {
        [key(number, 0), varint(v)].concat()
    }
    fn fix64(number: u64, v: u64) -> Vec<u8> {
        [key(number, 1), v.to_le_bytes().to_vec()].concat()
    }
    fn len(number: u64, payload: &[u8]) -> Vec<u8> {
        [
            key(number, 2),
            varint(payload.len() as u64),
            payload.to_vec(),
        ]
        .concat()
    }
    fn kv(name: &str, any_value: Vec<u8>) -> Vec<u8> {
        [len(1, name.as_bytes()), len(2, &any_value)].concat()
    }
    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect()
    }

    // The encoder above agrees with the wire format's own examples.
    assert_eq!(varint(300), [0xac, 0x02], "[{stack}] varint");
    assert_eq!(len(5, b"hi"), [0x2a, 0x02, b'h', b'i'], "[{stack}] key");
    assert_eq!(Fields::new(&[0xac, 0x02]).varint(), Ok(300), "[{stack}]");

    let span = [
        len(1, &hex(TRACE_ID)),
        len(2, &hex("0102030405060708")),
        len(3, b"vendor=x"), // trace_state: in the schema, not read here
        len(4, &hex(PARENT_SPAN_ID)),
        len(5, b"GET /hello"),
        var(6, SPAN_KIND_SERVER),
        fix64(7, 1_000),
        fix64(8, 2_000),
        len(9, &kv("http.route", len(1, b"/hello"))),
        len(9, &kv("http.response.status_code", var(3, 200))),
        len(9, &kv("negative", var(3, u64::MAX))), // -1: ten bytes of varint
        len(9, &kv("flag", var(2, 1))),
        len(9, &kv("ratio", fix64(4, 0.5f64.to_bits()))),
        [key(50, 5), vec![1, 2, 3, 4]].concat(), // unknown fixed32
        fix64(51, 7),                            // unknown fixed64
        // An unknown group holding a varint and a nested group.
        [
            key(52, 3),
            var(1, 5),
            key(53, 3),
            len(2, b"x"),
            key(53, 4),
            key(52, 4),
        ]
        .concat(),
        var(60, 1), // unknown varint
        len(
            15,
            &[len(2, b"answered 500"), var(3, STATUS_CODE_ERROR)].concat(),
        ),
    ]
    .concat();
    // A second span, in bytes written out: trace id, span id, name "hi", kind 1.
    let mut minimal = vec![0x0a, 0x10];
    minimal.extend([0x11; 16]);
    minimal.extend([0x12, 0x08]);
    minimal.extend([0x22; 8]);
    minimal.extend([0x2a, 0x02, b'h', b'i', 0x30, 0x01]);
    let scope_spans = [
        len(1, &len(1, b"qiflow")), // the scope, unread
        len(2, &span),
        len(2, &minimal),
    ]
    .concat();
    let resource = len(1, &kv("service.name", len(1, b"conformance")));
    // The resource after the spans, and a schema_url: it must still reach both spans.
    let resource_spans = [
        len(2, &scope_spans),
        len(1, &resource),
        len(3, b"https://x"),
    ]
    .concat();
    let export = [var(99, 1), len(1, &resource_spans)].concat();

    let spans = decode_export(&export)
        .unwrap_or_else(|e| panic!("[{stack}] the hand-built export does not decode: {e}"));
    assert_eq!(spans.len(), 2, "[{stack}] {spans:#?}");
    let (first, second) = (&spans[0], &spans[1]);
    assert_eq!(first.trace_id, TRACE_ID, "[{stack}] {first:#?}");
    assert_eq!(first.span_id, "0102030405060708", "[{stack}] {first:#?}");
    assert_eq!(first.parent_span_id, PARENT_SPAN_ID, "[{stack}] {first:#?}");
    assert_eq!(first.name, "GET /hello", "[{stack}] {first:#?}");
    assert_eq!(first.kind, SPAN_KIND_SERVER, "[{stack}] {first:#?}");
    assert_eq!(
        (first.start_unix_nano, first.end_unix_nano),
        (1_000, 2_000),
        "[{stack}] {first:#?}"
    );
    assert_eq!(
        Value::Object(first.attributes.clone()),
        serde_json::json!({
            "http.route": "/hello",
            "http.response.status_code": 200,
            "negative": -1,
            "flag": true,
            "ratio": 0.5,
        }),
        "[{stack}] {first:#?}"
    );
    assert_eq!(
        (first.status_code, first.status_message.as_str()),
        (STATUS_CODE_ERROR, "answered 500"),
        "[{stack}] {first:#?}"
    );
    assert_eq!(
        (second.name.as_str(), second.kind, second.span_id.as_str()),
        ("hi", 1, "2222222222222222"),
        "[{stack}] {second:#?}"
    );
    assert!(second.parent_span_id.is_empty(), "[{stack}] {second:#?}");
    for span in &spans {
        assert_eq!(
            span.resource.get("service.name"),
            Some(&Value::from("conformance")),
            "[{stack}] {span:#?}"
        );
    }

    // Cut anywhere, the export decodes to less or fails: never a panic.
    for end in 0..export.len() {
        let _ = decode_export(&export[..end]);
    }
    let deep: Vec<u8> = [vec![0x0b; 40], vec![0x0c; 40]].concat();
    let malformed: [(&str, Vec<u8>); 12] = [
        ("a varint cut short", vec![0x08, 0x80]),
        (
            "an 11-byte varint",
            [vec![0x08], vec![0xff; 10], vec![0x01]].concat(),
        ),
        ("a length past the end", vec![0x0a, 0x05, 0x01]),
        ("wire type 7", vec![0x0f]),
        ("field number 0", vec![0x00, 0x00]),
        ("a group end without a start", vec![0x0c]),
        ("a group never ended", vec![0x0b, 0x08, 0x01]),
        ("a group ended by another number", vec![0x0b, 0x14]),
        ("groups nested 40 deep", deep),
        ("resource_spans as a varint", var(1, 5)),
        (
            "a 3-byte span id",
            len(
                1,
                &len(2, &len(2, &[len(1, &[0; 16]), len(2, &[1, 2, 3])].concat())),
            ),
        ),
        (
            "a name that is not UTF-8",
            len(
                1,
                &len(
                    2,
                    &len(
                        2,
                        &[len(1, &[1; 16]), len(2, &[1; 8]), len(5, &[0xff, 0xfe])].concat(),
                    ),
                ),
            ),
        ),
    ];
    for (what, bytes) in malformed {
        assert!(
            decode_export(&bytes).is_err(),
            "[{stack}] the OTLP decoder took {what} ({bytes:02x?}): {:?}",
            decode_export(&bytes)
        );
    }
}
