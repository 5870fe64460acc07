//! Every dashboard page in a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/test`): no console message at all (our pages run no script, so any message is a
//! blocked injection, a CSP violation or a failed load), no injected element in the DOM, and
//! screenshots of the overview and a request's detail in `target/screenshots/` (copied to
//! `docs/screenshots/` with `UPDATE_SCREENSHOTS=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tether_pro::config::CaptureConfig;
use tether_pro::dashboard::{DashboardState, mount};
use tether_pro::pipeline::{self, ClickHouseWriter};
use tether_pro::sync::{self, SyncServer};
use tracing_subscriber::layer::SubscriberExt;

const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>'; DROP TABLE sync_requests; --";

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(path.exists(), "headless Chromium is required for the page tests: run scripts/test (it installs Debian's chromium)");
    path
}

struct Visit {
    console: Vec<String>,
    dom: String,
}

/// Opens `url` in a fresh headless Chromium; returns its console lines and final DOM (after
/// a virtual-time budget, so that any timer, `onload` or `onerror` an injection planted ran).
fn visit(url: &str, screenshot: Option<&Path>) -> Visit {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,1100",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("chromium runs");
    assert!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    Visit {
        console: stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect(),
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn mutation(id: &str, entity: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

#[tokio::test(flavor = "current_thread")]
async fn every_page_renders_in_chromium_with_no_console_message_and_no_injection() {
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let cfg = CaptureConfig { batch_interval_ms: 50, ..CaptureConfig::default() };
    let (capture, mut guard) = pipeline::start(&cfg, ClickHouseWriter::new(ch.client())).unwrap();
    let _sub = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.layer()));
    let host = serve(sync::router(SyncServer::in_memory()).layer(capture.http_layer())).await;
    let http = reqwest::Client::new();
    let client_id = "01JCCCCCCCCCCCCCCCCCCCCCC1";
    let t1 = "01JAAAAAAAAAAAAAAAAAAAAAA1";
    let pushes = [
        json!({"client_id": client_id, "mutations": [
            mutation("01JM0000000000000000000001", t1, "create", json!({"title": "Buy milk", "notes": HOSTILE, "metadata": {"tags": ["a"]}}), 5_000),
            mutation("01JM0000000000000000000002", "01JAAAAAAAAAAAAAAAAAAAAAA2", "create", json!({"title": HOSTILE}), 5_000),
        ]}),
        json!({"client_id": client_id, "mutations": [
            mutation("01JM0000000000000000000003", t1, "update", json!({"title": "Buy oat milk", "notes": HOSTILE}), 9_000),
            mutation("01JM0000000000000000000004", t1, "update", json!({"title": "Old edit"}), 1_000),
            mutation("01JM0000000000000000000005", "01JAAAAAAAAAAAAAAAAAAAAAA3", "create", json!({"done": true}), 1_000),
            mutation("01JM0000000000000000000001", t1, "create", json!({"title": "Buy milk"}), 5_000),
        ]}),
        json!({"client_id": HOSTILE, "mutations": []}),
    ];
    for p in &pushes {
        let r = http.post(format!("{host}/tether/push")).header("x-tether-client-version", HOSTILE).json(p).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    guard.shutdown();
    let request_ids: Vec<String> = ch
        .rows("SELECT request_id FROM sync_requests ORDER BY started_at")
        .await
        .into_iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(request_ids.len(), 3);

    let dash = serve(mount(DashboardState::new(ch.client()))).await;
    let base = format!("{dash}/tether/dashboard");
    let enc = |s: &str| url_escape(s);
    let pages = [
        base.clone(),
        format!("{base}/requests"),
        format!("{base}/requests?client_id={}", enc(HOSTILE)),
        format!("{base}/requests/{}", request_ids[1]),
        format!("{base}/requests/{}", request_ids[2]),
        format!("{base}/conflicts"),
        format!("{base}/failures"),
        format!("{base}/clients/{client_id}"),
        format!("{base}/clients/{}", enc(HOSTILE)),
    ];
    for url in &pages {
        let v = tokio::task::spawn_blocking({
            let url = url.clone();
            move || visit(&url, None)
        })
        .await
        .unwrap();
        assert!(v.console.is_empty(), "{url}: console messages {:?}", v.console);
        assert!(v.dom.contains("</html>") || v.dom.contains("</body>"), "{url}: no page: {}", v.dom);
        let lower = v.dom.to_lowercase();
        assert!(!lower.contains("<script"), "{url}: a script element");
        assert!(!lower.contains("<img src=\"x\"") && !lower.contains("<img src=x"), "{url}: an injected image");
    }
    // The hostile text is shown, as text.
    let detail = tokio::task::spawn_blocking({
        let url = pages[3].clone();
        move || visit(&url, None)
    })
    .await
    .unwrap();
    assert!(detail.dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the payload is displayed escaped");

    // Screenshots to look at.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, url) in [("overview.png", &pages[0]), ("request-detail.png", &pages[3])] {
        let path = dir.join(name);
        let url = url.clone();
        let p = path.clone();
        let v = tokio::task::spawn_blocking(move || visit(&url, Some(&p))).await.unwrap();
        assert!(v.console.is_empty(), "{name}: {:?}", v.console);
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}: a real screenshot");
        if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::copy(&path, docs.join(name)).unwrap();
        }
    }
    assert_eq!(ch.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'sync_requests'").await, 1);
}

/// Percent-encodes a query or path value.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ----- hostile strings in every rendered field ------------------------------------------------

/// What an attacker plants: markup that, run or parsed as HTML anywhere, changes the title,
/// adds an element, navigates away or loads something.
const PAYLOADS: [&str; 8] = [
    r#""><script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">"#,
    "javascript:document.title='pwned'//",
    "</textarea><script>document.title='pwned'</script>",
    r#"<svg/onload="document.title='pwned'"><animate onbegin="document.title='pwned'" attributeName=x dur=1s>"#,
    "</style><style>*{display:none}</style><script>document.title='pwned'</script>",
    r#"<iframe src="javascript:parent.document.title='pwned'"></iframe>"#,
    r#"<meta http-equiv="refresh" content="0;url=about:blank"><base href="//evil.example/">"#,
    "'-alert(1)-'\\u003cscript\\u003e{{7*7}}${7*7}<!--",
];

/// All payloads in one string, tagged with the field it is planted in.
fn hostile(field: &str) -> String {
    format!("{field}:{}", PAYLOADS.join(""))
}

/// A host that answers with hostile reasons, validation messages, server states and record
/// states, behind the real capture layers (what an instrumented user server could produce).
mod hostile_host {
    use super::hostile;
    use axum::Json;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};
    use tether_pro::protocol::{PushRequest, PushResponse, Rejection, RejectionReason};

    fn obj(v: Value) -> tether_pro::protocol::Object {
        v.as_object().unwrap().clone()
    }

    pub async fn push(Json(req): Json<PushRequest>) -> Response {
        let mut resp = PushResponse::default();
        for m in &req.mutations {
            match m.payload.get("outcome").and_then(Value::as_str).unwrap_or("apply") {
                "boom" => return (StatusCode::INTERNAL_SERVER_ERROR, hostile("host 500 body")).into_response(),
                "reject" => resp.rejected.push(Rejection {
                    mutation_id: m.mutation_id.clone(),
                    reason: RejectionReason::Other(hostile("reason")),
                    data: Some(json!({"messages": {hostile("field name"): [hostile("message 1"), hostile("message 2")]}})),
                }),
                "validation" => resp.rejected.push(Rejection {
                    mutation_id: m.mutation_id.clone(),
                    reason: RejectionReason::ValidationFailed,
                    data: Some(json!({"messages": {hostile("validation field"): [hostile("validation message")], "title": hostile("title message")}})),
                }),
                "conflict" => resp.conflicts.push(Rejection {
                    mutation_id: m.mutation_id.clone(),
                    reason: RejectionReason::Conflict,
                    data: Some(json!({
                        "server_state": {hostile("server key"): hostile("server value"), "title": hostile("server title"), "nested": {hostile("deep key"): [hostile("deep value")]}},
                        "server_updated_at": hostile("server_updated_at"),
                    })),
                }),
                _ => {
                    let before = obj(json!({"title": hostile("before title"), hostile("before key"): hostile("before value"), "gone": hostile("removed value")}));
                    let mut after = m.payload.clone();
                    after.insert(hostile("after key"), json!({hostile("after nested key"): [hostile("after value")]}));
                    tether_pro::capture::record_mutation_state(&m.mutation_id, Some(before), Some(after));
                    resp.applied.push(m.mutation_id.clone());
                }
            }
        }
        Json(resp).into_response()
    }

    pub async fn pull(body: String) -> Response {
        let _ = body;
        Json(json!({"snapshots": [], "new_sync_cursor": 1, "has_more": false, "note": hostile("pull answer")})).into_response()
    }
}

