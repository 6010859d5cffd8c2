//! Forwarding reports to Sentry: the `sentry` client builds and filters the event, qiflow's own
//! transport delivers it with timeouts, backoff and exact accounting.

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sentry::protocol::{self, Envelope, Event, Exception, Mechanism, Values};
use sentry::types::Dsn;

use super::{ErrorKind, ErrorReport, Reporter, Severity, scrub_query};
use crate::logging::{REDACTED, Redactor};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::worker::{BoxFuture, Overflow, Pipeline, PipelineOptions, Sink, SinkError};

/// The longest one HTTP attempt may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest qiflow honours a `Retry-After` (or `X-Sentry-Rate-Limits`) for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A bare 429 (no usable header) backs off this long, as Sentry's SDKs do.
pub const DEFAULT_RATE_LIMIT: Duration = Duration::from_secs(60);

/// How one report is retried: a refused connection or a 5xx is tried again once, after 200 ms.
/// A timeout is not retried (the attempt already took [`ATTEMPT_TIMEOUT`]).
const RETRY: Backoff = Backoff::constant(Duration::from_millis(200)).with_max_retries(1);

/// How long sending pauses after a report's last attempt failed, by the number of reports that
/// failed in a row: 1 s doubling to 60 s, without jitter (one transport per process); a success
/// starts the count again.
const PAUSE: Backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));

/// Forwards reports to Sentry (`[errors] sentry_dsn`).
///
/// Built on the `sentry` crate's [`Client`](sentry::Client) for what it does well (event
/// processing, `sample_rate`, `before_send`, envelopes, the DSN's auth header) with qiflow's own
/// transport in place of sentry's, which cannot bound shutdown, has no request timeout, and loses
/// events silently:
///
/// - every attempt is bounded by [`ATTEMPT_TIMEOUT`]; a connection failure or a 5xx is retried
///   once after 200 ms, then the report is dropped (`reason="sink_error"`) and sending pauses
///   for a backoff that doubles from 1 s to 60 s while the endpoint keeps failing, so a dead
///   endpoint costs no more than a queue of dropped reports;
/// - a 429 pauses sending for its `Retry-After` (seconds or an HTTP date) or the `error`
///   category of `X-Sentry-Rate-Limits`, capped at [`MAX_BACKOFF`], else [`DEFAULT_RATE_LIMIT`];
///   reports arriving meanwhile are dropped with `reason="rate_limited"`;
/// - other 4xx (413 too large, 400 invalid) are not retried;
/// - `send_default_pii` is off; `before_send` applies qiflow's [`Redactor`] to the request's
///   headers and query and to the event's extra data, whatever put them there;
/// - a malformed DSN is an error naming `errors.sentry_dsn` (sentry's own init panics on one).
///
/// Each outcome is counted on `qiflow_errors_forwarded_total{reporter="sentry",outcome}`
/// (`sent`, `sampled_out`, `rate_limited`, `failed`).
///
/// Built with qiflow-core's `sentry` feature (on by default).
pub struct SentryReporter {
    client: sentry::Client,
    slot: Arc<EnvelopeSlot>,
    http: reqwest::Client,
    url: String,
    auth: String,
    timeout: Duration,
    state: Mutex<State>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for SentryReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentryReporter")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// No request before this (429).
    rate_limited_until: Option<Instant>,
    /// No request before this (the endpoint failed).
    failing_until: Option<Instant>,
    /// Reports whose last attempt failed in a row: the step of [`PAUSE`].
    failures: u32,
}

/// The transport handed to the sentry client: it keeps the envelope for the reporter to send.
#[derive(Default)]
struct EnvelopeSlot(Mutex<Vec<Envelope>>);

impl sentry::Transport for EnvelopeSlot {
    fn send_envelope(&self, envelope: Envelope) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(envelope);
    }
}

/// The name of the pipeline that carries what the application sends through sentry's hub
/// (`sentry::capture_message`, `sentry-tracing`, …) to the reporter's transport: its drops are
/// `qiflow_dropped_total{pipeline="sentry"}`.
pub(crate) const HUB_PIPELINE: &str = "sentry";

/// The transport of the client bound to sentry's hub: it offers each envelope to the
/// [`HUB_PIPELINE`] queue and returns at once (a full queue drops and counts it).
struct HubTransport(Pipeline<Envelope>);

impl sentry::Transport for HubTransport {
    fn send_envelope(&self, envelope: Envelope) {
        // Counted by the pipeline when it cannot take the envelope.
        let _ = self.0.submit(envelope);
    }
}

