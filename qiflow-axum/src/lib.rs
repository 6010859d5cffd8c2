//! qiflow-axum: qiflow for axum.
//!
//! [`routes`] is a [`Router`] with qiflow's endpoints, to merge into the application's router.
//! The request middleware and the extractor come with the middleware work; today the router
//! serves liveness.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = qiflow_core::Config::load()?;
//! let (observer, _guard) = qiflow_core::init(&config)?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hello" }))
//!     .merge(qiflow_axum::routes(observer));
//! # let _ = app; Ok(()) }
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qiflow_core::Observer;
use qiflow_core::health::HealthReport;

/// A router with qiflow's endpoints: `GET {health.path}/live` (default `/health/live`).
pub fn routes(observer: Observer) -> Router {
    let base = observer
        .config()
        .health
        .path
        .trim_end_matches('/')
        .to_owned();
    Router::new()
        .route(&format!("{base}/live"), get(live))
        .with_state(observer)
}

async fn live(State(observer): State<Observer>) -> Response {
    health_response(&observer.liveness())
}

/// Turns a health report into a JSON response (503 when unhealthy).
pub fn health_response(report: &HealthReport) -> Response {
    let status = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::OK);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        report.to_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn live_answers_json() {
        let config = qiflow_core::config::Loader::new()
            .toml_str("[logging]\ndir = \"\"\nstdout = false\n")
            .env([("QIFLOW_UNUSED", "")])
            .load()
            .unwrap();
        let (observer, _guard) = qiflow_core::Observer::builder(config)
            .install_global(false)
            .build()
            .unwrap();
        let response = routes(observer)
            .oneshot(Request::get("/health/live").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["status"], "healthy");
        assert!(json["checks"].is_object());
    }
}
