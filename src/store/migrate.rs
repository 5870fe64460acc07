//! Versioned schema migrations, embedded in the binary and recorded in `schema_migrations`.
//!
//! Each migration runs once per database; its SQL checksum is recorded so that a migration
//! edited after it shipped is reported instead of silently diverging. Retention is applied on
//! every run, so changing `retention.days` takes effect at the next start.

use clickhouse::Client;
use serde::Deserialize;

use super::config::RetentionConfig;

/// One embedded migration. `{retention_days}` and `{aggregate_retention_days}` are filled
/// from the configuration (validated integers, never user text).
pub struct Migration {
    /// Version number, strictly increasing; recorded in `schema_migrations`.
    pub version: u32,
    /// Short name, e.g. `core_tables` (the file is `0001_core_tables.sql`).
    pub name: &'static str,
    /// The SQL: a `;` at the end of a line ends a statement; `--` lines are comments.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "core_tables", sql: include_str!("migrations/0001_core_tables.sql") },
    Migration { version: 2, name: "aggregates", sql: include_str!("migrations/0002_aggregates.sql") },
    Migration { version: 3, name: "views", sql: include_str!("migrations/0003_views.sql") },
    Migration { version: 4, name: "redacted_paths", sql: include_str!("migrations/0004_redacted_paths.sql") },
    Migration { version: 5, name: "aggregate_dedup", sql: include_str!("migrations/0005_aggregate_dedup.sql") },
    Migration { version: 6, name: "faithful_capture", sql: include_str!("migrations/0006_faithful_capture.sql") },
    Migration { version: 7, name: "payload_once", sql: include_str!("migrations/0007_payload_once.sql") },
    Migration { version: 8, name: "metrics_projections", sql: include_str!("migrations/0008_metrics_projections.sql") },
    Migration { version: 9, name: "clock_anomalies", sql: include_str!("migrations/0009_clock_anomalies.sql") },
];

/// The columns the capture pipeline inserts, with the types the migrations give them (as
/// `system.columns` spells them). `tests/migrations.rs` checks this against a freshly
/// migrated database, so it cannot fall behind the migrations.
pub const INSERTED_COLUMNS: &[(&str, &[(&str, &str)])] = &[
    (
        "sync_requests",
        &[
            ("request_id", "String"),
            ("kind", "LowCardinality(String)"),
            ("client_id", "String"),
            ("client_version", "LowCardinality(String)"),
            ("started_at", "DateTime64(6, 'UTC')"),
            ("duration_us", "UInt64"),
            ("http_status", "UInt16"),
            ("outcome", "LowCardinality(String)"),
            ("mutation_count", "UInt32"),
            ("applied_count", "UInt32"),
            ("rejected_count", "UInt32"),
            ("conflict_count", "UInt32"),
            ("duplicate_count", "UInt32"),
            ("rejected_by_reason", "Map(LowCardinality(String), UInt32)"),
            ("snapshot_count", "UInt32"),
            ("has_more", "Bool"),
            ("request_body", "String"),
            ("request_body_bytes", "UInt64"),
            ("request_body_truncated", "Bool"),
            ("request_body_moved", "Array(UInt32)"),
            ("request_content_encoding", "LowCardinality(String)"),
            ("response_body", "String"),
            ("response_body_bytes", "UInt64"),
            ("response_body_truncated", "Bool"),
            ("response_content_encoding", "LowCardinality(String)"),
            ("error", "String"),
            ("trace_id", "String"),
            ("span_id", "String"),
            ("replay_of", "String"),
        ],
    ),
    (
        "sync_mutations",
        &[
            ("request_id", "String"),
            ("started_at", "DateTime64(6, 'UTC')"),
            ("position", "UInt32"),
            ("mutation_id", "String"),
            ("entity_id", "String"),
            ("model", "LowCardinality(String)"),
            ("operation", "LowCardinality(String)"),
            ("client_id", "String"),
            ("client_timestamp", "Nullable(DateTime64(3, 'UTC'))"),
            ("client_timestamp_raw", "String"),
            ("version", "UInt64"),
            ("outcome", "LowCardinality(String)"),
            ("reason", "LowCardinality(String)"),
            ("reason_data", "String"),
            ("payload", "String"),
            ("state_before", "String"),
            ("state_after", "String"),
            ("has_state", "Bool"),
            ("detail_kept", "Bool"),
            ("diff", "String"),
            ("trace_id", "String"),
            ("span_id", "String"),
            ("redacted_paths", "Array(String)"),
            ("redacted_paths_recorded", "Bool"),
        ],
    ),
];

