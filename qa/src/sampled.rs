//! Quality on sampled frames, for the publish gate: PSNR-Y and SSIM-Y of
//! every video rung against the source at a few instants spread over the
//! asset, through `quality.rs`'s own graphs (the source deinterlaced,
//! upright and at its display size; the rung scaled to it, bicubic), so the
//! gate's figures mean what `cascade qa`'s do, for a small fraction of the
//! decoding.
//!
//! One instant per 10 s of video (3 to 8), each in another GOP of the rungs
//! and at another point of that GOP's first quarter: keyframes, predicted
//! and bidirectional frames all come up, and no frame is far from the
//! keyframe it is decoded from. Each rung's frame is decoded from the
//! rung's keyframe before the instant, out of the init segment and that
//! keyframe's media segment (and the next), so neither the work nor the
//! demuxer's index grows with the asset's length; the source is sought to
//! its own keyframe at or before the instant (by ranged reads when it is
//! in the object store). Two threads share the instants.

use std::io::{Read, Seek};
use std::path::PathBuf;

use cascade_workers::probe::init_ffmpeg;
use ffmpeg_next as ff;

use crate::media::{Gop, ReferenceVideo, RenditionMedia, GOP_EARLY_SHARE};
use crate::quality::{self, PSNR_CAP_DB};
use crate::report::Quality;

/// One instant sampled every this many seconds of video...
const SAMPLE_EVERY_SECONDS: f64 = 10.0;
/// ...and at least and at most this many.
const MIN_SAMPLES: usize = 3;
const MAX_SAMPLES: usize = 8;

/// The golden ratio's fractional part: k times it, modulo 1, spreads any
/// number of points evenly without repeating.
const GOLDEN: f64 = 0.618_033_988_749_895;
/// Threads sampling. Each holds a decoder per rung and one for the source:
/// with four, the gate took about 0.1 s less on the 60 s 1080p source, but
/// the worker's peak was 27 MB higher (1-minute source) and 59 MB higher
/// (10-minute source, 8 instants) than with two.
const THREADS: usize = 2;

/// Source frames fed to the reference graph on either side of a sample.
const CONTEXT_FRAMES: usize = 2;

/// A source that can be opened again (each sampling thread reads its own).
pub trait SourceOpener: Send + Sync {
    fn open(&self) -> Box<dyn ReadSeek>;
}

/// `Read + Seek` that can move to a thread.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A CMAF video rung as the gate read it.
pub struct SampledRung {
    pub name: String,
    /// Init segment and media segments joined.
    pub file: PathBuf,
    /// Byte ranges of the media segments in `file` (the init precedes them).
    pub ranges: Vec<(u64, u64)>,
    /// The rung's keyframes (presentation times corrected).
    pub gops: Vec<Gop>,
    /// The rung's frame duration, seconds.
    pub frame_duration: Option<f64>,
}

/// The instants to sample, seconds on the rungs' timeline: in GOPs of
/// `rung` spread evenly over it, each at another point of the first
/// quarter of its GOP.
pub fn instants(rung: &RenditionMedia) -> Vec<f64> {
    let (Some(first), Some(last)) = (rung.first_pts, rung.last_pts) else {
        return Vec::new();
    };
    let mut gops: Vec<&Gop> = rung.gops.iter().collect();
    gops.sort_by(|a, b| a.key_pts.total_cmp(&b.key_pts));
    let duration = last - first;
    let wanted =
        ((duration / SAMPLE_EVERY_SECONDS).round() as usize).clamp(MIN_SAMPLES, MAX_SAMPLES);
    let mut chosen: Vec<f64> = Vec::new();
    for k in 0..wanted {
        let aim = first + duration * (k as f64 + 0.5) / wanted as f64;
        let Some(index) = gops.iter().rposition(|gop| gop.key_pts <= aim) else {
            continue;
        };
        let key = gops[index].key_pts;
        let next = gops.get(index + 1).map_or(last, |gop| gop.key_pts);
        // Sample k at a point of the first quarter of its GOP, the points
        // spread over that quarter (golden-ratio steps) in an order that
        // does not follow k's place in the video. Not further in: every frame between the
        // keyframe and the instant is decoded, in each rung and the source.
        let point = GOP_EARLY_SHARE * (0.5 / wanted as f64 + k as f64 * GOLDEN).fract();
        let within = key + (next - key) * point;
        let Some(&instant) = gops[index]
            .early
            .iter()
            .filter(|&&t| t >= key && t < next.max(key + 1e-9))
            .min_by(|a, b| (*a - within).abs().total_cmp(&(*b - within).abs()))
        else {
            continue;
        };
        if !chosen.iter().any(|&t| (t - instant).abs() < 1e-6) {
            chosen.push(instant);
        }
    }
    chosen
}

