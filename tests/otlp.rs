//! OpenTelemetry end to end, over the wire: `telemetry::init` configured by the standard
//! `OTEL_*` environment, exporting to real OTLP receivers on loopback (gRPC and
//! HTTP/protobuf, `common/otlp_receiver.rs`), while known traffic goes through the reference
//! server behind the capture layers, the real pipeline and a real ClickHouse.
//!
//! The `OTEL_*` variables are process-global, so every test here holds `ENV_LOCK` while it
//! sets them and calls `init` (they run one at a time). Tests run on a current-thread runtime
//! (the capture subscriber is thread-local, as in `tests/capture.rs`), and call the guards'
//! blocking shutdowns right on that runtime's thread, as a host's `Drop` would.

mod common;
#[path = "common/otlp_receiver.rs"]
mod otlp_receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{TestClickHouse, clickhouse};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Metric, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, span};
use otlp_receiver::{OtlpReceiver, Protocol};
use serde_json::{Value, json};
use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, CaptureGuard, ClickHouseWriter};
use tether_pro::sync::{self, SyncServer};
use tether_pro::telemetry::{self, Telemetry, TelemetryGuard};
use tracing_subscriber::layer::SubscriberExt;

// ---------------------------------------------------------------------------------------
// Environment

/// Serialises the tests of this binary: they all set process-global `OTEL_*` variables.
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every variable `init` or the OTLP exporters read; cleared before each test sets its own.
const OTEL_VARS: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
];

/// Holds the lock; clears the variables again when dropped.
struct OtelEnv {
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl OtelEnv {
    /// Takes the lock and leaves exactly `vars` set among the `OTEL_*` variables.
    async fn set(vars: &[(&str, &str)]) -> OtelEnv {
        let lock = ENV_LOCK.lock().await;
        clear_otel_env();
        for (k, v) in vars {
            // SAFETY: the tests of this binary hold ENV_LOCK while they touch the environment,
            // and nothing else in this process writes it.
            unsafe { std::env::set_var(k, v) };
        }
        OtelEnv { _lock: lock }
    }

    /// The variables of a normal export: everything to `endpoint` over `protocol`, exported
    /// often, so a test never waits for a default interval.
    async fn exporting_to(endpoint: &str, protocol: Protocol) -> OtelEnv {
        OtelEnv::set(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.env_value()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ])
        .await
    }
}

impl Drop for OtelEnv {
    fn drop(&mut self) {
        clear_otel_env();
    }
}

