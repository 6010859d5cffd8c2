//! `http_server_request_duration_seconds`: a fixed-bucket histogram of atomic counters.
//!
//! The Prometheus exporter's own histograms keep every sample in a lock-free list until the next
//! upkeep or scrape, which allocates a block every 64 samples and drains them on the worker. A
//! request-latency histogram only needs its bucket counts, so qiflow keeps those: recording is a
//! search among the configured bounds and two relaxed atomic adds, memory is fixed, and nothing
//! needs draining. The series are rendered after the exporter's, in the same text format (global
//! labels first, cumulative `le` buckets, `_sum` in seconds, `_count`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_type_line,
};

/// The metric's name.
pub(crate) const NAME: &str = "http_server_request_duration_seconds";

/// Its HELP text.
pub(crate) const HELP: &str = "Time from the request's arrival to its response head, by method, route template and status code.";

/// The counts of one series.
pub(crate) struct LatencyHistogram {
    /// Observations per bucket, not cumulative: one per bound, then `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation. `bounds` are the registry's (the same for every series).
    pub(crate) fn record(&self, bounds: &[f64], latency: Duration) {
        let seconds = latency.as_secs_f64();
        let index = bounds.partition_point(|bound| *bound < seconds);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Adds this series' bucket counts (not cumulative) into `into`, which has one slot per
    /// bucket; returns the observations in all.
    pub(crate) fn add_counts(&self, into: &mut [u64]) -> u64 {
        let mut total = 0;
        for (slot, bucket) in into.iter_mut().zip(self.buckets.iter()) {
            let n = bucket.load(Ordering::Relaxed);
            *slot += n;
            total += n;
        }
        total
    }
}

/// Every series of the histogram, for rendering.
pub(crate) struct LatencyRegistry {
    /// Upper bounds in seconds, ascending (`[metrics] buckets`).
    bounds: Box<[f64]>,
    /// `service="…",environment="…",` (or empty), ready to prefix a label set.
    global: String,
    /// Each series' own labels, rendered, and its counts.
    series: Mutex<Vec<(String, Arc<LatencyHistogram>)>>,
}

impl LatencyRegistry {
    /// `bounds` must be ascending (the configuration checks it); `global` are the label pairs
    /// every series carries first.
    pub(crate) fn new(bounds: &[f64], global: &[(&str, &str)]) -> Self {
        let mut prefix = String::new();
        for (name, value) in global {
            let _ = write!(prefix, "{name}=\"{}\",", sanitize_label_value(value));
        }
        Self {
            bounds: bounds.into(),
            global: prefix,
            series: Mutex::new(Vec::new()),
        }
    }

    /// The bucket bounds.
    pub(crate) fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// A new series with these labels (the caller keeps one per label set).
    pub(crate) fn series(&self, labels: &[(&str, &str)]) -> Arc<LatencyHistogram> {
        let mut rendered = self.global.clone();
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                rendered.push(',');
            }
            let _ = write!(rendered, "{name}=\"{}\"", sanitize_label_value(value));
        }
        let histogram = Arc::new(LatencyHistogram {
            buckets: (0..=self.bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        });
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((rendered, histogram.clone()));
        histogram
    }

    /// Appends the histogram in the Prometheus text format (nothing while it has no series).
    pub(crate) fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if series.is_empty() {
            return;
        }
        write_help_line(out, NAME, None, None, HELP);
        write_type_line(out, NAME, None, None, "histogram");
        for (labels, histogram) in series.iter() {
            let mut cumulative = 0u64;
            for (i, bucket) in histogram.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                match self.bounds.get(i) {
                    Some(bound) => {
                        let _ =
                            writeln!(out, "{NAME}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                    }
                    None => {
                        let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                    }
                }
            }
            let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{NAME}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{NAME}_count{{{labels}}} {cumulative}");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them_and_render_cumulatively() {
        let registry = LatencyRegistry::new(&[0.005, 0.1, 1.0], &[("service", "shop")]);
        let h = registry.series(&[("method", "GET"), ("route", "/a\"b"), ("status", "200")]);
        for ms in [1, 5, 6, 100, 2_000] {
            h.record(registry.bounds(), Duration::from_millis(ms));
        }
        let mut text = String::new();
        registry.render(&mut text);
        let labels = r#"service="shop",method="GET",route="/a\"b",status="200""#;
        for (le, count) in [("0.005", 2), ("0.1", 4), ("1", 4), ("+Inf", 5)] {
            let line = format!("{NAME}_bucket{{{labels},le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
        assert!(
            text.contains(&format!("{NAME}_sum{{{labels}}} 2.112\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{NAME}_count{{{labels}}} 5\n")),
            "{text}"
        );
        assert!(text.starts_with(&format!("# HELP {NAME} ")), "{text}");
        assert!(
            text.contains(&format!("# TYPE {NAME} histogram\n")),
            "{text}"
        );
    }

    #[test]
    fn nothing_is_rendered_without_series() {
        let mut text = String::new();
        LatencyRegistry::new(&[0.1], &[]).render(&mut text);
        assert!(text.is_empty());
    }
}
