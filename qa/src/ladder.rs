//! The ladder a presentation is expected to publish: Cascade's own (from the
//! transcode config, planned for the reference's size), one read from a
//! file (another pipeline's ladder), or none (a presentation made elsewhere
//! is checked on what it declares and contains, not against a plan).

use std::path::Path;

use cascade_platform::config::{RateControl, RungConfig, TranscodeConfig};
use cascade_schemas::ladder::{self, PlannedRung};
use serde::Deserialize;

/// Rungs and rate control the outputs were made with.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedLadder {
    /// Where the ladder came from, for the report (`cascade config`, a path).
    pub origin: String,
    pub rungs: Vec<RungConfig>,
    /// Audio rendition bitrate, bit/s.
    pub audio_bitrate: u64,
    /// How the video rungs spend their bitrate (capped CRF may spend less).
    pub rate_control: RateControl,
}

/// A ladder file: the `ladder`, `audio_bitrate` and `rate_control` keys of
/// Cascade's `[transcode]` section, alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LadderFile {
    ladder: Vec<RungConfig>,
    audio_bitrate: u64,
    #[serde(default = "default_rate_control")]
    rate_control: RateControl,
}

fn default_rate_control() -> RateControl {
    RateControl::Vbr
}

impl ExpectedLadder {
    /// Cascade's ladder as this config plans it.
    pub fn from_config(transcode: &TranscodeConfig) -> Self {
        Self {
            origin: "the transcode config".to_owned(),
            rungs: transcode.ladder.clone(),
            audio_bitrate: transcode.audio_bitrate,
            rate_control: transcode.rate_control,
        }
    }

    /// A TOML file of `ladder = [{ name, short_side, bitrate }, ...]`,
    /// `audio_bitrate` and optionally `rate_control` (default `vbr`:
    /// averages are held to the target from both sides).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the ladder {}: {e}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    fn from_toml(text: &str, origin: &str) -> Result<Self, String> {
        let file: LadderFile = toml::from_str(text).map_err(|e| format!("ladder {origin}: {e}"))?;
        if file.ladder.is_empty() {
            return Err(format!("ladder {origin}: no rungs"));
        }
        if let Some(rung) = file
            .ladder
            .iter()
            .find(|r| r.short_side < 2 || r.bitrate == 0)
        {
            return Err(format!(
                "ladder {origin}: rung {:?} needs a short side of at least 2 and a bitrate",
                rung.name
            ));
        }
        Ok(Self {
            origin: origin.to_owned(),
            rungs: file.ladder,
            audio_bitrate: file.audio_bitrate,
            rate_control: file.rate_control,
        })
    }

    /// The rungs planned for a reference displayed at `width` x `height`.
    pub fn plan(&self, width: u32, height: u32) -> Vec<PlannedRung> {
        ladder::plan(width, height, &self.rungs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_rungs_audio_and_rate_control() {
        let ladder = ExpectedLadder::from_toml(
            r#"
audio_bitrate = 96000
rate_control = "capped_crf"
ladder = [
  { name = "720p", short_side = 720, bitrate = 2500000 },
  { name = "360p", short_side = 360, bitrate = 700000 },
]
"#,
            "vendor.toml",
        )
        .unwrap();
        assert_eq!(ladder.audio_bitrate, 96_000);
        assert_eq!(ladder.rate_control, RateControl::CappedCrf);
        let planned: Vec<_> = ladder
            .plan(1920, 1080)
            .into_iter()
            .map(|r| (r.name, r.width, r.height))
            .collect();
        assert_eq!(
            planned,
            [
                ("720p".to_owned(), 1280, 720),
                ("360p".to_owned(), 640, 360)
            ]
        );
    }

    #[test]
    fn a_file_without_rungs_or_with_unknown_keys_is_refused() {
        assert!(ExpectedLadder::from_toml("audio_bitrate = 1\nladder = []", "f").is_err());
        assert!(ExpectedLadder::from_toml(
            "audio_bitrate = 1\nladders = []\nladder = [{ name = \"a\", short_side = 2, bitrate = 1 }]",
            "f"
        )
        .is_err());
        assert!(ExpectedLadder::from_toml(
            "audio_bitrate = 1\nladder = [{ name = \"a\", short_side = 0, bitrate = 1 }]",
            "f"
        )
        .is_err());
    }
}
