//! The live edge of low-latency streams: the parts of the newest segments,
//! held in memory by the process that cuts them, and the Low-Latency HLS
//! playlists (draft-pantos-hls-rfc8216bis 4.4.3.7-4.4.5.2) rendered from
//! them on request, with blocking playlist reload (6.2.5.2) and blocking
//! part requests for preload hints (6.2.6).
//!
//! Parts never go to the object store: a segment is stored once, as the
//! concatenation of its parts, when it is complete. Until then (and for a
//! few segments after, while players still fetch parts), the parts are
//! here, and origins reach them through the relay (`cascade_ingest::relay`).
//!
//! Each stream has one writer (its session driver) and many readers; the
//! state sits in a `tokio::sync::watch` channel, so a reader waiting for a
//! part wakes when the writer publishes it, with no polling.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cascade_packager::hls::{
    LivePart, LivePlaylist, LiveSegment, LowLatency, OpenLiveSegment, RenditionReport,
};
use cascade_packager::{Part, SegmentInfo};
use cascade_schemas::LiveStreamId;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Complete segments whose parts stay in memory per rendition: the parts of
/// the last three target durations are listed, plus one for players still
/// fetching them.
const SEGMENTS_KEPT: usize = 4;

/// The low-latency streams this process cuts.
#[derive(Default)]
pub struct Edges {
    streams: Mutex<HashMap<LiveStreamId, Arc<StreamEdge>>>,
}

impl Edges {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the edge of a new session of `stream` (replacing any earlier
    /// session's).
    pub fn open(&self, stream: LiveStreamId, settings: EdgeSettings) -> Arc<StreamEdge> {
        let edge = Arc::new(StreamEdge {
            settings,
            state: watch::Sender::new(EdgeState::default()),
        });
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(stream, edge.clone());
        }
        edge
    }

    /// The edge of `stream`, when this process holds it.
    pub fn get(&self, stream: LiveStreamId) -> Option<Arc<StreamEdge>> {
        self.streams.lock().ok()?.get(&stream).cloned()
    }

    /// Forgets `edge` (unless a newer session replaced it).
    pub fn remove(&self, stream: LiveStreamId, edge: &Arc<StreamEdge>) {
        if let Ok(mut streams) = self.streams.lock() {
            if streams
                .get(&stream)
                .is_some_and(|held| Arc::ptr_eq(held, edge))
            {
                streams.remove(&stream);
            }
        }
    }
}

/// How a stream's edge cuts and lists parts.
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings {
    /// The publish session (in part and segment URIs).
    pub session: u32,
    /// `PART-TARGET`.
    pub part_target: Duration,
    /// The configured segment duration.
    pub segment_duration: Duration,
}

impl EdgeSettings {
    /// `EXT-X-TARGETDURATION` of the configured segments.
    fn target_duration(&self) -> u64 {
        self.segment_duration.as_secs_f64().ceil().max(1.0) as u64
    }

    /// How long a blocking request is held before 503 (three target
    /// durations, as the spec says).
    pub fn hold_limit(&self) -> Duration {
        Duration::from_secs(3 * self.target_duration())
    }
}

/// One stream's edge.
pub struct StreamEdge {
    settings: EdgeSettings,
    state: watch::Sender<EdgeState>,
}

#[derive(Default)]
struct EdgeState {
    renditions: BTreeMap<String, RenditionEdge>,
    /// The stored window per rendition (rendered from the rows), without parts.
    stored: BTreeMap<String, LivePlaylist>,
    /// The session is over: nothing more will come.
    finished: bool,
    /// The broadcast is over too (`EXT-X-ENDLIST`).
    ended: bool,
    /// When the newest part was pushed.
    newest_part_at: Option<SystemTime>,
}

struct RenditionEdge {
    timescale: u32,
    /// Complete segments, oldest first.
    recent: VecDeque<EdgeSegment>,
    /// The segment being cut.
    open: Option<EdgeSegment>,
}

struct EdgeSegment {
    sequence: u64,
    info: Option<SegmentInfo>,
    program_time: DateTime<Utc>,
    discontinuity: bool,
    parts: Vec<Part>,
}

