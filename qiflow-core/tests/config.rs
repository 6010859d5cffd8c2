//! Configuration loading: defaults, files, `.env`, environment overrides, secrets, bad input.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use qiflow_core::config::{Loader, OverflowPolicy, ProblemKind, Rotation};
use qiflow_core::secret::Keyring;

const NO_ENV: [(&str, &str); 0] = [];

fn load(toml: &str) -> Result<qiflow_core::Config, qiflow_core::config::ConfigError> {
    Loader::new().toml_str(toml).env(NO_ENV).load()
}

fn problems(toml: &str) -> Vec<(ProblemKind, String, String)> {
    load(toml)
        .unwrap_err()
        .problems()
        .iter()
        .map(|p| (p.kind(), p.path().to_owned(), p.message().to_owned()))
        .collect()
}

#[test]
fn empty_config_gives_documented_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.service.name, "unknown_service");
    assert_eq!(c.logging.level, "info");
    assert_eq!(c.logging.rotation, Rotation::Daily);
    assert_eq!(c.logging.max_size, 100 * 1024 * 1024);
    assert_eq!(c.logging.max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(c.logging.overflow, OverflowPolicy::Block);
    assert_eq!(c.metrics.path, "/metrics");
    assert_eq!(c.alerts.rate_limit, 100);
    assert_eq!(c.server.addr.to_string(), "127.0.0.1:3000");
    assert_eq!(c.health.path, "/health");
}

