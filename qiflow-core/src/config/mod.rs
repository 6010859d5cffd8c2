//! Configuration: the `qiflow.toml` sections, their defaults, and how they are loaded.
//!
//! A [`Config`] comes from, in increasing priority:
//!
//! 1. the defaults documented on each field;
//! 2. a TOML file: the path given to [`Loader::file`], else `QIFLOW_CONFIG`, else `./qiflow.toml`
//!    when it exists;
//! 3. a `.env` file in the working directory (`KEY=value` lines);
//! 4. the process environment. Any key can be overridden as `QIFLOW__SECTION__KEY`
//!    (double underscores nest, e.g. `QIFLOW__LOGGING__MAX_BACKUPS=3`; elements of
//!    `[[alerts.channels]]` by index, `QIFLOW__ALERTS__CHANNELS__0__URL`).
//!
//! Nothing here modifies the process environment. `ENC:` values are decrypted with the keyring
//! from `QIFLOW_MASTER_KEY` / `QIFLOW_MASTER_KEY_FILE` (see [`crate::secret`]). Unknown keys are
//! errors naming their full path, and values are range-checked after load.
//!
//! ```
//! use qiflow_core::config::Loader;
//!
//! let config = Loader::new()
//!     .toml_str("[service]\nname = \"checkout\"\n[logging]\nmax_size = \"64MiB\"\n")
//!     .env([("QIFLOW__LOGGING__LEVEL", "debug")])
//!     .load()
//!     .unwrap();
//! assert_eq!(config.service.name, "checkout");
//! assert_eq!(config.logging.level, "debug");
//! assert_eq!(config.logging.max_size, 64 * 1024 * 1024);
//!
//! let err = Loader::new().toml_str("[logging]\nlevl = \"debug\"\n").env::<[(&str, &str); 0], _, _>([]).load().unwrap_err();
//! assert!(err.to_string().contains("logging.levl"));
//! ```

mod error;
mod files;
mod load;
mod secret_keys;
mod sections;
pub mod units;
mod validate;

pub use error::{ConfigError, Problem, ProblemKind};
pub(crate) use error::{Findings, check_url, needs_feature};
pub use files::{PrivateFile, check_private_files};
pub use load::{CONFIG_ENV, ENV_PREFIX, Loader};
pub use secret_keys::{SECRET_KEYS, is_credential_header, is_secret_key};
pub use sections::*;
pub(crate) use validate::is_instance_id;
