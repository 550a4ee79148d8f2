//! `cascade qa`: checks what the pipeline published, fetched over HTTP the
//! way a player does, against the reference media it was made from.
//!
//! Reads HLS (RFC 8216, master and media playlists via m3u8-rs) and DASH
//! (ISO/IEC 23009-1 MPD, SegmentTemplate addressing) presentations of CMAF
//! tracks (ISO/IEC 23000-19) or MPEG-TS segments (ISO/IEC 13818-1, muxed
//! audio and video included), made by Cascade or anything else, demuxes and
//! decodes them with the FFmpeg libraries and, as a second and independent
//! reader, GStreamer (its MP4, MPEG-TS, HLS and DASH demuxers), and reports
//! structure, timing, quality (PSNR-Y, SSIM-Y; VMAF when the FFmpeg build
//! has libvmaf) and bitrate checks, against an expected ladder when one is
//! given, as a terminal table, a JSON report (schema in docs/qa.md) and a
//! self-contained HTML page. The workers' publish gate runs the same checks
//! on a version read from the object store before it is published
//! ([`gate`]), judging pictures on sampled frames ([`sampled`]).

pub mod checks;
pub mod dash;
pub mod fetch;
#[cfg(test)]
mod fuzz;
pub mod gst_reader;
pub mod hls;
pub mod html;
pub mod ladder;
pub mod loudness;
pub mod media;
pub mod presentation;
pub mod quality;
pub mod report;
pub mod sampled;
pub mod table;
pub mod thresholds;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;

use crate::fetch::{Fetched, Fetcher};
use crate::ladder::ExpectedLadder;
use crate::media::{Container, ReferenceMedia, RenditionMedia};
use crate::presentation::RenditionSpec;
use crate::report::{
    Measured, MediaKind, Quality, ReferenceInfo, RenditionReport, Report, SegmentReport, Status,
    VmafAvailability, SCHEMA_VERSION,
};
use crate::thresholds::Thresholds;

/// Why the tool could not run at all (exit status 2), as opposed to a failed check.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CannotRun(pub String);

/// Progress messages for a person watching a long run.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Debug, Clone)]
pub enum Progress {
    Phase(String),
    Frames {
        rendition: String,
        done: u64,
        total: u64,
    },
}

pub struct Options {
    pub url: String,
    pub reference: PathBuf,
    pub thresholds: Thresholds,
    /// The ladder and rate control the outputs were made with; `None` for a
    /// presentation checked on what it declares and contains alone.
    pub ladder: Option<ExpectedLadder>,
    /// Skip PSNR/SSIM (structure, timing and bitrate only).
    pub skip_quality: bool,
    /// Which readers decode the outputs; `None`: both where GStreamer is present.
    pub readers: Option<Readers>,
    pub request_timeout: Duration,
}

/// Which media readers decode the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// FFmpeg's demuxers and decoders: every structure, timing, quality and
    /// audio check.
    Ffmpeg,
    /// GStreamer's alone: the checks that need no demuxer (manifests, bytes,
    /// declared bandwidth) and what GStreamer decodes.
    Gstreamer,
    /// Both, and whether they agree.
    Both,
}

impl Readers {
    fn ffmpeg(self) -> bool {
        self != Self::Gstreamer
    }

    fn gstreamer(self) -> bool {
        self != Self::Ffmpeg
    }
}

/// Checks that need FFmpeg's reading; with `--reader gstreamer` they are
/// skipped.
const FFMPEG_CHECKS: &[&str] = &[
    "structure.init_segment",
    "structure.segment_boxes",
    "structure.segment_durations",
    "structure.codecs",
    "structure.resolution",
    "structure.frame_rate",
    "timing.keyframe_starts",
    "timing.segment_alignment",
    "timing.duration",
    "timing.frame_count",
    "timing.presentation_duration",
    "timing.av_offset",
    "quality.psnr_top",
    "quality.ssim_top",
    "quality.measured",
    "quality.combing",
    "quality.rung_step",
    "quality.vmaf",
    "audio.loudness",
    "audio.format",
];

/// A rendition with everything fetched and measured about it.
#[derive(Debug, Clone)]
pub struct Analysed {
    pub spec: RenditionSpec,
    /// The init segment and media segments joined, as demuxed and decoded.
    pub file: PathBuf,
    /// How the segments are packaged (from their first bytes).
    pub container: Container,
    /// An audio track read from a muxed variant's segments: that variant's
    /// name. Its segments, bytes and CODECS are the variant's.
    pub muxed_in: Option<String>,
    pub init: Option<Fetched>,
    /// Byte ranges of the media segments in `file`.
    pub ranges: Vec<(u64, u64)>,
    pub segments: Vec<SegmentReport>,
    /// Per-segment box problems (index, problem).
    pub box_problems: Vec<(usize, String)>,
    pub media: Result<RenditionMedia, String>,
    pub quality: Option<Result<Quality, String>>,
    pub measured: Measured,
    /// GStreamer's decoding of the same bytes, when that reader runs.
    pub gstreamer: Option<gst_reader::Reading>,
}