// Sentry and channels of every kind: the default features.
#[cfg(all(feature = "sentry", feature = "email", feature = "http-channels"))]
#[test]
fn every_section_parses() {
    let c = load(
        r#"
[service]
name = "checkout"
environment = "production"
version = "1.4.2"

[logging]
level = "info,hyper=warn"
format = "pretty"
stdout = false
dir = "/var/log/checkout"
file_name = "checkout.log"
rotation = "hourly"
max_size = "64KiB"
max_backups = 3
max_age = "7d"
compress = "zstd"
access_log = false
queue_capacity = 1000
overflow = "drop"
redact = ["ssn", "card_number"]

[errors]
sentry_dsn = "https://abc@sentry.example.com/42"
sample_rate = 0.5
capture = "4xx+5xx"
recent_capacity = 50

[metrics]
enabled = true
path = "/internal/metrics"
buckets = [0.01, 0.1, 1.0]
max_routes = 50
listen = "127.0.0.1:9100"

[baseline]
window = "10s"
min_samples = 20
deviation_factor = 3.0
slow_request = "500ms"
state_file = "/tmp/baselines.json"

[audit]
enabled = true
sink = "postgres"
dir = "audit"
postgres_url = "postgres://qiflow:pw@127.0.0.1/qiflow"
batch_size = 500
flush_interval = "250ms"
retention = "90d"
signing_key = "0123456789abcdef0123"

[alerts]
min_level = "error"
cooldown = "10m"
group_wait = "5s"
rate_limit = 20

[[alerts.channels]]
kind = "email"
name = "ops-mail"
smtp_host = "127.0.0.1"
smtp_port = 2525
tls = "none"
username = "alerts"
password = "smtp-pw"
from = "alerts@example.com"
to = ["ops@example.com", "oncall@example.com"]

[[alerts.channels]]
kind = "dingtalk"
name = "dt"
url = "https://oapi.dingtalk.com/robot/send?access_token=t"
secret = "SECabc"
min_level = "critical"

[health]
path = "/healthz"
token = "health-token"

[server]
addr = "0.0.0.0:8080"
"#,
    )
    .unwrap();
    assert_eq!(c.logging.max_size, 64 * 1024);
    assert_eq!(c.logging.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(c.baseline.slow_request, Duration::from_millis(500));
    assert_eq!(c.audit.retention, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(c.alerts.channels.len(), 2);
    assert_eq!(c.alerts.channels[0].to.len(), 2);
    assert_eq!(
        c.alerts.channels[0].password.as_ref().unwrap().expose(),
        "smtp-pw"
    );
    assert_eq!(c.metrics.listen.unwrap().port(), 9100);
    // Every plain secret is warned about, by key path.
    let warned: Vec<&str> = c.warnings().iter().map(|w| w.path()).collect();
    for key in [
        "errors.sentry_dsn",
        "audit.postgres_url",
        "audit.signing_key",
        "health.token",
        "alerts.channels.ops-mail.password",
        "alerts.channels.dt.url",
        "alerts.channels.dt.secret",
    ] {
        assert!(warned.contains(&key), "no warning for {key}: {warned:?}");
    }
    // Debug output never shows a secret.
    let debug = format!("{c:?}");
    for secret in [
        "smtp-pw",
        "health-token",
        "SECabc",
        "0123456789abcdef0123",
        ":pw@",
    ] {
        assert!(!debug.contains(secret), "{secret} in Debug");
    }
}

#[test]
fn unknown_keys_are_named_with_their_full_path() {
    let found = problems(
        "[logging]\nlevl = \"debug\"\n[[alerts.channels]]\nkind = \"log\"\nsmtp_hots = \"x\"\n[nope]\na = 1\n",
    );
    let paths: Vec<&str> = found.iter().map(|(_, p, _)| p.as_str()).collect();
    assert!(paths.contains(&"logging.levl"), "{found:?}");
    assert!(paths.contains(&"alerts.channels.0.smtp_hots"), "{found:?}");
    assert!(paths.contains(&"nope"), "{found:?}");
    assert!(
        found
            .iter()
            .all(|(k, _, _)| *k == ProblemKind::UnknownKey || k.is_warning())
    );
}

#[test]
fn invalid_toml_gives_line_and_column() {
    let err = load("[service]\nname = \"a\"\nversion = = 3\n").unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.kind(), ProblemKind::Syntax);
    assert!(p.path().starts_with("line 3, column"), "{p}");
}

#[test]
fn wrong_types_name_the_key() {
    let found = problems("[logging]\nmax_backups = \"many\"\n");
    assert_eq!(found[0].0, ProblemKind::Type);
    assert_eq!(found[0].1, "logging.max_backups");
    let found = problems("[logging]\nmax_size = \"huge\"\n");
    assert_eq!(found[0].1, "logging.max_size");
    assert!(found[0].2.contains("100MiB"), "{found:?}");
    let found = problems("[baseline]\nwindow = \"soon\"\n");
    assert_eq!(found[0].1, "baseline.window");
    let found = problems("[logging]\nrotation = \"weekly\"\n");
    assert_eq!(found[0].1, "logging.rotation");
}

// Sentry, email and Slack values: the default features.
#[cfg(all(feature = "sentry", feature = "email", feature = "http-channels"))]
#[test]
fn values_are_range_checked() {
    let found = problems(
        r#"
[errors]
sample_rate = 2.0
sentry_dsn = "not a dsn"
[metrics]
buckets = [1.0, 0.5]
path = "metrics"
[baseline]
deviation_factor = 0.5
[audit]
sink = "postgres"
[[alerts.channels]]
kind = "email"
name = "mail"
to = ["not-an-address"]
[[alerts.channels]]
kind = "slack"
name = "mail"
"#,
    );
    let paths: Vec<&str> = found.iter().map(|(_, p, _)| p.as_str()).collect();
    for key in [
        "errors.sample_rate",
        "errors.sentry_dsn",
        "metrics.buckets",
        "metrics.path",
        "baseline.deviation_factor",
        "audit.postgres_url",
        "alerts.channels.mail.smtp_host",
        "alerts.channels.mail.from",
        "alerts.channels.mail.to.0",
        "alerts.channels.mail.url",
        "alerts.channels.mail.name",
    ] {
        assert!(paths.contains(&key), "no problem for {key}: {found:?}");
    }
    // A DSN problem never echoes the DSN.
    assert!(found.iter().all(|(_, _, m)| !m.contains("not a dsn")));
}

// Its channel is a webhook.
#[cfg(feature = "http-channels")]
#[test]
fn environment_overrides_nest_and_convert() {
    let c = Loader::new()
        .toml_str("[logging]\nlevel = \"info\"\n")
        .env([
            ("QIFLOW__LOGGING__LEVEL", "debug"),
            ("QIFLOW__LOGGING__MAX_BACKUPS", "3"),
            ("QIFLOW__LOGGING__STDOUT", "false"),
            ("QIFLOW__LOGGING__MAX_SIZE", "1MiB"),
            ("QIFLOW__LOGGING__REDACT", "ssn, iban"),
            ("QIFLOW__METRICS__BUCKETS", "0.1,1,10"),
            ("QIFLOW__ERRORS__SAMPLE_RATE", "0.25"),
            ("QIFLOW__ALERTS__CHANNELS__0__KIND", "webhook"),
            (
                "QIFLOW__ALERTS__CHANNELS__0__URL",
                "http://127.0.0.1:9/hook",
            ),
            ("QIFLOW__ALERTS__CHANNELS__0__SMTP_PORT", "2525"),
            ("QIFLOW_ADDR", "127.0.0.1:4000"),
            ("UNRELATED", "x"),
        ])
        .load()
        .unwrap();
    assert_eq!(c.logging.level, "debug");
    assert_eq!(c.logging.max_backups, 3);
    assert!(!c.logging.stdout);
    assert_eq!(c.logging.max_size, 1024 * 1024);
    assert_eq!(c.logging.redact, ["ssn", "iban"]);
    assert_eq!(c.metrics.buckets, [0.1, 1.0, 10.0]);
    assert_eq!(c.errors.sample_rate, 0.25);
    assert_eq!(c.alerts.channels[0].smtp_port, Some(2525));
    assert_eq!(c.server.addr.port(), 4000);
}

#[test]
fn bad_environment_overrides_are_named() {
    let err = Loader::new()
        .env([("QIFLOW__LOGGING__MAX_BACKUPS", "lots")])
        .load()
        .unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.kind(), ProblemKind::EnvOverride);
    assert_eq!(p.path(), "QIFLOW__LOGGING__MAX_BACKUPS");
    assert!(p.message().contains("integer"), "{p}");

    let err = Loader::new()
        .env([("QIFLOW__LOGGING__LEVL", "debug")])
        .load()
        .unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.path(), "logging.levl");
    assert!(p.message().contains("QIFLOW__LOGGING__LEVL"), "{p}");

    let err = Loader::new()
        .env([("QIFLOW__BASELINE__WINDOW", "forever")])
        .load()
        .unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.path(), "baseline.window");
    assert!(p.message().contains("QIFLOW__BASELINE__WINDOW"), "{p}");
}

