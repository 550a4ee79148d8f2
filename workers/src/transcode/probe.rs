//! The probe at upload time: the file opens, has an audio or video stream
//! with a supported codec, and a frame of it decodes; read through the
//! same untrusted-input rules as the transcode (container allow-list, no
//! protocols, the duration limit).

use std::path::Path;

use cascade_platform::config::TranscodeConfig;
use ffmpeg_next as ff;

use super::error::TranscodeError;
use super::pipeline::{open_sources, open_untrusted, read_packet, too_long, with_untrusted_reader};

/// What [`probe_file`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSummary {
    /// Duration from the container, when it says.
    pub duration: Option<f64>,
    /// A video frame decoded.
    pub has_video: bool,
    /// An audio frame decoded.
    pub has_audio: bool,
}

/// Quick check at upload time: the file opens, has an audio or video stream
/// with a supported codec, and at least one frame decodes. Reads at most a
/// few hundred packets.
pub fn probe_file(path: &Path, config: &TranscodeConfig) -> Result<ProbeSummary, TranscodeError> {
    super::init_ffmpeg();
    let input = open_untrusted(path)?;
    probe_input(input, config)
}

/// [`probe_file`] over any seekable reader (through FFmpeg's custom I/O),
/// such as a stored object read by ranged GETs: the demuxer reads only the
/// header, the index and the first packets, not the whole file.
pub fn probe_reader<R>(reader: R, config: &TranscodeConfig) -> Result<ProbeSummary, TranscodeError>
where
    R: std::io::Read + std::io::Seek + Send + 'static,
{
    with_untrusted_reader(reader, |input| probe_input(input, config))
}

fn probe_input(
    mut input: ff::format::context::Input,
    config: &TranscodeConfig,
) -> Result<ProbeSummary, TranscodeError> {
    let duration =
        (input.duration() > 0).then(|| input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE));
    let max = config.max_duration.as_secs_f64();
    if duration.is_some_and(|d| d > max) {
        return Err(too_long(max));
    }
    let (mut video, mut audio) = open_sources(&input, config)?;
    let (mut has_video, mut has_audio) = (false, false);
    let mut packet = ff::Packet::empty();
    let mut video_frame = ff::frame::Video::empty();
    let mut audio_frame = ff::frame::Audio::empty();
    for _ in 0..500 {
        if (video.is_none() || has_video) && (audio.is_none() || has_audio) {
            break;
        }
        if read_packet(&mut input, &mut packet).is_err() {
            break;
        }
        if let Some(source) = video.as_mut().filter(|s| s.index == packet.stream()) {
            if source.decoder.send_packet(&packet).is_ok()
                && source.decoder.receive_frame(&mut video_frame).is_ok()
            {
                has_video = true;
            }
        } else if let Some(source) = audio.as_mut().filter(|s| s.index == packet.stream()) {
            if source.decoder.send_packet(&packet).is_ok()
                && source.decoder.receive_frame(&mut audio_frame).is_ok()
            {
                has_audio = true;
            }
        }
    }
    // Frame-threaded decoders hold frames back until flushed.
    if let Some(source) = video.as_mut().filter(|_| !has_video) {
        let _ = source.decoder.send_eof();
        has_video = source.decoder.receive_frame(&mut video_frame).is_ok();
    }
    if !has_video && !has_audio {
        return Err(TranscodeError::input(
            "undecodable",
            "no frame of the file could be decoded: it is damaged or not media",
        ));
    }
    Ok(ProbeSummary {
        duration,
        has_video,
        has_audio,
    })
}
