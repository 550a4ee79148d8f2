//! What the fetched media really is: each rendition's init segment and media
//! segments joined into one file, a fragmented MP4 (ISO/IEC 23000-19 CMAF
//! track) or an MPEG-TS stream (ISO/IEC 13818-1, as RFC 8216 allows), and
//! read with FFmpeg's demuxer, packet by packet; the reference file likewise.

use std::path::Path;

use cascade_workers::probe::init_ffmpeg;
use ffmpeg_next as ff;

use crate::report::MediaKind;

/// MPEG-TS packets are this long and start with [`TS_SYNC`].
const TS_PACKET: usize = 188;
const TS_SYNC: u8 = 0x47;

/// How a rendition's segments are packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Container {
    /// Fragmented MP4: an init segment, then moof+mdat fragments.
    #[default]
    Cmaf,
    /// MPEG-TS: self-contained 188-byte packets.
    MpegTs,
}

impl Container {
    /// What a media segment's first bytes say it is: MPEG-TS when it starts
    /// with sync bytes a packet apart, else fragmented MP4.
    pub fn sniff(segment: &[u8]) -> Self {
        let synced = |at: usize| segment.get(at).is_none_or(|b| *b == TS_SYNC);
        if segment.first() == Some(&TS_SYNC) && synced(TS_PACKET) && synced(2 * TS_PACKET) {
            Self::MpegTs
        } else {
            Self::Cmaf
        }
    }

    /// The joined file's extension, a hint for FFmpeg's probe.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Cmaf => "mp4",
            Self::MpegTs => "ts",
        }
    }
}

/// Problems with one MPEG-TS media segment: it must be whole 188-byte
/// packets, each starting with the sync byte.
pub fn ts_problem(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return Some("empty".to_owned());
    }
    if let Some(index) = bytes
        .chunks(TS_PACKET)
        .position(|packet| packet[0] != TS_SYNC)
    {
        return Some(format!(
            "MPEG-TS packet {index} (byte {}) has no sync byte",
            index * TS_PACKET
        ));
    }
    let stray = bytes.len() % TS_PACKET;
    (stray != 0).then(|| {
        format!(
            "{} bytes are not whole 188-byte MPEG-TS packets ({stray} left over): truncated",
            bytes.len()
        )
    })
}

/// One demuxed packet, times in seconds. Folded into a [`RenditionMedia`]
/// as it is read, not kept: a rendition's summary stays the size of its
/// segment and GOP counts, whatever the number of frames.
#[derive(Debug, Clone)]
pub struct PacketInfo {
    pub pts: Option<f64>,
    pub dts: Option<f64>,
    pub duration: f64,
    pub key: bool,
    /// Index of the media segment holding it; `None` for bytes outside any.
    pub segment: Option<usize>,
}

/// What the demuxer found in one media segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentMedia {
    pub packets: u64,
    /// Sum of the packets' durations, seconds.
    pub duration: f64,
    /// Earliest presentation time, seconds.
    pub start: Option<f64>,
    /// Whether the segment's first packet (decode order) is a keyframe.
    pub starts_with_keyframe: Option<bool>,
}

/// A keyframe, and the presentation times early in its GOP: where the
/// sampler may pick an instant and how it finds the frame again.
#[derive(Debug, Clone, PartialEq)]
pub struct Gop {
    /// The media segment holding the keyframe, and the keyframe's place
    /// among that segment's packets (decode order).
    pub segment: Option<usize>,
    pub index_in_segment: u64,
    pub key_pts: f64,
    /// Presentation times, ascending, of the GOP's frames from the keyframe
    /// to the first one past [`GOP_EARLY_SHARE`] of the GOP's length.
    pub early: Vec<f64>,
}

/// The share of each GOP, from its keyframe, whose frame times are kept.
pub const GOP_EARLY_SHARE: f64 = 0.25;

/// A rendition as demuxed, summed per segment and per GOP.
#[derive(Debug, Clone, Default)]
pub struct RenditionMedia {
    pub codec_name: String,
    /// RFC 6381 string from the sample description (`avc1.64001f`, `mp4a.40.2`).
    pub codec_string: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Packets of the track (video frames, audio packets).
    pub frames: u64,
    /// Earliest and latest presentation times, seconds.
    pub first_pts: Option<f64>,
    pub last_pts: Option<f64>,
    /// Latest presentation time plus its packet's duration, seconds.
    pub end: Option<f64>,
    /// The first positive packet duration, seconds.
    pub frame_duration: Option<f64>,
    /// One per media segment, in order.
    pub segments: Vec<SegmentMedia>,
    /// One per keyframe of a video track, decode order (none for audio).
    pub gops: Vec<Gop>,
    /// Why reading stopped early, if it did.
    pub read_error: Option<String>,
    /// A video rendition whose segments also carry an audio track (a muxed
    /// HLS variant).
    pub muxed_audio: bool,
}

