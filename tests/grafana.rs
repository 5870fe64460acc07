//! The provisioned Grafana dashboards and alert rules (grafana/), checked against a real
//! ClickHouse filled by real captured traffic: every panel target, template-variable query and
//! alert query is expanded the way grafana-clickhouse-datasource expands its macros, run, and
//! must succeed and return the columns its panel uses (field overrides, transformations,
//! links). Links to the inspection pages are fetched from the served dashboard router.

mod common;
#[path = "common/grafana_sql.rs"]
mod grafana_sql;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{TestClickHouse, clickhouse};
use serde_json::{Value, json};
use tether_pro::config::CaptureConfig;
use tether_pro::dashboard::{DashboardState, mount};
use tether_pro::pipeline::{self, ClickHouseWriter};
use tether_pro::sync::{self, SyncServer};
use tracing_subscriber::layer::SubscriberExt;
use grafana_sql::{INTERVALS_S, dashboards, expand_macros, expand_vars, panels, root, variable_values, yaml};

const PROVISIONED_UID: &str = "tether-clickhouse";

/// Runs `sql` and returns its column names (FORMAT JSON gives them even without rows).
async fn columns(ch: &TestClickHouse, sql: &str) -> (Vec<String>, usize) {
    let text = ch.query(sql, "JSON").await.unwrap_or_else(|e| panic!("query failed ({e})\n{sql}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let names = v["meta"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
    (names, v["data"].as_array().map_or(0, |d| d.len()))
}

/// Every string in a JSON value.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Columns a panel refers to: `${__data.fields.X}` in links, `byName` matchers, organize keys.
fn used_columns(panel: &Value) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let mut ss = Vec::new();
    strings(&panel["fieldConfig"], &mut ss);
    for s in ss {
        let mut rest = s;
        while let Some(i) = rest.find("${__data.fields.") {
            let after = &rest[i + "${__data.fields.".len()..];
            let end = after.find('}').unwrap();
            set.insert(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    for o in panel["fieldConfig"]["overrides"].as_array().into_iter().flatten() {
        if o["matcher"]["id"] == "byName" {
            set.insert(o["matcher"]["options"].as_str().unwrap().to_owned());
        }
    }
    for t in panel["transformations"].as_array().into_iter().flatten() {
        for k in ["excludeByName", "renameByName", "indexByName"] {
            if let Some(m) = t["options"][k].as_object() {
                set.extend(m.keys().cloned());
            }
        }
    }
    set
}

/// Every object with a `datasource` key must say `${datasource}`, and the provisioned uid
/// must never appear in a dashboard.
fn check_datasources(name: &str, v: &Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "datasource" {
                    match x {
                        Value::Object(d) => assert_eq!(d.get("uid"), Some(&json!("${datasource}")), "{name}: {x}"),
                        Value::String(s) => assert_eq!(s, "${datasource}", "{name}"),
                        Value::Null => {}
                        other => panic!("{name}: datasource {other}"),
                    }
                }
                check_datasources(name, x);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| check_datasources(name, x)),
        Value::String(s) => assert!(!s.contains(PROVISIONED_UID), "{name}: hard-coded data source uid in {s}"),
        _ => {}
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn mutation(id: &str, entity: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Captured traffic (ok, partial with conflict/rejections/duplicate, a pull, a 4xx error) and
/// collector tables with a few rows.
async fn fill(ch: &TestClickHouse) {
    let cfg = CaptureConfig { batch_interval_ms: 50, ..CaptureConfig::default() };
    let (capture, mut guard) = pipeline::start(&cfg, ClickHouseWriter::new(ch.client())).unwrap();
    let subscriber = tracing_subscriber::registry().with(capture.layer());
    let _sub = tracing::subscriber::set_default(subscriber);
    let base = serve(sync::router(SyncServer::in_memory()).layer(capture.http_layer())).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| http.post(format!("{base}{path}")).header("content-type", "application/json").body(body).send();
    let t1 = "01JAAAAAAAAAAAAAAAAAAAAAA1";
    let t2 = "01JAAAAAAAAAAAAAAAAAAAAAA2";
    let first = json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000001", t1, "create", json!({"title": "Buy milk"}), 1_000),
        mutation("01JM0000000000000000000002", t2, "create", json!({"title": "Server"}), 5_000),
    ]});
    let second = json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000003", t1, "update", json!({"title": "Oat milk"}), 2_000),
        mutation("01JM0000000000000000000004", "01JAAAAAAAAAAAAAAAAAAAAAA4", "update", json!({"title": "x"}), 2_000),
        mutation("01JM0000000000000000000005", t2, "update", json!({"title": "Client"}), 4_000),
        mutation("01JM0000000000000000000001", t1, "create", json!({"title": "Buy milk"}), 1_000),
    ]});
    for body in [first, second] {
        assert_eq!(post("/tether/push", body.to_string().into_bytes()).await.unwrap().status(), 200);
    }
    let pull = post("/tether/pull", json!({"client_id": CLIENT, "models": ["Task"]}).to_string().into_bytes()).await.unwrap();
    assert!(pull.status().is_success() || pull.status().is_client_error());
    let bad = post("/tether/push", b"{not json".to_vec()).await.unwrap();
    assert!(!bad.status().is_success());
    guard.shutdown();

    for f in ["otel_traces.sql", "otel_metrics_sum.sql"] {
        let ddl = std::fs::read_to_string(root().join("tests/fixtures/grafana").join(f)).unwrap();
        ch.rows(&ddl).await;
    }
    ch.rows(&format!(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ResourceAttributes, SpanAttributes, Duration, StatusCode) VALUES \
         (now64(9), '{TRACE_ID}', '00f067aa0ba902b7', '', 'tether.push', 'Server', 'reference', map('service.name', 'reference'), map('tether.request_id', 'x', 'tether.outcome', 'ok'), 1500000, 'Unset'), \
         (now64(9), '{TRACE_ID}', '00f067aa0ba902b8', '00f067aa0ba902b7', 'sqlite', 'Internal', 'reference', map('service.name', 'reference'), map(), 500000, 'Unset')"
    ))
    .await;
    ch.rows(
        "INSERT INTO otel_metrics_sum (ServiceName, MetricName, Attributes, StartTimeUnix, TimeUnix, Value, AggregationTemporality, IsMonotonic) VALUES \
         ('reference', 'tether.capture.records.dropped', map('stage', 'queue'), now64(9) - 600, now64(9) - 120, 0, 2, true), \
         ('reference', 'tether.capture.records.dropped', map('stage', 'queue'), now64(9) - 600, now64(9) - 60, 3, 2, true), \
         ('reference', 'tether.capture.rows.written', map('table', 'sync_requests'), now64(9) - 600, now64(9) - 60, 12, 2, true)",
    )
    .await;
}

