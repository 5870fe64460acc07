//! Replay planning: what a captured push would do against today's state, and the clone that
//! would be sent. Pure logic; no I/O.
//!
//! Captured payloads are stored redacted, so a replay can never resend a secret. The pipeline
//! records which paths of each payload redaction changed; exactly those paths take the
//! record's current value instead (or are left out when the record has none), every other
//! value is resent as captured, and the preview names each substitution.

use serde::Serialize;
use serde_json::Value;

use crate::pipeline::diff::{self, Change};
use crate::pipeline::redact::{REDACTED, Redactor};
use crate::protocol::{Mutation, Object, Operation, SYNC_KEY};
use crate::protocol::RecordState;

/// One mutation of a captured push, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedMutation {
    /// The mutation's index in its push, from 0.
    pub position: u32,
    /// The original's mutation id.
    pub mutation_id: String,
    /// The record's entity id.
    pub entity_id: String,
    /// The record's model, e.g. `Task`.
    pub model: String,
    /// `create`, `update` or `delete` as stored (anything else is unreplayable).
    pub operation: String,
    /// `None` when the stored payload is not a JSON object (cut at the column cap), or was
    /// not kept (`payload_kept`).
    pub payload: Option<Object>,
    /// False when the capture policy (`capture.applied`) kept no payload for this mutation.
    pub payload_kept: bool,
    /// `None` when the captured timestamp was not valid epoch milliseconds (stored NULL).
    pub client_timestamp_ms: Option<i64>,
    /// The original's version (a clone carries the same).
    pub version: u64,
    /// What the host did with the original (`applied`, `duplicate`, ...).
    pub original_outcome: String,
    /// JSON Pointers into `payload` of the values redaction changed; `None` for rows stored
    /// before these were recorded (then they are inferred from the marker text, and the
    /// preview says so).
    pub redacted_paths: Option<Vec<String>>,
}

/// What the host would do with a clone, under the protocol's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "why")]
pub enum Prediction {
    /// Create of a record the host does not have.
    WouldCreate,
    /// Create of a record the host already has: the protocol's idempotent create overwrites
    /// its fields with the clone's payload (the reference server keeps the higher version).
    WouldOverwrite,
    /// Update/delete at or after the record's last write.
    WouldApply,
    /// Update/delete older than the record's last write: the server wins.
    Conflict,
    /// Update/delete of a record the host does not have (or has deleted).
    NotFound,
    /// Cannot be replayed (unknown operation, payload cut at the storage cap).
    Unreplayable(String),
}

/// The preview of one mutation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewEntry {
    /// The mutation's index in its push, from 0.
    pub position: u32,
    /// The original's mutation id (the clone gets a fresh one).
    pub original_mutation_id: String,
    /// The record's entity id.
    pub entity_id: String,
    /// The record's model, e.g. `Task`.
    pub model: String,
    /// `create`, `update` or `delete` as captured.
    pub operation: String,
    /// What the host did with the original when it was captured. A clone carries a fresh
    /// mutation id, so the host's duplicate rule never fires for it: an original `duplicate`
    /// shows here, not as a prediction.
    pub original_outcome: String,
    /// The record as the host has it now (`None`: never had it).
    pub current: Option<RecordState>,
    /// What the host would do with the clone.
    pub prediction: Prediction,
    /// The timestamp the clone would carry (milliseconds).
    pub timestamp_ms: i64,
    /// The payload the clone would carry.
    pub payload: Option<Object>,
    /// Current state -> the clone's payload.
    pub diff: Vec<Change>,
    /// Every captured value that cannot be resent (it was stored redacted) and what the clone
    /// carries instead.
    pub not_resendable: Vec<Substitution>,
    /// True when the paths in `not_resendable` were inferred from the marker text (rows
    /// stored before redacted paths were recorded): a value that merely contains the marker
    /// is counted as redacted.
    pub paths_inferred: bool,
}

/// A payload value that was stored redacted, and what a clone sends in its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Substitution {
    /// JSON Pointer (RFC 6901) into the payload.
    pub path: String,
    /// What the clone sends there instead.
    pub sent_instead: SentInstead,
}

/// What a clone sends in place of a value that cannot be resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SentInstead {
    /// The record's current value at that path.
    CurrentValue,
    /// Nothing: the key is left out (the record has no value there, or no record exists).
    LeftOut,
    /// `null` in an array slot (leaving it out would shift the elements after it).
    Null,
}

/// Paths of the values that hold the marker (rows stored before paths were recorded).
fn marker_paths(payload: &Object) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<(String, &Value)> = payload.iter().map(|(k, v)| (pointer_push("", k), v)).collect();
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::String(s) if s.contains(REDACTED) => out.push(path),
            Value::Array(a) => stack.extend(a.iter().enumerate().map(|(i, x)| (format!("{path}/{i}"), x))),
            Value::Object(o) => stack.extend(o.iter().map(|(k, x)| (pointer_push(&path, k), x))),
            _ => {}
        }
    }
    out.sort();
    out
}

