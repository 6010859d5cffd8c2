//! The log pipeline's sink: stdout and/or the rotating file, on the background worker.

use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::pool::LinePool;
use super::rotate::{RotatingFile, RotationPolicy};
use crate::clock::Clock;
use crate::config::LogFormat;
use crate::worker::{BoxFuture, Pipeline, Sink, SinkError};

/// How often a persistent write failure is reported on stderr, and a failed open retried.
const REPORT_EVERY: Duration = Duration::from_secs(10);
const REOPEN_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct LogSink {
    stdout: bool,
    format: LogFormat,
    file: FileState,
    clock: Arc<dyn Clock>,
    /// Set once the pipeline exists, so drops can be reported in the log itself.
    pipeline: Arc<OnceLock<Pipeline<Vec<u8>>>>,
    /// Written lines go back here for the layer to reuse.
    pool: Arc<LinePool>,
    reported_drops: u64,
    last_report: Option<Instant>,
}

enum FileState {
    None,
    Open(Box<RotatingFile>),
    Failed {
        policy: RotationPolicy,
        last_try: Instant,
    },
}

impl LogSink {
    pub(crate) fn new(
        stdout: bool,
        format: LogFormat,
        policy: Option<RotationPolicy>,
        clock: Arc<dyn Clock>,
        pipeline: Arc<OnceLock<Pipeline<Vec<u8>>>>,
        pool: Arc<LinePool>,
    ) -> Self {
        let mut sink = Self {
            stdout,
            format,
            file: FileState::None,
            clock,
            pipeline,
            pool,
            reported_drops: 0,
            last_report: None,
        };
        if let Some(policy) = policy {
            sink.file = match RotatingFile::open(policy.clone(), sink.clock.clone()) {
                Ok(file) => FileState::Open(Box::new(file)),
                Err(e) => {
                    sink.report(&format!(
                        "cannot open the log file in {}: {e}; lines are counted as dropped until it can be opened",
                        policy.dir().display()
                    ));
                    FileState::Failed {
                        policy,
                        last_try: Instant::now(),
                    }
                }
            };
        }
        sink
    }

    /// Writes a rate-limited problem report to stderr (the log itself may be what fails).
    fn report(&mut self, message: &str) {
        let now = Instant::now();
        if self
            .last_report
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            self.last_report = Some(now);
            let _ = writeln!(std::io::stderr(), "qiflow: logging: {message}");
        }
    }

    /// A line reporting drops since the last report, if there were any.
    fn drop_line(&mut self) -> Option<Vec<u8>> {
        let total = self.pipeline.get()?.dropped();
        if total <= self.reported_drops {
            return None;
        }
        let new = total - self.reported_drops;
        self.reported_drops = total;
        let mut line = Vec::with_capacity(160);
        match self.format {
            LogFormat::Pretty => {
                super::format::timestamp(&mut line, self.clock.now());
                line.extend_from_slice(
                    format!("  WARN qiflow::logging: log lines were dropped dropped={new} dropped_total={total}\n")
                        .as_bytes(),
                );
            }
            _ => {
                line.extend_from_slice(b"{\"timestamp\":\"");
                super::format::timestamp(&mut line, self.clock.now());
                line.extend_from_slice(
                    format!("\",\"level\":\"WARN\",\"target\":\"qiflow::logging\",\"message\":\"log lines were dropped\",\"dropped\":{new},\"dropped_total\":{total}}}\n")
                        .as_bytes(),
                );
            }
        }
        Some(line)
    }

    fn write_blocking(&mut self, batch: &[Vec<u8>]) -> Result<(), SinkError> {
        let drop_line = self.drop_line();
        let lines = drop_line.iter().chain(batch.iter());
        if self.stdout {
            let mut out = std::io::stdout().lock();
            for line in lines.clone() {
                if out.write_all(line).is_err() {
                    break;
                }
            }
            let _ = out.flush();
        }
        if let FileState::Failed { policy, last_try } = &mut self.file
            && last_try.elapsed() >= REOPEN_EVERY
        {
            *last_try = Instant::now();
            if let Ok(file) = RotatingFile::open(policy.clone(), self.clock.clone()) {
                self.file = FileState::Open(Box::new(file));
            }
        }
        let n = batch.len() as u64;
        match &mut self.file {
            FileState::None => Ok(()),
            FileState::Failed { policy, .. } => {
                let dir = policy.dir().display().to_string();
                self.report(&format!(
                    "the log file in {dir} cannot be opened; lines dropped"
                ));
                Err(SinkError::new(format!("log file in {dir} is not open")))
            }
            FileState::Open(file) => {
                if let Some(line) = &drop_line {
                    let _ = file.write_line(line);
                }
                match file.write_lines(batch) {
                    Ok(()) => Ok(()),
                    Err(partial) => {
                        let path = file.path().display().to_string();
                        let lost = n.saturating_sub(partial.written() as u64);
                        let e = std::io::Error::from(partial);
                        self.report(&format!(
                            "cannot write {path}: {e}; {lost} line(s) dropped (counted on qiflow_dropped_total{{pipeline=\"logs\"}}); writing resumes when the problem clears"
                        ));
                        Err(SinkError::new(format!("cannot write {path}: {e}")).partial(lost))
                    }
                }
            }
        }
    }
}

impl Sink<Vec<u8>> for LogSink {
    fn write(&mut self, batch: Vec<Vec<u8>>) -> BoxFuture<'_, Result<(), SinkError>> {
        // File I/O may block: move off the runtime's worker thread for its duration.
        let result = tokio::task::block_in_place(|| {
            let result = self.write_blocking(&batch);
            self.pool.give(batch);
            result
        });
        Box::pin(async move { result })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        let result = tokio::task::block_in_place(|| match &mut self.file {
            FileState::Open(file) => file
                .sync()
                .map_err(|e| SinkError::new(format!("cannot sync {}: {e}", file.path().display()))),
            _ => Ok(()),
        });
        Box::pin(async move { result })
    }
}
