//! Server-rendered inspection pages: overview, requests (list and detail), conflicts,
//! failures, one client's timeline, and a search box. Plain HTML from askama templates
//! (auto-escaped), no script and no inline style (the CSP forbids both), charts as inline
//! SVG, one stylesheet served from `/assets/app.css`. Every link starts with the state's
//! prefix. Bad input answers a 400 page, an unknown id a 404 page, ClickHouse trouble a
//! 503 page; user input never causes a 500.

pub mod queries;
mod svg;
pub mod text;
pub mod views;

use askama::Template;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};

use self::queries::{Cursor, Key, MutationKey, RequestFilter};
use self::views::*;
use super::metrics::{self, MetricsQuery, Window};
use super::{DashboardError, DashboardState};

/// The stylesheet of every page.
pub const CSS: &str = include_str!("../../../assets/app.css");

/// Requests per page of the requests list.
pub const REQUESTS_PAGE_SIZE: usize = 50;
/// Requests per page of a client's timeline.
pub const TIMELINE_PAGE_SIZE: usize = 25;
/// Mutations listed under each request of a client's timeline.
pub const TIMELINE_MUTATIONS: u64 = 20;
/// Conflicts per page.
pub const CONFLICTS_PAGE_SIZE: usize = 20;
/// Failure groups listed at most.
pub const FAILURE_GROUPS: u64 = 500;
/// Latest failures and conflicts on the overview.
pub const LATEST: u64 = 10;
/// Longest accepted text parameter (ids, model names).
pub const MAX_PARAM_CHARS: usize = 1024;

pub const KINDS: [&str; 2] = ["push", "pull"];
pub const OUTCOMES: [&str; 5] = ["ok", "partial", "rejected", "conflict", "error"];
const WINDOWS: [&str; 4] = ["1h", "6h", "24h", "7d"];

/// The pages' routes, relative to the dashboard root.
pub fn router() -> Router<DashboardState> {
    Router::new()
        .route("/", get(overview))
        .route("/requests", get(requests))
        .route("/requests/{request_id}", get(request_detail))
        .route("/conflicts", get(conflicts))
        .route("/failures", get(failures))
        .route("/clients/{client_id}", get(client))
        .route("/search", get(search))
        .route("/assets/app.css", get(css))
}

// ----- errors -----------------------------------------------------------------------------

/// Why a page could not be shown; rendered as an HTML page with the matching status.
#[derive(Debug)]
pub enum PageError {
    BadRequest(String),
    NotFound(String),
    Unavailable,
}

impl From<DashboardError> for PageError {
    fn from(e: DashboardError) -> Self {
        match e {
            DashboardError::BadRequest(m) => PageError::BadRequest(m),
            DashboardError::NotFound => PageError::NotFound("Nothing here.".into()),
            DashboardError::Store(e) => e.into(),
        }
    }
}

impl From<clickhouse::error::Error> for PageError {
    fn from(e: clickhouse::error::Error) -> Self {
        tracing::error!(target: "tether_pro::dashboard", error = %e, "dashboard page query failed");
        PageError::Unavailable
    }
}

fn bad(m: impl Into<String>) -> PageError {
    PageError::BadRequest(m.into())
}

type PageResult = Result<Response, PageError>;

fn prefix(state: &DashboardState) -> String {
    state.prefix.trim_end_matches('/').to_owned()
}

fn html<T: Template>(t: &T) -> PageResult {
    match t.render() {
        Ok(body) => Ok(Html(body).into_response()),
        Err(e) => {
            tracing::error!(target: "tether_pro::dashboard", error = %e, "page rendering failed");
            Ok((StatusCode::INTERNAL_SERVER_ERROR, "rendering failed").into_response())
        }
    }
}

fn respond(state: &DashboardState, r: PageResult) -> Response {
    let e = match r {
        Ok(resp) => return resp,
        Err(e) => e,
    };
    let (status, heading, message) = match e {
        PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
        PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
        PageError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ClickHouse is unavailable",
            "The captured data cannot be read right now. Your sync server is not affected; try again shortly.".into(),
        ),
    };
    let page = ErrorPage { nav: Nav::new(&prefix(state), "", heading), status: status.as_u16(), heading, message };
    let body = page.render().unwrap_or_else(|_| heading.to_owned());
    (status, Html(body)).into_response()
}

