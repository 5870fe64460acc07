//! Parsing of the Tether wire types (`protocol`) from arbitrary bytes.
//!
//! Every body type (push/pull request and response, and the `data` shapes of rejections) is
//! parsed from the input: it must never panic, and whatever parses must serialize, parse
//! again to an equal value, and serialize to the same text. Also `is_ulid` on the input as a
//! string, and `StateValue::into_object` (host-reported state as JSON text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_pro::capture::StateValue;
use tether_pro::protocol::{
    ConflictData, PullRequest, PullResponse, PushRequest, PushResponse, Rejection, ValidationData, is_ulid,
};
use tether_pro_fuzz::approx_eq;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(first) = serde_json::from_slice::<T>(data) else { return };
    let text = serde_json::to_vec(&first).expect("a parsed value serializes");
    let again: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!("re-parse of own output failed: {e}\n  {}", String::from_utf8_lossy(&text))
    });
    if again != first {
        // Floats inside payloads may come back an ulp off (serde_json without
        // `float_roundtrip`); anything else must be identical.
        let (a, b) = (serde_json::to_value(&first).unwrap(), serde_json::to_value(&again).unwrap());
        assert!(approx_eq(&a, &b), "round trip changed the value\n  first: {first:?}\n  again: {again:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<PushRequest>(data);
    round_trip::<PushResponse>(data);
    round_trip::<PullRequest>(data);
    round_trip::<PullResponse>(data);
    round_trip::<Rejection>(data);
    round_trip::<ValidationData>(data);
    round_trip::<ConflictData>(data);

    let text = String::from_utf8_lossy(data);
    let ulid = is_ulid(&text);
    if ulid {
        assert_eq!(text.len(), 26);
    }
    if let Some(o) = StateValue::Json(text.into_owned()).into_object() {
        let _ = serde_json::Value::Object(o).to_string();
    }
});
