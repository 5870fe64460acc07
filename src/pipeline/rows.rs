//! Turns one `CaptureRecord` into ClickHouse rows: parses the bodies, works out outcomes and
//! counts, redacts everything that can hold user data, and computes field diffs. Runs on the
//! pipeline thread, never on the host's.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use smallvec::SmallVec;

use chrono::{DateTime, Utc};

use super::decode::{self, DecodedBody};
use super::diff;
use super::envelope;
use super::json::{self, Bump, Json, Text};
use super::redact::Redactor;
use crate::capture::{CaptureRecord, CapturedBody, MutationState, RequestKind, StateValue, cap_identifier};
use crate::protocol::SYNC_KEY;

pub use crate::store::rows::{MutationRow, RequestRow, Rows};

/// How rows are built.
#[derive(Debug, Clone)]
pub struct RowSettings {
    /// What is redacted (`capture.redact_keys`, `capture.redact_keys_disabled`).
    pub redactor: Redactor,
    /// Largest stored body text; longer text is cut with a marker naming the true size.
    pub body_cap_bytes: usize,
    /// Most bytes a compressed body is decoded to (a compression bomb stops here).
    pub decoded_max_bytes: usize,
    /// Which applied mutations keep their payload, states and diff (`capture.applied`).
    pub applied: KeepApplied,
}

impl Default for RowSettings {
    fn default() -> Self {
        super::config::CaptureConfig::default().row_settings()
    }
}

/// Which applied mutations keep their detail (payload, states, diff); the others keep their
/// row. Mutations that were not applied always keep it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepApplied {
    /// Every applied mutation (`capture.applied = "full"`).
    All,
    /// This fraction, chosen by a hash of the mutation id (so a retried or replayed
    /// mutation is chosen alike in every process).
    Fraction(f64),
    /// No applied mutation (`capture.applied = "counts"`).
    None,
}

impl KeepApplied {
    fn keeps(self, mutation_id: &str) -> bool {
        match self {
            KeepApplied::All => true,
            KeepApplied::None => false,
            KeepApplied::Fraction(f) => {
                // FNV-1a, then MurmurHash3's 64-bit finalizer so the high bits of short,
                // similar ids are mixed: stable across processes and builds (std's hasher is
                // not promised to be).
                let mut h = mutation_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
                h ^= h >> 33;
                h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
                h ^= h >> 33;
                h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
                h ^= h >> 33;
                (h as f64) < f * (u64::MAX as f64)
            }
        }
    }
}

pub use crate::store::schema::reason;
use crate::store::schema::{MutationOutcome, RequestOutcome};

