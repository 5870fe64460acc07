//! Replay of captured push requests: preview against today's state, and (only where
//! `replay.live_enabled`) apply a clone with new mutation ids (derived from the idempotency key, see `ids`) through the host's normal push
//! path, with durable audit links written before anything is sent.

mod ids;
mod plan;
mod target;

use crate::store::queries;
use crate::store::schema::RequestKind;
use crate::store::schema::MutationOutcome;
use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};

pub use crate::store::links::LinkRow;
use crate::store::links;
pub use plan::{CapturedMutation, Prediction, PreviewEntry, SentInstead, Substitution};
pub use target::{HttpTarget, ReplayTarget, TargetError};

use crate::pipeline::redact::Redactor;
use crate::protocol::{PushRequest, RejectionReason};

/// Why a replay was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No captured request has that id.
    #[error("no captured request with that id")]
    NotFound,
    /// The request is not a push (only pushes replay); holds its `kind`.
    #[error("only push requests can be replayed; this one is a {0}")]
    NotAPush(String),
    /// [`ApplyOptions::idempotency_key`] is empty. Every apply needs its own key: callers that
    /// left it at the default would share one, and later applies would send nothing.
    #[error("an idempotency key is required")]
    NoIdempotencyKey,
    /// None of the selected mutations can be replayed (or none was selected).
    #[error("nothing to replay: no replayable mutation was selected")]
    NothingToReplay,
    /// The audit links could not be written to `replay_links`, so nothing was sent; holds the
    /// ClickHouse error.
    #[error("the audit links could not be written, so nothing was sent: {0}")]
    LinksNotWritten(String),
    /// The host's state lookup or push failed; holds its error text, redacted.
    #[error("the host could not be reached: {0}")]
    Host(String),
    /// ClickHouse failed. From [`Replayer::apply`] this can come after the push was sent (the
    /// host's answers could not be recorded).
    #[error("ClickHouse: {0}")]
    Store(#[from] clickhouse::error::Error),
}

/// A captured push, as replay reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// The captured push's `request_id`.
    pub request_id: String,
    /// The client that pushed it (a clone is sent as the same client).
    pub client_id: String,
    /// Its `X-Tether-Client-Version` header (a clone sends the same).
    pub client_version: String,
    /// Its mutations, by position.
    pub mutations: Vec<CapturedMutation>,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayResult {
    /// The replay's id (`replay_links.replay_id`): the earlier replay's when `sent` is false.
    pub replay_id: String,
    /// False when the idempotency key had been used: the earlier replay is returned, nothing sent.
    pub sent: bool,
    /// The HTTP status the host answered the push with (from the earlier replay when `sent` is
    /// false; 0 if that one got no answer).
    pub host_http_status: u16,
    /// The link rows as last written, one per clone.
    pub links: Vec<LinkRow>,
}

/// What to apply.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApplyOptions {
    /// The same key replays a request once: a later apply of that request with it returns the
    /// earlier replay and sends nothing (another request with the same key is another replay).
    /// Required: empty is refused with [`ReplayError::NoIdempotencyKey`].
    pub idempotency_key: String,
    /// Who asked for the replay (`replay_links.actor`).
    pub actor: String,
    /// Stamp the clones with the current time instead of the original timestamps.
    pub restamp: bool,
    /// Positions to replay (`None`: all).
    pub positions: Option<Vec<u32>>,
}

/// Previews and applies replays of one store against one host.
#[derive(Clone)]
pub struct Replayer {
    client: clickhouse::Client,
    target: Arc<dyn ReplayTarget>,
    /// Applies of this replayer run one at a time, so one idempotency key never sends twice from
    /// one process. Across processes (several `serve` replicas) the derived ids do it: the
    /// host refuses a second send of a clone as a duplicate (see `ids`).
    apply_lock: Arc<tokio::sync::Mutex<()>>,
    /// Everything a preview or an answer shows from the live host passes through it.
    redactor: Redactor,
    /// `replay_links.writer` of this replayer's rows.
    writer: String,
}

