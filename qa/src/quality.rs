//! PSNR-Y and SSIM-Y of each video rung against the reference, computed by
//! FFmpeg's own `psnr` and `ssim` filters (libavfilter).
//!
//! The reference is decoded once, turned upright (display matrix) and brought
//! to its display size; every rung is decoded in its own thread and scaled to
//! the reference's size with one scaler, swscale bicubic, then compared frame
//! by frame. Frames are matched by timestamp: each stream's timestamps are
//! counted from its own first frame, and the filters' frame sync pairs each
//! rung frame with the reference frame shown at that time.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use cascade_workers::probe::init_ffmpeg;
use ffmpeg_next as ff;

use crate::media::{rotation_of, ReferenceVideo};
use crate::report::Quality;

/// Per-frame PSNR for identical frames is infinite; cap it so means stay finite.
pub const PSNR_CAP_DB: f64 = 100.0;

/// Reference frames buffered per rung: bounds memory whatever the length.
const REFERENCE_QUEUE: usize = 8;

/// The scaler every rung goes through to the reference size (documented in docs/qa.md).
pub const SCALER: &str = "bicubic";

pub struct RungSource {
    pub name: String,
    /// Init segment followed by the media segments.
    pub path: PathBuf,
}

/// Progress callback: (rung, frames compared so far, frames expected).
pub type Progress = dyn Fn(&str, u64, u64) + Send + Sync;

/// Whether this FFmpeg build has the libvmaf filter.
pub fn vmaf_available() -> bool {
    init_ffmpeg();
    ff::filter::find("libvmaf").is_some()
}

/// Compares every rung with the reference; one result per rung, in order.
/// With `vmaf` (see [`vmaf_available`]) libvmaf runs too.
pub fn measure(
    reference: &Path,
    video: &ReferenceVideo,
    rungs: &[RungSource],
    scratch: &Path,
    vmaf: bool,
    progress: &Progress,
) -> Result<Vec<Result<Quality, String>>, String> {
    init_ffmpeg();
    let mut senders = Vec::new();
    let results = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, rung) in rungs.iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<ff::frame::Video>(REFERENCE_QUEUE);
            senders.push(Some(tx));
            let vmaf_log = vmaf.then(|| scratch.join(format!("vmaf-{i}.json")));
            handles.push(scope.spawn(move || compare_rung(rung, video, rx, vmaf_log, progress)));
        }
        let fed = feed_reference(reference, video, &mut senders);
        // Closing the channels ends the rung threads' reference input.
        senders.clear();
        let results: Vec<Result<Quality, String>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the comparison thread panicked".to_owned()))
            })
            .collect();
        fed.map(|reference_idet| {
            results
                .into_iter()
                .map(|result| {
                    result.map(|mut quality| {
                        quality.reference_combed_frames = reference_idet.interlaced();
                        quality.reference_idet_frames = reference_idet.judged();
                        quality
                    })
                })
                .collect()
        })
    })?;
    Ok(results)
}

/// Decodes a file's best video stream frame by frame.
struct FrameReader {
    input: ff::format::context::Input,
    decoder: ff::decoder::Video,
    stream: usize,
    time_base: ff::Rational,
    /// `bwdif`'s parity for an interlaced stream (`tff` / `bff`).
    interlaced: Option<&'static str>,
    draining: bool,
    done: bool,
}

impl FrameReader {
    /// Opens the file's best video stream (a muxed TS variant has audio too).
    fn open(path: &Path, threads: usize) -> Result<(Self, u32), String> {
        let input =
            ff::format::input(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| format!("{} has no video stream", path.display()))?;
        let rotation = rotation_of(&stream);
        let (index, time_base) = (stream.index(), stream.time_base());
        let interlaced = field_parity(&stream);
        let mut context = ff::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| format!("cannot read the video parameters: {e}"))?;
        context.set_threading(ff::codec::threading::Config {
            kind: ff::codec::threading::Type::Frame,
            count: threads,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| format!("no decoder for the video: {e}"))?;
        Ok((
            Self {
                input,
                decoder,
                stream: index,
                time_base,
                interlaced,
                draining: false,
                done: false,
            },
            rotation,
        ))
    }

