//! Nothing secret stored or shown (issue 12), end to end with the real binary: the reference
//! server with capture on (`tether-pro sync-server --capture`), a real ClickHouse, a real OTLP
//! receiver, logs on stderr at trace level (every crate), the disk spool, and the dashboard's
//! pages and JSON routes (replay enabled against the same server). Pushes carry fake
//! credentials in every form the value and key rules cover; none of them may appear on any
//! surface, while the ordinary text around them stays readable.

mod common;
#[path = "common/child_server.rs"]
mod child_server;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use child_server::{ChildServer, closed_port_url};
use otlp_receiver::{OtlpReceiver, Protocol};
use serde_json::{Value, json};
use tether_pro::dashboard::{DashboardState, mount, replay::ReplayState};
use tether_pro::replay::{HttpTarget, Replayer};

/// Every planted credential carries this prefix; nothing else in the traffic does.
const MARK: &str = "FAKE";
const CLIENT: &str = "dev Bearer FAKE-CLIENT-1a2b";
/// An extra key configured with `capture.redact_keys`: the defaults still apply.
const EXTRA_KEY: &str = "pin";

/// Payloads with a credential in every form the rules cover. Each create gets its own entity.
fn payloads() -> Vec<Value> {
    vec![
        // The issue's first input, as is.
        json!({"title": "t", "notes": "Authorization: Bearer FAKE-A", "metadata": {"callback": "https://example.test/cb?access_token=FAKE-B&x=1"}}),
        // Key spellings the old "ends with" rule missed, the configured extra key, and a default.
        json!({"title": "keys", "metadata": {"password_confirmation": "FAKE-C", "passwordHash": "FAKE-D", "secret_key": "FAKE-E", "pin": "FAKE-F", "password": "FAKE-P"}}),
        // URL userinfo, a JWT, a PEM private key, JSON encoded in a string, header lines.
        json!({"title": "values", "notes": "db postgres://app:FAKE-G7@db.internal/main; jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.FAKE-H8sig",
            "metadata": {"raw": "{\"token\":\"FAKE-I9\",\"n\":1}", "pem": "-----BEGIN PRIVATE KEY-----\nFAKE-Q1key\n-----END PRIVATE KEY-----",
                "headers": "X-Api-Key: FAKE-J0\nCookie: sid=FAKE-K1\nAccept: */*", "basic": "sent Basic FAKE-L2xQ== once", "form": "user=bob&password=FAKE-R3&keep=yes"}}),
    ]
}

/// The server with capture, the extra key, the spool on and a trace-level log on stderr.
fn start_server(clickhouse_url: &str, database: &str, spool: &Path, env: &[(&str, &str)]) -> ChildServer {
    let keys = format!("[{EXTRA_KEY}]");
    let mut all = vec![
        ("TETHER_PRO_CAPTURE__REDACT_KEYS", keys.as_str()),
        ("TETHER_PRO_CAPTURE__BATCH_INTERVAL_MS", "20"),
        ("TETHER_PRO_CAPTURE__FLUSH_TIMEOUT_MS", "1500"),
        ("TETHER_PRO_CAPTURE__SPOOL__ENABLED", "true"),
        ("TETHER_PRO_CAPTURE__SPOOL__DIR", spool.to_str().unwrap()),
        ("RUST_LOG", "trace"),
    ];
    all.extend_from_slice(env);
    ChildServer::start(clickhouse_url, database, &all, true)
}

