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
//! A short start ([`Segmenter::with_short_start`]) adds boundaries before
//! the first multiple of the target, doubling from the first (1, 2 s
//! before a 4 s target): the first playable segment exists sooner, and
//! each next one takes no longer to make than the media already there
//! takes to play; every later boundary is unchanged.
//!
//! # Timing
//!
//! Each fragment's `tfdt` is the earliest presentation time of its samples.
//! Decode times inside the fragment run on from there using the decode-time
//! deltas of the input, and the B-frame reordering shows up as signed
//! composition offsets (`trun` version 1), some of them negative. There is
//! no edit list for them: the media timeline starts at presentation time
//! 0, and players that place segments by `tfdt` (hls.js, dash.js, MSE)
//! line audio and video up exactly. (An audio track with encoder priming
//! has one edit that skips the priming: [`crate::AudioTrack::with_priming`].)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

/// A partial segment (LL-HLS `EXT-X-PART`, a CMAF chunk): one `moof` +
/// `mdat` fragment of an open segment. A segment cut into parts is the
/// concatenation of its parts, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Number of the segment it belongs to.
    pub sequence_number: u64,
    /// Its index in that segment, from 0.
    pub index: u32,
    /// `tfdt`, in the track timescale.
    pub start: u64,
    /// Duration in the track timescale.
    pub duration: u64,
    /// Whether it starts with a sync sample (`INDEPENDENT=YES`).
    pub independent: bool,
    /// The fragment bytes.
    pub data: Bytes,
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
    /// Closed at a short start's boundary instead (ticks).
    closing_early: Option<i64>,
    /// Samples of the open fragment (the whole segment, or its open part).
    samples: Vec<PendingSample>,
    payload: Vec<u8>,
    /// Parts closed so far (part mode).
    parts: Vec<Part>,
    /// Where the next part's decode timeline starts (part mode).
    next_decode_time: Option<i128>,
    /// Samples in the closed parts (part mode).
    parted_samples: usize,
}

/// Cutting segments into parts.
#[derive(Debug)]
struct PartMode {
    /// Longest part, in ticks.
    target_ticks: u64,
    /// Number of the next `moof` (`mfhd` counts fragments, not segments).
    next_fragment_number: u32,
    /// Parts closed and not yet taken.
    ready: Vec<Part>,
    /// The longest sample seen: the next may be as long (timestamps in
    /// whole milliseconds make 30 fps frames 33 or 34 ms).
    longest_sample: u32,
}

/// Turns one track's samples, pushed in decode order, into media segments.
#[derive(Debug)]
pub struct Segmenter {
    track: Track,
    target_duration: Rational,
    /// The short start's boundaries, in ticks, ascending.
    early_boundaries: Vec<i64>,
    next_sequence_number: u32,
    last_dts: Option<i64>,
    open: Option<OpenSegment>,
    parts: Option<PartMode>,
    /// Where a paused track stopped (the end of its last segment or skip).
    paused_at: Option<i64>,
}

impl Segmenter {
    /// A segmenter cutting at multiples of `target_duration` seconds.
    pub fn new(track: Track, target_duration: Rational) -> Self {
        Self {
            track,
            target_duration,
            early_boundaries: Vec::new(),
            next_sequence_number: FIRST_SEQUENCE_NUMBER,
            last_dts: None,
            open: None,
            parts: None,
            paused_at: None,
        }
    }

    /// Also cuts at `first`, `2 * first`, `4 * first`, ... seconds while
    /// that is before the target duration, so the first segments are
    /// shorter (each must be a keyframe time of every rung). Nothing
    /// changes when `first` is not strictly between 0 and the target.
    pub fn with_short_start(mut self, first: Rational) -> Self {
        let target_ticks =
            self.boundary_unit() / i128::from(self.target_duration.denominator().max(1));
        let mut ticks = i128::from(first.numerator()) * i128::from(self.track.timescale())
            / i128::from(first.denominator().max(1));
        self.early_boundaries.clear();
        while ticks > 0 && ticks < target_ticks {
            match i64::try_from(ticks) {
                Ok(boundary) => self.early_boundaries.push(boundary),
                Err(_) => break,
            }
            ticks *= 2;
        }
        self
    }

    /// Numbers the first segment `sequence_number` instead of
    /// [`FIRST_SEQUENCE_NUMBER`]: a chunk of a presentation whose earlier
    /// segments were cut elsewhere (chunked transcoding) continues its
    /// numbering.
    pub fn numbered_from(mut self, sequence_number: u32) -> Self {
        self.next_sequence_number = sequence_number.max(FIRST_SEQUENCE_NUMBER);
        self
    }

