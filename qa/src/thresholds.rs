//! Pass/fail limits, from a TOML file (`--thresholds`) over these defaults.
//! Every field is documented in docs/qa.md with the reasoning behind its default.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Mean PSNR-Y of the top rung against the reference, dB.
    pub min_top_psnr_y_db: f64,
    /// 1st-percentile PSNR-Y of the top rung, dB: no stretch of bad frames.
    pub min_top_psnr_y_low1_db: f64,
    /// Mean SSIM-Y of the top rung.
    pub min_top_ssim_y: f64,
    /// Each rung's mean PSNR-Y must exceed the next lower rung's by this much, dB:
    /// adjacent rungs a visible step apart, not two encodes of the same thing.
    pub min_adjacent_psnr_step_db: f64,
    /// Average bitrate within this fraction of the ladder target.
    pub bitrate_average_tolerance: f64,
    /// With capped CRF, an average under the target is allowed (easy content
    /// needs fewer bits); only the upper bound applies.
    pub allow_undershoot_with_capped_crf: bool,
    /// Peak segment bitrate at most this multiple of the target (the VBV
    /// buffer is two seconds of the target rate; a 2 s window may carry 2x).
    pub max_peak_to_target: f64,
    /// AVERAGE-BANDWIDTH within this fraction of the measured average.
    pub average_bandwidth_tolerance: f64,
    /// Slack on "BANDWIDTH at least the measured peak", as a fraction (rounding).
    pub bandwidth_slack: f64,
    /// Segment start times equal across video rungs within this, ms.
    pub alignment_tolerance_ms: f64,
    /// Audio start relative to video start may differ from the reference's
    /// by this much, ms (ATSC IS-191: audio up to 45 ms late).
    pub max_av_offset_ms: f64,
    /// Audio duration against the reference's, ms (two AAC frames at 48 kHz).
    pub audio_duration_tolerance_ms: f64,
    /// Frames per rung may differ from the reference's (after frame-rate
    /// capping) by this many.
    pub frame_count_tolerance: u64,
    /// Largest share of a rung's frames FFmpeg's `idet` may call interlaced
    /// beyond the share it calls interlaced in the (deinterlaced) reference:
    /// an interlaced source published without deinterlacing shows combing.
    pub max_combed_fraction: f64,
    /// An audio rendition's integrated loudness (EBU R 128) may differ from
    /// the reference's by this much, LU: AAC at the ladder's rate stays
    /// within a few tenths; a gain or downmix mistake does not.
    pub max_audio_loudness_difference_lu: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_top_psnr_y_db: 38.0,
            min_top_psnr_y_low1_db: 33.0,
            min_top_ssim_y: 0.95,
            min_adjacent_psnr_step_db: 0.5,
            bitrate_average_tolerance: 0.25,
            allow_undershoot_with_capped_crf: true,
            max_peak_to_target: 2.0,
            average_bandwidth_tolerance: 0.10,
            bandwidth_slack: 0.005,
            alignment_tolerance_ms: 1.0,
            max_av_offset_ms: 45.0,
            audio_duration_tolerance_ms: 50.0,
            frame_count_tolerance: 0,
            max_combed_fraction: 0.1,
            max_audio_loudness_difference_lu: 1.0,
        }
    }
}

/// How far a mean over the publish gate's sampled frames may fall below
/// the mean over every frame (`sampled.rs`), PSNR-Y in dB and SSIM-Y:
/// measured on the test fixtures at up to 1.7 dB and 0.002 (3-10 samples).
pub const SAMPLED_PSNR_ALLOWANCE_DB: f64 = 2.5;
pub const SAMPLED_SSIM_ALLOWANCE: f64 = 0.005;

impl Thresholds {
    /// These limits for quality measured on sampled frames: the picture
    /// limits lowered by the sampling's error, so that a version is refused
    /// for its pictures, not for which frames were drawn.
    pub fn for_sampled_frames(&self) -> Self {
        Self {
            min_top_psnr_y_db: self.min_top_psnr_y_db - SAMPLED_PSNR_ALLOWANCE_DB,
            min_top_psnr_y_low1_db: self.min_top_psnr_y_low1_db - SAMPLED_PSNR_ALLOWANCE_DB,
            min_top_ssim_y: self.min_top_ssim_y - SAMPLED_SSIM_ALLOWANCE,
            ..self.clone()
        }
    }

    /// Reads a TOML file; fields it leaves out keep their defaults, unknown
    /// fields are an error (a typo must not silently loosen a limit).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read thresholds {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("thresholds {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let t: Thresholds = toml::from_str("min_top_psnr_y_db = 40.5").unwrap();
        assert_eq!(t.min_top_psnr_y_db, 40.5);
        assert_eq!(
            t.max_peak_to_target,
            Thresholds::default().max_peak_to_target
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<Thresholds>("min_top_psnr = 40").is_err());
    }
}
