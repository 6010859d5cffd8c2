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
    /// Identifies the `extra` list in the per-thread cache of decisions: `0` for the built-in
    /// names alone, else unique per [`Redactor::new`].
    id: usize,
}

/// Decisions cached per thread, keyed by (redactor id, name address, name length). Field names
/// from tracing are `&'static str`, so their address identifies them.
type DecisionCache =
    std::collections::HashMap<(usize, usize, usize), bool, foldhash::fast::FixedState>;

/// The most decisions one thread caches; past it the cache starts over (names are per callsite,
/// so a program has a bounded number of them, but a bound costs nothing).
const CACHE_CAP: usize = 4096;

impl Redactor {
    /// The built-in names plus `extra`.
    pub fn new<I, S>(extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let extra: Vec<String> = extra
            .into_iter()
            .map(|s| normalize(s.as_ref()))
            .filter(|s| !s.is_empty())
            .collect();
        let id = if extra.is_empty() {
            0
        } else {
            NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
        Self { extra, id }
    }

    /// [`is_sensitive`](Self::is_sensitive) for a `'static` name (a tracing field name),
    /// remembered per thread so each name is checked once.
    pub(crate) fn is_sensitive_static(&self, name: &'static str) -> bool {
        thread_local! {
            static CACHE: std::cell::RefCell<DecisionCache> =
                std::cell::RefCell::new(DecisionCache::default());
        }
        let key = (self.id, name.as_ptr() as usize, name.len());
        CACHE.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return self.is_sensitive(name);
            };
            if let Some(known) = cache.get(&key) {
                return *known;
            }
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
            let sensitive = self.is_sensitive(name);
            cache.insert(key, sensitive);
            sensitive
        })
    }

    /// Identifies this redactor's list of names (for caches keyed by it).
    pub(crate) fn id(&self) -> usize {
        self.id
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

    #[test]
    fn cached_decisions_belong_to_their_redactor() {
        let builtin = Redactor::default();
        let extra = Redactor::new(["ssn"]);
        let other = Redactor::new(["user"]);
        for _ in 0..3 {
            assert!(!builtin.is_sensitive_static("customer_ssn"));
            assert!(extra.is_sensitive_static("customer_ssn"));
            assert!(!other.is_sensitive_static("customer_ssn"));
            assert!(other.is_sensitive_static("user"));
            assert!(!extra.is_sensitive_static("user"));
            assert!(builtin.is_sensitive_static("password"));
        }
    }
}
