//! The [`AlertChannel`] trait, its error, and the built-in log channel.

use std::sync::Arc;
use std::time::Duration;

use super::model::{AlertStatus, Notification, level_name};
use crate::config::AlertLevel;
use crate::worker::BoxFuture;

/// Where notifications go: Slack, DingTalk, email, an SMS gateway, a webhook, Alertmanager.
///
/// Only [`AlertChannel::send`] is required. It runs on qiflow's background runtime, never on the
/// request path; the router wraps each call in the channel's `timeout` and retries what
/// [`SendError::is_retryable`] says may succeed later, with exponential backoff and jitter, until
/// `[alerts] retry_deadline`.
///
/// ```
/// use qiflow_core::alert::{AlertChannel, Notification, SendError};
/// use qiflow_core::worker::BoxFuture;
///
/// struct Pager;
///
/// impl AlertChannel for Pager {
///     fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
///         Box::pin(async move {
///             println!("paging about {} alert(s)", n.alerts.len());
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait AlertChannel: Send + Sync + 'static {
    /// Delivers one notification (one attempt).
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxFuture<'a, Result<(), SendError>>;
}

impl<C: AlertChannel + ?Sized> AlertChannel for Arc<C> {
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        (**self).send(notification)
    }
}

impl<C: AlertChannel + ?Sized> AlertChannel for Box<C> {
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        (**self).send(notification)
    }
}

/// A channel that accepts and discards every notification.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopChannel;

impl AlertChannel for NoopChannel {
    fn send<'a>(&'a self, _: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The default channel: each alert as a log event on target `qiflow::alert` (`error` for error
/// and critical alerts, `warn` for warnings, `info` otherwise and for resolved ones).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogChannel;

impl AlertChannel for LogChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        for notice in &n.alerts {
            let a = &notice.alert;
            let labels = serde_json::to_string(&a.labels).unwrap_or_default();
            macro_rules! event {
                ($level:ident) => {
                    tracing::$level!(
                        target: "qiflow::alert",
                        alert = %a.name,
                        level = level_name(a.level),
                        status = a.status.as_str(),
                        fingerprint = %notice.fingerprint,
                        count = notice.count,
                        times = %notice.times(),
                        source = %a.source,
                        labels = %labels,
                        description = %a.description,
                        "{}",
                        a.summary
                    )
                };
            }
            match (a.status, a.level) {
                (AlertStatus::Resolved, _) | (_, AlertLevel::Info) => event!(info),
                (_, AlertLevel::Warning) => event!(warn),
                _ => event!(error),
            }
        }
        Box::pin(async { Ok(()) })
    }
}

/// Why a send failed, and whether a retry may help.
#[derive(Debug, Clone)]
pub struct SendError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl SendError {
    /// A failure that may pass later (a timeout, a 5xx, a refused connection).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure a retry cannot fix (a 4xx: bad URL, bad token, a rejected payload).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The receiver asked to come back after `after` (HTTP 429 with `Retry-After`).
    pub fn retry_after(after: Duration, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: Some(after),
        }
    }

    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// How long the receiver asked to wait before the next attempt.
    pub fn wait_hint(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SendError {}
