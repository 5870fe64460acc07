//! Turns one `CaptureRecord` into ClickHouse rows: parses the bodies, works out outcomes and
//! counts, redacts everything that can hold user data, and computes field diffs. Runs on the
//! pipeline thread, never on the host's.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::diff::{self, Change};
use super::redact::Redactor;
use super::redact::{PathRef, json_pointer};
use crate::capture::{CaptureRecord, CapturedBody, MutationState, RequestKind, StateValue, cap_identifier};
use crate::protocol::{Object, SYNC_KEY};

/// A `sync_requests` row (columns in table order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct RequestRow {
    pub request_id: String,
    pub kind: String,
    pub client_id: String,
    pub client_version: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    pub duration_us: u64,
    pub http_status: u16,
    pub outcome: String,
    pub mutation_count: u32,
    pub applied_count: u32,
    pub rejected_count: u32,
    pub conflict_count: u32,
    pub duplicate_count: u32,
    pub rejected_by_reason: Vec<(String, u32)>,
    pub snapshot_count: u32,
    pub has_more: bool,
    pub request_body: String,
    pub request_body_bytes: u64,
    pub request_body_truncated: bool,
    pub response_body: String,
    pub response_body_bytes: u64,
    pub response_body_truncated: bool,
    pub error: String,
    pub trace_id: String,
    pub span_id: String,
    pub replay_of: String,
}

/// A `sync_mutations` row (columns in table order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct MutationRow {
    pub request_id: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    pub position: u32,
    pub mutation_id: String,
    pub entity_id: String,
    pub model: String,
    pub operation: String,
    pub client_id: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::millis")]
    pub client_timestamp: DateTime<Utc>,
    pub version: u64,
    pub outcome: String,
    pub reason: String,
    pub reason_data: String,
    pub payload: String,
    pub state_before: String,
    pub state_after: String,
    pub has_state: bool,
    pub diff: String,
    pub trace_id: String,
    pub span_id: String,
    /// JSON Pointers (RFC 6901) into `payload` of every value redaction changed: replaced whole
    /// (a sensitive key) or a string whose credentials were cut out. Replay restores exactly
    /// these and nothing else.
    pub redacted_paths: Vec<String>,
    /// True for rows whose `redacted_paths` were recorded (rows stored before migration 4
    /// have false: their paths are unknown).
    pub redacted_paths_recorded: bool,
}

/// The rows of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub request: RequestRow,
    pub mutations: Vec<MutationRow>,
}

/// How rows are built.
#[derive(Debug, Clone)]
pub struct RowSettings {
    pub redactor: Redactor,
    /// Largest stored body text; longer text is cut with a marker naming the true size.
    pub body_cap_bytes: usize,
}

/// Outcome of a request as a whole.
pub mod outcome {
    pub const OK: &str = "ok";
    pub const PARTIAL: &str = "partial";
    pub const REJECTED: &str = "rejected";
    pub const CONFLICT: &str = "conflict";
    pub const ERROR: &str = "error";
}

/// Outcome of one mutation.
pub mod mutation_outcome {
    pub const APPLIED: &str = "applied";
    pub const REJECTED: &str = "rejected";
    pub const CONFLICT: &str = "conflict";
    pub const DUPLICATE: &str = "duplicate";
    /// The host answered the push as a whole with an error, or did not mention the mutation.
    pub const UNPROCESSED: &str = "unprocessed";
}

fn parse(body: &CapturedBody) -> Option<Value> {
    if !body.is_whole() || body.total == 0 {
        return None;
    }
    // serde_json's recursion limit turns absurd nesting into an error, not a stack overflow.
    serde_json::from_slice::<Value>(&body.to_bytes()).ok()
}

/// Cuts `text` to at most `cap` bytes on a character boundary, with a marker.
pub fn cap_text(mut text: String, cap: usize, true_size: u64) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("…[truncated: {true_size} bytes in all]"));
    (text, true)
}

