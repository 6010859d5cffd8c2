//! The checks of `[baseline]`, run when a configuration is loaded.

use crate::config::{BaselineConfig, Findings};

/// Adds the problems of `[baseline]` to `f`.
pub(crate) fn check(baseline: &BaselineConfig, f: &mut Findings) {
    if baseline.window.as_secs() < 1 {
        f.bad("baseline.window", "must be at least \"1s\"");
    }
    if baseline.min_samples == 0 {
        f.bad("baseline.min_samples", "must be at least 1");
    }
    if !(0.0..=1.0).contains(&baseline.error_rate_margin) {
        f.bad(
            "baseline.error_rate_margin",
            format!(
                "{} is out of range; use a fraction from 0.0 to 1.0, like 0.05",
                baseline.error_rate_margin
            ),
        );
    }
    if !baseline.slow_p99_factor.is_finite()
        || (baseline.slow_p99_factor != 0.0 && baseline.slow_p99_factor < 1.0)
    {
        f.bad(
            "baseline.slow_p99_factor",
            format!(
                "{} must be 0 (off) or at least 1.0, like 3.0",
                baseline.slow_p99_factor
            ),
        );
    }
    if !baseline.deviation_factor.is_finite() || baseline.deviation_factor <= 1.0 {
        f.bad(
            "baseline.deviation_factor",
            format!(
                "{} must be greater than 1.0, like 2.0",
                baseline.deviation_factor
            ),
        );
    }
    if baseline.slow_request.is_zero() {
        f.bad(
            "baseline.slow_request",
            "must be greater than zero, like \"1s\"",
        );
    }
}
