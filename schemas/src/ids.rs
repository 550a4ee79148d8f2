//! Typed identifiers. Each is parsed from client text exactly once, so code
//! past the parse never handles raw strings that could carry `/` or `..`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An identifier that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: expected {expected}")]
pub struct InvalidId {
    /// Which identifier was being parsed.
    pub kind: &'static str,
    /// What a valid one looks like.
    pub expected: &'static str,
}

/// An asset: one uploaded or live video and everything derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AssetId(uuid::Uuid);

impl AssetId {
    /// A fresh random asset id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The UUID stored in Postgres.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for AssetId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for AssetId {
    fn from(value: uuid::Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for AssetId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
            kind: "asset id",
            expected: "a UUID",
        })
    }
}

/// An environment: the tenant that API keys, assets, uploads and webhook
/// endpoints belong to. Another environment's ids are never visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvironmentId(uuid::Uuid);

impl EnvironmentId {
    /// A fresh random environment id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The UUID stored in Postgres.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for EnvironmentId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for EnvironmentId {
    fn from(value: uuid::Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for EnvironmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

/// A direct upload: a one-time upload URL for a browser, filling one asset.
/// The tus upload made through it has the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DirectUploadId(uuid::Uuid);

impl DirectUploadId {
    /// A fresh random direct upload id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The UUID stored in Postgres.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for DirectUploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for DirectUploadId {
    fn from(value: uuid::Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for DirectUploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for DirectUploadId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
            kind: "direct upload id",
            expected: "a UUID",
        })
    }
}

/// A live stream: a stream key publishers send to, a playback id players
/// watch, and the broadcasts recorded from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LiveStreamId(uuid::Uuid);

impl LiveStreamId {
    /// A fresh random live stream id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The UUID stored in Postgres.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for LiveStreamId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for LiveStreamId {
    fn from(value: uuid::Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for LiveStreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for LiveStreamId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
            kind: "live stream id",
            expected: "a UUID",
        })
    }
}

/// The public handle players use. Distinct from [`AssetId`] so playback can
/// be revoked or re-keyed without touching the asset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlaybackId(String);

impl PlaybackId {
    /// Length of a playback id in characters.
    pub const LEN: usize = 24;
    const ALPHABET: &'static [u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

    /// A fresh random playback id (lowercase alphanumerics, ~124 bits).
    pub fn new() -> Self {
        // Two v4 UUIDs give 244 random bits; map bytes onto the alphabet.
        let bytes = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        let id = bytes
            .iter()
            .take(Self::LEN)
            .map(|b| Self::ALPHABET[usize::from(*b) % Self::ALPHABET.len()] as char)
            .collect();
        Self(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PlaybackId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PlaybackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PlaybackId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == Self::LEN && s.bytes().all(|b| Self::ALPHABET.contains(&b));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId {
                kind: "playback id",
                expected: "24 lowercase letters or digits",
            })
        }
    }
}

impl TryFrom<String> for PlaybackId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PlaybackId> for String {
    fn from(value: PlaybackId) -> Self {
        value.0
    }
}

/// A row in the jobs table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Self(id)),
            _ => Err(InvalidId {
                kind: "job id",
                expected: "a positive integer",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_ids_round_trip_and_reject_paths() {
        let id = PlaybackId::new();
        assert_eq!(id.as_str().len(), PlaybackId::LEN);
        assert_eq!(id.as_str().parse::<PlaybackId>(), Ok(id.clone()));
        assert!("../../etc/passwd".parse::<PlaybackId>().is_err());
        assert!("ABCDEFGHIJKLMNOPQRSTUVWX".parse::<PlaybackId>().is_err());
        assert_ne!(PlaybackId::new(), PlaybackId::new());
    }

    #[test]
    fn asset_and_job_ids_parse_strictly() {
        let a = AssetId::new();
        assert_eq!(a.to_string().parse::<AssetId>(), Ok(a));
        assert!("not-a-uuid".parse::<AssetId>().is_err());
        let d = DirectUploadId::new();
        assert_eq!(d.to_string().parse::<DirectUploadId>(), Ok(d));
        assert!("../x".parse::<DirectUploadId>().is_err());
        assert_eq!("42".parse::<JobId>(), Ok(JobId(42)));
        assert!("-1".parse::<JobId>().is_err());
        assert!("1e3".parse::<JobId>().is_err());
    }
}
