use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use serde::Serialize;

use super::sink::Sink;

/// What [`Pipeline::submit`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the new item and count it (reason `queue_full`). Never waits.
    Drop,
    /// Wait up to this long for room, then drop and count the item. The calling thread blocks.
    Block(Duration),
}

/// Settings of one pipeline.
#[derive(Debug, Clone)]
#[must_use]
pub struct PipelineOptions {
    pub(crate) name: &'static str,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) report_errors: bool,
    pub(crate) flush_last: bool,
    pub(crate) flush_late: bool,
}

impl PipelineOptions {
    /// Options for a pipeline named `name` (the `pipeline` label of `qiflow_dropped_total`).
    ///
    /// Defaults: capacity 1024, [`Overflow::Drop`], batches of up to 64, no linger, sink errors
    /// reported as `warn` events on target `qiflow::worker`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            capacity: 1024,
            overflow: Overflow::Drop,
            batch_size: 64,
            linger: Duration::ZERO,
            report_errors: true,
            flush_last: false,
            flush_late: false,
        }
    }

    /// The most items that may wait in the queue (at least 1). Defaults to 1024.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What happens when the queue is full. Defaults to [`Overflow::Drop`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The most items handed to one [`Sink::write`] (at least 1). Defaults to 64.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How long to wait for a batch to fill before writing a partial one. Defaults to zero:
    /// write whatever is queued at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Whether sink errors are reported as `warn` events (turn off for the log pipeline itself,
    /// whose errors would feed back into it). Defaults to `true`.
    pub fn report_errors(mut self, report: bool) -> Self {
        self.report_errors = report;
        self
    }

    /// Flush this pipeline after all others (the log pipeline, so it takes what their flushes
    /// report). Defaults to `false`: pipelines flush in registration order.
    ///
    /// (Inside qiflow, the alerts pipeline flushes after the others and before the logs, so
    /// alerts raised by the other pipelines' flushes are still sent.)
    pub fn flush_last(mut self, last: bool) -> Self {
        self.flush_last = last;
        self
    }

    /// Flush after the pipelines of the host and before the `flush_last` ones (the alerts).
    pub(crate) fn flush_late(mut self) -> Self {
        self.flush_late = true;
        self
    }
}

/// Why an item was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// The queue was full (after waiting, with [`Overflow::Block`]).
    QueueFull,
    /// The pipeline was shut down (the guard was dropped) before the item was submitted.
    Closed,
    /// The sink returned an error for the item's batch.
    SinkError,
    /// The guard's flush deadline passed while the item was queued or being written.
    Shutdown,
    /// The destination asked qiflow to back off (HTTP 429 and its `Retry-After`), and the item
    /// came while it did.
    RateLimited,
}

impl DropReason {
    /// Every reason, in the order `qiflow_dropped_total{reason}` lists them.
    pub const ALL: [DropReason; 5] = [
        Self::QueueFull,
        Self::Closed,
        Self::SinkError,
        Self::Shutdown,
        Self::RateLimited,
    ];

    /// The `reason` label value (`queue_full`, `closed`, `sink_error`, `shutdown`,
    /// `rate_limited`).
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Closed => "closed",
            Self::SinkError => "sink_error",
            Self::Shutdown => "shutdown",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::QueueFull => "the queue is full",
            Self::Closed => "the pipeline is shut down",
            Self::SinkError => "the sink failed",
            Self::Shutdown => "the shutdown deadline passed",
            Self::RateLimited => "the destination asked to back off",
        })
    }
}

impl std::error::Error for DropReason {}

/// A snapshot of one pipeline's counters.
///
/// At any moment `submitted == delivered + dropped() + queued + in_flight`; once the guard has
/// been dropped, `queued` and `in_flight` are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PipelineStats {
    /// The pipeline's name.
    pub name: &'static str,
    /// Items offered to [`Pipeline::submit`].
    pub submitted: u64,
    /// Items the sink accepted.
    pub delivered: u64,
    /// Items waiting in the queue.
    pub queued: u64,
    /// The most items the queue holds (`None`: unbounded).
    pub capacity: Option<u64>,
    /// Items taken by the worker and not yet written.
    pub in_flight: u64,
    /// Dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Dropped because the pipeline was already shut down.
    pub dropped_closed: u64,
    /// Dropped because the sink failed.
    pub dropped_sink_error: u64,
    /// Dropped because the flush deadline passed.
    pub dropped_shutdown: u64,
    /// Dropped because the destination asked to back off.
    pub dropped_rate_limited: u64,
}

