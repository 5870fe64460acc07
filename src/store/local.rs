//! The embedded local ClickHouse: a real ClickHouse 26.9 server started on loopback by the
//! project's launcher script (`scripts/clickhouse-local`), for the demo binary, tests and
//! benches when no `CLICKHOUSE_URL` is configured.
//!
//! There is no Docker on our machines and distro packages of ClickHouse are years old, so
//! the launcher runs the ClickHouse engine from the pinned `chdb-core` PyPI wheel (installed
//! into a cache venv on first use). All it needs is `python3` on the `PATH`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The launcher, embedded so the binary also works outside the repository.
const LAUNCHER: &str = include_str!("../../scripts/clickhouse-local");

/// How long [`Drop`] waits for a clean shutdown before killing the launcher (longer than
/// the launcher's own deadline: 10 s, 30 s for a cluster member).
const STOP_TIMEOUT: Duration = Duration::from_secs(35);

/// How to start a [`LocalClickHouse`].
#[derive(Debug, Clone)]
pub struct LocalClickHouseOptions {
    /// Where ClickHouse keeps its data. Only one server may use a directory at a time.
    pub data_dir: PathBuf,
    /// HTTP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Native TCP port on 127.0.0.1; 0 picks a free one. A cluster member needs a fixed one,
    /// known to every member before any of them starts.
    pub tcp_port: u16,
    /// Make this server a member of a `remote_servers` cluster (see [`LocalCluster`]).
    pub cluster: Option<LocalCluster>,
    /// Delete `data_dir` when the server stops (for tests with a temporary directory).
    pub ephemeral: bool,
    /// How long to wait for the server to answer. Generous by default because the first
    /// run on a machine downloads and installs a ~180 MB wheel.
    pub startup_timeout: Duration,
}

impl Default for LocalClickHouseOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".tether-pro/clickhouse"),
            port: 0,
            tcp_port: 0,
            cluster: None,
            ephemeral: false,
            startup_timeout: Duration::from_secs(300),
        }
    }
}

/// A `remote_servers` cluster entry written into the member's config.xml, so that
/// `Distributed('<name>', ...)` tables on it reach every shard. clickhouse-local has no
/// Keeper: ON CLUSTER DDL and Replicated* engines do not run on such a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCluster {
    /// The cluster's name, as `clickhouse.cluster` names it.
    pub name: String,
    /// `host:tcp_port` of each shard (one replica each), in shard order, this member included.
    pub shards: Vec<String>,
    /// `<macros>` of this member, e.g. `("shard", "01")`, `("replica", "r1")`.
    pub macros: Vec<(String, String)>,
}

/// Starts a cluster of `shards` local servers named `name` (ephemeral data directories
/// under `parent`), each one shard with one replica and macros `shard=NN`, `replica=r1`.
/// TCP ports are picked first because each member's config lists all of them. Members
/// start one after the other; a failure stops those already started.
pub fn start_cluster(name: &str, shards: usize, parent: &Path) -> Result<Vec<LocalClickHouse>> {
    let ports = free_tcp_ports(shards)?;
    let members: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut started = Vec::with_capacity(shards);
    for (i, port) in ports.iter().enumerate() {
        let data_dir = parent.join(format!("shard-{:02}", i + 1));
        started.push(LocalClickHouse::start(LocalClickHouseOptions {
            data_dir,
            port: 0,
            tcp_port: *port,
            cluster: Some(LocalCluster {
                name: name.to_string(),
                shards: members.clone(),
                macros: vec![
                    ("shard".to_string(), format!("{:02}", i + 1)),
                    ("replica".to_string(), "r1".to_string()),
                ],
            }),
            ephemeral: true,
            startup_timeout: Duration::from_secs(300),
        })?);
    }
    Ok(started)
}

