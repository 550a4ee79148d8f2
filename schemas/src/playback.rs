//! Playback URL paths: the paths the origin serves an asset's objects under,
//! which are also the keys a CDN caches them by. Spelled here so the CDN
//! purge names exactly what the origin's router answers (`origin` parses
//! the same shapes).
//!
//! ```text
//! /play/{playback_id}/master.m3u8                      the published (or growing) version's
//! /play/{playback_id}/manifest.mpd                     top-level manifests
//! /play/{playback_id}/v{version}/{rendition}/{file}    media of one version (what manifests name)
//! /play/{playback_id}/{rendition}/{file}               the published version's media (unversioned)
//! ```

use crate::ids::{AssetId, PlaybackId};
use crate::keys::{ObjectKey, DASH_MANIFEST, HLS_MASTER};

/// Where every playback URL starts.
pub const PLAY_PREFIX: &str = "/play/";

/// The top-level manifests of a playback id: what changes when another
/// version is published.
pub fn manifest_paths(playback_id: &PlaybackId) -> [String; 2] {
    [HLS_MASTER, DASH_MANIFEST].map(|file| format!("{PLAY_PREFIX}{playback_id}/{file}"))
}

/// How the origin serves one stored object of an asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedAs {
    /// A version's manifest, served at the top level (when that version is
    /// the published or growing one).
    Manifest(String),
    /// A version's media: under its versioned path and, while the version
    /// is the published one, under the unversioned path too.
    Media {
        /// `/play/{playback_id}/v{version}/{rendition}/{file}`.
        versioned: String,
        /// `/play/{playback_id}/{rendition}/{file}`.
        unversioned: String,
    },
}

/// How the origin serves the stored object `key` of `asset` (played as
/// `playback_id`); `None` for what is never served (sources) and for keys
/// of another asset.
pub fn served_as(playback_id: &PlaybackId, asset: AssetId, key: &ObjectKey) -> Option<ServedAs> {
    let own = ObjectKey::asset_prefix(asset);
    let rest = key.as_str().strip_prefix(own.as_str())?;
    let (version, rest) = rest.split_once('/')?; // none: the first source
    let digits = version.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match rest.split_once('/') {
        None if rest == HLS_MASTER || rest == DASH_MANIFEST => Some(ServedAs::Manifest(format!(
            "{PLAY_PREFIX}{playback_id}/{rest}"
        ))),
        None => None, // a replacement's source
        Some((rendition, file)) if !file.contains('/') => Some(ServedAs::Media {
            versioned: format!("{PLAY_PREFIX}{playback_id}/{version}/{rendition}/{file}"),
            unversioned: format!("{PLAY_PREFIX}{playback_id}/{rendition}/{file}"),
        }),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RenditionName;

    #[test]
    fn objects_map_to_the_paths_the_origin_serves() {
        let asset = AssetId::new();
        let pid: PlaybackId = "abcdefghijklmnopqrstuvwx".parse().unwrap();
        let r = RenditionName::new("720p").unwrap();
        let served = |key: ObjectKey| served_as(&pid, asset, &key);
        assert_eq!(
            served(ObjectKey::media_segment(asset, 2, &r, 7)),
            Some(ServedAs::Media {
                versioned: "/play/abcdefghijklmnopqrstuvwx/v2/720p/7.m4s".to_owned(),
                unversioned: "/play/abcdefghijklmnopqrstuvwx/720p/7.m4s".to_owned(),
            })
        );
        assert_eq!(
            served(ObjectKey::hls_master(asset, 3)),
            Some(ServedAs::Manifest(
                "/play/abcdefghijklmnopqrstuvwx/master.m3u8".to_owned()
            ))
        );
        assert_eq!(
            served(ObjectKey::dash_manifest(asset, 3)),
            Some(ServedAs::Manifest(
                "/play/abcdefghijklmnopqrstuvwx/manifest.mpd".to_owned()
            ))
        );
        assert_eq!(served(ObjectKey::source(asset)), None);
        assert_eq!(served(ObjectKey::source_version(asset, 2)), None);
        assert_eq!(served(ObjectKey::hls_master(AssetId::new(), 1)), None);
        assert_eq!(
            manifest_paths(&pid),
            [
                "/play/abcdefghijklmnopqrstuvwx/master.m3u8",
                "/play/abcdefghijklmnopqrstuvwx/manifest.mpd"
            ]
        );
    }
}
