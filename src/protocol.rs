//! The Tether wire format (see PROTOCOL.md): exact field names, enum values and JSON shapes.
//!
//! Parsing is tolerant the way a sync server must be: unknown fields are ignored, absent
//! arrays and payloads are empty, and an unknown rejection reason is kept verbatim rather
//! than failing the whole response (we observe servers we did not write).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Header every Tether client sends with its app/SDK version.
pub const CLIENT_VERSION_HEADER: &str = "x-tether-client-version";
/// Path of the push endpoint.
pub const PUSH_PATH: &str = "/tether/push";
/// Path of the pull endpoint.
pub const PULL_PATH: &str = "/tether/pull";
/// Default sync-key column name.
pub const SYNC_KEY: &str = "tether_id";

/// A JSON object: payloads and record states.
pub type Object = Map<String, Value>;

/// A record's current state, as a state lookup answers it (the reference server's
/// `GET /tether/state/{model}/{entity_id}`; replay reads the host's record through it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordState {
    /// Short model name, e.g. `Task`.
    pub model: String,
    /// ULID of the record (its sync key value).
    pub entity_id: String,
    /// True when the record is soft-deleted (a tombstone).
    pub deleted: bool,
    /// The record's per-entity version: the highest mutation `version` applied to it.
    pub version: u64,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// `updated_at` in microseconds since the Unix epoch.
    pub updated_at_us: i64,
    /// Fields with the sync key, as a conflict's `server_state` shows them.
    pub state: Object,
}

/// `null` and absent both mean "empty object" for payloads.
fn object_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
    Ok(Option::<Object>::deserialize(d)?.unwrap_or_default())
}

/// `null` and absent both mean "empty list" for arrays.
fn vec_or_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `POST /tether/push` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Identifies the device/app instance (a ULID unless configured).
    pub client_id: String,
    /// The batch, processed in order; absent or `null` = empty.
    #[serde(default, deserialize_with = "vec_or_null")]
    pub mutations: Vec<Mutation>,
}

/// One immutable client write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mutation {
    /// ULID; the idempotency key.
    pub mutation_id: String,
    /// ULID of the record (its sync key value).
    pub entity_id: String,
    /// Short model name, e.g. `Task`.
    pub model: String,
    /// `create` | `update` | `delete`.
    pub operation: Operation,
    /// Full current values of the synced fields for create/update; empty for delete.
    #[serde(default, deserialize_with = "object_or_null")]
    pub payload: Object,
    /// Per-entity counter starting at 1.
    pub version: u64,
    /// Client time of the write, milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A mutation's `operation`: `create` | `update` | `delete` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `create`: idempotent, an existing record with that sync key is updated.
    Create,
    /// `update`: of a record the server does not have, rejected `not_found`.
    Update,
    /// `delete`: empty payload; of a record the server does not have, rejected `not_found`.
    Delete,
}

impl Operation {
    /// The wire value: `create`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /tether/push` response. Each array may be absent on the wire (= empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// `mutation_id`s of the mutations applied.
    #[serde(default, deserialize_with = "vec_or_null")]
    pub applied: Vec<String>,
    /// Mutations not applied for any reason but a conflict (`duplicate` included).
    #[serde(default, deserialize_with = "vec_or_null")]
    pub rejected: Vec<Rejection>,
    /// Mutations not applied because of a conflict: reason `conflict`, `data` as [`ConflictData`].
    #[serde(default, deserialize_with = "vec_or_null")]
    pub conflicts: Vec<Rejection>,
}

/// An entry of `rejected` or `conflicts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The `mutation_id` of the mutation not applied.
    pub mutation_id: String,
    /// Why it was not applied.
    pub reason: RejectionReason,
    /// Reason-specific details: [`ValidationData`] for `validation_failed`, [`ConflictData`]
    /// for `conflict`; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Why a mutation was not applied. Unknown reasons from other servers are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum RejectionReason {
    /// `data.messages`: field -> list of messages.
    ValidationFailed,
    /// Transient; clients retry up to 3 times.
    Error,
    /// Update/delete of a record the server does not have.
    NotFound,
    /// Mutation id already applied; clients count it as synced.
    Duplicate,
    /// `data.server_state` and `data.server_updated_at`.
    Conflict,
    /// Any other reason, kept verbatim as received.
    Other(String),
}

