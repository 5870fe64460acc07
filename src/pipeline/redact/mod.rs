//! Redaction: run in the background pipeline before anything is stored or exported, and by
//! the dashboard on everything it renders from a live host (replay previews).
//!
//! Two kinds of rule, both documented in the README ("Redaction"):
//! * **Keys** (module `keys`): the value of a sensitive key, whatever its type, is replaced whole
//!   by [`REDACTED`], at any depth of any JSON.
//! * **Values** (module `text`): every other string is scanned for credentials it carries (header
//!   lines, bearer/basic credentials, URL query parameters with sensitive names, URL userinfo
//!   passwords, `key=value` / `key: value` pairs in free text, JSON encoded inside strings,
//!   JSON Web Tokens, PEM private keys); only the credential is replaced, the rest stays
//!   readable.
//!
//! Valid and malformed bodies get the same value rules: [`Redactor::redact_value`] walks a
//! parsed tree, [`Redactor::redact_text`] scrubs text that did not parse.

mod keys;
mod text;
mod tree;

use serde_json::Value;

pub use keys::QUALIFIERS;

/// The replacement written in place of every sensitive value.
pub const REDACTED: &str = "[REDACTED]";

/// Keys redacted by default (README "Redaction" compares them with Laravel Telescope's hidden
/// parameters and Sentry's default scrubbed fields). `capture.redact_keys` adds to them;
/// `capture.redact_keys_disabled` removes some explicitly.
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "access_key",
    "private_key",
    "secret_key",
    "signing_key",
    "encryption_key",
    "authorization",
    "auth",
    "credential",
    "cookie",
    "session",
    "session_id",
    "sessid",
    "connect.sid",
    "csrf",
    "xsrf",
    "otp",
    "credit_card",
    "card_number",
    "cvv",
    "cvc",
    "ssn",
];

/// One step of a path into a JSON value, borrowed from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRef<'a> {
    /// An object key.
    Key(&'a str),
    /// An array index.
    Index(usize),
}

/// A path as a JSON Pointer (RFC 6901): `/metadata/token`, `/tags/0`; `""` is the root.
pub fn json_pointer(path: &[PathRef<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        out.push('/');
        match seg {
            PathRef::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            PathRef::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// Called with the path of each value redaction changed.
pub type OnRedacted<'f> = dyn FnMut(&[PathRef<'_>]) + 'f;

/// Decides what is sensitive and removes it. Cheap to clone (configured keys only).
#[derive(Debug, Clone)]
pub struct Redactor {
    keys: keys::KeyRule,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(DEFAULT_KEYS)
    }
}

/// Why a configured key list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyListError {
    /// `capture.redact_keys_disabled` names this key, which is not in [`DEFAULT_KEYS`].
    #[error("capture.redact_keys_disabled names {0:?}, which is not a default key (defaults: {defaults})", defaults = DEFAULT_KEYS.join(", "))]
    NotADefault(String),
}

impl Redactor {
    /// A redactor for exactly these keys (no defaults), matched with the key rule.
    pub fn new(keys: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        Redactor { keys: keys::KeyRule::new(keys) }
    }

    /// The default keys plus `extra`, less the defaults named in `disabled` (each must be a
    /// default key, spelled as in [`DEFAULT_KEYS`]: a typo must not silently keep a secret).
    pub fn with_defaults(extra: &[String], disabled: &[String]) -> Result<Self, KeyListError> {
        if let Some(d) = disabled.iter().find(|d| !DEFAULT_KEYS.contains(&d.as_str())) {
            return Err(KeyListError::NotADefault(d.clone()));
        }
        let keys = DEFAULT_KEYS.iter().copied().filter(|k| !disabled.iter().any(|d| d == k)).chain(extra.iter().map(String::as_str));
        Ok(Self::new(keys))
    }

    /// Whether a JSON object key (or form field or header name) is sensitive.
    pub fn is_sensitive(&self, key: &str) -> bool {
        self.keys.is_sensitive(key)
    }

