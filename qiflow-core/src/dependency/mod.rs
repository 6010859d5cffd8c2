//! Dependencies: the databases, caches and services the application calls, watched the way
//! incoming requests are.
//!
//! Register one with [`Observer::dependency`](crate::Observer::dependency) and keep the
//! [`Dependency`] handle beside the pool:
//!
//! ```
//! # async fn demo(observer: qiflow_core::Observer) -> Result<(), std::io::Error> {
//! use qiflow_core::dependency::DependencyKind;
//!
//! let db = observer.dependency("main-db", DependencyKind::Postgres);
//! // Any call: its duration and outcome, under the operation's name.
//! let rows: Vec<u32> = db.observe("SELECT", async { Ok::<_, std::io::Error>(vec![1, 2]) }).await?;
//! // A statement: the operation is its first keyword, and a slow one is logged normalized.
//! let n = db
//!     .query("SELECT count(*) FROM users WHERE active", async { Ok::<_, std::io::Error>(42) })
//!     .await?;
//! # let _ = (rows, n);
//! # Ok(())
//! # }
//! ```
//!
//! What a registered dependency gives:
//!
//! - `db_client_operation_duration_seconds{db_system, db_operation, outcome, pool}` for every
//!   observed call (the OpenTelemetry database client metric as Prometheus names it; `outcome`
//!   is `ok` or `error`); operations past [`MAX_OPERATIONS`] per dependency fold into `other`;
//! - errors counted by class on `qiflow_dependency_errors_total{pool, class}` (`connection`,
//!   `timeout`, `query`: see [`ErrorClass`]);
//! - a call slower than `[dependencies.NAME] slow` (2 s by default) writes one `warn` line on
//!   target `qiflow::dependency` (with the statement, literals replaced: [`normalize`]), counts
//!   `qiflow_dependency_slow_total{pool}` and raises the alert `dependency_slow` (one per
//!   dependency and operation, deduplicated by the router). The line is written in the caller's
//!   task, so inside a request it carries the request's `request_id` and `trace_id`;
//! - with a [`PoolStats`] source ([`Dependency::pool`]), sampled every [`SAMPLE_EVERY`] on
//!   qiflow's worker: `db_client_connection_count{pool, state="idle"|"used"}`,
//!   `db_client_connection_max{pool}`, `db_client_connection_pending_requests{pool}`; waiters
//!   above `[dependencies.NAME] max_pending` (or an acquire that timed out,
//!   [`Dependency::acquire_timed_out`]) raise `dependency_saturated`, resolved by a sample
//!   with no caller waiting (or a connection free) and no time-out since the one before;
//! - the share of failed calls over `[dependencies.NAME] error_window`, judged every
//!   [`SAMPLE_EVERY`]: over `error_ratio` it raises `dependency_errors`;
//! - with a readiness check ([`Dependency::readiness`]), a check `dependency:NAME` in
//!   `/health/ready`, run in parallel with the others, bounded by `[dependencies.NAME]
//!   timeout`, its result kept for `[dependencies.NAME] cache` so a burst of probes pings once;
//!   `critical = false` makes a failing dependency degrade readiness instead of failing it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Label};

use crate::alert::{Alert, AlertLevel, Alerts};
use crate::config::DependencyConfig;
use crate::health::{CheckResult, HealthCheck, Status};
use crate::metrics::Metrics;
use crate::worker::BoxFuture;

pub(crate) mod check;
mod statement;
use statement::operation_in;
pub use statement::{MAX_STATEMENT, normalize, operation_of};

#[cfg(feature = "bb8")]
mod bb8;
#[cfg(feature = "postgres")]
mod deadpool;
#[cfg(feature = "reqwest-middleware")]
mod http;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlx")]
mod sqlx;
#[cfg(feature = "reqwest-middleware")]
pub use http::HttpClientMiddleware;

/// Distinct operation names kept per dependency; later ones are recorded as `other`.
pub const MAX_OPERATIONS: usize = 64;

/// How often registered pools are sampled and error rates judged.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The fewest calls over `[dependencies.NAME] error_window` on which the error rate is judged:
/// below it, two failures out of three calls at night raise nothing.
pub const MIN_CALLS: u64 = 20;

/// The most error-rate samples kept per dependency, however often [`Dependency::sample`] runs.
const MAX_WINDOW_SAMPLES: usize = 1024;

/// What kind of system a dependency is: its `db_system` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DependencyKind {
    /// PostgreSQL (`postgresql`).
    Postgres,
    /// MySQL or MariaDB (`mysql`).
    Mysql,
    /// SQLite (`sqlite`).
    Sqlite,
    /// Redis or a server speaking its protocol (`redis`).
    Redis,
    /// Another service over HTTP (`http`).
    Http,
    /// Anything else (`other`).
    Other,
}

