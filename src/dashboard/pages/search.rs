//! `/search`: where the search box goes.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};

use super::params::Params;
use super::queries::{self, MutationKey};
use super::views::*;
use super::{PageResult, prefix};
use crate::dashboard::DashboardState;

/// The search box: a request id opens that request; a mutation id lists the requests that
/// carry it; an entity id (or `Model/entity_id`, or `model=` with it) opens the record's
/// history (the requests carrying it when several models share the id); anything else is
/// taken as a client id.
pub(super) async fn search(State(state): State<DashboardState>, p: Params) -> PageResult {
    let base = prefix(&state);
    let Some(term) = p.get("q") else { return Ok(Redirect::to(&format!("{base}/requests")).into_response()) };
    let c = &state.client;
    let to = |name: &str| Redirect::to(&format!("{base}/requests{}", query_string(&[(name, term)]))).into_response();
    if p.get("by") == Some("client") {
        return Ok(to("client_id"));
    }
    if queries::request_exists(c, term).await? {
        return Ok(Redirect::to(&format!("{base}/requests/{}", enc(term))).into_response());
    }
    if queries::mutation_exists(c, MutationKey::MutationId, term).await? {
        return Ok(to("mutation_id"));
    }
    // A record: its history when one model has this entity id, else the requests carrying it.
    let nav = Nav::new(&base, "", "");
    let record = |model: &str, entity: &str| Redirect::to(&nav.record(model, entity)).into_response();
    if let Some(model) = p.get("model") {
        return Ok(record(model, term));
    }
    match queries::models_of_entity(c, term, 2).await?.as_slice() {
        [model] => return Ok(record(model, term)),
        [_, _, ..] => return Ok(to("entity_id")),
        [] => {}
    }
    // `Model/entity_id`, as the record page's title reads; either may hold a `/` itself, so
    // each split is tried (the first few).
    for (at, _) in term.match_indices('/').take(8) {
        let (model, entity) = (&term[..at], &term[at + 1..]);
        if !entity.is_empty() && queries::models_of_entity(c, entity, 100).await?.iter().any(|m| m == model) {
            return Ok(record(model, entity));
        }
    }
    Ok(to("client_id"))
}

