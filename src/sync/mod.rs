//! A reference Tether sync server: `POST /tether/push` and `POST /tether/pull` over SQLite.
//!
//! It is the host the demo, the tests and the benchmarks observe, and a model of how a user
//! instruments their own server. Processing follows PROTOCOL.md rule by rule (see `engine`).

mod db;
mod engine;
mod http;
mod models;
mod resolver;
#[cfg(feature = "replay")]
mod replay_target;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use engine::{EffectOutcome, MutationEffect, PushResult};
#[cfg(feature = "replay")]
pub use replay_target::InProcessTarget;
pub use http::{RecordState, SyncError, router};
pub use models::{FieldKind, FieldSpec, ModelSpec, Schema};
pub use resolver::{ClientWins, ConflictResolver, MergeFields, PayloadMapper, Resolution, ServerRecord, ServerWins};

use crate::protocol::{PullRequest, PullResponse, PushRequest};

/// Where the server keeps its records.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// An in-memory SQLite database, gone when the last clone of the server is dropped.
    Memory,
    /// A SQLite file at this path (WAL journal); missing parent directories are created.
    File(PathBuf),
}

/// Request limits: bad input gets a clear 4xx, never unbounded work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most mutations in one push.
    pub max_batch: usize,
    /// How far ahead of the server clock a mutation timestamp may be, in milliseconds. A
    /// mutation further in the future is rejected `validation_failed`, so one device with a
    /// wrong clock cannot win every conflict against every other device.
    pub max_clock_ahead_ms: u64,
}

impl Limits {
    /// 16 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
    /// 10,000 mutations.
    pub const DEFAULT_MAX_BATCH: usize = 10_000;
    /// One hour: ordinary clock drift passes, a clock set years ahead does not.
    pub const DEFAULT_MAX_CLOCK_AHEAD_MS: u64 = 60 * 60 * 1000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_batch: Self::DEFAULT_MAX_BATCH,
            max_clock_ahead_ms: Self::DEFAULT_MAX_CLOCK_AHEAD_MS,
        }
    }
}

struct Inner {
    db: Mutex<db::Db>,
    schema: Schema,
    resolver: Box<dyn ConflictResolver>,
    mapper: Option<Box<dyn PayloadMapper>>,
    limits: Limits,
}

/// The reference server's state. Cheap to clone.
#[derive(Clone)]
pub struct SyncServer {
    inner: Arc<Inner>,
}

/// Builds a [`SyncServer`].
pub struct SyncServerBuilder {
    storage: Storage,
    schema: Schema,
    resolver: Box<dyn ConflictResolver>,
    mapper: Option<Box<dyn PayloadMapper>>,
    limits: Limits,
}

impl SyncServerBuilder {
    /// Where records are kept (default [`Storage::Memory`]).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
    /// The models and their field whitelist (default [`Schema::demo`]).
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }
    /// What happens on a conflict (default [`ServerWins`]).
    pub fn resolver(mut self, resolver: impl ConflictResolver) -> Self {
        self.resolver = Box::new(resolver);
        self
    }
    /// Rewrites every payload before the conflict check and validation (default: none).
    pub fn payload_mapper(mut self, mapper: impl PayloadMapper) -> Self {
        self.mapper = Some(Box::new(mapper));
        self
    }
    /// Request limits (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Opens the database and returns the server. Errors when a parent directory of a
    /// [`Storage::File`] cannot be created or SQLite cannot open the database.
    pub fn build(self) -> anyhow::Result<SyncServer> {
        let db = match &self.storage {
            Storage::Memory => db::Db::open_in_memory()?,
            Storage::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                db::Db::open(path)?
            }
        };
        Ok(SyncServer {
            inner: Arc::new(Inner {
                db: Mutex::new(db),
                schema: self.schema,
                resolver: self.resolver,
                mapper: self.mapper,
                limits: self.limits,
            }),
        })
    }
}

impl SyncServer {
    /// In-memory storage, the demo schema, server-wins conflicts, default limits.
    pub fn builder() -> SyncServerBuilder {
        SyncServerBuilder {
            storage: Storage::Memory,
            schema: Schema::demo(),
            resolver: Box::new(ServerWins),
            mapper: None,
            limits: Limits::default(),
        }
    }

    /// `builder().build()`: in-memory storage, demo schema, server-wins conflicts, default
    /// limits. Panics if SQLite cannot open an in-memory database.
    pub fn in_memory() -> SyncServer {
        SyncServer::builder().build().expect("an in-memory SQLite database opens")
    }

    /// The request limits the server was built with.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The models the server accepts.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// Applies a push batch (blocking: call it off the async executor).
    pub fn push_blocking(&self, req: &PushRequest) -> rusqlite::Result<PushResult> {
        let inner = &*self.inner;
        let rules = engine::Rules {
            schema: &inner.schema,
            resolver: inner.resolver.as_ref(),
            mapper: inner.mapper.as_deref(),
            max_clock_ahead_ms: inner.limits.max_clock_ahead_ms,
        };
        let mut db = inner.db.lock().unwrap_or_else(|p| p.into_inner());
        engine::push(&mut db, &rules, req)
    }

    /// Answers a pull (blocking: call it off the async executor).
    pub fn pull_blocking(&self, req: &PullRequest) -> rusqlite::Result<PullResponse> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        engine::pull(&db, req)
    }

    /// One record's current state, tombstones included (blocking).
    pub fn state_blocking(&self, model: &str, entity_id: &str) -> rusqlite::Result<Option<RecordState>> {
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner());
        Ok(db::load(&db.conn, model, entity_id)?.map(|r| RecordState {
            model: model.to_owned(),
            entity_id: entity_id.to_owned(),
            deleted: r.deleted_at_us.is_some(),
            version: r.version,
            updated_at: engine::rfc3339_from_us(r.updated_at_us),
            updated_at_us: r.updated_at_us,
            state: models::state_with_key(entity_id, &r.data),
        }))
    }
}
