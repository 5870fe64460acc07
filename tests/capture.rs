//! Capture end to end: the reference server behind `CaptureLayer` + `SyncLayer`, real HTTP,
//! the real pipeline, a real ClickHouse. Each test runs on a current-thread runtime so the
//! thread-local subscriber with the capture layer sees every request.

mod common;

use std::time::Duration;

use common::{TestClickHouse, clickhouse};
use serde_json::{Value, json};
use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, Capture, CaptureGuard, ClickHouseWriter};
use tether_pro::sync::{self, SyncServer};
use tracing_subscriber::layer::SubscriberExt;

/// A reference server with capture, and a plain one for side-by-side answers.
struct Harness {
    ch: TestClickHouse,
    captured: String,
    plain: String,
    capture: Capture,
    guard: Option<CaptureGuard>,
    _subscriber: tracing::subscriber::DefaultGuard,
    http: reqwest::Client,
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn fast_config() -> CaptureConfig {
    CaptureConfig { batch_interval_ms: 50, ..CaptureConfig::default() }
}

async fn harness_with(ch: TestClickHouse, cfg: CaptureConfig, writer: ClickHouseWriter) -> Harness {
    let (capture, guard) = pipeline::start(&cfg, writer).unwrap();
    let subscriber = tracing_subscriber::registry().with(capture.layer());
    let _subscriber = tracing::subscriber::set_default(subscriber);
    let captured = serve(sync::router(SyncServer::in_memory()).layer(capture.http_layer())).await;
    let plain = serve(sync::router(SyncServer::in_memory())).await;
    Harness { ch, captured, plain, capture, guard: Some(guard), _subscriber, http: reqwest::Client::new() }
}

async fn harness(cfg: CaptureConfig) -> Harness {
    let ch = clickhouse().await;
    ch.migrate().await;
    let writer = ClickHouseWriter::new(ch.client());
    harness_with(ch, cfg, writer).await
}

/// The status, content type and body bytes of an answer.
type Answer = (u16, Option<String>, Vec<u8>);

impl Harness {
    async fn send(&self, base: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut req = self.http.post(format!("{base}{path}")).header("x-tether-client-version", "ios/9.9.9").body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        (status, ct, resp.bytes().await.unwrap().to_vec())
    }

    /// Sends the same body to both servers and asserts identical answers.
    async fn both(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let a = self.send(&self.captured, path, content_type, body.clone()).await;
        let b = self.send(&self.plain, path, content_type, body).await;
        assert_eq!(a, b, "capture changed the host's answer");
        a
    }

    /// Pull answers carry server change stamps, which differ between two servers: compare
    /// everything else.
    async fn both_pull(&self, body: Value) -> Value {
        let bytes = body.to_string().into_bytes();
        let a = self.send(&self.captured, "/tether/pull", Some("application/json"), bytes.clone()).await;
        let b = self.send(&self.plain, "/tether/pull", Some("application/json"), bytes).await;
        assert_eq!((a.0, &a.1), (b.0, &b.1));
        let strip = |v: &[u8]| {
            let mut v: Value = serde_json::from_slice(v).unwrap();
            v.as_object_mut().unwrap().remove("new_sync_cursor");
            v
        };
        assert_eq!(strip(&a.2), strip(&b.2));
        strip(&a.2)
    }