#[test]
fn files_dotenv_and_real_environment_layer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qiflow.toml");
    std::fs::write(&file, "[service]\nname = \"from-file\"\nversion = \"1\"\n").unwrap();
    let dotenv = dir.path().join(".env");
    std::fs::write(
        &dotenv,
        "QIFLOW__SERVICE__VERSION=from-dotenv\nQIFLOW__SERVICE__ENVIRONMENT=from-dotenv\n",
    )
    .unwrap();
    let c = Loader::new()
        .env([
            ("QIFLOW_CONFIG", file.display().to_string()),
            ("QIFLOW__SERVICE__ENVIRONMENT", "from-env".to_owned()),
        ])
        .dotenv(Some(dotenv))
        .load()
        .unwrap();
    assert_eq!(c.service.name, "from-file");
    assert_eq!(c.service.version, "from-dotenv");
    assert_eq!(c.service.environment, "from-env");
}

#[test]
fn a_missing_file_is_named() {
    let err = Loader::new()
        .file("/nonexistent/qiflow.toml")
        .env(NO_ENV)
        .load()
        .unwrap_err();
    assert_eq!(err.problems()[0].kind(), ProblemKind::File);
    assert!(
        err.to_string().contains("/nonexistent/qiflow.toml"),
        "{err}"
    );
}

