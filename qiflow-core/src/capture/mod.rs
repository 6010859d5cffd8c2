//! Error capture: panics, handler errors and `error!` events become [`ErrorReport`]s, grouped in
//! a local [`ErrorStore`] and forwarded by [`Reporter`]s (Sentry among them), off the request
//! path.
//!
//! # Where reports come from
//!
//! - The middleware of every adapter: a response at or above the `[errors] capture` threshold
//!   (`"5xx"` by default, or `"4xx+5xx"`), with the handler's own error when it attached one
//!   (`qiflow_axum::Error`, actix-web's error slot), and every panic.
//! - The [`CaptureLayer`]: `tracing` events at `error` level (the `[errors] event_level`), with
//!   the current request's context; events at `info` and above inside a request are kept as its
//!   breadcrumbs (the last [`MAX_BREADCRUMBS`]).
//! - [`Observer::capture_error`](crate::Observer::capture_error) from application code.
//! - The panic hook `init` installs ([`install_panic_hook`]), with the panicking thread's stack
//!   as addresses ([`Stacktrace`]).
//!
//! # What happens to them
//!
//! The caller only builds the report and offers it to the `errors` pipeline: a bounded queue,
//! never waited on; a full queue drops the report and counts it. On qiflow's worker, a panic's
//! stack addresses are resolved to function names and `file:line` (within [`RESOLVE_BUDGET`],
//! releasing the debug info afterwards), then the [`ErrorStore`] groups it by fingerprint (error type, normalized message, route) (served as JSON at `/qiflow/api/errors`) and each
//! [`Reporter`] forwards it. A report a reporter could not deliver (Sentry down, or asking to back
//! off) is counted on `qiflow_dropped_total{pipeline="errors",reason}`, so that
//! `captured == delivered + dropped` always holds ([`Observer::stats`](crate::Observer::stats)).
//!
//! ```
//! use qiflow_core::{Observer, test::quiet_config};
//!
//! let (observer, _guard) = Observer::builder(quiet_config()).install_global(false).build()?;
//! let err = std::io::Error::new(std::io::ErrorKind::NotFound, "config.toml is missing");
//! observer.capture_error(&err);
//! assert!(observer.flush(std::time::Duration::from_secs(5)));
//! let groups = observer.error_store().groups();
//! assert_eq!(groups[0].count, 1);
//! assert_eq!(groups[0].type_name, "std::io::error::Error");
//! # Ok::<(), qiflow_core::InitError>(())
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::logging::{REDACTED, Redactor};
use crate::worker::{BoxFuture, SinkError};

pub(crate) mod check;
mod layer;
mod panic;
#[cfg(feature = "sentry")]
mod sentry;
mod sink;
mod stacktrace;
mod store;
mod symbolize;

pub use layer::CaptureLayer;
pub use panic::{PreviousHook, install_panic_hook, install_panic_hook_with};
#[cfg(feature = "sentry")]
pub use sentry::SentryReporter;
#[cfg(feature = "sentry")]
pub(crate) use sentry::hub_client;
pub(crate) use sink::ErrorSink;
pub use stacktrace::{
    Frame, MAX_CAPTURED_FRAMES, MAX_FRAMES, MAX_NAME_LEN, Resolution, Stacktrace,
};
pub use store::{ErrorGroup, ErrorStore};
pub use symbolize::{MAX_CACHED_ADDRESSES, RESOLVE_BUDGET};

pub(crate) use layer::{GlobalBreadcrumbs, breadcrumbs_of, in_current_request};
pub(crate) use panic::take_panic_captured;
#[cfg(feature = "sentry")]
pub use sentry::{ATTEMPT_TIMEOUT, DEFAULT_RATE_LIMIT, MAX_BACKOFF, SentryOptions};

/// What `[errors]` configures: the reporter, and with Sentry the reporter itself, whose transport
/// also delivers what the application sends through sentry's hub ([`hub_client`]).
pub(crate) struct Configured {
    pub(crate) reporter: std::sync::Arc<dyn Reporter>,
    #[cfg(feature = "sentry")]
    pub(crate) sentry: std::sync::Arc<SentryReporter>,
}

