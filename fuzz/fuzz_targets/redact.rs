//! Redaction of parsed JSON (`Redactor::redact_value`, `redact_value_recording`) and the
//! textual scrub of the same JSON as text (`Redactor::redact_text`).
//!
//! Input: valid JSON text is used as it is (seeds: protocol examples, simulator bodies);
//! anything else drives `arbitrary` to build a tree whose keys are configured secret keys in
//! varied case, separators, prefixes and suffixes, near misses and random keys, and whose
//! strings are secret-looking tokens, text carrying them (header lines, URLs, JWTs...) or
//! anything.
//!
//! Checked against the naive oracle (`tether_pro_fuzz::Oracle`):
//! * keys: every value under a key the word-part rule calls sensitive, at any depth, is
//!   `"[REDACTED]"`, and nothing under another key is replaced whole (same tree shape, same
//!   keys, same scalars);
//! * strings not under a sensitive key: each is either unchanged, or `redact_str` of the
//!   original (the same scrub as on its own), which is only allowed when the oracle's
//!   over-approximation of the value rules' triggers holds for it, and (when no escape can
//!   re-encode it) is the original with parts replaced by the marker and nothing else;
//! * the count is the key-level replacements plus the strings scrubbed, and
//!   `redact_value_recording` reports exactly those paths;
//! * no secret value (a scalar under a sensitive key, unless it also occurs somewhere
//!   visible, or a token the generator put where a value rule must find it) survives in the
//!   output, nor in the textual scrub of the compact and the pretty serialization.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_pro::pipeline::redact::{DEFAULT_KEYS, REDACTED, Redactor, json_pointer};
use tether_pro_fuzz::{Gen, Oracle, assert_no_secret, checkable_carried, checkable_secrets, configured_keys, only_replaced};

/// Walks what the key rule gives (`expected`, original strings in place) and the output
/// together; returns the paths of the strings the value rules changed.
fn compare(
    redactor: &Redactor,
    oracle: &Oracle,
    expected: &Value,
    out: &Value,
    at: &str,
    key_level: &[String],
    scrubbed: &mut Vec<String>,
) {
    match (expected, out) {
        (Value::Object(e), Value::Object(o)) => {
            assert!(e.keys().eq(o.keys()), "keys at {at:?} differ: {:?} vs {:?}", e.keys(), o.keys());
            for (k, x) in e {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                compare(redactor, oracle, x, &o[k], &path, key_level, scrubbed);
            }
        }
        (Value::Array(e), Value::Array(o)) => {
            assert_eq!(e.len(), o.len(), "array length at {at:?}");
            for (i, (x, y)) in e.iter().zip(o).enumerate() {
                compare(redactor, oracle, x, y, &format!("{at}/{i}"), key_level, scrubbed);
            }
        }
        (Value::String(s), Value::String(got)) if key_level.iter().any(|p| p == at) => {
            assert_eq!((s.as_str(), got.as_str()), (REDACTED, REDACTED), "value at {at:?} is under a sensitive key");
        }
        (Value::String(s), Value::String(got)) => match redactor.redact_str(s) {
            None => assert_eq!(got, s, "string at {at:?} changed, but redact_str finds nothing in it"),
            Some(alone) => {
                assert_eq!(got, &alone, "string at {at:?}: redact_value and redact_str disagree");
                assert!(
                    oracle.may_hold_credential(s),
                    "string at {at:?} changed although nothing in it can be a credential\n  in:  {s:?}\n  out: {got:?}"
                );
                // Without escapes (and without control characters a nested string would be
                // re-escaped with), a scrub only cuts parts out and writes the marker.
                let re_escaped = s.contains('"') && s.chars().any(char::is_control);
                if !s.contains('\\') && !re_escaped {
                    assert!(only_replaced(s, got), "string at {at:?} was rewritten beyond the marker\n  in:  {s:?}\n  out: {got:?}");
                }
                scrubbed.push(at.to_owned());
            }
        },
        (e, o) => assert_eq!(e, o, "value at {at:?}"),
    }
}

fn check(keys: &[&str], original: Value, carried: &[tether_pro_fuzz::Carried]) {
    let redactor = Redactor::new(keys);
    let oracle = Oracle::new(keys);
    let (expected, key_level) = oracle.redacted(&original);
    let mut out = original.clone();
    let mut recorded = Vec::new();
    let count = redactor.redact_value_recording(&mut out, &mut |p| recorded.push(json_pointer(p)));

    let mut changed = Vec::new();
    compare(&redactor, &oracle, &expected, &out, "", &key_level, &mut changed);
    assert_eq!(count, key_level.len() + changed.len(), "redact_value's count (keys {keys:?})");
    changed.extend(key_level);
    changed.sort();
    recorded.sort();
    assert_eq!(recorded, changed, "paths reported by redact_value_recording");
    let mut plain = original.clone();
    assert_eq!(redactor.redact_value(&mut plain), count, "redact_value and redact_value_recording disagree");
    assert_eq!(plain, out);

    let (mut secrets, mut visible) = (Vec::new(), Vec::new());
    oracle.split(&original, &mut secrets, &mut visible);
    let mut secrets = checkable_secrets(secrets, &visible, &[]);
    // And every token the generator put where a value rule must find it.
    let compact = original.to_string();
    secrets.extend(checkable_carried(carried, &compact, false));
    assert_no_secret("redact_value output", &out.to_string(), &secrets);

    // The textual scrub on the same document as text (what a body that did not parse gets:
    // it errs towards redacting more, so it must never redact less).
    assert_no_secret(&format!("redact_text of {compact}\n  output"), &redactor.redact_text(&compact), &secrets);
    let pretty = serde_json::to_string_pretty(&original).expect("serializes");
    assert_no_secret(&format!("redact_text of {pretty}\n  output"), &redactor.redact_text(&pretty), &secrets);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check(DEFAULT_KEYS, v, &[]);
        return;
    }
    let mut u = Unstructured::new(data);
    let Ok(keys) = configured_keys(&mut u) else { return };
    let mut g = Gen::new(&keys, 8);
    let Ok(v) = g.value(&mut u, 0) else { return };
    check(&keys, v, &g.carried);
});
