use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;
use crate::secret::Secret;

/// The whole qiflow configuration (`qiflow.toml`).
///
/// Every section and key has a default, so `Config::default()` is a working configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Config {
    /// `[service]`: who is reporting.
    pub service: ServiceConfig,
    /// `[logging]`: structured logs and the rotating file.
    pub logging: LoggingConfig,
    /// `[errors]`: error capture and Sentry forwarding.
    pub errors: ErrorsConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[baseline]`: learned latency baselines.
    pub baseline: BaselineConfig,
    /// `[audit]`: the tamper-evident audit trail.
    pub audit: AuditConfig,
    /// `[alerts]`: alert routing and `[[alerts.channels]]`.
    pub alerts: AlertsConfig,
    /// `[health]`: health endpoints.
    pub health: HealthConfig,
    /// `[admin]`: the operator surface (who may read and change qiflow's state over HTTP).
    pub admin: AdminConfig,
    /// `[tracing]`: W3C trace context.
    pub tracing: TracingConfig,
    /// `[server]`: where the examples listen.
    pub server: ServerConfig,
    /// `[[jobs]]`: the scheduled jobs qiflow watches (see [`crate::jobs`]).
    pub jobs: Vec<JobConfig>,
    /// `[authz]`: roles, permissions and who holds them (see [`crate::authz`]).
    pub authz: AuthzConfig,
    /// `[dependencies.NAME]`: the settings of the dependency registered as `NAME` (see
    /// [`crate::dependency`]); a dependency without a table gets the defaults.
    pub dependencies: std::collections::BTreeMap<String, DependencyConfig>,
    /// Warnings found while loading (plain values in secret keys, a key file readable by others).
    #[serde(skip)]
    pub(crate) warnings: Vec<super::Problem>,
    /// The file it was read from, if any.
    #[serde(skip)]
    pub(crate) source: Option<PathBuf>,
}

impl Config {
    /// The file the configuration was read from (`QIFLOW_CONFIG`, `./qiflow.toml` or
    /// [`Loader::file`](super::Loader::file)); `None` for text or defaults only. A `SIGHUP`
    /// re-reads `[authz]` from it (see [`crate::authz`]).
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }

    /// Warnings found while loading: they do not stop `init`, which logs them, and
    /// `qiflow check` prints them.
    pub fn warnings(&self) -> &[super::Problem] {
        &self.warnings
    }

    /// The operator listener: `[admin] listen`, or its older name `[metrics] listen`.
    pub fn operator_listener(&self) -> Option<SocketAddr> {
        self.admin.listen.or(self.metrics.listen)
    }
}

/// `[service]`: the identity attached to logs, errors, metrics and alerts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Service name. Defaults to `"unknown_service"` (the OpenTelemetry convention).
    pub name: String,
    /// Deployment environment. Defaults to `"development"`.
    pub environment: String,
    /// Service version (release). Defaults to `"0.0.0"`.
    pub version: String,
    /// The commit the service was built from (`"3f9c2e1"`): on `qiflow_build_info` (label
    /// `commit`, when set) and each deployment record. Defaults to unset (`""`).
    pub commit: String,
    /// Where qiflow keeps the records of the jobs it watches (`jobs.json`) and of its last
    /// deployments (`deployments.json`); `""` keeps them in memory only. Defaults to `"data"`.
    pub state_dir: PathBuf,
    /// This process's id among the service's instances (`"web-1"`): on every log line, error
    /// report, audit record, alert (label `instance`), deployment record and on
    /// `qiflow_build_info` (label `service_instance_id`). Letters, digits and `.`, `_`, `:`,
    /// `-`, at most 128. Defaults to unset (`""`): the host name and six random hex digits
    /// (`"api-7f9c2d-3a41bf"`), generated once and kept in `<state_dir>/instance`, so a restart
    /// keeps it (without a state directory, a new one at each start).
    pub instance: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: "unknown_service".into(),
            environment: "development".into(),
            version: "0.0.0".into(),
            commit: String::new(),
            state_dir: PathBuf::from("data"),
            instance: String::new(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line (the default).
    Json,
    /// Human-readable lines for development.
    Pretty,
}

/// Time-based rotation of the log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Rotation {
    /// Rotate by size only.
    Never,
    /// Rotate at the start of every hour (UTC), and by size.
    Hourly,
    /// Rotate at midnight UTC, and by size (the default).
    Daily,
}

/// Compression of rotated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// Keep rotated files as they are.
    None,
    /// gzip (the default).
    Gzip,
    /// zstd.
    Zstd,
}

/// What a bounded queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The producer waits (bounded by a timeout); nothing is lost unless the timeout passes.
    Block,
    /// The item is dropped and counted on `qiflow_dropped_total{pipeline}`.
    Drop,
}

/// The default of `[logging] file_mode`: the owner reads and writes, the group reads.
pub const DEFAULT_LOG_FILE_MODE: u32 = 0o640;

/// `[logging]`: structured logs to stdout and a rotating file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// `EnvFilter` directives, e.g. `"info,sqlx=warn"`. Defaults to `"info"`.
    pub level: String,
    /// `"json"` or `"pretty"`. Defaults to `"json"`.
    pub format: LogFormat,
    /// Also write to stdout. Defaults to `true`.
    pub stdout: bool,
    /// Directory of the log file; `""` disables the file. Defaults to `"logs"`.
    pub dir: PathBuf,
    /// Name of the active log file. Defaults to `"app.log"`.
    pub file_name: String,
    /// `"never"`, `"hourly"` or `"daily"`. Defaults to `"daily"`.
    pub rotation: Rotation,
    /// Rotate when the active file reaches this size. Defaults to `"100MiB"`.
    #[serde(with = "units::size")]
    pub max_size: u64,
    /// Rotated files to keep (0 keeps none). Defaults to `10`.
    pub max_backups: u32,
    /// Delete rotated files older than this. Defaults to `"30d"`.
    #[serde(with = "units::duration")]
    pub max_age: Duration,
    /// `"none"`, `"gzip"` or `"zstd"`. Defaults to `"gzip"`.
    pub compress: Compression,
    /// Write one access line per request (`target = "qiflow::access"`). Defaults to `true`.
    pub access_log: bool,
    /// Lines that may wait for the writer. Defaults to `65536`.
    pub queue_capacity: usize,
    /// `"block"` or `"drop"` when the queue is full. Defaults to `"block"`.
    pub overflow: OverflowPolicy,
    /// Extra field names to redact, beside the built-in ones (password, token, …). Defaults to none.
    pub redact: Vec<String>,
    /// Unix permissions of the log files qiflow creates (the active file, rotated and compressed
    /// ones), in octal (`"0640"`: the owner reads and writes, the group reads). The process umask
    /// may narrow it further. Defaults to `"0640"`.
    #[serde(with = "units::mode")]
    pub file_mode: u32,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
            stdout: true,
            dir: PathBuf::from("logs"),
            file_name: "app.log".into(),
            rotation: Rotation::Daily,
            max_size: 100 * 1024 * 1024,
            max_backups: 10,
            max_age: Duration::from_secs(30 * 86_400),
            compress: Compression::Gzip,
            access_log: true,
            queue_capacity: 65_536,
            overflow: OverflowPolicy::Block,
            redact: Vec::new(),
            file_mode: DEFAULT_LOG_FILE_MODE,
        }
    }
}

/// Which responses are captured as errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CapturePolicy {
    /// Server errors only (the default).
    #[serde(rename = "5xx")]
    ServerErrors,
    /// Client and server errors.
    #[serde(rename = "4xx+5xx")]
    ClientAndServerErrors,
}

/// `[errors]`: error capture and forwarding to Sentry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ErrorsConfig {
    /// Sentry DSN (secret; `ENC:` allowed). Defaults to unset: nothing is forwarded.
    #[serde(skip_serializing)]
    pub sentry_dsn: Option<Secret>,
    /// Fraction of error events forwarded, 0.0 to 1.0. Defaults to `1.0`.
    pub sample_rate: f64,
    /// `"5xx"` or `"4xx+5xx"`. Defaults to `"5xx"`.
    pub capture: CapturePolicy,
    /// Error groups kept in the local store. Defaults to `100`.
    pub recent_capacity: usize,
    /// `tracing` events at this level or more severe become error reports: `"error"` or
    /// `"warn"`. Defaults to `"error"`.
    pub event_level: String,
}

impl Default for ErrorsConfig {
    fn default() -> Self {
        Self {
            sentry_dsn: None,
            sample_rate: 1.0,
            capture: CapturePolicy::ServerErrors,
            recent_capacity: 100,
            event_level: "error".into(),
        }
    }
}

/// `[metrics]`: Prometheus metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Record and serve metrics. Defaults to `true`.
    pub enabled: bool,
    /// Path of the Prometheus endpoint. Defaults to `"/metrics"`.
    pub path: String,
    /// Histogram buckets in seconds. Defaults to the OpenTelemetry HTTP buckets
    /// `[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]`.
    pub buckets: Vec<f64>,
    /// Distinct route labels before new ones fold into `route="other"`. Defaults to `200`.
    pub max_routes: usize,
    /// The older name of `[admin] listen` (the operator listener), still read: it moves the
    /// whole operator surface, not only `/metrics`. Loading moves its value to `[admin] listen`
    /// with a warning. Defaults to unset.
    pub listen: Option<SocketAddr>,
    /// Add `service` and `environment` (from `[service]`) to every series, the application's
    /// own `metrics::counter!` series included. The version is never added: it is on
    /// `qiflow_build_info` only, so a deploy does not start every series anew. Defaults to
    /// `true`; turn it off when Prometheus attaches these as target labels, and join on
    /// `qiflow_build_info`.
    pub global_labels: bool,
    /// Serve the process's and the machine's metrics (`process_*`, `system_*`: CPU, memory,
    /// load, the log and audit volumes' space and I/O, network bytes), sampled on qiflow's
    /// worker. Defaults to `true`.
    pub system: bool,
    /// How often `system` samples. Defaults to `"15s"`; at least `"1s"`.
    #[serde(with = "units::duration")]
    pub system_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/metrics".into(),
            buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
            ],
            max_routes: 200,
            listen: None,
            global_labels: true,
            system: true,
            system_interval: Duration::from_secs(15),
        }
    }
}

/// `[baseline]`: per-route latency baselines.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BaselineConfig {
    /// Learn per-route baselines and detect deviations. Defaults to `true`.
    pub enabled: bool,
    /// Length of the sliding window. Defaults to `"5m"`.
    #[serde(with = "units::duration")]
    pub window: Duration,
    /// Requests a window needs before it is compared with the baseline. Defaults to `100`.
    pub min_samples: u64,
    /// A window p95 above `deviation_factor` × the baseline p95 raises an alert. Defaults to `2.0`.
    pub deviation_factor: f64,
    /// Requests slower than this are logged as `qiflow::slow`. Defaults to `"1s"`.
    #[serde(with = "units::duration")]
    pub slow_request: Duration,
    /// Where learned baselines persist across restarts; `""` keeps them in memory only.
    /// Defaults to `"data/baselines.json"`.
    pub state_file: PathBuf,
    /// A window's error rate above the baseline's by more than this (a fraction: `0.05` is 5
    /// percentage points) raises an alert. Defaults to `0.05`.
    pub error_rate_margin: f64,
    /// A request slower than this × the route's baseline p99 is also logged as `qiflow::slow`;
    /// `0` turns that off. Defaults to `3.0`.
    pub slow_p99_factor: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            error_rate_margin: 0.05,
            slow_p99_factor: 3.0,
            window: Duration::from_secs(300),
            min_samples: 100,
            deviation_factor: 2.0,
            slow_request: Duration::from_secs(1),
            state_file: PathBuf::from("data/baselines.json"),
        }
    }
}

/// Where audit records are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditSinkKind {
    /// JSON-lines segment files under `[audit] dir` (the default).
    File,
    /// A PostgreSQL table (`[audit] postgres_url`).
    Postgres,
}

/// `[audit]`: the tamper-evident audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AuditConfig {
    /// Record audit events. Defaults to `true`.
    pub enabled: bool,
    /// `"file"` or `"postgres"`. Defaults to `"file"`.
    pub sink: AuditSinkKind,
    /// Directory of the file sink. Defaults to `"data/audit"`.
    pub dir: PathBuf,
    /// File sink: the witness file, rewritten after every digest with where the trail was
    /// last sealed, so a trail cut back to an earlier digest is detected. Keep it outside
    /// `dir`. Defaults to unset: `<dir>.witness.json`, beside the directory (see
    /// [`AuditConfig::witness_path`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness: Option<PathBuf>,
    /// PostgreSQL connection URL (secret; `ENC:` allowed). Required when `sink = "postgres"`.
    #[serde(skip_serializing)]
    pub postgres_url: Option<Secret>,
    /// Records written per batch. Defaults to `100`.
    pub batch_size: usize,
    /// A partial batch is written after this long. Defaults to `"1s"`.
    #[serde(with = "units::duration")]
    pub flush_interval: Duration,
    /// Delete what is older than this: whole closed segments (file sink), or each instance's
    /// rows sealed by a digest older than this (PostgreSQL sink, checked every ten minutes).
    /// Defaults to unset: keep everything.
    #[serde(
        with = "units::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
    /// HMAC key for digest records (secret; `ENC:` allowed). Defaults to unset: digests are
    /// chained but not keyed, and `qiflow check` warns.
    #[serde(skip_serializing)]
    pub signing_key: Option<Secret>,
    /// Records that may wait for the writer. Defaults to `10000`.
    pub queue_capacity: usize,
    /// When the queue is full, `observer.audit()` waits this long for room before the record is
    /// counted as lost (with an error and an alert). Defaults to `"1s"`.
    #[serde(with = "units::duration")]
    pub block_timeout: Duration,
    /// A digest record after this many records. Defaults to `1000`.
    pub digest_every: u64,
    /// A digest record when records have waited this long unsealed. Defaults to `"60s"`.
    #[serde(with = "units::duration")]
    pub digest_interval: Duration,
    /// File sink: start a new segment at this size. Defaults to `"64MiB"`.
    #[serde(with = "units::size")]
    pub segment_size: u64,
    /// File sink: start a new segment at this age. Defaults to `"1d"`.
    #[serde(with = "units::duration")]
    pub segment_age: Duration,
    /// File sink: gzip closed segments (they still verify). Defaults to `false`.
    pub compress: bool,
    /// Encrypt records at rest (AES-256-GCM) with the keyring of `QIFLOW_MASTER_KEY` /
    /// `QIFLOW_MASTER_KEY_FILE`. Defaults to `false`.
    pub encrypt: bool,
    /// Requests audited automatically by the middleware: `"METHOD ROUTE"` rules such as
    /// `"POST /login"`, `"DELETE *"`, `"* /admin/*"`. Defaults to none.
    pub routes: Vec<String>,
    /// The request header naming the actor of automatically audited requests (e.g. `x-user`).
    /// Defaults to `""`: none (actor `anonymous`, unless the host sets a closure).
    pub actor_header: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sink: AuditSinkKind::File,
            dir: PathBuf::from("data/audit"),
            witness: None,
            postgres_url: None,
            batch_size: 100,
            flush_interval: Duration::from_secs(1),
            retention: None,
            signing_key: None,
            queue_capacity: 10_000,
            block_timeout: Duration::from_secs(1),
            digest_every: 1000,
            digest_interval: Duration::from_secs(60),
            segment_size: 64 * 1024 * 1024,
            segment_age: Duration::from_secs(24 * 3600),
            compress: false,
            encrypt: false,
            routes: Vec::new(),
            actor_header: String::new(),
        }
    }
}

impl AuditConfig {
    /// The witness file of the file sink: `witness` when set, else `<dir>.witness.json`
    /// beside the trail directory.
    ///
    /// ```
    /// let audit = qiflow_core::config::Config::default().audit;
    /// assert_eq!(audit.witness_path(), std::path::Path::new("data/audit.witness.json"));
    /// ```
    pub fn witness_path(&self) -> PathBuf {
        self.witness
            .clone()
            .unwrap_or_else(|| default_witness_path(&self.dir))
    }
}

