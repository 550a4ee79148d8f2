//! The transcode pipeline, run on a blocking thread: probe, decode once,
//! one filter graph (rotate, cap frame rate, split, scale per rung), encode
//! every rung with keyframes forced at the same timestamps, encode the
//! shared AAC rendition (live: or copy the source's, [`super::audio_copy`]),
//! and hand the samples to the packager. Init and
//! media segments go out through a channel as they are cut, so memory stays
//! bounded whatever the video length.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_packager::{
    self as packager, AudioTrack, Rendition, Sample, Segmenter, Track, VideoTrack,
};
use cascade_platform::config::TranscodeConfig;
use ffmpeg_next as ff;
use tokio::sync::mpsc;

use super::audio_copy::{self, AudioClock, AudioFormat};
use super::encoders::{self, EncodeSettings, VideoEncoder};
use super::error::TranscodeError;
pub use super::graph::{audio_filter_graph, AudioInput};
use super::graph::{build_audio_graph, build_video_graph, output_frame_rate};
use super::hw::VaapiUpload;
use super::pacer::{Degradation, Pacer};
pub use super::probe::{probe_file, probe_reader, ProbeSummary};
use super::rung::{Feed, ToRung, VideoRung, FRAMES_IN_FLIGHT};
use cascade_schemas::chunks;
use cascade_schemas::ladder::{self, PlannedRung};

/// Timescale of video tracks (the MPEG 90 kHz clock: exact for 24, 25, 30, 50, 60 and NTSC rates).
pub(super) const VIDEO_TIMESCALE: i32 = 90_000;
/// Audio output sample rate (and timescale).
pub(super) const AUDIO_RATE: i32 = 48_000;
/// AAC frame size in samples.
pub(super) const AAC_FRAME: u32 = 1024;
/// Name of the shared audio rendition.
pub const AUDIO_RENDITION: &str = "audio";

/// What the pipeline sends while it runs.
#[derive(Debug)]
pub enum Event {
    /// The source was probed: its duration in seconds.
    Probed {
        /// Duration from the container, when it says.
        duration: Option<f64>,
    },
    /// A rendition's init segment.
    Init {
        /// Rendition name.
        rendition: String,
        /// The track it describes (codecs, size, timescale).
        track: Track,
        /// Upper bounds of its peak segment bit rate (RFC 8216 `BANDWIDTH`)
        /// and its average, from its rate control, container overhead
        /// included: what a master playlist declares before the segments
        /// are measured.
        declared: packager::Bitrates,
        /// The bytes.
        bytes: Bytes,
    },
    /// A finished media segment.
    Segment {
        /// Rendition name.
        rendition: String,
        /// Sequence number (the file name).
        sequence: u64,
        /// Its timing and size.
        info: packager::SegmentInfo,
        /// The bytes.
        bytes: Bytes,
    },
    /// A segment a rendition sat out: its rung is dropped while a live
    /// ladder cannot keep up. It has the number and timing the other
    /// renditions' segment has, and no bytes.
    Gap {
        /// Rendition name.
        rendition: String,
        /// Its timing (`size` 0).
        info: packager::SegmentInfo,
    },
    /// A part of the segment being cut (low-latency live only); the
    /// segment itself follows as [`Event::Segment`], its parts' bytes joined.
    Part {
        /// Rendition name.
        rendition: String,
        /// The part (its `sequence_number` is the segment's file name).
        part: packager::Part,
    },
    /// Seconds of the source transcoded so far.
    Progress(f64),
    /// What the source carries (sent once, before any init segment).
    Source(SourceInfo),
    /// A live ladder changed its degradation step (it fell behind the media
    /// received, or caught up again).
    Degraded {
        /// The new step.
        level: Degradation,
        /// Seconds the decoded media trailed the media received.
        lag: f64,
    },
}

/// The streams a source carries, as its decoders see them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// The video stream, if any.
    pub video: Option<VideoInfo>,
    /// The audio stream, if any.
    pub audio: Option<AudioInfo>,
    /// Whether the audio rendition is the source's audio packets, copied.
    pub audio_copied: bool,
}

/// A source's video stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VideoInfo {
    /// FFmpeg's codec name (`h264`, `hevc`, ...).
    pub codec: String,
    /// Displayed width.
    pub width: u32,
    /// Displayed height.
    pub height: u32,
    /// Frames per second.
    pub frame_rate: f64,
}

/// A source's audio stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AudioInfo {
    /// FFmpeg's codec name (`aac`, `mp3`, ...).
    pub codec: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
}

/// What a successful run produced.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Video rungs (highest first), then the audio rendition.
    pub renditions: Vec<(Rendition, String)>,
    /// Duration of the output in seconds.
    pub duration: f64,
    /// Per video rung: the time its encoder thread spent encoding and
    /// packaging (not waiting for frames), for the encode-speed metric.
    pub rung_busy: Vec<(String, Duration)>,
}

/// Probed facts about the source's video stream.
pub(super) struct VideoSource {
    pub(super) index: usize,
    pub(super) decoder: ff::decoder::Video,
    pub(super) time_base: ff::Rational,
    /// Clockwise degrees a player turns the stored picture: 0, 90, 180, 270.
    pub(super) rotation: u32,
    pub(super) frame_rate: ff::Rational,
    pub(super) display_width: u32,
    pub(super) display_height: u32,
    /// Interlaced source: which field is shown first (deinterlaced before
    /// anything else, or every rung would publish combed frames).
    pub(super) interlaced: Option<FieldParity>,
}

/// The field a player shows first, for the deinterlacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldParity {
    TopFirst,
    BottomFirst,
}

impl FieldParity {
    /// From the stream's field order (`AVCodecParameters.field_order`):
    /// `TT` and `BT` show the top field first, `BB` and `TB` the bottom one.
    fn of(stream: &ff::format::stream::Stream) -> Option<Self> {
        // SAFETY: the parameters belong to an open stream; field_order is a
        // plain field of the struct they point at.
        let order = unsafe { (*stream.parameters().as_ptr()).field_order };
        match ff::codec::field_order::FieldOrder::from(order) {
            ff::codec::field_order::FieldOrder::TT | ff::codec::field_order::FieldOrder::BT => {
                Some(Self::TopFirst)
            }
            ff::codec::field_order::FieldOrder::BB | ff::codec::field_order::FieldOrder::TB => {
                Some(Self::BottomFirst)
            }
            ff::codec::field_order::FieldOrder::Progressive
            | ff::codec::field_order::FieldOrder::Unknown => None,
        }
    }
}

pub(super) struct AudioSource {
    pub(super) index: usize,
    pub(super) decoder: ff::decoder::Audio,
    pub(super) time_base: ff::Rational,
}

struct AudioRendition {
    path: AudioPath,
    segmenter: Segmenter,
    /// Segments emitted so far.
    infos: Vec<packager::SegmentInfo>,
}

/// How the audio rendition is made.
enum AudioPath {
    /// Decoded, resampled (the audio graph) and encoded.
    Encode {
        encoder: ff::encoder::audio::Encoder,
        /// Encoder delay (priming samples): added back to the encoder's
        /// timestamps so the media starts at 0, and skipped by the init
        /// segment's edit list ([`AudioTrack::with_priming`]).
        priming: i64,
    },
    /// The source's packets, copied (live; see [`audio_copy`]).
    Copy(AudioClock),
}

pub(super) fn send(events: &mpsc::Sender<Event>, event: Event) -> Result<(), TranscodeError> {
    events
        .blocking_send(event)
        .map_err(|_| TranscodeError::Internal("the uploader stopped".to_owned()))
}

/// Containers a source may come in. Everything else is refused before the
/// demuxer runs: playlists and scripts that make FFmpeg open other files or
/// URLs (`hls`, `dash`, `concat`, `image2` sequences, `tee`...), and the long
/// tail of rarely used demuxers, which is where parsing bugs live.
pub const ACCEPTED_CONTAINERS: &str = "mov,matroska,webm,avi,flv,mpegts,mpeg,mxf,ogg,wav,w64,\
mp3,aac,flac,asf,dv,aiff,caf,ivf,h264,hevc,m4v,mpegvideo,gif";

/// Options for opening untrusted media: the container allow-list, and no
/// protocol but the local file (for a stored object read through custom
/// I/O, none at all), so nothing inside an upload can make FFmpeg reach the
/// network or another file.
fn untrusted_input_options(local_file: bool) -> ff::Dictionary<'static> {
    let mut options = ff::Dictionary::new();
    options.set("format_whitelist", ACCEPTED_CONTAINERS);
    // "none" names no protocol: with custom I/O FFmpeg needs none.
    options.set(
        "protocol_whitelist",
        if local_file { "file" } else { "none" },
    );
    options
}

