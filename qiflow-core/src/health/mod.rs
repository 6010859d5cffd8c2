//! Health: the [`HealthCheck`] trait, the built-in checks, and the reports served at
//! `/health/live`, `/health/ready` and `/health`.
//!
//! - **Liveness** ([`Observer::liveness`]) says the process is up. It checks no dependency, so it
//!   stays healthy when every dependency is down: an orchestrator should restart the process only
//!   when it stops answering.
//! - **Readiness** ([`Observer::readiness`]) runs every check, concurrently, each under
//!   [`CHECK_TIMEOUT`], on qiflow's background runtime: the built-in ones (the log directory is
//!   writable, free disk space there, each pipeline's drops) and those registered with
//!   [`ObserverBuilder::health_check`](crate::ObserverBuilder::health_check). The overall status is
//!   the worst one; `unhealthy` is answered with 503.
//!
//! The JSON shape is `{"status":"healthy"|"degraded"|"unhealthy","checks":{…},"service":…,
//! "version":…,"uptime_seconds":…,"memory_rss_bytes":…}`. When `[health] token` is set, callers
//! without `Authorization: Bearer <token>` get only `{"status":…}` ([`HealthReport::summary`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::Observer;
use crate::worker::BoxFuture;

/// The longest one check may take before it counts as unhealthy.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Below this much free space on the log volume, the disk check is degraded.
pub const LOW_DISK_BYTES: u64 = 100 * 1024 * 1024;

/// Overall or per-check health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Everything works.
    Healthy,
    /// Working, with a problem worth a look (answered with 200).
    Degraded,
    /// Not able to serve (answered with 503).
    Unhealthy,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckResult {
    /// The check's status.
    pub status: Status,
    /// What was found, for humans (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long the check took, µs (set by readiness for the checks it runs; `None` for the
    /// pipelines' figures, which are read, not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
}

impl CheckResult {
    /// Healthy, with nothing to say.
    pub fn healthy() -> Self {
        Self {
            status: Status::Healthy,
            detail: None,
            duration_us: None,
        }
    }

    /// Degraded, saying why.
    pub fn degraded(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Degraded,
            detail: Some(detail.into()),
            duration_us: None,
        }
    }

    /// Unhealthy, saying why.
    pub fn unhealthy(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Unhealthy,
            detail: Some(detail.into()),
            duration_us: None,
        }
    }
}

/// A readiness check: a database ping, a queue's depth, a dependency's health endpoint.
///
/// Only [`HealthCheck::check`] is required; it runs on qiflow's background runtime under
/// [`CHECK_TIMEOUT`]. Async closures returning a [`CheckResult`] are checks (which also covers
/// `Arc`/`Box` of a closure):
///
/// ```
/// use qiflow_core::health::CheckResult;
///
/// let builder = qiflow_core::Observer::builder(Default::default())
///     .health_check("cache", || async { CheckResult::healthy() });
/// # drop(builder);
/// ```
///
/// Implemented for closures that return a future of [`CheckResult`], for `Arc<H>` (a check
/// shared with the application), and by [`NoopCheck`]. Not for `Box<H>`: a boxed closure is a
/// closure already.
///
/// ```
/// use std::sync::Arc;
/// use qiflow_core::health::{CheckResult, HealthCheck};
///
/// let shared: Arc<dyn HealthCheck> = Arc::new(|| async { CheckResult::degraded("slow") });
/// let builder = qiflow_core::Observer::builder(Default::default()).health_check("db", shared);
/// # drop(builder);
/// ```
pub trait HealthCheck: Send + Sync + 'static {
    /// Runs the check.
    fn check(&self) -> BoxFuture<'_, CheckResult>;
}

impl<H: HealthCheck + ?Sized> HealthCheck for std::sync::Arc<H> {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        (**self).check()
    }
}

impl<F, Fut> HealthCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CheckResult> + Send + 'static,
{
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(self())
    }
}

/// A check that always passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopCheck;

impl HealthCheck for NoopCheck {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async { CheckResult::healthy() })
    }
}

/// The log directory accepts a new file.
#[derive(Debug, Clone)]
pub struct DirWritableCheck {
    dir: std::path::PathBuf,
}

impl DirWritableCheck {
    /// Checks `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl HealthCheck for DirWritableCheck {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || {
                let probe = dir.join(format!(".qiflow-health-{}", std::process::id()));
                match std::fs::write(&probe, b"ok") {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&probe);
                        CheckResult::healthy()
                    }
                    Err(e) => {
                        CheckResult::unhealthy(format!("{} is not writable: {e}", dir.display()))
                    }
                }
            })
            .await
            .unwrap_or_else(|e| CheckResult::unhealthy(format!("check failed: {e}")))
        })
    }
}

/// Free space on the volume holding a directory.
#[derive(Debug, Clone)]
pub struct DiskSpaceCheck {
    dir: std::path::PathBuf,
    min_free: u64,
}

impl DiskSpaceCheck {
    /// Degraded below `min_free` bytes free (see [`LOW_DISK_BYTES`]), unhealthy below 1 MiB.
    pub fn new(dir: impl Into<std::path::PathBuf>, min_free: u64) -> Self {
        Self {
            dir: dir.into(),
            min_free,
        }
    }
}

