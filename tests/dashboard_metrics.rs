//! The metrics API against a real ClickHouse: exact numbers for known rows, bucket
//! boundaries, statuses, bad parameters, auth and security headers.

mod common;

use common::{TestClickHouse, clickhouse};
use serde_json::{Value, json};
use tether_pro::config::ServeConfig;
use tether_pro::dashboard;

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The day of the known rows: recent enough that raw rows are inside the 30-day TTL.
fn day() -> String {
    (chrono::Utc::now() - chrono::Duration::days(2)).format("%Y-%m-%d").to_string()
}

/// Known traffic: 10:00-10:05 two pushes (one ok, one conflict) and a pull; 10:05-10:10 one
/// failed push (500) at the very start of the bucket; 10:20 one pull. All two days ago.
async fn known_rows(ch: &TestClickHouse) {
    let sql = |s: &str| s.replace("2026-01-01", &day());
    ch.migrate().await;
    ch.rows(&sql(
        "INSERT INTO sync_requests (request_id, kind, client_id, started_at, duration_us, http_status, outcome, mutation_count, applied_count, rejected_count, conflict_count, duplicate_count, snapshot_count)
         VALUES ('r1', 'push', 'c1', '2026-01-01 10:00:00', 10000, 200, 'ok', 3, 3, 0, 0, 0, 0),
                ('r2', 'push', 'c2', '2026-01-01 10:04:59.999999', 30000, 200, 'conflict', 2, 0, 1, 1, 0, 0),
                ('r3', 'pull', 'c1', '2026-01-01 10:02:00', 5000, 200, 'ok', 0, 0, 0, 0, 0, 7),
                ('r4', 'push', 'c2', '2026-01-01 10:05:00', 50000, 500, 'error', 1, 0, 0, 0, 0, 0),
                ('r5', 'pull', 'c3', '2026-01-01 10:20:00', 1000, 200, 'ok', 0, 0, 0, 0, 0, 2)",
    ))
    .await;
    ch.rows(&sql(
        "INSERT INTO sync_mutations (request_id, started_at, position, mutation_id, model, operation, client_id, outcome, reason)
         VALUES ('r1', '2026-01-01 10:00:00', 0, 'm1', 'Task', 'create', 'c1', 'applied', ''),
                ('r1', '2026-01-01 10:00:00', 1, 'm2', 'Task', 'update', 'c1', 'applied', ''),
                ('r1', '2026-01-01 10:00:00', 2, 'm3', 'Note', 'create', 'c1', 'applied', ''),
                ('r2', '2026-01-01 10:04:59.999999', 0, 'm4', 'Task', 'update', 'c2', 'conflict', 'conflict'),
                ('r2', '2026-01-01 10:04:59.999999', 1, 'm5', 'Task', 'create', 'c2', 'rejected', 'validation_failed'),
                ('r4', '2026-01-01 10:05:00', 0, 'm6', 'Project', 'create', 'c2', 'unprocessed', 'http_500')",
    ))
    .await;
}

