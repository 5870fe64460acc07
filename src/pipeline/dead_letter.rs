//! The dead-letter directory (`[capture.dead_letter]`): batches ClickHouse refused as bad
//! data (Code 117, 53, 16, ...: a parse error, a dropped or retyped column). Retrying cannot
//! help, so they are not retried; they are kept here instead of vanishing.
//!
//! - One file per refused batch, `<ulid>-<records>.json`: `{"error": ..., "batch": ...}` with
//!   the batch in the spool's format (token, records, rows), so it can be re-inserted once
//!   the schema is fixed, and the same token keeps that from doubling anything.
//! - Rows are already redacted: nothing here that ClickHouse would not hold. ClickHouse's
//!   error text can quote a value of the refused row; it is capped, and comes from those
//!   same redacted rows.
//! - Bounded by `max_bytes`; a batch beyond it is counted but not kept (stderr says so).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spool::SpooledBatch;
use super::config::DeadLetterConfig;

/// Longest ClickHouse error text kept with a batch.
const ERROR_CAP: usize = 2048;

/// One dead-letter file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// ClickHouse's error, capped.
    pub error: String,
    /// The refused batch, in the spool's format (token, record count, rows).
    pub batch: SpooledBatch,
}

/// The dead-letter directory of one process.
#[derive(Debug)]
pub struct DeadLetters {
    dir: PathBuf,
    max_bytes: u64,
}

impl DeadLetters {
    /// The directory `config` describes; `None` when `capture.dead_letter.enabled` is false.
    /// Touches no disk: the directory is created by the first [`keep`](Self::keep).
    pub fn new(config: &DeadLetterConfig) -> Option<DeadLetters> {
        config.enabled.then(|| DeadLetters { dir: config.dir.clone(), max_bytes: config.max_bytes })
    }

    /// Keeps a refused batch durably (written to `.tmp`, fsynced, renamed); returns its path.
    pub fn keep(&self, error: &str, batch: &SpooledBatch) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let mut error = error.to_owned();
        if error.len() > ERROR_CAP {
            let cut = (0..=ERROR_CAP).rev().find(|i| error.is_char_boundary(*i)).unwrap_or(0);
            error.truncate(cut);
            error.push('…');
        }
        let text = serde_json::to_vec(&DeadLetter { error, batch: batch.clone() }).map_err(io::Error::other)?;
        let used: u64 = fs::read_dir(&self.dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        if used + text.len() as u64 > self.max_bytes {
            return Err(io::Error::other(format!(
                "the dead-letter directory {} is full ({} bytes)",
                self.dir.display(),
                self.max_bytes
            )));
        }
        let id = ulid::Ulid::new();
        let path = self.dir.join(format!("{id}-{}.json", batch.records));
        let tmp = self.dir.join(format!("{id}.tmp"));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(path)
    }
}

/// Reads every kept batch in a directory, oldest first (for operators' tools and tests).
pub fn read_all(dir: &std::path::Path) -> io::Result<Vec<DeadLetter>> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&fs::read(p)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_batches_with_a_capped_error_and_honours_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DeadLetterConfig { enabled: true, dir: dir.path().join("dl"), max_bytes: 4096 };
        let dl = DeadLetters::new(&cfg).unwrap();
        let batch = SpooledBatch::new("tok".into(), 0, Vec::new(), Vec::new());
        dl.keep(&"Code: 16. x".repeat(1000), &batch).unwrap();
        let kept = read_all(&cfg.dir).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].batch, batch);
        assert!(kept[0].error.len() <= ERROR_CAP + '…'.len_utf8() && kept[0].error.starts_with("Code: 16."));
        // 4096 bytes hold one more such file, not three.
        dl.keep("e", &batch).unwrap();
        let full = (0..3).map(|_| dl.keep(&"y".repeat(1500), &batch)).filter(Result::is_err).count();
        assert!(full >= 1, "the byte cap refuses batches");
        assert!(DeadLetters::new(&DeadLetterConfig { enabled: false, ..cfg }).is_none());
    }
}