impl HealthCheck for DiskSpaceCheck {
    fn check(&self) -> BoxFuture<'_, CheckResult> {
        Box::pin(async move {
            match free_space(&self.dir) {
                Ok(free) if free < 1024 * 1024 => {
                    CheckResult::unhealthy(format!("{free} bytes free in {}", self.dir.display()))
                }
                Ok(free) if free < self.min_free => CheckResult::degraded(format!(
                    "{} free in {}",
                    crate::config::units::format_size(free),
                    self.dir.display()
                )),
                Ok(free) => CheckResult {
                    status: Status::Healthy,
                    detail: Some(format!("{} free", crate::config::units::format_size(free))),
                    duration_us: None,
                },
                Err(e) => CheckResult::degraded(format!(
                    "cannot read free space of {}: {e}",
                    self.dir.display()
                )),
            }
        })
    }
}

fn free_space(dir: &Path) -> std::io::Result<u64> {
    fs4::available_space(dir)
}

/// A health report, serialized as the endpoints' JSON body.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The worst status of all checks.
    pub status: Status,
    /// Per-check results, by check name.
    pub checks: BTreeMap<String, CheckResult>,
    /// `[service] name`.
    pub service: String,
    /// `[service] version`.
    pub version: String,
    /// Seconds since the observer was built.
    pub uptime_seconds: u64,
    /// The process's resident memory, where the platform tells (Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_rss_bytes: Option<u64>,
}

impl HealthReport {
    /// Liveness: the process is up.
    pub(crate) fn live(observer: &Observer) -> Self {
        let service = &observer.config().service;
        Self {
            status: Status::Healthy,
            checks: BTreeMap::new(),
            service: service.name.clone(),
            version: service.version.clone(),
            uptime_seconds: observer.uptime().as_secs(),
            // The `[metrics] system` sampler's latest figure (what `/metrics` shows as
            // `process_resident_memory_bytes`); read now when it is off or has not sampled yet.
            memory_rss_bytes: observer.sampled_rss().or_else(rss_bytes),
        }
    }

    /// Readiness: every check, run concurrently on the background runtime.
    pub(crate) async fn ready(observer: &Observer) -> Self {
        let mut report = Self::live(observer);
        for stats in observer.stats() {
            let result = if stats.dropped_sink_error > 0 {
                CheckResult::degraded(format!(
                    "{} dropped (sink errors {}, queue full {}, shutdown {})",
                    stats.dropped(),
                    stats.dropped_sink_error,
                    stats.dropped_queue_full,
                    stats.dropped_shutdown
                ))
            } else if stats.dropped() > 0 {
                CheckResult {
                    status: Status::Healthy,
                    detail: Some(format!(
                        "{} dropped (queue full {})",
                        stats.dropped(),
                        stats.dropped_queue_full
                    )),
                    duration_us: None,
                }
            } else {
                CheckResult::healthy()
            };
            report.add(format!("pipeline:{}", stats.name), result);
        }
        let checks = observer.health_checks();
        let handle = observer.runtime().spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for (name, check) in checks {
                set.spawn(async move {
                    let started = std::time::Instant::now();
                    let mut result = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await
                    {
                        Ok(result) => result,
                        Err(_) => {
                            CheckResult::unhealthy(format!("no answer within {CHECK_TIMEOUT:?}"))
                        }
                    };
                    result.duration_us =
                        Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
                    (name, result)
                });
            }
            let mut results = Vec::new();
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(pair) => results.push(pair),
                    Err(e) => results.push((
                        "qiflow".to_owned(),
                        CheckResult::unhealthy(format!("a check panicked: {e}")),
                    )),
                }
            }
            results
        });
        match handle.await {
            Ok(results) => {
                for (name, result) in results {
                    report.add(name, result);
                }
            }
            Err(e) => report.add(
                "qiflow".into(),
                CheckResult::unhealthy(format!("checks did not run: {e}")),
            ),
        }
        report
    }

    fn add(&mut self, name: String, result: CheckResult) {
        self.status = self.status.max(result.status);
        self.checks.insert(name, result);
    }

    /// The HTTP status code to answer with: 503 when unhealthy, else 200.
    pub fn http_status(&self) -> u16 {
        match self.status {
            Status::Unhealthy => 503,
            Status::Healthy | Status::Degraded => 200,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"status":"unhealthy","checks":{}}"#.to_owned())
    }

    /// The body for a caller without the health token: the status only.
    pub fn summary(&self) -> String {
        serde_json::json!({ "status": self.status }).to_string()
    }
}

/// Resident set size from `/proc/self/status` (Linux); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes. The kernel gives it in kB, so it does not
/// depend on the page size (`statm` counts pages: 4 KiB on x86-64, often 16 or 64 KiB on arm64).
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Adds the problems of `[health]`'s paths to `f` (its `token` is the operator surface's: see
/// `crate::admin`).
pub(crate) fn check(health: &crate::config::HealthConfig, f: &mut crate::config::Findings) {
    if !health.path.starts_with('/') {
        f.bad(
            "health.path",
            format!("{:?} must start with '/'", health.path),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib_whatever_the_page_size() {
        let status = "Name:\tapp\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tapp\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t lots kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t 12 pages\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_resident_size() {
        let rss = rss_bytes().expect("Linux has /proc/self/status");
        assert!(rss > 1024 * 1024, "{rss} bytes");
    }
}
