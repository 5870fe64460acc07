//! Span ids minted at request time by the capture layer, used when the pipeline builds the
//! server span later (capture owns the minting; telemetry installs the generator).
//!
//! The `tether.push`/`tether.pull` server span is exported by the pipeline, after the bodies
//! are parsed (so it carries counts and outcome without any parsing on the request thread).
//! Its ids must be the ones the request's children already used as their parent, so the
//! capture layer mints them on arrival and the pipeline presets them for the one span it
//! builds. `TetherIdGenerator` is the tracer provider's id generator: random ids, except
//! for a preset on the current thread.

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

thread_local! {
    static PRESET: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, or the ids preset on this thread with `with_preset_ids` (the capture layer presets them when a request arrives).
#[derive(Debug, Default)]
pub struct TetherIdGenerator {
    random: RandomIdGenerator,
}

impl IdGenerator for TetherIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        PRESET.with(|p| p.get()).map(|(t, _)| t).unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        match PRESET.with(|p| p.take()) {
            Some((t, s)) => {
                // Keep the trace id for new_trace_id, which the SDK asks for after the span id.
                PRESET.with(|p| p.set(Some((t, SpanId::INVALID))));
                if s == SpanId::INVALID { self.random.new_span_id() } else { s }
            }
            None => self.random.new_span_id(),
        }
    }
}

/// Runs `f` (which builds exactly one span) with these ids preset on this thread.
pub fn with_preset_ids<T>(trace_id: TraceId, span_id: SpanId, f: impl FnOnce() -> T) -> T {
    PRESET.with(|p| p.set(Some((trace_id, span_id))));
    let out = f();
    PRESET.with(|p| p.set(None));
    out
}

/// Fresh random ids for a request's server span (never the invalid all-zero ids).
pub fn mint_span_id() -> SpanId {
    loop {
        let id = SpanId::from_bytes(rand::random::<[u8; 8]>());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

pub fn mint_trace_id() -> TraceId {
    loop {
        let id = TraceId::from_bytes(rand::random::<[u8; 16]>());
        if id != TraceId::INVALID {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_ids_are_used_once_then_random_again() {
        let g = TetherIdGenerator::default();
        let (t, s) = (mint_trace_id(), mint_span_id());
        let (got_s, got_t) = with_preset_ids(t, s, || (g.new_span_id(), g.new_trace_id()));
        assert_eq!((got_s, got_t), (s, t));
        assert_ne!(g.new_span_id(), s);
        assert_ne!(g.new_trace_id(), t);
    }
}
