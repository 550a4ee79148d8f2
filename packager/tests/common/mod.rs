//! Test helpers: a tiny ISO BMFF box walker and synthetic inputs.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use cascade_packager::{AudioTrack, Rational, Sample, Track, VideoTrack};

/// SPS and PPS from `ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30
/// -c:v libx264 -profile:v high` (x264 core 164): High profile, level 3.1.
pub const SPS_720P_HIGH: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
];
pub const PPS_720P_HIGH: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
/// AudioSpecificConfig of AAC-LC, 48 kHz, stereo.
pub const ASC_LC_48K_STEREO: &[u8] = &[0x11, 0x90];

pub fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter()
        .flat_map(|nal| [&[0u8, 0, 0, 1][..], nal].concat())
        .collect()
}

pub fn video_track(timescale: u32) -> Track {
    let config = annex_b(&[SPS_720P_HIGH, PPS_720P_HIGH]);
    VideoTrack::new(
        &config,
        1280,
        720,
        timescale,
        Rational::integer(30).unwrap(),
    )
    .unwrap()
    .into()
}

pub fn audio_track() -> Track {
    AudioTrack::new(ASC_LC_48K_STEREO, 48_000, 2)
        .unwrap()
        .into()
}

/// A fake access unit: AUD, then an IDR or non-IDR slice NAL of `size` bytes
/// whose payload spells `tag` in 8 ASCII digits (no zero bytes, so no
/// accidental start codes) so tests can recognise it in `mdat`.
pub fn access_unit(keyframe: bool, size: usize, tag: u32) -> Bytes {
    let mut slice = vec![if keyframe { 0x65 } else { 0x41 }];
    slice.extend_from_slice(format!("{tag:08}").as_bytes());
    slice.resize(size.max(9), 0x5a);
    Bytes::from(annex_b(&[&[0x09, 0xf0], &slice]))
}

pub fn video_sample(pts: i64, dts: i64, duration: u32, keyframe: bool, tag: u32) -> Sample {
    Sample {
        pts,
        dts,
        duration,
        keyframe,
        data: access_unit(keyframe, 40 + (tag as usize % 7) * 10, tag),
    }
}

/// Frames in decode order for closed GOPs of `gop` frames with the pattern
/// I P B B P B B ... (one frame of reorder delay per B run), the first
/// frame presented at 0. Keyframes sit at every multiple of `gop` frames.
pub fn b_frame_stream(frames: usize, gop: usize, frame_duration: i64) -> Vec<Sample> {
    let mut samples = Vec::new();
    let delay = 2 * frame_duration;
    let mut gop_start = 0;
    while gop_start < frames {
        let gop_end = (gop_start + gop).min(frames);
        // Presentation order indices of this GOP in decode order.
        let mut order = vec![gop_start];
        let mut next = gop_start + 1;
        while next < gop_end {
            let anchor = (next + 2).min(gop_end - 1);
            order.push(anchor);
            order.extend(next..anchor);
            next = anchor + 1;
        }
        for index in order {
            samples.push((index, index == gop_start));
        }
        gop_start = gop_end;
    }
    samples
        .into_iter()
        .enumerate()
        .map(|(decode_index, (presentation_index, keyframe))| {
            video_sample(
                presentation_index as i64 * frame_duration,
                decode_index as i64 * frame_duration - delay,
                frame_duration as u32,
                keyframe,
                presentation_index as u32,
            )
        })
        .collect()
}

/// One box: its type, where it starts in the buffer, and its body.
#[derive(Debug, Clone, Copy)]
pub struct Mp4Box<'a> {
    pub kind: [u8; 4],
    pub offset: usize,
    pub body: &'a [u8],
}

impl<'a> Mp4Box<'a> {
    pub fn kind(&self) -> &str {
        std::str::from_utf8(&self.kind).unwrap()
    }

    /// Children of a plain container box.
    pub fn children(&self) -> Vec<Mp4Box<'a>> {
        self.children_after(0)
    }

    /// Children that start `skip` bytes into the body (sample entries, stsd).
    pub fn children_after(&self, skip: usize) -> Vec<Mp4Box<'a>> {
        parse_boxes_at(&self.body[skip..], self.offset + 8 + skip)
    }

    pub fn child(&self, kind: &str) -> Mp4Box<'a> {
        find(&self.children(), kind)
    }

    /// (version, flags, rest of the body) of a full box.
    pub fn full(&self) -> (u8, u32, &'a [u8]) {
        let flags = u32::from_be_bytes([0, self.body[1], self.body[2], self.body[3]]);
        (self.body[0], flags, &self.body[4..])
    }
}

