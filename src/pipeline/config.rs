//! `[capture]`: what is captured, how it is redacted, and how it travels to ClickHouse.

use crate::invalid::{InvalidConfig, ensure_valid};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What is captured and how it travels to ClickHouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Capture on/off. Off: `CaptureLayer` passes requests through untouched, no span, no copy.
    pub enabled: bool,
    /// Keys redacted in addition to the defaults (`pipeline::redact::DEFAULT_KEYS`): their
    /// values are replaced by `[REDACTED]` at any depth of any JSON, matched on normalized
    /// word parts (README "Redaction").
    pub redact_keys: Vec<String>,
    /// Default keys not to redact, each spelled exactly as in the default list (an unknown
    /// name is a configuration error, so a typo cannot silently keep a secret).
    pub redact_keys_disabled: Vec<String>,
    /// Largest stored text of one request or response body; longer bodies are cut with a
    /// marker naming the true size.
    pub body_cap_bytes: usize,
    /// Bytes of one body kept in memory for parsing (per-mutation rows come from it).
    pub retain_bytes: usize,
    /// Most bytes a compressed body (`Content-Encoding` gzip, deflate, br, zstd) is decoded
    /// to by the pipeline; a larger one (a compression bomb) stops here and is stored as
    /// truncated.
    pub decoded_max_bytes: usize,
    /// Queue capacity in records.
    pub queue_records: usize,
    /// Queue capacity in bytes (bodies held); with the write buffer (six batches of at most
    /// `batch_bytes`) this bounds the pipeline's memory.
    pub queue_bytes: usize,
    /// Rows per insert at most.
    pub batch_rows: usize,
    /// Encoded bytes (RowBinary) per insert at most: a batch waiting for ClickHouse holds
    /// that, or less when its chunks are LZ4-compressed.
    pub batch_bytes: usize,
    /// How often finished rows are inserted, in milliseconds.
    pub batch_interval_ms: u64,
    /// How often queued records are processed into rows, in milliseconds (at most the batch
    /// interval): small, so the work is spread out instead of a burst per interval that the
    /// host's tail latency feels.
    pub process_interval_ms: u64,
    /// How long shutdown waits for the last records to be written, in milliseconds.
    pub flush_timeout_ms: u64,
    /// Deadline of one ClickHouse insert attempt, in milliseconds; a timed-out attempt is
    /// retried (same deduplication token) like any transient failure.
    pub insert_timeout_ms: u64,
    /// Nice value of the pipeline thread (Linux): it yields the CPU to the host's request
    /// threads when both want it. 0 keeps the default priority.
    pub pipeline_nice: i32,
    /// What is kept of an applied mutation (README "Capture policy"): `full` (its payload,
    /// states and diff, the default), `sampled` (those of a fraction, `applied_sample_ratio`,
    /// chosen by a hash of the mutation id; the others as `counts`), or `counts` (its row with
    /// ids, model, operation, outcome and version, which every count and chart needs, but no
    /// payload, states or diff). Mutations that were not applied (rejected, conflicts,
    /// duplicates, unprocessed, unknown) are always kept in full.
    pub applied: AppliedDetail,
    /// With `applied = "sampled"`: the fraction of applied mutations kept in full, 0 to 1.
    pub applied_sample_ratio: f64,
    /// The disk spool for batches the write buffer cannot hold (off by default).
    pub spool: SpoolConfig,
    /// Where batches ClickHouse refuses as bad data are kept (on by default).
    pub dead_letter: DeadLetterConfig,
}

/// What the pipeline keeps of an applied mutation (`capture.applied`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliedDetail {
    /// `full`: payload, states and diff of every applied mutation (the default).
    #[default]
    Full,
    /// `sampled`: those of `applied_sample_ratio` of them, chosen by a hash of the mutation id.
    Sampled,
    /// `counts`: the row only, without payload, states or diff (`detail_kept = false`).
    Counts,
}

