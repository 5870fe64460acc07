//! What one statement costs inside ClickHouse, from the `X-ClickHouse-Summary` header the
//! server sends when it waits for the end of the query (the embedded server keeps no
//! `system.query_log`).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Summary {
    #[serde(deserialize_with = "number")]
    pub read_rows: u64,
    #[serde(deserialize_with = "number")]
    pub read_bytes: u64,
    #[serde(deserialize_with = "number")]
    pub elapsed_ns: u64,
    #[serde(deserialize_with = "number")]
    pub memory_usage: u64,
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Runs `sql` in `db` with `{from}`/`{to}` bound and returns the server's summary.
pub async fn summary(http: &reqwest::Client, url: &str, db: &str, sql: &str, params: &[(&str, String)]) -> anyhow::Result<Summary> {
    let mut query: Vec<(String, String)> = vec![
        ("database".into(), db.into()),
        ("wait_end_of_query".into(), "1".into()),
        ("prefer_column_name_to_alias".into(), "1".into()),
    ];
    query.extend(params.iter().map(|(k, v)| (format!("param_{k}"), v.clone())));
    let resp = http.post(url).query(&query).body(format!("{sql} FORMAT Null")).send().await?;
    let header = resp.headers().get("x-clickhouse-summary").map(|v| v.to_str().unwrap_or("").to_owned());
    let status = resp.status();
    let body = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(serde_json::from_str(&header.unwrap_or_default())?)
}

/// One line per statement.
pub fn line(name: &str, s: &Summary) -> String {
    format!(
        "    {name:<12} {:>7.1} ms  read {:>11} rows {:>9.1} MB  memory {:>7.1} MB",
        s.elapsed_ns as f64 / 1e6,
        s.read_rows,
        s.read_bytes as f64 / 1e6,
        s.memory_usage as f64 / 1e6
    )
}
