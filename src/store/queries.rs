//! The parameterised reads of the captured rows that the pages, the read-side benchmark and
//! the tests share. Every query is a constant SQL text (fragments chosen by code, never by
//! input) with server-side parameters for every value; raw reads put the time range first so
//! the `(started_at, request_id[, position])` sort keys prune parts, and filter by the columns
//! that have skip indexes (`request_id`, `client_id`, `mutation_id`, `entity_id`, `model`).

// Crate-internal: reached from outside only through the hidden `tether_pro::internals`, for
// this crate's tests and benchmarks. Its row structs are the `SELECT` lists below, field by
// field, so they carry no docs of their own.
#![allow(missing_docs)]

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::schema::MutationOutcome;

/// A `sync_requests` row as a list shows it.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct RequestSummary {
    pub request_id: String,
    pub kind: String,
    pub client_id: String,
    pub client_version: String,
    pub started_us: i64,
    pub duration_us: u64,
    pub http_status: u16,
    pub outcome: String,
    pub mutation_count: u32,
    pub applied_count: u32,
    pub rejected_count: u32,
    pub conflict_count: u32,
    pub duplicate_count: u32,
    pub snapshot_count: u32,
}

const SUMMARY_COLUMNS: &str = "request_id, kind, client_id, client_version, toUnixTimestamp64Micro(started_at) AS started_us,
    duration_us, http_status, outcome, mutation_count, applied_count, rejected_count, conflict_count, duplicate_count,
    snapshot_count";

/// A whole `sync_requests` row, for the detail page.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct RequestDetail {
    pub request_id: String,
    pub kind: String,
    pub client_id: String,
    pub client_version: String,
    pub started_us: i64,
    pub duration_us: u64,
    pub http_status: u16,
    pub outcome: String,
    pub mutation_count: u32,
    pub applied_count: u32,
    pub rejected_count: u32,
    pub conflict_count: u32,
    pub duplicate_count: u32,
    pub reason_keys: Vec<String>,
    pub reason_counts: Vec<u32>,
    pub snapshot_count: u32,
    pub has_more: bool,
    pub request_body: String,
    pub request_body_bytes: u64,
    pub request_body_truncated: bool,
    /// Positions whose payload is in the mutation rows, not in `request_body`
    /// (`pipeline::envelope`).
    pub request_body_moved: Vec<u32>,
    pub response_body: String,
    pub response_body_bytes: u64,
    pub response_body_truncated: bool,
    pub error: String,
    pub trace_id: String,
    pub span_id: String,
    pub replay_of: String,
}

const DETAIL_COLUMNS: &str = "request_id, kind, client_id, client_version, toUnixTimestamp64Micro(started_at) AS started_us,
    duration_us, http_status, outcome, mutation_count, applied_count, rejected_count, conflict_count, duplicate_count,
    CAST(mapKeys(rejected_by_reason), 'Array(String)') AS reason_keys, mapValues(rejected_by_reason) AS reason_counts,
    snapshot_count, has_more, request_body, request_body_bytes, request_body_truncated, request_body_moved, response_body,
    response_body_bytes, response_body_truncated, error, trace_id, span_id, replay_of";

/// A `sync_mutations` row.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct Mutation {
    pub request_id: String,
    pub started_us: i64,
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    pub client_id: String,
    /// `None`: the mutation's timestamp was missing or invalid (`client_ts_raw` says what came).
    pub client_ts_ms: Option<i64>,
    pub client_ts_raw: String,
    pub version: u64,
    pub outcome: String,
    pub reason: String,
    pub reason_data: String,
    pub payload: String,
    pub state_before: String,
    pub state_after: String,
    pub has_state: bool,
    /// False: the capture policy kept this applied mutation without payload, states or diff.
    pub detail_kept: bool,
    pub diff: String,
}

const MUTATION_COLUMNS: &str = "request_id, toUnixTimestamp64Micro(started_at) AS started_us, position, mutation_id,
    entity_id, model, operation, client_id, toUnixTimestamp64Milli(client_timestamp) AS client_ts_ms, client_timestamp_raw AS client_ts_raw, version, outcome,
    reason, reason_data, payload, state_before, state_after, has_state, detail_kept, diff";

