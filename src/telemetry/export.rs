//! Exporters that count their own failures, so "the OTLP endpoint is down" is a number the
//! dashboard and the metrics can show, not just a log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

/// Export outcomes of the OTLP exporters.
#[derive(Debug, Default)]
pub struct TelemetryStats {
    /// Span batches exported successfully.
    pub span_batches_exported: AtomicU64,
    /// Span batch exports that failed (`tether.telemetry.export.failures`, `signal=traces`).
    pub span_export_failures: AtomicU64,
    /// Metric exports that succeeded.
    pub metric_exports: AtomicU64,
    /// Metric exports that failed (`tether.telemetry.export.failures`, `signal=metrics`).
    pub metric_export_failures: AtomicU64,
}

#[derive(Debug)]
pub struct CountingSpanExporter<E> {
    pub(crate) inner: E,
    pub(crate) stats: Arc<TelemetryStats>,
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        let counter = if result.is_ok() { &self.stats.span_batches_exported } else { &self.stats.span_export_failures };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

pub struct CountingMetricExporter<E> {
    pub(crate) inner: E,
    pub(crate) stats: Arc<TelemetryStats>,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        let counter = if result.is_ok() { &self.stats.metric_exports } else { &self.stats.metric_export_failures };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
