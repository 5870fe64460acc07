//! Payload redaction, run in the background pipeline before anything is stored.
//!
//! Two entry points:
//! * [`Redactor::redact_value`] for bodies that parsed as JSON: structural, exact, in place,
//!   at any depth, without recursion on the Rust stack.
//! * [`Redactor::redact_text`] for bodies that did not parse (truncated by the capture size
//!   limit, malformed, form-encoded, header-like text): a conservative single-pass textual
//!   scrub that prefers redacting too much over leaking.
//!
//! Both use the same key-matching rule, documented on [`Redactor`].

use serde_json::Value;

/// The replacement written in place of every sensitive value.
pub const REDACTED: &str = "[REDACTED]";

/// `REDACTED` as a JSON string literal.
const REDACTED_JSON: &str = "\"[REDACTED]\"";

/// Keys redacted by [`Redactor::default`].
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "session",
    "credit_card",
    "card_number",
    "cvv",
    "ssn",
];

/// Nesting limit for [`Redactor::redact_text`]'s descent into JSON embedded in JSON strings.
/// Each level needs roughly twice the backslashes of the previous one, so real data never
/// gets close; a string at this level is replaced whole.
const MAX_TEXT_NESTING: usize = 16;

/// Decides which keys are sensitive and removes their values.
///
/// # Matching rule
///
/// A key is *normalized* by lowercasing it (Unicode-aware) and removing every `-`, `_`, `.`
/// and whitespace character. A key is **sensitive** when its normalized form equals the
/// normalized form of a configured key **or ends with it**. With the default keys:
///
/// * `password`, `user_password`, `db.Password`, `X-Api-Key`, `AUTHORIZATION`,
///   `Set-Cookie`, `csrf_token`, `client secret` are sensitive;
/// * `tokens_used`, `session_count`, `password_policy`, `cookies_enabled` are **not**: they
///   contain a configured key but do not end with it.
///
/// Configured keys are normalized once in [`Redactor::new`]; matching compares characters
/// from the end and never allocates.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Normalized configured keys, each stored reversed (matching walks from the end).
    /// Empty keys are dropped, and a key that ends with another configured key is dropped
    /// as redundant (`access_token` is covered by `token`).
    keys: Vec<Box<[char]>>,
    /// The same keys as ASCII bytes, when every one is ASCII: the fast path for ASCII keys,
    /// which is nearly every key a sync payload has (most of the pipeline's time went to
    /// Unicode lowercasing before).
    ascii_keys: Option<Vec<Box<[u8]>>>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(DEFAULT_KEYS)
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '-' | '_' | '.') || c.is_whitespace()
}

/// The normalized form of `s`, last character first.
fn normalized_rev(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .rev()
        .filter(|c| !is_separator(*c))
        .flat_map(|c| c.to_lowercase().rev())
}

/// `is_sensitive` for an ASCII key: the same rule (separators dropped, lowercased, ends with
/// a configured key) on bytes, walking from the end of the key so that most configured keys
/// are ruled out by the first byte or two.
fn is_sensitive_ascii(keys: &[Box<[u8]>], key: &[u8]) -> bool {
    keys.iter().any(|k| {
        let mut normalized = key.iter().rev().filter(|b| !matches!(b, b'-' | b'_' | b'.' | b' ' | b'\t'..=b'\r')).map(u8::to_ascii_lowercase);
        k.iter().all(|c| normalized.next() == Some(*c))
    })
}

/// Does `hay` (reversed) start with `needle` (reversed), i.e. does the original end with it?
fn rev_starts_with(hay: &[char], needle: &[char]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()] == *needle
}

impl Redactor {
    /// A redactor for the given keys (matched with the rule documented on [`Redactor`]).
    pub fn new(keys: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let mut normalized: Vec<Box<[char]>> = keys
            .into_iter()
            .map(|k| normalized_rev(k.as_ref()).collect::<Box<[char]>>())
            .filter(|k| !k.is_empty())
            .collect();
        // Shortest first, so a key is only kept when no kept key is a suffix of it.
        normalized.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        let mut kept: Vec<Box<[char]>> = Vec::with_capacity(normalized.len());
        for k in normalized {
            if !kept.iter().any(|s| rev_starts_with(&k, s)) {
                kept.push(k);
            }
        }
        let ascii_keys = kept
            .iter()
            .map(|k| k.iter().map(|c| u8::try_from(*c).ok().filter(u8::is_ascii)).collect::<Option<Box<[u8]>>>())
            .collect::<Option<Vec<_>>>();
        Redactor { keys: kept, ascii_keys }
    }

