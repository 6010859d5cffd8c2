use std::future::{Ready, ready};

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use qiflow_core::Observer;

use crate::middleware::ObserveMiddleware;

/// qiflow's request middleware for actix-web: wrap an `App` (or a `Scope`) with it.
///
/// Per request it settles the request id, runs the handler inside a `request` span, and records
/// the RED metrics and the access line when the response head is ready; see the
/// [crate docs](crate#when-things-happen) for when each of those happens.
///
/// ```
/// use actix_web::{App, HttpResponse, test, web};
///
/// # actix_web::rt::System::new().block_on(async {
/// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
///     .install_global(false)
///     .build()
///     .expect("observer");
/// let app = test::init_service(
///     App::new()
///         .route("/users/{id}", web::get().to(HttpResponse::Ok))
///         .wrap(qiflow_actix::Observe::new(observer.clone())),
/// )
/// .await;
/// let response = test::call_service(&app, test::TestRequest::get().uri("/users/7").to_request()).await;
/// assert!(response.headers().contains_key("x-request-id"));
/// assert!(observer.render_metrics().contains(
///     r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"} 1"#
/// ));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Observe {
    observer: Observer,
}

impl Observe {
    /// Middleware that reports every request to `observer`.
    pub fn new(observer: Observer) -> Self {
        Self { observer }
    }

    /// The observer requests are reported to.
    pub fn observer(&self) -> &Observer {
        &self.observer
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = ObserveMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveMiddleware::new(service, self.observer.clone())))
    }
}
