//! Turning captured body bytes into what the rows are built from, on the pipeline thread:
//! undoing `Content-Encoding` (gzip, deflate, br, zstd) with a hard cap on the decoded size,
//! and a lenient second JSON pass that recovers a push whose strings are broken (a lone UTF-16
//! surrogate escape, invalid UTF-8) so its envelope is still stored.

use crate::capture::StateValue;
use crate::protocol::Object;
use std::io::Read;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{Bump, Json};

use crate::capture::CapturedBody;

/// A body's bytes after `Content-Encoding` was undone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodedBody {
    /// The decoded bytes (the captured bytes as they are when there was no encoding); on an
    /// error, what was decoded before it (empty for an unknown encoding).
    pub bytes: Bytes,
    /// The encoding names that were undone, as the header lists them (`""`: none).
    pub encoding: String,
    /// Decoding stopped at the cap: `bytes` is a prefix of the body.
    pub capped: bool,
    /// Why the body could not be decoded to its end (unknown encoding, corrupt or cut stream).
    pub error: Option<String>,
}

/// Undoes `body.content_encoding` (a comma-separated list, applied in order, so undone in
/// reverse), decoding at most `max_bytes`. A body not captured whole is decoded as far as it
/// goes.
pub fn decode(body: &CapturedBody, max_bytes: usize) -> DecodedBody {
    let raw = body.to_bytes();
    let codings: Vec<String> = body
        .content_encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() {
        return DecodedBody { bytes: raw, ..DecodedBody::default() };
    }
    let encoding = codings.join(", ");
    let mut bytes = raw;
    for coding in codings.iter().rev() {
        let (out, capped, error) = decode_one(coding, &bytes, max_bytes);
        bytes = Bytes::from(out);
        if capped || error.is_some() {
            let error = error.map(|e| {
                if body.is_whole() { e } else { format!("{e} (the body was not captured whole: {} of {} bytes)", body.retained, body.total) }
            });
            return DecodedBody { bytes, encoding, capped, error };
        }
    }
    DecodedBody { bytes, encoding, capped: false, error: None }
}

/// One coding, read through `take` so a compression bomb stops at `max_bytes + 1`. On a
/// failure (a corrupt or cut stream) what was decoded before it is kept, with the error.
fn decode_one(coding: &str, input: &[u8], max_bytes: usize) -> (Vec<u8>, bool, Option<String>) {
    let limit = max_bytes as u64 + 1;
    let mut out = Vec::new();
    let read = match coding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(input).take(limit).read_to_end(&mut out),
        // HTTP `deflate` is zlib-wrapped; some senders send raw deflate, so fall back to it.
        "deflate" => match flate2::read::ZlibDecoder::new(input).take(limit).read_to_end(&mut out) {
            Ok(n) => Ok(n),
            Err(_) => {
                out.clear();
                flate2::read::DeflateDecoder::new(input).take(limit).read_to_end(&mut out)
            }
        },
        "br" => brotli::Decompressor::new(input, 8192).take(limit).read_to_end(&mut out),
        "zstd" => match zstd::stream::read::Decoder::new(input) {
            Ok(d) => d.take(limit).read_to_end(&mut out),
            Err(e) => Err(e),
        },
        other => return (Vec::new(), false, Some(format!("unsupported Content-Encoding {other:?}: body not decoded"))),
    };
    let capped = out.len() > max_bytes;
    out.truncate(max_bytes);
    let error = read.err().filter(|_| !capped).map(|e| format!("{coding} body could not be decoded past {} bytes: {e}", out.len()));
    (out, capped, error)
}

/// A push request parsed leniently, and where it was broken.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientJson<'a> {
    /// The body parsed after the repair (its text in the arena).
    pub value: Json<'a>,
    /// Positions (in the `mutations` array) of mutations whose strings had to be repaired.
    pub broken_mutations: Vec<usize>,
}

/// The second pass for a body that serde_json refused: lone UTF-16 surrogate escapes
/// (`"\ud83d"`) and invalid UTF-8 are replaced by U+FFFD, then the text is parsed again.
/// `None` when nothing was repaired or it still does not parse (then it was not a broken
/// string that made it fail).
pub fn parse_lenient<'a>(bytes: &[u8], arena: &'a Bump) -> Option<LenientJson<'a>> {
    let (text, repaired_at) = repair_strings(bytes);
    if repaired_at.is_empty() {
        return None;
    }
    let text: &'a str = arena.alloc_str(&text);
    let value = Json::parse_str(text, arena).ok()?;
    Some(LenientJson { broken_mutations: mutations_containing(text, &repaired_at), value })
}

