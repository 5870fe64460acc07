//! Field-level diff of two JSON values, for the before/after view of a mutation.
//!
//! A diff is a list of [`Change`]s, each at a path such as `["metadata","checklist",0,"done"]`:
//! objects are compared key by key (in sorted key order), arrays index by index (the common
//! prefix element-wise, then the extra tail elements added or removed), and anything else —
//! a scalar change or a change of type — is one `changed` entry at that path. Identical values
//! give no entries. Numbers compare by value, not by spelling: `1`, `1.0` and `10e-1` are
//! equal (exactly, digit by digit, so two big integers that differ in their last digit are
//! not). Below [`MAX_DEPTH`] levels the diff stops descending and reports the
//! whole differing subtree as one `changed` entry.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use serde_json::{Map, Value};

use std::fmt::Write as _;

use super::json::{Json, Kind, Node, write_str};
use super::redact::{REDACTED, Redactor, drop_deep};

/// Paths in a diff are at most this long; deeper differences are reported as one `changed`
/// entry holding the whole subtrees at this depth.
pub const MAX_DEPTH: usize = 64;

/// What happened at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The key or array element exists only after; `new` holds it.
    Added,
    /// The key or array element exists only before; `old` holds it.
    Removed,
    /// The value differs (scalar change or type change); `old` and `new` hold both sides.
    Changed,
}

/// One step of a path: an object key (a JSON string) or an array index (a JSON number).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

// By hand through `Value`: with serde_json's `arbitrary_precision` (which keeps stored
// digits exact) a derived untagged enum sees every number as a map and fails.
impl<'de> Deserialize<'de> for PathSegment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(k) => Ok(PathSegment::Key(k)),
            Value::Number(n) => {
                n.as_u64().and_then(|i| usize::try_from(i).ok()).map(PathSegment::Index).ok_or_else(|| D::Error::custom("array index out of range"))
            }
            _ => Err(D::Error::custom("a path segment is a string or an array index")),
        }
    }
}

/// One field-level difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Where, from the root (empty: the whole value).
    pub path: Vec<PathSegment>,
    /// What happened there.
    pub change: ChangeKind,
    /// The value before (`removed`, `changed`); `None` for `added`. A present `null` is `Some`.
    #[serde(skip_serializing_if = "Option::is_none", default, deserialize_with = "present")]
    pub old: Option<Value>,
    /// The value after (`added`, `changed`); `None` for `removed`. A present `null` is `Some`.
    #[serde(skip_serializing_if = "Option::is_none", default, deserialize_with = "present")]
    pub new: Option<Value>,
}

/// A present field is `Some`, even when it is `null` (`"old": null` is a change from null);
/// an absent field is `None` through `default`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The changes that turn `before` into `after` (see the module docs). `diff(x, x)` is empty.
///
/// Recursion is bounded by [`MAX_DEPTH`] and equality of deeper subtrees is checked
/// iteratively, so arbitrarily deep inputs are safe to compare. (A differing deep subtree is
/// cloned into the change with `Value::clone`, which recurses; values parsed by serde_json
/// are at most 128 deep.)
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    changes(before, after)
        .into_iter()
        .map(|c| Change {
            path: c.path.iter().map(Step::to_segment).collect(),
            change: c.change,
            old: c.old.map(Node::to_value),
            new: c.new.map(Node::to_value),
        })
        .collect()
}

/// One step of a borrowed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'t> {
    /// An object key.
    Key(&'t str),
    /// An array index.
    Index(usize),
}

impl Step<'_> {
    fn to_segment(&self) -> PathSegment {
        match *self {
            Step::Key(k) => PathSegment::Key(k.to_owned()),
            Step::Index(i) => PathSegment::Index(i),
        }
    }
}

/// A change found by [`changes`], borrowing both sides from the trees compared.
#[derive(Debug)]
pub struct Found<'t, N> {
    /// Where, from the root (inline up to four steps: record fields are one or two deep).
    pub path: SmallVec<[Step<'t>; 4]>,
    /// What happened there.
    pub change: ChangeKind,
    /// The value before (`removed`, `changed`).
    pub old: Option<&'t N>,
    /// The value after (`added`, `changed`).
    pub new: Option<&'t N>,
}