/// Tables whose TTL follows `retention.days` / `retention.aggregate_days`.
const RAW_TTL: &[(&str, &str)] = &[("sync_requests", "started_at"), ("sync_mutations", "started_at")];
const AGG_TTL: &[(&str, &str)] = &[("sync_requests_5m", "bucket"), ("sync_mutations_5m", "bucket"), ("sync_clock_anomalies_5m", "bucket")];

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions this run applied, in order.
    pub applied: Vec<u32>,
    /// Versions found already applied with the same checksum.
    pub already_applied: Vec<u32>,
    /// Schema drift: each column the pipeline inserts that is missing or has another type
    /// (someone altered the table). Inserts will be refused as bad data (dead-lettered and
    /// counted as `bad_data`) until it is fixed. Empty when the schema is as migrated.
    pub drift: Vec<String>,
}

/// FNV-1a: a stable checksum for drift detection (not for security).
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Splits a migration into statements: `;` at the end of a line ends one; `--` lines are
/// comments.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix(';') {
            cur.push_str(body);
            if !cur.trim().is_empty() {
                out.push(std::mem::take(&mut cur).trim().to_owned());
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

fn render(sql: &str, r: &RetentionConfig) -> String {
    sql.replace("{retention_days}", &r.days.to_string())
        .replace("{aggregate_retention_days}", &r.aggregate_days.to_string())
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Applied {
    version: u32,
    checksum: String,
}

/// Creates the database if needed, applies pending migrations in order, and brings the TTLs
/// in line with `retention`. Idempotent; safe to run at every start.
///
/// `server` must not be bound to a database (the database may not exist yet).
pub async fn migrate(server: &Client, database: &str, retention: &RetentionConfig) -> Result<MigrationReport, MigrateError> {
    server
        .query_raw("CREATE DATABASE IF NOT EXISTS {db:Identifier}")
        .param("db", database)
        .execute()
        .await?;
    let db = server.clone().with_database(database);
    db.query_raw(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
         ) ENGINE = ReplacingMergeTree ORDER BY version
         COMMENT 'Migrations applied by tether-pro'",
    )
    .execute()
    .await?;
    let done: Vec<Applied> = db
        .query_raw("SELECT version, any(checksum) AS checksum FROM schema_migrations GROUP BY version")
        .fetch_all()
        .await?;
    let mut report = MigrationReport::default();
    for m in MIGRATIONS {
        let sum = checksum(m.sql);
        if let Some(a) = done.iter().find(|a| a.version == m.version) {
            if a.checksum != sum {
                return Err(MigrateError::Changed { version: m.version, name: m.name, database: database.to_owned(), recorded: a.checksum.clone(), embedded: sum });
            }
            report.already_applied.push(m.version);
            continue;
        }
        for stmt in statements(&render(m.sql, retention)) {
            db.query_raw(&stmt)
                .execute()
                .await
                .map_err(|source| MigrateError::Failed { version: m.version, name: m.name, statement: stmt.clone(), source })?;
        }
        db.query_raw("INSERT INTO schema_migrations (version, name, checksum) VALUES ({v:UInt32}, {n:String}, {c:String})")
            .param("v", m.version)
            .param("n", m.name)
            .param("c", &sum)
            .execute()
            .await?;
        report.applied.push(m.version);
    }
    apply_retention(&db, database, retention).await?;
    report.drift = schema_drift(&db, database).await?;
    for d in &report.drift {
        eprintln!("tether-pro: schema drift in database {database}: {d}; captured batches will be refused until it is fixed");
    }
    Ok(report)
}

/// Why the migrations could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// ClickHouse could not be reached, or refused a bookkeeping query.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A migration already applied differs from the one this build embeds.
    #[error(
        "migration {version:04}_{name} was changed after it was applied to database {database} \
         (recorded checksum {recorded}, embedded {embedded}); add a new migration instead"
    )]
    Changed {
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// The database it was applied to.
        database: String,
        /// The checksum recorded in `schema_migrations` when it was applied.
        recorded: String,
        /// The checksum of the SQL this build embeds.
        embedded: String,
    },
    /// A statement of a migration failed.
    #[error("migration {version:04}_{name} failed: {source}\n--- statement ---\n{statement}")]
    Failed {
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// The statement that failed (retention days filled in).
        statement: String,
        /// ClickHouse's error.
        source: clickhouse::error::Error,
    },
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Column {
    table: String,
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

/// Compares the inserted tables' columns with [`INSERTED_COLUMNS`].
pub async fn schema_drift(db: &Client, database: &str) -> clickhouse::error::Result<Vec<String>> {
    let have: Vec<Column> = db
        .query_raw("SELECT table, name, type FROM system.columns WHERE database = {db:String} AND table IN ('sync_requests', 'sync_mutations')")
        .param("db", database)
        .fetch_all()
        .await?;
    let mut drift = Vec::new();
    for (table, columns) in INSERTED_COLUMNS {
        for (name, ty) in *columns {
            match have.iter().find(|c| c.table == *table && c.name == *name) {
                None => drift.push(format!("{table}.{name} is missing (expected {ty})")),
                Some(c) if c.ty != *ty => drift.push(format!("{table}.{name} has type {} (expected {ty})", c.ty)),
                Some(_) => {}
            }
        }
    }
    Ok(drift)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TableTtl {
    name: String,
    engine_full: String,
}

/// Sets each table's TTL to the configured days when it differs. Metadata only: existing
/// parts are not rewritten (`materialize_ttl_after_modify = 0`); old partitions drop as they
/// expire.
async fn apply_retention(db: &Client, database: &str, r: &RetentionConfig) -> clickhouse::error::Result<()> {
    let tables: Vec<TableTtl> = db
        .query_raw("SELECT name, engine_full FROM system.tables WHERE database = {db:String}")
        .param("db", database)
        .fetch_all()
        .await?;
    let wanted = RAW_TTL.iter().map(|t| (t, r.days)).chain(AGG_TTL.iter().map(|t| (t, r.aggregate_days)));
    for ((table, column), days) in wanted {
        let Some(t) = tables.iter().find(|t| t.name == *table) else { continue };
        if t.engine_full.contains(&format!("toIntervalDay({days})")) {
            continue;
        }
        let expr = if *column == "bucket" { column.to_string() } else { format!("toDateTime({column})") };
        db.query_raw(&format!("ALTER TABLE {table} MODIFY TTL {expr} + INTERVAL {days} DAY"))
            .with_setting("materialize_ttl_after_modify", "0")
            .execute()
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_splits_into_statements_without_comments() {
        for m in MIGRATIONS {
            let stmts = statements(m.sql);
            assert!(!stmts.is_empty(), "{} has no statements", m.name);
            for s in stmts {
                assert!(!s.starts_with("--"), "{s}");
                assert!(!s.ends_with(';'), "{s}");
            }
        }
    }

    #[test]
    fn versions_are_strictly_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }

    #[test]
    fn checksum_is_stable_and_sensitive() {
        assert_eq!(checksum("abc"), checksum("abc"));
        assert_ne!(checksum("abc"), checksum("abd"));
        assert_eq!(checksum(""), "cbf29ce484222325");
    }

    #[test]
    fn retention_placeholders_are_all_filled() {
        let r = RetentionConfig { days: 7, aggregate_days: 90 };
        for m in MIGRATIONS {
            let sql = render(m.sql, &r);
            assert!(!sql.contains("{retention_days}") && !sql.contains("{aggregate_retention_days}"));
        }
        assert!(render(MIGRATIONS[0].sql, &r).contains("INTERVAL 7 DAY"));
    }
}
