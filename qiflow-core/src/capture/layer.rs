//! The tracing layer of error capture, and the request scope it keeps in the `request` span.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::Capturer;
use super::{
    Breadcrumb, ErrorDetail, ErrorKind, ErrorReport, MAX_BREADCRUMBS, RequestContext, Severity,
};
use crate::logging::{FieldValue, REDACTED, SpanFields};

/// The most bytes of one field value kept in a report's tags or a breadcrumb.
const VALUE_CAP: usize = 1024;

/// A tracing [`Layer`](tracing_subscriber::Layer) that turns events at the capture level
/// (`error` by default, `[errors] event_level`) into [`ErrorReport`]s with the current request's
/// context, and keeps events at `info` and above inside a request as its breadcrumbs.
///
/// `init` installs it; a host that composes its own subscriber adds it beside the log layer
/// (the request context comes from the log layer's span fields):
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let config = qiflow_core::test::quiet_config();
/// let (observer, _guard) = qiflow_core::Observer::builder(config).install_global(false).build()?;
/// let subscriber = tracing_subscriber::registry()
///     .with(observer.log_layer())
///     .with(observer.capture_layer());
/// tracing::subscriber::with_default(subscriber, || tracing::error!(order = 7, "payment failed"));
/// assert!(observer.flush(std::time::Duration::from_secs(5)));
/// assert_eq!(observer.error_store().groups()[0].message, "payment failed");
/// # Ok::<(), qiflow_core::InitError>(())
/// ```
///
/// Events of qiflow's own targets (`qiflow::…`) are neither captured nor kept as breadcrumbs.
#[derive(Clone)]
pub struct CaptureLayer {
    capturer: Arc<Capturer>,
}

impl std::fmt::Debug for CaptureLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureLayer").finish_non_exhaustive()
    }
}

impl CaptureLayer {
    pub(crate) fn new(capturer: Arc<Capturer>) -> Self {
        Self { capturer }
    }
}

/// Breadcrumbs of one request, in its `request` span's extensions.
#[derive(Default)]
struct Breadcrumbs(VecDeque<Breadcrumb>);

/// The user id set for one request.
struct UserId(String);

/// Breadcrumbs outside any request, shared (bounded like a request's).
#[derive(Default)]
pub(crate) struct GlobalBreadcrumbs(Mutex<VecDeque<Breadcrumb>>);

impl GlobalBreadcrumbs {
    fn push(&self, crumb: Breadcrumb) {
        let mut ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == MAX_BREADCRUMBS {
            ring.pop_front();
        }
        ring.push_back(crumb);
    }

    fn snapshot(&self) -> Vec<Breadcrumb> {
        let ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }
}

pub(crate) fn is_request_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.name() == "request" && meta.target() == "qiflow::request"
}

/// What a request span knows: its context (from the log layer's span fields), its user id and
/// its breadcrumbs.
pub(crate) struct RequestScope {
    pub(crate) context: Option<RequestContext>,
    pub(crate) user_id: Option<String>,
    pub(crate) breadcrumbs: Vec<Breadcrumb>,
}

fn scope_of<'a, R: LookupSpan<'a>>(span: &SpanRef<'a, R>) -> RequestScope {
    let extensions = span.extensions();
    let user_id = extensions.get::<UserId>().map(|u| u.0.clone());
    let breadcrumbs = extensions
        .get::<Breadcrumbs>()
        .map(|b| b.0.iter().cloned().collect())
        .unwrap_or_default();
    let context = extensions
        .get::<crate::request::RequestId>()
        .map(|id| id.context(user_id.clone()));
    RequestScope {
        context,
        user_id,
        breadcrumbs,
    }
}

/// The request scope of `span` (a request span or one inside it), through the global
/// [`Registry`]; `None` when qiflow's subscriber is not the one `span` belongs to.
pub(crate) fn request_scope_of_span(span: &tracing::Span) -> Option<RequestScope> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let request = span.scope().find(|s| is_request_span(s.metadata()))?;
        Some(scope_of(&request))
    })
    .flatten()
}

/// Hands the `request` span its request data (from `InFlight::begin`), which qiflow's layers
/// read instead of recording copies of the span's fields.
pub(crate) fn attach_request(span: &tracing::Span, id: &crate::request::RequestId) {
    span.with_subscriber(|(span_id, dispatch)| {
        if let Some(span) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(span_id))
        {
            span.extensions_mut().insert(id.clone());
        }
    });
}

