//! Live manifests rendered from the broadcast's rows: a sliding-window HLS
//! media playlist per rendition (RFC 8216 6.2.2), the master playlist of
//! the newest session, and a dynamic MPD with a Period per session in the
//! window (ISO/IEC 23009-1 5.4). The rows, not memory, are the source, so
//! a replica that takes a broadcast over renders the same manifests.

use std::collections::BTreeMap;
use std::time::Duration;

use cascade_packager::{
    self as packager, hls, Bitrates, MediaKind, Rendition, SegmentInfo, UriLayout,
};
use cascade_platform::live_streams::{self, SegmentRow, SessionRendition, SessionRow};
use cascade_platform::ObjectStore;
use cascade_schemas::{LiveStreamId, ObjectKey, RenditionName};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::LiveError;

/// What the manifests of one broadcast are rendered from.
pub struct Broadcast {
    /// The stream.
    pub stream: LiveStreamId,
    /// The broadcast.
    pub id: uuid::Uuid,
    /// `availabilityStartTime`: when the broadcast started.
    pub started_at: DateTime<Utc>,
}

/// Rendering settings.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Segments listed per rendition.
    pub segments: i64,
    /// Target segment duration.
    pub segment_duration: Duration,
    /// Low latency: the part (chunk) duration; the MPD then announces the
    /// segment being cut, to be fetched as it is cut.
    pub part_duration: Option<Duration>,
}

/// A session rendition as the packager describes it, with `segments`.
pub fn rendition(described: &SessionRendition, segments: Vec<SegmentInfo>) -> Rendition {
    let frame_rate = described
        .frame_rate
        .as_deref()
        .and_then(|text| {
            let (num, den) = text.split_once('/').unwrap_or((text, "1"));
            packager::Rational::new(num.parse().ok()?, den.parse().ok()?).ok()
        })
        .or_else(|| packager::Rational::new(30, 1).ok());
    let kind = match (described.kind == "video", frame_rate) {
        (true, Some(frame_rate)) => MediaKind::Video {
            width: described.width.unwrap_or(0),
            height: described.height.unwrap_or(0),
            frame_rate,
        },
        _ => MediaKind::Audio {
            sample_rate: described.sample_rate.unwrap_or(48_000),
            channels: described.channels.unwrap_or(2),
        },
    };
    Rendition {
        name: described.name.clone(),
        kind,
        codecs: described.codecs.clone(),
        timescale: described.timescale,
        segments,
    }
}

fn info(row: &SegmentRow) -> SegmentInfo {
    SegmentInfo {
        sequence_number: row.sequence,
        start: row.start,
        duration: row.duration,
        size: row.size,
    }
}

/// The longest run of consecutive numbers at the end of `rows` (a
/// rendition that skipped a number lists only what follows the gap).
fn contiguous_tail(rows: &[(SegmentRow, i64)]) -> &[(SegmentRow, i64)] {
    let mut start = rows.len().saturating_sub(1);
    while start > 0 && rows[start - 1].0.sequence + 1 == rows[start].0.sequence {
        start -= 1;
    }
    if rows.is_empty() {
        rows
    } else {
        &rows[start..]
    }
}

/// The segment after `last`, as the keyframe grid places it: it ends at
/// the next multiple of `segment_duration` (the live ladder forces its
/// keyframes there), so the MPD can announce it before it is cut.
fn next_on_grid(last: &SegmentInfo, timescale: u32, segment_duration: Duration) -> SegmentInfo {
    let grid = (segment_duration.as_millis() as u64 * u64::from(timescale) / 1000).max(1);
    let start = last.start + last.duration;
    let end = (start / grid + 1) * grid;
    SegmentInfo {
        sequence_number: last.sequence_number + 1,
        start,
        duration: end - start,
        size: 0,
    }
}

/// A stretch of a session with one set of renditions: a DASH Period.
struct Phase {
    /// First segment number (`None`: from the session's start).
    from: Option<u64>,
    /// First segment number of the next phase.
    until: Option<u64>,
    /// Media time (seconds) where it starts.
    media_time: f64,
    /// Renditions without segments in it (dropped rungs).
    absent: Vec<String>,
}

impl Phase {
    fn holds(&self, sequence: u64) -> bool {
        self.from.is_none_or(|from| sequence >= from)
            && self.until.is_none_or(|until| sequence < until)
    }
}

/// The phases of `session`: its start, then one per ladder change.
fn phases(session: &SessionRow, changes: &[live_streams::LadderChange]) -> Vec<Phase> {
    let mut phases = vec![Phase {
        from: None,
        until: None,
        media_time: session.media_offset,
        absent: Vec::new(),
    }];
    for change in changes.iter().filter(|c| c.session == session.session) {
        if let Some(previous) = phases.last_mut() {
            previous.until = Some(change.sequence);
        }
        phases.push(Phase {
            from: Some(change.sequence),
            until: None,
            media_time: change.media_time,
            absent: change.absent.clone(),
        });
    }
    phases
}