impl RenditionMedia {
    /// Earliest presentation time, seconds.
    pub fn start(&self) -> Option<f64> {
        self.first_pts
    }

    /// End of the last packet minus the start, seconds.
    pub fn duration(&self) -> f64 {
        match (self.first_pts, self.end) {
            (Some(start), Some(end)) => end - start,
            _ => 0.0,
        }
    }

    /// Frames per second from packet count over duration.
    pub fn frame_rate(&self) -> Option<f64> {
        let duration = self.duration();
        (duration > 0.0).then(|| self.frames as f64 / duration)
    }

    /// Moves every presentation time `by` seconds earlier.
    pub fn shift_earlier(&mut self, by: f64) {
        for time in [&mut self.first_pts, &mut self.last_pts, &mut self.end] {
            *time = time.map(|t| t - by);
        }
        for segment in &mut self.segments {
            segment.start = segment.start.map(|t| t - by);
        }
        for gop in &mut self.gops {
            gop.key_pts -= by;
            gop.early.iter_mut().for_each(|t| *t -= by);
        }
    }
}

/// Folds packets, in decode order, into a [`RenditionMedia`]. One packet is
/// held back: FFmpeg's demuxer leaves fragment sample durations at 0, and
/// the decode-time step to the next packet is the same value (the last
/// packet takes the first duration seen).
struct PacketFold {
    media: RenditionMedia,
    /// Whether GOPs are kept (video), not every packet being a keyframe.
    video: bool,
    held: Option<PacketInfo>,
    /// Presentation times of the GOP being read (decode order).
    gop_times: Vec<f64>,
}

impl PacketFold {
    fn new(media: RenditionMedia, segments: usize, video: bool) -> Self {
        let mut media = media;
        media.segments = vec![SegmentMedia::default(); segments];
        Self {
            media,
            video,
            held: None,
            gop_times: Vec::new(),
        }
    }

    fn push(&mut self, packet: PacketInfo) {
        if let Some(mut held) = self.held.take() {
            if held.duration <= 0.0 {
                if let (Some(this), Some(next)) = (held.dts, packet.dts) {
                    held.duration = (next - this).max(0.0);
                }
            }
            self.add(held);
        }
        self.held = Some(packet);
    }

    fn finish(mut self) -> RenditionMedia {
        if let Some(mut last) = self.held.take() {
            // The typical duration, not the step before it: a stream that
            // lost frames just before its end would lend its last frame
            // the gap.
            if last.duration <= 0.0 {
                last.duration = self.media.frame_duration.unwrap_or(0.0);
            }
            self.add(last);
        }
        let end_of_last_gop = self.media.last_pts.unwrap_or(0.0);
        self.close_gop(end_of_last_gop);
        self.media
    }

    fn add(&mut self, packet: PacketInfo) {
        let media = &mut self.media;
        media.frames += 1;
        if packet.duration > 0.0 && media.frame_duration.is_none() {
            media.frame_duration = Some(packet.duration);
        }
        if let Some(pts) = packet.pts {
            media.first_pts = Some(media.first_pts.map_or(pts, |t| t.min(pts)));
            media.last_pts = Some(media.last_pts.map_or(pts, |t| t.max(pts)));
            let end = pts + packet.duration;
            media.end = Some(media.end.map_or(end, |t| t.max(end)));
        }
        let mut index_in_segment = 0;
        if let Some(segment) = packet.segment.and_then(|i| media.segments.get_mut(i)) {
            index_in_segment = segment.packets;
            segment.packets += 1;
            segment.duration += packet.duration;
            if let Some(pts) = packet.pts {
                segment.start = Some(segment.start.map_or(pts, |t| t.min(pts)));
            }
            segment.starts_with_keyframe.get_or_insert(packet.key);
        }
        if !self.video {
            return;
        }
        match packet.pts {
            Some(pts) if packet.key => {
                self.close_gop(pts);
                self.media.gops.push(Gop {
                    segment: packet.segment,
                    index_in_segment,
                    key_pts: pts,
                    early: Vec::new(),
                });
                self.gop_times.push(pts);
            }
            Some(pts) => self.gop_times.push(pts),
            None => {}
        }
    }

