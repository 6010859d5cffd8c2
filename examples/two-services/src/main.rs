//! # two-services
//!
//! One trace across two services: a `frontend` that answers `GET /checkout/{sku}` by calling a
//! `backend`'s `GET /stock/{sku}` over HTTP with reqwest. Before the call, the frontend's handler
//! writes its request's trace context into the outgoing headers with
//! `qiflow_core::propagation::inject`, so the backend's request continues the same trace, with the
//! frontend's request span as its parent. Both services run qiflow's axum middleware, so the
//! access lines of both carry the same `trace_id` (and, exported over OTLP, their spans form one
//! trace).
//!
//! One binary, started twice. The first argument is the role; the frontend finds the backend at
//! `BACKEND_URL` (default `http://127.0.0.1:3001`). Each reads qiflow's configuration as the
//! quickstart does (`qiflow.toml` or `QIFLOW_CONFIG`, `.env`, `QIFLOW__…` variables; the listen
//! address from `[server] addr` or `QIFLOW_ADDR`, default `127.0.0.1:3000`). Two services keep
//! their logs and state apart, so each runs in a directory of its own:
//!
//! ```sh
//! cargo build -p two-services
//! BIN=$PWD/target/debug/two-services
//! mkdir -p /tmp/two-services/backend /tmp/two-services/frontend
//! (cd /tmp/two-services/backend && QIFLOW__SERVICE__NAME=backend QIFLOW_ADDR=127.0.0.1:3001 "$BIN" backend) &
//! (cd /tmp/two-services/frontend && QIFLOW__SERVICE__NAME=frontend BACKEND_URL=http://127.0.0.1:3001 "$BIN" frontend) &
//!
//! curl 127.0.0.1:3000/checkout/apple
//! # {"available":true,"sku":"apple","stock":{"parent_span_id":"…","sku":"apple","stock":12,"trace_id":"…"},"trace_id":"…"}
//! curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' 127.0.0.1:3000/checkout/pear
//! # the same trace id in both answers: 4bf92f3577b34da6a3ce929d0e0e4736, the caller's
//! grep -h qiflow::access /tmp/two-services/*/logs/app.log   # one trace_id per checkout, in both files
//! kill %1 %2
//! ```
//!
//! | Role | Route | Answer |
//! |---|---|---|
//! | `backend` | `GET /stock/{sku}` | `{"sku","stock","trace_id","parent_span_id"}`: the stock, and the trace context the request continued (for the demo: what the frontend sent); a log line `stock looked up` |
//! | `frontend` | `GET /checkout/{sku}` | `{"sku","available","trace_id","stock"}`: its own trace id and the backend's answer |
//!
//! A sku is 1 to 32 letters, digits, `-` or `_` (anything else: `400`); `apple`, `pear` (none in
//! stock) and `plum` exist (others: `404`, passed on by the frontend). A backend that does not
//! answer, or answers something else, makes the frontend answer `502`. Every error is a JSON
//! body `{"error": …}`. Both serve qiflow's operator surface (`/metrics`, `/health/*`,
//! `/qiflow/*`) like the quickstart.
//!
//! The call itself, in [`checkout`]:
//!
//! ```ignore
//! let mut headers = reqwest::header::HeaderMap::new();
//! // traceparent (and the incoming tracestate): this request's span is the parent of the call.
//! qiflow_core::propagation::inject(&mut headers);
//! let answer = client.get(url).headers(headers).send().await;
//! ```
//!
//! `cargo test -p two-services` starts both on free loopback ports and checks, from their log
//! files, that the backend's access line has the frontend's trace id, with and without an
//! incoming `traceparent`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use qiflow_core::Observer;
use serde_json::{Value, json};

/// Where the frontend finds the backend, when `BACKEND_URL` is not set.
const DEFAULT_BACKEND_URL: &str = "http://127.0.0.1:3001";

/// How long the frontend waits for the backend's answer.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The backend's stock: sku and count.
const STOCK: &[(&str, u64)] = &[("apple", 12), ("pear", 0), ("plum", 7)];

const USAGE: &str = "usage: two-services backend|frontend \
                     (the frontend calls BACKEND_URL, default http://127.0.0.1:3001)";

/// Which of the two services this process is.
enum Role {
    /// Answers `GET /stock/{sku}`.
    Backend,
    /// Answers `GET /checkout/{sku}`, calling the backend.
    Frontend(Frontend),
}

/// The frontend's state: one HTTP client (its connection pool) and the backend's base URL.
#[derive(Clone)]
struct Frontend {
    client: reqwest::Client,
    backend: Arc<str>,
}

