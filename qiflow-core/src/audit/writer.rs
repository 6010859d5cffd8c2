//! The audit pipeline: the request-side [`Auditor`] and the worker-side writer around an
//! [`AuditSink`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{
    AlarmHook, AuditError, AuditErrorKind, AuditEvent, AuditLoss, AuditSink, AuditStore, AutoAudit,
    LossHook, RETRY_FOR, SealReason, SinkNotice,
};
use crate::logging::Redactor;
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::worker::{BoxFuture, DropReason, Pipeline, Sink, SinkError};

type Ack = oneshot::Sender<Result<(), AuditError>>;

/// A queued event, with whoever waits for it to be stored.
pub(crate) struct Queued {
    event: AuditEvent,
    ack: Option<Ack>,
}

/// Counters, gauges and the hooks, shared by both sides.
#[derive(Clone)]
pub(crate) struct Accounts {
    sink: &'static str,
    written: metrics::Counter,
    lost: metrics::Counter,
    sealed_records: metrics::Gauge,
    last_digest: metrics::Gauge,
    hook: Option<LossHook>,
    alarm: Option<AlarmHook>,
}

impl Accounts {
    pub(crate) fn new(
        metrics: &Metrics,
        sink: &'static str,
        hook: Option<LossHook>,
        alarm: Option<AlarmHook>,
    ) -> Self {
        let counter = |outcome: &'static str| {
            metrics.counter(
                "qiflow_audit_records_total",
                vec![
                    metrics::Label::new("sink", sink),
                    metrics::Label::new("outcome", outcome),
                ],
            )
        };
        let written = counter("written");
        let lost = counter("lost");
        // Both series exist from the start, so a dashboard sees 0 rather than nothing.
        written.increment(0);
        lost.increment(0);
        let sealed_records = metrics.gauge("qiflow_audit_sealed_records", Vec::new());
        let last_digest = metrics.gauge("qiflow_audit_last_digest_timestamp_seconds", Vec::new());
        sealed_records.set(0.0);
        last_digest.set(0.0);
        Self {
            sink,
            written,
            lost,
            sealed_records,
            last_digest,
            hook,
            alarm,
        }
    }

    /// Publishes what the sink reports: seals as a log line and the gauges, alarms as an error
    /// log line and an alert.
    pub(crate) fn publish(&self, notices: Vec<SinkNotice>) {
        for notice in notices {
            match notice {
                SinkNotice::Resumed(seal) => {
                    self.sealed_records.set(seal.sealed_records as f64);
                    self.last_digest.set(seal.unix_seconds());
                    tracing::info!(
                        target: "qiflow::audit",
                        sink = self.sink,
                        seq = seal.seq,
                        sealed_records = seal.sealed_records,
                        digest_timestamp = %seal.timestamp,
                        hash = %seal.hash,
                        "audit trail opened: sealed up to its last digest"
                    );
                }
                SinkNotice::Sealed(seal) => {
                    self.sealed_records.set(seal.sealed_records as f64);
                    self.last_digest.set(seal.unix_seconds());
                    tracing::info!(
                        target: "qiflow::audit",
                        sink = self.sink,
                        seq = seal.seq,
                        sealed_records = seal.sealed_records,
                        digest_timestamp = %seal.timestamp,
                        hash = %seal.hash,
                        signature = %seal.signature,
                        "audit trail sealed"
                    );
                }
                SinkNotice::Alarm(alarm) => {
                    if alarm.kind.is_critical() {
                        tracing::error!(target: "qiflow::audit", sink = self.sink, alarm = alarm.kind.alert_name(), "{}", alarm.message);
                    } else {
                        tracing::warn!(target: "qiflow::audit", sink = self.sink, alarm = alarm.kind.alert_name(), "{}", alarm.message);
                    }
                    if let Some(hook) = &self.alarm {
                        hook(self.sink, &alarm);
                    }
                }
            }
        }
    }

    /// Counts, logs and reports lost records.
    pub(crate) fn lose(&self, records: u64, reason: String) {
        self.lost.increment(records);
        tracing::error!(
            target: "qiflow::audit",
            sink = self.sink,
            records,
            reason = %reason,
            "audit records lost"
        );
        if let Some(hook) = &self.hook {
            hook(&AuditLoss {
                sink: self.sink,
                records,
                reason,
            });
        }
    }
}