    /// Keeps the early times of the GOP being read, which ends at `next`.
    fn close_gop(&mut self, next: f64) {
        let times = std::mem::take(&mut self.gop_times);
        let Some(gop) = self.media.gops.last_mut() else {
            return;
        };
        let key = gop.key_pts;
        let reach = key + (next - key) * GOP_EARLY_SHARE;
        let mut early: Vec<f64> = times.into_iter().filter(|&t| t >= key).collect();
        early.sort_by(f64::total_cmp);
        let past = early
            .iter()
            .position(|&t| t > reach)
            .map_or(early.len(), |i| i + 1);
        early.truncate(past);
        gop.early = early;
    }
}

/// A rendition's summary from its packets in decode order, `segments`
/// media segments long; with GOPs when it is `video`.
pub fn fold_packets(
    media: RenditionMedia,
    segments: usize,
    video: bool,
    packets: impl IntoIterator<Item = PacketInfo>,
) -> RenditionMedia {
    let mut fold = PacketFold::new(media, segments, video);
    packets.into_iter().for_each(|p| fold.push(p));
    fold.finish()
}

fn seconds(ts: i64, time_base: ff::Rational) -> f64 {
    ts as f64 * f64::from(time_base)
}

/// Demuxes the `kind` track of `path`, the init segment (if any) followed by
/// the media segments whose byte ranges in the file are `segments` (start,
/// end). A file of one track is read whatever its kind.
pub fn analyse_rendition(
    path: &Path,
    segments: &[(u64, u64)],
    kind: MediaKind,
) -> Result<RenditionMedia, String> {
    init_ffmpeg();
    let mut input = ff::format::input(path)
        .map_err(|e| format!("FFmpeg cannot open the init segment and media: {e}"))?;
    let wanted = match kind {
        MediaKind::Video => ff::media::Type::Video,
        MediaKind::Audio => ff::media::Type::Audio,
    };
    let muxed_audio = kind == MediaKind::Video
        && input.streams().count() > 1
        && input.streams().best(ff::media::Type::Audio).is_some();
    let stream = match input.streams().best(wanted) {
        Some(stream) => stream,
        None if input.streams().count() == 1 => input.streams().next().ok_or("no track")?,
        None => return Err(format!("the media holds no {kind:?} track").to_lowercase()),
    };
    let index = stream.index();
    let time_base = stream.time_base();
    let parameters = stream.parameters();
    let mut media = RenditionMedia {
        codec_name: parameters.id().name().to_owned(),
        muxed_audio,
        ..RenditionMedia::default()
    };
    // SAFETY: the parameters belong to an open stream; extradata/extradata_size
    // describe a buffer it owns, and width/height/codec_tag/profile are plain fields.
    let (extradata, tag, width, height, profile) = unsafe {
        let p = parameters.as_ptr();
        let data = if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
        };
        (data, (*p).codec_tag, (*p).width, (*p).height, (*p).profile)
    };
    let tag = String::from_utf8_lossy(&tag.to_le_bytes()).into_owned();
    media.codec_string = codec_string(parameters.id(), &tag, &extradata)
        .or_else(|| codec_string_without_config(parameters.id(), &extradata, profile));
    if parameters.medium() == ff::media::Type::Video && width > 0 && height > 0 {
        media.width = Some(width as u32);
        media.height = Some(height as u32);
    }
    let segment_of = |position: isize| -> Option<usize> {
        let position = u64::try_from(position).ok()?;
        segments
            .iter()
            .position(|&(start, end)| position >= start && position < end)
    };
    let video = parameters.medium() == ff::media::Type::Video;
    let mut fold = PacketFold::new(media, segments.len(), video);
    let mut read_error = None;
    let mut errors = 0;
    loop {
        let mut packet = ff::Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(error) => {
                read_error.get_or_insert_with(|| format!("demuxing stopped: {error}"));
                errors += 1;
                if errors > 16 {
                    break;
                }
                continue;
            }
        }
        if packet.stream() != index {
            continue;
        }
        fold.push(PacketInfo {
            pts: packet.pts().map(|t| seconds(t, time_base)),
            dts: packet.dts().map(|t| seconds(t, time_base)),
            duration: seconds(packet.duration(), time_base),
            key: packet.is_key(),
            segment: segment_of(packet.position()),
        });
    }
    let mut media = fold.finish();
    media.read_error = read_error;
    Ok(media)
}

