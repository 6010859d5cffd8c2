//! The `errors` pipeline's sink: the local store, then every reporter.

use std::sync::Arc;

use super::{ErrorReport, ErrorStore, Reporter};
use crate::worker::{BoxFuture, Sink, SinkError};

/// Records each report in the store, then hands it to the reporters in order; the first
/// reporter that fails decides how the report is counted (the ones after it still run).
pub(crate) struct ErrorSink {
    store: Arc<ErrorStore>,
    reporters: Vec<Arc<dyn Reporter>>,
    release: String,
    environment: String,
}

impl ErrorSink {
    pub(crate) fn new(
        store: Arc<ErrorStore>,
        reporters: Vec<Arc<dyn Reporter>>,
        release: String,
        environment: String,
    ) -> Self {
        Self {
            store,
            reporters,
            release,
            environment,
        }
    }
}

impl Sink<ErrorReport> for ErrorSink {
    fn write(&mut self, mut batch: Vec<ErrorReport>) -> BoxFuture<'_, Result<(), SinkError>> {
        for report in &mut batch {
            super::complete(report, &self.release, &self.environment);
        }
        Box::pin(async move {
            let total = batch.len() as u64;
            let mut failed: Option<(u64, SinkError)> = None;
            for (i, report) in batch.iter().enumerate() {
                self.store.record(report);
                let mut first_error = None;
                for reporter in &self.reporters {
                    if let Err(e) = reporter.report(report).await
                        && first_error.is_none()
                    {
                        first_error = Some(e);
                    }
                }
                // The pipeline runs with batch size 1, so a failure is this report's alone; with
                // more, the failed report and those after it are counted as undelivered.
                if let Some(e) = first_error
                    && failed.is_none()
                {
                    failed = Some((total - i as u64, e));
                }
            }
            match failed {
                None => Ok(()),
                Some((undelivered, e)) => Err(e.partial(undelivered)),
            }
        })
    }
}
