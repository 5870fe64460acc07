//! `/requests/{request_id}`: one request: summary, bodies (the push body rebuilt from its
//! envelope and the mutation rows), replay links, and its mutations page by page.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};

use super::params::Params;
use super::queries;
use super::views::{self, *};
use super::{MAX_PARAM_CHARS, PageError, PageResult, bad, html, prefix};
use crate::dashboard::DashboardState;

/// Most of a rebuilt request body a page shows (the envelope fits the column cap; with its
/// payloads back it can be far larger). Each payload is also on its mutation's card.
const REBUILT_BODY_SHOWN_BYTES: usize = 1 << 20;

pub(super) async fn request(State(state): State<DashboardState>, id: Result<Path<String>, PathRejection>, p: Params) -> PageResult {
    let Path(id) = id.map_err(|_| bad("The request id could not be read."))?;
    let page = p.page()?;
    let not_found = || PageError::NotFound(format!("No captured request has the id {id}."));
    if id.is_empty() || id.chars().count() > MAX_PARAM_CHARS {
        return Err(not_found());
    }
    let c = &state.client;
    let r = queries::request(c, &id).await?.ok_or_else(not_found)?;
    let size = state.mutations_page_size.max(1) as u64;
    // The audit trail of replays of this request (readable even with replay switched off).
    let (replays, replayed_requests) = if r.kind == "push" {
        let links = crate::store::links::for_request(c, &r.request_id).await.unwrap_or_default();
        let replayed = queries::replays_of(c, &r.request_id, 50).await?;
        let nav_prefix = state.prefix.clone();
        (links, replayed.into_iter().map(|id| (format!("{nav_prefix}/requests/{}", views::enc(&id)), id)).collect())
    } else {
        (Vec::new(), Vec::new())
    };
    let total = queries::mutation_count(c, r.started_us, &r.request_id).await?;
    let pages = total.div_ceil(size).max(1);
    if page > pages {
        return Err(PageError::NotFound(format!("This request has {pages} page(s) of mutations, not {page}.")));
    }
    let first = (page - 1) * size;
    let mutations = if total == 0 { Vec::new() } else { queries::mutations_page(c, r.started_us, &r.request_id, first, size).await? };
    // Payloads are stored once, in the mutation rows: put them back into the body.
    let request_body = if r.request_body_moved.is_empty() || r.request_body_truncated {
        r.request_body.clone()
    } else {
        let payloads = queries::moved_payloads(c, r.started_us, &r.request_id, &r.request_body_moved).await?;
        let rebuilt = crate::pipeline::envelope::rebuild(&r.request_body, &r.request_body_moved, &payloads);
        let len = rebuilt.len() as u64;
        crate::pipeline::rows::cap_text(rebuilt, REBUILT_BODY_SHOWN_BYTES, len).0
    };
    let mut nav = Nav::new(&prefix(&state), "requests", format!("Request {}", r.request_id));
    nav.trace_url = state.trace_url.clone();
    let page_link = |n: u64| format!("{}{}#mutations", nav.request(&r.request_id), query_string(&[("page", &n.to_string())]));
    let summary = queries::RequestSummary {
        request_id: r.request_id.clone(),
        kind: r.kind.clone(),
        client_id: r.client_id.clone(),
        client_version: r.client_version.clone(),
        started_us: r.started_us,
        duration_us: r.duration_us,
        http_status: r.http_status,
        outcome: r.outcome.clone(),
        mutation_count: r.mutation_count,
        applied_count: r.applied_count,
        rejected_count: r.rejected_count,
        conflict_count: r.conflict_count,
        duplicate_count: r.duplicate_count,
        snapshot_count: r.snapshot_count,
    };
    let explanations = ExplanationView::for_conflicts(c, &nav, &mutations).await?;
    let view = RequestPage {
        r: RequestLine::new(&nav, &summary),
        reasons: r.reason_keys.iter().zip(&r.reason_counts).map(|(k, n)| ReasonCount { reason: k.clone(), count: *n }).collect(),
        has_more: r.has_more,
        trace_link: nav.trace(&r.trace_id),
        trace_id: r.trace_id.clone(),
        span_id: r.span_id.clone(),
        replay_link: if r.replay_of.is_empty() { String::new() } else { nav.request(&r.replay_of) },
        replay_of: r.replay_of.clone(),
        replay_url: format!("{}/replay/{}", state.prefix, views::enc(&r.request_id)),
        replay_enabled: state.replay.is_some(),
        replays,
        replayed_requests,
        error: r.error.clone(),
        request_body: pretty(&request_body),
        request_size: bytes(r.request_body_bytes),
        request_truncated: r.request_body_truncated,
        response_body: pretty(&r.response_body),
        response_size: bytes(r.response_body_bytes),
        response_truncated: r.response_body_truncated,
        mutations: mutations
            .iter()
            .map(|m| {
                let mut v = MutationView::new(&nav, m);
                v.explanation = explanations.iter().find(|(id, pos, _)| *id == m.request_id && *pos == m.position).map(|e| e.2.clone());
                v
            })
            .collect(),
        total,
        page,
        pages,
        first_position: first,
        last_position: (first + size).min(total).saturating_sub(1),
        prev: (page > 1).then(|| page_link(page - 1)),
        next: (page < pages).then(|| page_link(page + 1)),
        nav,
    };
    html(&view)
}

