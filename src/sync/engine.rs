//! The processing rules of PROTOCOL.md, one mutation at a time, in order, inside one
//! SQLite transaction per push.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::db::{self, Db, Record};
use super::models::{Schema, state_with_key};
use super::resolver::{ConflictResolver, PayloadMapper, Resolution, ServerRecord};
use crate::protocol::{
    ConflictData, Mutation, Object, Operation, PullRequest, PullResponse, PushRequest, PushResponse, Rejection,
    RejectionReason, Snapshot, SnapshotOperation, ValidationData, is_ulid,
};

/// What happened to one mutation, with the record state around it. The server emits this
/// for observers (before/after capture); it is not part of the wire response.
#[derive(Debug, Clone, PartialEq)]
pub struct MutationEffect {
    /// Position of the mutation in the pushed batch (0-based).
    pub index: usize,
    /// What happened to it.
    pub outcome: EffectOutcome,
    /// The record's stored fields before processing, as JSON object text (without the sync
    /// key); `None` when there was no live record.
    pub before: Option<String>,
    /// The stored fields after processing, likewise; `None` when there is no live record.
    pub after: Option<String>,
}

/// What happened to one pushed mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectOutcome {
    /// Written and logged; its id is in `applied` (a conflict a resolver applied included).
    Applied,
    /// In `rejected`: `validation_failed`, `not_found` or `error`.
    Rejected,
    /// In `conflicts`: the server won and the record is unchanged.
    Conflict,
    /// Already in the server mutation log: in `rejected` as `duplicate`, not applied again.
    Duplicate,
}

/// A processed push: the wire response and one effect per mutation, in batch order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushResult {
    /// The body answered to the client.
    pub response: PushResponse,
    /// One per mutation, in batch order.
    pub effects: Vec<MutationEffect>,
}

pub(crate) struct Rules<'a> {
    pub schema: &'a Schema,
    pub resolver: &'a dyn ConflictResolver,
    pub mapper: Option<&'a dyn PayloadMapper>,
    /// See `Limits::max_clock_ahead_ms`.
    pub max_clock_ahead_ms: u64,
}

fn live(rec: &Option<Record>) -> Option<&Record> {
    rec.as_ref().filter(|r| r.deleted_at_us.is_none())
}

pub fn rfc3339_from_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

enum Step {
    Applied { after: Option<String> },
    Rejected(Rejection),
    Conflict(Rejection),
    Duplicate(Rejection),
}

pub(crate) fn push(db: &mut Db, rules: &Rules<'_>, req: &PushRequest) -> rusqlite::Result<PushResult> {
    let mut result = PushResult::default();
    let Db { conn, last_change_us } = db;
    let mut clock = ChangeClock(last_change_us);
    let mut tx = conn.transaction()?;
    for (index, m) in req.mutations.iter().enumerate() {
        let before_rec = db::load(&tx, &m.model, &m.entity_id)?;
        let before = live(&before_rec).map(|r| r.data_json.clone());
        let sp = tx.savepoint()?;
        let step = match process_one(&sp, &mut clock, rules, &req.client_id, m, live(&before_rec)) {
            Ok(step) => {
                sp.commit()?;
                step
            }
            // A storage failure is transient for that mutation only (clients retry `error`);
            // dropping the savepoint rolls its partial writes back.
            Err(_) => Step::Rejected(Rejection::simple(&m.mutation_id, RejectionReason::Error)),
        };
        let (outcome, after) = match step {
            Step::Applied { after } => {
                result.response.applied.push(m.mutation_id.clone());
                (EffectOutcome::Applied, after)
            }
            Step::Rejected(r) => {
                result.response.rejected.push(r);
                (EffectOutcome::Rejected, before.clone())
            }
            Step::Duplicate(r) => {
                result.response.rejected.push(r);
                (EffectOutcome::Duplicate, before.clone())
            }
            Step::Conflict(r) => {
                result.response.conflicts.push(r);
                (EffectOutcome::Conflict, before.clone())
            }
        };
        result.effects.push(MutationEffect { index, outcome, before, after });
    }
    tx.commit()?;
    Ok(result)
}

/// Hands out strictly increasing change stamps (see `Db`).
pub(crate) struct ChangeClock<'a>(pub &'a mut i64);

impl ChangeClock<'_> {
    fn next(&mut self) -> i64 {
        let now = chrono::Utc::now().timestamp_micros();
        *self.0 = now.max(*self.0 + 1);
        *self.0
    }
}

