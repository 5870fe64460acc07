//! Where a replay goes: the host's normal push path, like any client push. Two targets: the
//! host's own router in process (when the dashboard is mounted inside the host's app), and
//! HTTP (for the standalone `tether-pro serve`).

use async_trait::async_trait;
use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::capture::REPLAY_OF_HEADER;
use crate::protocol::{CLIENT_VERSION_HEADER, PUSH_PATH, PushRequest, PushResponse};
use crate::sync::{RecordState, SyncServer};

/// The host as a replay sees it: a state lookup and a push.
#[async_trait]
pub trait ReplayTarget: Send + Sync + 'static {
    /// The record's current state (`None`: the host never had it).
    async fn state(&self, model: &str, entity_id: &str) -> anyhow::Result<Option<RecordState>>;
    /// Sends `req` through the host's push path, marked as a replay of `replay_of`. Returns the
    /// HTTP status and the parsed answer (when it was one).
    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> anyhow::Result<(u16, Option<PushResponse>)>;
}

/// The reference server in process: pushes go through `app` (the host's router with its
/// capture layer), state comes from the server.
#[derive(Clone)]
pub struct InProcessTarget {
    pub app: axum::Router,
    pub server: SyncServer,
}

#[async_trait]
impl ReplayTarget for InProcessTarget {
    async fn state(&self, model: &str, entity_id: &str) -> anyhow::Result<Option<RecordState>> {
        let (server, model, entity_id) = (self.server.clone(), model.to_owned(), entity_id.to_owned());
        Ok(tokio::task::spawn_blocking(move || server.state_blocking(&model, &entity_id)).await??)
    }

    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> anyhow::Result<(u16, Option<PushResponse>)> {
        let request = http::Request::post(PUSH_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(CLIENT_VERSION_HEADER, client_version)
            .header(REPLAY_OF_HEADER, replay_of)
            .body(Body::from(serde_json::to_vec(req)?))?;
        let resp = self.app.clone().oneshot(request).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }
}

/// A host over HTTP: its push URL and a state lookup URL template with `{model}` and
/// `{entity_id}` (the reference server's `GET /tether/state/{model}/{entity_id}` fits).
#[derive(Clone)]
pub struct HttpTarget {
    pub http: reqwest::Client,
    pub push_url: String,
    pub state_url_template: String,
}

fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl ReplayTarget for HttpTarget {
    async fn state(&self, model: &str, entity_id: &str) -> anyhow::Result<Option<RecordState>> {
        let url = self.state_url_template.replace("{model}", &path_segment(model)).replace("{entity_id}", &path_segment(entity_id));
        let resp = self.http.get(url).send().await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(resp.error_for_status()?.json().await?))
    }

    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> anyhow::Result<(u16, Option<PushResponse>)> {
        let resp = self
            .http
            .post(&self.push_url)
            .header(CLIENT_VERSION_HEADER, client_version)
            .header(REPLAY_OF_HEADER, replay_of)
            .json(req)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.ok()))
    }
}
