//! Shared pieces of the fuzz targets: JSON trees built from fuzz input with `arbitrary`, keys
//! drawn from the configured secret keys in varied spellings, and an independent, naive
//! oracle of the redaction rule (README "Redaction") to check the real implementation against.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};
use tether_pro::pipeline::redact::REDACTED;

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

/// The normalized form of a key (README): lowercased, without `-`, `_`, `.` and whitespace.
pub fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| !(matches!(c, '-' | '_' | '.') || c.is_whitespace()))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The redaction rule, written the obvious way.
#[derive(Debug, Clone)]
pub struct Oracle {
    keys: Vec<String>,
}

impl Oracle {
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        Oracle { keys: keys.iter().map(|k| normalize(k.as_ref())).filter(|k| !k.is_empty()).collect() }
    }

    pub fn is_sensitive(&self, key: &str) -> bool {
        let n = normalize(key);
        self.keys.iter().any(|k| n.ends_with(k.as_str()))
    }

    /// What `redact_value` must produce, and how many values it must replace.
    pub fn redacted(&self, v: &Value) -> (Value, usize) {
        let mut count = 0;
        let out = self.redacted_at(v, &mut count);
        (out, count)
    }

    fn redacted_at(&self, v: &Value, count: &mut usize) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        if self.is_sensitive(k) {
                            *count += 1;
                            (k.clone(), Value::String(REDACTED.to_owned()))
                        } else {
                            (k.clone(), self.redacted_at(x, count))
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.redacted_at(x, count)).collect()),
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
}

impl<'a> Gen<'a> {
    pub fn new(keys: &'a [&'a str], max_depth: usize) -> Self {
        Gen { keys, max_depth, serial: 0 }
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

    /// A string value: often a recognisable secret-looking token, sometimes anything.
    pub fn string(&mut self, u: &mut Unstructured) -> Result<String> {
        Ok(match u.int_in_range(0u8..=3)? {
            0 | 1 => {
                self.serial += 1;
                let tail: u32 = u.arbitrary()?;
                format!("sk{}x{tail:08x}", self.serial)
            }
            2 => u.choose(PLAIN)?.to_string(),
            _ => u.arbitrary::<String>()?,
        })
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
