//! `GET /metrics`: totals, throughput, latency, rates, top models and clients, and the
//! five-minute health strip over a window. The API answers from the five-minute aggregate
//! tables only (never raw rows), with parameterised queries; the same answer computed from
//! the raw rows ([`Source::RawRows`]) is the reference that tests and benchmarks hold it to.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::health::{HealthThresholds, Status, rate};
use super::{DashboardError, DashboardState};

/// Width of a health bucket.
pub const BUCKET_SECONDS: i64 = 300;
/// Longest window the API answers.
pub const MAX_WINDOW_DAYS: i64 = 31;
/// Entries in the top lists.
pub const TOP_N: u64 = 10;

/// Query string of the metrics API.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// A window ending with the current five-minute bucket (default `24h`). Not with
    /// `from`/`to`.
    #[param(value_type = Option<WindowSpan>)]
    pub window: Option<String>,
    /// RFC 3339 start, aligned down to five minutes (with `to`, instead of `window`).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339 end, aligned up to five minutes (with `from`). At most 31 days after `from`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
}

/// The windows `window` accepts (documentation only: parsed by [`MetricsQuery::window`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum WindowSpan {
    /// The last hour.
    #[schema(rename = "1h")]
    Hour,
    /// The last six hours.
    #[schema(rename = "6h")]
    SixHours,
    /// The last 24 hours (the default).
    #[schema(rename = "24h")]
    Day,
    /// The last seven days.
    #[schema(rename = "7d")]
    Week,
}

/// The resolved window: `[from, to)`, aligned to five-minute buckets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Window {
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
    /// Length in seconds (the divisor of the per-second figures).
    pub seconds: i64,
    /// Width of a health bucket in seconds (300).
    pub bucket_seconds: i64,
}

impl MetricsQuery {
    /// The window these parameters name, relative to `now` for `window`; `BadRequest` for
    /// unknown spans, unparsable times, `from` without `to`, an empty window or one over 31
    /// days.
    pub fn window(&self, now: DateTime<Utc>) -> Result<Window, DashboardError> {
        let bucket = Duration::seconds(BUCKET_SECONDS);
        let bad = |m: &str| DashboardError::BadRequest(m.to_owned());
        let (from, to) = match (&self.window, &self.from, &self.to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(bad("give either window or from/to, not both")),
            (None, Some(f), Some(t)) => {
                let parse = |s: &str| {
                    DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).map_err(|_| bad("from and to must be RFC 3339 times"))
                };
                (parse(f)?, parse(t)?)
            }
            (None, Some(_), None) | (None, None, Some(_)) => return Err(bad("from and to go together")),
            (w, None, None) => {
                let span = match w.as_deref().unwrap_or("24h") {
                    "1h" => Duration::hours(1),
                    "6h" => Duration::hours(6),
                    "24h" => Duration::hours(24),
                    "7d" => Duration::days(7),
                    _ => return Err(bad("window must be one of 1h, 6h, 24h, 7d")),
                };
                // The strip ends with the bucket that holds `now`.
                let end = now.duration_trunc(bucket).map_err(|_| bad("bad time"))? + bucket;
                (end - span, end)
            }
        };
        let from = from.duration_trunc(bucket).map_err(|_| bad("bad time"))?;
        let to = match to.duration_trunc(bucket).map_err(|_| bad("bad time"))? {
            t if t == to => t,
            t => t + bucket,
        };
        if to <= from {
            return Err(bad("from must be before to"));
        }
        if to - from > Duration::days(MAX_WINDOW_DAYS) {
            return Err(bad("the window may span at most 31 days"));
        }
        Ok(Window { from, to, seconds: (to - from).num_seconds(), bucket_seconds: BUCKET_SECONDS })
    }
}