/// The observer's handle on the audit trail.
pub(crate) struct Auditor {
    pipeline: Pipeline<Queued>,
    accounts: Accounts,
    redactor: Redactor,
    store: Option<Arc<dyn AuditStore>>,
    auto: Option<AutoAudit>,
    /// What the sink found when it opened the trail, until [`Auditor::publish_startup`].
    startup: std::sync::Mutex<Vec<SinkNotice>>,
}

impl Auditor {
    pub(crate) fn new(
        pipeline: Pipeline<Queued>,
        accounts: Accounts,
        redactor: Redactor,
        store: Option<Arc<dyn AuditStore>>,
        auto: Option<AutoAudit>,
        startup: Vec<SinkNotice>,
    ) -> Self {
        Self {
            pipeline,
            accounts,
            redactor,
            store,
            auto,
            startup: std::sync::Mutex::new(startup),
        }
    }

    /// Logs, sets the gauges for, and alerts what the sink found when it opened the trail.
    /// Called once the log subscriber is installed.
    pub(crate) fn publish_startup(&self) {
        let notices = match self.startup.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        self.accounts.publish(notices);
    }

    pub(crate) fn store(&self) -> Option<&Arc<dyn AuditStore>> {
        self.store.as_ref()
    }

    pub(crate) fn auto(&self) -> Option<&AutoAudit> {
        self.auto.as_ref()
    }

    fn submit(&self, mut event: AuditEvent, ack: Option<Ack>) -> Result<(), AuditError> {
        if event.request_id.is_none() || event.trace_id.is_none() {
            // Recorded inside a request: the record names it and its trace.
            if let Some(request) = crate::scope::current() {
                event.fill_from(&request);
            }
        }
        event.redact(&self.redactor);
        match self.pipeline.submit(Queued { event, ack }) {
            Ok(()) => Ok(()),
            Err(reason) => {
                let why = match reason {
                    DropReason::QueueFull => {
                        "the audit queue stayed full past [audit] block_timeout"
                    }
                    _ => "the audit pipeline is shut down",
                };
                self.accounts.lose(1, why.to_owned());
                Err(AuditError::new(
                    AuditErrorKind::Lost,
                    format!("audit record lost: {why}"),
                ))
            }
        }
    }

    pub(crate) fn audit(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.submit(event, None)
    }

    pub(crate) fn audit_durable(
        &self,
        event: AuditEvent,
    ) -> impl std::future::Future<Output = Result<(), AuditError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let submitted = self.submit(event, Some(tx));
        if submitted.is_ok() {
            // The caller waits for the store: write the batch now, not after the linger.
            self.pipeline.hurry();
        }
        async move {
            submitted?;
            rx.await.unwrap_or_else(|_| {
                Err(AuditError::new(
                    AuditErrorKind::Lost,
                    "audit record not confirmed: the pipeline was shut down before writing it",
                ))
            })
        }
    }
}

/// How a failed batch is retried: pauses doubling from 50 ms to 2 s, without jitter (one writer
/// per trail, nobody to spread out from), for [`RETRY_FOR`] from the first attempt.
const RETRY: Backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2))
    .with_deadline(RETRY_FOR);

/// The worker side: writes batches through the sink with retries, counts, acknowledges.
pub(crate) struct Writer<S> {
    sink: S,
    accounts: Accounts,
    /// [`RETRY`]'s deadline, shorter in tests.
    retry_for: Duration,
}

impl<S: AuditSink> Writer<S> {
    /// A writer around `sink` (what it found when opened is published by the [`Auditor`]).
    pub(crate) fn new(sink: S, accounts: Accounts) -> Self {
        Self {
            sink,
            accounts,
            retry_for: RETRY_FOR,
        }
    }