impl Replayer {
    /// `client` must be bound to tether-pro's database.
    /// With the default redaction keys; see [`Replayer::with_redactor`].
    pub fn new(client: clickhouse::Client, target: Arc<dyn ReplayTarget>) -> Self {
        // One writer id per Replayer: its link rows stay apart from other replicas' (see
        // `store::links`).
        let writer = ulid::Ulid::new().to_string();
        Replayer { client, target, apply_lock: Arc::new(tokio::sync::Mutex::new(())), redactor: Redactor::default(), writer }
    }

    /// Redacts previews and host answers with `redactor` (the capture's, so the dashboard
    /// hides exactly what storage hides).
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Reads a captured push back from ClickHouse.
    pub async fn load(&self, request_id: &str) -> Result<Captured, ReplayError> {
        let head = queries::request_head(&self.client, request_id).await?.ok_or(ReplayError::NotFound)?;
        if head.kind != RequestKind::Push {
            return Err(ReplayError::NotAPush(head.kind));
        }
        let rows = queries::replayable_mutations(&self.client, request_id).await?;
        let mutations = rows
            .into_iter()
            .map(|r| CapturedMutation {
                position: r.position,
                mutation_id: r.mutation_id,
                entity_id: r.entity_id,
                model: r.model,
                operation: r.operation,
                payload: serde_json::from_str(&r.payload).ok(),
                payload_kept: r.detail_kept,
                client_timestamp_ms: r.client_ms,
                version: r.version,
                original_outcome: r.outcome,
                redacted_paths: r.redacted_paths_recorded.then_some(r.redacted_paths),
            })
            .collect();
        Ok(Captured { request_id: request_id.to_owned(), client_id: head.client_id, client_version: head.client_version, mutations })
    }

    /// What each mutation would do now, redacted for display (the host's current state, the
    /// values the clone would restore from it, and the diff). Writes nothing, anywhere.
    pub async fn preview(&self, request_id: &str, restamp: bool) -> Result<(Captured, Vec<PreviewEntry>), ReplayError> {
        let (captured, entries) = self.preview_unredacted(request_id, restamp).await?;
        Ok((captured, entries.into_iter().map(|e| plan::redacted_for_display(e, &self.redactor)).collect()))
    }

    /// The preview with the live values a clone sends: for building clones only, never shown.
    async fn preview_unredacted(&self, request_id: &str, restamp: bool) -> Result<(Captured, Vec<PreviewEntry>), ReplayError> {
        let captured = self.load(request_id).await?;
        let restamp_ms = restamp.then(|| Utc::now().timestamp_millis());
        let mut entries = Vec::with_capacity(captured.mutations.len());
        for m in &captured.mutations {
            let current = self.target.state(&m.model, &m.entity_id).await.map_err(|e| ReplayError::Host(self.redactor.redact_text(&e.to_string())))?;
            entries.push(plan::preview(m, current, restamp_ms));
        }
        Ok((captured, entries))
    }

    /// The record as the host has it now (its state fields), redacted with this replayer's
    /// redactor; `None` when the host does not have it. `Host` when the lookup failed.
    pub async fn current_state(&self, model: &str, entity_id: &str) -> Result<Option<serde_json::Value>, ReplayError> {
        let state = self.target.state(model, entity_id).await.map_err(|e| ReplayError::Host(self.redactor.redact_text(&e.to_string())))?;
        Ok(state.map(|s| {
            let mut v = serde_json::json!({"deleted": s.deleted, "version": s.version, "updated_at": s.updated_at, "state": s.state});
            self.redactor.redact_value(&mut v);
            v
        }))
    }

    /// The replays of one original request.
    pub async fn links(&self, request_id: &str) -> Result<Vec<LinkRow>, ReplayError> {
        Ok(links::for_request(&self.client, request_id).await?)
    }

