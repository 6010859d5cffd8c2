//! The hub: [`Observer`], its [`ObserverBuilder`], and the [`Guard`] that flushes on drop.

mod admin;
mod authz;
mod builder;
mod dashboard;
mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use builder::{InitError, InitErrorKind, ObserverBuilder};
pub use guard::Guard;

use crate::alert::{Alert, Alerts};
use crate::capture::{
    CaptureLayer, Capturer, ErrorDetail, ErrorKind, ErrorReport, ErrorStore, Severity,
};
use crate::config::Config;
use crate::health::{HealthCheck, HealthReport};
use crate::logging::{FilterError, LogFilter, LogLayer};
use crate::metrics::Metrics;
use crate::request::{InFlight, RequestInfo};
use crate::worker::{Pipeline, PipelineOptions, PipelineStats, Sink, Worker};

/// The hub that adapters and handlers talk to. Cheap to clone (an `Arc` inside).
///
/// Built by [`crate::init`] or [`Observer::builder`], which also return the [`Guard`].
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    started: Instant,
    /// The clock for timestamps (the system's, or a test's).
    clock: Arc<dyn crate::clock::Clock>,
    worker: Arc<Worker>,
    log_layer: LogLayer,
    log_filter: LogFilter,
    /// What [`Observer::install_panic_hook`] does with the hook installed before it.
    previous_panic_hook: crate::capture::PreviousHook,
    /// The client for sentry's hub (with `[errors] sentry_dsn`).
    #[cfg(feature = "sentry")]
    sentry_client: Option<Arc<sentry::Client>>,
    metrics: Metrics,
    /// The latest `[metrics] system` sample, when sampling.
    system_sample: Option<crate::system::Latest>,
    /// The dashboard's history and caches, with `[admin] dashboard`.
    dashboard: Option<dashboard::Dashboard>,
    health_checks: Vec<(String, Arc<dyn HealthCheck>)>,
    capturer: Arc<Capturer>,
    error_store: Arc<ErrorStore>,
    alerts: Alerts,
    baselines: Option<Arc<crate::baseline::Baselines>>,
    jobs: crate::jobs::Jobs,
    /// The dependencies registered with [`Observer::dependency`].
    dependencies: Arc<crate::dependency::Dependencies>,
    /// The `[authz]` policy in force and its bookkeeping.
    authz: Arc<crate::authz::live::Live>,
    deployments: crate::deploy::Deployments,
    auditor: Option<crate::audit::Auditor>,
    admin: crate::admin::Gate,
    propagator: crate::propagation::Propagator,
    /// The `traces` pipeline, with `[tracing] otlp_endpoint`.
    #[cfg(feature = "otlp")]
    traces: Option<crate::worker::Pipeline<crate::export::SpanRecord>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("service", &self.inner.config.service.name)
            .field("environment", &self.inner.config.service.environment)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// A builder for `config` (see [`ObserverBuilder`] for its settings and defaults).
    pub fn builder(config: Config) -> ObserverBuilder {
        ObserverBuilder::new(config)
    }

    /// The observer's clock (the system clock unless a test set another).
    pub(crate) fn clock(&self) -> &dyn crate::clock::Clock {
        &*self.inner.clock
    }

    /// The configuration the observer was built from (secrets stay redacted in `Debug`).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether `self` and `other` are handles of the same observer (clones of one `init`).
    pub fn ptr_eq(&self, other: &Observer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Captures an error from application code: a report with its `source()` chain and, inside
    /// a request, that request's context and breadcrumbs, queued for the local store and the
    /// reporters. Never waits; a full queue drops the report and counts it.
    pub fn capture_error<E: std::error::Error + 'static>(&self, error: &E) {
        let mut report = ErrorReport::new(
            ErrorKind::Manual,
            Severity::Error,
            ErrorDetail::from_error(error),
        );
        crate::capture::in_current_request(&mut report);
        self.capture(report);
    }

    /// Captures a report built by the caller (release, environment and fingerprint are filled
    /// in when empty). Never waits.
    pub fn capture(&self, report: ErrorReport) {
        self.inner.capturer.capture(report);
    }

    /// The per-route baselines (`None` with `[baseline] enabled = false`).
    pub fn baselines(&self) -> Option<&crate::baseline::Baselines> {
        self.inner.baselines.as_deref()
    }

    pub(crate) fn baselines_arc(&self) -> Option<&Arc<crate::baseline::Baselines>> {
        self.inner.baselines.as_ref()
    }

    /// The error groups behind `/qiflow/api/errors`.
    pub fn error_store(&self) -> &ErrorStore {
        &self.inner.error_store
    }

    /// The tracing layer that turns `error!` events into reports and keeps breadcrumbs; `init`
    /// installs it (see [`CaptureLayer`]).
    pub fn capture_layer(&self) -> CaptureLayer {
        CaptureLayer::new(self.inner.capturer.clone())
    }

    pub(crate) fn propagator(&self) -> &crate::propagation::Propagator {
        &self.inner.propagator
    }

    /// The tracing layer that exports the spans handlers create inside sampled requests as
    /// children of the request's span (`[tracing] otlp_endpoint`; without it the layer does
    /// nothing). `init` installs it; a host composing its own subscriber adds it beside
    /// [`log_layer`](Self::log_layer).
    #[cfg(feature = "otlp")]
    pub fn trace_layer(&self) -> crate::export::TraceLayer {
        crate::export::TraceLayer::new(self.inner.traces.clone())
    }

    /// Queues a finished span for export when `[tracing] otlp_endpoint` is set (never waits; a
    /// full queue drops it, counted).
    #[cfg(feature = "otlp")]
    pub(crate) fn export_span(&self, record: crate::export::SpanRecord) {
        if let Some(traces) = &self.inner.traces {
            let _ = traces.submit(record);
        }
    }

    pub(crate) fn capturer(&self) -> &Arc<Capturer> {
        &self.inner.capturer
    }

    /// How long ago the observer was built.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Registers a pipeline: a bounded queue in front of `sink`, drained on qiflow's background
    /// runtime and flushed by the guard, in registration order. Returns the producer handle.
    ///
    /// ```
    /// use qiflow_core::worker::{NoopSink, PipelineOptions};
    ///
    /// let config = qiflow_core::test::quiet_config(); // no log files in this example
    /// let (observer, guard) = qiflow_core::Observer::builder(config)
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// let events = observer.pipeline::<String, _>(PipelineOptions::new("events"), NoopSink);
    /// events.submit("hello".to_owned()).unwrap();
    /// let report = guard.shutdown();
    /// let stats = report.stats.iter().find(|s| s.name == "events").unwrap();
    /// assert_eq!(stats.delivered, 1);
    /// ```
    pub fn pipeline<T, S>(&self, options: PipelineOptions, sink: S) -> Pipeline<T>
    where
        T: Send + 'static,
        S: Sink<T>,
    {
        self.inner.worker.add(options, sink)
    }

    /// Raises an alert: queued for the router on qiflow's runtime, never blocking the caller
    /// (see [`crate::alert`] for what happens next). When the queue is full or the observer is
    /// shut down, the alert is dropped and counted on `qiflow_dropped_total{pipeline="alerts"}`.
    /// Raised inside a request, the alert gets the request's `request_id` and `trace_id` as
    /// annotations (not labels: every request's alert stays the same alert).
    ///
    /// ```
    /// use qiflow_core::alert::{Alert, AlertLevel};
    ///
    /// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// observer.alert(
    ///     Alert::new("payment_provider_down", AlertLevel::Critical)
    ///         .summary("stripe answers 503")
    ///         .label("provider", "stripe"),
    /// );
    /// ```
    pub fn alert(&self, mut alert: Alert) {
        // Raised inside a request: the alert says which request and trace (as annotations,
        // so every request's alert is still the same alert).
        if let Some(request) = crate::scope::current() {
            for (key, value) in [
                ("request_id", request.as_str()),
                ("trace_id", request.trace_id()),
            ] {
                if !alert.labels.contains_key(key) {
                    alert
                        .annotations
                        .entry(key.to_owned())
                        .or_insert_with(|| value.to_owned());
                }
            }
        }
        let _ = self.inner.alerts.raise(alert);
    }

    /// The alert subsystem: active alerts, silences, drops.
    pub fn alerts(&self) -> &Alerts {
        &self.inner.alerts
    }

    /// The job `name` (see [`crate::jobs`]): declared in `[[jobs]]`, or tracked from now on
    /// without a schedule. A name that is not valid ([`crate::jobs::is_valid_name`]), or one
    /// past [`crate::jobs::MAX_JOBS`] jobs, gives a handle whose check-ins do nothing (logged
    /// once here, at target `qiflow::jobs`).
    ///
    /// ```
    /// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// let cleanup = observer.job("tmp-cleanup");
    /// cleanup.start().message("removed 12 files").success();
    /// assert_eq!(cleanup.state(), qiflow_core::jobs::JobState::Up);
    /// ```
    pub fn job(&self, name: &str) -> crate::jobs::Job {
        self.inner.jobs.job(name)
    }

    /// Every job qiflow watches.
    pub fn jobs(&self) -> &crate::jobs::Jobs {
        &self.inner.jobs
    }

    /// The dependency named `name` (a database pool, a cache, a service called over HTTP):
    /// registered at the first call, the same handle after (`kind` is then ignored). Its
    /// settings are `[dependencies.NAME]`. See [`crate::dependency`].
    pub fn dependency(
        &self,
        name: &str,
        kind: crate::dependency::DependencyKind,
    ) -> crate::dependency::Dependency {
        self.inner.dependencies.get(name, kind)
    }

    /// The last deployments (starts of this service), newest first, this one first: what
    /// `GET /qiflow/api/deployments` serves (see [`crate::deploy`]).
    pub fn deployments(&self) -> Vec<crate::deploy::Deployment> {
        self.inner.deployments.list()
    }

    /// Writes this start as an audit event (`service.deployed`) and a `qiflow::deploy` line.
    fn announce(&self, d: &crate::deploy::Deployment) {
        tracing::info!(
            target: "qiflow::deploy",
            version = %d.version,
            commit = d.commit.as_deref().unwrap_or(""),
            host = %d.host,
            config_hash = %d.config_hash,
            "service deployed"
        );
        let mut event = crate::audit::AuditEvent::builder("qiflow", "service.deployed")
            .resource(format!("service/{}", d.service))
            .metadata("version", d.version.clone())
            .metadata("environment", d.environment.clone())
            .metadata("host", d.host.clone())
            .metadata("config_hash", d.config_hash.clone());
        if let Some(commit) = &d.commit {
            event = event.metadata("commit", commit.clone());
        }
        if let Err(e) = self.audit(event.build()) {
            tracing::warn!(target: "qiflow::deploy", "the audit trail could not record this deployment: {e}");
        }
    }

    /// Counters of every pipeline, in registration order.
    pub fn stats(&self) -> Vec<PipelineStats> {
        self.inner.worker.stats()
    }

    /// Drains and flushes every pipeline, waiting at most `timeout`. Returns `true` when all
    /// finished in time. Pipelines keep running afterwards; nothing is dropped by this call.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.inner
            .worker
            .flush_until(Instant::now() + timeout, false)
            .is_empty()
    }

    /// A handle on qiflow's background runtime, for spawning I/O that must not run on the
    /// request path.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.inner.worker.handle()
    }

    /// The tracing layer that writes to qiflow's log pipeline, for hosts that build their own
    /// subscriber (see [`ObserverBuilder::install_global`]). Clones share the pipeline.
    pub fn log_layer(&self) -> LogLayer {
        self.inner.log_layer.clone()
    }

    /// The log filter: what `init` installs in front of [`log_layer`](Self::log_layer) and
    /// [`capture_layer`](Self::capture_layer), for hosts that build their own subscriber (see
    /// [`ObserverBuilder::install_global`]). Every clone follows
    /// [`set_log_level`](Self::set_log_level). Add it as a global filter
    /// (`registry().with(observer.log_filter())`), or to qiflow's layers alone
    /// (`observer.log_layer().with_filter(observer.log_filter())`) when your own filter governs
    /// the rest.
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(observer.log_filter())
    ///     .with(observer.log_layer());
    /// tracing::subscriber::with_default(subscriber, || {
    ///     observer.set_log_level("warn").unwrap();
    ///     assert!(!tracing::enabled!(tracing::Level::INFO));
    ///     observer.set_log_level("info").unwrap();
    ///     assert!(tracing::enabled!(tracing::Level::INFO));
    /// });
    /// ```
    pub fn log_filter(&self) -> LogFilter {
        self.inner.log_filter.clone()
    }

    /// The log filter in force, as text (`"info"`, `"info,sqlx=warn"`): `RUST_LOG` or
    /// `[logging] level` at start, then whatever [`set_log_level`](Self::set_log_level) set.
    pub fn log_level(&self) -> String {
        self.inner.log_filter.current()
    }

    /// Changes the log filter while the service runs: a level (`"debug"`) or `EnvFilter`
    /// directives (`"info,sqlx=warn"`). Returns the filter it replaced. A filter that does not
    /// parse changes nothing, and the error names the directive at fault.
    ///
    /// It changes the filter `init` installed (with [`ObserverBuilder::install_global`] `true`)
    /// and every filter handed out by [`log_filter`](Self::log_filter), at once; a filter of the
    /// host's own (an `EnvFilter` it built) is not touched. Like tracing-subscriber's `reload`,
    /// it rebuilds tracing's callsite cache and sets the `log` crate's maximum level to
    /// tracing's. `PUT /qiflow/api/loggers` does the same for an operator, audited.
    ///
    /// ```
    /// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// let before = observer.log_level();
    /// assert_eq!(observer.set_log_level("info,sqlx=warn").unwrap(), before);
    /// assert_eq!(observer.log_level(), "info,sqlx=warn");
    /// let error = observer.set_log_level("info,sqlx=loud").unwrap_err();
    /// assert_eq!(error.directive(), Some("sqlx=loud"));
    /// assert_eq!(observer.log_level(), "info,sqlx=warn");
    /// ```
    pub fn set_log_level(&self, filter: &str) -> Result<String, FilterError> {
        self.inner
            .log_filter
            .set(filter)
            .map(|(previous, _)| previous)
    }

    pub(crate) fn log_filter_ref(&self) -> &LogFilter {
        &self.inner.log_filter
    }

    /// qiflow's metrics recorder, for hosts that install their own (see
    /// [`ObserverBuilder::install_global`]): install it as the global recorder, or put it in a
    /// `metrics_util::layers::Fanout` beside yours, and the application's `metrics::counter!`
    /// and friends show on qiflow's `/metrics`. Clones share the recorder.
    ///
    /// ```
    /// use metrics::Recorder as _;
    ///
    /// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// let recorder = observer.metrics_recorder();
    /// // What `metrics::counter!("app_orders_total").increment(2)` does under this recorder:
    /// let key = metrics::Key::from_name("app_orders_total");
    /// let metadata = metrics::Metadata::new("app", metrics::Level::INFO, None);
    /// recorder.register_counter(&key, &metadata).increment(2);
    /// assert!(observer.render_metrics().contains("app_orders_total 2"));
    /// ```
    pub fn metrics_recorder(&self) -> crate::metrics::SharedRecorder {
        self.inner.metrics.global_recorder()
    }

    /// Installs qiflow's panic hook for this observer, as `init` does (see
    /// [`install_panic_hook_with`](crate::capture::install_panic_hook_with)), with the
    /// builder's [`previous_panic_hook`](ObserverBuilder::previous_panic_hook). For hosts that
    /// build with [`install_global(false)`](ObserverBuilder::install_global) and want panics
    /// reported. The hook is process-wide: installing it again for another observer re-targets
    /// it.
    pub fn install_panic_hook(&self) {
        crate::capture::install_panic_hook_with(self, self.inner.previous_panic_hook);
    }

    /// The `sentry` client that forwards to `[errors] sentry_dsn` through qiflow's transport
    /// (`None` without a DSN). `init` binds it to sentry's main hub; with
    /// [`install_global(false)`](ObserverBuilder::install_global), bind it yourself
    /// (`sentry::Hub::main().bind_client(observer.sentry_client())`), or to a hub of your own.
    /// Then `sentry::capture_message`, `sentry::capture_error` and `sentry-tracing` in the
    /// application go through the same transport as qiflow's reports: a bounded queue
    /// (`qiflow_dropped_total{pipeline="sentry"}`), timeouts, backoff and rate limits, and
    /// `qiflow_errors_forwarded_total{reporter="sentry",outcome}`; the guard flushes it. The
    /// application's `sentry` must be the version qiflow-core uses (0.49). Feature `sentry`.
    #[cfg(feature = "sentry")]
    pub fn sentry_client(&self) -> Option<Arc<sentry::Client>> {
        self.inner.sentry_client.clone()
    }

    /// qiflow's metrics (its own Prometheus recorder).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The Prometheus text exposition served at `GET /metrics`, with the pipeline counters
    /// (`qiflow_dropped_total{pipeline,reason}`) brought up to date first.
    pub fn render_metrics(&self) -> String {
        let metrics = &self.inner.metrics;
        for stats in self.stats() {
            for reason in crate::worker::DropReason::ALL {
                metrics
                    .counter(
                        "qiflow_dropped_total",
                        vec![
                            metrics::Label::new("pipeline", stats.name),
                            metrics::Label::new("reason", reason.label()),
                        ],
                    )
                    .absolute(stats.dropped_for(reason));
            }
            if stats.name == "alerts" {
                // The alert router's own drops (`reason="channel"`): rate-limited, a channel's queue
                // full, a send that failed for good, or pending at shutdown.
                metrics
                    .counter(
                        "qiflow_dropped_total",
                        vec![
                            metrics::Label::new("pipeline", stats.name),
                            metrics::Label::new("reason", "channel"),
                        ],
                    )
                    .absolute(self.inner.alerts.router_dropped());
            }
        }
        metrics
            .gauge("qiflow_alerts_queue_depth", Vec::new())
            .set(self.inner.alerts.queued() as f64);
        self.inner.authz.render(metrics);
        metrics.render()
    }

    /// Starts observing a request: see [`InFlight`] for what happens when. This is the one call
    /// an adapter makes when a request arrives; [`InFlight::finish`] the one when its response
    /// head is ready.
    pub fn begin_request(&self, info: RequestInfo<'_>) -> InFlight {
        InFlight::begin(self, info)
    }

    /// [`begin_request`](Self::begin_request), first resolving the actor of an automatically
    /// audited request from the request's headers (`header` looks one up by name; only requests
    /// that [`AutoAudit::wants_actor`](crate::audit::AutoAudit::wants_actor) pay for it). What
    /// adapters call.
    pub fn begin_request_with_headers<'h>(
        &self,
        mut info: RequestInfo<'_>,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> InFlight {
        if let Some(auto) = self.auto_audit().filter(|a| a.wants_actor(&info)) {
            info.actor = auto.actor(&|name| header(name).map(str::to_owned));
        }
        InFlight::begin(self, info)
    }

    /// The readiness report: every check (see [`crate::health`]), run concurrently on qiflow's
    /// runtime, so it works under any executor.
    pub async fn readiness(&self) -> HealthReport {
        HealthReport::ready(self).await
    }

    /// The resident memory of the latest `[metrics] system` sample, if it has sampled.
    pub(crate) fn sampled_rss(&self) -> Option<u64> {
        self.inner.system_sample.as_ref()?.rss()
    }

    pub(crate) fn health_checks(&self) -> Vec<(String, Arc<dyn HealthCheck>)> {
        let mut checks = self.inner.health_checks.clone();
        checks.extend(self.inner.dependencies.checks());
        checks
    }

    /// Records an audit event (see [`crate::audit`] for what happens when). Returns at once
    /// unless the audit queue is full, then waits up to `[audit] block_timeout`; a record that
    /// still finds no room is lost: counted, logged as an error, reported to the loss hook, and
    /// the error returned. With `[audit] enabled = false` the event is discarded and `Ok`
    /// returned.
    ///
    /// ```
    /// use qiflow_core::audit::{AuditEvent, Outcome};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut config = qiflow_core::test::quiet_config(); // auditing off there: turn it on
    /// config.audit.enabled = true;
    /// config.audit.dir = dir.path().join("audit");
    /// let (observer, guard) = qiflow_core::Observer::builder(config)
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// observer
    ///     .audit(AuditEvent::builder("alice", "user.login").outcome(Outcome::Success).build())
    ///     .unwrap();
    /// drop(guard); // writes what is queued, then a digest
    /// // The witness (where the trail was last sealed) is beside the trail directory.
    /// let verified = qiflow_core::audit::verify_dir_with_witness(
    ///     &dir.path().join("audit"),
    ///     None,
    ///     &dir.path().join("audit.witness.json"),
    /// )
    /// .unwrap();
    /// // Alice's login, and this start of the service (`service.deployed`, recorded by `build`).
    /// assert_eq!(verified.records, 2);
    /// assert!(!verified.open_tail());
    /// ```
    pub fn audit(&self, event: crate::audit::AuditEvent) -> Result<(), crate::audit::AuditError> {
        match &self.inner.auditor {
            Some(auditor) => auditor.audit(event),
            None => Ok(()),
        }
    }

    /// Records an audit event and resolves once it is stored durably (its batch fsynced or
    /// committed): an acknowledged record. Queueing behaves as in [`Observer::audit`]; the
    /// batch holding it is written at once, without waiting out `[audit] flush_interval`.
    pub fn audit_durable(
        &self,
        event: crate::audit::AuditEvent,
    ) -> impl std::future::Future<Output = Result<(), crate::audit::AuditError>> + Send + 'static
    {
        let pending = self.inner.auditor.as_ref().map(|a| a.audit_durable(event));
        async move {
            match pending {
                Some(p) => p.await,
                None => Ok(()),
            }
        }
    }

    /// Queries the stored trail (what `GET /qiflow/api/audit` serves). Fails when auditing is
    /// disabled or the sink has no query support.
    pub async fn audit_query(
        &self,
        query: &crate::audit::AuditQuery,
    ) -> Result<crate::audit::AuditPage, crate::audit::AuditError> {
        let store = self
            .inner
            .auditor
            .as_ref()
            .and_then(|a| a.store().cloned())
            .ok_or_else(|| {
                crate::audit::AuditError::new(
                    crate::audit::AuditErrorKind::Config,
                    "the audit trail cannot be queried: [audit] enabled = false, or a custom sink without a store",
                )
            })?;
        let query = query.clone();
        // On qiflow's runtime, so it works under any executor.
        self.runtime()
            .spawn(async move { store.query(&query).await })
            .await
            .unwrap_or_else(|e| {
                Err(crate::audit::AuditError::new(
                    crate::audit::AuditErrorKind::Io,
                    format!("audit query failed: {e}"),
                ))
            })
    }

    /// The automatic-audit rules (`[audit] routes`), when any: adapters resolve the actor from
    /// the request headers with [`AutoAudit::actor`](crate::audit::AutoAudit::actor) when
    /// [`AutoAudit::wants_actor`](crate::audit::AutoAudit::wants_actor) says so.
    pub fn auto_audit(&self) -> Option<&crate::audit::AutoAudit> {
        self.inner.auditor.as_ref()?.auto()
    }

    pub(crate) fn auditor(&self) -> Option<&crate::audit::Auditor> {
        self.inner.auditor.as_ref()
    }

    /// The liveness report: the process is up. It checks no dependency, so it stays healthy when
    /// every dependency is down.
    pub fn liveness(&self) -> HealthReport {
        HealthReport::live(self)
    }
}
