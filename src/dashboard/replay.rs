//! Replay routes, present only when `replay.live_enabled` is set (otherwise every one of
//! them is a 404, whatever the method). Apply is a POST that needs a CSRF token (an HMAC of
//! the request id and the idempotency key under a per-process key) and an idempotency key:
//! the same key replays once, however often it is submitted.

// Handlers build their error responses early and return them as `Err(Response)`; the size
// of `Response` does not matter on this cold path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DashboardState;
// Template filters (`|user`, `|user_block`) are looked up here by the generated code.
use super::pages::text::filters;
use super::pages::views::{DiffView, Nav, diff_view};
use crate::replay::{ApplyOptions, LinkRow, PreviewEntry, ReplayError, Replayer};

/// Replay's share of the dashboard state.
#[derive(Clone)]
pub struct ReplayState {
    /// Previews and applies the replays.
    pub replayer: Replayer,
    csrf_key: Arc<[u8; 32]>,
}

impl ReplayState {
    /// With a fresh random CSRF key, so tokens issued by another instance (or before a restart)
    /// are refused.
    pub fn new(replayer: Replayer) -> Self {
        ReplayState { replayer, csrf_key: Arc::new(rand::random()) }
    }

    /// With a CSRF key derived from `secret` (`replay.csrf_secret`): every replica given the
    /// same secret accepts the tokens of the others, so a preview served by one replica can be
    /// applied through another behind a load balancer.
    pub fn with_csrf_secret(replayer: Replayer, secret: &str) -> Self {
        let key: [u8; 32] = Sha256::new_with_prefix(b"tether-pro replay csrf\n").chain_update(secret.as_bytes()).finalize().into();
        ReplayState { replayer, csrf_key: Arc::new(key) }
    }

    /// [`ReplayState::with_csrf_secret`] when a secret is configured, else [`ReplayState::new`].
    pub fn configured(replayer: Replayer, secret: Option<&str>) -> Self {
        match secret {
            Some(secret) => Self::with_csrf_secret(replayer, secret),
            None => Self::new(replayer),
        }
    }

    fn token(&self, request_id: &str, key: &str) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.csrf_key.as_slice()).expect("any key length");
        mac.update(request_id.as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(&self, request_id: &str, key: &str, token: &str) -> bool {
        let Ok(raw) = hex::decode(token) else { return false };
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.csrf_key.as_slice()).expect("any key length");
        mac.update(request_id.as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        mac.verify_slice(&raw).is_ok()
    }
}

/// The replay routes: `/replay/{request_id}` (preview page, and its form's POST),
/// `.../preview.json`, `.../apply.json` and `.../links.json`.
pub fn router() -> Router<DashboardState> {
    Router::new()
        .route("/replay/{request_id}", get(preview_page).post(apply_form))
        .route("/replay/{request_id}/preview.json", get(preview_json))
        .route("/replay/{request_id}/apply.json", axum::routing::post(apply_json))
        .route("/replay/{request_id}/links.json", get(links_json))
}

fn replay_state(state: &DashboardState) -> Result<&ReplayState, Response> {
    state.replay.as_ref().ok_or_else(|| StatusCode::NOT_FOUND.into_response())
}

