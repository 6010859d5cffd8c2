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
    /// The incoming `traceparent` header, when present (parsed under `[tracing] propagation`).
    pub traceparent: Option<Cow<'a, str>>,
    /// The incoming `tracestate` header, when present.
    pub tracestate: Option<Cow<'a, str>>,
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
            traceparent: None,
            tracestate: None,
        }
    }

    /// Sets the incoming `traceparent` header.
    #[must_use]
    pub fn with_traceparent(mut self, value: impl Into<Cow<'a, str>>) -> Self {
        self.traceparent = Some(value.into());
        self
    }

    /// Sets the incoming `tracestate` header.
    #[must_use]
    pub fn with_tracestate(mut self, value: impl Into<Cow<'a, str>>) -> Self {
        self.tracestate = Some(value.into());
        self
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

pub use crate::scope::RequestId;

/// A new request id: a UUID v7 (milliseconds since the Unix epoch at `now`, then random bits),
/// written into `out` without an allocation of its own.
/// A UUID v7 for a request arriving `now`: its millisecond, then 74 random bits from the
/// thread's fast generator (a request id must be unique, not unguessable: it is sent back on
/// every response).
fn new_request_id(now: std::time::SystemTime) -> uuid::Uuid {
    let millis = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let random = fastrand::u128(..).to_le_bytes();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random[..10]);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(millis).unwrap_or(u64::MAX), &bytes)
        .into_uuid()
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
    /// The route's metric handles.
    route: Arc<RouteMetrics>,
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
        let propagator = observer.propagator();
        let (trace, tracestate) =
            propagator.context(info.traceparent.as_deref(), info.tracestate.as_deref());
        let query = info.query.as_deref().filter(|q| !q.is_empty());
        let redactor = &observer.capturer().redactor;
        let id = RequestId::build(crate::scope::Parts {
            id: info.request_id.as_deref(),
            new_id: new_request_id,
            arrived,
            path: &info.path,
            query: query.map(|q| {
                (q.len() + 16, move |out: &mut String| {
                    crate::capture::push_scrubbed_query(out, q, redactor);
                })
            }),
            host: info.host.as_deref(),
            user_agent: info.user_agent.as_deref(),
            method,
            route: route.label().clone(),
            trace,
            propagate: propagator.propagates(),
            tracestate,
        });
        let span = tracing::info_span!(
            target: "qiflow::request",
            "request",
            request_id = id.as_str(),
            trace_id = id.trace_id(),
            span_id = id.span_id(),
            http.request.method = method,
            http.route = id.route(),
            url.path = id.path(),
            url.query = id.query(),
            server.address = id.host(),
            enduser.id = tracing::field::Empty,
        );
        // qiflow's layers read the span's fields from here rather than record copies of them.
        crate::scope::attach(&span, &id);
        let active = metrics.enabled();
        if active {
            route.method(metrics, method).active().increment();
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
            route,
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

    /// The `traceparent` to put on the response, naming this request's span: `Some` with
    /// `[tracing] respond = true` (and `propagation = "w3c"`).
    pub fn response_traceparent(&self) -> Option<String> {
        let propagator = self.observer.propagator();
        (propagator.responds() && propagator.propagates()).then(|| self.id.trace().traceparent())
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
        let method = self.id.method();
        if let Some(audit) = self.audit.take() {
            audit.finish(&self.observer, outcome.status, &self.id);
        }
        if self.active {
            self.active = false;
            let handles = self.route.method(metrics, method);
            handles.active().decrement();
            handles.record(metrics, method, self.route.label(), outcome.status, latency);
        }
        if let Some(baselines) = self.observer.baselines_arc() {
            let handles = self.route.method(metrics, method);
            let route = handles.baseline(|| baselines.route(method, self.route.label()));
            let failed = outcome.panicked || outcome.status >= 500;
            baselines.record(
                route,
                self.arrived + latency,
                latency,
                failed,
                self.id.as_str(),
                self.id.trace_id(),
            );
        }
        self.capture(&outcome);
        #[cfg(feature = "otlp")]
        if self.id.trace().is_sampled() {
            self.observer
                .export_span(crate::export::SpanRecord::Request {
                    request: self.id.clone(),
                    start: self.arrived,
                    end: self.arrived + latency,
                    status: outcome.status,
                    panicked: outcome.panicked,
                    disconnected: false,
                });
        }
        if self.observer.config().logging.access_log {
            let latency_ms = millis(latency);
            let route: &str = self.route.label();
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
                    trace_id = self.id.trace_id(),
                    span_id = self.id.span_id(),
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
                    trace_id = self.id.trace_id(),
                    span_id = self.id.span_id(),
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
        let mut report =
            ErrorReport::new(kind, severity, detail).with_request(RequestContext::of(&self.id));
        report.status = Some(outcome.status);
        report.breadcrumbs = crate::capture::breadcrumbs_of(&self.id);
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
            let handles = self.route.method(metrics, self.id.method());
            handles.active().decrement();
            handles.disconnects().increment(1);
        }
        let route: &str = self.route.label();
        let elapsed = self.start.elapsed();
        let latency_ms = millis(elapsed);
        #[cfg(feature = "otlp")]
        if self.id.trace().is_sampled() {
            self.observer
                .export_span(crate::export::SpanRecord::Request {
                    request: self.id.clone(),
                    start: self.arrived,
                    end: self.arrived + elapsed,
                    status: 0,
                    panicked: false,
                    disconnected: true,
                });
        }
        if let Some(audit) = self.audit.take() {
            audit.abort(&self.observer, &self.id, latency_ms);
        }
        tracing::info!(
            target: "qiflow::access",
            parent: None,
            method = self.id.method(),
            route,
            path = self.id.path(),
            request_id = self.id.as_str(),
            trace_id = self.id.trace_id(),
            span_id = self.id.span_id(),
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
    crate::scope::current()
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn request_ids_are_uuid_v7_with_the_arrival_millisecond() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_765_000_123_456);
        let id = super::new_request_id(at);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_765_000_123, 456));
        let ids: std::collections::HashSet<_> =
            (0..1000).map(|_| super::new_request_id(at)).collect();
        assert_eq!(ids.len(), 1000, "ids of one millisecond differ");
    }
}
