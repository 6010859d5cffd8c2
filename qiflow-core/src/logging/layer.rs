//! The tracing [`Layer`] that turns events into lines and queues them for the writer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::Redactor;
use super::format::{self, ByteWriter, FieldValue};
use super::pool::LinePool;
use crate::clock::Clock;
use crate::config::LogFormat;
use crate::worker::Pipeline;

/// A tracing [`Layer`](tracing_subscriber::Layer) that writes every event as one line (JSON or
/// pretty) to qiflow's log pipeline: stdout and/or the rotating file, on the background worker.
///
/// `init` installs it with the `[logging] level` filter. Hosts that compose their own subscriber
/// get it from [`Observer::log_layer`](crate::Observer::log_layer) and add it to theirs:
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut config = qiflow_core::test::quiet_config(); // no files, no stdout…
/// config.logging.dir = dir.path().join("logs"); // …but the log file
/// let (observer, guard) = qiflow_core::Observer::builder(config)
///     .install_global(false)
///     .build()
///     .unwrap();
/// let subscriber = tracing_subscriber::registry().with(observer.log_layer());
/// tracing::subscriber::with_default(subscriber, || tracing::info!(user = "ada", "signed in"));
/// drop(guard); // flushes the log pipeline
/// let log = std::fs::read_to_string(dir.path().join("logs/app.log")).unwrap();
/// assert!(log.contains(r#""message":"signed in","user":"ada""#), "{log}");
/// ```
///
/// Fields whose names the [`Redactor`] marks sensitive are written as `[REDACTED]` and never
/// formatted; string values are capped at [`FIELD_CAP`](super::FIELD_CAP) bytes.
#[derive(Clone)]
pub struct LogLayer {
    inner: Arc<Inner>,
}

struct Inner {
    format: LogFormat,
    redactor: Redactor,
    pipeline: Pipeline<Vec<u8>>,
    clock: Arc<dyn Clock>,
    pool: Arc<LinePool>,
    /// `,"instance":"…"`, written after `target` on every JSON line (empty: no field).
    instance: Box<[u8]>,
}

impl std::fmt::Debug for LogLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLayer")
            .field("format", &self.inner.format)
            .finish_non_exhaustive()
    }
}

impl LogLayer {
    pub(crate) fn new(
        format: LogFormat,
        redactor: Redactor,
        pipeline: Pipeline<Vec<u8>>,
        clock: Arc<dyn Clock>,
        pool: Arc<LinePool>,
        instance: &str,
    ) -> Self {
        let mut field = Vec::new();
        if !instance.is_empty() {
            field.extend_from_slice(b",\"instance\":");
            format::json_str(&mut field, instance);
        }
        Self {
            inner: Arc::new(Inner {
                format,
                redactor,
                pipeline,
                clock,
                pool,
                instance: field.into_boxed_slice(),
            }),
        }
    }
}

/// Fields recorded on a span, kept in its extensions (error capture reads a request's context
/// from them).
#[derive(Default)]
pub(crate) struct SpanFields(pub(crate) Vec<(&'static str, FieldValue)>);

struct Collector<'a> {
    redactor: &'a Redactor,
    fields: &'a mut Vec<(&'static str, FieldValue)>,
    message: Option<&'a mut String>,
}

impl Collector<'_> {
    fn put(&mut self, field: &Field, value: impl FnOnce() -> FieldValue) {
        let name = field.name();
        if name.starts_with("log.") {
            return; // Normalized `log` crate metadata.
        }
        let value = if self.redactor.is_sensitive_static(name) {
            FieldValue::Redacted
        } else {
            value()
        };
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
    }
}

