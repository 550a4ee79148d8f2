//! W3C Trace Context (`traceparent`) between the places a trace crosses:
//! an API request's headers into its span, a span into the job row it
//! enqueues ([`current_traceparent`], stored by `queue::enqueue`), and the
//! job row into the worker's span ([`set_parent`]). With tracing off (no
//! OpenTelemetry layer installed) spans have no context: nothing is stored
//! and nothing is continued.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the remote span `traceparent` names (an incoming
/// request's header, a stored job's context). Malformed or absent values
/// leave the span a root.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The `traceparent` of the current span, when it is part of a trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untraced_spans_carry_no_context() {
        let span = tracing::info_span!("untraced");
        set_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }
}
