//! Alerts: raise an [`Alert`] from anywhere with [`Observer::alert`](crate::Observer::alert);
//! qiflow routes it to the channels of `[[alerts.channels]]` on its background runtime.
//!
//! # What happens when
//!
//! 1. [`Observer::alert`](crate::Observer::alert) queues the alert on the bounded `alerts`
//!    pipeline and returns at once (a full queue drops it, counted on
//!    `qiflow_dropped_total{pipeline="alerts"}`). It never blocks and never does I/O.
//! 2. The router takes it on qiflow's runtime. Label values under sensitive names (the log
//!    redaction policy: `password`, `token`, … and `[logging] redact`) become `[REDACTED]`. A **resolved** alert ([`Alert::resolved`],
//!    [`Alert::resolve`]) is sent to every channel that was told it fired, and leaves the active
//!    set. A **firing** alert is remembered by fingerprint; when it is **silenced** (a
//!    [`Silence`] matches its labels) or the same fingerprint was notified less than
//!    `[alerts] cooldown` ago (and some channel received that notification), it is only
//!    counted. Otherwise it joins the group of every channel
//!    whose `min_level` it reaches and whose `matchers` match its labels.
//! 3. A channel's group is sent as one [`Notification`] `group_wait` after its first alert (at
//!    once when it holds 50). Repeats of an alert while it waits, and those held back by the
//!    cooldown, are counted in [`Notice::count`], so 10,000 identical alerts make one
//!    notification per cooldown that says how many there were.
//! 4. Each channel has a token bucket of `rate_limit` notifications per minute; a notification
//!    over it is dropped and counted (`outcome="rate_limited"`).
//! 5. The send runs under the channel's `timeout`; failures that may pass (timeouts, refused
//!    connections, 5xx, 429 after its `Retry-After`) are retried with exponential backoff and
//!    jitter from `retry_initial` up to `retry_max`, until `retry_deadline`; others (4xx) are not.
//!    Each alert of the notification is counted on `qiflow_alerts_sent_total{channel,outcome}`
//!    (`sent`, `failed`, `rate_limited`, `queue_full` when 1,000 already wait for the channel,
//!    `abandoned` at shutdown), so per channel the outcomes add up to the alerts routed to it;
//!    each attempt's duration is on
//!    `qiflow_alert_send_duration_seconds{channel}`. A channel whose last notification failed
//!    makes `/health/ready` degraded, naming it.
//! 6. What was sent when, the cooldowns and the silences are written to `[alerts] state_file`
//!    (within a second of a change, at each flush and at shutdown), so a restart within the
//!    cooldown does not page again. The guard's flush sends every group
//!    at once and waits for it within its budget; what is still pending then is counted as
//!    `outcome="abandoned"` and dropped.
//!
//! The built-in channels are in [`channels`]; any type implementing [`AlertChannel`] can be
//! added with [`ObserverBuilder::alert_channel`](crate::ObserverBuilder::alert_channel).

mod api;
mod channel;
pub mod channels;
pub(crate) mod check;
mod model;
mod rate_limit;
mod router;
mod silence;
// Without a channel that renders, only the configuration checks parse templates.
#[cfg_attr(
    not(any(feature = "email", feature = "http-channels")),
    allow(dead_code)
)]
pub(crate) mod template;
#[cfg(feature = "test")]
pub(crate) mod testing;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub(crate) use api::parse_new_silence;
pub use channel::{AlertChannel, LogChannel, NoopChannel, SendError};
pub(crate) use model::rfc3339;
pub use model::{Alert, AlertLevel, AlertStatus, Notice, Notification, level_name};
pub use silence::Silence;
pub use view::{ActiveAlert, AlertsView, ChannelStatus, RecentAlert, RecentNotification};

use crate::clock::Clock;
use crate::config::Config;
use crate::health::{CheckResult, HealthCheck};
use crate::metrics::Metrics;
use crate::worker::{BoxFuture, DropReason, Pipeline, PipelineOptions, Sink, SinkError};
use router::{Route, Router, Settings};

