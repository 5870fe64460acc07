//! Versioned schema migrations, embedded in the binary and recorded in `schema_migrations`.
//!
//! Each migration runs once per database; its SQL checksum is recorded so that a migration
//! edited after it shipped is reported instead of silently diverging. Retention is applied on
//! every run, so changing `retention.days` takes effect at the next start.

use clickhouse::Client;
use serde::Deserialize;

use super::cluster::{ClusterLayout, LOCAL_SUFFIX, runs_on_every_replica};
use super::config::{ClickHouseConfig, RetentionConfig};

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
    Migration { version: 10, name: "replay_links_across_replicas", sql: include_str!("migrations/0010_replay_links_across_replicas.sql") },
    Migration { version: 11, name: "cheaper_compression", sql: include_str!("migrations/0011_cheaper_compression.sql") },
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
    /// In cluster mode, the nodes the migrations ran on (HTTP URLs, credentials never
    /// included); `applied` and `already_applied` are then the union over the nodes, and each
    /// drift line names its node. Empty for one server.
    pub nodes: Vec<String>,
    /// In cluster mode, the versions this run applied on each node of `nodes`, in the same
    /// order.
    pub applied_per_node: Vec<Vec<u32>>,
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

/// The statements one migration runs on a node: retention filled in and, in cluster mode,
/// rewritten for `layout` (see [`ClusterLayout::rewrite`]).
fn migration_statements(m: &Migration, retention: &RetentionConfig, layout: Option<ClusterLayout<'_>>) -> Vec<String> {
    let stmts = statements(&render(m.sql, retention));
    match layout {
        Some(l) => stmts.iter().flat_map(|s| l.rewrite(s)).collect(),
        None => stmts,
    }
}

/// Every statement [`migrate_configured`] runs on each node of an empty database, in order,
/// with the version of the migration it belongs to: the DDL to review before pointing
/// tether-pro at a cluster (`tether-pro migrate --print-ddl`).
pub fn node_statements(retention: &RetentionConfig, layout: Option<ClusterLayout<'_>>) -> Vec<(u32, String)> {
    MIGRATIONS.iter().flat_map(|m| migration_statements(m, retention, layout).into_iter().map(move |s| (m.version, s))).collect()
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
    let (db, done) = prepare(server, database).await?;
    let mut report = MigrationReport::default();
    for m in MIGRATIONS {
        if apply(&db, database, &done, m, retention, None, Role::All).await? {
            report.applied.push(m.version);
        } else {
            report.already_applied.push(m.version);
        }
    }
    report.drift = finish(&db, database, retention, None, Role::All).await?;
    Ok(report)
}

/// A node's part in a migration run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Runs every statement: one server, every node of a cluster without replication, and
    /// the first node of each shard with `clickhouse.replicated`.
    All,
    /// Another replica of a replicated shard: the shard's first node changes the shared local
    /// tables (ALTERs, mutations, backfills, TTLs), which reach this one by replication; this
    /// one creates its own objects and alters only its own `Distributed` tables.
    Replica,
}

/// Creates the database and `schema_migrations` if needed; returns a client bound to the
/// database and the versions recorded there.
async fn prepare(server: &Client, database: &str) -> Result<(Client, Vec<Applied>), MigrateError> {
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
    Ok((db, done))
}

