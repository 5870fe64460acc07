//! Shared by the benches (`capture`, `host_overhead`, `pipeline_native`, `outage_memory`):
//! ClickHouse, the simulator's push workload, capture records of pushes, the reference server
//! in a child process per variant, a loopback load generator, and `/proc` readings of the
//! child.
//!
//! Why child processes: a global `tracing` subscriber (what a real host installs, and what
//! `tracing-opentelemetry` users do) cannot be swapped per variant inside one process, and
//! the child's CPU time and resident memory are then the server's alone.

// Each bench binary compiles its own copy and uses only part of it.
#![allow(dead_code)]

pub mod child;
pub mod load;
pub mod receiver;

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tether_pro::capture::{CaptureRecord, CapturedBody, MutationState, RequestKind, StateValue};
use tether_pro::config::RetentionConfig;
use tether_pro::protocol::{Object, PUSH_PATH, PushRequest};
use tether_pro::sim::plan;
use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};
use tether_pro::sync::{PushResult, SyncServer};

/// Mutations per push (the batch size).
pub const BATCH: usize = 50;
/// Of which edits of records created by earlier pushes (once there are any).
const UPDATES_PER_PUSH: usize = 20;
/// Share of payloads carrying a nested credential (redaction has something to find).
const SECRET_RATIO: f64 = 0.1;

/// `--bench` is passed by `cargo bench`; `cargo test --all-targets` runs the binary without
/// it, and then every bench does a smoke-sized run.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A number from the environment, or the default for this kind of run.
pub fn env_or(name: &str, full: u64, smoke: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(if full_run() { full } else { smoke })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `uptime`'s load averages, printed next to every figure (the machine is shared).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// ClickHouse

/// The embedded server, when one was started: a static is never dropped, so it lives until
/// the process exits; then the launcher sees its stdin close and stops.
static LOCAL: OnceLock<LocalClickHouse> = OnceLock::new();

/// The process id of the embedded ClickHouse, when this process started one (`None` with
/// `CLICKHOUSE_URL`: a server elsewhere, whose CPU is not ours to read).
pub fn clickhouse_pid() -> Option<u32> {
    LOCAL.get().map(LocalClickHouse::pid)
}

/// The embedded ClickHouse's CPU over a window (none with `CLICKHOUSE_URL`: a server
/// elsewhere, whose CPU is not ours to read).
pub struct ClickHouseCpu {
    pid: u32,
    start: Duration,
    threads: std::collections::HashMap<u32, (String, Duration)>,
}

impl ClickHouseCpu {
    /// Starts the window now.
    pub fn start() -> Option<Self> {
        let pid = clickhouse_pid()?;
        Some(ClickHouseCpu { pid, start: tree_cpu_time(pid)?, threads: tree_thread_cpu(pid) })
    }

    /// Ends the window once ClickHouse is idle again (under 5 % of a core over 500 ms, at
    /// most 20 s), so the background merges a round's inserts caused are counted in that
    /// round and not in the next. Returns the CPU per push, in µs, and the CPU by thread name.
    pub fn per_push(self, pushes: u64) -> (f64, std::collections::BTreeMap<String, Duration>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut last = tree_cpu_time(self.pid).unwrap_or(self.start);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            let now = tree_cpu_time(self.pid).unwrap_or(last);
            let busy = now.saturating_sub(last);
            last = now;
            if busy < Duration::from_millis(25) {
                break;
            }
        }
        let us = last.saturating_sub(self.start).as_secs_f64() * 1e6 / pushes.max(1) as f64;
        (us, thread_cpu_delta(&self.threads, &tree_thread_cpu(self.pid)))
    }
}

/// `CLICKHOUSE_URL`, or the embedded ClickHouse. Panics loudly when there is none.
pub fn clickhouse_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CLICKHOUSE_URL")
            && !url.trim().is_empty()
        {
            return url.trim().to_owned();
        }
        let server = start_local(0, None);
        let url = server.url().to_owned();
        LOCAL.set(server).expect("started once");
        url
    })
    .clone()
}

