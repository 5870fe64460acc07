//! Synthetic traffic generated inside ClickHouse (`INSERT ... SELECT FROM numbers()`), so 100
//! million mutation rows take minutes instead of shipping gigabytes from Rust. The rows go into
//! the raw tables exactly as the capture pipeline's do, so the materialized views fill the
//! five-minute aggregates the same way.
//!
//! Every value is a hash of the request number (and the mutation's position), so the request
//! rows and their mutation rows agree: a request's applied/rejected/conflict/duplicate counts
//! are the outcomes of its mutation rows, and both carry the same id, time and client.

use std::time::Instant;

/// How big a run is, and when it happens.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests in total (pushes and pulls).
    pub requests: u64,
    /// First microsecond of the traffic; requests are spread evenly (with jitter, in time
    /// order) over `span_us` from here.
    pub start_us: i64,
    pub span_us: i64,
    /// Requests per `INSERT` statement (each becomes blocks of about a million rows).
    pub chunk: u64,
}

/// Clients: `client-00000` … `client-09999`; a skewed choice (square of a uniform) gives the
/// top client about 1 % of the traffic and a long tail, like a real fleet.
const CLIENTS: u32 = 10_000;

/// One row per request with everything its mutation rows need. `rolls` holds one number in
/// 0..1000 per mutation (the outcome draw), so request counts and mutation rows agree.
fn source(plan: &Plan) -> String {
    let step = (plan.span_us as u64 / plan.requests.max(1)).max(1);
    format!(
        "SELECT number AS n,
                cityHash64(number, 'tether-read-bench') AS h,
                {start} + intDiv(number * {span}, {total}) + (h % {step}) AS t_us,
                fromUnixTimestamp64Micro(t_us, 'UTC') AS at,
                if(h % 3 = 0, 'pull', 'push') AS kind_,
                toUInt32(floor({CLIENTS} * pow((bitShiftRight(h, 12) % 1000000) / 1000000.0, 2))) AS client_n,
                concat('client-', leftPad(toString(client_n), 5, '0')) AS client_,
                ['ios/3.2.1', 'ios/3.1.0', 'android/3.2.0', 'android/3.0.4', 'web/2.9.4'][1 + client_n % 5] AS version_,
                bitShiftRight(h, 32) % 200 = 0 AS failed_,
                if(kind_ = 'push', toUInt32(1 + bitShiftRight(h, 40) % 29), 0) AS m_count,
                arrayMap(p -> toUInt32(cityHash64(number, p) % 1000), range(m_count)) AS rolls,
                {ulid} AS rid,
                concat(hex(cityHash64(number, 't1')), hex(cityHash64(number, 't2'))) AS trace_,
                hex(cityHash64(number, 's')) AS span_
         FROM numbers({{lo:UInt64}}, {{len:UInt64}})",
        start = plan.start_us,
        span = plan.span_us,
        total = plan.requests,
        ulid = ulid_sql("intDiv(t_us, 1000)", "h"),
    )
}

/// A ULID for the millisecond `ms` with randomness from the 64-bit `seed`: what the capture
/// layer mints on arrival, so the pages' id-time lookup works on these rows too.
fn ulid_sql(ms: &str, seed: &str) -> String {
    const CROCKFORD: &str = "'0123456789ABCDEFGHJKMNPQRSTVWXYZ'";
    format!(
        "concat(
            arrayStringConcat(arrayMap(i -> substring({CROCKFORD}, toUInt8(bitAnd(bitShiftRight(toUInt64({ms}), 5 * (9 - i)), 31)) + 1, 1), range(10))),
            arrayStringConcat(arrayMap(i -> substring({CROCKFORD}, toUInt8(bitAnd(bitShiftRight(cityHash64({seed}, 'u'), 5 * i), 31)) + 1, 1), range(12))),
            arrayStringConcat(arrayMap(i -> substring({CROCKFORD}, toUInt8(bitAnd(bitShiftRight({seed}, 5 * i), 31)) + 1, 1), range(4))))"
    )
}

/// The outcome of a mutation from its draw: about 3 % conflicts, 2 % rejections (four
/// reasons), 0.6 % duplicates; every mutation of a push answered with a 500 is unprocessed.
const MUTATION_OUTCOME: &str = "multiIf(failed_, 'unprocessed', roll < 30, 'conflict', roll < 50, 'rejected', roll < 56, 'duplicate', 'applied')";
const MUTATION_REASON: &str = "multiIf(failed_, 'http_500', roll < 30, 'conflict',
        roll < 38, 'validation_failed', roll < 44, 'not_found', roll < 48, 'forbidden', roll < 50, 'error',
        roll < 56, 'duplicate', '')";

