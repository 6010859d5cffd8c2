use std::fmt;

/// What went wrong with a key or an encrypted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretErrorKind {
    /// Neither `QIFLOW_MASTER_KEY` nor `QIFLOW_MASTER_KEY_FILE` is set.
    NoKey,
    /// A key is not valid base64, not 256 bits long, or has a malformed id.
    InvalidKey,
    /// The key file could not be read.
    KeyFile,
    /// The value is not of the form `ENC:v1:<key-id>:<base64url>`.
    Malformed,
    /// The value names an envelope version this build does not know.
    UnknownVersion,
    /// The value names a key id that is not in the keyring.
    UnknownKeyId,
    /// Authentication failed: wrong key, altered ciphertext, or a value moved to another key path.
    Decrypt,
    /// The decrypted bytes are not UTF-8.
    NotUtf8,
    /// The plaintext is beyond what AES-GCM may encrypt in one message.
    TooLong,
}

/// An error about a key or an encrypted value.
///
/// It names the configuration key path (where known) and says what to do. It never contains key
/// material or plaintext.
#[derive(Debug, Clone)]
pub struct SecretError {
    kind: SecretErrorKind,
    path: Option<String>,
    detail: String,
}

impl SecretError {
    pub(crate) fn new(kind: SecretErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            path: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn at(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> SecretErrorKind {
        self.kind
    }

    /// The configuration key path the value belongs to, when known.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The message without the key path prefix.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl std::error::Error for SecretError {}
