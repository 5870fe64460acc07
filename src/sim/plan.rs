//! What simulated users write: realistic task-list payloads, a few invalid ones, and a few
//! carrying nested secrets (so redaction has something to find).

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rand::SeedableRng;
use serde_json::{Value, json};
use ulid::Ulid;

use crate::protocol::Object;

const WORDS: &[&str] = &[
    "buy", "milk", "call", "mom", "fix", "sync", "bug", "plan", "trip", "review", "invoice", "book", "flight",
    "water", "plants", "ship", "release", "write", "notes", "renew", "passport", "clean", "garage",
];
const COLORS: &[&str] = &["red", "green", "blue", "amber", "teal"];
const TAGS: &[&str] = &["home", "work", "urgent", "later", "ideas"];

/// A ULID whose random part comes from the seeded stream.
pub fn ulid(rng: &mut ChaCha8Rng) -> String {
    let ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    Ulid::from_parts(ms, rng.random::<u128>()).to_string()
}

/// The ids of the records every client edits, the same for every client of a seed.
pub fn shared_records(seed: u64, n: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5a4e);
    // A fixed time part: shared ids must be identical across clients and runs.
    (0..n).map(|_| Ulid::from_parts(1_700_000_000_000, rng.random::<u128>()).to_string()).collect()
}

/// `lo..hi` random words, capitalised.
fn phrase(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> String {
    let words = if hi > lo { rng.random_range(lo..hi) } else { lo };
    let mut out: Vec<&str> = Vec::with_capacity(words);
    for _ in 0..words {
        out.push(WORDS.choose(rng).expect("non-empty"));
    }
    let s = out.join(" ");
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn obj(v: Value) -> Object {
    match v {
        Value::Object(m) => m,
        _ => Object::new(),
    }
}

/// A fake credential, different every time, that must never reach storage unredacted.
pub fn fake_secret(rng: &mut ChaCha8Rng) -> String {
    format!("sk_live_{:032x}", rng.random::<u128>())
}

/// A valid payload for `model`.
pub fn payload(rng: &mut ChaCha8Rng, model: &str, with_secret: bool) -> Object {
    let mut p = match model {
        "Project" => obj(json!({
            "name": phrase(rng, 2, 2),
            "color": COLORS.choose(rng).expect("non-empty"),
            "archived": rng.random_bool(0.1),
            "settings": {"default_priority": rng.random_range(0..=5), "notify": rng.random_bool(0.5)},
        })),
        "Note" => obj(json!({
            "body": phrase(rng, 4, 20),
            "pinned": rng.random_bool(0.2),
            "tags": [TAGS.choose(rng).expect("non-empty"), TAGS.choose(rng).expect("non-empty")],
        })),
        _ => obj(json!({
            "title": phrase(rng, 2, 6),
            "done": rng.random_bool(0.3),
            "priority": rng.random_range(0..=5),
            "notes": if rng.random_bool(0.3) { Value::String(phrase(rng, 8, 8)) } else { Value::Null },
            "estimate_hours": (rng.random_range(1..40) as f64) / 4.0,
            "metadata": {"source": "sim", "checklist": [{"item": phrase(rng, 2, 2), "done": false}]},
        })),
    };
    if with_secret {
        // Six levels deep, inside arrays of objects: where redaction usually misses.
        let secret = fake_secret(rng);
        let field = if model == "Note" { "attachments" } else if model == "Project" { "settings" } else { "metadata" };
        p.insert(
            field.to_owned(),
            json!({"integrations": [{"kind": "calendar", "auth": [{"provider": "x", "credentials": {"api_key": secret, "password": "hunter2"}}]}]}),
        );
    }
    p
}

/// A payload the demo schema rejects, with the field it breaks.
pub fn invalid_task_payload(rng: &mut ChaCha8Rng) -> Object {
    match rng.random_range(0..4) {
        0 => obj(json!({"done": false})),                       // title missing
        1 => obj(json!({"title": "Too urgent", "priority": 42})), // out of range
        2 => obj(json!({"title": "x".repeat(300)})),              // too long
        _ => obj(json!({"title": 12345, "done": "yes"})),         // wrong types
    }
}

/// Changes a few fields of a live payload, as an edit would.
pub fn edit(rng: &mut ChaCha8Rng, model: &str, current: &Object) -> Object {
    let mut p = current.clone();
    p.remove(crate::protocol::SYNC_KEY);
    match model {
        "Project" => {
            p.insert("name".into(), Value::String(phrase(rng, 2, 2)));
        }
        "Note" => {
            p.insert("body".into(), Value::String(phrase(rng, 4, 20)));
        }
        _ => {
            if rng.random_bool(0.5) {
                p.insert("done".into(), Value::Bool(rng.random_bool(0.5)));
            }
            p.insert("title".into(), Value::String(phrase(rng, 2, 6)));
            p.insert("priority".into(), json!(rng.random_range(0..=5)));
        }
    }
    p
}
