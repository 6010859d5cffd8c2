//! Checking a configuration: every capability checks its own section, and `qiflow check` is
//! "load, then build everything dry".
//!
//! The configuration module ([`crate::config`]) is a leaf: it parses, decrypts and checks what
//! configuration alone can (syntax, types, unknown keys, secrets). The checks of each section
//! live with the capability that owns it (`logging::check`, `alert::check`, …), and this module,
//! at the level of the hub, runs them all: [`Loader::load`] and [`Config::load`] do, so a
//! configuration that loads is one `init` can use.

use std::path::PathBuf;

use crate::config::{
    Config, ConfigError, Findings, Loader, Problem, ProblemKind, check_private_files,
};

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
    crate::jobs::check::check(&config.jobs, &config.alerts.channels, f);
    crate::authz::check::check(&config.authz, f);
    crate::dependency::check::check(&config.dependencies, f);
    crate::audit::check::check(&config.audit, f);
    crate::audit::check::signing_key(&config.audit, &config.service.environment, f);
    crate::alert::check::check(&config.alerts, f);
    crate::health::check(&config.health, f);
    crate::propagation::check(&config.tracing, f);
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
    /// One line per problem, then a summary line: `error: qiflow.toml: logging.max_size: …` for
    /// what stops the configuration, `warning: …` for what is unsafe (`--strict` fails on it),
    /// `advice: …` for the rest.
    pub lines: Vec<String>,
    /// `true` when the configuration is valid and, with `strict`, has nothing unsafe either
    /// (advice never fails it).
    pub passed: bool,
}

/// Loads the configuration with `loader` (decrypting and checking it) and builds its alert
/// channels dry, as `qiflow check` does; `shown` names it in every line (the file name).
///
/// With `strict`, the files the configuration keeps private ([`Config::private_files`]: log
/// files, state files, audit segments, the token file) are checked too, relative to the working
/// directory, and the check fails on every warning that is unsafe for this configuration
/// ([`ProblemKind::fails_strict`](crate::config::ProblemKind::fails_strict)): plain secrets,
/// plain credential-like headers, files wider than their mode, and unsafe settings (mail in
/// plain text to a remote relay, a key file others can read, no audit signing key in
/// production, …). Advice (an older key name, a token shorter than advised, no signing key
/// outside production) is printed as `advice:` and never fails it, so a minimal configuration
/// passes `--strict`.
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
///
/// // Nothing configured: auditing is on without a signing key, which is advice only.
/// let minimal = Loader::new().toml_str("").env::<[(&str, &str); 0], _, _>([]);
/// let report = qiflow_core::check::run(minimal, "qiflow.toml", true);
/// assert!(report.passed, "{report:?}");
/// assert!(report.lines[0].starts_with("advice: qiflow.toml: audit.signing_key: is not set"));
/// ```
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
                lines.push(format!("{}: {shown}: {w}", label(w)));
            }
            let unsafe_keys: Vec<&str> = warnings
                .iter()
                .filter(|w| w.kind().fails_strict())
                .map(Problem::path)
                .collect();
            let passed = !strict || unsafe_keys.is_empty();
            lines.push(summary(
                shown,
                strict,
                &unsafe_keys,
                warnings.len() - unsafe_keys.len(),
            ));
            CheckReport { lines, passed }
        }
        Err(e) => {
            for p in e.problems() {
                lines.push(format!("{}: {shown}: {p}", label(p)));
            }
            CheckReport {
                lines,
                passed: false,
            }
        }
    }
}

/// `error`, `warning` (unsafe: `--strict` fails on it) or `advice`.
fn label(p: &Problem) -> &'static str {
    match p.kind() {
        ProblemKind::Advice => "advice",
        kind if kind.is_warning() => "warning",
        _ => "error",
    }
}

