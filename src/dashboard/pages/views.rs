//! What the templates show: askama templates (auto-escaped HTML) over plain view data, and
//! the formatting that turns rows into it. Nothing here queries.

// Template filters (`|user`, `|user_block`) are looked up here by the generated code.
use crate::store::schema::MutationOutcome;
use super::text::filters;
use askama::Template;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::queries::{self, MutationBrief, RequestSummary};
use super::svg::{Spark, Strip};
use crate::pipeline::diff::{Change, ChangeKind, PathSegment};

// ----- formatting -------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986 unreserved characters (for a path segment or a
/// query value).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the non-empty pairs (empty string when none).
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", enc(v))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

pub fn time_us(us: i64) -> String {
    DateTime::from_timestamp_micros(us).map_or_else(|| us.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
}

pub fn time_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
}

/// A mutation's client time; a missing or invalid timestamp says so, with what was sent.
pub fn client_time(ms: Option<i64>, raw: &str) -> String {
    match ms {
        Some(ms) => time_ms(ms),
        None if raw.is_empty() => "invalid timestamp (missing)".to_owned(),
        None => format!("invalid timestamp ({raw})"),
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn duration_us(us: u64) -> String {
    if us >= 1_000_000 { format!("{:.2} s", us as f64 / 1e6) } else { format!("{:.1} ms", us as f64 / 1e3) }
}

pub fn percent(r: f64) -> String {
    if r.is_finite() { format!("{:.2}%", r * 100.0) } else { "0.00%".into() }
}

pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Pretty-printed JSON, or the text as stored when it is not JSON (truncated bodies).
pub fn pretty(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_owned()),
        Err(_) => text.to_owned(),
    }
}

fn compact(v: &Option<Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::String(s)) => serde_json::to_string(s).unwrap_or_else(|_| s.clone()),
        Some(v) => v.to_string(),
    }
}

/// `["metadata","checklist",0,"done"]` as `metadata.checklist[0].done`.
pub fn join_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
            PathSegment::Key(k) => {
                let plain = !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                } else {
                    out.push_str(&format!("[{}]", serde_json::to_string(k).unwrap_or_default()));
                }
            }
        }
    }
    if out.is_empty() { "(root)".into() } else { out }
}

#[derive(Debug, Clone)]
pub struct DiffRow {
    /// `added`, `removed` or `changed` (the row's class).
    pub class: &'static str,
    pub path: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, Default)]
pub struct DiffView {
    pub rows: Vec<DiffRow>,
    /// The stored text when it could not be read as a diff (cut at the column cap).
    pub raw: String,
}

pub fn diff_view(text: &str) -> DiffView {
    if text.is_empty() || text == "[]" {
        return DiffView::default();
    }
    match serde_json::from_str::<Vec<Change>>(text) {
        Ok(changes) => DiffView {
            rows: changes
                .iter()
                .map(|c| DiffRow {
                    class: match c.change {
                        ChangeKind::Added => "added",
                        ChangeKind::Removed => "removed",
                        ChangeKind::Changed => "changed",
                    },
                    path: join_path(&c.path),
                    old: compact(&c.old),
                    new: compact(&c.new),
                })
                .collect(),
            raw: String::new(),
        },
        Err(_) => DiffView { rows: Vec::new(), raw: text.to_owned() },
    }
}

/// A validation message list of one field.
#[derive(Debug, Clone)]
pub struct FieldMessages {
    pub field: String,
    pub messages: Vec<String>,
}

/// `reason_data.messages` (`{field: [message]}`) as a list.
pub fn messages(reason_data: &str) -> Vec<FieldMessages> {
    let Ok(v) = serde_json::from_str::<Value>(reason_data) else { return Vec::new() };
    let Some(m) = v.get("messages").and_then(Value::as_object) else { return Vec::new() };
    m.iter()
        .map(|(field, list)| FieldMessages {
            field: field.clone(),
            messages: match list {
                Value::Array(a) => a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect(),
                Value::String(s) => vec![s.clone()],
                other => vec![other.to_string()],
            },
        })
        .collect()
}

