//! Schema migrations against a real ClickHouse: idempotent, recorded, drift-checked, TTL
//! following the configuration, and every table and view usable.

mod common;

use common::clickhouse;
use tether_pro::config::RetentionConfig;
use tether_pro::store::migrate::{INSERTED_COLUMNS, MIGRATIONS, migrate};

fn server(url: &str) -> clickhouse::Client {
    clickhouse::Client::default().with_url(url)
}

#[tokio::test]
async fn migrations_apply_once_and_are_recorded() {
    let ch = clickhouse().await;
    let r = RetentionConfig::default();
    let first = migrate(&server(&ch.url), &ch.database, &r).await.unwrap();
    assert_eq!(first.applied, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    let second = migrate(&server(&ch.url), &ch.database, &r).await.unwrap();
    assert!(second.applied.is_empty(), "nothing re-applied: {second:?}");
    assert_eq!(second.already_applied.len(), MIGRATIONS.len());
    assert_eq!(ch.count("SELECT count() FROM schema_migrations FINAL").await, MIGRATIONS.len() as u64);
}

#[tokio::test]
async fn every_table_and_view_exists_and_answers() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let tables: Vec<String> = ch
        .rows(&format!("SELECT name FROM system.tables WHERE database = '{}' ORDER BY name", ch.database))
        .await
        .into_iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    for t in [
        "failures_by_reason_24h",
        "health_5m_24h",
        "replay_links",
        "replays",
        "schema_migrations",
        "sync_mutations",
        "sync_mutations_5m",
        "sync_mutations_5m_mv",
        "sync_requests",
        "sync_requests_5m",
        "sync_requests_5m_mv",
        "sync_clock_anomalies_5m",
        "sync_clock_anomalies_5m_mv",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
        ch.rows(&format!("SELECT * FROM {t} LIMIT 1")).await;
    }
    // Every column is documented in ClickHouse too.
    let undocumented = ch
        .count(&format!(
            "SELECT count() FROM system.columns WHERE database = '{}' AND table IN ('sync_requests', 'sync_mutations') AND comment = '' AND name NOT IN ('request_id','client_id','started_at','http_status','mutation_id','entity_id','model','version','trace_id','span_id','position','client_timestamp','operation','outcome','reason','reason_data','payload','state_before','state_after','has_state','diff','error','replay_of','kind','client_version','duration_us','mutation_count','applied_count','rejected_count','conflict_count','duplicate_count','rejected_by_reason','snapshot_count','has_more','request_body','request_body_bytes','request_body_truncated','response_body','response_body_bytes','response_body_truncated')",
            ch.database
        ))
        .await;
    assert_eq!(undocumented, 0, "a new column without a COMMENT");
    // Migration 0011: the large text columns are ZSTD(1), the comments kept.
    let codecs = ch
        .rows(&format!(
            "SELECT table, name, compression_codec, comment FROM system.columns WHERE database = '{}' \
             AND table IN ('sync_requests', 'sync_mutations') AND compression_codec != '' ORDER BY table, name",
            ch.database
        ))
        .await;
    let got: Vec<(String, String)> = codecs
        .iter()
        .map(|r| (format!("{}.{}", r["table"].as_str().unwrap(), r["name"].as_str().unwrap()), r["compression_codec"].as_str().unwrap().to_owned()))
        .collect();
    let want: Vec<(String, String)> = [
        "sync_mutations.diff",
        "sync_mutations.payload",
        "sync_mutations.reason_data",
        "sync_mutations.state_after",
        "sync_mutations.state_before",
        "sync_requests.request_body",
        "sync_requests.response_body",
    ]
    .iter()
    .map(|c| (c.to_string(), "CODEC(ZSTD(1))".to_owned()))
    .collect();
    assert_eq!(got, want);
    assert!(codecs.iter().all(|r| !r["comment"].as_str().unwrap().is_empty()), "a codec change dropped a comment: {codecs:?}");
}

#[tokio::test]
async fn materialized_views_aggregate_inserted_rows_into_five_minute_buckets() {
    let ch = clickhouse().await;
    ch.migrate().await;
    ch.rows(
        "INSERT INTO sync_requests (request_id, kind, client_id, started_at, duration_us, http_status, outcome, mutation_count, applied_count, conflict_count)
         VALUES ('a', 'push', 'c1', '2026-01-01 10:01:00', 1000, 200, 'ok', 3, 3, 0),
                ('b', 'push', 'c1', '2026-01-01 10:04:59', 3000, 200, 'conflict', 1, 0, 1),
                ('c', 'pull', 'c2', '2026-01-01 10:05:00', 2000, 500, 'error', 0, 0, 0)",
    )
    .await;
    let rows = ch
        .rows("SELECT bucket, sum(requests) AS r, sum(mutations) AS m, sum(conflicts) AS c, sum(server_errors) AS e FROM sync_requests_5m GROUP BY bucket ORDER BY bucket")
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], serde_json::json!({"bucket": "2026-01-01 10:00:00", "r": 2, "m": 4, "c": 1, "e": 0}));
    assert_eq!(rows[1], serde_json::json!({"bucket": "2026-01-01 10:05:00", "r": 1, "m": 0, "c": 0, "e": 1}));
}

