use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{ENC_PREFIX, Secret, SecretError, SecretErrorKind};

/// The environment variable holding the master key(s), base64.
pub const MASTER_KEY_ENV: &str = "QIFLOW_MASTER_KEY";
/// The environment variable naming a file that holds the master key(s).
pub const MASTER_KEY_FILE_ENV: &str = "QIFLOW_MASTER_KEY_FILE";

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_ID_LEN: usize = 32;

/// The id of a key in a [`Keyring`], as written in `ENC:v1:<key-id>:…`.
///
/// Ids are 1 to 32 characters of `A-Z a-z 0-9 _ -`. A key given without an explicit id gets
/// `k` followed by the first 8 hex digits of the key's SHA-256, so the same key always has the
/// same id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Validates an explicit key id.
    pub fn new(id: &str) -> Result<Self, SecretError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(SecretError::new(
                SecretErrorKind::InvalidKey,
                format!(
                    "invalid key id {id:?}: use 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"
                ),
            ))
        }
    }

    fn derived(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        Self(format!("k{}", hex::encode(&digest[..4])))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Entry {
    id: KeyId,
    cipher: Aes256Gcm,
}

/// A set of AES-256 keys: the first encrypts, all decrypt (chosen by key id).
///
/// The keyring is given as text, in `QIFLOW_MASTER_KEY`, in the file named by
/// `QIFLOW_MASTER_KEY_FILE`, or to [`Keyring::parse`]: keys separated by commas or new lines, each
/// `base64` or `id:base64` (standard or URL-safe base64 of exactly 32 bytes). To rotate, put the
/// new key first and keep the old one after it until every value has been re-encrypted.
///
/// `Debug` never shows key material.
pub struct Keyring {
    keys: Vec<Entry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Generates a new random 256-bit key, base64-encoded (what `qiflow keygen` prints).
    pub fn generate_key() -> String {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        STANDARD.encode(key.as_slice())
    }

    /// Parses a keyring: keys separated by commas or new lines, each `base64` or `id:base64`.
    ///
    /// Blank entries and lines starting with `#` are ignored. Fails when no key is given, when a
    /// key is not base64 of 32 bytes, or when two keys share an id.
    pub fn parse(spec: &str) -> Result<Self, SecretError> {
        let mut keys: Vec<Entry> = Vec::new();
        let entries = spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'));
        for (n, entry) in entries.enumerate() {
            let (id, encoded) = match entry.split_once(':') {
                Some((id, rest)) => (Some(KeyId::new(id.trim())?), rest.trim()),
                None => (None, entry),
            };
            let key = decode_key(encoded).map_err(|why| {
                SecretError::new(
                    SecretErrorKind::InvalidKey,
                    format!(
                        "master key #{}: {why}; generate one with `qiflow keygen`",
                        n + 1
                    ),
                )
            })?;
            let id = id.unwrap_or_else(|| KeyId::derived(&key));
            if keys.iter().any(|k| k.id == id) {
                return Err(SecretError::new(
                    SecretErrorKind::InvalidKey,
                    format!("master key #{}: key id {id} is used twice", n + 1),
                ));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_slice()));
            keys.push(Entry { id, cipher });
        }
        if keys.is_empty() {
            return Err(SecretError::new(
                SecretErrorKind::InvalidKey,
                "the master key is empty; generate one with `qiflow keygen`",
            ));
        }
        Ok(Self { keys })
    }

    /// Reads the keyring from `QIFLOW_MASTER_KEY` or, failing that, the file named by
    /// `QIFLOW_MASTER_KEY_FILE`, through `lookup` (so callers decide where variables come from;
    /// the process environment is never modified).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SecretError> {
        if let Some(spec) = lookup(MASTER_KEY_ENV).filter(|v| !v.trim().is_empty()) {
            return Self::parse(&spec).map_err(|e| {
                SecretError::new(e.kind(), format!("{MASTER_KEY_ENV}: {}", e.detail()))
            });
        }
        if let Some(file) = lookup(MASTER_KEY_FILE_ENV).filter(|v| !v.trim().is_empty()) {
            return Self::from_file(Path::new(&file));
        }
        Err(SecretError::new(
            SecretErrorKind::NoKey,
            format!(
                "no master key: set {MASTER_KEY_ENV} (base64) or {MASTER_KEY_FILE_ENV} (a file); \
                 generate a key with `qiflow keygen`"
            ),
        ))
    }

    /// Reads the keyring from the process environment (see [`Keyring::from_lookup`]).
    pub fn from_env() -> Result<Self, SecretError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the keyring from a file (same syntax as [`Keyring::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            SecretError::new(
                SecretErrorKind::KeyFile,
                format!(
                    "cannot read the master key file {} ({MASTER_KEY_FILE_ENV}): {e}",
                    path.display()
                ),
            )
        })?);
        Self::parse(&text).map_err(|e| {
            SecretError::new(
                e.kind(),
                format!("master key file {}: {}", path.display(), e.detail()),
            )
        })
    }

    /// The ids of the keys, the encrypting key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|k| &k.id)
    }

    /// The id of the key that encrypts.
    pub fn active_key_id(&self) -> &KeyId {
        &self.keys[0].id
    }

    /// Encrypts `plaintext` for the configuration key `path` with the first key, under a fresh
    /// random nonce.
    pub fn encrypt(&self, path: &str, plaintext: &str) -> Result<String, SecretError> {
        let entry = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = entry
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: path.as_bytes(),
                },
            )
            .map_err(|_| {
                SecretError::new(SecretErrorKind::TooLong, "the value is too long to encrypt")
                    .at(path)
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&ciphertext);
        Ok(format!(
            "{ENC_PREFIX}{VERSION}:{}:{}",
            entry.id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Decrypts an `ENC:v1:…` value that belongs to the configuration key `path`.
    pub fn decrypt(&self, path: &str, value: &str) -> Result<Secret, SecretError> {
        let hint = format!("re-encrypt it with `qiflow encrypt --name {path}`");
        let rest = value.trim().strip_prefix(ENC_PREFIX).ok_or_else(|| {
            SecretError::new(
                SecretErrorKind::Malformed,
                format!("not an encrypted value (no `ENC:` prefix); {hint}"),
            )
            .at(path)
        })?;
        let mut parts = rest.splitn(3, ':');
        let (Some(version), Some(kid), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretError::new(
                SecretErrorKind::Malformed,
                format!("malformed encrypted value: expected ENC:v1:<key-id>:<data>; {hint}"),
            )
            .at(path));
        };
        if version != VERSION {
            return Err(SecretError::new(
                SecretErrorKind::UnknownVersion,
                format!(
                    "unknown encrypted value version {:?} (this build reads {VERSION}); {hint}",
                    truncate(version)
                ),
            )
            .at(path));
        }
        let entry = self
            .keys
            .iter()
            .find(|k| k.id.as_str() == kid)
            .ok_or_else(|| {
                let known: Vec<&str> = self.key_ids().map(KeyId::as_str).collect();
                SecretError::new(
                    SecretErrorKind::UnknownKeyId,
                    format!(
                        "encrypted with key id {:?}, which is not in the keyring (have: {}); \
                     add that key to {MASTER_KEY_ENV} or {hint}",
                        truncate(kid),
                        known.join(", ")
                    ),
                )
                .at(path)
            })?;
        let blob = URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .map_err(|_| {
                SecretError::new(
                    SecretErrorKind::Malformed,
                    format!("the encrypted data is not valid base64url; {hint}"),
                )
                .at(path)
            })?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::new(
                SecretErrorKind::Malformed,
                format!("the encrypted data is too short to hold a nonce and a tag; {hint}"),
            )
            .at(path));
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let plaintext = Zeroizing::new(
            entry
                .cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: path.as_bytes(),
                    },
                )
                .map_err(|_| {
                    SecretError::new(
                        SecretErrorKind::Decrypt,
                        format!(
                            "cannot decrypt with key {kid}: the value was encrypted with another \
                             key, for another key path, or was altered; {hint}"
                        ),
                    )
                    .at(path)
                })?,
        );
        let text = std::str::from_utf8(&plaintext).map_err(|_| {
            SecretError::new(
                SecretErrorKind::NotUtf8,
                format!("the decrypted value is not UTF-8; {hint}"),
            )
            .at(path)
        })?;
        Ok(Secret::new(text))
    }
}

fn decode_key(encoded: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(encoded)
            .or_else(|_| URL_SAFE.decode(encoded))
            .or_else(|_| URL_SAFE_NO_PAD.decode(encoded))
            .map_err(|_| "not valid base64".to_owned())?,
    );
    if bytes.len() != 32 {
        return Err(format!(
            "{} bytes long, but an AES-256 key is 32 bytes (256 bits)",
            bytes.len()
        ));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_without_an_id_is_named_by_its_digest() {
        // 32 zero bytes; their SHA-256 starts 66687aad. Ids end up in stored `ENC:` values, so
        // the format must never change.
        let keys = Keyring::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert_eq!(keys.active_key_id().as_str(), "k66687aad");
    }
}
