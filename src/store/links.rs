//! Durable original-to-clone audit links in `replay_links`: a `pending` row before the clone
//! is sent, the host's answer after; reads pick one row per link by [`latest`]'s rule.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One row of `replay_links`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct LinkRow {
    /// The `replay_id` column: ULID of one apply, shared by all its clones.
    pub replay_id: String,
    /// The `original_request_id` column: the captured push that was replayed.
    pub original_request_id: String,
    /// The `original_mutation_id` column: the captured mutation this clone copies.
    pub original_mutation_id: String,
    /// The `clone_mutation_id` column: the clone's ULID mutation id, derived from the idempotency key.
    pub clone_mutation_id: String,
    /// The `position` column: the original mutation's index in its push.
    pub position: u32,
    /// The `actor` column: who asked for the replay.
    pub actor: String,
    /// The `idempotency_key` column: the key the apply was submitted with (one key replays
    /// once).
    pub idempotency_key: String,
    /// The `created_at` column: when the apply wrote its links (UTC, milliseconds).
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub created_at: DateTime<Utc>,
    /// The `status` column: `pending` until the host answered, then `applied`, `rejected`,
    /// `conflict`, `duplicate` or `failed`.
    pub status: String,
    /// The `host_http_status` column: the HTTP status the host answered the push with; 0 while
    /// `pending` or when the host could not be reached.
    pub host_http_status: u16,
    /// The `host_reason` column: the host's reason for a rejected, conflicting or duplicate
    /// clone, or why it failed (a transport error redacted); empty while `pending` or when
    /// applied.
    pub host_reason: String,
    /// The `updated_at` column: when this row was written (UTC, milliseconds); of one
    /// writer's rows for a link, the newest wins.
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub updated_at: DateTime<Utc>,
    /// The `writer` column: the id of the [`Replayer`](crate::replay::Replayer) (dashboard
    /// process) that wrote the row; part of the sorting key, so replicas' rows never collapse
    /// into each other.
    pub writer: String,
}

/// Inserts rows and returns once ClickHouse acknowledged them.
pub async fn write(client: &clickhouse::Client, rows: &[LinkRow]) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<LinkRow>("replay_links").await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

/// The row each link shows, of all rows written for it (by this or another dashboard
/// replica): the one with the highest (status rank, `updated_at`, `writer`). `applied` (the
/// send that changed the host) outranks the other answers (`rejected`, `conflict`), which
/// outrank `duplicate` (what the host answers the second of two replicas that sent the same
/// derived clone id at the same moment), then `failed`, then `pending`; among equals the
/// newest wins, and `writer` breaks exact ties so every read picks the same row. `created_at`
/// is the first writer's. The `replays` view (migration 0010) picks the same row.
pub(crate) fn latest(filter: &str, order: &str) -> String {
    format!(
        "SELECT replay_id, original_request_id, w.1 AS original_mutation_id, clone_mutation_id, w.2 AS position,
                w.3 AS actor, w.4 AS idempotency_key, first_created AS created_at, w.5 AS status,
                w.6 AS host_http_status, w.7 AS host_reason, w.8 AS updated_at, w.9 AS writer
         FROM (
             SELECT replay_id, original_request_id, clone_mutation_id, min(created_at) AS first_created,
                    argMax((original_mutation_id, position, actor, idempotency_key, status, host_http_status, host_reason, updated_at, writer),
                           ({STATUS_RANK}, updated_at, writer)) AS w
             FROM replay_links WHERE {filter}
             GROUP BY original_request_id, replay_id, clone_mutation_id
         )
         ORDER BY {order}"
    )
}

/// The rank of a `status` (higher wins).
const STATUS_RANK: &str =
    "multiIf(status = 'applied', 4, status IN ('rejected', 'conflict'), 3, status = 'duplicate', 2, status = 'failed', 1, 0)";

/// The latest row of every link of one idempotency key's replay of one original request (a
/// key names a replay of that request: the same key on another request is another replay).
pub async fn by_idempotency_key(client: &clickhouse::Client, original_request_id: &str, key: &str) -> clickhouse::error::Result<Vec<LinkRow>> {
    client
        .query_raw(&latest("original_request_id = {id:String} AND idempotency_key = {key:String}", "position"))
        .param("id", original_request_id)
        .param("key", key)
        .fetch_all()
        .await
}

/// The latest row of every link of replays of one original request, newest replay first.
pub async fn for_request(client: &clickhouse::Client, original_request_id: &str) -> clickhouse::error::Result<Vec<LinkRow>> {
    client
        .query_raw(&latest("original_request_id = {id:String}", "created_at DESC, replay_id, position"))
        .param("id", original_request_id)
        .fetch_all()
        .await
}
