//! Durable original-to-clone audit links in `replay_links` (ReplacingMergeTree on
//! `updated_at`: a `pending` row before the clone is sent, the host's answer after).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One row of `replay_links`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct LinkRow {
    pub replay_id: String,
    pub original_request_id: String,
    pub original_mutation_id: String,
    pub clone_mutation_id: String,
    pub position: u32,
    pub actor: String,
    pub idempotency_key: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub host_http_status: u16,
    pub host_reason: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub updated_at: DateTime<Utc>,
}

/// Inserts rows and returns once ClickHouse acknowledged them.
pub async fn write(client: &clickhouse::Client, rows: &[LinkRow]) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<LinkRow>("replay_links").await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

const COLUMNS: &str = "replay_id, original_request_id, original_mutation_id, clone_mutation_id, position, actor, idempotency_key, created_at, status, host_http_status, host_reason, updated_at";

/// The latest row of every link of one idempotency key.
pub async fn by_idempotency_key(client: &clickhouse::Client, key: &str) -> clickhouse::error::Result<Vec<LinkRow>> {
    client
        .query_raw(&format!("SELECT {COLUMNS} FROM replay_links FINAL WHERE idempotency_key = {{key:String}} ORDER BY position"))
        .param("key", key)
        .fetch_all()
        .await
}

/// The latest row of every link of replays of one original request, newest replay first.
pub async fn for_request(client: &clickhouse::Client, original_request_id: &str) -> clickhouse::error::Result<Vec<LinkRow>> {
    client
        .query_raw(&format!(
            "SELECT {COLUMNS} FROM replay_links FINAL WHERE original_request_id = {{id:String}} ORDER BY created_at DESC, replay_id, position"
        ))
        .param("id", original_request_id)
        .fetch_all()
        .await
}
