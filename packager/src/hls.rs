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

use std::collections::HashMap;
use std::fmt::Write as _;

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, Map, MasterPlaylist, MediaPlaylist, MediaPlaylistType,
    MediaSegment, QuotedOrUnquoted, Resolution, VariantStream,
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
    /// Live presentation that only grows: `EXT-X-PLAYLIST-TYPE:EVENT`, and
    /// `EXT-X-ENDLIST` only once [`Playlist::end`] is called.
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
        })
    }

    /// The complete VOD playlist of a rendition, named by `layout`.
    pub fn for_rendition(rendition: &Rendition, layout: &UriLayout) -> Result<Self> {
        layout.validate()?;
        rendition.validate()?;
        let mut playlist = Self::new(
            PlaylistType::Vod,
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
    /// (at least 1), so no `EXTINF` exceeds it however a player rounds.
    pub fn target_duration(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|(segment, _)| segment.duration)
            .max()
            .unwrap_or(0);
        ceil_seconds(longest, self.timescale).max(1)
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
}

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
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:{PROTOCOL_VERSION}\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{media_sequence}\n",
            self.target_duration()
        );
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        let mut current_init: Option<&str> = None;
        for (index, segment) in self.segments.iter().enumerate() {
            // A discontinuity as the first line would be one already
            // counted by the discontinuity sequence.
            if segment.discontinuity && index > 0 {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if current_init != Some(segment.init_uri.as_str()) {
                let _ = writeln!(text, "#EXT-X-MAP:URI=\"{}\"", segment.init_uri);
                current_init = Some(&segment.init_uri);
            }
            let _ = writeln!(
                text,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                segment
                    .program_time
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            let seconds = ticks_to_seconds(segment.info.duration, self.timescale);
            let _ = writeln!(text, "#EXTINF:{:.5},\n{}", seconds, segment.uri);
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        Ok(text)
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
        let mut gap = playlist;
        gap.segments[1].info.sequence_number = 10;
        assert!(gap.render().is_err());
    }

    #[test]
    fn live_target_duration_grows_with_a_long_segment() {
        let mut playlist = LivePlaylist {
            timescale: 90_000,
            target_duration: 2,
            discontinuity_sequence: 0,
            segments: vec![live_segment(1, 1, false)],
            ended: false,
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
             #EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:2,\n5.m4s\n"
        );
        playlist.end();
        assert_eq!(playlist.render(), format!("{live}#EXT-X-ENDLIST\n"));
    }
}
