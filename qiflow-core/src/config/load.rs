use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::{Config, ConfigError, Findings, Problem, ProblemKind, secret_keys, validate};
use crate::secret::{self, Keyring, MASTER_KEY_FILE_ENV};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "QIFLOW_CONFIG";
/// The prefix of environment overrides: `QIFLOW__SECTION__KEY`.
pub const ENV_PREFIX: &str = "QIFLOW__";
const ADDR_ENV: &str = "QIFLOW_ADDR";
/// Single-underscore variables qiflow reads; any other `QIFLOW_…` is warned about.
const KNOWN_VARS: &[&str] = &[
    CONFIG_ENV,
    ADDR_ENV,
    crate::secret::MASTER_KEY_ENV,
    crate::secret::MASTER_KEY_FILE_ENV,
];
const DEFAULT_FILE: &str = "qiflow.toml";

/// A configuration as [`Loader::parse`] left it: what it found so far, the capabilities' checks
/// still to run.
pub(crate) struct Parsed {
    pub(crate) config: Config,
    pub(crate) findings: Findings,
    /// The file it came from, for error messages.
    pub(crate) origin: Option<String>,
}

impl Parsed {
    /// The configuration with its warnings, or every problem found (errors first).
    pub(crate) fn finish(self) -> Result<Config, ConfigError> {
        let Findings {
            mut problems,
            warnings,
        } = self.findings;
        if !problems.is_empty() {
            problems.extend(warnings);
            return Err(ConfigError::new(self.origin, problems));
        }
        let mut config = self.config;
        config.warnings = warnings;
        Ok(config)
    }
}

enum Source {
    /// Look for `QIFLOW_CONFIG`, then `./qiflow.toml`.
    Discover,
    File(PathBuf),
    Text(String),
}

/// Loads a [`Config`] from a TOML file, a `.env` file and the environment, decrypting `ENC:`
/// values and validating the result.
///
/// A `Loader` with no settings does what services want: the file from `QIFLOW_CONFIG` (or
/// `./qiflow.toml` when it exists, or defaults only), `./.env`, the process environment, and the
/// keyring from `QIFLOW_MASTER_KEY` / `QIFLOW_MASTER_KEY_FILE`. Every problem is collected, not
/// only the first, so `qiflow check` can list them all.
#[must_use]
pub struct Loader {
    source: Source,
    env: Option<BTreeMap<String, String>>,
    dotenv: Option<PathBuf>,
    keyring: Option<Keyring>,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl Loader {
    /// A loader with the default sources (see the type's docs).
    pub fn new() -> Self {
        Self {
            source: Source::Discover,
            env: None,
            dotenv: Some(PathBuf::from(".env")),
            keyring: None,
        }
    }

    /// Reads this TOML file (instead of `QIFLOW_CONFIG` or `./qiflow.toml`). It must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Source::File(path.into());
        self
    }

    /// Uses this TOML text instead of a file.
    pub fn toml_str(mut self, text: impl Into<String>) -> Self {
        self.source = Source::Text(text.into());
        self
    }