/// PSNR-Y and SSIM-Y of every rung at `instants` (seconds on the rungs'
/// timeline, which starts at the source's first video frame), one result
/// per rung in order. `Err` when the source itself cannot be sampled.
pub fn measure(
    source: &dyn SourceOpener,
    video: &ReferenceVideo,
    rung_start: f64,
    rungs: &[SampledRung],
    instants: &[f64],
) -> Result<Vec<Result<Quality, String>>, String> {
    init_ffmpeg();
    if instants.is_empty() {
        return Err("no instant to sample".to_owned());
    }
    // Threads, each with its own source reader, split the instants.
    let halves: Vec<&[f64]> = instants.chunks(instants.len().div_ceil(THREADS)).collect();
    let per_half: Vec<Result<Vec<SampleRow>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = halves
            .iter()
            .map(|half| {
                scope.spawn(move || sample_instants(source, video, rung_start, rungs, half))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a sampling thread panicked".to_owned()))
            })
            .collect()
    });
    // [instant][rung] -> per rung.
    let mut psnr = vec![Vec::new(); rungs.len()];
    let mut ssim = vec![Vec::new(); rungs.len()];
    let mut errors: Vec<Option<String>> = vec![None; rungs.len()];
    for half in per_half {
        for row in half? {
            for (r, value) in row.into_iter().enumerate() {
                match value {
                    Some((p, s)) => {
                        psnr[r].push(p.min(PSNR_CAP_DB));
                        ssim[r].push(s);
                    }
                    None => {
                        errors[r].get_or_insert_with(|| {
                            format!("{}: a sampled frame could not be compared", rungs[r].name)
                        });
                    }
                }
            }
        }
    }
    Ok(psnr
        .into_iter()
        .zip(ssim)
        .zip(errors)
        .map(|((psnr, ssim), error)| match error {
            Some(error) => Err(error),
            None if psnr.is_empty() => Err("no frame sampled".to_owned()),
            None => Ok(quality::summarise(psnr, ssim, None)),
        })
        .collect())
}

/// One instant's (PSNR-Y, SSIM-Y) per rung, `None` where that rung's frame
/// could not be read or compared.
type SampleRow = Vec<Option<(f64, f64)>>;

/// Each instant's row.
fn sample_instants(
    source: &dyn SourceOpener,
    video: &ReferenceVideo,
    rung_start: f64,
    rungs: &[SampledRung],
    instants: &[f64],
) -> Result<Vec<SampleRow>, String> {
    let mut reader = SourceFrames::open(source.open())?;
    let mut rows = Vec::new();
    for &instant in instants {
        let target = video.start + (instant - rung_start);
        let reference = reader.frame_at(target, video)?;
        // A rung frame that cannot be read fails that rung's comparisons.
        let row = rungs
            .iter()
            .map(|rung| {
                let frame = rung_frame(rung, instant).ok()?;
                compare(&frame, &reference, video).ok()
            })
            .collect();
        rows.push(row);
    }
    Ok(rows)
}

/// The source's video, decoded from a keyframe at or before each instant.
struct SourceFrames {
    input: ff::format::context::Input,
    decoder: ff::decoder::Video,
    stream: usize,
    time_base: ff::Rational,
    rotation: u32,
    interlaced: Option<&'static str>,
}

