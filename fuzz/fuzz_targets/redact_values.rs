//! The value rules: credentials inside string values that are not under a sensitive key
//! (`Redactor::redact_value`, `redact_str`) and inside text that did not parse
//! (`Redactor::redact_text`).
//!
//! Input drives `arbitrary` to plant one generated secret (a unique marker plus fuzzed
//! credential characters, so it looks like a credential and holds nothing structural) in one
//! of the places the README's rules name:
//! * a URL query parameter with a sensitive name (raw or percent-encoded), or a URL's
//!   userinfo password;
//! * a `key=value` / `key: value` / `"key": value` / `'key': value` pair in free text or a
//!   header line (bare, quoted, bracketed, or `Bearer <secret>` after a header name);
//! * a `Bearer|Basic|Token <secret>` credential;
//! * the signature of a JSON Web Token;
//! * the body of a PEM private key block;
//! * a JSON document encoded inside the string (under a sensitive key, or holding one of the
//!   above in one of its strings), possibly encoded once more as a JSON string;
//!
//! with fuzzed text before and after it, in a string at some depth of a fuzzed JSON tree
//! under keys that are not sensitive.
//!
//! Checked: the secret survives neither `redact_value` on the tree (which also reports the
//! string's path) nor `redact_str` on the string, nor `redact_text` on the compact and the
//! pretty serialization of the tree and on the string itself, whole or cut at any point after
//! the secret (after the `@` for a userinfo password: before it the text is not a URL
//! password). Context that changes what the planted text is, is not checked: text before
//! that ends inside a word (it would glue onto the key, scheme or token) or inside a string
//! or escape, and text after that extends a token's word (JWT) or makes a quoted string a key.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_pro::pipeline::redact::{Redactor, json_pointer};
use tether_pro_fuzz::{Gen, Oracle, configured_keys};

/// The secret's marker: it occurs nowhere else.
const MARK: &str = "QZX7";
/// Characters of a generated secret after the marker: base64url, valid in every place the
/// secret is planted (query value, userinfo, header, credential, JWT segment, PEM body).
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Realistic text around the planted one (or fuzzed text: see `context`).
const BEFORE: &[&str] = &[
    "", "see ", "Host: example.test\r\n", "GET /cb HTTP/1.1\n", "note: ", "{\"a\":1} ", "x=1&", "(", "<p>", "ratio 3:2 ",
    "tokenize ", "\n", "a, ", "the bearer of ", "passport ", "https://example.test/x?y=1 ", "\t", "'",
];
const AFTER: &[&str] = &[
    "", " now", "\r\nAccept: */*", "\n", "&x=1", ";", ")", "</p>", ", ok", "\"}", " and more text", "?", ".", "'", "]",
];

/// Where the secret is planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Query,
    Userinfo,
    Pair,
    Scheme,
    Jwt,
    Pem,
    Json,
}

const SHAPES: &[Shape] = &[Shape::Query, Shape::Userinfo, Shape::Pair, Shape::Scheme, Shape::Jwt, Shape::Pem, Shape::Json];

struct Planter<'a> {
    generator: Gen<'a>,
    oracle: &'a Oracle,
    keys: &'a [&'a str],
    secret: String,
}

fn chars_from(u: &mut Unstructured, alphabet: &[u8], min: usize, max: usize) -> Result<String> {
    let n = u.int_in_range(min..=max)?;
    (0..n).map(|_| u.choose(alphabet).map(|c| *c as char)).collect()
}

/// Each ASCII letter in upper or lower case.
fn any_case(u: &mut Unstructured, word: &str) -> Result<String> {
    let bits: u32 = u.arbitrary()?;
    Ok(word.chars().enumerate().map(|(i, c)| if bits >> (i % 32) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect())
}

/// Bytes the scrub reads as part of an unquoted word (a form field or header name).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '%' | '+') || !c.is_ascii()
}

