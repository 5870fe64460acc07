//! `SyncLayer`: the `tracing` layer that turns a capture span (opened by `CaptureLayer`) and
//! the data attached to it into one `CaptureRecord`, handed to the bounded queue when the
//! span closes.
//!
//! Bodies and record states never travel as tracing fields (every other layer, a log
//! formatter or the OpenTelemetry exporter, would see them). They are attached to the span's
//! extensions through `with_request_data`, the same downcast mechanism
//! tracing-opentelemetry uses for its context. Without a `SyncLayer` in the subscriber those
//! calls find nothing and cost a failed downcast.

use std::any::TypeId;
use std::marker::PhantomData;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::queue::CaptureQueue;
use super::record::{CaptureRecord, CapturedBody, MutationState, RequestKind};
use super::{CAPTURE_TARGET, FIELD_CLIENT_VERSION, FIELD_REQUEST_ID, FIELD_STATUS, SPAN_PULL, SPAN_PUSH};

/// Per-span state, kept in the registry's span extensions until the span closes.
#[derive(Debug)]
pub(crate) struct RequestData {
    pub request_id: String,
    pub kind: RequestKind,
    pub started_at: DateTime<Utc>,
    pub started: Instant,
    pub client_version: String,
    pub http_status: u16,
    pub request_body: Option<CapturedBody>,
    pub response_body: Option<CapturedBody>,
    pub states: Vec<MutationState>,
    pub replay_of: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent: Option<opentelemetry::trace::SpanContext>,
    pub path: String,
    pub error: Option<String>,
    pub client_gone: bool,
}

/// Reaches the `RequestData` of a span (or of its nearest capture ancestor) from outside
/// the layer. Stored in the layer; found with `Dispatch::downcast_ref`.
#[derive(Clone, Copy)]
pub(crate) struct WithRequestData(GetRequestData);

type GetRequestData = fn(&Dispatch, &Id, &mut dyn FnMut(&mut RequestData));

/// Runs `f` on the capture data of `span` or its nearest capture ancestor, if a
/// `SyncLayer` is installed. Returns whether it ran.
pub(crate) fn with_request_data(span: &tracing::Span, f: &mut dyn FnMut(&mut RequestData)) -> bool {
    let mut ran = false;
    span.with_subscriber(|(id, dispatch)| {
        if let Some(get) = dispatch.downcast_ref::<WithRequestData>() {
            (get.0)(dispatch, id, &mut |d| {
                ran = true;
                f(d)
            });
        }
    });
    ran
}

/// The capture layer. Add it to a `tracing_subscriber::registry()`; see the crate docs.
pub struct SyncLayer<S> {
    queue: CaptureQueue,
    get: WithRequestData,
    _s: PhantomData<fn(S)>,
}

impl<S> SyncLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    /// A layer feeding `queue` (the pipeline makes one; a custom consumer of the queue, such as
    /// the host-overhead benchmark's floor variant, can too).
    pub fn new(queue: CaptureQueue) -> Self {
        SyncLayer { queue, get: WithRequestData(Self::get_request_data), _s: PhantomData }
    }

    fn get_request_data(dispatch: &Dispatch, id: &Id, f: &mut dyn FnMut(&mut RequestData)) {
        let Some(subscriber) = dispatch.downcast_ref::<S>() else { return };
        let Some(span) = subscriber.span(id) else { return };
        for s in span.scope() {
            let mut ext = s.extensions_mut();
            if let Some(data) = ext.get_mut::<RequestData>() {
                f(data);
                return;
            }
        }
    }
}

/// Copies the few plain fields we keep from the capture span.
struct FieldVisitor<'a>(&'a mut RequestData);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            FIELD_REQUEST_ID => self.0.request_id = value.to_owned(),
            FIELD_CLIENT_VERSION => self.0.client_version = value.to_owned(),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == FIELD_STATUS {
            self.0.http_status = value.min(u16::MAX as u64) as u16;
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if value >= 0 {
            self.record_u64(field, value as u64);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

fn is_capture_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == CAPTURE_TARGET && (meta.name() == SPAN_PUSH || meta.name() == SPAN_PULL)
}

impl<S> Layer<S> for SyncLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !is_capture_span(meta) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // A second SyncLayer in the same registry (tether-pro started twice) leaves the span
        // to the first: inserting the same extension twice panics on the host's thread.
        if span.extensions().get::<RequestData>().is_some() {
            return;
        }
        let mut data = RequestData {
            request_id: String::new(),
            kind: if meta.name() == SPAN_PUSH { RequestKind::Push } else { RequestKind::Pull },
            started_at: Utc::now(),
            started: Instant::now(),
            client_version: String::new(),
            http_status: 0,
            request_body: None,
            response_body: None,
            states: Vec::new(),
            replay_of: String::new(),
            trace_id: String::new(),
            span_id: String::new(),
            parent: None,
            path: String::new(),
            error: None,
            client_gone: false,
        };
        attrs.record(&mut FieldVisitor(&mut data));
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<RequestData>() {
            values.record(&mut FieldVisitor(data));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<RequestData>() else { return };
        let request_body = data.request_body.unwrap_or_default();
        let response_body = data.response_body.unwrap_or_default();
        let bytes = super::record::approx_bytes(request_body.retained, response_body.retained, data.states.len());
        let duration = data.started.elapsed();
        self.queue.offer(bytes, move || CaptureRecord {
            request_id: data.request_id,
            kind: data.kind,
            started_at: data.started_at,
            duration,
            http_status: data.http_status,
            client_version: data.client_version,
            request_body,
            response_body,
            states: data.states,
            trace_id: data.trace_id,
            span_id: data.span_id,
            parent: data.parent,
            path: data.path,
            replay_of: data.replay_of,
            error: data.error,
            client_gone: data.client_gone,
        });
    }

    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == TypeId::of::<WithRequestData>() {
            Some(&self.get as *const WithRequestData as *const ())
        } else {
            None
        }
    }
}

/// Per-layer filter: the `SyncLayer` sees only capture spans. Interest is decided once per
/// callsite; everything else never reaches the layer (and other layers are unaffected).
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureInterest;

impl<S> Filter<S> for CaptureInterest {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        is_capture_span(meta)
    }
    /// `sometimes`, never `always`, for capture spans: with `always` the macros skip
    /// `enabled()`, and `Filtered` can then read a per-layer verdict that a previous,
    /// unrelated `enabled()` call on this thread left behind (tokio-rs/tracing#2519, #2704,
    /// the fix proposed upstream in #3572). One `enabled()` call per request.
    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if is_capture_span(meta) { tracing::subscriber::Interest::sometimes() } else { tracing::subscriber::Interest::never() }
    }

    /// Capture spans are `INFO`: said explicitly, so the registry's level hint never drops
    /// below it because of this filter.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}