    /// Sends a clone: links written and acknowledged first (or nothing is sent), then the push
    /// through the host's normal path, then the host's answer per clone.
    pub async fn apply(&self, request_id: &str, opts: &ApplyOptions) -> Result<ReplayResult, ReplayError> {
        if opts.idempotency_key.is_empty() {
            return Err(ReplayError::NoIdempotencyKey);
        }
        let _one_at_a_time = self.apply_lock.lock().await;
        let earlier = links::by_idempotency_key(&self.client, request_id, &opts.idempotency_key).await?;
        if let Some(first) = earlier.first() {
            return Ok(ReplayResult {
                replay_id: first.replay_id.clone(),
                sent: false,
                host_http_status: first.host_http_status,
                links: earlier,
            });
        }
        let (captured, entries) = self.preview_unredacted(request_id, opts.restamp).await?;
        let selected = entries.iter().filter(|e| opts.positions.as_ref().is_none_or(|p| p.contains(&e.position)));
        let versions: std::collections::HashMap<u32, u64> = captured.mutations.iter().map(|m| (m.position, m.version)).collect();
        let clones: Vec<(PreviewEntry, crate::protocol::Mutation)> = selected
            .filter_map(|e| {
                let id = ids::clone_mutation_id(request_id, &opts.idempotency_key, e.position);
                plan::clone_mutation(e, versions.get(&e.position).copied().unwrap_or(1), id).map(|c| (e.clone(), c))
            })
            .collect();
        if clones.is_empty() {
            return Err(ReplayError::NothingToReplay);
        }
        // Derived, not drawn: a second dashboard replica applying the same key at the same
        // moment sends the same ids, which the host refuses as duplicates (see `ids`).
        let replay_id = ids::replay_id(request_id, &opts.idempotency_key);
        let now = Utc::now();
        let mut rows: Vec<LinkRow> = clones
            .iter()
            .map(|(e, c)| LinkRow {
                replay_id: replay_id.clone(),
                original_request_id: request_id.to_owned(),
                original_mutation_id: e.original_mutation_id.clone(),
                clone_mutation_id: c.mutation_id.clone(),
                position: e.position,
                actor: opts.actor.clone(),
                idempotency_key: opts.idempotency_key.clone(),
                created_at: now,
                status: "pending".into(),
                host_http_status: 0,
                host_reason: String::new(),
                updated_at: now,
                writer: self.writer.clone(),
            })
            .collect();
        links::write(&self.client, &rows).await.map_err(|e| ReplayError::LinksNotWritten(e.to_string()))?;

        let push = PushRequest { client_id: captured.client_id.clone(), mutations: clones.into_iter().map(|(_, c)| c).collect() };
        let sent = self.target.push(&push, &captured.client_version, request_id).await;
        let answered = Utc::now();
        let (status, answer) = match sent {
            Ok(ok) => ok,
            Err(e) => {
                // Transport errors can quote the target URL, userinfo included.
                let reason = self.redactor.redact_text(&e.to_string());
                for r in &mut rows {
                    r.status = "failed".into();
                    r.host_reason = reason.clone();
                    r.updated_at = answered;
                }
                let _ = links::write(&self.client, &rows).await;
                return Err(ReplayError::Host(reason));
            }
        };
        for r in &mut rows {
            r.host_http_status = status;
            r.updated_at = answered;
            let (s, reason) = match &answer {
                // A clone's status is the outcome the host gave it (the mutations table's words),
                // or `failed`.
                Some(a) if a.applied.contains(&r.clone_mutation_id) => (MutationOutcome::Applied.as_str(), String::new()),
                Some(a) => match a.rejected.iter().chain(&a.conflicts).find(|x| x.mutation_id == r.clone_mutation_id) {
                    Some(x) if x.reason == RejectionReason::Duplicate => (MutationOutcome::Duplicate.as_str(), x.reason.to_string()),
                    Some(x) if x.reason == RejectionReason::Conflict => (MutationOutcome::Conflict.as_str(), x.reason.to_string()),
                    Some(x) => (MutationOutcome::Rejected.as_str(), x.reason.to_string()),
                    None => ("failed", "not in the host's answer".to_owned()),
                },
                None => ("failed", format!("HTTP {status}")),
            };
            r.status = s.into();
            r.host_reason = reason;
        }
        links::write(&self.client, &rows).await?;
        if rows.iter().any(|r| r.status == MutationOutcome::Duplicate.as_str()) {
            // Another replica sent the same clone first: the record is what both wrote (its
            // outcome outranks this `duplicate` once it is written).
            let merged = links::by_idempotency_key(&self.client, request_id, &opts.idempotency_key).await?;
            return Ok(ReplayResult { replay_id, sent: true, host_http_status: status, links: merged });
        }
        Ok(ReplayResult { replay_id, sent: true, host_http_status: status, links: rows })
    }
}
