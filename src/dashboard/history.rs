//! A record's history (`/records/{model}/{entity_id}` and its `.json`): every captured mutation
//! of one record across clients, in the order the server processed them, with each conflict
//! explained by the write that beat it. The page and the JSON are built from this one model.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::store::queries::{self, ConflictWinner, Cursor};
use crate::store::schema::MutationOutcome;

/// Mutations per page of a record's history.
pub const HISTORY_PAGE_SIZE: usize = 50;
/// Mutations drawn in the timeline strip at most (the first ones; the counts cover all).
pub const TIMELINE_POINTS: u64 = 2000;

/// A page of one record's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordHistory {
    /// The record's model, as pushed.
    pub model: String,
    /// The record's entity id (its sync key value), as pushed.
    pub entity_id: String,
    /// Counts over the record's whole captured history, not just this page.
    pub counts: HistoryCounts,
    /// The record as the host has it now, redacted; `null` when the host offers no state
    /// lookup (replay is not configured), the lookup failed (`current_state_error`), or the
    /// host does not have the record.
    pub current_state: Option<Value>,
    /// Why the state lookup failed (redacted), when it did.
    pub current_state_error: Option<String>,
    /// This page's mutations, in the order the server processed them: by arrival of their
    /// push, then position in it.
    pub mutations: Vec<HistoryEntry>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Counts over a record's whole captured history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryCounts {
    /// Captured mutations of the record.
    pub mutations: u64,
    /// Of which applied.
    pub applied: u64,
    /// Of which answered with a conflict.
    pub conflicts: u64,
    /// Of which rejected (duplicates excluded).
    pub rejected: u64,
    /// Distinct clients that wrote it.
    pub clients: u64,
}

/// One mutation of the record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The push that carried it (`/requests/{request_id}`).
    pub request_id: String,
    /// Its index in that push, from 0.
    pub position: u32,
    /// The client's mutation id.
    pub mutation_id: String,
    /// The client that pushed it.
    pub client_id: String,
    /// The push's `X-Tether-Client-Version` header (empty when absent).
    pub client_version: String,
    /// The mutation's `timestamp` (client clock), RFC 3339 with milliseconds; `null` when it
    /// was missing or invalid (`client_time_raw` holds what came).
    pub client_time: Option<String>,
    /// The `timestamp` as sent, when it was not a valid time; empty otherwise.
    pub client_time_raw: String,
    /// When the push arrived at the server, RFC 3339 with microseconds.
    pub server_time: String,
    /// Arrival minus client time, in milliseconds: time offline plus the client clock's lag
    /// (negative: a clock ahead). `null` when the client time is invalid.
    pub delay_ms: Option<i64>,
    /// `create`, `update` or `delete` (as pushed).
    pub operation: String,
    /// The mutation's `version`.
    pub version: u64,
    /// `applied`, `rejected`, `conflict`, `duplicate` or `unprocessed`.
    pub outcome: String,
    /// The rejection reason; empty when applied.
    pub reason: String,
    /// The field-level diff it made (applied) or would have made (conflict: payload against
    /// the server's state): `[{path, change, old, new}]`, redacted; `null` when the capture
    /// policy did not keep this mutation's detail.
    pub diff: Option<Value>,
    /// The W3C trace id of its push; `null` when not traced.
    pub trace_id: Option<String>,
    /// Replays of this mutation, oldest first.
    pub replays: Vec<HistoryReplay>,
    /// For a conflict: what it lost to and why; `null` otherwise.
    pub conflict: Option<ConflictExplanation>,
}

/// A replay of a mutation.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryReplay {
    /// The replay (`replay_links.replay_id`).
    pub replay_id: String,
    /// The clone's fresh mutation id.
    pub clone_mutation_id: String,
    /// `pending`, `applied`, `rejected`, `conflict`, `duplicate` or `failed`.
    pub status: String,
}

/// Why a conflict happened: the Tether rule is that an update or delete whose `timestamp` is
/// older than the record's `updated_at` conflicts, and by default the server's version wins.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConflictExplanation {
    /// The write that gave the record the `updated_at` this mutation was checked against: of
    /// the writes to this record the server applied before it, the one with the latest client
    /// time. `null` when no such write was captured (it predates capture or retention).
    pub winner: Option<ConflictWinnerEntry>,
    /// The record's `updated_at` the server compared against, from the conflict answer; `null`
    /// when the answer did not carry it.
    pub server_updated_at: Option<String>,
    /// How much older this edit was than the write it lost to, in milliseconds: the winner's
    /// client time (else `server_updated_at`) minus this mutation's client time. `null` when a
    /// time is missing.
    pub edit_gap_ms: Option<i64>,
    /// How long this edit took to reach the server, in milliseconds: its arrival minus its
    /// client time. Offline time and clock skew look alike here (see the README).
    pub delay_ms: Option<i64>,
    /// Who won and why, in one sentence.
    pub summary: String,
}

