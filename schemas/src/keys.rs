//! The object layout: the only place object keys are spelled.
//!
//! ```text
//! assets/{asset_id}/source                         the creator's original
//! assets/{asset_id}/v{version}/master.m3u8         HLS master playlist (written last)
//! assets/{asset_id}/v{version}/manifest.mpd        DASH MPD (written last)
//! assets/{asset_id}/v{version}/{rendition}/index.m3u8
//! assets/{asset_id}/v{version}/{rendition}/init.mp4
//! assets/{asset_id}/v{version}/{rendition}/{seq}.m4s
//! live/{stream_id}/master.m3u8                     live HLS master playlist (per broadcast)
//! live/{stream_id}/manifest.mpd                    dynamic DASH MPD (rewritten per segment)
//! live/{stream_id}/{rendition}/index.m3u8          sliding-window media playlist
//! live/{stream_id}/s{session}/{rendition}/init.mp4 init segment of one publish session
//! live/{stream_id}/s{session}/{rendition}/{seq}.m4s media segments (seq never reused per stream)
//! uploads/{upload_id}/staged-...                   staged pieces of in-progress tus uploads
//! tmp/...                                          scratch, expired by lifecycle rule
//! ```
//!
//! Segments are immutable once written; a re-transcode writes a new
//! `v{version}` so caches never see a changed segment under an old key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AssetId, LiveStreamId};
use crate::mime;

/// Prefix of every asset's objects.
pub const ASSETS_PREFIX: &str = "assets/";
/// Prefix of every live stream's objects.
pub const LIVE_PREFIX: &str = "live/";
/// Prefix of in-progress upload data.
pub const UPLOADS_PREFIX: &str = "uploads/";
/// Prefix of scratch objects that a lifecycle rule expires.
pub const TMP_PREFIX: &str = "tmp/";

/// File name of a version's HLS master playlist (in storage and in URLs).
pub const HLS_MASTER: &str = "master.m3u8";
/// File name of a version's DASH MPD (in storage and in URLs).
pub const DASH_MANIFEST: &str = "manifest.mpd";
/// File name of a rendition's HLS media playlist.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
/// File name of a rendition's CMAF init segment.
pub const INIT_SEGMENT: &str = "init.mp4";
/// Extension of CMAF media segments and parts (`{seq}.m4s`, `{msn}.{part}.m4s`).
pub const SEGMENT_EXTENSION: &str = ".m4s";

/// A rendition's directory name (`1080p`, `audio`): lowercase ASCII letters,
/// digits, `_` and `-`, 1 to 32 characters. Never a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RenditionName(String);

/// A rendition name with characters outside the allowed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rendition name {0:?}: use 1-32 of a-z, 0-9, '_' and '-'")]
pub struct InvalidRenditionName(pub String);

impl RenditionName {
    /// Validates a rendition name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidRenditionName> {
        let name = name.into();
        let ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name))
        } else {
            Err(InvalidRenditionName(name))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RenditionName {
    type Error = InvalidRenditionName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RenditionName> for String {
    fn from(value: RenditionName) -> Self {
        value.0
    }
}

impl fmt::Display for RenditionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of object a key names; decides content type and caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    /// A creator's original upload.
    Source,
    /// HLS master or media playlist.
    HlsPlaylist,
    /// DASH MPD.
    DashManifest,
    /// CMAF init segment.
    InitSegment,
    /// CMAF media segment.
    MediaSegment,
    /// Upload parts and scratch data.
    Scratch,
}

impl ObjectClass {
    /// The `Content-Type` objects of this class are stored and served with.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Source | Self::Scratch => mime::OCTET_STREAM,
            Self::HlsPlaylist => mime::HLS_PLAYLIST,
            Self::DashManifest => mime::DASH_MPD,
            Self::InitSegment => mime::MP4_VIDEO,
            Self::MediaSegment => mime::MP4_SEGMENT,
        }
    }

    /// Classifies a key by its last path component. Used where only the key
    /// is known (listing, the local backend's `head`).
    pub fn of_key(key: &str) -> Self {
        let name = key.rsplit('/').next().unwrap_or(key);
        if key.starts_with(UPLOADS_PREFIX) || key.starts_with(TMP_PREFIX) {
            Self::Scratch
        } else if name == "source" {
            Self::Source
        } else if name.ends_with(".m3u8") {
            Self::HlsPlaylist
        } else if name.ends_with(".mpd") {
            Self::DashManifest
        } else if name == INIT_SEGMENT {
            Self::InitSegment
        } else if name.ends_with(SEGMENT_EXTENSION) {
            Self::MediaSegment
        } else {
            Self::Scratch
        }
    }
}

