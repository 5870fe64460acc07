//! SQLite storage of the reference server: records (soft-deleted, with a change stamp that
//! drives pull cursors) and the server mutation log (the idempotency record).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::protocol::Object;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    model         TEXT    NOT NULL,
    entity_id     TEXT    NOT NULL,
    data          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    deleted_at_us INTEGER,
    changed_us    INTEGER NOT NULL,
    PRIMARY KEY (model, entity_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS records_by_change ON records (changed_us);
CREATE TABLE IF NOT EXISTS mutation_log (
    mutation_id   TEXT    NOT NULL PRIMARY KEY,
    client_id     TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    entity_id     TEXT    NOT NULL,
    operation     TEXT    NOT NULL,
    applied_at_us INTEGER NOT NULL
) WITHOUT ROWID;
";

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub data: Object,
    /// `data` as stored (JSON text): handed to observers without building another tree.
    pub data_json: String,
    pub version: u64,
    /// Time of the write that produced this state (the applied mutation's timestamp).
    pub updated_at_us: i64,
    pub deleted_at_us: Option<i64>,
    /// Server-assigned, strictly increasing: the pull cursor.
    pub changed_us: i64,
}

/// A row of a pull page.
pub struct ChangedRow {
    pub model: String,
    pub entity_id: String,
    pub data: Object,
    pub deleted: bool,
    pub changed_us: i64,
}

/// An open database plus the last change stamp handed out (stamps must never repeat,
/// or a pull page boundary could split two records and lose one).
pub struct Db {
    pub(crate) conn: Connection,
    pub(crate) last_change_us: i64,
}

impl Db {
    pub fn open_in_memory() -> rusqlite::Result<Db> {
        Db::init(Connection::open_in_memory()?)
    }

    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Db::init(conn)
    }

    fn init(conn: Connection) -> rusqlite::Result<Db> {
        conn.execute_batch(SCHEMA)?;
        let last: Option<i64> = conn.query_row("SELECT max(changed_us) FROM records", [], |r| r.get(0))?;
        Ok(Db { conn, last_change_us: last.unwrap_or(0) })
    }
}

pub fn is_logged(conn: &Connection, mutation_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM mutation_log WHERE mutation_id = ?1")?
        .query_row([mutation_id], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

pub fn log_mutation(
    conn: &Connection,
    mutation_id: &str,
    client_id: &str,
    model: &str,
    entity_id: &str,
    operation: &str,
    applied_at_us: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO mutation_log (mutation_id, client_id, model, entity_id, operation, applied_at_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![mutation_id, client_id, model, entity_id, operation, applied_at_us])?;
    Ok(())
}

pub fn load(conn: &Connection, model: &str, entity_id: &str) -> rusqlite::Result<Option<Record>> {
    conn.prepare_cached(
        "SELECT data, version, updated_at_us, deleted_at_us, changed_us FROM records
         WHERE model = ?1 AND entity_id = ?2",
    )?
    .query_row([model, entity_id], |r| {
        let data_json: String = r.get(0)?;
        Ok(Record {
            data: serde_json::from_str(&data_json).unwrap_or_default(),
            data_json,
            version: r.get::<_, i64>(1)? as u64,
            updated_at_us: r.get(2)?,
            deleted_at_us: r.get(3)?,
            changed_us: r.get(4)?,
        })
    })
    .optional()
}

pub fn upsert(
    conn: &Connection,
    model: &str,
    entity_id: &str,
    data: &Object,
    version: u64,
    updated_at_us: i64,
    changed_us: i64,
) -> rusqlite::Result<String> {
    let json = serde_json::to_string(data).expect("a JSON object serialises");
    conn.prepare_cached(
        "INSERT INTO records (model, entity_id, data, version, updated_at_us, deleted_at_us, changed_us)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)
         ON CONFLICT (model, entity_id) DO UPDATE SET
           data = excluded.data, version = max(records.version, excluded.version), updated_at_us = excluded.updated_at_us,
           deleted_at_us = NULL, changed_us = excluded.changed_us",
    )?
    .execute(params![model, entity_id, json, version as i64, updated_at_us, changed_us])?;
    Ok(json)
}

pub fn soft_delete(
    conn: &Connection,
    model: &str,
    entity_id: &str,
    version: u64,
    deleted_at_us: i64,
    changed_us: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE records SET deleted_at_us = ?3, updated_at_us = max(updated_at_us, ?3), version = max(version, ?4), changed_us = ?5
         WHERE model = ?1 AND entity_id = ?2",
    )?
    .execute(params![model, entity_id, deleted_at_us, version as i64, changed_us])?;
    Ok(())
}

/// Records changed after `cursor`, oldest change first. A first pull (`None`) skips
/// tombstones: a device that never had a record needs no delete for it.
pub fn changed_since(conn: &Connection, cursor: Option<i64>, limit: usize) -> rusqlite::Result<Vec<ChangedRow>> {
    let sql = if cursor.is_some() {
        "SELECT model, entity_id, data, deleted_at_us IS NOT NULL, changed_us FROM records
         WHERE changed_us > ?1 ORDER BY changed_us LIMIT ?2"
    } else {
        "SELECT model, entity_id, data, deleted_at_us IS NOT NULL, changed_us FROM records
         WHERE changed_us > ?1 AND deleted_at_us IS NULL ORDER BY changed_us LIMIT ?2"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![cursor.unwrap_or(i64::MIN), limit as i64], |r| {
        let data: String = r.get(2)?;
        Ok(ChangedRow {
            model: r.get(0)?,
            entity_id: r.get(1)?,
            data: serde_json::from_str(&data).unwrap_or_default(),
            deleted: r.get(3)?,
            changed_us: r.get(4)?,
        })
    })?;
    rows.collect()
}
