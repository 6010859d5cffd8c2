//! Process and machine metrics (`[metrics] system`): sampled on the worker, served on
//! `/metrics` under the Prometheus client names, the health JSON's memory from the same
//! sample, nothing when turned off, and the interval checked on load.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qiflow_core::Observer;
use qiflow_core::config::Loader;

/// The value of the sample `series` (name and labels exactly) in a Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The first sample of family `name`, whatever its labels.
fn any_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = if rest.starts_with('{') {
            rest.split_once("} ")?.1
        } else {
            rest.strip_prefix(' ')?
        };
        value.trim().parse().ok()
    })
}

/// Waits until `f` answers `Some`, or panics after 10 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not come within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_process_and_the_machine_are_sampled_onto_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.metrics.system = true;
    config.metrics.system_interval = Duration::from_secs(1);
    config.logging.dir = dir.path().join("logs");
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();

    // The network interfaces are sampled last: with them, the whole first sample is in.
    let text = eventually("the first sample", || {
        let text = observer.render_metrics();
        (text.contains("process_resident_memory_bytes ")
            && text.contains("system_network_receive_bytes_total{"))
        .then_some(text)
    });
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    let resident = value("process_resident_memory_bytes");
    assert!(resident > 1_000_000.0, "{resident}");
    assert!(value("process_virtual_memory_bytes") >= resident);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 3600.0,
        "{started} against {now}"
    );
    assert!(value("process_threads") >= 1.0);
    if cfg!(target_os = "linux") {
        let open = value("process_open_fds");
        assert!(open >= 3.0, "{open}");
        assert!(value("process_max_fds") >= open);
    }
    let total = value("system_memory_total_bytes");
    let available = value("system_memory_available_bytes");
    assert!(
        total > 0.0 && available > 0.0 && available <= total,
        "{available} of {total}"
    );
    let cpu = value("system_cpu_utilization_ratio");
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    assert!(value("system_load_average{period=\"1m\"}") >= 0.0);
    for volume in ["logs", "audit"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("system_filesystem_size_bytes{")
                    && l.contains(&format!("volume=\"{volume}\""))
            })
            .unwrap_or_else(|| panic!("no {volume} volume in:\n{text}"));
        let size: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(size > 0.0, "{line}");
        assert!(line.contains("mountpoint=\"/"), "{line}");
    }
    assert!(
        any_sample(&text, "system_disk_written_bytes_total").is_some(),
        "{text}"
    );
    assert!(
        any_sample(&text, "system_network_receive_bytes_total").is_some(),
        "{text}"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP process_open_fds "), "{text}");

    // CPU time is counted: a second of work shows in the next samples.
    let before = value("process_cpu_seconds_total");
    let busy = Instant::now();
    let mut x = 0u64;
    while busy.elapsed() < Duration::from_millis(1500) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    eventually("process_cpu_seconds_total to grow", || {
        let now = sample(&observer.render_metrics(), "process_cpu_seconds_total")?;
        (now >= before + 1.0).then_some(())
    });

    // The health JSON's memory is the sample's.
    let live: serde_json::Value = serde_json::from_str(&observer.liveness().to_json()).unwrap();
    assert!(
        live["memory_rss_bytes"].as_f64().unwrap() > 1_000_000.0,
        "{live}"
    );
}

#[test]
fn system_metrics_turned_off_leave_no_series() {
    let (observer, _guard) = Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .build()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let text = observer.render_metrics();
    for name in [
        "process_resident_memory_bytes ",
        "system_memory_total_bytes ",
    ] {
        assert!(
            !text.contains(name),
            "{name} with [metrics] system = false:\n{text}"
        );
    }
}

#[test]
fn the_interval_is_checked_on_load() {
    let error = Loader::new()
        .toml_str("[metrics]\nsystem_interval = \"500ms\"\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_err();
    let problem = error
        .problems()
        .iter()
        .find(|p| p.path() == "metrics.system_interval")
        .unwrap_or_else(|| panic!("{error}"));
    assert!(problem.to_string().contains("1s"), "{problem}");
    let config = Loader::new()
        .toml_str("[metrics]\nsystem = false\nsystem_interval = \"30s\"\n")
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap();
    assert!(!config.metrics.system);
    assert_eq!(config.metrics.system_interval, Duration::from_secs(30));
}
