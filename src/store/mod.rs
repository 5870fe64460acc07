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

/// `url` as it may be shown (logs, reports, errors): without the `user:password@` part a
/// URL may carry.
pub fn display_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::display_url;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(display_url("http://default:s3cret@ch-1:8123/?database=x"), "http://ch-1:8123/?database=x");
        assert_eq!(display_url("https://u@h"), "https://h");
        assert_eq!(display_url("http://u:p%40ss@h:1"), "http://h:1");
        assert_eq!(display_url("http://h:8123/a@b"), "http://h:8123/a@b", "an @ after the authority is not userinfo");
        assert_eq!(display_url("http://h:8123"), "http://h:8123");
        assert_eq!(display_url("not a url"), "not a url");
    }
}