/// The few columns of a mutation a short list shows.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct MutationBrief {
    pub request_id: String,
    pub started_us: i64,
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    pub client_id: String,
    pub outcome: String,
    pub reason: String,
}

const BRIEF_COLUMNS: &str = "request_id, toUnixTimestamp64Micro(started_at) AS started_us, position, mutation_id,
    entity_id, model, operation, client_id, outcome, reason";

/// One line of the failures table.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct FailureGroup {
    pub reason: String,
    pub model: String,
    pub client_id: String,
    pub failures: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub example_mutation_id: String,
    pub example_request_id: String,
}

/// A key and a count.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct KeyCount {
    pub key: String,
    pub n: u64,
}

/// Where a list page resumes: strictly older than this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub started_us: i64,
    pub request_id: String,
    /// Only for mutation lists.
    pub position: u32,
}

/// Filters of the requests list (all optional).
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub client_id: Option<String>,
    pub model: Option<String>,
    pub mutation_id: Option<String>,
    pub entity_id: Option<String>,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
}

/// A SQL text assembled from constant fragments, and the parameters it references.
struct Sql {
    text: String,
    strings: Vec<(&'static str, String)>,
    ints: Vec<(&'static str, i64)>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Sql { text: text.to_owned(), strings: Vec::new(), ints: Vec::new() }
    }
    fn push(&mut self, fragment: &str) {
        self.text.push_str(fragment);
    }
    fn string(&mut self, name: &'static str, v: &str) {
        self.strings.push((name, v.to_owned()));
    }
    fn int(&mut self, name: &'static str, v: i64) {
        self.ints.push((name, v));
    }
    fn query(&self, c: &clickhouse::Client) -> clickhouse::query::Query {
        let mut q = c.query_raw(&self.text);
        for (k, v) in &self.strings {
            q = q.param(k, v);
        }
        for (k, v) in &self.ints {
            q = q.param(k, v);
        }
        q
    }
}

const AT_LEAST_FROM: &str = " AND started_at >= fromUnixTimestamp64Micro({from_us:Int64}, 'UTC')";
const BEFORE_TO: &str = " AND started_at < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')";
const NOT_AFTER_CURSOR: &str = " AND started_at <= fromUnixTimestamp64Micro({cursor_us:Int64}, 'UTC')";

/// The requests list: newest first, at most `limit` rows older than `cursor`.
pub async fn list_requests(
    c: &clickhouse::Client,
    f: &RequestFilter,
    cursor: Option<&Cursor>,
    limit: u64,
) -> clickhouse::error::Result<Vec<RequestSummary>> {
    let mut sql = Sql::new(&format!("SELECT {SUMMARY_COLUMNS} FROM sync_requests WHERE 1"));
    // Time first (the sort key), shared with the mutation subquery.
    let mut time = String::new();
    if let Some(from) = f.from_us {
        time.push_str(AT_LEAST_FROM);
        sql.int("from_us", from);
    }
    if let Some(to) = f.to_us {
        time.push_str(BEFORE_TO);
        sql.int("to_us", to);
    }
    if let Some(cur) = cursor {
        time.push_str(NOT_AFTER_CURSOR);
        sql.int("cursor_us", cur.started_us);
    }
    sql.push(&time);
    if let Some(cur) = cursor {
        sql.push(
            " AND (started_at < fromUnixTimestamp64Micro({cursor_us:Int64}, 'UTC') OR request_id < {cursor_id:String})",
        );
        sql.string("cursor_id", &cur.request_id);
    }
    if let Some(v) = &f.kind {
        sql.push(" AND kind = {kind:String}");
        sql.string("kind", v);
    }
    if let Some(v) = &f.outcome {
        sql.push(" AND outcome = {outcome:String}");
        sql.string("outcome", v);
    }
    if let Some(v) = &f.client_id {
        sql.push(" AND client_id = {client_id:String}");
        sql.string("client_id", v);
    }
    if f.model.is_some() || f.mutation_id.is_some() || f.entity_id.is_some() {
        sql.push(" AND request_id IN (SELECT request_id FROM sync_mutations WHERE 1");
        sql.push(&time);
        if f.client_id.is_some() {
            sql.push(" AND client_id = {client_id:String}");
        }
        if let Some(v) = &f.model {
            sql.push(" AND model = {model:String}");
            sql.string("model", v);
        }
        if let Some(v) = &f.mutation_id {
            sql.push(" AND mutation_id = {mutation_id:String}");
            sql.string("mutation_id", v);
        }
        if let Some(v) = &f.entity_id {
            sql.push(" AND entity_id = {entity_id:String}");
            sql.string("entity_id", v);
        }
        sql.push(")");
    }
    sql.push(" ORDER BY started_at DESC, request_id DESC LIMIT {limit:UInt64}");
    sql.query(c).param("limit", limit).fetch_all().await
}

/// The millisecond time a ULID carries, when `id` is one.
fn ulid_ms(id: &str) -> Option<i64> {
    if !crate::protocol::is_ulid(id) {
        return None;
    }
    ulid::Ulid::from_string(id).ok().and_then(|u| i64::try_from(u.timestamp_ms()).ok())
}

/// One request by id. Request ids are ULIDs minted on arrival, so the id's own time bounds
/// `started_at` (one hour either side) and the lookup reads one or two daily partitions; an
/// id minted elsewhere falls back to the `request_id` bloom filter alone.
pub async fn request(c: &clickhouse::Client, id: &str) -> clickhouse::error::Result<Option<RequestDetail>> {
    const HOUR_US: i64 = 3_600_000_000;
    if let Some(ms) = ulid_ms(id) {
        let us = ms.saturating_mul(1000);
        let found = c
            .query_raw(&format!(
                "SELECT {DETAIL_COLUMNS} FROM sync_requests
                 WHERE started_at >= fromUnixTimestamp64Micro({{from_us:Int64}}, 'UTC')
                   AND started_at < fromUnixTimestamp64Micro({{to_us:Int64}}, 'UTC')
                   AND request_id = {{id:String}} LIMIT 1"
            ))
            .param("from_us", us.saturating_sub(HOUR_US).max(0))
            .param("to_us", us.saturating_add(HOUR_US))
            .param("id", id)
            .fetch_optional()
            .await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    c.query_raw(&format!("SELECT {DETAIL_COLUMNS} FROM sync_requests WHERE request_id = {{id:String}} LIMIT 1"))
        .param("id", id)
        .fetch_optional()
        .await
}

/// How many mutation rows a request has (exact sort-key prefix).
pub async fn mutation_count(c: &clickhouse::Client, started_us: i64, id: &str) -> clickhouse::error::Result<u64> {
    c.query_raw(
        "SELECT count() FROM sync_mutations
         WHERE started_at = fromUnixTimestamp64Micro({t:Int64}, 'UTC') AND request_id = {id:String}",
    )
    .param("t", started_us)
    .param("id", id)
    .fetch_one()
    .await
}

/// Mutations `[first, first + limit)` of a request, by position.
pub async fn mutations_page(
    c: &clickhouse::Client,
    started_us: i64,
    id: &str,
    first: u64,
    limit: u64,
) -> clickhouse::error::Result<Vec<Mutation>> {
    c.query_raw(&format!(
        "SELECT {MUTATION_COLUMNS} FROM sync_mutations
         WHERE started_at = fromUnixTimestamp64Micro({{t:Int64}}, 'UTC') AND request_id = {{id:String}}
           AND position >= {{first:UInt64}} AND position < {{end:UInt64}}
         ORDER BY position LIMIT {{limit:UInt64}}"
    ))
    .param("t", started_us)
    .param("id", id)
    .param("first", first)
    .param("end", first.saturating_add(limit))
    .param("limit", limit)
    .fetch_all()
    .await
}

/// The payloads of a request's mutations at `positions` (the request body's moved payloads).
pub async fn moved_payloads(
    c: &clickhouse::Client,
    started_us: i64,
    id: &str,
    positions: &[u32],
) -> clickhouse::error::Result<Vec<super::rows::MovedPayload>> {
    c.query_raw(
        "SELECT position, payload, detail_kept FROM sync_mutations
         WHERE started_at = fromUnixTimestamp64Micro({t:Int64}, 'UTC') AND request_id = {id:String}
           AND has({positions:Array(UInt32)}, position)
         ORDER BY position LIMIT 1 BY position",
    )
    .param("t", started_us)
    .param("id", id)
    .param("positions", positions)
    .fetch_all()
    .await
}

/// The latest mutations with `outcome` since `from`.
pub async fn latest_mutations(
    c: &clickhouse::Client,
    outcome: MutationOutcome,
    from: DateTime<Utc>,
    limit: u64,
) -> clickhouse::error::Result<Vec<MutationBrief>> {
    c.query_raw(&format!(
        "SELECT {BRIEF_COLUMNS} FROM sync_mutations
         WHERE started_at >= fromUnixTimestamp64Micro({{from_us:Int64}}, 'UTC') AND outcome = {{outcome:String}}
         ORDER BY started_at DESC, request_id DESC, position DESC LIMIT {{limit:UInt64}}"
    ))
    .param("from_us", from.timestamp_micros())
    .param("outcome", outcome.as_str())
    .param("limit", limit)
    .fetch_all()
    .await
}

/// Conflicts in `[from, to)`, newest first, older than `cursor`.
pub async fn conflicts(
    c: &clickhouse::Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cursor: Option<&Cursor>,
    limit: u64,
) -> clickhouse::error::Result<Vec<Mutation>> {
    let mut sql = Sql::new(&format!("SELECT {MUTATION_COLUMNS} FROM sync_mutations WHERE 1"));
    sql.push(AT_LEAST_FROM);
    sql.push(BEFORE_TO);
    sql.int("from_us", from.timestamp_micros());
    sql.int("to_us", to.timestamp_micros());
    if let Some(cur) = cursor {
        sql.push(NOT_AFTER_CURSOR);
        sql.push(
            " AND (started_at < fromUnixTimestamp64Micro({cursor_us:Int64}, 'UTC') OR request_id < {cursor_id:String}
                   OR (request_id = {cursor_id:String} AND position < {cursor_pos:Int64}))",
        );
        sql.int("cursor_us", cur.started_us);
        sql.string("cursor_id", &cur.request_id);
        sql.int("cursor_pos", i64::from(cur.position));
    }
    sql.push(" AND outcome = 'conflict' ORDER BY started_at DESC, request_id DESC, position DESC LIMIT {limit:UInt64}");
    sql.query(c).param("limit", limit).fetch_all().await
}

const BUCKETS: &str = "bucket >= toDateTime({from:Int64}, 'UTC') AND bucket < toDateTime({to:Int64}, 'UTC')";

/// Mutations with `outcome` in the window per `key` (`model` or `client_id`), from the
/// five-minute aggregate.
pub async fn outcome_counts_by(
    c: &clickhouse::Client,
    key: Key,
    outcome: MutationOutcome,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> clickhouse::error::Result<Vec<KeyCount>> {
    let column = match key {
        Key::Model => "model",
        Key::Client => "client_id",
    };
    c.query_raw(&format!(
        "SELECT toString({column}) AS key, sum(mutations) AS n FROM sync_mutations_5m
         WHERE {BUCKETS} AND outcome = {{outcome:String}}
         GROUP BY key ORDER BY n DESC, key LIMIT {{limit:UInt64}}"
    ))
    .param("from", from.timestamp())
    .param("to", to.timestamp())
    .param("outcome", outcome.as_str())
    .param("limit", limit)
    .fetch_all()
    .await
}

/// A grouping column of the aggregate (chosen by code, never by input).
#[derive(Debug, Clone, Copy)]
pub enum Key {
    Model,
    Client,
}

/// Failed mutations in `[from, to)` by reason, model and client: rejected by the host, or
/// unprocessed because the host refused the push as a whole (e.g. a body it could not parse).
pub async fn failure_groups(
    c: &clickhouse::Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> clickhouse::error::Result<Vec<FailureGroup>> {
    c.query_raw(
        "SELECT toString(reason) AS reason, toString(model) AS model, client_id, count() AS failures,
                toUnixTimestamp64Micro(min(started_at)) AS first_us, toUnixTimestamp64Micro(max(started_at)) AS last_us,
                argMax(mutation_id, started_at) AS example_mutation_id, argMax(request_id, started_at) AS example_request_id
         FROM sync_mutations
         WHERE started_at >= fromUnixTimestamp64Micro({from_us:Int64}, 'UTC')
           AND started_at < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
           AND outcome IN ('rejected', 'unprocessed')
         GROUP BY reason, model, client_id
         ORDER BY failures DESC, last_us DESC, reason, model, client_id LIMIT {limit:UInt64}",
    )
    .param("from_us", from.timestamp_micros())
    .param("to_us", to.timestamp_micros())
    .param("limit", limit)
    .fetch_all()
    .await
}

/// One client's requests, newest first, older than `cursor`, within optional bounds.
pub async fn client_requests(
    c: &clickhouse::Client,
    client_id: &str,
    from_us: Option<i64>,
    to_us: Option<i64>,
    cursor: Option<&Cursor>,
    limit: u64,
) -> clickhouse::error::Result<Vec<RequestSummary>> {
    let f = RequestFilter { client_id: Some(client_id.to_owned()), from_us, to_us, ..RequestFilter::default() };
    list_requests(c, &f, cursor, limit).await
}

/// The first `per_request` mutations of each of `requests` (all from `client_id`).
pub async fn mutations_of(
    c: &clickhouse::Client,
    client_id: &str,
    requests: &[RequestSummary],
    per_request: u64,
) -> clickhouse::error::Result<Vec<MutationBrief>> {
    let pushes: Vec<&RequestSummary> = requests.iter().filter(|r| r.mutation_count > 0).collect();
    let (Some(lo), Some(hi)) = (pushes.iter().map(|r| r.started_us).min(), pushes.iter().map(|r| r.started_us).max()) else {
        return Ok(Vec::new());
    };
    let ids: Vec<&str> = pushes.iter().map(|r| r.request_id.as_str()).collect();
    c.query_raw(&format!(
        "SELECT {BRIEF_COLUMNS} FROM sync_mutations
         WHERE started_at >= fromUnixTimestamp64Micro({{lo:Int64}}, 'UTC')
           AND started_at <= fromUnixTimestamp64Micro({{hi:Int64}}, 'UTC')
           AND client_id = {{client_id:String}} AND request_id IN {{ids:Array(String)}}
         ORDER BY started_at DESC, request_id, position LIMIT {{per:UInt64}} BY request_id"
    ))
    .param("lo", lo)
    .param("hi", hi)
    .param("client_id", client_id)
    .param("ids", ids)
    .param("per", per_request)
    .fetch_all()
    .await
}

/// Whether a request with this id exists.
pub async fn request_exists(c: &clickhouse::Client, id: &str) -> clickhouse::error::Result<bool> {
    Ok(request(c, id).await?.is_some())
}

/// Whether any mutation row has `column` = `value` (`mutation_id` or `entity_id`).
pub async fn mutation_exists(c: &clickhouse::Client, by: MutationKey, value: &str) -> clickhouse::error::Result<bool> {
    let sql = match by {
        MutationKey::MutationId => "SELECT count() FROM (SELECT 1 FROM sync_mutations WHERE mutation_id = {v:String} LIMIT 1)",
        MutationKey::EntityId => "SELECT count() FROM (SELECT 1 FROM sync_mutations WHERE entity_id = {v:String} LIMIT 1)",
    };
    let n: u64 = c.query_raw(sql).param("v", value).fetch_one().await?;
    Ok(n > 0)
}

/// A mutation column the search box looks in.
#[derive(Debug, Clone, Copy)]
pub enum MutationKey {
    MutationId,
    EntityId,
}

/// The identity of a captured request, as replay reads it.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct RequestHead {
    pub kind: String,
    pub client_id: String,
    pub client_version: String,
}

/// A captured request's kind and client (`None`: no such request).
pub async fn request_head(c: &clickhouse::Client, request_id: &str) -> clickhouse::error::Result<Option<RequestHead>> {
    c.query_raw("SELECT kind, client_id, client_version FROM sync_requests WHERE request_id = {id:String} LIMIT 1")
        .param("id", request_id)
        .fetch_optional()
        .await
}

/// A `sync_mutations` row as replay needs it: what to resend, and which values were redacted.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct ReplayableMutation {
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    pub payload: String,
    /// The client timestamp in epoch milliseconds (`None`: missing or invalid when captured).
    pub client_ms: Option<i64>,
    pub version: u64,
    pub outcome: String,
    pub redacted_paths: Vec<String>,
    pub redacted_paths_recorded: bool,
    pub detail_kept: bool,
}

/// Every mutation of one captured push, in body order.
pub async fn replayable_mutations(c: &clickhouse::Client, request_id: &str) -> clickhouse::error::Result<Vec<ReplayableMutation>> {
    c.query_raw(
        "SELECT position, mutation_id, entity_id, model, operation, payload,
                toUnixTimestamp64Milli(client_timestamp) AS client_ms, version, outcome,
                redacted_paths, redacted_paths_recorded, detail_kept
         FROM sync_mutations WHERE request_id = {id:String} ORDER BY position",
    )
    .param("id", request_id)
    .fetch_all()
    .await
}

/// The requests that replayed `request_id`, newest first, at most `limit`.
pub async fn replays_of(c: &clickhouse::Client, request_id: &str, limit: u64) -> clickhouse::error::Result<Vec<String>> {
    c.query_raw("SELECT request_id FROM sync_requests WHERE replay_of = {id:String} ORDER BY started_at DESC LIMIT {limit:UInt64}")
        .param("id", request_id)
        .param("limit", limit)
        .fetch_all()
        .await
}

/// One mutation of a record's history (`/records/{model}/{entity_id}`).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct HistoryRow {
    pub request_id: String,
    pub started_us: i64,
    pub position: u32,
    pub mutation_id: String,
    pub client_id: String,
    pub client_ts_ms: Option<i64>,
    pub client_ts_raw: String,
    pub operation: String,
    pub version: u64,
    pub outcome: String,
    pub reason: String,
    pub reason_data: String,
    pub diff: String,
    pub detail_kept: bool,
    pub trace_id: String,
}

