//! The reference sync server against the Tether wire protocol (PROTOCOL.md), over real HTTP.
//!
//! Every HTTP test starts its own `SyncServer`, serves `router(server)` with `axum::serve`
//! on 127.0.0.1:0 and talks to it with reqwest, asserting on the exact JSON that came back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use serde_json::{Value, json};
use tether_pro::protocol::{
    Mutation, Object, Operation, PullRequest, PullResponse, PushRequest, PushResponse, RejectionReason,
    SnapshotOperation,
};
use tether_pro::sync::{ClientWins, FieldKind, Limits, MergeFields, ModelSpec, Schema, SyncServer, router};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const CLIENT: &str = "01J0CL1ENT00000000000000AA";
/// 2024-05-18T02:40:00.123Z, in milliseconds.
const T: i64 = 1_716_000_000_123;
const T_RFC3339: &str = "2024-05-18T02:40:00.123Z";

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

/// A running server and a client for it.
struct Srv {
    base: String,
    http: reqwest::Client,
}

async fn serve(server: SyncServer) -> Srv {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(server)).await.unwrap();
    });
    Srv { base: format!("http://{addr}"), http: reqwest::Client::new() }
}

async fn serve_default() -> Srv {
    serve(SyncServer::in_memory()).await
}

async fn into_status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {:?}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

impl Srv {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a JSON value; returns status and JSON body.
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("X-Tether-Client-Version", "1.0.0")
            .json(body)
            .send()
            .await
            .unwrap();
        into_status_json(resp).await
    }

    /// POSTs raw bytes with an optional content type; returns status and JSON body.
    async fn post_bytes(&self, path: &str, content_type: Option<&str>, bytes: Vec<u8>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(bytes);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        into_status_json(req.send().await.unwrap()).await
    }

    /// A push that must succeed (200); returns the response body.
    async fn push(&self, mutations: Vec<Value>) -> Value {
        self.push_as(CLIENT, mutations).await
    }

    async fn push_as(&self, client_id: &str, mutations: Vec<Value>) -> Value {
        let (status, body) = self.post("/tether/push", &json!({"client_id": client_id, "mutations": mutations})).await;
        assert_eq!(status, 200, "push failed: {body}");
        body
    }

    /// A pull that must succeed (200); returns the response body.
    async fn pull(&self, cursor: Option<i64>, limit: Option<u32>) -> Value {
        let mut body = json!({"client_id": CLIENT, "last_sync_cursor": cursor});
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        let (status, body) = self.post("/tether/pull", &body).await;
        assert_eq!(status, 200, "pull failed: {body}");
        body
    }

    async fn state(&self, model: &str, entity_id: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(&format!("/tether/state/{model}/{entity_id}"))).send().await.unwrap();
        into_status_json(resp).await
    }

    /// The `state` object of a record that must exist.
    async fn record(&self, entity_id: &str) -> Value {
        let (status, body) = self.state("Task", entity_id).await;
        assert_eq!(status, 200, "state lookup failed: {body}");
        body
    }
}

/// One `Task` mutation on the wire.
fn mutation(mutation_id: &str, op: &str, entity_id: &str, payload: Value, version: u64, timestamp: i64) -> Value {
    json!({
        "mutation_id": mutation_id, "entity_id": entity_id, "model": "Task", "operation": op,
        "payload": payload, "version": version, "timestamp": timestamp,
    })
}

fn create(mid: &str, eid: &str, payload: Value, ts: i64) -> Value {
    mutation(mid, "create", eid, payload, 1, ts)
}

fn update(mid: &str, eid: &str, payload: Value, version: u64, ts: i64) -> Value {
    mutation(mid, "update", eid, payload, version, ts)
}

fn delete(mid: &str, eid: &str, version: u64, ts: i64) -> Value {
    mutation(mid, "delete", eid, json!({}), version, ts)
}

fn applied(ids: &[&str]) -> Value {
    json!({"applied": ids, "rejected": [], "conflicts": []})
}

fn rejected(mid: &str, reason: &str) -> Value {
    json!({"mutation_id": mid, "reason": reason})
}

fn only_rejected(entries: Vec<Value>) -> Value {
    json!({"applied": [], "rejected": entries, "conflicts": []})
}

fn validation(mid: &str, messages: Value) -> Value {
    json!({"mutation_id": mid, "reason": "validation_failed", "data": {"messages": messages}})
}

fn conflict(mid: &str, server_state: Value, server_updated_at: &str) -> Value {
    json!({"mutation_id": mid, "reason": "conflict",
           "data": {"server_state": server_state, "server_updated_at": server_updated_at}})
}

fn upsert(eid: &str, payload: Value) -> Value {
    json!({"entity_id": eid, "model": "Task", "operation": "upsert", "payload": payload})
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn obj(v: Value) -> Object {
    v.as_object().unwrap().clone()
}

// ---------------------------------------------------------------------------------------
// Wire types: the PROTOCOL.md examples
// ---------------------------------------------------------------------------------------

const EXAMPLE_PUSH_REQUEST: &str = r#"{ "client_id": "01J...", "mutations": [
  { "mutation_id": "01J...", "entity_id": "01J...", "model": "Task",
    "operation": "create", "payload": {"title": "Buy milk"},
    "version": 1, "timestamp": 1716000000000 } ] }"#;

const EXAMPLE_PUSH_RESPONSE: &str = r#"{ "applied":   ["<mutation_id>"],
  "rejected":  [{"mutation_id": "...", "reason": "validation_failed",
                 "data": {"messages": {"title": ["The title field is required."]}}}],
  "conflicts": [{"mutation_id": "...", "reason": "conflict",
                 "data": {"server_state": {"tether_id": "...", "title": "Server"},
                          "server_updated_at": "2026-05-18T10:00:00Z"}}] }"#;

const EXAMPLE_PULL_REQUEST: &str = r#"{ "client_id": "01J...", "last_sync_cursor": 1716000000000000, "limit": 100 }"#;

const EXAMPLE_PULL_RESPONSE: &str = r#"{ "snapshots": [
    {"entity_id": "01J...", "model": "Task", "operation": "upsert", "payload": {"title": "x"}},
    {"entity_id": "01J...", "model": "Task", "operation": "delete", "payload": {}} ],
  "new_sync_cursor": 1716000000123456, "has_more": false }"#;

fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) -> T {
    let original: Value = serde_json::from_str(text).unwrap();
    let parsed: T = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), original, "{text}");
    parsed
}

#[test]
fn protocol_push_request_example_round_trips() {
    let req: PushRequest = round_trips(EXAMPLE_PUSH_REQUEST);
    assert_eq!(req.client_id, "01J...");
    let m = &req.mutations[0];
    assert_eq!(m.operation, Operation::Create);
    assert_eq!(m.payload, obj(json!({"title": "Buy milk"})));
    assert_eq!((m.version, m.timestamp), (1, 1_716_000_000_000));
}

#[test]
fn protocol_push_response_example_round_trips() {
    let resp: PushResponse = round_trips(EXAMPLE_PUSH_RESPONSE);
    assert_eq!(resp.applied, vec!["<mutation_id>"]);
    assert_eq!(resp.rejected[0].reason, RejectionReason::ValidationFailed);
    assert_eq!(resp.conflicts[0].reason, RejectionReason::Conflict);
}

