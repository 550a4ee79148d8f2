//! Timing: keyframes, segment alignment across rungs, durations and frame
//! counts against the reference, and the A/V offset.

use super::*;

pub(super) fn timing(checks: &mut Checks, inputs: &Inputs) {
    let videos = videos(inputs);
    keyframe_starts(checks, &videos);
    segment_alignment(checks, inputs, &videos);
    against_the_reference(checks, inputs, &videos);
    presentation_duration(checks, inputs);
    av_offset(checks, inputs, &videos);
}

/// Every video segment starts with a keyframe.
fn keyframe_starts(checks: &mut Checks, videos: &[&Analysed]) {
    for r in videos {
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
}

/// Segment boundaries identical across video rungs.
fn segment_alignment(checks: &mut Checks, inputs: &Inputs, videos: &[&Analysed]) {
    let tolerance = inputs.thresholds.alignment_tolerance_ms / 1000.0;
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
}

/// Duration and frame count of every rendition against the reference.
fn against_the_reference(checks: &mut Checks, inputs: &Inputs, videos: &[&Analysed]) {
    if let Some(reference) = &inputs.reference.video {
        for r in videos {
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
            let frames = media.frames;
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
}

/// DASH: the presentation lasts as long as its longest rendition, counted
/// from the Period's start: samples before it (AAC priming that an edit
/// list or a negative composition time removes) are not presented.
fn presentation_duration(checks: &mut Checks, inputs: &Inputs) {
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
}

/// Audio/video start offset, relative to the reference's own.
fn av_offset(checks: &mut Checks, inputs: &Inputs, videos: &[&Analysed]) {
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