fn time_range() -> (i64, i64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    (now - 86_400, now + 3_600)
}

#[tokio::test(flavor = "current_thread")]
async fn every_panel_variable_and_alert_query_runs_and_links_resolve() {
    let ch = clickhouse().await;
    ch.migrate().await;
    fill(&ch).await;
    let (from, to) = time_range();
    let request_id = ch.rows("SELECT request_id FROM sync_requests WHERE kind = 'push' AND conflict_count > 0 LIMIT 1").await;
    let request_id = request_id.first().expect("a captured push with a conflict")["request_id"].as_str().unwrap().to_owned();

    let dashboard_base = format!("{}/tether/dashboard", serve(mount(DashboardState::new(ch.client()))).await);
    let http = reqwest::Client::new();
    let dashboards = dashboards();
    let uids: BTreeSet<String> = dashboards.iter().map(|(_, d)| d["uid"].as_str().unwrap().to_owned()).collect();
    let mut queries = 0;
    let mut links = 0;
    for (name, dash) in &dashboards {
        let vars = variable_values(dash);
        for p in panels(dash) {
            if p["type"] == "row" {
                continue;
            }
            let used = used_columns(p);
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{name}: {} has no targets", p["title"]));
            assert!(!targets.is_empty(), "{name}: {} has no targets", p["title"]);
            let mut got = BTreeSet::new();
            for (t, interval) in targets.iter().flat_map(|t| INTERVALS_S.map(|i| (t, i))) {
                let sql = expand_macros(&expand_vars(t["rawSql"].as_str().unwrap(), &vars), from, to, interval);
                let (cols, _) = columns(&ch, &sql).await;
                queries += 1;
                if t["queryType"] == "timeseries" {
                    assert_eq!(cols.first().map(String::as_str), Some("time"), "{name}: {} time series starts with time: {cols:?}", p["title"]);
                }
                if t["queryType"] == "traces" {
                    for c in ["traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration"] {
                        assert!(cols.iter().any(|x| x == c), "{name}: trace column {c} missing from {cols:?}");
                    }
                }
                got.extend(cols);
            }
            for c in &used {
                assert!(got.contains(c), "{name}: panel {} uses column {c}, its queries return {got:?}", p["title"]);
            }
            // Links: inspection pages must be served; trace links must reach the traces dashboard.
            let mut ss = Vec::new();
            strings(&p["fieldConfig"], &mut ss);
            for url in ss.into_iter().filter(|s| s.contains("${__data.fields.")) {
                links += 1;
                if let Some(path) = url.strip_prefix("${dashboard_url}") {
                    let path = path.replace("${__data.fields.request_id}", &request_id).replace("${__data.fields.client_id}", CLIENT);
                    assert!(!path.contains("${"), "{name}: unresolved link {url}");
                    let resp = http.get(format!("{dashboard_base}{path}")).send().await.unwrap();
                    assert_eq!(resp.status(), 200, "{name}: link {url} -> {path}");
                } else if let Some(rest) = url.strip_prefix("/d/") {
                    let uid = rest.split('/').next().unwrap();
                    assert!(uids.contains(uid), "{name}: link to unknown dashboard {url}");
                    let target = &dashboards.iter().find(|(_, d)| d["uid"] == uid).unwrap().1;
                    for var in rest.split(['?', '&']).filter_map(|kv| kv.strip_prefix("var-")).map(|kv| kv.split('=').next().unwrap()) {
                        assert!(variable_values(target).iter().any(|(n, _)| n == var), "{name}: {url} sets unknown variable {var}");
                    }
                } else {
                    panic!("{name}: link {url} neither to the inspection pages nor to a dashboard");
                }
            }
        }
        for v in dash["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                let sql = expand_macros(&expand_vars(v["query"].as_str().unwrap(), &vars), from, to, 300);
                let (cols, rows) = columns(&ch, &sql).await;
                assert_eq!(cols.len(), 1, "{name}: variable {} query {sql}", v["name"]);
                assert!(rows > 0, "{name}: variable {} has values with traffic", v["name"]);
                queries += 1;
            }
        }
    }
    assert!(links >= 6, "links to inspection pages and traces: {links}");

    // The Traces panel finds the fixture trace by its id.
    let traces = &dashboards.iter().find(|(_, d)| d["uid"] == "tether-traces").expect("traces dashboard").1;
    let trace_target = panels(traces).into_iter().flat_map(|p| p["targets"].as_array().unwrap()).find(|t| t["queryType"] == "traces").unwrap();
    let mut vars = variable_values(traces);
    vars.retain(|(n, _)| n != "trace_id");
    vars.push(("trace_id".into(), TRACE_ID.into()));
    let sql = expand_macros(&expand_vars(trace_target["rawSql"].as_str().unwrap(), &vars), from, to, 300);
    assert_eq!(columns(&ch, &sql).await.1, 2, "both spans of the trace");

    // The request explorer with concrete filter values finds the request.
    let explorer = &dashboards.iter().find(|(_, d)| d["uid"] == "tether-request-explorer").expect("explorer").1;
    let table = panels(explorer).into_iter().find(|p| p["type"] == "table").unwrap();
    let vars: Vec<(String, String)> = [("client", CLIENT), ("model", "Task"), ("kind", "push"), ("outcome", "partial"), ("dashboard_url", "")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let sql = expand_macros(&expand_vars(table["targets"][0]["rawSql"].as_str().unwrap(), &vars), from, to, 300);
    assert!(columns(&ch, &sql).await.1 >= 1, "the partial push is found: {sql}");
    // Issue 13, input 5: a client id with a quote (or a crafted one) is a value, never SQL.
    for hostile in ["o'brien-phone", "\\' OR 1=1 --", "x' OR '1'='1", "\\", "') OR (1=1"] {
        let vars: Vec<(String, String)> = vars.iter().map(|(n, v)| (n.clone(), if n == "client" { hostile.to_owned() } else { v.clone() })).collect();
        let sql = expand_macros(&expand_vars(table["targets"][0]["rawSql"].as_str().unwrap(), &vars), from, to, 300);
        assert_eq!(columns(&ch, &sql).await.1, 0, "client {hostile:?} matches nothing and changes nothing: {sql}");
    }

    // Alert rules.
    let alerts = yaml("grafana/provisioning/alerting/tether-alerts.yaml");
    let mut titles = Vec::new();
    for group in alerts["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            titles.push(rule["title"].as_str().unwrap().to_owned());
            let cond = rule["condition"].as_str().unwrap();
            let refs: Vec<&str> = rule["data"].as_vec().unwrap().iter().map(|d| d["refId"].as_str().unwrap()).collect();
            assert!(refs.contains(&cond), "{:?}: condition {cond}", rule["title"]);
            for d in rule["data"].as_vec().unwrap() {
                let uid = d["datasourceUid"].as_str().unwrap();
                if uid == "__expr__" {
                    continue;
                }
                assert_eq!(uid, PROVISIONED_UID);
                let sql = expand_macros(d["model"]["rawSql"].as_str().unwrap(), from, to, 300);
                let (cols, rows) = columns(&ch, &sql).await;
                assert_eq!((cols.len(), rows), (1, 1), "{:?}: one number: {sql}", rule["title"]);
                queries += 1;
            }
        }
    }
    assert_eq!(titles.len(), 5, "{titles:?}");
    assert!(queries >= 25, "queries run: {queries}");
}

