//! `/`: the overview: headline numbers, the health strip, sparklines, top models and
//! clients, the latest failures and conflicts, and (in the capturing process) the pipeline.

use axum::extract::State;
use chrono::Utc;

use super::params::Params;
use super::queries;
use super::views::{self, *};
use super::{LATEST, PageResult, WINDOWS, html, prefix, svg};
use crate::dashboard::metrics::{self, MetricsQuery};
use crate::dashboard::{DashboardError, DashboardState};
use crate::store::schema::MutationOutcome;

pub(super) async fn overview(State(state): State<DashboardState>, p: Params) -> PageResult {
    let window_name = p.one_of("window", &WINDOWS)?;
    let window = MetricsQuery { window: window_name.map(str::to_owned), from: None, to: None }.window(Utc::now())?;
    let c = &state.client;
    let (m, failures, conflicts) = tokio::try_join!(
        metrics::compute(&state, window),
        async { queries::latest_mutations(c, MutationOutcome::Rejected, window.from, LATEST).await.map_err(DashboardError::from) },
        async { queries::latest_mutations(c, MutationOutcome::Conflict, window.from, LATEST).await.map_err(DashboardError::from) },
    )?;
    let nav = Nav::new(&prefix(&state), "overview", "Overview");
    let label = format!("last {}", window_name.unwrap_or("24h"));
    let headlines = vec![
        Headline { label: "Requests", value: m.totals.requests.to_string(), note: format!("{} pushes, {} pulls", m.totals.pushes, m.totals.pulls) },
        Headline { label: "Mutations", value: m.totals.mutations.to_string(), note: format!("{} applied, {} duplicates", m.totals.applied, m.totals.duplicates) },
        Headline { label: "Conflict rate", value: percent(m.rates.conflict_rate), note: format!("{} conflicts", m.totals.conflicts) },
        Headline { label: "Failure rate", value: percent(m.rates.failure_rate), note: format!("{} failed requests", m.totals.failed_requests) },
        Headline { label: "Push p95", value: format!("{:.1} ms", m.latency.push.p95_ms), note: format!("p50 {:.1} ms, p99 {:.1} ms", m.latency.push.p50_ms, m.latency.push.p99_ms) },
    ];
    let throughput: Vec<f64> = m.health.iter().map(|b| b.requests as f64).collect();
    let latency: Vec<f64> = m.health.iter().map(|b| b.p95_ms).collect();
    let top = |entries: &[metrics::TopEntry], link: &dyn Fn(&str) -> String| {
        entries
            .iter()
            .map(|e| TopLine { key: e.key.clone(), link: link(&e.key), mutations: e.mutations, conflicts: e.conflicts, rejections: e.rejections })
            .collect::<Vec<_>>()
    };
    let page = OverviewPage {
        window_label: label,
        windows: WINDOWS
            .iter()
            .map(|w| Tab {
                label: w,
                href: format!("{}{}", nav.home, query_string(&[("window", w)])),
                current: *w == window_name.unwrap_or("24h"),
            })
            .collect(),
        headlines,
        strip: svg::strip(&m.health),
        throughput: svg::spark(&throughput, "Requests per five minutes", ""),
        latency: svg::spark(&latency, "p95 latency per five minutes", " ms"),
        top_models: top(&m.top_models, &|k| format!("{}/requests{}", nav.prefix, query_string(&[("model", k)]))),
        top_clients: top(&m.top_clients, &|k| nav.client(k)),
        suspicious_clocks: m
            .suspicious_clocks
            .iter()
            .map(|e| (e.client_id.clone(), nav.client(&e.client_id), e.future, e.invalid, crate::dashboard::history::span_words(e.furthest_ahead_ms)))
            .collect(),
        failures: failures.iter().map(|x| MutationLine::new(&nav, x)).collect(),
        conflicts: conflicts.iter().map(|x| MutationLine::new(&nav, x)).collect(),
        pipeline: state.capture.as_ref().map(|c| views::PipelineHealth::new(&c.totals())),
        nav,
    };
    html(&page)
}

