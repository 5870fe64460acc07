//! Shared pieces of the fuzz targets: JSON trees built from fuzz input with `arbitrary`, keys
//! drawn from the configured secret keys in varied spellings, and an independent, naive
//! oracle of the redaction rule (README "Redaction") to check the real implementation against.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};
use tether_pro::pipeline::redact::{QUALIFIERS, REDACTED};

/// Keys configured in a fuzzed redactor: the defaults, or a few of these.
pub const KEY_POOL: &[&str] = &[
    "password", "token", "api_key", "X-Api-Key", "secret", "ssn", "cvv", "cookie", "session", "Authorization",
    "credit_card", "db.Password", "İd", "paß", "K", "x y", "a-b_c.d", "clé", "ТОКЕН",
];

/// Spellings put in front of a configured key (still sensitive: a key *ending* with it is).
const PREFIXES: &[&str] = &["", "", "user_", "X-", "db.", "client ", "new", "old_", "Set-", "ÄÖ", "x-", "__", "İ"];
/// Spellings put after a configured key (usually no longer sensitive, unless it ends with one).
const SUFFIXES: &[&str] = &["_policy", "s", "_count", "Enabled", "_id", "-", "_", ".", " ", "ıd", "\t", "_token"];
/// Separators that may replace `_` inside a key.
const SEPARATORS: &[&str] = &["_", "-", ".", " ", "", "\u{a0}", "__"];
/// Ordinary keys.
const PLAIN: &[&str] = &[
    "title", "done", "priority", "notes", "metadata", "checklist", "item", "tags", "name", "settings",
    "tokens_used", "session_count", "password_policy", "cookies_enabled", "auth", "credentials", "integrations", "0",
    "", "tether_id", "mutations", "payload", "data", "server_state", "messages",
];

/// Strings carrying a token `{s}` where the value rules find credentials: the template, the
/// key that makes it a credential (none: the shape alone does), and whether the token needs
/// the text after it to be recognised (a URL password needs its `@`).
const CARRIERS: &[(&str, Option<&str>, bool)] = &[
    ("Authorization: Bearer {s}", None, false),
    ("sent with basic {s} by the app", None, false),
    ("https://example.test/cb?code=1&access_token={s}&state=ok", Some("access_token"), false),
    ("postgres://app:{s}@db.internal:5432/main", None, true),
    ("login with password={s} then", Some("password"), false),
    ("my passwordHash: {s}", Some("passwordHash"), false),
    ("{\"api_key\":\"{s}\",\"n\":1}", Some("api_key"), false),
    ("{\"inner\":\"{\\\"secret\\\":\\\"{s}\\\"}\"}", Some("secret"), false),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{s} end", None, false),
    ("-----BEGIN PRIVATE KEY-----\n{s}\n-----END PRIVATE KEY-----", None, false),
    // A PEM block cut short, then a pair whose quoted value its body cut must not pass
    // (found by the redact fuzz target, 2 December).
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEab\nmy api_key: \"{s}\"", Some("api_key"), false),
    // The same with the key's value over several lines, and a block on one line whose body
    // a pair follows (found by a fresh-eyes test of that fix).
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEab\napi_key: {\n  \"a\": \"{s}\"\n}", Some("api_key"), false),
    ("-----BEGIN PRIVATE KEY-----MIIE{s} note: \"x\"", None, false),
    // A scheme word or a JWT right after a byte that joins a word (found by a fresh-eyes test).
    ("[Bearer {s}]", None, false),
    ("«eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{s}»", None, false),
];

/// Ordinary text around a token, which the value rules must leave as it is.
const ORDINARY: &[&str] = &["tokenize {s}", "https://example.test/{s}?x=1&page=2", "the bearer of {s}", "ratio 3:2 {s}", "passport {s}"];

/// A token the generator put where the value rules must find it (see [`Gen::carried`]).
#[derive(Debug, Clone)]
pub struct Carried {
    pub token: String,
    /// The whole string it was put in (the carrier template filled in).
    pub text: String,
    /// Recognised only with the text after it (a body cut right after it may keep it).
    pub needs_tail: bool,
}

