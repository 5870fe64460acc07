//! Redaction of parsed JSON (`Redactor::redact_value`) and the textual scrub of the same JSON
//! as text (`Redactor::redact_text`).
//!
//! Input: valid JSON text is used as it is (seeds: protocol examples, simulator bodies);
//! anything else drives `arbitrary` to build a tree whose keys are configured secret keys in
//! varied case, separators, prefixes and suffixes, near misses and random keys.
//!
//! Checked: the redacted tree is exactly what the naive oracle of the documented rule gives
//! (every value under a matching key, at any depth, is `"[REDACTED]"`, everything else is
//! untouched, and the count is right); no secret value survives in the serialized output
//! unless it also occurs somewhere visible; and the textual scrub of the compact and the
//! pretty serialization leaves no secret either.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_pro::pipeline::redact::{DEFAULT_KEYS, Redactor};
use tether_pro_fuzz::{Gen, Oracle, assert_no_secret, checkable_secrets, configured_keys};

fn check(keys: &[&str], original: Value) {
    let redactor = Redactor::new(keys);
    let oracle = Oracle::new(keys);
    let (expected, expected_count) = oracle.redacted(&original);
    let mut out = original.clone();
    let count = redactor.redact_value(&mut out);
    assert_eq!(out, expected, "redact_value differs from the rule (keys {keys:?})");
    assert_eq!(count, expected_count, "redact_value's count");

    let (mut secrets, mut visible) = (Vec::new(), Vec::new());
    oracle.split(&original, &mut secrets, &mut visible);
    let secrets = checkable_secrets(secrets, &visible, &[]);
    assert_no_secret("redact_value output", &out.to_string(), &secrets);

    // The textual scrub on the same document as text (what a body that did not parse gets:
    // it errs towards redacting more, so it must never redact less).
    let compact = original.to_string();
    assert_no_secret("redact_text(compact)", &redactor.redact_text(&compact), &secrets);
    let pretty = serde_json::to_string_pretty(&original).expect("serializes");
    assert_no_secret("redact_text(pretty)", &redactor.redact_text(&pretty), &secrets);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check(DEFAULT_KEYS, v);
        return;
    }
    let mut u = Unstructured::new(data);
    let Ok(keys) = configured_keys(&mut u) else { return };
    let mut g = Gen::new(&keys, 8);
    let Ok(v) = g.value(&mut u, 0) else { return };
    check(&keys, v);
});
