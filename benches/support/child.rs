//! The reference server in a child process: the bench binary re-executes itself with
//! `--serve-variant NAME`. The child prints `LISTEN <addr>` when it accepts connections,
//! serves until its stdin closes, flushes whatever it exports, prints `STATS k=v ...` and
//! exits. Configuration travels in environment variables set by the parent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::TracerProvider as _;
use tether_pro::config::{AppliedDetail, CaptureConfig};
use tether_pro::pipeline::{self, ClickHouseWriter};
use tether_pro::sync::{self, SyncServer};
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const ARG: &str = "--serve-variant";
/// ClickHouse URL and database for the tether variant.
pub const ENV_CH_URL: &str = "TETHER_BENCH_CH_URL";
pub const ENV_CH_DB: &str = "TETHER_BENCH_CH_DB";
/// Optional capture caps for the tether variant (bytes); unset: production defaults.
pub const ENV_QUEUE_BYTES: &str = "TETHER_BENCH_QUEUE_BYTES";
pub const ENV_BATCH_BYTES: &str = "TETHER_BENCH_BATCH_BYTES";
/// Optional SQLite file for the reference server; unset: in memory (fresh per child).
pub const ENV_SQLITE_FILE: &str = "TETHER_BENCH_SQLITE_FILE";

/// What runs in front of the same reference server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// (a) no instrumentation, no subscriber.
    Plain,
    /// (b) tether-pro: CaptureLayer + SyncLayer + pipeline into ClickHouse + OTLP spans and
    /// metrics through `tether_pro::telemetry`.
    Tether,
    /// (c) what a Rust user would otherwise write: a `tracing` span per request with the
    /// body as an attribute, `tracing-opentelemetry`, the SDK's batch span exporter, OTLP.
    OtelPayload,
    /// (f) the floor: the host plus the cheapest capture that could possibly work. The same
    /// CaptureLayer + SyncLayer hand bodies and states to the same queue; a thread parses each
    /// request body once and drops it. Nothing is stored, nothing exported.
    Floor,
    /// (b) with `capture.applied = "sampled"` (10 %, the default ratio).
    TetherSampled,
    /// (b) with `capture.applied = "counts"`.
    TetherCounts,
}