pub async fn run(options: Options, progress: ProgressSink) -> Result<Report, CannotRun> {
    let started = Instant::now();
    let url = Url::parse(&options.url)
        .map_err(|e| CannotRun(format!("{:?} is not a URL: {e}", options.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CannotRun(format!(
            "{url}: only http and https URLs are fetched"
        )));
    }
    progress(Progress::Phase("reading the reference".to_owned()));
    let reference_path = options.reference.clone();
    let reference = tokio::task::spawn_blocking(move || media::analyse_reference(&reference_path))
        .await
        .map_err(|e| CannotRun(format!("reading the reference: {e}")))?
        .map_err(CannotRun)?;
    let fetcher = Fetcher::new(options.request_timeout).map_err(CannotRun)?;
    check(
        Checking {
            url,
            fetcher,
            reference,
            reference_path: Some(options.reference.clone()),
            reference_name: options.reference.display().to_string(),
            ladder: options.ladder,
            thresholds: options.thresholds,
            skip_quality: options.skip_quality,
            readers: options.readers,
            request_timeout: options.request_timeout,
        },
        started,
        progress,
    )
    .await
}

/// What the publish gate checks: a version just stored, before it is served.
pub struct GateOptions {
    /// The stored object store holding the version.
    pub store: cascade_platform::ObjectStore,
    /// The version's manifests (the HLS master playlist, the DASH MPD):
    /// each is checked by its own rules; segments they share are read once.
    pub manifests: Vec<cascade_schemas::ObjectKey>,
    /// The source as FFmpeg's demuxer reads it (the worker reads the stored
    /// source once more, by ranged GETs: packets only, no decoding), read
    /// while the presentations are.
    pub reference: futures::future::BoxFuture<'static, Result<ReferenceMedia, String>>,
    /// The source again, for the frames sampled for PSNR and SSIM
    /// (`sampled.rs`); `None`: no quality measured.
    pub source: Option<Arc<dyn sampled::SourceOpener>>,
    /// How the source is named in the report.
    pub reference_name: String,
    /// The ladder planned for the source; `None`: not checked (a live
    /// recording's rungs are the broadcast's).
    pub ladder: Option<ExpectedLadder>,
    pub thresholds: Thresholds,
}

/// The publish gate's checks of a stored version: each manifest's
/// presentation read from storage by FFmpeg (structure, alignment, timing,
/// codecs, declared bandwidth, bit-rate caps, A/V offset) against the
/// source's reading, one report per manifest, and the pictures on sampled
/// frames ([`sampled`]) when `source` is given. No second reader, no VMAF,
/// combing or loudness: it runs before every publish. The source is read
/// while the presentations are, and a segment list that both manifests
/// name is fetched and demuxed once.
pub async fn gate(options: GateOptions) -> Result<Vec<Report>, CannotRun> {
    let started = Instant::now();
    let fetcher = Fetcher::store(options.store);
    let scratch = scratch_dir()?;
    let presentations = async {
        let mut read = Vec::new();
        for manifest in &options.manifests {
            let url = Fetcher::store_url(manifest).map_err(CannotRun)?;
            let presentation = read_presentation(
                &url,
                &fetcher,
                Readers::Ffmpeg,
                scratch.path(),
                &read,
                &|_| {},
            )
            .await?;
            read.push((url, presentation));
        }
        Ok::<_, CannotRun>(read)
    };
    let (reference, presentations) = tokio::join!(options.reference, presentations);
    let reference = reference.map_err(CannotRun)?;
    let mut presentations = presentations?;
    let measured = match (options.source, &reference.video) {
        (Some(source), Some(video)) => {
            sample_quality(source, video.clone(), &mut presentations).await
        }
        _ => false,
    };
    let thresholds = if measured {
        options.thresholds.for_sampled_frames()
    } else {
        options.thresholds.clone()
    };
    presentations
        .into_iter()
        .map(|(url, mut read)| {
            read.vmaf = VmafAvailability {
                available: false,
                note: "not computed by the publish gate (cascade qa computes it)".to_owned(),
            };
            Ok(evaluate(
                &url,
                read,
                &reference,
                &options.reference_name,
                options.ladder.as_ref(),
                &thresholds,
                !measured,
                Readers::Ffmpeg,
                None,
                loudness::Loudness::default(),
                started,
            ))
        })
        .collect()
}

/// PSNR-Y and SSIM-Y on sampled frames of the first presentation's CMAF
/// video renditions, given to every presentation's renditions made of the
/// same bytes. `false` when the source could not be sampled (the quality
/// checks are then skipped, not failed: the source is the creator's).
async fn sample_quality(
    source: Arc<dyn sampled::SourceOpener>,
    video: media::ReferenceVideo,
    presentations: &mut [(Url, ReadPresentation)],
) -> bool {
    let Some((_, first)) = presentations.first() else {
        return false;
    };
    let videos: Vec<(&Analysed, &RenditionMedia)> = first
        .analysed
        .iter()
        .filter(|a| a.spec.kind == MediaKind::Video && a.container == Container::Cmaf)
        .filter(|a| a.muxed_in.is_none())
        .filter_map(|a| Some((a, a.media.as_ref().ok()?)))
        .collect();
    let Some(&(_, top)) = videos.first() else {
        return false;
    };
    let instants = sampled::instants(top);
    let rung_start = top.start().unwrap_or(0.0);
    let rungs: Vec<sampled::SampledRung> = videos
        .iter()
        .map(|(a, media)| sampled::SampledRung {
            name: a.spec.name.clone(),
            file: a.file.clone(),
            ranges: a.ranges.clone(),
            gops: media.gops.clone(),
            frame_duration: media.frame_duration,
        })
        .collect();
    let files: Vec<PathBuf> = rungs.iter().map(|rung| rung.file.clone()).collect();
    let results = tokio::task::spawn_blocking(move || {
        sampled::measure(source.as_ref(), &video, rung_start, &rungs, &instants)
    })
    .await
    .unwrap_or_else(|e| Err(format!("sampling: {e}")));
    let Ok(results) = results else {
        return false;
    };
    for (_, read) in presentations.iter_mut() {
        for rendition in &mut read.analysed {
            if let Some(i) = files.iter().position(|f| *f == rendition.file) {
                rendition.quality = Some(results[i].clone());
            }
        }
    }
    true
}

/// One check run's inputs, however the presentation and reference are read.
struct Checking {
    url: Url,
    fetcher: Fetcher,
    reference: ReferenceMedia,
    /// The reference file, when there is one: loudness and quality need it.
    reference_path: Option<PathBuf>,
    reference_name: String,
    ladder: Option<ExpectedLadder>,
    thresholds: Thresholds,
    skip_quality: bool,
    readers: Option<Readers>,
    request_timeout: Duration,
}

async fn check(
    options: Checking,
    started: Instant,
    progress: ProgressSink,
) -> Result<Report, CannotRun> {
    let (url, fetcher, reference) = (&options.url, &options.fetcher, &options.reference);
    let (readers, gstreamer_absent) = match options.readers {
        Some(Readers::Ffmpeg) => (Readers::Ffmpeg, None),
        Some(chosen) => {
            gst_reader::available().map_err(|e| CannotRun(format!("--reader: {e}")))?;
            (chosen, None)
        }
        None => match gst_reader::available() {
            Ok(()) => (Readers::Both, None),
            Err(absent) => (Readers::Ffmpeg, Some(absent)),
        },
    };
    let scratch = scratch_dir()?;
    let mut read =
        read_presentation(url, fetcher, readers, scratch.path(), &[], &*progress).await?;
    let vmaf_available = read.vmaf.available;
    read.gstreamer = if readers.gstreamer() {
        progress(Progress::Phase(
            "reading with GStreamer (qtdemux / tsdemux, hlsdemux2 / dashdemux2)".to_owned(),
        ));
        Some(read_with_gstreamer(&mut read.analysed, url, options.request_timeout).await)
    } else {
        None
    };
    let quality_reference = options
        .reference_path
        .as_ref()
        .filter(|_| !options.skip_quality);
    if let (Some(path), true) = (quality_reference, readers.ffmpeg()) {
        if let Some(video) = &reference.video {
            measure_quality(
                path,
                video,
                &mut read.analysed,
                scratch.path(),
                vmaf_available,
                &progress,
            )
            .await?;
        }
    }

    // Loudness compares decoded audio with the reference file's: `cascade qa`
    // only (the gate has no reference file and decodes no audio).
    let loudness = if readers.ffmpeg() && options.reference_path.is_some() {
        progress(Progress::Phase("measuring loudness".to_owned()));
        measure_loudness(
            options.reference_path.as_deref(),
            reference.audio.is_some(),
            &read.analysed,
        )
        .await
        .map_err(CannotRun)?
    } else {
        loudness::Loudness::default()
    };

    progress(Progress::Phase("checking".to_owned()));
    Ok(evaluate(
        url,
        read,
        reference,
        &options.reference_name,
        options.ladder.as_ref(),
        &options.thresholds,
        options.skip_quality,
        readers,
        gstreamer_absent.as_deref(),
        loudness,
        started,
    ))
}

/// A scratch directory for the joined rendition files, removed when dropped.
fn scratch_dir() -> Result<tempfile::TempDir, CannotRun> {
    tempfile::Builder::new()
        .prefix("cascade-qa-")
        .tempdir()
        .map_err(|e| CannotRun(format!("cannot create a scratch directory: {e}")))
}

/// One presentation as read: its manifests' view and every rendition
/// fetched and demuxed (joined files under the caller's scratch directory).
struct ReadPresentation {
    presentation: presentation::Presentation,
    analysed: Vec<Analysed>,
    vmaf: VmafAvailability,
    /// GStreamer's reading of the whole presentation, when that reader runs.
    gstreamer: Option<gst_reader::Reading>,
}

/// A rendition that an earlier presentation already fetched and demuxed:
/// one made of the same objects (the init segment and the media segments,
/// in order), as an HLS playlist and a DASH MPD of one version are.
fn already_read<'a>(
    earlier: &'a [(Url, ReadPresentation)],
    spec: &RenditionSpec,
) -> Option<&'a Analysed> {
    earlier
        .iter()
        .flat_map(|(_, read)| &read.analysed)
        .filter(|a| a.muxed_in.is_none() && a.spec.init == spec.init)
        .find(|a| {
            a.spec.segments.len() == spec.segments.len()
                && a.spec
                    .segments
                    .iter()
                    .zip(&spec.segments)
                    .all(|(x, y)| x.url == y.url)
        })
}

