//! The value rules: credentials inside strings, and the textual scrub of bodies that did not
//! parse as JSON (truncated by the capture size limit, malformed, form-encoded, header-like).
//!
//! One single-pass scanner serves both: [`Redactor::redact_str`] runs it on each string of a
//! parsed tree, [`Redactor::redact_text`] on a whole body. It never panics, runs in linear
//! time (times the nesting of JSON-in-JSON-strings, which is logarithmic in the input length),
//! and when unsure redacts more rather than less. What it recognises:
//!
//! * `"<key>"` (sensitive, escapes decoded) then `:` or `=`: the value that follows (a quoted
//!   string, an object or array up to its matching close, or a bare token) becomes
//!   `"[REDACTED]"`; unterminated means up to the end.
//! * `key=value` (forms, query strings, cookies): the value up to `&`, `;`, whitespace, `"`,
//!   `'`, `<`, `>` or the end. Field names are percent-decoded; `user[password]` matches.
//! * `key: value` with an unquoted key (header lines, YAML, free text): a quoted or bracketed
//!   value as above, otherwise the rest of the line.
//! * `Bearer <credential>`, `Basic <credential>`, `Token <credential>` anywhere, when the word
//!   after the scheme looks like a credential (6+ token characters with a digit, a symbol
//!   `-._~+/=`, or an upper-case letter after the first): `bearer bonds` stays.
//! * URL userinfo passwords: `scheme://user:<password>@host` keeps the user and host.
//! * JSON Web Tokens (`eyJ...` in three base64url segments) and PEM private key blocks.
//! * Strings inside the text are unescaped and scanned again, so JSON or query strings
//!   encoded inside strings are caught; such a string is re-escaped only if it changed.

use std::borrow::Cow;

use super::{REDACTED, Redactor};

/// `REDACTED` as a JSON string literal.
const REDACTED_JSON: &str = "\"[REDACTED]\"";

/// Nesting limit for the descent into JSON embedded in JSON strings. Each level needs roughly
/// twice the backslashes of the previous one, so real data never gets close; a string at
/// this level is replaced whole.
const MAX_TEXT_NESTING: usize = 16;

/// Authorization schemes whose next word is a credential.
const SCHEMES: &[&str] = &["bearer", "basic", "token"];

impl Redactor {
    /// Conservative textual scrub for bodies that are not valid JSON (module docs list what it
    /// recognises). Text with nothing to redact comes back unchanged.
    pub fn redact_text(&self, text: &str) -> String {
        self.scrub(text, 0).unwrap_or_else(|| text.to_owned())
    }

    /// `is_sensitive` for an unquoted word (form field name), percent-decoding it first.
    fn word_matches(&self, word: &str) -> bool {
        if self.is_sensitive(word) {
            return true;
        }
        if word.contains(['%', '+']) {
            let decoded = percent_decode(word);
            return self.is_sensitive(&decoded);
        }
        false
    }