/// The tokens of `carried` that occur exactly once in `inputs` (elsewhere they may also be
/// ordinary text), inside the string they were carried in (its text through the token, as it
/// is or JSON-escaped once or twice, as it reads inside a string), and (with `cut`, for text that may have been cut short)
/// only those recognised without what follows them. A token whose carrier did not make it into
/// the inputs (its map entry overwritten by a later one of the same key) may still be there,
/// put by the fuzzer into ordinary text or a key, where no rule applies to it (found by the
/// rows and redact targets: libFuzzer copies compared strings into its inputs).
pub fn checkable_carried(carried: &[Carried], inputs: &str, cut: bool) -> Vec<String> {
    let escaped = |s: &str| {
        let quoted = serde_json::to_string(s).expect("a string serializes");
        quoted[1..quoted.len() - 1].to_owned()
    };
    carried
        .iter()
        .filter(|c| !(cut && c.needs_tail) && inputs.matches(c.token.as_str()).count() == 1)
        .filter(|c| {
            // Through the token: a body cut right after it keeps what makes it a credential.
            let through = c.text.find(c.token.as_str()).map_or(c.text.as_str(), |at| &c.text[..at + c.token.len()]);
            let once = escaped(through);
            [through.to_owned(), escaped(&once), once].iter().any(|t| inputs.contains(t.as_str()))
        })
        .map(|c| c.token.clone())
        .collect()
}

/// The word parts of a key, lowercased (README "Redaction"): the runs of letters and digits,
/// split again where a lower-case letter meets an upper-case one (`passwordHash`), before the
/// last capital of a run of capitals followed by a lower-case letter (`APIKey` -> `API`,
/// `Key`), and where a letter meets a digit (`token2`). Written forwards, one character at a
/// time, allocating freely: the implementation walks backwards over bytes.
pub fn word_parts(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut parts: Vec<String> = Vec::new();
    let mut current: Vec<char> = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                parts.push(current.drain(..).collect());
            }
            continue;
        }
        if let Some(&prev) = current.last() {
            let next = chars.get(i + 1).copied();
            let camel = prev.is_lowercase() && c.is_uppercase();
            let acronym_end = prev.is_uppercase() && c.is_uppercase() && next.is_some_and(char::is_lowercase);
            let digits = prev.is_numeric() != c.is_numeric();
            // `b64` / `base64` stay one part (the qualifiers the rule names).
            let cur = lowercase(&current.iter().collect::<String>());
            let b64 = (cur == "b" || cur == "base") && c == '6' && chars.get(i + 1) == Some(&'4') && !chars.get(i + 2).is_some_and(|d| d.is_numeric());
            if (camel || acronym_end || digits) && !b64 {
                parts.push(current.drain(..).collect());
            }
        }
        current.push(c);
    }
    if !current.is_empty() {
        parts.push(current.into_iter().collect());
    }
    parts.iter().map(|p| lowercase(p)).collect()
}

/// The normalized form of a configured key (README): its letters and digits, lowercased.
pub fn normalize(key: &str) -> String {
    lowercase(&key.chars().filter(|c| c.is_alphanumeric()).collect::<String>())
}

