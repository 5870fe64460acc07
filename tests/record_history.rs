//! A record's history (`/records/{model}/{entity_id}` and `.json`) against a real ClickHouse
//! and the reference server: three clients write one record, an offline edit loses a conflict,
//! and a replay of it follows. The JSON is checked whole against the captured rows.

mod common;
#[path = "common/captured_host.rs"]
mod captured_host;

use std::sync::Arc;

use captured_host::{CapturedHost, captured_host};
use serde_json::{Value, json};
use tether_pro::dashboard::{self, DashboardState, replay::ReplayState};
use tether_pro::replay::{ApplyOptions, Replayer};
use tether_pro::sync::InProcessTarget;

const E: &str = "01JAAAAAAAAAAAAAAAAAAAAAE1";
const PREFIX: &str = "/tether/dashboard";

fn mutation(id: &str, op: &str, payload: Value, version: u64, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": E, "model": "Task", "operation": op, "payload": payload, "version": version, "timestamp": ts})
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn rfc3339_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test(flavor = "current_thread")]
async fn three_clients_an_offline_edit_that_loses_and_its_replay() {
    let CapturedHost { ch, server, app, capture, guard, sub: _sub } = captured_host().await;
    let sync = serve(app.clone()).await;
    let http = reqwest::Client::new();
    let push = |client: &'static str, version: &'static str, m: Value| {
        let (http, sync) = (http.clone(), sync.clone());
        async move {
            let r = http
                .post(format!("{sync}/tether/push"))
                .header("x-tether-client-version", version)
                .json(&json!({"client_id": client, "mutations": [m]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // A creates the record; B edits it at 10:05 by its clock; C edited it offline at 10:02 and
    // syncs after B: older than the record's updated_at, so it conflicts and the server wins.
    let t0 = 1_779_000_000_000_i64;
    push("client-A", "ios/1.0", mutation("01JM00000000000000000000A1", "create", json!({"title": "Milk", "notes": "2 l"}), 1, t0)).await;
    push("client-B", "android/2.0", mutation("01JM00000000000000000000B1", "update", json!({"title": "Oat milk", "notes": "2 l"}), 2, t0 + 300_000)).await;
    let c = push("client-C", "web/3.0", mutation("01JM00000000000000000000C1", "update", json!({"title": "Soy milk", "notes": "1 l"}), 2, t0 + 120_000)).await;
    assert_eq!(c["conflicts"][0]["mutation_id"], "01JM00000000000000000000C1", "{c}");
    // An unrelated record stays out of the history.
    push("client-A", "ios/1.0", json!({"mutation_id": "01JM00000000000000000000A2", "entity_id": "01JAAAAAAAAAAAAAAAAAAAAAE2", "model": "Task", "operation": "create", "payload": {"title": "x"}, "version": 1, "timestamp": t0})).await;
    for _ in 0..200 {
        if capture.stats().totals().requests_written >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Support replays C's push, restamped: the clone applies.
    let replayer = Replayer::new(ch.client(), Arc::new(InProcessTarget { app: app.clone(), server: server.clone() }));
    let c_request: String = ch.rows("SELECT request_id FROM sync_mutations WHERE mutation_id = '01JM00000000000000000000C1'").await[0]["request_id"].as_str().unwrap().to_owned();
    let replay = replayer.apply(&c_request, &ApplyOptions { idempotency_key: "k1".into(), actor: "support".into(), restamp: true, positions: None }).await.unwrap();
    assert!(replay.sent);
    for _ in 0..200 {
        if capture.stats().totals().requests_written >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(guard);

    let mut state = DashboardState::new(ch.client());
    state.replay = Some(ReplayState::new(replayer.clone()));
    state.trace_url = Some("https://grafana.example/d/tether-traces/tether-traces?var-trace_id={trace_id}".into());
    let dash = serve(dashboard::mount(state)).await;
    let got: Value = http.get(format!("{dash}{PREFIX}/records/Task/{E}.json")).send().await.unwrap().json().await.unwrap();

    // The expected answer, from the captured rows (arrival times, request ids, the clone's id).
    let rows = ch
        .rows(&format!(
            "SELECT request_id, toString(toUnixTimestamp64Micro(started_at)) AS us, mutation_id, trace_id FROM sync_mutations
             WHERE entity_id = '{E}' ORDER BY started_at, request_id, position"
        ))
        .await;
    assert_eq!(rows.len(), 4, "A, B, C and the clone: {rows:?}");
    let r = |i: usize, k: &str| rows[i][k].as_str().unwrap().to_owned();
    let us = |i: usize| r(i, "us").parse::<i64>().unwrap();
    let clone_id = r(3, "mutation_id");
    let link = &replay.links[0];
    assert_eq!((link.original_mutation_id.as_str(), link.clone_mutation_id.as_str()), ("01JM00000000000000000000C1", clone_id.as_str()));
    let clone_ts = got["mutations"][3]["client_time"].as_str().unwrap().to_owned();
    let clone_ms = chrono::DateTime::parse_from_rfc3339(&clone_ts).unwrap().timestamp_millis();
    assert!((us(3) / 1000 - clone_ms).abs() < 60_000, "restamped with the time of the replay");
    let ms = |t: i64| chrono::DateTime::from_timestamp_millis(t).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let entry = |i: usize, client: &str, version_header: &str, ts: String, op: &str, version: u64, outcome: &str, reason: &str, diff: Value, replays: Value, conflict: Value| {
        json!({
            "request_id": r(i, "request_id"), "position": 0, "mutation_id": r(i, "mutation_id"), "client_id": client,
            "client_version": version_header, "client_time": ts.clone(), "client_time_raw": "", "server_time": rfc3339_us(us(i)),
            "delay_ms": us(i).div_euclid(1000) - chrono::DateTime::parse_from_rfc3339(&ts).unwrap().timestamp_millis(),
            "operation": op, "version": version, "outcome": outcome, "reason": reason, "diff": diff,
            "trace_id": if r(i, "trace_id").is_empty() { Value::Null } else { json!(r(i, "trace_id")) },
            "replays": replays, "conflict": conflict,
        })
    };
    let b_diff = json!([{"path": ["title"], "change": "changed", "old": "Milk", "new": "Oat milk"}]);
    let expected = json!({
        "model": "Task",
        "entity_id": E,
        "counts": {"mutations": 4, "applied": 3, "conflicts": 1, "rejected": 0, "clients": 3},
        "current_state": {"deleted": false, "version": 2, "updated_at": ms(clone_ms), "state": {"tether_id": E, "title": "Soy milk", "notes": "1 l"}},
        "current_state_error": null,
        "mutations": [
            entry(0, "client-A", "ios/1.0", ms(t0), "create", 1, "applied", "",
                json!([{"path": ["notes"], "change": "added", "new": "2 l"}, {"path": ["title"], "change": "added", "new": "Milk"}]), json!([]), Value::Null),
            entry(1, "client-B", "android/2.0", ms(t0 + 300_000), "update", 2, "applied", "", b_diff.clone(), json!([]), Value::Null),
            entry(2, "client-C", "web/3.0", ms(t0 + 120_000), "update", 2, "conflict", "conflict",
                json!([{"path": ["notes"], "change": "changed", "old": "2 l", "new": "1 l"}, {"path": ["title"], "change": "changed", "old": "Oat milk", "new": "Soy milk"}]),
                json!([{"replay_id": replay.replay_id, "clone_mutation_id": clone_id, "status": "applied"}]),
                json!({
                    "winner": {"request_id": r(1, "request_id"), "position": 0, "mutation_id": "01JM00000000000000000000B1", "client_id": "client-B",
                               "server_time": rfc3339_us(us(1)), "client_time": ms(t0 + 300_000), "version": 2, "diff": b_diff},
                    "server_updated_at": got["mutations"][2]["conflict"]["server_updated_at"],
                    "edit_gap_ms": 180_000,
                    "delay_ms": us(2) / 1000 - (t0 + 120_000),
                    "summary": format!("The server's version won; this update was not applied. Client client-B's write (mutation 01JM00000000000000000000B1, version 2, arrived {}) gave the record its updated_at; this edit was made 3 min 0 s earlier by the clocks, and under the Tether rule an edit older than the record's updated_at conflicts.", rfc3339_us(us(1))),
                })),
            entry(3, "client-C", "web/3.0", clone_ts.clone(), "update", 2, "applied", "",
                json!([{"path": ["notes"], "change": "changed", "old": "2 l", "new": "1 l"}, {"path": ["title"], "change": "changed", "old": "Oat milk", "new": "Soy milk"}]), json!([]), Value::Null),
        ],
        "next_cursor": null,
    });
    assert_eq!(got, expected, "got:\n{}", serde_json::to_string_pretty(&got).unwrap());
    // The answer validates against the generated OpenAPI document, strictly (no undocumented
    // field), and the validator refuses a wrong answer.
    let doc: Value = serde_json::from_str(dashboard::openapi_json()).unwrap();
    let mut components = doc["components"].clone();
    for schema in components["schemas"].as_object_mut().unwrap().values_mut() {
        if schema["type"] == "object" {
            schema["additionalProperties"] = json!(false);
        }
    }
    let response = &doc["paths"]["/records/{model}/{entity_id}.json"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let mut schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "components": components});
    schema.as_object_mut().unwrap().extend(response.as_object().expect("a 200 schema").clone());
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&got).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert_eq!(errors, Vec::<String>::new());
    let mut wrong = got.clone();
    wrong["mutations"][2]["conflict"]["edit_gap_ms"] = json!("3 min");
    wrong["counts"]["extra"] = json!(1);
    assert_eq!(validator.iter_errors(&wrong).count(), 2);
    // The record's updated_at the server compared against is B's edit time.
    let compared = chrono::DateTime::parse_from_rfc3339(got["mutations"][2]["conflict"]["server_updated_at"].as_str().unwrap()).unwrap();
    assert_eq!(compared.timestamp_millis(), t0 + 300_000);

    // The page says the same in words, with links to the request, the winner and the replay.
    let page = http.get(format!("{dash}{PREFIX}/records/Task/{E}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in [
        "The server&#39;s version won; this update was not applied. Client client-B&#39;s write (mutation 01JM00000000000000000000B1, version 2, arrived",
        &format!("href=\"{PREFIX}/requests/{}#m-0\"", r(1, "request_id")),
        &format!("href=\"{PREFIX}/clients/client-C\""),
        &replay.replay_id,
        "Soy milk",
        "class=\"dot o-conflict\"",
    ] {
        assert!(html.contains(needle), "{needle} not on the page");
    }
    assert_eq!(html.matches("<circle ").count(), 4, "one dot per mutation");
    // With serve.trace_url, each trace id links to the trace viewer.
    let trace = r(0, "trace_id");
    assert!(trace.len() == 32, "captured with a trace id");
    assert!(html.contains(&format!("<a href=\"https://grafana.example/d/tether-traces/tether-traces?var-trace_id={trace}\"><code>{trace}</code></a>")), "no trace link");
    // A trace URL that is not http(s) or a path, or lacks the placeholder, is refused.
    for bad in ["javascript:alert(1)//{trace_id}", "https://grafana.example/no-placeholder", "grafana/{trace_id}"] {
        let cfg = tether_pro::config::ServeConfig { trace_url: Some(bad.into()), ..Default::default() };
        assert!(cfg.validate().is_err(), "{bad}");
    }
    // Unknown records, bad cursors and other models are 404/400, in the route's own format.
    let status = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("{dash}{PREFIX}/records/Note/{E}.json")).await, 404);
    assert_eq!(status(format!("{dash}{PREFIX}/records/Task/{E}.json?after=zz")).await, 400);
    assert_eq!(status(format!("{dash}{PREFIX}/records/Task/nope")).await, 404);
}

/// A create is applied whatever its time, so the last write applied is not always the one
/// whose `updated_at` a conflict was checked against (found by a fresh-eyes test): the winner
/// is the applied write with the latest client time, and the gap is positive.
#[tokio::test(flavor = "current_thread")]
async fn the_winner_is_the_write_that_set_updated_at_not_the_last_one_applied() {
    let CapturedHost { ch, server: _server, app, capture, guard, sub: _sub } = captured_host().await;
    let sync = serve(app.clone()).await;
    let http = reqwest::Client::new();
    let t = chrono::Utc::now().timestamp_millis() - 600_000;
    for (client, id, op, ts) in [("client-A", "01JM00000000000000000000W1", "create", t + 200_000), ("client-B", "01JM00000000000000000000W2", "create", t), ("client-C", "01JM00000000000000000000W3", "update", t + 100_000)] {
        let r = http
            .post(format!("{sync}/tether/push"))
            .json(&json!({"client_id": client, "mutations": [mutation(id, op, json!({"title": client}), 1, ts)]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    for _ in 0..200 {
        if capture.stats().totals().requests_written >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(guard);
    let dash = serve(dashboard::mount(DashboardState::new(ch.client()))).await;
    let got: Value = http.get(format!("{dash}{PREFIX}/records/Task/{E}.json")).send().await.unwrap().json().await.unwrap();
    let outcomes: Vec<&str> = got["mutations"].as_array().unwrap().iter().map(|m| m["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["applied", "applied", "conflict"], "{got}");
    let c = &got["mutations"][2]["conflict"];
    assert_eq!(c["winner"]["mutation_id"], "01JM00000000000000000000W1", "A's create set updated_at, not B's later-applied older one");
    assert_eq!(c["edit_gap_ms"], 100_000);
    let updated_at = chrono::DateTime::parse_from_rfc3339(c["server_updated_at"].as_str().unwrap()).unwrap().timestamp_millis();
    assert_eq!(updated_at, t + 200_000, "the winner's client time is the updated_at the server compared against");
    assert!(c["summary"].as_str().unwrap().contains("Client client-A's write (mutation 01JM00000000000000000000W1, version 1"), "{c}");
}

/// Ids a path segment cannot carry (found by a fresh-eyes test): `x.json` next to `x`, and
/// `..`. Links and search lead to the query form, which serves the right record.
#[tokio::test(flavor = "current_thread")]
async fn ids_ending_in_json_or_made_of_dots_are_linked_by_query() {
    let CapturedHost { ch, server: _server, app, capture, guard, sub: _sub } = captured_host().await;
    let sync = serve(app.clone()).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let t = chrono::Utc::now().timestamp_millis();
    let ids = ["x.json", "x", ".."];
    let mut mutations: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"mutation_id": format!("01JM00000000000000000000D{i}"), "entity_id": id, "model": "Task", "operation": "create", "payload": {"title": id}, "version": 1, "timestamp": t}))
        .collect();
    // A model with a `/` in it, found by `Model/entity_id` all the same.
    mutations.push(json!({"mutation_id": "01JM00000000000000000000D9", "entity_id": "y", "model": "A/B", "operation": "create", "payload": {}, "version": 1, "timestamp": t}));
    let r = http.post(format!("{sync}/tether/push")).json(&json!({"client_id": "c", "mutations": mutations})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    for _ in 0..200 {
        if capture.stats().totals().requests_written >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(guard);
    let dash = serve(dashboard::mount(DashboardState::new(ch.client()))).await;
    let request_id = ch.rows("SELECT request_id FROM sync_requests").await[0]["request_id"].as_str().unwrap().to_owned();
    let detail = http.get(format!("{dash}{PREFIX}/requests/{request_id}")).send().await.unwrap().text().await.unwrap();
    for (id, link) in [("x.json", "/record?model=Task&#38;entity_id=x.json"), ("x", "/records/Task/x"), ("..", "/record?model=Task&#38;entity_id=..")] {
        assert!(detail.contains(&format!("href=\"{PREFIX}{link}\"")), "{id}: no {link} in {:?}", detail.match_indices("/record").map(|(i, _)| &detail[i..i + 60]).collect::<Vec<_>>());
    }
    // The query form serves each record, as HTML and JSON; the path form keeps `.json` for JSON.
    for id in ["x.json", ".."] {
        let url = format!("{dash}{PREFIX}/record?model=Task&entity_id={}", id.replace('.', "%2E"));
        let page = http.get(&url).send().await.unwrap();
        assert_eq!(page.status(), 200, "{id}");
        let v: Value = http.get(format!("{url}&format=json")).send().await.unwrap().json().await.unwrap();
        assert_eq!((v["entity_id"].as_str(), v["counts"]["mutations"].as_u64()), (Some(id), Some(1)), "{id}");
    }
    let v: Value = http.get(format!("{dash}{PREFIX}/records/Task/x.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["entity_id"], "x", "the path form's .json is the JSON of x");
    // Search lands on the query form for them.
    let found = http.get(format!("{dash}{PREFIX}/search?q=x.json")).send().await.unwrap();
    assert_eq!(found.headers()["location"], format!("{PREFIX}/record?model=Task&entity_id=x.json"));
    let found = http.get(format!("{dash}{PREFIX}/search?q=A%2FB%2Fy")).send().await.unwrap();
    assert_eq!(found.headers()["location"], format!("{PREFIX}/records/A%2FB/y"));
    // The query form wants both parameters.
    assert_eq!(http.get(format!("{dash}{PREFIX}/record?model=Task")).send().await.unwrap().status(), 400);
}
