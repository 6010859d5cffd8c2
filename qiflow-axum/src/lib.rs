//! qiflow-axum: qiflow for axum.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//!
//! let config = qiflow_core::Config::load()?;
//! let (observer, _guard) = qiflow_core::init(&config)?;
//! let app = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .merge(qiflow_axum::routes(observer.clone())) // /metrics, /health/*, /qiflow/*
//!     .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
//!     .layer(qiflow_axum::layer(observer));         // last: request ids, access log, RED metrics
//! # let _ = app; Ok(()) }
//! ```
//!
//! - [`layer`]: qiflow-tower's [`ObserveLayer`] with axum's `MatchedPath` as the route label.
//!   Add it with `Router::layer` last, after the routes, the merged [`routes`] and a `fallback`
//!   (axum applies a layer only to what exists when it is added): requests are matched first,
//!   and unmatched ones reach the fallback with `route="unmatched"`. Requests to the
//!   operator surface (`/metrics`, health, `/qiflow/*`) are not observed, so scrapes do not skew
//!   the figures.
//! - [`routes`]: qiflow's operator surface, answered by [`Observer::admin`] (health status and
//!   `/metrics` open, the rest behind the operator token: see [`qiflow_core::admin`]).
//! - [`Qiflow`]: an extractor giving handlers the [`Observer`]; [`RequestId`] the request id.
//! - [`Error`]: a handler error type answered as 500 whose source chain the middleware reports.
//! - [`require`]: a permission guard for a route (`.route_layer(qiflow_axum::require(&observer,
//!   "orders:write"))`), decided and audited by [`Observer::authorize`] (see
//!   [`qiflow_core::authz`]).

use std::borrow::Cow;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use qiflow_core::Observer;
pub use qiflow_tower::{HandlerError, ObserveLayer, RequestId, RequireLayer};

/// The request middleware for axum: [`ObserveLayer`] with `MatchedPath` as the route label.
pub fn layer(observer: Observer) -> ObserveLayer {
    ObserveLayer::new(observer)
        .route(|extensions: &axum::http::Extensions| {
            extensions
                .get::<MatchedPath>()
                .map(|m| Cow::Borrowed(m.as_str()))
        })
        .error_body::<axum::body::Body>()
}

/// A permission guard for axum routes, to add with `Router::route_layer` (so it runs for
/// matched routes only, after authentication put the [`Principal`](qiflow_core::authz::Principal)
/// in the request extensions). qiflow-tower's [`RequireLayer`] with `MatchedPath` as the route
/// of the audit record: no principal → `401`, a principal without `permission` →
/// `[authz] deny_status` (403) naming the missing permission, and every denial audited as
/// `authz.denied`.
///
/// # Panics
///
/// When `permission` does not parse (`resource:action`): it is written in the code and checked
/// when the router is built. [`RequireLayer::try_new`] returns the error instead.
///
/// ```
/// use axum::{Router, routing::get};
/// use qiflow_core::authz::Principal;
///
/// # fn build(observer: qiflow_core::Observer) {
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "the orders" }).post(|| async { "created" }))
///     .route_layer(qiflow_axum::require(&observer, "orders:read"))
///     // Authentication, outside the guard: here a stand-in that trusts a header.
///     .layer(axum::middleware::from_fn(
///         |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
///             if let Some(user) = request.headers().get("x-demo-user").and_then(|v| v.to_str().ok()) {
///                 let principal = Principal::new(user);
///                 request.extensions_mut().insert(principal);
///             }
///             next.run(request).await
///         },
///     ))
///     .layer(qiflow_axum::layer(observer));
/// # let _ = app; }
/// ```
#[track_caller]
pub fn require(observer: &Observer, permission: &str) -> RequireLayer {
    RequireLayer::new(observer, permission).route(|extensions: &axum::http::Extensions| {
        extensions
            .get::<MatchedPath>()
            .map(|m| Cow::Borrowed(m.as_str()))
    })
}

/// A router with qiflow's operator surface, to merge into the application's router: `GET
/// {metrics.path}` (default `/metrics`, when `[metrics] enabled`), `GET {health.path}/live`,
/// `{health.path}/ready` and `{health.path}` (default `/health/…`), `/qiflow/` and everything
/// under `/qiflow/` (the JSON API: errors, baselines, alerts, audit, silences, loggers). Every one is
/// answered by [`Observer::admin`], which decides who may see what (see
/// [`qiflow_core::admin`]): health status and `/metrics` are open, the rest needs the operator
/// token.
///
/// When `[admin] listen` is set, the surface is served there instead (see [`serve_internal`])
/// and this router is empty.
pub fn routes(observer: Observer) -> Router {
    if observer.config().operator_listener().is_some() {
        return Router::new();
    }
    surface(observer, false)
}