const HISTORY_COLUMNS: &str = "request_id, toUnixTimestamp64Micro(started_at) AS started_us, position, mutation_id, client_id,
    toUnixTimestamp64Milli(client_timestamp) AS client_ts_ms, client_timestamp_raw AS client_ts_raw, operation, version,
    outcome, reason, reason_data, diff, detail_kept, trace_id";

/// A record's mutations in the order the server processed them (request arrival, then
/// position in the push), after `cursor`. The `entity_id` skip index finds the granules.
pub async fn record_history(
    c: &clickhouse::Client,
    model: &str,
    entity_id: &str,
    cursor: Option<&Cursor>,
    limit: u64,
) -> clickhouse::error::Result<Vec<HistoryRow>> {
    let after = if cursor.is_some() {
        " AND (started_at, request_id, position) > (fromUnixTimestamp64Micro({cur_us:Int64}, 'UTC'), {cur_id:String}, {cur_pos:UInt32})"
    } else {
        ""
    };
    let cur = cursor.cloned().unwrap_or(Cursor { started_us: 0, request_id: String::new(), position: 0 });
    c.query_raw(&format!(
        "SELECT {HISTORY_COLUMNS} FROM sync_mutations WHERE entity_id = {{entity:String}} AND model = {{model:String}}{after}
         ORDER BY started_at, request_id, position LIMIT {{limit:UInt64}}"
    ))
    .param("entity", entity_id)
    .param("model", model)
    .param("cur_us", cur.started_us)
    .param("cur_id", cur.request_id)
    .param("cur_pos", cur.position)
    .param("limit", limit)
    .fetch_all()
    .await
}

