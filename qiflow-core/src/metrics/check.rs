//! The checks of `[metrics]`, run when a configuration is loaded.

use crate::config::{Findings, MetricsConfig};

/// Adds the problems of `[metrics]` to `f`.
pub(crate) fn check(metrics: &MetricsConfig, f: &mut Findings) {
    if !metrics.path.starts_with('/') {
        f.bad(
            "metrics.path",
            format!("{:?} must start with '/'", metrics.path),
        );
    }
    if metrics.buckets.is_empty()
        || metrics.buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
        || metrics.buckets.windows(2).any(|w| w[0] >= w[1])
    {
        f.bad(
            "metrics.buckets",
            "must be positive numbers of seconds in increasing order, like [0.01, 0.1, 1]",
        );
    }
    if metrics.max_routes == 0 {
        f.bad("metrics.max_routes", "must be at least 1");
    }
    if metrics.system && metrics.system_interval < std::time::Duration::from_secs(1) {
        f.bad(
            "metrics.system_interval",
            "must be at least \"1s\" (the default, \"15s\", matches a usual scrape interval)",
        );
    }
}