/// Sends the planted pushes: creates, a conflicting update (the host answers with its stored
/// state, secrets included), a body cut short (malformed JSON), and an oversized client id.
async fn push_everything(base: &str) -> usize {
    let http = reqwest::Client::new();
    let mut sent = 0;
    let mut entities = Vec::new();
    for (i, payload) in payloads().into_iter().enumerate() {
        let id = ulid::Ulid::new().to_string();
        entities.push(id.clone());
        let body = json!({"client_id": CLIENT, "mutations": [
            {"mutation_id": ulid::Ulid::new().to_string(), "entity_id": id, "model": "Task", "operation": "create", "payload": payload, "version": 1, "timestamp": 10_000 + i}
        ]});
        let r = http.post(format!("{base}/tether/push")).header("x-tether-client-version", "ios/1.0 token=FAKE-V5").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        sent += 1;
    }
    // An older update of the first record: a conflict whose answer carries the server state.
    let body = json!({"client_id": CLIENT, "mutations": [
        {"mutation_id": ulid::Ulid::new().to_string(), "entity_id": entities[0], "model": "Task", "operation": "update", "payload": {"title": "old", "notes": "Bearer FAKE-S6x"}, "version": 2, "timestamp": 1}
    ]});
    let answer: Value = http.post(format!("{base}/tether/push")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["conflicts"].as_array().map(Vec::len), Some(1), "{answer}");
    sent += 1;
    // A body that is not valid JSON.
    let cut = r#"{"client_id":"cut","mutations":[{"mutation_id":"m","payload":{"notes":"see Bearer FAKE-T7x and https://u:FAKE-U8@h.example/","title":"#;
    let r = http.post(format!("{base}/tether/push")).header("content-type", "application/json").body(cut).send().await.unwrap();
    assert!(r.status().is_client_error());
    sent += 1;
    // A client id of 100,000 characters.
    let body = json!({"client_id": "c".repeat(100_000), "mutations": []});
    assert_eq!(http.post(format!("{base}/tether/push")).json(&body).send().await.unwrap().status(), 200);
    sent + 1
}

/// Every planted value found in `text`, with a little context.
fn leaks(text: &str) -> Vec<String> {
    text.match_indices(MARK)
        .map(|(i, _)| {
            let start = text[..i].char_indices().rev().nth(40).map_or(0, |(j, _)| j);
            let end = text[i..].char_indices().nth(40).map_or(text.len(), |(j, _)| i + j);
            text[start..end].to_owned()
        })
        .collect()
}

fn assert_clean(surface: &str, text: &str) {
    let found = leaks(text);
    assert!(found.is_empty(), "a planted secret reached {surface}: {found:#?}");
}

