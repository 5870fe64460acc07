//! The rows of tether-pro's tables, one type per table written (columns in table order),
//! and the narrow rows read back from them. README "ClickHouse tables" documents each column.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A `sync_requests` row (columns in table order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct RequestRow {
    pub request_id: String,
    pub kind: String,
    pub client_id: String,
    pub client_version: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    pub duration_us: u64,
    pub http_status: u16,
    pub outcome: String,
    pub mutation_count: u32,
    pub applied_count: u32,
    pub rejected_count: u32,
    pub conflict_count: u32,
    pub duplicate_count: u32,
    pub rejected_by_reason: Vec<(String, u32)>,
    pub snapshot_count: u32,
    pub has_more: bool,
    pub request_body: String,
    pub request_body_bytes: u64,
    pub request_body_truncated: bool,
    /// Positions of the mutations whose `payload` was taken out of `request_body` because
    /// their mutation row holds it (or, with `detail_kept` false, because the capture policy
    /// kept none): each payload is stored once. `pipeline::envelope::rebuild` puts them back.
    #[serde(default)]
    pub request_body_moved: Vec<u32>,
    #[serde(default)]
    pub request_content_encoding: String,
    pub response_body: String,
    pub response_body_bytes: u64,
    pub response_body_truncated: bool,
    #[serde(default)]
    pub response_content_encoding: String,
    pub error: String,
    pub trace_id: String,
    pub span_id: String,
    pub replay_of: String,
}

/// A `sync_mutations` row (columns in table order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct MutationRow {
    pub request_id: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    pub client_id: String,
    /// `None` when the timestamp was missing or not a valid epoch-milliseconds integer.
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis::option")]
    pub client_timestamp: Option<DateTime<Utc>>,
    /// The timestamp as sent (JSON text) when it was not valid; empty when valid.
    #[serde(default)]
    pub client_timestamp_raw: String,
    pub version: u64,
    pub outcome: String,
    pub reason: String,
    pub reason_data: String,
    pub payload: String,
    pub state_before: String,
    pub state_after: String,
    pub has_state: bool,
    /// False when the capture policy (`capture.applied`) kept only this row's identity and
    /// outcome: `payload`, states and `diff` are empty.
    #[serde(default = "kept")]
    pub detail_kept: bool,
    pub diff: String,
    pub trace_id: String,
    pub span_id: String,
    /// JSON Pointers (RFC 6901) into `payload` of every value redaction changed: replaced whole
    /// (a sensitive key) or a string whose credentials were cut out. Replay restores exactly
    /// these and nothing else.
    pub redacted_paths: Vec<String>,
    /// True for rows whose `redacted_paths` were recorded (rows stored before migration 4
    /// have false: their paths are unknown).
    pub redacted_paths_recorded: bool,
}

/// The rows of one captured record: its request and its mutations.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub request: RequestRow,
    pub mutations: Vec<MutationRow>,
}

fn kept() -> bool {
    true
}

/// One moved payload as read back: its mutation's position, the row's `payload` and
/// `detail_kept`.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct MovedPayload {
    pub position: u32,
    pub payload: String,
    pub detail_kept: bool,
}

impl MovedPayload {
    /// The payload of a mutation row as `pipeline::envelope::rebuild` takes it.
    pub fn of(row: &MutationRow) -> Self {
        MovedPayload { position: row.position, payload: row.payload.clone(), detail_kept: row.detail_kept }
    }
}