/// The reporter `[errors]` configures: Sentry when `sentry_dsn` is set (`None` when it is not).
/// Without the `sentry` feature a DSN is an error naming the feature (the configuration's check
/// says so at load; this covers a `Config` built in code).
pub(crate) fn configured_reporter(
    config: &crate::config::Config,
    metrics: &crate::metrics::Metrics,
) -> Result<Option<Configured>, String> {
    let Some(dsn) = config.errors.sentry_dsn.as_ref().filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    #[cfg(feature = "sentry")]
    {
        let mut options = SentryOptions::new(
            config.service.environment.clone(),
            config.service.version.clone(),
        );
        options.sample_rate = config.errors.sample_rate as f32;
        options.redactor = Redactor::new(&config.logging.redact);
        options.server_name =
            Some(config.service.instance.clone()).filter(|instance| !instance.is_empty());
        let sentry = std::sync::Arc::new(
            SentryReporter::new(dsn.expose(), options)?.with_metrics(metrics.clone()),
        );
        Ok(Some(Configured {
            reporter: sentry.clone(),
            sentry,
        }))
    }
    #[cfg(not(feature = "sentry"))]
    {
        let _ = (dsn, metrics);
        Err(format!(
            "errors.sentry_dsn: {}",
            crate::config::needs_feature("forwarding to Sentry", "sentry")
        ))
    }
}

/// The capacity of the `errors` queue: a storm of failures beyond it is dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;

/// What every source of reports shares: the queue, the policy and the defaults a report is
/// completed with.
pub(crate) struct Capturer {
    pub(crate) pipeline: crate::worker::Pipeline<ErrorReport>,
    pub(crate) redactor: Redactor,
    /// Events at this level or more severe become reports.
    pub(crate) event_level: tracing::Level,
    pub(crate) policy: crate::config::CapturePolicy,
    pub(crate) global_breadcrumbs: GlobalBreadcrumbs,
    /// `qiflow_errors_captured_total{kind}`, registered once per kind (`None`: metrics off).
    pub(crate) captured: Option<[::metrics::Counter; ErrorKind::ALL.len()]>,
}

impl Capturer {
    /// The captured-reports counters of `metrics`, one per kind.
    pub(crate) fn counters(
        metrics: &crate::metrics::Metrics,
    ) -> Option<[::metrics::Counter; ErrorKind::ALL.len()]> {
        metrics.enabled().then(|| {
            ErrorKind::ALL.map(|kind| {
                metrics.counter(
                    "qiflow_errors_captured_total",
                    vec![::metrics::Label::new("kind", kind.as_str())],
                )
            })
        })
    }

    /// Counts the report on `qiflow_errors_captured_total{kind}` and offers it to the queue;
    /// never waits. The worker completes it (`complete`) before anything reads it.
    pub(crate) fn capture(&self, report: ErrorReport) {
        if let Some(counter) = self
            .captured
            .as_ref()
            .and_then(|counters| counters.get(report.kind.index()))
        {
            counter.increment(1);
        }
        // Counted by the pipeline when the queue is full or closed.
        let _ = self.pipeline.submit(report);
    }

    /// The severity a response with `status` is captured at, or `None` when the policy does not
    /// capture it.
    pub(crate) fn severity_for_status(&self, status: u16) -> Option<Severity> {
        match status {
            500..=599 => Some(Severity::Error),
            400..=499 if self.policy == crate::config::CapturePolicy::ClientAndServerErrors => {
                Some(Severity::Warning)
            }
            _ => None,
        }
    }
}

/// The most breadcrumbs one report carries (the newest are kept).
pub const MAX_BREADCRUMBS: usize = crate::scope::MAX_CRUMBS;

/// How bad a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// A client error captured because `[errors] capture = "4xx+5xx"`.
    Warning,
    /// A failure: a 5xx, a handler error, an `error!` event.
    Error,
    /// A panic.
    Fatal,
}

impl Severity {
    /// The lowercase name (`warning`, `error`, `fatal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }
}

/// Where a report came from: the `kind` label of `qiflow_errors_captured_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A panic (hook or middleware).
    Panic,
    /// A handler returned its own error, answered as an error status.
    Handler,
    /// An error status with no error attached.
    Status,
    /// A `tracing` event at the capture level.
    Event,
    /// [`Observer::capture_error`](crate::Observer::capture_error) or
    /// [`Observer::capture`](crate::Observer::capture).
    Manual,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 5] = [
        Self::Panic,
        Self::Handler,
        Self::Status,
        Self::Event,
        Self::Manual,
    ];

    /// The kind's place in [`ALL`](Self::ALL). The match is exhaustive, so a new kind does not
    /// compile until it has a place.
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Panic => 0,
            Self::Handler => 1,
            Self::Status => 2,
            Self::Event => 3,
            Self::Manual => 4,
        }
    }

    /// The label value (`panic`, `handler`, `status`, `event`, `manual`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Panic => "panic",
            Self::Handler => "handler",
            Self::Status => "status",
            Self::Event => "event",
            Self::Manual => "manual",
        }
    }
}

