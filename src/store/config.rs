//! `[clickhouse]` and `[retention]`: where captured data goes and how long it is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where captured data goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP URL of a ClickHouse server. Unset: the demo starts the embedded local one.
    pub url: Option<String>,
    /// Database holding tether-pro's tables (created by `migrate`).
    pub database: String,
    /// ClickHouse user (default `default`).
    pub user: String,
    /// Its password (default empty).
    pub password: String,
    /// Data directory of the embedded ClickHouse (used only when `url` is unset).
    pub embedded_data_dir: PathBuf,
    /// Compression of inserted data: `lz4` saves bandwidth to a remote ClickHouse; `none`
    /// saves the pipeline's CPU (a third of it); `auto`: none on loopback, else lz4.
    pub compression: Compression,
    /// Cluster mode: the name of a cluster in the servers' `remote_servers`. Migrations then
    /// create `<table>_local` tables on every node and `Distributed` tables under the usual
    /// names, which everything else reads and writes (README "Cluster mode"). Unset: one
    /// server.
    pub cluster: Option<String>,
    /// With `cluster`: local tables are `Replicated*MergeTree` with the `{shard}` and
    /// `{replica}` macros (needs ClickHouse Keeper and the macros on every node).
    pub replicated: bool,
    /// With `cluster`: the HTTP URL of every node the migrations run on. Empty: every host of
    /// the cluster in `system.clusters`, with `url`'s scheme and port.
    pub nodes: Vec<String>,
}

/// Compression of what the pipeline sends to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `none` for a ClickHouse on this host (loopback), `lz4` otherwise.
    #[default]
    Auto,
    /// `lz4`: the ClickHouse client compresses with LZ4.
    Lz4,
    /// `none`: no compression.
    None,
}

impl Compression {
    /// What `auto` means for `url`.
    pub fn resolve(self, url: &str) -> Compression {
        match self {
            Compression::Auto => {
                let uri = url.parse::<http::Uri>().ok();
                let host = uri.as_ref().and_then(|u| u.host()).unwrap_or("");
                let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
                let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback());
                if loopback { Compression::None } else { Compression::Lz4 }
            }
            other => other,
        }
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: None,
            database: "tether".into(),
            user: "default".into(),
            password: String::new(),
            embedded_data_dir: PathBuf::from(".tether-pro/clickhouse"),
            compression: Compression::Auto,
            cluster: None,
            replicated: false,
            nodes: Vec::new(),
        }
    }
}

/// How long rows are kept (ClickHouse TTL; whole daily partitions are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw requests and mutations, in days.
    pub days: u32,
    /// Five-minute aggregates, in days.
    pub aggregate_days: u32,
}

impl RetentionConfig {
    /// Default `retention.days`: 30.
    pub const DEFAULT_DAYS: u32 = 30;
    /// Default `retention.aggregate_days`: 400.
    pub const DEFAULT_AGGREGATE_DAYS: u32 = 400;
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: Self::DEFAULT_DAYS, aggregate_days: Self::DEFAULT_AGGREGATE_DAYS }
    }
}

