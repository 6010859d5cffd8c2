//! ARCHITECTURE.md is the maintainers' map: every file and folder it names in backticks must
//! exist, so a rename or a deletion updates the map too.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The backticked spans of `text` that name a file or a folder: they end with `.rs`, `.sh`,
/// `.md`, `.toml` or `/`, and hold no space or wildcard.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            !span.contains([' ', '*', '<', '('])
                && [".rs", ".sh", ".md", ".toml", "/"]
                    .iter()
                    .any(|end| span.ends_with(end))
        })
        .map(str::to_owned)
        .collect()
}

/// Every file and folder under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == ".git")
        {
            continue;
        }
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn every_path_the_map_names_exists() {
    let root = root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let named = named_paths(&map);
    assert!(named.len() > 20, "{named:?}");
    let mut all = Vec::new();
    walk(&root, &mut all);
    let mut missing = Vec::new();
    for name in &named {
        let relative = name.trim_end_matches('/');
        // A path from the root, from qiflow-core/src, or the tail of a path anywhere.
        let found = root.join(relative).exists()
            || root.join("qiflow-core/src").join(relative).exists()
            || all.iter().any(|p| p.ends_with(relative));
        if !found {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist (update the map): {missing:?}"
    );
}

#[test]
fn the_scan_sees_paths_and_skips_code() {
    let found = named_paths(
        "see `logging/rotate/` and `request.rs`, not `Observer::admin` or `.ci/tier2*.sh`",
    );
    assert_eq!(found, ["logging/rotate/", "request.rs"]);
}
