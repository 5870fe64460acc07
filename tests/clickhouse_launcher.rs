//! The embedded local ClickHouse: the launcher script, `LocalClickHouse`, and the test
//! helper, all against a real server (no mocks).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tether_pro::store::local::{LocalClickHouse, LocalClickHouseOptions};

const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/clickhouse-local");
/// Generous: the first run on a machine installs the wheel.
const STARTUP: Duration = Duration::from_secs(300);

#[derive(Debug, PartialEq, Row, Serialize, Deserialize)]
struct Event {
    id: u64,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    at: DateTime<Utc>,
    attrs: HashMap<String, u64>,
}

#[tokio::test]
async fn helper_server_is_clickhouse_26_9_and_round_trips_types() {
    let ch = common::clickhouse().await;
    let client = ch.client();

    let version: String = client.query("SELECT version()").fetch_one().await.unwrap();
    assert!(
        version.starts_with("26.9"),
        "unexpected ClickHouse version {version}"
    );
    let db: String = client
        .query("SELECT currentDatabase()")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(db, ch.database);

    client
        .query(
            "CREATE TABLE events (id UInt64, at DateTime64(3, 'UTC'), attrs Map(String, UInt64))
             ENGINE = MergeTree ORDER BY id",
        )
        .execute()
        .await
        .unwrap();

    // RowBinary through the typed client.
    let rows = vec![
        Event {
            id: 1,
            at: Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            attrs: HashMap::from([("a".to_string(), 1), ("b".to_string(), 2)]),
        },
        Event {
            id: 2,
            at: Utc.timestamp_millis_opt(0).unwrap(),
            attrs: HashMap::new(),
        },
    ];
    let mut insert = client.insert::<Event>("events").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    // JSONEachRow in, for a third row.
    let mut insert = client.insert_formatted_with("INSERT INTO events FORMAT JSONEachRow");
    insert
        .send(bytes::Bytes::from_static(
            br#"{"id": 3, "at": "2024-02-29 23:59:59.999", "attrs": {"x": 42}}"#,
        ))
        .await
        .unwrap();
    insert.end().await.unwrap();

    let fetched: Vec<Event> = client
        .query("SELECT ?fields FROM events ORDER BY id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(fetched.len(), 3);
    assert_eq!(fetched[..2], rows[..]);
    assert_eq!(
        fetched[2].at,
        Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
            + chrono::Duration::milliseconds(999)
    );
    assert_eq!(fetched[2].attrs, HashMap::from([("x".to_string(), 42)]));

    // JSONEachRow out.
    let out = client
        .query("SELECT id, at, attrs FROM events WHERE id = 1 FORMAT JSONEachRow")
        .fetch_bytes("JSONEachRow")
        .unwrap()
        .collect()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": 1, "at": "2023-11-14 22:13:20.123", "attrs": {"a": 1, "b": 2}})
    );
}

#[tokio::test]
async fn each_helper_call_gets_its_own_database() {
    let (a, b) = (common::clickhouse().await, common::clickhouse().await);
    assert_ne!(a.database, b.database);
    for ch in [&a, &b] {
        assert!(ch.database.starts_with("test_") && ch.database == ch.database.to_lowercase());
    }

    a.client()
        .query("CREATE TABLE only_in_a (x UInt8) ENGINE = Memory")
        .execute()
        .await
        .unwrap();
    let tables = |ch: &common::TestClickHouse| {
        ch.client()
            .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
            .fetch_all::<String>()
    };
    assert_eq!(tables(&a).await.unwrap(), vec!["only_in_a".to_string()]);
    assert!(
        tables(&b).await.unwrap().is_empty(),
        "a table made in {} leaked into {}",
        a.database,
        b.database
    );
}