impl PipelineStats {
    /// Every dropped item, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_closed
            + self.dropped_sink_error
            + self.dropped_shutdown
            + self.dropped_rate_limited
    }

    /// The items dropped for one reason.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::Closed => self.dropped_closed,
            DropReason::SinkError => self.dropped_sink_error,
            DropReason::Shutdown => self.dropped_shutdown,
            DropReason::RateLimited => self.dropped_rate_limited,
        }
    }
}

#[derive(Default)]
struct Accounting {
    in_flight: u64,
    delivered: u64,
    failed: u64,
    rate_limited: u64,
    shutdown: u64,
    abandoned: bool,
}

/// State shared by the producer handles, the worker task and the guard.
pub(crate) struct Shared {
    name: &'static str,
    submitted: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    closed: AtomicBool,
    accounting: Mutex<Accounting>,
    /// Ends a batch's linger early: someone waits for what is queued (see [`Pipeline::hurry`]).
    hurry: tokio::sync::Notify,
}

impl Shared {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            submitted: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_closed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            accounting: Mutex::new(Accounting::default()),
            hurry: tokio::sync::Notify::new(),
        }
    }

    fn accounting(&self) -> std::sync::MutexGuard<'_, Accounting> {
        self.accounting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn count_drop(&self, reason: DropReason, n: u64) {
        match reason {
            DropReason::QueueFull => self.dropped_full.fetch_add(n, Ordering::Relaxed),
            DropReason::Closed => self.dropped_closed.fetch_add(n, Ordering::Relaxed),
            DropReason::SinkError => {
                self.accounting().failed += n;
                0
            }
            DropReason::Shutdown => {
                self.accounting().shutdown += n;
                0
            }
            DropReason::RateLimited => {
                self.accounting().rate_limited += n;
                0
            }
        };
    }

    /// The worker takes `n` items from the queue; false when the pipeline was abandoned (the items
    /// are then counted as dropped here).
    fn take(&self, n: u64) -> bool {
        let mut acct = self.accounting();
        if acct.abandoned {
            acct.shutdown += n;
            false
        } else {
            acct.in_flight += n;
            true
        }
    }

    /// The worker finished writing `n` items, `failed` of which were lost for `reason`.
    fn finish(&self, n: u64, failed: u64, reason: DropReason) {
        let failed = failed.min(n);
        let mut acct = self.accounting();
        if acct.abandoned {
            return; // The guard already counted them.
        }
        acct.in_flight = acct.in_flight.saturating_sub(n);
        acct.delivered += n - failed;
        match reason {
            DropReason::RateLimited => acct.rate_limited += failed,
            _ => acct.failed += failed,
        }
    }

    /// Items dropped so far, whatever the reason.
    fn dropped(&self) -> u64 {
        let acct = self.accounting();
        self.dropped_full.load(Ordering::Relaxed)
            + self.dropped_closed.load(Ordering::Relaxed)
            + acct.failed
            + acct.rate_limited
            + acct.shutdown
    }
}

/// The producer side of a pipeline: cheap to clone, safe to call from any thread.
///
/// [`Pipeline::submit`] is the only thing the request path does: a bounded `try_send` (or a
/// send bounded by a timeout with [`Overflow::Block`]) and an atomic increment.
pub struct Pipeline<T> {
    tx: flume::Sender<T>,
    control: flume::Sender<Control>,
    shared: Arc<Shared>,
    overflow: Overflow,
}

impl<T> Clone for Pipeline<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            control: self.control.clone(),
            shared: self.shared.clone(),
            overflow: self.overflow,
        }
    }
}

