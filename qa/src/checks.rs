//! The checks: structure, timing, quality and bitrate, each with a stable id
//! (listed in docs/qa.md) and, on failure, what was expected and measured.

use std::collections::HashMap;

use cascade_platform::config::RateControl;

use crate::ladder::ExpectedLadder;

use crate::media::{Container, ReferenceMedia};
use crate::presentation::Presentation;
use crate::report::{Check, Format, MediaKind, Status, VmafAvailability};
use crate::thresholds::Thresholds;
use crate::Analysed;

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
    ladder_check(&mut checks, inputs);
    for r in inputs.renditions {
        structure(&mut checks, inputs, r);
        declared_bandwidth(&mut checks, inputs, r);
    }
    timing(&mut checks, inputs);
    if inputs.skip_quality {
        checks.add(
            "quality.psnr_top",
            None,
            Status::Skip,
            "quality not measured (--skip-quality)",
        );
    } else {
        quality(&mut checks, inputs);
    }
    bitrate(&mut checks, inputs, &targets);
    audio(&mut checks, inputs);
    second_reader(&mut checks, inputs);
    checks.0
}

/// GStreamer's decoding of every rendition and of the whole presentation,
/// and, with FFmpeg's reading, whether the two readers agree on frames,
/// first frame time and duration. A disagreement is a packaging question
/// (edit lists, composition offsets, priming) one reader tolerates.
fn second_reader(checks: &mut Checks, inputs: &Inputs) {
    let gst = &inputs.gstreamer;
    if !gst.used {
        checks.add(
            "gstreamer.decodes",
            None,
            Status::Skip,
            gst.absent.map_or_else(
                || "GStreamer not used (--reader ffmpeg)".to_owned(),
                |absent| format!("GStreamer not used: {absent}"),
            ),
        );
        return;
    }
    for r in inputs.renditions {
        let name = Some(r.spec.name.as_str());
        let Some(reading) = &r.gstreamer else {
            continue;
        };
        let track = reading.track(r.spec.kind);
        match (track, &reading.error) {
            (Some(track), None) if track.buffers > 0 => {
                let check = checks.add(
                    "gstreamer.decodes",
                    name,
                    Status::Pass,
                    "GStreamer (decodebin3) decodes the rendition to its end",
                );
                check.measured = Some(format!(
                    "{} buffers, {:.3} s",
                    track.buffers,
                    track.duration_s()
                ));
            }
            (_, error) => {
                checks.add(
                    "gstreamer.decodes",
                    name,
                    Status::Fail,
                    format!(
                        "GStreamer (decodebin3) cannot decode the rendition: {}",
                        error.as_deref().unwrap_or("no decoded buffers")
                    ),
                );
            }
        }
        let (Some(track), Ok(media), true) = (track, &r.media, gst.both) else {
            continue;
        };
        match r.spec.kind {
            MediaKind::Video => {
                let frames = media.packets.len() as u64;
                checks.pass_or_fail(
                    "readers.frames",
                    name,
                    track.buffers == frames,
                    "video frames GStreamer decodes against the samples FFmpeg demuxes",
                    format!("{frames} (FFmpeg)"),
                    format!("{} (GStreamer)", track.buffers),
                );
                if r.container == Container::MpegTs {
                    checks.add(
                        "readers.start",
                        name,
                        Status::Skip,
                        "MPEG-TS: the readers map program clock times to stream time differently",
                    );
                } else if let (Some(gst_start), Some(ffmpeg_start)) = (track.start_s, media.start())
                {
                    let tolerance = inputs.thresholds.alignment_tolerance_ms / 1000.0;
                    checks.pass_or_fail(
                        "readers.start",
                        name,
                        (gst_start - ffmpeg_start).abs() <= tolerance,
                        "first video frame's presentation time, GStreamer against FFmpeg (edit lists and composition offsets read alike)",
                        format!("{ffmpeg_start:.3} s (FFmpeg)"),
                        format!("{gst_start:.3} s (GStreamer)"),
                    );
                }
            }
            MediaKind::Audio => {
                // FFmpeg counts priming samples an edit list removes; GStreamer
                // presents without them: one AAC frame apart at most.
                let tolerance = frame_duration(r) + 0.001;
                let (gst_duration, ffmpeg_duration) = (track.duration_s(), media.duration());
                checks.pass_or_fail(
                    "readers.duration",
                    name,
                    (gst_duration - ffmpeg_duration).abs() <= tolerance,
                    "audio duration GStreamer decodes against FFmpeg's, within an AAC frame",
                    format!("{ffmpeg_duration:.3} s (FFmpeg)"),
                    format!("{gst_duration:.3} s (GStreamer)"),
                );
            }
        }
    }
    let Some(played) = gst.presentation else {
        return;
    };
    let video = played.video.as_ref();
    let mut problems = Vec::new();
    if let Some(error) = &played.error {
        problems.push(error.clone());
    }
    if let Some(reference) = &inputs.reference.video {
        match video {
            Some(video) if (video.duration_s() - reference.duration).abs() <= 0.1 => {}
            Some(video) => problems.push(format!(
                "played {:.3} s of video, the reference has {:.3} s",
                video.duration_s(),
                reference.duration
            )),
            None => problems.push("no video played".to_owned()),
        }
    }
    if inputs.reference.audio.is_some() && played.audio.is_none() {
        problems.push("no audio played".to_owned());
    }
    let demuxer = match inputs.presentation.format {
        Format::Hls => "hlsdemux2",
        Format::Dash => "dashdemux2",
    };
    let check = checks.add(
        "gstreamer.presentation",
        None,
        if problems.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        },
        if problems.is_empty() {
            format!("GStreamer's {demuxer} plays the presentation from its URL to the end")
        } else {
            format!("GStreamer's {demuxer}: {}", listed(&problems))
        },
    );
    check.measured = Some(format!(
        "video {}, audio {}",
        video.map_or("none".to_owned(), |v| format!(
            "{} frames, {:.3} s",
            v.buffers,
            v.duration_s()
        )),
        played
            .audio
            .as_ref()
            .map_or("none".to_owned(), |a| format!("{:.3} s", a.duration_s()))
    ));
}

