//! Conflict resolution and payload mapping: the two places a host customises processing.

use crate::protocol::{Mutation, Object};

/// What the server knows about a record when a mutation conflicts with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRecord {
    /// Stored fields, without the sync key.
    pub data: Object,
    /// The record's per-entity version (the highest applied).
    pub version: u64,
    /// Microseconds since the epoch: the time of the write that produced this state.
    pub updated_at_us: i64,
}

/// The outcome of a conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Do not apply; answer with the server state (the protocol's default).
    ServerWins,
    /// Apply this payload instead (the client's, or a merge). Validated like any write.
    Apply(Object),
}

/// Decides what happens when a non-create mutation is older than the record it targets.
pub trait ConflictResolver: Send + Sync + 'static {
    /// Resolves `mutation` (its payload already mapped) against the stored `server` record.
    fn resolve(&self, mutation: &Mutation, server: &ServerRecord) -> Resolution;
}

/// The default: the server wins and the client receives the current state.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerWins;

impl ConflictResolver for ServerWins {
    fn resolve(&self, _: &Mutation, _: &ServerRecord) -> Resolution {
        Resolution::ServerWins
    }
}

/// The client's payload is applied as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientWins;

impl ConflictResolver for ClientWins {
    fn resolve(&self, mutation: &Mutation, _: &ServerRecord) -> Resolution {
        Resolution::Apply(mutation.payload.clone())
    }
}

/// Field-wise merge: the server state with the client's fields laid over it.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeFields;

impl ConflictResolver for MergeFields {
    fn resolve(&self, mutation: &Mutation, server: &ServerRecord) -> Resolution {
        let mut merged = server.data.clone();
        for (k, v) in &mutation.payload {
            merged.insert(k.clone(), v.clone());
        }
        Resolution::Apply(merged)
    }
}

/// Rewrites a payload before it is checked and applied (e.g. stamps the authenticated user).
pub trait PayloadMapper: Send + Sync + 'static {
    /// The payload to process for `mutation`, pushed by `client_id`; `payload` is the one sent.
    fn map(&self, client_id: &str, mutation: &Mutation, payload: Object) -> Object;
}

impl<F> PayloadMapper for F
where
    F: Fn(&str, &Mutation, Object) -> Object + Send + Sync + 'static,
{
    fn map(&self, client_id: &str, mutation: &Mutation, payload: Object) -> Object {
        self(client_id, mutation, payload)
    }
}
