//! Core-owned request types: what an adapter hands the core when a request starts and when its
//! response head is ready. The core never sees framework or `http` types.

use std::borrow::Cow;
use std::sync::Arc;

use crate::capture::{ErrorDetail, ErrorKind, ErrorReport, RequestContext, Severity};
use crate::metrics::RouteMetrics;

/// A request as it starts. Its text borrows from the framework's request where it can
/// (`Cow`), so an adapter hands it over without copying;
/// [`Observer::begin_request`](crate::Observer::begin_request) copies what it keeps into one
/// buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The HTTP method, upper case (`GET`).
    pub method: Cow<'a, str>,
    /// The raw path, without the query string (`/users/42`).
    pub path: Cow<'a, str>,
    /// The matched route template (`/users/{id}`), when the framework knows it.
    pub route: Option<Cow<'a, str>>,
    /// The incoming `x-request-id`, when present.
    pub request_id: Option<Cow<'a, str>>,
    /// The `user-agent` header, when present.
    pub user_agent: Option<Cow<'a, str>>,
    /// The raw query string, without `?`, when present (sensitive values are redacted before it
    /// is logged or reported).
    pub query: Option<Cow<'a, str>>,
    /// The `Host` header (or the URI's authority), when present.
    pub host: Option<Cow<'a, str>>,
    /// The actor of an automatically audited request, resolved by the adapter (see
    /// [`Observer::auto_audit`](crate::Observer::auto_audit)).
    pub actor: Option<String>,
}

