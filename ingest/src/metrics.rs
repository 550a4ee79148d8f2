//! The ingest role's metrics: API requests by route, uploads by protocol,
//! bytes received, tus PATCH latency, RTMP publishers. One [`IngestMetrics`]
//! per [`crate::AppState`]; `cascade serve` registers it into the process's
//! registry.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cascade_platform::metrics::{
    method_label, Counter, Family, Gauge, Histogram, HttpMetrics, Registry, Unit, REQUEST_SECONDS,
};
use prometheus_client::encoding::EncodeLabelSet;
use tracing::Instrument;

use crate::state::AppState;

/// How a source arrived.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Protocol {
    /// `PUT /v1/assets/{id}/source` or `/replacement` in one request.
    Simple,
    /// tus 1.0.0 (`/v1/uploads`), direct uploads included.
    Tus,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Tus => "tus",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

/// Every metric the ingest role keeps.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    http: HttpMetrics,
    uploads_started: Family<ProtocolLabels, Counter>,
    uploads_finished: Family<ProtocolLabels, Counter>,
    uploads_failed: Family<ProtocolLabels, Counter>,
    received_bytes: Family<ProtocolLabels, Counter>,
    tus_patch_duration: Histogram,
    rtmp_publishers: Gauge,
    rtmp_sessions: Counter,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        let metrics = Self {
            http: HttpMetrics::default(),
            uploads_started: Family::default(),
            uploads_finished: Family::default(),
            uploads_failed: Family::default(),
            received_bytes: Family::default(),
            tus_patch_duration: Histogram::new(REQUEST_SECONDS),
            rtmp_publishers: Gauge::default(),
            rtmp_sessions: Counter::default(),
        };
        // Every protocol's series exists from the start, so a rate over
        // them (and an alert on failures) has data before the first upload.
        for protocol in [Protocol::Simple, Protocol::Tus] {
            let labels = ProtocolLabels {
                protocol: protocol.label(),
            };
            for family in [
                &metrics.uploads_started,
                &metrics.uploads_finished,
                &metrics.uploads_failed,
                &metrics.received_bytes,
            ] {
                drop(family.get_or_create(&labels));
            }
        }
        metrics
    }
}

impl IngestMetrics {
    /// Registers every metric.
    pub fn register(&self, registry: &mut Registry) {
        self.http.register(registry, "cascade_ingest", "ingest API");
        registry.register(
            "cascade_ingest_uploads_started",
            "Uploads begun: a simple upload's body started, a tus upload created",
            self.uploads_started.clone(),
        );
        registry.register(
            "cascade_ingest_uploads_finished",
            "Uploads whose last byte was stored (the probe follows)",
            self.uploads_finished.clone(),
        );
        registry.register(
            "cascade_ingest_uploads_failed",
            "Uploads that ended without a stored source: a simple upload's error, a tus \
             upload terminated or refused at completion",
            self.uploads_failed.clone(),
        );
        registry.register_with_unit(
            "cascade_ingest_received",
            "Upload body bytes stored",
            Unit::Bytes,
            self.received_bytes.clone(),
        );
        registry.register_with_unit(
            "cascade_ingest_tus_patch_duration",
            "Time to answer a tus PATCH (the whole chunk is read and stored first)",
            Unit::Seconds,
            self.tus_patch_duration.clone(),
        );
        registry.register(
            "cascade_ingest_rtmp_publishers",
            "RTMP publishers connected and publishing now",
            self.rtmp_publishers.clone(),
        );
        registry.register(
            "cascade_ingest_rtmp_sessions",
            "RTMP publish sessions accepted",
            self.rtmp_sessions.clone(),
        );
    }

    fn labels(protocol: Protocol) -> ProtocolLabels {
        ProtocolLabels {
            protocol: protocol.label(),
        }
    }

    /// An upload began.
    pub fn upload_started(&self, protocol: Protocol) {
        self.uploads_started
            .get_or_create(&Self::labels(protocol))
            .inc();
    }

    /// An upload's last byte was stored.
    pub fn upload_finished(&self, protocol: Protocol) {
        self.uploads_finished
            .get_or_create(&Self::labels(protocol))
            .inc();
    }

    /// An upload ended without a source.
    pub fn upload_failed(&self, protocol: Protocol) {
        self.uploads_failed
            .get_or_create(&Self::labels(protocol))
            .inc();
    }

    /// Body bytes stored.
    pub fn received(&self, protocol: Protocol, bytes: u64) {
        self.received_bytes
            .get_or_create(&Self::labels(protocol))
            .inc_by(bytes);
    }

    /// One tus PATCH answered.
    pub fn tus_patch(&self, started: Instant) {
        self.tus_patch_duration.observe_duration(started.elapsed());
    }

    /// An RTMP publisher started publishing; the guard counts it out.
    pub fn rtmp_publishing(&self) -> PublisherGuard {
        self.rtmp_sessions.inc();
        self.rtmp_publishers.inc();
        PublisherGuard(self.rtmp_publishers.clone())
    }
}

/// Counts one RTMP publisher while alive.
#[derive(Debug)]
pub struct PublisherGuard(Gauge);

impl Drop for PublisherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The request id header: taken from the client (a load balancer or CDN
/// usually sets it) when it is a sane token, else made here; returned on
/// every response and carried by the request's log lines and span.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of `headers`, if the client sent a usable one: 1-128
/// visible ASCII characters, so logs cannot be forged or flooded through it.
pub fn client_request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(REQUEST_ID)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| value.to_owned())
}

/// Around every API route: a request id (returned as `x-request-id`), a
/// span carrying it, the request counted by its route template, and one
/// structured access-log line (target `cascade::access`, level info).
pub(crate) async fn record_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method().as_str());
    let request_id = client_request_id(request.headers())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "http.request",
        http.method = method,
        http.route = %route,
        request_id = %request_id,
    );
    // A caller's trace (W3C traceparent) continues here.
    cascade_platform::tracecontext::set_parent(
        &span,
        request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let mut response = next.run(request).instrument(span).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.http.record(&route, method, status, elapsed);
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    tracing::info!(
        target: "cascade::access",
        request_id = %request_id,
        method,
        route = %route,
        path = %path,
        status,
        duration_ms = elapsed.as_secs_f64() * 1e3,
        "request"
    );
    response
}
