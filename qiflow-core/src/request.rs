//! Core-owned request types: what an adapter hands the core when a request starts and when its
//! response head is ready. The core never sees framework or `http` types.

use std::sync::Arc;

use crate::capture::{ErrorDetail, ErrorKind, ErrorReport, RequestContext, Severity};
use crate::metrics::RouteMetrics;

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
    /// The raw query string, without `?`, when present (sensitive values are redacted before it
    /// is logged or reported).
    pub query: Option<String>,
    /// The `Host` header (or the URI's authority), when present.
    pub host: Option<String>,
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
            query: None,
            host: None,
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

    /// Sets the query string (without `?`).
    #[must_use]
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Sets the host.
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
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
    /// The handler's error with its source chain, when the framework carries one (for a panic:
    /// its message).
    pub error: Option<ErrorDetail>,
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
            error: Some(ErrorDetail::message(Some("panic"), message)),
        }
    }

    /// Attaches the handler's error.
    #[must_use]
    pub fn with_error(mut self, error: ErrorDetail) -> Self {
        self.error = Some(error);
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
    route: Arc<RouteMetrics>,
    path: String,
    /// The query string with sensitive values redacted.
    query: Option<String>,
    host: Option<String>,
    request_id: String,
    user_agent: Option<String>,
    start: std::time::Instant,
    span: tracing::Span,
    /// Set while `http_server_active_requests` counts this request.
    active: bool,
    audit: Option<Box<crate::audit::PendingAudit>>,
    done: bool,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("method", &self.method)
            .field("route", &self.route())
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl InFlight {
    pub(crate) fn begin(observer: &crate::Observer, info: RequestInfo) -> Self {
        let metrics = observer.metrics();
        let method = crate::metrics::method_label(&info.method);
        let route = metrics.route(info.route.as_deref());
        let audit = crate::audit::PendingAudit::begin(observer, &info);
        let request_id = info
            .request_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let query = info
            .query
            .filter(|q| !q.is_empty())
            .map(|q| crate::capture::scrub_query(&q, &observer.capturer().redactor));
        let span = tracing::info_span!(
            target: "qiflow::request",
            "request",
            request_id = request_id.as_str(),
            http.request.method = method,
            http.route = &**route.label(),
            url.path = info.path.as_str(),
            url.query = query.as_deref(),
            server.address = info.host.as_deref(),
            enduser.id = tracing::field::Empty,
        );
        let active = metrics.enabled();
        if active {
            route.method(metrics, method).active().increment(1.0);
        }
        Self {
            observer: observer.clone(),
            method,
            route,
            path: info.path,
            query,
            host: info.host,
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
        self.route.label()
    }

    /// Records the outcome: metrics, the access line.
    ///
    /// The access line is a root event (no parent span): it carries the request's own fields,
    /// so repeating the `request` span's would only double them.
    pub fn finish(mut self, outcome: RequestOutcome) {
        self.done = true;
        let latency = self.start.elapsed();
        let metrics = self.observer.metrics();
        if let Some(audit) = self.audit.take() {
            audit.finish(&self.observer, outcome.status, &self.request_id);
        }
        if self.active {
            self.active = false;
            let handles = self.route.method(metrics, self.method);
            handles.active().decrement(1.0);
            handles.record(
                metrics,
                self.method,
                self.route.label(),
                outcome.status,
                latency.as_secs_f64(),
            );
        }
        if let Some(baselines) = self.observer.baselines_arc() {
            let handles = self.route.method(metrics, self.method);
            let route = handles.baseline(|| baselines.route(self.method, self.route.label()));
            let failed = outcome.panicked || outcome.status >= 500;
            baselines.record(route, latency, failed, &self.request_id);
        }
        self.capture(&outcome);
        if self.observer.config().logging.access_log {
            let latency_ms = latency.as_secs_f64() * 1_000.0;
            let route: &str = self.route.label();
            let user_agent = self.user_agent.as_deref().unwrap_or("");
            match &outcome.error {
                Some(error) => tracing::info!(
                    target: "qiflow::access",
                    parent: None,
                    method = self.method,
                    route,
                    path = self.path.as_str(),
                    status = outcome.status,
                    latency_ms,
                    request_id = self.request_id.as_str(),
                    user_agent,
                    panicked = outcome.panicked,
                    error = %error,
                    "request finished"
                ),
                None => tracing::info!(
                    target: "qiflow::access",
                    parent: None,
                    method = self.method,
                    route,
                    path = self.path.as_str(),
                    status = outcome.status,
                    latency_ms,
                    request_id = self.request_id.as_str(),
                    user_agent,
                    "request finished"
                ),
            }
        }
    }
}

impl InFlight {
    /// Reports the outcome when the `[errors] capture` policy says so: every panic (unless the
    /// panic hook already reported it), 5xx, and 4xx with `"4xx+5xx"`.
    fn capture(&self, outcome: &RequestOutcome) {
        let capturer = self.observer.capturer();
        let severity = if outcome.panicked {
            if crate::capture::take_panic_captured() {
                return;
            }
            Severity::Fatal
        } else {
            match capturer.severity_for_status(outcome.status) {
                Some(severity) => severity,
                None => return,
            }
        };
        let (kind, detail) = match (&outcome.error, outcome.panicked) {
            (Some(detail), true) => (ErrorKind::Panic, detail.clone()),
            (Some(detail), false) => (ErrorKind::Handler, detail.clone()),
            (None, _) => (
                ErrorKind::Status,
                ErrorDetail::message(
                    Some("HttpStatus"),
                    format!(
                        "{} {} answered {}",
                        self.method,
                        self.route(),
                        outcome.status
                    ),
                ),
            ),
        };
        let scope = crate::capture::request_scope_of_span(&self.span);
        let user_id = scope.as_ref().and_then(|s| s.user_id.clone());
        let mut report = ErrorReport::new(kind, severity, detail).with_request(RequestContext {
            method: self.method.to_owned(),
            route: self.route().to_owned(),
            url: crate::capture::scrub_url(
                self.host.as_deref(),
                &self.path,
                self.query.as_deref(),
                &capturer.redactor,
            ),
            request_id: self.request_id.clone(),
            user_id,
        });
        report.status = Some(outcome.status);
        if let Some(scope) = scope {
            report.breadcrumbs = scope.breadcrumbs;
        }
        capturer.capture(report);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let metrics = self.observer.metrics();
        if self.active {
            let handles = self.route.method(metrics, self.method);
            handles.active().decrement(1.0);
            handles.disconnects().increment(1);
        }
        let route: &str = self.route.label();
        tracing::info!(
            target: "qiflow::access",
            parent: None,
            method = self.method,
            route,
            path = self.path.as_str(),
            request_id = self.request_id.as_str(),
            latency_ms = self.start.elapsed().as_secs_f64() * 1_000.0,
            "client disconnected before the response"
        );
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
