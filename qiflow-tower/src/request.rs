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
    if let Some(query) = request.uri().query() {
        info = info.with_query(query);
    }
    let headers = request.headers();
    let found = if headers.len() <= SCAN_UP_TO {
        Found::scan(headers)
    } else {
        Found::look_up(headers)
    };
    if let Some(id) = found.request_id.filter(|id| is_sane_request_id(id)) {
        info = info.with_request_id(id);
    }
    if let Some(ua) = found.user_agent {
        info = info.with_user_agent(ua);
    }
    if let Some(value) = found.traceparent {
        info = info.with_traceparent(value);
    }
    if let Some(value) = found.tracestate {
        info = info.with_tracestate(value);
    }
    if let Some(host) = found
        .host
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
    {
        info = info.with_host(host);
    }
    info
}

/// Up to this many header values, one pass over them finds the five headers qiflow reads for
/// less than five lookups (each hashes its name); past it, the lookups are cheaper.
const SCAN_UP_TO: usize = 8;

/// The first value of each header qiflow reads, when it is visible ASCII (`to_str`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Found<'a> {
    request_id: Option<&'a str>,
    user_agent: Option<&'a str>,
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
    host: Option<&'a str>,
}

impl<'a> Found<'a> {
    fn look_up(headers: &'a http::HeaderMap) -> Self {
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            request_id: get(REQUEST_ID),
            user_agent: get(http::header::USER_AGENT),
            traceparent: get(TRACEPARENT),
            tracestate: get(TRACESTATE),
            host: get(http::header::HOST),
        }
    }

    /// The same as [`Found::look_up`] in one pass (a name's first value, as `get` gives).
    fn scan(headers: &'a http::HeaderMap) -> Self {
        let mut found = Self::default();
        let mut seen = [false; 5];
        for (name, value) in headers {
            let slot = if name == http::header::HOST {
                0
            } else if name == http::header::USER_AGENT {
                1
            } else if name == REQUEST_ID {
                2
            } else if name == TRACEPARENT {
                3
            } else if name == TRACESTATE {
                4
            } else {
                continue;
            };
            if std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            let value = value.to_str().ok();
            match slot {
                0 => found.host = value,
                1 => found.user_agent = value,
                2 => found.request_id = value,
                3 => found.traceparent = value,
                _ => found.tracestate = value,
            }
        }
        found
    }
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

    /// The one-pass scan finds what the lookups find, for maps of every size it handles: each
    /// header qiflow reads present or not, repeated, with a value that is not visible ASCII,
    /// among others.
    #[test]
    fn the_scan_finds_what_the_lookups_find() {
        let names = [
            http::header::HOST,
            http::header::USER_AGENT,
            REQUEST_ID,
            TRACEPARENT,
            TRACESTATE,
            http::header::ACCEPT,
            http::HeaderName::from_static("x-other"),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for case in 0..2_000 {
            let mut headers = http::HeaderMap::new();
            for i in 0..rng.usize(0..=SCAN_UP_TO) {
                let name = names[rng.usize(..names.len())].clone();
                let value = if rng.u8(..10) == 0 {
                    http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
                } else {
                    http::HeaderValue::from_str(&format!("v{case}-{i}")).unwrap()
                };
                headers.append(name, value);
            }
            if headers.len() > SCAN_UP_TO {
                continue;
            }
            assert_eq!(
                Found::scan(&headers),
                Found::look_up(&headers),
                "{headers:?}"
            );
        }
    }

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