/// [`diff`] by reference, for any tree ([`Json`](super::json::Json) or `Value`): nothing is
/// copied.
pub fn changes<'t, N: Node>(before: &'t N, after: &'t N) -> Vec<Found<'t, N>> {
    // A created or deleted record changes every field: room for that many up front.
    let mut out = Vec::with_capacity(before.object_len().max(after.object_len()));
    let mut path = StepPath::new();
    diff_at(before, after, &mut path, &mut out);
    out
}

/// The path being compared, kept inline for the depths records have.
type StepPath<'t> = SmallVec<[Step<'t>; 8]>;

fn diff_at<'t, N: Node>(a: &'t N, b: &'t N, path: &mut StepPath<'t>, out: &mut Vec<Found<'t, N>>) {
    match (a.kind(), b.kind()) {
        // Both sides iterate in sorted key order: a merge visits the union of keys in order.
        (Kind::Object(ea), Kind::Object(eb)) if path.len() < MAX_DEPTH => {
            let (mut ea, mut eb) = (ea.peekable(), eb.peekable());
            loop {
                match (ea.peek(), eb.peek()) {
                    (Some(&(ka, x)), Some(&(kb, y))) => match ka.cmp(kb) {
                        std::cmp::Ordering::Equal => {
                            path.push(Step::Key(ka));
                            diff_at(x, y, path, out);
                            path.pop();
                            ea.next();
                            eb.next();
                        }
                        std::cmp::Ordering::Less => {
                            out.push(child_change(path, Step::Key(ka), ChangeKind::Removed, Some(x), None));
                            ea.next();
                        }
                        std::cmp::Ordering::Greater => {
                            out.push(child_change(path, Step::Key(kb), ChangeKind::Added, None, Some(y)));
                            eb.next();
                        }
                    },
                    (Some(&(ka, x)), None) => {
                        out.push(child_change(path, Step::Key(ka), ChangeKind::Removed, Some(x), None));
                        ea.next();
                    }
                    (None, Some(&(kb, y))) => {
                        out.push(child_change(path, Step::Key(kb), ChangeKind::Added, None, Some(y)));
                        eb.next();
                    }
                    (None, None) => break,
                }
            }
        }
        (Kind::Array(xa), Kind::Array(xb)) if path.len() < MAX_DEPTH => {
            let common = xa.len().min(xb.len());
            for i in 0..common {
                path.push(Step::Index(i));
                diff_at(&xa[i], &xb[i], path, out);
                path.pop();
            }
            for (i, x) in xa.iter().enumerate().skip(common) {
                out.push(child_change(path, Step::Index(i), ChangeKind::Removed, Some(x), None));
            }
            for (i, y) in xb.iter().enumerate().skip(common) {
                out.push(child_change(path, Step::Index(i), ChangeKind::Added, None, Some(y)));
            }
        }
        _ => {
            if !deep_eq(a, b) {
                out.push(Found { path: SmallVec::from_slice(path), change: ChangeKind::Changed, old: Some(a), new: Some(b) });
            }
        }
    }
}

fn child_change<'t, N>(path: &[Step<'t>], step: Step<'t>, change: ChangeKind, old: Option<&'t N>, new: Option<&'t N>) -> Found<'t, N> {
    let mut p = SmallVec::with_capacity(path.len() + 1);
    p.extend_from_slice(path);
    p.push(step);
    Found { path: p, change, old, new }
}

