//! Instrument your own axum sync server with tether-pro: the builder, the two layers, the
//! guard, and one call per mutation reporting the record's state before and after.
//!
//! The server here is a toy (records in a `HashMap`, last write wins, `not_found` for an
//! update or delete of a record it does not have); yours has a database. Run it against a
//! ClickHouse (`cargo run -- clickhouse` in this repository starts a local one):
//!
//! ```text
//! CLICKHOUSE_URL=http://127.0.0.1:8123 cargo run --example axum_host --no-default-features --features capture
//! curl -s localhost:3000/tether/push -H 'content-type: application/json' -d '{"client_id":"c1","mutations":[
//!   {"mutation_id":"m1","entity_id":"t1","model":"Task","operation":"create","payload":{"title":"a"},"version":1,"timestamp":1700000000000}]}'
//! ```
//!
//! then look at `SELECT mutation_id, outcome, state_before, state_after, diff FROM tether.sync_mutations`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tether_pro::capture::record_mutation_state;
use tether_pro::protocol::{Object, Operation, PushRequest, PushResponse, Rejection, RejectionReason};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The host's records: (model, entity id) -> fields.
pub type Records = Arc<Mutex<HashMap<(String, String), Object>>>;

/// The host's own push handler: apply each mutation, and tell tether-pro what the record was
/// before and became after (optional; it fills the before/after view and the field diffs).
async fn push(State(records): State<Records>, Json(req): Json<PushRequest>) -> Json<PushResponse> {
    let mut resp = PushResponse::default();
    let mut records = records.lock().unwrap();
    for m in &req.mutations {
        let key = (m.model.clone(), m.entity_id.clone());
        let before = records.get(&key).cloned();
        let after = match (m.operation, &before) {
            (Operation::Create, _) => Some(m.payload.clone()),
            (Operation::Update, Some(old)) => Some(old.clone().into_iter().chain(m.payload.clone()).collect()),
            (Operation::Delete, Some(_)) => None,
            (Operation::Update | Operation::Delete, None) => {
                resp.rejected.push(Rejection { mutation_id: m.mutation_id.clone(), reason: RejectionReason::NotFound, data: None });
                continue;
            }
        };
        match &after {
            Some(state) => records.insert(key, state.clone()),
            None => records.remove(&key),
        };
        record_mutation_state(&m.mutation_id, before, after);
        resp.applied.push(m.mutation_id.clone());
    }
    Json(resp)
}

/// The host's router, with tether-pro's tower layer in front of it.
pub fn app(tether: &tether_pro::TetherPro, records: Records) -> Router {
    Router::new().route("/tether/push", post(push)).with_state(records).layer(tether.http_layer())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Configuration from tether-pro.toml-less defaults and the environment (CLICKHOUSE_URL,
    // TETHER_PRO_*, OTEL_*). Never waits for ClickHouse.
    let (tether, guard) = tether_pro::TetherPro::builder().service_name("axum-host").spawn()?;
    let logs = tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(tether.tracing_layer()).with(logs).init();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("sync server on http://{}/tether/push (Ctrl-C or SIGTERM stops)", listener.local_addr()?);
    // Returns on SIGINT or SIGTERM, so the guard below is dropped and flushes.
    axum::serve(listener, app(&tether, Records::default())).with_graceful_shutdown(tether_pro::shutdown_signal()).await?;
    // Flushes the last captured pushes to ClickHouse, then OpenTelemetry (bounded).
    drop(guard);
    Ok(())
}
