//! Read side at scale, side by side in one run: the metrics API (five-minute aggregates) and a
//! request's detail lookup, against the same answers computed from the raw rows.
//!
//! `cargo bench --bench read_side` generates `READ_BENCH_MUTATIONS` mutation rows (default 100
//! million) and a tenth as many requests over the last 24 hours inside ClickHouse
//! (`CLICKHOUSE_URL`, or the embedded one), checks that the API's answer equals the raw rows'
//! answer, then prints medians, ratios and what each statement reads. Under `cargo test` (no
//! `--bench`) it is a small smoke run that checks the same agreement and never times anything
//! against a target.

// A bench target is a crate root: its modules live in benches/read_side/.
#[path = "read_side/agree.rs"]
mod agree;
#[path = "read_side/generate.rs"]
mod generate;
#[path = "read_side/profile.rs"]
mod profile;

use std::time::{Duration, Instant};

use tether_pro::dashboard::DashboardState;
use tether_pro::internals::metrics::{self, MetricsQuery, Source, Window};
use tether_pro::internals::queries;
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
    // run proves the harness works without spending minutes generating data.
    let full = std::env::args().any(|a| a == "--bench");
    let default = if full { 100_000_000 } else { 20_000 };
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
    // READ_BENCH_DATABASE keeps the generated data (and reuses it when it is already there),
    // for profiling the same rows again.
    let kept = std::env::var("READ_BENCH_DATABASE").ok().filter(|d| !d.is_empty());
    let db = kept.clone().unwrap_or_else(|| format!("read_bench_{}", ulid::Ulid::new().to_string().to_lowercase()));
    let server = clickhouse::Client::default().with_url(&url);
    tether_pro::store::migrate::migrate(&server, &db, &Default::default()).await?;
    let c = server.clone().with_database(&db);

    let now = chrono::Utc::now();
    let present: u64 = c.query_raw("SELECT count() FROM sync_requests").fetch_one().await?;
    if present == 0 {
        println!("generating {requests} requests and about {mutations} mutations over the last 24 hours…");
        let span_us = 86_400_000_000;
        let plan = generate::Plan { requests, start_us: now.timestamp_micros() - span_us, span_us, chunk: 500_000 };
        let secs = generate::generate(&c, &plan).await?;
        println!("generated in {secs:.1} s");
    } else {
        println!("reusing the {present} requests in database {db}");
    }
    settle(&c).await?;
    let requests: u64 = c.query_raw("SELECT count() FROM sync_requests").fetch_one().await?;
    let mutations: u64 = c.query_raw("SELECT count() FROM sync_mutations").fetch_one().await?;
    let (bytes, parts): (u64, u64) = c
        .query_raw("SELECT sum(bytes_on_disk), count() FROM system.parts WHERE database = currentDatabase() AND active")
        .fetch_one()
        .await?;
    println!("{requests} requests, {mutations} mutations, {:.2} GB on disk in {parts} parts", bytes as f64 / 1e9);

    let state = DashboardState::new(c.clone());
    // The data may have been generated a while ago: the window is the last 24 hours of it.
    let newest: i64 = c.query_raw("SELECT toInt64(toUnixTimestamp(max(started_at))) FROM sync_requests").fetch_one().await?;
    let at = chrono::DateTime::from_timestamp(newest, 0).unwrap_or(now).min(now);
    let window = MetricsQuery::default().window(at).map_err(|e| anyhow::anyhow!("{e:?}"))?;

    // Same answer first: a fast wrong answer is worth nothing.
    let api_answer = metrics::compute(&state, window).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let raw_answer = metrics::compute_from(&state, window, Source::RawRows).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (diffs, worst) = agree::differences(&api_answer, &raw_answer);
    anyhow::ensure!(diffs.is_empty(), "the aggregates disagree with the raw rows:\n  {}", diffs.join("\n  "));
    anyhow::ensure!(api_answer.totals.mutations > 0 && api_answer.top_clients.len() == metrics::TOP_N as usize, "the window holds no traffic");
    println!(
        "aggregates agree with the raw rows: {} requests, {} mutations, {} conflicts, {} rejected in the window; percentiles within {:.2} %",
        api_answer.totals.requests,
        api_answer.totals.mutations,
        api_answer.totals.conflicts,
        api_answer.totals.rejected,
        worst * 100.0
    );

    let runs = if full { 7 } else { 3 };
    let api = time(runs, || async {
        metrics::compute(&state, window).await.unwrap();
    })
    .await;
    let raw = time(runs, || async {
        metrics::compute_from(&state, window, Source::RawRows).await.unwrap();
    })
    .await;

    // One push's detail page: the pages' lookup (the ULID's time bounds the request row, then
    // the mutations by the exact sort-key prefix) vs by id alone over the raw tables.
    let (id, _): (String, i64) = c
        .query_raw(
            "SELECT request_id, toUnixTimestamp64Micro(started_at) FROM sync_requests
             WHERE started_at >= fromUnixTimestamp64Micro({mid:Int64}, 'UTC') AND kind = 'push' ORDER BY started_at LIMIT 1",
        )
        .param("mid", (window.from.timestamp() + window.seconds / 2) * 1_000_000)
        .fetch_one()
        .await?;
    let page = state.mutations_page_size as u64;
    let detail = time(runs, || async {
        let r = queries::request(&c, &id).await.unwrap().expect("the request exists");
        let n = queries::mutation_count(&c, r.started_us, &id).await.unwrap();
        let m = queries::mutations_page(&c, r.started_us, &id, 0, page).await.unwrap();
        assert!(n > 0 && !m.is_empty());
    })
    .await;
    let detail_raw = time(runs, || async {
        c.query_raw("SELECT * FROM sync_requests WHERE request_id = {id:String} LIMIT 1 FORMAT Null").param("id", &id).execute().await.unwrap();
        c.query_raw("SELECT count() FROM sync_mutations WHERE request_id = {id:String} FORMAT Null").param("id", &id).execute().await.unwrap();
        c.query_raw("SELECT * FROM sync_mutations WHERE request_id = {id:String} ORDER BY position LIMIT {n:UInt64} FORMAT Null")
            .param("id", &id)
            .param("n", page)
            .execute()
            .await
            .unwrap();
    })
    .await;

    // A record's history (issue 17): the busiest record's first page with counts, timeline,
    // client versions, replays and conflict winners, through the entity_id skip index, and the
    // same statements with skip indexes off (a full scan of the column).
    let (model, entity, n): (String, String, u64) = c
        .query_raw("SELECT model, entity_id, count() AS n FROM sync_mutations GROUP BY model, entity_id ORDER BY n DESC, entity_id LIMIT 1")
        .fetch_one()
        .await?;
    // The comparison reads without the bloom filter: a scan of the column.
    let unindexed = c.clone().with_setting("use_skip_indexes", "0");
    let (indexed_answer, _) = tether_pro::dashboard::history::load(&c, &model, &entity, None).await?;
    let (scanned_answer, _) = tether_pro::dashboard::history::load(&unindexed, &model, &entity, None).await?;
    anyhow::ensure!(indexed_answer.mutations == scanned_answer.mutations && indexed_answer.counts.mutations == n, "the record history disagrees with the scan");
    let history = time(runs, || async {
        tether_pro::dashboard::history::load(&c, &model, &entity, None).await.unwrap();
    })
    .await;
    let history_scan = time(runs, || async {
        tether_pro::dashboard::history::load(&unindexed, &model, &entity, None).await.unwrap();
    })
    .await;

    println!();
    println!(
        "read side at {mutations} mutations / {requests} requests, window {} .. {} (median of {runs} runs; load average {} when done):",
        window.from,
        window.to,
        load()
    );
    println!("  metrics API (aggregates)          {:>9.1} ms", ms(api));
    println!("  same answer from raw rows         {:>9.1} ms   raw / aggregates = {:.1}x", ms(raw), raw.as_secs_f64() / api.as_secs_f64());
    println!("  request detail (pages' lookup)    {:>9.1} ms", ms(detail));
    println!(
        "  by id alone over raw rows         {:>9.1} ms   by id / pages = {:.1}x",
        ms(detail_raw),
        detail_raw.as_secs_f64() / detail.as_secs_f64()
    );
    println!(
        "  record history ({model} {entity}, {n} mutations, {} conflicts; first page of {}) {:>7.1} ms",
        indexed_answer.counts.conflicts,
        indexed_answer.mutations.len(),
        ms(history)
    );
    println!(
        "  same without skip indexes         {:>9.1} ms   scan / index = {:.1}x",
        ms(history_scan),
        history_scan.as_secs_f64() / history.as_secs_f64()
    );
    print_profile(&url, &db, window).await?;
    if kept.is_none() {
        server.query_raw("DROP DATABASE {db:Identifier}").param("db", &db).execute().await?;
    }
    Ok(())
}

