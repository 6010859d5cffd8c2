//! `http_server_active_requests`: one signed atomic per (method, route), kept by qiflow.
//!
//! The exporter's gauges store an `f64` and update it with a compare-and-swap loop; an in-flight
//! count only needs an integer add. Keeping it here also lets the dashboard read the value back
//! (a `metrics::Gauge` is write-only). Rendered after the exporter's series, in the same text
//! format, like [`super::latency`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_type_line,
};

/// The metric's name.
pub(crate) const NAME: &str = "http_server_active_requests";

/// Its HELP text.
pub(crate) const HELP: &str = "Requests in flight, by method and route template.";

/// The in-flight count of one (method, route).
#[derive(Debug, Default)]
pub(crate) struct ActiveGauge(AtomicI64);

impl ActiveGauge {
    /// One more request in flight.
    pub(crate) fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// One request fewer.
    pub(crate) fn decrement(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests in flight now.
    pub(crate) fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every series of the gauge, for rendering.
pub(crate) struct ActiveRegistry {
    /// `service="…",environment="…",` (or empty), ready to prefix a label set.
    global: String,
    series: Mutex<Vec<(String, Arc<ActiveGauge>)>>,
}

impl ActiveRegistry {
    /// `global` are the label pairs every series carries first.
    pub(crate) fn new(global: &[(&str, &str)]) -> Self {
        let mut prefix = String::new();
        for (name, value) in global {
            let _ = write!(prefix, "{name}=\"{}\",", sanitize_label_value(value));
        }
        Self {
            global: prefix,
            series: Mutex::new(Vec::new()),
        }
    }

    /// A new series for `method` and `route` (the caller keeps one per pair).
    pub(crate) fn series(&self, method: &str, route: &str) -> Arc<ActiveGauge> {
        let labels = format!(
            "{}method=\"{}\",route=\"{}\"",
            self.global,
            sanitize_label_value(method),
            sanitize_label_value(route)
        );
        let gauge = Arc::new(ActiveGauge::default());
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((labels, gauge.clone()));
        gauge
    }

    /// Appends the gauge in the Prometheus text format (nothing while it has no series).
    pub(crate) fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if series.is_empty() {
            return;
        }
        write_help_line(out, NAME, None, None, HELP);
        write_type_line(out, NAME, None, None, "gauge");
        for (labels, gauge) in series.iter() {
            let _ = writeln!(out, "{NAME}{{{labels}}} {}", gauge.get());
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_goes_up_and_down_and_renders_with_the_global_labels_first() {
        let registry = ActiveRegistry::new(&[("service", "shop")]);
        let gauge = registry.series("GET", "/a\"b");
        gauge.increment();
        gauge.increment();
        gauge.decrement();
        let mut text = String::new();
        registry.render(&mut text);
        assert!(
            text.contains(&format!(
                "{NAME}{{service=\"shop\",method=\"GET\",route=\"/a\\\"b\"}} 1\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!("# TYPE {NAME} gauge\n")), "{text}");
    }

    #[test]
    fn nothing_is_rendered_without_series() {
        let mut text = String::new();
        ActiveRegistry::new(&[]).render(&mut text);
        assert!(text.is_empty());
    }
}