#[test]
fn protocol_pull_request_example_round_trips() {
    let req: PullRequest = round_trips(EXAMPLE_PULL_REQUEST);
    assert_eq!(req.last_sync_cursor, Some(1_716_000_000_000_000));
    assert_eq!(req.limit, Some(100));
    let first: PullRequest = round_trips(r#"{"client_id": "01J...", "last_sync_cursor": null}"#);
    assert_eq!(first.last_sync_cursor, None);
}

#[test]
fn protocol_pull_response_example_round_trips() {
    let resp: PullResponse = round_trips(EXAMPLE_PULL_RESPONSE);
    assert_eq!(resp.snapshots[0].operation, SnapshotOperation::Upsert);
    assert_eq!(resp.snapshots[1].operation, SnapshotOperation::Delete);
    assert_eq!(resp.new_sync_cursor, Some(1_716_000_000_123_456));
    assert!(!resp.has_more);
}

#[test]
fn protocol_absent_or_null_arrays_and_payloads_are_empty() {
    let resp: PushResponse = serde_json::from_str("{}").unwrap();
    assert_eq!(resp, PushResponse::default());
    let resp: PushResponse = serde_json::from_str(r#"{"applied": null, "rejected": null, "conflicts": null}"#).unwrap();
    assert_eq!(resp, PushResponse::default());

    let req: PushRequest = serde_json::from_str(r#"{"client_id": "c"}"#).unwrap();
    assert!(req.mutations.is_empty());
    let req: PushRequest = serde_json::from_str(r#"{"client_id": "c", "mutations": null}"#).unwrap();
    assert!(req.mutations.is_empty());

    let absent: Mutation = serde_json::from_str(
        r#"{"mutation_id": "m", "entity_id": "e", "model": "Task", "operation": "delete", "version": 2, "timestamp": 5}"#,
    )
    .unwrap();
    assert!(absent.payload.is_empty());
    let null: Mutation = serde_json::from_str(
        r#"{"mutation_id": "m", "entity_id": "e", "model": "Task", "operation": "delete", "payload": null, "version": 2, "timestamp": 5}"#,
    )
    .unwrap();
    assert_eq!(absent, null);

    let pull: PullResponse = serde_json::from_str(
        r#"{"snapshots": [{"entity_id": "e", "model": "Task", "operation": "delete", "payload": null},
                          {"entity_id": "f", "model": "Task", "operation": "delete"}]}"#,
    )
    .unwrap();
    assert!(pull.snapshots.iter().all(|s| s.payload.is_empty()));
    assert_eq!(pull.new_sync_cursor, None);
    assert!(!pull.has_more);
    let empty: PullResponse = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, PullResponse::default());
}

#[test]
fn protocol_unknown_fields_are_tolerated() {
    let req: PushRequest = serde_json::from_str(
        r#"{"client_id": "c", "app": {"v": 3}, "mutations": [
            {"mutation_id": "m", "entity_id": "e", "model": "Task", "operation": "update",
             "payload": {"title": "x"}, "version": 2, "timestamp": 5, "device": "phone"}]}"#,
    )
    .unwrap();
    assert_eq!(req.mutations[0].payload, obj(json!({"title": "x"})));
    let resp: PushResponse =
        serde_json::from_str(r#"{"applied": ["a"], "server_time": 123, "rejected": [{"mutation_id": "b", "reason": "error", "retry_after": 5}]}"#)
            .unwrap();
    assert_eq!(resp.rejected[0].reason, RejectionReason::Error);
    let pull: PullResponse = serde_json::from_str(
        r#"{"snapshots": [{"entity_id": "e", "model": "Task", "operation": "upsert", "payload": {}, "seq": 9}], "new_sync_cursor": 7, "has_more": true, "x": 1}"#,
    )
    .unwrap();
    assert!(pull.has_more);
}

#[test]
fn protocol_unknown_rejection_reason_is_kept_verbatim() {
    let text = r#"{"applied": [], "rejected": [{"mutation_id": "m", "reason": "quota_exceeded", "data": {"limit": 10}}], "conflicts": []}"#;
    let resp: PushResponse = round_trips(text);
    assert_eq!(resp.rejected[0].reason, RejectionReason::Other("quota_exceeded".into()));
    assert_eq!(resp.rejected[0].reason.as_str(), "quota_exceeded");
    for known in ["validation_failed", "error", "not_found", "duplicate", "conflict"] {
        let r: RejectionReason = serde_json::from_value(json!(known)).unwrap();
        assert!(!matches!(r, RejectionReason::Other(_)), "{known} is a known reason");
        assert_eq!(serde_json::to_value(&r).unwrap(), json!(known));
    }
}

// ---------------------------------------------------------------------------------------
// Create, idempotent create, whitelist
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn applied_create_is_pulled_as_an_upsert_snapshot_with_its_payload() {
    let srv = serve_default().await;
    let (m, e) = (ulid(), ulid());
    let payload = json!({"title": "Buy milk", "done": false, "priority": 3, "estimate_hours": 1.5,
                         "metadata": {"tags": ["a", {"b": null}]}});
    assert_eq!(srv.push(vec![create(&m, &e, payload.clone(), T)]).await, applied(&[&m]));

    let pull = srv.pull(None, None).await;
    assert_eq!(pull["snapshots"], json!([upsert(&e, payload)]));
    assert_eq!(pull["has_more"], json!(false));
    assert!(pull["new_sync_cursor"].is_i64());
}

#[tokio::test]
async fn create_of_an_existing_sync_key_updates_the_record() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    assert_eq!(srv.push(vec![create(&m1, &e, json!({"title": "first", "notes": "n"}), T)]).await, applied(&[&m1]));
    // Even with an older timestamp: creates are never conflicts.
    let resp = srv.push(vec![mutation(&m2, "create", &e, json!({"title": "second"}), 2, T - 60_000)]).await;
    assert_eq!(resp, applied(&[&m2]));

    let rec = srv.record(&e).await;
    assert_eq!(rec["state"], json!({"tether_id": e, "title": "second"}));
    assert_eq!(rec["version"], json!(2));
    let pull = srv.pull(None, None).await;
    assert_eq!(pull["snapshots"], json!([upsert(&e, json!({"title": "second"}))]));
}

#[tokio::test]
async fn fields_outside_the_whitelist_are_silently_not_stored() {
    let srv = serve_default().await;
    let (m, e) = (ulid(), ulid());
    let resp = srv
        .push(vec![create(&m, &e, json!({"title": "a", "is_admin": true, "tether_id": "01J0SP00F000000000000000AA", "id": 7}), T)])
        .await;
    assert_eq!(resp, applied(&[&m]));
    assert_eq!(srv.record(&e).await["state"], json!({"tether_id": e, "title": "a"}));
    assert_eq!(srv.pull(None, None).await["snapshots"], json!([upsert(&e, json!({"title": "a"}))]));
}

