use std::sync::Arc;
use std::time::Duration;

use crate::worker::{ShutdownReport, Worker};

/// Flushes every pipeline, in order, within its budget, when dropped.
///
/// Keep it alive for as long as the service runs (bind it in `main`: `let (observer, _guard) =
/// …`; `let _ = …` would drop it at once). Its drop always returns within the budget, even when a
/// sink hangs: what could not be delivered by then is counted as dropped (reason `shutdown`).
#[must_use = "dropping the guard flushes and stops qiflow's pipelines at once"]
pub struct Guard {
    worker: Arc<Worker>,
    budget: Duration,
    done: bool,
    /// The directories this instance writes, locked until it has flushed.
    locks: Vec<crate::files::DirLock>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub(super) fn new(
        worker: Arc<Worker>,
        budget: Duration,
        locks: Vec<crate::files::DirLock>,
    ) -> Self {
        Self {
            worker,
            budget,
            done: false,
            locks,
        }
    }

    /// The flush budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Shuts down now (what dropping does) and reports what happened.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.done = true;
        let report = self.worker.shutdown(self.budget);
        // Flushed: the directories are free for the next instance.
        self.locks.clear();
        report
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let report = self.worker.shutdown(self.budget);
            if !report.timed_out.is_empty() {
                tracing::warn!(
                    target: "qiflow::worker",
                    pipelines = ?report.timed_out,
                    budget_ms = self.budget.as_millis() as u64,
                    "flush budget ran out; undelivered items were counted as dropped"
                );
            }
        }
    }
}
