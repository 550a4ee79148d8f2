//! The queue's depth as Prometheus gauges, sampled from Postgres on an
//! interval (never per scrape, so a scraper cannot load the database).
//!
//! Every `cascade serve` process with the ingest or workers role samples:
//! workers may be scaled to zero by the very number they would report, and
//! ingest is always up. Dashboards and alerts therefore aggregate with
//! `max by (kind)` across instances. KEDA reads the
//! same figures straight from Postgres (see `infra/k8s/workers.yaml`).

use std::time::Duration;

use cascade_schemas::job_kind;
use prometheus_client::encoding::EncodeLabelSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Family, FloatGauge, Gauge, Registry, Unit};
use crate::Queue;

/// A job kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The job kind (`transcode`, `webhook`, ...).
    pub kind: String,
}

impl KindLabels {
    /// The label set of `kind`.
    pub fn of(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
        }
    }
}

/// The labels of a job count by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindStateLabels {
    kind: String,
    /// `ready`, `scheduled`, `running` or `dead`.
    state: &'static str,
}

/// The sampled gauges.
#[derive(Clone, Debug, Default)]
pub struct QueueGauges {
    jobs: Family<KindStateLabels, Gauge>,
    oldest_ready_age: Family<KindLabels, FloatGauge>,
    sampled: FloatGauge,
}

impl QueueGauges {
    /// New gauges, every known kind at 0, registered into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        // Every known kind at 0, so dashboards and alerts always have a series.
        for kind in job_kind::ALL {
            gauges.set(kind, 0, 0, 0, 0.0);
            gauges.set_dead(kind, 0);
        }
        registry.register(
            "cascade_queue_jobs",
            "Jobs in the queue by kind and state: ready (runnable now), scheduled (backing off or \
             delayed), running (leased), dead (out of attempts, waiting for an operator)",
            gauges.jobs.clone(),
        );
        registry.register_with_unit(
            "cascade_queue_oldest_ready_job_age",
            "How long the oldest runnable job of a kind has waited; 0 when none waits",
            Unit::Seconds,
            gauges.oldest_ready_age.clone(),
        );
        registry.register_with_unit(
            "cascade_queue_last_sample",
            "When the queue gauges were last read from Postgres (Unix time)",
            Unit::Seconds,
            gauges.sampled.clone(),
        );
        gauges
    }

    fn set(&self, kind: &str, ready: i64, scheduled: i64, running: i64, oldest: f64) {
        for (state, value) in [
            ("ready", ready),
            ("scheduled", scheduled),
            ("running", running),
        ] {
            self.jobs
                .get_or_create(&KindStateLabels {
                    kind: kind.to_owned(),
                    state,
                })
                .set(value);
        }
        self.oldest_ready_age
            .get_or_create(&KindLabels::of(kind))
            .set(oldest);
    }

    fn set_dead(&self, kind: &str, dead: i64) {
        self.jobs
            .get_or_create(&KindStateLabels {
                kind: kind.to_owned(),
                state: "dead",
            })
            .set(dead);
    }

    /// Reads the queue once and updates the gauges.
    pub async fn sample(&self, queue: &Queue) -> Result<(), crate::queue::QueueError> {
        let depth = queue.depth().await?;
        let dead = queue.dead_counts().await?;
        // Kinds not in the answer have no queued or running job: zero them,
        // or a drained queue would keep reporting its last depth.
        let mut seen: Vec<String> = job_kind::ALL.iter().map(|k| (*k).to_owned()).collect();
        for row in &depth {
            if !seen.contains(&row.kind) {
                seen.push(row.kind.clone());
            }
        }
        for kind in &seen {
            match depth.iter().find(|row| &row.kind == kind) {
                Some(row) => self.set(
                    kind,
                    row.ready,
                    row.scheduled,
                    row.running,
                    row.oldest_ready_age_seconds,
                ),
                None => self.set(kind, 0, 0, 0, 0.0),
            }
            let dead = dead.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
            self.set_dead(kind, dead);
        }
        for (kind, n) in &dead {
            if !seen.contains(kind) {
                self.set_dead(kind, *n);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.sampled.set(now);
        Ok(())
    }

    /// Samples every `every` until `cancel` fires. Errors are logged and the
    /// gauges keep their last values (the sample time shows their age).
    pub async fn run(self, queue: Queue, every: Duration, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.sample(&queue).await {
                tracing::debug!(error = %error, "cannot sample the queue depth");
            }
        }
    }
}