/// A validated object key. Construct one only through the functions below.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The class of object this key names.
    pub fn class(&self) -> ObjectClass {
        ObjectClass::of_key(&self.0)
    }

    /// The creator's original (the first source; see [`Self::source_version`]).
    pub fn source(asset: AssetId) -> Self {
        Self(format!("{ASSETS_PREFIX}{asset}/source"))
    }

    /// The source of output version `version`: the first at
    /// [`Self::source`], a replacement's beside the outputs it makes
    /// (`v{n}/source`), so a replacement never overwrites the source that
    /// published outputs came from.
    pub fn source_version(asset: AssetId, version: u32) -> Self {
        if version <= 1 {
            Self::source(asset)
        } else {
            Self(format!("{}source", Self::version_prefix(asset, version)))
        }
    }

    /// Everything belonging to an asset (for listing and deletion).
    pub fn asset_prefix(asset: AssetId) -> String {
        format!("{ASSETS_PREFIX}{asset}/")
    }

    /// Everything of one published version of an asset.
    pub fn version_prefix(asset: AssetId, version: u32) -> String {
        format!("{ASSETS_PREFIX}{asset}/v{version}/")
    }

    /// Everything of one rendition of a version (its media: what moves
    /// between storage tiers).
    pub fn rendition_prefix(asset: AssetId, version: u32, rendition: &RenditionName) -> String {
        format!("{}{rendition}/", Self::version_prefix(asset, version))
    }

    /// The HLS master playlist of a version.
    pub fn hls_master(asset: AssetId, version: u32) -> Self {
        Self(format!(
            "{}{}",
            Self::version_prefix(asset, version),
            HLS_MASTER
        ))
    }

    /// The DASH MPD of a version.
    pub fn dash_manifest(asset: AssetId, version: u32) -> Self {
        Self(format!(
            "{}{}",
            Self::version_prefix(asset, version),
            DASH_MANIFEST
        ))
    }

    /// A rendition's HLS media playlist.
    pub fn media_playlist(asset: AssetId, version: u32, rendition: &RenditionName) -> Self {
        Self(format!(
            "{}{rendition}/{MEDIA_PLAYLIST}",
            Self::version_prefix(asset, version)
        ))
    }

    /// A rendition's CMAF init segment.
    pub fn init_segment(asset: AssetId, version: u32, rendition: &RenditionName) -> Self {
        Self(format!(
            "{}{rendition}/{INIT_SEGMENT}",
            Self::version_prefix(asset, version)
        ))
    }

    /// A rendition's CMAF media segment number `seq`.
    pub fn media_segment(
        asset: AssetId,
        version: u32,
        rendition: &RenditionName,
        seq: u64,
    ) -> Self {
        Self(format!(
            "{}{rendition}/{seq}.m4s",
            Self::version_prefix(asset, version)
        ))
    }

    /// Everything of one live stream.
    pub fn live_prefix(stream: LiveStreamId) -> String {
        format!("{LIVE_PREFIX}{stream}/")
    }

    /// Everything of one publish session of a live stream.
    pub fn live_session_prefix(stream: LiveStreamId, session: u32) -> String {
        format!("{LIVE_PREFIX}{stream}/s{session}/")
    }

    /// A live stream's HLS master playlist.
    pub fn live_master(stream: LiveStreamId) -> Self {
        Self(format!("{}master.m3u8", Self::live_prefix(stream)))
    }

    /// A live stream's dynamic DASH MPD.
    pub fn live_manifest(stream: LiveStreamId) -> Self {
        Self(format!("{}manifest.mpd", Self::live_prefix(stream)))
    }

    /// A live rendition's sliding-window media playlist.
    pub fn live_media_playlist(stream: LiveStreamId, rendition: &RenditionName) -> Self {
        Self(format!(
            "{}{rendition}/{MEDIA_PLAYLIST}",
            Self::live_prefix(stream)
        ))
    }

    /// A live rendition's init segment in publish session `session`
    /// (a reconnecting publisher may change codecs, so each has its own).
    pub fn live_init_segment(
        stream: LiveStreamId,
        session: u32,
        rendition: &RenditionName,
    ) -> Self {
        Self(format!(
            "{}{rendition}/{INIT_SEGMENT}",
            Self::live_session_prefix(stream, session)
        ))
    }

    /// A live rendition's media segment `seq` (never reused on a stream,
    /// so CDNs may cache it forever).
    pub fn live_media_segment(
        stream: LiveStreamId,
        session: u32,
        rendition: &RenditionName,
        seq: u64,
    ) -> Self {
        Self(format!(
            "{}{rendition}/{seq}.m4s",
            Self::live_session_prefix(stream, session)
        ))
    }

    /// Whether this key belongs to a live stream (its manifests change
    /// every segment; its segments appear while players ask for them).
    pub fn is_live(&self) -> bool {
        self.0.starts_with(LIVE_PREFIX)
    }

    /// Staged piece `seq` of an in-progress tus upload (a body too small
    /// for a multipart part, or of unknown length), written by the request
    /// holding lease `writer` (so two writers never share a key).
    pub fn upload_staged(upload: uuid::Uuid, seq: u32, writer: uuid::Uuid) -> Self {
        Self(format!(
            "{UPLOADS_PREFIX}{upload}/staged-{seq:06}-{}",
            writer.simple()
        ))
    }

    /// The staged pieces of one upload.
    pub fn upload_staged_prefix(upload: uuid::Uuid) -> String {
        format!("{UPLOADS_PREFIX}{upload}/staged-")
    }

    /// The bytes of a partial tus upload (concatenation extension), until a
    /// final upload copies them into its asset's source.
    pub fn upload_data(upload: uuid::Uuid) -> Self {
        Self(format!("{UPLOADS_PREFIX}{upload}/data"))
    }

    /// Everything stored for one upload.
    pub fn upload_prefix(upload: uuid::Uuid) -> String {
        format!("{UPLOADS_PREFIX}{upload}/")
    }

    /// A scratch object under the lifecycle-expired prefix.
    pub fn scratch(name: uuid::Uuid) -> Self {
        Self(format!("{TMP_PREFIX}{name}"))
    }

    /// Wraps a key read back from the store (listing). The store only ever
    /// holds keys this module made.
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        let asset: AssetId = "8d7c5bde-1d0e-4c43-9d59-0e5f6c2b7a10".parse().unwrap();
        let r = RenditionName::new("1080p").unwrap();
        assert_eq!(
            ObjectKey::media_segment(asset, 1, &r, 7).as_str(),
            "assets/8d7c5bde-1d0e-4c43-9d59-0e5f6c2b7a10/v1/1080p/7.m4s"
        );
        assert_eq!(
            ObjectKey::hls_master(asset, 2).as_str(),
            "assets/8d7c5bde-1d0e-4c43-9d59-0e5f6c2b7a10/v2/master.m3u8"
        );
        assert_eq!(ObjectKey::source(asset).class(), ObjectClass::Source);
        assert_eq!(
            ObjectKey::source_version(asset, 1),
            ObjectKey::source(asset)
        );
        let replaced = ObjectKey::source_version(asset, 2);
        assert_eq!(replaced.as_str(), format!("assets/{asset}/v2/source"));
        assert_eq!(replaced.class(), ObjectClass::Source);
        assert_eq!(
            ObjectKey::init_segment(asset, 1, &r).class(),
            ObjectClass::InitSegment
        );
        assert_eq!(
            ObjectKey::media_playlist(asset, 1, &r).class(),
            ObjectClass::HlsPlaylist
        );
        assert_eq!(
            ObjectKey::dash_manifest(asset, 1).class().content_type(),
            mime::DASH_MPD
        );
        let upload = uuid::Uuid::nil();
        let data = ObjectKey::upload_data(upload);
        assert_eq!(
            data.as_str(),
            "uploads/00000000-0000-0000-0000-000000000000/data"
        );
        assert_eq!(data.class(), ObjectClass::Scratch);
        // A partial's bytes are under its upload prefix (deleted with it),
        // but not among its staged pieces (deleted when it completes).
        assert!(data.as_str().starts_with(&ObjectKey::upload_prefix(upload)));
        assert!(!data
            .as_str()
            .starts_with(&ObjectKey::upload_staged_prefix(upload)));
        assert!(ObjectKey::upload_staged(upload, 1, upload)
            .as_str()
            .starts_with(&ObjectKey::upload_staged_prefix(upload)));
    }

    #[test]
    fn live_layout_is_stable() {
        let stream: LiveStreamId = "8d7c5bde-1d0e-4c43-9d59-0e5f6c2b7a10".parse().unwrap();
        let r = RenditionName::new("720p").unwrap();
        let segment = ObjectKey::live_media_segment(stream, 3, &r, 41);
        assert_eq!(
            segment.as_str(),
            "live/8d7c5bde-1d0e-4c43-9d59-0e5f6c2b7a10/s3/720p/41.m4s"
        );
        assert_eq!(segment.class(), ObjectClass::MediaSegment);
        assert!(segment.is_live());
        assert!(segment
            .as_str()
            .starts_with(&ObjectKey::live_session_prefix(stream, 3)));
        assert_eq!(
            ObjectKey::live_init_segment(stream, 3, &r).class(),
            ObjectClass::InitSegment
        );
        assert_eq!(
            ObjectKey::live_media_playlist(stream, &r).as_str(),
            "live/8d7c5bde-1d0e-4c43-9d59-0e5f6c2b7a10/720p/index.m3u8"
        );
        assert_eq!(
            ObjectKey::live_manifest(stream).class(),
            ObjectClass::DashManifest
        );
        assert!(!ObjectKey::hls_master(AssetId::new(), 1).is_live());
    }

    #[test]
    fn rendition_names_cannot_be_paths() {
        for bad in ["", "..", "a/b", "1080P", "x".repeat(33).as_str(), "a b"] {
            assert!(RenditionName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(RenditionName::new("audio_en-2").is_ok());
    }
}
