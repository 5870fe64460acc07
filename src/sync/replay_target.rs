//! The reference server as a replay target, in process: pushes go through the host's router
//! (with its capture layer), state comes straight from the server.

use async_trait::async_trait;
use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::SyncServer;
use crate::capture::REPLAY_OF_HEADER;
use crate::protocol::{CLIENT_VERSION_HEADER, PUSH_PATH, PushRequest, PushResponse, RecordState};
use crate::replay::{ReplayTarget, TargetError};

/// The reference server in process: pushes go through `app` (the host's router with its
/// capture layer), state comes from the server.
#[derive(Clone)]
pub struct InProcessTarget {
    /// The host's router (with its capture layer); replayed pushes go through it.
    pub app: axum::Router,
    /// The server state lookups read from directly.
    pub server: SyncServer,
}

#[async_trait]
impl ReplayTarget for InProcessTarget {
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<RecordState>, TargetError> {
        let (server, model, entity_id) = (self.server.clone(), model.to_owned(), entity_id.to_owned());
        let other = |e: &dyn std::fmt::Display| TargetError::Other(e.to_string());
        tokio::task::spawn_blocking(move || server.state_blocking(&model, &entity_id)).await.map_err(|e| other(&e))?.map_err(|e| other(&e))
    }

    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> Result<(u16, Option<PushResponse>), TargetError> {
        let request = http::Request::post(PUSH_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(CLIENT_VERSION_HEADER, client_version)
            .header(REPLAY_OF_HEADER, replay_of)
            .body(Body::from(serde_json::to_vec(req).map_err(|e| TargetError::Other(e.to_string()))?))
            .map_err(|e| TargetError::Other(e.to_string()))?;
        let resp = self.app.clone().oneshot(request).await.map_err(|e| TargetError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.map_err(|e| TargetError::Unreachable(e.to_string()))?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }
}

