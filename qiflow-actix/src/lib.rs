//! qiflow-actix: qiflow for actix-web.
//!
//! [`scope`] is an actix-web [`Scope`] with qiflow's endpoints, to mount in the application.
//! The request middleware and the extractor come with the middleware work; today the scope
//! serves liveness.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = qiflow_core::Config::load()?;
//! let (observer, _guard) = qiflow_core::init(&config)?;
//! actix_web::HttpServer::new(move || {
//!     actix_web::App::new().service(qiflow_actix::scope(observer.clone()))
//! })
//! .bind("127.0.0.1:3000")?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, Scope, web};
use qiflow_core::Observer;
use qiflow_core::health::HealthReport;

/// A scope at `{health.path}` (default `/health`) serving `GET …/live`.
pub fn scope(observer: Observer) -> Scope {
    let base = observer
        .config()
        .health
        .path
        .trim_end_matches('/')
        .to_owned();
    web::scope(&base)
        .app_data(web::Data::new(observer))
        .route("/live", web::get().to(live))
}

async fn live(observer: web::Data<Observer>) -> HttpResponse {
    health_response(&observer.liveness())
}

/// Turns a health report into a JSON response (503 when unhealthy).
pub fn health_response(report: &HealthReport) -> HttpResponse {
    let status = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::OK);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(report.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, test};

    #[actix_web::test]
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
        let app = test::init_service(App::new().service(scope(observer))).await;
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri("/health/live").to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let json: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(json["status"], "healthy");
    }
}
