//! HLS playlists (RFC 8216), written through `m3u8_rs`.
//!
//! [`Playlist`] owns the media playlist rules that `m3u8_rs` leaves to its
//! caller: the target duration is the longest segment rounded up, the media
//! sequence is the first segment's number, the init segment is declared once
//! with `EXT-X-MAP`, and `EXT-X-ENDLIST` appears exactly when the
//! presentation is complete.
//!
//! [`render_master_playlist`] lists video rungs in ascending `BANDWIDTH`
//! order, so players that start with the first variant start cheap and
//! climb.
//!
//! [`LivePlaylist`] is a live media playlist (RFC 8216 section 6.2.2): a
//! sliding window whose `EXT-X-MEDIA-SEQUENCE` and
//! `EXT-X-DISCONTINUITY-SEQUENCE` count what slid out, with
//! `EXT-X-PROGRAM-DATE-TIME` on every segment and a new `EXT-X-MAP` after
//! each discontinuity (a reconnecting publisher's session has its own init
//! segments).
//!
//! With [`LowLatency`] set, a [`LivePlaylist`] is a Low-Latency HLS
//! playlist (draft-pantos-hls-rfc8216bis, sections 4.4.3.7-4.4.5.2 and
//! 6.2.5): `EXT-X-SERVER-CONTROL` (blocking reload, delta updates),
//! `EXT-X-PART-INF`, `EXT-X-PART` for the segments of the last three
//! target durations and for the segment being cut, `EXT-X-PRELOAD-HINT`
//! for the next part, `EXT-X-RENDITION-REPORT` for the other renditions,
//! and, when asked, a delta update (`EXT-X-SKIP`).

use std::collections::HashMap;
use std::fmt::Write as _;

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, Map, MasterPlaylist, MediaPlaylist, MediaPlaylistType,
    MediaSegment, QuotedOrUnquoted, Resolution, Start, VariantStream,
};

use crate::error::{Error, Result};
use crate::manifest::{check_consecutive, Bitrates, MediaKind, Rendition, UriLayout};
use crate::segmenter::SegmentInfo;
use crate::time::{ceil_seconds, ticks_to_seconds};

/// `EXT-X-VERSION`: 6 is the minimum for `EXT-X-MAP` without
/// `EXT-X-I-FRAMES-ONLY`; 7 is what fMP4 packagers commonly declare.
const PROTOCOL_VERSION: usize = 7;

/// `GROUP-ID` of the audio renditions in the master playlist.
pub const AUDIO_GROUP_ID: &str = "audio";

/// Whether a media playlist describes a finished or a growing presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    /// Complete on-demand presentation: `EXT-X-PLAYLIST-TYPE:VOD` and `EXT-X-ENDLIST`.
    Vod,
    /// Presentation that only grows: `EXT-X-PLAYLIST-TYPE:EVENT`,
    /// `EXT-X-START:TIME-OFFSET=0` (players start at the beginning, not at
    /// the live edge), and `EXT-X-ENDLIST` only once [`Playlist::end`] is
    /// called.
    Event,
}

/// A media playlist for one rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct Playlist {
    playlist_type: PlaylistType,
    timescale: u32,
    init_uri: String,
    segments: Vec<(SegmentInfo, String)>,
    ended: bool,
    /// Declared target duration: the playlist's is never below it, so a
    /// growing playlist keeps one target duration as segments come.
    target_at_least: u64,
}

impl Playlist {
    /// An empty playlist whose segments are timed in `timescale` and share
    /// the init segment at `init_uri` (relative to the playlist).
    pub fn new(
        playlist_type: PlaylistType,
        timescale: u32,
        init_uri: impl Into<String>,
    ) -> Result<Self> {
        if timescale == 0 {
            return Err(Error::InvalidParameter(
                "playlist timescale must be non-zero",
            ));
        }
        Ok(Self {
            playlist_type,
            timescale,
            init_uri: init_uri.into(),
            segments: Vec::new(),
            ended: playlist_type == PlaylistType::Vod,
            target_at_least: 1,
        })
    }