/// A replay target over the hostile host: its state lookup answers hostile fields.
struct HostileTarget {
    app: axum::Router,
}

#[async_trait::async_trait]
impl tether_pro::replay::ReplayTarget for HostileTarget {
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<tether_pro::sync::RecordState>, tether_pro::replay::TargetError> {
        Ok(Some(tether_pro::sync::RecordState {
            model: model.to_owned(),
            entity_id: entity_id.to_owned(),
            deleted: false,
            version: 1,
            updated_at: hostile("state updated_at"),
            updated_at_us: 0,
            state: json!({"title": hostile("current title"), hostile("current key"): hostile("current value")}).as_object().unwrap().clone(),
        }))
    }
    async fn push(&self, req: &tether_pro::protocol::PushRequest, v: &str, replay_of: &str) -> Result<(u16, Option<tether_pro::protocol::PushResponse>), tether_pro::replay::TargetError> {
        tether_pro::sync::InProcessTarget { app: self.app.clone(), server: SyncServer::in_memory() }.push(req, v, replay_of).await
    }
}

/// Every tag our templates emit (and the ones the HTML parser adds).
const ALLOWED_TAGS: [&str; 45] = [
    "html", "head", "body", "meta", "title", "link", "header", "nav", "a", "form", "label", "input", "button", "main", "footer",
    "h1", "h2", "h3", "h4", "h5", "p", "section", "article", "div", "span", "strong", "code", "pre", "dl", "dt", "dd", "ul",
    "ol", "li", "table", "thead", "tbody", "tr", "td", "th", "details", "summary", "select", "option", "bdi",
];
const ALLOWED_SVG: [&str; 8] = ["svg", "rect", "polyline", "circle", "text", "figure", "figcaption", "title"];

