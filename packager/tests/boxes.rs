//! Box-level checks: write init and media segments, walk them back.

mod common;

use bytes::Bytes;
use cascade_packager::{Rational, Sample, Segmenter};
use common::*;

const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

#[test]
fn video_init_segment_has_cmaf_structure() {
    let track = video_track(90_000);
    let init = track.init_segment();
    let top = parse_boxes(&init);
    assert_eq!(kinds(&top), ["ftyp", "moov"]);

    let ftyp = top[0].body;
    assert_eq!(&ftyp[..4], b"iso6");
    let brands: Vec<&[u8]> = ftyp[8..].chunks(4).collect();
    assert_eq!(brands, [b"iso6", b"cmfc", b"mp41", b"dash"]);

    let moov = top[1];
    assert_eq!(kinds(&moov.children()), ["mvhd", "trak", "mvex"]);
    let trak = moov.child("trak");
    // No edit list: timing comes from tfdt and signed composition offsets.
    assert_eq!(kinds(&trak.children()), ["tkhd", "mdia"]);
    let (_, tkhd_flags, tkhd) = trak.child("tkhd").full();
    assert_eq!(tkhd_flags, 3);
    assert_eq!(u32_at(tkhd, 8), 1, "track id");
    assert_eq!(u32_at(tkhd, 72), 1280 << 16);
    assert_eq!(u32_at(tkhd, 76), 720 << 16);

    let mdia = trak.child("mdia");
    assert_eq!(kinds(&mdia.children()), ["mdhd", "hdlr", "minf"]);
    let (_, _, mdhd) = mdia.child("mdhd").full();
    assert_eq!(u32_at(mdhd, 8), 90_000, "timescale");
    assert_eq!(u16_at(mdhd, 16), 0x55c4, "language und");
    let (_, _, hdlr) = mdia.child("hdlr").full();
    assert_eq!(&hdlr[4..8], b"vide");

    let minf = mdia.child("minf");
    assert_eq!(kinds(&minf.children()), ["vmhd", "dinf", "stbl"]);
    let stbl = minf.child("stbl");
    assert_eq!(
        kinds(&stbl.children()),
        ["stsd", "stts", "stsc", "stsz", "stco"]
    );
    let stsd = stbl.child("stsd");
    let entries = stsd.children_after(8);
    assert_eq!(kinds(&entries), ["avc1"]);
    let avc1 = entries[0];
    assert_eq!(u16_at(avc1.body, 24), 1280);
    assert_eq!(u16_at(avc1.body, 26), 720);
    let avc1_children = avc1.children_after(78);
    assert_eq!(kinds(&avc1_children), ["avcC"]);
    let avcc = avc1_children[0].body;
    assert_eq!(&avcc[..6], &[1, 0x64, 0x00, 0x1f, 0xff, 0xe1]);
    assert_eq!(usize::from(u16_at(avcc, 6)), SPS_720P_HIGH.len());
    assert_eq!(&avcc[8..8 + SPS_720P_HIGH.len()], SPS_720P_HIGH);

    let (_, _, trex) = moov.child("mvex").child("trex").full();
    assert_eq!(u32_at(trex, 0), 1);
    assert_eq!(u32_at(trex, 4), 1);
    assert_eq!(track.codec_string(), "avc1.64001f");
}

#[test]
fn audio_init_segment_carries_esds() {
    let track = audio_track();
    let init = track.init_segment();
    let top = parse_boxes(&init);
    let moov = top[1];
    let mdia = moov.child("trak").child("mdia");
    let (_, _, mdhd) = mdia.child("mdhd").full();
    assert_eq!(u32_at(mdhd, 8), 48_000);
    let (_, _, hdlr) = mdia.child("hdlr").full();
    assert_eq!(&hdlr[4..8], b"soun");
    let minf = mdia.child("minf");
    assert_eq!(kinds(&minf.children()), ["smhd", "dinf", "stbl"]);
    let entries = minf.child("stbl").child("stsd").children_after(8);
    assert_eq!(kinds(&entries), ["mp4a"]);
    let mp4a = entries[0];
    assert_eq!(u16_at(mp4a.body, 16), 2, "channels");
    assert_eq!(u32_at(mp4a.body, 24), 48_000 << 16);
    let children = mp4a.children_after(28);
    assert_eq!(kinds(&children), ["esds"]);
    let (_, _, esds) = children[0].full();
    assert_eq!(esds[0], 0x03);
    assert_eq!(usize::from(esds[1]), esds.len() - 2, "ES_Descriptor length");
    let asc_at = esds
        .windows(4)
        .position(|window| window == [0x05, 0x02, 0x11, 0x90])
        .expect("DecoderSpecificInfo with the ASC");
    assert!(asc_at > 0);
    assert_eq!(track.codec_string(), "mp4a.40.2");
}