/// The default witness of the trail in `dir`: `<dir>.witness.json`, beside the directory (not
/// in it), e.g. `data/audit.witness.json` for `data/audit`.
///
/// ```
/// use std::path::Path;
/// let w = qiflow_core::audit::default_witness_path(Path::new("data/audit"));
/// assert_eq!(w, Path::new("data/audit.witness.json"));
/// ```
pub fn default_witness_path(dir: &std::path::Path) -> PathBuf {
    let named = |d: &std::path::Path| {
        d.file_name()
            .map(|name| d.with_file_name(format!("{}.witness.json", name.to_string_lossy())))
    };
    named(dir)
        .or_else(|| std::path::absolute(dir).ok().and_then(|abs| named(&abs)))
        .unwrap_or_else(|| dir.join("..").join("audit.witness.json"))
}

/// Alert severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AlertLevel {
    /// Informational.
    Info,
    /// Needs a look.
    Warning,
    /// Something failed.
    Error,
    /// Page someone.
    Critical,
}

/// `[alerts]`: routing, dedup and rate limits, and the channels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// Alerts below this level are not sent. Defaults to `"warning"`.
    pub min_level: AlertLevel,
    /// The same alert (by fingerprint) is not re-sent within this interval. Defaults to `"5m"`.
    #[serde(with = "units::duration")]
    pub cooldown: Duration,
    /// Alerts arriving within this interval are grouped into one notification. Defaults to `"30s"`.
    #[serde(with = "units::duration")]
    pub group_wait: Duration,
    /// Label names that split a channel's alerts into groups of their own (`alertname`, `severity`
    /// and any alert label, e.g. `["alertname", "route"]`): each group waits and is sent on its
    /// own. Defaults to none: all of a channel's alerts form one group.
    pub group_by: Vec<String>,
    /// Notifications per minute per channel; the rest are counted as dropped. Defaults to `100`.
    pub rate_limit: u32,
    /// The channels (`[[alerts.channels]]`). Defaults to none: alerts go to the log channel.
    pub channels: Vec<ChannelConfig>,
    /// Where what was sent when, cooldowns and silences persist across restarts, so a redeploy
    /// does not page again; `""` keeps them in memory only. Defaults to `"data/alerts.json"`.
    pub state_file: PathBuf,
    /// Alerts that may wait for the router; more are dropped and counted. Defaults to `1024`.
    pub queue_capacity: usize,
    /// First pause before retrying a failed send; doubled (with jitter) on each retry.
    /// Defaults to `"1s"`.
    #[serde(with = "units::duration")]
    pub retry_initial: Duration,
    /// The longest pause between two retries. Defaults to `"30s"`.
    #[serde(with = "units::duration")]
    pub retry_max: Duration,
    /// A notification not delivered within this time of its first attempt is given up (counted
    /// as `outcome="failed"`). Defaults to `"5m"`.
    #[serde(with = "units::duration")]
    pub retry_deadline: Duration,
    /// Silences from the configuration (`[[alerts.silences]]`); more can be added at run time.
    pub silences: Vec<SilenceConfig>,
    /// The longest silence `POST /qiflow/api/alerts/silences` accepts; longer ones are refused
    /// (400) with this cap in the message. Silences from the configuration are not capped.
    /// Defaults to `"24h"`.
    #[serde(with = "units::duration")]
    pub max_silence: Duration,
}