/// Audio judged by what a listener hears: its integrated loudness against
/// the reference's (a gain or downmix mistake, a silent or clipped track),
/// and its channels and sample rate (nothing lost beyond a downmix to
/// stereo and a rate of 44.1 kHz).
fn audio(checks: &mut Checks, inputs: &Inputs) {
    let tolerance = inputs.thresholds.max_audio_loudness_difference_lu;
    for (name, measured) in &inputs.loudness.renditions {
        let name = Some(name.as_str());
        let reference = match &inputs.loudness.reference {
            None => {
                for id in ["audio.loudness", "audio.format"] {
                    checks.add(id, name, Status::Skip, "the reference has no audio");
                }
                continue;
            }
            Some(Err(error)) => {
                for id in ["audio.loudness", "audio.format"] {
                    checks.add(
                        id,
                        name,
                        Status::Skip,
                        format!("the reference's audio: {error}"),
                    );
                }
                continue;
            }
            Some(Ok(reference)) => reference,
        };
        let expected_loudness = format!("{:.1} LUFS +- {tolerance:.1} LU", reference.lufs);
        // At least what the reference has, up to stereo and 44.1 kHz.
        let min_channels = reference.channels.min(2);
        let min_rate = reference.sample_rate.min(44_100);
        let expected_format = format!(">= {min_channels} channels, >= {min_rate} Hz");
        match measured {
            Err(error) => {
                let message = format!("cannot measure the audio: {error}");
                checks.pass_or_fail(
                    "audio.loudness",
                    name,
                    false,
                    &message,
                    expected_loudness,
                    "-",
                );
                checks.pass_or_fail("audio.format", name, false, message, expected_format, "-");
            }
            Ok(audio) => {
                let difference = audio.lufs - reference.lufs;
                checks.pass_or_fail(
                    "audio.loudness",
                    name,
                    difference.abs() <= tolerance,
                    "integrated loudness (EBU R 128) against the reference's",
                    expected_loudness,
                    format!("{:.1} LUFS ({difference:+.1} LU)", audio.lufs),
                );
                checks.pass_or_fail(
                    "audio.format",
                    name,
                    audio.channels >= min_channels && audio.sample_rate >= min_rate,
                    format!(
                        "channels and sample rate against the reference's ({} channels, {} Hz)",
                        reference.channels, reference.sample_rate
                    ),
                    expected_format,
                    format!("{} channels, {} Hz", audio.channels, audio.sample_rate),
                );
            }
        }
    }
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

/// The published video rungs are the ladder planned for the reference.
fn ladder_check(checks: &mut Checks, inputs: &Inputs) {
    let Some(ladder) = inputs.ladder else {
        checks.add(
            "structure.ladder",
            None,
            Status::Skip,
            "no expected ladder (--ladder none): rungs are checked on what they declare",
        );
        return;
    };
    let Some(video) = &inputs.reference.video else {
        let published = videos(inputs).len();
        checks.pass_or_fail(
            "structure.ladder",
            None,
            published == 0,
            "an audio-only reference publishes no video rungs",
            "0 video rungs",
            format!("{published} video rungs"),
        );
        return;
    };
    let planned: Vec<String> = ladder
        .plan(video.display_width, video.display_height)
        .into_iter()
        .map(|r| format!("{} {}x{}", r.name, r.width, r.height))
        .collect();
    let published: Vec<String> = videos(inputs)
        .iter()
        .map(|r| {
            format!(
                "{} {}x{}",
                r.spec.name,
                r.measured.width.or(r.spec.declared.width).unwrap_or(0),
                r.measured.height.or(r.spec.declared.height).unwrap_or(0)
            )
        })
        .collect();
    let ok = planned == published;
    checks.pass_or_fail(
        "structure.ladder",
        None,
        ok,
        if ok {
            format!(
                "{} rungs as planned for {}x{}",
                planned.len(),
                video.display_width,
                video.display_height
            )
        } else {
            format!(
                "published rungs differ from the ladder ({}) planned for the {}x{} reference",
                ladder.origin, video.display_width, video.display_height
            )
        },
        planned.join(", "),
        published.join(", "),
    );
}

fn frame_duration(r: &Analysed) -> f64 {
    match r.spec.kind {
        MediaKind::Video => 1.0 / r.measured.frame_rate.filter(|f| *f > 0.0).unwrap_or(30.0),
        // One AAC frame at 48 kHz.
        MediaKind::Audio => 1024.0 / 48_000.0,
    }
}

fn structure(checks: &mut Checks, inputs: &Inputs, r: &Analysed) {
    if r.muxed_in.is_some() {
        // The variant's segments, init and CODECS are checked with the variant.
        return;
    }
    let name = Some(r.spec.name.as_str());
    // Init segment.
    match &r.init {
        None if r.container == Container::MpegTs => {
            checks.add(
                "structure.init_segment",
                name,
                Status::Skip,
                "MPEG-TS segments carry their own program tables: no init segment needed",
            );
        }
        None if inputs.presentation.format == Format::Hls && r.spec.init.is_none() => {
            checks.add(
                "structure.init_segment",
                name,
                Status::Fail,
                "no EXT-X-MAP before the first segment: fragmented MP4 segments need their init segment",
            );
        }
        None => {} // reported while parsing (an EXT-X-MAP or @initialization that did not resolve)
        Some(init) if !init.ok() => {
            checks.add(
                "structure.init_segment",
                name,
                Status::Fail,
                format!("init segment: {}", init.error.clone().unwrap_or_default()),
            );
        }
        Some(init) => match crate::media::init_box_problem(&init.body)
            .or_else(|| r.media.as_ref().err().cloned())
        {
            Some(problem) => {
                checks.add(
                    "structure.init_segment",
                    name,
                    Status::Fail,
                    format!("init segment: {problem}"),
                );
            }
            None => {
                checks.add(
                    "structure.init_segment",
                    name,
                    Status::Pass,
                    format!(
                        "{} bytes, {} track",
                        init.body.len(),
                        r.media.as_ref().map_or("?", |m| m.codec_name.as_str())
                    ),
                );
            }
        },
    }

    // Every named segment exists.
    let missing: Vec<String> = r
        .segments
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| format!("{} ({})", s.uri, s.error.clone().unwrap_or_default()))
        .collect();
    if !r.segments.is_empty() {
        checks.pass_or_fail(
            "structure.segments_exist",
            name,
            missing.is_empty(),
            if missing.is_empty() {
                format!("all {} segments fetched", r.segments.len())
            } else {
                format!(
                    "{} of {} segments missing: {}",
                    missing.len(),
                    r.segments.len(),
                    listed(&missing)
                )
            },
            format!("{} segments", r.segments.len()),
            format!("{} fetched", r.segments.len() - missing.len()),
        );
    }

    // Segment boxes tile and the demuxer read everything.
    let mut problems: Vec<String> = r
        .box_problems
        .iter()
        .map(|(i, p)| {
            format!(
                "{}: {p}",
                r.segments.get(*i).map_or("?", |s| s.uri.as_str())
            )
        })
        .collect();
    if let Ok(media) = &r.media {
        if let Some(error) = &media.read_error {
            problems.push(error.clone());
        }
        for s in r.segments.iter().filter(|s| s.error.is_none()) {
            if s.start_s.is_none() {
                problems.push(format!("{}: no media samples", s.uri));
            }
        }
    }
    if !r.segments.is_empty() {
        let ok = problems.is_empty();
        let check = checks.add(
            "structure.segment_boxes",
            name,
            if ok { Status::Pass } else { Status::Fail },
            if ok {
                match r.container {
                    Container::Cmaf => {
                        "every segment is a whole moof+mdat fragment with samples".to_owned()
                    }
                    Container::MpegTs => {
                        "every segment is whole 188-byte MPEG-TS packets with samples".to_owned()
                    }
                }
            } else {
                listed(&problems)
            },
        );
        check.measured = Some(format!("{} problems", problems.len()));
    }

    // Declared durations against the media, and the target duration.
    let tolerance = frame_duration(r) + 0.001;
    let off: Vec<String> = r
        .segments
        .iter()
        .filter(|s| s.error.is_none() && s.start_s.is_some())
        .filter(|s| (s.declared_duration_s - s.duration_s).abs() > tolerance)
        .map(|s| {
            format!(
                "{} declares {:.3} s, holds {:.3} s",
                s.uri, s.declared_duration_s, s.duration_s
            )
        })
        .collect();
    if r.media.is_ok() && !r.segments.is_empty() {
        checks.pass_or_fail(
            "structure.segment_durations",
            name,
            off.is_empty(),
            if off.is_empty() {
                "declared segment durations match the media within a frame".to_owned()
            } else {
                listed(&off)
            },
            format!("within {:.1} ms", tolerance * 1000.0),
            format!("{} segments off", off.len()),
        );
    }
    match r.spec.declared.target_duration_s {
        Some(target) => {
            let longest_declared = r
                .segments
                .iter()
                .map(|s| s.declared_duration_s)
                .fold(0.0, f64::max);
            let longest_media = r.segments.iter().map(|s| s.duration_s).fold(0.0, f64::max);
            // RFC 8216 4.3.3.1: each EXTINF rounded to the nearest integer <= TARGETDURATION.
            let ok = match inputs.presentation.format {
                Format::Hls => {
                    longest_declared.round() <= target && longest_media.round() <= target
                }
                Format::Dash => {
                    longest_declared <= target + tolerance && longest_media <= target + tolerance
                }
            };
            checks.pass_or_fail(
                "structure.target_duration",
                name,
                ok,
                if ok {
                    "no segment longer than the target duration"
                } else {
                    "a segment exceeds the target duration"
                },
                format!("<= {target} s"),
                format!(
                    "longest {longest_declared:.3} s declared, {longest_media:.3} s in the media"
                ),
            );
        }
        None => {
            checks.add(
                "structure.target_duration",
                name,
                Status::Skip,
                "no target duration declared (MPD@maxSegmentDuration absent)",
            );
        }
    }

    let Ok(media) = &r.media else { return };
    // CODECS.
    let declared_codecs: Vec<String> = r
        .spec
        .declared
        .codecs
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let mut expected_codecs = Vec::new();
    if let Some(own) = &media.codec_string {
        expected_codecs.push(own.to_ascii_lowercase());
    }
    // A variant's CODECS also names the audio muxed into its segments.
    for muxed in audios(inputs)
        .iter()
        .filter(|a| a.muxed_in.as_deref() == Some(r.spec.name.as_str()))
    {
        if let Some(codec) = muxed.measured.codecs.as_ref() {
            expected_codecs.push(codec.to_ascii_lowercase());
        }
    }
    if inputs.presentation.format == Format::Hls && r.spec.kind == MediaKind::Video {
        if let Some(group) = &r.spec.audio_group {
            for audio in audios(inputs)
                .iter()
                .filter(|a| a.spec.audio_group.as_ref() == Some(group))
            {
                if let Some(codec) = audio.measured.codecs.as_ref() {
                    if !expected_codecs.contains(&codec.to_ascii_lowercase()) {
                        expected_codecs.push(codec.to_ascii_lowercase());
                    }
                }
            }
        }
    }
    if inputs.presentation.format == Format::Hls
        && r.spec.kind == MediaKind::Audio
        && declared_codecs.is_empty()
    {
        // EXT-X-MEDIA has no CODECS: the variants that use this group carry it.
        checks.add(
            "structure.codecs",
            name,
            Status::Skip,
            "audio rendition: its codec is checked in the CODECS of the variants using its group",
        );
    } else if media.codec_string.is_none() {
        checks.add(
            "structure.codecs",
            name,
            Status::Skip,
            format!("cannot derive a codec string for {}", media.codec_name),
        );
    } else {
        let mut sorted_declared = declared_codecs.clone();
        sorted_declared.sort();
        let mut sorted_expected = expected_codecs.clone();
        sorted_expected.sort();
        let ok = sorted_declared == sorted_expected;
        checks.pass_or_fail(
            "structure.codecs",
            name,
            ok,
            if ok {
                format!(
                    "CODECS {} matches the init segments",
                    declared_codecs.join(",")
                )
            } else {
                format!(
                    "CODECS says {:?} but the init segments say {:?}",
                    declared_codecs.join(","),
                    expected_codecs.join(",")
                )
            },
            expected_codecs.join(","),
            declared_codecs.join(","),
        );
    }

    if r.spec.kind == MediaKind::Video {
        // RESOLUTION.
        match (
            r.spec.declared.width,
            r.spec.declared.height,
            media.width,
            media.height,
        ) {
            (Some(dw), Some(dh), Some(mw), Some(mh)) => checks.pass_or_fail(
                "structure.resolution",
                name,
                dw == mw && dh == mh,
                "declared resolution against the coded frames",
                format!("{mw}x{mh}"),
                format!("{dw}x{dh}"),
            ),
            _ => {
                checks.add(
                    "structure.resolution",
                    name,
                    Status::Fail,
                    "no declared resolution for a video rendition",
                );
            }
        }
        // FRAME-RATE.
        match (r.spec.declared.frame_rate, r.measured.frame_rate) {
            (Some(declared), Some(measured)) => checks.pass_or_fail(
                "structure.frame_rate",
                name,
                (declared - measured).abs() <= 0.005 * declared.max(1.0),
                "declared frame rate against frames over duration",
                format!("{measured:.3}"),
                format!("{declared:.3}"),
            ),
            (None, _) => {
                checks.add(
                    "structure.frame_rate",
                    name,
                    Status::Skip,
                    "no frame rate declared",
                );
            }
            (Some(_), None) => {
                checks.add(
                    "structure.frame_rate",
                    name,
                    Status::Fail,
                    "no frames to measure the frame rate from",
                );
            }
        }
    }
}

