//! `/clients/{client_id}`: one client's timeline: its requests, newest first, each with its
//! mutations.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};

use super::cursor::encode_cursor;
use super::params::Params;
use super::queries::{self, Cursor};
use super::views::*;
use super::{MAX_PARAM_CHARS, PageError, PageResult, TIMELINE_MUTATIONS, TIMELINE_PAGE_SIZE, bad, html, prefix};
use crate::dashboard::DashboardState;

pub(super) async fn client(State(state): State<DashboardState>, id: Result<Path<String>, PathRejection>, p: Params) -> PageResult {
    let Path(client_id) = id.map_err(|_| bad("The client id could not be read."))?;
    if client_id.chars().count() > MAX_PARAM_CHARS {
        return Err(bad("The client id is too long."));
    }
    let (from_us, to_us) = (p.time("from")?, p.time("to")?);
    if let (Some(f), Some(t)) = (from_us, to_us)
        && f >= t
    {
        return Err(bad("The parameter from must be before to."));
    }
    let cursor = p.cursor()?;
    let c = &state.client;
    let mut rows = queries::client_requests(c, &client_id, from_us, to_us, cursor.as_ref(), TIMELINE_PAGE_SIZE as u64 + 1).await?;
    if rows.is_empty() && cursor.is_none() && from_us.is_none() && to_us.is_none() {
        return Err(PageError::NotFound(format!("No captured request comes from the client {client_id}.")));
    }
    let more = rows.len() > TIMELINE_PAGE_SIZE;
    rows.truncate(TIMELINE_PAGE_SIZE);
    let muts = queries::mutations_of(c, &client_id, &rows, TIMELINE_MUTATIONS).await?;
    let clock = queries::client_clock(c, &client_id, from_us, to_us).await?;
    let words = crate::dashboard::history::span_words;
    let nav = Nav::new(&prefix(&state), "", format!("Client {client_id}"));
    let keep: Vec<(&str, &str)> = vec![("from", p.get("from").unwrap_or("")), ("to", p.get("to").unwrap_or(""))];
    let older = more.then(|| {
        let last = rows.last().expect("a full page");
        let cur = encode_cursor(&Cursor { started_us: last.started_us, request_id: last.request_id.clone(), position: 0 });
        let mut pairs = keep.clone();
        pairs.push(("before", &cur));
        format!("{}{}", nav.client(&client_id), query_string(&pairs))
    });
    let newest = cursor.is_some().then(|| format!("{}{}", nav.client(&client_id), query_string(&keep)));
    let entries = rows
        .iter()
        .map(|r| {
            let mutations: Vec<MutationLine> =
                muts.iter().filter(|m| m.request_id == r.request_id).map(|m| MutationLine::new(&nav, m)).collect();
            TimelineEntry {
                more: u64::from(r.mutation_count).saturating_sub(mutations.len() as u64),
                r: RequestLine::new(&nav, r),
                mutations,
            }
        })
        .collect();
    let page = ClientPage {
        self_link: nav.client(&client_id),
        requests_link: format!("{}/requests{}", nav.prefix, query_string(&[("client_id", &client_id)])),
        client_id,
        entries,
        older,
        newest,
        from: p.owned("from").unwrap_or_default(),
        to: p.owned("to").unwrap_or_default(),
        median_delay: words(clock.median_delay_ms),
        max_delay: words(clock.max_delay_ms),
        furthest_ahead: words(clock.furthest_ahead_ms),
        clock,
        nav,
    };
    html(&page)
}