    /// The playlist of a rendition still being transcoded (progressive
    /// publish): EVENT, starting at the beginning, the segments stored so
    /// far, and a target duration of at least `target_duration` seconds
    /// whatever segments come later (RFC 8216 section 6.2.1: it must not
    /// change). [`Playlist::end`] makes it the final playlist: the same
    /// lines, `EXT-X-ENDLIST` appended (an EVENT playlist only grows).
    pub fn growing(
        rendition: &Rendition,
        layout: &UriLayout,
        target_duration: u64,
    ) -> Result<Self> {
        let mut playlist = Self::of_rendition(rendition, layout, PlaylistType::Event)?;
        playlist.target_at_least = target_duration.max(1);
        Ok(playlist)
    }

    /// The complete VOD playlist of a rendition, named by `layout`.
    pub fn for_rendition(rendition: &Rendition, layout: &UriLayout) -> Result<Self> {
        Self::of_rendition(rendition, layout, PlaylistType::Vod)
    }

    /// A playlist of `playlist_type` listing `rendition`'s segments.
    fn of_rendition(
        rendition: &Rendition,
        layout: &UriLayout,
        playlist_type: PlaylistType,
    ) -> Result<Self> {
        layout.validate()?;
        rendition.validate()?;
        let mut playlist = Self::new(
            playlist_type,
            rendition.timescale,
            layout.init_segment.clone(),
        )?;
        for segment in &rendition.segments {
            playlist.push(*segment, layout.media_segment_name(segment.sequence_number))?;
        }
        Ok(playlist)
    }

    /// Appends a segment at `uri` (relative to the playlist); sequence
    /// numbers must be consecutive.
    pub fn push(&mut self, segment: SegmentInfo, uri: impl Into<String>) -> Result<()> {
        if let Some((last, _)) = self.segments.last() {
            check_consecutive(last.sequence_number + 1, &[segment])?;
        }
        self.segments.push((segment, uri.into()));
        Ok(())
    }

    /// Marks an EVENT playlist complete, so it ends with `EXT-X-ENDLIST`.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// `EXT-X-TARGETDURATION`: the longest segment rounded up to whole seconds
    /// (at least 1, and at least a declared target), so no `EXTINF`
    /// exceeds it however a player rounds.
    pub fn target_duration(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|(segment, _)| segment.duration)
            .max()
            .unwrap_or(0);
        ceil_seconds(longest, self.timescale).max(self.target_at_least)
    }

    /// `EXT-X-MEDIA-SEQUENCE`: the first listed segment's sequence number.
    pub fn media_sequence(&self) -> u64 {
        self.segments
            .first()
            .map_or(0, |(segment, _)| segment.sequence_number)
    }

    /// The playlist as an `m3u8_rs` value.
    pub fn to_m3u8(&self) -> MediaPlaylist {
        let segments = self
            .segments
            .iter()
            .enumerate()
            .map(|(index, (segment, uri))| MediaSegment {
                uri: uri.clone(),
                // f32 prints as the shortest decimal that round-trips, which
                // keeps well below a millisecond of error for any segment
                // length; whole seconds print without a fraction.
                duration: ticks_to_seconds(segment.duration, self.timescale) as f32,
                // One EXT-X-MAP before the first segment covers all of them.
                map: (index == 0).then(|| Map {
                    uri: self.init_uri.clone(),
                    ..Map::default()
                }),
                ..MediaSegment::default()
            })
            .collect();
        MediaPlaylist {
            version: Some(PROTOCOL_VERSION),
            target_duration: self.target_duration(),
            media_sequence: self.media_sequence(),
            segments,
            end_list: self.ended,
            playlist_type: Some(match self.playlist_type {
                PlaylistType::Vod => MediaPlaylistType::Vod,
                PlaylistType::Event => MediaPlaylistType::Event,
            }),
            independent_segments: true,
            start: (self.playlist_type == PlaylistType::Event).then(|| Start {
                time_offset: 0.0,
                precise: None,
                other_attributes: HashMap::new(),
            }),
            ..MediaPlaylist::default()
        }
    }

    /// The playlist text.
    pub fn render(&self) -> String {
        write_text(|buffer| self.to_m3u8().write_to(buffer))
    }
}

