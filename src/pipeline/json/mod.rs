//! A JSON tree that borrows from the text it was parsed from (issue 15). The pipeline reads
//! every body and reported state once into this tree, then redacts while it serializes
//! (`Redactor::write_redacted`) and diffs by reference: no `serde_json::Value` tree with an
//! allocation per string and per map node, no clone of a state to redact or diff it.
//!
//! Containers, and strings that had escapes, live in an arena ([`Bump`]) the caller owns:
//! the pipeline thread resets one arena per record, so a tree costs no `malloc`/`free` pair per
//! object and array (those were about a fifth of the processing stage's instructions).
//!
//! It keeps `serde_json::Value`'s semantics where they show in stored text, so the columns
//! are the same bytes as before: objects iterate and serialize in sorted key order with the
//! last of duplicate keys winning (serde_json's `Map` is a `BTreeMap`), numbers keep the
//! digits as written (`arbitrary_precision`), strings are escaped as serde_json escapes them.
//! Parsing is this module's own single pass (`parse`), which accepts what serde_json accepts
//! and keeps what serde_json's `Value` keeps; only a refusal goes to serde_json, for its message.

mod parse;

use std::fmt;

pub use bumpalo::Bump;
use serde_json::Value;

/// An array's items, in the tree's arena.
pub type Items<'a> = bumpalo::collections::Vec<'a, Json<'a>>;
/// An object's entries, in the tree's arena.
pub type Entries<'a> = bumpalo::collections::Vec<'a, (Text<'a>, Json<'a>)>;

