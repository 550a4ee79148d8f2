//! The publish gate: every transcoded version is checked, read back from
//! storage as a player would read it, before its asset turns `ready`.
//!
//! The checks themselves are `cascade qa`'s (the `qa` crate, which depends
//! on this one), so the binary hands the transcode handler a [`PublishGate`]
//! that runs them; this module holds what the handler needs to know: the
//! request, the verdict and what the policy does with it.

use std::collections::BTreeMap;

use cascade_platform::config::QaGatePolicy;
pub use cascade_schemas::jobs::Corrections;
use cascade_schemas::{AssetId, ObjectKey};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The error code of an asset whose outputs failed the gate (`enforce`).
pub const QA_FAILED: &str = "qa_failed";

/// A version to check: its objects are stored (manifests last) but not
/// yet served as the asset's published version.
#[derive(Debug, Clone)]
pub struct GateRequest {
    pub asset: AssetId,
    pub version: u32,
    /// The stored source the version was made from; `None` for a live
    /// recording (the broadcast's own segments, with no file to compare
    /// them with): the version is then checked for itself (structure,
    /// alignment across rungs, timing, codecs, declared bandwidth), with
    /// no expected ladder and no pictures.
    pub source: Option<StoredSource>,
}

/// A stored source object.
#[derive(Debug, Clone)]
pub struct StoredSource {
    pub key: ObjectKey,
    pub size: u64,
}

/// One failed check, as `cascade qa` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateFailure {
    /// Stable check id (`bitrate.average`, docs/qa.md).
    pub check: String,
    pub rendition: Option<String>,
    pub message: String,
    pub expected: Option<String>,
    pub measured: Option<String>,
}

impl GateFailure {
    /// "bitrate.average [1080p]: average bitrate against the target
    /// (expected ..., measured ...)": what a creator or operator reads.
    pub fn describe(&self) -> String {
        let mut text = self.check.clone();
        if let Some(rendition) = &self.rendition {
            text.push_str(&format!(" [{rendition}]"));
        }
        text.push_str(": ");
        text.push_str(&self.message);
        if let (Some(expected), Some(measured)) = (&self.expected, &self.measured) {
            text.push_str(&format!(" (expected {expected}, measured {measured})"));
        }
        text
    }
}

/// Measured facts of one published rendition, kept with the asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionQuality {
    pub name: String,
    /// `video` or `audio`.
    pub kind: String,
    pub codecs: Option<String>,
    pub frames: u64,
    pub duration_s: f64,
    pub average_bitrate: u64,
    pub peak_bitrate: u64,
    /// The ladder's bitrate for it, bit/s.
    pub target_bitrate: Option<u64>,
    /// The highest segment bit rate `bitrate.peak` allows it, bit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_bitrate_limit: Option<u64>,
    /// Checks of this rendition that passed and failed.
    pub passed: u32,
    pub failed: u32,
    /// Video: PSNR-Y and SSIM-Y against the source on the frames the gate
    /// sampled (mean, and PSNR-Y's lowest), and how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psnr_y_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psnr_y_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssim_y_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_sampled: Option<u64>,
}

/// What the gate found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub checks_passed: u32,
    pub checks_failed: u32,
    pub checks_skipped: u32,
    pub failures: Vec<GateFailure>,
    pub renditions: Vec<RenditionQuality>,
    /// Time the checks took, seconds.
    pub seconds: f64,
}

/// The gate's record on the asset (the API's `quality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    /// `passed`, or `warned` (failed, published by policy).
    pub gate: String,
    /// The version checked.
    pub version: u32,
    /// The version is a corrective take: what failed before and what the
    /// encode changed for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected: Option<Corrections>,
    #[serde(flatten)]
    pub report: GateReport,
}

/// Runs the checks; `Err` when they could not run (storage trouble): the
/// transcode is then retried, the version not published unchecked.
pub trait PublishGate: Send + Sync {
    fn check(&self, request: GateRequest) -> BoxFuture<'static, Result<GateReport, String>>;
}

/// What the handler does with a report under `policy`.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish, recording this on the asset.
    Publish(QualityRecord),
    /// Do not publish: the asset turns errored with `message`.
    Refuse { message: String, report: GateReport },
}