/// The request id of the `request` span the caller is in (the current span or one of its
/// parents), through the global [`Registry`].
pub(crate) fn request_id_of_current() -> Option<crate::request::RequestId> {
    tracing::Span::current()
        .with_subscriber(|(span_id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(span_id)?;
            let request = span.scope().find(|s| is_request_span(s.metadata()))?;
            let id = request
                .extensions()
                .get::<crate::request::RequestId>()?
                .clone();
            Some(id)
        })
        .flatten()
}

/// The request scope of the caller's current span.
pub(crate) fn request_scope_of_current() -> Option<RequestScope> {
    request_scope_of_span(&tracing::Span::current())
}

pub(super) fn set_user_id_in_current(id: &str) -> bool {
    tracing::Span::current()
        .with_subscriber(|(span_id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(span_id)?;
            let request = span.scope().find(|s| is_request_span(s.metadata()))?;
            let mut extensions = request.extensions_mut();
            extensions.replace(UserId(id.to_owned()));
            if extensions.get_mut::<SpanFields>().is_none() {
                extensions.insert(SpanFields::default());
            }
            if let Some(fields) = extensions.get_mut::<SpanFields>() {
                let value = FieldValue::Str(id.to_owned());
                match fields.0.iter_mut().find(|(n, _)| *n == "enduser.id") {
                    Some(slot) => slot.1 = value,
                    None => fields.0.push(("enduser.id", value)),
                }
            }
            Some(())
        })
        .flatten()
        .is_some()
}

/// Collects an event's message and fields (sensitive names redacted, values capped).
struct Fields<'a> {
    capturer: &'a Capturer,
    message: String,
    /// Only a captured event needs its fields; a breadcrumb keeps its message alone.
    keep_fields: bool,
    fields: Vec<(String, String)>,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: impl FnOnce() -> String) {
        let name = field.name();
        if !self.keep_fields || name.starts_with("log.") {
            return;
        }
        let value = if self.capturer.redactor.is_sensitive(name) {
            REDACTED.to_owned()
        } else {
            let mut value = value();
            let (kept, _) = crate::logging::format_cap(&value, VALUE_CAP);
            let kept = kept.len();
            value.truncate(kept);
            value
        };
        self.fields.push((name.to_owned(), value));
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.put(field, || format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.put(field, || value.to_owned());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, || ErrorDetail::from_dyn(value).to_string());
    }
}

impl<S> tracing_subscriber::Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > Level::INFO || meta.target().starts_with("qiflow") {
            return;
        }
        let capturer = &*self.capturer;
        let capture = level <= capturer.event_level;
        let request = ctx
            .event_scope(event)
            .and_then(|mut scope| scope.find(|s| is_request_span(s.metadata())));
        let mut fields = Fields {
            capturer,
            message: String::new(),
            keep_fields: capture,
            fields: Vec::new(),
        };
        event.record(&mut fields);
        let mut message = fields.message;
        let (kept, _) = crate::logging::format_cap(&message, VALUE_CAP);
        let kept = kept.len();
        message.truncate(kept);
        if capture {
            let scope = request.as_ref().map(scope_of);
            let mut report = ErrorReport::new(
                ErrorKind::Event,
                Severity::Error,
                ErrorDetail::message(None, message.clone()),
            );
            report
                .tags
                .insert("logger".into(), meta.target().to_owned());
            for (name, value) in fields.fields {
                report.tags.insert(name, value);
            }
            match scope {
                Some(scope) => {
                    report.request = scope.context;
                    report.breadcrumbs = scope.breadcrumbs;
                }
                None => report.breadcrumbs = capturer.global_breadcrumbs.snapshot(),
            }
            capturer.capture(report);
        }
        let crumb = Breadcrumb {
            timestamp: SystemTime::now(),
            level: level.as_str(),
            target: meta.target(),
            message,
        };
        match request {
            Some(span) => {
                let mut extensions = span.extensions_mut();
                if extensions.get_mut::<Breadcrumbs>().is_none() {
                    extensions.insert(Breadcrumbs::default());
                }
                if let Some(crumbs) = extensions.get_mut::<Breadcrumbs>() {
                    if crumbs.0.len() == MAX_BREADCRUMBS {
                        crumbs.0.pop_front();
                    }
                    crumbs.0.push_back(crumb);
                }
            }
            None => capturer.global_breadcrumbs.push(crumb),
        }
    }
}