#[cfg(all(feature = "sentry", feature = "email"))]
#[test]
fn encrypted_values_decrypt_into_secrets() {
    let key = Keyring::generate_key();
    let keys = Keyring::parse(&key).unwrap();
    let dsn = keys
        .encrypt("errors.sentry_dsn", "https://public@127.0.0.1/7")
        .unwrap();
    let pw = keys
        .encrypt("alerts.channels.mail.password", "smtp-pw")
        .unwrap();
    let toml = format!(
        "[errors]\nsentry_dsn = \"{dsn}\"\n[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"email\"\nname = \"mail\"\nsmtp_host = \"127.0.0.1\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\npassword = \"{pw}\"\n"
    );
    let c = Loader::new()
        .toml_str(toml.clone())
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap();
    assert_eq!(
        c.errors.sentry_dsn.as_ref().unwrap().expose(),
        "https://public@127.0.0.1/7"
    );
    assert_eq!(
        c.alerts.channels[0].password.as_ref().unwrap().expose(),
        "smtp-pw"
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    // No key: each encrypted value is a problem naming its key path and the variable.
    let err = Loader::new()
        .toml_str(toml.clone())
        .env(NO_ENV)
        .load()
        .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path()).collect();
    assert_eq!(
        paths,
        ["alerts.channels.mail.password", "errors.sentry_dsn"]
    );
    assert!(err.to_string().contains("QIFLOW_MASTER_KEY"));

    // The wrong key.
    let err = Loader::new()
        .toml_str(toml.clone())
        .env([("QIFLOW_MASTER_KEY", Keyring::generate_key())])
        .load()
        .unwrap_err();
    assert!(
        err.problems()
            .iter()
            .all(|p| p.kind() == ProblemKind::Secret)
    );
    assert!(!err.to_string().contains("smtp-pw"));

    // A value moved to another key.
    let moved = format!("[health]\ntoken = \"{dsn}\"\n[audit]\nenabled = false\n");
    let err = Loader::new()
        .toml_str(moved)
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap_err();
    assert_eq!(err.problems()[0].path(), "health.token");
    assert!(
        err.to_string()
            .contains("qiflow encrypt --name health.token")
    );

    // An encrypted value can come from the environment too.
    let token = keys.encrypt("health.token", "tok").unwrap();
    let c = Loader::new()
        .env([
            ("QIFLOW_MASTER_KEY", key.clone()),
            ("QIFLOW__HEALTH__TOKEN", token),
        ])
        .load()
        .unwrap();
    assert_eq!(c.health.token.as_ref().unwrap().expose(), "tok");
}

#[test]
fn a_single_underscore_override_is_warned_about() {
    let c = Loader::new()
        .env([
            ("QIFLOW_LOGGING__LEVEL", "debug"),
            ("QIFLOW_ADDR", "127.0.0.1:1"),
        ])
        .load()
        .unwrap();
    assert_eq!(c.logging.level, "info");
    let w: Vec<&str> = c.warnings().iter().map(|w| w.path()).collect();
    assert!(w.contains(&"QIFLOW_LOGGING__LEVEL"), "{w:?}");
    assert!(!w.contains(&"QIFLOW_ADDR"), "{w:?}");
}

#[test]
fn a_failed_load_still_reports_its_warnings_and_bad_channel_names() {
    let err = load("[health]\ntoken = \"plain\"\n[errors]\nsample_rate = 9.0\n[[alerts.channels]]\nkind = \"log\"\nname = \"\"\n").unwrap_err();
    let kinds: Vec<(ProblemKind, &str)> = err
        .problems()
        .iter()
        .map(|p| (p.kind(), p.path()))
        .collect();
    assert!(
        kinds.contains(&(ProblemKind::Value, "errors.sample_rate")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(ProblemKind::Value, "alerts.channels.0.name")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(ProblemKind::PlainSecret, "health.token")),
        "{kinds:?}"
    );
    // Errors come before warnings.
    assert!(!err.problems()[0].kind().is_warning());
}