/// Text in a tree: a string's content, an object key or a number's digits.
///
/// Nothing in a tree owns heap memory (text is borrowed from the input or sits in the arena),
/// so dropping a tree walks nothing.
#[derive(Debug, Clone, Copy)]
pub enum Text<'a> {
    /// Borrowed from JSON text, and known to need no escaping (it was written without any).
    Plain(&'a str),
    /// Borrowed (from the record, or unescaped into the arena), and may need escaping.
    Borrowed(&'a str),
}

impl Text<'_> {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            Text::Plain(s) | Text::Borrowed(s) => s,
        }
    }

    /// Appends the text as a JSON string literal.
    pub fn write_quoted(&self, out: &mut String) {
        match self {
            Text::Plain(s) => quote_plain(s, out),
            Text::Borrowed(s) => write_str(s, out),
        }
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

fn quote_plain(s: &str, out: &mut String) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// The text `write` appends, in a string of exactly its size: written into a reused
/// per-thread buffer first, so a growing output is not reallocated step by step.
pub fn written(write: impl FnOnce(&mut String)) -> String {
    thread_local! {
        static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            write(&mut buf);
            let text = buf.as_str().to_owned();
            // A huge body once should not pin its buffer for the thread's life.
            if buf.capacity() > 1 << 20 {
                *buf = String::new();
            }
            text
        }
        // Nested use (not expected): a buffer of its own.
        Err(_) => {
            let mut buf = String::new();
            write(&mut buf);
            buf
        }
    })
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json escapes it.
pub fn write_str(s: &str, out: &mut String) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        quote_plain(s, out);
    } else {
        // Rare (escapes in the input, or values made by redaction): serde_json's own escaping.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// A JSON value borrowing from its text (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, its digits as written.
    Number(Text<'a>),
    /// A string.
    String(Text<'a>),
    /// An array.
    Array(Items<'a>),
    /// An object: entries sorted by key, keys unique.
    Object(Entries<'a>),
}

impl<'a> Json<'a> {
    /// Parses JSON text; strings without escapes are borrowed, containers and unescaped
    /// strings go in `arena`.
    pub fn parse(bytes: &'a [u8], arena: &'a Bump) -> Result<Json<'a>, serde_json::Error> {
        // One UTF-8 check of the whole text is cheaper than a check of each string.
        match std::str::from_utf8(bytes) {
            Ok(text) => Json::parse_str(text, arena),
            // Not UTF-8, so not JSON: serde_json's message (and, were it to accept the text,
            // its tree rather than a panic on the pipeline thread).
            Err(_) => serde_json::from_slice::<Value>(bytes).map(|v| Json::copy_of(&v, arena)),
        }
    }

    /// [`Self::parse`] of text already known to be UTF-8.
    pub fn parse_str(text: &'a str, arena: &'a Bump) -> Result<Json<'a>, serde_json::Error> {
        match parse::parse(text, arena) {
            Ok(v) => Ok(v),
            // serde_json's message for the refusal (and, should the two ever disagree, its
            // tree: the `json` fuzz target and the tests below look for such a case).
            Err(parse::Invalid) => serde_json::from_str::<Value>(text).map(|v| Json::copy_of(&v, arena)),
        }
    }

    /// This module's parser alone, without serde_json behind it (for the differential tests
    /// and the `json` fuzz target): `None` when it refuses the text.
    pub fn parse_own(text: &'a str, arena: &'a Bump) -> Option<Json<'a>> {
        parse::parse(text, arena).ok()
    }

    /// A tree borrowing from a `serde_json::Value` (a state the host reported as an object).
    pub fn from_value(v: &'a Value, arena: &'a Bump) -> Json<'a> {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(Text::Borrowed(n.as_str())),
            Value::String(s) => Json::String(Text::Borrowed(s)),
            Value::Array(items) => Json::Array(Items::from_iter_in(items.iter().map(|v| Json::from_value(v, arena)), arena)),
            Value::Object(map) => Json::from_map(map, arena),
        }
    }

    /// [`Self::from_value`] of an object.
    pub fn from_map(map: &'a serde_json::Map<String, Value>, arena: &'a Bump) -> Json<'a> {
        // `Map` iterates in sorted order, keys unique.
        let mut entries = Entries::with_capacity_in(map.len(), arena);
        entries.extend(map.iter().map(|(k, v)| (Text::Borrowed(k), Json::from_value(v, arena))));
        Json::Object(entries)
    }

    /// A tree of `v` with its text copied into `arena` (a `Value` that does not outlive it).
    fn copy_of(v: &Value, arena: &'a Bump) -> Json<'a> {
        let text = |s: &str| Text::Borrowed(arena.alloc_str(s));
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(text(n.as_str())),
            Value::String(s) => Json::String(text(s)),
            Value::Array(items) => Json::Array(Items::from_iter_in(items.iter().map(|v| Json::copy_of(v, arena)), arena)),
            Value::Object(map) => Json::Object(Entries::from_iter_in(map.iter().map(|(k, v)| (text(k), Json::copy_of(v, arena))), arena)),
        }
    }

    /// An empty object in `arena` (allocates nothing).
    pub fn empty_object(arena: &'a Bump) -> Json<'a> {
        Json::Object(Entries::new_in(arena))
    }

    /// The value as a `serde_json::Value` (for the owned diff API).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(t) => serde_json::from_str(t.as_str()).unwrap_or(Value::Null),
            Json::String(t) => Value::String(t.as_str().to_owned()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(entries) => Value::Object(entries.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_value())).collect()),
        }
    }

    /// The value of `key`, when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        let Json::Object(entries) = self else { return None };
        // A record's handful of fields: comparing lengths first rejects most keys without a
        // `memcmp` call, which the binary search's ordered comparisons cannot.
        if entries.len() <= 16 {
            return entries.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v);
        }
        entries.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &entries[i].1)
    }

    /// Takes `key` out of an object.
    pub fn remove(&mut self, key: &str) -> Option<Json<'a>> {
        let Json::Object(entries) = self else { return None };
        let i = entries.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(entries.remove(i).1)
    }

    /// Sets `key` in an object (replacing its value); does nothing to anything else.
    pub fn insert(&mut self, key: Text<'a>, value: Json<'a>) {
        let Json::Object(entries) = self else { return };
        match entries.binary_search_by(|(k, _)| k.as_str().cmp(key.as_str())) {
            Ok(i) => entries[i].1 = value,
            Err(i) => entries.insert(i, (key, value)),
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The items, when this is an array.
    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The items, when this is an array.
    pub fn as_array_mut(&mut self) -> Option<&mut Items<'a>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The boolean, when this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as `u64`, when it is an integer in range (serde_json's `as_u64`).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(t) => t.as_str().parse().ok(),
            _ => None,
        }
    }

    /// The number as `i64`, when it is an integer in range (serde_json's `as_i64`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(t) => t.as_str().parse().ok(),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// Appends the compact JSON text (as `serde_json::to_string` of the same `Value` writes).
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Number(t) => out.push_str(t.as_str()),
            Json::String(t) => t.write_quoted(out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    k.write_quoted(out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write(&mut s);
        f.write_str(&s)
    }
}

/// Sorts object entries by key; of duplicate keys the last one stays (as in serde_json's
/// `Map`, where a later insert replaces the value).
fn sort_unique(entries: &mut Entries<'_>) {
    if entries.windows(2).all(|w| w[0].0.as_str() < w[1].0.as_str()) {
        return;
    }
    // Reversed, a stable sort puts the last of equal keys first, and `dedup` keeps the first.
    entries.reverse();
    entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    entries.dedup_by(|later, earlier| later.0.as_str() == earlier.0.as_str());
}

