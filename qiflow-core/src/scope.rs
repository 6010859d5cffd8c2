//! The request scope: what one request carries while it runs (its ids, method, route, path and
//! the other request facts qiflow reports, its trace context, the user id the application set,
//! its breadcrumbs), in one shared allocation.
//!
//! `InFlight::begin` builds it and attaches it to the `request` span; the log layer, error
//! capture, baselines and propagation read it from there (or from the handle the request
//! carries). It is foundation: it knows no capability, and every capability may read it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use metrics::SharedString;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;
use triomphe::HeaderSlice;

use crate::propagation::{TraceContext, write_hex};

/// The most breadcrumbs one request keeps (the oldest go first).
pub(crate) const MAX_CRUMBS: usize = 30;

/// A request's id, with what qiflow keeps of the request for its lines and reports (method,
/// route, path, redacted query, host, user agent, trace context) in one allocation. Cloning it
/// is a reference count, so adapters hand it to handlers (as a request extension) and to the
/// response header without copying the id again.
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
/// assert_eq!(id.trace_id().len(), 32);
/// in_flight.finish(RequestOutcome::new(200));
/// ```
#[derive(Clone)]
pub struct RequestId(triomphe::Arc<HeaderSlice<Scope, str>>);

/// What one request carries, in one allocation with its text: the id, the path, the redacted
/// query, the host, the user agent, the trace id (hex), the span id (hex) and the tracestate,
/// one after another (the slice beside this header).
pub(crate) struct Scope {
    /// Where each part ends in the text.
    ends: [usize; PARTS],
    /// Whether the query, the host, the user agent and the tracestate were given (a given empty
    /// host or user agent stays an empty string; an empty query counts as none).
    present: [bool; 4],
    method: &'static str,
    route: SharedString,
    trace: TraceContext,
    /// Whether the trace context is written to outgoing calls (`[tracing] propagation`).
    propagate: bool,
    /// The user id the application set ([`crate::capture::set_user_id`]).
    user: Mutex<Option<String>>,
    /// Whether `user` was ever set: every log line in the request asks, and most requests have
    /// none, so the common answer costs no lock.
    has_user: AtomicBool,
    /// The request's breadcrumbs (events at `info` and above), the newest last.
    crumbs: Mutex<VecDeque<Crumb>>,
}

thread_local! {
    /// Where a scope's text is put together before it is copied, once, into the scope's one
    /// allocation: reused by every request on the thread.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Scratch buffers longer than this are not kept for the next request (a request with a huge
/// query or user agent does not pin its size on the thread).
const SCRATCH_KEEP: usize = 4096;

const PARTS: usize = 8;
const ID: usize = 0;
const PATH: usize = 1;
const QUERY: usize = 2;
const HOST: usize = 3;
const USER_AGENT: usize = 4;
const TRACE_ID: usize = 5;
const SPAN_ID: usize = 6;
const TRACESTATE: usize = 7;

/// One breadcrumb as the scope keeps it (capture turns it into a `Breadcrumb`).
#[derive(Debug, Clone)]
pub(crate) struct Crumb {
    pub(crate) timestamp: SystemTime,
    pub(crate) level: &'static str,
    pub(crate) target: &'static str,
    pub(crate) message: String,
}

/// What [`RequestId::build`] copies into the scope; `query` writes the redacted query.
pub(crate) struct Parts<'a, Q: FnOnce(&mut String)> {
    /// The incoming id, when sane; otherwise `new_id` makes one (a UUID, written hyphenated).
    pub(crate) id: Option<&'a str>,
    pub(crate) new_id: fn(SystemTime) -> uuid::Uuid,
    pub(crate) arrived: SystemTime,
    pub(crate) path: &'a str,
    /// The length the redacted query may take (a hint for the buffer), and its writer; `None`
    /// without a query.
    pub(crate) query: Option<(usize, Q)>,
    pub(crate) host: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
    pub(crate) method: &'static str,
    pub(crate) route: SharedString,
    pub(crate) trace: TraceContext,
    pub(crate) propagate: bool,
    pub(crate) tracestate: Option<&'a str>,
}

