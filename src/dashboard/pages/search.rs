//! `/search`: where the search box goes.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};

use super::params::Params;
use super::queries::{self, MutationKey};
use super::views::*;
use super::{PageResult, prefix};
use crate::dashboard::DashboardState;

/// The search box: a request id opens that request; a mutation or entity id lists the
/// requests that carry it; anything else is taken as a client id.
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
    if queries::mutation_exists(c, MutationKey::EntityId, term).await? {
        return Ok(to("entity_id"));
    }
    Ok(to("client_id"))
}

