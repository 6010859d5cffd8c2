//! qiflow's operator surface on actix-web: every operator path routed to
//! [`Observer::admin`](qiflow_core::Observer::admin).

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use qiflow_core::Observer;
use qiflow_core::admin::{AdminRequest, MAX_BODY};

/// Registers qiflow's operator surface, for `App::configure`: `GET {metrics.path}` (default
/// `/metrics`, when `[metrics] enabled`), `GET {health.path}/live`, `{health.path}/ready` and
/// `{health.path}` (default `/health/…`), `/qiflow/` and everything under `/qiflow/` (the JSON
/// API: errors, baselines, alerts, audit, silences, loggers). Every one is answered by
/// [`Observer::admin`](qiflow_core::Observer::admin), which decides who may see what (see
/// [`qiflow_core::admin`]): health status and `/metrics` are open, the rest needs the operator
/// token.
///
/// When `[admin] listen` is set, the surface is served there instead (see [`serve_internal`])
/// and this registers none of it.
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
/// let response = test::call_service(&app, test::TestRequest::get().uri("/qiflow/api/errors").to_request()).await;
/// assert_eq!(response.status(), 401, "the API needs the operator token");
/// # });
/// ```
pub fn configure(observer: Observer) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        // For the `Qiflow` extractor: the middleware then need not copy it into every request.
        config.app_data(observer.clone());
        if observer.config().operator_listener().is_none() {
            surface(observer, false)(config);
        }
    }
}

/// Serves qiflow's operator surface on `[admin] listen` (the operator listener, an internal
/// address apart from the application's port, whose requests are trusted) on a one-worker
/// actix-web server that stops with the actix system (and on SIGINT/SIGTERM, like the
/// application's). Returns the bound address, or `None` when `listen` is not set (the surface
/// is then registered by [`configure`]).
///
/// Call it from inside the actix-web runtime (`#[actix_web::main]`).
pub fn serve_internal(observer: Observer) -> std::io::Result<Option<SocketAddr>> {
    let Some(addr) = observer.config().operator_listener() else {
        return Ok(None);
    };
    let server = HttpServer::new(move || App::new().configure(surface(observer.clone(), true)))
        .workers(1)
        .bind(addr)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("admin.listen: cannot bind {addr}: {e}"))
        })?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    actix_web::rt::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(target: "qiflow::admin", error = %e, "the operator listener stopped");
        }
    });
    Ok(Some(bound))
}

/// What the one handler needs.
struct Surface {
    observer: Observer,
    trusted: bool,
}

/// Every operator path, routed to the one handler (`trusted`: the operator listener).
fn surface(observer: Observer, trusted: bool) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        let settings = observer.config();
        let base = settings.health.path.trim_end_matches('/').to_owned();
        let prefix = qiflow_core::admin::PREFIX;
        let mut paths = vec![
            format!("{base}/live"),
            format!("{base}/ready"),
            if base.is_empty() { "/".into() } else { base },
            prefix.to_owned(),
            format!("{prefix}/{{rest:.*}}"),
        ];
        if settings.metrics.enabled {
            paths.push(settings.metrics.path.clone());
        }
        paths.sort();
        paths.dedup();
        let data = web::Data::new(Surface { observer, trusted });
        for path in paths {
            config.service(
                web::resource(path)
                    .app_data(data.clone())
                    .default_service(web::to(admin)),
            );
        }
    }
}

/// The one handler of the operator surface: the request as the core's, the answer as actix's.
async fn admin(
    request: HttpRequest,
    payload: web::Payload,
    surface: web::Data<Surface>,
) -> HttpResponse {
    let mut admin = AdminRequest::new(request.method().as_str(), request.path())
        .query(Some(request.query_string()))
        .trusted(surface.trusted)
        .client_ip(request.peer_addr().map(|addr| addr.ip()));
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            admin = admin.header(name.as_str(), value);
        }
    }
    admin = match payload.to_bytes_limited(MAX_BODY).await {
        Ok(Ok(body)) => admin.body(body.to_vec()),
        Ok(Err(e)) => {
            return HttpResponse::BadRequest()
                .content_type("application/json")
                .body(
                    serde_json::json!({ "error": format!("cannot read the request body: {e}") })
                        .to_string(),
                );
        }
        Err(_) => admin.body_too_large(),
    };
    let (status, headers, body) = surface.observer.admin(admin).await.into_parts();
    let mut response = HttpResponse::build(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.append_header((name, value));
        }
    }
    response.body(body)
}
