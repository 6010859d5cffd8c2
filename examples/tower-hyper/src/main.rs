//! qiflow on plain hyper 1 and tower, without a web framework.
//!
//! `cargo run --release -p tower-hyper`, then `curl 127.0.0.1:3000/hello`.
//!
//! The same demo routes as the quickstart (axum), with the routing done by hand. Plain tower has
//! no routes, so the service is built in four steps (outermost first):
//!
//! 1. [`match_route`] matches the path against the demo routes and inserts its [`RouteTemplate`]
//!    (`/users/{id}`, never the raw path) into the request's extensions;
//! 2. qiflow's [`ObserveLayer`] reads that template for the `route` label (no template:
//!    `route="unmatched"`) and does the rest: request id, span, access line, RED metrics, panics;
//! 3. [`demo_authentication`], a stand-in for real authentication, puts the user's
//!    [`Principal`] in the request's extensions;
//! 4. [`handle`] answers: qiflow's operator surface (`/metrics`, `/health/*`, `/qiflow/*`,
//!    through [`qiflow_tower::answer`]), the demo routes, 404, 405. `GET /orders` and
//!    `POST /orders` go through their permission guards first ([`Orders`]: a
//!    [`RequireLayer`] each), which ask the policy (`[authz]`, or [`DEMO_AUTHZ`] when the
//!    configuration defines no roles) and audit every denial.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::num::ParseIntError;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use qiflow_core::authz::Principal;
use qiflow_core::config::ConfigError;
use qiflow_core::{Config, Observer};
use qiflow_tower::{HandlerError, ObserveLayer, RequestId, Require, RequireLayer};
use tower::util::ServiceFn;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// The response body: `Full` implements `Default`, which `ObserveLayer` needs for the 500 it
/// answers when a handler panics.
type Body = Full<Bytes>;

/// How long in-flight requests may take to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The longest `POST /login` body read.
const MAX_LOGIN_BODY: usize = 64 * 1024;

/// The longest `GET /slow?ms=N` sleep, in milliseconds.
const MAX_SLOW_MS: u64 = 10_000;

// The demo routes' templates: the `route` label of their metrics and access lines.
const HELLO: &str = "/hello";
const USER: &str = "/users/{id}";
const FAIL: &str = "/fail";
const PANIC: &str = "/panic";
const SLOW: &str = "/slow";
const LOGIN: &str = "/login";
const ORDERS: &str = "/orders";

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

/// The route template a request matched, inserted into its extensions by [`match_route`] before
/// qiflow's middleware sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RouteTemplate(&'static str);

fn main() -> ExitCode {
    let config = match Config::load().and_then(with_demo_policy) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tower-hyper: invalid configuration:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("tower-hyper: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tower-hyper: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = config.server.addr;
    let served = runtime.block_on(serve(addr, observer));
    tracing::info!("tower-hyper stopping: flushing qiflow's pipelines");
    // Stops the connection tasks still running after the grace period.
    drop(runtime);
    // Flush every pipeline within the guard's budget, then exit 0.
    drop(guard);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tower-hyper: cannot serve on {addr}: {e}");
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

/// Accepts connections on `addr` (and on `[metrics] listen` when set) until SIGINT or SIGTERM,
/// then stops accepting and lets the open connections finish their in-flight requests, for at
/// most [`SHUTDOWN_GRACE`].
async fn serve(addr: SocketAddr, observer: Observer) -> std::io::Result<()> {
    // `[admin] listen`: qiflow's operator surface on an internal address instead of the app's
    // port.
    let internal = match observer.config().operator_listener() {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("admin.listen: cannot bind {listen}: {e}"))
            })?;
            let bound = listener.local_addr()?;
            tracing::info!(internal = %bound, "qiflow's operator surface on the operator listener http://{bound}");
            Some(listener)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "tower-hyper listening on http://{addr}");

    let layer = ObserveLayer::new(observer.clone()).route(|extensions: &http::Extensions| {
        extensions
            .get::<RouteTemplate>()
            .map(|route| Cow::Borrowed(route.0))
    });
    let orders = Orders::new(&observer);
    let service = ServiceBuilder::new()
        .map_request(match_route::<Incoming>)
        .layer(layer)
        // Inside `ObserveLayer` (a denial is audited with the request's id), before the guards.
        .map_request(demo_authentication::<Incoming>)
        .service_fn({
            let observer = observer.clone();
            move |request: Request<Incoming>| {
                let observer = observer.clone();
                let orders = orders.clone();
                async move { Ok::<_, Infallible>(handle(&observer, &orders, request).await) }
            }
        });
    // The operator listener serves qiflow's operator surface only, unobserved and trusted.
    let internal_service = qiflow_tower::Admin::operator_listener(observer);

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                spawn_connection(&builder, &graceful, accepted, service.clone()).await;
            }
            accepted = accept_internal(internal.as_ref()) => {
                spawn_connection(&builder, &graceful, accepted, internal_service.clone()).await;
            }
            () = &mut signal => break,
        }
    }

    drop(listener);
    drop(internal);
    tracing::info!(
        grace_seconds = SHUTDOWN_GRACE.as_secs(),
        "tower-hyper shutting down: no new connections, waiting for in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("in-flight requests still running after the grace period; dropping them");
        }
    }
    Ok(())
}

