//! The bounded hand-off between the host's threads and the pipeline. Never waits: when the
//! queue is full (in records or in bytes) the record is dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

use super::record::CaptureRecord;

/// Counters of the capture path, readable at any time (the OTel metrics and the dashboard
/// report them).
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Records accepted into the queue.
    pub enqueued: AtomicU64,
    /// Records dropped because the queue was full (records or bytes).
    pub dropped: AtomicU64,
    /// Records processed but dropped because the write buffer was full (ClickHouse down or
    /// slower than the traffic for longer than the buffer lasts).
    pub buffer_dropped: AtomicU64,
    /// Records currently queued.
    pub queue_depth: AtomicU64,
    /// Bytes currently queued.
    pub queue_bytes: AtomicUsize,
    /// Request rows written to ClickHouse.
    pub requests_written: AtomicU64,
    /// Mutation rows written to ClickHouse.
    pub mutations_written: AtomicU64,
    /// Insert attempts that failed (each retry counts).
    pub insert_failures: AtomicU64,
    /// Records given up on: bad data, or still unwritten at the shutdown deadline
    /// (`bad_data + shutdown_dropped`).
    pub records_failed: AtomicU64,
    /// Records in batches ClickHouse refused as bad data (never retried).
    pub bad_data: AtomicU64,
    /// Of those, records kept in the dead-letter directory.
    pub dead_lettered: AtomicU64,
    /// Records still unwritten at the shutdown deadline with no disk spool (with one they are
    /// spooled, or counted as `spool_dropped` when it is full).
    pub shutdown_dropped: AtomicU64,
    /// When the last insert succeeded (Unix ms; 0: none yet).
    pub last_insert_unix_ms: AtomicU64,
    /// Sum and count of successful insert latencies, in microseconds.
    pub insert_latency_us_sum: AtomicU64,
    /// Successful inserts: one per batch written (both tables), from memory or the spool.
    pub inserts: AtomicU64,
    /// Records written to the disk spool (when it is enabled): the write buffer was full, or
    /// ClickHouse was away at the shutdown deadline.
    pub spool_spilled: AtomicU64,
    /// Records written to ClickHouse from the disk spool.
    pub spool_written: AtomicU64,
    /// Records dropped because the disk spool was full (or could not be written).
    pub spool_dropped: AtomicU64,
    /// Spooled batches that could not be read back (set aside as `.corrupt`).
    pub spool_corrupt: AtomicU64,
    /// Batches, records and bytes in the spool now, and the age of the oldest (Unix ms; 0: empty).
    pub spool_files: AtomicU64,
    /// Records in the spool now (including batches a previous run left).
    pub spool_records: AtomicU64,
    /// Bytes of the spool's batch files now.
    pub spool_bytes: AtomicU64,
    /// When the oldest batch in the spool was spooled (Unix ms; 0: spool empty).
    pub spool_oldest_unix_ms: AtomicU64,
    pub(crate) warned_drop: AtomicBool,
}

/// A point-in-time copy of [`CaptureStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureTotals {
    /// Records accepted into the queue (counted as they are queued).
    pub enqueued: u64,
    /// Records dropped on the host's thread because the queue was full, in records or bytes (`queue_full`).
    pub dropped: u64,
    /// Records processed into rows, then dropped because the write buffer was full and no disk
    /// spool is enabled (`write_buffer_full`).
    pub buffer_dropped: u64,
    /// Records in the queue when the snapshot was taken.
    pub queue_depth: u64,
    /// Estimated bytes of the records queued or being processed into rows (at most
    /// `capture.queue_bytes`).
    pub queue_bytes: u64,
    /// Request rows written to ClickHouse, from memory or the spool: one per captured record.
    pub requests_written: u64,
    /// Mutation rows written to ClickHouse.
    pub mutations_written: u64,
    /// Failed insert attempts, transient or bad data; every retry counts.
    pub insert_failures: u64,
    /// Records given up on: `bad_data + shutdown_dropped`.
    pub records_failed: u64,
    /// Records in batches ClickHouse refused as bad data, never retried (`bad_data`).
    pub bad_data: u64,
    /// Of `bad_data`, the records kept in the dead-letter directory.
    pub dead_lettered: u64,
    /// Records still unwritten at the shutdown deadline with no disk spool enabled (`shutdown`).
    pub shutdown_dropped: u64,
    /// When the last insert succeeded (Unix ms; 0: none yet).
    pub last_insert_unix_ms: u64,
    /// Successful inserts: one per batch written (both tables), from memory or the spool.
    pub inserts: u64,
    /// Sum of the successful inserts' latencies, in microseconds (divide by `inserts` for the mean).
    pub insert_latency_us_sum: u64,
    /// Records moved to the disk spool: the write buffer was full, or they were unwritten at shutdown.
    pub spool_spilled: u64,
    /// Records written to ClickHouse from the disk spool.
    pub spool_written: u64,
    /// Records dropped because the disk spool was full or could not be written (`spool_full`).
    pub spool_dropped: u64,
    /// Records in spooled batches that could not be read back, set aside as `.corrupt` (`spool_corrupt`).
    pub spool_corrupt: u64,
    /// Batches (files) in the spool now.
    pub spool_files: u64,
    /// Records in the spool now (including batches a previous run left).
    pub spool_records: u64,
    /// Bytes of the spool's batch files now.
    pub spool_bytes: u64,
    /// When the oldest batch in the spool was spooled (Unix ms; 0: spool empty).
    pub spool_oldest_unix_ms: u64,
}

