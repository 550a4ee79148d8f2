//! The live ladders' metrics: how many streams of this process run
//! degraded now, and each step down taken. `cascade serve` registers them;
//! operators see a replica short of CPU for its streams here before
//! viewers notice (docs/operations.md, `CascadeLiveDegraded`).

use cascade_platform::metrics::{Counter, Family, Gauge, Registry};
use prometheus_client::encoding::EncodeLabelSet;

use crate::transcode::pacer::{Degradation, Step};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

/// Metrics of the live sessions of a process.
#[derive(Clone, Debug)]
pub struct LiveMetrics {
    degraded: Gauge,
    steps: Family<StepLabels, Counter>,
}

impl Default for LiveMetrics {
    fn default() -> Self {
        let metrics = Self {
            degraded: Gauge::default(),
            steps: Family::default(),
        };
        // Every step's series exists from the start (rates and alerts have
        // data before the first step).
        for step in [
            Step::FasterPreset,
            Step::TopRungDropped,
            Step::HalfFrameRate,
        ] {
            let _ = metrics.steps.get_or_create(&StepLabels {
                step: step.as_str(),
            });
        }
        metrics
    }
}

impl LiveMetrics {
    /// Adds them to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cascade_live_degraded_streams",
            "Live streams of this process whose ladder is degraded to keep up with real time",
            self.degraded.clone(),
        );
        registry.register(
            "cascade_live_degradation_steps",
            "Steps down live ladders took to keep up (faster_preset, top_rung_dropped, half_frame_rate)",
            self.steps.clone(),
        );
    }

    /// A session's ladder went from `from` to `to`.
    pub(crate) fn changed(&self, from: Degradation, to: Degradation) {
        if to.depth > from.depth {
            if let Some(step) = to.last {
                self.steps
                    .get_or_create(&StepLabels {
                        step: step.as_str(),
                    })
                    .inc();
            }
        }
        match (from.depth > 0, to.depth > 0) {
            (false, true) => {
                self.degraded.inc();
            }
            (true, false) => {
                self.degraded.dec();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_down_count_and_degraded_streams_come_and_go() {
        let metrics = LiveMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let text = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        let none = Degradation::default();
        let preset = Degradation {
            depth: 1,
            last: Some(Step::FasterPreset),
            faster_preset: true,
            ..none
        };
        let dropped = Degradation {
            depth: 2,
            last: Some(Step::TopRungDropped),
            top_rung_dropped: true,
            ..preset
        };
        metrics.changed(none, preset);
        metrics.changed(preset, dropped);
        metrics.changed(dropped, preset);
        let during = text();
        assert!(
            during.contains("cascade_live_degraded_streams 1\n"),
            "{during}"
        );
        assert!(
            during.contains("cascade_live_degradation_steps_total{step=\"top_rung_dropped\"} 1\n")
        );
        assert!(
            during.contains("cascade_live_degradation_steps_total{step=\"half_frame_rate\"} 0\n")
        );
        metrics.changed(preset, none);
        assert!(text().contains("cascade_live_degraded_streams 0\n"));
    }
}