/// Lowercased character by character (no final-sigma rule: a key part is not a sentence).
fn lowercase(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Whether a word part may follow the secret's name and keep the key sensitive.
fn is_qualifier(part: &str) -> bool {
    QUALIFIERS.contains(&part) || part.chars().all(char::is_numeric)
}

/// Whether a word part reads as a plural: longer than 3 characters (counted lowercased, as
/// the parts are), ending with `s` but not `ss`.
fn is_plural(part: &str) -> bool {
    part.chars().count() > 3 && part.ends_with('s') && !part.ends_with("ss")
}

/// The redaction rules, written the obvious way (slow, allocating, independent of
/// `tether_pro`'s matching; only the list of qualifiers is shared).
#[derive(Debug, Clone)]
pub struct Oracle {
    keys: Vec<String>,
}

impl Oracle {
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        Oracle { keys: keys.iter().map(|k| normalize(k.as_ref())).filter(|k| !k.is_empty()).collect() }
    }

    /// The key rule: for some word part `p`, the parts up to `p` joined (or, when `p` is a
    /// plural, without its final `s`) end with a configured key, and every part after `p` is
    /// a qualifier or all digits.
    pub fn is_sensitive(&self, key: &str) -> bool {
        let parts = word_parts(key);
        (0..parts.len()).any(|p| {
            if !parts[p + 1..].iter().all(|q| is_qualifier(q)) {
                return false;
            }
            let joined = parts[..=p].concat();
            let ends_with_key = |s: &str| self.keys.iter().any(|k| s.ends_with(k.as_str()));
            ends_with_key(&joined) || (is_plural(&parts[p]) && ends_with_key(&joined[..joined.len() - 1]))
        })
    }

    /// Whether some configured key occurs anywhere in the normalized form of `text`: a
    /// necessary condition for any word of `text` to be sensitive (the normalized form of a
    /// word is a substring of the normalized form of the text around it).
    pub fn mentions_key(&self, text: &str) -> bool {
        let n = normalize(text);
        self.keys.iter().any(|k| n.contains(k.as_str()))
    }

    /// Whether the value rules could change `s` at all: a necessary condition, with every
    /// trigger of the rules over-approximated (README "Redaction"). When it is false, the
    /// string must come back untouched.
    pub fn may_hold_credential(&self, s: &str) -> bool {
        let lower = s.to_ascii_lowercase();
        // Escapes and percent-encoding can spell anything: no prediction.
        s.contains(['\\', '%'])
            // `Bearer|Basic|Token <credential>`.
            || ["bearer ", "basic ", "token ", "bearer\t", "basic\t", "token\t"].iter().any(|w| lower.contains(w))
            // JSON Web Tokens, URL userinfo (`://` then `@`), PEM private keys.
            || s.contains("eyJ")
            || s.find("://").is_some_and(|at| s[at..].contains('@'))
            || s.contains("PRIVATE KEY-----")
            // `key=value`, `key: value`, `"key":value` with a sensitive key.
            || (s.contains([':', '=']) && self.mentions_key(s))
    }

    /// What the key rule makes of `v`: every value under a sensitive key replaced whole by
    /// `[REDACTED]` (strings elsewhere untouched: the value rules are checked separately),
    /// with the JSON Pointer of every replaced value.
    pub fn redacted(&self, v: &Value) -> (Value, Vec<String>) {
        let mut replaced = Vec::new();
        let out = self.redacted_at(v, "", &mut replaced);
        (out, replaced)
    }

    fn redacted_at(&self, v: &Value, at: &str, replaced: &mut Vec<String>) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                        if self.is_sensitive(k) {
                            replaced.push(path);
                            (k.clone(), Value::String(REDACTED.to_owned()))
                        } else {
                            (k.clone(), self.redacted_at(x, &path, replaced))
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().enumerate().map(|(i, x)| self.redacted_at(x, &format!("{at}/{i}"), replaced)).collect()),
            other => other.clone(),
        }
    }

    /// Adds to `secrets` every scalar's text under a sensitive key of `v`, and to `visible`
    /// every key and every scalar's text that is not under one.
    pub fn split(&self, v: &Value, secrets: &mut Vec<String>, visible: &mut Vec<String>) {
        self.split_at(v, false, secrets, visible);
    }

    fn split_at(&self, v: &Value, hidden: bool, secrets: &mut Vec<String>, visible: &mut Vec<String>) {
        let sink = |s: String, secrets: &mut Vec<String>, visible: &mut Vec<String>| {
            if hidden {
                secrets.push(s)
            } else {
                // Also as JSON text: escapes can spell a secret (`"\u0000000…"` holds `0000000`).
                visible.push(serde_json::to_string(&s).expect("a string serializes"));
                visible.push(s)
            }
        };
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    sink(k.clone(), secrets, visible);
                    self.split_at(x, hidden || self.is_sensitive(k), secrets, visible);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.split_at(x, hidden, secrets, visible)),
            Value::String(s) => sink(s.clone(), secrets, visible),
            other => sink(other.to_string(), secrets, visible),
        }
    }
}

