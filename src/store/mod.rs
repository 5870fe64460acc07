//! ClickHouse: schema, migrations, writer, reads, and the embedded local server.

pub mod cluster;
pub(crate) mod config;
pub(crate) mod encoded;
pub(crate) mod links;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod local;
pub mod migrate;
pub(crate) mod queries;
pub(crate) mod rows;
pub(crate) mod rowbinary;
pub mod schema;
pub(crate) mod writer;

use config::{ClickHouseConfig, Compression};

/// `url` as it may be shown (logs, reports, errors): scheme, host, port and path only. A
/// `user:password@` part is left out (also without a scheme), and a query string, which may
/// hold `password=`, shows as `?…`.
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].rsplit_once('@').map_or(&rest[..end], |(_, h)| h);
    let tail = &rest[end..];
    let path = tail.split(['?', '#']).next().unwrap_or("");
    let more = if tail.len() > path.len() { "?…" } else { "" };
    format!("{scheme}{host}{path}{more}")
}

/// `text` with the `user:password@` part of every URL in it left out: for messages that
/// quote configuration values (a malformed list of URLs, say).
pub fn hide_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find(|c: char| c.is_whitespace() || "/?#\"',]);\\".contains(c)).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
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
    use super::{display_url, hide_credentials};

    #[test]
    fn credentials_in_quoted_urls_are_left_out() {
        assert_eq!(
            hide_credentials(r#"found string "[\"http://a:1\",\"http://default:S3cretQ10@127.0.0.1:52197\"" for key"#),
            r#"found string "[\"http://a:1\",\"http://127.0.0.1:52197\"" for key"#
        );
        assert_eq!(hide_credentials("x http://u:p@h:1/a@b y https://h2 z"), "x http://h:1/a@b y https://h2 z");
        assert_eq!(hide_credentials("no urls: a@b"), "no urls: a@b");
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(display_url("http://default:s3cret@ch-1:8123/?database=x"), "http://ch-1:8123/?…");
        assert_eq!(display_url("http://h:1/?user=default&password=S3cret"), "http://h:1/?…");
        assert_eq!(display_url("u:S3cret@127.0.0.1:8123"), "127.0.0.1:8123", "no scheme");
        assert_eq!(display_url("http://h:1/p#frag"), "http://h:1/p?…");
        assert_eq!(display_url("https://u@h"), "https://h");
        assert_eq!(display_url("http://u:p%40ss@h:1"), "http://h:1");
        assert_eq!(display_url("http://h:8123/a@b"), "http://h:8123/a@b", "an @ after the authority is not userinfo");
        assert_eq!(display_url("http://h:8123"), "http://h:8123");
        assert_eq!(display_url("not a url"), "not a url");
    }
}
