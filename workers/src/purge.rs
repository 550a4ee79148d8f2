//! `purge_asset` jobs: what is left of a deleted asset goes once nothing
//! can write to it any more.
//!
//! Deleting an asset (`cascade_platform::assets::delete`) tombstones it,
//! cancels its jobs and queues this job. A cancelled transcode stops at its
//! next heartbeat, but a segment upload already in flight can still land; so
//! the purge waits (retrying with the queue's backoff) until no job of the
//! asset can still write (finished, and its last lease run out), then
//! removes every object, multipart upload and staged piece of the asset and
//! its uploads, and finally the row. Idempotent: a purge that runs twice
//! finds the row gone and stops.

use cascade_platform::{assets, ObjectStore};
use cascade_schemas::AssetId;
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use crate::runner::{JobContext, JobError, JobHandler};

/// Payload of a `purge_asset` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeJob {
    /// The deleted asset.
    pub asset_id: AssetId,
}

/// Handler for [`cascade_schemas::job_kind::PURGE_ASSET`].
#[derive(Clone)]
pub struct PurgeHandler {
    pool: Pool,
    store: ObjectStore,
}

impl PurgeHandler {
    /// Purges through `pool` and `store`.
    pub fn new(pool: Pool, store: ObjectStore) -> Self {
        Self { pool, store }
    }

    async fn purge(&self, job: PurgeJob) -> Result<(), JobError> {
        let id = job.asset_id;
        let retry = |what: &str, error: &dyn std::fmt::Display| {
            JobError::Retryable(format!("{what}: {error}"))
        };
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let Some(uploads) = assets::deleted_asset_uploads(&client, id)
            .await
            .map_err(|e| retry("loading the asset", &e))?
        else {
            return Ok(()); // Never deleted: nothing to purge.
        };
        if assets::has_live_jobs(&client, id)
            .await
            .map_err(|e| retry("looking for the asset's jobs", &e))?
        {
            return Err(JobError::Retryable(
                "a job of the deleted asset may still write; waiting for it to stop".to_owned(),
            ));
        }
        drop(client);
        assets::remove_objects(&self.store, id, &uploads)
            .await
            .map_err(|e| retry("removing the asset's objects", &e))?;
        let mut client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        assets::finish_purge(&mut client, id)
            .await
            .map_err(|e| retry("removing the asset's rows", &e))?;
        tracing::info!(asset_id = %id, "deleted asset purged");
        Ok(())
    }
}

impl JobHandler for PurgeHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move {
            let job: PurgeJob = serde_json::from_value(ctx.payload.clone())
                .map_err(|e| JobError::Permanent(format!("invalid purge payload: {e}")))?;
            handler.purge(job).await
        }
        .boxed()
    }
}
