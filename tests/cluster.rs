//! Cluster mode and several writers (issue 18), on real servers.
//!
//! The cluster is two embedded ClickHouse servers started by the project's launcher, each one
//! shard of the cluster `tether` (a `remote_servers` entry in both config.xml files, one
//! replica per shard). The migrations create `<table>_local` on both nodes and `Distributed`
//! tables over them; two `tether-pro sync-server --capture` processes write into it; the
//! metrics API, the pages, replay and every Grafana query read it. Rows must land on both
//! shards, each request's rows on one of them, and every surface must agree with the raw rows.
//!
//! clickhouse-local has no Keeper: ON CLUSTER DDL and Replicated tables cannot run here, so
//! the replicated variant of every statement is checked by ClickHouse's own parser
//! (`formatQuery`) only.

mod common;
#[path = "common/child_server.rs"]
mod child_server;
#[path = "common/grafana_sql.rs"]
mod grafana_sql;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use child_server::ChildServer;
use common::{TestClickHouse, clickhouse, serve};
use serde_json::{Value, json};
use tether_pro::config::{ClickHouseConfig, RetentionConfig};
use tether_pro::dashboard::{DashboardState, mount};
use tether_pro::replay::{ApplyOptions, Replayer};
use tether_pro::store::cluster::ClusterLayout;
use tether_pro::store::local::{LocalClickHouse, start_cluster};
use tether_pro::store::migrate::{self, MIGRATIONS};
use tether_pro::sync::{self, InProcessTarget, SyncServer};

const CLUSTER: &str = "tether";

/// One two-shard pair per test process (each test takes its own database on it). Never
/// dropped: the launchers stop their servers when this process exits.
static PAIR: OnceLock<Result<Vec<LocalClickHouse>, String>> = OnceLock::new();

fn pair_urls() -> Vec<String> {
    let pair = PAIR.get_or_init(|| {
        let parent = tempfile::Builder::new().prefix("tether-pro-test-cluster-").tempdir().map_err(|e| e.to_string())?.keep();
        start_cluster(CLUSTER, 2, &parent).map_err(|e| format!("{e:#}"))
    });
    match pair {
        Ok(servers) => servers.iter().map(|s| s.url().to_owned()).collect(),
        Err(e) => panic!("the two-shard local ClickHouse did not start (tests that need it never skip): {e}"),
    }
}

struct Cluster {
    /// Node 1 and node 2, with this test's database.
    nodes: Vec<TestClickHouse>,
    cfg: ClickHouseConfig,
}

impl Cluster {
    /// A client as tether-pro makes one in cluster mode, on node 1.
    fn client(&self) -> clickhouse::Client {
        tether_pro::store::server_client(&self.nodes[0].url, &self.cfg).with_database(&self.cfg.database)
    }

    /// `clickhouse.*` as environment variables for a `tether-pro` process.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TETHER_PRO_CLICKHOUSE__CLUSTER", CLUSTER.to_owned()),
            ("TETHER_PRO_CLICKHOUSE__NODES", format!("[{}]", self.cfg.nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "))),
        ]
    }

    /// The same count on each node's local table.
    async fn per_shard(&self, sql: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(n.count(sql).await);
        }
        out
    }
}

