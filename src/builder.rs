//! The front door: one builder that starts capture and telemetry, hands out the layers, and
//! returns one guard that flushes them in the right order (the shape of console-subscriber's
//! `Builder::spawn` and tracing-appender's `WorkerGuard`).
//!
//! ```rust,no_run
//! # fn main() -> Result<(), tether_pro::Error> {
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! let (tether, _guard) = tether_pro::TetherPro::builder().service_name("my-sync-server").spawn()?;
//! tracing_subscriber::registry().with(tether.tracing_layer()).init();
//! let app: axum::Router = axum::Router::new() /* .route("/tether/push", ...) */ .layer(tether.http_layer());
//! # Ok(()) }
//! ```

// The front door is documented item by item: shapes, units, defaults, errors.
#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::capture::{CaptureLayer, CaptureStats};
use crate::config::Config;
use crate::pipeline::{self, Capture, CaptureGuard, ClickHouseWriter};
use crate::store::{migrate, server_client};
use crate::telemetry::{self, Telemetry, TelemetryGuard};

/// Why [`Builder::spawn`] could not start. ClickHouse being away is not one of them: capture
/// starts anyway, and its pipeline retries (the host must never wait for its observer).
///
/// `Debug` prints the message and its causes (what `fn main() -> Result<(), Box<dyn Error>>`
/// shows), not the variant's name.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file or `TETHER_PRO_*` variables could not be read, or a value is
    /// out of range (the message names the key).
    #[error("tether-pro configuration: {0}")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Capture is on but no ClickHouse is named.
    #[error("tether-pro: no ClickHouse URL: set CLICKHOUSE_URL or clickhouse.url (or capture.enabled = false)")]
    NoClickHouseUrl,
    /// The OpenTelemetry exporters could not be built from the `OTEL_*` variables.
    #[error("tether-pro telemetry: {0}")]
    Telemetry(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The pipeline thread could not be started.
    #[error("tether-pro capture pipeline: {0}")]
    Pipeline(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        // The first cause is already in the message; deeper ones are not.
        if let Some(first) = source {
            source = first.source();
        }
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM (what `docker stop` and Kubernetes send):
/// pass it to `axum::serve(..).with_graceful_shutdown(..)`, so the server returns and the
/// [`TetherProGuard`] is dropped and flushes. Without it, stopping the process loses what was
/// captured in the last second.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A running tether-pro: the layers to add to the host. Cheap to clone.
#[derive(Clone)]
pub struct TetherPro {
    capture: Capture,
    telemetry: Telemetry,
    config: std::sync::Arc<Config>,
}

impl TetherPro {
    /// Starts configuring. See [`Builder`] for the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The tower layer for the push and pull routes (`/tether/push`, `/tether/pull`; other
    /// paths pass through untouched). Honours `capture.enabled`.
    pub fn http_layer(&self) -> CaptureLayer {
        self.capture.http_layer()
    }

    /// The `tracing` layers, capture and (when traces are exported) OpenTelemetry, as one
    /// layer to add to the host's registry beside its own.
    pub fn tracing_layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        // Never an absent `Option` layer: its level hint (`OFF`) can win over the capture
        // filter's, and a registry holding only these layers then disabled every span.
        match self.telemetry.layer() {
            Some(otel) => self.capture.layer().and_then(otel).boxed(),
            None => self.capture.layer().boxed(),
        }
    }

    /// Capture's counters: captured, written, spooled, dropped by reason (also exported as
    /// OpenTelemetry metrics, and shown by a dashboard mounted in the same process).
    pub fn capture_stats(&self) -> &std::sync::Arc<CaptureStats> {
        self.capture.stats()
    }

    /// The configuration it runs with (e.g. to point a mounted dashboard at the same
    /// ClickHouse database).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The parts, for hosts that wire them by hand.
    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    /// The OpenTelemetry handle (disabled when no `OTEL_*` endpoint is set or
    /// [`Builder::telemetry`] is off).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

/// How [`TetherPro`] starts.
///
/// Defaults: the configuration from [`Config::load`]: the TOML file `TETHER_PRO_CONFIG` names
/// (if set), then the environment (`CLICKHOUSE_URL`, `TETHER_PRO_*`); service name `unknown_service` (OpenTelemetry's default;
/// `OTEL_SERVICE_NAME` wins over both); the schema migrated before the first insert, waiting
/// at most 10 s; OpenTelemetry from the `OTEL_*` variables (off when no endpoint is set).
#[derive(Debug, Clone)]
pub struct Builder {
    config: Option<Config>,
    config_file: Option<PathBuf>,
    service_name: String,
    migrate: bool,
    migrate_timeout: Duration,
    telemetry: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            config: None,
            config_file: None,
            service_name: "unknown_service".into(),
            migrate: true,
            migrate_timeout: Self::DEFAULT_MIGRATE_TIMEOUT,
            telemetry: true,
        }
    }
}