/// Why captured records were dropped: the `reason` attribute of
/// `tether.capture.records.dropped`, the keys of the pipeline health on the overview page.
pub const DROP_REASONS: &[&str] = &["queue_full", "write_buffer_full", "spool_full", "spool_corrupt", "bad_data", "shutdown"];

impl CaptureTotals {
    /// Records dropped, by reason ([`DROP_REASONS`], in that order).
    pub fn dropped_by_reason(&self) -> [(&'static str, u64); 6] {
        [
            (DROP_REASONS[0], self.dropped),
            (DROP_REASONS[1], self.buffer_dropped),
            (DROP_REASONS[2], self.spool_dropped),
            (DROP_REASONS[3], self.spool_corrupt),
            (DROP_REASONS[4], self.bad_data),
            (DROP_REASONS[5], self.shutdown_dropped),
        ]
    }

    /// Records captured: accepted into the queue, or dropped because it was full.
    pub fn captured(&self) -> u64 {
        self.enqueued + self.dropped
    }

    /// Where every captured record is once the pipeline is idle: `(written, spooled,
    /// dropped)`, whose sum is [`captured`](Self::captured). Records still in the queue or a
    /// batch in memory are in none of the three.
    pub fn accounted(&self) -> (u64, u64, u64) {
        let dropped = self.dropped_by_reason().iter().map(|(_, n)| n).sum();
        (self.requests_written, self.spool_records, dropped)
    }
}

impl CaptureStats {
    /// A copy of every counter now (each read on its own, so not one atomic instant).
    pub fn totals(&self) -> CaptureTotals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CaptureTotals {
            enqueued: g(&self.enqueued),
            dropped: g(&self.dropped),
            buffer_dropped: g(&self.buffer_dropped),
            queue_depth: g(&self.queue_depth),
            queue_bytes: self.queue_bytes.load(Ordering::Relaxed) as u64,
            requests_written: g(&self.requests_written),
            mutations_written: g(&self.mutations_written),
            insert_failures: g(&self.insert_failures),
            records_failed: g(&self.records_failed),
            bad_data: g(&self.bad_data),
            dead_lettered: g(&self.dead_lettered),
            shutdown_dropped: g(&self.shutdown_dropped),
            last_insert_unix_ms: g(&self.last_insert_unix_ms),
            inserts: g(&self.inserts),
            insert_latency_us_sum: g(&self.insert_latency_us_sum),
            spool_spilled: g(&self.spool_spilled),
            spool_written: g(&self.spool_written),
            spool_dropped: g(&self.spool_dropped),
            spool_corrupt: g(&self.spool_corrupt),
            spool_files: g(&self.spool_files),
            spool_records: g(&self.spool_records),
            spool_bytes: g(&self.spool_bytes),
            spool_oldest_unix_ms: g(&self.spool_oldest_unix_ms),
        }
    }
}

/// The sending side, held by the `SyncLayer`.
#[derive(Debug, Clone)]
pub struct CaptureQueue {
    tx: mpsc::Sender<CaptureRecord>,
    max_records: usize,
    max_bytes: usize,
    stats: Arc<CaptureStats>,
    wake: Arc<Notify>,
}

/// The receiving side, owned by the pipeline.
pub struct QueueReceiver {
    rx: mpsc::Receiver<CaptureRecord>,
    stats: Arc<CaptureStats>,
    pub(crate) wake: Arc<Notify>,
}

/// A queue of at most `max_records` records (at least 1) and `max_bytes` estimated bytes
/// (`capture.queue_records`, `capture.queue_bytes`), counting into `stats`.
pub fn bounded(max_records: usize, max_bytes: usize, stats: Arc<CaptureStats>) -> (CaptureQueue, QueueReceiver) {
    let (tx, rx) = mpsc::channel(max_records.max(1));
    let wake = Arc::new(Notify::new());
    (
        CaptureQueue { tx, max_records: max_records.max(1), max_bytes, stats: stats.clone(), wake: wake.clone() },
        QueueReceiver { rx, stats, wake },
    )
}