/// A decoded body parsed into a tree borrowing from it, when it is whole JSON; with the
/// positions of mutations whose broken strings the lenient pass repaired (then the tree owns
/// its repaired text).
fn parse<'d>(body: &CapturedBody, decoded: &'d DecodedBody, arena: &'d Bump) -> (Option<Json<'d>>, Vec<usize>) {
    if !body.is_whole() || body.total == 0 || decoded.capped || decoded.error.is_some() {
        return (None, Vec::new());
    }
    // serde_json's recursion limit turns absurd nesting into an error, not a stack overflow.
    match Json::parse(&decoded.bytes, arena) {
        Ok(v) => (Some(v), Vec::new()),
        Err(_) => match decode::parse_lenient(&decoded.bytes, arena) {
            Some(l) => (Some(l.value), l.broken_mutations),
            None => (None, Vec::new()),
        },
    }
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

/// The stored text of a body (its tree written redacted, or its text scrubbed when it did
/// not parse), and whether it is not the whole body (cut at the cap, not retained, not
/// decoded whole, or incomplete).
fn body_text(body: &CapturedBody, d: &DecodedBody, tree: Option<&Json<'_>>, s: &RowSettings) -> (String, bool) {
    let mut text = match tree {
        Some(v) => {
            let mut t = String::with_capacity(d.bytes.len());
            s.redactor.write_redacted(v, &mut t);
            t
        }
        None => s.redactor.redact_text(&String::from_utf8_lossy(&d.bytes)),
    };
    if let (None, Some(e)) = (tree, &d.error) {
        text.push_str(&format!("…[{}]", s.redactor.redact_text(e)));
    }
    let retained_all = body.retained as u64 == body.total;
    let (mut text, cut) = cap_text(text, s.body_cap_bytes, body.total);
    if !cut && !retained_all {
        text.push_str(&format!("…[truncated: {} bytes in all]", body.total));
    }
    if !cut && d.capped {
        text.push_str(&format!("…[truncated: decoded {} body larger than {} bytes]", d.encoding, s.decoded_max_bytes));
    }
    if body.is_incomplete() {
        text.push_str(&incomplete_marker(body));
    }
    (text, cut || !retained_all || d.capped || d.error.is_some() || body.is_incomplete())
}

/// Says how a body fell short: it did not arrive, or not all of it.
fn incomplete_marker(body: &CapturedBody) -> String {
    match body.declared_length {
        Some(n) if body.total < n => format!("…[incomplete: {} of {n} bytes (Content-Length) received]", body.total),
        _ => format!("…[incomplete: the body stream ended early after {} bytes]", body.total),
    }
}

/// A tree written redacted, with the column cap (a 10 MB payload keeps its true size in the
/// request row, not in every column).
fn redacted_text(v: &Json<'_>, s: &RowSettings) -> String {
    let text = s.redactor.redacted_text(v);
    let len = text.len() as u64;
    cap_text(text, s.body_cap_bytes, len).0
}

/// An identifier-like field (client id, ids, model, operation, reason) as column text: capped
/// at [`MAX_IDENTIFIER_BYTES`](crate::capture::MAX_IDENTIFIER_BYTES) before it is copied
/// anywhere, and redacted (a string can carry a credential; a field of the wrong type, e.g.
/// `"model": {"password": ...}`, is stored as its redacted JSON text).
fn str_field(v: &Json<'_>, key: &str, r: &Redactor) -> String {
    str_field_ref(v, key, r).into_owned()
}

/// [`str_field`], borrowed when the value needed no change (a key to match on).
fn str_field_ref<'v>(v: &'v Json<'_>, key: &str, r: &Redactor) -> Cow<'v, str> {
    match v.get(key) {
        Some(Json::String(t)) => identifier_ref(t.as_str(), r),
        Some(Json::Null) | None => Cow::Borrowed(""),
        Some(other) => Cow::Owned(cap_identifier(&r.redacted_text(other)).into_owned()),
    }
}

/// An identifier as column text: capped, then redacted. Every id that is matched against
/// another (mutation ids in the request, the response and the reported states) goes through
/// this, so capped ids still match. Borrowed when it needed no change.
fn identifier_ref<'s>(s: &'s str, r: &Redactor) -> Cow<'s, str> {
    let capped = cap_identifier(s);
    match r.redact_str(&capped) {
        Some(redacted) => Cow::Owned(redacted),
        None => capped,
    }
}

/// The columns every mutation row of a push repeats, allocated once per push.
struct SharedColumns {
    request_id: Arc<str>,
    client_id: Arc<str>,
    trace_id: Arc<str>,
    span_id: Arc<str>,
}

/// The distinct values of a push's low-cardinality columns (`model`, `operation`, `outcome`),
/// one allocation each: a push names a handful.
#[derive(Default)]
struct Interned(SmallVec<[Arc<str>; 8]>);

impl Interned {
    fn get(&mut self, value: &str) -> Arc<str> {
        if let Some(v) = self.0.iter().find(|v| ***v == *value) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(value);
        // A push of many distinct models is possible; the search stays short.
        if self.0.len() < 32 {
            self.0.push(v.clone());
        }
        v
    }
}

/// Mutation ids to what was said of them, in order (an id named twice in one push has two);
/// one entry each is the rule, kept inline.
type ById<'k, T> = HashMap<Cow<'k, str>, Said<T>, foldhash::fast::RandomState>;

/// What was said of one id, taken front to back. A cursor, not `remove(0)`: an id repeated
/// n times must not cost n² (found by a review: 80 000 copies of one id took 4.3 s).
struct Said<T> {
    items: SmallVec<[Option<T>; 1]>,
    next: usize,
}

impl<T> Default for Said<T> {
    fn default() -> Self {
        Said { items: SmallVec::new(), next: 0 }
    }
}

impl<T> Said<T> {
    fn push(&mut self, t: T) {
        self.items.push(Some(t));
    }
    fn len(&self) -> usize {
        self.items.len()
    }
}

fn pop_front<T>(said: &mut Said<T>) -> Option<T> {
    let t = said.items.get_mut(said.next)?.take();
    said.next += 1;
    t
}

/// Latest epoch millisecond `DateTime64(3)` stores (2299-12-31 23:59:59.999).
const MAX_CLIENT_TIMESTAMP_MS: i64 = 10_413_791_999_999;

/// A mutation's client time, and the raw JSON text when it is not valid. Valid: an integer of
/// epoch milliseconds from 0 to 2299-12-31 (`DateTime64`'s range); anything else (missing,
/// a string, a float, negative, year 3000) is `None`: no invented date.
fn client_timestamp(m: &Json<'_>, r: &Redactor) -> (Option<DateTime<Utc>>, String) {
    let raw = m.get("timestamp");
    let valid = raw
        .and_then(Json::as_i64)
        .filter(|ms| (0..=MAX_CLIENT_TIMESTAMP_MS).contains(ms))
        .and_then(DateTime::from_timestamp_millis);
    match (valid, raw) {
        (Some(t), _) => (Some(t), String::new()),
        (None, Some(v)) => (None, cap_text(r.redacted_text(v), 256, 0).0),
        (None, None) => (None, String::new()),
    }
}