/// One `[[alerts.silences]]` entry: alerts whose labels match every matcher are not sent until
/// `expires`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SilenceConfig {
    /// Label matchers: `name = "value"` matches exactly; a `*` in the value matches any run of
    /// characters (`"db-*"`). The label `alertname` is the alert's name and `severity` its level.
    pub matchers: std::collections::BTreeMap<String, String>,
    /// When the silence ends, as an RFC 3339 time (`"2026-12-01T00:00:00Z"`). Required.
    pub expires: String,
    /// Why (shown by `/qiflow/api/alerts`).
    pub comment: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            min_level: AlertLevel::Warning,
            cooldown: Duration::from_secs(300),
            group_wait: Duration::from_secs(30),
            group_by: Vec::new(),
            rate_limit: 100,
            channels: Vec::new(),
            state_file: PathBuf::from("data/alerts.json"),
            queue_capacity: 1024,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(300),
            silences: Vec::new(),
            max_silence: Duration::from_secs(24 * 3600),
        }
    }
}

/// The kind of an alert channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChannelKind {
    /// A log line at warn or error level.
    Log,
    /// A JSON POST to `url`, optionally signed with `secret`.
    Webhook,
    /// A Slack incoming webhook at `url`.
    Slack,
    /// A DingTalk robot at `url`, signed with `secret` when set.
    Dingtalk,
    /// Email over SMTP.
    Email,
    /// An SMS gateway's HTTP API.
    Sms,
    /// An Alertmanager at `url` (`/api/v2/alerts`).
    Alertmanager,
}

