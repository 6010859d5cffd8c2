//! OTLP export of sampled requests as spans (`[tracing] otlp_endpoint`, feature `otlp`).
//!
//! The request path pays for an exported request with one bounded `try_send` of a small record
//! (the request scope is shared, not copied): the span itself, its attributes and the protobuf
//! are built on qiflow's worker, where the `traces` pipeline batches records and hands them to
//! `opentelemetry-otlp`'s exporter over qiflow's own HTTP client. A request whose trace is not
//! sampled sends nothing. A full queue, a failed or a timed-out export drop the spans and count
//! them on `qiflow_dropped_total{pipeline="traces",reason}`, so exported + dropped is every
//! sampled request that finished; the guard's shutdown gives up on a hung collector at its
//! budget.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

use crate::config::Config;
use crate::scope::RequestId;
use crate::worker::{BoxFuture, Sink, SinkError};

mod layer;

pub use layer::TraceLayer;

/// The records the `traces` pipeline queues at most (then it drops, counted).
pub(crate) const QUEUE_CAPACITY: usize = 32_768;
/// The spans one export carries at most.
pub(crate) const BATCH_SIZE: usize = 512;
/// How long the pipeline waits for a batch to fill.
pub(crate) const LINGER: Duration = Duration::from_millis(200);

/// One finished span, as the request path queues it.
pub(crate) enum SpanRecord {
    /// A request observed by the middleware (its `SERVER` span).
    Request {
        request: RequestId,
        start: SystemTime,
        end: SystemTime,
        status: u16,
        panicked: bool,
        /// The client left before the response head was ready.
        disconnected: bool,
    },
    /// A span a handler created inside a sampled request ([`TraceLayer`]).
    Child {
        trace_id: crate::propagation::TraceId,
        span_id: crate::propagation::SpanId,
        parent: crate::propagation::SpanId,
        name: &'static str,
        target: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<(&'static str, String)>,
        dropped: u32,
    },
}

/// Builds the exporter of `[tracing]`; `None` without `otlp_endpoint`.
pub(crate) fn sink(config: &Config) -> Result<Option<TraceSink>, String> {
    let tracing = &config.tracing;
    let Some(endpoint) = tracing.otlp_endpoint.as_deref() else {
        return Ok(None);
    };
    let headers = tracing
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_owned()))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(tracing.timeout)
        .build()
        .map_err(|e| format!("tracing.otlp_endpoint: cannot build the HTTP client: {e}"))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_timeout(tracing.timeout)
        .with_headers(headers)
        .with_http_client(Client(client))
        .build()
        .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
    exporter.set_resource(&resource(config));
    Ok(Some(TraceSink {
        exporter,
        endpoint: endpoint.to_owned(),
        timeout: tracing.timeout,
        scope: InstrumentationScope::builder("qiflow")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }))
}

/// The resource attributes every span carries, from `[service]`.
fn resource(config: &Config) -> opentelemetry_sdk::Resource {
    let service = &config.service;
    let mut attributes = vec![
        KeyValue::new("service.name", service.name.clone()),
        KeyValue::new("deployment.environment.name", service.environment.clone()),
    ];
    if !service.version.is_empty() {
        attributes.push(KeyValue::new("service.version", service.version.clone()));
    }
    if !service.instance.is_empty() {
        attributes.push(KeyValue::new(
            "service.instance.id",
            service.instance.clone(),
        ));
    }
    if let Some(host) = host_name() {
        attributes.push(KeyValue::new("host.name", host));
    }
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

/// The machine's host name (Linux: the kernel's; elsewhere `HOSTNAME`).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
}

/// The `traces` pipeline's sink: records become spans, batches go to the collector.
pub(crate) struct TraceSink {
    exporter: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    timeout: Duration,
    scope: InstrumentationScope,
}