    async fn push(&self, body: Value) -> Value {
        let (status, _, bytes) = self.both("/tether/push", Some("application/json"), body.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Flushes the pipeline (the guard's shutdown path) so every row is in ClickHouse.
    fn flush(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.shutdown();
        }
    }
}

const T1: &str = "01JAAAAAAAAAAAAAAAAAAAAAA1";
const T2: &str = "01JAAAAAAAAAAAAAAAAAAAAAA2";
const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";

fn mutation(id: &str, entity: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

fn parse(s: &Value) -> Value {
    serde_json::from_str(s.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_mixed_push_yields_exact_request_and_mutation_rows() {
    let mut h = harness(fast_config()).await;
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000001", T1, "create", json!({"title": "Buy milk", "metadata": {"tags": ["a"]}}), 1_000),
        mutation("01JM0000000000000000000002", T2, "create", json!({"title": "Server title"}), 5_000),
    ]}))
    .await;
    let resp = h
        .push(json!({"client_id": CLIENT, "mutations": [
            mutation("01JM0000000000000000000003", T1, "update", json!({"title": "Buy oat milk", "metadata": {"tags": ["a", "b"]}}), 2_000),
            mutation("01JM0000000000000000000004", "01JAAAAAAAAAAAAAAAAAAAAAA3", "create", json!({"done": true}), 2_000),
            mutation("01JM0000000000000000000005", "01JAAAAAAAAAAAAAAAAAAAAAA4", "update", json!({"title": "x"}), 2_000),
            mutation("01JM0000000000000000000006", T2, "update", json!({"title": "Client title"}), 4_000),
            mutation("01JM0000000000000000000001", T1, "create", json!({"title": "Buy milk"}), 1_000),
        ]}))
        .await;
    assert_eq!(resp["applied"], json!(["01JM0000000000000000000003"]));
    h.flush();

    let reqs = h.ch.rows("SELECT * FROM sync_requests WHERE kind = 'push' ORDER BY started_at").await;
    assert_eq!(reqs.len(), 2);
    let r = &reqs[1];
    assert_eq!(r["client_id"], CLIENT);
    assert_eq!(r["client_version"], "ios/9.9.9");
    assert_eq!(r["http_status"], 200);
    assert_eq!(r["outcome"], "partial");
    assert_eq!(
        (&r["mutation_count"], &r["applied_count"], &r["rejected_count"], &r["conflict_count"], &r["duplicate_count"]),
        (&json!(5), &json!(1), &json!(2), &json!(1), &json!(1))
    );
    assert_eq!(r["rejected_by_reason"], json!({"duplicate": 1, "not_found": 1, "validation_failed": 1}));
    assert_eq!(parse(&r["response_body"]), resp, "stored response is the host's answer");
    // Each payload stored once (issue 15): the request row keeps the envelope, the mutation
    // rows the payloads, and together they give the body back.
    let envelope = parse(&r["request_body"]);
    assert_eq!(envelope["mutations"][0]["mutation_id"], "01JM0000000000000000000003");
    assert!(envelope["mutations"].as_array().unwrap().iter().all(|m| m.get("payload").is_none()), "{envelope}");
    assert_eq!(r["request_body_moved"], json!([0, 1, 2, 3, 4]));
    assert_eq!(r["request_body_truncated"], false);
    assert_eq!(reqs[0]["outcome"], "ok");
    assert_eq!(reqs[0]["applied_count"], 2);
    assert_eq!(r["request_id"].as_str().unwrap().len(), 26);
    assert_ne!(r["request_id"], reqs[0]["request_id"]);

    let muts = h
        .ch
        .rows(&format!("SELECT * FROM sync_mutations WHERE request_id = '{}' ORDER BY position", r["request_id"].as_str().unwrap()))
        .await;
    let outcomes: Vec<(&str, &str)> = muts.iter().map(|m| (m["outcome"].as_str().unwrap(), m["reason"].as_str().unwrap())).collect();
    assert_eq!(
        outcomes,
        vec![("applied", ""), ("rejected", "validation_failed"), ("rejected", "not_found"), ("conflict", "conflict"), ("duplicate", "duplicate")]
    );
    let moved: Vec<tether_pro::pipeline::envelope::MovedPayload> = muts
        .iter()
        .map(|m| tether_pro::pipeline::envelope::MovedPayload {
            position: m["position"].as_u64().unwrap() as u32,
            payload: m["payload"].as_str().unwrap().to_owned(),
            detail_kept: m["detail_kept"].as_bool().unwrap(),
        })
        .collect();
    let rebuilt = parse(&json!(tether_pro::pipeline::envelope::rebuild(r["request_body"].as_str().unwrap(), &[0, 1, 2, 3, 4], &moved)));
    assert_eq!(rebuilt["mutations"][0]["payload"]["title"], "Buy oat milk");
    assert_eq!(rebuilt["mutations"].as_array().unwrap().len(), 5);
    // Applied update: before and after from the host, and the field diff.
    let m = &muts[0];
    assert_eq!(m["has_state"], true);
    assert_eq!(parse(&m["state_before"]), json!({"tether_id": T1, "title": "Buy milk", "metadata": {"tags": ["a"]}}));
    assert_eq!(parse(&m["state_after"]), json!({"tether_id": T1, "title": "Buy oat milk", "metadata": {"tags": ["a", "b"]}}));
    assert_eq!(
        parse(&m["diff"]),
        json!([
            {"path": ["metadata", "tags", 1], "change": "added", "new": "b"},
            {"path": ["title"], "change": "changed", "old": "Buy milk", "new": "Buy oat milk"}
        ])
    );
    assert_eq!(m["client_timestamp"], "1970-01-01 00:00:02.000");
    assert_eq!((m["model"].as_str(), m["operation"].as_str(), m["client_id"].as_str()), (Some("Task"), Some("update"), Some(CLIENT)));
    // Validation failure: the field messages.
    assert_eq!(parse(&muts[1]["reason_data"]), json!({"messages": {"title": ["The title field is required."]}}));
    assert_eq!(muts[1]["state_before"], "");
    // Conflict: server state vs the client payload.
    let c = &muts[3];
    assert_eq!(parse(&c["state_before"]), json!({"tether_id": T2, "title": "Server title"}));
    assert_eq!(parse(&c["diff"]), json!([{"path": ["title"], "change": "changed", "old": "Server title", "new": "Client title"}]));
    assert_eq!(parse(&c["reason_data"])["server_state"]["title"], "Server title");
    // Duplicate: the mutation id of the first push.
    assert_eq!(muts[4]["mutation_id"], "01JM0000000000000000000001");
    assert_eq!(h.capture.stats().totals().dropped, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn pulls_are_captured_with_snapshot_counts() {
    let mut h = harness(fast_config()).await;
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000001", T1, "create", json!({"title": "a"}), 1_000),
        mutation("01JM0000000000000000000002", T2, "create", json!({"title": "b"}), 1_000),
    ]}))
    .await;
    let page = h.both_pull(json!({"client_id": CLIENT, "last_sync_cursor": null, "limit": 1})).await;
    assert_eq!(page["has_more"], true);
    h.flush();
    let rows = h.ch.rows("SELECT outcome, snapshot_count, has_more, client_id FROM sync_requests WHERE kind = 'pull'").await;
    assert_eq!(rows, vec![json!({"outcome": "ok", "snapshot_count": 1, "has_more": true, "client_id": CLIENT})]);
    assert_eq!(h.ch.count("SELECT count() FROM sync_mutations").await, 2, "pulls add no mutation rows");
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_span_has_the_rows_ids_continues_the_callers_trace_and_parents_the_hosts_spans() {
    use opentelemetry::trace::SpanKind;
    use tether_pro::telemetry::{Telemetry, TetherIdGenerator};
    let ch = clickhouse().await;
    ch.migrate().await;
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_id_generator(TetherIdGenerator::default())
        .with_simple_exporter(exporter.clone())
        .build();
    let telemetry = Telemetry::from_providers(Some(&provider), None);
    let (capture, mut guard) = pipeline::start_with_telemetry(&fast_config(), ClickHouseWriter::new(ch.client()), telemetry.clone()).unwrap();
    let subscriber = tracing_subscriber::registry().with(capture.layer()).with(telemetry.layer().unwrap());
    let _sub = tracing::subscriber::set_default(subscriber);
    // A host whose handler opens a span of its own.
    let app = axum::Router::new()
        .route(
            "/tether/push",
            axum::routing::post(|axum::Json(req): axum::Json<Value>| async move {
                let _work = tracing::info_span!("host.apply").entered();
                axum::Json(json!({"applied": [req["mutations"][0]["mutation_id"]]}))
            }),
        )
        .layer(capture.http_layer());
    let base = serve(app).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let body = json!({"client_id": CLIENT, "mutations": [mutation("01JM0000000000000000000001", T1, "create", json!({"title": "Buy milk", "password": SECRET}), 1)]});
    let resp = reqwest::Client::new()
        .post(format!("{base}/tether/push"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("x-tether-client-version", "ios/1.0")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    guard.shutdown();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let server = spans.iter().find(|s| s.name == "tether.push").expect("the request span was exported");
    let host = spans.iter().find(|s| s.name == "host.apply").expect("the host's span was exported");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), caller_trace, "the caller's trace continues");
    assert_eq!(server.parent_span_id.to_string(), caller_span);
    assert_eq!(host.span_context.trace_id(), server.span_context.trace_id());
    assert_eq!(host.parent_span_id, server.span_context.span_id(), "the host's span is a child of the request span");
    let attr = |k: &str| server.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
    assert_eq!(attr("tether.client_id").as_deref(), Some(CLIENT));
    assert_eq!(attr("tether.client_version").as_deref(), Some("ios/1.0"));
    assert_eq!(attr("tether.applied_count").as_deref(), Some("1"));
    assert_eq!(attr("tether.outcome").as_deref(), Some("ok"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr("http.route").as_deref(), Some("/tether/push"));
    // The one mutation was applied: counted on the span, no event (events are for what went wrong).
    assert!(server.events.is_empty(), "{:?}", server.events);
    // Nothing of the payload is in OTLP data, not even redacted.
    let everything = format!("{spans:?}");
    assert!(!everything.contains("Buy milk") && !everything.contains("PLANTED") && !everything.contains("REDACTED"));

    let row = ch.rows("SELECT trace_id, span_id FROM sync_requests").await;
    assert_eq!(row[0]["trace_id"], server.span_context.trace_id().to_string());
    assert_eq!(row[0]["span_id"], server.span_context.span_id().to_string());
    let m = ch.rows("SELECT trace_id, span_id FROM sync_mutations").await;
    assert_eq!(m[0]["trace_id"], row[0]["trace_id"]);
}

const SECRET: &str = "sk_live_PLANTED_0123456789";

#[tokio::test(flavor = "current_thread")]
async fn a_secret_six_levels_deep_appears_in_no_column_of_any_table() {
    let mut h = harness(fast_config()).await;
    let deep = |s: &str| json!({"a": [{"b": [{"c": {"d": [{"e": {"api_key": s, "Authorization": format!("Bearer {s}")}}]}}]}]});
    // The secret in a payload, in a header-like field, and (via a conflict) in the server
    // state the response carries.
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000001", T1, "create", json!({"title": "t", "metadata": deep(SECRET)}), 5_000),
        mutation("01JM0000000000000000000002", T2, "create", json!({"title": "t", "metadata": {"requests": [{"headers": {"Authorization": SECRET, "Cookie": SECRET}}]}}), 5_000),
    ]}))
    .await;
    let resp = h
        .push(json!({"client_id": CLIENT, "mutations": [
            mutation("01JM0000000000000000000003", T1, "update", json!({"title": "old", "metadata": {"x": 1}}), 1_000),
            mutation("01JM0000000000000000000004", T2, "update", json!({"title": "new", "metadata": {"password": SECRET}}), 9_000),
        ]}))
        .await;
    assert!(resp.to_string().contains(SECRET), "the host's own answer carries the secret (conflict server_state)");
    // And in bodies that are not JSON at all.
    h.both("/tether/push", Some("application/json"), format!("{{\"client_id\":\"x\",\"password\":\"{SECRET}\"").into_bytes()).await;
    h.both("/tether/push", Some("application/x-www-form-urlencoded"), format!("user=a&token={SECRET}").into_bytes()).await;
    h.flush();

    assert!(h.ch.count("SELECT count() FROM sync_mutations").await >= 4);
    let columns = h
        .ch
        .rows(&format!(
            "SELECT table, name FROM system.columns WHERE database = '{}' AND type LIKE '%String%' AND table NOT LIKE '.inner%'",
            h.ch.database
        ))
        .await;
    assert!(columns.len() > 30, "every String column of every table is checked: {}", columns.len());
    for c in &columns {
        let (table, column) = (c["table"].as_str().unwrap(), c["name"].as_str().unwrap());
        let n = h.ch.count(&format!("SELECT count() FROM `{table}` WHERE position(toString(`{column}`), 'PLANTED') > 0")).await;
        assert_eq!(n, 0, "the secret leaked into {table}.{column}");
    }
    // The keys stay visible, with the marker.
    let payload = h.ch.rows("SELECT payload FROM sync_mutations WHERE mutation_id = '01JM0000000000000000000001' LIMIT 1").await;
    let p = parse(&payload[0]["payload"]);
    assert_eq!(p["metadata"]["a"][0]["b"][0]["c"]["d"][0]["e"]["api_key"], "[REDACTED]");
}