/// The applied write a conflict lost to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConflictWinnerEntry {
    /// Its push.
    pub request_id: String,
    /// Its index in that push.
    pub position: u32,
    /// Its mutation id.
    pub mutation_id: String,
    /// The client that wrote it.
    pub client_id: String,
    /// When its push arrived, RFC 3339 with microseconds.
    pub server_time: String,
    /// Its `timestamp` (client clock), RFC 3339 with milliseconds; `null` when invalid.
    pub client_time: Option<String>,
    /// Its `version`.
    pub version: u64,
    /// What it changed: `[{path, change, old, new}]`, redacted; `null` when not kept.
    pub diff: Option<Value>,
}

fn rfc3339_us(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us).map_or_else(|| us.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn diff_json(text: &str, kept: bool) -> Option<Value> {
    if !kept {
        return None;
    }
    serde_json::from_str(text).ok().or(Some(Value::Array(Vec::new())))
}

/// A duration in words for the summary: `3 h 12 min`, `45 s`, `120 ms`.
pub fn span_words(ms: i64) -> String {
    let a = ms.unsigned_abs();
    match a {
        0..1_000 => format!("{a} ms"),
        1_000..60_000 => format!("{} s", a / 1_000),
        60_000..3_600_000 => format!("{} min {} s", a / 60_000, a % 60_000 / 1_000),
        3_600_000..86_400_000 => format!("{} h {} min", a / 3_600_000, a % 3_600_000 / 60_000),
        _ => format!("{} d {} h", a / 86_400_000, a % 86_400_000 / 3_600_000),
    }
}

fn server_updated_at(reason_data: &str) -> Option<String> {
    serde_json::from_str::<Value>(reason_data).ok()?.get("server_updated_at")?.as_str().map(str::to_owned)
}

/// The conflicting mutation, as far as its explanation needs it.
pub struct Lost<'a> {
    /// `create`, `update` or `delete`.
    pub operation: &'a str,
    /// Its `timestamp`, when valid.
    pub client_ts_ms: Option<i64>,
    /// When its push arrived.
    pub started_us: i64,
    /// The conflict answer's data (`server_state`, `server_updated_at`).
    pub reason_data: &'a str,
}

/// The winner found for the conflict at (`request_id`, `position`).
pub fn winner_of<'a>(winners: &'a [ConflictWinner], request_id: &str, position: u32) -> Option<&'a ConflictWinner> {
    winners.iter().find(|w| w.conflict_request_id == request_id && w.conflict_position == position)
}

/// Who won a conflict and why (see [`ConflictExplanation`]).
pub fn explain(row: &Lost<'_>, winner: Option<&ConflictWinner>) -> ConflictExplanation {
    let updated_at = server_updated_at(row.reason_data);
    let updated_ms = updated_at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp_millis());
    let edit_gap_ms = match (winner.and_then(|w| w.client_ts_ms).or(updated_ms), row.client_ts_ms) {
        (Some(w), Some(l)) => Some(w - l),
        _ => None,
    };
    let delay_ms = row.client_ts_ms.map(|l| row.started_us.div_euclid(1000) - l);
    // Why, in the Tether rule's terms; a later timestamp that still conflicted was decided by
    // the host's own rule.
    let why = match edit_gap_ms {
        Some(g) if g >= 0 => format!("this edit was made {} earlier by the clocks, and under the Tether rule an edit older than the record's updated_at conflicts", span_words(g)),
        Some(g) => format!("this edit's timestamp is {} later, so the host's own rule, not the Tether timestamp rule, decided", span_words(g)),
        None => "under the Tether rule an edit older than the record's updated_at conflicts".to_owned(),
    };
    let summary = match winner {
        Some(w) => format!(
            "The server's version won; this {} was not applied. Client {}'s write (mutation {}, version {}, arrived {}) gave the record its updated_at; {why}.",
            row.operation,
            w.client_id,
            w.mutation_id,
            w.version,
            rfc3339_us(w.started_us),
        ),
        None => format!(
            "The server's version won; this {} was not applied. The record's updated_at ({}) came from a write that was not captured; {why}.",
            row.operation,
            updated_at.as_deref().unwrap_or("not in the answer"),
        ),
    };
    ConflictExplanation {
        winner: winner.map(|w| ConflictWinnerEntry {
            request_id: w.request_id.clone(),
            position: w.position,
            mutation_id: w.mutation_id.clone(),
            client_id: w.client_id.clone(),
            server_time: rfc3339_us(w.started_us),
            client_time: w.client_ts_ms.map(rfc3339_ms),
            version: w.version,
            diff: diff_json(&w.diff, true),
        }),
        server_updated_at: updated_at,
        edit_gap_ms,
        delay_ms,
        summary,
    }
}

