//! The tracing layer of error capture, and the request scope it keeps in the `request` span.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::Capturer;
use super::{
    Breadcrumb, ErrorDetail, ErrorKind, ErrorReport, MAX_BREADCRUMBS, RequestContext, Severity,
};
use crate::logging::REDACTED;
use crate::scope::{Crumb, RequestId, is_request_span};

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

/// The breadcrumbs of a request, oldest first.
pub(crate) fn breadcrumbs_of(request: &RequestId) -> Vec<Breadcrumb> {
    request
        .crumbs()
        .into_iter()
        .map(|c| Breadcrumb {
            timestamp: c.timestamp,
            level: c.level,
            target: c.target,
            message: c.message,
        })
        .collect()
}

/// Puts the context and breadcrumbs of the request the caller is in (if any) on `report`.
pub(crate) fn in_current_request(report: &mut ErrorReport) {
    if let Some(request) = crate::scope::current() {
        report.request = Some(RequestContext::of(&request));
        report.breadcrumbs = breadcrumbs_of(&request);
    }
}

pub(super) fn set_user_id_in_current(id: &str) -> bool {
    match crate::scope::current() {
        Some(request) => {
            request.set_user_id(id);
            true
        }
        None => false,
    }
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
        let request = ctx.event_scope(event).and_then(|scope| {
            scope
                .filter(|s| is_request_span(s.metadata()))
                .find_map(|s| s.extensions().get::<RequestId>().cloned())
        });
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
            match &request {
                Some(request) => {
                    report.request = Some(RequestContext::of(request));
                    report.breadcrumbs = breadcrumbs_of(request);
                }
                None => report.breadcrumbs = capturer.global_breadcrumbs.snapshot(),
            }
            capturer.capture(report);
        }
        let timestamp = SystemTime::now();
        match request {
            Some(request) => request.push_crumb(Crumb {
                timestamp,
                level: level.as_str(),
                target: meta.target(),
                message,
            }),
            None => capturer.global_breadcrumbs.push(Breadcrumb {
                timestamp,
                level: level.as_str(),
                target: meta.target(),
                message,
            }),
        }
    }
}