/// What the response said about one mutation.
struct Verdict<'r> {
    outcome: MutationOutcome,
    reason: String,
    data: Option<&'r Json<'r>>,
}

fn verdicts<'r>(resp: &'r Json<'r>, redactor: &Redactor) -> ById<'r, Verdict<'r>> {
    let mut map = ById::default();
    if let Some(applied) = resp.get("applied").and_then(Json::as_array) {
        for id in applied.iter().filter_map(Json::as_str) {
            map.entry(identifier_ref(id, redactor)).or_default().push(Verdict {
                outcome: MutationOutcome::Applied,
                reason: String::new(),
                data: None,
            });
        }
    }
    for (key, default_outcome) in [("rejected", MutationOutcome::Rejected), ("conflicts", MutationOutcome::Conflict)] {
        for r in resp.get(key).and_then(Json::as_array).into_iter().flatten() {
            let reason = str_field(r, "reason", redactor);
            let outcome = if reason == "duplicate" { MutationOutcome::Duplicate } else { default_outcome };
            let data = r.get("data").filter(|d| !d.is_null());
            map.entry(str_field_ref(r, "mutation_id", redactor)).or_default().push(Verdict { outcome, reason, data });
        }
    }
    map
}

/// A reported state as a tree (borrowed from the record) carrying the sync key.
fn state_tree<'a>(v: &'a StateValue, entity_id: &'a str, arena: &'a Bump) -> Option<Json<'a>> {
    let mut o = v.tree(arena)?;
    if o.get(SYNC_KEY).is_none() {
        o.insert(Text::Plain(SYNC_KEY), Json::String(Text::Borrowed(entity_id)));
    }
    Some(o)
}

/// Field diff of two states (objects, or absent), written as stored (redacted); the sync key
/// is identity, not a field.
fn state_diff(before: Option<&Json<'_>>, after: Option<&Json<'_>>, s: &RowSettings) -> String {
    // An absent state is an empty object (which allocates nothing).
    let none = Bump::new();
    let empty = Json::empty_object(&none);
    let mut changes = diff::changes(before.unwrap_or(&empty), after.unwrap_or(&empty));
    changes.retain(|c| !matches!(c.path.as_slice(), [diff::Step::Key(k)] if *k == SYNC_KEY));
    let text = json::written(|out| diff::write_redacted_changes(&changes, &s.redactor, out));
    let len = text.len() as u64;
    cap_text(text, s.body_cap_bytes, len).0
}

/// Adds what the capture itself found wrong with the request body to the error text.
fn body_notes(error: &mut String, decoded: &DecodedBody, broken: &[usize], mutations: &[MutationRow]) {
    let mut notes = Vec::new();
    if let Some(e) = &decoded.error {
        notes.push(format!("request body: {e}"));
    }
    if !broken.is_empty() {
        let which: Vec<String> = broken
            .iter()
            .map(|&p| match mutations.get(p) {
                Some(m) if !m.mutation_id.is_empty() => format!("#{p} ({})", m.mutation_id),
                _ => format!("#{p}"),
            })
            .collect();
        notes.push(format!(
            "request body: invalid string (lone UTF-16 surrogate or invalid UTF-8, stored as U+FFFD) in mutation {}",
            which.join(", ")
        ));
    }
    for note in notes {
        if !error.is_empty() {
            error.push_str("; ");
        }
        error.push_str(&note);
    }
    *error = cap_text(std::mem::take(error), 4096, 0).0;
}

fn request_outcome(success: bool, synced: u32, conflicts: u32, failed: u32) -> RequestOutcome {
    if !success {
        RequestOutcome::Error
    } else if failed == 0 {
        RequestOutcome::Ok
    } else if synced > 0 {
        RequestOutcome::Partial
    } else if conflicts > 0 {
        RequestOutcome::Conflict
    } else {
        RequestOutcome::Rejected
    }
}

/// The client never had the host's whole answer: it went away before it.
fn client_gone(rec: &CaptureRecord) -> bool {
    rec.client_gone && !rec.response_body.is_whole()
}

fn error_text(rec: &CaptureRecord, resp: Option<&Json<'_>>, s: &RowSettings) -> String {
    if client_gone(rec) {
        return "client disconnected before the response".to_owned();
    }
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

/// The verdict of a mutation the response does not mention.
fn unanswered(rec: &CaptureRecord, gone: bool, success: bool, broken: bool) -> Verdict<'static> {
    let (outcome, reason) = if gone {
        (MutationOutcome::Unknown, reason::CLIENT_DISCONNECTED.to_owned())
    } else if broken {
        (MutationOutcome::Unprocessed, reason::INVALID_STRING.to_owned())
    } else if success {
        (MutationOutcome::Unprocessed, String::new())
    } else {
        (MutationOutcome::Unprocessed, format!("http_{}", rec.http_status))
    };
    Verdict { outcome, reason, data: None }
}

