//! JSON routes: the metrics API and its OpenAPI document.

use axum::extract::{Query, State};
use axum::extract::rejection::QueryRejection;
use axum::routing::get;
use axum::{Json, Router};

use super::metrics::{self, Metrics, MetricsQuery};
use super::{DashboardError, DashboardState};

/// The OpenAPI 3.1 document of the JSON API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router() -> Router<DashboardState> {
    Router::new().route("/metrics", get(metrics_api)).route("/openapi.json", get(openapi))
}

async fn metrics_api(
    State(state): State<DashboardState>,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<Metrics>, DashboardError> {
    let Query(q) = query.map_err(|e| DashboardError::BadRequest(e.body_text()))?;
    let window = q.window(chrono::Utc::now())?;
    Ok(Json(metrics::compute(&state, window).await?))
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}
