//! The metrics API's answer against the same answer from raw rows: every count, rate, top
//! entry and health status must be equal. Percentiles are t-digests: merging the five-minute
//! states and digesting the raw rows in one pass approximate the same quantile differently, so
//! they must agree within `QUANTILE_TOLERANCE` (relative) instead.

use tether_pro::internals::metrics::{Latency, Metrics};

/// Largest relative difference allowed between two t-digest percentiles of the same rows.
pub const QUANTILE_TOLERANCE: f64 = 0.05;

/// Differences between `api` and `raw`, empty when they agree. Also returns the largest
/// relative percentile difference seen.
pub fn differences(api: &Metrics, raw: &Metrics) -> (Vec<String>, f64) {
    let mut out = Vec::new();
    let mut worst: f64 = 0.0;
    let mut same = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: aggregates {a}, raw {b}"));
        }
    };
    same("window", format!("{:?}", api.window), format!("{:?}", raw.window));
    same("totals", format!("{:?}", api.totals), format!("{:?}", raw.totals));
    same("throughput", format!("{:?}", api.throughput), format!("{:?}", raw.throughput));
    same("rates", format!("{:?}", api.rates), format!("{:?}", raw.rates));
    same("top models", format!("{:?}", api.top_models), format!("{:?}", raw.top_models));
    same("top clients", format!("{:?}", api.top_clients), format!("{:?}", raw.top_clients));
    same("suspicious clocks", format!("{:?}", api.suspicious_clocks), format!("{:?}", raw.suspicious_clocks));
    same("health buckets", api.health.len().to_string(), raw.health.len().to_string());
    let mut close = |what: String, a: f64, b: f64| {
        let rel = if a == b { 0.0 } else { (a - b).abs() / a.abs().max(b.abs()) };
        worst = worst.max(rel);
        if rel > QUANTILE_TOLERANCE {
            out.push(format!("{what}: aggregates {a}, raw {b}"));
        }
    };
    let lat = |l: &Latency| [l.p50_ms, l.p95_ms, l.p99_ms];
    for (kind, a, b) in [("push", &api.latency.push, &raw.latency.push), ("pull", &api.latency.pull, &raw.latency.pull)] {
        for (i, (x, y)) in lat(a).into_iter().zip(lat(b)).enumerate() {
            close(format!("{kind} latency percentile #{i}"), x, y);
        }
    }
    let mut counts = Vec::new();
    for (a, b) in api.health.iter().zip(&raw.health) {
        let key = |h: &tether_pro::internals::metrics::HealthBucket| (h.start, h.requests, h.failed_requests, h.mutations, h.conflicts, h.rejected);
        if key(a) != key(b) {
            counts.push(format!("bucket {}: aggregates {:?}, raw {:?}", a.start, key(a), key(b)));
        }
        close(format!("bucket {} p95", a.start), a.p95_ms, b.p95_ms);
        // A status follows from the counts and p95; with p95 within tolerance it can only
        // differ right at the latency threshold, so report it rather than fail on it.
        if a.status != b.status {
            eprintln!("  note: bucket {} status {:?} (aggregates) vs {:?} (raw), p95 {} vs {}", a.start, a.status, b.status, a.p95_ms, b.p95_ms);
        }
    }
    out.extend(counts);
    (out, worst)
}
