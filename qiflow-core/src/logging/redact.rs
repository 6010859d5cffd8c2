//! The redaction policy shared by logs, error reports, audit records and alert payloads.

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Field-name fragments that are always redacted.
pub const BUILTIN: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
];

/// Decides which fields are sensitive, by name.
///
/// A field is sensitive when its name contains one of [`BUILTIN`] or one of the extra names
/// (`[logging] redact`), ignoring ASCII case and treating `-` as `_`: `password`,
/// `db_password`, `X-Api-Key` and `refresh_token` all match.
///
/// ```
/// use qiflow_core::logging::Redactor;
///
/// let r = Redactor::new(["ssn"]);
/// assert!(r.is_sensitive("Authorization"));
/// assert!(r.is_sensitive("x-api-key"));
/// assert!(r.is_sensitive("customer_ssn"));
/// assert!(!r.is_sensitive("user_id"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    extra: Vec<String>,
}

impl Redactor {
    /// The built-in names plus `extra`.
    pub fn new<I, S>(extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            extra: extra
                .into_iter()
                .map(|s| normalize(s.as_ref()))
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// Whether a field with this name must be redacted.
    pub fn is_sensitive(&self, name: &str) -> bool {
        BUILTIN
            .iter()
            .any(|needle| contains_normalized(name, needle))
            || self
                .extra
                .iter()
                .any(|needle| contains_normalized(name, needle))
    }
}

fn normalize(s: &str) -> String {
    s.bytes().map(|b| char::from(fold(b))).collect()
}

#[inline]
fn fold(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

/// `hay` contains `needle` (already normalized), comparing `hay` folded, without allocating.
fn contains_normalized(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    if needle.len() > hay.len() {
        return false;
    }
    hay.windows(needle.len())
        .any(|w| w.iter().zip(needle).all(|(a, b)| fold(*a) == *b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_case_and_dash_insensitively() {
        let r = Redactor::new(["Card-Number"]);
        for name in [
            "password",
            "PASSWORD",
            "user_passwd",
            "client_secret",
            "access_token",
            "Cookie",
            "set-cookie",
            "API_KEY",
            "apikey",
            "card_number",
            "x-card-number",
        ] {
            assert!(r.is_sensitive(name), "{name}");
        }
        for name in ["user", "message", "route", "latency_ms", "pass"] {
            assert!(!r.is_sensitive(name), "{name}");
        }
    }
}
