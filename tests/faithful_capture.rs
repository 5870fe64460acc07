//! What is stored is what happened (issue 14): compressed bodies in either layer order,
//! timestamps that are not real dates, exact numbers, clients that go away, bodies shorter
//! than their `Content-Length`, and broken strings. The reference server behind the real
//! capture layers, real HTTP (raw TCP where the client must misbehave), the real pipeline and
//! a real ClickHouse.

mod common;
#[path = "common/content_encoding.rs"]
mod content_encoding;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use common::{TestClickHouse, clickhouse};
use content_encoding::encode;
use serde_json::{Value, json};
use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, Capture, CaptureGuard, ClickHouseWriter};
use tether_pro::protocol::{Mutation, Object};
use tether_pro::sync::{self, SyncServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tracing_subscriber::layer::SubscriberExt;

const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";

struct Env {
    ch: TestClickHouse,
    capture: Capture,
    _guard: CaptureGuard,
    _subscriber: tracing::subscriber::DefaultGuard,
}

async fn env(cfg: CaptureConfig) -> Env {
    let ch = clickhouse().await;
    ch.migrate().await;
    let (capture, guard) = pipeline::start(&CaptureConfig { batch_interval_ms: 20, ..cfg }, ClickHouseWriter::new(ch.client())).unwrap();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.layer()));
    Env { ch, capture, _guard: guard, _subscriber }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

