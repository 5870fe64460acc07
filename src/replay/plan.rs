//! Replay planning: what a captured push would do against today's state, and the clone that
//! would be sent. Pure logic; no I/O.
//!
//! Captured payloads are stored redacted, so a replay can never resend a secret: a top-level
//! field whose value holds the redaction marker takes the record's current value instead (or
//! is left out when there is no record), and the preview lists those fields.

use serde::Serialize;
use serde_json::Value;

use crate::pipeline::diff::{self, Change};
use crate::pipeline::redact::REDACTED;
use crate::protocol::{Mutation, Object, Operation, SYNC_KEY};
use crate::sync::RecordState;

/// One mutation of a captured push, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedMutation {
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    /// `None` when the stored payload is not a JSON object (cut at the column cap).
    pub payload: Option<Object>,
    pub client_timestamp_ms: i64,
    pub version: u64,
    /// What the host did with the original (`applied`, `duplicate`, ...).
    pub original_outcome: String,
}

/// What the host would do with a clone, under the protocol's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "why")]
pub enum Prediction {
    /// Create of a record the host does not have.
    WouldCreate,
    /// Create of an existing record (idempotent create updates it), or an update/delete at or
    /// after the record's last write.
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
    pub position: u32,
    pub original_mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    /// What the host did with the original when it was captured. A clone carries a fresh
    /// mutation id, so the host's duplicate rule never fires for it: an original `duplicate`
    /// shows here, not as a prediction.
    pub original_outcome: String,
    /// The record as the host has it now (`None`: never had it).
    pub current: Option<RecordState>,
    pub prediction: Prediction,
    /// The timestamp the clone would carry (milliseconds).
    pub timestamp_ms: i64,
    /// The payload the clone would carry.
    pub payload: Option<Object>,
    /// Current state -> the clone's payload.
    pub diff: Vec<Change>,
    /// Top-level fields that were redacted when captured (they take the current value).
    pub redacted_fields: Vec<String>,
}

fn contains_marker(v: &Value) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s == REDACTED => return true,
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    false
}

