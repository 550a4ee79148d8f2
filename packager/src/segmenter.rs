//! Cutting a track into CMAF fragments at shared time boundaries.
//!
//! # Cut rule
//!
//! Boundaries sit at `k * target_duration` seconds from time zero. A segment
//! closes when a sample arrives that is a sync sample (a keyframe for video;
//! every audio frame) and whose presentation time is at or past the first
//! boundary after the open segment's start. The rule depends only on the
//! timestamps of sync samples, so independently encoded rungs whose
//! keyframes were forced at the same times are cut at the same places.
//!
//! # Timing
//!
//! Each fragment's `tfdt` is the earliest presentation time of its samples.
//! Decode times inside the fragment run on from there using the decode-time
//! deltas of the input, and the B-frame reordering shows up as signed
//! composition offsets (`trun` version 1), some of them negative. There is
//! no edit list: the media timeline starts at presentation time 0, and
//! players that place segments by `tfdt` (hls.js, dash.js, MSE) line audio
//! and video up exactly.
//!
//! FFmpeg's mov demuxer (and so its HLS and DASH demuxers) computes a
//! picture's time as `dts + dts_shift + offset`, where `dts_shift` is the
//! largest negative offset it has read, so with B-frames it shows video
//! that much late (one or two frames) against audio. That is FFmpeg's
//! reading, not the file's; the end-to-end test pins it down.

use bytes::Bytes;

use crate::boxes::{self, TrunEntry, NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS};
use crate::error::{Error, Result};
use crate::time::{ticks_to_seconds, Rational};
use crate::track::Track;

/// Sequence number of the first segment; HLS `EXT-X-MEDIA-SEQUENCE` and DASH
/// `startNumber` follow from the segments themselves.
pub const FIRST_SEQUENCE_NUMBER: u32 = 1;

/// One encoded frame (an H.264 access unit or an AAC frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Presentation time in the track timescale; must not be negative.
    pub pts: i64,
    /// Decode time in the track timescale; may be negative (B-frame delay).
    pub dts: i64,
    /// Duration in the track timescale; used for the last sample, whose
    /// successor is not there to measure it.
    pub duration: u32,
    /// Whether decoding can start here (an IDR picture). Ignored for audio.
    pub keyframe: bool,
    /// Annex B or length-prefixed H.264, or a raw (optionally ADTS-framed) AAC frame.
    pub data: Bytes,
}

/// What manifests need to know about a segment, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentInfo {
    /// Sequence number (`mfhd`, `$Number$`, `{seq}.m4s`), counting from [`FIRST_SEQUENCE_NUMBER`].
    pub sequence_number: u64,
    /// Earliest presentation time (equals `tfdt`), in the track timescale.
    pub start: u64,
    /// Duration in the track timescale (sum of the fragment's sample durations).
    pub duration: u64,
    /// Size of the segment in bytes.
    pub size: u64,
}

impl SegmentInfo {
    /// Bits per second over this segment (rounded up); 0 for a zero duration.
    pub fn bitrate(&self, timescale: u32) -> u64 {
        if self.duration == 0 {
            return 0;
        }
        let bits = u128::from(self.size) * 8 * u128::from(timescale);
        u64::try_from(bits.div_ceil(u128::from(self.duration))).unwrap_or(u64::MAX)
    }
}

/// A finished CMAF segment: one `moof` + `mdat` fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSegment {
    info: SegmentInfo,
    timescale: u32,
    sample_count: usize,
    data: Bytes,
}

impl MediaSegment {
    /// Sequence number, counting from [`FIRST_SEQUENCE_NUMBER`].
    pub fn sequence_number(&self) -> u64 {
        self.info.sequence_number
    }

    /// Earliest presentation time in the track timescale (the `tfdt` value).
    pub fn start(&self) -> u64 {
        self.info.start
    }

    /// Duration in the track timescale.
    pub fn duration(&self) -> u64 {
        self.info.duration
    }

