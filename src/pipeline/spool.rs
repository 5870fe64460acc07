//! The disk spool (off by default, `[capture.spool]`): when the write buffer is full because
//! ClickHouse is down or slower than the traffic, finished batches go to files instead of
//! being dropped, and are written to ClickHouse from there once it answers again, also after
//! a restart or a `kill -9`.
//!
//! - Files hold rows that are already redacted: nothing on disk that ClickHouse would not hold.
//! - One file per batch, named `<ulid>-<records>.batch`: the name sorts by age, gives the age
//!   (the ULID's milliseconds) and the record count without opening the file.
//! - Written to `.tmp`, fsynced, renamed, directory fsynced: a crash leaves a whole batch or a
//!   `.tmp` that the next start deletes, never half a batch.
//! - The batch's insert deduplication token travels in the file, so a batch whose insert
//!   landed just before a crash (file not yet removed) is not doubled when written again.
//! - A lock file keeps two processes from draining one directory twice.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::rows::{MutationRow, RequestRow};
use crate::capture::CaptureStats;
use super::config::SpoolConfig;

/// Format version written into every file; a file of another version is set aside, not read.
const VERSION: u32 = 1;

/// One batch as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpooledBatch {
    /// File format version (1); a file of another version is not read, and is set aside.
    pub version: u32,
    /// The insert deduplication token the batch is always written with.
    pub token: String,
    /// Captured requests (records) the batch holds.
    pub records: u64,
    /// The batch's `sync_requests` rows, already redacted.
    pub requests: Vec<RequestRow>,
    /// The batch's `sync_mutations` rows, already redacted.
    pub mutations: Vec<MutationRow>,
}

impl SpooledBatch {
    /// A batch in the current format version.
    pub fn new(token: String, records: u64, requests: Vec<RequestRow>, mutations: Vec<MutationRow>) -> Self {
        SpooledBatch { version: VERSION, token, records, requests, mutations }
    }
}

/// A spooled file: its id (age) and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolEntry {
    pub id: Ulid,
    pub records: u64,
    pub bytes: u64,
}

/// The spool directory of one process. All calls come from the pipeline thread.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    files: BTreeMap<Ulid, SpoolEntry>,
    bytes: u64,
    stats: Arc<CaptureStats>,
    /// Held (and locked) for the life of the spool.
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).field("files", &self.files.len()).field("bytes", &self.bytes).finish()
    }
}

/// Why a batch could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool already holds `max_bytes`: the batch is dropped (and counted).
    #[error("the disk spool is full ({0} bytes)")]
    Full(u64),
    #[error("writing to the disk spool: {0}")]
    Io(#[from] io::Error),
}

impl Spool {
    /// Opens (creating) the directory, locks it, deletes torn `.tmp` files and indexes the
    /// batches a previous run left.
    pub fn open(config: &SpoolConfig, stats: Arc<CaptureStats>) -> io::Result<Spool> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir)?;
        let lock = File::options().create(true).truncate(false).write(true).open(dir.join("lock"))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another process (each process needs its own spool directory)", dir.display()),
            ),
            fs::TryLockError::Error(e) => e,
        })?;
        let mut spool = Spool { dir, max_bytes: config.max_bytes, files: BTreeMap::new(), bytes: 0, stats, _lock: lock };
        for entry in fs::read_dir(&spool.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
            } else if let Some(parsed) = parse_name(&name) {
                let bytes = entry.metadata()?.len();
                spool.files.insert(parsed.0, SpoolEntry { id: parsed.0, records: parsed.1, bytes });
                spool.bytes += bytes;
            }
        }
        spool.publish();
        Ok(spool)
    }

    /// The spool directory (`capture.spool.dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a batch durably. Refuses it when the spool would pass `max_bytes`.
    pub fn push(&mut self, batch: &SpooledBatch) -> Result<SpoolEntry, SpoolError> {
        let text = serde_json::to_vec(batch).map_err(io::Error::other)?;
        let bytes = text.len() as u64;
        if self.bytes + bytes > self.max_bytes {
            return Err(SpoolError::Full(self.max_bytes));
        }
        let id = Ulid::new();
        let final_path = self.dir.join(file_name(id, batch.records));
        let tmp = self.dir.join(format!("{id}.tmp"));
        let written = (|| {
            let mut w = BufWriter::new(File::create(&tmp)?);
            w.write_all(&text)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&tmp, &final_path)?;
            // The rename itself must reach the disk before the batch counts as spooled.
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let entry = SpoolEntry { id, records: batch.records, bytes };
        self.files.insert(id, entry);
        self.bytes += bytes;
        self.stats.spool_spilled.fetch_add(batch.records, Ordering::Relaxed);
        self.publish();
        Ok(entry)
    }

    /// The oldest spooled batch, if any.
    pub fn oldest(&self) -> Option<SpoolEntry> {
        self.files.values().next().copied()
    }

    /// Reads a spooled batch. A file that does not parse (or has another format version) is
    /// an `InvalidData` error; [`Spool::set_aside`] moves it out of the way.
    pub fn read(&self, entry: &SpoolEntry) -> io::Result<SpooledBatch> {
        let text = fs::read(self.dir.join(file_name(entry.id, entry.records)))?;
        let batch: SpooledBatch = serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if batch.version != VERSION {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("spool format version {}", batch.version)));
        }
        Ok(batch)
    }

    /// Forgets a batch that was written to ClickHouse.
    pub fn remove(&mut self, entry: &SpoolEntry) -> io::Result<()> {
        self.forget(entry);
        fs::remove_file(self.dir.join(file_name(entry.id, entry.records)))
    }

    /// Renames an unreadable batch to `.corrupt` (kept for inspection, never retried).
    pub fn set_aside(&mut self, entry: &SpoolEntry) -> io::Result<()> {
        self.forget(entry);
        let path = self.dir.join(file_name(entry.id, entry.records));
        fs::rename(&path, path.with_extension("corrupt"))
    }

    fn forget(&mut self, entry: &SpoolEntry) {
        if self.files.remove(&entry.id).is_some() {
            self.bytes -= entry.bytes;
        }
        self.publish();
    }

    /// Copies size, count and age of the oldest batch into the shared counters.
    fn publish(&self) {
        let s = &self.stats;
        s.spool_files.store(self.files.len() as u64, Ordering::Relaxed);
        s.spool_bytes.store(self.bytes, Ordering::Relaxed);
        s.spool_records.store(self.files.values().map(|e| e.records).sum(), Ordering::Relaxed);
        s.spool_oldest_unix_ms.store(self.oldest().map_or(0, |e| e.id.timestamp_ms()), Ordering::Relaxed);
    }
}

