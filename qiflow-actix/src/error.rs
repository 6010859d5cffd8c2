//! [`Error`]: a handler error answered as qiflow's 500.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// A handler error answered as `500 Internal Server Error` with qiflow's JSON body,
/// `{"error":"internal server error","request_id":"…"}` (`content-type: application/json`): the
/// request id and no internals. The middleware reports the error's message in the access line
/// (and, with error capture, as the error), under the same request id.
///
/// The request id is there when the handler runs behind [`Observe`](crate::Observe) with
/// qiflow's tracing layers installed, as `init` does
/// ([`current_request_id`](qiflow_core::request::current_request_id)); it is always in the
/// `x-request-id` header.
///
/// ```
/// async fn handler() -> Result<String, qiflow_actix::Error> {
///     let n: u32 = "x".parse()?; // any std error converts
///     Ok(n.to_string())
/// }
/// ```
pub struct Error(Box<dyn std::error::Error + Send + Sync>);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Self(Box::new(error))
    }
}

impl Error {
    /// The wrapped error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// The wrapped error's: the middleware names the error's type from it.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The wrapped error's message (what the access line shows; never sent to the client).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        // actix-web calls this inside the handler's service, so inside the request's span.
        let id = qiflow_core::request::current_request_id();
        crate::request::internal_error(id.as_ref().map(|id| id.as_str()))
    }
}