    /// Replaces, in place and at any depth, the value of every sensitive key (whatever its
    /// type) with [`REDACTED`], and the credentials inside every other string. Returns how many
    /// values changed. Iterative, so arbitrarily deep values are fine.
    pub fn redact_value(&self, v: &mut Value) -> usize {
        self.walk(v, None)
    }

    /// [`Self::redact_value`], calling `on_redacted` with the path of every value that changed
    /// (replaced whole, or a string whose credentials were cut out).
    pub fn redact_value_recording(&self, v: &mut Value, on_redacted: &mut OnRedacted<'_>) -> usize {
        self.walk(v, Some(on_redacted))
    }

    /// The string with its credentials replaced, or `None` when it holds none.
    pub fn redact_str(&self, s: &str) -> Option<String> {
        self.scrub(s, 0)
    }

    /// `redact_str`, keeping the string when nothing changes.
    pub fn redact_string(&self, s: String) -> String {
        self.scrub(&s, 0).unwrap_or(s)
    }

    fn walk(&self, root: &mut Value, mut on: Option<&mut OnRedacted<'_>>) -> usize {
        /// A container or string on the way down: its parent node and its step from there.
        struct Node<'a> {
            parent: usize,
            step: PathRef<'a>,
        }
        const ROOT: usize = usize::MAX;
        fn report<'a>(nodes: &[Node<'a>], mut node: usize, last: Option<PathRef<'a>>, on: &mut OnRedacted<'_>) {
            let mut path: Vec<PathRef<'a>> = last.into_iter().collect();
            while node != ROOT {
                path.push(nodes[node].step);
                node = nodes[node].parent;
            }
            path.reverse();
            on(&path);
        }
        /// The node of a child being walked into (only kept when paths are reported).
        fn enter<'a>(nodes: &mut Vec<Node<'a>>, tracking: bool, parent: usize, step: PathRef<'a>) -> usize {
            if !tracking {
                return ROOT;
            }
            nodes.push(Node { parent, step });
            nodes.len() - 1
        }
        let tracking = on.is_some();
        let mut count = 0;
        let mut nodes: Vec<Node<'_>> = Vec::new();
        let mut stack: Vec<(&mut Value, usize)> = vec![(root, ROOT)];
        while let Some((cur, node)) = stack.pop() {
            match cur {
                Value::Object(map) => {
                    for (k, child) in map.iter_mut() {
                        if self.is_sensitive(k) {
                            let old = std::mem::replace(child, Value::String(REDACTED.to_owned()));
                            drop_deep(old);
                            count += 1;
                            if let Some(on) = on.as_deref_mut() {
                                report(&nodes, node, Some(PathRef::Key(k)), on);
                            }
                        } else if is_walked(child) {
                            stack.push((child, enter(&mut nodes, tracking, node, PathRef::Key(k))));
                        }
                    }
                }
                Value::Array(items) => {
                    for (i, child) in items.iter_mut().enumerate().filter(|(_, c)| is_walked(c)) {
                        stack.push((child, enter(&mut nodes, tracking, node, PathRef::Index(i))));
                    }
                }
                Value::String(s) => {
                    if let Some(scrubbed) = self.scrub(s, 0) {
                        *s = scrubbed;
                        count += 1;
                        if let Some(on) = on.as_deref_mut() {
                            report(&nodes, node, None, on);
                        }
                    }
                }
                _ => {}
            }
        }
        count
    }
}

/// Dismantles a value iteratively, so dropping a very deep value cannot overflow the stack
/// (serde_json's own drop recurses).
pub fn drop_deep(value: Value) {
    if !is_container(&value) {
        return;
    }
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.into_iter().filter(is_container)),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v).filter(is_container)),
            _ => {}
        }
    }
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