/// Delivers the hub client's envelopes with the reporter's transport (its timeouts, backoff,
/// rate limits and `qiflow_errors_forwarded_total` counts), on qiflow's worker.
pub(crate) struct EnvelopeSink(Arc<SentryReporter>);

impl Sink<Envelope> for EnvelopeSink {
    fn write(&mut self, batch: Vec<Envelope>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let total = batch.len() as u64;
            for (i, envelope) in batch.iter().enumerate() {
                match self.0.deliver(envelope).await {
                    Ok(()) => self.0.count(&Outcome::Sent),
                    Err((outcome, error)) => {
                        self.0.count(&outcome);
                        // This envelope and those after it are not delivered.
                        return Err(error.partial(total - i as u64));
                    }
                }
            }
            Ok(())
        })
    }
}

/// A `sentry` client for sentry's hub (`sentry::Hub::main().bind_client(…)`): the reporter's
/// options (DSN, environment, release, `sample_rate`, qiflow's redaction in `before_send`), with
/// a transport that queues each envelope on a bounded pipeline ([`HUB_PIPELINE`], added with
/// `add`) delivered by `reporter`'s transport. So `sentry::capture_message` and `sentry-tracing`
/// in the application never block, and every envelope is counted: sent, failed, rate-limited or
/// dropped.
pub(crate) fn hub_client(
    reporter: &Arc<SentryReporter>,
    add: impl FnOnce(PipelineOptions, EnvelopeSink) -> Pipeline<Envelope>,
) -> sentry::Client {
    let pipeline = add(
        PipelineOptions::new(HUB_PIPELINE)
            .capacity(super::QUEUE_CAPACITY)
            .overflow(Overflow::Drop)
            .batch_size(1)
            // A failed send must not become a log line that could be sent again.
            .report_errors(false),
        EnvelopeSink(reporter.clone()),
    );
    let mut options = reporter.client.options().clone();
    options.transport = Some(Arc::new(Arc::new(HubTransport(pipeline))));
    sentry::Client::with_options(options)
}

/// Settings of a [`SentryReporter`] besides the DSN.
///
/// Built with qiflow-core's `sentry` feature (on by default).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SentryOptions {
    /// `[service] environment`.
    pub environment: String,
    /// `[service] version`.
    pub release: String,
    /// `[errors] sample_rate`.
    pub sample_rate: f32,
    /// Names whose values are redacted (`[logging] redact` plus the built-ins).
    pub redactor: Redactor,
    /// One attempt's timeout. Defaults to [`ATTEMPT_TIMEOUT`].
    pub timeout: Duration,
    /// The event's `server_name`: `[service] instance`, so Sentry tells which instance of the
    /// service reported. Defaults to unset (Sentry shows none).
    pub server_name: Option<String>,
}

impl SentryOptions {
    /// Options for an environment and a release, forwarding everything.
    pub fn new(environment: impl Into<String>, release: impl Into<String>) -> Self {
        Self {
            environment: environment.into(),
            release: release.into(),
            sample_rate: 1.0,
            redactor: Redactor::default(),
            timeout: ATTEMPT_TIMEOUT,
            server_name: None,
        }
    }
}

enum Outcome {
    Sent,
    SampledOut,
    RateLimited,
    Failed,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::SampledOut => "sampled_out",
            Self::RateLimited => "rate_limited",
            Self::Failed => "failed",
        }
    }
}

impl SentryReporter {
    /// A reporter for `dsn`; the error names `errors.sentry_dsn` and says what a DSN looks like.
    pub fn new(dsn: &str, options: SentryOptions) -> Result<Self, String> {
        let parsed = Dsn::from_str(dsn).map_err(|e| {
            format!(
                "errors.sentry_dsn: not a valid Sentry DSN ({e}); it looks like https://<key>@<host>/<project>"
            )
        })?;
        let slot = Arc::new(EnvelopeSlot::default());
        let redactor = options.redactor.clone();
        let mut client_options = sentry::ClientOptions::default();
        client_options.dsn = Some(parsed.clone());
        client_options.environment = Some(options.environment.clone().into());
        client_options.release = Some(options.release.clone().into());
        client_options.server_name = options.server_name.clone().map(Into::into);
        client_options.event_sampling_strategy =
            sentry::EventSamplingStrategy::FixedRate(options.sample_rate);
        client_options.send_default_pii = false;
        client_options.default_integrations = false;
        client_options.transport = Some(Arc::new(slot.clone()));
        client_options.before_send =
            Some(Arc::new(move |event| Some(scrub_event(event, &redactor))));
        let client = sentry::Client::with_options(client_options);
        let user_agent = format!("qiflow/{}", env!("CARGO_PKG_VERSION"));
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(user_agent.clone())
            .build()
            .map_err(|e| format!("errors.sentry_dsn: cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            slot,
            http,
            url: parsed.envelope_api_url().to_string(),
            auth: parsed.to_auth(Some(&user_agent)).to_string(),
            timeout: options.timeout,
            state: Mutex::new(State::default()),
            metrics: None,
        })
    }

