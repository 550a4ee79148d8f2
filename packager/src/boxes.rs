//! ISO/IEC 14496-12 box writing: the CMAF header (`ftyp` + `moov`) and
//! CMAF fragments (`moof` + `mdat`).
//!
//! Each track is written as its own single-track CMAF track file (ISO/IEC
//! 23000-19 7.3), so the track ID is always 1.

use crate::error::{Error, Result};
use crate::track::{AudioTrack, Track, VideoTrack};

const TRACK_ID: u32 = 1;

/// `sample_depends_on = 2` (an I picture): a sync sample.
pub(crate) const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_depends_on = 1` and `sample_is_non_sync_sample = 1`.
pub(crate) const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x000001;
const TRUN_SAMPLE_DURATION: u32 = 0x000100;
const TRUN_SAMPLE_SIZE: u32 = 0x000200;
const TRUN_SAMPLE_FLAGS: u32 = 0x000400;
const TRUN_COMPOSITION_OFFSETS: u32 = 0x000800;

/// Appends a box whose body `body` writes, then patches in its size.
///
/// Callers keep bodies below 4 GiB (media segments check before writing).
fn write_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn write_full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(out, kind, |out| {
        out.push(version);
        out.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(out);
    });
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_zeros(out: &mut Vec<u8>, count: usize) {
    out.resize(out.len() + count, 0);
}

/// The identity transformation matrix of `mvhd` and `tkhd`.
fn put_unity_matrix(out: &mut Vec<u8>) {
    for value in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
        put_u32(out, value);
    }
}

/// Writes the CMAF header: `ftyp` then `moov` with one track and `mvex`.
pub(crate) fn write_init_segment(track: &Track) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_box(&mut out, b"ftyp", |out| {
        out.extend_from_slice(b"iso6");
        put_u32(out, 0);
        for brand in [b"iso6", b"cmfc", b"mp41", b"dash"] {
            out.extend_from_slice(brand);
        }
    });
    write_box(&mut out, b"moov", |out| {
        write_mvhd(out, track.timescale());
        write_box(out, b"trak", |out| {
            write_tkhd(out, track);
            if let Track::Audio(audio) = track {
                write_priming_edit(out, audio.priming());
            }
            write_box(out, b"mdia", |out| {
                write_mdhd(out, track.timescale());
                write_hdlr(out, track);
                write_minf(out, track);
            });
        });
        write_box(out, b"mvex", |out| {
            write_full_box(out, b"trex", 0, 0, |out| {
                put_u32(out, TRACK_ID);
                put_u32(out, 1); // default_sample_description_index
                put_u32(out, 0); // default_sample_duration
                put_u32(out, 0); // default_sample_size
                put_u32(out, 0); // default_sample_flags
            });
        });
    });
    out
}

/// An edit list that starts the presentation `priming` samples into the
/// media (ISO/IEC 14496-12 8.6.6): one edit, `media_time` = `priming` in
/// the media timescale, `segment_duration` 0 (the rest of the media,
/// whose length a fragmented file does not know), rate 1. Nothing for no
/// priming.
fn write_priming_edit(out: &mut Vec<u8>, priming: u32) {
    if priming == 0 {
        return;
    }
    write_box(out, b"edts", |out| {
        write_full_box(out, b"elst", 0, 0, |out| {
            put_u32(out, 1); // entry_count
            put_u32(out, 0); // segment_duration
            put_u32(out, priming); // media_time (a positive int32)
            put_u16(out, 1); // media_rate_integer
            put_u16(out, 0); // media_rate_fraction
        });
    });
}

fn write_mvhd(out: &mut Vec<u8>, timescale: u32) {
    write_full_box(out, b"mvhd", 0, 0, |out| {
        put_u32(out, 0); // creation_time: left 0 so the output is reproducible
        put_u32(out, 0); // modification_time
        put_u32(out, timescale);
        put_u32(out, 0); // duration: unknown in a fragmented file
        put_u32(out, 0x0001_0000); // rate 1.0
        put_u16(out, 0x0100); // volume 1.0
        put_zeros(out, 10);
        put_unity_matrix(out);
        put_zeros(out, 24); // pre_defined
        put_u32(out, TRACK_ID + 1); // next_track_ID
    });
}

fn write_tkhd(out: &mut Vec<u8>, track: &Track) {
    // track_enabled | track_in_movie
    write_full_box(out, b"tkhd", 0, 0x000003, |out| {
        put_u32(out, 0); // creation_time
        put_u32(out, 0); // modification_time
        put_u32(out, TRACK_ID);
        put_u32(out, 0); // reserved
        put_u32(out, 0); // duration
        put_zeros(out, 8);
        put_u16(out, 0); // layer
        put_u16(out, 0); // alternate_group
        put_u16(
            out,
            if matches!(track, Track::Audio(_)) {
                0x0100
            } else {
                0
            },
        );
        put_u16(out, 0); // reserved
        put_unity_matrix(out);
        let (width, height) = match track {
            Track::Video(video) => (video.width(), video.height()),
            Track::Audio(_) => (0, 0),
        };
        // 16.16 fixed point; the SPS parser bounds dimensions well below 2^16.
        put_u32(out, width.min(0xffff) << 16);
        put_u32(out, height.min(0xffff) << 16);
    });
}

fn write_mdhd(out: &mut Vec<u8>, timescale: u32) {
    write_full_box(out, b"mdhd", 0, 0, |out| {
        put_u32(out, 0); // creation_time
        put_u32(out, 0); // modification_time
        put_u32(out, timescale);
        put_u32(out, 0); // duration
                         // ISO-639-2/T "und", each letter as (char - 0x60) in 5 bits.
        let language = b"und"
            .iter()
            .fold(0u16, |acc, &letter| (acc << 5) | u16::from(letter - 0x60));
        put_u16(out, language);
        put_u16(out, 0); // pre_defined
    });
}

fn write_hdlr(out: &mut Vec<u8>, track: &Track) {
    let (handler, name): (&[u8; 4], &[u8]) = match track {
        Track::Video(_) => (b"vide", b"VideoHandler\0"),
        Track::Audio(_) => (b"soun", b"SoundHandler\0"),
    };
    write_full_box(out, b"hdlr", 0, 0, |out| {
        put_u32(out, 0); // pre_defined
        out.extend_from_slice(handler);
        put_zeros(out, 12);
        out.extend_from_slice(name);
    });
}

fn write_minf(out: &mut Vec<u8>, track: &Track) {
    write_box(out, b"minf", |out| {
        match track {
            Track::Video(_) => write_full_box(out, b"vmhd", 0, 1, |out| {
                put_zeros(out, 8); // graphicsmode, opcolor
            }),
            Track::Audio(_) => write_full_box(out, b"smhd", 0, 0, |out| {
                put_zeros(out, 4); // balance, reserved
            }),
        }
        write_box(out, b"dinf", |out| {
            write_full_box(out, b"dref", 0, 0, |out| {
                put_u32(out, 1);
                // flags = 1: the media data is in this same file.
                write_full_box(out, b"url ", 0, 1, |_| {});
            });
        });
        write_box(out, b"stbl", |out| {
            write_full_box(out, b"stsd", 0, 0, |out| {
                put_u32(out, 1);
                match track {
                    Track::Video(video) => write_avc1(out, video),
                    Track::Audio(audio) => write_mp4a(out, audio),
                }
            });
            // A fragmented file keeps its samples in moof, so the sample
            // tables are present but empty.
            for kind in [b"stts", b"stsc"] {
                write_full_box(out, kind, 0, 0, |out| put_u32(out, 0));
            }
            write_full_box(out, b"stsz", 0, 0, |out| {
                put_u32(out, 0); // sample_size
                put_u32(out, 0); // sample_count
            });
            write_full_box(out, b"stco", 0, 0, |out| put_u32(out, 0));
        });
    });
}

fn write_avc1(out: &mut Vec<u8>, video: &VideoTrack) {
    write_box(out, b"avc1", |out| {
        put_zeros(out, 6); // reserved
        put_u16(out, 1); // data_reference_index
        put_zeros(out, 16); // pre_defined, reserved
        put_u16(out, u16::try_from(video.width()).unwrap_or(u16::MAX));
        put_u16(out, u16::try_from(video.height()).unwrap_or(u16::MAX));
        put_u32(out, 0x0048_0000); // 72 dpi
        put_u32(out, 0x0048_0000);
        put_u32(out, 0); // reserved
        put_u16(out, 1); // frame_count
        put_zeros(out, 32); // compressorname: empty Pascal string
        put_u16(out, 0x0018); // depth
        put_u16(out, 0xffff); // pre_defined = -1
        write_box(out, b"avcC", |out| video.config().write_avcc_body(out));
    });
}

fn write_mp4a(out: &mut Vec<u8>, audio: &AudioTrack) {
    write_box(out, b"mp4a", |out| {
        put_zeros(out, 6); // reserved
        put_u16(out, 1); // data_reference_index
        put_zeros(out, 8); // reserved
        put_u16(out, audio.channels());
        put_u16(out, 16); // samplesize
        put_u16(out, 0); // pre_defined
        put_u16(out, 0); // reserved
                         // 16.16 fixed point; rates above 65535 Hz do not fit and are left 0
                         // (decoders read the rate from the AudioSpecificConfig).
        let rate = if audio.sample_rate() <= 0xffff {
            audio.sample_rate() << 16
        } else {
            0
        };
        put_u32(out, rate);
        write_full_box(out, b"esds", 0, 0, |out| {
            audio.config().write_es_descriptor(out)
        });
    });
}

/// One sample's row in `trun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrunEntry {
    pub(crate) duration: u32,
    pub(crate) size: u32,
    pub(crate) flags: u32,
    pub(crate) composition_offset: i32,
}