/// A blocking playlist request (`_HLS_msn`, `_HLS_part`, `_HLS_skip`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaylistRequest {
    /// Hold until this segment (or, with `part`, this part of it) exists.
    pub msn: Option<u64>,
    /// The part of `msn`.
    pub part: Option<u32>,
    /// A delta update.
    pub skip: bool,
}

/// Why the edge does not answer with what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// The request is malformed or too far ahead (HTTP 400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// It did not come in time (HTTP 503).
    #[error("the requested part did not appear in time")]
    Timeout,
    /// Nothing of the kind is here (HTTP 404).
    #[error("not at this edge")]
    NotFound,
}

/// Where a rendition stands: its last complete segment and its last part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edge {
    last_complete: Option<u64>,
    /// (segment, part index) of the newest part.
    last_part: Option<(u64, u32)>,
}

impl StreamEdge {
    /// The session's settings.
    pub fn settings(&self) -> EdgeSettings {
        self.settings
    }

    /// A rendition's timescale, once its init segment exists.
    pub fn add_rendition(&self, name: &str, timescale: u32) {
        self.state.send_modify(|state| {
            state.renditions.insert(
                name.to_owned(),
                RenditionEdge {
                    timescale: timescale.max(1),
                    recent: VecDeque::new(),
                    open: None,
                },
            );
        });
    }

    /// A part of segment `sequence` (the stream-wide number) is cut.
    pub fn push_part(
        &self,
        rendition: &str,
        sequence: u64,
        program_time: DateTime<Utc>,
        discontinuity: bool,
        part: Part,
    ) {
        self.state.send_modify(|state| {
            let Some(edge) = state.renditions.get_mut(rendition) else {
                return;
            };
            if edge
                .open
                .as_ref()
                .is_none_or(|open| open.sequence != sequence)
            {
                edge.open = Some(EdgeSegment {
                    sequence,
                    info: None,
                    program_time,
                    discontinuity,
                    parts: Vec::new(),
                });
            }
            if let Some(open) = edge.open.as_mut() {
                open.parts.push(part);
            }
            state.newest_part_at = Some(SystemTime::now());
        });
    }

    /// Segment `sequence` of `rendition` is complete (its parts came before).
    pub fn complete_segment(&self, rendition: &str, sequence: u64, info: SegmentInfo) {
        self.state.send_modify(|state| {
            let Some(edge) = state.renditions.get_mut(rendition) else {
                return;
            };
            let Some(mut segment) = edge.open.take_if(|open| open.sequence == sequence) else {
                return;
            };
            segment.info = Some(SegmentInfo {
                sequence_number: sequence,
                ..info
            });
            edge.recent.push_back(segment);
            while edge.recent.len() > SEGMENTS_KEPT {
                edge.recent.pop_front();
            }
        });
    }

    /// The stored window (what the rows say), rendition by rendition.
    pub fn set_stored(&self, playlists: BTreeMap<String, LivePlaylist>) {
        self.state.send_modify(|state| state.stored = playlists);
    }

    /// The session is over; `ended`: so is the broadcast. Waiting requests
    /// are answered with the playlist as it stands.
    pub fn finish(&self, ended: bool) {
        self.state.send_modify(|state| {
            state.finished = true;
            state.ended = ended;
        });
    }

