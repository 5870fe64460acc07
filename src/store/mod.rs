//! ClickHouse: schema, migrations, writer, reads, and the embedded local server.

pub mod cluster;
pub(crate) mod config;
pub(crate) mod links;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod local;
pub mod migrate;
pub(crate) mod queries;
pub(crate) mod rows;
pub mod schema;
pub(crate) mod writer;

use config::{ClickHouseConfig, Compression};

/// A client for the server (not bound to a database: the database may not exist yet).
pub fn server_client(url: &str, cfg: &ClickHouseConfig) -> clickhouse::Client {
    let mut c = clickhouse::Client::default().with_url(url).with_user(&cfg.user);
    if !cfg.password.is_empty() {
        c = c.with_password(&cfg.password);
    }
    if cfg.cluster.is_some() {
        // Inserts into a Distributed table return once every shard has its rows (not when
        // they are queued on the node that took them): the writer's acknowledgement, retries
        // and deduplication tokens keep their meaning. A subquery or JOIN over a second
        // Distributed table runs once and is sent to the shards (`GLOBAL`): right whatever
        // shard holds the rows it matches.
        c = c.with_setting("distributed_foreground_insert", "1").with_setting("distributed_product_mode", "global");
    }
    match cfg.compression.resolve(url) {
        Compression::None => c.with_compression(clickhouse::Compression::None),
        _ => c.with_compression(clickhouse::Compression::Lz4),
    }
}