    /// Whether a JSON object key (or form field name) is sensitive.
    pub fn is_sensitive(&self, key: &str) -> bool {
        // An ASCII key against ASCII configured keys: bytes, no Unicode tables. (A non-ASCII
        // key may lowercase to ASCII, e.g. the Kelvin sign, so it takes the general path.)
        if let (Some(keys), true) = (&self.ascii_keys, key.is_ascii()) {
            return is_sensitive_ascii(keys, key.as_bytes());
        }
        self.is_sensitive_general(key)
    }

    fn is_sensitive_general(&self, key: &str) -> bool {
        // Normalize the key's tail once (only as many characters as the longest configured
        // key can compare), on the stack, then compare every configured key against it.
        const TAIL: usize = 64;
        let mut tail = ['\0'; TAIL];
        let mut len = 0;
        for c in normalized_rev(key).take(TAIL) {
            tail[len] = c;
            len += 1;
        }
        self.keys.iter().any(|k| {
            if k.len() <= TAIL {
                rev_starts_with(&tail[..len], k)
            } else {
                let mut candidate = normalized_rev(key);
                k.iter().all(|c| candidate.next() == Some(*c))
            }
        })
    }

    /// Replaces, in place and at any depth, the value of every sensitive key (whatever its
    /// type) with the string [`REDACTED`], keeping the key. Returns how many values were
    /// replaced. Uses an explicit work stack, so arbitrarily deep values are fine; replaced
    /// subtrees are dismantled iteratively too.
    pub fn redact_value(&self, v: &mut Value) -> usize {
        let mut count = 0;
        let mut stack: Vec<&mut Value> = vec![v];
        while let Some(cur) = stack.pop() {
            match cur {
                Value::Object(map) => {
                    for (k, child) in map.iter_mut() {
                        if self.is_sensitive(k) {
                            let old = std::mem::replace(child, Value::String(REDACTED.to_owned()));
                            drop_deep(old);
                            count += 1;
                        } else if is_container(child) {
                            stack.push(child);
                        }
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut().filter(|c| is_container(c))),
                _ => {}
            }
        }
        count
    }

    /// Conservative textual scrub for bodies that are not valid JSON. Never panics, runs in
    /// linear time (times the nesting of JSON-in-JSON-strings, which is logarithmic in the
    /// input length), and when unsure redacts more rather than less.
    ///
    /// * `"<key>"` (sensitive, escapes decoded) followed by optional whitespace and `:` (or
    ///   `=`): the value that follows becomes `"[REDACTED]"`. The value is a quoted string
    ///   (escapes honoured; unterminated means up to the end), an object or array (up to the
    ///   matching close, strings honoured; unclosed means up to the end), or a bare token up
    ///   to `,` `}` `]`, whitespace or the end.
    /// * `key=value` (form, query string, cookie): the value up to `&`, `;`, whitespace,
    ///   `"`, `'`, `<`, `>` or the end becomes `[REDACTED]`. Field names are percent-decoded
    ///   and `user[password]`-style names match when any bracketed part is sensitive.
    /// * `key: value` with an unquoted key (headers, YAML, JS literals): a quoted or bracketed
    ///   value as above, otherwise the rest of the line becomes `[REDACTED]`.
    /// * Strings that are not sensitive keys are scrubbed recursively after unescaping, so
    ///   JSON or query strings embedded in string values (`"{\"token\":\"x\"}"`,
    ///   `"/cb?access_token=x"`) are caught; such a string is re-escaped only if it changed.
    pub fn redact_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        self.scrub_into(text, 0, &mut out);
        out
    }

    /// `is_sensitive`, widened for the textual scrub: also true when any `[`/`]`-separated
    /// part of the key is sensitive (`user[password]`, `password[0]`).
    fn key_matches(&self, key: &str) -> bool {
        if self.is_sensitive(key) {
            return true;
        }
        key.contains(['[', ']'])
            && key
                .split(['[', ']'])
                .any(|part| !part.is_empty() && self.is_sensitive(part))
    }

