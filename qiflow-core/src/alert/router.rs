//! The router: filters, deduplication with cooldown, grouping, rate limits, retries, silences,
//! and the state file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use metrics::Label;
use serde::{Deserialize, Serialize};

use super::channel::{AlertChannel, SendError};
use super::model::{Alert, AlertStatus, Notice, Notification};
use super::rate_limit::TokenBucket;
use super::silence::{Silence, matchers_match};
use super::view::{ActiveAlert, AlertsView, ChannelStatus, RecentAlert, RecentNotification};
use crate::clock::Clock;
use crate::config::{AlertLevel, AlertsConfig};
use crate::metrics::Metrics;
use crate::retry::Backoff;

/// The most alerts one notification carries; a fuller group is sent at once.
const MAX_GROUP: usize = 50;
/// The most distinct alerts (fingerprints) remembered; the least recently seen go first.
const MAX_RECORDS: usize = 10_000;
/// The most alerts waiting for one channel (grouping or a slow receiver); more are dropped and
/// counted, so memory stays bounded whatever the receiver does.
const MAX_PENDING: usize = 1_000;
/// The most silences in force at once (so the API cannot grow memory without bound).
const MAX_SILENCES: usize = 1_000;
/// Notifications kept for `/qiflow/api/alerts`.
const MAX_RECENT: usize = 100;
/// How often the state file is written at most (besides flush and shutdown).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often a waiting dispatcher looks at the clock (group_wait runs on the clock seam).
const TICK: Duration = Duration::from_millis(100);

/// One channel as the router sees it.
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) channel: Arc<dyn AlertChannel>,
    pub(crate) min_level: AlertLevel,
    pub(crate) matchers: BTreeMap<String, String>,
    pub(crate) timeout: Duration,
    queue: Mutex<RouteQueue>,
    wake: tokio::sync::Notify,
    bucket: Mutex<TokenBucket>,
    last_error: Mutex<Option<String>>,
}

impl Route {
    pub(crate) fn new(
        name: String,
        channel: Arc<dyn AlertChannel>,
        min_level: AlertLevel,
        matchers: BTreeMap<String, String>,
        timeout: Duration,
        rate_limit: u32,
        now: SystemTime,
    ) -> Self {
        Self {
            name,
            channel,
            min_level,
            matchers,
            timeout,
            queue: Mutex::new(RouteQueue::default()),
            wake: tokio::sync::Notify::new(),
            bucket: Mutex::new(TokenBucket::new(rate_limit, now)),
            last_error: Mutex::new(None),
        }
    }

    fn wants(&self, alert: &Alert) -> bool {
        (alert.channels.is_empty() || alert.channels.contains(&self.name))
            && alert.level >= self.min_level
            && matchers_match(&self.matchers, &alert.match_labels())
    }
}

/// The values of `[alerts] group_by`'s labels in an alert: alerts with equal keys share a group.
type GroupKey = Vec<String>;

#[derive(Default)]
struct RouteQueue {
    /// Notices waiting, each with its group's key, in arrival order.
    group: Vec<(GroupKey, Notice)>,
    /// Each waiting group's key and when its wait started, oldest first.
    started: Vec<(GroupKey, SystemTime)>,
    /// Notices taken by the dispatcher and not yet delivered or given up.
    sending: usize,
    /// The shutdown counted what was pending: nothing more is settled.
    abandoned: bool,
}

impl RouteQueue {
    /// Adds a notice to its group, which starts waiting now if it is new.
    fn push(&mut self, key: GroupKey, notice: Notice, now: SystemTime) {
        if !self.started.iter().any(|(k, _)| *k == key) {
            self.started.push((key.clone(), now));
        }
        self.group.push((key, notice));
    }