fn pointer_push(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// The last token of a JSON Pointer, unescaped, and its parent pointer.
fn split_pointer(path: &str) -> Option<(&str, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((parent, last.replace("~1", "/").replace("~0", "~")))
}

/// The payload a clone sends: each redacted path takes the current value at that path, or is
/// left out when the record has none. Everything else is resent as captured. Paths below an
/// already substituted path are covered by it.
pub fn restore_redacted(payload: &Object, current: Option<&Object>, paths: &[String]) -> (Object, Vec<Substitution>) {
    let mut out = Value::Object(payload.clone());
    let current = current.map(|c| Value::Object(c.clone()));
    let mut paths: Vec<&String> = paths.iter().filter(|p| !p.is_empty()).collect();
    paths.sort();
    paths.dedup();
    let mut subs: Vec<Substitution> = Vec::new();
    for path in paths {
        if subs.iter().any(|s| path.starts_with(&s.path) && path[s.path.len()..].starts_with('/')) {
            continue;
        }
        if out.pointer(path).is_none() {
            continue;
        }
        let sent_instead = match current.as_ref().and_then(|c| c.pointer(path)) {
            Some(v) => {
                if let Some(slot) = out.pointer_mut(path) {
                    *slot = v.clone();
                }
                SentInstead::CurrentValue
            }
            None => {
                let Some((parent, last)) = split_pointer(path) else { continue };
                match out.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last);
                        SentInstead::LeftOut
                    }
                    Some(slot @ Value::Array(_)) => {
                        if let Some(x) = last.parse::<usize>().ok().and_then(|i| slot.get_mut(i)) {
                            *x = Value::Null;
                        }
                        SentInstead::Null
                    }
                    _ => continue,
                }
            }
        };
        subs.push(Substitution { path: path.clone(), sent_instead });
    }
    let Value::Object(out) = out else { unreachable!("the payload stays an object") };
    (out, subs)
}

/// An entry as the dashboard may show it: the host's current state, the clone's payload (with
/// the current values it restores) and the diff pass the same redaction as captured data.
pub fn redacted_for_display(mut e: PreviewEntry, r: &Redactor) -> PreviewEntry {
    if let Some(c) = e.current.as_mut() {
        let mut state = Value::Object(std::mem::take(&mut c.state));
        r.redact_value(&mut state);
        if let Value::Object(o) = state {
            c.state = o;
        }
    }
    if let Some(p) = e.payload.take() {
        let mut payload = Value::Object(p);
        for s in e.not_resendable.iter().filter(|s| s.sent_instead == SentInstead::CurrentValue) {
            if let Some(slot) = payload.pointer_mut(&s.path) {
                *slot = Value::String(REDACTED.to_owned());
            }
        }
        r.redact_value(&mut payload);
        if let Value::Object(o) = payload {
            e.payload = Some(o);
        }
    }
    diff::redact_changes(&mut e.diff, r);
    e
}

fn without_key(o: &Object) -> Value {
    let mut o = o.clone();
    o.remove(SYNC_KEY);
    Value::Object(o)
}

