//! Canaries: a configuration file whose every secret-bearing key holds a distinct canary value
//! (some as `ENC:` values), loaded as a service would load it. Nothing qiflow prints or serves may
//! contain one: `{:?}`/`{:#?}`/`{}` of the whole `Config`, its warnings and errors, every built
//! channel, sink and reporter, the `Observer`, the JSON views and `/metrics`, the errors of sends
//! that fail (also against a server that echoes the request back), and `qiflow check`.
//!
//! Every canary contains [`MARK`], which no other text in these tests does, so a leak of any of
//! them, whole or in part, is found by one search.
// A configuration with every secret: Sentry and every channel kind (the default features).
#![cfg(all(feature = "sentry", feature = "email", feature = "http-channels"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use qiflow_core::Observer;
use qiflow_core::alert::channels::from_config;
use qiflow_core::alert::{Alert, AlertChannel, AlertLevel, Notice, Notification};
use qiflow_core::config::{Loader, SECRET_KEYS, is_secret_key};
use qiflow_core::secret::Keyring;

/// In every canary, and nowhere else.
const MARK: &str = "cnry";

/// The key path of each canary, and the canary (a part of the key's value).
const CANARIES: &[(&str, &str)] = &[
    ("errors.sentry_dsn", "cnry-dsn-key-41a7"),
    ("audit.postgres_url", "cnry-pg-password-5c2e"),
    ("audit.signing_key", "cnry-signing-key-88b1d0e2f3"),
    ("health.token", "cnry-health-token-0d9e"),
    ("admin.tokens.ops.token", "cnry-admin-token-ee77aa90"),
    ("alerts.channels.hook.url", "cnry-webhook-path-11aa"),
    ("alerts.channels.hook.secret", "cnry-webhook-secret-33cc"),
    (
        "alerts.channels.hook.headers.Authorization",
        "cnry-webhook-auth-44dd",
    ),
    (
        "alerts.channels.hook.headers.X-Api-Key",
        "cnry-webhook-apikey-55ee",
    ),
    ("alerts.channels.slack.url", "cnry-slack-token-66ff"),
    ("alerts.channels.ding.url", "cnry-ding-token-7700"),
    ("alerts.channels.ding.secret", "cnry-ding-secret-8811"),
    ("alerts.channels.sms.url", "cnry-sms-urlkey-9922"),
    ("alerts.channels.sms.token", "cnry-sms-token-aa33"),
    (
        "alerts.channels.sms.headers.X-Gateway-Secret",
        "cnry-sms-header-bb44",
    ),
    ("alerts.channels.am.url", "cnry-am-password-cc55"),
    ("alerts.channels.am.urls.0", "cnry-am2-password-dd66"),
    ("alerts.channels.mail.password", "cnry-smtp-password-dd66"),
    ("tracing.headers.X-Honeycomb-Team", "cnry-otlp-header-ee88"),
];

/// Keys given as `ENC:` values, so the decrypted path is covered too.
const ENCRYPTED: &[&str] = &[
    "errors.sentry_dsn",
    "audit.signing_key",
    "alerts.channels.hook.headers.Authorization",
    "alerts.channels.ding.secret",
    "alerts.channels.mail.password",
    "admin.tokens.ops.token",
    "alerts.channels.am.urls.0",
];

