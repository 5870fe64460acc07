//! `rows::build`: a captured push or pull turned into the stored rows.
//!
//! Input: `request` NUL `response`, both valid JSON, is a whole push as captured (seeds:
//! simulator traffic); anything else drives `arbitrary` to build a push (or pull) whose
//! fields are sometimes of the wrong type, payloads and rejection data holding secrets at any
//! depth, a response mentioning some of the mutations, reported before/after states (as
//! objects or JSON text), bodies cut short by the capture limit or split into chunks, and a
//! small or large column cap.
//!
//! Checked: `build` never panics, and no secret (a value under a configured key anywhere in
//! the bodies or states, or a token the generator put in a string where a value rule must
//! find it: header line, URL, JWT...) appears in any String column of any row.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tether_pro::capture::{CaptureRecord, CapturedBody, MutationState, RequestKind, StateValue};
use tether_pro::pipeline::redact::{DEFAULT_KEYS, Redactor};
use tether_pro::internals::rows::{self, RowSettings, Rows};
use tether_pro_fuzz::{Carried, Gen, Oracle, assert_no_secret, checkable_carried, checkable_secrets};

const IDS: &[&str] = &["01J0000000000000000000000A", "01J0000000000000000000000B", "m-3", ""];
const MODELS: &[&str] = &["Task", "Project", "Note", "X"];
const OPERATIONS: &[&str] = &["create", "update", "delete", "upsert"];
const REASONS: &[&str] = &["validation_failed", "error", "not_found", "duplicate", "conflict", "rate_limited"];

struct Input {
    kind: RequestKind,
    request: Value,
    response: Value,
    states: Vec<MutationState>,
    status: u16,
    cut_request: Option<usize>,
    cut_response: Option<usize>,
    split: usize,
    cap: usize,
    error: Option<String>,
    /// Tokens the generator put where a value rule must find them.
    carried: Vec<Carried>,
}

/// A string field, or (sometimes) a value of the wrong type.
fn field(g: &mut Gen, u: &mut Unstructured, pool: &[&str]) -> Result<Value> {
    Ok(if u.ratio(1u8, 8)? { g.value(u, 2)? } else { Value::String(u.choose(pool)?.to_string()) })
}

fn generated(u: &mut Unstructured) -> Result<Input> {
    let mut g = Gen::new(DEFAULT_KEYS, 5);
    let kind = if u.ratio(1u8, 6)? { RequestKind::Pull } else { RequestKind::Push };
    let n = u.int_in_range(0usize..=4)?;
    let mut mutations = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = field(&mut g, u, IDS)?;
        ids.push(id.clone());
        let mut m = json!({
            "mutation_id": id,
            "entity_id": field(&mut g, u, IDS)?,
            "model": field(&mut g, u, MODELS)?,
            "operation": field(&mut g, u, OPERATIONS)?,
            "payload": if u.ratio(1u8, 8)? { g.value(u, 1)? } else { Value::Object(g.object(u, 1)?) },
            "version": g.scalar(u)?,
            "timestamp": if u.arbitrary()? { json!(1_716_000_000_000i64) } else { g.scalar(u)? },
        });
        if u.ratio(1u8, 6)? {
            let k = g.key(u)?;
            m[k] = g.value(u, 2)?;
        }
        mutations.push(m);
    }
    let mut request = json!({ "client_id": field(&mut g, u, IDS)?, "mutations": mutations });
    if u.ratio(1u8, 8)? {
        let k = g.key(u)?;
        request[k] = g.value(u, 1)?;
    }
    if u.ratio(1u8, 16)? {
        request = g.value(u, 0)?;
    }

    let (mut applied, mut rejected, mut conflicts) = (Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        match u.int_in_range(0u8..=4)? {
            0 => {}
            1 | 2 => applied.push(id.clone()),
            3 => {
                let data = match u.int_in_range(0u8..=2)? {
                    0 => Value::Null,
                    1 => {
                        let (field, message) = (g.key(u)?, g.string(u)?);
                        json!({ "messages": { field: [message] } })
                    }
                    _ => g.value(u, 1)?,
                };
                rejected.push(json!({ "mutation_id": id, "reason": field(&mut g, u, REASONS)?, "data": data }));
            }
            _ => conflicts.push(json!({
                "mutation_id": id,
                "reason": "conflict",
                "data": { "server_state": Value::Object(g.object(u, 2)?), "server_updated_at": "2026-05-18T10:00:00Z" },
            })),
        }
    }
    let mut response = match kind {
        RequestKind::Push => json!({ "applied": applied, "rejected": rejected, "conflicts": conflicts }),
        RequestKind::Pull => json!({ "snapshots": [{"entity_id": "e", "model": "Task", "operation": "upsert", "payload": Value::Object(g.object(u, 2)?)}], "new_sync_cursor": 1, "has_more": u.arbitrary::<bool>()? }),
    };
    if u.ratio(1u8, 8)? {
        response = json!({ "error": g.string(u)?, "message": g.value(u, 1)? });
    }

    let mut states = Vec::new();
    for id in &ids {
        if u.ratio(1u8, 2)? {
            let mut state = |u: &mut Unstructured| -> Result<Option<StateValue>> {
                Ok(match u.int_in_range(0u8..=3)? {
                    0 => None,
                    1 => Some(StateValue::Object(g.object(u, 1)?)),
                    2 => Some(StateValue::Json(Value::Object(g.object(u, 1)?).to_string())),
                    _ => Some(StateValue::Json(u.arbitrary::<String>()?)),
                })
            };
            let before = state(u)?;
            let after = state(u)?;
            states.push(MutationState { mutation_id: id.as_str().unwrap_or_default().to_owned(), before, after });
        }
    }
    let status = *u.choose(&[200u16, 200, 200, 207, 400, 409, 422, 500, 0])?;
    let cut_request = if u.ratio(1u8, 6)? { Some(u.arbitrary::<u16>()? as usize) } else { None };
    let cut_response = if u.ratio(1u8, 8)? { Some(u.arbitrary::<u16>()? as usize) } else { None };
    let split = u.arbitrary::<u16>()? as usize;
    let cap = *u.choose(&[16usize, 100, 1000, 65536])?;
    let error = if u.ratio(1u8, 10)? { Some(u.arbitrary::<String>()?) } else { None };
    Ok(Input { kind, request, response, states, status, cut_request, cut_response, split, cap, error, carried: g.carried })
}