/// Percent-encodes a form field name (`+` or `%20` for a space).
fn percent_encode(u: &mut Unstructured, key: &str) -> Result<String> {
    let upper = u.arbitrary::<bool>()?;
    let plus = u.arbitrary::<bool>()?;
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b' ' if plus => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') => out.push(b as char),
            b if upper => out.push_str(&format!("%{b:02X}")),
            b => out.push_str(&format!("%{b:02x}")),
        }
    }
    Ok(out)
}

impl Planter<'_> {
    /// A key the oracle calls sensitive: a generated spelling, or a configured key itself.
    fn sensitive_key(&mut self, u: &mut Unstructured) -> Result<String> {
        let k = self.generator.key(u)?;
        Ok(if self.oracle.is_sensitive(&k) { k } else { u.choose(self.keys)?.to_string() })
    }

    /// A sensitive key as an unquoted word: as it is when every character can be part of a
    /// word, else (or sometimes anyway) percent-encoded.
    fn word_key(&mut self, u: &mut Unstructured) -> Result<String> {
        let k = self.sensitive_key(u)?;
        if !k.is_empty() && k.chars().all(is_word_char) && u.ratio(3u8, 4)? { Ok(k) } else { percent_encode(u, &k) }
    }

    /// The planted text, its shape, and the shape that holds the secret itself (inside JSON
    /// encoded in the string, another shape may).
    fn plant(&mut self, u: &mut Unstructured, depth: usize) -> Result<(String, Shape, Shape)> {
        let secret = self.secret.clone();
        let mut shape = *u.choose(SHAPES)?;
        if shape == Shape::Json && depth >= 2 {
            shape = Shape::Pair;
        }
        let mut innermost = shape;
        let text = match shape {
            Shape::Query => {
                let base = *u.choose(&["https://example.test/cb", "http://h.test:8080/a/b", "/oauth/callback", "app://x", ""])?;
                let mut query = String::new();
                for _ in 0..u.int_in_range(0..=2)? {
                    query.push_str(u.choose(&["code=1", "state=ok", "x=1", "page=2", "redirect=%2Fhome", "flag"])?);
                    query.push('&');
                }
                let key = self.word_key(u)?;
                query.push_str(&format!("{key}={secret}"));
                if u.arbitrary()? {
                    query.push_str(u.choose(&["&x=1", "&state=ok&page=2", "#frag", "&", ";a=b"])?);
                }
                if base.is_empty() { query } else { format!("{base}?{query}") }
            }
            Shape::Userinfo => {
                let scheme = u.choose(&["https", "postgres", "redis", "mongodb+srv", "amqp", "ftp"])?;
                let user = u.choose(&["app", "u", "", "user.name", "a-b_c~d", "%40dmin"])?;
                let host = u.choose(&["db.internal", "example.test:5432", "[::1]:6379", "h"])?;
                let tail = u.choose(&["", "/main", "/x?y=1", "?ssl=true", "#f"])?;
                format!("{scheme}://{user}:{secret}@{host}{tail}")
            }
            Shape::Pair => {
                let value = match u.int_in_range(0u8..=5)? {
                    0 | 1 => secret.clone(),
                    2 => format!("\"{secret}\""),
                    3 => format!("'{secret}'"),
                    4 => format!("[\"{secret}\", 1]"),
                    _ => format!("{{\"x\": \"{secret}\"}}"),
                };
                match u.int_in_range(0u8..=5)? {
                    // `key=value`: a form field, a query parameter, free text.
                    0 => format!("{}{}{value}", self.word_key(u)?, u.choose(&["=", " = ", "\t="])?),
                    // `key: value`: a header line, YAML, free text.
                    1 => format!("{}{}{value}", self.word_key(u)?, u.choose(&[": ", ":", ":\t", " : "])?),
                    // A header carrying an authorization scheme.
                    2 => {
                        let scheme = *u.choose(&["bearer", "basic", "token"])?;
                        format!("{}: {} {secret}", self.word_key(u)?, any_case(u, scheme)?)
                    }
                    3 => format!("'{}': {value}", self.word_key(u)?),
                    _ => {
                        let key = serde_json::to_string(&self.sensitive_key(u)?).expect("a string serializes");
                        format!("{key}{}{value}", u.choose(&[":", ": ", " : ", "="])?)
                    }
                }
            }
            Shape::Scheme => {
                let scheme = *u.choose(&["bearer", "basic", "token"])?;
                let scheme = any_case(u, scheme)?;
                let gap = u.choose(&[" ", "  ", " \t"])?;
                let padding = u.choose(&["", "", "=", "=="])?;
                format!("{scheme}{gap}{secret}{padding}")
            }
            Shape::Jwt => {
                let header = if u.arbitrary()? {
                    u.choose(&["eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJub25lIn0", "eyJ0eXAiOiJKV1QifQ"])?.to_string()
                } else {
                    format!("eyJ{}", chars_from(u, SECRET_CHARS, 4, 12)?)
                };
                let payload = if u.arbitrary()? { "eyJzdWIiOiIxIn0".to_owned() } else { chars_from(u, SECRET_CHARS, 1, 10)? };
                let pre = chars_from(u, SECRET_CHARS, 0, 4)?;
                let post = chars_from(u, SECRET_CHARS, 0, 4)?;
                format!("{header}.{payload}.{pre}{secret}{post}")
            }
            Shape::Pem => {
                let label = u.choose(&["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "])?;
                let nl = u.choose(&["\n", "\r\n"])?;
                let mut body = String::new();
                for _ in 0..u.int_in_range(0..=2)? {
                    body.push_str(&chars_from(u, BASE64, 1, 64)?);
                    body.push_str(nl);
                }
                body.push_str(&format!("{}{secret}{}", chars_from(u, BASE64, 0, 8)?, chars_from(u, BASE64, 0, 8)?));
                body.push_str(u.choose(&["", "=", "=="])?);
                format!("-----BEGIN {label}PRIVATE KEY-----{nl}{body}{nl}-----END {label}PRIVATE KEY-----")
            }
            Shape::Json => {
                let mut doc = self.generator.object(u, self.generator.max_depth.saturating_sub(1))?;
                if u.arbitrary()? {
                    let value = match u.int_in_range(0u8..=2)? {
                        0 => Value::String(secret.clone()),
                        1 => serde_json::json!([secret.clone(), 1]),
                        _ => serde_json::json!({"x": secret.clone()}),
                    };
                    doc.insert(self.sensitive_key(u)?, value);
                } else {
                    let (inner, _, inner_shape) = self.plant(u, depth + 1)?;
                    doc.insert(self.generator.key(u)?, Value::String(inner));
                    innermost = inner_shape;
                }
                let doc = Value::Object(doc);
                let text = if u.arbitrary()? { doc.to_string() } else { serde_json::to_string_pretty(&doc).expect("serializes") };
                // Sometimes encoded once more: a JSON string holding the document.
                if u.arbitrary()? { serde_json::to_string(&text).expect("a string serializes") } else { text }
            }
        };
        Ok((text, shape, innermost))
    }
}