/// Every element of a serialized DOM with its attributes. In Chromium's serialization a `<`
/// in text or in an attribute value is always escaped, so each literal `<name` is an element.
fn elements(dom: &str) -> Vec<(String, Vec<(String, String)>)> {
    let b = dom.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<' && i + 1 < b.len() && b[i + 1].is_ascii_alphabetic() {
            let mut j = i + 1;
            while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' && b[j] != b'/' {
                j += 1;
            }
            let name = dom[i + 1..j].to_ascii_lowercase();
            let mut attrs = Vec::new();
            // Attributes: name[="value"] until '>'.
            loop {
                while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'/') {
                    j += 1;
                }
                if j >= b.len() || b[j] == b'>' {
                    break;
                }
                let start = j;
                while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'=' && b[j] != b'>' {
                    j += 1;
                }
                let an = dom[start..j].to_ascii_lowercase();
                let mut value = String::new();
                if j < b.len() && b[j] == b'=' {
                    j += 1;
                    if j < b.len() && b[j] == b'"' {
                        let end = dom[j + 1..].find('"').map_or(b.len(), |e| j + 1 + e);
                        value = dom[j + 1..end].replace("&quot;", "\"").replace("&amp;", "&");
                        j = end + 1;
                    } else {
                        let start = j;
                        while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                            j += 1;
                        }
                        value = dom[start..j].to_owned();
                    }
                }
                attrs.push((an, value));
            }
            out.push((name, attrs));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The page is ours, unchanged: no console message, only our elements and attributes, links
