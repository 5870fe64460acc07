//! Turns a processed capture record into the request's server span and metric points.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanBuilder, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, KeyValue};

use super::Telemetry;
use crate::capture::{CaptureRecord, RequestKind};
use crate::store::schema::{MutationOutcome, RequestOutcome};
use crate::store::rows::Rows;
use crate::protocol::{PULL_PATH, PUSH_PATH};

/// Span events (mutations not applied) kept on one request span (the SDK's default event limit).
pub const MAX_MUTATION_EVENTS: usize = 128;

/// Reasons reported as themselves; anything else a host invents is `other`.
const KNOWN_REASONS: &[&str] = &["validation_failed", "error", "not_found", "duplicate", "conflict", ""];

/// `kv` with a string value cut to `limit` characters (the OpenTelemetry attribute limit rule:
/// strings are truncated, other types kept).
fn limited(kv: KeyValue, limit: usize) -> KeyValue {
    match &kv.value {
        opentelemetry::Value::String(s) if s.as_str().len() > limit => match s.as_str().char_indices().nth(limit) {
            Some((cut, _)) => KeyValue::new(kv.key, s.as_str()[..cut].to_owned()),
            None => kv,
        },
        _ => kv,
    }
}

fn bounded_reason(reason: &str) -> &str {
    if KNOWN_REASONS.contains(&reason) { reason } else { "other" }
}

impl Telemetry {
    /// Emits the server span and the metrics of one processed record (pipeline thread).
    pub fn record(&self, rec: &CaptureRecord, rows: &Rows) {
        if self.instruments.is_some() {
            self.record_metrics(rec, rows);
        }
        if self.tracer.is_some() {
            self.record_span(rec, rows);
        }
    }

    /// One ClickHouse insert's latency.
    pub fn record_insert(&self, seconds: f64) {
        if let Some(i) = &self.instruments {
            i.insert_duration.record(seconds, &[]);
        }
    }