/// Renders the master playlist for `renditions` laid out per `layout`.
///
/// Audio renditions form one `EXT-X-MEDIA` group; every video rung refers
/// to it, and its `BANDWIDTH` / `AVERAGE-BANDWIDTH` add the largest audio
/// rendition's peak / average, because RFC 8216 4.3.4.2 counts every
/// rendition that plays together. Without video, each audio rendition is
/// its own variant.
pub fn render_master_playlist(renditions: &[Rendition], layout: &UriLayout) -> Result<String> {
    let measured: Vec<(Rendition, Bitrates)> = renditions
        .iter()
        .map(|rendition| (rendition.clone(), rendition.bitrates()))
        .collect();
    render_declared_master_playlist(&measured, layout)
}

/// [`render_master_playlist`] with each rendition's bitrates given rather
/// than measured from its segments (a live presentation, whose segments
/// are still to come, declares what its encoders are capped at).
pub fn render_declared_master_playlist(
    renditions: &[(Rendition, Bitrates)],
    layout: &UriLayout,
) -> Result<String> {
    let bitrates_of = |rendition: &Rendition| {
        renditions
            .iter()
            .find(|(r, _)| std::ptr::eq(r, rendition))
            .map(|(_, b)| *b)
            .unwrap_or_default()
    };
    let renditions: Vec<&Rendition> = renditions.iter().map(|(r, _)| r).collect();
    layout.validate()?;
    if renditions.is_empty() {
        return Err(Error::NothingToDescribe(
            "no renditions for the master playlist",
        ));
    }
    for rendition in &renditions {
        rendition.validate()?;
    }
    let playlist_uri =
        |rendition: &Rendition| format!("{}/{}", rendition.name, layout.media_playlist);

    let (videos, audios): (Vec<&Rendition>, Vec<&Rendition>) = renditions
        .into_iter()
        .partition(|rendition| rendition.is_video());

    let mut master = MasterPlaylist {
        version: Some(PROTOCOL_VERSION),
        independent_segments: true,
        ..MasterPlaylist::default()
    };

    if videos.is_empty() {
        for audio in audios {
            let bitrates = bitrates_of(audio);
            master.variants.push(VariantStream {
                uri: playlist_uri(audio),
                bandwidth: bitrates.peak,
                average_bandwidth: Some(bitrates.average),
                codecs: Some(audio.codecs.clone()),
                ..VariantStream::default()
            });
        }
        return Ok(write_text(|buffer| master.write_to(buffer)));
    }

    let mut audio_bitrates = Bitrates::default();
    let mut audio_codecs: Vec<&str> = Vec::new();
    for (index, audio) in audios.iter().enumerate() {
        let bitrates = bitrates_of(audio);
        audio_bitrates.peak = audio_bitrates.peak.max(bitrates.peak);
        audio_bitrates.average = audio_bitrates.average.max(bitrates.average);
        if !audio_codecs.contains(&audio.codecs.as_str()) {
            audio_codecs.push(&audio.codecs);
        }
        let channels = match audio.kind {
            MediaKind::Audio { channels, .. } => Some(channels.to_string()),
            MediaKind::Video { .. } => None,
        };
        master.alternatives.push(AlternativeMedia {
            media_type: AlternativeMediaType::Audio,
            uri: Some(playlist_uri(audio)),
            group_id: AUDIO_GROUP_ID.to_owned(),
            name: audio.name.clone(),
            default: index == 0,
            autoselect: true,
            channels,
            ..AlternativeMedia::default()
        });
    }

    let mut variants: Vec<VariantStream> = videos
        .iter()
        .map(|video| {
            let bitrates = bitrates_of(video);
            let mut codecs = vec![video.codecs.as_str()];
            codecs.extend(&audio_codecs);
            let (resolution, frame_rate) = match video.kind {
                MediaKind::Video {
                    width,
                    height,
                    frame_rate,
                } => (
                    Some(Resolution {
                        width: u64::from(width),
                        height: u64::from(height),
                    }),
                    // RFC 8216 asks for three decimals; m3u8_rs would print
                    // the f64 in full, so the attribute is written as text.
                    Some(HashMap::from([(
                        "FRAME-RATE".to_owned(),
                        QuotedOrUnquoted::Unquoted(format!("{:.3}", frame_rate.as_f64())),
                    )])),
                ),
                MediaKind::Audio { .. } => (None, None),
            };
            VariantStream {
                uri: playlist_uri(video),
                bandwidth: bitrates.peak.saturating_add(audio_bitrates.peak),
                average_bandwidth: Some(bitrates.average.saturating_add(audio_bitrates.average)),
                codecs: Some(codecs.join(",")),
                resolution,
                audio: (!audios.is_empty()).then(|| AUDIO_GROUP_ID.to_owned()),
                other_attributes: frame_rate,
                ..VariantStream::default()
            }
        })
        .collect();
    variants.sort_by_key(|variant| (variant.bandwidth, variant.average_bandwidth));
    master.variants = variants;
    Ok(write_text(|buffer| master.write_to(buffer)))
}

