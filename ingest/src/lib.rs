//! The creators' ingest API (axum, under `/v1`, JSON): assets, simple
//! uploads and tus 1.0.0 resumable uploads (core protocol plus the
//! creation, creation-with-upload, termination, checksum and expiration
//! extensions), and direct uploads: one-time upload URLs a browser uses
//! without an API key (`direct`); live streams (`/v1/live_streams`) and the
//! RTMP server publishers go live on ([`rtmp`]); the relay origins reach
//! the parts of low-latency streams through ([`relay`], LL-HLS as in
//! draft-pantos-hls-rfc8216bis).
//!
//! Uploads stream: bodies go to storage in bounded parts (never whole in
//! memory) and, for the probe, to a scratch file. tus state (offset, parts,
//! the lease of the PATCH in progress) lives in Postgres, so any replica can
//! serve any request and a restarted replica resumes at the stored offset.
//! When a source is complete it is probed with the FFmpeg libraries (in a
//! child process under `cascade serve`, so a hostile file cannot take the
//! API down: [`AppState::with_prober`]); media that cannot be processed turns the asset `errored` with a message for the
//! creator, anything else moves it to `processing` and enqueues its
//! transcode job in the same transaction.

#[cfg(test)]
mod api_tests;
mod asset_api;
pub mod auth;
mod body;
mod cleanup;
mod direct;
pub mod error;
pub mod limits;
mod live_api;
pub mod metrics;
pub mod openapi;
pub mod playback_tokens;
pub mod relay;
mod request;
mod routes;
pub mod rtmp;
pub mod rtmp_guard;
mod simple_upload;
mod source;
mod state;
#[cfg(test)]
mod test_router;
mod tus;
pub mod watch;
mod webhook_endpoints;
pub mod work;

pub use cleanup::spawn_cleanup;
pub use routes::router;
pub use state::AppState;

use std::path::Path;

use cascade_platform::assets::{self, NewAsset, SourceClaim};
use cascade_platform::queue::{self, NewJob, Queue};
use cascade_platform::{environments, ObjectStore, StorageError};
use cascade_schemas::jobs::TranscodeJob;
use cascade_schemas::{job_kind, AssetId, EnvironmentId, ObjectKey, PlaybackId, PlaybackPolicy};

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The local file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Storing the source failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] cascade_platform::db::DbError),
    /// Enqueueing failed.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    /// The asset no longer waits for this import's source (deleted, or
    /// handed on by an earlier run).
    #[error("asset {0} no longer waits for this source")]
    NotWaiting(AssetId),
}

impl From<deadpool_postgres::tokio_postgres::Error> for IngestError {
    fn from(e: deadpool_postgres::tokio_postgres::Error) -> Self {
        Self::Db(cascade_platform::db::DbError::Query(e))
    }
}

impl From<deadpool_postgres::PoolError> for IngestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(cascade_platform::db::DbError::Unavailable(e))
    }
}

/// How long an import (the CLI, the watch folder) holds an asset's source
/// while it copies the file into storage.
pub const IMPORT_CLAIM_HOLD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// [`import_file_in`] the environment named `default`, its duration
/// unknown (so the workers transcode it as one job).
pub async fn import_file(
    queue: &Queue,
    store: &ObjectStore,
    path: &Path,
    title: Option<&str>,
) -> Result<(AssetId, PlaybackId), IngestError> {
    let environment = environments::ensure(&queue.pool().get().await?, "default").await?;
    import_file_in(queue, store, environment, path, title, None).await
}

/// Creates an asset of `environment` whose source is the file at `path`:
/// the asset row is written (`waiting`, its source claimed by the import),
/// the file streamed to storage, then in one transaction the asset turns
/// `processing` and its transcode job is enqueued. `duration`, from a
/// probe, lets the workers split a long source into chunks.
pub async fn import_file_in(
    queue: &Queue,
    store: &ObjectStore,
    environment: EnvironmentId,
    path: &Path,
    title: Option<&str>,
    duration: Option<f64>,
) -> Result<(AssetId, PlaybackId), IngestError> {
    let asset = AssetId::new();
    let playback = {
        let client = queue.pool().get().await?;
        assets::insert(
            &client,
            asset,
            &NewAsset {
                environment,
                title,
                metadata: &serde_json::json!({}),
                policy: PlaybackPolicy::Public,
                source_claim: Some(import_claim(asset)),
            },
        )
        .await?
    };
    import_into(queue, store, path, asset, duration).await?;
    Ok((asset, playback))
}

/// The source claim of an import into `asset`: the asset's own id, so an
/// import resumed after a restart (the watch folder) still holds it.
pub fn import_claim(asset: AssetId) -> SourceClaim {
    SourceClaim {
        id: asset.as_uuid(),
        hold: IMPORT_CLAIM_HOLD,
    }
}

/// Stores the file at `path` as `asset`'s source and queues its transcode,
/// holding the source claim [`import_claim`], with the `duration` a probe
/// found. Idempotent: the source key and the job's idempotency key are
/// fixed.
pub async fn import_into(
    queue: &Queue,
    store: &ObjectStore,
    path: &Path,
    asset: AssetId,
    duration: Option<f64>,
) -> Result<(), IngestError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|source| IngestError::Read {
            path: path.display().to_string(),
            source,
        })?;
    store.put(&ObjectKey::source(asset), &mut file).await?;
    let job = TranscodeJob::version(asset, 1);
    let payload = serde_json::to_value(&job).map_err(|e| {
        IngestError::Db(cascade_platform::db::DbError::Build(format!(
            "encoding the job: {e}"
        )))
    })?;
    let mut client = queue.pool().get().await?;
    let tx = client.transaction().await?;
    if !assets::start_processing(&tx, asset, import_claim(asset).id, duration).await? {
        // Deleted meanwhile (or already moved on by an earlier run).
        return Err(IngestError::NotWaiting(asset));
    }
    queue::enqueue(
        &tx,
        &NewJob::new(job_kind::TRANSCODE, payload).idempotency_key(job.idempotency_key()),
        queue.config().max_attempts,
    )
    .await?;
    tx.commit().await?;
    queue.wake(job_kind::TRANSCODE);
    Ok(())
}