fn hostile_bodies() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let mut deep = String::from("{\"client_id\":\"x\",\"mutations\":");
    deep.push_str(&"[".repeat(100_000));
    deep.push_str(&"]".repeat(100_000));
    deep.push('}');
    let big_payload = json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000009", T1, "create", json!({"title": "big", "metadata": {"blob": "x".repeat(10 * 1024 * 1024)}}), 1_000)
    ]});
    vec![
        ("invalid json", Some("application/json"), b"{\"client_id\": \"x\", \"mutations\": [".to_vec()),
        ("non-utf8", Some("application/json"), vec![0xff, 0xfe, 0xfd, b'{', 0x80]),
        ("empty", Some("application/json"), Vec::new()),
        ("wrong content type", Some("text/plain"), b"{\"client_id\":\"x\"}".to_vec()),
        ("nesting 100000 deep", Some("application/json"), deep.into_bytes()),
        ("10 MB", Some("application/json"), big_payload.to_string().into_bytes()),
        ("html and sql", Some("application/json"), json!({"client_id": "<script>alert(1)</script>'; DROP TABLE sync_requests; --", "mutations": []}).to_string().into_bytes()),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_bodies_are_captured_as_such_and_do_not_change_the_answer() {
    let mut h = harness(fast_config()).await;
    let bodies = hostile_bodies();
    for (name, ct, body) in &bodies {
        let (status, _, _) = h.both("/tether/push", *ct, body.clone()).await;
        assert!(status < 500, "{name}: {status}");
    }
    h.flush();
    let rows = h
        .ch
        .rows("SELECT http_status, outcome, request_body_bytes, request_body_truncated, length(request_body) AS stored, client_id FROM sync_requests ORDER BY started_at")
        .await;
    assert_eq!(rows.len(), bodies.len(), "every hostile request is captured");
    for ((name, _, body), row) in bodies.iter().zip(&rows) {
        assert_eq!(row["request_body_bytes"], body.len() as u64, "{name}: true size recorded");
        assert!(row["stored"].as_u64().unwrap() <= (CaptureConfig::DEFAULT_BODY_CAP_BYTES + 100) as u64, "{name}: stored text capped");
    }
    assert_eq!(rows[0]["outcome"], "error");
    assert_eq!(rows[0]["http_status"], 400);
    assert_eq!(rows[3]["http_status"], 415);
    assert_eq!(rows[5]["outcome"], "ok", "a 10 MB push is applied and captured");
    assert_eq!(rows[5]["request_body_truncated"], true);
    assert_eq!(rows[6]["client_id"], "<script>alert(1)</script>'; DROP TABLE sync_requests; --", "stored verbatim, as data");
    let big = h.ch.rows("SELECT length(payload) AS n, outcome FROM sync_mutations WHERE mutation_id = '01JM0000000000000000000009'").await;
    assert_eq!(big[0]["outcome"], "applied", "per-mutation rows come from the whole body, not the stored cap");
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_flushes_what_was_queued() {
    // An interval far beyond the test: only the guard's flush can write these rows.
    let cfg = CaptureConfig { batch_interval_ms: 3_600_000, ..CaptureConfig::default() };
    let mut h = harness(cfg).await;
    for i in 0..5 {
        h.push(json!({"client_id": CLIENT, "mutations": [mutation(&format!("01JM000000000000000000000{i}"), T1, "create", json!({"title": "t"}), 1_000)]}))
            .await;
    }
    assert_eq!(h.ch.count("SELECT count() FROM sync_requests").await, 0, "nothing written before the flush");
    h.flush();
    assert_eq!(h.ch.count("SELECT count() FROM sync_requests").await, 5);
    assert_eq!(h.ch.count("SELECT count() FROM sync_mutations").await, 5);
    let t = h.capture.stats().totals();
    assert_eq!((t.enqueued, t.requests_written, t.dropped), (5, 5, 0));
}

#[test]
fn clickhouse_down_then_back_buffers_within_the_cap_and_counts_every_drop() {
    // A ClickHouse that is not there yet, on a port we hold for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let database = format!("test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Batches of two records (four rows): memory holds six batches, so 60 overflow it.
        let cfg = CaptureConfig { batch_interval_ms: 50, queue_records: 10, batch_rows: 4, flush_timeout_ms: 60_000, ..CaptureConfig::default() };
        let client = clickhouse::Client::default().with_url(&url).with_database(&database);
        let writer = ClickHouseWriter::new(client).with_backoff(Duration::from_millis(50), Duration::from_millis(500));
        let ch = TestClickHouse { url: url.clone(), database: database.clone() };
        let mut h = harness_with(ch, cfg, writer).await;
        const SENT: u64 = 60;
        for i in 0..SENT {
            let id = format!("01JM{:022}", i);
            h.push(json!({"client_id": CLIENT, "mutations": [mutation(&id, T1, "create", json!({"title": "t"}), 1_000)]})).await;
            // Spread over many pipeline ticks, so batches pile up behind the stuck writer.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = h.capture.stats().totals();
        assert!(before.insert_failures > 0, "inserts were attempted and failed");
        assert_eq!(before.enqueued + before.dropped, SENT, "every request is either queued or counted as dropped");
        assert!(before.dropped + before.buffer_dropped > 0, "the bounded buffer overflowed while ClickHouse was down: {before:?}");

        // ClickHouse comes back with the schema in place: migrated first on another port (an
        // insert that raced the migrations would meet a half-migrated table, which is refused
        // as schema drift and dead-lettered, by design), then restarted on the writer's port.
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("db");
        let first = tether_pro::store::local::LocalClickHouseOptions { data_dir: dir.clone(), port: 0, ephemeral: false, ..Default::default() };
        let staging = tokio::task::spawn_blocking(move || tether_pro::store::local::LocalClickHouse::start(first)).await.unwrap().unwrap();
        TestClickHouse { url: staging.url().to_owned(), database: database.clone() }.migrate().await;
        tokio::task::spawn_blocking(move || staging.stop()).await.unwrap();
        let opts = tether_pro::store::local::LocalClickHouseOptions { data_dir: dir, port, ephemeral: true, ..Default::default() };
        let server = tokio::task::spawn_blocking(move || tether_pro::store::local::LocalClickHouse::start(opts)).await.unwrap().unwrap();
        h.flush();
        let after = h.capture.stats().totals();
        assert_eq!(after.records_failed, 0);
        assert_eq!(after.enqueued, before.enqueued);
        assert_eq!(
            after.requests_written,
            after.enqueued - after.buffer_dropped,
            "every buffered record arrived, and every record not written is counted: {after:?}"
        );
        assert_eq!(h.ch.count("SELECT count() FROM sync_requests").await, after.requests_written);
        drop(h);
        tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    });
}

mod byte_identical {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = (usize, u8, i64, String)> {
        (0usize..3, 0u8..3, 0i64..10_000, "[a-z<>\"'&; ]{0,12}")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn the_hosts_response_is_byte_identical_with_and_without_the_layers(batches in proptest::collection::vec(proptest::collection::vec(op(), 1..8), 1..4)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let h = harness(fast_config()).await;
                let entities = [T1, T2, "01JAAAAAAAAAAAAAAAAAAAAAA5"];
                let mut n = 0;
                for batch in &batches {
                    let muts: Vec<Value> = batch.iter().map(|(e, o, ts, title)| {
                        n += 1;
                        let op = ["create", "update", "delete"][*o as usize];
                        // Some mutation ids repeat on purpose (duplicates).
                        let id = format!("01JM{:022}", n % 7);
                        mutation(&id, entities[*e], op, json!({"title": title, "metadata": {"password": title}}), *ts)
                    }).collect();
                    // `both` asserts status, content type and body bytes are identical.
                    h.both("/tether/push", Some("application/json"), json!({"client_id": CLIENT, "mutations": muts}).to_string().into_bytes()).await;
                    h.both_pull(json!({"client_id": CLIENT, "last_sync_cursor": null})).await;
                }
            });
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn with_capture_disabled_nothing_is_recorded_and_answers_are_unchanged() {
    let cfg = CaptureConfig { enabled: false, ..fast_config() };
    let mut h = harness(cfg).await;
    h.push(json!({"client_id": CLIENT, "mutations": [mutation("01JM0000000000000000000001", T1, "create", json!({"title": "t"}), 1)]})).await;
    h.flush();
    assert_eq!(h.capture.stats().totals().enqueued, 0);
    assert_eq!(h.ch.count("SELECT count() FROM sync_requests").await, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_host_that_reports_no_state_still_gets_mutation_rows_with_outcomes() {
    use axum::routing::post;
    let ch = clickhouse().await;
    ch.migrate().await;
    let (capture, mut guard) = pipeline::start(&fast_config(), ClickHouseWriter::new(ch.client())).unwrap();
    let _sub = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.layer()));
    // A host of its own: applies the first mutation, rejects the second, reports no state.
    let app = axum::Router::new()
        .route(
            "/api/tether/push",
            post(|axum::Json(req): axum::Json<Value>| async move {
                let ids: Vec<Value> = req["mutations"].as_array().unwrap().iter().map(|m| m["mutation_id"].clone()).collect();
                axum::Json(json!({"applied": [ids[0]], "rejected": [{"mutation_id": ids[1], "reason": "error"}]}))
            }),
        )
        .layer(capture.http_layer());
    let base = serve(app).await;
    let body = json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000001", T1, "create", json!({"title": "a"}), 1),
        mutation("01JM0000000000000000000002", T2, "update", json!({"title": "b"}), 1),
    ]});
    let resp = reqwest::Client::new().post(format!("{base}/api/tether/push")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    guard.shutdown();
    let rows = ch.rows("SELECT outcome, reason, has_state, state_before, diff FROM sync_mutations ORDER BY position").await;
    assert_eq!(
        rows,
        vec![
            json!({"outcome": "applied", "reason": "", "has_state": false, "state_before": "", "diff": "[]"}),
            json!({"outcome": "rejected", "reason": "error", "has_state": false, "state_before": "", "diff": "[]"}),
        ]
    );
    let r = ch.rows("SELECT outcome, rejected_by_reason FROM sync_requests").await;
    assert_eq!(r[0], json!({"outcome": "partial", "rejected_by_reason": {"error": 1}}));
}

