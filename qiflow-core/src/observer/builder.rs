use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::{Guard, Inner, Observer};

/// How often the denial alerts of actors whose window emptied are resolved.
const AUTHZ_SWEEP_EVERY: Duration = Duration::from_secs(5);
use crate::alert::AlertChannel;
use crate::capture::{
    CaptureLayer, Capturer, ErrorSink, ErrorStore, GlobalBreadcrumbs, PreviousHook, Reporter,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, OverflowPolicy};
use crate::health::{DirWritableCheck, DiskSpaceCheck, HealthCheck, LOW_DISK_BYTES};
use crate::logging::rotate::RotationPolicy;
use crate::logging::sink::LogSink;
use crate::logging::{BLOCK_TIMEOUT, FilterSource, LogFilter, LogLayer, Redactor};
use crate::metrics::Metrics;
use crate::worker::{Overflow, PipelineOptions, Worker};

/// How long the log writer lets lines gather before writing a batch.
const LOG_LINGER: Duration = Duration::from_millis(5);

/// Builds an [`Observer`] and its [`Guard`] from a [`Config`].
///
/// A builder with no settings is what [`crate::init`] uses.
#[must_use]
pub struct ObserverBuilder {
    config: Config,
    flush_budget: Duration,
    worker_threads: usize,
    install_global: bool,
    previous_panic_hook: PreviousHook,
    clock: Arc<dyn Clock>,
    health_checks: Vec<(String, Arc<dyn HealthCheck>)>,
    reporters: Vec<Arc<dyn Reporter>>,
    alert_channels: Vec<(String, Arc<dyn AlertChannel>)>,
    audit: crate::audit::AuditOptions,
}

impl std::fmt::Debug for ObserverBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserverBuilder")
            .field("service", &self.config.service.name)
            .field("flush_budget", &self.flush_budget)
            .field("worker_threads", &self.worker_threads)
            .field("install_global", &self.install_global)
            .field("previous_panic_hook", &self.previous_panic_hook)
            .field("health_checks", &self.health_checks.len())
            .finish_non_exhaustive()
    }
}

impl ObserverBuilder {
    pub(super) fn new(config: Config) -> Self {
        Self {
            config,
            flush_budget: Duration::from_secs(5),
            worker_threads: 2,
            install_global: true,
            previous_panic_hook: PreviousHook::Replace,
            clock: Arc::new(SystemClock),
            health_checks: Vec::new(),
            reporters: Vec::new(),
            alert_channels: Vec::new(),
            audit: crate::audit::AuditOptions::default(),
        }
    }

    /// Adds a [`Reporter`] that every error report goes to after the local store (and after
    /// Sentry, when `[errors] sentry_dsn` is set).
    pub fn reporter(mut self, reporter: impl Reporter) -> Self {
        self.reporters.push(Arc::new(reporter));
        self
    }

    /// Adds an alert channel of your own named `name` (the `channel` label of its metrics), next
    /// to those of `[[alerts.channels]]`, with `[alerts] min_level` and no label matchers. When
    /// neither is given, alerts go to the log channel.
    pub fn alert_channel(mut self, name: impl Into<String>, channel: impl AlertChannel) -> Self {
        self.alert_channels.push((name.into(), Arc::new(channel)));
        self
    }

    /// Stores audit records in `sink` instead of the one `[audit] sink` names; `store` answers
    /// [`Observer::audit_query`] (none: queries fail). Defaults to the configured sink.
    pub fn audit_sink(
        mut self,
        sink: impl crate::audit::AuditSink,
        store: Option<Arc<dyn crate::audit::AuditStore>>,
    ) -> Self {
        self.audit.sink = Some((Box::new(sink), store));
        self
    }

    /// Called whenever audit records are lost (queue full past `[audit] block_timeout`, the
    /// sink failing past its retries, the pipeline shut down), after they are counted and
    /// logged: the place to raise a critical alert. Defaults to none.
    pub fn on_audit_loss(
        mut self,
        hook: impl Fn(&crate::audit::AuditLoss) + Send + Sync + 'static,
    ) -> Self {
        self.audit.on_loss = Some(Arc::new(hook));
        self
    }