/// Accepts on the internal listener; never resolves when there is none.
async fn accept_internal(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves one accepted connection with `service` (HTTP/1.1, or HTTP/2 with prior knowledge) on
/// its own task, watched by `graceful`.
async fn spawn_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
    service: S,
) where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (stream, peer) = match accepted {
        Ok(pair) => pair,
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!(error = %e, "cannot accept a connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    };
    // The peer's address in each request's extensions: qiflow logs it with refused operator
    // requests.
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(peer);
            request
        })
        .service(service);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// The outer step: matches the path against the demo routes and inserts the [`RouteTemplate`].
fn match_route<B>(mut request: Request<B>) -> Request<B> {
    if let Some(template) = route_template(request.uri().path()) {
        request.extensions_mut().insert(RouteTemplate(template));
    }
    request
}

/// The template of the demo route `path` matches, whatever the method; `None` for any other path
/// (qiflow's own endpoints included: the middleware does not observe them).
fn route_template(path: &str) -> Option<&'static str> {
    let mut segments = path.strip_prefix('/')?.split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some("hello"), None, _) => Some(HELLO),
        (Some("users"), Some(id), None) if !id.is_empty() => Some(USER),
        (Some("fail"), None, _) => Some(FAIL),
        (Some("panic"), None, _) => Some(PANIC),
        (Some("slow"), None, _) => Some(SLOW),
        (Some("login"), None, _) => Some(LOGIN),
        (Some("orders"), None, _) => Some(ORDERS),
        _ => None,
    }
}