#[test]
fn fragment_timing_uses_tfdt_and_negative_composition_offsets() {
    // 30 fps at 90 kHz, I P B B P B GOPs of 6 frames, segments of 0.2 s.
    let samples = b_frame_stream(12, 6, 3000);
    let mut segmenter = Segmenter::new(video_track(90_000), Rational::new(1, 5).unwrap());
    let mut segments = Vec::new();
    for sample in samples.iter().cloned() {
        segments.extend(segmenter.push(sample).unwrap());
    }
    segments.extend(segmenter.finish().unwrap());
    assert_eq!(segments.len(), 2);

    for (index, segment) in segments.iter().enumerate() {
        let fragment = parse_fragment(segment.data());
        assert_eq!(fragment.sequence_number, index as u32 + 1);
        assert_eq!(segment.sequence_number(), index as u64 + 1);
        assert_eq!(fragment.tfhd_flags, 0x02_0000, "default-base-is-moof only");
        assert_eq!(fragment.trun_version, 1);
        // tfdt is the earliest presentation time: the keyframe's.
        assert_eq!(fragment.base_media_decode_time, index as u64 * 18_000);
        assert_eq!(segment.start(), index as u64 * 18_000);
        assert_eq!(segment.duration(), 18_000);
        assert_eq!(segment.size(), segment.data().len() as u64);

        let gop = &samples[index * 6..index * 6 + 6];
        let expected_pts: Vec<i64> = gop.iter().map(|s| s.pts).collect();
        assert_eq!(fragment.presentation_times(), expected_pts);
        let offsets: Vec<i32> = fragment
            .samples
            .iter()
            .map(|s| s.composition_offset)
            .collect();
        assert_eq!(offsets, [0, 6000, -3000, -3000, 3000, -3000]);
        assert!(fragment.samples.iter().all(|s| s.duration == 3000));
        let flags: Vec<u32> = fragment.samples.iter().map(|s| s.flags).collect();
        assert_eq!(
            flags,
            [SYNC, NON_SYNC, NON_SYNC, NON_SYNC, NON_SYNC, NON_SYNC]
        );

        // data_offset counts from the start of moof to the mdat payload, and
        // the payload is exactly the samples, each a 4-byte-length NAL
        // (the AUD was dropped).
        assert_eq!(fragment.data_offset as usize, fragment.mdat_payload_offset);
        let sizes: u32 = fragment.samples.iter().map(|s| s.size).sum();
        assert_eq!(sizes as usize, fragment.mdat_payload_len);
        let mut at = fragment.mdat_payload_offset;
        for (sample, original) in fragment.samples.iter().zip(gop) {
            let nal_length = u32_at(segment.data(), at);
            assert_eq!(nal_length + 4, sample.size);
            let nal = &segment.data()[at + 4..at + 4 + nal_length as usize];
            assert_eq!(nal[0], if original.keyframe { 0x65 } else { 0x41 });
            assert_eq!(
                i64::from(slice_tag(nal)),
                original.pts / 3000,
                "sample order kept"
            );
            at += sample.size as usize;
        }
    }
}

#[test]
fn audio_fragment_strips_adts_and_has_no_composition_offsets() {
    let raw = [0x21u8, 0x10, 0x05, 0x00, 0x07];
    let frame_length = 7 + raw.len() as u32;
    let mut adts = vec![
        0xff,
        0xf1,
        0x4c,
        0x80 | ((frame_length >> 11) & 0x03) as u8,
        ((frame_length >> 3) & 0xff) as u8,
        (((frame_length & 0x07) << 5) as u8) | 0x1f,
        0xfc,
    ];
    adts.extend_from_slice(&raw);

    let mut segmenter = Segmenter::new(audio_track(), Rational::integer(2).unwrap());
    for index in 0..3i64 {
        let data = if index == 1 {
            adts.clone()
        } else {
            raw.to_vec()
        };
        let pushed = segmenter
            .push(Sample {
                pts: index * 1024,
                dts: index * 1024,
                duration: 1024,
                keyframe: false,
                data: Bytes::from(data),
            })
            .unwrap();
        assert!(pushed.is_none());
    }
    let segment = segmenter.finish().unwrap().unwrap();
    let fragment = parse_fragment(segment.data());
    assert_eq!(fragment.base_media_decode_time, 0);
    assert_eq!(fragment.samples.len(), 3);
    for sample in &fragment.samples {
        assert_eq!(
            *sample,
            TrunSample {
                duration: 1024,
                size: raw.len() as u32,
                flags: SYNC,
                composition_offset: 0,
            }
        );
    }
    let payload = &segment.data()[fragment.mdat_payload_offset..];
    assert_eq!(payload, [raw, raw, raw].concat());
    assert_eq!(segment.duration(), 3 * 1024);
    assert_eq!(
        segment.bitrate(),
        (segment.size() * 8 * 48_000).div_ceil(3 * 1024)
    );
}
