//! The examples, run end to end against the real ClickHouse: `examples/axum_host.rs` (a host
//! instrumented with the `TetherPro` builder) and `examples/mount_dashboard.rs` (the dashboard
//! behind the host's own auth). Their functions are compiled in here, so what runs is the
//! example's own code. Plus what the builder promises: a typed error for a bad configuration,
//! and a host that starts and answers while ClickHouse is away.

mod common;

#[path = "../examples/axum_host.rs"]
#[allow(dead_code)]
mod axum_host;
#[path = "../examples/mount_dashboard.rs"]
#[allow(dead_code)]
mod mount_dashboard;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_pro::config::Config;
use tether_pro::{Error, TetherPro};
use tracing_subscriber::layer::SubscriberExt as _;

fn config_for(ch: &common::TestClickHouse) -> Config {
    let mut config = Config::default();
    config.clickhouse.url = Some(ch.url.clone());
    config.clickhouse.database = ch.database.clone();
    config.capture.batch_interval_ms = 100;
    config
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn mutation(id: &str, entity: &str, op: &str, payload: Value) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": 1_700_000_000_000_i64})
}

async fn push(base: &str, mutations: Vec<Value>) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/tether/push"))
        .json(&json!({"client_id": "phone-1", "mutations": mutations}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_axum_host_example_stores_each_push_with_states_and_diffs_through_the_builder() {
    let ch = common::clickhouse().await;
    // The database is empty: the builder's migration creates the tables before the first insert.
    let (tether, guard) = TetherPro::builder().config(config_for(&ch)).service_name("axum-host-test").telemetry(false).spawn().unwrap();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(tether.tracing_layer()));
    let base = serve(axum_host::app(&tether, axum_host::Records::default())).await;

    let secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let first = push(&base, vec![mutation("m1", "t1", "create", json!({"title": "buy milk", "api_key": secret}))]).await;
    assert_eq!(first["applied"], json!(["m1"]));
    let second = push(
        &base,
        vec![mutation("m2", "t1", "update", json!({"title": "buy oat milk"})), mutation("m3", "t9", "delete", json!({}))],
    )
    .await;
    assert_eq!(second["applied"], json!(["m2"]));
    assert_eq!(second["rejected"][0]["reason"], "not_found");

    drop(guard); // flushes capture, then telemetry
    let rows = ch
        .rows("SELECT mutation_id, outcome, reason, state_before, state_after, diff, payload FROM sync_mutations ORDER BY mutation_id")
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let state = |r: &Value, col: &str| -> Value { serde_json::from_str(r[col].as_str().unwrap()).unwrap_or(Value::Null) };
    assert_eq!((rows[0]["mutation_id"].as_str(), rows[0]["outcome"].as_str()), (Some("m1"), Some("applied")));
    assert_eq!(rows[0]["state_before"], "");
    assert_eq!(state(&rows[0], "state_after")["title"], "buy milk");
    assert_eq!(state(&rows[0], "state_after")["api_key"], "[REDACTED]");
    assert_eq!(state(&rows[1], "state_before")["title"], "buy milk");
    assert_eq!(state(&rows[1], "state_after")["title"], "buy oat milk");
    let diff = state(&rows[1], "diff");
    assert!(
        diff.as_array().unwrap().iter().any(|c| c["path"] == json!(["title"]) && c["old"] == "buy milk" && c["new"] == "buy oat milk"),
        "{diff}"
    );
    assert_eq!((rows[2]["outcome"].as_str(), rows[2]["reason"].as_str()), (Some("rejected"), Some("not_found")));
    let everything = serde_json::to_string(&rows).unwrap();
    assert!(!everything.contains(secret), "the secret reached ClickHouse");
    assert_eq!(ch.count("SELECT count() FROM sync_requests").await, 2);
}

#[tokio::test]
async fn the_mount_dashboard_example_serves_the_dashboard_only_behind_the_hosts_auth() {
    let ch = common::clickhouse().await;
    let config = config_for(&ch);
    let (tether, _guard) = TetherPro::builder().config(config.clone()).telemetry(false).spawn().unwrap();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(tether.tracing_layer()));
    let app = axum_host::app(&tether, axum_host::Records::default()).merge(mount_dashboard::admin_routes(&tether, "s3cret".into()));
    let base = serve(app).await;
    push(&base, vec![mutation("m1", "t1", "create", json!({"title": "a"})), mutation("m2", "t2", "update", json!({"title": "b"}))]).await;

    let http = reqwest::Client::new();
    let url = format!("{base}/tether/dashboard/metrics?window=1h");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    // The push reaches ClickHouse within a batch interval or two (the tables were created by
    // the builder's migration); the dashboard behind the right token counts it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 && body["totals"]["pushes"] == 1 {
            assert_eq!((body["totals"]["applied"].as_u64(), body["totals"]["rejected"].as_u64()), (Some(1), Some(1)), "{body}");
            break;
        }
        if Instant::now() > deadline {
            let raw = ch.rows("SELECT kind, outcome, started_at, now64() AS now FROM sync_requests").await;
            panic!("the dashboard never showed the push: {status} {}\ncapture: {:?}\nraw rows: {raw:?}", body["totals"], tether.capture_stats().totals());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_builder_refuses_a_bad_configuration_with_a_typed_error() {
    let mut config = Config::default();
    config.clickhouse.url = Some("http://127.0.0.1:8123".into());
    config.capture.pipeline_nice = 40;
    match TetherPro::builder().config(config).telemetry(false).spawn() {
        Err(Error::Config(e)) => assert!(e.to_string().contains("pipeline_nice"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a nice value of 40 was accepted"),
    }
    let mut config = Config::default();
    config.clickhouse.url = None;
    assert!(matches!(TetherPro::builder().config(config).telemetry(false).spawn(), Err(Error::NoClickHouseUrl)));
    // Capture off needs no ClickHouse at all.
    let mut config = Config::default();
    config.capture.enabled = false;
    assert!(TetherPro::builder().config(config).telemetry(false).spawn().is_ok());
}

#[test]
fn a_registry_holding_only_the_builders_layer_enables_capture_spans() {
    // The first cut composed capture with an absent telemetry layer (`Option::None`), whose
    // level hint `OFF` won: with no other layer, the global maximum level became OFF and
    // capture spans were disabled at their callsites (a push not captured, 1 run in 3).
    let mut config = Config::default();
    config.capture.enabled = false;
    let (tether, _guard) = TetherPro::builder().config(config).telemetry(false).spawn().unwrap();
    let registry = tracing_subscriber::registry().with(tether.tracing_layer());
    let hint = tracing::Subscriber::max_level_hint(&registry);
    assert!(hint.is_none_or(|h| h >= tracing::level_filters::LevelFilter::INFO), "level hint {hint:?} disables capture spans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_built_with_the_builder_starts_and_answers_while_clickhouse_is_away() {
    let mut config = Config::default();
    config.clickhouse.url = Some(common_closed_port_url());
    config.capture.flush_timeout_ms = 500;
    let started = Instant::now();
    let (tether, mut guard) = TetherPro::builder().config(config).migrate_timeout(Duration::from_secs(30)).telemetry(false).spawn().unwrap();
    // Not a speed check: the migration may wait 30 s, spawn must not wait for it at all.
    assert!(started.elapsed() < Duration::from_secs(10), "spawn waited for ClickHouse: {:?}", started.elapsed());
    let base = serve(axum_host::app(&tether, axum_host::Records::default())).await;
    let answer = push(&base, vec![mutation("m1", "t1", "create", json!({"title": "a"}))]).await;
    assert_eq!(answer["applied"], json!(["m1"]));
    let stopping = Instant::now();
    guard.shutdown();
    // Bounded by the flush deadline plus a second, not by the migration's 30 s or an insert's
    // timeout (generous margin: not a speed check).
    assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown took {:?}", stopping.elapsed());
}

/// A URL where nothing listens (bound, then closed).
fn common_closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Found by a fresh user: stopping while the start-up migration still waited for a ClickHouse
/// that accepts connections and never answers lost every captured record, even with the disk
/// spool on ("3 still in memory at exit (lost)"). Now the stop ends the wait and the records
/// go to the spool.
#[tokio::test]
async fn a_stop_during_the_start_up_migration_spools_what_was_captured() {
    // Accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || silent.incoming().take(64).filter_map(Result::ok).collect::<Vec<_>>());
    let spool = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.clickhouse.url = Some(url);
    config.capture.flush_timeout_ms = 1_000;
    config.capture.spool.enabled = true;
    config.capture.spool.dir = spool.path().join("spool");
    let (tether, mut guard) = TetherPro::builder().config(config).migrate_timeout(Duration::from_secs(60)).telemetry(false).spawn().unwrap();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(tether.tracing_layer()));
    let base = serve(axum_host::app(&tether, axum_host::Records::default())).await;
    for i in 0..3 {
        push(&base, vec![mutation(&format!("m{i}"), &format!("t{i}"), "create", json!({"title": "a"}))]).await;
    }
    let stopping = Instant::now();
    guard.shutdown();
    let t = tether.capture_stats().totals();
    let (written, spooled, dropped) = t.accounted();
    assert_eq!(t.captured(), 3);
    assert_eq!((written, spooled, dropped), (0, 3, 0), "{t:?}");
    // Not the migration's 60 s (generous margin: not a speed check).
    assert!(stopping.elapsed() < Duration::from_secs(20), "stop took {:?}", stopping.elapsed());
    drop(held);
}

/// Found by a fresh user: with tether-pro started twice and both sets of layers installed,
/// the second tracing layer panicked on the host's request thread (the client got no answer)
/// and stacked tower layers stored every push twice. Now the request is answered and captured
/// once.
#[tokio::test]
async fn two_instances_in_one_process_never_break_a_request_and_capture_it_once() {
    let ch = common::clickhouse().await;
    let (a, guard_a) = TetherPro::builder().config(config_for(&ch)).telemetry(false).spawn().unwrap();
    let (b, guard_b) = TetherPro::builder().config(config_for(&ch)).telemetry(false).spawn().unwrap();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(a.tracing_layer()).with(b.tracing_layer()));
    let base = serve(axum_host::app(&a, axum_host::Records::default()).layer(b.http_layer())).await;
    let answer = push(&base, vec![mutation("m1", "t1", "create", json!({"title": "a"}))]).await;
    assert_eq!(answer["applied"], json!(["m1"]));
    drop(guard_a);
    drop(guard_b);
    assert_eq!(ch.count("SELECT count() FROM sync_requests").await, 1);
    assert_eq!(ch.count("SELECT count() FROM sync_mutations").await, 1);
}

#[test]
fn a_start_up_error_prints_its_message_not_its_variant() {
    let mut config = Config::default();
    config.clickhouse.url = None;
    let err = TetherPro::builder().config(config).telemetry(false).spawn().err().expect("no URL is refused");
    let shown = format!("{err:?}");
    assert!(shown.contains("set CLICKHOUSE_URL"), "{shown}");
    let mut config = Config::default();
    config.clickhouse.url = Some("http://127.0.0.1:8123".into());
    config.capture.queue_records = 0;
    let shown = format!("{:?}", TetherPro::builder().config(config).telemetry(false).spawn().err().expect("refused"));
    assert!(shown.contains("capture.queue_records must be at least 1") && !shown.contains("stack backtrace"), "{shown}");
}

#[test]
fn the_builder_reads_the_file_tether_pro_config_names() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("host.toml", "[clickhouse]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"from_file\"\n[capture]\nenabled = false\n")?;
        jail.set_env("TETHER_PRO_CONFIG", "host.toml");
        let (tether, _guard) = TetherPro::builder().telemetry(false).spawn().map_err(|e| e.to_string())?;
        assert_eq!(tether.config().clickhouse.database, "from_file");
        // An explicit file wins over the variable.
        jail.create_file("other.toml", "[clickhouse]\ndatabase = \"explicit\"\n[capture]\nenabled = false\n")?;
        let (tether, _guard) = TetherPro::builder().config_file("other.toml").telemetry(false).spawn().map_err(|e| e.to_string())?;
        assert_eq!(tether.config().clickhouse.database, "explicit");
        Ok(())
    });
}