    /// Uses these variables instead of the process environment and the `.env` file (a `.env`
    /// file given with [`Loader::dotenv`] afterwards is still read beneath them). For tests and
    /// for hosts that assemble their environment themselves.
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self.dotenv = None;
        self
    }

    /// Reads `KEY=value` lines from this file beneath the environment (`None`: no file).
    /// Defaults to `./.env` when it exists.
    pub fn dotenv(mut self, path: Option<PathBuf>) -> Self {
        self.dotenv = path;
        self
    }

    /// Decrypts `ENC:` values with this keyring instead of the one from the environment.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Loads and decrypts, and checks what configuration alone can check (syntax, types,
    /// unknown keys, environment overrides, secrets, the sections no capability owns). The
    /// capabilities' own checks run after it, in [`Loader::load`].
    pub(crate) fn parse(self) -> Result<Parsed, ConfigError> {
        let mut problems = Vec::new();
        let env = self.environment(&mut problems);
        let lookup = |name: &str| env.get(name).cloned();

        let (origin, text) = match &self.source {
            Source::Text(text) => (None, Some(text.clone())),
            Source::File(path) => (Some(path.clone()), read_file(path, &mut problems)),
            Source::Discover => match lookup(CONFIG_ENV).filter(|p| !p.is_empty()) {
                Some(path) => {
                    let path = PathBuf::from(path);
                    let text = read_file(&path, &mut problems);
                    (Some(path), text)
                }
                None if Path::new(DEFAULT_FILE).is_file() => {
                    let path = PathBuf::from(DEFAULT_FILE);
                    let text = read_file(&path, &mut problems);
                    (Some(path), text)
                }
                None => (None, Some(String::new())),
            },
        };
        let origin_name = origin.as_ref().map(|p| p.display().to_string());
        let mut warnings = Vec::new();
        // Errors first, then the warnings found so far, so `qiflow check` shows both.
        let fail = |mut problems: Vec<Problem>, warnings: &[Problem]| {
            problems.extend(warnings.iter().cloned());
            Err(ConfigError::new(origin_name.clone(), problems))
        };

        let Some(text) = text else {
            return fail(problems, &warnings);
        };
        let mut table = match text.parse::<Table>() {
            Ok(table) => table,
            Err(e) => {
                problems.push(syntax_problem(&text, &e));
                return fail(problems, &warnings);
            }
        };

        let env_paths = apply_env_overrides(&mut table, &env, &mut problems, &mut warnings);

        let mut keyring = self.keyring;
        let mut encrypted = HashSet::new();
        decrypt_tree(
            &mut table,
            &mut keyring,
            &lookup,
            &mut encrypted,
            &mut problems,
            &mut warnings,
        );
        if !problems.is_empty() {
            return fail(problems, &warnings);
        }

        let mut unknown = Vec::new();
        let result: Result<Config, _> = {
            let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
            let de = serde_ignored::Deserializer::new(Value::Table(table), &mut record);
            serde_path_to_error::deserialize(de)
        };
        for path in unknown {
            let message = match env_paths.get(&path) {
                Some(var) => {
                    format!("unknown key (set by {var}); remove the variable or fix its name")
                }
                None => "unknown key; remove it or fix its spelling (see docs/configuration.md)"
                    .to_owned(),
            };
            problems.push(Problem::new(ProblemKind::UnknownKey, path, message));
        }
        let mut config = match result {
            Ok(config) => config,
            Err(e) => {
                let path = e.path().to_string();
                let mut message = if secret_keys::holds_secrets(&path) {
                    // serde's message repeats the value ("invalid type: string \"…\""): not here.
                    "has the wrong type; a secret is a string (plain, or the ENC: value of \
                     `qiflow encrypt`), and `headers` is a table of them"
                        .to_owned()
                } else {
                    e.inner().message().trim().to_owned()
                };
                if let Some(var) = env_paths.get(&path) {
                    message = format!("{message} (set by {var})");
                }
                problems.push(Problem::new(ProblemKind::Type, path, message));
                return fail(problems, &warnings);
            }
        };
        // Unknown keys do not stop the range checks: `qiflow check` lists every problem at once.

        for entry in config.secret_entries() {
            let path = &entry.path;
            if encrypted.contains(path) || entry.value.is_empty() {
                continue;
            }
            let what = match entry.header {
                // Headers such as Content-Type are not credentials, and a template such as
                // `Bearer {{token}}` holds none itself.
                Some(name)
                    if !secret_keys::is_credential_header(name)
                        || entry.value.expose().contains("{{") =>
                {
                    continue;
                }
                Some(_) => "holds a plain value, and the header looks like a credential",
                None => "holds a plain value",
            };
            warnings.push(Problem::new(
                ProblemKind::PlainSecret,
                path.clone(),
                format!(
                    "{what}; encrypt it with `qiflow encrypt --name {path}` and use the ENC: \
                     value it prints"
                ),
            ));
        }
        move_old_keys(&mut config, &mut problems, &mut warnings);
        config.source = origin;
        let mut findings = Findings { problems, warnings };
        validate::validate(&config, &mut findings);
        Ok(Parsed {
            config,
            findings,
            origin: origin_name,
        })
    }

    fn environment(&self, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        if let Some(path) = &self.dotenv
            && path.is_file()
        {
            match dotenvy::from_path_iter(path) {
                Ok(iter) => {
                    for item in iter {
                        match item {
                            Ok((k, v)) => {
                                vars.insert(k, v);
                            }
                            Err(e) => problems.push(Problem::new(
                                ProblemKind::File,
                                path.display().to_string(),
                                format!("cannot parse: {e}; write KEY=value lines"),
                            )),
                        }
                    }
                }
                Err(e) => problems.push(Problem::new(
                    ProblemKind::File,
                    path.display().to_string(),
                    format!("cannot read: {e}"),
                )),
            }
        }
        match &self.env {
            Some(env) => vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone()))),
            None => vars.extend(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            ),
        }
        vars
    }
}

