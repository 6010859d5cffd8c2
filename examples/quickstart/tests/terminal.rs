//! Started by a person, on a terminal, the quickstart prints one plain line on stderr with the
//! URL of the operator surface and where its token is (never the token), besides the JSON log.
//! With stdout not a terminal (a service manager, a test) it does not: the conformance suite
//! checks that on all three stacks.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

/// A pseudo-terminal: the side the child writes to, and a thread draining the other side so
/// the child never blocks on a full terminal.
fn terminal() -> (File, std::thread::JoinHandle<Vec<u8>>) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut master = File::from(master);
    let drain = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with an error (EIO) once the child, the last holder of the other side, exits.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    (slave, drain)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16, stdout: Stdio) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("QIFLOW") {
            command.env_remove(name);
        }
    }
    command
        .current_dir(dir)
        .env("QIFLOW_ADDR", format!("127.0.0.1:{port}"))
        .env("QIFLOW__SERVICE__ENVIRONMENT", "test")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(File::create(dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until stderr holds `needle` or the child exits; returns stderr.
fn wait_for(dir: &Path, child: &mut Child, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
        if stderr.contains(needle) || child.try_wait().unwrap().is_some() {
            return stderr;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on stderr:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn on_a_terminal_it_prints_one_plain_line_with_the_url_and_the_token_file() {
    let marker = "qiflow: operator surface at";
    // A port free a moment ago may be taken before the binary binds it: try a few.
    for attempt in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (tty, drain) = terminal();
        let mut child = start(dir.path(), port, Stdio::from(tty));
        wait_for(dir.path(), &mut child, "api/errors)\n");
        stop(child);
        let shown = drain.join().unwrap();
        let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
        if stderr.contains("Address already in use") && attempt < 5 {
            continue;
        }
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(marker)).collect();
        let url = format!("http://127.0.0.1:{port}/qiflow/");
        assert_eq!(
            lines,
            [format!(
                "{marker} {url} \u{2014} token in data/admin-token (dashboard: open {url}#token=<the token>; curl -H \"Authorization: Bearer $(cat data/admin-token)\" {url}api/errors)"
            )],
            "stderr:\n{stderr}"
        );
        // The JSON log still goes to stdout, the terminal.
        let shown = String::from_utf8_lossy(&shown);
        assert!(shown.contains("\"target\":\"qiflow::admin\""), "{shown}");
        // Never the token itself.
        let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
        assert_eq!(token.trim().len(), 64);
        assert!(!stderr.contains(token.trim()), "{stderr}");
        assert!(!shown.contains(token.trim()), "{shown}");
        return;
    }
}
