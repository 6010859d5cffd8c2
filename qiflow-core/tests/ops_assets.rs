//! The metric catalogue against what qiflow exports, and the shipped operations assets
//! (`docs/prometheus/qiflow-rules.yml`, `docs/grafana/qiflow-dashboard.json`) against the
//! catalogue: a renamed metric or label breaks these tests, not a user's dashboard.
//!
//! `.ci/tier2.sh` checks the same assets with the real tools (`promtool check rules`,
//! `promtool test rules`, and every dashboard query against a live Prometheus).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use qiflow_core::Observer;
use qiflow_core::metrics::{CATALOGUE, MetricKind};
use qiflow_core::request::{RequestInfo, RequestOutcome};

/// String literals in the source that look like metric names but are not metrics.
const NOT_METRICS: &[&str] = &[
    // the PostgreSQL audit sink's tables
    "qiflow_audit",
    "qiflow_audit_witness",
];

/// Labels Prometheus or qiflow's global labels add to every series, and histograms' `le`.
const COMMON_LABELS: &[&str] = &["job", "instance", "service", "environment", "le"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qiflow-core sits in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every series name a metric of the catalogue appears under.
fn series_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for metric in CATALOGUE {
        names.insert(metric.name.to_owned());
        if metric.kind == MetricKind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{}{suffix}", metric.name));
            }
        }
    }
    names
}

