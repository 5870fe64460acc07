//! The opaque paging cursor of the lists (`before=`).

use super::queries::Cursor;

/// Opaque cursor: hex of the row's start (µs), its position and its request id.
pub fn encode_cursor(c: &Cursor) -> String {
    let mut bytes = Vec::with_capacity(12 + c.request_id.len());
    bytes.extend_from_slice(&c.started_us.to_be_bytes());
    bytes.extend_from_slice(&c.position.to_be_bytes());
    bytes.extend_from_slice(c.request_id.as_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(s: &str) -> Option<Cursor> {
    if !s.len().is_multiple_of(2) || s.len() < 26 || s.len() > 2 * (12 + 256) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16)).collect::<Result<_, _>>().ok()?;
    let started_us = i64::from_be_bytes(bytes[0..8].try_into().ok()?);
    let position = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
    let request_id = String::from_utf8(bytes[12..].to_vec()).ok()?;
    // Same bounds as a `from`/`to` parameter.
    if !(0..4_102_444_800_000_000).contains(&started_us) || request_id.is_empty() {
        return None;
    }
    Some(Cursor { started_us, request_id, position })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor { started_us: 1_747_562_400_123_456, request_id: "01JAAAAAAAAAAAAAAAAAAAAAA1".into(), position: 7 };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        for bad in ["", "zz", "abc", &"0".repeat(25), &"f".repeat(40), "'; DROP TABLE sync_requests; --"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
