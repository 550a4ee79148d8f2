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

use std::collections::HashMap;

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
    layout.validate()?;
    if renditions.is_empty() {
        return Err(Error::NothingToDescribe(
            "no renditions for the master playlist",
        ));
    }
    for rendition in renditions {
        rendition.validate()?;
    }
    let playlist_uri =
        |rendition: &Rendition| format!("{}/{}", rendition.name, layout.media_playlist);

    let (videos, audios): (Vec<&Rendition>, Vec<&Rendition>) = renditions
        .iter()
        .partition(|rendition| rendition.is_video());

    let mut master = MasterPlaylist {
        version: Some(PROTOCOL_VERSION),
        independent_segments: true,
        ..MasterPlaylist::default()
    };

    if videos.is_empty() {
        for audio in audios {
            let bitrates = audio.bitrates();
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
        let bitrates = audio.bitrates();
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
            let bitrates = video.bitrates();
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