    /// Resolves the actor of automatically audited requests (`[audit] routes`) from the request
    /// headers, instead of `[audit] actor_header`. The closure gets a header lookup.
    ///
    /// ```
    /// # let config = qiflow_core::test::quiet_config();
    /// let builder = qiflow_core::Observer::builder(config).audit_actor(|header| {
    ///     header("x-forwarded-user").or_else(|| header("x-user"))
    /// });
    /// ```
    pub fn audit_actor(
        mut self,
        actor: impl Fn(&dyn Fn(&str) -> Option<String>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.audit.actor = Some(Arc::new(actor));
        self
    }

    /// The keyring that encrypts audit records at rest (`[audit] encrypt = true`). Defaults to
    /// the one of `QIFLOW_MASTER_KEY` / `QIFLOW_MASTER_KEY_FILE`.
    pub fn audit_keyring(mut self, keyring: Arc<crate::secret::Keyring>) -> Self {
        self.audit.keyring = Some(keyring);
        self
    }

    /// Adds a readiness check named `name` (see [`crate::health`]). The built-in ones (log
    /// directory writable, free disk space, pipelines) are always there.
    pub fn health_check(mut self, name: impl Into<String>, check: impl HealthCheck) -> Self {
        self.health_checks.push((name.into(), Arc::new(check)));
        self
    }

    /// Whether `build` installs the process-wide pieces:
    ///
    /// - the tracing subscriber: [`Observer::log_filter`] (from `RUST_LOG` when set, else
    ///   `[logging] level`) in front of [`Observer::log_layer`] and
    ///   [`Observer::capture_layer`]; it also captures `log` records;
    /// - qiflow's metrics recorder as the global `metrics` recorder
    ///   ([`Observer::metrics_recorder`]);
    /// - the panic hook ([`Observer::install_panic_hook`]);
    /// - with `[errors] sentry_dsn` set (feature `sentry`), qiflow's Sentry client bound to
    ///   sentry's main hub (`Observer::sentry_client`), so `sentry::capture_*` in the
    ///   application goes through qiflow's transport. `build` fails with
    ///   [`InitErrorKind::GlobalAlreadySet`] when the hub already has a client.
    ///
    /// Defaults to `true`. With `false`, nothing process-wide is touched: the observer hands
    /// out each piece, for you to install or compose with your own (`docs/composition.md`).
    pub fn install_global(mut self, install: bool) -> Self {
        self.install_global = install;
        self
    }

    /// What the panic hook that `build` (or [`Observer::install_panic_hook`]) installs does with
    /// the hook installed before it.
    /// Defaults to [`PreviousHook::Replace`]: qiflow prints the panic message itself and the
    /// standard library's hook does not run, so a panic never resolves a backtrace on the
    /// panicking thread nor keeps debug info in memory. [`PreviousHook::Chain`] runs the
    /// previous hook too (an application hook set before `init` that must run on every panic).
    pub fn previous_panic_hook(mut self, previous: PreviousHook) -> Self {
        self.previous_panic_hook = previous;
        self
    }

    /// The clock for timestamps and rotation. Defaults to the system clock; tests pass a
    /// `ManualClock` (feature `test`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The most time the guard's drop may take to flush every pipeline. Defaults to 5 seconds.
    pub fn flush_budget(mut self, budget: Duration) -> Self {
        self.flush_budget = budget;
        self
    }

    /// Threads of the background runtime (at least 1). Defaults to 2, so one sink that blocks
    /// its thread does not stop the other pipelines.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads.max(1);
        self
    }

    /// Locks each directory the observer writes: `[service] state_dir`, `[logging] dir`, and
    /// the file sink's `[audit] dir` (each once; empty ones are not used). The locks are held by
    /// the [`Guard`] and released when it has flushed.
    fn lock_dirs(&self) -> Result<Vec<crate::files::DirLock>, InitError> {
        let config = &self.config;
        let mut dirs: Vec<(&std::path::Path, &str)> = vec![
            (&config.service.state_dir, "service.state_dir"),
            (&config.logging.dir, "logging.dir"),
        ];
        if config.audit.enabled
            && config.audit.sink == crate::config::AuditSinkKind::File
            && self.audit.sink.is_none()
        {
            dirs.push((&config.audit.dir, "audit.dir"));
        }
        let mut locked: Vec<std::path::PathBuf> = Vec::new();
        let mut locks = Vec::new();
        for (dir, key) in dirs {
            if dir.as_os_str().is_empty() {
                continue;
            }
            let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            if locked.contains(&canonical) {
                continue;
            }
            match crate::files::lock_dir(dir, key) {
                Ok(lock) => locks.push(lock),
                Err(crate::files::LockError::Busy(message)) => {
                    return Err(InitError {
                        kind: InitErrorKind::Config,
                        message,
                    });
                }
                // A directory that cannot be written is not refused here: its capability counts
                // its losses and the health checks report it, as without the lock.
                Err(crate::files::LockError::Io(message)) => {
                    eprintln!(
                        "qiflow: {message}; the directory is not locked against a second instance"
                    );
                }
            }
            locked.push(canonical);
        }
        Ok(locks)
    }