/// A CA certificate (PEM) with no use but being one: `ca_file` checks need a real file.
#[cfg(feature = "email")]
const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUKVQalKB3OfkGeIjrBvuCFJqWJvcwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOcWlmbG93IHRlc3QgQ0EwIBcNMjYxMjA2MDMxODU4WhgPMjEy
NjExMTIwMzE4NThaMBkxFzAVBgNVBAMMDnFpZmxvdyB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEEmPV9IJ/i9JBgNb/JlkFnA0943teJgReQd1OPtjt
XZeme5Zcb2tXl8rjOhc5045KzNcMVDNPS8vkzq6KJiX9k6NTMFEwHQYDVR0OBBYE
FByOjoGN2Y0rEZcVeqrlgHVvwuc1MB8GA1UdIwQYMBaAFByOjoGN2Y0rEZcVeqrl
gHVvwuc1MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgCNn7xDNt
/F0h30u0sraOOdJ661u/TcGmbwoXtiyNEPUCIQD4Je/m7dn1rprcyqD6XktkxLxF
xxORvSGTGt7S35+29w==
-----END CERTIFICATE-----
";

#[cfg(feature = "email")]
#[test]
fn an_email_ca_file_is_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TEST_CA_PEM).unwrap();
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, [0x30, 0x82, 0x01, 0x89]).unwrap();
    let missing = dir.path().join("missing.pem");
    let channel = |name: &str, kind: &str, tls: &str, ca_file: &std::path::Path| {
        format!(
            "[[alerts.channels]]\nkind = \"{kind}\"\nname = \"{name}\"\nsmtp_host = \"smtp.example.com\"\nurl = \"https://hooks.example.com/x\"\ntls = \"{tls}\"\nca_file = {:?}\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n",
            ca_file.display().to_string()
        )
    };

    let good = load(&format!(
        "[audit]\nenabled = false\n{}",
        channel("mail", "email", "starttls", &ca)
    ))
    .expect("a readable PEM CA is accepted");
    assert_eq!(
        good.alerts.channels[0].ca_file.as_deref(),
        Some(ca.as_path())
    );

    let toml = [
        channel("missing", "email", "starttls", &missing),
        channel("der", "email", "tls", &not_pem),
        channel("plain", "email", "none", &ca),
        channel("hook", "webhook", "starttls", &ca),
    ]
    .concat();
    let found = problems(&toml);
    let message = |key: &str| {
        found
            .iter()
            .find(|(_, path, _)| path == key)
            .map(|(_, _, m)| m.clone())
            .unwrap_or_else(|| panic!("no problem for {key}: {found:?}"))
    };
    let m = message("alerts.channels.missing.ca_file");
    assert!(
        m.contains("cannot read") && m.contains("missing.pem"),
        "{m}"
    );
    let m = message("alerts.channels.der.ca_file");
    assert!(m.contains("no PEM certificate"), "{m}");
    let m = message("alerts.channels.plain.ca_file");
    assert!(m.contains("tls is \"none\""), "{m}");
    let m = message("alerts.channels.hook.ca_file");
    assert!(
        m.contains("only by email channels, not by a webhook channel"),
        "{m}"
    );
}

#[test]
fn alert_group_by_labels_are_checked() {
    let config =
        load("[audit]\nenabled = false\n[alerts]\ngroup_by = [\"alertname\", \"route\"]\n")
            .expect("label names are accepted");
    assert_eq!(config.alerts.group_by, ["alertname", "route"]);
    let found = problems("[alerts]\ngroup_by = [\" \", \"route\", \"route\"]\n");
    let paths: Vec<&str> = found.iter().map(|(_, p, _)| p.as_str()).collect();
    assert!(paths.contains(&"alerts.group_by.0"), "{found:?}");
    assert!(paths.contains(&"alerts.group_by.2"), "{found:?}");
    assert!(!paths.contains(&"alerts.group_by.1"), "{found:?}");
}

