//! The error every configuration section's `validate` returns: the key and why its value is
//! refused (e.g. "capture.queue_records must be at least 1"). A leaf, so each part can own
//! its section and its checks.

/// A configuration value out of range or inconsistent with another; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// `ensure_valid!(cond, "key must ...", args)`: returns [`InvalidConfig`] unless `cond`.
macro_rules! ensure_valid {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::invalid::InvalidConfig(format!($($fmt)+)));
        }
    };
}
pub(crate) use ensure_valid;
