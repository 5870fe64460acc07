//! Metric instruments, created once. Attributes have bounded cardinality: the client id is
//! never an attribute (it belongs in ClickHouse), and models beyond a cap share one value.
//! A model earns its own label only once the host accepted one of its mutations, so junk
//! model names (which the host rejects) cannot use up the budget.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use super::{SCOPE, TelemetryStats};
use crate::capture::CaptureStats;

/// Distinct model names reported before the rest become [`OTHER_MODEL`].
pub const MAX_MODELS: usize = 50;
/// The model attribute of models past the cap, and of models the host has not accepted yet.
pub const OTHER_MODEL: &str = "_other";

/// Latency buckets in seconds (the HTTP semantic conventions' recommendation).
const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

pub(crate) struct Instruments {
    pub requests: Counter<u64>,
    pub request_duration: Histogram<f64>,
    pub http_duration: Histogram<f64>,
    pub mutations: Counter<u64>,
    pub conflicts: Counter<u64>,
    pub rejections: Counter<u64>,
    pub snapshots: Counter<u64>,
    pub insert_duration: Histogram<f64>,
    models: Mutex<HashSet<String>>,
}

impl Instruments {
    pub fn new(provider: &SdkMeterProvider) -> Self {
        let m = provider.meter(SCOPE);
        let seconds = |name: &'static str, description: &'static str| {
            m.f64_histogram(name).with_unit("s").with_description(description).with_boundaries(DURATION_BUCKETS.to_vec()).build()
        };
        Instruments {
            requests: m.u64_counter("tether.requests").with_description("Tether pushes and pulls, by kind and outcome").build(),
            request_duration: seconds("tether.request.duration", "Time to the end of the response body, by kind and outcome"),
            http_duration: seconds("http.server.request.duration", "HTTP server request duration (semantic conventions)"),
            mutations: m.u64_counter("tether.mutations").with_description("Pushed mutations by model, operation and outcome").build(),
            conflicts: m.u64_counter("tether.conflicts").with_description("Conflicting mutations by model").build(),
            rejections: m.u64_counter("tether.rejections").with_description("Rejected mutations by reason (duplicates included)").build(),
            snapshots: m.u64_counter("tether.snapshots").with_description("Snapshots served by pulls").build(),
            insert_duration: seconds("tether.capture.insert.duration", "ClickHouse insert latency of the capture pipeline"),
            models: Mutex::new(HashSet::new()),
        }
    }

    /// Gives `model` its own label (while fewer than [`MAX_MODELS`] have one). Call it only
    /// for a model the host accepted (applied, conflict or duplicate: it knows the model).
    pub fn admit_model(&self, model: &str) {
        let mut seen = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_MODELS && !seen.contains(model) {
            seen.insert(model.to_owned());
        }
    }

    /// The model's attribute value: its name once admitted, else [`OTHER_MODEL`].
    pub fn model(&self, model: &str) -> String {
        let seen = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(model) { model.to_owned() } else { OTHER_MODEL.to_owned() }
    }
}

/// The `stage` of each of [`crate::capture::DROP_REASONS`] (the attribute predates `reason`).
const DROP_STAGES: [&str; 6] = ["queue", "write_buffer", "spool", "spool", "clickhouse", "shutdown"];