/// Serves qiflow's operator surface on `[admin] listen` (the operator listener, an internal
/// address apart from the application's port, whose requests are trusted) until the runtime
/// shuts down. Returns the bound address, or `None` when `listen` is not set (the surface is
/// then in [`routes`]).
///
/// Call it from inside the tokio runtime that runs the application.
pub async fn serve_internal(observer: Observer) -> std::io::Result<Option<std::net::SocketAddr>> {
    let Some(addr) = observer.config().operator_listener() else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("admin.listen: cannot bind {addr}: {e}"))
    })?;
    let bound = listener.local_addr()?;
    let app = surface(observer, true);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(target: "qiflow::admin", error = %e, "the operator listener stopped");
        }
    });
    Ok(Some(bound))
}

/// Every operator path, routed to [`Observer::admin`] (`trusted`: the operator listener).
fn surface(observer: Observer, trusted: bool) -> Router {
    let config = observer.config();
    let base = config.health.path.trim_end_matches('/').to_owned();
    let mut paths = vec![
        format!("{base}/live"),
        format!("{base}/ready"),
        if base.is_empty() { "/".into() } else { base },
        qiflow_core::admin::PREFIX.to_owned(),
        format!("{}/", qiflow_core::admin::PREFIX),
        format!("{}/{{*rest}}", qiflow_core::admin::PREFIX),
    ];
    if config.metrics.enabled {
        paths.push(config.metrics.path.clone());
    }
    paths.sort();
    paths.dedup();
    let state = Surface { observer, trusted };
    let mut router = Router::new();
    for path in paths {
        router = router.route(&path, any(admin));
    }
    router.with_state(state)
}

#[derive(Clone)]
struct Surface {
    observer: Observer,
    trusted: bool,
}

/// The one handler of the operator surface.
async fn admin(State(surface): State<Surface>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied() {
        // Where qiflow-tower looks for the client's address.
        parts.extensions.insert(addr);
    }
    let request = Request::from_parts(parts, body);
    qiflow_tower::answer(&surface.observer, request, surface.trusted)
        .await
        .into_response()
}

/// Extracts the [`Observer`] in handlers, from the router's state or request extensions.
///
/// Add the observer as an extension (`.layer(axum::Extension(observer))`) to use it.
#[derive(Debug, Clone)]
pub struct Qiflow(pub Observer);

impl<S: Send + Sync> FromRequestParts<S> for Qiflow {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Observer>()
            .cloned()
            .map(Qiflow)
            .ok_or((
                StatusCode::INTERNAL_SERVER_ERROR,
                "qiflow: no Observer in the request extensions; add .layer(axum::Extension(observer))",
            ))
    }
}

/// A handler error answered as `500 Internal Server Error`, whose message and source chain the
/// middleware reports in the access line (and, with error capture, as the error).
///
/// The client gets no internals: the body is
/// `{"error":"internal server error","request_id":"…"}` (`content-type: application/json`), the
/// request id being the one of the access line and the error report
/// ([`internal_error_body`](qiflow_core::request::internal_error_body); it is there when the
/// handler runs inside [`layer`] with qiflow's tracing layers installed, as `init` does).
///
/// ```
/// async fn handler() -> Result<String, qiflow_axum::Error> {
///     let n: u32 = "x".parse()?; // any std error converts
///     Ok(n.to_string())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Error(HandlerError);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Self(HandlerError::new(error))
    }
}

impl Error {
    /// The wrapped error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.0.error()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // Called inside the handler's future, so inside the request's span.
        let id = qiflow_core::request::current_request_id();
        let body = qiflow_core::request::internal_error_body(id.as_ref().map(|id| id.as_str()));
        let mut response = (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(
                axum::http::header::CONTENT_TYPE,
                qiflow_core::request::INTERNAL_ERROR_CONTENT_TYPE,
            )],
            body,
        )
            .into_response();
        response.extensions_mut().insert(self.0);
        response
    }
}

#[cfg(test)]
mod tests;