impl<T> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.shared.name)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// Queues an item for the sink. On overflow or after shutdown the item is dropped, counted on
    /// `qiflow_dropped_total{pipeline}` and in [`PipelineStats`], and the reason returned.
    pub fn submit(&self, item: T) -> Result<(), DropReason> {
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.count_drop(DropReason::Closed, 1);
            return Err(DropReason::Closed);
        }
        let result = match self.overflow {
            Overflow::Drop => self.tx.try_send(item).map_err(|e| match e {
                flume::TrySendError::Full(_) => DropReason::QueueFull,
                flume::TrySendError::Disconnected(_) => DropReason::Closed,
            }),
            Overflow::Block(timeout) => self.tx.send_timeout(item, timeout).map_err(|e| match e {
                flume::SendTimeoutError::Timeout(_) => DropReason::QueueFull,
                flume::SendTimeoutError::Disconnected(_) => DropReason::Closed,
            }),
        };
        if let Err(reason) = result {
            self.shared.count_drop(reason, 1);
        }
        result
    }

    /// The pipeline's name.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// Asks the worker to drain the queue and flush the sink, without waiting (timed digests
    /// of the audit trail).
    /// Writes what is queued without waiting out the linger (the sink is not flushed): for a
    /// caller that waits for its item to be stored. A wake-up that arrives before the item is
    /// taken is kept, so it is never missed; a stale one only cuts a later linger short.
    pub(crate) fn hurry(&self) {
        self.shared.hurry.notify_one();
    }

    pub(crate) fn request_flush(&self) {
        let (ack, _) = mpsc::channel();
        let _ = self.control.send(Control::Flush(ack));
    }

    /// Items waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Items dropped so far, whatever the reason (what `qiflow_dropped_total{pipeline}` shows).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped()
    }
}

pub(crate) enum Control {
    Flush(mpsc::Sender<()>),
}

/// The guard's and the observer's handle on a running pipeline, whatever its item type.
pub(crate) trait Controlled: Send + Sync {
    fn name(&self) -> &'static str;
    /// 0: registration order; 1: after those (alerts); 2: last (logs).
    fn flush_rank(&self) -> u8;
    /// Asks the worker to drain the queue and flush the sink; `ack` is sent when done.
    fn request_flush(&self, ack: mpsc::Sender<()>) -> bool;
    /// Gives up on the pipeline: no more submissions, everything queued or in flight is counted
    /// as dropped (reason `shutdown`).
    fn abandon(&self);
    /// Refuses new submissions (counted as `closed`) without dropping what is queued.
    fn close(&self);
    fn stats(&self) -> PipelineStats;
}

pub(crate) struct Controller<T> {
    shared: Arc<Shared>,
    flush_rank: u8,
    rx: flume::Receiver<T>,
    control: flume::Sender<Control>,
}

impl<T: Send + 'static> Controlled for Controller<T> {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    fn flush_rank(&self) -> u8 {
        self.flush_rank
    }

    fn request_flush(&self, ack: mpsc::Sender<()>) -> bool {
        self.control.send(Control::Flush(ack)).is_ok()
    }

    fn abandon(&self) {
        self.close();
        {
            let mut acct = self.shared.accounting();
            if !acct.abandoned {
                acct.abandoned = true;
                let n = std::mem::take(&mut acct.in_flight);
                acct.shutdown += n;
            }
        }
        let drained = self.rx.drain().count() as u64;
        if drained > 0 {
            self.shared.count_drop(DropReason::Shutdown, drained);
        }
    }

    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    fn stats(&self) -> PipelineStats {
        let acct = self.shared.accounting();
        PipelineStats {
            name: self.shared.name,
            submitted: self.shared.submitted.load(Ordering::Relaxed),
            delivered: acct.delivered,
            queued: self.rx.len() as u64,
            capacity: self.rx.capacity().map(|c| c as u64),
            in_flight: acct.in_flight,
            dropped_queue_full: self.shared.dropped_full.load(Ordering::Relaxed),
            dropped_closed: self.shared.dropped_closed.load(Ordering::Relaxed),
            dropped_sink_error: acct.failed,
            dropped_shutdown: acct.shutdown,
            dropped_rate_limited: acct.rate_limited,
        }
    }
}