fn range() -> String {
    format!("from={d}T10:00:00Z&to={d}T10:30:00Z", d = day())
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn exact_numbers_for_known_traffic() {
    let ch = clickhouse().await;
    known_rows(&ch).await;
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    let (status, m) = get(&format!("{base}/tether/dashboard/metrics?{}", range())).await;
    assert_eq!(status, 200, "{m}");
    let d = day();
    assert_eq!(m["window"], json!({"from": format!("{d}T10:00:00Z"), "to": format!("{d}T10:30:00Z"), "seconds": 1800, "bucket_seconds": 300}));
    assert_eq!(
        m["totals"],
        json!({"requests": 5, "pushes": 3, "pulls": 2, "mutations": 6, "applied": 3, "rejected": 1, "conflicts": 1, "duplicates": 0, "snapshots": 9, "failed_requests": 1})
    );
    assert_eq!(m["rates"], json!({"conflict_rate": 1.0 / 6.0, "failure_rate": 0.2, "rejection_rate": 1.0 / 6.0}));
    assert_eq!(m["throughput"]["requests_per_second"], json!(5.0 / 1800.0));
    // Percentiles equal the same t-digest over the raw rows.
    let raw = ch.rows("SELECT quantilesTDigest(0.5, 0.95, 0.99)(duration_us) AS q FROM sync_requests WHERE kind = 'push'").await;
    let q: Vec<f64> = raw[0]["q"].as_array().unwrap().iter().map(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()).unwrap_or_else(|| panic!("{raw:?}"))).collect();
    assert_eq!(m["latency"]["push"]["p95_ms"].as_f64().unwrap(), (q[1]).round() / 1000.0);
    assert_eq!(m["latency"]["push"]["p50_ms"].as_f64().unwrap(), (q[0]).round() / 1000.0);
    assert_eq!(m["top_models"][0], json!({"key": "Task", "mutations": 4, "conflicts": 1, "rejections": 1}));
    assert_eq!(
        m["top_clients"],
        json!([{"key": "c1", "mutations": 3, "conflicts": 0, "rejections": 0}, {"key": "c2", "mutations": 3, "conflicts": 1, "rejections": 1}]),
        "c3 only pulled; ties in key order"
    );

    let health = m["health"].as_array().unwrap();
    assert_eq!(health.len(), 6, "one entry per five minutes");
    let b0 = &health[0];
    assert_eq!((b0["start"].as_str(), b0["requests"].as_u64(), b0["mutations"].as_u64()), (Some(format!("{d}T10:00:00Z").as_str()), Some(3), Some(5)));
    assert_eq!(b0["status"], "degraded", "1 conflict in 5 mutations is over the 10% conflict threshold");
    assert_eq!((health[1]["requests"].as_u64(), health[1]["failed_requests"].as_u64()), (Some(1), Some(1)), "10:05:00 starts a new bucket");
    assert_eq!(health[1]["status"], "failing");
    assert_eq!(health[2]["status"], "idle");
    assert_eq!(health[3]["status"], "idle");
    assert_eq!(health[4]["status"], "ok");
    assert_eq!(health[4]["start"], format!("{d}T10:20:00Z"));
}

