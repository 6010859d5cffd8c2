//! What the dependency tests share: the tier-2 server from the environment, its stop/start
//! script, and reading one series off `/metrics`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

/// The variable `name`, or a panic saying how to get it (`howto`).
pub fn env(name: &str, howto: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; {howto}"))
}

/// Runs the stop/start script named by the variable `var` with `what`.
pub fn ctl(var: &str, howto: &str, what: &str) {
    let status = std::process::Command::new("bash")
        .arg(env(var, howto))
        .arg(what)
        .status()
        .unwrap();
    assert!(status.success(), "{var} {what} failed");
}

/// The value of the series `name{labels}` on `/metrics` (labels as written there).
pub fn series(observer: &qiflow_core::Observer, name_and_labels: &str) -> Option<f64> {
    observer
        .render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// `qiflow_dependency_errors_total` of the dependency `pool` and the class `class`.
pub fn errors(observer: &qiflow_core::Observer, pool: &str, class: &str) -> Option<f64> {
    series(
        observer,
        &format!("qiflow_dependency_errors_total{{pool=\"{pool}\",class=\"{class}\"}}"),
    )
}

/// The active alerts named `name`, once the observer's pipelines are flushed.
pub fn active(
    observer: &qiflow_core::Observer,
    name: &str,
) -> Vec<qiflow_core::alert::ActiveAlert> {
    assert!(observer.flush(std::time::Duration::from_secs(5)));
    observer
        .alerts()
        .view()
        .active
        .into_iter()
        .filter(|a| a.alert.name == name)
        .collect()
}
