//! Extractors: [`Qiflow`] gives handlers the [`Observer`], [`RequestId`] the request id.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, error, web};
use qiflow_core::Observer;

/// Extracts the [`Observer`] in handlers (for audit events and custom errors).
///
/// Found in the request extensions when [`Observe`](crate::Observe) wraps the handler (it puts
/// its observer there unless [`configure`](crate::configure) put the same one in the app data),
/// else in the app data as an `Observer` or a `web::Data<Observer>`. Without any of them the request is
/// answered with 500 and a message saying what to add.
///
/// ```
/// use qiflow_actix::Qiflow;
///
/// async fn handler(Qiflow(observer): Qiflow) -> String {
///     format!("served by {}", observer.config().service.name)
/// }
/// # let _ = actix_web::web::get().to(handler);
/// ```
#[derive(Debug, Clone)]
pub struct Qiflow(pub Observer);

impl FromRequest for Qiflow {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let observer = request
            .extensions()
            .get::<Observer>()
            .cloned()
            .or_else(|| request.app_data::<Observer>().cloned())
            .or_else(|| {
                request
                    .app_data::<web::Data<Observer>>()
                    .map(|data| Observer::clone(data))
            });
        ready(observer.map(Qiflow).ok_or_else(|| {
            error::ErrorInternalServerError(
                "qiflow: no Observer for this request; wrap the app with qiflow_actix::Observe \
                 or add it with App::app_data",
            )
        }))
    }
}

/// The request id of the current request: the honoured incoming `x-request-id`, or the UUID v7
/// qiflow generated. [`Observe`](crate::Observe) inserts it into the request's extensions (and
/// sets the `x-request-id` request header to it); as an extractor it answers 500 when the
/// middleware is missing.
///
/// ```
/// use qiflow_actix::RequestId;
///
/// async fn handler(id: RequestId) -> String {
///     format!("request {id}")
/// }
/// # let _ = actix_web::web::get().to(handler);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(pub qiflow_core::request::RequestId);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromRequest for RequestId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<RequestId>()
                .cloned()
                .ok_or_else(|| {
                    error::ErrorInternalServerError(
                        "qiflow: no request id for this request; wrap the app with \
                         qiflow_actix::Observe",
                    )
                }),
        )
    }
}