/// Writes one CMAF fragment: `moof` (mfhd, traf: tfhd, tfdt v1, trun v1)
/// followed by `mdat` holding `payload`.
pub(crate) fn write_fragment(
    sequence_number: u32,
    base_media_decode_time: u64,
    entries: &[TrunEntry],
    payload: &[u8],
) -> Result<Vec<u8>> {
    let has_composition_offsets = entries.iter().any(|entry| entry.composition_offset != 0);
    let row_size = if has_composition_offsets { 16 } else { 12 };
    let moof_estimate = 128 + entries.len() * row_size;
    let total = moof_estimate as u64 + 8 + payload.len() as u64;
    let sample_count = u32::try_from(entries.len()).map_err(|_| Error::SegmentTooLarge(total))?;
    if total > u64::from(u32::MAX) {
        return Err(Error::SegmentTooLarge(total));
    }

    let mut out = Vec::with_capacity(total as usize);
    let mut data_offset_at = 0;
    write_box(&mut out, b"moof", |out| {
        write_full_box(out, b"mfhd", 0, 0, |out| put_u32(out, sequence_number));
        write_box(out, b"traf", |out| {
            write_full_box(out, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |out| {
                put_u32(out, TRACK_ID);
            });
            write_full_box(out, b"tfdt", 1, 0, |out| {
                out.extend_from_slice(&base_media_decode_time.to_be_bytes());
            });
            let mut flags =
                TRUN_DATA_OFFSET | TRUN_SAMPLE_DURATION | TRUN_SAMPLE_SIZE | TRUN_SAMPLE_FLAGS;
            if has_composition_offsets {
                flags |= TRUN_COMPOSITION_OFFSETS;
            }
            // Version 1: composition offsets are signed, so decode times can
            // be shifted to make tfdt the earliest presentation time.
            write_full_box(out, b"trun", 1, flags, |out| {
                put_u32(out, sample_count);
                data_offset_at = out.len();
                put_u32(out, 0); // data_offset, patched below
                for entry in entries {
                    put_u32(out, entry.duration);
                    put_u32(out, entry.size);
                    put_u32(out, entry.flags);
                    if has_composition_offsets {
                        out.extend_from_slice(&entry.composition_offset.to_be_bytes());
                    }
                }
            });
        });
    });
    // default-base-is-moof: the offset counts from the first byte of moof
    // to the first byte of sample data, past the 8-byte mdat header.
    let data_offset = (out.len() + 8) as u32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    write_box(&mut out, b"mdat", |out| out.extend_from_slice(payload));
    Ok(out)
}
