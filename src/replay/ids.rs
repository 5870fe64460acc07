//! Ids a replay derives from its idempotency key instead of drawing at random, so that two
//! dashboard replicas applying the same replay at the same moment send the same clone ids:
//! the host's own duplicate rule on `mutation_id` (PROTOCOL.md, push step 1) lets only the
//! first send through, and both replicas' `replay_links` rows describe the same links (each
//! replica's kept under its `writer`; reads pick the best answer, see `store::links`).
//!
//! Each id is a ULID (PROTOCOL.md: mutation ids are ULIDs): the time part is the original
//! push's (its request id is a ULID tether-pro minted on arrival), the 80 random bits are the
//! first 80 bits of SHA-256 over the parts, each prefixed with its length.

use sha2::{Digest, Sha256};

/// The replay id of an apply with `idempotency_key` of the captured push `request_id`.
pub fn replay_id(request_id: &str, idempotency_key: &str) -> String {
    derive(request_id, &["replay", idempotency_key, request_id])
}

/// The clone's mutation id for the mutation at `position` of the captured push `request_id`
/// (the position, not the original mutation id, names it: a push may repeat an id).
pub fn clone_mutation_id(request_id: &str, idempotency_key: &str, position: u32) -> String {
    derive(request_id, &["clone", idempotency_key, request_id, &position.to_string()])
}

fn derive(request_id: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    // A request id that is not a ULID (rows written by hand) gives time 0: still a valid ULID.
    let time_ms = ulid::Ulid::from_string(request_id).map_or(0, |u| u.timestamp_ms());
    ulid::Ulid::from_parts(time_ms, u128::from_be_bytes(random)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "01JM00000000000000000000R1";

    #[test]
    fn the_same_inputs_give_the_same_ulid_with_the_pushs_time() {
        let a = clone_mutation_id(REQ, "key-1", 0);
        assert_eq!(a, clone_mutation_id(REQ, "key-1", 0));
        assert!(crate::protocol::is_ulid(&a), "{a}");
        let time = ulid::Ulid::from_string(REQ).unwrap().timestamp_ms();
        assert_eq!(ulid::Ulid::from_string(&a).unwrap().timestamp_ms(), time);
        assert!(crate::protocol::is_ulid(&replay_id(REQ, "key-1")));
    }

    #[test]
    fn any_other_key_position_request_or_kind_gives_another_id() {
        let a = clone_mutation_id(REQ, "key-1", 0);
        for other in [
            clone_mutation_id(REQ, "key-2", 0),
            clone_mutation_id(REQ, "key-1", 1),
            clone_mutation_id("01JM00000000000000000000R2", "key-1", 0),
            replay_id(REQ, "key-1"),
        ] {
            assert_ne!(a, other);
        }
        // Length prefixes: moving a boundary between parts changes the id.
        assert_ne!(clone_mutation_id(REQ, "key-1", 12), clone_mutation_id(REQ, "key-11", 2));
    }

    #[test]
    fn a_request_id_that_is_not_a_ulid_still_gives_a_ulid() {
        let id = replay_id("not-a-ulid", "k");
        assert!(crate::protocol::is_ulid(&id), "{id}");
        assert_eq!(ulid::Ulid::from_string(&id).unwrap().timestamp_ms(), 0);
    }
}
