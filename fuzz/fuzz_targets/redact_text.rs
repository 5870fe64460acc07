//! The textual scrub (`Redactor::redact_text`) for bodies that are not valid JSON.
//!
//! The whole input, as (lossy) UTF-8, is scrubbed: it must never panic. Then the input is
//! read as: text before, a secret key spelled some way, a `"key":"value"`-style or
//! `key=value`-style pair, text after; the pair is put between the two texts and the secret
//! value must not survive the scrub, whatever surrounds it (short of text that changes what the
//! pair is: an open string before it, or more key text right after it).
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use tether_pro::pipeline::redact::{DEFAULT_KEYS, Redactor};
use tether_pro_fuzz::{Gen, Oracle};

/// How the pair is written: `{key}` and `{value}` are replaced.
const SHAPES: &[&str] = &[
    r#""{key}":"{value}""#,
    r#""{key}" : "{value}""#,
    r#""{key}":{value}"#,
    r#""{key}":["{value}"]"#,
    r#""{key}":{"x":"{value}"}"#,
    r#"{key}={value}"#,
    r#"{key}: {value}"#,
    r#"{key}:"{value}""#,
    r#"'{key}': '{value}'"#,
    r#"{"{key}":"{value}"}"#,
    r#""{key}":"{value}"#,
    r#""{\"{key}\":\"{value}\"}""#,
];

fuzz_target!(|data: &[u8]| {
    let redactor = Redactor::default();
    let whole = String::from_utf8_lossy(data);
    let _ = redactor.redact_text(&whole);

    let mut u = Unstructured::new(data);
    let Ok(before) = u.arbitrary::<String>() else { return };
    let mut g = Gen::new(DEFAULT_KEYS, 0);
    let Ok(key) = g.key(&mut u) else { return };
    let Ok(shape) = u.choose(SHAPES) else { return };
    let Ok(tail) = u.arbitrary::<u32>() else { return };
    let after = String::from_utf8_lossy(u.take_rest()).into_owned();

    // Only well-formed keys of the shape's kind: a key that needs escaping in this position
    // is a different (not a `"key":"value"`) text.
    // Sensitive by the oracle's key rule (not the implementation's: a key they disagree on
    // shows here as a surviving value).
    if !Oracle::new(DEFAULT_KEYS).is_sensitive(&key) || key.chars().any(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return;
    }
    // The pair must stand on its own: the text before ends at a delimiter (empty, or a JSON
    // or form separator) and opens no string. (Inside an open string, `…{"x":"a{key:"` then
    // `value"` reads as a string ending with `key:` followed by bare text: ambiguous, and the
    // scrub does not treat it as a pair.)
    if !(before.is_empty() || before.ends_with(['{', ',', '&', ';', '\n', ' ', '?'])) || before.contains(['"', '\'', '\\']) {
        return;
    }
    // Nor may it end with a `:` or `=` (possibly before spaces): our key would be the value
    // of whatever comes before (`Authorization: 'password': 'x'`), redacted as such.
    if before.trim_end().ends_with([':', '=']) {
        return;
    }
    // And the text after starts at a delimiter: `…"value"} token":` would make the pair part of
    // one long (sensitive) key, and keys stay visible by design.
    if !(after.is_empty() || after.starts_with([',', '}', ']', '&', ';', '\n', ' '])) {
        return;
    }
    let value = format!("s3cr3t{tail:08x}");
    // The value must occur only as the pair's value (free text may spell it too: that is
    // not a secret the scrub can know about).
    if before.contains(&value) || after.contains(&value) {
        return;
    }
    let text = format!("{before}{}{after}", shape.replace("{key}", &key).replace("{value}", &value));
    let out = redactor.redact_text(&text);
    assert!(!out.contains(&value), "secret survives redact_text\n  input:  {text:?}\n  output: {out:?}");
});
