//! Where a replay goes: the host's normal push path, like any client push. The trait, and the
//! HTTP target (for the standalone `tether-pro serve`, or any remote Tether server). The
//! reference server's in-process target lives with it (`sync::InProcessTarget`).

use async_trait::async_trait;

use crate::capture::REPLAY_OF_HEADER;
use crate::protocol::{CLIENT_VERSION_HEADER, PushRequest, PushResponse, RecordState};

/// Why a target could not look a record up or take a push. Its text is redacted with the
/// capture's redactor before it is shown or stored (a transport error can quote a URL with
/// credentials in it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The host could not be reached, or its connection failed before an answer.
    #[error("the host could not be reached: {0}")]
    Unreachable(String),
    /// The state lookup answered something other than a record or 404.
    #[error("the host's state lookup answered HTTP {status}")]
    StateLookup {
        /// The HTTP status it answered.
        status: u16,
    },
    /// The host answered with a body that is not what the Tether protocol describes.
    #[error("the host's answer could not be read: {0}")]
    BadAnswer(String),
    /// Any other failure inside the target (e.g. the in-process store).
    #[error("{0}")]
    Other(String),
}

/// The host as a replay sees it: a state lookup and a push.
#[async_trait]
pub trait ReplayTarget: Send + Sync + 'static {
    /// The record's current state (`None`: the host never had it).
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<RecordState>, TargetError>;
    /// Sends `req` through the host's push path, marked as a replay of `replay_of`. Returns the
    /// HTTP status and the parsed answer (`None` when the body was not a push response).
    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> Result<(u16, Option<PushResponse>), TargetError>;
}

fn unreachable(e: reqwest::Error) -> TargetError {
    TargetError::Unreachable(e.to_string())
}

/// A host over HTTP: its push URL and a state lookup URL template with `{model}` and
/// `{entity_id}` (the reference server's `GET /tether/state/{model}/{entity_id}` fits).
#[derive(Clone)]
pub struct HttpTarget {
    /// The HTTP client for both calls.
    pub http: reqwest::Client,
    /// The host's push URL (`replay.push_url`, e.g. `http://host:3000/tether/push`).
    pub push_url: String,
    /// The state lookup URL (`replay.state_url_template`); `{model}` and `{entity_id}` are
    /// filled in percent-encoded.
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
    async fn state(&self, model: &str, entity_id: &str) -> Result<Option<RecordState>, TargetError> {
        let url = self.state_url_template.replace("{model}", &path_segment(model)).replace("{entity_id}", &path_segment(entity_id));
        let resp = self.http.get(url).send().await.map_err(unreachable)?;
        match resp.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp.json().await.map_err(|e| TargetError::BadAnswer(e.to_string()))?)),
            s => Err(TargetError::StateLookup { status: s.as_u16() }),
        }
    }

    async fn push(&self, req: &PushRequest, client_version: &str, replay_of: &str) -> Result<(u16, Option<PushResponse>), TargetError> {
        let resp = self
            .http
            .post(&self.push_url)
            .header(CLIENT_VERSION_HEADER, client_version)
            .header(REPLAY_OF_HEADER, replay_of)
            .json(req)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.ok()))
    }
}
