//! Operator tokens: the configured ones, the one qiflow makes when none is configured, and the
//! constant-time check of a presented bearer token.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminConfig, HealthConfig, TokenScope};

/// The name of the token qiflow makes and keeps in `[admin] token_file`.
pub(crate) const GENERATED_NAME: &str = "admin";

/// The name of the `[health] token`.
pub(crate) const HEALTH_NAME: &str = "health";

/// The random bytes of a generated token (256 bits).
const GENERATED_BYTES: usize = 32;

/// The shortest token accepted from a token file (64 hex digits are written).
const MIN_FILE_TOKEN_LEN: usize = 32;

/// Who sent an operator request, once its token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The operator listener (`[admin] listen`): trusted.
    Listener,
    /// A known token.
    Token { name: String, scope: TokenScope },
    /// No `Authorization: Bearer` header.
    Anonymous,
    /// A bearer token that matches none.
    Unknown,
}

impl Caller {
    /// The actor of audit records and access lines.
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Listener => "operator-listener",
            Self::Token { name, .. } => name,
            Self::Anonymous => "anonymous",
            Self::Unknown => "unknown-token",
        }
    }

    /// What the caller may do: `None` for strangers.
    pub(crate) fn scope(&self) -> Option<TokenScope> {
        match self {
            Self::Listener => Some(TokenScope::Write),
            Self::Token { scope, .. } => Some(*scope),
            Self::Anonymous | Self::Unknown => None,
        }
    }
}

struct Entry {
    name: String,
    /// SHA-256 of the token: every comparison has the same length, whatever was presented.
    digest: [u8; 32],
    scope: TokenScope,
}

/// The tokens the operator surface accepts.
pub(crate) struct Tokens {
    entries: Vec<Entry>,
    /// Where the generated token is, when qiflow made (or reused) one.
    generated: Option<PathBuf>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "names",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .field("generated", &self.generated)
            .finish()
    }
}

/// What [`Tokens::from_config`] found worth a warning (a token file readable by others).
pub(crate) type Warnings = Vec<String>;

impl Tokens {
    /// The configured tokens (`[[admin.tokens]]`, `[health] token`); when there are none and
    /// `[admin] token_file` is set, the token kept in that file, made first when missing.
    /// With `[admin] listen` set no token is made: the operator surface is on the listener.
    pub(crate) fn from_config(
        admin: &AdminConfig,
        health: &HealthConfig,
        listener: Option<std::net::SocketAddr>,
    ) -> Result<(Self, Warnings), String> {
        let mut entries: Vec<Entry> = admin
            .tokens
            .iter()
            .map(|t| Entry::new(&t.name, t.token.expose(), t.scope))
            .collect();
        if let Some(token) = health.token.as_ref().filter(|t| !t.is_empty()) {
            entries.push(Entry::new(HEALTH_NAME, token.expose(), TokenScope::Write));
        }
        let mut warnings = Vec::new();
        let mut generated = None;
        if entries.is_empty() && listener.is_none() && !admin.token_file.as_os_str().is_empty() {
            let path = &admin.token_file;
            let token = load_or_create(path, &mut warnings)?;
            entries.push(Entry::new(GENERATED_NAME, &token, TokenScope::Write));
            generated = Some(path.clone());
        }
        Ok((Self { entries, generated }, warnings))
    }

    /// The file holding the token qiflow made, when it made (or reused) one.
    pub(crate) fn generated(&self) -> Option<&Path> {
        self.generated.as_deref()
    }

    /// Whether any token is accepted.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Who sent a request with this `Authorization` header value (`trusted`: the operator
    /// listener). Every known token is compared, in constant time, whichever matches.
    pub(crate) fn caller(&self, authorization: Option<&str>, trusted: bool) -> Caller {
        if trusted {
            return Caller::Listener;
        }
        let Some(presented) = authorization.and_then(bearer) else {
            return Caller::Anonymous;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        match found {
            Some(entry) => Caller::Token {
                name: entry.name.clone(),
                scope: entry.scope,
            },
            None => Caller::Unknown,
        }
    }
}

impl Entry {
    fn new(name: &str, token: &str, scope: TokenScope) -> Self {
        Self {
            name: name.to_owned(),
            digest: Sha256::digest(token.as_bytes()).into(),
            scope,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads the token kept in `path`, or makes one there (256 random bits, hex, mode `0600`).
fn load_or_create(path: &Path, warnings: &mut Warnings) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return read_token(path, &text, warnings),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "admin.token_file: cannot read {}: {e}; fix its permissions, or configure \
                 [[admin.tokens]] and set admin.token_file = \"\"",
                path.display()
            ));
        }
    }
    let token = new_token();
    let created = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()
    })();
    match created {
        Ok(()) => Ok(token),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("admin.token_file: cannot read {}: {e}", path.display()))?;
            read_token(path, &text, warnings)
        }
        Err(e) => Err(format!(
            "admin.token_file: cannot create {}: {e}; make its directory writable, set \
             admin.token_file to a writable path, or configure [[admin.tokens]]",
            path.display()
        )),
    }
}

