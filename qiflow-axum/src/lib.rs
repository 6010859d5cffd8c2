//! qiflow-axum: qiflow for axum.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//!
//! let config = qiflow_core::Config::load()?;
//! let (observer, _guard) = qiflow_core::init(&config)?;
//! let app = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .merge(qiflow_axum::routes(observer.clone())) // /metrics, /health/live, /health/ready, /health
//!     .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
//!     .layer(qiflow_axum::layer(observer));         // last: request ids, access log, RED metrics
//! # let _ = app; Ok(()) }
//! ```
//!
//! - [`layer`]: qiflow-tower's [`ObserveLayer`] with axum's `MatchedPath` as the route label.
//!   Add it with `Router::layer` last, after the routes, the merged [`routes`] and a `fallback`
//!   (axum applies a layer only to what exists when it is added): requests are matched first,
//!   and unmatched ones reach the fallback with `route="unmatched"`. Requests to the
//!   `/metrics` and health endpoints are not observed, so scrapes do not skew the figures.
//! - [`routes`]: the qiflow endpoints.
//! - [`Qiflow`]: an extractor giving handlers the [`Observer`]; [`RequestId`] the request id.
//! - [`Error`]: a handler error type answered as 500 whose source chain the middleware reports.

use std::borrow::Cow;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use qiflow_core::Observer;
use qiflow_core::health::HealthReport;
pub use qiflow_tower::{HandlerError, ObserveLayer, RequestId};

/// The request middleware for axum: [`ObserveLayer`] with `MatchedPath` as the route label.
pub fn layer(observer: Observer) -> ObserveLayer {
    ObserveLayer::new(observer).route(|extensions: &axum::http::Extensions| {
        extensions
            .get::<MatchedPath>()
            .map(|m| Cow::Borrowed(m.as_str()))
    })
}

/// A router with qiflow's endpoints, to merge into the application's router: `GET
/// {metrics.path}` (default `/metrics`, when `[metrics] enabled`), `GET {health.path}/live`,
/// `{health.path}/ready`, `{health.path}` (default `/health/…`), the JSON views
/// `GET /qiflow/api/{view}` ([`Observer::api`]: `errors`, `alerts`), `GET /qiflow/api/audit`
/// (the audit trail, paged), and the alert silences API: `POST /qiflow/api/alerts/silences`,
/// `DELETE /qiflow/api/alerts/silences/{id}` (all token-protected when `[health] token` is set).
///
/// When `[metrics] listen` is set, the endpoints are served there instead (see
/// [`serve_internal`]) and this router is empty.
pub fn routes(observer: Observer) -> Router {
    if observer.config().metrics.listen.is_some() {
        return Router::new();
    }
    endpoints(observer)
}

/// Serves qiflow's endpoints on `[metrics] listen`, an internal address apart from the
/// application's port, until the runtime shuts down. Returns the bound address, or `None` when
/// `listen` is not set (the endpoints are then in [`routes`]).
///
/// Call it from inside the tokio runtime that runs the application.
pub async fn serve_internal(observer: Observer) -> std::io::Result<Option<std::net::SocketAddr>> {
    let Some(addr) = observer.config().metrics.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("metrics.listen: cannot bind {addr}: {e}"))
    })?;
    let bound = listener.local_addr()?;
    let app = endpoints(observer);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(target: "qiflow::metrics", error = %e, "the internal listener stopped");
        }
    });
    Ok(Some(bound))
}

/// The endpoints router, whatever `[metrics] listen` says.
fn endpoints(observer: Observer) -> Router {
    let base = observer
        .config()
        .health
        .path
        .trim_end_matches('/')
        .to_owned();
    let mut router = Router::new()
        .route(&format!("{base}/live"), get(live))
        .route(&format!("{base}/ready"), get(ready))
        .route(if base.is_empty() { "/" } else { &base }, get(ready));
    if observer.config().metrics.enabled {
        router = router.route(&observer.config().metrics.path, get(metrics));
    }
    router = router
        .route("/qiflow/api/alerts", get(api_alerts))
        .route("/qiflow/api/alerts/silences", post(api_create_silence))
        .route(
            "/qiflow/api/alerts/silences/{id}",
            delete(api_delete_silence),
        )
        .route(qiflow_core::audit::api::API_PATH, get(audit));
    router
        .route(&format!("{}{{view}}", qiflow_core::API_PREFIX), get(api))
        .with_state(observer)
}

async fn api(
    State(observer): State<Observer>,
    axum::extract::Path(view): axum::extract::Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if !observer.authorized(authorization(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"qiflow: /qiflow/api needs Authorization: Bearer <[health] token>\"}",
        )
            .into_response();
    }
    let (status, body) = observer.api(&view, uri.query());
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn live(State(observer): State<Observer>) -> Response {
    // Liveness never needs the token and never shows details beyond the service.
    health_response(&observer.liveness(), true)
}

async fn ready(State(observer): State<Observer>, headers: HeaderMap) -> Response {
    let detailed = observer.authorized(authorization(&headers));
    health_response(&observer.readiness().await, detailed)
}

async fn metrics(State(observer): State<Observer>, headers: HeaderMap) -> Response {
    if !observer.authorized(authorization(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            "qiflow: /metrics needs Authorization: Bearer <[health] token>\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        observer.render_metrics(),
    )
        .into_response()
}

async fn audit(
    State(observer): State<Observer>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let answer = qiflow_core::audit::api::api(
        &observer,
        uri.query().unwrap_or(""),
        authorization(&headers),
    )
    .await;
    (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response()
}

fn api_response(answer: qiflow_core::alert::ApiResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if answer.body.is_empty() {
        return status.into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response()
}

fn api_unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"/qiflow/api needs Authorization: Bearer <[health] token>"}"#,
    )
        .into_response()
}

async fn api_alerts(State(observer): State<Observer>, headers: HeaderMap) -> Response {
    if !observer.authorized(authorization(&headers)) {
        return api_unauthorized();
    }
    api_response(observer.alerts().api_view())
}

async fn api_create_silence(
    State(observer): State<Observer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !observer.authorized(authorization(&headers)) {
        return api_unauthorized();
    }
    api_response(observer.alerts().api_create_silence(&body))
}

async fn api_delete_silence(
    State(observer): State<Observer>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if !observer.authorized(authorization(&headers)) {
        return api_unauthorized();
    }
    api_response(observer.alerts().api_delete_silence(&id))
}

/// Turns a health report into a JSON response (503 when unhealthy); without `detailed`, the body
/// is only `{"status":…}`.
pub fn health_response(report: &HealthReport, detailed: bool) -> Response {
    let status = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::OK);
    let body = if detailed {
        report.to_json()
    } else {
        report.summary()
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
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
        let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        response.extensions_mut().insert(self.0);
        response
    }
}

#[cfg(test)]
mod tests;
