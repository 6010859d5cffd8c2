//! qiflow on actix-web 4: the quickstart's demo routes with qiflow mounted.
//!
//! `cargo run --release -p actix-app`, then `curl 127.0.0.1:3000/hello`.
//!
//! `GET /orders` and `POST /orders` show permission checks: each route is wrapped in a
//! [`qiflow_actix::Require`] guard, which asks the policy (`[authz]`, or [`DEMO_AUTHZ`] when
//! the configuration defines no roles) and audits every denial. Who the user is comes from
//! [`demo_authentication`], a stand-in for real authentication.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::dev::{Service, ServiceRequest};
use actix_web::http::StatusCode;
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, web};
use qiflow_actix::Require;
use qiflow_core::authz::Principal;
use qiflow_core::config::ConfigError;
use qiflow_core::{Config, Observer};

/// How long in-flight requests may run on after SIGINT/SIGTERM, in seconds.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// The demo's permission policy, in force when the configuration defines no `[authz]` roles of
/// its own: a `viewer` may read the orders, an `admin` inherits that and may do anything with
/// them (`orders:*`); the user `demo` is a viewer, the user `admin` an admin.
const DEMO_AUTHZ: &str = r#"
[authz.roles.viewer]
permissions = ["orders:read"]

[authz.roles.admin]
inherits = ["viewer"]
permissions = ["orders:*"]

[authz.users]
demo = ["viewer"]
admin = ["admin"]
"#;

/// The header [`demo_authentication`] takes the user from. For the demo only.
const DEMO_USER_HEADER: &str = "x-demo-user";

fn main() -> ExitCode {
    let config = match Config::load().and_then(with_demo_policy) {
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

/// `config` with the demo policy ([`DEMO_AUTHZ`]) when it defines no `[authz]` roles: its roles
/// and users are the demo's, the rest of its `[authz]` (`deny_status`, `audit_grants`,
/// `denial_alert`) stays as configured. A configuration with roles of its own is kept as it is.
fn with_demo_policy(mut config: Config) -> Result<Config, ConfigError> {
    if config.authz.roles.is_empty() {
        // The demo policy alone: no file, and no variable of the environment mixed in.
        let demo = qiflow_core::config::Loader::new()
            .toml_str(DEMO_AUTHZ)
            .env(std::iter::empty::<(String, String)>())
            .load()?
            .authz;
        config.authz.roles = demo.roles;
        config.authz.users = demo.users;
    }
    Ok(config)
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
            // Each method of /orders behind its permission (checked when the app is built).
            .service(
                web::resource("/orders")
                    .route(
                        web::get()
                            .to(list_orders)
                            .wrap(Require::new(&observer, "orders:read")),
                    )
                    .route(
                        web::post()
                            .to(create_order)
                            .wrap(Require::new(&observer, "orders:write")),
                    ),
            )
            // /metrics, /health/live, /health/ready, /health (unless `[metrics] listen` is set)
            .configure(qiflow_actix::configure(observer.clone()))
            // Who the user is: an app-level middleware runs before the routes' guards.
            .wrap_fn(|request, service| {
                demo_authentication(&request);
                service.call(request)
            })
            // request ids, access line, RED metrics, panics → 500: wrapped last, it sees everything
            // (a denial is audited inside the request's span, with its id)
            .wrap(qiflow_actix::Observe::new(observer.clone()))
    })
    // actix-server treats SIGINT as a forced stop; both signals stop gracefully here.
    .shutdown_signal(shutdown_signal())
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(addr)?;
    tracing::info!(%addr, "actix-app listening on http://{addr}");
    server.run().await
}

/// **A stand-in for real authentication, for the demo only**: it believes the `X-Demo-User`
/// header and puts a [`Principal`] with that id in the request's extensions, where the guards
/// find it. A real service verifies who the user is (a session with actix-identity, a JWT
/// checked by a middleware, …) and inserts the `Principal` the same way. Never trust such a
/// header in production: anyone can send it.
fn demo_authentication(request: &ServiceRequest) {
    let user = request
        .headers()
        .get(DEMO_USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|user| !user.is_empty())
        .map(str::to_owned);
    if let Some(user) = user {
        request.extensions_mut().insert(Principal::new(user));
    }
}

/// `GET /orders`: a small fixed list.
async fn list_orders() -> web::Json<serde_json::Value> {
    web::Json(serde_json::json!([
        { "id": 1, "item": "green tea", "quantity": 2 },
        { "id": 2, "item": "oolong", "quantity": 1 },
    ]))
}

/// `POST /orders`: 201 with the new order (nothing is stored), made by the user the guard let
/// through.
async fn create_order(principal: Option<web::ReqData<Principal>>) -> HttpResponse {
    static NEXT_ID: AtomicU64 = AtomicU64::new(3);
    let user = principal.map(|p| p.id.clone()).unwrap_or_default();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    tracing::info!(id, %user, "order created");
    HttpResponse::Created().json(serde_json::json!({
        "id": id,
        "status": "created",
        "created_by": user,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use qiflow_core::authz::{Permission, Policy};
    use qiflow_core::config::Loader;

    /// A configuration from `toml` alone (no file, no environment).
    fn load(toml: &str) -> Config {
        Loader::new()
            .toml_str(toml)
            .env(std::iter::empty::<(String, String)>())
            .load()
            .unwrap()
    }

    #[test]
    fn the_demo_policy_applies_only_without_configured_roles() {
        // No roles: the demo's, with the rest of `[authz]` as configured.
        let config = with_demo_policy(load("[authz]\ndeny_status = 404\n")).unwrap();
        assert_eq!(config.authz.deny_status, 404);
        let policy = Policy::new(&config.authz).unwrap();
        let read = Permission::parse("orders:read").unwrap();
        let write = Permission::parse("orders:write").unwrap();
        let allows =
            |user: &str, permission: &Permission| policy.allows(&Principal::new(user), permission);
        assert!(allows("demo", &read));
        assert!(!allows("demo", &write));
        // `admin` reads through `viewer`, and writes through `orders:*`.
        assert!(allows("admin", &read));
        assert!(allows("admin", &write));
        assert!(!allows("stranger", &read));

        // Roles of its own: kept, and no demo user is added.
        let config = with_demo_policy(load(
            "[authz.roles.clerk]\npermissions = [\"orders:write\"]\n",
        ))
        .unwrap();
        assert_eq!(config.authz.roles.keys().collect::<Vec<_>>(), ["clerk"]);
        assert!(config.authz.users.is_empty());
    }
}