/// **A stand-in for real authentication, for the demo only**: it believes the `X-Demo-User`
/// header and puts a [`Principal`] with that id in the request's extensions, where the guards
/// find it. A real service verifies who the user is (a session, a JWT checked by a middleware,
/// …) and inserts the `Principal` the same way. Never trust such a header in production: anyone
/// can send it.
fn demo_authentication<B>(mut request: Request<B>) -> Request<B> {
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

/// An orders handler: it needs no await, so its future is ready at once.
type OrdersHandler = fn(Request<Incoming>) -> Ready<Result<Response<Body>, Infallible>>;

/// An orders handler behind its permission guard.
type Guarded = Require<ServiceFn<OrdersHandler>>;

/// `GET /orders` (needs `orders:read`) and `POST /orders` (needs `orders:write`), each behind a
/// [`RequireLayer`]: built once (the permissions are parsed then), cloned per request.
#[derive(Clone)]
struct Orders {
    list: Guarded,
    create: Guarded,
}

impl Orders {
    fn new(observer: &Observer) -> Self {
        // The route template (not the path) for the audit record and the denial list.
        let guard = |permission: &str| {
            RequireLayer::new(observer, permission).route(|extensions: &http::Extensions| {
                extensions
                    .get::<RouteTemplate>()
                    .map(|route| Cow::Borrowed(route.0))
            })
        };
        Self {
            list: guard("orders:read").layer(tower::service_fn(list_orders as OrdersHandler)),
            create: guard("orders:write").layer(tower::service_fn(create_order as OrdersHandler)),
        }
    }
}

/// Calls a guarded handler: its answer, or the guard's refusal (401, or 403 naming the missing
/// permission).
async fn call(guarded: Guarded, request: Request<Incoming>) -> Response<Body> {
    match guarded.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The inner service: qiflow's operator surface (unless `[admin] listen` moves it to the
/// operator listener), then the demo routes by template and method.
async fn handle(
    observer: &Observer,
    orders: &Orders,
    request: Request<Incoming>,
) -> Response<Body> {
    if observer.config().operator_listener().is_none()
        && observer.is_admin_path(request.uri().path())
    {
        // qiflow decides who may see what; this only hands the request over.
        return qiflow_tower::answer(observer, request, false).await;
    }
    let Some(RouteTemplate(template)) = request.extensions().get::<RouteTemplate>().copied() else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let get = request.method() == Method::GET;
    let post = request.method() == Method::POST;
    match template {
        HELLO if get => hello(),
        USER if get => user(request.uri().path()),
        FAIL if get => fail(request.extensions().get::<RequestId>()),
        PANIC if get => panic(),
        SLOW if get => slow(request.uri().query()).await,
        LOGIN if post => login(observer, request).await,
        LOGIN => method_not_allowed("POST"),
        ORDERS if get => call(orders.list.clone(), request).await,
        ORDERS if post => call(orders.create.clone(), request).await,
        ORDERS => method_not_allowed("GET, POST"),
        _ => method_not_allowed("GET"),
    }
}

fn hello() -> Response<Body> {
    tracing::info!(greeting = "hello", "said hello");
    text(StatusCode::OK, "hello from qiflow\n")
}

fn user(path: &str) -> Response<Body> {
    let id = path.strip_prefix("/users/").unwrap_or_default();
    match id.parse::<u64>() {
        Ok(id) => {
            // Off at the default level: `PUT /qiflow/api/loggers` with "info,tower_hyper=debug"
            // shows it.
            tracing::debug!(id, "user looked up");
            json(
                StatusCode::OK,
                &serde_json::json!({ "id": id, "name": format!("user {id}") }),
            )
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            &format!("invalid user id {id:?}: {e}\n"),
        ),
    }
}

/// A handler error with a source, answered 500 with qiflow's JSON body (the request id the
/// middleware put in the request's extensions, no internals). Attaching the error to the
/// response as a [`HandlerError`] lets the middleware report it, with its source chain, as the
/// cause.
fn fail(id: Option<&RequestId>) -> Response<Body> {
    match "not a number".parse::<u16>() {
        Ok(port) => text(StatusCode::OK, &format!("port {port}\n")),
        Err(source) => {
            let body = qiflow_core::request::internal_error_body(id.map(RequestId::as_str));
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(qiflow_core::request::INTERNAL_ERROR_CONTENT_TYPE),
            );
            response
                .extensions_mut()
                .insert(HandlerError::new(PortError { source }));
            response
        }
    }
}

/// The error [`fail`] reports: "cannot read the demo port: invalid digit found in string".
#[derive(Debug)]
struct PortError {
    source: ParseIntError,
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot read the demo port")
    }
}

impl std::error::Error for PortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn panic() -> Response<Body> {
    let items: Vec<u8> = Vec::new();
    // An out-of-bounds index: a real bug, caught by the middleware (500) while the server lives on.
    if items[items.len()] == 0 {
        text(StatusCode::OK, "zero\n")
    } else {
        text(StatusCode::OK, "other\n")
    }
}

async fn slow(query: Option<&str>) -> Response<Body> {
    let ms = match slow_ms(query) {
        Ok(ms) => ms,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid ms: {e}\n")),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    text(StatusCode::OK, &format!("slept {ms} ms\n"))
}

/// The `ms` query parameter of `/slow`: 200 when absent, capped at [`MAX_SLOW_MS`].
fn slow_ms(query: Option<&str>) -> Result<u64, ParseIntError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="));
    match value {
        Some(value) => Ok(value.parse::<u64>()?.min(MAX_SLOW_MS)),
        None => Ok(200),
    }
}

