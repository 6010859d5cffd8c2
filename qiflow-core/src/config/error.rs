use std::fmt;

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The configuration file could not be read.
    File,
    /// The file is not valid TOML.
    Syntax,
    /// A key that qiflow does not know (a typo, or a key of a newer version).
    UnknownKey,
    /// A value of the wrong type or format.
    Type,
    /// A value outside its allowed range, or a missing required key.
    Value,
    /// An environment override that cannot be applied.
    EnvOverride,
    /// An encrypted value that cannot be decrypted, or no key to decrypt it with.
    Secret,
    /// (warning) A secret-bearing key holds a plain value. Fails `qiflow check --strict`.
    PlainSecret,
    /// (warning) Advice: something worth a look that is not unsafe for this configuration (an
    /// older key name, a token shorter than advised, no audit signing key outside production).
    /// Never fails `qiflow check --strict`.
    Advice,
    /// A value that needs a Cargo feature of `qiflow-core` this build was compiled without (an
    /// alert channel kind, an audit sink, a Sentry DSN); the message names the feature.
    MissingFeature,
    /// (warning) An existing file that qiflow keeps private (a log file, a state file, an audit
    /// segment, the token file) is readable or writable by more users than its mode allows
    /// (`qiflow check --strict`, which fails on it).
    FileMode,
    /// (warning) A setting that is unsafe for this configuration: it exposes a secret or a
    /// record, or weakens the evidence of the audit trail (mail in plain text to a remote
    /// relay, a key file others can read, log files others can write, the audit witness inside
    /// the trail, no audit signing key in production). Fails `qiflow check --strict`.
    Unsafe,
}

impl ProblemKind {
    /// Whether this kind is only a warning.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::PlainSecret | Self::Advice | Self::FileMode | Self::Unsafe
        )
    }

    /// Whether `qiflow check --strict` fails on this kind: every error, and the warnings that
    /// are unsafe (plain secrets, files wider than their mode, unsafe settings), but not
    /// [`ProblemKind::Advice`].
    ///
    /// ```
    /// use qiflow_core::config::ProblemKind;
    ///
    /// assert!(ProblemKind::PlainSecret.fails_strict());
    /// assert!(ProblemKind::Unsafe.fails_strict());
    /// assert!(!ProblemKind::Advice.fails_strict());
    /// assert!(ProblemKind::Value.fails_strict());
    /// ```
    pub fn fails_strict(self) -> bool {
        self != Self::Advice
    }
}

/// What the checks of a loaded configuration found, each with its key path: every capability's
/// `check` adds to it, so one run reports every problem at once.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Errors: the configuration cannot be used.
    pub(crate) problems: Vec<Problem>,
    /// Warnings: it can, but something deserves a look.
    pub(crate) warnings: Vec<Problem>,
}

impl Findings {
    /// An error: a value out of range or inconsistent ([`ProblemKind::Value`]).
    pub(crate) fn bad(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems
            .push(Problem::new(ProblemKind::Value, path, message));
    }

    /// An error: `what` (at `path`) needs qiflow-core's Cargo feature `feature`, which this build
    /// lacks ([`ProblemKind::MissingFeature`]).
    pub(crate) fn needs_feature(&mut self, path: impl Into<String>, what: &str, feature: &str) {
        self.problems.push(Problem::new(
            ProblemKind::MissingFeature,
            path,
            needs_feature(what, feature),
        ));
    }

    /// A warning that does not stop start-up, nor `qiflow check --strict`
    /// ([`ProblemKind::Advice`]).
    pub(crate) fn advise(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(Problem::new(ProblemKind::Advice, path, message));
    }

    /// A warning about a setting that is unsafe for this configuration: start-up goes on, but
    /// `qiflow check --strict` fails ([`ProblemKind::Unsafe`]). The message says how to fix it.
    pub(crate) fn risky(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(Problem::new(ProblemKind::Unsafe, path, message));
    }
}

/// What to say when `what` needs qiflow-core's Cargo feature `feature`, which this build lacks:
/// the feature, and how to turn it on.
pub(crate) fn needs_feature(what: &str, feature: &str) -> String {
    format!(
        "{what} needs qiflow-core's \"{feature}\" feature; add features = [\"{feature}\"] to the qiflow-core dependency"
    )
}

/// Checks a URL without ever echoing it (it may carry credentials): it parses, has one of
/// `schemes` and a host.
pub(crate) fn check_url(text: &str, schemes: &[&str]) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "has scheme {:?}; use {}",
            url.scheme(),
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

/// One problem in a configuration, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: ProblemKind,
    path: String,
    message: String,
}

impl Problem {
    pub(crate) fn new(
        kind: ProblemKind,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The key path (`logging.max_size`), the environment variable, or the file it concerns.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong and what to do, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A configuration that could not be loaded: one or more [`Problem`]s.
///
/// `Display` prints one problem per line, prefixed by the file when there is one.
#[derive(Debug, Clone)]
pub struct ConfigError {
    origin: Option<String>,
    problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(origin: Option<String>, problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        Self { origin, problems }
    }

    /// Every problem found, in file order where known.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The configuration file the problems were found in, if any.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match &self.origin {
                Some(origin) => write!(f, "{origin}: {p}")?,
                None => write!(f, "{p}")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