/// What the walk descends into: containers, and strings (scanned for credentials).
fn is_walked(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_) | Value::String(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_swallowed_the_next_key_takes_its_value_along() {
        // Found by the redact_text fuzz target: the form value of `password` ran up to the
        // quote and took `__TOKEN.:` with it, leaving that pair's value in the clear.
        let r = Redactor::default();
        for input in ["user[password=\u{1}\u{1}__TOKEN.:\"s3cr3t0038\"", "password=abc: 's3cr3t0038' tail", "password=x= s3cr3t0038&next=1"] {
            let out = r.redact_text(input);
            assert!(!out.contains("s3cr3t0038"), "{input:?} -> {out:?}");
        }
        assert_eq!(r.redact_text("password=x&title=kept"), "password=[REDACTED]&title=kept");
    }

    /// The per-thread memo remembers verdicts for one rule at a time: two redactors with
    /// different keys, used in turn on one thread, each keep their own answers; keys past the
    /// memo's limits are decided without it.
    #[test]
    fn memoized_verdicts_follow_the_rule_in_use() {
        let default = Redactor::default();
        let custom = Redactor::new(["title"]);
        for _ in 0..3 {
            assert!(!default.is_sensitive("title") && custom.is_sensitive("title"));
            assert!(default.is_sensitive("password") && !custom.is_sensitive("password"));
            assert!(default.clone().is_sensitive("password"), "a clone is the same rule");
        }
        let long = format!("{}_password", "x".repeat(100));
        assert!(default.is_sensitive(&long) && !custom.is_sensitive(&long));
        for i in 0..5000 {
            assert!(default.is_sensitive(&format!("k{i}_token")));
        }
        assert!(!default.is_sensitive("title"), "still right after the memo started over");
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_the_general_rule() {
        use rand::{Rng, SeedableRng};
        let r = Redactor::default();
        let custom = Redactor::new(["x-Api_Key", "PIN", &"k".repeat(70)]);
        let alphabet = b"aAbcdeiklnoprstuvwxyzKNPTY-_. \t\x0b0123";
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let words = ["password", "Token", "api_key", "SESSION", "cvv", "pin", "title", "x-api-key"];
        for _ in 0..20_000 {
            let mut key: String = (0..rng.random_range(0..12)).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect();
            if rng.random_bool(0.5) {
                key.push_str(words[rng.random_range(0..words.len())]);
            }
            if rng.random_bool(0.1) {
                key.push_str(&"K".repeat(rng.random_range(60..80)));
            }
            for red in [&r, &custom] {
                assert_eq!(red.is_sensitive(&key), red.keys.is_sensitive_general(&key), "{key:?}");
            }
        }
    }
    use proptest::prelude::*;
    use serde_json::json;

    fn r() -> Redactor {
        Redactor::default()
    }

    #[test]
    fn matching_rule() {
        let r = r();
        for k in [
            "password",
            "user_password",
            "X-Api-Key",
            "db.Password",
            "AUTHORIZATION",
            "Authorization",
            "api key",
            "API_KEY",
            "apiKey",
            "access-token",
            "csrf_token",
            "Set-Cookie",
            "client.secret",
            "userSession",
            "credit-card",
            "Card_Number",
            "CVV",
            "ssn",
            "пароль_password",
        ] {
            assert!(r.is_sensitive(k), "{k} should be sensitive");
        }
        for k in [
            "tokens_used",
            "session_count",
            "password_policy",
            "cookies_enabled",
            "user",
            "name",
            "",
            "pass",
            "tok",
            "secretary",
            "ssn_last_checked",
        ] {
            assert!(!r.is_sensitive(k), "{k} should not be sensitive");
        }
    }

    #[test]
    fn custom_keys_and_redundancy() {
        let r = Redactor::new(["My-Field", "", "field", "x.Y"]);
        assert!(r.is_sensitive("my_field"));
        assert!(r.is_sensitive("otherfield"));
        assert!(r.is_sensitive("XY"));
        assert!(!r.is_sensitive("password"));
        assert!(!r.is_sensitive("anything"));
        assert_eq!(r.keys.len(), 2, "`myfield` is covered by `field`; empty keys are dropped");
        let none = Redactor::new(Vec::<String>::new());
        assert!(!none.is_sensitive("password"));
    }

    #[test]
    fn secret_six_levels_deep_in_arrays_of_objects() {
        let mut v = json!({
            "a": [{"b": [{"c": [{"d": {"e": [{"f": {"password": "hunter2", "keep": 1}}]}}]}]}],
            "other": "x"
        });
        assert_eq!(r().redact_value(&mut v), 1);
        assert_eq!(
            v,
            json!({
                "a": [{"b": [{"c": [{"d": {"e": [{"f": {"password": "[REDACTED]", "keep": 1}}]}}]}]}],
                "other": "x"
            })
        );
    }

    #[test]
    fn variants_and_non_string_values() {
        let mut v = json!({
            "User_Password": "a",
            "X-Api-Key": 12345,
            "db.Password": null,
            "AUTHORIZATION": {"scheme": "Bearer", "token": "t"},
            "cookie": ["a=1", "b=2"],
            "cvv": 123.5,
            "ssn": true,
            "tokens_used": 10,
            "session_count": 2,
            "list": [{"refresh-token": "r"}, {"name": "n"}]
        });
        assert_eq!(r().redact_value(&mut v), 8);
        assert_eq!(
            v,
            json!({
                "User_Password": REDACTED,
                "X-Api-Key": REDACTED,
                "db.Password": REDACTED,
                "AUTHORIZATION": REDACTED,
                "cookie": REDACTED,
                "cvv": REDACTED,
                "ssn": REDACTED,
                "tokens_used": 10,
                "session_count": 2,
                "list": [{"refresh-token": REDACTED}, {"name": "n"}]
            })
        );
    }

    #[test]
    fn scalars_and_empty_containers_untouched() {
        for mut v in [json!(null), json!("password"), json!(1), json!([]), json!({}), json!(["token"])] {
            let before = v.clone();
            assert_eq!(r().redact_value(&mut v), 0);
            assert_eq!(v, before);
        }
    }

    #[test]
    fn hundred_thousand_deep_value_does_not_overflow() {
        // A small stack makes any recursion on depth fail loudly.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                const DEPTH: usize = 100_000;
                let mut v = json!({"password": "deep-secret", "ok": 1});
                for i in 0..DEPTH {
                    v = if i % 2 == 0 {
                        Value::Array(vec![json!(i), v])
                    } else {
                        let mut m = serde_json::Map::new();
                        m.insert("child".into(), v);
                        m.insert("secret".into(), json!({"x": i}));
                        Value::Object(m)
                    };
                }
                // Every object level has one `secret`, plus the innermost password.
                assert_eq!(r().redact_value(&mut v), DEPTH / 2 + 1);
                // Walk down iteratively to the innermost object.
                let mut cur = &v;
                loop {
                    cur = match cur {
                        Value::Array(a) => &a[1],
                        Value::Object(m) if m.contains_key("child") => {
                            assert_eq!(m["secret"], json!(REDACTED));
                            &m["child"]
                        }
                        _ => break,
                    };
                }
                assert_eq!(cur, &json!({"password": REDACTED, "ok": 1}));
                // A sensitive key holding a very deep subtree: replaced and dismantled.
                let mut w = json!(null);
                for _ in 0..DEPTH {
                    w = Value::Array(vec![w]);
                }
                // (Not `json!({"token": w})`: the macro serializes `w` recursively.)
                let mut m = serde_json::Map::new();
                m.insert("token".into(), w);
                let mut outer = Value::Object(m);
                assert_eq!(r().redact_value(&mut outer), 1);
                assert_eq!(outer, json!({"token": REDACTED}));
                drop_deep(v);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn text_truncated_json() {
        let out = r().redact_text(r#"{"user":{"password":"hun"#);
        assert_eq!(out, r#"{"user":{"password":"[REDACTED]""#);
        let out = r().redact_text(r#"{"user":{"password": {"a": [1, "hun"#);
        assert!(!out.contains("hun"), "{out}");
        let out = r().redact_text(r#"{"cvv": 123, "name": "bob", "card_number": [4111, 1111], "x": 1, "token":"#);
        assert_eq!(
            out,
            r#"{"cvv": "[REDACTED]", "name": "bob", "card_number": "[REDACTED]", "x": 1, "token":"[REDACTED]""#
        );
    }

    #[test]
    fn text_escaped_quotes_in_secret() {
        let input = r#"{"password":"a\"b}\\\"hunter2","x":1, "next": "ok""#;
        let out = r().redact_text(input);
        assert_eq!(out, r#"{"password":"[REDACTED]","x":1, "next": "ok""#);
        // Escaped key.
        let out = r().redact_text(r#"{"\u0070assword": "hunter2", "a": "#);
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[test]
    fn text_keys_that_do_not_match_are_kept() {
        let input = r#"{"tokens_used": 5, "session_count": 3, "password_policy": "strict", "name": "x""#;
        assert_eq!(r().redact_text(input), input);
        let input = "page=2&sort=desc&tokens_used=3";
        assert_eq!(r().redact_text(input), input);
    }

    #[test]
    fn text_form_and_headers() {
        let r = r();
        assert_eq!(r.redact_text("password=hunter2&x=1"), "password=[REDACTED]&x=1");
        assert_eq!(
            r.redact_text("user=bob&Api-Key=abc%20def&session=&y=2"),
            "user=bob&Api-Key=[REDACTED]&session=[REDACTED]&y=2"
        );
        assert_eq!(
            r.redact_text("user%5Bpassword%5D=x1&user[token]=x2&password[0]=x3&q=ok"),
            "user%5Bpassword%5D=[REDACTED]&user[token]=[REDACTED]&password[0]=[REDACTED]&q=ok"
        );
        assert_eq!(
            r.redact_text("GET /cb?code=1&access_token=abc.def HTTP/1.1"),
            "GET /cb?code=1&access_token=[REDACTED] HTTP/1.1"
        );
        assert_eq!(
            r.redact_text("Host: x\nAuthorization: Bearer abc def\r\nCookie: session=1; a=2\nAccept: */*"),
            "Host: x\nAuthorization: [REDACTED]\r\nCookie: [REDACTED]\nAccept: */*"
        );
        assert_eq!(r.redact_text("{password: 'a b', user: 1}"), "{password: \"[REDACTED]\", user: 1}");
        assert_eq!(r.redact_text("password"), "password");
        assert_eq!(r.redact_text("password="), "password=[REDACTED]");
    }

    #[test]
    fn text_embedded_json_and_query_in_strings() {
        let r = r();
        let out = r.redact_text(r#"{"body":"{\"token\":\"abc123\",\"n\":1}", "url": "/cb?access_token=xyz789&state=1", "trunc"#);
        assert!(!out.contains("abc123") && !out.contains("xyz789"), "{out}");
        assert!(out.contains(r#"\"n\":1"#) && out.contains("state=1"), "{out}");
        // Unterminated embedded string.
        let out = r.redact_text(r#"{"body":"{\"password\":\"abc12"#);
        assert!(!out.contains("abc12"), "{out}");
        // Doubly embedded.
        let inner = serde_json::to_string(&json!({"secret": "s3cr3t"}).to_string()).unwrap();
        let outer = serde_json::to_string(&format!("{{\"wrapped\":{inner}")).unwrap();
        let out = r.redact_text(&format!("{{\"x\":{outer}"));
        assert!(!out.contains("s3cr3t"), "{out}");
    }

    #[test]
    fn text_non_ascii_around_keys() {
        let r = r();
        let input = "{\"ключ\":\"значение ✓\",\"пароль_password\":\"секрет🔑\",\"é\":\"ü\"";
        assert_eq!(
            r.redact_text(input),
            "{\"ключ\":\"значение ✓\",\"пароль_password\":\"[REDACTED]\",\"é\":\"ü\""
        );
        assert_eq!(r.redact_text("日本token=秘密&ok=✓"), "日本token=[REDACTED]&ok=✓");
        assert_eq!(r.redact_text("ünïcödé password: 🔑🔑\nnext"), "ünïcödé password: [REDACTED]\nnext");
        assert_eq!(r.redact_text("\"password\":\u{0}\u{7f}é"), "\"password\":\"[REDACTED]\"");
    }

    #[test]
    fn text_linear_time_on_adversarial_input() {
        let r = r();
        let big = "{\"a\":".repeat(50_000) + &"\\\"".repeat(50_000) + &"x=y ".repeat(50_000);
        let start = std::time::Instant::now();
        let _ = r.redact_text(&big);
        let nested = "\"password\":[".repeat(50_000);
        let out = r.redact_text(&nested);
        assert_eq!(out, "\"password\":\"[REDACTED]\"");
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }


    // ---- issue 12: value rules, key spellings, configured keys ----

    /// Redacts a copy of `v` and returns it with the recorded JSON Pointers.
    fn redacted_with_paths(r: &Redactor, v: &Value) -> (Value, Vec<String>) {
        let mut out = v.clone();
        let mut paths = Vec::new();
        r.redact_value_recording(&mut out, &mut |p| paths.push(json_pointer(p)));
        paths.sort();
        (out, paths)
    }

    #[test]
    fn secrets_inside_string_values_of_a_valid_body() {
        let payload = json!({"title": "t", "notes": "Authorization: Bearer FAKE-A",
            "metadata": {"callback": "https://example.test/cb?access_token=FAKE-B&x=1"}});
        let (out, paths) = redacted_with_paths(&r(), &payload);
        assert_eq!(
            out,
            json!({"title": "t", "notes": "Authorization: [REDACTED]",
                "metadata": {"callback": "https://example.test/cb?access_token=[REDACTED]&x=1"}})
        );
        assert_eq!(paths, ["/metadata/callback", "/notes"]);
        // The same body as text that did not parse gets the same scrubbing.
        let text = payload.to_string();
        let cut = r().redact_text(&text[..text.len() - 2]);
        assert!(!cut.contains("FAKE-A") && !cut.contains("FAKE-B"), "{cut}");
        assert!(cut.contains("x=1") && cut.contains("example.test"), "{cut}");
    }

    #[test]
    fn every_kind_of_credential_in_a_string_is_cut_and_the_rest_kept() {
        let r = r();
        for (input, expected) in [
            ("Authorization: Bearer abc.DEF-123", "Authorization: [REDACTED]"),
            ("X-Api-Key: k_9f8e7d", "X-Api-Key: [REDACTED]"),
            ("sent with Bearer eyJhbGci0iJIUzI1 by the app", "sent with Bearer [REDACTED] by the app"),
            ("header was Basic dXNlcjpwYXNz ok", "header was Basic [REDACTED] ok"),
            ("try: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "try: Token [REDACTED]"),
            ("postgres://app:hunter2@db.internal:5432/main", "postgres://app:[REDACTED]@db.internal:5432/main"),
            ("see https://user:p%40ss@example.test/x?y=1 now", "see https://user:[REDACTED]@example.test/x?y=1 now"),
            ("/cb?code=1&refresh_token=r-77&state=ok", "/cb?code=1&refresh_token=[REDACTED]&state=ok"),
            ("login with password=hunter2 then", "login with password=[REDACTED] then"),
            ("my password: hunter2", "my password: [REDACTED]"),
            ("{\"api_key\":\"k-1234\",\"n\":1}", "{\"api_key\":\"[REDACTED]\",\"n\":1}"),
            ("{\"inner\":\"{\\\"secret\\\":\\\"s-5678\\\"}\"}", "{\"inner\":\"{\\\"secret\\\":\\\"[REDACTED]\\\"}\"}"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end",
                "jwt [REDACTED] end",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----",
            ),
        ] {
            assert_eq!(r.redact_str(input).as_deref(), Some(expected), "{input:?}");
            let mut v = json!({"note": input});
            assert_eq!(r.redact_value(&mut v), 1, "{input:?}");
            assert_eq!(v["note"], json!(expected));
        }
    }

    #[test]
    fn ordinary_text_stays_readable() {
        let r = r();
        for s in [
            "https://example.test/cb?x=1&page=2",
            "x=1",
            "tokenize the input",
            "passport number pending",
            "the bearer of bad news",
            "Bearer bonds and Basic instinct",
            "Token ring",
            "ratio 3:2, time 10:30",
            "mailto:someone@example.test",
            "https://example.test:8443/path@v2",
            "ssh://git@example.test/repo.git",
            "eyJ alone",
            "Buy milk",
            "",
        ] {
            assert_eq!(r.redact_str(s), None, "{s:?} must stay as it is");
        }
        let mut v = json!({"title": "tokenize", "tokens_used": 3, "password_policy": "strict", "url": "https://example.test/?x=1"});
        let before = v.clone();
        assert_eq!(r.redact_value(&mut v), 0);
        assert_eq!(v, before);
    }

    #[test]
    fn key_spellings_on_word_parts() {
        let r = r();
        for k in [
            "password_confirmation", "passwordConfirmation", "passwordHash", "password_hash", "secret_key", "secretKey",
            "secretAccessKey", "AWS_SECRET_ACCESS_KEY", "current_password", "newPassword", "password2", "password_1",
            "passwords", "api_keys", "apiKeys", "APIKey", "privateKey", "private-key", "client_secret", "webhookSecret",
            "secrets", "_token", "XSRF-TOKEN", "csrftoken", "sessionId", "session_id", "PHPSESSID", "JSESSIONID",
            "connect.sid", "mysql_pwd", "passphrase", "credentials", "cookies", "card_cvc", "totp", "token_value",
            "user[password]", "user[password][confirm]", "Proxy-Authorization", "password_b64", "passwordB64",
            "secret_base64", "privateKeyBase64", "client_secret_base64", "password_hash_b64", "api_key_b64",
        ] {
            assert!(r.is_sensitive(k), "{k} should be sensitive");
        }
        for k in [
            "tokens_used", "token_type", "token_expires_at", "session_count", "password_policy", "password_updated_at",
            "cookies_enabled", "tokenizer", "tokenize", "passport", "secretary", "author", "keyboard", "sort_key",
            "primary_key", "title", "notes", "status", "api_key_id", "confirmation", "hash", "2",
        ] {
            assert!(!r.is_sensitive(k), "{k} should not be sensitive");
        }
    }

    #[test]
    fn configured_keys_extend_the_defaults_and_removal_is_explicit() {
        let extended = Redactor::with_defaults(&["pin".into()], &[]).unwrap();
        assert!(extended.is_sensitive("pin") && extended.is_sensitive("password"), "an extra key keeps the defaults");
        let without = Redactor::with_defaults(&[], &["session".into()]).unwrap();
        assert!(!without.is_sensitive("session") && without.is_sensitive("password"));
        assert_eq!(
            Redactor::with_defaults(&[], &["pasword".into()]).unwrap_err(),
            KeyListError::NotADefault("pasword".into()),
            "a typo in a removal is an error, not a silent no-op"
        );
    }

    #[test]
    fn identifiers_and_scalars_at_the_root() {
        let r = r();
        let mut v = json!("Bearer zz_9x8y7w6v");
        assert_eq!(r.redact_value(&mut v), 1);
        assert_eq!(v, json!("Bearer [REDACTED]"));
        assert_eq!(json_pointer(&[PathRef::Key("a/b~c"), PathRef::Index(3)]), "/a~1b~0c/3");
    }

    // ---- property tests ----

    fn arb_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Tricky characters, but never uppercase, so never the secret marker.
            "[a-z0-9 \"\\\\{}\\[\\]:,=&'é✓\n]{0,8}".prop_map(Value::String),
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        arb_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const MARKER: &str = "ZQ9XW";

    fn arb_sensitive_key() -> impl Strategy<Value = String> {
        (
            prop::sample::select(DEFAULT_KEYS),
            prop::sample::select(&["", "user_", "X-", "db.", "my ", "x"][..]),
            0..3u8,
        )
            .prop_map(|(k, prefix, case)| {
                let k = format!("{prefix}{k}");
                match case {
                    0 => k,
                    1 => k.to_uppercase(),
                    _ => k.replace('_', "-"),
                }
            })
    }

    /// One level of wrapping around the planted child.
    #[derive(Debug, Clone)]
    enum Level {
        Obj(Vec<(String, Value)>, String),
        Arr(Vec<Value>, usize),
    }

    fn arb_level() -> impl Strategy<Value = Level> {
        prop_oneof![
            (prop::collection::vec(("[a-z_]{1,6}", arb_json()), 0..3), "[a-z]{1,5}")
                .prop_map(|(s, k)| Level::Obj(s, k)),
            (prop::collection::vec(arb_json(), 0..3), any::<usize>()).prop_map(|(s, p)| Level::Arr(s, p)),
        ]
    }

    fn arb_planted() -> impl Strategy<Value = (Value, String)> {
        let secret = "[a-z0-9\"\\\\{}\\[\\]:,= &'é]{0,10}".prop_map(|s| format!("{MARKER}{s}"));
        (
            secret,
            arb_sensitive_key(),
            0..4u8,
            prop::collection::vec(("[a-z_]{1,6}", arb_json()), 0..3),
            prop::collection::vec(arb_level(), 0..8),
        )
            .prop_map(|(secret, key, shape, siblings, levels)| {
                let planted = match shape {
                    0 | 1 => Value::String(secret.clone()),
                    2 => json!({"inner": secret.clone(), "n": [1, 2]}),
                    _ => json!([1, {"x": secret.clone()}]),
                };
                let mut m: serde_json::Map<String, Value> = siblings.into_iter().collect();
                m.insert(key, planted);
                let mut v = Value::Object(m);
                for level in levels {
                    v = match level {
                        Level::Obj(sib, k) => {
                            let mut m: serde_json::Map<String, Value> = sib.into_iter().collect();
                            m.insert(k, v);
                            Value::Object(m)
                        }
                        Level::Arr(mut sib, pos) => {
                            let at = pos % (sib.len() + 1);
                            sib.insert(at, v);
                            Value::Array(sib)
                        }
                    };
                }
                (v, secret)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn planted_secret_never_survives((v, secret) in arb_planted()) {
            let r = Redactor::default();
            let mut redacted = v.clone();
            prop_assert!(r.redact_value(&mut redacted) >= 1);
            let s = serde_json::to_string(&redacted).unwrap();
            prop_assert!(!s.contains(MARKER), "redact_value leaked: {}", s);

            for serialized in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                prop_assert!(serialized.contains(MARKER));
                let whole = r.redact_text(&serialized);
                prop_assert!(!whole.contains(MARKER), "redact_text leaked: {}", whole);
                prop_assert!(!whole.contains(&secret));
                for (cut, _) in serialized.char_indices() {
                    let out = r.redact_text(&serialized[..cut]);
                    prop_assert!(!out.contains(MARKER), "leaked at cut {}: {}", cut, out);
                }
            }
        }

        #[test]
        fn redact_text_never_panics(s in any::<String>()) {
            let _ = Redactor::default().redact_text(&s);
        }

        #[test]
        fn redact_text_never_panics_on_json_like(s in "[a-z\"\\\\{}\\[\\]:,=&;% 'é\n]{0,64}") {
            let r = Redactor::default();
            let _ = r.redact_text(&s);
            let _ = r.redact_text(&format!("\"password\":{s}"));
            let _ = r.redact_text(&format!("token={s}"));
        }

        #[test]
        fn redact_text_keeps_text_without_separators(s in "[^=:\"\\\\]{0,64}") {
            prop_assert_eq!(Redactor::default().redact_text(&s), s);
        }
    }
}