/// only into the dashboard, the title ours.
fn assert_inert(url: &str, v: &Visit, prefix: &str) {
    assert!(v.console.is_empty(), "{url}: console messages {:?}", v.console);
    assert!(v.dom.contains("<a class=\"brand\""), "{url}: not our page any more (navigated?): {}", &v.dom[..v.dom.len().min(500)]);
    let els = elements(&v.dom);
    assert!(els.len() > 20, "{url}: {} elements", els.len());
    for (name, attrs) in &els {
        assert!(ALLOWED_TAGS.contains(&name.as_str()) || ALLOWED_SVG.contains(&name.as_str()), "{url}: an injected <{name}> element");
        for (a, value) in attrs {
            assert!(!a.starts_with("on") && a != "style" && a != "srcdoc" && a != "formaction", "{url}: <{name} {a}=\"{value}\">");
            if matches!(a.as_str(), "href" | "src" | "action" | "xlink:href") {
                assert!(value.is_empty() || value.starts_with(prefix) || value.starts_with('#'), "{url}: <{name} {a}=\"{value}\"> leads elsewhere");
            }
            if name == "meta" {
                assert!(a != "http-equiv", "{url}: an injected meta http-equiv");
            }
        }
    }
    assert_eq!(els.iter().filter(|(n, _)| n == "base" || n == "script").count(), 0, "{url}");
    let title_start = v.dom.find("<title>").expect("a title") + "<title>".len();
    let title = &v.dom[title_start..title_start + v.dom[title_start..].find("</title>").unwrap()];
    assert!(title.ends_with("· tether-pro") && title != "pwned", "{url}: the title changed to {title:?}");
}