/// Counts over a record's whole history.
#[derive(Debug, Clone, Default, clickhouse::Row, Deserialize)]
pub struct HistoryCounts {
    pub mutations: u64,
    pub applied: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub clients: u64,
}

/// One point of a record's timeline strip.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct HistoryPoint {
    pub started_us: i64,
    pub client_id: String,
    pub outcome: String,
}

/// The record's counts, and its first `points` mutations as timeline points.
pub async fn record_overview(
    c: &clickhouse::Client,
    model: &str,
    entity_id: &str,
    points: u64,
) -> clickhouse::error::Result<(HistoryCounts, Vec<HistoryPoint>)> {
    let counts = async {
        c.query_raw(
            "SELECT count() AS mutations, countIf(outcome = 'applied') AS applied, countIf(outcome = 'conflict') AS conflicts,
                    countIf(outcome = 'rejected') AS rejected, uniqExact(client_id) AS clients
             FROM sync_mutations WHERE entity_id = {entity:String} AND model = {model:String}",
        )
        .param("entity", entity_id)
        .param("model", model)
        .fetch_one::<HistoryCounts>()
        .await
    };
    let pts = async {
        c.query_raw(
            "SELECT toUnixTimestamp64Micro(started_at) AS started_us, client_id, outcome FROM sync_mutations
             WHERE entity_id = {entity:String} AND model = {model:String}
             ORDER BY started_at, request_id, position LIMIT {points:UInt64}",
        )
        .param("entity", entity_id)
        .param("model", model)
        .param("points", points)
        .fetch_all()
        .await
    };
    tokio::try_join!(counts, pts)
}