    /// Extends a cut `text[start..end]` whose marker is written, and returns where it ends now.
    /// When unsure, more is cut (each case found by fuzzing):
    /// * it ends with a scheme word (`Bearer /bearer <credential>`, `password=x BEARER
    ///   <credential>`): the credential-like or scheme word after it is cut too;
    /// * it ends with a sensitive key that has a value after it (`token X-Secret: <value>`,
    ///   `Bearer Set-SECRET='<value>'`, `token = token X-Secret: <value>`): it is unclear which of
    ///   the two is the secret, so the value is cut too.
    fn extend_cut(&self, text: &str, start: usize, end: usize, out: &mut String) -> usize {
        let b = text.as_bytes();
        let (mut start, mut end) = (start, end);
        loop {
            if ends_with_scheme(&b[start..end]) && end < b.len() && (b[end] == b' ' || b[end] == b'\t') {
                let next = skip_inline_space(b, end);
                let next_end = credential_end(b, next);
                let word = &b[next..next_end];
                if looks_like_credential(word) || SCHEMES.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(word)) {
                    (start, end) = (next, next_end);
                    continue;
                }
            }
            // A cut that ends with a sensitive key and then a credential-like word, no separator
            // (`Bearer api_key <credential>`, found by a fresh-eyes test).
            if end < b.len() && (b[end] == b' ' || b[end] == b'\t') {
                let key_start = start + b[start..end].iter().rposition(|&c| !is_word_byte(c)).map_or(0, |p| p + 1);
                let next = skip_inline_space(b, end);
                let next_end = credential_end(b, next);
                if key_start < end && self.word_matches(&text[key_start..end]) && looks_like_credential(&b[next..next_end]) {
                    (start, end) = (next, next_end);
                    continue;
                }
            }
            // A sensitive `key=value` inside the credential: its value runs on as a form
            // value does, past the credential's bytes (`Bearer ab/password=hunter2!rest`;
            // found by a fresh-eyes test, 2 December).
            if let Some(vend) = self.value_inside_credential(b, text, start, end).filter(|&v| v > end) {
                end = vend;
                continue;
            }
            if let Some((emit_from, sep, mode)) = self.pair_after_credential(b, text, start, end) {
                let vend = redact_pair_value(text, emit_from, sep, mode, skip_inline_space, out);
                if vend > end {
                    (start, end) = (sep + 1, vend);
                    continue;
                }
            }
            return end;
        }
    }

    /// Where the value of the first sensitive `key=value` inside the cut `b[start..end]` ends,
    /// read as a form value.
    fn value_inside_credential(&self, b: &[u8], text: &str, start: usize, end: usize) -> Option<usize> {
        let mut from = start;
        while let Some(p) = b[from..end].iter().position(|&c| c == b'=') {
            let eq = from + p;
            let key_start = start + b[start..eq].iter().rposition(|&c| !is_word_byte(c)).map_or(0, |p| p + 1);
            // A `key=` that ends the cut is `pair_after_credential`'s (a quoted value follows).
            if key_start < eq && eq + 1 < end && self.word_matches(&text[key_start..eq]) {
                return Some(value_extent(b, eq + 1, Mode::Form).0);
            }
            from = eq + 1;
        }
        None
    }

    /// For a credential `b[cs..ce]` after a scheme word whose last part is a sensitive key
    /// followed by `=` (inside the credential) or by `:` / `=` (after it, past an optional
    /// closing quote): where the key ends, the separator, and how to read the value.
    ///
    /// Returns where the text still to be written starts (the caller has written the cut up to
    /// `ce`), the separator, and the mode.
    fn pair_after_credential(&self, b: &[u8], text: &str, cs: usize, ce: usize) -> Option<(usize, usize, Mode)> {
        // `Set-SECRET=` then a quoted value: the credential took the `=`.
        let inner_end = cs + b[cs..ce].iter().rposition(|&c| c != b'=').map_or(0, |p| p + 1);
        let (emit_from, key_end, sep, mode) = if inner_end < ce {
            (inner_end, inner_end, ce - 1, Mode::Form)
        } else {
            // The key may go on past the credential's bytes: `card_number%20=` (`%` is a key
            // byte, not a credential byte; found by CI's redact_values fuzzing, 2 December).
            let key_end = ce + b[ce..].iter().take_while(|&&c| is_word_byte(c)).count();
            let quoted = key_end < b.len() && (b[key_end] == b'"' || b[key_end] == b'\'');
            let k = skip_inline_space(b, key_end + usize::from(quoted));
            match (b.get(k), quoted) {
                (Some(b'='), _) => (ce, key_end, k, Mode::Form),
                (Some(b':'), true) => (ce, key_end, k, Mode::Json),
                (Some(b':'), false) => (ce, key_end, k, Mode::Line),
                _ => return None,
            }
        };
        // The key is the last run of key bytes (`ab12/api_key` ends in `api_key`).
        let key_start = cs + b[cs..key_end].iter().rposition(|&c| !is_word_byte(c)).map_or(0, |p| p + 1);
        (key_start < key_end && self.word_matches(&text[key_start..key_end])).then_some((emit_from, sep, mode))
    }

    /// The scrubbed text, or `None` when nothing in it had to change.
    pub(super) fn scrub(&self, text: &str, nesting: usize) -> Option<String> {
        if !may_hold_credential(text.as_bytes()) {
            return None;
        }
        let pem = self.redact_pem(text);
        let source: &str = pem.as_deref().unwrap_or(text);
        let mut out = String::new();
        if self.scrub_into(source, nesting, &mut out) {
            Some(out)
        } else {
            pem
        }
    }

    /// Writes the scrubbed `text` to `out` and returns true, or returns false (writing
    /// nothing) when nothing had to change.
    fn scrub_into(&self, text: &str, nesting: usize, out: &mut String) -> bool {
        let b = text.as_bytes();
        let n = b.len();
        // Invariant: text[..emitted] has been written to `out` (possibly rewritten); nothing
        // was rewritten while `emitted` is 0. Every index used to slice `text` points at an
        // ASCII byte or at `n`.
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
                let word = &text[ws..i];
                // `Bearer <credential>`, also after a byte that is not a letter or digit but
                // joins a word (`[Bearer x]`, `«Bearer x»`, `h=Bearer+x`: found by a fresh-eyes
                // test).
                if (c == b' ' || c == b'\t') && ends_with_scheme(word.as_bytes()) {
                    let cs = skip_inline_space(b, i);
                    let ce = credential_end(b, cs);
                    // `Bearer Bearer <credential>` (a client that adds the scheme twice): the
                    // second scheme word is not the credential; scan on from it.
                    if ce < n && (b[ce] == b' ' || b[ce] == b'\t') && SCHEMES.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(&b[cs..ce])) {
                        i = cs;
                        continue;
                    }
                    // `Bearer secret <credential>`: a sensitive key word between the scheme and
                    // the credential (found by a fresh-eyes test); `extend_cut` takes the rest.
                    // The key word may hold bytes a credential does not (`api%5Fkey`,
                    // `user[password]`; found by a fresh-eyes test, 2 December).
                    let we = cs + b[cs..].iter().take_while(|&&c| is_word_byte(c)).count();
                    let key_then_credential = we < n
                        && (b[we] == b' ' || b[we] == b'\t')
                        && self.word_matches(&text[cs..we])
                        && {
                            let next = skip_inline_space(b, we);
                            looks_like_credential(&b[next..credential_end(b, next)])
                        };
                    let ce = if key_then_credential { we } else { ce };
                    if looks_like_credential(&b[cs..ce]) || key_then_credential {
                        out.push_str(&text[emitted..cs]);
                        out.push_str(REDACTED);
                        let end = self.extend_cut(text, cs, ce, out);
                        emitted = end;
                        i = end;
                        continue;
                    }
                }
                if let Some((js, je)) = jwt_in_word(word) {
                    out.push_str(&text[emitted..ws + js]);
                    out.push_str(REDACTED);
                    emitted = ws + je;
                }
                // An unquoted word ends at `i`: `word=`, `word:`, `word":` or `word':`.
                let mut j = i;
                let mut quoted = false;
                if b[j] == b'"' || b[j] == b'\'' {
                    j += 1;
                    quoted = true;
                }
                j = skip_inline_space(b, j);
                if j < n && (b[j] == b'=' || b[j] == b':') && emitted <= ws && self.word_matches(word) {
                    let mode = match (b[j], quoted) {
                        (b'=', _) => Mode::Form,
                        (_, true) => Mode::Json,
                        (_, false) => Mode::Line,
                    };
                    let vend = redact_pair_value(text, emitted, j, mode, skip_inline_space, out);
                    let vend = self.extend_cut(text, j + 1, vend, out);
                    emitted = vend;
                    i = vend;
                    continue;
                }
            }
            // `scheme://user:password@host`.
            if c == b':' && b[i + 1..].starts_with(b"//") {
                if let Some((ps, pe)) = userinfo_password(b, i + 3) {
                    out.push_str(&text[emitted..ps]);
                    out.push_str(REDACTED);
                    emitted = pe;
                    i = pe;
                } else {
                    i += 3;
                }
                continue;
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
                if self.is_sensitive(&key) {
                    let mode = if b[after] == b':' { Mode::Json } else { Mode::Form };
                    let vend = redact_pair_value(text, emitted, after, mode, skip_ws, out);
                    let vend = self.extend_cut(text, after + 1, vend, out);
                    emitted = vend;
                    i = vend;
                    continue;
                }
            }
            // Not a sensitive key: look inside the string for embedded secrets.
            if !raw.is_empty() {
                if nesting >= MAX_TEXT_NESTING {
                    out.push_str(&text[emitted..i]);
                    out.push_str(REDACTED_JSON);
                    emitted = str_end;
                } else {
                    let content = unescape(raw);
                    if let Some(scrubbed) = self.scrub(&content, nesting + 1) {
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
        if let Some(ws) = word_start
            && let Some((js, je)) = jwt_in_word(&text[ws..])
        {
            out.push_str(&text[emitted..ws + js]);
            out.push_str(REDACTED);
            emitted = ws + je;
        }
        if emitted == 0 {
            return false;
        }
        out.push_str(&text[emitted..]);
        true
    }
}

/// Whether any rule could match: every rule needs `:`, `=`, a quote or an escape, except
/// `Bearer|Basic|Token <credential>` (a scheme word before a space), JWTs (`eyJ`) and PEM
/// blocks (`PRIVATE KEY`). Most strings (titles, names, ids, blobs) have none of these, and
/// this check runs at memory speed (memchr), so they cost next to nothing.
fn may_hold_credential(b: &[u8]) -> bool {
    // Most values are short (titles, names, ids): one pass over the bytes beats the four
    // memchr passes' setup there (callgrind, BENCHMARKS.md section 6).
    if b.len() <= SHORT {
        return may_hold_credential_short(b);
    }
    may_hold_credential_long(b)
}

/// Up to this many bytes a value is checked byte by byte.
const SHORT: usize = 64;

/// [`may_hold_credential`] in one pass; the same answer as [`may_hold_credential_long`].
fn may_hold_credential_short(b: &[u8]) -> bool {
    for (i, &c) in b.iter().enumerate() {
        // One table load for the common byte that starts nothing.
        let hit = match MARKS[c as usize] {
            0 => false,
            HIT => true,
            b'J' => i >= 2 && &b[i - 2..i] == b"ey",
            b'K' => i >= 8 && &b[i - 8..i] == b"PRIVATE ",
            _ => follows_scheme(b, i),
        };
        if hit {
            return true;
        }
    }
    false
}

/// For each byte: 0 when it starts no rule, [`HIT`] when its presence alone is enough (a
/// separator, a quote, an escape), else itself (`J`, `K`, a blank: the rule looks behind it).
static MARKS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b':' as usize] = HIT;
    t[b'=' as usize] = HIT;
    t[b'"' as usize] = HIT;
    t[b'\\' as usize] = HIT;
    t[b'J' as usize] = b'J';
    t[b'K' as usize] = b'K';
    t[b' ' as usize] = b' ';
    t[b'\t' as usize] = b'\t';
    t
};
const HIT: u8 = 1;