    /// The LL-HLS media playlist of `rendition`, once it holds what
    /// `request` asks for (or at once without `_HLS_msn`), and when the
    /// newest part in it was cut (how long a blocking reload took after
    /// its part existed is measured from there).
    pub async fn playlist(
        &self,
        rendition: &str,
        request: PlaylistRequest,
    ) -> Result<(String, Option<SystemTime>), EdgeError> {
        if request.part.is_some() && request.msn.is_none() {
            return Err(EdgeError::BadRequest("_HLS_part needs _HLS_msn"));
        }
        let mut receiver = self.state.subscribe();
        if let Some(msn) = request.msn {
            {
                let state = receiver.borrow_and_update();
                let edge = rendition_edge(&state, rendition).ok_or(EdgeError::NotFound)?;
                let last = edge.last_complete.unwrap_or(0);
                if msn > last + 2 && !state.finished {
                    return Err(EdgeError::BadRequest(
                        "_HLS_msn is more than two segments past the end of the playlist",
                    ));
                }
            }
            let wait = receiver
                .wait_for(|state| state.finished || holds(state, rendition, msn, request.part));
            match tokio::time::timeout(self.settings.hold_limit(), wait).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(EdgeError::NotFound),
                Err(_) => return Err(EdgeError::Timeout),
            }
        }
        let state = receiver.borrow();
        let text = self
            .render(&state, rendition, request.skip)
            .ok_or(EdgeError::NotFound)?;
        Ok((text, state.newest_part_at))
    }

    /// Part `index` of segment `sequence`, waiting for it when it is the
    /// next to come (a preload hint).
    pub async fn part(
        &self,
        rendition: &str,
        sequence: u64,
        index: u32,
    ) -> Result<Bytes, EdgeError> {
        let mut receiver = self.state.subscribe();
        {
            let state = receiver.borrow_and_update();
            let edge = rendition_edge(&state, rendition).ok_or(EdgeError::NotFound)?;
            let last = edge.last_complete.unwrap_or(0);
            if sequence > last + 2 {
                return Err(EdgeError::NotFound);
            }
        }
        let wait = receiver.wait_for(|state| {
            state.finished
                || find_part(state, rendition, sequence, index).is_some()
                || segment_closed_before(state, rendition, sequence, index)
        });
        let found = match tokio::time::timeout(self.settings.hold_limit(), wait).await {
            Ok(Ok(state)) => find_part(&state, rendition, sequence, index)
                .map(|part| part.data.clone())
                .ok_or(EdgeError::NotFound),
            Ok(Err(_)) => Err(EdgeError::NotFound),
            Err(_) => Err(EdgeError::Timeout),
        };
        found
    }

    /// Segment `sequence` of `rendition` as its parts, each yielded as soon
    /// as it is cut: a low-latency DASH player fetches the segment being
    /// cut (or the next) and receives it chunk by chunk. `None` when the
    /// segment is not in memory, being cut, or next.
    pub fn segment_parts(
        self: &Arc<Self>,
        rendition: &str,
        sequence: u64,
    ) -> Option<impl futures::Stream<Item = Bytes> + Send + 'static> {
        {
            let state = self.state.borrow();
            let edge = state.renditions.get(rendition)?;
            let complete = edge.recent.iter().any(|s| s.sequence == sequence);
            let open = edge.open.as_ref().map(|open| open.sequence);
            let last = rendition_edge(&state, rendition)?
                .last_complete
                .unwrap_or(0);
            if !complete && open != Some(sequence) && sequence != last + 1 {
                return None;
            }
        }
        let receiver = self.state.subscribe();
        let hold = self.settings.hold_limit();
        let rendition = rendition.to_owned();
        Some(futures::stream::unfold(
            (receiver, 0u32),
            move |(mut receiver, index)| {
                let rendition = rendition.clone();
                async move {
                    let wait = receiver.wait_for(|state| {
                        state.finished
                            || find_part(state, &rendition, sequence, index).is_some()
                            || segment_closed_before(state, &rendition, sequence, index)
                    });
                    let part = match tokio::time::timeout(hold, wait).await {
                        Ok(Ok(state)) => find_part(&state, &rendition, sequence, index)
                            .map(|part| part.data.clone()),
                        _ => None,
                    };
                    part.map(|bytes| (bytes, (receiver, index + 1)))
                }
            },
        ))
    }

    fn render(&self, state: &EdgeState, rendition: &str, skip: bool) -> Option<String> {
        let edge = state.renditions.get(rendition)?;
        let session = self.settings.session;
        let segment_uri = |sequence: u64| format!("../s{session}/{rendition}/{sequence}.m4s");
        let part_uri =
            |sequence: u64, index: u32| format!("../s{session}/{rendition}/{sequence}.{index}.m4s");
        let init_uri = format!("../s{session}/{rendition}/init.mp4");
        let live_parts = |parts: &[Part]| -> Vec<LivePart> {
            parts
                .iter()
                .map(|part| LivePart {
                    duration: part.duration,
                    uri: part_uri(part.sequence_number, part.index),
                    independent: part.independent,
                })
                .collect()
        };
        let mut playlist = state
            .stored
            .get(rendition)
            .cloned()
            .unwrap_or(LivePlaylist {
                timescale: edge.timescale,
                target_duration: self.settings.target_duration(),
                discontinuity_sequence: 0,
                segments: Vec::new(),
                ended: false,
                low_latency: None,
            });
        // Complete segments not stored yet follow the stored window.
        for segment in &edge.recent {
            let next = playlist
                .segments
                .last()
                .map(|last| last.info.sequence_number + 1);
            if next.is_some_and(|next| segment.sequence < next) {
                continue;
            }
            if next.is_some_and(|next| segment.sequence != next) {
                break;
            }
            let Some(info) = segment.info else { continue };
            playlist.segments.push(LiveSegment {
                info,
                uri: segment_uri(segment.sequence),
                init_uri: init_uri.clone(),
                program_time: segment.program_time,
                discontinuity: segment.discontinuity,
                gap: false,
                parts: Vec::new(),
            });
        }
        if playlist.segments.is_empty() {
            return None;
        }
        for listed in playlist.segments.iter_mut() {
            if let Some(segment) = edge
                .recent
                .iter()
                .find(|s| s.sequence == listed.info.sequence_number)
            {
                listed.parts = live_parts(&segment.parts);
            }
        }
        let last_listed = playlist
            .segments
            .last()
            .map_or(0, |segment| segment.info.sequence_number);
        let open = edge
            .open
            .as_ref()
            .filter(|open| open.sequence == last_listed + 1)
            .map(|open| OpenLiveSegment {
                init_uri: init_uri.clone(),
                program_time: open.program_time,
                discontinuity: open.discontinuity,
                parts: live_parts(&open.parts),
            });
        let preload_hint = (!state.finished).then(|| match &open {
            Some(segment) => part_uri(last_listed + 1, segment.parts.len() as u32),
            None => part_uri(last_listed + 1, 0),
        });
        let rendition_reports = state
            .renditions
            .keys()
            .filter(|name| name.as_str() != rendition)
            .filter_map(|name| {
                let other = rendition_edge(state, name)?;
                let (last_msn, last_part) = match other.last_part {
                    Some((msn, part)) => (msn, Some(part)),
                    None => (other.last_complete?, None),
                };
                Some(RenditionReport {
                    uri: format!("../{name}/index.m3u8"),
                    last_msn,
                    last_part,
                })
            })
            .collect();
        playlist.ended = state.ended;
        playlist.low_latency = Some(LowLatency {
            part_target: self.settings.part_target.as_secs_f64(),
            open,
            preload_hint,
            rendition_reports,
            skip,
        });
        playlist.render().ok()
    }
}

