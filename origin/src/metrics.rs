//! The origin's metrics: requests by object class, method and status, the
//! memory tier, storage reads and the breaker, the asset lookups. One
//! [`Metrics`] per [`crate::OriginState`]; `cascade serve` registers it into
//! the process's registry ([`crate::OriginState::register_metrics`]).
//!
//! The request path only touches atomics: the counter handle of each
//! (class, method, status) is looked up once and kept.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use cascade_platform::metrics::{
    method_label, ComputedGauge, Counter, Family, Histogram, HttpMetrics, Registry, RequestLabels,
    RouteLabels, Unit, REQUEST_SECONDS,
};
use cascade_schemas::ObjectClass;
use prometheus_client::encoding::EncodeLabelSet;

/// Request label values for the object class, by index (the origin's routes).
pub(crate) const CLASSES: [&str; 5] = [
    "hls_playlist",
    "dash_manifest",
    "init_segment",
    "media_segment",
    "other",
];
pub(crate) const CLASS_OTHER: usize = 4;

/// The class label index of an object class.
pub(crate) fn class_index(class: ObjectClass) -> usize {
    match class {
        ObjectClass::HlsPlaylist => 0,
        ObjectClass::DashManifest => 1,
        ObjectClass::InitSegment => 2,
        ObjectClass::MediaSegment => 3,
        _ => CLASS_OTHER,
    }
}

/// Methods whose counters are kept at hand; others are looked up.
const METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::OPTIONS];

/// Statuses whose counters are kept at hand; others are looked up.
const STATUSES: [u16; 12] = [200, 204, 206, 304, 400, 403, 404, 405, 416, 431, 500, 503];

/// Storage read error types (a small fixed set).
pub(crate) const STORAGE_ERRORS: [&str; 4] = ["not_found", "transient", "permanent", "timeout"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error_type: &'static str,
}

/// Every counter the origin keeps.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Whether requests are counted (`metrics.enabled`).
    recording: AtomicBool,
    http: HttpMetrics,
    /// Counter handles by (class, method, status) index, filled on first use.
    request_counters: Box<[OnceLock<Counter>]>,
    /// Latency histogram handles by class.
    durations: Vec<Histogram>,
    pub(crate) cache_hits: Counter,
    pub(crate) front_hits: Counter,
    pub(crate) cache_negative_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) cache_coalesced: Counter,
    pub(crate) cache_hit_bytes: Counter,
    pub(crate) cache_inserted_bytes: Counter,
    pub(crate) cache_evictions: Counter,
    pub(crate) cache_expirations: Counter,
    pub(crate) cache_bypasses: Counter,
    pub(crate) storage_reads: Counter,
    pub(crate) storage_read_bytes: Counter,
    storage_error_family: Family<ErrorLabels, Counter>,
    pub(crate) storage_errors: [Counter; STORAGE_ERRORS.len()],
    pub(crate) storage_read_duration: Histogram,
    pub(crate) breaker_rejections: Counter,
    pub(crate) breaker_opened: Counter,
    pub(crate) asset_lookups: Counter,
    pub(crate) asset_lookup_errors: Counter,
    pub(crate) asset_lookup_stale: Counter,
    pub(crate) restores_requested: Counter,
}

/// Values read from elsewhere at render time.
pub(crate) struct Gauges {
    pub(crate) cache_bytes: ComputedGauge,
    pub(crate) cache_entries: ComputedGauge,
    pub(crate) breaker_state: ComputedGauge,
    pub(crate) shared_objects: ComputedGauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let http = HttpMetrics::default();
        let durations = CLASSES
            .iter()
            .map(|class| {
                http.duration
                    .get_or_create(&RouteLabels {
                        route: (*class).to_owned(),
                    })
                    .clone()
            })
            .collect();
        let storage_error_family = Family::<ErrorLabels, Counter>::default();
        let storage_errors = STORAGE_ERRORS.map(|error_type| {
            storage_error_family
                .get_or_create(&ErrorLabels { error_type })
                .clone()
        });
        Self {
            recording: AtomicBool::new(true),
            http,
            request_counters: (0..CLASSES.len() * METHODS.len() * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            durations,
            cache_hits: Counter::default(),
            front_hits: Counter::default(),
            cache_negative_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_coalesced: Counter::default(),
            cache_hit_bytes: Counter::default(),
            cache_inserted_bytes: Counter::default(),
            cache_evictions: Counter::default(),
            cache_expirations: Counter::default(),
            cache_bypasses: Counter::default(),
            storage_reads: Counter::default(),
            storage_read_bytes: Counter::default(),
            storage_error_family,
            storage_errors,
            storage_read_duration: Histogram::new(REQUEST_SECONDS),
            breaker_rejections: Counter::default(),
            breaker_opened: Counter::default(),
            asset_lookups: Counter::default(),
            asset_lookup_errors: Counter::default(),
            asset_lookup_stale: Counter::default(),
            restores_requested: Counter::default(),
        }
    }