impl SourceFrames {
    fn open(reader: Box<dyn ReadSeek>) -> Result<Self, String> {
        let io = ff::format::context::StreamIo::from_read_seek(reader)
            .map_err(|e| format!("cannot read the source: {e}"))?;
        let input = ff::format::input_from_stream(io, None, None)
            .map_err(|e| format!("cannot read the source: {e}"))?;
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or("the source has no video stream")?;
        let (index, time_base) = (stream.index(), stream.time_base());
        let rotation = crate::media::rotation_of(&stream);
        let interlaced = quality::field_parity(&stream);
        let context = ff::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| format!("cannot read the source's video parameters: {e}"))?;
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| format!("no decoder for the source's video: {e}"))?;
        Ok(Self {
            input,
            decoder,
            stream: index,
            time_base,
            rotation,
            interlaced,
        })
    }

    /// The source frame shown at `target` seconds (its stream's clock), as
    /// `cascade qa`'s reference graph makes it.
    fn frame_at(
        &mut self,
        target: f64,
        video: &ReferenceVideo,
    ) -> Result<ff::frame::Video, String> {
        let half_frame = 0.5 / video.frame_rate.max(1.0);
        let micros = (target * 1e6).round() as i64;
        self.input
            .seek(micros, ..micros)
            .map_err(|e| format!("cannot seek the source to {target:.3} s: {e}"))?;
        self.decoder.flush();
        // Frames either side of the target too: the deinterlacer reads
        // fields before and after the frame it makes (bwdif, two each way).
        let mut previous: std::collections::VecDeque<ff::frame::Video> = Default::default();
        let mut found: Option<ff::frame::Video> = None;
        let mut following: Vec<ff::frame::Video> = Vec::new();
        let mut frame = ff::frame::Video::empty();
        let mut ended = false;
        // A progressive source needs no neighbours.
        let context = if self.interlaced.is_some() {
            CONTEXT_FRAMES
        } else {
            0
        };
        'read: while found.is_none() || following.len() < context {
            while self.decoder.receive_frame(&mut frame).is_ok() {
                let Some(at) = seconds_of(&frame, self.time_base) else {
                    continue;
                };
                let mut kept = frame.clone();
                kept.set_pts(Some((at * 1e6).round() as i64));
                if found.is_some() {
                    following.push(kept);
                } else if at >= target - half_frame {
                    found = Some(kept);
                } else {
                    previous.push_back(kept);
                    // One at least: the last frame stands in past the end.
                    if previous.len() > context.max(1) {
                        previous.pop_front();
                    }
                }
                if found.is_some() && following.len() >= context {
                    break 'read;
                }
            }
            if ended {
                break;
            }
            ended = !feed(&mut self.input, self.stream, &mut self.decoder, || true);
        }
        let found = found
            .or_else(|| previous.pop_back())
            .ok_or_else(|| format!("the source has no frame at {target:.3} s"))?;
        let mut graph = quality::reference_graph(&found, self.rotation, self.interlaced, video)
            .map_err(|e| format!("reference filter graph: {e}"))?;
        let wanted = found.pts();
        let mut input = graph.get("in").ok_or("reference graph has no input")?;
        for frame in previous
            .iter()
            .skip(previous.len().saturating_sub(context))
            .chain(std::iter::once(&found))
            .chain(following.iter())
        {
            input
                .source()
                .add(frame)
                .map_err(|e| format!("reference filter: {e}"))?;
        }
        let _ = input.source().flush();
        let mut sink = graph.get("out").ok_or("reference graph has no output")?;
        let mut out = ff::frame::Video::empty();
        let mut last = None;
        while sink.sink().frame(&mut out).is_ok() {
            if out.pts() == wanted {
                return Ok(out);
            }
            last = Some(out.clone());
        }
        last.ok_or_else(|| "the reference graph gave no frame".to_owned())
    }
}