fn shape_errors(m: &Mutation, max_clock_ahead_ms: u64) -> BTreeMap<String, Vec<String>> {
    let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !is_ulid(&m.mutation_id) {
        messages.entry("mutation_id".into()).or_default().push("The mutation id must be a valid ULID.".into());
    }
    if !is_ulid(&m.entity_id) {
        messages.entry("entity_id".into()).or_default().push("The entity id must be a valid ULID.".into());
    }
    if m.version < 1 {
        messages.entry("version".into()).or_default().push("The version field must be at least 1.".into());
    }
    if m.timestamp < 0 {
        messages.entry("timestamp".into()).or_default().push("The timestamp field must be at least 0.".into());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let ahead = i128::from(m.timestamp) - i128::from(now_ms);
    if ahead > i128::from(max_clock_ahead_ms) {
        messages.entry("timestamp".into()).or_default().push(format!(
            "The timestamp is {ahead} ms ahead of the server clock; at most {max_clock_ahead_ms} ms ahead is accepted (check the device clock)."
        ));
    }
    messages
}

fn process_one(
    conn: &Connection,
    clock: &mut ChangeClock<'_>,
    rules: &Rules<'_>,
    client_id: &str,
    m: &Mutation,
    current: Option<&Record>,
) -> rusqlite::Result<Step> {
    let invalid = |messages| Step::Rejected(Rejection::validation_failed(&m.mutation_id, ValidationData { messages }));
    let shape = shape_errors(m, rules.max_clock_ahead_ms);
    if !shape.is_empty() {
        return Ok(invalid(shape));
    }
    // 1. Idempotency: a mutation id already applied is never applied again.
    if db::is_logged(conn, &m.mutation_id)? {
        return Ok(Step::Duplicate(Rejection::simple(&m.mutation_id, RejectionReason::Duplicate)));
    }
    let Some(spec) = rules.schema.get(&m.model) else {
        return Ok(invalid(BTreeMap::from([("model".to_owned(), vec!["The selected model is invalid.".to_owned()])])));
    };
    // 2. Server-side payload mapper.
    let mut payload = match rules.mapper {
        Some(mapper) => mapper.map(client_id, m, m.payload.clone()),
        None => m.payload.clone(),
    };
    let ts_us = m.timestamp.saturating_mul(1000);
    // 3. Conflict check, non-create only: older than the record's last write.
    if m.operation != Operation::Create
        && let Some(rec) = current.filter(|r| ts_us < r.updated_at_us)
    {
        let server = ServerRecord { data: rec.data.clone(), version: rec.version, updated_at_us: rec.updated_at_us };
        // The resolver sees the mapped payload: ClientWins/MergeFields must not undo the mapper.
        let mapped = Mutation { payload: payload.clone(), ..m.clone() };
        match rules.resolver.resolve(&mapped, &server) {
            Resolution::ServerWins => {
                let data = ConflictData {
                    server_state: state_with_key(&m.entity_id, &rec.data),
                    server_updated_at: rfc3339_from_us(rec.updated_at_us),
                };
                return Ok(Step::Conflict(Rejection::conflict(&m.mutation_id, data)));
            }
            Resolution::Apply(resolved) => payload = resolved,
        }
    }
    // 4. Apply (whitelisted, validated fields only).
    let after = match m.operation {
        Operation::Create | Operation::Update => {
            if m.operation == Operation::Update && current.is_none() {
                return Ok(Step::Rejected(Rejection::simple(&m.mutation_id, RejectionReason::NotFound)));
            }
            let data = match spec.validate(&payload) {
                Ok(data) => data,
                Err(messages) => return Ok(invalid(messages)),
            };
            let updated = current.map_or(ts_us, |r| r.updated_at_us.max(ts_us));
            Some(db::upsert(conn, &m.model, &m.entity_id, &data, m.version, updated, clock.next())?)
        }
        Operation::Delete => {
            if current.is_none() {
                return Ok(Step::Rejected(Rejection::simple(&m.mutation_id, RejectionReason::NotFound)));
            }
            db::soft_delete(conn, &m.model, &m.entity_id, m.version, ts_us, clock.next())?;
            None
        }
    };
    // 5. The server mutation log.
    db::log_mutation(conn, &m.mutation_id, client_id, &m.model, &m.entity_id, m.operation.as_str(), chrono::Utc::now().timestamp_micros())?;
    Ok(Step::Applied { after })
}

/// Default page size of a pull without `limit`.
pub const DEFAULT_PULL_LIMIT: u32 = 100;
/// Largest page a pull may ask for.
pub const MAX_PULL_LIMIT: u32 = 1000;

pub(crate) fn pull(db: &Db, req: &PullRequest) -> rusqlite::Result<PullResponse> {
    let limit = req.limit.unwrap_or(DEFAULT_PULL_LIMIT).clamp(1, MAX_PULL_LIMIT) as usize;
    let mut rows = db::changed_since(&db.conn, req.last_sync_cursor, limit + 1)?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let new_sync_cursor = rows.last().map(|r| r.changed_us).or(req.last_sync_cursor);
    let snapshots = rows
        .into_iter()
        .map(|r| Snapshot {
            entity_id: r.entity_id,
            model: r.model,
            operation: if r.deleted { SnapshotOperation::Delete } else { SnapshotOperation::Upsert },
            payload: if r.deleted { Object::new() } else { r.data },
        })
        .collect();
    Ok(PullResponse { snapshots, new_sync_cursor, has_more })
}
