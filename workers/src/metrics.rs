//! The workers role's metrics: jobs by kind and outcome (what an autoscaler
//! and an on-call engineer read), transcode speed per rung and encoder, time
//! to ready, bytes written, webhook deliveries. One [`WorkerMetrics`] is
//! shared by the runner and the handlers of a process (`with_metrics` on
//! each); `cascade serve` registers it. The queue's depth is sampled
//! separately (`cascade_platform::queue_metrics`).

use std::time::Duration;

use cascade_platform::metrics::{
    Counter, Family, Gauge, Histogram, HistogramFamily, Registry, Unit, JOB_SECONDS, SPEED_RATIOS,
};
use cascade_platform::queue_metrics::KindLabels;
use cascade_schemas::job_kind;
use prometheus_client::encoding::EncodeLabelSet;

/// How an attempt of a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// Done and recorded.
    Succeeded,
    /// Failed; back in the queue with backoff.
    Retrying,
    /// Failed permanently (bad input): not retried.
    Failed,
    /// Failed, out of attempts: dead until an operator retries it.
    Dead,
    /// Its lease was lost (cancelled, or expired and reclaimed) and it stopped.
    LeaseLost,
    /// Stopped at shutdown and handed back to the queue.
    Released,
    /// Reclaimed from a worker that stopped heartbeating.
    Reaped,
}

impl JobOutcome {
    const ALL: [Self; 7] = [
        Self::Succeeded,
        Self::Retrying,
        Self::Failed,
        Self::Dead,
        Self::LeaseLost,
        Self::Released,
        Self::Reaped,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::LeaseLost => "lease_lost",
            Self::Released => "released",
            Self::Reaped => "reaped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RungLabels {
    rung: String,
    encoder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Webhook delivery results.
const DELIVERY_RESULTS: [&str; 3] = ["delivered", "rejected", "unreachable"];

/// Publish gate results, all exported from the start.
const GATE_RESULTS: [&str; 2] = ["passed", "failed"];
/// Transcode results.
const TRANSCODE_RESULTS: [&str; 5] = ["ready", "refused", "failed", "crashed", "retaken"];

/// Every metric of the workers role. Cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    claimed: Family<KindLabels, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    running: Family<KindLabels, Gauge>,
    run_duration: HistogramFamily<KindLabels>,
    queue_wait: HistogramFamily<KindLabels>,
    encode_speed: HistogramFamily<RungLabels>,
    transcodes: Family<ResultLabels, Counter>,
    time_to_ready: Histogram,
    time_to_playable: Histogram,
    output_bytes: Counter,
    storage_waits: Counter,
    deliveries: Family<ResultLabels, Counter>,
    delivery_duration: Histogram,
    gate_checks: Family<ResultLabels, Counter>,
    gate_duration: Histogram,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let metrics = Self {
            claimed: Family::default(),
            finished: Family::default(),
            running: Family::default(),
            run_duration: Family::new_with_constructor(|| Histogram::new(JOB_SECONDS)),
            queue_wait: Family::new_with_constructor(|| Histogram::new(JOB_SECONDS)),
            encode_speed: Family::new_with_constructor(|| Histogram::new(SPEED_RATIOS)),
            transcodes: Family::default(),
            time_to_ready: Histogram::new(JOB_SECONDS),
            time_to_playable: Histogram::new(JOB_SECONDS),
            output_bytes: Counter::default(),
            storage_waits: Counter::default(),
            deliveries: Family::default(),
            delivery_duration: Histogram::new(JOB_SECONDS),
            gate_checks: Family::default(),
            gate_duration: Histogram::new(JOB_SECONDS),
        };
        // Series an alert or a rate reads exist from the start at 0.
        for kind in job_kind::ALL {
            let labels = KindLabels::of(kind);
            drop(metrics.claimed.get_or_create(&labels));
            drop(metrics.running.get_or_create(&labels));
            for outcome in JobOutcome::ALL {
                drop(metrics.finished.get_or_create(&OutcomeLabels {
                    kind: kind.to_owned(),
                    outcome: outcome.label(),
                }));
            }
        }
        for result in TRANSCODE_RESULTS {
            drop(metrics.transcodes.get_or_create(&ResultLabels { result }));
        }
        for result in DELIVERY_RESULTS {
            drop(metrics.deliveries.get_or_create(&ResultLabels { result }));
        }
        for result in GATE_RESULTS {
            drop(metrics.gate_checks.get_or_create(&ResultLabels { result }));
        }
        metrics
    }
}

