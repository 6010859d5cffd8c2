//! Shared pieces of the load-test servers (`src/bin/load_axum.rs`, `src/bin/load_actix.rs`) that
//! `load/run.sh` drives with wrk. See `docs/performance.md`.
//!
//! Every server reads its mode from its first argument (or `LOAD_MODE`) and its port from
//! `LOAD_PORT`, listens on `127.0.0.1` only, serves `GET /users/{id}` with [`user`], and stops on
//! SIGTERM. On the way out it prints one `load-summary` line on stderr with the number of log
//! lines its temp directory holds, so the script can check that every request was logged.

use std::io::Read;
use std::path::Path;

use qiflow_core::Config;
use qiflow_core::config::ConfigError;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The port when `LOAD_PORT` is not set.
pub const DEFAULT_PORT: u16 = 3100;

/// The server's mode: its first argument, else `LOAD_MODE`, else `"bare"`.
pub fn mode() -> String {
    std::env::args()
        .nth(1)
        .or_else(|| std::env::var("LOAD_MODE").ok())
        .unwrap_or_else(|| "bare".to_owned())
}

/// The listen address, `127.0.0.1:$LOAD_PORT` (defaults to [`DEFAULT_PORT`]).
///
/// # Panics
///
/// When `LOAD_PORT` is set but is not a port number.
pub fn addr() -> std::net::SocketAddr {
    let port = match std::env::var("LOAD_PORT") {
        Ok(port) => port.parse().expect("LOAD_PORT must be a port number"),
        Err(_) => DEFAULT_PORT,
    };
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// The response body of `GET /users/{id}`: `{"id":42,"name":"user 42"}`.
pub fn user(id: u64) -> serde_json::Value {
    serde_json::json!({ "id": id, "name": format!("user {id}") })
}

/// The `floor` modes' middleware around `router`: tower-http's request-id layers
/// (`SetRequestIdLayer` with a UUID, `PropagateRequestIdLayer`) around a [`SpanOnly`] span, the
/// least a middleware giving each request an id and a span does.
pub fn with_floor(router: axum::Router) -> axum::Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    let header = axum::http::HeaderName::from_static("x-request-id");
    router.layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
            .layer(tower::layer::layer_fn(SpanOnly::new))
            .layer(PropagateRequestIdLayer::new(header)),
    )
}

/// The in-process benches' router (the `middleware` bench, `request_cost`): `GET /users/{id}`
/// answering [`user`] as JSON, and a 404 fallback.
pub fn users_router() -> axum::Router {
    async fn handler(
        axum::extract::Path(id): axum::extract::Path<u64>,
    ) -> axum::Json<serde_json::Value> {
        axum::Json(user(id))
    }
    axum::Router::new()
        .route("/users/{id}", axum::routing::get(handler))
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
}

/// qiflow's configuration for the `qiflow` modes: JSON lines to a rotating file in `dir` (daily,
/// or at the default 100 MiB), stdout off, the access line on or off, metrics on, the audit trail
/// off, level `info`. `QIFLOW__…` variables still override it, as in any service.
pub fn qiflow_config(dir: &Path, access_log: bool) -> Result<Config, ConfigError> {
    let dir = dir.display();
    qiflow_core::config::Loader::new()
        .dotenv(None)
        .toml_str(format!(
            r#"
            [service]
            name = "load-bench"
            version = "0.1.0"
            [logging]
            level = "info"
            format = "json"
            stdout = false
            dir = "{dir}"
            rotation = "daily"
            access_log = {access_log}
            [metrics]
            enabled = true
            [audit]
            enabled = false
            dir = "{dir}/audit"
            [baseline]
            state_file = "{dir}/baselines.json"
            "#
        ))
        .load()
}

/// Installs the subscriber users assemble today: level `info`, and tracing-subscriber's JSON fmt
/// layer writing through `tracing_appender::non_blocking` (its defaults: lossy, 128,000 lines) to
/// `tracing_appender::rolling::daily(dir, "app.log")`. With `span_close`, a line is also written
/// when a span closes (`FmtSpan::CLOSE`), which is how tracing-actix-web's request span becomes
/// a log line. Keep the guard until the end.
///
/// # Panics
///
/// When a global subscriber is already installed.
pub fn install_json_file_subscriber(dir: &Path, span_close: bool) -> WorkerGuard {
    let (writer, guard) =
        tracing_appender::non_blocking(tracing_appender::rolling::daily(dir, "app.log"));
    let span_events = if span_close {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_span_events(span_events)
                .with_writer(writer),
        )
        .try_init()
        .expect("no other global subscriber is installed");
    guard
}

