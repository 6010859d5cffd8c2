//! Integration tests of the `qiflow` binary: keys, `encrypt`/`decrypt` and `check`.
//!
//! Every run starts the real binary in a fresh temporary directory (so no stray `.env` is read)
//! with a cleared environment (only `PATH`, plus the variables a test sets).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use qiflow_core::secret::Keyring;
use tempfile::TempDir;

/// What one run of the binary produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for "never prints" checks.
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `qiflow args…` in `dir` with only `PATH` and `env` set, feeding `stdin`.
fn qiflow(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qiflow"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the qiflow binary starts");
    {
        let mut input = child.stdin.take().expect("stdin is piped");
        // The binary may exit before reading (e.g. on a bad key): ignore a broken pipe.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("the qiflow binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

fn tempdir() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A new key, from the library (independent of `qiflow keygen`).
fn new_key() -> String {
    Keyring::generate_key()
}

/// Encrypts `plaintext` for `path` with `key`, through the library.
fn enc(key: &str, path: &str, plaintext: &str) -> String {
    Keyring::parse(key)
        .expect("a valid key")
        .encrypt(path, plaintext)
        .expect("encryption succeeds")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a file in the temporary directory");
    path.display().to_string()
}

#[cfg(unix)]
fn chmod(path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Lines of `text` that mention `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

// ---------------------------------------------------------------------------------------------
// keygen

#[test]
fn keygen_prints_base64_of_32_bytes_and_each_run_differs() {
    let dir = tempdir();
    let first = qiflow(dir.path(), &["keygen"], &[], "");
    assert!(first.success(), "{}", first.describe());
    let second = qiflow(dir.path(), &["keygen"], &[], "");
    assert!(second.success(), "{}", second.describe());

    for run in [&first, &second] {
        let key = run.stdout.trim_end_matches('\n');
        assert!(!key.contains('\n'), "one line: {:?}", run.stdout);
        let bytes = STANDARD.decode(key).expect("keygen prints standard base64");
        assert_eq!(bytes.len(), 32, "a 256-bit key: {key:?}");
        assert!(bytes.iter().any(|b| *b != 0), "not all zero");
        assert!(Keyring::parse(key).is_ok(), "the keyring accepts it");
    }
    assert_ne!(
        first.stdout, second.stdout,
        "two runs print two different keys"
    );
}

#[test]
fn keygen_with_id_prefixes_the_key_id() {
    let dir = tempdir();
    let run = qiflow(dir.path(), &["keygen", "--id", "2026-11"], &[], "");
    assert!(run.success(), "{}", run.describe());
    let line = run.stdout.trim_end();
    let (id, key) = line.split_once(':').expect("id:base64");
    assert_eq!(id, "2026-11");
    assert_eq!(STANDARD.decode(key).expect("base64").len(), 32);

    let keyring = Keyring::parse(line).expect("the keyring accepts id:base64");
    assert_eq!(keyring.active_key_id().as_str(), "2026-11");
    // Values encrypted with it carry the id.
    let value = enc(line, "database.password", "x");
    assert!(value.starts_with("ENC:v1:2026-11:"), "{value}");
}

#[test]
fn keygen_rejects_an_invalid_id() {
    let dir = tempdir();
    let run = qiflow(
        dir.path(),
        &["keygen", "--id", "no spaces:or colons"],
        &[],
        "",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(run.stderr.contains("key id"), "{}", run.describe());
    assert!(
        run.stdout.trim().is_empty(),
        "no key printed: {}",
        run.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// encrypt / decrypt

#[test]
fn encrypt_then_decrypt_round_trips_through_stdin() {
    let dir = tempdir();
    let key = new_key();
    let env = [("QIFLOW_MASTER_KEY", key.as_str())];
    let plaintext = "s3cr3t p@ss: with spaces";

    let encrypted = qiflow(
        dir.path(),
        &["encrypt", "--name", "database.password"],
        &env,
        &format!("{plaintext}\n"),
    );
    assert!(encrypted.success(), "{}", encrypted.describe());
    let value = encrypted.stdout.trim_end().to_owned();
    assert!(value.starts_with("ENC:v1:"), "{value}");
    assert!(
        !encrypted.all().contains(plaintext),
        "{}",
        encrypted.describe()
    );

    // The library reads what the binary wrote (and the trailing newline was not encrypted).
    let keyring = Keyring::parse(&key).expect("valid key");
    let plain = keyring
        .decrypt("database.password", &value)
        .expect("the library decrypts it");
    assert_eq!(plain.expose(), plaintext);

    let decrypted = qiflow(
        dir.path(),
        &["decrypt", "--name", "database.password"],
        &env,
        &format!("{value}\n"),
    );
    assert!(decrypted.success(), "{}", decrypted.describe());
    assert_eq!(decrypted.stdout, format!("{plaintext}\n"));

    // A fresh nonce per value: the same plaintext never encrypts to the same text twice.
    let again = qiflow(
        dir.path(),
        &["encrypt", "--name", "database.password"],
        &env,
        plaintext,
    );
    assert!(again.success(), "{}", again.describe());
    assert_ne!(again.stdout.trim_end(), value);
}

#[test]
fn encrypt_rejects_empty_stdin_and_bad_names() {
    let dir = tempdir();
    let key = new_key();
    let env = [("QIFLOW_MASTER_KEY", key.as_str())];

    let empty = qiflow(dir.path(), &["encrypt", "--name", "health.token"], &env, "");
    assert!(!empty.success(), "{}", empty.describe());
    assert!(empty.stderr.contains("stdin"), "{}", empty.describe());
    assert!(!empty.stdout.contains("ENC:"), "{}", empty.describe());

    let bad = qiflow(dir.path(), &["encrypt", "--name", "audit..url"], &env, "x");
    assert!(!bad.success(), "{}", bad.describe());
    assert!(bad.stderr.contains("audit..url"), "{}", bad.describe());
}

#[test]
fn decrypt_with_the_wrong_key_fails_naming_the_path_without_the_plaintext() {
    let dir = tempdir();
    let plaintext = "correct-horse-battery-staple";
    let right = new_key();
    let wrong = new_key();
    let value = enc(&right, "database.password", plaintext);

    let run = qiflow(
        dir.path(),
        &["decrypt", "--name", "database.password"],
        &[("QIFLOW_MASTER_KEY", wrong.as_str())],
        &value,
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("database.password"),
        "{}",
        run.describe()
    );
    assert!(!run.all().contains(plaintext), "{}", run.describe());
    assert!(
        !run.all().contains(&wrong),
        "key material leaked: {}",
        run.describe()
    );

    // The same explicit key id on a different key: the id matches, authentication fails.
    let right_k1 = format!("k1:{right}");
    let wrong_k1 = format!("k1:{wrong}");
    let value = enc(&right_k1, "database.password", plaintext);
    let run = qiflow(
        dir.path(),
        &["decrypt", "--name", "database.password"],
        &[("QIFLOW_MASTER_KEY", wrong_k1.as_str())],
        &value,
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("database.password"),
        "{}",
        run.describe()
    );
    assert!(!run.all().contains(plaintext), "{}", run.describe());
}

#[test]
fn decrypt_for_another_name_fails() {
    let dir = tempdir();
    let key = new_key();
    let plaintext = "moved-value-must-not-decrypt";
    let value = enc(&key, "database.password", plaintext);

    let run = qiflow(
        dir.path(),
        &["decrypt", "--name", "errors.sentry_dsn"],
        &[("QIFLOW_MASTER_KEY", key.as_str())],
        &value,
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("errors.sentry_dsn"),
        "{}",
        run.describe()
    );
    assert!(!run.all().contains(plaintext), "{}", run.describe());
}

#[test]
fn decrypt_rejects_a_value_that_is_not_encrypted() {
    let dir = tempdir();
    let key = new_key();
    let run = qiflow(
        dir.path(),
        &["decrypt", "--name", "health.token"],
        &[("QIFLOW_MASTER_KEY", key.as_str())],
        "plain-token",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(run.stderr.contains("health.token"), "{}", run.describe());
    assert!(run.stderr.contains("ENC:"), "{}", run.describe());
    assert!(run.stdout.is_empty(), "{}", run.describe());
}

#[test]
fn without_a_key_encrypt_and_decrypt_say_how_to_get_one() {
    let dir = tempdir();
    let value = enc(&new_key(), "database.password", "hunter2");
    for (args, stdin) in [
        (["encrypt", "--name", "database.password"], "hunter2"),
        (["decrypt", "--name", "database.password"], value.as_str()),
    ] {
        let run = qiflow(dir.path(), &args, &[], stdin);
        assert!(!run.success(), "{args:?}: {}", run.describe());
        assert!(
            run.stderr.contains("QIFLOW_MASTER_KEY"),
            "{args:?}: {}",
            run.describe()
        );
        assert!(
            run.stderr.contains("qiflow keygen"),
            "{args:?}: {}",
            run.describe()
        );
        assert!(
            !run.all().contains("hunter2"),
            "{args:?}: {}",
            run.describe()
        );
    }

    // An empty variable counts as unset.
    let run = qiflow(
        dir.path(),
        &["encrypt", "--name", "database.password"],
        &[("QIFLOW_MASTER_KEY", "  ")],
        "hunter2",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(run.stderr.contains("qiflow keygen"), "{}", run.describe());
}

#[test]
fn a_key_of_the_wrong_length_or_not_base64_is_a_clear_error() {
    let dir = tempdir();
    let short = STANDARD.encode([7u8; 16]);
    let run = qiflow(
        dir.path(),
        &["encrypt", "--name", "database.password"],
        &[("QIFLOW_MASTER_KEY", short.as_str())],
        "hunter2",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("QIFLOW_MASTER_KEY"),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("16 bytes"), "{}", run.describe());
    assert!(run.stderr.contains("32 bytes"), "{}", run.describe());
    assert!(
        !run.stderr.contains(&short),
        "key echoed: {}",
        run.describe()
    );
    assert!(run.stdout.is_empty(), "{}", run.describe());

    let garbage = "this is not base64!";
    let run = qiflow(
        dir.path(),
        &["encrypt", "--name", "database.password"],
        &[("QIFLOW_MASTER_KEY", garbage)],
        "hunter2",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("QIFLOW_MASTER_KEY"),
        "{}",
        run.describe()
    );
    assert!(run.stderr.contains("base64"), "{}", run.describe());
    assert!(run.stderr.contains("qiflow keygen"), "{}", run.describe());
    assert!(
        !run.stderr.contains(garbage),
        "key echoed: {}",
        run.describe()
    );
}

#[test]
fn the_key_can_come_from_qiflow_master_key_file() {
    let dir = tempdir();
    let key = new_key();
    let file = write(
        dir.path(),
        "master.key",
        &format!("# qiflow master key\n{key}\n"),
    );
    #[cfg(unix)]
    chmod(&file, 0o600);

    let encrypted = qiflow(
        dir.path(),
        &["encrypt", "--name", "alerts.channels.ops.password"],
        &[("QIFLOW_MASTER_KEY_FILE", file.as_str())],
        "smtp-pass",
    );
    assert!(encrypted.success(), "{}", encrypted.describe());
    let value = encrypted.stdout.trim_end().to_owned();
    assert!(value.starts_with("ENC:v1:"), "{value}");

    // Encrypted with the file's key: the same key given in QIFLOW_MASTER_KEY decrypts it.
    let decrypted = qiflow(
        dir.path(),
        &["decrypt", "--name", "alerts.channels.ops.password"],
        &[("QIFLOW_MASTER_KEY", key.as_str())],
        &value,
    );
    assert!(decrypted.success(), "{}", decrypted.describe());
    assert_eq!(decrypted.stdout.trim_end(), "smtp-pass");

    // A key file that does not exist is named in the error.
    let missing = dir.path().join("nope.key").display().to_string();
    let run = qiflow(
        dir.path(),
        &["encrypt", "--name", "health.token"],
        &[("QIFLOW_MASTER_KEY_FILE", missing.as_str())],
        "x",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(run.stderr.contains(&missing), "{}", run.describe());
    assert!(
        run.stderr.contains("QIFLOW_MASTER_KEY_FILE"),
        "{}",
        run.describe()
    );
}

#[test]
fn the_key_can_come_from_a_dotenv_file_in_the_working_directory() {
    let dir = tempdir();
    let key = new_key();
    write(dir.path(), ".env", &format!("QIFLOW_MASTER_KEY={key}\n"));
    let run = qiflow(
        dir.path(),
        &["encrypt", "--name", "health.token"],
        &[],
        "token-from-dotenv",
    );
    assert!(run.success(), "{}", run.describe());
    let keyring = Keyring::parse(&key).expect("valid key");
    let plain = keyring
        .decrypt("health.token", run.stdout.trim_end())
        .expect("encrypted with the .env key");
    assert_eq!(plain.expose(), "token-from-dotenv");
}

// ---------------------------------------------------------------------------------------------
// check

/// A complete, valid configuration with no secrets and no advice (audit disabled).
const VALID: &str = r#"
[service]
name = "checkout"
environment = "production"
version = "1.4.2"

[logging]
level = "info,hyper=warn"
format = "json"
max_size = "64MiB"
max_backups = 5
rotation = "daily"

[errors]
sample_rate = 0.5
capture = "4xx+5xx"

[metrics]
buckets = [0.01, 0.1, 1.0]

[baseline]
window = "10m"
deviation_factor = 3.0

[audit]
enabled = false

[alerts]
min_level = "error"
cooldown = "10m"
"#;

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempdir();
    let file = write(dir.path(), "qiflow.toml", VALID);
    let run = qiflow(dir.path(), &["check", &file], &[], "");
    assert!(run.success(), "{}", run.describe());
    assert!(run.stdout.contains("ok:"), "{}", run.describe());
    assert!(!run.all().contains("warning:"), "{}", run.describe());
    assert!(!run.all().contains("error"), "{}", run.describe());

    // --strict has nothing to fail on.
    let strict = qiflow(dir.path(), &["check", "--strict", &file], &[], "");
    assert!(strict.success(), "{}", strict.describe());
    assert!(strict.stdout.contains("ok:"), "{}", strict.describe());
}

/// `check --strict` looks at the files the configuration keeps private, in the working
/// directory: a log file, a state file or an audit segment wider than its mode is a warning that
/// names the file, its mode and the `chmod` that fixes it, and fails the check. Without
/// `--strict` the files are not looked at.
#[cfg(unix)]
#[test]
fn check_strict_reports_log_state_and_audit_files_wider_than_their_mode() {
    let dir = tempdir();
    let d = dir.path();
    let config = "[logging]\ndir = \"logs\"\nfile_mode = \"0640\"\n\n[audit]\ndir = \"data/audit\"\nsigning_key = \"0123456789abcdef0123\"\n\n[alerts]\nstate_file = \"data/alerts.json\"\n\n[baseline]\nstate_file = \"data/baselines.json\"\n";
    let file = write(d, "qiflow.toml", config);
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::create_dir_all(d.join("data/audit")).unwrap();
    let files = [
        ("logs/app.log", 0o640),
        ("logs/app.20261128T130405Z.log.gz", 0o640),
        ("data/alerts.json", 0o600),
        ("data/baselines.json", 0o600),
        (
            "data/audit/audit-00000000000000000001-1764000000.jsonl",
            0o600,
        ),
    ];
    for (name, mode) in files {
        let path = write(d, name, "x");
        chmod(&path, mode);
    }
    // All private enough: no file-mode warning (the plain signing key is still one).
    let run = qiflow(d, &["check", "--strict", &file], &[], "");
    assert!(
        lines_with(&run.stdout, "wider than").is_empty(),
        "{}",
        run.describe()
    );

    chmod(&d.join("logs/app.log").display().to_string(), 0o644);
    chmod(&d.join("data/alerts.json").display().to_string(), 0o640);
    chmod(
        &d.join("data/audit/audit-00000000000000000001-1764000000.jsonl")
            .display()
            .to_string(),
        0o604,
    );
    let run = qiflow(d, &["check", "--strict", &file], &[], "");
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let out = run.all();
    for (key, expected) in [
        (
            "logging.file_mode",
            "logs/app.log (0644); run `chmod 640 logs/app.log`",
        ),
        (
            "alerts.state_file",
            "data/alerts.json has mode 0640, wider than 0600; run `chmod 600 data/alerts.json`",
        ),
        (
            "audit.dir",
            "1 file(s) in data/audit are wider than 0600: data/audit/audit-00000000000000000001-1764000000.jsonl (0604); run `chmod 600 data/audit/audit-00000000000000000001-1764000000.jsonl`",
        ),
    ] {
        let lines = lines_with(&out, &format!("{file}: {key}: "));
        assert_eq!(lines.len(), 1, "{key}: {}", run.describe());
        assert!(lines[0].starts_with("warning: "), "{}", lines[0]);
        assert!(lines[0].contains(expected), "{key}: {}", lines[0]);
    }
    assert!(lines_with(&out, "baseline.state_file").is_empty(), "{out}");

    // Without --strict, file modes are not looked at.
    let run = qiflow(d, &["check", &file], &[], "");
    assert!(run.success(), "{}", run.describe());
    assert!(
        lines_with(&run.stdout, "wider than").is_empty(),
        "{}",
        run.describe()
    );
}

#[test]
fn check_reports_a_missing_file() {
    let dir = tempdir();
    let missing = dir.path().join("absent.toml").display().to_string();
    let run = qiflow(dir.path(), &["check", &missing], &[], "");
    assert!(!run.success(), "{}", run.describe());
    assert!(run.all().contains(&missing), "{}", run.describe());
    assert!(!run.stdout.contains("ok:"), "{}", run.describe());
}

#[test]
fn check_prints_one_line_per_problem_naming_each_key_path() {
    let dir = tempdir();
    let file = write(
        dir.path(),
        "qiflow.toml",
        "[service]\nname = \"checkout\"\n\n[logging]\nlevl = \"x\"\n\n[errors]\nsample_rate = 2.0\n\n[audit]\nenabled = false\n",
    );
    let run = qiflow(dir.path(), &["check", &file], &[], "");
    assert!(!run.success(), "{}", run.describe());
    assert!(!run.stdout.contains("ok:"), "{}", run.describe());

    let out = run.all();
    let unknown = lines_with(&out, "logging.levl");
    let range = lines_with(&out, "errors.sample_rate");
    assert_eq!(
        unknown.len(),
        1,
        "one line for logging.levl: {}",
        run.describe()
    );
    assert_eq!(
        range.len(),
        1,
        "one line for errors.sample_rate: {}",
        run.describe()
    );
    assert_ne!(unknown[0], range[0], "separate lines: {}", run.describe());
    assert!(
        range[0].contains('2'),
        "names the value: {}",
        run.describe()
    );
}

#[test]
fn check_reports_invalid_toml_with_line_and_column() {
    let dir = tempdir();
    // Line 4 is broken: a key without a value.
    let file = write(
        dir.path(),
        "qiflow.toml",
        "[service]\nname = \"checkout\"\n[logging]\nlevel = \n",
    );
    let run = qiflow(dir.path(), &["check", &file], &[], "");
    assert!(!run.success(), "{}", run.describe());
    let out = run.all();
    let lines = lines_with(&out, "line 4");
    assert_eq!(lines.len(), 1, "{}", run.describe());
    assert!(lines[0].contains("column"), "{}", run.describe());
    assert!(lines[0].contains("TOML"), "{}", run.describe());
}

/// A file whose audit section holds `postgres_url` and `signing_key` as given.
fn audit_config(postgres_url: &str, signing_key: &str) -> String {
    format!(
        "[service]\nname = \"ledger\"\n\n[audit]\nsink = \"postgres\"\npostgres_url = \"{postgres_url}\"\nsigning_key = \"{signing_key}\"\n"
    )
}

const PG_URL: &str = "postgres://audit:Tr0ub4dor-pg@db.internal:5432/audit?sslmode=verify-full";
const SIGNING: &str = "signing-key-0123456789abcdef";

#[test]
fn check_decrypts_enc_values_and_never_prints_them() {
    let dir = tempdir();
    let key = new_key();
    let file = write(
        dir.path(),
        "qiflow.toml",
        &audit_config(
            &enc(&key, "audit.postgres_url", PG_URL),
            &enc(&key, "audit.signing_key", SIGNING),
        ),
    );

    let run = qiflow(
        dir.path(),
        &["check", "--strict", &file],
        &[("QIFLOW_MASTER_KEY", key.as_str())],
        "",
    );
    assert!(run.success(), "{}", run.describe());
    assert!(run.stdout.contains("ok:"), "{}", run.describe());
    assert!(!run.all().contains("warning:"), "{}", run.describe());
    for secret in [PG_URL, "Tr0ub4dor-pg", SIGNING] {
        assert!(
            !run.all().contains(secret),
            "printed a secret: {}",
            run.describe()
        );
    }

    // Without the key the encrypted values cannot be checked.
    let run = qiflow(dir.path(), &["check", &file], &[], "");
    assert!(!run.success(), "{}", run.describe());
    assert!(
        run.all().contains("audit.postgres_url"),
        "{}",
        run.describe()
    );
    assert!(
        run.all().contains("QIFLOW_MASTER_KEY"),
        "{}",
        run.describe()
    );
}

#[test]
fn check_fails_naming_the_key_when_a_value_was_encrypted_for_another_name() {
    let dir = tempdir();
    let key = new_key();
    // Encrypted for the signing key, pasted into postgres_url.
    let file = write(
        dir.path(),
        "qiflow.toml",
        &audit_config(
            &enc(&key, "audit.signing_key", PG_URL),
            &enc(&key, "audit.signing_key", SIGNING),
        ),
    );
    let run = qiflow(
        dir.path(),
        &["check", &file],
        &[("QIFLOW_MASTER_KEY", key.as_str())],
        "",
    );
    assert!(!run.success(), "{}", run.describe());
    assert!(!run.stdout.contains("ok:"), "{}", run.describe());
    let out = run.all();
    let lines = lines_with(&out, "audit.postgres_url");
    assert!(!lines.is_empty(), "{}", run.describe());
    // The signing key was encrypted for its own path and is fine.
    assert!(
        lines_with(&out, "audit.signing_key:").is_empty(),
        "{}",
        run.describe()
    );
    for secret in [PG_URL, "Tr0ub4dor-pg", SIGNING] {
        assert!(
            !out.contains(secret),
            "printed a secret: {}",
            run.describe()
        );
    }
}

#[test]
fn check_warns_about_plain_secrets_and_strict_fails_on_them() {
    let dir = tempdir();
    let key = new_key();
    let file = write(
        dir.path(),
        "qiflow.toml",
        &audit_config(PG_URL, &enc(&key, "audit.signing_key", SIGNING)),
    );
    let env = [("QIFLOW_MASTER_KEY", key.as_str())];

    let run = qiflow(dir.path(), &["check", &file], &env, "");
    assert!(
        run.success(),
        "warnings alone do not fail: {}",
        run.describe()
    );
    assert!(run.stdout.contains("ok:"), "{}", run.describe());
    let out = run.all();
    let warnings = lines_with(&out, "warning:");
    assert_eq!(warnings.len(), 1, "{}", run.describe());
    assert!(
        warnings[0].contains("audit.postgres_url"),
        "{}",
        run.describe()
    );
    assert!(
        warnings[0].contains("qiflow encrypt --name audit.postgres_url"),
        "{}",
        run.describe()
    );
    assert!(
        !out.contains("Tr0ub4dor-pg"),
        "printed a secret: {}",
        run.describe()
    );

    let strict = qiflow(dir.path(), &["check", "--strict", &file], &env, "");
    assert!(!strict.success(), "{}", strict.describe());
    assert!(!strict.stdout.contains("ok:"), "{}", strict.describe());
    let out = strict.all();
    assert!(
        lines_with(&out, "warning:")
            .iter()
            .any(|l| l.contains("audit.postgres_url")),
        "{}",
        strict.describe()
    );
    assert!(
        !out.contains("Tr0ub4dor-pg"),
        "printed a secret: {}",
        strict.describe()
    );
}

/// A minimal configuration audits without a signing key: `check` advises one, saying what it
/// costs, and `--strict` passes, except in production, where it is unsafe.
#[test]
fn check_advises_a_signing_key_when_audit_is_enabled() {
    let dir = tempdir();
    let file = write(dir.path(), "qiflow.toml", "[service]\nname = \"ledger\"\n");
    let run = qiflow(dir.path(), &["check", &file], &[], "");
    assert!(run.success(), "{}", run.describe());
    let out = run.all();
    assert!(
        lines_with(&out, "warning:").is_empty(),
        "{}",
        run.describe()
    );
    let advice = lines_with(&out, "advice:");
    assert_eq!(advice.len(), 1, "{}", run.describe());
    assert!(
        advice[0].contains("audit.signing_key: is not set"),
        "{}",
        run.describe()
    );

    let strict = qiflow(dir.path(), &["check", "--strict", &file], &[], "");
    assert!(strict.success(), "{}", strict.describe());
    assert!(
        strict.stdout.contains("ok: ") && strict.stdout.contains("nothing unsafe"),
        "{}",
        strict.describe()
    );

    let prod = qiflow(
        dir.path(),
        &["check", "--strict", &file],
        &[("QIFLOW__SERVICE__ENVIRONMENT", "production")],
        "",
    );
    assert_eq!(prod.code, Some(1), "{}", prod.describe());
    let out = prod.all();
    let warnings = lines_with(&out, "warning:");
    assert_eq!(warnings.len(), 1, "{}", prod.describe());
    assert!(
        warnings[0].contains("audit.signing_key: is not set"),
        "{}",
        prod.describe()
    );
    assert!(
        out.contains("1 unsafe setting(s) (audit.signing_key), failing because of --strict"),
        "{}",
        prod.describe()
    );
}

#[cfg(unix)]
#[test]
fn check_warns_when_the_key_file_is_readable_by_others() {
    let dir = tempdir();
    let key = new_key();
    let key_file = write(dir.path(), "master.key", &key);
    chmod(&key_file, 0o644);
    let file = write(
        dir.path(),
        "qiflow.toml",
        &audit_config(
            &enc(&key, "audit.postgres_url", PG_URL),
            &enc(&key, "audit.signing_key", SIGNING),
        ),
    );
    let run = qiflow(
        dir.path(),
        &["check", &file],
        &[("QIFLOW_MASTER_KEY_FILE", key_file.as_str())],
        "",
    );
    assert!(run.success(), "{}", run.describe());
    let out = run.all();
    let warnings = lines_with(&out, "warning:");
    assert_eq!(warnings.len(), 1, "{}", run.describe());
    assert!(warnings[0].contains("chmod 600"), "{}", run.describe());
    assert!(!out.contains(&key), "printed the key: {}", run.describe());

    chmod(&key_file, 0o600);
    let run = qiflow(
        dir.path(),
        &["check", "--strict", &file],
        &[("QIFLOW_MASTER_KEY_FILE", key_file.as_str())],
        "",
    );
    assert!(run.success(), "{}", run.describe());
    assert!(!run.all().contains("warning:"), "{}", run.describe());
}

// ---------------------------------------------------------------------------------------------
// help

#[test]
fn every_subcommand_has_help() {
    let dir = tempdir();
    for args in [
        &["--help"][..],
        &["keygen", "--help"],
        &["encrypt", "--help"],
        &["decrypt", "--help"],
        &["check", "--help"],
    ] {
        let run = qiflow(dir.path(), args, &[], "");
        assert!(run.success(), "{args:?}: {}", run.describe());
        assert!(run.stdout.contains("Usage"), "{args:?}: {}", run.describe());
    }
    let top = qiflow(dir.path(), &["--help"], &[], "");
    for sub in ["keygen", "encrypt", "decrypt", "check"] {
        assert!(top.stdout.contains(sub), "{sub}: {}", top.describe());
    }
    let encrypt = qiflow(dir.path(), &["encrypt", "--help"], &[], "");
    assert!(encrypt.stdout.contains("--name"), "{}", encrypt.describe());
    let check = qiflow(dir.path(), &["check", "--help"], &[], "");
    assert!(check.stdout.contains("--strict"), "{}", check.describe());
}

#[test]
fn an_unknown_subcommand_fails() {
    let dir = tempdir();
    let run = qiflow(dir.path(), &["frobnicate"], &[], "");
    assert!(!run.success(), "{}", run.describe());
    assert!(!run.stderr.is_empty(), "{}", run.describe());
}