/// Waits for this database's background work to end before measuring: mutations (a migration
/// that materializes projections on existing rows) and the merges that follow a bulk load of
/// gigabytes, which would otherwise compete with the queries for the same cores. Merges are
/// waited for at most ten minutes; a live server is never fully quiet either.
async fn settle(c: &clickhouse::Client) -> anyhow::Result<()> {
    let t = Instant::now();
    let busy = |sql: &'static str| async move { c.query_raw(sql).fetch_one::<u64>().await };
    loop {
        let mutations = busy("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done").await?;
        let merges = busy("SELECT count() FROM system.merges WHERE database = currentDatabase()").await?;
        if mutations == 0 && (merges == 0 || t.elapsed() > Duration::from_secs(600)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if t.elapsed() > Duration::from_secs(2) {
        println!("waited {:.0} s for background merges and mutations to end", t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The 1-minute load average, printed next to the figures (the machine may be shared).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_owned)).unwrap_or_else(|| "?".into())
}

/// What each statement of both answers reads and how long ClickHouse spends on it (one run
/// each, one at a time).
async fn print_profile(url: &str, db: &str, window: Window) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let params: Vec<(&str, String)> = metrics::params(&window).iter().map(|(k, v)| (*k, v.to_string())).collect();
    for (label, source) in [("aggregates", Source::Aggregates), ("raw rows", Source::RawRows)] {
        println!("  statements from {label} (server time, rows and bytes read, peak memory):");
        let q = source.queries();
        for (name, sql) in [("kinds", &q.kinds), ("buckets", &q.buckets), ("top models", &q.top_models), ("top clients", &q.top_clients)] {
            let s = profile::summary(&http, url, db, sql, &params).await?;
            println!("{}", profile::line(name, &s));
        }
    }
    Ok(())
}