/// A body as the capture layer hands it over: maybe cut at `cut` bytes, in two chunks.
fn body(text: &[u8], cut: Option<usize>, split: usize) -> CapturedBody {
    let total = text.len();
    let retained = cut.map_or(total, |c| c.min(total));
    let kept = &text[..retained];
    let at = split.min(retained);
    let chunks = [&kept[..at], &kept[at..]].into_iter().filter(|c| !c.is_empty()).map(Bytes::copy_from_slice).collect();
    CapturedBody { chunks, retained, total: total as u64, complete: cut.is_none(), ..CapturedBody::default() }
}

fn check(input: Input) {
    let request_text = input.request.to_string();
    let response_text = input.response.to_string();
    let rec = CaptureRecord {
        request_id: "01JREQUEST0000000000000000".into(),
        kind: input.kind,
        started_at: Default::default(),
        duration: std::time::Duration::from_millis(3),
        http_status: input.status,
        client_version: "fuzz/1.0".into(),
        request_body: body(request_text.as_bytes(), input.cut_request, input.split),
        response_body: body(response_text.as_bytes(), input.cut_response, input.split / 2),
        states: input.states,
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: "b7ad6b7169203331".into(),
        parent: None,
        path: "/tether/push".into(),
        replay_of: String::new(),
        error: input.error.clone(),
        client_gone: false,
    };
    let settings = RowSettings { redactor: Redactor::default(), body_cap_bytes: input.cap, decoded_max_bytes: 1 << 20, ..Default::default() };
    let Rows { request, mutations } = rows::build(&rec, &settings);

    // Secrets: every scalar under a configured key in the bodies and the reported states.
    let oracle = Oracle::new(DEFAULT_KEYS);
    let (mut secrets, mut visible) = (Vec::new(), Vec::new());
    oracle.split(&input.request, &mut secrets, &mut visible);
    oracle.split(&input.response, &mut secrets, &mut visible);
    for st in &rec.states {
        for v in [&st.before, &st.after].into_iter().flatten() {
            if let Some(o) = v.clone().into_object() {
                oracle.split(&Value::Object(o), &mut secrets, &mut visible);
            }
            if let StateValue::Json(text) = v {
                visible.push(text.clone());
            }
        }
        visible.push(st.mutation_id.clone());
    }
    let error = input.error.unwrap_or_default();
    // The reason tether-pro writes for an error answer (`http_500`): generated text, not a
    // secret (a fuzzed value `http_5` is merely a part of it).
    let http_reason = format!("http_{}", rec.http_status);
    let fixed = [
        rec.request_id.as_str(), &rec.client_version, &rec.trace_id, &rec.span_id, &rec.path, &error, &http_reason,
        "applied rejected conflict duplicate unprocessed ok partial error push pull no response",
        "…[truncated: bytes in all] [REDACTED] HTTP http_ tether_id",
        "unknown client_disconnected invalid_string …[incomplete: the body stream ended early after bytes of (Content-Length) received]",
    ];
    let mut secrets = checkable_secrets(secrets, &visible, &fixed);
    // Tokens in credential positions of strings, anywhere (a body cut short may have lost the
    // `@` that makes a URL password one).
    let mut inputs = format!("{request_text}{response_text}{error}");
    for st in &rec.states {
        for v in [&st.before, &st.after].into_iter().flatten() {
            match v {
                StateValue::Json(text) => inputs.push_str(text),
                other => inputs.push_str(&other.clone().into_object().map(Value::Object).unwrap_or_default().to_string()),
            }
        }
    }
    let cut = input.cut_request.is_some() || input.cut_response.is_some();
    // Object keys are stored as sent (README "Redaction": a documented limit): a token the
    // generator carried that also ends up inside a key is not expected to be cut there.
    let mut keys = Vec::new();
    collect_keys(&input.request, &mut keys);
    collect_keys(&input.response, &mut keys);
    for st in &rec.states {
        for v in [&st.before, &st.after].into_iter().flatten() {
            if let Some(o) = v.clone().into_object() {
                collect_keys(&Value::Object(o), &mut keys);
            }
        }
    }
    secrets.extend(checkable_carried(&input.carried, &inputs, cut).into_iter().filter(|t| !keys.iter().any(|k| k.contains(t.as_str()))));
    if secrets.is_empty() {
        return;
    }

    let r = &request;
    for (name, text) in [
        ("request_id", &r.request_id), ("kind", &r.kind), ("client_id", &r.client_id), ("client_version", &r.client_version),
        ("outcome", &r.outcome), ("request_body", &r.request_body), ("response_body", &r.response_body), ("error", &r.error),
        ("trace_id", &r.trace_id), ("span_id", &r.span_id), ("replay_of", &r.replay_of),
    ] {
        assert_no_secret(&format!("sync_requests.{name}"), text, &secrets);
    }
    for (reason, _) in &r.rejected_by_reason {
        assert_no_secret("sync_requests.rejected_by_reason", reason, &secrets);
    }
    for m in &mutations {
        for (name, text) in [
            ("request_id", m.request_id.as_ref()), ("mutation_id", m.mutation_id.as_ref()), ("entity_id", m.entity_id.as_ref()), ("model", m.model.as_ref()),
            ("operation", m.operation.as_ref()), ("client_id", m.client_id.as_ref()), ("outcome", m.outcome.as_ref()), ("reason", m.reason.as_ref()),
            ("reason_data", m.reason_data.as_ref()), ("payload", m.payload.as_ref()), ("state_before", m.state_before.as_ref()),
            ("state_after", m.state_after.as_ref()), ("diff", m.diff.as_ref()), ("trace_id", m.trace_id.as_ref()), ("span_id", m.span_id.as_ref()),
            ("client_timestamp_raw", m.client_timestamp_raw.as_ref()),
        ] {
            assert_no_secret(&format!("sync_mutations.{name}"), text, &secrets);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(nul) = data.iter().position(|&b| b == 0)
        && let (Ok(request), Ok(response)) =
            (serde_json::from_slice::<Value>(&data[..nul]), serde_json::from_slice::<Value>(&data[nul + 1..]))
    {
        check(Input {
            kind: RequestKind::Push,
            request,
            response,
            states: Vec::new(),
            status: 200,
            cut_request: None,
            cut_response: None,
            split: 0,
            cap: 65536,
            error: None,
            carried: Vec::new(),
        });
        return;
    }
    let mut u = Unstructured::new(data);
    if let Ok(input) = generated(&mut u) {
        check(input);
    }
});

/// Every object key at any depth of `v`.
fn collect_keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                collect_keys(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_keys(x, out)),
        _ => {}
    }
}
