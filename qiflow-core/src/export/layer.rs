//! The tracing layer that exports the spans handlers create inside a sampled request
//! (`#[tracing::instrument]`, `info_span!`) as children of the request's span.

use std::time::SystemTime;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::SpanRecord;
use crate::propagation::{SpanId, TraceId};
use crate::scope::{RequestId, is_request_span};
use crate::worker::Pipeline;

/// The most attributes one child span keeps (further ones are counted as dropped on the span).
const MAX_ATTRIBUTES: usize = 32;
/// The most bytes of one attribute value.
const VALUE_CAP: usize = 1024;

/// A tracing [`Layer`](tracing_subscriber::Layer) that exports the spans created inside a
/// sampled request as children of its `request` span (or of the nearest exported span around
/// them), with their fields as attributes. Spans outside a request, and inside a request whose
/// trace is not sampled, cost one look up the span's parents and are not recorded.
///
/// `init` installs it when `[tracing] otlp_endpoint` is set; a host composing its own
/// subscriber adds [`Observer::trace_layer`](crate::Observer::trace_layer).
#[derive(Clone)]
pub struct TraceLayer {
    pipeline: Option<Pipeline<SpanRecord>>,
}

impl std::fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceLayer")
            .field("exporting", &self.pipeline.is_some())
            .finish()
    }
}

impl TraceLayer {
    pub(crate) fn new(pipeline: Option<Pipeline<SpanRecord>>) -> Self {
        Self { pipeline }
    }
}

/// What an exported child span keeps while it is open.
struct Open {
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    start: SystemTime,
    attributes: Vec<(&'static str, String)>,
    dropped: u32,
}

struct Fields<'a> {
    attributes: &'a mut Vec<(&'static str, String)>,
    dropped: &'a mut u32,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if self.attributes.len() >= MAX_ATTRIBUTES {
            *self.dropped += 1;
            return;
        }
        let mut value = value;
        if value.len() > VALUE_CAP {
            let mut end = VALUE_CAP;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        let name = field.name();
        match self.attributes.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((name, value)),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if self.pipeline.is_none() || is_request_span(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // The nearest exported span around this one, or the request's span.
        let mut parent = None;
        let mut request = None;
        for ancestor in span.scope().skip(1) {
            let extensions = ancestor.extensions();
            if parent.is_none()
                && let Some(open) = extensions.get::<Open>()
            {
                parent = Some(open.span_id);
            }
            if is_request_span(ancestor.metadata()) {
                request = extensions.get::<RequestId>().map(RequestId::trace);
                break;
            }
        }
        let Some(trace) = request.filter(|t| t.is_sampled()) else {
            return;
        };
        let mut open = Open {
            trace_id: trace.trace_id(),
            span_id: SpanId::random(),
            parent: parent.unwrap_or(trace.span_id()),
            start: SystemTime::now(),
            attributes: Vec::new(),
            dropped: 0,
        };
        attrs.record(&mut Fields {
            attributes: &mut open.attributes,
            dropped: &mut open.dropped,
        });
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(open) = extensions.get_mut::<Open>() {
            values.record(&mut Fields {
                attributes: &mut open.attributes,
                dropped: &mut open.dropped,
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(pipeline) = &self.pipeline else {
            return;
        };
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let meta = span.metadata();
        let _ = pipeline.submit(SpanRecord::Child {
            trace_id: open.trace_id,
            span_id: open.span_id,
            parent: open.parent,
            name: meta.name(),
            target: meta.target(),
            start: open.start,
            end: SystemTime::now(),
            attributes: open.attributes,
            dropped: open.dropped,
        });
    }
}
