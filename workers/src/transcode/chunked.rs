//! Chunked transcoding: one long source encoded by several jobs at once.
//!
//! A version's own job plans the chunks (`cascade_schemas::chunks::plan`:
//! whole segments of the absolute grid), records them and queues a job
//! per later chunk (`cascade_platform::chunks`), then runs chunk 0 itself
//! with the whole asset's audio, growing in public as an unchunked
//! transcode does. Each later chunk's job decodes from the source's
//! keyframe at or before its start, drops what precedes it, encodes every
//! rung up to its end, numbers its segments from where the grid says they
//! are, and stores them under the version's keys (the init segments are
//! chunk 0's: the same encoder settings make the same parameter sets,
//! which the join checks). What a chunk produced (its renditions'
//! segments, tracks and declared bit rates: [`ChunkResult`]) is recorded
//! under its job's lease. The recorder that finds every chunk done joins
//! the results ([`join`]) and publishes as an unchunked transcode would:
//! playlists and manifests, the publish gate, the renditions' rows.

use std::collections::HashMap;
use std::time::Duration;

use cascade_packager::{hls, Bitrates, MediaKind, Rendition, Track, UriLayout};
use cascade_platform::chunks::ChunkRow;
use serde::{Deserialize, Serialize};

use super::pipeline::Summary;

/// What one chunk produced, as recorded with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkResult {
    /// Its renditions (video rungs, highest first, then audio for chunk 0).
    pub renditions: Vec<ChunkRendition>,
    /// Seconds each rung's encoder was busy.
    pub rung_busy: Vec<(String, f64)>,
}

/// One rendition of a chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRendition {
    /// Its segments, as manifests describe them.
    pub rendition: Rendition,
    /// The encoder that made it.
    pub encoder: String,
    /// Its track (the parameter sets its segments were encoded with).
    pub track: Track,
    /// What its rate control bounds it to.
    pub declared: Bitrates,
}