    /// The next batch to send: up to [`MAX_GROUP`] notices of the oldest group that is due
    /// (its `group_wait` is over, it is full, or a flush asked for everything). Otherwise how
    /// long until the next group is due, or `None` when nothing waits.
    fn take_due(
        &mut self,
        now: SystemTime,
        group_wait: Duration,
        flushing: bool,
    ) -> Result<Vec<Notice>, Option<Duration>> {
        let mut counts: HashMap<&GroupKey, usize> = HashMap::new();
        for (key, _) in &self.group {
            *counts.entry(key).or_default() += 1;
        }
        let mut due = None;
        let mut wait: Option<Duration> = None;
        for (i, (key, started)) in self.started.iter().enumerate() {
            let count = counts.get(key).copied().unwrap_or(0);
            let at = *started + group_wait;
            if count == 0 || flushing || count >= MAX_GROUP || now >= at {
                due = Some((i, count));
                break;
            }
            let left = at.duration_since(now).unwrap_or_default();
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        let Some((i, count)) = due else {
            return Err(wait);
        };
        let (key, _) = self.started.remove(i);
        let mut batch = Vec::with_capacity(count.min(MAX_GROUP));
        let mut rest = Vec::with_capacity(self.group.len().saturating_sub(count));
        for (k, notice) in self.group.drain(..) {
            if k == key && batch.len() < MAX_GROUP {
                batch.push(notice);
            } else {
                rest.push((k, notice));
            }
        }
        self.group = rest;
        if count > batch.len() {
            // The rest of a full group waits again, behind the groups already waiting.
            self.started.push((key, now));
        }
        self.sending += batch.len();
        Ok(batch)
    }
}

/// What the router remembers of one alert (by fingerprint); persisted in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    alert: Alert,
    #[serde(with = "super::model::time_req")]
    first_seen: SystemTime,
    #[serde(with = "super::model::time_req")]
    last_seen: SystemTime,
    #[serde(default, with = "super::model::time_opt")]
    last_notified: Option<SystemTime>,
    /// Raised during the cooldown and not yet told.
    suppressed: u64,
    /// How much of `suppressed` an earlier run counted (read from the state file; not written
    /// back as such: after a restart all of `suppressed` is from before it).
    #[serde(skip)]
    carried: u64,
    /// Raised in all.
    total: u64,
    /// Channels told that it fires (they get the resolve).
    notified: Vec<String>,
    /// Channels whose queue holds it now (not persisted: a restart empties queues).
    #[serde(skip)]
    queued: Vec<String>,
    /// Channels sending it now (they get the resolve too, should it come meanwhile).
    #[serde(skip)]
    sending: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    version: u32,
    records: HashMap<String, Record>,
    silences: Vec<Silence>,
    recent: VecDeque<RecentNotification>,
}

/// Counters of the router, exact: every alert that reached the router and matched a channel is
/// sent, failed, rate-limited, abandoned at shutdown, or still pending.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dropped: AtomicU64,
}

pub(crate) struct Settings {
    pub(crate) cooldown: Duration,
    pub(crate) group_wait: Duration,
    /// `[alerts] group_by`.
    pub(crate) group_by: Vec<String>,
    /// `[alerts] retry_initial`, `retry_max` and `retry_deadline`, with jitter.
    pub(crate) retry: Backoff,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) service: String,
    pub(crate) environment: String,
    pub(crate) instance: String,
    /// `[logging] redact` plus the built-in names: label values under these keys are redacted.
    pub(crate) redactor: crate::logging::Redactor,
}

impl Settings {
    pub(crate) fn from_config(
        config: &AlertsConfig,
        service: &crate::config::ServiceConfig,
        redact: &[String],
    ) -> Self {
        Self {
            cooldown: config.cooldown,
            group_wait: config.group_wait,
            group_by: config.group_by.clone(),
            retry: Backoff::exponential(config.retry_initial, config.retry_max)
                .with_jitter()
                .with_deadline(config.retry_deadline),
            state_file: (!config.state_file.as_os_str().is_empty())
                .then(|| config.state_file.clone()),
            service: service.name.clone(),
            environment: service.environment.clone(),
            instance: service.instance.clone(),
            redactor: crate::logging::Redactor::new(redact),
        }
    }
}