/// Applies one migration unless `done` records it (then checks its checksum). Returns whether
/// it was applied now.
async fn apply(
    db: &Client,
    database: &str,
    done: &[Applied],
    m: &Migration,
    retention: &RetentionConfig,
    layout: Option<ClusterLayout<'_>>,
    role: Role,
) -> Result<bool, MigrateError> {
    let sum = checksum(m.sql);
    if let Some(a) = done.iter().find(|a| a.version == m.version) {
        if a.checksum != sum {
            return Err(MigrateError::Changed { version: m.version, name: m.name, database: database.to_owned(), recorded: a.checksum.clone(), embedded: sum });
        }
        return Ok(false);
    }
    for stmt in migration_statements(m, retention, layout).into_iter().filter(|s| role == Role::All || runs_on_every_replica(s)) {
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
    Ok(true)
}

/// After the migrations: the TTLs (by the node that changes the local tables) and the drift
/// check (every node; in cluster mode on the `Distributed` and the local tables).
async fn finish(db: &Client, database: &str, retention: &RetentionConfig, layout: Option<ClusterLayout<'_>>, role: Role) -> Result<Vec<String>, MigrateError> {
    let suffix = if layout.is_some() { LOCAL_SUFFIX } else { "" };
    if role == Role::All {
        apply_retention(db, database, retention, suffix).await?;
    }
    let mut drift = schema_drift(db, database).await?;
    if layout.is_some() {
        drift.extend(local_drift(db, database).await?);
    }
    for d in &drift {
        eprintln!("tether-pro: schema drift in database {database}: {d}; captured batches will be refused until it is fixed");
    }
    Ok(drift)
}

/// One node of a cluster run.
struct Node {
    url: String,
    /// `host:tcp_port` of the cluster member it is.
    member: String,
    db: Client,
    done: Vec<Applied>,
    role: Role,
}

/// Runs the migrations as `cfg` says: on the server at `url`, or, in cluster mode
/// (`clickhouse.cluster`), on every node (`clickhouse.nodes`, or the cluster's hosts from
/// `url`'s `system.clusters`).
///
/// In cluster mode the nodes move in lock-step (migration N on every node before N + 1), so a
/// replica always creates a replicated table with the structure its shard has at that point.
/// With `clickhouse.replicated`, the first node of each shard (by its `{shard}` macro) runs
/// every statement and the other replicas only those [`runs_on_every_replica`] keeps. Each node keeps
/// its own `schema_migrations` and is checked for drift on its own. A node that cannot be
/// reached, or whose migration fails, is left behind and the others go on; the error then
/// names every such node (the next run brings them up to date).
pub async fn migrate_configured(url: &str, cfg: &ClickHouseConfig, retention: &RetentionConfig) -> Result<MigrationReport, MigrateError> {
    let Some(cluster) = cfg.cluster.as_deref() else {
        return migrate(&super::server_client(url, cfg), &cfg.database, retention).await;
    };
    let layout = ClusterLayout { cluster, database: &cfg.database, replicated: cfg.replicated };
    let urls = cluster_nodes(url, cfg, cluster).await?;
    let mut failed: Vec<String> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut shards_seen: Vec<String> = Vec::new();
    for node in &urls {
        let server = super::server_client(node, cfg);
        let prepared = async {
            // Which member of the cluster this URL reaches (ClickHouse marks its own entry
            // `is_local`): two URLs for one server, or a server outside the cluster, would
            // leave a member without tables.
            let member: Vec<String> = server
                .query_raw("SELECT concat(host_name, ':', toString(port)) FROM system.clusters WHERE cluster = {c:String} AND is_local LIMIT 1")
                .param("c", cluster)
                .fetch_all()
                .await?;
            let Some(member) = member.into_iter().next() else {
                return Err(MigrateError::NodeIdentity(format!("{} is not a member of cluster {cluster:?} (no entry of system.clusters is its own)", super::display_url(node))));
            };
            if let Some(other) = nodes.iter().find(|n: &&Node| n.member == member) {
                return Err(MigrateError::NodeIdentity(format!(
                    "{} and {} are the same server (member {member} of cluster {cluster:?}); list each node once",
                    super::display_url(&other.url),
                    super::display_url(node)
                )));
            }
            let (db, done) = prepare(&server, &cfg.database).await?;
            let role = if cfg.replicated {
                let shard: String = db.query_raw("SELECT getMacro('shard')").fetch_one().await?;
                if shards_seen.contains(&shard) {
                    Role::Replica
                } else {
                    shards_seen.push(shard);
                    Role::All
                }
            } else {
                Role::All
            };
            Ok::<_, MigrateError>(Node { url: node.clone(), member, db, done, role })
        }
        .await;
        match prepared {
            Ok(n) => nodes.push(n),
            Err(e @ MigrateError::NodeIdentity(_)) => return Err(e),
            Err(e) => failed.push(format!("node {}: {e}", super::display_url(node))),
        }
    }
    let shown: Vec<String> = urls.iter().map(|u| super::display_url(u)).collect();
    let mut report = MigrationReport { nodes: shown, applied_per_node: vec![Vec::new(); urls.len()], ..MigrationReport::default() };
    let mut behind = vec![false; nodes.len()];
    for m in MIGRATIONS {
        for (n, behind) in nodes.iter().zip(behind.iter_mut()).filter(|(_, b)| !**b) {
            match apply(&n.db, &cfg.database, &n.done, m, retention, Some(layout), n.role).await {
                Ok(true) => {
                    if !report.applied.contains(&m.version) {
                        report.applied.push(m.version);
                    }
                    if let Some(i) = urls.iter().position(|u| *u == n.url) {
                        report.applied_per_node[i].push(m.version);
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    failed.push(format!("node {}: {e}", super::display_url(&n.url)));
                    *behind = true;
                }
            }
        }
        if !report.applied.contains(&m.version) {
            report.already_applied.push(m.version);
        }
    }
    for (n, _) in nodes.iter().zip(&behind).filter(|(_, b)| !**b) {
        match finish(&n.db, &cfg.database, retention, Some(layout), n.role).await {
            Ok(drift) => report.drift.extend(drift.into_iter().map(|d| format!("node {}: {d}", super::display_url(&n.url)))),
            Err(e) => failed.push(format!("node {}: {e}", super::display_url(&n.url))),
        }
    }
    if !failed.is_empty() {
        return Err(MigrateError::Nodes { failed, of: urls.len() });
    }
    Ok(report)
}

/// The HTTP URL of every node of `cluster`: `clickhouse.nodes` (duplicates removed), or the
/// hosts `url`'s server lists in `system.clusters` with `url`'s scheme and port (nodes of one
/// cluster usually share their HTTP port). Either way the count must match the cluster's
/// members in `system.clusters`: a node left out would be left without tables, and the
/// Distributed tables would fail on its shard.
async fn cluster_nodes(url: &str, cfg: &ClickHouseConfig, cluster: &str) -> Result<Vec<String>, MigrateError> {
    #[derive(Debug, clickhouse::Row, Deserialize)]
    struct Member {
        host_name: String,
    }
    // One row per member (host and TCP port): two members may share a host.
    let members: Vec<Member> = super::server_client(url, cfg)
        .query_raw(
            "SELECT host_name FROM (SELECT DISTINCT host_name, port FROM system.clusters WHERE cluster = {c:String}) ORDER BY host_name, port",
        )
        .param("c", cluster)
        .fetch_all()
        .await?;
    if members.is_empty() {
        return Err(MigrateError::NoSuchCluster(cluster.to_owned()));
    }
    let mut nodes: Vec<String> = Vec::new();
    if cfg.nodes.is_empty() {
        let uri: http::Uri = url.parse().map_err(|_| MigrateError::NoSuchCluster(cluster.to_owned()))?;
        let scheme = uri.scheme_str().unwrap_or("http");
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        // An IPv6 address goes in brackets in a URL.
        let host = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
        for m in &members {
            let node = format!("{scheme}://{}{port}", host(&m.host_name));
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
    } else {
        for node in &cfg.nodes {
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
    }
    if nodes.len() != members.len() {
        return Err(MigrateError::NodeCount { cluster: cluster.to_owned(), members: members.len(), nodes: nodes.len(), listed: !cfg.nodes.is_empty() });
    }
    Ok(nodes)
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
    /// Cluster mode: the cluster is not in the server's `system.clusters` (its
    /// `remote_servers`), so its nodes are unknown; holds the name.
    #[error("cluster {0:?} is not in system.clusters of clickhouse.url; check remote_servers or set clickhouse.nodes")]
    NoSuchCluster(String),
    /// Cluster mode: the nodes to migrate do not match the cluster's members: `clickhouse.nodes`
    /// lists another number of distinct nodes, or (unset) members share a host name, so their
    /// HTTP URLs cannot be told apart.
    #[error(
        "cluster {cluster:?} has {members} nodes in system.clusters, but {} {nodes}; set clickhouse.nodes to the HTTP URL of each node",
        if *listed { "clickhouse.nodes lists" } else { "their host names give" }
    )]
    NodeCount {
        /// The cluster's name.
        cluster: String,
        /// Its members (host and TCP port) in `system.clusters`.
        members: usize,
        /// The distinct nodes listed or derived.
        nodes: usize,
        /// Whether they came from `clickhouse.nodes`.
        listed: bool,
    },
    /// Cluster mode: a listed node is not a member of the cluster, or two listed URLs reach the
    /// same server; nothing was migrated.
    #[error("{0}")]
    NodeIdentity(String),
    /// Cluster mode: some nodes could not be migrated (the others were); each entry names its
    /// node and why.
    #[error(
        "the migrations failed on {} of {of} nodes ({}the next run brings them up to date): {}",
        failed.len(),
        if failed.len() < *of { "the other nodes were migrated; " } else { "" },
        failed.join("; ")
    )]
    Nodes {
        /// `node <url>: <error>` for each node left behind.
        failed: Vec<String>,
        /// How many nodes the run covered.
        of: usize,
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
    drift_of(db, database, "").await
}

/// Cluster mode: the same check on a node's local tables (what the `Distributed` tables'
/// inserts land in).
async fn local_drift(db: &Client, database: &str) -> clickhouse::error::Result<Vec<String>> {
    drift_of(db, database, LOCAL_SUFFIX).await
}

async fn drift_of(db: &Client, database: &str, suffix: &str) -> clickhouse::error::Result<Vec<String>> {
    let have: Vec<Column> = db
        .query_raw("SELECT table, name, type FROM system.columns WHERE database = {db:String} AND table IN ({r:String}, {m:String})")
        .param("db", database)
        .param("r", format!("sync_requests{suffix}"))
        .param("m", format!("sync_mutations{suffix}"))
        .fetch_all()
        .await?;
    let mut drift = Vec::new();
    for (table, columns) in INSERTED_COLUMNS {
        let table = format!("{table}{suffix}");
        for (name, ty) in *columns {
            match have.iter().find(|c| c.table == table && c.name == *name) {
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
async fn apply_retention(db: &Client, database: &str, r: &RetentionConfig, suffix: &str) -> clickhouse::error::Result<()> {
    let tables: Vec<TableTtl> = db
        .query_raw("SELECT name, engine_full FROM system.tables WHERE database = {db:String}")
        .param("db", database)
        .fetch_all()
        .await?;
    let wanted = RAW_TTL.iter().map(|t| (t, r.days)).chain(AGG_TTL.iter().map(|t| (t, r.aggregate_days)));
    for ((table, column), days) in wanted {
        let table = format!("{table}{suffix}");
        let Some(t) = tables.iter().find(|t| t.name == table) else { continue };
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

    /// Cluster mode: no materialized view or backfill may read or write a Distributed table
    /// (each node must aggregate its own shard), whatever the migrations' spelling.
    #[test]
    fn on_a_cluster_views_and_backfills_name_only_local_tables() {
        let layout = ClusterLayout { cluster: "c", database: "db", replicated: false };
        let all = node_statements(&RetentionConfig::default(), Some(layout));
        assert!(all.len() > MIGRATIONS.len());
        for (v, stmt) in all.iter().filter(|(_, s)| s.starts_with("CREATE MATERIALIZED VIEW") || s.starts_with("INSERT INTO")) {
            let words: Vec<String> = stmt.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',').map(str::to_ascii_uppercase).collect();
            for pair in words.windows(2).filter(|w| ["FROM", "JOIN", "TO", "INTO"].contains(&w[0].as_str())) {
                assert!(
                    !super::super::cluster::SHARDED.iter().any(|(t, _)| pair[1] == t.to_ascii_uppercase()),
                    "migration {v} reads or writes the Distributed table {}:\n{stmt}",
                    pair[1]
                );
            }
        }
    }

    /// With replication, a shard's other replicas create their own objects and alter their
    /// own Distributed tables; everything that changes the shared local tables is left to
    /// the shard's first node.
    #[test]
    fn other_replicas_create_and_alter_only_their_own_objects() {
        let layout = ClusterLayout { cluster: "c", database: "db", replicated: true };
        let all = node_statements(&RetentionConfig::default(), Some(layout));
        let replica: Vec<&String> = all.iter().map(|(_, s)| s).filter(|s| runs_on_every_replica(s)).collect();
        assert_eq!(replica.iter().filter(|s| s.starts_with("CREATE TABLE IF NOT EXISTS ") && s.contains("_local") && s.contains("Replicated")).count(), 6);
        assert!(replica.iter().any(|s| s.starts_with("CREATE MATERIALIZED VIEW")));
        assert!(replica.iter().any(|s| s.starts_with("ALTER TABLE sync_mutations ADD COLUMN")), "the node's Distributed table gets the column");
        for s in &replica {
            assert!(!s.starts_with("INSERT") && !s.contains("_local UPDATE") && !s.starts_with("ALTER TABLE sync_requests_local"), "{s}");
        }
        let skipped: Vec<&String> = all.iter().map(|(_, s)| s).filter(|s| !runs_on_every_replica(s)).collect();
        assert!(skipped.iter().all(|s| s.starts_with("INSERT INTO") || s.split_whitespace().nth(2).is_some_and(|t| t.ends_with("_local"))), "{skipped:#?}");
        assert!(skipped.iter().any(|s| s.starts_with("INSERT INTO")), "the backfill runs once per shard");
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