/// Counts over the window, from the five-minute aggregates (they equal the raw rows').
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// Pushes and pulls.
    pub requests: u64,
    /// `POST /tether/push` requests.
    pub pushes: u64,
    /// `POST /tether/pull` requests.
    pub pulls: u64,
    /// Mutations in pushes, whatever their outcome.
    pub mutations: u64,
    /// Mutations the server applied.
    pub applied: u64,
    /// Mutations the server rejected (duplicates are counted apart).
    pub rejected: u64,
    /// Mutations answered with a conflict.
    pub conflicts: u64,
    /// Mutations the server had already applied (a retried push).
    pub duplicates: u64,
    /// Record snapshots returned by pulls.
    pub snapshots: u64,
    /// Requests whose outcome is `error` (non-2xx answer or transport failure).
    pub failed_requests: u64,
}

/// Mean rates over the window: totals / `window.seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Throughput {
    /// `totals.requests / window.seconds`.
    pub requests_per_second: f64,
    /// `totals.mutations / window.seconds`.
    pub mutations_per_second: f64,
}

/// Request duration quantiles in milliseconds (t-digest states merged over the window; 0
/// with no requests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Latency {
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
}

/// Ratios over the window, 0 to 1 (0 when the denominator is 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rates {
    /// Conflicts / mutations.
    pub conflict_rate: f64,
    /// Failed requests / requests.
    pub failure_rate: f64,
    /// Rejected mutations (duplicates excluded) / mutations.
    pub rejection_rate: f64,
}

/// One model or client in a top list, by mutations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row, utoipa::ToSchema)]
pub struct TopEntry {
    /// The model name or client id (as stored: capped and redacted).
    pub key: String,
    /// Mutations in the window.
    pub mutations: u64,
    /// Of which answered with a conflict.
    pub conflicts: u64,
    /// Of which rejected (duplicates excluded).
    pub rejections: u64,
}

/// A client whose clock looks wrong. A timestamp after its own push's arrival can only be a
/// clock ahead of the server's; one before it is offline time or a clock behind, which one
/// mutation cannot tell apart (so it is not counted here; the client page shows the delays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row, utoipa::ToSchema)]
pub struct ClockEntry {
    /// The client id (as stored: capped and redacted).
    pub client_id: String,
    /// Mutations timestamped more than 60 s after their push arrived.
    pub future: u64,
    /// Mutations whose timestamp was missing or not valid epoch milliseconds.
    pub invalid: u64,
    /// The most a timestamp was ahead of its push's arrival, in milliseconds (0: none).
    pub furthest_ahead_ms: i64,
}

/// One five-minute bucket of the health strip.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthBucket {
    /// Start of the bucket (five minutes long).
    pub start: DateTime<Utc>,
    /// Pushes and pulls in the bucket.
    pub requests: u64,
    /// Requests whose outcome is `error`.
    pub failed_requests: u64,
    /// Mutations in the bucket.
    pub mutations: u64,
    /// Mutations answered with a conflict.
    pub conflicts: u64,
    /// Mutations rejected (duplicates excluded).
    pub rejected: u64,
    /// Request p95 latency in milliseconds.
    pub p95_ms: f64,
    /// The bucket judged against `thresholds`.
    pub status: Status,
}

/// The metrics API's answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Metrics {
    /// The window the figures cover.
    pub window: Window,
    /// Counts over the window.
    pub totals: Totals,
    /// Mean rates over the window.
    pub throughput: Throughput,
    /// Request duration quantiles, pushes and pulls apart.
    pub latency: LatencyByKind,
    /// Conflict, failure and rejection ratios.
    pub rates: Rates,
    /// At most 10 models, most mutations first.
    pub top_models: Vec<TopEntry>,
    /// At most 10 clients, most mutations first.
    pub top_clients: Vec<TopEntry>,
    /// At most 10 clients with suspicious clocks in the window (timestamps more than 60 s
    /// after their push arrived, or missing or invalid ones), most such mutations first.
    pub suspicious_clocks: Vec<ClockEntry>,
    /// The thresholds the health strip was judged by.
    pub thresholds: HealthThresholds,
    /// Every five-minute bucket of the window, oldest first.
    pub health: Vec<HealthBucket>,
}