/// Opens a staged source file as untrusted media.
pub(super) fn open_untrusted(path: &Path) -> Result<ff::format::context::Input, TranscodeError> {
    ff::format::input_with_dictionary(&path, untrusted_input_options(true))
        .map_err(|e| input_error_for_open(path, e))
}

fn input_error_for_open(path: &Path, error: ff::Error) -> TranscodeError {
    let mut head = [0u8; HEAD_BYTES];
    let read = std::fs::File::open(path)
        .and_then(|mut f| read_head(&mut f, &mut head))
        .unwrap_or(0);
    input_error_for_head(&head[..read], error)
}

/// Bytes of a file's start that tell why FFmpeg could not open it.
const HEAD_BYTES: usize = 12;

/// Fills `head` from `reader` as far as it goes; returns the bytes read.
fn read_head(reader: &mut impl std::io::Read, head: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why a file whose first bytes are `head` could not be opened.
fn input_error_for_head(head: &[u8], error: ff::Error) -> TranscodeError {
    if head.is_empty() {
        return TranscodeError::input("empty", "the uploaded file is empty");
    }
    // The container allow-list refused what FFmpeg recognised.
    if matches!(error, ff::Error::Other { errno } if errno == ff::util::error::EINVAL) {
        let what = if head.starts_with(b"#EXTM3U") {
            "an HLS playlist"
        } else if head.starts_with(b"ffconcat") {
            "an FFmpeg concat script"
        } else if head.starts_with(b"<?xml") || head.starts_with(b"<MPD") {
            "an XML document (a DASH manifest?)"
        } else {
            "in a format we do not accept"
        };
        return TranscodeError::input(
            "unsupported_container",
            format!(
                "the file is {what}; upload the video file itself (MP4, MOV, MKV, WebM, AVI, MPEG-TS, MXF, ...)"
            ),
        );
    }
    // An MP4/MOV that starts right but cannot be opened lost its index at the
    // end: the classic cut-off upload.
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return TranscodeError::input(
            "truncated",
            "the file is truncated: it is an MP4/MOV whose index (moov) is missing, so the upload was probably cut off",
        );
    }
    tracing::info!(error = %error, "source is not readable media");
    TranscodeError::input(
        "not_media",
        "the file is not a video or audio file we can read",
    )
}

/// Clockwise display rotation from the stream's display matrix.
pub fn rotation_of(stream: &ff::format::stream::Stream) -> u32 {
    for side in stream.side_data() {
        if side.kind() == ff::codec::packet::side_data::Type::DisplayMatrix
            && side.data().len() >= 36
        {
            let mut matrix = [0i32; 9];
            for (i, chunk) in side.data().chunks_exact(4).take(9).enumerate() {
                matrix[i] = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            // SAFETY: av_display_rotation_get reads nine i32s from the pointer.
            let counter_clockwise = unsafe { ff::ffi::av_display_rotation_get(matrix.as_ptr()) };
            if counter_clockwise.is_nan() {
                return 0;
            }
            let clockwise = (-counter_clockwise).round() as i64;
            return (((clockwise % 360) + 360) % 360 / 90 * 90) as u32;
        }
    }
    0
}

fn valid_rate(r: ff::Rational) -> bool {
    r.numerator() > 0 && r.denominator() > 0 && f64::from(r) < 1000.0
}

fn open_video_source(
    stream: &ff::format::stream::Stream,
    config: &TranscodeConfig,
) -> Result<VideoSource, TranscodeError> {
    let codec_name = stream.parameters().id().name().to_owned();
    let mut context = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| TranscodeError::internal("reading video parameters", e))?;
    // Frame threads each hold a frame back: fine for files, delay for live
    // (where one 720p/1080p decode thread keeps up with ease).
    context.set_threading(ff::codec::threading::Config {
        kind: if config.live {
            ff::codec::threading::Type::Slice
        } else {
            ff::codec::threading::Type::Frame
        },
        count: 0,
        ..Default::default()
    });
    let decoder = context.decoder().video().map_err(|_| {
        TranscodeError::input(
            "unsupported_codec",
            format!("the video codec ({codec_name}) is not supported"),
        )
    })?;
    let (width, height) = (decoder.width(), decoder.height());
    if width < 16 || height < 16 || width > config.max_dimension || height > config.max_dimension {
        return Err(TranscodeError::input(
            "unsupported_dimensions",
            format!(
                "the video is {width}x{height}; supported sizes are 16x16 up to {0}x{0}",
                config.max_dimension
            ),
        ));
    }
    let rotation = rotation_of(stream);
    // Non-square pixels: display width follows the sample aspect ratio.
    let sar = decoder.aspect_ratio();
    let display_width =
        if sar.numerator() > 0 && sar.denominator() > 0 && sar != ff::Rational::new(1, 1) {
            ((f64::from(width) * f64::from(sar)).round() as u32).max(2)
        } else {
            width
        };
    if display_width > config.max_dimension {
        return Err(TranscodeError::input(
            "unsupported_dimensions",
            format!(
                "the video displays {display_width}x{height} (its pixels are not square); supported sizes are up to {0}x{0}",
                config.max_dimension
            ),
        ));
    }
    let (display_width, display_height) = if rotation % 180 == 90 {
        (height, display_width)
    } else {
        (display_width, height)
    };
    let frame_rate = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| valid_rate(*r))
        .unwrap_or(ff::Rational::new(30, 1));
    Ok(VideoSource {
        index: stream.index(),
        decoder,
        time_base: stream.time_base(),
        rotation,
        frame_rate,
        display_width,
        display_height,
        interlaced: FieldParity::of(stream).filter(|_| config.deinterlace),
    })
}

fn open_audio_source(stream: &ff::format::stream::Stream) -> Result<AudioSource, TranscodeError> {
    let codec_name = stream.parameters().id().name().to_owned();
    let context = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| TranscodeError::internal("reading audio parameters", e))?;
    let decoder = context.decoder().audio().map_err(|_| {
        TranscodeError::input(
            "unsupported_codec",
            format!("the audio codec ({codec_name}) is not supported"),
        )
    })?;
    Ok(AudioSource {
        index: stream.index(),
        decoder,
        time_base: stream.time_base(),
    })
}

/// Opens decoders for the best video stream (cover art is a "video" stream
/// of one picture, not a video) and the best audio stream; at least one.
pub(super) fn open_sources(
    input: &ff::format::context::Input,
    config: &TranscodeConfig,
) -> Result<(Option<VideoSource>, Option<AudioSource>), TranscodeError> {
    let video_stream = input.streams().best(ff::media::Type::Video).filter(|s| {
        !s.disposition()
            .contains(ff::format::stream::Disposition::ATTACHED_PIC)
    });
    let video = video_stream
        .as_ref()
        .map(|s| open_video_source(s, config))
        .transpose()?;
    let audio = input
        .streams()
        .best(ff::media::Type::Audio)
        .as_ref()
        .map(open_audio_source)
        .transpose()?;
    if video.is_none() && audio.is_none() {
        return Err(TranscodeError::input(
            "no_media_streams",
            "no video or audio stream found in the file",
        ));
    }
    Ok((video, audio))
}

/// Drops the references a frame holds so it can be filled again.
fn unref(frame: &mut ff::Frame) {
    // SAFETY: the frame is valid; av_frame_unref leaves it empty and reusable.
    unsafe { ff::ffi::av_frame_unref(frame.as_mut_ptr()) }
}

/// The extradata (codec configuration) a codec context holds; empty when none.
///
/// # Safety
/// `ctx` must point to a valid, open codec context.
pub(super) unsafe fn context_extradata(ctx: *const ff::ffi::AVCodecContext) -> Vec<u8> {
    // SAFETY: extradata/extradata_size describe a buffer the context owns.
    unsafe {
        if (*ctx).extradata.is_null() || (*ctx).extradata_size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts((*ctx).extradata, (*ctx).extradata_size as usize).to_vec()
    }
}

pub(super) fn extradata(encoder: &ff::encoder::video::Encoder) -> Vec<u8> {
    // SAFETY: an opened encoder's context.
    unsafe { context_extradata(encoder.as_ptr()) }
}

fn audio_extradata(encoder: &ff::encoder::audio::Encoder) -> (Vec<u8>, i64) {
    // SAFETY: an opened encoder's context; initial_padding is a plain int.
    unsafe {
        let ctx = encoder.as_ptr();
        (context_extradata(ctx), i64::from((*ctx).initial_padding))
    }
}

