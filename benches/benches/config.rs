//! Criterion benches of encrypted configuration values.
//!
//! - `secret/decrypt_one`: [`Keyring::decrypt`] of one `ENC:v1:` value (AES-256-GCM open, base64url
//!   decode, the envelope parse, and the redacting `Secret` it returns).
//! - `secret/encrypt_one`: [`Keyring::encrypt`] of one value (fresh OS-random nonce, AES-256-GCM
//!   seal, base64url encode).
//! - `config/load_10_secrets/encrypted`: a full [`Loader::load`] of a realistic `qiflow.toml`
//!   holding 10 `ENC:` secrets, with the keyring read from `QIFLOW_MASTER_KEY` (TOML parse, env
//!   overrides, keyring parse, 10 decryptions, deserialization, validation).
//! - `config/load_10_secrets/plain`: the same load with the 10 values plain (no keyring, but 10
//!   plain-secret warnings), so the cost of decrypting is visible side by side.
//!
//! Run with `cargo bench -p qiflow-benches --bench config`.

use std::hint::black_box;

use criterion::Criterion;
use qiflow_core::config::Loader;
use qiflow_core::secret::{Keyring, MASTER_KEY_ENV};

/// A fixed key so runs are comparable (never use a published key for real data).
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The 10 secret-bearing keys of the benched configuration, with realistic plain values.
const SECRETS: [(&str, &str); 10] = [
    (
        "errors.sentry_dsn",
        "https://0123456789abcdef0123456789abcdef@o450000.ingest.sentry.io/4500000",
    ),
    (
        "audit.postgres_url",
        "postgres://audit_writer:pg-Pa55w0rd-2026@db.internal.example:5432/audit",
    ),
    ("audit.signing_key", "k7gQ2xV9pL4sT1wZ8nR3mB6yH0cF5jD2"),
    ("health.token", "hc_7Yt2Lq9Vx4Rz1Mw8Kp3Nd6Bs0Gf5Jh2"),
    (
        "alerts.channels.ops-webhook.url",
        "https://hooks.example.com/services/qiflow/T0123ABCD/9f8e7d6c5b4a",
    ),
    (
        "alerts.channels.ops-webhook.secret",
        "whsec_4f1c9a7e2b8d6035c1e9f7a2b4d8c6e0",
    ),
    (
        "alerts.channels.slack.url",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    (
        "alerts.channels.dingtalk.url",
        "https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef0123456789abcdef",
    ),
    (
        "alerts.channels.dingtalk.secret",
        "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd",
    ),
    ("alerts.channels.email.password", "smtp-app-password-x9y8z7"),
];

/// A realistic `qiflow.toml`; `{0}` … `{9}` are the values of [`SECRETS`], in order.
fn config_toml(values: &[String]) -> String {
    format!(
        r#"
[service]
name = "checkout"
environment = "production"
version = "2.14.1"

[logging]
level = "info,hyper=warn,sqlx=warn"
format = "json"
dir = "/var/log/checkout"
rotation = "daily"
max_size = "256MiB"
max_backups = 14
max_age = "30d"
compress = "zstd"
queue_capacity = 131072
overflow = "drop"
redact = ["card_number", "iban"]

[errors]
sentry_dsn = "{0}"
sample_rate = 0.25
capture = "5xx"

[metrics]
path = "/metrics"
buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
max_routes = 300

[baseline]
window = "10m"
min_samples = 200
deviation_factor = 2.5
slow_request = "750ms"

[audit]
sink = "postgres"
postgres_url = "{1}"
signing_key = "{2}"
batch_size = 200
flush_interval = "2s"
retention = "400d"

[health]
token = "{3}"

[alerts]
min_level = "warning"
cooldown = "10m"
group_wait = "30s"
rate_limit = 60

[[alerts.channels]]
kind = "webhook"
name = "ops-webhook"
url = "{4}"
secret = "{5}"

[[alerts.channels]]
kind = "slack"
name = "slack"
url = "{6}"
min_level = "error"

[[alerts.channels]]
kind = "dingtalk"
name = "dingtalk"
url = "{7}"
secret = "{8}"

[[alerts.channels]]
kind = "email"
name = "email"
smtp_host = "smtp.example.com"
smtp_port = 587
tls = "starttls"
username = "alerts@example.com"
password = "{9}"
from = "alerts@example.com"
to = ["oncall@example.com", "sre@example.com"]
"#,
        values[0],
        values[1],
        values[2],
        values[3],
        values[4],
        values[5],
        values[6],
        values[7],
        values[8],
        values[9],
    )
}

fn keyring() -> Keyring {
    Keyring::parse(KEY).expect("the bench key is valid")
}

fn secret(c: &mut Criterion) {
    let keyring = keyring();
    let (path, plain) = SECRETS[1];
    let value = keyring.encrypt(path, plain).expect("encrypt");

    let mut group = c.benchmark_group("secret");
    group.bench_function("decrypt_one", |b| {
        b.iter(|| {
            keyring
                .decrypt(black_box(path), black_box(&value))
                .expect("decrypt")
        });
    });
    group.bench_function("encrypt_one", |b| {
        b.iter(|| {
            keyring
                .encrypt(black_box(path), black_box(plain))
                .expect("encrypt")
        });
    });
    group.finish();
}

fn load(c: &mut Criterion) {
    let keyring = keyring();
    let encrypted: Vec<String> = SECRETS
        .iter()
        .map(|(path, plain)| keyring.encrypt(path, plain).expect("encrypt"))
        .collect();
    let plain: Vec<String> = SECRETS.iter().map(|(_, v)| (*v).to_owned()).collect();
    let encrypted_toml = config_toml(&encrypted);
    let plain_toml = config_toml(&plain);
    let env = [(MASTER_KEY_ENV, KEY)];

    // Both variants must load, and load the same values, or the comparison means nothing.
    let from_enc = Loader::new()
        .toml_str(encrypted_toml.clone())
        .env(env)
        .load()
        .expect("the encrypted configuration loads");
    let from_plain = Loader::new()
        .toml_str(plain_toml.clone())
        .env(env)
        .load()
        .expect("the plain configuration loads");
    let secrets_of = |config: &qiflow_core::Config| -> Vec<(String, String)> {
        config
            .secrets()
            .into_iter()
            .map(|(p, s)| (p, s.expose().to_owned()))
            .collect()
    };
    assert_eq!(secrets_of(&from_enc).len(), SECRETS.len());
    assert_eq!(secrets_of(&from_enc), secrets_of(&from_plain));
    assert!(from_enc.warnings().is_empty(), "{:?}", from_enc.warnings());
    assert_eq!(from_plain.warnings().len(), SECRETS.len());

    let mut group = c.benchmark_group("config/load_10_secrets");
    group.bench_function("encrypted", |b| {
        b.iter(|| {
            Loader::new()
                .toml_str(black_box(encrypted_toml.as_str()))
                .env(env)
                .load()
                .expect("load")
        });
    });
    group.bench_function("plain", |b| {
        b.iter(|| {
            Loader::new()
                .toml_str(black_box(plain_toml.as_str()))
                .env(env)
                .load()
                .expect("load")
        });
    });
    group.finish();
}

// Written out rather than `criterion_group!`/`criterion_main!`, whose generated `pub fn` cannot
// carry the doc comment the workspace's `missing_docs` lint asks for.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    secret(&mut c);
    load(&mut c);
    c.final_summary();
}