/// Latency of pushes and of pulls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatencyByKind {
    /// Pushes.
    pub push: Latency,
    /// Pulls.
    pub pull: Latency,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct KindRow {
    kind: String,
    requests: u64,
    failed: u64,
    mutations: u64,
    applied: u64,
    rejected: u64,
    conflicts: u64,
    duplicates: u64,
    snapshots: u64,
    quantiles: Vec<f64>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct BucketRow {
    bucket: u32,
    requests: u64,
    failed: u64,
    mutations: u64,
    conflicts: u64,
    rejected: u64,
    quantiles: Vec<f64>,
}

fn us_to_ms(v: Option<&f64>) -> f64 {
    v.map_or(0.0, |us| if us.is_finite() { (us / 1000.0 * 1000.0).round() / 1000.0 } else { 0.0 })
}

/// Where the numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The five-minute aggregate tables: what the API serves.
    Aggregates,
    /// The raw rows: the reference the aggregates must equal, for tests and benchmarks. It
    /// scans every row of the window; never serve it.
    RawRows,
}

/// The statements behind one answer. They take `{from:Int64}` and `{to:Int64}` (Unix
/// seconds, five-minute aligned) and the whole hours inside them, `{hour_from:Int64}` and
/// `{hour_to:Int64}` (see [`params`]). Public so that benchmarks can profile them one by one.
#[derive(Debug, Clone)]
pub struct Queries {
    /// Requests, mutation outcomes and latency per request kind: totals, rates, latency.
    pub kinds: String,
    /// The same per five-minute bucket: the health strip.
    pub buckets: String,
    /// The top models by mutations.
    pub top_models: String,
    /// The top clients by mutations.
    pub top_clients: String,
    /// Clients with suspicious clocks.
    pub clocks: String,
}

impl Source {
    /// The statements that read from this source.
    pub fn queries(self) -> Queries {
        match self {
            Source::Aggregates => aggregate_queries(),
            Source::RawRows => raw_queries(),
        }
    }
}