#[test]
fn dashboards_are_portable_and_stable() {
    let mut uids = BTreeSet::new();
    for (name, dash) in dashboards() {
        assert_eq!(dash["id"], Value::Null, "{name}: id null");
        let uid = dash["uid"].as_str().unwrap_or_else(|| panic!("{name}: uid"));
        assert!(!uid.is_empty() && uid.len() <= 40 && uids.insert(uid.to_owned()), "{name}: stable unique uid {uid}");
        assert!(dash["tags"].as_array().is_some_and(|t| !t.is_empty()), "{name}: tags");
        assert!(dash["time"]["from"].is_string() && dash["refresh"].is_string(), "{name}: time range and refresh");
        check_datasources(&name, &dash);
        let list = dash["templating"]["list"].as_array().unwrap();
        let ds = list.iter().find(|v| v["name"] == "datasource").unwrap_or_else(|| panic!("{name}: datasource variable"));
        assert_eq!((&ds["type"], &ds["query"]), (&json!("datasource"), &json!("grafana-clickhouse-datasource")));
        let url = list.iter().find(|v| v["name"] == "dashboard_url").unwrap_or_else(|| panic!("{name}: dashboard_url variable"));
        assert!(url["type"] == "constant" || url["type"] == "textbox");
        assert_eq!(url["query"], "http://localhost:8080/tether/dashboard");
        for p in panels(&dash) {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: panel {}", p["title"]);
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: target of {}", p["title"]);
                assert!(t["rawSql"].as_str().is_some_and(|s| !s.is_empty()));
            }
        }
    }
}

