//! Turning an actix-web request into the core's [`RequestInfo`], and the panic answer.

use std::fmt;

use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use qiflow_core::request::RequestInfo;

/// The request-id header read from requests and echoed on responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// [`REQUEST_ID_HEADER`] as a header name.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Builds the core's [`RequestInfo`] from a request's head: method, path, route template
/// (`match_pattern()`), a sane incoming `x-request-id`, the user agent, the query and the host.
pub(crate) const TRACEPARENT: header::HeaderName =
    header::HeaderName::from_static(qiflow_core::propagation::TRACEPARENT);
const TRACESTATE: header::HeaderName =
    header::HeaderName::from_static(qiflow_core::propagation::TRACESTATE);

/// The `traceparent` header a response carries with `[tracing] respond = true`.
pub(crate) fn response_traceparent(
    in_flight: &qiflow_core::request::InFlight,
) -> Option<HeaderValue> {
    in_flight
        .response_traceparent()
        .and_then(|value| HeaderValue::try_from(value).ok())
}

pub(crate) fn request_info(request: &ServiceRequest) -> RequestInfo<'_> {
    let mut info = RequestInfo::new(request.method().as_str(), request.path());
    if let Some(route) = request.match_pattern() {
        info = info.with_route(route);
    }
    let headers = request.headers();
    if let Some(id) = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane_request_id(id))
    {
        info = info.with_request_id(id);
    }
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        info = info.with_user_agent(ua);
    }
    if !request.query_string().is_empty() {
        info = info.with_query(request.query_string());
    }
    if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        info = info.with_host(host);
    }
    if let Some(value) = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()) {
        info = info.with_traceparent(value);
    }
    if let Some(value) = headers.get(&TRACESTATE).and_then(|v| v.to_str().ok()) {
        info = info.with_tracestate(value);
    }
    info
}

pub(crate) use qiflow_core::request::is_sane_request_id;

pub(crate) use qiflow_core::request::panic_message;

/// The error [`ObserveMiddleware`](crate::ObserveMiddleware) returns when the inner service
/// panicked: actix-web answers it with a `500 Internal Server Error` carrying the request id, in
/// `x-request-id` and in qiflow's JSON body (no internals). (A `ServiceResponse` would need the `HttpRequest`, which the middleware cannot keep: a
/// clone held across the inner call makes actix-web's router panic.)
#[derive(Debug)]
pub(crate) struct Panicked {
    pub(crate) request_id: Option<HeaderValue>,
    /// The response's `traceparent` (`[tracing] respond = true`).
    pub(crate) traceparent: Option<HeaderValue>,
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request handler panicked")
    }
}

impl ResponseError for Panicked {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        let id = self.request_id.as_ref().and_then(|id| id.to_str().ok());
        let mut response = internal_error(id);
        if let Some(id) = &self.request_id {
            response.headers_mut().insert(REQUEST_ID, id.clone());
        }
        if let Some(value) = &self.traceparent {
            response.headers_mut().insert(TRACEPARENT, value.clone());
        }
        response
    }
}

/// qiflow's `500 Internal Server Error`: the JSON body
/// [`internal_error_body`](qiflow_core::request::internal_error_body) with `request_id`.
pub(crate) fn internal_error(request_id: Option<&str>) -> HttpResponse {
    HttpResponse::InternalServerError()
        .content_type(qiflow_core::request::INTERNAL_ERROR_CONTENT_TYPE)
        .body(qiflow_core::request::internal_error_body(request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insane_request_ids_are_refused() {
        for bad in [
            "",
            "a b",
            "x\"y",
            "back\\slash",
            "tab\t",
            "é",
            &"a".repeat(129),
        ] {
            assert!(!is_sane_request_id(bad), "{bad:?}");
        }
        for good in [
            "abc-123",
            "01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f",
            &"a".repeat(128),
        ] {
            assert!(is_sane_request_id(good), "{good:?}");
        }
    }

    #[test]
    fn panic_messages_are_read_from_the_payload() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42_u8), "panic with a non-string payload");
    }
}