/// The dead-letter directory (`[capture.dead_letter]`): a batch ClickHouse refuses as bad
/// data (a parse error, a dropped or retyped column) is never retried; its rows, already
/// redacted, are kept here as one JSON file with ClickHouse's error, for inspection and
/// re-insertion once the schema is fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// `capture.dead_letter.enabled`: keep refused batches (default `true`); off, they are only counted.
    pub enabled: bool,
    /// `capture.dead_letter.dir`: where (default `.tether-pro/dead-letter`; created when first needed).
    pub dir: PathBuf,
    /// Bytes on disk at most; a refused batch beyond it is counted but not kept.
    pub max_bytes: u64,
}

impl DeadLetterConfig {
    /// Default `capture.dead_letter.max_bytes`: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig { enabled: true, dir: PathBuf::from(".tether-pro/dead-letter"), max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

/// The disk spool (`[capture.spool]`): when ClickHouse is away longer than the memory
/// buffers last, batches (already redacted) go to files here instead of being dropped, and
/// are written from there when ClickHouse is back, also after a restart or a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// `capture.spool.enabled`: use the disk spool (default `false`).
    pub enabled: bool,
    /// Directory of this process's spool (one process per directory; a lock file enforces it).
    pub dir: PathBuf,
    /// Bytes on disk at most; batches beyond it are dropped and counted.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// Default `capture.spool.max_bytes`: 1 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig { enabled: false, dir: PathBuf::from(".tether-pro/spool"), max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

impl CaptureConfig {
    /// The redactor these settings describe: the default keys, plus `redact_keys`, less
    /// `redact_keys_disabled`. Falls back to the defaults alone when the lists are invalid
    /// (`validate` refuses such a configuration first).
    pub fn redactor(&self) -> super::redact::Redactor {
        super::redact::Redactor::with_defaults(&self.redact_keys, &self.redact_keys_disabled).unwrap_or_default()
    }

    /// How the pipeline builds rows under these settings.
    pub fn row_settings(&self) -> super::RowSettings {
        super::RowSettings {
            redactor: self.redactor(),
            body_cap_bytes: self.body_cap_bytes,
            decoded_max_bytes: self.decoded_max_bytes,
            applied: match self.applied {
                AppliedDetail::Full => super::rows::KeepApplied::All,
                AppliedDetail::Sampled => super::rows::KeepApplied::Fraction(self.applied_sample_ratio),
                AppliedDetail::Counts => super::rows::KeepApplied::None,
            },
        }
    }

    /// Default `capture.body_cap_bytes`: 64 KiB.
    pub const DEFAULT_BODY_CAP_BYTES: usize = 64 * 1024;
    /// Default `capture.retain_bytes`: 16 MiB.
    pub const DEFAULT_RETAIN_BYTES: usize = 16 * 1024 * 1024;
    /// Default `capture.decoded_max_bytes`: 16 MiB.
    pub const DEFAULT_DECODED_MAX_BYTES: usize = 16 * 1024 * 1024;
    /// Default `capture.queue_records`: 10 000.
    pub const DEFAULT_QUEUE_RECORDS: usize = 10_000;
    /// With four batches of [`Self::DEFAULT_BATCH_BYTES`], a memory bound of 56 MiB: issue
    /// 15's budget is the host's resident memory + 64 MiB at saturation.
    pub const DEFAULT_QUEUE_BYTES: usize = 32 * 1024 * 1024;
    /// Default `capture.batch_rows`: 30 000 (ClickHouse's insert guidance: 10 000 to 100 000
    /// rows per insert, about one insert per second).
    pub const DEFAULT_BATCH_ROWS: usize = 30_000;
    /// Default `capture.batch_bytes`: 6 MiB of encoded rows (about 12 000 of the host
    /// bench's mutation rows).
    pub const DEFAULT_BATCH_BYTES: usize = 6 * 1024 * 1024;
    /// Default `capture.batch_interval_ms`: 1 s.
    pub const DEFAULT_BATCH_INTERVAL_MS: u64 = 1_000;
    /// Default `capture.process_interval_ms`: 50 ms.
    pub const DEFAULT_PROCESS_INTERVAL_MS: u64 = 50;
    /// Default `capture.flush_timeout_ms`: 5 s.
    pub const DEFAULT_FLUSH_TIMEOUT_MS: u64 = 5_000;
    /// Default `capture.insert_timeout_ms`: 10 s (the writer's own default).
    pub const DEFAULT_INSERT_TIMEOUT_MS: u64 = crate::store::writer::DEFAULT_INSERT_TIMEOUT.as_millis() as u64;
    /// Default `capture.pipeline_nice`: 19, the lowest priority.
    pub const DEFAULT_PIPELINE_NICE: i32 = 19;
    /// Default `capture.applied_sample_ratio`: 0.1.
    pub const DEFAULT_APPLIED_SAMPLE_RATIO: f64 = 0.1;