fn canary(path: &str) -> &'static str {
    CANARIES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, c)| *c)
        .unwrap_or_else(|| panic!("no canary for {path}"))
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The canary configuration: HTTP channels at `port`, SMTP and Sentry at `closed`, files under
/// `dir`. Keys of [`ENCRYPTED`] are encrypted with `keyring`.
fn canary_toml(port: u16, closed: u16, dir: &Path, keyring: &Keyring) -> String {
    let value = |path: &str, plain: String| -> String {
        if ENCRYPTED.contains(&path) {
            keyring.encrypt(path, &plain).unwrap()
        } else {
            plain
        }
    };
    let q = |path: &str, plain: String| format!("{:?}", value(path, plain));
    let c = canary;
    let dir = dir.display();
    format!(
        r#"
[service]
name = "canary-service"
state_dir = "{dir}/state"

[logging]
dir = "{dir}/logs"
stdout = false

[metrics]
global_labels = false

[errors]
sentry_dsn = {dsn}

[audit]
dir = "{dir}/audit"
postgres_url = {pg}
signing_key = {signing}

[baseline]
state_file = "{dir}/baselines.json"

[alerts]
state_file = "{dir}/alerts.json"
group_wait = "10ms"
retry_initial = "10ms"
retry_max = "20ms"
retry_deadline = "200ms"

[health]
token = {health}

[tracing]
otlp_endpoint = "http://127.0.0.1:{closed}/v1/traces"
timeout = "2s"
headers = {{ X-Honeycomb-Team = {otlp_header} }}

[[admin.tokens]]
name = "ops"
token = {admin_token}
scope = "write"

[[alerts.channels]]
kind = "webhook"
name = "hook"
url = {hook_url}
secret = {hook_secret}
timeout = "2s"
headers = {{ Authorization = {hook_auth}, X-Api-Key = {hook_key}, Content-Type = "application/json" }}

[[alerts.channels]]
kind = "slack"
name = "slack"
url = {slack_url}
timeout = "2s"

[[alerts.channels]]
kind = "dingtalk"
name = "ding"
url = {ding_url}
secret = {ding_secret}
timeout = "2s"

[[alerts.channels]]
kind = "sms"
name = "sms"
url = {sms_url}
token = {sms_token}
to = ["+10000000000"]
timeout = "2s"
headers = {{ Authorization = "Bearer {{{{token}}}}", X-Gateway-Secret = {sms_header} }}

[[alerts.channels]]
kind = "alertmanager"
name = "am"
url = {am_url}
urls = [{am_url2}]
timeout = "2s"

[[alerts.channels]]
kind = "email"
name = "mail"
smtp_host = "127.0.0.1"
smtp_port = {closed}
tls = "none"
username = "alerts"
password = {smtp_password}
from = "alerts@example.com"
to = ["oncall@example.com"]
timeout = "2s"
"#,
        dsn = q(
            "errors.sentry_dsn",
            format!("http://{}@127.0.0.1:{closed}/42", c("errors.sentry_dsn"))
        ),
        pg = q(
            "audit.postgres_url",
            format!(
                "postgres://qiflow:{}@127.0.0.1:{closed}/qiflow",
                c("audit.postgres_url")
            )
        ),
        signing = q("audit.signing_key", c("audit.signing_key").to_owned()),
        health = q("health.token", c("health.token").to_owned()),
        otlp_header = q(
            "tracing.headers.X-Honeycomb-Team",
            c("tracing.headers.X-Honeycomb-Team").to_owned()
        ),
        admin_token = q(
            "admin.tokens.ops.token",
            c("admin.tokens.ops.token").to_owned()
        ),
        hook_url = q(
            "alerts.channels.hook.url",
            format!(
                "http://127.0.0.1:{port}/hooks/{}?token=x{}",
                c("alerts.channels.hook.url"),
                c("alerts.channels.hook.url")
            )
        ),
        hook_secret = q(
            "alerts.channels.hook.secret",
            c("alerts.channels.hook.secret").to_owned()
        ),
        hook_auth = q(
            "alerts.channels.hook.headers.Authorization",
            format!("Bearer {}", c("alerts.channels.hook.headers.Authorization"))
        ),
        hook_key = q(
            "alerts.channels.hook.headers.X-Api-Key",
            c("alerts.channels.hook.headers.X-Api-Key").to_owned()
        ),
        slack_url = q(
            "alerts.channels.slack.url",
            format!(
                "http://127.0.0.1:{port}/services/T000/B000/{}",
                c("alerts.channels.slack.url")
            )
        ),
        ding_url = q(
            "alerts.channels.ding.url",
            format!(
                "http://127.0.0.1:{port}/robot/send?access_token={}",
                c("alerts.channels.ding.url")
            )
        ),
        ding_secret = q(
            "alerts.channels.ding.secret",
            c("alerts.channels.ding.secret").to_owned()
        ),
        sms_url = q(
            "alerts.channels.sms.url",
            format!(
                "http://127.0.0.1:{port}/sms?key={}&to={{{{to|url}}}}",
                c("alerts.channels.sms.url")
            )
        ),
        sms_token = q(
            "alerts.channels.sms.token",
            c("alerts.channels.sms.token").to_owned()
        ),
        sms_header = q(
            "alerts.channels.sms.headers.X-Gateway-Secret",
            c("alerts.channels.sms.headers.X-Gateway-Secret").to_owned()
        ),
        am_url = q(
            "alerts.channels.am.url",
            format!(
                "http://admin:{}@127.0.0.1:{port}/",
                c("alerts.channels.am.url")
            )
        ),
        // A second member of the cluster, down (a closed port): its failure is logged, and
        // the log must not carry its credentials.
        am_url2 = q(
            "alerts.channels.am.urls.0",
            format!(
                "http://admin:{}@127.0.0.1:{closed}/",
                c("alerts.channels.am.urls.0")
            )
        ),
        smtp_password = q(
            "alerts.channels.mail.password",
            c("alerts.channels.mail.password").to_owned()
        ),
    )
}

