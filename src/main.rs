use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tether_pro::cli::{Cli, Command, DemoArgs, SimArgs};
use tether_pro::config::Config;
use tether_pro::sim::{self, CancellationToken, SimConfig, SimStats, SimTotals};
use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};
use tether_pro::store::{migrate, server_client};
use tether_pro::sync::{self, Storage, SyncServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tether_pro=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Demo(args) => demo(config, args).await,
        Command::Migrate => {
            let url = config.clickhouse.url.clone().context(
                "migrate needs a ClickHouse: set CLICKHOUSE_URL (or clickhouse.url in the config file)",
            )?;
            let report = migrate::migrate(&server_client(&url, &config.clickhouse), &config.clickhouse.database, &config.retention).await?;
            println!(
                "database {}: applied {:?}, already applied {:?}",
                config.clickhouse.database, report.applied, report.already_applied
            );
            Ok(())
        }
        Command::SyncServer(args) => {
            let storage = if args.db == ":memory:" { Storage::Memory } else { Storage::File(args.db.into()) };
            let server = SyncServer::builder().storage(storage).build()?;
            let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
            println!("reference Tether sync server on http://{}", listener.local_addr()?);
            axum::serve(listener, sync::router(server)).with_graceful_shutdown(shutdown_signal()).await?;
            Ok(())
        }
        Command::Simulate(args) => {
            let stats = Arc::new(SimStats::default());
            let totals = run_sim(sim_config(&args.url, &args.sim), stats).await?;
            println!("{}", summary(&totals));
            Ok(())
        }
        Command::Clickhouse(args) => {
            let opts = LocalClickHouseOptions {
                data_dir: args.data.unwrap_or(config.clickhouse.embedded_data_dir.clone()),
                port: args.port,
                ..Default::default()
            };
            let ch = tokio::task::spawn_blocking(move || LocalClickHouse::start(opts)).await??;
            println!("ClickHouse 26.9 at {} (Ctrl-C stops it)", ch.url());
            shutdown_signal().await;
            tokio::task::spawn_blocking(move || ch.stop()).await?;
            Ok(())
        }
    }
}

fn sim_config(url: &str, a: &SimArgs) -> SimConfig {
    let mut c = SimConfig::new(url);
    c.clients = a.clients;
    c.rate = a.rate;
    c.duration = a.duration;
    c.max_pushes = a.max_pushes;
    c.seed = a.seed;
    c.max_batch = a.max_batch;
    c
}

fn summary(t: &SimTotals) -> String {
    format!(
        "pushes {} · mutations {} · applied {} · conflicts {} · duplicates {} · rejected {} (validation {}, not_found {}) · pulls {} · snapshots {} · errors {}",
        t.pushes, t.mutations, t.applied, t.conflicts, t.duplicates, t.rejected, t.validation_failed, t.not_found, t.pulls, t.snapshots, t.errors
    )
}

/// Runs the population until its own limits or Ctrl-C, printing progress every 5 s.
async fn run_sim(cfg: SimConfig, stats: Arc<SimStats>) -> anyhow::Result<SimTotals> {
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut handle = tokio::spawn(sim::run(cfg, stats.clone(), stop.clone()));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            res = &mut handle => return res?,
            _ = tick.tick() => {
                let t = stats.totals();
                let secs = started.elapsed().as_secs_f64();
                println!("[{secs:>5.0}s] {:.1} pushes/s · {}", t.pushes as f64 / secs, summary(&t));
            }
            _ = &mut signal => {
                println!("stopping the simulated clients…");
                stop.cancel();
            }
        }
    }
}

async fn demo(config: Config, args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // 1. ClickHouse: the configured one, or the embedded one.
    let mut _embedded = None;
    let ch_url = match config.clickhouse.url.clone() {
        Some(url) => url,
        None => {
            println!(
                "starting the embedded ClickHouse 26.9 (data in {}; the first run installs a ~180 MB wheel into the cache)…",
                config.clickhouse.embedded_data_dir.display()
            );
            let opts = LocalClickHouseOptions { data_dir: config.clickhouse.embedded_data_dir.clone(), ..Default::default() };
            let ch = tokio::task::spawn_blocking(move || LocalClickHouse::start(opts)).await??;
            let url = ch.url().to_owned();
            _embedded = Some(ch);
            url
        }
    };
    let db = &config.clickhouse.database;
    let report = migrate::migrate(&server_client(&ch_url, &config.clickhouse), db, &config.retention)
        .await
        .with_context(|| format!("migrating ClickHouse at {ch_url}"))?;
    println!("ClickHouse at {ch_url}, database `{db}` (migrations applied now: {:?})", report.applied);

    // 2. The reference sync server.
    let server = SyncServer::builder().storage(Storage::File(args.sync_db.clone())).build()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {} (pass --listen 127.0.0.1:0 for any free port)", args.listen))?;
    let addr = listener.local_addr()?;
    let stop_server = CancellationToken::new();
    let server_task = tokio::spawn({
        let stop = stop_server.clone();
        async move { axum::serve(listener, sync::router(server)).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    let base = format!("http://{addr}");
    println!("reference Tether sync server at {base} (POST /tether/push, POST /tether/pull, GET /tether/state/{{model}}/{{entity_id}})");
    println!("where to look:");
    println!("  ClickHouse SQL:  curl '{ch_url}/?database={db}' --data-binary 'SHOW TABLES'");
    println!("  a record:        curl {base}/tether/state/Task/<entity_id>");
    println!(
        "simulating {} devices at {} pushes/s{} (Ctrl-C stops)…",
        args.sim.clients,
        args.sim.rate,
        args.sim.duration.map(|d| format!(" for {}", humantime::format_duration(d))).unwrap_or_default()
    );

    // 3. The simulated clients.
    let stats = Arc::new(SimStats::default());
    let totals = run_sim(sim_config(&base, &args.sim), stats).await?;
    stop_server.cancel();
    server_task.await??;
    let secs = started.elapsed().as_secs_f64();
    println!("done in {secs:.1}s: {}", summary(&totals));
    anyhow::ensure!(totals.errors == 0, "{} requests failed", totals.errors);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