pub(super) fn packager_error(context: &str, error: packager::Error) -> TranscodeError {
    TranscodeError::internal(context, error)
}

/// Runs the whole transcode of the file at `path`.
pub fn run(
    path: &Path,
    config: &TranscodeConfig,
    video_encoder: VideoEncoder,
    events: &mpsc::Sender<Event>,
    cancel: &AtomicBool,
) -> Result<Summary, TranscodeError> {
    super::init_ffmpeg();
    let input = open_untrusted(path)?;
    run_input(input, config, video_encoder, events, cancel, 0.0, None)
}

/// [`run`] over any seekable reader (through FFmpeg's custom I/O), such as
/// a stored source read by ranged GETs: the transcode decodes straight from
/// storage, with no copy to local disk first.
pub fn run_reader<R>(
    reader: R,
    config: &TranscodeConfig,
    video_encoder: VideoEncoder,
    events: &mpsc::Sender<Event>,
    cancel: &AtomicBool,
) -> Result<Summary, TranscodeError>
where
    R: std::io::Read + std::io::Seek + Send + 'static,
{
    with_untrusted_reader(reader, |input| {
        run_input(input, config, video_encoder, events, cancel, 0.0, None)
    })
}

/// Opens `reader` as untrusted media through FFmpeg's custom I/O and hands
/// the input to `work`. FFmpeg sees a failed read as the end of the media,
/// so a read that failed below it (storage trouble) is reported as such,
/// never as a damaged or truncated source.
pub(super) fn with_untrusted_reader<R, T>(
    mut reader: R,
    work: impl FnOnce(ff::format::context::Input) -> Result<T, TranscodeError>,
) -> Result<T, TranscodeError>
where
    R: std::io::Read + std::io::Seek + Send + 'static,
{
    super::init_ffmpeg();
    let mut head = [0u8; HEAD_BYTES];
    let head_len = read_head(&mut reader, &mut head).map_err(read_failure)?;
    reader
        .seek(std::io::SeekFrom::Start(0))
        .map_err(read_failure)?;
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
    let io = ff::format::context::StreamIo::from_read_seek(FailureRecorder {
        inner: reader,
        failure: failure.clone(),
    })
    .map_err(|e| TranscodeError::Internal(format!("custom I/O for the source: {e}")))?;
    let result = ff::format::input_from_stream(io, None, Some(untrusted_input_options(false)))
        .map_err(|e| input_error_for_head(&head[..head_len], e))
        .and_then(work);
    let failed = failure.lock().ok().and_then(|mut f| f.take());
    match failed {
        Some(error) => Err(read_failure(error)),
        None => result,
    }
}