/// `n` distinct free TCP ports on loopback: all listeners are held open until every port is
/// chosen, so the kernel cannot hand the same port out twice.
fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("failed to pick free TCP ports for the cluster")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A running local ClickHouse server, owned by this process.
///
/// The launcher watches its stdin, which is a pipe held by this handle: when this process
/// exits for any reason, even a crash or SIGKILL, the pipe closes and the server stops.
#[derive(Debug)]
pub struct LocalClickHouse {
    url: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl LocalClickHouse {
    /// Starts a server and blocks until it answers on HTTP (or fails, or times out).
    pub fn start(opts: LocalClickHouseOptions) -> Result<Self> {
        let launcher = install_launcher()?;
        let mut cmd = Command::new("python3");
        cmd.arg(&launcher)
            .arg("--port")
            .arg(opts.port.to_string())
            .arg("--data")
            .arg(&opts.data_dir);
        if opts.tcp_port != 0 {
            cmd.arg("--tcp-port").arg(opts.tcp_port.to_string());
        }
        if let Some(cluster) = &opts.cluster {
            cmd.arg("--cluster").arg(&cluster.name);
            for shard in &cluster.shards {
                cmd.arg("--shard").arg(shard);
            }
            for (key, value) in &cluster.macros {
                cmd.arg("--macro").arg(format!("{key}={value}"));
            }
        }
        if opts.ephemeral {
            cmd.arg("--ephemeral");
        }
        // Its own process group: a Ctrl-C at the terminal reaches only us, and we stop the
        // server last (closing its stdin), after the capture pipeline has flushed into it.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("--watch-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "failed to run `python3 {}`: the embedded ClickHouse needs python3 on the PATH",
                launcher.display()
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");

        // std has no read timeout on pipes: read lines on a thread, wait on a channel. The
        // thread keeps draining stdout until the launcher exits.
        let (tx, rx) = mpsc::channel::<String>();
        thread::Builder::new()
            .name("clickhouse-launcher-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })
            .context("failed to spawn the launcher's stdout reader")?;

        let mut server = Self {
            url: String::new(),
            child,
            stdin,
        };
        let deadline = Instant::now() + opts.startup_timeout;
        let what = format!("local ClickHouse (data dir {})", opts.data_dir.display());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("READY ") {
                        server.url = url.trim().to_string();
                        return Ok(server);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_for_exit(Duration::from_secs(5));
                    let status = status.map_or("did not exit".to_string(), |s| s.to_string());
                    bail!(
                        "{what} failed to start: the launcher exited ({status}) without \
                         printing READY; its error messages are above on stderr"
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    bail!(
                        "{what} did not become ready within {:?}",
                        opts.startup_timeout
                    );
                }
            }
        }
    }

    /// The server's HTTP URL, e.g. `http://127.0.0.1:8123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id of the server (the launcher runs ClickHouse in-process), e.g. to read
    /// its CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server cleanly (see [`Drop`]). ClickHouse waits up to ~5 s for idle
    /// keep-alive connections, so drop its clients first for a fast stop.
    pub fn stop(self) {
        drop(self)
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }
}

impl Drop for LocalClickHouse {
    /// Closing the launcher's stdin is its stop signal: it shuts ClickHouse down cleanly.
    /// If that takes longer than 35 s, kill the launcher (the server follows it).
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.wait_for_exit(STOP_TIMEOUT).is_none() {
            tracing::warn!(url = %self.url, "local ClickHouse did not stop in time; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The cache directory shared with the launcher:
/// `$TETHER_PRO_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/tether-pro`.
fn cache_dir() -> Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("TETHER_PRO_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match non_empty("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            non_empty("HOME").ok_or_else(|| anyhow!("neither TETHER_PRO_CACHE nor HOME is set"))?,
        )
        .join(".cache"),
    };
    Ok(base.join("tether-pro"))
}

/// Writes the embedded launcher into the cache under a name carrying a hash of its content,
/// so binaries built from different versions never run each other's launcher.
fn install_launcher() -> Result<PathBuf> {
    let dir = cache_dir()?;
    let path = dir.join(format!(
        "clickhouse-local-{:016x}.py",
        fnv1a64(LAUNCHER.as_bytes())
    ));
    if fs::read(&path).is_ok_and(|existing| existing == LAUNCHER.as_bytes()) {
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    write_atomically(&path, LAUNCHER.as_bytes()).with_context(|| {
        format!(
            "failed to write the ClickHouse launcher to {}",
            path.display()
        )
    })?;
    Ok(path)
}

/// Write to a temporary file unique to this call, then rename: concurrent starts (threads
/// or processes) never see, or rename away, a half-written launcher.
fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{unique}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// FNV-1a: a hash that, unlike `DefaultHasher`, is the same for every build.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_name_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