/// Counts the log lines under `dir` (recursively): in the plain files, and in the gzip archives
/// whose uncompressed original is gone (qiflow deletes it only once the `.gz` is complete). Files
/// being compressed (`*.tmp`) are skipped. Returns the lines and the number of archives.
pub fn log_lines(dir: &Path) -> (u64, u64) {
    let mut lines = 0;
    let mut archives = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_dir() {
            let (l, a) = log_lines(&path);
            lines += l;
            archives += a;
        } else if extension == "tmp" {
            continue;
        } else if extension == "gz" {
            archives += 1;
            if !path.with_extension("").exists()
                && let Ok(file) = std::fs::File::open(&path)
            {
                lines += count_newlines(flate2::read::MultiGzDecoder::new(file));
            }
        } else if let Ok(file) = std::fs::File::open(&path) {
            lines += count_newlines(file);
        }
    }
    (lines, archives)
}

fn count_newlines(mut reader: impl Read) -> u64 {
    let mut lines = 0;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    lines
}

/// Prints the `load-summary` line on stderr: the server, its mode and what its log dir holds.
pub fn print_summary(server: &str, mode: &str, dir: Option<&Path>) {
    let (lines, archives) = dir.map(log_lines).unwrap_or_default();
    eprintln!("load-summary server={server} mode={mode} log_lines={lines} log_archives={archives}");
}

/// Resolves on SIGTERM (what `load/run.sh` sends) or SIGINT. Call it inside a tokio runtime.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// The `span` modes' middleware: a `request` span with the fields qiflow's span starts with, the
/// inner service called and its future polled inside it. Nothing else.
#[derive(Clone, Debug)]
pub struct SpanOnly<S> {
    inner: S,
}

impl<S> SpanOnly<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for SpanOnly<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(
        &mut self,
        request: axum::http::Request<B>,
    ) -> tracing::instrument::Instrumented<S::Future> {
        use tracing::Instrument as _;
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("unmatched", |p| p.as_str());
        let span = tracing::info_span!(
            target: "qiflow::request",
            "request",
            request_id = "01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f",
            http.request.method = request.method().as_str(),
            http.route = route,
            url.path = request.uri().path(),
            server.address = request
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok()),
        );
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        future.instrument(span)
    }
}

/// The spans in an OTLP `ExportTraceServiceRequest` body (protobuf, not compressed), counted on
/// the wire format without decoding a message: `resource_spans` (field 1), their `scope_spans`
/// (field 2), and the `spans` (field 2) of each. Cheap enough for `load_sink` to run on every
/// export it receives. `None` when the body is not well-formed protobuf.
pub fn otlp_span_count(body: &[u8]) -> Option<u64> {
    let mut spans = 0;
    for_each_field(body, 1, |resource_spans| {
        for_each_field(resource_spans, 2, |scope_spans| {
            for_each_field(scope_spans, 2, |_span| {
                spans += 1;
                Some(())
            })
        })
    })?;
    Some(spans)
}

/// Calls `f` with the bytes of every length-delimited field numbered `wanted` in `message`,
/// skipping the other fields.
fn for_each_field(
    mut message: &[u8],
    wanted: u64,
    mut f: impl FnMut(&[u8]) -> Option<()>,
) -> Option<()> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut message)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                let field = message.get(..len)?;
                if key >> 3 == wanted {
                    f(field)?;
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        message = message.get(skip..)?;
    }
    Some(())
}

/// Reads one protobuf varint off the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
    use prost::Message as _;

    use super::otlp_span_count;

    fn span(name: &str) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.to_owned(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_100_000,
            attributes: vec![KeyValue {
                key: "http.route".to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("/users/{id}".to_owned())),
                }),
                ..Default::default()
            }],
            events: vec![span::Event {
                name: "event".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn scope(spans: usize) -> ScopeSpans {
        ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "scope".to_owned(),
                version: "1".to_owned(),
                ..Default::default()
            }),
            spans: (0..spans).map(|i| span(&format!("span {i}"))).collect(),
            schema_url: "https://opentelemetry.io/schemas/1.30.0".to_owned(),
        }
    }

    #[test]
    fn counts_the_spans_of_every_resource_and_scope() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".to_owned(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("load-bench".to_owned())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![scope(3), scope(0), scope(200)],
                    schema_url: String::new(),
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![scope(1)],
                    schema_url: String::new(),
                },
            ],
        };
        let body = request.encode_to_vec();
        assert_eq!(otlp_span_count(&body), Some(204));
        assert_eq!(
            otlp_span_count(&ExportTraceServiceRequest::default().encode_to_vec()),
            Some(0)
        );
    }

    #[test]
    fn a_body_that_is_not_protobuf_has_no_count() {
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![scope(2)],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        assert_eq!(otlp_span_count(&body[..body.len() - 1]), None, "cut short");
        assert_eq!(
            otlp_span_count(b"{\"resourceSpans\":[]}"),
            None,
            "OTLP/JSON"
        );
    }
}