/// The rung's frame at `instant`, decoded from the rung's keyframe at or
/// before it. The demuxer reads the init segment and the media segments
/// from that keyframe's on ([`SEGMENTS_READ`]), not the whole joined file:
/// its index of fragments stays the size of a segment or two, however long
/// the asset.
fn rung_frame(rung: &SampledRung, instant: f64) -> Result<ff::frame::Video, String> {
    let eps = 1e-6;
    let key = rung
        .gops
        .iter()
        .filter(|gop| gop.key_pts <= instant + eps)
        .max_by(|a, b| a.key_pts.total_cmp(&b.key_pts))
        .ok_or("no keyframe before the instant")?;
    let segment = key.segment.ok_or("the keyframe is in no media segment")?;
    let view = SegmentsView::open(rung, segment)?;
    let io =
        ff::format::context::StreamIo::from_read_seek(Box::new(view)).map_err(|e| e.to_string())?;
    let mut input = ff::format::input_from_stream(io, None, None).map_err(|e| e.to_string())?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or("no video stream")?;
    let (index, time_base) = (stream.index(), stream.time_base());
    let mut decoder = ff::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| e.to_string())?;
    let half_frame = rung.frame_duration.unwrap_or(1.0 / 30.0) / 2.0;
    // Packets of the segment before the keyframe are only demuxed.
    let mut before_key = key.index_in_segment;
    let mut first: Option<f64> = None;
    let mut frame = ff::frame::Video::empty();
    let mut ended = false;
    loop {
        while decoder.receive_frame(&mut frame).is_ok() {
            let Some(at) = seconds_of(&frame, time_base) else {
                continue;
            };
            // Times from the keyframe, the first frame shown of its GOP.
            let from_key = at - *first.get_or_insert(at);
            if key.key_pts + from_key >= instant - half_frame {
                return Ok(frame);
            }
        }
        if ended {
            return Err("the rendition ended before the instant".to_owned());
        }
        ended = !feed(&mut input, index, &mut decoder, || {
            let send = before_key == 0;
            before_key = before_key.saturating_sub(1);
            send
        });
    }
}

/// Media segments read for one sampled frame: the keyframe's and the next
/// (an instant is early in its GOP; a GOP may run past its segment's end).
const SEGMENTS_READ: usize = 2;

/// A rung's init segment followed by some of its media segments, read from
/// the joined file as if they were a file of their own.
struct SegmentsView {
    file: std::fs::File,
    /// `(offset in the joined file, length)` of each piece, in order.
    pieces: Vec<(u64, u64)>,
    length: u64,
    position: u64,
}

impl SegmentsView {
    /// The init segment and up to [`SEGMENTS_READ`] media segments from `first`.
    fn open(rung: &SampledRung, first: usize) -> Result<Self, String> {
        let &(media_start, _) = rung.ranges.first().ok_or("no media segment")?;
        let chosen = rung.ranges.get(first..).ok_or("no such media segment")?;
        // The init segment precedes the first media segment.
        let mut pieces = vec![(0, media_start)];
        pieces.extend(
            chosen
                .iter()
                .take(SEGMENTS_READ)
                .map(|&(start, end)| (start, end.saturating_sub(start))),
        );
        let length = pieces.iter().map(|&(_, len)| len).sum();
        let file = std::fs::File::open(&rung.file).map_err(|e| e.to_string())?;
        Ok(Self {
            file,
            pieces,
            length,
            position: 0,
        })
    }
}

impl Read for SegmentsView {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut skipped = 0;
        for &(offset, len) in &self.pieces {
            if self.position < skipped + len {
                let within = self.position - skipped;
                let n = (buf.len() as u64).min(len - within) as usize;
                self.file.seek(std::io::SeekFrom::Start(offset + within))?;
                let n = self.file.read(&mut buf[..n])?;
                self.position += n as u64;
                return Ok(n);
            }
            skipped += len;
        }
        Ok(0)
    }
}

impl Seek for SegmentsView {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(delta) => self.length.checked_add_signed(delta),
            std::io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}