impl RequestId {
    pub(crate) fn build<Q: FnOnce(&mut String)>(parts: Parts<'_, Q>) -> Self {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                let id = Self::build_in(&mut text, parts);
                if text.capacity() > SCRATCH_KEEP {
                    *text = String::new();
                }
                id
            }
            // Not reachable (nothing here builds a scope while building one); a fresh buffer
            // all the same.
            Err(_) => Self::build_in(&mut String::new(), parts),
        })
    }

    /// Writes the text into `text` (empty), then makes the scope with a copy of it.
    fn build_in<Q: FnOnce(&mut String)>(text: &mut String, parts: Parts<'_, Q>) -> Self {
        let len = parts.id.map_or(36, str::len)
            + parts.path.len()
            + parts.query.as_ref().map_or(0, |(len, _)| *len)
            + parts.host.map_or(0, str::len)
            + parts.user_agent.map_or(0, str::len)
            + 48
            + parts.tracestate.map_or(0, str::len);
        text.reserve(len);
        let mut ends = [0; PARTS];
        match parts.id {
            Some(id) => text.push_str(id),
            None => text.push_str(
                (parts.new_id)(parts.arrived)
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            ),
        }
        ends[ID] = text.len();
        text.push_str(parts.path);
        ends[PATH] = text.len();
        let has_query = parts.query.is_some();
        if let Some((_, write)) = parts.query {
            write(text);
        }
        ends[QUERY] = text.len();
        text.push_str(parts.host.unwrap_or(""));
        ends[HOST] = text.len();
        text.push_str(parts.user_agent.unwrap_or(""));
        ends[USER_AGENT] = text.len();
        // Writing to a `String` cannot fail.
        let _ = write_hex(text, &parts.trace.trace_id().to_bytes());
        ends[TRACE_ID] = text.len();
        let _ = write_hex(text, &parts.trace.span_id().to_bytes());
        ends[SPAN_ID] = text.len();
        text.push_str(parts.tracestate.unwrap_or(""));
        ends[TRACESTATE] = text.len();
        let scope = Scope {
            ends,
            present: [
                has_query,
                parts.host.is_some(),
                parts.user_agent.is_some(),
                parts.tracestate.is_some(),
            ],
            method: parts.method,
            route: parts.route,
            trace: parts.trace,
            propagate: parts.propagate,
            user: Mutex::new(None),
            has_user: AtomicBool::new(false),
            crumbs: Mutex::new(VecDeque::new()),
        };
        Self(triomphe::Arc::from_header_and_str(scope, text))
    }

    /// The id: the honoured incoming one, or a generated UUID v7.
    pub fn as_str(&self) -> &str {
        self.part(ID)
    }

    /// The request's trace id (32 lowercase hex digits).
    pub fn trace_id(&self) -> &str {
        self.part(TRACE_ID)
    }

    /// The request's own span id (16 lowercase hex digits).
    pub fn span_id(&self) -> &str {
        self.part(SPAN_ID)
    }

    /// The request's trace context.
    pub fn trace(&self) -> TraceContext {
        self.0.header.trace
    }

    /// Whether the trace context goes on to outgoing calls (`[tracing] propagation = "w3c"`).
    pub(crate) fn propagates(&self) -> bool {
        self.0.header.propagate
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.0.header.ends[i - 1] };
        &self.0.slice[start..self.0.header.ends[i]]
    }

    fn optional(&self, i: usize) -> Option<&str> {
        let flag = match i {
            QUERY => 0,
            HOST => 1,
            USER_AGENT => 2,
            _ => 3,
        };
        self.0.header.present[flag].then(|| self.part(i))
    }

    /// The raw path.
    pub(crate) fn path(&self) -> &str {
        self.part(PATH)
    }

    /// The query string, sensitive values redacted.
    pub(crate) fn query(&self) -> Option<&str> {
        self.optional(QUERY)
    }

    /// The `Host` header.
    pub(crate) fn host(&self) -> Option<&str> {
        self.optional(HOST)
    }

    /// The `user-agent` header.
    pub(crate) fn user_agent(&self) -> Option<&str> {
        self.optional(USER_AGENT)
    }

    /// The incoming `tracestate`, when it was valid (carried on unchanged).
    pub(crate) fn tracestate(&self) -> Option<&str> {
        self.optional(TRACESTATE)
    }

    /// The method label (`GET`, … or `_OTHER`).
    pub(crate) fn method(&self) -> &'static str {
        self.0.header.method
    }

    /// The route label (`/users/{id}`, `unmatched` or `other`).
    pub(crate) fn route(&self) -> &str {
        &self.0.header.route
    }

    /// The fields of the `request` span, in its order, as qiflow's layers log them.
    pub(crate) fn span_fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("request_id", Some(self.as_str())),
            ("trace_id", Some(self.trace_id())),
            ("span_id", Some(self.span_id())),
            ("http.request.method", Some(self.method())),
            ("http.route", Some(self.route())),
            ("url.path", Some(self.path())),
            ("url.query", self.query()),
            ("server.address", self.host()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    /// The user id the application set for this request.
    pub(crate) fn user_id(&self) -> Option<String> {
        if !self.0.header.has_user.load(Ordering::Acquire) {
            return None;
        }
        self.0
            .header
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Calls `f` with the user id, without copying it.
    pub(crate) fn with_user_id<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        if !self.0.header.has_user.load(Ordering::Acquire) {
            return f(None);
        }
        let user = self
            .0
            .header
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(user.as_deref())
    }

    pub(crate) fn set_user_id(&self, id: &str) {
        *self
            .0
            .header
            .user
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(id.to_owned());
        self.0.header.has_user.store(true, Ordering::Release);
    }

    /// Keeps `crumb`, dropping the oldest past [`MAX_CRUMBS`].
    pub(crate) fn push_crumb(&self, crumb: Crumb) {
        let mut crumbs = self
            .0
            .header
            .crumbs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if crumbs.len() == MAX_CRUMBS {
            crumbs.pop_front();
        }
        crumbs.push_back(crumb);
    }

    /// The request's breadcrumbs, oldest first.
    pub(crate) fn crumbs(&self) -> Vec<Crumb> {
        let crumbs = self
            .0
            .header
            .crumbs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        crumbs.iter().cloned().collect()
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

/// Whether `meta` is that of qiflow's `request` span.
pub(crate) fn is_request_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.name() == "request" && meta.target() == "qiflow::request"
}

/// Hands the `request` span its scope (from `InFlight::begin`), which qiflow's layers read
/// instead of recording copies of the span's fields.
pub(crate) fn attach(span: &tracing::Span, id: &RequestId) {
    span.with_subscriber(|(span_id, dispatch)| {
        if let Some(span) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(span_id))
        {
            span.extensions_mut().insert(id.clone());
        }
    });
}