/// BANDWIDTH and AVERAGE-BANDWIDTH against the measured segments: bytes
/// over declared durations, no demuxer needed.
fn declared_bandwidth(checks: &mut Checks, inputs: &Inputs, r: &Analysed) {
    if r.muxed_in.is_some() {
        return;
    }
    let name = Some(r.spec.name.as_str());
    // BANDWIDTH and AVERAGE-BANDWIDTH against the measured segments.
    let (peak, average) = if inputs.presentation.format == Format::Hls
        && r.spec.kind == MediaKind::Video
    {
        // A variant's BANDWIDTH covers its audio group too: add the group's highest.
        let group: Vec<&Analysed> = audios(inputs)
            .into_iter()
            .filter(|a| r.spec.audio_group.is_some() && a.spec.audio_group == r.spec.audio_group)
            .collect();
        let audio_peak = group
            .iter()
            .map(|a| a.measured.peak_bitrate)
            .max()
            .unwrap_or(0);
        let audio_average = group
            .iter()
            .map(|a| a.measured.average_bitrate)
            .max()
            .unwrap_or(0);
        (
            r.measured.peak_bitrate + audio_peak,
            r.measured.average_bitrate + audio_average,
        )
    } else {
        (r.measured.peak_bitrate, r.measured.average_bitrate)
    };
    if let (Format::Dash, Some(bandwidth)) = (inputs.presentation.format, r.spec.declared.bandwidth)
    {
        let buffer = inputs.presentation.min_buffer_time_s.unwrap_or(0.0);
        let sizes: Vec<(u64, f64)> = r
            .segments
            .iter()
            .map(|s| (s.bytes, s.declared_duration_s))
            .collect();
        let required = crate::dash_required_bandwidth(&sizes, buffer);
        let floor = (required as f64 * (1.0 - inputs.thresholds.bandwidth_slack)).floor() as u64;
        checks.pass_or_fail(
            "structure.bandwidth",
            name,
            bandwidth >= floor,
            format!(
                "@bandwidth delivers every segment in time with minBufferTime {buffer} s buffered"
            ),
            format!(">= {}", kbps(required)),
            kbps(bandwidth),
        );
    } else if let Some(bandwidth) = r.spec.declared.bandwidth {
        let floor = (peak as f64 * (1.0 - inputs.thresholds.bandwidth_slack)).floor() as u64;
        checks.pass_or_fail(
            "structure.bandwidth",
            name,
            bandwidth >= floor,
            "declared bandwidth is at least the measured peak segment bit rate",
            format!(">= {}", kbps(peak)),
            kbps(bandwidth),
        );
    }
    match r.spec.declared.average_bandwidth {
        Some(declared) if average > 0 => {
            let deviation = (declared as f64 - average as f64).abs() / average as f64;
            checks.pass_or_fail(
                "structure.average_bandwidth",
                name,
                deviation <= inputs.thresholds.average_bandwidth_tolerance,
                "declared average bandwidth against the measured average",
                format!(
                    "{} +- {:.0}%",
                    kbps(average),
                    inputs.thresholds.average_bandwidth_tolerance * 100.0
                ),
                kbps(declared),
            );
        }
        _ => {}
    }
}

