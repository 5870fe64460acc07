//! Capture: the tower layer (`CaptureLayer`) and the `tracing` layer (`SyncLayer`) that record
//! every push and pull, and the bounded queue between them and the pipeline.
//!
//! The hot path (the host's request thread) only copies chunk handles, reserves a queue slot
//! and returns: no parsing, redaction, I/O, locks held across awaits, or unbounded growth.

mod http;
pub(crate) mod ids;
mod layer;
pub(crate) mod queue;
mod record;

use std::borrow::Cow;
use std::sync::Arc;

pub use self::http::{CaptureLayer, CaptureLimits, CaptureService, TeeBody};
pub use layer::{CaptureInterest, SyncLayer};
pub use queue::{CaptureQueue, CaptureStats, CaptureTotals, DROP_REASONS};
pub use record::{CaptureRecord, CapturedBody, MutationState, RequestKind, StateValue};

use crate::protocol::Object;

/// Target of the capture spans (filter on it to see them in logs).
pub const CAPTURE_TARGET: &str = "tether_pro::capture";
/// Target of the per-mutation events emitted by [`record_mutation_state`].
pub const MUTATION_TARGET: &str = "tether_pro::mutation";
/// Span name of a captured push.
pub const SPAN_PUSH: &str = "tether.push";
/// Span name of a captured pull.
pub const SPAN_PULL: &str = "tether.pull";
/// Span field: the request id minted by tether-pro.
pub const FIELD_REQUEST_ID: &str = "tether.request_id";
/// Span field: the `X-Tether-Client-Version` header.
pub const FIELD_CLIENT_VERSION: &str = "tether.client_version";
/// Span field: the HTTP status of the host's response.
pub const FIELD_STATUS: &str = "http.response.status_code";
/// Event field: the mutation id of a per-mutation event.
pub const FIELD_MUTATION_ID: &str = "tether.mutation_id";
/// Request header naming the original request of a replayed push.
pub const REPLAY_OF_HEADER: &str = "x-tether-replay-of";

/// Longest identifier-like value kept, in bytes: client id, client version, model, operation,
/// entity and mutation ids, reasons, the replay-of header. A client can send a megabyte where
/// an id belongs; without a cap it would be copied into every row, aggregate and span.
pub const MAX_IDENTIFIER_BYTES: usize = 256;

/// `s` cut to [`MAX_IDENTIFIER_BYTES`] on a character boundary, with a marker naming its true
/// length (`…[truncated: 1000000 bytes in all]`); borrowed when it fits. Idempotent: an id
/// capped on the request thread and capped again in the pipeline stays the same, so the two
/// still match.
pub fn cap_identifier(s: &str) -> Cow<'_, str> {
    const MARKER: &str = "…[truncated: ";
    if s.len() <= MAX_IDENTIFIER_BYTES {
        return Cow::Borrowed(s);
    }
    if let Some(at) = s.find(MARKER)
        && at <= MAX_IDENTIFIER_BYTES
        && s.len() - at <= MARKER.len() + 40
        && s.ends_with(" bytes in all]")
    {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_IDENTIFIER_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[truncated: {} bytes in all]", &s[..end], s.len()))
}

/// The request id tether-pro minted, in the request's extensions for the host's handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Arc<str>);

/// Reports one mutation's record state before and after the host processed it, from inside
/// the push handler (the current span is the capture span or one of its children).
///
/// Create: `before` is `None`. Delete: `after` is `None`. Conflict: the server state as both.
/// The state is attached to the capture span out of band (never as a tracing field, so log
/// formatters and OTLP exporters never see it); the event emitted alongside carries only the
/// mutation id. Without a `SyncLayer` installed this does almost nothing.
pub fn record_mutation_state(mutation_id: &str, before: Option<Object>, after: Option<Object>) {
    attach_state(mutation_id, before.map(StateValue::Object), after.map(StateValue::Object));
}

/// Like [`record_mutation_state`], with each state as JSON object text (e.g. the column your
/// database already returned). Cheapest on the request thread: no tree is built or copied;
/// the pipeline parses it. The sync key (`tether_id`) is added from the mutation's entity id
/// when the text lacks it.
pub fn record_mutation_state_json(mutation_id: &str, before: Option<String>, after: Option<String>) {
    attach_state(mutation_id, before.map(StateValue::Json), after.map(StateValue::Json));
}

/// Like [`record_mutation_state_json`] for a whole batch at once: one span lookup instead of
/// one per mutation (what the reference server uses). Items are `(mutation_id, before, after)`.
pub fn record_mutation_states_json(states: impl IntoIterator<Item = (String, Option<String>, Option<String>)>) {
    record_mutation_states_json_in(&tracing::Span::current(), states);
}

/// Like [`record_mutation_states_json`], onto the capture data of `span` (the request's span
/// or a child of it) instead of the current span: for work that runs elsewhere, e.g. in
/// `spawn_blocking`, which can then report its states even when the client has gone and the
/// request future was dropped (hold the span in the task).
pub fn record_mutation_states_json_in(span: &tracing::Span, states: impl IntoIterator<Item = (String, Option<String>, Option<String>)>) {
    let mut batch = Some(states.into_iter());
    layer::with_request_data(span, &mut |d| {
        if let Some(items) = batch.take() {
            d.states.extend(items.map(|(mutation_id, before, after)| MutationState {
                mutation_id: match cap_identifier(&mutation_id) {
                    Cow::Borrowed(_) => mutation_id,
                    Cow::Owned(capped) => capped,
                },
                before: before.map(StateValue::Json),
                after: after.map(StateValue::Json),
            }));
        }
    });
}

fn attach_state(mutation_id: &str, before: Option<StateValue>, after: Option<StateValue>) {
    let span = tracing::Span::current();
    let mut state = Some(MutationState { mutation_id: cap_identifier(mutation_id).into_owned(), before, after });
    layer::with_request_data(&span, &mut |d| {
        if let Some(s) = state.take() {
            d.states.push(s);
        }
    });
    tracing::event!(target: MUTATION_TARGET, tracing::Level::DEBUG, { tether.mutation_id = mutation_id }, "mutation state recorded");
}