    #[cfg(test)]
    pub(crate) fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    async fn write_with_retry(&mut self, events: &[AuditEvent]) -> Result<(), AuditError> {
        let retry = RETRY.with_deadline(self.retry_for);
        let first = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.sink.write(events).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let Some(wait) = retry.delay(attempt, first.elapsed()) else {
                        return Err(e);
                    };
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(
                            target: "qiflow::audit",
                            sink = self.accounts.sink,
                            records = events.len(),
                            attempt,
                            error = %e,
                            "audit batch failed; retrying"
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl<S: AuditSink> Sink<Queued> for Writer<S> {
    fn write(&mut self, batch: Vec<Queued>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let (events, acks): (Vec<AuditEvent>, Vec<Option<Ack>>) =
                batch.into_iter().map(|q| (q.event, q.ack)).unzip();
            let n = events.len() as u64;
            let result = self.write_with_retry(&events).await;
            self.accounts.publish(self.sink.take_notices());
            match result {
                Ok(()) => {
                    self.accounts.written.increment(n);
                    for ack in acks.into_iter().flatten() {
                        let _ = ack.send(Ok(()));
                    }
                    Ok(())
                }
                Err(e) => {
                    self.accounts.lose(
                        n,
                        format!(
                            "the {} sink kept failing for {:?}: {e}",
                            self.accounts.sink, self.retry_for
                        ),
                    );
                    let message = format!("audit records lost: {e}");
                    for ack in acks.into_iter().flatten() {
                        let _ =
                            ack.send(Err(AuditError::new(AuditErrorKind::Lost, message.clone())));
                    }
                    Err(SinkError::new(message))
                }
            }
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let result = self.sink.seal(SealReason::Flush).await;
            self.accounts.publish(self.sink.take_notices());
            result.map_err(|e| {
                    tracing::error!(target: "qiflow::audit", sink = self.accounts.sink, error = %e, "cannot seal the audit trail with a digest");
                    SinkError::new(format!("cannot seal the audit trail: {e}"))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::config::Config;

    /// Fails its first `failures` writes, then stores.
    struct Flaky {
        failures: u64,
        stored: Arc<AtomicU64>,
    }

    impl AuditSink for Flaky {
        fn write<'a>(
            &'a mut self,
            batch: &'a [AuditEvent],
        ) -> BoxFuture<'a, Result<(), AuditError>> {
            Box::pin(async move {
                if self.failures > 0 {
                    self.failures -= 1;
                    return Err(AuditError::new(AuditErrorKind::Database, "down"));
                }
                self.stored.fetch_add(batch.len() as u64, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    fn queued(n: usize) -> Vec<Queued> {
        (0..n)
            .map(|i| Queued {
                event: AuditEvent::builder("a", format!("x{i}")).build(),
                ack: None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_batch_is_retried_then_stored_or_lost_loudly() {
        let mut config = Config::default();
        config.metrics.global_labels = false;
        let metrics = Metrics::new(&config).unwrap();
        let losses = Arc::new(AtomicU64::new(0));
        let l = losses.clone();
        let hook: LossHook = Arc::new(move |loss: &AuditLoss| {
            l.fetch_add(loss.records, Ordering::SeqCst);
        });
        let stored = Arc::new(AtomicU64::new(0));
        let accounts = Accounts::new(&metrics, "flaky", Some(hook), None);
        let mut writer = Writer::new(
            Flaky {
                failures: 3,
                stored: stored.clone(),
            },
            accounts.clone(),
        )
        .retry_for(Duration::from_secs(5));
        writer.write(queued(4)).await.unwrap();
        assert_eq!(stored.load(Ordering::SeqCst), 4);
        assert_eq!(losses.load(Ordering::SeqCst), 0);

        let mut writer = Writer::new(
            Flaky {
                failures: u64::MAX,
                stored: stored.clone(),
            },
            accounts,
        )
        .retry_for(Duration::from_secs(5));
        assert!(writer.write(queued(3)).await.is_err());
        assert_eq!(losses.load(Ordering::SeqCst), 3);
        let text = metrics.render();
        assert!(
            text.contains(r#"qiflow_audit_records_total{sink="flaky",outcome="lost"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"qiflow_audit_records_total{sink="flaky",outcome="written"} 4"#),
            "{text}"
        );
    }
}