fn reason_string(reason_data: &str, key: &str) -> String {
    serde_json::from_str::<Value>(reason_data)
        .ok()
        .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

// ----- shared pieces ----------------------------------------------------------------------

/// The layout's data: where links start, which nav entry is current, the page title.
#[derive(Debug, Clone)]
pub struct Nav {
    pub prefix: String,
    /// The overview's address: the prefix itself (a nested `/` matches no trailing slash).
    pub home: String,
    pub active: &'static str,
    pub title: String,
    /// `serve.trace_url`, for pages that link trace ids.
    pub trace_url: Option<String>,
}

impl Nav {
    pub fn new(prefix: &str, active: &'static str, title: impl Into<String>) -> Self {
        let home = if prefix.is_empty() { "/".to_owned() } else { prefix.to_owned() };
        Nav { prefix: prefix.to_owned(), home, active, title: title.into(), trace_url: None }
    }
    pub fn request(&self, id: &str) -> String {
        format!("{}/requests/{}", self.prefix, enc(id))
    }
    pub fn client(&self, id: &str) -> String {
        format!("{}/clients/{}", self.prefix, enc(id))
    }
    /// Where `trace_id` links to (`serve.trace_url`), when configured and the id is one.
    pub fn trace(&self, trace_id: &str) -> Option<String> {
        let template = self.trace_url.as_deref()?;
        (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| template.replace("{trace_id}", trace_id))
    }
    /// A record's history page: `/records/{model}/{entity_id}`, or `/record?…` for ids a path
    /// segment cannot carry (`.` and `..` are resolved away by clients; a trailing `.json`
    /// selects the JSON form).
    pub fn record(&self, model: &str, entity_id: &str) -> String {
        if path_safe(model) && path_safe(entity_id) {
            format!("{}/records/{}/{}", self.prefix, enc(model), enc(entity_id))
        } else {
            format!("{}/record{}", self.prefix, query_string(&[("model", model), ("entity_id", entity_id)]))
        }
    }
    /// The same as JSON.
    pub fn record_json(&self, model: &str, entity_id: &str) -> String {
        if path_safe(model) && path_safe(entity_id) {
            format!("{}/records/{}/{}.json", self.prefix, enc(model), enc(entity_id))
        } else {
            format!("{}/record{}", self.prefix, query_string(&[("model", model), ("entity_id", entity_id), ("format", "json")]))
        }
    }
}

/// A request as one line of a list.
#[derive(Debug, Clone)]
pub struct RequestLine {
    pub id: String,
    pub link: String,
    pub when: String,
    pub kind: String,
    pub client_id: String,
    pub client_link: String,
    pub version: String,
    pub status: u16,
    pub outcome: String,
    pub duration: String,
    pub mutations: u32,
    pub applied: u32,
    pub rejected: u32,
    pub conflicts: u32,
    pub duplicates: u32,
    pub snapshots: u32,
    pub is_push: bool,
}

impl RequestLine {
    pub fn new(nav: &Nav, r: &RequestSummary) -> Self {
        RequestLine {
            id: r.request_id.clone(),
            link: nav.request(&r.request_id),
            when: time_us(r.started_us),
            kind: r.kind.clone(),
            client_id: r.client_id.clone(),
            client_link: nav.client(&r.client_id),
            version: r.client_version.clone(),
            status: r.http_status,
            outcome: r.outcome.clone(),
            duration: duration_us(r.duration_us),
            mutations: r.mutation_count,
            applied: r.applied_count,
            rejected: r.rejected_count,
            conflicts: r.conflict_count,
            duplicates: r.duplicate_count,
            snapshots: r.snapshot_count,
            is_push: r.kind == "push",
        }
    }
}

/// A mutation as one line of a short list.
#[derive(Debug, Clone)]
pub struct MutationLine {
    pub when: String,
    pub request_link: String,
    pub request_id: String,
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    pub client_id: String,
    pub client_link: String,
    /// The record's history.
    pub record_link: String,
    pub outcome: String,
    pub reason: String,
}

impl MutationLine {
    pub fn new(nav: &Nav, m: &MutationBrief) -> Self {
        MutationLine {
            when: time_us(m.started_us),
            request_link: format!("{}#m-{}", nav.request(&m.request_id), m.position),
            request_id: m.request_id.clone(),
            position: m.position,
            mutation_id: m.mutation_id.clone(),
            entity_id: m.entity_id.clone(),
            model: m.model.clone(),
            operation: m.operation.clone(),
            client_id: m.client_id.clone(),
            client_link: nav.client(&m.client_id),
            record_link: nav.record(&m.model, &m.entity_id),
            outcome: m.outcome.clone(),
            reason: m.reason.clone(),
        }
    }
}

/// A choice of a `<select>`.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: &'static str,
    pub selected: bool,
}

