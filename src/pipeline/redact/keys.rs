//! The key rule: which object keys, form field names and header names name a secret.
//!
//! A key is split into lowercase *word parts*: runs of letters and digits, split again at
//! camelCase (`passwordHash` -> `password`, `hash`; `APIKey` -> `api`, `key`) and at
//! letter/digit boundaries (`token2` -> `token`, `2`). Everything else (`_ - . [ ] /`, spaces)
//! only separates. Its *normalized form* is the parts joined (`X-Api-Key` -> `xapikey`).
//!
//! A key is **sensitive** when the normalized form of its parts up to some part `p` ends
//! with a configured key's normalized form, where every part after `p` is a *qualifier*
//! (a word that says what is done to the secret, not what it is: `confirmation`, `hash`,
//! `new`, ... see [`QUALIFIERS`]) or all digits; part `p` may also be a plural (`tokens`,
//! `api_keys`). With the default keys:
//!
//! * sensitive: `password`, `user_password`, `passwordHash`, `password_confirmation`,
//!   `current_password`, `password2`, `secret_key`, `secretAccessKey`, `X-Api-Key`,
//!   `api_keys`, `Set-Cookie`, `csrf_token`, `refresh_token`, `session_id`, `user[password]`;
//! * not sensitive: `tokens_used`, `token_type`, `session_count`, `password_policy`,
//!   `password_updated_at`, `cookies_enabled`, `tokenizer`, `passport`, `secretary`.
//!
//! Matching walks from the end of the key and never allocates for ASCII keys.

