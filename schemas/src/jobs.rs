//! Job payloads: what a producer puts in a queue row and a handler reads
//! back (JSON). They are vocabulary shared by the roles that enqueue work
//! (ingest, workers, the CLI) and the handlers in `workers`, so none of the
//! producers depends on a handler to name a job. The kinds are
//! [`crate::job_kind`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AssetId, LiveStreamId, PlaybackId, RenditionName};

/// Payload of a `transcode` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscodeJob {
    /// The asset.
    pub asset_id: AssetId,
    /// Output version: objects go under `v{version}/`.
    pub version: u32,
    /// A chunk of a chunked transcode (`crate::chunks`), `1..`; `None`:
    /// the version's own job (the whole source, or chunk 0 and the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// A corrective take: the publish gate refused the version before
    /// (`failed_version`) for a reason it could correct, and this version
    /// is encoded again from the same source with these settings. `None`:
    /// the first take (at most one corrective take follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrections: Option<Corrections>,
}

/// Settings a corrective take changes, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Corrections {
    /// The version whose outputs failed the publish gate.
    pub failed_version: u32,
    /// Per video rung: the share of its ladder bit rate its encoder is
    /// asked for (target, VBV max rate and buffer alike), below 1 for a
    /// rung that spent more than its cap. The ladder's promise (its cap,
    /// what the gate holds the rung to) does not change.
    pub rate_scale: BTreeMap<String, f64>,
    /// The checks that failed on the first take, as the gate named them
    /// ("bitrate.average [720p]").
    pub failed_checks: Vec<String>,
}

impl TranscodeJob {
    /// The job of a whole version (which may split itself into chunks).
    pub fn version(asset_id: AssetId, version: u32) -> Self {
        Self {
            asset_id,
            version,
            chunk: None,
            corrections: None,
        }
    }

    /// Chunk `index` of this version's job (its settings with it).
    pub fn chunk(&self, index: u32) -> Self {
        Self {
            chunk: Some(index),
            ..self.clone()
        }
    }

    /// The job's idempotency key: one transcode per asset version, and
    /// one per chunk of it.
    pub fn idempotency_key(&self) -> String {
        match self.chunk {
            None => format!("{}/v{}", self.asset_id, self.version),
            Some(chunk) => format!("{}/v{}/chunk{chunk}", self.asset_id, self.version),
        }
    }
}

/// Payload of a `purge_asset` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeJob {
    /// The deleted asset.
    pub asset_id: AssetId,
}

/// Payload of `archive_asset`, `drop_archived` and `restore_asset` jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveJob {
    /// The asset.
    pub asset_id: AssetId,
    /// The version archived (for a restore: the version whose source it
    /// is restored from).
    pub version: u32,
}

/// Payload of a `move_rendition` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveJob {
    /// The asset.
    pub asset_id: AssetId,
    /// Its version.
    pub version: u32,
    /// The rendition to move.
    pub rendition: RenditionName,
    /// The tier it goes to.
    pub to: String,
}

/// Payload of a `drop_tier_copy` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropJob {
    /// The asset.
    pub asset_id: AssetId,
    /// Its version.
    pub version: u32,
    /// The rendition that left `tier`.
    pub rendition: RenditionName,
    /// The tier whose copy goes.
    pub tier: String,
}

/// Payload of a `finish_broadcast` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishJob {
    /// The stream.
    pub live_stream_id: LiveStreamId,
    /// The broadcast that ended.
    pub broadcast_id: uuid::Uuid,
    /// Record it as a VOD asset.
    pub record: bool,
}

/// Payload of a `purge_cdn` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeCdnJob {
    /// The republished asset.
    pub asset_id: AssetId,
    /// Its playback id.
    pub playback_id: PlaybackId,
    /// The version that was published before (or was archived).
    pub replaced_version: u32,
    /// Every URL of that version, versioned ones too (it was archived:
    /// its objects go), rather than only what changed meaning.
    #[serde(default)]
    pub everything: bool,
}
