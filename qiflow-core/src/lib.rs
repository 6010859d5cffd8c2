//! qiflow-core: the framework-free heart of qiflow, the production-readiness kit for Rust web
//! services.
//!
//! # Quick start
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // The files this example would make in ./data (state, the operator token) go to a
//! # // temporary directory instead, so running the doctest leaves nothing in the source tree.
//! # let dir = tempfile::tempdir()?;
//! # let under = |name: &str| dir.path().join(name).display().to_string();
//! # let files = [
//! #     ("QIFLOW__ALERTS__STATE_FILE", under("alerts.json")),
//! #     ("QIFLOW__BASELINE__STATE_FILE", under("baselines.json")),
//! #     ("QIFLOW__ADMIN__TOKEN_FILE", under("admin-token")),
//! #     ("QIFLOW__SERVICE__STATE_DIR", under("state")),
//! # ];
//! // Load `qiflow.toml` (or `QIFLOW_CONFIG`), `.env` and `QIFLOW__…` overrides; decrypt `ENC:`
//! // values; validate. Here from inline TOML:
//! let config = qiflow_core::config::Loader::new()
//!     .toml_str(
//!         r#"
//!         [service]
//!         name = "checkout"
//!         version = "1.4.2"
//!         [logging]
//!         dir = ""        # stdout only in this example; the default writes ./logs/app.log
//!         [audit]
//!         enabled = false
//!         "#,
//!     )
//! #   .env(files)
//!     .load()?;
//! let (observer, _guard) = qiflow_core::init(&config)?;
//!
//! let live = observer.liveness();
//! assert_eq!(live.http_status(), 200);
//! assert_eq!(live.service, "checkout");
//! // `_guard` flushes every pipeline, within its budget, when `main` returns.
//! # Ok(()) }
//! ```
//!
//! # What is where
//!
//! - [`capture`]: error capture: reports from panics, handler errors and `error!` events, the
//!   local [`ErrorStore`](capture::ErrorStore), and forwarding to Sentry.
//! - [`config`]: the `qiflow.toml` sections and the [`Loader`](config::Loader); [`check`]: each
//!   capability's checks of its section, and what `qiflow check` reports.
//! - [`secret`]: `ENC:v1:` values, the [`Keyring`](secret::Keyring), the redacting
//!   [`Secret`](secret::Secret).
//! - [`Observer`], [`ObserverBuilder`], [`Guard`]: the hub and its flush-on-drop guard.
//! - [`worker`]: the background runtime, bounded [`Pipeline`](worker::Pipeline)s and the
//!   [`Sink`](worker::Sink) trait every pipeline writes to.
//! - [`admin`]: the operator surface ([`Observer::admin`]): every qiflow endpoint, behind the
//!   operator token.
//! - [`health`]: the health report of the `/health/*` endpoints.
//! - [`logging`]: the JSON log layer, redaction, and the rotating file.
//! - [`metrics`]: qiflow's Prometheus recorder and the HTTP server metrics.
//! - [`audit`]: the tamper-evident audit trail ([`Observer::audit`], the file and PostgreSQL
//!   sinks, [`audit::verify_dir`]).
//! - [`request`]: what adapters hand the core per request ([`Observer::begin_request`]).
//! - [`propagation`]: W3C trace context (`traceparent`) in and out of a request; `export`
//!   (feature `otlp`): sampled requests and their child spans to an OTLP collector.
//! - [`alert`]: alerts, their routing and the channels ([`Observer::alert`]).
//! - `test` (feature `test`): test doubles.
//!
//! # Cargo features
//!
//! The transports are features, so a service compiles only those it uses:
//!
//! - `sentry` (default): forwarding reports to Sentry (`capture::SentryReporter`).
//! - `email` (default): the email alert channel (lettre).
//! - `http-channels` (default): the webhook, Slack, DingTalk, SMS and Alertmanager channels
//!   (reqwest).
//! - `postgres`: the PostgreSQL audit sink and `qiflow audit verify --postgres`.
//! - `zstd`: zstd compression of rotated log files (without it, gzip).
//! - `otlp`: OTLP export of sampled requests as spans (`[tracing] otlp_endpoint`).
//! - `reqwest`: [`propagation::inject`] into a `reqwest::header::HeaderMap`.
//! - `cli`: the `qiflow` binary (it turns on `postgres`); `test`: the test doubles.
//!
//! With `default-features = false`, qiflow logs, captures errors into its local store, keeps
//! metrics, baselines, health and the file audit trail, and alerts to the log. A configuration
//! that names a part the build lacks (a `sentry_dsn`, a `slack` channel, the `postgres` sink)
//! fails to load with a [`ProblemKind::MissingFeature`](config::ProblemKind::MissingFeature)
//! problem naming the feature to turn on.
//!
//! The `qiflow` command-line tool (feature `cli`) generates keys, encrypts and decrypts values,
//! and checks configuration files: `cargo run -p qiflow-core --features cli --bin qiflow -- --help`.

pub mod admin;
pub mod alert;
pub mod audit;
pub mod authz;
pub mod baseline;
pub mod capture;
pub mod check;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod dependency;
pub mod deploy;
#[cfg(feature = "otlp")]
pub mod export;
mod files;
pub mod health;
pub mod jobs;
pub mod logging;
pub mod metrics;
mod observer;
pub mod propagation;
pub mod request;
mod retry;
#[cfg(any(feature = "sentry", feature = "http-channels"))]
mod retry_after;
mod scope;
pub mod secret;
mod system;
#[cfg(feature = "test")]
pub mod test;
pub mod worker;

pub use config::Config;
pub use observer::{Guard, InitError, InitErrorKind, Observer, ObserverBuilder};

/// Builds the [`Observer`] and its [`Guard`] from a loaded [`Config`], with default settings.
///
/// Use [`Observer::builder`] to change the flush budget or the worker threads.
pub fn init(config: &Config) -> Result<(Observer, Guard), InitError> {
    Observer::builder(config.clone()).build()
}