/// Keys kept under an older name: `[metrics] listen` is `[admin] listen` now.
fn move_old_keys(config: &mut Config, problems: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
    if let Some(old) = config.metrics.listen {
        match config.admin.listen {
            None => {
                config.admin.listen = Some(old);
                warnings.push(Problem::new(
                    ProblemKind::Advice,
                    "metrics.listen",
                    "is the older name of admin.listen (the operator listener, which serves every \
                     qiflow endpoint); rename it",
                ));
            }
            Some(new) if new != old => problems.push(Problem::new(
                ProblemKind::Value,
                "metrics.listen",
                format!(
                    "{old} differs from admin.listen {new}; metrics.listen is the older name of \
                     admin.listen: remove it"
                ),
            )),
            Some(_) => {}
        }
    }
}

fn read_file(path: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            problems.push(Problem::new(
                ProblemKind::File,
                path.display().to_string(),
                format!(
                    "cannot read the configuration file: {e}; check the path (or {CONFIG_ENV})"
                ),
            ));
            None
        }
    }
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}")
        }
        None => String::new(),
    };
    Problem::new(
        ProblemKind::Syntax,
        location,
        format!("invalid TOML: {}; fix the syntax", e.message().trim()),
    )
}

/// A `Config` with every optional key set, serialized: the types that env overrides convert to.
fn schema() -> Value {
    let mut sample = Config::default();
    sample.metrics.listen = Some(([127, 0, 0, 1], 0).into());
    sample.audit.retention = Some(std::time::Duration::from_secs(1));
    sample.audit.routes = vec![String::new()];
    let channel = super::ChannelConfig {
        name: Some(String::new()),
        min_level: Some(super::AlertLevel::Info),
        smtp_host: Some(String::new()),
        smtp_port: Some(0),
        username: Some(String::new()),
        from: Some(String::new()),
        to: vec![String::new()],
        subject: Some(String::new()),
        body: Some(String::new()),
        ..Default::default()
    };
    sample.alerts.channels.push(channel);
    let mut schema = Value::try_from(&sample).unwrap_or_else(|_| Value::Table(Table::new()));
    // Secret keys are never serialized: put back the one that is not a string.
    if let Some(Value::Table(channel)) = schema
        .get_mut("alerts")
        .and_then(|a| a.get_mut("channels"))
        .and_then(|c| c.get_mut(0))
    {
        channel.insert("headers".into(), Value::Table(Table::new()));
    }
    // Tables keyed by a name the user chooses: `*` stands for any name.
    let dependency = super::DependencyConfig {
        max_pending: Some(0),
        ..Default::default()
    };
    if let (Value::Table(root), Ok(value)) = (&mut schema, Value::try_from(&dependency)) {
        let mut any = Table::new();
        any.insert("*".into(), value);
        root.insert("dependencies".into(), Value::Table(any));
    }
    schema
}

fn expected_type<'a>(schema: &'a Value, segments: &[String]) -> Option<&'a Value> {
    let mut at = schema;
    for seg in segments {
        at = match at {
            Value::Table(t) => t.get(seg).or_else(|| t.get("*"))?,
            Value::Array(a) => a.first()?,
            _ => return None,
        };
    }
    Some(at)
}