    /// Turns request recording on or off.
    pub(crate) fn set_recording(&self, on: bool) {
        self.recording.store(on, Relaxed);
    }

    /// Records one answered request.
    pub(crate) fn request(&self, class: usize, method: &Method, status: u16, elapsed: Duration) {
        if !self.recording.load(Relaxed) {
            return;
        }
        let class = class.min(CLASS_OTHER);
        let method_index = METHODS.iter().position(|m| m == method);
        let status_index = STATUSES.iter().position(|s| *s == status);
        match (method_index, status_index) {
            (Some(m), Some(s)) => {
                let slot = &self.request_counters[(class * METHODS.len() + m) * STATUSES.len() + s];
                slot.get_or_init(|| self.request_counter(class, method, status))
                    .inc();
            }
            _ => {
                self.request_counter(class, method, status).inc();
            }
        }
        if let Some(histogram) = self.durations.get(class) {
            histogram.observe_duration(elapsed);
        }
    }

    fn request_counter(&self, class: usize, method: &Method, status: u16) -> Counter {
        let method = method_label(method.as_str());
        self.http
            .requests
            .get_or_create(&RequestLabels {
                route: CLASSES[class.min(CLASS_OTHER)].to_owned(),
                method: method.to_owned(),
                status,
            })
            .clone()
    }

    /// Storage reads so far (tests and `cascade bench origin` read this).
    pub(crate) fn storage_reads(&self) -> u64 {
        self.storage_reads.get()
    }

