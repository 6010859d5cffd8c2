//! The checks of `[errors]`, run when a configuration is loaded.

#[cfg(feature = "sentry")]
use crate::config::check_url;
use crate::config::{ErrorsConfig, Findings};

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
    {
        #[cfg(feature = "sentry")]
        if let Err(why) = check_dsn(dsn.expose()) {
            f.bad("errors.sentry_dsn", why);
        }
        #[cfg(not(feature = "sentry"))]
        f.needs_feature("errors.sentry_dsn", "forwarding to Sentry", "sentry");
    }
}

/// A Sentry DSN: `https://<key>@<host>/<project>`. Never echoes it (the key is a secret).
#[cfg(feature = "sentry")]
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    const DSN: &str = "https://public@o0.ingest.example.com/42";

    fn load(toml: &str) -> Result<crate::Config, crate::config::ConfigError> {
        crate::config::Loader::new()
            .toml_str(toml)
            .env::<[(&str, &str); 0], _, _>([])
            .load()
    }

    // Runs in `cargo test -p qiflow-core --no-default-features --lib` (`.ci/run` does).
    #[cfg(not(feature = "sentry"))]
    #[test]
    fn a_sentry_dsn_without_the_feature_fails_to_load_naming_it() {
        let err = load(&format!(
            "[errors]\nsentry_dsn = \"{DSN}\"\n[audit]\nenabled = false\n"
        ))
        .unwrap_err();
        let problems: Vec<String> = err
            .problems()
            .iter()
            .filter(|p| !p.kind().is_warning())
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "errors.sentry_dsn: forwarding to Sentry needs qiflow-core's \"sentry\" feature; \
              add features = [\"sentry\"] to the qiflow-core dependency"
            ]
        );
        assert!(!err.to_string().contains("public@"), "{err}");
        // An empty DSN (Sentry off) is fine in any build.
        assert!(load("[errors]\nsentry_dsn = \"\"\n[audit]\nenabled = false\n").is_ok());
    }

    #[cfg(not(feature = "sentry"))]
    #[test]
    fn init_with_a_sentry_dsn_without_the_feature_names_it() {
        // A configuration made in code skips the load's checks; init says the same.
        let mut config = crate::test::quiet_config();
        config.errors.sentry_dsn = Some(crate::secret::Secret::new(DSN));
        let err = crate::Observer::builder(config)
            .install_global(false)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), crate::InitErrorKind::Config);
        assert!(
            err.to_string().contains(
                "errors.sentry_dsn: forwarding to Sentry needs qiflow-core's \"sentry\" feature"
            ),
            "{err}"
        );
    }

    #[cfg(feature = "sentry")]
    #[test]
    fn a_sentry_dsn_with_the_feature_loads() {
        let config = load(&format!(
            "[errors]\nsentry_dsn = \"{DSN}\"\n[audit]\nenabled = false\n"
        ))
        .unwrap();
        assert!(config.errors.sentry_dsn.is_some());
    }
}
