//! `/conflicts`: conflicts in a window, each with the payload, the server's state and the
//! diff between them, plus counts by model and by client.

use axum::extract::State;

use super::cursor::encode_cursor;
use super::params::{Params, window_label, window_tabs};
use super::queries::{self, Cursor, Key};
use super::views::*;
use super::{CONFLICTS_PAGE_SIZE, PageResult, html, prefix};
use crate::dashboard::DashboardState;
use crate::store::schema::MutationOutcome;

pub(super) async fn conflicts(State(state): State<DashboardState>, p: Params) -> PageResult {
    let w = p.window()?;
    let cursor = p.cursor()?;
    let c = &state.client;
    let (mut rows, by_model, by_client) = tokio::try_join!(
        queries::conflicts(c, w.from, w.to, cursor.as_ref(), CONFLICTS_PAGE_SIZE as u64 + 1),
        queries::outcome_counts_by(c, Key::Model, MutationOutcome::Conflict, w.from, w.to, 20),
        queries::outcome_counts_by(c, Key::Client, MutationOutcome::Conflict, w.from, w.to, 20),
    )?;
    let nav = Nav::new(&prefix(&state), "conflicts", "Conflicts");
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
    let mut explanations = ExplanationView::for_conflicts(c, &nav, &rows).await?;
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
                explanation: explanations
                    .iter()
                    .position(|(id, pos, _)| *id == m.request_id && *pos == m.position)
                    .map(|i| explanations.swap_remove(i).2),
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

