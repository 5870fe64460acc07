//! Replay against a real ClickHouse and the reference server as host, through both targets.

mod common;
#[path = "common/captured_host.rs"]
mod captured_host;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use captured_host::{CapturedHost, captured_host};
use common::TestClickHouse;
use serde_json::{Value, json};
use tether_pro::pipeline::{Capture, CaptureGuard};
use tether_pro::protocol::{PushRequest, PushResponse};
use tether_pro::sync::InProcessTarget;
use tether_pro::replay::{ApplyOptions, HttpTarget, Prediction, ReplayError, ReplayTarget, Replayer, SentInstead, Substitution};
use tether_pro::sync::{RecordState, SyncServer};

const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";
const T1: &str = "01JAAAAAAAAAAAAAAAAAAAAAA1";
const T2: &str = "01JAAAAAAAAAAAAAAAAAAAAAA2";
const T3: &str = "01JAAAAAAAAAAAAAAAAAAAAAA3";

fn mutation(id: &str, entity: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

struct Host {
    ch: TestClickHouse,
    server: SyncServer,
    app: axum::Router,
    base: String,
    capture: Capture,
    guard: CaptureGuard,
    _sub: tracing::subscriber::DefaultGuard,
}

async fn host() -> Host {
    let CapturedHost { ch, server, app, capture, guard, sub: _sub } = captured_host().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serve_app = app.clone();
    tokio::spawn(async move { axum::serve(listener, serve_app).await.unwrap() });
    Host { ch, server, app, base, capture, guard, _sub }
}

impl Host {
    async fn push(&self, body: Value) -> Value {
        let r = reqwest::Client::new().post(format!("{}/tether/push", self.base)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Waits until the pipeline wrote `n` request rows.
    async fn settle(&self, n: u64) {
        for _ in 0..200 {
            if self.capture.stats().totals().requests_written >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("captured rows did not arrive");
    }

    async fn request_ids(&self) -> Vec<String> {
        self.ch.rows("SELECT request_id FROM sync_requests ORDER BY started_at").await.into_iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect()
    }
}

/// Seeds: T1 and T2 created; then the push to replay: update T1 (newer), update T2 (older ->
/// would conflict once T2 changed), create T3, update of an unknown record.
async fn seeded() -> (Host, String) {
    let h = host().await;
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000001", T1, "create", json!({"title": "one"}), 1_000),
        mutation("01JM0000000000000000000002", T2, "create", json!({"title": "two"}), 1_000),
    ]}))
    .await;
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000003", T1, "update", json!({"title": "one v2", "api_key": "sk_live_PLANTED"}), 5_000),
        mutation("01JM0000000000000000000004", T2, "update", json!({"title": "two v2"}), 5_000),
        mutation("01JM0000000000000000000005", T3, "create", json!({"title": "three"}), 5_000),
        mutation("01JM0000000000000000000006", "01JAAAAAAAAAAAAAAAAAAAAAA9", "update", json!({"title": "ghost"}), 5_000),
    ]}))
    .await;
    h.settle(2).await;
    let id = h.request_ids().await[1].clone();
    (h, id)
}

async fn counts(h: &Host) -> (u64, u64, u64) {
    (
        h.ch.count("SELECT count() FROM sync_requests").await,
        h.ch.count("SELECT count() FROM sync_mutations").await,
        h.ch.count("SELECT count() FROM replay_links").await,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn preview_predicts_against_changed_state_and_writes_nothing() {
    let (h, id) = seeded().await;
    // Today's state moved on: T2 was edited later, T3 deleted.
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM0000000000000000000007", T2, "update", json!({"title": "two v3"}), 9_000),
        mutation("01JM0000000000000000000008", T3, "delete", json!({}), 9_000),
    ]}))
    .await;
    h.settle(3).await;
    let before = counts(&h).await;
    let host_state = h.server.state_blocking("Task", T1).unwrap();
    let replayer = Replayer::new(h.ch.client(), Arc::new(InProcessTarget { app: h.app.clone(), server: h.server.clone() }));
    let (_, entries) = replayer.preview(&id, false).await.unwrap();
    let predictions: Vec<&Prediction> = entries.iter().map(|e| &e.prediction).collect();
    assert_eq!(predictions, vec![&Prediction::WouldApply, &Prediction::Conflict, &Prediction::WouldCreate, &Prediction::NotFound]);
    // The redacted secret is never resent: the field takes the current value (none here).
    assert_eq!(entries[0].not_resendable, vec![Substitution { path: "/api_key".into(), sent_instead: SentInstead::LeftOut }]);
    assert!(!serde_json::to_string(&entries).unwrap().contains("[REDACTED]\"}"), "no marker in a payload to send");
    // Restamped, the conflict would apply.
    let (_, restamped) = replayer.preview(&id, true).await.unwrap();
    assert_eq!(restamped[1].prediction, Prediction::WouldApply);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(counts(&h).await, before, "a preview writes nothing");
    assert_eq!(h.server.state_blocking("Task", T1).unwrap(), host_state);
    drop(h.guard);
}

