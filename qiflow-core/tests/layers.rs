//! The layers point one way (ARCHITECTURE.md): configuration is a leaf. A file under
//! `src/config/` may name the foundation (`crate::config`, `crate::secret`, `crate::files`) and
//! nothing else of the crate: each capability checks its own section (`src/<capability>/check.rs`)
//! and `src/check.rs` runs them all. The request scope (`src/scope.rs`) and trace context
//! (`src/propagation.rs`) are foundation too: every capability reads them, they name none.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

/// What `src/config/` may use of the crate.
const FOUNDATION: &[&str] = &["config", "secret", "files"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules named as `crate::<module>` in `text`, with their line numbers.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let module: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, module));
            rest = after;
        }
    }
    found
}

#[test]
fn configuration_is_a_leaf() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() >= 5, "{files:?}");
    let mut outside = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, module) in crate_paths(&text) {
            if !FOUNDATION.contains(&module.as_str()) {
                outside.push(format!("{}:{line}: crate::{module}", file.display()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "src/config/ reaches into a capability (move the check into the capability's check.rs, \
         run from src/check.rs):\n{}",
        outside.join("\n")
    );
}

/// What the request scope and trace context (foundation, read by every capability) may use.
const SCOPE_MAY_USE: &[&str] = &["config", "propagation", "scope"];

#[test]
fn the_request_scope_and_trace_context_are_foundation() {
    // Logging, capture and baselines read what a request carries from `src/scope.rs`; it must
    // not reach back into them (the circle capture/request/logging it replaced).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut outside = Vec::new();
    for name in ["scope.rs", "propagation.rs"] {
        let file = src.join(name);
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, module) in crate_paths(&text) {
            if !SCOPE_MAY_USE.contains(&module.as_str()) {
                outside.push(format!("{}:{line}: crate::{module}", file.display()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "the request scope reaches into a capability:\n{}",
        outside.join("\n")
    );
}

#[test]
fn the_scan_finds_a_capability_path() {
    // The scan itself: a use of a capability is found, a comment is not.
    let found =
        crate_paths("use crate::alert::channels::kind_name;\n// crate::audit in a comment\n");
    assert_eq!(found, [(1, "alert".to_owned())]);
}