impl<'a> RequestInfo<'a> {
    /// A request with a method and a path; the other fields start empty.
    pub fn new(method: impl Into<Cow<'a, str>>, path: impl Into<Cow<'a, str>>) -> Self {
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
    pub fn with_route(mut self, route: impl Into<Cow<'a, str>>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the incoming request id.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<Cow<'a, str>>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, ua: impl Into<Cow<'a, str>>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Sets the query string (without `?`).
    #[must_use]
    pub fn with_query(mut self, query: impl Into<Cow<'a, str>>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Sets the host.
    #[must_use]
    pub fn with_host(mut self, host: impl Into<Cow<'a, str>>) -> Self {
        self.host = Some(host.into());
        self
    }
}

/// A request's id, with what qiflow keeps of the request for its lines and reports (method,
/// route, path, redacted query, host, user agent) in one allocation. Cloning it is a reference
/// count, so adapters hand it to handlers (as a request extension) and to the response header
/// without copying the id again.
///
/// ```
/// # let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
/// #     .install_global(false)
/// #     .build()
/// #     .unwrap();
/// use qiflow_core::request::{RequestInfo, RequestOutcome};
///
/// let in_flight = observer.begin_request(RequestInfo::new("GET", "/").with_request_id("abc-1"));
/// let id = in_flight.id().clone();
/// assert_eq!(id.as_str(), "abc-1");
/// assert_eq!(id.to_string(), "abc-1");
/// in_flight.finish(RequestOutcome::new(200));
/// ```
#[derive(Clone)]
pub struct RequestId(Arc<RequestData>);

struct RequestData {
    /// The id, the path, the redacted query, the host and the user agent, one after another.
    text: String,
    /// Where each of them ends in `text`.
    ends: [usize; 5],
    /// Whether the query, the host and the user agent were given (a given empty host or user
    /// agent stays an empty string; an empty query counts as none).
    present: [bool; 3],
    method: &'static str,
    route: Arc<RouteMetrics>,
}

impl RequestId {
    /// The id: the honoured incoming one, or a generated UUID v7.
    pub fn as_str(&self) -> &str {
        self.part(0)
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.0.ends[i - 1] };
        &self.0.text[start..self.0.ends[i]]
    }

    fn optional(&self, i: usize) -> Option<&str> {
        self.0.present[i - 2].then(|| self.part(i))
    }

    /// The raw path.
    pub(crate) fn path(&self) -> &str {
        self.part(1)
    }

    /// The query string, sensitive values redacted.
    pub(crate) fn query(&self) -> Option<&str> {
        self.optional(2)
    }

    /// The `Host` header.
    pub(crate) fn host(&self) -> Option<&str> {
        self.optional(3)
    }

    /// The `user-agent` header.
    pub(crate) fn user_agent(&self) -> Option<&str> {
        self.optional(4)
    }

    /// The method label (`GET`, … or `_OTHER`).
    pub(crate) fn method(&self) -> &'static str {
        self.0.method
    }

    /// The route label (`/users/{id}`, `unmatched` or `other`).
    pub(crate) fn route(&self) -> &str {
        self.0.route.label()
    }

    /// The fields of the `request` span, in its order, as qiflow's layers log them.
    pub(crate) fn span_fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("request_id", Some(self.as_str())),
            ("http.request.method", Some(self.method())),
            ("http.route", Some(self.route())),
            ("url.path", Some(self.path())),
            ("url.query", self.query()),
            ("server.address", self.host()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    /// The request's context for an error report.
    pub(crate) fn context(&self, user_id: Option<String>) -> RequestContext {
        RequestContext {
            method: self.method().to_owned(),
            route: self.route().to_owned(),
            // The query is already redacted.
            url: crate::capture::url_of(self.host(), self.path(), self.query()),
            request_id: self.as_str().to_owned(),
            user_id,
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RequestId {}

impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for RequestId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for RequestId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The id's bytes, so an adapter can make a header value that shares them
/// (`bytes::Bytes::from_owner`).
impl AsRef<[u8]> for RequestId {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

/// A new request id: a UUID v7 (milliseconds since the Unix epoch at `now`, then random bits),
/// written into `out` without an allocation of its own.
fn push_new_request_id(out: &mut String, now: std::time::SystemTime) {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        now.as_secs(),
        now.subsec_nanos(),
    ));
    out.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
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
/// cancelled), it counts a client disconnect, and an automatically audited request
/// (`[audit] routes`) is recorded with outcome `aborted`.
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
    id: RequestId,
    /// The id was generated here (no sane incoming one).
    generated: bool,
    start: std::time::Instant,
    span: tracing::Span,
    /// When the request arrived, by the observer's clock (with `start`, it dates the finish
    /// without a second clock read).
    arrived: std::time::SystemTime,
    /// Set while `http_server_active_requests` counts this request.
    active: bool,
    audit: Option<Box<crate::audit::PendingAudit>>,
    done: bool,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("method", &self.id.method())
            .field("route", &self.route())
            .field("request_id", &self.id.as_str())
            .finish_non_exhaustive()
    }
}

impl InFlight {
    pub(crate) fn begin(observer: &crate::Observer, info: RequestInfo<'_>) -> Self {
        let metrics = observer.metrics();
        let method = crate::metrics::method_label(&info.method);
        let route = metrics.route(info.route.as_deref());
        let audit = crate::audit::PendingAudit::begin(observer, &info);
        let arrived = observer.clock().now();
        let id = RequestId(Arc::new(RequestData::new(
            observer, &info, arrived, method, route,
        )));
        let span = tracing::info_span!(
            target: "qiflow::request",
            "request",
            request_id = id.as_str(),
            http.request.method = method,
            http.route = id.route(),
            url.path = id.path(),
            url.query = id.query(),
            server.address = id.host(),
            enduser.id = tracing::field::Empty,
        );
        // qiflow's layers read the span's fields from here rather than record copies of them.
        crate::capture::attach_request(&span, &id);
        let active = metrics.enabled();
        if active {
            id.0.route.method(metrics, method).active().increment(1.0);
        }
        Self {
            observer: observer.clone(),
            id,
            generated: info.request_id.is_none(),
            arrived,
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
        self.id.as_str()
    }

    /// The request id as a cheap-to-clone value, for request extensions and header values.
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    /// Whether the id was generated here, for want of a sane incoming one: adapters then put it
    /// in the request's `x-request-id` header (an honoured one is already there).
    pub fn id_was_generated(&self) -> bool {
        self.generated
    }

    /// The request's tracing span (fields `request_id`, `http.request.method`, `http.route`,
    /// `url.path`); adapters run the inner service inside it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The route label used in metrics (`unmatched`, `other`, or the template).
    pub fn route(&self) -> &str {
        self.id.0.route.label()
    }

    /// Records the outcome: metrics, the access line.
    ///
    /// The access line is a root event (no parent span): it carries the request's own fields,
    /// so repeating the `request` span's would only double them.
    pub fn finish(mut self, outcome: RequestOutcome) {
        self.done = true;
        let latency = self.start.elapsed();
        let metrics = self.observer.metrics();
        let method = self.id.method();
        if let Some(audit) = self.audit.take() {
            audit.finish(&self.observer, outcome.status, self.id.as_str());
        }
        if self.active {
            self.active = false;
            let handles = self.id.0.route.method(metrics, method);
            handles.active().decrement(1.0);
            handles.record(
                metrics,
                method,
                self.id.0.route.label(),
                outcome.status,
                latency,
            );
        }
        if let Some(baselines) = self.observer.baselines_arc() {
            let handles = self.id.0.route.method(metrics, method);
            let route = handles.baseline(|| baselines.route(method, self.id.0.route.label()));
            let failed = outcome.panicked || outcome.status >= 500;
            baselines.record(
                route,
                self.arrived + latency,
                latency,
                failed,
                self.id.as_str(),
            );
        }
        self.capture(&outcome);
        if self.observer.config().logging.access_log {
            let latency_ms = millis(latency);
            let route: &str = self.id.0.route.label();
            let user_agent = self.id.user_agent().unwrap_or("");
            match &outcome.error {
                Some(error) => tracing::info!(
                    target: "qiflow::access",
                    parent: None,
                    method,
                    route,
                    path = self.id.path(),
                    status = outcome.status,
                    latency_ms,
                    request_id = self.id.as_str(),
                    user_agent,
                    panicked = outcome.panicked,
                    error = %error,
                    "request finished"
                ),
                None => tracing::info!(
                    target: "qiflow::access",
                    parent: None,
                    method,
                    route,
                    path = self.id.path(),
                    status = outcome.status,
                    latency_ms,
                    request_id = self.id.as_str(),
                    user_agent,
                    "request finished"
                ),
            }
        }
    }
}

/// A latency in milliseconds to the microsecond (`0.038`, `12.5`), as lines carry it: finer
/// digits are noise, and a value with at most three decimals is written without ryu.
pub(crate) fn millis(latency: std::time::Duration) -> f64 {
    latency.as_micros() as f64 / 1_000.0
}

impl RequestData {
    /// Copies what qiflow keeps of the request into one buffer, settling the id (the incoming
    /// one, or a new UUID v7) and redacting the query.
    fn new(
        observer: &crate::Observer,
        info: &RequestInfo<'_>,
        arrived: std::time::SystemTime,
        method: &'static str,
        route: Arc<RouteMetrics>,
    ) -> Self {
        let query = info.query.as_deref().filter(|q| !q.is_empty());
        let len = info.request_id.as_deref().map_or(36, str::len)
            + info.path.len()
            + query.map_or(0, |q| q.len() + 16)
            + info.host.as_deref().map_or(0, str::len)
            + info.user_agent.as_deref().map_or(0, str::len);
        let mut text = String::with_capacity(len);
        match info.request_id.as_deref() {
            Some(id) => text.push_str(id),
            None => push_new_request_id(&mut text, arrived),
        }
        let id_end = text.len();
        text.push_str(&info.path);
        let path_end = text.len();
        if let Some(query) = query {
            crate::capture::push_scrubbed_query(&mut text, query, &observer.capturer().redactor);
        }
        let query_end = text.len();
        text.push_str(info.host.as_deref().unwrap_or(""));
        let host_end = text.len();
        text.push_str(info.user_agent.as_deref().unwrap_or(""));
        Self {
            ends: [id_end, path_end, query_end, host_end, text.len()],
            text,
            present: [
                query.is_some(),
                info.host.is_some(),
                info.user_agent.is_some(),
            ],
            method,
            route,
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
                        self.id.method(),
                        self.route(),
                        outcome.status
                    ),
                ),
            ),
        };
        let scope = crate::capture::request_scope_of_span(&self.span);
        let user_id = scope.as_ref().and_then(|s| s.user_id.clone());
        let mut report =
            ErrorReport::new(kind, severity, detail).with_request(self.id.context(user_id));
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
            let handles = self.id.0.route.method(metrics, self.id.method());
            handles.active().decrement(1.0);
            handles.disconnects().increment(1);
        }
        let route: &str = self.id.0.route.label();
        let latency_ms = millis(self.start.elapsed());
        if let Some(audit) = self.audit.take() {
            audit.abort(&self.observer, self.id.as_str(), latency_ms);
        }
        tracing::info!(
            target: "qiflow::access",
            parent: None,
            method = self.id.method(),
            route,
            path = self.id.path(),
            request_id = self.id.as_str(),
            latency_ms,
            "client disconnected before the response"
        );
    }
}

