//! One simulated device.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::plan;
use super::{SimConfig, SimStats};
use crate::protocol::{
    CLIENT_VERSION_HEADER, Mutation, Object, Operation, PULL_PATH, PUSH_PATH, PullRequest, PullResponse,
    PushRequest, PushResponse, RejectionReason,
};

const MODELS: &[&str] = &["Task", "Task", "Task", "Note", "Project"];
const VERSIONS: &[&str] = &["ios/3.2.1", "ios/3.1.0", "android/3.2.0", "web/2.9.4"];
/// How far back an offline session's writes reach.
const OFFLINE_WINDOW_MS: i64 = 30_000;

struct Entity {
    id: String,
    model: &'static str,
    payload: Object,
    version: u64,
}

/// A device with its own local records, sync cursor and seeded random stream.
pub struct SimClient {
    client_id: String,
    client_version: &'static str,
    http: reqwest::Client,
    base: String,
    rng: ChaCha8Rng,
    own: Vec<Entity>,
    shared: Vec<String>,
    cursor: Option<i64>,
    last_push_ms: i64,
    cfg: SimConfig,
    stats: Arc<SimStats>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SimClient {
    pub fn new(cfg: &SimConfig, index: usize, http: reqwest::Client, shared: Vec<String>, stats: Arc<SimStats>) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(index as u64));
        let client_id = plan::ulid(&mut rng);
        let client_version = VERSIONS.choose(&mut rng).expect("non-empty");
        SimClient {
            client_id,
            client_version,
            http,
            base: cfg.base_url.trim_end_matches('/').to_owned(),
            rng,
            own: Vec::new(),
            shared,
            cursor: None,
            last_push_ms: 0,
            cfg: cfg.clone(),
            stats,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// `period` with ±50 % jitter from the client's stream.
    pub fn jittered(&mut self, period: Duration) -> Duration {
        period.mul_f64(self.rng.random_range(0.5..1.5))
    }

    /// Creates the shared records (idempotent: a create of an existing sync key updates it).
    pub async fn create_shared(&mut self) -> anyhow::Result<()> {
        let ts = now_ms() - 2 * OFFLINE_WINDOW_MS;
        let mutations = self
            .shared
            .clone()
            .into_iter()
            .map(|id| Mutation {
                mutation_id: plan::ulid(&mut self.rng),
                entity_id: id,
                model: "Task".into(),
                operation: Operation::Create,
                payload: plan::payload(&mut self.rng, "Task", false),
                version: 1,
                timestamp: ts,
            })
            .collect();
        let resp = self.push(PushRequest { client_id: self.client_id.clone(), mutations }).await?;
        anyhow::ensure!(resp.rejected.is_empty(), "shared records were rejected: {:?}", resp.rejected);
        Ok(())
    }

    /// One online moment: push what was written offline (maybe twice), then pull.
    pub async fn session(&mut self) {
        let now = now_ms();
        let start = (self.last_push_ms + 1).max(now - OFFLINE_WINDOW_MS).min(now);
        let n = self.rng.random_range(1..=self.cfg.max_batch.max(1));
        let mut stamps: Vec<i64> = (0..n).map(|_| self.rng.random_range(start..=now)).collect();
        stamps.sort_unstable();
        let mutations: Vec<Mutation> = stamps.into_iter().map(|ts| self.write(ts)).collect();
        let req = PushRequest { client_id: self.client_id.clone(), mutations };
        if let Ok(resp) = self.push(req.clone()).await {
            self.settle(&req, &resp);
            if self.rng.random_bool(self.cfg.retry_ratio) {
                // The response was "lost": the client sends the same batch again.
                let _ = self.push(req).await;
            }
        }
        self.last_push_ms = now;
        self.pull_all().await;
    }

    /// Makes one local write at client time `ts`.
    fn write(&mut self, ts: i64) -> Mutation {
        let mutation_id = plan::ulid(&mut self.rng);
        let roll: f64 = self.rng.random();
        let c = &self.cfg;
        let mk = |entity_id: String, model: &str, operation, payload, version| Mutation {
            mutation_id: mutation_id.clone(),
            entity_id,
            model: model.to_owned(),
            operation,
            payload,
            version,
            timestamp: ts,
        };
        if roll < c.unknown_ratio {
            // A record this server never had: update or delete gets `not_found`.
            let id = plan::ulid(&mut self.rng);
            let op = if self.rng.random_bool(0.5) { Operation::Delete } else { Operation::Update };
            let payload = if op == Operation::Delete { Object::new() } else { plan::payload(&mut self.rng, "Task", false) };
            return mk(id, "Task", op, payload, 2);
        }
        if roll < c.unknown_ratio + c.invalid_ratio {
            let id = plan::ulid(&mut self.rng);
            return mk(id, "Task", Operation::Create, plan::invalid_task_payload(&mut self.rng), 1);
        }
        let pick: f64 = self.rng.random();
        if pick < 0.2 && !self.shared.is_empty() {
            // Everyone edits these: the source of conflicts.
            let id = self.shared.choose(&mut self.rng).expect("non-empty").clone();
            let payload = plan::payload(&mut self.rng, "Task", false);
            return mk(id, "Task", Operation::Update, payload, 2);
        }
        if pick < 0.55 && !self.own.is_empty() {
            let i = self.rng.random_range(0..self.own.len());
            if self.rng.random_bool(0.15) {
                let e = self.own.swap_remove(i);
                return mk(e.id, e.model, Operation::Delete, Object::new(), e.version + 1);
            }
            let model = self.own[i].model;
            let payload = plan::edit(&mut self.rng, model, &self.own[i].payload);
            let e = &mut self.own[i];
            e.version += 1;
            e.payload = payload.clone();
            let (id, version) = (e.id.clone(), e.version);
            return mk(id, model, Operation::Update, payload, version);
        }
        let model = *MODELS.choose(&mut self.rng).expect("non-empty");
        let secret = self.rng.random_bool(c.secret_ratio);
        let payload = plan::payload(&mut self.rng, model, secret);
        let id = plan::ulid(&mut self.rng);
        self.own.push(Entity { id: id.clone(), model, payload: payload.clone(), version: 1 });
        mk(id, model, Operation::Create, payload, 1)
    }

    /// Forgets local records the server refused to create (they never existed there).
    fn settle(&mut self, req: &PushRequest, resp: &PushResponse) {
        for r in &resp.rejected {
            if r.reason == RejectionReason::ValidationFailed
                && let Some(m) = req.mutations.iter().find(|m| m.mutation_id == r.mutation_id)
                && m.operation == Operation::Create
            {
                self.own.retain(|e| e.id != m.entity_id);
            }
        }
    }

    /// POSTs JSON and decodes the answer; a transport failure or non-2xx counts as an error.
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let answer = async {
            self.http
                .post(format!("{}{}", self.base, path))
                .header(CLIENT_VERSION_HEADER, self.client_version)
                .json(body)
                .send()
                .await?
                .error_for_status()?
                .json::<T>()
                .await
        };
        answer.await.map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            e.into()
        })
    }

    async fn push(&self, req: PushRequest) -> anyhow::Result<PushResponse> {
        let s = &self.stats;
        s.pushes.fetch_add(1, Ordering::Relaxed);
        s.mutations.fetch_add(req.mutations.len() as u64, Ordering::Relaxed);
        let resp: PushResponse = self.post(PUSH_PATH, &req).await?;
        s.applied.fetch_add(resp.applied.len() as u64, Ordering::Relaxed);
        s.conflicts.fetch_add(resp.conflicts.len() as u64, Ordering::Relaxed);
        for r in &resp.rejected {
            match r.reason {
                // Duplicates count as synced, not as rejections.
                RejectionReason::Duplicate => {
                    s.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                RejectionReason::NotFound => s.not_found.fetch_add(1, Ordering::Relaxed),
                RejectionReason::ValidationFailed => s.validation_failed.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            s.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(resp)
    }

    /// Pulls until `has_more` is false (at most 20 pages per session).
    async fn pull_all(&mut self) {
        for _ in 0..20 {
            let req = PullRequest { client_id: self.client_id.clone(), last_sync_cursor: self.cursor, limit: Some(100) };
            self.stats.pulls.fetch_add(1, Ordering::Relaxed);
            let Ok(page) = self.post::<_, PullResponse>(PULL_PATH, &req).await else { return };
            self.stats.snapshots.fetch_add(page.snapshots.len() as u64, Ordering::Relaxed);
            self.cursor = page.new_sync_cursor.or(self.cursor);
            if !page.has_more {
                return;
            }
        }
    }
}