/// A target that checks, at the moment the clone reaches the host, that its links exist.
struct Checking {
    inner: InProcessTarget,
    ch: TestClickHouse,
    pushes: AtomicUsize,
}

#[async_trait]
impl ReplayTarget for Checking {
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<RecordState>, tether_pro::replay::TargetError> {
        self.inner.state(model, entity_id).await
    }
    async fn push(&self, req: &PushRequest, v: &str, replay_of: &str) -> Result<(u16, Option<PushResponse>), tether_pro::replay::TargetError> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        for m in &req.mutations {
            let n = self.ch.count(&format!("SELECT count() FROM replay_links WHERE clone_mutation_id = '{}' AND status = 'pending'", m.mutation_id)).await;
            assert_eq!(n, 1, "the link of {} exists before the host sees the clone", m.mutation_id);
        }
        self.inner.push(req, v, replay_of).await
    }
}

#[tokio::test(flavor = "current_thread")]
async fn apply_sends_fresh_ids_after_durable_links_once_per_key() {
    let (h, id) = seeded().await;
    let target = Arc::new(Checking { inner: InProcessTarget { app: h.app.clone(), server: h.server.clone() }, ch: h.ch.clone(), pushes: AtomicUsize::new(0) });
    let replayer = Replayer::new(h.ch.client(), target.clone());
    let opts = ApplyOptions { idempotency_key: "key-1".into(), actor: "ops@example".into(), restamp: true, positions: Some(vec![0, 2]) };
    let r = replayer.apply(&id, &opts).await.unwrap();
    assert!(r.sent);
    assert_eq!(r.host_http_status, 200);
    assert_eq!(r.links.len(), 2);
    let originals = ["01JM0000000000000000000003", "01JM0000000000000000000005"];
    for (l, o) in r.links.iter().zip(originals) {
        assert_eq!(l.original_mutation_id, o);
        assert_ne!(l.clone_mutation_id, o, "a clone never reuses the original id");
        assert_eq!(l.status, "applied", "the host's duplicate detection is not triggered");
        assert_eq!(l.actor, "ops@example");
    }
    assert_ne!(r.links[0].clone_mutation_id, r.links[1].clone_mutation_id);
    // The same key again: the same replay, nothing sent.
    let again = replayer.apply(&id, &opts).await.unwrap();
    assert!(!again.sent);
    assert_eq!(again.replay_id, r.replay_id);
    assert_eq!(target.pushes.load(Ordering::SeqCst), 1);
    // The replayed request was captured like any push, and marked.
    h.settle(3).await;
    let marked = h.ch.rows(&format!("SELECT replay_of, mutation_count FROM sync_requests WHERE replay_of = '{id}'")).await;
    assert_eq!(marked, vec![json!({"replay_of": id, "mutation_count": 2})]);
    // The audit view answers who, what, with what result.
    let audit = h.ch.rows(&format!("SELECT actor, status FROM replays WHERE original_request_id = '{id}' ORDER BY position")).await;
    assert_eq!(audit, vec![json!({"actor": "ops@example", "status": "applied"}), json!({"actor": "ops@example", "status": "applied"})]);
    assert_eq!(h.server.state_blocking("Task", T1).unwrap().unwrap().state["title"], "one v2");
    drop(h.guard);
}

/// A target that holds the first state lookup of each replayer until both replayers made one:
/// both are then past their idempotency-key check and neither has written a link, the race two
/// dashboard replicas can run.
struct Racing {
    inner: InProcessTarget,
    barrier: Arc<tokio::sync::Barrier>,
    waited: std::sync::atomic::AtomicBool,
    pushes: AtomicUsize,
}

