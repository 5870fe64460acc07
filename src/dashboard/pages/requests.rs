//! `/requests`: captured requests, newest first, filtered by kind, outcome, client, model,
//! mutation or entity id and time, with cursor paging.

use axum::extract::State;

use super::cursor::encode_cursor;
use super::params::Params;
use super::queries::{self, Cursor, RequestFilter};
use super::views::*;
use super::{KINDS, OUTCOMES, PageResult, REQUESTS_PAGE_SIZE, bad, html, prefix};
use crate::dashboard::DashboardState;

pub(super) async fn requests(State(state): State<DashboardState>, p: Params) -> PageResult {
    let kind = p.one_of("kind", &KINDS)?;
    let outcome = p.one_of("outcome", &OUTCOMES)?;
    let filter = RequestFilter {
        kind: kind.map(str::to_owned),
        outcome: outcome.map(str::to_owned),
        client_id: p.owned("client_id"),
        model: p.owned("model"),
        mutation_id: p.owned("mutation_id"),
        entity_id: p.owned("entity_id"),
        from_us: p.time("from")?,
        to_us: p.time("to")?,
    };
    if let (Some(f), Some(t)) = (filter.from_us, filter.to_us)
        && f >= t
    {
        return Err(bad("The parameter from must be before to."));
    }
    let cursor = p.cursor()?;
    let mut rows = queries::list_requests(&state.client, &filter, cursor.as_ref(), REQUESTS_PAGE_SIZE as u64 + 1).await?;
    let nav = Nav::new(&prefix(&state), "requests", "Requests");
    let keep: Vec<(&str, &str)> = [
        ("kind", kind.unwrap_or("")),
        ("outcome", outcome.unwrap_or("")),
        ("client_id", p.get("client_id").unwrap_or("")),
        ("model", p.get("model").unwrap_or("")),
        ("mutation_id", p.get("mutation_id").unwrap_or("")),
        ("entity_id", p.get("entity_id").unwrap_or("")),
        ("from", p.get("from").unwrap_or("")),
        ("to", p.get("to").unwrap_or("")),
    ]
    .into_iter()
    .collect();
    let older = if rows.len() > REQUESTS_PAGE_SIZE {
        rows.truncate(REQUESTS_PAGE_SIZE);
        let last = rows.last().expect("a full page");
        let cur = encode_cursor(&Cursor { started_us: last.started_us, request_id: last.request_id.clone(), position: 0 });
        let mut pairs = keep.clone();
        pairs.push(("before", &cur));
        Some(format!("{}/requests{}", nav.prefix, query_string(&pairs)))
    } else {
        None
    };
    let newest = cursor.is_some().then(|| format!("{}/requests{}", nav.prefix, query_string(&keep)));
    let form = FilterForm {
        kinds: choices(&KINDS, kind),
        outcomes: choices(&OUTCOMES, outcome),
        client_id: p.owned("client_id").unwrap_or_default(),
        model: p.owned("model").unwrap_or_default(),
        mutation_id: p.owned("mutation_id").unwrap_or_default(),
        entity_id: p.owned("entity_id").unwrap_or_default(),
        from: p.owned("from").unwrap_or_default(),
        to: p.owned("to").unwrap_or_default(),
        active: keep.iter().any(|(_, v)| !v.is_empty()),
    };
    let page = RequestsPage {
        rows: rows.iter().map(|r| RequestLine::new(&nav, r)).collect(),
        nav,
        form,
        older,
        newest,
        page_size: REQUESTS_PAGE_SIZE,
    };
    html(&page)
}

