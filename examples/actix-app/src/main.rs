//! qiflow on actix-web 4: the quickstart's demo routes with qiflow mounted.
//!
//! `cargo run --release -p actix-app`, then `curl 127.0.0.1:3000/hello`.

use std::process::ExitCode;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};
use qiflow_core::{Config, Observer};

/// How long in-flight requests may run on after SIGINT/SIGTERM, in seconds.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("actix-app: invalid configuration:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("actix-app: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = config.server.addr;
    // An explicit actix system, so the server and its workers are gone before the guard flushes.
    let system = actix_web::rt::System::new();
    let served = system.block_on(serve(observer, addr));
    drop(system);
    tracing::info!("actix-app stopping: flushing qiflow's pipelines");
    // Flush every pipeline within the guard's budget, then exit 0.
    drop(guard);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actix-app: cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the demo routes on `addr` until SIGINT or SIGTERM, then lets in-flight requests
/// finish (up to [`SHUTDOWN_TIMEOUT_SECS`]).
async fn serve(observer: Observer, addr: std::net::SocketAddr) -> std::io::Result<()> {
    if let Some(internal) = qiflow_actix::serve_internal(observer.clone())? {
        tracing::info!(%internal, "qiflow endpoints on the internal listener http://{internal}");
    }
    let server = HttpServer::new(move || {
        App::new()
            .route("/hello", web::get().to(hello))
            .route("/users/{id}", web::get().to(user))
            .route("/fail", web::get().to(fail))
            .route("/panic", web::get().to(panic))
            .route("/slow", web::get().to(slow))
            .route("/login", web::post().to(login))
            // /metrics, /health/live, /health/ready, /health (unless `[metrics] listen` is set)
            .configure(qiflow_actix::configure(observer.clone()))
            // request ids, access line, RED metrics, panics → 500: wrapped last, it sees everything
            .wrap(qiflow_actix::Observe::new(observer.clone()))
    })
    // actix-server treats SIGINT as a forced stop; both signals stop gracefully here.
    .shutdown_signal(shutdown_signal())
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(addr)?;
    tracing::info!(%addr, "actix-app listening on http://{addr}");
    server.run().await
}

async fn hello() -> &'static str {
    tracing::info!(greeting = "hello", "said hello");
    "hello from qiflow\n"
}

async fn user(id: web::Path<u64>) -> web::Json<serde_json::Value> {
    let id = id.into_inner();
    // Off at the default level: `PUT /qiflow/api/loggers` with "info,actix_app=debug" shows it.
    tracing::debug!(id, "user looked up");
    web::Json(serde_json::json!({ "id": id, "name": format!("user {id}") }))
}

async fn fail() -> Result<String, qiflow_actix::Error> {
    // A handler error: answered 500 with qiflow's JSON body (the request id, no internals), its
    // message in the access line's `error` field.
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

async fn slow(query: web::Query<SlowQuery>) -> String {
    let ms = query.ms.unwrap_or(200).min(10_000);
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

/// The login body. No `Debug`: the password must never reach a log line.
#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(
    qiflow_actix::Qiflow(observer): qiflow_actix::Qiflow,
    request_id: qiflow_actix::RequestId,
    login: web::Json<Login>,
) -> HttpResponse {
    // The password is never logged nor audited: only the user name and the outcome.
    let login = login.into_inner();
    let ok = login.user == "demo" && login.password == "demo";
    tracing::info!(user = %login.user, ok, "login attempt");
    let outcome = if ok {
        qiflow_core::audit::Outcome::Success
    } else {
        qiflow_core::audit::Outcome::Denied
    };
    let event = qiflow_core::audit::AuditEvent::builder(login.user, "user.login")
        .resource("session")
        .outcome(outcome)
        .request_id(request_id.as_str())
        .build();
    if observer.audit(event).is_err() {
        // Lost: already counted, logged and alerted by qiflow. Refuse rather than go unaudited.
        return HttpResponse::new(StatusCode::SERVICE_UNAVAILABLE);
    }
    HttpResponse::new(if ok {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    })
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, before
/// the server accepts its first connection, so an early signal is not fatal.
#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use actix_web::rt::signal::unix::{Signal, SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    std::future::poll_fn(move |cx| {
        let mut fired =
            |s: &mut Option<Signal>| s.as_mut().is_some_and(|s| s.poll_recv(cx).is_ready());
        if fired(&mut interrupt) | fired(&mut terminate) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        let _ = actix_web::rt::signal::ctrl_c().await;
    }
}
