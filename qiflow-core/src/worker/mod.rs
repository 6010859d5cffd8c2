//! The background worker: a small tokio runtime of qiflow's own and the pipelines that run on it.
//!
//! Every pipeline (logs, errors, audit, alerts) is a bounded queue in front of a [`Sink`]. The
//! request path only ever calls [`Pipeline::submit`]: an atomic increment and a bounded
//! `try_send`. All I/O happens in the sink, on the worker's own runtime, so qiflow behaves the
//! same under axum, actix-web (per-worker runtimes) or a plain thread.
//!
//! Nothing is lost silently: every item that is not delivered is counted by reason in
//! [`PipelineStats`] and on `qiflow_dropped_total{pipeline,reason}`.

mod pipeline;
mod sink;

use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

pub use pipeline::{DropReason, Overflow, Pipeline, PipelineOptions, PipelineStats};
pub use sink::{BoxFuture, NoopSink, Sink, SinkError};

use pipeline::Controlled;

/// The runtime and the registered pipelines, in registration order.
pub(crate) struct Worker {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pipelines: Mutex<Vec<Arc<dyn Controlled>>>,
    on_shutdown: Mutex<Vec<ShutdownHook>>,
}

/// Called with the final counters once the guard's shutdown has abandoned what was left.
pub(crate) type ShutdownHook = Box<dyn Fn(&[PipelineStats]) + Send>;

impl Worker {
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(4)
            .thread_name("qiflow-worker")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            pipelines: Mutex::new(Vec::new()),
            on_shutdown: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The pipelines in flush order: registration order, then the alerts, then the `flush_last`
    /// ones (the logs).
    fn pipelines(&self) -> Vec<Arc<dyn Controlled>> {
        let mut all = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.sort_by_key(|p| p.flush_rank());
        all
    }

    pub(crate) fn add<T, S>(&self, options: PipelineOptions, sink: S) -> Pipeline<T>
    where
        T: Send + 'static,
        S: Sink<T>,
    {
        let (producer, controlled, task) = pipeline::pipeline(options, sink);
        let running = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if running {
            self.handle.spawn(task);
        } else {
            controlled.abandon();
        }
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(controlled);
        producer
    }

    /// Registers a hook called at the end of [`Worker::shutdown`], after every pipeline was
    /// abandoned and the runtime stopped, with the final counters (to count what a sink still
    /// held beyond its pipeline, like the alert router's groups, or to report audit losses).
    pub(crate) fn on_shutdown(&self, hook: ShutdownHook) {
        self.on_shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    pub(crate) fn stats(&self) -> Vec<PipelineStats> {
        self.pipelines().iter().map(|p| p.stats()).collect()
    }

    /// Drains and flushes every pipeline, in registration order, until `deadline`.
    ///
    /// Each pipeline may use the time left minus a reserve for the ones after it (a quarter of
    /// an equal share each), so one hung sink cannot starve the rest. Returns the pipelines that
    /// did not finish in time.
    /// With `close`, each pipeline stops taking new items just before its own flush, so a later
    /// pipeline (logs, last) still takes what an earlier one's flush reports.
    pub(crate) fn flush_until(&self, deadline: Instant, close: bool) -> Vec<Arc<dyn Controlled>> {
        let pipelines = self.pipelines();
        let total = deadline.saturating_duration_since(Instant::now());
        let reserve_each = total / (4 * pipelines.len().max(1) as u32);
        let mut late = Vec::new();
        for (i, p) in pipelines.iter().enumerate() {
            let after = (pipelines.len() - i - 1) as u32;
            let own_deadline = deadline - reserve_each * after;
            if close {
                p.close();
            }
            let (ack_tx, ack_rx) = mpsc::channel();
            if !p.request_flush(ack_tx) {
                continue; // The worker task has ended: nothing is queued.
            }
            let wait = own_deadline.saturating_duration_since(Instant::now());
            match ack_rx.recv_timeout(wait) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => late.push(p.clone()),
            }
        }
        late
    }

    /// Flushes within `budget`, then closes every pipeline, counts what could not be delivered
    /// as dropped, and stops the runtime without waiting for hung sinks.
    pub(crate) fn shutdown(&self, budget: Duration) -> ShutdownReport {
        let start = Instant::now();
        let late = self.flush_until(start + budget, true);
        let pipelines = self.pipelines();
        for p in &pipelines {
            p.abandon();
        }
        if let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            runtime.shutdown_background();
        }
        let stats = self.stats();
        for hook in self
            .on_shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            hook(&stats);
        }
        ShutdownReport {
            elapsed: start.elapsed(),
            timed_out: late.iter().map(|p| p.name()).collect(),
            stats,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Without a guard (it was forgotten), never block and never panic in an async context.
        if let Some(runtime) = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            runtime.shutdown_background();
        }
    }
}

/// What the guard's shutdown did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How long the flush took.
    pub elapsed: Duration,
    /// Pipelines whose sink did not finish within the budget (their items are counted as
    /// dropped with reason `shutdown`).
    pub timed_out: Vec<&'static str>,
    /// The final counters of every pipeline.
    pub stats: Vec<PipelineStats>,
}