/// Whether the blank at `space` follows a scheme word that starts the text or follows a byte
/// that is not a letter or digit.
fn follows_scheme(b: &[u8], space: usize) -> bool {
    // Every scheme ends in `r`, `c` or `n` (checked by a test): most blanks in prose follow
    // another byte, and need no comparison.
    if space == 0 || !matches!(b[space - 1] | 0x20, b'r' | b'c' | b'n') {
        return false;
    }
    SCHEMES.iter().any(|s| {
        let n = s.len();
        space >= n && s.as_bytes().eq_ignore_ascii_case(&b[space - n..space]) && (space == n || !b[space - n - 1].is_ascii_alphanumeric())
    })
}

fn may_hold_credential_long(b: &[u8]) -> bool {
    if memchr::memchr3(b':', b'=', b'"', b).is_some() || memchr::memchr(b'\\', b).is_some() {
        return true;
    }
    // `eyJ` (a JWT) and `PRIVATE KEY` (PEM) both hold a capital letter that prose rarely has.
    let marker = |at: usize| match b[at] {
        b'J' => at >= 2 && &b[at - 2..at] == b"ey",
        _ => at >= 8 && &b[at - 8..at] == b"PRIVATE ",
    };
    if memchr::memchr2_iter(b'J', b'K', b).any(marker) {
        return true;
    }
    memchr::memchr2_iter(b' ', b'\t', b).any(|space| follows_scheme(b, space))
}

/// Writes `text[emitted..]` up to and including the separator at `sep` (`=`, `:`, or the
/// arrow of `key => value`), then the marker in place of the value after it; returns where
/// the value ended. `skip` passes the blanks between separator and value.
fn redact_pair_value(text: &str, emitted: usize, sep: usize, mode: Mode, skip: fn(&[u8], usize) -> usize, out: &mut String) -> usize {
    let b = text.as_bytes();
    // `key => value` (Ruby, PHP): the arrow is the separator.
    let sep = if b[sep] == b'=' && b.get(sep + 1) == Some(&b'>') { sep + 1 } else { sep };
    out.push_str(&text[emitted..=sep]);
    let vstart = skip(b, sep + 1);
    out.push_str(&text[sep + 1..vstart]);
    let (vend, structured) = value_extent(b, vstart, mode);
    out.push_str(if structured || mode == Mode::Json { REDACTED_JSON } else { REDACTED });
    vend
}