impl DependencyKind {
    /// The `db_system` label: the OpenTelemetry `db.system` value.
    pub fn system(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
            Self::Redis => "redis",
            Self::Http => "http",
            Self::Other => "other",
        }
    }

    /// The readiness ping an integration runs for this kind: `SELECT 1` for SQL, `PING` for
    /// Redis.
    pub fn ping(self) -> &'static str {
        match self {
            Self::Redis => "PING",
            _ => "SELECT 1",
        }
    }
}

/// Why a call failed, as counted on `qiflow_dependency_errors_total{class}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The dependency could not be reached or the connection broke.
    Connection,
    /// No answer in time (a timeout, or no connection free in time).
    Timeout,
    /// The dependency answered with an error (a bad query, a constraint, a 5xx).
    Query,
}

impl ErrorClass {
    /// The `class` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Query => "query",
        }
    }

    /// The class of `error`, from it and its sources: an I/O error that refused, reset, broke
    /// or was not connected is [`Connection`](Self::Connection); one that timed out, or a
    /// `tokio::time` elapsed error, is [`Timeout`](Self::Timeout); with the `postgres` feature,
    /// a `tokio_postgres` error on a closed connection is `Connection` and a deadpool timeout is
    /// `Timeout`; with `sqlx`, a sqlx error by its variant (`PoolTimedOut` is `Timeout`; I/O,
    /// TLS, protocol, a closed pool are `Connection`); anything else is [`Query`](Self::Query).
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        classify(error).class
    }
}

/// An error's class, and whether it is a pool's "no connection free in time".
#[derive(Clone, Copy)]
struct Classified {
    class: ErrorClass,
    /// deadpool's `PoolError::Timeout` (feature `postgres`) or sqlx's `PoolTimedOut` (feature
    /// `sqlx`): the pool is saturated too.
    acquire_timeout: bool,
}

/// [`ErrorClass::of`], and whether the error is a pool's acquire time-out, in one walk of the
/// error and its sources.
fn classify(error: &(dyn std::error::Error + 'static)) -> Classified {
    let class = |class| Classified {
        class,
        acquire_timeout: false,
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut | K::WouldBlock => return class(ErrorClass::Timeout),
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::AddrNotAvailable => return class(ErrorClass::Connection),
                _ => {}
            }
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return class(ErrorClass::Timeout);
        }
        #[cfg(feature = "postgres")]
        if let Some(found) = deadpool::class_of(e) {
            return Classified {
                class: found,
                acquire_timeout: deadpool::is_acquire_timeout(e),
            };
        }
        #[cfg(feature = "sqlx")]
        if let Some(found) = sqlx::class_of(e) {
            return Classified {
                class: found,
                acquire_timeout: sqlx::is_acquire_timeout(e),
            };
        }
        next = e.source();
    }
    class(ErrorClass::Query)
}

/// A pool's figures at one moment (see [`PoolStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSample {
    /// Connections open and idle.
    pub idle: u64,
    /// Connections open and lent out.
    pub used: u64,
    /// The most connections the pool opens.
    pub max: u64,
    /// Callers waiting for a connection, as the pool counts them (0 when it does not); a sample
    /// taken by [`Dependency::sample`] holds at least the callers inside [`Dependency::acquire`].
    pub pending: u64,
    /// The pool's own acquire totals, when it keeps them (bb8 does).
    pub acquires: Option<AcquireTotals>,
}

impl PoolSample {
    /// A sample of `idle` and `used` connections out of `max`, with `pending` waiters.
    pub fn new(idle: u64, used: u64, max: u64, pending: u64) -> Self {
        Self {
            idle,
            used,
            max,
            pending,
            acquires: None,
        }
    }

    /// The sample with the pool's own acquire totals: from one sample to the next, their
    /// growth feeds `db_client_connection_wait_time_seconds` and timed-out acquires saturate
    /// the pool, as [`Dependency::acquire`] does for pools that keep no totals.
    pub fn with_acquires(mut self, totals: AcquireTotals) -> Self {
        self.acquires = Some(totals);
        self
    }
}

/// A pool's acquire totals since it was built (see [`PoolSample::with_acquires`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcquireTotals {
    /// Acquires that found a connection free at once.
    pub direct: u64,
    /// Acquires that waited for one and got it.
    pub waited: u64,
    /// Acquires that waited and gave up.
    pub timed_out: u64,
    /// The time spent waiting, by the acquires that waited or timed out.
    pub wait_time: Duration,
}

impl AcquireTotals {
    /// Totals of `direct`, `waited` and `timed_out` acquires that waited `wait_time` in all.
    pub fn new(direct: u64, waited: u64, timed_out: u64, wait_time: Duration) -> Self {
        Self {
            direct,
            waited,
            timed_out,
            wait_time,
        }
    }
}

