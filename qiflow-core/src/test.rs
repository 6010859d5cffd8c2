//! Test doubles for pipelines (feature `test`).
//!
//! ```
//! use qiflow_core::test::RecordingSink;
//! use qiflow_core::worker::PipelineOptions;
//!
//! let (observer, guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
//!     .install_global(false)
//!     .build()
//!     .unwrap();
//! let sink = RecordingSink::new();
//! let p = observer.pipeline(PipelineOptions::new("test"), sink.clone());
//! p.submit(7u32).unwrap();
//! drop(guard);
//! assert_eq!(sink.items(), vec![7]);
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use crate::alert::testing::RecordingChannel;
use crate::worker::{BoxFuture, Sink, SinkError};

/// Records every item it is given; clones share the record.
#[derive(Debug)]
pub struct RecordingSink<T> {
    items: Arc<Mutex<Vec<T>>>,
    flushes: Arc<Mutex<u64>>,
}

impl<T> Clone for RecordingSink<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            flushes: self.flushes.clone(),
        }
    }
}

impl<T> Default for RecordingSink<T> {
    fn default() -> Self {
        Self {
            items: Arc::default(),
            flushes: Arc::default(),
        }
    }
}

impl<T: Clone> RecordingSink<T> {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far, in order.
    pub fn items(&self) -> Vec<T> {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times `flush` was called.
    pub fn flushes(&self) -> u64 {
        *self.flushes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Send + 'static> Sink<T> for RecordingSink<T> {
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>> {
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        *self.flushes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Box::pin(async { Ok(()) })
    }
}

/// A sink whose `write` never returns (an endpoint that accepts and never answers).
#[derive(Debug, Clone, Copy, Default)]
pub struct HangingSink {
    /// Block the worker thread itself (as a buggy synchronous sink would) instead of pending.
    pub block_thread: bool,
}

impl<T: Send + 'static> Sink<T> for HangingSink {
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>> {
        let block = self.block_thread;
        Box::pin(async move {
            let _batch = batch;
            if block {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

/// A sink that fails every write.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailingSink;

impl<T: Send + 'static> Sink<T> for FailingSink {
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>> {
        drop(batch);
        Box::pin(async { Err(SinkError::new("test sink refuses every batch")) })
    }
}

/// A sink that takes `delay` per write, then records the items.
#[derive(Debug, Clone)]
pub struct SlowSink<T> {
    /// How long each write takes.
    pub delay: Duration,
    /// Where the items end up.
    pub inner: RecordingSink<T>,
}

impl<T: Send + 'static> Sink<T> for SlowSink<T> {
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>> {
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.inner.write(batch).await
        })
    }
}

/// A clock that stands still until moved (the clock seam's test double).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use qiflow_core::clock::Clock;
/// use qiflow_core::test::ManualClock;
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(3_600));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(3_660));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<std::time::SystemTime>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: std::time::SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// Sets the clock (also backwards).
    pub fn set(&self, to: std::time::SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl crate::clock::Clock for ManualClock {
    fn now(&self) -> std::time::SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The operator token [`quiet_config`] configures: named `test`, with the `write` scope.
pub const ADMIN_TOKEN: &str = "qiflow-test-token-0123456789abcdef";

/// The `Authorization` header value that carries [`ADMIN_TOKEN`].
///
/// ```
/// assert!(qiflow_core::test::authorization().starts_with("Bearer "));
/// ```
pub fn authorization() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// A configuration for tests: logs go nowhere (no file, no stdout), auditing is off and the
/// alert and baseline states stay in memory, so a test writes no files into the working directory;
/// `[metrics] global_labels` is off, so series read exactly as a test spells them
/// (`http_server_requests_total{method="GET",…}`). The operator surface takes one token,
/// [`ADMIN_TOKEN`] (named `test`, scope `write`), and makes no token file.
///
/// ```
/// let config = qiflow_core::test::quiet_config();
/// assert!(config.logging.dir.as_os_str().is_empty());
/// ```
///
/// Process and machine metrics (`[metrics] system`) are off: a test that wants them turns
/// them on.
pub fn quiet_config() -> crate::Config {
    let mut config = crate::Config::default();
    config.logging.dir = std::path::PathBuf::new();
    config.logging.stdout = false;
    config.audit.enabled = false;
    config.metrics.global_labels = false;
    config.metrics.system = false;
    config.alerts.state_file = std::path::PathBuf::new();
    config.baseline.state_file = std::path::PathBuf::new();
    config.service.state_dir = std::path::PathBuf::new();
    config.admin.token_file = std::path::PathBuf::new();
    config.admin.tokens = vec![crate::config::AdminToken::new(
        "test",
        ADMIN_TOKEN,
        crate::config::TokenScope::Write,
    )];
    config
}

/// Makes every `tracing` callsite enabled in this process, for a test that reads spans under a
/// subscriber of its own (`tracing::subscriber::set_default`) while other tests of the same
/// binary run the middleware on threads with no subscriber.
///
/// `tracing` caches each callsite's interest process-wide. While at most one dispatcher exists,
/// the interest comes from the subscriber of the thread that reaches the callsite first: a test
/// thread without one caches "never" for qiflow's `request` span, and a test that then looks for
/// the request in its span finds none (now and then, depending on the order the tests run in).
/// This sets a bare `tracing_subscriber::registry()` as the global default when none is set (it
/// enables everything and does nothing), so there are always two dispatchers to ask, and
/// rebuilds the cache. Call it after `set_default`.
pub fn enable_every_callsite() {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        // Another global default already set is fine: it is a second dispatcher as well.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    tracing::callsite::rebuild_interest_cache();
}