impl Builder {
    /// How long the pipeline waits for ClickHouse to answer the migration before it starts
    /// capturing anyway.
    pub const DEFAULT_MIGRATE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Use this configuration (already loaded or built in code) instead of loading one.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Load the configuration from this TOML file, then the environment ([`Config::load`]),
    /// instead of the file `TETHER_PRO_CONFIG` names.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// The OpenTelemetry `service.name` when `OTEL_SERVICE_NAME` does not set one.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Whether to create or upgrade tether-pro's tables before the first insert (default on;
    /// off when `tether-pro migrate` runs as a deployment step).
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// How long the migration may wait for ClickHouse (default 10 s).
    pub fn migrate_timeout(mut self, timeout: Duration) -> Self {
        self.migrate_timeout = timeout;
        self
    }

    /// Whether to export OpenTelemetry spans and metrics from the `OTEL_*` variables (default
    /// on; nothing is exported unless an endpoint is set).
    pub fn telemetry(mut self, on: bool) -> Self {
        self.telemetry = on;
        self
    }

    /// Starts telemetry and the capture pipeline (its own thread). Does not wait for
    /// ClickHouse: the migration runs on the pipeline thread before its first insert, and a
    /// failure there is reported on stderr while capture goes on (records are retried, or
    /// spooled when `capture.spool` is on). Callable with or without a Tokio runtime.
    pub fn spawn(self) -> Result<(TetherPro, TetherProGuard), Error> {
        let config = match (self.config, &self.config_file) {
            (Some(c), _) => {
                c.validate().map_err(|e| Error::Config(e.into()))?;
                c
            }
            (None, file) => {
                // The binary takes the file from `--config` or `TETHER_PRO_CONFIG`; so does a host.
                let file = file.clone().or_else(|| std::env::var_os("TETHER_PRO_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
                Config::load(file.as_deref()).map_err(|e| Error::Config(e.into()))?
            }
        };
        let url = match (&config.clickhouse.url, config.capture.enabled) {
            (Some(url), _) => url.clone(),
            (None, true) => return Err(Error::NoClickHouseUrl),
            // Capture off: the layers pass everything through and nothing is ever written.
            (None, false) => "http://127.0.0.1:8123".to_owned(),
        };
        let (telemetry, telemetry_guard) = if self.telemetry {
            telemetry::init(&self.service_name).map_err(|e| Error::Telemetry(e.into()))?
        } else {
            (Telemetry::disabled(), TelemetryGuard::disabled())
        };
        // Compressed inserts: batches held as LZ4 frames, compressed once when built.
        let framing = match config.clickhouse.compression.resolve(&url) {
            crate::store::config::Compression::None => crate::store::encoded::Framing::Plain,
            _ => crate::store::encoded::Framing::Lz4,
        };
        let writer = ClickHouseWriter::new(server_client(&url, &config.clickhouse).with_database(&config.clickhouse.database)).with_framing(framing);
        let before = (self.migrate && config.capture.enabled).then(|| {
            let (clickhouse, retention, timeout) = (config.clickhouse.clone(), config.retention, self.migrate_timeout);
            let url = url.clone();
            Box::pin(async move {
                match tokio::time::timeout(timeout, migrate::migrate_configured(&url, &clickhouse, &retention)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => eprintln!("tether-pro: could not migrate ClickHouse at {} (capturing anyway): {e:#}", crate::store::display_url(&url)),
                    Err(_) => eprintln!(
                        "tether-pro: ClickHouse at {} did not answer the migration within {} s (capturing anyway)",
                        crate::store::display_url(&url),
                        timeout.as_secs()
                    ),
                }
            }) as pipeline::BeforeStart
        });
        let (capture, capture_guard) =
            pipeline::start_after(&config.capture, writer, telemetry.clone(), before).map_err(|e| Error::Pipeline(e.into()))?;
        Ok((TetherPro { capture, telemetry, config: std::sync::Arc::new(config) }, TetherProGuard { capture: Some(capture_guard), telemetry: Some(telemetry_guard) }))
    }
}

/// Flushes capture, then telemetry, when dropped: hold it until the server has stopped.
///
/// Capture first, so the last requests reach ClickHouse even when the collector is slow;
/// telemetry after, so the pipeline's final spans and metrics are exported. Bounded: at most
/// `capture.flush_timeout_ms` + 1 s, then [`TelemetryGuard::SHUTDOWN_TIMEOUT`]. Inside a
/// multi-threaded Tokio runtime the wait does not block the runtime's other tasks.
#[must_use = "dropping the guard stops capture; hold it until shutdown"]
pub struct TetherProGuard {
    capture: Option<CaptureGuard>,
    telemetry: Option<TelemetryGuard>,
}

impl TetherProGuard {
    /// Flushes and stops now. Idempotent; `Drop` calls it.
    pub fn shutdown(&mut self) {
        let (capture, telemetry) = (self.capture.take(), self.telemetry.take());
        if capture.is_none() && telemetry.is_none() {
            return;
        }
        let stop = move || {
            drop(capture);
            drop(telemetry);
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(stop),
            _ => stop(),
        }
    }
}

impl Drop for TetherProGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}
