//! The parser behind [`Json::parse`](super::Json::parse): one pass over the text straight
//! into the borrowed tree (issue 15).
//!
//! Why not serde_json's `Deserializer`: under `arbitrary_precision` (issue 14's exact digits)
//! it hands every number over as an owned `String`, about 560 allocations per 50-mutation
//! push, and its visitor protocol cannot tell a number (or raw JSON) from an object whose
//! first key is `$serde_json::private::Number` (or `...::RawValue`). The crates that borrow
//! (simd-json, sonic-rs, jiter, serde_json_borrow) turn numbers into `f64`/`i64` and lose the
//! digits. This parser borrows numbers as written and gathers each container's items on one
//! reused stack, then moves them into the arena at their exact size.
//!
//! It accepts exactly what serde_json accepts and yields what serde_json's `Value` holds:
//! checked against serde_json by the tests below, a proptest and the `json` fuzz target.
//! Specifically: RFC 8259 grammar, blanks ` \t\n\r`, no control character in strings,
//! paired surrogates only, a nesting limit of 128 (serde_json's `remaining_depth`: the 128th
//! nested container is refused), and exponents written as serde_json's `arbitrary_precision`
//! keeps them (`e`, with an explicit sign).

use super::{Bump, Entries, Items, Json, Text, sort_unique};

/// A container nested this deep is refused (serde_json's recursion limit).
const DEPTH_LIMIT: usize = 128;

/// The text is not JSON (the caller asks serde_json for its message).
#[derive(Debug)]
pub(super) struct Invalid;

type Parsed<T> = Result<T, Invalid>;

/// Parses a whole JSON text (surrounding blanks allowed).
pub(super) fn parse<'a>(text: &'a str, arena: &'a Bump) -> Parsed<Json<'a>> {
    // The stacks' memory is kept per thread: a push parses its body and about 70 states, and
    // growing fresh stacks each time cost about 6 % of the processing stage (callgrind).
    let (items, entries) = STACKS.with_borrow_mut(|s| (s.take_items(), s.take_entries()));
    let mut p = Parser { text, b: text.as_bytes(), i: 0, depth: 0, arena, items, entries };
    let v = p.value();
    p.skip_blanks();
    let whole = p.i == p.b.len();
    STACKS.with_borrow_mut(|s| s.give_back(p.items, p.entries));
    match v {
        Ok(v) if whole => Ok(v),
        _ => Err(Invalid),
    }
}

/// Empty stacks with their capacity, kept between parses (a tree's lifetime is erased while
/// they sit here: they hold no element then).
#[derive(Default)]
struct Stacks {
    items: Vec<Json<'static>>,
    entries: Vec<(Text<'static>, Json<'static>)>,
}

/// Stacks past this many elements are not kept (one huge body should not pin its memory).
const KEPT_STACK: usize = 4096;

impl Stacks {
    fn take_items<'a>(&mut self) -> Vec<Json<'a>> {
        recycle(std::mem::take(&mut self.items))
    }
    fn take_entries<'a>(&mut self) -> Vec<(Text<'a>, Json<'a>)> {
        recycle(std::mem::take(&mut self.entries))
    }
    fn give_back(&mut self, items: Vec<Json<'_>>, entries: Vec<(Text<'_>, Json<'_>)>) {
        if items.capacity() <= KEPT_STACK {
            self.items = recycle(items);
        }
        if entries.capacity() <= KEPT_STACK {
            self.entries = recycle(entries);
        }
    }
}

/// An empty vector's allocation, reused for the same element type under another lifetime.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    // Same layout (`T` and `U` differ only in a lifetime), checked at compile time: then the
    // in-place collect keeps the allocation.
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<U>() && std::mem::align_of::<T>() == std::mem::align_of::<U>()) };
    v.into_iter().map(|_| unreachable!()).collect()
}

/// The items a container gathered on a stack from `base`, moved into the arena at their size.
fn moved<'a, T>(stack: &mut Vec<T>, base: usize, arena: &'a Bump) -> bumpalo::collections::Vec<'a, T> {
    let mut v = bumpalo::collections::Vec::with_capacity_in(stack.len() - base, arena);
    v.extend(stack.drain(base..));
    v
}

thread_local! {
    static STACKS: std::cell::RefCell<Stacks> = std::cell::RefCell::new(Stacks::default());
}

struct Parser<'a> {
    text: &'a str,
    arena: &'a Bump,
    b: &'a [u8],
    i: usize,
    depth: usize,
    /// Items of the arrays being read, innermost last.
    items: Vec<Json<'a>>,
    /// Entries of the objects being read, innermost last.
    entries: Vec<(Text<'a>, Json<'a>)>,
}

