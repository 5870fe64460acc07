//! Property: for generated pushes (compressed bodies, odd numbers, invalid timestamps, broken
//! strings, clients that went away), the rows the pipeline builds, and the rows ClickHouse
//! then holds, describe the push exactly. The records are built as the capture layers hand
//! them over; all generated rows are written through the real writer to a real ClickHouse and
//! read back.

mod common;
#[path = "common/content_encoding.rs"]
mod content_encoding;

use std::cell::RefCell;

use bytes::Bytes;
use content_encoding::encode;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use tether_pro::capture::{CaptureRecord, CapturedBody, MutationState, RequestKind, StateValue};
use tether_pro::pipeline::redact::Redactor;
use tether_pro::internals::rows::{self, RowSettings, Rows};
use tether_pro::pipeline::{ClickHouseWriter, Framing, MutationRow, RequestRow, envelope};

const CLIENT: &str = "01JCCCCCCCCCCCCCCCCCCCCCC1";

#[derive(Debug, Clone)]
enum Ts {
    Valid(i64),
    Year3000,
    Negative,
    Float,
    Iso,
    Missing,
}

impl Ts {
    /// The `,"timestamp":...` member as sent.
    fn member(&self) -> String {
        match self {
            Ts::Valid(ms) => format!(r#","timestamp":{ms}"#),
            Ts::Year3000 => r#","timestamp":32503680000000"#.into(),
            Ts::Negative => r#","timestamp":-5"#.into(),
            Ts::Float => r#","timestamp":1716000000000.5"#.into(),
            Ts::Iso => r#","timestamp":"2024-05-18T10:00:00Z""#.into(),
            Ts::Missing => String::new(),
        }
    }

    /// What the row must hold: the time (ms) when valid, else the raw text.
    fn expected(&self) -> (Option<i64>, &'static str) {
        match self {
            Ts::Valid(ms) => (Some(*ms), ""),
            Ts::Year3000 => (None, "32503680000000"),
            Ts::Negative => (None, "-5"),
            Ts::Float => (None, "1716000000000.5"),
            Ts::Iso => (None, r#""2024-05-18T10:00:00Z""#),
            Ts::Missing => (None, ""),
        }
    }
}

#[derive(Debug, Clone)]
struct GenMutation {
    ts: Ts,
    /// Numbers as sent: a big integer, a long decimal, one with an exponent.
    numbers: [String; 3],
    broken: bool,
    applied: bool,
    state: bool,
}

#[derive(Debug, Clone)]
struct GenPush {
    mutations: Vec<GenMutation>,
    /// `Content-Encoding` of the request and of the response body.
    coding: &'static str,
    response_coding: &'static str,
    client_gone: bool,
}

fn ts() -> impl Strategy<Value = Ts> {
    prop_oneof![
        3 => (0i64..=10_413_791_999_999).prop_map(Ts::Valid),
        1 => Just(Ts::Year3000),
        1 => Just(Ts::Negative),
        1 => Just(Ts::Float),
        1 => Just(Ts::Iso),
        1 => Just(Ts::Missing),
    ]
}

fn numbers() -> impl Strategy<Value = [String; 3]> {
    ("[1-9][0-9]{19,39}", "-?0\\.[0-9]{17,30}[1-9]", "[1-9]\\.[0-9]{1,5}e[-+][1-9][0-9]?").prop_map(|(a, b, c)| [a, b, c])
}

fn push() -> impl Strategy<Value = GenPush> {
    let m = (ts(), numbers(), prop::bool::weighted(0.15), any::<bool>(), any::<bool>())
        .prop_map(|(ts, numbers, broken, applied, state)| GenMutation { ts, numbers, broken, applied, state });
    let coding = || prop::sample::select(vec!["identity", "gzip", "deflate", "br", "zstd"]);
    (prop::collection::vec(m, 0..5), coding(), coding(), prop::bool::weighted(0.2))
        .prop_map(|(mutations, coding, response_coding, client_gone)| GenPush { mutations, coding, response_coding, client_gone })
}

fn mutation_id(i: usize) -> String {
    format!("01JM{i:022}")
}

fn payload_text(m: &GenMutation, i: usize) -> String {
    let title = if m.broken { r#""\ud83d""#.to_owned() } else { format!(r#""t{i}""#) };
    let [a, b, c] = &m.numbers;
    format!(r#"{{"title":{title},"big":{a},"frac":{b},"exp":{c}}}"#)
}

fn request_text(p: &GenPush) -> String {
    let ms: Vec<String> = p
        .mutations
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                r#"{{"mutation_id":"{}","entity_id":"01JE{i:022}","model":"Task","operation":"create","payload":{},"version":1{}}}"#,
                mutation_id(i),
                payload_text(m, i),
                m.ts.member()
            )
        })
        .collect();
    format!(r#"{{"client_id":"{CLIENT}","mutations":[{}]}}"#, ms.join(","))
}

fn body(bytes: Vec<u8>, coding: &str) -> CapturedBody {
    let len = bytes.len();
    CapturedBody {
        chunks: vec![Bytes::from(bytes)],
        retained: len,
        total: len as u64,
        complete: true,
        content_encoding: if coding == "identity" { String::new() } else { coding.to_owned() },
        declared_length: Some(len as u64),
    }
}

/// The record the capture layers hand over for this push, as the reference server would
/// answer it: 400 for a body with a broken string, else per-mutation verdicts; no answer at
/// all when the client went away (states still reported).
fn record(p: &GenPush, n: usize) -> CaptureRecord {
    let broken = p.mutations.iter().any(|m| m.broken);
    let (status, response) = if p.client_gone {
        (0, None)
    } else if broken {
        (400, Some(r#"{"error":"invalid_json","message":"request body is not valid JSON: lone leading surrogate"}"#.to_owned()))
    } else {
        let applied: Vec<String> = p.mutations.iter().enumerate().filter(|(_, m)| m.applied).map(|(i, _)| format!("\"{}\"", mutation_id(i))).collect();
        let rejected: Vec<String> = p
            .mutations
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.applied)
            .map(|(i, _)| format!(r#"{{"mutation_id":"{}","reason":"validation_failed","data":{{"messages":{{}}}}}}"#, mutation_id(i)))
            .collect();
        (200, Some(format!(r#"{{"applied":[{}],"rejected":[{}],"conflicts":[]}}"#, applied.join(","), rejected.join(","))))
    };
    let states = if broken && !p.client_gone {
        Vec::new()
    } else {
        p.mutations
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state)
            .map(|(i, m)| MutationState { mutation_id: mutation_id(i), before: None, after: Some(StateValue::Json(payload_text(m, i))) })
            .collect()
    };
    let text = request_text(p);
    CaptureRecord {
        request_id: format!("01JR{n:022}"),
        kind: RequestKind::Push,
        started_at: chrono::Utc::now(),
        duration: std::time::Duration::from_millis(1),
        http_status: status,
        client_version: "prop/1".into(),
        request_body: body(encode(p.coding, text.as_bytes()), p.coding),
        response_body: response.map(|r| body(encode(p.response_coding, r.as_bytes()), p.response_coding)).unwrap_or_default(),
        states,
        trace_id: String::new(),
        span_id: String::new(),
        parent: None,
        path: "/tether/push".into(),
        replay_of: String::new(),
        error: None,
        client_gone: p.client_gone,
    }
}

/// The rows describe the push exactly.
fn check(p: &GenPush, rows: &Rows) -> Result<(), TestCaseError> {
    let r = &rows.request;
    let broken = p.mutations.iter().any(|m| m.broken);
    prop_assert_eq!(&r.client_id, CLIENT);
    prop_assert_eq!(r.mutation_count as usize, p.mutations.len());
    prop_assert_eq!(rows.mutations.len(), p.mutations.len());
    prop_assert_eq!(r.request_content_encoding.as_str(), if p.coding == "identity" { "" } else { p.coding });
    prop_assert!(!r.request_body_truncated);
    if !p.client_gone {
        prop_assert_eq!(r.response_content_encoding.as_str(), if p.response_coding == "identity" { "" } else { p.response_coding });
        prop_assert!(!r.response_body_truncated);
        prop_assert!(r.response_body.starts_with('{'), "response stored as JSON: {}", r.response_body);
    }
    let applied = p.mutations.iter().filter(|m| m.applied).count();
    let outcome = if p.client_gone {
        "unknown"
    } else if broken {
        "error"
    } else if applied == p.mutations.len() {
        "ok"
    } else if applied > 0 {
        "partial"
    } else {
        "rejected"
    };
    prop_assert_eq!(r.outcome.as_str(), outcome);
    if broken && !p.client_gone {
        prop_assert!(r.error.contains("invalid string"), "{}", r.error);
    }
    // The body as the dashboard shows it: the envelope with the payloads the mutation rows hold
    // put back (each payload is stored once, issue 15).
    let moved: Vec<envelope::MovedPayload> = rows.mutations.iter().map(envelope::MovedPayload::of).collect();
    let body = envelope::rebuild(&r.request_body, &r.request_body_moved, &moved);
    for (i, (g, m)) in p.mutations.iter().zip(&rows.mutations).enumerate() {
        prop_assert_eq!(&m.mutation_id, &mutation_id(i));
        let (ms, raw) = g.ts.expected();
        prop_assert_eq!(m.client_timestamp.map(|t| t.timestamp_millis()), ms);
        prop_assert_eq!(m.client_timestamp_raw.as_str(), raw);
        let (outcome, reason) = match (p.client_gone, broken, g.broken, g.applied) {
            (true, ..) => ("unknown", "client_disconnected"),
            (false, true, true, _) => ("unprocessed", "invalid_string"),
            (false, true, false, _) => ("unprocessed", "http_400"),
            (false, false, _, true) => ("applied", ""),
            (false, false, _, false) => ("rejected", "validation_failed"),
        };
        prop_assert_eq!((&*m.outcome, m.reason.as_str()), (outcome, reason));
        let has_state = g.state && (!broken || p.client_gone);
        prop_assert_eq!(m.has_state, has_state);
        for n in &g.numbers {
            prop_assert!(m.payload.contains(n.as_str()), "payload lost {}: {}", n, m.payload);
            prop_assert!(body.contains(n.as_str()), "request body lost {}", n);
            if has_state {
                prop_assert!(m.state_after.contains(n.as_str()), "state lost {}: {}", n, m.state_after);
            }
            if has_state && matches!(outcome, "applied" | "unknown") {
                prop_assert!(m.diff.contains(n.as_str()), "diff lost {}: {}", n, m.diff);
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn generated_pushes_are_stored_exactly_as_they_happened() {
    let settings = RowSettings { redactor: Redactor::default(), body_cap_bytes: 1 << 20, decoded_max_bytes: 1 << 20, ..Default::default() };
    let built = RefCell::new(Vec::<(GenPush, Rows)>::new());
    let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
    runner
        .run(&push(), |p| {
            let n = built.borrow().len();
            let rows = rows::build(&record(&p, n), &settings);
            check(&p, &rows)?;
            built.borrow_mut().push((p, rows));
            Ok(())
        })
        .unwrap();

    // Stored: the same rows, read back from ClickHouse, say the same.
    let ch = common::clickhouse().await;
    ch.migrate().await;
    let built = built.into_inner();
    let requests: Vec<_> = built.iter().map(|(_, r)| r.request.clone()).collect();
    let mutations: Vec<_> = built.iter().flat_map(|(_, r)| r.mutations.clone()).collect();
    ClickHouseWriter::new(ch.client()).write(&requests, &mutations, "prop", &|| None, &|_| {}).await.unwrap();
    let stored = ch
        .rows("SELECT request_id, position, client_timestamp, client_timestamp_raw, outcome, reason, payload, diff FROM sync_mutations ORDER BY request_id, position")
        .await;
    assert_eq!(stored.len(), mutations.len());
    let mut sorted = mutations.clone();
    sorted.sort_by(|a, b| (&a.request_id, a.position).cmp(&(&b.request_id, b.position)));
    for (row, m) in stored.iter().zip(&sorted) {
        let ts = m.client_timestamp.map(|t| Value::String(t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())).unwrap_or(Value::Null);
        assert_eq!(row["client_timestamp"], ts, "{row}");
        assert_eq!(row["client_timestamp_raw"], m.client_timestamp_raw.as_str());
        assert_eq!((row["outcome"].as_str(), row["reason"].as_str()), (Some(&*m.outcome), Some(m.reason.as_str())));
        assert_eq!(row["payload"], m.payload.as_str());
        assert_eq!(row["diff"], m.diff.as_str());
    }
    let stored = ch.rows("SELECT request_id, client_id, outcome, request_content_encoding, request_body FROM sync_requests ORDER BY request_id").await;
    assert_eq!(stored.len(), requests.len());
    for (row, r) in stored.iter().zip(&requests) {
        assert_eq!(row["request_id"], r.request_id.as_str());
        assert_eq!((row["client_id"].as_str(), row["outcome"].as_str()), (Some(r.client_id.as_str()), Some(r.outcome.as_str())));
        assert_eq!(row["request_content_encoding"], r.request_content_encoding.as_str());
        assert_eq!(row["request_body"], r.request_body.as_str());
    }

    // Issue 15: the pipeline encodes rows itself (RowBinary, and ClickHouse's LZ4 frames for a
    // remote server). The same rows in LZ4 frames, inserted twice with one token (a retry
    // after a lost answer), are stored once; read back through the clickhouse crate's own
    // decoder, every column of every row, in either framing, is what was built.
    let lz4 = common::clickhouse().await;
    lz4.migrate().await;
    let writer = ClickHouseWriter::new(lz4.client()).with_framing(Framing::Lz4);
    for _ in 0..2 {
        writer.write(&requests, &mutations, "prop", &|| None, &|_| {}).await.unwrap();
    }
    // started_at is stored to the microsecond (DateTime64(6)).
    let micros = |t: chrono::DateTime<chrono::Utc>| chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap();
    let mut requests = requests;
    requests.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    requests.iter_mut().for_each(|r| r.started_at = micros(r.started_at));
    sorted.iter_mut().for_each(|m| m.started_at = micros(m.started_at));
    for (name, db) in [("plain", &ch), ("lz4", &lz4)] {
        let back: Vec<MutationRow> = db.client().query("SELECT ?fields FROM sync_mutations ORDER BY request_id, position").fetch_all().await.unwrap();
        assert_eq!(back.len(), sorted.len(), "{name}: every mutation row once");
        for (b, m) in back.iter().zip(&sorted) {
            assert_eq!(b, m, "{name}");
        }
        let back: Vec<RequestRow> = db.client().query("SELECT ?fields FROM sync_requests ORDER BY request_id").fetch_all().await.unwrap();
        assert_eq!(back.len(), requests.len(), "{name}: every request row once");
        for (b, r) in back.iter().zip(&requests) {
            assert_eq!(b, r, "{name}");
        }
    }
}
