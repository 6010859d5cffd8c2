//! End to end: the `two-services` binary started twice on free loopback ports (a backend, then a
//! frontend calling it), each in a temp dir of its own with its log file there. Checkouts are
//! sent to the frontend without a `traceparent` and with one; after both have shut down, their
//! log files must show one trace per checkout: the backend's access line with the frontend's
//! trace id (the incoming one when there was one), and the backend's answer naming the
//! frontend's request span as its parent.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The trace and the caller's span of the incoming `traceparent` the test sends.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// How long a service may take to answer `/health/live` after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a service may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn the_backend_continues_the_frontends_trace() {
    let mut backend = Service::start("backend", &[]);
    let backend_url = format!("http://{}", backend.addr);
    let mut frontend = Service::start("frontend", &[("BACKEND_URL", backend_url.as_str())]);

    // No traceparent: the frontend starts a trace and hands it to the backend.
    let fresh = frontend.get("/checkout/apple", &[]);
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    let fresh_answer = fresh.json();
    assert_eq!(fresh_answer["available"], true, "{fresh_answer}");
    assert_eq!(fresh_answer["stock"]["stock"], 12, "{fresh_answer}");

    // A traceparent: both services continue the caller's trace.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let traced = frontend.get("/checkout/pear", &[("traceparent", &traceparent)]);
    assert_eq!(traced.status, 200, "{}", traced.text());
    let traced_answer = traced.json();
    assert_eq!(traced_answer["available"], false, "{traced_answer}");
    assert_eq!(traced_answer["trace_id"], TRACE_ID, "{traced_answer}");

    // Input the services refuse is answered, as JSON errors.
    let bad = frontend.get("/checkout/not%20a%20sku", &[]);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.json()["error"].is_string(), "{}", bad.text());
    let unknown = frontend.get("/checkout/kiwi", &[]);
    assert_eq!(
        unknown.status,
        404,
        "the backend's 404 is passed on: {}",
        unknown.text()
    );
    assert!(unknown.json()["error"].is_string(), "{}", unknown.text());

    frontend.stop();
    backend.stop();
    let front_lines = frontend.log_lines();
    let back_lines = backend.log_lines();
    let access = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["target"] == "qiflow::access")
            .cloned()
            .collect()
    };
    let (front, back) = (access(&front_lines), access(&back_lines));

    let mut traces = Vec::new();
    for (response, answer, path, incoming) in [
        (&fresh, &fresh_answer, "/stock/apple", None),
        (&traced, &traced_answer, "/stock/pear", Some(TRACE_ID)),
    ] {
        let request_id = response.header("x-request-id").unwrap_or_default();
        let line = front
            .iter()
            .find(|l| l["request_id"] == request_id)
            .unwrap_or_else(|| {
                panic!(
                    "no frontend access line for {request_id}:\n{}",
                    lines(&front)
                )
            });
        let trace_id = line["trace_id"].as_str().unwrap_or_default();
        assert!(is_hex(trace_id, 32), "the frontend's trace id: {line}");
        match incoming {
            Some(incoming) => {
                assert_eq!(
                    trace_id, incoming,
                    "the incoming trace is continued: {line}"
                );
                assert_ne!(line["span_id"], PARENT_SPAN_ID, "a span of its own: {line}");
            }
            None => assert_ne!(trace_id, TRACE_ID, "a new trace: {line}"),
        }
        // The backend's access line for the call is in the same trace.
        let called: Vec<&Value> = back.iter().filter(|l| l["trace_id"] == trace_id).collect();
        assert_eq!(
            called.len(),
            1,
            "backend access lines in the frontend's trace {trace_id}:\n{}",
            lines(&back)
        );
        let called = called[0];
        assert_eq!(called["path"], path, "{called}");
        assert_eq!(called["route"], "/stock/{sku}", "{called}");
        assert_eq!(called["status"], 200, "{called}");
        assert_ne!(
            called["span_id"], line["span_id"],
            "a span of its own: {called}"
        );
        // Its handler's line too, with the same span as its access line.
        let looked_up = back_lines
            .iter()
            .find(|l| l["message"] == "stock looked up" && l["trace_id"] == trace_id)
            .unwrap_or_else(|| panic!("no backend handler line in the trace {trace_id}"));
        assert_eq!(looked_up["span_id"], called["span_id"], "{looked_up}");
        // The answers tell the same: the frontend's trace, and the backend's request as a child
        // of the frontend's request span.
        assert_eq!(answer["trace_id"], trace_id, "{answer}");
        assert_eq!(answer["stock"]["trace_id"], trace_id, "{answer}");
        assert_eq!(
            answer["stock"]["parent_span_id"], line["span_id"],
            "the backend's parent is the frontend's request span: {answer}\n{line}"
        );
        traces.push(trace_id.to_owned());
    }
    assert_ne!(traces[0], traces[1], "two checkouts, two traces");
    backend.cleanup();
    frontend.cleanup();
}