#[tokio::test]
async fn unknown_fields_and_an_absent_or_null_payload_are_accepted_over_http() {
    let srv = serve_default().await;
    let (m1, m2, m3, e) = (ulid(), ulid(), ulid(), ulid());
    let mut c = create(&m1, &e, json!({"title": "a"}), T);
    c["device"] = json!("phone");
    let (status, resp) = srv.post("/tether/push", &json!({"client_id": CLIENT, "sdk": {"v": 1}, "mutations": [c]})).await;
    assert_eq!((status, resp), (200, applied(&[&m1])));

    // `payload: null` on a create is an empty payload: the required title is missing.
    let mut null_payload = create(&m2, &e, json!({}), T);
    null_payload["payload"] = Value::Null;
    assert_eq!(
        srv.push(vec![null_payload]).await,
        only_rejected(vec![validation(&m2, json!({"title": ["The title field is required."]}))])
    );

    // An absent payload on a delete is fine.
    let mut no_payload = delete(&m3, &e, 2, T + 1);
    no_payload.as_object_mut().unwrap().remove("payload");
    assert_eq!(srv.push(vec![no_payload]).await, applied(&[&m3]));

    // A push without mutations answers three empty arrays.
    let (status, resp) = srv.post("/tether/push", &json!({"client_id": CLIENT})).await;
    assert_eq!((status, resp), (200, applied(&[])));
    let (status, resp) = srv.post("/tether/push", &json!({"client_id": CLIENT, "mutations": null})).await;
    assert_eq!((status, resp), (200, applied(&[])));
}

// ---------------------------------------------------------------------------------------
// Duplicates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_push_twice_answers_duplicate_and_is_not_applied_again() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let first = vec![create(&m1, &e, json!({"title": "a"}), T)];
    assert_eq!(srv.push(first.clone()).await, applied(&[&m1]));
    assert_eq!(srv.push(vec![update(&m2, &e, json!({"title": "b"}), 2, T + 10)]).await, applied(&[&m2]));

    // The retried create would reset the title to "a" if it were applied again.
    assert_eq!(srv.push(first).await, only_rejected(vec![rejected(&m1, "duplicate")]));
    let rec = srv.record(&e).await;
    assert_eq!(rec["state"], json!({"tether_id": e, "title": "b"}));
    assert_eq!(rec["version"], json!(2));
}

#[tokio::test]
async fn a_mutation_id_twice_in_one_batch_is_applied_once_then_duplicate() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let resp = srv
        .push(vec![
            create(&m1, &e, json!({"title": "a"}), T),
            update(&m2, &e, json!({"title": "b"}), 2, T + 10),
            create(&m1, &e, json!({"title": "c"}), T + 20),
        ])
        .await;
    assert_eq!(resp, json!({"applied": [m1, m2], "rejected": [rejected(&m1, "duplicate")], "conflicts": []}));
    assert_eq!(srv.record(&e).await["state"], json!({"tether_id": e, "title": "b"}));
}

#[tokio::test]
async fn a_rejected_mutation_is_not_logged_and_can_be_retried() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let upd = update(&m1, &e, json!({"title": "b"}), 2, T + 10);
    assert_eq!(srv.push(vec![upd.clone()]).await, only_rejected(vec![rejected(&m1, "not_found")]));
    assert_eq!(srv.push(vec![create(&m2, &e, json!({"title": "a"}), T)]).await, applied(&[&m2]));
    assert_eq!(srv.push(vec![upd]).await, applied(&[&m1]));
    assert_eq!(srv.record(&e).await["state"]["title"], json!("b"));
}

// ---------------------------------------------------------------------------------------
// Conflicts and resolvers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_update_older_than_the_last_write_conflicts_and_the_server_wins() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "Server", "priority": 2}), T)]).await;
    let before = srv.record(&e).await;

    let resp = srv.push(vec![update(&m2, &e, json!({"title": "Client"}), 2, T - 1)]).await;
    assert_eq!(
        resp,
        json!({"applied": [], "rejected": [], "conflicts": [
            conflict(&m2, json!({"tether_id": e, "title": "Server", "priority": 2}), T_RFC3339)]})
    );
    assert_eq!(srv.record(&e).await, before, "a lost conflict changes nothing");
}

#[tokio::test]
async fn an_update_with_an_equal_or_newer_timestamp_applies() {
    let srv = serve_default().await;
    let (m1, m2, m3, e) = (ulid(), ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "v1"}), T)]).await;
    assert_eq!(srv.push(vec![update(&m2, &e, json!({"title": "v2"}), 2, T)]).await, applied(&[&m2]));
    assert_eq!(srv.push(vec![update(&m3, &e, json!({"title": "v3"}), 3, T + 1)]).await, applied(&[&m3]));
    let rec = srv.record(&e).await;
    assert_eq!(rec["state"], json!({"tether_id": e, "title": "v3"}));
    assert_eq!(rec["updated_at_us"], json!((T + 1) * 1000));
    assert_eq!(rec["version"], json!(3));
}

#[tokio::test]
async fn a_delete_older_than_the_last_write_conflicts_too() {
    let srv = serve_default().await;
    let (m1, m2, m3, e) = (ulid(), ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "keep"}), T)]).await;
    let resp = srv.push(vec![delete(&m2, &e, 2, T - 1000)]).await;
    assert_eq!(
        resp,
        json!({"applied": [], "rejected": [], "conflicts": [conflict(&m2, json!({"tether_id": e, "title": "keep"}), T_RFC3339)]})
    );
    assert_eq!(srv.record(&e).await["deleted"], json!(false));
    assert_eq!(srv.push(vec![delete(&m3, &e, 2, T)]).await, applied(&[&m3]));
    assert_eq!(srv.record(&e).await["deleted"], json!(true));
}

#[tokio::test]
async fn conflict_server_updated_at_is_rfc3339_utc_of_the_last_write() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let whole_second = 1_716_000_000_000;
    srv.push(vec![create(&m1, &e, json!({"title": "S"}), whole_second)]).await;
    let resp = srv.push(vec![update(&m2, &e, json!({"title": "C"}), 2, whole_second - 1)]).await;
    assert_eq!(resp["conflicts"][0]["data"]["server_updated_at"], json!("2024-05-18T02:40:00Z"));
}

#[tokio::test]
async fn client_wins_resolver_applies_the_client_payload() {
    let srv = serve(SyncServer::builder().resolver(ClientWins).build().unwrap()).await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "Server", "notes": "server notes"}), T)]).await;
    let resp = srv.push(vec![update(&m2, &e, json!({"title": "Client", "done": true}), 2, T - 5)]).await;
    assert_eq!(resp, applied(&[&m2]));
    let rec = srv.record(&e).await;
    assert_eq!(rec["state"], json!({"tether_id": e, "title": "Client", "done": true}));
    // The record keeps its newest write time, so older writes still conflict with it.
    assert_eq!(rec["updated_at_us"], json!(T * 1000));
}

#[tokio::test]
async fn merge_fields_resolver_keeps_server_fields_and_lets_client_fields_override() {
    let srv = serve(SyncServer::builder().resolver(MergeFields).build().unwrap()).await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "Server", "notes": "server notes", "priority": 2}), T)]).await;
    let resp = srv.push(vec![update(&m2, &e, json!({"title": "Client", "done": true, "junk": 1}), 2, T - 5)]).await;
    assert_eq!(resp, applied(&[&m2]));
    assert_eq!(
        srv.record(&e).await["state"],
        json!({"tether_id": e, "title": "Client", "notes": "server notes", "priority": 2, "done": true})
    );
}

#[tokio::test]
async fn resolved_conflicts_with_a_client_payload_are_still_validated() {
    let srv = serve(SyncServer::builder().resolver(ClientWins).build().unwrap()).await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "Server"}), T)]).await;
    let resp = srv.push(vec![update(&m2, &e, json!({"done": "yes"}), 2, T - 5)]).await;
    assert_eq!(
        resp,
        only_rejected(vec![validation(
            &m2,
            json!({"title": ["The title field is required."], "done": ["The done field must be true or false."]})
        )])
    );
    assert_eq!(srv.record(&e).await["state"], json!({"tether_id": e, "title": "Server"}));
}