fn clear_otel_env() {
    for k in OTEL_VARS {
        // SAFETY: see `OtelEnv::set`.
        unsafe { std::env::remove_var(k) };
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------------------------------
// The instrumented reference server

const SERVICE: &str = "tether-pro-test";
const SECRET: &str = "sk_live_PLANTED_otlp_0123456789";
const PLAIN: &str = "PLAINVALUE-123";
const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";
const T1: &str = "01JAAAAAAAAAAAAAAAAAAAAAA1";
const T2: &str = "01JAAAAAAAAAAAAAAAAAAAAAA2";
const T3: &str = "01JAAAAAAAAAAAAAAAAAAAAAA3";
const M1: &str = "01JM0000000000000000000001";
const M2: &str = "01JM0000000000000000000002";
const M3: &str = "01JM0000000000000000000003";
const M4: &str = "01JM0000000000000000000004";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const PUSH_VERSION: &str = "ios/9.9.9";
const PULL_VERSION: &str = "android/1.2.3";

fn mutation(id: &str, entity: &str, op: &str, payload: Value, ts: i64) -> Value {
    json!({"mutation_id": id, "entity_id": entity, "model": "Task", "operation": op, "payload": payload, "version": 1, "timestamp": ts})
}

/// One push: two applied creates, one validation failure (no title), one conflict (an update
/// older than the record), one duplicate (the first mutation again). Every payload carries
/// the planted secret under `api_key` and the planted plain value.
fn the_push() -> Value {
    let meta = json!({"api_key": SECRET, "note": PLAIN});
    json!({"client_id": CLIENT, "mutations": [
        mutation(M1, T1, "create", json!({"title": PLAIN, "metadata": meta}), 5_000),
        mutation(M2, T2, "create", json!({"title": format!("{PLAIN} two"), "metadata": meta}), 5_000),
        mutation(M3, T3, "create", json!({"done": true, "metadata": meta}), 5_000),
        mutation(M4, T2, "update", json!({"title": format!("{PLAIN} stale"), "metadata": meta}), 1_000),
        mutation(M1, T1, "create", json!({"title": PLAIN, "metadata": meta}), 5_000),
    ]})
}

fn the_pull() -> Value {
    json!({"client_id": CLIENT, "last_sync_cursor": null})
}

fn fast_config() -> CaptureConfig {
    CaptureConfig { batch_interval_ms: 50, ..CaptureConfig::default() }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The status, content type and body of an answer.
type Answer = (u16, Option<String>, Vec<u8>);

async fn send(base: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut req = reqwest::Client::new().post(format!("{base}{path}")).header("content-type", "application/json").body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

fn push_headers() -> Vec<(&'static str, &'static str)> {
    vec![("x-tether-client-version", PUSH_VERSION)]
}

fn pull_headers() -> Vec<(&'static str, String)> {
    vec![("x-tether-client-version", PULL_VERSION.to_owned()), ("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))]
}

/// `telemetry::init` from the environment, the pipeline into ClickHouse emitting through it,
/// the subscriber with both layers, and the reference server behind the tower layer.
struct Instrumented {
    ch: TestClickHouse,
    telemetry: Telemetry,
    base: String,
    capture_guard: Option<CaptureGuard>,
    telemetry_guard: Option<TelemetryGuard>,
    _subscriber: tracing::subscriber::DefaultGuard,
}

impl Instrumented {
    async fn start() -> Instrumented {
        let ch = clickhouse().await;
        ch.migrate().await;
        let (telemetry, telemetry_guard) = telemetry::init(SERVICE).expect("telemetry::init");
        let (capture, capture_guard) =
            pipeline::start_with_telemetry(&fast_config(), ClickHouseWriter::new(ch.client()), telemetry.clone()).unwrap();
        let subscriber = tracing_subscriber::registry().with(capture.layer()).with(telemetry.layer());
        let _subscriber = tracing::subscriber::set_default(subscriber);
        let base = serve(sync::router(SyncServer::in_memory()).layer(capture.http_layer())).await;
        Instrumented {
            ch,
            telemetry,
            base,
            capture_guard: Some(capture_guard),
            telemetry_guard: Some(telemetry_guard),
            _subscriber,
        }
    }

    /// Flushes the pipeline, then traces, then metrics, blocking this (runtime) thread.
    /// Returns the telemetry guard's errors.
    fn shutdown(&mut self) -> Vec<String> {
        self.capture_guard.take().expect("not shut down yet").shutdown();
        self.telemetry_guard.take().expect("not shut down yet").shutdown()
    }
}

// ---------------------------------------------------------------------------------------
// Reading what the receiver got

/// Attributes as text, by key.
type Attrs = BTreeMap<String, String>;
/// Every exported metric by name, with its scope name, in arrival order.
type Metrics = BTreeMap<String, Vec<(String, Metric)>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), value_text(&kv.value))).collect()
}

fn attrs_of<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Every exported span with its resource and instrumentation scope name.
fn spans(traces: &[opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest]) -> Vec<(Resource, String, Span)> {
    let mut out = Vec::new();
    for req in traces {
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                for s in &ss.spans {
                    out.push((rs.resource.clone().unwrap_or_default(), scope.clone(), s.clone()));
                }
            }
        }
    }
    out
}

/// The metrics of every export, by name, in arrival order, with their scope name.
fn metrics_by_name(reqs: &[ExportMetricsServiceRequest]) -> Metrics {
    let mut out = Metrics::new();
    for req in reqs {
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                for m in &sm.metrics {
                    out.entry(m.name.clone()).or_default().push((scope.clone(), m.clone()));
                }
            }
        }
    }
    out
}

fn metric_resources(reqs: &[ExportMetricsServiceRequest]) -> Vec<Resource> {
    reqs.iter().flat_map(|r| r.resource_metrics.iter().map(|rm| rm.resource.clone().unwrap_or_default())).collect()
}

