//! `/records/{model}/{entity_id}`: how a record got here. Every captured mutation of it across
//! clients, in the order the server processed them, each conflict explained; a trailing
//! `.json` on the entity id gives the same as JSON (`RecordHistory`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::IntoResponse;

use super::params::Params;
use super::views::*;
use super::{MAX_PARAM_CHARS, PageError, PageResult, bad, html, prefix};
use crate::dashboard::history::{self, HistoryEntry, RecordHistory};
use crate::dashboard::{DashboardError, DashboardState};
use crate::store::queries::HistoryPoint;

/// The JSON form of the path route; an entity id that itself ends in `.json` takes the query
/// form (`by_query`).
const JSON_SUFFIX: &str = ".json";

pub(super) async fn record(State(state): State<DashboardState>, path: Result<Path<(String, String)>, PathRejection>, p: Params) -> PageResult {
    let Path((model, entity)) = path.map_err(|_| bad("The model or entity id could not be read."))?;
    match entity.strip_suffix(JSON_SUFFIX) {
        Some(entity_id) => json(&state, &model, entity_id, &p).await,
        None => page(&state, model, entity, &p).await,
    }
}

/// `/record?model=…&entity_id=…[&format=json]`: the same for any id, including those a path
/// cannot carry (`.`, `..`, or ending in `.json`); [`Nav::record`] links there for them.
pub(super) async fn by_query(State(state): State<DashboardState>, p: Params) -> PageResult {
    let (Some(model), Some(entity)) = (p.exact("model").map(str::to_owned), p.exact("entity_id").map(str::to_owned)) else {
        return Err(bad("The parameters model and entity_id are required."));
    };
    match p.one_of("format", &["html", "json"])? {
        Some("json") => json(&state, &model, &entity, &p).await,
        _ => page(&state, model, entity, &p).await,
    }
}

async fn json(state: &DashboardState, model: &str, entity_id: &str, p: &Params) -> PageResult {
    Ok(match load(state, model, entity_id, p).await {
        Ok((h, _)) => Json(h).into_response(),
        Err(PageError::BadRequest(m)) => DashboardError::BadRequest(m).into_response(),
        Err(PageError::NotFound(_)) => DashboardError::NotFound.into_response(),
        Err(PageError::Unavailable) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "ClickHouse is unavailable"}))).into_response(),
    })
}

async fn page(state: &DashboardState, model: String, entity: String, p: &Params) -> PageResult {
    let (h, points) = load(state, &model, &entity, p).await?;
    let mut nav = Nav::new(&prefix(state), "", format!("{model} {entity}"));
    nav.trace_url = state.trace_url.clone();
    let self_link = nav.record(&model, &entity);
    let json_link = nav.record_json(&model, &entity);
    let page = RecordPage {
        json_link,
        next: h.next_cursor.as_ref().map(|c| format!("{self_link}{}{}", if self_link.contains('?') { "&" } else { "?" }, query_string(&[("after", c)]).trim_start_matches('?'))),
        first: p.get("after").is_some().then(|| self_link.clone()),
        strip: timeline(&points, h.counts.mutations),
        current_state: h.current_state.as_ref().map(|v| serde_json::to_string_pretty(v).unwrap_or_default()),
        current_state_error: h.current_state_error.clone(),
        lookup: state.replay.is_some(),
        entries: h.mutations.iter().map(|e| HistoryLine::new(&nav, e)).collect(),
        counts: h.counts.clone(),
        model,
        entity_id: entity,
        nav,
    };
    html(&page)
}

async fn load(state: &DashboardState, model: &str, entity_id: &str, p: &Params) -> Result<(RecordHistory, Vec<HistoryPoint>), PageError> {
    if model.is_empty() || entity_id.is_empty() || model.chars().count() > MAX_PARAM_CHARS || entity_id.chars().count() > MAX_PARAM_CHARS {
        return Err(bad("The model and entity id must be 1 to 1024 characters."));
    }
    let after = p.cursor_named("after")?;
    let (mut h, points) = history::load(&state.client, model, entity_id, after.as_ref()).await?;
    if h.counts.mutations == 0 {
        return Err(PageError::NotFound(format!("No captured mutation touches the record {model} {entity_id}.")));
    }
    if let Some(rs) = &state.replay {
        match rs.replayer.current_state(model, entity_id).await {
            Ok(v) => h.current_state = v,
            Err(e) => h.current_state_error = Some(e.to_string()),
        }
    }
    Ok((h, points))
}