#[test]
fn log_file_mode_is_octal_and_checked() {
    assert_eq!(load("").unwrap().logging.file_mode, 0o640);
    let c = load("[logging]\nfile_mode = \"0600\"\n[audit]\nenabled = false\n").unwrap();
    assert_eq!(c.logging.file_mode, 0o600);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let c = Loader::new()
        .env([("QIFLOW__LOGGING__FILE_MODE", "644")])
        .load()
        .unwrap();
    assert_eq!(c.logging.file_mode, 0o644);

    // Not octal, or not a string: a type error naming the key and the form.
    for bad in ["\"rw-r-----\"", "\"0648\"", "640"] {
        let found = problems(&format!("[logging]\nfile_mode = {bad}\n"));
        assert_eq!(found[0].0, ProblemKind::Type, "{bad}: {found:?}");
        assert_eq!(found[0].1, "logging.file_mode", "{bad}");
        assert!(found[0].2.contains("\"0640\""), "{bad}: {found:?}");
    }
    // Unusable: the owner cannot write, or execute bits.
    for bad in ["0400", "0700", "0750", "4640"] {
        let found = problems(&format!("[logging]\nfile_mode = \"{bad}\"\n"));
        assert_eq!(found[0].0, ProblemKind::Value, "{bad}: {found:?}");
        assert_eq!(found[0].1, "logging.file_mode");
        assert!(found[0].2.contains(bad), "{found:?}");
    }
    // Writable by others: allowed, with a warning that it is unsafe (`check --strict` fails).
    let c = load("[logging]\nfile_mode = \"0666\"\n[audit]\nenabled = false\n").unwrap();
    let w = &c.warnings()[0];
    assert_eq!(
        (w.kind(), w.path()),
        (ProblemKind::Unsafe, "logging.file_mode")
    );
    assert!(w.kind().fails_strict());
}