impl Visit for Collector<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            let _ = write!(message, "{value:?}");
            return;
        }
        self.put(field, || {
            let mut s = String::new();
            let _ = write!(s, "{value:?}");
            FieldValue::Str(format::cap_string(s))
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            message.push_str(value);
            return;
        }
        self.put(field, || {
            let (kept, cut) = format::cap(value, format::FIELD_CAP);
            let mut s = kept.to_owned();
            if cut > 0 {
                s.push_str(&format::cut_marker(cut));
            }
            FieldValue::Str(s)
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, || {
            let mut s = value.to_string();
            let mut source = value.source();
            while let Some(e) = source {
                let _ = write!(s, ": {e}");
                source = e.source();
            }
            FieldValue::Str(format::cap_string(s))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, || FieldValue::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, || FieldValue::U64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, || FieldValue::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, || FieldValue::Bool(value));
    }
}

/// How the fields of one callsite's events are written as JSON, decided once per callsite (and
/// redactor) instead of once per field of every event: each field's key, already escaped, and
/// whether its value is written, redacted or skipped.
struct Plan {
    /// By field index.
    fields: Vec<PlannedField>,
}

struct PlannedField {
    name: &'static str,
    kind: FieldKind,
    /// `,"name":` (or `,"fields.name":` for a reserved name), escaped.
    key: Box<[u8]>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    /// The event's message (the first `message` field).
    Message,
    /// Written with its value.
    Value,
    /// Written as `[REDACTED]`.
    Redacted,
    /// Not written: `log` crate metadata, or a name repeated in the callsite (the first wins).
    Skip,
}

impl Plan {
    fn new(meta: &'static tracing::Metadata<'static>, redactor: &Redactor) -> Self {
        let mut seen: Vec<&'static str> = Vec::new();
        let fields = meta
            .fields()
            .iter()
            .map(|field| {
                let name = field.name();
                let kind = if seen.contains(&name) || name.starts_with("log.") {
                    FieldKind::Skip
                } else if name == "message" {
                    FieldKind::Message
                } else if redactor.is_sensitive(name) {
                    FieldKind::Redacted
                } else {
                    FieldKind::Value
                };
                seen.push(name);
                let mut key = vec![b','];
                if RESERVED.contains(&name) && kind != FieldKind::Message {
                    key.extend_from_slice(b"\"fields.");
                    format::json_escape(&mut key, name);
                    key.push(b'"');
                } else {
                    format::json_str(&mut key, name);
                }
                key.push(b':');
                PlannedField {
                    name,
                    kind,
                    key: key.into_boxed_slice(),
                }
            })
            .collect();
        Self { fields }
    }

    /// The names of the fields written (`written`: by index), so span fields do not repeat them.
    fn names(&self, written: u64) -> smallvec::SmallVec<[&'static str; 16]> {
        self.fields
            .iter()
            .enumerate()
            .filter(|(i, f)| f.kind != FieldKind::Message && written & (1 << (i % 64)) != 0)
            .map(|(_, f)| f.name)
            .collect()
    }

    /// The plan for `meta`'s events under `redactor`, from a per-thread cache.
    fn of(meta: &'static tracing::Metadata<'static>, redactor: &Redactor) -> Rc<Self> {
        type Plans = HashMap<(usize, usize), Rc<Plan>, foldhash::fast::FixedState>;
        thread_local! {
            static PLANS: RefCell<Plans> = RefCell::new(Plans::default());
        }
        let key = (redactor.id(), std::ptr::from_ref(meta) as usize);
        PLANS.with(|plans| {
            let Ok(mut plans) = plans.try_borrow_mut() else {
                return Rc::new(Self::new(meta, redactor));
            };
            if let Some(plan) = plans.get(&key) {
                return plan.clone();
            }
            if plans.len() >= PLAN_CACHE_CAP {
                plans.clear();
            }
            let plan = Rc::new(Self::new(meta, redactor));
            plans.insert(key, plan.clone());
            plan
        })
    }
}

/// The most callsite plans one thread caches; past it the cache starts over (a program has a
/// bounded number of callsites, but a bound costs nothing).
const PLAN_CACHE_CAP: usize = 4096;

/// Writes an event's fields straight into a JSON line, with no intermediate values: the
/// request path's access line is built in one buffer, following the
/// callsite's [`Plan`].
struct JsonEvent<'a> {
    plan: &'a Plan,
    line: &'a mut Vec<u8>,
    /// The fields written, by index (a callsite has at most 32).
    written: u64,
    has_message: bool,
}

impl JsonEvent<'_> {
    /// Writes the key of `field`; `true` when its value is to be written next.
    fn key(&mut self, field: &Field) -> bool {
        let index = field.index();
        let Some(planned) = self.plan.fields.get(index) else {
            return false;
        };
        match planned.kind {
            FieldKind::Skip => false,
            FieldKind::Message if self.has_message => false,
            FieldKind::Message => {
                self.has_message = true;
                self.line.extend_from_slice(&planned.key);
                true
            }
            FieldKind::Value => {
                self.written |= 1 << (index % 64);
                self.line.extend_from_slice(&planned.key);
                true
            }
            FieldKind::Redacted => {
                self.written |= 1 << (index % 64);
                self.line.extend_from_slice(&planned.key);
                format::json_str(self.line, super::REDACTED);
                false
            }
        }
    }

    fn debug(&mut self, value: &dyn std::fmt::Debug) {
        self.line.push(b'"');
        let mut w = format::JsonCapped::new(self.line);
        let _ = write!(w, "{value:?}");
        w.finish();
        self.line.push(b'"');
    }
}