/// Reads one presentation; renditions that `earlier` presentations read
/// are taken from them, not fetched again.
async fn read_presentation(
    url: &Url,
    fetcher: &Fetcher,
    readers: Readers,
    scratch: &Path,
    earlier: &[(Url, ReadPresentation)],
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<ReadPresentation, CannotRun> {
    progress(Progress::Phase(format!("fetching {url}")));
    let manifest = fetcher.get(url).await;
    if manifest.status == 0 {
        return Err(CannotRun(format!(
            "cannot reach {url}: {}",
            manifest.error.unwrap_or_default()
        )));
    }
    if let Some(error) = &manifest.error {
        return Err(CannotRun(format!("{url}: {error}")));
    }
    let mut presentation = if looks_like_mpd(url, &manifest.body) {
        dash::load(url, &manifest.body)
    } else {
        hls::load(fetcher, url, &manifest.body).await
    };
    let format = match presentation.format {
        report::Format::Hls => "hls",
        report::Format::Dash => "dash",
    };

    let mut analysed = Vec::new();
    let specs = std::mem::take(&mut presentation.renditions);
    for (i, spec) in specs.into_iter().enumerate() {
        let rendition = match already_read(earlier, &spec) {
            Some(read) => reread(read, spec),
            None => {
                progress(Progress::Phase(format!(
                    "fetching {} ({} segments)",
                    spec.name,
                    spec.segments.len()
                )));
                let file = scratch.join(format!("{format}-rendition-{i}"));
                fetch_and_demux(fetcher, spec, file, readers).await
            }
        };
        let muxed_audio = rendition.media.as_ref().is_ok_and(|m| m.muxed_audio)
            && rendition.spec.audio_group.is_none();
        if muxed_audio {
            let audio = muxed_audio_of(&rendition).await;
            analysed.push(rendition);
            analysed.push(audio);
        } else {
            analysed.push(rendition);
        }
    }

    let vmaf_available = quality::vmaf_available();
    let vmaf = VmafAvailability {
        available: vmaf_available,
        note: if vmaf_available {
            "VMAF computed with FFmpeg's libvmaf filter (default model)".to_owned()
        } else {
            "this FFmpeg build has no libvmaf filter (Debian's FFmpeg is built without it)"
                .to_owned()
        },
    };
    Ok(ReadPresentation {
        presentation,
        analysed,
        vmaf,
        gstreamer: None,
    })
}

/// A rendition read for another manifest, as `spec` (this manifest's
/// names and declared durations) sees it: the bytes and the demuxed media
/// are the same, the per-segment report and the measures follow `spec`.
fn reread(read: &Analysed, spec: RenditionSpec) -> Analysed {
    let mut rendition = read.clone();
    for (report, segment) in rendition.segments.iter_mut().zip(&spec.segments) {
        report.uri = segment.uri.clone();
        report.declared_duration_s = segment.declared_duration_s;
    }
    rendition.measured = measure(&spec, &rendition.segments, rendition.media.as_ref().ok());
    rendition.spec = spec;
    rendition
}

/// The checks over a read presentation, as a report.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    url: &Url,
    read: ReadPresentation,
    reference: &ReferenceMedia,
    reference_name: &str,
    ladder: Option<&ExpectedLadder>,
    thresholds: &Thresholds,
    skip_quality: bool,
    readers: Readers,
    gstreamer_absent: Option<&str>,
    loudness: loudness::Loudness,
    started: Instant,
) -> Report {
    let ReadPresentation {
        presentation,
        analysed,
        vmaf,
        gstreamer: presentation_reading,
    } = read;
    let checks = checks::evaluate(&checks::Inputs {
        loudness: &loudness,
        presentation: &presentation,
        renditions: &analysed,
        reference,
        thresholds,
        ladder,
        skip_quality,
        vmaf: &vmaf,
        gstreamer: checks::GstreamerInputs {
            used: readers.gstreamer(),
            absent: gstreamer_absent,
            presentation: presentation_reading.as_ref(),
            both: readers == Readers::Both,
        },
    });
    let checks = if readers.ffmpeg() {
        checks
    } else {
        checks
            .into_iter()
            .map(|mut check| {
                if FFMPEG_CHECKS.contains(&check.id.as_str()) {
                    check.status = Status::Skip;
                    check.message = "needs FFmpeg's reading (--reader gstreamer)".to_owned();
                    check.expected = None;
                    check.measured = None;
                }
                check
            })
            .collect()
    };
    let targets = checks::targets(reference, ladder, &analysed);
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        url: url.to_string(),
        format: presentation.format,
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        elapsed_s: 0.0,
        result: Status::Pass,
        reference: reference_info(reference_name, reference),
        thresholds: thresholds.clone(),
        vmaf,
        renditions: analysed
            .iter()
            .map(|a| rendition_report(a, targets.get(&a.spec.name).copied()))
            .collect(),
        checks: presentation.checks.into_iter().chain(checks).collect(),
        summary: Default::default(),
    };
    report.tally();
    report.elapsed_s = started.elapsed().as_secs_f64();
    report
}

