//! Encrypted configuration values and the secret type they decrypt into.
//!
//! A secret-bearing configuration key (a DSN, a password, a token, a webhook secret) holds either a
//! plain value or an encrypted one:
//!
//! ```text
//! ENC:v1:<key-id>:<base64url(nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! The cipher is AES-256-GCM with a fresh random 96-bit nonce per value, and the configuration key
//! path (for example `audit.postgres_url`) is the associated data, so a value copied to another key
//! fails to decrypt. Keys live in a [`Keyring`]: the first key encrypts, every key decrypts (found
//! by its id), so keys rotate without re-encrypting everything at once.
//!
//! ```
//! use qiflow_core::secret::Keyring;
//!
//! let keyring = Keyring::parse(&Keyring::generate_key()).unwrap();
//! let enc = keyring.encrypt("database.password", "hunter2").unwrap();
//! assert!(enc.starts_with("ENC:v1:"));
//! let plain = keyring.decrypt("database.password", &enc).unwrap();
//! assert_eq!(plain.expose(), "hunter2");
//! assert_eq!(format!("{plain:?}"), "[REDACTED]");
//! // The same value under another key path does not decrypt.
//! assert!(keyring.decrypt("errors.sentry_dsn", &enc).is_err());
//! ```

mod error;
mod keyring;
mod value;

pub use error::{SecretError, SecretErrorKind};
pub use keyring::{KeyId, Keyring, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV};
pub use value::Secret;

/// The prefix that marks an encrypted value.
pub const ENC_PREFIX: &str = "ENC:";

/// Whether `value` looks like an encrypted value (starts with `ENC:`).
pub fn is_encrypted(value: &str) -> bool {
    value.starts_with(ENC_PREFIX)
}