fn read_token(path: &Path, text: &str, warnings: &mut Warnings) -> Result<String, String> {
    let token = text.trim();
    if token.len() < MIN_FILE_TOKEN_LEN || token.contains(char::is_whitespace) {
        return Err(format!(
            "admin.token_file: {} does not hold a token (one word of at least \
             {MIN_FILE_TOKEN_LEN} characters); delete it and qiflow makes a new one",
            path.display()
        ));
    }
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "admin.token_file: {} has mode {mode:04o}: others can read the operator token; \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = warnings;
    Ok(token.to_owned())
}

/// 256 random bits from the operating system, as 64 hex digits.
fn new_token() -> String {
    use aes_gcm::aead::rand_core::RngCore;
    let mut bytes = [0u8; GENERATED_BYTES];
    aes_gcm::aead::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminToken;

    fn config(tokens: Vec<AdminToken>) -> (AdminConfig, HealthConfig) {
        let admin = AdminConfig {
            tokens,
            token_file: PathBuf::new(),
            ..AdminConfig::default()
        };
        (admin, HealthConfig::default())
    }

    fn with_file(token_file: PathBuf) -> AdminConfig {
        AdminConfig {
            token_file,
            ..AdminConfig::default()
        }
    }

    #[test]
    fn known_tokens_name_their_caller_and_scope() {
        let (admin, health) = config(vec![
            AdminToken::new("ci", "r".repeat(32), TokenScope::Read),
            AdminToken::new("oncall", "w".repeat(32), TokenScope::Write),
        ]);
        let (tokens, _) = Tokens::from_config(&admin, &health, admin.listen).unwrap();
        let read = format!("Bearer {}", "r".repeat(32));
        assert_eq!(
            tokens.caller(Some(&read), false),
            Caller::Token {
                name: "ci".into(),
                scope: TokenScope::Read
            }
        );
        let write = format!("bearer   {} ", "w".repeat(32));
        assert_eq!(
            tokens.caller(Some(&write), false).scope(),
            Some(TokenScope::Write)
        );
        assert_eq!(tokens.caller(None, false), Caller::Anonymous);
        assert_eq!(tokens.caller(Some("Bearer "), false), Caller::Anonymous);
        assert_eq!(
            tokens.caller(Some(&format!("Basic {}", "r".repeat(32))), false),
            Caller::Anonymous
        );
        assert_eq!(
            tokens.caller(Some(&format!("Bearer {}x", "r".repeat(32))), false),
            Caller::Unknown
        );
        assert_eq!(tokens.caller(None, true), Caller::Listener);
    }

    #[test]
    fn a_token_is_made_once_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/admin-token");
        let admin = with_file(path.clone());
        let health = HealthConfig::default();
        let (tokens, warnings) = Tokens::from_config(&admin, &health, admin.listen).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(tokens.generated(), Some(path.as_path()));
        let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            tokens
                .caller(Some(&format!("Bearer {token}")), false)
                .scope(),
            Some(TokenScope::Write)
        );
        // The next start reuses it.
        let (again, _) = Tokens::from_config(&admin, &health, admin.listen).unwrap();
        assert_eq!(
            again.caller(Some(&format!("Bearer {token}")), false).name(),
            GENERATED_NAME
        );
        // A different process's file is another token.
        assert_ne!(new_token(), token);
    }

    #[test]
    fn no_token_is_made_when_one_is_configured_or_on_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let mut admin = with_file(dir.path().join("admin-token"));
        admin.tokens = vec![AdminToken::new("ops", "o".repeat(32), TokenScope::Read)];
        let (tokens, _) =
            Tokens::from_config(&admin, &HealthConfig::default(), admin.listen).unwrap();
        assert!(tokens.generated().is_none());
        assert!(!admin.token_file.exists());

        admin.tokens.clear();
        admin.listen = Some(([127, 0, 0, 1], 0).into());
        let (tokens, _) =
            Tokens::from_config(&admin, &HealthConfig::default(), admin.listen).unwrap();
        assert!(tokens.is_empty());
        assert!(!admin.token_file.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_warned_about_and_a_bad_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        std::fs::write(&path, format!("{}\n", "a".repeat(64))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let admin = with_file(path.clone());
        let (_, warnings) =
            Tokens::from_config(&admin, &HealthConfig::default(), admin.listen).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("chmod 600"), "{}", warnings[0]);

        std::fs::write(&path, "short\n").unwrap();
        let e = Tokens::from_config(&admin, &HealthConfig::default(), admin.listen).unwrap_err();
        assert!(
            e.contains("admin.token_file") && e.contains("delete it"),
            "{e}"
        );
    }

    #[test]
    fn an_unwritable_token_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let admin = with_file(blocker.join("admin-token"));
        let e = Tokens::from_config(&admin, &HealthConfig::default(), admin.listen).unwrap_err();
        assert!(
            e.starts_with("admin.token_file: cannot") && e.contains("[[admin.tokens]]"),
            "{e}"
        );
    }
}