fn file_name(id: Ulid, records: u64) -> String {
    format!("{id}-{records}.batch")
}

fn parse_name(name: &str) -> Option<(Ulid, u64)> {
    let (id, records) = name.strip_suffix(".batch")?.split_once('-')?;
    Some((Ulid::from_string(id).ok()?, records.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig { enabled: true, dir: dir.to_path_buf(), max_bytes }
    }

    fn batch(records: u64) -> SpooledBatch {
        let request = RequestRow {
            request_id: Ulid::new().to_string(),
            kind: "push".into(),
            client_id: "c".into(),
            client_version: "1".into(),
            started_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6), // ClickHouse keeps µs
            duration_us: 1,
            http_status: 200,
            outcome: "ok".into(),
            mutation_count: 0,
            applied_count: 0,
            rejected_count: 0,
            conflict_count: 0,
            duplicate_count: 0,
            rejected_by_reason: vec![("validation_failed".into(), 1)],
            snapshot_count: 0,
            has_more: false,
            request_body: "{\"a\":\"[REDACTED]\"}".into(),
            request_body_bytes: 10,
            request_body_truncated: false,
            request_body_moved: Vec::new(),
            request_content_encoding: String::new(),
            response_body: String::new(),
            response_body_bytes: 0,
            response_body_truncated: false,
            response_content_encoding: String::new(),
            error: String::new(),
            trace_id: String::new(),
            span_id: String::new(),
            replay_of: String::new(),
        };
        SpooledBatch::new(Ulid::new().to_string(), records, vec![request; records as usize], Vec::new())
    }

    #[test]
    fn batches_survive_reopening_in_age_order_with_their_token() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CaptureStats::default());
        let (a, b) = (batch(2), batch(3));
        {
            let mut spool = Spool::open(&config(dir.path(), u64::MAX), stats.clone()).unwrap();
            spool.push(&a).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
            spool.push(&b).unwrap();
            assert_eq!(stats.spool_records.load(Ordering::Relaxed), 5);
            assert_eq!(stats.spool_spilled.load(Ordering::Relaxed), 5);
        }
        // A torn write of a third batch, as a crash mid-write leaves it.
        fs::write(dir.path().join(format!("{}.tmp", Ulid::new())), b"{\"version\":1,\"tok").unwrap();
        let stats = Arc::new(CaptureStats::default());
        let mut spool = Spool::open(&config(dir.path(), u64::MAX), stats.clone()).unwrap();
        assert_eq!((stats.spool_files.load(Ordering::Relaxed), stats.spool_records.load(Ordering::Relaxed)), (2, 5));
        assert!(stats.spool_oldest_unix_ms.load(Ordering::Relaxed) > 0);
        let first = spool.oldest().unwrap();
        assert_eq!(spool.read(&first).unwrap(), a, "oldest first, rows and token intact");
        spool.remove(&first).unwrap();
        let second = spool.oldest().unwrap();
        assert_eq!(spool.read(&second).unwrap(), b);
        spool.remove(&second).unwrap();
        assert!(spool.oldest().is_none());
        assert_eq!((stats.spool_files.load(Ordering::Relaxed), stats.spool_bytes.load(Ordering::Relaxed)), (0, 0));
        assert_eq!(stats.spool_oldest_unix_ms.load(Ordering::Relaxed), 0);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("lock")], "the torn .tmp was deleted");
    }

    #[test]
    fn refuses_batches_past_the_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CaptureStats::default());
        let one = serde_json::to_vec(&batch(1)).unwrap().len() as u64;
        let mut spool = Spool::open(&config(dir.path(), one * 2 + one / 2), stats.clone()).unwrap();
        spool.push(&batch(1)).unwrap();
        spool.push(&batch(1)).unwrap();
        assert!(matches!(spool.push(&batch(1)), Err(SpoolError::Full(_))));
        assert_eq!(stats.spool_files.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_second_process_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(&config(dir.path(), u64::MAX), Arc::default()).unwrap();
        let second = Spool::open(&config(dir.path(), u64::MAX), Arc::default()).unwrap_err();
        assert!(second.to_string().contains("in use"), "{second}");
    }

    #[test]
    fn an_unreadable_batch_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CaptureStats::default());
        let mut spool = Spool::open(&config(dir.path(), u64::MAX), stats.clone()).unwrap();
        let entry = spool.push(&batch(1)).unwrap();
        fs::write(dir.path().join(file_name(entry.id, 1)), b"not json").unwrap();
        let err = spool.read(&entry).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        spool.set_aside(&entry).unwrap();
        assert!(spool.oldest().is_none());
        assert!(dir.path().join(format!("{}-1.corrupt", entry.id)).exists());
    }
}
