//! The HTTP face of the reference server: JSON in, JSON out, clear 4xx for bad input.

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::SyncServer;
use crate::protocol::{PULL_PATH, PUSH_PATH, PullRequest, PullResponse, PushRequest, PushResponse};

pub use crate::protocol::RecordState;

/// Path of the read-only state lookup (replay previews use it).
pub const STATE_PATH: &str = "/tether/state/{model}/{entity_id}";

/// Errors the server answers with; every variant is a JSON body `{"error", "message"}`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// 400 `invalid_json`: the body could not be read or is not JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// 422 `invalid_request`: JSON, but not the expected push/pull shape.
    #[error("request body does not have the expected shape: {0}")]
    InvalidRequest(String),
    /// 413 `payload_too_large`: the body exceeds `Limits::max_body_bytes` (the limit, in bytes).
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `unsupported_media_type`: a `Content-Type` other than `application/json` or
    /// `*+json` (none at all is accepted).
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 422 `too_many_mutations`: a push over `Limits::max_batch` (the limit) mutations.
    #[error("a push may carry at most {0} mutations")]
    TooManyMutations(usize),
    /// 404 `not_found`: the state lookup found no record (tombstones are found).
    #[error("no such record")]
    NotFound,
    /// 500 `internal_error`: a storage or task failure; the detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

impl SyncError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            SyncError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            SyncError::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            SyncError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            SyncError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            SyncError::TooManyMutations(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_mutations"),
            SyncError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            SyncError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for SyncError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let SyncError::Internal(detail) = &self {
            // Logged once here; the client sees no internals.
            tracing::error!(error = %detail, "sync request failed");
        }
        (status, Json(serde_json::json!({ "error": code, "message": self.to_string() }))).into_response()
    }
}

/// The reference server's routes: push, pull and the read-only state lookup.
pub fn router(server: SyncServer) -> Router {
    let limit = server.limits().max_body_bytes;
    Router::new()
        .route(PUSH_PATH, post(push))
        .route(PULL_PATH, post(pull))
        .route(STATE_PATH, get(state))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(server)
}

fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, SyncError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(SyncError::UnsupportedMediaType);
        }
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => SyncError::PayloadTooLarge(limit),
        _ => SyncError::InvalidJson(e.body_text()),
    })?;
    // serde_json's recursion limit (128) turns absurd nesting into an error, not a stack overflow.
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => SyncError::InvalidRequest(e.to_string()),
        _ => SyncError::InvalidJson(e.to_string()),
    })
}

/// Runs SQLite work off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Internal(e.to_string()))?
        .map_err(|e| SyncError::Internal(e.to_string()))
}

async fn push(
    State(server): State<SyncServer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushResponse>, SyncError> {
    let req: PushRequest = parse_json(&headers, body, server.limits().max_body_bytes)?;
    if req.mutations.len() > server.limits().max_batch {
        return Err(SyncError::TooManyMutations(server.limits().max_batch));
    }
    // Before/after state for observers, how a host reports it (a no-op without capture):
    // from the blocking task, under the request's span, right after the commit, so a client
    // that goes away mid-push does not take the states of what was committed with it.
    let span = tracing::Span::current();
    let response = blocking(move || {
        let result = server.push_blocking(&req)?;
        crate::capture::record_mutation_states_json_in(
            &span,
            result.effects.into_iter().filter_map(|e| req.mutations.get(e.index).map(|m| (m.mutation_id.clone(), e.before, e.after))),
        );
        Ok(result.response)
    })
    .await?;
    Ok(Json(response))
}

async fn pull(
    State(server): State<SyncServer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PullResponse>, SyncError> {
    let req: PullRequest = parse_json(&headers, body, server.limits().max_body_bytes)?;
    Ok(Json(blocking(move || server.pull_blocking(&req)).await?))
}

async fn state(
    State(server): State<SyncServer>,
    Path((model, entity_id)): Path<(String, String)>,
) -> Result<Json<RecordState>, SyncError> {
    blocking(move || server.state_blocking(&model, &entity_id)).await?.map(Json).ok_or(SyncError::NotFound)
}
