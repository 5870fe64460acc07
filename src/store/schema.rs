//! The vocabulary of tether-pro's tables: what the `kind` and `outcome` columns hold. The
//! columns are `LowCardinality(String)` (README "ClickHouse tables"); these enums are the only
//! place their values are spelled.

#![warn(missing_docs)]

/// `sync_requests.kind`: push or pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `POST /tether/push`: a batch of mutations.
    Push,
    /// `POST /tether/pull`: snapshots since a cursor.
    Pull,
}

impl RequestKind {
    /// Every kind, in the order pages list them.
    pub const ALL: [RequestKind; 2] = [RequestKind::Push, RequestKind::Pull];

    /// The column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestKind::Push => "push",
            RequestKind::Pull => "pull",
        }
    }
}

/// `sync_requests.outcome`: what became of a request as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Every mutation applied (or duplicate); a pull that was answered.
    Ok,
    /// Some mutations synced, some did not.
    Partial,
    /// Nothing synced, and at least one mutation was rejected.
    Rejected,
    /// Nothing synced, and at least one mutation conflicted.
    Conflict,
    /// A non-2xx answer or a transport failure.
    Error,
    /// The client went away before it had the answer: what the host did is not known from
    /// the response (the mutations' states may still be known).
    Unknown,
}

impl RequestOutcome {
    /// The outcomes a filter offers (`unknown` is rare and shown, not filtered on).
    pub const FILTERABLE: [RequestOutcome; 5] =
        [RequestOutcome::Ok, RequestOutcome::Partial, RequestOutcome::Rejected, RequestOutcome::Conflict, RequestOutcome::Error];

    /// The column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::Partial => "partial",
            RequestOutcome::Rejected => "rejected",
            RequestOutcome::Conflict => "conflict",
            RequestOutcome::Error => "error",
            RequestOutcome::Unknown => "unknown",
        }
    }
}

/// `sync_mutations.outcome`: what the host did with one mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MutationOutcome {
    /// In the host's `applied` list.
    Applied,
    /// In the host's `rejected` list with a reason other than `duplicate`.
    Rejected,
    /// In the host's `conflicts` list (its `data.server_state` is the state before).
    Conflict,
    /// Already applied earlier (the host answered `reason: "duplicate"`); counts as synced.
    Duplicate,
    /// The host answered the push as a whole with an error, or did not mention the mutation.
    Unprocessed,
    /// The client went away before the answer (reason `client_disconnected`).
    Unknown,
}

impl MutationOutcome {
    /// Every outcome.
    pub const ALL: [MutationOutcome; 6] = [
        MutationOutcome::Applied,
        MutationOutcome::Rejected,
        MutationOutcome::Conflict,
        MutationOutcome::Duplicate,
        MutationOutcome::Unprocessed,
        MutationOutcome::Unknown,
    ];

    /// The column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            MutationOutcome::Applied => "applied",
            MutationOutcome::Rejected => "rejected",
            MutationOutcome::Conflict => "conflict",
            MutationOutcome::Duplicate => "duplicate",
            MutationOutcome::Unprocessed => "unprocessed",
            MutationOutcome::Unknown => "unknown",
        }
    }

    /// The outcome a column value names (`None`: not one of ours).
    pub fn parse(s: &str) -> Option<MutationOutcome> {
        MutationOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// A column value compares with the enum directly: `row.outcome == MutationOutcome::Applied`.
macro_rules! column_eq {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                self == other.as_str()
            }
        }
        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.as_str()
            }
        }
        impl PartialEq<$t> for std::sync::Arc<str> {
            fn eq(&self, other: &$t) -> bool {
                **self == *other.as_str()
            }
        }
    )*};
}
column_eq!(RequestKind, RequestOutcome, MutationOutcome);

/// Reasons tether-pro itself assigns (the host's reasons are stored as it sent them).
pub mod reason {
    /// The client closed the connection before it had the response.
    pub const CLIENT_DISCONNECTED: &str = "client_disconnected";
    /// The mutation held a broken string (lone UTF-16 surrogate, invalid UTF-8), stored as
    /// U+FFFD; the host refused the push.
    pub const INVALID_STRING: &str = "invalid_string";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_parses_back_from_its_column_value() {
        for o in MutationOutcome::ALL {
            assert_eq!(MutationOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(MutationOutcome::parse("Applied"), None);
        assert_eq!(MutationOutcome::parse(""), None);
    }
}