fn timing(checks: &mut Checks, inputs: &Inputs) {
    let videos = videos(inputs);
    let tolerance = inputs.thresholds.alignment_tolerance_ms / 1000.0;

    for r in &videos {
        let name = Some(r.spec.name.as_str());
        if r.media.is_err() || r.segments.is_empty() {
            continue;
        }
        // Every segment starts with a keyframe.
        let not_key: Vec<String> = r
            .segments
            .iter()
            .filter(|s| s.starts_with_keyframe == Some(false))
            .map(|s| s.uri.clone())
            .collect();
        checks.pass_or_fail(
            "timing.keyframe_starts",
            name,
            not_key.is_empty(),
            if not_key.is_empty() {
                "every segment starts with a keyframe".to_owned()
            } else {
                format!(
                    "segments not starting with a keyframe: {}",
                    listed(&not_key)
                )
            },
            format!("{} segments starting with a keyframe", r.segments.len()),
            format!("{} do not", not_key.len()),
        );
    }

    // Segment boundaries identical across video rungs.
    let readable: Vec<&&Analysed> = videos
        .iter()
        .filter(|r| r.media.is_ok() && !r.segments.is_empty())
        .collect();
    if readable.len() >= 2 {
        let first = readable[0];
        let mut problems = Vec::new();
        for other in &readable[1..] {
            if other.segments.len() != first.segments.len() {
                problems.push(format!(
                    "{} has {} segments, {} has {}",
                    other.spec.name,
                    other.segments.len(),
                    first.spec.name,
                    first.segments.len()
                ));
                continue;
            }
            for (a, b) in first.segments.iter().zip(&other.segments) {
                let starts_differ = match (a.start_s, b.start_s) {
                    (Some(x), Some(y)) => (x - y).abs() > tolerance,
                    _ => false,
                };
                let durations_differ =
                    (a.declared_duration_s - b.declared_duration_s).abs() > tolerance;
                if starts_differ || durations_differ {
                    problems.push(format!(
                        "segment {} starts at {} for {} s in {}, at {} for {} s in {}",
                        a.index,
                        b.start_s.map_or("?".to_owned(), |s| format!("{s:.3}")),
                        b.declared_duration_s,
                        other.spec.name,
                        a.start_s.map_or("?".to_owned(), |s| format!("{s:.3}")),
                        a.declared_duration_s,
                        first.spec.name
                    ));
                }
            }
        }
        checks.pass_or_fail(
            "timing.segment_alignment",
            None,
            problems.is_empty(),
            if problems.is_empty() {
                format!("{} rungs share every segment boundary", readable.len())
            } else {
                format!(
                    "segment boundaries differ across rungs: {}",
                    listed(&problems)
                )
            },
            format!(
                "identical within {} ms",
                inputs.thresholds.alignment_tolerance_ms
            ),
            format!("{} differences", problems.len()),
        );
    } else {
        checks.add(
            "timing.segment_alignment",
            None,
            Status::Skip,
            "fewer than two readable video rungs",
        );
    }

    // Duration and frame count against the reference.
    if let Some(reference) = &inputs.reference.video {
        for r in &videos {
            let Ok(media) = &r.media else { continue };
            let name = Some(r.spec.name.as_str());
            let frame = frame_duration(r);
            let duration = media.duration();
            checks.pass_or_fail(
                "timing.duration",
                name,
                (duration - reference.duration).abs() <= frame + 0.001,
                "video duration against the reference, within a frame",
                format!("{:.3} s", reference.duration),
                format!("{duration:.3} s"),
            );
            let rate = r.measured.frame_rate.unwrap_or(reference.frame_rate);
            let expected = if (rate - reference.frame_rate).abs() < 0.01 {
                reference.frames
            } else {
                (reference.duration * rate).round() as u64
            };
            let frames = media.packets.len() as u64;
            checks.pass_or_fail(
                "timing.frame_count",
                name,
                frames.abs_diff(expected) <= inputs.thresholds.frame_count_tolerance,
                "frames against the reference (after frame-rate capping)",
                expected.to_string(),
                frames.to_string(),
            );
        }
    }
    if let Some(reference) = &inputs.reference.audio {
        for r in audios(inputs) {
            let Ok(media) = &r.media else { continue };
            let duration = media.duration();
            let limit = inputs.thresholds.audio_duration_tolerance_ms / 1000.0;
            checks.pass_or_fail(
                "timing.duration",
                Some(&r.spec.name),
                (duration - reference.duration).abs() <= limit,
                "audio duration against the reference",
                format!("{:.3} s +- {:.0} ms", reference.duration, limit * 1000.0),
                format!("{duration:.3} s"),
            );
        }
    }

    // DASH: the presentation lasts as long as its longest rendition, counted
    // from the Period's start: samples before it (AAC priming that an edit
    // list or a negative composition time removes) are not presented.
    if let Some(declared) = inputs.presentation.declared_duration_s {
        let longest = inputs
            .renditions
            .iter()
            .filter_map(|r| {
                r.media.as_ref().ok().map(|m| {
                    let start = m.start().unwrap_or(0.0);
                    (m.duration() + start.min(0.0), frame_duration(r))
                })
            })
            .fold((0.0_f64, 0.0_f64), |(d, f), (dur, frame)| {
                (d.max(dur), f.max(frame))
            });
        if longest.0 > 0.0 {
            checks.pass_or_fail(
                "timing.presentation_duration",
                None,
                (declared - longest.0).abs() <= longest.1 + 0.001,
                "MPD@mediaPresentationDuration against the longest rendition, within a frame",
                format!("{:.3} s", longest.0),
                format!("{declared:.3} s"),
            );
        }
    }

    // Audio/video start offset, relative to the reference's own.
    let audio = audios(inputs).into_iter().find(|a| a.media.is_ok());
    let video = videos.iter().find(|v| v.media.is_ok());
    match (
        &inputs.reference.video,
        &inputs.reference.audio,
        video,
        audio,
    ) {
        (Some(rv), Some(ra), Some(v), Some(a)) => {
            let published = a.measured.start_s - v.measured.start_s;
            let original = ra.start - rv.start;
            let offset_ms = (published - original) * 1000.0;
            checks.pass_or_fail(
                "timing.av_offset",
                None,
                offset_ms.abs() <= inputs.thresholds.max_av_offset_ms,
                "audio start relative to video start, against the reference's",
                format!(
                    "within {} ms of {:.1} ms",
                    inputs.thresholds.max_av_offset_ms,
                    original * 1000.0
                ),
                format!("{:.1} ms ({offset_ms:+.1} ms)", published * 1000.0),
            );
        }
        (Some(_), Some(_), _, _) => {
            checks.add(
                "timing.av_offset",
                None,
                Status::Fail,
                "the reference has audio and video but the outputs do not both play",
            );
        }
        _ => {
            checks.add(
                "timing.av_offset",
                None,
                Status::Skip,
                "not both audio and video",
            );
        }
    }
}