/// A connection pool's figures, read on qiflow's worker every [`SAMPLE_EVERY`]. Implemented
/// for closures returning a [`PoolSample`], and (feature `postgres`) for
/// `deadpool_postgres::Pool`.
pub trait PoolStats: Send + Sync + 'static {
    /// The pool's figures now. Must not block.
    fn sample(&self) -> PoolSample;
}

impl<F: Fn() -> PoolSample + Send + Sync + 'static> PoolStats for F {
    fn sample(&self) -> PoolSample {
        self()
    }
}

/// Figures read from the dependency itself (Redis's `INFO`), asynchronously, on the worker's
/// sampling tick. Implemented by the integrations.
pub(crate) trait RemoteStats: Send + Sync + 'static {
    /// Reads the figures and sets their gauges; bounded by the caller.
    fn sample(&self) -> BoxFuture<'_, ()>;
}

/// How long one remote sample may take.
const REMOTE_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool's saturation state (see [`Dependency::acquire_timed_out`]).
#[derive(Default)]
struct Saturation {
    saturated: bool,
    timed_out_since_sample: bool,
}

/// The histograms of one operation.
struct Operation {
    ok: Histogram,
    error: Histogram,
}

struct PoolGauges {
    stats: Arc<dyn PoolStats>,
    idle: Gauge,
    used: Gauge,
    max: Gauge,
    pending: Gauge,
}

/// A readiness check and its last result.
struct Readiness {
    check: Arc<dyn HealthCheck>,
    last: Mutex<Option<(Instant, CheckResult)>>,
}

struct Inner {
    name: String,
    kind: DependencyKind,
    settings: DependencyConfig,
    metrics: Metrics,
    alerts: Option<Alerts>,
    operations: RwLock<HashMap<String, Operation, foldhash::fast::RandomState>>,
    other: Operation,
    slow: Counter,
    errors: [Counter; 3],
    /// Failed calls by class since the start (the error-rate window and the dashboard read
    /// them).
    failed_by_class: [AtomicU64; 3],
    /// `db_client_connection_wait_time_seconds`, made at the first acquire timed.
    wait: OnceLock<Histogram>,
    /// Callers inside [`Dependency::acquire`] now.
    acquiring: AtomicU64,
    /// Whether the pool is saturated, and whether an acquire timed out since the last sample;
    /// changed and alerted under this one lock, so the alert follows the state in order.
    saturation: Mutex<Saturation>,
    /// The pool reports its own acquire totals (bb8): `acquire` only counts its waiters.
    own_totals: AtomicBool,
    /// `(when, calls, failed by class)` at each sample within the error window.
    window: Mutex<VecDeque<(Instant, u64, [u64; 3])>>,
    error_ratio: Gauge,
    erroring: AtomicBool,
    pool: Mutex<Option<PoolGauges>>,
    readiness: Mutex<Option<Arc<Readiness>>>,
    /// What the dashboard shows: calls and slow calls since the start, and the pool's latest
    /// sample.
    calls: AtomicU64,
    slow_calls: AtomicU64,
    last_sample: Mutex<Option<PoolSample>>,
    /// The latest judged error ratio, as `f64` bits (the dashboard reads it).
    last_ratio: AtomicU64,
    remote: Mutex<Option<Arc<dyn RemoteStats>>>,
}

/// A dependency as the `/qiflow/` page shows it (`dependencies` in the overview).
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct DependencyView {
    /// The name it was registered with.
    pub name: String,
    /// Its `db_system`.
    pub system: &'static str,
    /// Calls observed since the start.
    pub calls: u64,
    /// Of which failed.
    pub failed: u64,
    /// Of which slow.
    pub slow: u64,
    /// `[dependencies.NAME] slow`, in milliseconds.
    pub slow_ms: u64,
    /// The pool's latest sample, when it has a pool.
    pub pool: Option<PoolView>,
    /// Whether `dependency_saturated` is raised.
    pub saturated: bool,
    /// The share of calls that failed over `error_window`, at the latest sample.
    pub error_ratio: f64,
    /// Whether `dependency_errors` is raised.
    pub erroring: bool,
    /// The readiness check's latest result, when it has one and it has run.
    pub readiness: Option<CheckResult>,
}

/// A pool's latest sample, in [`DependencyView`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[non_exhaustive]
pub struct PoolView {
    /// Idle connections.
    pub idle: u64,
    /// Connections lent out.
    pub used: u64,
    /// The most it opens.
    pub max: u64,
    /// Callers waiting.
    pub pending: u64,
}

