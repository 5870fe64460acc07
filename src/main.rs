use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tether_pro::cli::{Cli, Command, DemoArgs, SimArgs, SyncServerArgs};
use tether_pro::config::Config;
use tether_pro::dashboard;
use tether_pro::sim::{self, CancellationToken, SimConfig, SimStats, SimTotals};
use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};
use tether_pro::{TetherPro, TetherProGuard};
use tether_pro::store::{display_url, migrate, server_client};
use tracing_subscriber::Layer;
use tether_pro::sync::{self, Storage, SyncServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    if !matches!(cli.command, Command::Demo(_) | Command::SyncServer(_)) {
        init_tracing(None);
    }
    match cli.command {
        Command::Demo(args) => demo(config, args).await,
        Command::Migrate(args) if args.print_ddl => {
            let c = &config.clickhouse;
            let layout = c.cluster.as_deref().map(|cluster| tether_pro::store::cluster::ClusterLayout { cluster, database: &c.database, replicated: c.replicated });
            // Runnable as is with clickhouse-client (--multiquery), one node at a time; migrate
            // also records each version in schema_migrations, which this does not.
            println!("-- tether-pro schema for database {}{}", c.database, c.cluster.as_deref().map(|n| format!(", cluster {n}, on each node")).unwrap_or_default());
            if c.replicated {
                println!("-- replicated: a shard's other replicas run only the CREATE statements and the ALTERs of Distributed tables");
            }
            println!("CREATE DATABASE IF NOT EXISTS {};\nUSE {};\n", c.database, c.database);
            for (version, stmt) in migrate::node_statements(&config.retention, layout) {
                println!("-- migration {version}\n{stmt};\n");
            }
            Ok(())
        }
        Command::Migrate(_) => {
            let url = config.clickhouse.url.clone().context(
                "migrate needs a ClickHouse: set CLICKHOUSE_URL (or clickhouse.url in the config file)",
            )?;
            let report = migrate::migrate_configured(&url, &config.clickhouse, &config.retention).await?;
            println!(
                "database {}: applied {:?}, already applied {:?}",
                config.clickhouse.database, report.applied, report.already_applied
            );
            if let Some(cluster) = &config.clickhouse.cluster {
                let n = report.nodes.len();
                println!("cluster {cluster}: {n} node{}", if n == 1 { "" } else { "s" });
                for (node, applied) in report.nodes.iter().zip(&report.applied_per_node) {
                    println!("  {node}: applied {applied:?}");
                }
            }
            // The drift itself is on stderr (migrate reports each column); the exit status
            // tells scripts and `docker compose` that the schema needs fixing.
            anyhow::ensure!(report.drift.is_empty(), "schema drift in database {}: {}", config.clickhouse.database, report.drift.join("; "));
            Ok(())
        }
        Command::Serve(args) => {
            let url = config.clickhouse.url.clone().context(
                "serve needs a ClickHouse: set CLICKHOUSE_URL (or clickhouse.url in the config file)",
            )?;
            let server = server_client(&url, &config.clickhouse);
            migrate::migrate_configured(&url, &config.clickhouse, &config.retention).await?;
            let listen: std::net::SocketAddr = match args.listen {
                Some(l) => l,
                None => config.serve.listen.parse().context("serve.listen must be an address like 127.0.0.1:8080")?,
            };
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            warn_if_open(&config, &listener.local_addr()?);
            let client = server.with_database(&config.clickhouse.database);
            let replay = if config.replay.live_enabled {
                let (Some(push_url), Some(state_url_template)) = (config.replay.push_url.clone(), config.replay.state_url_template.clone()) else {
                    anyhow::bail!("replay.live_enabled needs replay.push_url and replay.state_url_template (the host's push URL and state lookup)");
                };
                let target = tether_pro::replay::HttpTarget { http: reqwest::Client::new(), push_url, state_url_template };
                Some(dashboard::replay::ReplayState::configured(
                    tether_pro::replay::Replayer::new(client.clone(), std::sync::Arc::new(target)).with_redactor(config.capture.redactor()),
                    config.replay.csrf_secret.as_deref(),
                ))
            } else {
                None
            };
            let app = dashboard::app_with_replay(&config.serve, client, replay);
            println!("tether-pro dashboard at http://{}{}", listener.local_addr()?, config.serve.prefix);
            axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
            Ok(())
        }
        Command::SyncServer(args) => sync_server(config, args).await,
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

/// The reference server alone, or with capture (`--capture`).
async fn sync_server(config: Config, args: SyncServerArgs) -> anyhow::Result<()> {
    let storage = if args.db == ":memory:" { Storage::Memory } else { Storage::File(args.db.into()) };
    let limits = tether_pro::sync::Limits { max_clock_ahead_ms: args.max_clock_ahead_ms, ..Default::default() };
    let server = SyncServer::builder().storage(storage).limits(limits).build()?;
    let mut app = sync::router(server);
    let mut guards = None;
    if args.capture {
        let url = config.clickhouse.url.clone().context("--capture needs a ClickHouse: set CLICKHOUSE_URL (or clickhouse.url)")?;
        let db = &config.clickhouse.database;
        // ClickHouse being away must not keep the sync server from starting: the pipeline
        // retries (and the disk spool, when enabled, keeps what the memory cannot).
        let migrating = migrate::migrate_configured(&url, &config.clickhouse, &config.retention);
        match tokio::time::timeout(Duration::from_secs(10), migrating).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("tether-pro: could not migrate ClickHouse at {} (capturing anyway): {e:#}", display_url(&url)),
            Err(_) => eprintln!("tether-pro: ClickHouse at {} did not answer within 10 s (capturing anyway)", display_url(&url)),
        }
        let (tether, guard) = start_capture(&config, &url, "tether-sync")?;
        app = app.layer(tether.http_layer());
        guards = Some(guard);
        match &config.clickhouse.cluster {
            Some(cluster) => println!("capturing into {} database `{db}` (cluster `{cluster}`)", display_url(&url)),
            None => println!("capturing into {} database `{db}`", display_url(&url)),
        }
    } else {
        init_tracing(None);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    println!("reference Tether sync server on http://{}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    if let Some(mut guard) = guards {
        guard.shutdown();
    }
    Ok(())
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
    let mut signalled = false;
    loop {
        tokio::select! {
            res = &mut handle => return res?,
            _ = tick.tick() => {
                let t = stats.totals();
                let secs = started.elapsed().as_secs_f64();
                println!("[{secs:>5.0}s] {:.1} pushes/s · {}", t.pushes as f64 / secs, summary(&t));
            }
            // A completed future must not be polled again: once signalled, only wait for the clients.
            _ = &mut signal, if !signalled => {
                signalled = true;
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
    let report = migrate::migrate_configured(&ch_url, &config.clickhouse, &config.retention)
        .await
        .with_context(|| format!("migrating ClickHouse at {}", display_url(&ch_url)))?;
    // What is printed never shows credentials the URL may carry.
    let ch_shown = display_url(&ch_url);
    match &config.clickhouse.cluster {
        Some(cluster) => println!(
            "ClickHouse cluster `{cluster}` through {ch_shown} ({} nodes), database `{db}` (migrations applied now: {:?})",
            report.nodes.len(),
            report.applied
        ),
        None => println!("ClickHouse at {ch_shown}, database `{db}` (migrations applied now: {:?})", report.applied),
    }

    // 2. Capture: the pipeline into ClickHouse, the tracing layer, the tower layer.
    let (tether, mut guard) = start_capture(&config, &ch_url, "tether-sync-demo")?;
    let (capture, telemetry) = (tether.capture(), tether.telemetry());
    match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if telemetry.traces_enabled() || telemetry.metrics_enabled() => println!(
            "OpenTelemetry: exporting {}{}to {endpoint}",
            if telemetry.traces_enabled() { "traces " } else { "" },
            if telemetry.metrics_enabled() { "and metrics " } else { "" }
        ),
        _ => println!("OpenTelemetry: off (set OTEL_EXPORTER_OTLP_ENDPOINT to export traces and metrics over OTLP)"),
    }

    // 3. The reference sync server, instrumented the way a user instruments theirs.
    let sync_server = SyncServer::builder().storage(Storage::File(args.sync_db.clone())).build()?;
    let sync_app = sync::router(sync_server.clone()).layer(capture.http_layer());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {} (pass --listen 127.0.0.1:0 for any free port)", args.listen))?;
    let addr = listener.local_addr()?;
    let stop_server = CancellationToken::new();
    let server_task = tokio::spawn({
        let stop = stop_server.clone();
        let app = sync_app.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    let base = format!("http://{addr}");
    println!("reference Tether sync server at {base} (POST /tether/push, POST /tether/pull, GET /tether/state/{{model}}/{{entity_id}})");
    println!("where to look (ClickHouse SQL over HTTP; the tables are documented in the README):");
    println!("  curl '{ch_shown}/?database={db}' --data-binary 'SELECT kind, outcome, count() FROM sync_requests GROUP BY ALL'");
    println!("  curl '{ch_shown}/?database={db}' --data-binary 'SELECT outcome, reason, model, count() FROM sync_mutations GROUP BY ALL ORDER BY 4 DESC'");
    println!("  curl '{ch_shown}/?database={db}' --data-binary \"SELECT mutation_id, state_before, state_after, diff FROM sync_mutations WHERE outcome = 'conflict' ORDER BY started_at DESC LIMIT 3 FORMAT Vertical\"");
    println!("  a record's state: curl {base}/tether/state/Task/<entity_id>");
    println!(
        "simulating {} devices at {} pushes/s{} (Ctrl-C stops)…",
        args.sim.clients,
        args.sim.rate,
        args.sim.duration.map(|d| format!(" for {}", humantime::format_duration(d))).unwrap_or_default()
    );

    // 4. The dashboard.
    let dash_addr: std::net::SocketAddr = match args.dashboard_listen {
        Some(l) => l,
        None => config.serve.listen.parse().context("serve.listen must be an address like 127.0.0.1:8080")?,
    };
    let dash_listener = tokio::net::TcpListener::bind(dash_addr)
        .await
        .with_context(|| format!("binding the dashboard to {dash_addr} (pass --dashboard-listen 127.0.0.1:0 for any free port)"))?;
    warn_if_open(&config, &dash_listener.local_addr()?);
    let dash_url = format!("http://{}{}", dash_listener.local_addr()?, config.serve.prefix);
    let dash_client = server_client(&ch_url, &config.clickhouse).with_database(db);
    // Replay goes through the same instrumented router the simulated clients use.
    let replay = config.replay.live_enabled.then(|| {
        let target = tether_pro::sync::InProcessTarget { app: sync_app.clone(), server: sync_server.clone() };
        dashboard::replay::ReplayState::configured(
            tether_pro::replay::Replayer::new(dash_client.clone(), std::sync::Arc::new(target)).with_redactor(config.capture.redactor()),
            config.replay.csrf_secret.as_deref(),
        )
    });
    let dash_app = dashboard::app_in_process(&config.serve, dash_client, replay, Some(capture.stats().clone()));
    let dash_task = tokio::spawn({
        let stop = stop_server.clone();
        async move { axum::serve(dash_listener, dash_app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    println!("dashboard:        {dash_url}  (metrics API: {dash_url}/metrics)");

    // 5. The simulated clients.
    let stats = Arc::new(SimStats::default());
    let totals = run_sim(sim_config(&base, &args.sim), stats).await?;
    stop_server.cancel();
    server_task.await??;
    dash_task.await??;
    guard.shutdown();
    let secs = started.elapsed().as_secs_f64();
    println!("done in {secs:.1}s: {}", summary(&totals));
    let c = capture.stats().totals();
    println!(
        "captured: {} requests and {} mutations written to ClickHouse, {} dropped, {} failed, {} inserts (mean {:.1} ms)",
        c.requests_written,
        c.mutations_written,
        c.dropped,
        c.records_failed,
        c.inserts,
        c.insert_latency_us_sum as f64 / c.inserts.max(1) as f64 / 1000.0
    );
    anyhow::ensure!(totals.errors == 0, "{} requests failed", totals.errors);
    Ok(())
}

/// OpenTelemetry from the `OTEL_*` variables, the pipeline into `url`, and the global
/// subscriber with the capture and OTel layers: the README's "Instrument your sync server".
fn start_capture(config: &Config, url: &str, service: &str) -> anyhow::Result<(TetherPro, TetherProGuard)> {
    let mut config = config.clone();
    config.clickhouse.url = Some(url.to_owned());
    // The callers have migrated (and report it) already.
    let (tether, guard) = TetherPro::builder().config(config).service_name(service).migrate(false).spawn()?;
    init_tracing(Some(&tether));
    Ok((tether, guard))
}

/// A dashboard reachable from other machines with no auth deserves a loud warning.
fn warn_if_open(config: &Config, addr: &std::net::SocketAddr) {
    if config.serve.auth().is_none() && !dashboard::is_loopback(addr) {
        eprintln!(
            "WARNING: the tether-pro dashboard listens on {addr} with NO AUTHENTICATION. It shows captured sync traffic. \
             Set serve.bearer_token (TETHER_PRO_SERVE__BEARER_TOKEN) or basic auth, or listen on 127.0.0.1."
        );
    }
}

/// Logs to stderr (`RUST_LOG` filters), plus the capture layer when there is one, plus the
/// OpenTelemetry layer when traces are exported.
fn init_tracing(tether: Option<&TetherPro>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tether_pro=info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    // A list, not `Option` layers: an absent one's level hint (OFF) could disable the rest.
    let mut layers = vec![fmt.boxed()];
    layers.extend(tether.map(|t| t.tracing_layer()));
    tracing_subscriber::registry().with(layers).init();
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