/// One error of a chain: its type (when known) and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChainLink {
    /// The error's type name (`std::io::error::Error`), when known.
    pub type_name: Option<String>,
    /// Its `Display` text.
    pub message: String,
}

/// An error and its `source()` chain, outermost first, as text: what a report, the access line
/// and Sentry's exception list are made from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct ErrorDetail {
    /// The outermost error first, then each `source()`.
    pub chain: Vec<ChainLink>,
}

impl ErrorDetail {
    /// The chain of `error`, with its static type name on the outermost link.
    pub fn from_error<E: std::error::Error + 'static>(error: &E) -> Self {
        let mut detail = Self::from_dyn(error);
        if let Some(first) = detail.chain.first_mut() {
            first.type_name = Some(std::any::type_name::<E>().to_owned());
        }
        detail
    }

    /// The chain of an error known only as `dyn Error`: type names are read from each link's
    /// `Debug` output (`NotFound { .. }` → `NotFound`), as Sentry does.
    pub fn from_dyn(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = next {
            if chain.len() == 16 {
                break; // A cycle, or a chain nobody reads to the end.
            }
            chain.push(ChainLink {
                type_name: type_from_debug(&format!("{e:?}")),
                message: e.to_string(),
            });
            next = e.source();
        }
        Self { chain }
    }

    /// A detail with one message and an optional type name.
    pub fn message(type_name: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            chain: vec![ChainLink {
                type_name: type_name.map(str::to_owned),
                message: message.into(),
            }],
        }
    }

    /// The outermost type name, or `"Error"`.
    pub fn type_name(&self) -> &str {
        self.chain
            .first()
            .and_then(|l| l.type_name.as_deref())
            .unwrap_or("Error")
    }

    /// The outermost message.
    pub fn top_message(&self) -> &str {
        self.chain.first().map_or("", |l| l.message.as_str())
    }
}

impl std::fmt::Display for ErrorDetail {
    /// The messages joined with `": "`, as the access line's `error` field shows them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, link) in self.chain.iter().enumerate() {
            if i > 0 {
                f.write_str(": ")?;
            }
            f.write_str(&link.message)?;
        }
        Ok(())
    }
}

/// The type name a `Debug` output starts with, as Sentry reads it: `Foo { .. }`, `Foo(..)`,
/// `Foo` → `Foo`; anything else (a bare string) → `None`. Adapters use it to name the type of a
/// framework's error that they only see as `dyn Debug + Display`.
///
/// ```
/// use qiflow_core::capture::type_from_debug;
/// assert_eq!(type_from_debug("NotFound { path: \"/x\" }").as_deref(), Some("NotFound"));
/// assert_eq!(type_from_debug("\"just text\""), None);
/// ```
pub fn type_from_debug(debug: &str) -> Option<String> {
    // Sentry's reading (the text up to the first space, `(`, `{` or line break), kept only
    // when it is a type name: a quoted string's `Debug` is not one.
    let name = debug
        .split([' ', '(', '{', '\r', '\n'])
        .next()
        .unwrap_or_default()
        .trim();
    let plausible = name.chars().next().is_some_and(char::is_uppercase)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ':');
    plausible.then(|| name.to_owned())
}

/// The request a report belongs to: what the middleware knew, scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct RequestContext {
    /// `GET`, `POST`, …
    pub method: String,
    /// The route template (`/users/{id}`), `unmatched` or `other`.
    pub route: String,
    /// The URL: `http://host/path?query` with sensitive query values replaced by `[REDACTED]` and
    /// no credentials.
    pub url: String,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The user id, when the application set one ([`set_user_id`]).
    pub user_id: Option<String>,
    /// The request's trace id (W3C, 32 lowercase hex digits), when known.
    pub trace_id: Option<String>,
    /// The request's span id (16 lowercase hex digits), when known.
    pub span_id: Option<String>,
}

