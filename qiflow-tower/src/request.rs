//! Turning an `http::Request` into the core's [`RequestInfo`], and the request-scoped types.

use std::sync::Arc;

use qiflow_core::request::RequestInfo;

pub use qiflow_core::request::{MAX_REQUEST_ID_LEN, REQUEST_ID_HEADER, is_sane_request_id};

/// Builds the core's [`RequestInfo`] from an [`http::Request`]'s head.
///
/// An incoming `x-request-id` is kept only when it is sane: 1 to [`MAX_REQUEST_ID_LEN`] visible
/// ASCII characters, so a client cannot forge log lines or blow up label sizes through it.
pub fn request_info<B>(request: &http::Request<B>) -> RequestInfo {
    let mut info = RequestInfo::new(request.method().as_str(), request.uri().path());
    let headers = request.headers();
    if let Some(id) = headers
        .get(REQUEST_ID_HEADER)
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
    info
}

/// The request id of the current request, inserted into the request's extensions by
/// [`Observe`](crate::Observe) so handlers can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A handler's error, attached to its response's extensions, so the middleware reports it (with
/// its source chain) as the cause of the response. Framework adapters attach it for you.
#[derive(Debug, Clone)]
pub struct HandlerError(pub Arc<dyn std::error::Error + Send + Sync>);

impl HandlerError {
    /// The error's message followed by its sources, `": "`-separated.
    pub fn chain(&self) -> String {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
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
