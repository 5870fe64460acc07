//! The HTML pages end to end: the reference server behind the capture layers (as in
//! tests/capture.rs), the real pipeline, a real ClickHouse, then the dashboard served on a
//! loopback port and read with reqwest. Every fetch checks the security headers and that the
//! body has no script and no inline style.

mod common;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat};
use common::{TestClickHouse, clickhouse};
use serde_json::{Value, json};
use tether_pro::config::CaptureConfig;
use tether_pro::dashboard::{self, DashboardState};
use tether_pro::pipeline::{self, CaptureGuard, ClickHouseWriter};
use tether_pro::sync::{self, Limits, SyncServer};
use tracing_subscriber::layer::SubscriberExt;

const PREFIX: &str = "/tether/dashboard";
const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";
const T1: &str = "01JAAAAAAAAAAAAAAAAAAAAAA1";
const T2: &str = "01JAAAAAAAAAAAAAAAAAAAAAA2";

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A captured reference server writing into a fresh, migrated database.
struct Env {
    ch: TestClickHouse,
    capture: pipeline::Capture,
    sync: String,
    guard: Option<CaptureGuard>,
    _subscriber: tracing::subscriber::DefaultGuard,
    http: reqwest::Client,
}

async fn env() -> Env {
    env_with(CaptureConfig { batch_interval_ms: 50, ..CaptureConfig::default() }).await
}

async fn env_with(cfg: CaptureConfig) -> Env {
    let ch = clickhouse().await;
    ch.migrate().await;
    let (capture, guard) = pipeline::start(&cfg, ClickHouseWriter::new(ch.client())).unwrap();
    let subscriber = tracing_subscriber::registry().with(capture.layer());
    let _subscriber = tracing::subscriber::set_default(subscriber);
    // The default batch limit (10,000) already allows the 5,000-mutation push; said explicitly.
    let server = SyncServer::builder().limits(Limits { max_batch: 10_000, ..Limits::default() }).build().unwrap();
    let sync = serve(sync::router(server).layer(capture.http_layer())).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Env { ch, capture, sync, guard: Some(guard), _subscriber, http }
}

impl Env {
    async fn send(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.sync))
            .header("content-type", "application/json")
            .header("x-tether-client-version", "ios/9.9.9")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn push(&self, client_id: &str, mutations: Vec<Value>) -> Value {
        let (status, v) = self.send("/tether/push", json!({"client_id": client_id, "mutations": mutations}).to_string().into_bytes()).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn pull(&self, client_id: &str) {
        let (status, v) = self.send("/tether/pull", json!({"client_id": client_id, "last_sync_cursor": null}).to_string().into_bytes()).await;
        assert_eq!(status, 200, "{v}");
    }

    /// Flushes the pipeline and serves the dashboard on its own port.
    async fn dashboard(&mut self) -> Dash {
        if let Some(mut g) = self.guard.take() {
            g.shutdown();
        }
        let base = serve(dashboard::mount(DashboardState::new(self.ch.client()))).await;
        Dash { base, http: self.http.clone() }
    }

    /// Request ids, oldest first.
    async fn request_ids(&self) -> Vec<String> {
        self.ch
            .rows("SELECT request_id FROM sync_requests ORDER BY started_at, request_id")
            .await
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn mutation(id: &str, entity: &str, model: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": model, "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

/// A fetched page.
struct Page {
    status: u16,
    body: String,
    location: Option<String>,
}

struct Dash {
    base: String,
    http: reqwest::Client,
}

impl Dash {
    /// GETs `path` (relative to the dashboard root) and checks what every response must carry.
    async fn get(&self, path: &str) -> Page {
        let url = format!("{}{PREFIX}{path}", self.base);
        let resp = self.http.get(&url).send().await.unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let header = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("content-security-policy").as_deref(), Some(dashboard::CSP), "CSP on {path}");
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "nosniff on {path}");
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "frame options on {path}");
        assert!(status < 500 || status == 503, "{status} on {path}");
        let location = header("location");
        let body = resp.text().await.unwrap();
        let lower = body.to_lowercase();
        assert!(!lower.contains("<script"), "a script element on {path}");
        assert!(!lower.contains(" style="), "an inline style on {path}");
        assert!(!lower.contains("<img src=x"), "an unescaped image on {path}");
        Page { status, body, location }
    }

    async fn ok(&self, path: &str) -> String {
        let p = self.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(p.body.starts_with("<!doctype html>"), "{path}");
        p.body
    }
}