    /// Counts outcomes on `metrics` (`init` does this).
    #[must_use]
    pub(crate) fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, outcome: &Outcome) {
        if let Some(metrics) = &self.metrics {
            metrics
                .counter(
                    "qiflow_errors_forwarded_total",
                    vec![
                        metrics::Label::new("reporter", "sentry"),
                        metrics::Label::new("outcome", outcome.label()),
                    ],
                )
                .increment(1);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the envelope through the sentry client (sampling, `before_send`); `None` when it
    /// was sampled out.
    fn envelope(&self, report: &ErrorReport) -> Option<Envelope> {
        self.client.capture_event(to_event(report), None);
        let mut slot = self.slot.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.pop()
    }

    async fn deliver(&self, envelope: &Envelope) -> Result<(), (Outcome, SinkError)> {
        let now = Instant::now();
        {
            let state = self.state();
            if let Some(until) = state.rate_limited_until
                && now < until
            {
                return Err((
                    Outcome::RateLimited,
                    SinkError::new(format!(
                        "Sentry asked to back off for {:.0} s more",
                        (until - now).as_secs_f64()
                    ))
                    .rate_limited(),
                ));
            }
            if let Some(until) = state.failing_until
                && now < until
            {
                return Err((
                    Outcome::Failed,
                    SinkError::new(format!(
                        "Sentry is failing; next attempt in {:.1} s",
                        (until - now).as_secs_f64()
                    )),
                ));
            }
        }
        let mut body = Vec::new();
        if let Err(e) = envelope.to_writer(&mut body) {
            return Err((
                Outcome::Failed,
                SinkError::with_source("cannot serialize the Sentry envelope", e),
            ));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(&self.url)
                .header("X-Sentry-Auth", &self.auth)
                .header("Content-Type", "application/x-sentry-envelope")
                .body(body.clone())
                .send()
                .await;
            let retryable = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        let mut state = self.state();
                        state.failing_until = None;
                        state.failures = 0;
                        return Ok(());
                    }
                    if status == 429 {
                        let wait = rate_limit_wait(response.headers());
                        self.state().rate_limited_until = Some(Instant::now() + wait);
                        return Err((
                            Outcome::RateLimited,
                            SinkError::new(format!(
                                "Sentry answered 429; backing off for {} s",
                                wait.as_secs()
                            ))
                            .rate_limited(),
                        ));
                    }
                    let error = SinkError::new(format!("Sentry answered HTTP {status}"));
                    if status < 500 {
                        return Err((Outcome::Failed, error));
                    }
                    error
                }
                Err(e) if e.is_timeout() => {
                    self.back_off();
                    return Err((
                        Outcome::Failed,
                        SinkError::new(format!("Sentry did not answer within {:?}", self.timeout)),
                    ));
                }
                // Without the URL: the message names the endpoint, never the DSN.
                Err(e) => SinkError::with_source("cannot reach Sentry", e.without_url()),
            };
            let Some(wait) = RETRY.delay(attempt, now.elapsed()) else {
                self.back_off();
                return Err((Outcome::Failed, retryable));
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Pauses sending after a report failed, for [`PAUSE`]'s next step.
    fn back_off(&self) {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        state.failing_until = Some(Instant::now() + PAUSE.pause(state.failures));
    }
}

impl Reporter for SentryReporter {
    fn name(&self) -> &'static str {
        "sentry"
    }

    fn report<'a>(&'a self, report: &'a ErrorReport) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let Some(envelope) = self.envelope(report) else {
                self.count(&Outcome::SampledOut);
                return Ok(());
            };
            match self.deliver(&envelope).await {
                Ok(()) => {
                    self.count(&Outcome::Sent);
                    Ok(())
                }
                Err((outcome, error)) => {
                    self.count(&outcome);
                    Err(error)
                }
            }
        })
    }
}