    /// Registers every metric (the gauges read their sources at each scrape).
    pub(crate) fn register(&self, registry: &mut Registry, gauges: Gauges) {
        self.http
            .register(registry, "cascade_origin", "origin (object class as route)");
        let counters: [(&str, &str, &Counter); 18] = [
            (
                "cascade_origin_cache_hits",
                "Requests answered from the memory tier (front cache included)",
                &self.cache_hits,
            ),
            (
                "cascade_origin_front_hits",
                "Requests answered from the front cache, before routing",
                &self.front_hits,
            ),
            (
                "cascade_origin_cache_negative_hits",
                "Requests answered 404 from a remembered miss",
                &self.cache_negative_hits,
            ),
            (
                "cascade_origin_cache_misses",
                "Requests the memory tier could not answer (coalesced waits included)",
                &self.cache_misses,
            ),
            (
                "cascade_origin_cache_coalesced_waits",
                "Misses that joined a storage read already in flight",
                &self.cache_coalesced,
            ),
            (
                "cascade_origin_cache_hit_bytes",
                "Bytes of objects found in the memory tier",
                &self.cache_hit_bytes,
            ),
            (
                "cascade_origin_cache_inserted_bytes",
                "Bytes loaded into the memory tier",
                &self.cache_inserted_bytes,
            ),
            (
                "cascade_origin_cache_evictions",
                "Objects evicted from the memory tier for space",
                &self.cache_evictions,
            ),
            (
                "cascade_origin_cache_expirations",
                "Entries that expired (manifests, remembered misses)",
                &self.cache_expirations,
            ),
            (
                "cascade_origin_cache_bypasses",
                "Requests for objects too large for the memory tier, streamed from storage",
                &self.cache_bypasses,
            ),
            (
                "cascade_origin_storage_reads",
                "Reads sent to the object store",
                &self.storage_reads,
            ),
            (
                "cascade_origin_storage_read_bytes",
                "Bytes read from the object store",
                &self.storage_read_bytes,
            ),
            (
                "cascade_origin_breaker_rejections",
                "Storage reads refused by the open circuit breaker",
                &self.breaker_rejections,
            ),
            (
                "cascade_origin_breaker_opened",
                "Times the storage circuit breaker opened",
                &self.breaker_opened,
            ),
            (
                "cascade_origin_asset_lookups",
                "Playback id lookups sent to Postgres",
                &self.asset_lookups,
            ),
            (
                "cascade_origin_asset_lookup_errors",
                "Playback id lookups that failed",
                &self.asset_lookup_errors,
            ),
            (
                "cascade_origin_asset_lookup_stale",
                "Failed playback id lookups answered from the last known asset (stale-if-error)",
                &self.asset_lookup_stale,
            ),
            (
                "cascade_origin_restores_requested",
                "Plays of archived assets that queued their restore from the archive tier",
                &self.restores_requested,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "cascade_origin_storage_read_errors",
            "Failed storage reads, by error type",
            self.storage_error_family.clone(),
        );
        registry.register_with_unit(
            "cascade_origin_storage_read_duration",
            "Time of one storage read (whole object for the memory tier, open for streamed ones)",
            Unit::Seconds,
            self.storage_read_duration.clone(),
        );
        registry.register_with_unit(
            "cascade_origin_cache_size",
            "Weighted size of the memory tier",
            Unit::Bytes,
            gauges.cache_bytes,
        );
        registry.register(
            "cascade_origin_cache_entries",
            "Entries in the memory tier",
            gauges.cache_entries,
        );
        registry.register(
            "cascade_origin_breaker_state",
            "Storage circuit breaker: 0 closed, 1 open, 2 half-open",
            gauges.breaker_state,
        );
        registry.register(
            "cascade_origin_shared_objects",
            "Memory-tier objects in shared memory, sent with sendfile (0 with objects cached: the kernel refused memfds or the descriptor share is used up, and responses are copied)",
            gauges.shared_objects,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request(3, &Method::GET, 200, Duration::from_micros(300));
        m.request(3, &Method::GET, 200, Duration::from_millis(30));
        m.request(0, &Method::GET, 299, Duration::from_secs(10));
        m.request(0, &Method::PUT, 405, Duration::from_millis(1));
        m.request(
            0,
            &Method::from_bytes(b"BREW").unwrap(),
            405,
            Duration::from_millis(1),
        );
        let mut registry = Registry::default();
        m.register(
            &mut registry,
            Gauges {
                cache_bytes: ComputedGauge::new(|| 5),
                cache_entries: ComputedGauge::new(|| 1),
                breaker_state: ComputedGauge::new(|| 0),
                shared_objects: ComputedGauge::new(|| 3),
            },
        );
        let text = cascade_platform::metrics::render(&registry);
        assert!(text.contains(
            "cascade_origin_requests_total{route=\"media_segment\",method=\"GET\",status=\"200\"} 2\n"
        ), "{text}");
        assert!(text.contains(
            "cascade_origin_requests_total{route=\"hls_playlist\",method=\"GET\",status=\"299\"} 1\n"
        ));
        assert!(text.contains(
            "cascade_origin_requests_total{route=\"hls_playlist\",method=\"PUT\",status=\"405\"} 1\n"
        ) && text.contains(
            "cascade_origin_requests_total{route=\"hls_playlist\",method=\"other\",status=\"405\"} 1\n"
        ));
        assert!(text.contains(
            "cascade_origin_request_duration_seconds_bucket{le=\"0.0005\",route=\"media_segment\"} 1\n"
        ), "{text}");
        assert!(text
            .contains("cascade_origin_request_duration_seconds_count{route=\"hls_playlist\"} 3\n"));
        assert!(text.contains("cascade_origin_cache_size_bytes 5\n"));
        assert!(text.contains("cascade_origin_shared_objects 3\n"), "{text}");
        assert!(
            text.contains("cascade_origin_storage_read_errors_total{error_type=\"timeout\"} 0\n")
        );
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