/// The last line of a report on a configuration that loads.
fn summary(shown: &str, strict: bool, unsafe_keys: &[&str], advice: usize) -> String {
    let advice = match advice {
        0 => String::new(),
        n => format!("; {n} advice line(s), which never fail --strict"),
    };
    let keys = unsafe_keys.join(", ");
    match unsafe_keys.len() {
        0 => format!("ok: {shown} is valid (nothing unsafe{advice})"),
        n if strict => format!(
            "failed: {shown}: {n} unsafe setting(s) ({keys}), failing because of --strict; \
             fix each as its warning line says{advice}"
        ),
        n => format!(
            "ok: {shown} is valid ({n} unsafe setting(s), which fail --strict: {keys}{advice})"
        ),
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

    /// The labels and the verdict of a check, with `strict`.
    fn strict(toml: &str) -> CheckReport {
        run(loader(toml), "qiflow.toml", true)
    }

    fn line_for<'a>(report: &'a CheckReport, key: &str) -> &'a str {
        let needle = format!("qiflow.toml: {key}: ");
        report
            .lines
            .iter()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no line for {key}: {report:#?}"))
    }

    #[test]
    fn strict_passes_a_minimal_configuration_and_prints_the_signing_key_as_advice() {
        for toml in ["", "[service]\nname = \"ledger\"\n"] {
            let report = strict(toml);
            assert!(report.passed, "{report:#?}");
            let line = line_for(&report, "audit.signing_key");
            assert!(line.starts_with("advice: "), "{line}");
            // What it costs, and how to add one.
            assert!(line.contains("recompute every hash"), "{line}");
            assert!(line.contains("qiflow keygen"), "{line}");
            assert!(
                line.contains("qiflow encrypt --name audit.signing_key"),
                "{line}"
            );
            assert_eq!(
                report.lines.last().map(String::as_str),
                Some(
                    "ok: qiflow.toml is valid (nothing unsafe; 1 advice line(s), which never fail --strict)"
                ),
            );
        }
    }

    #[test]
    fn strict_fails_without_a_signing_key_in_production_only() {
        for env in ["production", "Prod"] {
            let report = strict(&format!("[service]\nenvironment = \"{env}\"\n"));
            assert!(!report.passed, "{report:#?}");
            let line = line_for(&report, "audit.signing_key");
            assert!(line.starts_with("warning: "), "{line}");
            assert!(line.contains("environment is"), "{line}");
            let last = report.lines.last().unwrap();
            assert!(
                last.starts_with("failed: qiflow.toml: 1 unsafe setting(s) (audit.signing_key)"),
                "{last}"
            );
        }
        // With a key, or with auditing off, there is nothing to say.
        for toml in [
            "[service]\nenvironment = \"production\"\n[audit]\nsigning_key = \"0123456789abcdef0123\"\n",
            "[service]\nenvironment = \"production\"\n[audit]\nenabled = false\n",
        ] {
            let report = strict(toml);
            assert!(
                !report
                    .lines
                    .concat()
                    .contains("audit.signing_key: is not set"),
                "{report:#?}"
            );
        }
        // Staging is not production: advice.
        let report = strict("[service]\nenvironment = \"staging\"\n");
        assert!(report.passed, "{report:#?}");
    }

    #[test]
    fn strict_fails_on_unsafe_settings_and_not_on_advice() {
        let quiet = "[audit]\nenabled = false\n";
        let email = |host: &str| {
            format!(
                "{quiet}[[alerts.channels]]\nkind = \"email\"\nname = \"mail\"\nsmtp_host = \"{host}\"\n\
                 tls = \"none\"\nfrom = \"qiflow@example.com\"\nto = [\"ops@example.com\"]\n"
            )
        };
        // Unsafe: mail in plain text to a remote relay, log files others can write, the witness
        // inside the trail it witnesses.
        let mut cases = vec![
            (
                format!("{quiet}[logging]\nfile_mode = \"0666\"\n"),
                "logging.file_mode",
            ),
            (
                "[audit]\nsigning_key = \"0123456789abcdef0123\"\ndir = \"data/audit\"\nwitness = \"data/audit/w.json\"\n"
                    .to_owned(),
                "audit.witness",
            ),
        ];
        // Without the "email" feature an email channel is an error of its own (MissingFeature).
        if cfg!(feature = "email") {
            cases.push((email("smtp.example.com"), "alerts.channels.mail.tls"));
        }
        for (toml, key) in cases {
            let lenient = run(loader(&toml), "qiflow.toml", false);
            assert!(lenient.passed, "{key}: {lenient:#?}");
            assert!(
                lenient
                    .lines
                    .last()
                    .unwrap()
                    .contains("which fail --strict: "),
                "{lenient:#?}"
            );
            let report = strict(&toml);
            assert!(!report.passed, "{key}: {report:#?}");
            assert!(
                line_for(&report, key).starts_with("warning: "),
                "{report:#?}"
            );
        }
        // A database off this host without checked TLS.
        let pg = |url: &str| {
            format!(
                "[audit]\nsink = \"postgres\"\nsigning_key = \"0123456789abcdef0123\"\npostgres_url = \"{url}\"\n"
            )
        };
        for url in [
            "postgres://app@db.example.com/app",
            "postgres://app@db.example.com/app?sslmode=disable",
        ] {
            let report = strict(&pg(url));
            assert!(!report.passed, "{report:#?}");
            let line = report
                .lines
                .iter()
                .find(|l| l.contains("audit.postgres_url: reaches"))
                .unwrap_or_else(|| panic!("{report:#?}"));
            assert!(line.starts_with("warning: "), "{line}");
            assert!(
                line.contains("reaches db.example.com with sslmode="),
                "{line}"
            );
            assert!(line.contains("sslmode=verify-full"), "{line}");
        }
        for url in [
            "postgres://app@127.0.0.1/app",
            "postgres://app@db.example.com/app?sslmode=require",
            "postgres://app@db.example.com/app?sslmode=verify-full",
        ] {
            let report = strict(&pg(url));
            assert!(
                !report.lines.concat().contains("reaches"),
                "{url}: {report:#?}"
            );
        }
        // Advice: a local relay in plain text is fine; an older key name is advice.
        let mut cases = vec![(
            format!("{quiet}[metrics]\nlisten = \"127.0.0.1:9464\"\n"),
            Some("metrics.listen"),
        )];
        if cfg!(feature = "email") {
            cases.push((email("127.0.0.1"), None));
        }
        for (toml, key) in cases {
            let report = strict(&toml);
            assert!(report.passed, "{key:?}: {report:#?}");
            if let Some(key) = key {
                assert!(
                    line_for(&report, key).starts_with("advice: "),
                    "{report:#?}"
                );
            }
        }
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