impl TraceSink {
    fn span(&self, record: SpanRecord) -> SpanData {
        match record {
            SpanRecord::Request {
                request,
                start,
                end,
                status,
                panicked,
                disconnected,
            } => {
                let trace = request.trace();
                let context = SpanContext::new(
                    TraceId::from_bytes(trace.trace_id().to_bytes()),
                    SpanId::from_bytes(trace.span_id().to_bytes()),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                );
                let mut attributes = Vec::with_capacity(10);
                attributes.push(KeyValue::new("http.request.method", request.method()));
                attributes.push(KeyValue::new("http.route", request.route().to_owned()));
                attributes.push(KeyValue::new("url.path", request.path().to_owned()));
                if let Some(query) = request.query() {
                    attributes.push(KeyValue::new("url.query", query.to_owned()));
                }
                if let Some(host) = request.host() {
                    attributes.push(KeyValue::new("server.address", host.to_owned()));
                }
                if let Some(agent) = request.user_agent() {
                    attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
                }
                attributes.push(KeyValue::new(
                    "qiflow.request_id",
                    request.as_str().to_owned(),
                ));
                let span_status = if disconnected {
                    attributes.push(KeyValue::new("qiflow.client_disconnected", true));
                    Status::Unset
                } else {
                    attributes.push(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                    if panicked || status >= 500 {
                        attributes.push(KeyValue::new(
                            "error.type",
                            if panicked {
                                "panic".to_owned()
                            } else {
                                status.to_string()
                            },
                        ));
                        Status::error(if panicked {
                            "the handler panicked".to_owned()
                        } else {
                            format!("answered {status}")
                        })
                    } else {
                        Status::Unset
                    }
                };
                let parent = trace.parent_span_id();
                SpanData {
                    span_context: context,
                    parent_span_id: parent
                        .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.to_bytes())),
                    parent_span_is_remote: parent.is_some(),
                    span_kind: SpanKind::Server,
                    name: Cow::Owned(format!("{} {}", request.method(), request.route())),
                    start_time: start,
                    end_time: end,
                    attributes,
                    dropped_attributes_count: 0,
                    events: SpanEvents::default(),
                    links: SpanLinks::default(),
                    status: span_status,
                    instrumentation_scope: self.scope.clone(),
                }
            }
            SpanRecord::Child {
                trace_id,
                span_id,
                parent,
                name,
                target,
                start,
                end,
                attributes,
                dropped,
            } => {
                let mut attributes: Vec<KeyValue> = attributes
                    .into_iter()
                    .map(|(name, value)| KeyValue::new(name, value))
                    .collect();
                attributes.push(KeyValue::new("code.namespace", target));
                SpanData {
                    span_context: SpanContext::new(
                        TraceId::from_bytes(trace_id.to_bytes()),
                        SpanId::from_bytes(span_id.to_bytes()),
                        TraceFlags::SAMPLED,
                        false,
                        TraceState::default(),
                    ),
                    parent_span_id: SpanId::from_bytes(parent.to_bytes()),
                    parent_span_is_remote: false,
                    span_kind: SpanKind::Internal,
                    name: Cow::Borrowed(name),
                    start_time: start,
                    end_time: end,
                    attributes,
                    dropped_attributes_count: dropped,
                    events: SpanEvents::default(),
                    links: SpanLinks::default(),
                    status: Status::Unset,
                    instrumentation_scope: self.scope.clone(),
                }
            }
        }
    }
}

impl Sink<SpanRecord> for TraceSink {
    fn write(&mut self, batch: Vec<SpanRecord>) -> BoxFuture<'_, Result<(), SinkError>> {
        let spans: Vec<SpanData> = batch.into_iter().map(|r| self.span(r)).collect();
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::new(format!(
                    "OTLP export to {} failed: {e}",
                    self.endpoint
                ))),
                Err(_) => Err(SinkError::new(format!(
                    "OTLP export to {} took longer than {:?} (tracing.timeout)",
                    self.endpoint, self.timeout
                ))),
            }
        })
    }
}

/// `opentelemetry-otlp`'s HTTP client trait over qiflow's reqwest client, on qiflow's runtime
/// (the exporter's own clients need a runtime or a thread of their own).
#[derive(Debug)]
struct Client(reqwest::Client);

type Sent<'a> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    opentelemetry_http::Response<opentelemetry_http::Bytes>,
                    opentelemetry_http::HttpError,
                >,
            > + Send
            + 'a,
    >,
>;

impl opentelemetry_http::HttpClient for Client {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Sent<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = self.0.execute(request).await?;
            let mut builder = opentelemetry_http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await?;
            Ok(builder.body(body)?)
        })
    }
}