/// One segment of a [`LivePlaylist`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSegment {
    /// Number, timing and size.
    pub info: SegmentInfo,
    /// Its URI, relative to the playlist.
    pub uri: String,
    /// Its init segment's URI, relative to the playlist.
    pub init_uri: String,
    /// Wall clock of its first frame at ingest (`EXT-X-PROGRAM-DATE-TIME`).
    pub program_time: chrono::DateTime<chrono::Utc>,
    /// The first segment after a break in the timeline or the encoding
    /// (a publisher's reconnect).
    pub discontinuity: bool,
    /// A segment this rendition sat out (its rung was dropped while the
    /// ladder could not keep up): listed with `EXT-X-GAP` (RFC 8216bis
    /// 4.4.4.7), so players fetch that time from another variant.
    pub gap: bool,
    /// Its partial segments (low latency), oldest first; listed only while
    /// the segment is within three target durations of the end.
    pub parts: Vec<LivePart>,
}

/// A partial segment (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct LivePart {
    /// Duration in the playlist's timescale.
    pub duration: u64,
    /// Its URI, relative to the playlist.
    pub uri: String,
    /// Starts with a sync sample (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// The segment being cut, as far as its parts go.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLiveSegment {
    /// Its init segment's URI.
    pub init_uri: String,
    /// Wall clock of its first frame.
    pub program_time: chrono::DateTime<chrono::Utc>,
    /// The first segment of a new session.
    pub discontinuity: bool,
    /// Parts published so far (may be none yet).
    pub parts: Vec<LivePart>,
}

/// `EXT-X-RENDITION-REPORT`: where another rendition's playlist stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// The other rendition's media playlist, relative to this one.
    pub uri: String,
    /// Its last media sequence number.
    pub last_msn: u64,
    /// Its last part index in that segment.
    pub last_part: Option<u32>,
}

/// What makes a [`LivePlaylist`] a Low-Latency HLS playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct LowLatency {
    /// `PART-TARGET`, in seconds: no part is longer.
    pub part_target: f64,
    /// The segment being cut (after the last complete one).
    pub open: Option<OpenLiveSegment>,
    /// The URI of the next part (`EXT-X-PRELOAD-HINT`).
    pub preload_hint: Option<String>,
    /// The other renditions.
    pub rendition_reports: Vec<RenditionReport>,
    /// Render a delta update (`_HLS_skip=YES`): segments older than
    /// `CAN-SKIP-UNTIL` are replaced by `EXT-X-SKIP`.
    pub skip: bool,
}

impl LowLatency {
    /// `PART-HOLD-BACK`: three part targets, what the spec recommends.
    pub fn part_hold_back(&self) -> f64 {
        3.0 * self.part_target
    }
}

/// `CAN-SKIP-UNTIL` in target durations (the spec's minimum is six).
const SKIP_TARGET_DURATIONS: u64 = 6;
/// Parts are listed for segments this many target durations from the end.
const PART_TARGET_DURATIONS: u64 = 3;