/// Runs the transcode of an opened input (a file, or a live stream read
/// through custom I/O). Output timestamps start at `timeline_offset`
/// seconds (a live broadcast's later sessions continue its timeline). A
/// live input brings a `pacer`, which degrades the ladder when it falls
/// behind the media received.
pub fn run_input(
    mut input: ff::format::context::Input,
    config: &TranscodeConfig,
    video_encoder: VideoEncoder,
    events: &mpsc::Sender<Event>,
    cancel: &AtomicBool,
    timeline_offset: f64,
    mut pacer: Option<Pacer>,
) -> Result<Summary, TranscodeError> {
    let container_duration =
        (input.duration() > 0).then(|| input.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE));
    send(
        events,
        Event::Probed {
            duration: container_duration,
        },
    )?;

    let (mut video, mut audio) = open_sources(&input, config)?;
    let scope = config.scope;
    if !scope.audio {
        audio = None; // Another run makes the audio (chunked transcoding).
    }
    if video.is_none() && !scope.audio {
        // A later chunk of a source without video: chunk 0 made its audio.
        return Ok(Summary {
            renditions: Vec::new(),
            duration: 0.0,
            rung_busy: Vec::new(),
        });
    }
    send(
        events,
        Event::Source(SourceInfo {
            video: video.as_ref().map(|v| VideoInfo {
                codec: v.decoder.id().name().to_owned(),
                width: v.display_width,
                height: v.display_height,
                frame_rate: f64::from(v.frame_rate),
            }),
            audio: audio.as_ref().map(|a| AudioInfo {
                codec: a.decoder.id().name().to_owned(),
                sample_rate: a.decoder.rate(),
                channels: a.decoder.channels(),
            }),
            audio_copied: audio.as_ref().is_some_and(|a| copies_audio(config, a)),
        }),
    )?;

    // Plan the ladder and open one encoder per rung.
    let segment_duration =
        packager::Rational::new(config.segment_duration.as_millis() as u64, 1000)
            .map_err(|e| packager_error("segment duration", e))?;
    let part_duration = config
        .part_duration
        .and_then(|part| packager::Rational::new(part.as_millis().max(1) as u64, 1000).ok());
    let first_segment = (config.first_segment_duration < config.segment_duration)
        .then(|| {
            packager::Rational::new(config.first_segment_duration.as_millis() as u64, 1000).ok()
        })
        .flatten();
    // A chunk's first segment continues the numbering of the whole
    // presentation (its start is a boundary of the grid).
    let first_sequence = u32::try_from(chunks::sequence_at(
        scope.video_from,
        config.segment_duration.as_secs_f64(),
        if first_segment.is_some() {
            short_start_boundaries(config).len()
        } else {
            0
        },
        u64::from(packager::FIRST_SEQUENCE_NUMBER),
    ))
    .map_err(|_| {
        TranscodeError::Internal("a chunk starts past the last segment number".to_owned())
    })?;
    let mut rungs: Vec<VideoRung> = Vec::new();
    let mut graph = None;
    if let Some(source) = &video {
        let plan = match &config.kept_rungs {
            Some(kept) => kept
                .iter()
                .map(|rung| PlannedRung {
                    name: rung.name.clone(),
                    width: rung.width,
                    height: rung.height,
                    bitrate: rung.bitrate,
                })
                .collect(),
            None => ladder::plan(source.display_width, source.display_height, &config.ladder),
        };
        if plan.is_empty() {
            return Err(TranscodeError::input(
                "unsupported_dimensions",
                "the video is too small to encode",
            ));
        }
        let out_rate = output_frame_rate(source.frame_rate, config.max_frame_rate);
        let capped = out_rate != source.frame_rate;
        let formats: Vec<ff::format::Pixel> =
            plan.iter().map(|_| video_encoder.input_format()).collect();
        let letterbox = config.kept_rungs.is_some();
        let mut built = build_video_graph(source, &plan, out_rate, capped, &formats, letterbox)
            .map_err(|e| TranscodeError::internal("building the video filter graph", e))?;
        let gop_frames = ((config.gop.as_secs_f64() * f64::from(out_rate)).round() as u32).max(1);
        let plan_sizes: Vec<(u32, u32)> = plan.iter().map(|r| (r.width, r.height)).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (i, rung) in plan.into_iter().enumerate() {
            let sink = format!("out{i}");
            let time_base = built
                .get(&sink)
                .map(|mut c| c.sink().time_base())
                .unwrap_or(source.time_base);
            let settings = EncodeSettings {
                width: rung.width,
                height: rung.height,
                time_base,
                frame_rate: out_rate,
                bitrate: encoded_bitrate(config, &rung.name, rung.bitrate),
                gop_frames,
                profile_high: rung.height.min(rung.width) > 480,
                threads: encoder_threads(&plan_sizes, i, config.live, cores),
            };
            let vaapi = match video_encoder {
                VideoEncoder::Vaapi => Some(
                    VaapiUpload::new(rung.width, rung.height)
                        .map_err(|e| TranscodeError::internal("opening the VAAPI device", e))?,
                ),
                _ => None,
            };
            let encoder = encoders::open_video(video_encoder, &settings, config, vaapi.as_ref())
                .map_err(|e| {
                    TranscodeError::internal(
                        &format!("opening {video_encoder} for {}", rung.name),
                        e,
                    )
                })?;
            let frame_rate =
                packager::Rational::new(out_rate.numerator() as u64, out_rate.denominator() as u64)
                    .map_err(|e| packager_error("frame rate", e))?;
            let track = VideoTrack::new(
                &extradata(&encoder),
                rung.width,
                rung.height,
                VIDEO_TIMESCALE as u32,
                frame_rate,
            )
            .map_err(|e| packager_error("describing the video track", e))?;
            let segmenter = new_segmenter(
                Track::Video(track),
                segment_duration,
                first_segment,
                part_duration,
            )
            .numbered_from(first_sequence);
            send(
                events,
                Event::Init {
                    rendition: rung.name.clone(),
                    track: segmenter.track().clone(),
                    declared: declared_video(config, rung.bitrate),
                    bytes: segmenter.init_segment(),
                },
            )?;
            let frame_ticks = (f64::from(VIDEO_TIMESCALE) / f64::from(out_rate)).round() as u32;
            rungs.push(VideoRung {
                plan: rung,
                sink,
                encoder,
                time_base,
                segmenter,
                pending: None,
                frame_ticks,
                package_from: if scope.video_from > 0.0 {
                    (scope.video_from * f64::from(VIDEO_TIMESCALE)).round() as i64 - 1
                } else {
                    i64::MIN
                },
                vaapi,
                infos: Vec::new(),
                settings,
                video_encoder,
                config: TranscodeConfig {
                    headers_of_preset: Some(config.preset.clone()),
                    ..config.clone()
                },
            });
        }
        graph = Some(built);
    }
    if let Some(pacer) = pacer.as_mut() {
        pacer.set_steps(degradation_steps(config, video_encoder, rungs.len()));
    }
    let mut audio_graph = None;
    let mut audio_out = None;
    if let Some(source) = &audio {
        let (path, asc, bitrate) = if copies_audio(config, source) {
            let format = AudioFormat::of(&source.decoder);
            tracing::info!(
                bitrate = format.bitrate,
                "audio copied from the source (AAC-LC, 48 kHz, stereo)"
            );
            let asc = audio_copy::audio_specific_config(&source.decoder);
            (AudioPath::Copy(AudioClock::default()), asc, format.bitrate)
        } else {
            audio_graph = Some(
                build_audio_graph(source, timeline_offset)
                    .map_err(|e| TranscodeError::internal("building the audio filter graph", e))?,
            );
            let encoder = encoders::open_audio(config.audio_bitrate)
                .map_err(|e| TranscodeError::internal("opening the AAC encoder", e))?;
            let (asc, priming) = audio_extradata(&encoder);
            (
                AudioPath::Encode { encoder, priming },
                asc,
                config.audio_bitrate,
            )
        };
        let priming = match &path {
            AudioPath::Encode { priming, .. } => u32::try_from(*priming).unwrap_or(0),
            AudioPath::Copy(_) => 0,
        };
        let track = AudioTrack::new(&asc, AUDIO_RATE as u32, 2)
            .map_err(|e| packager_error("describing the audio track", e))?
            .with_priming(priming);
        let segmenter = new_segmenter(
            Track::Audio(track),
            segment_duration,
            first_segment,
            part_duration,
        );
        send(
            events,
            Event::Init {
                rendition: AUDIO_RENDITION.to_owned(),
                track: segmenter.track().clone(),
                // FFmpeg's AAC encoder holds its average, not a strict cap
                // (nor do the encoders copied audio comes from).
                declared: packager::Bitrates {
                    peak: with_overhead(bitrate * 5 / 4),
                    average: with_overhead(bitrate * 21 / 20),
                },
                bytes: segmenter.init_segment(),
            },
        )?;
        audio_out = Some(AudioRendition {
            path,
            segmenter,
            infos: Vec::new(),
        });
    }

    // Timestamps start at the first video frame (or audio when there is none).
    let origin_seconds = {
        let start = |index: usize| {
            input
                .stream(index)
                .map(|s| (s.start_time(), s.time_base()))
                .filter(|(t, _)| *t != ff::ffi::AV_NOPTS_VALUE)
                .map(|(t, tb)| t as f64 * f64::from(tb))
        };
        match (&video, &audio) {
            (Some(v), _) => start(v.index).unwrap_or(0.0),
            (None, Some(a)) => start(a.index).unwrap_or(0.0),
            (None, None) => 0.0,
        }
    };
    if scope.video_from > 0.0 {
        // A later chunk: start decoding at the source's keyframe at or
        // before a GOP ahead of the chunk's start; that GOP warms the
        // encoders up (not packaged), what comes before it is decoded
        // (the filters need it) and dropped before the encoders.
        let warm_from = (scope.video_from - config.gop.as_secs_f64()).max(0.0);
        let target = ((origin_seconds + warm_from) * f64::from(ff::ffi::AV_TIME_BASE)) as i64;
        input
            .seek(target, ..target)
            .map_err(|e| TranscodeError::internal("seeking to the chunk's start", e))?;
    }
    let gop_seconds = config.gop.as_secs_f64();
    let mut state = LoopState {
        window: (scope.video_from, scope.video_until),
        window_done: false,
        warm_up: if scope.video_from > 0.0 {
            gop_seconds
        } else {
            0.0
        },
        next_keyframe: timeline_offset,
        early_keyframes: short_start_boundaries(config)
            .into_iter()
            .map(|seconds| seconds + timeline_offset)
            .collect(),
        decoded_end: 0.0,
        video_frames: 0,
        audio_frames: 0,
        last_progress: Instant::now(),
        progress_every: config.progress_interval,
        origin_seconds,
        gop_seconds,
        timeline_offset,
        max_seconds: pacer.is_none().then_some(config.max_duration.as_secs_f64()),
        started: Instant::now(),
        max_frames: pacer.is_none().then_some(config.max_source_frames),
        min_speed: (pacer.is_none() && config.min_speed > 0.0)
            .then_some((config.min_speed, config.min_speed_after)),
        pacer,
        applied: Degradation::default(),
        presets: (config.preset.clone(), config.degraded_preset.clone()),
        frame_index: 0,
    };

    // Each rung encodes and packages in its own thread; this thread decodes,
    // filters and decides keyframes, so no encoder waits on another.
    let mut video_renditions = Vec::new();
    let decoded = std::thread::scope(|scope| -> Result<Option<ff::Error>, TranscodeError> {
        let mut feeds = Vec::new();
        let mut workers = Vec::new();
        let parent = tracing::Span::current();
        for mut rung in rungs.drain(..) {
            let span = tracing::info_span!(parent: &parent, "encode_rung", rung = %rung.plan.name);
            let (frames, received) = std::sync::mpsc::sync_channel::<ToRung>(FRAMES_IN_FLIGHT);
            feeds.push(Feed {
                sink: rung.sink.clone(),
                time_base: rung.time_base,
                frames,
            });
            workers.push(
                scope.spawn(move || -> Result<(Rendition, Duration), TranscodeError> {
                    let _entered = span.enter();
                    let mut busy = Duration::ZERO;
                    while let Ok(message) = received.recv() {
                        let started = Instant::now();
                        rung.take(message, events)?;
                        busy += started.elapsed();
                    }
                    let started = Instant::now();
                    let rendition = rung.finish(events)?;
                    Ok((rendition, busy + started.elapsed()))
                }),
            );
        }
        let decoded = (|| -> Result<Option<ff::Error>, TranscodeError> {
            let mut packet = ff::Packet::empty();
            let mut read_error = None;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(TranscodeError::Cancelled);
                }
                // Also when no frame comes out at all.
                state.check_speed()?;
                match read_packet(&mut input, &mut packet) {
                    Ok(()) => {}
                    Err(ff::Error::Eof) => break,
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
                let index = packet.stream();
                if let (Some(source), Some(graph)) = (video.as_mut(), graph.as_mut()) {
                    if index == source.index {
                        if state.window_done {
                            if audio_out.is_none() {
                                break; // This chunk's video is complete.
                            }
                            continue;
                        }
                        if source.decoder.send_packet(&packet).is_err() {
                            continue; // A corrupt packet: skip it, the decoder resyncs.
                        }
                        drain_video(source, graph, &feeds, &mut state, events)?;
                        continue;
                    }
                }
                if let (Some(source), Some(out)) = (audio.as_mut(), audio_out.as_mut()) {
                    if index == source.index {
                        match audio_graph.as_mut() {
                            Some(graph) => {
                                if source.decoder.send_packet(&packet).is_err() {
                                    continue;
                                }
                                drain_audio(source, graph, out, &mut state, events)?;
                            }
                            None => copy_audio(&packet, source.time_base, out, &mut state, events)?,
                        }
                    }
                }
            }

            // Flush decoders, filter graphs and encoders (a chunk that has
            // its video already has nothing more to take from its decoder).
            if let (Some(source), Some(graph), false) =
                (video.as_mut(), graph.as_mut(), state.window_done)
            {
                let _ = source.decoder.send_eof();
                drain_video(source, graph, &feeds, &mut state, events)?;
                if let Some(mut input) = graph.get("in") {
                    let _ = input.source().flush();
                }
                pull_video(graph, &feeds, &mut state)?;
            }
            if let (Some(source), Some(graph), Some(out)) =
                (audio.as_mut(), audio_graph.as_mut(), audio_out.as_mut())
            {
                let _ = source.decoder.send_eof();
                drain_audio(source, graph, out, &mut state, events)?;
                if let Some(mut input) = graph.get("in") {
                    let _ = input.source().flush();
                }
                pull_audio(graph, out, events)?;
            }
            Ok(read_error)
        })();
        // Closing the feeds lets every rung flush and finish.
        drop(feeds);
        let mut rung_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(done)) => video_renditions.push(done),
                Ok(Err(e)) => {
                    rung_error.get_or_insert(e);
                }
                Err(_) => {
                    rung_error.get_or_insert(TranscodeError::Internal(
                        "a rung encoder thread panicked".to_owned(),
                    ));
                }
            }
        }
        // A rung's own error explains a "rung stopped" on the decoding side.
        match rung_error {
            Some(e) => Err(e),
            None => decoded,
        }
    });
    let read_error = decoded?;

    if state.video_frames == 0 && state.audio_frames == 0 {
        let detail = read_error.map(|e| format!(" ({e})")).unwrap_or_default();
        tracing::info!(detail = %detail, "no frame could be decoded");
        return Err(TranscodeError::input(
            "undecodable",
            "no frame of the file could be decoded: it is damaged or not media",
        ));
    }
    if let Some(total) = container_duration {
        // A chunk without the audio decodes only up to its end.
        let expected_end = match (scope.audio, scope.video_until) {
            (false, Some(until)) => total.min(until),
            _ => total,
        };
        let missing = expected_end - state.decoded_end;
        if missing > 1.0 && missing > total * 0.05 {
            return Err(TranscodeError::input(
                "truncated",
                format!(
                    "the file ends at {:.1} s but says it is {:.1} s long: it looks truncated (incomplete upload?)",
                    state.decoded_end, total
                ),
            ));
        }
    }

    let mut renditions = Vec::new();
    let mut rung_busy = Vec::new();
    let mut duration = 0.0f64;
    for (rendition, busy) in video_renditions {
        duration = duration.max(rendition.end() as f64 / f64::from(VIDEO_TIMESCALE));
        rung_busy.push((rendition.name.to_string(), busy));
        renditions.push((rendition, video_encoder.ffmpeg_name().to_owned()));
    }
    if let Some(mut out) = audio_out {
        if let AudioPath::Encode { encoder, .. } = &mut out.path {
            encoder
                .send_eof()
                .map_err(|e| TranscodeError::internal("flushing the audio encoder", e))?;
        }
        receive_audio_packets(&mut out, events)?;
        if let AudioPath::Copy(clock) = &out.path {
            if clock.dropped > 0 {
                tracing::warn!(
                    frames = clock.dropped,
                    "copied audio frames dropped: stamped over audio already packaged"
                );
            }
        }
        let track = out.segmenter.track().clone();
        let mut infos = std::mem::take(&mut out.infos);
        collect_last(
            &mut infos,
            out.segmenter.finish_with_parts(),
            AUDIO_RENDITION,
            events,
        )?;
        let rendition = Rendition::from_track(AUDIO_RENDITION, &track, infos);
        duration = duration.max(rendition.end() as f64 / f64::from(AUDIO_RATE));
        renditions.push((rendition, "aac".to_owned()));
    }
    Ok(Summary {
        renditions,
        duration,
        rung_busy,
    })
}