/// Every `attr="<prefix>VALUE"` value in a body, in order.
fn values_after(body: &str, prefix: &str) -> Vec<String> {
    body.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &body[i + prefix.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

fn listed_requests(body: &str) -> Vec<String> {
    values_after(body, "<tr class=\"request\" id=\"req-")
}

fn unescape(s: &str) -> String {
    s.replace("&#38;", "&").replace("&amp;", "&")
}

/// The href of the `rel` link (`next`, `prev`), relative to the dashboard root.
fn rel_link(body: &str, rel: &str) -> Option<String> {
    let marker = format!("\" rel=\"{rel}\"");
    let end = body.find(&marker)?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    let href = unescape(&body[start..end]);
    Some(href.strip_prefix(PREFIX).expect("links start with the prefix").to_owned())
}

fn rfc3339_us(us: i64) -> String {
    DateTime::from_timestamp_micros(us).unwrap().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn every_page_shows_known_traffic() {
    let mut e = env().await;
    e.push(CLIENT, vec![
        mutation("01JM0000000000000000000001", T1, "Task", "create", json!({"title": "Buy milk", "metadata": {"tags": ["a"], "checklist": [{"done": false}]}}), 1_000),
        mutation("01JM0000000000000000000002", T2, "Task", "create", json!({"title": "Server title"}), 5_000),
    ])
    .await;
    let resp = e
        .push(CLIENT, vec![
            mutation("01JM0000000000000000000003", T1, "Task", "update", json!({"title": "Buy oat milk", "metadata": {"tags": ["a", "b"], "checklist": [{"done": true}]}}), 2_000),
            mutation("01JM0000000000000000000004", "01JAAAAAAAAAAAAAAAAAAAAAA3", "Task", "create", json!({"done": true}), 2_000),
            mutation("01JM0000000000000000000005", "01JAAAAAAAAAAAAAAAAAAAAAA4", "Task", "update", json!({"title": "x"}), 2_000),
            mutation("01JM0000000000000000000006", T2, "Task", "update", json!({"title": "Client title"}), 4_000),
            mutation("01JM0000000000000000000001", T1, "Task", "create", json!({"title": "Buy milk"}), 1_000),
        ])
        .await;
    assert_eq!(resp["applied"], json!(["01JM0000000000000000000003"]));
    e.pull(CLIENT).await;
    let d = e.dashboard().await;
    let ids = e.request_ids().await;
    assert_eq!(ids.len(), 3);
    let (first, mixed, pull) = (&ids[0], &ids[1], &ids[2]);

    // Overview: headline numbers, 288 cells with a tooltip each, sparklines, tables.
    let o = d.ok("").await;
    for label in ["Requests", "Mutations", "Conflict rate", "Failure rate", "Push p95"] {
        assert!(o.contains(label), "{label}");
    }
    assert_eq!(o.matches("<rect ").count(), 288);
    assert_eq!(o.matches("<title>").count(), 289, "the page title and one tooltip per cell");
    assert_eq!(o.matches(" requests, ").count(), 288, "every tooltip counts requests");
    assert!(o.contains("<div class=\"label\">Requests</div><div class=\"value\">3</div>"));
    assert!(o.contains("<div class=\"label\">Mutations</div><div class=\"value\">7</div>"));
    assert_eq!(o.matches("<polyline ").count(), 2);
    assert!(o.contains(&format!("href=\"{PREFIX}/clients/{CLIENT}\"")), "top clients link to the timeline");
    assert!(o.contains("><bdi>Task</bdi></a>"), "top models, isolated");
    assert!(o.contains("validation_failed") && o.contains("not_found"), "latest failures");
    assert!(o.contains(&format!("href=\"{PREFIX}/requests/{mixed}#m-3\"")), "latest conflict links to its request");
    assert!(o.contains("14.29%"), "1 conflict in 7 mutations");

    // The list: all three, newest first, each linking to its detail.
    let list = d.ok("/requests").await;
    assert_eq!(listed_requests(&list), vec![pull.clone(), mixed.clone(), first.clone()]);
    assert!(list.contains(&format!("href=\"{PREFIX}/requests/{mixed}\"")));
    assert!(list.contains("<form class=\"filters\" method=\"get\""));

    // Detail: counts, reasons, bodies, validation messages, diffs by class.
    let detail = d.ok(&format!("/requests/{mixed}")).await;
    assert!(detail.contains("The title field is required."), "validation message");
    assert!(detail.contains("<tr class=\"changed\"><td class=\"path\"><code><bdi>title</bdi></code></td><td>changed</td><td class=\"old\"><code><bdi>&#34;Buy milk&#34;</bdi></code></td><td class=\"new\"><code><bdi>&#34;Buy oat milk&#34;</bdi></code>"));
    assert!(detail.contains("<tr class=\"changed\"><td class=\"path\"><code><bdi>metadata.checklist[0].done</bdi></code></td><td>changed</td><td class=\"old\"><code><bdi>false</bdi></code></td><td class=\"new\"><code><bdi>true</bdi></code>"));
    assert!(detail.contains("<tr class=\"added\"><td class=\"path\"><code><bdi>metadata.tags[1]</bdi></code>"));
    assert!(detail.contains("<code><bdi>validation_failed</bdi></code>: 1") && detail.contains("<code><bdi>not_found</bdi></code>: 1") && detail.contains("<code><bdi>duplicate</bdi></code>: 1"));
    assert!(detail.contains("<details>") && detail.contains("Request body") && detail.contains("Response body"));
    assert!(detail.contains("&#34;Buy oat milk&#34;"), "pretty request JSON");
    // The stored envelope has no payloads (issue 15); the page puts them back.
    assert!(detail.contains("&#34;payload&#34;: {"), "the request body shows the payloads from the mutation rows");
    assert!(detail.contains("page 1 of 1"));
    assert_eq!(values_after(&detail, "<article class=\"mutation o-"), vec!["applied", "rejected", "rejected", "conflict", "duplicate"]);
    assert!(detail.contains(&format!("href=\"{PREFIX}/clients/{CLIENT}\"")));
    assert!(detail.contains("ios/9.9.9"));
    let pull_page = d.ok(&format!("/requests/{pull}")).await;
    assert!(pull_page.contains("snapshots") && !pull_page.contains("id=\"mutations\""));

    // Conflicts: client payload against the server state, the diff, the counts.
    let c = d.ok("/conflicts").await;
    assert!(c.contains("Server title") && c.contains("Client title"));
    // Each conflict is explained by the write it lost to (T2's create, client time 5 s; the
    // update was made at 4 s), on the conflicts page and on its request's page.
    let why = format!(
        "The server&#39;s version won; this update was not applied. Client <bdi>{CLIENT}</bdi>&#39;s write (mutation 01JM0000000000000000000002, version 1, arrived "
    );
    let why = why.replace("<bdi>", "").replace("</bdi>", "");
    let earlier = "gave the record its updated_at; this edit was made 1 s earlier by the clocks";
    for page in [&c, &detail] {
        assert!(page.contains(&why) && page.contains(earlier), "no explanation in {page}");
        assert!(page.contains(&format!("href=\"{PREFIX}/requests/{first}#m-1\">mutation <code><bdi>01JM0000000000000000000002</bdi></code></a>")));
    }
    assert!(c.contains("<pre class=\"json client\">") && c.contains("<pre class=\"json server\">"));
    assert!(c.contains("<tr class=\"changed\"><td class=\"path\"><code><bdi>title</bdi></code>"));
    assert!(c.contains(&format!("href=\"{PREFIX}/requests/{mixed}#m-3\"")));
    assert!(c.contains("><bdi>Task</bdi></a></td><td class=\"num\">1</td>"), "per-model count");
    assert!(c.contains(&format!("<code><bdi>{CLIENT}</bdi></code></a></td><td class=\"num\">1</td>")), "per-client count");

    // Failures: grouped by reason x model x client, with example and drill-down.
    let f = d.ok("/failures").await;
    assert_eq!(f.matches("<tr class=\"failure\">").count(), 2, "validation_failed and not_found");
    assert!(f.contains("<code class=\"reason\"><bdi>validation_failed</bdi></code>") && f.contains("<code class=\"reason\"><bdi>not_found</bdi></code>"));
    assert!(f.contains(&format!("href=\"{PREFIX}/requests?client_id={CLIENT}&#38;model=Task\"")));
    assert!(f.contains(&format!("href=\"{PREFIX}/requests/{mixed}\"><code><bdi>01JM0000000000000000000004</bdi></code>")));
    for w in ["1h", "6h", "24h", "7d"] {
        d.ok(&format!("/failures?window={w}")).await;
        d.ok(&format!("/conflicts?window={w}")).await;
        d.ok(&format!("?window={w}")).await;
    }

    // The client's timeline: every request, newest first, mutations expandable.
    let t = d.ok(&format!("/clients/{CLIENT}")).await;
    assert_eq!(values_after(&t, "<li class=\"entry o-").len(), 3);
    assert_eq!(values_after(&t, "\" id=\"req-"), vec![pull.clone(), mixed.clone(), first.clone()]);
    assert!(t.contains("<summary>Mutations (5)</summary>") && t.contains("01JM0000000000000000000006"));

    // The search box.
    let loc = |p: Page| {
        assert_eq!(p.status, 303);
        p.location.unwrap()
    };
    assert_eq!(loc(d.get(&format!("/search?q={mixed}")).await), format!("{PREFIX}/requests/{mixed}"));
    assert_eq!(loc(d.get("/search?q=01JM0000000000000000000004").await), format!("{PREFIX}/requests?mutation_id=01JM0000000000000000000004"));
    // An entity id (alone, as `Model/id`, or with `model=`) opens the record's history.
    assert_eq!(loc(d.get(&format!("/search?q={T2}")).await), format!("{PREFIX}/records/Task/{T2}"));
    assert_eq!(loc(d.get(&format!("/search?q=Task/{T2}")).await), format!("{PREFIX}/records/Task/{T2}"));
    assert_eq!(loc(d.get(&format!("/search?q={T2}&model=Task")).await), format!("{PREFIX}/records/Task/{T2}"));
    assert_eq!(loc(d.get(&format!("/search?q=Note/{T2}")).await), format!("{PREFIX}/requests?client_id=Note%2F{T2}"), "no such record");
    assert_eq!(loc(d.get(&format!("/search?q={CLIENT}")).await), format!("{PREFIX}/requests?client_id={CLIENT}"));
    assert_eq!(loc(d.get("/search?q=").await), format!("{PREFIX}/requests"));

    // The stylesheet.
    let resp = reqwest::get(format!("{}{PREFIX}/assets/app.css", d.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/css; charset=utf-8");
    assert!(resp.text().await.unwrap().contains("tr.changed"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_5000_mutation_push_pages_and_the_request_list_pages_by_cursor() {
    let mut e = env().await;
    let big: Vec<Value> = (0..5_000).map(|i| mutation(&ulid(), &ulid(), "Task", "create", json!({"title": format!("task {i}")}), 1_000)).collect();
    let resp = e.push(CLIENT, big).await;
    assert_eq!(resp["applied"].as_array().unwrap().len(), 5_000);
    for i in 0..120 {
        let client = format!("01JCCCCCCCCCCCCCCCCCCCCCD{}", i % 3);
        e.push(&client, vec![mutation(&ulid(), &ulid(), "Note", "create", json!({"body": format!("note {i}")}), 1_000)]).await;
    }
    let d = e.dashboard().await;
    let ids = e.request_ids().await;
    assert_eq!(ids.len(), 121);
    let big_id = &ids[0];
    let size = DashboardState::DEFAULT_MUTATIONS_PAGE_SIZE;

    let positions = |body: &str| -> Vec<u32> { values_after(body, "\" id=\"m-").iter().map(|p| p.parse().unwrap()).collect() };
    let p1 = d.ok(&format!("/requests/{big_id}")).await;
    assert_eq!(positions(&p1), (0..50).collect::<Vec<_>>());
    assert!(p1.contains("page 1 of 100"));
    assert!(rel_link(&p1, "prev").is_none());
    assert_eq!(rel_link(&p1, "next").unwrap(), format!("/requests/{big_id}?page=2#mutations"));
    let last = d.ok(&format!("/requests/{big_id}?page=100")).await;
    assert_eq!(positions(&last), (4950..5000).collect::<Vec<_>>());
    assert!(last.contains("page 100 of 100") && rel_link(&last, "next").is_none());
    assert_eq!(rel_link(&last, "prev").unwrap(), format!("/requests/{big_id}?page=99#mutations"));
    for page in [2, 37, 99] {
        let body = d.ok(&format!("/requests/{big_id}?page={page}")).await;
        let got = positions(&body);
        assert!(got.len() <= size);
        assert_eq!(got, ((page - 1) * 50..page * 50).collect::<Vec<u32>>());
    }
    assert_eq!(d.get(&format!("/requests/{big_id}?page=101")).await.status, 404);
    // The timeline lists a bounded number of the big push's mutations, and says how many more.
    let t = d.ok(&format!("/clients/{CLIENT}")).await;
    assert!(t.contains("4980 more on"));

    // The list walks back by cursor: every request exactly once, at most 50 per page.
    let mut seen = Vec::new();
    let mut path = Some("/requests".to_owned());
    let mut pages = 0;
    while let Some(p) = path {
        let body = d.ok(&p).await;
        let rows = listed_requests(&body);
        assert!(!rows.is_empty() && rows.len() <= 50, "{} rows", rows.len());
        seen.extend(rows);
        path = rel_link(&body, "next");
        pages += 1;
        assert!(pages <= 5);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 121);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 121, "no request twice");
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    // The cursor keeps the filters.
    let first = d.ok("/requests?model=Note").await;
    let next = rel_link(&first, "next").unwrap();
    assert!(next.contains("model=Note&before="), "{next}");
    let mut notes = listed_requests(&first);
    let mut path = Some(next);
    while let Some(p) = path {
        let body = d.ok(&p).await;
        notes.extend(listed_requests(&body));
        path = rel_link(&body, "next");
    }
    assert_eq!(notes.len(), 120);
    assert_eq!(notes.iter().collect::<BTreeSet<_>>().len(), 120);
    assert!(!notes.contains(big_id));
}

#[tokio::test(flavor = "current_thread")]
async fn every_filter_of_the_request_list_narrows() {
    let mut e = env().await;
    let (a, b, c) = ("01JCCCCCCCCCCCCCCCCCCCCCA1", "01JCCCCCCCCCCCCCCCCCCCCCB1", "01JCCCCCCCCCCCCCCCCCCCCCC9");
    let t9 = "01JAAAAAAAAAAAAAAAAAAAAAA9";
    let special = "01JM0000000000000000000S01";
    e.push(a, vec![mutation(&ulid(), &ulid(), "Task", "create", json!({"title": "ok"}), 1_000)]).await;
    e.push(b, vec![mutation(&ulid(), &ulid(), "Project", "create", json!({"color": "red"}), 1_000)]).await;
    e.push(a, vec![
        mutation(special, &ulid(), "Note", "create", json!({"body": "n"}), 1_000),
        mutation(&ulid(), &ulid(), "Task", "update", json!({"title": "gone"}), 1_000),
    ])
    .await;
    e.pull(b).await;
    e.push(c, vec![mutation(&ulid(), t9, "Task", "create", json!({"title": "v1"}), 5_000)]).await;
    e.push(c, vec![mutation(&ulid(), t9, "Task", "update", json!({"title": "old"}), 1_000)]).await;
    let (status, _) = e.send("/tether/push", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    let d = e.dashboard().await;

    let reqs = e.ch.rows("SELECT request_id, kind, client_id, outcome, toUnixTimestamp64Micro(started_at) AS us FROM sync_requests ORDER BY started_at DESC, request_id DESC").await;
    let muts = e.ch.rows("SELECT request_id, model, mutation_id, entity_id FROM sync_mutations").await;
    assert_eq!(reqs.len(), 7);
    let all: Vec<String> = reqs.iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    let us: HashMap<String, i64> = reqs.iter().map(|r| (r["request_id"].as_str().unwrap().to_owned(), r["us"].as_str().map_or_else(|| r["us"].as_i64().unwrap(), |s| s.parse().unwrap()))).collect();
    let by = |col: &str, v: &str| -> Vec<String> { reqs.iter().filter(|r| r[col] == v).map(|r| r["request_id"].as_str().unwrap().to_owned()).collect() };
    let via_mutation = |col: &str, v: &str| -> Vec<String> {
        let hit: BTreeSet<&str> = muts.iter().filter(|m| m[col] == v).map(|m| m["request_id"].as_str().unwrap()).collect();
        all.iter().filter(|id| hit.contains(id.as_str())).cloned().collect()
    };
    let mid = us[&all[3]];
    let cases: Vec<(String, Vec<String>)> = vec![
        ("kind=pull".into(), by("kind", "pull")),
        ("kind=push".into(), by("kind", "push")),
        ("outcome=ok".into(), by("outcome", "ok")),
        ("outcome=rejected".into(), by("outcome", "rejected")),
        ("outcome=partial".into(), by("outcome", "partial")),
        ("outcome=conflict".into(), by("outcome", "conflict")),
        ("outcome=error".into(), by("outcome", "error")),
        (format!("client_id={a}"), by("client_id", a)),
        ("model=Project".into(), via_mutation("model", "Project")),
        ("model=Note".into(), via_mutation("model", "Note")),
        (format!("mutation_id={special}"), via_mutation("mutation_id", special)),
        (format!("entity_id={t9}"), via_mutation("entity_id", t9)),
        (format!("from={}", enc(&rfc3339_us(mid))), all.iter().filter(|id| us[*id] >= mid).cloned().collect()),
        (format!("to={}", enc(&rfc3339_us(mid))), all.iter().filter(|id| us[*id] < mid).cloned().collect()),
        (
            format!("kind=push&client_id={a}&model=Task&from={}", enc(&rfc3339_us(us[&all[6]]))),
            via_mutation("model", "Task").into_iter().filter(|id| by("client_id", a).contains(id)).collect(),
        ),
        // An empty form field is no filter.
        ("kind=&outcome=&client_id=&model=&mutation_id=&entity_id=&from=&to=".into(), all.clone()),
    ];
    for (query, expected) in cases {
        let body = d.ok(&format!("/requests?{query}")).await;
        let got = listed_requests(&body);
        assert_eq!(got, expected, "{query}");
        if !query.starts_with("kind=&") {
            assert!(!got.is_empty() && got.len() < all.len(), "{query} narrows: {got:?}");
        }
    }
    // Sanity of the traffic itself: each outcome happened once or more.
    for o in ["ok", "partial", "rejected", "conflict", "error"] {
        assert!(!by("outcome", o).is_empty(), "{o}");
    }
    assert_eq!(via_mutation("mutation_id", special).len(), 1);
    // The form shows the current filter back.
    let body = d.ok(&format!("/requests?outcome=conflict&client_id={c}")).await;
    assert!(body.contains("<option value=\"conflict\" selected>"));
    assert!(body.contains(&format!("name=\"client_id\" value=\"{c}\"")));
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_ids_are_404_bad_parameters_400_never_500() {
    let mut e = env().await;
    e.push(CLIENT, vec![mutation(&ulid(), &ulid(), "Task", "create", json!({"title": "one"}), 1_000)]).await;
    let d = e.dashboard().await;
    let id = e.request_ids().await.remove(0);
    let long = "x".repeat(2_000);
    let drop = enc("'; DROP TABLE sync_requests; --");
    let cases: Vec<(String, u16)> = vec![
        ("?window=2h".into(), 400),
        (format!("?window={drop}"), 400),
        ("/requests?kind=bogus".into(), 400),
        ("/requests?outcome=maybe".into(), 400),
        (format!("/requests?outcome={drop}"), 400),
        ("/requests?from=yesterday".into(), 400),
        ("/requests?to=2026-13-01T00:00:00Z".into(), 400),
        ("/requests?from=2026-05-18T10:00:00".into(), 400),
        ("/requests?from=9999-01-01T00:00:00Z".into(), 400),
        ("/requests?from=2026-05-18T10:00:00Z&to=2026-05-18T09:00:00Z".into(), 400),
        ("/requests?before=zz".into(), 400),
        ("/requests?before=0123".into(), 400),
        (format!("/requests?before={}", "f".repeat(60)), 400),
        (format!("/requests?before={drop}"), 400),
        (format!("/requests?client_id={long}"), 400),
        ("/requests?kind=%FF".into(), 400),
        (format!("/requests/{}", ulid()), 404),
        ("/requests/nope".into(), 404),
        (format!("/requests/{drop}"), 404),
        (format!("/requests/{long}"), 404),
        ("/requests/%FF%FE".into(), 400),
        (format!("/requests/{id}?page=0"), 400),
        (format!("/requests/{id}?page=abc"), 400),
        (format!("/requests/{id}?page=-1"), 400),
        (format!("/requests/{id}?page=1.5"), 400),
        (format!("/requests/{id}?page=99999999999999999999999"), 400),
        (format!("/requests/{id}?page=2"), 404),
        ("/conflicts?window=2h".into(), 400),
        ("/conflicts?from=x&to=y".into(), 400),
        ("/conflicts?window=24h&from=2026-05-18T10:00:00Z".into(), 400),
        ("/conflicts?from=2026-01-01T00:00:00Z&to=2026-05-01T00:00:00Z".into(), 400),
        ("/conflicts?from=2026-05-18T10:00:00Z".into(), 400),
        ("/conflicts?from=9999-01-01T00:00:00Z&to=9999-01-02T00:00:00Z".into(), 400),
        ("/conflicts?before=nothex".into(), 400),
        ("/failures?window=forever".into(), 400),
        ("/failures?to=2026-05-18T10:00:00Z".into(), 400),
        (format!("/failures?window={drop}"), 400),
        (format!("/clients/{}", ulid()), 404),
        (format!("/clients/{drop}"), 404),
        (format!("/clients/{CLIENT}?before=zz"), 400),
        (format!("/clients/{CLIENT}?from=later"), 400),
        (format!("/clients/{CLIENT}?from=2026-05-18T10:00:00Z&to=2026-05-18T10:00:00Z"), 400),
        (format!("/clients/{long}"), 400),
        (format!("/search?q={long}"), 400),
    ];
    for (path, expected) in &cases {
        let p = d.get(path).await;
        assert_eq!(p.status, *expected, "{path}: {}", p.body);
        assert!(p.body.starts_with("<!doctype html>"), "{path} answers an HTML page");
        assert!(p.body.contains(&format!("<h1>{expected} · ")), "{path}");
    }
    // The same routes with good values still answer.
    d.ok(&format!("/requests/{id}?page=1")).await;
    d.ok(&format!("/clients/{CLIENT}?from=2000-01-01T00:00:00Z")).await;
    d.ok("/conflicts?from=2026-05-18T10:00:00Z&to=2026-05-18T11:00:00Z").await;
    d.ok("/requests?from=2026-05-18T10:00:00%2B02:00").await;
    // A known client id with an empty range is an empty timeline, not a 404.
    d.ok(&format!("/clients/{CLIENT}?to=2000-01-01T00:00:00Z")).await;
    assert_eq!(e.ch.count("SELECT count() FROM sync_requests").await, 1, "nothing was dropped");
}

#[tokio::test(flavor = "current_thread")]
async fn clickhouse_unavailable_is_a_503_page() {
    // Nothing listens on port 1.
    let client = clickhouse::Client::default().with_url("http://127.0.0.1:1").with_database("tether");
    let base = serve(dashboard::mount(DashboardState::new(client))).await;
    let d = Dash { base, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap() };
    for path in ["", "/requests", "/requests/01JAAAAAAAAAAAAAAAAAAAAAA1", "/conflicts", "/failures", "/clients/x", "/search?q=x"] {
        let p = d.get(path).await;
        assert_eq!(p.status, 503, "{path}");
        assert!(p.body.contains("ClickHouse is unavailable"), "{path}");
    }
    // Bad input is still a 400, before any query.
    assert_eq!(d.get("/requests?kind=x").await.status, 400);
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_strings_render_escaped_and_sql_in_them_does_nothing() {
    let mut e = env().await;
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x onerror=alert(1)>";
    let sql = "'; DROP TABLE sync_requests; --";
    let quotes = "It's \"quoted\" & <b>bold</b>";
    let entity = "01JAAAAAAAAAAAAAAAAAAAAAB1";
    // Hostile client ids, titles, model names and mutation ids.
    e.push(script, vec![
        mutation(&ulid(), entity, "Task", "create", json!({"title": img}), 5_000),
        mutation(&ulid(), &ulid(), sql, "create", json!({"title": "x"}), 1_000),
    ])
    .await;
    e.push(img, vec![
        mutation(&ulid(), entity, "Task", "update", json!({"title": script, "notes": quotes}), 1_000),
        mutation(script, &ulid(), "Task", "create", json!({"title": sql}), 1_000),
    ])
    .await;
    e.push(sql, vec![
        mutation(&ulid(), &ulid(), script, "create", json!({"title": script}), 1_000),
        mutation(&ulid(), &ulid(), img, "create", json!({"title": quotes}), 1_000),
        mutation(&ulid(), &ulid(), "Task", "create", json!({"title": quotes, "notes": script}), 1_000),
    ])
    .await;
    e.pull(script).await;
    let d = e.dashboard().await;
    let ids = e.request_ids().await;
    assert_eq!(ids.len(), 4);

    let escaped_script = "&#60;script&#62;alert(1)&#60;/script&#62;";
    let escaped_img = "&#34;&#62;&#60;img src=x onerror=alert(1)&#62;";
    let escaped_sql = "&#39;; DROP TABLE sync_requests; --";
    let mut paths = vec!["".to_owned(), "/requests".to_owned(), "/conflicts".to_owned(), "/failures".to_owned()];
    paths.extend(ids.iter().map(|id| format!("/requests/{id}")));
    for s in [script, img, sql, quotes] {
        paths.push(format!("/clients/{}", enc(s)));
        paths.push(format!("/requests?client_id={}", enc(s)));
        paths.push(format!("/requests?model={}", enc(s)));
        paths.push(format!("/requests?entity_id={}", enc(s)));
        paths.push(format!("/requests?mutation_id={}", enc(s)));
    }
    let mut all = String::new();
    for p in &paths {
        let page = d.get(p).await;
        assert!(page.status == 200 || (page.status == 404 && p.starts_with("/clients/") && p.contains("It")), "{p}: {}", page.status);
        assert!(!page.body.contains("<script>alert") && !page.body.contains("<img src=x") && !page.body.contains("<b>bold"), "{p}");
        all.push_str(&page.body);
    }
    for (what, escaped) in [("script", escaped_script), ("img", escaped_img), ("sql", escaped_sql)] {
        assert!(all.contains(escaped), "the escaped {what} string is shown");
    }
    assert!(all.contains("It&#39;s \\&#34;quoted\\&#34; &#38; &#60;b&#62;bold&#60;/b&#62;"), "quotes in JSON, escaped");
    // The hostile client ids are found through their own (encoded) links.
    let list = d.ok("/requests").await;
    for s in [script, img, sql] {
        assert!(list.contains(&format!("href=\"{PREFIX}/clients/{}\"", enc(s))), "{s}");
        let t = d.ok(&format!("/clients/{}", enc(s))).await;
        assert!(!listed_requests(&d.ok(&format!("/requests?client_id={}", enc(s))).await).is_empty());
        assert!(t.contains("class=\"entry "));
    }
    // Filters with the SQL fragment match exactly their own rows and drop nothing.
    assert_eq!(listed_requests(&d.ok(&format!("/requests?model={}", enc(sql))).await), vec![ids[0].clone()]);
    assert_eq!(listed_requests(&d.ok(&format!("/requests?client_id={}", enc(sql))).await), vec![ids[2].clone()]);
    assert_eq!(listed_requests(&d.ok(&format!("/requests?mutation_id={}", enc(script))).await), vec![ids[1].clone()]);
    // Search with hostile terms redirects to an encoded location.
    for s in [script, img, sql] {
        let p = d.get(&format!("/search?q={}", enc(s))).await;
        assert_eq!(p.status, 303);
        let loc = p.location.unwrap();
        assert!(!loc.contains('<') && !loc.contains('"') && !loc.contains('\'') && !loc.contains(' '), "{loc}");
    }
    assert_eq!(e.ch.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name IN ('sync_requests', 'sync_mutations')").await, 2);
    assert_eq!(e.ch.count("SELECT count() FROM sync_requests").await, 4);
    assert_eq!(e.ch.count("SELECT count() FROM sync_mutations").await, 7);
}

#[tokio::test(flavor = "current_thread")]
async fn every_response_carries_the_security_headers() {
    let mut e = env().await;
    e.push(CLIENT, vec![mutation(&ulid(), &ulid(), "Task", "create", json!({"title": "a"}), 1_000)]).await;
    let d = e.dashboard().await;
    let id = e.request_ids().await.remove(0);
    // `get` asserts CSP, nosniff and DENY, and no script or inline style in the body.
    for (path, status) in [
        ("".to_owned(), 200),
        ("/requests".to_owned(), 200),
        (format!("/requests/{id}"), 200),
        ("/conflicts".to_owned(), 200),
        ("/failures".to_owned(), 200),
        (format!("/clients/{CLIENT}"), 200),
        ("/search?q=x".to_owned(), 303),
        ("/assets/app.css".to_owned(), 200),
        ("/requests?kind=x".to_owned(), 400),
        ("/requests/nope".to_owned(), 404),
        ("/metrics".to_owned(), 200),
    ] {
        assert_eq!(d.get(&path).await.status, status, "{path}");
    }
    // Every page links its stylesheet and nothing off-site.
    let body = d.ok("").await;
    assert!(body.contains(&format!("<link rel=\"stylesheet\" href=\"{PREFIX}/assets/app.css\">")));
    assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"));
    for nav in ["Overview", "Requests", "Conflicts", "Failures"] {
        assert!(body.contains(&format!(">{nav}</a>")));
    }
    assert!(body.contains(&format!("action=\"{PREFIX}/search\"")));
}

/// Issue 12, input 7: a client id holding U+202E (right-to-left override) and a zero-width
/// space cannot flip or hide text on the request list, the request page or the client page:
/// the id is isolated in `<bdi>` and the invisible characters are shown as `⟨U+XXXX⟩`.
#[tokio::test(flavor = "current_thread")]
async fn bidi_and_invisible_characters_in_user_text_are_isolated_and_shown() {
    let mut e = env().await;
    let client = "phone\u{202E}1v\u{200B}";
    e.push(client, vec![mutation(&ulid(), &ulid(), "Task\u{202E}", "create", json!({"title": "t\u{202E}x"}), 1_000)]).await;
    let d = e.dashboard().await;
    let id = e.request_ids().await[0].clone();
    let shown = "phone<span class=\"invisible\" title=\"invisible character\">⟨U+202E⟩</span>1v<span class=\"invisible\" title=\"invisible character\">⟨U+200B⟩</span>";
    for path in ["/requests".to_owned(), format!("/requests/{id}"), format!("/clients/{}", enc(client))] {
        let page = d.ok(&path).await;
        assert!(!page.contains('\u{202E}') && !page.contains('\u{200B}'), "{path}: a raw override or zero-width space reached the page");
        assert!(page.contains(&format!("<bdi>{shown}</bdi>")), "{path}: the client id is isolated and its invisible characters shown");
    }
    let detail = d.ok(&format!("/requests/{id}")).await;
    assert!(detail.contains("<bdi>Task<span class=\"invisible\" title=\"invisible character\">⟨U+202E⟩</span></bdi>"), "the model too");
}

/// Issue 13: the overview page shows the capture pipeline's own health when the dashboard runs
/// in the capturing process (written, spooled, dropped by reason, last successful insert),
/// and the figures are the pipeline's counters, which match ClickHouse.
#[tokio::test(flavor = "current_thread")]
async fn the_overview_page_shows_the_capture_pipelines_health() {
    let mut e = env().await;
    e.push(CLIENT, vec![mutation(&ulid(), T1, "Task", "create", json!({"title": "a"}), 1_700_000_000_000)]).await;
    e.pull(CLIENT).await;
    e.push(CLIENT, vec![mutation(&ulid(), T2, "Task", "create", json!({"title": "b"}), 1_700_000_000_001)]).await;
    e.guard.take().unwrap().shutdown();
    let written = e.ch.count("SELECT count() FROM sync_requests").await;
    assert_eq!(written, 3);
    let stats = e.capture.stats().clone();
    let t = stats.totals();
    let last = chrono::DateTime::from_timestamp_millis(t.last_insert_unix_ms as i64).unwrap().to_rfc3339_opts(SecondsFormat::Secs, true);
    let with = serve(dashboard::mount(DashboardState::new(e.ch.client()).with_capture(stats))).await;
    let html = e.http.get(format!("{with}{PREFIX}")).send().await.unwrap().text().await.unwrap();
    let row = |label: &str, value: &str| format!("<td>{label}</td><td class=\"num\">{value}</td>");
    assert_eq!((t.captured(), t.accounted()), (3, (3, 0, 0)), "{t:?}");
    for (label, value) in [
        ("captured", "3"),
        ("written to ClickHouse", "3"),
        ("in the disk spool", "0"),
        ("dropped", "0"),
        ("&nbsp;&nbsp;bad_data", "0"),
        ("&nbsp;&nbsp;queue_full", "0"),
        ("&nbsp;&nbsp;shutdown", "0"),
        ("in memory (queue and batches)", "0"),
        ("last successful insert", last.as_str()),
    ] {
        assert!(html.contains(&row(label, value)), "overview lacks {label} = {value}:\n{html}");
    }
    // The same totals as the metrics API's requests (the page reads the same window).
    assert!(html.contains("<div class=\"value\">3</div>"), "{html}");
    let without = serve(dashboard::mount(DashboardState::new(e.ch.client()))).await;
    let html = e.http.get(format!("{without}{PREFIX}")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("does not run in the capturing process"), "{html}");
}

/// Issue 15's capture policy on the page (found by review: an applied mutation without its
/// detail read "No field changes." and "not reported"): under `capture.applied = "counts"`
/// the applied mutation's card says its detail was not kept, the rebuilt request body says so
/// at its payload, and the rejected one shows everything.
#[tokio::test(flavor = "current_thread")]
async fn a_mutation_whose_detail_was_not_kept_says_so() {
    let cfg = CaptureConfig { batch_interval_ms: 50, applied: tether_pro::config::AppliedDetail::Counts, ..CaptureConfig::default() };
    let mut e = env_with(cfg).await;
    let applied = ulid();
    e.push(CLIENT, vec![
        mutation(&applied, &ulid(), "Task", "create", json!({"title": "kept only as a row"}), 1_000),
        mutation(&ulid(), &ulid(), "Task", "update", json!({"title": "refused and kept whole"}), 1_000),
    ])
    .await;
    let d = e.dashboard().await;
    let id = e.request_ids().await.remove(0);
    let page = d.ok(&format!("/requests/{id}")).await;
    assert!(page.contains("Payload, states and diff not kept"), "{page}");
    assert!(!page.contains("No field changes."), "an applied mutation without its diff claims no change");
    assert!(!page.contains("kept only as a row"), "the payload was not kept, so it cannot be shown");
    assert!(page.contains("&#34;[not kept: capture.applied]&#34;"), "the rebuilt request body marks the payload");
    assert!(page.contains("refused and kept whole"), "a rejected mutation keeps its payload");
}

/// Issue 17: a client sending a timestamp two hours ahead and an invalid one is listed on the
/// overview under suspicious clocks, and its page says what its clock did.
#[tokio::test(flavor = "current_thread")]
async fn a_client_with_a_clock_ahead_is_named_on_the_overview_and_its_page() {
    let mut e = env().await;
    let now = chrono::Utc::now().timestamp_millis();
    e.push("01JCCCCCCCCCCCCCCCCCCCCCK1", vec![
        mutation(&ulid(), "01JAAAAAAAAAAAAAAAAAAAAAK1", "Task", "create", json!({"title": "from the future"}), now + 2 * 3_600_000),
        mutation(&ulid(), "01JAAAAAAAAAAAAAAAAAAAAAK3", "Task", "create", json!({"title": "offline"}), now - 3_600_000),
    ])
    .await;
    // The server refuses the whole push (422); its mutation is captured all the same.
    let invalid = json!({"client_id": "01JCCCCCCCCCCCCCCCCCCCCCK1", "mutations": [
        {"mutation_id": ulid(), "entity_id": "01JAAAAAAAAAAAAAAAAAAAAAK2", "model": "Task", "operation": "create", "payload": {"title": "x"}, "version": 1, "timestamp": "yesterday"}]});
    assert_eq!(e.send("/tether/push", invalid.to_string().into_bytes()).await.0, 422);
    e.push(CLIENT, vec![mutation(&ulid(), "01JAAAAAAAAAAAAAAAAAAAAAK4", "Task", "create", json!({"title": "fine"}), now)]).await;
    // Every timestamp of this one is ahead: its longest "delay" is negative and says so.
    e.push("01JCCCCCCCCCCCCCCCCCCCCCK9", vec![mutation(&ulid(), "01JAAAAAAAAAAAAAAAAAAAAAK5", "Task", "create", json!({"title": "ahead"}), now + 3_600_000)]).await;
    let d = e.dashboard().await;
    let o = d.ok("").await;
    assert!(o.contains("Clients with suspicious clocks"), "{o}");
    let section = &o[o.find("Clients with suspicious clocks").unwrap()..];
    let section = &section[..section.find("</table>").unwrap()];
    assert!(section.contains("01JCCCCCCCCCCCCCCCCCCCCCK1") && !section.contains(CLIENT), "{section}");
    assert!(section.contains("<td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">1 h 59 min</td>") || section.contains("<td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">2 h 0 min</td>"), "{section}");
    let c = d.ok("/clients/01JCCCCCCCCCCCCCCCCCCCCCK1").await;
    assert!(c.contains("Over 3 mutations, the push arrived a median"), "{c}");
    assert!(c.contains("<strong>1 timestamped more than a minute after they arrived</strong>"), "{c}");
    assert!(c.contains("<strong>1 with a missing or invalid timestamp.</strong>"), "{c}");
    let ahead = d.ok("/clients/01JCCCCCCCCCCCCCCCCCCCCCK9").await;
    assert!(ahead.contains("<em>before</em> the edit by this client's clock (every timestamp ahead of its arrival)"), "{ahead}");
    // A typed trailing slash keeps its query string.
    let slash = d.get("/?window=1h").await;
    assert_eq!((slash.status, slash.location.as_deref()), (308, Some(format!("{PREFIX}?window=1h").as_str())));
    let fine = d.ok(&format!("/clients/{CLIENT}")).await;
    assert!(!fine.contains("<strong>"), "nothing suspicious about a good clock");
}
