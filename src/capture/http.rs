//! `CaptureLayer`: the tower layer in front of `/tether/push` and `/tether/pull`.
//!
//! It opens the capture span, lets the request and response bodies stream through
//! untouched while keeping reference-counted copies of their chunks (up to a cap), and
//! records the status. Nothing is parsed here; the response's status, headers, size hint and
//! bytes are exactly the host's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use opentelemetry::Context as OtelContext;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};
use tracing::Span;
use tracing::field::Empty;

use super::layer::with_request_data;
use super::record::{CapturedBody, RequestKind};
use super::{CAPTURE_TARGET, REPLAY_OF_HEADER, RequestId, SPAN_PULL, SPAN_PUSH};
use crate::protocol::{CLIENT_VERSION_HEADER, PULL_PATH, PUSH_PATH};
use super::ids;

/// How much of each body `CaptureLayer` keeps for the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct CaptureLimits {
    /// Bytes of a body retained for parsing (per-mutation rows come from the whole push).
    /// Beyond it, the body is recorded as truncated with its true size.
    pub retain_bytes: usize,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        CaptureLimits { retain_bytes: CaptureLimits::DEFAULT_RETAIN_BYTES }
    }
}

impl CaptureLimits {
    /// Default [`retain_bytes`](Self::retain_bytes): 16 MiB (as `capture.retain_bytes`).
    pub const DEFAULT_RETAIN_BYTES: usize = 16 * 1024 * 1024;
}

/// Tower layer that captures Tether pushes and pulls. Other paths pass straight through.
#[derive(Debug, Clone, Default)]
pub struct CaptureLayer {
    limits: CaptureLimits,
    enabled: bool,
}

impl CaptureLayer {
    /// An enabled layer with the default limits. (`CaptureLayer::default()` is a disabled one:
    /// it passes every request through.)
    pub fn new() -> Self {
        CaptureLayer { limits: CaptureLimits::default(), enabled: true }
    }

    /// Sets how much of each body is retained (`capture.retain_bytes`).
    pub fn with_limits(mut self, limits: CaptureLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A disabled layer passes every request through without a span or a copy.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
}

impl<S> Layer<S> for CaptureLayer {
    type Service = CaptureService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CaptureService { inner, limits: self.limits, enabled: self.enabled }
    }
}

/// The service [`CaptureLayer`] wraps around the host's: captures `POST`s whose path ends in
/// `/tether/push` or `/tether/pull`, and passes every other request through untouched.
#[derive(Debug, Clone)]
pub struct CaptureService<S> {
    inner: S,
    limits: CaptureLimits,
    enabled: bool,
}