/// Observable instruments over the capture pipeline's and exporters' counters.
pub(crate) fn observe_capture(provider: &SdkMeterProvider, c: Arc<CaptureStats>, t: Arc<TelemetryStats>) {
    let m = provider.meter(SCOPE);
    let c1 = c.clone();
    m.u64_observable_gauge("tether.capture.queue.depth")
        .with_description("Captured records waiting in the queue")
        .with_callback(move |o| o.observe(c1.queue_depth.load(Ordering::Relaxed), &[]))
        .build();
    let c2 = c.clone();
    m.u64_observable_gauge("tether.capture.queue.bytes")
        .with_unit("By")
        .with_description("Bytes held by queued records")
        .with_callback(move |o| o.observe(c2.queue_bytes.load(Ordering::Relaxed) as u64, &[]))
        .build();
    let c3 = c.clone();
    m.u64_observable_counter("tether.capture.records.dropped")
        .with_description(
            "Captured records not in ClickHouse nor the disk spool, by reason (queue_full, write_buffer_full, \
             spool_full, spool_corrupt, bad_data, shutdown); `stage` is where",
        )
        .with_callback(move |o| {
            let t = c3.totals();
            for ((reason, n), stage) in t.dropped_by_reason().into_iter().zip(DROP_STAGES) {
                o.observe(n, &[KeyValue::new("reason", reason), KeyValue::new("stage", stage)]);
            }
        })
        .build();
    let c4 = c.clone();
    m.u64_observable_counter("tether.capture.rows.written")
        .with_description("Rows the capture pipeline wrote to ClickHouse")
        .with_callback(move |o| {
            o.observe(c4.requests_written.load(Ordering::Relaxed), &[KeyValue::new("table", "sync_requests")]);
            o.observe(c4.mutations_written.load(Ordering::Relaxed), &[KeyValue::new("table", "sync_mutations")]);
        })
        .build();
    let c5 = c.clone();
    m.u64_observable_counter("tether.capture.insert.failures")
        .with_description("Failed ClickHouse insert attempts (each retry counts)")
        .with_callback(move |o| o.observe(c5.insert_failures.load(Ordering::Relaxed), &[]))
        .build();
    observe_spool(&m, c);
    m.u64_observable_counter("tether.telemetry.export.failures")
        .with_description("Failed OTLP exports, by signal")
        .with_callback(move |o| {
            o.observe(t.span_export_failures.load(Ordering::Relaxed), &[KeyValue::new("signal", "traces")]);
            o.observe(t.metric_export_failures.load(Ordering::Relaxed), &[KeyValue::new("signal", "metrics")]);
        })
        .build();
}

/// The disk spool's size and age (zero while it is off or empty).
fn observe_spool(m: &opentelemetry::metrics::Meter, c: Arc<CaptureStats>) {
    let c1 = c.clone();
    m.u64_observable_gauge("tether.capture.spool.bytes")
        .with_unit("By")
        .with_description("Bytes of captured batches waiting in the disk spool")
        .with_callback(move |o| o.observe(c1.spool_bytes.load(Ordering::Relaxed), &[]))
        .build();
    let c2 = c.clone();
    m.u64_observable_gauge("tether.capture.spool.records")
        .with_description("Captured requests waiting in the disk spool")
        .with_callback(move |o| o.observe(c2.spool_records.load(Ordering::Relaxed), &[]))
        .build();
    let c3 = c.clone();
    m.f64_observable_gauge("tether.capture.spool.age")
        .with_unit("s")
        .with_description("Age of the oldest batch in the disk spool (0 when empty)")
        .with_callback(move |o| {
            let oldest = c3.spool_oldest_unix_ms.load(Ordering::Relaxed);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            o.observe(if oldest == 0 { 0.0 } else { now.saturating_sub(oldest) as f64 / 1000.0 }, &[]);
        })
        .build();
    let c4 = c;
    m.u64_observable_counter("tether.capture.spool.records.moved")
        .with_description("Captured requests spilled to the disk spool, and written from it to ClickHouse")
        .with_callback(move |o| {
            o.observe(c4.spool_spilled.load(Ordering::Relaxed), &[KeyValue::new("direction", "spilled")]);
            o.observe(c4.spool_written.load(Ordering::Relaxed), &[KeyValue::new("direction", "written")]);
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input: 51 junk model names pushed first after start (all rejected by the
    /// host) filled the budget and every later `Task` was counted as `_other`.
    #[test]
    fn junk_model_names_cannot_exhaust_the_model_label_budget() {
        let i = Instruments::new(&SdkMeterProvider::builder().build());
        for n in 0..=MAX_MODELS {
            let junk = format!("junk_{n}");
            // Rejected: never admitted.
            assert_eq!(i.model(&junk), OTHER_MODEL);
        }
        i.admit_model("Task");
        assert_eq!(i.model("Task"), "Task");
        assert_eq!(i.model("junk_0"), OTHER_MODEL);
    }

    #[test]
    fn accepted_models_past_the_cap_share_other() {
        let i = Instruments::new(&SdkMeterProvider::builder().build());
        for n in 0..MAX_MODELS {
            i.admit_model(&format!("Model{n}"));
        }
        i.admit_model("OneTooMany");
        assert_eq!(i.model("Model0"), "Model0");
        assert_eq!(i.model(&format!("Model{}", MAX_MODELS - 1)), format!("Model{}", MAX_MODELS - 1));
        assert_eq!(i.model("OneTooMany"), OTHER_MODEL);
    }
}