/// Creates a pipeline: the producer handle, the control handle, and the worker task to spawn.
pub(crate) fn pipeline<T, S>(
    options: PipelineOptions,
    sink: S,
) -> (
    Pipeline<T>,
    Arc<dyn Controlled>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    T: Send + 'static,
    S: Sink<T>,
{
    let (tx, rx) = flume::bounded(options.capacity);
    let (control_tx, control_rx) = flume::unbounded();
    let shared = Arc::new(Shared::new(options.name));
    let producer = Pipeline {
        tx,
        control: control_tx.clone(),
        shared: shared.clone(),
        overflow: options.overflow,
    };
    let controlled: Arc<dyn Controlled> = Arc::new(Controller {
        shared: shared.clone(),
        flush_rank: if options.flush_last {
            2
        } else {
            u8::from(options.flush_late)
        },
        rx: rx.clone(),
        control: control_tx,
    });
    let task = run(rx, control_rx, sink, shared, options);
    (producer, controlled, task)
}

async fn run<T: Send + 'static, S: Sink<T>>(
    rx: flume::Receiver<T>,
    control: flume::Receiver<Control>,
    mut sink: S,
    shared: Arc<Shared>,
    options: PipelineOptions,
) {
    let mut batch: Vec<T> = Vec::with_capacity(options.batch_size);
    loop {
        let command = tokio::select! {
            biased;
            command = control.recv_async() => command,
            item = rx.recv_async() => {
                let Ok(item) = item else { break };
                let mut command = None;
                if pull(&rx, Some(item), &mut batch, &shared, options.batch_size)
                    && !options.linger.is_zero()
                {
                    // Let a batch gather: sleep (one wake-up, not one per item) until the
                    // linger ends or a flush is asked for, then take what arrived.
                    if batch.len() < options.batch_size {
                        let deadline = tokio::time::Instant::now() + options.linger;
                        tokio::select! {
                            biased;
                            c = control.recv_async() => command = Some(c),
                            () = shared.hurry.notified() => {}
                            () = tokio::time::sleep_until(deadline) => {}
                        }
                        pull(&rx, None, &mut batch, &shared, options.batch_size);
                    }
                }
                if !batch.is_empty() {
                    write(&mut sink, &mut batch, &shared, &options).await;
                }
                match command {
                    Some(command) => command,
                    None => continue,
                }
            }
        };
        match command {
            Ok(Control::Flush(ack)) => {
                // Drain what is queued now, then flush the sink.
                loop {
                    if !pull(&rx, None, &mut batch, &shared, options.batch_size) {
                        continue;
                    }
                    if batch.is_empty() {
                        break;
                    }
                    write(&mut sink, &mut batch, &shared, &options).await;
                }
                if let Err(e) = sink.flush().await
                    && options.report_errors
                {
                    tracing::warn!(target: "qiflow::worker", pipeline = shared.name, error = %e, "flush failed");
                }
                let _ = ack.send(());
            }
            Err(_) => break,
        }
    }
}

/// Moves `first` and whatever else is queued (up to `batch_size` in all) into `batch`, and
/// accounts for them at once, before any await, so that no item is ever held uncounted. Returns
/// false when the pipeline was abandoned (the batch is then counted as dropped and cleared).
fn pull<T>(
    rx: &flume::Receiver<T>,
    first: Option<T>,
    batch: &mut Vec<T>,
    shared: &Shared,
    batch_size: usize,
) -> bool {
    let before = batch.len();
    batch.extend(first);
    while batch.len() < batch_size {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    let added = (batch.len() - before) as u64;
    if added > 0 && !shared.take(added) {
        batch.clear();
        return false;
    }
    true
}

async fn write<T, S: Sink<T>>(
    sink: &mut S,
    batch: &mut Vec<T>,
    shared: &Shared,
    options: &PipelineOptions,
) {
    let n = batch.len() as u64;
    let items = std::mem::replace(batch, Vec::with_capacity(options.batch_size));
    let result = sink.write(items).await;
    if let Err(e) = &result
        && options.report_errors
    {
        tracing::warn!(target: "qiflow::worker", pipeline = shared.name, items = n, error = %e, "sink failed; items dropped");
    }
    let (failed, reason) = match &result {
        Ok(()) => (0, DropReason::SinkError),
        Err(e) => (e.undelivered().unwrap_or(n), e.reason()),
    };
    shared.finish(n, failed, reason);
}
