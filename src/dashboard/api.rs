//! JSON routes: the metrics API and its OpenAPI document, generated from the types the API
//! answers with (utoipa), so the document cannot drift from the answers.

use std::sync::OnceLock;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::error::ErrorBody;
use super::history::RecordHistory;
use super::metrics::{self, Metrics, MetricsQuery};
use super::{DashboardError, DashboardState};

/// The OpenAPI 3.1 document of the JSON API (paths relative to the dashboard root).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tether-pro metrics API",
        version = "1",
        description = "Sync health of a Tether server, answered from five-minute aggregates. Failure rate = failed requests (outcome error: non-2xx or transport failure) / requests. Conflict rate = conflicting mutations / mutations. Rejection rate = rejected mutations (duplicates excluded) / mutations. A health bucket is idle with no requests; failing when its failure rate is at least thresholds.failing_failure_rate; degraded when its failure rate is at least thresholds.degraded_failure_rate, its conflict rate at least thresholds.degraded_conflict_rate, or its p95 above thresholds.degraded_p95_ms; ok otherwise."
    ),
    paths(metrics_api, record_history, record_history_by_query),
    components(schemas(Metrics, ErrorBody, metrics::WindowSpan, RecordHistory))
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json`.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes"))
}

pub fn router() -> Router<DashboardState> {
    Router::new().route("/metrics", get(metrics_api)).route("/openapi.json", get(openapi))
}

/// Totals, throughput, latency, rates, top models and clients, and the five-minute health strip.
#[utoipa::path(
    get,
    path = "/metrics",
    params(MetricsQuery),
    responses(
        (status = 200, description = "The metrics of the window", body = Metrics),
        (status = 400, description = "Bad parameters (unknown name, bad window or time, window over 31 days)", body = ErrorBody),
        (status = 503, description = "ClickHouse unavailable", body = ErrorBody),
    )
)]
async fn metrics_api(
    State(state): State<DashboardState>,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<Metrics>, DashboardError> {
    let Query(q) = query.map_err(|e| DashboardError::BadRequest(e.body_text()))?;
    let window = q.window(chrono::Utc::now())?;
    Ok(Json(metrics::compute(&state, window).await?))
}

/// A record's history: every captured mutation of it across clients, in the order the server
/// processed them, with conflicts explained. Served by the pages' router (the same path
/// without `.json` is the HTML page); an entity id that itself ends in `.json` takes one more.
#[utoipa::path(
    get,
    path = "/records/{model}/{entity_id}.json",
    params(
        ("model" = String, Path, description = "The record's model, as pushed (1 to 1024 characters)"),
        ("entity_id" = String, Path, description = "The record's entity id, as pushed (1 to 1024 characters)"),
        ("after" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of at most 50 mutations", body = RecordHistory),
        (status = 400, description = "Bad parameters (id too long, bad cursor)", body = ErrorBody),
        (status = 404, description = "No captured mutation touches this record", body = ErrorBody),
        (status = 503, description = "ClickHouse unavailable", body = ErrorBody),
    )
)]
#[allow(dead_code)] // documentation only: `pages::record` serves it
fn record_history() {}

/// The same for any id, including those a path segment cannot carry (`.`, `..`, or ending in
/// `.json`). Without `format=json` it is the HTML page.
#[utoipa::path(
    get,
    path = "/record",
    params(
        ("model" = String, Query, description = "The record's model, as pushed (1 to 1024 characters)"),
        ("entity_id" = String, Query, description = "The record's entity id, as pushed (1 to 1024 characters)"),
        ("format" = String, Query, description = "`json` for this answer; `html` (the default) for the page"),
        ("after" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of at most 50 mutations", body = RecordHistory),
        (status = 400, description = "Bad or missing parameters", body = ErrorBody),
        (status = 404, description = "No captured mutation touches this record", body = ErrorBody),
        (status = 503, description = "ClickHouse unavailable", body = ErrorBody),
    )
)]
#[allow(dead_code)] // documentation only: `pages::record::by_query` serves it
fn record_history_by_query() {}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json())
}