/// Every form a canary could leak in: the mark itself, its hex, and the Basic credentials an
/// HTTP client makes of the Alertmanager URL's user and password.
fn leaks(text: &str) -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("admin:{}", canary("alerts.channels.am.url")));
    let hex: String = MARK.bytes().map(|b| format!("{b:02x}")).collect();
    let mut found = Vec::new();
    for form in [MARK, &hex, &basic] {
        if let Some(at) = text.find(form) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(60)
                .map_or(0, |(i, _)| i);
            let end = (at + 60).min(text.len());
            let end = (end..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            found.push(format!("{form:?} in …{}…", &text[start..end]));
        }
    }
    found
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "{what} shows a canary: {found:#?}");
}

struct Setup {
    _dir: tempfile::TempDir,
    key: String,
    toml: String,
    config: qiflow_core::Config,
}

fn setup(port: u16) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = Keyring::generate_key();
    let keyring = Keyring::parse(&key).unwrap();
    let toml = canary_toml(port, closed_port(), dir.path(), &keyring);
    let config = Loader::new()
        .toml_str(toml.clone())
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap_or_else(|e| panic!("the canary configuration loads: {e}"));
    Setup {
        _dir: dir,
        key,
        toml,
        config,
    }
}

#[test]
fn the_canary_file_sets_every_secret_key_and_only_those_hold_canaries() {
    let s = setup(closed_port());
    assert!(s.toml.contains("ENC:v1:"));
    let secrets = s.config.secrets();
    let paths: BTreeSet<&str> = secrets.iter().map(|(p, _)| p.as_str()).collect();
    // Every secret that is set is a secret key, and every secret key is set somewhere here.
    for path in &paths {
        assert!(is_secret_key(path), "{path} is not in SECRET_KEYS");
    }
    for pattern in SECRET_KEYS {
        let probe = pattern.replace('*', "x");
        let covered = paths.iter().any(|p| {
            p.split('.').count() == probe.split('.').count()
                && p.split('.')
                    .zip(pattern.split('.'))
                    .all(|(a, b)| b == "*" || a == b)
        });
        assert!(covered, "the canary file sets no key of {pattern}");
    }
    // Each canary sits in its key, decrypted.
    for (path, canary) in CANARIES {
        let (_, value) = secrets
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} is not among Config::secrets()"));
        assert!(value.expose().contains(canary), "{path}");
    }
    // No canary sits in a key that is not a secret.
    for (path, value) in &secrets {
        if value.expose().contains(MARK) {
            assert!(CANARIES.iter().any(|(p, _)| p == path), "{path}");
        }
    }
}