/// Folds the points of one metric over all exports: the latest point per attribute set for
/// cumulative data, the sum for delta data.
fn fold<P: Clone>(points: Vec<(i32, BTreeMap<String, String>, u64, P)>, add: impl Fn(&P, &P) -> P) -> BTreeMap<BTreeMap<String, String>, P> {
    let mut latest: BTreeMap<BTreeMap<String, String>, (u64, P)> = BTreeMap::new();
    for (temporality, attrs, time, p) in points {
        let delta = temporality == AggregationTemporality::Delta as i32;
        match latest.get_mut(&attrs) {
            Some(slot) if delta => slot.1 = add(&slot.1, &p),
            Some(slot) if time >= slot.0 => *slot = (time, p),
            Some(_) => {}
            None => {
                latest.insert(attrs, (time, p));
            }
        }
    }
    latest.into_iter().map(|(k, (_, p))| (k, p)).collect()
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => f64::NAN,
    }
}

/// A sum or gauge: its value per attribute set.
fn numbers(all: &Metrics, name: &str) -> BTreeMap<Attrs, f64> {
    let metrics = all.get(name).unwrap_or_else(|| panic!("metric {name} was exported; got {:?}", all.keys().collect::<Vec<_>>()));
    let mut points = Vec::new();
    for (_, m) in metrics {
        match &m.data {
            Some(metric::Data::Sum(s)) => {
                for p in &s.data_points {
                    points.push((s.aggregation_temporality, attrs(&p.attributes), p.time_unix_nano, number(&p.value)));
                }
            }
            Some(metric::Data::Gauge(g)) => {
                for p in &g.data_points {
                    points.push((AggregationTemporality::Cumulative as i32, attrs(&p.attributes), p.time_unix_nano, number(&p.value)));
                }
            }
            other => panic!("{name} is not a sum or gauge: {other:?}"),
        }
    }
    fold(points, |a, b| a + b)
}

