//! OpenTelemetry: traces and metrics over OTLP, configured by the standard `OTEL_*`
//! environment variables.
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`): where
//!   to send. With no endpoint for a signal, that signal is not exported at all and costs
//!   nothing. `OTEL_SDK_DISABLED=true` turns both off; `OTEL_TRACES_EXPORTER=none` /
//!   `OTEL_METRICS_EXPORTER=none` one of them.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or per signal): `grpc` or `http/protobuf` (the default).
//! - Headers, timeout, compression and batch settings (`OTEL_EXPORTER_OTLP_HEADERS`,
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`) are read by the
//!   exporters themselves.
//! - `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` name the service.
//!
//! The request span (`tether.push` / `tether.pull`, kind server) is built by the pipeline
//! once the bodies are parsed, with the ids the capture layer minted on arrival (see `ids`),
//! so it carries client id, counts and outcome with no parsing on the request thread. Spans
//! the host opens inside its handler are its children. No payload, body, state or diff ever
//! goes into OTLP.

mod export;
mod instruments;
mod record;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use export::TelemetryStats;
pub use crate::capture::ids::TetherIdGenerator;
pub(crate) use instruments::Instruments;

use crate::capture::CaptureStats;

/// Instrumentation scope of everything tether-pro emits.
pub const SCOPE: &str = "tether-pro";

/// Handle the pipeline uses to emit spans and metrics. Cheap to clone; a disabled handle
/// does nothing.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub(crate) tracer: Option<SdkTracer>,
    pub(crate) instruments: Option<Arc<Instruments>>,
    meter_provider: Option<SdkMeterProvider>,
    stats: Arc<TelemetryStats>,
    /// Longest string attribute value exported, in characters (see
    /// [`attribute_value_length_limit`]); `None` until a provider is set.
    pub(crate) attribute_value_length_limit: Option<usize>,
}

/// Longest string attribute value exported when the environment sets none, in characters. The
/// OpenTelemetry specification's default is no limit, and the Rust SDK (0.33) applies no limit
/// at all; a client id of a megabyte must not become a megabyte span attribute.
pub const DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT: usize = 4096;

/// The attribute value length limit from the SDK environment variables of the
/// specification: `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else
/// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else [`DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT`]. A value
/// that is not a non-negative integer is ignored (with the default used), as the spec asks.
pub fn attribute_value_length_limit() -> usize {
    ["OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"]
        .iter()
        .find_map(|name| env(name).and_then(|v| v.trim().parse::<usize>().ok()))
        .unwrap_or(DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT)
}

impl Telemetry {
    /// Emits nothing.
    pub fn disabled() -> Self {
        Telemetry::default()
    }

    /// From providers you built yourself. The tracer provider must use
    /// [`TetherIdGenerator`] (request spans keep the ids their children already use).
    pub fn from_providers(tracer: Option<&SdkTracerProvider>, meter: Option<&SdkMeterProvider>) -> Self {
        Telemetry {
            tracer: tracer.map(|p| p.tracer(SCOPE)),
            instruments: meter.map(|m| Arc::new(Instruments::new(m))),
            meter_provider: meter.cloned(),
            stats: Arc::new(TelemetryStats::default()),
            attribute_value_length_limit: Some(attribute_value_length_limit()),
        }
    }

    /// Whether request spans are exported (a tracer provider is set).
    pub fn traces_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Whether metrics are recorded (a meter provider is set).
    pub fn metrics_enabled(&self) -> bool {
        self.instruments.is_some()
    }

    /// The exporters' counts. Only [`init`]'s exporters count: with
    /// [`from_providers`](Self::from_providers) or [`disabled`](Self::disabled) they stay 0.
    pub fn stats(&self) -> &Arc<TelemetryStats> {
        &self.stats
    }

    /// Registers the capture pipeline's own health gauges (queue depth, drops, rows written,
    /// insert failures) and the exporters' failure counts.
    pub fn observe_capture(&self, capture: Arc<CaptureStats>) {
        if let (Some(provider), Some(_)) = (&self.meter_provider, &self.instruments) {
            instruments::observe_capture(provider, capture, self.stats.clone());
        }
    }

    /// The `tracing-opentelemetry` layer for the host's own spans, or `None` when traces are
    /// off. The exporter's own stack and tether-pro's capture spans (exported by the pipeline
    /// with their full attributes) are filtered out of it.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + use<S>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.tracer.clone()?;
        let filter = tracing_subscriber::filter::filter_fn(|meta| !is_excluded_target(meta.target()));
        Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(filter))
    }
}