    /// Starts the background worker and returns the observer and its guard.
    ///
    /// Configuration warnings (plain values in secret keys, …) are emitted as `warn` events on
    /// target `qiflow::config`.
    pub fn build(mut self) -> Result<(Observer, Guard), InitError> {
        // First: the directories this instance writes are its own (a second process on them
        // fails here, before it touches a file).
        if self.install_global && tracing::dispatcher::has_been_set() {
            return Err(InitError {
                kind: InitErrorKind::GlobalAlreadySet,
                message: "cannot install qiflow's tracing subscriber: another global subscriber is installed (a second init?): \
                          build with Observer::builder(config).install_global(false) and add observer.log_layer() to yours"
                    .to_owned(),
            });
        }
        let locks = self.lock_dirs()?;
        // Who this process is among the service's instances: every capability below reads it
        // from `[service] instance`.
        let (instance, warning) =
            crate::deploy::instance::resolve(&self.config.service).map_err(|message| {
                InitError {
                    kind: InitErrorKind::Config,
                    message,
                }
            })?;
        if let Some(warning) = warning {
            eprintln!("{warning}");
        }
        self.config.service.instance = instance;
        let worker = Worker::start(self.worker_threads).map_err(|e| InitError {
            kind: InitErrorKind::Runtime,
            message: format!("cannot start the qiflow background runtime: {e}"),
        })?;
        let logging = &self.config.logging;
        let log_filter = initial_filter(&logging.level, std::env::var_os("RUST_LOG"))?;
        let slot = Arc::new(OnceLock::new());
        let policy =
            (!logging.dir.as_os_str().is_empty()).then(|| RotationPolicy::from_config(logging));
        let pool = Arc::new(crate::logging::pool::LinePool::default());
        let sink = LogSink::new(
            logging.stdout,
            logging.format,
            policy,
            self.clock.clone(),
            slot.clone(),
            pool.clone(),
        );
        let overflow = match logging.overflow {
            OverflowPolicy::Drop => Overflow::Drop,
            _ => Overflow::Block(BLOCK_TIMEOUT),
        };
        let logs = worker.add(
            PipelineOptions::new("logs")
                .capacity(logging.queue_capacity)
                .overflow(overflow)
                .batch_size(1024)
                // Gather lines for a few ms: one wake-up and one write per batch, not per line.
                .linger(LOG_LINGER)
                .report_errors(false)
                .flush_last(true),
            sink,
        );
        let _ = slot.set(logs.clone());
        let log_layer = LogLayer::new(
            logging.format,
            Redactor::new(&logging.redact),
            logs,
            self.clock.clone(),
            pool,
            &self.config.service.instance,
        );

        let metrics = Metrics::new(&self.config).map_err(|message| InitError {
            kind: InitErrorKind::Config,
            message,
        })?;
        {
            // Histogram upkeep keeps memory bounded.
            let metrics = metrics.clone();
            worker.handle().spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    metrics.run_upkeep();
                }
            });
        }

        // Process and machine metrics, sampled on the worker (the first sample at once).
        let system_sample = (metrics.enabled() && self.config.metrics.system).then(|| {
            let audit = &self.config.audit;
            let audit_dir = (audit.enabled && audit.sink == crate::config::AuditSinkKind::File)
                .then_some(audit.dir.as_path());
            let mut sampler =
                crate::system::Sampler::new(metrics.clone(), &self.config.logging.dir, audit_dir);
            let latest = sampler.latest();
            let every = self.config.metrics.system_interval;
            worker.handle().spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    sampler.sample();
                }
            });
            latest
        });

        // The dashboard's traffic history: a point every STEP, read from the request counters.
        let dashboard = self.config.admin.dashboard.then(|| {
            let traffic = Arc::new(crate::dashboard::history::Traffic::new(metrics.clone()));
            let ticking = traffic.clone();
            worker.handle().spawn(async move {
                let mut tick = tokio::time::interval(crate::dashboard::STEP);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    ticking.tick();
                }
            });
            super::dashboard::Dashboard::new(traffic)
        });

        let alerts = crate::alert::start(
            &self.config,
            self.clock.clone(),
            metrics.clone(),
            self.alert_channels,
            |options, sink| worker.add(options, sink),
            worker.handle(),
        )
        .map_err(|message| InitError {
            kind: InitErrorKind::Config,
            message,
        })?;
        {
            let alerts = alerts.clone();
            worker.on_shutdown(Box::new(move |_| alerts.abandon()));
        }
        let errors_config = &self.config.errors;
        let configured =
            crate::capture::configured_reporter(&self.config, &metrics).map_err(|message| {
                InitError {
                    kind: InitErrorKind::Config,
                    message,
                }
            })?;
        let mut reporters: Vec<Arc<dyn Reporter>> =
            configured.iter().map(|c| c.reporter.clone()).collect();
        reporters.extend(self.reporters);
        let error_store = Arc::new(ErrorStore::new(errors_config.recent_capacity));
        let errors = worker.add(
            PipelineOptions::new("errors")
                .capacity(crate::capture::QUEUE_CAPACITY)
                .overflow(Overflow::Drop)
                .batch_size(1)
                .report_errors(false),
            ErrorSink::new(
                error_store.clone(),
                reporters,
                self.config.service.version.clone(),
                self.config.service.environment.clone(),
            )
            .with_alerts(alerts.clone()),
        );
        // The client for sentry's hub: what the application sends with `sentry::capture_*`
        // goes through the Sentry reporter's transport, behind a queue of its own.
        #[cfg(feature = "sentry")]
        let sentry_client = configured.as_ref().map(|c| {
            Arc::new(crate::capture::hub_client(&c.sentry, |options, sink| {
                worker.add(options, sink)
            }))
        });
        #[cfg(not(feature = "sentry"))]
        drop(configured);
        let capturer = Arc::new(Capturer {
            pipeline: errors,
            redactor: Redactor::new(&logging.redact),
            event_level: if errors_config.event_level.eq_ignore_ascii_case("warn") {
                tracing::Level::WARN
            } else {
                tracing::Level::ERROR
            },
            policy: errors_config.capture,
            global_breadcrumbs: GlobalBreadcrumbs::default(),
            captured: Capturer::counters(&metrics),
        });
        let capture_layer = CaptureLayer::new(capturer.clone());

        let baselines = if self.config.baseline.enabled {
            let baselines = Arc::new(
                crate::baseline::Baselines::new(
                    self.config.baseline.clone(),
                    self.config.metrics.max_routes,
                    self.clock.clone(),
                    metrics.clone(),
                    Some(alerts.clone()),
                )
                .map_err(|message| InitError {
                    kind: InitErrorKind::Config,
                    message,
                })?,
            );
            {
                // Evaluate once a window has passed; checked every second (or every slot).
                let baselines = baselines.clone();
                let every = (self.config.baseline.window / crate::baseline::SLOTS as u32)
                    .clamp(Duration::from_millis(100), Duration::from_secs(1));
                worker.handle().spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        baselines.evaluate();
                    }
                });
            }
            {
                let baselines = baselines.clone();
                worker.on_shutdown(Box::new(move |_| baselines.persist()));
            }
            Some(baselines)
        } else {
            None
        };

        // Dependencies: registered by the application at run time, their pools sampled here.
        let dependencies = Arc::new(crate::dependency::Dependencies::new(
            self.config.dependencies.clone(),
            metrics.clone(),
            Some(alerts.clone()),
        ));
        {
            let dependencies = dependencies.clone();
            worker.handle().spawn(async move {
                // The first sample a period after the start: nothing is registered before.
                let every = crate::dependency::SAMPLE_EVERY;
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    dependencies.sample().await;
                }
            });
        }

        // This start, recorded among the last deployments.
        let deployment = crate::deploy::Deployment::of(&self.config, self.clock.now());
        let deployments =
            crate::deploy::Deployments::record(&self.config.service.state_dir, deployment.clone())
                .map_err(|message| InitError {
                    kind: InitErrorKind::Config,
                    message,
                })?;
        metrics
            .gauge("qiflow_deployment_timestamp_seconds", Vec::new())
            .set(
                self.clock
                    .now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            );

        // Scheduled jobs: evaluated every second on the worker, saved at shutdown.
        let jobs = crate::jobs::Jobs::new(
            &self.config.jobs,
            &self.config.service.state_dir,
            self.clock.clone(),
            metrics.clone(),
            Some(alerts.clone()),
            worker.handle().clone(),
        )
        .map_err(|message| InitError {
            kind: InitErrorKind::Config,
            message,
        })?;
        {
            let jobs = jobs.clone();
            worker.handle().spawn(async move {
                let mut tick = tokio::time::interval(crate::jobs::EVALUATE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    jobs.evaluate();
                }
            });
        }
        {
            let jobs = jobs.clone();
            worker.on_shutdown(Box::new(move |_| jobs.evaluate()));
        }

        // The `[authz]` policy (with the roles operators set, kept in the state directory); the
        // denial alerts of actors whose window emptied are resolved every few seconds.
        let authz = Arc::new(
            crate::authz::live::Live::new(&self.config.authz, &self.config.service.state_dir)
                .map_err(|message| InitError {
                    kind: InitErrorKind::Config,
                    message,
                })?,
        );
        if self.config.authz.denial_alert.count > 0 {
            let (authz, alerts, clock) = (authz.clone(), alerts.clone(), self.clock.clone());
            worker.handle().spawn(async move {
                let mut tick = tokio::time::interval(AUTHZ_SWEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    for actor in authz.sweep(clock.now()) {
                        let _ = alerts.raise(crate::alert::Alert::resolve(
                            super::authz::fingerprint(&actor),
                        ));
                    }
                }
            });
        }

        // Lost audit records raise a critical alert (then call the application's own hook).
        let mut audit_options = self.audit;
        {
            let alerts = alerts.clone();
            let hook = audit_options.on_loss.take();
            audit_options.on_loss = Some(Arc::new(move |loss: &crate::audit::AuditLoss| {
                let _ = alerts.raise(
                    crate::alert::Alert::new(
                        "audit_records_lost",
                        crate::alert::AlertLevel::Critical,
                    )
                    .summary(format!(
                        "{} audit record(s) lost in the {} sink",
                        loss.records, loss.sink
                    ))
                    .description(loss.reason.clone())
                    .label("sink", loss.sink)
                    .source("audit"),
                );
                if let Some(hook) = &hook {
                    hook(loss);
                }
            }));
        }
        // A trail behind its witness (cut), rewritten, without its witness, or under another
        // signing key: an alert.
        {
            let alerts = alerts.clone();
            audit_options.on_alarm = Some(Arc::new(
                move |sink: &'static str, alarm: &crate::audit::AuditAlarm| {
                    let level = if alarm.kind.is_critical() {
                        crate::alert::AlertLevel::Critical
                    } else if alarm.kind == crate::audit::AlarmKind::SigningKeyAdded {
                        crate::alert::AlertLevel::Warning
                    } else {
                        crate::alert::AlertLevel::Error
                    };
                    let summary = match alarm.kind {
                        crate::audit::AlarmKind::TrailCut => {
                            "the audit trail ends before its witness: records were deleted"
                        }
                        crate::audit::AlarmKind::WitnessMismatch => {
                            "the audit trail differs from its witness: it was rewritten"
                        }
                        crate::audit::AlarmKind::WitnessMissing => {
                            "the audit witness is missing or unreadable"
                        }
                        crate::audit::AlarmKind::SigningKeyAdded => {
                            "a signing key was set on an audit trail sealed without one"
                        }
                        crate::audit::AlarmKind::SigningKeyChanged => {
                            "the audit signing key differs from the trail's"
                        }
                        _ => "the audit witness cannot be written",
                    };
                    let _ = alerts.raise(
                        crate::alert::Alert::new(alarm.kind.alert_name(), level)
                            .summary(summary)
                            .description(alarm.message.clone())
                            .label("sink", sink)
                            .source("audit"),
                    );
                },
            ));
        }
        let audit_custom_sink = audit_options.sink.is_some();
        let auditor = crate::audit::start(
            &self.config,
            &worker,
            &metrics,
            self.clock.clone(),
            audit_options,
        )
        .map_err(|message| InitError {
            kind: InitErrorKind::Audit,
            message,
        })?;
        let (admin, admin_warnings) = crate::admin::Gate::new(&self.config, metrics.clone())
            .map_err(|message| InitError {
                kind: InitErrorKind::Admin,
                message,
            })?;
        #[cfg(feature = "otlp")]
        let traces = crate::export::sink(&self.config)
            .map_err(|message| InitError {
                kind: InitErrorKind::Config,
                message,
            })?
            .map(|sink| {
                worker.add(
                    PipelineOptions::new("traces")
                        .capacity(crate::export::QUEUE_CAPACITY)
                        .overflow(Overflow::Drop)
                        .batch_size(crate::export::BATCH_SIZE)
                        .linger(crate::export::LINGER),
                    sink,
                )
            });
        let worker = Arc::new(worker);
        let guard = Guard::new(worker.clone(), self.flush_budget, locks);
        #[cfg(feature = "otlp")]
        let trace_layer = traces
            .clone()
            .map(|pipeline| crate::export::TraceLayer::new(Some(pipeline)));
        #[cfg(not(feature = "otlp"))]
        let trace_layer: Option<tracing_subscriber::layer::Identity> = None;
        #[cfg(feature = "sentry")]
        if self.install_global && sentry_client.is_some() && sentry::Hub::main().client().is_some()
        {
            return Err(InitError {
                kind: InitErrorKind::GlobalAlreadySet,
                message: "cannot bind qiflow's Sentry client to sentry's main hub: it already has a client (sentry::init was called); \
                          build with Observer::builder(config).install_global(false), or leave [errors] sentry_dsn unset and keep your own"
                    .to_owned(),
            });
        }
        if self.install_global {
            tracing_subscriber::registry()
                .with(log_filter.clone())
                .with(log_layer.clone())
                .with(capture_layer)
                .with(trace_layer)
                .try_init()
                .map_err(|e| InitError {
                    kind: InitErrorKind::GlobalAlreadySet,
                    message: format!(
                        "cannot install qiflow's tracing subscriber ({e}); another global subscriber or logger is installed: \
                         build with Observer::builder(config).install_global(false) and add observer.log_layer() to yours"
                    ),
                })?;
            metrics::set_global_recorder(metrics.global_recorder()).map_err(|e| InitError {
                kind: InitErrorKind::GlobalAlreadySet,
                message: format!(
                    "cannot install qiflow's metrics recorder ({e}); another global metrics recorder is installed: \
                     build with Observer::builder(config).install_global(false)"
                ),
            })?;
            #[cfg(feature = "sentry")]
            if let Some(client) = &sentry_client {
                sentry::Hub::main().bind_client(Some(client.clone()));
            }
        }
        // After the subscriber is installed, so the warnings reach the log.
        // Advice (`qiflow check` prints it as `advice:`) is information; what is unsafe warns.
        for warning in self.config.warnings() {
            if warning.kind() == crate::config::ProblemKind::Advice {
                tracing::info!(target: "qiflow::config", key = warning.path(), "{}", warning.message());
            } else {
                tracing::warn!(target: "qiflow::config", key = warning.path(), "{}", warning.message());
            }
        }
        for warning in admin_warnings {
            tracing::warn!(target: "qiflow::admin", "{warning}");
        }
        log_operator_surface(&self.config, &admin);
        // What the audit sink found when it opened the trail (a cut, a missing witness): logged
        // now that the subscriber is installed, and alerted.
        if let Some(auditor) = &auditor {
            auditor.publish_startup();
        }
        let mut health_checks = self.health_checks;
        health_checks.push(("alerts".into(), Arc::new(alerts.health_check())));
        if !self.config.logging.dir.as_os_str().is_empty() {
            let dir = self.config.logging.dir.clone();
            health_checks.push((
                "log_dir".into(),
                Arc::new(DirWritableCheck::new(dir.clone())),
            ));
            health_checks.push((
                "disk".into(),
                Arc::new(DiskSpaceCheck::new(dir, LOW_DISK_BYTES)),
            ));
        }
        if auditor.is_some()
            && self.config.audit.sink == crate::config::AuditSinkKind::File
            && !audit_custom_sink
        {
            health_checks.push((
                "audit_dir".into(),
                Arc::new(DirWritableCheck::new(self.config.audit.dir.clone())),
            ));
        }
        let invalid = |header: &'static str| {
            metrics.counter(
                "qiflow_trace_context_invalid_total",
                vec![metrics::Label::new("header", header)],
            )
        };
        let propagator = crate::propagation::Propagator::new(
            &self.config.tracing,
            invalid("traceparent"),
            invalid("tracestate"),
        );
        let observer = Observer {
            inner: Arc::new(Inner {
                #[cfg(feature = "otlp")]
                traces,
                propagator,
                config: self.config,
                started: Instant::now(),
                clock: self.clock.clone(),
                worker,
                log_layer,
                log_filter,
                previous_panic_hook: self.previous_panic_hook,
                #[cfg(feature = "sentry")]
                sentry_client,
                metrics,
                system_sample,
                dashboard,
                health_checks,
                capturer,
                error_store,
                alerts,
                baselines,
                jobs,
                dependencies,
                authz,
                deployments,
                auditor,
                admin,
            }),
        };
        if self.install_global {
            observer.install_panic_hook();
            super::authz::reload_on_sighup(&observer);
        }
        observer.announce(&deployment);
        Ok((observer, guard))
    }
}