#[async_trait]
impl ReplayTarget for Racing {
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<RecordState>, tether_pro::replay::TargetError> {
        if !self.waited.swap(true, Ordering::SeqCst) {
            self.barrier.wait().await;
        }
        self.inner.state(model, entity_id).await
    }
    async fn push(&self, req: &PushRequest, v: &str, replay_of: &str) -> Result<(u16, Option<PushResponse>), tether_pro::replay::TargetError> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.inner.push(req, v, replay_of).await
    }
}

#[tokio::test(flavor = "current_thread")]
async fn two_replicas_applying_one_key_at_once_change_the_host_once() {
    let (h, id) = seeded().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let racing = || {
        Arc::new(Racing {
            inner: InProcessTarget { app: h.app.clone(), server: h.server.clone() },
            barrier: barrier.clone(),
            waited: Default::default(),
            pushes: AtomicUsize::new(0),
        })
    };
    let (ta, tb) = (racing(), racing());
    // Two replicas: their own ClickHouse clients and locks.
    let (a, b) = (Replayer::new(h.ch.client(), ta.clone()), Replayer::new(h.ch.client(), tb.clone()));
    let opts = |actor: &str| ApplyOptions { idempotency_key: "same-key".into(), actor: actor.into(), restamp: true, positions: Some(vec![0, 2]) };
    let (oa, ob) = (opts("a@example"), opts("b@example"));
    let (ra, rb) = tokio::join!(a.apply(&id, &oa), b.apply(&id, &ob));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Both passed the key check before either wrote a link, so both sent...
    assert_eq!((ta.pushes.load(Ordering::SeqCst), tb.pushes.load(Ordering::SeqCst)), (1, 1));
    assert!(ra.sent && rb.sent);
    // ...the same replay with the same clone ids...
    assert_eq!(ra.replay_id, rb.replay_id);
    let clone_ids = |r: &tether_pro::replay::ReplayResult| r.links.iter().map(|l| l.clone_mutation_id.clone()).collect::<Vec<_>>();
    assert_eq!(clone_ids(&ra), clone_ids(&rb));
    assert_eq!(clone_ids(&ra).len(), 2);
    // ...and the host applied each clone once: the second send of each was a duplicate.
    h.settle(4).await;
    let ids = clone_ids(&ra);
    let outcomes = h
        .ch
        .rows(&format!(
            "SELECT mutation_id, groupArray(outcome) AS outcomes FROM (SELECT mutation_id, outcome FROM sync_mutations
             WHERE mutation_id IN ('{}', '{}') ORDER BY outcome) GROUP BY mutation_id ORDER BY mutation_id",
            ids[0], ids[1]
        ))
        .await;
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        outcomes,
        sorted.iter().map(|m| json!({"mutation_id": m, "outcomes": ["applied", "duplicate"]})).collect::<Vec<_>>()
    );
    assert_eq!(h.server.state_blocking("Task", T1).unwrap().unwrap().state["title"], "one v2");
    // The record: one link per clone, with the outcome of the send that won.
    let record = Replayer::new(h.ch.client(), ta.clone()).links(&id).await.unwrap();
    assert_eq!(record.len(), 2, "{record:?}");
    assert!(record.iter().all(|l| l.status == "applied" && l.replay_id == ra.replay_id), "{record:?}");
    let audit = h.ch.rows(&format!("SELECT clone_mutation_id, status FROM replays WHERE original_request_id = '{id}' ORDER BY position")).await;
    assert_eq!(audit, ids.iter().map(|m| json!({"clone_mutation_id": m, "status": "applied"})).collect::<Vec<_>>());
    // Two rows were written per clone and link (pending and answer, by each replica).
    assert_eq!(h.ch.count("SELECT count() FROM replay_links").await, 8);
    // After ClickHouse merges the table, each replica keeps its answer, and the record still
    // says applied (a replica's later `duplicate` never replaces the other's `applied`).
    h.ch.rows("OPTIMIZE TABLE replay_links FINAL").await;
    assert_eq!(h.ch.count("SELECT count() FROM replay_links").await, 4);
    let merged = Replayer::new(h.ch.client(), ta.clone()).links(&id).await.unwrap();
    assert!(merged.iter().all(|l| l.status == "applied"), "{merged:?}");
    let audit = h.ch.rows(&format!("SELECT clone_mutation_id, status FROM replays WHERE original_request_id = '{id}' ORDER BY position")).await;
    assert_eq!(audit, ids.iter().map(|m| json!({"clone_mutation_id": m, "status": "applied"})).collect::<Vec<_>>());
    drop(h.guard);
}