/// Predicts one mutation against the host's current state.
pub fn preview(m: &CapturedMutation, current: Option<RecordState>, restamp_ms: Option<i64>) -> PreviewEntry {
    // A captured timestamp that was not valid cannot be resent as it was; restamped, it can.
    let timestamp = restamp_ms.or(m.client_timestamp_ms);
    let timestamp_ms = timestamp.unwrap_or(0);
    let live = current.as_ref().filter(|c| !c.deleted);
    let op = match m.operation.as_str() {
        "create" => Some(Operation::Create),
        "update" => Some(Operation::Update),
        "delete" => Some(Operation::Delete),
        _ => None,
    };
    let paths_inferred = m.redacted_paths.is_none();
    let (payload, not_resendable) = match (&m.payload, op) {
        (_, Some(Operation::Delete)) => (Some(Object::new()), Vec::new()),
        (Some(p), _) => {
            let paths = m.redacted_paths.clone().unwrap_or_else(|| marker_paths(p));
            let (p, subs) = restore_redacted(p, live.map(|c| &c.state), &paths);
            (Some(p), subs)
        }
        (None, _) => (None, Vec::new()),
    };
    let prediction = match (op, &payload) {
        (None, _) => Prediction::Unreplayable(format!("unknown operation {:?}", m.operation)),
        _ if timestamp.is_none() => Prediction::Unreplayable("the captured timestamp was not valid epoch milliseconds: preview restamped to replay it".into()),
        (_, None) if !m.payload_kept => {
            Prediction::Unreplayable("its payload was not kept (capture.applied = sampled or counts captures applied mutations without it)".into())
        }
        (_, None) => Prediction::Unreplayable("the stored payload was cut at the storage cap".into()),
        (Some(Operation::Create), _) => if live.is_some() { Prediction::WouldOverwrite } else { Prediction::WouldCreate },
        (Some(_), _) => match live {
            None => Prediction::NotFound,
            Some(c) if timestamp_ms.saturating_mul(1000) < c.updated_at_us => Prediction::Conflict,
            Some(_) => Prediction::WouldApply,
        },
    };
    let empty = Value::Object(Object::new());
    let before = live.map(|c| without_key(&c.state)).unwrap_or_else(|| empty.clone());
    let after = match (op, &payload) {
        (Some(Operation::Delete), _) => empty,
        (_, Some(p)) => Value::Object(p.clone()),
        (_, None) => before.clone(),
    };
    PreviewEntry {
        position: m.position,
        original_mutation_id: m.mutation_id.clone(),
        entity_id: m.entity_id.clone(),
        model: m.model.clone(),
        operation: m.operation.clone(),
        original_outcome: m.original_outcome.clone(),
        diff: diff::diff(&before, &after),
        current,
        prediction,
        timestamp_ms,
        payload,
        not_resendable,
        paths_inferred,
    }
}

