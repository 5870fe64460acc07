//! Mount tether-pro's dashboard (metrics API and inspection pages) inside your own axum app,
//! behind your own auth: the dashboard has no auth of its own when mounted this way.
//!
//! ```text
//! CLICKHOUSE_URL=http://127.0.0.1:8123 ADMIN_TOKEN=s3cret cargo run --example mount_dashboard
//! curl -H 'authorization: Bearer s3cret' localhost:3000/tether/dashboard/metrics
//! ```

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tether_pro::dashboard::{self, DashboardState};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Stands for the host's own auth (sessions, SSO, an API gateway's header...).
async fn require_admin(token: String, req: Request, next: Next) -> Result<Response, StatusCode> {
    let sent = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if sent == Some(token.as_str()) { Ok(next.run(req).await) } else { Err(StatusCode::UNAUTHORIZED) }
}

/// The dashboard under `/tether/dashboard`, behind `token`, reading the database capture
/// writes to and showing the capture pipeline's health from this process.
pub fn admin_routes(tether: &tether_pro::TetherPro, token: String) -> Router {
    let config = tether.config();
    let url = config.clickhouse.url.as_deref().unwrap_or("http://127.0.0.1:8123");
    let client = tether_pro::store::server_client(url, &config.clickhouse).with_database(&config.clickhouse.database);
    let state = DashboardState::new(client).with_capture(tether.capture_stats().clone());
    dashboard::mount(state).layer(middleware::from_fn(move |req, next| require_admin(token.clone(), req, next)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = std::env::var("ADMIN_TOKEN").map_err(|_| "set ADMIN_TOKEN: the dashboard shows captured sync traffic")?;
    let (tether, _guard) = tether_pro::TetherPro::builder().service_name("mount-dashboard").spawn()?;
    let logs = tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(tether.tracing_layer()).with(logs).init();

    // Your sync routes go here, with `.layer(tether.http_layer())`.
    let sync_routes = Router::new().layer(tether.http_layer());
    let app = sync_routes.merge(admin_routes(&tether, token));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("dashboard on http://{}/tether/dashboard (Bearer ADMIN_TOKEN)", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(tether_pro::shutdown_signal()).await?;
    Ok(())
}