    /// `key_matches` for an unquoted word (form field name), percent-decoding it first.
    fn word_matches(&self, word: &str) -> bool {
        if self.key_matches(word) {
            return true;
        }
        if word.contains(['%', '+']) {
            let decoded = percent_decode(word);
            return self.key_matches(&decoded);
        }
        false
    }

    fn scrub_into(&self, text: &str, nesting: usize, out: &mut String) {
        let b = text.as_bytes();
        let n = b.len();
        // Invariant: text[..emitted] has been written to `out` (possibly rewritten).
        // Every index used to slice `text` points at an ASCII byte or at `n`.
        let mut emitted = 0;
        let mut i = 0;
        let mut word_start: Option<usize> = None;
        while i < n {
            let c = b[i];
            if is_word_byte(c) {
                if word_start.is_none() {
                    word_start = Some(i);
                }
                i += 1;
                continue;
            }
            if let Some(ws) = word_start.take() {
                // An unquoted word ends at `i`: `word=`, `word:`, `word":` or `word':`.
                let mut j = i;
                let mut quoted = false;
                if b[j] == b'"' || b[j] == b'\'' {
                    j += 1;
                    quoted = true;
                }
                j = skip_inline_space(b, j);
                if j < n && (b[j] == b'=' || b[j] == b':') && self.word_matches(&text[ws..i]) {
                    let mode = match (b[j], quoted) {
                        (b'=', _) => Mode::Form,
                        (_, true) => Mode::Json,
                        (_, false) => Mode::Line,
                    };
                    out.push_str(&text[emitted..=j]);
                    let vstart = skip_inline_space(b, j + 1);
                    out.push_str(&text[j + 1..vstart]);
                    let (vend, structured) = value_extent(b, vstart, mode);
                    out.push_str(if structured || mode == Mode::Json { REDACTED_JSON } else { REDACTED });
                    emitted = vend;
                    i = vend;
                    continue;
                }
            }
            if c != b'"' {
                i += 1;
                continue;
            }
            // A JSON string token.
            let (content_end, str_end, terminated) = scan_quoted(b, i, b'"');
            let raw = &text[i + 1..content_end];
            let after = skip_ws(b, str_end);
            if terminated && after < n && (b[after] == b':' || b[after] == b'=') {
                let key = unescape(raw);
                if self.key_matches(&key) {
                    let mode = if b[after] == b':' { Mode::Json } else { Mode::Form };
                    out.push_str(&text[emitted..=after]);
                    let vstart = skip_ws(b, after + 1);
                    out.push_str(&text[after + 1..vstart]);
                    let (vend, structured) = value_extent(b, vstart, mode);
                    out.push_str(if structured || mode == Mode::Json { REDACTED_JSON } else { REDACTED });
                    emitted = vend;
                    i = vend;
                    continue;
                }
            }
            // Not a sensitive key: look inside the string for embedded secrets. Only `=`, `:`
            // and escapes (which may hide quotes or either of those) can lead to a change.
            if raw.contains(['=', ':', '\\']) {
                if nesting >= MAX_TEXT_NESTING {
                    out.push_str(&text[emitted..i]);
                    out.push_str(REDACTED_JSON);
                    emitted = str_end;
                } else {
                    let content = unescape(raw);
                    let mut scrubbed = String::with_capacity(content.len());
                    self.scrub_into(&content, nesting + 1, &mut scrubbed);
                    if scrubbed != content {
                        out.push_str(&text[emitted..i]);
                        let escaped = serde_json::to_string(&scrubbed).unwrap_or_else(|_| REDACTED_JSON.to_owned());
                        if terminated {
                            out.push_str(&escaped);
                        } else {
                            out.push_str(&escaped[..escaped.len() - 1]);
                        }
                        emitted = str_end;
                    }
                }
            }
            i = str_end;
        }
        out.push_str(&text[emitted..]);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// After `"key":` — bare values end at `,` `}` `]` or whitespace.
    Json,
    /// After `key=` — bare values end at `&` `;` whitespace `"` `'` `<` `>`.
    Form,
    /// After unquoted `key:` — bare values run to the end of the line.
    Line,
}

/// Bytes that can be part of an unquoted key: ASCII alphanumerics, `_ - . [ ] % +`, and any
/// non-ASCII byte (so words always start on a character boundary after an ASCII byte).
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'[' | b']' | b'%' | b'+') || c >= 0x80
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn skip_inline_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Scans a string quoted with `q` starting at `b[start] == q`, honouring backslash escapes.
/// Returns (end of content, index after the token, terminated?). Unterminated strings run to
/// the end of the input. Both returned indices are at an ASCII quote or at `b.len()`.
fn scan_quoted(b: &[u8], start: usize, q: u8) -> (usize, usize, bool) {
    let mut k = start + 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            c if c == q => return (k, k + 1, true),
            _ => k += 1,
        }
    }
    (b.len(), b.len(), false)
}

