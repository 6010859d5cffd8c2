//! Deployments: every start of the service is recorded (version, commit, host, a hash of the
//! effective configuration, start time) in `<[service] state_dir>/deployments.json`, the last
//! [`KEEP`] of them, newest first, and served at `GET /qiflow/api/deployments`. `init` also
//! writes it as an audit event (`service.deployed`) and a `qiflow::deploy` log line, and sets
//! `qiflow_deployment_timestamp_seconds` (Grafana annotations:
//! `changes(qiflow_deployment_timestamp_seconds[2m]) > 0`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::config::Config;

pub(crate) mod instance;
pub use instance::FILE as INSTANCE_FILE;
use instance::host_name;

/// The deployments kept in the state file.
pub const KEEP: usize = 50;

/// One start of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deployment {
    /// `[service] name`.
    pub service: String,
    /// `[service] environment`.
    pub environment: String,
    /// `[service] version`.
    pub version: String,
    /// `[service] commit`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The host name.
    pub host: String,
    /// `[service] instance` (or the generated id). Absent from records made before instances
    /// had ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// SHA-256 of the effective configuration without its secrets (hex, first 16 digits): two
    /// starts with the same hash ran the same settings.
    pub config_hash: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

impl Deployment {
    /// The deployment of a service started at `at` with `config`.
    pub(crate) fn of(config: &Config, at: SystemTime) -> Self {
        let service = &config.service;
        Self {
            service: service.name.clone(),
            environment: service.environment.clone(),
            version: service.version.clone(),
            commit: Some(service.commit.clone()).filter(|c| !c.is_empty()),
            host: host_name(),
            instance: service.instance.clone(),
            config_hash: config_hash(config),
            started_at: crate::alert::rfc3339(at),
        }
    }
}

/// SHA-256 of the configuration as it serializes (secret keys never serialize), hex, the first
/// 16 digits.
pub fn config_hash(config: &Config) -> String {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    let digest = sha2::Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}

/// The deployments recorded so far, newest first.
#[derive(Debug)]
pub(crate) struct Deployments {
    list: Mutex<Vec<Deployment>>,
}

impl Deployments {
    /// Reads the state file in `state_dir` (when set), puts `this` first, keeps [`KEEP`], and
    /// writes it back (atomically, `0600`). A file that cannot be read or written is an error
    /// naming it.
    pub(crate) fn record(state_dir: &Path, this: Deployment) -> Result<Self, String> {
        let file: Option<PathBuf> =
            (!state_dir.as_os_str().is_empty()).then(|| state_dir.join("deployments.json"));
        let mut list = match &file {
            Some(path) => read(path)?,
            None => Vec::new(),
        };
        list.insert(0, this);
        list.truncate(KEEP);
        if let Some(path) = &file {
            let bytes = serde_json::to_vec_pretty(&list).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(state_dir)
                .and_then(|()| crate::files::write_atomic(path, &bytes, 0o600))
                .map_err(|e| {
                    format!(
                        "service.state_dir: cannot write {}: {e}; make the directory writable, or set [service] state_dir = \"\" to keep no state",
                        path.display()
                    )
                })?;
        }
        Ok(Self {
            list: Mutex::new(list),
        })
    }

    /// Newest first.
    pub(crate) fn list(&self) -> Vec<Deployment> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn read(path: &Path) -> Result<Vec<Deployment>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "service.state_dir: cannot parse {} ({e}); move it away to start the list anew",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!(
            "service.state_dir: cannot read {}: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_hash_follows_the_settings_and_never_the_secrets() {
        let mut config = crate::Config::default();
        let base = config_hash(&config);
        assert_eq!(base, config_hash(&config.clone()));
        config.errors.sentry_dsn = Some(crate::secret::Secret::new(
            "https://key@sentry.example/1".to_owned(),
        ));
        assert_eq!(config_hash(&config), base, "a secret changed the hash");
        config.logging.level = "debug".into();
        assert_ne!(config_hash(&config), base);
    }

    #[test]
    fn each_start_is_kept_newest_first_up_to_keep() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config::default();
        for i in 0..(KEEP + 3) {
            let mut d = Deployment::of(&config, SystemTime::UNIX_EPOCH);
            d.version = format!("1.0.{i}");
            Deployments::record(dir.path(), d).unwrap();
        }
        let last = Deployments::record(dir.path(), Deployment::of(&config, SystemTime::now()))
            .unwrap()
            .list();
        assert_eq!(last.len(), KEEP);
        assert_eq!(last[0].version, "0.0.0");
        assert_eq!(last[1].version, format!("1.0.{}", KEEP + 2));
    }
}