/// How long a 429 asks to wait: the `error` category (or all categories) of
/// `X-Sentry-Rate-Limits`, else `Retry-After` in seconds or as an HTTP date, else 60 s; capped at
/// [`MAX_BACKOFF`].
pub(crate) fn rate_limit_wait(headers: &reqwest::header::HeaderMap) -> Duration {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_sentry = text("x-sentry-rate-limits").and_then(|header| {
        header
            .split(',')
            .filter_map(|group| {
                let mut parts = group.trim().split(':');
                let seconds = parts.next()?.trim().parse::<f64>().ok()?;
                let categories = parts.next().unwrap_or("");
                let applies = categories.is_empty() || categories.split(';').any(|c| c == "error");
                applies.then_some(seconds)
            })
            .reduce(f64::max)
    });
    let from_retry_after = || {
        text("retry-after")
            .and_then(crate::retry_after::parse)
            .map(|d| d.as_secs_f64())
    };
    match from_sentry.or_else(from_retry_after) {
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::from_secs_f64(seconds.min(MAX_BACKOFF.as_secs_f64()).ceil())
        }
        Some(_) => MAX_BACKOFF,
        None => DEFAULT_RATE_LIMIT,
    }
}

fn level(severity: Severity) -> protocol::Level {
    match severity {
        Severity::Warning => protocol::Level::Warning,
        Severity::Error => protocol::Level::Error,
        Severity::Fatal => protocol::Level::Fatal,
    }
}

