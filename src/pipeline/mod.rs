//! The background pipeline: takes records off the capture queue, redacts, diffs, batches and
//! writes them to ClickHouse, with retries, bounded memory and a flush on shutdown.
//!
//! It runs on its own thread with its own single-threaded runtime, so it competes with the
//! host only for CPU, and with no tracing subscriber, so its own work (HTTP to ClickHouse,
//! retries) never traces into the host's telemetry. Its few messages go to stderr.

pub mod diff;
pub mod redact;
pub mod rows;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::registry::LookupSpan;

use crate::capture::queue::{self, QueueReceiver};
use crate::capture::{CaptureInterest, CaptureLayer, CaptureLimits, CaptureQueue, CaptureStats, SyncLayer};
use crate::config::CaptureConfig;
pub use rows::{MutationRow, RequestRow, RowSettings, Rows};
pub use writer::{ClickHouseWriter, WriteError};

/// A running capture pipeline: hands out layers and reports its counters.
#[derive(Clone)]
pub struct Capture {
    queue: CaptureQueue,
    stats: Arc<CaptureStats>,
    config: CaptureConfig,
}

impl Capture {
    /// The `tracing` layer, pre-filtered to capture spans. Add it to your registry.
    pub fn layer<S>(&self) -> Filtered<SyncLayer<S>, CaptureInterest, S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        SyncLayer::new(self.queue.clone()).with_filter(CaptureInterest)
    }

    /// The tower layer for the push and pull routes, honouring `capture.enabled`.
    pub fn http_layer(&self) -> CaptureLayer {
        CaptureLayer::new()
            .with_limits(CaptureLimits { retain_bytes: self.config.retain_bytes })
            .enabled(self.config.enabled)
    }

    pub fn stats(&self) -> &Arc<CaptureStats> {
        &self.stats
    }
}

/// Flushes the pipeline when dropped (within `capture.flush_timeout_ms`), then reports what
/// was dropped. Hold it for the life of the server.
#[must_use = "dropping the guard stops the pipeline; hold it until shutdown"]
pub struct CaptureGuard {
    shutdown: watch::Sender<bool>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    timeout: Duration,
    stats: Arc<CaptureStats>,
}