/// TLS mode of an SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SmtpTls {
    /// Plain text (only for servers on loopback or a trusted network).
    None,
    /// STARTTLS upgrade (the default).
    Starttls,
    /// Implicit TLS (usually port 465).
    Tls,
}

/// One `[[alerts.channels]]` entry.
///
/// Its secrets are encrypted under the key path `alerts.channels.<name>.<key>` (by `name`, so
/// reordering channels keeps them valid), or `alerts.channels.<index>.<key>` when it has no name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// The channel kind. Defaults to `"log"`.
    pub kind: ChannelKind,
    /// A unique name, used in metrics and secret key paths. Defaults to the kind.
    pub name: Option<String>,
    /// Overrides `[alerts] min_level` for this channel.
    pub min_level: Option<AlertLevel>,
    /// Endpoint URL (secret, since webhook URLs carry tokens; `ENC:` allowed).
    #[serde(skip_serializing)]
    pub url: Option<Secret>,
    /// More endpoint URLs, for the alertmanager channel only: every Alertmanager of a cluster,
    /// each sent every alert, as Prometheus does (secrets, `ENC:` allowed under
    /// `alerts.channels.<name>.urls.<index>`). `url` and `urls` together name them all.
    /// Defaults to none.
    #[serde(skip_serializing)]
    pub urls: Vec<Secret>,
    /// Signing secret (DingTalk, webhook HMAC).
    #[serde(skip_serializing)]
    pub secret: Option<Secret>,
    /// API token (SMS gateways that want one).
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// SMTP server host (email).
    pub smtp_host: Option<String>,
    /// SMTP server port (email). Defaults by `tls`: 25, 587 or 465.
    pub smtp_port: Option<u16>,
    /// `"none"`, `"starttls"` or `"tls"` (email). Defaults to `"starttls"`.
    pub tls: SmtpTls,
    /// A PEM file of root certificates to trust for the SMTP server's certificate besides the
    /// built-in ones, for a relay with a certificate from a private CA (email). Defaults to unset.
    pub ca_file: Option<std::path::PathBuf>,
    /// SMTP user name (email).
    pub username: Option<String>,
    /// SMTP password (email; secret).
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// Sender address (email).
    pub from: Option<String>,
    /// Recipients (email addresses, or phone numbers for SMS).
    pub to: Vec<String>,
    /// HTTP method (SMS). Defaults to `"POST"`.
    pub method: String,
    /// Extra HTTP headers (SMS, webhook). The values are secrets (`ENC:` allowed, under the key
    /// path `alerts.channels.<name>.headers.<Header-Name>`), since headers such as
    /// `Authorization` carry credentials.
    #[serde(skip_serializing)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// Subject template (email). Defaults to the built-in one.
    pub subject: Option<String>,
    /// Body template (email, SMS, webhook). Defaults to the built-in one.
    pub body: Option<String>,
    /// Only alerts whose labels match all of these are sent here (`*` in a value matches any
    /// run of characters; `alertname` and `severity` are the alert's name and level).
    pub matchers: std::collections::BTreeMap<String, String>,
    /// Per-attempt timeout. Defaults to `"10s"`.
    #[serde(with = "units::duration")]
    pub timeout: Duration,
    /// SMS text template (the `{{message}}` of the request `body`). Defaults to
    /// `"[{{level}}] {{name}}: {{summary}}"`.
    pub message: Option<String>,
    /// The longest SMS text, in characters; longer ones are cut and end with `…`. Defaults to `160`.
    pub max_length: usize,
    /// Header carrying the webhook's HMAC-SHA256 signature (`sha256=<hex>`) when `secret` is set.
    /// Defaults to `"X-Qiflow-Signature"`.
    pub signature_header: String,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            kind: ChannelKind::Log,
            name: None,
            min_level: None,
            url: None,
            urls: Vec::new(),
            secret: None,
            token: None,
            smtp_host: None,
            smtp_port: None,
            tls: SmtpTls::Starttls,
            ca_file: None,
            username: None,
            password: None,
            from: None,
            to: Vec::new(),
            method: "POST".into(),
            headers: Default::default(),
            subject: None,
            body: None,
            matchers: Default::default(),
            timeout: Duration::from_secs(10),
            message: None,
            max_length: 160,
            signature_header: "X-Qiflow-Signature".into(),
        }
    }
}