/// Replaces invalid UTF-8 and unpaired surrogate escapes by U+FFFD; returns the text and the
/// byte offsets of the replacements in it.
fn repair_strings(bytes: &[u8]) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(bytes.len());
    let mut at = Vec::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            at.push(text.len());
            text.push('\u{FFFD}');
        }
    }
    // A `\uXXXX` escape is six ASCII bytes and so is `\uFFFD`: replacing in place keeps every
    // offset (including those above) valid.
    let mut b = std::mem::take(&mut text).into_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b[i + 1] != b'u' {
            i += 2; // `\\`, `\"`, ...: skip the escaped character
            continue;
        }
        let Some(unit) = hex4(&b[i + 2..]) else {
            i += 2;
            continue;
        };
        let paired = (0xD800..0xDC00).contains(&unit)
            && b.get(i + 6..i + 8) == Some(b"\\u")
            && hex4(&b[i + 8..]).is_some_and(|low| (0xDC00..0xE000).contains(&low));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&unit) {
            b[i..i + 6].copy_from_slice(b"\\uFFFD");
            at.push(i);
            i += 6;
        } else {
            i += 6;
        }
    }
    at.sort_unstable();
    // Only ASCII bytes were replaced by ASCII bytes in valid UTF-8.
    (String::from_utf8(b).unwrap_or_default(), at)
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Which mutations (by position) contain one of the byte offsets.
fn mutations_containing(text: &str, offsets: &[usize]) -> Vec<usize> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow, default)]
        mutations: Option<Vec<&'a RawValue>>,
    }
    let Ok(env) = serde_json::from_str::<Envelope<'_>>(text) else { return Vec::new() };
    let base = text.as_ptr() as usize;
    env.mutations
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, raw)| {
            let start = raw.get().as_ptr() as usize - base;
            let end = start + raw.get().len();
            offsets.iter().any(|&o| (start..end).contains(&o))
        })
        .map(|(i, _)| i)
        .collect()
}

// Parsing a reported state is the pipeline's work (the host's thread only hands the text over).
impl StateValue {
    /// The state as an object (`None` when the text is not a JSON object). Text with broken
    /// strings (lone surrogates, invalid UTF-8) is read with them as U+FFFD, like bodies.
    pub fn into_object(self) -> Option<Object> {
        match self {
            StateValue::Object(o) => Some(o),
            StateValue::Json(text) => parse_object(&text),
        }
    }

    /// The state as a tree borrowing from the record (`None` when it is not a JSON object):
    /// JSON text is parsed in place, an object state is read where it is. Text with broken
    /// strings is repaired as in [`Self::into_object`].
    pub fn tree<'a>(&'a self, arena: &'a Bump) -> Option<Json<'a>> {
        let tree = match self {
            StateValue::Object(o) => return Some(Json::from_map(o, arena)),
            StateValue::Json(text) => match Json::parse_str(text, arena) {
                Ok(t) => t,
                Err(_) => parse_lenient(text.as_bytes(), arena)?.value,
            },
        };
        tree.is_object().then_some(tree)
    }
}