/// `client_version` of each of `requests` (the mutation rows do not carry it).
pub async fn client_versions(c: &clickhouse::Client, rows: &[HistoryRow]) -> clickhouse::error::Result<Vec<(String, String)>> {
    let (Some(lo), Some(hi)) = (rows.iter().map(|r| r.started_us).min(), rows.iter().map(|r| r.started_us).max()) else {
        return Ok(Vec::new());
    };
    let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    c.query_raw(
        "SELECT request_id, client_version FROM sync_requests
         WHERE started_at >= fromUnixTimestamp64Micro({lo:Int64}, 'UTC') AND started_at <= fromUnixTimestamp64Micro({hi:Int64}, 'UTC')
           AND request_id IN {ids:Array(String)}",
    )
    .param("lo", lo)
    .param("hi", hi)
    .param("ids", ids)
    .fetch_all()
    .await
}

/// A replay of one of a record's mutations.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct MutationReplay {
    pub original_mutation_id: String,
    pub replay_id: String,
    pub clone_mutation_id: String,
    pub status: String,
}

/// The replays of `mutation_ids`, oldest first.
pub async fn replays_of_mutations(c: &clickhouse::Client, mutation_ids: &[&str]) -> clickhouse::error::Result<Vec<MutationReplay>> {
    if mutation_ids.is_empty() {
        return Ok(Vec::new());
    }
    let links = super::links::latest("original_mutation_id IN {ids:Array(String)}", "created_at, replay_id, position");
    c.query_raw(&format!("SELECT original_mutation_id, replay_id, clone_mutation_id, status FROM ({links})"))
    .param("ids", mutation_ids)
    .fetch_all()
    .await
}