impl RequestContext {
    /// A context with the user id unset.
    pub fn new(
        method: impl Into<String>,
        route: impl Into<String>,
        url: impl Into<String>,
        request_id: impl Into<String>,
    ) -> Self {
        Self {
            method: method.into(),
            route: route.into(),
            url: url.into(),
            request_id: request_id.into(),
            user_id: None,
            trace_id: None,
            span_id: None,
        }
    }

    /// The context of a request in flight (its query already redacted).
    pub(crate) fn of(request: &crate::scope::RequestId) -> Self {
        Self {
            method: request.method().to_owned(),
            route: request.route().to_owned(),
            url: url_of(request.host(), request.path(), request.query()),
            request_id: request.as_str().to_owned(),
            user_id: request.user_id(),
            trace_id: Some(request.trace_id().to_owned()),
            span_id: Some(request.span_id().to_owned()),
        }
    }
}

/// An event noted before an error, kept with the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Breadcrumb {
    /// When it happened.
    #[serde(with = "crate::capture::rfc3339")]
    pub timestamp: SystemTime,
    /// `INFO`, `WARN`, `ERROR`.
    pub level: &'static str,
    /// The event's target (module path).
    pub target: &'static str,
    /// The event's message.
    pub message: String,
}

/// One captured error.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ErrorReport {
    /// Where it came from.
    pub kind: ErrorKind,
    /// How bad it is.
    pub severity: Severity,
    /// The error chain (for a panic: its message; for an event: its message).
    pub detail: ErrorDetail,
    /// The request, when it happened inside one.
    pub request: Option<RequestContext>,
    /// The HTTP status answered, for middleware reports.
    pub status: Option<u16>,
    /// Extra key-value pairs (an event's fields, a panic's location); sensitive names redacted.
    pub tags: BTreeMap<String, String>,
    /// What happened before, oldest first.
    pub breadcrumbs: Vec<Breadcrumb>,
    /// The panicking thread's stack (panics only): addresses when captured, names once the
    /// worker has resolved them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<Stacktrace>,
    /// `[service] version`.
    pub release: String,
    /// `[service] environment`.
    pub environment: String,
    /// When it was captured.
    #[serde(with = "crate::capture::rfc3339")]
    pub timestamp: SystemTime,
    /// Groups reports: the error type, the normalized message and the route.
    pub fingerprint: String,
}

impl ErrorReport {
    /// A report of `kind` with `detail`; the observer fills release, environment and the
    /// fingerprint when it is captured.
    pub fn new(kind: ErrorKind, severity: Severity, detail: ErrorDetail) -> Self {
        Self {
            kind,
            severity,
            detail,
            request: None,
            status: None,
            tags: BTreeMap::new(),
            breadcrumbs: Vec::new(),
            stacktrace: None,
            release: String::new(),
            environment: String::new(),
            timestamp: SystemTime::now(),
            fingerprint: String::new(),
        }
    }

    /// Attaches the request context.
    #[must_use]
    pub fn with_request(mut self, request: RequestContext) -> Self {
        self.request = Some(request);
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The route, when the report belongs to a request.
    pub fn route(&self) -> Option<&str> {
        self.request.as_ref().map(|r| r.route.as_str())
    }
}

/// Where reports go after the local store: Sentry, or anything the application adds with
/// [`ObserverBuilder::reporter`](crate::ObserverBuilder::reporter).
///
/// Reporters run on qiflow's background runtime, one report at a time, never on the request
/// path. An `Err` counts the report as dropped (reason `sink_error`, or `rate_limited` for
/// [`SinkError::rate_limited`]); a reporter that wants retries does them itself, within a
/// bounded time.
pub trait Reporter: Send + Sync + 'static {
    /// Delivers one report.
    fn report<'a>(&'a self, report: &'a ErrorReport) -> BoxFuture<'a, Result<(), SinkError>>;

