//! Test support shared by the integration tests that need ClickHouse.
//!
//! `clickhouse()` uses `CLICKHOUSE_URL` when it is set (CI starts one server and exports
//! it); otherwise it starts one embedded local ClickHouse per test process. Every call gets
//! its own fresh database, so tests can run in parallel. A test that cannot get a
//! ClickHouse panics: it never skips silently.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};

/// A ClickHouse server and a database created for one test.
#[derive(Debug, Clone)]
pub struct TestClickHouse {
    pub url: String,
    pub database: String,
}

impl TestClickHouse {
    /// A client bound to this test's database.
    pub fn client(&self) -> clickhouse::Client {
        server_client(&self.url).with_database(&self.database)
    }
}

/// The process-wide local server (or why it could not be started). A static is never
/// dropped: the server lives until the test process exits, and then the launcher sees its
/// stdin close and stops it (and deletes its ephemeral data directory).
static LOCAL: OnceLock<Result<LocalClickHouse, String>> = OnceLock::new();

/// A ClickHouse server with a fresh, empty database `test_<ulid>` for the caller.
pub async fn clickhouse() -> TestClickHouse {
    let url = match std::env::var("CLICKHOUSE_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => match tokio::task::spawn_blocking(local_server_url).await {
            Ok(Ok(url)) => url,
            Ok(Err(err)) => no_clickhouse(&err),
            Err(err) => no_clickhouse(&format!("starting the local ClickHouse panicked: {err}")),
        },
    };
    let database = format!("test_{}", ulid::Ulid::new().to_string().to_lowercase());
    if let Err(err) = server_client(&url)
        .query(&format!("CREATE DATABASE {database}"))
        .execute()
        .await
    {
        no_clickhouse(&format!(
            "CREATE DATABASE {database} on {url} failed: {err}"
        ));
    }
    TestClickHouse { url, database }
}

/// Starts (once) the embedded local ClickHouse and returns its URL. A failure is kept
/// too, so the other tests fail at once with the same message instead of retrying.
fn local_server_url() -> Result<String, String> {
    let server = LOCAL.get_or_init(|| {
        let data_dir = tempfile::Builder::new()
            .prefix("tether-pro-test-clickhouse-")
            .tempdir()
            .map_err(|err| format!("cannot create a temporary data directory: {err}"))?
            // The launcher deletes it (--ephemeral) when it stops.
            .keep();
        LocalClickHouse::start(LocalClickHouseOptions {
            data_dir: data_dir.clone(),
            port: 0,
            ephemeral: true,
            startup_timeout: Duration::from_secs(300),
            ..Default::default()
        })
        .map_err(|err| {
            let _ = std::fs::remove_dir_all(&data_dir);
            format!("{err:#}")
        })
    });
    match server {
        Ok(server) => Ok(server.url().to_string()),
        Err(err) => Err(format!(
            "the embedded local ClickHouse did not start: {err}"
        )),
    }
}

/// A client for the server as a whole, with `CLICKHOUSE_USER`/`CLICKHOUSE_PASSWORD` if set.
fn server_client(url: &str) -> clickhouse::Client {
    let mut client = clickhouse::Client::default().with_url(url);
    if let Ok(user) = std::env::var("CLICKHOUSE_USER") {
        client = client.with_user(user);
    }
    if let Ok(password) = std::env::var("CLICKHOUSE_PASSWORD") {
        client = client.with_password(password);
    }
    client
}

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn no_clickhouse(why: &str) -> ! {
    panic!(
        "\n\n==================== NO CLICKHOUSE FOR THIS TEST ====================\n\
         {why}\n\n\
         Tests that need ClickHouse never skip. To get one, either:\n  \
         * let the tests start the embedded one: needs `python3` (3.9+, with the venv\n    \
           module) and access to PyPI the first time, to install chdb-core into\n    \
           ~/.cache/tether-pro (try `scripts/clickhouse-local --install-only`); or\n  \
         * run a server yourself (`scripts/clickhouse-local`, or the official\n    \
           clickhouse-server image) and set CLICKHOUSE_URL=http://127.0.0.1:8123\n\
         =====================================================================\n"
    )
}

impl TestClickHouse {
    /// Creates tether-pro's tables in this test's database (the real migrations).
    pub async fn migrate(&self) {
        let retention = tether_pro::config::RetentionConfig::default();
        tether_pro::store::migrate::migrate(&server_client(&self.url), &self.database, &retention)
            .await
            .expect("migrations apply");
    }

    /// Runs `sql` in this test's database and returns the rows as JSON objects.
    pub async fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        let text = self.query(sql, "JSONEachRow").await.unwrap_or_else(|e| panic!("query failed ({e})\n{sql}"));
        text.lines().map(|l| serde_json::from_str(l).expect("JSONEachRow line")).collect()
    }

    /// Runs `sql` over plain HTTP (no session settings, as Grafana's datasource sends it) in
    /// this test's database, answering in `format`: the body, or the status and ClickHouse's
    /// error text.
    pub async fn query(&self, sql: &str, format: &str) -> Result<String, String> {
        let resp = reqwest::Client::new()
            .post(&self.url)
            .query(&[("database", self.database.as_str()), ("default_format", format)])
            .body(sql.to_owned())
            .send()
            .await
            .expect("ClickHouse answers");
        let status = resp.status();
        let text = resp.text().await.expect("ClickHouse body");
        if status.is_success() { Ok(text) } else { Err(format!("{status}: {text}")) }
    }

    /// The single number a `SELECT count() ...`-like query returns.
    pub async fn count(&self, sql: &str) -> u64 {
        let rows = self.rows(sql).await;
        let v = rows.first().and_then(|r| r.as_object()).and_then(|o| o.values().next()).cloned();
        match v {
            Some(serde_json::Value::Number(n)) => n.as_u64().expect("a count"),
            Some(serde_json::Value::String(s)) => s.parse().expect("a count"),
            other => panic!("no count in {other:?} for {sql}"),
        }
    }
}