    /// The next decoded frame, `None` at the end. Undecodable packets are skipped.
    fn next(&mut self) -> Option<ff::frame::Video> {
        let mut frame = ff::frame::Video::empty();
        while !self.done {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => return Some(frame),
                Err(ff::Error::Eof) => self.done = true,
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                    if self.draining {
                        self.done = true;
                        continue;
                    }
                    let mut packet = ff::Packet::empty();
                    match packet.read(&mut self.input) {
                        Ok(()) if packet.stream() == self.stream => {
                            let _ = self.decoder.send_packet(&packet);
                        }
                        Ok(()) => {}
                        Err(ff::Error::Eof) => {
                            self.draining = true;
                            let _ = self.decoder.send_eof();
                        }
                        // A damaged file: stop reading, decode what came.
                        Err(_) => {
                            self.draining = true;
                            let _ = self.decoder.send_eof();
                        }
                    }
                }
                Err(_) => self.done = true,
            }
        }
        None
    }

    /// Frame time in microseconds.
    fn micros(&self, frame: &ff::frame::Video) -> Option<i64> {
        frame
            .timestamp()
            .or(frame.pts())
            .map(|ts| (ts as f64 * f64::from(self.time_base) * 1e6).round() as i64)
    }
}

/// `bwdif`'s parity for an interlaced stream (`tff` / `bff`), from its
/// declared field order.
pub(crate) fn field_parity(stream: &ff::format::stream::Stream) -> Option<&'static str> {
    // SAFETY: the parameters belong to an open stream; field_order is a
    // plain field of the struct they point at.
    let order = unsafe { (*stream.parameters().as_ptr()).field_order };
    match ff::codec::field_order::FieldOrder::from(order) {
        ff::codec::field_order::FieldOrder::TT | ff::codec::field_order::FieldOrder::BT => {
            Some("tff")
        }
        ff::codec::field_order::FieldOrder::BB | ff::codec::field_order::FieldOrder::TB => {
            Some("bff")
        }
        _ => None,
    }
}

