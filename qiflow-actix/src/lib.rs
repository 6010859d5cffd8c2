//! qiflow-actix: qiflow for actix-web.
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = qiflow_core::Config::load()?;
//!     let (observer, _guard) = qiflow_core::init(&config)?;
//!     // only when `[admin] listen` is set: the operator surface on its own address
//!     qiflow_actix::serve_internal(observer.clone())?;
//!     HttpServer::new(move || {
//!         App::new()
//!             .route("/users/{id}", web::get().to(HttpResponse::Ok))
//!             // the operator surface: /metrics, /health/*, /qiflow/*
//!             .configure(qiflow_actix::configure(observer.clone()))
//!             // request ids, access log, RED metrics; wrap it last so it sees every request
//!             .wrap(qiflow_actix::Observe::new(observer.clone()))
//!     })
//!     .bind(config.server.addr)?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```
//!
//! - [`Observe`]: the request middleware (an actix-web `Transform`; its service is
//!   [`ObserveMiddleware`]). The route label is the matched template from
//!   `HttpRequest::match_pattern()` (`/users/{id}`); requests that match no route are
//!   `route="unmatched"`.
//! - [`configure`]: qiflow's operator surface at its configured paths, answered by
//!   `Observer::admin` (health status and `/metrics` open, the rest behind the operator token:
//!   see [`qiflow_core::admin`]).
//! - [`Require`]: a permission guard for a resource, scope or app (its service is
//!   [`RequireMiddleware`]): the [`Principal`] the host's authentication put in the request
//!   extensions must hold a permission (`orders:write`), decided and audited by
//!   `Observer::authorize`; otherwise `401` (no principal) or `[authz] deny_status` (`403`) with
//!   a JSON body naming the missing permission. Wrap it inside [`Observe`].
//! - [`Qiflow`]: an extractor giving handlers the [`Observer`]; [`RequestId`] the request id.
//! - [`Error`]: a handler error answered as qiflow's 500 (a JSON body with the request id, no
//!   internals), whose message the middleware reports.
//!
//! [`Observer`]: qiflow_core::Observer
//! [`Principal`]: qiflow_core::authz::Principal
//!
//! The semantics are those of `qiflow-tower`: the same metric names and labels, request-id
//! policy, access line and panic handling. The middleware is transparent: it never changes a
//! response the inner service produced (it only adds `x-request-id` when the response has none)
//! or an error it returned.
//!
//! # When things happen
//!
//! - `call`: the request id is settled (a sane incoming `x-request-id`, at most 128 visible ASCII
//!   characters; else a new UUID v7), set as the request's `x-request-id` header and inserted
//!   into its extensions (with the `Observer` too, unless [`configure`] put that same observer
//!   in the app data, where the [`Qiflow`] extractor finds it); the `request` span opens and
//!   `http_server_active_requests` goes up. The inner service runs inside the span.
//! - the inner future resolves `Ok(response)`: its status and the error in its error slot
//!   (`HttpResponse::error()`, where actix-web puts a handler's `Err`) finish the request —
//!   latency, `http_server_requests_total`, `http_server_request_duration_seconds`, the access
//!   line — and `x-request-id` is echoed.
//! - it resolves `Err(e)`: finished with `e`'s status code and message; `Err(e)` is returned
//!   unchanged (actix-web answers it, without `x-request-id`).
//! - it panics (in `call` or in `poll`): logged on target `qiflow::panic`, finished as a panicked
//!   500, and answered with an error that actix-web turns into a 500 carrying `x-request-id` and
//!   the JSON body `{"error":"internal server error","request_id":"…"}` (no internals). The
//!   worker lives on.
//! - the future is dropped first (the client went away): counted on
//!   `qiflow_client_disconnects_total`.
//! - requests to the operator surface (`Observer::is_admin_path`: `/metrics`, the health paths,
//!   `/qiflow/*`) are passed through unobserved, so scrapes and probes do not skew the figures.
//!
//! Mount the operator surface on an internal address instead of the application's port by
//! setting `[admin] listen` and calling [`serve_internal`] at startup; [`configure`] then
//! registers none of it.

mod endpoints;
mod error;
mod extract;
mod future;
mod middleware;
mod request;
mod require;
mod transform;

pub use endpoints::{configure, serve_internal};
pub use error::Error;
pub use extract::{Qiflow, RequestId};
pub use future::ResponseFuture;
pub use middleware::ObserveMiddleware;
pub use request::REQUEST_ID_HEADER;
pub use require::{Require, RequireMiddleware};
pub use transform::Observe;

#[cfg(test)]
mod require_tests;
#[cfg(test)]
mod tests;