impl ChannelConfig {
    /// The key path prefix of this channel's secrets: `alerts.channels.<name>` or
    /// `alerts.channels.<index>`.
    pub fn key_path(&self, index: usize) -> String {
        match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => format!("alerts.channels.{name}"),
            None => format!("alerts.channels.{index}"),
        }
    }
}

/// `[tracing] propagation`: whether requests take and hand on W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Propagation {
    /// Continue an incoming `traceparent`/`tracestate`, and write them on outgoing calls
    /// (`propagation::inject`). The default.
    W3c,
    /// Ignore incoming trace headers and write none: every request starts a trace of its own.
    None,
}

/// `[tracing]`: W3C trace context (see [`crate::propagation`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TracingConfig {
    /// `"w3c"` (continue incoming traces, hand them on) or `"none"`. Defaults to `"w3c"`.
    pub propagation: Propagation,
    /// Whether responses carry the request's `traceparent`. Defaults to `false`.
    pub respond: bool,
    /// The share of new traces (requests without an incoming `traceparent`) that are sampled,
    /// 0.0 to 1.0: the `sampled` flag handed on to the services a request calls. A request
    /// continuing a trace keeps its caller's decision. Defaults to `1.0`.
    pub sample_ratio: f64,
    /// Where sampled requests are exported as spans, over OTLP/HTTP with protobuf: the full
    /// traces URL of a collector (`"http://127.0.0.1:4318/v1/traces"`). Needs the `otlp`
    /// feature. Defaults to unset (no export).
    pub otlp_endpoint: Option<String>,
    /// Extra HTTP headers on every export (an API key, say). The values are secrets (`ENC:`
    /// allowed, under `tracing.headers.<Header-Name>`). Defaults to none.
    #[serde(skip_serializing)]
    pub headers: std::collections::BTreeMap<String, Secret>,
    /// How long one export may take before it is given up (its spans counted as dropped).
    /// Defaults to `"10s"`.
    #[serde(with = "units::duration")]
    pub timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            propagation: Propagation::W3c,
            respond: false,
            sample_ratio: 1.0,
            otlp_endpoint: None,
            headers: Default::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// `[health]`: the health endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Base path of the health endpoints. Defaults to `"/health"`.
    pub path: String,
    /// An operator token named `health` with the `write` scope, kept for configurations written
    /// before `[[admin.tokens]]` (prefer those: they have names and scopes). When it is set and
    /// `[admin] public_metrics` is not, `/metrics` needs a token too, as it did before. Secret;
    /// `ENC:` allowed. Defaults to unset.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            token: None,
        }
    }
}