fn parse_object(text: &str) -> Option<Object> {
    let value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => parse_lenient(text.as_bytes(), &Bump::new())?.value.to_value(),
    };
    match value {
        serde_json::Value::Object(o) => Some(o),
        _ => None,
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::Write;

    fn captured(bytes: Vec<u8>, encoding: &str) -> CapturedBody {
        let len = bytes.len();
        CapturedBody {
            chunks: vec![Bytes::from(bytes)],
            retained: len,
            total: len as u64,
            complete: true,
            content_encoding: encoding.into(),
            ..CapturedBody::default()
        }
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_supported_encoding_decodes_to_the_plain_bytes() {
        let plain = br#"{"client_id":"c","mutations":[]}"#.to_vec();
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let raw_deflate = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let br = {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &plain[..], &mut out, &brotli::enc::BrotliEncoderParams::default()).unwrap();
            out
        };
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        for (bytes, enc) in [(gzip(&plain), "gzip"), (zlib, "deflate"), (raw_deflate, "deflate"), (br, "br"), (zst, "zstd"), (plain.clone(), "identity")] {
            let d = decode(&captured(bytes, enc), 1 << 20);
            assert_eq!(d.bytes, plain, "{enc}");
            assert!(!d.capped && d.error.is_none(), "{enc}: {d:?}");
        }
        // Two codings are undone in reverse order.
        let d = decode(&captured(gzip(&gzip(&plain)), "gzip, gzip"), 1 << 20);
        assert_eq!(d.bytes, plain);
    }

    #[test]
    fn a_compression_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![b'0'; 50 << 20]);
        assert!(bomb.len() < 100 << 10, "50 MiB of zeros compress to {} bytes", bomb.len());
        let d = decode(&captured(bomb, "gzip"), 1 << 20);
        assert!(d.capped);
        assert_eq!(d.bytes.len(), 1 << 20);
    }

    #[test]
    fn a_compressed_body_not_captured_whole_is_decoded_as_far_as_it_goes() {
        let plain: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_string().into_bytes()).collect();
        let whole = gzip(&plain);
        let mut b = captured(whole[..whole.len() / 2].to_vec(), "gzip");
        b.complete = false;
        b.total = whole.len() as u64;
        let d = decode(&b, 1 << 22);
        assert!(!d.bytes.is_empty() && plain.starts_with(&d.bytes), "a prefix of the body");
        let e = d.error.unwrap();
        assert!(e.starts_with("gzip body could not be decoded past") && e.ends_with(&format!("(the body was not captured whole: {} of {} bytes)", whole.len() / 2, whole.len())), "{e}");
    }

    #[test]
    fn unknown_and_corrupt_encodings_say_so() {
        let d = decode(&captured(b"abc".to_vec(), "compress"), 1 << 20);
        assert!(d.bytes.is_empty());
        assert!(d.error.unwrap().contains("unsupported Content-Encoding"));
        let d = decode(&captured(b"not gzip at all".to_vec(), "gzip"), 1 << 20);
        assert!(d.error.unwrap().contains("gzip body could not be decoded past 0 bytes"));
    }

    struct LenientValue {
        value: Value,
    }

    /// The issue's input: a lone surrogate in one mutation's title hid the whole push.
    #[test]
    fn lenient_pass_repairs_lone_surrogates_and_names_the_mutation() {
        let body = br#"{"client_id":"c1","mutations":[{"mutation_id":"m0","payload":{"title":"ok \ud83d\ude00"}},{"mutation_id":"m1","payload":{"title":"\ud83d"}},{"mutation_id":"m2","payload":{"title":"a\\ud83d"}}]}"#;
        assert!(serde_json::from_slice::<Value>(body).is_err());
        let arena = Bump::new();
        let l = parse_lenient(body, &arena).unwrap();
        assert_eq!(l.broken_mutations, vec![1]);
        let l = LenientValue { value: l.value.to_value() };
        assert_eq!(l.value["client_id"], "c1");
        assert_eq!(l.value["mutations"][1]["payload"]["title"], "\u{FFFD}");
        assert_eq!(l.value["mutations"][0]["payload"]["title"], "ok 😀", "a valid pair is kept");
        assert_eq!(l.value["mutations"][2]["payload"]["title"], "a\\ud83d", "an escaped backslash is not an escape");
    }

    #[test]
    fn lenient_pass_repairs_invalid_utf8_and_lone_low_surrogates() {
        let mut body = br#"{"client_id":"c1","mutations":[{"t":"\udc00"},{"t":""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""},{"t":"fine"}]}"#);
        let arena = Bump::new();
        let l = parse_lenient(&body, &arena).unwrap();
        assert_eq!(l.broken_mutations, vec![0, 1]);
        let l = LenientValue { value: l.value.to_value() };
        assert_eq!(l.value["mutations"][1]["t"], "\u{FFFD}\u{FFFD}", "one per invalid byte, as from_utf8_lossy");
        assert!(parse_lenient(br#"{"a":1}"#, &arena).is_none(), "nothing to repair");
        assert!(parse_lenient(br#"{"a":"\ud83d""#, &arena).is_none(), "still not JSON");
    }
}
