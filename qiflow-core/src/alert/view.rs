//! What `/qiflow/api/alerts` shows: active alerts, recent notifications, silences, channels.

use serde::{Deserialize, Serialize};

use super::model::{Alert, AlertStatus};
use super::silence::Silence;

/// One sent (or failed) notification, for `/qiflow/api/alerts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecentNotification {
    /// When it was settled (RFC 3339).
    pub at: String,
    /// The channel.
    pub channel: String,
    /// `sent`, `failed`, `rate_limited` or `abandoned`.
    pub outcome: String,
    /// Delivery attempts.
    pub attempts: u32,
    /// The last error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The alerts: name, status, fingerprint and count of each.
    pub alerts: Vec<RecentAlert>,
}

/// One alert of a [`RecentNotification`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecentAlert {
    /// The alert's name.
    pub name: String,
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The fingerprint.
    pub fingerprint: String,
    /// Occurrences it stood for.
    pub count: u64,
}

/// An alert that fires now, for `/qiflow/api/alerts`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ActiveAlert {
    /// The latest occurrence.
    pub alert: Alert,
    /// The fingerprint.
    pub fingerprint: String,
    /// First raised (RFC 3339).
    pub first_seen: String,
    /// Last raised (RFC 3339).
    pub last_seen: String,
    /// Last notification (RFC 3339), if any.
    pub last_notified: Option<String>,
    /// Times raised in all.
    pub count: u64,
    /// Repeats held back by the cooldown since the last notification.
    pub suppressed: u64,
    /// Whether a silence holds it back.
    pub silenced: bool,
}

/// A channel's state, for `/qiflow/api/alerts`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ChannelStatus {
    /// The channel's name.
    pub name: String,
    /// Alerts waiting for it (grouping, retrying).
    pub pending: usize,
    /// Its last delivery failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// What `/qiflow/api/alerts` shows.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AlertsView {
    /// Alerts firing now.
    pub active: Vec<ActiveAlert>,
    /// The latest notifications, newest first.
    pub recent: Vec<RecentNotification>,
    /// Silences in force.
    pub silenced: Vec<Silence>,
    /// The channels.
    pub channels: Vec<ChannelStatus>,
}