/// Reads the next packet into `packet`, releasing the one it held first:
/// `av_read_frame` overwrites a packet without unreferencing its buffer, so
/// reusing one packet unreleased would keep every packet of the source
/// alive (memory growing with the source's length).
pub(super) fn read_packet(
    input: &mut ff::format::context::Input,
    packet: &mut ff::Packet,
) -> Result<(), ff::Error> {
    *packet = ff::Packet::empty();
    packet.read(input)
}

/// The short start's boundaries (`transcode.first_segment_duration`
/// doubling while under the segment duration), in seconds of the output
/// timeline; the segmenter cuts there (`Segmenter::with_short_start`).
fn short_start_boundaries(config: &TranscodeConfig) -> Vec<f64> {
    let segment = config.segment_duration.as_secs_f64();
    let mut boundaries = Vec::new();
    let mut at = config.first_segment_duration.as_secs_f64();
    while at > 0.0 && at < segment - 1e-9 {
        boundaries.push(at);
        at *= 2.0;
    }
    boundaries
}

/// The bit rate a rung's encoder is asked for: the ladder's, scaled down
/// by a corrective take ([`TranscodeConfig::rate_scale`]).
fn encoded_bitrate(config: &TranscodeConfig, rung: &str, bitrate: u64) -> u64 {
    match config.rate_scale.get(rung) {
        Some(&scale) if scale.is_finite() && scale > 0.0 => {
            ((bitrate as f64 * scale).round() as u64).max(1)
        }
        _ => bitrate,
    }
}

/// What a video rung of `bitrate` declares before it is measured: the
/// peak its VBV allows over the shortest stretch a peak is measured on
/// (half the target duration, `Bitrates::measure`, RFC 8216 section
/// 4.3.4.2; the target is never below the segment duration rounded up),
/// and its max rate as the average.
fn declared_video(config: &TranscodeConfig, bitrate: u64) -> packager::Bitrates {
    let vbv = encoders::VbvModel::of(config, bitrate as usize);
    let shortest_run = config.segment_duration.as_secs_f64().ceil() / 2.0;
    packager::Bitrates {
        peak: with_overhead(vbv.peak_bound(shortest_run)),
        average: with_overhead(vbv.max as u64),
    }
}

/// `bits_per_second` plus what CMAF adds: a `moof` per segment and a
/// `trun` entry per sample (a few kbit/s at 60 frames per second).
fn with_overhead(bits_per_second: u64) -> u64 {
    bits_per_second + bits_per_second / 50 + 16_000
}

/// A segmenter, cutting parts too when `part_duration` is set, and the
/// first segment short when `first_segment` is.
fn new_segmenter(
    track: Track,
    segment_duration: packager::Rational,
    first_segment: Option<packager::Rational>,
    part_duration: Option<packager::Rational>,
) -> Segmenter {
    let segmenter = match part_duration {
        Some(part) => Segmenter::with_parts(track, segment_duration, part),
        None => Segmenter::new(track, segment_duration),
    };
    match first_segment {
        Some(first) => segmenter.with_short_start(first),
        None => segmenter,
    }
}

pub(super) fn emit_parts(
    rendition: &str,
    parts: Vec<packager::Part>,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    for part in parts {
        send(
            events,
            Event::Part {
                rendition: rendition.to_owned(),
                part,
            },
        )?;
    }
    Ok(())
}

/// Emits what `finish_with_parts()` returned, if anything, and records it.
pub(super) fn collect_last(
    infos: &mut Vec<packager::SegmentInfo>,
    last: packager::Result<(Option<packager::MediaSegment>, Vec<packager::Part>)>,
    rendition: &str,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let (last, parts) = last.map_err(|e| packager_error("finishing segments", e))?;
    emit_parts(rendition, parts, events)?;
    if let Some(segment) = last {
        infos.push(segment.info());
        emit_segment(rendition, segment, events)?;
    }
    Ok(())
}

pub(super) fn emit_segment(
    rendition: &str,
    segment: packager::MediaSegment,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let sequence = segment.sequence_number();
    let info = segment.info();
    send(
        events,
        Event::Segment {
            rendition: rendition.to_owned(),
            sequence,
            info,
            bytes: segment.into_data(),
        },
    )
}

