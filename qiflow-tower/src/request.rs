//! Turning an `http::Request` into the core's [`RequestInfo`], and the request-scoped types.

use std::sync::Arc;

use qiflow_core::capture::ErrorDetail;
use qiflow_core::request::RequestInfo;

pub use qiflow_core::request::{
    MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER, RequestId, is_sane_request_id,
};

/// [`REQUEST_ID_HEADER`] as a header name made once: a name given as `&str` is parsed, and a
/// non-standard one copied, on every insert.
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
const TRACEPARENT: http::HeaderName =
    http::HeaderName::from_static(qiflow_core::propagation::TRACEPARENT);
const TRACESTATE: http::HeaderName =
    http::HeaderName::from_static(qiflow_core::propagation::TRACESTATE);

/// Builds the core's [`RequestInfo`] from an [`http::Request`]'s head.
///
/// An incoming `x-request-id` is kept only when it is sane: 1 to [`MAX_REQUEST_ID_LEN`] visible
/// ASCII characters, so a client cannot forge log lines or blow up label sizes through it.
pub fn request_info<B>(request: &http::Request<B>) -> RequestInfo<'_> {
    let mut info = RequestInfo::new(request.method().as_str(), request.uri().path());
    let headers = request.headers();
    if let Some(id) = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane_request_id(id))
    {
        info = info.with_request_id(id);
    }
    if let Some(ua) = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        info = info.with_user_agent(ua);
    }
    if let Some(query) = request.uri().query() {
        info = info.with_query(query);
    }
    if let Some(value) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        info = info.with_traceparent(value);
    }
    if let Some(value) = headers.get(TRACESTATE).and_then(|v| v.to_str().ok()) {
        info = info.with_tracestate(value);
    }
    if let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
    {
        info = info.with_host(host);
    }
    info
}

/// A handler's error, attached to its response's extensions, so the middleware reports it (with
/// its source chain) as the cause of the response, and error capture reports it with its type.
/// Framework adapters attach it for you.
#[derive(Debug, Clone)]
pub struct HandlerError {
    error: Arc<dyn std::error::Error + Send + Sync>,
    type_name: Option<&'static str>,
}

impl HandlerError {
    /// Wraps `error`, keeping its type name.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Self {
            error: Arc::new(error),
            type_name: Some(std::any::type_name::<E>()),
        }
    }

    /// Wraps an error known only as `dyn Error`, with the type name it was created from, when
    /// known.
    pub fn from_arc(
        error: Arc<dyn std::error::Error + Send + Sync>,
        type_name: Option<&'static str>,
    ) -> Self {
        Self { error, type_name }
    }

    /// The error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The error's chain, outermost first, with its type name.
    pub fn detail(&self) -> ErrorDetail {
        let mut detail = ErrorDetail::from_dyn(&*self.error);
        if let (Some(first), Some(name)) = (detail.chain.first_mut(), self.type_name) {
            first.type_name = Some(name.to_owned());
        }
        detail
    }

    /// The error's message followed by its sources, `": "`-separated.
    pub fn chain(&self) -> String {
        ErrorDetail::from_dyn(&*self.error).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insane_request_ids_are_ignored() {
        for bad in ["", "a b", "x\"y", &"a".repeat(MAX_REQUEST_ID_LEN + 1)] {
            assert!(!is_sane_request_id(bad), "{bad:?}");
        }
        let request = http::Request::get("/")
            .header(REQUEST_ID_HEADER, "has space")
            .body(())
            .unwrap();
        assert_eq!(request_info(&request).request_id, None);
        assert!(is_sane_request_id("01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f"));
    }
}
