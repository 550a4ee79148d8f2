//! H.264 encoder selection and configuration.
//!
//! `auto` probes each hardware encoder once at worker start by opening a
//! tiny real encode (64x64, one frame); the first that works is used, else
//! libx264. NVENC and QSV take system-memory frames; VAAPI needs frames in
//! GPU surfaces, which the pipeline uploads through a VAAPI device.

use std::fmt;

use cascade_platform::config::{EncoderChoice, RateControl, TranscodeConfig};
use ffmpeg_next as ff;

/// x264's initial VBV buffer fullness (`vbv-init`), as a share of the
/// buffer (the benchmarks give the ffmpeg CLI the same).
pub const VBV_INITIAL_FULLNESS: f64 = 0.3;

/// The rate control of a rung: the average asked for (none for capped
/// CRF), the VBV max rate and the VBV buffer, in bits (per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VbvModel {
    /// Average bit rate asked for (`None`: quality-driven, capped).
    pub target: Option<usize>,
    /// VBV max rate: the rate the decoder's buffer fills at.
    pub max: usize,
    /// VBV buffer size.
    pub buffer: usize,
}

impl VbvModel {
    /// The settings a rung of `bitrate` gets under `config`.
    pub fn of(config: &TranscodeConfig, bitrate: usize) -> Self {
        let (target, max, buffer) = match config.rate_control {
            RateControl::CappedCrf => (None, bitrate, bitrate * 2),
            RateControl::Vbr => (Some(bitrate), bitrate * 3 / 2, bitrate * 2),
            RateControl::Cbr => (Some(bitrate), bitrate, bitrate),
        };
        // Live: one second of buffer, so no segment strays far above the
        // bandwidth the master playlist declares before it is measured.
        let buffer = if config.live { max } else { buffer };
        Self {
            target,
            max,
            buffer,
        }
    }

    /// The highest bit rate any stretch of at least `shortest_seconds` can
    /// have: the buffer fills at `max`, so such a stretch holds at most
    /// `max * d + buffer` bits. This is what a master playlist declares for
    /// a rung before its segments are measured (progressive publish), so
    /// its `BANDWIDTH` never understates the finished rung's peak.
    pub fn peak_bound(&self, shortest_seconds: f64) -> u64 {
        let shortest = shortest_seconds.max(0.5);
        (self.max as f64 + self.buffer as f64 / shortest).ceil() as u64
    }
}

/// An H.264 encoder Cascade knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoEncoder {
    /// Software x264.
    Libx264,
    /// NVIDIA NVENC.
    Nvenc,
    /// VA-API.
    Vaapi,
    /// Intel Quick Sync.
    Qsv,
}

impl VideoEncoder {
    /// The encoder FFmpeg calls `name`, if Cascade drives it.
    pub fn from_ffmpeg_name(name: &str) -> Option<Self> {
        [Self::Libx264, Self::Nvenc, Self::Vaapi, Self::Qsv]
            .into_iter()
            .find(|encoder| encoder.ffmpeg_name() == name)
    }

    /// FFmpeg's name for the encoder.
    pub fn ffmpeg_name(&self) -> &'static str {
        match self {
            Self::Libx264 => "libx264",
            Self::Nvenc => "h264_nvenc",
            Self::Vaapi => "h264_vaapi",
            Self::Qsv => "h264_qsv",
        }
    }

    /// Pixel format the encoder is fed (VAAPI: the software format uploaded).
    pub fn input_format(&self) -> ff::format::Pixel {
        match self {
            Self::Libx264 | Self::Nvenc => ff::format::Pixel::YUV420P,
            Self::Vaapi | Self::Qsv => ff::format::Pixel::NV12,
        }
    }

    /// Hardware encoders in probing order.
    pub const HARDWARE: [VideoEncoder; 3] = [Self::Nvenc, Self::Vaapi, Self::Qsv];
}

impl fmt::Display for VideoEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ffmpeg_name())
    }
}

