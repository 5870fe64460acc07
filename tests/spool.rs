//! The disk spool, end to end with the real binary: `tether-pro sync-server --capture` with
//! `[capture.spool]` enabled, ClickHouse away, pushes over HTTP. What went to disk survives a
//! `kill -9` and is written once ClickHouse is back after a restart; a graceful shutdown with
//! ClickHouse away keeps everything on disk; the spool's size and age reach the OTLP metrics.

mod common;
#[path = "common/child_server.rs"]
mod child_server;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use child_server::{ChildServer, closed_port_url};
use otlp_receiver::{OtlpReceiver, Protocol};
use serde_json::{Value, json};
use tether_pro::pipeline::SpooledBatch;

const MUTATIONS_PER_PUSH: usize = 3;

/// The server with the spool on, small batches and a quick cycle, so a few dozen pushes
/// overflow the memory buffer.
fn start_server(clickhouse_url: &str, database: &str, spool: &Path, env: &[(&str, &str)]) -> ChildServer {
    let dir = spool.to_str().unwrap();
    let mut all = vec![
        ("TETHER_PRO_CAPTURE__SPOOL__ENABLED", "true"),
        ("TETHER_PRO_CAPTURE__SPOOL__DIR", dir),
        ("TETHER_PRO_CAPTURE__BATCH_ROWS", "12"),
        ("TETHER_PRO_CAPTURE__BATCH_INTERVAL_MS", "20"),
        ("TETHER_PRO_CAPTURE__FLUSH_TIMEOUT_MS", "1500"),
        // At nice 19 a loaded test machine can starve the pipeline past the short flush
        // deadline above; these tests are about the spool, not about priorities.
        ("TETHER_PRO_CAPTURE__PIPELINE_NICE", "0"),
    ];
    all.extend_from_slice(env);
    ChildServer::start(clickhouse_url, database, &all, false)
}

/// Sends `n` pushes of fresh creates and checks every answer applied all of them.
async fn push_all(base: &str, tag: &str, n: usize) {
    push_sized(base, tag, n, 0).await
}

/// `push_all` with `pad` more bytes in every mutation's payload.
async fn push_sized(base: &str, tag: &str, n: usize, pad: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        let mutations: Vec<Value> = (0..MUTATIONS_PER_PUSH)
            .map(|j| {
                let id = ulid::Ulid::new().to_string();
                json!({"mutation_id": id, "entity_id": id, "model": "Task", "operation": "create",
                       "payload": {"title": format!("{tag} {i}.{j}"), "api_key": "sk_live_spool_secret", "notes": "n".repeat(pad)}, "version": 1, "timestamp": 1_000})
            })
            .collect();
        let resp = http
            .post(format!("{base}/tether/push"))
            .json(&json!({"client_id": "01JSP00LSP00LSP00LSP00LSP0", "mutations": mutations}))
            .send()
            .await
            .expect("the sync server answers");
        assert_eq!(resp.status(), 200, "push {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["applied"].as_array().map(Vec::len), Some(MUTATIONS_PER_PUSH), "push {i}: {body}");
    }
}

/// The request ids in the spool's batch files, read with the pipeline's own format.
fn spooled_request_ids(dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "batch") {
            let batch: SpooledBatch = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(batch.records as usize, batch.requests.len());
            assert_eq!(batch.mutations.len(), batch.requests.len() * MUTATIONS_PER_PUSH);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("sk_live_spool_secret"), "an unredacted secret on disk in {}", path.display());
            ids.extend(batch.requests.into_iter().map(|r| r.request_id));
        }
    }
    ids
}

fn batch_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "batch")).count()
}

