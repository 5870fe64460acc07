//! The reference sync server behind the real capture layers, its pipeline writing to a fresh
//! migrated ClickHouse database: what the replay and hostile-input tests start from.
//!
//! Declared with `#[path]` by the tests that use it, next to `mod common;`.

use tether_pro::config::CaptureConfig;
use tether_pro::pipeline::{self, Capture, CaptureGuard, ClickHouseWriter};
use tether_pro::sync::{self, SyncServer};
use tracing_subscriber::layer::SubscriberExt;

use crate::common::{TestClickHouse, clickhouse};

pub struct CapturedHost {
    pub ch: TestClickHouse,
    pub server: SyncServer,
    /// The sync router with the capture HTTP layer (not yet served).
    pub app: axum::Router,
    pub capture: Capture,
    pub guard: CaptureGuard,
    /// The capture layer as this thread's default subscriber.
    pub sub: tracing::subscriber::DefaultGuard,
}

/// The pipeline batches every 20 ms, so captured rows arrive quickly.
pub async fn captured_host() -> CapturedHost {
    let ch = clickhouse().await;
    ch.migrate().await;
    let cfg = CaptureConfig { batch_interval_ms: 20, ..CaptureConfig::default() };
    let (capture, guard) = pipeline::start(&cfg, ClickHouseWriter::new(ch.client())).unwrap();
    let sub = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.layer()));
    let server = SyncServer::in_memory();
    let app = sync::router(server.clone()).layer(capture.http_layer());
    CapturedHost { ch, server, app, capture, guard, sub }
}
