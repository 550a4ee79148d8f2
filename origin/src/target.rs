//! Request targets: which object of which presentation a `/play/` URL
//! names (`Target`, pins `v{n}` and `s{n}`), and what a handler reads from
//! the request (`Ask`).

use super::*;

/// One playback object of a published version.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Master,
    Mpd,
    MediaPlaylist(RenditionName),
    Init(RenditionName),
    Segment(RenditionName, u64),
    /// A partial segment of a low-latency live stream (`{msn}.{part}.m4s`).
    Part(RenditionName, u64, u32),
}

impl Target {
    pub(crate) fn top_level(file: &str) -> Option<Self> {
        match file {
            keys::HLS_MASTER => Some(Self::Master),
            keys::DASH_MANIFEST => Some(Self::Mpd),
            _ => None,
        }
    }

    pub(crate) fn in_rendition(rendition: &str, file: &str) -> Option<Self> {
        let rendition = RenditionName::new(rendition).ok()?;
        match file {
            keys::MEDIA_PLAYLIST => Some(Self::MediaPlaylist(rendition)),
            keys::INIT_SEGMENT => Some(Self::Init(rendition)),
            _ => {
                let canonical = canonical_number;
                let name = file.strip_suffix(keys::SEGMENT_EXTENSION)?;
                match name.split_once('.') {
                    None => Some(Self::Segment(rendition, canonical(name)?)),
                    Some((msn, part)) => Some(Self::Part(
                        rendition,
                        canonical(msn)?,
                        u32::try_from(canonical(part)?).ok()?,
                    )),
                }
            }
        }
    }

    /// The object of an asset's version (parts are live-only: none).
    pub(crate) fn key(&self, asset: AssetId, version: u32) -> Option<ObjectKey> {
        Some(match self {
            Self::Master => ObjectKey::hls_master(asset, version),
            Self::Mpd => ObjectKey::dash_manifest(asset, version),
            Self::MediaPlaylist(r) => ObjectKey::media_playlist(asset, version, r),
            Self::Init(r) => ObjectKey::init_segment(asset, version, r),
            Self::Segment(r, seq) => ObjectKey::media_segment(asset, version, r, *seq),
            Self::Part(..) => return None,
        })
    }

    /// The rendition whose media this is, if any.
    pub(crate) fn rendition(&self) -> Option<&RenditionName> {
        match self {
            Self::MediaPlaylist(r) | Self::Init(r) | Self::Segment(r, _) | Self::Part(r, ..) => {
                Some(r)
            }
            Self::Master | Self::Mpd => None,
        }
    }

    pub(crate) fn class(&self) -> ObjectClass {
        match self {
            Self::Master | Self::MediaPlaylist(_) => ObjectClass::HlsPlaylist,
            Self::Mpd => ObjectClass::DashManifest,
            Self::Init(_) => ObjectClass::InitSegment,
            Self::Segment(..) | Self::Part(..) => ObjectClass::MediaSegment,
        }
    }
}

/// What the handlers read from a request.
pub(crate) struct Ask {
    pub(crate) head: bool,
    pub(crate) headers: HeaderMap,
    pub(crate) token: Option<String>,
    /// The raw query (LL-HLS delivery directives ride in it).
    pub(crate) query: Option<String>,
}

impl Ask {
    pub(crate) fn new(method: &Method, headers: HeaderMap, uri: &Uri) -> Self {
        let token = uri.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("token=").map(str::to_owned))
        });
        Self {
            head: method == Method::HEAD,
            headers,
            token,
            query: uri.query().map(str::to_owned),
        }
    }

    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Which media a four-part URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// `v{n}`: an asset's output version.
    Version(u32),
    /// `s{n}`: a live stream's publish session.
    Session(u32),
}

/// A number in its one canonical spelling ("007" is not "7"), so no object
/// has two URLs (no cache aliases).
fn canonical_number(digits: &str) -> Option<u64> {
    let n: u64 = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()?;
    (n.to_string() == digits).then_some(n)
}

/// `v{n}` or `s{n}` (canonical digits, n >= 1).
pub(crate) fn parse_pin(part: &str) -> Option<Pin> {
    let number = |digits: &str| -> Option<u32> {
        u32::try_from(canonical_number(digits)?)
            .ok()
            .filter(|n| *n >= 1)
    };
    match part.split_at_checked(1)? {
        ("v", digits) => number(digits).map(Pin::Version),
        ("s", digits) => number(digits).map(Pin::Session),
        _ => None,
    }
}

/// `v{n}` as a version number.
#[cfg(test)]
pub(crate) fn parse_version(part: &str) -> Option<u32> {
    match parse_pin(part)? {
        Pin::Version(version) => Some(version),
        Pin::Session(_) => None,
    }
}