/// Bytes of an HTTP credential (RFC 9110 token68, plus `=` padding), and `|`, which
/// Laravel Sanctum's tokens hold (`5|AbCd...`; found by a fresh-eyes test).
fn is_credential_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'|')
}

fn credential_end(b: &[u8], start: usize) -> usize {
    let mut k = start;
    while k < b.len() && is_credential_byte(b[k]) {
        k += 1;
    }
    k
}

/// Whether `w` ends with a scheme word that starts it or follows a byte that is not a letter
/// or digit (`/bearer`, `x=Token`, but not `subtoken`).
fn ends_with_scheme(w: &[u8]) -> bool {
    let letters = w.iter().rev().take_while(|c| c.is_ascii_alphabetic()).count();
    let start = w.len() - letters;
    (start == 0 || !w[start - 1].is_ascii_alphanumeric()) && SCHEMES.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(&w[start..]))
}

/// Whether the word after `Bearer`/`Basic`/`Token` is a credential rather than prose: at
/// least 6 characters with a digit, a symbol, or an upper-case letter after the first.
fn looks_like_credential(w: &[u8]) -> bool {
    w.len() >= 6
        && (w.iter().any(|c| c.is_ascii_digit() || !c.is_ascii_alphanumeric()) || w[1..].iter().any(u8::is_ascii_uppercase))
}

/// Where a JSON Web Token sits in a word: from an `eyJ` that starts the word or follows a byte
/// that is not a letter or digit (`[eyJ...]`, `x-eyJ...`, `«eyJ...»`; found by a fresh-eyes
/// test), over base64url bytes and dots. Byte offsets in `word`.
fn jwt_in_word(word: &str) -> Option<(usize, usize)> {
    let b = word.as_bytes();
    let mut from = 0;
    while let Some(p) = word[from..].find("eyJ").map(|p| from + p) {
        if p == 0 || !b[p - 1].is_ascii_alphanumeric() {
            // The token runs over base64url and dots (`...sig+thanks`, `...sig%20x`: found by
            // a fresh-eyes test). A final dot is its empty signature (`alg: none`) or the full
            // stop of a sentence.
            let len = word[p..].bytes().take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')).count();
            let token = &word[p..p + len];
            for t in [token, token.trim_end_matches('.')] {
                if is_jwt(t.as_bytes()) {
                    return Some((p, p + t.len()));
                }
            }
        }
        from = p + 3;
    }
    None
}

/// A JSON Web Token: `eyJ` (base64url of `{"`), three base64url segments, the first two
/// non-empty (the signature is empty for `alg: none`).
fn is_jwt(w: &[u8]) -> bool {
    if w.len() < 16 || !w.starts_with(b"eyJ") {
        return false;
    }
    let mut segments = w.split(|c| *c == b'.');
    let (Some(h), Some(p), Some(s), None) = (segments.next(), segments.next(), segments.next(), segments.next()) else { return false };
    let b64url = |seg: &[u8]| seg.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
    !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
}

/// The password of a URL's userinfo (`user:password@`), for an authority starting at `start`
/// (just after `://`): its byte range, when there is one.
fn userinfo_password(b: &[u8], start: usize) -> Option<(usize, usize)> {
    let mut end = start;
    while end < b.len() && !matches!(b[end], b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\') && !b[end].is_ascii_whitespace() {
        end += 1;
    }
    let at = start + b[start..end].iter().rposition(|c| *c == b'@')?;
    let colon = start + b[start..at].iter().position(|c| *c == b':')?;
    (colon + 1 < at).then_some((colon + 1, at))
}

/// Where a PEM body stops: at a quote, or at a backslash that is not a `\n` / `\r` line break
/// written out (as in `.env` files and logs), so an escape such as `\"` keeps its backslash.
fn pem_body_end(b: &[u8]) -> usize {
    let mut k = 0;
    while k < b.len() {
        match b[k] {
            b'"' | b'\'' => return k,
            b'\\' if matches!(b.get(k + 1), Some(b'n' | b'r')) => k += 2,
            b'\\' => return k,
            _ => k += 1,
        }
    }
    b.len()
}