/// For a conflict: the write that gave the record the `updated_at` it was checked against.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct ConflictWinner {
    /// The conflict's push and position.
    pub conflict_request_id: String,
    pub conflict_position: u32,
    pub request_id: String,
    pub position: u32,
    pub mutation_id: String,
    pub client_id: String,
    pub started_us: i64,
    pub client_ts_ms: Option<i64>,
    pub version: u64,
    pub diff: String,
}

/// For each conflict with one of `mutation_ids` on one of `entity_ids`, the write that gave
/// the record the `updated_at` it was checked against: of the applied mutations of the same
/// record (model and entity id) processed before it (arrival, then position), the one with
/// the latest client timestamp (the server keeps `updated_at` at the newest edit it applied;
/// a create is applied whatever its time, so the last one applied is not always it). Callers
/// match the answers to their conflicts by (`conflict_request_id`, `conflict_position`).
pub async fn conflict_winners(c: &clickhouse::Client, mutation_ids: &[&str], entity_ids: &[&str]) -> clickhouse::error::Result<Vec<ConflictWinner>> {
    if mutation_ids.is_empty() {
        return Ok(Vec::new());
    }
    // One order key (microseconds * 1000 + position) for "processed before"; `k` ranks the
    // candidates (client time, then order, then request id, so ties pick one row for every
    // column).
    c.query_raw(
        "SELECT l.request_id AS conflict_request_id, l.position AS conflict_position,
                argMax(w.request_id, w.k) AS request_id, argMax(w.position, w.k) AS position,
                argMax(w.mutation_id, w.k) AS mutation_id, argMax(w.client_id, w.k) AS client_id,
                argMax(w.started_us, w.k) AS started_us, argMax(w.client_ts_ms, w.k) AS client_ts_ms,
                argMax(w.version, w.k) AS version, argMax(w.diff, w.k) AS diff
         FROM (SELECT request_id, position, model, entity_id, toUnixTimestamp64Micro(started_at) * 1000 + position AS ord
               FROM sync_mutations WHERE mutation_id IN {ids:Array(String)} AND outcome = 'conflict') AS l
         INNER JOIN
              (SELECT request_id, position, mutation_id, model, entity_id, client_id, toUnixTimestamp64Micro(started_at) AS started_us,
                      toUnixTimestamp64Milli(client_timestamp) AS client_ts_ms, version, diff,
                      toUnixTimestamp64Micro(started_at) * 1000 + position AS ord,
                      tuple(ifNull(client_ts_ms, toInt64(-9223372036854775808)), ord, request_id) AS k
               FROM sync_mutations WHERE entity_id IN {entities:Array(String)} AND outcome = 'applied') AS w
         ON l.model = w.model AND l.entity_id = w.entity_id
         WHERE w.ord < l.ord
         GROUP BY l.request_id, l.position",
    )
    .param("ids", mutation_ids)
    .param("entities", entity_ids)
    .fetch_all()
    .await
}