/// `[admin]`: the operator surface: `/metrics`, `/health/*`, `/qiflow/api/*` and the pages under
/// `/qiflow/` (see [`crate::admin`] for who may see what).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AdminConfig {
    /// The operator listener: serve the operator surface on this separate address (e.g.
    /// `"127.0.0.1:9090"`) instead of the application's port. Requests there are trusted: no
    /// token is asked. `[metrics] listen` is an older name of this key. Defaults to unset.
    pub listen: Option<SocketAddr>,
    /// Where qiflow keeps the operator token it makes when no token is configured (neither
    /// `[[admin.tokens]]` nor `[health] token`): 256 random bits, hex, in a file only the owner
    /// can read (`0600`), made at the first start and reused at the next. `""` makes none, and
    /// the surface stays closed to everyone but the operator listener. Defaults to
    /// `"data/admin-token"`.
    pub token_file: PathBuf,
    /// Whether `GET /metrics` answers without a token. Defaults to `true` (Prometheus scrapes
    /// without credentials), or `false` when the older `[health] token` is set.
    pub public_metrics: Option<bool>,
    /// The operator tokens (`[[admin.tokens]]`): each has a name (the actor of the audit records
    /// of its writes) and a scope. Defaults to none (qiflow then makes one: see `token_file`).
    pub tokens: Vec<AdminToken>,
    /// The live dashboard at `/qiflow/` and `/qiflow/api/overview`, with its traffic history
    /// (see [`crate::dashboard`]). Defaults to `true`.
    pub dashboard: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: PathBuf::from("data/admin-token"),
            public_metrics: None,
            tokens: Vec::new(),
            dashboard: true,
        }
    }
}