/// Everything in every table of the test's database, as text.
async fn all_tables(ch: &common::TestClickHouse) -> Vec<(String, String)> {
    let tables = ch.rows("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View' ORDER BY name").await;
    let mut out = Vec::new();
    for t in tables {
        let name = t["name"].as_str().unwrap().to_owned();
        let rows = ch.rows(&format!("SELECT * FROM `{name}`")).await;
        out.push((name, rows.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")));
    }
    out
}

async fn wait_for(ch: &common::TestClickHouse, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ch.count("SELECT count() FROM sync_requests").await < n {
        assert!(Instant::now() < deadline, "the captured requests did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_reaches_clickhouse_otlp_stderr_pages_or_json_routes() {
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let spool = tempfile::tempdir().unwrap();
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf);
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "64"),
    ];
    let server = start_server(&ch.url, &ch.database, spool.path(), &otel);
    let sent = push_everything(&server.base).await;
    wait_for(&ch, sent as u64).await;

    // ClickHouse: every column of every table (raw and aggregate), every row.
    for (table, text) in all_tables(&ch).await {
        assert_clean(&format!("ClickHouse table {table}"), &text);
    }
    // What stays readable: the neighbours of the secrets.
    let stored = ch.rows("SELECT payload, redacted_paths FROM sync_mutations ORDER BY started_at").await;
    assert_eq!(stored[0]["payload"], json!(r#"{"metadata":{"callback":"https://example.test/cb?access_token=[REDACTED]&x=1"},"notes":"Authorization: [REDACTED]","title":"t"}"#));
    assert_eq!(stored[0]["redacted_paths"], json!(["/metadata/callback", "/notes"]));
    let clients = ch.rows("SELECT DISTINCT client_id, client_version FROM sync_requests WHERE client_version != '' ORDER BY client_id").await;
    assert_eq!(clients, vec![json!({"client_id": "dev Bearer [REDACTED]", "client_version": "ios/1.0 token=[REDACTED]"})]);
    let long = ch.rows("SELECT length(client_id) AS n FROM sync_requests WHERE startsWith(client_id, 'ccc')").await;
    assert!(long[0]["n"].as_u64().unwrap() < 320, "the 100,000-character client id was stored at {}", long[0]["n"]);

    // Pages and JSON routes, replay enabled against the same host.
    let ids: Vec<String> = ch.rows("SELECT request_id FROM sync_requests ORDER BY started_at").await.iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    let target = HttpTarget {
        http: reqwest::Client::new(),
        push_url: format!("{}/tether/push", server.base),
        state_url_template: format!("{}/tether/state/{{model}}/{{entity_id}}", server.base),
    };
    let mut state = DashboardState::new(ch.client());
    // The dashboard's configuration has the same keys as the capture's (one config file).
    let redactor = tether_pro::pipeline::redact::Redactor::with_defaults(&[EXTRA_KEY.to_owned()], &[]).unwrap();
    state.replay = Some(ReplayState::new(Replayer::new(ch.client(), Arc::new(target)).with_redactor(redactor)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/tether/dashboard", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, mount(state)).await.unwrap() });
    let http = reqwest::Client::new();
    let mut paths = vec![
        String::new(),
        "/requests".into(),
        "/conflicts".into(),
        "/failures".into(),
        "/clients/dev%20Bearer%20%5BREDACTED%5D".into(),
        "/metrics".into(),
        "/metrics?window=24h".into(),
    ];
    for id in &ids {
        paths.push(format!("/requests/{id}"));
        paths.push(format!("/replay/{id}"));
        paths.push(format!("/replay/{id}/preview.json"));
        paths.push(format!("/replay/{id}/links.json"));
    }
    let mut pages = 0;
    for p in &paths {
        let r = http.get(format!("{base}{p}")).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success() || status.as_u16() == 422, "{p}: {status}");
        assert_clean(&format!("GET {p}"), &body);
        pages += 1;
    }
    // The preview of the first push says which value cannot be resent.
    let preview: Value = http.get(format!("{base}/replay/{}/preview.json", ids[0])).send().await.unwrap().json().await.unwrap();
    assert_eq!(preview["entries"][0]["not_resendable"], json!([{"path": "/metadata/callback", "sent_instead": "current_value"}, {"path": "/notes", "sent_instead": "current_value"}]));
    // An apply's answer is clean too.
    let key = preview["idempotency_key"].as_str().unwrap();
    let token = preview["csrf_token"].as_str().unwrap();
    let applied = http.post(format!("{base}/replay/{}/apply.json", ids[0])).json(&json!({"idempotency_key": key, "csrf_token": token, "restamp": true})).send().await.unwrap().text().await.unwrap();
    assert_clean("the replay apply answer", &applied);
    wait_for(&ch, sent as u64 + 1).await;
    for (table, text) in all_tables(&ch).await {
        assert_clean(&format!("ClickHouse table {table} after a replay"), &text);
    }

    // OTLP: spans, events and metrics, and the attribute length limit from the environment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received.traces().iter().map(|t| t.resource_spans.len()).sum::<usize>() == 0 {
        assert!(Instant::now() < deadline, "no spans exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = server.terminate();
    let dump = receiver.received.debug_dump();
    assert_clean("OTLP", &dump);
    let client_ids: Vec<String> = receiver
        .received
        .traces()
        .iter()
        .flat_map(|t| t.resource_spans.iter().flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter())))
        .flat_map(|s| s.attributes.iter().filter(|a| a.key == "tether.client_id").map(|a| format!("{:?}", a.value)))
        .collect();
    assert!(client_ids.iter().any(|v| v.contains("ccc")), "the long client id's span was exported");
    for v in &client_ids {
        assert!(v.chars().filter(|c| *c == 'c').count() <= 64, "an attribute over OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: {v}");
    }
    // stderr at trace level for tether-pro.
    // (At trace level the server logs its exporters, HTTP pools and pipeline: no line may
    // quote captured data.)
    assert!(stderr.len() > 1000, "the trace log is nearly empty: nothing was checked");
    assert_clean("stderr", &stderr);
    eprintln!("checked {pages} pages and JSON routes, {} bytes of OTLP, {} bytes of stderr", dump.len(), stderr.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_secret_reaches_the_spool() {
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let spool = tempfile::tempdir().unwrap();
    // ClickHouse away: a graceful stop moves everything to the spool.
    let server = start_server(&closed_port_url(), &ch.database, spool.path(), &[]);
    push_everything(&server.base).await;
    let stderr = server.terminate();
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(spool.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "batch") {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert_clean(&format!("spool file {}", path.display()), &text);
            assert!(text.contains("[REDACTED]"), "the spool holds the redacted rows");
            files += 1;
            bytes += text.len();
        }
    }
    assert!(files > 0, "nothing was spooled: nothing was checked");
    assert_clean("stderr", &stderr);
    eprintln!("{files} spool files, {bytes} bytes, clean");
}
