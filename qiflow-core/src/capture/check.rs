//! The checks of `[errors]`, run when a configuration is loaded.

use crate::config::{ErrorsConfig, Findings, check_url};

/// Adds the problems of `[errors]` to `f`.
pub(crate) fn check(errors: &ErrorsConfig, f: &mut Findings) {
    if !(0.0..=1.0).contains(&errors.sample_rate) {
        f.bad(
            "errors.sample_rate",
            format!("{} is out of range; use 0.0 to 1.0", errors.sample_rate),
        );
    }
    if errors.recent_capacity == 0 {
        f.bad("errors.recent_capacity", "must be at least 1");
    }
    if !matches!(
        errors.event_level.to_ascii_lowercase().as_str(),
        "error" | "warn"
    ) {
        f.bad(
            "errors.event_level",
            format!(
                "{:?} is not a capture level; use \"error\" or \"warn\"",
                errors.event_level
            ),
        );
    }
    if let Some(dsn) = &errors.sentry_dsn
        && !dsn.is_empty()
        && let Err(why) = check_dsn(dsn.expose())
    {
        f.bad("errors.sentry_dsn", why);
    }
}

/// A Sentry DSN: `https://<key>@<host>/<project>`. Never echoes it (the key is a secret).
fn check_dsn(text: &str) -> Result<(), String> {
    check_url(text, &["http", "https"])
        .map_err(|why| format!("{why}; a Sentry DSN looks like https://<key>@<host>/<project>"))?;
    let url = url::Url::parse(text).map_err(|e| e.to_string())?;
    if url.username().is_empty() {
        return Err(
            "has no public key; a Sentry DSN looks like https://<key>@<host>/<project>".into(),
        );
    }
    let project = url
        .path()
        .trim_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if project.is_empty() {
        return Err(
            "has no project id; a Sentry DSN looks like https://<key>@<host>/<project>".into(),
        );
    }
    <sentry::types::Dsn as std::str::FromStr>::from_str(text).map_err(|e| {
        format!("is not a valid Sentry DSN ({e}); it looks like https://<key>@<host>/<project>")
    })?;
    Ok(())
}