/// Integrated loudness of the reference (when it has audio) and of every
/// audio rendition that could be read, on a blocking thread.
async fn measure_loudness(
    reference: Option<&std::path::Path>,
    reference_has_audio: bool,
    analysed: &[Analysed],
) -> Result<loudness::Loudness, String> {
    let reference = reference
        .filter(|_| reference_has_audio)
        .map(Path::to_owned);
    let audio: Vec<(String, std::path::PathBuf)> = analysed
        .iter()
        .filter(|a| a.spec.kind == report::MediaKind::Audio && a.media.is_ok())
        .map(|a| (a.spec.name.clone(), a.file.clone()))
        .collect();
    tokio::task::spawn_blocking(move || loudness::Loudness::measure(reference.as_deref(), &audio))
        .await
        .map_err(|e| format!("measuring loudness: {e}"))
}

fn looks_like_mpd(url: &Url, body: &[u8]) -> bool {
    if url.path().ends_with(".mpd") {
        return true;
    }
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]);
    !head.trim_start().starts_with("#EXTM3U") && head.contains("<MPD")
}

fn reference_info(name: &str, reference: &ReferenceMedia) -> ReferenceInfo {
    let video = reference.video.as_ref();
    let audio = reference.audio.as_ref();
    ReferenceInfo {
        path: name.to_owned(),
        width: video.map(|v| v.display_width),
        height: video.map(|v| v.display_height),
        frame_rate: video.map(|v| v.frame_rate),
        frames: video.map(|v| v.frames),
        duration_s: video
            .map(|v| v.duration)
            .or(audio.map(|a| a.duration))
            .unwrap_or(0.0),
        video_start_s: video.map(|v| v.start),
        audio_start_s: audio.map(|a| a.start),
        audio_duration_s: audio.map(|a| a.duration),
        rotation: video.map_or(0, |v| v.rotation),
    }
}

