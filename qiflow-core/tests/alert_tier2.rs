//! Tier 2: alerts through a real SMTP server (Debian's python3-aiosmtpd) and a real Alertmanager
//! (Debian's prometheus-alertmanager), both started on loopback by `.ci/tier2-alerts.sh`, which
//! runs these tests with `--ignored` and the servers' addresses in the environment:
//!
//! - `QIFLOW_TIER2_SMTP`: `127.0.0.1:PORT` of `python3 -m aiosmtpd -c aiosmtpd.handlers.Mailbox DIR`
//! - `QIFLOW_TIER2_MAILDIR`: that maildir
//! - `QIFLOW_TIER2_SMTP_STARTTLS`, `QIFLOW_TIER2_SMTPS`: `127.0.0.1:PORT` of two more aiosmtpd
//!   servers writing to the same maildir, one with STARTTLS (`--tlscert`, required before mail),
//!   one with implicit TLS (`--smtpscert`), both with a certificate for `127.0.0.1` issued by a
//!   private CA
//! - `QIFLOW_TIER2_SMTP_CA`: that CA's certificate (PEM)
//! - `QIFLOW_TIER2_ALERTMANAGER`: `http://127.0.0.1:PORT` of `prometheus-alertmanager`
//!
//! Run by hand without them, they fail saying how to get the servers.
// The email channel and the Alertmanager channel: the `email` and `http-channels` features.
#![cfg(all(feature = "email", feature = "http-channels"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use qiflow_core::Observer;
use qiflow_core::alert::{Alert, AlertLevel};
use support::{config, wait_until};

const HOW: &str = "run `bash .ci/tier2-alerts.sh`, which starts aiosmtpd and Alertmanager \
    (apt-get update && apt-get install -y python3-aiosmtpd prometheus-alertmanager)";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW}"))
}

#[test]
#[ignore = "tier 2: needs aiosmtpd; run by .ci/tier2-alerts.sh"]
fn email_reaches_a_real_smtp_server() {
    let (recent, mail) = send_mail(&env("QIFLOW_TIER2_SMTP"), "none", None, "plain", |marker| {
        Alert::new("disk_full", AlertLevel::Critical)
            .summary(format!("{marker}\r\nBcc: victim@example.net"))
            .description("the /var volume is 97% full")
    });
    assert_eq!(recent.outcome, "sent", "{recent:?}");
    let text = mail.unwrap();
    let head = text.split("\n\n").next().unwrap().replace("\n ", " ");
    assert!(
        head.lines().all(|l| !l.starts_with("Bcc:")),
        "header injected: {head}"
    );
    assert!(
        head.contains("To: oncall@example.com, lead@example.com"),
        "{head}"
    );
    assert!(text.contains("the /var volume is 97% full"), "{text}");
}