impl WorkerMetrics {
    /// Registers every metric.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cascade_jobs_claimed",
            "Jobs this worker claimed from the queue, by kind",
            self.claimed.clone(),
        );
        registry.register(
            "cascade_jobs_finished",
            "Job attempts that ended, by kind and outcome (succeeded, retrying, failed, dead, \
             lease_lost, released, reaped)",
            self.finished.clone(),
        );
        registry.register(
            "cascade_jobs_running",
            "Jobs running in this worker now, by kind",
            self.running.clone(),
        );
        registry.register_with_unit(
            "cascade_jobs_run_duration",
            "Time one attempt of a job ran, by kind",
            Unit::Seconds,
            self.run_duration.clone(),
        );
        registry.register_with_unit(
            "cascade_jobs_queue_wait",
            "Time a job waited runnable in the queue before this worker claimed it, by kind",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        registry.register(
            "cascade_transcode_encode_speed_ratio",
            "Seconds of video one rung's encoder turned out per second it was busy, by rung and \
             encoder (above 1 is faster than real time)",
            self.encode_speed.clone(),
        );
        registry.register(
            "cascade_transcode_assets",
            "Transcodes that ended: ready (published), refused (the source cannot be \
             processed), failed (our side; retried), crashed (the transcode child died on the \
             source; retried, quarantined on the last attempt)",
            self.transcodes.clone(),
        );
        registry.register_with_unit(
            "cascade_transcode_time_to_ready",
            "From the transcode job's enqueue (the source complete) to the asset ready",
            Unit::Seconds,
            self.time_to_ready.clone(),
        );
        registry.register_with_unit(
            "cascade_transcode_time_to_playable",
            "From the transcode job's enqueue to the asset playable (progressive publish: its \
             first segments and growing playlists stored)",
            Unit::Seconds,
            self.time_to_playable.clone(),
        );
        registry.register_with_unit(
            "cascade_transcode_output",
            "Bytes of segments, playlists and manifests written by transcodes",
            Unit::Bytes,
            self.output_bytes.clone(),
        );
        registry.register(
            "cascade_transcode_storage_waits",
            "Writes of transcode outputs that met an unavailable or full store and are \
             retried (the job waits up to queue.outage_grace without losing its attempt)",
            self.storage_waits.clone(),
        );
        registry.register(
            "cascade_webhook_deliveries",
            "Webhook POSTs by result: delivered (2xx), rejected (another status), unreachable \
             (no answer)",
            self.deliveries.clone(),
        );
        registry.register(
            "cascade_transcode_quality_checks",
            "Versions the publish gate checked (transcode.qa_gate), by result: passed, failed \
             (refused under enforce, published with a warning under warn)",
            self.gate_checks.clone(),
        );
        registry.register_with_unit(
            "cascade_transcode_quality_check_duration",
            "Time the publish gate took to check one version",
            Unit::Seconds,
            self.gate_duration.clone(),
        );
        registry.register_with_unit(
            "cascade_webhook_delivery_duration",
            "Time of one webhook POST",
            Unit::Seconds,
            self.delivery_duration.clone(),
        );
    }

    /// The publish gate checked a version in `took`.
    pub(crate) fn gate_checked(&self, took: Duration, failed: bool) {
        let result = if failed { "failed" } else { "passed" };
        self.gate_checks
            .get_or_create(&ResultLabels { result })
            .inc();
        self.gate_duration.observe(took.as_secs_f64());
    }

    /// A job was claimed after waiting `waited` in the queue; the guard
    /// counts it as running until dropped.
    pub(crate) fn claimed(&self, kind: &str, waited: Duration) -> RunningGuard {
        let labels = KindLabels::of(kind);
        self.claimed.get_or_create(&labels).inc();
        self.queue_wait
            .get_or_create(&labels)
            .observe_duration(waited);
        let running = self.running.get_or_create(&labels).clone();
        running.inc();
        RunningGuard(running)
    }

    /// An attempt ended after running `ran`.
    pub(crate) fn finished(&self, kind: &str, outcome: JobOutcome, ran: Option<Duration>) {
        self.finished
            .get_or_create(&OutcomeLabels {
                kind: kind.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
        if let Some(ran) = ran {
            self.run_duration
                .get_or_create(&KindLabels::of(kind))
                .observe_duration(ran);
        }
    }

    /// One rung encoded `media_seconds` of video while busy for `busy`.
    pub(crate) fn rung_encoded(
        &self,
        rung: &str,
        encoder: &str,
        media_seconds: f64,
        busy: Duration,
    ) {
        if busy.is_zero() || media_seconds <= 0.0 {
            return;
        }
        self.encode_speed
            .get_or_create(&RungLabels {
                rung: rung.to_owned(),
                encoder: encoder.to_owned(),
            })
            .observe(media_seconds / busy.as_secs_f64());
    }

    /// A transcode ended: `ready`, `refused`, `failed`, `crashed`, or
    /// `retaken` (the gate queued a corrective take of it).
    pub(crate) fn transcode_ended(&self, result: &'static str) {
        self.transcodes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// An asset turned playable `since_source` after its transcode was enqueued.
    pub(crate) fn playable(&self, since_source: Duration) {
        self.time_to_playable.observe_duration(since_source);
    }

    /// An asset turned ready `since_source` after its transcode was enqueued.
    pub(crate) fn ready(&self, since_source: Duration) {
        self.time_to_ready.observe_duration(since_source);
    }

    /// A transcode output's write met an unavailable or full store.
    pub(crate) fn storage_wait(&self) {
        self.storage_waits.inc();
    }

    /// Bytes a transcode wrote to storage.
    pub(crate) fn wrote(&self, bytes: u64) {
        self.output_bytes.inc_by(bytes);
    }

    /// One webhook POST: `status` when the endpoint answered.
    pub(crate) fn delivery(&self, status: Option<u16>, took: Duration) {
        let result = match status {
            Some(status) if (200..300).contains(&status) => "delivered",
            Some(_) => "rejected",
            None => "unreachable",
        };
        self.deliveries
            .get_or_create(&ResultLabels { result })
            .inc();
        self.delivery_duration.observe_duration(took);
    }
}

/// Counts one running job while alive.
#[derive(Debug)]
pub(crate) struct RunningGuard(Gauge);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