impl CaptureQueue {
    /// Reserves a slot and the bytes first, builds the record only once both are held,
    /// and never blocks. Returns whether the record was queued.
    pub fn offer(&self, bytes: usize, build: impl FnOnce() -> CaptureRecord) -> bool {
        let s = &self.stats;
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(_) => return self.drop_one(),
        };
        let before = s.queue_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.max_bytes {
            s.queue_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return self.drop_one();
        }
        // Counted before the send: once sent, the pipeline may drain it (and count it out)
        // before this thread runs on, and a depth counted after would wrap below zero (a
        // debug build panicked on the host's thread; found by the fault tests once the
        // pipeline drained every 50 ms).
        let depth = s.queue_depth.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        s.enqueued.fetch_add(1, Ordering::Relaxed);
        permit.send(build());
        // One wake-up when the queue passes half full; otherwise the pipeline's own
        // interval collects records, so the host never pays for a wake per request.
        if depth as usize == self.max_records / 2 + 1 || before < self.max_bytes / 2 && before + bytes >= self.max_bytes / 2 {
            self.wake.notify_one();
        }
        true
    }

    fn drop_one(&self) -> bool {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The counters this queue updates.
    pub fn stats(&self) -> &Arc<CaptureStats> {
        &self.stats
    }
}

impl QueueReceiver {
    /// Takes up to `max` queued records without waiting.
    pub fn drain(&mut self, max: usize, out: &mut Vec<(CaptureRecord, usize)>) -> usize {
        let mut n = 0;
        while n < max {
            match self.rx.try_recv() {
                Ok(rec) => {
                    let bytes = rec.approx_bytes();
                    out.push((rec, bytes));
                    self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    /// Gives back the byte reservation of records that left the buffer (written or failed).
    pub fn release(&self, bytes: usize) {
        self.stats.queue_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// True once every sender is gone and nothing is left.
    pub fn is_closed_and_empty(&self) -> bool {
        self.rx.is_closed() && self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::record::{CaptureRecord, CapturedBody, RequestKind, approx_bytes};

    fn record(body: usize) -> CaptureRecord {
        CaptureRecord {
            request_id: String::new(),
            kind: RequestKind::Push,
            started_at: chrono::Utc::now(),
            duration: std::time::Duration::ZERO,
            http_status: 200,
            client_version: String::new(),
            request_body: CapturedBody {
                chunks: vec![bytes::Bytes::from(vec![b'x'; body])],
                retained: body,
                total: body as u64,
                complete: true,
                ..CapturedBody::default()
            },
            response_body: CapturedBody::default(),
            states: Vec::new(),
            trace_id: String::new(),
            span_id: String::new(),
            parent: None,
            path: String::new(),
            replay_of: String::new(),
            error: None,
            client_gone: false,
        }
    }

    fn offer(q: &CaptureQueue, body: usize) -> bool {
        q.offer(approx_bytes(body, 0, 0), || record(body))
    }

    /// A record drained the moment it is sent must not take the depth below zero: counted
    /// after the send, it could, and a debug build panicked on the host's thread (CI's fault
    /// tests, once the pipeline drained every 50 ms). So a record is counted in before it can
    /// be drained: while it is being built (just before the send), it already is.
    #[test]
    fn a_record_is_counted_in_before_the_pipeline_can_drain_it() {
        let stats = Arc::new(CaptureStats::default());
        let (q, mut rx) = bounded(10, usize::MAX, stats.clone());
        let seen = stats.clone();
        assert!(q.offer(approx_bytes(1, 0, 0), || {
            assert_eq!((seen.queue_depth.load(Ordering::Relaxed), seen.enqueued.load(Ordering::Relaxed)), (1, 1));
            record(1)
        }));
        let mut taken = Vec::new();
        assert_eq!(rx.drain(10, &mut taken), 1);
        assert_eq!(stats.totals().queue_depth, 0);
    }

    #[test]
    fn drops_and_counts_when_queue_full_in_records() {
        let stats = Arc::new(CaptureStats::default());
        let (q, _rx) = bounded(3, usize::MAX, stats.clone());
        let accepted = (0..10).filter(|_| offer(&q, 10)).count();
        assert_eq!(accepted, 3);
        let t = stats.totals();
        assert_eq!((t.enqueued, t.dropped, t.queue_depth), (3, 7, 3));
    }

    #[test]
    fn drops_and_counts_when_queue_full_in_bytes() {
        let stats = Arc::new(CaptureStats::default());
        let one = approx_bytes(1000, 0, 0);
        let (q, mut rx) = bounded(100, one * 2 + approx_bytes(1, 0, 0), stats.clone());
        assert!(offer(&q, 1000));
        assert!(offer(&q, 1000));
        assert!(!offer(&q, 1000), "a third record would pass the byte cap");
        assert!(offer(&q, 1), "a small one still fits");
        let mut out = Vec::new();
        assert_eq!(rx.drain(10, &mut out), 3);
        // Bytes stay reserved until the pipeline releases them (written or failed).
        assert!(!offer(&q, 1000));
        rx.release(out.iter().map(|(_, b)| *b).sum());
        assert!(offer(&q, 1000));
        let t = stats.totals();
        assert_eq!((t.enqueued, t.dropped), (4, 2));
    }

    #[test]
    fn the_record_is_not_built_when_it_is_dropped() {
        let stats = Arc::new(CaptureStats::default());
        let (q, _rx) = bounded(1, usize::MAX, stats);
        assert!(q.offer(10, || record(1)));
        let queued = q.offer(10, || panic!("built a record that had no slot"));
        assert!(!queued);
    }
}