/// `a == b` without recursion (serde_json's `PartialEq` recurses).
fn deep_eq<N: Node>(a: &N, b: &N) -> bool {
    // Most values compared are scalars: no stack for them.
    if !matches!((a.kind(), b.kind()), (Kind::Array(_), Kind::Array(_)) | (Kind::Object(_), Kind::Object(_))) {
        return scalar_eq(a, b);
    }
    let mut stack: SmallVec<[(&N, &N); 16]> = SmallVec::new();
    stack.push((a, b));
    while let Some((a, b)) = stack.pop() {
        match (a.kind(), b.kind()) {
            (Kind::Array(xa), Kind::Array(xb)) => {
                if xa.len() != xb.len() {
                    return false;
                }
                stack.extend(xa.iter().zip(xb));
            }
            (Kind::Object(ea), Kind::Object(eb)) => {
                if a.object_len() != b.object_len() {
                    return false;
                }
                // Same length, keys sorted and unique: equal maps pair up entry by entry.
                for ((ka, x), (kb, y)) in ea.zip(eb) {
                    if ka != kb {
                        return false;
                    }
                    stack.push((x, y));
                }
            }
            (Kind::Number(x), Kind::Number(y)) => {
                if !digits_equal(x, y) {
                    return false;
                }
            }
            (Kind::String(x), Kind::String(y)) => {
                if x != y {
                    return false;
                }
            }
            (Kind::Bool(x), Kind::Bool(y)) => {
                if x != y {
                    return false;
                }
            }
            (Kind::Null, Kind::Null) => {}
            _ => return false,
        }
    }
    true
}

/// [`deep_eq`] of two nodes that are not both containers.
fn scalar_eq<N: Node>(a: &N, b: &N) -> bool {
    match (a.kind(), b.kind()) {
        (Kind::Number(x), Kind::Number(y)) => digits_equal(x, y),
        (Kind::String(x), Kind::String(y)) => x == y,
        (Kind::Bool(x), Kind::Bool(y)) => x == y,
        (Kind::Null, Kind::Null) => true,
        _ => false,
    }
}

/// JSON equality with numbers compared by value (see [`numbers_equal`]); no recursion.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    deep_eq(a, b)
}

/// Whether two JSON numbers are the same number, exactly: `1`, `1.0`, `1e0` and `10E-1` are;
/// `123456789012345678901234567890` and `...891` are not (a float comparison would say they
/// are). Compares the canonical decimal form of the digits as written.
pub fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    // `as_str`: the digits as sent (arbitrary_precision).
    digits_equal(a.as_str(), b.as_str())
}

/// [`numbers_equal`] on the digits as written; no allocation for the common case of
/// identical spelling.
fn digits_equal(a: &str, b: &str) -> bool {
    // Two texts that cannot both be read as numbers (an exponent past `i128`) are the same
    // number only when spelled the same (found by a review: `1e9999…9` and `2e9999…9` were
    // equal).
    a == b || matches!((canonical_decimal(a), canonical_decimal(b)), (Some(x), Some(y)) if x == y)
}

/// A JSON number's value as `±0.d1d2d3… × 10^exponent`: the significant digits (no leading
/// or trailing zero) are those of `int` then `frac`, from `skip`, `len` of them; zero has
/// none, no sign and exponent 0. Borrowed from the text: comparing allocates nothing.
#[derive(Debug)]
struct Decimal<'s> {
    negative: bool,
    int: &'s str,
    frac: &'s str,
    skip: usize,
    len: usize,
    exponent: i128,
}

impl Decimal<'_> {
    fn significant(&self) -> impl Iterator<Item = u8> + '_ {
        self.int.bytes().chain(self.frac.bytes()).skip(self.skip).take(self.len)
    }
}

impl PartialEq for Decimal<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.negative == other.negative && self.exponent == other.exponent && self.len == other.len && self.significant().eq(other.significant())
    }
}

/// `None` for text that is not a JSON number.
fn canonical_decimal(text: &str) -> Option<Decimal<'_>> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i128>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let total = int.len() + frac.len();
    let digits = || int.bytes().chain(frac.bytes());
    let leading = digits().take_while(|&b| b == b'0').count();
    if leading == total {
        return Some(Decimal { negative: false, int: "", frac: "", skip: 0, len: 0, exponent: 0 });
    }
    let trailing = frac.bytes().rev().chain(int.bytes().rev()).take_while(|&b| b == b'0').count();
    // The first significant digit sits `int.len() - leading` places left of the point.
    let exponent = exp.checked_add(int.len() as i128)?.checked_sub(leading as i128)?;
    Some(Decimal { negative, int, frac, skip: leading, len: total - leading - trailing, exponent })
}

