//! Test doubles for alert channels (feature `test`), re-exported from `qiflow_core::test`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{AlertChannel, Notification, SendError};
use crate::worker::BoxFuture;

/// Records every notification it is given (clones share the record); can be told to fail its
/// first attempts.
#[derive(Debug, Clone, Default)]
pub struct RecordingChannel {
    sent: Arc<Mutex<Vec<Notification>>>,
    attempts: Arc<AtomicU64>,
    fail_first: Arc<AtomicU64>,
}

impl RecordingChannel {
    /// A channel that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// A channel whose first `n` attempts fail with a retryable error.
    pub fn failing_first(n: u64) -> Self {
        let this = Self::default();
        this.fail_first.store(n, Ordering::SeqCst);
        this
    }

    /// Every notification delivered so far.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every attempt so far, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl AlertChannel for RecordingChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if fail {
            return Box::pin(async { Err(SendError::retryable("test channel fails on purpose")) });
        }
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(n.clone());
        Box::pin(async { Ok(()) })
    }
}