/// One `[[admin.tokens]]` entry. Its token is encrypted under the key path
/// `admin.tokens.<name>.token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AdminToken {
    /// The token's name: the actor of the audit records of its writes, and what access lines
    /// show. Letters, digits, `-`, `_` and `.`; unique.
    pub name: String,
    /// The bearer token (secret; `ENC:` allowed; at least 16 characters, 32 or more advised:
    /// `qiflow keygen` prints one).
    #[serde(skip_serializing)]
    pub token: Secret,
    /// What it may do. Defaults to `"read"`.
    pub scope: TokenScope,
}

impl AdminToken {
    /// A token named `name` with `scope`.
    pub fn new(name: impl Into<String>, token: impl Into<Secret>, scope: TokenScope) -> Self {
        Self {
            name: name.into(),
            token: token.into(),
            scope,
        }
    }
}

/// What an operator token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TokenScope {
    /// Read every view: detailed health, `/metrics`, `/qiflow/api/*` and the pages.
    #[default]
    Read,
    /// Read, and change state: create and delete silences and the other writes of
    /// `/qiflow/api/*`, each audited.
    Write,
}

impl TokenScope {
    /// `"read"` or `"write"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// `[server]`: where the examples listen (also `QIFLOW_ADDR`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Listen address. Defaults to `127.0.0.1:3000`.
    pub addr: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        }
    }
}

/// One `[[jobs]]` entry: a scheduled job (a backup, a cleanup, a report) that checks in with
/// qiflow, from Rust ([`Observer::job`](crate::Observer::job)) or over HTTP, and is alerted on
/// when it is late, misses a run or fails. See [`crate::jobs`].
///
/// ```toml
/// [[jobs]]
/// name = "nightly-backup"
/// schedule = "0 3 * * *"          # or: every = "1h"
/// timezone = "Europe/Berlin"
/// grace = "30m"
/// max_runtime = "2h"
/// expect_file = "/var/backups/db-*.sql.gz"
/// min_size = "1MiB"
/// max_age = "26h"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JobConfig {
    /// The job's name: letters, digits, `-`, `_` and `.`; unique. It is the `job` label of the
    /// job's metrics and alerts and the `{name}` of its HTTP check-ins.
    pub name: String,
    /// When it runs: a cron expression (five fields, minute first, or six with seconds first;
    /// `@daily` and the like), read in `timezone`. Exactly one of `schedule` and `every`.
    pub schedule: Option<String>,
    /// The IANA time zone `schedule` is read in (`"Europe/Berlin"`). Defaults to `"UTC"`.
    pub timezone: String,
    /// When it runs: every this long after its last start (`"1h"`). Exactly one of `schedule`
    /// and `every`.
    #[serde(with = "units::option_duration")]
    pub every: Option<Duration>,
    /// How late a start may be before the job is `late`. Defaults to `"5m"`.
    #[serde(with = "units::duration")]
    pub grace: Duration,
    /// A run still going after this long has failed. Defaults to unset (no limit).
    #[serde(with = "units::option_duration")]
    pub max_runtime: Option<Duration>,
    /// A glob of the file a successful run leaves (a backup): after each success, the newest
    /// match must exist, be readable (a `.gz` file must decompress to its end), hold at least
    /// `min_size` bytes and be younger than `max_age`, or the run fails. Defaults to unset.
    pub expect_file: Option<String>,
    /// The smallest size of `expect_file`'s newest match. Defaults to `1` byte (an empty file
    /// fails).
    #[serde(with = "units::size")]
    pub min_size: u64,
    /// The oldest `expect_file`'s newest match may be at a success. Defaults to unset.
    #[serde(with = "units::option_duration")]
    pub max_age: Option<Duration>,
    /// Labels added to the job's alerts (`team = "db"`), for channel matchers and silences.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The channels (`[[alerts.channels]]` names) the job's alerts go to. Defaults to none:
    /// every channel whose level and matchers take them.
    pub alert_channels: Vec<String>,
    /// Whether runs missed while the service itself was down raise alerts after a restart.
    /// Defaults to `false`: a restart starts the job's clock anew.
    pub alert_missed_while_down: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            schedule: None,
            timezone: "UTC".into(),
            every: None,
            grace: Duration::from_secs(300),
            max_runtime: None,
            expect_file: None,
            min_size: 1,
            max_age: None,
            labels: std::collections::BTreeMap::new(),
            alert_channels: Vec::new(),
            alert_missed_while_down: false,
        }
    }
}