#[test]
fn provisioning_files_are_consistent() {
    let ds = yaml("grafana/provisioning/datasources/clickhouse.yaml");
    let d = &ds["datasources"][0];
    assert_eq!(d["type"].as_str(), Some("grafana-clickhouse-datasource"));
    assert_eq!(d["uid"].as_str(), Some(PROVISIONED_UID));
    assert_eq!(d["jsonData"]["protocol"].as_str(), Some("http"));
    assert_eq!(d["jsonData"]["host"].as_str(), Some("${CLICKHOUSE_HOST}"));
    assert_eq!(d["jsonData"]["port"].as_str(), Some("${CLICKHOUSE_PORT}"));
    assert_eq!(d["jsonData"]["defaultDatabase"].as_str(), Some("tether"));
    // The pinned plugin version is the one docker-compose installs.
    let text = std::fs::read_to_string(root().join("grafana/provisioning/datasources/clickhouse.yaml")).unwrap();
    let pin = text.split("grafana-clickhouse-datasource@").nth(1).expect("pinned version in a comment");
    let version: String = pin.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let compose = root().join("docker-compose.yml");
    if Path::new(&compose).exists() {
        let compose = std::fs::read_to_string(compose).unwrap();
        if compose.contains("grafana-clickhouse-datasource@") {
            assert!(compose.contains(&format!("grafana-clickhouse-datasource@{version}")), "docker-compose pins {version}");
        }
    }
    let dash = yaml("grafana/provisioning/dashboards/tether.yaml");
    let p = &dash["providers"][0];
    assert_eq!(p["type"].as_str(), Some("file"));
    assert_eq!(p["options"]["path"].as_str(), Some("/var/lib/grafana/dashboards"));
}