impl Redactor {
    /// PEM private key blocks with their base64 body replaced; `None` when there are none.
    fn redact_pem(&self, text: &str) -> Option<String> {
        const BEGIN: &str = "-----BEGIN ";
        if !text.contains("PRIVATE KEY-----") {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(b) = rest.find(BEGIN) {
            let after = b + BEGIN.len();
            let label_end = rest[after..].find("-----").map(|e| after + e + 5);
            let label = label_end.map(|e| &rest[after..e - 5]);
            // A BEGIN line that is not closed on its own line (cut, or garbled) is skipped, so
            // it cannot swallow the BEGIN line of the block after it (found by fuzzing).
            // Nor may its label end at the dashes of the next BEGIN line (`paste it after
            // -----BEGIN here: -----BEGIN PRIVATE KEY-----`; found by a fresh-eyes test).
            let opens_next = label_end.is_some_and(|e| rest[e - 5..].starts_with("-----BEGIN"));
            let (Some(label_end), Some(label)) =
                (label_end, label.filter(|l| !opens_next && !l.contains(['\n', '\r']) && !l.contains("BEGIN")))
            else {
                out.push_str(&rest[..after]);
                rest = &rest[after..];
                continue;
            };
            out.push_str(&rest[..label_end]);
            rest = &rest[label_end..];
            if !label.ends_with("PRIVATE KEY") {
                continue;
            }
            // The body runs to the END line, or to the end of the text when it was cut off, and
            // never over a quote or a backslash: a BEGIN in one JSON string and an END in a later
            // one must not cut the structure between them, nor may an escape lose its backslash
            // (both found by the redact fuzz target). Line breaks written as `\n` / `\r` escapes
            // (a block inside a JSON string) are part of the body.
            let end_line = rest.find("-----END").unwrap_or(rest.len());
            let mut body_end = pem_body_end(&rest.as_bytes()[..end_line]);
            if body_end < end_line {
                body_end = self.keep_last_pair(&rest[..body_end]);
                // Nothing but line breaks left to cut.
                if rest[..body_end].replace("\\n", "").replace("\\r", "").trim().is_empty() {
                    body_end = 0;
                }
            }
            if body_end == 0 {
                continue;
            }
            out.push_str(REDACTED);
            rest = &rest[body_end..];
            changed = true;
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// For a PEM body cut that stopped early, at a quote or a backslash: where the cut ends so
    /// that a pair whose value starts there stays for the key rules. Cutting the key and
    /// stopping at its value's quote kept the value (found by the redact fuzz target:
    /// `-----BEGIN ... PRIVATE KEY-----` then `my api_key: "<secret>"`).
    ///
    /// The pair is the `key:` (or sensitive `key=`, `key =>`) right before the stop, past
    /// blanks, line breaks and opening brackets (`api_key: {\n  "a": ...`), together with the
    /// pairs chained before it on its line (`api_key: note: "x"`). Everything before the pair
    /// is still cut, base64 and `Proc-Type:` headers included, and so is a base64 line's `=`
    /// padding. The blanks before the kept key stay too, so the marker does not join the
    /// next word (`[REDACTED]Bearer` is no scheme word; found by a fresh-eyes test).
    fn keep_last_pair(&self, cut: &str) -> usize {
        let b = cut.as_bytes();
        let blank = |c: u8| c == b' ' || c == b'\t';
        // Back from `k` over blanks and line breaks (raw or escaped), and with `brackets` over
        // what may open a value.
        let back_over = |mut k: usize, brackets: bool| loop {
            if k > 0 && (blank(b[k - 1]) || matches!(b[k - 1], b'\n' | b'\r') || (brackets && matches!(b[k - 1], b'{' | b'['))) {
                k -= 1;
            } else if k >= 2 && b[k - 2] == b'\\' && matches!(b[k - 1], b'n' | b'r') {
                k -= 2;
            } else {
                return k;
            }
        };
        let mut k = back_over(b.len(), true);
        let mut keep = b.len();
        loop {
            let (colon, sep) = match k {
                _ if k >= 2 && &b[k - 2..k] == b"=>" => (false, k - 2),
                _ if k >= 2 && &b[k - 2..k] == b":=" => (true, k - 2),
                _ if k >= 1 && b[k - 1] == b':' => (true, k - 1),
                _ if k >= 1 && b[k - 1] == b'=' => (false, k - 1),
                _ => break,
            };
            let mut word_end = sep;
            while word_end > 0 && blank(b[word_end - 1]) {
                word_end -= 1;
            }
            let mut word_start = b[..word_end].iter().rposition(|&c| !is_word_byte(c)).map_or(0, |p| p + 1);
            // The `n` of an escaped line break (`\npassword=`) is not the key's.
            if word_start > 0 && b[word_start - 1] == b'\\' {
                word_start += 1;
            }
            if word_start >= word_end || !(colon || self.word_matches(&cut[word_start..word_end])) {
                break;
            }
            keep = word_start;
            k = word_start;
            while k > 0 && blank(b[k - 1]) {
                k -= 1;
            }
        }
        // A sensitive pair earlier on the last line whose value the stop falls inside
        // (`password: it's <secret>`, `Authorization: Bearer "<secret>"`; found by a
        // fresh-eyes test): its key stays too.
        let line_start = (0..b.len())
            .rev()
            .find(|&p| matches!(b[p], b'\n' | b'\r') || (p > 0 && b[p - 1] == b'\\' && matches!(b[p], b'n' | b'r')))
            .map_or(0, |p| p + 1);
        for sep in (line_start..keep.min(b.len())).filter(|&p| matches!(b[p], b':' | b'=')) {
            let mut word_end = sep;
            while word_end > line_start && blank(b[word_end - 1]) {
                word_end -= 1;
            }
            let word_start = line_start + b[line_start..word_end].iter().rposition(|&c| !is_word_byte(c)).map_or(0, |p| p + 1);
            if word_start < word_end && self.word_matches(&cut[word_start..word_end]) {
                keep = word_start;
                break;
            }
        }
        if keep < b.len() { back_over(keep, false) } else { keep }
    }
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
    // `authorization=Bearer <credential>`: the bare value ends with the scheme word (alone,
    // or after bytes that are not letters, e.g. `password=\0\0BEARER <credential>`), and the
    // credential after the space belongs to it (both found by the redact_values fuzz target).
    let value = &b[start..end];
    let last_word = &value[value.iter().rposition(|c| !c.is_ascii_alphabetic()).map_or(0, |p| p + 1)..];
    if end < b.len() && matches!(b[end], b' ' | b'\t') && SCHEMES.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(last_word)) {
        let cs = skip_inline_space(b, end);
        let ce = credential_end(b, cs);
        if ce > cs {
            end = ce;
        }
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
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
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
                    // An escape cut off by the end of the text is dropped like a trailing
                    // backslash: a U+FFFD would glue onto the word before it (found by fuzzing).
                    if chars.as_str().len() < 4 && chars.as_str().bytes().all(|c| c.is_ascii_hexdigit()) {
                        break;
                    }
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
    Cow::Owned(out)
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
    use proptest::prelude::*;

    #[test]
    fn every_scheme_ends_in_a_byte_the_quick_check_lets_through() {
        for scheme in SCHEMES {
            for spelled in [(*scheme).to_owned(), scheme.to_ascii_uppercase()] {
                let text = format!("{spelled} abcdef123456");
                assert!(follows_scheme(text.as_bytes(), spelled.len()), "{text}");
            }
        }
        assert!(!follows_scheme(b"buy milk", 3));
        assert!(!follows_scheme(b" x", 0));
    }

    proptest! {
        /// The one-pass check of short values answers exactly as the memchr one, on text made
        /// of the bytes the rules look for (markers, schemes, blanks) and any others.
        #[test]
        fn the_short_prefilter_agrees_with_the_long_one(
            parts in proptest::collection::vec(prop_oneof![
                Just("ey".to_owned()), Just("J".to_owned()), Just("PRIVATE ".to_owned()), Just("K".to_owned()),
                Just("Bearer".to_owned()), Just("bASic".to_owned()), Just("token".to_owned()), Just("sub".to_owned()),
                Just(" ".to_owned()), Just("\t".to_owned()), Just(":".to_owned()), Just("=".to_owned()), Just("\"".to_owned()),
                Just("\\".to_owned()), Just("-".to_owned()), Just("é".to_owned()), "[a-zA-Z0-9 ]{0,6}",
            ], 0..12)
        ) {
            let text = parts.concat();
            prop_assert_eq!(may_hold_credential_short(text.as_bytes()), may_hold_credential_long(text.as_bytes()), "{:?}", text);
        }
    }

    #[test]
    fn the_prefilter_lets_through_what_a_rule_could_match_and_nothing_else() {
        for yes in ["a:b", "k=v", "say \"x\"", "a\\b", "xeyJhb", "-----BEGIN PRIVATE KEY", "Bearer abc", "x/token abc", "basic\tx", "[Bearer abc", "«token abc"] {
            assert!(may_hold_credential_short(yes.as_bytes()) && may_hold_credential(yes.as_bytes()), "{yes}");
        }
        for no in ["Buy oat milk", "subtoken abc", "JSON Key", "ey J", "Bearerx y", ""] {
            assert!(!may_hold_credential_short(no.as_bytes()) && !may_hold_credential(no.as_bytes()), "{no}");
        }
        let long = format!("{} Bearer x", "a".repeat(80));
        assert!(may_hold_credential(long.as_bytes()));
        assert!(!may_hold_credential("b".repeat(100).as_bytes()));
    }

    /// Found by the redact_values fuzz target: a scheme word as a pair's bare value, a JWT at
    /// the end of a sentence, and a PEM block after an unclosed BEGIN line kept the secret.
    #[test]
    fn gaps_found_by_fuzzing() {
        let r = Redactor::default();
        for (input, expected) in [
            ("authorization=Bearer sEcr3t-9 rest", "authorization=[REDACTED] rest"),
            ("{\"password\":Bearer sEcr3t-9, \"x\": 1}", "{\"password\":\"[REDACTED]\", \"x\": 1}"),
            ("see eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnX3NFY3IzdA.", "see [REDACTED]."),
            ("-----BEGIN junk\n-----BEGIN PRIVATE KEY-----\nsEcr3t\n-----END PRIVATE KEY-----", "-----BEGIN junk\n-----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----"),
            (
                "{\"token\":{\"a\":\"-----BEGIN PRIVATE KEY-----\",\"b\":{\"x\":\"-----END\"},\"c\":\"sEcr3t\"}}",
                "{\"token\":\"[REDACTED]\"}",
            ),
            ("{\"n\":\"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sEcr3tXY\\u00", "{\"n\":\"[REDACTED]"),
            // Found by a review: escaped line breaks in a PEM, `=>` pairs, a tab after Bearer.
            ("PK=-----BEGIN PRIVATE KEY-----\\nMIIEsEcr3t\\r\\n-----END PRIVATE KEY-----", "PK=-----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----"),
            ("{\"password\"=>\"sEcr3t\", \"user\"=>\"bob\"}", "{\"password\"=>\"[REDACTED]\", \"user\"=>\"bob\"}"),
            ("{:password=>\"sEcr3t\"}", "{:password=>\"[REDACTED]\"}"),
            ("[password] => sEcr3t\n", "[password] => [REDACTED]\n"),
            ("sent Bearer\tsEcr3t-9x", "sent Bearer\t[REDACTED]"),
            // Found by the redact_values fuzz target (CI, 1 December): the scheme twice, as
            // clients that prepend it to a header value that already has it send.
            ("BeArEr  BeArEr  QZX7____, ok", "BeArEr  BeArEr  [REDACTED], ok"),
            ("Authorization: Bearer Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "Authorization: [REDACTED]"),
            ("token Basic Token dXNlcjpwYXNz9 end", "token Basic Token [REDACTED] end"),
            // Found by the redact_text fuzz target right after: a scheme word before a
            // sensitive key, whose value the key rule must cut.
            ("token    X-SeCreT:\"s3cr3t20202000\" &", "token    [REDACTED]:\"[REDACTED]\" &"),
            ("Bearer api_key: sk_live_4eC39Hq", "Bearer [REDACTED]: [REDACTED]"),
            // A plain word after the scheme is no credential, and the key rule alone cuts.
            ("the token secret: hunter2\nnext", "the token secret: [REDACTED]\nnext"),
            ("with password=\0\0BEARER QZX7g4__=.vvvv tail", "with password=[REDACTED] tail"),
            ("see bEAreR \tQZX7RHs2=secret\":\"sk5x1", "see bEAreR \t[REDACTED]\":\"[REDACTED]\""),
            // Found by CI's redact_values fuzzing (1 December): the credential took the key's
            // `=` and the quoted value after it was kept; the same with other separators.
            ("BeArEr  Set-SECRET='QZX7yfw__ClBlB''", "BeArEr  [REDACTED]=\"[REDACTED]\"'"),
            ("Bearer X-Token=\"s3cr3t-v\" tail", "Bearer [REDACTED]=\"[REDACTED]\" tail"),
            ("Basic ab12/api_key: sk_live_4eC39Hq\nnext", "Basic [REDACTED]: [REDACTED]\nnext"),
            ("Token dXNlcjpwYXNz== next", "Token [REDACTED] next"),
            // Found by a local redact_values campaign: the credential cut ended with a scheme
            // word and the real credential after it was kept.
            ("\u{b}BeArEr /bearer QZX7AA", "\u{b}BeArEr [REDACTED]"),
            // Found by CI's redact_values fuzzing (2 December): the key went on past the
            // credential's bytes (`%20` is not a credential byte) before its `=`.
            ("\u{b}BeArEr /card_numBer%20=QZX7Ah", "\u{b}BeArEr [REDACTED]%20=[REDACTED]"),
            ("Bearer ab/password%5B0%5D=QZX7Ah&x=1", "Bearer [REDACTED]%5B0%5D=[REDACTED]&x=1"),
            ("Bearer ab/api[key]: QZX7Ah\nnext", "Bearer [REDACTED][key]: [REDACTED]\nnext"),
            // Found by a fresh-eyes test (2 December): a key=value inside the credential whose
            // value has bytes a credential does not, and a key word with such bytes before
            // the credential.
            ("Bearer ab/password=hunter2!SECRET end", "Bearer [REDACTED] end"),
            ("Bearer ab/api_key=x@SECRET&x=1", "Bearer [REDACTED]&x=1"),
            ("Basic QZX7/token=a(SECRET) end", "Basic [REDACTED] end"),
            ("Bearer password=hunter2%21SECRET end", "Bearer [REDACTED] end"),
            ("Bearer api%5Fkey QZX7SECRET9 end", "Bearer [REDACTED] end"),
            ("Bearer user[password]\tQZX7SECRET9", "Bearer [REDACTED]"),
            ("token password%5B0%5D  QZX7SECRET9 end", "token [REDACTED] end"),
            ("Token x=Bearer Basic dXNlcjpwYXNz9 end", "Token [REDACTED] end"),
            ("Bearer ab/token bonds", "Bearer [REDACTED] bonds"),
            ("Bearer ab/subtoken QZX7AA", "Bearer [REDACTED]"),
            // Found by a fresh-eyes test: a sensitive key word between scheme and credential.
            ("Bearer api_key QZX7secret9 end", "Bearer [REDACTED] end"),
            ("Bearer secret QZX7secret9 end", "Bearer [REDACTED] end"),
            ("token\tPassword\tQZX7secret9", "token\t[REDACTED]"),
            ("Bearer secret plans", "Bearer secret plans"),
            // Found by a local redact_text campaign: a pair value ending in a scheme word and
            // a sensitive key ('token = token X-SeCreT: <value>') kept the key's value.
            ("token =   token    X-SeCreT:\"s3cr3t20202000\"   &", "token =   [REDACTED]:\"[REDACTED]\"   &"),
            ("password=abc api_key=QZX7secret9 rest", "password=[REDACTED] api_key=[REDACTED] rest"),
            ("{\"secret\": \"a\" , \"token\" : 1}", "{\"secret\": \"[REDACTED]\" , \"token\" : \"[REDACTED]\"}"),
            (
                "{\"k\":\"x\\\"-----BEGIN RSA PRIVATE KEY-----MIIE\\\"\", \"token\": 1234567}",
                "{\"k\":\"x\\\"-----BEGIN RSA PRIVATE KEY-----[REDACTED]\\\"\", \"token\": \"[REDACTED]\"}",
            ),
            (
                "{\"k\":\"-----BEGIN PRIVATE KEY-----\\nMIIEsecret\\n-----END PRIVATE KEY-----\"}",
                "{\"k\":\"-----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----\"}",
            ),
            // Found by a fresh-eyes test (2 December): a scheme word or a JWT after a byte that
            // joins a word but is no letter or digit, and a Laravel Sanctum token (`5|...`).
            ("[eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJaWlNFQyJ9.sEcr3tsig9]", "[[REDACTED]]"),
            ("header=Bearer+eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJaWlNFQyJ9.sEcr3tsig9", "header=Bearer+[REDACTED]"),
            ("x-eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJaWlNFQyJ9.sEcr3tsig9 end", "x-[REDACTED] end"),
            ("«eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJaWlNFQyJ9.sEcr3tsig9»", "«[REDACTED]»"),
            ("[Bearer sEcr3t9abc]", "[Bearer [REDACTED]]"),
            ("{\"k\":\"[Bearer sEcr3t9abc]\"}", "{\"k\":\"[Bearer [REDACTED]]\"}"),
            ("«Bearer sEcr3t9abc»", "«Bearer [REDACTED]»"),
            ("Bearer 5|sEcr3tAbCdEf123", "Bearer [REDACTED]"),
            ("the bearer of bonds", "the bearer of bonds"),
            ("subtoken QZX7abc9 api_token abc", "subtoken QZX7abc9 api_token abc"),
            // Found by a second fresh-eyes test (2 December): `:=`, a stop inside a sensitive
            // pair's value on the last line, JWTs with an empty signature or a byte after them
            // that is not base64url.
            (
                "-----BEGIN PRIVATE KEY-----\nMIIabcdef\napi_key := \"hunter2secret\"",
                "-----BEGIN PRIVATE KEY-----[REDACTED]\napi_key :[REDACTED]",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIabcdef\nAuthorization: Bearer \"abcDEF123secret\"",
                "-----BEGIN PRIVATE KEY-----[REDACTED]\nAuthorization: [REDACTED]",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIabcdef\npassword: it's hunter2secret",
                "-----BEGIN PRIVATE KEY-----[REDACTED]\npassword: [REDACTED]",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIabcdef\npassword: abc\"def hunter2secret",
                "-----BEGIN PRIVATE KEY-----[REDACTED]\npassword: [REDACTED]",
            ),
            (
                "{\"k\":\"-----BEGIN PRIVATE KEY-----\\nMIIabcdef\\npassword: it's hunter2secret\"}",
                "{\"k\":\"-----BEGIN PRIVATE KEY-----[REDACTED]\\npassword: [REDACTED]\"}",
            ),
            (
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
                "[REDACTED]",
            ),
            (
                "x-eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.",
                "x-[REDACTED]",
            ),
            (
                "q=my+token+is+eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_abc+thanks",
                "q=my+token+is+[REDACTED]+thanks",
            ),
            (
                "q=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_abc%20thanks",
                "q=[REDACTED]%20thanks",
            ),
            (
                "see eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnX3NFY3IzdA.",
                "see [REDACTED].",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY----- Proc-Type: 4,ENCRYPTED DEK-Info: AES-128-CBC,AB MIIEZZSEC1'",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]'",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEsEcr3t==\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\"",
            ),
            // Found by the redact fuzz target (2 December): a PEM body cut that stopped at a
            // quote took the key before it and kept its value. Then, by a fresh-eyes test of that
            // fix: a block on one line kept whole, a credential glued to the marker, a bracketed
            // value over several lines, pairs chained on a line, a BEGIN left open before the real
            // one. A base64 line before the quote, `=` padding and all, is still cut.
            (
                "-----BEGIN RSA PRIVATE KEY-----\nmy api_key: \"sEcr3t\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED] api_key: \"[REDACTED]\"",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEab\nmy api_key: {\"a\": \"sEcr3t\"}",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED] api_key: \"[REDACTED]\"",
            ),
            (
                "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----\\nMIIEab\\npassword=\\\"sEcr3t\\\"\"}",
                "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----[REDACTED]\\npassword=\\\"[REDACTED]\\\"\"}",
            ),
            (
                "----BEGIN x\n-----BEGIN EC PRIVATE KEY-----\n  token = 'sEcr3t'",
                "----BEGIN x\n-----BEGIN EC PRIVATE KEY-----\n  token = \"[REDACTED]\"",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEsEcr3t==\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\"",
            ),
            (
                "{\"k\":\"-----BEGIN PRIVATE KEY-----MIIEZZSEC1 note: \\\"x\\\"\"}",
                "{\"k\":\"-----BEGIN PRIVATE KEY-----[REDACTED] note: \\\"x\\\"\"}",
            ),
            (
                "invalid key -----BEGIN RSA PRIVATE KEY-----MIIEpAIBAAKCAQEAZZSEC1... (truncated): asn1: \"syntax error\"",
                "invalid key -----BEGIN RSA PRIVATE KEY-----[REDACTED] asn1: \"syntax error\"",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY----- Proc-Type: 4,ENCRYPTED DEK-Info: AES-128-CBC,AB MIIEZZSEC1'",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]'",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,AB MIIEZZSEC1\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\"",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEab\nBearer ZZSEC9abc at 10:00 \"x\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\"x\"",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEab\nToken ZZSEC9abc note: \"x\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED] note: \"x\"",
            ),
            (
                "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----\\nMIIEab\\nBearer ZZSEC9abc at 10:00 \\\"x\\\"\"}",
                "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----[REDACTED]\\\"x\\\"\"}",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEab\napi_key: {\n  \"a\": \"ZZSEC1\"\n}",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\napi_key: \"[REDACTED]\"",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEab\ntokens: [\n  \"ZZSEC1\",\n  \"ZZSEC2\"\n]",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\ntokens: \"[REDACTED]\"",
            ),
            (
                "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----\\nMIIEab\\ntokens: [\\n  \\\"ZZSEC1\\\"\\n]\"}",
                "{\"k\":\"-----BEGIN RSA PRIVATE KEY-----[REDACTED]\\ntokens: \\\"[REDACTED]\\\"\"}",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEab\napi_key: note: \"ZZSEC1\"",
                "-----BEGIN RSA PRIVATE KEY-----[REDACTED]\napi_key: [REDACTED]",
            ),
            (
                "Paste the key after -----BEGIN here: -----BEGIN PRIVATE KEY-----\nZZSEC1\n-----END PRIVATE KEY-----",
                "Paste the key after -----BEGIN here: -----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----",
            ),
            (
                "-----BEGIN -----BEGIN PRIVATE KEY-----\nZZSEC1\n-----END PRIVATE KEY-----",
                "-----BEGIN -----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----",
            ),
        ] {
            assert_eq!(r.redact_text(input), expected, "{input:?}");
        }
    }

    #[test]
    fn unescape_and_percent_decode() {
        assert_eq!(unescape(r#"a\"b\\c\/\n\u0041\ud83d\ude00\ud800x\u12\"#), "a\"b\\c/\nA😀\u{FFFD}x\u{FFFD}12");
        assert_eq!(percent_decode("a%5Bb%5d+c%zz%4"), "a[b] c%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%41"), "A");
    }

}