impl RejectionReason {
    /// The wire value, e.g. `validation_failed`; an [`Other`](Self::Other) reason verbatim.
    pub fn as_str(&self) -> &str {
        match self {
            RejectionReason::ValidationFailed => "validation_failed",
            RejectionReason::Error => "error",
            RejectionReason::NotFound => "not_found",
            RejectionReason::Duplicate => "duplicate",
            RejectionReason::Conflict => "conflict",
            RejectionReason::Other(s) => s,
        }
    }
}

impl From<String> for RejectionReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "validation_failed" => RejectionReason::ValidationFailed,
            "error" => RejectionReason::Error,
            "not_found" => RejectionReason::NotFound,
            "duplicate" => RejectionReason::Duplicate,
            "conflict" => RejectionReason::Conflict,
            _ => RejectionReason::Other(s),
        }
    }
}

impl From<RejectionReason> for String {
    fn from(r: RejectionReason) -> String {
        r.as_str().to_owned()
    }
}

impl fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `data` of a `validation_failed` rejection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationData {
    /// Field -> list of messages, e.g. `{"title": ["The title field is required."]}`.
    pub messages: BTreeMap<String, Vec<String>>,
}

/// `data` of a conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictData {
    /// The record's current server state, sync key (`tether_id`) included.
    pub server_state: Object,
    /// RFC 3339, UTC.
    pub server_updated_at: String,
}

impl Rejection {
    /// A `validation_failed` rejection carrying `data.messages`.
    pub fn validation_failed(mutation_id: impl Into<String>, data: ValidationData) -> Self {
        Rejection {
            mutation_id: mutation_id.into(),
            reason: RejectionReason::ValidationFailed,
            data: Some(serde_json::to_value(data).expect("plain data serialises")),
        }
    }

    /// A `conflicts` entry (reason `conflict`) carrying `data.server_state` and
    /// `data.server_updated_at`.
    pub fn conflict(mutation_id: impl Into<String>, data: ConflictData) -> Self {
        Rejection {
            mutation_id: mutation_id.into(),
            reason: RejectionReason::Conflict,
            data: Some(serde_json::to_value(data).expect("plain data serialises")),
        }
    }

    /// A rejection with this `reason` and no `data` (e.g. `not_found`, `duplicate`, `error`).
    pub fn simple(mutation_id: impl Into<String>, reason: RejectionReason) -> Self {
        Rejection { mutation_id: mutation_id.into(), reason, data: None }
    }
}

/// `POST /tether/pull` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Identifies the device/app instance (a ULID unless configured).
    pub client_id: String,
    /// Microseconds; `null` on a first, full pull.
    #[serde(default)]
    pub last_sync_cursor: Option<i64>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `POST /tether/pull` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Records changed since `last_sync_cursor`, at most `limit`; absent or `null` = empty.
    #[serde(default, deserialize_with = "vec_or_null")]
    pub snapshots: Vec<Snapshot>,
    /// Microseconds; `null` only when nothing has ever been synced to this client.
    #[serde(default)]
    pub new_sync_cursor: Option<i64>,
    /// More changes remain: the client pulls again from `new_sync_cursor`. Absent = `false`.
    #[serde(default)]
    pub has_more: bool,
}

/// One record's authoritative state in a pull response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// ULID of the record (its sync key value).
    pub entity_id: String,
    /// Short model name, e.g. `Task`.
    pub model: String,
    /// `upsert` | `delete`.
    pub operation: SnapshotOperation,
    /// The record's synced fields for `upsert`; empty for `delete`. Absent or `null` = empty.
    #[serde(default, deserialize_with = "object_or_null")]
    pub payload: Object,
}

/// A snapshot's `operation`: `upsert` | `delete` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOperation {
    /// `upsert`: the record exists on the server with `payload`.
    Upsert,
    /// `delete`: the record was deleted on the server.
    Delete,
}

/// True when `s` is a 26-character Crockford base32 ULID (either case) within 128 bits.
pub fn is_ulid(s: &str) -> bool {
    // The `ulid` crate silently drops the bits of a first character above `7`
    // ("8ZZ…" decodes as "0ZZ…"); the ULID spec says such strings must be rejected.
    s.len() == 26 && matches!(s.as_bytes()[0], b'0'..=b'7') && ulid::Ulid::from_string(s).is_ok()
}
