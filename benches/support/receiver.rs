//! A live OTLP/HTTP (protobuf) receiver for the benches: decodes every export request as a
//! collector would and counts what it got, keeping nothing else.
//!
//! Why not `tests/common/otlp_receiver.rs`: it keeps every decoded request (memory grows
//! with a long run) and, being a plain axum router, refuses bodies over axum's default 2 MB
//! limit with 413. A batch of 512 spans carrying 18 KB payloads is ~9 MB; the OpenTelemetry
//! Collector's OTLP/HTTP receiver accepts 20 MiB by default, so 413 here would misrepresent
//! variant (c).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;

#[derive(Default)]
pub struct Counts {
    pub spans: AtomicU64,
    pub trace_bytes: AtomicU64,
    pub metric_exports: AtomicU64,
    pub rejected: AtomicU64,
}

pub struct Receiver {
    /// What to put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    pub counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts on loopback, on a thread and runtime of its own.
    pub fn start() -> Receiver {
        let counts = Arc::new(Counts::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = counts.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("receiver runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
                addr_tx.send(listener.local_addr().expect("local addr")).expect("report the address");
                let app = axum::Router::new()
                    .route("/v1/traces", post(traces))
                    .route("/v1/metrics", post(metrics))
                    .layer(DefaultBodyLimit::max(64 << 20))
                    .with_state(state);
                tokio::select! {
                    r = axum::serve(listener, app).into_future() => r.expect("OTLP receiver"),
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("the receiver bound a port");
        Receiver { endpoint: format!("http://{addr}"), counts, stop: Some(stop_tx), thread: Some(thread) }
    }

    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    pub fn metric_exports(&self) -> u64 {
        self.counts.metric_exports.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.counts.rejected.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn protobuf(body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
}

async fn traces(State(c): State<Arc<Counts>>, body: Bytes) -> Response {
    let len = body.len() as u64;
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            let n: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            c.spans.fetch_add(n as u64, Ordering::Relaxed);
            c.trace_bytes.fetch_add(len, Ordering::Relaxed);
            protobuf(ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
        }
        Err(e) => {
            c.rejected.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

async fn metrics(State(c): State<Arc<Counts>>, body: Bytes) -> Response {
    match ExportMetricsServiceRequest::decode(body) {
        Ok(_) => {
            c.metric_exports.fetch_add(1, Ordering::Relaxed);
            protobuf(ExportMetricsServiceResponse { partial_success: None }.encode_to_vec())
        }
        Err(e) => {
            c.rejected.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}