#[tokio::test]
async fn the_default_window_is_24_hours_of_288_buckets() {
    let ch = clickhouse().await;
    known_rows(&ch).await;
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    let (status, m) = get(&format!("{base}/tether/dashboard/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(m["health"].as_array().unwrap().len(), 288);
    assert_eq!(m["totals"]["requests"], 0, "the known rows are two days old");
    assert!(m["health"].as_array().unwrap().iter().all(|b| b["status"] == "idle"));
    let (_, m) = get(&format!("{base}/tether/dashboard/metrics?window=1h")).await;
    assert_eq!(m["health"].as_array().unwrap().len(), 12);
}

#[tokio::test]
async fn bad_parameters_are_400_never_500() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    for q in [
        "window=2h",
        "window=24h&from=2026-01-01T00:00:00Z",
        "from=2026-01-01T00:00:00Z",
        "from=yesterday&to=today",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "window=%27%3B%20DROP%20TABLE%20sync_requests%3B%20--",
        "unknown=1",
    ] {
        let (status, body) = get(&format!("{base}/tether/dashboard/metrics?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"].is_string());
    }
    assert_eq!(ch.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'sync_requests'").await, 1);
}

#[tokio::test]
async fn clickhouse_down_is_503_not_500() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = clickhouse::Client::default().with_url(format!("http://127.0.0.1:{port}"));
    let base = serve(dashboard::mount(dashboard::DashboardState::new(client))).await;
    let (status, body) = get(&format!("{base}/tether/dashboard/metrics")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({"error": "ClickHouse is unavailable"}), "no internals leak");
}

#[tokio::test]
async fn the_openapi_document_describes_the_metrics_api() {
    let ch = clickhouse().await;
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    let (status, doc) = get(&format!("{base}/tether/dashboard/openapi.json")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let props = &doc["components"]["schemas"]["Metrics"]["properties"];
    for k in ["window", "totals", "throughput", "latency", "rates", "top_models", "top_clients", "thresholds", "health"] {
        assert!(props.get(k).is_some(), "{k} undocumented");
    }
    let params: Vec<&str> = doc["paths"]["/metrics"]["get"]["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["window", "from", "to"]);
    assert_eq!(doc["components"]["schemas"]["WindowSpan"]["enum"], json!(["1h", "6h", "24h", "7d"]));
}

/// A validator for `doc`'s response schema `status` of `GET /metrics`, strict: every object
/// schema refuses properties it does not document, so an undocumented field fails too.
fn response_validator(doc: &Value, status: &str) -> jsonschema::Validator {
    let mut components = doc["components"].clone();
    for schema in components["schemas"].as_object_mut().unwrap().values_mut() {
        if schema["type"] == "object" {
            schema["additionalProperties"] = json!(false);
        }
    }
    let response = doc["paths"]["/metrics"]["get"]["responses"][status]["content"]["application/json"]["schema"].clone();
    assert!(response.is_object(), "no {status} schema");
    let mut schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "components": components});
    schema.as_object_mut().unwrap().extend(response.as_object().unwrap().clone());
    jsonschema::validator_for(&schema).expect("the OpenAPI schemas are valid JSON Schema")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

#[tokio::test]
async fn real_answers_validate_against_the_generated_openapi_document() {
    let ch = clickhouse().await;
    known_rows(&ch).await;
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    let (_, doc) = get(&format!("{base}/tether/dashboard/openapi.json")).await;
    let ok = response_validator(&doc, "200");
    let bad = response_validator(&doc, "400");
    // Answers with traffic (every list non-empty), an empty default window, a bad request.
    let (status, metrics) = get(&format!("{base}/tether/dashboard/metrics?{}", range())).await;
    assert_eq!(status, 200);
    assert!(!metrics["top_models"].as_array().unwrap().is_empty() && !metrics["health"].as_array().unwrap().is_empty());
    assert_eq!(errors(&ok, &metrics), Vec::<String>::new(), "{metrics}");
    let (status, empty) = get(&format!("{base}/tether/dashboard/metrics?window=1h")).await;
    assert_eq!(status, 200);
    assert_eq!(errors(&ok, &empty), Vec::<String>::new(), "{empty}");
    let (status, refused) = get(&format!("{base}/tether/dashboard/metrics?window=2h")).await;
    assert_eq!(status, 400);
    assert_eq!(errors(&bad, &refused), Vec::<String>::new(), "{refused}");
    // The validator is not vacuous: a wrong type, a missing field, an undocumented field and
    // an unknown status all fail.
    let mut wrong = metrics.clone();
    wrong["totals"]["pushes"] = json!("3");
    assert!(!errors(&ok, &wrong).is_empty());
    let mut missing = metrics.clone();
    missing["rates"].as_object_mut().unwrap().remove("failure_rate");
    assert!(!errors(&ok, &missing).is_empty());
    let mut extra = metrics.clone();
    extra["totals"]["secret_field"] = json!(1);
    assert!(!errors(&ok, &extra).is_empty());
    let mut status_word = metrics.clone();
    status_word["health"][0]["status"] = json!("fine");
    assert!(!errors(&ok, &status_word).is_empty());
}

#[tokio::test]
async fn with_auth_configured_every_route_refuses_without_credentials() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let serve_cfg = ServeConfig { bearer_token: Some("t0ken".into()), basic_username: Some("ops".into()), basic_password: Some("pw".into()), ..ServeConfig::default() };
    let base = serve(dashboard::app(&serve_cfg, ch.client())).await;
    let http = reqwest::Client::new();
    for path in ["/", "/tether/dashboard/metrics", "/tether/dashboard/openapi.json", "/tether/dashboard", "/tether/dashboard/requests", "/tether/dashboard/nope"] {
        let url = format!("{base}{path}");
        let anon = http.get(&url).send().await.unwrap();
        assert_eq!(anon.status(), 401, "{path}");
        assert!(anon.headers().get("www-authenticate").is_some());
        let wrong = http.get(&url).bearer_auth("t0kenX").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        let ok = http.get(&url).bearer_auth("t0ken").send().await.unwrap();
        assert_ne!(ok.status(), 401, "{path}");
        let basic = http.get(&url).basic_auth("ops", Some("pw")).send().await.unwrap();
        assert_ne!(basic.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let ch = clickhouse().await;
    ch.migrate().await;
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    for path in ["/tether/dashboard/metrics", "/tether/dashboard/openapi.json", "/tether/dashboard/metrics?window=bad"] {
        let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
        let h = resp.headers();
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    }
}

/// Many clients and models over several hours, and a window that starts and ends inside an
/// hour: the answer comes from the projections of migration 8 (top clients: whole hours per
/// client, the partial hours per five minutes) and every number equals the raw rows' answer.
#[tokio::test]
async fn top_lists_from_the_projections_equal_the_raw_rows() {
    use tether_pro::internals::metrics::{self, MetricsQuery, Source};
    let ch = clickhouse().await;
    ch.migrate().await;
    let start = format!("{} 09:00:00", day());
    // 600 pushes every 40 s from 09:00 to 15:40, 1..7 mutations each, 37 clients, 4 models.
    ch.rows(&format!(
        "INSERT INTO sync_requests (request_id, kind, client_id, started_at, duration_us, http_status, outcome, mutation_count, applied_count, rejected_count, conflict_count)
         SELECT concat('r', toString(number)), 'push', concat('c', toString(number * 7 % 37)), toDateTime64('{start}', 6, 'UTC') + toIntervalSecond(number * 40),
                1000 + number, 200, 'ok', 1 + number % 7, 1 + number % 7, 0, 0
         FROM numbers(600)"
    ))
    .await;
    ch.rows(&format!(
        "INSERT INTO sync_mutations (request_id, started_at, position, mutation_id, model, operation, client_id, outcome, reason)
         SELECT concat('r', toString(n)), toDateTime64('{start}', 6, 'UTC') + toIntervalSecond(n * 40), p, concat('m', toString(n), '-', toString(p)),
                ['Task', 'Note', 'Project', 'Tag'][1 + (n + p) % 4], 'update', concat('c', toString(n * 7 % 37)),
                multiIf((n + p) % 11 = 0, 'conflict', (n + p) % 13 = 0, 'rejected', 'applied'), ''
         FROM (SELECT number AS n, arrayJoin(range(1 + number % 7)) AS p FROM numbers(600))"
    ))
    .await;
    let state = dashboard::DashboardState::new(ch.client());
    let q = MetricsQuery { window: None, from: Some(format!("{}T09:25:00Z", day())), to: Some(format!("{}T13:40:00Z", day())) };
    let window = q.window(chrono::Utc::now()).unwrap();
    let params = metrics::params(&window);
    assert_eq!((params[2].1 - params[0].1, params[1].1 - params[3].1), (35 * 60, 40 * 60), "whole hours 10:00..13:00");
    let api = metrics::compute(&state, window).await.unwrap();
    let raw = metrics::compute_from(&state, window, Source::RawRows).await.unwrap();
    assert_eq!(api.top_models, raw.top_models);
    assert_eq!(api.top_clients, raw.top_clients);
    assert_eq!(api.top_clients.len(), 10);
    assert_eq!(api, raw, "every number, percentiles included (few rows: the t-digests are exact)");

    // ClickHouse answers from the projections of migration 8, not from the tables' rows.
    let explain = |sql: String| {
        let c = ch.client().with_setting("prefer_column_name_to_alias", "1");
        async move {
            let lines: Vec<String> = params.iter().fold(c.query_raw(&format!("EXPLAIN {sql}")), |q, (k, v)| q.param(k, *v)).fetch_all().await.unwrap();
            lines.join("\n")
        }
    };
    let queries = Source::Aggregates.queries();
    let kinds = explain(queries.kinds).await;
    assert!(kinds.contains("ReadFromMergeTree (kinds_5m)"), "{kinds}");
    let buckets = explain(queries.buckets).await;
    assert!(buckets.contains("ReadFromMergeTree (health_5m)"), "{buckets}");
    let models = explain(queries.top_models).await;
    assert!(models.contains("ReadFromMergeTree (top_models_5m)"), "{models}");
    let clients = explain(queries.top_clients).await;
    // Which of the two client projections answers the whole hours depends on their sizes
    // (here both are one granule); neither half may read the table's own rows.
    let reads: Vec<&str> = clients.lines().filter(|l| l.contains("ReadFromMergeTree")).collect();
    assert_eq!(reads.len(), 2, "{clients}");
    assert!(reads.iter().all(|l| l.contains("(top_clients_1h)") || l.contains("(top_clients_5m)")), "{clients}");
}

#[test]
fn a_window_without_a_whole_hour_reads_five_minute_buckets_only() {
    use tether_pro::internals::metrics::{MetricsQuery, params};
    let q = MetricsQuery { window: None, from: Some("2026-01-01T10:05:00Z".into()), to: Some("2026-01-01T10:55:00Z".into()) };
    let w = q.window(chrono::Utc::now()).unwrap();
    let p = params(&w);
    assert_eq!(p[2].1, p[3].1, "empty hour range: {p:?}");
    let q = MetricsQuery { window: None, from: Some("2026-01-01T10:00:00Z".into()), to: Some("2026-01-01T12:00:00Z".into()) };
    let p = params(&q.window(chrono::Utc::now()).unwrap());
    assert_eq!((p[2].1, p[3].1), (p[0].1, p[1].1), "an hour-aligned window is all whole hours: {p:?}");
}


/// Issue 17: clients whose clocks look wrong, in the metrics API, equal from the aggregate and
/// from the raw rows. `ahead` sends timestamps 2 h after arrival (and one 30 s after: within
/// the minute's tolerance); `broken` sends one invalid timestamp; `offline` edited a day
/// before syncing (a long delay is not suspicious: offline and a slow clock look alike).
#[tokio::test]
async fn clients_with_suspicious_clocks_are_listed_from_the_aggregate_as_from_the_raw_rows() {
    use tether_pro::internals::metrics::{self, MetricsQuery, Source};
    let ch = clickhouse().await;
    ch.migrate().await;
    let d = day();
    ch.rows(&format!(
        "INSERT INTO sync_mutations (request_id, started_at, position, mutation_id, model, operation, client_id, client_timestamp, client_timestamp_raw, outcome, reason) VALUES
         ('r1', '{d} 10:01:00', 0, 'm1', 'Task', 'update', 'ahead', '{d} 12:01:00', '', 'applied', ''),
         ('r1', '{d} 10:01:00', 1, 'm2', 'Task', 'update', 'ahead', '{d} 12:06:00', '', 'applied', ''),
         ('r2', '{d} 10:12:00', 0, 'm3', 'Task', 'update', 'ahead', '{d} 10:12:30', '', 'applied', ''),
         ('r3', '{d} 10:02:00', 0, 'm4', 'Task', 'update', 'broken', NULL, '\"yesterday\"', 'rejected', 'validation_failed'),
         ('r4', '{d} 10:03:00', 0, 'm5', 'Task', 'update', 'offline', '{d} 10:03:00' - INTERVAL 1 DAY, '', 'applied', ''),
         ('r5', '{d} 11:00:00', 0, 'm6', 'Task', 'update', 'later', '{d} 13:00:00', '', 'applied', '')"
    ))
    .await;
    let state = dashboard::DashboardState::new(ch.client());
    let q = MetricsQuery { window: None, from: Some(format!("{d}T10:00:00Z")), to: Some(format!("{d}T10:30:00Z")) };
    let window = q.window(chrono::Utc::now()).unwrap();
    let api = metrics::compute(&state, window).await.unwrap();
    let raw = metrics::compute_from(&state, window, Source::RawRows).await.unwrap();
    let listed: Vec<(String, u64, u64, i64)> = api.suspicious_clocks.iter().map(|e| (e.client_id.clone(), e.future, e.invalid, e.furthest_ahead_ms)).collect();
    assert_eq!(listed, vec![("ahead".to_owned(), 2, 0, 7_500_000), ("broken".to_owned(), 0, 1, 0)], "'later' is outside the window");
    assert_eq!(api.suspicious_clocks, raw.suspicious_clocks);
    // Through the HTTP API as well.
    let base = serve(dashboard::mount(dashboard::DashboardState::new(ch.client()))).await;
    let (status, m) = get(&format!("{base}/tether/dashboard/metrics?{}", range())).await;
    assert_eq!(status, 200);
    assert_eq!(m["suspicious_clocks"][0], json!({"client_id": "ahead", "future": 2, "invalid": 0, "furthest_ahead_ms": 7_500_000}));
}
