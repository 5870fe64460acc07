//! The instrumented reference server (`tether-pro sync-server --capture`) in a child process,
//! as a user runs it: configured by environment variables, stopped by a signal.
//!
//! Declared with `#[path]` by the tests that use it, next to `mod common;`.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct ChildServer {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the server printed it.
    pub base: String,
    /// Everything it wrote on stderr, when `start` was asked to keep it.
    stderr: Option<Arc<Mutex<String>>>,
}

impl ChildServer {
    /// Starts it against `clickhouse_url` / `database` with `env` on top (inherited `OTEL_*`
    /// variables are removed first). With `keep_stderr`, stderr is collected for
    /// [`ChildServer::terminate`]; otherwise it goes to the test's own stderr.
    pub fn start(clickhouse_url: &str, database: &str, env: &[(&str, &str)], keep_stderr: bool) -> ChildServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether-pro"));
        cmd.args(["sync-server", "--listen", "127.0.0.1:0", "--db", ":memory:", "--capture"])
            .env("CLICKHOUSE_URL", clickhouse_url)
            .env("TETHER_PRO_CLICKHOUSE__DATABASE", database)
            .stdout(Stdio::piped())
            .stderr(if keep_stderr { Stdio::piped() } else { Stdio::inherit() });
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tether-pro sync-server");
        let stderr = child.stderr.take().map(|mut err| {
            let sink = Arc::new(Mutex::new(String::new()));
            let keep = sink.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    keep.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            sink
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("reference Tether sync server on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).expect("the sync server printed its address");
        ChildServer { child, base, stderr }
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM; asserts a clean exit and returns what it wrote on stderr (when kept).
    pub fn terminate(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown failed: {status}");
        // The reader thread drains the pipe's last bytes.
        std::thread::sleep(Duration::from_millis(200));
        self.stderr.as_ref().map(|s| s.lock().unwrap().clone()).unwrap_or_default()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A URL where nothing listens (ClickHouse away).
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}
