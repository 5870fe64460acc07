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

use super::json::{Items, Json, Text};
use super::redact::{Redactor, json_pointer};
pub use crate::store::rows::MovedPayload;
use crate::store::rows::MutationRow;

/// Stands in for a payload the capture policy did not keep, in a rebuilt body.
pub const NOT_KEPT: &str = "[not kept: capture.applied]";

fn mutation_list<'b, 'a>(body: &'b mut Json<'a>) -> Option<&'b mut Items<'a>> {
    let Json::Object(entries) = body else { return None };
    let i = entries.binary_search_by(|(k, _)| k.as_str().cmp("mutations")).ok()?;
    entries[i].1.as_array_mut()
}

/// A payload taken out of the envelope, kept to be put back if the body must be stored whole.
pub(crate) struct Taken<'a> {
    position: u32,
    /// `None`: not kept by the capture policy.
    payload: Option<Json<'a>>,
}

/// The positions of taken payloads.
pub(crate) fn positions(taken: &[Taken<'_>]) -> Vec<u32> {
    let mut p: Vec<u32> = taken.iter().map(|t| t.position).collect();
    p.sort_unstable();
    p
}

/// Removes the payloads of the mutations `drop` says (in body order).
pub(crate) fn drop_payloads<'a>(body: &mut Json<'a>, drop: impl Iterator<Item = bool>) -> Vec<Taken<'a>> {
    let Some(list) = mutation_list(body) else { return Vec::new() };
    let mut dropped = Vec::new();
    for (position, (m, drop)) in list.iter_mut().zip(drop).enumerate() {
        if drop && m.remove("payload").is_some() {
            dropped.push(Taken { position: position as u32, payload: None });
        }
    }
    dropped
}

/// Fills each kept row's `payload` (and `redacted_paths`) with its payload written redacted,
/// and takes out of the body every object payload whose text fits in `cap`. Rows whose
/// payload was dropped by [`drop_payloads`] keep an empty `payload`.
pub(crate) fn move_payloads<'a>(body: &mut Json<'a>, rows: &mut [MutationRow], redactor: &Redactor, cap: usize) -> Vec<Taken<'a>> {
    // A sensitive `mutations` key hides the whole list (nothing is written per row), a
    // sensitive `payload` key every payload (each row says `{}`), as in the redacted body.
    if redactor.is_sensitive("mutations") {
        return Vec::new();
    }
    let hidden = redactor.is_sensitive("payload");
    let Some(list) = mutation_list(body) else { return Vec::new() };
    let mut moved = Vec::new();
    for (position, (m, row)) in list.iter_mut().zip(rows.iter_mut()).enumerate() {
        if !row.detail_kept {
            continue;
        }
        match m.get("payload") {
            Some(p) if p.is_object() && !hidden => {
                let text = super::json::written(|out| {
                    redactor.write_redacted_recording(p, out, &mut |path| row.redacted_paths.push(json_pointer(path)));
                });
                row.redacted_paths.sort_unstable();
                if text.len() <= cap {
                    row.payload = text;
                    moved.push(Taken { position: position as u32, payload: m.remove("payload") });
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

/// Puts taken payloads back into the body (for a body that must be stored whole after all:
/// its envelope alone is past the cap); a payload not kept shows as [`NOT_KEPT`].
pub(crate) fn restore_payloads<'a>(body: &mut Json<'a>, taken: Vec<Taken<'a>>) {
    let Some(list) = mutation_list(body) else { return };
    for t in taken {
        if let Some(m) = list.get_mut(t.position as usize) {
            m.insert(Text::Plain("payload"), t.payload.unwrap_or(Json::String(Text::Plain(NOT_KEPT))));
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
    if let Some(list) = body.get_mut("mutations").and_then(Value::as_array_mut) {
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