/// Waits until the spool has stopped changing (the pipeline has handed over everything it will).
async fn settled(dir: &Path) -> BTreeSet<String> {
    let mut last = BTreeSet::new();
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = spooled_request_ids(dir);
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(2) {
            return last;
        }
        assert!(Instant::now() < deadline, "the spool never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the restarted server has written every spooled batch.
async fn drained(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while batch_files(dir) > 0 {
        assert!(Instant::now() < deadline, "{} spooled batches never written", batch_files(dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn request_ids_in_clickhouse(ch: &common::TestClickHouse) -> Vec<String> {
    ch.rows("SELECT request_id FROM sync_requests ORDER BY request_id")
        .await
        .into_iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The largest value a counter reported with `attr = value`, over every export so far.
fn counter_max(receiver: &OtlpReceiver, name: &str, attr: (&str, &str)) -> Option<u64> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as A;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as V};
    let mut max = None;
    for req in receiver.received.metrics() {
        for m in req.resource_metrics.into_iter().flat_map(|r| r.scope_metrics).flat_map(|s| s.metrics).filter(|m| m.name == name) {
            let Some(Data::Sum(sum)) = m.data else { continue };
            for p in sum.data_points {
                let matches = p.attributes.iter().any(|kv| {
                    kv.key == attr.0 && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(A::StringValue(s)) if s == attr.1)
                });
                if let (true, Some(V::AsInt(v))) = (matches, p.value) {
                    max = Some(max.map_or(v as u64, |m: u64| m.max(v as u64)));
                }
            }
        }
    }
    max
}

/// The largest value a gauge reported, over every export so far.
fn gauge_max(receiver: &OtlpReceiver, name: &str) -> Option<f64> {
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value as V};
    let mut max: Option<f64> = None;
    for req in receiver.received.metrics() {
        for rm in req.resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics.into_iter().filter(|m| m.name == name) {
                    if let Some(Data::Gauge(g)) = m.data {
                        for p in g.data_points {
                            let v = match p.value {
                                Some(V::AsInt(i)) => i as f64,
                                Some(V::AsDouble(d)) => d,
                                None => continue,
                            };
                            max = Some(max.map_or(v, |m| m.max(v)));
                        }
                    }
                }
            }
        }
    }
    max
}

/// The child's environment for exporting metrics (only) to `receiver` every 200 ms.
fn metrics_to(receiver: &OtlpReceiver) -> Vec<(&'static str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_batches_survive_kill_9_and_arrive_exactly_once_after_restart() {
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let spool = tempfile::tempdir().unwrap();
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf);
    let otel = metrics_to(&receiver);

    // 1. ClickHouse away: 60 pushes (4 rows each; 3 records a batch; 6 batches fit in memory).
    let down = start_server(&closed_port_url(), &ch.database, spool.path(), &otel);
    push_all(&down.base, "killed", 60).await;
    let spooled = settled(spool.path()).await;
    assert!(spooled.len() >= 60 - 5 * 3 - 3, "only {} of 60 records reached the disk", spooled.len());

    // The spool's size, record count and age are in the exported metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = gauge_max(&receiver, "tether.capture.spool.records").unwrap_or(0.0);
        let bytes = gauge_max(&receiver, "tether.capture.spool.bytes").unwrap_or(0.0);
        let age = gauge_max(&receiver, "tether.capture.spool.age").unwrap_or(0.0);
        if records as usize == spooled.len() && bytes > 0.0 && age > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "spool metrics not exported: records {records}, bytes {bytes}, age {age}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. kill -9: what was in memory is gone; what was on disk stays.
    down.kill_9();
    assert_eq!(spooled_request_ids(spool.path()), spooled, "the spool changed across kill -9");

    // 3. Restart with ClickHouse there: every spooled record arrives, exactly once.
    let up = start_server(&ch.url, &ch.database, spool.path(), &[]);
    drained(spool.path()).await;
    let arrived = request_ids_in_clickhouse(&ch).await;
    assert_eq!(arrived.len(), spooled.len(), "duplicates or extras");
    assert_eq!(arrived.into_iter().collect::<BTreeSet<_>>(), spooled);
    let mutations = ch.count("SELECT count() FROM sync_mutations").await;
    assert_eq!(mutations as usize, spooled.len() * MUTATIONS_PER_PUSH);
    assert_eq!(ch.count("SELECT count() FROM sync_mutations WHERE position(payload, 'sk_live_spool_secret') > 0").await, 0);
    up.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_with_clickhouse_away_keeps_every_record_on_disk() {
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let spool = tempfile::tempdir().unwrap();

    let down = start_server(&closed_port_url(), &ch.database, spool.path(), &[]);
    push_all(&down.base, "stopped", 40).await;
    // SIGTERM: the pipeline gives up on ClickHouse at the flush deadline and spools the rest.
    down.terminate();
    assert_eq!(spooled_request_ids(spool.path()).len(), 40, "a graceful stop lost records");

    let up = start_server(&ch.url, &ch.database, spool.path(), &[]);
    drained(spool.path()).await;
    let arrived = request_ids_in_clickhouse(&ch).await;
    assert_eq!(arrived.len(), 40);
    assert_eq!(ch.count("SELECT uniqExact(request_id) FROM sync_requests").await, 40);
    // Traffic after the restart goes straight through as usual.
    push_all(&up.base, "after", 5).await;
    up.terminate();
    assert_eq!(ch.count("SELECT count() FROM sync_requests").await, 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_disk_cap_the_drop_count_is_exact() {
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let spool = tempfile::tempdir().unwrap();
    let receiver = OtlpReceiver::start(Protocol::HttpProtobuf);
    let mut env = metrics_to(&receiver);
    // 1 MiB of disk: about forty of these 24 KB records.
    env.push(("TETHER_PRO_CAPTURE__SPOOL__MAX_BYTES", "1048576"));
    let down = start_server(&closed_port_url(), &ch.database, spool.path(), &env);
    let pushes = 120;
    push_sized(&down.base, "capped", pushes, 4000).await;
    // A graceful stop accounts for every record: on disk, or counted as dropped at the spool.
    down.terminate();
    let on_disk = spooled_request_ids(spool.path()).len();
    let bytes: u64 = std::fs::read_dir(spool.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(bytes <= 1024 * 1024, "the spool passed its cap: {bytes} bytes");
    let dropped = counter_max(&receiver, "tether.capture.records.dropped", ("stage", "spool")).expect("the spool drop counter was exported");
    let queue_dropped = counter_max(&receiver, "tether.capture.records.dropped", ("stage", "queue")).unwrap_or(0);
    assert!(dropped > 0 && on_disk > 0, "the cap was not reached: {on_disk} on disk, {dropped} dropped");
    assert_eq!(queue_dropped, 0);
    assert_eq!(on_disk as u64 + dropped, pushes as u64, "{on_disk} on disk + {dropped} dropped != {pushes} pushed");
}
