//! Cascade's shared vocabulary, the bottom layer every other crate points at.
//!
//! - [`ids`]: typed identifiers (asset, playback, job, direct upload, live stream) parsed from text once;
//! - [`state`]: asset, job, upload, direct upload and live stream states and their allowed
//!   spellings in SQL and JSON;
//! - [`keys`]: the one object-key layout of the object store (no other crate
//!   formats keys) and [`mime`]: the content type of every object class;
//! - [`playback`]: the playback URL paths the origin serves objects under
//!   (and a CDN caches and purges them by);
//! - [`jobs`]: the job payloads producers enqueue and handlers read;
//! - [`ladder`]: the bitrate ladder's rungs and the plan for a source;
//! - [`migrations`]: the SQL migrations, embedded in order.
//!
//! No async runtime and no I/O: this crate only names things.

pub mod chunks;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod ladder;
pub mod migrations;
pub mod mime;
pub mod playback;
pub mod state;

pub use ids::{AssetId, DirectUploadId, EnvironmentId, JobId, LiveStreamId, PlaybackId};
pub use keys::{ObjectClass, ObjectKey, RenditionName};
pub use state::{
    AssetState, ConcatKind, DirectUploadProtocol, DirectUploadState, JobState, LiveStreamState,
    PlaybackPolicy, UploadState,
};

/// Job kinds known to the system. The queue itself is generic over kind
/// strings; these are the ones Cascade's roles enqueue and handle.
pub mod job_kind {
    /// Transcode an asset's source into the ladder and publish it.
    pub const TRANSCODE: &str = "transcode";
    /// Remove a deleted asset's objects and rows once its jobs have stopped.
    pub const PURGE_ASSET: &str = "purge_asset";
    /// An ended live broadcast: record its segments as a VOD asset, or
    /// remove them when the stream does not record.
    pub const FINISH_BROADCAST: &str = "finish_broadcast";
    /// Purge a CDN's copies of a republished asset's top-level manifests
    /// and of the media URLs that named the version it replaced.
    pub const PURGE_CDN: &str = "purge_cdn";
    /// Move one rendition's media to another storage tier (copy, verify,
    /// switch; the old copy is dropped later by `drop_tier_copy`).
    pub const MOVE_RENDITION: &str = "move_rendition";
    /// Delete a rendition's copy in a tier it has left, once no origin can
    /// still read it there.
    pub const DROP_TIER_COPY: &str = "drop_tier_copy";
    /// Place every published rendition by the tiering policy and queue
    /// the moves (one per `storage.policy.interval`).
    pub const TIER_POLICY: &str = "tier_policy";
    /// Archive an idle asset: it turns `archived` and its renditions'
    /// objects are dropped later by `drop_archived` (the source is kept).
    pub const ARCHIVE_ASSET: &str = "archive_asset";
    /// Delete an archived version's objects in every tier (once no origin
    /// can still read them), move its source to the archive's tier, purge
    /// the CDN.
    pub const DROP_ARCHIVED: &str = "drop_archived";
    /// Rebuild an archived asset that was played: bring its source back to
    /// the hot tier as the next version's and queue its transcode.
    pub const RESTORE_ASSET: &str = "restore_asset";
    /// Deliver one webhook event.
    pub const WEBHOOK: &str = "webhook";
    /// Does nothing (optionally sleeps): queue diagnostics and `cascade bench queue`.
    pub const NOOP: &str = "noop";

    /// Every kind above (metrics keep a series for each from the start).
    pub const ALL: [&str; 12] = [
        TRANSCODE,
        PURGE_ASSET,
        PURGE_CDN,
        MOVE_RENDITION,
        DROP_TIER_COPY,
        TIER_POLICY,
        ARCHIVE_ASSET,
        DROP_ARCHIVED,
        RESTORE_ASSET,
        FINISH_BROADCAST,
        WEBHOOK,
        NOOP,
    ];
}
