//! The rows of tether-pro's tables, one type per table written (columns in table order),
//! and the narrow rows read back from them. README "ClickHouse tables" documents each column.

use std::sync::Arc;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A `sync_requests` row (columns in table order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct RequestRow {
    /// The `request_id` column: the ULID tether-pro minted when the request arrived.
    pub request_id: String,
    /// The `kind` column: `push` or `pull`.
    pub kind: String,
    /// The `client_id` column: the client id from the request body.
    pub client_id: String,
    /// The `client_version` column: the `X-Tether-Client-Version` header.
    pub client_version: String,
    /// The `started_at` column: arrival time (UTC, microseconds).
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    /// The `duration_us` column: time until the end of the response body, in microseconds.
    pub duration_us: u64,
    /// The `http_status` column: the host's HTTP status.
    pub http_status: u16,
    /// The `outcome` column: `ok`, `partial`, `rejected`, `conflict`, `error` or `unknown`
    /// (the client went away before the answer).
    pub outcome: String,
    /// The `mutation_count` column: mutations in the push.
    pub mutation_count: u32,
    /// The `applied_count` column: mutations applied.
    pub applied_count: u32,
    /// The `rejected_count` column: mutations rejected (duplicates excluded).
    pub rejected_count: u32,
    /// The `conflict_count` column: mutations that conflicted.
    pub conflict_count: u32,
    /// The `duplicate_count` column: duplicate mutations.
    pub duplicate_count: u32,
    /// The `rejected_by_reason` column (a `Map`): rejections per reason.
    pub rejected_by_reason: Vec<(String, u32)>,
    /// The `snapshot_count` column: snapshots a pull returned.
    pub snapshot_count: u32,
    /// The `has_more` column: the pull answer's `has_more`.
    pub has_more: bool,
    /// The `request_body` column: redacted JSON text (decoded when it was compressed), capped
    /// at `capture.body_cap_bytes`; for a push, the envelope without the payloads in
    /// `request_body_moved`.
    pub request_body: String,
    /// The `request_body_bytes` column: true size on the wire in bytes (compressed when it
    /// was), before any cap.
    pub request_body_bytes: u64,
    /// The `request_body_truncated` column: `request_body` is not the whole body (cut at
    /// `body_cap_bytes` or `retain_bytes`, decoded past `decoded_max_bytes`, or incomplete);
    /// the text ends with a marker saying which.
    pub request_body_truncated: bool,
    /// Positions of the mutations whose `payload` was taken out of `request_body` because
    /// their mutation row holds it (or, with `detail_kept` false, because the capture policy
    /// kept none): each payload is stored once. `pipeline::envelope::rebuild` puts them back.
    #[serde(default)]
    pub request_body_moved: Vec<u32>,
    /// The `request_content_encoding` column: the `Content-Encoding` the capture layer saw and
    /// the pipeline undid (`gzip`, `br`, ...); empty: none, or the capture layer sits inside
    /// the decompression.
    #[serde(default)]
    pub request_content_encoding: String,
    /// The `response_body` column: redacted JSON text (decoded when it was compressed), capped
    /// at `capture.body_cap_bytes`.
    pub response_body: String,
    /// The `response_body_bytes` column: true size on the wire in bytes (compressed when it
    /// was), before any cap.
    pub response_body_bytes: u64,
    /// The `response_body_truncated` column: `response_body` is not the whole body (cut at
    /// `body_cap_bytes` or `retain_bytes`, decoded past `decoded_max_bytes`, or incomplete);
    /// the text ends with a marker saying which.
    pub response_body_truncated: bool,
    /// The `response_content_encoding` column: the `Content-Encoding` the capture layer saw and
    /// the pipeline undid; empty: none, or the capture layer sits inside the decompression.
    #[serde(default)]
    pub response_content_encoding: String,
    /// The `error` column: why the request failed, if it did (e.g. `client disconnected before
    /// the response`), plus what capture found wrong with the request body (undecodable
    /// encoding, broken strings and in which mutations).
    pub error: String,
    /// The `trace_id` column: W3C trace id of the request's span.
    pub trace_id: String,
    /// The `span_id` column: W3C span id of the request's span.
    pub span_id: String,
    /// The `replay_of` column: the original `request_id` when this request was a replay; else
    /// empty.
    pub replay_of: String,
}

/// A `sync_mutations` row (columns in table order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct MutationRow {
    /// The `request_id` column: the push this mutation came in. (The four columns a push's
    /// rows share, `request_id`, `client_id`, `trace_id` and `span_id`, share one allocation.)
    pub request_id: Arc<str>,
    /// The `started_at` column: the push's arrival time (UTC, microseconds).
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    /// The `position` column: the mutation's index in its push's batch, from 0.
    pub position: u32,
    /// The `mutation_id` column: the client's ULID for this mutation.
    pub mutation_id: String,
    /// The `entity_id` column: the client's ULID for the record.
    pub entity_id: String,
    /// The `model` column: the record's model, e.g. `Task`. (`model`, `operation` and
    /// `outcome` take a handful of values: a push's rows share one allocation per value.)
    pub model: Arc<str>,
    /// The `operation` column: `create`, `update` or `delete`.
    pub operation: Arc<str>,
    /// The `client_id` column: the pushing client's id.
    pub client_id: Arc<str>,
    /// `None` when the timestamp was missing or not a valid epoch-milliseconds integer.
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis::option")]
    pub client_timestamp: Option<DateTime<Utc>>,
    /// The timestamp as sent (JSON text) when it was not valid; empty when valid.
    #[serde(default)]
    pub client_timestamp_raw: String,
    /// The `version` column: the mutation's per-entity version.
    pub version: u64,
    /// The `outcome` column: `applied`, `rejected`, `conflict`, `duplicate`, `unprocessed` (the
    /// whole push failed, or the answer did not mention it) or `unknown` (the client went away
    /// before the answer).
    pub outcome: Arc<str>,
    /// The `reason` column: the host's rejection reason, empty when applied; for `unprocessed`,
    /// `http_<status>` or `invalid_string`; for `unknown`, `client_disconnected`.
    pub reason: String,
    /// The `reason_data` column: redacted JSON: validation messages, or the conflict's server
    /// state.
    pub reason_data: String,
    /// The `payload` column: the redacted JSON payload, numbers with the digits sent, broken
    /// strings as U+FFFD.
    pub payload: String,
    /// The `state_before` column: redacted JSON record state before the mutation; empty when
    /// the host did not report it.
    pub state_before: String,
    /// The `state_after` column: redacted JSON record state after the mutation; empty when the
    /// host did not report it.
    pub state_after: String,
    /// The `has_state` column: the host reported the before/after states.
    pub has_state: bool,
    /// False when the capture policy (`capture.applied`) kept only this row's identity and
    /// outcome: `payload`, states and `diff` are empty.
    #[serde(default = "kept")]
    pub detail_kept: bool,
    /// The `diff` column: JSON array of `{path, change, old, new}` (`change`: `added`,
    /// `removed` or `changed`); numbers compare by value.
    pub diff: String,
    /// The `trace_id` column: W3C trace id of the request's span.
    pub trace_id: Arc<str>,
    /// The `span_id` column: W3C span id of the request's span.
    pub span_id: Arc<str>,
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
    /// The `sync_requests` row.
    pub request: RequestRow,
    /// Its `sync_mutations` rows, one per pushed mutation (empty for a pull).
    pub mutations: Vec<MutationRow>,
}

fn kept() -> bool {
    true
}

/// One moved payload as read back: its mutation's position, the row's `payload` and
/// `detail_kept`.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, serde::Deserialize)]
pub struct MovedPayload {
    /// The mutation's `position` in its push.
    pub position: u32,
    /// Its row's `payload` column.
    pub payload: String,
    /// Its row's `detail_kept` column.
    pub detail_kept: bool,
}

impl MovedPayload {
    /// The payload of a mutation row as `pipeline::envelope::rebuild` takes it.
    pub fn of(row: &MutationRow) -> Self {
        MovedPayload { position: row.position, payload: row.payload.clone(), detail_kept: row.detail_kept }
    }
}

