//! Each payload stored once (issue 15). A push body is mostly its mutations' payloads, which
//! every mutation row holds anyway; the request row keeps the body's *envelope* (client id,
//! every mutation's ids, model, operation, version, timestamp, anything else the client
//! sent) with those payloads taken out, and lists their positions in `request_body_moved`.
//! [`rebuild`] puts them back for display: the stored body plus the rows gives the same JSON
//! as storing the whole body did (keys are sorted either way).
//!
//! A payload stays in the envelope when it is not an object (the mutation row stores `{}`
//! for those) or when its text is longer than the column cap (the row's copy is cut, so it
//! could not be put back). A body that did not parse whole is stored as it came, and so is
//! one whose envelope alone is past the cap (stored cut, with its payloads, as before).

use serde_json::Value;

pub use crate::store::rows::MovedPayload;
use crate::store::rows::MutationRow;

/// Stands in for a payload the capture policy did not keep, in a rebuilt body.
pub const NOT_KEPT: &str = "[not kept: capture.applied]";

fn mutation_list(body: &mut Value) -> Option<&mut Vec<Value>> {
    body.get_mut("mutations").and_then(Value::as_array_mut)
}

/// Removes the payloads of the mutations `drop` says (in body order) and returns their
/// positions. Run before redaction: what is not kept is not walked.
pub fn drop_payloads(body: &mut Value, drop: impl Iterator<Item = bool>) -> Vec<u32> {
    let Some(list) = mutation_list(body) else { return Vec::new() };
    let mut dropped = Vec::new();
    for (position, (m, drop)) in list.iter_mut().zip(drop).enumerate() {
        if drop && let Some(payload) = m.as_object_mut().and_then(|o| o.remove("payload")) {
            super::redact::drop_deep(payload);
            dropped.push(position as u32);
        }
    }
    dropped
}

/// Fills each row's `payload` from the (redacted) body and takes out of the body every
/// object payload whose text fits in `cap`; returns their positions. Rows whose payload was
/// dropped by [`drop_payloads`] keep an empty `payload`.
pub fn move_payloads(body: &mut Value, rows: &mut [MutationRow], cap: usize) -> Vec<u32> {
    let Some(list) = mutation_list(body) else { return Vec::new() };
    let mut moved = Vec::new();
    for (position, (m, row)) in list.iter_mut().zip(rows.iter_mut()).enumerate() {
        if !row.detail_kept {
            continue;
        }
        let Some(fields) = m.as_object_mut() else {
            row.payload = "{}".to_owned();
            continue;
        };
        match fields.get("payload") {
            Some(p) if p.is_object() => {
                let text = serde_json::to_string(p).unwrap_or_default();
                if text.len() <= cap {
                    row.payload = text;
                    if let Some(p) = fields.remove("payload") {
                        super::redact::drop_deep(p);
                    }
                    moved.push(position as u32);
                } else {
                    let len = text.len() as u64;
                    row.payload = super::rows::cap_text(text, cap, len).0;
                }
            }
            _ => row.payload = "{}".to_owned(),
        }
    }
    moved
}

/// Puts the moved payloads back into the (redacted) body from the rows: for a body that must
/// be stored whole after all (its envelope alone is past the cap).
pub fn restore_payloads(body: &mut Value, moved: &[u32], rows: &[MutationRow]) {
    let Some(list) = mutation_list(body) else { return };
    for row in rows.iter().filter(|r| moved.contains(&r.position)) {
        if let Some(fields) = list.get_mut(row.position as usize).and_then(Value::as_object_mut) {
            fields.insert("payload".to_owned(), payload_value(&row.payload, row.detail_kept));
        }
    }
}

/// A payload as shown in a rebuilt body: its JSON, or the marker when it was not kept.
fn payload_value(payload: &str, detail_kept: bool) -> Value {
    if detail_kept {
        serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_owned()))
    } else {
        Value::String(NOT_KEPT.to_owned())
    }
}

/// The body as captured (redacted), from its stored envelope and the moved payloads. An
/// envelope that is not JSON (a body cut at the cap) is returned as it is.
pub fn rebuild(envelope: &str, moved: &[u32], payloads: &[MovedPayload]) -> String {
    if moved.is_empty() {
        return envelope.to_owned();
    }
    let Ok(mut body) = serde_json::from_str::<Value>(envelope) else { return envelope.to_owned() };
    if let Some(list) = mutation_list(&mut body) {
        for &position in moved {
            let Some(fields) = list.get_mut(position as usize).and_then(Value::as_object_mut) else { continue };
            let found = payloads.iter().find(|p| p.position == position);
            let payload = match found {
                Some(p) => payload_value(&p.payload, p.detail_kept),
                None => Value::String("[missing: the mutation row was not found]".to_owned()),
            };
            fields.insert("payload".to_owned(), payload);
        }
    }
    serde_json::to_string(&body).unwrap_or_else(|_| envelope.to_owned())
}