/// Sends the alert `alert` makes (given a marker unique to this call, which its summary must
/// carry) through an email channel to `smtp` with `tls` (and `ca_file` when given), to two
/// recipients. Returns how it settled and the mail that carries the marker, if one arrived.
fn send_mail(
    smtp: &str,
    tls: &str,
    ca_file: Option<&str>,
    test: &str,
    alert: impl FnOnce(&str) -> Alert,
) -> (qiflow_core::alert::RecentNotification, Option<String>) {
    let maildir = std::path::PathBuf::from(env("QIFLOW_TIER2_MAILDIR"));
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let ca_line = ca_file.map_or(String::new(), |ca| format!("ca_file = \"{ca}\"\n"));
    let (observer, guard) = Observer::builder(config(&format!(
        r#"[alerts]
group_wait = "0s"
retry_initial = "100ms"
retry_deadline = "1s"
[[alerts.channels]]
kind = "email"
smtp_host = "{host}"
smtp_port = {port}
tls = "{tls}"
{ca_line}from = "qiflow <alerts@example.com>"
to = ["oncall@example.com", "lead@example.com"]
"#
    )))
    .install_global(false)
    .build()
    .unwrap();
    let marker = format!("tier2-{test}-{}", std::process::id());
    observer.alert(alert(&marker));
    assert!(observer.flush(Duration::from_secs(20)));
    let recent = observer.alerts().view().recent[0].clone();
    drop(guard);
    let find = || {
        std::fs::read_dir(maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
            .find(|text| text.contains(&marker))
    };
    if recent.outcome == "sent" {
        assert!(
            wait_until(Duration::from_secs(10), || find().is_some()),
            "sent, but no mail containing {marker} in {}",
            maildir.display()
        );
    }
    (recent, find())
}

/// A `disk_full` alert whose summary is `marker`.
fn disk_full(marker: &str) -> Alert {
    Alert::new("disk_full", AlertLevel::Critical).summary(marker)
}

/// The servers with TLS, and the `tls` setting for each.
const TLS_SERVERS: [(&str, &str); 2] = [
    ("QIFLOW_TIER2_SMTP_STARTTLS", "starttls"),
    ("QIFLOW_TIER2_SMTPS", "tls"),
];

#[test]
#[ignore = "tier 2: needs aiosmtpd with STARTTLS and implicit TLS; run by .ci/tier2-alerts.sh"]
fn email_over_tls_trusts_a_private_ca() {
    let ca = env("QIFLOW_TIER2_SMTP_CA");
    for (var, tls) in TLS_SERVERS {
        let (recent, mail) = send_mail(
            &env(var),
            tls,
            Some(&ca),
            &format!("trusted-{tls}"),
            disk_full,
        );
        assert_eq!(recent.outcome, "sent", "{tls}: {recent:?}");
        assert!(mail.unwrap().contains("disk_full"), "{tls}");
    }
}

#[test]
#[ignore = "tier 2: needs aiosmtpd with STARTTLS and implicit TLS; run by .ci/tier2-alerts.sh"]
fn email_refuses_a_certificate_it_cannot_verify() {
    // Without ca_file the private CA is unknown: nothing is sent, and the failure says why.
    for (var, tls) in TLS_SERVERS {
        let (recent, mail) =
            send_mail(&env(var), tls, None, &format!("untrusted-{tls}"), disk_full);
        assert_eq!(recent.outcome, "failed", "{recent:?}");
        let error = recent.error.clone().unwrap_or_default().to_lowercase();
        assert!(
            error.contains("certificate") || error.contains("issuer"),
            "{recent:?}"
        );
        assert!(
            mail.is_none(),
            "a mail arrived over an unverified {tls} connection"
        );
    }
}

#[test]
#[ignore = "tier 2: needs Alertmanager; run by .ci/tier2-alerts.sh"]
fn alertmanager_shows_the_alert_and_its_resolve() {
    let base = env("QIFLOW_TIER2_ALERTMANAGER");
    let mut c = config(&format!(
        "[alerts]\ngroup_wait = \"0s\"\n[[alerts.channels]]\nkind = \"alertmanager\"\nurl = \"{base}\"\n"
    ));
    c.service.instance = "web-2".into();
    let (observer, _guard) = Observer::builder(c).install_global(false).build().unwrap();
    let name = format!("qiflow_tier2_{}", std::process::id());
    let alert = Alert::new(&name, AlertLevel::Error)
        .summary("checkout 5xx above 5%")
        .label("route", "/orders");
    let fp = alert.fingerprint_value();
    observer.alert(alert);
    assert!(observer.flush(Duration::from_secs(20)));
    assert_eq!(observer.alerts().view().recent[0].outcome, "sent");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let list = || -> Vec<serde_json::Value> {
        runtime.block_on(async {
            let text = client
                .get(format!("{base}/api/v2/alerts"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
        })
    };
    let mine = |alerts: &[serde_json::Value]| {
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == name.as_str())
            .cloned()
    };
    let got = mine(&list()).unwrap_or_else(|| panic!("{name} not in Alertmanager"));
    assert_eq!(got["labels"]["severity"], "error");
    assert_eq!(got["labels"]["route"], "/orders");
    assert_eq!(got["labels"]["service"], "checkout");
    assert_eq!(got["labels"]["instance"], "web-2");
    assert_eq!(got["annotations"]["summary"], "checkout 5xx above 5%");
    assert_eq!(got["status"]["state"], "active");

    observer.alert(Alert::resolve(&fp));
    assert!(observer.flush(Duration::from_secs(20)));
    assert!(
        wait_until(Duration::from_secs(10), || mine(&list()).is_none()),
        "the resolve did not end {name} in Alertmanager"
    );
}