/// Lanes of the timeline strip: one per client (the first `MAX_LANES`, the rest share one).
const MAX_LANES: usize = 8;
const STRIP_WIDTH: u32 = 720;
const LANE_HEIGHT: u32 = 14;

fn timeline(points: &[HistoryPoint], total: u64) -> TimelineStrip {
    let mut lanes: Vec<String> = Vec::new();
    for p in points {
        if !lanes.contains(&p.client_id) && lanes.len() < MAX_LANES {
            lanes.push(p.client_id.clone());
        }
    }
    let other = points.iter().any(|p| !lanes.contains(&p.client_id));
    let (lo, hi) = (points.first().map_or(0, |p| p.started_us), points.last().map_or(0, |p| p.started_us));
    let span = (hi - lo).max(1) as f64;
    let dots = points
        .iter()
        .map(|p| {
            let lane = lanes.iter().position(|c| *c == p.client_id).unwrap_or(lanes.len());
            TimelineDot {
                x: 8 + ((p.started_us - lo) as f64 / span * f64::from(STRIP_WIDTH - 16)).round() as u32,
                y: lane as u32 * LANE_HEIGHT + LANE_HEIGHT / 2,
                outcome: p.outcome.clone(),
                title: format!("{} · {} · {}", time_us(p.started_us), p.client_id, p.outcome),
            }
        })
        .collect();
    let mut labels: Vec<TimelineLane> = lanes.iter().enumerate().map(|(i, c)| TimelineLane { y: i as u32 * LANE_HEIGHT + LANE_HEIGHT - 3, client_id: c.clone() }).collect();
    if other {
        labels.push(TimelineLane { y: lanes.len() as u32 * LANE_HEIGHT + LANE_HEIGHT - 3, client_id: "other clients".into() });
    }
    TimelineStrip {
        height: labels.len() as u32 * LANE_HEIGHT,
        width: STRIP_WIDTH,
        dots,
        lanes: labels,
        first: points.first().map(|p| time_us(p.started_us)).unwrap_or_default(),
        last: points.last().map(|p| time_us(p.started_us)).unwrap_or_default(),
        shown: points.len() as u64,
        total,
    }
}

/// One history entry as the page shows it.
#[derive(Debug, Clone)]
pub struct HistoryLine {
    pub e: HistoryEntry,
    pub request_link: String,
    pub client_link: String,
    pub client_time: String,
    pub server_time: String,
    /// The delay in words, `ahead` when negative.
    pub delay: String,
    pub diff: DiffView,
    pub explanation: Option<ExplanationView>,
    pub trace_link: Option<String>,
}

impl HistoryLine {
    fn new(nav: &Nav, e: &HistoryEntry) -> Self {
        HistoryLine {
            request_link: format!("{}#m-{}", nav.request(&e.request_id), e.position),
            client_link: nav.client(&e.client_id),
            client_time: e.client_time.clone().unwrap_or_else(|| format!("invalid: {}", e.client_time_raw)),
            server_time: e.server_time.clone(),
            delay: e.delay_ms.map_or_else(String::new, |d| {
                if d < 0 { format!("{} before it was made (clock ahead)", history::span_words(d)) } else { format!("{} later", history::span_words(d)) }
            }),
            diff: diff_view(&e.diff.as_ref().map(|d| d.to_string()).unwrap_or_default()),
            explanation: e.conflict.as_ref().map(|c| ExplanationView::new(nav, c)),
            trace_link: e.trace_id.as_deref().and_then(|t| nav.trace(t)),
            e: e.clone(),
        }
    }
}