fn quality(checks: &mut Checks, inputs: &Inputs) {
    let videos = videos(inputs);
    if inputs.reference.video.is_none() || videos.is_empty() {
        checks.add(
            "quality.psnr_top",
            None,
            Status::Skip,
            "no video to compare",
        );
        return;
    }
    let t = inputs.thresholds;
    for r in &videos {
        match &r.quality {
            Some(Err(error)) => {
                checks.add(
                    "quality.measured",
                    Some(&r.spec.name),
                    Status::Fail,
                    error.clone(),
                );
            }
            None if r.media.is_err() => {
                checks.add(
                    "quality.measured",
                    Some(&r.spec.name),
                    Status::Fail,
                    "unreadable rendition: no quality measured",
                );
            }
            _ => {}
        }
    }
    let measured: Vec<(&str, &crate::report::Quality)> = videos
        .iter()
        .filter_map(|r| match &r.quality {
            Some(Ok(q)) => Some((r.spec.name.as_str(), q)),
            _ => None,
        })
        .collect();
    let top_name = videos[0].spec.name.as_str();
    match measured.first() {
        Some((top, q)) if *top == top_name => {
            checks.pass_or_fail(
                "quality.psnr_top",
                Some(top),
                q.psnr_y_mean >= t.min_top_psnr_y_db && q.psnr_y_low1 >= t.min_top_psnr_y_low1_db,
                format!("top rung PSNR-Y over {} frames", q.frames_compared),
                format!(
                    ">= {} dB mean, >= {} dB 1%-low",
                    t.min_top_psnr_y_db, t.min_top_psnr_y_low1_db
                ),
                format!(
                    "{:.2} dB mean, {:.2} dB 1%-low",
                    q.psnr_y_mean, q.psnr_y_low1
                ),
            );
            checks.pass_or_fail(
                "quality.ssim_top",
                Some(top),
                q.ssim_y_mean >= t.min_top_ssim_y,
                "top rung SSIM-Y",
                format!(">= {}", t.min_top_ssim_y),
                format!("{:.4} mean, {:.4} 1%-low", q.ssim_y_mean, q.ssim_y_low1),
            );
        }
        _ => {
            checks.add(
                "quality.psnr_top",
                Some(top_name),
                Status::Fail,
                "the top rung's quality could not be measured",
            );
        }
    }
    for (name, q) in &measured {
        if q.idet_frames == 0 {
            continue;
        }
        let fraction = q.combed_frames as f64 / q.idet_frames as f64;
        let baseline = if q.reference_idet_frames > 0 {
            q.reference_combed_frames as f64 / q.reference_idet_frames as f64
        } else {
            0.0
        };
        checks.pass_or_fail(
            "quality.combing",
            Some(name),
            fraction - baseline <= t.max_combed_fraction,
            "frames that look interlaced beyond the (deinterlaced) reference: combing",
            format!(
                "<= {:.0} points over the reference",
                t.max_combed_fraction * 100.0
            ),
            format!(
                "{:.1}% ({} of {} frames; reference {:.1}%, FFmpeg idet)",
                fraction * 100.0,
                q.combed_frames,
                q.idet_frames,
                baseline * 100.0
            ),
        );
    }
    for pair in measured.windows(2) {
        let ((high, qh), (low, ql)) = (pair[0], pair[1]);
        let step = qh.psnr_y_mean - ql.psnr_y_mean;
        checks.pass_or_fail(
            "quality.rung_step",
            Some(low),
            step >= t.min_adjacent_psnr_step_db,
            format!("{high} over {low}: adjacent rungs a visible step apart"),
            format!(">= {} dB", t.min_adjacent_psnr_step_db),
            format!(
                "{step:.2} dB ({:.2} vs {:.2})",
                qh.psnr_y_mean, ql.psnr_y_mean
            ),
        );
    }
    if inputs.vmaf.available {
        for (name, q) in &measured {
            let check = checks.add(
                "quality.vmaf",
                Some(name),
                if q.vmaf_mean.is_some() {
                    Status::Pass
                } else {
                    Status::Fail
                },
                "VMAF (informational: no threshold)",
            );
            check.measured = q.vmaf_mean.map(|v| format!("{v:.2}"));
        }
    } else {
        checks.add(
            "quality.vmaf",
            None,
            Status::Skip,
            format!("VMAF not computed: {}", inputs.vmaf.note),
        );
    }
}

