//! One error type that is the response: the status says what went wrong, the body never
//! shows internals (those are logged once, here).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The body of every error answer: what went wrong, never internals.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error answer: its status and a JSON `{"error": ...}` body.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// Bad parameters: 400 with the message.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing there: 404.
    #[error("not found")]
    NotFound,
    /// ClickHouse failed: 503 "ClickHouse is unavailable" (the error is logged, not shown).
    #[error("ClickHouse is unavailable")]
    Store(#[from] clickhouse::error::Error),
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = match &self {
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::NotFound => StatusCode::NOT_FOUND,
            DashboardError::Store(e) => {
                tracing::error!(target: "tether_pro::dashboard", error = %e, "dashboard query failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(ErrorBody { error: self.to_string() })).into_response()
    }
}