fn rendition_report(a: &Analysed, target_bitrate: Option<u64>) -> RenditionReport {
    RenditionReport {
        name: a.spec.name.clone(),
        kind: a.spec.kind,
        playlist_url: a.spec.playlist_url.to_string(),
        declared: a.spec.declared.clone(),
        measured: a.measured.clone(),
        target_bitrate,
        segments: a.segments.clone(),
        quality: a.quality.as_ref().and_then(|q| q.as_ref().ok()).cloned(),
    }
}

/// GStreamer's readings: each rendition's joined file (a muxed audio track
/// shares its variant's), then the whole presentation from its URL.
async fn read_with_gstreamer(
    analysed: &mut [Analysed],
    url: &Url,
    request_timeout: Duration,
) -> gst_reader::Reading {
    // A generous bound for one read: decoding runs far faster than real time.
    let deadline = request_timeout.max(Duration::from_secs(30)) * 4;
    for i in 0..analysed.len() {
        if analysed[i].muxed_in.is_some() {
            continue;
        }
        let path = analysed[i].file.clone();
        let reading = tokio::task::spawn_blocking(move || gst_reader::read_file(&path, deadline))
            .await
            .unwrap_or_else(|e| gst_reader::Reading {
                error: Some(format!("GStreamer reader: {e}")),
                ..Default::default()
            });
        let variant = analysed[i].spec.name.clone();
        for other in analysed.iter_mut() {
            if other.muxed_in.as_deref() == Some(variant.as_str()) {
                other.gstreamer = Some(reading.clone());
            }
        }
        analysed[i].gstreamer = Some(reading);
    }
    let url = url.to_string();
    tokio::task::spawn_blocking(move || gst_reader::read_url(&url, deadline))
        .await
        .unwrap_or_else(|e| gst_reader::Reading {
            error: Some(format!("GStreamer reader: {e}")),
            ..Default::default()
        })
}