/// The payload a clone sends: redacted fields replaced by the current value, or left out.
pub fn restore_redacted(payload: &Object, current: Option<&Object>) -> (Object, Vec<String>) {
    let mut out = Object::new();
    let mut fields = Vec::new();
    for (k, v) in payload {
        if contains_marker(v) {
            fields.push(k.clone());
            if let Some(cur) = current.and_then(|c| c.get(k)) {
                out.insert(k.clone(), cur.clone());
            }
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    (out, fields)
}

fn without_key(o: &Object) -> Value {
    let mut o = o.clone();
    o.remove(SYNC_KEY);
    Value::Object(o)
}

/// Predicts one mutation against the host's current state.
pub fn preview(m: &CapturedMutation, current: Option<RecordState>, restamp_ms: Option<i64>) -> PreviewEntry {
    let timestamp_ms = restamp_ms.unwrap_or(m.client_timestamp_ms);
    let live = current.as_ref().filter(|c| !c.deleted);
    let op = match m.operation.as_str() {
        "create" => Some(Operation::Create),
        "update" => Some(Operation::Update),
        "delete" => Some(Operation::Delete),
        _ => None,
    };
    let (payload, redacted_fields) = match (&m.payload, op) {
        (_, Some(Operation::Delete)) => (Some(Object::new()), Vec::new()),
        (Some(p), _) => {
            let (p, f) = restore_redacted(p, live.map(|c| &c.state));
            (Some(p), f)
        }
        (None, _) => (None, Vec::new()),
    };
    let prediction = match (op, &payload) {
        (None, _) => Prediction::Unreplayable(format!("unknown operation {:?}", m.operation)),
        (_, None) => Prediction::Unreplayable("the stored payload was cut at the storage cap".into()),
        (Some(Operation::Create), _) => if live.is_some() { Prediction::WouldApply } else { Prediction::WouldCreate },
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
        redacted_fields,
    }
}

/// A clone of one mutation: a fresh ULID, the original's entity, model, operation and
/// version, the preview's payload and timestamp.
pub fn clone_mutation(p: &PreviewEntry, version: u64) -> Option<Mutation> {
    if matches!(p.prediction, Prediction::Unreplayable(_)) {
        return None;
    }
    let operation = match p.operation.as_str() {
        "create" => Operation::Create,
        "update" => Operation::Update,
        _ => Operation::Delete,
    };
    Some(Mutation {
        mutation_id: ulid::Ulid::new().to_string(),
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
            position: 0,
            mutation_id: "M".into(),
            entity_id: "E".into(),
            model: "Task".into(),
            operation: op.into(),
            payload: payload.map(obj),
            client_timestamp_ms: ts,
            version: 2,
            original_outcome: "applied".into(),
        }
    }

    #[test]
    fn predicts_like_the_host_would() {
        let p = json!({"title": "x"});
        assert_eq!(preview(&captured("create", 5, Some(p.clone())), None, None).prediction, Prediction::WouldCreate);
        assert_eq!(preview(&captured("create", 5, Some(p.clone())), Some(state(9_000, false, json!({}))), None).prediction, Prediction::WouldApply);
        assert_eq!(preview(&captured("update", 5, Some(p.clone())), None, None).prediction, Prediction::NotFound);
        assert_eq!(preview(&captured("update", 5, Some(p.clone())), Some(state(1, true, json!({}))), None).prediction, Prediction::NotFound);
        assert_eq!(preview(&captured("update", 5, Some(p.clone())), Some(state(9_000, false, json!({}))), None).prediction, Prediction::Conflict);
        assert_eq!(preview(&captured("update", 9, Some(p.clone())), Some(state(9_000, false, json!({}))), None).prediction, Prediction::WouldApply);
        assert_eq!(preview(&captured("delete", 5, None), Some(state(9_000, false, json!({}))), Some(10)).prediction, Prediction::WouldApply, "restamped");
        assert!(matches!(preview(&captured("update", 9, None), Some(state(1, false, json!({}))), None).prediction, Prediction::Unreplayable(_)));
        assert!(matches!(preview(&captured("upsert", 9, Some(p)), None, None).prediction, Prediction::Unreplayable(_)));
    }

    #[test]
    fn redacted_fields_take_the_current_value_or_are_left_out() {
        let current = state(1, false, json!({"tether_id": "E", "title": "now", "api_key": "live-secret-now"}));
        let m = captured("update", 9, Some(json!({"title": "then", "api_key": "[REDACTED]", "meta": {"token": "[REDACTED]"}})));
        let p = preview(&m, Some(current), None);
        assert_eq!(Value::Object(p.payload.clone().unwrap()), json!({"title": "then", "api_key": "live-secret-now"}));
        assert_eq!(p.redacted_fields, vec!["api_key".to_owned(), "meta".to_owned()]);
        assert_eq!(serde_json::to_value(&p.diff).unwrap(), json!([{"path": ["title"], "change": "changed", "old": "now", "new": "then"}]));
        let fresh = preview(&captured("create", 9, Some(json!({"title": "t", "password": "[REDACTED]"}))), None, None);
        assert_eq!(Value::Object(fresh.payload.unwrap()), json!({"title": "t"}));
    }

    #[test]
    fn clones_get_fresh_distinct_ids_and_keep_the_rest() {
        let p = preview(&captured("update", 9, Some(json!({"title": "t"}))), Some(state(1, false, json!({}))), None);
        let a = clone_mutation(&p, 2).unwrap();
        let b = clone_mutation(&p, 2).unwrap();
        assert_ne!(a.mutation_id, b.mutation_id);
        assert_ne!(a.mutation_id, "M");
        assert!(crate::protocol::is_ulid(&a.mutation_id));
        assert_eq!((a.entity_id.as_str(), a.timestamp, a.operation), ("E", 9, Operation::Update));
    }
}
