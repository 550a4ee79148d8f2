//! Chunked transcoding: how one long source is split into pieces that run
//! as separate `transcode` jobs on any workers, and how each piece's
//! segments are numbered so the pieces join into one presentation.
//!
//! The segment grid is absolute: segments are cut at multiples of the
//! segment duration from time zero (after the short start's boundaries,
//! which all lie before the first multiple), and keyframes are forced on
//! the first frame at or after each boundary. A chunk is a run of whole
//! grid segments, `[start, end)` in seconds of the output timeline, so a
//! chunk's first segment begins exactly where the previous chunk's last
//! one ends, and its first segment's number follows from its start.

use serde::{Deserialize, Serialize};

/// One piece of a chunked transcode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based; chunk 0 also makes the whole asset's audio.
    pub index: u32,
    /// First second of the output timeline it covers (a grid boundary).
    pub start: f64,
    /// The second it stops before (a grid boundary); `None`: the end.
    pub end: Option<f64>,
}

/// What one transcode run covers of its source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// Video frames presented at or after this second are encoded.
    pub video_from: f64,
    /// ... and before this one (`None`: to the end).
    pub video_until: Option<f64>,
    /// Whether the audio rendition (the whole asset's) is made.
    pub audio: bool,
}

impl Default for Scope {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl Scope {
    /// The whole source, video and audio.
    pub const WHOLE: Scope = Scope {
        video_from: 0.0,
        video_until: None,
        audio: true,
    };

    /// Whether this is the whole source.
    pub fn is_whole(&self) -> bool {
        *self == Self::WHOLE
    }

    /// The scope of `chunk`: its video, and the audio with chunk 0
    /// (audio is cheap to encode, and one encoder for the whole asset
    /// leaves no join in it).
    pub fn of(chunk: &Chunk) -> Self {
        Self {
            video_from: chunk.start,
            video_until: chunk.end,
            audio: chunk.index == 0,
        }
    }
}

/// Splits a source of `duration` seconds into chunks of about
/// `chunk_duration` (rounded up to whole segments of `segment_duration`,
/// and whole GOPs of `gop`), when it is at least `split_from` long; a last
/// piece shorter than half a chunk joins the one before. One chunk (the
/// whole source) otherwise, and always when `split_from` is zero.
pub fn plan(
    duration: f64,
    chunk_duration: f64,
    segment_duration: f64,
    gop: f64,
    split_from: f64,
) -> Vec<Chunk> {
    let whole = vec![Chunk {
        index: 0,
        start: 0.0,
        end: None,
    }];
    let unit = lcm_seconds(segment_duration, gop);
    if split_from <= 0.0
        || duration < split_from
        || !duration.is_finite()
        || unit <= 0.0
        || chunk_duration <= 0.0
    {
        return whole;
    }
    let length = (chunk_duration / unit).ceil().max(1.0) * unit;
    let mut boundaries = Vec::new();
    let mut at = length;
    while at + length / 2.0 < duration {
        boundaries.push(at);
        at += length;
    }
    if boundaries.is_empty() {
        return whole;
    }
    let mut chunks = Vec::with_capacity(boundaries.len() + 1);
    let mut start = 0.0;
    for (index, end) in boundaries.iter().enumerate() {
        chunks.push(Chunk {
            index: index as u32,
            start,
            end: Some(*end),
        });
        start = *end;
    }
    chunks.push(Chunk {
        index: boundaries.len() as u32,
        start,
        end: None,
    });
    chunks
}

/// The smallest length that is a whole number of both (in milliseconds).
fn lcm_seconds(a: f64, b: f64) -> f64 {
    let (a, b) = ((a * 1000.0).round() as u64, (b * 1000.0).round() as u64);
    if a == 0 || b == 0 {
        return 0.0;
    }
    let gcd = {
        let (mut x, mut y) = (a, b);
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    (a / gcd * b) as f64 / 1000.0
}

/// The sequence number of the segment that starts at `start` seconds (a
/// multiple of `segment_duration`), when the first segment is numbered
/// `first_number` and the short start cuts at `early_boundaries` (all
/// before the first multiple): one segment per early boundary and the
/// first, then one per multiple.
pub fn sequence_at(
    start: f64,
    segment_duration: f64,
    early_boundaries: usize,
    first_number: u64,
) -> u64 {
    if start <= 0.0 || segment_duration <= 0.0 {
        return first_number;
    }
    let multiples = (start / segment_duration).round() as u64;
    first_number + early_boundaries as u64 + multiples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sources_are_one_chunk() {
        assert_eq!(plan(100.0, 60.0, 4.0, 2.0, 120.0).len(), 1);
        assert_eq!(plan(600.0, 60.0, 4.0, 2.0, 0.0).len(), 1);
        assert_eq!(plan(f64::NAN, 60.0, 4.0, 2.0, 120.0).len(), 1);
    }

    #[test]
    fn chunks_are_whole_segments_and_a_short_tail_joins_the_last() {
        // 60 s is 15 segments of 4 s.
        let chunks = plan(600.0, 60.0, 4.0, 2.0, 120.0);
        assert_eq!(chunks.len(), 10);
        assert_eq!(chunks[0].start, 0.0);
        assert_eq!(chunks[0].end, Some(60.0));
        assert_eq!(chunks[9].start, 540.0);
        assert_eq!(chunks[9].end, None);
        // 62 s chunks round up to 64 (whole 4 s segments).
        let chunks = plan(130.0, 62.0, 4.0, 2.0, 120.0);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].end, Some(64.0));
        // A 20 s tail joins the chunk before.
        let chunks = plan(140.0, 60.0, 4.0, 2.0, 120.0);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].start, 60.0);
        // A GOP of 3 s and segments of 4 s: chunks are multiples of 12 s.
        let chunks = plan(200.0, 50.0, 4.0, 3.0, 100.0);
        assert_eq!(chunks[0].end, Some(60.0));
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.index, i as u32);
        }
    }

    #[test]
    fn numbers_follow_the_short_start() {
        // Segments 0.5, 0.5, 1, 2, then 4 s: [4, 8) is the fifth.
        assert_eq!(sequence_at(0.0, 4.0, 3, 1), 1);
        assert_eq!(sequence_at(4.0, 4.0, 3, 1), 5);
        assert_eq!(sequence_at(60.0, 4.0, 3, 1), 19);
        // No short start: [60, 64) is the sixteenth.
        assert_eq!(sequence_at(60.0, 4.0, 0, 1), 16);
    }
}
