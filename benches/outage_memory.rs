//! Memory during a ClickHouse outage (issue 8, benchmark 4): the instrumented reference
//! server (variant (b) of `host_overhead`: capture + pipeline + OTLP, in a child process so
//! its RSS is its own) under steady push load while ClickHouse is stopped for 60 s, then
//! started again on the same port with the same data. Samples VmRSS every second and
//! reports baseline, peak, the configured bound (capture.queue_bytes + the pipeline's write
//! buffer, the batch being written and the one being filled: BATCHES_IN_MEMORY x capture.batch_bytes) and what was dropped and what
//! arrived after recovery.
//!
//! The reference server keeps its SQLite in a file here (an in-memory database would grow
//! the RSS by ~0.4 KB per mutation and hide what capture does).
//!
//! ClickHouse: always a dedicated embedded one (it has to be stopped; `CLICKHOUSE_URL` is
//! not used). `cargo bench --bench outage_memory` (`OUTAGE_SECS`, `OUTAGE_RATE` pushes/s,
//! `OUTAGE_QUEUE_MIB`, `OUTAGE_BATCH_MIB`); under `cargo test --all-targets`, a 3-second
//! outage that checks only that the server kept answering and rows arrived afterwards.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::child::{self, ChildServer, Variant, stat_u64};
use support::env_or;
use support::load::{self, Counters};
use support::receiver::Receiver;

/// Finished batches the pipeline holds in memory at most (the write buffer, the batch being
/// written, the one being filled).
const BATCHES_IN_MEMORY: u64 = tether_pro::pipeline::BATCHES_IN_MEMORY as u64;
const MIB: u64 = 1024 * 1024;

struct Sample {
    at: Duration,
    phase: &'static str,
    rss_kib: u64,
}