/// The models that have a record with this entity id (at most `limit`).
pub async fn models_of_entity(c: &clickhouse::Client, entity_id: &str, limit: u64) -> clickhouse::error::Result<Vec<String>> {
    c.query_raw("SELECT DISTINCT model FROM sync_mutations WHERE entity_id = {entity:String} ORDER BY model LIMIT {limit:UInt64}")
        .param("entity", entity_id)
        .param("limit", limit)
        .fetch_all()
        .await
}

/// A client's clock against the server's, over its mutations in a range: delay = arrival of
/// the push minus the mutation's timestamp, in milliseconds.
#[derive(Debug, Clone, Default, clickhouse::Row, Deserialize)]
pub struct ClientClock {
    pub mutations: u64,
    /// Timestamps missing or invalid.
    pub invalid: u64,
    /// Timestamps more than 60 s after arrival (a clock ahead).
    pub future: u64,
    /// Median and largest delay over the valid timestamps (0 when none).
    pub median_delay_ms: i64,
    pub max_delay_ms: i64,
    /// The most negative delay (a timestamp ahead of arrival), 0 when none is.
    pub furthest_ahead_ms: i64,
}

/// `ClientClock` for `client_id` in `[from_us, to_us)` (either end open).
pub async fn client_clock(c: &clickhouse::Client, client_id: &str, from_us: Option<i64>, to_us: Option<i64>) -> clickhouse::error::Result<ClientClock> {
    c.query_raw(
        "SELECT count() AS mutations, countIf(delay IS NULL) AS invalid, countIf(delay < -60000) AS future,
                toInt64(ifNull(quantileExactIf(0.5)(delay, delay IS NOT NULL), 0)) AS median_delay_ms,
                toInt64(ifNull(maxIf(delay, delay IS NOT NULL), 0)) AS max_delay_ms,
                toInt64(greatest(0, -ifNull(minIf(delay, delay IS NOT NULL), 0))) AS furthest_ahead_ms
         FROM (SELECT toUnixTimestamp64Milli(started_at) - toUnixTimestamp64Milli(client_timestamp) AS delay FROM sync_mutations
               WHERE client_id = {client:String}
                 AND started_at >= fromUnixTimestamp64Micro({from:Int64}, 'UTC') AND started_at < fromUnixTimestamp64Micro({to:Int64}, 'UTC'))",
    )
    .param("client", client_id)
    .param("from", from_us.unwrap_or(0))
    .param("to", to_us.unwrap_or(4_102_444_800_000_000))
    .fetch_one()
    .await
}