/// The alert subsystem's handle: raise alerts, read what is active, manage silences. Reached
/// through [`Observer::alerts`](crate::Observer::alerts).
#[derive(Clone)]
pub struct Alerts {
    pipeline: Pipeline<Alert>,
    router: Arc<Router>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field(
                "channels",
                &self
                    .router
                    .routes()
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Queues `alert` for the router; never blocks. A full queue or a shut-down observer drops
    /// it, counted on `qiflow_dropped_total{pipeline="alerts"}`, and says why.
    pub fn raise(&self, alert: Alert) -> Result<(), DropReason> {
        self.pipeline.submit(alert)
    }

    /// Active alerts, the latest notifications, the silences in force and the channels: what
    /// `GET /qiflow/api/alerts` serves.
    pub fn view(&self) -> AlertsView {
        self.router.view()
    }

    /// Adds a silence of the alerts whose labels match every matcher (`*` in a value matches
    /// any run of characters; `alertname` and `severity` are the name and level) until
    /// `expires_at`. Persisted in the state file. Returns the silence (its `id` removes it);
    /// its `created_by` is `"api"`.
    pub fn silence(
        &self,
        matchers: BTreeMap<String, String>,
        expires_at: SystemTime,
        comment: impl Into<String>,
    ) -> Result<Silence, String> {
        self.silence_by(matchers, expires_at, comment.into(), "api")
    }

    /// [`Alerts::silence`] on behalf of `created_by` (an operator token's name).
    pub(crate) fn silence_by(
        &self,
        matchers: BTreeMap<String, String>,
        expires_at: SystemTime,
        comment: String,
        created_by: &str,
    ) -> Result<Silence, String> {
        if matchers.is_empty() {
            return Err(
                "a silence needs at least one label matcher (one without would hide every alert)"
                    .into(),
            );
        }
        if expires_at <= self.router.now() {
            return Err("the silence's expiry is in the past".into());
        }
        let silence = Silence {
            id: uuid::Uuid::now_v7().to_string(),
            matchers,
            expires_at,
            comment,
            created_by: created_by.to_owned(),
        };
        self.router.add_silence(silence.clone())?;
        Ok(silence)
    }

    /// Removes the silence with `id`; false when there is none.
    pub fn unsilence(&self, id: &str) -> bool {
        self.router.remove_silence(id).is_some()
    }

    /// Removes the silence with `id` and returns it.
    pub(crate) fn remove_silence(&self, id: &str) -> Option<Silence> {
        self.router.remove_silence(id)
    }

    /// Puts back a silence [`Alerts::remove_silence`] took.
    pub(crate) fn restore_silence(&self, silence: Silence) -> Result<(), String> {
        self.router.add_silence(silence)
    }

    /// The clock's time (the alert router's).
    pub(crate) fn now(&self) -> SystemTime {
        self.router.now()
    }

    /// Alerts and notifications dropped so far: queue overflow, rate limits, failed deliveries,
    /// and what was abandoned at shutdown (what `qiflow_dropped_total{pipeline="alerts"}` shows).
    pub fn dropped(&self) -> u64 {
        self.pipeline.dropped() + self.router_dropped()
    }

    /// Alerts waiting: queued for the router, grouped, or being sent.
    pub fn queued(&self) -> usize {
        self.pipeline.queued() + self.router.pending()
    }

    pub(crate) fn router_dropped(&self) -> u64 {
        self.router
            .counters
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts what is still pending as abandoned (called by the worker's shutdown).
    pub(crate) fn abandon(&self) {
        self.router.abandon();
    }

    /// The readiness check: degraded while a channel's last notification failed.
    pub(crate) fn health_check(&self) -> AlertsCheck {
        AlertsCheck(self.router.clone())
    }
}

/// Degraded while a channel's last notification failed (naming the channel and the error).
pub(crate) struct AlertsCheck(Arc<Router>);

impl HealthCheck for AlertsCheck {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        let failing = self.0.failing();
        Box::pin(async move {
            if failing.is_empty() {
                CheckResult::healthy()
            } else {
                CheckResult::degraded(
                    failing
                        .iter()
                        .map(|(name, e)| format!("alert channel {name} failing: {e}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
        })
    }
}

/// The `alerts` pipeline's sink: hands each alert to the router.
struct RouterSink(Arc<Router>);

impl Sink<Alert> for RouterSink {
    fn write(&mut self, batch: Vec<Alert>) -> BoxFuture<'_, Result<(), SinkError>> {
        for alert in batch {
            self.0.ingest(alert);
        }
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        let router = self.0.clone();
        Box::pin(async move {
            router.flush().await;
            Ok(())
        })
    }
}

/// Builds the channels, the router, its dispatchers and the `alerts` pipeline.
pub(crate) fn start(
    config: &Config,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    extra: Vec<(String, Arc<dyn AlertChannel>)>,
    add_pipeline: impl FnOnce(PipelineOptions, RouterSinkBox) -> Pipeline<Alert>,
    runtime: &tokio::runtime::Handle,
) -> Result<Alerts, String> {
    let alerts = &config.alerts;
    let now = clock.now();
    let transports = channels::Transports::new()?;
    let mut routes = Vec::new();
    for (i, ch) in alerts.channels.iter().enumerate() {
        let channel = Arc::new(channels::build(config, ch, i, &transports)?);
        routes.push(Route::new(
            channels::channel_name(ch),
            channel,
            ch.min_level.unwrap_or(alerts.min_level),
            ch.matchers.clone(),
            ch.timeout,
            alerts.rate_limit,
            now,
        ));
    }
    for (name, channel) in extra {
        if routes.iter().any(|r| r.name == name) {
            return Err(format!(
                "alert channel {name:?} is defined twice (in [[alerts.channels]] and by alert_channel); rename one"
            ));
        }
        routes.push(Route::new(
            name,
            channel,
            alerts.min_level,
            BTreeMap::new(),
            crate::config::ChannelConfig::default().timeout,
            alerts.rate_limit,
            now,
        ));
    }
    if routes.is_empty() {
        routes.push(Route::new(
            "log".into(),
            Arc::new(LogChannel),
            alerts.min_level,
            BTreeMap::new(),
            crate::config::ChannelConfig::default().timeout,
            alerts.rate_limit,
            now,
        ));
    }
    let mut silences = Vec::new();
    for (i, s) in alerts.silences.iter().enumerate() {
        let expires_at = model::parse_rfc3339(&s.expires).ok_or_else(|| {
            format!(
                "alerts.silences.{i}.expires: {:?} is not an RFC 3339 time",
                s.expires
            )
        })?;
        // A stable id, so a restart does not add the same silence twice.
        let id = format!(
            "config-{}",
            Alert::new(&s.expires, AlertLevel::Info)
                .label(
                    "matchers",
                    serde_json::to_string(&s.matchers).unwrap_or_default()
                )
                .fingerprint_value()
        );
        silences.push(Silence {
            id,
            matchers: s.matchers.clone(),
            expires_at,
            comment: s.comment.clone(),
            created_by: "config".into(),
        });
    }
    let router = Arc::new(Router::new(
        Settings::from_config(alerts, &config.service, &config.logging.redact),
        clock,
        routes,
        silences,
        metrics,
    )?);
    for route in router.routes() {
        runtime.spawn(router.clone().dispatch(route.clone()));
    }
    runtime.spawn(router.clone().run_saver());
    let pipeline = add_pipeline(
        PipelineOptions::new("alerts")
            .capacity(alerts.queue_capacity)
            .batch_size(256)
            // After the host's pipelines (their flushes may raise alerts), before the logs.
            .flush_late(),
        Box::new(RouterSink(router.clone())),
    );
    Ok(Alerts { pipeline, router })
}

/// The boxed sink handed to the worker.
pub(crate) type RouterSinkBox = Box<dyn Sink<Alert>>;