/// Applies a diff produced by [`diff`] to `before`, giving `after`.
///
/// `changed` and `added` entries are applied in order (`changed` sets the value at its path,
/// creating missing object keys and padding arrays with `null`; `added` inserts a key or an
/// array element at its index). `removed` entries are applied last, in descending path order,
/// so removing several tail elements of an array (or elements of nested arrays) never shifts
/// an index another entry refers to. Entries whose parent path does not exist are skipped for
/// `removed`, created for the others.
pub fn apply(before: &Value, changes: &[Change]) -> Value {
    let mut root = before.clone();
    let mut removals: Vec<&[PathSegment]> = Vec::new();
    for c in changes {
        match c.change {
            ChangeKind::Removed => removals.push(&c.path),
            ChangeKind::Changed | ChangeKind::Added => {
                let value = c.new.clone().unwrap_or(Value::Null);
                let Some((last, parent)) = c.path.split_last() else {
                    root = value;
                    continue;
                };
                let target = navigate_create(&mut root, parent);
                match last {
                    PathSegment::Key(k) => {
                        if !target.is_object() {
                            *target = Value::Object(Map::new());
                        }
                        if let Value::Object(m) = target {
                            m.insert(k.clone(), value);
                        }
                    }
                    PathSegment::Index(i) => {
                        if !target.is_array() {
                            *target = Value::Array(Vec::new());
                        }
                        if let Value::Array(a) = target {
                            if c.change == ChangeKind::Added && *i <= a.len() {
                                a.insert(*i, value);
                            } else {
                                if a.len() <= *i {
                                    a.resize(*i + 1, Value::Null);
                                }
                                a[*i] = value;
                            }
                        }
                    }
                }
            }
        }
    }
    removals.sort_unstable_by(|a, b| b.cmp(a));
    for path in removals {
        let Some((last, parent)) = path.split_last() else {
            root = Value::Null;
            continue;
        };
        let Some(target) = navigate(&mut root, parent) else { continue };
        match (last, target) {
            (PathSegment::Key(k), Value::Object(m)) => {
                m.remove(k);
            }
            (PathSegment::Index(i), Value::Array(a)) if *i < a.len() => {
                a.remove(*i);
            }
            _ => {}
        }
    }
    root
}

fn navigate<'a>(mut cur: &'a mut Value, path: &[PathSegment]) -> Option<&'a mut Value> {
    for seg in path {
        cur = match (seg, cur) {
            (PathSegment::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (PathSegment::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn navigate_create<'a>(mut cur: &'a mut Value, path: &[PathSegment]) -> &'a mut Value {
    for seg in path {
        cur = match seg {
            PathSegment::Key(k) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                match cur {
                    Value::Object(m) => m.entry(k.clone()).or_insert(Value::Null),
                    _ => unreachable!("just made an object"),
                }
            }
            PathSegment::Index(i) => {
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                match cur {
                    Value::Array(a) => {
                        if a.len() <= *i {
                            a.resize(*i + 1, Value::Null);
                        }
                        &mut a[*i]
                    }
                    _ => unreachable!("just made an array"),
                }
            }
        };
    }
    cur
}

/// Redacts a diff for storage: when any key on a change's path is sensitive (see
/// [`Redactor`]), its `old` and `new` (those present) become the string [`REDACTED`], so the
/// view still shows that e.g. `password` changed, without the values; otherwise `old` and
/// `new` are redacted in place with [`Redactor::redact_value`].
///
/// The keys and indices *below* a sensitive key are part of its value (a `session` map keyed
/// by session ids, a `credentials` object's field names), so a change inside a sensitive value
/// is reported at the sensitive key itself, as one `changed` entry (both sides existed, or
/// the diff would not have descended), and the changes below one sensitive key collapse into
/// that single entry.
pub fn redact_changes(changes: &mut Vec<Change>, redactor: &Redactor) {
    for c in changes.iter_mut() {
        let first_sensitive = sensitive_cut(c.path.iter().map(|seg| match seg {
            PathSegment::Key(k) => Some(k.as_str()),
            PathSegment::Index(_) => None,
        }), redactor);
        if let Some(i) = first_sensitive
            && i + 1 < c.path.len()
        {
            c.path.truncate(i + 1);
            c.change = ChangeKind::Changed;
            c.old.get_or_insert(Value::Null);
            c.new.get_or_insert(Value::Null);
        }
        for v in [&mut c.old, &mut c.new].into_iter().flatten() {
            if first_sensitive.is_some() {
                drop_deep(std::mem::replace(v, Value::String(REDACTED.to_owned())));
            } else {
                redactor.redact_value(v);
            }
        }
    }
    // Changes below one sensitive key are adjacent (the diff walks each subtree in one go).
    changes.dedup_by(|later, earlier| later.path == earlier.path);
}

/// The position of the first sensitive key on a path (`None` stands for an index).
fn sensitive_cut<'k>(keys: impl Iterator<Item = Option<&'k str>>, redactor: &Redactor) -> Option<usize> {
    keys.enumerate().find(|(_, k)| k.is_some_and(|k| redactor.is_sensitive(k))).map(|(i, _)| i)
}

