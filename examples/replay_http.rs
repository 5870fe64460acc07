//! Replay a captured push against a Tether server over HTTP: preview first (what each
//! mutation would do to the record as the server has it now), then, with `--apply`, send it
//! through the server's normal push path, once per idempotency key.
//!
//! ```text
//! CLICKHOUSE_URL=http://127.0.0.1:8123 cargo run --example replay_http -- \
//!   <request_id> http://sync:3000/tether/push 'http://sync:3000/tether/state/{model}/{entity_id}' [--apply]
//! ```

use std::sync::Arc;

use tether_pro::config::Config;
use tether_pro::replay::{ApplyOptions, HttpTarget, Replayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [request_id, push_url, state_url_template, rest @ ..] = args.as_slice() else {
        return Err("usage: replay_http <request_id> <push_url> <state_url_template> [--apply]".into());
    };
    let config = Config::load(None)?;
    let url = config.clickhouse.url.clone().ok_or("set CLICKHOUSE_URL")?;
    let client = tether_pro::store::server_client(&url, &config.clickhouse).with_database(&config.clickhouse.database);
    let target = HttpTarget { http: reqwest::Client::new(), push_url: push_url.clone(), state_url_template: state_url_template.clone() };
    // The capture's redactor: what the preview shows passes it too.
    let replayer = Replayer::new(client, Arc::new(target)).with_redactor(config.capture.redactor());

    let (captured, preview) = replayer.preview(request_id, false).await?;
    println!("push {} from client {} ({} mutations):", captured.request_id, captured.client_id, captured.mutations.len());
    for p in &preview {
        println!(
            "  #{} {} {} {}: was {}, would be {:?}{}",
            p.position,
            p.operation,
            p.model,
            p.entity_id,
            p.original_outcome,
            p.prediction,
            if p.not_resendable.is_empty() { String::new() } else { format!(" ({} redacted values not resent)", p.not_resendable.len()) }
        );
    }
    if rest.iter().any(|a| a == "--apply") {
        let opts = ApplyOptions { idempotency_key: format!("replay_http-{request_id}"), actor: "replay_http example".into(), ..Default::default() };
        let result = replayer.apply(request_id, &opts).await?;
        println!("replay {}: sent {}, host answered HTTP {}", result.replay_id, result.sent, result.host_http_status);
    }
    Ok(())
}
