//! Where a replay goes: the host's normal push path, like any client push. The trait, and the
//! HTTP target (for the standalone `tether-pro serve`, or any remote Tether server). The
//! reference server's in-process target lives with it (`sync::InProcessTarget`).

use async_trait::async_trait;

use crate::capture::REPLAY_OF_HEADER;
use crate::protocol::{CLIENT_VERSION_HEADER, PushRequest, PushResponse, RecordState};

/// The host as a replay sees it: a state lookup and a push.
#[async_trait]
pub trait ReplayTarget: Send + Sync + 'static {
    /// The record's current state (`None`: the host never had it).
    async fn state(&self, model: &str, entity_id: &str) -> anyhow::Result<Option<RecordState>>;
    /// Sends `req` through the host's push path, marked as a replay of `replay_of`. Returns the
    /// HTTP status and the parsed answer (when it was one).
    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> anyhow::Result<(u16, Option<PushResponse>)>;
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
