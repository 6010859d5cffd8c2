//! The checks of `[admin]` (and the older `[health] token`), run when a configuration is loaded.

use std::collections::HashSet;

use crate::config::{AdminConfig, Findings, HealthConfig};

/// Adds the problems of `[admin]` and `[health] token` to `f`.
pub(crate) fn check(admin: &AdminConfig, health: &HealthConfig, f: &mut Findings) {
    if health.token.as_ref().is_some_and(|t| t.is_empty()) {
        f.bad("health.token", "is empty; set a token or remove the key");
    } else if health.token.is_some() {
        f.advise(
            "health.token",
            "acts as an operator token named \"health\" with the write scope; prefer \
             [[admin.tokens]] entries, each with a name and a scope (\"read\" or \"write\")",
        );
    }
    check_tokens(admin, f);
}

/// The shortest operator token accepted, and the length below which `qiflow check` advises a
/// longer one (`qiflow keygen` prints 44 characters).
const MIN_TOKEN_LEN: usize = 16;
const GOOD_TOKEN_LEN: usize = 32;

fn check_tokens(admin: &AdminConfig, f: &mut Findings) {
    let mut names = HashSet::new();
    let mut values = HashSet::new();
    for (i, token) in admin.tokens.iter().enumerate() {
        let name = &token.name;
        let base = if name.is_empty() {
            format!("admin.tokens.{i}")
        } else {
            format!("admin.tokens.{name}")
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            f.bad(
                format!("{base}.name"),
                format!(
                    "{name:?} is not a token name; use letters, digits, '-', '_' and '.' (the name \
                     is the actor of the audit records of this token's writes)"
                ),
            );
        } else if !names.insert(name.as_str()) {
            f.bad(
                format!("{base}.name"),
                format!("{name:?} names two tokens; give each its own name"),
            );
        }
        let value = token.token.expose();
        if value.trim() != value || value.contains(char::is_whitespace) {
            f.bad(
                format!("{base}.token"),
                "contains whitespace; a bearer token is one word",
            );
        } else if value.len() < MIN_TOKEN_LEN {
            f.bad(format!("{base}.token"),
                format!(
                    "is {} characters; use at least {MIN_TOKEN_LEN} (`qiflow keygen` prints a good one)",
                    value.len()
                ),
            );
        } else if !values.insert(value) {
            f.bad(
                format!("{base}.token"),
                "is the same as another token's; every token needs its own value, so the audit \
                 trail can name who acted",
            );
        } else if value.len() < GOOD_TOKEN_LEN {
            f.advise(
                format!("{base}.token"),
                format!(
                    "is {} characters; {GOOD_TOKEN_LEN} or more are advised (`qiflow keygen` prints a good one)",
                    value.len()
                ),
            );
        }
    }
}