/// The router shared by the `alerts` pipeline's sink, the dispatchers and the observer.
pub(crate) struct Router {
    settings: Settings,
    clock: Arc<dyn Clock>,
    routes: Vec<Arc<Route>>,
    state: Mutex<State>,
    metrics: Metrics,
    pub(crate) counters: Counters,
    flushing: AtomicBool,
    /// The state changed since it was last written.
    dirty: AtomicBool,
    save_lock: Mutex<()>,
}

impl Router {
    pub(crate) fn new(
        settings: Settings,
        clock: Arc<dyn Clock>,
        routes: Vec<Route>,
        config_silences: Vec<Silence>,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let mut state = match &settings.state_file {
            Some(path) => load_state(path)?,
            None => State::default(),
        };
        // What the earlier run held back is told with this run's first notification, saying so.
        for record in state.records.values_mut() {
            record.carried = record.suppressed;
        }
        let now = clock.now();
        state.silences.retain(|s| s.active(now));
        for silence in config_silences {
            if silence.active(now) && !state.silences.iter().any(|s| s.id == silence.id) {
                state.silences.push(silence);
            }
        }
        for route in &routes {
            for outcome in ["sent", "failed", "rate_limited", "queue_full", "abandoned"] {
                metrics
                    .counter(
                        "qiflow_alerts_sent_total",
                        vec![
                            Label::new("channel", route.name.clone()),
                            Label::new("outcome", outcome),
                        ],
                    )
                    .absolute(0);
            }
        }
        Ok(Self {
            settings,
            clock,
            routes: routes.into_iter().map(Arc::new).collect(),
            state: Mutex::new(state),
            metrics,
            counters: Counters::default(),
            flushing: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            save_lock: Mutex::new(()),
        })
    }