#[tokio::test(flavor = "current_thread")]
async fn the_http_target_replays_through_the_hosts_url() {
    let (h, id) = seeded().await;
    let target = HttpTarget {
        http: reqwest::Client::new(),
        push_url: format!("{}/tether/push", h.base),
        state_url_template: format!("{}/tether/state/{{model}}/{{entity_id}}", h.base),
    };
    let replayer = Replayer::new(h.ch.client(), Arc::new(target));
    let (_, entries) = replayer.preview(&id, false).await.unwrap();
    assert_eq!(entries[2].prediction, Prediction::WouldOverwrite, "T3 exists now: the create would overwrite it");
    assert_eq!(entries[3].prediction, Prediction::NotFound);
    let r = replayer.apply(&id, &ApplyOptions { idempotency_key: "k".into(), actor: "a".into(), restamp: true, positions: None }).await.unwrap();
    let statuses: Vec<&str> = r.links.iter().map(|l| l.status.as_str()).collect();
    assert_eq!(statuses, vec!["applied", "applied", "applied", "rejected"]);
    assert_eq!(r.links[3].host_reason, "not_found");
    drop(h.guard);
}

#[tokio::test(flavor = "current_thread")]
async fn when_links_cannot_be_written_nothing_is_sent() {
    let (h, id) = seeded().await;
    h.ch.rows("DROP TABLE replay_links").await;
    let target = Arc::new(Checking { inner: InProcessTarget { app: h.app.clone(), server: h.server.clone() }, ch: h.ch.clone(), pushes: AtomicUsize::new(0) });
    let replayer = Replayer::new(h.ch.client(), target.clone());
    let err = replayer.apply(&id, &ApplyOptions { idempotency_key: "k".into(), ..ApplyOptions::default() }).await.unwrap_err();
    assert!(matches!(err, ReplayError::Store(_) | ReplayError::LinksNotWritten(_)), "{err}");
    assert_eq!(target.pushes.load(Ordering::SeqCst), 0, "nothing reached the host");
    drop(h.guard);
}