/// The stored text of a body whose JSON (if any) is already redacted, and whether it was cut.
fn body_text(body: &CapturedBody, parsed: Option<&Value>, s: &RowSettings) -> (String, bool) {
    let text = match parsed {
        Some(v) => json_text(v),
        None => s.redactor.redact_text(&String::from_utf8_lossy(&body.to_bytes())),
    };
    let retained_all = body.retained as u64 == body.total;
    let (mut text, cut) = cap_text(text, s.body_cap_bytes, body.total);
    if !cut && !retained_all {
        text.push_str(&format!("…[truncated: {} bytes in all]", body.total));
    }
    (text, cut || !retained_all)
}

/// Redacts in place, then serializes with the column cap.
fn redacted_text(mut v: Value, s: &RowSettings) -> String {
    s.redactor.redact_value(&mut v);
    capped(json_text(&v), s)
}

/// JSON text of a value. `serde_json::to_string` writes bytes directly; `Value`'s `Display`
/// goes through `fmt::Write` and was a tenth of the pipeline's time.
fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// JSON column text, capped like bodies (a 10 MB payload keeps its true size in the request
/// row, not in every column).
fn capped(text: String, s: &RowSettings) -> String {
    let len = text.len() as u64;
    cap_text(text, s.body_cap_bytes, len).0
}

/// An identifier-like field (client id, ids, model, operation, reason) as column text: capped
/// at [`MAX_IDENTIFIER_BYTES`](crate::capture::MAX_IDENTIFIER_BYTES) before it is copied
/// anywhere, and redacted (a string can carry a credential; a field of the wrong type, e.g.
/// `"model": {"password": ...}`, is stored as its redacted JSON text).
fn str_field(v: &Value, key: &str, r: &Redactor) -> String {
    match v.get(key) {
        Some(Value::String(s)) => identifier(s, r),
        Some(Value::Null) | None => String::new(),
        Some(other) => {
            let mut other = other.clone();
            r.redact_value(&mut other);
            cap_identifier(&json_text(&other)).into_owned()
        }
    }
}

/// An identifier as column text: capped, then redacted. Every id that is matched against
/// another (mutation ids in the request, the response and the reported states) goes through
/// this, so capped ids still match.
fn identifier(s: &str, r: &Redactor) -> String {
    let capped = cap_identifier(s);
    match r.redact_str(&capped) {
        Some(redacted) => redacted,
        None => capped.into_owned(),
    }
}

fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    // DateTime64 covers 1900..2299; clamp instead of failing the batch on a wild clock.
    DateTime::from_timestamp_millis(ms.clamp(0, 10_413_791_999_999)).unwrap_or_default()
}

/// What the response said about one mutation.
struct Verdict {
    outcome: &'static str,
    reason: String,
    data: Option<Value>,
}

fn verdicts(resp: &Value, redactor: &Redactor) -> HashMap<String, VecDeque<Verdict>> {
    let mut map: HashMap<String, VecDeque<Verdict>> = HashMap::new();
    if let Some(applied) = resp.get("applied").and_then(Value::as_array) {
        for id in applied.iter().filter_map(Value::as_str) {
            map.entry(identifier(id, redactor)).or_default().push_back(Verdict {
                outcome: mutation_outcome::APPLIED,
                reason: String::new(),
                data: None,
            });
        }
    }
    for (key, default_outcome) in [("rejected", mutation_outcome::REJECTED), ("conflicts", mutation_outcome::CONFLICT)] {
        for r in resp.get(key).and_then(Value::as_array).into_iter().flatten() {
            let reason = str_field(r, "reason", redactor);
            let outcome = if reason == "duplicate" { mutation_outcome::DUPLICATE } else { default_outcome };
            let data = r.get("data").filter(|d| !d.is_null()).cloned();
            map.entry(str_field(r, "mutation_id", redactor)).or_default().push_back(Verdict { outcome, reason, data });
        }
    }
    map
}