#[test]
fn debug_display_and_serde_of_the_config_and_everything_built_show_no_canary() {
    let s = setup(closed_port());
    let config = &s.config;
    assert_clean("Config {:?}", &format!("{config:?}"));
    assert_clean("Config {:#?}", &format!("{config:#?}"));
    assert_clean(
        "Config as JSON",
        &serde_json::to_string(config).expect("the config serializes"),
    );
    assert_clean(
        "Config as TOML",
        &toml::to_string(config).expect("the config serializes to TOML"),
    );
    for (path, secret) in config.secrets() {
        assert_clean(&path, &format!("{secret:?} {secret}"));
    }
    for w in config.warnings() {
        assert_clean("a warning", &format!("{w} {w:?}"));
    }
    // The plain credential-like header is warned about (by path), the template one is not.
    let warned: Vec<&str> = config.warnings().iter().map(|w| w.path()).collect();
    assert!(
        warned.contains(&"alerts.channels.hook.headers.X-Api-Key"),
        "{warned:?}"
    );
    assert!(warned.contains(&"alerts.channels.sms.headers.X-Gateway-Secret"));
    assert!(!warned.contains(&"alerts.channels.sms.headers.Authorization"));
    assert!(!warned.contains(&"alerts.channels.hook.headers.Content-Type"));
    assert!(!warned.contains(&"alerts.channels.hook.headers.Authorization"));

    // Every channel, built as init builds it.
    for i in 0..config.alerts.channels.len() {
        let channel = from_config(config, i).unwrap();
        assert_clean(
            &format!("channel {i}"),
            &format!("{channel:?} {channel:#?}"),
        );
    }

    // The reporter, the sinks.
    let dsn = config.errors.sentry_dsn.as_ref().unwrap();
    let reporter = qiflow_core::capture::SentryReporter::new(
        dsn.expose(),
        qiflow_core::capture::SentryOptions::new("test", "1.0"),
    )
    .unwrap();
    assert_clean("SentryReporter", &format!("{reporter:?}"));
    let key = config.audit.signing_key.as_ref().unwrap();
    let sink = qiflow_core::audit::FileAuditSink::builder(&config.audit.dir)
        .signing_key(Some(key.expose().as_bytes()));
    assert_clean("FileAuditSinkBuilder", &format!("{sink:?}"));
    let sink = sink.open().unwrap();
    assert_clean("FileAuditSink", &format!("{sink:?}"));
    let url = config.audit.postgres_url.as_ref().unwrap();
    let pg = qiflow_core::audit::PostgresAuditSink::new(
        url.expose(),
        Some(key.expose().as_bytes()),
        None,
        std::sync::Arc::new(qiflow_core::clock::SystemClock),
    )
    .unwrap();
    assert_clean("PostgresAuditSink", &format!("{pg:?} {:?}", pg.store()));
    // Its connection error, against a closed port.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broken = runtime
        .block_on(qiflow_core::audit::verify_postgres(url.expose(), None))
        .expect_err("nothing listens there");
    assert_clean("verify_postgres's error", &format!("{broken} {broken:?}"));

    // A configuration that fails to load: every problem and the error itself.
    let bad = s.toml.replace("[service]", "[service]\nnope = 1");
    let err = Loader::new()
        .toml_str(bad)
        .env([("QIFLOW_MASTER_KEY", s.key.as_str())])
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("service.nope"), "{err}");
    assert_clean("ConfigError", &format!("{err} {err:?}"));

    // The observer and the guard.
    let (observer, guard) = Observer::builder(config.clone())
        .install_global(false)
        .build()
        .unwrap();
    assert_clean("Observer", &format!("{observer:?} {guard:?}"));
    assert_clean("Alerts", &format!("{:?}", observer.alerts()));
    drop(guard);
}

#[test]
fn wrong_types_and_encrypted_values_in_plain_keys_never_repeat_a_secret() {
    let key = Keyring::generate_key();
    let keyring = Keyring::parse(&key).unwrap();
    let load = |toml: String| {
        Loader::new()
            .toml_str(toml)
            .env([("QIFLOW_MASTER_KEY", key.as_str())])
            .load()
            .unwrap_err()
    };
    // A header table given as a string, a URL given as a table: serde would quote them.
    for toml in [
        "[[alerts.channels]]\nkind = \"webhook\"\nurl = \"http://h/\"\nheaders = \"Authorization: Bearer cnry-1\"\n".to_owned(),
        "[[alerts.channels]]\nkind = \"webhook\"\nurl = { u = \"http://cnry-2@h/\" }\n".to_owned(),
        "[health]\ntoken = [\"cnry-3\"]\n".to_owned(),
        "[errors]\nsentry_dsn = 0x636e7279\n".to_owned(),
    ] {
        let err = load(toml);
        assert_clean("a type error", &format!("{err} {err:?}"));
        assert!(err.to_string().contains("has the wrong type"), "{err}");
    }
    // The same through an environment override of the header table.
    let err = Loader::new()
        .toml_str("[[alerts.channels]]\nkind = \"webhook\"\nurl = \"http://h/\"\n")
        .env([(
            "QIFLOW__ALERTS__CHANNELS__0__HEADERS",
            "{ Authorization = Bearer cnry-4 }",
        )])
        .load()
        .unwrap_err();
    assert_clean("an env override error", &format!("{err} {err:?}"));
    assert!(
        err.to_string()
            .contains("QIFLOW__ALERTS__CHANNELS__0__HEADERS"),
        "{err}"
    );
    // An ENC: value where no secret belongs is refused (its plaintext would be printable).
    let enc = keyring
        .encrypt("alerts.channels.mail.username", "cnry-5")
        .unwrap();
    let err = load(format!(
        "[[alerts.channels]]\nkind = \"email\"\nname = \"mail\"\nsmtp_host = \"h\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nusername = \"{enc}\"\n"
    ));
    assert_clean("ENC: in a plain key", &format!("{err} {err:?}"));
    let problem = &err.problems()[0];
    assert_eq!(problem.path(), "alerts.channels.mail.username");
    assert!(problem.message().contains("not a secret key"), "{err}");
    // An SMS template error in a secret URL names the key, not the text.
    let config = Loader::new()
        .toml_str(
            "[[alerts.channels]]\nkind = \"sms\"\nname = \"sms\"\nto = [\"1\"]\nurl = \"http://h/?k={{cnry-6}}\"\n",
        )
        .env::<[(&str, &str); 0], _, _>([])
        .load()
        .unwrap();
    let err = from_config(&config, 0).unwrap_err();
    assert!(err.starts_with("alerts.channels.sms.url: "), "{err}");
    assert_clean("a template error", &err);
}

