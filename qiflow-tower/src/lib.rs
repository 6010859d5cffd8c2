//! qiflow-tower: qiflow's request middleware for tower and `http` (usable by axum, tonic, hyper).
//!
//! ```
//! use tower::ServiceBuilder;
//! use qiflow_tower::ObserveLayer;
//!
//! # fn build(observer: qiflow_core::Observer) {
//! let service = ServiceBuilder::new()
//!     .layer(ObserveLayer::new(observer))
//!     .service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//!     });
//! # let _ = service; }
//! ```
//!
//! Per request, [`Observe`] settles the request id (a sane incoming `x-request-id`, else a UUID
//! v7; echoed on the response), runs the inner service inside a `request` span, and when the
//! response head is ready hands the core a `RequestOutcome`: latency, status, the RED metrics and
//! the access line. A panic in the inner service is caught and answered with 500; the server
//! lives on. A client that goes away before the response is counted. The middleware is
//! transparent: it never changes the inner service's error type or a response it produced (it
//! only adds `x-request-id`).
//!
//! [`Admin`] answers qiflow's operator surface (`/metrics`, `/health/*`, `/qiflow/api/*`; see
//! [`qiflow_core::admin`]): route the paths for which
//! [`Observer::is_admin_path`](qiflow_core::Observer::is_admin_path) holds to it. The middleware
//! does not observe those paths.
//!
//! [`RequireLayer`] guards a service with a permission, decided and recorded by
//! [`Observer::authorize`](qiflow_core::Observer::authorize) (see [`qiflow_core::authz`]): no
//! principal in the request extensions is `401`, a principal without the permission
//! `[authz] deny_status` (403) with the missing permission named, and every denial is audited.
//!
//! # When things happen
//!
//! - `call`: `Observer::begin_request` (request id, span, in-flight gauge).
//! - the inner future resolves `Ok(response)`: `InFlight::finish` with its status (and the
//!   [`HandlerError`] the handler attached, if any).
//! - it resolves `Err(e)`: finished as a 500 with the error, and `Err(e)` is returned unchanged.
//! - it panics (in `call` or in `poll`): finished as a panicked 500; a 500 response is returned,
//!   with `x-request-id` and the JSON body `{"error":"internal server error","request_id":"…"}`
//!   (no internals; see [`ObserveLayer::error_body`] for the body types that can hold it). This
//!   is the only response the middleware makes: a 500 the inner service answered itself passes
//!   through unchanged.
//! - the response future is dropped first (client disconnect): counted on
//!   `qiflow_client_disconnects_total`.

mod admin;
mod future;
mod layer;
mod request;
mod require;
mod service;

pub use admin::{Admin, admin_request, answer, into_response};
pub use future::ResponseFuture;
pub use layer::{ObserveLayer, RouteFn};
pub use qiflow_core::request::{RequestInfo, RequestOutcome};
pub use request::{
    HandlerError, MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER, RequestId, is_sane_request_id,
    request_info,
};
pub use require::{Require, RequireFuture, RequireLayer};
pub use service::Observe;

/// Writes the trace context of the request the caller is in (`traceparent`, and `tracestate`
/// when it carried one) into the headers of an outgoing call, so the service called continues
/// the same trace. Returns `false`, writing nothing, outside a request or with `[tracing]
/// propagation = "none"`. See [`qiflow_core::propagation`].
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// // Outside a request there is nothing to hand on.
/// assert!(!qiflow_tower::inject(&mut headers));
/// ```
pub fn inject(headers: &mut http::HeaderMap) -> bool {
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl qiflow_core::propagation::Injector for Headers<'_> {
        fn set(&mut self, name: &'static str, value: String) {
            if let Ok(value) = http::HeaderValue::try_from(value) {
                self.0.insert(name, value);
            }
        }
    }
    qiflow_core::propagation::inject(&mut Headers(headers))
}