fn error_response(e: ReplayError) -> Response {
    let status = match &e {
        ReplayError::NotFound => StatusCode::NOT_FOUND,
        ReplayError::NotAPush(_) | ReplayError::NothingToReplay => StatusCode::UNPROCESSABLE_ENTITY,
        ReplayError::NoIdempotencyKey => StatusCode::BAD_REQUEST,
        ReplayError::LinksNotWritten(_) | ReplayError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        ReplayError::Host(_) => StatusCode::BAD_GATEWAY,
    };
    // Store errors carry ClickHouse's exception text (SQL, table names): logged, not shown.
    let message = match &e {
        ReplayError::Store(_) => "ClickHouse is unavailable; nothing was sent".to_owned(),
        ReplayError::LinksNotWritten(_) => "the audit links could not be written, so nothing was sent".to_owned(),
        other => other.to_string(),
    };
    if matches!(e, ReplayError::Store(_) | ReplayError::LinksNotWritten(_)) {
        tracing::error!(target: "tether_pro::dashboard", error = %e, "replay failed");
    }
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

/// Who asked: the user `tether-pro serve`'s basic auth let in; else the identity a fronting
/// auth proxy passes; else `dashboard`. With basic auth the headers are not trusted: any
/// client can send them.
fn actor(basic: Option<&super::auth::BasicUser>, headers: &HeaderMap) -> String {
    if let Some(super::auth::BasicUser(user)) = basic {
        return user.chars().take(200).collect();
    }
    ["x-forwarded-user", "x-auth-request-user", "x-forwarded-email"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(|s| s.chars().take(200).collect())
        .unwrap_or_else(|| "dashboard".to_owned())
}

#[derive(Debug, Default, Deserialize)]
struct PreviewQuery {
    restamp: Option<String>,
}

#[derive(Serialize)]
struct PreviewBody {
    request_id: String,
    restamp: bool,
    idempotency_key: String,
    csrf_token: String,
    entries: Vec<PreviewEntry>,
}

async fn preview_json(State(state): State<DashboardState>, Path(id): Path<String>, Query(q): Query<PreviewQuery>) -> Response {
    let rs = match replay_state(&state) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let restamp = q.restamp.as_deref().is_some_and(|v| v == "1" || v == "true");
    match rs.replayer.preview(&id, restamp).await {
        Ok((_, entries)) => {
            let key = ulid::Ulid::new().to_string();
            let csrf_token = rs.token(&id, &key);
            Json(PreviewBody { request_id: id, restamp, idempotency_key: key, csrf_token, entries }).into_response()
        }
        Err(e) => error_response(e),
    }
}

#[derive(Debug, Deserialize)]
struct ApplyBody {
    idempotency_key: String,
    csrf_token: String,
    #[serde(default)]
    restamp: bool,
    #[serde(default)]
    positions: Option<Vec<u32>>,
}

/// Whether a browser sent this from the dashboard's own origin. A request from another site
/// (a form or a fetch on a page elsewhere, riding on the user's basic-auth or proxy session)
/// is refused even with a valid CSRF token. Modern browsers say where a request comes from in
/// `Sec-Fetch-Site`, which holds behind any proxy; without it, an `Origin` must name the host
/// the request was sent to (`Host`, or `X-Forwarded-Host` behind a proxy; a cross-site page
/// cannot set either). Clients that send neither header (curl, scripts) are not affected.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else { return true };
    // `null` (sandboxed frames, file pages, cross-site redirects) and anything odd is foreign.
    let Some((scheme, authority)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else { return false };
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return false;
    }
    let norm = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    let origin = norm(authority);
    [axum::http::header::HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .filter_map(|v| v.split(',').next())
        .any(|host| norm(host) == origin)
}

async fn apply_checked(state: &DashboardState, id: &str, basic: Option<&super::auth::BasicUser>, headers: &HeaderMap, body: ApplyBody) -> Result<crate::replay::ReplayResult, Response> {
    let rs = replay_state(state)?;
    if !same_origin(headers) {
        return Err((StatusCode::FORBIDDEN, Json(serde_json::json!({"error": "a replay can only be applied from the dashboard's own pages"}))).into_response());
    }
    if body.idempotency_key.is_empty() || body.idempotency_key.chars().count() > 128 {
        return Err((StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": "an idempotency key (1 to 128 characters) is required"}))).into_response());
    }
    if !rs.check(id, &body.idempotency_key, &body.csrf_token) {
        return Err((StatusCode::FORBIDDEN, Json(serde_json::json!({"error": "missing or wrong CSRF token; open the preview again"}))).into_response());
    }
    let opts = ApplyOptions { idempotency_key: body.idempotency_key, actor: actor(basic, headers), restamp: body.restamp, positions: body.positions };
    rs.replayer.apply(id, &opts).await.map_err(error_response)
}

async fn apply_json(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    basic: Option<axum::Extension<super::auth::BasicUser>>,
    headers: HeaderMap,
    body: Result<Json<ApplyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(resp) = replay_state(&state) {
        return resp;
    }
    let body = match body {
        Ok(Json(body)) => body,
        Err(e) => {
            // Too large stays a 413 and a wrong content type a 415; anything else is a 400.
            let status = match e.status() {
                s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                _ => StatusCode::BAD_REQUEST,
            };
            return (status, Json(serde_json::json!({"error": "expected JSON {idempotency_key, csrf_token, restamp?, positions?}"}))).into_response();
        }
    };
    match apply_checked(&state, &id, basic.as_deref(), &headers, body).await {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn links_json(State(state): State<DashboardState>, Path(id): Path<String>) -> Response {
    let rs = match replay_state(&state) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match rs.replayer.links(&id).await {
        Ok(links) => Json(links).into_response(),
        Err(e) => error_response(e),
    }
}

struct EntryView {
    e: PreviewEntry,
    prediction: String,
    current: String,
    diff: DiffView,
}

impl EntryView {
    fn sent_instead(&self, s: &crate::replay::Substitution) -> &'static str {
        match s.sent_instead {
            crate::replay::SentInstead::CurrentValue => "current value",
            crate::replay::SentInstead::LeftOut => "left out",
            crate::replay::SentInstead::Null => "null",
        }
    }
}

#[derive(Template)]
#[template(path = "replay.html")]
struct ReplayPage {
    nav: Nav,
    request_id: String,
    request_link: String,
    restamp: bool,
    toggle_link: String,
    idempotency_key: String,
    csrf_token: String,
    entries: Vec<EntryView>,
    replays: Vec<LinkRow>,
}

#[derive(Template)]
#[template(path = "replay_result.html")]
struct ResultPage {
    nav: Nav,
    request_id: String,
    request_link: String,
    sent: bool,
    host_http_status: u16,
    links: Vec<LinkRow>,
}

fn html(t: impl Template) -> Response {
    match t.render() {
        Ok(s) => Html(s).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn preview_page(State(state): State<DashboardState>, Path(id): Path<String>, Query(q): Query<PreviewQuery>) -> Response {
    let rs = match replay_state(&state) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let restamp = q.restamp.as_deref().is_some_and(|v| v == "1" || v == "true");
    let (entries, replays) = match (rs.replayer.preview(&id, restamp).await, rs.replayer.links(&id).await) {
        (Ok((_, e)), Ok(l)) => (e, l),
        (Err(e), _) | (_, Err(e)) => return error_response(e),
    };
    let nav = Nav::new(&state.prefix, "requests", format!("Replay {id}"));
    let key = ulid::Ulid::new().to_string();
    let base = format!("{}/replay/{}", state.prefix, super::pages::views::enc(&id));
    html(ReplayPage {
        request_link: nav.request(&id),
        toggle_link: if restamp { base } else { format!("{base}?restamp=1") },
        csrf_token: rs.token(&id, &key),
        idempotency_key: key,
        entries: entries
            .into_iter()
            .map(|e| EntryView {
                prediction: serde_json::to_value(&e.prediction).ok().and_then(|v| v["outcome"].as_str().map(str::to_owned)).unwrap_or_default(),
                current: e.current.as_ref().map(|c| serde_json::to_string_pretty(&c.state).unwrap_or_default()).unwrap_or_default(),
                diff: diff_view(&serde_json::to_string(&e.diff).unwrap_or_default()),
                e,
            })
            .collect(),
        replays,
        nav,
        request_id: id,
        restamp,
    })
}

async fn apply_form(
    State(state): State<DashboardState>,
    Path(id): Path<String>,
    basic: Option<axum::Extension<super::auth::BasicUser>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(resp) = replay_state(&state) {
        return resp;
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed form").into_response();
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let positions: Vec<u32> = pairs.iter().filter(|(n, _)| n == "position").filter_map(|(_, v)| v.parse().ok()).collect();
    let body = ApplyBody {
        idempotency_key: get("idempotency_key"),
        csrf_token: get("csrf_token"),
        restamp: get("restamp") == "1",
        positions: Some(positions),
    };
    match apply_checked(&state, &id, basic.as_deref(), &headers, body).await {
        Ok(r) => {
            let nav = Nav::new(&state.prefix, "requests", format!("Replay {}", r.replay_id));
            html(ResultPage { request_link: nav.request(&id), nav, request_id: id, sent: r.sent, host_http_status: r.host_http_status, links: r.links })
        }
        Err(resp) => resp,
    }
}
