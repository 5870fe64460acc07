//! Per-model field whitelist and validation rules of the reference server.
//!
//! Messages follow the wording Tether clients already display (Laravel's validator), so
//! that `validation_failed` responses look like the ones users see in production.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::protocol::{Object, SYNC_KEY};

/// What a field may hold.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// A JSON string.
    Text {
        /// Most characters allowed (characters, not bytes).
        max_chars: usize,
    },
    /// A JSON number that fits an `i64` (no fraction), within `min..=max`.
    Integer {
        /// Smallest value allowed.
        min: i64,
        /// Largest value allowed.
        max: i64,
    },
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// Any JSON value (objects and arrays included), stored as is.
    Json,
}

/// One whitelisted field of a model and its rule.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// Field name, as the key in a mutation's `payload`.
    pub name: String,
    /// What the field may hold.
    pub kind: FieldKind,
    /// Present and not null on create and update.
    pub required: bool,
}

/// One synced model: its name and the only fields the server writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Short model name, as a mutation's `model` (e.g. `Task`).
    pub name: String,
    /// The whitelist; payload fields not listed here are dropped.
    pub fields: Vec<FieldSpec>,
}

impl ModelSpec {
    /// A model with no fields yet.
    pub fn new(name: impl Into<String>) -> Self {
        ModelSpec { name: name.into(), fields: Vec::new() }
    }

    /// Adds a whitelisted field.
    pub fn field(mut self, name: &str, kind: FieldKind, required: bool) -> Self {
        self.fields.push(FieldSpec { name: name.to_owned(), kind, required });
        self
    }

    /// Keeps only whitelisted fields and checks them. Returns the fields to write, or the
    /// messages per field.
    pub fn validate(&self, payload: &Object) -> Result<Object, BTreeMap<String, Vec<String>>> {
        let mut out = Object::new();
        let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for spec in &self.fields {
            let label = spec.name.replace('_', " ");
            match payload.get(&spec.name) {
                None | Some(Value::Null) => {
                    if spec.required {
                        messages.entry(spec.name.clone()).or_default().push(format!("The {label} field is required."));
                    } else if payload.contains_key(&spec.name) {
                        out.insert(spec.name.clone(), Value::Null);
                    }
                }
                Some(v) => match check(&spec.kind, v, &label) {
                    Ok(()) => {
                        out.insert(spec.name.clone(), v.clone());
                    }
                    Err(m) => messages.entry(spec.name.clone()).or_default().push(m),
                },
            }
        }
        if messages.is_empty() { Ok(out) } else { Err(messages) }
    }
}

fn check(kind: &FieldKind, v: &Value, label: &str) -> Result<(), String> {
    match kind {
        FieldKind::Text { max_chars } => match v.as_str() {
            None => Err(format!("The {label} field must be a string.")),
            Some(s) if s.chars().count() > *max_chars => {
                Err(format!("The {label} field must not be greater than {max_chars} characters."))
            }
            Some(_) => Ok(()),
        },
        FieldKind::Integer { min, max } => match v.as_i64() {
            None => Err(format!("The {label} field must be an integer.")),
            Some(n) if n < *min => Err(format!("The {label} field must be at least {min}.")),
            Some(n) if n > *max => Err(format!("The {label} field must not be greater than {max}.")),
            Some(_) => Ok(()),
        },
        FieldKind::Number => {
            if v.is_number() { Ok(()) } else { Err(format!("The {label} field must be a number.")) }
        }
        FieldKind::Boolean => {
            if v.is_boolean() { Ok(()) } else { Err(format!("The {label} field must be true or false.")) }
        }
        FieldKind::Json => Ok(()),
    }
}

/// The models a server knows, by short name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    models: BTreeMap<String, ModelSpec>,
}

impl Schema {
    /// A schema of these models, keyed by name (a later model replaces an earlier one of the
    /// same name).
    pub fn new(models: impl IntoIterator<Item = ModelSpec>) -> Self {
        let models = models.into_iter().map(|m| (m.name.clone(), m)).collect();
        Schema { models }
    }

    /// The model with this short name, if the server knows it.
    pub fn get(&self, model: &str) -> Option<&ModelSpec> {
        self.models.get(model)
    }

    /// Every model, in name order.
    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.values()
    }

    /// The models of the demo app (a task list with projects and notes). Nested JSON fields
    /// are there on purpose: they exercise deep diffs and deep redaction.
    pub fn demo() -> Self {
        use FieldKind::*;
        Schema::new([
            ModelSpec::new("Task")
                .field("title", Text { max_chars: 255 }, true)
                .field("done", Boolean, false)
                .field("priority", Integer { min: 0, max: 5 }, false)
                .field("notes", Text { max_chars: 10_000 }, false)
                .field("due_at", Integer { min: 0, max: i64::MAX }, false)
                .field("project_id", Text { max_chars: 26 }, false)
                .field("estimate_hours", Number, false)
                .field("metadata", Json, false),
            ModelSpec::new("Project")
                .field("name", Text { max_chars: 120 }, true)
                .field("color", Text { max_chars: 16 }, false)
                .field("archived", Boolean, false)
                .field("settings", Json, false),
            ModelSpec::new("Note")
                .field("body", Text { max_chars: 20_000 }, true)
                .field("pinned", Boolean, false)
                .field("tags", Json, false)
                .field("attachments", Json, false),
        ])
    }
}

/// The record state as clients see it: the sync key first, then the stored fields.
pub fn state_with_key(entity_id: &str, data: &Object) -> Object {
    let mut state = Object::new();
    state.insert(SYNC_KEY.to_owned(), Value::String(entity_id.to_owned()));
    for (k, v) in data {
        if k != SYNC_KEY {
            state.insert(k.clone(), v.clone());
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn drops_fields_outside_the_whitelist() {
        let s = Schema::demo();
        let out = s.get("Task").unwrap().validate(&obj(json!({"title": "a", "is_admin": true, "tether_id": "x"}))).unwrap();
        assert_eq!(Value::Object(out), json!({"title": "a"}));
    }

    #[test]
    fn reports_every_bad_field_with_laravel_wording() {
        let s = Schema::demo();
        let err = s
            .get("Task")
            .unwrap()
            .validate(&obj(json!({"done": "yes", "priority": 9, "due_at": "soon"})))
            .unwrap_err();
        assert_eq!(err["title"], vec!["The title field is required."]);
        assert_eq!(err["done"], vec!["The done field must be true or false."]);
        assert_eq!(err["priority"], vec!["The priority field must not be greater than 5."]);
        assert_eq!(err["due_at"], vec!["The due at field must be an integer."]);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let s = Schema::demo();
        let ok = "é".repeat(255);
        assert!(s.get("Task").unwrap().validate(&obj(json!({"title": ok}))).is_ok());
        let too_long = "é".repeat(256);
        assert!(s.get("Task").unwrap().validate(&obj(json!({"title": too_long}))).is_err());
    }

    #[test]
    fn explicit_null_clears_an_optional_field() {
        let s = Schema::demo();
        let out = s.get("Task").unwrap().validate(&obj(json!({"title": "a", "notes": null}))).unwrap();
        assert_eq!(Value::Object(out), json!({"title": "a", "notes": null}));
    }
}
