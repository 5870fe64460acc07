//! Cluster mode (`clickhouse.cluster`): the migrations' statements rewritten for a sharded
//! ClickHouse, run on every node.
//!
//! Each table of the single-node schema becomes a local table `<name>_local` on every node
//! (MergeTree family, or its Replicated variant with the `{shard}`/`{replica}` macros when
//! `clickhouse.replicated`) and a `Distributed` table under the original name over them, so
//! the writer, pages, metrics API, Grafana and replay keep their table names and see the
//! whole cluster. Materialized views attach to the local tables on each node, so every shard
//! aggregates its own rows; reads merge the partial aggregates across shards (sums add up,
//! `quantilesTDigest` states merge).
//!
//! Sharding: a request's row, its mutations and the replay links of it live on one shard
//! (`cityHash64(request_id)`, `cityHash64(original_request_id)`), so a request page is a
//! one-shard lookup and `ReplacingMergeTree` collapses a link's rows where they are.

/// How the migrations are laid out on a cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterLayout<'a> {
    /// The cluster's name in the servers' `remote_servers`.
    pub cluster: &'a str,
    /// The database (the same on every node).
    pub database: &'a str,
    /// Local tables are `Replicated*MergeTree` (needs ClickHouse Keeper).
    pub replicated: bool,
}

/// Suffix of the per-node tables.
pub const LOCAL_SUFFIX: &str = "_local";

/// Every table the migrations create, with the sharding key of its `Distributed` table. The
/// aggregate tables are written only by the materialized views on each node (never through
/// the `Distributed` table), so their key only matters for hand-made inserts.
pub const SHARDED: &[(&str, &str)] = &[
    ("sync_requests", "cityHash64(request_id)"),
    ("sync_mutations", "cityHash64(request_id)"),
    ("replay_links", "cityHash64(original_request_id)"),
    ("sync_requests_5m", "rand()"),
    ("sync_mutations_5m", "rand()"),
    ("sync_clock_anomalies_5m", "rand()"),
];

impl ClusterLayout<'_> {
    /// The statements to run on each node for one statement of a single-node migration.
    ///
    /// - `CREATE TABLE t`: `t_local` (Replicated engine when configured), then `t` as
    ///   `Distributed` over it.
    /// - `CREATE MATERIALIZED VIEW ... TO t AS SELECT ... FROM s`: reads and writes the local
    ///   tables.
    /// - `ALTER TABLE t ADD|MODIFY COLUMN`: on `t_local` and on `t` (the `Distributed` table
    ///   carries the columns too); a codec change and every other `ALTER` (settings,
    ///   projections, TTL, mutations) on `t_local` only.
    /// - `INSERT INTO t SELECT ... FROM s` (backfills): local to local, each node its shard.
    /// - Views and anything else: as written (views read the `Distributed` tables).
    pub fn rewrite(&self, stmt: &str) -> Vec<String> {
        let s = stmt.trim();
        if let Some(rest) = s.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            let (name, tail) = split_name(rest);
            let Some(key) = sharding_key(name) else { return vec![s.to_owned()] };
            let local = format!("{name}{LOCAL_SUFFIX}");
            let tail = if self.replicated { self.replicated_engine(&local, tail) } else { tail.to_owned() };
            return vec![
                format!("CREATE TABLE IF NOT EXISTS {local}{tail}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {name} AS {local} ENGINE = Distributed('{}', '{}', '{local}', {key}) COMMENT 'Distributed over {local} on every shard'",
                    self.cluster, self.database
                ),
            ];
        }
        if s.starts_with("CREATE MATERIALIZED VIEW") || s.starts_with("INSERT INTO") {
            return vec![to_local(s)];
        }
        if let Some(rest) = s.strip_prefix("ALTER TABLE ") {
            let (name, tail) = split_name(rest);
            if sharding_key(name).is_none() {
                return vec![s.to_owned()];
            }
            let local = format!("ALTER TABLE {name}{LOCAL_SUFFIX}{tail}");
            // The Distributed table carries the columns only: it gets the column operations
            // of the ALTER (settings, projections, TTL, ORDER BY, mutations are the local
            // table's).
            let column_ops: Vec<&str> = operations(tail).into_iter().filter(|op| is_column_op(op)).collect();
            if column_ops.is_empty() {
                return vec![local];
            }
            return vec![local, format!("ALTER TABLE {name} {}", column_ops.join(", "))];
        }
        vec![s.to_owned()]
    }

    /// `ENGINE = XMergeTree[(args)]` as `ReplicatedXMergeTree('<path>', '{replica}'[, args])`.
    fn replicated_engine(&self, local: &str, tail: &str) -> String {
        let Some(at) = tail.find("ENGINE = ") else { return tail.to_owned() };
        let engine_start = at + "ENGINE = ".len();
        let rest = &tail[engine_start..];
        let name_len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
        let engine = &rest[..name_len];
        if !engine.ends_with("MergeTree") {
            return tail.to_owned();
        }
        let path = format!("'/clickhouse/tables/{{shard}}/{}/{local}', '{{replica}}'", self.database);
        let after = &rest[name_len..];
        let (args, after) = match after.strip_prefix('(') {
            Some(inner) => {
                let close = inner.find(')').unwrap_or(inner.len());
                let args = inner[..close].trim();
                (if args.is_empty() { String::new() } else { format!(", {args}") }, &inner[(close + 1).min(inner.len())..])
            }
            None => (String::new(), after),
        };
        format!("{}Replicated{engine}({path}{args}){after}", &tail[..engine_start])
    }
}