/// The role from the command line (and `BACKEND_URL` for the frontend), or what is wrong.
fn role() -> Result<Role, String> {
    let mut args = std::env::args().skip(1);
    let role = match (args.next().as_deref(), args.next()) {
        (Some("backend"), None) => Role::Backend,
        (Some("frontend"), None) => {
            let backend =
                std::env::var("BACKEND_URL").unwrap_or_else(|_| DEFAULT_BACKEND_URL.to_owned());
            let url = reqwest::Url::parse(&backend)
                .map_err(|e| format!("BACKEND_URL {backend:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("BACKEND_URL {backend:?} is not an http(s) URL"));
            }
            let client = reqwest::Client::builder()
                .timeout(BACKEND_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            Role::Frontend(Frontend {
                client,
                backend: backend.trim_end_matches('/').into(),
            })
        }
        _ => return Err(USAGE.to_owned()),
    };
    Ok(role)
}

fn main() -> ExitCode {
    let role = match role() {
        Ok(role) => role,
        Err(e) => {
            eprintln!("two-services: {e}");
            return ExitCode::from(2);
        }
    };
    let name = match role {
        Role::Backend => "backend",
        Role::Frontend(_) => "frontend",
    };
    let config = match qiflow_core::Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("two-services {name}: invalid configuration:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("two-services {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("two-services {name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = config.server.addr;
    let served = runtime.block_on(async move {
        if let Some(internal) = qiflow_axum::serve_internal(observer.clone()).await? {
            tracing::info!(%internal, "qiflow endpoints on the internal listener http://{internal}");
        }
        let app = app(observer, role);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, role = name, "two-services {name} listening on http://{addr}");
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    tracing::info!(
        role = name,
        "two-services {name} stopping: flushing qiflow's pipelines"
    );
    drop(runtime);
    // Flush every pipeline within the guard's budget, then exit 0.
    drop(guard);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("two-services {name}: cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The role's route, the qiflow endpoints, and the middleware (added last).
fn app(observer: Observer, role: Role) -> Router {
    let routes = match role {
        Role::Backend => Router::new().route("/stock/{sku}", get(stock)),
        Role::Frontend(frontend) => Router::new()
            .route("/checkout/{sku}", get(checkout))
            .with_state(frontend),
    };
    routes
        .merge(qiflow_axum::routes(observer.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(qiflow_axum::layer(observer))
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Whether `sku` is 1 to 32 ASCII letters, digits, `-` or `_` (so it goes into the backend's URL
/// as it is).
fn is_sku(sku: &str) -> bool {
    (1..=32).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The answer to a sku that is not one.
fn bad_sku() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "a sku is 1 to 32 letters, digits, '-' or '_'",
    )
}

/// The request's trace id and the caller's span id, as hex (`None` outside a request, or for a
/// request that started its trace).
fn trace_ids() -> (Option<String>, Option<String>) {
    let trace = qiflow_core::propagation::current();
    (
        trace.map(|t| t.trace_id().to_string()),
        trace
            .and_then(|t| t.parent_span_id())
            .map(|s| s.to_string()),
    )
}

/// Backend: `GET /stock/{sku}`, the stock of `sku` and the trace context the request continued.
async fn stock(Path(sku): Path<String>) -> Response {
    if !is_sku(&sku) {
        return bad_sku();
    }
    let Some(&(_, count)) = STOCK.iter().find(|(known, _)| *known == sku) else {
        return error(StatusCode::NOT_FOUND, "no such sku");
    };
    tracing::info!(sku = %sku, stock = count, "stock looked up");
    let (trace_id, parent_span_id) = trace_ids();
    Json(json!({
        "sku": sku,
        "stock": count,
        "trace_id": trace_id,
        "parent_span_id": parent_span_id,
    }))
    .into_response()
}

/// Frontend: `GET /checkout/{sku}`, answered from the backend's `GET /stock/{sku}`, called with
/// the request's trace context in its headers.
async fn checkout(State(app): State<Frontend>, Path(sku): Path<String>) -> Response {
    if !is_sku(&sku) {
        return bad_sku();
    }
    let url = format!("{}/stock/{sku}", app.backend);
    let mut headers = reqwest::header::HeaderMap::new();
    // traceparent (and the incoming tracestate): this request's span is the parent of the call.
    if !qiflow_core::propagation::inject(&mut headers) {
        tracing::debug!("no trace context to hand on ([tracing] propagation = \"none\")");
    }
    let answer = match app.client.get(&url).headers(headers).send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(%url, error = %e, "the stock service did not answer");
            return error(StatusCode::BAD_GATEWAY, "the stock service did not answer");
        }
    };
    let status = answer.status().as_u16();
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(%url, status, error = %e, "the stock service's answer was cut short");
            return error(
                StatusCode::BAD_GATEWAY,
                "the stock service's answer was cut short",
            );
        }
    };
    let stock: Value = match (status, serde_json::from_slice(&body)) {
        (200, Ok(stock)) => stock,
        (404, _) => return error(StatusCode::NOT_FOUND, "no such sku"),
        (status, parsed) => {
            let problem = parsed.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(%url, status, %problem, "the stock service answered unexpectedly");
            return error(
                StatusCode::BAD_GATEWAY,
                "the stock service answered unexpectedly",
            );
        }
    };
    let available = stock["stock"].as_u64().is_some_and(|n| n > 0);
    tracing::info!(sku = %sku, available, "checked out");
    let (trace_id, _) = trace_ids();
    Json(json!({
        "sku": sku,
        "available": available,
        "trace_id": trace_id,
        "stock": stock,
    }))
    .into_response()
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
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
        () = ctrl_c => {},
        () = terminate => {},
    }
}