/// The filter `build` starts with: `rust_log` (the `RUST_LOG` variable) when it is set and not
/// blank, else `level` (`[logging] level`). A filter that does not parse is a configuration
/// error naming where it came from.
fn initial_filter(
    level: &str,
    rust_log: Option<std::ffi::OsString>,
) -> Result<LogFilter, InitError> {
    let config_error = |message| InitError {
        kind: InitErrorKind::Config,
        message,
    };
    if let Some(value) = rust_log.filter(|v| !v.to_string_lossy().trim().is_empty()) {
        let Some(text) = value.to_str() else {
            return Err(config_error(
                "RUST_LOG is not valid UTF-8; set it to a level like \"info\" or directives like \"info,hyper=warn\", or unset it to use logging.level".to_owned(),
            ));
        };
        return match crate::logging::parse_filter(text) {
            Ok(parsed) => Ok(LogFilter::new(text, parsed, FilterSource::Env)),
            Err(e) => Err(config_error(format!(
                "RUST_LOG: {e}; RUST_LOG, when set, overrides logging.level: fix it or unset it"
            ))),
        };
    }
    crate::logging::parse_filter(level)
        .map(|parsed| LogFilter::new(level, parsed, FilterSource::Config))
        .map_err(|e| config_error(format!("logging.level: {e}")))
}

