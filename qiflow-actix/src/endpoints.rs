//! qiflow's endpoints: `GET {metrics.path}`, `{health.path}/live`, `{health.path}/ready`,
//! `{health.path}`, `/qiflow/api/audit`.

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, Resource, Scope, web};
use qiflow_core::Observer;
use qiflow_core::health::HealthReport;

/// The content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Registers qiflow's endpoints at their configured paths, for `App::configure`:
///
/// - `GET {metrics.path}` (default `/metrics`, when `[metrics] enabled`): Prometheus text.
/// - `GET {health.path}/live` (default `/health/live`): liveness, 200 while the process is up.
/// - `GET {health.path}/ready` and `GET {health.path}` (default `/health/ready`, `/health`):
///   readiness, every health check, 503 when unhealthy.
///
/// When `[health] token` is set, readiness details and `/metrics` need
/// `Authorization: Bearer <token>`: without it readiness answers only `{"status":…}` and
/// `/metrics` answers 401. When `[metrics] listen` is set, the endpoints are served there
/// instead (see [`serve_internal`]) and this registers none of them.
///
/// It also adds the observer to the app data, where the [`Qiflow`](crate::Qiflow) extractor
/// finds it, so the middleware does not copy it into each request's extensions.
///
/// ```
/// use actix_web::{App, test};
///
/// # actix_web::rt::System::new().block_on(async {
/// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
///     .install_global(false)
///     .build()
///     .expect("observer");
/// let app = test::init_service(App::new().configure(qiflow_actix::configure(observer))).await;
/// for path in ["/metrics", "/health/live", "/health/ready", "/health"] {
///     let response = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
///     assert_eq!(response.status(), 200, "{path}");
/// }
/// # });
/// ```
pub fn configure(observer: Observer) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        // For the `Qiflow` extractor: the middleware then need not copy it into every request.
        config.app_data(observer.clone());
        if observer.config().metrics.listen.is_none() {
            endpoints(observer)(config);
        }
    }
}

/// Serves qiflow's endpoints on `[metrics] listen`, an internal address apart from the
/// application's port, on a one-worker actix-web server that stops with the actix system (and on
/// SIGINT/SIGTERM, like the application's). Returns the bound address, or `None` when `listen`
/// is not set (the endpoints are then registered by [`configure`]).
///
/// Call it from inside the actix-web runtime (`#[actix_web::main]`).
pub fn serve_internal(observer: Observer) -> std::io::Result<Option<SocketAddr>> {
    let Some(addr) = observer.config().metrics.listen else {
        return Ok(None);
    };
    let server = HttpServer::new(move || App::new().configure(endpoints(observer.clone())))
        .workers(1)
        .bind(addr)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("metrics.listen: cannot bind {addr}: {e}"))
        })?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    actix_web::rt::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(target: "qiflow::metrics", error = %e, "the internal listener stopped");
        }
    });
    Ok(Some(bound))
}

/// A scope at `{health.path}` (default `/health`) serving `GET …/live`, `GET …/ready` and
/// `GET {health.path}` itself, whatever `[metrics] listen` says. [`configure`] registers the same
/// endpoints and `/metrics`.
pub fn scope(observer: Observer) -> Scope {
    web::scope(&health_base(&observer))
        .app_data(web::Data::new(observer))
        .route("/live", web::get().to(live))
        .route("/ready", web::get().to(ready))
        .route("", web::get().to(ready))
}

/// A resource at `{metrics.path}` (default `/metrics`) serving `GET` with
/// [`Observer::render_metrics`] as `text/plain; version=0.0.4` (401 without the `[health] token`
/// when one is set), whatever `[metrics] enabled` and `listen` say.
pub fn metrics_resource(observer: Observer) -> Resource {
    web::resource(observer.config().metrics.path.clone())
        .app_data(web::Data::new(observer))
        .route(web::get().to(metrics))
}

/// A resource at `/qiflow/api/audit` serving the audit trail as JSON, paged (query parameters
/// `actor`, `action`, `resource`, `outcome`, `from`, `to`, `limit`, `before`; 401 without the
/// `[health] token` when one is set). [`configure`] registers it.
pub fn audit_resource(observer: Observer) -> Resource {
    web::resource(qiflow_core::audit::api::API_PATH)
        .app_data(web::Data::new(observer))
        .route(web::get().to(audit))
}