/// Everything but the current state, which the caller looks up (it needs the replay target).
pub async fn load(c: &clickhouse::Client, model: &str, entity_id: &str, after: Option<&Cursor>) -> clickhouse::error::Result<(RecordHistory, Vec<queries::HistoryPoint>)> {
    // Two rounds of statements that do not depend on each other, each run concurrently: the
    // page waits for the slowest of each, not for the sum.
    let (mut rows, (counts, points)) = tokio::try_join!(
        queries::record_history(c, model, entity_id, after, HISTORY_PAGE_SIZE as u64 + 1),
        queries::record_overview(c, model, entity_id, TIMELINE_POINTS),
    )?;
    let more = rows.len() > HISTORY_PAGE_SIZE;
    rows.truncate(HISTORY_PAGE_SIZE);
    let ids: Vec<&str> = rows.iter().map(|r| r.mutation_id.as_str()).collect();
    let conflict_ids: Vec<&str> = rows.iter().filter(|r| r.outcome == MutationOutcome::Conflict).map(|r| r.mutation_id.as_str()).collect();
    let entities = [entity_id];
    let (versions, replays, winners) = tokio::try_join!(
        queries::client_versions(c, &rows),
        queries::replays_of_mutations(c, &ids),
        queries::conflict_winners(c, &conflict_ids, &entities),
    )?;
    let next_cursor = more.then(|| {
        let last = rows.last().expect("a full page");
        crate::dashboard::pages::encode_cursor(&Cursor { started_us: last.started_us, request_id: last.request_id.clone(), position: last.position })
    });
    let mutations = rows
        .iter()
        .map(|r| HistoryEntry {
            request_id: r.request_id.clone(),
            position: r.position,
            mutation_id: r.mutation_id.clone(),
            client_id: r.client_id.clone(),
            client_version: versions.iter().find(|(id, _)| *id == r.request_id).map(|(_, v)| v.clone()).unwrap_or_default(),
            client_time: r.client_ts_ms.map(rfc3339_ms),
            client_time_raw: if r.client_ts_ms.is_some() { String::new() } else { r.client_ts_raw.clone() },
            server_time: rfc3339_us(r.started_us),
            delay_ms: r.client_ts_ms.map(|l| r.started_us.div_euclid(1000) - l),
            operation: r.operation.clone(),
            version: r.version,
            outcome: r.outcome.clone(),
            reason: r.reason.clone(),
            diff: diff_json(&r.diff, r.detail_kept),
            trace_id: (!r.trace_id.is_empty()).then(|| r.trace_id.clone()),
            replays: replays
                .iter()
                .filter(|x| x.original_mutation_id == r.mutation_id)
                .map(|x| HistoryReplay { replay_id: x.replay_id.clone(), clone_mutation_id: x.clone_mutation_id.clone(), status: x.status.clone() })
                .collect(),
            conflict: (r.outcome == MutationOutcome::Conflict).then(|| {
                let lost = Lost { operation: &r.operation, client_ts_ms: r.client_ts_ms, started_us: r.started_us, reason_data: &r.reason_data };
                explain(&lost, winner_of(&winners, &r.request_id, r.position))
            }),
        })
        .collect();
    let counts = HistoryCounts { mutations: counts.mutations, applied: counts.applied, conflicts: counts.conflicts, rejected: counts.rejected, clients: counts.clients };
    Ok((RecordHistory { model: model.to_owned(), entity_id: entity_id.to_owned(), counts, current_state: None, current_state_error: None, mutations, next_cursor }, points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_words() {
        for (ms, words) in [(0, "0 ms"), (999, "999 ms"), (45_000, "45 s"), (-45_000, "45 s"), (192_000, "3 min 12 s"), (11_520_000, "3 h 12 min"), (90_000_000, "1 d 1 h")] {
            assert_eq!(span_words(ms), words, "{ms}");
        }
    }
}