/// The query parameters for `window`: its bounds and the whole hours inside it (an empty
/// range at `from` when it holds no whole hour).
pub fn params(window: &Window) -> [(&'static str, i64); 4] {
    const HOUR: i64 = 3600;
    let (from, to) = (window.from.timestamp(), window.to.timestamp());
    let first_hour = (from + HOUR - 1).div_euclid(HOUR) * HOUR;
    let end_hour = to.div_euclid(HOUR) * HOUR;
    let (hour_from, hour_to) = if first_hour < end_hour { (first_hour, end_hour) } else { (from, from) };
    [("from", from), ("to", to), ("hour_from", hour_from), ("hour_to", hour_to)]
}

const AGG_WINDOW: &str = "bucket >= toDateTime({from:Int64}, 'UTC') AND bucket < toDateTime({to:Int64}, 'UTC')";
const QUANTILES_MERGE: &str = "arrayMap(q -> toFloat64(q), quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles)) AS quantiles";
/// The sums of a top list, spelled exactly as the projections of migration 8 spell them so
/// that ClickHouse answers from the projections.
fn top_sums(names: [&str; 3]) -> String {
    let [m, c, r] = names;
    format!("sum(mutations) AS {m}, sumIf(mutations, outcome = 'conflict') AS {c}, sumIf(mutations, outcome = 'rejected') AS {r}")
}

// Aliases reuse the column names (`sum(requests) AS requests`): these run with
// `prefer_column_name_to_alias` so that expressions read the columns, not the aliases.
fn aggregate_queries() -> Queries {
    // Models are few: the (bucket, model) projection is a few rows per bucket.
    let top_models = format!(
        "SELECT model AS key, {} FROM sync_mutations_5m WHERE {AGG_WINDOW}
         GROUP BY key ORDER BY sum(mutations) DESC, key LIMIT {TOP_N}",
        top_sums(["mutations", "conflicts", "rejections"])
    );
    // Clients are many: whole hours from the (hour, client) projection, the partial hours at
    // either end from the (bucket, client) one, then the two added up per client.
    let top_clients = format!(
        "SELECT key, sum(m) AS mutations, sum(c) AS conflicts, sum(r) AS rejections FROM (
             SELECT client_id AS key, {sums} FROM sync_mutations_5m
             WHERE toStartOfHour(bucket) >= toDateTime({{hour_from:Int64}}, 'UTC') AND toStartOfHour(bucket) < toDateTime({{hour_to:Int64}}, 'UTC')
             GROUP BY key
             UNION ALL
             SELECT client_id AS key, {sums} FROM sync_mutations_5m
             WHERE (bucket >= toDateTime({{from:Int64}}, 'UTC') AND bucket < toDateTime({{hour_from:Int64}}, 'UTC'))
                OR (bucket >= toDateTime({{hour_to:Int64}}, 'UTC') AND bucket < toDateTime({{to:Int64}}, 'UTC'))
             GROUP BY key
         ) GROUP BY key ORDER BY mutations DESC, key LIMIT {TOP_N}",
        sums = top_sums(["m", "c", "r"])
    );
    // The per-kind and per-bucket sums and quantile merges are spelled as the kinds_5m and
    // health_5m projections spell them: ClickHouse merges far fewer t-digest states.
    Queries {
        kinds: format!(
            "SELECT kind, sum(requests) AS requests, sumIf(requests, outcome = 'error') AS failed,
                    sum(mutations) AS mutations, sum(applied) AS applied, sum(rejected) AS rejected,
                    sum(conflicts) AS conflicts, sum(duplicates) AS duplicates, sum(snapshots) AS snapshots, {QUANTILES_MERGE}
             FROM sync_requests_5m WHERE {AGG_WINDOW} GROUP BY kind"
        ),
        buckets: format!(
            "SELECT toUInt32(bucket) AS bucket, sum(requests) AS requests, sumIf(requests, outcome = 'error') AS failed,
                    sum(mutations) AS mutations, sum(conflicts) AS conflicts, sum(rejected) AS rejected, {QUANTILES_MERGE}
             FROM sync_requests_5m WHERE {AGG_WINDOW} GROUP BY bucket ORDER BY bucket"
        ),
        top_models,
        top_clients,
        clocks: format!(
            "SELECT client_id, sum(future) AS future, sum(invalid) AS invalid, max(furthest_ahead_ms) AS furthest_ahead_ms
             FROM sync_clock_anomalies_5m WHERE {AGG_WINDOW}
             GROUP BY client_id ORDER BY sum(future) + sum(invalid) DESC, client_id LIMIT {TOP_N}"
        ),
    }
}

const RAW_WINDOW: &str =
    "started_at >= fromUnixTimestamp64Micro({from:Int64} * 1000000, 'UTC') AND started_at < fromUnixTimestamp64Micro({to:Int64} * 1000000, 'UTC')";
const QUANTILES_RAW: &str = "arrayMap(q -> toFloat64(q), quantilesTDigest(0.5, 0.95, 0.99)(duration_us)) AS quantiles";

