//! The second reader's checks: what GStreamer decodes of every rendition
//! and of the whole presentation, and whether it agrees with FFmpeg.

use super::*;

/// GStreamer's decoding of every rendition and of the whole presentation,
/// and, with FFmpeg's reading, whether the two readers agree on frames,
/// first frame time and duration. A disagreement is a packaging question
/// (edit lists, composition offsets, priming) one reader tolerates.
pub(super) fn second_reader(checks: &mut Checks, inputs: &Inputs) {
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
                let frames = media.frames;
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