// ---------------------------------------------------------------------------------------
// Payload mapper
// ---------------------------------------------------------------------------------------

fn owned_task_schema() -> Schema {
    Schema::new([ModelSpec::new("Task")
        .field("title", FieldKind::Text { max_chars: 255 }, true)
        .field("owner_id", FieldKind::Text { max_chars: 64 }, false)])
}

fn stamp_owner(client_id: &str, _m: &Mutation, mut p: Object) -> Object {
    p.insert("owner_id".into(), Value::String(client_id.to_owned()));
    p
}

#[tokio::test]
async fn payload_mapper_stamps_a_field_the_client_cannot_override() {
    let server = SyncServer::builder()
        .schema(owned_task_schema())
        .payload_mapper(|client_id: &str, _m: &Mutation, mut p: Object| {
            p.insert("owner_id".into(), Value::String(format!("user:{client_id}")));
            p
        })
        .build()
        .unwrap();
    let srv = serve(server).await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let resp = srv.push_as("device-a", vec![create(&m1, &e, json!({"title": "a", "owner_id": "spoofed"}), T)]).await;
    assert_eq!(resp, applied(&[&m1]));
    assert_eq!(srv.record(&e).await["state"], json!({"tether_id": e, "title": "a", "owner_id": "user:device-a"}));

    srv.push_as("device-b", vec![update(&m2, &e, json!({"title": "b"}), 2, T + 1)]).await;
    assert_eq!(
        srv.pull(None, None).await["snapshots"],
        json!([upsert(&e, json!({"title": "b", "owner_id": "user:device-b"}))])
    );
}

#[tokio::test]
async fn payload_mapper_output_survives_client_wins_and_merge_conflict_resolution() {
    for resolved_by_merge in [false, true] {
        let builder = SyncServer::builder().schema(owned_task_schema()).payload_mapper(stamp_owner);
        let server = if resolved_by_merge { builder.resolver(MergeFields) } else { builder.resolver(ClientWins) };
        let srv = serve(server.build().unwrap()).await;
        let (m1, m2, e) = (ulid(), ulid(), ulid());
        srv.push_as("device-a", vec![create(&m1, &e, json!({"title": "a"}), T)]).await;
        // An older write (a conflict) must not be a way around the mapper.
        let resp = srv.push_as("device-b", vec![update(&m2, &e, json!({"title": "b", "owner_id": "spoofed"}), 2, T - 1)]).await;
        assert_eq!(resp, applied(&[&m2]));
        assert_eq!(
            srv.record(&e).await["state"],
            json!({"tether_id": e, "title": "b", "owner_id": "device-b"}),
            "merge resolver: {resolved_by_merge}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// not_found
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn update_and_delete_of_a_missing_record_are_not_found() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let resp = srv.push(vec![update(&m1, &e, json!({"title": "x"}), 2, T), delete(&m2, &e, 2, T)]).await;
    assert_eq!(resp, only_rejected(vec![rejected(&m1, "not_found"), rejected(&m2, "not_found")]));
    let (status, _) = srv.state("Task", &e).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn update_and_delete_of_a_soft_deleted_record_are_not_found() {
    let srv = serve_default().await;
    let (m1, m2, m3, m4, e) = (ulid(), ulid(), ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "x"}), T), delete(&m2, &e, 2, T + 1)]).await;
    // Newer and older timestamps alike: there is no live record to conflict with.
    let resp = srv
        .push(vec![update(&m3, &e, json!({"title": "y"}), 3, T + 2), update(&m4, &e, json!({"title": "z"}), 3, T - 2)])
        .await;
    assert_eq!(resp, only_rejected(vec![rejected(&m3, "not_found"), rejected(&m4, "not_found")]));
    let m5 = ulid();
    assert_eq!(srv.push(vec![delete(&m5, &e, 3, T + 3)]).await, only_rejected(vec![rejected(&m5, "not_found")]));
    let rec = srv.record(&e).await;
    assert_eq!((rec["deleted"].clone(), rec["state"].clone()), (json!(true), json!({"tether_id": e, "title": "x"})));
}

#[tokio::test]
async fn a_create_revives_a_soft_deleted_record() {
    let srv = serve_default().await;
    let (m1, m2, m3, e) = (ulid(), ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "x"}), T), delete(&m2, &e, 2, T + 1)]).await;
    let cursor = srv.pull(None, None).await["new_sync_cursor"].as_i64();
    assert_eq!(srv.push(vec![mutation(&m3, "create", &e, json!({"title": "again"}), 3, T + 2)]).await, applied(&[&m3]));
    let rec = srv.record(&e).await;
    assert_eq!(rec["deleted"], json!(false));
    assert_eq!(rec["state"], json!({"tether_id": e, "title": "again"}));
    assert_eq!(srv.pull(cursor, None).await["snapshots"], json!([upsert(&e, json!({"title": "again"}))]));
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_required_field_fails_validation() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    let resp = srv.push(vec![create(&m1, &e, json!({"done": true}), T), create(&m2, &e, json!({"title": null}), T)]).await;
    assert_eq!(
        resp,
        only_rejected(vec![
            validation(&m1, json!({"title": ["The title field is required."]})),
            validation(&m2, json!({"title": ["The title field is required."]})),
        ])
    );
    assert_eq!(srv.state("Task", &e).await.0, 404);
}

#[tokio::test]
async fn wrong_types_fail_validation_with_every_field_listed() {
    let srv = serve_default().await;
    let (m, e) = (ulid(), ulid());
    let payload = json!({"title": 42, "done": "yes", "priority": 1.5, "notes": ["x"], "due_at": "soon",
                         "project_id": false, "estimate_hours": "2h", "metadata": {"any": "thing"}});
    assert_eq!(
        srv.push(vec![create(&m, &e, payload, T)]).await,
        only_rejected(vec![validation(
            &m,
            json!({
                "title": ["The title field must be a string."],
                "done": ["The done field must be true or false."],
                "priority": ["The priority field must be an integer."],
                "notes": ["The notes field must be a string."],
                "due_at": ["The due at field must be an integer."],
                "project_id": ["The project id field must be a string."],
                "estimate_hours": ["The estimate hours field must be a number."],
            })
        )])
    );
}

#[tokio::test]
async fn out_of_range_values_and_too_long_text_fail_validation() {
    let srv = serve_default().await;
    let (m1, m2, m3, e) = (ulid(), ulid(), ulid(), ulid());
    let resp = srv
        .push(vec![
            create(&m1, &e, json!({"title": "t".repeat(256), "priority": 6, "project_id": "x".repeat(27)}), T),
            create(&m2, &e, json!({"title": "ok", "priority": -1, "due_at": -5}), T),
            // Exactly at the limits, in characters (not bytes).
            create(&m3, &e, json!({"title": "é".repeat(255), "priority": 5, "project_id": "x".repeat(26)}), T),
        ])
        .await;
    assert_eq!(
        resp,
        json!({"applied": [m3], "conflicts": [], "rejected": [
            validation(&m1, json!({
                "title": ["The title field must not be greater than 255 characters."],
                "priority": ["The priority field must not be greater than 5."],
                "project_id": ["The project id field must not be greater than 26 characters."],
            })),
            validation(&m2, json!({
                "priority": ["The priority field must be at least 0."],
                "due_at": ["The due at field must be at least 0."],
            })),
        ]})
    );
}

