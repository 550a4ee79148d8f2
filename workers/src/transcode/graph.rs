//! The filter graphs of the transcode: video (deinterlace by the source's
//! field order, rotate, cap the frame rate, split, scale per rung, and
//! letterbox kept rungs) and audio (resample to 48 kHz stereo, on the
//! video's clock); `audio_filter_graph` is also what `cascade qa` measures
//! loudness through.

use ffmpeg_next as ff;

use super::pipeline::{AudioSource, FieldParity, VideoSource, AAC_FRAME, AUDIO_RATE};
use cascade_schemas::ladder::PlannedRung;

/// Output frame rate after the cap, as an exact rational.
pub(super) fn output_frame_rate(source: ff::Rational, max: u32) -> ff::Rational {
    if f64::from(source) > f64::from(max) {
        ff::Rational::new(max as i32, 1)
    } else {
        source
    }
}

pub(super) fn build_video_graph(
    source: &VideoSource,
    rungs: &[PlannedRung],
    out_rate: ff::Rational,
    capped: bool,
    formats: &[ff::format::Pixel],
    letterbox: bool,
) -> Result<ff::filter::Graph, ff::Error> {
    let mut graph = ff::filter::Graph::new();
    let decoder = &source.decoder;
    let sar = decoder.aspect_ratio();
    let sar = if sar.numerator() > 0 {
        sar
    } else {
        ff::Rational::new(1, 1)
    };
    let args = format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
        decoder.width(),
        decoder.height(),
        ff::ffi::AVPixelFormat::from(decoder.format()) as i32,
        source.time_base.numerator(),
        source.time_base.denominator(),
        sar.numerator(),
        sar.denominator()
    );
    graph.add(
        &ff::filter::find("buffer").ok_or(ff::Error::FilterNotFound)?,
        "in",
        &args,
    )?;
    for i in 0..rungs.len() {
        graph.add(
            &ff::filter::find("buffersink").ok_or(ff::Error::FilterNotFound)?,
            &format!("out{i}"),
            "",
        )?;
    }
    let mut chain = Vec::new();
    // bwdif (motion adaptive, built on yadif and w3fdif): one progressive
    // frame per interlaced frame, so the frame rate and the keyframe grid
    // stay as the source declares them.
    match source.interlaced {
        Some(FieldParity::TopFirst) => {
            chain.push("bwdif=mode=send_frame:parity=tff:deint=all".to_owned())
        }
        Some(FieldParity::BottomFirst) => {
            chain.push("bwdif=mode=send_frame:parity=bff:deint=all".to_owned())
        }
        None => {}
    }
    match source.rotation {
        90 => chain.push("transpose=clock".to_owned()),
        180 => chain.push("hflip,vflip".to_owned()),
        270 => chain.push("transpose=cclock".to_owned()),
        _ => {}
    }
    if capped {
        chain.push(format!(
            "fps={}/{}",
            out_rate.numerator(),
            out_rate.denominator()
        ));
    }
    let parents: Vec<Option<usize>> = if letterbox {
        vec![None; rungs.len()]
    } else {
        scale_parents(rungs)
    };
    let roots: Vec<usize> = (0..rungs.len()).filter(|&i| parents[i].is_none()).collect();
    chain.push(format!("split={}", roots.len()));
    let labels: String = roots.iter().map(|i| format!("[s{i}]")).collect();
    let mut spec = format!("[in]{}{labels}", chain.join(","));
    for (i, rung) in rungs.iter().enumerate() {
        let format = ff::ffi::AVPixelFormat::from(formats[i]);
        // SAFETY: av_get_pix_fmt_name returns a static string for valid formats.
        let name = unsafe { std::ffi::CStr::from_ptr(ff::ffi::av_get_pix_fmt_name(format)) }
            .to_string_lossy()
            .into_owned();
        // Kept rungs (a reconnect with another picture size): the new
        // picture fits inside, centred, so nothing is stretched.
        let fit = if letterbox {
            format!(
                "scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2:flags=bicubic,pad={w}:{h}:-1:-1",
                w = rung.width,
                h = rung.height
            )
        } else {
            format!("scale={}:{}:flags=bicubic", rung.width, rung.height)
        };
        let children: Vec<usize> = (0..rungs.len())
            .filter(|&c| parents[c] == Some(i))
            .collect();
        let outputs = if children.is_empty() {
            format!("[out{i}]")
        } else {
            let feeds: String = children.iter().map(|c| format!("[s{c}]")).collect();
            format!(",split={}[out{i}]{feeds}", children.len() + 1)
        };
        spec.push_str(&format!(";[s{i}]{fit},setsar=1,format={name}{outputs}"));
    }
    let mut parser = graph.output("in", 0)?;
    for i in 0..rungs.len() {
        parser = parser.input(&format!("out{i}"), 0)?;
    }
    parser.parse(&spec)?;
    graph.validate()?;
    Ok(graph)
}

