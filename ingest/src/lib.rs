//! The creators' ingest API (axum, under `/v1`, JSON): assets, simple
//! uploads and tus 1.0.0 resumable uploads (core protocol plus the
//! creation, creation-with-upload, termination, checksum and expiration
//! extensions).
//!
//! Uploads stream: bodies go to storage in bounded parts (never whole in
//! memory) and, for the probe, to a scratch file. tus state (offset, parts,
//! the lease of the PATCH in progress) lives in Postgres, so any replica can
//! serve any request and a restarted replica resumes at the stored offset.
//! When a source is complete it is probed with the FFmpeg libraries; media
//! that cannot be processed turns the asset `errored` with a message for the
//! creator, anything else moves it to `processing` and enqueues its
//! transcode job in the same transaction.

mod api;
pub mod auth;
mod body;
pub mod error;
pub mod openapi;
pub mod playback_tokens;
mod source;
mod tus;
pub mod watch;

pub use api::{router, spawn_cleanup, AppState};

use std::path::Path;

use cascade_platform::queue::{self, NewJob, Queue};
use cascade_platform::{assets, ObjectStore, StorageError};
use cascade_schemas::{job_kind, AssetId, AssetState, ObjectKey, PlaybackId};
use cascade_workers::transcode::TranscodeJob;

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

/// Creates an asset whose source is the file at `path`: the asset row is
/// written (`waiting`), the file streamed to storage, then in one transaction
/// the asset turns `processing` and its transcode job is enqueued.
pub async fn import_file(
    queue: &Queue,
    store: &ObjectStore,
    path: &Path,
    title: Option<&str>,
) -> Result<(AssetId, PlaybackId), IngestError> {
    let asset = AssetId::new();
    let playback = PlaybackId::new();
    {
        let client = queue.pool().get().await?;
        assets::insert(
            &client,
            asset,
            &playback,
            title,
            &serde_json::json!({}),
            "public",
        )
        .await?;
    }
    import_into(queue, store, path, asset).await?;
    Ok((asset, playback))
}

/// Stores the file at `path` as `asset`'s source and queues its transcode.
/// Idempotent: the source key and the job's idempotency key are fixed.
pub async fn import_into(
    queue: &Queue,
    store: &ObjectStore,
    path: &Path,
    asset: AssetId,
) -> Result<(), IngestError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|source| IngestError::Read {
            path: path.display().to_string(),
            source,
        })?;
    store.put(&ObjectKey::source(asset), &mut file).await?;
    let job = TranscodeJob {
        asset_id: asset,
        version: 1,
    };
    let payload = serde_json::to_value(&job).map_err(|e| {
        IngestError::Db(cascade_platform::db::DbError::Build(format!(
            "encoding the job: {e}"
        )))
    })?;
    let mut client = queue.pool().get().await?;
    let tx = client.transaction().await?;
    assets::set_state(&tx, asset, AssetState::Processing).await?;
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
