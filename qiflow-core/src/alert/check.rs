//! The checks of `[alerts]` and `[[alerts.channels]]`, run when a configuration is loaded. The
//! channel constructors ([`super::channels::build`]) apply the same rules when `init` builds the
//! channels; `qiflow check` also builds every channel dry, so a rule missed here still names its
//! key.

use std::collections::HashSet;

#[cfg(feature = "email")]
use super::channels::read_ca_file;
use super::channels::{kind_name, missing_feature};
use crate::config::{AlertsConfig, ChannelKind, Findings, SmtpTls, check_url};

/// Adds the problems of `[alerts]` to `f`.
pub(crate) fn check(alerts: &AlertsConfig, f: &mut Findings) {
    if alerts.rate_limit == 0 {
        f.bad(
            "alerts.rate_limit",
            "must be at least 1 notification per minute",
        );
    }
    for (i, label) in alerts.group_by.iter().enumerate() {
        if label.trim().is_empty() {
            f.bad(
                format!("alerts.group_by.{i}"),
                "is empty; give a label name such as \"alertname\" or \"route\"",
            );
        } else if alerts.group_by[..i].contains(label) {
            f.bad(
                format!("alerts.group_by.{i}"),
                format!("{label:?} is listed twice; list each label once"),
            );
        }
    }
    if alerts.queue_capacity == 0 {
        f.bad("alerts.queue_capacity", "must be at least 1");
    }
    if alerts.retry_initial.is_zero() || alerts.retry_initial > alerts.retry_max {
        f.bad(
            "alerts.retry_initial",
            "must be greater than zero and at most alerts.retry_max",
        );
    }
    for (i, silence) in alerts.silences.iter().enumerate() {
        let base = format!("alerts.silences.{i}");
        if silence.matchers.is_empty() {
            f.bad(
                format!("{base}.matchers"),
                "needs at least one label matcher (a silence of everything would hide every alert)",
            );
        }
        if let Err(e) = time::OffsetDateTime::parse(
            &silence.expires,
            &time::format_description::well_known::Rfc3339,
        ) {
            f.bad(
                format!("{base}.expires"),
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
            f.bad(
                format!("{base}.name"),
                format!("{name:?} is not a usable channel name; use letters, digits, '-' or '_'"),
            );
        }
        let name = ch
            .name
            .clone()
            .unwrap_or_else(|| kind_name(ch.kind).to_owned());
        if !names.insert(name.clone()) {
            f.bad(
                format!("{base}.name"),
                format!("channel name {name:?} is used twice; give each channel a unique name"),
            );
        }
        if let Some(feature) = missing_feature(ch.kind) {
            f.needs_feature(
                format!("{base}.kind"),
                &format!("{:?}", kind_name(ch.kind)),
                feature,
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
        for (j, url) in ch.urls.iter().enumerate() {
            if ch.kind != ChannelKind::Alertmanager {
                f.bad(
                    format!("{base}.urls"),
                    format!("only an alertmanager channel takes several URLs; give this {name} channel one url"),
                );
                break;
            }
            if let Err(why) = check_url(url.expose(), &["http", "https"]) {
                f.bad(format!("{base}.urls.{j}"), why);
            }
        }
        let has_urls = ch.kind == ChannelKind::Alertmanager && !ch.urls.is_empty();
        match (&ch.url, needs_url && !has_urls) {
            (None, true) => f.bad(
                format!("{base}.url"),
                format!("is required for a {name} channel; set the endpoint URL"),
            ),
            (Some(url), _) => {
                if let Err(why) = check_url(url.expose(), &["http", "https"]) {
                    f.bad(format!("{base}.url"), why);
                }
            }
            _ => {}
        }
        if ch.kind == ChannelKind::Email {
            if ch.smtp_host.as_deref().is_none_or(str::is_empty) {
                f.bad(
                    format!("{base}.smtp_host"),
                    "is required for an email channel",
                );
            }
            match &ch.from {
                None => f.bad(format!("{base}.from"), "is required for an email channel"),
                Some(addr) => check_address(&format!("{base}.from"), addr, f),
            }
            if ch.to.is_empty() {
                f.bad(format!("{base}.to"), "needs at least one recipient address");
            }
            for (j, addr) in ch.to.iter().enumerate() {
                check_address(&format!("{base}.to.{j}"), addr, f);
            }
            let host = ch.smtp_host.as_deref().unwrap_or_default();
            let local = matches!(host, "localhost" | "::1") || host.starts_with("127.");
            if ch.tls == SmtpTls::None && !local {
                f.risky(
                    format!("{base}.tls"),
                    format!(
                        "is \"none\": mail{} goes to {host} in plain text; use \"starttls\" or \"tls\" unless the relay is on a trusted network",
                        if ch.password.is_some() { " and the SMTP password" } else { "" }
                    ),
                );
            }
        }
        if let Some(path) = &ch.ca_file {
            let key = format!("{base}.ca_file");
            if ch.kind != ChannelKind::Email {
                f.bad(
                    &key,
                    format!(
                        "is used only by email channels, not by a {} channel; remove it",
                        kind_name(ch.kind)
                    ),
                );
            } else if ch.tls == SmtpTls::None {
                f.bad(&key, "is set, but tls is \"none\": there is no certificate to check; use tls = \"starttls\" or \"tls\", or remove it");
            } else {
                #[cfg(feature = "email")]
                if let Err(why) = read_ca_file(path) {
                    f.bad(&key, why);
                }
                // Without the `email` feature, the kind is the problem (above), not the file.
                #[cfg(not(feature = "email"))]
                let _ = path;
            }
        }
        if ch.kind == ChannelKind::Sms && ch.to.is_empty() {
            f.bad(format!("{base}.to"), "needs at least one phone number");
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
            if let Some(Err(why)) = template.map(|t| super::template::Template::parse(t, fields)) {
                f.bad(format!("{base}.{key}"), why);
            }
        }
        if ch.kind == ChannelKind::Sms && ch.max_length == 0 {
            f.bad(format!("{base}.max_length"), "must be at least 1 character");
        }
        if ch.kind == ChannelKind::Webhook
            && (ch.signature_header.is_empty()
                || !ch
                    .signature_header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            f.bad(
                format!("{base}.signature_header"),
                format!(
                    "{:?} is not a usable header name; use letters, digits and '-'",
                    ch.signature_header
                ),
            );
        }
        if ch.timeout.is_zero() {
            f.bad(
                format!("{base}.timeout"),
                "must be greater than zero, like \"10s\"",
            );
        }
    }

    if alerts.max_silence.is_zero() {
        f.bad(
            "alerts.max_silence",
            "must be greater than zero, like \"24h\"",
        );
    }
}

fn check_address(path: &str, addr: &str, f: &mut Findings) {
    if addr.contains(['\r', '\n']) || !addr.contains('@') {
        f.bad(
            path,
            format!(
                "{:?} is not an email address",
                addr.escape_debug().to_string()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // What a build without a channel feature says: these run in `cargo test -p qiflow-core
    // --no-default-features --lib` (`.ci/run` does), not in a default build.

    /// The configuration's errors as `path: message`, or none when it loads.
    #[cfg(not(all(feature = "email", feature = "http-channels")))]
    fn problems(toml: &str) -> Vec<String> {
        match crate::config::Loader::new()
            .toml_str(toml)
            .env::<[(&str, &str); 0], _, _>([])
            .load()
        {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems()
                .iter()
                .filter(|p| !p.kind().is_warning())
                .map(ToString::to_string)
                .collect(),
        }
    }

    #[cfg(not(feature = "http-channels"))]
    #[test]
    fn an_http_channel_without_the_feature_fails_to_load_naming_it() {
        for kind in ["webhook", "slack", "dingtalk", "sms", "alertmanager"] {
            let toml = format!(
                "[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"{kind}\"\nname = \"ops\"\n\
                 url = \"https://hooks.example.com/x\"\nto = [\"+15550100\"]\n"
            );
            let problems = problems(&toml);
            let expected = format!(
                "alerts.channels.ops.kind: \"{kind}\" needs qiflow-core's \"http-channels\" \
                 feature; add features = [\"http-channels\"] to the qiflow-core dependency"
            );
            assert!(problems.contains(&expected), "{kind}: {problems:#?}");
        }
    }

    #[cfg(not(feature = "email"))]
    #[test]
    fn an_email_channel_without_the_feature_fails_to_load_naming_it() {
        let problems = problems(
            "[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\n\
             tls = \"none\"\nfrom = \"qiflow@example.com\"\nto = [\"ops@example.com\"]\n",
        );
        assert_eq!(
            problems,
            [
                "alerts.channels.0.kind: \"email\" needs qiflow-core's \"email\" feature; add \
              features = [\"email\"] to the qiflow-core dependency"
            ]
        );
    }

    #[cfg(not(feature = "email"))]
    #[test]
    fn building_a_channel_the_build_lacks_names_the_feature() {
        // A configuration made in code skips the load's checks; the constructor says the same.
        let mut config = crate::Config::default();
        config.alerts.channels.push(crate::config::ChannelConfig {
            kind: crate::config::ChannelKind::Email,
            name: Some("mail".into()),
            ..Default::default()
        });
        let err = super::super::channels::from_config(&config, 0).unwrap_err();
        assert_eq!(
            err,
            "alerts.channels.mail.kind: \"email\" needs qiflow-core's \"email\" feature; add \
             features = [\"email\"] to the qiflow-core dependency"
        );
    }

    #[test]
    fn the_log_channel_needs_no_feature() {
        assert_eq!(
            super::missing_feature(crate::config::ChannelKind::Log),
            None
        );
        assert_eq!(
            super::missing_feature(crate::config::ChannelKind::Slack).is_some(),
            !cfg!(feature = "http-channels")
        );
        assert_eq!(
            super::missing_feature(crate::config::ChannelKind::Email).is_some(),
            !cfg!(feature = "email")
        );
    }
}
