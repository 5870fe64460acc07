//! Pipeline throughput (issue 8, benchmark 2): mutation rows per second from the capture
//! queue into ClickHouse through the real pipeline (`tether_pro::pipeline::start`: rows,
//! redaction, diffs, batching, the writer with its deduplication tokens), against ClickHouse's
//! own insert of the same rows in the same batches (the `clickhouse` crate, RowBinary over
//! HTTP, rows built once outside the clock), rounds interleaved, in one run.
//!
//! The same N pushes (the simulator's payloads, 50 mutations each) are used for both: the
//! pipeline side sends them through the reference server behind the capture layers (in
//! process, not timed) into a queue the pipeline leaves alone until the last record arrives
//! (it wakes when the queue passes half full: capacity 2(N-1)); the clock then runs until
//! every row is written. The native side processes the same bodies with a fresh reference
//! server to get identical answers and states, builds the rows with `pipeline::rows::build`,
//! and cuts them into batches with the pipeline's own rule. Each round writes into fresh
//! databases (ClickHouse would otherwise deduplicate the repeated native blocks).
//!
//! N stays below what the pipeline's write buffer holds (4 batches of 10 000 rows = 788 such
//! pushes): with more queued at once, the pipeline (as of this commit) drops the excess at
//! its write buffer even with ClickHouse idle (see BENCHMARKS.md), and this bench panics.
//!
//! `cargo bench --bench pipeline_native` (`PIPELINE_BENCH_PUSHES`, `PIPELINE_BENCH_ROUNDS`);
//! under `cargo test --all-targets`, a smoke run that checks only that both sides wrote the
//! same rows. ClickHouse: `CLICKHOUSE_URL`, else the embedded one.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, ClickHouseWriter, MutationRow, RequestRow};
use tether_pro::protocol::{CLIENT_VERSION_HEADER, PUSH_PATH};
use tether_pro::sync::{self, SyncServer};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

use support::{BATCH, env_or, median};

/// Devices the pushes come from (interleaved, as a server sees them).
const DEVICES: usize = 4;

type NativeBatch = (Vec<RequestRow>, Vec<MutationRow>);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pushes = env_or("PIPELINE_BENCH_PUSHES", 700, 20) as usize;
    let rounds = env_or("PIPELINE_BENCH_ROUNDS", 5, 1) as usize;
    let ch_url = support::clickhouse_url();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    let bodies = push_bodies(pushes);
    let cfg = CaptureConfig::default();
    let batches = native_batches(&bodies, &cfg);
    let rows = (pushes * BATCH) as u64;
    println!(
        "pipeline vs native insert: {pushes} pushes = {rows} mutation rows + {pushes} request rows per round, {} batches \
         (batch_rows {}, batch_bytes {}), {rounds} interleaved rounds",
        batches.len(),
        cfg.batch_rows,
        cfg.batch_bytes
    );

    let (mut piped, mut native) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let p_db = rt.block_on(support::create_database(&ch_url, "pipe"));
        let p = pipeline_round(&ch_url, &p_db, &bodies);
        let n_db = rt.block_on(support::create_database(&ch_url, "native"));
        let n = rt.block_on(native_round(&ch_url, &n_db, &batches));
        println!(
            "round {round}: pipeline {:>9.0} rows/s ({:>6.0} ms)   native {:>9.0} rows/s ({:>6.0} ms)   ratio {:.3}   load {}",
            rows as f64 / p.as_secs_f64(),
            p.as_secs_f64() * 1000.0,
            rows as f64 / n.as_secs_f64(),
            n.as_secs_f64() * 1000.0,
            n.as_secs_f64() / p.as_secs_f64(),
            support::load_average()
        );
        rt.block_on(check_same_rows(&ch_url, &p_db, &n_db, rows));
        rt.block_on(support::drop_database(&ch_url, &p_db));
        rt.block_on(support::drop_database(&ch_url, &n_db));
        piped.push(p.as_secs_f64());
        native.push(n.as_secs_f64());
    }
    let ratios: Vec<f64> = piped.iter().zip(&native).map(|(p, n)| n / p).collect();
    let (p, n) = (median(piped), median(native));
    let ratio = n / p;
    println!();
    println!("pipeline throughput, median over rounds (load {}):", support::load_average());
    println!("  pipeline (queue -> rows -> ClickHouse) {:>9.0} mutation rows/s", rows as f64 / p);
    println!("  native insert of the same rows         {:>9.0} mutation rows/s", rows as f64 / n);
    println!(
        "  pipeline/native = {ratio:.3} (per-round median {:.3})   target >= 0.5: {}",
        median(ratios),
        if ratio >= 0.5 { "met" } else { "MISSED" }
    );
}

fn push_bodies(pushes: usize) -> Vec<Bytes> {
    let mut devices: Vec<support::Workload> = (0..DEVICES).map(|d| support::Workload::new(700 + d as u64)).collect();
    (0..pushes).map(|i| Bytes::from(devices[i % DEVICES].next_body())).collect()
}

// ---------------------------------------------------------------------------------------
// Pipeline side