impl ChunkResult {
    /// The record of a chunk's run: its summary and the init segments'
    /// tracks and declared bit rates it announced.
    pub fn new(
        summary: Summary,
        inits: &HashMap<String, (Track, Bitrates)>,
    ) -> Result<Self, String> {
        let renditions = summary
            .renditions
            .into_iter()
            .map(|(rendition, encoder)| {
                let (track, declared) = inits
                    .get(&rendition.name)
                    .cloned()
                    .ok_or_else(|| format!("rendition {} has no init segment", rendition.name))?;
                Ok(ChunkRendition {
                    rendition,
                    encoder,
                    track,
                    declared,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            renditions,
            rung_busy: summary
                .rung_busy
                .into_iter()
                .map(|(rung, busy)| (rung, busy.as_secs_f64()))
                .collect(),
        })
    }
}

/// Why chunks' results do not join into one presentation. The source
/// broke an assumption of the split (a gap in its timestamps longer than
/// a segment moves the segment numbering): the version is then transcoded
/// as one job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the chunks do not join: {0}")]
pub struct JoinError(pub String);

/// The results of chunks `0..n`, in order, joined into the summary of the
/// whole version: every rendition's segments continue from one chunk to
/// the next (consecutive numbers, contiguous times within a frame), and
/// every chunk encoded each rung with the same parameter sets.
pub fn join(results: &[ChunkResult]) -> Result<Summary, JoinError> {
    let Some((first, later)) = results.split_first() else {
        return Err(JoinError("no chunk results".to_owned()));
    };
    let mut joined: Vec<ChunkRendition> = first.renditions.clone();
    let mut busy: HashMap<String, f64> = first.rung_busy.iter().cloned().collect();
    for (offset, result) in later.iter().enumerate() {
        let index = offset + 1;
        for rendition in &result.renditions {
            let Some(base) = joined
                .iter_mut()
                .find(|base| base.rendition.name == rendition.rendition.name)
            else {
                return Err(JoinError(format!(
                    "chunk {index} made rendition {}, chunk 0 did not",
                    rendition.rendition.name
                )));
            };
            if base.track != rendition.track {
                return Err(JoinError(format!(
                    "chunk {index} encoded {} with other parameter sets",
                    rendition.rendition.name
                )));
            }
            if let (Some(last), Some(next)) = (
                base.rendition.segments.last(),
                rendition.rendition.segments.first(),
            ) {
                let timescale = i128::from(base.rendition.timescale);
                let end = i128::from(last.start) + i128::from(last.duration);
                // A frame at the lowest rate a source may have (10 fps).
                if next.sequence_number != last.sequence_number + 1
                    || (i128::from(next.start) - end).abs() > timescale / 10
                {
                    return Err(JoinError(format!(
                        "{}: segment {} ends at {} and chunk {index} starts with segment {} at {} (timescale {})",
                        rendition.rendition.name,
                        last.sequence_number,
                        end,
                        next.sequence_number,
                        next.start,
                        timescale
                    )));
                }
            }
            base.rendition
                .segments
                .extend(rendition.rendition.segments.iter().copied());
        }
        let video_rungs = joined
            .iter()
            .filter(|r| matches!(r.rendition.kind, MediaKind::Video { .. }))
            .count();
        let made = result
            .renditions
            .iter()
            .filter(|r| matches!(r.rendition.kind, MediaKind::Video { .. }))
            .count();
        if made != video_rungs {
            return Err(JoinError(format!(
                "chunk {index} made {made} video rungs of {video_rungs}"
            )));
        }
        for (rung, seconds) in &result.rung_busy {
            *busy.entry(rung.clone()).or_default() += seconds;
        }
    }
    let duration = joined
        .iter()
        .map(|r| r.rendition.end() as f64 / f64::from(r.rendition.timescale.max(1)))
        .fold(0.0, f64::max);
    Ok(Summary {
        rung_busy: joined
            .iter()
            .filter_map(|r| {
                busy.get(&r.rendition.name)
                    .map(|s| (r.rendition.name.clone(), Duration::from_secs_f64(*s)))
            })
            .collect(),
        renditions: joined
            .into_iter()
            .map(|r| (r.rendition, r.encoder))
            .collect(),
        duration,
    })
}

/// The results of the chunks done from chunk 0 on without a gap.
pub fn done_prefix(rows: &[ChunkRow]) -> Result<Vec<ChunkResult>, String> {
    rows.iter()
        .take_while(|row| row.done)
        .map(|row| {
            let value = row
                .result
                .clone()
                .ok_or_else(|| format!("chunk {} is done without a result", row.chunk.index))?;
            serde_json::from_value(value)
                .map_err(|e| format!("chunk {}'s result does not read: {e}", row.chunk.index))
        })
        .collect()
}

/// What a growing presentation's manifests are once chunks `0..n` are
/// done.
#[derive(Debug, Clone, PartialEq)]
pub struct GrowingManifests {
    /// `(rendition, text)` of each media playlist.
    pub playlists: Vec<(String, String)>,
    /// The dynamic MPD, when the presentation grows one.
    pub mpd: Option<String>,
}

/// The growing manifests once chunks `0..n` (n >= 2) are done: every video
/// rung up to the end of chunk n-1, and the audio up to the same segment
/// (chunk 0 made all of it); the MPD too when the asset's creation time
/// is given (it places the MPD's media time 0). `None` while only chunk 0 is done (its own job
/// keeps them growing as it encodes).
pub fn growing_manifests(
    prefix: &[ChunkResult],
    target_duration: u64,
    created: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<GrowingManifests>, String> {
    if prefix.len() < 2 {
        return Ok(None);
    }
    let declared: HashMap<String, Bitrates> = prefix[0]
        .renditions
        .iter()
        .map(|r| (r.rendition.name.clone(), r.declared))
        .collect();
    let joined = join(prefix).map_err(|e| e.to_string())?;
    let last_video = joined
        .renditions
        .iter()
        .filter(|(r, _)| matches!(r.kind, MediaKind::Video { .. }))
        .filter_map(|(r, _)| r.segments.last().map(|s| s.sequence_number))
        .min();
    let layout = UriLayout::default();
    let mut playlists = Vec::new();
    let mut listed = Vec::new();
    for (mut rendition, _) in joined.renditions {
        if let (MediaKind::Audio { .. }, Some(last)) = (&rendition.kind, last_video) {
            rendition.segments.retain(|s| s.sequence_number <= last);
        }
        let playlist = hls::Playlist::growing(&rendition, &layout, target_duration)
            .map_err(|e| format!("rendering a growing playlist: {e}"))?;
        playlists.push((rendition.name.clone(), playlist.render()));
        let bitrates = declared.get(&rendition.name).copied().unwrap_or_default();
        listed.push((rendition, bitrates));
    }
    let listed: Vec<(&Rendition, Bitrates)> = listed.iter().map(|(r, b)| (r, *b)).collect();
    let mpd = created
        .map(|created| super::progressive::growing_mpd(&listed, created))
        .transpose()
        .map_err(|e| format!("rendering a growing MPD: {e}"))?;
    Ok(Some(GrowingManifests { playlists, mpd }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_packager::{Rational, SegmentInfo, VideoTrack};

    const AVCC: [u8; 45] = [
        // A real avcC (High, 320x180, from the tiny fixture).
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0,
        0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x04, 0x68, 0xef, 0x89, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
    ];

    fn track_of(frame_rate: u64) -> Track {
        Track::Video(
            VideoTrack::new(
                &AVCC,
                320,
                180,
                90_000,
                Rational::new(frame_rate, 1).unwrap(),
            )
            .expect("a valid avcC"),
        )
    }

    fn track() -> Track {
        track_of(30)
    }

    fn chunk(first_sequence: u64, start_seconds: u64, count: u64) -> ChunkResult {
        let track = track();
        let segments = (0..count)
            .map(|i| SegmentInfo {
                sequence_number: first_sequence + i,
                start: (start_seconds + 4 * i) * 90_000,
                duration: 4 * 90_000,
                size: 1000,
            })
            .collect();
        ChunkResult {
            renditions: vec![ChunkRendition {
                rendition: Rendition::from_track("360p", &track, segments),
                encoder: "libx264".to_owned(),
                track,
                declared: Bitrates::default(),
            }],
            rung_busy: vec![("360p".to_owned(), 1.5)],
        }
    }

    #[test]
    fn chunks_join_into_one_rendition() {
        let joined = join(&[chunk(1, 0, 5), chunk(6, 20, 5)]).expect("joins");
        let (rendition, encoder) = &joined.renditions[0];
        assert_eq!(encoder, "libx264");
        let numbers: Vec<u64> = rendition
            .segments
            .iter()
            .map(|s| s.sequence_number)
            .collect();
        assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
        assert!((joined.duration - 40.0).abs() < 1e-9);
        assert_eq!(joined.rung_busy[0].1, Duration::from_secs(3));
    }

    #[test]
    fn a_gap_in_numbers_or_times_does_not_join() {
        // Segment 6 is missing: the second chunk starts at 7.
        let error = join(&[chunk(1, 0, 5), chunk(7, 20, 5)]).expect_err("a gap");
        assert!(error.0.contains("segment 5"), "{error}");
        // Contiguous numbers but a second apart.
        assert!(join(&[chunk(1, 0, 5), chunk(6, 21, 5)]).is_err());
        // Other parameter sets.
        let mut other = chunk(6, 20, 5);
        other.renditions[0].track = track_of(25);
        assert!(join(&[chunk(1, 0, 5), other]).is_err());
    }

    #[test]
    fn growing_playlists_cover_the_chunks_done_from_the_start() {
        assert_eq!(growing_manifests(&[chunk(1, 0, 5)], 5, None), Ok(None));
        let created = chrono::Utc::now();
        let manifests = growing_manifests(&[chunk(1, 0, 5), chunk(6, 20, 5)], 5, Some(created))
            .expect("renders")
            .expect("two chunks");
        let mpd = manifests.mpd.expect("an MPD");
        assert!(mpd.contains(r#"type="dynamic""#), "{mpd}");
        assert_eq!(mpd.matches("<S ").count(), 1, "one run of ten: {mpd}");
        assert!(mpd.contains(r#"r="9""#), "{mpd}");
        let (name, text) = &manifests.playlists[0];
        assert_eq!(name, "360p");
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{text}");
        assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), 10, "{text}");
    }
}