fn main() {
    child::run_if_child();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let outage = Duration::from_secs(env_or("OUTAGE_SECS", 60, 3));
    let warm = Duration::from_secs(env_or("OUTAGE_WARM_SECS", 15, 2));
    let recovery = Duration::from_secs(env_or("OUTAGE_RECOVERY_SECS", 20, 3));
    // Well below what the pipeline keeps up with on the 2-core machine with ClickHouse up,
    // so the baseline is a steady state, not a backlog.
    let rate = env_or("OUTAGE_RATE", 100, 50) as f64;
    let (queue_bytes, batch_bytes) = (env_or("OUTAGE_QUEUE_MIB", 32, 32) * MIB, env_or("OUTAGE_BATCH_MIB", 4, 4) * MIB);
    let cap = queue_bytes + BATCHES_IN_MEMORY * batch_bytes;
    let clients = 4;

    // A ClickHouse of our own, with a data directory that survives its restart.
    let dir = tempfile::Builder::new().prefix("tether-pro-outage-bench-").tempdir().expect("a temporary directory");
    let mut clickhouse = Some(support::start_local(0, Some(dir.path().join("ch"))));
    let url = clickhouse.as_ref().unwrap().url().to_owned();
    let port: u16 = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("a port in the URL");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let database = rt.block_on(support::create_database(&url, "outage"));

    let receiver = Receiver::start();
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        (child::ENV_CH_URL, url.clone()),
        (child::ENV_CH_DB, database.clone()),
        (child::ENV_QUEUE_BYTES, queue_bytes.to_string()),
        (child::ENV_BATCH_BYTES, batch_bytes.to_string()),
        (child::ENV_SQLITE_FILE, dir.path().join("sync.db").display().to_string()),
    ];
    let server = ChildServer::spawn(Variant::Tether, &envs);
    let pid = server.pid;
    println!(
        "outage memory: {rate} pushes/s from {clients} clients; ClickHouse up {}s, stopped {}s, up again {}s; \
         queue_bytes {} MiB + {BATCHES_IN_MEMORY} x batch_bytes {} MiB = bound {} MiB; load {}",
        warm.as_secs(),
        outage.as_secs(),
        recovery.as_secs(),
        queue_bytes / MIB,
        batch_bytes / MIB,
        cap / MIB,
        support::load_average()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let load = rt.spawn({
        let (url, stop, counters) = (server.push_url.clone(), stop.clone(), counters.clone());
        async move { load::run_until(&url, clients, rate, stop, counters).await }
    });
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut sample = |phase: &'static str, samples: &mut Vec<Sample>| {
        let (rss_kib, _) = support::rss_kib(pid).expect("the server's /proc/PID/status");
        samples.push(Sample { at: t0.elapsed(), phase, rss_kib });
    };
    let step = Duration::from_secs(1).min(outage / 3);
    let run_phase = |phase: &'static str, len: Duration, samples: &mut Vec<Sample>, sample: &mut dyn FnMut(&'static str, &mut Vec<Sample>)| {
        let end = Instant::now() + len;
        while Instant::now() < end {
            std::thread::sleep(step.min(end.saturating_duration_since(Instant::now())));
            sample(phase, samples);
        }
    };

    // Each phase lasts at least its time, and the up phases until rows are written (at most a
    // minute more): on a loaded machine the nice-19 pipeline may not have written anything
    // yet, and an outage before the first write or a recovery cut short proves nothing.
    let wait_for_rows = |phase: &'static str, more_than: u64, samples: &mut Vec<Sample>, sample: &mut dyn FnMut(&'static str, &mut Vec<Sample>)| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = rt.block_on(support::count(&url, &database, "sync_mutations"));
            if rows > more_than || Instant::now() >= deadline {
                return rows;
            }
            std::thread::sleep(step);
            sample(phase, samples);
        }
    };
    run_phase("up", warm, &mut samples, &mut sample);
    let rows_before_outage = wait_for_rows("up", 0, &mut samples, &mut sample);
    let baseline = samples.last().expect("samples").rss_kib;
    let pushes_before_outage = counters.pushes.load(Ordering::Relaxed);
    // Stopping waits for ClickHouse to exit (it lingers on keep-alive connections): sample
    // meanwhile, on this thread, while another one stops it.
    let stopper = std::thread::spawn({
        let ch = clickhouse.take().unwrap();
        move || ch.stop()
    });
    while !stopper.is_finished() {
        std::thread::sleep(step);
        sample("stopping", &mut samples);
    }
    let down_at = t0.elapsed();
    run_phase("down", outage, &mut samples, &mut sample);
    clickhouse = Some(support::start_local(port, Some(dir.path().join("ch"))));
    let up_at = t0.elapsed();
    run_phase("recovered", recovery, &mut samples, &mut sample);
    wait_for_rows("recovered", rows_before_outage, &mut samples, &mut sample);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(load).expect("the load");
    let (_, hwm_kib) = support::rss_kib(pid).expect("the server's /proc/PID/status");
    let stats = server.stop();
    let rows = rt.block_on(support::count(&url, &database, "sync_mutations"));
    let requests_in_ch = rt.block_on(support::count(&url, &database, "sync_requests"));

    print_timeline(&samples);
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let growth = peak.saturating_sub(baseline) * 1024;
    let pushes = counters.pushes.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    println!();
    println!("outage memory (ClickHouse stopped at {:.1}s, back at {:.1}s; load {}):", down_at.as_secs_f64(), up_at.as_secs_f64(), support::load_average());
    println!("  baseline RSS (ClickHouse up, under load)  {:>7.1} MiB", baseline as f64 / 1024.0);
    println!("  peak RSS (1 s samples)                    {:>7.1} MiB   VmHWM {:.1} MiB", peak as f64 / 1024.0, hwm_kib as f64 / 1024.0);
    println!(
        "  peak - baseline                           {:>7.1} MiB   bound {} MiB: {}",
        growth as f64 / MIB as f64,
        cap / MIB,
        if growth <= cap { "within" } else { "ABOVE" }
    );
    println!(
        "  pushes {pushes} ({pushes_before_outage} before the outage), failed {errors}; captured {} records, dropped {} at the queue \
         and {} at the write buffer, {} not written after retries",
        stat_u64(&stats, "enqueued"),
        stat_u64(&stats, "dropped"),
        stat_u64(&stats, "buffer_dropped"),
        stat_u64(&stats, "records_failed")
    );
    println!(
        "  written: {} requests / {} mutation rows (ClickHouse holds {requests_in_ch} / {rows}); failed insert attempts {}",
        stat_u64(&stats, "requests_written"),
        stat_u64(&stats, "mutations_written"),
        stat_u64(&stats, "insert_failures")
    );

    println!("  OTLP: {} spans, {} metric exports received", receiver.spans(), receiver.metric_exports());

    // Not performance: the harness did what it claims.
    assert_eq!(errors, 0, "the server must keep answering while ClickHouse is down");
    assert!(pushes > pushes_before_outage, "load continued through the outage");
    assert!(stat_u64(&stats, "insert_failures") > 0, "the pipeline must have seen the outage");
    assert!(rows_before_outage > 0, "rows were written before the outage");
    assert!(rows > 0 && rows == stat_u64(&stats, "mutations_written"), "rows arrived after recovery: {rows}");
    drop(clickhouse);
}

/// One line per phase change and every 5 s.
fn print_timeline(samples: &[Sample]) {
    let mut last: Option<(&str, u64)> = None;
    for s in samples {
        let secs = s.at.as_secs();
        let show = last.is_none_or(|(phase, at)| phase != s.phase || secs >= at + 5);
        if show {
            println!("  t={:>5.1}s {:<9} rss {:>7.1} MiB", s.at.as_secs_f64(), s.phase, s.rss_kib as f64 / 1024.0);
            last = Some((s.phase, secs));
        }
    }
}