#[tokio::test(flavor = "current_thread")]
async fn a_pull_cannot_be_replayed_and_unknown_ids_are_not_found() {
    let (h, _) = seeded().await;
    let r = reqwest::Client::new().post(format!("{}/tether/pull", h.base)).json(&json!({"client_id": CLIENT})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.settle(3).await;
    let pull_id = h.ch.rows("SELECT request_id FROM sync_requests WHERE kind = 'pull'").await[0]["request_id"].as_str().unwrap().to_owned();
    let replayer = Replayer::new(h.ch.client(), Arc::new(InProcessTarget { app: h.app.clone(), server: h.server.clone() }));
    assert!(matches!(replayer.preview(&pull_id, false).await, Err(ReplayError::NotAPush(k)) if k == "pull"));
    assert!(matches!(replayer.apply(&pull_id, &ApplyOptions { idempotency_key: "p".into(), ..ApplyOptions::default() }).await, Err(ReplayError::NotAPush(_))));
    assert!(matches!(replayer.preview("01JZZZZZZZZZZZZZZZZZZZZZZZ", false).await, Err(ReplayError::NotFound)));
    // A library caller that leaves the key at its default is refused, for a push too: with a
    // shared empty key every later apply would return the first and send nothing.
    let push_id = h.ch.rows("SELECT request_id FROM sync_requests WHERE kind = 'push' LIMIT 1").await[0]["request_id"].as_str().unwrap().to_owned();
    assert!(matches!(replayer.apply(&push_id, &ApplyOptions::default()).await, Err(ReplayError::NoIdempotencyKey)));
    assert_eq!(h.ch.count("SELECT count() FROM replay_links").await, 0, "nothing was sent or linked");
    drop(h.guard);
}

async fn dashboard(h: &Host, replay: bool) -> String {
    dashboard_with(h, replay, None).await
}

/// A dashboard replica; `csrf_secret` as `replay.csrf_secret`.
async fn dashboard_with(h: &Host, replay: bool, csrf_secret: Option<&str>) -> String {
    use tether_pro::dashboard::{DashboardState, mount, replay::ReplayState};
    let mut state = DashboardState::new(h.ch.client());
    if replay {
        let target = InProcessTarget { app: h.app.clone(), server: h.server.clone() };
        state.replay = Some(ReplayState::configured(Replayer::new(h.ch.client(), Arc::new(target)), csrf_secret));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/tether/dashboard", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, mount(state)).await.unwrap() });
    base
}

#[tokio::test(flavor = "current_thread")]
async fn by_default_every_replay_route_is_404_even_a_hand_crafted_post() {
    let (h, id) = seeded().await;
    let base = dashboard(&h, false).await;
    let http = reqwest::Client::new();
    for (method, path) in [("GET", ""), ("POST", ""), ("GET", "/preview.json"), ("POST", "/apply.json"), ("GET", "/links.json")] {
        let req = http.request(method.parse().unwrap(), format!("{base}/replay/{id}{path}"));
        let req = if method == "POST" { req.json(&json!({"idempotency_key": "k", "csrf_token": "00"})) } else { req };
        assert_eq!(req.send().await.unwrap().status(), 404, "{method} {path}");
    }
    assert_eq!(counts(&h).await.2, 0, "no replay happened");
    let detail = http.get(format!("{base}/requests/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(detail.contains("replay.live_enabled = true"), "the page says how to enable replay");
    drop(h.guard);
}

#[tokio::test(flavor = "current_thread")]
async fn enabled_apply_needs_the_csrf_token_and_replays_once_per_key() {
    let (h, id) = seeded().await;
    let base = dashboard(&h, true).await;
    let http = reqwest::Client::new();
    let preview: Value = http.get(format!("{base}/replay/{id}/preview.json?restamp=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(preview["entries"].as_array().unwrap().len(), 4);
    let key = preview["idempotency_key"].as_str().unwrap();
    let token = preview["csrf_token"].as_str().unwrap();
    let apply = |body: Value| http.post(format!("{base}/replay/{id}/apply.json")).header("x-forwarded-user", "alice").json(&body).send();
    assert_eq!(apply(json!({"idempotency_key": key})).await.unwrap().status(), 400, "no token at all");
    assert_eq!(apply(json!({"idempotency_key": key, "csrf_token": "00"})).await.unwrap().status(), 403);
    assert_eq!(apply(json!({"idempotency_key": "other", "csrf_token": token})).await.unwrap().status(), 403, "a token is bound to its key");
    let first: Value = apply(json!({"idempotency_key": key, "csrf_token": token, "restamp": true, "positions": [0]})).await.unwrap().json().await.unwrap();
    assert_eq!(first["sent"], true, "{first}");
    assert_eq!(first["links"][0]["actor"], "alice");
    let second: Value = apply(json!({"idempotency_key": key, "csrf_token": token, "restamp": true, "positions": [0]})).await.unwrap().json().await.unwrap();
    assert_eq!(second["sent"], false);
    assert_eq!(second["replay_id"], first["replay_id"]);
    let links: Value = http.get(format!("{base}/replay/{id}/links.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(links.as_array().unwrap().len(), 1);
    // The HTML preview and the form post.
    let page = http.get(format!("{base}/replay/{id}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("would_apply") && html.contains("not_found") && html.contains(first["replay_id"].as_str().unwrap()), "{html}");
    let form = http
        .post(format!("{base}/replay/{id}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf_token={token}&idempotency_key={key}&position=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("nothing was sent again"));
    // The original's page lists the replay, and links the captured replayed request.
    h.settle(3).await;
    let detail = http.get(format!("{base}/requests/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(detail.contains("preview a replay"));
    assert!(detail.contains(first["links"][0]["clone_mutation_id"].as_str().unwrap()), "clone listed");
    let replayed = h.ch.rows(&format!("SELECT request_id FROM sync_requests WHERE replay_of = '{id}'")).await;
    let replayed_id = replayed[0]["request_id"].as_str().unwrap();
    assert!(detail.contains(replayed_id), "the replayed request is linked");
    let replayed_page = http.get(format!("{base}/requests/{replayed_id}")).send().await.unwrap().text().await.unwrap();
    assert!(replayed_page.contains(&format!("/requests/{id}")), "the clone links back to its original");
    // Malformed JSON is a 400.
    let pull_free = http.post(format!("{base}/replay/{id}/apply.json")).body("not json").header("content-type", "application/json").send().await.unwrap();
    assert_eq!(pull_free.status(), 400);
    drop(h.guard);
}

/// Behind a load balancer the apply may reach another replica than the preview: replicas with
/// the same `replay.csrf_secret` accept each other's tokens; with another secret, or none (a
/// random key per process), the token is refused.
#[tokio::test(flavor = "current_thread")]
async fn replicas_sharing_the_csrf_secret_accept_each_others_tokens() {
    let (h, id) = seeded().await;
    const SECRET: &str = "0123456789abcdef0123456789abcdef-shared";
    let (a, b) = (dashboard_with(&h, true, Some(SECRET)).await, dashboard_with(&h, true, Some(SECRET)).await);
    let other = dashboard_with(&h, true, Some("another secret of at least thirty-two chars")).await;
    let random = dashboard_with(&h, true, None).await;
    let http = reqwest::Client::new();
    let preview: Value = http.get(format!("{a}/replay/{id}/preview.json")).send().await.unwrap().json().await.unwrap();
    let body = json!({"idempotency_key": preview["idempotency_key"], "csrf_token": preview["csrf_token"], "positions": [0]});
    for refusing in [&other, &random] {
        let r = http.post(format!("{refusing}/replay/{id}/apply.json")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 403, "{refusing}");
    }
    let r = http.post(format!("{b}/replay/{id}/apply.json")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["sent"], true);
    // A secret too short to be a key is a configuration error.
    let short = toml_config("[replay]\ncsrf_secret = \"short\"\n");
    assert!(short.unwrap_err().contains("replay.csrf_secret must be at least 32 characters"));
    drop(h.guard);
}

fn toml_config(text: &str) -> Result<tether_pro::config::Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tether-pro.toml");
    std::fs::write(&file, text).unwrap();
    tether_pro::config::Config::load(Some(&file)).map_err(|e| e.to_string())
}

/// Issue 12, inputs 4 and 5: the preview shows nothing secret from the host's live state,
/// resends every captured value that was not redacted (the original "red", although the record
/// is "blue" now), names the one value it cannot resend and what it sends instead, predicts a
/// create over an existing record as such, and applying it never moves the version back.
#[tokio::test(flavor = "current_thread")]
async fn the_preview_shows_nothing_secret_and_resends_exactly_what_was_not_redacted() {
    const X: &str = "01JAAAAAAAAAAAAAAAAAAAAAX1";
    let h = host().await;
    h.push(json!({"client_id": CLIENT, "mutations": [
        mutation("01JM00000000000000000000X1", X, "create", json!({"title": "t", "metadata": {"token": "FAKE-C", "color": "red"}}), 1_000),
    ]}))
    .await;
    let mut update = mutation("01JM00000000000000000000X2", X, "update", json!({"title": "t", "metadata": {"token": "FAKE-C", "color": "blue"}}), 2_000);
    update["version"] = json!(2);
    h.push(json!({"client_id": CLIENT, "mutations": [update]})).await;
    h.settle(2).await;
    let id = h.request_ids().await[0].clone();
    let stored = h.ch.rows(&format!("SELECT payload, redacted_paths, redacted_paths_recorded FROM sync_mutations WHERE request_id = '{id}'")).await;
    assert_eq!(stored, vec![json!({"payload": r#"{"metadata":{"color":"red","token":"[REDACTED]"},"title":"t"}"#, "redacted_paths": ["/metadata/token"], "redacted_paths_recorded": true})]);

    let base = dashboard(&h, true).await;
    let http = reqwest::Client::new();
    let preview_text = http.get(format!("{base}/replay/{id}/preview.json")).send().await.unwrap().text().await.unwrap();
    assert!(!preview_text.contains("FAKE-C"), "{preview_text}");
    let preview: Value = serde_json::from_str(&preview_text).unwrap();
    let entry = &preview["entries"][0];
    assert_eq!(entry["prediction"], json!({"outcome": "would_overwrite"}));
    assert_eq!(entry["not_resendable"], json!([{"path": "/metadata/token", "sent_instead": "current_value"}]));
    assert_eq!(entry["paths_inferred"], false);
    assert_eq!(entry["payload"]["metadata"], json!({"token": "[REDACTED]", "color": "red"}));
    assert_eq!(entry["diff"], json!([{"path": ["metadata", "color"], "change": "changed", "old": "blue", "new": "red"}]), "the captured red is resent");
    let page = http.get(format!("{base}/replay/{id}")).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains("FAKE-C") && page.contains("/metadata/token") && page.contains("would_overwrite"), "{page}");

    let key = preview["idempotency_key"].as_str().unwrap();
    let token = preview["csrf_token"].as_str().unwrap();
    let applied = http.post(format!("{base}/replay/{id}/apply.json")).json(&json!({"idempotency_key": key, "csrf_token": token, "restamp": true})).send().await.unwrap().text().await.unwrap();
    assert!(!applied.contains("FAKE-C"), "{applied}");
    let now = h.server.state_blocking("Task", X).unwrap().unwrap();
    assert_eq!(now.state["metadata"], json!({"token": "FAKE-C", "color": "red"}), "the live secret was kept, the captured colour resent");
    assert_eq!(now.version, 2, "a replayed create (version 1) never moves the record's version back");
    let links = http.get(format!("{base}/replay/{id}/links.json")).send().await.unwrap().text().await.unwrap();
    assert!(!links.contains("FAKE-C"));
    drop(h.guard);
}

/// The HTTP target says why it failed, as a typed error: a host that is not there, a state
/// lookup that answers an error status, and an answer that is not a record.
#[tokio::test(flavor = "current_thread")]
async fn the_http_target_reports_each_failure_as_its_own_error() {
    use axum::routing::get;
    use tether_pro::replay::TargetError;
    let app = axum::Router::new()
        .route("/broken/{model}/{entity_id}", get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .route("/garbage/{model}/{entity_id}", get(|| async { "not a record" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let target = |template: String| HttpTarget { http: reqwest::Client::new(), push_url: format!("{base}/tether/push"), state_url_template: template };

    let broken = target(format!("{base}/broken/{{model}}/{{entity_id}}")).state("Task", "t1").await;
    assert!(matches!(broken, Err(TargetError::StateLookup { status: 500 })), "{broken:?}");
    let garbage = target(format!("{base}/garbage/{{model}}/{{entity_id}}")).state("Task", "t1").await;
    assert!(matches!(garbage, Err(TargetError::BadAnswer(_))), "{garbage:?}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    };
    let away = HttpTarget { http: reqwest::Client::new(), push_url: format!("{closed}/tether/push"), state_url_template: format!("{closed}/s/{{model}}/{{entity_id}}") };
    assert!(matches!(away.state("Task", "t1").await, Err(TargetError::Unreachable(_))));
    let push = PushRequest { client_id: "c".into(), mutations: Vec::new() };
    assert!(matches!(away.push(&push, "1.0", "r1").await, Err(TargetError::Unreachable(_))));
}

/// A key names a replay of one request: the same key on another request is another replay
/// (found by a fresh tester: it used to answer with the first request's replay and send
/// nothing). On the same request it still replays once.
#[tokio::test(flavor = "current_thread")]
async fn an_idempotency_key_is_scoped_to_its_request() {
    let (h, id) = seeded().await;
    let first = h.request_ids().await[0].clone();
    let replayer = Replayer::new(h.ch.client(), Arc::new(InProcessTarget { app: h.app.clone(), server: h.server.clone() }));
    let opts = ApplyOptions { idempotency_key: "shared-key".into(), actor: "a".into(), restamp: true, positions: Some(vec![0]) };
    let a = replayer.apply(&id, &opts).await.unwrap();
    let b = replayer.apply(&first, &opts).await.unwrap();
    assert!(a.sent && b.sent, "two requests, two replays");
    assert_ne!(a.replay_id, b.replay_id);
    assert_eq!(b.links[0].original_request_id, first);
    let again = replayer.apply(&first, &opts).await.unwrap();
    assert!(!again.sent && again.replay_id == b.replay_id);
    drop(h.guard);
}