/// RFC 6381 codec string from the sample entry's decoder configuration.
pub fn codec_string(id: ff::codec::Id, tag: &str, extradata: &[u8]) -> Option<String> {
    match id {
        // AVCDecoderConfigurationRecord: version, profile, compatibility, level.
        ff::codec::Id::H264 if extradata.len() >= 4 && extradata[0] == 1 => {
            let entry = if tag == "avc3" { "avc3" } else { "avc1" };
            Some(format!(
                "{entry}.{:02x}{:02x}{:02x}",
                extradata[1], extradata[2], extradata[3]
            ))
        }
        // AudioSpecificConfig: 5-bit object type, 31 escapes to 32 + 6 bits.
        ff::codec::Id::AAC if !extradata.is_empty() => {
            let first = extradata[0] >> 3;
            let object_type = if first == 31 {
                let escaped = ((u16::from(extradata[0]) & 0x7) << 3)
                    | u16::from(extradata.get(1).copied().unwrap_or(0) >> 5);
                32 + escaped
            } else {
                u16::from(first)
            };
            Some(format!("mp4a.40.{object_type}"))
        }
        _ => None,
    }
}

/// RFC 6381 string where the stream carries no decoder configuration record,
/// as in MPEG-TS: H.264 from the SPS in Annex B extradata (ISO/IEC 14496-10
/// 7.3.2.1.1: profile_idc, constraint flags, level_idc follow the NAL header),
/// AAC from the decoder's profile (ADTS carries no AudioSpecificConfig).
pub(crate) fn codec_string_without_config(
    id: ff::codec::Id,
    extradata: &[u8],
    profile: i32,
) -> Option<String> {
    match id {
        ff::codec::Id::H264 => {
            let sps = annex_b_nal_units(extradata)
                .find(|nal| nal.first().map(|h| h & 0x1f) == Some(7))?;
            let fields = sps.get(1..4)?;
            Some(format!(
                "avc1.{:02x}{:02x}{:02x}",
                fields[0], fields[1], fields[2]
            ))
        }
        // FFmpeg's AAC profiles are the MPEG-4 audio object type minus one
        // (FF_PROFILE_AAC_LOW = 1 is object type 2, HE-AAC v2 = 28 is 29).
        ff::codec::Id::AAC if profile >= 0 => Some(format!("mp4a.40.{}", profile + 1)),
        _ => None,
    }
}

