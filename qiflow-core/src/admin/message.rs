//! The framework-free request and response of the operator surface.

use std::net::IpAddr;

/// The largest request body the operator surface reads; a longer one is answered `413`.
/// Adapters stop reading there.
pub const MAX_BODY: usize = 64 * 1024;

/// A request to the operator surface, built by an adapter from its framework's request: method,
/// path, query, headers and body in, nothing framework-specific.
///
/// ```
/// use qiflow_core::admin::AdminRequest;
///
/// let request = AdminRequest::new("GET", "/qiflow/api/errors")
///     .header("Authorization", "Bearer 0123456789abcdef0123456789abcdef");
/// assert_eq!(request.header_value("authorization"), Some("Bearer 0123456789abcdef0123456789abcdef"));
/// ```
#[derive(Clone, Default)]
pub struct AdminRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// Names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) trusted: bool,
    pub(crate) client_ip: Option<IpAddr>,
    /// The adapter stopped reading a body longer than [`MAX_BODY`].
    pub(crate) oversized: bool,
}

impl std::fmt::Debug for AdminRequest {
    /// Header values are left out: `authorization` carries a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl AdminRequest {
    /// A request for `method` (`"GET"`, `"POST"`, …) on `path` (without the query string).
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            method: method.into().to_ascii_uppercase(),
            path: path.into(),
            ..Self::default()
        }
    }

    /// The query string, without the `?` (`actor=alice&limit=20`). Defaults to none.
    #[must_use]
    pub fn query(mut self, query: Option<impl Into<String>>) -> Self {
        self.query = query.map(Into::into).filter(|q| !q.is_empty());
        self
    }

    /// Adds a header (the name is matched without regard to case). Adapters pass the headers
    /// whose values are valid text; qiflow reads `authorization`, `user-agent` and
    /// `x-request-id`.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.headers.push((name, value.into()));
        self
    }

    /// The body (at most [`MAX_BODY`] bytes are read; a longer one is answered `413`). Defaults
    /// to empty.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Marks the body as longer than [`MAX_BODY`]: an adapter that stopped reading it says so
    /// here, and the request is answered `413`.
    #[must_use]
    pub fn body_too_large(mut self) -> Self {
        self.oversized = true;
        self
    }

    /// Marks the request as received on the operator listener (`[admin] listen`), whose
    /// requests are trusted: no token is asked. Only the adapters' operator listeners set it.
    /// Defaults to `false`.
    #[must_use]
    pub fn trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }

    /// The client's address: logged with refused requests (a stranger's attempt is a security
    /// event). Defaults to none.
    #[must_use]
    pub fn client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    /// The method, upper-cased.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first value of the header `name` (any case).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The answer of the operator surface: a status, headers (`content-type` among them) and a body,
/// for the adapter to turn into its framework's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl AdminResponse {
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.to_owned())],
            body: body.into(),
        }
    }

    /// A JSON answer.
    pub(crate) fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "application/json", body)
    }

    /// `{"error": message}` with `status`.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        )
    }

    /// An answer without a body (`204`).
    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers to send (lower-case names).
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// The first value of the header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (lossy), for tests and logs.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The status, the headers and the body, for an adapter to build its response from.
    pub fn into_parts(self) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}
