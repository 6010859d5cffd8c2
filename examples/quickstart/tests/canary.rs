//! Canaries end to end: the `quickstart` binary runs with a distinct canary in every secret key
//! (some as `ENC:` values), its alert channels pointing at closed loopback ports (and one at a
//! server that echoes the request back), so every send fails and the failures are logged. After
//! the demo routes (`/fail`, `/panic`, `/login`, …) and every operator view, and a graceful
//! shutdown, no canary may appear in: the log files, stdout and stderr, `/metrics`, any
//! `/qiflow/api/*` view, the health endpoints, the audit trail and state files, or the output
//! of `qiflow check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use qiflow_core::config::{Loader, SECRET_KEYS};
use qiflow_core::secret::Keyring;

/// In every canary, and nowhere else.
const MARK: &str = "cnry";

const DSN_KEY: &str = "cnry-dsn-key-41a7";
const PG_PASSWORD: &str = "cnry-pg-password-5c2e";
const SIGNING_KEY: &str = "cnry-signing-key-88b1d0e2f3";
const HEALTH_TOKEN: &str = "cnry-health-token-0d9e";
const ADMIN_TOKEN: &str = "cnry-admin-token-ee77aa90";
const HOOK_PATH: &str = "cnry-webhook-path-11aa";
const HOOK_SECRET: &str = "cnry-webhook-secret-33cc";
const HOOK_AUTH: &str = "cnry-webhook-auth-44dd";
const HOOK_API_KEY: &str = "cnry-webhook-apikey-55ee";
const SLACK_TOKEN: &str = "cnry-slack-token-66ff";
const DING_TOKEN: &str = "cnry-ding-token-7700";
const DING_SECRET: &str = "cnry-ding-secret-8811";
const SMS_URL_KEY: &str = "cnry-sms-urlkey-9922";
const SMS_TOKEN: &str = "cnry-sms-token-aa33";
const SMS_HEADER: &str = "cnry-sms-header-bb44";
/// An OTLP export header (the quickstart is built without the `otlp` feature, so it names no
/// endpoint; the header is a secret all the same).
const OTLP_HEADER: &str = "cnry-otlp-header-ee88";
const AM_PASSWORD: &str = "cnry-am-password-cc55";
/// The second Alertmanager of the cluster (`urls`).
const AM2_PASSWORD: &str = "cnry-am2-password-dd66";
const SMTP_PASSWORD: &str = "cnry-smtp-password-dd66";
/// Sent as a wrong login password: not a configuration secret, but never to be written either.
const LOGIN_PASSWORD: &str = "cnry-login-password-ee77";

/// The `Authorization` header of operator requests. The one place to change when the operator
/// surface takes other credentials.
fn operator_auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {ADMIN_TOKEN}"))
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The canary configuration. `echo` is the port of the echoing server, `closed` one where
/// nothing listens; `dir` holds the logs, the audit trail and the state files.
fn canary_toml(dir: &Path, echo: u16, closed: u16, keyring: &Keyring) -> String {
    let enc = |path: &str, plain: &str| format!("{:?}", keyring.encrypt(path, plain).unwrap());
    let dir = dir.display();
    format!(
        r#"
[service]
name = "canary"

[logging]
dir = "{dir}/logs"
stdout = true

[errors]
sentry_dsn = {dsn}

[audit]
dir = "{dir}/audit"
postgres_url = "postgres://qiflow:{PG_PASSWORD}@127.0.0.1:{closed}/qiflow"
signing_key = {signing}
digest_interval = "1s"

[baseline]
state_file = "{dir}/data/baselines.json"

[alerts]
state_file = "{dir}/data/alerts.json"
group_wait = "10ms"
retry_initial = "10ms"
retry_max = "20ms"
retry_deadline = "300ms"

[health]
token = "{HEALTH_TOKEN}"

[tracing]
headers = {{ X-Honeycomb-Team = "{OTLP_HEADER}" }}

[[admin.tokens]]
name = "ops"
token = "{ADMIN_TOKEN}"
scope = "write"

[[alerts.channels]]
kind = "webhook"
name = "hook"
url = "http://127.0.0.1:{echo}/hooks/{HOOK_PATH}?token=x{HOOK_PATH}"
secret = "{HOOK_SECRET}"
timeout = "2s"
headers = {{ Authorization = {hook_auth}, X-Api-Key = "{HOOK_API_KEY}" }}

[[alerts.channels]]
kind = "slack"
name = "slack"
url = "http://127.0.0.1:{closed}/services/T000/B000/{SLACK_TOKEN}"
timeout = "2s"

[[alerts.channels]]
kind = "dingtalk"
name = "ding"
url = "http://127.0.0.1:{closed}/robot/send?access_token={DING_TOKEN}"
secret = {ding_secret}
timeout = "2s"

[[alerts.channels]]
kind = "sms"
name = "sms"
url = "http://127.0.0.1:{echo}/sms?key={SMS_URL_KEY}&to={{{{to|url}}}}"
token = "{SMS_TOKEN}"
to = ["+10000000000"]
timeout = "2s"
headers = {{ Authorization = "Bearer {{{{token}}}}", X-Gateway-Secret = "{SMS_HEADER}" }}

[[alerts.channels]]
kind = "alertmanager"
name = "am"
url = "http://admin:{AM_PASSWORD}@127.0.0.1:{closed}/"
urls = ["http://admin:{AM2_PASSWORD}@127.0.0.1:{closed}/"]
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
        dsn = enc(
            "errors.sentry_dsn",
            &format!("http://{DSN_KEY}@127.0.0.1:{closed}/42")
        ),
        signing = enc("audit.signing_key", SIGNING_KEY),
        hook_auth = enc(
            "alerts.channels.hook.headers.Authorization",
            &format!("Bearer {HOOK_AUTH}")
        ),
        ding_secret = enc("alerts.channels.ding.secret", DING_SECRET),
        smtp_password = enc("alerts.channels.mail.password", SMTP_PASSWORD),
    )
}