/// A registered dependency (see the [module docs](self)). Cheap to clone; every clone is the
/// same dependency.
#[derive(Clone)]
pub struct Dependency {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependency")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.kind)
            .finish_non_exhaustive()
    }
}

impl Dependency {
    fn new(
        name: &str,
        kind: DependencyKind,
        settings: DependencyConfig,
        metrics: Metrics,
        alerts: Option<Alerts>,
    ) -> Self {
        let other = operation(&metrics, name, kind, "other");
        let pool_label = || vec![Label::new("pool", name.to_owned())];
        let error = |class: ErrorClass| {
            metrics.counter(
                "qiflow_dependency_errors_total",
                vec![
                    Label::new("pool", name.to_owned()),
                    Label::new("class", class.as_str()),
                ],
            )
        };
        let errors = [
            error(ErrorClass::Connection),
            error(ErrorClass::Timeout),
            error(ErrorClass::Query),
        ];
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                kind,
                settings,
                slow: metrics.counter("qiflow_dependency_slow_total", pool_label()),
                error_ratio: metrics.gauge("qiflow_dependency_error_ratio", pool_label()),
                errors,
                failed_by_class: Default::default(),
                wait: OnceLock::new(),
                acquiring: AtomicU64::new(0),
                saturation: Mutex::new(Saturation::default()),
                own_totals: AtomicBool::new(false),
                window: Mutex::new(VecDeque::new()),
                erroring: AtomicBool::new(false),
                metrics,
                alerts,
                operations: RwLock::new(HashMap::default()),
                other,
                pool: Mutex::new(None),
                readiness: Mutex::new(None),
                calls: AtomicU64::new(0),
                slow_calls: AtomicU64::new(0),
                last_sample: Mutex::new(None),
                last_ratio: AtomicU64::new(0),
                remote: Mutex::new(None),
            }),
        }
    }

    /// The name it was registered with (the `pool` label).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What kind of system it is.
    pub fn kind(&self) -> DependencyKind {
        self.inner.kind
    }

    /// Runs `call`, recording its duration and outcome as `operation` (a bounded name such as
    /// `SELECT` or `GET /v1/charge`, never a value), and returns its result unchanged. A call
    /// slower than `[dependencies.NAME] slow` is logged, counted and alerted (see the module
    /// docs); an error is counted by its [`ErrorClass`].
    pub async fn observe<F, T, E>(&self, operation: &str, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        self.timed(operation, None, call).await
    }

    /// [`observe`](Self::observe) for a statement: the operation is its first keyword
    /// ([`operation_of`]), and a slow one's log line carries the statement with its literals
    /// replaced ([`normalize`]; parameters and values never reach a log line, an alert or a
    /// label).
    pub async fn query<F, T, E>(&self, statement: &str, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let mut buf = Default::default();
        self.timed(operation_in(statement, &mut buf), Some(statement), call)
            .await
    }

    /// Runs a pool's acquire (`pool.get()`, `pool.acquire()`), timing the wait on
    /// `db_client_connection_wait_time_seconds{pool}` and counting the caller as waiting
    /// meanwhile (a sample's `pending` is at least the callers inside `acquire`: for pools that
    /// tell no waiters, sqlx and bb8, they are the waiters). An acquire that fails with a
    /// [`Timeout`](ErrorClass::Timeout) is [`acquire_timed_out`](Self::acquire_timed_out);
    /// another failure is counted by its class. For a pool that reports its own acquire totals
    /// ([`PoolSample::with_acquires`], bb8), only the waiters are counted: the pool's totals
    /// give the waits and time-outs.
    ///
    /// ```
    /// # async fn demo(db: qiflow_core::dependency::Dependency) -> Result<(), std::io::Error> {
    /// # let pool_get = async { Ok::<_, std::io::Error>(()) };
    /// let conn = db.acquire(pool_get).await?;
    /// # let _ = conn;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire<F, C, E>(&self, acquire: F) -> Result<C, E>
    where
        F: Future<Output = Result<C, E>>,
        E: std::error::Error + 'static,
    {
        /// Counts the caller out again however the acquire ends (done, failed or dropped).
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.inner.acquiring.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.inner.acquiring);
        let started = Instant::now();
        let result = acquire.await;
        drop(waiting);
        // A pool that keeps its own totals (bb8) reports its waits and time-outs itself.
        if self.inner.own_totals.load(Ordering::Relaxed) {
            return result;
        }
        self.wait_histogram()
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            match ErrorClass::of(e) {
                ErrorClass::Timeout => self.acquire_timed_out(),
                class => self.inner.errors[class as usize].increment(1),
            }
        }
        result
    }

    /// Callers inside [`acquire`](Self::acquire) now.
    pub fn acquiring(&self) -> u64 {
        self.inner.acquiring.load(Ordering::Relaxed)
    }

    fn wait_histogram(&self) -> &Histogram {
        self.inner.wait.get_or_init(|| {
            self.inner.metrics.histogram(
                "db_client_connection_wait_time_seconds",
                vec![Label::new("pool", self.inner.name.clone())],
            )
        })
    }

    async fn timed<F, T, E>(
        &self,
        operation: &str,
        statement: Option<&str>,
        call: F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let started = Instant::now();
        let result = call.await;
        let classified = result.as_ref().err().map(|e| classify(e));
        self.record(
            operation,
            statement,
            started.elapsed(),
            classified.map(|c| c.class),
        );
        // A statement run on the pool itself (sqlx's `fetch_one(&pool)`) acquires inside it:
        // its acquire time-out is the pool's saturation too.
        if classified.is_some_and(|c| c.acquire_timeout) {
            self.timed_out_without_count(|| {
                "a call timed out waiting for a connection: none was free in time".into()
            });
        }
        result
    }

    /// Records a call that took `took` (for integrations that time calls themselves):
    /// `error` is its failure class, `None` when it succeeded.
    pub fn record(
        &self,
        operation: &str,
        statement: Option<&str>,
        took: Duration,
        error: Option<ErrorClass>,
    ) {
        let seconds = took.as_secs_f64();
        self.with_operation(operation, |op| match error {
            None => op.ok.record(seconds),
            Some(_) => op.error.record(seconds),
        });
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(class) = error {
            self.inner.errors[class as usize].increment(1);
            self.inner.failed_by_class[class as usize].fetch_add(1, Ordering::Relaxed);
        }
        if took >= self.inner.settings.slow {
            self.slow(operation, statement, took);
        }
    }

    /// An acquire that found no free connection in time: counted as a `timeout` error and
    /// raised as `dependency_saturated`, resolved by the first sample after the next one that
    /// sees no time-out and the pool with room.
    pub fn acquire_timed_out(&self) {
        self.timed_out(1);
    }

    fn timed_out(&self, n: u64) {
        self.inner.errors[ErrorClass::Timeout as usize].increment(n);
        self.timed_out_without_count(|| {
            if n == 1 {
                "an acquire timed out: no connection was free in time".to_owned()
            } else {
                format!("{n} acquires timed out: no connection was free in time")
            }
        });
    }

    /// A time-out since the last sample: the pool is saturated, and stays so for that sample.
    fn timed_out_without_count(&self, why: impl FnOnce() -> String) {
        let mut state = lock(&self.inner.saturation);
        state.timed_out_since_sample = true;
        self.set_saturated(&mut state, true, why);
    }

    /// Registers the pool's figures, sampled every [`SAMPLE_EVERY`] (replaces an earlier
    /// source).
    pub fn pool(&self, stats: impl PoolStats) -> &Self {
        let m = &self.inner.metrics;
        let labels = |state: Option<&'static str>| {
            let mut labels = vec![Label::new("pool", self.inner.name.clone())];
            if let Some(state) = state {
                labels.push(Label::new("state", state));
            }
            labels
        };
        // A new source: its totals start from its first sample.
        *lock(&self.inner.last_sample) = None;
        *lock(&self.inner.pool) = Some(PoolGauges {
            stats: Arc::new(stats),
            idle: m.gauge("db_client_connection_count", labels(Some("idle"))),
            used: m.gauge("db_client_connection_count", labels(Some("used"))),
            max: m.gauge("db_client_connection_max", labels(None)),
            pending: m.gauge("db_client_connection_pending_requests", labels(None)),
        });
        self.sample();
        self
    }

    /// Registers the readiness check of this dependency (a ping: `SELECT 1`, `PING`), run by
    /// `/health/ready` as `dependency:NAME` (replaces an earlier one).
    pub fn readiness(&self, check: impl HealthCheck) -> &Self {
        *lock(&self.inner.readiness) = Some(Arc::new(Readiness {
            check: Arc::new(check),
            last: Mutex::new(None),
        }));
        self
    }

    /// Samples the pool and judges the error rate now (the worker does both every
    /// [`SAMPLE_EVERY`]). Returns the pool's sample; `None` without a pool.
    pub fn sample(&self) -> Option<PoolSample> {
        self.judge_errors();
        let acquiring = self.inner.acquiring.load(Ordering::Relaxed);
        let sample = {
            let pool = lock(&self.inner.pool);
            let pool = pool.as_ref()?;
            let mut s = pool.stats.sample();
            // Callers inside `acquire` are waiting, whether or not the pool counts them.
            s.pending = s.pending.max(acquiring);
            pool.idle.set(s.idle as f64);
            pool.used.set(s.used as f64);
            pool.max.set(s.max as f64);
            pool.pending.set(s.pending as f64);
            s
        };
        let previous = lock(&self.inner.last_sample).replace(sample);
        self.inner
            .own_totals
            .store(sample.acquires.is_some(), Ordering::Relaxed);
        // The first sample of a source is the base of its totals.
        if let (Some(now), Some(before)) = (sample.acquires, previous.and_then(|p| p.acquires)) {
            self.acquired(before, now);
        }
        let mut state = lock(&self.inner.saturation);
        // A time-out since the last sample keeps the pool saturated for this one.
        let timed_out = std::mem::take(&mut state.timed_out_since_sample);
        let max_pending = self.inner.settings.max_pending;
        if let Some(max_pending) = max_pending
            && sample.pending > max_pending
        {
            self.set_saturated(&mut state, true, || {
                format!(
                    "{} callers wait for a connection (max_pending {max_pending}); {} of {} connections in use",
                    sample.pending, sample.used, sample.max
                )
            });
        } else if !timed_out && (sample.used < sample.max || sample.pending == 0) {
            self.set_saturated(&mut state, false, String::new);
        }
        Some(sample)
    }

    /// The growth of a pool's own acquire totals between two samples: waits into the
    /// histogram (sum and count exact; each waiting acquire at the period's mean wait), time-outs
    /// into saturation.
    fn acquired(&self, before: AcquireTotals, now: AcquireTotals) {
        let direct = now.direct.saturating_sub(before.direct);
        let waited = (now.waited + now.timed_out).saturating_sub(before.waited + before.timed_out);
        let wait = now.wait_time.saturating_sub(before.wait_time);
        if direct > 0 {
            self.wait_histogram().record_many(0.0, direct as usize);
        }
        if waited > 0 {
            self.wait_histogram()
                .record_many(wait.as_secs_f64() / waited as f64, waited as usize);
        }
        let timed_out = now.timed_out.saturating_sub(before.timed_out);
        if timed_out > 0 {
            self.timed_out(timed_out);
        }
    }

    /// Judges the share of failed calls over `error_window`: over `error_ratio` on at least
    /// [`MIN_CALLS`] calls raises `dependency_errors`; at or under it on that many, or on fewer
    /// calls that all succeeded, resolves it.
    fn judge_errors(&self) {
        let inner = &self.inner;
        let now = Instant::now();
        let calls = inner.calls.load(Ordering::Relaxed);
        let by_class: [u64; 3] =
            std::array::from_fn(|i| inner.failed_by_class[i].load(Ordering::Relaxed));
        // Held to the end: judgements and their alerts follow one another in order.
        let mut window = lock(&inner.window);
        window.push_back((now, calls, by_class));
        // Keep the newest sample at least a window old as the base.
        while window.len() >= 2 && now.duration_since(window[1].0) >= inner.settings.error_window {
            window.pop_front();
        }
        // Sampled more often than the cap allows: thin the middle, never the base.
        if window.len() > MAX_WINDOW_SAMPLES {
            window.remove(1);
        }
        let (at, base_calls, base) = window[0];
        let calls = calls.saturating_sub(base_calls);
        let by_class: [u64; 3] = std::array::from_fn(|i| by_class[i].saturating_sub(base[i]));
        let span = now.duration_since(at);
        let failed: u64 = by_class.iter().sum();
        let ratio = if calls == 0 {
            0.0
        } else {
            failed as f64 / calls as f64
        };
        inner.error_ratio.set(ratio);
        inner.last_ratio.store(ratio.to_bits(), Ordering::Relaxed);
        let judged = calls >= MIN_CALLS;
        let erroring = inner.erroring.load(Ordering::Relaxed);
        // Raised on enough calls over the ratio; resolved on enough calls at or under it, or on
        // calls that all succeed. Too few calls, some failing, change nothing: a dependency
        // callers have backed off from is not well again.
        let over = if judged {
            ratio > inner.settings.error_ratio
        } else if calls > 0 && failed == 0 {
            false
        } else {
            erroring
        };
        if erroring == over {
            return;
        }
        inner.erroring.store(over, Ordering::Relaxed);
        let fingerprint = format!("dependency_errors:{}", inner.name);
        if over {
            tracing::warn!(
                target: "qiflow::dependency",
                pool = %inner.name,
                calls,
                failed,
                "calls failing: {failed} of {calls} in {} s",
                span.as_secs()
            );
        } else {
            tracing::info!(target: "qiflow::dependency", pool = %inner.name, "calls succeed again");
        }
        let alert = over.then(|| {
            let [connection, timeout, query] = by_class;
            Alert::new("dependency_errors", AlertLevel::Error)
                .summary(format!(
                    "{}: {:.1}% of calls failed",
                    inner.name,
                    ratio * 100.0
                ))
                .description(format!(
                    "{failed} of {calls} calls failed in the last {} s (error_ratio {}): \
                     {connection} connection, {timeout} timeout, {query} query",
                    span.as_secs(),
                    inner.settings.error_ratio
                ))
        });
        self.raise_or_resolve(fingerprint, alert);
    }

    /// Raises `alert` with the dependency's `pool` label, its source and `fingerprint`; or,
    /// given none, resolves `fingerprint`.
    fn raise_or_resolve(&self, fingerprint: String, alert: Option<Alert>) {
        let Some(alerts) = &self.inner.alerts else {
            return;
        };
        let alert = match alert {
            Some(alert) => alert
                .label("pool", self.inner.name.clone())
                .source("dependency")
                .fingerprint(fingerprint),
            None => Alert::resolve(fingerprint),
        };
        let _ = alerts.raise(alert);
    }

    /// Runs `f` on the histograms of the operation `name`, made at its first call (past
    /// [`MAX_OPERATIONS`], `other`'s). A known operation costs a read lock and a lookup.
    fn with_operation<R>(&self, name: &str, f: impl FnOnce(&Operation) -> R) -> R {
        let inner = &self.inner;
        {
            let ops = inner
                .operations
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(op) = ops.get(name) {
                return f(op);
            }
            if ops.len() >= MAX_OPERATIONS {
                return f(&inner.other);
            }
        }
        let mut ops = inner
            .operations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !ops.contains_key(name) {
            if ops.len() >= MAX_OPERATIONS {
                drop(ops);
                return f(&inner.other);
            }
            let op = operation(&inner.metrics, &inner.name, inner.kind, name);
            ops.insert(name.to_owned(), op);
        }
        f(&ops[name])
    }

    fn slow(&self, operation: &str, statement: Option<&str>, took: Duration) {
        let inner = &self.inner;
        inner.slow.increment(1);
        inner.slow_calls.fetch_add(1, Ordering::Relaxed);
        let statement = statement.map(normalize).unwrap_or_default();
        let took_ms = took.as_millis() as u64;
        tracing::warn!(
            target: "qiflow::dependency",
            pool = %inner.name,
            db_system = inner.kind.system(),
            operation,
            statement = %statement,
            duration_ms = took_ms,
            threshold_ms = inner.settings.slow.as_millis() as u64,
            "slow {} call",
            inner.kind.system()
        );
        if let Some(alerts) = &inner.alerts {
            let mut alert = Alert::new("dependency_slow", AlertLevel::Warning)
                .summary(format!(
                    "{}: {operation} took {took_ms} ms (slow: {} ms)",
                    inner.name,
                    inner.settings.slow.as_millis()
                ))
                .label("pool", inner.name.clone())
                .label("db_operation", operation.to_owned())
                .source("dependency")
                .fingerprint(format!("dependency_slow:{}:{operation}", inner.name));
            if !statement.is_empty() {
                alert = alert.description(statement);
            }
            if let Some(request) = crate::scope::current() {
                alert = alert
                    .annotation("request_id", request.as_str().to_owned())
                    .annotation("trace_id", request.trace_id().to_owned());
            }
            let _ = alerts.raise(alert);
        }
    }

    /// Moves the saturation state to `saturated`, logging and alerting the change, under the
    /// caller's hold of the state's lock (so raises and resolves go out in the state's order).
    fn set_saturated(&self, state: &mut Saturation, saturated: bool, why: impl FnOnce() -> String) {
        if state.saturated == saturated {
            return;
        }
        state.saturated = saturated;
        let inner = &self.inner;
        let fingerprint = format!("dependency_saturated:{}", inner.name);
        let alert = if saturated {
            let why = why();
            tracing::warn!(target: "qiflow::dependency", pool = %inner.name, "pool saturated: {why}");
            Some(
                Alert::new("dependency_saturated", AlertLevel::Error)
                    .summary(format!("{}: pool saturated", inner.name))
                    .description(why),
            )
        } else {
            tracing::info!(target: "qiflow::dependency", pool = %inner.name, "pool has room again");
            None
        };
        self.raise_or_resolve(fingerprint, alert);
    }

    /// What the `/qiflow/` page shows of it.
    pub fn view(&self) -> DependencyView {
        let inner = &self.inner;
        DependencyView {
            name: inner.name.clone(),
            system: inner.kind.system(),
            calls: inner.calls.load(Ordering::Relaxed),
            failed: inner
                .failed_by_class
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum(),
            slow: inner.slow_calls.load(Ordering::Relaxed),
            slow_ms: inner.settings.slow.as_millis() as u64,
            pool: lock(&inner.last_sample).map(|s| PoolView {
                idle: s.idle,
                used: s.used,
                max: s.max,
                pending: s.pending,
            }),
            saturated: lock(&inner.saturation).saturated,
            error_ratio: f64::from_bits(inner.last_ratio.load(Ordering::Relaxed)),
            erroring: inner.erroring.load(Ordering::Relaxed),
            readiness: lock(&inner.readiness)
                .as_ref()
                .and_then(|r| lock(&r.last).as_ref().map(|(_, result)| result.clone())),
        }
    }

    /// The readiness check as `/health/ready` runs it: cached, bounded, degraded when not
    /// critical.
    fn check(&self) -> Option<Arc<dyn HealthCheck>> {
        let readiness = lock(&self.inner.readiness).clone()?;
        Some(Arc::new(CachedCheck {
            readiness,
            settings: self.inner.settings.clone(),
        }))
    }
}

