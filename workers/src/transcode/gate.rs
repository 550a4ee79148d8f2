//! The publish gate: every transcoded version is checked, read back from
//! storage as a player would read it, before its asset turns `ready`.
//!
//! The checks themselves are `cascade qa`'s (the `qa` crate, which depends
//! on this one), so the binary hands the transcode handler a [`PublishGate`]
//! that runs them; this module holds what the handler needs to know: the
//! request, the verdict and what the policy does with it.

use cascade_platform::config::QaGatePolicy;
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
    /// Do not publish: the asset turns errored with this message.
    Refuse(String),
}

impl Decision {
    /// Whether any check failed (a refusal, or a publish under `warn`).
    pub fn failed(&self) -> bool {
        match self {
            Self::Publish(record) => !record.report.failures.is_empty(),
            Self::Refuse(_) => true,
        }
    }
}

/// Runs `gate` over `request` and applies `policy`: the counts are
/// logged, and each failure of a version published anyway (`warn`) as a
/// warning. `Err` when the checks could not run (storage trouble: the
/// caller retries, never publishes unchecked).
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
                "published with a failed quality check (transcode.qa_gate = warn)");
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
            Decision::Refuse(message)
        }
        QaGatePolicy::Warn | QaGatePolicy::Off => Decision::Publish(QualityRecord {
            gate: "warned".to_owned(),
            version,
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
            Decision::Refuse(message) => {
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