/// Where `rendition` stands, counting the stored window and memory.
fn rendition_edge(state: &EdgeState, rendition: &str) -> Option<Edge> {
    let edge = state.renditions.get(rendition)?;
    let stored = state
        .stored
        .get(rendition)
        .and_then(|playlist| playlist.segments.last())
        .map(|segment| segment.info.sequence_number);
    let in_memory = edge.recent.back().map(|segment| segment.sequence);
    let last_complete = stored.max(in_memory);
    let last_part = match &edge.open {
        Some(open) if !open.parts.is_empty() => Some((open.sequence, open.parts.len() as u32 - 1)),
        _ => edge.recent.back().and_then(|segment| {
            let count = segment.parts.len() as u32;
            (count > 0).then(|| (segment.sequence, count - 1))
        }),
    };
    Some(Edge {
        last_complete,
        last_part,
    })
}

/// Whether the playlist of `rendition` holds segment `msn` (or its part
/// `part`). A part index past a complete segment's last part asks for the
/// first part of the next segment (RFC 8216bis 6.2.5.2).
fn holds(state: &EdgeState, rendition: &str, msn: u64, part: Option<u32>) -> bool {
    let Some(edge) = rendition_edge(state, rendition) else {
        return false;
    };
    let Some(part) = part else {
        return edge.last_complete.is_some_and(|last| last >= msn);
    };
    let (mut msn, mut part) = (msn, part);
    if let Some(count) = state.renditions.get(rendition).and_then(|r| {
        r.recent
            .iter()
            .find(|segment| segment.sequence == msn)
            .map(|segment| segment.parts.len() as u32)
    }) {
        if part >= count {
            (msn, part) = (msn + 1, 0);
        }
    }
    if edge.last_complete.is_some_and(|last| last >= msn) {
        return true;
    }
    edge.last_part
        .is_some_and(|(last_msn, last_part)| (msn, part) <= (last_msn, last_part))
}

