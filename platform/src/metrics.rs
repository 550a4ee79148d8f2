//! Prometheus metrics for every role, through `prometheus-client`
//! (OpenMetrics 1.0 text exposition, which Prometheus negotiates).
//!
//! Each part of Cascade keeps its metrics as a struct of handles (counters
//! and gauges are shared atomics: cloning a handle shares the value) and
//! registers them into the process's one [`Registry`] at start-up; `cascade
//! serve` answers `/metrics` from that registry. Names follow Prometheus
//! conventions: a `cascade_` prefix, the unit in the name, counters end in
//! `_total` (prometheus-client appends it), and labels have a small fixed set
//! of values (never an asset id).
//!
//! The request path records into plain atomics: [`Histogram`] here is
//! lock-free (the crate's own histogram takes a lock per observation), and
//! hot callers keep the per-label handle of a [`Family`] instead of looking
//! it up per request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
pub use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of the exposition [`render`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The whole exposition of `registry`, ending with `# EOF`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; a metric's own encoder could only
    // fail on a formatting bug, and a partial page is still better than none.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %error, "cannot encode the metrics");
    }
    out
}

/// A gauge with float values (seconds, ratios).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Upper bounds (seconds) for request latencies: 100 µs to 10 s.
pub const REQUEST_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds (seconds) for jobs and media processing: 100 ms to 4 h.
pub const JOB_SECONDS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0,
];

/// Upper bounds for speed ratios (seconds of media per second of work).
pub const SPEED_RATIOS: &[f64] = &[
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 16.0, 32.0,
];

/// A lock-free histogram with fixed bucket bounds.
#[derive(Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound plus `+Inf`; not cumulative.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum as `f64` bits, updated by compare-and-swap.
    sum_bits: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending upper bounds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_bits: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: f64) {
        let inner = &*self.inner;
        let index = inner
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(inner.bounds.len());
        inner.buckets[index].fetch_add(1, Relaxed);
        inner.count.fetch_add(1, Relaxed);
        let _ = inner.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Relaxed)
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.inner.sum_bits.load(Relaxed))
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(inner.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        // The count is the buckets' total, so the exposition is consistent
        // even while observations race with the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A family of histograms over the same bounds, one per label set.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A gauge whose value is read when the metrics are rendered (a cache's size,
/// a breaker's state), so nothing has to keep it up to date.
#[derive(Clone)]
pub struct ComputedGauge(Arc<dyn Fn() -> i64 + Send + Sync>);

impl ComputedGauge {
    /// A gauge reading `read()` at every scrape.
    pub fn new(read: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }
}

impl fmt::Debug for ComputedGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ComputedGauge")
    }
}

impl TypedMetric for ComputedGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ComputedGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&(self.0)())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The labels of an HTTP request: the route template (never the concrete
/// path), the method and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route template (`/v1/assets/{id}`) or, for the origin,
    /// the object class (`media_segment`).
    pub route: String,
    /// The request method.
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// The labels of a request-duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template or object class.
    pub route: String,
}

/// HTTP request counters and latency histograms of one service, registered
/// as `{prefix}_requests_total` and `{prefix}_request_duration_seconds`.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response head (bodies stream after).
    pub duration: HistogramFamily<RouteLabels>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(REQUEST_SECONDS)),
        }
    }
}

impl HttpMetrics {
    /// Registers the two metrics under `prefix` (`cascade_ingest`).
    pub fn register(&self, registry: &mut Registry, prefix: &str, service: &str) {
        registry.register(
            format!("{prefix}_requests"),
            format!("HTTP requests the {service} answered, by route, method and status"),
            self.requests.clone(),
        );
        registry.register_with_unit(
            format!("{prefix}_request_duration"),
            format!("Time the {service} took to answer a request, until the response head"),
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// Records one answered request.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe_duration(elapsed);
    }
}

/// The method label of a request: the standard methods by name, anything
/// else as `other` (a client must not be able to mint label values).
pub fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Registers `cascade_build_info{version}`, always 1.
pub fn register_build_info(registry: &mut Registry, version: &'static str) {
    registry.register(
        "cascade_build",
        "The running build of Cascade",
        Info::new(vec![("version", version)]),
    );
}

/// Registers the process's start time (`cascade_process_start_time_seconds`).
pub fn register_process(registry: &mut Registry) {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let gauge = FloatGauge::default();
    gauge.set(started);
    registry.register_with_unit(
        "cascade_process_start_time",
        "When this process started (Unix time)",
        Unit::Seconds,
        gauge,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let mut registry = Registry::default();
        let h = Histogram::new(&[0.1, 1.0]);
        registry.register_with_unit("t_latency", "A test.", Unit::Seconds, h.clone());
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let text = render(&registry);
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"1.0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_latency_seconds_count 3\n"), "{text}");
        assert!(text.contains("t_latency_seconds_sum 7.55\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn http_metrics_and_computed_gauges_render() {
        let mut registry = Registry::default();
        let http = HttpMetrics::default();
        http.register(&mut registry, "cascade_ingest", "API");
        registry.register("t_size", "A test.", ComputedGauge::new(|| 42));
        register_build_info(&mut registry, "1.2.3");
        http.record("/v1/assets", "POST", 201, Duration::from_millis(3));
        let text = render(&registry);
        assert!(text.contains(
            "cascade_ingest_requests_total{route=\"/v1/assets\",method=\"POST\",status=\"201\"} 1\n"
        ), "{text}");
        assert!(
            text.contains(
                "cascade_ingest_request_duration_seconds_count{route=\"/v1/assets\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("t_size 42\n"), "{text}");
        assert!(
            text.contains("cascade_build_info{version=\"1.2.3\"} 1\n"),
            "{text}"
        );
    }
}
