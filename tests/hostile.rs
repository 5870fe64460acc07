//! Bad input and hostile users, systematically: SQL injection in every query and path
//! parameter of every dashboard route, auth on every route and path variant, the replay gate
//! (off: nothing answers but 404; on: nothing is sent without a valid, same-origin, CSRF-checked
//! apply), and oversized or deeply nested bodies to every POST route of the dashboard and to
//! the instrumented sync routes.
//!
//! Real ClickHouse (one database per test), the reference sync server behind the real capture
//! layers producing the data, the dashboard served on loopback and spoken to with a raw
//! HTTP/1.1 client, so that exactly the bytes written here (double slashes, `..`, bad
//! percent-encodings, odd methods) reach the server.

#![allow(clippy::type_complexity)] // case tables read best as tuples
mod common;
#[path = "common/captured_host.rs"]
mod captured_host;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use captured_host::{CapturedHost, captured_host};
use common::TestClickHouse;
use serde_json::{Value, json};
use tether_pro::config::ServeConfig;
use tether_pro::dashboard::{self, replay::ReplayState};
use tether_pro::pipeline::{Capture, CaptureGuard};
use tether_pro::protocol::{PushRequest, PushResponse};
use tether_pro::replay::{ReplayTarget, Replayer};
use tether_pro::sync::InProcessTarget;
use tether_pro::sync::{RecordState, SyncServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFIX: &str = "/tether/dashboard";
const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";
/// A seeded client id that looks like an injection: filtering by it must find exactly it.
const SEEDED_HOSTILE_CLIENT: &str = "x' OR '1'='1";
const T1: &str = "01JAAAAAAAAAAAAAAAAAAAAAA1";
const T2: &str = "01JAAAAAAAAAAAAAAAAAAAAAA2";

// ----- a raw HTTP/1.1 client --------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends exactly `method target HTTP/1.1`, the headers given (plus Host, Connection: close and
/// Content-Length when there is a body) and the body, then reads the answer to the end. The
/// body is written while the answer is read, so an early answer (413) to a huge body arrives.
async fn raw(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    try_raw(addr, method, target, headers, body).await.unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

async fn try_raw(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Resp, String> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !chunked {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();
    let mut out = head.into_bytes();
    if chunked {
        for chunk in body.chunks(64 * 1024) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(body);
    }
    // The server may answer and close before it read everything: write errors are expected then.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
        let _ = wr.flush().await;
        wr
    });
    let mut buf = Vec::new();
    // A guard against a hang (the assertion is about an answer, not about its speed).
    let read = tokio::time::timeout(Duration::from_secs(300), async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after a complete answer (the server closed with unread input).
                Err(_) if !buf.is_empty() => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await;
    match read {
        Err(_) => return Err("no answer: the server hung".into()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    writer.abort();
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<Resp, String> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(buf)))?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line {status_line}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = buf[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Ok(Resp { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// Percent-encodes every byte but RFC 3986 unreserved characters.
fn enc(s: &[u8]) -> String {
    s.iter()
        .map(|&b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn encs(s: &str) -> String {
    enc(s.as_bytes())
}

/// What askama makes of a string in HTML.
fn html_escaped(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '&' => out.push_str("&#38;"),
            '<' => out.push_str("&#60;"),
            '>' => out.push_str("&#62;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ----- the world: ClickHouse, a captured host, data -----------------------------------------

/// A replay target that counts what reaches the host.
struct Counting {
    inner: InProcessTarget,
    pushes: AtomicUsize,
}

#[async_trait]
impl ReplayTarget for Counting {
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<RecordState>, tether_pro::replay::TargetError> {
        self.inner.state(model, entity_id).await
    }
    async fn push(&self, req: &PushRequest, v: &str, replay_of: &str) -> Result<(u16, Option<PushResponse>), tether_pro::replay::TargetError> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.inner.push(req, v, replay_of).await
    }
}

struct World {
    ch: TestClickHouse,
    server: SyncServer,
    app: axum::Router,
    /// `host:port` of the captured reference server.
    sync: String,
    capture: Capture,
    guard: Option<CaptureGuard>,
    _sub: tracing::subscriber::DefaultGuard,
}

async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn world() -> World {
    let CapturedHost { ch, server, app, capture, guard, sub: _sub } = captured_host().await;
    let sync = listen(app.clone()).await;
    World { ch, server, app, sync, capture, guard: Some(guard), _sub }
}

fn mutation(id: &str, entity: &str, model: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": model, "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

impl World {
    async fn post_sync(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        raw(&self.sync, "POST", path, headers, body).await
    }

    async fn push(&self, client_id: &str, mutations: Vec<Value>) {
        let body = json!({"client_id": client_id, "mutations": mutations}).to_string();
        let r = self.post_sync("/tether/push", &[("content-type", "application/json")], body.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Waits until the pipeline wrote `n` request rows in all.
    async fn settle(&self, n: u64) {
        for _ in 0..1500 {
            if self.capture.stats().totals().requests_written >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("captured rows did not arrive ({} of {n})", self.capture.stats().totals().requests_written);
    }

    /// Known traffic: a replayable push with every outcome, a hostile-looking client id, a
    /// pull and a malformed push. Returns the replayable push's id and another push's id.
    async fn seed(&self) -> (String, String) {
        self.push(CLIENT, vec![
            mutation("01JM0000000000000000000001", T1, "Task", "create", json!({"title": "one"}), 1_000),
            mutation("01JM0000000000000000000002", T2, "Task", "create", json!({"title": "two"}), 5_000),
        ])
        .await;
        self.push(CLIENT, vec![
            mutation("01JM0000000000000000000003", T1, "Task", "update", json!({"title": "one v2"}), 2_000),
            mutation("01JM0000000000000000000004", T2, "Task", "update", json!({"title": "older"}), 1_000),
            mutation("01JM0000000000000000000005", &ulid(), "Task", "create", json!({"done": true}), 2_000),
            mutation("01JM0000000000000000000006", &ulid(), "Task", "update", json!({"title": "ghost"}), 2_000),
        ])
        .await;
        self.push(SEEDED_HOSTILE_CLIENT, vec![mutation(&ulid(), &ulid(), "Task", "create", json!({"title": "h"}), 1_000)]).await;
        let r = self.post_sync("/tether/pull", &[("content-type", "application/json")], json!({"client_id": CLIENT}).to_string().as_bytes()).await;
        assert_eq!(r.status, 200);
        let r = self.post_sync("/tether/push", &[("content-type", "application/json")], b"{not json").await;
        assert_eq!(r.status, 400);
        self.settle(5).await;
        let ids: Vec<String> = self
            .ch
            .rows("SELECT request_id FROM sync_requests WHERE kind = 'push' AND client_id = '01JCCCCCCCCCCCCCCCCCCCCCC1' ORDER BY started_at")
            .await
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 2);
        (ids[1].clone(), ids[0].clone())
    }

    fn counting(&self) -> Arc<Counting> {
        Arc::new(Counting { inner: InProcessTarget { app: self.app.clone(), server: self.server.clone() }, pushes: AtomicUsize::new(0) })
    }

    /// The dashboard as `tether-pro serve` runs it (auth from `serve`), replay on when a
    /// target is given. Returns `host:port`.
    async fn dashboard(&self, serve: &ServeConfig, target: Option<Arc<Counting>>) -> String {
        let replay = target.map(|t| ReplayState::new(Replayer::new(self.ch.client(), t)));
        listen(dashboard::app_with_replay(serve, self.ch.client(), replay)).await
    }

    /// Every table of the database with its row count.
    async fn snapshot(&self) -> BTreeMap<String, u64> {
        let names: Vec<String> = self
            .ch
            .rows("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
            .await
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(names.len() >= 5, "{names:?}");
        let mut out = BTreeMap::new();
        for n in names {
            let c = self.ch.count(&format!("SELECT count() FROM `{n}`")).await;
            out.insert(n, c);
        }
        out
    }

    async fn host_state(&self) -> Vec<Option<RecordState>> {
        [T1, T2].iter().map(|t| self.server.state_blocking("Task", t).unwrap()).collect()
    }

    /// Stops the capture pipeline once it wrote what it holds (nothing more arrives after).
    fn stop_capture(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.shutdown();
        }
    }

    /// `seed`, then the pipeline stopped: every seeded row is in ClickHouse and stays as is.
    async fn seed_and_stop(&mut self) -> (String, String) {
        let ids = self.seed().await;
        self.stop_capture();
        ids
    }

    /// What must not change: every table's row count (`snapshot`) and the host's records
    /// (`host_state`).
    async fn before(&self) -> (BTreeMap<String, u64>, Vec<Option<RecordState>>) {
        (self.snapshot().await, self.host_state().await)
    }
}

fn listed_requests(body: &str) -> usize {
    body.matches("<tr class=\"request\" id=\"req-").count()
}

// ----- SQL injection ------------------------------------------------------------------------

/// Payloads as bytes (some are not UTF-8 on purpose).
fn sql_payloads() -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = [
        "'",
        "\"",
        "\\",
        "\\'",
        "''",
        "' OR '1'='1",
        "' OR '1'='1' --",
        "\" OR \"1\"=\"1",
        "1 OR 1=1",
        "1' OR 1=1 #",
        "'; DROP TABLE sync_requests; --",
        "1; DROP TABLE sync_mutations",
        "') OR ('a'='a",
        "' UNION SELECT request_id FROM sync_requests --",
        "x' UNION ALL SELECT name FROM system.tables --",
        "{client_id:String}",
        "{limit:UInt64}",
        "{id:String}' OR 1=1 --",
        "' || format('{0}', currentUser()) || '",
        "`sync_requests`",
        "x`; DROP TABLE `sync_requests",
        "/* comment */ OR 1=1",
        "-- comment",
        "x\\' OR 1=1 --",
        "\\N",
        "NULL",
        "%",
        "_",
        "*",
        "a\tb\nc\rd",
        "a\0b",
        "＇ OR ＇1＇=＇1",
        "\u{202e}'; DROP TABLE sync_requests; --",
        "-1",
        "99999999999999999999999999",
        "1e308",
        "2026-05-18T10:00:00Z' OR '1'='1",
        "01JAAAAAAAAAAAAAAAAAAAAAA1' OR '1'='1",
        // Not SQL, but where a redirect could lead.
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    p.push("'".repeat(1_500).into_bytes());
    // Under hyper's URI limit (64 KiB), so the handlers see it; and over it (a 414).
    p.push("A".repeat(60_000).into_bytes());
    p.push("A".repeat(100_000).into_bytes());
    // Not UTF-8: a lone byte, an overlong quote, a surrogate.
    p.push(vec![0xFF]);
    p.push(vec![0xC0, 0x27, b' ', b'O', b'R', b' ', b'1']);
    p.push(vec![0xED, 0xA0, 0x80]);
    p
}

/// Marks of internals that must never reach a body (compared in lower case).
const LEAKS: [&str; 12] = [
    "db::exception",
    "exception",
    "clickhouse",
    "code: ",
    "syntax error",
    "from sync_",
    "fromunixtimestamp",
    ":string}",
    ":int64}",
    "panicked",
    "backtrace",
    "rowbinary",
];

fn assert_no_leak(what: &str, body: &str, payload: &[u8]) {
    let p = String::from_utf8_lossy(payload).into_owned();
    let mut b = body.to_owned();
    for echo in [html_escaped(&p), p.clone(), serde_json::to_string(&p).unwrap()] {
        if !echo.is_empty() {
            b = b.replace(&echo, "");
        }
    }
    let lower = b.to_lowercase();
    for l in LEAKS {
        assert!(!lower.contains(l), "{what}: the body shows {l:?}: {}", &b[..b.len().min(2_000)]);
    }
}

/// How a text filter must answer: a page with no row.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Any non-5xx answer.
    Any,
    /// A 200 requests list with no row, or a 400 (bad value).
    NoRows,
    /// No client page: 404 (unknown) or 400 (unreadable or too long).
    NotFound,
}

#[tokio::test(flavor = "current_thread")]
async fn sql_injection_in_every_parameter_of_every_route_matches_nothing_and_changes_nothing() {
    let mut w = world().await;
    let (id, other) = w.seed_and_stop().await;
    let (before, host_before) = w.before().await;
    let target = w.counting();
    let d = w.dashboard(&ServeConfig::default(), Some(target.clone())).await;
    let get = |path: String| {
        let d = d.clone();
        async move { raw(&d, "GET", &format!("{PREFIX}{path}"), &[], b"").await }
    };

    // Controls: the lists are not empty, the seeded lookalike matches exactly itself.
    let all = get("/requests".into()).await;
    assert_eq!(listed_requests(&all.text()), 5);
    let own = get(format!("/requests?client_id={}", encs(SEEDED_HOSTILE_CLIENT))).await;
    assert_eq!(listed_requests(&own.text()), 1, "the lookalike client id matches its own request only");
    assert_eq!(listed_requests(&get(format!("/requests?client_id={CLIENT}")).await.text()), 3);

    let now = "2026-05-18T10:00:00Z";
    let mut checked = 0usize;
    let mut params = std::collections::BTreeSet::new();
    for payload in sql_payloads() {
        let p = enc(&payload);
        let ps = String::from_utf8_lossy(&payload).into_owned();
        // (route + parameter, method, target, body, content type, expectation)
        let mut cases: Vec<(String, &str, String, Vec<u8>, &str, Expect)> = Vec::new();
        let mut get_case = |label: &str, target: String, e: Expect| cases.push((label.to_owned(), "GET", target, Vec::new(), "", e));
        get_case("GET /metrics window", format!("/metrics?window={p}"), Expect::Any);
        get_case("GET /metrics from", format!("/metrics?from={p}&to={now}"), Expect::Any);
        get_case("GET /metrics to", format!("/metrics?from={now}&to={p}"), Expect::Any);
        get_case("GET /metrics <name>", format!("/metrics?{p}=1"), Expect::Any);
        get_case("GET /openapi.json <name>", format!("/openapi.json?{p}={p}"), Expect::Any);
        get_case("GET / window", format!("?window={p}"), Expect::Any);
        get_case("GET / <name>", format!("?{p}={p}"), Expect::Any);
        for f in ["kind", "outcome", "client_id", "model", "mutation_id", "entity_id", "from", "to", "before"] {
            get_case(&format!("GET /requests {f}"), format!("/requests?{f}={p}"), Expect::NoRows);
            // A repeated parameter: the last non-empty value wins, a known one first.
            get_case(&format!("GET /requests {f}[]"), format!("/requests?{f}={CLIENT}&{f}={p}"), Expect::NoRows);
        }
        get_case("GET /requests all text filters", format!("/requests?client_id={p}&model={p}&mutation_id={p}&entity_id={p}"), Expect::NoRows);
        get_case("GET /requests <name>", format!("/requests?{p}={p}&client_id[]={p}"), Expect::Any);
        get_case("GET /requests/{request_id}", format!("/requests/{p}"), Expect::Any);
        get_case("GET /requests/{request_id} page", format!("/requests/{id}?page={p}"), Expect::Any);
        for f in ["window", "from", "to", "before"] {
            get_case(&format!("GET /conflicts {f}"), format!("/conflicts?{f}={p}"), Expect::Any);
        }
        for f in ["window", "from", "to"] {
            get_case(&format!("GET /failures {f}"), format!("/failures?{f}={p}"), Expect::Any);
        }
        get_case("GET /clients/{client_id}", format!("/clients/{p}"), Expect::NotFound);
        for f in ["from", "to", "before"] {
            get_case(&format!("GET /clients/{{client_id}} {f}"), format!("/clients/{CLIENT}?{f}={p}"), Expect::Any);
        }
        get_case("GET /search q", format!("/search?q={p}"), Expect::Any);
        get_case("GET /search q by=client", format!("/search?q={p}&by=client"), Expect::Any);
        get_case("GET /search by", format!("/search?q=x&by={p}"), Expect::Any);
        get_case("GET /assets/app.css <name>", format!("/assets/app.css?{p}={p}"), Expect::Any);
        get_case("GET /replay/{request_id}", format!("/replay/{p}"), Expect::Any);
        get_case("GET /replay/{request_id} restamp", format!("/replay/{id}?restamp={p}"), Expect::Any);
        get_case("GET /replay/{request_id}/preview.json", format!("/replay/{p}/preview.json"), Expect::Any);
        get_case("GET /replay/{request_id}/preview.json restamp", format!("/replay/{id}/preview.json?restamp={p}"), Expect::Any);
        get_case("GET /replay/{request_id}/links.json", format!("/replay/{p}/links.json"), Expect::Any);
        let form = format!("csrf_token={p}&idempotency_key={p}&restamp={p}&position={p}").into_bytes();
        let form_ct = "application/x-www-form-urlencoded";
        cases.push(("POST /replay/{request_id}".into(), "POST", format!("/replay/{p}"), form.clone(), form_ct, Expect::Any));
        cases.push(("POST /replay/{request_id} form fields".into(), "POST", format!("/replay/{id}"), form, form_ct, Expect::Any));
        let j = json!({"idempotency_key": ps, "csrf_token": ps}).to_string().into_bytes();
        cases.push(("POST /replay/{request_id}/apply.json".into(), "POST", format!("/replay/{p}/apply.json"), j.clone(), "application/json", Expect::Any));
        cases.push(("POST /replay/{request_id}/apply.json fields".into(), "POST", format!("/replay/{id}/apply.json"), j, "application/json", Expect::Any));
        let j = format!(r#"{{"idempotency_key": "k", "csrf_token": "00", "positions": [{ps}], "restamp": {ps}}}"#).into_bytes();
        cases.push(("POST /replay/{request_id}/apply.json positions".into(), "POST", format!("/replay/{id}/apply.json"), j, "application/json", Expect::Any));

        for (label, method, path, body, ct, expect) in cases {
            params.insert(label.clone());
            let target = format!("{PREFIX}{path}");
            let headers: Vec<(&str, &str)> = if ct.is_empty() { vec![] } else { vec![("content-type", ct)] };
            let r = raw(&d, method, &target, &headers, &body).await;
            let what = format!("{label} with {:?}", &ps[..ps.len().min(60)]);
            assert!(r.status < 500, "{what}: {} {}", r.status, r.text());
            if r.status == 414 {
                assert!(target.len() > 65_000, "{what}: 414 for a short URI");
                checked += 1;
                continue;
            }
            let text = r.text();
            if label.starts_with("GET /openapi.json") || label.starts_with("GET /assets/") {
                // Static documents: the same bytes whatever the query.
                assert_eq!(r.status, 200, "{what}");
                assert!(text == dashboard::openapi_json() || text == tether_pro::internals::pages::CSS, "{what}");
                checked += 1;
                continue;
            }
            assert_no_leak(&what, &text, &payload);
            match expect {
                Expect::Any => {}
                Expect::NoRows => {
                    assert!(r.status == 200 || r.status == 400, "{what}: {}", r.status);
                    assert_eq!(listed_requests(&text), 0, "{what}: an injected filter matched rows");
                }
                Expect::NotFound => assert!(r.status == 404 || r.status == 400, "{what}: {}", r.status),
            }
            if label.starts_with("GET /search") && r.status == 303 {
                let loc = r.header("location").expect("a redirect has a location");
                assert!(loc.starts_with(PREFIX) && loc.bytes().all(|b| b.is_ascii_graphic() && !b"'\"<>\\`{}".contains(&b)), "{what}: {loc}");
                // Following it lists nothing.
                let next = raw(&d, "GET", loc, &[], b"").await;
                assert!(next.status < 500);
                assert_eq!(listed_requests(&next.text()), 0, "{what}: the search matched rows");
            }
            checked += 1;
        }
    }
    eprintln!("{checked} injection requests over {} route parameters", params.len());
    assert!(params.len() >= 50, "{params:?}");

    // Nothing was dropped, altered or written; nothing reached the host.
    assert_eq!(w.snapshot().await, before, "tables and row counts unchanged");
    assert_eq!(target.pushes.load(Ordering::SeqCst), 0);
    assert_eq!(w.host_state().await, host_before);
    // The dashboard still answers its real data.
    assert_eq!(listed_requests(&get("/requests".into()).await.text()), 5);
    assert_eq!(get(format!("/requests/{other}")).await.status, 200);
}

// ----- auth ---------------------------------------------------------------------------------

/// Every route, method and path variant of the dashboard as `tether-pro serve` runs it.
fn auth_targets(id: &str) -> Vec<(&'static str, String)> {
    let mut t: Vec<(&'static str, String)> = Vec::new();
    let routes = [
        String::new(),
        "/".into(),
        "/requests".into(),
        "/requests/".into(),
        format!("/requests/{id}"),
        "/requests?client_id=x".into(),
        "/conflicts".into(),
        "/failures".into(),
        format!("/clients/{CLIENT}"),
        "/search?q=x".into(),
        "/assets/app.css".into(),
        "/metrics".into(),
        "/openapi.json".into(),
        format!("/replay/{id}"),
        format!("/replay/{id}/"),
        format!("/replay/{id}?restamp=1"),
        format!("/replay/{id}/preview.json"),
        format!("/replay/{id}/apply.json"),
        format!("/replay/{id}/links.json"),
        "/nope".into(),
    ];
    for r in &routes {
        for m in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"] {
            t.push((m, format!("{PREFIX}{r}")));
        }
    }
    for v in [
        "/".to_owned(),
        "/nope".into(),
        "//tether/dashboard/requests".into(),
        "/tether/dashboard//requests".into(),
        "/tether//dashboard/requests".into(),
        "/tether/%64ashboard/requests".into(),
        "/tether/dashboard/%72equests".into(),
        "/tether/dashboard%2Frequests".into(),
        "/tether/dashboard/requests%2F".into(),
        "/tether/dashboard/./requests".into(),
        "/tether/dashboard/requests/../conflicts".into(),
        "/tether/dashboard/nope/../requests".into(),
        "/TETHER/DASHBOARD/requests".into(),
        "/tether/dashboard/assets/../assets/app.css".into(),
        "/tether/dashboard/assets/%2E%2E/openapi.json".into(),
        format!("/tether/dashboard/replay/{id}//apply.json"),
        format!("/tether/dashboard/replay/{id}/%61pply.json"),
        format!("/tether/dashboard/replay/../replay/{id}"),
        "/tether/dashboard;/requests".into(),
        "/tether/dashboard/requests;x=1".into(),
    ] {
        for m in ["GET", "POST"] {
            t.push((m, v.clone()));
        }
    }
    t.push(("OPTIONS", "*".into()));
    t
}

async fn assert_every_route_refuses(d: &str, w: &World, id: &str, creds: &[(&str, Vec<(&'static str, String)>)]) -> usize {
    let mut n = 0;
    let form = b"csrf_token=00&idempotency_key=k&position=0";
    for (method, target) in auth_targets(id) {
        for (label, headers) in creds {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if method != "GET" && method != "HEAD" {
                h.push(("content-type", "application/x-www-form-urlencoded"));
            }
            let body: &[u8] = if method == "GET" || method == "HEAD" || method == "OPTIONS" { b"" } else { form };
            let r = raw(d, method, &target, &h, body).await;
            let what = format!("{method} {target} with {label}");
            assert_eq!(r.status, 401, "{what}: {}", r.text());
            assert!(r.header("www-authenticate").is_some(), "{what}: a challenge");
            let text = r.text();
            assert!(!text.contains(CLIENT) && !text.contains("<!doctype") && !text.contains("openapi"), "{what}: content leaked");
            n += 1;
        }
    }
    assert_eq!(w.ch.count("SELECT count() FROM replay_links").await, 0);
    n
}

#[tokio::test(flavor = "current_thread")]
async fn with_auth_configured_every_route_and_variant_answers_401_without_the_right_credentials() {
    let mut w = world().await;
    let (id, _) = w.seed_and_stop().await;
    let before = w.snapshot().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let b64np = |s: &str| base64::engine::general_purpose::STANDARD_NO_PAD.encode(s);

    // Bearer.
    let token = "s3cret-Token_42";
    let target = w.counting();
    let d = w.dashboard(&ServeConfig { bearer_token: Some(token.into()), ..ServeConfig::default() }, Some(target.clone())).await;
    let good = format!("Bearer {token}");
    // With the token, everything works (so a 401 below is the auth, not a broken route).
    for path in ["", "/requests", "/metrics", "/openapi.json", "/assets/app.css"] {
        let r = raw(&d, "GET", &format!("{PREFIX}{path}"), &[("authorization", &good)], b"").await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(raw(&d, "GET", "/", &[("authorization", &good)], b"").await.status, 307);
    // A real CSRF token, so that the refused applies below are refused by auth alone.
    let preview: Value = serde_json::from_slice(&raw(&d, "GET", &format!("{PREFIX}/replay/{id}/preview.json"), &[("authorization", &good)], b"").await.body).unwrap();
    let (key, csrf) = (preview["idempotency_key"].as_str().unwrap().to_owned(), preview["csrf_token"].as_str().unwrap().to_owned());
    let wrong: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("no credentials", vec![]),
        ("empty header", vec![("authorization", String::new())]),
        ("scheme only", vec![("authorization", "Bearer".into())]),
        ("empty token", vec![("authorization", "Bearer ".into())]),
        ("wrong token", vec![("authorization", "Bearer wrong".into())]),
        ("token prefix", vec![("authorization", format!("Bearer {}", &token[..token.len() - 1]))]),
        ("token suffix", vec![("authorization", format!("Bearer {token}x"))]),
        ("token with a space inside", vec![("authorization", format!("Bearer  {token}"))]),
        ("lower-case scheme", vec![("authorization", format!("bearer {token}"))]),
        ("upper-case scheme", vec![("authorization", format!("BEARER {token}"))]),
        ("token case changed", vec![("authorization", format!("Bearer {}", token.to_uppercase()))]),
        ("bare token", vec![("authorization", token.into())]),
        ("other scheme", vec![("authorization", format!("Token {token}"))]),
        ("basic with the token", vec![("authorization", format!("Basic {}", b64(token)))]),
        ("basic with the token as password", vec![("authorization", format!("Basic {}", b64(&format!("x:{token}"))))]),
        ("proxy header", vec![("proxy-authorization", good.clone())]),
        ("other header", vec![("x-authorization", good.clone())]),
        ("cookie", vec![("cookie", format!("token={token}; authorization={token}"))]),
        ("wrong first of two", vec![("authorization", "Bearer wrong".into()), ("authorization", good.clone())]),
        ("replay CSRF token", vec![("x-csrf-token", csrf.clone())]),
    ];
    let mut n = assert_every_route_refuses(&d, &w, &id, &wrong).await;
    // The token in the query string is no credential either.
    for q in [format!("?access_token={token}"), format!("?token={token}"), format!("?authorization=Bearer%20{token}")] {
        assert_eq!(raw(&d, "GET", &format!("{PREFIX}/requests{q}"), &[], b"").await.status, 401, "{q}");
        n += 1;
    }
    // Applies with a valid CSRF token, without auth: 401, nothing sent.
    let apply = json!({"idempotency_key": key, "csrf_token": csrf}).to_string();
    for creds in [vec![], vec![("authorization", "Bearer wrong")]] {
        let mut h = creds.clone();
        h.push(("content-type", "application/json"));
        assert_eq!(raw(&d, "POST", &format!("{PREFIX}/replay/{id}/apply.json"), &h, apply.as_bytes()).await.status, 401);
        let mut h = creds.clone();
        h.push(("content-type", "application/x-www-form-urlencoded"));
        let form = format!("csrf_token={csrf}&idempotency_key={key}&position=0");
        assert_eq!(raw(&d, "POST", &format!("{PREFIX}/replay/{id}"), &h, form.as_bytes()).await.status, 401);
    }
    assert_eq!(target.pushes.load(Ordering::SeqCst), 0, "nothing reached the host");

    // Basic.
    let (user, pass) = ("ops", "pa:ss w0rd");
    let target_b = w.counting();
    let serve = ServeConfig { basic_username: Some(user.into()), basic_password: Some(pass.into()), ..ServeConfig::default() };
    let db = w.dashboard(&serve, Some(target_b.clone())).await;
    let good_b = format!("Basic {}", b64(&format!("{user}:{pass}")));
    for path in ["", "/requests", "/metrics", "/openapi.json", "/assets/app.css"] {
        assert_eq!(raw(&db, "GET", &format!("{PREFIX}{path}"), &[("authorization", &good_b)], b"").await.status, 200, "{path}");
    }
    let wrong_b: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("no credentials", vec![]),
        ("empty basic", vec![("authorization", "Basic ".into())]),
        ("wrong password", vec![("authorization", format!("Basic {}", b64(&format!("{user}:wrong"))))]),
        ("empty password", vec![("authorization", format!("Basic {}", b64(&format!("{user}:"))))]),
        ("password prefix", vec![("authorization", format!("Basic {}", b64(&format!("{user}:pa:ss"))))]),
        ("no user", vec![("authorization", format!("Basic {}", b64(&format!(":{pass}"))))]),
        ("user case", vec![("authorization", format!("Basic {}", b64(&format!("OPS:{pass}"))))]),
        ("password suffix", vec![("authorization", format!("Basic {}", b64(&format!("{user}:{pass}x"))))]),
        ("unencoded", vec![("authorization", format!("Basic {user}:{pass}"))]),
        ("lower-case scheme", vec![("authorization", format!("basic {}", b64(&format!("{user}:{pass}"))))]),
        ("bearer scheme", vec![("authorization", format!("Bearer {}", b64(&format!("{user}:{pass}"))))]),
        ("extra byte", vec![("authorization", format!("{good_b}x"))]),
        ("no padding", vec![("authorization", format!("Basic {}", b64np(&format!("{user}:{pass}."))))]),
    ];
    n += assert_every_route_refuses(&db, &w, &id, &wrong_b).await;
    assert_eq!(target_b.pushes.load(Ordering::SeqCst), 0, "nothing reached the host");

    // A credential configured but empty (an unset secret) refuses everything, never serves
    // without auth.
    for (label, serve) in [
        ("empty bearer token", ServeConfig { bearer_token: Some(String::new()), ..ServeConfig::default() }),
        ("empty basic user", ServeConfig { basic_username: Some(String::new()), basic_password: Some("pw".into()), ..ServeConfig::default() }),
        ("empty basic password", ServeConfig { basic_username: Some("ops".into()), basic_password: Some(String::new()), ..ServeConfig::default() }),
    ] {
        let de = w.dashboard(&serve, Some(w.counting())).await;
        let creds: Vec<(&str, Vec<(&'static str, String)>)> = vec![
            ("nothing", vec![]),
            ("empty bearer", vec![("authorization", "Bearer ".into())]),
            ("bare bearer", vec![("authorization", "Bearer".into())]),
            ("empty basic", vec![("authorization", format!("Basic {}", b64(":")))]),
            ("user, empty password", vec![("authorization", format!("Basic {}", b64("ops:")))]),
            ("empty user", vec![("authorization", format!("Basic {}", b64(":pw")))]),
        ];
        for (c, h) in &creds {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            for path in ["", "/requests", "/metrics", "/assets/app.css", "/openapi.json"] {
                let r = raw(&de, "GET", &format!("{PREFIX}{path}"), &h, b"").await;
                assert_eq!(r.status, 401, "{label}, {c}: {path}");
                n += 1;
            }
        }
    }
    eprintln!("{n} unauthenticated requests, all 401");
    assert_eq!(w.snapshot().await, before, "nothing was written");

    // With basic auth, the replay's actor is the user who logged in, not a header the client
    // chose. (Behind a proxy with bearer auth, the proxy's X-Forwarded-User stays the actor.)
    let preview: Value = serde_json::from_slice(&raw(&db, "GET", &format!("{PREFIX}/replay/{id}/preview.json"), &[("authorization", &good_b)], b"").await.body).unwrap();
    let form = format!("csrf_token={}&idempotency_key={}&position=0", preview["csrf_token"].as_str().unwrap(), preview["idempotency_key"].as_str().unwrap());
    let r = raw(&db, "POST", &format!("{PREFIX}/replay/{id}"), &[("authorization", &good_b), ("content-type", "application/x-www-form-urlencoded"), ("x-forwarded-user", "admin")], form.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(target_b.pushes.load(Ordering::SeqCst), 1);
    let r = raw(&d, "POST", &format!("{PREFIX}/replay/{id}/apply.json"), &[("authorization", &good), ("content-type", "application/json"), ("x-forwarded-user", "alice")], apply.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let actors: Vec<Value> = w.ch.rows("SELECT DISTINCT actor, idempotency_key FROM replay_links ORDER BY actor").await;
    assert_eq!(
        actors.iter().map(|r| r["actor"].as_str().unwrap()).collect::<Vec<_>>(),
        vec!["alice", "ops"],
        "basic auth's user, not the X-Forwarded-User it sent; the proxy-named user with bearer auth"
    );
}

// ----- the replay gate ----------------------------------------------------------------------

fn gate_variants(id: &str, other: &str) -> Vec<String> {
    vec![
        format!("/replay/{id}"),
        format!("/replay/{id}/"),
        format!("/replay//{id}"),
        format!("//replay/{id}"),
        format!("/replay/{id}/preview.json"),
        format!("/replay/{id}/apply.json"),
        format!("/replay/{id}/links.json"),
        format!("/replay/{id}//apply.json"),
        format!("/replay/{id}/apply.json/"),
        format!("/%72eplay/{id}"),
        format!("/replay/{id}/%61pply.json"),
        format!("/replay/{id}%2Fapply.json"),
        format!("/REPLAY/{id}/apply.json"),
        format!("/requests/../replay/{id}"),
        format!("/replay/../replay/{id}/apply.json"),
        format!("/replay/{id}/apply.json/.."),
        format!("/replay/{id}/./apply.json"),
        format!("/replay/{id}?live_enabled=true"),
        format!("/replay/{id}/apply.json?replay.live_enabled=true&live_enabled=1"),
        format!("/replay/{other}/apply.json"),
        format!("/replay/{}", encs(&format!("{id}/apply.json"))),
        "/replay".into(),
        "/replay/".into(),
        "/replay/x/y/z".into(),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn with_the_gate_off_every_replay_path_method_and_trick_is_404_and_nothing_is_sent() {
    let mut w = world().await;
    let (id, other) = w.seed_and_stop().await;
    let (before, host_before) = w.before().await;
    let d = w.dashboard(&ServeConfig::default(), None).await;
    let json_body = json!({"idempotency_key": "k", "csrf_token": "00", "positions": [0]}).to_string();
    let form_body = "csrf_token=00&idempotency_key=k&position=0".to_owned();
    let tricks: Vec<(&str, Vec<(&str, &str)>, &str)> = vec![
        ("plain", vec![], ""),
        ("json", vec![("content-type", "application/json")], &json_body),
        ("form", vec![("content-type", "application/x-www-form-urlencoded")], &form_body),
        ("method override", vec![("x-http-method-override", "POST"), ("x-method-override", "POST"), ("content-type", "application/json")], &json_body),
        (
            "config-looking headers",
            vec![
                ("x-tether-pro-replay-live-enabled", "true"),
                ("tether_pro_replay__live_enabled", "true"),
                ("x-replay-live-enabled", "1"),
                ("x-forwarded-user", "admin"),
                ("x-forwarded-prefix", "/tether/dashboard/replay"),
                ("content-type", "application/json"),
            ],
            &json_body,
        ),
    ];
    let mut n = 0;
    for path in gate_variants(&id, &other) {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            for (label, headers, body) in &tricks {
                let body: &[u8] = if method == "GET" || method == "HEAD" { b"" } else { body.as_bytes() };
                let r = raw(&d, method, &format!("{PREFIX}{path}"), headers, body).await;
                assert_eq!(r.status, 404, "{method} {path} ({label}): {}", r.text());
                n += 1;
            }
        }
    }
    eprintln!("{n} replay requests with the gate off, all 404");
    assert_eq!(w.snapshot().await, before, "nothing written (replay_links empty)");
    assert_eq!(w.ch.count("SELECT count() FROM replay_links").await, 0);
    assert_eq!(w.host_state().await, host_before, "nothing reached the host");
    // The pages still answer (the 404s are the gate, not a dead server).
    assert_eq!(raw(&d, "GET", &format!("{PREFIX}/requests/{id}"), &[], b"").await.status, 200);
}

#[tokio::test(flavor = "current_thread")]
async fn with_the_gate_on_no_forged_misbound_cross_site_or_wrongly_typed_apply_sends_anything() {
    let mut w = world().await;
    let (id, other) = w.seed_and_stop().await;
    let target = w.counting();
    let d = w.dashboard(&ServeConfig::default(), Some(target.clone())).await;
    let (before, host_before) = w.before().await;

    // Previews (JSON and HTML, both timestamp modes) write nothing and send nothing.
    let mut previews = Vec::new();
    for path in [format!("/replay/{id}/preview.json"), format!("/replay/{id}/preview.json?restamp=1"), format!("/replay/{other}/preview.json")] {
        let r = raw(&d, "GET", &format!("{PREFIX}{path}"), &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
        previews.push(serde_json::from_slice::<Value>(&r.body).unwrap());
    }
    for path in [format!("/replay/{id}"), format!("/replay/{id}?restamp=1"), format!("/replay/{id}/links.json")] {
        assert_eq!(raw(&d, "GET", &format!("{PREFIX}{path}"), &[], b"").await.status, 200, "{path}");
    }
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    let (key, token) = (s(&previews[0], "idempotency_key"), s(&previews[0], "csrf_token"));
    let (other_key, other_token) = (s(&previews[2], "idempotency_key"), s(&previews[2], "csrf_token"));
    let (key2, _token2) = (s(&previews[1], "idempotency_key"), s(&previews[1], "csrf_token"));
    let mut flipped = token.clone().into_bytes();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();

    let json_ct = ("content-type", "application/json");
    let form_ct = ("content-type", "application/x-www-form-urlencoded");
    let apply_json = format!("{PREFIX}/replay/{id}/apply.json");
    let apply_form = format!("{PREFIX}/replay/{id}");
    let j = |k: &str, t: &str| json!({"idempotency_key": k, "csrf_token": t}).to_string();
    let f = |k: &str, t: &str| format!("idempotency_key={}&csrf_token={}&position=0", encs(k), encs(t));
    let evil_origin = ("origin", "https://evil.example");
    let cases: Vec<(&str, &str, String, Vec<(&str, &str)>, String)> = vec![
        ("JSON without a token", "POST", apply_json.clone(), vec![json_ct], json!({"idempotency_key": key}).to_string()),
        ("JSON without a key", "POST", apply_json.clone(), vec![json_ct], json!({"csrf_token": token}).to_string()),
        ("JSON empty token", "POST", apply_json.clone(), vec![json_ct], j(&key, "")),
        ("JSON forged token", "POST", apply_json.clone(), vec![json_ct], j(&key, &"ab".repeat(32))),
        ("JSON short token", "POST", apply_json.clone(), vec![json_ct], j(&key, "00")),
        ("JSON non-hex token", "POST", apply_json.clone(), vec![json_ct], j(&key, &"zz".repeat(32))),
        ("JSON one byte off", "POST", apply_json.clone(), vec![json_ct], j(&key, &flipped)),
        ("JSON truncated token", "POST", apply_json.clone(), vec![json_ct], j(&key, &token[..62])),
        ("JSON extended token", "POST", apply_json.clone(), vec![json_ct], j(&key, &format!("{token}00"))),
        ("JSON token for another key", "POST", apply_json.clone(), vec![json_ct], j("another-key", &token)),
        ("JSON token of a key for another key", "POST", apply_json.clone(), vec![json_ct], j(&key2, &token)),
        ("JSON empty key", "POST", apply_json.clone(), vec![json_ct], j("", &token)),
        ("JSON token for another request", "POST", apply_json.clone(), vec![json_ct], j(&other_key, &other_token)),
        ("JSON token as text/plain", "POST", apply_json.clone(), vec![("content-type", "text/plain")], j(&key, &token)),
        ("JSON token without a content type", "POST", apply_json.clone(), vec![], j(&key, &token)),
        ("form to the JSON route", "POST", apply_json.clone(), vec![form_ct], f(&key, &token)),
        ("JSON to the form route", "POST", apply_form.clone(), vec![json_ct], j(&key, &token)),
        ("form without a token", "POST", apply_form.clone(), vec![form_ct], format!("idempotency_key={key}&position=0")),
        ("form forged token", "POST", apply_form.clone(), vec![form_ct], f(&key, &"cd".repeat(32))),
        ("form token for another key", "POST", apply_form.clone(), vec![form_ct], f("k2", &token)),
        ("form token for another request", "POST", apply_form.clone(), vec![form_ct], f(&other_key, &other_token)),
        ("form with the token in the query", "POST", format!("{apply_form}?csrf_token={token}&idempotency_key={key}"), vec![form_ct], "position=0".into()),
        ("GET on apply.json", "GET", format!("{apply_json}?csrf_token={token}&idempotency_key={key}"), vec![], String::new()),
        ("GET with override", "GET", apply_json.clone(), vec![("x-http-method-override", "POST"), json_ct], String::new()),
        ("PUT on apply.json", "PUT", apply_json.clone(), vec![json_ct], j(&key, &token)),
        ("PATCH on the form", "PATCH", apply_form.clone(), vec![form_ct], f(&key, &token)),
        ("DELETE on the form", "DELETE", apply_form.clone(), vec![form_ct], f(&key, &token)),
        ("trailing slash", "POST", format!("{apply_form}/"), vec![form_ct], f(&key, &token)),
        ("apply.json of another request", "POST", format!("{PREFIX}/replay/{other}/apply.json"), vec![json_ct], j(&key, &token)),
        // Cross-site: even a valid token does not replay from another site.
        ("cross-site form", "POST", apply_form.clone(), vec![form_ct, evil_origin, ("sec-fetch-site", "cross-site")], f(&key, &token)),
        ("foreign Origin (form)", "POST", apply_form.clone(), vec![form_ct, evil_origin], f(&key, &token)),
        ("foreign Origin (JSON)", "POST", apply_json.clone(), vec![json_ct, evil_origin], j(&key, &token)),
        ("null Origin", "POST", apply_form.clone(), vec![form_ct, ("origin", "null")], f(&key, &token)),
        ("same-site subdomain", "POST", apply_form.clone(), vec![form_ct, ("sec-fetch-site", "same-site")], f(&key, &token)),
        ("cross-site fetch (JSON)", "POST", apply_json.clone(), vec![json_ct, ("sec-fetch-site", "cross-site")], j(&key, &token)),
        ("Origin on another port", "POST", apply_json.clone(), vec![json_ct, ("origin", "http://127.0.0.1:1")], j(&key, &token)),
        ("Origin of another scheme", "POST", apply_json.clone(), vec![json_ct, ("origin", "ftp://127.0.0.1")], j(&key, &token)),
        ("cross-site, with a matching Origin", "POST", apply_json.clone(), vec![json_ct, ("sec-fetch-site", "cross-site"), ("origin", "http://evil.example"), ("host", "evil.example")], j(&key, &token)),
        ("Origin with credentials", "POST", apply_form.clone(), vec![form_ct, ("origin", "http://evil.example@127.0.0.1")], f(&key, &token)),
    ];
    for (label, method, target_path, headers, body) in &cases {
        let r = raw(&d, method, target_path, headers, body.as_bytes()).await;
        assert!((400..500).contains(&r.status), "{label}: {} {}", r.status, r.text());
        assert_eq!(target.pushes.load(Ordering::SeqCst), 0, "{label}: something was sent");
        assert_eq!(w.ch.count("SELECT count() FROM replay_links").await, 0, "{label}: links written");
    }
    assert_eq!(w.snapshot().await, before, "previews and refused applies wrote nothing");
    assert_eq!(w.host_state().await, host_before, "and changed nothing on the host");
    // The same-origin form post a browser makes with the preview's token does replay (so the
    // refusals above are the checks, not a broken route).
    // A modern browser behind a proxy that rewrites Host: Sec-Fetch-Site decides.
    let ok = raw(&d, "POST", &apply_form, &[form_ct, ("origin", "https://dash.example.com"), ("sec-fetch-site", "same-origin")], f(&key, &token).as_bytes()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(target.pushes.load(Ordering::SeqCst), 1);
    // An older browser (no Sec-Fetch-Site) on the dashboard's own origin, and behind a proxy
    // that says which host it was asked for: same key, so answered without sending again.
    let origin = format!("http://{d}");
    for h in [vec![form_ct, ("origin", origin.as_str())], vec![form_ct, ("origin", "https://dash.example.com"), ("x-forwarded-host", "dash.example.com")]] {
        let again = raw(&d, "POST", &apply_form, &h, f(&key, &token).as_bytes()).await;
        assert_eq!(again.status, 200, "{h:?}: {}", again.text());
        assert!(again.text().contains("nothing was sent again"));
    }
    assert_eq!(target.pushes.load(Ordering::SeqCst), 1);

    // When the audit links cannot be written, nothing is sent and ClickHouse's exception
    // (SQL, table and constraint names) stays in the log, out of the answer.
    w.ch.rows("ALTER TABLE replay_links ADD CONSTRAINT refuse_all CHECK 0").await;
    let p: Value = serde_json::from_slice(&raw(&d, "GET", &format!("{PREFIX}/replay/{id}/preview.json"), &[], b"").await.body).unwrap();
    let r = raw(&d, "POST", &apply_json, &[json_ct], j(&s(&p, "idempotency_key"), &s(&p, "csrf_token")).as_bytes()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let lower = r.text().to_lowercase();
    for leak in ["db::exception", "code: ", "constraint", "refuse_all", "replay_links", "insert"] {
        assert!(!lower.contains(leak), "the answer shows {leak:?}: {}", r.text());
    }
    assert_eq!(target.pushes.load(Ordering::SeqCst), 1, "nothing sent without links");
    eprintln!("{} refused applies", cases.len());
}

// ----- oversized and deeply nested bodies -------------------------------------------------

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

fn nested_objects(depth: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(depth * 7);
    for _ in 0..depth {
        v.extend_from_slice(b"{\"a\":");
    }
    v.extend_from_slice(b"1");
    v.extend(std::iter::repeat_n(b'}', depth));
    v
}

#[tokio::test(flavor = "current_thread")]
async fn oversized_and_deeply_nested_bodies_get_bounded_answers_everywhere() {
    let mut w = world().await;
    let (id, _) = w.seed().await;
    let target = w.counting();
    let d = w.dashboard(&ServeConfig::default(), Some(target.clone())).await;
    let deep = 100_000;
    let huge = 50 * 1024 * 1024;

    let mut bodies: Vec<(&str, Vec<u8>, &str, bool)> = vec![
        ("100,000-deep arrays", nested_arrays(deep), "application/json", false),
        ("100,000-deep objects", nested_objects(deep), "application/json", false),
        ("deep value inside a valid body", {
            let mut b = b"{\"client_id\":\"c\",\"mutations\":[],\"idempotency_key\":\"k\",\"csrf_token\":\"00\",\"x\":".to_vec();
            b.extend(nested_arrays(deep));
            b.push(b'}');
            b
        }, "application/json", false),
        ("50 MB of JSON", {
            let mut b = b"{\"client_id\":\"".to_vec();
            b.extend(std::iter::repeat_n(b'a', huge));
            b.extend_from_slice(b"\"}");
            b
        }, "application/json", false),
        ("50 MB chunked", vec![b'['; huge], "application/json", true),
        ("many form fields", "position=1&".repeat(150_000).into_bytes(), "application/x-www-form-urlencoded", false),
        ("many JSON keys", {
            let mut b = b"{\"client_id\":\"c\",\"mutations\":[]".to_vec();
            for i in 0..150_000 {
                b.extend_from_slice(format!(",\"k{i}\":0").as_bytes());
            }
            b.push(b'}');
            b
        }, "application/json", false),
        ("a 1.5 MB idempotency key", format!("idempotency_key={}&csrf_token=00", "k".repeat(1_500_000)).into_bytes(), "application/x-www-form-urlencoded", false),
    ];
    bodies.push(("deep positions", {
        let mut b = b"{\"idempotency_key\":\"k\",\"csrf_token\":\"00\",\"positions\":".to_vec();
        b.extend(nested_arrays(deep));
        b.push(b'}');
        b
    }, "application/json", false));

    let routes = [
        ("dashboard form apply", d.clone(), format!("{PREFIX}/replay/{id}")),
        ("dashboard JSON apply", d.clone(), format!("{PREFIX}/replay/{id}/apply.json")),
        ("sync push", w.sync.clone(), "/tether/push".to_owned()),
        ("sync pull", w.sync.clone(), "/tether/pull".to_owned()),
    ];
    let mut n = 0;
    for (route, addr, path) in &routes {
        for (label, body, ct, chunked) in &bodies {
            let mut h = vec![("content-type", *ct)];
            if *chunked {
                h.push(("transfer-encoding", "chunked"));
            }
            let r = raw(addr, "POST", path, &h, body).await;
            let what = format!("{route}: {label}");
            // A padded but valid push may be answered normally; nothing else is.
            let valid_push = path.starts_with("/tether/") && (label.starts_with("many JSON keys") || label.starts_with("deep value inside"));
            assert!(
                matches!(r.status, 400 | 403 | 413 | 415 | 422) || (valid_push && r.status == 200),
                "{what}: {} {}",
                r.status,
                &r.text()[..r.text().len().min(500)]
            );
            if body.len() > 20 * 1024 * 1024 {
                assert_eq!(r.status, 413, "{what}");
            }
            assert_no_leak(&what, &r.text(), b"");
            n += 1;
        }
    }
    // The read-only routes do not take bodies at all.
    for path in [String::new(), "/requests".into(), "/metrics".into(), "/search".into(), format!("/requests/{id}")] {
        let r = raw(&d, "POST", &format!("{PREFIX}{path}"), &[("content-type", "application/json")], &bodies[3].1).await;
        assert_eq!(r.status, 405, "POST {path}");
        n += 1;
    }
    assert_eq!(target.pushes.load(Ordering::SeqCst), 0);
    assert_eq!(w.ch.count("SELECT count() FROM replay_links").await, 0);

    // The capture pipeline survived all of it: a normal push afterwards is captured, and the
    // captured hostile requests open in the dashboard.
    w.push(CLIENT, vec![mutation(&ulid(), &ulid(), "Task", "create", json!({"title": "after the flood"}), 1_000)]).await;
    // Every record is written, or failed, or dropped (counted), before the guard stops it.
    let started = std::time::Instant::now();
    loop {
        let t = w.capture.stats().totals();
        if t.requests_written + t.records_failed + t.dropped + t.buffer_dropped >= t.enqueued {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the pipeline is stuck: {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("pipeline drained in {:?}: {:?}", started.elapsed(), w.capture.stats().totals());
    w.stop_capture();
    assert_eq!(w.ch.count("SELECT count() FROM sync_mutations WHERE position(payload, 'after the flood') > 0").await, 1, "the pipeline still captures");
    assert!(w.ch.count("SELECT count() FROM sync_requests WHERE outcome = 'error'").await > 10, "the hostile pushes were captured as errors");
    let ids = w.ch.rows("SELECT request_id FROM sync_requests ORDER BY started_at DESC LIMIT 40").await;
    for r in &ids {
        let rid = r["request_id"].as_str().unwrap();
        let page = raw(&d, "GET", &format!("{PREFIX}/requests/{rid}"), &[], b"").await;
        assert_eq!(page.status, 200, "{rid}");
        assert!(page.body.len() < 4 * 1024 * 1024, "a captured body is shown capped");
    }
    for path in ["", "/requests", "/conflicts", "/failures", "/metrics"] {
        assert_eq!(raw(&d, "GET", &format!("{PREFIX}{path}"), &[], b"").await.status, 200, "{path}");
    }
    eprintln!("{n} hostile bodies, {} captured requests reopened", ids.len());
}
