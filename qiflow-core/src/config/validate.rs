//! Range and consistency checks that run after a configuration is loaded.

use std::collections::HashSet;

use super::{AuditSinkKind, ChannelKind, Config, Problem, ProblemKind};
use crate::alert::channels::{kind_name, read_ca_file};

const MAX_QUEUE: usize = 10_000_000;

pub(super) fn validate(config: &Config, problems: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
    let mut bad = |path: &str, message: String| {
        problems.push(Problem::new(ProblemKind::Value, path, message));
    };

    if config.service.name.trim().is_empty() {
        bad("service.name", "must not be empty; name the service".into());
    }

    let log = &config.logging;
    if log.level.trim().is_empty() {
        bad(
            "logging.level",
            "must not be empty; use a level like \"info\" or directives like \"info,hyper=warn\""
                .into(),
        );
    }
    if log.file_name.is_empty() || log.file_name.contains(['/', '\\']) {
        bad(
            "logging.file_name",
            format!(
                "{:?} must be a plain file name (the directory goes in logging.dir)",
                log.file_name
            ),
        );
    }
    if log.max_size < 4096 {
        bad(
            "logging.max_size",
            format!("{} bytes is too small; use at least \"4KiB\"", log.max_size),
        );
    }
    if log.queue_capacity == 0 || log.queue_capacity > MAX_QUEUE {
        bad(
            "logging.queue_capacity",
            format!(
                "{} is out of range; use 1 to {MAX_QUEUE}",
                log.queue_capacity
            ),
        );
    }

    let mode = log.file_mode;
    if mode & !0o666 != 0 || mode & 0o600 != 0o600 {
        bad(
            "logging.file_mode",
            format!(
                "\"{}\" is not a usable log file mode: the owner must read and write (6 first) and \
                 no execute or special bits may be set; use \"0640\" (the default) or \"0600\"",
                super::units::format_mode(mode)
            ),
        );
    } else if mode & 0o022 != 0 {
        warnings.push(Problem::new(
            ProblemKind::Advice,
            "logging.file_mode",
            format!(
                "\"{}\" lets users other than the owner write to the log files, so they can forge \
                 or erase lines; use \"0640\" (the default) or \"0600\"",
                super::units::format_mode(mode)
            ),
        ));
    }

    let errors = &config.errors;
    if !(0.0..=1.0).contains(&errors.sample_rate) {
        bad(
            "errors.sample_rate",
            format!("{} is out of range; use 0.0 to 1.0", errors.sample_rate),
        );
    }
    if errors.recent_capacity == 0 {
        bad("errors.recent_capacity", "must be at least 1".into());
    }
    if !matches!(
        errors.event_level.to_ascii_lowercase().as_str(),
        "error" | "warn"
    ) {
        bad(
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
        bad("errors.sentry_dsn", why);
    }

    let metrics = &config.metrics;
    if !metrics.path.starts_with('/') {
        bad(
            "metrics.path",
            format!("{:?} must start with '/'", metrics.path),
        );
    }
    if metrics.buckets.is_empty()
        || metrics.buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
        || metrics.buckets.windows(2).any(|w| w[0] >= w[1])
    {
        bad(
            "metrics.buckets",
            "must be positive numbers of seconds in increasing order, like [0.01, 0.1, 1]".into(),
        );
    }
    if metrics.max_routes == 0 {
        bad("metrics.max_routes", "must be at least 1".into());
    }

    let baseline = &config.baseline;
    if baseline.window.as_secs() < 1 {
        bad("baseline.window", "must be at least \"1s\"".into());
    }
    if baseline.min_samples == 0 {
        bad("baseline.min_samples", "must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&baseline.error_rate_margin) {
        bad(
            "baseline.error_rate_margin",
            format!(
                "{} is out of range; use a fraction from 0.0 to 1.0, like 0.05",
                baseline.error_rate_margin
            ),
        );
    }
    if !baseline.slow_p99_factor.is_finite()
        || (baseline.slow_p99_factor != 0.0 && baseline.slow_p99_factor < 1.0)
    {
        bad(
            "baseline.slow_p99_factor",
            format!(
                "{} must be 0 (off) or at least 1.0, like 3.0",
                baseline.slow_p99_factor
            ),
        );
    }
    if !baseline.deviation_factor.is_finite() || baseline.deviation_factor <= 1.0 {
        bad(
            "baseline.deviation_factor",
            format!(
                "{} must be greater than 1.0, like 2.0",
                baseline.deviation_factor
            ),
        );
    }
    if baseline.slow_request.is_zero() {
        bad(
            "baseline.slow_request",
            "must be greater than zero, like \"1s\"".into(),
        );
    }

    let audit = &config.audit;
    if audit.batch_size == 0 || audit.batch_size > 10_000 {
        bad(
            "audit.batch_size",
            format!("{} is out of range; use 1 to 10000", audit.batch_size),
        );
    }
    if audit.flush_interval.is_zero() {
        bad(
            "audit.flush_interval",
            "must be greater than zero, like \"1s\"".into(),
        );
    }
    if let Some(retention) = audit.retention
        && retention.as_secs() < 3600
    {
        bad(
            "audit.retention",
            "must be at least \"1h\" (or unset to keep everything)".into(),
        );
    }
    if audit.queue_capacity == 0 || audit.queue_capacity > 1_000_000 {
        bad(
            "audit.queue_capacity",
            format!("{} is out of range; use 1 to 1000000", audit.queue_capacity),
        );
    }
    if audit.block_timeout > std::time::Duration::from_secs(60) {
        bad(
            "audit.block_timeout",
            "must be at most \"60s\": callers wait this long when the queue is full".into(),
        );
    }
    if audit.digest_every == 0 || audit.digest_every > 1_000_000 {
        bad(
            "audit.digest_every",
            format!("{} is out of range; use 1 to 1000000", audit.digest_every),
        );
    }
    if audit.digest_interval.is_zero() {
        bad(
            "audit.digest_interval",
            "must be greater than zero, like \"60s\"".into(),
        );
    }
    if audit.segment_size < 4096 {
        bad(
            "audit.segment_size",
            "must be at least \"4KiB\", like \"64MiB\"".into(),
        );
    }
    if audit.segment_age < std::time::Duration::from_secs(60) {
        bad(
            "audit.segment_age",
            "must be at least \"1m\", like \"1d\"".into(),
        );
    }
    if let Err(why) = crate::audit::AutoAudit::new(&audit.routes, crate::audit::ActorSource::None) {
        let (path, why) = why
            .split_once(": ")
            .unwrap_or(("audit.routes", why.as_str()));
        bad(path, why.to_owned());
    }
    match (&audit.sink, &audit.postgres_url) {
        (AuditSinkKind::Postgres, None) => bad(
            "audit.postgres_url",
            "is required when audit.sink = \"postgres\"; set it to postgres://user:password@host/db".into(),
        ),
        (_, Some(url)) => {
            if let Err(why) = check_url(url.expose(), &["postgres", "postgresql"])
                .and_then(|()| check_postgres_tls(url.expose()))
            {
                bad("audit.postgres_url", why);
            }
        }
        _ => {}
    }
    if let Some(witness) = &audit.witness {
        if witness.as_os_str().is_empty() {
            bad(
                "audit.witness",
                "is empty; leave it unset for the default beside audit.dir (<dir>.witness.json), or name a file".into(),
            );
        } else if audit.enabled && audit.sink == AuditSinkKind::File && inside(witness, &audit.dir)
        {
            warnings.push(Problem::new(
                ProblemKind::Advice,
                "audit.witness",
                "is inside audit.dir: whoever deletes or replaces the trail's files takes the witness with them; keep it beside the directory (the default) or elsewhere",
            ));
        }
    }
    match &audit.signing_key {
        Some(key) if key.expose().len() < 16 => bad(
            "audit.signing_key",
            "is too short; use at least 16 characters (`qiflow keygen` prints a good one)".into(),
        ),
        None if audit.enabled => warnings.push(Problem::new(
            ProblemKind::Advice,
            "audit.signing_key",
            "is not set: digests are chained but not keyed, so a rewritten trail cannot be told \
             from the original; set one (`qiflow keygen`, then `qiflow encrypt --name audit.signing_key`)",
        )),
        _ => {}
    }

    let alerts = &config.alerts;
    if alerts.rate_limit == 0 {
        bad(
            "alerts.rate_limit",
            "must be at least 1 notification per minute".into(),
        );
    }
    for (i, label) in alerts.group_by.iter().enumerate() {
        if label.trim().is_empty() {
            bad(
                &format!("alerts.group_by.{i}"),
                "is empty; give a label name such as \"alertname\" or \"route\"".into(),
            );
        } else if alerts.group_by[..i].contains(label) {
            bad(
                &format!("alerts.group_by.{i}"),
                format!("{label:?} is listed twice; list each label once"),
            );
        }
    }
    if alerts.queue_capacity == 0 {
        bad("alerts.queue_capacity", "must be at least 1".into());
    }
    if alerts.retry_initial.is_zero() || alerts.retry_initial > alerts.retry_max {
        bad(
            "alerts.retry_initial",
            "must be greater than zero and at most alerts.retry_max".into(),
        );
    }
    for (i, silence) in alerts.silences.iter().enumerate() {
        let base = format!("alerts.silences.{i}");
        if silence.matchers.is_empty() {
            bad(
                &format!("{base}.matchers"),
                "needs at least one label matcher (a silence of everything would hide every alert)"
                    .into(),
            );
        }
        if let Err(e) = time::OffsetDateTime::parse(
            &silence.expires,
            &time::format_description::well_known::Rfc3339,
        ) {
            bad(
                &format!("{base}.expires"),
                format!(
                    "{:?} is not an RFC 3339 time ({e}); write it like \"2026-12-01T00:00:00Z\"",
                    silence.expires
                ),
            );
        }
    }
    let mut names = HashSet::new();
    for (i, ch) in alerts.channels.iter().enumerate() {
        let base = ch.key_path(i);
        if let Some(name) = &ch.name
            && (name.is_empty() || name.contains(['.', ' ']))
        {
            bad(
                &format!("{base}.name"),
                format!("{name:?} is not a usable channel name; use letters, digits, '-' or '_'"),
            );
        }
        let name = ch
            .name
            .clone()
            .unwrap_or_else(|| kind_name(ch.kind).to_owned());
        if !names.insert(name.clone()) {
            bad(
                &format!("{base}.name"),
                format!("channel name {name:?} is used twice; give each channel a unique name"),
            );
        }
        let needs_url = matches!(
            ch.kind,
            ChannelKind::Webhook
                | ChannelKind::Slack
                | ChannelKind::Dingtalk
                | ChannelKind::Sms
                | ChannelKind::Alertmanager
        );
        match (&ch.url, needs_url) {
            (None, true) => bad(
                &format!("{base}.url"),
                format!("is required for a {name} channel; set the endpoint URL"),
            ),
            (Some(url), _) => {
                if let Err(why) = check_url(url.expose(), &["http", "https"]) {
                    bad(&format!("{base}.url"), why);
                }
            }
            _ => {}
        }
        if ch.kind == ChannelKind::Email {
            if ch.smtp_host.as_deref().is_none_or(str::is_empty) {
                bad(
                    &format!("{base}.smtp_host"),
                    "is required for an email channel".into(),
                );
            }
            match &ch.from {
                None => bad(
                    &format!("{base}.from"),
                    "is required for an email channel".into(),
                ),
                Some(addr) => check_address(&format!("{base}.from"), addr, &mut bad),
            }
            if ch.to.is_empty() {
                bad(
                    &format!("{base}.to"),
                    "needs at least one recipient address".into(),
                );
            }
            for (j, addr) in ch.to.iter().enumerate() {
                check_address(&format!("{base}.to.{j}"), addr, &mut bad);
            }
            let host = ch.smtp_host.as_deref().unwrap_or_default();
            let local = matches!(host, "localhost" | "::1") || host.starts_with("127.");
            if ch.tls == super::SmtpTls::None && !local {
                warnings.push(Problem::new(
                    ProblemKind::Advice,
                    format!("{base}.tls"),
                    format!(
                        "is \"none\": mail{} goes to {host} in plain text; use \"starttls\" or \"tls\" unless the relay is on a trusted network",
                        if ch.password.is_some() { " and the SMTP password" } else { "" }
                    ),
                ));
            }
        }
        if let Some(path) = &ch.ca_file {
            let key = format!("{base}.ca_file");
            if ch.kind != ChannelKind::Email {
                bad(
                    &key,
                    format!(
                        "is used only by email channels, not by a {} channel; remove it",
                        kind_name(ch.kind)
                    ),
                );
            } else if ch.tls == super::SmtpTls::None {
                bad(&key, "is set, but tls is \"none\": there is no certificate to check; use tls = \"starttls\" or \"tls\", or remove it".into());
            } else if let Err(why) = read_ca_file(path) {
                bad(&key, why);
            }
        }
        if ch.kind == ChannelKind::Sms && ch.to.is_empty() {
            bad(
                &format!("{base}.to"),
                "needs at least one phone number".into(),
            );
        }
        let sms = ch.kind == ChannelKind::Sms;
        let extra: &[&str] = if sms {
            &["to", "message", "token"]
        } else {
            &[]
        };
        for (key, template) in [
            ("subject", ch.subject.as_deref()),
            ("body", ch.body.as_deref()),
            ("message", ch.message.as_deref()),
        ] {
            let fields = if key == "message" { &[][..] } else { extra };
            if let Some(Err(why)) =
                template.map(|t| crate::alert::template::Template::parse(t, fields))
            {
                bad(&format!("{base}.{key}"), why);
            }
        }
        if ch.kind == ChannelKind::Sms && ch.max_length == 0 {
            bad(
                &format!("{base}.max_length"),
                "must be at least 1 character".into(),
            );
        }
        if ch.kind == ChannelKind::Webhook
            && (ch.signature_header.is_empty()
                || !ch
                    .signature_header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            bad(
                &format!("{base}.signature_header"),
                format!(
                    "{:?} is not a usable header name; use letters, digits and '-'",
                    ch.signature_header
                ),
            );
        }
        if ch.timeout.is_zero() {
            bad(
                &format!("{base}.timeout"),
                "must be greater than zero, like \"10s\"".into(),
            );
        }
    }

    if !config.health.path.starts_with('/') {
        bad(
            "health.path",
            format!("{:?} must start with '/'", config.health.path),
        );
    }
    if config.health.token.as_ref().is_some_and(|t| t.is_empty()) {
        bad(
            "health.token",
            "is empty; set a token or remove the key".into(),
        );
    } else if config.health.token.is_some() {
        warnings.push(Problem::new(
            ProblemKind::Advice,
            "health.token",
            "acts as an operator token named \"health\" with the write scope; prefer \
             [[admin.tokens]] entries, each with a name and a scope (\"read\" or \"write\")",
        ));
    }
    if config.alerts.max_silence.is_zero() {
        bad(
            "alerts.max_silence",
            "must be greater than zero, like \"24h\"".into(),
        );
    }
    check_admin_tokens(config, &mut bad, warnings);
}

/// The shortest operator token accepted, and the length below which `qiflow check` advises a
/// longer one (`qiflow keygen` prints 44 characters).
const MIN_TOKEN_LEN: usize = 16;
const GOOD_TOKEN_LEN: usize = 32;

fn check_admin_tokens(
    config: &Config,
    bad: &mut dyn FnMut(&str, String),
    warnings: &mut Vec<Problem>,
) {
    let mut names = HashSet::new();
    let mut values = HashSet::new();
    for (i, token) in config.admin.tokens.iter().enumerate() {
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
            bad(
                &format!("{base}.name"),
                format!(
                    "{name:?} is not a token name; use letters, digits, '-', '_' and '.' (the name \
                     is the actor of the audit records of this token's writes)"
                ),
            );
        } else if !names.insert(name.as_str()) {
            bad(
                &format!("{base}.name"),
                format!("{name:?} names two tokens; give each its own name"),
            );
        }
        let value = token.token.expose();
        if value.trim() != value || value.contains(char::is_whitespace) {
            bad(
                &format!("{base}.token"),
                "contains whitespace; a bearer token is one word".into(),
            );
        } else if value.len() < MIN_TOKEN_LEN {
            bad(
                &format!("{base}.token"),
                format!(
                    "is {} characters; use at least {MIN_TOKEN_LEN} (`qiflow keygen` prints a good one)",
                    value.len()
                ),
            );
        } else if !values.insert(value) {
            bad(
                &format!("{base}.token"),
                "is the same as another token's; every token needs its own value, so the audit \
                 trail can name who acted"
                    .into(),
            );
        } else if value.len() < GOOD_TOKEN_LEN {
            warnings.push(Problem::new(
                ProblemKind::Advice,
                format!("{base}.token"),
                format!(
                    "is {} characters; {GOOD_TOKEN_LEN} or more are advised (`qiflow keygen` prints a good one)",
                    value.len()
                ),
            ));
        }
    }
}

fn check_address(path: &str, addr: &str, bad: &mut dyn FnMut(&str, String)) {
    if addr.contains(['\r', '\n']) || !addr.contains('@') {
        bad(
            path,
            format!(
                "{:?} is not an email address",
                addr.escape_debug().to_string()
            ),
        );
    }
}

/// Checks a URL without ever echoing it (it may carry credentials).
fn check_url(text: &str, schemes: &[&str]) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "has scheme {:?}; use {}",
            url.scheme(),
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

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

/// Whether `path` is inside `dir`, comparing absolute paths without touching the file system.
fn inside(path: &std::path::Path, dir: &std::path::Path) -> bool {
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
            "sslrootcert"
                if value != "system" && !std::path::Path::new(value.as_ref()).is_file() =>
            {
                return Err(format!(
                    "sslrootcert={value}: no such file; name the PEM file of the database's CA, or `system`"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