impl Decision {
    /// Whether any check failed (a refusal, or a publish under `warn`).
    pub fn failed(&self) -> bool {
        !self.report().failures.is_empty()
    }

    /// What the checks found.
    pub fn report(&self) -> &GateReport {
        match self {
            Self::Publish(record) => &record.report,
            Self::Refuse { report, .. } => report,
        }
    }
}

/// The share of the allowed bit rate a corrective take aims a rung at:
/// enough margin that an encoder which overshot by the measured ratio
/// lands under the limit when it overshoots by as much again.
const CORRECTION_MARGIN: f64 = 0.9;

/// A corrective take never asks a rung's encoder for less than this share
/// of its bit rate: a rung that overshot by more than 4x has a fault no
/// rate setting explains.
const SMALLEST_RATE_SCALE: f64 = 0.25;

/// How encoding again could correct a failed version: the rate scale per
/// video rung, when every failure is a video rung's bit rate over its cap
/// (`bitrate.average` over the ladder's target, `bitrate.peak` over its
/// limit), each scaled by the measured overshoot with a margin. `None`
/// when any failure is of another kind (a damaged segment, pictures far
/// from the source): encoding again with other rates would not change it.
pub fn rate_corrections(report: &GateReport) -> Option<BTreeMap<String, f64>> {
    if report.failures.is_empty() {
        return None;
    }
    let mut scales: BTreeMap<String, f64> = BTreeMap::new();
    for failure in &report.failures {
        let name = failure.rendition.as_deref()?;
        let rendition = report
            .renditions
            .iter()
            .find(|r| r.name == name && r.kind == "video")?;
        let (limit, measured) = match failure.check.as_str() {
            "bitrate.average" => (rendition.target_bitrate?, rendition.average_bitrate),
            "bitrate.peak" => (rendition.peak_bitrate_limit?, rendition.peak_bitrate),
            _ => return None,
        };
        if measured == 0 || limit == 0 {
            return None;
        }
        let scale = (CORRECTION_MARGIN * limit as f64 / measured as f64)
            .clamp(SMALLEST_RATE_SCALE, CORRECTION_MARGIN);
        let entry = scales.entry(name.to_owned()).or_insert(scale);
        *entry = entry.min(scale);
    }
    Some(scales)
}

/// Runs `gate` over `request` and applies `policy`: the counts are
/// logged, and each failure of a version not refused (`warn`: it is
/// published, or taken again where that corrects it) as a warning. `Err`
/// when the checks could not run (storage trouble: the caller retries,
/// never publishes unchecked).
pub async fn check_and_decide(
    gate: &dyn PublishGate,
    policy: QaGatePolicy,
    request: GateRequest,
) -> Result<Decision, String> {
    let (asset, version) = (request.asset, request.version);
    let report = gate.check(request).await?;
    tracing::info!(asset_id = %asset, version, passed = report.checks_passed,
        failed = report.checks_failed, seconds = report.seconds, "quality checks done");
    let decision = decide(policy, version, report);
    if let Decision::Publish(record) = &decision {
        for failure in &record.report.failures {
            tracing::warn!(asset_id = %asset, check = %failure.check,
                failure = %failure.describe(),
                "a quality check failed; not refused (transcode.qa_gate = warn)");
        }
    }
    Ok(decision)
}