/// A tree's node, for code that reads both [`Json`] and `serde_json::Value` (the diff).
pub trait Node: Sized {
    /// The object entries, in sorted key order.
    type Entries<'n>: Iterator<Item = (&'n str, &'n Self)>
    where
        Self: 'n;
    /// What this node is.
    fn kind(&self) -> Kind<'_, Self>;
    /// Number of entries of an object (0 otherwise).
    fn object_len(&self) -> usize;
    /// An owned copy, for a change that outlives the tree.
    fn to_value(&self) -> Value;
}

/// A node's kind, with its content borrowed.
pub enum Kind<'n, N: Node + 'n> {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number's digits as written.
    Number(&'n str),
    /// A string.
    String(&'n str),
    /// An array's items.
    Array(&'n [N]),
    /// An object's entries, sorted by key.
    Object(N::Entries<'n>),
}

type ValueEntries<'n> = std::iter::Map<serde_json::map::Iter<'n>, fn((&'n String, &'n Value)) -> (&'n str, &'n Value)>;
type JsonEntries<'n, 'a> = std::iter::Map<std::slice::Iter<'n, (Text<'a>, Json<'a>)>, fn(&'n (Text<'a>, Json<'a>)) -> (&'n str, &'n Json<'a>)>;

fn value_entry<'n>((k, v): (&'n String, &'n Value)) -> (&'n str, &'n Value) {
    (k.as_str(), v)
}

fn json_entry<'n, 'a>((k, v): &'n (Text<'a>, Json<'a>)) -> (&'n str, &'n Json<'a>) {
    (k.as_str(), v)
}

impl Node for Value {
    type Entries<'n> = ValueEntries<'n>;
    fn kind(&self) -> Kind<'_, Self> {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(b) => Kind::Bool(*b),
            Value::Number(n) => Kind::Number(n.as_str()),
            Value::String(s) => Kind::String(s),
            Value::Array(items) => Kind::Array(items),
            Value::Object(map) => Kind::Object(map.iter().map(value_entry as fn(_) -> _)),
        }
    }
    fn object_len(&self) -> usize {
        self.as_object().map_or(0, serde_json::Map::len)
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<'a> Node for Json<'a> {
    type Entries<'n>
        = JsonEntries<'n, 'a>
    where
        'a: 'n;
    fn kind(&self) -> Kind<'_, Self> {
        match self {
            Json::Null => Kind::Null,
            Json::Bool(b) => Kind::Bool(*b),
            Json::Number(t) => Kind::Number(t.as_str()),
            Json::String(t) => Kind::String(t.as_str()),
            Json::Array(items) => Kind::Array(items),
            Json::Object(entries) => Kind::Object(entries.iter().map(json_entry as fn(_) -> _)),
        }
    }
    fn object_len(&self) -> usize {
        match self {
            Json::Object(entries) => entries.len(),
            _ => 0,
        }
    }
    fn to_value(&self) -> Value {
        Json::to_value(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An arena that lives as long as the test (leaked: tests are short).
    fn arena() -> &'static Bump {
        Box::leak(Box::new(Bump::new()))
    }

    /// The parser alone, and `parse` with its fallback, against serde_json's `Value`.
    fn same_as_serde_json(text: &str) {
        let own = Json::parse_own(text, arena());
        let tree = Json::parse(text.as_bytes(), arena());
        let value = serde_json::from_str::<Value>(text);
        match (own, value) {
            (Some(t), Ok(v)) => {
                assert_eq!(t.to_string(), serde_json::to_string(&v).unwrap(), "{text}");
                assert_eq!(t.to_value(), v);
                assert_eq!(Json::from_value(&v, arena()).to_string(), t.to_string());
                assert_eq!(tree.unwrap(), t, "{text}");
            }
            (None, Err(e)) => assert_eq!(tree.unwrap_err().to_string(), e.to_string(), "{text}"),
            (t, v) => panic!("{text:?}: parser {t:?}, serde_json {v:?}"),
        }
    }

    #[test]
    fn the_parser_refuses_and_keeps_what_serde_json_does_at_the_edges() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        for n in [1, 126, 127, 128, 129, 300] {
            same_as_serde_json(&nested(n));
            same_as_serde_json(&objects(n));
        }
        assert!(Json::parse_own(&nested(127), arena()).is_some() && Json::parse_own(&nested(128), arena()).is_none());
        for text in [
            // Numbers: the exponent is kept as serde_json keeps it (`e`, with a sign).
            "1E5", "1e5", "1e+5", "1E-5", "-1.5E+03", "2.50e-0", "-0", "0.0", "-0.0e0", "18446744073709551616",
            "-9223372036854775809", "01", "-01", "-", "1.", ".5", "1e", "1e+", "+1", "0x10", "1.e3", "--1", "-a",
            // Strings.
            r#""\u00e9\u0000\/\b\f\n\r\t""#, r#""\uD83D\uDE00""#, r#""\ud83d""#, r#""\ud83dx""#, r#""\ud83d\n""#,
            r#""\ud83d\u0041""#, r#""\ude00""#, r#""\u00g0""#, r#""\u00""#, r#""\x""#, "\"tab\there\"", "\"a\u{1}b\"",
            "\"a\u{7f}b\"", "\"unterminated", "\"esc\\", r#""a\"b""#,
            // Structure and blanks.
            " \t\r\n[ 1 , 2 ]\n ", "[1 2]", "{\"a\" 1}", "{\"a\":1,}", "{,}", "[,1]", "{1:2}", "{\"a\":}", "[", "{", "]", "",
            " ", "\u{feff}1", "\u{c}1", "tru", "nulll", "null null", "[true,false,null]", "{\"\":\"\"}", "{\"a\":1}x",
        ] {
            same_as_serde_json(text);
        }
    }

    #[test]
    fn the_fallback_copy_of_a_serde_json_value_is_the_parsed_tree() {
        // Used only should the parser refuse a text serde_json accepts (none is known).
        let text = r#"{"b":[1,2.50,-0,1E+3,"x\ny",null,true],"a":{"k":"v"},"é":"😀"}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let copy = Json::copy_of(&value, arena());
        assert_eq!(copy, Json::parse(text.as_bytes(), arena()).unwrap());
        assert_eq!(copy.to_string(), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn an_object_keyed_like_serde_jsons_private_markers_stays_an_object() {
        // serde_json's `Value` reads it as the number 12 (its `arbitrary_precision` marker);
        // it is what the client sent, an object.
        let t = Json::parse(br#"{"$serde_json::private::Number":"12"}"#, arena()).unwrap();
        assert_eq!(t.to_string(), r#"{"$serde_json::private::Number":"12"}"#);
        assert!(t.is_object());
        let t = Json::parse(br#"{"$serde_json::private::Number":"not digits"}"#, arena()).unwrap();
        assert_eq!(t.get("$serde_json::private::Number").and_then(Json::as_str), Some("not digits"));
        // The same for the raw-value marker (serde_json's `raw_value` feature reads it as `[1,2]`).
        let t = Json::parse(br#"{"$serde_json::private::RawValue":"[1,2]"}"#, arena()).unwrap();
        assert_eq!(t.to_string(), r#"{"$serde_json::private::RawValue":"[1,2]"}"#);
    }

    #[test]
    fn text_is_written_as_serde_json_writes_its_value() {
        for text in [
            r#"{"b":1,"a":[true,false,null],"c":{"z":"x","y":"\n\"\\\u0001é😀"}}"#,
            r#"{"a":1,"a":2,"b":{"k":[1],"k":"last"},"a":3}"#,
            r#"[1.0, -0, 1e5, 10E-1, 123456789012345678901234567890, -1.5e-300]"#,
            r#""\ud83d\ude00 and \u00e9""#,
            "{}",
            "[]",
            r#"{"a":"#,
            r#""\ud83d""#,
            "[1,]",
            "nul",
        ] {
            same_as_serde_json(text);
        }
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_in_the_arena() {
        let t = Json::parse(br#"{"k":"plain","e":"a\nb"}"#, arena()).unwrap();
        assert!(matches!(t.get("k"), Some(Json::String(Text::Plain("plain")))));
        assert!(matches!(t.get("e"), Some(Json::String(Text::Borrowed(s))) if *s == "a\nb"));
        assert_eq!(t.get("k").and_then(Json::as_str), Some("plain"));
    }

    #[test]
    fn objects_are_edited_in_key_order() {
        let mut t = Json::parse(br#"{"b":1,"d":2}"#, arena()).unwrap();
        t.insert(Text::Plain("c"), Json::Null);
        t.insert(Text::Plain("a"), Json::Bool(true));
        t.insert(Text::Plain("b"), Json::Bool(false));
        assert_eq!(t.to_string(), r#"{"a":true,"b":false,"c":null,"d":2}"#);
        assert_eq!(t.remove("c"), Some(Json::Null));
        assert_eq!(t.remove("zz"), None);
        assert_eq!(t.to_string(), r#"{"a":true,"b":false,"d":2}"#);
    }

    fn arb_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            "-?[0-9]{1,3}(\\.[0-9]{1,2})?([eE][-+]?[0-9]{1,2})?",
            "[a-c\\\\\"\\n é😀]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-d]{1,2}", inner), 0..5)
                    .prop_map(|v| format!("{{{}}}", v.into_iter().map(|(k, x)| format!("\"{k}\":{x}")).collect::<Vec<_>>().join(","))),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_text_reads_and_writes_as_serde_json_does(text in arb_json()) {
            same_as_serde_json(&text);
        }
    }
}