/// Targets whose spans and events never become OTLP data: the exporter's transport (every
/// export would otherwise make more spans), the pipeline's ClickHouse client, and our own
/// capture spans and mutation events.
pub fn is_excluded_target(target: &str) -> bool {
    const EXCLUDED: &[&str] = &["hyper", "h2", "tonic", "tower", "reqwest", "clickhouse", "tether_pro::capture", "tether_pro::mutation"];
    // opentelemetry, opentelemetry_sdk, opentelemetry-otlp ... (the SDK's internal logs)
    target.starts_with("opentelemetry")
        || EXCLUDED.iter().any(|p| target == *p || (target.starts_with(p) && target[p.len()..].starts_with("::")))
}

/// Flushes and shuts down traces, then metrics, within [`TelemetryGuard::SHUTDOWN_TIMEOUT`]
/// (a collector that accepts and never answers must not hold the process), reporting every
/// error to stderr. Shut the capture pipeline down first: captured requests go to ClickHouse,
/// never through telemetry, so a slow collector costs spans and metrics only.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    /// The gRPC exporters' own runtime (see [`ExporterRuntime`]), stopped last.
    runtime: Option<ExporterRuntime>,
    shutdown_timeout: Duration,
}

impl TelemetryGuard {
    /// The longest [`shutdown`](Self::shutdown) waits for the collector, for both signals.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

    /// A guard with nothing to shut down (telemetry off).
    pub fn disabled() -> Self {
        TelemetryGuard { tracer_provider: None, meter_provider: None, runtime: None, shutdown_timeout: Self::SHUTDOWN_TIMEOUT }
    }

