//! The one list of secret-bearing keys, and the headers that look like credentials.

use super::Config;
use crate::secret::Secret;

/// Every secret-bearing key, as key-path patterns in which `*` stands for one segment: a
/// channel's `name` (or index when it has none), or a header name.
///
/// These keys deserialize into [`Secret`] (whose `Debug` and `Display` print `[REDACTED]`), accept
/// `ENC:` values encrypted for their key path, are never serialized, and are warned about by
/// `qiflow check` when they hold a plain value (headers only when their name looks like a
/// credential, see [`is_credential_header`]). An `ENC:` value in any other key is an error,
/// because its plaintext would be shown wherever the configuration is printed.
/// [`Config::secrets`] returns the ones that are set.
///
/// ```
/// use qiflow_core::config::{SECRET_KEYS, is_secret_key};
///
/// assert!(SECRET_KEYS.contains(&"errors.sentry_dsn"));
/// assert!(is_secret_key("alerts.channels.ops.url"));
/// assert!(is_secret_key("alerts.channels.0.headers.Authorization"));
/// assert!(!is_secret_key("alerts.channels.ops.username"));
/// ```
pub const SECRET_KEYS: &[&str] = &[
    "errors.sentry_dsn",
    "audit.postgres_url",
    "audit.signing_key",
    "health.token",
    "admin.tokens.*.token",
    "alerts.channels.*.url",
    "alerts.channels.*.urls.*",
    "alerts.channels.*.secret",
    "alerts.channels.*.token",
    "alerts.channels.*.password",
    "alerts.channels.*.headers.*",
    "tracing.headers.*",
];

/// Whether `path` (`alerts.channels.ops.url`) is one of the [`SECRET_KEYS`]. A trailing `*`
/// matches the rest of the path, so a header name may contain dots; a list index may also be
/// written `channels[0]`.
pub fn is_secret_key(path: &str) -> bool {
    let path = if path.contains('[') {
        std::borrow::Cow::Owned(path.replace('[', ".").replace(']', ""))
    } else {
        std::borrow::Cow::Borrowed(path)
    };
    SECRET_KEYS.iter().any(|pattern| matches(pattern, &path))
}

/// Whether `path` is a secret key or a table of them (`alerts.channels.ops.headers`): a value
/// found there must never be repeated in a message.
pub(crate) fn holds_secrets(path: &str) -> bool {
    is_secret_key(path) || is_secret_key(&format!("{path}.*"))
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut parts = path.split('.');
    let mut pattern_parts = pattern.split('.').peekable();
    while let Some(p) = pattern_parts.next() {
        let last = pattern_parts.peek().is_none();
        match parts.next() {
            None => return false,
            Some("") => return false,
            Some(_) if p == "*" && last => return true,
            Some(_) if p == "*" => {}
            Some(seg) if seg == p => {}
            Some(_) => return false,
        }
    }
    parts.next().is_none()
}

/// Whether an HTTP header of this name usually carries a credential: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, and names with a part such as `token`, `key`, `secret`,
/// `password`, `auth`, `session` or `signature` (`X-Api-Key`, `X-Auth-Token`, `Api-Secret`).
/// `qiflow check` warns when such a header holds a plain value.
///
/// ```
/// use qiflow_core::config::is_credential_header;
///
/// assert!(is_credential_header("Authorization"));
/// assert!(is_credential_header("X-Api-Key"));
/// assert!(is_credential_header("x-auth-token"));
/// assert!(!is_credential_header("Content-Type"));
/// ```
pub fn is_credential_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "apikey",
        "api_key",
    ];
    const PARTS: &[&str] = &[
        "token",
        "key",
        "apikey",
        "secret",
        "password",
        "passwd",
        "pass",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "signature",
        "sig",
    ];
    let lower = name.trim().to_ascii_lowercase();
    EXACT.contains(&lower.as_str()) || lower.split(['-', '_', '.']).any(|p| PARTS.contains(&p))
}

/// One secret-bearing key that is set.
pub(crate) struct SecretEntry<'a> {
    pub(crate) path: String,
    pub(crate) value: &'a Secret,
    /// The header name, for `alerts.channels.<c>.headers.<name>`.
    pub(crate) header: Option<&'a str>,
}

