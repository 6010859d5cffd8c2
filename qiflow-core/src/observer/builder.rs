use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Guard, Inner, Observer};
use crate::config::Config;
use crate::worker::Worker;

/// Builds an [`Observer`] and its [`Guard`] from a [`Config`].
///
/// A builder with no settings is what [`crate::init`] uses.
#[derive(Debug)]
#[must_use]
pub struct ObserverBuilder {
    config: Config,
    flush_budget: Duration,
    worker_threads: usize,
}

impl ObserverBuilder {
    pub(super) fn new(config: Config) -> Self {
        Self {
            config,
            flush_budget: Duration::from_secs(5),
            worker_threads: 1,
        }
    }

    /// The most time the guard's drop may take to flush every pipeline. Defaults to 5 seconds.
    pub fn flush_budget(mut self, budget: Duration) -> Self {
        self.flush_budget = budget;
        self
    }

    /// Threads of the background runtime (at least 1). Defaults to 1.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads.max(1);
        self
    }

    /// Starts the background worker and returns the observer and its guard.
    ///
    /// Configuration warnings (plain values in secret keys, …) are emitted as `warn` events on
    /// target `qiflow::config`.
    pub fn build(self) -> Result<(Observer, Guard), InitError> {
        let worker = Worker::start(self.worker_threads).map_err(|e| InitError {
            kind: InitErrorKind::Runtime,
            message: format!("cannot start the qiflow background runtime: {e}"),
        })?;
        for warning in self.config.warnings() {
            tracing::warn!(target: "qiflow::config", key = warning.path(), "{}", warning.message());
        }
        let worker = Arc::new(worker);
        let observer = Observer {
            inner: Arc::new(Inner {
                config: self.config,
                started: Instant::now(),
                worker: worker.clone(),
            }),
        };
        Ok((observer, Guard::new(worker, self.flush_budget)))
    }
}

/// What kind of failure an [`InitError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitErrorKind {
    /// The background runtime could not be started.
    Runtime,
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