/// Issue 15's capture policy, end to end: under `capture.applied = "counts"` every mutation
/// still has its row (the aggregates and every count agree with a full capture), applied
/// ones without payload, states or diff, failed ones whole; the request row keeps only the
/// envelope. Under `"sampled"` with ratio 1 everything is kept, with 0 nothing applied is.
#[tokio::test(flavor = "current_thread")]
async fn the_capture_policy_keeps_every_row_and_the_detail_it_names() {
    for (applied, ratio, kept_applied) in [
        (tether_pro::config::AppliedDetail::Counts, 0.1, false),
        (tether_pro::config::AppliedDetail::Sampled, 1.0, true),
        (tether_pro::config::AppliedDetail::Sampled, 0.0, false),
    ] {
        let mut h = harness(CaptureConfig { applied, applied_sample_ratio: ratio, ..fast_config() }).await;
        h.push(json!({"client_id": CLIENT, "mutations": [
            mutation("01JM0000000000000000000001", T1, "create", json!({"title": "Buy milk"}), 1_000),
        ]}))
        .await;
        h.push(json!({"client_id": CLIENT, "mutations": [
            mutation("01JM0000000000000000000002", T1, "update", json!({"title": "Buy oat milk"}), 2_000),
            mutation("01JM0000000000000000000003", "01JAAAAAAAAAAAAAAAAAAAAAA9", "update", json!({"title": "gone"}), 2_000),
        ]}))
        .await;
        h.flush();
        let muts = h.ch.rows("SELECT mutation_id, outcome, detail_kept, payload, state_before, state_after, diff, has_state FROM sync_mutations ORDER BY mutation_id").await;
        assert_eq!(muts.len(), 3, "{applied:?}: a row per mutation");
        for m in &muts[..2] {
            assert_eq!(m["outcome"], "applied");
            assert_eq!(m["detail_kept"], kept_applied, "{applied:?} {ratio}: {m}");
            assert_eq!(m["has_state"], true, "the host reported its states either way");
            let empty = m["payload"] == "" && m["state_after"] == "" && m["diff"] == "";
            assert_eq!(empty, !kept_applied, "{applied:?} {ratio}: {m}");
        }
        let failed = &muts[2];
        assert_eq!((failed["outcome"].as_str(), failed["detail_kept"].as_bool()), (Some("rejected"), Some(true)));
        assert_eq!(parse(&failed["payload"]), json!({"title": "gone"}), "a failed mutation keeps its payload");
        let reqs = h.ch.rows("SELECT request_body, request_body_moved FROM sync_requests ORDER BY started_at").await;
        assert_eq!(reqs[1]["request_body_moved"], json!([0, 1]));
        assert!(!reqs[1]["request_body"].as_str().unwrap().contains("Buy oat milk"), "{}", reqs[1]["request_body"]);
        assert_eq!(h.ch.count("SELECT sum(mutations) FROM sync_mutations_5m").await, 3);
        assert_eq!(h.ch.count("SELECT sum(applied) FROM sync_requests_5m").await, 2);
    }
}