    /// Checks what serde cannot: minimums (`queue_records`, `batch_rows`, the intervals and
    /// `insert_timeout_ms` at least 1; `queue_bytes` and `decoded_max_bytes` at least 1024;
    /// `body_cap_bytes` at least 64; `spool.max_bytes` at least 1 MiB when the spool is on),
    /// `pipeline_nice` in 0..=19, `applied_sample_ratio` in 0..=1, non-empty directories of
    /// what is enabled, and the key lists. The error names the key (`capture.…`).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        ensure_valid!(self.queue_records >= 1, "capture.queue_records must be at least 1");
        ensure_valid!(self.queue_bytes >= 1024, "capture.queue_bytes must be at least 1024");
        ensure_valid!(self.batch_rows >= 1, "capture.batch_rows must be at least 1");
        ensure_valid!(self.batch_interval_ms >= 1, "capture.batch_interval_ms must be at least 1");
        ensure_valid!(self.process_interval_ms >= 1, "capture.process_interval_ms must be at least 1");
        ensure_valid!(self.insert_timeout_ms >= 1, "capture.insert_timeout_ms must be at least 1");
        ensure_valid!(
            !self.dead_letter.enabled || !self.dead_letter.dir.as_os_str().is_empty(),
            "capture.dead_letter.dir is empty"
        );
        ensure_valid!((0..=19).contains(&self.pipeline_nice), "capture.pipeline_nice must be 0..=19");
        ensure_valid!(self.body_cap_bytes >= 64, "capture.body_cap_bytes must be at least 64");
        ensure_valid!(
            (0.0..=1.0).contains(&self.applied_sample_ratio),
            "capture.applied_sample_ratio must be between 0 and 1"
        );
        ensure_valid!(self.decoded_max_bytes >= 1024, "capture.decoded_max_bytes must be at least 1024");
        ensure_valid!(self.redact_keys.iter().all(|k| !k.trim().is_empty()), "capture.redact_keys has an empty key");
        super::redact::Redactor::with_defaults(&self.redact_keys, &self.redact_keys_disabled).map_err(|e| InvalidConfig(e.to_string()))?;
        ensure_valid!(
            !self.spool.enabled || self.spool.max_bytes >= 1024 * 1024,
            "capture.spool.max_bytes must be at least 1 MiB"
        );
        ensure_valid!(!self.spool.enabled || !self.spool.dir.as_os_str().is_empty(), "capture.spool.dir is empty");
        Ok(())
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: true,
            redact_keys: Vec::new(),
            redact_keys_disabled: Vec::new(),
            body_cap_bytes: Self::DEFAULT_BODY_CAP_BYTES,
            retain_bytes: Self::DEFAULT_RETAIN_BYTES,
            decoded_max_bytes: Self::DEFAULT_DECODED_MAX_BYTES,
            queue_records: Self::DEFAULT_QUEUE_RECORDS,
            queue_bytes: Self::DEFAULT_QUEUE_BYTES,
            batch_rows: Self::DEFAULT_BATCH_ROWS,
            batch_bytes: Self::DEFAULT_BATCH_BYTES,
            batch_interval_ms: Self::DEFAULT_BATCH_INTERVAL_MS,
            process_interval_ms: Self::DEFAULT_PROCESS_INTERVAL_MS,
            flush_timeout_ms: Self::DEFAULT_FLUSH_TIMEOUT_MS,
            insert_timeout_ms: Self::DEFAULT_INSERT_TIMEOUT_MS,
            pipeline_nice: Self::DEFAULT_PIPELINE_NICE,
            applied: AppliedDetail::Full,
            applied_sample_ratio: Self::DEFAULT_APPLIED_SAMPLE_RATIO,
            spool: SpoolConfig::default(),
            dead_letter: DeadLetterConfig::default(),
        }
    }
}

