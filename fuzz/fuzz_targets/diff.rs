//! Field-level diff (`pipeline::diff`).
//!
//! Input: `before` NUL `after`, both valid JSON, is used as it is (seeds: simulator payloads
//! and their edits); anything else drives `arbitrary` to build `before` and an `after` that
//! shares most of its structure (a mutated copy) or not at all, sometimes nested past
//! `MAX_DEPTH`.
//!
//! Checked on the raw diff (before redaction): `diff` never panics; `apply(before, diff)` is
//! `after`; `diff(x, x)` is empty; a diff is empty exactly when the values are equal; no path
//! is longer than `MAX_DEPTH`; the serde round trip of the changes is lossless. Then the diff
//! is redacted for storage (`redact_changes`) and no secret of either side (a value under a
//! sensitive key, or a token in a credential position of a string) survives in it.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_pro::internals::diff::{Change, MAX_DEPTH, apply, diff, json_eq, redact_changes};
use tether_pro::pipeline::redact::{DEFAULT_KEYS, Redactor};
use tether_pro_fuzz::{Carried, Gen, Oracle, assert_no_secret, checkable_carried, checkable_secrets};

/// A copy of `v` with a few random edits (so before and after share structure).
fn mutate(g: &mut Gen, u: &mut Unstructured, v: &Value, depth: usize) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=9)? {
        // Keep as is.
        0..=4 => v.clone(),
        // Replace.
        5 => g.value(u, depth)?,
        // Descend.
        _ => match v {
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, x) in m {
                    match u.int_in_range(0u8..=7)? {
                        0 => {} // removed
                        1 => {
                            out.insert(k.clone(), x.clone());
                            let nk = g.key(u)?;
                            let nv = g.value(u, depth + 1)?;
                            out.insert(nk, nv);
                        }
                        _ => {
                            out.insert(k.clone(), mutate(g, u, x, depth + 1)?);
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len() + 1);
                for x in a {
                    match u.int_in_range(0u8..=7)? {
                        0 => {}
                        1 => {
                            out.push(g.value(u, depth + 1)?);
                            out.push(x.clone());
                        }
                        _ => out.push(mutate(g, u, x, depth + 1)?),
                    }
                }
                if u.ratio(1u8, 4)? {
                    out.push(g.value(u, depth + 1)?);
                }
                Value::Array(out)
            }
            _ => g.scalar(u)?,
        },
    })
}

/// Wraps `v` in `n` alternating arrays and objects.
fn nest(mut v: Value, n: usize) -> Value {
    for i in 0..n {
        v = if i % 2 == 0 { Value::Array(vec![v]) } else { serde_json::json!({ "k": v }) };
    }
    v
}

fn generated(u: &mut Unstructured) -> Result<(Value, Value, Vec<Carried>)> {
    let mut g = Gen::new(DEFAULT_KEYS, 6);
    let before = g.value(u, 0)?;
    let after = if u.ratio(3u8, 4)? { mutate(&mut g, u, &before, 0)? } else { g.value(u, 0)? };
    if u.ratio(1u8, 8)? {
        let n = u.int_in_range(MAX_DEPTH - 2..=MAX_DEPTH + 6)?;
        let m = if u.arbitrary()? { n } else { u.int_in_range(MAX_DEPTH - 2..=MAX_DEPTH + 6)? };
        return Ok((nest(before, n), nest(after, m), g.carried));
    }
    Ok((before, after, g.carried))
}

fn check(before: &Value, after: &Value, carried: &[Carried]) {
    let changes: Vec<Change> = diff(before, after);
    // Numerically equal numbers are equal (issue 14: `1.0` vs `1` is no change), so the
    // comparisons go by JSON value, numbers by value.
    let applied = apply(before, &changes);
    assert!(json_eq(&applied, after), "apply(before, diff) != after\n  diff: {changes:?}\n  applied: {applied:?}\n  after: {after:?}");
    assert!(diff(before, before).is_empty(), "diff(before, before) not empty");
    assert!(diff(after, after).is_empty(), "diff(after, after) not empty");
    assert_eq!(changes.is_empty(), json_eq(before, after), "empty diff <=> equal");
    for c in &changes {
        assert!(c.path.len() <= MAX_DEPTH, "path longer than MAX_DEPTH: {c:?}");
        match c.change {
            tether_pro::internals::diff::ChangeKind::Added => assert!(c.old.is_none() && c.new.is_some(), "{c:?}"),
            tether_pro::internals::diff::ChangeKind::Removed => assert!(c.old.is_some() && c.new.is_none(), "{c:?}"),
            tether_pro::internals::diff::ChangeKind::Changed => assert!(c.old.is_some() && c.new.is_some(), "{c:?}"),
        }
    }
    let text = serde_json::to_string(&changes).expect("a diff serializes");
    let back: Vec<Change> = serde_json::from_str(&text).expect("a serialized diff parses");
    if back != changes {
        // Floats may come back an ulp off; anything else must be identical.
        let (a, b) = (serde_json::to_value(&back).unwrap(), serde_json::to_value(&changes).unwrap());
        assert!(tether_pro_fuzz::approx_eq(&a, &b), "serde round trip of the diff\n  {changes:?}\n  {back:?}");
    }

    // The stored diff: redacted, with no secret of either side left in it.
    let mut stored = changes;
    redact_changes(&mut stored, &Redactor::default());
    let oracle = Oracle::new(DEFAULT_KEYS);
    let (mut secrets, mut visible) = (Vec::new(), Vec::new());
    oracle.split(before, &mut secrets, &mut visible);
    oracle.split(after, &mut secrets, &mut visible);
    let mut secrets = checkable_secrets(secrets, &visible, &[]);
    secrets.extend(checkable_carried(carried, &format!("{before}{after}"), false));
    assert_no_secret("the redacted diff", &serde_json::to_string(&stored).unwrap(), &secrets);
}

fuzz_target!(|data: &[u8]| {
    if let Some(nul) = data.iter().position(|&b| b == 0)
        && let (Ok(before), Ok(after)) =
            (serde_json::from_slice::<Value>(&data[..nul]), serde_json::from_slice::<Value>(&data[nul + 1..]))
    {
        check(&before, &after, &[]);
        return;
    }
    let mut u = Unstructured::new(data);
    if let Ok((before, after, carried)) = generated(&mut u) {
        check(&before, &after, &carried);
    }
});