/// The request-id header adapters read from requests and echo on responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The content type of [`internal_error_body`].
pub const INTERNAL_ERROR_CONTENT_TYPE: &str = "application/json";

/// The body of the `500 Internal Server Error` that qiflow's adapters answer themselves (after a
/// panic) or through their handler-error wrappers (`qiflow_axum::Error`, `qiflow_actix::Error`):
/// `{"error":"internal server error","request_id":"…"}`, the request id and no internals (the
/// error itself is in the access line and the error report, under the same request id). Without
/// a request id, the field is left out. Served with `content-type: application/json`
/// ([`INTERNAL_ERROR_CONTENT_TYPE`]).
///
/// ```
/// use qiflow_core::request::internal_error_body;
///
/// assert_eq!(
///     internal_error_body(Some("0193-abc")),
///     r#"{"error":"internal server error","request_id":"0193-abc"}"#
/// );
/// assert_eq!(internal_error_body(None), r#"{"error":"internal server error"}"#);
/// ```
pub fn internal_error_body(request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => serde_json::json!({"error": "internal server error", "request_id": id}),
        None => serde_json::json!({"error": "internal server error"}),
    }
    .to_string()
}

/// The id of the request being handled: the one whose `request` span the caller is in, as a
/// handler is and the conversion of its error into a response (where the handler-error wrappers
/// call it). `None` outside a request, or when the process's tracing subscriber is not a
/// `tracing_subscriber::Registry` carrying qiflow's layers (`init` installs one; a host
/// composing its own adds `Observer::log_layer` to a `Registry`).
///
/// ```
/// # let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
/// #     .install_global(false)
/// #     .build()
/// #     .unwrap();
/// use tracing_subscriber::layer::SubscriberExt;
/// use qiflow_core::request::{RequestInfo, RequestOutcome, current_request_id};
///
/// let subscriber = tracing_subscriber::registry().with(observer.log_layer());
/// tracing::subscriber::with_default(subscriber, || {
///     assert!(current_request_id().is_none());
///     let in_flight = observer.begin_request(RequestInfo::new("GET", "/").with_request_id("r-1"));
///     in_flight.span().in_scope(|| {
///         assert_eq!(current_request_id().unwrap().as_str(), "r-1");
///     });
///     in_flight.finish(RequestOutcome::new(200));
/// });
/// ```
pub fn current_request_id() -> Option<RequestId> {
    crate::capture::request_id_of_current()
}

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