/// Where a canary shows in `text`, in any of the forms it could leak in: the mark, its hex, the
/// Basic credentials a client makes of the Alertmanager URL.
fn leaks(text: &str) -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{AM_PASSWORD}"));
    let basic2 = base64::engine::general_purpose::STANDARD.encode(format!("admin:{AM2_PASSWORD}"));
    let hex: String = MARK.bytes().map(|b| format!("{b:02x}")).collect();
    let mut found = Vec::new();
    for form in [MARK, hex.as_str(), basic.as_str(), basic2.as_str()] {
        for (at, _) in text.match_indices(form).take(3) {
            let start = (0..=at.saturating_sub(80))
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let end = ((at + 80).min(text.len())..=text.len())
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

/// An HTTP server that answers every request 404 with the request itself (line, headers and
/// body), as some frameworks' error pages do. One thread; connections one at a time.
fn start_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = echo_one(stream);
        }
    });
    port
}

fn echo_one(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut echo = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        echo.push_str(&line);
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    echo.push_str(&String::from_utf8_lossy(&body));
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{echo}",
        echo.len()
    )?;
    stream.flush()
}

/// One HTTP/1.1 request with `connection: close`: the status and the raw response (head and
/// body, searched whole for canaries).
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok((status, text))
}

/// The quickstart process; killed on drop if the test fails first.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Server {
    /// Starts the binary on a port that was free a moment ago, retrying on a fresh one when
    /// another process took it first ("Address already in use").
    fn start(dir: &Path, config: &Path, key: &str) -> Self {
        for attempt in 1.. {
            let addr: SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
            let stdout = File::create(dir.join("stdout.txt")).unwrap();
            let stderr = File::create(dir.join("stderr.txt")).unwrap();
            let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("QIFLOW") {
                    command.env_remove(name);
                }
            }
            let child = command
                .current_dir(dir)
                .env("QIFLOW_CONFIG", config)
                .env("QIFLOW_MASTER_KEY", key)
                .env("QIFLOW_ADDR", addr.to_string())
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("start the quickstart binary");
            let mut server = Self {
                child,
                addr,
                dir: dir.to_owned(),
            };
            match server.wait_live() {
                Ok(()) => return server,
                Err(output) if output.contains("Address already in use") && attempt < 5 => {}
                Err(output) => panic!("quickstart exited before it answered:\n{output}"),
            }
        }
        unreachable!()
    }

    fn wait_live(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exit {status}: {}", self.output()));
            }
            if let Ok((200, _)) = request(self.addr, "GET", "/health/live", &[], "") {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "quickstart did not answer within 60 s: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!(
            "--- stderr\n{}\n--- stdout\n{}",
            read("stderr.txt"),
            read("stdout.txt")
        )
    }

    /// Sends a request; returns the status and the raw response, which must hold no canary.
    fn call(&self, method: &str, target: &str, operator: bool, body: &str) -> (u16, String) {
        let headers = if operator {
            vec![operator_auth()]
        } else {
            Vec::new()
        };
        let (status, text) = request(self.addr, method, target, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        assert_clean(&format!("the answer to {method} {target}"), &text);
        (status, text)
    }

    /// SIGTERM (through the `kill` command), then waits for a clean exit.
    fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "quickstart exited {status}: {}",
                    self.output()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "quickstart did not exit within 20 s of SIGTERM: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every file under `dir` except `skip`, as text.
fn files_under(dir: &Path, skip: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path != skip {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                out.push((path, text));
            }
        }
    }
    out
}