/// Secrets worth looking for: long enough not to occur by chance, free of characters JSON
/// escapes or uses as structure (so a match in JSON text cannot straddle two tokens), and not
/// also somewhere visible (a value that is also a key, or also under an ordinary key, may
/// legitimately be stored).
pub fn checkable_secrets(secrets: Vec<String>, visible: &[String], extra_visible: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = secrets
        .into_iter()
        .filter(|s| s.chars().count() >= 6)
        .filter(|s| !s.chars().any(|c| matches!(c, '{' | '}' | '[' | ']' | ',' | ':' | '"' | '\\' | '=' | '&' | ';') || c.is_whitespace() || c.is_control()))
        .filter(|s| !visible.iter().any(|v| v.contains(s.as_str())) && !extra_visible.iter().any(|v| v.contains(s.as_str())))
        .filter(|s| !REDACTED.contains(s.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `out` is `s` with some parts of it replaced by `[REDACTED]`: cut at the markers,
/// `out` falls into pieces that occur in `s` in this order, the first at its start and the
/// last at its end. Quotes and backslashes next to a marker are not counted (a structured
/// value is replaced by `"[REDACTED]"`, escaped when it sits in a string inside the string).
pub fn only_replaced(s: &str, out: &str) -> bool {
    let pieces: Vec<&str> = out.split(REDACTED).collect();
    let last = pieces.len() - 1;
    if last == 0 {
        return out == s;
    }
    let trimmed = |i: usize| {
        let mut p = pieces[i];
        if i > 0 {
            p = p.trim_start_matches(['"', '\\']);
        }
        if i < last {
            p = p.trim_end_matches(['"', '\\']);
        }
        p
    };
    let first = trimmed(0);
    if !s.starts_with(first) {
        return false;
    }
    let mut pos = first.len();
    for i in 1..last {
        let p = trimmed(i);
        let Some(found) = s[pos..].find(p) else { return false };
        pos += found + p.len();
    }
    let end = trimmed(last);
    s.len() - pos >= end.len() && s.ends_with(end)
}

/// Panics when any secret occurs in `text`.
pub fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "secret {s:?} survives in {what}: {text}");
    }
}

/// Builds fuzzed JSON trees.
pub struct Gen<'a> {
    /// Configured keys the generated keys are spelled from.
    pub keys: &'a [&'a str],
    /// Deepest nesting of generated containers.
    pub max_depth: usize,
    /// Counter for unique, recognisable secret values.
    pub serial: u32,
    /// Tokens put in credential positions of strings (header lines, URLs, JWTs...): no
    /// redacted output may hold them.
    pub carried: Vec<Carried>,
    oracle: Oracle,
}

