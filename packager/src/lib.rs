//! Cascade's packager: encoded samples in, CMAF segments and HLS/DASH
//! manifests out.
//!
//! A pure library (no I/O, no async, no FFmpeg types), so the same code
//! serves VOD and live and is tested in microseconds. It implements:
//!
//! - ISO/IEC 23000-19 (CMAF) track files: a CMAF header (`ftyp` + `moov`,
//!   see ISO/IEC 14496-12) per track, and one `moof` + `mdat` fragment per
//!   segment, with `tfdt` at each segment's earliest presentation time and
//!   signed composition offsets instead of an edit list for B-frames, and
//!   an edit list (ISO/IEC 14496-12 8.6.6) only to skip an audio
//!   encoder's priming ([`AudioTrack::with_priming`]); for low-latency
//!   live, segments cut into parts (CMAF chunks, LL-HLS partial segments),
//!   a segment being its parts joined ([`Segmenter::with_parts`]);
//! - ISO/IEC 14496-15 `avcC` for H.264 (from `avcC` or Annex B extradata)
//!   and ISO/IEC 14496-1/-3 `esds` for AAC;
//! - RFC 8216 HLS media and master playlists (through `m3u8_rs`), live
//!   playlists, and Low-Latency HLS playlists (draft-pantos-hls-rfc8216bis:
//!   parts, preload hints, rendition reports, delta updates);
//! - ISO/IEC 23009-1 DASH static and dynamic MPDs with `SegmentTimeline`,
//!   low-latency ones with `availabilityTimeOffset` and `ServiceDescription`.
//!
//! # Flow
//!
//! 1. Describe each stream as a [`VideoTrack`] or [`AudioTrack`], wrap it
//!    in a [`Segmenter`] with the target segment duration, and store
//!    [`Segmenter::init_segment`] as `{rendition}/init.mp4`.
//! 2. [`Segmenter::push`] every sample in decode order; store each returned
//!    [`MediaSegment`] as `{rendition}/{sequence_number}.m4s`, then the one
//!    from [`Segmenter::finish`]. Sequence numbers start at
//!    [`FIRST_SEQUENCE_NUMBER`] (1).
//! 3. Build a [`Rendition`] per track from the [`SegmentInfo`]s and render
//!    [`hls::Playlist::for_rendition`], [`hls::render_master_playlist`] and
//!    [`dash::render_mpd`]. File names follow [`UriLayout`].
//!
//! Segments are cut at the first sync sample at or after each multiple of
//! the target duration (see [`segmenter`]), so rungs whose keyframes were
//! forced at the same times share segment boundaries.

pub mod aac;
pub mod avc;
mod boxes;
pub mod dash;
mod error;
#[cfg(test)]
mod fuzz;
pub mod hls;
mod manifest;
pub mod segmenter;
mod time;
mod track;

pub use aac::AudioSpecificConfig;
pub use avc::{AvcConfig, SpsInfo};
pub use error::{Error, Result};
pub use manifest::{Bitrates, MediaKind, Rendition, UriLayout};
pub use segmenter::{MediaSegment, Part, Sample, SegmentInfo, Segmenter, FIRST_SEQUENCE_NUMBER};
pub use time::Rational;
pub use track::{AudioTrack, Track, VideoTrack};