/// Whether a rewritten statement is one every replica of a shard runs for itself: a `CREATE`
/// (a replicated local table joins its shard's replication; views, materialized views and
/// `Distributed` tables are each node's own) or an `ALTER` of a `Distributed` table. The rest
/// (ALTERs and mutations of the shared local tables, backfills) runs once per shard.
pub(crate) fn runs_on_every_replica(stmt: &str) -> bool {
    if stmt.starts_with("CREATE ") {
        return true;
    }
    match stmt.strip_prefix("ALTER TABLE ") {
        Some(rest) => !split_name(rest).0.ends_with(LOCAL_SUFFIX),
        None => false,
    }
}

fn split_name(rest: &str) -> (&str, &str) {
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    (&rest[..end], &rest[end..])
}

fn sharding_key(name: &str) -> Option<&'static str> {
    SHARDED.iter().find(|(t, _)| *t == name).map(|(_, k)| *k)
}

/// The operations of an `ALTER TABLE t <ops>` tail, split at top-level commas (not inside
/// parentheses or string literals), trimmed.
fn operations(tail: &str) -> Vec<&str> {
    let mut ops = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let bytes = tail.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 => {
                ops.push(tail[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    ops.push(tail[start..].trim());
    ops.retain(|op| !op.is_empty());
    ops
}

/// `ADD|MODIFY|DROP|RENAME|COMMENT COLUMN ...`: what changes the columns a table shows.
fn is_column_op(op: &str) -> bool {
    let words: Vec<String> = op.split_whitespace().take(4).map(str::to_ascii_uppercase).collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        // A codec is how the local table stores a column; the Distributed table stores nothing.
        ["MODIFY", "COLUMN", ref rest @ ..] if rest.iter().any(|w| w.starts_with("CODEC(")) => false,
        ["ADD" | "MODIFY" | "DROP" | "RENAME" | "COMMENT", "COLUMN", ..] => true,
        _ => false,
    }
}

/// Every table name of [`SHARDED`] after the words `FROM`, `JOIN`, `TO` or `INTO` (any case,
/// any whitespace after them; not inside string literals) as its local table.
fn to_local(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    let mut quoted = false;
    'scan: while !rest.is_empty() {
        let at_word_start = out.is_empty() || out.ends_with(|c: char| c.is_whitespace() || c == '(');
        if !quoted && at_word_start {
            for kw in ["FROM", "JOIN", "TO", "INTO"] {
                let Some(head) = rest.get(..kw.len()) else { continue };
                let after = &rest[kw.len()..];
                let gap = after.len() - after.trim_start().len();
                if !head.eq_ignore_ascii_case(kw) || gap == 0 {
                    continue;
                }
                let (name, tail) = split_name(&after[gap..]);
                if sharding_key(name).is_some() {
                    out.push_str(&rest[..kw.len() + gap]);
                    out.push_str(name);
                    out.push_str(LOCAL_SUFFIX);
                    rest = tail;
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == '\'' {
            quoted = !quoted;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: ClusterLayout<'static> = ClusterLayout { cluster: "tether", database: "db", replicated: false };
    const REPLICATED: ClusterLayout<'static> = ClusterLayout { cluster: "tether", database: "db", replicated: true };

    #[test]
    fn a_table_becomes_a_local_table_and_a_distributed_one() {
        let out = PLAIN.rewrite("CREATE TABLE IF NOT EXISTS sync_requests\n(\n  request_id String\n)\nENGINE = MergeTree\nORDER BY request_id");
        assert_eq!(out[0], "CREATE TABLE IF NOT EXISTS sync_requests_local\n(\n  request_id String\n)\nENGINE = MergeTree\nORDER BY request_id");
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS sync_requests AS sync_requests_local ENGINE = Distributed('tether', 'db', 'sync_requests_local', cityHash64(request_id)) COMMENT 'Distributed over sync_requests_local on every shard'"
        );
    }

    #[test]
    fn replicated_engines_take_the_path_and_replica_macros_before_their_arguments() {
        let out = REPLICATED.rewrite("CREATE TABLE IF NOT EXISTS replay_links (a String) ENGINE = ReplacingMergeTree(updated_at) ORDER BY a");
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS replay_links_local (a String) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/replay_links_local', '{replica}', updated_at) ORDER BY a"
        );
        let out = REPLICATED.rewrite("CREATE TABLE IF NOT EXISTS sync_requests_5m (a String) ENGINE = AggregatingMergeTree PARTITION BY a ORDER BY a");
        assert!(out[0].contains("ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/sync_requests_5m_local', '{replica}') PARTITION BY a"), "{}", out[0]);
    }

    #[test]
    fn views_read_and_write_local_tables_and_backfills_stay_on_their_shard() {
        let mv = PLAIN.rewrite("CREATE MATERIALIZED VIEW IF NOT EXISTS m_mv TO sync_mutations_5m AS\nSELECT x FROM (SELECT x FROM sync_mutations\n) GROUP BY x");
        assert_eq!(mv, vec!["CREATE MATERIALIZED VIEW IF NOT EXISTS m_mv TO sync_mutations_5m_local AS\nSELECT x FROM (SELECT x FROM sync_mutations_local\n) GROUP BY x"]);
        let ins = PLAIN.rewrite("INSERT INTO sync_clock_anomalies_5m\nSELECT 1 FROM sync_mutations WHERE 1");
        assert_eq!(ins, vec!["INSERT INTO sync_clock_anomalies_5m_local\nSELECT 1 FROM sync_mutations_local WHERE 1"]);
        // A name that only starts like a table's, or a word that only ends in FROM, is kept.
        assert_eq!(to_local("SELECT 1 FROM sync_requests_other, xFROM sync_requests"), "SELECT 1 FROM sync_requests_other, xFROM sync_requests");
        let view = "CREATE VIEW IF NOT EXISTS v AS SELECT 1 FROM sync_requests_5m";
        assert_eq!(PLAIN.rewrite(view), vec![view]);
    }

    #[test]
    fn column_changes_reach_both_tables_and_the_rest_only_the_local_one() {
        let add = "ALTER TABLE sync_mutations ADD COLUMN IF NOT EXISTS x String DEFAULT '' AFTER y";
        assert_eq!(PLAIN.rewrite(add), vec![add.replacen("sync_mutations", "sync_mutations_local", 1), add.to_owned()]);
        let modify = "ALTER TABLE sync_mutations MODIFY COLUMN x Nullable(String)";
        assert_eq!(PLAIN.rewrite(modify).len(), 2);
        for local_only in [
            "ALTER TABLE sync_mutations UPDATE x = NULL WHERE 1",
            "ALTER TABLE sync_requests_5m MODIFY SETTING a = 1",
            "ALTER TABLE sync_requests_5m ADD PROJECTION IF NOT EXISTS p (SELECT 1)",
            "ALTER TABLE sync_requests_5m MATERIALIZE PROJECTION p",
            "ALTER TABLE sync_mutations MODIFY COLUMN payload CODEC(ZSTD(1))",
        ] {
            let out = PLAIN.rewrite(local_only);
            assert_eq!(out.len(), 1, "{local_only}");
            assert!(out[0].starts_with("ALTER TABLE sync_") && out[0].contains("_local "), "{}", out[0]);
        }
        // A mixed ALTER: the Distributed table gets only its column operations.
        let mixed = "ALTER TABLE replay_links\n    ADD COLUMN IF NOT EXISTS w String DEFAULT '' COMMENT 'a, (b)',\n    MODIFY ORDER BY (a, w)";
        assert_eq!(
            PLAIN.rewrite(mixed),
            vec![mixed.replacen("replay_links", "replay_links_local", 1), "ALTER TABLE replay_links ADD COLUMN IF NOT EXISTS w String DEFAULT '' COMMENT 'a, (b)'".to_owned()]
        );
        for op in ["DROP COLUMN x", "RENAME COLUMN x TO y", "comment column x 'c'", "MODIFY COLUMN x String"] {
            assert_eq!(PLAIN.rewrite(&format!("ALTER TABLE sync_requests {op}"))[1], format!("ALTER TABLE sync_requests {op}"));
        }
        assert_eq!(PLAIN.rewrite("ALTER TABLE sync_requests CLEAR COLUMN x IN PARTITION 1").len(), 1, "data, not columns");
    }

    #[test]
    fn source_tables_are_found_in_any_case_after_any_whitespace_but_not_in_literals() {
        assert_eq!(
            to_local("INSERT INTO\nsync_mutations_5m SELECT * from\tsync_mutations AS m JOIN sync_requests r USING request_id WHERE x = 'FROM sync_requests'"),
            "INSERT INTO\nsync_mutations_5m_local SELECT * from\tsync_mutations_local AS m JOIN sync_requests_local r USING request_id WHERE x = 'FROM sync_requests'"
        );
        assert_eq!(to_local("SELECT a FROM sync_requests_view, b FROMsync_requests"), "SELECT a FROM sync_requests_view, b FROMsync_requests");
    }
}