fn pix_fmt_name(format: ff::format::Pixel) -> String {
    let raw = ff::ffi::AVPixelFormat::from(format);
    // SAFETY: av_get_pix_fmt_name returns a static string or null.
    let name = unsafe { ff::ffi::av_get_pix_fmt_name(raw) };
    if name.is_null() {
        return "yuv420p".to_owned();
    }
    // SAFETY: checked non-null above; the string is static.
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

fn buffer_args(frame: &ff::frame::Video, time_base: &str) -> String {
    let sar = frame.aspect_ratio();
    let (n, d) = if sar.numerator() > 0 && sar.denominator() > 0 {
        (sar.numerator(), sar.denominator())
    } else {
        (1, 1)
    };
    format!(
        "video_size={}x{}:pix_fmt={}:time_base={time_base}:pixel_aspect={n}/{d}",
        frame.width(),
        frame.height(),
        pix_fmt_name(frame.format()),
    )
}

/// A frame holding new references to `frame`'s buffers (no pixel copy).
fn share(frame: &ff::frame::Video) -> Option<ff::frame::Video> {
    let mut copy = ff::frame::Video::empty();
    // SAFETY: both frames are valid; av_frame_ref adds references to the source's buffers.
    let status = unsafe { ff::ffi::av_frame_ref(copy.as_mut_ptr(), frame.as_ptr()) };
    (status >= 0).then_some(copy)
}

/// Decodes the reference, turns it upright at display size, and hands each
/// frame (timestamps in microseconds from its first frame) to every rung.
fn feed_reference(
    path: &Path,
    video: &ReferenceVideo,
    senders: &mut [Option<mpsc::SyncSender<ff::frame::Video>>],
) -> Result<IdetCounts, String> {
    let (mut reader, rotation) = FrameReader::open(path, 0)?;
    let interlaced = reader.interlaced;
    let mut graph: Option<ff::filter::Graph> = None;
    let mut first: Option<i64> = None;
    let mut count: i64 = 0;
    let mut idet = IdetCounts::default();
    let frame_us = (1e6 / video.frame_rate.max(1.0)).round() as i64;
    let mut out = ff::frame::Video::empty();
    let mut deliver =
        |out: &mut ff::frame::Video, senders: &mut [Option<mpsc::SyncSender<ff::frame::Video>>]| {
            if let Some(counts) = IdetCounts::read(out) {
                idet = counts;
            }
            let ts = out.pts().unwrap_or(count * frame_us);
            let start = *first.get_or_insert(ts);
            out.set_pts(Some(ts - start));
            count += 1;
            for slot in senders.iter_mut() {
                let Some(tx) = slot else { continue };
                let delivered = share(out).is_some_and(|copy| tx.send(copy).is_ok());
                if !delivered {
                    // That rung's thread stopped (its error is reported); keep the others going.
                    *slot = None;
                }
            }
        };
    while let Some(mut frame) = reader.next() {
        let micros = reader.micros(&frame);
        frame.set_pts(micros);
        if graph.is_none() {
            graph = Some(
                reference_graph(&frame, rotation, interlaced, video)
                    .map_err(|e| format!("reference filter graph: {e}"))?,
            );
        }
        let Some(graph) = graph.as_mut() else { break };
        let mut source = graph.get("in").ok_or("reference graph has no input")?;
        source
            .source()
            .add(&frame)
            .map_err(|e| format!("reference filter: {e}"))?;
        let mut sink = graph.get("out").ok_or("reference graph has no output")?;
        while sink.sink().frame(&mut out).is_ok() {
            deliver(&mut out, senders);
        }
        if senders.iter().all(Option::is_none) {
            break;
        }
    }
    if let Some(graph) = graph.as_mut() {
        if let (Some(mut source), Some(mut sink)) = (graph.get("in"), graph.get("out")) {
            let _ = source.source().flush();
            while sink.sink().frame(&mut out).is_ok() {
                deliver(&mut out, senders);
            }
        }
    }
    if count == 0 {
        return Err("the reference video decoded to no frames".to_owned());
    }
    Ok(idet)
}

/// The reference as a viewer should see it: deinterlaced (as the pipeline
/// does, so an interlaced source is compared like for like), then `idet`
/// (the baseline for the combing check: synthetic or detailed progressive
/// content can look interlaced to it), upright, at its display size.
pub(crate) fn reference_graph(
    frame: &ff::frame::Video,
    rotation: u32,
    interlaced: Option<&str>,
    video: &ReferenceVideo,
) -> Result<ff::filter::Graph, ff::Error> {
    let mut graph = ff::filter::Graph::new();
    let buffer = ff::filter::find("buffer").ok_or(ff::Error::FilterNotFound)?;
    let sink = ff::filter::find("buffersink").ok_or(ff::Error::FilterNotFound)?;
    graph.add(&buffer, "in", &buffer_args(frame, "1/1000000"))?;
    graph.add(&sink, "out", "")?;
    let mut chain = Vec::new();
    if let Some(parity) = interlaced {
        // bwdif counts time in fields (half the input's time base): back to
        // microseconds, which the rest of qa assumes.
        chain.push(format!(
            "bwdif=mode=send_frame:parity={parity}:deint=all,settb=1/1000000"
        ));
    }
    chain.push("idet".to_owned());
    match rotation {
        90 => chain.push("transpose=clock".to_owned()),
        180 => chain.push("hflip,vflip".to_owned()),
        270 => chain.push("transpose=cclock".to_owned()),
        _ => {}
    }
    chain.push(format!(
        "scale={}:{}:flags={SCALER}",
        video.display_width, video.display_height
    ));
    chain.push("format=yuv420p,setsar=1".to_owned());
    graph
        .output("in", 0)?
        .input("out", 0)?
        .parse(&chain.join(","))?;
    graph.validate()?;
    Ok(graph)
}

pub(crate) fn comparison_graph(
    dist: &ff::frame::Video,
    video: &ReferenceVideo,
    vmaf_log: Option<&Path>,
) -> Result<ff::filter::Graph, ff::Error> {
    let mut graph = ff::filter::Graph::new();
    let buffer = ff::filter::find("buffer").ok_or(ff::Error::FilterNotFound)?;
    let sink = ff::filter::find("buffersink").ok_or(ff::Error::FilterNotFound)?;
    graph.add(&buffer, "dist", &buffer_args(dist, "1/1000000"))?;
    graph.add(
        &buffer,
        "ref",
        &format!(
            "video_size={}x{}:pix_fmt=yuv420p:time_base=1/1000000:pixel_aspect=1/1",
            video.display_width, video.display_height
        ),
    )?;
    graph.add(&sink, "out", "")?;
    let (w, h) = (video.display_width, video.display_height);
    // The frame sync's defaults: past the reference's end, its last frame
    // stands in (the last rung frame is half a frame past it by design);
    // extra rung frames are caught by the frame-count check.
    let spec = match vmaf_log {
        // idet at the rung's own size: scaling blurs the field structure.
        None => format!(
            "[dist]idet,scale={w}:{h}:flags={SCALER},format=yuv420p,setsar=1[d];\
             [ref]split[r1][r2];[d][r1]psnr[p];[p][r2]ssim[out]"
        ),
        Some(log) => {
            let log = log
                .display()
                .to_string()
                .replace('\\', "/")
                .replace(':', "\\:");
            format!(
                "[dist]idet,scale={w}:{h}:flags={SCALER},format=yuv420p,setsar=1[d];\
                 [ref]split=3[r1][r2][r3];[d][r1]psnr[p];[p][r2]ssim[s];\
                 [s][r3]libvmaf=log_fmt=json:log_path={log}[out]"
            )
        }
    };
    graph
        .output("dist", 0)?
        .output("ref", 0)?
        .input("out", 0)?
        .parse(&spec)?;
    graph.validate()?;
    Ok(graph)
}

pub(crate) fn metadata_value(frame: &ff::frame::Video, keys: &[&str]) -> Option<f64> {
    let metadata = frame.metadata();
    keys.iter().find_map(|key| metadata.get(key)).and_then(|v| {
        if v.trim() == "inf" {
            Some(f64::INFINITY)
        } else {
            v.trim().parse::<f64>().ok()
        }
    })
}

fn compare_rung(
    rung: &RungSource,
    video: &ReferenceVideo,
    references: mpsc::Receiver<ff::frame::Video>,
    vmaf_log: Option<PathBuf>,
    progress: &Progress,
) -> Result<Quality, String> {
    let (psnr, ssim, idet) =
        compare_frames(rung, video, references, vmaf_log.as_deref(), progress)?;
    // The graph is gone by now: libvmaf writes its log when it is freed.
    let vmaf_mean = vmaf_log.as_deref().and_then(read_vmaf);
    let mut quality = summarise(psnr, ssim, vmaf_mean);
    quality.combed_frames = idet.interlaced();
    quality.idet_frames = idet.judged();
    Ok(quality)
}

/// `idet`'s running multi-frame counts, as the last frame carries them.
#[derive(Debug, Default, Clone, Copy)]
struct IdetCounts {
    tff: u64,
    bff: u64,
    progressive: u64,
    undetermined: u64,
}

impl IdetCounts {
    fn read(frame: &ff::frame::Video) -> Option<Self> {
        let count = |key: &str| metadata_value(frame, &[key]).map(|v| v.max(0.0) as u64);
        Some(Self {
            tff: count("lavfi.idet.multiple.tff")?,
            bff: count("lavfi.idet.multiple.bff")?,
            progressive: count("lavfi.idet.multiple.progressive")?,
            undetermined: count("lavfi.idet.multiple.undetermined").unwrap_or(0),
        })
    }

    fn interlaced(&self) -> u64 {
        self.tff + self.bff
    }

    fn judged(&self) -> u64 {
        self.tff + self.bff + self.progressive + self.undetermined
    }
}

/// Per-frame PSNR-Y and SSIM-Y of one rung, and its interlace detection.
fn compare_frames(
    rung: &RungSource,
    video: &ReferenceVideo,
    references: mpsc::Receiver<ff::frame::Video>,
    vmaf_log: Option<&Path>,
    progress: &Progress,
) -> Result<(Vec<f64>, Vec<f64>, IdetCounts), String> {
    let (mut reader, _) = FrameReader::open(&rung.path, 1)?;
    let expected = video.frames;
    let frame_us = (1e6 / video.frame_rate.max(1.0)).round() as i64;
    let mut next_dist = reader.next();
    let Some(first) = next_dist.as_mut() else {
        return Err(format!("{}: the rendition decoded to no frames", rung.name));
    };
    // The filters pair each rung frame with the latest reference frame at or
    // before its time; half a frame later than its own time makes that the
    // nearest reference frame, whatever each stream's timestamp rounding.
    let half_frame = frame_us / 2;
    let first_dist = reader.micros(first).unwrap_or(0) - half_frame;
    first.set_pts(Some(half_frame));
    let mut graph = comparison_graph(first, video, vmaf_log)
        .map_err(|e| format!("{}: comparison filter graph: {e}", rung.name))?;
    let mut dist_in = graph.get("dist").ok_or("no dist input")?;
    let mut ref_in = graph.get("ref").ok_or("no ref input")?;
    let mut sink = graph.get("out").ok_or("no output")?;
    let mut psnr = Vec::new();
    let mut ssim = Vec::new();
    let mut idet = IdetCounts::default();
    let mut out = ff::frame::Video::empty();
    let mut collect = |sink: &mut ff::filter::Context, out: &mut ff::frame::Video| {
        while sink.sink().frame(out).is_ok() {
            if let Some(counts) = IdetCounts::read(out) {
                idet = counts;
            }
            let p = metadata_value(out, &["lavfi.psnr.psnr.y", "lavfi.psnr.psnr.Y"]);
            let s = metadata_value(out, &["lavfi.ssim.Y", "lavfi.ssim.y"]);
            if let (Some(p), Some(s)) = (p, s) {
                psnr.push(p.min(PSNR_CAP_DB));
                ssim.push(s);
                if psnr.len() % 30 == 0 {
                    progress(&rung.name, psnr.len() as u64, expected);
                }
            }
        }
    };
    let mut next_ref = references.recv().ok();
    let mut dist_count: i64 = 1;
    let (mut ref_done, mut dist_done) = (false, false);
    loop {
        let ref_ts = next_ref.as_ref().and_then(|f| f.pts());
        let dist_ts = next_dist.as_ref().and_then(|f| f.pts());
        // Feed whichever input is behind, so neither buffers without bound.
        let push_ref = match (ref_ts, dist_ts) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(r), Some(d)) => r <= d,
        };
        if push_ref {
            if let Some(frame) = next_ref.take() {
                ref_in
                    .source()
                    .add(&frame)
                    .map_err(|e| format!("{}: reference into the filter: {e}", rung.name))?;
            }
            next_ref = references.recv().ok();
            if next_ref.is_none() {
                ref_done = true;
                let _ = ref_in.source().flush();
            }
        } else {
            if let Some(frame) = next_dist.take() {
                dist_in
                    .source()
                    .add(&frame)
                    .map_err(|e| format!("{}: rendition into the filter: {e}", rung.name))?;
            }
            next_dist = reader.next().map(|mut frame| {
                let ts = reader
                    .micros(&frame)
                    .map_or(dist_count * frame_us + half_frame, |t| t - first_dist);
                frame.set_pts(Some(ts));
                frame
            });
            dist_count += 1;
            if next_dist.is_none() {
                dist_done = true;
                let _ = dist_in.source().flush();
            }
        }
        collect(&mut sink, &mut out);
    }
    if !ref_done {
        let _ = ref_in.source().flush();
    }
    if !dist_done {
        let _ = dist_in.source().flush();
    }
    collect(&mut sink, &mut out);
    progress(&rung.name, psnr.len() as u64, expected);
    if psnr.is_empty() {
        return Err(format!(
            "{}: no frame could be compared with the reference",
            rung.name
        ));
    }
    Ok((psnr, ssim, idet))
}