fn find_part<'a>(
    state: &'a EdgeState,
    rendition: &str,
    sequence: u64,
    index: u32,
) -> Option<&'a Part> {
    let edge = state.renditions.get(rendition)?;
    edge.recent
        .iter()
        .chain(edge.open.as_ref())
        .find(|segment| segment.sequence == sequence)?
        .parts
        .get(index as usize)
}

/// Segment `sequence` closed with fewer parts than `index + 1`, or
/// already left memory: the part will never come.
fn segment_closed_before(state: &EdgeState, rendition: &str, sequence: u64, index: u32) -> bool {
    let Some(edge) = state.renditions.get(rendition) else {
        return true;
    };
    if let Some(segment) = edge.recent.iter().find(|s| s.sequence == sequence) {
        return segment.parts.len() as u32 <= index;
    }
    edge.recent
        .front()
        .is_some_and(|oldest| sequence < oldest.sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EdgeSettings {
        EdgeSettings {
            session: 1,
            part_target: Duration::from_millis(500),
            segment_duration: Duration::from_secs(1),
        }
    }

    fn part(sequence: u64, index: u32) -> Part {
        Part {
            sequence_number: sequence,
            index,
            start: (sequence - 1) * 90_000 + u64::from(index) * 45_000,
            duration: 45_000,
            independent: index == 0,
            data: Bytes::from(format!("{sequence}.{index}")),
        }
    }

    fn info(sequence: u64) -> SegmentInfo {
        SegmentInfo {
            sequence_number: sequence,
            start: (sequence - 1) * 90_000,
            duration: 90_000,
            size: 6,
        }
    }

    fn cut(edge: &StreamEdge, sequence: u64, parts: u32, complete: bool) {
        for index in 0..parts {
            edge.push_part("720p", sequence, Utc::now(), false, part(sequence, index));
        }
        if complete {
            edge.complete_segment("720p", sequence, info(sequence));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn blocking_reload_waits_for_the_part_and_refuses_far_ahead() {
        let edges = Edges::new();
        let stream = LiveStreamId::new();
        let edge = edges.open(stream, settings());
        edge.add_rendition("720p", 90_000);
        edge.add_rendition("audio", 48_000);
        assert_eq!(
            edge.playlist("720p", PlaylistRequest::default()).await,
            Err(EdgeError::NotFound)
        );
        cut(&edge, 1, 2, true);
        cut(&edge, 2, 1, false);
        let (now, _) = edge
            .playlist("720p", PlaylistRequest::default())
            .await
            .unwrap();
        assert!(now.contains("#EXT-X-PART:DURATION=0.50000,URI=\"../s1/720p/2.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"../s1/720p/2.1.m4s\""), "{now}");
        // Already there: at once.
        let at_once = PlaylistRequest {
            msn: Some(2),
            part: Some(0),
            skip: false,
        };
        assert!(edge.playlist("720p", at_once).await.is_ok());
        // Part 2 of segment 1 (which has two) means part 0 of segment 2.
        let rolled = PlaylistRequest {
            msn: Some(1),
            part: Some(2),
            skip: false,
        };
        assert!(edge.playlist("720p", rolled).await.is_ok());
        // The next part: held until it is cut.
        let next = PlaylistRequest {
            msn: Some(2),
            part: Some(1),
            skip: false,
        };
        let edge2 = edge.clone();
        let waiting = tokio::spawn(async move { edge2.playlist("720p", next).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        cut(&edge, 2, 0, false);
        edge.push_part("720p", 2, Utc::now(), false, part(2, 1));
        let (text, cut_at) = waiting.await.unwrap().unwrap();
        assert!(text.contains("/2.1.m4s\"\n"), "{text}");
        assert!(cut_at.is_some());
        // Too far ahead: 400; without msn: 400.
        let far = PlaylistRequest {
            msn: Some(9),
            part: None,
            skip: false,
        };
        assert!(matches!(
            edge.playlist("720p", far).await,
            Err(EdgeError::BadRequest(_))
        ));
        let no_msn = PlaylistRequest {
            msn: None,
            part: Some(1),
            skip: false,
        };
        assert!(matches!(
            edge.playlist("720p", no_msn).await,
            Err(EdgeError::BadRequest(_))
        ));
        // Never comes: 503 after three target durations.
        let later = PlaylistRequest {
            msn: Some(3),
            part: Some(0),
            skip: false,
        };
        let started = tokio::time::Instant::now();
        assert_eq!(edge.playlist("720p", later).await, Err(EdgeError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        // The session ends: a waiting request gets the playlist as it stands.
        let edge3 = edge.clone();
        let waiting = tokio::spawn(async move { edge3.playlist("720p", later).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        edge.finish(true);
        let (last, _) = waiting.await.unwrap().unwrap();
        assert!(last.ends_with("#EXT-X-ENDLIST\n"), "{last}");
        edges.remove(stream, &edge);
        assert!(edges.get(stream).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn preload_hinted_parts_are_served_when_cut() {
        let edge = Edges::new().open(LiveStreamId::new(), settings());
        edge.add_rendition("720p", 90_000);
        cut(&edge, 1, 2, true);
        assert_eq!(
            edge.part("720p", 1, 1).await.unwrap(),
            Bytes::from_static(b"1.1")
        );
        // Past the last part of a complete segment: never.
        assert_eq!(edge.part("720p", 1, 2).await, Err(EdgeError::NotFound));
        let edge2 = edge.clone();
        let hinted = tokio::spawn(async move { edge2.part("720p", 2, 0).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        cut(&edge, 2, 1, false);
        assert_eq!(hinted.await.unwrap().unwrap(), Bytes::from_static(b"2.0"));
        assert_eq!(edge.part("720p", 7, 0).await, Err(EdgeError::NotFound));
    }

    #[tokio::test(start_paused = true)]
    async fn a_segment_being_cut_streams_its_parts_as_they_come() {
        use futures::StreamExt;
        let edge = Edges::new().open(LiveStreamId::new(), settings());
        edge.add_rendition("720p", 90_000);
        cut(&edge, 1, 2, true);
        // Complete: its parts at once, then the end.
        let whole: Vec<Bytes> = edge.segment_parts("720p", 1).unwrap().collect().await;
        assert_eq!(
            whole,
            [Bytes::from_static(b"1.0"), Bytes::from_static(b"1.1")]
        );
        // Next: each part when cut, the end when the segment completes.
        let mut next = Box::pin(edge.segment_parts("720p", 2).unwrap());
        let edge2 = edge.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cut(&edge2, 2, 1, false);
            tokio::time::sleep(Duration::from_millis(100)).await;
            edge2.push_part("720p", 2, Utc::now(), false, part(2, 1));
            edge2.complete_segment("720p", 2, info(2));
        });
        assert_eq!(next.next().await, Some(Bytes::from_static(b"2.0")));
        assert_eq!(next.next().await, Some(Bytes::from_static(b"2.1")));
        assert_eq!(next.next().await, None);
        // Far ahead or long gone: not here.
        assert!(edge.segment_parts("720p", 9).is_none());
    }
}