fn bitrate(checks: &mut Checks, inputs: &Inputs, targets: &HashMap<String, u64>) {
    let t = inputs.thresholds;
    for r in inputs.renditions {
        if r.segments.is_empty() || r.measured.total_bytes == 0 {
            continue;
        }
        let name = Some(r.spec.name.as_str());
        let Some(ladder) = inputs.ladder else {
            checks.add(
                "bitrate.average",
                name,
                Status::Skip,
                "no expected ladder (--ladder none): the declared bandwidths are checked against the segments",
            );
            continue;
        };
        if let Some(variant) = &r.muxed_in {
            checks.add(
                "bitrate.average",
                name,
                Status::Skip,
                format!("muxed into {variant}: its bytes count in that variant's bitrate"),
            );
            continue;
        }
        let Some(&target) = targets.get(&r.spec.name) else {
            checks.add(
                "bitrate.average",
                name,
                Status::Skip,
                "no ladder target for this rendition name",
            );
            continue;
        };
        let average = r.measured.average_bitrate;
        let ratio = average as f64 / target as f64;
        // Spending less than the target is no fault where the encoder
        // spends what the content needs: capped CRF video, and audio (an
        // AAC encoder spends far less on a tone or speech than on music;
        // audio is judged by its loudness, duration and offset to the video).
        let audio = r.spec.kind == MediaKind::Audio;
        let undershoot_ok = audio
            || (ladder.rate_control == RateControl::CappedCrf
                && t.allow_undershoot_with_capped_crf);
        let upper = ratio <= 1.0 + t.bitrate_average_tolerance;
        let lower = undershoot_ok || ratio >= 1.0 - t.bitrate_average_tolerance;
        checks.pass_or_fail(
            "bitrate.average",
            name,
            upper && lower,
            if audio {
                "average bitrate under the target's cap (simple audio needs fewer bits)".to_owned()
            } else if undershoot_ok {
                "average bitrate under the target's cap (capped CRF may spend less)".to_owned()
            } else {
                "average bitrate against the target".to_owned()
            },
            if undershoot_ok {
                format!(
                    "<= {} ({} +{:.0}%)",
                    kbps((target as f64 * (1.0 + t.bitrate_average_tolerance)) as u64),
                    kbps(target),
                    t.bitrate_average_tolerance * 100.0
                )
            } else {
                format!(
                    "{} +- {:.0}%",
                    kbps(target),
                    t.bitrate_average_tolerance * 100.0
                )
            },
            format!("{} ({:.2}x)", kbps(average), ratio),
        );
        let peak = r.measured.peak_bitrate;
        let peak_ratio = peak as f64 / target as f64;
        checks.pass_or_fail(
            "bitrate.peak",
            name,
            peak_ratio <= t.max_peak_to_target,
            "peak segment bit rate against the target",
            format!(
                "<= {} ({}x)",
                kbps((target as f64 * t.max_peak_to_target) as u64),
                t.max_peak_to_target
            ),
            format!("{} ({peak_ratio:.2}x)", kbps(peak)),
        );
    }
}