#[test]
fn no_secret_reaches_logs_metrics_views_files_or_qiflow_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = Keyring::generate_key();
    let keyring = Keyring::parse(&key).unwrap();
    let echo = start_echo();
    let config_path = d.join("qiflow.toml");
    std::fs::write(&config_path, canary_toml(d, echo, closed_port(), &keyring)).unwrap();

    // `qiflow check` (the report the CLI prints), plain and strict: it warns about the plain
    // secrets by key path, and prints none of them.
    for strict in [false, true] {
        let loader = Loader::new()
            .file(&config_path)
            .env([("QIFLOW_MASTER_KEY", key.as_str())]);
        let report = qiflow_core::check::run(loader, "qiflow.toml", strict);
        let text = report.lines.join("\n");
        assert_clean("qiflow check", &text);
        assert_eq!(report.passed, !strict, "{text}");
        assert!(
            text.contains("alerts.channels.hook.headers.X-Api-Key: holds a plain value"),
            "{text}"
        );
    }
    // The configuration sets a key of every secret pattern (a new one needs a canary here).
    let config = Loader::new()
        .file(&config_path)
        .env([("QIFLOW_MASTER_KEY", key.as_str())])
        .load()
        .unwrap();
    for pattern in SECRET_KEYS {
        let parts: Vec<&str> = pattern.split('.').collect();
        let covered = config.secrets().iter().any(|(path, value)| {
            let segments: Vec<&str> = path.split('.').collect();
            segments.len() == parts.len()
                && segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, p)| *p == "*" || s == p)
                && value.expose().contains(MARK)
        });
        assert!(covered, "no canary for {pattern}");
    }

    let mut server = Server::start(d, &config_path, &key);
    // The demo routes, errors and panics included.
    assert_eq!(server.call("GET", "/hello", false, "").0, 200);
    assert_eq!(server.call("GET", "/users/7", false, "").0, 200);
    assert_eq!(server.call("GET", "/fail", false, "").0, 500);
    assert_eq!(server.call("GET", "/panic", false, "").0, 500);
    assert_eq!(server.call("GET", "/slow?ms=5", false, "").0, 200);
    assert_eq!(server.call("GET", "/nowhere", false, "").0, 404);
    let login =
        |user: &str, password: &str| format!(r#"{{"user":"{user}","password":"{password}"}}"#);
    assert_eq!(
        server
            .call("POST", "/login", false, &login("demo", "demo"))
            .0,
        200
    );
    assert_eq!(
        server
            .call("POST", "/login", false, &login("mallory", LOGIN_PASSWORD))
            .0,
        401
    );
    // The operator views need the token; without it they answer (and leak) nothing.
    let (status, _) = server.call("GET", "/qiflow/api/alerts", false, "");
    assert_eq!(status, 401);

    // Every channel fails; the failures are in the alert view (and the log).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, text) = server.call("GET", "/qiflow/api/alerts", true, "");
        assert_eq!(status, 200, "{text}");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let view: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let failed = view["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["last_error"].is_string())
            .count();
        if failed == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every channel failed within 60 s: {text}\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The DSN's reporter fails too (counted, not logged: a log line about it would be an error
    // report again).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = server.call("GET", "/metrics", true, "");
        if metrics.lines().any(|l| {
            l.starts_with("qiflow_errors_forwarded_total{")
                && l.contains(r#"outcome="failed""#)
                && l.contains(r#"reporter="sentry""#)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Sentry reporter did not fail within 30 s: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for target in [
        "/metrics",
        "/health",
        "/health/ready",
        "/health/live",
        "/qiflow/api/errors",
        "/qiflow/api/alerts",
        "/qiflow/api/baselines",
        "/qiflow/api/audit",
        "/qiflow/api/audit?action=user.login",
    ] {
        let (status, text) = server.call("GET", target, true, "");
        assert_eq!(status, 200, "{target}: {text}");
        // Without the token too (the open endpoints, or a refusal).
        server.call("GET", target, false, "");
    }
    server.stop();

    // Everything the process wrote: logs (and stdout/stderr), the audit trail, the state files.
    let files = files_under(d, &config_path);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.strip_prefix(d).unwrap().display().to_string())
        .collect();
    for expected in ["logs/app.log", "stdout.txt", "data/alerts.json"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(names.iter().any(|n| n.starts_with("audit/")), "{names:?}");
    // Compressed files could not be searched: there must be none (no rotation in this run).
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".gz") || n.ends_with(".zst")),
        "{names:?}"
    );
    let log = &files
        .iter()
        .find(|(p, _)| p.ends_with("logs/app.log"))
        .unwrap()
        .1;
    // The error paths ran: each channel's failure, and the Sentry reporter's, were logged.
    for channel in ["hook", "slack", "ding", "sms", "am", "mail"] {
        assert!(
            log.lines().any(|l| l.contains("alert notification")
                && l.contains(&format!(r#""channel":"{channel}""#))),
            "no failure of {channel} in the log:\n{log}"
        );
    }
    assert!(
        log.contains("answered 404"),
        "the echo server's answer is logged: {log}"
    );
    assert!(log.contains("[REDACTED]"), "and scrubbed: {log}");
    for (path, text) in &files {
        assert_clean(&path.display().to_string(), text);
    }
}
