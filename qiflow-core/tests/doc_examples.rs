//! The doc examples (doctests) of every crate of the workspace leave nothing in the source tree.
//!
//! `cargo test --doc` runs each example with its crate's directory as the working directory, and
//! qiflow's defaults write there (`logs/app.log`, `data/admin-token`, `data/alerts.json`,
//! `data/baselines.json`, `data/audit/`). An example that builds an observer, opens a trail or a
//! log file must therefore point them elsewhere: a `tempfile::tempdir()`, or
//! `qiflow_core::test::quiet_config()` (no files). Examples that are only compiled (`no_run`,
//! `ignore`) are not run and may show the defaults.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

/// What an example calls when it makes files with the configured (default) paths (a builder
/// only once it is built).
const MAKES_FILES: &[&str] = &[
    "qiflow_core::init(",
    "FileAuditSink::builder(",
    "RotatingFile::open(",
];

/// Whether `code` makes files with the configured paths.
fn makes_files(code: &str) -> bool {
    MAKES_FILES.iter().any(|m| code.contains(m))
        || (code.contains("Observer::builder(") && code.contains(".build()"))
}

/// What keeps an example's files out of the working directory.
const KEEPS_OUT: &[&str] = &["tempdir()", "quiet_config()"];

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

/// The doc examples of `text` that rustdoc runs: (first line, code).
fn runnable_examples(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut open: Option<(usize, bool, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(doc) = trimmed
            .strip_prefix("///")
            .or_else(|| trimmed.strip_prefix("//!"))
        else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if let Some(info) = doc.trim_start().strip_prefix("```") {
            match open.take() {
                Some((start, runs, code)) => {
                    if runs {
                        found.push((start, code));
                    }
                }
                None => {
                    let attrs: Vec<&str> = info
                        .split([',', ' '])
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .collect();
                    let rust = attrs.iter().all(|a| {
                        matches!(
                            *a,
                            "rust" | "should_panic" | "no_run" | "ignore" | "compile_fail"
                        ) || a.starts_with("edition")
                    });
                    let runs = rust
                        && !attrs
                            .iter()
                            .any(|a| matches!(*a, "no_run" | "ignore" | "compile_fail"));
                    open = Some((n + 1, runs, String::new()));
                }
            }
        } else if let Some((_, _, code)) = open.as_mut() {
            code.push_str(doc);
            code.push('\n');
        }
    }
    found
}

#[test]
fn doc_examples_that_make_files_keep_them_out_of_the_source_tree() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["qiflow-core", "qiflow-tower", "qiflow-axum", "qiflow-actix"] {
        rust_files(&workspace.join(krate).join("src"), &mut files);
    }
    let mut examples = 0;
    let mut leaking = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in runnable_examples(&text) {
            examples += 1;
            if makes_files(&code) && !KEEPS_OUT.iter().any(|k| code.contains(k)) {
                leaking.push(format!("{}:{line}", file.display()));
            }
        }
    }
    assert!(examples > 40, "found only {examples} runnable doc examples");
    assert!(
        leaking.is_empty(),
        "these doc examples write qiflow's files into the crate's directory when `cargo test --doc` \
         runs them: put the paths under a `tempfile::tempdir()` or start from \
         `qiflow_core::test::quiet_config()` (or mark a compile-only example `no_run`):\n{}",
        leaking.join("\n")
    );
}

#[test]
fn the_scanner_finds_runnable_examples_and_skips_the_others() {
    let text = "/// ```\n/// let a = 1;\n/// ```\n/// ```no_run\n/// b();\n/// ```\n\
                //! ```text\n//! c\n//! ```\n//! ```rust,should_panic\n//! d();\n//! ```\n";
    let found = runnable_examples(text);
    assert_eq!(
        found,
        [(1, "let a = 1;\n".to_owned()), (10, "d();\n".to_owned())]
    );
}