fn requests_sql(plan: &Plan) -> String {
    format!(
        "INSERT INTO sync_requests (request_id, kind, client_id, client_version, started_at, duration_us, http_status, outcome,
             mutation_count, applied_count, rejected_count, conflict_count, duplicate_count, snapshot_count, has_more,
             request_body, request_body_bytes, response_body, response_body_bytes, error, trace_id, span_id)
         SELECT rid, kind_, client_, version_, at,
                -- log-normal latency: pushes slower with bigger batches, failures slowest
                toUInt64(exp(log(if(kind_ = 'push', 9000 + 800 * m_count, 5000) * if(failed_, 4, 1))
                    + 0.6 * sqrt(-2 * log((1 + bitShiftRight(h, 8) % 999999) / 1000000.0)) * cos(2 * pi() * (bitShiftRight(h, 28) % 1000000) / 1000000.0))),
                if(failed_, 500, 200),
                multiIf(failed_, 'error', conflicts_ + rejected_ = 0, 'ok', applied_ + duplicates_ > 0, 'partial', conflicts_ > 0, 'conflict', 'rejected'),
                m_count, applied_, rejected_, conflicts_, duplicates_,
                if(kind_ = 'pull', toUInt32(bitShiftRight(h, 30) % 50), 0), kind_ = 'pull' AND bitShiftRight(h, 30) % 50 = 49,
                body_, length(body_), answer_, length(answer_),
                if(failed_, 'host answered 500 Internal Server Error', ''), trace_, span_
         FROM (
             SELECT *,
                    if(failed_, 0, toUInt32(arrayCount(r -> r >= 56, rolls))) AS applied_,
                    if(failed_, 0, toUInt32(arrayCount(r -> r >= 30 AND r < 50, rolls))) AS rejected_,
                    if(failed_, 0, toUInt32(arrayCount(r -> r < 30, rolls))) AS conflicts_,
                    if(failed_, 0, toUInt32(arrayCount(r -> r >= 50 AND r < 56, rolls))) AS duplicates_,
                    if(kind_ = 'push',
                       concat('{{\"client_id\":\"', client_, '\",\"mutations\":[', toString(m_count), ' mutations]}}'),
                       concat('{{\"client_id\":\"', client_, '\",\"cursor\":', toString(h % 100000000), '}}')) AS body_,
                    if(failed_, '{{\"error\":\"internal\"}}', concat('{{\"applied\":', toString(applied_), '}}')) AS answer_
             FROM ({source})
         )",
        source = source(plan),
    )
}

fn mutations_sql(plan: &Plan) -> String {
    format!(
        "INSERT INTO sync_mutations (request_id, started_at, position, mutation_id, entity_id, model, operation, client_id,
             client_timestamp, version, outcome, reason, reason_data, payload, state_before, state_after, has_state, diff, trace_id)
         SELECT rid, at, toUInt32(pos - 1), toString(generateUUIDv4(g)), entity_, model_, op_, client_,
                fromUnixTimestamp64Milli(intDiv(t_us, 1000) - toInt64(g % 5000), 'UTC'), 1 + bitShiftRight(g, 20) % 40,
                outcome_, reason_,
                multiIf(outcome_ = 'rejected', '{{\"errors\":{{\"title\":[\"is required\"]}}}}',
                        outcome_ = 'conflict', concat('{{\"server_version\":', toString(2 + bitShiftRight(g, 20) % 40), '}}'), ''),
                concat('{{\"id\":\"', entity_, '\",\"title\":\"Item ', toString(g % 100000), '\",\"done\":', if(g % 2 = 0, 'true', 'false'), '}}'),
                if(state_, concat('{{\"id\":\"', entity_, '\",\"title\":\"Item ', toString(bitShiftRight(g, 17) % 100000), '\"}}'), ''),
                if(state_, concat('{{\"id\":\"', entity_, '\",\"title\":\"Item ', toString(g % 100000), '\"}}'), ''),
                state_,
                if(state_, concat('[{{\"path\":[\"title\"],\"change\":\"changed\",\"old\":\"Item ', toString(bitShiftRight(g, 17) % 100000),
                                  '\",\"new\":\"Item ', toString(g % 100000), '\"}}]'), ''),
                trace_
         FROM (
             SELECT *, roll, pos, cityHash64(n, pos, 'm') AS g,
                    multiIf(g % 100 < 45, 'Task', g % 100 < 70, 'Note', g % 100 < 85, 'Comment', g % 100 < 95, 'Project', 'Tag') AS model_,
                    multiIf(bitShiftRight(g, 8) % 10 < 3, 'create', bitShiftRight(g, 8) % 10 < 9, 'update', 'delete') AS op_,
                    concat(lower(model_), '-', toString(bitShiftRight(g, 24) % 200000)) AS entity_,
                    {MUTATION_OUTCOME} AS outcome_,
                    {MUTATION_REASON} AS reason_,
                    outcome_ = 'applied' AND op_ = 'update' AS state_
             FROM ({source})
             ARRAY JOIN rolls AS roll, arrayEnumerate(rolls) AS pos
         )",
        source = source(plan),
    )
}

/// Inserts the plan's requests and mutations, chunk by chunk, then merges the aggregate
/// tables (what background merges do on a live server, done now so every run reads the
/// same settled state). Returns the seconds it took.
pub async fn generate(c: &clickhouse::Client, plan: &Plan) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (requests, mutations) = (requests_sql(plan), mutations_sql(plan));
    let mut lo = 0;
    while lo < plan.requests {
        let len = plan.chunk.min(plan.requests - lo);
        for sql in [&requests, &mutations] {
            c.query_raw(sql)
                .param("lo", lo)
                .param("len", len)
                // Blocks of about a million rows: big enough to be quick, small enough that
                // two cores and the materialized views stay well inside memory.
                .with_setting("max_block_size", "65536")
                .with_setting("min_insert_block_size_rows", "1048576")
                .execute()
                .await?;
        }
        lo += len;
        if plan.requests > 10 * plan.chunk && (lo / plan.chunk) % 5 == 0 {
            eprintln!("  {lo} of {} requests in {:.0} s", plan.requests, t.elapsed().as_secs_f64());
        }
    }
    for table in ["sync_requests_5m", "sync_mutations_5m"] {
        c.query_raw(&format!("OPTIMIZE TABLE {table} FINAL")).execute().await?;
    }
    Ok(t.elapsed().as_secs_f64())
}