/// The master playlist of `session`'s renditions, with the bitrates the
/// encoders are capped at (declared) and its first segments.
pub fn master_playlist(
    session: &SessionRow,
    first_segments: &BTreeMap<String, SegmentInfo>,
) -> Result<String, LiveError> {
    let renditions: Vec<(Rendition, Bitrates)> = session
        .renditions
        .iter()
        .filter_map(|described| {
            let first = *first_segments.get(&described.name)?;
            Some((
                rendition(described, vec![first]),
                Bitrates {
                    peak: described.bandwidth,
                    average: described.bandwidth,
                },
            ))
        })
        .collect();
    hls::render_declared_master_playlist(&renditions, &UriLayout::default())
        .map_err(|e| LiveError::Internal(format!("rendering the live master playlist: {e}")))
}

/// Renders and stores every rendition's media playlist and the MPD of
/// `broadcast` from its rows; `ended` closes them (`EXT-X-ENDLIST`, no
/// more MPD updates). Returns the media playlists it stored, by rendition
/// (the window a low-latency edge adds its parts to).
pub async fn publish(
    client: &impl GenericClient,
    store: &ObjectStore,
    broadcast: &Broadcast,
    window: Window,
    ended: bool,
) -> Result<BTreeMap<String, hls::LivePlaylist>, LiveError> {
    let mut stored = BTreeMap::new();
    let sessions = live_streams::broadcast_sessions(client, broadcast.id).await?;
    let rows = live_streams::window(client, broadcast.id, window.segments).await?;
    let mut by_rendition: BTreeMap<String, Vec<(SegmentRow, i64)>> = BTreeMap::new();
    for (row, earlier) in rows {
        by_rendition
            .entry(row.rendition.clone())
            .or_default()
            .push((row, earlier));
    }
    let target = window.segment_duration.as_secs_f64().ceil() as u64;
    for (name, rows) in &by_rendition {
        let Ok(rendition_name) = RenditionName::new(name.clone()) else {
            continue;
        };
        let rows = contiguous_tail(rows);
        let Some((first, earlier)) = rows.first() else {
            continue;
        };
        let timescale = first.timescale;
        let playlist = hls::LivePlaylist {
            timescale,
            target_duration: target,
            discontinuity_sequence: u64::try_from(*earlier).unwrap_or(0),
            segments: rows
                .iter()
                .map(|(row, _)| hls::LiveSegment {
                    info: info(row),
                    uri: format!("../s{}/{name}/{}.m4s", row.session, row.sequence),
                    init_uri: format!("../s{}/{name}/init.mp4", row.session),
                    program_time: row.program_time,
                    discontinuity: row.discontinuity,
                    gap: row.gap,
                    parts: Vec::new(),
                })
                .collect(),
            ended,
            low_latency: None,
        };
        let text = playlist
            .render()
            .map_err(|e| LiveError::Internal(format!("rendering the {name} playlist: {e}")))?;
        store
            .put_bytes(
                &ObjectKey::live_media_playlist(broadcast.stream, &rendition_name),
                text.into(),
            )
            .await?;
        stored.insert(name.clone(), playlist);
    }

    let changes = live_streams::ladder_changes(client, broadcast.id).await?;
    let newest_session = sessions.last().map(|newest| newest.session);
    let mut periods = Vec::new();
    for session in &sessions {
        for phase in phases(session, &changes) {
            let last_phase_of_newest =
                Some(session.session) == newest_session && phase.until.is_none();
            let segments_of = |described: &SessionRendition| {
                let rows = by_rendition.get(&described.name)?;
                let mut segments: Vec<SegmentInfo> = contiguous_tail(rows)
                    .iter()
                    .filter(|(row, _)| {
                        row.session == session.session && !row.gap && phase.holds(row.sequence)
                    })
                    .map(|(row, _)| info(row))
                    .collect();
                if window.part_duration.is_some() && !ended && last_phase_of_newest {
                    if let Some(next) = segments.last().map(|last| {
                        next_on_grid(last, described.timescale, window.segment_duration)
                    }) {
                        segments.push(next);
                    }
                }
                (!segments.is_empty()).then_some(segments)
            };
            let mut renditions: Vec<(Rendition, u64)> = Vec::new();
            let mut stand_ins = Vec::new();
            for described in &session.renditions {
                if !phase.absent.contains(&described.name) {
                    if let Some(segments) = segments_of(described) {
                        renditions.push((rendition(described, segments), described.bandwidth));
                    }
                    continue;
                }
                // A dropped rung keeps its place with the files of the
                // best rung still encoding below it.
                let serving = session
                    .renditions
                    .iter()
                    .filter(|other| {
                        other.kind == described.kind
                            && other.bandwidth < described.bandwidth
                            && !phase.absent.contains(&other.name)
                    })
                    .max_by_key(|other| other.bandwidth);
                if let Some((serving, segments)) =
                    serving.and_then(|serving| Some((serving, segments_of(serving)?)))
                {
                    let mut stand_in = rendition(serving, segments);
                    stand_in.name.clone_from(&described.name);
                    renditions.push((stand_in, described.bandwidth));
                    stand_ins.push((described.name.clone(), serving.name.clone()));
                }
            }
            if renditions.is_empty() {
                continue;
            }
            let session_start = (session.started_at - broadcast.started_at).num_milliseconds();
            let into_session = ((phase.media_time - session.media_offset) * 1000.0).round() as i64;
            periods.push(packager::dash::LivePeriod {
                id: match phase.from {
                    None => session.session.to_string(),
                    Some(sequence) => format!("{}-{sequence}", session.session),
                },
                start_millis: u64::try_from(session_start + into_session.max(0)).unwrap_or(0),
                media_offset: phase.media_time,
                base_url: format!("s{}/", session.session),
                renditions,
                stand_ins,
            });
        }
    }
    if periods.is_empty() {
        return Ok(stored);
    }
    let segment_millis = window.segment_duration.as_millis() as u64;
    let mpd = packager::dash::LiveMpd {
        availability_start: broadcast.started_at,
        publish_time: Utc::now(),
        minimum_update_period_millis: segment_millis,
        time_shift_buffer_millis: segment_millis * u64::try_from(window.segments).unwrap_or(1),
        // Three segments behind the edge, as HLS players start.
        suggested_delay_millis: segment_millis * 3,
        min_buffer_millis: segment_millis,
        periods,
        ended,
        low_latency: window.part_duration.map(|part| {
            let part_millis = part.as_millis() as u64;
            packager::dash::DashLowLatency {
                availability_time_offset: (segment_millis.saturating_sub(part_millis)) as f64
                    / 1000.0,
                // A segment and a bit behind the edge: chunks arrive as cut.
                target_latency_millis: segment_millis + 1000,
                min_latency_millis: segment_millis / 2,
                max_latency_millis: segment_millis * 3,
            }
        }),
    };
    let text = packager::dash::render_live_mpd(&mpd, &UriLayout::default())
        .map_err(|e| LiveError::Internal(format!("rendering the live MPD: {e}")))?;
    store
        .put_bytes(&ObjectKey::live_manifest(broadcast.stream), text.into())
        .await?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sequence: u64) -> (SegmentRow, i64) {
        (
            SegmentRow {
                rendition: "720p".to_owned(),
                sequence,
                session: 1,
                start: sequence * 180_000,
                duration: 180_000,
                timescale: 90_000,
                size: 10,
                program_time: Utc::now(),
                discontinuity: false,
                gap: false,
            },
            0,
        )
    }

    #[test]
    fn the_segment_being_cut_ends_on_the_keyframe_grid() {
        let last = SegmentInfo {
            sequence_number: 7,
            start: 180_000 * 6,
            duration: 180_000,
            size: 10,
        };
        let next = next_on_grid(&last, 90_000, Duration::from_secs(2));
        assert_eq!(
            (next.sequence_number, next.start, next.duration),
            (8, 180_000 * 7, 180_000)
        );
        // After a short first segment of a session, the next one fills up
        // to the grid.
        let short = SegmentInfo {
            start: 1_000,
            duration: 100_000,
            ..last
        };
        let next = next_on_grid(&short, 90_000, Duration::from_secs(2));
        assert_eq!((next.start, next.duration), (101_000, 79_000));
    }

    #[test]
    fn a_gap_keeps_only_what_follows_it() {
        let rows = vec![row(1), row(2), row(4), row(5)];
        let tail: Vec<u64> = contiguous_tail(&rows)
            .iter()
            .map(|(r, _)| r.sequence)
            .collect();
        assert_eq!(tail, vec![4, 5]);
        assert!(contiguous_tail(&[]).is_empty());
        assert_eq!(contiguous_tail(&rows[..2]).len(), 2);
    }

    #[test]
    fn session_renditions_describe_their_media() {
        let described = SessionRendition {
            name: "720p".to_owned(),
            kind: "video".to_owned(),
            codecs: "avc1.64001f".to_owned(),
            bandwidth: 2_750_000,
            width: Some(1280),
            height: Some(720),
            frame_rate: Some("30000/1001".to_owned()),
            sample_rate: None,
            channels: None,
            timescale: 90_000,
        };
        let r = rendition(&described, vec![]);
        assert!(r.is_video());
        match r.kind {
            MediaKind::Video { frame_rate, .. } => {
                assert_eq!(frame_rate, packager::Rational::new(30000, 1001).unwrap())
            }
            MediaKind::Audio { .. } => panic!("video expected"),
        }
    }
}