/// `[authz]`: permission checks. Permissions are `resource:action` strings with `*` wildcards
/// (`orders:*`, `*:read`); roles grant them and may inherit other roles; users get roles here
/// (`[authz.users]`) and from the host's authentication at request time. See [`crate::authz`].
///
/// ```toml
/// [authz.roles.viewer]
/// permissions = ["orders:read"]
///
/// [authz.roles.admin]
/// inherits = ["viewer"]
/// permissions = ["orders:*"]
///
/// [authz.users]
/// demo = ["viewer"]
/// admin = ["admin"]
///
/// [authz]
/// audit_grants = "writes"
/// deny_status = 403
///
/// [authz.denial_alert]
/// count = 20
/// window = "5m"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AuthzConfig {
    /// The roles, by name (`[authz.roles.NAME]`). Defaults to none.
    pub roles: std::collections::BTreeMap<String, RoleConfig>,
    /// Roles by user id (`demo = ["viewer"]`), added to those the host's authentication gives.
    /// Defaults to none.
    pub users: std::collections::BTreeMap<String, Vec<String>>,
    /// Which granted checks write an audit record (denials always do). Defaults to `"none"`.
    pub audit_grants: AuditGrants,
    /// The status a guard answers when the principal lacks the permission (a 4xx). Defaults to
    /// `403`.
    pub deny_status: u16,
    /// An alert when one actor is denied `count` times within `window` (the shape of a probing
    /// or a broken client). `count = 0` turns it off. Defaults to 20 in `"5m"`.
    pub denial_alert: DenialAlertConfig,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        Self {
            roles: std::collections::BTreeMap::new(),
            users: std::collections::BTreeMap::new(),
            audit_grants: AuditGrants::None,
            deny_status: 403,
            denial_alert: DenialAlertConfig::default(),
        }
    }
}

/// `[authz] audit_grants`: which granted checks are audited (action `authz.granted`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditGrants {
    /// No grant is audited (denials always are).
    #[default]
    None,
    /// Grants to requests that may change something: any method but `GET`, `HEAD`, `OPTIONS`
    /// and `TRACE`.
    Writes,
    /// Every grant.
    All,
}

/// `[authz.denial_alert]`: denials of one actor that raise the `authz_denials` alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DenialAlertConfig {
    /// This many denials of one actor within `window` raise the alert; `0` turns it off.
    /// Defaults to 20.
    pub count: u32,
    /// The sliding window. Defaults to `"5m"`.
    #[serde(with = "units::duration")]
    pub window: Duration,
}

impl Default for DenialAlertConfig {
    fn default() -> Self {
        Self {
            count: 20,
            window: Duration::from_secs(300),
        }
    }
}

/// One `[authz.roles.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RoleConfig {
    /// The roles whose permissions this one has too. Defaults to none.
    pub inherits: Vec<String>,
    /// The permissions it grants (`resource:action`, `*` in either part). Defaults to none.
    pub permissions: Vec<String>,
}

/// `[dependencies.NAME]`: how qiflow watches the dependency registered as `NAME`
/// ([`Observer::dependency`](crate::Observer::dependency)).
///
/// ```toml
/// [dependencies.main-db]
/// slow = "2s"
/// max_pending = 10
/// critical = true
/// timeout = "2s"
/// cache = "1s"
/// error_ratio = 0.05
/// error_window = "1m"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DependencyConfig {
    /// A call that takes this long or longer is slow: logged, counted and alerted. Defaults
    /// to 2 s.
    #[serde(with = "units::duration")]
    pub slow: Duration,
    /// More callers than this waiting for a connection saturate the pool (alert
    /// `dependency_saturated`). Defaults to unset: only an acquire that timed out does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u64>,
    /// Whether its failing readiness check fails `/health/ready` (`true`) or only degrades it.
    /// Defaults to `true`.
    pub critical: bool,
    /// How long its readiness check may take. Defaults to 2 s.
    #[serde(with = "units::duration")]
    pub timeout: Duration,
    /// How long a readiness result is reused, so a burst of probes pings once. Defaults to 1 s.
    #[serde(with = "units::duration")]
    pub cache: Duration,
    /// The share of calls (0 to 1) that may fail over `error_window` before the alert
    /// `dependency_errors` is raised; judged once the window holds at least
    /// [`dependency::MIN_CALLS`](crate::dependency::MIN_CALLS) calls. Defaults to 0.05, as the
    /// shipped rule `QiflowDependencyErrors`.
    pub error_ratio: f64,
    /// The window over which `error_ratio` is judged, every sampling tick (5 s). Defaults to
    /// 1 minute.
    #[serde(with = "units::duration")]
    pub error_window: Duration,
}

impl Default for DependencyConfig {
    fn default() -> Self {
        Self {
            slow: Duration::from_secs(2),
            max_pending: None,
            critical: true,
            timeout: Duration::from_secs(2),
            cache: Duration::from_secs(1),
            error_ratio: 0.05,
            error_window: Duration::from_secs(60),
        }
    }
}