/// Builds the rows of one record. Each body and state is parsed once into a tree borrowing
/// from the record; diffs are computed on the raw trees and every text is redacted as it is
/// written (so a changed secret shows as changed, never its value), nothing copied to be
/// redacted.
pub fn build(rec: &CaptureRecord, s: &RowSettings) -> Rows {
    // One arena per thread, emptied after each record: its memory is reused, and a tree's
    // containers cost no `malloc`/`free` each.
    thread_local! {
        static ARENA: std::cell::Cell<Option<Bump>> = const { std::cell::Cell::new(None) };
    }
    let mut arena = ARENA.take().unwrap_or_default();
    let rows = build_in(rec, s, &arena);
    arena.reset();
    // One huge record should not pin its memory for the thread's life.
    if arena.allocated_bytes() <= KEPT_ARENA_BYTES {
        ARENA.set(Some(arena));
    }
    rows
}

/// The most arena memory kept between records (a 50-mutation push with its states takes
/// about 200 KiB).
const KEPT_ARENA_BYTES: usize = 4 << 20;

fn build_in(rec: &CaptureRecord, s: &RowSettings, arena: &Bump) -> Rows {
    let req_decoded = decode::decode(&rec.request_body, s.decoded_max_bytes);
    let resp_decoded = decode::decode(&rec.response_body, s.decoded_max_bytes);
    let (mut req, broken) = parse(&rec.request_body, &req_decoded, arena);
    let (resp, _) = parse(&rec.response_body, &resp_decoded, arena);
    let gone = client_gone(rec);
    let success = (200..300).contains(&rec.http_status) && !gone;
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
        request_body_moved: Vec::new(),
        request_content_encoding: req_decoded.encoding.clone(),
        response_body: String::new(),
        response_body_bytes: rec.response_body.total,
        response_body_truncated: false,
        response_content_encoding: resp_decoded.encoding.clone(),
        error,
        trace_id: rec.trace_id.clone(),
        span_id: rec.span_id.clone(),
        replay_of: rec.replay_of.clone(),
    };

    let mut mutations = Vec::new();
    if rec.kind == RequestKind::Pull {
        let r = resp.as_ref();
        request.snapshot_count = r.and_then(|v| v.get("snapshots")).and_then(Json::as_array).map_or(0, |a| a.len() as u32);
        request.has_more = r.and_then(|v| v.get("has_more")).and_then(Json::as_bool).unwrap_or(false);
        request.outcome = if gone { RequestOutcome::Unknown } else if success { RequestOutcome::Ok } else { RequestOutcome::Error }.as_str().to_owned();
    } else {
        let mut verdicts = match (&resp, success) {
            (Some(v), true) => verdicts(v, &s.redactor),
            _ => ById::default(),
        };
        // An id the response names more than once (the client sent it twice in one push) is
        // matched to its positions in body order, which may not be the host's order: whatever
        // verdict such a row gets, it keeps its detail, so a capture policy never drops a
        // payload the host refused (found by a fresh-eyes test: `applied` and `rejected` for
        // one id, the refused payload was dropped as applied).
        let ambiguous: std::collections::HashSet<String> = verdicts.iter().filter(|(_, v)| v.len() > 1).map(|(id, _)| id.to_string()).collect();
        let mut states: ById<'_, &MutationState> = ById::default();
        states.reserve(rec.states.len());
        for st in &rec.states {
            states.entry(identifier_ref(&st.mutation_id, &s.redactor)).or_default().push(st);
        }
        let list = req.as_ref().and_then(|v| v.get("mutations")).and_then(Json::as_array).unwrap_or(&[]);
        let mut values = Interned::default();
        let shared = SharedColumns {
            request_id: Arc::from(rec.request_id.as_str()),
            client_id: Arc::from(client_id.as_str()),
            trace_id: Arc::from(rec.trace_id.as_str()),
            span_id: Arc::from(rec.span_id.as_str()),
        };
        let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
        let (mut applied, mut rejected, mut conflicts, mut duplicates, mut unprocessed) = (0u32, 0u32, 0u32, 0u32, 0u32);
        mutations.reserve(list.len());
        for (position, m) in list.iter().enumerate() {
            let mutation_id = str_field(m, "mutation_id", &s.redactor);
            let entity_id = str_field(m, "entity_id", &s.redactor);
            let verdict = verdicts
                .get_mut(mutation_id.as_str())
                .and_then(pop_front)
                .unwrap_or_else(|| unanswered(rec, gone, success, broken.contains(&position)));
            match verdict.outcome {
                MutationOutcome::Applied => applied += 1,
                MutationOutcome::Conflict => conflicts += 1,
                MutationOutcome::Duplicate => duplicates += 1,
                MutationOutcome::Rejected => rejected += 1,
                MutationOutcome::Unknown => {}
                _ => unprocessed += 1,
            }
            if matches!(verdict.outcome, MutationOutcome::Rejected | MutationOutcome::Duplicate) {
                *reasons.entry(verdict.reason.clone()).or_default() += 1;
            }
            let payload = m.get("payload").filter(|p| p.is_object());
            let state = states.get_mut(mutation_id.as_str()).and_then(pop_front);
            let has_state = state.is_some();
            let detail_kept = verdict.outcome != MutationOutcome::Applied || ambiguous.contains(&mutation_id) || s.applied.keeps(&mutation_id);
            let (mut state_before, mut state_after, mut diff_text) = (String::new(), String::new(), String::new());
            // Without its detail, a state is never parsed.
            if detail_kept {
                let reported_before = state.and_then(|st| st.before.as_ref()).and_then(|v| state_tree(v, &entity_id, arena));
                let after = state.and_then(|st| st.after.as_ref()).and_then(|v| state_tree(v, &entity_id, arena));
                let mut before = reported_before.as_ref();
                if before.is_none() && verdict.outcome == MutationOutcome::Conflict {
                    // The host told the client its state; that is the "before" of a conflict.
                    before = verdict.data.and_then(|d| d.get("server_state")).filter(|s| s.is_object());
                }
                diff_text = match verdict.outcome {
                    // Unknown: the client went away, but the host said what it did to the record.
                    MutationOutcome::Applied | MutationOutcome::Unknown if has_state => state_diff(before, after.as_ref(), s),
                    MutationOutcome::Conflict => state_diff(before, payload, s),
                    _ => "[]".to_owned(),
                };
                state_before = before.map(|b| redacted_text(b, s)).unwrap_or_default();
                state_after = after.as_ref().map(|a| redacted_text(a, s)).unwrap_or_default();
            }
            let (client_timestamp, client_timestamp_raw) = client_timestamp(m, &s.redactor);
            mutations.push(MutationRow {
                request_id: shared.request_id.clone(),
                started_at: rec.started_at,
                position: position as u32,
                mutation_id,
                entity_id,
                model: values.get(&str_field_ref(m, "model", &s.redactor)),
                operation: values.get(&str_field_ref(m, "operation", &s.redactor)),
                client_id: shared.client_id.clone(),
                client_timestamp,
                client_timestamp_raw,
                version: m.get("version").and_then(Json::as_u64).unwrap_or(0),
                outcome: values.get(verdict.outcome.as_str()),
                reason: verdict.reason,
                reason_data: verdict.data.map(|d| redacted_text(d, s)).unwrap_or_default(),
                // Filled from the request body below, with the paths redaction changed.
                payload: String::new(),
                state_before,
                state_after,
                has_state,
                detail_kept,
                diff: diff_text,
                trace_id: shared.trace_id.clone(),
                span_id: shared.span_id.clone(),
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
        request.outcome = if gone {
            RequestOutcome::Unknown.as_str().to_owned()
        } else {
            request_outcome(success, applied + duplicates, conflicts, rejected + conflicts + unprocessed).as_str().to_owned()
        };
    }

    let mut taken = Vec::new();
    if let Some(v) = req.as_mut() {
        // Each payload is stored once: in its mutation row, out of the request body. Payloads
        // the policy does not keep are never written.
        taken = envelope::drop_payloads(v, mutations.iter().map(|m| !m.detail_kept));
        taken.extend(envelope::move_payloads(v, &mut mutations, &s.redactor, s.body_cap_bytes));
        request.request_body_moved = envelope::positions(&taken);
    }
    (request.request_body, request.request_body_truncated) = body_text(&rec.request_body, &req_decoded, req.as_ref(), s);
    if request.request_body_truncated && !request.request_body_moved.is_empty() {
        // Even the envelope is past the cap: cut, it would not parse, and the payloads could
        // not be put back. Store the body whole and cut, as before the envelope, so what is
        // shown is its first part with the payloads in it.
        if let Some(v) = req.as_mut() {
            envelope::restore_payloads(v, taken);
            request.request_body_moved.clear();
            (request.request_body, request.request_body_truncated) = body_text(&rec.request_body, &req_decoded, req.as_ref(), s);
        }
    }
    (request.response_body, request.response_body_truncated) = body_text(&rec.response_body, &resp_decoded, resp.as_ref(), s);
    body_notes(&mut request.error, &req_decoded, &broken, &mutations);
    Rows { request, mutations }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use crate::capture::RequestKind;
    use bytes::Bytes;

    fn body(text: &str) -> CapturedBody {
        CapturedBody {
            chunks: vec![Bytes::copy_from_slice(text.as_bytes())],
            retained: text.len(),
            total: text.len() as u64,
            complete: true,
            ..CapturedBody::default()
        }
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
        let rows = build(&rec, &RowSettings { redactor: Redactor::default(), body_cap_bytes: 65536, decoded_max_bytes: 1 << 20, ..Default::default() });
        let m = &rows.mutations[0];
        assert_eq!(&*m.model, r#"{"password":"[REDACTED]"}"#);
        assert_eq!(m.reason, r#"{"api_key":"[REDACTED]"}"#);
        assert_eq!(m.outcome, MutationOutcome::Rejected, "the verdict still matches its mutation");
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
            client_gone: false,
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
        let rows = build(&push_record(&req, &resp, vec![state]), &RowSettings { redactor: Redactor::default(), body_cap_bytes: 65536, decoded_max_bytes: 1 << 20, ..Default::default() });
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
        assert_eq!(m.outcome, MutationOutcome::Applied, "the capped id still finds its verdict");
        assert!(m.has_state, "and its reported state");
        assert!(m.mutation_id.starts_with('m') && m.mutation_id.is_char_boundary(m.mutation_id.find('…').unwrap()));
    }

    fn settings(applied: KeepApplied, cap: usize) -> RowSettings {
        RowSettings { body_cap_bytes: cap, applied, ..RowSettings::default() }
    }

    fn moved_payloads(rows: &Rows) -> Vec<super::envelope::MovedPayload> {
        rows.mutations.iter().map(super::envelope::MovedPayload::of).collect()
    }

    /// Issue 15: each payload is stored once. The request row keeps the envelope; the rows
    /// hold the payloads; rebuilding gives exactly the body that was stored whole before
    /// (redacted), for object payloads, non-object ones (kept in the envelope), a mutation
    /// without a payload, an extra field, and a payload longer than the cap (kept in the
    /// envelope, since the row's copy is cut).
    #[test]
    fn each_payload_is_stored_once_and_the_body_rebuilds() {
        let big = "x".repeat(300);
        let req = format!(
            r#"{{"client_id":"c","extra":{{"k":1}},"mutations":[
            {{"mutation_id":"m0","entity_id":"e0","model":"Task","operation":"create","payload":{{"title":"a","password":"pw-0123"}},"version":1,"timestamp":1}},
            {{"mutation_id":"m1","entity_id":"e1","model":"Task","operation":"create","payload":"not an object","version":1,"timestamp":1}},
            {{"mutation_id":"m2","entity_id":"e2","model":"Task","operation":"delete","version":1,"timestamp":1,"note":"no payload"}},
            {{"mutation_id":"m3","entity_id":"e3","model":"Task","operation":"update","payload":{{}},"version":2,"timestamp":1}}]}}"#
        );
        let resp = r#"{"applied":["m0","m1","m2","m3"]}"#;
        let rec = push_record(&req, resp, Vec::new());
        let rows = build(&rec, &settings(KeepApplied::All, 65536));
        assert_eq!(rows.request.request_body_moved, [0, 3]);
        let envelope: Value = serde_json::from_str(&rows.request.request_body).unwrap();
        let list = envelope["mutations"].as_array().unwrap();
        assert!(list[0].get("payload").is_none() && list[3].get("payload").is_none());
        assert_eq!(list[1]["payload"], "not an object");
        assert_eq!(list[2]["note"], "no payload");
        assert_eq!(rows.mutations[0].payload, r#"{"password":"[REDACTED]","title":"a"}"#);
        assert_eq!((rows.mutations[1].payload.as_str(), rows.mutations[2].payload.as_str()), ("{}", "{}"));
        assert!(!rows.request.request_body.contains("pw-0123"));
        // Rebuilt, it is the body as the whole-body form stored it: redacted, keys sorted.
        let mut whole: Value = serde_json::from_str(&req).unwrap();
        Redactor::default().redact_value(&mut whole);
        let rebuilt = super::envelope::rebuild(&rows.request.request_body, &rows.request.request_body_moved, &moved_payloads(&rows));
        assert_eq!(rebuilt, serde_json::to_string(&whole).unwrap());
        assert!(rows.request.request_body.len() < rebuilt.len());

        // A payload longer than the column cap stays in the body (the row's copy is cut, so it
        // could not be put back); the body is then cut at the cap as before, and shown as is.
        let req = format!(
            r#"{{"client_id":"c","mutations":[{{"mutation_id":"m0","entity_id":"e0","model":"Task","operation":"create","payload":{{"title":"{big}"}},"version":1,"timestamp":1}}]}}"#
        );
        let rows = build(&push_record(&req, r#"{"applied":["m0"]}"#, Vec::new()), &settings(KeepApplied::All, 256));
        assert!(rows.request.request_body_moved.is_empty());
        assert!(rows.mutations[0].payload.contains("…[truncated: "), "{}", rows.mutations[0].payload);
        assert!(rows.request.request_body_truncated && rows.request.request_body.starts_with(r#"{"client_id":"c","mutations":[{"#));
        assert_eq!(super::envelope::rebuild(&rows.request.request_body, &[], &[]), rows.request.request_body);

        // Found by review: 60 mutations whose envelope alone is past the cap. Cut, it would
        // not parse, so the payloads could never be put back: the body is stored whole and
        // cut as before, payloads in it, nothing listed as moved; the rows keep theirs.
        let list: Vec<String> = (0..60)
            .map(|i| format!(r#"{{"mutation_id":"m{i}","entity_id":"e{i}","model":"Task","operation":"create","payload":{{"title":"p{i}"}},"version":1,"timestamp":1}}"#))
            .collect();
        let req = format!(r#"{{"client_id":"c","mutations":[{}]}}"#, list.join(","));
        let ids: Vec<String> = (0..60).map(|i| format!("\"m{i}\"")).collect();
        let resp = format!(r#"{{"applied":[{}]}}"#, ids.join(","));
        for applied in [KeepApplied::All, KeepApplied::None] {
            let rows = build(&push_record(&req, &resp, Vec::new()), &settings(applied, 2048));
            assert!(rows.request.request_body_truncated, "{applied:?}");
            assert!(rows.request.request_body_moved.is_empty(), "{applied:?}");
            let shown = if applied == KeepApplied::All { r#""payload":{"title":"p0"}"# } else { super::envelope::NOT_KEPT };
            assert!(rows.request.request_body.contains(shown), "{applied:?}: {}", rows.request.request_body);
            assert_eq!(rows.mutations[59].payload, if applied == KeepApplied::All { r#"{"title":"p59"}"# } else { "" });
        }
    }

    /// The capture policy: applied mutations keep their row (every count needs it) but,
    /// under `counts`, no payload, states or diff; a sample keeps a fraction chosen by the
    /// mutation id; mutations that were not applied are always kept whole.
    #[test]
    fn the_capture_policy_keeps_rows_and_drops_applied_detail() {
        let mut mutations = Vec::new();
        let mut states = Vec::new();
        for i in 0..200 {
            mutations.push(format!(
                r#"{{"mutation_id":"m{i}","entity_id":"e{i}","model":"Task","operation":"update","payload":{{"title":"new {i}"}},"version":2,"timestamp":1}}"#
            ));
            states.push(MutationState {
                mutation_id: format!("m{i}"),
                before: Some(StateValue::Json(format!(r#"{{"title":"old {i}"}}"#))),
                after: Some(StateValue::Json(format!(r#"{{"title":"new {i}"}}"#))),
            });
        }
        let req = format!(r#"{{"client_id":"c","mutations":[{}]}}"#, mutations.join(","));
        let applied: Vec<String> = (1..200).map(|i| format!("\"m{i}\"")).collect();
        let resp = format!(r#"{{"applied":[{}],"rejected":[{{"mutation_id":"m0","reason":"validation"}}]}}"#, applied.join(","));
        let rec = push_record(&req, &resp, states);

        let full = build(&rec, &settings(KeepApplied::All, 65536));
        let counts = build(&rec, &settings(KeepApplied::None, 65536));
        let sampled = build(&rec, &settings(KeepApplied::Fraction(0.25), 65536));
        for rows in [&full, &counts, &sampled] {
            assert_eq!(rows.mutations.len(), 200, "every mutation keeps its row");
            assert_eq!((rows.request.applied_count, rows.request.rejected_count), (199, 1));
            assert_eq!(rows.request.request_body_moved.len(), 200, "no payload stays in the envelope");
            let rejected = &rows.mutations[0];
            assert!(rejected.detail_kept && rejected.payload.contains("new 0") && rejected.state_before.contains("old 0"));
        }
        assert!(full.mutations[1..].iter().all(|m| m.detail_kept && m.diff.contains("old")));
        let dropped: Vec<&MutationRow> = counts.mutations[1..].iter().collect();
        assert!(dropped.iter().all(|m| !m.detail_kept && m.payload.is_empty() && m.state_before.is_empty() && m.state_after.is_empty() && m.diff.is_empty()));
        assert!(dropped.iter().all(|m| m.has_state && m.outcome == MutationOutcome::Applied && m.version == 2));
        let kept = sampled.mutations[1..].iter().filter(|m| m.detail_kept).count();
        assert!((25..=75).contains(&kept), "about a quarter of 199 kept: {kept}");
        let again = build(&rec, &settings(KeepApplied::Fraction(0.25), 65536));
        assert_eq!(
            sampled.mutations.iter().map(|m| m.detail_kept).collect::<Vec<_>>(),
            again.mutations.iter().map(|m| m.detail_kept).collect::<Vec<_>>(),
            "the sample is chosen by mutation id, the same every time"
        );
        // The rebuilt body says which payloads were not kept.
        let rebuilt = super::envelope::rebuild(&counts.request.request_body, &counts.request.request_body_moved, &moved_payloads(&counts));
        let v: Value = serde_json::from_str(&rebuilt).unwrap();
        assert_eq!(v["mutations"][0]["payload"]["title"], "new 0");
        assert_eq!(v["mutations"][5]["payload"], super::envelope::NOT_KEPT);
    }

    /// A fresh user's input: one mutation id twice in a push, the host answering `applied`
    /// and `rejected` for it. Which position got which verdict cannot be told from the
    /// response, so under `capture.applied = "counts"` both keep their payloads (the refused
    /// one was dropped as applied), and the counts stay one applied, one rejected.
    #[test]
    fn a_mutation_id_answered_twice_keeps_both_payloads_under_any_policy() {
        let req = r#"{"client_id":"c","mutations":[
            {"mutation_id":"M","entity_id":"E","model":"Task","operation":"update","payload":{"notes":"REJ-PAYLOAD"},"version":1,"timestamp":1},
            {"mutation_id":"M","entity_id":"E","model":"Task","operation":"create","payload":{"notes":"APPLIED-PAYLOAD"},"version":1,"timestamp":1},
            {"mutation_id":"N","entity_id":"F","model":"Task","operation":"create","payload":{"notes":"ONCE"},"version":1,"timestamp":1}]}"#;
        let resp = r#"{"applied":["M","N"],"rejected":[{"mutation_id":"M","reason":"not_found"}]}"#;
        let rows = build(&push_record(req, resp, Vec::new()), &settings(KeepApplied::None, 65536));
        assert_eq!((rows.request.applied_count, rows.request.rejected_count), (2, 1));
        let kept: Vec<(bool, &str)> = rows.mutations.iter().map(|m| (m.detail_kept, m.payload.as_str())).collect();
        assert_eq!(kept, [(true, r#"{"notes":"REJ-PAYLOAD"}"#), (true, r#"{"notes":"APPLIED-PAYLOAD"}"#), (false, "")]);
    }

    /// A client that resends one id many times, each copy refused as a duplicate: every row
    /// gets its own verdict, in order (the verdict lists are read with a cursor: an id repeated
    /// n times once cost n² shifts).
    #[test]
    fn an_id_repeated_many_times_takes_its_verdicts_in_order() {
        let n = 2000;
        let mutation = |i: usize| format!(r#"{{"mutation_id":"M","entity_id":"E{i}","model":"Task","operation":"update","payload":{{}},"version":1,"timestamp":1}}"#);
        let req = format!(r#"{{"client_id":"c","mutations":[{}]}}"#, (0..n).map(mutation).collect::<Vec<_>>().join(","));
        let rejected: Vec<String> = (0..n).map(|i| format!(r#"{{"mutation_id":"M","reason":"{}"}}"#, if i % 2 == 0 { "duplicate" } else { "not_found" })).collect();
        let resp = format!(r#"{{"rejected":[{}]}}"#, rejected.join(","));
        let rows = build(&push_record(&req, &resp, Vec::new()), &settings(KeepApplied::All, 65536));
        assert_eq!(rows.mutations.len(), n);
        assert_eq!((rows.request.duplicate_count, rows.request.rejected_count), (n as u32 / 2, n as u32 / 2));
        for (i, m) in rows.mutations.iter().enumerate() {
            assert_eq!(m.reason, if i % 2 == 0 { "duplicate" } else { "not_found" }, "row {i}");
        }
    }

    #[test]
    fn credentials_in_identifiers_and_paths_inside_payloads() {
        let req = r#"{"client_id":"dev Bearer abc123def456","mutations":[{"mutation_id":"m1","entity_id":"e","model":"Task","operation":"create",
            "payload":{"title":"t","notes":"Authorization: Bearer FAKE-A","metadata":{"callback":"https://example.test/cb?access_token=FAKE-B&x=1","token":"FAKE-T"}},"version":1,"timestamp":1}]}"#;
        let rows = build(&push_record(req, r#"{"applied":["m1"]}"#, Vec::new()), &RowSettings { redactor: Redactor::default(), body_cap_bytes: 65536, decoded_max_bytes: 1 << 20, ..Default::default() });
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