struct LoopState {
    /// The output seconds whose video this run encodes: `[from, until)`
    /// (a chunk of a chunked transcode; `(0, None)`: all of it).
    window: (f64, Option<f64>),
    /// A frame at or past the window's end came out: the video is complete.
    window_done: bool,
    /// Seconds before the window the encoders see (and the rungs do not
    /// package): a later chunk's rate control and lookahead start warm.
    warm_up: f64,
    next_keyframe: f64,
    /// The short start's boundaries off the GOP grid, ascending (seconds):
    /// keyframes are forced there too.
    early_keyframes: Vec<f64>,
    decoded_end: f64,
    video_frames: u64,
    audio_frames: u64,
    last_progress: Instant,
    progress_every: Duration,
    origin_seconds: f64,
    gop_seconds: f64,
    /// Seconds added to every output timestamp.
    timeline_offset: f64,
    /// Live only: the real-time keeper.
    pacer: Option<Pacer>,
    /// The degradation the rungs are at (the pacer's, applied at keyframes).
    applied: Degradation,
    /// The x264 preset, and the one a degraded ladder switches to.
    presets: (String, Option<String>),
    /// Frames handed to the rungs so far (which are odd, for halving).
    frame_index: u64,
    /// Files only: media time past which the source is refused.
    max_seconds: Option<f64>,
    started: Instant,
    /// Files only: video frames past which the source is refused.
    max_frames: Option<u64>,
    /// Files only: `(media seconds per second, checked after)`.
    min_speed: Option<(f64, Duration)>,
}