/// A live media playlist: the newest segments of a growing presentation.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePlaylist {
    /// Ticks per second of the segments' timing.
    pub timescale: u32,
    /// The configured segment duration, rounded up to whole seconds: the
    /// `EXT-X-TARGETDURATION` (it must not change while the stream is live,
    /// so it only grows if a segment is longer).
    pub target_duration: u64,
    /// Discontinuities before the first listed segment.
    pub discontinuity_sequence: u64,
    /// The window, oldest first, with consecutive numbers.
    pub segments: Vec<LiveSegment>,
    /// The broadcast ended: `EXT-X-ENDLIST`, players stop reloading.
    pub ended: bool,
    /// Low-Latency HLS: parts, blocking reloads, delta updates.
    pub low_latency: Option<LowLatency>,
}

impl LivePlaylist {
    /// `EXT-X-TARGETDURATION`: the configured one, or more if a listed
    /// segment rounds to more (RFC 8216 4.3.3.1 rounds to the nearest
    /// integer from protocol version 6).
    pub fn target_duration(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|segment| ticks_to_seconds(segment.info.duration, self.timescale).round() as u64)
            .max()
            .unwrap_or(0);
        self.target_duration.max(longest).max(1)
    }

    /// The playlist text. Tags are written by hand rather than through
    /// `m3u8_rs`, which puts `EXT-X-MAP` before `EXT-X-DISCONTINUITY`:
    /// players (hls.js) that count discontinuities as they read would give
    /// the new init segment to the old discontinuity.
    pub fn render(&self) -> Result<String> {
        if self.timescale == 0 {
            return Err(Error::InvalidParameter(
                "playlist timescale must be non-zero",
            ));
        }
        for pair in self.segments.windows(2) {
            check_consecutive(pair[0].info.sequence_number + 1, &[pair[1].info])?;
        }
        let mut text = String::new();
        let media_sequence = self
            .segments
            .first()
            .map_or(0, |segment| segment.info.sequence_number);
        let target = self.target_duration();
        let low_latency = self.low_latency.as_ref();
        // EXT-X-SKIP needs version 9; LL playlists declare it whole or delta.
        let version = if low_latency.is_some() {
            9
        } else {
            PROTOCOL_VERSION
        };
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-TARGETDURATION:{target}\n"
        );
        if let Some(ll) = low_latency {
            let _ = write!(
                text,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}\n\
                 #EXT-X-PART-INF:PART-TARGET={:.3}\n",
                (SKIP_TARGET_DURATIONS * target) as f64,
                ll.part_hold_back(),
                ll.part_target
            );
        }
        let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        let skipped = match low_latency {
            Some(ll) if ll.skip && !self.ended => self.skippable(SKIP_TARGET_DURATIONS * target),
            _ => 0,
        };
        if skipped > 0 {
            let _ = writeln!(text, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        // Parts are listed for the segments that end within three target
        // durations of the playlist's end.
        let parts_from = match low_latency {
            Some(_) => self.newest_spanning(PART_TARGET_DURATIONS * target),
            None => self.segments.len(),
        };
        let mut current_init: Option<&str> = None;
        for (index, segment) in self.segments.iter().enumerate().skip(skipped) {
            // A discontinuity as the first line would be one already
            // counted by the discontinuity sequence.
            if segment.discontinuity && index > 0 {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            self.segment_head(
                &mut text,
                &mut current_init,
                &segment.init_uri,
                segment.program_time,
            );
            if index >= parts_from {
                self.write_parts(&mut text, &segment.parts);
            }
            if segment.gap {
                text.push_str("#EXT-X-GAP\n");
            }
            let seconds = ticks_to_seconds(segment.info.duration, self.timescale);
            let _ = writeln!(text, "#EXTINF:{:.5},\n{}", seconds, segment.uri);
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        } else if let Some(ll) = low_latency {
            if let Some(open) = &ll.open {
                if open.discontinuity && !self.segments.is_empty() {
                    text.push_str("#EXT-X-DISCONTINUITY\n");
                }
                if !open.parts.is_empty() || ll.preload_hint.is_some() {
                    self.segment_head(
                        &mut text,
                        &mut current_init,
                        &open.init_uri,
                        open.program_time,
                    );
                }
                self.write_parts(&mut text, &open.parts);
            }
            if let Some(hint) = &ll.preload_hint {
                let _ = writeln!(text, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
            }
        }
        if let Some(ll) = low_latency {
            for report in &ll.rendition_reports {
                let _ = write!(
                    text,
                    "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                    report.uri, report.last_msn
                );
                if let Some(part) = report.last_part {
                    let _ = write!(text, ",LAST-PART={part}");
                }
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// `EXT-X-MAP` when the init segment changes, then the wall clock.
    fn segment_head<'a>(
        &self,
        text: &mut String,
        current_init: &mut Option<&'a str>,
        init_uri: &'a str,
        program_time: chrono::DateTime<chrono::Utc>,
    ) {
        if *current_init != Some(init_uri) {
            let _ = writeln!(text, "#EXT-X-MAP:URI=\"{init_uri}\"");
            *current_init = Some(init_uri);
        }
        let _ = writeln!(
            text,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            program_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }

    fn write_parts(&self, text: &mut String, parts: &[LivePart]) {
        for part in parts {
            let seconds = ticks_to_seconds(part.duration, self.timescale);
            let _ = write!(
                text,
                "#EXT-X-PART:DURATION={seconds:.5},URI=\"{}\"",
                part.uri
            );
            if part.independent {
                text.push_str(",INDEPENDENT=YES");
            }
            text.push('\n');
        }
    }

    /// Index of the oldest segment among the newest ones that together
    /// (with the open segment's parts) reach `seconds` back from the end.
    fn newest_spanning(&self, seconds: u64) -> usize {
        let limit = u128::from(seconds) * u128::from(self.timescale);
        let mut span: u128 = self
            .low_latency
            .as_ref()
            .and_then(|ll| ll.open.as_ref())
            .map(|open| open.parts.iter().map(|p| u128::from(p.duration)).sum())
            .unwrap_or(0);
        let mut index = self.segments.len();
        while index > 0 && span < limit {
            index -= 1;
            span += u128::from(self.segments[index].info.duration);
        }
        index
    }

    /// Leading segments a delta update may skip: those that end at or
    /// before the skip boundary, `seconds` before the end of the playlist
    /// (RFC 8216bis 6.2.5.1). The last segment is always listed.
    fn skippable(&self, seconds: u64) -> usize {
        let limit = u128::from(seconds) * u128::from(self.timescale);
        let mut remaining: u128 = self
            .segments
            .iter()
            .map(|segment| u128::from(segment.info.duration))
            .sum();
        let mut skipped = 0;
        for segment in self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
        {
            let after = remaining - u128::from(segment.info.duration);
            if after < limit {
                break;
            }
            remaining = after;
            skipped += 1;
        }
        skipped
    }
}

fn write_text(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut buffer = Vec::new();
    // Writing into a Vec cannot fail (allocation failure aborts instead).
    let _ = write(&mut buffer);
    // Every piece of the text came from a &str, so this never replaces anything.
    String::from_utf8_lossy(&buffer).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(sequence_number: u64, start: u64, duration: u64) -> SegmentInfo {
        SegmentInfo {
            sequence_number,
            start,
            duration,
            size: 1000,
        }
    }

    #[test]
    fn target_duration_rounds_up() {
        let mut playlist = Playlist::new(PlaylistType::Vod, 90_000, "init.mp4").unwrap();
        playlist.push(segment(1, 0, 180_000), "1.m4s").unwrap();
        assert_eq!(playlist.target_duration(), 2);
        playlist
            .push(segment(2, 180_000, 180_001), "2.m4s")
            .unwrap();
        assert_eq!(playlist.target_duration(), 3);
    }

    #[test]
    fn rejects_sequence_gaps() {
        let mut playlist = Playlist::new(PlaylistType::Vod, 90_000, "init.mp4").unwrap();
        playlist.push(segment(1, 0, 90_000), "1.m4s").unwrap();
        assert_eq!(
            playlist.push(segment(3, 90_000, 90_000), "3.m4s"),
            Err(Error::SequenceGap {
                expected: 2,
                got: 3
            })
        );
    }

    fn live_segment(sequence: u64, session: u32, discontinuity: bool) -> LiveSegment {
        LiveSegment {
            info: segment(sequence, sequence * 180_000, 180_000),
            uri: format!("../s{session}/720p/{sequence}.m4s"),
            init_uri: format!("../s{session}/720p/init.mp4"),
            program_time: chrono::DateTime::from_timestamp(1_700_000_000 + sequence as i64 * 2, 0)
                .unwrap(),
            discontinuity,
            gap: false,
            parts: Vec::new(),
        }
    }

    #[test]
    fn live_playlist_marks_reconnects_and_parses() {
        let playlist = LivePlaylist {
            timescale: 90_000,
            target_duration: 2,
            discontinuity_sequence: 1,
            segments: vec![
                live_segment(7, 2, true),
                live_segment(8, 2, false),
                live_segment(9, 3, true),
            ],
            ended: false,
            low_latency: None,
        };
        let text = playlist.render().unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n\
             #EXT-X-MAP:URI=\"../s2/720p/init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:34.000Z\n\
             #EXTINF:2.00000,\n../s2/720p/7.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:36.000Z\n#EXTINF:2.00000,\n../s2/720p/8.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"../s3/720p/init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:38.000Z\n#EXTINF:2.00000,\n../s3/720p/9.m4s\n"
        );
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.media_sequence, 7);
        assert_eq!(parsed.discontinuity_sequence, 1);
        assert!(parsed.segments[2].discontinuity && !parsed.end_list);
        let mut ended = playlist.clone();
        ended.ended = true;
        assert!(ended.render().unwrap().ends_with("#EXT-X-ENDLIST\n"));
        let mut gap = playlist.clone();
        gap.segments[1].info.sequence_number = 10;
        assert!(gap.render().is_err());

        // A segment the rung sat out: a gap, as players read it.
        let mut sat_out = playlist;
        sat_out.segments[1].gap = true;
        let text = sat_out.render().unwrap();
        assert!(
            text.contains(
                "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:36.000Z\n#EXT-X-GAP\n#EXTINF:2.00000,\n../s2/720p/8.m4s\n"
            ),
            "{text}"
        );
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.segments.len(), 3);
    }

    fn parts(sequence: u64, count: u32) -> Vec<LivePart> {
        (0..count)
            .map(|index| LivePart {
                duration: 30_000,
                uri: format!("../s1/720p/{sequence}.{index}.m4s"),
                independent: index == 0,
            })
            .collect()
    }

    fn low_latency_playlist(skip: bool) -> LivePlaylist {
        let mut segments: Vec<LiveSegment> =
            (1..=8).map(|seq| live_segment(seq, 1, false)).collect();
        for segment in &mut segments {
            segment.parts = parts(segment.info.sequence_number, 6);
        }
        LivePlaylist {
            timescale: 90_000,
            target_duration: 2,
            discontinuity_sequence: 0,
            segments,
            ended: false,
            low_latency: Some(LowLatency {
                part_target: 1.0 / 3.0,
                open: Some(OpenLiveSegment {
                    init_uri: "../s1/720p/init.mp4".to_owned(),
                    program_time: chrono::DateTime::from_timestamp(1_700_000_018, 0).unwrap(),
                    discontinuity: false,
                    parts: parts(9, 2),
                }),
                preload_hint: Some("../s1/720p/9.2.m4s".to_owned()),
                rendition_reports: vec![RenditionReport {
                    uri: "../480p/index.m3u8".to_owned(),
                    last_msn: 9,
                    last_part: Some(1),
                }],
                skip,
            }),
        }
    }

    #[test]
    fn low_latency_playlist_lists_recent_parts_hints_and_reports() {
        let text = low_latency_playlist(false).render().unwrap();
        let head =
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.000\n\
             #EXT-X-PART-INF:PART-TARGET=0.333\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-MAP:URI=\"../s1/720p/init.mp4\"\n";
        assert!(text.starts_with(head), "{text}");
        // Parts for the segments of the last three target durations (6 s,
        // counting the open segment's 0.67 s): segments 6, 7 and 8.
        let with_parts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-PART:") && l.contains(".0.m4s"))
            .collect();
        assert_eq!(with_parts.len(), 4, "{text}");
        assert!(with_parts[0].contains("/6.0.m4s") && with_parts[3].contains("/9.0.m4s"));
        let tail = "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:36.000Z\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/8.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/8.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/8.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/8.3.m4s\"\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/8.4.m4s\"\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/8.5.m4s\"\n\
             #EXTINF:2.00000,\n../s1/720p/8.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:38.000Z\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/9.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"../s1/720p/9.1.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"../s1/720p/9.2.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=9,LAST-PART=1\n";
        assert!(text.ends_with(tail), "{text}");
        // Players without LL support read the same playlist.
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.segments.len(), 8);
        // Ended: no hint, no open parts.
        let mut ended = low_latency_playlist(false);
        ended.ended = true;
        let text = ended.render().unwrap();
        assert!(text.contains("#EXT-X-ENDLIST\n") && !text.contains("PRELOAD-HINT"));
        assert!(!text.contains("/9.0.m4s"));
    }

    #[test]
    fn delta_update_skips_what_lies_before_the_skip_boundary() {
        // Eight segments of 2 s; CAN-SKIP-UNTIL is 12 s: segments 1 and 2
        // end at or before 16 - 12 = 4 s and are skipped.
        let text = low_latency_playlist(true).render().unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-MAP:URI=\"../s1/720p/init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z\n#EXTINF"), "{text}");
        assert!(!text.contains("/1.m4s") && !text.contains("/2.m4s") && text.contains("/3.m4s"));
        // The delta update ends as the whole playlist does.
        let full = low_latency_playlist(false).render().unwrap();
        let from = |t: &str| t[t.find("../s1/720p/3.m4s").unwrap()..].to_owned();
        assert_eq!(from(&text), from(&full));
        // A short playlist has nothing to skip.
        let mut short = low_latency_playlist(true);
        short.segments.truncate(5);
        assert!(!short.render().unwrap().contains("EXT-X-SKIP"));
    }

    #[test]
    fn live_target_duration_grows_with_a_long_segment() {
        let mut playlist = LivePlaylist {
            timescale: 90_000,
            target_duration: 2,
            discontinuity_sequence: 0,
            segments: vec![live_segment(1, 1, false)],
            ended: false,
            low_latency: None,
        };
        // 2.033 s (one frame late) rounds to 2.
        playlist.segments[0].info.duration = 183_000;
        assert_eq!(playlist.target_duration(), 2);
        playlist.segments[0].info.duration = 270_000;
        assert_eq!(playlist.target_duration(), 3);
    }

    #[test]
    fn event_playlist_ends_only_when_told() {
        let mut playlist = Playlist::new(PlaylistType::Event, 1000, "init.mp4").unwrap();
        playlist.push(segment(5, 0, 2000), "5.m4s").unwrap();
        let live = playlist.render();
        assert_eq!(
            live,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-START:TIME-OFFSET=0\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2,\n5.m4s\n"
        );
        playlist.end();
        assert_eq!(playlist.render(), format!("{live}#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn a_growing_playlist_only_ever_appends() {
        let mut rendition = Rendition {
            name: "720p".to_owned(),
            kind: MediaKind::Video {
                width: 1280,
                height: 720,
                frame_rate: crate::time::Rational::new(30, 1).unwrap(),
            },
            codecs: "avc1.64001f".to_owned(),
            timescale: 1000,
            segments: vec![segment(1, 0, 4000)],
        };
        let layout = UriLayout::default();
        // Declared 5 s: a later segment one frame over 4 s must not change it.
        let first = Playlist::growing(&rendition, &layout, 5).unwrap().render();
        assert_eq!(
            first,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:5\n\
             #EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-START:TIME-OFFSET=0\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4,\n1.m4s\n"
        );
        rendition.segments.push(segment(2, 4000, 4033));
        rendition.segments.push(segment(3, 8033, 1500));
        let more = Playlist::growing(&rendition, &layout, 5).unwrap().render();
        assert_eq!(
            more,
            format!("{first}#EXTINF:4.033,\n2.m4s\n#EXTINF:1.5,\n3.m4s\n")
        );
        let mut last = Playlist::growing(&rendition, &layout, 5).unwrap();
        last.end();
        assert_eq!(last.render(), format!("{more}#EXT-X-ENDLIST\n"));
    }
}
