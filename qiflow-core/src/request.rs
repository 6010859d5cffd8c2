//! Core-owned request types: what an adapter hands the core when a request starts and when its
//! response head is ready. The core never sees framework or `http` types.

/// A request as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The HTTP method, upper case (`GET`).
    pub method: String,
    /// The raw path, without the query string (`/users/42`).
    pub path: String,
    /// The matched route template (`/users/{id}`), when the framework knows it.
    pub route: Option<String>,
    /// The incoming `x-request-id`, when present.
    pub request_id: Option<String>,
    /// The `user-agent` header, when present.
    pub user_agent: Option<String>,
}

impl RequestInfo {
    /// A request with a method and a path; the other fields start empty.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            route: None,
            request_id: None,
            user_agent: None,
        }
    }

    /// Sets the matched route template.
    #[must_use]
    pub fn with_route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the incoming request id.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }
}