#[cfg(feature = "http-channels")]
#[test]
fn header_values_are_secrets_that_decrypt_under_their_key_path() {
    let key = Keyring::generate_key();
    let keys = Keyring::parse(&key).unwrap();
    let auth = keys
        .encrypt(
            "alerts.channels.hook.headers.Authorization",
            "Bearer abc123",
        )
        .unwrap();
    let toml = format!(
        "[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"https://example.com/h\"\nheaders = {{ Authorization = \"{auth}\", X-Api-Key = \"plain-key\", Content-Type = \"text/plain\" }}\n"
    );
    let c = Loader::new()
        .toml_str(toml.clone())
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap();
    let headers = &c.alerts.channels[0].headers;
    assert_eq!(headers["Authorization"].expose(), "Bearer abc123");
    assert_eq!(format!("{:?}", headers["Authorization"]), "[REDACTED]");
    assert!(!format!("{c:?}").contains("abc123"));
    // The plain credential-like header is warned about; the plain Content-Type and the
    // encrypted Authorization are not.
    let warned: Vec<(ProblemKind, &str)> =
        c.warnings().iter().map(|w| (w.kind(), w.path())).collect();
    assert!(
        warned.contains(&(
            ProblemKind::PlainSecret,
            "alerts.channels.hook.headers.X-Api-Key"
        )),
        "{warned:?}"
    );
    assert!(
        !warned
            .iter()
            .any(|(_, p)| p.ends_with("Content-Type") || p.ends_with("Authorization")),
        "{warned:?}"
    );
    assert!(
        !c.warnings()
            .iter()
            .any(|w| w.to_string().contains("plain-key"))
    );

    // Moved to another header, it does not decrypt.
    let moved = toml.replace("Authorization = ", "Proxy-Authorization = ");
    let err = Loader::new()
        .toml_str(moved)
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap_err();
    assert_eq!(
        err.problems()[0].path(),
        "alerts.channels.hook.headers.Proxy-Authorization"
    );

    // One header from the environment: its name is lowercased, and so is its key path.
    let token = keys
        .encrypt("alerts.channels.hook.headers.x-token", "t0k")
        .unwrap();
    let c = Loader::new()
        .toml_str("[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"https://example.com/h\"\n")
        .env([
            ("QIFLOW_MASTER_KEY", key.as_str()),
            ("QIFLOW__ALERTS__CHANNELS__0__HEADERS__X-TOKEN", token.as_str()),
        ])
        .load()
        .unwrap();
    assert_eq!(c.alerts.channels[0].headers["x-token"].expose(), "t0k");
    // A whole table from the environment.
    let c = Loader::new()
        .toml_str("[audit]\nenabled = false\n[[alerts.channels]]\nkind = \"webhook\"\nurl = \"https://example.com/h\"\n")
        .env([("QIFLOW__ALERTS__CHANNELS__0__HEADERS", "{ X-Team = \"ops\" }")])
        .load()
        .unwrap();
    assert_eq!(c.alerts.channels[0].headers["X-Team"].expose(), "ops");
}

#[test]
fn admin_defaults_and_the_older_listen_key() {
    let c = load("").unwrap();
    assert_eq!(c.admin.token_file, std::path::Path::new("data/admin-token"));
    assert_eq!(c.admin.public_metrics, None);
    assert!(c.admin.tokens.is_empty());
    assert_eq!(c.alerts.max_silence, Duration::from_secs(24 * 3600));

    let c = load("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
    assert_eq!(c.admin.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.operator_listener(), c.admin.listen);
    let warning = c
        .warnings()
        .iter()
        .find(|w| w.path() == "metrics.listen")
        .expect("a warning about the older name");
    assert!(warning.message().contains("admin.listen"), "{warning:?}");

    let found =
        problems("[metrics]\nlisten = \"127.0.0.1:9464\"\n[admin]\nlisten = \"127.0.0.1:9465\"\n");
    assert!(
        found.iter().any(|(k, p, m)| *k == ProblemKind::Value
            && p == "metrics.listen"
            && m.contains("remove it")),
        "{found:?}"
    );
}

#[test]
fn admin_tokens_are_checked_with_their_key_paths() {
    let found = problems(
        r#"
[[admin.tokens]]
name = "ci"
token = "short"

[[admin.tokens]]
name = "bad name!"
token = "0123456789abcdef0123456789abcdef"

[[admin.tokens]]
name = "ops"
token = "0123456789abcdef0123456789abcdef"
scope = "write"

[[admin.tokens]]
name = "ops"
token = "fedcba9876543210fedcba9876543210"

[[admin.tokens]]
name = "spaces"
token = "has a space in it 0123456789"
"#,
    );
    let has = |path: &str, text: &str| {
        found
            .iter()
            .any(|(k, p, m)| *k == ProblemKind::Value && p == path && m.contains(text))
    };
    assert!(has("admin.tokens.ci.token", "at least 16"), "{found:?}");
    assert!(
        has("admin.tokens.bad name!.name", "letters, digits"),
        "{found:?}"
    );
    assert!(
        has("admin.tokens.ops.token", "same as another token's"),
        "{found:?}"
    );
    assert!(
        has("admin.tokens.ops.name", "names two tokens"),
        "{found:?}"
    );
    assert!(has("admin.tokens.spaces.token", "whitespace"), "{found:?}");

    let scope = problems(
        "[[admin.tokens]]\nname = \"x\"\ntoken = \"0123456789abcdef\"\nscope = \"admin\"\n",
    );
    assert!(
        scope
            .iter()
            .any(|(k, p, _)| *k == ProblemKind::Type && p.starts_with("admin.tokens")),
        "{scope:?}"
    );
    // Short but allowed: advised to be longer; plain: warned about as a plain secret.
    let c = load("[[admin.tokens]]\nname = \"x\"\ntoken = \"0123456789abcdef\"\n").unwrap();
    let paths: Vec<&str> = c.warnings().iter().map(|w| w.path()).collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "admin.tokens.x.token")
            .count(),
        2,
        "{:?}",
        c.warnings()
    );
    assert_eq!(format!("{:?}", c.admin.tokens[0].token), "[REDACTED]");
}

