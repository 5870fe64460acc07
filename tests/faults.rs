//! Faults under load (issue 8): ClickHouse killed mid-load and restarted, ClickHouse slow,
//! ClickHouse answering `Code: 117`, a plain 503, the OTLP endpoint down with ClickHouse
//! down, and the dashboard service restarted mid-load.
//!
//! Everything is real: the reference sync server behind `CaptureLayer` + `SyncLayer` on
//! loopback HTTP, the real pipeline thread, real ClickHouse servers (a test that kills one
//! starts its own on a fixed port), a fault-injecting proxy (`common/fault_proxy.rs`) in front
//! of ClickHouse where a fault cannot be produced by ClickHouse itself, and the real
//! `tether-pro serve` binary for the dashboard. No timing is asserted, only counts and bytes.
//!
//! The load: a few concurrent devices (seeded), each pushing realistic batches built with the
//! simulator's payload generator (creates, edits, deletes, stale edits that conflict,
//! invalid payloads, unknown records, duplicates, whole pushes sent twice) to the captured
//! server and then the same bytes to an uninstrumented reference server; the two answers
//! must be byte-identical. Each device works on records of its own, so its answers do not
//! depend on how the devices interleave. Every request carries a unique
//! `x-tether-client-version` (`load/<seed>/<device>/<n>`), stored in `sync_requests.client_version`,
//! which identifies its row in ClickHouse.

mod common;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestClickHouse, clickhouse};
use fault_proxy::{FaultProxy, Mode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tether_pro::capture::CaptureTotals;
use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, Capture, CaptureGuard, ClickHouseWriter};
use tether_pro::sim::plan;
use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};
use tether_pro::sync::{self, SyncServer};
use tether_pro::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

// ---------------------------------------------------------------------------------------
// The host: the reference server with capture, and a plain one beside it

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Host {
    captured: String,
    plain: String,
    capture: Capture,
    guard: Option<CaptureGuard>,
    _subscriber: tracing::subscriber::DefaultGuard,
}

/// Starts the pipeline, installs the capture layer (and the telemetry layer, when enabled) as
/// this thread's subscriber, and serves both servers. Call from a current-thread runtime.
async fn host(cfg: &CaptureConfig, writer: ClickHouseWriter, telemetry: Telemetry) -> Host {
    let (capture, guard) = pipeline::start_with_telemetry(cfg, writer, telemetry.clone()).unwrap();
    let subscriber = tracing_subscriber::registry().with(capture.layer()).with(telemetry.layer());
    let _subscriber = tracing::subscriber::set_default(subscriber);
    let captured = serve(sync::router(SyncServer::in_memory()).layer(capture.http_layer())).await;
    let plain = serve(sync::router(SyncServer::in_memory())).await;
    Host { captured, plain, capture, guard: Some(guard), _subscriber }
}

impl Host {
    fn totals(&self) -> CaptureTotals {
        self.capture.stats().totals()
    }

    /// The guard's shutdown: flushes what is buffered (bounded by `flush_timeout_ms`).
    fn flush(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.shutdown();
        }
    }
}

fn writer(url: &str, database: &str) -> ClickHouseWriter {
    // A short schema grace: the drift test's refusals are real drift, not a migration.
    ClickHouseWriter::new(clickhouse::Client::default().with_url(url).with_database(database))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_schema_grace(Duration::from_millis(300))
}

// ---------------------------------------------------------------------------------------
// The load

/// One device: its own records, a logical clock, a seeded stream.
struct Device {
    seed: u64,
    index: usize,
    client_id: String,
    rng: ChaCha8Rng,
    /// (entity id, model, payload, timestamp of its last write)
    own: Vec<(String, &'static str, serde_json::Map<String, Value>, i64)>,
    past: Vec<Value>,
    last_push: Option<Value>,
    clock: i64,
    seq: u64,
}

const MODELS: &[&str] = &["Task", "Task", "Note", "Project"];

impl Device {
    fn new(seed: u64, index: usize) -> Device {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
        let client_id = fixed_ulid(&mut rng);
        Device { seed, index, client_id, rng, own: Vec::new(), past: Vec::new(), last_push: None, clock: 1_700_000_000_000, seq: 0 }
    }

    fn tag(&mut self) -> String {
        self.seq += 1;
        format!("load/{}/{}/{}", self.seed, self.index, self.seq)
    }

    /// The next push body.
    fn next_push(&mut self) -> Value {
        if let Some(last) = &self.last_push
            && self.rng.random_bool(0.05)
        {
            // The answer was "lost": the same push again (every mutation a duplicate).
            return last.clone();
        }
        let n = self.rng.random_range(1..=6);
        let mutations: Vec<Value> = (0..n).map(|_| self.next_mutation()).collect();
        let body = json!({"client_id": self.client_id, "mutations": mutations});
        self.last_push = Some(body.clone());
        body
    }

    fn next_mutation(&mut self) -> Value {
        self.clock += self.rng.random_range(1..1_000);
        let ts = self.clock;
        let id = fixed_ulid(&mut self.rng);
        let m = |entity: &str, model: &str, op: &str, payload: Value, ts: i64| {
            json!({"mutation_id": id, "entity_id": entity, "model": model, "operation": op, "payload": payload, "version": 1, "timestamp": ts})
        };
        let roll: f64 = self.rng.random();
        let has_own = !self.own.is_empty();
        let v = if roll < 0.05 {
            let unknown = fixed_ulid(&mut self.rng);
            m(&unknown, "Task", "update", Value::Object(plan::payload(&mut self.rng, "Task", false)), ts)
        } else if roll < 0.10 {
            let e = fixed_ulid(&mut self.rng);
            m(&e, "Task", "create", Value::Object(plan::invalid_task_payload(&mut self.rng)), ts)
        } else if roll < 0.15 && !self.past.is_empty() {
            let i = self.rng.random_range(0..self.past.len());
            return self.past[i].clone(); // a duplicate
        } else if roll < 0.25 && has_own {
            // An edit older than the record: a conflict.
            let i = self.rng.random_range(0..self.own.len());
            let (e, model, payload, last) = self.own[i].clone();
            let edited = plan::edit(&mut self.rng, model, &payload);
            m(&e, model, "update", Value::Object(edited), last - 500)
        } else if roll < 0.30 && has_own {
            let i = self.rng.random_range(0..self.own.len());
            let (e, model, _, _) = self.own.swap_remove(i);
            m(&e, model, "delete", json!({}), ts)
        } else if roll < 0.60 && has_own {
            let i = self.rng.random_range(0..self.own.len());
            let (e, model, payload, _) = self.own[i].clone();
            let edited = plan::edit(&mut self.rng, model, &payload);
            self.own[i].2 = edited.clone();
            self.own[i].3 = ts;
            m(&e, model, "update", Value::Object(edited), ts)
        } else {
            let model = MODELS[self.rng.random_range(0..MODELS.len())];
            let secret = self.rng.random_bool(0.05);
            let payload = plan::payload(&mut self.rng, model, secret);
            let e = fixed_ulid(&mut self.rng);
            self.own.push((e.clone(), model, payload.clone(), ts));
            m(&e, model, "create", Value::Object(payload), ts)
        };
        self.past.push(v.clone());
        v
    }
}

/// A ULID with a fixed time part: the same bytes on every run of a seed.
fn fixed_ulid(rng: &mut ChaCha8Rng) -> String {
    ulid::Ulid::from_parts(1_700_000_000_000, rng.random::<u128>()).to_string()
}

/// What the load sent and saw.
#[derive(Default)]
struct Load {
    /// Tag -> mutations in that request (0 for pulls).
    sent: Mutex<BTreeMap<String, u64>>,
    /// Transport failures and non-2xx answers from the captured server.
    host_errors: AtomicU64,
    /// Answers of the captured server that differ from the plain server's.
    changed: AtomicU64,
    first_difference: Mutex<Option<String>>,
    pushes: AtomicU64,
    pulls: AtomicU64,
}

impl Load {
    fn sent(&self) -> BTreeMap<String, u64> {
        self.sent.lock().unwrap().clone()
    }
    fn differs(&self, what: String) {
        self.changed.fetch_add(1, Ordering::Relaxed);
        self.first_difference.lock().unwrap().get_or_insert(what);
    }
    fn check_host(&self) {
        assert_eq!(self.host_errors.load(Ordering::Relaxed), 0, "the host answered with errors");
        assert_eq!(
            self.changed.load(Ordering::Relaxed),
            0,
            "capture changed the host's answers; first: {:?}",
            self.first_difference.lock().unwrap()
        );
    }
}

type Answer = (u16, Option<String>, Vec<u8>);

async fn send(http: &reqwest::Client, base: &str, path: &str, tag: &str, body: &[u8]) -> Result<Answer, String> {
    let resp = http
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("x-tether-client-version", tag)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, ct, bytes.to_vec()))
}

