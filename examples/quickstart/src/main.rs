//! qiflow quickstart: an axum service with qiflow mounted.
//!
//! `cargo run --release -p quickstart`, then `curl 127.0.0.1:3000/health/live`.

use std::process::ExitCode;

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use qiflow_core::Observer;
use qiflow_core::audit::{AuditEvent, Outcome};

fn main() -> ExitCode {
    let config = match qiflow_core::Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("quickstart: invalid configuration:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("quickstart: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quickstart: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = config.server.addr;
    let served = runtime.block_on(async move {
        if let Some(internal) = qiflow_axum::serve_internal(observer.clone()).await? {
            tracing::info!(%internal, "qiflow endpoints on the internal listener http://{internal}");
        }
        let app = app(observer);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "quickstart listening on http://{addr}");
        // With the peer's address in each request, qiflow logs it with refused operator requests.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    tracing::info!("quickstart stopping: flushing qiflow's pipelines");
    drop(runtime);
    // Flush every pipeline within the guard's budget, then exit 0.
    drop(guard);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo routes (DESIGN.md §3), the qiflow endpoints, and the middleware (added last).
fn app(observer: Observer) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route("/users/{id}", get(user))
        .route("/fail", get(fail))
        .route("/panic", get(panic))
        .route("/slow", get(slow))
        .route("/login", post(login))
        .merge(qiflow_axum::routes(observer.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND })
        // Handlers reach the observer through the `Qiflow` extractor.
        .layer(axum::Extension(observer.clone()))
        .layer(qiflow_axum::layer(observer))
}

async fn hello() -> &'static str {
    tracing::info!(greeting = "hello", "said hello");
    "hello from qiflow\n"
}

async fn user(Path(id): Path<u64>) -> Json<serde_json::Value> {
    // Off at the default level: `PUT /qiflow/api/loggers` with "info,quickstart=debug" shows it.
    tracing::debug!(id, "user looked up");
    Json(serde_json::json!({ "id": id, "name": format!("user {id}") }))
}

async fn fail() -> Result<String, qiflow_axum::Error> {
    // A handler error with a source: answered 500, its message in the access line.
    let port: u16 = "not a number".parse()?;
    Ok(format!("port {port}\n"))
}

async fn panic() -> &'static str {
    let items: Vec<u8> = Vec::new();
    // An out-of-bounds index: a real bug, caught by the middleware (500) while the server lives on.
    if items[items.len()] == 0 {
        "zero"
    } else {
        "other"
    }
}

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

async fn slow(Query(q): Query<SlowQuery>) -> String {
    let ms = q.ms.unwrap_or(200).min(10_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(
    qiflow_axum::Qiflow(observer): qiflow_axum::Qiflow,
    axum::Extension(request_id): axum::Extension<qiflow_axum::RequestId>,
    Json(login): Json<Login>,
) -> StatusCode {
    // The password is never logged nor audited: only the user name and the outcome.
    let ok = login.user == "demo" && login.password == "demo";
    tracing::info!(user = %login.user, ok, "login attempt");
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Denied
    };
    let event = AuditEvent::builder(login.user, "user.login")
        .resource("session")
        .outcome(outcome)
        .request_id(request_id.as_str())
        .build();
    if observer.audit(event).is_err() {
        // Lost: already counted, logged and alerted by qiflow. Refuse rather than go unaudited.
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if ok {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
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
