#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// Features (Cargo.toml): `capture` is the library a host links; the other parts build on it.
#[cfg(feature = "capture")]
mod builder;
#[cfg(feature = "capture")]
pub mod capture;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[cfg(feature = "capture")]
pub mod config;
#[cfg(feature = "dashboard")]
pub mod dashboard;
#[cfg(feature = "capture")]
mod invalid;
#[cfg(feature = "capture")]
pub mod pipeline;
pub mod protocol;
#[cfg(feature = "replay")]
pub mod replay;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod sim;
#[cfg(feature = "capture")]
pub mod store;
#[cfg(feature = "reference-server")]
pub mod sync;
#[cfg(feature = "capture")]
pub mod telemetry;

#[cfg(feature = "capture")]
#[doc(hidden)]
pub mod internals;

#[cfg(feature = "capture")]
pub use builder::{Builder, Error, TetherPro, TetherProGuard, shutdown_signal};
