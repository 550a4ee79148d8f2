//! Counters in atomics, rendered as Prometheus text by hand (no metrics
//! dependency). One [`Metrics`] per [`crate::OriginState`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cascade_schemas::ObjectClass;

/// Request label values for the object class, by index.
pub(crate) const CLASSES: [&str; 6] = [
    "hls_playlist",
    "dash_manifest",
    "init_segment",
    "media_segment",
    "metrics",
    "other",
];
pub(crate) const CLASS_METRICS: usize = 4;
pub(crate) const CLASS_OTHER: usize = 5;

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

/// Statuses counted individually; anything else is counted as `other`.
const STATUSES: [u16; 13] = [
    200, 204, 206, 304, 400, 403, 404, 405, 416, 431, 500, 503, 0,
];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Storage read error types (a small fixed set).
pub(crate) const STORAGE_ERRORS: [&str; 4] = ["not_found", "transient", "permanent", "timeout"];

/// Every counter the origin keeps.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; CLASSES.len()],
    pub(crate) request_duration: Histogram,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) front_hits: AtomicU64,
    pub(crate) cache_negative_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) cache_coalesced: AtomicU64,
    pub(crate) cache_hit_bytes: AtomicU64,
    pub(crate) cache_inserted_bytes: AtomicU64,
    pub(crate) cache_evictions: AtomicU64,
    pub(crate) cache_expirations: AtomicU64,
    pub(crate) cache_bypasses: AtomicU64,
    pub(crate) storage_reads: AtomicU64,
    pub(crate) storage_read_bytes: AtomicU64,
    pub(crate) storage_errors: [AtomicU64; STORAGE_ERRORS.len()],
    pub(crate) storage_read_duration: Histogram,
    pub(crate) breaker_rejections: AtomicU64,
    pub(crate) breaker_opened: AtomicU64,
    pub(crate) asset_lookups: AtomicU64,
    pub(crate) asset_lookup_errors: AtomicU64,
    pub(crate) asset_lookup_stale: AtomicU64,
}

/// Values read from elsewhere at render time.
pub(crate) struct Gauges {
    pub(crate) cache_bytes: u64,
    pub(crate) cache_entries: u64,
    pub(crate) breaker_state: u8,
}

impl Metrics {
    pub(crate) const fn new() -> Self {
        Self {
            requests: [const { [const { AtomicU64::new(0) }; STATUSES.len()] }; CLASSES.len()],
            request_duration: Histogram::new(),
            cache_hits: AtomicU64::new(0),
            front_hits: AtomicU64::new(0),
            cache_negative_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            cache_coalesced: AtomicU64::new(0),
            cache_hit_bytes: AtomicU64::new(0),
            cache_inserted_bytes: AtomicU64::new(0),
            cache_evictions: AtomicU64::new(0),
            cache_expirations: AtomicU64::new(0),
            cache_bypasses: AtomicU64::new(0),
            storage_reads: AtomicU64::new(0),
            storage_read_bytes: AtomicU64::new(0),
            storage_errors: [const { AtomicU64::new(0) }; STORAGE_ERRORS.len()],
            storage_read_duration: Histogram::new(),
            breaker_rejections: AtomicU64::new(0),
            breaker_opened: AtomicU64::new(0),
            asset_lookups: AtomicU64::new(0),
            asset_lookup_errors: AtomicU64::new(0),
            asset_lookup_stale: AtomicU64::new(0),
        }
    }

    /// Records one answered request.
    pub(crate) fn request(&self, class: usize, status: u16, elapsed: Duration) {
        self.requests[class.min(CLASS_OTHER)][status_index(status)].fetch_add(1, Relaxed);
        self.request_duration.observe(elapsed);
    }