/// The Sentry event of a report.
pub(crate) fn to_event(report: &ErrorReport) -> Event<'static> {
    let mut event = Event {
        level: level(report.severity),
        timestamp: report.timestamp,
        fingerprint: vec![report.fingerprint.clone().into()].into(),
        release: Some(report.release.clone().into()),
        environment: Some(report.environment.clone().into()),
        ..Default::default()
    };
    if report.kind == ErrorKind::Event {
        event.message = Some(report.detail.top_message().to_owned());
        event.logger = report.tags.get("logger").cloned();
    } else {
        // Sentry lists the chain innermost first, the outermost error last.
        let links = report.detail.chain.iter().rev();
        let count = report.detail.chain.len();
        event.exception = Values {
            values: links
                .enumerate()
                .map(|(i, link)| Exception {
                    ty: link.type_name.clone().unwrap_or_else(|| "Error".into()),
                    value: Some(link.message.clone()),
                    mechanism: (i + 1 == count).then(|| Mechanism {
                        ty: report.kind.as_str().into(),
                        handled: Some(report.kind != ErrorKind::Panic),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        };
        if let Some(trace) = &report.stacktrace
            && let Some(outermost) = event.exception.values.last_mut()
        {
            outermost.stacktrace = Some(to_stacktrace(trace));
            // Native frames: Sentry resolves the addresses again from uploaded debug files,
            // found by the images' build ids, and keeps the names sent when it has none.
            event.platform = "native".into();
            event.debug_meta = std::borrow::Cow::Owned(protocol::DebugMeta {
                images: sentry::integrations::debug_images::debug_images(),
                ..Default::default()
            });
        }
    }
    event
        .tags
        .insert("kind".into(), report.kind.as_str().into());
    if let Some(status) = report.status {
        event.tags.insert("status".into(), status.to_string());
    }
    for (key, value) in &report.tags {
        event.extra.insert(key.clone(), value.clone().into());
    }
    if let Some(request) = &report.request {
        event
            .tags
            .insert("request_id".into(), request.request_id.clone());
        event.tags.insert("route".into(), request.route.clone());
        event.transaction = Some(format!("{} {}", request.method, request.route));
        let url = url::Url::parse(&request.url).ok();
        event.request = Some(protocol::Request {
            query_string: url.as_ref().and_then(|u| u.query()).map(str::to_owned),
            url,
            method: Some(request.method.clone()),
            ..Default::default()
        });
        // Sentry links the error to its trace through the trace context.
        if let (Some(trace_id), Some(span_id)) = (
            request.trace_id.as_deref().and_then(|t| t.parse().ok()),
            request.span_id.as_deref().and_then(|s| s.parse().ok()),
        ) {
            event.contexts.insert(
                "trace".into(),
                protocol::Context::Trace(Box::new(protocol::TraceContext {
                    trace_id,
                    span_id,
                    ..Default::default()
                })),
            );
        }
        if let Some(id) = &request.user_id {
            event.user = Some(protocol::User {
                id: Some(id.clone()),
                ..Default::default()
            });
        }
    }
    event.breadcrumbs = Values {
        values: report
            .breadcrumbs
            .iter()
            .map(|b| protocol::Breadcrumb {
                timestamp: b.timestamp,
                category: Some(b.target.to_owned()),
                level: match b.level {
                    "ERROR" => protocol::Level::Error,
                    "WARN" => protocol::Level::Warning,
                    _ => protocol::Level::Info,
                },
                message: Some(b.message.clone()),
                ..Default::default()
            })
            .collect(),
    };
    event
}

/// Sentry's stack trace of a report's: the outermost frame first, each with its address.
fn to_stacktrace(trace: &super::Stacktrace) -> protocol::Stacktrace {
    let frames = trace
        .frames
        .iter()
        .rev()
        .map(|frame| protocol::Frame {
            function: frame.function.clone(),
            filename: frame.file.clone(),
            lineno: frame.line.map(u64::from),
            colno: frame.column.map(u64::from),
            instruction_addr: Some(protocol::Addr(frame.instruction_addr)),
            ..Default::default()
        })
        .collect();
    protocol::Stacktrace {
        frames,
        ..Default::default()
    }
}

/// `before_send`: sensitive headers, query values and extra data redacted, credentials out of
/// the URL, whatever added them.
fn scrub_event(mut event: Event<'static>, redactor: &Redactor) -> Event<'static> {
    if let Some(request) = event.request.as_mut() {
        request
            .headers
            .retain(|name, _| !redactor.is_sensitive(name));
        request.cookies = None;
        request.data = None;
        request.env.clear();
        if let Some(query) = request.query_string.as_mut() {
            *query = scrub_query(query, redactor);
        }
        if let Some(url) = request.url.as_mut() {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            if let Some(query) = url.query().map(|q| scrub_query(q, redactor)) {
                url.set_query(Some(&query));
            }
        }
    }
    for (key, value) in event.extra.iter_mut() {
        if redactor.is_sensitive(key) {
            *value = REDACTED.into();
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn type_names_are_read_as_sentry_reads_them() {
        // qiflow reads them without the `sentry` crate (so builds without the feature group
        // errors the same): the reading must stay the one Sentry's issue grouping uses.
        for debug in [
            "NotFound { path: \"/x\" }",
            "Timeout(30)",
            "Refused",
            "io::Error { kind: NotFound }",
            "Multi\nLine",
            "Tab\tSeparated value",
            "\"just text\"",
            "  padded ",
            "",
        ] {
            let sentry_name = sentry::parse_type_from_debug(debug);
            let plausible = sentry_name.chars().next().is_some_and(char::is_uppercase)
                && sentry_name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == ':');
            assert_eq!(
                super::super::type_from_debug(debug),
                plausible.then(|| sentry_name.to_owned()),
                "{debug:?}"
            );
        }
    }

    #[test]
    fn rate_limit_headers_are_read_as_sentry_documents_them() {
        assert_eq!(rate_limit_wait(&headers(&[])), DEFAULT_RATE_LIMIT);
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "7")])),
            Duration::from_secs(7)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "2.5")])),
            Duration::from_secs(3)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "1e30")])),
            MAX_BACKOFF
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "soon")])),
            DEFAULT_RATE_LIMIT
        );
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let wait = rate_limit_wait(&headers(&[("retry-after", &date)]));
        assert!((28..=31).contains(&wait.as_secs()), "{wait:?}");
        // The error category wins over Retry-After; other categories do not apply.
        assert_eq!(
            rate_limit_wait(&headers(&[
                (
                    "x-sentry-rate-limits",
                    "60:transaction:key, 12:error;default:organization"
                ),
                ("retry-after", "99"),
            ])),
            Duration::from_secs(12)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("x-sentry-rate-limits", "30::organization")])),
            Duration::from_secs(30)
        );
        assert_eq!(
            rate_limit_wait(&headers(&[
                ("x-sentry-rate-limits", "60:transaction:key"),
                ("retry-after", "5"),
            ])),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_failing_endpoint_pauses_sending_longer_each_time() {
        let reporter = SentryReporter::new(
            "https://key@sentry.test/1",
            SentryOptions::new("test", "1.0"),
        )
        .unwrap();
        let pause = || {
            let before = Instant::now();
            reporter.back_off();
            let until = reporter.state().failing_until.unwrap();
            (until - before).as_secs()
        };
        let pauses: Vec<u64> = (0..8).map(|_| pause()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_malformed_dsn_is_an_error_naming_the_key() {
        for dsn in ["not-a-dsn", "https://public@[::1", "https://example.com/1"] {
            let err = SentryReporter::new(dsn, SentryOptions::new("test", "1.0")).unwrap_err();
            assert!(err.starts_with("errors.sentry_dsn: "), "{err}");
        }
    }
}