/// Word parts after the secret's own name that keep the value a secret (compared with the
/// part lowercased).
pub const QUALIFIERS: &[&str] = &[
    "confirmation", "confirm", "confirmed", "repeat", "again", "verify", "verification", "hash", "hashed", "digest", "salt",
    "salted", "encrypted", "enc", "plain", "plaintext", "raw", "value", "val", "str", "string", "text", "b64", "base64",
    "hex", "old", "new", "current", "prev", "previous", "tmp", "temp",
];

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ids of rules, for the per-thread memo (clones share their rule's id: same keys).
static NEXT_RULE_ID: AtomicU64 = AtomicU64::new(1);

/// Keys remembered per thread at most (then the memo starts over), and the longest key
/// remembered: a payload repeats a few dozen keys thousands of times, and an adversarial
/// one cannot grow the memo past this.
const MEMO_KEYS: usize = 4096;
const MEMO_KEY_BYTES: usize = 64;

#[derive(Default)]
struct Memo {
    rule: u64,
    verdicts: HashMap<Box<str>, bool, foldhash::fast::RandomState>,
}

thread_local! {
    /// The verdicts of keys this thread has seen, for one rule at a time. The rule itself
    /// was a fifth of the pipeline's instructions (callgrind, issue 15); a lookup is a hash
    /// and a compare.
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Configured keys, normalized, each stored reversed (matching walks from the end).
#[derive(Debug, Clone)]
pub(super) struct KeyRule {
    id: u64,
    keys: Vec<Box<[char]>>,
    /// The same keys as bytes when every one is ASCII (the fast path for ASCII keys, which is
    /// nearly every key a sync payload has).
    ascii_keys: Option<Vec<Box<[u8]>>>,
    /// For each byte, the indices into `ascii_keys` of the keys that end with it: most keys
    /// are ruled out by their last byte alone, the rest compared against one or two keys.
    by_last_byte: Box<[Vec<u16>; 256]>,
}

fn is_qualifier(part: &str) -> bool {
    QUALIFIERS.contains(&part)
}

/// `is_qualifier` for an ASCII part in any case, without allocating: most parts are ruled out
/// by their length or first letter.
fn is_qualifier_ascii(part: &[u8]) -> bool {
    if !(3..=12).contains(&part.len()) {
        return false;
    }
    let mut lower = [0u8; 12];
    lower[..part.len()].copy_from_slice(part);
    lower[..part.len()].make_ascii_lowercase();
    // A `match` on the bytes compiles to a switch on the length and then one comparison; a
    // scan of `QUALIFIERS` was a tenth of the key rule's time (a test keeps the two in step).
    matches!(
        &lower[..part.len()],
        b"confirmation" | b"confirm" | b"confirmed" | b"repeat" | b"again" | b"verify" | b"verification" | b"hash" | b"hashed" | b"digest"
            | b"salt" | b"salted" | b"encrypted" | b"enc" | b"plain" | b"plaintext" | b"raw" | b"value" | b"val" | b"str" | b"string"
            | b"text" | b"b64" | b"base64" | b"hex" | b"old" | b"new" | b"current" | b"prev" | b"previous" | b"tmp" | b"temp"
    )
}

impl KeyRule {
    pub(super) fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        let mut normalized: Vec<Box<[char]>> = keys
            .into_iter()
            .map(|k| k.as_ref().chars().rev().filter(|c| c.is_alphanumeric()).flat_map(|c| c.to_lowercase().rev()).collect::<Box<[char]>>())
            .filter(|k| !k.is_empty())
            .collect();
        // Shortest first, so a key is only kept when no kept key is a suffix of it (`token`
        // covers `access_token`).
        normalized.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        let mut kept: Vec<Box<[char]>> = Vec::with_capacity(normalized.len());
        for k in normalized {
            if !kept.iter().any(|s| k.starts_with(s)) {
                kept.push(k);
            }
        }
        let ascii_keys = kept
            .iter()
            .map(|k| k.iter().map(|c| u8::try_from(*c).ok().filter(u8::is_ascii)).collect::<Option<Box<[u8]>>>())
            .collect::<Option<Vec<_>>>();
        let mut by_last_byte: Box<[Vec<u16>; 256]> = Box::new(std::array::from_fn(|_| Vec::new()));
        if let Some(keys) = &ascii_keys {
            for (i, k) in keys.iter().enumerate() {
                by_last_byte[k[0] as usize].push(i as u16);
            }
        }
        KeyRule { id: NEXT_RULE_ID.fetch_add(1, Ordering::Relaxed), keys: kept, ascii_keys, by_last_byte }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn is_sensitive(&self, key: &str) -> bool {
        if key.len() > MEMO_KEY_BYTES {
            return self.decide(key);
        }
        let remembered = MEMO.try_with(|memo| {
            let mut memo = memo.borrow_mut();
            if memo.rule != self.id {
                memo.verdicts.clear();
                memo.rule = self.id;
            }
            if let Some(&verdict) = memo.verdicts.get(key) {
                return verdict;
            }
            let verdict = self.decide(key);
            if memo.verdicts.len() >= MEMO_KEYS {
                memo.verdicts.clear();
            }
            memo.verdicts.insert(key.into(), verdict);
            verdict
        });
        // No memo while the thread is being torn down.
        remembered.unwrap_or_else(|_| self.decide(key))
    }

    /// The rule itself (see the module docs), without the memo.
    pub(super) fn decide(&self, key: &str) -> bool {
        // An ASCII key against ASCII configured keys: bytes, no Unicode tables. (A non-ASCII
        // key may lowercase to ASCII, e.g. the Kelvin sign, so it takes the general path.)
        match (&self.ascii_keys, key.is_ascii()) {
            (Some(keys), true) => self.is_sensitive_ascii(keys, key.as_bytes()),
            _ => self.is_sensitive_general(key),
        }
    }

    fn is_sensitive_ascii(&self, keys: &[Box<[u8]>], b: &[u8]) -> bool {
        let mut end = b.len();
        loop {
            let Some((start, stop)) = prev_part_ascii(b, end) else { return false };
            if self.ends_with_key_ascii(keys, b, stop) {
                return true;
            }
            let part = &b[start..stop];
            let n = part.len();
            if n > 3 && part[n - 1].eq_ignore_ascii_case(&b's') && !part[n - 2].eq_ignore_ascii_case(&b's') && self.ends_with_key_ascii(keys, b, stop - 1) {
                return true;
            }
            let digits = part.iter().all(u8::is_ascii_digit);
            if !(digits || is_qualifier_ascii(part)) {
                return false;
            }
            end = start;
            // `b64` and `base64` are split at the digits: the letters before `64` belong to
            // the qualifier (found by a review: `password_b64` was not sensitive).
            if digits
                && let Some((ls, _)) = prev_part_ascii(b, start).filter(|(_, le)| *le == start)
                && is_qualifier_ascii(&b[ls..stop])
            {
                end = ls;
            }
        }
    }

    /// Whether the alphanumerics of `b[..end]`, lowercased, end with a configured key.
    fn ends_with_key_ascii(&self, keys: &[Box<[u8]>], b: &[u8], end: usize) -> bool {
        let last = b[end - 1].to_ascii_lowercase() as usize;
        self.by_last_byte[last].iter().map(|i| &keys[*i as usize]).any(|k| {
            let mut normalized = b[..end].iter().rev().filter(|c| c.is_ascii_alphanumeric()).map(u8::to_ascii_lowercase);
            k.iter().all(|c| normalized.next() == Some(*c))
        })
    }

    pub(super) fn is_sensitive_general(&self, key: &str) -> bool {
        let chars: Vec<char> = key.chars().collect();
        let mut end = chars.len();
        loop {
            let Some((start, stop)) = prev_part(&chars, end) else { return false };
            if self.ends_with_key(&chars, stop) {
                return true;
            }
            let part: String = chars[start..stop].iter().flat_map(|c| c.to_lowercase()).collect();
            if part.chars().count() > 3 && part.ends_with('s') && !part.ends_with("ss") && self.ends_with_key(&chars, stop - 1) {
                return true;
            }
            let digits = part.chars().all(|c| c.is_numeric());
            if !(digits || is_qualifier(&part)) {
                return false;
            }
            end = start;
            if digits
                && let Some((ls, _)) = prev_part(&chars, start).filter(|(_, le)| *le == start)
                && is_qualifier(&chars[ls..stop].iter().flat_map(|c| c.to_lowercase()).collect::<String>())
            {
                end = ls;
            }
        }
    }

    fn ends_with_key(&self, chars: &[char], end: usize) -> bool {
        self.keys.iter().any(|k| {
            let mut normalized = chars[..end].iter().rev().filter(|c| c.is_alphanumeric()).flat_map(|c| c.to_lowercase().rev());
            k.iter().all(|c| normalized.next() == Some(*c))
        })
    }
}

/// Whether a word part ends between `a` and `b` (two adjacent alphanumerics), `next` being
/// the one after `b`: camelCase (`dH`), an acronym before a word (`IKe` in `APIKey`), or a
/// letter/digit change.
fn boundary(a: char, b: char, next: Option<char>) -> bool {
    (a.is_lowercase() && b.is_uppercase())
        || (a.is_uppercase() && b.is_uppercase() && next.is_some_and(char::is_lowercase))
        || (a.is_numeric() != b.is_numeric())
}

/// The last word part that ends at or before `end`: `(start, stop)`.
fn prev_part(chars: &[char], end: usize) -> Option<(usize, usize)> {
    let mut stop = end;
    while stop > 0 && !chars[stop - 1].is_alphanumeric() {
        stop -= 1;
    }
    if stop == 0 {
        return None;
    }
    let mut start = stop - 1;
    while start > 0 && chars[start - 1].is_alphanumeric() && !boundary(chars[start - 1], chars[start], chars.get(start + 1).copied()) {
        start -= 1;
    }
    Some((start, stop))
}

fn prev_part_ascii(b: &[u8], end: usize) -> Option<(usize, usize)> {
    let mut stop = end;
    while stop > 0 && !b[stop - 1].is_ascii_alphanumeric() {
        stop -= 1;
    }
    if stop == 0 {
        return None;
    }
    let ch = |i: usize| b[i] as char;
    let mut start = stop - 1;
    while start > 0 && b[start - 1].is_ascii_alphanumeric() && !boundary(ch(start - 1), ch(start), b.get(start + 1).map(|c| *c as char)) {
        start -= 1;
    }
    Some((start, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(key: &str) -> Vec<String> {
        let chars: Vec<char> = key.chars().collect();
        let mut out = Vec::new();
        let mut end = chars.len();
        while let Some((s, e)) = prev_part(&chars, end) {
            out.insert(0, chars[s..e].iter().collect());
            end = s;
        }
        out
    }

    #[test]
    fn the_ascii_qualifier_match_is_the_documented_list() {
        for q in QUALIFIERS {
            assert!(is_qualifier_ascii(q.as_bytes()) && is_qualifier_ascii(q.to_uppercase().as_bytes()), "{q}");
        }
        for w in ["title", "key", "id", "values", "hashes", "confirmations", "ne", "currentx"] {
            assert!(!is_qualifier_ascii(w.as_bytes()), "{w}");
        }
        let listed: usize = QUALIFIERS.len();
        let matched = (3..=12).flat_map(|n| QUALIFIERS.iter().filter(move |q| q.len() == n)).filter(|q| is_qualifier_ascii(q.as_bytes())).count();
        assert_eq!(matched, listed);
    }

    #[test]
    fn word_parts() {
        assert_eq!(parts("passwordHash"), ["password", "Hash"]);
        assert_eq!(parts("APIKey"), ["API", "Key"]);
        assert_eq!(parts("x-api_key.v2"), ["x", "api", "key", "v", "2"]);
        assert_eq!(parts("user[password]"), ["user", "password"]);
        assert_eq!(parts("secretAccessKey"), ["secret", "Access", "Key"]);
        assert_eq!(parts("__"), Vec::<String>::new());
    }
}
