//! qiflow-tower: the `http`/tower side of qiflow.
//!
//! It turns an [`http::Request`] into the core's [`RequestInfo`], once, so the core never sees
//! `http` types (the request middleware, `ObserveLayer`, builds on it).
//!
//! ```
//! let request = http::Request::get("/users/42?tab=1")
//!     .header("x-request-id", "abc-123")
//!     .header("user-agent", "curl/8")
//!     .body(())
//!     .unwrap();
//! let info = qiflow_tower::request_info(&request);
//! assert_eq!(info.method, "GET");
//! assert_eq!(info.path, "/users/42");
//! assert_eq!(info.request_id.as_deref(), Some("abc-123"));
//! assert_eq!(info.user_agent.as_deref(), Some("curl/8"));
//! ```

pub use qiflow_core::request::RequestInfo;

/// The request-id header read from requests and echoed on responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest incoming request id that is honoured; longer ones are ignored.
pub const MAX_REQUEST_ID_LEN: usize = 128;

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

/// Whether an incoming request id may be honoured: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// visible ASCII (no spaces, quotes or backslashes).
pub fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
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