#[test]
fn an_admin_token_may_be_encrypted_for_its_key_path() {
    let key = Keyring::generate_key();
    let keyring = Keyring::parse(&key).unwrap();
    let value = keyring
        .encrypt("admin.tokens.ops.token", "0123456789abcdef0123456789abcdef")
        .unwrap();
    let toml =
        format!("[[admin.tokens]]\nname = \"ops\"\ntoken = \"{value}\"\nscope = \"write\"\n");
    let c = Loader::new()
        .toml_str(toml.as_str())
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap();
    assert_eq!(
        c.admin.tokens[0].token.expose(),
        "0123456789abcdef0123456789abcdef"
    );
    assert!(
        c.warnings()
            .iter()
            .all(|w| w.path() != "admin.tokens.ops.token")
    );
    // Moved to another token's name, it fails to decrypt.
    let moved = toml.replace("name = \"ops\"", "name = \"other\"");
    let e = Loader::new()
        .toml_str(moved.as_str())
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap_err();
    assert!(
        e.problems()
            .iter()
            .any(|p| p.path() == "admin.tokens.other.token"),
        "{e}"
    );
}

// The example names Sentry and the email and HTTP channels.
#[cfg(all(feature = "sentry", feature = "email", feature = "http-channels"))]
#[test]
fn the_complete_example_in_the_docs_loads() {
    let doc = include_str!("../../docs/configuration.md");
    let section = doc
        .split("## A complete `qiflow.toml`")
        .nth(1)
        .expect("docs/configuration.md has the complete example");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block");
    let c = load(toml).unwrap_or_else(|e| panic!("the documented example does not load:\n{e}"));
    assert_eq!(c.admin.tokens.len(), 1);
    assert_eq!(c.alerts.max_silence, Duration::from_secs(24 * 3600));
}

#[test]
fn the_audit_witness_defaults_beside_the_trail_and_is_checked() {
    let c = load("").unwrap();
    assert_eq!(c.audit.witness, None);
    assert_eq!(
        c.audit.witness_path(),
        std::path::Path::new("data/audit.witness.json")
    );
    let c =
        load("[audit]\ndir = \"/srv/trail\"\nwitness = \"/var/backups/witness.json\"\n").unwrap();
    assert_eq!(
        c.audit.witness_path(),
        std::path::Path::new("/var/backups/witness.json")
    );
    let found = problems("[audit]\nwitness = \"\"\n");
    assert!(
        found
            .iter()
            .any(|(_, p, m)| p == "audit.witness" && m.contains("is empty")),
        "{found:?}"
    );
    let c = load("[audit]\ndir = \"data/audit\"\nwitness = \"data/audit/w.json\"\n").unwrap();
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.path() == "audit.witness" && w.message().contains("inside audit.dir")),
        "{:?}",
        c.warnings()
    );
}

#[test]
fn the_postgres_url_tls_parameters_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let ok = format!(
        "[audit]\nsink = \"postgres\"\npostgres_url = \"postgres://app@db/app?sslmode=verify-full&sslrootcert={}\"\n",
        ca.display()
    );
    assert!(load(&ok).is_ok(), "{:?}", load(&ok).err());
    for (url, says) in [
        (
            "postgres://app@db/app?sslmode=verify",
            "sslmode=verify is not supported",
        ),
        ("postgres://app@db/app?sslmode=allow", "is not supported"),
        (
            "postgres://app@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "sslrootcert=/nonexistent/ca.pem: no such file",
        ),
    ] {
        let found = problems(&format!(
            "[audit]\nsink = \"postgres\"\npostgres_url = \"{url}\"\n"
        ));
        assert!(
            found
                .iter()
                .any(|(_, p, m)| p == "audit.postgres_url" && m.contains(says)),
            "{url}: {found:?}"
        );
    }
}

#[test]
fn an_instance_id_is_checked_naming_its_key() {
    for bad in ["web 1", "web/1", "", "ü", &"x".repeat(129)] {
        let toml = format!("[service]\ninstance = {bad:?}\n");
        if bad.is_empty() {
            // Unset: generated at start.
            assert!(load(&toml).is_ok());
            continue;
        }
        let found = problems(&toml);
        assert!(
            found
                .iter()
                .any(|(_, path, message)| path == "service.instance"
                    && message.contains("not an instance id")),
            "{bad:?}: {found:?}"
        );
    }
    for good in ["web-1", "api.eu-1:8080", "pod_7", &"x".repeat(128)] {
        let c = load(&format!("[service]\ninstance = {good:?}\n")).unwrap();
        assert_eq!(c.service.instance, good);
    }
}
