//! qiflow on plain hyper 1 and tower, without a web framework.
//!
//! `cargo run --release -p tower-hyper`, then `curl 127.0.0.1:3000/hello`.
//!
//! The same demo routes as the quickstart (axum), with the routing done by hand. Plain tower has
//! no routes, so the service is built in three steps (outermost first):
//!
//! 1. [`match_route`] matches the path against the demo routes and inserts its [`RouteTemplate`]
//!    (`/users/{id}`, never the raw path) into the request's extensions;
//! 2. qiflow's [`ObserveLayer`] reads that template for the `route` label (no template:
//!    `route="unmatched"`) and does the rest: request id, span, access line, RED metrics, panics;
//! 3. [`handle`] answers: qiflow's operator surface (`/metrics`, `/health/*`, `/qiflow/*`,
//!    through [`qiflow_tower::answer`]), the demo routes, 404, 405.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::ParseIntError;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use qiflow_core::Observer;
use qiflow_tower::{HandlerError, ObserveLayer, RequestId};
use tower::ServiceBuilder;

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

/// The route template a request matched, inserted into its extensions by [`match_route`] before
/// qiflow's middleware sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RouteTemplate(&'static str);

fn main() -> ExitCode {
    let config = match qiflow_core::Config::load() {
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
    let service = ServiceBuilder::new()
        .map_request(match_route::<Incoming>)
        .layer(layer)
        .service_fn({
            let observer = observer.clone();
            move |request: Request<Incoming>| {
                let observer = observer.clone();
                async move { Ok::<_, Infallible>(handle(&observer, request).await) }
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
        _ => None,
    }
}

/// The inner service: qiflow's operator surface (unless `[admin] listen` moves it to the
/// operator listener), then the demo routes by template and method.
async fn handle(observer: &Observer, request: Request<Incoming>) -> Response<Body> {
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

    #[test]
    fn templates_match_the_demo_routes_only() {
        assert_eq!(route_template("/hello"), Some(HELLO));
        assert_eq!(route_template("/users/42"), Some(USER));
        assert_eq!(route_template("/users/abc"), Some(USER));
        assert_eq!(route_template("/fail"), Some(FAIL));
        assert_eq!(route_template("/panic"), Some(PANIC));
        assert_eq!(route_template("/slow"), Some(SLOW));
        assert_eq!(route_template("/login"), Some(LOGIN));
        for unknown in [
            "",
            "/",
            "/hello/",
            "/hello/x",
            "/users",
            "/users/",
            "/users/1/x",
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