impl Variant {
    pub const ALL: [Variant; 6] =
        [Variant::Plain, Variant::Tether, Variant::OtelPayload, Variant::Floor, Variant::TetherSampled, Variant::TetherCounts];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "a_plain",
            Variant::Tether => "b_tether_pro",
            Variant::OtelPayload => "c_tracing_otel_payload",
            Variant::Floor => "f_floor",
            Variant::TetherSampled => "b_sampled_10pct",
            Variant::TetherCounts => "b_counts",
        }
    }

    /// Runs tether-pro's pipeline into ClickHouse (under some capture policy).
    pub fn is_tether(self) -> bool {
        matches!(self, Variant::Tether | Variant::TetherSampled | Variant::TetherCounts)
    }

    /// Exports over OTLP (needs a receiver).
    pub fn exports(self) -> bool {
        !matches!(self, Variant::Plain | Variant::Floor)
    }

    fn from_name(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

// ---------------------------------------------------------------------------------------
// Parent side

/// A running child server.
pub struct ChildServer {
    pub variant: Variant,
    pub pid: u32,
    pub push_url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    /// Starts `variant` with `envs` and waits for it to listen.
    pub fn spawn(variant: Variant, envs: &[(&str, String)]) -> ChildServer {
        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut cmd = Command::new(exe);
        cmd.arg(ARG).arg(variant.name()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        // The child reads only what we give it.
        for k in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SDK_DISABLED", "RUST_LOG"] {
            cmd.env_remove(k);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("re-executing the bench binary as a server");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the child's first line");
        let addr = line.trim().strip_prefix("LISTEN ").unwrap_or_else(|| panic!("child {variant:?} did not start: {line:?}"));
        let push_url = format!("http://{addr}{}", tether_pro::protocol::PUSH_PATH);
        ChildServer { variant, pid: child.id(), push_url, child, stdin, stdout }
    }

    /// Closes its stdin (graceful shutdown, exporters flushed) and returns its `STATS`.
    pub fn stop(mut self) -> HashMap<String, String> {
        drop(self.stdin.take());
        let mut stats = HashMap::new();
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line.trim().strip_prefix("STATS") {
                for kv in rest.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        stats.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            line.clear();
        }
        let status = self.child.wait().expect("waiting for the child");
        assert!(status.success(), "child server {:?} failed: {status}", self.variant);
        stats
    }
}

pub fn stat_u64(stats: &HashMap<String, String>, key: &str) -> u64 {
    stats.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in the child's STATS: {stats:?}"))
}

// ---------------------------------------------------------------------------------------
// Child side

/// When this process was started as a child server, serves and exits; otherwise returns.
pub fn run_if_child() {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == ARG) else { return };
    let variant = args.get(i + 1).and_then(|n| Variant::from_name(n)).expect("a variant name after --serve-variant");
    if let Err(e) = serve_variant(variant) {
        eprintln!("bench child {variant:?}: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("the parent sets {name}"))
}

fn serve_variant(variant: Variant) -> anyhow::Result<()> {
    // The same runtime and the same server in every variant; only the instrumentation differs.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // A file keeps the database out of the process's resident memory (the page cache holds
    // it), for a bench that reads the RSS; in memory is the fresh state per round otherwise.
    let server = match std::env::var(ENV_SQLITE_FILE) {
        Ok(path) => SyncServer::builder().storage(sync::Storage::File(path.into())).build()?,
        Err(_) => SyncServer::in_memory(),
    };
    let stats = match variant {
        Variant::Plain => {
            rt.block_on(serve(sync::router(server)))?;
            "flush_ms=0".to_owned()
        }
        Variant::Tether => serve_tether(&rt, server, AppliedDetail::Full)?,
        Variant::TetherSampled => serve_tether(&rt, server, AppliedDetail::Sampled)?,
        Variant::TetherCounts => serve_tether(&rt, server, AppliedDetail::Counts)?,
        Variant::OtelPayload => serve_otel_payload(&rt, server)?,
        Variant::Floor => serve_floor(&rt, server)?,
    };
    drop(rt);
    // After every flush: the CPU the whole process used, deferred work included.
    println!("STATS {stats} cpu_us={}", process_cpu_us());
    std::io::stdout().flush()?;
    Ok(())
}

fn process_cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Wired exactly as the README's "Instrument your sync server" shows.
fn serve_tether(rt: &tokio::runtime::Runtime, server: SyncServer, applied: AppliedDetail) -> anyhow::Result<String> {
    let mut cfg = CaptureConfig { applied, ..CaptureConfig::default() };
    if let Ok(v) = std::env::var(ENV_QUEUE_BYTES) {
        cfg.queue_bytes = v.parse()?;
        // The byte cap is the one under test: the record cap must not bind first.
        cfg.queue_records = 1_000_000;
    }
    if let Ok(v) = std::env::var(ENV_BATCH_BYTES) {
        cfg.batch_bytes = v.parse()?;
    }
    if let Ok(v) = std::env::var("HOST_BENCH_PIPELINE_NICE") {
        cfg.pipeline_nice = v.parse()?;
    }
    // For experiments with the insert cadence (BENCHMARKS.md section 6).
    if let Ok(v) = std::env::var("HOST_BENCH_BATCH_ROWS") {
        cfg.batch_rows = v.parse()?;
    }
    if let Ok(v) = std::env::var("HOST_BENCH_BATCH_INTERVAL_MS") {
        cfg.batch_interval_ms = v.parse()?;
    }
    let (telemetry, mut telemetry_guard) = tether_pro::telemetry::init("tether-bench-server")?;
    anyhow::ensure!(telemetry.traces_enabled() && telemetry.metrics_enabled(), "OTLP export must be on for this variant");
    let writer = ClickHouseWriter::new(super::server_client(&env(ENV_CH_URL)).with_database(env(ENV_CH_DB)));
    let (capture, mut guard) = pipeline::start_with_telemetry(&cfg, writer, telemetry.clone())?;
    tracing_subscriber::registry().with(capture.layer()).with(telemetry.layer()).init();
    let app = sync::router(server).layer(capture.http_layer());
    rt.block_on(serve(app))?;
    // Outside the runtime: both guards block while they flush.
    let flush = Instant::now();
    guard.shutdown();
    let flush_ms = flush.elapsed().as_millis();
    let telemetry_errors = telemetry_guard.shutdown().len();
    let t = capture.stats().totals();
    Ok(format!(
        "enqueued={} dropped={} buffer_dropped={} requests_written={} mutations_written={} records_failed={} \
         insert_failures={} inserts={} insert_latency_us_sum={} flush_ms={flush_ms} telemetry_errors={telemetry_errors}",
        t.enqueued,
        t.dropped,
        t.buffer_dropped,
        t.requests_written,
        t.mutations_written,
        t.records_failed,
        t.insert_failures,
        t.inserts,
        t.insert_latency_us_sum
    ))
}

/// The floor: what any capture must do at least. The request thread's part is tether-pro's
/// own (CaptureLayer, SyncLayer, the queue); the consumer only parses each request body once.
fn serve_floor(rt: &tokio::runtime::Runtime, server: SyncServer) -> anyhow::Result<String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cfg = CaptureConfig::default();
    let stats = Arc::new(tether_pro::capture::CaptureStats::default());
    let (queue, mut rx) = tether_pro::internals::queue::bounded(cfg.queue_records, cfg.queue_bytes, stats.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            let mut parsed = 0u64;
            loop {
                let done = stop.load(Ordering::Relaxed);
                taken.clear();
                rx.drain(usize::MAX, &mut taken);
                for (rec, bytes) in taken.drain(..) {
                    let body = rec.request_body.to_bytes();
                    if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                        parsed += 1;
                    }
                    rx.release(bytes);
                }
                if done {
                    return parsed;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let layer = tether_pro::capture::SyncLayer::new(queue).with_filter(tether_pro::capture::CaptureInterest);
    tracing_subscriber::registry().with(layer).init();
    let app = sync::router(server).layer(tether_pro::capture::CaptureLayer::new());
    rt.block_on(serve(app))?;
    stop.store(true, Ordering::Relaxed);
    let parsed = consumer.join().map_err(|_| anyhow::anyhow!("the floor's consumer panicked"))?;
    let t = stats.totals();
    Ok(format!("flush_ms=0 enqueued={} dropped={} parsed={parsed}", t.enqueued, t.dropped))
}

/// The do-it-yourself alternative: `OTEL_EXPORTER_OTLP_*` from the environment, the SDK's
/// batch span processor with its defaults, an INFO filter as `RUST_LOG=info` would give.
fn serve_otel_payload(rt: &tokio::runtime::Runtime, server: SyncServer) -> anyhow::Result<String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("otel-bench-server").build())
        .with_batch_exporter(exporter)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sync-server"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(layer).init();
    let app = sync::router(server).layer(axum::middleware::from_fn(span_with_payload));
    rt.block_on(serve(app))?;
    let flush = Instant::now();
    let flushed = provider.force_flush().is_ok();
    let flush_ms = flush.elapsed().as_millis();
    provider.shutdown()?;
    Ok(format!("flushed={} flush_ms={flush_ms}", flushed as u8))
}

/// One server span per request with the request body (the payload JSON) as an attribute.
async fn span_with_payload(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(_) => return http::StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let span = tracing::info_span!(
        "sync.request",
        otel.kind = "server",
        http.request.method = %parts.method,
        url.path = %parts.uri.path(),
        http.request.body = %String::from_utf8_lossy(&bytes),
        http.response.status_code = tracing::field::Empty,
    );
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

/// Serves until stdin closes (the parent's stop signal; also when the parent dies).
async fn serve(app: axum::Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTEN {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stdin_closed.await;
        })
        .await?;
    Ok(())
}
