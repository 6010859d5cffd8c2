//! `qiflow check`: what it prints and whether it passes, for the CLI and for hosts that offer
//! the same check in their own command line.

use super::{Loader, check_private_files};

/// What a configuration check found: the lines `qiflow check` prints and whether it passed.
///
/// No line ever holds a secret value: problems name key paths, and errors about a value never
/// repeat it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// One line per problem (`error: qiflow.toml: logging.max_size: …`, `warning: …`), then a
    /// summary line.
    pub lines: Vec<String>,
    /// `true` when the configuration is valid and, with `strict`, has no warning either.
    pub passed: bool,
}

/// Loads the configuration with `loader` (decrypting and validating it), as `qiflow check` does;
/// `shown` names it in every line (the file name).
///
/// With `strict`, the files the configuration keeps private ([`Config::private_files`]: log
/// files, state files, audit segments) are checked too, relative to the working directory, and
/// any warning fails the check: plain secrets, plain credential-like headers, files wider than
/// their mode, and every other warning.
///
/// ```
/// use qiflow_core::config::{Loader, check};
///
/// let loader = Loader::new()
///     .toml_str("[health]\ntoken = \"plain-t0ken\"\n[audit]\nenabled = false\n")
///     .env::<[(&str, &str); 0], _, _>([]);
/// let report = check(loader, "qiflow.toml", false);
/// assert!(report.passed);
/// assert!(report.lines[0].starts_with("warning: qiflow.toml: health.token: holds a plain value"));
/// assert!(!report.lines.concat().contains("plain-t0ken"));
/// ```
///
/// [`Config::private_files`]: super::Config::private_files
pub fn check(loader: Loader, shown: &str, strict: bool) -> CheckReport {
    let mut lines = Vec::new();
    match loader.load() {
        Ok(config) => {
            let mut warnings = config.warnings().to_vec();
            if strict {
                warnings.extend(check_private_files(&config.private_files()));
            }
            for w in &warnings {
                lines.push(format!("warning: {shown}: {w}"));
            }
            let passed = !strict || warnings.is_empty();
            lines.push(if passed {
                format!("ok: {shown} is valid ({} warning(s))", warnings.len())
            } else {
                format!(
                    "{shown}: {} warning(s), failing because of --strict",
                    warnings.len()
                )
            });
            CheckReport { lines, passed }
        }
        Err(e) => {
            for p in e.problems() {
                let level = if p.kind().is_warning() {
                    "warning"
                } else {
                    "error"
                };
                lines.push(format!("{level}: {shown}: {p}"));
            }
            CheckReport {
                lines,
                passed: false,
            }
        }
    }
}
