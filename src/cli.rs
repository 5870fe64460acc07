//! The `tether-pro` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Production observability for Tether sync servers.
#[derive(Debug, Parser)]
#[command(name = "tether-pro", version, about)]
pub struct Cli {
    /// TOML configuration file (environment variables `TETHER_PRO_*` override it).
    #[arg(long, global = true, env = "TETHER_PRO_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything locally: ClickHouse, the reference sync server and simulated clients.
    Demo(DemoArgs),
    /// Create the database and apply pending schema migrations, then exit.
    Migrate(MigrateArgs),
    /// Serve the dashboard: metrics API, inspection pages (against CLICKHOUSE_URL).
    Serve(ServeArgs),
    /// Run the reference Tether sync server alone.
    SyncServer(SyncServerArgs),
    /// Drive a Tether sync server with simulated clients.
    Simulate(SimulateArgs),
    /// Run the embedded local ClickHouse in the foreground.
    Clickhouse(ClickhouseArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Print the statements the migrations run on each node of an empty database (cluster
    /// mode: rewritten for `clickhouse.cluster`), without connecting to ClickHouse.
    #[arg(long)]
    pub print_ddl: bool,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 12)]
    pub clients: usize,
    /// Pushes per second across all devices.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this long (e.g. `30s`, `5m`); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many pushes.
    #[arg(long)]
    pub max_pushes: Option<u64>,
    /// Seed of every random choice the devices make.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Largest batch a device pushes.
    #[arg(long, default_value_t = 20)]
    pub max_batch: usize,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub sim: SimArgs,
    /// Address of the reference sync server.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// SQLite file of the reference server.
    #[arg(long, default_value = ".tether-pro/sync.sqlite3")]
    pub sync_db: PathBuf,
    /// Address of the dashboard (default: `serve.listen`, 127.0.0.1:8080).
    #[arg(long)]
    pub dashboard_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address (default: `serve.listen`, 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SyncServerArgs {
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// SQLite file; `:memory:` keeps everything in memory.
    #[arg(long, default_value = ".tether-pro/sync.sqlite3")]
    pub db: String,
    /// Capture pushes and pulls into ClickHouse (`CLICKHOUSE_URL`), with OpenTelemetry from
    /// the `OTEL_*` variables: the reference server instrumented as a user instruments theirs.
    #[arg(long)]
    pub capture: bool,
    /// How far ahead of the server clock a mutation timestamp may be (milliseconds); further
    /// ahead is rejected `validation_failed`.
    #[arg(long, env = "TETHER_SYNC_MAX_CLOCK_AHEAD_MS", default_value_t = crate::sync::Limits::DEFAULT_MAX_CLOCK_AHEAD_MS)]
    pub max_clock_ahead_ms: u64,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Base URL of the sync server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[command(flatten)]
    pub sim: SimArgs,
}

#[derive(Debug, Args)]
pub struct ClickhouseArgs {
    /// Data directory (default: `clickhouse.embedded_data_dir`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// HTTP port; 0 picks a free one.
    #[arg(long, default_value_t = 8123)]
    pub port: u16,
}