/// Captures every push (not timed), then times the pipeline from a full queue to every row
/// written.
fn pipeline_round(url: &str, database: &str, bodies: &[Bytes]) -> Duration {
    let n = bodies.len();
    // pipeline_nice 0 by default here: on a machine shared with other work, the production
    // default (nice 10, the host first) would measure the scheduler, not the pipeline.
    let nice = env_or("PIPELINE_BENCH_NICE", 0, 0) as i32;
    let cfg = CaptureConfig {
        queue_records: 2 * (n - 1),
        batch_interval_ms: 3_600_000,
        process_interval_ms: 3_600_000,
        pipeline_nice: nice,
        ..CaptureConfig::default()
    };
    let writer = ClickHouseWriter::new(support::server_client(url).with_database(database));
    let (capture, mut guard) = pipeline::start(&cfg, writer).expect("the pipeline starts");
    let stats = capture.stats().clone();
    capture_pushes(&capture, bodies);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.totals().enqueued < n as u64 {
        assert!(Instant::now() < deadline, "records not enqueued: {:?}", stats.totals());
        std::thread::sleep(Duration::from_micros(50));
    }
    let start = Instant::now();
    let want = (n as u64, (n * BATCH) as u64);
    loop {
        let t = stats.totals();
        if (t.requests_written, t.mutations_written) >= want {
            break;
        }
        assert!(t.dropped == 0 && t.buffer_dropped == 0 && t.records_failed == 0, "records lost: {t:?}");
        assert!(start.elapsed() < Duration::from_secs(300), "pipeline did not finish in 300 s: {t:?}");
        // Sleeping, not spinning: the pipeline and ClickHouse need the cores.
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    guard.shutdown();
    elapsed
}

/// The pushes through the reference server behind the capture layers, in process (tower
/// `oneshot`), on a thread whose default subscriber has the capture layer.
fn capture_pushes(capture: &pipeline::Capture, bodies: &[Bytes]) {
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.layer()));
    let app = sync::router(SyncServer::in_memory()).layer(capture.http_layer());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for body in bodies {
            let req = http::Request::builder()
                .method("POST")
                .uri(PUSH_PATH)
                .header("content-type", "application/json")
                .header(CLIENT_VERSION_HEADER, "ios/3.2.1")
                .body(axum::body::Body::from(body.clone()))
                .unwrap();
            let resp = app.clone().oneshot(req).await.expect("infallible");
            assert_eq!(resp.status(), 200);
            // The record is queued when the response body has been read to its end.
            axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("the answer");
        }
    });
}

// ---------------------------------------------------------------------------------------
// Native side

/// The rows the pipeline writes for these pushes, in the pipeline's batches: records as the
/// capture layers build them (body bytes, the server's answer, before/after states as JSON
/// text), then `rows::build` and the pipeline's batch cut (rows or bytes).
fn native_batches(bodies: &[Bytes], cfg: &CaptureConfig) -> Vec<NativeBatch> {
    let server = SyncServer::in_memory();
    let settings = cfg.row_settings();
    let mut batches = Vec::new();
    let (mut batch, mut row_bytes): (NativeBatch, usize) = Default::default();
    for body in bodies {
        let rows = tether_pro::internals::rows::build(&support::push_record(&server, body), &settings);
        // The same accounting as the pipeline's `process_loop`.
        row_bytes += rows.request.request_body.len() + rows.request.response_body.len() + 512;
        row_bytes += rows.mutations.iter().map(|m| m.payload.len() + m.state_before.len() + m.state_after.len() + m.diff.len() + 256).sum::<usize>();
        batch.0.push(rows.request);
        batch.1.extend(rows.mutations);
        if batch.0.len() + batch.1.len() >= cfg.batch_rows || row_bytes >= cfg.batch_bytes {
            batches.push(std::mem::take(&mut batch));
            row_bytes = 0;
        }
    }
    if !batch.0.is_empty() {
        batches.push(batch);
    }
    batches
}

/// ClickHouse's own insert: per batch, mutations then requests (the writer's order), RowBinary
/// over HTTP with the same client settings, no retries, no tokens.
async fn native_round(url: &str, database: &str, batches: &[NativeBatch]) -> Duration {
    let client = support::server_client(url).with_database(database);
    let start = Instant::now();
    for (requests, mutations) in batches {
        insert(&client, "sync_mutations", mutations).await;
        insert(&client, "sync_requests", requests).await;
    }
    start.elapsed()
}

async fn insert<T: clickhouse::RowOwned + clickhouse::RowWrite>(client: &clickhouse::Client, table: &str, rows: &[T]) {
    let mut insert = client.insert::<T>(table).await.unwrap_or_else(|e| panic!("insert into {table}: {e}"));
    for row in rows {
        insert.write(row).await.unwrap_or_else(|e| panic!("insert into {table}: {e}"));
    }
    insert.end().await.unwrap_or_else(|e| panic!("insert into {table}: {e}"));
}

/// Both sides wrote the same rows: counts, and the bytes of every JSON column.
async fn check_same_rows(url: &str, pipeline_db: &str, native_db: &str, rows: u64) {
    let sql = "SELECT count(), sum(length(payload) + length(state_before) + length(state_after) + length(diff) + length(reason_data)) \
               FROM sync_mutations";
    let shape = |db: String| async move {
        support::server_client(url).with_database(db).query(sql).fetch_one::<(u64, u64)>().await.expect("the shape of the rows")
    };
    let (p, n) = (shape(pipeline_db.to_owned()).await, shape(native_db.to_owned()).await);
    assert_eq!(p.0, rows, "pipeline rows in ClickHouse");
    assert_eq!(p, n, "pipeline and native wrote different rows (count, JSON bytes)");
}