/// `value_end`, erring towards redacting more: an unquoted value that ends in `:` or `=`
/// swallowed the key of a following pair (`password=x__token:"v"`), so that pair's value is
/// part of what is redacted too (found by the `redact_text` fuzz target).
fn value_extent(b: &[u8], start: usize, mode: Mode) -> (usize, bool) {
    let (mut end, structured) = value_end(b, start, mode);
    if structured {
        return (end, true);
    }
    while end > start && end < b.len() && matches!(b[end - 1], b':' | b'=') {
        let (next_end, _) = value_end(b, skip_inline_space(b, end), mode);
        if next_end <= end {
            break;
        }
        end = next_end;
    }
    (end, false)
}

/// End of the value starting at `start`, and whether it was quoted or bracketed.
fn value_end(b: &[u8], start: usize, mode: Mode) -> (usize, bool) {
    let n = b.len();
    if start >= n {
        return (n, false);
    }
    match b[start] {
        q @ (b'"' | b'\'') => (scan_quoted(b, start, q).1, true),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut k = start;
            while k < n {
                match b[k] {
                    b'"' => {
                        k = scan_quoted(b, k, b'"').1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return (k + 1, true);
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            (n, true)
        }
        _ => {
            let stop: fn(u8) -> bool = match mode {
                Mode::Json => |c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace(),
                Mode::Form => |c| matches!(c, b'&' | b';' | b'"' | b'\'' | b'<' | b'>') || c.is_ascii_whitespace(),
                Mode::Line => |c| matches!(c, b'\n' | b'\r'),
            };
            let mut k = start;
            while k < n && !stop(b[k]) {
                k += 1;
            }
            (k, false)
        }
    }
}

/// Decodes JSON string escapes. Lenient: unknown escapes keep the escaped character, bad or
/// lone surrogates become U+FFFD, a trailing lone backslash is dropped.
fn unescape(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {}
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let Some(hi) = read_hex4(&mut chars) else {
                    out.push('\u{FFFD}');
                    continue;
                };
                if (0xD800..0xDC00).contains(&hi) {
                    // Expect a low surrogate as `\uXXXX`.
                    let rest = chars.as_str();
                    if let Some(tail) = rest.strip_prefix("\\u") {
                        let mut t = tail.chars();
                        if let Some(lo) = read_hex4(&mut t)
                            && (0xDC00..0xE000).contains(&lo)
                        {
                            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                            chars = t;
                            continue;
                        }
                    }
                    out.push('\u{FFFD}');
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            Some(other) => out.push(other),
        }
    }
    out
}

fn read_hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let s = chars.as_str();
    let hex = s.get(..4)?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    *chars = s[4..].chars();
    Some(v)
}

/// Percent-decodes a form field name (`+` is a space); invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
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
                assert_eq!(red.is_sensitive(&key), red.is_sensitive_general(&key), "{key:?}");
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

    #[test]
    fn unescape_and_percent_decode() {
        assert_eq!(unescape(r#"a\"b\\c\/\n\u0041\ud83d\ude00\ud800x\u12\"#), "a\"b\\c/\nA😀\u{FFFD}x\u{FFFD}12");
        assert_eq!(percent_decode("a%5Bb%5d+c%zz%4"), "a[b] c%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%41"), "A");
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
