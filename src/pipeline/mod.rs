//! The background pipeline: takes records off the capture queue, redacts, diffs, batches and
//! writes them to ClickHouse, with retries, bounded memory and a flush on shutdown.
//!
//! It runs on its own thread with its own single-threaded runtime, so it competes with the
//! host only for CPU, and with no tracing subscriber, so its own work (HTTP to ClickHouse,
//! retries) never traces into the host's telemetry. Its few messages go to stderr.

pub(crate) mod config;
pub(crate) mod dead_letter;
pub(crate) mod decode;
pub(crate) mod diff;
pub mod envelope;
pub(crate) mod json;
pub mod redact;
pub(crate) mod rows;
mod spool;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::registry::LookupSpan;

use crate::capture::queue::{self, QueueReceiver};
use crate::capture::{CaptureInterest, CaptureLayer, CaptureLimits, CaptureQueue, CaptureStats, SyncLayer};
use config::CaptureConfig;
pub use rows::{MutationRow, RequestRow, RowSettings, Rows};

use crate::store::encoded::EncodedRows;
use crate::telemetry::Telemetry;
pub use spool::{Spool, SpooledBatch};
pub use crate::store::encoded::Framing;
pub use crate::store::writer::{ClickHouseWriter, DEFAULT_SCHEMA_GRACE, WriteError};

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

    /// The capture counters (`.totals()` for a snapshot), shared with the guard and the gauges.
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
        let (written, spooled, dropped) = t.accounted();
        let in_flight = t.captured().saturating_sub(written + spooled + dropped);
        if dropped > 0 || in_flight > 0 {
            let reasons: Vec<String> =
                t.dropped_by_reason().iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{n} {r}")).collect();
            eprintln!(
                "tether-pro: capture stopped: {} captured, {written} written, {spooled} in the disk spool, {dropped} dropped ({}){}",
                t.captured(),
                if reasons.is_empty() { "none".to_owned() } else { reasons.join(", ") },
                if in_flight > 0 { format!(", {in_flight} still in memory at exit (lost)") } else { String::new() },
            );
        }
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A `[capture]` value is out of range (the message names the key).
    #[error(transparent)]
    Config(#[from] crate::invalid::InvalidConfig),
    /// The pipeline thread could not be spawned.
    #[error("starting the pipeline thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Starts the pipeline thread writing through `writer`, with no OpenTelemetry output.
pub fn start(config: &CaptureConfig, writer: ClickHouseWriter) -> Result<(Capture, CaptureGuard), StartError> {
    start_with_telemetry(config, writer, Telemetry::disabled())
}

/// Starts the pipeline thread writing through `writer` and emitting each request's server
/// span and metrics through `telemetry`.
pub fn start_with_telemetry(
    config: &CaptureConfig,
    writer: ClickHouseWriter,
    telemetry: Telemetry,
) -> Result<(Capture, CaptureGuard), StartError> {
    start_after(config, writer, telemetry, None)
}

/// Work the pipeline thread does before its first record, e.g. migrating the schema: the
/// host's start never waits for ClickHouse, and records queue (bounded) meanwhile.
pub type BeforeStart = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// [`start_with_telemetry`], running `before` on the pipeline thread first.
pub fn start_after(
    config: &CaptureConfig,
    writer: ClickHouseWriter,
    telemetry: Telemetry,
    before: Option<BeforeStart>,
) -> Result<(Capture, CaptureGuard), StartError> {
    config.validate()?;
    let writer = writer.with_insert_timeout(Duration::from_millis(config.insert_timeout_ms));
    let dead_letters = dead_letter::DeadLetters::new(&config.dead_letter);
    let stats = Arc::new(CaptureStats::default());
    let (queue, rx) = queue::bounded(config.queue_records, config.queue_bytes, stats.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let settings = config.row_settings();
    let cfg = config.clone();
    let worker_stats = stats.clone();
    telemetry.observe_capture(stats.clone());
    // Opened here, so a problem is reported at start. A spool that cannot be opened (say,
    // another process holds its directory) must not stop the host: capture runs without it.
    let spool = if config.spool.enabled {
        match Spool::open(&config.spool, stats.clone()) {
            Ok(s) => {
                let t = stats.totals();
                if t.spool_files > 0 {
                    eprintln!(
                        "tether-pro: disk spool {}: {} batches ({} records) from an earlier run will be written to ClickHouse",
                        config.spool.dir.display(),
                        t.spool_files,
                        t.spool_records
                    );
                }
                Some(s)
            }
            Err(e) => {
                eprintln!("tether-pro: disk spool {} unavailable, capturing without it: {e}", config.spool.dir.display());
                None
            }
        }
    } else {
        None
    };
    std::thread::Builder::new().name("tether-pro-pipeline".into()).spawn(move || {
        let _no_tracing = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        lower_priority(cfg.pipeline_nice);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("pipeline runtime");
        let mut stop = shutdown_rx.clone();
        let flush = Duration::from_millis(cfg.flush_timeout_ms);
        rt.block_on(async move {
            let mut stopped_at = None;
            if let Some(mut before) = before {
                tokio::select! {
                    _ = &mut before => {}
                    _ = stop.changed() => {
                        // A stop during the start-up work (a migration waiting for ClickHouse):
                        // it gets half the flush budget to finish, and the records queued
                        // meanwhile are flushed, spooled or counted in the rest, like any others.
                        stopped_at = Some(Instant::now());
                        let _ = tokio::time::timeout(flush / 2, &mut before).await;
                    }
                }
            }
            run(rx, writer, settings, cfg, worker_stats, shutdown_rx, telemetry, spool, dead_letters, stopped_at).await
        });
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

/// One batch being assembled: its rows already encoded for the insert (RowBinary, in LZ4
/// frames when the writer compresses), so that a batch waiting for ClickHouse costs its
/// encoded size, not a struct and a few heap strings per column per row.
struct Batch {
    requests: EncodedRows<RequestRow>,
    mutations: EncodedRows<MutationRow>,
    records: u64,
}

impl Batch {
    fn new(framing: Framing) -> Self {
        Batch { requests: EncodedRows::new(framing), mutations: EncodedRows::new(framing), records: 0 }
    }

    /// Appends one record's rows, all or none.
    fn push(&mut self, rows: &Rows) -> Result<(), crate::store::rowbinary::Error> {
        let (r, m) = (self.requests.mark(), self.mutations.mark());
        let pushed = self.requests.append(&rows.request).and_then(|()| rows.mutations.iter().try_for_each(|row| self.mutations.append(row)));
        if let Err(e) = pushed {
            self.requests.roll_back(r);
            self.mutations.roll_back(m);
            return Err(e);
        }
        self.requests.close_full_chunk();
        self.mutations.close_full_chunk();
        self.records += 1;
        Ok(())
    }

    fn rows(&self) -> usize {
        self.requests.rows() + self.mutations.rows()
    }

    /// RowBinary bytes of the rows (what `capture.batch_bytes` bounds).
    fn encoded_bytes(&self) -> usize {
        self.requests.encoded_bytes() + self.mutations.encoded_bytes()
    }

    /// Ready to send: the open chunks closed.
    fn finish(&mut self) {
        self.requests.finish();
        self.mutations.finish();
    }

    /// The rows as structs, for the disk spool and the dead letters.
    fn to_spooled(&self, token: String) -> Result<SpooledBatch, crate::store::encoded::DecodeError> {
        Ok(SpooledBatch::new(token, self.records, self.requests.decode()?, self.mutations.decode()?))
    }
}

/// The spool, shared by the two stages on the pipeline thread (never borrowed across an await).
type SharedSpool = Rc<RefCell<Option<Spool>>>;

/// Batches waiting for ClickHouse at most (each up to `batch_rows` / `batch_bytes`). Two of
/// 6 MiB hold about what four of 4 MiB held before batches were encoded, and inserting fewer,
/// larger batches is what saves ClickHouse's CPU (issue 15, BENCHMARKS.md section 6).
pub const WRITE_BUFFER_BATCHES: usize = 2;

/// Finished batches the pipeline holds in memory at most: the write buffer, the batch being
/// written and the one being filled. With the queue caps, the bound on its memory while
/// ClickHouse is away: `queue_bytes + BATCHES_IN_MEMORY * batch_bytes`.
pub const BATCHES_IN_MEMORY: usize = WRITE_BUFFER_BATCHES + 2;

/// Two stages on one thread: processing drains the queue continuously (rows, redaction,
/// diffs, OpenTelemetry), so spans and metrics keep flowing while ClickHouse is down;
/// writing takes finished batches to ClickHouse with retries. With the disk spool, batches
/// the write buffer cannot hold go to disk, and the writer drains the disk when memory is empty.
#[allow(clippy::too_many_arguments)]
async fn run(
    rx: QueueReceiver,
    writer: ClickHouseWriter,
    settings: RowSettings,
    cfg: CaptureConfig,
    stats: Arc<CaptureStats>,
    shutdown: watch::Receiver<bool>,
    telemetry: Telemetry,
    spool: Option<Spool>,
    dead_letters: Option<dead_letter::DeadLetters>,
    stopped_at: Option<Instant>,
) {
    let (batches_tx, batches_rx) = tokio::sync::mpsc::channel::<Batch>(WRITE_BUFFER_BATCHES);
    let stop_at = Rc::new(std::cell::Cell::new(None::<Instant>));
    let spool: SharedSpool = Rc::new(RefCell::new(spool));
    let writer_failing = Arc::new(AtomicBool::new(false));
    let out = Outlet { batches: batches_tx, stats: stats.clone(), spool: spool.clone(), writer_failing: writer_failing.clone() };
    let framing = writer.framing();
    let process = process_loop(rx, out, settings, cfg.clone(), framing, stats.clone(), shutdown, telemetry.clone(), stop_at.clone(), stopped_at);
    let sinks = Sinks { spool, dead_letters, stats: stats.clone() };
    let write = write_loop(batches_rx, writer, stats, telemetry, stop_at, sinks, writer_failing);
    tokio::join!(process, write);
}

#[allow(clippy::too_many_arguments)]
async fn process_loop(
    mut rx: QueueReceiver,
    out: Outlet,
    settings: RowSettings,
    cfg: CaptureConfig,
    framing: Framing,
    stats: Arc<CaptureStats>,
    mut shutdown: watch::Receiver<bool>,
    telemetry: Telemetry,
    stop_at: std::rc::Rc<std::cell::Cell<Option<Instant>>>,
    stopped_at: Option<Instant>,
) {
    let interval = Duration::from_millis(cfg.batch_interval_ms);
    // Records are processed as they come, a tick at a time, and batches handed over once an
    // interval: processing a whole interval's records in one burst was what the host's p99
    // felt (issue 15).
    let tick = interval.min(Duration::from_millis(cfg.process_interval_ms));
    let mut next_hand_over = Instant::now() + interval;
    let wake = rx.wake.clone();
    let mut taken = Vec::new();
    // The batch being filled. It is handed over at the end of an interval only when the
    // write buffer has room; otherwise it keeps filling across intervals (ClickHouse slow or
    // away), and only a full batch that finds no room is spilled to disk or dropped.
    let mut batch = Batch::new(framing);
    loop {
        let (mut stopping, mut woken) = (false, false);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            // The queue passed half full: process and write now.
            _ = wake.notified() => woken = true,
            _ = shutdown.changed() => stopping = true,
        }
        if stopping || *shutdown.borrow() {
            stopping = true;
            // The flush deadline counts from the stop request, also when it came during the
            // start-up work: the guard waits no longer than that.
            stop_at.set(Some(stopped_at.unwrap_or_else(Instant::now) + Duration::from_millis(cfg.flush_timeout_ms)));
        }
        if stats.dropped.load(Ordering::Relaxed) > 0 && !stats.warned_drop.swap(true, Ordering::Relaxed) {
            eprintln!(
                "tether-pro: capture queue full ({} records / {} bytes): dropping records; the sync server is unaffected",
                cfg.queue_records, cfg.queue_bytes
            );
        }
        loop {
            taken.clear();
            if rx.drain(256, &mut taken) == 0 {
                break;
            }
            for (rec, bytes) in taken.drain(..) {
                let rows = rows::build(&rec, &settings);
                telemetry.record(&rec, &rows);
                drop(rec);
                rx.release(bytes);
                if let Err(e) = batch.push(&rows) {
                    // Unreachable with our row types (tests encode every column); counted
                    // like a refused record rather than a panic on the host's behalf.
                    stats.bad_data.fetch_add(1, Ordering::Relaxed);
                    stats.records_failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("tether-pro: a captured request could not be encoded for ClickHouse (not written): {e}");
                }
                drop(rows);
                if batch.rows() >= cfg.batch_rows || batch.encoded_bytes() >= cfg.batch_bytes {
                    out.hand_over_full(std::mem::replace(&mut batch, Batch::new(framing))).await;
                }
            }
            // The writer shares this thread: give it a turn between chunks of a burst.
            tokio::task::yield_now().await;
        }
        if stopping {
            // Wait for room (the writer gives up at the flush deadline, and then spools or
            // counts); dropping the outlet afterwards lets the writer finish and stop.
            out.hand_over_waiting(batch).await;
            return;
        }
        if woken || Instant::now() >= next_hand_over {
            if out.has_room() {
                out.hand_over(std::mem::replace(&mut batch, Batch::new(framing)));
            }
            next_hand_over = Instant::now() + interval;
        }
    }
}


/// Where finished batches go: the write buffer, else the disk spool, else counted as dropped.
struct Outlet {
    batches: tokio::sync::mpsc::Sender<Batch>,
    stats: Arc<CaptureStats>,
    spool: SharedSpool,
    /// The writer's last attempt failed (ClickHouse away or refusing): waiting for room in
    /// the write buffer would stall processing, and with it spans and metrics.
    writer_failing: Arc<AtomicBool>,
}

impl Outlet {
    /// A full batch waits for room while the writer is making progress (a healthy but busy
    /// ClickHouse: the queue absorbs the pause); when the writer is failing it is spilled to
    /// disk or dropped at once, so processing goes on.
    async fn hand_over_full(&self, mut batch: Batch) {
        batch.finish();
        loop {
            if self.writer_failing.load(Ordering::Relaxed) {
                return self.hand_over(batch);
            }
            match tokio::time::timeout(Duration::from_millis(100), self.batches.reserve()).await {
                Ok(Ok(permit)) => return permit.send(batch),
                Ok(Err(_)) => return self.hand_over(batch), // writer gone: spill or count
                Err(_) => continue,                         // still busy: is it failing now?
            }
        }
    }

    fn has_room(&self) -> bool {
        self.batches.capacity() > 0
    }

    async fn hand_over_waiting(&self, mut batch: Batch) {
        batch.finish();
        if batch.records == 0 {
            return;
        }
        if let Err(e) = self.batches.send(batch).await {
            let b = e.0;
            spill_or_drop(&self.spool, &self.stats, b, ulid::Ulid::new().to_string());
        }
    }

    /// Hands a batch to the writer, or spills/drops it when the write buffer is full.
    fn hand_over(&self, mut batch: Batch) {
        if batch.records == 0 {
            return;
        }
        batch.finish();
        if let Err(e) = self.batches.try_send(batch) {
            let batch = match e {
                tokio::sync::mpsc::error::TrySendError::Full(b) | tokio::sync::mpsc::error::TrySendError::Closed(b) => b,
            };
            spill_or_drop(&self.spool, &self.stats, batch, ulid::Ulid::new().to_string());
        }
    }
}

/// Puts a batch in the disk spool, or drops and counts it: as `spool_dropped` when the spool
/// is full or failing, as `buffer_dropped` when there is no spool.
/// Returns whether the batch was kept.
fn spill_or_drop(spool: &SharedSpool, stats: &CaptureStats, batch: Batch, token: String) -> bool {
    let records = batch.records;
    if let Some(spool) = spool.borrow_mut().as_mut() {
        let spooled = batch.to_spooled(token);
        drop(batch);
        return match spooled.map_err(|e| e.to_string()).and_then(|b| spool.push(&b).map_err(|e| e.to_string())) {
            Ok(_) => true,
            Err(e) => {
                if stats.spool_dropped.fetch_add(records, Ordering::Relaxed) == 0 {
                    eprintln!("tether-pro: dropping captured records: {e}; the sync server is unaffected");
                }
                false
            }
        };
    }
    if stats.buffer_dropped.fetch_add(records, Ordering::Relaxed) == 0 {
        eprintln!("tether-pro: ClickHouse is not keeping up: dropping captured records; the sync server is unaffected");
    }
    false
}

/// Where batches go that ClickHouse did not take: the disk spool (transient failures at
/// shutdown), the dead-letter directory (bad data); each record not kept is counted under
/// its reason.
struct Sinks {
    spool: SharedSpool,
    dead_letters: Option<dead_letter::DeadLetters>,
    stats: Arc<CaptureStats>,
}

impl Sinks {
    /// A batch refused as bad data: counted as `bad_data`, kept in the dead-letter directory.
    /// Returns whether it was kept.
    fn refused(&self, error: &str, batch: &SpooledBatch) -> bool {
        let records = batch.records;
        self.stats.bad_data.fetch_add(records, Ordering::Relaxed);
        self.stats.records_failed.fetch_add(records, Ordering::Relaxed);
        let (kept, how) = match &self.dead_letters {
            Some(dl) => match dl.keep(error, batch) {
                Ok(path) => {
                    self.stats.dead_lettered.fetch_add(records, Ordering::Relaxed);
                    (true, format!("kept in {}", path.display()))
                }
                Err(e) => (false, format!("not kept: {e}")),
            },
            None => (false, "not kept (capture.dead_letter.enabled = false)".to_owned()),
        };
        eprintln!("tether-pro: ClickHouse refused {records} captured requests as bad data (not retried; {how}): {error}");
        kept
    }

    /// A batch still unwritten at the shutdown deadline: to the spool, else counted.
    fn unwritten_at_shutdown(&self, error: &str, batch: Batch, token: String) {
        let records = batch.records;
        if self.spool.borrow().is_some() {
            if spill_or_drop(&self.spool, &self.stats, batch, token) {
                eprintln!("tether-pro: ClickHouse unavailable at shutdown ({error}); {records} captured requests kept in the disk spool");
            }
            return;
        }
        self.stats.shutdown_dropped.fetch_add(records, Ordering::Relaxed);
        self.stats.records_failed.fetch_add(records, Ordering::Relaxed);
        eprintln!("tether-pro: ClickHouse unavailable at shutdown ({error}); {records} captured requests not written (no disk spool)");
    }
}

async fn write_loop(
    mut batches: tokio::sync::mpsc::Receiver<Batch>,
    writer: ClickHouseWriter,
    stats: Arc<CaptureStats>,
    telemetry: Telemetry,
    stop_at: Rc<std::cell::Cell<Option<Instant>>>,
    sinks: Sinks,
    failing: Arc<AtomicBool>,
) {
    use tokio::sync::mpsc::error::TryRecvError;
    let deadline = || stop_at.get();
    // Once per outage on stderr, so an operator sees why nothing arrives (a missing database
    // on one shard, a wrong password) before the shutdown summary.
    let on_failure = |e: &clickhouse::error::Error| {
        stats.insert_failures.fetch_add(1, Ordering::Relaxed);
        if !failing.swap(true, Ordering::Relaxed) {
            eprintln!("tether-pro: inserts into ClickHouse are failing ({e}); retrying, the sync server is unaffected");
        }
    };
    let written = |requests: usize, mutations: usize, started: Instant| {
        if failing.swap(false, Ordering::Relaxed) {
            eprintln!("tether-pro: inserts into ClickHouse succeed again");
        }
        let elapsed = started.elapsed();
        stats.requests_written.fetch_add(requests as u64, Ordering::Relaxed);
        stats.mutations_written.fetch_add(mutations as u64, Ordering::Relaxed);
        stats.inserts.fetch_add(1, Ordering::Relaxed);
        stats.insert_latency_us_sum.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        stats.last_insert_unix_ms.store(chrono::Utc::now().timestamp_millis().max(0) as u64, Ordering::Relaxed);
        telemetry.record_insert(elapsed.as_secs_f64());
    };
    loop {
        // Memory first (it is what a crash would lose); the disk when memory is empty, and
        // not once shutdown has begun (the disk keeps for the next start).
        let batch = match batches.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let oldest = if deadline().is_none() { sinks.spool.borrow().as_ref().and_then(Spool::oldest) } else { None };
                if let Some(entry) = oldest {
                    write_spooled(&sinks, entry, &writer, &deadline, &on_failure, &written).await;
                    continue;
                }
                match batches.recv().await {
                    Some(b) => b,
                    None => break,
                }
            }
        };
        let token = ulid::Ulid::new().to_string();
        let started = Instant::now();
        match writer.write_encoded(&batch.requests, &batch.mutations, &token, &deadline, &on_failure).await {
            Ok(()) => {
                written(batch.requests.rows(), batch.mutations.rows(), started);
                drop(batch);
                return_freed_memory();
            }
            Err(WriteError::GaveUp(e)) => sinks.unwritten_at_shutdown(&e, batch, token),
            Err(WriteError::BadData(e)) => match batch.to_spooled(token) {
                Ok(spooled) => {
                    sinks.refused(&e, &spooled);
                }
                Err(decode) => {
                    sinks.refused(&format!("{e} (and the batch could not be read back for the dead letters: {decode})"), &SpooledBatch::new(String::new(), batch.records, Vec::new(), Vec::new()));
                }
            },
        }
    }
}

/// Gives freed memory back to the operating system, at most once per [`TRIM_EVERY`]. glibc
/// keeps freed memory in its arenas, so a burst of captured records would otherwise stay in
/// the host's resident memory for good (issue 15 measured it over the queue and batch
/// bounds). Rate-limited because `malloc_trim` walks every arena holding its lock, and this
/// thread runs at a low priority: a host thread allocating meanwhile would wait for it. A
/// no-op where the allocator is not glibc's.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::Mutex;
        static LAST: Mutex<Option<Instant>> = Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        // SAFETY: malloc_trim returns free pages of the heaps to the kernel (madvise); it
        // moves no allocation and invalidates no pointer.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// How often [`return_freed_memory`] trims at most.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Writes the oldest spooled batch with its own token, and removes it once written (or set
/// aside when unreadable; moved to the dead-letter directory when refused as bad data).
/// Left on disk when shutdown cuts it short.
async fn write_spooled(
    sinks: &Sinks,
    entry: spool::SpoolEntry,
    writer: &ClickHouseWriter,
    deadline: &dyn Fn() -> Option<Instant>,
    on_failure: &(dyn Fn(&clickhouse::error::Error) + Sync),
    written: &dyn Fn(usize, usize, Instant),
) {
    let (spool, stats) = (&sinks.spool, &sinks.stats);
    let read = spool.borrow().as_ref().map(|s| s.read(&entry));
    let batch = match read {
        Some(Ok(b)) => b,
        None => return,
        Some(Err(e)) => {
            eprintln!("tether-pro: spooled batch {} unreadable, set aside as .corrupt: {e}", entry.id);
            stats.spool_corrupt.fetch_add(entry.records, Ordering::Relaxed);
            if let Some(s) = spool.borrow_mut().as_mut()
                && let Err(e) = s.set_aside(&entry)
            {
                eprintln!("tether-pro: setting aside spooled batch {}: {e}", entry.id);
            }
            return;
        }
    };
    let started = Instant::now();
    let result = writer.write(&batch.requests, &batch.mutations, &batch.token, deadline, on_failure).await;
    let dead_lettered = matches!(&result, Err(WriteError::BadData(e)) if sinks.refused(e, &batch));
    let mut guard = spool.borrow_mut();
    let Some(s) = guard.as_mut() else { return };
    match result {
        Ok(()) => {
            written(batch.requests.len(), batch.mutations.len(), started);
            stats.spool_written.fetch_add(batch.records, Ordering::Relaxed);
            if let Err(e) = s.remove(&entry) {
                eprintln!("tether-pro: removing written spool batch {}: {e}", entry.id);
            }
        }
        Err(WriteError::GaveUp(_)) => {} // shutdown: stays on disk
        // Counted (and kept in the dead-letter directory) above; off the spool either way.
        Err(WriteError::BadData(_)) if dead_lettered => {
            let _ = s.remove(&entry);
        }
        Err(WriteError::BadData(_)) => {
            let _ = s.set_aside(&entry);
        }
    }
}