    /// A segmenter that also cuts every segment into parts of at most
    /// `part_target` seconds (LL-HLS partial segments, CMAF chunks).
    ///
    /// A part closes as soon as its next sample would take it past the
    /// target, so no part is longer than the target and, but for the last
    /// of a segment, none is shorter than the target less one sample. The
    /// segments are cut as by [`new`](Self::new), and each is the
    /// concatenation of its parts.
    pub fn with_parts(track: Track, target_duration: Rational, part_target: Rational) -> Self {
        let target_ticks = u64::try_from(
            i128::from(part_target.numerator()) * i128::from(track.timescale())
                / i128::from(part_target.denominator().max(1)),
        )
        .unwrap_or(u64::MAX)
        .max(1);
        let mut segmenter = Self::new(track, target_duration);
        segmenter.parts = Some(PartMode {
            target_ticks,
            next_fragment_number: FIRST_SEQUENCE_NUMBER,
            ready: Vec::new(),
            longest_sample: 0,
        });
        segmenter
    }

    /// The parts closed since the last call, oldest first (part mode; a
    /// segment's parts come out no later than the segment).
    pub fn take_parts(&mut self) -> Vec<Part> {
        self.parts
            .as_mut()
            .map(|mode| std::mem::take(&mut mode.ready))
            .unwrap_or_default()
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
        if self.open.is_none() && (self.last_dts.is_none() || self.paused_at.is_some()) && !sync {
            return Err(Error::FirstSampleNotKeyframe { dts: sample.dts });
        }

        // Normalise before touching any state, so a bad sample cannot leave a
        // segment half-closed.
        let data = self.normalise(&sample)?;
        let size =
            u32::try_from(data.len()).map_err(|_| Error::SegmentTooLarge(data.len() as u64))?;

        let closes = match &self.open {
            Some(open) => {
                sync && match open.closing_early {
                    Some(ticks) => sample.pts >= ticks,
                    None => self.boundary_reached(sample.pts, open.closing_boundary),
                }
            }
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
                    closing_early: self
                        .early_boundaries
                        .iter()
                        .copied()
                        .find(|ticks| sample.pts < *ticks),
                    samples: vec![pending],
                    payload: data,
                    parts: Vec::new(),
                    next_decode_time: None,
                    parted_samples: 0,
                });
            }
        }
        self.last_dts = Some(sample.dts);
        self.paused_at = None;
        if let Some(mode) = self.parts.as_mut() {
            mode.longest_sample = mode.longest_sample.max(sample.duration);
        }
        if self.part_is_full() {
            self.close_part(None)?;
        }
        Ok(closed)
    }

    /// Part mode: whether one more sample, as long as the longest seen,
    /// would take the open part past its target.
    fn part_is_full(&self) -> bool {
        let (Some(mode), Some(open)) = (&self.parts, &self.open) else {
            return false;
        };
        let (Some(first), Some(last)) = (open.samples.first(), open.samples.last()) else {
            return false;
        };
        let next = mode.longest_sample.max(last.duration);
        let span = i128::from(last.dts) + i128::from(last.duration) + i128::from(next)
            - i128::from(first.dts);
        last.duration > 0 && span > i128::from(mode.target_ticks)
    }

    /// Part mode: turns the open fragment into the segment's next part.
    fn close_part(&mut self, next_dts: Option<i64>) -> Result<()> {
        let (Some(mode), Some(open)) = (self.parts.as_mut(), self.open.as_mut()) else {
            return Ok(());
        };
        if open.samples.is_empty() {
            return Ok(());
        }
        let Some(earliest_pts) = open.samples.iter().map(|sample| sample.pts).min() else {
            return Ok(());
        };
        let base = open.next_decode_time.unwrap_or(i128::from(earliest_pts));
        let samples = std::mem::take(&mut open.samples);
        let payload = std::mem::take(&mut open.payload);
        let (data, duration) = fragment(
            mode.next_fragment_number,
            base,
            &samples,
            &payload,
            next_dts,
        )?;
        mode.next_fragment_number = mode.next_fragment_number.saturating_add(1);
        open.next_decode_time = Some(base + i128::from(duration));
        open.parted_samples += samples.len();
        let part = Part {
            sequence_number: u64::from(self.next_sequence_number),
            index: u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
            start: u64::try_from(base).map_err(|_| Error::TimestampOutOfRange(earliest_pts))?,
            duration,
            independent: samples.first().is_some_and(|sample| sample.sync),
            data: Bytes::from(data),
        };
        mode.ready.push(part.clone());
        open.parts.push(part);
        Ok(())
    }

    /// Stops the track at `end` (a live rung dropped while the ladder
    /// cannot keep up): the open segment closes there and is returned.
    /// While paused, [`skip`](Self::skip) numbers each segment the track
    /// sits out; the next sample, which must be a sync sample, resumes it.
    pub fn pause(&mut self, end: i64) -> Result<Option<MediaSegment>> {
        if let Some(last) = self.last_dts.filter(|last| end <= *last) {
            return Err(Error::NonMonotonicDts {
                previous: last,
                current: end,
            });
        }
        let closed = self.close(Some(end))?;
        self.paused_at = Some(end);
        Ok(closed)
    }

    /// A paused track sits out the segment from where it stopped (or the
    /// last skip ended) to `end`: returns that segment's number and timing
    /// (no bytes: `size` 0), so every rendition keeps the same numbers.
    /// `None` when the track is not paused or `end` is not later.
    pub fn skip(&mut self, end: i64) -> Option<SegmentInfo> {
        let from = self.paused_at.filter(|from| end > *from)?;
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number = sequence_number.saturating_add(1);
        self.paused_at = Some(end);
        Some(SegmentInfo {
            sequence_number: u64::from(sequence_number),
            start: u64::try_from(from).ok()?,
            duration: u64::try_from(end - from).ok()?,
            size: 0,
        })
    }

    /// Closes the last segment; its final sample lasts its own `duration`.
    pub fn finish(mut self) -> Result<Option<MediaSegment>> {
        self.close(None)
    }

    /// [`finish`](Self::finish), with the parts not taken yet (part mode).
    pub fn finish_with_parts(mut self) -> Result<(Option<MediaSegment>, Vec<Part>)> {
        let last = self.close(None)?;
        Ok((last, self.take_parts()))
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
        if self.parts.is_some() {
            return self.close_parted(next_dts);
        }
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let Some(earliest_pts) = open.samples.iter().map(|sample| sample.pts).min() else {
            return Ok(None);
        };
        // pts was checked non-negative on push.
        let base_decode_time = earliest_pts as u64;
        let sequence_number = self.next_sequence_number;
        let (data, duration) = fragment(
            sequence_number,
            i128::from(earliest_pts),
            &open.samples,
            &open.payload,
            next_dts,
        )?;
        self.next_sequence_number = sequence_number.saturating_add(1);
        Ok(Some(MediaSegment {
            info: SegmentInfo {
                sequence_number: u64::from(sequence_number),
                start: base_decode_time,
                duration,
                size: data.len() as u64,
            },
            timescale: self.track.timescale(),
            sample_count: open.samples.len(),
            data: Bytes::from(data),
        }))
    }

    /// Part mode: closes the open part, then the segment made of its parts.
    fn close_parted(&mut self, next_dts: Option<i64>) -> Result<Option<MediaSegment>> {
        self.close_part(next_dts)?;
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let Some(first) = open.parts.first() else {
            return Ok(None);
        };
        let start = first.start;
        let duration = open.parts.iter().map(|part| part.duration).sum();
        let size: usize = open.parts.iter().map(|part| part.data.len()).sum();
        let mut data = Vec::with_capacity(size);
        for part in &open.parts {
            data.extend_from_slice(&part.data);
        }
        let sample_count = open.parted_samples;
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number = sequence_number.saturating_add(1);
        Ok(Some(MediaSegment {
            info: SegmentInfo {
                sequence_number: u64::from(sequence_number),
                start,
                duration,
                size: data.len() as u64,
            },
            timescale: self.track.timescale(),
            sample_count,
            data: Bytes::from(data),
        }))
    }
}

/// Writes one `moof` + `mdat` fragment of `samples` whose decode timeline
/// starts at `base`; returns it with its duration. `next_dts` is the decode
/// time of the sample that follows (None at the end of the stream).
fn fragment(
    fragment_number: u32,
    base: i128,
    samples: &[PendingSample],
    payload: &[u8],
    next_dts: Option<i64>,
) -> Result<(Vec<u8>, u64)> {
    let mut entries = Vec::with_capacity(samples.len());
    let mut decode_time = base;
    let mut previous_delta: Option<u32> = None;
    for (index, sample) in samples.iter().enumerate() {
        let following_dts = samples.get(index + 1).map(|next| next.dts).or(next_dts);
        let duration = match following_dts {
            Some(dts) => u32::try_from(i128::from(dts) - i128::from(sample.dts))
                .map_err(|_| Error::TimestampOutOfRange(dts))?,
            // The last sample of a part or of the stream: trust its own
            // duration, or repeat the previous spacing if it has none.
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
    let base = u64::try_from(base).map_err(|_| Error::TimestampOutOfRange(0))?;
    let data = boxes::write_fragment(fragment_number, base, &entries, payload)?;
    Ok((data, duration))
}
