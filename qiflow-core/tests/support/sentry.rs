//! An in-process HTTP server that speaks Sentry's envelope endpoint (`POST /api/<project>/envelope/`)
//! on 127.0.0.1, for the capture tests: it records what it receives and answers as told (200,
//! an error status, 429 with headers, or never).

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// `200 OK` with `{"id":…}`.
    Ok,
    /// This status, empty body.
    Status(u16),
    /// `429` with these headers.
    TooMany(Vec<(&'static str, String)>),
    /// Reads the request and never answers (the connection stays open).
    Hang,
}

/// One request the server read.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `event` item of the envelope, parsed.
    pub(crate) fn event(&self) -> Option<serde_json::Value> {
        let text = String::from_utf8_lossy(&self.body);
        let mut lines = text.lines();
        lines.next()?; // envelope header
        while let Some(line) = lines.next() {
            let header: serde_json::Value = serde_json::from_str(line).ok()?;
            let payload = lines.next()?;
            if header["type"] == "event" {
                return serde_json::from_str(payload).ok();
            }
        }
        None
    }
}

pub(crate) struct FakeSentry {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<Received>>>,
    requests: Arc<AtomicUsize>,
}

impl FakeSentry {
    pub(crate) fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Sentry");
        let addr = listener.local_addr().expect("local addr");
        let this = Self {
            addr,
            mode: Arc::new(Mutex::new(mode)),
            received: Arc::default(),
            requests: Arc::default(),
        };
        let (mode, received, requests) = (
            this.mode.clone(),
            this.received.clone(),
            this.requests.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (mode, received, requests) = (mode.clone(), received.clone(), requests.clone());
                std::thread::spawn(move || serve(stream, &mode, &received, &requests));
            }
        });
        this
    }

    /// A DSN pointing at this server (project 42).
    pub(crate) fn dsn(&self) -> String {
        format!("http://public@{}/42", self.addr)
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests read so far (answered or not).
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests answered `200`.
    pub(crate) fn accepted(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A DSN whose port nothing listens on.
pub(crate) fn closed_port_dsn() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://public@{addr}/42")
}

fn serve(
    stream: TcpStream,
    mode: &Mutex<Mode>,
    received: &Mutex<Vec<Received>>,
    requests: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let mode = mode.lock().unwrap().clone();
        let response = match mode {
            Mode::Ok => {
                received.lock().unwrap().push(Received {
                    path,
                    headers,
                    body,
                });
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"id\":\"\"}".to_owned()
            }
            Mode::Status(code) => format!("HTTP/1.1 {code} Error\r\ncontent-length: 0\r\n\r\n"),
            Mode::TooMany(extra) => {
                let mut response =
                    "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n".to_owned();
                for (name, value) in extra {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                response
            }
            Mode::Hang => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
        };
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