fn raw_queries() -> Queries {
    let top = |key: &str| {
        format!(
            "SELECT toString({key}) AS key, count() AS mutations, countIf(outcome = 'conflict') AS conflicts,
                    countIf(outcome = 'rejected') AS rejections
             FROM sync_mutations WHERE {RAW_WINDOW} GROUP BY key ORDER BY mutations DESC, key LIMIT {TOP_N}"
        )
    };
    Queries {
        kinds: format!(
            "SELECT toString(kind) AS kind, count() AS requests, countIf(outcome = 'error') AS failed,
                    sum(mutation_count) AS mutations, sum(applied_count) AS applied, sum(rejected_count) AS rejected,
                    sum(conflict_count) AS conflicts, sum(duplicate_count) AS duplicates, sum(snapshot_count) AS snapshots, {QUANTILES_RAW}
             FROM sync_requests WHERE {RAW_WINDOW} GROUP BY kind"
        ),
        buckets: format!(
            "SELECT toUInt32(toStartOfFiveMinutes(toDateTime(started_at, 'UTC'))) AS bucket, count() AS requests,
                    countIf(outcome = 'error') AS failed, sum(mutation_count) AS mutations, sum(conflict_count) AS conflicts,
                    sum(rejected_count) AS rejected, {QUANTILES_RAW}
             FROM sync_requests WHERE {RAW_WINDOW} GROUP BY bucket ORDER BY bucket"
        ),
        top_models: top("model"),
        top_clients: top("client_id"),
        // The same rule as migration 9's view.
        clocks: format!(
            "SELECT client_id, countIf(ahead > 60000) AS future, countIf(client_timestamp IS NULL) AS invalid,
                    toInt64(ifNull(maxIf(ahead, ahead > 60000), 0)) AS furthest_ahead_ms
             FROM (SELECT client_id, client_timestamp, toUnixTimestamp64Milli(client_timestamp) - toUnixTimestamp64Milli(started_at) AS ahead
                   FROM sync_mutations WHERE {RAW_WINDOW})
             WHERE client_timestamp IS NULL OR ahead > 60000
             GROUP BY client_id ORDER BY countIf(ahead > 60000) + countIf(client_timestamp IS NULL) DESC, client_id LIMIT {TOP_N}"
        ),
    }
}

/// Computes the metrics for `window` from the aggregates: what the API serves.
pub async fn compute(state: &DashboardState, window: Window) -> Result<Metrics, DashboardError> {
    compute_from(state, window, Source::Aggregates).await
}