/// Runs `devices` concurrent devices against the host until `stop` (or `max_per_device`
/// requests each), pausing `pause` between requests. Every push goes to the captured server,
/// then to the plain one; every fifth request is a pull of the device's changes.
fn start_load(host: &Host, devices: usize, seed: u64, pause: Duration, max_per_device: u64, stop: CancellationToken) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let tasks = (0..devices)
        .map(|i| {
            let (load, http, stop) = (load.clone(), http.clone(), stop.clone());
            let (captured, plain) = (host.captured.clone(), host.plain.clone());
            tokio::spawn(async move {
                let mut d = Device::new(seed, i);
                let mut cursor: Option<i64> = None;
                for n in 0..max_per_device {
                    if stop.is_cancelled() {
                        break;
                    }
                    let tag = d.tag();
                    if n % 5 == 4 {
                        // Pull: the page depends on every device's writes and on the order
                        // they reached each server, so only status and content type must match.
                        let body = json!({"client_id": d.client_id, "last_sync_cursor": cursor, "limit": 50}).to_string().into_bytes();
                        load.sent.lock().unwrap().insert(tag.clone(), 0);
                        load.pulls.fetch_add(1, Ordering::Relaxed);
                        match send(&http, &captured, "/tether/pull", &tag, &body).await {
                            Ok(a) if a.0 == 200 => {
                                let page: Value = serde_json::from_slice(&a.2).unwrap();
                                cursor = page["new_sync_cursor"].as_i64().or(cursor);
                                let b = send(&http, &plain, "/tether/pull", &tag, &body).await.expect("the plain server answers");
                                if (a.0, &a.1) != (b.0, &b.1) {
                                    load.differs(format!("{tag}: pull {:?} vs {:?}", (a.0, &a.1), (b.0, &b.1)));
                                }
                            }
                            other => {
                                load.host_errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("{tag}: pull failed: {other:?}");
                            }
                        }
                    } else {
                        let push = d.next_push();
                        let muts = push["mutations"].as_array().unwrap().len() as u64;
                        let body = push.to_string().into_bytes();
                        load.sent.lock().unwrap().insert(tag.clone(), muts);
                        load.pushes.fetch_add(1, Ordering::Relaxed);
                        match send(&http, &captured, "/tether/push", &tag, &body).await {
                            Ok(a) if a.0 == 200 => {
                                let b = send(&http, &plain, "/tether/push", &tag, &body).await.expect("the plain server answers");
                                if a != b {
                                    load.differs(format!(
                                        "{tag}: {:?} {} vs {:?} {}",
                                        (a.0, &a.1),
                                        String::from_utf8_lossy(&a.2),
                                        (b.0, &b.1),
                                        String::from_utf8_lossy(&b.2)
                                    ));
                                }
                            }
                            other => {
                                load.host_errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("{tag}: push failed: {other:?}");
                            }
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect();
    (load, tasks)
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.expect("a load task panicked");
    }
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit` (a guard against
/// hanging, not a timing assertion: `limit` is far beyond what the step needs).
async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// What arrived in ClickHouse

/// Request rows by tag (`client_version`), with how many rows each tag has.
async fn rows_by_tag(ch: &TestClickHouse) -> BTreeMap<String, u64> {
    ch.rows("SELECT client_version AS tag, count() AS n FROM sync_requests GROUP BY tag")
        .await
        .into_iter()
        .map(|r| (r["tag"].as_str().unwrap().to_owned(), r["n"].as_u64().or_else(|| r["n"].as_str()?.parse().ok()).unwrap()))
        .collect()
}

/// Asserts that no request and no mutation row is there twice, and that every request row
/// is one of `sent`. Returns the tags present.
async fn assert_unique_and_known(ch: &TestClickHouse, sent: &BTreeMap<String, u64>) -> BTreeSet<String> {
    let by_tag = rows_by_tag(ch).await;
    let doubled: Vec<_> = by_tag.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "request rows written more than once: {doubled:?}");
    let unknown: Vec<_> = by_tag.keys().filter(|t| !sent.contains_key(*t)).collect();
    assert!(unknown.is_empty(), "rows for requests never sent: {unknown:?}");
    let doubled_m = ch.count("SELECT count() FROM (SELECT request_id, position FROM sync_mutations GROUP BY request_id, position HAVING count() > 1)").await;
    assert_eq!(doubled_m, 0, "mutation rows written more than once");
    let orphans = ch.count("SELECT count() FROM sync_requests WHERE request_id = ''").await;
    assert_eq!(orphans, 0);
    by_tag.into_keys().collect()
}

/// Mutation rows whose request row is there: equal to the mutations those requests carried.
async fn assert_mutations_of(ch: &TestClickHouse, sent: &BTreeMap<String, u64>, tags: &BTreeSet<String>) -> u64 {
    let expected: u64 = tags.iter().map(|t| sent[t]).sum();
    let got = ch
        .count("SELECT count() FROM sync_mutations WHERE request_id IN (SELECT request_id FROM sync_requests)")
        .await;
    assert_eq!(got, expected, "mutation rows of the written requests");
    expected
}

// ---------------------------------------------------------------------------------------
// A ClickHouse of the test's own, on a fixed port, that can be killed

struct OwnClickHouse {
    port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
    server: Option<LocalClickHouse>,
}

impl OwnClickHouse {
    /// A port reserved for it (nothing listens there until `start`).
    fn new() -> OwnClickHouse {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::Builder::new().prefix("tether-pro-faults-").tempdir().unwrap();
        OwnClickHouse { port, data: dir.path().join("clickhouse"), _dir: dir, server: None }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server on the same port and data directory.
    async fn start(&mut self) {
        let opts = LocalClickHouseOptions { data_dir: self.data.clone(), port: self.port, ephemeral: false, startup_timeout: Duration::from_secs(300), ..Default::default() };
        let server = tokio::task::spawn_blocking(move || LocalClickHouse::start(opts)).await.unwrap();
        self.server = Some(server.unwrap_or_else(|e| panic!("the test's own ClickHouse did not start: {e:#}")));
    }

    /// SIGKILLs the ClickHouse process (the launcher's worker that hosts the engine): no
    /// shutdown, in-flight inserts cut off. The launcher then exits on its own.
    async fn kill(&mut self) {
        let pid = worker_pid(&self.data).expect("the ClickHouse worker process of this test's server");
        // SAFETY: a plain kill(2) of a process this test started (through the launcher).
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}");
        let data = self.data.clone();
        wait_until("the killed ClickHouse to be gone", Duration::from_secs(30), || worker_pid(&data).is_none()).await;
        let server = self.server.take();
        // Dropping the handle reaps the launcher (it exits when its worker dies).
        tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
    }

    async fn stop(&mut self) {
        let server = self.server.take();
        tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
    }
}

/// The pid of the launcher worker serving `data_dir` (its command line holds the path).
fn worker_pid(data_dir: &Path) -> Option<i32> {
    let want = data_dir.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_worker = args.iter().any(|a| a.ends_with(b"worker.py"));
        if is_worker && args.contains(&want.as_bytes()) {
            // A zombie has an empty cmdline, so this is a live process.
            return Some(pid);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// 1. ClickHouse killed mid-load and restarted

const DEVICES: usize = 6;
const PAUSE: Duration = Duration::from_millis(40);

async fn kill_mid_load(cfg: CaptureConfig, seed: u64) -> (BTreeMap<String, u64>, CaptureTotals, BTreeSet<String>, TestClickHouse, OwnClickHouse) {
    let mut own = OwnClickHouse::new();
    own.start().await;
    let database = format!("test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let ch = TestClickHouse { url: own.url(), database: database.clone() };
    ch.migrate().await;
    let mut h = host(&cfg, writer(&own.url(), &database), Telemetry::disabled()).await;

    let stop = CancellationToken::new();
    let (load, tasks) = start_load(&h, DEVICES, seed, PAUSE, u64::MAX, stop.clone());
    let started = Instant::now();
    // Some rows land before the kill.
    wait_until("rows written before the kill", Duration::from_secs(60), || h.totals().requests_written > 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = h.totals();
    own.kill().await;
    let killed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = h.totals();
    own.start().await;
    let restarted_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    join(tasks).await;
    h.flush();
    let t = h.totals();
    let sent = load.sent();
    eprintln!(
        "kill mid-load ({cfg:?}): killed at {killed_at:?}, restarted at {restarted_at:?}; sent {} requests ({} pushes, {} pulls, {} mutations); \
         before kill {before_kill:?}; 3 s into the outage {during:?}; at the end {t:?}",
        sent.len(),
        load.pushes.load(Ordering::Relaxed),
        load.pulls.load(Ordering::Relaxed),
        sent.values().sum::<u64>(),
    );
    load.check_host();
    assert!(during.insert_failures > before_kill.insert_failures, "inserts failed while ClickHouse was dead: {during:?}");
    let tags = assert_unique_and_known(&ch, &sent).await;
    // The load exercised every outcome, not just applies.
    let outcomes: BTreeSet<String> = ch
        .rows("SELECT DISTINCT concat(outcome, '/', reason) AS o FROM sync_mutations")
        .await
        .into_iter()
        .map(|r| r["o"].as_str().unwrap().to_owned())
        .collect();
    for o in ["applied/", "conflict/conflict", "duplicate/duplicate", "rejected/validation_failed", "rejected/not_found"] {
        assert!(outcomes.contains(o), "no {o} among the captured mutations: {outcomes:?}");
    }
    // Restart mid-batch (issue 13's matrix): every record accounted for, and the batches
    // retried across the restart counted once in the raw rows, the aggregates and the API.
    let (written, spooled, dropped) = t.accounted();
    assert_eq!((t.captured(), written + spooled + dropped), (sent.len() as u64, sent.len() as u64), "{t:?}");
    assert_numbers_agree(&ch, "restart mid-batch", written).await;
    (sent, t, tags, ch, own)
}

#[tokio::test(flavor = "current_thread")]
async fn clickhouse_killed_mid_load_and_restarted_loses_nothing_within_the_caps() {
    // Caps far above what the outage needs.
    let cfg = CaptureConfig {
        batch_interval_ms: 200,
        queue_records: 100_000,
        flush_timeout_ms: 60_000,
        ..CaptureConfig::default()
    };
    let (sent, t, tags, ch, mut own) = kill_mid_load(cfg, 11).await;
    assert_eq!(t.enqueued, sent.len() as u64, "every request was queued: {t:?}");
    assert_eq!((t.dropped, t.buffer_dropped, t.records_failed), (0, 0, 0), "nothing dropped within the caps: {t:?}");
    assert_eq!(t.requests_written, sent.len() as u64);
    let missing: Vec<_> = sent.keys().filter(|k| !tags.contains(*k)).collect();
    assert!(missing.is_empty(), "{} requests never arrived, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    let muts = assert_mutations_of(&ch, &sent, &tags).await;
    assert_eq!(t.mutations_written, muts);
    own.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn clickhouse_killed_mid_load_with_small_caps_counts_every_drop_exactly() {
    // Caps the outage overflows: a queue of 20 records (and ~1 MB), batches of 30 rows.
    let cfg = CaptureConfig {
        batch_interval_ms: 100,
        queue_records: 20,
        queue_bytes: 1 << 20,
        batch_rows: 30,
        flush_timeout_ms: 60_000,
        ..CaptureConfig::default()
    };
    let (sent, t, tags, ch, mut own) = kill_mid_load(cfg, 12).await;
    let sent_n = sent.len() as u64;
    assert!(t.dropped + t.buffer_dropped > 0, "the outage overflowed the caps: {t:?}");
    assert_eq!(t.enqueued + t.dropped, sent_n, "every request was queued or counted as dropped: {t:?}");
    assert_eq!(t.records_failed, 0, "nothing left unwritten at the flush: {t:?}");
    assert_eq!(
        t.requests_written + t.dropped + t.buffer_dropped + t.records_failed,
        sent_n,
        "sent = written + dropped + buffer_dropped + failed: {t:?}"
    );
    assert_eq!(tags.len() as u64, t.requests_written, "the rows in ClickHouse are exactly the requests counted as written");
    let muts = assert_mutations_of(&ch, &sent, &tags).await;
    assert_eq!(t.mutations_written, muts);
    own.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. ClickHouse slow, answering Code: 117, answering a bare 503 (through the proxy)

struct Proxied {
    ch: TestClickHouse,
    proxy: FaultProxy,
    h: Host,
    /// The OpenTelemetry metrics the host exported (in memory, read by [`exported`]).
    metrics: Exported,
    /// The dead-letter directory of this host.
    dead_letter: tempfile::TempDir,
}

/// A host writing through a fault proxy, exporting its metrics in memory, with a dead-letter
/// directory of its own.
async fn proxied(cfg: CaptureConfig) -> Proxied {
    let ch = clickhouse().await;
    ch.migrate().await;
    proxied_to(ch, cfg).await
}

async fn proxied_to(ch: TestClickHouse, mut cfg: CaptureConfig) -> Proxied {
    let proxy = FaultProxy::start(&ch.url);
    let dead_letter = tempfile::tempdir().unwrap();
    cfg.dead_letter.dir = dead_letter.path().to_path_buf();
    let metrics = Exported::new();
    let telemetry = Telemetry::from_providers(None, Some(&metrics.provider));
    let h = host(&cfg, writer(&proxy.url, &ch.database), telemetry).await;
    Proxied { ch, proxy, h, metrics, dead_letter }
}

/// An in-memory OpenTelemetry metrics pipeline.
struct Exported {
    exporter: opentelemetry_sdk::metrics::InMemoryMetricExporter,
    provider: opentelemetry_sdk::metrics::SdkMeterProvider,
}

impl Exported {
    fn new() -> Exported {
        let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
        let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone()).build();
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().with_reader(reader).build();
        Exported { exporter, provider }
    }

    /// The latest exported value of the cumulative counter `name` whose attribute `key` is
    /// `value` (0 when never exported).
    fn counter(&self, name: &str, key: &str, value: &str) -> u64 {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        self.provider.force_flush().expect("metrics flushed");
        let mut latest = 0;
        for rm in self.exporter.get_finished_metrics().unwrap() {
            for m in rm.scope_metrics().flat_map(|s| s.metrics()).filter(|m| m.name() == name) {
                let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else { continue };
                for p in sum.data_points() {
                    if p.attributes().any(|kv| kv.key.as_str() == key && kv.value.as_str() == value) {
                        latest = p.value();
                    }
                }
            }
        }
        latest
    }
}

/// Sends `n` requests per device from `devices` devices (seeded) and waits for the answers.
async fn burst(h: &Host, devices: usize, seed: u64, n: u64) -> Arc<Load> {
    let (load, tasks) = start_load(h, devices, seed, Duration::from_millis(20), n, CancellationToken::new());
    join(tasks).await;
    load.check_host();
    load
}

/// Tokens seen per table, with how many attempts each.
fn attempts(seen: &[fault_proxy::Seen]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for s in seen {
        if let (Some(table), Some(token)) = (&s.insert_into, &s.token) {
            *m.entry((table.clone(), token.clone())).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "current_thread")]
async fn slow_clickhouse_seconds_per_insert_loses_nothing_and_batches_coalesce() {
    let cfg = CaptureConfig { batch_interval_ms: 100, flush_timeout_ms: 120_000, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;
    let delay = Duration::from_secs(2);
    p.proxy.set_mode(Mode::Delay(delay));
    // About 6 s of traffic while every request to ClickHouse takes 2 s.
    let stop = CancellationToken::new();
    let (load, tasks) = start_load(&p.h, 4, 21, Duration::from_millis(40), u64::MAX, stop.clone());
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.cancel();
    join(tasks).await;
    load.check_host();
    p.h.flush();
    let t = p.h.totals();
    let sent = load.sent();
    let seen = p.proxy.inserts_in(Mode::Delay(delay));
    let per_token = attempts(&seen);
    eprintln!("slow ClickHouse: sent {} requests, {} inserts seen by the proxy, totals {t:?}", sent.len(), seen.len());
    assert_eq!((t.dropped, t.buffer_dropped, t.records_failed, t.insert_failures), (0, 0, 0, 0), "slow is not down: {t:?}");
    assert_eq!(t.requests_written, sent.len() as u64);
    assert!(per_token.values().all(|n| *n == 1), "no insert was retried: {per_token:?}");
    // Coalescing: far fewer batches than requests (each batch costs 2-3 round trips of 2 s).
    assert!(t.inserts * 5 <= t.requests_written, "batches coalesced while inserts were slow: {t:?}");
    let tags = assert_unique_and_known(&p.ch, &sent).await;
    assert_eq!(tags.len(), sent.len(), "every request arrived");
    assert_mutations_of(&p.ch, &sent, &tags).await;
}

#[tokio::test(flavor = "current_thread")]
async fn code_117_is_not_retried_is_counted_and_later_batches_are_written() {
    // A burst spans a few ticks: the stuck first batch never has to share the write buffer
    // with more batches than it holds.
    let cfg = CaptureConfig { batch_interval_ms: 500, flush_timeout_ms: 30_000, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;

    // A: written normally.
    let a = burst(&p.h, 3, 31, 10).await;
    let a_n = a.sent().len() as u64;
    wait_until("batch A written", Duration::from_secs(60), || p.h.totals().requests_written == a_n).await;

    // B: every insert answered with Code: 117.
    p.proxy.set_mode(Mode::BadData);
    let b = burst(&p.h, 3, 32, 10).await;
    let b_n = b.sent().len() as u64;
    wait_until("batch B given up", Duration::from_secs(60), || p.h.totals().records_failed == b_n).await;
    let after_b = p.h.totals();

    // C: ClickHouse healthy again.
    p.proxy.set_mode(Mode::Pass);
    let c = burst(&p.h, 3, 33, 10).await;
    let c_n = c.sent().len() as u64;
    p.h.flush();
    let t = p.h.totals();
    let bad = p.proxy.inserts_in(Mode::BadData);
    let per_token = attempts(&bad);
    eprintln!("Code 117: sent A={a_n} B={b_n} C={c_n}; inserts answered 117: {}; totals after B {after_b:?}, at the end {t:?}", bad.len());
    assert!(!bad.is_empty());
    assert!(per_token.values().all(|n| *n == 1), "a batch refused with Code 117 was retried: {per_token:?}");
    // A batch's mutation rows go first; when they are refused, its request rows are never tried.
    let all_tokens: BTreeSet<String> = p.proxy.seen().into_iter().filter_map(|s| s.token).collect();
    for s in &bad {
        let token = s.token.as_deref().unwrap();
        if let Some(batch) = token.strip_suffix("-m") {
            assert!(!all_tokens.contains(&format!("{batch}-r")), "request rows tried after the batch was refused: {bad:?}");
        }
    }
    assert_eq!(after_b.insert_failures, bad.len() as u64, "one failure counted per refused attempt");
    assert_eq!(t.records_failed, b_n, "exactly the refused batch's records are counted as failed");
    assert_eq!(t.requests_written, a_n + c_n);
    assert_eq!((t.dropped, t.buffer_dropped), (0, 0));

    let mut written = a.sent();
    written.extend(c.sent());
    let tags = assert_unique_and_known(&p.ch, &written).await;
    assert_eq!(tags, written.keys().cloned().collect::<BTreeSet<_>>(), "A and C arrived, B did not");
    assert_mutations_of(&p.ch, &written, &tags).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_bare_503_is_retried_and_lands_once() {
    // A burst spans a few ticks: the stuck first batch never has to share the write buffer
    // with more batches than it holds.
    let cfg = CaptureConfig { batch_interval_ms: 500, flush_timeout_ms: 30_000, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;
    p.proxy.set_mode(Mode::Unavailable);
    let load = burst(&p.h, 3, 41, 10).await;
    let n = load.sent().len() as u64;
    wait_until("several refused attempts", Duration::from_secs(60), || p.proxy.inserts_in(Mode::Unavailable).len() >= 3).await;
    p.proxy.set_mode(Mode::Pass);
    p.h.flush();
    let t = p.h.totals();
    let refused = p.proxy.inserts_in(Mode::Unavailable);
    let passed = p.proxy.inserts_in(Mode::Pass);
    eprintln!("503: sent {n}; attempts refused {}, passed {}; totals {t:?}", refused.len(), passed.len());
    let refused_tokens: BTreeSet<_> = refused.iter().map(|s| s.token.clone().unwrap()).collect();
    let passed_tokens: BTreeSet<_> = passed.iter().map(|s| s.token.clone().unwrap()).collect();
    assert!(refused.len() > refused_tokens.len() || !refused_tokens.is_disjoint(&passed_tokens), "a 503 was retried");
    assert!(refused_tokens.is_subset(&passed_tokens), "every refused batch was retried until it passed");
    assert_eq!(t.insert_failures, refused.len() as u64);
    assert_eq!((t.dropped, t.buffer_dropped, t.records_failed), (0, 0, 0), "{t:?}");
    assert_eq!(t.requests_written, n);
    let sent = load.sent();
    let tags = assert_unique_and_known(&p.ch, &sent).await;
    assert_eq!(tags.len() as u64, n, "every request landed once");
    assert_mutations_of(&p.ch, &sent, &tags).await;
}

// ---------------------------------------------------------------------------------------
// 3. The OTLP endpoint down while ClickHouse is down

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "current_thread")]
async fn otlp_endpoint_down_while_clickhouse_is_down_changes_nothing_and_rows_arrive_later() {
    // The host's telemetry as in production (`telemetry::init` from OTEL_* variables), pointed
    // at a collector that is not there. This is the only test of this binary that touches the
    // OTEL_* environment or calls `init`.
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    for (k, v) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
    ] {
        // SAFETY: no other test of this binary reads or writes OTEL_* variables.
        unsafe { std::env::set_var(k, v) };
    }
    let (telemetry, mut telemetry_guard) = tether_pro::telemetry::init("tether-pro-faults").expect("telemetry::init");
    assert!(telemetry.traces_enabled() && telemetry.metrics_enabled());

    // ClickHouse down from the start: a port reserved for it, nothing listening yet.
    let mut own = OwnClickHouse::new();
    let database = format!("test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let ch = TestClickHouse { url: own.url(), database: database.clone() };
    // Ticks of 2 s: the outage is about what OTLP does, not how long the write buffer lasts.
    let cfg = CaptureConfig { batch_interval_ms: 2_000, queue_records: 100_000, flush_timeout_ms: 60_000, ..CaptureConfig::default() };
    let mut h = host(&cfg, writer(&own.url(), &database), telemetry.clone()).await;

    let stop = CancellationToken::new();
    let (load, tasks) = start_load(&h, 4, 51, PAUSE, u64::MAX, stop.clone());
    wait_until("inserts failing while ClickHouse is down", Duration::from_secs(60), || h.totals().insert_failures >= 2).await;
    let down = h.totals();
    own.start().await;
    ch.migrate().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    join(tasks).await;
    h.flush();
    let errors = telemetry_guard.shutdown();
    let t = h.totals();
    let s = telemetry.stats();
    let (span_failed, metric_failed) = (s.span_export_failures.load(Ordering::Relaxed), s.metric_export_failures.load(Ordering::Relaxed));
    let sent = load.sent();
    eprintln!(
        "OTLP + ClickHouse down: sent {}; while both down {down:?}; at the end {t:?}; span export failures {span_failed}, metric export failures {metric_failed}; guard errors {errors:?}",
        sent.len()
    );
    load.check_host();
    assert!(down.insert_failures > 0 && down.requests_written == 0, "ClickHouse was down: {down:?}");
    assert!(span_failed > 0 && metric_failed > 0, "the collector was down and the exporters noticed");
    assert_eq!(s.span_batches_exported.load(Ordering::Relaxed), 0);
    assert_eq!((t.dropped, t.buffer_dropped, t.records_failed), (0, 0, 0), "{t:?}");
    assert_eq!(t.requests_written, sent.len() as u64);
    let tags = assert_unique_and_known(&ch, &sent).await;
    assert_eq!(tags.len(), sent.len(), "every request arrived once ClickHouse was back");
    assert_mutations_of(&ch, &sent, &tags).await;
    drop(h);
    own.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. The dashboard service restarted mid-load

/// `tether-pro serve` as a process of its own, against the test's database.
struct Dashboard {
    child: std::process::Child,
}

impl Dashboard {
    fn start(ch: &TestClickHouse, port: u16) -> Dashboard {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tether-pro"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CLICKHOUSE_URL", &ch.url)
            .env("TETHER_PRO_CLICKHOUSE__DATABASE", &ch.database)
            .stdout(std::process::Stdio::null())
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("tether-pro serve starts");
        Dashboard { child }
    }

    /// SIGTERM: the graceful stop a service manager does.
    fn terminate(mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "tether-pro serve stopped cleanly on SIGTERM: {status}");
    }

    /// SIGKILL: a crash.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// What the poller saw of the dashboard.
#[derive(Default)]
struct Polls {
    ok: AtomicU64,
    /// No answer (connection refused or closed).
    refused: AtomicU64,
    /// Answers other than 200 (never expected: a restart refuses connections, it does not
    /// answer errors).
    bad: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "current_thread")]
async fn dashboard_restarted_mid_load_answers_again_and_counts_every_request() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let cfg = CaptureConfig { batch_interval_ms: 200, ..CaptureConfig::default() };
    let mut h = host(&cfg, ClickHouseWriter::new(ch.client()), Telemetry::disabled()).await;
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}/tether/dashboard");

    // The simulated devices, as the demo runs them.
    let mut sim = tether_pro::sim::SimConfig::new(h.captured.clone());
    sim.clients = 8;
    sim.rate = 40.0;
    sim.seed = 61;
    let sim_stats = Arc::new(tether_pro::sim::SimStats::default());
    let stop = CancellationToken::new();
    let sim_task = tokio::spawn(tether_pro::sim::run(sim, sim_stats.clone(), stop.clone()));

    // A poller: the metrics API and two pages, over and over.
    let polls = Arc::new(Polls::default());
    let poll_stop = CancellationToken::new();
    let poller = {
        let (polls, base, poll_stop) = (polls.clone(), base.clone(), poll_stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
            let paths = ["/metrics?window=1h", "", "/requests"];
            let mut i = 0;
            while !poll_stop.is_cancelled() {
                let url = format!("{base}{}", paths[i % paths.len()]);
                i += 1;
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        r.bytes().await.ok();
                        polls.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => polls.bad.lock().unwrap().push(format!("{url}: {}", r.status())),
                    // Refused, or a kept-alive connection closed by the stop: the service is
                    // away, which a restart is. An answer other than 200 would be a failure.
                    Err(_) => {
                        polls.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut ok_marks = Vec::new();
    let mut dash = Dashboard::start(&ch, port);
    for restart in 0..3 {
        let ok_before = polls.ok.load(Ordering::Relaxed);
        wait_until("the dashboard to answer", Duration::from_secs(120), || polls.ok.load(Ordering::Relaxed) >= ok_before + 5).await;
        ok_marks.push(polls.ok.load(Ordering::Relaxed));
        if restart == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Once gracefully, once a crash; then the same port again.
        let d = dash;
        tokio::task::spawn_blocking(move || if restart == 0 { d.terminate() } else { d.kill() }).await.unwrap();
        let refused_before = polls.refused.load(Ordering::Relaxed);
        wait_until("the poller to see the dashboard gone", Duration::from_secs(60), || polls.refused.load(Ordering::Relaxed) > refused_before).await;
        dash = Dashboard::start(&ch, port);
    }
    stop.cancel();
    let sim_totals = sim_task.await.unwrap().expect("the simulation ran");
    h.flush();
    let t = h.totals();

    // The dashboard's totals include every request written.
    let http = reqwest::Client::new();
    let metrics: Value = http.get(format!("{base}/metrics?window=1h")).send().await.unwrap().json().await.unwrap();
    poll_stop.cancel();
    poller.await.unwrap();
    tokio::task::spawn_blocking(move || dash.terminate()).await.unwrap();
    eprintln!(
        "dashboard restarts: sim {sim_totals:?}; capture {t:?}; polls ok {} (marks {ok_marks:?}), refused {}; dashboard totals {}",
        polls.ok.load(Ordering::Relaxed),
        polls.refused.load(Ordering::Relaxed),
        metrics["totals"]
    );
    assert_eq!(sim_totals.errors, 0, "the sync clients saw errors");
    assert!(polls.bad.lock().unwrap().is_empty(), "the dashboard answered errors: {:?}", polls.bad.lock().unwrap());
    assert_eq!(ok_marks.len(), 3, "the dashboard answered at first and after each restart");
    // What the pipeline could not write is its own business (tests above); every request is
    // accounted for, and the dashboard shows exactly what was written.
    assert_eq!(t.enqueued + t.dropped, sim_totals.pushes + sim_totals.pulls, "every request was captured or counted");
    assert_eq!(t.requests_written + t.buffer_dropped + t.records_failed, t.enqueued, "{t:?}");
    assert!(t.requests_written > 0);
    assert_eq!(ch.count("SELECT count() FROM sync_requests").await, t.requests_written);
    assert_eq!(metrics["totals"]["requests"], json!(t.requests_written), "the dashboard counts every request written");
    assert_eq!(metrics["totals"]["pushes"], json!(sim_totals.pushes));
    assert_eq!(metrics["totals"]["pulls"], json!(sim_totals.pulls));
    assert_eq!(metrics["totals"]["mutations"], json!(t.mutations_written));
}

#[tokio::test(flavor = "current_thread")]
async fn an_insert_whose_answer_is_lost_is_retried_and_deduplicated() {
    // A burst spans a few ticks: the stuck first batch never has to share the write buffer
    // with more batches than it holds.
    let cfg = CaptureConfig { batch_interval_ms: 500, flush_timeout_ms: 30_000, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;
    p.proxy.set_mode(Mode::LoseAnswer);
    let load = burst(&p.h, 3, 71, 10).await;
    let n = load.sent().len() as u64;
    wait_until("inserts landed with their answers lost", Duration::from_secs(60), || p.proxy.inserts_in(Mode::LoseAnswer).len() >= 3).await;
    p.proxy.set_mode(Mode::Pass);
    p.h.flush();
    let t = p.h.totals();
    let lost = p.proxy.inserts_in(Mode::LoseAnswer);
    let passed = p.proxy.inserts_in(Mode::Pass);
    eprintln!("lost answers: sent {n}; inserts landed with the answer lost {}, answered normally {}; totals {t:?}", lost.len(), passed.len());
    assert!(lost.iter().all(|s| s.status == 502), "every insert of the lost-answer phase reached ClickHouse: {lost:?}");
    let lost_tokens: BTreeSet<_> = lost.iter().map(|s| s.token.clone().unwrap()).collect();
    let passed_tokens: BTreeSet<_> = passed.iter().map(|s| s.token.clone().unwrap()).collect();
    assert!(!lost_tokens.is_disjoint(&passed_tokens), "a batch that landed was sent again with the same token");
    assert_eq!(t.insert_failures, lost.len() as u64);
    assert_eq!((t.dropped, t.buffer_dropped, t.records_failed), (0, 0, 0), "{t:?}");
    assert_eq!(t.requests_written, n);
    let sent = load.sent();
    // Rows of a batch that landed twice would be here twice: the token deduplicated them.
    let tags = assert_unique_and_known(&p.ch, &sent).await;
    assert_eq!(tags.len() as u64, n);
    assert_mutations_of(&p.ch, &sent, &tags).await;
}

// ---------------------------------------------------------------------------------------
// 4b. The fault matrix (issue 13): every fault ends with every record accounted for
//     (captured = written + spooled + dropped by reason, in the counters, the exported
//     metrics and ClickHouse) and every number agreeing (raw rows = aggregates = metrics API).

/// Checks the identities once the host has flushed; `captured` is what the load sent.
/// Returns `(written, spooled, dropped)`.
async fn assert_accounted(p: &Proxied, what: &str, captured: u64) -> (u64, u64, u64) {
    let t = p.h.totals();
    let (written, spooled, dropped) = t.accounted();
    eprintln!(
        "{what}: captured {captured} = written {written} + spooled {spooled} + dropped {dropped} {:?}",
        t.dropped_by_reason().iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
    );
    assert_eq!(t.captured(), captured, "{what}: every request sent was captured: {t:?}");
    assert_eq!(written + spooled + dropped, captured, "{what}: a record is unaccounted for: {t:?}");
    // The exported metrics say the same.
    let m = &p.metrics;
    assert_eq!(m.counter("tether.capture.rows.written", "table", "sync_requests"), written, "{what}: exported rows written");
    for (reason, n) in t.dropped_by_reason() {
        assert_eq!(m.counter("tether.capture.records.dropped", "reason", reason), n, "{what}: exported drops, reason {reason}");
    }
    assert_numbers_agree(&p.ch, what, written).await;
    (written, spooled, dropped)
}

/// ClickHouse holds exactly `written` request rows, once each, and the aggregates and the
/// metrics API say the same as the raw rows.
async fn assert_numbers_agree(ch: &TestClickHouse, what: &str, written: u64) {
    assert_eq!(ch.count("SELECT count() FROM sync_requests").await, written, "{what}: request rows");
    assert_eq!(ch.count("SELECT uniqExact(request_id) FROM sync_requests").await, written, "{what}: request rows doubled");
    let raw_mutations = ch.count("SELECT count() FROM sync_mutations").await;
    assert_eq!(ch.count("SELECT sum(mutation_count) FROM sync_requests").await, raw_mutations, "{what}: mutation rows of the requests");
    // Aggregates = raw rows (a retried insert must not count twice).
    assert_eq!(ch.count("SELECT sum(requests) FROM sync_requests_5m").await, written, "{what}: sync_requests_5m.requests");
    assert_eq!(ch.count("SELECT sum(mutations) FROM sync_requests_5m").await, raw_mutations, "{what}: sync_requests_5m.mutations");
    assert_eq!(ch.count("SELECT sum(mutations) FROM sync_mutations_5m").await, raw_mutations, "{what}: sync_mutations_5m.mutations");
    // The metrics API (24 h window) = raw rows.
    let state = tether_pro::dashboard::DashboardState::new(ch.client());
    let q = tether_pro::internals::metrics::MetricsQuery { window: Some("24h".into()), ..Default::default() };
    let api = tether_pro::internals::metrics::compute(&state, q.window(chrono::Utc::now()).unwrap()).await.unwrap();
    assert_eq!(api.totals.requests, written, "{what}: metrics API requests");
    assert_eq!(api.totals.mutations, raw_mutations, "{what}: metrics API mutations");
    assert_eq!(api.top_models.iter().map(|e| e.mutations).sum::<u64>(), raw_mutations, "{what}: metrics API top models");
    eprintln!("{what}: raw rows {written} requests / {raw_mutations} mutations = aggregates = metrics API");
}

/// Traffic while ClickHouse is faulty, then healthy again; every insert attempt is bounded by
/// `insert_timeout_ms`, so a hung or trickling attempt is retried with its token, like a
/// refused one or one whose answer was lost.
async fn fault_then_recover(mode: Mode, seed: u64) {
    let cfg = CaptureConfig { batch_interval_ms: 500, flush_timeout_ms: 30_000, insert_timeout_ms: 400, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;
    p.proxy.set_mode(mode);
    let load = burst(&p.h, 3, seed, 8).await;
    let n = load.sent().len() as u64;
    wait_until("a few attempts failed", Duration::from_secs(60), || p.h.totals().insert_failures >= 3).await;
    p.proxy.set_mode(Mode::Pass);
    p.h.flush();
    let faulty = p.proxy.inserts_in(mode);
    let passed: BTreeSet<_> = p.proxy.inserts_in(Mode::Pass).into_iter().filter_map(|s| s.token).collect();
    let faulty_tokens: BTreeSet<_> = faulty.iter().filter_map(|s| s.token.clone()).collect();
    assert!(!faulty.is_empty());
    assert!(faulty_tokens.is_subset(&passed), "every failed attempt was retried with its own token");
    let (written, spooled, dropped) = assert_accounted(&p, &format!("{mode:?}"), n).await;
    assert_eq!((written, spooled, dropped), (n, 0, 0), "nothing lost to a ClickHouse that came back");
    let sent = load.sent();
    let tags = assert_unique_and_known(&p.ch, &sent).await;
    assert_mutations_of(&p.ch, &sent, &tags).await;
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_never_answering_clickhouse_times_out_and_retries_with_the_same_token() {
    fault_then_recover(Mode::Hang, 101).await;
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_trickling_clickhouse_times_out_and_the_retry_does_not_double_anything() {
    // Inserts land, their answers never finish: the retries must be deduplicated in the raw
    // tables and in the aggregates.
    fault_then_recover(Mode::Trickle(Duration::from_millis(100)), 102).await;
}

/// A ClickHouse that never answers when the host stops: the insert timeout is a minute, so
/// the shutdown deadline must cut the hung attempt short. Returns the host after the flush.
async fn hang_at_shutdown(spool: Option<&Path>, seed: u64) -> (Proxied, u64) {
    let mut cfg = CaptureConfig { batch_interval_ms: 100, flush_timeout_ms: 1_000, insert_timeout_ms: 60_000, ..CaptureConfig::default() };
    if let Some(dir) = spool {
        cfg.spool = tether_pro::config::SpoolConfig { enabled: true, dir: dir.to_path_buf(), ..Default::default() };
    }
    let mut p = proxied(cfg).await;
    p.proxy.set_mode(Mode::Hang);
    let load = burst(&p.h, 2, seed, 5).await;
    let n = load.sent().len() as u64;
    wait_until("an insert hanging", Duration::from_secs(30), || !p.proxy.inserts_in(Mode::Hang).is_empty()).await;
    p.h.flush();
    (p, n)
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_never_answering_at_shutdown_counts_the_exact_loss_without_a_spool() {
    let (p, n) = hang_at_shutdown(None, 103).await;
    let t = p.h.totals();
    assert_eq!(t.shutdown_dropped, n, "every unwritten record counted under reason=shutdown: {t:?}");
    assert_accounted(&p, "hang at shutdown, no spool", n).await;
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_never_answering_at_shutdown_spools_everything() {
    let spool = tempfile::tempdir().unwrap();
    let (p, n) = hang_at_shutdown(Some(spool.path()), 104).await;
    let (_, spooled, _) = assert_accounted(&p, "hang at shutdown, with spool", n).await;
    assert_eq!(spooled, n, "a graceful stop keeps everything on disk");
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_refusing_clickhouse_is_retried_until_it_answers() {
    fault_then_recover(Mode::Unavailable, 105).await;
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_lost_replies_are_retried_and_counted_once_everywhere() {
    // Inserts land, their answers are lost: the retries must count once everywhere.
    fault_then_recover(Mode::LoseAnswer, 106).await;
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_bad_data_is_dead_lettered_and_counted_as_bad_data() {
    let cfg = CaptureConfig { batch_interval_ms: 500, flush_timeout_ms: 30_000, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;
    p.proxy.set_mode(Mode::BadData);
    let load = burst(&p.h, 2, 107, 5).await;
    let n = load.sent().len() as u64;
    wait_until("the batches refused", Duration::from_secs(60), || p.h.totals().bad_data == n).await;
    p.h.flush();
    let (written, _, dropped) = assert_accounted(&p, "bad data (Code 117)", n).await;
    assert_eq!((written, dropped), (0, n));
    assert_dead_lettered(&p, n, &load.sent());
}

/// The dead-letter directory holds exactly the refused records, redacted, with the error.
fn assert_dead_lettered(p: &Proxied, n: u64, sent: &BTreeMap<String, u64>) {
    let kept = tether_pro::internals::dead_letter::read_all(p.dead_letter.path()).unwrap();
    assert_eq!(kept.iter().map(|d| d.batch.records).sum::<u64>(), n, "every refused record kept");
    assert_eq!(p.h.totals().dead_lettered, n);
    let tags: BTreeSet<_> = kept.iter().flat_map(|d| d.batch.requests.iter().map(|r| r.client_version.clone())).collect();
    assert_eq!(tags, sent.keys().cloned().collect::<BTreeSet<_>>(), "the kept rows are the refused requests");
    let mutations: u64 = kept.iter().map(|d| d.batch.mutations.len() as u64).sum();
    assert_eq!(mutations, sent.values().sum::<u64>(), "with their mutation rows");
    assert!(kept.iter().all(|d| !d.error.is_empty()), "the error is kept with each batch");
    let text: String = std::fs::read_dir(p.dead_letter.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    // The load marks a few payloads secret (plan::payload): only their redacted form is on disk.
    assert!(!text.contains("sk_live_"), "a secret reached the dead-letter directory");
}

#[tokio::test(flavor = "current_thread")]
async fn matrix_schema_drift_is_reported_dead_lettered_and_counted() {
    // Issue 13, input 2: a column the pipeline writes is dropped while the host runs.
    let cfg = CaptureConfig { batch_interval_ms: 200, flush_timeout_ms: 30_000, ..CaptureConfig::default() };
    let mut p = proxied(cfg).await;
    let a = burst(&p.h, 2, 108, 3).await;
    let a_n = a.sent().len() as u64;
    wait_until("batch A written", Duration::from_secs(60), || p.h.totals().requests_written == a_n).await;
    p.ch.rows("ALTER TABLE sync_mutations DROP COLUMN reason_data").await;
    let b = burst(&p.h, 2, 109, 5).await;
    let b_n = b.sent().len() as u64;
    // A batch of pulls only has no mutation rows and is written; every other is refused.
    let settled = || {
        let t = p.h.totals();
        t.bad_data + t.requests_written == a_n + b_n
    };
    wait_until("batch B refused", Duration::from_secs(60), settled).await;
    p.h.flush();
    let (written, _, dropped) = assert_accounted(&p, "schema drift", a_n + b_n).await;
    assert!(dropped > 0 && dropped == p.h.totals().bad_data, "B's request rows refused with their batch, and counted");
    assert_eq!(written + dropped, a_n + b_n);
    let in_clickhouse = rows_by_tag(&p.ch).await;
    let refused: BTreeMap<String, u64> = b.sent().into_iter().filter(|(tag, _)| !in_clickhouse.contains_key(tag)).collect();
    assert_dead_lettered(&p, dropped, &refused);
    // The startup check names the drift.
    let server = clickhouse::Client::default().with_url(&p.ch.url);
    let report = tether_pro::store::migrate::migrate(&server, &p.ch.database, &Default::default()).await.unwrap();
    assert_eq!(report.drift, vec!["sync_mutations.reason_data is missing (expected String)".to_owned()]);
}

// ---------------------------------------------------------------------------------------
// 5. The soak: `scripts/soak [SECONDS] [KILL_EVERY]`

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number of seconds"))).unwrap_or(default)
}

/// The reference server under load for `TETHER_PRO_SOAK_SECS` (default 600) while its own
/// ClickHouse is SIGKILLed every `TETHER_PRO_SOAK_KILL_EVERY` seconds (default 30) and
/// restarted after `TETHER_PRO_SOAK_OUTAGE` seconds (default 3); prints the exact accounting
/// and asserts it, like the kill test above but for as long as you like.
#[tokio::test(flavor = "current_thread")]
#[ignore = "long: run it with scripts/soak"]
async fn soak_clickhouse_killed_every_n_seconds() {
    let total = Duration::from_secs(env_secs("TETHER_PRO_SOAK_SECS", 600));
    let every = Duration::from_secs(env_secs("TETHER_PRO_SOAK_KILL_EVERY", 30).max(1));
    let outage = Duration::from_secs(env_secs("TETHER_PRO_SOAK_OUTAGE", 3));
    let devices = env_secs("TETHER_PRO_SOAK_DEVICES", DEVICES as u64) as usize;
    let mut own = OwnClickHouse::new();
    own.start().await;
    let database = format!("soak_{}", ulid::Ulid::new().to_string().to_lowercase());
    let ch = TestClickHouse { url: own.url(), database: database.clone() };
    ch.migrate().await;
    let cfg = CaptureConfig { flush_timeout_ms: 120_000, ..CaptureConfig::default() };
    let mut h = host(&cfg, writer(&own.url(), &database), Telemetry::disabled()).await;
    let stop = CancellationToken::new();
    let (load, tasks) = start_load(&h, devices, 81, PAUSE, u64::MAX, stop.clone());
    let started = Instant::now();
    let mut kills = 0;
    eprintln!("soak: {total:?} of load from {devices} devices, ClickHouse killed every {every:?} for {outage:?}");
    while started.elapsed() + every < total {
        tokio::time::sleep(every).await;
        own.kill().await;
        kills += 1;
        tokio::time::sleep(outage).await;
        own.start().await;
        let t = h.totals();
        eprintln!(
            "soak: {:>5.0?} kill #{kills}: sent {}, written {}, dropped {}, buffer_dropped {}, failed {}, insert failures {}",
            started.elapsed(),
            load.sent.lock().unwrap().len(),
            t.requests_written,
            t.dropped,
            t.buffer_dropped,
            t.records_failed,
            t.insert_failures
        );
    }
    tokio::time::sleep(total.saturating_sub(started.elapsed())).await;
    stop.cancel();
    join(tasks).await;
    h.flush();
    let t = h.totals();
    let sent = load.sent();
    let tags = assert_unique_and_known(&ch, &sent).await;
    let rows = ch.count("SELECT count() FROM sync_requests").await;
    let mutation_rows = ch.count("SELECT count() FROM sync_mutations").await;
    println!("soak accounting after {:?} and {kills} ClickHouse kills:", started.elapsed());
    println!("  requests sent          {:>9}  ({} pushes, {} pulls)", sent.len(), load.pushes.load(Ordering::Relaxed), load.pulls.load(Ordering::Relaxed));
    println!("  host errors            {:>9}", load.host_errors.load(Ordering::Relaxed));
    println!("  answers changed        {:>9}", load.changed.load(Ordering::Relaxed));
    println!("  queued                 {:>9}", t.enqueued);
    println!("  dropped (queue full)   {:>9}", t.dropped);
    println!("  dropped (buffer full)  {:>9}", t.buffer_dropped);
    println!("  failed (ClickHouse)    {:>9}", t.records_failed);
    println!("  written                {:>9}", t.requests_written);
    println!("  rows in ClickHouse     {:>9}  (distinct requests {}, duplicates 0)", rows, tags.len());
    println!("  mutation rows          {:>9}  (written {})", mutation_rows, t.mutations_written);
    println!("  insert failures        {:>9}  (inserts {})", t.insert_failures, t.inserts);
    println!(
        "  sent - (written + dropped + buffer_dropped + failed) = {}",
        sent.len() as i64 - (t.requests_written + t.dropped + t.buffer_dropped + t.records_failed) as i64
    );
    load.check_host();
    assert_eq!(t.enqueued + t.dropped, sent.len() as u64);
    assert_eq!(t.requests_written + t.dropped + t.buffer_dropped + t.records_failed, sent.len() as u64, "{t:?}");
    assert_eq!(rows, t.requests_written);
    assert_eq!(tags.len() as u64, t.requests_written);
    assert_eq!(mutation_rows, t.mutations_written);
    assert_mutations_of(&ch, &sent, &tags).await;
    drop(h);
    own.stop().await;
}