/// Tokens of `text` made of `[A-Za-z0-9_:]`, with their byte offsets.
fn tokens(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = rest.peek() {
            if is_part(c) {
                break;
            }
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = rest.peek() {
            if !is_part(c) {
                break;
            }
            end = i + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

/// The metric names (no recording rules: those have a colon) an asset uses, with their lines.
fn metric_names_in(text: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for (offset, token) in tokens(text) {
        if (token.starts_with("qiflow_") || token.starts_with("http_server_"))
            && !token.contains(':')
        {
            let line = text[..offset].matches('\n').count() + 1;
            found.entry(token.to_owned()).or_insert(line);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_metric_name_in_the_source_is_in_the_catalogue() {
    let listed = series_names();
    let root = workspace_root();
    let mut files = Vec::new();
    for krate in ["qiflow-core", "qiflow-tower", "qiflow-axum", "qiflow-actix"] {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    let mut unlisted = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let mut text = read(file);
        // The catalogue spells every name; a name spelled nowhere else is no longer recorded.
        if let Some(start) = text.find("pub const CATALOGUE") {
            let end = start + text[start..].find("\n];").expect("the catalogue's end");
            text.replace_range(start..end, "");
        }
        for (offset, token) in tokens(&text) {
            let quoted =
                text[..offset].ends_with('"') && text[offset + token.len()..].starts_with('"');
            // `qiflow_core::…` is a Rust path, not a metric (recording rules use single colons).
            if !quoted
                || token.contains("::")
                || ![
                    "qiflow_",
                    "http_server_",
                    "process_",
                    "system_",
                    "db_client_",
                    "http_client_",
                    "redis_",
                ]
                .iter()
                .any(|prefix| token.starts_with(prefix))
            {
                continue;
            }
            seen.insert(token.to_owned());
            if !listed.contains(token) && !NOT_METRICS.contains(&token) {
                let line = text[..offset].matches('\n').count() + 1;
                unlisted.push(format!("{}:{line}: \"{token}\"", file.display()));
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "metric names missing from qiflow_core::metrics::CATALOGUE (add them there with their \
         HELP text, or to NOT_METRICS in this test if they are not metrics):\n{}",
        unlisted.join("\n")
    );
    let stale: Vec<&str> = CATALOGUE
        .iter()
        .map(|m| m.name)
        .filter(|name| !seen.contains(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "in CATALOGUE but recorded nowhere in the source (remove them, or record them): {stale:?}"
    );
}

#[test]
fn catalogue_names_are_unique_and_helped() {
    let mut names = BTreeSet::new();
    for metric in CATALOGUE {
        assert!(names.insert(metric.name), "{} is listed twice", metric.name);
        assert!(!metric.help.is_empty(), "{} has no HELP text", metric.name);
        if metric.kind == MetricKind::Counter {
            assert!(metric.name.ends_with("_total"), "counter {}", metric.name);
        }
    }
}

#[test]
fn exported_families_carry_the_catalogue_help() {
    let mut config = qiflow_core::test::quiet_config();
    config.metrics.global_labels = true;
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .expect("qiflow starts");
    let mut info = RequestInfo::new("GET", "/users/42");
    info.route = Some("/users/{id}".into());
    observer
        .begin_request(info)
        .finish(RequestOutcome::new(500));
    drop(observer.begin_request(RequestInfo::new("GET", "/gone")));
    let text = observer.render_metrics();

    let mut helps = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some((name, help)) = rest.split_once(' ')
        {
            helps.insert(name.to_owned(), help.to_owned());
        }
    }
    for family in [
        "http_server_requests_total",
        "http_server_request_duration_seconds",
        "http_server_active_requests",
        "qiflow_client_disconnects_total",
        "qiflow_build_info",
        "qiflow_errors_captured_total",
    ] {
        assert!(helps.contains_key(family), "{family} not exported:\n{text}");
    }
    for (family, help) in &helps {
        if !["qiflow_", "http_server_", "process_", "system_"]
            .iter()
            .any(|prefix| family.starts_with(prefix))
        {
            continue;
        }
        let metric = CATALOGUE
            .iter()
            .find(|m| m.name == family)
            .unwrap_or_else(|| panic!("{family} is exported but not in the catalogue"));
        assert_eq!(help, metric.help, "{family}'s HELP line");
        // Every label on its series is one the catalogue names.
        for line in text.lines().filter(|l| l.starts_with(family.as_str())) {
            for label in label_names(line) {
                assert!(
                    metric.labels.contains(&label) || COMMON_LABELS.contains(&label),
                    "{family} has label {label:?}, which the catalogue does not list: {line}"
                );
            }
        }
    }
}

/// The label names of one exposition line (`name{a="x",b="y\"z"} 1`).
fn label_names(line: &str) -> Vec<&str> {
    let Some(start) = line.find('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut rest = &line[start + 1..];
    while let Some((name, value)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(','));
        // The value ends at the first quote not escaped by a backslash.
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .map_or(value.len(), |(i, _)| i);
        rest = &value[(end + 1).min(value.len())..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

#[test]
fn prometheus_rules_use_only_catalogue_metrics_and_labels() {
    let path = workspace_root().join("docs/prometheus/qiflow-rules.yml");
    let text = read(&path);
    let known = series_names();
    for (name, line) in metric_names_in(&text) {
        assert!(
            known.contains(&name),
            "{}:{line}: {name} is not a metric qiflow exports",
            path.display()
        );
    }

    // Every recording rule an expression uses is recorded in the file.
    let recorded: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::trim)
        .collect();
    assert!(recorded.len() >= 10, "{recorded:?}");
    for (offset, token) in tokens(&text) {
        if token.starts_with("qiflow:") && !recorded.contains(token) {
            let line = text[..offset].matches('\n').count() + 1;
            panic!(
                "{}:{line}: {token} is used but never recorded",
                path.display()
            );
        }
    }

    // `by (...)` clauses name labels the series have.
    let labels: BTreeSet<&str> = CATALOGUE
        .iter()
        .flat_map(|m| m.labels.iter().copied())
        .chain(COMMON_LABELS.iter().copied())
        .collect();
    for (i, _) in text.match_indices("by (") {
        let clause = &text[i + 4..];
        let clause = &clause[..clause.find(')').expect("a closed by clause")];
        for label in clause.split(',').map(str::trim) {
            assert!(
                labels.contains(label),
                "{}: `by ({clause})` groups by {label:?}, which no qiflow series has",
                path.display()
            );
        }
    }

    let alerts = text
        .lines()
        .filter(|l| l.trim().starts_with("- alert: "))
        .count();
    assert!(alerts >= 8, "{alerts} alerts in {}", path.display());
}

#[test]
fn grafana_dashboard_uses_only_catalogue_metrics() {
    let path = workspace_root().join("docs/grafana/qiflow-dashboard.json");
    let text = read(&path);
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let known = series_names();

    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("a panels array");
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!("panel {id} has a target without expr: {target}");
            });
            exprs.push((id, expr.to_owned()));
        }
    }
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    for (id, expr) in &exprs {
        for (name, _) in metric_names_in(expr) {
            assert!(
                known.contains(&name),
                "{}: panel {id} queries {name}, which qiflow does not export: {expr}",
                path.display()
            );
        }
    }
    // The dashboard covers the request metrics and every pipeline's drops.
    for needed in [
        "http_server_requests_total",
        "http_server_request_duration_seconds_bucket",
        "qiflow_dropped_total",
        "qiflow_errors_captured_total",
        "qiflow_alerts_sent_total",
        "qiflow_audit_records_total",
    ] {
        assert!(
            exprs.iter().any(|(_, e)| e.contains(needed)),
            "no panel shows {needed}"
        );
    }
}

#[test]
fn every_alert_rule_has_a_promtool_test_that_fires_it() {
    let dir = workspace_root().join("docs/prometheus");
    let rules = read(&dir.join("qiflow-rules.yml"));
    let tests = read(&dir.join("qiflow-rules.test.yml"));
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::trim)
        .collect();
    // An alert_rule_test entry: `alertname: X`, then `exp_alerts:` with a list or `[]`.
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in alerts {
        let fired = lines
            .windows(2)
            .any(|w| w[0] == format!("alertname: {alert}") && w[1] == "exp_alerts:");
        assert!(
            fired,
            "{} has no test in qiflow-rules.test.yml where {alert} fires (an `alertname: {alert}` \
             followed by a non-empty `exp_alerts:`); add one and run `promtool test rules`",
            dir.join("qiflow-rules.yml").display()
        );
    }
}