    /// Replaces [`SHUTDOWN_TIMEOUT`](Self::SHUTDOWN_TIMEOUT) (3 s) as the bound of [`shutdown`](Self::shutdown).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Flushes and shuts down traces, then metrics, waiting at most the shutdown timeout for
    /// both. Returns the errors, also printed to stderr (a collector that did not answer in time
    /// is one). Idempotent; `Drop` calls it.
    pub fn shutdown(&mut self) -> Vec<String> {
        let (tracer, meter) = (self.tracer_provider.take(), self.meter_provider.take());
        let mut errors = Vec::new();
        if tracer.is_some() || meter.is_some() {
            // On a thread of its own: the SDK's metrics shutdown has no deadline, and an export
            // to a collector that never answers waits for the exporter's own timeout.
            let budget = self.shutdown_timeout;
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new().name("tether-pro-otel-shutdown".into()).spawn(move || {
                let started = std::time::Instant::now();
                let mut errors = Vec::new();
                if let Some(p) = tracer
                    && let Err(e) = p.shutdown_with_timeout(budget)
                {
                    errors.push(format!("shutting down traces: {e}"));
                }
                if let Some(p) = meter
                    && let Err(e) = p.shutdown_with_timeout(budget.saturating_sub(started.elapsed()))
                {
                    errors.push(format!("shutting down metrics: {e}"));
                }
                let _ = tx.send(errors);
            });
            errors = match spawned {
                Err(e) => vec![format!("shutting down: {e}")],
                Ok(_) => rx.recv_timeout(budget).unwrap_or_else(|_| {
                    vec![format!(
                        "the collector did not answer within {} ms: spans and metrics not yet exported are dropped \
                         (captured requests are unaffected: they go to ClickHouse)",
                        budget.as_millis()
                    )]
                }),
            };
        }
        drop(self.runtime.take());
        for e in &errors {
            eprintln!("tether-pro: telemetry: {e}");
        }
        errors
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Which transport a signal uses, from `OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
fn grpc_for(signal: &str) -> bool {
    let p = env(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")).or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    p.as_deref() == Some("grpc")
}

fn signal_enabled(signal: &str) -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    if env(&format!("OTEL_{signal}_EXPORTER")).is_some_and(|v| v == "none") {
        return false;
    }
    env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

/// The resource: service name (`OTEL_SERVICE_NAME`, else `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`, else `default_service`), version and a per-process instance
/// id, plus `OTEL_RESOURCE_ATTRIBUTES`. What the environment sets is never overridden by our
/// defaults (e.g. a `service.instance.id` the deployment assigns per pod).
pub fn resource(default_service: &str) -> Resource {
    use opentelemetry::Key;
    use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};
    let from_env = EnvResourceDetector::new().detect();
    let name = env("OTEL_SERVICE_NAME")
        .or_else(|| from_env.get(&Key::from_static_str("service.name")).map(|v| v.to_string()))
        .unwrap_or_else(|| default_service.to_owned());
    let defaults = [
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", ulid::Ulid::new().to_string()),
    ];
    Resource::builder()
        .with_service_name(name)
        .with_attributes(defaults.into_iter().filter(|kv| from_env.get(&kv.key).is_none()))
        .build()
}

/// A small runtime of our own for the gRPC exporters: tonic's connection task runs there,
/// not on the caller's runtime. Otherwise an export waits for the host's runtime to be
/// polled, and the guard's blocking shutdown (or its drop) called from a thread that drives
/// a current-thread runtime never returns.
struct ExporterRuntime(Option<tokio::runtime::Runtime>);

impl ExporterRuntime {
    fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("tether-pro-otlp").enable_all().build()?;
        Ok(ExporterRuntime(Some(rt)))
    }
}

impl Drop for ExporterRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Does not wait, so it is safe from async code too (a plain drop panics there).
            rt.shutdown_background();
        }
    }
}

/// Why the OpenTelemetry exporters could not be built from the `OTEL_*` variables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// An exporter refused its settings (e.g. an endpoint that is not a URL).
    #[error("building the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The gRPC exporters' runtime could not be started.
    #[error("starting the OTLP runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Builds the providers from the environment. Needs no runtime of the caller's: the gRPC
/// transport gets one of its own. Returns a disabled handle when nothing is configured.
pub fn init(default_service: &str) -> Result<(Telemetry, TelemetryGuard), TelemetryError> {
    use opentelemetry_otlp::{MetricExporter, SpanExporter};
    let stats = Arc::new(TelemetryStats::default());
    let resource = resource(default_service);
    let grpc = (signal_enabled("TRACES") && grpc_for("TRACES")) || (signal_enabled("METRICS") && grpc_for("METRICS"));
    let runtime = if grpc { Some(ExporterRuntime::new()?) } else { None };
    let entered = runtime.as_ref().and_then(|rt| rt.0.as_ref()).map(|rt| rt.enter());
    if let Some(sampler) = env("OTEL_TRACES_SAMPLER").filter(|s| s != "always_on" && s != "parentbased_always_on") {
        eprintln!(
            "tether-pro: telemetry: OTEL_TRACES_SAMPLER={sampler} is not applied: request spans follow the caller's \
             sampling decision (parent-based, always on for new traces); sample in the collector (tail sampling) instead"
        );
    }
    let tracer_provider = if signal_enabled("TRACES") {
        let exporter = if grpc_for("TRACES") {
            SpanExporter::builder().with_tonic().build()?
        } else {
            SpanExporter::builder().with_http().build()?
        };
        let exporter = export::CountingSpanExporter { inner: exporter, stats: stats.clone() };
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_id_generator(TetherIdGenerator::default())
                // The sampling decision is made when a request arrives (its ids are minted
                // then, and the host's spans follow it): the request span follows its parent.
                .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                    opentelemetry_sdk::trace::Sampler::AlwaysOn,
                )))
                .with_batch_exporter(exporter)
                .build(),
        )
    } else {
        None
    };
    let meter_provider = if signal_enabled("METRICS") {
        let exporter = if grpc_for("METRICS") {
            MetricExporter::builder().with_tonic().build()?
        } else {
            MetricExporter::builder().with_http().build()?
        };
        let exporter = export::CountingMetricExporter { inner: exporter, stats: stats.clone() };
        Some(SdkMeterProvider::builder().with_resource(resource).with_periodic_exporter(exporter).build())
    } else {
        None
    };
    if let Some(p) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    if let Some(p) = &meter_provider {
        opentelemetry::global::set_meter_provider(p.clone());
    }
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    drop(entered);
    let mut telemetry = Telemetry::from_providers(tracer_provider.as_ref(), meter_provider.as_ref());
    telemetry.stats = stats;
    Ok((telemetry, TelemetryGuard { tracer_provider, meter_provider, runtime, shutdown_timeout: TelemetryGuard::SHUTDOWN_TIMEOUT }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exporter_stack_and_capture_spans_are_excluded() {
        for t in ["hyper", "hyper::client", "h2::codec", "tonic::transport", "reqwest::connect", "opentelemetry_sdk", "tether_pro::capture", "clickhouse::insert"] {
            assert!(is_excluded_target(t), "{t}");
        }
        for t in ["my_app", "hyperion", "tether_pro::sync", "tether_pro::captured", "towers"] {
            assert!(!is_excluded_target(t), "{t}");
        }
    }
}