/// Applies `QIFLOW__…` variables (and `QIFLOW_ADDR`) to the table. Returns the dotted path each
/// variable set, so later errors can name the variable.
fn apply_env_overrides(
    table: &mut Table,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> HashMap<String, String> {
    let schema = schema();
    let mut paths = HashMap::new();
    let mut overrides: Vec<(String, Vec<String>, &String)> = Vec::new();
    if let Some(addr) = env.get(ADDR_ENV) {
        overrides.push((
            ADDR_ENV.to_owned(),
            vec!["server".into(), "addr".into()],
            addr,
        ));
    }
    for (name, value) in env {
        if name.starts_with("QIFLOW_")
            && !name.starts_with(ENV_PREFIX)
            && !KNOWN_VARS.contains(&name.as_str())
        {
            warnings.push(Problem::new(
                ProblemKind::Advice,
                name.clone(),
                format!(
                    "is not a qiflow variable and is ignored; overrides are written {ENV_PREFIX}SECTION__KEY (two underscores after QIFLOW)"
                ),
            ));
        }
        if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if segments.iter().any(String::is_empty) {
                problems.push(Problem::new(
                    ProblemKind::EnvOverride,
                    name.clone(),
                    "empty key segment; write QIFLOW__SECTION__KEY with double underscores between parts",
                ));
                continue;
            }
            overrides.push((name.clone(), segments, value));
        }
    }
    for (name, segments, raw) in overrides {
        let value = match convert(raw, expected_type(&schema, &segments)) {
            Ok(v) => v,
            Err(_) if secret_keys::holds_secrets(&segments.join(".")) => {
                let message = format!(
                    "cannot be read as a table of headers (for {}); write it like \
                     {{ Authorization = \"ENC:v1:…\" }}, or set one header with {name}__<NAME>",
                    segments.join(".")
                );
                problems.push(Problem::new(ProblemKind::EnvOverride, name, message));
                continue;
            }
            Err(why) => {
                problems.push(Problem::new(
                    ProblemKind::EnvOverride,
                    name,
                    format!("{why} (for {})", segments.join(".")),
                ));
                continue;
            }
        };
        match set_path(table, &segments, value) {
            Ok(path) => {
                paths.insert(path, name);
            }
            Err(why) => problems.push(Problem::new(ProblemKind::EnvOverride, name, why)),
        }
    }
    paths
}

fn convert(raw: &str, expected: Option<&Value>) -> Result<Value, String> {
    let text = raw.trim();
    Ok(match expected {
        None | Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Integer(_)) => Value::Integer(
            text.parse()
                .map_err(|_| format!("expected an integer, got {text:?}"))?,
        ),
        Some(Value::Float(_)) => Value::Float(
            text.parse()
                .map_err(|_| format!("expected a number, got {text:?}"))?,
        ),
        Some(Value::Boolean(_)) => Value::Boolean(match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("expected true or false, got {text:?}")),
        }),
        Some(Value::Array(items)) => {
            if text.starts_with('[') {
                parse_inline(text)?
            } else {
                let element = items.first();
                let parts = text.split(',').map(str::trim).filter(|p| !p.is_empty());
                Value::Array(
                    parts
                        .map(|p| convert(p, element))
                        .collect::<Result<_, _>>()?,
                )
            }
        }
        Some(Value::Table(_)) => match parse_inline(text)? {
            v @ Value::Table(_) => v,
            _ => {
                return Err(format!(
                    "expected an inline table like {{ a = \"b\" }}, got {text:?}"
                ));
            }
        },
        Some(Value::Datetime(_)) => parse_inline(text)?,
    })
}

fn parse_inline(text: &str) -> Result<Value, String> {
    format!("v = {text}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .ok_or_else(|| format!("expected a TOML value, got {text:?}"))
}

fn set_path(table: &mut Table, segments: &[String], value: Value) -> Result<String, String> {
    let (first, rest) = segments.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(first.clone());
    }
    let list_next = rest[0].parse::<usize>().is_ok();
    let child = table.entry(first.clone()).or_insert_with(|| {
        if list_next {
            Value::Array(Vec::new())
        } else {
            Value::Table(Table::new())
        }
    });
    set_in_value(child, first, rest, value).map(|tail| format!("{first}.{tail}"))
}