#[tokio::test]
async fn an_unknown_model_fails_validation() {
    let srv = serve_default().await;
    let (m, e) = (ulid(), ulid());
    let mut mu = create(&m, &e, json!({"title": "x"}), T);
    mu["model"] = json!("App\\Models\\Task");
    assert_eq!(
        srv.push(vec![mu]).await,
        only_rejected(vec![validation(&m, json!({"model": ["The selected model is invalid."]}))])
    );
}

#[tokio::test]
async fn bad_ulids_version_and_timestamp_fail_validation() {
    let srv = serve_default().await;
    let good = ulid();
    let resp = srv
        .push(vec![
            create("not-a-ulid", "01J0000000000000000000000", json!({"title": "x"}), T),
            mutation(&good, "create", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", json!({"title": "x"}), 0, -1),
        ])
        .await;
    assert_eq!(
        resp,
        only_rejected(vec![
            validation(
                "not-a-ulid",
                json!({"mutation_id": ["The mutation id must be a valid ULID."],
                       "entity_id": ["The entity id must be a valid ULID."]})
            ),
            validation(
                &good,
                json!({"entity_id": ["The entity id must be a valid ULID."],
                       "version": ["The version field must be at least 1."],
                       "timestamp": ["The timestamp field must be at least 0."]})
            ),
        ])
    );
    assert_eq!(srv.pull(None, None).await["snapshots"], json!([]));

    // The largest ULID is accepted, and so is lowercase (Laravel's HasUlids sends lowercase).
    let (m1, m2) = (ulid(), ulid().to_lowercase());
    let resp = srv
        .push(vec![
            create(&m1, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", json!({"title": "max"}), T),
            create(&m2, &ulid().to_lowercase(), json!({"title": "lower"}), T),
        ])
        .await;
    assert_eq!(resp, applied(&[&m1, &m2]));
}

// ---------------------------------------------------------------------------------------
// Soft delete and pull
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pull_after_a_delete_returns_a_delete_snapshot_with_an_empty_payload() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "x"}), T)]).await;
    let cursor = srv.pull(None, None).await["new_sync_cursor"].as_i64().unwrap();
    assert_eq!(srv.push(vec![delete(&m2, &e, 2, T + 1)]).await, applied(&[&m2]));
    let pull = srv.pull(Some(cursor), None).await;
    assert_eq!(pull["snapshots"], json!([{"entity_id": e, "model": "Task", "operation": "delete", "payload": {}}]));
    assert!(pull["new_sync_cursor"].as_i64().unwrap() > cursor);
    assert_eq!(pull["has_more"], json!(false));
}

#[tokio::test]
async fn a_first_pull_does_not_include_tombstones() {
    let srv = serve_default().await;
    let (m1, m2, m3, gone, kept) = (ulid(), ulid(), ulid(), ulid(), ulid());
    srv.push(vec![
        create(&m1, &gone, json!({"title": "gone"}), T),
        create(&m2, &kept, json!({"title": "kept"}), T),
        delete(&m3, &gone, 2, T + 1),
    ])
    .await;
    let pull = srv.pull(None, None).await;
    assert_eq!(pull["snapshots"], json!([upsert(&kept, json!({"title": "kept"}))]));

    // Only tombstones: nothing to send, and still no cursor.
    let srv = serve_default().await;
    srv.push(vec![create(&m1, &gone, json!({"title": "gone"}), T), delete(&m3, &gone, 2, T + 1)]).await;
    assert_eq!(srv.pull(None, None).await, json!({"snapshots": [], "new_sync_cursor": null, "has_more": false}));
}

#[tokio::test]
async fn pull_on_an_empty_server_returns_nothing_and_a_null_cursor() {
    let srv = serve_default().await;
    assert_eq!(srv.pull(None, None).await, json!({"snapshots": [], "new_sync_cursor": null, "has_more": false}));
    assert_eq!(srv.pull(Some(42), Some(10)).await, json!({"snapshots": [], "new_sync_cursor": 42, "has_more": false}));
}

#[tokio::test]
async fn the_pull_cursor_is_in_microseconds_and_advances() {
    let srv = serve_default().await;
    let (m1, m2, m3, a, b) = (ulid(), ulid(), ulid(), ulid(), ulid());
    let start = now_us();
    srv.push(vec![create(&m1, &a, json!({"title": "a"}), T)]).await;
    let p1 = srv.pull(None, None).await;
    let c1 = p1["new_sync_cursor"].as_i64().unwrap();
    // A server change stamp in microseconds: close to the wall clock, not to T or T * 1000.
    assert!(c1 >= start - 1_000_000 && c1 <= now_us() + 1_000_000, "cursor {c1} is not a microsecond timestamp of now");

    srv.push(vec![create(&m2, &b, json!({"title": "b"}), T)]).await;
    let p2 = srv.pull(Some(c1), None).await;
    assert_eq!(p2["snapshots"], json!([upsert(&b, json!({"title": "b"}))]));
    let c2 = p2["new_sync_cursor"].as_i64().unwrap();
    assert!(c2 > c1);

    // Nothing new: no snapshots, the cursor echoed.
    assert_eq!(srv.pull(Some(c2), None).await, json!({"snapshots": [], "new_sync_cursor": c2, "has_more": false}));

    // An update moves the record after the cursor again (once, with its latest state).
    srv.push(vec![update(&m3, &a, json!({"title": "a2"}), 2, T + 1)]).await;
    let p3 = srv.pull(Some(c2), None).await;
    assert_eq!(p3["snapshots"], json!([upsert(&a, json!({"title": "a2"}))]));
    assert!(p3["new_sync_cursor"].as_i64().unwrap() > c2);
}

