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

/// Opens `url` in a fresh headless Chromium; returns its console lines and final DOM.
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