    /// The state, marked as changed (callers may change it).
    fn state(&self) -> MutexGuard<'_, State> {
        self.dirty.store(true, Ordering::Release);
        self.read_state()
    }

    /// The state, for reading.
    fn read_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Takes one alert from the pipeline: dedup, silences, cooldown, then into the matching
    /// channels' groups.
    pub(crate) fn ingest(&self, mut alert: Alert) {
        let now = self.clock.now();
        let fp = alert.fingerprint_value();
        alert.set_fingerprint(fp.clone());
        // The same redaction policy as the logs: label values under sensitive names never leave.
        for (key, value) in alert.labels.iter_mut() {
            if self.settings.redactor.is_sensitive(key) {
                crate::logging::REDACTED.clone_into(value);
            }
        }
        if alert.is_resolved() {
            self.resolve(alert, fp, now);
            return;
        }
        if alert.starts_at.is_none() {
            alert.starts_at = Some(now);
        }
        let mut state = self.state();
        let silenced = state
            .silences
            .iter()
            .any(|s| s.active(now) && s.matches(&alert.match_labels()));
        if !state.records.contains_key(&fp) && state.records.len() >= MAX_RECORDS {
            evict_oldest(&mut state.records);
        }
        let record = state.records.entry(fp.clone()).or_insert_with(|| Record {
            alert: alert.clone(),
            first_seen: now,
            last_seen: now,
            last_notified: None,
            suppressed: 0,
            carried: 0,
            total: 0,
            notified: Vec::new(),
            queued: Vec::new(),
            sending: Vec::new(),
        });
        if let Some(start) = record.alert.starts_at {
            alert.starts_at = Some(start);
        }
        record.alert = alert;
        record.last_seen = now;
        record.total += 1;
        if !record.queued.is_empty() {
            // Already waiting in a group: count it there.
            for name in record.queued.clone() {
                if let Some(route) = self.routes.iter().find(|r| r.name == name) {
                    let mut q = route.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some((_, n)) = q.group.iter_mut().find(|(_, n)| n.fingerprint == fp) {
                        n.count += 1;
                        n.alert = record.alert.clone();
                    }
                }
            }
            return;
        }
        let cooling = record
            .last_notified
            .is_some_and(|t| now < t + self.settings.cooldown);
        if silenced || cooling {
            record.suppressed += 1;
            return;
        }
        let count = record.suppressed + 1;
        let since = record.last_notified.unwrap_or(record.first_seen);
        let before_restart = record.carried.min(record.suppressed);
        let key = self.group_key(&record.alert);
        let mut queued = Vec::new();
        for route in &self.routes {
            if !route.wants(&record.alert) {
                continue;
            }
            let mut q = route.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.group.len() + q.sending >= MAX_PENDING {
                drop(q);
                self.count_overflow(route);
                continue;
            }
            q.push(
                key.clone(),
                Notice {
                    alert: record.alert.clone(),
                    fingerprint: fp.clone(),
                    count,
                    since: Some(since),
                    before_restart,
                },
                now,
            );
            queued.push(route.name.clone());
            drop(q);
            route.wake.notify_one();
        }
        if !queued.is_empty() {
            record.suppressed = 0;
            record.carried = 0;
            record.last_notified = Some(now);
            record.queued = queued;
        }
    }

    /// The group `alert` waits in: the values of its `[alerts] group_by` labels (`""` where it
    /// has none).
    fn group_key(&self, alert: &Alert) -> GroupKey {
        if self.settings.group_by.is_empty() {
            return GroupKey::new();
        }
        self.settings
            .group_by
            .iter()
            .map(|name| match name.as_str() {
                // As `Alert::match_labels` names them, without copying every label.
                "alertname" => alert.name.clone(),
                "severity" => super::level_name(alert.level).to_owned(),
                _ => alert.labels.get(name).cloned().unwrap_or_default(),
            })
            .collect()
    }

    fn resolve(&self, mut alert: Alert, fp: String, now: SystemTime) {
        let mut state = self.state();
        let Some(record) = state.records.remove(&fp) else {
            return; // Never seen (or already resolved): nothing to tell.
        };
        if alert.name.is_empty() {
            let given_end = alert.ends_at;
            alert = record.alert.clone().resolved();
            alert.ends_at = given_end;
        }
        alert.starts_at = alert.starts_at.or(record.alert.starts_at);
        alert.ends_at = Some(alert.ends_at.unwrap_or(now));
        // Drop it from groups not yet sent: those channels were never told it fired.
        for name in &record.queued {
            if let Some(route) = self.routes.iter().find(|r| &r.name == name) {
                route
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .group
                    .retain(|(_, n)| n.fingerprint != fp);
            }
        }
        let key = self.group_key(&alert);
        let mut told = record.notified.clone();
        for name in &record.sending {
            if !told.contains(name) {
                told.push(name.clone());
            }
        }
        for name in &told {
            if let Some(route) = self.routes.iter().find(|r| &r.name == name) {
                let mut q = route.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if q.group.len() + q.sending >= MAX_PENDING {
                    drop(q);
                    self.count_overflow(route);
                    continue;
                }
                q.push(
                    key.clone(),
                    Notice {
                        alert: alert.clone(),
                        fingerprint: fp.clone(),
                        count: 1,
                        since: None,
                        before_restart: 0,
                    },
                    now,
                );
                drop(q);
                route.wake.notify_one();
            }
        }
    }

    /// A channel's queue is full: the alert is dropped for it and counted.
    fn count_overflow(&self, route: &Route) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .counter(
                "qiflow_alerts_sent_total",
                vec![
                    Label::new("channel", route.name.clone()),
                    Label::new("outcome", "queue_full"),
                ],
            )
            .increment(1);
    }

    /// Runs one channel's dispatcher until the runtime stops.
    pub(crate) async fn dispatch(self: Arc<Self>, route: Arc<Route>) {
        loop {
            let batch = loop {
                let due = route
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take_due(
                        self.clock.now(),
                        self.settings.group_wait,
                        self.flushing.load(Ordering::Acquire),
                    );
                match due {
                    Ok(batch) => break batch,
                    Err(Some(wait)) => {
                        let _ = tokio::time::timeout(wait.min(TICK), route.wake.notified()).await;
                    }
                    Err(None) => route.wake.notified().await,
                }
            };
            if batch.is_empty() {
                route
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .sending = 0;
                continue;
            }
            self.deliver(&route, batch).await;
        }
    }

    async fn deliver(&self, route: &Route, batch: Vec<Notice>) {
        let n = batch.len();
        let fps: Vec<String> = batch.iter().map(|b| b.fingerprint.clone()).collect();
        {
            // Repeats arriving from now on start a new cooldown-bounded count.
            let mut state = self.state();
            for fp in &fps {
                if let Some(r) = state.records.get_mut(fp) {
                    r.queued.retain(|q| q != &route.name);
                    r.sending.push(route.name.clone());
                }
            }
        }
        let notification = Notification {
            channel: route.name.clone(),
            service: self.settings.service.clone(),
            environment: self.settings.environment.clone(),
            instance: self.settings.instance.clone(),
            alerts: batch,
        };
        let allowed = route
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(self.clock.now());
        let (outcome, attempts, error) = if allowed {
            match self.send_with_retry(route, &notification).await {
                Ok(attempts) => ("sent", attempts, None),
                Err((attempts, e)) => ("failed", attempts, Some(e.to_string())),
            }
        } else {
            (
                "rate_limited",
                0,
                Some(format!(
                    "over the rate limit of {} notifications per minute",
                    route
                        .bucket
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .rate
                )),
            )
        };
        {
            let mut q = route.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.abandoned {
                return; // The shutdown already counted these as abandoned.
            }
            q.sending = q.sending.saturating_sub(n);
        }
        self.settle(route, &notification, outcome, attempts, error);
        // The state file is written by `run_saver` (at most once a second), by flush and at
        // shutdown: not once per notification.
    }

    fn settle(
        &self,
        route: &Route,
        n: &Notification,
        outcome: &'static str,
        attempts: u32,
        error: Option<String>,
    ) {
        self.metrics
            .counter(
                "qiflow_alerts_sent_total",
                vec![
                    Label::new("channel", route.name.clone()),
                    Label::new("outcome", outcome),
                ],
            )
            .increment(n.alerts.len() as u64);
        if outcome != "sent" {
            self.counters
                .dropped
                .fetch_add(n.alerts.len() as u64, Ordering::Relaxed);
        }
        match (&error, outcome) {
            (None, _) => {
                *route
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
            (Some(e), "failed") => {
                tracing::warn!(target: "qiflow::alert", channel = %route.name, attempts, error = %e, alerts = n.alerts.len(), "alert notification failed");
                *route
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
            }
            (Some(e), _) => {
                tracing::warn!(target: "qiflow::alert", channel = %route.name, error = %e, alerts = n.alerts.len(), "alert notification dropped");
            }
        }
        let mut state = self.state();
        for notice in &n.alerts {
            if let Some(r) = state.records.get_mut(&notice.fingerprint) {
                r.sending.retain(|c| c != &route.name);
                // Nobody was told: the next occurrence tries again (with this count), instead
                // of the cooldown holding it back.
                if outcome != "sent"
                    && notice.alert.status == AlertStatus::Firing
                    && r.notified.is_empty()
                    && r.sending.is_empty()
                    && r.queued.is_empty()
                {
                    r.last_notified = None;
                    r.suppressed += notice.count;
                    r.carried += notice.before_restart;
                }
            }
        }
        if outcome == "sent" {
            for notice in &n.alerts {
                if notice.alert.status == AlertStatus::Firing
                    && let Some(r) = state.records.get_mut(&notice.fingerprint)
                    && !r.notified.contains(&route.name)
                {
                    r.notified.push(route.name.clone());
                }
            }
        }
        let entry = RecentNotification {
            at: super::model::rfc3339(self.clock.now()),
            channel: route.name.clone(),
            outcome: outcome.to_owned(),
            attempts,
            error,
            alerts: n
                .alerts
                .iter()
                .map(|a| RecentAlert {
                    name: a.alert.name.clone(),
                    status: a.alert.status,
                    fingerprint: a.fingerprint.clone(),
                    count: a.count,
                })
                .collect(),
        };
        state.recent.push_front(entry);
        state.recent.truncate(MAX_RECENT);
    }

    /// Sends with a per-attempt timeout, retrying retryable failures as `settings.retry` says
    /// (or after the receiver's `Retry-After`) until the retry deadline.
    async fn send_with_retry(
        &self,
        route: &Route,
        n: &Notification,
    ) -> Result<u32, (u32, SendError)> {
        let first = Instant::now();
        let histogram = self.metrics.histogram(
            "qiflow_alert_send_duration_seconds",
            vec![Label::new("channel", route.name.clone())],
        );
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            // Each attempt is a task of its own: a channel that panics fails the notification
            // (not retried) instead of killing the channel's dispatcher.
            let channel = route.channel.clone();
            let notification = n.clone();
            let mut task = tokio::spawn(async move { channel.send(&notification).await });
            let result = match tokio::time::timeout(route.timeout, &mut task).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(SendError::permanent(format!(
                    "{}: the channel panicked: {e}",
                    route.name
                ))),
                Err(_) => {
                    task.abort();
                    Err(SendError::retryable(format!(
                        "{}: no answer within {:?}",
                        route.name, route.timeout
                    )))
                }
            };
            histogram.record(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(()) => return Ok(attempts),
                Err(e) => e,
            };
            if !error.is_retryable() {
                return Err((attempts, error));
            }
            let Some(wait) =
                self.settings
                    .retry
                    .delay_or(attempts, first.elapsed(), error.wait_hint())
            else {
                return Err((attempts, error));
            };
            tracing::debug!(target: "qiflow::alert", channel = %route.name, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends every waiting group now (ignoring `group_wait`) and waits until all channels are
    /// idle; the state file is written at the end.
    pub(crate) async fn flush(&self) {
        self.flushing.store(true, Ordering::Release);
        for route in &self.routes {
            route.wake.notify_one();
        }
        while self.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.flushing.store(false, Ordering::Release);
        self.save();
    }

    /// Alerts waiting in groups or being sent, over all channels.
    pub(crate) fn pending(&self) -> usize {
        self.routes
            .iter()
            .map(|r| {
                let q = r.queue.lock().unwrap_or_else(PoisonError::into_inner);
                q.group.len() + q.sending
            })
            .sum()
    }

    /// Counts what is still pending as abandoned (the guard's budget ran out) and saves the
    /// state.
    pub(crate) fn abandon(&self) {
        for route in &self.routes {
            let mut q = route.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let n = q.group.len() + q.sending;
            q.abandoned = true;
            q.group.clear();
            q.sending = 0;
            q.started.clear();
            drop(q);
            if n > 0 {
                self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
                self.metrics
                    .counter(
                        "qiflow_alerts_sent_total",
                        vec![
                            Label::new("channel", route.name.clone()),
                            Label::new("outcome", "abandoned"),
                        ],
                    )
                    .increment(n as u64);
            }
        }
        self.save();
    }

    /// Channels whose last delivery failed, with the error.
    pub(crate) fn failing(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .filter_map(|r| {
                let e = r.last_error.lock().unwrap_or_else(PoisonError::into_inner);
                e.as_ref().map(|e| (r.name.clone(), e.clone()))
            })
            .collect()
    }

    pub(crate) fn add_silence(&self, silence: Silence) -> Result<(), String> {
        {
            let now = self.clock.now();
            let mut state = self.state();
            state.silences.retain(|s| s.active(now));
            if state.silences.len() >= MAX_SILENCES {
                return Err(format!(
                    "there are already {MAX_SILENCES} silences in force; remove some first"
                ));
            }
            state.silences.push(silence);
        }
        self.save();
        Ok(())
    }

    pub(crate) fn remove_silence(&self, id: &str) -> Option<Silence> {
        let removed = {
            let mut state = self.state();
            let index = state.silences.iter().position(|s| s.id == id);
            index.map(|i| state.silences.remove(i))
        };
        if removed.is_some() {
            self.save();
        }
        removed
    }

    pub(crate) fn view(&self) -> AlertsView {
        let now = self.clock.now();
        let state = self.read_state();
        let silences: Vec<Silence> = state
            .silences
            .iter()
            .filter(|s| s.active(now))
            .cloned()
            .collect();
        let mut active: Vec<ActiveAlert> = state
            .records
            .iter()
            .map(|(fp, r)| ActiveAlert {
                alert: r.alert.clone(),
                fingerprint: fp.clone(),
                first_seen: super::model::rfc3339(r.first_seen),
                last_seen: super::model::rfc3339(r.last_seen),
                last_notified: r.last_notified.map(super::model::rfc3339),
                count: r.total,
                suppressed: r.suppressed,
                silenced: silences.iter().any(|s| s.matches(&r.alert.match_labels())),
            })
            .collect();
        active.sort_by(|a, b| b.last_seen.cmp(&a.last_seen));
        let recent = state.recent.iter().cloned().collect();
        drop(state);
        AlertsView {
            active,
            recent,
            silenced: silences,
            channels: self
                .routes
                .iter()
                .map(|r| {
                    let q = r.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    ChannelStatus {
                        name: r.name.clone(),
                        pending: q.group.len() + q.sending,
                        last_error: r
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone(),
                    }
                })
                .collect(),
        }
    }

    /// Writes the state file once a second when it changed, off the async threads.
    pub(crate) async fn run_saver(self: Arc<Self>) {
        if self.settings.state_file.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.dirty.load(Ordering::Acquire) {
                let router = self.clone();
                let _ = tokio::task::spawn_blocking(move || router.save()).await;
            }
        }
    }

    /// Writes the state file (atomically: a temporary file created `0600`, renamed over it).
    pub(crate) fn save(&self) {
        let Some(path) = &self.settings.state_file else {
            return;
        };
        let _one_writer = self
            .save_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return; // Nothing changed: no write (and no file for a service that never alerted).
        }
        let json = {
            let mut state = self.read_state();
            let now = self.clock.now();
            state.silences.retain(|s| s.active(now));
            state.version = 1;
            serde_json::to_vec(&*state)
        };
        let result = json
            .map_err(std::io::Error::other)
            .and_then(|json| crate::files::write_atomic(path, &json, crate::files::PRIVATE_MODE));
        if let Err(e) = result {
            self.dirty.store(true, Ordering::Release); // Try again at the next save.
            tracing::warn!(target: "qiflow::alert", path = %path.display(), error = %e, "cannot write the alert state file; a restart may send alerts again");
        }
    }
}

fn evict_oldest(records: &mut HashMap<String, Record>) {
    if let Some(oldest) = records
        .iter()
        .filter(|(_, r)| r.queued.is_empty())
        .min_by_key(|(_, r)| r.last_seen)
        .map(|(fp, _)| fp.clone())
    {
        records.remove(&oldest);
    }
}

fn load_state(path: &std::path::Path) -> Result<State, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "alerts.state_file: {} is not a qiflow alert state file ({e}); move it away or delete it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!(
            "alerts.state_file: cannot read {}: {e}",
            path.display()
        )),
    }
}
