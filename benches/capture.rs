//! What capture costs, measured (never asserted in tests).
//!
//! * `push_50/no_layers` vs `push_50/capture_and_pipeline`: one push of 50 realistic `Task`
//!   mutations (fresh ids, so every one is applied) over loopback HTTP with a keep-alive
//!   `reqwest` client, to the reference server with no layers and no subscriber, and to the
//!   same server behind `CaptureLayer` + `SyncLayer` with the pipeline writing to a real
//!   ClickHouse. Each server runs on its own thread with a current-thread runtime (the
//!   captured one with its subscriber set there with `set_default`), so both are measured
//!   the same way.
//! * `pipeline/records_per_second`: from a queue holding N captured pushes to every
//!   mutation row written to ClickHouse (`iter_custom`; throughput in mutation rows).
//! * `redact_and_diff/push_50`: `pipeline::rows::build` on one representative push record.
//!
//! ClickHouse (the helpers of `benches/support`): `CLICKHOUSE_URL` (with `CLICKHOUSE_USER` /
//! `CLICKHOUSE_PASSWORD` if set; `BENCH_COMPRESSION=lz4|none` overrides the client's
//! compression), or the embedded `LocalClickHouse` in an ephemeral temporary directory. No ClickHouse: the
//! benchmark panics, it never silently measures something else. Each benchmark that needs
//! ClickHouse gets its own database (created, migrated, dropped at the end).
//!
//! Run: `cargo bench --bench capture` (a filter such as `-- push_50` sets up only what it
//! runs).

mod support;

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_pro::capture::CaptureRecord;
use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, Capture, CaptureGuard, ClickHouseWriter, RowSettings};
use tether_pro::protocol::{CLIENT_VERSION_HEADER, PUSH_PATH, PushResponse};
use tether_pro::sync::{self, SyncServer};
use tracing_subscriber::layer::SubscriberExt;

use support::{BATCH, Workload, clickhouse_url, server_client};

/// Captured pushes queued per iteration of `pipeline/records_per_second`.
const PIPELINE_RECORDS: usize = 40;

// ---------------------------------------------------------------------------------------
// ClickHouse

/// A database of one benchmark, created and migrated; dropped by `drop_database`.
struct BenchDb {
    url: String,
    database: String,
}

impl BenchDb {
    fn create(label: &str) -> BenchDb {
        let url = clickhouse_url();
        let database = block_on(support::create_database(&url, label));
        BenchDb { url, database }
    }

    fn writer(&self) -> ClickHouseWriter {
        ClickHouseWriter::new(server_client(&self.url).with_database(&self.database))
    }

    fn count(&self, table: &str) -> u64 {
        block_on(support::count(&self.url, &self.database, table))
    }

    fn drop_database(self) {
        block_on(support::drop_database(&self.url, &self.database));
    }
}

/// Runs a ClickHouse call on a fresh current-thread runtime (a client's connection pool
/// belongs to the runtime it first runs on).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

// ---------------------------------------------------------------------------------------
// Servers

/// The reference server on its own thread and current-thread runtime; with a `Capture`, the
/// capture layers are installed (the subscriber with `set_default` on that thread).
struct ServerThread {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
}

impl ServerThread {
    fn start(name: &str, capture: Option<Capture>) -> ServerThread {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let _subscriber = capture
                    .as_ref()
                    .map(|c| tracing::subscriber::set_default(tracing_subscriber::registry().with(c.layer())));
                // The same server either way; only the layer differs.
                let mut app = sync::router(SyncServer::in_memory());
                if let Some(c) = &capture {
                    app = app.layer(c.http_layer());
                }
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await
                        .unwrap();
                });
                let _ = done_tx.send(());
            })
            .expect("server thread");
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("the server thread binds");
        ServerThread { url: format!("http://{addr}{PUSH_PATH}"), stop: Some(stop_tx), done: done_rx }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open connections; drop clients first.
        if self.done.recv_timeout(Duration::from_secs(10)).is_err() {
            eprintln!("bench: a server thread did not stop within 10 s (left running)");
        }
    }
}

/// A client of one server: keep-alive `reqwest` on its own current-thread runtime.
struct Pusher {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
    workload: Workload,
    /// Pushes sent so far (warm-up included).
    sent: u64,
}