/// A copy of the dashboard without its Content-Security-Policy: what a page does when only
/// escaping protects it (the CSP would hide an escaping bug from the first check).
async fn no_csp_mirror(dash: String, result_page: String) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let app = axum::Router::new().route("/__replay_result", axum::routing::get(move || async move { axum::response::Html(result_page) })).fallback(
        move |uri: axum::http::Uri| {
            let (http, dash) = (http.clone(), dash.clone());
            async move {
                let r = http.get(format!("{dash}{uri}")).send().await.unwrap();
                let mut resp = axum::http::Response::builder().status(r.status().as_u16());
                for h in ["content-type", "location"] {
                    if let Some(v) = r.headers().get(h) {
                        resp = resp.header(h, v.as_bytes());
                    }
                }
                resp.body(axum::body::Body::from(r.bytes().await.unwrap())).unwrap()
            }
        },
    );
    serve(app).await
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_strings_in_every_rendered_field_stay_inert_in_chromium_with_and_without_the_csp() {
    use std::sync::Arc;
    use tether_pro::dashboard::replay::ReplayState;
    use tether_pro::replay::{ApplyOptions, Replayer};

    let ch = common::clickhouse().await;
    ch.migrate().await;
    let cfg = CaptureConfig { batch_interval_ms: 50, ..CaptureConfig::default() };
    let (capture, mut guard) = pipeline::start(&cfg, ClickHouseWriter::new(ch.client())).unwrap();
    let _sub = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.layer()));
    let host_app = axum::Router::new()
        .route("/tether/push", axum::routing::post(hostile_host::push))
        .route("/tether/pull", axum::routing::post(hostile_host::pull))
        .layer(capture.http_layer());
    let host = serve(host_app.clone()).await;
    let http = reqwest::Client::new();
    let client_id = hostile("client id");
    let m = |n: u32, outcome: &str, op: &str| {
        json!({
            "mutation_id": hostile(&format!("mutation id {n}")),
            "entity_id": hostile(&format!("entity id {n}")),
            "model": hostile(&format!("model {n}")),
            "operation": op,
            "payload": {
                "outcome": outcome,
                "title": hostile(&format!("payload title {n}")),
                hostile(&format!("payload key {n}")): hostile(&format!("payload value {n}")),
                format!("{}_api_token", hostile(&format!("secret key {n}"))): "redacted on capture",
                "nested": {hostile(&format!("nested key {n}")): [hostile(&format!("nested value {n}")), {"x": hostile("deeper")}]},
            },
            "version": 1,
            "timestamp": 5_000,
        })
    };
    let pushes = [
        json!({"client_id": client_id, "mutations": [m(1, "apply", "create"), m(2, "apply", "update"), m(3, "reject", "update"), m(4, "validation", "create"), m(5, "conflict", "update")]}),
        json!({"client_id": client_id, "mutations": [m(6, "conflict", "update"), m(7, "reject", "delete")]}),
        json!({"client_id": hostile("other client"), "mutations": [m(8, "boom", "create")]}),
    ];
    for p in &pushes {
        let r = http
            .post(format!("{host}/tether/push"))
            .header("x-tether-client-version", hostile("client version"))
            .header("x-tether-replay-of", hostile("replay of"))
            .header("traceparent", hostile("traceparent"))
            .json(p)
            .send()
            .await
            .unwrap();
        assert!(r.status() == 200 || r.status() == 500);
        r.bytes().await.unwrap();
    }
    let r = http.post(format!("{host}/tether/pull")).header("x-tether-client-version", hostile("pull version")).json(&json!({"client_id": client_id})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    // A body that is not JSON: stored and shown as text.
    let r = http.post(format!("{host}/tether/push")).header("content-type", "application/json").body(format!("{{\"client_id\": \"{}", hostile("broken body"))).send().await.unwrap();
    r.bytes().await.unwrap();
    guard.shutdown();
    let ids: Vec<String> =
        ch.rows("SELECT request_id FROM sync_requests ORDER BY started_at").await.into_iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ch.count("SELECT count() FROM sync_mutations").await, 8);
    assert!(ch.count("SELECT count() FROM sync_mutations WHERE outcome = 'conflict'").await >= 2);
    let first = ids[0].clone();

    // Replays with a hostile actor and idempotency key: one through the library, one through
    // the dashboard's form (actor from X-Forwarded-User); the host answers them with hostile reasons.
    let target = Arc::new(HostileTarget { app: host_app.clone() });
    let replayer = Replayer::new(ch.client(), target.clone());
    replayer
        .apply(&first, &ApplyOptions { idempotency_key: hostile("idempotency key"), actor: hostile("actor"), restamp: false, positions: None })
        .await
        .unwrap();
    let mut state = DashboardState::new(ch.client());
    state.replay = Some(ReplayState::new(Replayer::new(ch.client(), target)));
    let dash = serve(mount(state)).await;
    let base = format!("{dash}/tether/dashboard");
    let preview: Value = http.get(format!("{base}/replay/{first}/preview.json")).send().await.unwrap().json().await.unwrap();
    let form = format!(
        "csrf_token={}&idempotency_key={}&position=0&position=2",
        preview["csrf_token"].as_str().unwrap(),
        preview["idempotency_key"].as_str().unwrap()
    );
    let result = http
        .post(format!("{base}/replay/{first}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-user", hostile("forwarded user"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    let result_page = result.text().await.unwrap();
    assert!(ch.count("SELECT count() FROM replay_links").await >= 3);

    let enc = |s: &str| url_escape(s);
    let mut paths = vec![
        String::new(),
        "?window=1h".into(),
        "/requests".into(),
        format!("/requests?client_id={}", enc(&client_id)),
        format!("/requests?model={}", enc(&hostile("model 1"))),
        format!("/requests?entity_id={}", enc(&hostile("entity id 3"))),
        format!("/requests?mutation_id={}", enc(&hostile("mutation id 5"))),
        format!("/requests?kind=push&outcome=partial&from=2000-01-01T00:00:00Z&client_id={}", enc(&client_id)),
        "/conflicts".into(),
        "/conflicts?window=7d".into(),
        "/failures".into(),
        format!("/clients/{}", enc(&client_id)),
        format!("/clients/{}?from=2000-01-01T00:00:00Z", enc(&hostile("other client"))),
        format!("/search?q={}", enc(&hostile("mutation id 2"))),
        format!("/search?q={}", enc(&client_id)),
        // Error pages echo the path and parameter names.
        format!("/requests/{}", enc(&hostile("unknown request"))),
        format!("/clients/{}", enc(&hostile("unknown client"))),
        format!("/requests?{}={}", enc(&hostile("parameter name")), "x".repeat(1_100)),
        format!("/replay/{first}"),
        format!("/replay/{first}?restamp=1"),
        // An unknown record's error page (the known ones are added below).
        format!("/records/{}/{}", enc(&hostile("model 6")), enc(&hostile("unknown entity"))),
        format!("/search?q={}", enc(&hostile("entity id 6"))),
    ];
    paths.extend(ids.iter().map(|id| format!("/requests/{id}")));
    // The conflict's record page explains it (the Chromium visits below check it is inert).
    // Ids are stored capped, so the pages link to the stored ones.
    let stored = |outcome: &str| {
        let ch = ch.clone();
        let sql = format!("SELECT model, entity_id FROM sync_mutations WHERE outcome = '{outcome}' ORDER BY started_at, position LIMIT 1");
        async move {
            let row = ch.rows(&sql).await.remove(0);
            (row["model"].as_str().unwrap().to_owned(), row["entity_id"].as_str().unwrap().to_owned())
        }
    };
    let (conflict_model, conflict_entity) = stored("conflict").await;
    let (applied_model, applied_entity) = stored("applied").await;
    paths.push(format!("/records/{}/{}", enc(&conflict_model), enc(&conflict_entity)));
    paths.push(format!("/records/{}/{}", enc(&applied_model), enc(&applied_entity)));
    let record = http.get(format!("{base}/records/{}/{}", enc(&conflict_model), enc(&conflict_entity))).send().await.unwrap();
    assert_eq!(record.status(), 200);
    assert!(record.text().await.unwrap().contains("The server&#39;s version won"), "the conflict is explained");
    let mirror = no_csp_mirror(dash.clone(), result_page).await;
    let m = http.get(format!("{mirror}/tether/dashboard/requests")).send().await.unwrap();
    assert!(m.status() == 200 && m.headers().get("content-security-policy").is_none(), "the mirror serves the pages without a CSP");
    let mut urls: Vec<(String, String)> = Vec::new();
    for p in &paths {
        urls.push((format!("{base}{p}"), "/tether/dashboard".into()));
        urls.push((format!("{mirror}/tether/dashboard{p}"), "/tether/dashboard".into()));
    }
    urls.push((format!("{mirror}/__replay_result"), "/tether/dashboard".into()));

    // Every planted field shows up, as text, somewhere.
    let mut all_dom = String::new();
    for chunk in urls.chunks(3) {
        let visits: Vec<_> = chunk
            .iter()
            .map(|(url, _)| {
                let url = url.clone();
                tokio::task::spawn_blocking(move || visit(&url, None))
            })
            .collect();
        for ((url, prefix), v) in chunk.iter().zip(visits) {
            let v = v.await.unwrap();
            assert_inert(url, &v, prefix);
            all_dom.push_str(&v.dom);
        }
    }
    let shown = |field: &str| {
        let marker = format!("{field}:\"&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;");
        let json_marker = format!("{field}:\\\"&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;");
        all_dom.contains(&marker) || all_dom.contains(&json_marker)
    };
    for field in [
        "client id", "client version", "model 1", "entity id 1", "mutation id 1", "reason", "field name", "message 1", "validation field",
        "validation message", "payload key 1", "payload value 1", "nested key 1", "before key", "before value", "after key", "after value",
        "server key", "server value", "server_updated_at", "replay of", "host 500 body", "pull answer", "broken body", "actor",
        "forwarded user", "current key", "current value", "unknown request", "unknown client", "parameter name", "secret key 1",
    ] {
        assert!(shown(field), "the hostile {field} is not displayed (as text) on any page");
    }
    // Diff paths of hostile keys (applied: before -> after; conflict: server -> client).
    for key in ["after key", "before key", "payload key 5", "server key"] {
        assert!(all_dom.contains(&format!("<td class=\"path\"><code><bdi>[\"{key}:\\\"&gt;&lt;script&gt;")), "no diff row for the hostile {key}");
    }
    eprintln!("{} Chromium visits, {} fields planted", urls.len(), 32);
}