impl Env {
    /// Rows of `sql` once there are `n` of them (the pipeline writes every 20 ms; the
    /// deadline only keeps a broken test from hanging).
    async fn rows_when(&self, sql: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.ch.rows(sql).await;
            if rows.len() >= n || std::time::Instant::now() > deadline {
                assert_eq!(rows.len(), n, "{sql}");
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn request_row(&self, request_id_sql: &str) -> Value {
        self.rows_when(&format!("SELECT * FROM sync_requests WHERE {request_id_sql}"), 1).await.remove(0)
    }

    async fn mutation_rows(&self, request_id: &Value, n: usize) -> Vec<Value> {
        let id = request_id.as_str().unwrap();
        self.rows_when(&format!("SELECT * FROM sync_mutations WHERE request_id = '{id}' ORDER BY position"), n).await
    }
}

fn mutation(i: usize, payload: Value, timestamp: Value) -> Value {
    json!({"mutation_id": format!("01JM{i:022}"), "entity_id": format!("01JE{i:022}"), "model": "Task",
           "operation": "create", "payload": payload, "version": 1, "timestamp": timestamp})
}

fn push_body(mutations: Vec<Value>) -> Vec<u8> {
    json!({"client_id": CLIENT, "mutations": mutations}).to_string().into_bytes()
}

fn parse(v: &Value) -> Value {
    serde_json::from_str(v.as_str().unwrap()).unwrap()
}

/// Where the capture layer sits relative to tower-http's compression layers.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// Outermost: it sees the bytes on the wire (compressed); the pipeline decodes them.
    CaptureOutside,
    /// Innermost: it sees what the host sees (plain).
    CaptureInside,
}

fn compressed_app(capture: &Capture, order: Order) -> axum::Router {
    let app = sync::router(SyncServer::in_memory());
    match order {
        Order::CaptureOutside => app.layer(RequestDecompressionLayer::new()).layer(CompressionLayer::new()).layer(capture.http_layer()),
        Order::CaptureInside => app.layer(capture.http_layer()).layer(RequestDecompressionLayer::new()).layer(CompressionLayer::new()),
    }
}

/// The columns that describe what happened, without ids, times and wire sizes.
fn comparable(mut row: Value) -> Value {
    let o = row.as_object_mut().unwrap();
    for k in ["request_id", "started_at", "duration_us", "trace_id", "span_id", "request_body_bytes", "response_body_bytes", "request_content_encoding", "response_content_encoding"] {
        o.remove(k);
    }
    row
}

async fn send(addr: &str, label: &str, coding: &str, body: &[u8]) -> u16 {
    send_to(addr, "/tether/push", label, coding, body).await
}

async fn send_to(addr: &str, path: &str, label: &str, coding: &str, body: &[u8]) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-tether-replay-of", label) // to find the row by
        .body(encode(coding, body));
    if coding != "identity" {
        req = req.header("content-encoding", coding).header("accept-encoding", coding);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    resp.bytes().await.unwrap();
    status
}

/// The issue's input: a host compressing responses (and decompressing requests) with the
/// capture layer outside stored binary bodies, outcome `rejected`, mutations `unprocessed`,
/// and an empty client id. Every encoding, both orders: the rows read exactly as for the same
/// push sent plain.
#[tokio::test(flavor = "current_thread")]
async fn compressed_bodies_are_stored_as_plain_ones_in_either_layer_order() {
    let e = env(CaptureConfig::default()).await;
    let plain = push_body((0..3).map(|i| mutation(i, json!({"title": format!("Task {i}"), "n": 1.5}), json!(1_716_000_000_000i64))).collect());
    // The reference: the same push, plain, to a fresh server.
    let addr = serve(sync::router(SyncServer::in_memory()).layer(e.capture.http_layer())).await;
    assert_eq!(send(&addr, "plain", "identity", &plain).await, 200);
    let reference = comparable(e.request_row("replay_of = 'plain'").await);
    assert_eq!((reference["outcome"].as_str(), reference["applied_count"].as_u64(), reference["client_id"].as_str()), (Some("ok"), Some(3), Some(CLIENT)));
    let ref_id = e.request_row("replay_of = 'plain'").await["request_id"].clone();
    let reference_mutations: Vec<Value> = e.mutation_rows(&ref_id, 3).await.into_iter().map(comparable).collect();

    for order in [Order::CaptureOutside, Order::CaptureInside] {
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let label = format!("{coding}-{order:?}");
            let addr = serve(compressed_app(&e.capture, order)).await;
            assert_eq!(send(&addr, &label, coding, &plain).await, 200, "{label}");
            let row = e.request_row(&format!("replay_of = '{label}'")).await;
            let (req_enc, resp_enc) = match order {
                Order::CaptureOutside => (coding, coding),
                Order::CaptureInside => ("", ""),
            };
            assert_eq!((row["request_content_encoding"].as_str(), row["response_content_encoding"].as_str()), (Some(req_enc), Some(resp_enc)), "{label}");
            let id = row["request_id"].clone();
            let mut row = comparable(row);
            row["replay_of"] = reference["replay_of"].clone();
            assert_eq!(row, reference, "{label}");
            let mutations: Vec<Value> = e.mutation_rows(&id, 3).await.into_iter().map(comparable).collect();
            assert_eq!(mutations, reference_mutations, "{label}");
            // A pull of what was pushed: its compressed answer is read too.
            let pull = format!("{label}-pull");
            assert_eq!(send_to(&addr, "/tether/pull", &pull, coding, br#"{"client_id":"01JCCCCCCCCCCCCCCCCCCCCCC2","last_sync_cursor":null}"#).await, 200);
            let row = e.request_row(&format!("replay_of = '{pull}'")).await;
            assert_eq!((row["outcome"].as_str(), row["snapshot_count"].as_u64(), row["response_content_encoding"].as_str()), (Some("ok"), Some(3), Some(resp_enc)), "{pull}");
            assert_eq!(parse(&row["response_body"])["snapshots"].as_array().map(Vec::len), Some(3), "{pull}");
        }
    }
}

/// A compression bomb (50 MiB of zeros in 50 KiB of gzip) stops at the decoded cap and is
/// stored as truncated; nothing else breaks.
#[tokio::test(flavor = "current_thread")]
async fn a_compression_bomb_stops_at_the_cap_and_is_marked_truncated() {
    let e = env(CaptureConfig { decoded_max_bytes: 64 * 1024, ..CaptureConfig::default() }).await;
    let addr = serve(compressed_app(&e.capture, Order::CaptureOutside)).await;
    let bomb = vec![b' '; 50 << 20];
    let status = send(&addr, "bomb", "gzip", &bomb).await;
    let row = e.request_row("replay_of = 'bomb'").await;
    assert_eq!(row["http_status"], status);
    assert_eq!(row["request_content_encoding"], "gzip");
    assert_eq!(row["request_body_truncated"], true);
    let text = row["request_body"].as_str().unwrap();
    assert!(text.contains("…[truncated: decoded gzip body larger than 65536 bytes]"), "{text:.200}");
    assert!(text.len() < 70 * 1024, "stored {} bytes", text.len());
    assert!(row["request_body_bytes"].as_u64().unwrap() < 1 << 20, "the wire size, compressed");
}

/// The issue's inputs: a timestamp of year 3000 was applied and stored as 2299-12-31; an ISO
/// string, a float, -1 or none at all were stored as 1970-01-01. No invented dates: NULL, with
/// the raw value kept; the reference server rejects the far-future one (`validation_failed`).
#[tokio::test(flavor = "current_thread")]
async fn invalid_timestamps_are_null_with_the_raw_value_and_the_future_is_rejected() {
    let e = env(CaptureConfig::default()).await;
    let addr = serve(sync::router(SyncServer::in_memory()).layer(e.capture.http_layer())).await;
    let now = chrono::Utc::now().timestamp_millis();
    let year_3000 = 32_503_680_000_000i64;
    // Integers: per-mutation validation.
    let ints = push_body(vec![mutation(0, json!({"title": "a"}), json!(year_3000)), mutation(1, json!({"title": "b"}), json!(-1)), mutation(2, json!({"title": "c"}), json!(now))]);
    assert_eq!(send(&addr, "ints", "identity", &ints).await, 200);
    let row = e.request_row("replay_of = 'ints'").await;
    let m = e.mutation_rows(&row["request_id"], 3).await;
    let resp = parse(&row["response_body"]);
    assert_eq!(resp["applied"], json!([m[2]["mutation_id"]]));
    let messages = &resp["rejected"][0]["data"]["messages"]["timestamp"][0];
    assert!(messages.as_str().unwrap().contains("ahead of the server clock"), "{messages}");
    assert_eq!((m[0]["outcome"].as_str(), m[0]["reason"].as_str()), (Some("rejected"), Some("validation_failed")));
    assert_eq!((&m[0]["client_timestamp"], m[0]["client_timestamp_raw"].as_str()), (&Value::Null, Some("32503680000000")));
    assert_eq!((&m[1]["client_timestamp"], m[1]["client_timestamp_raw"].as_str()), (&Value::Null, Some("-1")));
    let stored = chrono::DateTime::from_timestamp_millis(now).unwrap().format("%Y-%m-%d %H:%M:%S%.3f").to_string();
    assert_eq!((m[2]["client_timestamp"].as_str(), m[2]["client_timestamp_raw"].as_str()), (Some(stored.as_str()), Some("")));
    // The request page says so.
    let dash = serve(tether_pro::dashboard::mount(tether_pro::dashboard::DashboardState::new(e.ch.client()))).await;
    let page = reqwest::get(format!("http://{dash}/tether/dashboard/requests/{}", row["request_id"].as_str().unwrap())).await.unwrap().text().await.unwrap();
    assert!(page.contains("invalid timestamp (32503680000000)") && page.contains("invalid timestamp (-1)"), "{page}");

    // Not integers: the reference server refuses the push (422); the rows still say what came.
    let mut missing = mutation(3, json!({"title": "d"}), json!(0));
    missing.as_object_mut().unwrap().remove("timestamp");
    let others = push_body(vec![mutation(0, json!({}), json!("2024-05-18T10:00:00Z")), mutation(1, json!({}), json!(1716000000000.5)), missing]);
    assert_eq!(send(&addr, "others", "identity", &others).await, 422);
    let row = e.request_row("replay_of = 'others'").await;
    let m = e.mutation_rows(&row["request_id"], 3).await;
    let raws: Vec<(&Value, &str)> = m.iter().map(|m| (&m["client_timestamp"], m["client_timestamp_raw"].as_str().unwrap())).collect();
    assert_eq!(raws, vec![(&Value::Null, "\"2024-05-18T10:00:00Z\""), (&Value::Null, "1716000000000.5"), (&Value::Null, "")]);
    assert_eq!(parse(&row["request_body"])["mutations"][1]["timestamp"].to_string(), "1716000000000.5", "raw value in the stored envelope");
}

/// The issue's input: `{"big":123456789012345678901234567890}` was stored as
/// `1.2345678901234568e+29`. Stored digits equal sent digits in payload, states, diff, bodies.
/// (serde_json writes an exponent marker lowercase: `1E+2` is stored `1e+2`, same digits.)
#[tokio::test(flavor = "current_thread")]
async fn big_and_odd_numbers_keep_their_digits_everywhere() {
    let e = env(CaptureConfig::default()).await;
    let addr = serve(sync::router(SyncServer::in_memory()).layer(e.capture.http_layer())).await;
    let now = chrono::Utc::now().timestamp_millis();
    let body = format!(
        r#"{{"client_id":"{CLIENT}","mutations":[{{"mutation_id":"01JM0000000000000000000001","entity_id":"01JE0000000000000000000001","model":"Task","operation":"create","payload":{{"title":"t","metadata":{{"big":123456789012345678901234567890,"precise":0.1000000000000000055511151231257827,"exp":1e+2}}}},"version":1,"timestamp":{now}}}]}}"#
    );
    assert_eq!(send(&addr, "numbers", "identity", body.as_bytes()).await, 200);
    let row = e.request_row("replay_of = 'numbers'").await;
    let m = &e.mutation_rows(&row["request_id"], 1).await[0];
    assert_eq!(m["outcome"], "applied");
    // The request body keeps its envelope; the payload is in the mutation row (issue 15), and
    // the body put back together keeps the digits too.
    assert_eq!(row["request_body_moved"], json!([0]));
    let moved = [tether_pro::pipeline::envelope::MovedPayload { position: 0, payload: m["payload"].as_str().unwrap().to_owned(), detail_kept: true }];
    let rebuilt = tether_pro::pipeline::envelope::rebuild(row["request_body"].as_str().unwrap(), &[0], &moved);
    for (column, text) in [("payload", m["payload"].as_str()), ("state_after", m["state_after"].as_str()), ("diff", m["diff"].as_str()), ("rebuilt request_body", Some(rebuilt.as_str()))] {
        let text = text.unwrap();
        for digits in ["123456789012345678901234567890", "0.1000000000000000055511151231257827", "1e+2"] {
            assert!(text.contains(digits), "{column} lost {digits}: {text}");
        }
    }
}

/// Signals when the host's request future is dropped before it finished (hyper drops it when
/// the client goes away).
#[derive(Clone, Default)]
struct DropSignal(Arc<Mutex<Option<std::sync::mpsc::Sender<()>>>>);

struct Armed(Option<std::sync::mpsc::Sender<()>>);

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The issue's input: a push of 2,000 creates whose client closes the socket before the
/// answer. The host commits every mutation; the rows said `unprocessed`. Now: `unknown` with
/// reason `client_disconnected`, and the states and diffs the host reported.
///
/// Deterministic, without timing: the host's first payload-mapper call (inside its blocking
/// push) waits until the request future was dropped, which happens once the client is gone.
#[tokio::test(flavor = "current_thread")]
async fn a_client_that_goes_away_before_the_answer_gets_unknown_with_the_states() {
    let e = env(CaptureConfig::default()).await;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let signal = DropSignal(Arc::new(Mutex::new(Some(tx))));
    let rx = Mutex::new(rx);
    let waited = AtomicBool::new(false);
    // The client leaves once the host has the whole request (it is applying it): a client
    // that left mid-upload is another case (an incomplete body), which a loaded machine
    // would otherwise produce now and then (seen once in CI).
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let mapper = move |_: &str, _: &Mutation, payload: Object| {
        if !waited.swap(true, Ordering::SeqCst) {
            let _ = entered_tx.lock().unwrap().send(());
            rx.lock().unwrap().recv_timeout(Duration::from_secs(20)).expect("the request future is dropped when the client goes away");
        }
        payload
    };
    let server = SyncServer::builder().payload_mapper(mapper).build().unwrap();
    let s = signal.clone();
    let host = sync::router(server.clone()).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let armed = Armed(s.0.lock().unwrap().take());
        async move {
            let resp = next.run(req).await;
            std::mem::forget(armed); // finished: not dropped early
            resp
        }
    }));
    let addr = serve(host.layer(e.capture.http_layer())).await;
    let now = chrono::Utc::now().timestamp_millis();
    let body = push_body((0..2000).map(|i| mutation(i, json!({"title": format!("t{i}")}), json!(now))).collect());
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /tether/push HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-tether-replay-of: gone\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)).expect("the host starts applying the push"))
        .await
        .unwrap();
    drop(sock); // gone before the answer

    let row = e.request_row("replay_of = 'gone'").await;
    assert_eq!((row["outcome"].as_str(), row["error"].as_str()), (Some("unknown"), Some("client disconnected before the response")));
    assert_eq!((row["mutation_count"].as_u64(), row["applied_count"].as_u64()), (Some(2000), Some(0)));
    let m = e.mutation_rows(&row["request_id"], 2000).await;
    assert!(m.iter().all(|m| m["outcome"] == "unknown" && m["reason"] == "client_disconnected" && m["has_state"] == true), "{}", m[0]);
    assert_eq!(parse(&m[1999]["diff"]), json!([{"path": ["title"], "change": "added", "new": "t1999"}]));
    assert_eq!(parse(&m[0]["state_after"])["title"], "t0");
    // The host did commit them all.
    assert_eq!(server.state_blocking("Task", "01JE0000000000000000001999").unwrap().unwrap().state["title"], "t1999");
}

