//! The checks: structure, timing, quality and bitrate, each with a stable id
//! (listed in docs/qa.md) and, on failure, what was expected and measured.

use std::collections::HashMap;

use cascade_platform::config::RateControl;

use crate::ladder::ExpectedLadder;

use crate::media::{Container, ReferenceMedia, RenditionMedia};
use crate::presentation::Presentation;
use crate::report::{Check, Format, MediaKind, Status, VmafAvailability};
use crate::thresholds::Thresholds;
use crate::Analysed;

mod audio;
mod bitrate;
mod quality;
mod readers;
mod structure;
mod timing;

pub struct Inputs<'a> {
    pub presentation: &'a Presentation,
    /// Integrated loudness of the reference and the audio renditions.
    pub loudness: &'a crate::loudness::Loudness,
    pub renditions: &'a [Analysed],
    pub reference: &'a ReferenceMedia,
    pub thresholds: &'a Thresholds,
    /// The ladder the outputs are held to; `None` checks them on what they
    /// declare and contain alone.
    pub ladder: Option<&'a ExpectedLadder>,
    pub skip_quality: bool,
    pub vmaf: &'a VmafAvailability,
    pub gstreamer: GstreamerInputs<'a>,
}

/// What the GStreamer reader gives the checks.
#[derive(Default)]
pub struct GstreamerInputs<'a> {
    /// The reader ran (each rendition's reading is in its `Analysed`).
    pub used: bool,
    /// Why it did not run by default: GStreamer or an element is missing.
    pub absent: Option<&'a str>,
    /// The whole presentation played by its adaptive demuxer.
    pub presentation: Option<&'a crate::gst_reader::Reading>,
    /// FFmpeg read too: compare the two.
    pub both: bool,
}

/// How many failing items a message lists before "and N more".
const LIST_LIMIT: usize = 4;

struct Checks(Vec<Check>);

impl Checks {
    fn add(
        &mut self,
        id: &str,
        rendition: Option<&str>,
        status: Status,
        message: impl Into<String>,
    ) -> &mut Check {
        self.0.push(Check::new(id, rendition, status, message));
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    fn pass_or_fail(
        &mut self,
        id: &str,
        rendition: Option<&str>,
        ok: bool,
        message: impl Into<String>,
        expected: impl Into<String>,
        measured: impl Into<String>,
    ) {
        let check = self.add(
            id,
            rendition,
            if ok { Status::Pass } else { Status::Fail },
            message,
        );
        check.expected = Some(expected.into());
        check.measured = Some(measured.into());
    }
}

fn listed(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(LIST_LIMIT).map(String::as_str).collect();
    if items.len() > LIST_LIMIT {
        format!("{} and {} more", shown.join("; "), items.len() - LIST_LIMIT)
    } else {
        shown.join("; ")
    }
}

fn kbps(bps: u64) -> String {
    format!("{:.0} kbit/s", bps as f64 / 1000.0)
}

/// Ladder targets (bit/s) by rendition name: the planned rungs for the
/// reference's displayed size, and the audio bitrate for audio tracks of
/// their own (a track muxed into a variant shares its bytes). Empty without
/// an expected ladder.
pub fn targets(
    reference: &ReferenceMedia,
    ladder: Option<&ExpectedLadder>,
    renditions: &[Analysed],
) -> HashMap<String, u64> {
    let mut targets = HashMap::new();
    let Some(ladder) = ladder else {
        return targets;
    };
    if let Some(video) = &reference.video {
        for rung in ladder.plan(video.display_width, video.display_height) {
            targets.insert(rung.name, rung.bitrate);
        }
    }
    for r in renditions
        .iter()
        .filter(|r| r.spec.kind == MediaKind::Audio && r.muxed_in.is_none())
    {
        targets.insert(r.spec.name.clone(), ladder.audio_bitrate);
    }
    targets
}

pub fn evaluate(inputs: &Inputs) -> Vec<Check> {
    let mut checks = Checks(Vec::new());
    let targets = targets(inputs.reference, inputs.ladder, inputs.renditions);
    structure::ladder_check(&mut checks, inputs);
    for r in inputs.renditions {
        structure::structure(&mut checks, inputs, r);
        structure::declared_bandwidth(&mut checks, inputs, r);
    }
    timing::timing(&mut checks, inputs);
    if inputs.skip_quality {
        checks.add(
            "quality.psnr_top",
            None,
            Status::Skip,
            "quality not measured (--skip-quality)",
        );
    } else {
        quality::quality(&mut checks, inputs);
    }
    bitrate::bitrate(&mut checks, inputs, &targets);
    audio::audio(&mut checks, inputs);
    readers::second_reader(&mut checks, inputs);
    checks.0
}

fn videos<'a>(inputs: &'a Inputs) -> Vec<&'a Analysed> {
    let mut videos: Vec<&Analysed> = inputs
        .renditions
        .iter()
        .filter(|r| r.spec.kind == MediaKind::Video)
        .collect();
    // Highest first, by pixels measured (declared when unreadable).
    videos.sort_by_key(|r| {
        let w = r.measured.width.or(r.spec.declared.width).unwrap_or(0);
        let h = r.measured.height.or(r.spec.declared.height).unwrap_or(0);
        std::cmp::Reverse(u64::from(w) * u64::from(h))
    });
    videos
}

fn audios<'a>(inputs: &'a Inputs) -> Vec<&'a Analysed> {
    inputs
        .renditions
        .iter()
        .filter(|r| r.spec.kind == MediaKind::Audio)
        .collect()
}

fn frame_duration(r: &Analysed) -> f64 {
    match r.spec.kind {
        MediaKind::Video => 1.0 / r.measured.frame_rate.filter(|f| *f > 0.0).unwrap_or(30.0),
        // One AAC frame at 48 kHz.
        MediaKind::Audio => 1024.0 / 48_000.0,
    }
}
