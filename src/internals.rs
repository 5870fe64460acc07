//! Not part of the public API: the parts this crate's own integration tests, benches and fuzz
//! targets reach into. No stability promise; may change in any release.
#![allow(missing_docs)]

pub mod queue {
    pub use crate::capture::queue::*;
}
pub mod dead_letter {
    pub use crate::pipeline::dead_letter::*;
}
pub mod decode {
    pub use crate::pipeline::decode::*;
}
pub mod diff {
    pub use crate::pipeline::diff::*;
}
pub mod json {
    pub use crate::pipeline::json::*;
}
pub mod rows {
    pub use crate::pipeline::rows::*;
}
pub mod links {
    pub use crate::store::links::*;
}
pub mod queries {
    pub use crate::store::queries::*;
}
pub mod writer {
    pub use crate::store::writer::*;
}
#[cfg(feature = "dashboard")]
pub mod pages {
    pub use crate::dashboard::pages::CSS;
}
#[cfg(feature = "dashboard")]
pub mod metrics {
    pub use crate::dashboard::metrics::*;
}