/// The scope of the request `span` belongs to (a request span or one inside it), through the
/// global [`Registry`]; `None` when qiflow's subscriber is not the one `span` belongs to.
pub(crate) fn of_span(span: &tracing::Span) -> Option<RequestId> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let request = span.scope().find(|s| is_request_span(s.metadata()))?;
        let id = request.extensions().get::<RequestId>()?.clone();
        Some(id)
    })
    .flatten()
}

/// The scope of the request the caller is in (the current span or one of its parents).
pub(crate) fn current() -> Option<RequestId> {
    of_span(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(query: Option<&str>, trace: TraceContext, state: Option<&str>) -> RequestId {
        build_with(query.map(|q| (q.len(), q)), None, trace, state)
    }

    /// `query`: the length hint given and the query written.
    fn build_with(
        query: Option<(usize, &str)>,
        user_agent: Option<&str>,
        trace: TraceContext,
        state: Option<&str>,
    ) -> RequestId {
        RequestId::build(Parts {
            id: Some("r-1"),
            new_id: |_| unreachable!("an id was given"),
            arrived: SystemTime::UNIX_EPOCH,
            path: "/users/7",
            query: query.map(|(hint, q)| (hint, move |out: &mut String| out.push_str(q))),
            host: Some("example.com"),
            user_agent,
            method: "GET",
            route: SharedString::const_str("/users/{id}"),
            trace,
            propagate: true,
            tracestate: state,
        })
    }

    #[test]
    fn every_part_reads_back() {
        let trace = TraceContext::root(1.0);
        let id = build(Some("a=1"), trace, Some("k=v"));
        assert_eq!(id.as_str(), "r-1");
        assert_eq!(id.path(), "/users/7");
        assert_eq!(id.query(), Some("a=1"));
        assert_eq!(id.host(), Some("example.com"));
        assert_eq!(id.user_agent(), None);
        assert_eq!(id.trace_id(), trace.trace_id().to_string());
        assert_eq!(id.span_id(), trace.span_id().to_string());
        assert_eq!(id.tracestate(), Some("k=v"));
        assert_eq!(id.route(), "/users/{id}");
        let names: Vec<_> = id.span_fields().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "request_id",
                "trace_id",
                "span_id",
                "http.request.method",
                "http.route",
                "url.path",
                "url.query",
                "server.address"
            ]
        );
        let plain = build(None, TraceContext::root(0.0), None);
        assert_eq!(plain.query(), None);
        assert_eq!(plain.trace_id().len(), 32);
        assert_eq!(plain.tracestate(), None);
        assert_eq!(plain.span_fields().count(), 7);
    }

    /// Long texts read back whole, whether their length was known before (a long user agent)
    /// or only found while writing (a query longer than its hint); the thread's scratch buffer
    /// is not kept at their size.
    #[test]
    fn long_texts_read_back_and_the_scratch_buffer_shrinks() {
        let trace = TraceContext::root(1.0);
        let agent = "A".repeat(2 * SCRATCH_KEEP);
        let long = build_with(None, Some(&agent), trace, None);
        assert_eq!(long.user_agent(), Some(agent.as_str()));
        assert!(SCRATCH.with(|s| s.borrow().capacity()) <= SCRATCH_KEEP);
        assert_eq!(long.trace_id(), trace.trace_id().to_string());
        let query = "q=".to_owned() + &"x".repeat(500);
        let grown = build_with(Some((4, &query)), None, trace, Some("k=v"));
        assert_eq!(grown.query(), Some(query.as_str()));
        assert_eq!(grown.host(), Some("example.com"));
        assert_eq!(grown.span_id(), trace.span_id().to_string());
        assert_eq!(grown.tracestate(), Some("k=v"));
    }

    #[test]
    fn crumbs_are_bounded_and_the_user_id_replaced() {
        let id = build(None, TraceContext::root(1.0), None);
        for i in 0..MAX_CRUMBS + 5 {
            id.push_crumb(Crumb {
                timestamp: SystemTime::UNIX_EPOCH,
                level: "INFO",
                target: "t",
                message: i.to_string(),
            });
        }
        let crumbs = id.crumbs();
        assert_eq!(crumbs.len(), MAX_CRUMBS);
        assert_eq!(crumbs[0].message, "5");
        assert_eq!(id.user_id(), None);
        id.set_user_id("u-1");
        id.set_user_id("u-2");
        assert_eq!(id.user_id().as_deref(), Some("u-2"));
        id.with_user_id(|u| assert_eq!(u, Some("u-2")));
    }
}