/// Starts an embedded ClickHouse (in `data_dir`, kept, or an ephemeral temporary one).
pub fn start_local(port: u16, data_dir: Option<std::path::PathBuf>) -> LocalClickHouse {
    let (dir, ephemeral) = match data_dir {
        Some(d) => (d, false),
        None => {
            let d = tempfile::Builder::new().prefix("tether-pro-bench-clickhouse-").tempdir().expect("a temporary directory").keep();
            (d, true)
        }
    };
    LocalClickHouse::start(LocalClickHouseOptions { data_dir: dir.clone(), port, ephemeral, startup_timeout: Duration::from_secs(300), ..Default::default() })
        .unwrap_or_else(|err| {
            if ephemeral {
                let _ = std::fs::remove_dir_all(&dir);
            }
            panic!(
                "\n\nNO CLICKHOUSE FOR THE BENCHMARK: the embedded local ClickHouse did not start: {err:#}\n\
                 Set CLICKHOUSE_URL to a running server, or see `scripts/clickhouse-local --help`.\n"
            )
        })
}

/// A client for the server as a whole (`CLICKHOUSE_USER` / `CLICKHOUSE_PASSWORD` if set).
pub fn server_client(url: &str) -> clickhouse::Client {
    // The product's own client settings (`clickhouse.compression = auto`: none on loopback),
    // with `BENCH_COMPRESSION=lz4|none` to measure the other choice.
    let mut cfg = tether_pro::config::ClickHouseConfig::default();
    if let Ok(user) = std::env::var("CLICKHOUSE_USER") {
        cfg.user = user;
    }
    if let Ok(password) = std::env::var("CLICKHOUSE_PASSWORD") {
        cfg.password = password;
    }
    match std::env::var("BENCH_COMPRESSION").as_deref() {
        Ok("lz4") => cfg.compression = tether_pro::config::Compression::Lz4,
        Ok("none") => cfg.compression = tether_pro::config::Compression::None,
        _ => {}
    }
    tether_pro::store::server_client(url, &cfg)
}

/// Creates and migrates a fresh database `bench_<label>_<ulid>`; returns its name.
pub async fn create_database(url: &str, label: &str) -> String {
    let database = format!("bench_{label}_{}", ulid::Ulid::new().to_string().to_lowercase());
    server_client(url)
        .query(&format!("CREATE DATABASE {database}"))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {database} on {url} failed: {e}"));
    tether_pro::store::migrate::migrate(&server_client(url), &database, &RetentionConfig::default())
        .await
        .unwrap_or_else(|e| panic!("migrating {database} on {url} failed: {e:#}"));
    database
}

pub async fn count(url: &str, database: &str, table: &str) -> u64 {
    server_client(url)
        .with_database(database)
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("counting {database}.{table}: {e}"))
}