fn operation(metrics: &Metrics, pool: &str, kind: DependencyKind, name: &str) -> Operation {
    let labels = |outcome: &'static str| {
        vec![
            Label::new("db_system", kind.system()),
            Label::new("db_operation", name.to_owned()),
            Label::new("outcome", outcome),
            Label::new("pool", pool.to_owned()),
        ]
    };
    Operation {
        ok: metrics.histogram("db_client_operation_duration_seconds", labels("ok")),
        error: metrics.histogram("db_client_operation_duration_seconds", labels("error")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct CachedCheck {
    readiness: Arc<Readiness>,
    settings: DependencyConfig,
}

impl HealthCheck for CachedCheck {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            if let Some((at, result)) = lock(&self.readiness.last).as_ref()
                && at.elapsed() < self.settings.cache
            {
                return result.clone();
            }
            let mut result =
                match tokio::time::timeout(self.settings.timeout, self.readiness.check.check())
                    .await
                {
                    Ok(result) => result,
                    Err(_) => CheckResult::unhealthy(format!(
                        "no answer within {:?}",
                        self.settings.timeout
                    )),
                };
            if !self.settings.critical && result.status == Status::Unhealthy {
                result.status = Status::Degraded;
            }
            *lock(&self.readiness.last) = Some((Instant::now(), result.clone()));
            result
        })
    }
}