#[tokio::test]
async fn retention_follows_the_configuration_on_every_run() {
    let ch = clickhouse().await;
    migrate(&server(&ch.url), &ch.database, &RetentionConfig { days: 30, aggregate_days: 400 }).await.unwrap();
    let ttl = |table: &'static str| {
        let ch = ch.clone();
        async move {
            ch.rows(&format!("SELECT engine_full FROM system.tables WHERE database = '{}' AND name = '{table}'", ch.database))
                .await[0]["engine_full"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert!(ttl("sync_requests").await.contains("toIntervalDay(30)"));
    migrate(&server(&ch.url), &ch.database, &RetentionConfig { days: 7, aggregate_days: 90 }).await.unwrap();
    assert!(ttl("sync_requests").await.contains("toIntervalDay(7)"), "{}", ttl("sync_requests").await);
    assert!(ttl("sync_mutations").await.contains("toIntervalDay(7)"));
    assert!(ttl("sync_requests_5m").await.contains("toIntervalDay(90)"));
}

#[tokio::test]
async fn a_migration_changed_after_it_was_applied_is_reported() {
    let ch = clickhouse().await;
    ch.migrate().await;
    ch.rows("INSERT INTO schema_migrations (version, name, checksum) VALUES (1, 'core_tables', 'tampered')").await;
    ch.rows("OPTIMIZE TABLE schema_migrations FINAL").await;
    let err = migrate(&server(&ch.url), &ch.database, &RetentionConfig::default()).await.unwrap_err().to_string();
    assert!(err.contains("was changed after it was applied"), "{err}");
}

#[tokio::test]
async fn a_hostile_database_name_is_quoted_not_executed() {
    let ch = clickhouse().await;
    let name = format!("{}_x`; DROP DATABASE {}; --", ch.database, ch.database);
    // The config refuses such names (see config tests). Here we only prove the migrator never
    // splices a name into SQL: whatever it answers, the DROP in the name never runs.
    let _ = migrate(&server(&ch.url), &name, &RetentionConfig::default()).await;
    assert_eq!(ch.count(&format!("SELECT count() FROM system.databases WHERE name = '{}'", ch.database)).await, 1, "the test database survived");
    server(&ch.url).query_raw("DROP DATABASE IF EXISTS {n:Identifier}").param("n", &name).execute().await.unwrap();
}

#[tokio::test]
async fn the_inserted_columns_are_exactly_the_migrated_ones() {
    let ch = clickhouse().await;
    let report = migrate(&server(&ch.url), &ch.database, &RetentionConfig::default()).await.unwrap();
    assert!(report.drift.is_empty(), "a fresh database has no drift: {:?}", report.drift);
    for (table, columns) in INSERTED_COLUMNS {
        let have: Vec<(String, String)> = ch
            .rows(&format!("SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{table}' ORDER BY position", ch.database))
            .await
            .into_iter()
            .map(|r| (r["name"].as_str().unwrap().to_owned(), r["type"].as_str().unwrap().to_owned()))
            .collect();
        let want: Vec<(String, String)> = columns.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(have, want, "INSERTED_COLUMNS for {table} must follow the migrations");
    }
}

#[tokio::test]
async fn schema_drift_is_reported_by_the_startup_check() {
    let ch = clickhouse().await;
    ch.migrate().await;
    ch.rows("ALTER TABLE sync_mutations DROP COLUMN reason_data").await;
    ch.rows("ALTER TABLE sync_requests MODIFY COLUMN duration_us String").await;
    let report = migrate(&server(&ch.url), &ch.database, &RetentionConfig::default()).await.unwrap();
    assert_eq!(
        report.drift,
        vec![
            "sync_requests.duration_us has type String (expected UInt64)".to_owned(),
            "sync_mutations.reason_data is missing (expected String)".to_owned(),
        ]
    );
}

/// Issue 13, input 3: the same rows inserted twice with one `insert_deduplication_token` (a
/// retry after a lost answer) are stored once in the raw tables AND counted once in the
/// five-minute aggregates; a different token with identical rows still counts.
#[tokio::test]
async fn a_retried_insert_lands_once_in_raw_tables_and_aggregates() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let requests = "INSERT INTO sync_requests (request_id, kind, client_id, started_at, duration_us, http_status, outcome, mutation_count, applied_count)
        SETTINGS insert_deduplication_token = '{token}-r'
        VALUES ('a', 'push', 'c1', now64(6) - 60, 1000, 200, 'ok', 2, 2), ('b', 'pull', 'c1', now64(6) - 30, 10, 200, 'ok', 0, 0)";
    let mutations = "INSERT INTO sync_mutations (request_id, started_at, position, mutation_id, model, operation, client_id, outcome)
        SETTINGS insert_deduplication_token = '{token}-m'
        VALUES ('a', now64(6) - 60, 0, 'm1', 'todo', 'create', 'c1', 'applied'), ('a', now64(6) - 60, 1, 'm2', 'todo', 'update', 'c1', 'applied')";
    for token in ["t1", "t1", "t1", "t2"] {
        ch.rows(&mutations.replace("{token}", token)).await;
        ch.rows(&requests.replace("{token}", token)).await;
    }
    // t1 lands once, t2 (another batch that happens to hold equal rows) once more.
    assert_eq!(ch.count("SELECT count() FROM sync_requests").await, 4);
    assert_eq!(ch.count("SELECT sum(requests) FROM sync_requests_5m").await, 4, "the aggregate follows the raw rows");
    assert_eq!(ch.count("SELECT sum(mutations) FROM sync_requests_5m").await, 4);
    assert_eq!(ch.count("SELECT count() FROM sync_mutations").await, 4);
    assert_eq!(ch.count("SELECT sum(mutations) FROM sync_mutations_5m").await, 4);
}
