//! Trace ids in log lines: a JSON log line written inside a traced span starts with
//! `"trace_id"` and `"span_id"`, so a log search leads to the trace and back.
//!
//! The fmt layer never sees the traced spans (they are filtered out of the logs, so that they
//! cost nothing when tracing is off), so it cannot ask them for ids. Instead [`TraceIds`], a
//! layer beside the OpenTelemetry one, stores each sampled span's ids when the span is created
//! and keeps a per-thread stack of the ids of the spans entered; [`JsonWithIds`] reads the top.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::dispatcher::{Dispatch, WeakDispatch};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ids {
    trace: TraceId,
    span: SpanId,
}

thread_local! {
    /// The ids of the traced spans entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<Ids>> = const { RefCell::new(Vec::new()) };
}

fn innermost() -> Option<Ids> {
    ENTERED.with(|entered| entered.borrow().last().copied())
}

/// Records the OpenTelemetry ids of sampled spans (see the module comment). Must be layered
/// after the OpenTelemetry layer, which gives a span its ids.
#[derive(Default)]
pub(super) struct TraceIds {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S> Layer<S> for TraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        // Starts the OpenTelemetry span now rather than at its first entry: the ids exist
        // from here on.
        let Some(context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        // An unsampled span is never exported: its ids would lead nowhere.
        if !span_context.is_valid() || !span_context.is_sampled() {
            return;
        }
        let ids = Ids {
            trace: span_context.trace_id(),
            span: span_context.span_id(),
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(ids) = ctx.span(id).and_then(|s| s.extensions().get::<Ids>().copied()) {
            ENTERED.with(|entered| entered.borrow_mut().push(ids));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if ctx
            .span(id)
            .is_some_and(|s| s.extensions().get::<Ids>().is_some())
        {
            ENTERED.with(|entered| entered.borrow_mut().pop());
        }
    }
}

/// A JSON event format with the innermost traced span's ids put first in the object.
pub(super) struct JsonWithIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JsonWithIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = innermost() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_ids(&line, ids))
    }
}

/// `line` (one JSON object) with the ids as its first members.
fn with_ids(line: &str, ids: Ids) -> String {
    let Some(rest) = line.strip_prefix('{') else {
        return line.to_owned();
    };
    let mut out = String::with_capacity(line.len() + 80);
    let _ = write!(out, r#"{{"trace_id":"{}","span_id":"{}""#, ids.trace, ids.span);
    if !rest.trim_start().starts_with('}') {
        out.push(',');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_lead_the_object_and_it_stays_json() {
        let ids = Ids {
            trace: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        };
        for line in ["{\"level\":\"INFO\",\"fields\":{\"message\":\"hi\"}}\n", "{}\n"] {
            let out = with_ids(line, ids);
            assert!(out.ends_with('\n') && out.matches('\n').count() == 1);
            let value: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(value["span_id"], "00f067aa0ba902b7");
        }
        assert_eq!(with_ids("not json\n", ids), "not json\n");
    }
}