fn read_vmaf(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["pooled_metrics"]["vmaf"]["mean"].as_f64()
}

/// 1st percentile, nearest rank.
pub fn low1(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * 0.01).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

fn mean(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return f64::NAN;
    }
    finite.iter().sum::<f64>() / finite.len() as f64
}

pub fn summarise(psnr: Vec<f64>, ssim: Vec<f64>, vmaf_mean: Option<f64>) -> Quality {
    Quality {
        frames_compared: psnr.len() as u64,
        psnr_y_mean: mean(&psnr),
        psnr_y_low1: low1(&psnr),
        ssim_y_mean: mean(&ssim),
        ssim_y_low1: low1(&ssim),
        vmaf_mean,
        combed_frames: 0,
        idet_frames: 0,
        reference_combed_frames: 0,
        reference_idet_frames: 0,
        psnr_y: psnr,
        ssim_y: ssim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_percent_low_is_the_nearest_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(low1(&values), 2.0);
        assert_eq!(low1(&[5.0, 1.0, 3.0]), 1.0);
        assert!(low1(&[]).is_nan());
    }

    #[test]
    fn capped_psnr_keeps_means_finite() {
        let q = summarise(vec![40.0, PSNR_CAP_DB], vec![0.99, 1.0], None);
        assert_eq!(q.psnr_y_mean, 70.0);
        assert_eq!(q.frames_compared, 2);
    }
}