/// What kind of failure an [`InitError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitErrorKind {
    /// The background runtime could not be started.
    Runtime,
    /// The configuration cannot be used (e.g. an invalid `[logging] level` filter).
    Config,
    /// Another global tracing subscriber or `log` logger is already installed.
    GlobalAlreadySet,
    /// The audit trail cannot be opened (its directory, its last segment, the keyring).
    Audit,
    /// The operator surface cannot start: its token file cannot be read or made.
    Admin,
}

/// `init` or [`ObserverBuilder::build`] failed.
#[derive(Debug, Clone)]
pub struct InitError {
    kind: InitErrorKind,
    message: String,
}

impl InitError {
    /// What kind of failure this is.
    pub fn kind(&self) -> InitErrorKind {
        self.kind
    }
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InitError {}

/// Logs where the operator surface is and how to get in (the token file's path, never the
/// token); when stdout is a terminal, also prints it as one plain line on stderr
/// ([`surface_line`]), so a person starting the service sees the URL without reading JSON.
fn log_operator_surface(config: &Config, admin: &crate::admin::Gate) {
    let generated = admin.generated_token_file();
    if let Some(listen) = config.operator_listener() {
        tracing::info!(
            target: "qiflow::admin",
            listen = %listen,
            "qiflow's operator surface is on the operator listener http://{listen}/qiflow/ (trusted: no token asked there)"
        );
    } else if let Some(file) = generated {
        let url = format!("http://{}/qiflow/", config.server.addr);
        tracing::info!(
            target: "qiflow::admin",
            url = %url,
            file = %file.display(),
            "qiflow's operator surface and dashboard are at {url}; they need the token kept in {} (open {url}#token=<the token> in a browser; curl -H \"Authorization: Bearer $(cat {})\" {url}api/errors)",
            file.display(),
            file.display()
        );
    } else if config.admin.tokens.is_empty() && config.health.token.is_none() {
        tracing::warn!(
            target: "qiflow::admin",
            "qiflow's operator surface has no token ([admin] token_file = \"\" and no [[admin.tokens]]): /qiflow/ and /qiflow/api/* refuse every request"
        );
    }
    {
        use std::io::IsTerminal as _;
        if std::io::stdout().is_terminal() {
            eprintln!("{}", surface_line(config, generated));
        }
    }
}

/// The one plain line printed on stderr at start when stdout is a terminal: the URL of the
/// operator surface and how to get in. It names the token's file, never the token. An address
/// that listens everywhere (`0.0.0.0`, `::`) is shown as the loopback address, which a browser
/// on the same host can open.
fn surface_line(config: &Config, generated: Option<&std::path::Path>) -> String {
    let openable = |addr: std::net::SocketAddr| {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            }
            ip => ip,
        };
        std::net::SocketAddr::new(ip, addr.port())
    };
    if let Some(listen) = config.operator_listener() {
        let url = format!("http://{}/qiflow/", openable(listen));
        return format!(
            "qiflow: operator surface at {url} (the operator listener: no token asked there)"
        );
    }
    let url = format!("http://{}/qiflow/", openable(config.server.addr));
    if let Some(file) = generated {
        let file = file.display();
        format!(
            "qiflow: operator surface at {url} \u{2014} token in {file} (dashboard: open {url}#token=<the token>; curl -H \"Authorization: Bearer $(cat {file})\" {url}api/errors)"
        )
    } else if config.admin.tokens.is_empty() && config.health.token.is_none() {
        format!(
            "qiflow: operator surface at {url} refuses every request: no token is configured ([admin] token_file = \"\" and no [[admin.tokens]])"
        )
    } else {
        format!(
            "qiflow: operator surface at {url} \u{2014} send a token of [[admin.tokens]] (curl -H \"Authorization: Bearer <token>\" {url}api/errors)"
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::{initial_filter, surface_line};
    use crate::config::{AdminToken, Config, TokenScope};
    use crate::logging::FilterSource;

    #[test]
    fn rust_log_when_set_and_not_blank_overrides_the_configured_level() {
        let start = |level: &str, rust_log: Option<&str>| {
            initial_filter(level, rust_log.map(Into::into)).map(|f| f.current_with_source())
        };
        assert_eq!(
            start("warn", None).unwrap(),
            ("warn".into(), FilterSource::Config)
        );
        assert_eq!(
            start("warn", Some("debug,hyper=info")).unwrap(),
            ("debug,hyper=info".into(), FilterSource::Env)
        );
        // Set but empty (or blank): as if unset.
        for blank in ["", "  "] {
            assert_eq!(
                start("warn", Some(blank)).unwrap(),
                ("warn".into(), FilterSource::Config)
            );
        }
        // A bad RUST_LOG fails even with a good level, naming RUST_LOG and what to do.
        let e = start("info", Some("info,hyper=loud")).unwrap_err();
        assert_eq!(e.kind(), super::InitErrorKind::Config);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "RUST_LOG: invalid log filter \"info,hyper=loud\": the directive \"hyper=loud\""
            ),
            "{text}"
        );
        assert!(
            text.ends_with("overrides logging.level: fix it or unset it"),
            "{text}"
        );
        // A bad level with RUST_LOG set is not looked at; without, it fails naming the key.
        assert!(start("info,[open", Some("info")).is_ok());
        let text = start("info,[open", None).unwrap_err().to_string();
        assert!(
            text.starts_with("logging.level: invalid log filter \"info,[open\""),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_rust_log_that_is_not_utf8_is_refused_naming_it() {
        use std::os::unix::ffi::OsStringExt;
        let e = initial_filter("info", Some(std::ffi::OsString::from_vec(vec![0xff, b'x'])))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("RUST_LOG is not valid UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn the_plain_start_up_line_names_the_url_and_the_token_file_never_the_token() {
        let mut config = Config::default();
        config.server.addr = "127.0.0.1:3000".parse().unwrap();
        assert_eq!(
            surface_line(&config, Some(Path::new("data/admin-token"))),
            "qiflow: operator surface at http://127.0.0.1:3000/qiflow/ \u{2014} token in data/admin-token \
             (dashboard: open http://127.0.0.1:3000/qiflow/#token=<the token>; \
             curl -H \"Authorization: Bearer $(cat data/admin-token)\" http://127.0.0.1:3000/qiflow/api/errors)"
        );
        // Listening everywhere: the URL a browser on this host opens.
        config.server.addr = "0.0.0.0:8080".parse().unwrap();
        let line = surface_line(&config, Some(Path::new("data/admin-token")));
        assert!(
            line.starts_with("qiflow: operator surface at http://127.0.0.1:8080/qiflow/ "),
            "{line}"
        );
        config.server.addr = "[::]:8080".parse().unwrap();
        let line = surface_line(&config, Some(Path::new("data/admin-token")));
        assert!(line.contains("http://[::1]:8080/qiflow/"), "{line}");
    }

    #[test]
    fn the_plain_start_up_line_for_configured_tokens_the_listener_and_no_token() {
        let mut config = Config::default();
        config.server.addr = "127.0.0.1:3000".parse().unwrap();
        let token = "s3cret-operator-token-0123456789";
        config.admin.tokens = vec![AdminToken::new("ops", token, TokenScope::Read)];
        let line = surface_line(&config, None);
        assert!(line.contains("a token of [[admin.tokens]]"), "{line}");
        assert!(!line.contains(token), "{line}");

        config.admin.tokens.clear();
        let line = surface_line(&config, None);
        assert!(line.contains("refuses every request"), "{line}");

        config.admin.listen = Some("127.0.0.1:9464".parse().unwrap());
        assert_eq!(
            surface_line(&config, None),
            "qiflow: operator surface at http://127.0.0.1:9464/qiflow/ (the operator listener: no token asked there)"
        );
    }
}