/// Writes changes found in borrowed trees as the JSON text of the stored diff: exactly
/// `serde_json::to_string` of [`diff`] after [`redact_changes`], with nothing copied.
pub(crate) fn write_redacted_changes(changes: &[Found<'_, Json<'_>>], redactor: &Redactor, out: &mut String) {
    /// A side of a change as stored.
    enum Side<'t, 'a> {
        Redacted,
        Value(&'t Json<'a>),
    }
    out.push('[');
    let mut last: Option<&[Step<'_>]> = None;
    for c in changes {
        let cut = sensitive_cut(c.path.iter().map(|s| match s {
            Step::Key(k) => Some(*k),
            Step::Index(_) => None,
        }), redactor);
        let (path, kind, old, new) = match cut {
            Some(i) if i + 1 < c.path.len() => (&c.path[..=i], ChangeKind::Changed, Some(Side::Redacted), Some(Side::Redacted)),
            Some(_) => (&c.path[..], c.change, c.old.map(|_| Side::Redacted), c.new.map(|_| Side::Redacted)),
            None => (&c.path[..], c.change, c.old.map(Side::Value), c.new.map(Side::Value)),
        };
        if last == Some(path) {
            continue;
        }
        if last.is_some() {
            out.push(',');
        }
        last = Some(path);
        out.push_str("{\"path\":[");
        for (i, step) in path.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match step {
                Step::Key(k) => write_str(k, out),
                Step::Index(n) => {
                    let _ = write!(out, "{n}");
                }
            }
        }
        out.push_str("],\"change\":\"");
        out.push_str(match kind {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        });
        out.push('"');
        for (name, side) in [("old", old), ("new", new)] {
            let Some(side) = side else { continue };
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            match side {
                Side::Redacted => write_str(REDACTED, out),
                Side::Value(v) => {
                    redactor.write_redacted(v, out);
                }
            }
        }
        out.push('}');
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn diff_json(a: Value, b: Value) -> Value {
        let changes = diff(&a, &b);
        let applied = apply(&a, &changes);
        assert!(json_eq(&applied, &b), "apply(before, diff) must give after: {applied} != {b}");
        let j = serde_json::to_value(&changes).unwrap();
        let back: Vec<Change> = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(back, changes, "serde round trip");
        j
    }

    #[test]
    fn nested_objects_and_arrays() {
        let before = json!({
            "title": "Buy milk",
            "metadata": {"checklist": [{"done": false, "text": "a"}, {"done": false, "text": "b"}], "tags": ["x"]},
            "gone": 1,
            "same": {"deep": [1, 2, 3]}
        });
        let after = json!({
            "title": "Buy oat milk",
            "metadata": {"checklist": [{"done": true, "text": "a"}, {"done": false, "text": "b"}], "tags": ["x", "y"]},
            "new": {"a": 1},
            "same": {"deep": [1, 2, 3]}
        });
        assert_eq!(
            diff_json(before, after),
            json!([
                {"path": ["gone"], "change": "removed", "old": 1},
                {"path": ["metadata", "checklist", 0, "done"], "change": "changed", "old": false, "new": true},
                {"path": ["metadata", "tags", 1], "change": "added", "new": "y"},
                {"path": ["new"], "change": "added", "new": {"a": 1}},
                {"path": ["title"], "change": "changed", "old": "Buy milk", "new": "Buy oat milk"}
            ])
        );
    }

    #[test]
    fn type_changes() {
        assert_eq!(
            diff_json(json!({"a": 1, "b": [1], "c": {"x": 1}, "d": null, "e": "1"}), json!({"a": "1", "b": {"0": 1}, "c": [1], "d": false, "e": "1"})),
            json!([
                {"path": ["a"], "change": "changed", "old": 1, "new": "1"},
                {"path": ["b"], "change": "changed", "old": [1], "new": {"0": 1}},
                {"path": ["c"], "change": "changed", "old": {"x": 1}, "new": [1]},
                {"path": ["d"], "change": "changed", "old": null, "new": false}
            ])
        );
        // Not a type change: the same number (issue 14; it used to be reported as a change).
        assert_eq!(diff_json(json!(1), json!(1.0)), json!([]));
        assert_eq!(diff_json(json!([1]), json!(null)), json!([{"path": [], "change": "changed", "old": [1], "new": null}]));
    }

    #[test]
    fn array_growth_and_shrink() {
        assert_eq!(
            diff_json(json!({"l": [1, 2]}), json!({"l": [1, 3, 4, 5]})),
            json!([
                {"path": ["l", 1], "change": "changed", "old": 2, "new": 3},
                {"path": ["l", 2], "change": "added", "new": 4},
                {"path": ["l", 3], "change": "added", "new": 5}
            ])
        );
        assert_eq!(
            diff_json(json!([[1, 2, 3], 9, {"a": [0, 0]}, 7, 8]), json!([[1], 9, {"a": [0]}])),
            json!([
                {"path": [0, 1], "change": "removed", "old": 2},
                {"path": [0, 2], "change": "removed", "old": 3},
                {"path": [2, "a", 1], "change": "removed", "old": 0},
                {"path": [3], "change": "removed", "old": 7},
                {"path": [4], "change": "removed", "old": 8}
            ])
        );
        assert_eq!(diff_json(json!([]), json!([{}])), json!([{"path": [0], "change": "added", "new": {}}]));
    }

    #[test]
    fn identical_values_give_nothing() {
        for v in [json!(null), json!(1), json!("s"), json!([]), json!({}), json!({"a": [1, {"b": [null, true]}]})] {
            assert!(diff(&v, &v).is_empty());
            assert!(diff(&v, &v.clone()).is_empty());
        }
    }

    fn nest(depth: usize, leaf: Value) -> Value {
        let mut v = leaf;
        for i in 0..depth {
            v = if i % 2 == 0 { json!([v]) } else { json!({"k": v}) };
        }
        v
    }

    #[test]
    fn max_depth_reports_whole_subtree() {
        let (a, b) = (nest(100, json!(1)), nest(100, json!(2)));
        let changes = diff(&a, &b);
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!(c.path.len(), MAX_DEPTH);
        assert_eq!(c.change, ChangeKind::Changed);
        assert_eq!(c.old, Some(nest(100 - MAX_DEPTH, json!(1))));
        assert_eq!(c.new, Some(nest(100 - MAX_DEPTH, json!(2))));
        assert_eq!(apply(&a, &changes), b);
        // Just under the limit, the diff still reaches the leaf.
        let changes = diff(&nest(MAX_DEPTH, json!(1)), &nest(MAX_DEPTH, json!(2)));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path.len(), MAX_DEPTH);
        assert_eq!(changes[0].old, Some(json!(1)));
    }

    #[test]
    fn very_deep_identical_values_do_not_overflow() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut a = json!(1);
                let mut b = json!(1);
                for _ in 0..100_000 {
                    a = Value::Array(vec![a]);
                    b = Value::Array(vec![b]);
                }
                assert!(diff(&a, &b).is_empty());
                drop_deep(a);
                drop_deep(b);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn apply_handles_removals_in_any_list_order() {
        let before = json!([[0, 1, 2], 1, 2, 3]);
        let after = json!([[0], 1]);
        let mut changes = diff(&before, &after);
        changes.reverse();
        assert_eq!(apply(&before, &changes), after);
        assert_eq!(apply(&json!({"a": 1}), &[Change { path: vec![], change: ChangeKind::Removed, old: Some(json!({"a": 1})), new: None }]), json!(null));
    }

    #[test]
    fn redact_changes_hides_sensitive_values() {
        let before = json!({"users": [{"name": "a", "creds": {"password": "old-pw", "hint": "h"}}], "profile": {"token": "t1", "bio": "x"}});
        let after = json!({"users": [{"name": "a", "creds": {"password": "new-pw", "hint": "h"}}], "profile": {"bio": "y"}, "extra": {"api_key": "k", "v": 1}});
        let mut changes = diff(&before, &after);
        redact_changes(&mut changes, &Redactor::default());
        assert_eq!(
            serde_json::to_value(&changes).unwrap(),
            json!([
                {"path": ["extra"], "change": "added", "new": {"api_key": REDACTED, "v": 1}},
                {"path": ["profile", "bio"], "change": "changed", "old": "x", "new": "y"},
                {"path": ["profile", "token"], "change": "removed", "old": REDACTED},
                {"path": ["users", 0, "creds", "password"], "change": "changed", "old": REDACTED, "new": REDACTED}
            ])
        );
        // A whole object replaced under a sensitive ancestor key.
        let mut changes = diff(&json!({"session": {"id": 1}}), &json!({"session": [1]}));
        redact_changes(&mut changes, &Redactor::default());
        assert_eq!(changes[0].old, Some(json!(REDACTED)));
        assert_eq!(changes[0].new, Some(json!(REDACTED)));
    }

    #[test]
    fn redact_changes_hides_keys_below_a_sensitive_key() {
        // Found by the `diff` fuzz target: the path of a change inside a sensitive value named
        // the keys below it (here a session id), which are part of the redacted value.
        let before = json!({"session": {"s_8f3a91c2": {"expires": 1}, "other": [1, 2]}, "title": "a"});
        let after = json!({"session": {"s_8f3a91c2": {"expires": 2}, "other": [1]}, "title": "b"});
        let mut changes = diff(&before, &after);
        assert_eq!(changes.len(), 3);
        redact_changes(&mut changes, &Redactor::default());
        assert_eq!(
            serde_json::to_value(&changes).unwrap(),
            json!([
                {"path": ["session"], "change": "changed", "old": REDACTED, "new": REDACTED},
                {"path": ["title"], "change": "changed", "old": "a", "new": "b"}
            ])
        );
        assert!(!serde_json::to_string(&changes).unwrap().contains("s_8f3a91c2"));
        // A key added or removed below a sensitive key is a change of that key too.
        let mut changes = diff(&json!({"a": {"api_key": {"k1": 1}}}), &json!({"a": {"api_key": {"k2": 1}}}));
        redact_changes(&mut changes, &Redactor::default());
        assert_eq!(
            serde_json::to_value(&changes).unwrap(),
            json!([{"path": ["a", "api_key"], "change": "changed", "old": REDACTED, "new": REDACTED}])
        );
    }

    /// The issue's input: `{"estimate_hours":1.0}` against `{"estimate_hours":1}` reported a
    /// change.
    #[test]
    fn numerically_equal_numbers_are_equal() {
        let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert!(diff(&parse(r#"{"estimate_hours":1.0}"#), &parse(r#"{"estimate_hours":1}"#)).is_empty());
        for (a, b) in [("1", "1.0"), ("100", "1e2"), ("0.5", "5E-1"), ("0", "-0.0"), ("-12.50", "-1.25e1"), ("1.0e+3", "1000")] {
            assert!(diff(&parse(a), &parse(b)).is_empty(), "{a} vs {b}");
        }
        for (a, b) in [("1", "-1"), ("1", "1.01"), ("123456789012345678901234567890", "123456789012345678901234567891"), ("1e2", "1e3"), ("10", "1")] {
            assert_eq!(diff(&parse(a), &parse(b)).len(), 1, "{a} vs {b}");
        }
        // Found by a review: exponents past i128 compared equal, and one at i128::MAX overflowed.
        let huge = "9".repeat(45);
        for (a, b) in [
            (format!("1e{huge}"), format!("2e{huge}")),
            ("1e170141183460469231731687303715884105727".to_owned(), "2".to_owned()),
            ("10e170141183460469231731687303715884105727".to_owned(), "1e170141183460469231731687303715884105727".to_owned()),
        ] {
            assert_eq!(diff(&parse(&a), &parse(&b)).len(), 1, "{a} vs {b}");
        }
        assert!(diff(&parse(&format!("1e{huge}")), &parse(&format!("1e{huge}"))).is_empty());
    }

    /// The issue's input: `{"big":123456789012345678901234567890}` lost digits. The change
    /// keeps the digits as sent.
    #[test]
    fn big_numbers_keep_their_digits_in_a_diff() {
        let before: Value = serde_json::from_str(r#"{"big":123456789012345678901234567890}"#).unwrap();
        let after: Value = serde_json::from_str(r#"{"big":123456789012345678901234567891}"#).unwrap();
        let text = serde_json::to_string(&diff(&before, &after)).unwrap();
        assert_eq!(text, r#"[{"path":["big"],"change":"changed","old":123456789012345678901234567890,"new":123456789012345678901234567891}]"#);
        let round: Vec<Change> = serde_json::from_str(&text).unwrap();
        assert_eq!(round[0].path, vec![PathSegment::Key("big".into())]);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..4).prop_map(Value::from),
            // Exactly representable floats: serde_json without `float_roundtrip` may be off
            // by an ulp when parsing, which the serde round trip below would trip over.
            (-8i32..8).prop_map(|n| json!(f64::from(n) / 4.0)),
            "[ab]{0,2}".prop_map(Value::String),
        ];
        // Small key and value domains make before/after share structure often.
        leaf.prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Documents with sensitive keys and credential-carrying strings, for the stored form.
    fn arb_sensitive_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            (0i64..3).prop_map(Value::from),
            "(a|b|Bearer abcdefgh1234|x=1&token=zz9)".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("(a|b|password|token)", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The stored diff written from borrowed trees is, byte for byte, the owned diff after
    /// `redact_changes`, serialized.
    fn stored_forms_agree(before: &Value, after: &Value) {
        let r = Redactor::default();
        let mut owned = diff(before, after);
        redact_changes(&mut owned, &r);
        let (tb, ta) = (before.to_string(), after.to_string());
        let arena = crate::pipeline::json::Bump::new();
        let (tb, ta) = (Json::parse(tb.as_bytes(), &arena).unwrap(), Json::parse(ta.as_bytes(), &arena).unwrap());
        let mut written = String::new();
        write_redacted_changes(&changes(&tb, &ta), &r, &mut written);
        assert_eq!(written, serde_json::to_string(&owned).unwrap(), "{before} -> {after}");
    }

    #[test]
    fn the_stored_diff_is_written_as_the_owned_one_serializes() {
        stored_forms_agree(
            &json!({"session": {"s1": {"expires": 1}, "other": [1, 2]}, "title": "a", "n": 1.0, "note": "Bearer abcdefgh1234"}),
            &json!({"session": {"s1": {"expires": 2}, "other": [1]}, "title": "b\n\"q\"", "n": 1, "note": "Bearer zyxwvuts9876", "new": {"token": "t", "k": [null]}}),
        );
        stored_forms_agree(&json!({"a": {"api_key": {"k1": 1}}}), &json!({"a": {"api_key": {"k2": 1}}}));
        stored_forms_agree(&json!([1, {"password": "p"}]), &json!([1]));
        stored_forms_agree(&json!(1), &json!({"token": 1}));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn apply_diff_gives_after(before in arb_json(), after in arb_json()) {
            let changes = diff(&before, &after);
            // Numerically equal numbers (`1` and `1.0`) give no change, so compare by value.
            let applied = apply(&before, &changes);
            prop_assert!(json_eq(&applied, &after), "{} != {}", applied, after);
            prop_assert!(diff(&before, &before).is_empty());
            prop_assert!(diff(&after, &after).is_empty());
            prop_assert_eq!(changes.is_empty(), json_eq(&before, &after));
            for c in &changes {
                prop_assert!(c.path.len() <= MAX_DEPTH);
            }
            let round: Vec<Change> = serde_json::from_str(&serde_json::to_string(&changes).unwrap()).unwrap();
            prop_assert_eq!(round, changes);
        }

        #[test]
        fn stored_diff_from_trees_matches_the_owned_one(before in arb_sensitive_json(), after in arb_sensitive_json()) {
            stored_forms_agree(&before, &after);
        }
    }
}
