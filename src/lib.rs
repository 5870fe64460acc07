pub mod cli;
pub mod config;
pub mod protocol;
pub mod sim;
pub mod store;
pub mod sync;
