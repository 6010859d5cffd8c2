//! The checks of `[dependencies.NAME]`, run when a configuration is loaded.

use std::collections::BTreeMap;

use crate::config::{DependencyConfig, Findings};

/// Adds the problems of every `[dependencies.NAME]` table to `f`.
pub(crate) fn check(dependencies: &BTreeMap<String, DependencyConfig>, f: &mut Findings) {
    for (name, d) in dependencies {
        let path = |key: &str| format!("dependencies.{name}.{key}");
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            f.bad(
                format!("dependencies.{name}"),
                "a dependency name is 1 to 64 printable characters, like \"main-db\"",
            );
        }
        if d.slow.is_zero() {
            f.bad(path("slow"), "must be more than 0, like \"2s\"");
        }
        if d.timeout.is_zero() {
            f.bad(path("timeout"), "must be more than 0, like \"2s\"");
        }
        if d.cache > std::time::Duration::from_secs(60) {
            f.bad(
                path("cache"),
                "at most \"60s\": a cached result older than a probe interval hides an outage",
            );
        }
        if !(d.error_ratio > 0.0 && d.error_ratio <= 1.0) {
            f.bad(
                path("error_ratio"),
                "a share of calls above 0 and at most 1, like 0.05 (5% of calls failing)",
            );
        }
        if d.error_window < std::time::Duration::from_secs(1) {
            f.bad(path("error_window"), "at least \"1s\", like \"1m\"");
        }
    }
}