/// A decoded frame's time in seconds (best-effort timestamp, else pts).
fn seconds_of(frame: &ff::frame::Video, time_base: ff::Rational) -> Option<f64> {
    frame
        .timestamp()
        .or(frame.pts())
        .map(|ts| ts as f64 * f64::from(time_base))
}

/// Reads the next packet: one of `stream` goes to `decoder` when `send`
/// says so. At the end of the input (or a damaged one) the decoder is
/// drained and `false` returned.
fn feed(
    input: &mut ff::format::context::Input,
    stream: usize,
    decoder: &mut ff::decoder::Video,
    mut send: impl FnMut() -> bool,
) -> bool {
    let mut packet = ff::Packet::empty();
    match packet.read(input) {
        Ok(()) => {
            if packet.stream() == stream && send() {
                let _ = decoder.send_packet(&packet);
            }
            true
        }
        Err(_) => {
            let _ = decoder.send_eof();
            false
        }
    }
}

/// PSNR-Y and SSIM-Y of one rung frame against the reference frame.
fn compare(
    dist: &ff::frame::Video,
    reference: &ff::frame::Video,
    video: &ReferenceVideo,
) -> Result<(f64, f64), String> {
    let mut dist = dist.clone();
    let mut reference = reference.clone();
    dist.set_pts(Some(0));
    reference.set_pts(Some(0));
    let mut graph = quality::comparison_graph(&dist, video, None).map_err(|e| e.to_string())?;
    let mut dist_in = graph.get("dist").ok_or("no dist input")?;
    dist_in.source().add(&dist).map_err(|e| e.to_string())?;
    let _ = dist_in.source().flush();
    let mut ref_in = graph.get("ref").ok_or("no ref input")?;
    ref_in.source().add(&reference).map_err(|e| e.to_string())?;
    let _ = ref_in.source().flush();
    let mut sink = graph.get("out").ok_or("no output")?;
    let mut out = ff::frame::Video::empty();
    while sink.sink().frame(&mut out).is_ok() {
        let p = quality::metadata_value(&out, &["lavfi.psnr.psnr.y", "lavfi.psnr.psnr.Y"]);
        let s = quality::metadata_value(&out, &["lavfi.ssim.Y", "lavfi.ssim.y"]);
        if let (Some(p), Some(s)) = (p, s) {
            return Ok((p, s));
        }
    }
    Err("the comparison gave no value".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PacketInfo;

    fn rung(packets: impl Iterator<Item = PacketInfo>) -> RenditionMedia {
        crate::media::fold_packets(RenditionMedia::default(), 15, true, packets)
    }

    fn packet(pts: f64, key: bool) -> PacketInfo {
        PacketInfo {
            pts: Some(pts),
            dts: Some(pts),
            duration: 1.0 / 30.0,
            key,
            segment: Some((pts / 4.0) as usize),
        }
    }

    #[test]
    fn instants_spread_over_the_video_and_the_first_quarter_of_gops() {
        // 60 s at 30 fps, a keyframe every 2 s.
        let packets = rung((0..1800).map(|i| packet(f64::from(i) / 30.0, i % 60 == 0)));
        let chosen = instants(&packets);
        assert_eq!(chosen.len(), 6, "{chosen:?}");
        for pair in chosen.windows(2) {
            assert!(pair[1] - pair[0] >= 6.0, "{chosen:?}");
        }
        // Each at another point of the first quarter of its GOP.
        let mut points: Vec<f64> = chosen.iter().map(|t| t % 2.0).collect();
        points.sort_by(f64::total_cmp);
        points.dedup_by(|a, b| (*a - *b).abs() < 0.01);
        assert_eq!(points.len(), chosen.len(), "{chosen:?}");
        assert!(
            points[0] < 0.1 && points[points.len() - 1] > 0.35,
            "{points:?}"
        );
        assert!(points[points.len() - 1] <= 0.5, "{points:?}");
        // A short clip still gets three.
        let short = rung((0..90).map(|i| packet(f64::from(i) / 30.0, i % 30 == 0)));
        assert_eq!(instants(&short).len(), 3);
        assert!(instants(&RenditionMedia::default()).is_empty());
    }
}