/// Fetches the init segment and every media segment, joins them into one
/// file and demuxes it with FFmpeg when that reader runs.
async fn fetch_and_demux(
    fetcher: &Fetcher,
    spec: RenditionSpec,
    file: PathBuf,
    readers: Readers,
) -> Analysed {
    let init = match &spec.init {
        Some(url) => Some(fetcher.get(url).await),
        None => None,
    };
    let urls: Vec<Url> = spec.segments.iter().map(|s| s.url.clone()).collect();
    // Each segment goes to the joined file as it arrives: what is held is
    // a few segments in flight, whatever the rendition's length.
    let mut fetched = fetcher.get_each(&urls);
    let init_body = init.as_ref().filter(|i| i.ok()).map(|i| i.body.clone());
    let mut position = init_body.as_ref().map_or(0, |body| body.len() as u64);
    let mut container = None;
    let mut joined = JoinedFile::new(file, init_body.clone());
    let mut shift: f64 = 0.0;
    let mut ranges = Vec::with_capacity(urls.len());
    let mut box_problems = Vec::new();
    let mut segments = Vec::with_capacity(urls.len());
    let mut i = 0;
    while let Some(got) = futures::StreamExt::next(&mut fetched).await {
        let Some(segment) = spec.segments.get(i) else {
            break;
        };
        let start = position;
        if got.ok() {
            let kind = *container.get_or_insert_with(|| Container::sniff(&got.body));
            let problem = match kind {
                Container::Cmaf => media::segment_box_problem(&got.body),
                Container::MpegTs => media::ts_problem(&got.body),
            };
            if let Some(problem) = problem {
                box_problems.push((i, problem));
            }
            if let (Container::Cmaf, Some(init)) = (kind, &init_body) {
                shift = shift.max(media::ffmpeg_composition_shift(init, &[&got.body]));
            }
            joined.append(kind, &got.body);
            position += got.body.len() as u64;
        }
        ranges.push((start, position));
        segments.push(SegmentReport {
            index: i as u32 + 1,
            uri: segment.uri.clone(),
            http_status: got.status,
            bytes: if got.ok() { got.body.len() as u64 } else { 0 },
            declared_duration_s: segment.declared_duration_s,
            error: got.error.clone(),
            ..SegmentReport::default()
        });
        i += 1;
    }
    let container = container.unwrap_or(Container::Cmaf);
    let (file, written) = joined.finish(container);
    let readable = container == Container::MpegTs || init.as_ref().is_some_and(Fetched::ok);
    let mut media = match written {
        Err(error) => Err(error),
        Ok(()) if !readers.ffmpeg() => Err("not read with FFmpeg (--reader gstreamer)".to_owned()),
        Ok(()) if readable => {
            let path = file.clone();
            let ranges = ranges.clone();
            let kind = spec.kind;
            tokio::task::spawn_blocking(move || media::analyse_rendition(&path, &ranges, kind))
                .await
                .unwrap_or_else(|e| Err(format!("demuxing: {e}")))
        }
        Ok(()) => Err("no init segment to read the media with".to_owned()),
    };
    if let (Ok(media), true) = (&mut media, shift > 0.0) {
        media.shift_earlier(shift);
    }
    if let Ok(media) = &media {
        fill_segment_measures(&mut segments, media);
    }
    let measured = measure(&spec, &segments, media.as_ref().ok());
    Analysed {
        spec,
        file,
        container,
        muxed_in: None,
        ranges,
        init,
        segments,
        box_problems,
        media,
        quality: None,
        measured,
        gstreamer: None,
    }
}

/// A rendition's init and media segments joined in one scratch file,
/// written as the segments arrive. The file is created at the first
/// segment, whose bytes tell the container and so the file's extension.
struct JoinedFile {
    path: PathBuf,
    init: Option<bytes::Bytes>,
    out: Option<std::io::BufWriter<std::fs::File>>,
    error: Option<String>,
}

impl JoinedFile {
    fn new(path: PathBuf, init: Option<bytes::Bytes>) -> Self {
        Self {
            path,
            init,
            out: None,
            error: None,
        }
    }

