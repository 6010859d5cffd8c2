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
            } else if audit.sink == AuditSinkKind::Postgres
                && let Some(why) = plain_to_remote(url.expose())
            {
                f.risky("audit.postgres_url", why);
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
            f.risky(
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

/// The environments in which a trail without a signing key fails `qiflow check --strict`.
const PRODUCTION: [&str; 2] = ["production", "prod"];

/// Advises `[audit] signing_key` when auditing is on without one, saying what that costs; in
/// production (`[service] environment`, see [`PRODUCTION`]) it is unsafe, so `--strict` fails.
pub(crate) fn signing_key(audit: &AuditConfig, environment: &str, f: &mut Findings) {
    if !audit.enabled || audit.signing_key.is_some() {
        return;
    }
    let cost = "is not set: the trail's digests are chained but not keyed, so whoever can write \
                the trail can rewrite records and recompute every hash, and `qiflow audit verify` \
                cannot tell. Set one before the trail holds records you may need as evidence (a \
                key added to an existing trail covers its older records only from then on): run \
                `qiflow keygen`, encrypt its output with `qiflow encrypt --name audit.signing_key`, \
                and set [audit] signing_key to the ENC: value";
    let environment = environment.trim();
    if PRODUCTION
        .iter()
        .any(|p| environment.eq_ignore_ascii_case(p))
    {
        f.risky(
            "audit.signing_key",
            format!("{cost} (unsafe because [service] environment is {environment:?})"),
        );
    } else {
        f.advise("audit.signing_key", cost);
    }
}

/// Whether `path` is inside `dir`, comparing absolute paths without touching the file system.
fn inside(path: &Path, dir: &Path) -> bool {
    match (std::path::absolute(path), std::path::absolute(dir)) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

/// Why a database URL is unsafe: it reaches a host off this machine with an `sslmode` that may
/// send the password and the records in plain text (`disable`, or `prefer`, the default). Names
/// the host, never the URL.
fn plain_to_remote(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let host = url.host_str()?;
    let local = matches!(host, "localhost" | "::1" | "[::1]") || host.starts_with("127.");
    let mode = url
        .query_pairs()
        .find(|(k, _)| k == "sslmode")
        .map_or_else(|| "prefer".to_owned(), |(_, v)| v.into_owned());
    let how = match mode.as_str() {
        "disable" => {
            "sslmode=disable: the database password and the audit records cross the network in plain text"
        }
        "prefer" => {
            "sslmode=prefer (the default): when the server offers no TLS, the database password and the audit records cross the network in plain text, and no certificate is checked"
        }
        _ => return None,
    };
    (!local).then(|| {
        format!(
            "reaches {host} with {how}; add sslmode=verify-full (with sslrootcert= the CA's PEM file, or system) to the URL, or sslmode=require at least, unless the database is on a trusted network"
        )
    })
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