/// The body of `POST /login`. No `Debug`: the password must not end up in a log line by accident.
#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(observer: &Observer, request: Request<Incoming>) -> Response<Body> {
    let request_id = request
        .extensions()
        .get::<qiflow_tower::RequestId>()
        .map(|id| id.as_str().to_owned());
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    if !is_json {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json\n",
        );
    }
    let body = match Limited::new(request.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}\n")),
    };
    let login: Login = match serde_json::from_slice(&body) {
        Ok(login) => login,
        // serde_json's messages name the field and position, never echo the values.
        Err(e) if e.is_data() => {
            return text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{e}\n"));
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    // The password is never logged nor audited: only the user name and the outcome.
    let ok = login.user == "demo" && login.password == "demo";
    tracing::info!(user = %login.user, ok, "login attempt");
    let outcome = if ok {
        qiflow_core::audit::Outcome::Success
    } else {
        qiflow_core::audit::Outcome::Denied
    };
    let mut event = qiflow_core::audit::AuditEvent::builder(login.user, "user.login")
        .resource("session")
        .outcome(outcome);
    if let Some(id) = request_id {
        event = event.request_id(id);
    }
    if observer.audit(event.build()).is_err() {
        // Lost: already counted, logged and alerted by qiflow. Refuse rather than go unaudited.
        return empty(StatusCode::SERVICE_UNAVAILABLE);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    empty(status)
}

/// `GET /orders`: a small fixed list.
fn list_orders(_request: Request<Incoming>) -> Ready<Result<Response<Body>, Infallible>> {
    ready(Ok(json(
        StatusCode::OK,
        &serde_json::json!([
            { "id": 1, "item": "green tea", "quantity": 2 },
            { "id": 2, "item": "oolong", "quantity": 1 },
        ]),
    )))
}

/// `POST /orders`: 201 with the new order (nothing is stored), made by the user the guard let
/// through.
fn create_order(request: Request<Incoming>) -> Ready<Result<Response<Body>, Infallible>> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(3);
    let user = request
        .extensions()
        .get::<Principal>()
        .map(|principal| principal.id.clone())
        .unwrap_or_default();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    tracing::info!(id, %user, "order created");
    ready(Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": id, "status": "created", "created_by": user }),
    )))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = status;
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
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

    #[test]
    fn templates_match_the_demo_routes_only() {
        assert_eq!(route_template("/hello"), Some(HELLO));
        assert_eq!(route_template("/users/42"), Some(USER));
        assert_eq!(route_template("/users/abc"), Some(USER));
        assert_eq!(route_template("/fail"), Some(FAIL));
        assert_eq!(route_template("/panic"), Some(PANIC));
        assert_eq!(route_template("/slow"), Some(SLOW));
        assert_eq!(route_template("/login"), Some(LOGIN));
        assert_eq!(route_template("/orders"), Some(ORDERS));
        for unknown in [
            "",
            "/",
            "/hello/",
            "/hello/x",
            "/users",
            "/users/",
            "/users/1/x",
            "/orders/",
            "/orders/1",
            "/metrics",
            "/health/live",
            "/wp-admin.php",
        ] {
            assert_eq!(route_template(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn slow_defaults_to_200_ms_and_is_capped() {
        assert_eq!(slow_ms(None), Ok(200));
        assert_eq!(slow_ms(Some("x=1")), Ok(200));
        assert_eq!(slow_ms(Some("ms=50")), Ok(50));
        assert_eq!(slow_ms(Some("a=b&ms=7")), Ok(7));
        assert_eq!(slow_ms(Some("ms=999999999")), Ok(MAX_SLOW_MS));
        assert!(slow_ms(Some("ms=-1")).is_err());
        assert!(slow_ms(Some("ms=ten")).is_err());
    }
}
