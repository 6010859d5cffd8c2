//! `RUST_LOG`, when set and not empty, overrides `[logging] level` (and `QIFLOW__LOGGING__LEVEL`)
//! at `init`; an invalid one fails `init` naming it. Each case runs `init` in a child process of
//! its own (this test binary again, through the ignored `child_init` test) with its own
//! environment, so no case races another over the process environment or the global subscriber.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `child_init` with `rust_log` (`None`: unset) and `extra` variables; returns its stdout
/// and the lines it logged.
fn child(rust_log: Option<&str>, extra: &[(&str, &str)]) -> (String, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "child_init",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QIFLOW_TEST_CHILD_DIR", dir.path())
        .env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("QIFLOW__") {
            command.env_remove(name);
        }
    }
    if let Some(value) = rust_log {
        command.env("RUST_LOG", value);
    }
    command.envs(extra.iter().copied());
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout, lines(dir.path()))
}

fn lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("app.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The messages of the child's own lines (target `rust_log`, or `log` records).
fn messages(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["target"] == "rust_log")
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

/// What the child printed when `init` returned (after the harness's `test child_init ... `).
fn started(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|l| l.split_once("child: ").map(|(_, result)| result))
        .unwrap_or_else(|| panic!("the child printed no result: {stdout:?}"))
}

#[test]
fn without_rust_log_the_configured_level_applies() {
    let (stdout, lines) = child(None, &[]);
    assert_eq!(started(&stdout), "started with warn");
    assert_eq!(
        messages(&lines),
        ["tracing warn", "log warn", "log trace after the change"]
    );
    // Set but empty: as if unset.
    let (stdout, lines) = child(Some(""), &[]);
    assert_eq!(started(&stdout), "started with warn");
    assert_eq!(
        messages(&lines),
        ["tracing warn", "log warn", "log trace after the change"]
    );
}

#[test]
fn rust_log_overrides_the_configured_level_and_its_environment_override() {
    let (stdout, lines) = child(Some("debug"), &[]);
    assert_eq!(started(&stdout), "started with debug");
    assert_eq!(
        messages(&lines),
        [
            "tracing debug",
            "tracing info",
            "tracing warn",
            "log debug",
            "log warn",
            "log trace after the change"
        ]
    );
    let (stdout, lines) = child(
        Some("rust_log=info"),
        &[("QIFLOW__LOGGING__LEVEL", "error")],
    );
    assert_eq!(started(&stdout), "started with rust_log=info");
    assert_eq!(
        messages(&lines),
        [
            "tracing info",
            "tracing warn",
            "log warn",
            "log trace after the change"
        ]
    );
}

#[test]
fn an_invalid_rust_log_fails_init_naming_it() {
    let (stdout, lines) = child(Some("info,rust_log=loud"), &[]);
    let result = started(&stdout);
    assert!(
        result.starts_with(
            "init failed: RUST_LOG: invalid log filter \"info,rust_log=loud\": the directive \"rust_log=loud\" is not valid"
        ),
        "{result}"
    );
    assert!(result.ends_with("fix it or unset it"), "{result}");
    assert!(lines.is_empty());
}

/// The child side of the tests above: run only by them, through `--ignored --exact`, with
/// `QIFLOW_TEST_CHILD_DIR` set. `init` with `[logging] level = "warn"` and the environment the
/// parent gave; logs at every level through `tracing` and the `log` crate, then turns the level
/// to `trace` at runtime (the `log` crate's maximum follows).
#[test]
#[ignore = "entry point of a child process; run by the other tests of this file"]
fn child_init() {
    let dir = std::env::var("QIFLOW_TEST_CHILD_DIR").unwrap_or_else(|_| {
        panic!(
            "child_init is the child process of the other tests in tests/rust_log.rs, which run it \
             with QIFLOW_TEST_CHILD_DIR set; run those instead"
        )
    });
    let config = qiflow_core::config::Loader::new()
        .dotenv(None)
        .toml_str(format!(
            "[logging]\nlevel = \"warn\"\nstdout = false\ndir = {dir:?}\n[audit]\nenabled = false\n\
             [alerts]\nstate_file = \"\"\n[baseline]\nstate_file = \"\"\n[admin]\ntoken_file = \"\"\n[service]\nstate_dir = \"\"\n"
        ))
        .load()
        .unwrap();
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(started) => started,
        Err(e) => {
            println!("child: init failed: {e}");
            return;
        }
    };
    println!("child: started with {}", observer.log_level());
    tracing::trace!("tracing trace");
    tracing::debug!("tracing debug");
    tracing::info!("tracing info");
    tracing::warn!("tracing warn");
    log::trace!("log trace");
    log::debug!("log debug");
    log::warn!("log warn");
    observer.set_log_level("trace").unwrap();
    log::trace!("log trace after the change");
    assert!(observer.flush(Duration::from_secs(10)));
    drop(guard);
}