    /// Storage reads so far (tests and `cascade bench origin` read this).
    pub(crate) fn storage_reads(&self) -> u64 {
        self.storage_reads.load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let _ = writeln!(
            out,
            "# HELP cascade_origin_requests_total Playback requests answered, by object class and status.\n\
             # TYPE cascade_origin_requests_total counter"
        );
        for (class, row) in CLASSES.iter().zip(&self.requests) {
            for (status, counter) in STATUSES.iter().zip(row) {
                let n = counter.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = if *status == 0 {
                    "other".to_owned()
                } else {
                    status.to_string()
                };
                let _ = writeln!(
                    out,
                    "cascade_origin_requests_total{{class=\"{class}\",status=\"{status}\"}} {n}"
                );
            }
        }
        self.request_duration.render(
            &mut out,
            "cascade_origin_request_duration_seconds",
            "Time to answer a request (until the response head; bodies stream after).",
        );
        let counters: [(&str, &str, &AtomicU64); 17] = [
            (
                "cascade_origin_cache_hits_total",
                "Requests answered from the memory tier (front cache included).",
                &self.cache_hits,
            ),
            (
                "cascade_origin_front_hits_total",
                "Requests answered from the front cache, before routing.",
                &self.front_hits,
            ),
            (
                "cascade_origin_cache_negative_hits_total",
                "Requests answered 404 from a remembered miss.",
                &self.cache_negative_hits,
            ),
            (
                "cascade_origin_cache_misses_total",
                "Requests the memory tier could not answer (coalesced waits included).",
                &self.cache_misses,
            ),
            (
                "cascade_origin_cache_coalesced_waits_total",
                "Misses that joined a storage read already in flight.",
                &self.cache_coalesced,
            ),
            (
                "cascade_origin_cache_hit_bytes_total",
                "Bytes of objects found in the memory tier.",
                &self.cache_hit_bytes,
            ),
            (
                "cascade_origin_cache_inserted_bytes_total",
                "Bytes loaded into the memory tier.",
                &self.cache_inserted_bytes,
            ),
            (
                "cascade_origin_cache_evictions_total",
                "Objects evicted from the memory tier for space.",
                &self.cache_evictions,
            ),
            (
                "cascade_origin_cache_expirations_total",
                "Entries that expired (manifests, remembered misses).",
                &self.cache_expirations,
            ),
            (
                "cascade_origin_cache_bypasses_total",
                "Requests for objects too large for the memory tier, streamed from storage.",
                &self.cache_bypasses,
            ),
            (
                "cascade_origin_storage_reads_total",
                "Reads sent to the object store.",
                &self.storage_reads,
            ),
            (
                "cascade_origin_storage_read_bytes_total",
                "Bytes read from the object store.",
                &self.storage_read_bytes,
            ),
            (
                "cascade_origin_breaker_rejections_total",
                "Storage reads refused by the open circuit breaker.",
                &self.breaker_rejections,
            ),
            (
                "cascade_origin_breaker_opened_total",
                "Times the storage circuit breaker opened.",
                &self.breaker_opened,
            ),
            (
                "cascade_origin_asset_lookups_total",
                "Playback id lookups sent to Postgres.",
                &self.asset_lookups,
            ),
            (
                "cascade_origin_asset_lookup_errors_total",
                "Playback id lookups that failed.",
                &self.asset_lookup_errors,
            ),
            (
                "cascade_origin_asset_lookup_stale_total",
                "Failed playback id lookups answered from the last known asset (stale-if-error).",
                &self.asset_lookup_stale,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cascade_origin_storage_read_errors_total Failed storage reads, by error type.\n\
             # TYPE cascade_origin_storage_read_errors_total counter"
        );
        for (kind, counter) in STORAGE_ERRORS.iter().zip(&self.storage_errors) {
            let _ = writeln!(
                out,
                "cascade_origin_storage_read_errors_total{{error_type=\"{kind}\"}} {}",
                counter.load(Relaxed)
            );
        }
        self.storage_read_duration.render(
            &mut out,
            "cascade_origin_storage_read_duration_seconds",
            "Time of one storage read (whole object for the memory tier, open for streamed ones).",
        );
        let gauges: [(&str, &str, u64); 3] = [
            (
                "cascade_origin_cache_size_bytes",
                "Weighted size of the memory tier.",
                gauges.cache_bytes,
            ),
            (
                "cascade_origin_cache_entries",
                "Entries in the memory tier.",
                gauges.cache_entries,
            ),
            (
                "cascade_origin_breaker_state",
                "Storage circuit breaker: 0 closed, 1 open, 2 half-open.",
                u64::from(gauges.breaker_state),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request(3, 200, Duration::from_micros(300));
        m.request(3, 200, Duration::from_millis(30));
        m.request(0, 999, Duration::from_secs(10));
        let text = m.render(&Gauges {
            cache_bytes: 5,
            cache_entries: 1,
            breaker_state: 0,
        });
        assert!(text
            .contains("cascade_origin_requests_total{class=\"media_segment\",status=\"200\"} 2\n"));
        assert!(text.contains(
            "cascade_origin_requests_total{class=\"hls_playlist\",status=\"other\"} 1\n"
        ));
        assert!(text.contains("cascade_origin_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("cascade_origin_request_duration_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("cascade_origin_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("cascade_origin_request_duration_seconds_count 3\n"));
        assert!(text.contains("cascade_origin_cache_size_bytes 5\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
