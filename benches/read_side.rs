//! Read side at scale, side by side in one run: the metrics API (five-minute aggregates) and a
//! request's detail lookup, against the same answers computed from the raw tables.
//!
//! `cargo bench --bench read_side` generates `READ_BENCH_MUTATIONS` mutation rows (default 10
//! million) and a tenth as many requests over the last 24 hours straight into ClickHouse
//! (`CLICKHOUSE_URL`, or the embedded one), then prints medians and ratios.

use std::time::{Duration, Instant};

use tether_pro::dashboard::DashboardState;
use tether_pro::dashboard::metrics::{self, MetricsQuery};
use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await; // warm
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    median(v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // `cargo bench` passes --bench; `cargo test` runs benches without it: then a small smoke
    // run proves the harness works without spending a minute generating data.
    let full = std::env::args().any(|a| a == "--bench");
    let default = if full { 10_000_000 } else { 20_000 };
    let mutations: u64 = std::env::var("READ_BENCH_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let requests = (mutations / 10).max(1);
    let mut _local = None;
    let url = match std::env::var("CLICKHOUSE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let dir = std::env::temp_dir().join(format!("tether-pro-read-bench-{}", std::process::id()));
            let ch = tokio::task::spawn_blocking(move || {
                LocalClickHouse::start(LocalClickHouseOptions { data_dir: dir, ephemeral: true, ..Default::default() })
            })
            .await??;
            let u = ch.url().to_owned();
            _local = Some(ch);
            u
        }
    };
    let db = format!("read_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    let server = clickhouse::Client::default().with_url(&url);
    tether_pro::store::migrate::migrate(&server, &db, &Default::default()).await?;
    let c = server.clone().with_database(&db);

    println!("generating {requests} requests and {mutations} mutations over the last 24 hours…");
    let t = Instant::now();
    // Requests spread over 24 h; 10 mutations each; ~3 % conflicts, ~5 % rejections.
    c.query_raw(
        "INSERT INTO sync_requests (request_id, kind, client_id, client_version, started_at, duration_us, http_status, outcome,
             mutation_count, applied_count, rejected_count, conflict_count, duplicate_count, request_body, response_body, trace_id, span_id)
         SELECT concat('R', leftPad(toString(number), 25, '0')), if(number % 3 = 0, 'pull', 'push'),
                concat('C', toString(number % 5000)), 'ios/3.2.1',
                now64(6) - toIntervalMicrosecond(intDiv(number * 86400000000, {n:UInt64})),
                500 + number % 5000, if(number % 200 = 0, 500, 200), if(number % 200 = 0, 'error', if(number % 7 = 0, 'partial', 'ok')),
                if(number % 3 = 0, 0, 10), if(number % 3 = 0, 0, 9), 0, if(number % 3 = 0, 0, 1), 0,
                '{\"client_id\":\"x\",\"mutations\":[]}', '{\"applied\":[]}', hex(number), hex(number)
         FROM numbers({n:UInt64})",
    )
    .param("n", requests)
    .execute()
    .await?;
    c.query_raw(
        "INSERT INTO sync_mutations (request_id, started_at, position, mutation_id, entity_id, model, operation, client_id,
             client_timestamp, version, outcome, reason, payload, state_before, state_after, diff, trace_id)
         SELECT concat('R', leftPad(toString(intDiv(number, 10)), 25, '0')),
                now64(6) - toIntervalMicrosecond(intDiv(intDiv(number, 10) * 86400000000, {n:UInt64})),
                number % 10, concat('M', leftPad(toString(number), 25, '0')), concat('E', toString(number % 100000)),
                ['Task', 'Note', 'Project'][1 + number % 3], ['create', 'update', 'delete'][1 + number % 3],
                concat('C', toString(intDiv(number, 10) % 5000)), now64(3), 1,
                multiIf(number % 33 = 0, 'conflict', number % 20 = 0, 'rejected', 'applied'),
                multiIf(number % 33 = 0, 'conflict', number % 20 = 0, 'validation_failed', ''),
                '{\"title\":\"Buy milk\",\"done\":false}', '{\"title\":\"Buy\"}', '{\"title\":\"Buy milk\"}',
                '[{\"path\":[\"title\"],\"change\":\"changed\",\"old\":\"Buy\",\"new\":\"Buy milk\"}]', hex(number)
         FROM numbers({m:UInt64})",
    )
    .param("n", requests)
    .param("m", mutations)
    .execute()
    .await?;
    c.query_raw("OPTIMIZE TABLE sync_requests_5m FINAL").execute().await?;
    c.query_raw("OPTIMIZE TABLE sync_mutations_5m FINAL").execute().await?;
    println!("generated in {:.1} s", t.elapsed().as_secs_f64());

    let state = DashboardState::new(c.clone());
    let runs = 7;
    let api = time(runs, || async {
        let w = MetricsQuery::default().window(chrono::Utc::now()).unwrap();
        metrics::compute(&state, w).await.unwrap();
    })
    .await;
    // The same answers from the raw tables.
    let raw_sql = [
        "SELECT kind, count(), countIf(outcome = 'error'), sum(mutation_count), sum(conflict_count),
                quantiles(0.5, 0.95, 0.99)(duration_us)
         FROM sync_requests WHERE started_at >= now() - INTERVAL 1 DAY GROUP BY kind FORMAT Null",
        "SELECT toStartOfFiveMinutes(started_at) AS b, count(), countIf(outcome = 'error'), sum(mutation_count), quantile(0.95)(duration_us)
         FROM sync_requests WHERE started_at >= now() - INTERVAL 1 DAY GROUP BY b ORDER BY b FORMAT Null",
        "SELECT model, count(), countIf(outcome = 'conflict'), countIf(outcome = 'rejected') FROM sync_mutations
         WHERE started_at >= now() - INTERVAL 1 DAY GROUP BY model ORDER BY count() DESC LIMIT 10 FORMAT Null",
        "SELECT client_id, count(), countIf(outcome = 'conflict'), countIf(outcome = 'rejected') FROM sync_mutations
         WHERE started_at >= now() - INTERVAL 1 DAY GROUP BY client_id ORDER BY count() DESC LIMIT 10 FORMAT Null",
    ];
    let raw = time(runs, || async {
        for sql in raw_sql {
            c.query_raw(sql).execute().await.unwrap();
        }
    })
    .await;

    // One request's detail: the pages' lookup (time range from the id's row + skip indexes) vs
    // a lookup by id alone over the raw tables.
    let id = format!("R{:025}", requests / 2);
    let detail = time(runs, || async {
        let st = c.query_raw("SELECT toUnixTimestamp64Micro(started_at) FROM sync_requests WHERE request_id = {id:String} LIMIT 1")
            .param("id", &id)
            .fetch_one::<i64>()
            .await
            .unwrap();
        c.query_raw(
            "SELECT position, mutation_id, outcome, payload, diff FROM sync_mutations
             WHERE started_at = fromUnixTimestamp64Micro({st:Int64}) AND request_id = {id:String} ORDER BY position LIMIT 50 FORMAT Null",
        )
        .param("st", st)
        .param("id", &id)
        .execute()
        .await
        .unwrap();
    })
    .await;
    let detail_raw = time(runs, || async {
        c.query_raw("SELECT position, mutation_id, outcome, payload, diff FROM sync_mutations WHERE request_id = {id:String} ORDER BY position LIMIT 50 FORMAT Null")
            .param("id", &id)
            .execute()
            .await
            .unwrap();
    })
    .await;

    println!();
    println!("read side at {mutations} mutations / {requests} requests (median of {runs} runs):");
    println!("  metrics API (aggregates)        {:>9.1} ms", ms(api));
    println!("  same answers from raw tables    {:>9.1} ms   ratio raw/aggregates = {:.1}x", ms(raw), raw.as_secs_f64() / api.as_secs_f64());
    println!("  request detail (time-bounded)   {:>9.1} ms", ms(detail));
    println!("  by id alone over raw mutations  {:>9.1} ms   ratio = {:.1}x", ms(detail_raw), detail_raw.as_secs_f64() / detail.as_secs_f64());
    server.query_raw("DROP DATABASE {db:Identifier}").param("db", &db).execute().await?;
    Ok(())
}
