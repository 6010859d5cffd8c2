//! Checking a configuration: every capability checks its own section, and `qiflow check` is
//! "load, then build everything dry".
//!
//! The configuration module ([`crate::config`]) is a leaf: it parses, decrypts and checks what
//! configuration alone can (syntax, types, unknown keys, secrets). The checks of each section
//! live with the capability that owns it (`logging::check`, `alert::check`, …), and this module,
//! at the level of the hub, runs them all: [`Loader::load`] and [`Config::load`] do, so a
//! configuration that loads is one `init` can use.

use std::path::PathBuf;

use crate::config::{Config, ConfigError, Findings, Loader, check_private_files};

impl Loader {
    /// Loads, decrypts and checks: the configuration's own checks, then every capability's
    /// (`[logging]`, `[errors]`, `[metrics]`, `[baseline]`, `[audit]`, `[alerts]`, `[health]`,
    /// `[admin]`). Every problem is collected, not only the first. Warnings are kept in
    /// [`Config::warnings`].
    pub fn load(self) -> Result<Config, ConfigError> {
        let mut parsed = self.parse()?;
        sections(&parsed.config, &mut parsed.findings);
        parsed.finish()
    }
}

impl Config {
    /// Loads the configuration the standard way: see [`Loader`].
    pub fn load() -> Result<Self, ConfigError> {
        Loader::new().load()
    }

    /// Loads the configuration from `path` plus the environment.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        Loader::new().file(path).load()
    }
}

/// Every capability's checks of its own section.
fn sections(config: &Config, f: &mut Findings) {
    crate::logging::check::check(&config.logging, f);
    crate::capture::check::check(&config.errors, f);
    crate::metrics::check::check(&config.metrics, f);
    crate::baseline::check::check(&config.baseline, f);
    crate::audit::check::check(&config.audit, f);
    crate::alert::check::check(&config.alerts, f);
    crate::health::check(&config.health, f);
    crate::admin::check::check(&config.admin, &config.health, f);
}

/// Builds what can be built without starting anything (the alert channels, with their
/// constructors' own rules), so a rule that only a constructor knows still names its key.
fn build_dry(config: &Config) -> Vec<String> {
    (0..config.alerts.channels.len())
        .filter_map(|i| crate::alert::channels::from_config(config, i).err())
        .collect()
}

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

/// Loads the configuration with `loader` (decrypting and checking it) and builds its alert
/// channels dry, as `qiflow check` does; `shown` names it in every line (the file name).
///
/// With `strict`, the files the configuration keeps private ([`Config::private_files`]: log
/// files, state files, audit segments) are checked too, relative to the working directory, and
/// any warning fails the check: plain secrets, plain credential-like headers, files wider than
/// their mode, and every other warning.
///
/// ```
/// use qiflow_core::config::Loader;
///
/// let loader = Loader::new()
///     .toml_str("[health]\ntoken = \"plain-t0ken\"\n[audit]\nenabled = false\n")
///     .env::<[(&str, &str); 0], _, _>([]);
/// let report = qiflow_core::check::run(loader, "qiflow.toml", false);
/// assert!(report.passed);
/// assert!(report.lines[0].starts_with("warning: qiflow.toml: health.token: holds a plain value"));
/// assert!(!report.lines.concat().contains("plain-t0ken"));
/// ```
///
pub fn run(loader: Loader, shown: &str, strict: bool) -> CheckReport {
    let mut lines = Vec::new();
    match loader.load() {
        Ok(config) => {
            let broken = build_dry(&config);
            if !broken.is_empty() {
                for why in &broken {
                    lines.push(format!("error: {shown}: {why}"));
                }
                return CheckReport {
                    lines,
                    passed: false,
                };
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn loader(toml: &str) -> Loader {
        Loader::new()
            .toml_str(toml)
            .env::<[(&str, &str); 0], _, _>([])
    }

    #[cfg(feature = "email")]
    #[test]
    fn a_rule_only_a_constructor_knows_still_fails_the_check_with_its_key() {
        // The section check sees an address with an '@'; the email constructor cannot parse it.
        let toml = "[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"email\"\nname = \"mail\"\nsmtp_host = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"a@b@c\"\nto = [\"ops@example.com\"]\n";
        assert!(loader(toml).load().is_ok());
        let report = run(loader(toml), "qiflow.toml", false);
        assert!(!report.passed, "{report:?}");
        assert!(
            report.lines[0].starts_with("error: qiflow.toml: alerts.channels.mail.from:"),
            "{report:?}"
        );
    }

    #[test]
    fn every_capability_checks_its_section_on_load() {
        let e = loader(
            "[logging]\nmax_size = \"1KiB\"\n[errors]\nsample_rate = 2.0\n[metrics]\nmax_routes = 0\n\
             [baseline]\nmin_samples = 0\n[audit]\nbatch_size = 0\n[alerts]\nrate_limit = 0\n\
             [health]\npath = \"health\"\n[[admin.tokens]]\nname = \"x\"\ntoken = \"short\"\n",
        )
        .load()
        .unwrap_err();
        let paths: Vec<&str> = e.problems().iter().map(|p| p.path()).collect();
        for path in [
            "logging.max_size",
            "errors.sample_rate",
            "metrics.max_routes",
            "baseline.min_samples",
            "audit.batch_size",
            "alerts.rate_limit",
            "health.path",
            "admin.tokens.x.token",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
    }
}
