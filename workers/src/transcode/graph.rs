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
    chain.push(format!("split={}", rungs.len()));
    let labels: String = (0..rungs.len()).map(|i| format!("[s{i}]")).collect();
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
        spec.push_str(&format!(";[s{i}]{fit},setsar=1,format={name}[out{i}]"));
    }
    let mut parser = graph.output("in", 0)?;
    for i in 0..rungs.len() {
        parser = parser.input(&format!("out{i}"), 0)?;
    }
    parser.parse(&spec)?;
    graph.validate()?;
    Ok(graph)
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
