//! The span exporter: OTLP over HTTP with the JSON encoding (the
//! OpenTelemetry protocol's `ExportTraceServiceRequest`, which the
//! Collector, Jaeger and Tempo take on port 4318), sent with the reqwest
//! client the binary already has rather than a second HTTP and protobuf
//! stack.
//!
//! The SDK's batch processor calls [`OtlpJsonExporter::export`] from its
//! own thread; the POST runs on the process's tokio runtime and the
//! processor waits for its answer. A failed export is logged and its spans
//! dropped: traces never hold up the pipeline.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{json, Value as Json};

/// Sends spans to `url` as OTLP/JSON.
pub struct OtlpJsonExporter {
    client: reqwest::Client,
    url: String,
    service_name: String,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for OtlpJsonExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpJsonExporter")
            .field("url", &self.url)
            .finish()
    }
}

impl OtlpJsonExporter {
    /// An exporter posting to `url` on `runtime`, each export bounded by `timeout`.
    pub fn new(
        url: String,
        service_name: String,
        timeout: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("cascade/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the trace exporter's HTTP client: {e}"))?;
        Ok(Self {
            client,
            url,
            service_name,
            runtime,
        })
    }
}

impl SpanExporter for OtlpJsonExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let body = request_body(&self.service_name, &batch);
        let request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        // Runs on the tokio runtime: the processor's thread has none.
        let sent = self.runtime.spawn(async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        });
        async move {
            match sent.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(OTelSdkError::InternalFailure(message)),
                Err(join) => Err(OTelSdkError::InternalFailure(join.to_string())),
            }
        }
    }
}

/// The `ExportTraceServiceRequest` of `spans`, in the OTLP JSON mapping
/// (ids as hex, 64-bit integers as strings, enums as numbers).
pub fn request_body(service_name: &str, spans: &[SpanData]) -> Json {
    let spans: Vec<Json> = spans.iter().map(span_json).collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attribute("service.name", &Value::from(service_name.to_owned()))] },
            "scopeSpans": [{
                "scope": { "name": "cascade", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

fn span_json(span: &SpanData) -> Json {
    let parent = if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        String::new()
    } else {
        span.parent_span_id.to_string()
    };
    let (code, message) = match &span.status {
        Status::Unset => (0, String::new()),
        Status::Ok => (1, String::new()),
        Status::Error { description } => (2, description.to_string()),
    };
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    let events: Vec<Json> = span
        .events
        .iter()
        .map(|event| {
            json!({
                "timeUnixNano": unix_nanos(event.timestamp),
                "name": event.name.to_string(),
                "attributes": event.attributes.iter().map(key_value).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "traceId": span.span_context.trace_id().to_string(),
        "spanId": span.span_context.span_id().to_string(),
        "parentSpanId": parent,
        "name": span.name.to_string(),
        "kind": kind,
        "startTimeUnixNano": unix_nanos(span.start_time),
        "endTimeUnixNano": unix_nanos(span.end_time),
        "attributes": span.attributes.iter().map(key_value).collect::<Vec<_>>(),
        "events": events,
        "status": { "code": code, "message": message },
    })
}

fn unix_nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

fn key_value(kv: &KeyValue) -> Json {
    attribute(kv.key.as_str(), &kv.value)
}

fn attribute(key: &str, value: &Value) -> Json {
    let value = match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::I64(i) => json!({ "intValue": i.to_string() }),
        Value::F64(f) => json!({ "doubleValue": f }),
        Value::String(s) => json!({ "stringValue": s.as_str() }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}