// ----- parameters -------------------------------------------------------------------------

/// The query string as pairs; the last non-empty value of a name wins, empty means absent
/// (a submitted form sends every field).
struct Params(Vec<(String, String)>);

impl Params {
    fn from(q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, PageError> {
        let Query(pairs) = q.map_err(|_| bad("The query string could not be read."))?;
        for (k, v) in &pairs {
            if v.chars().count() > MAX_PARAM_CHARS {
                return Err(bad(format!("The parameter {k} is too long.")));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim())
    }

    fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    fn one_of(&self, name: &str, allowed: &[&'static str]) -> Result<Option<&'static str>, PageError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => allowed.iter().find(|a| **a == v).copied().map(Some).ok_or_else(|| {
                bad(format!("The parameter {name} must be one of: {}.", allowed.join(", ")))
            }),
        }
    }

    /// An RFC 3339 time as microseconds (1970..2100, what the tables hold).
    fn time(&self, name: &str) -> Result<Option<i64>, PageError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let t = DateTime::parse_from_rfc3339(v)
            .map_err(|_| bad(format!("The parameter {name} must be an RFC 3339 time, e.g. 2026-05-18T10:00:00Z.")))?
            .with_timezone(&Utc);
        let lo = DateTime::<Utc>::UNIX_EPOCH;
        let hi = DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z").expect("constant").with_timezone(&Utc);
        if t < lo || t >= hi {
            return Err(bad(format!("The parameter {name} must be between 1970 and 2100.")));
        }
        Ok(Some(t.timestamp_micros()))
    }

    fn cursor(&self) -> Result<Option<Cursor>, PageError> {
        self.get("before").map(|v| decode_cursor(v).ok_or_else(|| bad("The parameter before is not a valid cursor."))).transpose()
    }

    /// `page`, from 1.
    fn page(&self) -> Result<u64, PageError> {
        match self.get("page") {
            None => Ok(1),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(n),
                _ => Err(bad("The parameter page must be a whole number from 1.")),
            },
        }
    }

    /// The window of the conflicts and failures pages: `window` (default 24h) or `from`/`to`.
    fn window(&self) -> Result<Window, PageError> {
        // Range-check the times first (the metrics parser accepts any RFC 3339 year).
        self.time("from")?;
        self.time("to")?;
        let q = MetricsQuery { window: self.owned("window"), from: self.owned("from"), to: self.owned("to") };
        Ok(q.window(Utc::now())?)
    }
}

fn window_label(p: &Params, w: &Window) -> String {
    match p.get("window") {
        Some(name) => format!("last {name}"),
        None if p.get("from").is_some() => format!("{} to {}", rfc3339(w.from), rfc3339(w.to)),
        None => "last 24h".into(),
    }
}

fn window_tabs(nav: &Nav, path: &str, p: &Params) -> Vec<Tab> {
    let current = if p.get("from").is_some() { "" } else { p.get("window").unwrap_or("24h") };
    WINDOWS
        .iter()
        .map(|w| Tab { label: w, href: format!("{}{path}{}", nav.prefix, query_string(&[("window", w)])), current: *w == current })
        .collect()
}

/// Opaque cursor: hex of the row's start (µs), its position and its request id.
pub fn encode_cursor(c: &Cursor) -> String {
    let mut bytes = Vec::with_capacity(12 + c.request_id.len());
    bytes.extend_from_slice(&c.started_us.to_be_bytes());
    bytes.extend_from_slice(&c.position.to_be_bytes());
    bytes.extend_from_slice(c.request_id.as_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(s: &str) -> Option<Cursor> {
    if !s.len().is_multiple_of(2) || s.len() < 26 || s.len() > 2 * (12 + 256) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16)).collect::<Result<_, _>>().ok()?;
    let started_us = i64::from_be_bytes(bytes[0..8].try_into().ok()?);
    let position = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
    let request_id = String::from_utf8(bytes[12..].to_vec()).ok()?;
    // Same bounds as a `from`/`to` parameter.
    if !(0..4_102_444_800_000_000).contains(&started_us) || request_id.is_empty() {
        return None;
    }
    Some(Cursor { started_us, request_id, position })
}