fn set_in_value(
    at: &mut Value,
    here: &str,
    segments: &[String],
    value: Value,
) -> Result<String, String> {
    match at {
        Value::Table(t) => set_path(t, segments, value),
        Value::Array(items) => {
            let (seg, rest) = segments.split_first().ok_or("empty key")?;
            let index: usize = seg
                .parse()
                .map_err(|_| format!("{here} is a list: put an index after it, like {here}.0"))?;
            if index == items.len() {
                items.push(Value::Table(Table::new()));
            }
            let item = items
                .get_mut(index)
                .ok_or_else(|| format!("{here}: index {index} is past the end of the list"))?;
            if rest.is_empty() {
                *item = value;
                return Ok(seg.clone());
            }
            set_in_value(item, here, rest, value).map(|tail| format!("{seg}.{tail}"))
        }
        _ => Err(format!("{here} is a value, not a section")),
    }
}

fn decrypt_tree(
    table: &mut Table,
    keyring: &mut Option<Keyring>,
    lookup: &dyn Fn(&str) -> Option<String>,
    encrypted: &mut HashSet<String>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let mut visit = |path: &str, value: &mut String| {
        if !secret::is_encrypted(value) {
            return;
        }
        if !secret_keys::is_secret_key(path) {
            problems.push(Problem::new(
                ProblemKind::Secret,
                path,
                "holds an ENC: value, but is not a secret key: its plaintext would be shown \
                 wherever the configuration is printed; put the plain value here, or move the \
                 secret to a secret key (docs/configuration.md lists them)",
            ));
            return;
        }
        if keyring.is_none() {
            match Keyring::from_lookup(lookup) {
                Ok(k) => {
                    key_file_warning(lookup, warnings);
                    *keyring = Some(k);
                }
                Err(e) => {
                    problems.push(Problem::new(
                        ProblemKind::Secret,
                        path,
                        format!("is encrypted, but {}", e.detail()),
                    ));
                    return;
                }
            }
        }
        if let Some(k) = keyring.as_ref() {
            match k.decrypt(path, value) {
                Ok(plain) => {
                    zeroize::Zeroize::zeroize(value);
                    *value = plain.expose().to_owned();
                    encrypted.insert(path.to_owned());
                }
                Err(e) => problems.push(Problem::new(ProblemKind::Secret, path, e.detail())),
            }
        }
    };
    walk_strings(table, &mut Vec::new(), &mut visit);
}

fn walk_strings(
    table: &mut Table,
    path: &mut Vec<String>,
    visit: &mut dyn FnMut(&str, &mut String),
) {
    for (key, value) in table.iter_mut() {
        path.push(key.clone());
        walk_value(value, path, visit);
        path.pop();
    }
}

fn walk_value(value: &mut Value, path: &mut Vec<String>, visit: &mut dyn FnMut(&str, &mut String)) {
    match value {
        Value::String(s) => visit(&path.join("."), s),
        Value::Table(t) => walk_strings(t, path, visit),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                // An element of a list of tables is addressed by its `name`, else its index.
                let label = match item {
                    Value::Table(t) => match t.get("name") {
                        Some(Value::String(name)) if !name.is_empty() => name.clone(),
                        _ => i.to_string(),
                    },
                    _ => i.to_string(),
                };
                path.push(label);
                walk_value(item, path, visit);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(unix)]
fn key_file_warning(lookup: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<Problem>) {
    use std::os::unix::fs::PermissionsExt;
    if lookup(crate::secret::MASTER_KEY_ENV).is_some_and(|v| !v.trim().is_empty()) {
        return;
    }
    let Some(file) = lookup(MASTER_KEY_FILE_ENV) else {
        return;
    };
    if let Ok(meta) = std::fs::metadata(&file)
        && meta.permissions().mode() & 0o077 != 0
    {
        warnings.push(Problem::new(
            ProblemKind::Unsafe,
            MASTER_KEY_FILE_ENV,
            format!("the key file {file} is readable by group or others; run `chmod 600 {file}`"),
        ));
    }
}

#[cfg(not(unix))]
fn key_file_warning(_: &dyn Fn(&str) -> Option<String>, _: &mut Vec<Problem>) {}