/// One of the two processes, in its own temp dir (its working directory: logs, audit trail and
/// `data/` are there). Killed on drop if the test fails before it exits; its dir is kept then.
struct Service {
    role: &'static str,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    exited: Option<ExitStatus>,
    clean: bool,
}

impl Service {
    /// Starts the binary as `role`, with `env` besides the test's settings, on a port that was
    /// free a moment ago. Another process can take such a port before the binary binds it;
    /// then the binary exits with "Address already in use" and this tries again on a new port,
    /// up to five times.
    fn start(role: &'static str, env: &[(&str, &str)]) -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start(role, env) {
                Ok(service) => return service,
                Err(output) if output.contains("Address already in use") && attempt < 5 => {
                    attempt += 1;
                }
                Err(output) => panic!("the {role} exited before it was ready:{output}"),
            }
        }
    }

    /// Starts the binary; `Err` with its output when it exits before answering.
    fn try_start(role: &'static str, env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_port();
        let stdout = File::create(dir.path().join("stdout.txt")).expect("create stdout.txt");
        let stderr = File::create(dir.path().join("stderr.txt")).expect("create stderr.txt");
        let mut command = Command::new(env!("CARGO_BIN_EXE_two-services"));
        // Only the test's settings: nothing from the developer's environment.
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("QIFLOW") || text.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        command
            .arg(role)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("BACKEND_URL")
            .env("QIFLOW_ADDR", addr.to_string())
            .env("QIFLOW__SERVICE__NAME", role)
            .env("QIFLOW__LOGGING__DIR", dir.path().join("logs"))
            .env("QIFLOW__LOGGING__STDOUT", "false")
            .env("QIFLOW__AUDIT__DIR", dir.path().join("audit"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {role}: {e}"));
        let mut service = Self {
            role,
            child,
            addr,
            dir,
            exited: None,
            clean: false,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                service.exited = Some(status);
                let output = format!(" {status}{}", service.output());
                // A port taken meanwhile is tried again: nothing to keep.
                service.clean = output.contains("Address already in use");
                return Err(output);
            }
            if request(addr, "/health/live", &[]).is_ok_and(|r| r.status == 200) {
                return Ok(service);
            }
            assert!(
                Instant::now() < deadline,
                "the {role} did not answer /health/live on {addr} within {STARTUP_TIMEOUT:?}{}",
                service.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `GET target` with `headers`, failing the test on a transport error.
    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, target, headers)
            .unwrap_or_else(|e| panic!("{} GET {target}: {e}{}", self.role, self.output()))
    }

    /// SIGTERM, then waits (bounded) for the process to exit 0.
    fn stop(&mut self) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM the {}: {kill}", self.role);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the {} still runs {EXIT_TIMEOUT:?} after SIGTERM{}",
                self.role,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "the {} exited with {status} after SIGTERM{}",
            self.role,
            self.output()
        );
    }

    /// The JSON lines of its log file.
    fn log_lines(&self) -> Vec<Value> {
        let path = self.dir.path().join("logs").join("app.log");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: a line is not JSON ({e}): {line}", path.display())
                })
            })
            .collect()
    }

    /// Its stderr and stdout, and where its files are, for failure messages.
    fn output(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "\n--- the {}'s files: {}\n--- stderr:\n{}\n--- stdout:\n{}",
            self.role,
            self.dir.path().display(),
            read("stderr.txt"),
            read("stdout.txt")
        )
    }

    /// Lets its temp dir be removed (once every check passed).
    fn cleanup(&mut self) {
        self.clean = true;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.clean {
            self.dir.disable_cleanup(true);
            eprintln!(
                "two-services: the {}'s files kept in {}",
                self.role,
                self.dir.path().display()
            );
        }
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// Whether `s` is `len` lowercase hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// JSON lines, one a line, for failure messages.
fn lines(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An HTTP response: status, headers (names lower case) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, failing the test when it is not.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

/// Sends `GET target` over HTTP/1.1 with `connection: close` and reads the whole response (the
/// services answer with a `content-length`).
fn request(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of head in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut head_lines = head.split("\r\n");
    let status_line = head_lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = head_lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(invalid(format!(
                "body cut short: {} of {len} bytes",
                body.len()
            )));
        }
        body.truncate(len);
    } else {
        return Err(invalid(format!("no content-length: {head}")));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