/// `@grafana/schema` of the Grafana version docker-compose runs, and the TypeScript compiler.
const GRAFANA_SCHEMA: &str = "@grafana/schema@12.2.1";
const TYPESCRIPT: &str = "typescript@5.9.3";

/// Every dashboard type-checks as `Dashboard` from `@grafana/schema` under `tsc --strict`
/// (excess properties, missing required ones, wrong enums). npm installs both packages into
/// `~/.cache/tether-pro/grafana-schema` (or `$TETHER_PRO_NPM_CACHE`) on first run; without npm
/// the test fails.
#[test]
fn dashboards_type_check_against_grafana_schema() {
    use std::process::Command;
    let dir = std::env::var_os("TETHER_PRO_NPM_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
        home.join("tether-pro")
    });
    let dir = dir.join("grafana-schema-12.2.1");
    std::fs::create_dir_all(&dir).unwrap();
    let tsc = dir.join("node_modules/.bin/tsc");
    let schema = dir.join("node_modules/@grafana/schema/package.json");
    if !tsc.exists() || !schema.exists() {
        std::fs::write(dir.join("package.json"), "{\"private\": true}\n").unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--save-exact", GRAFANA_SCHEMA, TYPESCRIPT])
            .current_dir(&dir)
            .output()
            .expect("npm is needed for the Grafana schema check (install Node.js and npm)");
        assert!(out.status.success(), "npm install failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let check = dir.join("check");
    let _ = std::fs::remove_dir_all(&check);
    std::fs::create_dir_all(&check).unwrap();
    for (name, dash) in dashboards() {
        let ident = name.trim_end_matches(".json").replace('-', "_");
        let ts = format!(
            "import type {{ Dashboard }} from '@grafana/schema';\nexport const {ident}: Dashboard = {};\n",
            serde_json::to_string_pretty(&dash).unwrap()
        );
        std::fs::write(check.join(format!("{ident}.ts")), ts).unwrap();
    }
    std::fs::write(
        dir.join("tsconfig.json"),
        r#"{"compilerOptions": {"strict": true, "noEmit": true, "target": "es2020", "module": "esnext", "moduleResolution": "bundler", "skipLibCheck": true}, "include": ["check/*.ts"]}"#,
    )
    .unwrap();
    let out = Command::new(&tsc)
        .args(["--noEmit", "--strict", "-p", "tsconfig.json"])
        .current_dir(&dir)
        .output()
        .expect("tsc runs (node is needed)");
    assert!(out.status.success(), "dashboards do not type-check against {GRAFANA_SCHEMA}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The target of the panel titled `title` on dashboard `uid`.
fn panel_sql(uid: &str, title: &str) -> String {
    let dashboards = dashboards();
    let dash = &dashboards.iter().find(|(_, d)| d["uid"] == uid).unwrap_or_else(|| panic!("dashboard {uid}")).1;
    let p = panels(dash).into_iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("panel {title}"));
    p["targets"][0]["rawSql"].as_str().unwrap().to_owned()
}

/// Issue 13, input 4: 300 pushes in one five-minute bucket are 1.0 requests/s whatever
/// Grafana's interval (2 s on a one-hour view read 150 req/s), and the series' counts add up
/// to the raw rows at every interval.
#[tokio::test(flavor = "current_thread")]
async fn five_minute_panels_are_right_at_any_interval() {
    let ch = clickhouse().await;
    ch.migrate().await;
    ch.rows(
        "INSERT INTO sync_requests (request_id, kind, client_id, started_at, http_status, outcome, mutation_count, conflict_count)
         SELECT toString(number), 'push', 'c', toStartOfFiveMinutes(now()) - 3600 + number % 300, 200, 'ok', 2, number % 2 FROM numbers(300)",
    )
    .await;
    ch.rows(
        "INSERT INTO sync_mutations (request_id, started_at, position, model, outcome, reason, client_id)
         SELECT toString(number), toStartOfFiveMinutes(now()) - 3600 + number % 300, 0, 'Task', 'conflict', 'stale', 'c' FROM numbers(300)",
    )
    .await;
    let (from, to) = time_range();
    let throughput = panel_sql("tether-sync-overview", "Throughput by kind and outcome (requests/s)");
    let by_model = panel_sql("tether-conflicts-failures", "Conflicts and rejections by model");
    for interval in INTERVALS_S {
        let rows = ch.rows(&expand_macros(&throughput, from, to, interval)).await;
        assert_eq!(rows.len(), 1, "interval {interval} s: one step holds the bucket: {rows:?}");
        let rps = rows[0]["rps"].as_f64().unwrap();
        // The step is the interval rounded up to whole buckets; its rate is its average.
        let want = if interval <= 300 { 1.0 } else { 300.0 / 3600.0 };
        assert!((rps - want).abs() < 1e-9, "interval {interval} s: {rps} requests/s, want {want}");
        let rows = ch.rows(&expand_macros(&by_model, from, to, interval)).await;
        let n: u64 = rows.iter().map(|r| r["n"].as_u64().or_else(|| r["n"].as_str()?.parse().ok()).unwrap()).sum();
        assert_eq!(n, 300, "interval {interval} s: the counts add up to the rows: {rows:?}");
    }
}

/// The Grafana stats, the metrics API and the overview page count the same window the same
/// way: every five-minute bucket the window touches, whole.
#[tokio::test(flavor = "current_thread")]
async fn grafana_stats_and_the_metrics_api_agree_on_partial_buckets() {
    let ch = clickhouse().await;
    ch.migrate().await;
    // B0 = a bucket two hours ago. Requests at B0-5 s (previous bucket), B0+10 s x3,
    // B0+290 s x2, B0+305 s x4, B0+601 s x1.
    ch.rows(
        "INSERT INTO sync_requests (request_id, kind, client_id, started_at, http_status, outcome)
         SELECT toString(number), 'push', 'c', toStartOfFiveMinutes(now()) - 7200 + [-5, 10, 10, 10, 290, 290, 305, 305, 305, 305, 601][number + 1], 200, 'ok'
         FROM numbers(11)",
    )
    .await;
    let b0 = ch.count("SELECT toUnixTimestamp(toStartOfFiveMinutes(now())) - 7200").await as i64;
    let requests = panel_sql("tether-sync-overview", "Requests");
    let state = DashboardState::new(ch.client());
    for (from, to, want) in [(b0 + 100, b0 + 310, 9), (b0, b0 + 300, 5), (b0 - 1, b0 + 600, 10), (b0 + 299, b0 + 301, 9)] {
        let grafana = ch.count(&expand_macros(&requests, from, to, 60)).await;
        let rfc = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
        let q = tether_pro::internals::metrics::MetricsQuery { window: None, from: Some(rfc(from)), to: Some(rfc(to)) };
        let api = tether_pro::internals::metrics::compute(&state, q.window(chrono::Utc::now()).unwrap()).await.unwrap();
        assert_eq!((grafana, api.totals.requests), (want, want), "window {}..{} s after B0", from - b0, to - b0);
    }
}
