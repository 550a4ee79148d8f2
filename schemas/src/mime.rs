//! Content types, one constant per object class (see [`crate::keys::ObjectClass`]).

/// HLS playlists (RFC 8216 section 4).
pub const HLS_PLAYLIST: &str = "application/vnd.apple.mpegurl";
/// DASH MPD (ISO/IEC 23009-1 annex C).
pub const DASH_MPD: &str = "application/dash+xml";
/// CMAF init segments.
pub const MP4_VIDEO: &str = "video/mp4";
/// CMAF media segments (`.m4s`). `video/iso.segment` is registered but
/// players and CDNs universally expect `video/mp4`.
pub const MP4_SEGMENT: &str = "video/mp4";
/// Anything opaque (originals, upload parts).
pub const OCTET_STREAM: &str = "application/octet-stream";
/// API bodies.
pub const JSON: &str = "application/json";