    fn append(&mut self, container: Container, bytes: &[u8]) {
        if self.out.is_none() && self.error.is_none() {
            self.open(container);
        }
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = std::io::Write::write_all(out, bytes) {
                self.error = Some(format!("cannot write {}: {e}", self.path.display()));
                self.out = None;
            }
        }
    }

    fn open(&mut self, container: Container) {
        self.path = self.path.with_extension(container.extension());
        let opened = std::fs::File::create(&self.path)
            .map(std::io::BufWriter::new)
            .and_then(|mut out| {
                if let Some(init) = &self.init {
                    std::io::Write::write_all(&mut out, init)?;
                }
                Ok(out)
            });
        match opened {
            Ok(out) => self.out = Some(out),
            Err(e) => self.error = Some(format!("cannot write {}: {e}", self.path.display())),
        }
    }

    /// The file's path, and whether every byte reached it (a rendition
    /// with no segment gets its init alone).
    fn finish(mut self, container: Container) -> (PathBuf, Result<(), String>) {
        if self.out.is_none() && self.error.is_none() {
            self.open(container);
        }
        if let Some(mut out) = self.out.take() {
            if let Err(e) = std::io::Write::flush(&mut out) {
                self.error = Some(format!("cannot write {}: {e}", self.path.display()));
            }
        }
        (self.path, self.error.map_or(Ok(()), Err))
    }
}

/// The audio track of a muxed variant, read from the variant's joined file
/// as an audio rendition of its own (`{variant}-audio`).
async fn muxed_audio_of(variant: &Analysed) -> Analysed {
    let path = variant.file.clone();
    let ranges = variant.ranges.clone();
    let media = tokio::task::spawn_blocking(move || {
        media::analyse_rendition(&path, &ranges, MediaKind::Audio)
    })
    .await
    .unwrap_or_else(|e| Err(format!("demuxing: {e}")));
    let mut spec = variant.spec.clone();
    spec.name = format!("{}-audio", variant.spec.name);
    spec.kind = MediaKind::Audio;
    spec.declared = report::Declared {
        target_duration_s: spec.declared.target_duration_s,
        ..Default::default()
    };
    let mut segments = variant.segments.clone();
    if let Ok(media) = &media {
        fill_segment_measures(&mut segments, media);
    }
    for segment in &mut segments {
        segment.bitrate = 0;
    }
    let mut measured = measure(&spec, &segments, media.as_ref().ok());
    // The bytes are the variant's: no bitrate of its own.
    (measured.average_bitrate, measured.peak_bitrate) = (0, 0);
    Analysed {
        spec,
        file: variant.file.clone(),
        container: variant.container,
        muxed_in: Some(variant.spec.name.clone()),
        ranges: variant.ranges.clone(),
        init: variant.init.clone(),
        segments,
        box_problems: Vec::new(),
        media,
        quality: None,
        measured,
        gstreamer: None,
    }
}

fn fill_segment_measures(segments: &mut [SegmentReport], media: &RenditionMedia) {
    for (i, segment) in segments.iter_mut().enumerate() {
        let read = media.segments.get(i).cloned().unwrap_or_default();
        segment.duration_s = read.duration;
        segment.start_s = read.start;
        segment.starts_with_keyframe = read.starts_with_keyframe;
        if segment.declared_duration_s > 0.0 {
            segment.bitrate =
                (segment.bytes as f64 * 8.0 / segment.declared_duration_s).round() as u64;
        }
    }
}

fn measure(
    spec: &RenditionSpec,
    segments: &[SegmentReport],
    media: Option<&RenditionMedia>,
) -> Measured {
    let total_bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let total_duration: f64 = segments.iter().map(|s| s.declared_duration_s).sum();
    let target = spec.declared.target_duration_s.unwrap_or_else(|| {
        segments
            .iter()
            .map(|s| s.declared_duration_s)
            .fold(0.0, f64::max)
    });
    Measured {
        codecs: media.and_then(|m| m.codec_string.clone()),
        width: media.and_then(|m| m.width),
        height: media.and_then(|m| m.height),
        frame_rate: media
            .filter(|_| spec.kind == MediaKind::Video)
            .and_then(RenditionMedia::frame_rate),
        frames: media.map_or(0, |m| m.frames),
        start_s: media.and_then(RenditionMedia::start).unwrap_or(0.0),
        duration_s: media.map_or(0.0, RenditionMedia::duration),
        average_bitrate: if total_duration > 0.0 {
            (total_bytes as f64 * 8.0 / total_duration).round() as u64
        } else {
            0
        },
        peak_bitrate: peak_bitrate(
            &segments
                .iter()
                .map(|s| (s.bytes, s.declared_duration_s))
                .collect::<Vec<_>>(),
            target,
        ),
        total_bytes,
    }
}

