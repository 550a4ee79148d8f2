//! The QA report: one stable, documented JSON schema (docs/qa.md), rendered
//! as a terminal table, a JSON file and a self-contained HTML page.

use serde::{Deserialize, Serialize};

use crate::thresholds::Thresholds;

/// Version of the JSON schema below. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Outcome of one check, and of the whole report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not applicable or not measurable here (the message says why).
    Skip,
}

/// One named check. `id` is stable (`structure.codecs`, `timing.segment_alignment`...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    /// The rendition the check is about; `None` for presentation-wide checks.
    pub rendition: Option<String>,
    pub status: Status,
    pub message: String,
    pub expected: Option<String>,
    pub measured: Option<String>,
}

impl Check {
    /// A check with no expected or measured value.
    pub fn new(
        id: &str,
        rendition: Option<&str>,
        status: Status,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            rendition: rendition.map(str::to_owned),
            status,
            message: message.into(),
            expected: None,
            measured: None,
        }
    }
}

/// HLS or DASH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Hls,
    Dash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Video,
    Audio,
}

/// What the reference file is, as displayed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReferenceInfo {
    pub path: String,
    /// Displayed size (rotation and sample aspect ratio applied).
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    pub frames: Option<u64>,
    /// Video duration, else audio duration, seconds.
    pub duration_s: f64,
    pub video_start_s: Option<f64>,
    pub audio_start_s: Option<f64>,
    pub audio_duration_s: Option<f64>,
    pub rotation: u32,
}

/// Whether VMAF could be computed, and why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmafAvailability {
    pub available: bool,
    pub note: String,
}

/// What the manifest says about a rendition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Declared {
    /// HLS: the variant's BANDWIDTH (video and its audio group together);
    /// DASH: the Representation's @bandwidth.
    pub bandwidth: Option<u64>,
    pub average_bandwidth: Option<u64>,
    pub codecs: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    /// HLS EXT-X-TARGETDURATION, DASH MPD@maxSegmentDuration, seconds.
    pub target_duration_s: Option<f64>,
}

/// What the fetched media is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    /// RFC 6381 codec string derived from the init segment.
    pub codecs: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    /// Video frames or audio packets.
    pub frames: u64,
    /// First presentation timestamp, seconds.
    pub start_s: f64,
    pub duration_s: f64,
    /// Media segment bytes x 8 / declared duration, bit/s.
    pub average_bitrate: u64,
    /// Peak segment bit rate as RFC 8216bis defines it (contiguous segments
    /// lasting 0.5x to 1.5x the target duration), bit/s.
    pub peak_bitrate: u64,
    pub total_bytes: u64,
}

/// One media segment as fetched and demuxed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SegmentReport {
    /// Position in the manifest, from 1.
    pub index: u32,
    pub uri: String,
    /// HTTP status of the fetch; 0 when the request itself failed.
    pub http_status: u16,
    pub bytes: u64,
    pub declared_duration_s: f64,
    /// Sum of the demuxed packet durations.
    pub duration_s: f64,
    /// Earliest presentation timestamp in the segment, seconds.
    pub start_s: Option<f64>,
    pub bitrate: u64,
    pub starts_with_keyframe: Option<bool>,
    /// Why the segment could not be read, if it could not.
    pub error: Option<String>,
}

/// Quality of one video rendition against the reference.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Quality {
    pub frames_compared: u64,
    pub psnr_y_mean: f64,
    /// 1st percentile (nearest rank) of the per-frame PSNR-Y.
    pub psnr_y_low1: f64,
    pub ssim_y_mean: f64,
    pub ssim_y_low1: f64,
    pub vmaf_mean: Option<f64>,
    /// Frames FFmpeg's `idet` (multi-frame detection) judged interlaced
    /// (combing), and all it judged.
    #[serde(default)]
    pub combed_frames: u64,
    #[serde(default)]
    pub idet_frames: u64,
    /// The same for the reference (deinterlaced when interlaced): the
    /// baseline, since detailed or synthetic progressive content can look
    /// interlaced to `idet` too.
    #[serde(default)]
    pub reference_combed_frames: u64,
    #[serde(default)]
    pub reference_idet_frames: u64,
    /// Per compared frame, in presentation order (PSNR capped at 100 dB).
    pub psnr_y: Vec<f64>,
    pub ssim_y: Vec<f64>,
}

/// One rendition (video rung or audio).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenditionReport {
    pub name: String,
    pub kind: MediaKind,
    /// Manifest URL of the rendition (HLS media playlist; DASH: the MPD).
    pub playlist_url: String,
    pub declared: Declared,
    pub measured: Measured,
    /// The ladder's bitrate for this rung (or the audio bitrate), bit/s.
    pub target_bitrate: Option<u64>,
    pub segments: Vec<SegmentReport>,
    pub quality: Option<Quality>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool_version: String,
    pub url: String,
    pub format: Format,
    pub generated_at: String,
    pub elapsed_s: f64,
    /// `pass` when no check failed, else `fail`.
    pub result: Status,
    pub reference: ReferenceInfo,
    pub thresholds: Thresholds,
    pub vmaf: VmafAvailability,
    pub renditions: Vec<RenditionReport>,
    pub checks: Vec<Check>,
    pub summary: Summary,
}

impl Report {
    /// Recomputes `summary` and `result` from `checks`.
    pub fn tally(&mut self) {
        let mut summary = Summary::default();
        for check in &self.checks {
            match check.status {
                Status::Pass => summary.passed += 1,
                Status::Fail => summary.failed += 1,
                Status::Skip => summary.skipped += 1,
            }
        }
        self.result = if summary.failed == 0 {
            Status::Pass
        } else {
            Status::Fail
        };
        self.summary = summary;
    }

    /// Failed checks, in report order.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}
