//! The pipeline's own JSON parser (`pipeline::json`) against serde_json.
//!
//! Input: any bytes, taken as text when they are UTF-8 (the pipeline checks UTF-8 first).
//!
//! Checked: the parser never panics; it refuses exactly the texts serde_json refuses; what it
//! accepts reads as serde_json's `Value` reads it (the same compact text, numbers' digits
//! included) and writes back as serde_json writes that `Value`. The deliberate difference, an
//! object keyed by one of serde_json's private markers, is left out of the comparison
//! (serde_json reads it as a number or as raw JSON; the pipeline keeps the object).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_pro::internals::json::{Bump, Json};

/// serde_json's private markers: its `Value` reads an object with one of them as first key as
/// a number or as raw JSON text (features `arbitrary_precision`, `raw_value`).
const MARKERS: [&str; 2] = ["$serde_json::private::Number", "$serde_json::private::RawValue"];

/// Whether any object in the tree has one of serde_json's markers as a key (however escaped).
fn has_marker_key(tree: &Json<'_>) -> bool {
    match tree {
        Json::Object(entries) => entries.iter().any(|(k, v)| MARKERS.contains(&k.as_str()) || has_marker_key(v)),
        Json::Array(items) => items.iter().any(has_marker_key),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let arena = Bump::new();
    let own = Json::parse_own(text, &arena);
    let theirs = serde_json::from_str::<Value>(text);
    match (own, theirs) {
        (Some(tree), Ok(value)) => {
            if has_marker_key(&tree) {
                return;
            }
            assert_eq!(tree.to_string(), serde_json::to_string(&value).unwrap(), "{text:?}");
            assert_eq!(tree.to_value(), value, "{text:?}");
        }
        (None, Err(_)) => {}
        (Some(tree), Err(e)) if has_marker_key(&tree) => {
            // serde_json refuses a marker object whose value is not digits; the pipeline keeps it.
            let _ = (tree, e);
        }
        (own, theirs) => panic!("{text:?}: parser {own:?}, serde_json {theirs:?}"),
    }
});
