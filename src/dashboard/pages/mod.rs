//! Server-rendered inspection pages: overview, requests (list and detail), conflicts,
//! failures, one client's timeline, and a search box. Plain HTML from askama templates
//! (auto-escaped), no script and no inline style (the CSP forbids both), charts as inline
//! SVG, one stylesheet served from `/assets/app.css`. Every link starts with the state's
//! prefix. Bad input answers a 400 page, an unknown id a 404 page, ClickHouse trouble a
//! 503 page; user input never causes a 500.

mod client;
mod conflicts;
mod cursor;
mod error;
mod failures;
mod overview;
mod record;
mod params;
// The read queries the pages use live with the schema.
use crate::store::queries;
mod request;
mod requests;
mod search;
mod svg;
pub(crate) mod text;
pub(crate) mod views;

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::DashboardState;
use crate::store::schema::{RequestKind, RequestOutcome};
pub use cursor::encode_cursor;
pub use error::PageError;

/// The stylesheet of every page.
pub const CSS: &str = include_str!("../../../assets/app.css");

/// Requests per page of the requests list.
pub const REQUESTS_PAGE_SIZE: usize = 50;
/// Requests per page of a client's timeline.
pub const TIMELINE_PAGE_SIZE: usize = 25;
/// Mutations listed under each request of a client's timeline.
pub const TIMELINE_MUTATIONS: u64 = 20;
/// Conflicts per page.
pub const CONFLICTS_PAGE_SIZE: usize = 20;
/// Failure groups listed at most.
pub const FAILURE_GROUPS: u64 = 500;
/// Latest failures and conflicts on the overview.
pub const LATEST: u64 = 10;
/// Longest accepted text parameter (ids, model names).
pub const MAX_PARAM_CHARS: usize = 1024;

/// The kinds and outcomes the requests filter offers (spelled by `store::schema`).
pub const KINDS: [&str; 2] = [RequestKind::Push.as_str(), RequestKind::Pull.as_str()];
pub const OUTCOMES: [&str; 5] = [
    RequestOutcome::Ok.as_str(),
    RequestOutcome::Partial.as_str(),
    RequestOutcome::Rejected.as_str(),
    RequestOutcome::Conflict.as_str(),
    RequestOutcome::Error.as_str(),
];
pub const WINDOWS: [&str; 4] = ["1h", "6h", "24h", "7d"];

/// The pages' routes, relative to the dashboard root. Each handler is one function in a file
/// of its own; a [`PageError`] it returns is rendered as an HTML error page, with the
/// dashboard's navigation, by [`error::render`].
pub fn router(state: &DashboardState) -> Router<DashboardState> {
    Router::new()
        .route("/", get(overview::overview))
        .route("/requests", get(requests::requests))
        .route("/requests/{request_id}", get(request::request))
        .route("/conflicts", get(conflicts::conflicts))
        .route("/failures", get(failures::failures))
        .route("/clients/{client_id}", get(client::client))
        .route("/records/{model}/{entity_id}", get(record::record))
        .route("/record", get(record::by_query))
        .route("/search", get(search::search))
        .layer(axum::middleware::map_response_with_state(state.clone(), error::render))
        .route("/assets/app.css", get(css))
}

fn bad(m: impl Into<String>) -> PageError {
    PageError::BadRequest(m.into())
}

type PageResult = Result<Response, PageError>;

fn prefix(state: &DashboardState) -> String {
    state.prefix.trim_end_matches('/').to_owned()
}

fn html<T: Template>(t: &T) -> PageResult {
    match t.render() {
        Ok(body) => Ok(Html(body).into_response()),
        Err(e) => {
            tracing::error!(target: "tether_pro::dashboard", error = %e, "page rendering failed");
            Ok((StatusCode::INTERNAL_SERVER_ERROR, "rendering failed").into_response())
        }
    }
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], CSS)
}