#[tokio::test]
async fn limit_pages_with_has_more_until_the_last_page() {
    let srv = serve_default().await;
    let ids: Vec<String> = (0..5).map(|_| ulid()).collect();
    srv.push(ids.iter().map(|e| create(&ulid(), e, json!({"title": e}), T)).collect()).await;
    let mut cursor = None;
    let mut pages = Vec::new();
    loop {
        let p = srv.pull(cursor, Some(2)).await;
        pages.push((p["snapshots"].as_array().unwrap().len(), p["has_more"].as_bool().unwrap()));
        cursor = p["new_sync_cursor"].as_i64();
        if !p["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pages, vec![(2, true), (2, true), (1, false)]);
    // An exact multiple of the limit: the last full page says has_more false.
    let p = srv.pull(None, Some(5)).await;
    assert_eq!((p["snapshots"].as_array().unwrap().len(), p["has_more"].clone()), (5, json!(false)));
}

#[tokio::test]
async fn paging_250_records_by_100_returns_each_record_exactly_once() {
    let srv = serve_default().await;
    let ids: Vec<String> = (0..250).map(|_| ulid()).collect();
    for chunk in ids.chunks(100) {
        let resp = srv.push(chunk.iter().map(|e| create(&ulid(), e, json!({"title": e}), T)).collect()).await;
        assert_eq!(resp["applied"].as_array().unwrap().len(), chunk.len());
    }
    let mut cursor: Option<i64> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut pages = Vec::new();
    loop {
        let p = srv.pull(cursor, Some(100)).await;
        let snaps = p["snapshots"].as_array().unwrap();
        for s in snaps {
            assert_eq!(s["operation"], json!("upsert"));
            assert_eq!(s["payload"]["title"], s["entity_id"]);
            seen.push(s["entity_id"].as_str().unwrap().to_owned());
        }
        let next = p["new_sync_cursor"].as_i64().unwrap();
        assert!(cursor.is_none_or(|c| next > c));
        cursor = Some(next);
        pages.push((snaps.len(), p["has_more"].as_bool().unwrap()));
        if !p["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pages, vec![(100, true), (100, true), (50, false)]);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>(), ids.iter().collect::<BTreeSet<_>>());
    // With the last cursor: nothing new, cursor echoed.
    assert_eq!(srv.pull(cursor, Some(100)).await, json!({"snapshots": [], "new_sync_cursor": cursor, "has_more": false}));
}

// ---------------------------------------------------------------------------------------
// Mixed batch
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_mixed_batch_sorts_every_outcome_into_its_array_in_batch_order() {
    let srv = serve_default().await;
    let (m_seed, d) = (ulid(), ulid());
    srv.push(vec![create(&m_seed, &d, json!({"title": "Server"}), T)]).await;

    let (m_create, m_invalid, m_conflict, m_missing, m_twice, m_delete_conflict, m_update) =
        (ulid(), ulid(), ulid(), ulid(), ulid(), ulid(), ulid());
    let (a, b, c, f) = (ulid(), ulid(), ulid(), ulid());
    let resp = srv
        .push(vec![
            create(&m_create, &a, json!({"title": "A"}), T),
            create(&m_invalid, &b, json!({"done": true}), T),
            update(&m_conflict, &d, json!({"title": "Client"}), 2, T - 1),
            create(&m_seed, &d, json!({"title": "replayed"}), T),
            update(&m_missing, &c, json!({"title": "C"}), 2, T),
            create(&m_twice, &f, json!({"title": "F"}), T),
            create(&m_twice, &f, json!({"title": "F again"}), T + 1),
            delete(&m_delete_conflict, &d, 2, T - 2),
            update(&m_update, &a, json!({"title": "A2"}), 2, T + 1),
        ])
        .await;
    let server_d = json!({"tether_id": d, "title": "Server"});
    assert_eq!(
        resp,
        json!({
            "applied": [m_create, m_twice, m_update],
            "rejected": [
                validation(&m_invalid, json!({"title": ["The title field is required."]})),
                rejected(&m_seed, "duplicate"),
                rejected(&m_missing, "not_found"),
                rejected(&m_twice, "duplicate"),
            ],
            "conflicts": [
                conflict(&m_conflict, server_d.clone(), T_RFC3339),
                conflict(&m_delete_conflict, server_d.clone(), T_RFC3339),
            ],
        })
    );
    assert_eq!(srv.record(&d).await["state"], server_d);
    assert_eq!(srv.record(&a).await["state"]["title"], json!("A2"));
    assert_eq!(srv.record(&f).await["state"]["title"], json!("F"));
    assert_eq!(srv.state("Task", &b).await.0, 404);
    assert_eq!(srv.state("Task", &c).await.0, 404);
}

// ---------------------------------------------------------------------------------------
// State lookup
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn state_lookup_answers_state_deleted_and_version() {
    let srv = serve_default().await;
    let (m1, m2, e) = (ulid(), ulid(), ulid());
    srv.push(vec![create(&m1, &e, json!({"title": "x", "done": false}), T)]).await;
    let (status, body) = srv.state("Task", &e).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"model": "Task", "entity_id": e, "deleted": false, "version": 1, "updated_at": T_RFC3339,
               "updated_at_us": T * 1000, "state": {"tether_id": e, "title": "x", "done": false}})
    );
    srv.push(vec![delete(&m2, &e, 2, T + 1)]).await;
    let (status, body) = srv.state("Task", &e).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"model": "Task", "entity_id": e, "deleted": true, "version": 2, "updated_at": "2024-05-18T02:40:00.124Z",
               "updated_at_us": (T + 1) * 1000, "state": {"tether_id": e, "title": "x", "done": false}})
    );
}