fn kind_of(path: &str) -> Option<RequestKind> {
    if path.ends_with(PUSH_PATH) {
        Some(RequestKind::Push)
    } else if path.ends_with(PULL_PATH) {
        Some(RequestKind::Pull)
    } else {
        None
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CaptureService<S>
where
    S: Service<Request<TeeBody<ReqBody>>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display,
    ReqBody: Body<Data = Bytes>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<TeeBody<ResBody>>;
    type Error = S::Error;
    type Future = CaptureFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // An outer CaptureLayer already captures this request (the layer added twice): once.
        let outer = req.extensions().get::<RequestId>().is_some();
        let kind = if self.enabled && !outer && req.method() == http::Method::POST { kind_of(req.uri().path()) } else { None };
        let Some(kind) = kind else {
            let (parts, body) = req.into_parts();
            let fut = self.inner.call(Request::from_parts(parts, TeeBody::passthrough(body)));
            return CaptureFuture { inner: fut, span: None, otel_cx: None, retain: 0 };
        };
        let request_id = ulid::Ulid::new().to_string();
        // Kept out of the span's fields: a log formatter or another layer would print the
        // header unredacted. The pipeline redacts it with everything else.
        let version = super::cap_identifier(req.headers().get(CLIENT_VERSION_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("")).into_owned();
        let span = match kind {
            RequestKind::Push => tracing::info_span!(
                target: CAPTURE_TARGET, SPAN_PUSH,
                otel.kind = "server", otel.name = SPAN_PUSH,
                tether.request_id = request_id.as_str(),
                http.request.method = "POST", url.path = PUSH_PATH, http.response.status_code = Empty,
            ),
            RequestKind::Pull => tracing::info_span!(
                target: CAPTURE_TARGET, SPAN_PULL,
                otel.kind = "server", otel.name = SPAN_PULL,
                tether.request_id = request_id.as_str(),
                http.request.method = "POST", url.path = PULL_PATH, http.response.status_code = Empty,
            ),
        };
        let replay_of = super::cap_identifier(req.headers().get(REPLAY_OF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("")).into_owned();
        // The server span's ids, minted now (continuing an incoming traceparent): the host's
        // own spans parent to it, and the pipeline exports it later with these ids.
        let parent = incoming_parent(req.headers());
        let trace_id = parent.as_ref().map_or_else(ids::mint_trace_id, |p| p.trace_id());
        let span_id = ids::mint_span_id();
        let flags = parent.as_ref().map_or(TraceFlags::SAMPLED, |p| p.trace_flags());
        let state = parent.as_ref().map(|p| p.trace_state().clone()).unwrap_or_default();
        let otel_cx = OtelContext::new().with_remote_span_context(SpanContext::new(trace_id, span_id, flags, false, state));
        let path = req.uri().path().to_owned();
        with_request_data(&span, &mut |d| {
            d.client_version.clone_from(&version);
            d.replay_of.clone_from(&replay_of);
            d.trace_id = trace_id.to_string();
            d.span_id = span_id.to_string();
            d.parent = parent.clone();
            d.path.clone_from(&path);
        });
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(RequestId(Arc::from(request_id.as_str())));
        let body = TeeBody::capturing(body, span.clone(), Which::Request, self.limits.retain_bytes, &parts.headers);
        let fut = {
            let _enter = span.enter();
            let _cx = otel_cx.clone().attach();
            self.inner.call(Request::from_parts(parts, body))
        };
        CaptureFuture { inner: fut, span: Some(span), otel_cx: Some(otel_cx), retain: self.limits.retain_bytes }
    }
}

/// The caller's span context from a W3C `traceparent` header, when valid.
fn incoming_parent(headers: &http::HeaderMap) -> Option<SpanContext> {
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(headers));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

pin_project! {
    pub struct CaptureFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        // Current while the host's future runs, so its OpenTelemetry spans parent to ours.
        otel_cx: Option<OtelContext>,
        retain: usize,
    }

    impl<F> PinnedDrop for CaptureFuture<F> {
        // Dropped before the host answered: the server stopped waiting for the answer, which
        // hyper does when the client goes away. (A host that goes on working, e.g. in
        // `spawn_blocking` holding the span, still reports its states: the record is sent
        // when the last span handle closes.)
        fn drop(this: Pin<&mut Self>) {
            if let Some(span) = this.project().span.take() {
                with_request_data(&span, &mut |d| d.client_gone = true);
            }
        }
    }
}

impl<F, ResBody, E> Future for CaptureFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: std::fmt::Display,
    ResBody: Body<Data = Bytes>,
{
    type Output = Result<Response<TeeBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = {
            let _enter = this.span.as_ref().map(|s| s.enter());
            let _cx = this.otel_cx.as_ref().map(|c| c.clone().attach());
            ready!(this.inner.poll(cx))
        };
        let Some(span) = this.span.take() else {
            return Poll::Ready(out.map(|r| r.map(TeeBody::passthrough)));
        };
        Poll::Ready(match out {
            Ok(resp) => {
                span.record("http.response.status_code", resp.status().as_u16());
                let retain = *this.retain;
                let (parts, body) = resp.into_parts();
                let body = TeeBody::capturing(body, span, Which::Response, retain, &parts.headers);
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                let msg = e.to_string();
                with_request_data(&span, &mut |d| d.error = Some(msg.clone()));
                Err(e)
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Request,
    Response,
}

/// Keeps the chunks of a body as it streams and hands them to the span when it ends or is
/// dropped. Holds a span handle so the span closes only after the body is done.
struct Tee {
    span: Span,
    which: Which,
    body: CapturedBody,
    retain: usize,
    done: bool,
}

impl Tee {
    fn push(&mut self, data: &Bytes) {
        self.body.total += data.len() as u64;
        let room = self.retain.saturating_sub(self.body.retained);
        if room > 0 && !data.is_empty() {
            let keep = if data.len() <= room { data.clone() } else { data.slice(..room) };
            self.body.retained += keep.len();
            self.body.chunks.push(keep);
        }
    }

    fn finish(&mut self, complete: bool, error: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        self.body.complete = complete;
        let mut body = Some(std::mem::take(&mut self.body));
        let which = self.which;
        with_request_data(&self.span, &mut |d| {
            let b = body.take().unwrap_or_default();
            match which {
                Which::Request => d.request_body = Some(b),
                Which::Response => d.response_body = Some(b),
            }
            if let Some(e) = &error {
                d.error.get_or_insert_with(|| e.clone());
            }
        });
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Every byte `Content-Length` announced went past: whole, even if the server did not
        // poll for the end.
        let whole = self.body.declared_length == Some(self.body.total);
        if !self.done && !whole && self.which == Which::Response {
            // The server stopped sending the response before its end: the client went away.
            with_request_data(&self.span, &mut |d| d.client_gone = true);
        }
        self.finish(whole, None);
    }
}

pin_project! {
    /// A body that streams exactly what the inner body streams (same frames, same size
    /// hint, same end), keeping copies of the chunk handles for capture.
    pub struct TeeBody<B> {
        #[pin]
        inner: B,
        tee: Option<Tee>,
    }
}

impl<B> TeeBody<B> {
    fn passthrough(inner: B) -> Self {
        TeeBody { inner, tee: None }
    }
}

impl<B: Body> TeeBody<B> {

    fn capturing(inner: B, span: Span, which: Which, retain: usize, headers: &http::HeaderMap) -> Self {
        let body = CapturedBody {
            content_encoding: headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
            declared_length: headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()),
            ..CapturedBody::default()
        };
        let mut tee = Tee { span, which, body, retain, done: false };
        if inner.is_end_stream() {
            // An empty body is never polled: it is complete as it is.
            tee.finish(true, None);
        }
        TeeBody { inner, tee: Some(tee) }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(tee) = this.tee.as_mut() {
            match &polled {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        tee.push(data);
                    }
                    // Servers stop polling once a body says it has ended.
                    if this.inner.is_end_stream() {
                        tee.finish(true, None);
                    }
                }
                Some(Err(e)) => tee.finish(false, Some(format!("body stream failed: {e}"))),
                None => tee.finish(true, None),
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