/// A fresh database on the pair, migrated in cluster mode on both nodes.
async fn cluster() -> Cluster {
    let urls = tokio::task::spawn_blocking(pair_urls).await.unwrap();
    let database = format!("test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let cfg = ClickHouseConfig {
        url: Some(urls[0].clone()),
        database: database.clone(),
        cluster: Some(CLUSTER.to_owned()),
        nodes: urls.clone(),
        ..ClickHouseConfig::default()
    };
    let report = migrate::migrate_configured(&urls[0], &cfg, &RetentionConfig::default()).await.expect("the migrations apply on both nodes");
    assert_eq!(report.nodes, urls);
    assert_eq!(report.applied, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    assert!(report.drift.is_empty(), "{:?}", report.drift);
    Cluster { nodes: urls.into_iter().map(|url| TestClickHouse { url, database: database.clone() }).collect(), cfg }
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

/// What one writer sent.
#[derive(Default)]
struct Sent {
    pushes: u64,
    pulls: u64,
    mutations: u64,
}

/// `pushes` pushes of four mutations (three creates, an update of the first), every fifth
/// also repeating the previous push's first mutation (a duplicate) and editing that record
/// with a timestamp older than its last write (a conflict), then two pulls.
async fn drive(base: &str, pushes: usize) -> Sent {
    let http = reqwest::Client::new();
    let client_id = ulid();
    let mut sent = Sent::default();
    let mut previous: Option<Value> = None;
    for i in 0..pushes {
        let entities: Vec<String> = (0..3).map(|_| ulid()).collect();
        let now = chrono::Utc::now().timestamp_millis();
        let m = |entity: &str, op: &str, payload: Value, ts: i64| {
            json!({"mutation_id": ulid(), "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": ts})
        };
        let mut mutations: Vec<Value> = entities.iter().map(|e| m(e, "create", json!({"title": format!("task {i}"), "done": false}), now)).collect();
        mutations.push(m(&entities[0], "update", json!({"title": format!("task {i} done"), "done": true}), now + 1));
        if i % 5 == 4 {
            let previous = previous.clone().unwrap();
            let late = m(previous["entity_id"].as_str().unwrap(), "update", json!({"title": "late edit"}), now - 60_000);
            mutations.extend([previous, late]);
        }
        previous = Some(mutations[0].clone());
        sent.mutations += mutations.len() as u64;
        let r = http.post(format!("{base}/tether/push")).json(&json!({"client_id": client_id, "mutations": mutations})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        sent.pushes += 1;
    }
    for _ in 0..2 {
        let r = http.post(format!("{base}/tether/pull")).json(&json!({"client_id": client_id, "models": ["Task"]})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        sent.pulls += 1;
    }
    sent
}

/// Two `tether-pro sync-server --capture` processes against one database, driven at the same
/// time, then stopped (a stop flushes). Returns what both sent.
async fn two_writers(url: &str, database: &str, env: &[(&'static str, String)], pushes: usize) -> Sent {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).chain([("TETHER_PRO_CAPTURE__BATCH_INTERVAL_MS", "50")]).collect();
    let (a, b) = (ChildServer::start(url, database, &env, false), ChildServer::start(url, database, &env, false));
    let (sa, sb) = tokio::join!(drive(&a.base, pushes), drive(&b.base, pushes));
    a.terminate();
    b.terminate();
    Sent { pushes: sa.pushes + sb.pushes, pulls: sa.pulls + sb.pulls, mutations: sa.mutations + sb.mutations }
}

/// Every request and mutation arrived once, with unique ids.
async fn assert_each_row_once(ch: &TestClickHouse, sent: &Sent) {
    let requests = sent.pushes + sent.pulls;
    let r = &ch.rows("SELECT count() AS n, uniqExact(request_id) AS ids, countIf(kind = 'push') AS pushes FROM sync_requests").await[0];
    assert_eq!((r["n"].as_u64(), r["ids"].as_u64(), r["pushes"].as_u64()), (Some(requests), Some(requests), Some(sent.pushes)), "{r}");
    let m = &ch.rows("SELECT count() AS n, uniqExact(request_id, position) AS slots, sum(request_id = '') AS blank FROM sync_mutations").await[0];
    assert_eq!((m["n"].as_u64(), m["slots"].as_u64(), m["blank"].as_u64()), (Some(sent.mutations), Some(sent.mutations), Some(0)), "{m}");
    // The mutation ids repeat only where a push repeated one (the duplicates).
    let dups = ch.count("SELECT count() FROM sync_mutations WHERE outcome = 'duplicate'").await;
    assert_eq!(ch.count("SELECT uniqExact(mutation_id) FROM sync_mutations").await, sent.mutations - dups);
    assert_eq!(dups, sent.pushes / 5);
    assert_eq!(ch.count("SELECT count() FROM sync_mutations WHERE outcome = 'conflict'").await, sent.pushes / 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sync_servers_capture_into_a_two_shard_cluster_and_every_surface_reads_it() {
    let c = cluster().await;
    let sent = two_writers(&c.nodes[0].url, &c.cfg.database, &c.env(), 25).await;
    let all = &c.nodes[0];
    assert_each_row_once(all, &sent).await;

    // Both shards hold rows, and the shards add up to the Distributed table.
    let requests = sent.pushes + sent.pulls;
    let shard_requests = c.per_shard("SELECT count() FROM sync_requests_local").await;
    let shard_mutations = c.per_shard("SELECT count() FROM sync_mutations_local").await;
    println!("rows per shard: sync_requests {shard_requests:?} of {requests}, sync_mutations {shard_mutations:?} of {}", sent.mutations);
    assert!(shard_requests.iter().all(|n| *n > 0) && shard_requests.iter().sum::<u64>() == requests, "{shard_requests:?}");
    assert!(shard_mutations.iter().all(|n| *n > 0) && shard_mutations.iter().sum::<u64>() == sent.mutations, "{shard_mutations:?}");
    // A request's mutations live on its shard (the request page is a one-shard lookup).
    assert_eq!(c.per_shard("SELECT count() FROM sync_mutations_local WHERE request_id NOT IN (SELECT request_id FROM sync_requests_local)").await, vec![0, 0]);
    // Each shard aggregates its own rows; merged across shards the aggregates equal the raw rows.
    assert_eq!(
        c.per_shard("SELECT sum(requests) FROM sync_requests_5m_local").await,
        shard_requests,
        "each shard's five-minute aggregates count its own requests"
    );
    let agg = &all.rows("SELECT sum(requests) AS requests, sum(mutations) AS mutations, sum(applied) AS applied, sum(duplicates) AS duplicates FROM sync_requests_5m").await[0];
    let raw = &all
        .rows("SELECT count() AS requests, sum(mutation_count) AS mutations, sum(applied_count) AS applied, sum(duplicate_count) AS duplicates FROM sync_requests")
        .await[0];
    assert_eq!(agg, raw);
    assert_eq!(raw["mutations"].as_u64(), Some(sent.mutations), "{raw}");
    let q = |sql: &str| {
        let sql = sql.to_owned();
        async move { all.rows(&sql).await[0]["q"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<f64>>() }
    };
    let merged = q("SELECT quantilesTDigestMerge(0.5, 0.95, 0.99)(duration_quantiles) AS q FROM sync_requests_5m WHERE kind = 'push'").await;
    let from_raw = q("SELECT quantilesTDigest(0.5, 0.95, 0.99)(duration_us) AS q FROM sync_requests WHERE kind = 'push'").await;
    assert_eq!(merged, from_raw, "quantile states merged across shards equal the quantiles of the raw rows");

    // The metrics API (its queries go through the Distributed tables).
    let base = serve(mount(DashboardState::new(c.client()))).await;
    let m: Value = reqwest::get(format!("{base}/tether/dashboard/metrics?window=1h")).await.unwrap().json().await.unwrap();
    assert_eq!(m["totals"]["requests"], json!(requests), "{m}");
    assert_eq!(m["totals"]["pushes"], json!(sent.pushes));
    assert_eq!(m["totals"]["pulls"], json!(sent.pulls));
    assert_eq!(m["totals"]["mutations"], raw["mutations"]);
    assert_eq!(m["totals"]["applied"], raw["applied"]);
    assert_eq!(m["totals"]["duplicates"], raw["duplicates"]);
    assert_eq!(m["totals"]["conflicts"], json!(sent.pushes / 5));
    assert_eq!(m["latency"]["push"]["p50_ms"].as_f64().unwrap(), from_raw[0].round() / 1000.0);
    assert_eq!(m["latency"]["push"]["p95_ms"].as_f64().unwrap(), from_raw[1].round() / 1000.0);

    // The pages: a request held by each shard, found by its id, with all its mutations.
    let http = reqwest::Client::new();
    let mut on_shard = Vec::new();
    for n in &c.nodes {
        let id = n.rows("SELECT request_id FROM sync_requests_local WHERE kind = 'push' AND duplicate_count = 0 ORDER BY started_at DESC LIMIT 1").await[0]["request_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = http.get(format!("{base}/tether/dashboard/requests/{id}")).send().await.unwrap();
        assert_eq!(page.status(), 200, "request {id}");
        let html = page.text().await.unwrap();
        let ids = n.rows(&format!("SELECT mutation_id FROM sync_mutations_local WHERE request_id = '{id}'")).await;
        assert_eq!(ids.len(), 4);
        for m in &ids {
            assert!(html.contains(m["mutation_id"].as_str().unwrap()), "the page of {id} shows mutation {m}");
        }
        on_shard.push(id);
    }
    let list = http.get(format!("{base}/tether/dashboard/requests")).send().await.unwrap().text().await.unwrap();
    for id in &on_shard {
        assert!(list.contains(id.as_str()), "the requests list shows the latest push of each shard ({id})");
    }

    // Replay of the push held by shard 2: the links live on that shard, the audit view reads them
    // from node 1, and the same key replays once.
    let host = SyncServer::in_memory();
    let replayer = Replayer::new(c.client(), Arc::new(InProcessTarget { app: sync::router(host.clone()), server: host.clone() }));
    let opts = ApplyOptions { idempotency_key: "cluster-key".into(), actor: "test".into(), restamp: true, positions: None };
    let r = replayer.apply(&on_shard[1], &opts).await.unwrap();
    assert!(r.sent);
    assert_eq!(r.host_http_status, 200);
    assert_eq!(r.links.iter().map(|l| l.status.as_str()).collect::<Vec<_>>(), vec!["applied"; 4], "{:?}", r.links);
    let links_per_shard = c.per_shard(&format!("SELECT count() FROM replay_links_local WHERE original_request_id = '{}'", on_shard[1])).await;
    assert!(links_per_shard[0] == 0 && links_per_shard[1] > 0, "links live with the original's shard: {links_per_shard:?}");
    let audit = all.rows(&format!("SELECT status FROM replays WHERE original_request_id = '{}'", on_shard[1])).await;
    assert_eq!(audit, vec![json!({"status": "applied"}); 4]);
    let again = replayer.apply(&on_shard[1], &opts).await.unwrap();
    assert!(!again.sent);
    assert_eq!(again.replay_id, r.replay_id);
    for e in c.nodes[1].rows(&format!("SELECT DISTINCT entity_id FROM sync_mutations_local WHERE request_id = '{}'", on_shard[1])).await {
        let e = e["entity_id"].as_str().unwrap();
        assert!(host.state_blocking("Task", e).unwrap().is_some(), "the host has {e}");
    }

    // The other pages read across shards too: a conflicting edit (its push may sit on another
    // shard than the write it lost to) on the conflicts page and in its record's history,
    // with the winner found; the client's page, search, and the filtered requests list.
    let conflict = &all.rows("SELECT mutation_id, entity_id, client_id FROM sync_mutations WHERE outcome = 'conflict' ORDER BY started_at LIMIT 1").await[0];
    let (cm, entity, client) = (conflict["mutation_id"].as_str().unwrap(), conflict["entity_id"].as_str().unwrap(), conflict["client_id"].as_str().unwrap());
    let winner = all
        .rows(&format!("SELECT request_id FROM sync_mutations WHERE entity_id = '{entity}' AND operation = 'update' AND outcome = 'applied'"))
        .await;
    let page = |path: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}/tether/dashboard{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };
    assert!(page("/conflicts".into()).await.contains(cm), "the conflicts page lists {cm}");
    let history: Value = serde_json::from_str(&page(format!("/record?model=Task&entity_id={entity}&format=json")).await).unwrap();
    assert_eq!(history["counts"]["mutations"].as_u64(), Some(all.count(&format!("SELECT count() FROM sync_mutations WHERE entity_id = '{entity}'")).await), "{history}");
    let lost = history["mutations"].as_array().unwrap().iter().find(|e| e["mutation_id"] == cm).expect("the conflict in the history");
    assert_eq!(lost["conflict"]["winner"]["request_id"], winner[0]["request_id"], "{lost}");
    assert!(page(format!("/records/Task/{entity}")).await.contains(cm));
    assert!(page(format!("/clients/{client}")).await.contains(client));
    assert!(page("/failures".into()).await.contains("conflict"));
    assert!(page(format!("/search?q={cm}")).await.contains(cm), "search finds the mutation");
    // The entity filter is a subquery over the second Distributed table.
    let by_entity = page(format!("/requests?model=Task&entity_id={entity}")).await;
    for r in all.rows(&format!("SELECT DISTINCT request_id FROM sync_mutations WHERE entity_id = '{entity}'")).await {
        assert!(by_entity.contains(r["request_id"].as_str().unwrap()), "the requests carrying {entity}");
    }
    assert!(page(String::new()).await.contains("tether"), "the overview");

    // Every Grafana query, as the datasource plugin sends it (no session settings: a plain IN
    // over a second Distributed table would be refused), runs against node 1.
    for f in ["otel_traces.sql", "otel_metrics_sum.sql"] {
        all.rows(&std::fs::read_to_string(grafana_sql::root().join("tests/fixtures/grafana").join(f)).unwrap()).await;
    }
    let now = chrono::Utc::now().timestamp();
    let queries = grafana_sql::every_query(now - 3_600, now + 600);
    assert!(queries.len() >= 25, "{}", queries.len());
    let mut variables_with_values = 0;
    for gq in &queries {
        let rows = run_json(all, &gq.sql).await.unwrap_or_else(|e| panic!("{}: {e}\n{}", gq.origin, gq.sql));
        if gq.origin.contains(": variable ") && gq.sql.contains("sync_") {
            assert!(rows > 0, "{}: values from the captured rows", gq.origin);
            variables_with_values += 1;
        }
    }
    assert!(variables_with_values >= 2);
    // The request explorer's table filtered by model (its GLOBAL IN subquery) finds pushes
    // from both shards.
    let (_, explorer) = grafana_sql::dashboards().into_iter().find(|(_, d)| d["uid"] == "tether-request-explorer").expect("the explorer");
    let table = grafana_sql::panels(&explorer).into_iter().find(|p| p["type"] == "table").expect("its table").clone();
    let vars: Vec<(String, String)> =
        [("client", ""), ("model", "Task"), ("kind", "push"), ("outcome", "__all"), ("dashboard_url", "")].map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec();
    let sql = grafana_sql::expand_macros(&grafana_sql::expand_vars(table["targets"][0]["rawSql"].as_str().unwrap(), &vars), now - 3_600, now + 600, 300);
    assert!(sql.contains("GLOBAL IN"), "{sql}");
    let plain_in = run_json(all, &sql.replace("GLOBAL IN", "IN")).await.expect_err("a plain IN over a second Distributed table is refused");
    assert!(plain_in.contains("DISTRIBUTED_IN_JOIN_SUBQUERY_DENIED"), "{plain_in}");
    let found = all.rows(&sql).await;
    let found: BTreeSet<&str> = found.iter().filter_map(|r| r["request_id"].as_str()).collect();
    for id in &on_shard {
        assert!(found.contains(id.as_str()), "the explorer finds {id} among {found:?}");
    }
}

/// Runs `sql` as Grafana's datasource does (plain HTTP, no settings) and returns how many rows
/// came back, or ClickHouse's error.
async fn run_json(ch: &TestClickHouse, sql: &str) -> Result<usize, String> {
    let v: Value = serde_json::from_str(&ch.query(sql, "JSON").await?).map_err(|e| e.to_string())?;
    Ok(v["data"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sync_servers_into_one_clickhouse_lose_and_double_nothing() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let sent = two_writers(&ch.url, &ch.database, &[], 30).await;
    assert_each_row_once(&ch, &sent).await;
    let agg = &ch.rows("SELECT sum(requests) AS requests, sum(mutations) AS mutations FROM sync_requests_5m").await[0];
    assert_eq!(agg, &json!({"requests": sent.pushes + sent.pulls, "mutations": sent.mutations}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_insert_through_the_distributed_table_lands_once() {
    let c = cluster().await;
    let rows: Vec<String> = (0..40)
        .map(|i| format!("('r{i:02}', 'push', 'c', now64(6), 1000, 200, 'ok', 1, 1, 0, 0, 0, 0)"))
        .collect();
    let insert = |token: &str| {
        format!(
            "INSERT INTO sync_requests (request_id, kind, client_id, started_at, duration_us, http_status, outcome, mutation_count, applied_count, rejected_count, conflict_count, duplicate_count, snapshot_count)
             SETTINGS insert_deduplication_token = '{token}', distributed_foreground_insert = 1 VALUES {}",
            rows.join(", ")
        )
    };
    let all = &c.nodes[0];
    // The writer's retry of a batch whose answer was lost: the same token, the same rows.
    all.rows(&insert("batch-1")).await;
    all.rows(&insert("batch-1")).await;
    assert_eq!(all.count("SELECT count() FROM sync_requests").await, 40);
    assert_eq!(all.count("SELECT sum(requests) FROM sync_requests_5m").await, 40, "the aggregates are not doubled either");
    let shards = c.per_shard("SELECT count() FROM sync_requests_local").await;
    assert!(shards.iter().all(|n| *n > 0) && shards.iter().sum::<u64>() == 40, "{shards:?}");
    // Another batch (another token) with the same content is new rows.
    all.rows(&insert("batch-2")).await;
    assert_eq!(all.count("SELECT count() FROM sync_requests").await, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_recorded_and_checked_on_each_node() {
    let c = cluster().await;
    let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    for n in &c.nodes {
        assert_eq!(n.count("SELECT uniqExact(version) FROM schema_migrations").await, versions.len() as u64, "{}", n.url);
    }
    let again = migrate::migrate_configured(&c.nodes[0].url, &c.cfg, &RetentionConfig::default()).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, versions);
    // A column changed by hand on one node's local table is drift on that node only.
    c.nodes[1].rows("ALTER TABLE sync_requests_local DROP COLUMN client_version").await;
    let drift = migrate::migrate_configured(&c.nodes[0].url, &c.cfg, &RetentionConfig::default()).await.unwrap().drift;
    assert_eq!(drift, vec![format!("node {}: sync_requests_local.client_version is missing (expected LowCardinality(String))", c.nodes[1].url)]);
    // A node that is not in the cluster's config is refused by name.
    let bad = ClickHouseConfig { cluster: Some("no_such_cluster".into()), nodes: vec![], ..c.cfg.clone() };
    let err = migrate::migrate_configured(&c.nodes[0].url, &bad, &RetentionConfig::default()).await.unwrap_err();
    assert!(err.to_string().contains("no_such_cluster"), "{err}");
}

/// A node that cannot be reached is named in the error (without the credentials its URL
/// carries); the others are migrated all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_down_is_named_and_the_others_are_migrated() {
    // A pair of its own, whose shard 2 is stopped.
    let (a, down) = tokio::task::spawn_blocking(|| {
        let parent = tempfile::Builder::new().prefix("tether-pro-test-cluster-down-").tempdir().unwrap().keep();
        let mut pair = start_cluster("tether_down", 2, &parent).expect("a second pair");
        let b = pair.pop().unwrap();
        let down = b.url().replacen("http://", "http://default:s3cret-pw@", 1);
        drop(b);
        (pair.pop().unwrap(), down)
    })
    .await
    .unwrap();
    let database = format!("test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let cfg = ClickHouseConfig {
        url: Some(a.url().to_owned()),
        database: database.clone(),
        cluster: Some("tether_down".to_owned()),
        nodes: vec![a.url().to_owned(), down.clone()],
        ..ClickHouseConfig::default()
    };
    let err = migrate::migrate_configured(a.url(), &cfg, &RetentionConfig::default()).await.unwrap_err();
    let shown = tether_pro::store::display_url(&down);
    match &err {
        migrate::MigrateError::Nodes { failed, of } => {
            assert_eq!((*of, failed.len()), (2, 1), "{failed:?}");
            assert!(failed[0].starts_with(&format!("node {shown}: ")), "{failed:?}");
        }
        other => panic!("{other}"),
    }
    let message = err.to_string();
    assert!(message.contains("the other nodes were migrated") && !message.contains("s3cret-pw"), "{message}");
    let n = TestClickHouse { url: a.url().to_owned(), database };
    assert_eq!(n.count("SELECT uniqExact(version) FROM schema_migrations").await, MIGRATIONS.len() as u64, "the live node was migrated");
    tokio::task::spawn_blocking(move || drop(a)).await.unwrap();
}

/// The nodes to migrate must be the cluster's members: derived from host names they cannot
/// be told apart here (both members are 127.0.0.1), a list that leaves one out is refused,
/// duplicates count once, and a cluster the servers do not know is refused even when the
/// nodes are listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_must_be_the_clusters_members() {
    let c = cluster().await;
    let (a, b) = (c.nodes[0].url.clone(), c.nodes[1].url.clone());
    let with = |nodes: Vec<String>, cluster: &str| ClickHouseConfig { nodes, cluster: Some(cluster.to_owned()), ..c.cfg.clone() };
    let run = |cfg: ClickHouseConfig| {
        let a = a.clone();
        async move { migrate::migrate_configured(&a, &cfg, &RetentionConfig::default()).await }
    };
    let derived = run(with(vec![], CLUSTER)).await.unwrap_err().to_string();
    assert!(derived.contains("has 2 nodes in system.clusters, but their host names give 1"), "{derived}");
    let short = run(with(vec![b.clone()], CLUSTER)).await.unwrap_err().to_string();
    assert!(short.contains("has 2 nodes in system.clusters, but clickhouse.nodes lists 1"), "{short}");
    let report = run(with(vec![a.clone(), a.clone(), b.clone()], CLUSTER)).await.unwrap();
    assert_eq!(report.nodes, vec![a.clone(), b.clone()]);
    assert_eq!(report.applied_per_node, vec![Vec::<u32>::new(), vec![]]);
    // The same server under two spellings is one node, whatever the count says.
    for twice in [format!("{a}/"), a.replace("127.0.0.1", "localhost")] {
        let err = run(with(vec![a.clone(), twice.clone()], CLUSTER)).await.unwrap_err();
        assert!(matches!(err, migrate::MigrateError::NodeIdentity(_)) && err.to_string().contains("are the same server"), "{twice}: {err}");
    }
    let unknown = run(with(vec![a.clone(), b.clone()], "nope")).await.unwrap_err();
    assert!(matches!(unknown, migrate::MigrateError::NoSuchCluster(ref n) if n == "nope"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicated_variant_of_every_statement_is_valid_clickhouse_sql() {
    let urls = tokio::task::spawn_blocking(pair_urls).await.unwrap();
    let retention = RetentionConfig::default();
    let replicated = migrate::node_statements(&retention, Some(ClusterLayout { cluster: CLUSTER, database: "tether", replicated: true }));
    let plain = migrate::node_statements(&retention, Some(ClusterLayout { cluster: CLUSTER, database: "tether", replicated: false }));
    assert_eq!(replicated.len(), plain.len());
    let http = reqwest::Client::new();
    let mut local_tables = 0;
    for (version, stmt) in &replicated {
        let resp = http
            .post(&urls[0])
            // Parameter values over HTTP are in escaped (TSV) form.
            .query(&[("param_q", stmt.replace('\\', "\\\\").replace('\n', "\\n").replace('\t', "\\t"))])
            .body("SELECT formatQuery({q:String})")
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "migration {version}: ClickHouse's parser refuses\n{stmt}\n{text}");
        if stmt.starts_with("CREATE TABLE") && stmt.contains("_local") && !stmt.contains("ENGINE = Distributed") {
            local_tables += 1;
            assert!(stmt.contains("Replicated") && stmt.contains("'/clickhouse/tables/{shard}/tether/") && stmt.contains("'{replica}'"), "{stmt}");
        }
    }
    assert_eq!(local_tables, 6, "every table has a replicated local table");
}

/// `tether-pro migrate --print-ddl` shows the DDL each node runs without any ClickHouse: the
/// single-node schema by default; in cluster mode every table as a local table (Replicated
/// when configured) and a Distributed one.
#[test]
fn migrate_print_ddl_shows_each_nodes_statements_without_connecting() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tether-pro"));
        cmd.args(["migrate", "--print-ddl"]).env_remove("CLICKHOUSE_URL");
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TETHER_PRO_")) {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let single = run(&[]);
    assert!(single.contains("CREATE DATABASE IF NOT EXISTS tether;\nUSE tether;\n"), "{single}");
    assert!(single.contains("-- migration 1\nCREATE TABLE IF NOT EXISTS sync_requests\n"), "{single}");
    assert!(!single.contains("Distributed") && !single.contains("_local"));
    let cluster = run(&[("TETHER_PRO_CLICKHOUSE__CLUSTER", "prod"), ("TETHER_PRO_CLICKHOUSE__REPLICATED", "true"), ("TETHER_PRO_CLICKHOUSE__DATABASE", "obs")]);
    for (table, key) in tether_pro::store::cluster::SHARDED {
        assert!(
            cluster.contains(&format!("CREATE TABLE IF NOT EXISTS {table} AS {table}_local ENGINE = Distributed('prod', 'obs', '{table}_local', {key})")),
            "{table}: {cluster}"
        );
        assert!(cluster.contains(&format!("'/clickhouse/tables/{{shard}}/obs/{table}_local', '{{replica}}'")), "{table}");
    }
    assert_eq!(cluster.matches("-- migration ").count(), migrate::node_statements(&RetentionConfig::default(), Some(ClusterLayout { cluster: "prod", database: "obs", replicated: true })).len());
    // A cluster name that could break out of the DDL is refused.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tether-pro"));
    let out = cmd.args(["migrate", "--print-ddl"]).env("TETHER_PRO_CLICKHOUSE__CLUSTER", "x', 'y").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clickhouse.cluster must be a cluster name"));
}

/// When inserts fail (here: the database is gone from shard 2, so every insert through the
/// Distributed table is refused), the capturing process says so on stderr once, with
/// ClickHouse's reason, instead of staying silent until its shutdown summary; the sync server
/// keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_inserts_are_reported_once_while_the_host_keeps_answering() {
    let c = cluster().await;
    c.nodes[1].rows(&format!("DROP DATABASE {}", c.cfg.database)).await;
    let env: Vec<(&str, String)> = c.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).chain([("TETHER_PRO_CAPTURE__FLUSH_TIMEOUT_MS", "1000")]).collect();
    // Its start-up migration recreates what is missing: start it first, then drop again.
    let server = ChildServer::start(&c.nodes[0].url, &c.cfg.database, &env, true);
    c.nodes[1].rows(&format!("DROP DATABASE IF EXISTS {}", c.cfg.database)).await;
    let sent = drive(&server.base, 6).await;
    assert_eq!(sent.pushes, 6, "the host answered every push");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let stderr = server.terminate();
    assert_eq!(stderr.matches("tether-pro: inserts into ClickHouse are failing (").count(), 1, "{stderr}");
    assert!(stderr.contains("UNKNOWN_DATABASE") || stderr.contains("Code: 81"), "{stderr}");
}