impl Visit for JsonEvent<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.key(field) {
            self.debug(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.line.push(b'"');
            let mut w = format::JsonCapped::new(self.line);
            let _ = w.write_str(value);
            w.finish();
            self.line.push(b'"');
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.line.push(b'"');
            let mut w = format::JsonCapped::new(self.line);
            let _ = write!(w, "{value}");
            let mut source = value.source();
            while let Some(e) = source {
                let _ = write!(w, ": {e}");
                source = e.source();
            }
            w.finish();
            self.line.push(b'"');
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            format::json_value(self.line, &FieldValue::I64(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            format::json_value(self.line, &FieldValue::U64(value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            format::json_value(self.line, &FieldValue::F64(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            format::json_value(self.line, &FieldValue::Bool(value));
        }
    }
}

const RESERVED: &[&str] = &["timestamp", "level", "target", "instance", "message"];

impl<S> tracing_subscriber::Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if crate::scope::is_request_span(attrs.metadata()) {
            // `InFlight::begin` attaches the request's data to it: nothing to copy.
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut Collector {
            redactor: &self.inner.redactor,
            fields: &mut fields.0,
            message: None,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if extensions.get_mut::<SpanFields>().is_none()
            && crate::scope::is_request_span(span.metadata())
        {
            // A field the host records later into the `request` span (the user id comes from the
            // request scope).
            extensions.insert(SpanFields::default());
        }
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collector {
                redactor: &self.inner.redactor,
                fields: &mut fields.0,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let now = self.inner.clock.now();
        let mut line = self.inner.pool.take();
        if !matches!(self.inner.format, LogFormat::Pretty) {
            line.extend_from_slice(b"{\"timestamp\":\"");
            format::timestamp(&mut line, now);
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(meta.level().as_str().as_bytes());
            line.extend_from_slice(b"\",\"target\":");
            format::json_str(&mut line, meta.target());
            line.extend_from_slice(&self.inner.instance);
            let plan = Plan::of(event.metadata(), &self.inner.redactor);
            let mut visitor = JsonEvent {
                plan: &plan,
                line: &mut line,
                written: 0,
                has_message: false,
            };
            event.record(&mut visitor);
            let (has_message, written) = (visitor.has_message, visitor.written);
            if !has_message {
                line.extend_from_slice(b",\"message\":\"\"");
            }
            // Span fields, innermost first; an inner span or the event wins over an outer one.
            if let Some(scope) = ctx.event_scope(event) {
                let mut names = plan.names(written);
                for span in scope {
                    let extensions = span.extensions();
                    if let Some(request) = extensions.get::<crate::scope::RequestId>() {
                        let mut field = |name: &'static str, value: &str| {
                            if names.contains(&name) {
                                return;
                            }
                            names.push(name);
                            line.push(b',');
                            format::json_str(&mut line, name);
                            line.push(b':');
                            if self.inner.redactor.is_sensitive_static(name) {
                                format::json_str(&mut line, super::REDACTED);
                            } else {
                                line.push(b'"');
                                let mut w = format::JsonCapped::new(&mut line);
                                let _ = w.write_str(value);
                                w.finish();
                                line.push(b'"');
                            }
                        };
                        for (name, value) in request.span_fields() {
                            field(name, value);
                        }
                        request.with_user_id(|user| {
                            if let Some(user) = user {
                                field("enduser.id", user);
                            }
                        });
                    }
                    let Some(span_fields) = extensions.get::<SpanFields>() else {
                        continue;
                    };
                    for (name, value) in &span_fields.0 {
                        if *name == "message" || names.contains(name) {
                            continue;
                        }
                        names.push(name);
                        line.push(b',');
                        if RESERVED.contains(name) {
                            format::json_str(&mut line, &format!("fields.{name}"));
                        } else {
                            format::json_str(&mut line, name);
                        }
                        line.push(b':');
                        format::json_value(&mut line, value);
                    }
                }
            }
            line.push(b'}');
        } else {
            let mut message = String::new();
            let mut fields = Vec::new();
            event.record(&mut Collector {
                redactor: &self.inner.redactor,
                fields: &mut fields,
                message: Some(&mut message),
            });
            let message = format::cap_string(message);
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    let extensions = span.extensions();
                    if let Some(request) = extensions.get::<crate::scope::RequestId>() {
                        let user = request.user_id();
                        let user = user.as_deref().map(|u| ("enduser.id", u));
                        for (name, value) in request.span_fields().chain(user) {
                            if !fields.iter().any(|(n, _)| *n == name) {
                                let value = if self.inner.redactor.is_sensitive_static(name) {
                                    FieldValue::Redacted
                                } else {
                                    FieldValue::Str(format::cap_string(value.to_owned()))
                                };
                                fields.push((name, value));
                            }
                        }
                    }
                    if let Some(span_fields) = extensions.get::<SpanFields>() {
                        for (name, value) in &span_fields.0 {
                            if !fields.iter().any(|(n, _)| n == name) {
                                fields.push((name, value.clone()));
                            }
                        }
                    }
                }
            }
            format::timestamp(&mut line, now);
            let _ = write!(ByteWriter(&mut line), " {:>5} ", meta.level().as_str());
            format::text_str(&mut line, meta.target(), false);
            line.extend_from_slice(b": ");
            format::text_str(&mut line, &message, false);
            for (name, value) in &fields {
                line.push(b' ');
                line.extend_from_slice(name.as_bytes());
                line.push(b'=');
                format::text_value(&mut line, value);
            }
        }
        line.push(b'\n');
        // Counted on overflow; the writer reports drops in the log itself.
        let _ = self.inner.pipeline.submit(line);
    }
}