impl CaptureGuard {
    /// Flushes now and waits (bounded). Idempotent; `Drop` calls it.
    pub fn shutdown(&mut self) {
        let Some(done) = self.done.take() else { return };
        let _ = self.shutdown.send(true);
        // The pipeline itself stops at the flush deadline; the extra second covers joining.
        let _ = done.recv_timeout(self.timeout + Duration::from_secs(1));
        let t = self.stats.totals();
        if t.dropped > 0 || t.records_failed > 0 {
            eprintln!(
                "tether-pro: capture stopped: {} records dropped (queue full), {} not written (ClickHouse), {} written",
                t.dropped, t.records_failed, t.requests_written
            );
        }
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the pipeline thread writing through `writer`.
pub fn start(config: &CaptureConfig, writer: ClickHouseWriter) -> anyhow::Result<(Capture, CaptureGuard)> {
    config.validate()?;
    let stats = Arc::new(CaptureStats::default());
    let (queue, rx) = queue::bounded(config.queue_records, config.queue_bytes, stats.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let settings = RowSettings {
        redactor: redact::Redactor::new(&config.redact_keys),
        body_cap_bytes: config.body_cap_bytes,
    };
    let cfg = config.clone();
    let worker_stats = stats.clone();
    std::thread::Builder::new().name("tether-pro-pipeline".into()).spawn(move || {
        let _no_tracing = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        lower_priority(cfg.pipeline_nice);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("pipeline runtime");
        rt.block_on(run(rx, writer, settings, cfg, worker_stats, shutdown_rx));
        let _ = done_tx.send(());
    })?;
    let timeout = Duration::from_millis(config.flush_timeout_ms);
    Ok((
        Capture { queue, stats: stats.clone(), config: config.clone() },
        CaptureGuard { shutdown: shutdown_tx, done: Some(done_rx), timeout, stats },
    ))
}

/// Lowers this thread's scheduling priority, so that on a busy machine the host's request
/// threads get the CPU first. (On Linux the nice value is per thread.)
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain syscalls on the calling thread; failure only leaves the priority as is.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// One batch being assembled.
#[derive(Default)]
struct Batch {
    requests: Vec<RequestRow>,
    mutations: Vec<MutationRow>,
    records: u64,
    bytes: usize,
    row_bytes: usize,
}

async fn run(
    mut rx: QueueReceiver,
    writer: ClickHouseWriter,
    settings: RowSettings,
    cfg: CaptureConfig,
    stats: Arc<CaptureStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(cfg.batch_interval_ms);
    let wake = rx.wake.clone();
    let mut stopping = false;
    let mut taken = Vec::new();
    loop {
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => stopping = true,
            }
        }
        if stats.dropped.load(Ordering::Relaxed) > 0 && !stats.warned_drop.swap(true, Ordering::Relaxed) {
            eprintln!(
                "tether-pro: capture queue full ({} records / {} bytes): dropping records; the sync server is unaffected",
                cfg.queue_records, cfg.queue_bytes
            );
        }
        let flush_timeout = Duration::from_millis(cfg.flush_timeout_ms);
        let stop_at = std::cell::Cell::new(stopping.then(|| Instant::now() + flush_timeout));
        // Shutdown may begin while a write is retrying: the deadline appears then.
        let deadline = || {
            if stop_at.get().is_none() && *shutdown.borrow() {
                stop_at.set(Some(Instant::now() + flush_timeout));
            }
            stop_at.get()
        };
        // Drain everything queued, writing in batches of at most batch_rows / batch_bytes.
        let mut batch = Batch::default();
        loop {
            taken.clear();
            if rx.drain(256, &mut taken) == 0 {
                break;
            }
            for (rec, bytes) in taken.drain(..) {
                let rows = rows::build(&rec, &settings);
                batch.row_bytes += rows.request.request_body.len() + rows.request.response_body.len() + 512;
                batch.row_bytes += rows.mutations.iter().map(|m| m.payload.len() + m.state_before.len() + m.state_after.len() + m.diff.len() + 256).sum::<usize>();
                batch.requests.push(rows.request);
                batch.mutations.extend(rows.mutations);
                batch.records += 1;
                batch.bytes += bytes;
                if batch.mutations.len() + batch.requests.len() >= cfg.batch_rows || batch.row_bytes >= cfg.batch_bytes {
                    flush(&writer, std::mem::take(&mut batch), &rx, &stats, &deadline).await;
                }
            }
        }
        flush(&writer, batch, &rx, &stats, &deadline).await;
        if stopping || stop_at.get().is_some() {
            return;
        }
    }
}

async fn flush(
    writer: &ClickHouseWriter,
    batch: Batch,
    rx: &QueueReceiver,
    stats: &CaptureStats,
    deadline: &dyn Fn() -> Option<Instant>,
) {
    if batch.records == 0 {
        return;
    }
    let token = ulid::Ulid::new().to_string();
    let started = Instant::now();
    let on_failure = |_: &clickhouse::error::Error| {
        stats.insert_failures.fetch_add(1, Ordering::Relaxed);
    };
    match writer.write(&batch.requests, &batch.mutations, &token, deadline, &on_failure).await {
        Ok(()) => {
            stats.requests_written.fetch_add(batch.requests.len() as u64, Ordering::Relaxed);
            stats.mutations_written.fetch_add(batch.mutations.len() as u64, Ordering::Relaxed);
            stats.inserts.fetch_add(1, Ordering::Relaxed);
            stats.insert_latency_us_sum.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            stats.records_failed.fetch_add(batch.records, Ordering::Relaxed);
            eprintln!("tether-pro: {} captured requests not written: {e}", batch.records);
        }
    }
    rx.release(batch.bytes);
}
