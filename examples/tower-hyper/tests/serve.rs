//! End to end: starts the `tower-hyper` binary on a free loopback port, exercises every demo
//! route and qiflow's endpoints over a plain `TcpStream`, then sends SIGTERM while a request is
//! in flight and checks that it finishes, that the process exits 0 and that the access lines
//! reached the log file.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A password that must never appear in the logs.
const WRONG_PASSWORD: &str = "hunter2-never-logged";

/// The example's process; killed on drop if the test fails before it exits.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the binary with extra environment variables.
    fn start_with(env: &[(&str, String)]) -> Self {
        Self::start_with_fresh(|| env.to_vec())
    }

    /// Starts the binary with the environment `env` makes, on a port that was free a moment
    /// ago. Another process can take such a port before the binary binds it (a client's
    /// ephemeral port, say); then the binary exits with "Address already in use" and this tries
    /// again with new ports, and new values from `env`, up to five times.
    fn start_with_fresh<'a>(mut env: impl FnMut() -> Vec<(&'a str, String)>) -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start(&env()) {
                Ok(server) => return server,
                Err(stderr) if stderr.contains("Address already in use") && attempt < 5 => {
                    attempt += 1;
                }
                Err(stderr) => panic!("tower-hyper exited early; stderr:\n{stderr}"),
            }
        }
    }

    /// Starts the binary; `Err` with its stderr when it exits before answering.
    fn try_start(env: &[(&str, String)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let stderr = File::create(dir.path().join("stderr.txt")).expect("stderr file");
        let stdout = File::create(dir.path().join("stdout.txt")).expect("stdout file");
        let child = Command::new(env!("CARGO_BIN_EXE_tower-hyper"))
            .current_dir(dir.path())
            .env_remove("QIFLOW_CONFIG")
            .env("QIFLOW_ADDR", format!("127.0.0.1:{port}"))
            .env("QIFLOW__LOGGING__DIR", dir.path().join("logs"))
            .env("QIFLOW__LOGGING__STDOUT", "false")
            .env("QIFLOW__AUDIT__ENABLED", "false")
            // Series as the assertions spell them; the conformance suite checks global labels.
            .env("QIFLOW__METRICS__GLOBAL_LABELS", "false")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the tower-hyper binary");
        let mut server = Self { child, port, dir };
        server.wait_until_live()?;
        Ok(server)
    }

    /// Waits (at most 60 s) until `/hello` answers; `Err` with the stderr if the binary exits.
    fn wait_until_live(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exit {status}: {}", self.stderr()));
            }
            // `/hello` answers whether qiflow's endpoints are on this port or the internal one.
            if let Ok(reply) = request(self.port, "GET", "/hello", &[], "")
                && reply.status == 200
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "tower-hyper did not answer /hello within 60 s; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> Reply {
        request(self.port, "GET", path, &[], "").expect("GET request")
    }

    fn login(&self, user: &str, password: &str) -> Reply {
        let body = format!(r#"{{"user":"{user}","password":"{password}"}}"#);
        request(
            self.port,
            "POST",
            "/login",
            &[("Content-Type", "application/json")],
            &body,
        )
        .expect("POST /login")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.txt")).unwrap_or_default()
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("logs").join("app.log")
    }

    /// Sends SIGTERM with the `kill` command (no unsafe `libc::kill`).
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tower-hyper did not exit within {within:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
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

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         User-Agent: tower-hyper-test\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the log file {}: {e}", path.display()))
}

#[test]
fn demo_routes_metrics_health_and_graceful_shutdown() {
    let mut server = Server::start();

    // The demo routes.
    let hello = server.get("/hello");
    assert_eq!(hello.status, 200, "{hello:?}");
    assert_eq!(hello.body, "hello from qiflow\n");
    assert!(
        hello
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "no request id echoed: {hello:?}"
    );
    let honoured = request(
        server.port,
        "GET",
        "/hello",
        &[("X-Request-Id", "test-request-1")],
        "",
    )
    .expect("GET /hello with an id");
    assert_eq!(honoured.header("x-request-id"), Some("test-request-1"));

    for id in [1, 2, 42] {
        let user = server.get(&format!("/users/{id}"));
        assert_eq!(user.status, 200, "{user:?}");
        let json: serde_json::Value = serde_json::from_str(&user.body).expect("user JSON");
        assert_eq!(json["id"], id);
        assert_eq!(json["name"], format!("user {id}"));
    }
    assert_eq!(server.get("/users/abc").status, 400);

    let fail = server.get("/fail");
    assert_eq!(fail.status, 500, "{fail:?}");

    let panic = server.get("/panic");
    assert_eq!(panic.status, 500, "{panic:?}");
    assert!(panic.header("x-request-id").is_some());
    // The server lives on after the panic.
    assert_eq!(server.get("/hello").status, 200);

    let slow = server.get("/slow?ms=30");
    assert_eq!(slow.status, 200);
    assert_eq!(slow.body, "slept 30 ms\n");
    assert_eq!(server.get("/slow?ms=ten").status, 400);

    assert_eq!(server.login("demo", "demo").status, 200);
    assert_eq!(server.login("demo", WRONG_PASSWORD).status, 401);
    let not_json = request(server.port, "POST", "/login", &[], "user=demo").expect("POST");
    assert_eq!(not_json.status, 415);
    assert_eq!(
        request(server.port, "POST", "/hello", &[], "")
            .expect("POST /hello")
            .status,
        405
    );
    assert_eq!(server.get("/login").status, 405);

    // Unknown paths: 404, one `unmatched` series whatever the path.
    for i in 0..5 {
        assert_eq!(server.get(&format!("/scanner/probe-{i}.php")).status, 404);
    }

    // qiflow's endpoints.
    for path in ["/health/live", "/health/ready", "/health"] {
        let health = server.get(path);
        assert_eq!(health.status, 200, "{path}: {health:?}");
        assert_eq!(health.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&health.body).expect("health JSON");
        assert_eq!(json["status"], "healthy", "{path}: {}", health.body);
    }

    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = &metrics.body;
    for line in [
        r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"} 3"#,
        r#"http_server_requests_total{method="GET",route="/users/{id}",status="400"} 1"#,
        // Startup probes add to /hello's count.
        r#"http_server_requests_total{method="GET",route="/hello",status="200"} "#,
        r#"http_server_requests_total{method="GET",route="/fail",status="500"} 1"#,
        r#"http_server_requests_total{method="GET",route="/panic",status="500"} 1"#,
        r#"http_server_requests_total{method="POST",route="/login",status="200"} 1"#,
        r#"http_server_requests_total{method="POST",route="/login",status="401"} 1"#,
        r#"http_server_requests_total{method="GET",route="unmatched",status="404"} 5"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(!text.contains("probe-"), "raw paths leaked into labels");
    assert!(!text.contains("/users/42"), "raw paths leaked into labels");
    assert!(
        !text.contains(r#"route="/metrics""#) && !text.contains(r#"route="/health"#),
        "qiflow's own endpoints must not be observed"
    );

    // SIGTERM with a request in flight: it finishes, then the process exits 0.
    let port = server.port;
    let in_flight =
        std::thread::spawn(move || request(port, "GET", "/slow?ms=1500", &[], "").expect("slow"));
    wait_for(
        "the slow request to be in flight",
        Duration::from_secs(30),
        || {
            server
                .get("/metrics")
                .body
                .contains(r#"http_server_active_requests{method="GET",route="/slow"} 1"#)
        },
    );
    server.terminate();
    let status = server.wait_for_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    let slow = in_flight.join().expect("the slow request thread");
    assert_eq!(slow.status, 200, "the in-flight request was cut: {slow:?}");
    assert_eq!(slow.body, "slept 1500 ms\n");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting after exit"
    );

    // The guard flushed the access lines to the log file.
    let log = read_log(&server.log_file());
    let access: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(r#""target":"qiflow::access""#))
        .collect();
    assert!(
        access.iter().any(|l| l.contains(r#""route":"/users/{id}""#)
            && l.contains(r#""path":"/users/42""#)
            && l.contains(r#""status":200"#)),
        "no access line for /users/42 in:\n{log}"
    );
    assert!(
        access.iter().any(|l| l.contains(r#""route":"/fail""#)
            && l.contains("cannot read the demo port: invalid digit found in string")),
        "no access line with the /fail cause in:\n{log}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains(r#""route":"/panic""#) && l.contains(r#""status":500"#)),
        "no access line for /panic in:\n{log}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains(r#""route":"/slow""#) && l.contains(r#""path":"/slow""#)),
        "no access line for the in-flight /slow in:\n{log}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains(r#""route":"unmatched""#) && l.contains("probe-0.php")),
        "no access line for an unknown path in:\n{log}"
    );
    assert!(
        log.contains(r#""message":"login attempt""#),
        "no login line in:\n{log}"
    );
    assert!(
        !log.contains(WRONG_PASSWORD),
        "the password reached the log file:\n{log}"
    );
}

#[test]
fn metrics_listen_moves_qiflow_endpoints_to_the_internal_port() {
    let mut internal = 0;
    let mut server = Server::start_with_fresh(|| {
        internal = free_port();
        vec![("QIFLOW__METRICS__LISTEN", format!("127.0.0.1:{internal}"))]
    });
    assert_eq!(server.get("/users/7").status, 200);

    // Not on the application's port any more.
    assert_eq!(server.get("/metrics").status, 404);
    assert_eq!(server.get("/health/live").status, 404);

    // On the internal one, and nothing else there.
    let get = |path: &str| request(internal, "GET", path, &[], "").expect("internal GET");
    let metrics = get("/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.body.contains(
            r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"} 1"#
        ),
        "{}",
        metrics.body
    );
    for path in ["/health/live", "/health/ready", "/health"] {
        assert_eq!(get(path).status, 200, "{path}");
    }
    assert_eq!(get("/hello").status, 404);

    server.terminate();
    let status = server.wait_for_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
}
