//! The checks of `[audit]`, run when a configuration is loaded.

use std::path::Path;
use std::time::Duration;

use crate::config::{AuditConfig, AuditSinkKind, Findings, check_url};

/// Adds the problems of `[audit]` to `f`.
pub(crate) fn check(audit: &AuditConfig, f: &mut Findings) {
    check_sink_built(audit, cfg!(feature = "postgres"), f);
    if audit.batch_size == 0 || audit.batch_size > 10_000 {
        f.bad(
            "audit.batch_size",
            format!("{} is out of range; use 1 to 10000", audit.batch_size),
        );
    }
    if audit.flush_interval.is_zero() {
        f.bad(
            "audit.flush_interval",
            "must be greater than zero, like \"1s\"",
        );
    }
    if let Some(retention) = audit.retention
        && retention.as_secs() < 3600
    {
        f.bad(
            "audit.retention",
            "must be at least \"1h\" (or unset to keep everything)",
        );
    }
    if audit.queue_capacity == 0 || audit.queue_capacity > 1_000_000 {
        f.bad(
            "audit.queue_capacity",
            format!("{} is out of range; use 1 to 1000000", audit.queue_capacity),
        );
    }
    if audit.block_timeout > Duration::from_secs(60) {
        f.bad(
            "audit.block_timeout",
            "must be at most \"60s\": callers wait this long when the queue is full",
        );
    }
    if audit.digest_every == 0 || audit.digest_every > 1_000_000 {
        f.bad(
            "audit.digest_every",
            format!("{} is out of range; use 1 to 1000000", audit.digest_every),
        );
    }
    if audit.digest_interval.is_zero() {
        f.bad(
            "audit.digest_interval",
            "must be greater than zero, like \"60s\"",
        );
    }
    if audit.segment_size < 4096 {
        f.bad(
            "audit.segment_size",
            "must be at least \"4KiB\", like \"64MiB\"",
        );
    }
    if audit.segment_age < Duration::from_secs(60) {
        f.bad("audit.segment_age", "must be at least \"1m\", like \"1d\"");
    }
    if let Err(why) = super::AutoAudit::new(&audit.routes, super::ActorSource::None) {
        let (path, why) = why
            .split_once(": ")
            .unwrap_or(("audit.routes", why.as_str()));
        f.bad(path, why);
    }
    match (&audit.sink, &audit.postgres_url) {
        (AuditSinkKind::Postgres, None) => f.bad(
            "audit.postgres_url",
            "is required when audit.sink = \"postgres\"; set it to postgres://user:password@host/db",
        ),
        (_, Some(url)) => {
            if let Err(why) = check_url(url.expose(), &["postgres", "postgresql"])
                .and_then(|()| check_postgres_tls(url.expose()))
            {
                f.bad("audit.postgres_url", why);
            }
        }
        _ => {}
    }
    if let Some(witness) = &audit.witness {
        if witness.as_os_str().is_empty() {
            f.bad(
                "audit.witness",
                "is empty; leave it unset for the default beside audit.dir (<dir>.witness.json), or name a file",
            );
        } else if audit.enabled && audit.sink == AuditSinkKind::File && inside(witness, &audit.dir)
        {
            f.advise(
                "audit.witness",
                "is inside audit.dir: whoever deletes or replaces the trail's files takes the witness with them; keep it beside the directory (the default) or elsewhere",
            );
        }
    }
    match &audit.signing_key {
        Some(key) if key.expose().len() < 16 => f.bad(
            "audit.signing_key",
            "is too short; use at least 16 characters (`qiflow keygen` prints a good one)",
        ),
        None if audit.enabled => f.advise(
            "audit.signing_key",
            "is not set: digests are chained but not keyed, so a rewritten trail cannot be told \
             from the original; set one (`qiflow keygen`, then `qiflow encrypt --name audit.signing_key`)",
        ),
        _ => {}
    }
}

/// The sink is one this build has: `postgres` needs the Cargo feature of that name
/// (`postgres_built`: whether this build has it; a parameter, so that the tests, whose builds
/// always have it, can see what a build without it says).
fn check_sink_built(audit: &AuditConfig, postgres_built: bool, f: &mut Findings) {
    if audit.sink == AuditSinkKind::Postgres && !postgres_built {
        f.needs_feature("audit.sink", "\"postgres\"", "postgres");
    }
}

/// Whether `path` is inside `dir`, comparing absolute paths without touching the file system.
fn inside(path: &Path, dir: &Path) -> bool {
    match (std::path::absolute(path), std::path::absolute(dir)) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

/// The URL's `sslmode` is one qiflow speaks, and its `sslrootcert` file exists.
fn check_postgres_tls(text: &str) -> Result<(), String> {
    let Ok(url) = url::Url::parse(text) else {
        return Ok(());
    };
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "sslmode"
                if !["disable", "prefer", "require", "verify-ca", "verify-full"]
                    .contains(&value.as_ref()) =>
            {
                return Err(format!(
                    "sslmode={value} is not supported; use disable, prefer (the default), require, verify-ca or verify-full"
                ));
            }
            "sslrootcert" if value != "system" && !Path::new(value.as_ref()).is_file() => {
                return Err(format!(
                    "sslrootcert={value}: no such file; name the PEM file of the database's CA, or `system`"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_sink_without_the_feature_names_it() {
        let audit = AuditConfig {
            sink: AuditSinkKind::Postgres,
            ..AuditConfig::default()
        };
        let mut f = Findings::default();
        check_sink_built(&audit, false, &mut f);
        let [problem] = &f.problems[..] else {
            panic!("one problem expected: {f:?}");
        };
        assert_eq!(problem.path(), "audit.sink");
        assert_eq!(
            problem.message(),
            "\"postgres\" needs qiflow-core's \"postgres\" feature; add features = [\"postgres\"] to the qiflow-core dependency"
        );
        assert_eq!(problem.kind(), crate::config::ProblemKind::MissingFeature);

        let mut f = Findings::default();
        check_sink_built(&audit, true, &mut f);
        assert!(f.problems.is_empty(), "{f:?}");
        let file = AuditConfig::default();
        check_sink_built(&file, false, &mut f);
        assert!(f.problems.is_empty(), "{f:?}");
    }
}