/// Computes the metrics for `window` from `source`. The four statements are independent and
/// run concurrently: the answer waits for the slowest, not for the sum of round trips.
pub async fn compute_from(state: &DashboardState, window: Window, source: Source) -> Result<Metrics, DashboardError> {
    let q = source.queries();
    let p = params(&window);
    let c = &state.client.clone().with_setting("prefer_column_name_to_alias", "1");
    // A statement ignores parameters it does not use.
    let run = |sql: &str| p.iter().fold(c.query_raw(sql), |q, (k, v)| q.param(k, *v));
    let (kinds, buckets, top_models, top_clients, suspicious_clocks) = tokio::try_join!(
        run(&q.kinds).fetch_all::<KindRow>(),
        run(&q.buckets).fetch_all::<BucketRow>(),
        run(&q.top_models).fetch_all::<TopEntry>(),
        run(&q.top_clients).fetch_all::<TopEntry>(),
        run(&q.clocks).fetch_all::<ClockEntry>(),
    )?;

    let mut totals = Totals::default();
    let mut latency = LatencyByKind::default();
    for k in &kinds {
        totals.requests += k.requests;
        totals.failed_requests += k.failed;
        totals.mutations += k.mutations;
        totals.applied += k.applied;
        totals.rejected += k.rejected;
        totals.conflicts += k.conflicts;
        totals.duplicates += k.duplicates;
        totals.snapshots += k.snapshots;
        let l = Latency { p50_ms: us_to_ms(k.quantiles.first()), p95_ms: us_to_ms(k.quantiles.get(1)), p99_ms: us_to_ms(k.quantiles.get(2)) };
        match k.kind.as_str() {
            "push" => {
                totals.pushes += k.requests;
                latency.push = l;
            }
            "pull" => {
                totals.pulls += k.requests;
                latency.pull = l;
            }
            _ => {}
        }
    }
    let secs = window.seconds.max(1) as f64;
    let throughput = Throughput {
        requests_per_second: totals.requests as f64 / secs,
        mutations_per_second: totals.mutations as f64 / secs,
    };
    let rates = Rates {
        conflict_rate: rate(totals.conflicts, totals.mutations),
        failure_rate: rate(totals.failed_requests, totals.requests),
        rejection_rate: rate(totals.rejected, totals.mutations),
    };
    // One entry per bucket of the window, idle where nothing happened.
    let mut health = Vec::with_capacity((window.seconds / BUCKET_SECONDS) as usize);
    let mut rows = buckets.into_iter().peekable();
    let mut t = window.from;
    while t < window.to {
        let ts = t.timestamp();
        while rows.peek().is_some_and(|r| i64::from(r.bucket) < ts) {
            rows.next();
        }
        let b = match rows.peek() {
            Some(r) if i64::from(r.bucket) == ts => {
                let p95_ms = us_to_ms(r.quantiles.get(1));
                HealthBucket {
                    start: t,
                    requests: r.requests,
                    failed_requests: r.failed,
                    mutations: r.mutations,
                    conflicts: r.conflicts,
                    rejected: r.rejected,
                    p95_ms,
                    status: state.thresholds.status(r.requests, r.failed, r.mutations, r.conflicts, p95_ms),
                }
            }
            _ => HealthBucket {
                start: t,
                requests: 0,
                failed_requests: 0,
                mutations: 0,
                conflicts: 0,
                rejected: 0,
                p95_ms: 0.0,
                status: Status::Idle,
            },
        };
        health.push(b);
        t += Duration::seconds(BUCKET_SECONDS);
    }
    Ok(Metrics {
        window,
        totals,
        throughput,
        latency,
        rates,
        top_models,
        top_clients,
        suspicious_clocks,
        thresholds: state.thresholds,
        health,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(window: Option<&str>, from: Option<&str>, to: Option<&str>) -> MetricsQuery {
        MetricsQuery { window: window.map(Into::into), from: from.map(Into::into), to: to.map(Into::into) }
    }

    #[test]
    fn a_24h_window_has_288_aligned_buckets_ending_with_the_current_one() {
        let now = DateTime::parse_from_rfc3339("2026-05-18T10:07:30Z").unwrap().with_timezone(&Utc);
        let w = q(None, None, None).window(now).unwrap();
        assert_eq!(w.to.to_rfc3339(), "2026-05-18T10:10:00+00:00");
        assert_eq!(w.from.to_rfc3339(), "2026-05-17T10:10:00+00:00");
        assert_eq!(w.seconds / BUCKET_SECONDS, 288);
        assert_eq!(q(Some("1h"), None, None).window(now).unwrap().seconds, 3600);
        assert_eq!(q(Some("7d"), None, None).window(now).unwrap().seconds, 7 * 86400);
    }

    #[test]
    fn from_to_align_outwards_and_bad_windows_are_400() {
        let now = Utc::now();
        let w = q(None, Some("2026-05-18T10:01:00Z"), Some("2026-05-18T10:06:00Z")).window(now).unwrap();
        assert_eq!((w.from.to_rfc3339(), w.to.to_rfc3339()), ("2026-05-18T10:00:00+00:00".into(), "2026-05-18T10:10:00+00:00".into()));
        for bad in [
            q(Some("2h"), None, None),
            q(Some("24h"), Some("2026-05-18T10:00:00Z"), None),
            q(None, Some("2026-05-18T10:00:00Z"), None),
            q(None, Some("yesterday"), Some("2026-05-18T10:00:00Z")),
            q(None, Some("2026-05-18T10:00:00Z"), Some("2026-05-18T09:00:00Z")),
            q(None, Some("2026-01-01T00:00:00Z"), Some("2026-05-18T09:00:00Z")),
            q(Some("'; DROP TABLE sync_requests; --"), None, None),
        ] {
            assert!(matches!(bad.window(now), Err(DashboardError::BadRequest(_))), "{bad:?}");
        }
    }
}