impl Pusher {
    fn new(url: &str, seed: u64) -> Pusher {
        Pusher {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            http: reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(600)).build().unwrap(),
            url: url.to_owned(),
            workload: Workload::new(seed),
            sent: 0,
        }
    }

    /// Sends the pushes in order; returns the time the requests took (bodies are made before
    /// the clock starts, answers are checked after it stops).
    fn push_all(&mut self, bodies: Vec<Vec<u8>>) -> Duration {
        let n = bodies.len();
        let (elapsed, answers) = self.rt.block_on(async {
            let mut answers = Vec::with_capacity(n);
            let start = Instant::now();
            for body in bodies {
                let resp = self
                    .http
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .header(CLIENT_VERSION_HEADER, "ios/3.2.1")
                    .body(body)
                    .send()
                    .await
                    .expect("the server answers");
                let status = resp.status().as_u16();
                answers.push((status, resp.bytes().await.expect("the answer's body")));
            }
            (start.elapsed(), answers)
        });
        for (status, body) in answers {
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let resp: PushResponse = serde_json::from_slice(&body).unwrap();
            assert!(
                resp.applied.len() == BATCH && resp.rejected.is_empty() && resp.conflicts.is_empty(),
                "every mutation must be applied: {resp:?}"
            );
        }
        elapsed
    }

    fn push_n(&mut self, n: u64) -> Duration {
        self.sent += n;
        let bodies = (0..n).map(|_| self.workload.next_body()).collect();
        self.push_all(bodies)
    }
}

/// A running capture pipeline with its database.
struct Captured {
    capture: Capture,
    guard: CaptureGuard,
    db: BenchDb,
}

impl Captured {
    fn start(label: &str, cfg: &CaptureConfig) -> Captured {
        let db = BenchDb::create(label);
        let (capture, guard) = pipeline::start(cfg, db.writer()).expect("the pipeline starts");
        Captured { capture, guard, db }
    }

    /// Flushes, reports what the pipeline did, checks it against ClickHouse, drops the
    /// database.
    fn finish(mut self, what: &str) {
        self.guard.shutdown();
        let t = self.capture.stats().totals();
        let (requests, mutations) = (self.db.count("sync_requests"), self.db.count("sync_mutations"));
        eprintln!(
            "bench {what}: capture enqueued {} dropped {} (queue) {} (write buffer) failed {}; written {} requests / {} mutations in {} inserts \
             (mean insert {:.1} ms); ClickHouse holds {requests} / {mutations}",
            t.enqueued,
            t.dropped,
            t.buffer_dropped,
            t.records_failed,
            t.requests_written,
            t.mutations_written,
            t.inserts,
            t.insert_latency_us_sum as f64 / t.inserts.max(1) as f64 / 1000.0,
        );
        if t.dropped > 0 || t.buffer_dropped > 0 || t.records_failed > 0 {
            eprintln!("bench {what}: WARNING: records were dropped or not written; the numbers above understate capture's cost");
        }
        self.db.drop_database();
    }
}

// ---------------------------------------------------------------------------------------
// Benchmarks

fn push_50(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_50");

    let mut plain: Option<(ServerThread, Pusher)> = None;
    group.bench_function("no_layers", |b| {
        let (_, pusher) = plain.get_or_insert_with(|| {
            let server = ServerThread::start("bench-server-plain", None);
            let pusher = Pusher::new(&server.url, 1);
            (server, pusher)
        });
        b.iter_custom(|iters| pusher.push_n(iters));
    });

    let mut captured: Option<(ServerThread, Pusher, Captured)> = None;
    group.bench_function("capture_and_pipeline", |b| {
        let (_, pusher, _) = captured.get_or_insert_with(|| {
            // Production defaults: batches every second, default queue and redaction.
            let cap = Captured::start("push", &CaptureConfig::default());
            let server = ServerThread::start("bench-server-captured", Some(cap.capture.clone()));
            let pusher = Pusher::new(&server.url, 1);
            (server, pusher, cap)
        });
        b.iter_custom(|iters| pusher.push_n(iters));
    });
    group.finish();

    if let Some((server, pusher)) = plain {
        eprintln!("bench push_50/no_layers: {} pushes sent", pusher.sent);
        drop(pusher);
        server.stop();
    }
    if let Some((server, pusher, cap)) = captured {
        eprintln!("bench push_50/capture_and_pipeline: {} pushes sent", pusher.sent);
        drop(pusher);
        server.stop();
        cap.finish("push_50/capture_and_pipeline");
    }
}