/// Text around the planted one: realistic, or fuzzed.
fn context(u: &mut Unstructured, realistic: &[&str]) -> Result<String> {
    Ok(if u.ratio(2u8, 3)? { u.choose(realistic)?.to_string() } else { u.arbitrary()? })
}

/// The cut points to try: every character boundary from `from` on, or (for long texts) the
/// first 24 and an even spread of the rest (each cut is a whole scrub: keep the runs fast).
fn cuts(text: &str, from: usize) -> Vec<usize> {
    let points: Vec<usize> = (from..=text.len()).filter(|i| text.is_char_boundary(*i)).collect();
    if points.len() <= 48 {
        return points;
    }
    let step = points.len() / 24;
    points.iter().enumerate().filter(|(i, _)| *i < 24 || i % step == 0).map(|(_, p)| *p).chain([text.len()]).collect()
}

/// Where a cut must start for the secret to be recognisable: after the secret, and for a URL
/// password after the `@` that makes it one.
fn guard(text: &str, secret: &str, shape: Shape) -> Option<usize> {
    let end = text.find(secret)? + secret.len();
    Some(if shape == Shape::Userinfo { end + text[end..].find('@')? + 1 } else { end })
}

fn assert_scrubbed(redactor: &Redactor, what: &str, text: &str, secret: &str, innermost: Shape) {
    let Some(from) = guard(text, secret, innermost) else { panic!("{what}: the planted secret is not in {text:?}") };
    for cut in cuts(text, from) {
        let out = redactor.redact_text(&text[..cut]);
        assert!(
            !out.contains(secret),
            "secret survives redact_text of {what}, cut at {cut} of {} ({innermost:?})\n  input:  {:?}\n  output: {out:?}",
            text.len(),
            &text[..cut]
        );
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let keys = configured_keys(u)?;
    let redactor = Redactor::new(&keys);
    let oracle = Oracle::new(&keys);
    let secret = format!("{MARK}{}", chars_from(u, SECRET_CHARS, 2, 12)?);
    let mut planter = Planter { generator: Gen::new(&keys, 3), oracle: &oracle, keys: &keys, secret: secret.clone() };
    let (planted, shape, innermost) = planter.plant(u, 0)?;
    let before = context(u, BEFORE)?;
    let after = context(u, AFTER)?;

    // Context that changes what the planted text is (module docs).
    if before.ends_with(is_word_char) || before.contains('\\') || before.matches('"').count() % 2 == 1 {
        return Ok(());
    }
    if planted.ends_with('"') && after.trim_start_matches([' ', '\t']).starts_with([':', '=']) {
        return Ok(());
    }
    // A JWT glued to more word characters is a longer word, not a JWT; full stops that end
    // a sentence after it are not glue.
    if shape == Shape::Jwt && after.trim_start_matches('.').starts_with(is_word_char) {
        return Ok(());
    }
    let text = format!("{before}{planted}{after}");
    if text.matches(MARK).count() != 1 {
        return Ok(());
    }

    // The string, at some depth of a tree, under keys that are not sensitive.
    let mut tree = Value::String(text.clone());
    let mut path: Vec<String> = Vec::new();
    let mut g = Gen::new(&keys, 2);
    for _ in 0..u.int_in_range(0..=5)? {
        if u.arbitrary()? {
            let mut m = g.object(u, 1)?;
            let mut k = g.key(u)?;
            if oracle.is_sensitive(&k) {
                k = "notes".into();
            }
            m.insert(k.clone(), tree);
            tree = Value::Object(m);
            path.push(format!("/{}", k.replace('~', "~0").replace('/', "~1")));
        } else {
            let mut items = vec![g.value(u, 1)?, g.value(u, 1)?];
            let at = u.int_in_range(0..=2)?;
            items.insert(at, tree);
            tree = Value::Array(items);
            path.push(format!("/{at}"));
        }
    }
    let pointer: String = path.iter().rev().map(String::as_str).collect();
    if tree.to_string().matches(MARK).count() != 1 {
        return Ok(());
    }

    let mut out = tree.clone();
    let mut recorded = Vec::new();
    redactor.redact_value_recording(&mut out, &mut |p| recorded.push(json_pointer(p)));
    let shown = out.to_string();
    assert!(!shown.contains(&secret), "secret survives redact_value ({shape:?})\n  input:  {text:?}\n  output: {shown}");
    assert!(recorded.contains(&pointer), "the scrubbed string's path {pointer:?} is not reported: {recorded:?}");
    let alone = redactor.redact_str(&text);
    assert!(alone.as_deref().is_some_and(|s| !s.contains(&secret)), "secret survives redact_str ({shape:?})\n  input:  {text:?}\n  output: {alone:?}");

    assert_scrubbed(&redactor, "the string", &text, &secret, innermost);
    assert_scrubbed(&redactor, "the compact tree", &tree.to_string(), &secret, innermost);
    assert_scrubbed(&redactor, "the pretty tree", &serde_json::to_string_pretty(&tree).expect("serializes"), &secret, innermost);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