/// A reported state as an object carrying the sync key.
fn state_object(v: StateValue, entity_id: &str) -> Option<Object> {
    let mut o = v.into_object()?;
    if !o.contains_key(SYNC_KEY) {
        o.insert(SYNC_KEY.to_owned(), Value::String(entity_id.to_owned()));
    }
    Some(o)
}

/// Field diff of two states; the sync key is identity, not a field.
fn state_diff(before: Option<&Object>, after: Option<&Object>) -> Vec<Change> {
    let empty = Value::Object(Object::new());
    let as_value = |o: Option<&Object>| o.map(|o| Value::Object(o.clone()));
    let (b, a) = (as_value(before), as_value(after));
    diff::diff(b.as_ref().unwrap_or(&empty), a.as_ref().unwrap_or(&empty))
        .into_iter()
        .filter(|c| !matches!(c.path.as_slice(), [diff::PathSegment::Key(k)] if k == SYNC_KEY))
        .collect()
}

fn request_outcome(success: bool, synced: u32, conflicts: u32, failed: u32) -> &'static str {
    if !success {
        outcome::ERROR
    } else if failed == 0 {
        outcome::OK
    } else if synced > 0 {
        outcome::PARTIAL
    } else if conflicts > 0 {
        outcome::CONFLICT
    } else {
        outcome::REJECTED
    }
}

fn error_text(rec: &CaptureRecord, resp: Option<&Value>, s: &RowSettings) -> String {
    if let Some(e) = &rec.error {
        return cap_text(s.redactor.redact_text(e), 2048, 0).0;
    }
    if (200..300).contains(&rec.http_status) {
        return String::new();
    }
    let text = match (resp, rec.http_status) {
        (_, 0) => "no response".to_owned(),
        (Some(v), status) => {
            let parts: Vec<String> = [str_field(v, "error", &s.redactor), str_field(v, "message", &s.redactor)].into_iter().filter(|x| !x.is_empty()).collect();
            if parts.is_empty() { format!("HTTP {status}") } else { parts.join(": ") }
        }
        (None, status) => format!("HTTP {status}"),
    };
    cap_text(s.redactor.redact_text(&text), 2048, 0).0
}