/// Publish a passing version; a failing one is refused (`enforce`) or
/// published with its failures recorded (`warn`).
pub fn decide(policy: QaGatePolicy, version: u32, report: GateReport) -> Decision {
    if report.failures.is_empty() {
        return Decision::Publish(QualityRecord {
            gate: "passed".to_owned(),
            version,
            corrected: None,
            report,
        });
    }
    match policy {
        QaGatePolicy::Enforce => {
            let shown: Vec<String> = report
                .failures
                .iter()
                .take(3)
                .map(GateFailure::describe)
                .collect();
            let more = report.failures.len().saturating_sub(shown.len());
            let mut message = format!(
                "the outputs failed the quality check, so they were not published: {}",
                shown.join("; ")
            );
            if more > 0 {
                message.push_str(&format!("; and {more} more"));
            }
            Decision::Refuse { message, report }
        }
        QaGatePolicy::Warn | QaGatePolicy::Off => Decision::Publish(QualityRecord {
            gate: "warned".to_owned(),
            version,
            corrected: None,
            report,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failures: usize) -> GateReport {
        GateReport {
            checks_passed: 40,
            checks_failed: failures as u32,
            checks_skipped: 2,
            failures: (0..failures)
                .map(|i| GateFailure {
                    check: "bitrate.average".to_owned(),
                    rendition: Some(format!("rung{i}")),
                    message: "average bitrate against the target".to_owned(),
                    expected: Some("<= 5000 kbit/s".to_owned()),
                    measured: Some("6600 kbit/s".to_owned()),
                })
                .collect(),
            renditions: Vec::new(),
            seconds: 0.1,
        }
    }

    fn rendition(name: &str, kind: &str, average: u64, peak: u64) -> RenditionQuality {
        RenditionQuality {
            name: name.to_owned(),
            kind: kind.to_owned(),
            codecs: None,
            frames: 100,
            duration_s: 4.0,
            average_bitrate: average,
            peak_bitrate: peak,
            target_bitrate: Some(2_000_000),
            peak_bitrate_limit: Some(4_000_000),
            passed: 10,
            failed: 1,
            psnr_y_mean: None,
            psnr_y_min: None,
            ssim_y_mean: None,
            frames_sampled: None,
        }
    }

    fn failure(check: &str, rendition: &str) -> GateFailure {
        GateFailure {
            check: check.to_owned(),
            rendition: Some(rendition.to_owned()),
            message: String::new(),
            expected: None,
            measured: None,
        }
    }

    #[test]
    fn rungs_over_their_caps_are_corrected_by_their_overshoot_and_nothing_else_is() {
        let mut failed = report(0);
        failed.renditions = vec![
            rendition("720p", "video", 4_000_000, 9_000_000),
            rendition("480p", "video", 1_000_000, 5_000_000),
            rendition("audio", "audio", 200_000, 300_000),
        ];
        failed.failures = vec![
            failure("bitrate.average", "720p"),
            failure("bitrate.peak", "720p"),
            failure("bitrate.peak", "480p"),
        ];
        let scales = rate_corrections(&failed).expect("correctable");
        // 720p: the lower of 0.9 * 2/4 (average) and 0.9 * 4/9 (peak).
        assert!((scales["720p"] - 0.4).abs() < 1e-9, "{scales:?}");
        assert!((scales["480p"] - 0.72).abs() < 1e-9, "{scales:?}");
        assert_eq!(scales.len(), 2);

        // Any failure a rate cannot fix: no corrective take.
        for other in [
            failure("structure.segment_boxes", "720p"),
            failure("bitrate.average", "audio"),
            failure("bitrate.average", "1080p"),
            GateFailure {
                rendition: None,
                ..failure("timing.duration", "")
            },
        ] {
            let mut mixed = failed.clone();
            mixed.failures.push(other.clone());
            assert_eq!(rate_corrections(&mixed), None, "{other:?}");
        }
        assert_eq!(rate_corrections(&report(0)), None);

        // A wild overshoot is not chased below a quarter of the rate.
        let mut wild = failed.clone();
        wild.renditions[0].average_bitrate = 40_000_000;
        wild.failures.truncate(1);
        assert_eq!(
            rate_corrections(&wild).unwrap()["720p"],
            SMALLEST_RATE_SCALE
        );
    }

    #[test]
    fn a_passing_version_is_published_under_every_policy() {
        for policy in [QaGatePolicy::Enforce, QaGatePolicy::Warn] {
            let Decision::Publish(record) = decide(policy, 2, report(0)) else {
                panic!("refused");
            };
            assert_eq!((record.gate.as_str(), record.version), ("passed", 2));
        }
    }

    #[test]
    fn a_failing_version_is_refused_naming_its_checks_or_published_with_a_warning() {
        match decide(QaGatePolicy::Enforce, 1, report(5)) {
            Decision::Refuse { message, .. } => {
                assert!(
                    message.contains("bitrate.average [rung0]: average bitrate against the target (expected <= 5000 kbit/s, measured 6600 kbit/s)"),
                    "{message}"
                );
                assert!(message.ends_with("and 2 more"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match decide(QaGatePolicy::Warn, 1, report(1)) {
            Decision::Publish(record) => {
                assert_eq!(record.gate, "warned");
                assert_eq!(record.report.failures.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