pub fn choices(values: &[&'static str], current: Option<&str>) -> Vec<Choice> {
    values.iter().map(|v| Choice { value: v, selected: current == Some(*v) }).collect()
}

/// A link among alternatives (time windows).
#[derive(Debug, Clone)]
pub struct Tab {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

// ----- pages ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Headline {
    pub label: &'static str,
    pub value: String,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct TopLine {
    pub key: String,
    pub link: String,
    pub mutations: u64,
    pub conflicts: u64,
    pub rejections: u64,
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub nav: Nav,
    pub window_label: String,
    pub windows: Vec<Tab>,
    pub headlines: Vec<Headline>,
    pub strip: Strip,
    pub throughput: Spark,
    pub latency: Spark,
    pub top_models: Vec<TopLine>,
    pub top_clients: Vec<TopLine>,
    /// Clients with timestamps in the future or invalid ones: (client, link, future, invalid,
    /// furthest ahead).
    pub suspicious_clocks: Vec<(String, String, u64, u64, String)>,
    pub failures: Vec<MutationLine>,
    pub conflicts: Vec<MutationLine>,
    /// The capture pipeline's health, when the dashboard runs in the capturing process.
    pub pipeline: Option<PipelineHealth>,
}

/// Where this process's captured requests are (since it started): the identity
/// `captured = written + spooled + dropped + in memory`.
#[derive(Debug, Clone)]
pub struct PipelineHealth {
    pub captured: u64,
    pub written: u64,
    pub spooled: u64,
    pub dropped: u64,
    /// Every drop reason, with its count (zeros included, so the list never changes shape).
    pub reasons: Vec<(&'static str, u64)>,
    /// Captured but not yet in one of the three (the queue and the batches in memory).
    pub in_memory: u64,
    pub insert_failures: u64,
    /// RFC 3339, or "none yet".
    pub last_insert: String,
}

impl PipelineHealth {
    pub fn new(t: &crate::capture::CaptureTotals) -> PipelineHealth {
        let (written, spooled, dropped) = t.accounted();
        let last_insert = match chrono::DateTime::from_timestamp_millis(t.last_insert_unix_ms as i64) {
            Some(at) if t.last_insert_unix_ms > 0 => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            _ => "none yet".to_owned(),
        };
        PipelineHealth {
            captured: t.captured(),
            written,
            spooled,
            dropped,
            reasons: t.dropped_by_reason().to_vec(),
            in_memory: t.captured().saturating_sub(written + spooled + dropped),
            insert_failures: t.insert_failures,
            last_insert,
        }
    }
}

/// The filter form's current values.
#[derive(Debug, Clone, Default)]
pub struct FilterForm {
    pub kinds: Vec<Choice>,
    pub outcomes: Vec<Choice>,
    pub client_id: String,
    pub model: String,
    pub mutation_id: String,
    pub entity_id: String,
    pub from: String,
    pub to: String,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "requests.html")]
pub struct RequestsPage {
    pub nav: Nav,
    pub form: FilterForm,
    pub rows: Vec<RequestLine>,
    pub older: Option<String>,
    pub newest: Option<String>,
    pub page_size: usize,
}

#[derive(Debug, Clone)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u32,
}

/// One mutation in full.
#[derive(Debug, Clone)]
pub struct MutationView {
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub entity_link: String,
    pub model: String,
    pub operation: String,
    pub client_time: String,
    pub version: u64,
    pub outcome: String,
    pub reason: String,
    pub messages: Vec<FieldMessages>,
    pub server_updated_at: String,
    pub payload: String,
    pub before: String,
    pub after: String,
    pub has_state: bool,
    /// False: `capture.applied` kept this applied mutation without payload, states or diff.
    pub detail_kept: bool,
    pub diff: DiffView,
    /// Diffs exist for applied mutations (before -> after) and conflicts (server -> client).
    pub show_diff: bool,
    /// For a conflict: who won and why (set by the page, one query for all of them).
    pub explanation: Option<ExplanationView>,
}

impl MutationView {
    pub fn new(nav: &Nav, m: &queries::Mutation) -> Self {
        MutationView {
            position: m.position,
            mutation_id: m.mutation_id.clone(),
            entity_id: m.entity_id.clone(),
            entity_link: nav.record(&m.model, &m.entity_id),
            model: m.model.clone(),
            operation: m.operation.clone(),
            client_time: client_time(m.client_ts_ms, &m.client_ts_raw),
            version: m.version,
            outcome: m.outcome.clone(),
            reason: m.reason.clone(),
            messages: messages(&m.reason_data),
            server_updated_at: reason_string(&m.reason_data, "server_updated_at"),
            payload: pretty(&m.payload),
            before: pretty(&m.state_before),
            after: pretty(&m.state_after),
            has_state: m.has_state,
            detail_kept: m.detail_kept,
            diff: diff_view(&m.diff),
            explanation: None,
            show_diff: m.detail_kept && (matches!(MutationOutcome::parse(&m.outcome), Some(MutationOutcome::Applied | MutationOutcome::Conflict)) || !matches!(m.diff.as_str(), "" | "[]")),
        }
    }
}

#[derive(Template)]
#[template(path = "request.html")]
pub struct RequestPage {
    pub nav: Nav,
    pub r: RequestLine,
    pub reasons: Vec<ReasonCount>,
    pub has_more: bool,
    pub trace_id: String,
    pub trace_link: Option<String>,
    pub span_id: String,
    pub replay_of: String,
    pub replay_link: String,
    /// The replay preview's URL when replay is enabled and this is a push.
    pub replay_url: String,
    pub replay_enabled: bool,
    /// Replays of this request: their audit links, and the captured replayed requests.
    pub replays: Vec<crate::replay::LinkRow>,
    pub replayed_requests: Vec<(String, String)>,
    pub error: String,
    pub request_body: String,
    pub request_size: String,
    pub request_truncated: bool,
    pub response_body: String,
    pub response_size: String,
    pub response_truncated: bool,
    pub mutations: Vec<MutationView>,
    pub total: u64,
    pub page: u64,
    pub pages: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

/// One conflict: the client's payload against the server's state.
#[derive(Debug, Clone)]
pub struct ConflictView {
    pub line: MutationLine,
    pub payload: String,
    pub server_state: String,
    pub server_updated_at: String,
    pub diff: DiffView,
    pub explanation: Option<ExplanationView>,
}

#[derive(Debug, Clone)]
pub struct CountLine {
    pub key: String,
    pub link: String,
    pub n: u64,
}

#[derive(Template)]
#[template(path = "conflicts.html")]
pub struct ConflictsPage {
    pub nav: Nav,
    pub window_label: String,
    pub windows: Vec<Tab>,
    pub conflicts: Vec<ConflictView>,
    pub by_model: Vec<CountLine>,
    pub by_client: Vec<CountLine>,
    pub older: Option<String>,
    pub newest: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FailureLine {
    pub reason: String,
    pub model: String,
    pub client_id: String,
    pub client_link: String,
    pub failures: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub example_mutation_id: String,
    pub example_link: String,
    pub drill_link: String,
}

#[derive(Template)]
#[template(path = "failures.html")]
pub struct FailuresPage {
    pub nav: Nav,
    pub window_label: String,
    pub windows: Vec<Tab>,
    pub groups: Vec<FailureLine>,
    pub limit: u64,
}

#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub r: RequestLine,
    pub mutations: Vec<MutationLine>,
    /// Mutations of the push not listed here (see the request's page).
    pub more: u64,
}

#[derive(Template)]
#[template(path = "client.html")]
pub struct ClientPage {
    pub nav: Nav,
    pub client_id: String,
    pub self_link: String,
    pub requests_link: String,
    pub entries: Vec<TimelineEntry>,
    pub older: Option<String>,
    pub newest: Option<String>,
    pub from: String,
    pub to: String,
    /// The client's clock over the range: counts, and delays in words.
    pub clock: queries::ClientClock,
    pub median_delay: String,
    pub max_delay: String,
    pub furthest_ahead: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub nav: Nav,
    pub status: u16,
    pub heading: &'static str,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_accessors() {
        let p = vec![
            PathSegment::Key("metadata".into()),
            PathSegment::Key("checklist".into()),
            PathSegment::Index(0),
            PathSegment::Key("done".into()),
        ];
        assert_eq!(join_path(&p), "metadata.checklist[0].done");
        assert_eq!(join_path(&[PathSegment::Key("a.b".into())]), "[\"a.b\"]");
        assert_eq!(join_path(&[]), "(root)");
    }

    #[test]
    fn encoding_keeps_only_unreserved() {
        assert_eq!(enc("a b/<c>&'\"é"), "a%20b%2F%3Cc%3E%26%27%22%C3%A9");
        assert_eq!(query_string(&[("a", "1"), ("b", ""), ("c", "x y")]), "?a=1&c=x%20y");
    }

    #[test]
    fn diffs_and_messages_read_the_stored_json() {
        let d = diff_view(r#"[{"path":["title"],"change":"changed","old":"a","new":"b"},{"path":["tags",1],"change":"added","new":"x"}]"#);
        assert_eq!(d.rows.len(), 2);
        assert_eq!((d.rows[0].class, d.rows[0].path.as_str(), d.rows[0].old.as_str()), ("changed", "title", "\"a\""));
        assert_eq!((d.rows[1].class, d.rows[1].path.as_str(), d.rows[1].old.as_str()), ("added", "tags[1]", ""));
        assert!(!diff_view("[{\"path\":[\"ti…[truncated").raw.is_empty());
        let m = messages(r#"{"messages":{"title":["The title field is required."]}}"#);
        assert_eq!(m[0].field, "title");
        assert_eq!(m[0].messages, vec!["The title field is required."]);
    }
}

/// Whether `s` can be a path segment of a record link as it is.
fn path_safe(s: &str) -> bool {
    !matches!(s, "." | "..") && !s.ends_with(".json")
}

/// One dot of a record's timeline strip.
#[derive(Debug, Clone)]
pub struct TimelineDot {
    pub x: u32,
    pub y: u32,
    pub outcome: String,
    pub title: String,
}

/// One client's lane label.
#[derive(Debug, Clone)]
pub struct TimelineLane {
    pub y: u32,
    pub client_id: String,
}

/// Which client wrote a record when, and where conflicts and rejections happened.
#[derive(Debug, Clone)]
pub struct TimelineStrip {
    pub width: u32,
    pub height: u32,
    pub dots: Vec<TimelineDot>,
    pub lanes: Vec<TimelineLane>,
    pub first: String,
    pub last: String,
    /// Mutations drawn (the first ones) and in the history.
    pub shown: u64,
    pub total: u64,
}

#[derive(Template)]
#[template(path = "record.html")]
pub struct RecordPage {
    pub nav: Nav,
    pub model: String,
    pub entity_id: String,
    pub counts: crate::dashboard::history::HistoryCounts,
    pub strip: TimelineStrip,
    /// Whether the host offers a state lookup (replay is configured).
    pub lookup: bool,
    pub current_state: Option<String>,
    pub current_state_error: Option<String>,
    pub entries: Vec<super::record::HistoryLine>,
    pub json_link: String,
    pub next: Option<String>,
    pub first: Option<String>,
}

/// A conflict's explanation as the pages show it (request, conflicts and record pages).
#[derive(Debug, Clone)]
pub struct ExplanationView {
    pub summary: String,
    /// The winning write: its mutation id, link, client and client link, and what it changed.
    pub winner: Option<(String, String, String, String)>,
    pub winner_diff: Option<DiffView>,
}

impl ExplanationView {
    pub fn new(nav: &Nav, c: &crate::dashboard::history::ConflictExplanation) -> Self {
        ExplanationView {
            summary: c.summary.clone(),
            winner: c.winner.as_ref().map(|w| {
                (w.mutation_id.clone(), format!("{}#m-{}", nav.request(&w.request_id), w.position), w.client_id.clone(), nav.client(&w.client_id))
            }),
            winner_diff: c.winner.as_ref().map(|w| diff_view(&w.diff.as_ref().map(|d| d.to_string()).unwrap_or_default())),
        }
    }

    /// The explanations of the conflicts among `rows` (one query), by (request id, position).
    pub async fn for_conflicts(
        c: &clickhouse::Client,
        nav: &Nav,
        rows: &[queries::Mutation],
    ) -> clickhouse::error::Result<Vec<(String, u32, ExplanationView)>> {
        use crate::dashboard::history::{Lost, explain, winner_of};
        let conflicts: Vec<&queries::Mutation> = rows.iter().filter(|m| m.outcome == MutationOutcome::Conflict).collect();
        let ids: Vec<&str> = conflicts.iter().map(|m| m.mutation_id.as_str()).collect();
        let entities: Vec<&str> = conflicts.iter().map(|m| m.entity_id.as_str()).collect();
        let winners = queries::conflict_winners(c, &ids, &entities).await?;
        Ok(conflicts
            .iter()
            .map(|m| {
                let lost = Lost { operation: &m.operation, client_ts_ms: m.client_ts_ms, started_us: m.started_us, reason_data: &m.reason_data };
                (m.request_id.clone(), m.position, ExplanationView::new(nav, &explain(&lost, winner_of(&winners, &m.request_id, m.position))))
            })
            .collect())
    }
}