#[tokio::test]
async fn state_lookup_of_an_unknown_record_is_a_json_404() {
    let srv = serve_default().await;
    let not_found = json!({"error": "not_found", "message": "no such record"});
    assert_eq!(srv.state("Task", &ulid()).await, (404, not_found.clone()));
    assert_eq!(srv.state("NoSuchModel", &ulid()).await, (404, not_found));
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

fn assert_error(got: (u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    assert_ne!(s, 500);
    let o = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(o.keys().collect::<Vec<_>>(), vec!["error", "message"], "{body}");
    assert_eq!(o["error"], json!(code), "{body}");
    assert!(o["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// The server still applies and serves after bad input.
async fn assert_still_answers(srv: &Srv) {
    let (m, e) = (ulid(), ulid());
    assert_eq!(srv.push(vec![create(&m, &e, json!({"title": "alive"}), T)]).await, applied(&[&m]));
    assert_eq!(srv.record(&e).await["state"]["title"], json!("alive"));
}

#[tokio::test]
async fn invalid_json_is_a_400_invalid_json() {
    let srv = serve_default().await;
    for path in ["/tether/push", "/tether/pull"] {
        for body in [&b"{\"client_id\": "[..], b"{'client_id': 'x'}", b"{\"client_id\": \"x\"} trailing", b"nul"] {
            assert_error(srv.post_bytes(path, Some("application/json"), body.to_vec()).await, 400, "invalid_json");
        }
    }
    assert_still_answers(&srv).await;
}

#[tokio::test]
async fn an_empty_body_is_a_400() {
    let srv = serve_default().await;
    for path in ["/tether/push", "/tether/pull"] {
        assert_error(srv.post_bytes(path, Some("application/json"), Vec::new()).await, 400, "invalid_json");
        assert_error(srv.post_bytes(path, None, Vec::new()).await, 400, "invalid_json");
    }
}

#[tokio::test]
async fn non_utf8_bytes_are_a_400() {
    let srv = serve_default().await;
    for path in ["/tether/push", "/tether/pull"] {
        assert_error(srv.post_bytes(path, Some("application/json"), vec![0xff, 0xfe, 0xfd]).await, 400, "invalid_json");
        let mut inside_a_string = b"{\"client_id\": \"".to_vec();
        inside_a_string.extend([0xc3, 0x28, 0xff]);
        inside_a_string.extend(b"\"}");
        assert_error(srv.post_bytes(path, Some("application/json"), inside_a_string).await, 400, "invalid_json");
    }
    assert_still_answers(&srv).await;
}

#[tokio::test]
async fn wrong_shapes_are_a_422_invalid_request() {
    let srv = serve_default().await;
    let (m, e) = (ulid(), ulid());
    let bodies = [
        json!({"mutations": []}),
        json!({"client_id": CLIENT, "mutations": "nope"}),
        json!({"client_id": CLIENT, "mutations": {"0": {}}}),
        json!({"client_id": CLIENT, "mutations": [mutation(&m, "upsert", &e, json!({"title": "x"}), 1, T)]}),
        json!({"client_id": CLIENT, "mutations": [{"mutation_id": m, "entity_id": e, "model": "Task", "operation": "create"}]}),
        json!({"client_id": CLIENT, "mutations": [mutation(&m, "create", &e, json!(["title"]), 1, T)]}),
        json!({"client_id": CLIENT, "mutations": [mutation(&m, "create", &e, json!({"title": "x"}), 1, T)
                                                   .as_object().unwrap().clone().into_iter()
                                                   .chain([("timestamp".to_owned(), json!("yesterday"))]).collect::<Object>()]}),
        json!({"client_id": 42, "mutations": []}),
        json!([]),
    ];
    for body in &bodies {
        assert_error(srv.post("/tether/push", body).await, 422, "invalid_request");
    }
    for body in [json!({}), json!({"client_id": CLIENT, "last_sync_cursor": "abc"}), json!({"client_id": CLIENT, "limit": -1})] {
        assert_error(srv.post("/tether/pull", &body).await, 422, "invalid_request");
    }
    // Nothing was applied.
    assert_eq!(srv.state("Task", &e).await.0, 404);
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_a_413() {
    let limits = Limits { max_body_bytes: 1024, max_batch: 100, ..Limits::default() };
    let srv = serve(SyncServer::builder().limits(limits).build().unwrap()).await;
    let (m, e) = (ulid(), ulid());
    let big = json!({"client_id": CLIENT, "mutations": [create(&m, &e, json!({"title": "x", "notes": "n".repeat(4096)}), T)]});
    let got = srv.post("/tether/push", &big).await;
    assert_eq!(got.1, json!({"error": "payload_too_large", "message": "request body is larger than 1024 bytes"}));
    assert_error(got, 413, "payload_too_large");
    let big_pull = json!({"client_id": "x".repeat(2048)});
    assert_error(srv.post("/tether/pull", &big_pull).await, 413, "payload_too_large");
    assert_eq!(srv.state("Task", &e).await.0, 404);
    assert_still_answers(&srv).await;
}

#[tokio::test]
async fn nesting_100000_deep_is_rejected_and_the_server_still_answers() {
    let srv = serve_default().await;
    let depth = 100_000;
    let (m, e) = (ulid(), ulid());
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    // In a payload value: over serde_json's recursion limit -> 400.
    let body = format!(
        r#"{{"client_id":"{CLIENT}","mutations":[{{"mutation_id":"{m}","entity_id":"{e}","model":"Task","operation":"create","payload":{{"title":"x","metadata":{nested}}},"version":1,"timestamp":{T}}}]}}"#
    );
    assert_error(srv.post_bytes("/tether/push", Some("application/json"), body.into_bytes()).await, 400, "invalid_json");
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let body = format!(
        r#"{{"client_id":"{CLIENT}","mutations":[{{"mutation_id":"{m}","entity_id":"{e}","model":"Task","operation":"create","payload":{objects},"version":1,"timestamp":{T}}}]}}"#
    );
    assert_error(srv.post_bytes("/tether/push", Some("application/json"), body.into_bytes()).await, 400, "invalid_json");
    // Unterminated nesting inside an (ignored) unknown field -> 400.
    let body = format!(r#"{{"client_id":"{CLIENT}","x":{}"#, "[".repeat(depth));
    assert_error(srv.post_bytes("/tether/pull", Some("application/json"), body.into_bytes()).await, 400, "invalid_json");
    // Well-formed nesting inside an unknown field is skipped without recursion (tolerated).
    let body = format!(r#"{{"client_id":"{CLIENT}","x":{nested}}}"#);
    let got = srv.post_bytes("/tether/pull", Some("application/json"), body.into_bytes()).await;
    assert_eq!(got, (200, json!({"snapshots": [], "new_sync_cursor": null, "has_more": false})));
    // A nested array where a request object belongs, closed or not: the wrong shape, found
    // at the first level -> 422.
    for path in ["/tether/push", "/tether/pull"] {
        assert_error(srv.post_bytes(path, Some("application/json"), nested.clone().into_bytes()).await, 422, "invalid_request");
        assert_error(srv.post_bytes(path, Some("application/json"), "[".repeat(depth).into_bytes()).await, 422, "invalid_request");
    }

    assert_eq!(srv.state("Task", &e).await.0, 404);
    assert_still_answers(&srv).await;
    assert_eq!(srv.pull(None, None).await["snapshots"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_non_json_content_type_is_a_415() {
    let srv = serve_default().await;
    let push = serde_json::to_vec(&json!({"client_id": CLIENT, "mutations": [create(&ulid(), &ulid(), json!({"title": "x"}), T)]})).unwrap();
    let pull = serde_json::to_vec(&json!({"client_id": CLIENT, "last_sync_cursor": null})).unwrap();
    for (path, body) in [("/tether/push", &push), ("/tether/pull", &pull)] {
        for ct in ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded"] {
            let got = srv.post_bytes(path, Some(ct), body.clone()).await;
            assert_eq!(got.1, json!({"error": "unsupported_media_type", "message": "content type must be application/json"}));
            assert_error(got, 415, "unsupported_media_type");
        }
        // JSON media types (with parameters, or +json) are fine, and so is no content type.
        for ct in [Some("application/json; charset=utf-8"), Some("application/vnd.tether+json"), None] {
            assert_eq!(srv.post_bytes(path, ct, body.clone()).await.0, 200);
        }
    }
    assert_eq!(srv.pull(None, None).await["snapshots"].as_array().unwrap().len(), 1, "only the accepted push applied");
}

#[tokio::test]
async fn a_batch_over_max_batch_is_a_422_too_many_mutations() {
    let limits = Limits { max_body_bytes: Limits::DEFAULT_MAX_BODY_BYTES, max_batch: 10, ..Limits::default() };
    let srv = serve(SyncServer::builder().limits(limits).build().unwrap()).await;
    let ids: Vec<String> = (0..11).map(|_| ulid()).collect();
    let batch: Vec<Value> = ids.iter().map(|e| create(&ulid(), e, json!({"title": "x"}), T)).collect();
    let got = srv.post("/tether/push", &json!({"client_id": CLIENT, "mutations": batch})).await;
    assert_eq!(got.1, json!({"error": "too_many_mutations", "message": "a push may carry at most 10 mutations"}));
    assert_error(got, 422, "too_many_mutations");
    assert_eq!(srv.state("Task", &ids[0]).await.0, 404, "nothing of the batch was applied");
    // Exactly max_batch is fine.
    let resp = srv.push(batch[..10].to_vec()).await;
    assert_eq!(resp["applied"].as_array().unwrap().len(), 10);
}

// ---------------------------------------------------------------------------------------
// Property: outcomes follow the rules, and replays are duplicates
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Applied,
    Duplicate,
    NotFound,
    Conflict,
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    title: String,
    deleted: bool,
    version: u64,
    updated_ms: i64,
}

/// The protocol's rules for a valid Task mutation, over an in-memory model.
fn simulate(
    records: &mut HashMap<String, ModelRecord>,
    log: &mut BTreeSet<String>,
    batch: &[(String, &'static str, String, String, u64, i64)],
) -> Vec<Kind> {
    batch
        .iter()
        .map(|(mid, op, eid, title, version, ts)| {
            if log.contains(mid) {
                return Kind::Duplicate;
            }
            let live = records.get(eid).filter(|r| !r.deleted).cloned();
            if *op != "create" && live.as_ref().is_some_and(|r| *ts < r.updated_ms) {
                return Kind::Conflict;
            }
            // A record's version never moves backwards (a stored row keeps the higher one,
            // deleted or not).
            let version = records.get(eid).map_or(*version, |r| r.version.max(*version));
            match (*op, live) {
                ("create", live) => {
                    let updated_ms = live.map_or(*ts, |r| r.updated_ms.max(*ts));
                    records.insert(eid.clone(), ModelRecord { title: title.clone(), deleted: false, version, updated_ms });
                }
                ("update", Some(r)) => {
                    let updated_ms = r.updated_ms.max(*ts);
                    records.insert(eid.clone(), ModelRecord { title: title.clone(), deleted: false, version, updated_ms });
                }
                ("delete", Some(r)) => {
                    records.insert(eid.clone(), ModelRecord { deleted: true, version, updated_ms: r.updated_ms.max(*ts), ..r });
                }
                _ => return Kind::NotFound,
            }
            log.insert(mid.clone());
            Kind::Applied
        })
        .collect()
}

/// Per mutation id, the outcome the server reported; checks each id appears exactly once
/// and each array is in batch order.
fn outcomes(resp: &Value, batch_ids: &[String]) -> Vec<Kind> {
    let mut found: BTreeMap<String, (Kind, usize)> = BTreeMap::new();
    let mut add = |id: &str, kind: Kind, array: usize| {
        assert!(found.insert(id.to_owned(), (kind, array)).is_none(), "{id} appears more than once in {resp}");
    };
    for id in resp["applied"].as_array().unwrap() {
        add(id.as_str().unwrap(), Kind::Applied, 0);
    }
    for r in resp["rejected"].as_array().unwrap() {
        let kind = match r["reason"].as_str().unwrap() {
            "duplicate" => Kind::Duplicate,
            "not_found" => Kind::NotFound,
            other => panic!("unexpected rejection {other}: {resp}"),
        };
        add(r["mutation_id"].as_str().unwrap(), kind, 1);
    }
    for c in resp["conflicts"].as_array().unwrap() {
        assert_eq!(c["reason"], json!("conflict"));
        assert!(c["data"]["server_state"]["tether_id"].is_string());
        assert!(c["data"]["server_updated_at"].as_str().unwrap().ends_with('Z'));
        add(c["mutation_id"].as_str().unwrap(), Kind::Conflict, 2);
    }
    assert_eq!(found.len(), batch_ids.len(), "every mutation id appears exactly once: {resp}");
    // Batch order within each array.
    for (array, key) in [(0, "applied"), (1, "rejected"), (2, "conflicts")] {
        let expected: Vec<&String> = batch_ids.iter().filter(|id| found[*id].1 == array).collect();
        let got: Vec<&str> = resp[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().or_else(|| v["mutation_id"].as_str()).unwrap())
            .collect();
        assert_eq!(got, expected.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "{key} out of batch order");
    }
    batch_ids.iter().map(|id| found[id].0).collect()
}

fn op_strategy() -> impl Strategy<Value = Vec<(u8, usize, i64)>> {
    prop::collection::vec((0u8..3, 0usize..3, 0i64..6), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_batches_follow_the_rules_and_replays_are_duplicates(ops in op_strategy()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let srv = serve_default().await;
            let entities: Vec<String> = (0..3u128).map(|i| ulid::Ulid::from_parts(T as u64, i + 1).to_string()).collect();
            let batch: Vec<(String, &'static str, String, String, u64, i64)> = ops
                .iter()
                .enumerate()
                .map(|(i, (op, ent, dt))| {
                    let op = ["create", "update", "delete"][*op as usize];
                    (ulid(), op, entities[*ent].clone(), format!("t{i}"), i as u64 + 1, T + dt)
                })
                .collect();
            let wire: Vec<Value> = batch
                .iter()
                .map(|(mid, op, eid, title, version, ts)| {
                    let payload = if *op == "delete" { json!({}) } else { json!({"title": title}) };
                    mutation(mid, op, eid, payload, *version, *ts)
                })
                .collect();
            let ids: Vec<String> = batch.iter().map(|b| b.0.clone()).collect();
            let mut records = HashMap::new();
            let mut log = BTreeSet::new();

            let first = outcomes(&srv.push(wire.clone()).await, &ids);
            assert_eq!(first, simulate(&mut records, &mut log, &batch), "first push of {batch:?}");
            let applied_first: BTreeSet<&String> = ids.iter().zip(&first).filter(|(_, k)| **k == Kind::Applied).map(|(id, _)| id).collect();

            let replay = outcomes(&srv.push(wire).await, &ids);
            for (id, kind) in ids.iter().zip(&replay) {
                assert_eq!(*kind == Kind::Duplicate, applied_first.contains(id), "replay of {id}: {kind:?}");
            }
            assert_eq!(replay, simulate(&mut records, &mut log, &batch), "replay of {batch:?}");

            // Final state, record by record, and a full pull.
            let mut live = BTreeMap::new();
            for eid in &entities {
                let (status, body) = srv.state("Task", eid).await;
                match records.get(eid) {
                    None => assert_eq!(status, 404),
                    Some(r) => {
                        assert_eq!(status, 200);
                        assert_eq!(body["deleted"], json!(r.deleted));
                        assert_eq!(body["version"], json!(r.version));
                        assert_eq!(body["updated_at_us"], json!(r.updated_ms * 1000));
                        assert_eq!(body["state"], json!({"tether_id": eid, "title": r.title}));
                        if !r.deleted {
                            live.insert(eid.clone(), json!({"title": r.title}));
                        }
                    }
                }
            }
            let pull = srv.pull(None, None).await;
            let pulled: BTreeMap<String, Value> = pull["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    assert_eq!(s["operation"], json!("upsert"));
                    (s["entity_id"].as_str().unwrap().to_owned(), s["payload"].clone())
                })
                .collect();
            assert_eq!(pulled, live);
        });
    }
}

/// Issue 14: a device whose clock is far ahead would win every conflict. A timestamp more than
/// `max_clock_ahead_ms` ahead of the server clock is rejected `validation_failed` with a
/// message that says so; the tolerance is configurable.
#[tokio::test]
async fn a_timestamp_too_far_ahead_of_the_server_clock_is_rejected() {
    let now = chrono::Utc::now().timestamp_millis();
    let hour = 3_600_000;
    let srv = serve_default().await;
    let (ok, ahead, year_3000) = (ulid(), ulid(), ulid());
    let body = json!({"client_id": CLIENT, "mutations": [
        create(&ok, &ulid(), json!({"title": "a minute ahead"}), now + 60_000),
        create(&ahead, &ulid(), json!({"title": "two hours ahead"}), now + 2 * hour),
        create(&year_3000, &ulid(), json!({"title": "year 3000"}), 32_503_680_000_000),
    ]});
    let (status, resp) = srv.post("/tether/push", &body).await;
    assert_eq!(status, 200);
    assert_eq!(resp["applied"], json!([ok]));
    let rejected = resp["rejected"].as_array().unwrap();
    assert_eq!(rejected.iter().map(|r| r["mutation_id"].as_str().unwrap()).collect::<Vec<_>>(), vec![ahead.as_str(), year_3000.as_str()]);
    for r in rejected {
        assert_eq!(r["reason"], "validation_failed");
        let msg = r["data"]["messages"]["timestamp"][0].as_str().unwrap();
        assert!(msg.contains("ms ahead of the server clock; at most 3600000 ms ahead is accepted"), "{msg}");
    }
    // A tighter tolerance rejects the minute too.
    let strict = serve(SyncServer::builder().limits(Limits { max_clock_ahead_ms: 1_000, ..Limits::default() }).build().unwrap()).await;
    let body = json!({"client_id": CLIENT, "mutations": [create(&ulid(), &ulid(), json!({"title": "a minute ahead"}), now + 60_000)]});
    let (_, resp) = strict.post("/tether/push", &body).await;
    assert_eq!(resp["rejected"][0]["reason"], "validation_failed");
}