async fn audit(request: HttpRequest, observer: web::Data<Observer>) -> HttpResponse {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let answer =
        qiflow_core::audit::api::api(&observer, request.query_string(), authorization).await;
    HttpResponse::build(
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type("application/json")
    .body(answer.body)
}

/// The endpoints, whatever `[metrics] listen` says.
fn endpoints(observer: Observer) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        let base = health_base(&observer);
        let data = web::Data::new(observer.clone());
        config
            .service(
                web::resource(format!("{base}/live"))
                    .app_data(data.clone())
                    .route(web::get().to(live)),
            )
            .service(
                web::resource(format!("{base}/ready"))
                    .app_data(data.clone())
                    .route(web::get().to(ready)),
            )
            .service(
                web::resource(if base.is_empty() { "/" } else { base.as_str() })
                    .app_data(data)
                    .route(web::get().to(ready)),
            );
        // The audit resource first: the API scope would otherwise take `/qiflow/api/audit`.
        config.service(audit_resource(observer.clone()));
        config.service(api_scope(observer.clone()));
        if observer.config().metrics.enabled {
            config.service(metrics_resource(observer));
        }
    }
}

async fn api(
    observer: web::Data<Observer>,
    view: web::Path<String>,
    request: HttpRequest,
) -> HttpResponse {
    if !observer.authorized(authorization(&request)) {
        return api_unauthorized();
    }
    let query = Some(request.query_string()).filter(|q| !q.is_empty());
    let (status, body) = observer.api(&view, query);
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .body(body)
}

/// A scope at `/qiflow/api` with the alerts API: `GET /qiflow/api/alerts` (active, recent and
/// silenced alerts), `POST /qiflow/api/alerts/silences` and `DELETE
/// /qiflow/api/alerts/silences/{id}`; all need `Authorization: Bearer <token>` when
/// `[health] token` is set. [`configure`] registers it.
pub fn api_scope(observer: Observer) -> Scope {
    web::scope("/qiflow/api")
        .app_data(web::Data::new(observer))
        .route("/alerts", web::get().to(api_alerts))
        .route("/alerts/silences", web::post().to(api_create_silence))
        .route(
            "/alerts/silences/{id}",
            web::delete().to(api_delete_silence),
        )
        // The other views of `Observer::api` (`errors`, …), after the specific routes.
        .route("/{view}", web::get().to(api))
}

fn api_response(answer: qiflow_core::alert::ApiResponse) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if answer.body.is_empty() {
        return HttpResponse::build(status).finish();
    }
    HttpResponse::build(status)
        .content_type("application/json")
        .body(answer.body)
}

fn api_unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .content_type("application/json")
        .body(r#"{"error":"/qiflow/api needs Authorization: Bearer <[health] token>"}"#)
}

async fn api_alerts(observer: web::Data<Observer>, request: HttpRequest) -> HttpResponse {
    if !observer.authorized(authorization(&request)) {
        return api_unauthorized();
    }
    api_response(observer.alerts().api_view())
}

async fn api_create_silence(
    observer: web::Data<Observer>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if !observer.authorized(authorization(&request)) {
        return api_unauthorized();
    }
    api_response(observer.alerts().api_create_silence(&body))
}

async fn api_delete_silence(
    observer: web::Data<Observer>,
    request: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    if !observer.authorized(authorization(&request)) {
        return api_unauthorized();
    }
    api_response(observer.alerts().api_delete_silence(&id))
}

/// The Prometheus text exposition of `observer`'s metrics, as a response.
pub fn metrics_response(observer: &Observer) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(observer.render_metrics())
}

/// Turns a health report into a JSON response (503 when unhealthy); without `detailed`, the body
/// is only `{"status":…}`.
pub fn health_response(report: &HealthReport, detailed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::OK);
    let body = if detailed {
        report.to_json()
    } else {
        report.summary()
    };
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// `{health.path}` without a trailing slash (`""` when it is the root).
fn health_base(observer: &Observer) -> String {
    observer
        .config()
        .health
        .path
        .trim_end_matches('/')
        .to_owned()
}

fn authorization(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn live(observer: web::Data<Observer>) -> HttpResponse {
    // Liveness never needs the token and shows nothing beyond the service.
    health_response(&observer.liveness(), true)
}

async fn ready(observer: web::Data<Observer>, request: HttpRequest) -> HttpResponse {
    let detailed = observer.authorized(authorization(&request));
    health_response(&observer.readiness().await, detailed)
}

async fn metrics(observer: web::Data<Observer>, request: HttpRequest) -> HttpResponse {
    if !observer.authorized(authorization(&request)) {
        return HttpResponse::Unauthorized()
            .content_type("text/plain; charset=utf-8")
            .body("qiflow: /metrics needs Authorization: Bearer <[health] token>\n");
    }
    metrics_response(&observer)
}