/// Splits `data` into top-level boxes, asserting that sizes add up exactly.
pub fn parse_boxes(data: &[u8]) -> Vec<Mp4Box<'_>> {
    parse_boxes_at(data, 0)
}

fn parse_boxes_at(data: &[u8], base: usize) -> Vec<Mp4Box<'_>> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at < data.len() {
        assert!(
            data.len() - at >= 8,
            "truncated box header at {}",
            base + at
        );
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        assert!(size >= 8, "box size {size} at {}", base + at);
        assert!(
            at + size <= data.len(),
            "box at {} overruns its parent",
            base + at
        );
        boxes.push(Mp4Box {
            kind: data[at + 4..at + 8].try_into().unwrap(),
            offset: base + at,
            body: &data[at + 8..at + size],
        });
        at += size;
    }
    assert_eq!(at, data.len(), "box sizes do not add up");
    boxes
}

pub fn kinds(boxes: &[Mp4Box<'_>]) -> Vec<String> {
    boxes.iter().map(|b| b.kind().to_owned()).collect()
}

pub fn find<'a>(boxes: &[Mp4Box<'a>], kind: &str) -> Mp4Box<'a> {
    *boxes
        .iter()
        .find(|b| b.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} among {:?}", kinds(boxes)))
}

/// The tag [`access_unit`] wrote into a slice NAL.
pub fn slice_tag(nal: &[u8]) -> u32 {
    std::str::from_utf8(&nal[1..9]).unwrap().parse().unwrap()
}

pub fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(data[at..at + 4].try_into().unwrap())
}

pub fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(data[at..at + 2].try_into().unwrap())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunSample {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
    pub composition_offset: i32,
}

/// A media segment read back.
#[derive(Debug)]
pub struct Fragment {
    pub sequence_number: u32,
    pub tfhd_flags: u32,
    pub base_media_decode_time: u64,
    pub trun_version: u8,
    pub data_offset: i32,
    pub samples: Vec<TrunSample>,
    /// Offset of the first byte of the mdat payload within the segment.
    pub mdat_payload_offset: usize,
    pub mdat_payload_len: usize,
}

impl Fragment {
    /// Presentation time of each sample: tfdt + decode deltas + composition offset.
    pub fn presentation_times(&self) -> Vec<i64> {
        let mut decode_time = self.base_media_decode_time as i64;
        self.samples
            .iter()
            .map(|sample| {
                let pts = decode_time + i64::from(sample.composition_offset);
                decode_time += i64::from(sample.duration);
                pts
            })
            .collect()
    }
}

pub fn parse_fragment(segment: &[u8]) -> Fragment {
    let top = parse_boxes(segment);
    assert_eq!(kinds(&top), ["moof", "mdat"]);
    let moof = top[0];
    assert_eq!(kinds(&moof.children()), ["mfhd", "traf"]);
    let (_, _, mfhd) = moof.child("mfhd").full();
    let traf = moof.child("traf");
    assert_eq!(kinds(&traf.children()), ["tfhd", "tfdt", "trun"]);
    let (_, tfhd_flags, tfhd) = traf.child("tfhd").full();
    assert_eq!(u32_at(tfhd, 0), 1, "track id");
    let (tfdt_version, _, tfdt) = traf.child("tfdt").full();
    assert_eq!(tfdt_version, 1);
    let (trun_version, trun_flags, trun) = traf.child("trun").full();
    assert_eq!(trun_flags & 0x1, 0x1, "data offset present");
    let count = u32_at(trun, 0) as usize;
    let data_offset = u32_at(trun, 4) as i32;
    let has = |flag: u32| trun_flags & flag != 0;
    let mut at = 8;
    let mut samples = Vec::new();
    for _ in 0..count {
        let mut read = |present: bool| {
            if present {
                let value = u32_at(trun, at);
                at += 4;
                value
            } else {
                0
            }
        };
        samples.push(TrunSample {
            duration: read(has(0x100)),
            size: read(has(0x200)),
            flags: read(has(0x400)),
            composition_offset: read(has(0x800)) as i32,
        });
    }
    assert_eq!(at, trun.len(), "trun has trailing bytes");
    let mdat = top[1];
    Fragment {
        sequence_number: u32_at(mfhd, 0),
        tfhd_flags,
        base_media_decode_time: u64::from_be_bytes(tfdt[..8].try_into().unwrap()),
        trun_version,
        data_offset,
        samples,
        mdat_payload_offset: mdat.offset + 8,
        mdat_payload_len: mdat.body.len(),
    }
}