/// Which rung's picture each rung is scaled from (`None`: the source).
///
/// Scaling from the full-size source costs swscale in proportion to the
/// source's lines: for a 1080p source and the default ladder the three
/// scalers took about 11 s of CPU per minute of video, a sixth of the whole
/// transcode. A rung about 1.5x as large (or more) on both sides has every
/// detail the smaller rung can show, so the smaller one is scaled from the
/// smallest such rung (1080p -> 720p -> 480p -> 240p): about 7 s instead
/// of 11, and the difference between the two pictures is far below what
/// the encoder changes (above 50 dB PSNR against a lanczos reference either
/// way).
pub(super) fn scale_parents(rungs: &[PlannedRung]) -> Vec<Option<usize>> {
    // 1.49: 854x480 is 1.5x smaller than 1280x720 but for the rounding to
    // even widths.
    const MIN_RATIO: f64 = 1.49;
    rungs
        .iter()
        .map(|rung| {
            rungs
                .iter()
                .enumerate()
                .filter(|(_, larger)| {
                    f64::from(larger.width) >= MIN_RATIO * f64::from(rung.width)
                        && f64::from(larger.height) >= MIN_RATIO * f64::from(rung.height)
                })
                .min_by_key(|(_, larger)| u64::from(larger.width) * u64::from(larger.height))
                .map(|(index, _)| index)
        })
        .collect()
}

/// `start`: seconds the output starts at (a live session's timeline offset).
/// What an audio filter graph's input (`abuffer`) receives.
#[derive(Debug, Clone, Copy)]
pub struct AudioInput {
    /// Time base of the frames' timestamps.
    pub time_base: ff::Rational,
    /// Samples per second.
    pub rate: u32,
    /// Sample format.
    pub format: ff::format::Sample,
    /// Channel layout (0 bits: unknown, then the default for `channels`).
    pub layout: ff::ChannelLayout,
    /// Channels.
    pub channels: u16,
}

/// An audio filter graph `in` (`abuffer`) -> `spec` -> `out`
/// (`abuffersink`), validated.
pub fn audio_filter_graph(input: AudioInput, spec: &str) -> Result<ff::filter::Graph, ff::Error> {
    let mut graph = ff::filter::Graph::new();
    let layout = if input.layout.bits() == 0 {
        ff::ChannelLayout::default(i32::from(input.channels))
    } else {
        input.layout
    };
    let args = format!(
        "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
        input.time_base.numerator(),
        input.time_base.denominator(),
        input.rate,
        input.format.name(),
        layout.bits()
    );
    graph.add(
        &ff::filter::find("abuffer").ok_or(ff::Error::FilterNotFound)?,
        "in",
        &args,
    )?;
    graph.add(
        &ff::filter::find("abuffersink").ok_or(ff::Error::FilterNotFound)?,
        "out",
        "",
    )?;
    graph.output("in", 0)?.input("out", 0)?.parse(spec)?;
    graph.validate()?;
    Ok(graph)
}

pub(super) fn build_audio_graph(
    source: &AudioSource,
    start: f64,
) -> Result<ff::filter::Graph, ff::Error> {
    let decoder = &source.decoder;
    // Resample to 48 kHz, downmix to stereo, and keep audio on the same clock
    // as the video: async pads or trims so the output starts at `start`.
    let first_pts = (start * f64::from(AUDIO_RATE)).round() as i64;
    let spec = format!(
        "aresample={AUDIO_RATE}:async=1:first_pts={first_pts},aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
    );
    let mut graph = audio_filter_graph(
        AudioInput {
            time_base: source.time_base,
            rate: decoder.rate(),
            format: decoder.format(),
            layout: decoder.channel_layout(),
            channels: decoder.channels(),
        },
        &spec,
    )?;
    if let Some(mut sink) = graph.get("out") {
        sink.sink().set_frame_size(AAC_FRAME);
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(width: u32, height: u32) -> PlannedRung {
        PlannedRung {
            name: format!("{height}p"),
            width,
            height,
            bitrate: 1_000_000,
        }
    }

    #[test]
    fn each_rung_is_scaled_from_the_smallest_rung_half_again_its_size() {
        let ladder = [
            rung(1920, 1080),
            rung(1280, 720),
            rung(854, 480),
            rung(640, 360),
        ];
        assert_eq!(
            scale_parents(&ladder),
            vec![None, Some(0), Some(1), Some(1)]
        );
        // Portrait, and a rung only a little smaller than the one above it.
        let portrait = [rung(1080, 1920), rung(900, 1600), rung(360, 640)];
        assert_eq!(scale_parents(&portrait), vec![None, None, Some(1)]);
        assert_eq!(scale_parents(&[rung(640, 360)]), vec![None]);
    }
}