/// Bytes that end the plain run of a string: the closing quote, an escape, a control byte.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Whether any byte of `w` is a quote, a backslash or below 0x20 (the bit tricks of
/// "Bit Twiddling Hacks", "Determine if a word has a byte less than n": exact for "any").
fn has_stop(w: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS;
    let zero = |v: u64| below(v, 1);
    (below(w, 0x20) | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

impl<'a> Parser<'a> {
    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after blanks, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_blanks();
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn value(&mut self) -> Parsed<Json<'a>> {
        match self.next_token().ok_or(Invalid)? {
            b'"' => Ok(Json::String(self.string()?)),
            b'{' => self.object(),
            b'[' => self.array(),
            b'n' => self.word(b"ull", Json::Null),
            b't' => self.word(b"rue", Json::Bool(true)),
            b'f' => self.word(b"alse", Json::Bool(false)),
            b'-' | b'0'..=b'9' => {
                self.i -= 1;
                Ok(Json::Number(self.number()?))
            }
            _ => Err(Invalid),
        }
    }

    fn word(&mut self, rest: &[u8], v: Json<'a>) -> Parsed<Json<'a>> {
        if self.b[self.i..].starts_with(rest) {
            self.i += rest.len();
            Ok(v)
        } else {
            Err(Invalid)
        }
    }

    fn enter(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth >= DEPTH_LIMIT { Err(Invalid) } else { Ok(()) }
    }

    /// After `[`.
    fn array(&mut self) -> Parsed<Json<'a>> {
        self.enter()?;
        if self.closes_at_once(b']') {
            return Ok(Json::Array(Items::new_in(self.arena)));
        }
        let base = self.items.len();
        loop {
            let v = self.value()?;
            self.items.push(v);
            if self.next_separator(b']')? {
                break;
            }
        }
        self.depth -= 1;
        Ok(Json::Array(moved(&mut self.items, base, self.arena)))
    }

    /// After `{`.
    fn object(&mut self) -> Parsed<Json<'a>> {
        self.enter()?;
        if self.closes_at_once(b'}') {
            return Ok(Json::Object(Entries::new_in(self.arena)));
        }
        let base = self.entries.len();
        loop {
            if self.next_token() != Some(b'"') {
                return Err(Invalid);
            }
            let key = self.string()?;
            if self.next_token() != Some(b':') {
                return Err(Invalid);
            }
            let v = self.value()?;
            self.entries.push((key, v));
            if self.next_separator(b'}')? {
                break;
            }
        }
        self.depth -= 1;
        let mut entries = moved(&mut self.entries, base, self.arena);
        sort_unique(&mut entries);
        Ok(Json::Object(entries))
    }

    /// After a container's opening: whether it closes right away (`[]`, `{}`), consumed.
    fn closes_at_once(&mut self, close: u8) -> bool {
        self.skip_blanks();
        if self.b.get(self.i) != Some(&close) {
            return false;
        }
        self.i += 1;
        self.depth -= 1;
        true
    }

    /// After an item: `,` (another follows) or `close` (the container ends: true).
    fn next_separator(&mut self, close: u8) -> Parsed<bool> {
        match self.next_token() {
            Some(b',') => Ok(false),
            Some(c) if c == close => Ok(true),
            _ => Err(Invalid),
        }
    }

    /// After the opening quote: borrowed when the string holds no escape.
    fn string(&mut self) -> Parsed<Text<'a>> {
        let start = self.i;
        let stop = self.plain_run();
        match self.b.get(stop) {
            Some(b'"') => {
                self.i = stop + 1;
                // Both ends sit next to an ASCII quote: character boundaries.
                Ok(Text::Plain(&self.text[start..stop]))
            }
            Some(b'\\') => {
                let mut s = bumpalo::collections::String::with_capacity_in(stop - start + 16, self.arena);
                s.push_str(&self.text[start..stop]);
                self.i = stop;
                // Unescaped, the text may need escaping again when written.
                self.escaped(s).map(|s| Text::Borrowed(s.into_bump_str()))
            }
            _ => Err(Invalid),
        }
    }

    /// Where the run of bytes that need no attention, from `self.i`, ends.
    fn plain_run(&self) -> usize {
        let b = self.b;
        let mut j = self.i;
        // Eight bytes at a time up to the word that holds a stop (serde_json does the same).
        while let Some(word) = b.get(j..j + 8) {
            if has_stop(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
                break;
            }
            j += 8;
        }
        while j < b.len() && !STOPS[b[j] as usize] {
            j += 1;
        }
        j
    }

    /// The rest of a string that has escapes, from the backslash at `self.i`.
    fn escaped(&mut self, mut s: bumpalo::collections::String<'a>) -> Parsed<bumpalo::collections::String<'a>> {
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    let c = *self.b.get(self.i + 1).ok_or(Invalid)?;
                    self.i += 2;
                    match c {
                        b'"' => s.push('"'),
                        b'\\' => s.push('\\'),
                        b'/' => s.push('/'),
                        b'b' => s.push('\u{8}'),
                        b'f' => s.push('\u{c}'),
                        b'n' => s.push('\n'),
                        b'r' => s.push('\r'),
                        b't' => s.push('\t'),
                        b'u' => s.push(self.unicode_escape()?),
                        _ => return Err(Invalid),
                    }
                }
                Some(_) => {
                    let start = self.i;
                    let stop = self.plain_run();
                    if stop == start {
                        return Err(Invalid); // a control byte, or the end of the text
                    }
                    s.push_str(&self.text[start..stop]);
                    self.i = stop;
                }
                None => return Err(Invalid),
            }
        }
    }

    /// After `\u`: the character, with a surrogate pair read whole (a lone surrogate is refused,
    /// as serde_json refuses it for text).
    fn unicode_escape(&mut self) -> Parsed<char> {
        let n = self.hex4()?;
        let code = match n {
            0xD800..=0xDBFF => {
                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                    return Err(Invalid);
                }
                self.i += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Invalid);
                }
                0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(Invalid),
            n => u32::from(n),
        };
        char::from_u32(code).ok_or(Invalid)
    }

    fn hex4(&mut self) -> Parsed<u16> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(Invalid)?;
        let mut n = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(Invalid)?;
            n = (n << 4) | v as u16;
        }
        self.i += 4;
        Ok(n)
    }

    /// A number, its text as serde_json's `arbitrary_precision` keeps it: as written, except an
    /// exponent, which it writes as `e` with a sign.
    fn number(&mut self) -> Parsed<Text<'a>> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
                    return Err(Invalid);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if !matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            return Ok(Text::Plain(&self.text[start..self.i]));
        }
        let mantissa_end = self.i;
        self.i += 1;
        let sign = match self.b.get(self.i) {
            Some(&c @ (b'+' | b'-')) => {
                self.i += 1;
                c as char
            }
            _ => '+',
        };
        let exponent_start = self.i;
        if self.digits() == 0 {
            return Err(Invalid);
        }
        let written = &self.text[start..self.i];
        // Kept as written when it already reads `e` and a sign.
        let kept_as_written = self.b[mantissa_end] == b'e' && exponent_start == mantissa_end + 2;
        if kept_as_written {
            return Ok(Text::Plain(written));
        }
        let mut s = bumpalo::collections::String::with_capacity_in(written.len() + 1, self.arena);
        s.push_str(&self.text[start..mantissa_end]);
        s.push('e');
        s.push(sign);
        s.push_str(&self.text[exponent_start..self.i]);
        Ok(Text::Plain(s.into_bump_str()))
    }

    /// Skips ASCII digits; how many.
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.b.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_with_a_stop_is_found_wherever_the_stop_sits() {
        assert!(!has_stop(u64::from_le_bytes(*b"abcdefgh")));
        assert!(!has_stop(u64::from_le_bytes([0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'])));
        for at in 0..8 {
            for stop in [b'"', b'\\', 0x00, 0x01, 0x1f] {
                let mut w = *b"abcdefgh";
                w[at] = stop;
                assert!(has_stop(u64::from_le_bytes(w)), "{w:?}");
            }
        }
        for c in 0..=255u8 {
            assert_eq!(has_stop(u64::from_le_bytes([c; 8])), STOPS[c as usize], "{c}");
            assert_eq!(has_stop(u64::from_le_bytes([b'a', b'a', b'a', c, b'a', b'a', b'a', b'a'])), STOPS[c as usize], "{c}");
        }
    }

    #[test]
    fn a_recycled_stack_keeps_its_memory_and_holds_nothing() {
        let text = String::from("x");
        let mut v: Vec<Json<'_>> = Vec::with_capacity(100);
        v.push(Json::String(Text::Plain(&text)));
        let r: Vec<Json<'static>> = recycle(v);
        assert!(r.is_empty());
        assert_eq!(r.capacity(), 100);
    }
}
