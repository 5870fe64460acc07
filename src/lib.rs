#![doc = include_str!("../README.md")]

pub mod capture;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod pipeline;
pub mod protocol;
pub mod replay;
pub mod sim;
pub mod store;
pub mod sync;
pub mod telemetry;
