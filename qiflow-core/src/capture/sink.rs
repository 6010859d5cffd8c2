//! The `errors` pipeline's sink: a panic's stack resolved, then the local store, then every
//! reporter.

use std::sync::Arc;

use super::symbolize::Symbolizer;
use super::{ErrorKind, ErrorReport, ErrorStore, Reporter};
use crate::worker::{BoxFuture, Sink, SinkError};

/// Resolves each report's stack trace (panics), records the report in the store, then hands it
/// to the reporters in order; the first reporter that fails decides how the report is counted
/// (the ones after it still run).
pub(crate) struct ErrorSink {
    symbolizer: Symbolizer,
    store: Arc<ErrorStore>,
    reporters: Vec<Arc<dyn Reporter>>,
    release: String,
    environment: String,
    alerts: Option<crate::alert::Alerts>,
}

impl ErrorSink {
    pub(crate) fn new(
        store: Arc<ErrorStore>,
        reporters: Vec<Arc<dyn Reporter>>,
        release: String,
        environment: String,
    ) -> Self {
        Self {
            symbolizer: Symbolizer::default(),
            store,
            reporters,
            release,
            environment,
            alerts: None,
        }
    }

    /// Raises each report as an alert too: `error` level (`warning` for a captured 4xx), the
    /// report's fingerprint as the alert's, so the router's cooldown keeps a recurring error to
    /// one notification per cooldown, with the count.
    pub(crate) fn with_alerts(mut self, alerts: crate::alert::Alerts) -> Self {
        self.alerts = Some(alerts);
        self
    }
}

/// The alert of a report (see [`ErrorSink::with_alerts`]).
pub(crate) fn alert_of(report: &ErrorReport) -> crate::alert::Alert {
    use crate::alert::{Alert, AlertLevel};
    let level = match report.severity {
        super::Severity::Warning => AlertLevel::Warning,
        _ => AlertLevel::Error,
    };
    let name = match report.kind {
        super::ErrorKind::Panic => "panic",
        _ => "error",
    };
    let mut alert = Alert::new(name, level)
        .summary(format!(
            "{}: {}",
            report.detail.type_name(),
            report.detail.top_message()
        ))
        .description(report.detail.to_string())
        .label("kind", report.kind.as_str())
        .label("error_type", report.detail.type_name())
        .source("errors")
        .fingerprint(format!("errors:{}", report.fingerprint));
    if let Some(request) = &report.request {
        alert = alert
            .label("route", request.route.clone())
            .annotation("request_id", request.request_id.clone());
        if let Some(trace_id) = &request.trace_id {
            alert = alert.annotation("trace_id", trace_id.clone());
        }
    }
    if let Some(status) = report.status {
        alert = alert.label("status", status.to_string());
    }
    alert
}

/// A panic's resolved backtrace on stderr, where the standard library's hook would have printed
/// it (`RUST_BACKTRACE` is set and qiflow's hook replaced that one).
fn print_backtrace(report: &ErrorReport) {
    use std::io::Write as _;
    let Some(trace) = &report.stacktrace else {
        return;
    };
    let thread = report
        .tags
        .get("thread")
        .map_or("<unnamed>", String::as_str);
    let mut text = format!(
        "stack backtrace of the panic in thread '{thread}': {}",
        report.detail.top_message()
    );
    if let Some(request) = &report.request {
        text.push_str(&format!(" (request {})", request.request_id));
    }
    text.push('\n');
    text.push_str(&trace.to_string());
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

impl Sink<ErrorReport> for ErrorSink {
    fn write(&mut self, mut batch: Vec<ErrorReport>) -> BoxFuture<'_, Result<(), SinkError>> {
        for report in &mut batch {
            super::complete(report, &self.release, &self.environment);
        }
        Box::pin(async move {
            let total = batch.len() as u64;
            let mut failed: Option<(u64, SinkError)> = None;
            for (i, report) in batch.iter_mut().enumerate() {
                if let Some(trace) = report.stacktrace.as_mut() {
                    self.symbolizer.resolve(trace).await;
                    if report.kind == ErrorKind::Panic && super::panic::echo_backtraces() {
                        print_backtrace(report);
                    }
                }
                let report = &*report;
                self.store.record(report);
                if let Some(alerts) = &self.alerts {
                    // Counted by the alerts pipeline when its queue is full.
                    let _ = alerts.raise(alert_of(report));
                }
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