impl LoopState {
    /// Refuses a source that decodes slower than `transcode.min_speed`.
    fn check_speed(&self) -> Result<(), TranscodeError> {
        if let Some((speed, after)) = self.min_speed {
            let elapsed = self.started.elapsed();
            if elapsed >= after && self.decoded_end < elapsed.as_secs_f64() * speed {
                return Err(TranscodeError::input(
                    "decode_too_slow",
                    format!(
                        "the video decodes far too slowly ({:.1} s of it in {:.0} s of work); it may be damaged or crafted to stall decoders",
                        self.decoded_end,
                        elapsed.as_secs_f64()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn progress(
        &mut self,
        seconds: f64,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        self.decoded_end = self.decoded_end.max(seconds);
        if let Some(max) = self.max_seconds.filter(|max| self.decoded_end > *max) {
            return Err(too_long(max));
        }
        self.check_speed()?;
        if self.last_progress.elapsed() >= self.progress_every {
            self.last_progress = Instant::now();
            send(events, Event::Progress(self.decoded_end))?;
        }
        Ok(())
    }
}

/// A source longer than `transcode.max_duration` (`max` seconds).
pub(super) fn too_long(max: f64) -> TranscodeError {
    TranscodeError::input(
        "source_too_long",
        format!(
            "the video is longer than the {}h {:02}m we accept",
            max as u64 / 3600,
            max as u64 % 3600 / 60
        ),
    )
}

fn drain_video(
    source: &mut VideoSource,
    graph: &mut ff::filter::Graph,
    feeds: &[Feed],
    state: &mut LoopState,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let mut frame = ff::frame::Video::empty();
    let origin = (state.origin_seconds / f64::from(source.time_base)).round() as i64;
    let offset = (state.timeline_offset / f64::from(source.time_base)).round() as i64;
    while source.decoder.receive_frame(&mut frame).is_ok() {
        let Some(ts) = frame.timestamp().or(frame.pts()) else {
            continue;
        };
        let pts = ts - origin;
        if pts < 0 {
            continue; // Before the start (edit list pre-roll).
        }
        frame.set_pts(Some(pts + offset));
        state.video_frames += 1;
        if let Some(max) = state.max_frames.filter(|max| state.video_frames > *max) {
            return Err(TranscodeError::input(
                "too_many_frames",
                format!("the video has more than the {max} frames we accept"),
            ));
        }
        let seconds = pts as f64 * f64::from(source.time_base);
        if let Some(pacer) = state.pacer.as_mut() {
            if let Some(level) = pacer.observe(seconds, Instant::now()) {
                let lag = pacer.lag;
                send(events, Event::Degraded { level, lag })?;
            }
        }
        state.progress(
            seconds + 1.0 / f64::from(source.frame_rate).max(1.0),
            events,
        )?;
        let Some(mut input) = graph.get("in") else {
            return Err(TranscodeError::Internal(
                "video graph has no input".to_owned(),
            ));
        };
        input
            .source()
            .add(&frame)
            .map_err(|e| TranscodeError::internal("filtering video", e))?;
        pull_video(graph, feeds, state)?;
    }
    Ok(())
}

fn pull_video(
    graph: &mut ff::filter::Graph,
    feeds: &[Feed],
    state: &mut LoopState,
) -> Result<(), TranscodeError> {
    // All rungs get the same frames, so the keyframe decision is made per
    // frame on the first rung and applied to all; so is a live ladder's
    // degradation, which changes only at a keyframe (every rung cuts its
    // segment there).
    let mut decisions: Vec<FrameDecision> = Vec::new();
    for (i, feed) in feeds.iter().enumerate() {
        let mut n = 0usize;
        let mut filtered = ff::frame::Video::empty();
        while let Some(mut sink) = graph.get(&feed.sink) {
            if sink.sink().frame(&mut filtered).is_err() {
                break;
            }
            let pts = filtered.pts().unwrap_or(0);
            let seconds = pts as f64 * f64::from(feed.time_base);
            // Every rung gets the same frames, so each drops the same ones.
            if seconds + 1e-6 < state.window.0 - state.warm_up {
                continue; // Decoded from the keyframe before a chunk's start.
            }
            if state.window.1.is_some_and(|until| seconds + 1e-6 >= until) {
                state.window_done = true;
                continue;
            }
            if i == 0 {
                decisions.push(state.decide(seconds));
            }
            let decision = decisions.get(n).copied().unwrap_or_default();
            n += 1;
            let (before, now) = (decision.before, decision.now);
            let to_rung = |message: ToRung| {
                feed.frames
                    .send(message)
                    .map_err(|_| TranscodeError::Internal("a rung encoder stopped".to_owned()))
            };
            if before.faster_preset != now.faster_preset {
                if let Some(preset) = state.preset_for(now) {
                    to_rung(ToRung::Preset(preset.to_owned()))?;
                }
            }
            if i == 0 {
                if before.top_rung_dropped && decision.force {
                    // The segment the top rung sat out ends here.
                    to_rung(ToRung::Skip(pts))?;
                }
                if now.top_rung_dropped {
                    if !before.top_rung_dropped {
                        to_rung(ToRung::Pause(pts))?;
                    }
                    continue;
                }
            }
            if decision.odd && !decision.force && now.half_frame_rate {
                continue; // Degraded: this rung encodes every other frame.
            }
            filtered.set_kind(if decision.force {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            });
            // Hand the frame over (its buffers are shared, not copied).
            let frame = std::mem::replace(&mut filtered, ff::frame::Video::empty());
            to_rung(ToRung::Frame(frame))?;
        }
    }
    Ok(())
}

/// What the rungs do with one frame.
#[derive(Debug, Clone, Copy, Default)]
struct FrameDecision {
    /// An IDR frame (a GOP or short-start boundary).
    force: bool,
    /// An odd frame (skipped at half frame rate).
    odd: bool,
    /// The degradation before this frame, and from it on.
    before: Degradation,
    now: Degradation,
}

impl LoopState {
    /// Decides the frame at `seconds` for every rung.
    fn decide(&mut self, seconds: f64) -> FrameDecision {
        // Force an IDR on the first frame at or after each GOP boundary,
        // and each boundary of the short start.
        let early = self
            .early_keyframes
            .first()
            .is_some_and(|at| seconds + 1e-6 >= *at);
        if early {
            self.early_keyframes.retain(|at| *at > seconds + 1e-6);
        }
        let on_grid = seconds + 1e-6 >= self.next_keyframe;
        if on_grid {
            while self.next_keyframe <= seconds + 1e-6 {
                self.next_keyframe += self.gop_seconds;
            }
        }
        self.frame_index += 1;
        let before = self.applied;
        if on_grid {
            if let Some(pacer) = &self.pacer {
                self.applied = pacer.level();
            }
        }
        FrameDecision {
            force: early || on_grid,
            odd: self.frame_index % 2 == 1,
            before,
            now: self.applied,
        }
    }

    /// The x264 preset of rungs at `level`.
    fn preset_for(&self, level: Degradation) -> Option<&str> {
        if level.faster_preset {
            self.presets.1.as_deref()
        } else {
            Some(&self.presets.0)
        }
    }
}

/// The degradation steps a live ladder can take, in order. Switching a
/// preset or bringing a dropped rung back starts a new encoder at a
/// keyframe: with B-frames its first frames would decode before the old
/// one's last, so those steps need none. A low-latency ladder keeps its top
/// rung (a rendition that stops publishing parts stalls blocking reloads).
fn degradation_steps(
    config: &TranscodeConfig,
    encoder: VideoEncoder,
    rungs: usize,
) -> Vec<super::pacer::Step> {
    use super::pacer::Step;
    let new_encoder_at_keyframes = config.b_frames == 0;
    let mut steps = Vec::new();
    if new_encoder_at_keyframes
        && encoder == VideoEncoder::Libx264
        && config.degraded_preset.is_some()
    {
        steps.push(Step::FasterPreset);
    }
    if new_encoder_at_keyframes && rungs >= 2 && config.part_duration.is_none() {
        steps.push(Step::TopRungDropped);
    }
    steps.push(Step::HalfFrameRate);
    steps
}

fn drain_audio(
    source: &mut AudioSource,
    graph: &mut ff::filter::Graph,
    out: &mut AudioRendition,
    state: &mut LoopState,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let mut frame = ff::frame::Audio::empty();
    let origin = (state.origin_seconds / f64::from(source.time_base)).round() as i64;
    let offset = (state.timeline_offset / f64::from(source.time_base)).round() as i64;
    while source.decoder.receive_frame(&mut frame).is_ok() {
        let Some(ts) = frame.timestamp().or(frame.pts()) else {
            continue;
        };
        frame.set_pts(Some(ts - origin + offset));
        if frame.channel_layout().bits() == 0 {
            frame.set_channel_layout(ff::ChannelLayout::default(i32::from(frame.channels())));
        }
        state.audio_frames += 1;
        let seconds = (ts - origin) as f64 * f64::from(source.time_base)
            + frame.samples() as f64 / f64::from(frame.rate().max(1));
        state.progress(seconds, events)?;
        let Some(mut input) = graph.get("in") else {
            return Err(TranscodeError::Internal(
                "audio graph has no input".to_owned(),
            ));
        };
        input
            .source()
            .add(&frame)
            .map_err(|e| TranscodeError::internal("filtering audio", e))?;
        pull_audio(graph, out, events)?;
    }
    Ok(())
}

fn pull_audio(
    graph: &mut ff::filter::Graph,
    out: &mut AudioRendition,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let mut filtered = ff::frame::Audio::empty();
    while let Some(mut sink) = graph.get("out") {
        unref(&mut filtered);
        if sink.sink().frame(&mut filtered).is_err() {
            break;
        }
        if let AudioPath::Encode { encoder, .. } = &mut out.path {
            encoder
                .send_frame(&filtered)
                .map_err(|e| TranscodeError::internal("encoding audio", e))?;
        }
        receive_audio_packets(out, events)?;
    }
    Ok(())
}

fn receive_audio_packets(
    out: &mut AudioRendition,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let AudioPath::Encode { encoder, priming } = &mut out.path else {
        return Ok(());
    };
    let mut packet = ff::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        let Some(pts) = packet.pts() else { continue };
        let Some(data) = packet.data() else { continue };
        let pts = pts + *priming;
        if pts < 0 {
            continue;
        }
        let duration = u32::try_from(packet.duration())
            .ok()
            .filter(|d| *d > 0)
            .unwrap_or(AAC_FRAME);
        let sample = Sample {
            pts,
            dts: pts,
            duration,
            keyframe: true,
            data: Bytes::copy_from_slice(data),
        };
        package_audio(&mut out.segmenter, &mut out.infos, sample, events)?;
    }
    Ok(())
}

/// Whether the audio rendition is `source`'s packets as they are: live,
/// and the source already in the rendition's format.
fn copies_audio(config: &TranscodeConfig, source: &AudioSource) -> bool {
    config.live && AudioFormat::of(&source.decoder).copyable_as(config.audio_bitrate)
}

/// Packages a source audio packet as it is (the copy path).
fn copy_audio(
    packet: &ff::Packet,
    time_base: ff::Rational,
    out: &mut AudioRendition,
    state: &mut LoopState,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let AudioPath::Copy(clock) = &mut out.path else {
        return Ok(());
    };
    let (Some(stamp), Some(data)) = (packet.pts().or(packet.dts()), packet.data()) else {
        return Ok(());
    };
    // Seconds from the first video frame; audio before it is cut, as the
    // encode path's resampler does, but for the frame it falls in, which
    // starts with it (moved by less than a frame).
    let frame_seconds = f64::from(AAC_FRAME) / f64::from(AUDIO_RATE);
    let seconds = stamp as f64 * f64::from(time_base) - state.origin_seconds;
    if seconds <= -frame_seconds {
        return Ok(());
    }
    let seconds = seconds.max(0.0);
    state.audio_frames += 1;
    state.progress(seconds + frame_seconds, events)?;
    let stamped = ((seconds + state.timeline_offset) * f64::from(AUDIO_RATE)).round() as i64;
    let Some(pts) = clock.place(stamped) else {
        return Ok(());
    };
    let sample = Sample {
        pts,
        dts: pts,
        duration: AAC_FRAME,
        keyframe: true,
        data: Bytes::copy_from_slice(data),
    };
    package_audio(&mut out.segmenter, &mut out.infos, sample, events)
}

/// Hands an AAC frame to the audio segmenter and emits what it cuts.
fn package_audio(
    segmenter: &mut Segmenter,
    infos: &mut Vec<packager::SegmentInfo>,
    sample: Sample,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let closed = segmenter
        .push(sample)
        .map_err(|e| packager_error("packaging audio", e))?;
    emit_parts(AUDIO_RENDITION, segmenter.take_parts(), events)?;
    if let Some(segment) = closed {
        infos.push(segment.info());
        emit_segment(AUDIO_RENDITION, segment, events)?;
    }
    Ok(())
}

/// A read that failed below FFmpeg (storage, not the media).
fn read_failure(error: std::io::Error) -> TranscodeError {
    TranscodeError::Internal(format!("reading the source: {error}"))
}

/// Keeps the first read error of the reader it wraps, which FFmpeg's custom
/// I/O reduces to an error code.
struct FailureRecorder<R> {
    inner: R,
    failure: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl<R> FailureRecorder<R> {
    fn record<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(error) = &result {
            if let Ok(mut first) = self.failure.lock() {
                if first.is_none() {
                    *first = Some(std::io::Error::new(error.kind(), error.to_string()));
                }
            }
        }
        result
    }
}

impl<R: std::io::Read> std::io::Read for FailureRecorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let result = self.inner.read(buf);
        self.record(result)
    }
}

// Seeks only move a position (an invalid one is FFmpeg's to handle).
impl<R: std::io::Seek> std::io::Seek for FailureRecorder<R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Threads for rung `index`'s encoder: the ladder's encoders share the
/// machine, so each gets the cores (times 1.5, as x264's own `auto` counts
/// them) in proportion to its rung's pixels, at least one, instead of every
/// encoder taking `auto` for itself (16 frame threads for a 4-rung ladder on
/// 2 cores). Fewer frame threads each: less synchronisation and fewer
/// frames held; measured by `cascade bench ladder` on the 60 s 1080p source,
/// 2 cores: wall 0.942x -> 0.872x the CLI's, CPU 0.967x -> 0.917x, peak RSS
/// 519 -> 410 MB, PSNR-Y unchanged. Live keeps `auto` (sliced threads).
fn encoder_threads(sizes: &[(u32, u32)], index: usize, live: bool, cores: usize) -> Option<u32> {
    if live {
        return None;
    }
    let cores = cores as f64;
    let pixels = |(w, h): (u32, u32)| f64::from(w) * f64::from(h);
    let total: f64 = sizes.iter().copied().map(pixels).sum();
    let (width, height) = *sizes.get(index)?;
    let share = pixels((width, height)) / total.max(1.0);
    Some(((cores * 1.5 * share).round() as u32).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff::codec::packet::{Mut, Ref};

    #[test]
    fn encoders_share_the_cores_by_their_rungs_pixels() {
        let ladder = [(1920, 1080), (1280, 720), (854, 480), (426, 240)];
        let threads = |cores| -> Vec<Option<u32>> {
            (0..ladder.len())
                .map(|i| encoder_threads(&ladder, i, false, cores))
                .collect()
        };
        assert_eq!(threads(2), vec![Some(2), Some(1), Some(1), Some(1)]);
        assert_eq!(threads(16), vec![Some(14), Some(6), Some(3), Some(1)]);
        assert_eq!(encoder_threads(&ladder, 0, true, 16), None);
    }

    /// The number of references to `packet`'s buffer.
    fn references(packet: &ff::Packet) -> i32 {
        // SAFETY: the packet is valid; its buffer pointer is null or a live AVBufferRef.
        unsafe {
            let buf = (*packet.as_ptr()).buf;
            if buf.is_null() {
                0
            } else {
                ff::ffi::av_buffer_get_ref_count(buf)
            }
        }
    }

    #[test]
    fn reading_the_next_packet_releases_the_previous_one() {
        ff::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source.mp4");
        let status = std::process::Command::new("ffmpeg")
            .args([
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=64x64:rate=10",
            ])
            .args(["-t", "1", "-c:v", "libx264", "-preset", "ultrafast"])
            .arg(&path)
            .status()
            .expect("the ffmpeg CLI (scripts/deps.sh installs it)");
        assert!(status.success());
        let mut input = ff::format::input(&path).unwrap();
        let mut packet = ff::Packet::empty();
        read_packet(&mut input, &mut packet).unwrap();
        // Someone else (a decoder, say) holds the first packet's buffer too.
        let mut held = ff::Packet::empty();
        // SAFETY: both packets are valid; av_packet_ref adds a reference.
        let referenced = unsafe { ff::ffi::av_packet_ref(held.as_mut_ptr(), packet.as_ptr()) };
        assert_eq!(referenced, 0);
        assert_eq!(references(&held), 2);
        read_packet(&mut input, &mut packet).unwrap();
        // The reader let go of it: the other holder's reference is the last,
        // so the buffer is freed when it goes (reading into the same packet
        // without releasing it first would leak every packet of the source).
        assert_eq!(references(&held), 1);
    }

    #[test]
    fn a_ladder_takes_the_steps_it_can() {
        use super::super::pacer::Step;
        let live = cascade_platform::config::LiveConfig::default();
        let config = live.transcode(&TranscodeConfig::default());
        let steps =
            |config: &TranscodeConfig, encoder, rungs| degradation_steps(config, encoder, rungs);
        assert_eq!(
            steps(&config, VideoEncoder::Libx264, 3),
            [
                Step::FasterPreset,
                Step::TopRungDropped,
                Step::HalfFrameRate
            ]
        );
        // One rung has no top to drop; a hardware encoder has no x264 preset.
        assert_eq!(
            steps(&config, VideoEncoder::Libx264, 1),
            [Step::FasterPreset, Step::HalfFrameRate]
        );
        assert_eq!(
            steps(&config, VideoEncoder::Nvenc, 3),
            [Step::TopRungDropped, Step::HalfFrameRate]
        );
        // Low latency keeps its top rung; B-frames leave only the frame rate.
        let low_latency = TranscodeConfig {
            part_duration: Some(Duration::from_millis(333)),
            ..config.clone()
        };
        assert_eq!(
            steps(&low_latency, VideoEncoder::Libx264, 3),
            [Step::FasterPreset, Step::HalfFrameRate]
        );
        let b_frames = TranscodeConfig {
            b_frames: 2,
            ..config
        };
        assert_eq!(
            steps(&b_frames, VideoEncoder::Libx264, 3),
            [Step::HalfFrameRate]
        );
    }

    /// The x264 settings a segment's encoder wrote (the SEI a new encoder
    /// puts in its first frame), if the segment starts with one.
    fn x264_settings(segment: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(segment);
        let at = text.find("x264 - core")?;
        let end = text[at..].find('\0').map_or(text.len(), |end| at + end);
        Some(text[at..end].to_owned())
    }

    /// A live ladder taken down and back up by a drill (a file decodes far
    /// faster than real time, so the lag never decides): the faster preset
    /// takes over at a keyframe without touching the init segment, the top
    /// rung sits out whole segments with the numbers and times the others
    /// use, and what it publishes decodes in an independent decoder.
    #[test]
    fn a_drilled_live_ladder_switches_presets_and_drops_its_top_rung_at_keyframes() {
        use super::super::pacer::{DrillStep, Step};
        ff::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.mp4");
        let status = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=960x540:rate=30")
            .args([
                "-t",
                "12",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "15",
            ])
            .arg(&source)
            .status()
            .expect("the ffmpeg CLI (scripts/deps.sh installs it)");
        assert!(status.success());

        // On `medium` (three reference frames to superfast's one).
        let live = cascade_platform::config::LiveConfig {
            segment_duration: Duration::from_secs(1),
            preset: "medium".to_owned(),
            ..Default::default()
        };
        let config = live.transcode(&TranscodeConfig::default());
        assert_eq!(config.degraded_preset.as_deref(), Some("superfast"));
        let drill = |secs: u64, step| DrillStep {
            at: Duration::from_secs(secs),
            step,
        };
        let pacer = Pacer::new(live.segment_duration).with_drill(vec![
            drill(2, Some(Step::FasterPreset)),
            drill(4, Some(Step::TopRungDropped)),
            drill(7, Some(Step::FasterPreset)),
            drill(9, None),
        ]);
        let (events, mut received) = mpsc::channel(64);
        let collector = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(event) = received.blocking_recv() {
                seen.push(event);
            }
            seen
        });
        let cancel = AtomicBool::new(false);
        let input = ff::format::input(&source).unwrap();
        run_input(
            input,
            &config,
            VideoEncoder::Libx264,
            &events,
            &cancel,
            0.0,
            Some(pacer),
        )
        .unwrap();
        drop(events);
        let seen = collector.join().unwrap();

        let mut inits = std::collections::BTreeMap::new();
        let mut segments: std::collections::BTreeMap<String, Vec<(packager::SegmentInfo, Bytes)>> =
            Default::default();
        let mut gaps: Vec<(String, packager::SegmentInfo)> = Vec::new();
        let mut levels = Vec::new();
        for event in seen {
            match event {
                Event::Init {
                    rendition, bytes, ..
                } => {
                    inits.insert(rendition, bytes);
                }
                Event::Segment {
                    rendition,
                    info,
                    bytes,
                    ..
                } => segments.entry(rendition).or_default().push((info, bytes)),
                Event::Gap { rendition, info } => gaps.push((rendition, info)),
                Event::Degraded { level, .. } => levels.push(level.as_str()),
                _ => {}
            }
        }
        assert_eq!(
            levels,
            ["faster_preset", "top_rung_dropped", "faster_preset", "none"]
        );
        let names: Vec<&String> = inits.keys().collect();
        assert_eq!(names, ["240p", "480p", "540p"].iter().collect::<Vec<_>>());
        let numbers = |name: &str| -> Vec<u64> {
            segments[name]
                .iter()
                .map(|(info, _)| info.sequence_number)
                .collect()
        };
        assert_eq!(numbers("240p"), (1..=12).collect::<Vec<u64>>());
        assert_eq!(numbers("540p"), [1, 2, 3, 4, 8, 9, 10, 11, 12]);
        // The top rung sits out 4-7 s: the numbers and times the 240p rung's
        // segments have there.
        let lower: Vec<packager::SegmentInfo> = segments["240p"][4..7]
            .iter()
            .map(|(info, _)| packager::SegmentInfo { size: 0, ..*info })
            .collect();
        assert!(gaps.iter().all(|(name, _)| name == "540p"), "{gaps:?}");
        assert_eq!(
            gaps.iter().map(|(_, info)| *info).collect::<Vec<_>>(),
            lower
        );
        // Every segment, both rungs, starts and ends on the 1 s grid.
        for (info, _) in segments.values().flatten() {
            assert_eq!(
                (info.start % 90_000, info.duration),
                (0, 90_000),
                "{info:?}"
            );
        }
        // The preset changed where the drill said, for every rung; the
        // returning top rung came back on the preset of the moment.
        let preset_of = |name: &str, number: u64| {
            let (_, bytes) = segments[name]
                .iter()
                .find(|(info, _)| info.sequence_number == number)
                .unwrap();
            x264_settings(bytes).map(|settings| settings.contains(" subme=1 "))
        };
        for name in ["240p", "480p", "540p"] {
            assert_eq!(preset_of(name, 1), Some(false), "{name}: medium first");
            assert_eq!(preset_of(name, 2), None, "{name}: same encoder");
            assert_eq!(preset_of(name, 3), Some(true), "{name}: superfast from 2 s");
            assert_eq!(preset_of(name, 10), Some(false), "{name}: medium from 9 s");
        }
        assert_eq!(preset_of("540p", 8), Some(true), "back on superfast at 7 s");
        assert_eq!(preset_of("240p", 8), None);
        // What the top rung published decodes, frame by frame, without an
        // error: its init segment, then its segments.
        let top = dir.path().join("540p.mp4");
        let mut bytes = inits["540p"].to_vec();
        for (_, segment) in &segments["540p"] {
            bytes.extend_from_slice(segment);
        }
        std::fs::write(&top, bytes).unwrap();
        let output = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(&top)
            .output()
            .unwrap();
        assert!(
            output.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "270");
    }
}
