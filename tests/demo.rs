//! The main job end to end: `tether-pro demo` against a real ClickHouse, as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn the_demo_drives_traffic_and_captures_every_outcome() {
    let ch = common::clickhouse().await;
    let dir = tempfile::tempdir().unwrap();
    let url = ch.url.clone();
    let database = ch.database.clone();
    let sync_db = dir.path().join("sync.sqlite3");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether-pro"))
        .args(["demo", "--duration", "8s", "--rate", "30", "--listen", "127.0.0.1:0", "--dashboard-listen", "127.0.0.1:0", "--sync-db"])
        .arg(&sync_db)
        .env("CLICKHOUSE_URL", url)
        .env("TETHER_PRO_CLICKHOUSE__DATABASE", database)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the output as it comes; ask the dashboard while the demo runs.
    let stdout_pipe = child.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout_pipe).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let mut stdout = String::new();
    let mut dashboard = None;
    while let Some(line) = line_rx.recv().await {
        stdout.push_str(&line);
        stdout.push('\n');
        if let Some(rest) = line.strip_prefix("dashboard:") {
            dashboard = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let dashboard = dashboard.unwrap_or_else(|| panic!("the demo printed no dashboard URL:\n{stdout}"));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let metrics: serde_json::Value = reqwest::get(format!("{dashboard}/metrics?window=1h")).await.unwrap().json().await.unwrap();
    assert!(metrics["totals"]["requests"].as_u64().unwrap() > 0, "the dashboard sees the demo's traffic: {metrics}");
    assert_eq!(metrics["health"].as_array().unwrap().len(), 12);
    while let Some(line) = line_rx.recv().await {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    reader.join().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("reference Tether sync server at http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("errors 0"), "{stdout}");
    // The printed "where to look" commands work when pasted into a shell.
    let commands: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  curl ")).collect();
    assert_eq!(commands.len(), 3, "{stdout}");
    for c in commands {
        let out = Command::new("sh").arg("-c").arg(format!("curl -sS {c}")).output().unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !body.trim().is_empty() && !body.contains("Exception"), "curl {c}\n{body}{}", String::from_utf8_lossy(&out.stderr));
    }
    let captured = stdout.lines().find(|l| l.starts_with("captured:")).expect("a capture summary");
    assert!(captured.contains(" 0 dropped, 0 failed"), "{captured}");

    assert!(ch.count("SELECT count() FROM sync_requests WHERE kind = 'push'").await >= 50);
    assert!(ch.count("SELECT count() FROM sync_requests WHERE kind = 'pull'").await >= 50);
    for (outcome, reason) in [("applied", ""), ("rejected", "validation_failed"), ("rejected", "not_found"), ("conflict", "conflict"), ("duplicate", "duplicate")] {
        let n = ch.count(&format!("SELECT count() FROM sync_mutations WHERE outcome = '{outcome}' AND reason = '{reason}'")).await;
        assert!(n > 0, "no {outcome}/{reason} mutation captured");
    }
    // The simulated secrets never reach storage.
    assert_eq!(ch.count("SELECT count() FROM sync_mutations WHERE position(payload, 'sk_live_') > 0 OR position(state_after, 'hunter2') > 0").await, 0);
    assert!(ch.count("SELECT count() FROM sync_mutations WHERE position(payload, '[REDACTED]') > 0").await > 0);
}