/// A clone of one mutation: `mutation_id` (see `replay::ids`), the original's entity, model,
/// operation and version, the preview's payload and timestamp.
pub fn clone_mutation(p: &PreviewEntry, version: u64, mutation_id: String) -> Option<Mutation> {
    if matches!(p.prediction, Prediction::Unreplayable(_)) {
        return None;
    }
    let operation = match p.operation.as_str() {
        "create" => Operation::Create,
        "update" => Operation::Update,
        _ => Operation::Delete,
    };
    Some(Mutation {
        mutation_id,
        entity_id: p.entity_id.clone(),
        model: p.model.clone(),
        operation,
        payload: p.payload.clone().unwrap_or_default(),
        version,
        timestamp: p.timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    fn state(updated_at_us: i64, deleted: bool, fields: Value) -> RecordState {
        RecordState {
            model: "Task".into(),
            entity_id: "E".into(),
            deleted,
            version: 1,
            updated_at: String::new(),
            updated_at_us,
            state: obj(fields),
        }
    }

    fn captured(op: &str, ts: i64, payload: Option<Value>) -> CapturedMutation {
        CapturedMutation {
            payload_kept: true,
            position: 0,
            mutation_id: "M".into(),
            entity_id: "E".into(),
            model: "Task".into(),
            operation: op.into(),
            payload: payload.map(obj),
            client_timestamp_ms: Some(ts),
            version: 2,
            original_outcome: "applied".into(),
            redacted_paths: Some(Vec::new()),
        }
    }

    #[test]
    fn predicts_like_the_host_would() {
        let p = json!({"title": "x"});
        assert_eq!(preview(&captured("create", 5, Some(p.clone())), None, None).prediction, Prediction::WouldCreate);
        assert_eq!(preview(&captured("create", 5, Some(p.clone())), Some(state(9_000, false, json!({}))), None).prediction, Prediction::WouldOverwrite);
        assert_eq!(preview(&captured("create", 5, Some(p.clone())), Some(state(9_000, true, json!({}))), None).prediction, Prediction::WouldCreate, "over a deleted record");
        assert_eq!(preview(&captured("update", 5, Some(p.clone())), None, None).prediction, Prediction::NotFound);
        assert_eq!(preview(&captured("update", 5, Some(p.clone())), Some(state(1, true, json!({}))), None).prediction, Prediction::NotFound);
        assert_eq!(preview(&captured("update", 5, Some(p.clone())), Some(state(9_000, false, json!({}))), None).prediction, Prediction::Conflict);
        assert_eq!(preview(&captured("update", 9, Some(p.clone())), Some(state(9_000, false, json!({}))), None).prediction, Prediction::WouldApply);
        assert_eq!(preview(&captured("delete", 5, None), Some(state(9_000, false, json!({}))), Some(10)).prediction, Prediction::WouldApply, "restamped");
        assert!(matches!(preview(&captured("update", 9, None), Some(state(1, false, json!({}))), None).prediction, Prediction::Unreplayable(_)));
        assert!(matches!(preview(&captured("upsert", 9, Some(p.clone())), None, None).prediction, Prediction::Unreplayable(_)));
        let mut invalid = captured("create", 9, Some(p));
        invalid.client_timestamp_ms = None;
        assert!(matches!(preview(&invalid, None, None).prediction, Prediction::Unreplayable(ref why) if why.contains("timestamp")), "an invalid timestamp is not resent as 0");
        assert_eq!(preview(&invalid, None, Some(77)).prediction, Prediction::WouldCreate, "restamped, it can be");
    }

    fn with_paths(mut m: CapturedMutation, paths: &[&str]) -> CapturedMutation {
        m.redacted_paths = Some(paths.iter().map(|p| p.to_string()).collect());
        m
    }

    #[test]
    fn only_the_recorded_paths_take_the_current_value_or_are_left_out() {
        let current = state(1, false, json!({"tether_id": "E", "title": "now", "api_key": "live-secret-now", "meta": {"token": "tok-now", "color": "blue"}}));
        let m = with_paths(
            captured("update", 9, Some(json!({"title": "then", "api_key": "[REDACTED]", "meta": {"token": "[REDACTED]", "color": "red"}, "note": "[REDACTED] typed by the user"}))),
            &["/api_key", "/meta/token"],
        );
        let p = preview(&m, Some(current), None);
        // The captured "red" is resent although the record is "blue" now; the literal marker
        // the user typed is not a redaction and is resent as it was.
        assert_eq!(
            Value::Object(p.payload.clone().unwrap()),
            json!({"title": "then", "api_key": "live-secret-now", "meta": {"token": "tok-now", "color": "red"}, "note": "[REDACTED] typed by the user"})
        );
        assert_eq!(
            serde_json::to_value(&p.not_resendable).unwrap(),
            json!([{"path": "/api_key", "sent_instead": "current_value"}, {"path": "/meta/token", "sent_instead": "current_value"}])
        );
        assert!(!p.paths_inferred);
        let changed: Vec<String> = p.diff.iter().map(|c| serde_json::to_string(&c.path).unwrap()).collect();
        assert_eq!(changed, [r#"["meta","color"]"#, r#"["note"]"#, r#"["title"]"#]);
    }

    #[test]
    fn a_redacted_value_without_a_current_one_is_left_out_and_named() {
        let m = with_paths(captured("create", 9, Some(json!({"title": "t", "password": "[REDACTED]", "tags": ["a", "Bearer [REDACTED]"]}))), &["/password", "/tags/1"]);
        let p = preview(&m, None, None);
        assert_eq!(Value::Object(p.payload.unwrap()), json!({"title": "t", "tags": ["a", null]}));
        assert_eq!(
            serde_json::to_value(&p.not_resendable).unwrap(),
            json!([{"path": "/password", "sent_instead": "left_out"}, {"path": "/tags/1", "sent_instead": "null"}])
        );
    }

    #[test]
    fn rows_stored_before_paths_were_recorded_infer_them_and_say_so() {
        let mut m = captured("update", 9, Some(json!({"title": "then", "meta": {"token": "[REDACTED]", "color": "red"}})));
        m.redacted_paths = None;
        let p = preview(&m, Some(state(1, false, json!({"meta": {"token": "t-now", "color": "blue"}}))), None);
        assert!(p.paths_inferred);
        assert_eq!(Value::Object(p.payload.unwrap()), json!({"title": "then", "meta": {"token": "t-now", "color": "red"}}));
    }

    #[test]
    fn what_the_dashboard_shows_is_redacted() {
        let current = state(1, false, json!({"tether_id": "E", "title": "now", "metadata": {"token": "FAKE-C", "color": "red"}, "notes": "Bearer live_7c9d2e1f"}));
        let m = with_paths(captured("create", 9, Some(json!({"title": "t", "metadata": {"token": "[REDACTED]", "color": "red"}}))), &["/metadata/token"]);
        let raw = preview(&m, Some(current), None);
        assert_eq!(raw.payload.as_ref().unwrap()["metadata"]["token"], json!("FAKE-C"), "the clone sends the live value");
        let shown = redacted_for_display(raw, &Redactor::default());
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("FAKE-C") && !text.contains("live_7c9d2e1f"), "{text}");
        assert_eq!(shown.payload.unwrap()["metadata"], json!({"token": "[REDACTED]", "color": "red"}));
        assert_eq!(shown.prediction, Prediction::WouldOverwrite);
    }

    #[test]
    fn clones_take_the_given_id_and_keep_the_rest() {
        let p = preview(&captured("update", 9, Some(json!({"title": "t"}))), Some(state(1, false, json!({}))), None);
        let a = clone_mutation(&p, 2, "01JM0000000000000000000C01".into()).unwrap();
        assert_eq!(a.mutation_id, "01JM0000000000000000000C01");
        assert_eq!((a.entity_id.as_str(), a.timestamp, a.operation, a.version), ("E", 9, Operation::Update, 2));
        assert_eq!(a.payload, obj(json!({"title": "t"})));
    }
}