/// Resolves the configured choice to an encoder that opens on this machine.
/// For `auto`, each hardware encoder is tried with a real test encode; the
/// reasons they failed are returned for the log.
pub fn resolve(choice: EncoderChoice) -> (VideoEncoder, Vec<String>) {
    crate::transcode::init_ffmpeg();
    let wanted = match choice {
        EncoderChoice::Auto => None,
        EncoderChoice::Libx264 => Some(VideoEncoder::Libx264),
        EncoderChoice::H264Nvenc => Some(VideoEncoder::Nvenc),
        EncoderChoice::H264Vaapi => Some(VideoEncoder::Vaapi),
        EncoderChoice::H264Qsv => Some(VideoEncoder::Qsv),
    };
    let candidates: Vec<VideoEncoder> = match wanted {
        Some(encoder) => vec![encoder],
        None => VideoEncoder::HARDWARE.to_vec(),
    };
    let mut failures = Vec::new();
    for encoder in candidates {
        match probe(encoder) {
            Ok(()) => return (encoder, failures),
            Err(reason) => failures.push(format!("{encoder}: {reason}")),
        }
    }
    (VideoEncoder::Libx264, failures)
}

/// Opens `encoder` for a 64x64 stream and encodes one frame.
pub fn probe(encoder: VideoEncoder) -> Result<(), String> {
    let settings = EncodeSettings {
        width: 64,
        height: 64,
        time_base: ff::Rational::new(1, 30),
        frame_rate: ff::Rational::new(30, 1),
        bitrate: 200_000,
        gop_frames: 30,
        profile_high: false,
        threads: None,
    };
    let config = TranscodeConfig::default();
    let mut hw = match encoder {
        VideoEncoder::Vaapi => {
            Some(crate::transcode::hw::VaapiUpload::new(64, 64).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let mut opened =
        open_video(encoder, &settings, &config, hw.as_ref()).map_err(|e| e.to_string())?;
    let mut frame = ff::frame::Video::new(encoder.input_format(), 64, 64);
    frame.set_pts(Some(0));
    let frame = match hw.as_mut() {
        Some(upload) => upload.upload(&frame).map_err(|e| e.to_string())?,
        None => frame,
    };
    opened
        .send_frame(&frame)
        .map_err(|e| format!("encoding a test frame: {e}"))?;
    opened.send_eof().map_err(|e| e.to_string())?;
    let mut packet = ff::Packet::empty();
    let mut got = false;
    while opened.receive_packet(&mut packet).is_ok() {
        got = true;
    }
    if got {
        Ok(())
    } else {
        Err("the test encode produced no packet".to_owned())
    }
}

/// Per-rung encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Time base of the frames fed in.
    pub time_base: ff::Rational,
    /// Nominal frame rate.
    pub frame_rate: ff::Rational,
    /// Rung bitrate, bit/s.
    pub bitrate: u64,
    /// Frames per GOP (keyframes are also forced by timestamp).
    pub gop_frames: u32,
    /// High profile (else Main).
    pub profile_high: bool,
    /// Encoder threads; `None`: the encoder's own choice.
    pub threads: Option<u32>,
}

/// What of x264's `preset` shows in the parameter sets: its reference
/// frames (the SPS's `max_num_ref_frames`, the PPS's default active
/// references) and the chroma QP offset it applies (the PPS's
/// `chroma_qp_index_offset`: psy-RD, on from subme 6, lowers it by 2).
fn x264_preset_headers(preset: &str) -> Option<(u32, i32)> {
    Some(match preset {
        "ultrafast" | "superfast" | "veryfast" => (1, 0),
        "faster" => (2, 0),
        "fast" => (2, -2),
        "medium" => (3, -2),
        "slow" => (5, -2),
        "slower" => (8, -2),
        "veryslow" | "placebo" => (16, -2),
        _ => return None,
    })
}

/// x264 options that make an encoder on `preset` write the parameter sets
/// an encoder on `headers_of` writes (with `stitchable`, which keeps
/// content out of them), so it can take over a live rung mid-stream.
fn x264_same_headers(preset: &str, headers_of: &str) -> String {
    match (x264_preset_headers(preset), x264_preset_headers(headers_of)) {
        (Some((_, own_offset)), Some((references, offset))) => {
            format!(":ref={references}:chroma-qp-offset={}", offset - own_offset)
        }
        _ => String::new(),
    }
}

/// Opens a configured H.264 encoder with global headers (SPS/PPS in
/// extradata, as CMAF's `avcC` needs).
pub fn open_video(
    encoder: VideoEncoder,
    settings: &EncodeSettings,
    config: &TranscodeConfig,
    vaapi: Option<&crate::transcode::hw::VaapiUpload>,
) -> Result<ff::encoder::video::Encoder, ff::Error> {
    let codec =
        ff::encoder::find_by_name(encoder.ffmpeg_name()).ok_or(ff::Error::EncoderNotFound)?;
    let mut video = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()?;
    video.set_width(settings.width);
    video.set_height(settings.height);
    video.set_time_base(settings.time_base);
    video.set_frame_rate(Some(settings.frame_rate));
    video.set_gop(settings.gop_frames);
    video.set_max_b_frames(config.b_frames as usize);
    video.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let bitrate = settings.bitrate as usize;
    // VBV: the decoder's buffer fills at `max` and holds `buffer` bits. x264
    // starts it 90 % full by default, which lets the first seconds spend
    // that much beyond the cap: a 3 s clip averaged 1.26x its rung's cap.
    // Starting it 30 % full keeps every rung's average over the asset under
    // its cap, short clips included (0.85x for 3 s, 0.96x for 10 s of
    // content that wants far more bits; half full still gave 1.01x), at a
    // cost in quality within 0.1 dB PSNR on such a clip.
    let VbvModel {
        target,
        max,
        buffer,
    } = VbvModel::of(config, bitrate);
    if let Some(target) = target {
        video.set_bit_rate(target);
    }
    video.set_max_bit_rate(max);
    let mut options = ff::Dictionary::new();
    // AVCodecContext defaults to one thread; let the encoder pick (as the CLI does).
    match settings.threads {
        Some(threads) => options.set("threads", &threads.to_string()),
        None => options.set("threads", "auto"),
    }
    options.set("bufsize", &buffer.to_string());
    options.set(
        "profile",
        if settings.profile_high {
            "high"
        } else {
            "main"
        },
    );
    match encoder {
        VideoEncoder::Libx264 => {
            video.set_format(ff::format::Pixel::YUV420P);
            options.set("preset", &config.preset);
            if config.rate_control == RateControl::CappedCrf {
                options.set("crf", &config.crf.to_string());
            }
            if config.rate_control == RateControl::Cbr {
                options.set("nal-hrd", "cbr");
            }
            // Keyframes only where the pipeline forces them (same timestamps in
            // every rung), as IDR frames, closing every GOP; no B-pyramid, so
            // the reorder delay is one frame.
            options.set(
                "x264-params",
                &format!(
                    "keyint={}:min-keyint={}:scenecut=0:open-gop=0:b-pyramid=none:vbv-init={}{}",
                    settings.gop_frames * 2,
                    settings.gop_frames,
                    VBV_INITIAL_FULLNESS,
                    config
                        .lookahead_frames
                        .map(|frames| format!(":rc-lookahead={frames}"))
                        .unwrap_or_default()
                        + &config
                            .headers_of_preset
                            .as_deref()
                            .map(|original| x264_same_headers(&config.preset, original))
                            .unwrap_or_default()
                        // Live: threads split each frame (slices) instead of
                        // working on several frames at once, each of which
                        // would be a frame of delay before a segment closes.
                        + if config.live { ":sliced-threads=1" } else { "" }
                        // Live: headers that do not depend on the content or
                        // the preset (x264 otherwise sets the PPS's initial
                        // QP from the rate control), so an encoder on a
                        // faster preset can take over a rung mid-stream.
                        + if config.live { ":stitchable=1" } else { "" }
                ),
            );
            options.set("forced-idr", "1");
        }
        VideoEncoder::Nvenc => {
            video.set_format(ff::format::Pixel::YUV420P);
            options.set("preset", "p4");
            options.set(
                "rc",
                if config.rate_control == RateControl::Cbr {
                    "cbr"
                } else {
                    "vbr"
                },
            );
            if config.rate_control == RateControl::CappedCrf {
                // NVENC's constant-quality mode, capped by maxrate.
                options.set("cq", &config.crf.to_string());
            }
            options.set("forced-idr", "1");
            options.set("no-scenecut", "1");
            options.set("strict_gop", "1");
        }
        VideoEncoder::Qsv => {
            video.set_format(ff::format::Pixel::NV12);
            options.set("preset", "medium");
            if config.rate_control == RateControl::CappedCrf {
                options.set("global_quality", &config.crf.to_string());
            }
            options.set("forced_idr", "1");
            options.set("idr_interval", "0");
        }
        VideoEncoder::Vaapi => {
            video.set_format(ff::format::Pixel::VAAPI);
            if let Some(upload) = vaapi {
                upload.attach(&mut video);
            }
            options.set(
                "rc_mode",
                if config.rate_control == RateControl::Cbr {
                    "CBR"
                } else {
                    "QVBR"
                },
            );
            if config.rate_control == RateControl::CappedCrf {
                options.set("qp", &config.crf.to_string());
            }
            options.set("idr_interval", "0");
        }
    }
    video.open_with(options)
}

/// The AAC-LC encoder for the shared audio rendition (48 kHz stereo).
pub fn open_audio(bitrate: u64) -> Result<ff::encoder::audio::Encoder, ff::Error> {
    let codec = ff::encoder::find(ff::codec::Id::AAC).ok_or(ff::Error::EncoderNotFound)?;
    let mut audio = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()?;
    audio.set_rate(48_000);
    audio.set_channel_layout(ff::ChannelLayout::STEREO);
    audio.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
    audio.set_bit_rate(bitrate as usize);
    audio.set_time_base(ff::Rational::new(1, 48_000));
    audio.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let mut options = ff::Dictionary::new();
    options.set("threads", "auto");
    audio.open_with(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parameter sets of a live rung's encoder on `preset`, writing
    /// those of `headers_of`.
    fn live_headers(preset: &str, headers_of: &str, profile_high: bool) -> Vec<u8> {
        let config = TranscodeConfig {
            preset: preset.to_owned(),
            headers_of_preset: Some(headers_of.to_owned()),
            ..cascade_platform::config::LiveConfig::default().transcode(&TranscodeConfig::default())
        };
        let settings = EncodeSettings {
            width: 320,
            height: 180,
            time_base: ff::Rational::new(1, 90_000),
            frame_rate: ff::Rational::new(30, 1),
            bitrate: 400_000,
            gop_frames: 60,
            profile_high,
            threads: None,
        };
        let encoder = open_video(VideoEncoder::Libx264, &settings, &config, None).unwrap();
        // SAFETY: extradata/extradata_size describe a buffer owned by the opened encoder.
        unsafe {
            let ctx = encoder.as_ptr();
            std::slice::from_raw_parts((*ctx).extradata, (*ctx).extradata_size as usize).to_vec()
        }
    }

    #[test]
    fn a_faster_preset_writes_the_parameter_sets_of_any_slower_one() {
        crate::transcode::init_ffmpeg();
        let presets = &cascade_platform::config::X264_PRESETS;
        for (rank, original) in presets.iter().enumerate().skip(2) {
            for faster in &presets[1..rank] {
                for high in [false, true] {
                    assert_eq!(
                        live_headers(faster, original, high),
                        live_headers(original, original, high),
                        "{faster} for {original} (high profile: {high})"
                    );
                }
            }
        }
    }

    #[test]
    fn libx264_opens_and_encodes() {
        crate::transcode::init_ffmpeg();
        probe(VideoEncoder::Libx264).unwrap();
    }

    #[test]
    fn auto_picks_a_working_hardware_encoder_or_falls_back_to_libx264() {
        let (chosen, failures) = resolve(EncoderChoice::Auto);
        if chosen == VideoEncoder::Libx264 {
            // Every hardware encoder was tried and said why it cannot run here.
            assert_eq!(failures.len(), VideoEncoder::HARDWARE.len(), "{failures:?}");
            for (failure, encoder) in failures.iter().zip(VideoEncoder::HARDWARE) {
                assert!(failure.starts_with(encoder.ffmpeg_name()), "{failure}");
            }
        } else {
            assert!(VideoEncoder::HARDWARE.contains(&chosen));
            probe(chosen).unwrap();
        }
    }

    #[test]
    fn an_explicit_hardware_encoder_that_cannot_open_falls_back_with_the_reason() {
        for (choice, encoder) in [
            (EncoderChoice::H264Nvenc, VideoEncoder::Nvenc),
            (EncoderChoice::H264Vaapi, VideoEncoder::Vaapi),
            (EncoderChoice::H264Qsv, VideoEncoder::Qsv),
        ] {
            let (chosen, failures) = resolve(choice);
            match probe(encoder) {
                Ok(()) => assert_eq!(chosen, encoder),
                Err(_) => {
                    assert_eq!(chosen, VideoEncoder::Libx264);
                    assert_eq!(failures.len(), 1);
                    assert!(
                        failures[0].starts_with(encoder.ffmpeg_name()),
                        "{failures:?}"
                    );
                }
            }
        }
        assert_eq!(
            resolve(EncoderChoice::Libx264),
            (VideoEncoder::Libx264, Vec::new())
        );
    }
}