/// RFC 8216bis peak segment bit rate: the highest bit rate of any run of
/// contiguous segments lasting 0.5x to 1.5x the target duration. Falls back
/// to the highest single segment when no run qualifies.
pub fn peak_bitrate(segments: &[(u64, f64)], target_duration: f64) -> u64 {
    let mut peak: f64 = 0.0;
    let (low, high) = (0.5 * target_duration, 1.5 * target_duration);
    for start in 0..segments.len() {
        let (mut bytes, mut duration) = (0u64, 0.0);
        for &(b, d) in &segments[start..] {
            bytes += b;
            duration += d;
            if duration > high + 1e-9 {
                break;
            }
            if duration >= low - 1e-9 && duration > 0.0 {
                peak = peak.max(bytes as f64 * 8.0 / duration);
            }
        }
    }
    if peak == 0.0 {
        for &(b, d) in segments {
            if d > 0.0 {
                peak = peak.max(b as f64 * 8.0 / d);
            }
        }
    }
    peak.round() as u64
}

/// The least @bandwidth that satisfies DASH's delivery model (ISO/IEC
/// 23009-1 5.3.5.2): at that constant rate, with `min_buffer_s` of it
/// buffered before playout, every segment has arrived when its playout
/// starts, whichever segment playout starts from.
pub fn dash_required_bandwidth(segments: &[(u64, f64)], min_buffer_s: f64) -> u64 {
    let mut required: f64 = 0.0;
    for start in 0..segments.len() {
        let (mut bits, mut played) = (0.0, 0.0);
        for &(bytes, duration) in &segments[start..] {
            bits += bytes as f64 * 8.0;
            let time = min_buffer_s + played;
            if time > 0.0 {
                required = required.max(bits / time);
            }
            played += duration;
        }
    }
    required.ceil() as u64
}

async fn measure_quality(
    reference_path: &Path,
    video: &media::ReferenceVideo,
    analysed: &mut [Analysed],
    scratch: &Path,
    vmaf: bool,
    progress: &ProgressSink,
) -> Result<(), CannotRun> {
    // Readable video renditions: their index in `analysed`, and their joined file.
    let (indices, sources): (Vec<usize>, Vec<quality::RungSource>) = analysed
        .iter()
        .enumerate()
        .filter(|(_, a)| a.spec.kind == MediaKind::Video && a.media.is_ok())
        .map(|(i, a)| {
            let source = quality::RungSource {
                name: a.spec.name.clone(),
                path: a.file.clone(),
            };
            (i, source)
        })
        .unzip();
    if sources.is_empty() {
        return Ok(());
    }
    progress(Progress::Phase(format!(
        "comparing {} renditions with the reference (PSNR-Y, SSIM-Y)",
        sources.len()
    )));
    let reference_path = reference_path.to_owned();
    let video = video.clone();
    let scratch = scratch.to_owned();
    let sink = progress.clone();
    let results = tokio::task::spawn_blocking(move || {
        let report = move |rendition: &str, done: u64, total: u64| {
            sink(Progress::Frames {
                rendition: rendition.to_owned(),
                done,
                total,
            })
        };
        quality::measure(&reference_path, &video, &sources, &scratch, vmaf, &report)
    })
    .await
    .map_err(|e| CannotRun(format!("comparing with the reference: {e}")))?
    .map_err(|e| CannotRun(format!("cannot decode the reference: {e}")))?;
    for (index, result) in indices.into_iter().zip(results) {
        analysed[index].quality = Some(result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_uses_runs_of_half_to_one_and_a_half_targets() {
        // Three 4 s segments and a 1 s tail: the tail joins its neighbour.
        let segments = [
            (1_000_000, 4.0),
            (2_000_000, 4.0),
            (1_000_000, 4.0),
            (1_000_000, 1.0),
        ];
        // Best run: segment 2 alone, 4 Mbit/s; the tail alone (8 Mbit/s) is under 2 s.
        assert_eq!(peak_bitrate(&segments, 4.0), 4_000_000);
        // With a 1 s target the tail qualifies on its own.
        assert_eq!(peak_bitrate(&segments, 1.0), 8_000_000);
        assert_eq!(peak_bitrate(&[], 4.0), 0);
    }

    #[test]
    fn dash_bandwidth_follows_the_buffer_model() {
        // 4 s segments of 2 Mbit each with a 4 s buffer: 0.5 Mbit/s suffices
        // from any start (2 Mbit by 4 s, 4 Mbit by 8 s...).
        let even = [(250_000, 4.0); 5];
        assert_eq!(dash_required_bandwidth(&even, 4.0), 500_000);
        // A 6 Mbit segment after a 1 Mbit one, started at the big one: 6 Mbit in 4 s.
        let spiky = [(125_000, 4.0), (750_000, 4.0)];
        assert_eq!(dash_required_bandwidth(&spiky, 4.0), 1_500_000);
    }
}