impl Config {
    /// The key paths of every secret-bearing key that is set (see [`SECRET_KEYS`]), with its
    /// value. A channel's keys are named by the channel's `name`, or its index when it has none.
    ///
    /// ```
    /// let config = qiflow_core::config::Loader::new()
    ///     .toml_str("[health]\ntoken = \"t0ken-value-1\"\n")
    ///     .env::<[(&str, &str); 0], _, _>([])
    ///     .load()
    ///     .unwrap();
    /// let secrets = config.secrets();
    /// assert_eq!(secrets.len(), 1);
    /// assert_eq!(secrets[0].0, "health.token");
    /// assert_eq!(format!("{:?}", secrets[0].1), "[REDACTED]");
    /// ```
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        self.secret_entries()
            .into_iter()
            .map(|e| (e.path, e.value))
            .collect()
    }

    pub(crate) fn secret_entries(&self) -> Vec<SecretEntry<'_>> {
        let mut all: Vec<(String, Option<&Secret>)> = vec![
            ("errors.sentry_dsn".into(), self.errors.sentry_dsn.as_ref()),
            (
                "audit.postgres_url".into(),
                self.audit.postgres_url.as_ref(),
            ),
            ("audit.signing_key".into(), self.audit.signing_key.as_ref()),
            ("health.token".into(), self.health.token.as_ref()),
        ];
        for (i, token) in self.admin.tokens.iter().enumerate() {
            let base = if token.name.is_empty() {
                format!("admin.tokens.{i}")
            } else {
                format!("admin.tokens.{}", token.name)
            };
            all.push((format!("{base}.token"), Some(&token.token)));
        }
        let mut headers = Vec::new();
        for (i, ch) in self.alerts.channels.iter().enumerate() {
            let base = ch.key_path(i);
            all.push((format!("{base}.url"), ch.url.as_ref()));
            for (j, url) in ch.urls.iter().enumerate() {
                all.push((format!("{base}.urls.{j}"), Some(url)));
            }
            all.push((format!("{base}.secret"), ch.secret.as_ref()));
            all.push((format!("{base}.password"), ch.password.as_ref()));
            all.push((format!("{base}.token"), ch.token.as_ref()));
            for (name, value) in &ch.headers {
                headers.push(SecretEntry {
                    path: format!("{base}.headers.{name}"),
                    value,
                    header: Some(name.as_str()),
                });
            }
        }
        for (name, value) in &self.tracing.headers {
            headers.push(SecretEntry {
                path: format!("tracing.headers.{name}"),
                value,
                header: Some(name.as_str()),
            });
        }
        all.into_iter()
            .filter_map(|(path, value)| {
                Some(SecretEntry {
                    path,
                    value: value?,
                    header: None,
                })
            })
            .chain(headers)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        assert!(is_secret_key("health.token"));
        assert!(!is_secret_key("health.token.x"));
        assert!(!is_secret_key("health"));
        assert!(!is_secret_key("health.tokens"));
        assert!(is_secret_key("alerts.channels.ops-slack.secret"));
        assert!(is_secret_key("alerts.channels.3.password"));
        assert!(!is_secret_key("alerts.channels.ops.signature_header"));
        assert!(!is_secret_key("alerts.channels..url"));
        assert!(is_secret_key("alerts.channels.sms.headers.X.Dotted"));
        assert!(!is_secret_key("alerts.channels.sms.headers"));
        assert!(holds_secrets("alerts.channels.sms.headers"));
        assert!(holds_secrets("audit.postgres_url"));
        assert!(!holds_secrets("audit.dir"));
        assert!(!holds_secrets("alerts.channels.sms"));
        // serde's paths write list indexes in brackets.
        assert!(holds_secrets("alerts.channels[2].headers"));
        assert!(is_secret_key("alerts.channels[0].token"));
    }

    #[test]
    fn credential_headers() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-Api-Key",
            "X-API-KEY",
            "X-Auth-Token",
            "Api-Secret",
            "X-Gateway-Password",
            "apikey",
            "X_Session",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in [
            "Content-Type",
            "Accept",
            "X-Request-Id",
            "User-Agent",
            "X-Keyboard",
        ] {
            assert!(!is_credential_header(name), "{name}");
        }
    }
}
