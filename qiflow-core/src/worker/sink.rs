use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future, as returned by [`Sink`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a pipeline delivers its items: a file, an HTTP endpoint, a database table.
///
/// A sink runs on qiflow's background runtime, never on the request path, and receives items in
/// batches. Only [`Sink::write`] is required.
///
/// # When the methods are called
///
/// - `write` as soon as items are queued, with up to `batch_size` of them; one call at a time.
/// - `flush` after the queue has been drained for [`Observer::flush`](crate::Observer::flush) and
///   when the [`Guard`](crate::Guard) is dropped; the default does nothing.
///
/// A `write` that returns an error has its items counted as dropped (reason `sink_error`; only the
/// [`SinkError::partial`] count when the sink delivered part of the batch); a sink
/// that wants retries does them inside `write`. A `write` that never returns holds up only its own
/// pipeline: the guard gives up on it at its deadline and counts its items as dropped.
pub trait Sink<T>: Send + 'static {
    /// Delivers a batch of items.
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Makes everything written so far durable (fsync, a transport flush). Defaults to nothing.
    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

impl<T, S: Sink<T> + ?Sized> Sink<T> for Box<S> {
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>> {
        (**self).write(batch)
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        (**self).flush()
    }
}

/// A sink that accepts and discards everything (counted as delivered).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl<T: Send + 'static> Sink<T> for NoopSink {
    fn write(&mut self, batch: Vec<T>) -> BoxFuture<'_, Result<(), SinkError>> {
        drop(batch);
        Box::pin(async { Ok(()) })
    }
}

/// A sink's failure to deliver a batch.
#[derive(Debug)]
pub struct SinkError {
    message: String,
    undelivered: Option<u64>,
    rate_limited: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// An error with a message (name the destination and what went wrong, never a credential).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            undelivered: None,
            rate_limited: false,
            source: None,
        }
    }

    /// The destination asked to back off (HTTP 429): the items count as dropped with reason
    /// `rate_limited` instead of `sink_error`.
    #[must_use]
    pub fn rate_limited(mut self) -> Self {
        self.rate_limited = true;
        self
    }

    /// The reason the lost items are counted under.
    pub fn reason(&self) -> super::DropReason {
        if self.rate_limited {
            super::DropReason::RateLimited
        } else {
            super::DropReason::SinkError
        }
    }

    /// Only the last `undelivered` items of the batch were lost; the others were delivered.
    #[must_use]
    pub fn partial(mut self, undelivered: u64) -> Self {
        self.undelivered = Some(undelivered);
        self
    }

    /// How many items of the batch were lost (`None`: all of them).
    pub fn undelivered(&self) -> Option<u64> {
        self.undelivered
    }

    /// An error with a message and its cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            undelivered: None,
            rate_limited: false,
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