#[tokio::test]
async fn data_survives_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalClickHouseOptions {
        data_dir: dir.path().join("clickhouse"),
        port: 0,
        ephemeral: false,
        startup_timeout: STARTUP,
        ..Default::default()
    };
    let start = |opts: LocalClickHouseOptions| async move {
        tokio::task::spawn_blocking(move || LocalClickHouse::start(opts))
            .await
            .unwrap()
            .unwrap()
    };

    let server = start(opts.clone()).await;
    let client = clickhouse::Client::default().with_url(server.url());
    client
        .query("CREATE TABLE kept (id UInt64, note String) ENGINE = MergeTree ORDER BY id")
        .execute()
        .await
        .unwrap();
    client
        .query("INSERT INTO kept VALUES (7, 'still here')")
        .execute()
        .await
        .unwrap();
    // Close our keep-alive connections first: ClickHouse waits up to 5 s for idle ones.
    drop(client);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();

    let server = start(opts).await;
    let client = clickhouse::Client::default().with_url(server.url());
    let rows: Vec<(u64, String)> = client
        .query("SELECT id, note FROM kept")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows, vec![(7, "still here".to_string())]);
    drop(client);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(
        dir.path().join("clickhouse").exists(),
        "a non-ephemeral data dir must be kept"
    );
}

#[test]
fn launcher_stops_when_its_stdin_closes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clickhouse");
    let mut launcher = Command::new("python3")
        .arg(LAUNCHER)
        .args(["--port", "0", "--ephemeral", "--data"])
        .arg(&data)
        .stdin(Stdio::piped()) // a pipe: watched by default
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = read_ready_line(&mut launcher);
    assert!(ping(&url), "{url}/ping did not answer Ok.");
    assert!(data.exists());

    drop(launcher.stdin.take());
    let status = wait_with_timeout(&mut launcher, Duration::from_secs(20))
        .expect("the launcher did not exit within 20 s of its stdin closing");
    assert!(status.success(), "launcher exited with {status}");
    assert!(!ping(&url), "{url} still answers after the launcher exited");
    assert!(
        !data.exists(),
        "--ephemeral data dir {} was not deleted",
        data.display()
    );
}

#[test]
fn launcher_fails_clearly_when_the_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(LAUNCHER)
        .args(["--port", &port.to_string(), "--ephemeral", "--data"])
        .arg(dir.path().join("clickhouse"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "launcher succeeded on a taken port; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("already in use"),
        "unclear error message:\n{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"));
}

/// Cluster flags that cannot make a valid `remote_servers` entry are refused before anything
/// starts, each with a message that names the flag.
#[test]
fn launcher_refuses_bad_cluster_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--shard", "127.0.0.1:9000"], "--shard needs --cluster"),
        (vec!["--cluster", "tether"], "--cluster needs at least one --shard"),
        (vec!["--cluster", "te<ther", "--shard", "127.0.0.1:9000"], "--cluster wants a plain name"),
        (vec!["--cluster", "tether", "--shard", "127.0.0.1"], "--shard wants HOST:TCPPORT"),
        (vec!["--cluster", "tether", "--shard", "127.0.0.1:70000"], "--shard wants HOST:TCPPORT"),
        (vec!["--cluster", "tether", "--shard", "<x>:9000"], "--shard has a bad host"),
        (vec!["--macro", "shard"], "--macro wants KEY=VALUE"),
        (vec!["--macro", "a b=1"], "--macro wants KEY=VALUE"),
        (vec!["--macro", "shard=1", "--macro", "shard=2"], "the same KEY is given twice"),
    ] {
        let out = Command::new("python3")
            .arg(LAUNCHER)
            .args(&args)
            .args(["--ephemeral", "--no-watch-stdin", "--data"])
            .arg(dir.path().join("clickhouse"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"), "{args:?}");
    }
}

/// Reads the launcher's stdout up to its `READY <url>` line; panics on EOF or timeout.
fn read_ready_line(launcher: &mut Child) -> String {
    let stdout: ChildStdout = launcher.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {} // keep draining until the launcher exits
    });
    match rx.recv_timeout(STARTUP) {
        Ok(Some(Ok(line))) => match line.strip_prefix("READY ") {
            Some(url) => url.to_string(),
            None => panic!("unexpected first line from the launcher: {line:?}"),
        },
        other => {
            let _ = launcher.kill();
            panic!("the launcher printed no READY line: {other:?}")
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// `GET /ping` with plain std, so the check does not depend on any client library.
fn ping(url: &str) -> bool {
    let addr = url
        .strip_prefix("http://")
        .expect("http URL")
        .trim_end_matches('/');
    let Ok(mut stream) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
    else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if write!(stream, "GET /ping HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains(" 200 ") && response.ends_with("Ok.\n")
}
