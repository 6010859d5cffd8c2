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
    /// The actor of an automatically audited request, resolved by the adapter (see
    /// [`Observer::auto_audit`](crate::Observer::auto_audit)).
    pub actor: Option<String>,
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
            actor: None,
        }
    }

    /// Sets the actor (for automatic auditing).
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
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

/// How a request ended, as far as qiflow needs to know: told by the adapter when the response
/// head is ready (or the inner service panicked).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOutcome {
    /// The response status code.
    pub status: u16,
    /// The inner service panicked; the adapter answered 500.
    pub panicked: bool,
    /// A description of the handler's error, when the framework carries one (never a secret).
    pub error: Option<String>,
}

impl RequestOutcome {
    /// A request answered with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            panicked: false,
            error: None,
        }
    }

    /// A request whose handler panicked (answered with 500).
    pub fn panicked(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            panicked: true,
            error: Some(message.into()),
        }
    }

    /// Attaches the handler's error description.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// A request in flight, from [`Observer::begin_request`](crate::Observer::begin_request) until
/// [`InFlight::finish`]. Dropped without `finish` (the client went away, or the future was
/// cancelled), it counts a client disconnect.
///
/// # When things happen
///
/// - `begin_request`: the request id is settled (the incoming one, or a new UUID v7), the
///   `request` span opens, `http_server_active_requests` goes up.
/// - `finish`: latency is measured (arrival to response head), `http_server_requests_total` and
///   `http_server_request_duration_seconds` are recorded, the gauge goes down, and the access line
///   (`target = "qiflow::access"`) is logged when `[logging] access_log` is on.
#[must_use = "an InFlight dropped without finish() counts as a client disconnect"]
pub struct InFlight {
    observer: crate::Observer,
    method: &'static str,
    route: metrics::SharedString,
    path: String,
    request_id: String,
    user_agent: Option<String>,
    start: std::time::Instant,
    span: tracing::Span,
    active: Option<metrics::Gauge>,
    audit: Option<Box<crate::audit::PendingAudit>>,
    done: bool,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("method", &self.method)
            .field("route", &&*self.route)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl InFlight {
    pub(crate) fn begin(observer: &crate::Observer, info: RequestInfo) -> Self {
        let metrics = observer.metrics();
        let method = crate::metrics::method_label(&info.method);
        let route = metrics.route_label(info.route.as_deref());
        let audit = crate::audit::PendingAudit::begin(observer, &info);
        let request_id = info
            .request_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let span = tracing::info_span!(
            target: "qiflow::request",
            "request",
            request_id = %request_id,
            http.request.method = method,
            http.route = &*route,
            url.path = %info.path,
        );
        let active = metrics.enabled().then(|| {
            let g = metrics.gauge(
                "http_server_active_requests",
                vec![
                    metrics::Label::new("method", method),
                    metrics::Label::new("route", route.clone()),
                ],
            );
            g.increment(1.0);
            g
        });
        Self {
            observer: observer.clone(),
            method,
            route,
            path: info.path,
            request_id,
            user_agent: info.user_agent,
            start: std::time::Instant::now(),
            span,
            active,
            audit,
            done: false,
        }
    }

    /// The request id: the honoured incoming one, or a generated UUID v7. Adapters echo it on the
    /// response as `x-request-id`.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The request's tracing span (fields `request_id`, `http.request.method`, `http.route`,
    /// `url.path`); adapters run the inner service inside it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The route label used in metrics (`unmatched`, `other`, or the template).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Records the outcome: metrics, the access line.
    pub fn finish(mut self, outcome: RequestOutcome) {
        self.done = true;
        let latency = self.start.elapsed();
        let metrics = self.observer.metrics();
        if let Some(g) = self.active.take() {
            g.decrement(1.0);
        }
        if let Some(audit) = self.audit.take() {
            audit.finish(&self.observer, outcome.status, &self.request_id);
        }
        if metrics.enabled() {
            let status = status_label(outcome.status);
            let labels = vec![
                metrics::Label::new("method", self.method),
                metrics::Label::new("route", self.route.clone()),
                metrics::Label::new("status", status),
            ];
            metrics
                .counter("http_server_requests_total", labels.clone())
                .increment(1);
            metrics
                .histogram("http_server_request_duration_seconds", labels)
                .record(latency.as_secs_f64());
        }
        if self.observer.config().logging.access_log {
            let latency_ms = latency.as_secs_f64() * 1_000.0;
            let _enter = self.span.enter();
            match &outcome.error {
                Some(error) => tracing::info!(
                    target: "qiflow::access",
                    method = self.method,
                    route = &*self.route,
                    path = %self.path,
                    status = outcome.status,
                    latency_ms,
                    request_id = %self.request_id,
                    user_agent = self.user_agent.as_deref().unwrap_or(""),
                    panicked = outcome.panicked,
                    error = %error,
                    "request finished"
                ),
                None => tracing::info!(
                    target: "qiflow::access",
                    method = self.method,
                    route = &*self.route,
                    path = %self.path,
                    status = outcome.status,
                    latency_ms,
                    request_id = %self.request_id,
                    user_agent = self.user_agent.as_deref().unwrap_or(""),
                    "request finished"
                ),
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(g) = self.active.take() {
            g.decrement(1.0);
        }
        let metrics = self.observer.metrics();
        if metrics.enabled() {
            metrics
                .counter(
                    "qiflow_client_disconnects_total",
                    vec![
                        metrics::Label::new("method", self.method),
                        metrics::Label::new("route", self.route.clone()),
                    ],
                )
                .increment(1);
        }
        let _enter = self.span.enter();
        tracing::info!(
            target: "qiflow::access",
            method = self.method,
            route = &*self.route,
            path = %self.path,
            request_id = %self.request_id,
            latency_ms = self.start.elapsed().as_secs_f64() * 1_000.0,
            "client disconnected before the response"
        );
    }
}

/// Status codes as label values without allocating for the common ones.
fn status_label(status: u16) -> metrics::SharedString {
    const COMMON: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(code, _)| *code == status) {
        Some((_, text)) => metrics::SharedString::const_str(text),
        None => metrics::SharedString::from(status.to_string()),
    }
}

/// The request-id header adapters read from requests and echo on responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest incoming request id that is honoured; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether an incoming request id may be honoured: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// visible ASCII (no spaces, quotes or backslashes), so a client cannot forge log lines or blow
/// up label sizes through it. The one policy every adapter applies.
///
/// ```
/// use qiflow_core::request::is_sane_request_id;
/// assert!(is_sane_request_id("01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f"));
/// assert!(!is_sane_request_id("has space"));
/// assert!(!is_sane_request_id(""));
/// ```
pub fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The text of a panic payload (`&str` or `String`), for adapters that catch panics.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
