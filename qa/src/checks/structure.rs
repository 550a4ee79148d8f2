//! Structure: the ladder, init segments, segments and their boxes,
//! declared durations, codecs, resolution, frame rate and bandwidth.

use super::*;

/// The published video rungs are the ladder planned for the reference.
pub(super) fn ladder_check(checks: &mut Checks, inputs: &Inputs) {
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

/// The structure checks of one rendition.
pub(super) fn structure(checks: &mut Checks, inputs: &Inputs, r: &Analysed) {
    if r.muxed_in.is_some() {
        // The variant's segments, init and CODECS are checked with the variant.
        return;
    }
    init_segment(checks, inputs, r);
    segments_exist(checks, r);
    segment_boxes(checks, r);
    segment_durations(checks, inputs, r);
    let Ok(media) = &r.media else { return };
    codecs(checks, inputs, r, media);
    picture(checks, inputs, r, media);
}

/// The init segment: fetched, its boxes, a track FFmpeg reads (none for MPEG-TS).
fn init_segment(checks: &mut Checks, inputs: &Inputs, r: &Analysed) {
    let name = Some(r.spec.name.as_str());
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
}

/// Every segment the manifest names is fetched.
fn segments_exist(checks: &mut Checks, r: &Analysed) {
    let name = Some(r.spec.name.as_str());
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
}

/// Segment boxes (or MPEG-TS packets) tile the bytes and the demuxer read everything.
fn segment_boxes(checks: &mut Checks, r: &Analysed) {
    let name = Some(r.spec.name.as_str());
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
}

/// Declared durations against the media, and the target duration.
fn segment_durations(checks: &mut Checks, inputs: &Inputs, r: &Analysed) {
    let name = Some(r.spec.name.as_str());
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
}

/// CODECS against the codec strings the media gives.
fn codecs(checks: &mut Checks, inputs: &Inputs, r: &Analysed, media: &RenditionMedia) {
    let name = Some(r.spec.name.as_str());
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
}

/// RESOLUTION and FRAME-RATE of a video rendition against its frames.
fn picture(checks: &mut Checks, inputs: &Inputs, r: &Analysed, media: &RenditionMedia) {
    let name = Some(r.spec.name.as_str());
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
        // FRAME-RATE. RFC 8216bis (4.4.6.2) makes it the variant's maximum:
        // a stream that dropped frames (a live publisher under load) plays
        // fewer. A planned ladder is encoded at a constant rate, so there
        // the figure must be exact.
        match (r.spec.declared.frame_rate, r.measured.frame_rate) {
            (Some(declared), Some(measured)) => {
                let tolerance = 0.005 * declared.max(1.0);
                let exact = inputs.ladder.is_some();
                checks.pass_or_fail(
                    "structure.frame_rate",
                    name,
                    measured <= declared + tolerance
                        && (!exact || measured >= declared - tolerance),
                    if exact {
                        "declared frame rate against frames over duration"
                    } else {
                        "declared frame rate (a maximum) against frames over duration"
                    },
                    format!("{measured:.3}"),
                    format!("{declared:.3}"),
                )
            }
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
pub(super) fn declared_bandwidth(checks: &mut Checks, inputs: &Inputs, r: &Analysed) {
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
