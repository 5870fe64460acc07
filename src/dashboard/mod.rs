//! The dashboard service: metrics API, HTML inspection pages and (later) gated replay.
//!
//! `router(state)` is a plain axum `Router` with paths relative to the dashboard root; mount it
//! under the configured prefix (`/tether/dashboard` by default) with [`mount`], inside your own
//! app or through `tether-pro serve`. It has no auth of its own (like the original product):
//! wrap it in your auth layer, or let `tether-pro serve` add bearer or basic auth.

mod api;
pub(crate) mod auth;
mod config;
mod error;
mod health;
pub mod history;
pub(crate) mod metrics;
pub(crate) mod pages;
pub mod replay;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

pub use api::{ApiDoc, openapi_json};
pub use config::ServeConfig;
pub use error::DashboardError;
pub use health::HealthThresholds;

/// Everything the dashboard's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct DashboardState {
    /// Bound to the database holding tether-pro's tables.
    pub client: clickhouse::Client,
    /// Where the dashboard is mounted (links in pages are built from it).
    pub prefix: String,
    /// When a five-minute bucket is degraded or failing (`serve.health`).
    pub thresholds: HealthThresholds,
    /// Mutations per page on a request's detail page.
    pub mutations_page_size: usize,
    /// Replay preview and apply; `None` (the default) makes every replay route a 404.
    pub replay: Option<replay::ReplayState>,
    /// The capture pipeline's counters, when the dashboard runs in the capturing process
    /// (the overview page then shows its health); `None` for a standalone `tether-pro serve`.
    pub capture: Option<std::sync::Arc<crate::capture::CaptureStats>>,
    /// `serve.trace_url`: where trace ids link to (`{trace_id}` replaced); `None`: not linked.
    pub trace_url: Option<String>,
}

impl DashboardState {
    /// The default `prefix`: `/tether/dashboard`.
    pub const DEFAULT_PREFIX: &'static str = "/tether/dashboard";
    /// The default `mutations_page_size`: 50.
    pub const DEFAULT_MUTATIONS_PAGE_SIZE: usize = 50;

    /// The defaults: mounted at [`Self::DEFAULT_PREFIX`], default thresholds, replay off, no
    /// capture counters. `client` must be bound to tether-pro's database.
    pub fn new(client: clickhouse::Client) -> Self {
        DashboardState {
            client,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            thresholds: HealthThresholds::default(),
            mutations_page_size: Self::DEFAULT_MUTATIONS_PAGE_SIZE,
            replay: None,
            capture: None,
            trace_url: None,
        }
    }

    /// Shows the capture pipeline's health (written, spooled, dropped by reason, last
    /// insert) on the overview page.
    pub fn with_capture(mut self, stats: std::sync::Arc<crate::capture::CaptureStats>) -> Self {
        self.capture = Some(stats);
        self
    }
}

/// Content-Security-Policy of every response: no inline script, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, relative to its root.
pub fn router(state: DashboardState) -> Router {
    // With replay off its routes do not exist at all: every replay path answers the router's
    // 404 whatever the method (never a 405 or an extractor's 400 that would tell them apart).
    let replay = if state.replay.is_some() { replay::router() } else { Router::new() };
    security_headers(Router::new().merge(api::router()).merge(pages::router(&state)).merge(replay).with_state(state))
}

/// The headers every dashboard response carries.
fn security_headers(router: Router) -> Router {
    router
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
}

/// `router(state)` nested under `state.prefix`.
pub fn mount(state: DashboardState) -> Router {
    let prefix = state.prefix.trim_end_matches('/').to_owned();
    if prefix.is_empty() {
        return router(state);
    }
    // `/tether/dashboard/` is where people type it; the overview lives at the bare prefix.
    let target = prefix.clone();
    // The query string goes along (`/tether/dashboard/?window=1h` keeps its window).
    let slash = security_headers(Router::new().route(
        &format!("{prefix}/"),
        axum::routing::get(move |uri: axum::http::Uri| async move {
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            axum::response::Redirect::permanent(&format!("{target}{query}"))
        }),
    ));
    Router::new().nest(&prefix, router(state)).merge(slash)
}

/// The dashboard as `tether-pro serve` runs it: mounted under `serve.prefix`, auth from the
/// configuration around every route, and `/` redirecting to the dashboard.
pub fn app(serve: &ServeConfig, client: clickhouse::Client) -> Router {
    app_with_replay(serve, client, None)
}

/// [`app`] with replay routes (only pass `Some` when `replay.live_enabled`).
pub fn app_with_replay(serve: &ServeConfig, client: clickhouse::Client, replay: Option<replay::ReplayState>) -> Router {
    app_in_process(serve, client, replay, None)
}

/// [`app_with_replay`] in the capturing process: `capture` (the pipeline's counters) puts
/// its health on the overview page.
pub fn app_in_process(
    serve: &ServeConfig,
    client: clickhouse::Client,
    replay: Option<replay::ReplayState>,
    capture: Option<std::sync::Arc<crate::capture::CaptureStats>>,
) -> Router {
    let state = DashboardState {
        client,
        prefix: serve.prefix.clone(),
        thresholds: serve.health,
        mutations_page_size: serve.mutations_page_size,
        replay,
        capture,
        trace_url: serve.trace_url.clone(),
    };
    let prefix = if serve.prefix.is_empty() { "/".to_owned() } else { serve.prefix.clone() };
    let mut app = mount(state);
    if !serve.prefix.is_empty() {
        app = app.route("/", axum::routing::get(move || async move { axum::response::Redirect::temporary(&prefix) }));
    }
    match serve.auth() {
        Some(auth) => app.layer(axum::middleware::from_fn_with_state(auth, auth::require)),
        None => app,
    }
}

/// True when `listen` is reachable only from this machine.
pub fn is_loopback(listen: &std::net::SocketAddr) -> bool {
    listen.ip().is_loopback()
}