/// Builds the rows of one record. Diffs are computed on the raw values and redacted after
/// (so a changed secret shows as changed, never its value); every JSON tree is redacted in
/// place once, never copied to be redacted.
pub fn build(rec: &CaptureRecord, s: &RowSettings) -> Rows {
    let mut req = parse(&rec.request_body);
    let mut resp = parse(&rec.response_body);
    let success = (200..300).contains(&rec.http_status);
    let client_id = req.as_ref().map(|v| str_field(v, "client_id", &s.redactor)).unwrap_or_default();
    let error = error_text(rec, resp.as_ref(), s);

    let mut request = RequestRow {
        request_id: rec.request_id.clone(),
        kind: rec.kind.as_str().to_owned(),
        client_id: client_id.clone(),
        client_version: s.redactor.redact_string(cap_identifier(&rec.client_version).into_owned()),
        started_at: rec.started_at,
        duration_us: rec.duration.as_micros().min(u64::MAX as u128) as u64,
        http_status: rec.http_status,
        outcome: String::new(),
        mutation_count: 0,
        applied_count: 0,
        rejected_count: 0,
        conflict_count: 0,
        duplicate_count: 0,
        rejected_by_reason: Vec::new(),
        snapshot_count: 0,
        has_more: false,
        request_body: String::new(),
        request_body_bytes: rec.request_body.total,
        request_body_truncated: false,
        response_body: String::new(),
        response_body_bytes: rec.response_body.total,
        response_body_truncated: false,
        error,
        trace_id: rec.trace_id.clone(),
        span_id: rec.span_id.clone(),
        replay_of: rec.replay_of.clone(),
    };

    let mut mutations = Vec::new();
    if rec.kind == RequestKind::Pull {
        let r = resp.as_ref();
        request.snapshot_count = r.and_then(|v| v.get("snapshots")).and_then(Value::as_array).map_or(0, |a| a.len() as u32);
        request.has_more = r.and_then(|v| v.get("has_more")).and_then(Value::as_bool).unwrap_or(false);
        request.outcome = if success { outcome::OK } else { outcome::ERROR }.to_owned();
    } else {
        let mut verdicts = match (&resp, success) {
            (Some(v), true) => verdicts(v, &s.redactor),
            _ => HashMap::new(),
        };
        let mut states: HashMap<String, VecDeque<&MutationState>> = HashMap::new();
        for st in &rec.states {
            states.entry(identifier(&st.mutation_id, &s.redactor)).or_default().push_back(st);
        }
        let empty = Vec::new();
        let list = req.as_ref().and_then(|v| v.get("mutations")).and_then(Value::as_array).unwrap_or(&empty);
        let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
        let (mut applied, mut rejected, mut conflicts, mut duplicates, mut unprocessed) = (0u32, 0u32, 0u32, 0u32, 0u32);
        mutations.reserve(list.len());
        for (position, m) in list.iter().enumerate() {
            let mutation_id = str_field(m, "mutation_id", &s.redactor);
            let entity_id = str_field(m, "entity_id", &s.redactor);
            let verdict = verdicts.get_mut(&mutation_id).and_then(VecDeque::pop_front).unwrap_or_else(|| Verdict {
                outcome: mutation_outcome::UNPROCESSED,
                reason: if success { String::new() } else { format!("http_{}", rec.http_status) },
                data: None,
            });
            match verdict.outcome {
                mutation_outcome::APPLIED => applied += 1,
                mutation_outcome::CONFLICT => conflicts += 1,
                mutation_outcome::DUPLICATE => duplicates += 1,
                mutation_outcome::REJECTED => rejected += 1,
                _ => unprocessed += 1,
            }
            if matches!(verdict.outcome, mutation_outcome::REJECTED | mutation_outcome::DUPLICATE) {
                *reasons.entry(verdict.reason.clone()).or_default() += 1;
            }
            let payload = m.get("payload").and_then(Value::as_object);
            let state = states.get_mut(&mutation_id).and_then(VecDeque::pop_front);
            let has_state = state.is_some();
            let mut before = state.and_then(|st| st.before.clone()).and_then(|v| state_object(v, &entity_id));
            let after = state.and_then(|st| st.after.clone()).and_then(|v| state_object(v, &entity_id));
            if before.is_none() && verdict.outcome == mutation_outcome::CONFLICT {
                // The host told the client its state; that is the "before" of a conflict.
                before = verdict.data.as_ref().and_then(|d| d.get("server_state")).and_then(Value::as_object).cloned();
            }
            let mut changes = match verdict.outcome {
                mutation_outcome::APPLIED if has_state => state_diff(before.as_ref(), after.as_ref()),
                mutation_outcome::CONFLICT => state_diff(before.as_ref(), payload),
                _ => Vec::new(),
            };
            diff::redact_changes(&mut changes, &s.redactor);
            mutations.push(MutationRow {
                request_id: rec.request_id.clone(),
                started_at: rec.started_at,
                position: position as u32,
                mutation_id,
                entity_id,
                model: str_field(m, "model", &s.redactor),
                operation: str_field(m, "operation", &s.redactor),
                client_id: client_id.clone(),
                client_timestamp: ms_to_datetime(m.get("timestamp").and_then(Value::as_i64).unwrap_or(0)),
                version: m.get("version").and_then(Value::as_u64).unwrap_or(0),
                outcome: verdict.outcome.to_owned(),
                reason: verdict.reason,
                reason_data: verdict.data.map(|d| redacted_text(d, s)).unwrap_or_default(),
                // Filled from the redacted request body below: redacted once, not twice.
                payload: String::new(),
                state_before: before.map(|b| redacted_text(Value::Object(b), s)).unwrap_or_default(),
                state_after: after.map(|a| redacted_text(Value::Object(a), s)).unwrap_or_default(),
                has_state,
                diff: capped(serde_json::to_string(&changes).unwrap_or_else(|_| "[]".into()), s),
                trace_id: rec.trace_id.clone(),
                span_id: rec.span_id.clone(),
                redacted_paths: Vec::new(),
                redacted_paths_recorded: true,
            });
        }
        request.mutation_count = list.len() as u32;
        request.applied_count = applied;
        request.rejected_count = rejected;
        request.conflict_count = conflicts;
        request.duplicate_count = duplicates;
        request.rejected_by_reason = reasons.into_iter().collect();
        request.outcome = request_outcome(success, applied + duplicates, conflicts, rejected + conflicts + unprocessed).to_owned();
    }

    if let Some(v) = req.as_mut() {
        // One pass over the whole request; the paths inside each mutation's payload go to
        // that mutation's row.
        let mut on_redacted = |path: &[PathRef<'_>]| {
            if let [PathRef::Key("mutations"), PathRef::Index(i), PathRef::Key("payload"), rest @ ..] = path
                && !rest.is_empty()
                && let Some(row) = mutations.get_mut(*i)
            {
                row.redacted_paths.push(json_pointer(rest));
            }
        };
        s.redactor.redact_value_recording(v, &mut on_redacted);
        for row in &mut mutations {
            row.redacted_paths.sort_unstable();
        }
        if let Some(list) = v.get("mutations").and_then(Value::as_array) {
            for (row, m) in mutations.iter_mut().zip(list) {
                let payload = m.get("payload").filter(|p| p.is_object());
                row.payload = payload.map_or_else(|| "{}".to_owned(), |p| capped(json_text(p), s));
            }
        }
    }
    if let Some(v) = resp.as_mut() {
        s.redactor.redact_value(v);
    }
    (request.request_body, request.request_body_truncated) = body_text(&rec.request_body, req.as_ref(), s);
    (request.response_body, request.response_body_truncated) = body_text(&rec.response_body, resp.as_ref(), s);
    Rows { request, mutations }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::RequestKind;
    use bytes::Bytes;

    fn body(text: &str) -> CapturedBody {
        CapturedBody { chunks: vec![Bytes::copy_from_slice(text.as_bytes())], retained: text.len(), total: text.len() as u64, complete: true }
    }

    /// Found by the `rows` fuzz target: a field of the wrong type (an object where the model
    /// name belongs) was stored as its raw JSON text, secrets included.
    #[test]
    fn fields_of_the_wrong_type_are_stored_redacted() {
        let req = r#"{"client_id":{"token":"tk_client_0123"},"mutations":[{"mutation_id":"m1","entity_id":["e",{"cvv":"123_cvv_0123"}],
            "model":{"password":"pw_model_0123"},"operation":{"secret":"op_secret_0123"},"payload":{},"version":1,"timestamp":1}]}"#;
        let resp = r#"{"rejected":[{"mutation_id":"m1","reason":{"api_key":"ak_reason_0123"}}]}"#;
        let mut rec = push_record(req, resp, Vec::new());
        rec.client_version = String::new();
        let rows = build(&rec, &RowSettings { redactor: Redactor::default(), body_cap_bytes: 65536 });
        let m = &rows.mutations[0];
        assert_eq!(m.model, r#"{"password":"[REDACTED]"}"#);
        assert_eq!(m.reason, r#"{"api_key":"[REDACTED]"}"#);
        assert_eq!(m.outcome, mutation_outcome::REJECTED, "the verdict still matches its mutation");
        let all = format!("{:?}", rows);
        for secret in ["tk_client_0123", "123_cvv_0123", "pw_model_0123", "op_secret_0123", "ak_reason_0123"] {
            assert!(!all.contains(secret), "{secret} stored: {all}");
        }
    }

    fn push_record(req: &str, resp: &str, states: Vec<MutationState>) -> CaptureRecord {
        CaptureRecord {
            request_id: "r".into(),
            kind: RequestKind::Push,
            started_at: Default::default(),
            duration: std::time::Duration::ZERO,
            http_status: 200,
            client_version: "v".repeat(5000),
            request_body: body(req),
            response_body: body(resp),
            states,
            trace_id: String::new(),
            span_id: String::new(),
            parent: None,
            path: "/tether/push".into(),
            replay_of: String::new(),
            error: None,
        }
    }

    /// Issue 12, input 6: a megabyte where an id belongs is cut to 256 bytes with its true
    /// length before it is copied into any row, and capped ids still match their verdicts
    /// and reported states.
    #[test]
    fn oversized_identifiers_are_capped_and_still_match() {
        let client = "c".repeat(1_000_000);
        let mid = format!("m{}", "é".repeat(400));
        let model = "M".repeat(300);
        let req = serde_json::json!({"client_id": client, "mutations": [
            {"mutation_id": mid, "entity_id": "e".repeat(999), "model": model, "operation": "o".repeat(257), "payload": {"a": 1}, "version": 1, "timestamp": 1}
        ]})
        .to_string();
        let resp = serde_json::json!({"applied": [mid]}).to_string();
        let state = MutationState { mutation_id: crate::capture::cap_identifier(&mid).into_owned(), before: None, after: Some(StateValue::Json("{\"a\":1}".into())) };
        let rows = build(&push_record(&req, &resp, vec![state]), &RowSettings { redactor: Redactor::default(), body_cap_bytes: 65536 });
        let m = &rows.mutations[0];
        let capped = |s: &str, len: usize| {
            let (head, tail) = s.split_once('…').unwrap_or((s, ""));
            assert!(head.len() <= crate::capture::MAX_IDENTIFIER_BYTES, "{} bytes kept", head.len());
            assert_eq!(tail, format!("[truncated: {len} bytes in all]"));
        };
        capped(&rows.request.client_id, 1_000_000);
        capped(&m.client_id, 1_000_000);
        capped(&rows.request.client_version, 5000);
        capped(&m.mutation_id, mid.len());
        capped(&m.entity_id, 999);
        capped(&m.model, 300);
        capped(&m.operation, 257);
        assert_eq!(m.outcome, mutation_outcome::APPLIED, "the capped id still finds its verdict");
        assert!(m.has_state, "and its reported state");
        assert!(m.mutation_id.starts_with('m') && m.mutation_id.is_char_boundary(m.mutation_id.find('…').unwrap()));
    }

    #[test]
    fn credentials_in_identifiers_and_paths_inside_payloads() {
        let req = r#"{"client_id":"dev Bearer abc123def456","mutations":[{"mutation_id":"m1","entity_id":"e","model":"Task","operation":"create",
            "payload":{"title":"t","notes":"Authorization: Bearer FAKE-A","metadata":{"callback":"https://example.test/cb?access_token=FAKE-B&x=1","token":"FAKE-T"}},"version":1,"timestamp":1}]}"#;
        let rows = build(&push_record(req, r#"{"applied":["m1"]}"#, Vec::new()), &RowSettings { redactor: Redactor::default(), body_cap_bytes: 65536 });
        let m = &rows.mutations[0];
        assert_eq!(rows.request.client_id, "dev Bearer [REDACTED]");
        assert_eq!(m.redacted_paths, ["/metadata/callback", "/metadata/token", "/notes"]);
        assert!(m.redacted_paths_recorded);
        let all = format!("{rows:?}");
        for secret in ["abc123def456", "FAKE-A", "FAKE-B", "FAKE-T"] {
            assert!(!all.contains(secret), "{secret} stored: {all}");
        }
        assert!(m.payload.contains("x=1") && m.payload.contains("example.test"), "{}", m.payload);
    }
}