/// A histogram: (count, sum) per attribute set, and the unit.
fn histogram(all: &Metrics, name: &str) -> (String, BTreeMap<Attrs, (u64, f64)>) {
    let metrics = all.get(name).unwrap_or_else(|| panic!("metric {name} was exported; got {:?}", all.keys().collect::<Vec<_>>()));
    let unit = metrics[0].1.unit.clone();
    let mut points = Vec::new();
    for (_, m) in metrics {
        assert_eq!(m.unit, unit, "{name}: one unit");
        match &m.data {
            Some(metric::Data::Histogram(h)) => {
                for p in &h.data_points {
                    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count, "{name}: buckets add up to the count");
                    points.push((h.aggregation_temporality, attrs(&p.attributes), p.time_unix_nano, (p.count, p.sum.unwrap_or(0.0))));
                }
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
    (unit, fold(points, |a, b| (a.0 + b.0, a.1 + b.1)))
}

// ---------------------------------------------------------------------------------------
// The end-to-end tests, one per transport

#[tokio::test(flavor = "current_thread")]
async fn grpc_receiver_gets_the_request_spans_and_metrics_of_known_traffic() {
    end_to_end(Protocol::Grpc).await;
}

#[tokio::test(flavor = "current_thread")]
async fn http_protobuf_receiver_gets_the_request_spans_and_metrics_of_known_traffic() {
    end_to_end(Protocol::HttpProtobuf).await;
}

async fn end_to_end(protocol: Protocol) {
    let receiver = OtlpReceiver::start(protocol);
    let env = OtelEnv::exporting_to(&receiver.endpoint, protocol).await;
    let mut app = Instrumented::start().await;
    assert!(app.telemetry.traces_enabled() && app.telemetry.metrics_enabled(), "an endpoint turns both signals on");

    // The traffic: one push (2 applied, 1 validation failure, 1 conflict, 1 duplicate) and
    // one pull that continues a caller's trace.
    let (status, _, body) = send(&app.base, "/tether/push", &push_headers(), the_push().to_string().into_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let push: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(push["applied"], json!([M1, M2]));
    let reasons: Vec<_> = push["rejected"].as_array().unwrap().iter().map(|r| (r["mutation_id"].clone(), r["reason"].clone())).collect();
    assert_eq!(reasons, vec![(json!(M3), json!("validation_failed")), (json!(M1), json!("duplicate"))]);
    assert_eq!(push["conflicts"][0]["mutation_id"], M4);
    assert!(String::from_utf8_lossy(&body).contains(SECRET), "the host's own answer carries the secret (the conflict's server state)");
    let pull_h = pull_headers();
    let pull_h: Vec<(&str, &str)> = pull_h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = send(&app.base, "/tether/pull", &pull_h, the_pull().to_string().into_bytes()).await;
    assert_eq!(status, 200);
    let pull: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(pull["snapshots"].as_array().map(Vec::len), Some(2), "{pull}");
    assert!(String::from_utf8_lossy(&body).contains(PLAIN) && String::from_utf8_lossy(&body).contains(SECRET));

    let errors = app.shutdown();
    assert!(errors.is_empty(), "telemetry shut down cleanly: {errors:?}");
    drop(env);
    let stats = app.telemetry.stats();
    assert_eq!(stats.span_export_failures.load(Ordering::Relaxed), 0);
    assert_eq!(stats.metric_export_failures.load(Ordering::Relaxed), 0);
    assert!(stats.span_batches_exported.load(Ordering::Relaxed) >= 1);
    assert!(stats.metric_exports.load(Ordering::Relaxed) >= 1);

    let got = &receiver.received;
    let traces = got.traces();
    let metrics = got.metrics();
    assert!(!traces.is_empty() && !metrics.is_empty(), "the receiver got traces ({}) and metrics ({})", traces.len(), metrics.len());
    if protocol == Protocol::HttpProtobuf {
        let cts: BTreeSet<String> = got.content_types().into_iter().collect();
        assert_eq!(cts, BTreeSet::from(["application/x-protobuf".to_owned()]), "OTLP/HTTP binary protobuf");
    }

    // --- Spans --------------------------------------------------------------------------
    let all = spans(&traces);
    let names: Vec<&str> = all.iter().map(|(_, _, s)| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec!["tether.pull", "tether.push"], "one server span per request, each exported once, nothing else");
    let (resource, scope, push_span) = all.iter().find(|(_, _, s)| s.name == "tether.push").unwrap();
    let (_, _, pull_span) = all.iter().find(|(_, _, s)| s.name == "tether.pull").unwrap();
    assert_eq!(scope, telemetry::SCOPE);
    let res = attrs(&resource.attributes);
    assert_eq!(res.get("service.name").map(String::as_str), Some(SERVICE));
    assert_eq!(res.get("service.version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
    let instance = res.get("service.instance.id").expect("service.instance.id").clone();
    assert_eq!(instance.len(), 26, "a ULID: {instance}");

    for s in [push_span, pull_span] {
        assert_eq!(s.kind, span::SpanKind::Server as i32, "{}: kind server", s.name);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0, "{}: times", s.name);
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.span_id.len(), 8);
        assert_ne!(s.status.as_ref().map(|st| st.code), Some(2), "{}: not an error", s.name);
    }
    let pa = attrs(&push_span.attributes);
    let expect = |a: &BTreeMap<String, String>, k: &str, v: &str| {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "attribute {k} in {a:?}");
    };
    expect(&pa, "tether.client_id", CLIENT);
    expect(&pa, "tether.client_version", PUSH_VERSION);
    expect(&pa, "tether.kind", "push");
    expect(&pa, "tether.outcome", "partial");
    expect(&pa, "tether.mutation_count", "5");
    expect(&pa, "tether.applied_count", "2");
    expect(&pa, "tether.rejected_count", "1");
    expect(&pa, "tether.conflict_count", "1");
    expect(&pa, "tether.duplicate_count", "1");
    expect(&pa, "http.response.status_code", "200");
    expect(&pa, "http.route", "/tether/push");
    expect(&pa, "http.request.method", "POST");
    assert_eq!(pa["tether.request_id"].len(), 26);
    assert!(push_span.parent_span_id.is_empty(), "a push without traceparent starts a trace");
    // One event per mutation that was not applied, in order (the applied M1 and M2 are counted).
    let events: Vec<(String, BTreeMap<String, String>)> = push_span.events.iter().map(|e| (e.name.clone(), attrs(&e.attributes))).collect();
    let want = [
        (M3, "create", "rejected", "validation_failed"),
        (M4, "update", "conflict", "conflict"),
        (M1, "create", "duplicate", "duplicate"),
    ];
    assert_eq!(events.len(), want.len(), "{events:?}");
    for ((name, e), (id, op, outcome, reason)) in events.iter().zip(want) {
        assert_eq!(name, "tether.mutation");
        assert_eq!(
            e,
            &attrs_of([
                ("tether.mutation_id", id),
                ("tether.model", "Task"),
                ("tether.operation", op),
                ("tether.outcome", outcome),
                ("tether.reason", reason),
            ]),
        );
    }
    let la = attrs(&pull_span.attributes);
    expect(&la, "tether.client_id", CLIENT);
    expect(&la, "tether.client_version", PULL_VERSION);
    expect(&la, "tether.kind", "pull");
    expect(&la, "tether.outcome", "ok");
    expect(&la, "tether.snapshot_count", "2");
    expect(&la, "tether.has_more", "false");
    expect(&la, "http.response.status_code", "200");
    expect(&la, "http.route", "/tether/pull");
    assert!(pull_span.events.is_empty());
    assert_eq!(hex(&pull_span.trace_id), CALLER_TRACE, "the caller's trace continues");
    assert_eq!(hex(&pull_span.parent_span_id), CALLER_SPAN, "the caller's span is the parent");
    assert_ne!(hex(&pull_span.span_id), CALLER_SPAN);
    assert_ne!(push_span.trace_id, pull_span.trace_id);

    // The ids on the ClickHouse rows are the exported spans' ids.
    let rows = app.ch.rows("SELECT kind, request_id, trace_id, span_id FROM sync_requests ORDER BY started_at").await;
    assert_eq!(rows.len(), 2);
    for (row, s) in rows.iter().zip([push_span, pull_span]) {
        assert_eq!(row["kind"], if s.name == "tether.push" { "push" } else { "pull" });
        assert_eq!(row["trace_id"], hex(&s.trace_id));
        assert_eq!(row["span_id"], hex(&s.span_id));
        assert_eq!(row["request_id"], attrs(&s.attributes)["tether.request_id"]);
    }
    let m = app.ch.rows("SELECT DISTINCT trace_id, span_id FROM sync_mutations").await;
    assert_eq!(m, vec![json!({"trace_id": hex(&push_span.trace_id), "span_id": hex(&push_span.span_id)})]);

    // --- Metrics ------------------------------------------------------------------------
    let by_name = metrics_by_name(&metrics);
    for (name, ms) in &by_name {
        if name.starts_with("tether.") || name.starts_with("http.") {
            assert!(ms.iter().all(|(scope, _)| scope == telemetry::SCOPE), "{name}: scope");
        }
    }
    for r in metric_resources(&metrics) {
        let a = attrs(&r.attributes);
        assert_eq!(a.get("service.name").map(String::as_str), Some(SERVICE));
        assert_eq!(a.get("service.instance.id"), Some(&instance), "traces and metrics name the same instance");
    }
    assert_eq!(
        numbers(&by_name, "tether.requests"),
        BTreeMap::from([
            (attrs_of([("tether.kind", "push"), ("tether.outcome", "partial")]), 1.0),
            (attrs_of([("tether.kind", "pull"), ("tether.outcome", "ok")]), 1.0),
        ])
    );
    let mutation = |op: &str, outcome: &str| attrs_of([("tether.model", "Task"), ("tether.operation", op), ("tether.outcome", outcome)]);
    assert_eq!(
        numbers(&by_name, "tether.mutations"),
        BTreeMap::from([
            (mutation("create", "applied"), 2.0),
            (mutation("create", "rejected"), 1.0),
            (mutation("update", "conflict"), 1.0),
            (mutation("create", "duplicate"), 1.0),
        ])
    );
    assert_eq!(numbers(&by_name, "tether.conflicts"), BTreeMap::from([(attrs_of([("tether.model", "Task")]), 1.0)]));
    assert_eq!(
        numbers(&by_name, "tether.rejections"),
        BTreeMap::from([
            (attrs_of([("tether.reason", "validation_failed")]), 1.0),
            (attrs_of([("tether.reason", "duplicate")]), 1.0),
        ])
    );
    assert_eq!(numbers(&by_name, "tether.snapshots"), BTreeMap::from([(BTreeMap::new(), 2.0)]));

    let (unit, points) = histogram(&by_name, "tether.request.duration");
    assert_eq!(unit, "s");
    assert_eq!(points.values().map(|p| p.0).sum::<u64>(), 2, "one duration per request: {points:?}");
    assert_eq!(points.keys().cloned().collect::<BTreeSet<_>>().len(), 2);
    assert!(points.values().all(|p| p.1 > 0.0 && p.1 < 30.0), "durations are seconds: {points:?}");
    let (unit, points) = histogram(&by_name, "http.server.request.duration");
    assert_eq!(unit, "s");
    assert_eq!(
        points.iter().map(|(k, v)| (k.clone(), v.0)).collect::<BTreeMap<_, _>>(),
        BTreeMap::from([
            (attrs_of([("http.request.method", "POST"), ("http.route", "/tether/push"), ("http.response.status_code", "200")]), 1),
            (attrs_of([("http.request.method", "POST"), ("http.route", "/tether/pull"), ("http.response.status_code", "200")]), 1),
        ])
    );
    let (unit, _) = histogram(&by_name, "tether.capture.insert.duration");
    assert_eq!(unit, "s");

    // The pipeline's own health: the last export (after the capture flush) has every row.
    assert_eq!(
        numbers(&by_name, "tether.capture.rows.written"),
        BTreeMap::from([(attrs_of([("table", "sync_requests")]), 2.0), (attrs_of([("table", "sync_mutations")]), 5.0)])
    );
    assert_eq!(numbers(&by_name, "tether.capture.queue.depth"), BTreeMap::from([(BTreeMap::new(), 0.0)]));
    assert!(by_name.contains_key("tether.capture.queue.bytes"));
    assert!(by_name.contains_key("tether.capture.records.dropped"));
    assert!(by_name.contains_key("tether.capture.insert.failures"));
    let failures = numbers(&by_name, "tether.telemetry.export.failures");
    assert!(failures.values().all(|v| *v == 0.0), "{failures:?}");

    // --- Nothing of any payload, redacted or not ----------------------------------------
    let dump = got.debug_dump();
    assert!(dump.len() > 1000, "the dump covers the requests");
    for needle in [SECRET, "PLANTED", PLAIN, "PLAINVALUE", "REDACTED", "api_key"] {
        assert!(!dump.contains(needle), "{needle:?} reached the OTLP receiver");
    }
}

// ---------------------------------------------------------------------------------------
// The collector is down

#[tokio::test(flavor = "current_thread")]
async fn grpc_endpoint_down_changes_no_answer_and_counts_export_failures() {
    endpoint_down(Protocol::Grpc).await;
}

#[tokio::test(flavor = "current_thread")]
async fn http_endpoint_down_changes_no_answer_and_counts_export_failures() {
    endpoint_down(Protocol::HttpProtobuf).await;
}

async fn endpoint_down(protocol: Protocol) {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let env = OtelEnv::exporting_to(&endpoint, protocol).await;
    let mut app = Instrumented::start().await;
    assert!(app.telemetry.traces_enabled() && app.telemetry.metrics_enabled());
    let plain = serve(sync::router(SyncServer::in_memory())).await;

    // Same requests to both servers: the answers are identical (pull cursors are server
    // change stamps, which differ between two servers: compared without them).
    let pull_h = pull_headers();
    let pull_h: Vec<(&str, &str)> = pull_h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    type Request<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>);
    let requests: Vec<Request> = vec![
        ("/tether/push", push_headers(), the_push().to_string().into_bytes()),
        ("/tether/pull", pull_h.clone(), the_pull().to_string().into_bytes()),
        ("/tether/push", push_headers(), the_push().to_string().into_bytes()), // all duplicates now
        ("/tether/push", push_headers(), b"{\"client_id\": \"x\", \"mutations\": [".to_vec()),
        ("/tether/pull", pull_h, json!({"client_id": CLIENT, "last_sync_cursor": null, "limit": 1}).to_string().into_bytes()),
    ];
    let started = Instant::now();
    for (path, headers, body) in &requests {
        // Let the exporters fail a few times while traffic flows.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let a = send(&app.base, path, headers, body.clone()).await;
        let b = send(&plain, path, headers, body.clone()).await;
        assert_eq!((a.0, &a.1), (b.0, &b.1), "{path}: status and content type");
        if path.ends_with("pull") {
            let strip = |v: &[u8]| {
                let mut v: Value = serde_json::from_slice(v).unwrap();
                v.as_object_mut().unwrap().remove("new_sync_cursor");
                v
            };
            assert_eq!(strip(&a.2), strip(&b.2), "{path}: body");
        } else {
            assert_eq!(a.2, b.2, "{path}: body bytes");
        }
    }
    let serving = started.elapsed();

    let shutdown_started = Instant::now();
    let errors = app.shutdown();
    let shutdown_took = shutdown_started.elapsed();
    drop(env);
    eprintln!("{protocol:?} endpoint down: traffic took {serving:?}, shutdown took {shutdown_took:?}, guard errors: {errors:?}");
    let s = app.telemetry.stats();
    let (span_ok, span_failed) = (s.span_batches_exported.load(Ordering::Relaxed), s.span_export_failures.load(Ordering::Relaxed));
    let (metric_ok, metric_failed) = (s.metric_exports.load(Ordering::Relaxed), s.metric_export_failures.load(Ordering::Relaxed));
    assert_eq!(span_ok, 0, "nothing can have been exported");
    assert!(span_failed > 0, "span export failures are counted: {s:?}");
    assert_eq!(metric_ok, 0);
    assert!(metric_failed > 0, "metric export failures are counted (the shutdown flush exports): {s:?}");
    assert!(shutdown_took < Duration::from_secs(30), "a dead collector does not hang shutdown: {shutdown_took:?}");

    // The capture side did not care.
    assert_eq!(app.ch.count("SELECT count() FROM sync_requests").await, requests.len() as u64);
}

// ---------------------------------------------------------------------------------------
// What the environment switches

#[tokio::test(flavor = "current_thread")]
async fn without_an_endpoint_or_when_disabled_init_exports_nothing() {
    {
        let _env = OtelEnv::set(&[]).await;
        let (t, mut g) = telemetry::init(SERVICE).unwrap();
        assert!(!t.traces_enabled() && !t.metrics_enabled());
        assert!(t.layer::<tracing_subscriber::Registry>().is_none());
        assert!(g.shutdown().is_empty());
    }
    {
        let _env = OtelEnv::set(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_SDK_DISABLED", "true")]).await;
        let (t, _g) = telemetry::init(SERVICE).unwrap();
        assert!(!t.traces_enabled() && !t.metrics_enabled(), "OTEL_SDK_DISABLED wins");
    }
}

/// Per-signal settings: traces over gRPC to one receiver, metrics over HTTP/protobuf to
/// another, each through its own `OTEL_EXPORTER_OTLP_{SIGNAL}_*` variables; and
/// `OTEL_SERVICE_NAME` names the service.
#[tokio::test(flavor = "current_thread")]
async fn per_signal_endpoints_and_protocols_are_honoured() {
    let grpc = OtlpReceiver::start(Protocol::Grpc);
    let http = OtlpReceiver::start(Protocol::HttpProtobuf);
    let metrics_url = format!("{}/v1/metrics", http.endpoint);
    let env = OtelEnv::set(&[
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", grpc.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", metrics_url.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "renamed-service"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let mut app = Instrumented::start().await;
    let (status, _, _) = send(&app.base, "/tether/push", &push_headers(), the_push().to_string().into_bytes()).await;
    assert_eq!(status, 200);
    let errors = app.shutdown();
    assert!(errors.is_empty(), "{errors:?}");
    drop(env);

    let traces = grpc.received.traces();
    let metrics = http.received.metrics();
    assert!(grpc.received.metrics().is_empty() && http.received.traces().is_empty(), "each signal went only where it was sent");
    let all = spans(&traces);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].2.name, "tether.push");
    assert_eq!(attrs(&all[0].0.attributes).get("service.name").map(String::as_str), Some("renamed-service"));
    let by_name = metrics_by_name(&metrics);
    assert_eq!(
        numbers(&by_name, "tether.requests"),
        BTreeMap::from([(attrs_of([("tether.kind", "push"), ("tether.outcome", "partial")]), 1.0)])
    );
    for r in metric_resources(&metrics) {
        assert_eq!(attrs(&r.attributes).get("service.name").map(String::as_str), Some("renamed-service"));
    }
}

// ---------------------------------------------------------------------------------------
// Shutdown and resource

/// A host on a current-thread runtime that simply drops the guards at the end (on the
/// runtime's own thread): the last spans and metrics still reach a gRPC collector, and the
/// drop returns. (Before the gRPC exporters had their own runtime, this hung forever: the
/// flush waited for a connection task on the very runtime the flush was blocking.)
#[test]
fn dropping_the_guards_on_a_current_thread_runtime_flushes_over_grpc_and_returns() {
    let receiver = OtlpReceiver::start(Protocol::Grpc);
    let endpoint = receiver.endpoint.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let env = OtelEnv::set(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                // Never on their own within the test: only the drop's flush exports.
                ("OTEL_METRIC_EXPORT_INTERVAL", "3600000"),
                ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-7,deployment.environment=prod"),
            ])
            .await;
            let app = Instrumented::start().await;
            drop(env); // read by `init` only; released so a hang here cannot block the other tests
            let (status, _, _) = send(&app.base, "/tether/push", &push_headers(), the_push().to_string().into_bytes()).await;
            assert_eq!(status, 200);
            let started = Instant::now();
            drop(app); // the capture guard, then the telemetry guard, on this thread
            done_tx.send(started.elapsed()).unwrap();
        });
    });
    let took = done_rx.recv_timeout(Duration::from_secs(60)).expect("dropping the guards on a current-thread runtime returns within 60 s (or the thread running it panicked: see above)");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let all = spans(&receiver.received.traces());
    assert_eq!(all.iter().map(|(_, _, s)| s.name.as_str()).collect::<Vec<_>>(), vec!["tether.push"], "flushed by the drop");
    let by_name = metrics_by_name(&receiver.received.metrics());
    assert_eq!(numbers(&by_name, "tether.requests").values().sum::<f64>(), 1.0, "flushed by the drop");
    // The deployment's resource attributes win over tether-pro's defaults.
    let res = attrs(&all[0].0.attributes);
    assert_eq!(res.get("service.instance.id").map(String::as_str), Some("pod-7"));
    assert_eq!(res.get("deployment.environment").map(String::as_str), Some("prod"));
    assert_eq!(res.get("service.name").map(String::as_str), Some(SERVICE));
    assert_eq!(res.get("service.version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "current_thread")]
async fn the_resource_takes_the_environment_first_then_the_defaults() {
    let get = |r: &opentelemetry_sdk::Resource, k: &'static str| r.get(&opentelemetry::Key::from_static_str(k)).map(|v| v.to_string());
    {
        let _env = OtelEnv::set(&[]).await;
        let r = telemetry::resource(SERVICE);
        assert_eq!(get(&r, "service.name").as_deref(), Some(SERVICE));
        assert_eq!(get(&r, "service.version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
        let id = get(&r, "service.instance.id").unwrap();
        assert_eq!(id.len(), 26);
        assert_ne!(get(&telemetry::resource(SERVICE), "service.instance.id"), Some(id), "an instance id per process start");
    }
    {
        let _env = OtelEnv::set(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,service.version=2.0.0,service.instance.id=pod-7")]).await;
        let r = telemetry::resource(SERVICE);
        assert_eq!(get(&r, "service.name").as_deref(), Some("from-attrs"));
        assert_eq!(get(&r, "service.version").as_deref(), Some("2.0.0"));
        assert_eq!(get(&r, "service.instance.id").as_deref(), Some("pod-7"));
    }
    {
        let _env = OtelEnv::set(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"), ("OTEL_SERVICE_NAME", "from-service-name")]).await;
        assert_eq!(get(&telemetry::resource(SERVICE), "service.name").as_deref(), Some("from-service-name"), "OTEL_SERVICE_NAME wins");
    }
}

/// Issue 13, input 6: a collector that accepts connections and never answers. Shutdown
/// (ClickHouse flush first, then telemetry) gives up on the collector at the telemetry
/// shutdown bound instead of waiting for every export's own timeout (25 s before), and every
/// captured request is in ClickHouse.
#[tokio::test(flavor = "current_thread")]
async fn a_collector_that_never_answers_bounds_shutdown_and_loses_no_captured_request() {
    // Accepts, reads nothing, answers nothing; the sockets stay open until the test ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    // The exporters' default timeout (10 s per export), as a user gets it.
    let env = OtelEnv::set(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let mut app = Instrumented::start().await;
    let n = 5;
    for _ in 0..n {
        let (status, _, _) = send(&app.base, "/tether/push", &push_headers(), the_push().to_string().into_bytes()).await;
        assert_eq!(status, 200);
    }
    let started = Instant::now();
    let errors = app.shutdown();
    let took = started.elapsed();
    drop(env);
    eprintln!("never-answering collector: shutdown took {took:?}; guard errors {errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("did not answer within 3000 ms")),
        "the telemetry shutdown gave up at its bound: {errors:?}"
    );
    assert!(took < Duration::from_secs(20), "a hung collector does not hold shutdown: {took:?}");
    assert_eq!(app.ch.count("SELECT count() FROM sync_requests").await, n, "every captured request written first");
}