// ----- handlers ---------------------------------------------------------------------------

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], CSS)
}

async fn overview(State(state): State<DashboardState>, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let r = overview_page(&state, q).await;
    respond(&state, r)
}

async fn overview_page(state: &DashboardState, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> PageResult {
    let p = Params::from(q)?;
    let window_name = p.one_of("window", &WINDOWS)?;
    let window = MetricsQuery { window: window_name.map(str::to_owned), from: None, to: None }.window(Utc::now())?;
    let c = &state.client;
    let (m, failures, conflicts) = tokio::try_join!(
        metrics::compute(state, window),
        async { queries::latest_mutations(c, "rejected", window.from, LATEST).await.map_err(DashboardError::from) },
        async { queries::latest_mutations(c, "conflict", window.from, LATEST).await.map_err(DashboardError::from) },
    )?;
    let nav = Nav::new(&prefix(state), "overview", "Overview");
    let label = format!("last {}", window_name.unwrap_or("24h"));
    let headlines = vec![
        Headline { label: "Requests", value: m.totals.requests.to_string(), note: format!("{} pushes, {} pulls", m.totals.pushes, m.totals.pulls) },
        Headline { label: "Mutations", value: m.totals.mutations.to_string(), note: format!("{} applied, {} duplicates", m.totals.applied, m.totals.duplicates) },
        Headline { label: "Conflict rate", value: percent(m.rates.conflict_rate), note: format!("{} conflicts", m.totals.conflicts) },
        Headline { label: "Failure rate", value: percent(m.rates.failure_rate), note: format!("{} failed requests", m.totals.failed_requests) },
        Headline { label: "Push p95", value: format!("{:.1} ms", m.latency.push.p95_ms), note: format!("p50 {:.1} ms, p99 {:.1} ms", m.latency.push.p50_ms, m.latency.push.p99_ms) },
    ];
    let throughput: Vec<f64> = m.health.iter().map(|b| b.requests as f64).collect();
    let latency: Vec<f64> = m.health.iter().map(|b| b.p95_ms).collect();
    let top = |entries: &[metrics::TopEntry], link: &dyn Fn(&str) -> String| {
        entries
            .iter()
            .map(|e| TopLine { key: e.key.clone(), link: link(&e.key), mutations: e.mutations, conflicts: e.conflicts, rejections: e.rejections })
            .collect::<Vec<_>>()
    };
    let page = OverviewPage {
        window_label: label,
        windows: WINDOWS
            .iter()
            .map(|w| Tab {
                label: w,
                href: format!("{}{}", nav.home, query_string(&[("window", w)])),
                current: *w == window_name.unwrap_or("24h"),
            })
            .collect(),
        headlines,
        strip: svg::strip(&m.health),
        throughput: svg::spark(&throughput, "Requests per five minutes", ""),
        latency: svg::spark(&latency, "p95 latency per five minutes", " ms"),
        top_models: top(&m.top_models, &|k| format!("{}/requests{}", nav.prefix, query_string(&[("model", k)]))),
        top_clients: top(&m.top_clients, &|k| nav.client(k)),
        failures: failures.iter().map(|x| MutationLine::new(&nav, x)).collect(),
        conflicts: conflicts.iter().map(|x| MutationLine::new(&nav, x)).collect(),
        pipeline: state.capture.as_ref().map(|c| views::PipelineHealth::new(&c.totals())),
        nav,
    };
    html(&page)
}

async fn requests(State(state): State<DashboardState>, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let r = requests_page(&state, q).await;
    respond(&state, r)
}

async fn requests_page(state: &DashboardState, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> PageResult {
    let p = Params::from(q)?;
    let kind = p.one_of("kind", &KINDS)?;
    let outcome = p.one_of("outcome", &OUTCOMES)?;
    let filter = RequestFilter {
        kind: kind.map(str::to_owned),
        outcome: outcome.map(str::to_owned),
        client_id: p.owned("client_id"),
        model: p.owned("model"),
        mutation_id: p.owned("mutation_id"),
        entity_id: p.owned("entity_id"),
        from_us: p.time("from")?,
        to_us: p.time("to")?,
    };
    if let (Some(f), Some(t)) = (filter.from_us, filter.to_us)
        && f >= t
    {
        return Err(bad("The parameter from must be before to."));
    }
    let cursor = p.cursor()?;
    let mut rows = queries::list_requests(&state.client, &filter, cursor.as_ref(), REQUESTS_PAGE_SIZE as u64 + 1).await?;
    let nav = Nav::new(&prefix(state), "requests", "Requests");
    let keep: Vec<(&str, &str)> = [
        ("kind", kind.unwrap_or("")),
        ("outcome", outcome.unwrap_or("")),
        ("client_id", p.get("client_id").unwrap_or("")),
        ("model", p.get("model").unwrap_or("")),
        ("mutation_id", p.get("mutation_id").unwrap_or("")),
        ("entity_id", p.get("entity_id").unwrap_or("")),
        ("from", p.get("from").unwrap_or("")),
        ("to", p.get("to").unwrap_or("")),
    ]
    .into_iter()
    .collect();
    let older = if rows.len() > REQUESTS_PAGE_SIZE {
        rows.truncate(REQUESTS_PAGE_SIZE);
        let last = rows.last().expect("a full page");
        let cur = encode_cursor(&Cursor { started_us: last.started_us, request_id: last.request_id.clone(), position: 0 });
        let mut pairs = keep.clone();
        pairs.push(("before", &cur));
        Some(format!("{}/requests{}", nav.prefix, query_string(&pairs)))
    } else {
        None
    };
    let newest = cursor.is_some().then(|| format!("{}/requests{}", nav.prefix, query_string(&keep)));
    let form = FilterForm {
        kinds: choices(&KINDS, kind),
        outcomes: choices(&OUTCOMES, outcome),
        client_id: p.owned("client_id").unwrap_or_default(),
        model: p.owned("model").unwrap_or_default(),
        mutation_id: p.owned("mutation_id").unwrap_or_default(),
        entity_id: p.owned("entity_id").unwrap_or_default(),
        from: p.owned("from").unwrap_or_default(),
        to: p.owned("to").unwrap_or_default(),
        active: keep.iter().any(|(_, v)| !v.is_empty()),
    };
    let page = RequestsPage {
        rows: rows.iter().map(|r| RequestLine::new(&nav, r)).collect(),
        nav,
        form,
        older,
        newest,
        page_size: REQUESTS_PAGE_SIZE,
    };
    html(&page)
}

async fn request_detail(
    State(state): State<DashboardState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let r = request_page(&state, id, q).await;
    respond(&state, r)
}

/// Most of a rebuilt request body a page shows (the envelope fits the column cap; with its
/// payloads back it can be far larger). Each payload is also on its mutation's card.
const REBUILT_BODY_SHOWN_BYTES: usize = 1 << 20;

async fn request_page(
    state: &DashboardState,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> PageResult {
    let Path(id) = id.map_err(|_| bad("The request id could not be read."))?;
    let p = Params::from(q)?;
    let page = p.page()?;
    let not_found = || PageError::NotFound(format!("No captured request has the id {id}."));
    if id.is_empty() || id.chars().count() > MAX_PARAM_CHARS {
        return Err(not_found());
    }
    let c = &state.client;
    let r = queries::request(c, &id).await?.ok_or_else(not_found)?;
    let size = state.mutations_page_size.max(1) as u64;
    // The audit trail of replays of this request (readable even with replay switched off).
    let (replays, replayed_requests) = if r.kind == "push" {
        let links = crate::replay::links::for_request(c, &r.request_id).await.unwrap_or_default();
        let replayed: Vec<String> = c
            .query_raw("SELECT request_id FROM sync_requests WHERE replay_of = {id:String} ORDER BY started_at DESC LIMIT 50")
            .param("id", &r.request_id)
            .fetch_all()
            .await?;
        let nav_prefix = state.prefix.clone();
        (links, replayed.into_iter().map(|id| (format!("{nav_prefix}/requests/{}", views::enc(&id)), id)).collect())
    } else {
        (Vec::new(), Vec::new())
    };
    let total = queries::mutation_count(c, r.started_us, &r.request_id).await?;
    let pages = total.div_ceil(size).max(1);
    if page > pages {
        return Err(PageError::NotFound(format!("This request has {pages} page(s) of mutations, not {page}.")));
    }
    let first = (page - 1) * size;
    let mutations = if total == 0 { Vec::new() } else { queries::mutations_page(c, r.started_us, &r.request_id, first, size).await? };
    // Payloads are stored once, in the mutation rows: put them back into the body.
    let request_body = if r.request_body_moved.is_empty() || r.request_body_truncated {
        r.request_body.clone()
    } else {
        let payloads = queries::moved_payloads(c, r.started_us, &r.request_id, &r.request_body_moved).await?;
        let rebuilt = crate::pipeline::envelope::rebuild(&r.request_body, &r.request_body_moved, &payloads);
        let len = rebuilt.len() as u64;
        crate::pipeline::rows::cap_text(rebuilt, REBUILT_BODY_SHOWN_BYTES, len).0
    };
    let nav = Nav::new(&prefix(state), "requests", format!("Request {}", r.request_id));
    let page_link = |n: u64| format!("{}{}#mutations", nav.request(&r.request_id), query_string(&[("page", &n.to_string())]));
    let summary = queries::RequestSummary {
        request_id: r.request_id.clone(),
        kind: r.kind.clone(),
        client_id: r.client_id.clone(),
        client_version: r.client_version.clone(),
        started_us: r.started_us,
        duration_us: r.duration_us,
        http_status: r.http_status,
        outcome: r.outcome.clone(),
        mutation_count: r.mutation_count,
        applied_count: r.applied_count,
        rejected_count: r.rejected_count,
        conflict_count: r.conflict_count,
        duplicate_count: r.duplicate_count,
        snapshot_count: r.snapshot_count,
    };
    let view = RequestPage {
        r: RequestLine::new(&nav, &summary),
        reasons: r.reason_keys.iter().zip(&r.reason_counts).map(|(k, n)| ReasonCount { reason: k.clone(), count: *n }).collect(),
        has_more: r.has_more,
        trace_id: r.trace_id.clone(),
        span_id: r.span_id.clone(),
        replay_link: if r.replay_of.is_empty() { String::new() } else { nav.request(&r.replay_of) },
        replay_of: r.replay_of.clone(),
        replay_url: format!("{}/replay/{}", state.prefix, views::enc(&r.request_id)),
        replay_enabled: state.replay.is_some(),
        replays,
        replayed_requests,
        error: r.error.clone(),
        request_body: pretty(&request_body),
        request_size: bytes(r.request_body_bytes),
        request_truncated: r.request_body_truncated,
        response_body: pretty(&r.response_body),
        response_size: bytes(r.response_body_bytes),
        response_truncated: r.response_body_truncated,
        mutations: mutations.iter().map(|m| MutationView::new(&nav, m)).collect(),
        total,
        page,
        pages,
        first_position: first,
        last_position: (first + size).min(total).saturating_sub(1),
        prev: (page > 1).then(|| page_link(page - 1)),
        next: (page < pages).then(|| page_link(page + 1)),
        nav,
    };
    html(&view)
}

async fn conflicts(State(state): State<DashboardState>, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let r = conflicts_page(&state, q).await;
    respond(&state, r)
}

async fn conflicts_page(state: &DashboardState, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> PageResult {
    let p = Params::from(q)?;
    let w = p.window()?;
    let cursor = p.cursor()?;
    let c = &state.client;
    let (mut rows, by_model, by_client) = tokio::try_join!(
        queries::conflicts(c, w.from, w.to, cursor.as_ref(), CONFLICTS_PAGE_SIZE as u64 + 1),
        queries::outcome_counts_by(c, Key::Model, "conflict", w.from, w.to, 20),
        queries::outcome_counts_by(c, Key::Client, "conflict", w.from, w.to, 20),
    )?;
    let nav = Nav::new(&prefix(state), "conflicts", "Conflicts");
    let keep: Vec<(&str, &str)> =
        vec![("window", p.get("window").unwrap_or("")), ("from", p.get("from").unwrap_or("")), ("to", p.get("to").unwrap_or(""))];
    let older = if rows.len() > CONFLICTS_PAGE_SIZE {
        rows.truncate(CONFLICTS_PAGE_SIZE);
        let last = rows.last().expect("a full page");
        let cur = encode_cursor(&Cursor { started_us: last.started_us, request_id: last.request_id.clone(), position: last.position });
        let mut pairs = keep.clone();
        pairs.push(("before", &cur));
        Some(format!("{}/conflicts{}", nav.prefix, query_string(&pairs)))
    } else {
        None
    };
    let newest = cursor.is_some().then(|| format!("{}/conflicts{}", nav.prefix, query_string(&keep)));
    let conflicts = rows
        .iter()
        .map(|m| {
            let brief = queries::MutationBrief {
                request_id: m.request_id.clone(),
                started_us: m.started_us,
                position: m.position,
                mutation_id: m.mutation_id.clone(),
                entity_id: m.entity_id.clone(),
                model: m.model.clone(),
                operation: m.operation.clone(),
                client_id: m.client_id.clone(),
                outcome: m.outcome.clone(),
                reason: m.reason.clone(),
            };
            let full = MutationView::new(&nav, m);
            ConflictView {
                line: MutationLine::new(&nav, &brief),
                payload: full.payload,
                server_state: full.before,
                server_updated_at: full.server_updated_at,
                diff: full.diff,
            }
        })
        .collect();
    let page = ConflictsPage {
        window_label: window_label(&p, &w),
        windows: window_tabs(&nav, "/conflicts", &p),
        conflicts,
        by_model: by_model
            .into_iter()
            .map(|k| CountLine { link: format!("{}/requests{}", nav.prefix, query_string(&[("model", &k.key)])), key: k.key, n: k.n })
            .collect(),
        by_client: by_client.into_iter().map(|k| CountLine { link: nav.client(&k.key), key: k.key, n: k.n }).collect(),
        older,
        newest,
        nav,
    };
    html(&page)
}

async fn failures(State(state): State<DashboardState>, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let r = failures_page(&state, q).await;
    respond(&state, r)
}

async fn failures_page(state: &DashboardState, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> PageResult {
    let p = Params::from(q)?;
    let w = p.window()?;
    let groups = queries::failure_groups(&state.client, w.from, w.to, FAILURE_GROUPS).await?;
    let nav = Nav::new(&prefix(state), "failures", "Failures");
    let groups = groups
        .into_iter()
        .map(|g| FailureLine {
            client_link: nav.client(&g.client_id),
            first_seen: time_us(g.first_us),
            last_seen: time_us(g.last_us),
            example_link: nav.request(&g.example_request_id),
            drill_link: format!("{}/requests{}", nav.prefix, query_string(&[("client_id", &g.client_id), ("model", &g.model)])),
            example_mutation_id: g.example_mutation_id,
            reason: g.reason,
            model: g.model,
            client_id: g.client_id,
            failures: g.failures,
        })
        .collect();
    let page = FailuresPage {
        window_label: window_label(&p, &w),
        windows: window_tabs(&nav, "/failures", &p),
        groups,
        limit: FAILURE_GROUPS,
        nav,
    };
    html(&page)
}

async fn client(
    State(state): State<DashboardState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let r = client_page(&state, id, q).await;
    respond(&state, r)
}

async fn client_page(
    state: &DashboardState,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> PageResult {
    let Path(client_id) = id.map_err(|_| bad("The client id could not be read."))?;
    if client_id.chars().count() > MAX_PARAM_CHARS {
        return Err(bad("The client id is too long."));
    }
    let p = Params::from(q)?;
    let (from_us, to_us) = (p.time("from")?, p.time("to")?);
    if let (Some(f), Some(t)) = (from_us, to_us)
        && f >= t
    {
        return Err(bad("The parameter from must be before to."));
    }
    let cursor = p.cursor()?;
    let c = &state.client;
    let mut rows = queries::client_requests(c, &client_id, from_us, to_us, cursor.as_ref(), TIMELINE_PAGE_SIZE as u64 + 1).await?;
    if rows.is_empty() && cursor.is_none() && from_us.is_none() && to_us.is_none() {
        return Err(PageError::NotFound(format!("No captured request comes from the client {client_id}.")));
    }
    let more = rows.len() > TIMELINE_PAGE_SIZE;
    rows.truncate(TIMELINE_PAGE_SIZE);
    let muts = queries::mutations_of(c, &client_id, &rows, TIMELINE_MUTATIONS).await?;
    let nav = Nav::new(&prefix(state), "", format!("Client {client_id}"));
    let keep: Vec<(&str, &str)> = vec![("from", p.get("from").unwrap_or("")), ("to", p.get("to").unwrap_or(""))];
    let older = more.then(|| {
        let last = rows.last().expect("a full page");
        let cur = encode_cursor(&Cursor { started_us: last.started_us, request_id: last.request_id.clone(), position: 0 });
        let mut pairs = keep.clone();
        pairs.push(("before", &cur));
        format!("{}{}", nav.client(&client_id), query_string(&pairs))
    });
    let newest = cursor.is_some().then(|| format!("{}{}", nav.client(&client_id), query_string(&keep)));
    let entries = rows
        .iter()
        .map(|r| {
            let mutations: Vec<MutationLine> =
                muts.iter().filter(|m| m.request_id == r.request_id).map(|m| MutationLine::new(&nav, m)).collect();
            TimelineEntry {
                more: u64::from(r.mutation_count).saturating_sub(mutations.len() as u64),
                r: RequestLine::new(&nav, r),
                mutations,
            }
        })
        .collect();
    let page = ClientPage {
        self_link: nav.client(&client_id),
        requests_link: format!("{}/requests{}", nav.prefix, query_string(&[("client_id", &client_id)])),
        client_id,
        entries,
        older,
        newest,
        from: p.owned("from").unwrap_or_default(),
        to: p.owned("to").unwrap_or_default(),
        nav,
    };
    html(&page)
}

/// The search box: a request id opens that request; a mutation or entity id lists the
/// requests that carry it; anything else is taken as a client id.
async fn search(State(state): State<DashboardState>, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let r = search_target(&state, q).await;
    respond(&state, r)
}

async fn search_target(state: &DashboardState, q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> PageResult {
    let p = Params::from(q)?;
    let base = prefix(state);
    let Some(term) = p.get("q") else { return Ok(Redirect::to(&format!("{base}/requests")).into_response()) };
    let c = &state.client;
    let to = |name: &str| Redirect::to(&format!("{base}/requests{}", query_string(&[(name, term)]))).into_response();
    if p.get("by") == Some("client") {
        return Ok(to("client_id"));
    }
    if queries::request_exists(c, term).await? {
        return Ok(Redirect::to(&format!("{base}/requests/{}", enc(term))).into_response());
    }
    if queries::mutation_exists(c, MutationKey::MutationId, term).await? {
        return Ok(to("mutation_id"));
    }
    if queries::mutation_exists(c, MutationKey::EntityId, term).await? {
        return Ok(to("entity_id"));
    }
    Ok(to("client_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor { started_us: 1_747_562_400_123_456, request_id: "01JAAAAAAAAAAAAAAAAAAAAAA1".into(), position: 7 };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        for bad in ["", "zz", "abc", &"0".repeat(25), &"f".repeat(40), "'; DROP TABLE sync_requests; --"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