    /// Ticks per second of [`start`](Self::start) and [`duration`](Self::duration).
    pub fn timescale(&self) -> u32 {
        self.timescale
    }

    /// Duration in seconds, for display.
    pub fn duration_seconds(&self) -> f64 {
        ticks_to_seconds(self.info.duration, self.timescale)
    }

    /// Number of samples in the segment.
    pub fn sample_count(&self) -> usize {
        self.sample_count
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// Bits per second over this segment (rounded up).
    pub fn bitrate(&self) -> u64 {
        self.info.bitrate(self.timescale)
    }

    /// The summary manifests are built from.
    pub fn info(&self) -> SegmentInfo {
        self.info
    }

    /// The segment bytes (`moof` + `mdat`).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Takes the segment bytes.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

#[derive(Debug)]
struct PendingSample {
    pts: i64,
    dts: i64,
    duration: u32,
    sync: bool,
    size: u32,
}

#[derive(Debug)]
struct OpenSegment {
    /// Index `k` of the boundary `k * target_duration` that closes this segment.
    closing_boundary: i128,
    samples: Vec<PendingSample>,
    payload: Vec<u8>,
}

/// Turns one track's samples, pushed in decode order, into media segments.
#[derive(Debug)]
pub struct Segmenter {
    track: Track,
    target_duration: Rational,
    next_sequence_number: u32,
    last_dts: Option<i64>,
    open: Option<OpenSegment>,
}

impl Segmenter {
    /// A segmenter cutting at multiples of `target_duration` seconds.
    pub fn new(track: Track, target_duration: Rational) -> Self {
        Self {
            track,
            target_duration,
            next_sequence_number: FIRST_SEQUENCE_NUMBER,
            last_dts: None,
            open: None,
        }
    }

    /// The track being segmented.
    pub fn track(&self) -> &Track {
        &self.track
    }

    /// The CMAF header for this track.
    pub fn init_segment(&self) -> Bytes {
        self.track.init_segment()
    }

    /// Adds the next sample in decode order; returns the segment it closed, if any.
    ///
    /// A rejected sample (bad data, timestamps out of order) leaves the
    /// segmenter as it was. If closing the open segment fails (timestamp
    /// differences beyond 32 bits, a segment over 4 GiB), that segment is
    /// dropped; treat the track as failed.
    pub fn push(&mut self, sample: Sample) -> Result<Option<MediaSegment>> {
        if sample.pts < 0 {
            return Err(Error::NegativePresentationTime { pts: sample.pts });
        }
        if let Some(previous) = self.last_dts {
            if sample.dts <= previous {
                return Err(Error::NonMonotonicDts {
                    previous,
                    current: sample.dts,
                });
            }
            let delta = i128::from(sample.dts) - i128::from(previous);
            if u32::try_from(delta).is_err() {
                return Err(Error::TimestampOutOfRange(sample.dts));
            }
        }
        let sync = match self.track {
            Track::Video(_) => sample.keyframe,
            Track::Audio(_) => true,
        };
        if self.open.is_none() && self.last_dts.is_none() && !sync {
            return Err(Error::FirstSampleNotKeyframe { dts: sample.dts });
        }

        // Normalise before touching any state, so a bad sample cannot leave a
        // segment half-closed.
        let data = self.normalise(&sample)?;
        let size =
            u32::try_from(data.len()).map_err(|_| Error::SegmentTooLarge(data.len() as u64))?;

        let closes = match &self.open {
            Some(open) => sync && self.boundary_reached(sample.pts, open.closing_boundary),
            None => false,
        };
        let closed = if closes {
            self.close(Some(sample.dts))?
        } else {
            None
        };

        let pending = PendingSample {
            pts: sample.pts,
            dts: sample.dts,
            duration: sample.duration,
            sync,
            size,
        };
        match &mut self.open {
            Some(open) => {
                open.samples.push(pending);
                open.payload.extend_from_slice(&data);
            }
            None => {
                self.open = Some(OpenSegment {
                    closing_boundary: self.boundary_after(sample.pts),
                    samples: vec![pending],
                    payload: data,
                });
            }
        }
        self.last_dts = Some(sample.dts);
        Ok(closed)
    }

    /// Closes the last segment; its final sample lasts its own `duration`.
    pub fn finish(mut self) -> Result<Option<MediaSegment>> {
        self.close(None)
    }

    fn normalise(&self, sample: &Sample) -> Result<Vec<u8>> {
        match &self.track {
            Track::Video(video) => {
                let mut data = Vec::with_capacity(sample.data.len() + 16);
                video
                    .config()
                    .append_access_unit(&sample.data, sample.dts, &mut data)?;
                Ok(data)
            }
            Track::Audio(_) => {
                let frame = crate::aac::strip_adts(&sample.data)?;
                if frame.is_empty() {
                    return Err(Error::EmptySample { dts: sample.dts });
                }
                Ok(frame.to_vec())
            }
        }
    }

    /// Target duration in ticks is `num * timescale / den`; comparisons are
    /// cross-multiplied so no rounding ever decides a cut.
    fn boundary_reached(&self, pts: i64, boundary_index: i128) -> bool {
        i128::from(pts) * i128::from(self.target_duration.denominator())
            >= boundary_index * self.boundary_unit()
    }

    /// Index of the first boundary strictly after `pts`.
    fn boundary_after(&self, pts: i64) -> i128 {
        (i128::from(pts) * i128::from(self.target_duration.denominator())) / self.boundary_unit()
            + 1
    }

    fn boundary_unit(&self) -> i128 {
        i128::from(self.target_duration.numerator()) * i128::from(self.track.timescale())
    }

    /// Turns the open segment into a fragment. `next_dts` is the decode time
    /// of the sample that follows (None at the end of the stream).
    fn close(&mut self, next_dts: Option<i64>) -> Result<Option<MediaSegment>> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let Some(earliest_pts) = open.samples.iter().map(|sample| sample.pts).min() else {
            return Ok(None);
        };
        // pts was checked non-negative on push.
        let base_decode_time = earliest_pts as u64;

        let mut entries = Vec::with_capacity(open.samples.len());
        let mut decode_time = i128::from(earliest_pts);
        let mut previous_delta: Option<u32> = None;
        for (index, sample) in open.samples.iter().enumerate() {
            let following_dts = open
                .samples
                .get(index + 1)
                .map(|next| next.dts)
                .or(next_dts);
            let duration = match following_dts {
                Some(dts) => u32::try_from(i128::from(dts) - i128::from(sample.dts))
                    .map_err(|_| Error::TimestampOutOfRange(dts))?,
                // The very last sample of the stream: trust its own duration,
                // or repeat the previous spacing if it has none.
                None if sample.duration > 0 => sample.duration,
                None => previous_delta.unwrap_or(0),
            };
            let offset = i128::from(sample.pts) - decode_time;
            let composition_offset =
                i32::try_from(offset).map_err(|_| Error::TimestampOutOfRange(sample.pts))?;
            entries.push(TrunEntry {
                duration,
                size: sample.size,
                flags: if sample.sync {
                    SYNC_SAMPLE_FLAGS
                } else {
                    NON_SYNC_SAMPLE_FLAGS
                },
                composition_offset,
            });
            decode_time += i128::from(duration);
            previous_delta = Some(duration);
        }
        let duration = entries.iter().map(|entry| u64::from(entry.duration)).sum();

        let sequence_number = self.next_sequence_number;
        let data =
            boxes::write_fragment(sequence_number, base_decode_time, &entries, &open.payload)?;
        self.next_sequence_number = sequence_number.saturating_add(1);
        Ok(Some(MediaSegment {
            info: SegmentInfo {
                sequence_number: u64::from(sequence_number),
                start: base_decode_time,
                duration,
                size: data.len() as u64,
            },
            timescale: self.track.timescale(),
            sample_count: entries.len(),
            data: Bytes::from(data),
        }))
    }
}