/// The issue's input: a push declaring `Content-Length: 5000` that sends 100 bytes was stored
/// as not truncated.
#[tokio::test(flavor = "current_thread")]
async fn a_body_shorter_than_its_content_length_is_marked_incomplete() {
    let e = env(CaptureConfig::default()).await;
    let addr = serve(sync::router(SyncServer::in_memory()).layer(e.capture.http_layer())).await;
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /tether/push HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-tether-replay-of: short\r\ncontent-length: 5000\r\n\r\n";
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[b' '; 100]).await.unwrap();
    sock.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer).await;
    let row = e.request_row("replay_of = 'short'").await;
    assert_eq!(row["request_body_truncated"], true);
    assert_eq!(row["request_body_bytes"], 100);
    let text = row["request_body"].as_str().unwrap();
    assert!(text.ends_with("…[incomplete: 100 of 5000 bytes (Content-Length) received]"), "{text}");
}

/// The issue's input: a lone surrogate `"\ud83d"` in one mutation's title left an empty client
/// id and no mutation rows, so the request was missing from the failures and client pages.
#[tokio::test(flavor = "current_thread")]
async fn a_broken_string_in_one_mutation_keeps_the_envelope_and_names_the_mutation() {
    let e = env(CaptureConfig::default()).await;
    let addr = serve(sync::router(SyncServer::in_memory()).layer(e.capture.http_layer())).await;
    let now = chrono::Utc::now().timestamp_millis();
    let body = String::from_utf8(push_body((0..3).map(|i| mutation(i, json!({"title": format!("BROKEN{i}")}), json!(now))).collect()))
        .unwrap()
        .replace("BROKEN1", "\\ud83d");
    assert_eq!(send(&addr, "surrogate", "identity", body.as_bytes()).await, 400);
    let row = e.request_row("replay_of = 'surrogate'").await;
    assert_eq!((row["client_id"].as_str(), row["outcome"].as_str(), row["mutation_count"].as_u64()), (Some(CLIENT), Some("error"), Some(3)));
    let error = row["error"].as_str().unwrap();
    assert!(error.contains("invalid string") && error.contains("mutation #1 (01JM0000000000000000000001)"), "{error}");
    let m = e.mutation_rows(&row["request_id"], 3).await;
    let reasons: Vec<(&str, &str, &str)> = m.iter().map(|m| (m["mutation_id"].as_str().unwrap(), m["outcome"].as_str().unwrap(), m["reason"].as_str().unwrap())).collect();
    assert_eq!(
        reasons,
        vec![
            ("01JM0000000000000000000000", "unprocessed", "http_400"),
            ("01JM0000000000000000000001", "unprocessed", "invalid_string"),
            ("01JM0000000000000000000002", "unprocessed", "http_400"),
        ]
    );
    assert_eq!(parse(&m[1]["payload"])["title"], "\u{FFFD}");
    // On the failures page (grouped by reason, model, client) and the client's page.
    let db = e.ch.client();
    let now = chrono::Utc::now();
    let groups = tether_pro::internals::queries::failure_groups(&db, now - chrono::Duration::hours(1), now + chrono::Duration::hours(1), 50).await.unwrap();
    assert!(groups.iter().any(|g| g.reason == "invalid_string" && g.client_id == CLIENT), "{groups:?}");
    let mine = tether_pro::internals::queries::client_requests(&db, CLIENT, None, None, None, 50).await.unwrap();
    assert_eq!(mine.len(), 1);
}
