//! The owned record that crosses from the host's request thread to the pipeline. It holds
//! nothing borrowed from tracing or the request: bodies are reference-counted `Bytes`
//! chunks handed over without copying.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::protocol::Object;

pub use crate::store::schema::RequestKind;

/// A body as it streamed past: the first `retain cap` bytes, and the true size.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    /// The retained bytes, as the chunks that streamed past (shared handles, not copies).
    pub chunks: Vec<Bytes>,
    /// Bytes kept in `chunks`.
    pub retained: usize,
    /// Bytes that streamed past in all.
    pub total: u64,
    /// The body ended normally (false: cut short, errored, or never read to the end).
    pub complete: bool,
    /// The `Content-Encoding` header as sent (`""`: none). The bytes are kept as they
    /// streamed; the pipeline decodes them.
    pub content_encoding: String,
    /// The `Content-Length` header, when there was one.
    pub declared_length: Option<u64>,
}

impl CapturedBody {
    /// The retained bytes as one contiguous buffer (zero-copy for a single chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut v = Vec::with_capacity(self.retained);
                for c in many {
                    v.extend_from_slice(c);
                }
                Bytes::from(v)
            }
        }
    }

    /// Every byte of the body was retained.
    pub fn is_whole(&self) -> bool {
        self.retained as u64 == self.total && !self.is_incomplete()
    }

    /// The body did not arrive whole: its stream failed or ended early (the client went
    /// away), it was never read to the end, or fewer bytes came than `Content-Length` said.
    /// (Only fewer bytes count: a layer inside the capture layer that rewrites the body, say a
    /// decompression layer, may leave a stale, smaller `Content-Length`.)
    pub fn is_incomplete(&self) -> bool {
        !self.complete || self.declared_length.is_some_and(|n| self.total < n)
    }
}

/// A record state as a host reported it: a JSON object, or its JSON text (cheaper on the
/// host's thread: one string instead of a tree; parsed by the pipeline).
#[derive(Debug, Clone, PartialEq)]
pub enum StateValue {
    /// A JSON object.
    Object(Object),
    /// The JSON text of an object, parsed by the pipeline.
    Json(String),
}

/// Before/after state a host reported for one mutation.
#[derive(Debug, Clone, Default)]
pub struct MutationState {
    /// The mutation's `mutation_id`, capped to `MAX_IDENTIFIER_BYTES`.
    pub mutation_id: String,
    /// The record's state before the mutation (`None` for a create, or when not reported).
    pub before: Option<StateValue>,
    /// Its state after (`None` for a delete, or when not reported).
    pub after: Option<StateValue>,
}

/// Everything captured about one push or pull.
#[derive(Debug, Clone)]
pub struct CaptureRecord {
    /// ULID minted when the request arrived (also `RequestId` in the request's extensions).
    pub request_id: String,
    /// Push or pull, from the request path.
    pub kind: RequestKind,
    /// Arrival time.
    pub started_at: DateTime<Utc>,
    /// From arrival until the capture span closed (the response body finished or was dropped).
    pub duration: Duration,
    /// 0 when the host produced no response (its service failed).
    pub http_status: u16,
    /// The `X-Tether-Client-Version` header (`""`: absent), capped to `MAX_IDENTIFIER_BYTES`;
    /// not yet redacted.
    pub client_version: String,
    /// The request body as it streamed past (up to `capture.retain_bytes` retained).
    pub request_body: CapturedBody,
    /// The response body as it streamed past (up to `capture.retain_bytes` retained).
    pub response_body: CapturedBody,
    /// Before/after states the host reported, in the order reported.
    pub states: Vec<MutationState>,
    /// W3C ids of the request's server span (minted on arrival; hex).
    pub trace_id: String,
    /// The server span's id (16 hex digits).
    pub span_id: String,
    /// The caller's span from an incoming `traceparent`, if any.
    pub parent: Option<opentelemetry::trace::SpanContext>,
    /// The request path as received (e.g. `/api/tether/push`).
    pub path: String,
    /// The `X-Tether-Replay-Of` header: the original `request_id` when this push is a replay
    /// (`""`: not one), capped to `MAX_IDENTIFIER_BYTES`.
    pub replay_of: String,
    /// Transport-level failure (the host's service errored, or a body stream failed).
    pub error: Option<String>,
    /// The client went away before it had the whole response: the host's future was dropped
    /// before it answered, or the response body stopped streaming before its end.
    pub client_gone: bool,
}

impl CaptureRecord {
    /// What this record holds in memory, for the queue's byte cap. States are estimated.
    pub fn approx_bytes(&self) -> usize {
        approx_bytes(self.request_body.retained, self.response_body.retained, self.states.len())
    }
}

/// The queue's byte estimate, computable before the record is built (reservation and
/// release must agree).
pub fn approx_bytes(request_body: usize, response_body: usize, states: usize) -> usize {
    256 + request_body + response_body + states * 512
}