    /// A short name for logs (`sentry`). Defaults to the type's name.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

impl<R: Reporter + ?Sized> Reporter for std::sync::Arc<R> {
    fn report<'a>(&'a self, report: &'a ErrorReport) -> BoxFuture<'a, Result<(), SinkError>> {
        (**self).report(report)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

impl<R: Reporter + ?Sized> Reporter for Box<R> {
    fn report<'a>(&'a self, report: &'a ErrorReport) -> BoxFuture<'a, Result<(), SinkError>> {
        (**self).report(report)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// A [`Reporter`] that accepts every report and sends it nowhere: for tests, and for a builder
/// slot that wants one.
///
/// ```
/// use qiflow_core::capture::{ErrorDetail, ErrorKind, ErrorReport, NoopReporter, Reporter, Severity};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let report = ErrorReport::new(ErrorKind::Manual, Severity::Error, ErrorDetail::message(None, "x"));
/// assert!(NoopReporter.report(&report).await.is_ok());
/// assert_eq!(NoopReporter.name(), "noop");
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopReporter;

impl Reporter for NoopReporter {
    fn report<'a>(&'a self, _report: &'a ErrorReport) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &'static str {
        "noop"
    }
}

/// Fills what the caller left empty: release, environment and the fingerprint. Done on the
/// worker, off the request path.
pub(crate) fn complete(report: &mut ErrorReport, release: &str, environment: &str) {
    if report.release.is_empty() {
        release.clone_into(&mut report.release);
    }
    if report.environment.is_empty() {
        environment.clone_into(&mut report.environment);
    }
    if report.fingerprint.is_empty() {
        report.fingerprint = fingerprint(
            report.detail.type_name(),
            report.detail.top_message(),
            report.route(),
        );
    }
}

/// The grouping key: the error type, the message with its variable parts (numbers, ids,
/// addresses, quoted values) replaced, and the route. 16 hex digits of its SHA-256.
pub(crate) fn fingerprint(type_name: &str, message: &str, route: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(type_name.as_bytes());
    hasher.update([0]);
    hasher.update(normalize_message(message).as_bytes());
    hasher.update([0]);
    hasher.update(route.unwrap_or("").as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// The message with its variable parts replaced: hex ids (UUIDs, hashes, `0x…` addresses) and
/// runs of digits by `#`, quoted values by `"…"`. At most 512 bytes of the message are considered.
pub(crate) fn normalize_message(message: &str) -> String {
    let (message, _) = crate::logging::format_cap(message, 512);
    let mut out = String::with_capacity(message.len());
    let mut words = message.split_inclusive(|c: char| !(c.is_alphanumeric() || c == '-'));
    let mut in_quote = false;
    for piece in words.by_ref() {
        let (word, sep) = match piece.char_indices().last() {
            Some((i, c)) if !(c.is_alphanumeric() || c == '-') => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        if in_quote {
            if sep == "\"" {
                in_quote = false;
                out.push_str("…\"");
            }
            continue;
        }
        if is_variable(word) {
            out.push('#');
        } else {
            // Digits inside words (`30s`, `v2`, `node-7`) vary too.
            let mut in_digits = false;
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !in_digits {
                        out.push('#');
                    }
                    in_digits = true;
                } else {
                    out.push(c);
                    in_digits = false;
                }
            }
        }
        if sep == "\"" {
            in_quote = true;
        }
        out.push_str(sep);
    }
    out
}

/// A word made of digits, or a hex id with digits in it (UUIDs, hashes, `0x…` addresses).
fn is_variable(word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let hex = word.strip_prefix("0x").unwrap_or(word);
    let all_hex = hex.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let has_digit = word.chars().any(|c| c.is_ascii_digit());
    has_digit && (all_hex || word.chars().all(|c| c.is_ascii_digit()))
}

/// `http://host/path?query` for a query that is already scrubbed; credentials before the host
/// are dropped.
pub(crate) fn url_of(host: Option<&str>, path: &str, scrubbed_query: Option<&str>) -> String {
    let host = host.map(|h| h.rsplit('@').next().unwrap_or(h));
    let mut url = String::with_capacity(16 + path.len() + scrubbed_query.map_or(0, str::len));
    url.push_str("http://");
    url.push_str(host.filter(|h| !h.is_empty()).unwrap_or("localhost"));
    url.push_str(path);
    if let Some(query) = scrubbed_query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// A query string with the values of sensitive parameters replaced by `[REDACTED]`.
#[cfg(any(test, feature = "sentry"))]
pub(crate) fn scrub_query(query: &str, redactor: &Redactor) -> String {
    let mut out = String::with_capacity(query.len());
    push_scrubbed_query(&mut out, query, redactor);
    out
}

/// [`scrub_query`], appended to `out`.
pub(crate) fn push_scrubbed_query(
    out: &mut impl std::fmt::Write,
    query: &str,
    redactor: &Redactor,
) {
    // Every writer given here (a `String`, the request scope's text) takes every write.
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            let _ = out.write_char('&');
        }
        let _ = match pair.split_once('=') {
            Some((name, _)) if redactor.is_sensitive(&percent_decode(name)) => out
                .write_str(name)
                .and_then(|()| out.write_char('='))
                .and_then(|()| out.write_str(REDACTED)),
            _ => out.write_str(pair),
        };
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("{s}=").as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

/// Sets the user id of the request the caller is in (the nearest qiflow `request` span): it
/// appears on the request's error reports (`user.id` in Sentry) and as `enduser.id` on its log
/// lines. Returns `false` outside a request, or when qiflow's layers are not installed.
///
/// ```
/// // Outside a request there is nothing to attach it to.
/// assert!(!qiflow_core::capture::set_user_id("u-42"));
/// ```
pub fn set_user_id(id: &str) -> bool {
    layer::set_user_id_in_current(id)
}

/// RFC 3339 timestamps for serde.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    pub(crate) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    /// `2026-11-28T13:04:05.123Z`.
    pub(crate) fn format(t: SystemTime) -> String {
        let mut buf = Vec::with_capacity(24);
        crate::logging::format_timestamp(&mut buf, t);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn types_fingerprints_and_urls() {
        use crate::logging::Redactor;
        assert_eq!(
            type_from_debug("NotFound { path: \"/x\" }").as_deref(),
            Some("NotFound")
        );
        assert_eq!(type_from_debug("\"just text\""), None);
        assert_eq!(
            fingerprint("DbError", "user 42 not found", Some("/users/{id}")),
            fingerprint("DbError", "user 7 not found", Some("/users/{id}")),
        );
        assert_ne!(
            fingerprint("DbError", "user 42 not found", Some("/users/{id}")),
            fingerprint("DbError", "user 42 not found", Some("/orders/{id}")),
        );
        let url = url_of(
            Some("user:pw@api.test"),
            "/search",
            Some(&scrub_query(
                "q=rust&access_token=abc",
                &Redactor::default(),
            )),
        );
        assert_eq!(url, "http://api.test/search?q=rust&access_token=[REDACTED]");
    }

    #[test]
    fn messages_are_normalized_for_fingerprints() {
        assert_eq!(normalize_message("user 42 not found"), "user # not found");
        assert_eq!(
            normalize_message("id 01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f: \"bob\" at 0x7ffd12"),
            "id #: \"…\" at #"
        );
    }
    use super::*;

    #[test]
    fn every_kind_sits_at_its_index_and_has_its_own_label() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
        let labels: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn a_fingerprint_is_16_hex_digits_of_type_message_and_route() {
        // Sentry groups by it and the alert state file keeps it: the format must never change.
        assert_eq!(
            fingerprint("DbError", "user 42 not found", Some("/users/{id}")),
            "0b564e40624935b5"
        );
    }

    #[test]
    fn messages_normalize_their_variable_parts() {
        for (a, b) in [
            ("timeout after 30s", "timeout after 31s"),
            ("user 42 not found", "user 9000 not found"),
            (
                "request 01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f failed",
                "request 01936f1e-0000-7b3e-9d4f-0a1b2c3d4e5f failed",
            ),
            ("no such user \"alice\"", "no such user \"bob smith\""),
        ] {
            assert_eq!(normalize_message(a), normalize_message(b), "{a} / {b}");
        }
        assert_ne!(
            normalize_message("connection refused"),
            normalize_message("connection reset")
        );
        assert_eq!(
            normalize_message("deadbeef"),
            "deadbeef",
            "words stay words"
        );
    }

    #[test]
    fn chains_keep_types_and_messages() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("loading the profile failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        let detail = ErrorDetail::from_error(&e);
        assert_eq!(detail.chain.len(), 2);
        assert!(
            detail.type_name().ends_with("Outer"),
            "{}",
            detail.type_name()
        );
        assert_eq!(detail.chain[1].type_name.as_deref(), Some("Custom"));
        assert_eq!(detail.to_string(), "loading the profile failed: gone");
    }

    #[test]
    fn urls_lose_credentials_and_secret_query_values() {
        let r = Redactor::default();
        let query = scrub_query("next=%2Fhome&password=hunter2&api%5Fkey=k&Token=t", &r);
        let url = url_of(Some("admin:hunter2@shop.test"), "/login", Some(&query));
        assert!(!url.contains("hunter2"), "{url}");
        assert!(!url.contains("=k"), "{url}");
        assert!(!url.contains("=t"), "{url}");
        assert!(
            url.starts_with("http://shop.test/login?next=%2Fhome&"),
            "{url}"
        );
    }
}
