//! `/failures`: rejected and unprocessed mutations in a window, grouped by reason, model and
//! client, with first and last seen and an example.

use axum::extract::State;

use super::params::{Params, window_label, window_tabs};
use super::queries;
use super::views::*;
use super::{FAILURE_GROUPS, PageResult, html, prefix};
use crate::dashboard::DashboardState;

pub(super) async fn failures(State(state): State<DashboardState>, p: Params) -> PageResult {
    let w = p.window()?;
    let groups = queries::failure_groups(&state.client, w.from, w.to, FAILURE_GROUPS).await?;
    let nav = Nav::new(&prefix(&state), "failures", "Failures");
    let groups = groups
        .into_iter()
        .map(|g| FailureLine {
            client_link: nav.client(&g.client_id),
            first_seen: time_us(g.first_us),
            last_seen: time_us(g.last_us),
            example_link: nav.request(&g.example_request_id),
            drill_link: format!("{}/requests{}", nav.prefix, query_string(&[("client_id", &g.client_id), ("model", &g.model)])),
            example_mutation_id: g.example_mutation_id,
            reason: g.reason,
            model: g.model,
            client_id: g.client_id,
            failures: g.failures,
        })
        .collect();
    let page = FailuresPage {
        window_label: window_label(&p, &w),
        windows: window_tabs(&nav, "/failures", &p),
        groups,
        limit: FAILURE_GROUPS,
        nav,
    };
    html(&page)
}