fn pipeline_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    let rows = (PIPELINE_RECORDS * BATCH) as u64;
    group.throughput(Throughput::Elements(rows));

    let mut env: Option<(ServerThread, Pusher, Captured)> = None;
    group.bench_function("records_per_second", |b| {
        let (_, pusher, cap) = env.get_or_insert_with(|| {
            // The pipeline sleeps until the queue passes half full (depth = max/2 + 1), which
            // with this capacity happens exactly when the last record of an iteration is
            // queued; its interval never fires. So records pile up untouched while they are
            // being captured, and the clock measures only queue -> rows -> ClickHouse.
            let cfg = CaptureConfig {
                queue_records: 2 * (PIPELINE_RECORDS - 1),
                batch_interval_ms: 3_600_000,
                process_interval_ms: 3_600_000,
                ..CaptureConfig::default()
            };
            let cap = Captured::start("pipeline", &cfg);
            let server = ServerThread::start("bench-server-pipeline", Some(cap.capture.clone()));
            let pusher = Pusher::new(&server.url, 2);
            (server, pusher, cap)
        });
        b.iter_custom(|iters| {
            let stats = cap.capture.stats().clone();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let before = stats.totals();
                assert_eq!(before.queue_depth, 0, "the queue starts each iteration empty");
                // Capture N pushes (not timed).
                pusher.push_n(PIPELINE_RECORDS as u64);
                // The last span closes as its response body ends, around when the client has it.
                let enqueue_deadline = Instant::now() + Duration::from_secs(10);
                while stats.totals().enqueued < before.enqueued + PIPELINE_RECORDS as u64 {
                    assert!(Instant::now() < enqueue_deadline, "records not enqueued: {:?}", stats.totals());
                    std::hint::spin_loop();
                }
                let start = Instant::now();
                let want = before.mutations_written + rows;
                let deadline = start + Duration::from_secs(120);
                loop {
                    let t = stats.totals();
                    if t.mutations_written >= want {
                        break;
                    }
                    assert!(
                        t.dropped == before.dropped && t.records_failed == before.records_failed,
                        "records lost: {t:?}"
                    );
                    assert!(Instant::now() < deadline, "pipeline did not write {rows} rows in 120 s: {t:?}");
                    // Sleeping, not spinning: the pipeline and ClickHouse need the cores.
                    std::thread::sleep(Duration::from_micros(100));
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();

    if let Some((server, pusher, cap)) = env {
        drop(pusher);
        server.stop();
        cap.finish("pipeline/records_per_second");
    }
}

/// One push record as the capture layers would hand it over: the third push of a device
/// (30 creates, 20 edits of earlier tasks, ~10 % with nested credentials), processed by the
/// reference server for its real answer and before/after states.
fn representative_record() -> CaptureRecord {
    let server = SyncServer::in_memory();
    let mut workload = Workload::new(3);
    for _ in 0..2 {
        support::apply_push(&server, &workload.next_body());
    }
    support::push_record(&server, &workload.next_body().into())
}

fn redact_and_diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("redact_and_diff");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut env: Option<(CaptureRecord, RowSettings)> = None;
    group.bench_function("push_50", |b| {
        let (rec, settings) = env.get_or_insert_with(|| {
            let rec = representative_record();
            let cfg = CaptureConfig::default();
            let settings = cfg.row_settings();
            let rows = tether_pro::internals::rows::build(&rec, &settings);
            assert_eq!(rows.mutations.len(), BATCH);
            assert_eq!(rows.request.applied_count as usize, BATCH);
            assert!(rows.mutations.iter().filter(|m| &*m.operation == "update").all(|m| m.diff != "[]"), "edits have diffs");
            assert!(rows.mutations.iter().any(|m| m.payload.contains("[REDACTED]")), "the record carries secrets to redact");
            eprintln!(
                "bench redact_and_diff/push_50: request body {} bytes, response body {} bytes, {} states",
                rec.request_body.total,
                rec.response_body.total,
                rec.states.len()
            );
            (rec, settings)
        });
        b.iter(|| tether_pro::internals::rows::build(black_box(&*rec), &*settings))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short enough for a 2-core machine.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = push_50, pipeline_throughput, redact_and_diff
}
criterion_main!(benches);