/// The NAL units of an Annex B byte stream (start codes 00 00 01 or 00 00 00 01).
fn annex_b_nal_units(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| {
            // The unit ends before the next start code (and a zero byte of a 4-byte one).
            let end = next - 3;
            if end > 0 && bytes[end - 1] == 0 {
                end - 1
            } else {
                end
            }
        })
        .chain(std::iter::once(bytes.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter_map(move |(start, end)| bytes.get(start..end))
}

/// The reference's video as displayed, and its audio timing.
#[derive(Debug, Clone, Default)]
pub struct ReferenceMedia {
    pub video: Option<ReferenceVideo>,
    pub audio: Option<ReferenceAudio>,
}

#[derive(Debug, Clone)]
pub struct ReferenceVideo {
    pub display_width: u32,
    pub display_height: u32,
    /// Clockwise degrees a player turns the stored frame.
    pub rotation: u32,
    pub frame_rate: f64,
    pub frames: u64,
    pub start: f64,
    pub duration: f64,
}

#[derive(Debug, Clone)]
pub struct ReferenceAudio {
    pub start: f64,
    pub duration: f64,
}

/// Clockwise display rotation from the stream's display matrix: the
/// pipeline's own reading, so QA and transcode agree on what "upright" is.
pub use cascade_workers::probe::rotation_of;

struct Span {
    start: f64,
    end: f64,
    count: u64,
}

impl Span {
    fn add(&mut self, pts: f64, duration: f64) {
        self.start = self.start.min(pts);
        self.end = self.end.max(pts + duration);
        self.count += 1;
    }
}

/// Demuxes the reference once: display size, frame rate, frames, timing.
pub fn analyse_reference(path: &Path) -> Result<ReferenceMedia, String> {
    init_ffmpeg();
    let input = ff::format::input(path)
        .map_err(|e| format!("cannot read the reference {}: {e}", path.display()))?;
    analyse_reference_input(input, &path.display().to_string())
}

/// [`analyse_reference`] of any seekable reader, such as a stored source
/// read by ranged GETs (the publish gate reads the source so, with no copy).
pub fn analyse_reference_reader<R>(reader: R, name: &str) -> Result<ReferenceMedia, String>
where
    R: std::io::Read + std::io::Seek + Send + 'static,
{
    init_ffmpeg();
    let io = ff::format::context::StreamIo::from_read_seek(reader)
        .map_err(|e| format!("cannot read the reference {name}: {e}"))?;
    let input = ff::format::input_from_stream(io, None, None)
        .map_err(|e| format!("cannot read the reference {name}: {e}"))?;
    analyse_reference_input(input, name)
}

fn analyse_reference_input(
    mut input: ff::format::context::Input,
    name: &str,
) -> Result<ReferenceMedia, String> {
    let video = input.streams().best(ff::media::Type::Video).filter(|s| {
        !s.disposition()
            .contains(ff::format::stream::Disposition::ATTACHED_PIC)
    });
    let audio = input.streams().best(ff::media::Type::Audio);
    if video.is_none() && audio.is_none() {
        return Err(format!(
            "the reference {} has no video or audio stream",
            name
        ));
    }
    let video_meta = video.map(|stream| {
        let parameters = stream.parameters();
        // SAFETY: plain fields of the stream's codec parameters.
        let (width, height, sar) = unsafe {
            let p = parameters.as_ptr();
            (
                (*p).width.max(0) as u32,
                (*p).height.max(0) as u32,
                (*p).sample_aspect_ratio,
            )
        };
        let sar = ff::Rational::from(sar);
        let display_width =
            if sar.numerator() > 0 && sar.denominator() > 0 && sar != ff::Rational::new(1, 1) {
                ((f64::from(width) * f64::from(sar)).round() as u32).max(2)
            } else {
                width
            };
        let rotation = rotation_of(&stream);
        let (display_width, display_height) = if rotation % 180 == 90 {
            (height, display_width)
        } else {
            (display_width, height)
        };
        let rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .find(|r| r.numerator() > 0 && r.denominator() > 0)
            .map(f64::from);
        (
            stream.index(),
            stream.time_base(),
            display_width,
            display_height,
            rotation,
            rate,
        )
    });
    let audio_meta = audio.map(|s| (s.index(), s.time_base()));
    let mut video_span = Span {
        start: f64::MAX,
        end: f64::MIN,
        count: 0,
    };
    let mut audio_span = Span {
        start: f64::MAX,
        end: f64::MIN,
        count: 0,
    };
    for (stream, packet) in input.packets() {
        let Some(pts) = packet.pts() else { continue };
        if let Some((index, time_base, ..)) = video_meta {
            if stream.index() == index {
                video_span.add(
                    seconds(pts, time_base),
                    seconds(packet.duration(), time_base),
                );
            }
        }
        if let Some((index, time_base)) = audio_meta {
            if stream.index() == index {
                audio_span.add(
                    seconds(pts, time_base),
                    seconds(packet.duration(), time_base),
                );
            }
        }
    }
    let video = match video_meta {
        Some((_, _, width, height, rotation, rate)) if video_span.count > 0 => {
            let duration = video_span.end - video_span.start;
            Some(ReferenceVideo {
                display_width: width,
                display_height: height,
                rotation,
                frame_rate: rate.unwrap_or(video_span.count as f64 / duration.max(1e-9)),
                frames: video_span.count,
                start: video_span.start,
                duration,
            })
        }
        _ => None,
    };
    let audio = (audio_span.count > 0).then_some(ReferenceAudio {
        start: audio_span.start,
        duration: audio_span.end - audio_span.start,
    });
    if video.is_none() && audio.is_none() {
        return Err(format!("the reference {} has no readable packets", name));
    }
    Ok(ReferenceMedia { video, audio })
}

/// Problems with one media segment's top-level boxes (ISO/IEC 14496-12):
/// they must tile the segment exactly and include a moof and an mdat.
pub fn segment_box_problem(bytes: &[u8]) -> Option<String> {
    let boxes = match top_level_boxes(bytes) {
        Ok(boxes) => boxes,
        Err(problem) => return Some(problem),
    };
    let has = |name: &[u8; 4]| boxes.iter().any(|(kind, _)| kind == name);
    if !has(b"moof") {
        return Some("no moof box".to_owned());
    }
    if !has(b"mdat") {
        return Some("no mdat box".to_owned());
    }
    None
}

/// Problems with an init segment: ftyp and moov, tiling the bytes.
pub fn init_box_problem(bytes: &[u8]) -> Option<String> {
    let boxes = match top_level_boxes(bytes) {
        Ok(boxes) => boxes,
        Err(problem) => return Some(problem),
    };
    if !boxes.iter().any(|(kind, _)| kind == b"moov") {
        return Some("no moov box".to_owned());
    }
    None
}

/// The boxes directly inside `bytes` (a box's payload): (type, payload).
/// Stops at the first box that does not fit.
fn child_boxes(bytes: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut children = Vec::new();
    let mut offset = 0usize;
    while let Some(header) = bytes.get(offset..offset + 8) {
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = [header[4], header[5], header[6], header[7]];
        let (start, end) = match size {
            0 => (offset + 8, bytes.len()),
            1 => {
                let Some(large) = bytes.get(offset + 8..offset + 16) else {
                    break;
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(large);
                let Ok(size) = usize::try_from(u64::from_be_bytes(be)) else {
                    break;
                };
                (offset + 16, offset.saturating_add(size))
            }
            n => (offset + 8, offset.saturating_add(n)),
        };
        let Some(payload) = bytes.get(start..end) else {
            break;
        };
        children.push((kind, payload));
        offset = end;
    }
    children
}

fn child<'a>(bytes: &'a [u8], path: &[&[u8; 4]]) -> Vec<&'a [u8]> {
    let Some((first, rest)) = path.split_first() else {
        return vec![bytes];
    };
    child_boxes(bytes)
        .into_iter()
        .filter(|(kind, _)| kind == *first)
        .flat_map(|(_, payload)| child(payload, rest))
        .collect()
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// How far FFmpeg's MP4 demuxer moves a fragmented track's presentation
/// times, in seconds. ISO/IEC 14496-12 8.8.8: a sample's composition time is
/// its decode time plus its (version 1: signed) composition offset, and
/// CMAF (ISO/IEC 23000-19) uses negative offsets so that the first frame is
/// presented at the fragment's decode time with no edit list. FFmpeg instead
/// keeps every presentation time at or after its decode time: without an
/// edit list it adds the most negative offset's magnitude to all of them
/// (its `dts_shift`), so B-frame CMAF reads a frame late. GStreamer's
/// qtdemux follows the spec. QA reports times as the spec defines them.
pub fn ffmpeg_composition_shift(init: &[u8], segments: &[&[u8]]) -> f64 {
    let has_edit_list = !child(init, &[b"moov", b"trak", b"edts", b"elst"]).is_empty();
    let timescale = child(init, &[b"moov", b"trak", b"mdia", b"mdhd"])
        .first()
        .and_then(|mdhd| match mdhd.first() {
            Some(1) => be_u32(mdhd, 20),
            Some(_) => be_u32(mdhd, 12),
            None => None,
        })
        .filter(|t| *t > 0);
    let (Some(timescale), false) = (timescale, has_edit_list) else {
        return 0.0;
    };
    let mut most_negative = 0i64;
    for segment in segments {
        for trun in child(segment, &[b"moof", b"traf", b"trun"]) {
            let (Some(&version), Some(flags), Some(count)) =
                (trun.first(), be_u32(trun, 0), be_u32(trun, 4))
            else {
                continue;
            };
            let flags = flags & 0x00ff_ffff;
            if version != 1 || flags & 0x800 == 0 {
                continue;
            }
            let mut at = 8 + 4 * usize::from(flags & 0x1 != 0) + 4 * usize::from(flags & 0x4 != 0);
            let per_sample = 4 * [0x100, 0x200, 0x400, 0x800]
                .iter()
                .filter(|bit| flags & **bit != 0)
                .count();
            let offset_at = 4 * [0x100, 0x200, 0x400]
                .iter()
                .filter(|bit| flags & **bit != 0)
                .count();
            for _ in 0..count {
                let Some(offset) = be_u32(trun, at + offset_at) else {
                    break;
                };
                most_negative = most_negative.min(i64::from(offset as i32));
                at += per_sample;
            }
        }
    }
    -most_negative as f64 / f64::from(timescale)
}

/// (type, size) of each top-level box, or why they do not tile the bytes.
fn top_level_boxes(bytes: &[u8]) -> Result<Vec<([u8; 4], u64)>, String> {
    let mut boxes = Vec::new();
    let mut offset = 0u64;
    let total = bytes.len() as u64;
    if total == 0 {
        return Err("empty".to_owned());
    }
    while offset < total {
        let at = offset as usize;
        let Some(header) = bytes.get(at..at + 8) else {
            return Err(format!("{} stray bytes at the end", total - offset));
        };
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = [header[4], header[5], header[6], header[7]];
        let size = match size32 {
            0 => total - offset,
            1 => {
                let Some(large) = bytes.get(at + 8..at + 16) else {
                    return Err("a 64-bit box size is cut off".to_owned());
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(large);
                u64::from_be_bytes(be)
            }
            n => u64::from(n),
        };
        if size < 8 {
            return Err(format!(
                "box {:?} declares {size} bytes",
                String::from_utf8_lossy(&kind)
            ));
        }
        if offset + size > total {
            return Err(format!(
                "box {:?} at byte {offset} declares {size} bytes but only {} remain: truncated",
                String::from_utf8_lossy(&kind),
                total - offset
            ));
        }
        boxes.push((kind, size));
        offset += size;
    }
    Ok(boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_fold_into_segments_and_gops_without_being_kept() {
        // 25 fps, I P B B order (pts 0, 3, 1, 2 in frames), a keyframe every
        // 8 frames, 2 GOPs per segment; durations left at 0 as fragments
        // demux, so each is the next packet's decode step.
        let frame = 0.04;
        let order = [0.0, 3.0, 1.0, 2.0, 4.0, 7.0, 5.0, 6.0];
        let packets = (0..32).map(|i| {
            let gop = f64::from(i / 8);
            PacketInfo {
                pts: Some((gop * 8.0 + order[(i % 8) as usize] + 2.0) * frame),
                dts: Some(f64::from(i) * frame),
                duration: 0.0,
                key: i % 8 == 0,
                segment: Some((i / 16) as usize),
            }
        });
        let media = fold_packets(RenditionMedia::default(), 2, true, packets);
        assert_eq!(media.frames, 32);
        assert_eq!(media.start(), Some(2.0 * frame));
        assert!((media.duration() - 32.0 * frame).abs() < 1e-9);
        assert!((media.frame_rate().unwrap_or(0.0) - 25.0).abs() < 1e-6);
        assert_eq!(media.segments.len(), 2);
        for (i, segment) in media.segments.iter().enumerate() {
            assert_eq!(segment.packets, 16);
            assert!((segment.duration - 16.0 * frame).abs() < 1e-9);
            assert_eq!(segment.starts_with_keyframe, Some(true));
            let start = segment.start.unwrap_or(-1.0);
            assert!((start - (i as f64 * 16.0 + 2.0) * frame).abs() < 1e-9);
        }
        let keys: Vec<(Option<usize>, u64)> = media
            .gops
            .iter()
            .map(|g| (g.segment, g.index_in_segment))
            .collect();
        assert_eq!(
            keys,
            [(Some(0), 0), (Some(0), 8), (Some(1), 0), (Some(1), 8)]
        );
        // A quarter of an 8-frame GOP reaches 2 frames past the key: the
        // key, +1, +2 and the first past them (+3) are kept, in
        // presentation order.
        let early: Vec<f64> = media.gops[1]
            .early
            .iter()
            .map(|t| (t / frame).round())
            .collect();
        assert_eq!(early, [10.0, 11.0, 12.0, 13.0]);
        let audio = fold_packets(
            RenditionMedia::default(),
            0,
            false,
            (0..10).map(|i| PacketInfo {
                pts: Some(f64::from(i) * 0.021),
                dts: Some(f64::from(i) * 0.021),
                duration: 0.021,
                key: true,
                segment: None,
            }),
        );
        assert_eq!(audio.frames, 10);
        assert!(audio.gops.is_empty(), "every audio packet is a keyframe");
        // A stream that lost frames just before its end (a publisher cut
        // mid-GOP): the last frame lasts a frame, not the gap before it.
        let gap = fold_packets(
            RenditionMedia::default(),
            1,
            true,
            [0.0, 1.0, 2.0, 5.0].into_iter().map(|frames| PacketInfo {
                pts: Some(6.0 + frames / 30.0),
                dts: Some(6.0 + frames / 30.0),
                duration: 0.0,
                key: frames == 0.0,
                segment: Some(0),
            }),
        );
        let held = gap.segments[0].duration * 30.0;
        assert!((held - 6.0).abs() < 1e-9, "{held} frames: {gap:?}");
        let mut shifted = media.clone();
        shifted.shift_earlier(2.0 * frame);
        assert_eq!(shifted.start(), Some(0.0));
        assert!((shifted.gops[1].key_pts - 8.0 * frame).abs() < 1e-9);
    }

    fn bx(kind: &[u8; 4], payload: usize) -> Vec<u8> {
        let mut out = ((8 + payload) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend(std::iter::repeat_n(0u8, payload));
        out
    }

    #[test]
    fn segments_must_tile_with_moof_and_mdat() {
        let mut segment = bx(b"styp", 8);
        segment.extend(bx(b"moof", 20));
        segment.extend(bx(b"mdat", 100));
        assert_eq!(segment_box_problem(&segment), None);
        let cut = &segment[..segment.len() - 10];
        assert!(segment_box_problem(cut).unwrap().contains("truncated"));
        assert!(segment_box_problem(&bx(b"mdat", 4))
            .unwrap()
            .contains("moof"));
        assert!(segment_box_problem(&[]).is_some());
    }

    fn full_box(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![version];
        body.extend_from_slice(&flags.to_be_bytes()[1..]);
        body.extend_from_slice(payload);
        wrap(kind, &body)
    }

    fn wrap(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((8 + payload.len()) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn ffmpeg_shifts_negative_composition_offsets_without_an_edit_list() {
        // mdhd v0: creation, modification, timescale 90000, duration.
        let mut mdhd = vec![0u8; 8];
        mdhd.extend_from_slice(&90_000u32.to_be_bytes());
        mdhd.extend_from_slice(&[0u8; 8]);
        let mdia = wrap(b"mdia", &full_box(b"mdhd", 0, 0, &mdhd));
        let init = wrap(b"moov", &wrap(b"trak", &mdia));
        // trun v1: data offset, then (size, composition offset) per sample.
        let mut samples = Vec::new();
        samples.extend_from_slice(&100i32.to_be_bytes());
        for (size, offset) in [(10u32, 0i32), (11, 3000), (12, -3000), (13, 0)] {
            samples.extend_from_slice(&size.to_be_bytes());
            samples.extend_from_slice(&offset.to_be_bytes());
        }
        let mut trun_payload = 4u32.to_be_bytes().to_vec();
        trun_payload.extend_from_slice(&samples);
        let trun = full_box(b"trun", 1, 0x1 | 0x200 | 0x800, &trun_payload);
        let segment = wrap(b"moof", &wrap(b"traf", &trun));
        let shift = ffmpeg_composition_shift(&init, &[&segment]);
        assert!((shift - 3000.0 / 90_000.0).abs() < 1e-9, "{shift}");
        // Unsigned offsets (version 0) or an edit list: no shift.
        let v0 = wrap(
            b"moof",
            &wrap(
                b"traf",
                &full_box(b"trun", 0, 0x1 | 0x200 | 0x800, &trun_payload),
            ),
        );
        assert_eq!(ffmpeg_composition_shift(&init, &[&v0]), 0.0);
        let edited = wrap(
            b"moov",
            &wrap(
                b"trak",
                &[
                    mdia.clone(),
                    wrap(b"edts", &full_box(b"elst", 0, 0, &[0; 4])),
                ]
                .concat(),
            ),
        );
        assert_eq!(ffmpeg_composition_shift(&edited, &[&segment]), 0.0);
        // Cut boxes are read as far as they go.
        assert_eq!(
            ffmpeg_composition_shift(&init[..10], &[&segment[..20]]),
            0.0
        );
    }

    #[test]
    fn mpeg_ts_segments_are_told_apart_and_must_be_whole_packets() {
        let mut ts = Vec::new();
        for _ in 0..3 {
            ts.push(TS_SYNC);
            ts.extend(std::iter::repeat_n(0xffu8, TS_PACKET - 1));
        }
        assert_eq!(Container::sniff(&ts), Container::MpegTs);
        assert_eq!(ts_problem(&ts), None);
        assert!(ts_problem(&ts[..ts.len() - 5])
            .unwrap()
            .contains("truncated"));
        let mut lost_sync = ts.clone();
        lost_sync[TS_PACKET] = 0;
        assert!(ts_problem(&lost_sync).unwrap().contains("packet 1"));
        // An MP4 box that happens to start with 0x47 is not taken for TS.
        let mut mp4 = bx(b"moof", 400);
        mp4[0] = TS_SYNC;
        assert_eq!(Container::sniff(&mp4), Container::Cmaf);
        assert_eq!(Container::sniff(&bx(b"styp", 8)), Container::Cmaf);
    }

    #[test]
    fn codec_strings_without_a_configuration_record() {
        // Annex B: SPS (High, level 3.1) after a 4-byte start code, then a PPS.
        let extradata = [
            0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac, 0, 0, 1, 0x68, 0xeb,
        ];
        assert_eq!(
            codec_string_without_config(ff::codec::Id::H264, &extradata, -99).as_deref(),
            Some("avc1.64001f")
        );
        assert_eq!(
            codec_string_without_config(ff::codec::Id::H264, &[0, 0, 1, 0x68, 1], -99),
            None
        );
        assert_eq!(
            codec_string_without_config(ff::codec::Id::AAC, &[], 1).as_deref(),
            Some("mp4a.40.2")
        );
        assert_eq!(
            codec_string_without_config(ff::codec::Id::AAC, &[], -99),
            None
        );
    }

    #[test]
    fn codec_strings_from_decoder_configuration() {
        assert_eq!(
            codec_string(ff::codec::Id::H264, "avc1", &[1, 0x64, 0x00, 0x1f, 0xff]).as_deref(),
            Some("avc1.64001f")
        );
        // AAC-LC, 48 kHz, stereo: 0x11 0x90.
        assert_eq!(
            codec_string(ff::codec::Id::AAC, "mp4a", &[0x11, 0x90]).as_deref(),
            Some("mp4a.40.2")
        );
        assert_eq!(codec_string(ff::codec::Id::H264, "avc1", &[]), None);
    }
}
