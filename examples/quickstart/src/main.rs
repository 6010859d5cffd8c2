//! qiflow quickstart: an axum service with qiflow mounted.
//!
//! `cargo run --release -p quickstart`, then `curl 127.0.0.1:3000/health/live`.
//!
//! `GET /orders` and `POST /orders` show permission checks: each route is guarded with
//! [`qiflow_axum::require`], which asks the policy (`[authz]`, or [`DEMO_AUTHZ`] when the
//! configuration defines no roles) and audits every denial. Who the user is comes from
//! [`demo_authentication`], a stand-in for real authentication.

use std::process::ExitCode;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use qiflow_core::Observer;
use qiflow_core::audit::{AuditEvent, Outcome};
use qiflow_core::authz::Principal;
use qiflow_core::config::ConfigError;
use qiflow_core::dependency::{DependencyKind, ErrorClass};

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
    let config = match qiflow_core::Config::load().and_then(with_demo_policy) {
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
        let app = app(observer.clone(), database(&observer)?);
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

/// `config` with the demo policy ([`DEMO_AUTHZ`]) when it defines no `[authz]` roles: its roles
/// and users are the demo's, the rest of its `[authz]` (`deny_status`, `audit_grants`,
/// `denial_alert`) stays as configured. A configuration with roles of its own is kept as it is.
fn with_demo_policy(mut config: qiflow_core::Config) -> Result<qiflow_core::Config, ConfigError> {
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

/// The demo routes (DESIGN.md §3), the `database` routes, the qiflow endpoints, and the
/// middleware (added last: the last layer is the outermost, and a layer wraps only the routes
/// added before it).
fn app(observer: Observer, database: Router) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route("/users/{id}", get(user))
        .route("/fail", get(fail))
        .route("/panic", get(panic))
        .route("/slow", get(slow))
        .route("/login", post(login))
        .merge(orders(&observer))
        .merge(database)
        .merge(qiflow_axum::routes(observer.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND })
        // Handlers reach the observer through the `Qiflow` extractor.
        .layer(axum::Extension(observer.clone()))
        // Who the user is, before the guards run (they are route layers: inside this one).
        .layer(axum::middleware::map_request(demo_authentication))
        // Outermost: a denial is audited with the request's id.
        .layer(qiflow_axum::layer(observer))
}

/// With `DATABASE_URL` set (`postgres://user@host/db`), a PostgreSQL pool registered as the
/// dependency `main-db` ([`qiflow_core::dependency`]: calls timed, slow ones logged with their
/// statement normalized, the pool's figures, a `SELECT 1` readiness check) and two routes on it:
/// `GET /db/users/{id}` (a query) and `GET /db/slow?ms=N` (`SELECT pg_sleep(N/1000.0)`). Without
/// it, no routes: the quickstart runs as without a database.
fn database(observer: &Observer) -> std::io::Result<Router> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return Ok(Router::new());
    };
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("DATABASE_URL: {e}; it looks like postgres://user:password@host:5432/db"),
        )
    };
    let pg: tokio_postgres::Config = url.parse().map_err(|e| invalid(&e))?;
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(8)
        .wait_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| invalid(&e))?;
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    db.deadpool_postgres(&pool);
    tracing::info!("DATABASE_URL set: /db/users/{{id}} and /db/slow on the pool main-db");
    Ok(Router::new()
        .route("/db/users/{id}", get(db_user))
        .route("/db/slow", get(db_slow))
        .with_state(Database { pool, db }))
}

/// The pool and its dependency handle, the database routes' state.
#[derive(Clone)]
struct Database {
    pool: deadpool_postgres::Pool,
    db: qiflow_core::dependency::Dependency,
}

/// Why a database route failed: 503 when no connection was free or the server is away, 500
/// for a failed query (the error's class is counted by qiflow either way).
fn db_error(e: &(dyn std::error::Error + 'static)) -> StatusCode {
    match ErrorClass::of(e) {
        ErrorClass::Query => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn db_user(
    axum::extract::State(d): axum::extract::State<Database>,
    Path(id): Path<i32>,
) -> Result<Json<serde_json::Value>, StatusCode> {
    // The wait is timed, and a time-out (no connection free) saturates the pool.
    let client = d.db.acquire(d.pool.get()).await.map_err(|e| db_error(&e))?;
    let sql = "SELECT $1::int AS id, 'user ' || $1::int AS name";
    let row =
        d.db.query(sql, client.query_one(sql, &[&id]))
            .await
            .map_err(|e| db_error(&e))?;
    let name: String = row.get("name");
    Ok(Json(serde_json::json!({ "id": id, "name": name })))
}

async fn db_slow(
    axum::extract::State(d): axum::extract::State<Database>,
    Query(q): Query<SlowQuery>,
) -> Result<String, StatusCode> {
    let ms = q.ms.unwrap_or(200).min(10_000);
    let client = d.db.acquire(d.pool.get()).await.map_err(|e| db_error(&e))?;
    let sql = "SELECT pg_sleep($1::float8 / 1000.0)";
    d.db.query(sql, client.execute(sql, &[&(ms as f64)]))
        .await
        .map_err(|e| db_error(&e))?;
    Ok(format!("slept {ms} ms in PostgreSQL\n"))
}

/// `GET /orders` (needs `orders:read`) and `POST /orders` (needs `orders:write`): one router
/// per permission, each guarded with `route_layer` (so the guard runs for a matched route only,
/// with its template for the audit record), merged into the one path.
fn orders(observer: &Observer) -> Router {
    Router::new()
        .route("/orders", get(list_orders))
        .route_layer(qiflow_axum::require(observer, "orders:read"))
        .merge(
            Router::new()
                .route("/orders", post(create_order))
                .route_layer(qiflow_axum::require(observer, "orders:write")),
        )
}

/// **A stand-in for real authentication, for the demo only**: it believes the `X-Demo-User`
/// header and puts a [`Principal`] with that id in the request's extensions, where the guards
/// find it. A real service verifies who the user is (a session with axum-login, a JWT checked
/// by a middleware, …) and inserts the `Principal` the same way. Never trust such a header in
/// production: anyone can send it.
async fn demo_authentication(mut request: Request) -> Request {
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
    request
}

/// `GET /orders`: a small fixed list.
async fn list_orders() -> Json<serde_json::Value> {
    Json(serde_json::json!([
        { "id": 1, "item": "green tea", "quantity": 2 },
        { "id": 2, "item": "oolong", "quantity": 1 },
    ]))
}

/// `POST /orders`: 201 with the new order (nothing is stored), made by the user the guard let
/// through.
async fn create_order(
    axum::Extension(principal): axum::Extension<Principal>,
) -> (StatusCode, Json<serde_json::Value>) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(3);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    tracing::info!(id, user = %principal.id, "order created");
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "status": "created", "created_by": principal.id })),
    )
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
    // Answered once the record is stored (its batch fsynced or committed): a login is never
    // granted unaudited, even if the process dies right after.
    if observer.audit_durable(event).await.is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use qiflow_core::authz::{Permission, Policy};
    use qiflow_core::config::Loader;

    /// A configuration from `toml` alone (no file, no environment).
    fn load(toml: &str) -> qiflow_core::Config {
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