/// Every registered dependency (the observer's).
pub(crate) struct Dependencies {
    settings: BTreeMap<String, DependencyConfig>,
    metrics: Metrics,
    alerts: Option<Alerts>,
    registered: Mutex<BTreeMap<String, Dependency>>,
}

impl Dependencies {
    pub(crate) fn new(
        settings: BTreeMap<String, DependencyConfig>,
        metrics: Metrics,
        alerts: Option<Alerts>,
    ) -> Self {
        Self {
            settings,
            metrics,
            alerts,
            registered: Mutex::new(BTreeMap::new()),
        }
    }

    /// The dependency named `name`: registered now, or the one registered earlier.
    pub(crate) fn get(&self, name: &str, kind: DependencyKind) -> Dependency {
        let mut registered = lock(&self.registered);
        if let Some(d) = registered.get(name) {
            return d.clone();
        }
        // `QIFLOW__DEPENDENCIES__MAIN_DB__…` sets `main_db` (a variable holds no `-`): it is
        // the table of `main-db` too, when that has none of its own.
        let settings = self
            .settings
            .get(name)
            .or_else(|| self.settings.get(&name.replace('-', "_")))
            .cloned()
            .unwrap_or_default();
        let d = Dependency::new(
            name,
            kind,
            settings,
            self.metrics.clone(),
            self.alerts.clone(),
        );
        registered.insert(name.to_owned(), d.clone());
        d
    }

    /// Samples every registered pool, and the figures read from the dependencies themselves
    /// (each bounded by 2 s; the worker's tick).
    pub(crate) async fn sample(&self) {
        let all: Vec<Dependency> = lock(&self.registered).values().cloned().collect();
        for d in all {
            d.sample();
            let remote = lock(&d.inner.remote).clone();
            if let Some(remote) = remote {
                let _ = tokio::time::timeout(REMOTE_SAMPLE_TIMEOUT, remote.sample()).await;
            }
        }
    }

    /// Every registered dependency as the `/qiflow/` page shows it, by name.
    pub(crate) fn views(&self) -> Vec<DependencyView> {
        let all: Vec<Dependency> = lock(&self.registered).values().cloned().collect();
        all.iter().map(Dependency::view).collect()
    }

    /// The readiness checks of the dependencies that have one, as `dependency:NAME`.
    pub(crate) fn checks(&self) -> Vec<(String, Arc<dyn HealthCheck>)> {
        lock(&self.registered)
            .values()
            .filter_map(|d| Some((format!("dependency:{}", d.name()), d.check()?)))
            .collect()
    }
}