    fn record_metrics(&self, rec: &CaptureRecord, rows: &Rows) {
        let Some(i) = &self.instruments else { return };
        let r = &rows.request;
        let kind = KeyValue::new("tether.kind", rec.kind.as_str());
        let outcome = KeyValue::new("tether.outcome", r.outcome.clone());
        let seconds = rec.duration.as_secs_f64();
        i.requests.add(1, &[kind.clone(), outcome.clone()]);
        i.request_duration.record(seconds, &[kind, outcome]);
        let route = if rec.kind == RequestKind::Push { PUSH_PATH } else { PULL_PATH };
        i.http_duration.record(
            seconds,
            &[
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(rec.http_status)),
            ],
        );
        if r.snapshot_count > 0 {
            i.snapshots.add(u64::from(r.snapshot_count), &[]);
        }
        // Aggregate first: one add per distinct attribute set, not one per mutation.
        let mut per: HashMap<(&str, &str, &str), u64> = HashMap::new();
        let mut conflicts: HashMap<&str, u64> = HashMap::new();
        let mut reasons: HashMap<&str, u64> = HashMap::new();
        for m in &rows.mutations {
            let outcome = MutationOutcome::parse(&m.outcome);
            if matches!(outcome, Some(MutationOutcome::Applied | MutationOutcome::Conflict | MutationOutcome::Duplicate)) {
                i.admit_model(&m.model);
            }
            *per.entry((&*m.model, &*m.operation, &*m.outcome)).or_default() += 1;
            match outcome {
                Some(MutationOutcome::Conflict) => *conflicts.entry(&*m.model).or_default() += 1,
                Some(MutationOutcome::Rejected | MutationOutcome::Duplicate) => *reasons.entry(bounded_reason(&m.reason)).or_default() += 1,
                _ => {}
            }
        }
        for ((model, op, outcome), n) in per {
            let op = if matches!(op, "create" | "update" | "delete") { op } else { "other" };
            i.mutations.add(
                n,
                &[
                    KeyValue::new("tether.model", i.model(model)),
                    KeyValue::new("tether.operation", op.to_owned()),
                    KeyValue::new("tether.outcome", outcome.to_owned()),
                ],
            );
        }
        for (model, n) in conflicts {
            i.conflicts.add(n, &[KeyValue::new("tether.model", i.model(model))]);
        }
        for (reason, n) in reasons {
            i.rejections.add(n, &[KeyValue::new("tether.reason", reason.to_owned())]);
        }
    }

    fn record_span(&self, rec: &CaptureRecord, rows: &Rows) {
        let Some(tracer) = &self.tracer else { return };
        let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(&rec.trace_id), SpanId::from_hex(&rec.span_id)) else { return };
        let r = &rows.request;
        let push = rec.kind == RequestKind::Push;
        let name = if push { crate::capture::SPAN_PUSH } else { crate::capture::SPAN_PULL };
        let route = if push { PUSH_PATH } else { PULL_PATH };
        let mut attrs = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", route),
            KeyValue::new("url.path", rec.path.clone()),
            KeyValue::new("http.response.status_code", i64::from(rec.http_status)),
            KeyValue::new("tether.request_id", rec.request_id.clone()),
            KeyValue::new("tether.kind", rec.kind.as_str()),
            KeyValue::new("tether.client_id", r.client_id.clone()),
            KeyValue::new("tether.client_version", r.client_version.clone()),
            KeyValue::new("tether.outcome", r.outcome.clone()),
        ];
        if push {
            attrs.extend([
                KeyValue::new("tether.mutation_count", i64::from(r.mutation_count)),
                KeyValue::new("tether.applied_count", i64::from(r.applied_count)),
                KeyValue::new("tether.rejected_count", i64::from(r.rejected_count)),
                KeyValue::new("tether.conflict_count", i64::from(r.conflict_count)),
                KeyValue::new("tether.duplicate_count", i64::from(r.duplicate_count)),
            ]);
        } else {
            attrs.extend([
                KeyValue::new("tether.snapshot_count", i64::from(r.snapshot_count)),
                KeyValue::new("tether.has_more", r.has_more),
            ]);
        }
        let failed = rec.http_status == 0 || rec.http_status >= 500 || rec.error.is_some();
        if failed {
            let kind = if rec.http_status == 0 || rec.error.is_some() { "transport".to_owned() } else { rec.http_status.to_string() };
            attrs.push(KeyValue::new("error.type", kind));
        }
        let limit = self.attribute_value_length_limit.unwrap_or(super::DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT);
        let attrs: Vec<KeyValue> = attrs.into_iter().map(|kv| limited(kv, limit)).collect();
        let start: SystemTime = rec.started_at.into();
        let parent = match &rec.parent {
            Some(sc) => Context::new().with_remote_span_context(sc.clone()),
            None => Context::new(),
        };
        let builder = SpanBuilder::from_name(name).with_kind(SpanKind::Server).with_start_time(start).with_attributes(attrs);
        let mut span = crate::capture::ids::with_preset_ids(trace_id, span_id, || tracer.build_with_context(builder, &parent));
        // Events for what went wrong only: applied mutations are counted on the span (and
        // every mutation is in ClickHouse); an event each doubled the export for nothing.
        let not_applied = rows.mutations.iter().filter(|m| m.outcome != MutationOutcome::Applied);
        for m in not_applied.take(MAX_MUTATION_EVENTS) {
            span.add_event_with_timestamp(
                "tether.mutation",
                start,
                [
                    KeyValue::new("tether.mutation_id", m.mutation_id.clone()),
                    KeyValue::new("tether.model", m.model.clone()),
                    KeyValue::new("tether.operation", m.operation.clone()),
                    KeyValue::new("tether.outcome", m.outcome.clone()),
                    KeyValue::new("tether.reason", m.reason.clone()),
                ]
                .into_iter()
                .map(|kv| limited(kv, limit))
                .collect(),
            );
        }
        if rec.client_gone && r.outcome == RequestOutcome::Unknown.as_str() {
            span.set_status(Status::error("client disconnected before the response"));
        } else if failed {
            span.set_status(Status::error(format!("HTTP {}", rec.http_status)));
        }
        span.end_with_timestamp(start + rec.duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CapturedBody;
    use crate::pipeline::redact::Redactor;
    use crate::pipeline::rows::{self, RowSettings};
    use crate::telemetry::instruments::{MAX_MODELS, OTHER_MODEL};
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    #[test]
    fn string_attributes_are_cut_to_the_limit_in_characters() {
        let kv = limited(KeyValue::new("k", "é".repeat(10)), 4);
        assert_eq!(kv.value.as_str(), "éééé");
        assert_eq!(limited(KeyValue::new("k", "short"), 4096).value.as_str(), "short");
        assert_eq!(limited(KeyValue::new("k", 12345_i64), 2).value, opentelemetry::Value::I64(12345));
    }

    fn body(text: String) -> CapturedBody {
        let n = text.len();
        CapturedBody { chunks: vec![bytes::Bytes::from(text)], retained: n, total: n as u64, complete: true, ..CapturedBody::default() }
    }

    fn push(models: &[String], applied: bool) -> CaptureRecord {
        let ms: Vec<String> = models
            .iter()
            .enumerate()
            .map(|(i, m)| format!(r#"{{"mutation_id":"m{i}","entity_id":"e{i}","model":"{m}","operation":"create","payload":{{}},"version":1,"timestamp":1}}"#))
            .collect();
        let ids: Vec<String> = (0..models.len()).map(|i| format!("m{i}")).collect();
        let resp = if applied {
            serde_json::json!({"applied": ids})
        } else {
            serde_json::json!({"rejected": ids.iter().map(|id| serde_json::json!({"mutation_id": id, "reason": "validation_failed"})).collect::<Vec<_>>()})
        };
        CaptureRecord {
            request_id: "r".into(),
            kind: RequestKind::Push,
            started_at: chrono::Utc::now(),
            duration: std::time::Duration::from_millis(1),
            http_status: 200,
            client_version: String::new(),
            request_body: body(format!(r#"{{"client_id":"c","mutations":[{}]}}"#, ms.join(","))),
            response_body: body(resp.to_string()),
            states: Vec::new(),
            trace_id: String::new(),
            span_id: String::new(),
            parent: None,
            path: PUSH_PATH.into(),
            replay_of: String::new(),
            error: None,
            client_gone: false,
        }
    }

    /// The issue's input end to end through `record`: 51 junk model names pushed first (the
    /// host rejects them), then `Task` mutations the host applies.
    #[test]
    fn only_models_the_host_accepted_take_a_label() {
        let provider = SdkMeterProvider::builder().build();
        let telemetry = Telemetry::from_providers(None, Some(&provider));
        let settings = RowSettings { redactor: Redactor::default(), body_cap_bytes: 1 << 16, decoded_max_bytes: 1 << 20, ..Default::default() };
        let junk: Vec<String> = (0..=MAX_MODELS).map(|i| format!("Junk{i}")).collect();
        let rec = push(&junk, false);
        telemetry.record(&rec, &rows::build(&rec, &settings));
        let rec = push(&["Task".to_owned()], true);
        telemetry.record(&rec, &rows::build(&rec, &settings));
        let i = telemetry.instruments.as_ref().unwrap();
        assert_eq!(i.model("Task"), "Task");
        assert_eq!(i.model("Junk0"), OTHER_MODEL);
    }
}
