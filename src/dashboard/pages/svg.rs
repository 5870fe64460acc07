//! Inline SVG charts (no script, no inline style): the health strip and sparklines, as
//! plain data the templates turn into `<rect>` and `<polyline>` elements. Colours come from
//! classes in `app.css`; `fill`/`stroke` presentation attributes are the fallback.

use crate::dashboard::health::Status;
use crate::dashboard::metrics::HealthBucket;

/// One five-minute cell of the strip.
#[derive(Debug, Clone)]
pub struct Cell {
    pub x: u32,
    pub status: &'static str,
    pub fill: &'static str,
    /// The `<title>` tooltip.
    pub title: String,
}

/// The health strip: one cell per bucket.
#[derive(Debug, Clone)]
pub struct Strip {
    pub cells: Vec<Cell>,
    pub cell_width: u32,
    pub width: u32,
    pub height: u32,
    pub label: String,
}

pub const CELL_WIDTH: u32 = 4;
pub const CELL_STEP: u32 = 5;

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Degraded => "degraded",
        Status::Failing => "failing",
        Status::Idle => "idle",
    }
}

fn status_fill(s: Status) -> &'static str {
    match s {
        Status::Ok => "#2f9e44",
        Status::Degraded => "#f08c00",
        Status::Failing => "#e03131",
        Status::Idle => "#dee2e6",
    }
}

pub fn strip(buckets: &[HealthBucket]) -> Strip {
    let cells = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let status = status_name(b.status);
            let title = format!(
                "{} UTC: {} — {} requests, {} failed, {} mutations, {} conflicts, {} rejected, p95 {:.1} ms",
                b.start.format("%Y-%m-%d %H:%M"),
                status,
                b.requests,
                b.failed_requests,
                b.mutations,
                b.conflicts,
                b.rejected,
                b.p95_ms
            );
            Cell { x: i as u32 * CELL_STEP, status, fill: status_fill(b.status), title }
        })
        .collect::<Vec<_>>();
    let counts = |s: Status| buckets.iter().filter(|b| b.status == s).count();
    let label = format!(
        "Health per five minutes: {} ok, {} degraded, {} failing, {} idle",
        counts(Status::Ok),
        counts(Status::Degraded),
        counts(Status::Failing),
        counts(Status::Idle)
    );
    let width = (cells.len() as u32 * CELL_STEP).max(1);
    Strip { cells, cell_width: CELL_WIDTH, width, height: 24, label }
}

/// A sparkline: a polyline through `values`, scaled to the largest.
#[derive(Debug, Clone)]
pub struct Spark {
    pub points: String,
    pub width: u32,
    pub height: u32,
    pub max_label: String,
    pub label: String,
}

pub fn spark(values: &[f64], label: &str, unit: &str) -> Spark {
    let (width, height) = (600u32, 48u32);
    let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    let n = values.len();
    let step = if n > 1 { f64::from(width) / (n - 1) as f64 } else { 0.0 };
    let pad = 2.0;
    let usable = f64::from(height) - 2.0 * pad;
    let points = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = if v.is_finite() { *v } else { 0.0 };
            let y = if max > 0.0 { pad + usable - v / max * usable } else { pad + usable };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect::<Vec<_>>()
        .join(" ");
    let max_label = if max.fract() == 0.0 { format!("{max:.0}{unit}") } else { format!("{max:.1}{unit}") };
    Spark { points, width, height, max_label, label: label.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_its_maximum() {
        let s = spark(&[0.0, 5.0, 10.0], "x", "");
        assert_eq!(s.points, "0.0,46.0 300.0,24.0 600.0,2.0");
        assert_eq!(s.max_label, "10");
        let flat = spark(&[0.0, 0.0], "x", " ms");
        assert_eq!(flat.points, "0.0,46.0 600.0,46.0");
    }
}