impl<'a> Gen<'a> {
    pub fn new(keys: &'a [&'a str], max_depth: usize) -> Self {
        Gen { keys, max_depth, serial: 0, carried: Vec::new(), oracle: Oracle::new(keys) }
    }

    /// An object key: a configured key spelled some way, a near miss, or anything.
    pub fn key(&mut self, u: &mut Unstructured) -> Result<String> {
        Ok(match u.int_in_range(0u8..=9)? {
            0..=4 => {
                let base = *u.choose(self.keys)?;
                let sep = *u.choose(SEPARATORS)?;
                let mut k: String = u.choose(PREFIXES)?.to_string();
                let case_bits: u64 = u.arbitrary()?;
                for (i, c) in base.replace('_', sep).chars().enumerate() {
                    if case_bits >> (i % 64) & 1 == 1 { k.extend(c.to_uppercase()) } else { k.extend(c.to_lowercase()) }
                }
                if u.ratio(1u8, 5)? {
                    k.push_str(u.choose(SUFFIXES)?);
                }
                k
            }
            5..=7 => u.choose(PLAIN)?.to_string(),
            _ => u.arbitrary::<String>()?,
        })
    }

    /// A string value: often a recognisable secret-looking token, sometimes text carrying
    /// such a token the way the value rules look for (or text they must leave alone),
    /// sometimes anything.
    pub fn string(&mut self, u: &mut Unstructured) -> Result<String> {
        Ok(match u.int_in_range(0u8..=4)? {
            0 | 1 => self.token(u)?,
            2 => u.choose(PLAIN)?.to_string(),
            3 => {
                let token = self.token(u)?;
                if u.arbitrary()? {
                    let (template, key, needs_tail) = *u.choose(CARRIERS)?;
                    let text = template.replace("{s}", &token);
                    if key.is_none_or(|k| self.oracle.is_sensitive(k)) {
                        self.carried.push(Carried { token: token.clone(), text: text.clone(), needs_tail });
                    }
                    text
                } else {
                    u.choose(ORDINARY)?.replace("{s}", &token)
                }
            }
            _ => u.arbitrary::<String>()?,
        })
    }

    /// A unique, recognisable secret-looking token.
    fn token(&mut self, u: &mut Unstructured) -> Result<String> {
        self.serial += 1;
        let tail: u32 = u.arbitrary()?;
        Ok(format!("sk{}x{tail:08x}", self.serial))
    }

    pub fn scalar(&mut self, u: &mut Unstructured) -> Result<Value> {
        Ok(match u.int_in_range(0u8..=6)? {
            0 => Value::Null,
            1 => Value::Bool(u.arbitrary()?),
            2 => Value::from(u.arbitrary::<i64>()?),
            3 => Value::from(u.int_in_range(-3i64..=3)?),
            // Exactly representable floats only: serde_json (without `float_roundtrip`) may
            // parse its own output of an arbitrary float one ulp off.
            4 => serde_json::json!(f64::from(u.int_in_range(-64i32..=64)?) / 8.0),
            _ => Value::String(self.string(u)?),
        })
    }

    /// A JSON value of at most `max_depth - depth` levels.
    pub fn value(&mut self, u: &mut Unstructured, depth: usize) -> Result<Value> {
        if depth >= self.max_depth || u.is_empty() {
            return self.scalar(u);
        }
        Ok(match u.int_in_range(0u8..=5)? {
            0 | 1 => self.scalar(u)?,
            2 => {
                let n = u.int_in_range(0usize..=4)?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(u, depth + 1)?);
                }
                Value::Array(a)
            }
            _ => Value::Object(self.object(u, depth)?),
        })
    }

    pub fn object(&mut self, u: &mut Unstructured, depth: usize) -> Result<Map<String, Value>> {
        let n = u.int_in_range(0usize..=5)?;
        let mut m = Map::new();
        for _ in 0..n {
            let k = self.key(u)?;
            let v = self.value(u, depth + 1)?;
            m.insert(k, v);
        }
        Ok(m)
    }
}

/// Either the default keys or a few from [`KEY_POOL`].
pub fn configured_keys(u: &mut Unstructured) -> Result<Vec<&'static str>> {
    if u.ratio(3u8, 4)? {
        return Ok(tether_pro::pipeline::redact::DEFAULT_KEYS.to_vec());
    }
    let n = u.int_in_range(1usize..=4)?;
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(*u.choose(KEY_POOL)?);
    }
    Ok(keys)
}

/// Numbers compared with a little tolerance (serde_json without `float_roundtrip` may read
/// a float it wrote one ulp off), everything else exactly.
pub fn approx_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) if x.is_f64() || y.is_f64() => p == q || (p - q).abs() <= p.abs().max(q.abs()) * 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| approx_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| approx_eq(p, q))),
        _ => a == b,
    }
}