pub async fn drop_database(url: &str, database: &str) {
    if let Err(e) = server_client(url).query(&format!("DROP DATABASE IF EXISTS {database}")).execute().await {
        eprintln!("bench: could not drop {database}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Workload: what a task-list app pushes, from the simulator's own payload generator

struct Entity {
    id: String,
    payload: Object,
    version: u64,
}

/// One device's pushes against a fresh server: 50 mutations each, fresh mutation ids,
/// creates of new tasks and (from the second push on) edits of tasks earlier pushes created.
/// Every mutation is valid and newer than the record, so all 50 are applied, and replaying
/// the same sequence against another fresh server gives the same answers.
pub struct Workload {
    rng: ChaCha8Rng,
    client_id: String,
    pool: VecDeque<Entity>,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload { rng: ChaCha8Rng::seed_from_u64(seed), client_id: ulid::Ulid::new().to_string(), pool: VecDeque::new() }
    }

    pub fn next_body(&mut self) -> Vec<u8> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut updates = self.pool.len().min(UPDATES_PER_PUSH);
        let mut touched = Vec::with_capacity(BATCH);
        let mut mutations = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            // Updates spread through the batch: two of every five positions.
            let update = updates > 0 && (i % 5 == 1 || i % 5 == 3 || BATCH - i <= updates);
            let (entity, operation) = if update {
                updates -= 1;
                let mut e = self.pool.pop_front().expect("counted");
                e.payload = plan::edit(&mut self.rng, "Task", &e.payload);
                e.version += 1;
                (e, "update")
            } else {
                let secret = self.rng.random_bool(SECRET_RATIO);
                (Entity { id: ulid::Ulid::new().to_string(), payload: plan::payload(&mut self.rng, "Task", secret), version: 1 }, "create")
            };
            mutations.push(json!({
                "mutation_id": ulid::Ulid::new().to_string(),
                "entity_id": entity.id,
                "model": "Task",
                "operation": operation,
                "payload": entity.payload,
                "version": entity.version,
                "timestamp": now,
            }));
            touched.push(entity);
        }
        // Only records of earlier pushes are edited, and never twice in one push.
        self.pool.extend(touched);
        while self.pool.len() > 1_000 {
            self.pool.pop_front();
        }
        serde_json::to_vec(&json!({"client_id": self.client_id, "mutations": mutations})).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Capture records of pushes, as the capture layers hand them to the pipeline

/// One push body through the reference server; every mutation must be applied.
pub fn apply_push(server: &SyncServer, body: &[u8]) -> (PushRequest, PushResult) {
    let req: PushRequest = serde_json::from_slice(body).unwrap();
    let result = server.push_blocking(&req).unwrap();
    assert_eq!(result.response.applied.len(), BATCH, "{:?}", result.response);
    (req, result)
}

/// The record the capture layers build for one push (body bytes, the server's answer,
/// before/after states as JSON text), the push processed by `server`.
pub fn push_record(server: &SyncServer, body: &Bytes) -> CaptureRecord {
    let (req, result) = apply_push(server, body);
    let states = result
        .effects
        .into_iter()
        .map(|e| MutationState { mutation_id: req.mutations[e.index].mutation_id.clone(), before: e.before.map(StateValue::Json), after: e.after.map(StateValue::Json) })
        .collect();
    let body_of = |b: Bytes| {
        let len = b.len();
        CapturedBody { chunks: vec![b], retained: len, total: len as u64, complete: true, ..CapturedBody::default() }
    };
    CaptureRecord {
        request_id: ulid::Ulid::new().to_string(),
        kind: RequestKind::Push,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        http_status: 200,
        client_version: "ios/3.2.1".into(),
        request_body: body_of(body.clone()),
        response_body: body_of(Bytes::from(serde_json::to_vec(&result.response).unwrap())),
        states,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        parent: None,
        path: PUSH_PATH.into(),
        replay_of: String::new(),
        error: None,
        client_gone: false,
    }
}

// ---------------------------------------------------------------------------------------
// /proc readings of a child process

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) of each live thread of a process, by thread id, with the
/// thread's name (`comm`, 15 bytes at most: `tether-pro-pipe`, `tokio-rt-worker`, ...).
pub fn thread_cpu(pid: u32) -> std::collections::HashMap<u32, (String, Duration)> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in dir.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        if let Some(cpu) = stat_cpu(&stat[close + 2..]) {
            out.insert(tid, (name, cpu));
        }
    }
    out
}

/// CPU per thread name over a window, from two [`thread_cpu`] readings (threads that ended
/// inside the window are missing; threads started in it count from zero).
pub fn thread_cpu_delta(
    before: &std::collections::HashMap<u32, (String, Duration)>,
    after: &std::collections::HashMap<u32, (String, Duration)>,
) -> std::collections::BTreeMap<String, Duration> {
    let mut by_name = std::collections::BTreeMap::new();
    for (tid, (name, cpu)) in after {
        let start = before.get(tid).map_or(Duration::ZERO, |(_, c)| *c);
        *by_name.entry(name.clone()).or_insert(Duration::ZERO) += cpu.saturating_sub(start);
    }
    by_name
}

/// Utime + stime of a `/proc/.../stat` line, from the field after the command name.
fn stat_cpu(rest: &str) -> Option<Duration> {
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// A process and all its descendants (the launcher runs ClickHouse in a child Python
/// process).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut k = 0;
    while k < pids.len() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", pids[k])) else {
            k += 1;
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
        k += 1;
    }
    pids
}

/// CPU time of a process and all its descendants.
pub fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let mut tree = process_tree(pid).into_iter();
    let own = cpu_time(tree.next()?)?;
    Some(own + tree.filter_map(cpu_time).sum::<Duration>())
}

/// [`thread_cpu`] of a process and all its descendants.
pub fn tree_thread_cpu(pid: u32) -> std::collections::HashMap<u32, (String, Duration)> {
    process_tree(pid).into_iter().flat_map(thread_cpu).collect()
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3).
    stat_cpu(&stat[stat.rfind(')')? + 2..])
}