/// An HTTP server that answers 404 with everything it was sent (the request line, the headers
/// and the body), as some frameworks' error pages and debugging endpoints do.
struct Echo {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Echo {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let mut echo = format!("Cannot {} {}\n", parts.method, parts.uri);
            for (k, v) in &parts.headers {
                echo.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
            echo.push_str(&String::from_utf8_lossy(&body));
            (axum::http::StatusCode::NOT_FOUND, echo)
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            port,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn notification() -> Notification {
    let alert = Alert::new("canary_check", AlertLevel::Critical)
        .summary("a failing send")
        .label("route", "/orders");
    Notification::new("any", vec![Notice::new(alert, 1)])
}

#[test]
fn failed_sends_never_repeat_a_secret_even_when_the_server_echoes_the_request() {
    let echo = Echo::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for port in [echo.port, closed_port()] {
        let s = setup(port);
        for (i, ch) in s.config.alerts.channels.iter().enumerate() {
            let channel = from_config(&s.config, i).unwrap();
            let error = runtime
                .block_on(channel.send(&notification()))
                .expect_err("no channel can succeed here");
            let text = format!("{error} {error:?}");
            assert_clean(
                &format!("the send error of {:?} (port {port})", ch.name),
                &text,
            );
        }
    }
    // The echo really did receive the secrets: without the scrubbing they would be in the errors.
    let s = setup(echo.port);
    let i = s
        .config
        .alerts
        .channels
        .iter()
        .position(|c| c.name.as_deref() == Some("hook"))
        .unwrap();
    let error = runtime
        .block_on(from_config(&s.config, i).unwrap().send(&notification()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("answered 404"), "{error}");
    assert!(error.contains("[REDACTED]"), "{error}");
}

#[test]
fn the_views_metrics_and_alert_state_of_a_failing_service_show_no_canary() {
    let echo = Echo::start();
    let s = setup(echo.port);
    let (observer, guard) = Observer::builder(s.config.clone())
        .install_global(false)
        .build()
        .unwrap();
    observer.alert(
        Alert::new("canary_check", AlertLevel::Critical)
            .summary("a failing send")
            .label("route", "/orders"),
    );
    observer.capture_error(&std::io::Error::other("a captured error"));
    // Every channel fails (the echo answers 404, SMTP and Sentry are closed ports).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = observer.alerts().view();
        let failed = view
            .channels
            .iter()
            .filter(|c| c.last_error.is_some())
            .count();
        if failed == s.config.alerts.channels.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every channel failed within 30 s: {:#?}",
            view.channels
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(observer.flush(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bearer = format!("Bearer {}", canary("admin.tokens.ops.token"));
    for view in [
        "errors",
        "alerts",
        "baselines",
        "audit",
        "overview",
        "jobs",
        "deployments",
    ] {
        let path = format!("/qiflow/api/{view}");
        for authorization in ["", bearer.as_str()] {
            let request = qiflow_core::admin::AdminRequest::new("GET", path.as_str())
                .header("authorization", authorization);
            let answer = rt.block_on(observer.admin(request));
            let body = answer.text();
            assert_eq!(
                answer.status(),
                if authorization.is_empty() { 401 } else { 200 },
                "{view}: {body}"
            );
            assert_clean(&path, &body);
        }
    }
    assert_clean(
        "the alerts view",
        &format!("{:?}", observer.alerts().view()),
    );
    assert_clean("/metrics", &observer.render_metrics());
    assert_clean("stats", &format!("{:?}", observer.stats()));
    drop(guard);
    let state = std::fs::read_to_string(&s.config.alerts.state_file).unwrap();
    assert_clean("the alert state file", &state);
}

#[test]
fn qiflow_check_prints_no_canary() {
    let s = setup(closed_port());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qiflow.toml");
    std::fs::write(&file, &s.toml).unwrap();
    // The library's report (what the CLI prints), strict and not.
    for strict in [false, true] {
        let loader = Loader::new()
            .file(&file)
            .env([("QIFLOW_MASTER_KEY", s.key.as_str())]);
        let report = qiflow_core::check::run(loader, "qiflow.toml", strict);
        assert_clean("the check report", &report.lines.join("\n"));
        assert_eq!(report.passed, !strict, "{:#?}", report.lines);
    }
    // The binary, strict: it fails on the plain secrets and prints none of them.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qiflow"));
    cmd.args(["check", "--strict"])
        .arg(&file)
        .current_dir(dir.path())
        .env_clear()
        .env("QIFLOW_MASTER_KEY", &s.key);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let out = cmd.output().expect("the qiflow binary runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("alerts.channels.hook.headers.X-Api-Key: holds a plain value, and the header looks like a credential"),
        "{text}"
    );
    assert_clean("qiflow check --strict", &text);
}

/// Names that usually hold credentials. A configuration key with such a name must be a `Secret`
/// (never serialized), unless it is listed in `NOT_SECRET` with the reason.
fn looks_secret(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "dsn",
        "credential",
        "credentials",
        "auth",
        "cookie",
        "apikey",
        "key",
        "url",
        "uri",
        "headers",
    ];
    name.to_ascii_lowercase()
        .split(['_', '-'])
        .any(|word| WORDS.contains(&word))
}

/// Keys whose names look secret but hold no secret, and why.
const NOT_SECRET: &[(&str, &str)] = &[(
    "token_file",
    "the path of the file that holds a token, not the token",
)];

fn walk(value: &serde_json::Value, path: &mut Vec<String>, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                if looks_secret(k) && !NOT_SECRET.iter().any(|(n, _)| n == k) {
                    found.push(path.join("."));
                }
                walk(v, path, found);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                walk(v, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

#[test]
fn every_key_that_looks_secret_is_a_secret_key() {
    // 1. The serialized configuration (secrets are never serialized) has no key named like a
    //    secret: a new `api_token: String` would show up here.
    let s = setup(closed_port());
    let json = serde_json::to_value(&s.config).unwrap();
    let mut found = Vec::new();
    walk(&json, &mut Vec::new(), &mut found);
    assert!(
        found.is_empty(),
        "these keys look like secrets but are plain strings; make them `Secret` (with \
         #[serde(skip_serializing)]) and add them to SECRET_KEYS and Config::secrets(), or list \
         them in NOT_SECRET with the reason: {found:#?}"
    );
    // 2. Every `Secret` field of the configuration's source is in SECRET_KEYS: a new
    //    `api_token: Option<Secret>` not added there would get no warning and no canary.
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut fields = Vec::new();
    for entry in std::fs::read_dir(&config_dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub ")
                && let Some((name, ty)) = rest.split_once(':')
                && ty.contains("Secret")
                && !name.contains(['(', ' '])
            {
                fields.push(name.to_owned());
            }
        }
    }
    assert!(
        fields.len() >= 9,
        "the scan found too few Secret fields: {fields:?}"
    );
    for field in &fields {
        assert!(
            SECRET_KEYS
                .iter()
                .any(|k| k.split('.').any(|segment| segment == field)),
            "the Secret field `{field}` is not in SECRET_KEYS (add its key path there and to \
             Config::secrets())"
        );
    }
}
