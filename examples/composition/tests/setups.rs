//! The three set-ups of docs/composition.md, each run as a real process on loopback: the host's
//! `tracing` lines reach qiflow's log file with the request id, its `metrics::counter!` reaches
//! qiflow's `/metrics`, `PUT /qiflow/api/loggers` changes qiflow's level (and only qiflow's),
//! the host's own fmt layer keeps its lines, and the host's OpenTelemetry pipeline exports
//! qiflow's `request` span with the handler's span under it. Each process exits 0 on SIGTERM.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

/// One set-up's process, in a temp dir of its own.
struct Setup {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Setup {
    /// Starts `bin` on a free port, retrying on a fresh one when another process took it first.
    fn start(name: &'static str, bin: &str) -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let mut command = Command::new(bin);
            for (var, _) in std::env::vars_os() {
                if var.to_string_lossy().starts_with("QIFLOW") {
                    command.env_remove(var);
                }
            }
            let child = command
                .env_remove("RUST_LOG")
                .current_dir(dir.path())
                .env("QIFLOW_ADDR", addr.to_string())
                .env("QIFLOW__LOGGING__DIR", dir.path().join("logs"))
                .env("QIFLOW__LOGGING__STDOUT", "false")
                .env("QIFLOW__AUDIT__DIR", dir.path().join("audit"))
                .env("QIFLOW__SERVICE__NAME", "composition")
                .env("RUST_BACKTRACE", "0")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("stdout.txt")).unwrap())
                .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
                .spawn()
                .unwrap();
            let mut setup = Self {
                child,
                addr,
                dir,
                name,
            };
            if setup.wait_ready() {
                return setup;
            }
            assert!(
                setup.read("stderr.txt").contains("Address already in use"),
                "[{name}] exited before it was ready:\n{}",
                setup.read("stderr.txt")
            );
        }
        panic!("[{name}] could not find a free port");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if request(self.addr, "GET", "/health/live", &[], "").is_ok_and(|r| r.0 == 200) {
                return true;
            }
            assert!(Instant::now() < deadline, "[{}] never ready", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        request(self.addr, method, path, headers, body)
            .unwrap_or_else(|e| panic!("[{}] {method} {path}: {e}", self.name))
    }

    /// `GET /hello` with the request id `id`.
    fn hello(&self, id: &str) {
        let (status, body) = self.send("GET", "/hello", &[("x-request-id", id)], "");
        assert_eq!((status, body.as_str()), (200, "hello\n"), "[{}]", self.name);
    }

    /// `PUT /qiflow/api/loggers` with the token qiflow made at start.
    fn set_level(&self, filter: &str) {
        let token = self.read("data/admin-token");
        let bearer = format!("Bearer {}", token.trim());
        let body = serde_json::json!({ "filter": filter }).to_string();
        let (status, answer) = self.send(
            "PUT",
            "/qiflow/api/loggers",
            &[("authorization", &bearer)],
            &body,
        );
        assert_eq!(status, 200, "[{}] {answer}", self.name);
    }

    /// The sample of `metric` on `/metrics` (its labels are the global ones).
    fn metric(&self, metric: &str) -> Option<String> {
        let (_, text) = self.send("GET", "/metrics", &[], "");
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
            .map(str::to_owned)
    }

    /// SIGTERM, then the exit status must be success.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] still running after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "[{}] exit status {status}:\n{}",
            self.name,
            self.read("stderr.txt")
        );
    }

    /// qiflow's log lines.
    fn log(&self) -> Vec<Value> {
        self.read("logs/app.log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The request ids of qiflow's log lines with `message`.
    fn logged(&self, message: &str) -> Vec<String> {
        self.log()
            .iter()
            .filter(|l| l["message"] == message)
            .map(|l| l["request_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.0 exchange (the server closes the connection after the response, and sends no
/// chunked body): the status and the body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

fn bin(name: &str) -> PathBuf {
    match name {
        "alone" => env!("CARGO_BIN_EXE_alone").into(),
        "beside_subscriber" => env!("CARGO_BIN_EXE_beside_subscriber").into(),
        _ => env!("CARGO_BIN_EXE_beside_opentelemetry").into(),
    }
}

fn start(name: &'static str) -> Setup {
    Setup::start(name, bin(name).to_str().unwrap())
}

/// Set-up 1: `init` alone. The handler's lines carry the request id; the level changes at
/// runtime; the application's counter is on `/metrics`.
#[test]
fn qiflow_alone() {
    let mut setup = start("alone");
    setup.hello("alone-1");
    setup.set_level("info,composition=debug");
    setup.hello("alone-2");
    let counter = setup.metric("app_hellos_total").unwrap();
    assert!(counter.ends_with(" 2"), "{counter}");
    setup.stop();
    assert_eq!(setup.logged("said hello"), ["alone-1", "alone-2"]);
    assert_eq!(setup.logged("hello, in detail"), ["alone-2"]);
}

/// Set-up 2: the host's registry, EnvFilter and fmt layer, with qiflow's layers beside them.
/// qiflow's level changes; the host's fmt output keeps its own filter.
#[test]
fn qiflow_beside_the_hosts_subscriber() {
    let mut setup = start("beside_subscriber");
    setup.hello("sub-1");
    setup.set_level("info,composition=debug");
    setup.hello("sub-2");
    let counter = setup.metric("app_hellos_total").unwrap();
    assert!(counter.ends_with(" 2"), "{counter}");
    setup.stop();
    assert_eq!(setup.logged("said hello"), ["sub-1", "sub-2"]);
    assert_eq!(setup.logged("hello, in detail"), ["sub-2"]);
    // The host's fmt layer wrote the info lines to stdout, never the debug line; qiflow wrote
    // nothing there.
    let stdout = setup.read("stdout.txt");
    assert_eq!(stdout.matches("said hello").count(), 2, "{stdout}");
    assert!(!stdout.contains("hello, in detail"), "{stdout}");
    assert!(!stdout.contains(r#""message":"#), "{stdout}");
}

/// Set-up 3: the host's OpenTelemetry pipeline exports qiflow's `request` span (with the
/// request id as an attribute) and the handler's span as its child, in one trace.
#[test]
fn qiflow_beside_an_opentelemetry_pipeline() {
    let mut setup = start("beside_opentelemetry");
    setup.hello("otel-1");
    setup.stop();
    assert_eq!(setup.logged("said hello"), ["otel-1"]);
    let spans: Vec<Value> = setup
        .read("stdout.txt")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let request = spans
        .iter()
        .find(|s| s["name"] == "request" && s["attributes"]["request_id"] == "otel-1")
        .unwrap_or_else(|| panic!("no request span for otel-1: {spans:#?}"));
    assert_eq!(request["attributes"]["http.route"], "/hello", "{request}");
    let hello = spans
        .iter()
        .find(|s| s["name"] == "hello")
        .unwrap_or_else(|| panic!("no hello span: {spans:#?}"));
    assert_eq!(hello["trace_id"], request["trace_id"], "{spans:#?}");
    assert_eq!(hello["parent_span_id"], request["span_id"], "{spans:#?}");
}

/// docs/composition.md shows each set-up's code as it is in its binary.
#[test]
fn the_guide_quotes_the_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/composition.md")).unwrap();
    let mut quoted = 0;
    let mut rest = guide.as_str();
    while let Some(at) = rest.find("<!-- quoted from ") {
        let after = &rest[at + "<!-- quoted from ".len()..];
        let (file, after) = after.split_once(" -->").unwrap();
        let code = after
            .split_once("```rust\n")
            .and_then(|(_, code)| code.split_once("```"))
            .map(|(code, _)| code)
            .unwrap();
        let source = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("docs/composition.md quotes {file}: {e}"));
        assert!(
            source.contains(code),
            "docs/composition.md's block quoted from {file} is not in it any more:\n{code}"
        );
        quoted += 1;
        rest = after;
    }
    assert_eq!(quoted, 3, "one block per set-up");
}
