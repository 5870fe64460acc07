//! A simulated population of Tether clients: devices that go offline, write locally, push in
//! batches, retry, collide on shared records and pull with cursors. The demo and the
//! benchmarks drive the reference server with it.
//!
//! Deterministic with a seed: every choice (what to write, when to retry, which payload is
//! invalid, the random part of every ULID) comes from a per-client ChaCha stream seeded from
//! `seed` and the client's index. Wall-clock times (timestamps, the time part of ULIDs) and
//! the interleaving of clients are real, so the server-side outcomes of shared-record
//! conflicts can vary from run to run.

mod client;
pub mod plan;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use client::SimClient;
pub use tokio_util::sync::CancellationToken;

/// How the population behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Base URL of the sync server, e.g. `http://127.0.0.1:3000`.
    pub base_url: String,
    pub clients: usize,
    pub seed: u64,
    /// Pushes per second across the whole population.
    pub rate: f64,
    /// Stop after this long (`None`: until `stop` is triggered).
    pub duration: Option<Duration>,
    /// Stop after this many pushes in all (`None`: no limit).
    pub max_pushes: Option<u64>,
    /// Largest batch a client accumulates offline before pushing.
    pub max_batch: usize,
    /// Records every client edits (the source of conflicts).
    pub shared_records: usize,
    /// Share of pushes sent twice, as after a lost response (the source of duplicates).
    pub retry_ratio: f64,
    /// Share of mutations with an invalid payload (the source of `validation_failed`).
    pub invalid_ratio: f64,
    /// Share of mutations that target records the server never had (`not_found`).
    pub unknown_ratio: f64,
    /// Share of creates whose payload carries nested secrets (exercises redaction).
    pub secret_ratio: f64,
}

impl SimConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        SimConfig {
            base_url: base_url.into(),
            clients: 12,
            seed: 42,
            rate: 20.0,
            duration: None,
            max_pushes: None,
            max_batch: 20,
            shared_records: 8,
            retry_ratio: 0.08,
            invalid_ratio: 0.04,
            unknown_ratio: 0.03,
            secret_ratio: 0.05,
        }
    }
}

/// Live counters of what the population sent and what came back.
#[derive(Debug, Default)]
pub struct SimStats {
    pub pushes: AtomicU64,
    pub pulls: AtomicU64,
    pub mutations: AtomicU64,
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub conflicts: AtomicU64,
    pub duplicates: AtomicU64,
    pub not_found: AtomicU64,
    pub validation_failed: AtomicU64,
    pub snapshots: AtomicU64,
    /// Transport failures and non-2xx answers.
    pub errors: AtomicU64,
}

/// A point-in-time copy of [`SimStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimTotals {
    pub pushes: u64,
    pub pulls: u64,
    pub mutations: u64,
    pub applied: u64,
    pub rejected: u64,
    pub conflicts: u64,
    pub duplicates: u64,
    pub not_found: u64,
    pub validation_failed: u64,
    pub snapshots: u64,
    pub errors: u64,
}

impl SimStats {
    pub fn totals(&self) -> SimTotals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimTotals {
            pushes: g(&self.pushes),
            pulls: g(&self.pulls),
            mutations: g(&self.mutations),
            applied: g(&self.applied),
            rejected: g(&self.rejected),
            conflicts: g(&self.conflicts),
            duplicates: g(&self.duplicates),
            not_found: g(&self.not_found),
            validation_failed: g(&self.validation_failed),
            snapshots: g(&self.snapshots),
            errors: g(&self.errors),
        }
    }
}

/// Runs the population until the duration or push budget is spent or `stop` fires.
pub async fn run(cfg: SimConfig, stats: Arc<SimStats>, stop: CancellationToken) -> anyhow::Result<SimTotals> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let shared = plan::shared_records(cfg.seed, cfg.shared_records);
    // The shared records exist before anyone edits them.
    let mut seeder = SimClient::new(&cfg, usize::MAX, http.clone(), shared.clone(), stats.clone());
    seeder.create_shared().await?;

    let deadline = cfg.duration.map(|d| Instant::now() + d);
    let budget = Arc::new(AtomicU64::new(cfg.max_pushes.unwrap_or(u64::MAX)));
    let mut tasks = Vec::with_capacity(cfg.clients);
    for index in 0..cfg.clients {
        let mut client = SimClient::new(&cfg, index, http.clone(), shared.clone(), stats.clone());
        let budget = budget.clone();
        let stop = stop.clone();
        // Each client pushes every `clients / rate` seconds on average.
        let period = Duration::from_secs_f64(cfg.clients as f64 / cfg.rate.max(0.001));
        tasks.push(tokio::spawn(async move {
            loop {
                let pause = client.jittered(period);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => break,
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                    break;
                }
                client.session().await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(stats.totals())
}
