//! `purge_asset` jobs: what is left of a deleted asset goes once nothing
//! can write to it any more, and the CDN forgets it.
//!
//! Deleting an asset (`cascade_platform::assets::delete`) tombstones it,
//! cancels its jobs, tells the origins (they stop serving it at once) and
//! queues this job. Each attempt first purges the CDN of every URL the
//! asset's stored objects were served under (so it stops playing through
//! the CDN at once, [`crate::cdn_purge`]). A cancelled transcode stops at
//! its next heartbeat, but a segment upload already in flight can still
//! land; so the job then waits (retrying with the queue's backoff) until no
//! job of the asset can still write (finished, and its last lease run
//! out) and, with a CDN, until no origin can still serve it
//! (`assets::PLAYBACK_CHANGE_SETTLE` after the deletion); lists what is
//! stored in every storage tier, removes every object, multipart upload and
//! staged piece of the asset and its uploads, purges the CDN of what it
//! removed, and finally the rows. Idempotent: a purge that runs again
//! finds nothing stored.
//!
//! A CDN that cannot be purged holds the job back (its objects stay, so
//! the next attempt can still name them) until the last attempt, which
//! removes the objects whatever the CDN says and logs what it could not
//! purge: copies may then stay at the CDN until they expire.

use cascade_platform::assets;
use cascade_platform::storage::tiers::Tiers;
use cascade_schemas::{AssetId, ObjectKey};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::cdn_purge::{self, CdnPurger};
use crate::runner::{JobContext, JobError, JobHandler};

pub use cascade_schemas::jobs::PurgeJob;

/// Handler for [`cascade_schemas::job_kind::PURGE_ASSET`].
#[derive(Clone)]
pub struct PurgeHandler {
    pool: Pool,
    tiers: Tiers,
    cdn: CdnPurger,
}

fn retry(what: &str, error: &dyn std::fmt::Display) -> JobError {
    JobError::Retryable(format!("{what}: {error}"))
}

impl PurgeHandler {
    /// Purges through `pool`, every storage tier of `tiers` and the CDN
    /// nodes of `cdn`.
    pub fn new(pool: Pool, tiers: Tiers, cdn: CdnPurger) -> Self {
        Self { pool, tiers, cdn }
    }

    async fn purge(&self, job: PurgeJob, last_attempt: bool) -> Result<(), JobError> {
        let id = job.asset_id;
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let Some(deleted) = assets::deleted_asset(&client, id)
            .await
            .map_err(|e| retry("loading the asset", &e))?
        else {
            return Ok(()); // Never deleted: nothing to purge.
        };
        drop(client);
        // At once, before waiting for the asset's jobs: the CDN stops
        // playing it now, not when its last lease runs out.
        let stored = self.stored(id).await?;
        self.purge_cdn(&deleted, id, stored, last_attempt).await?;
        if self.cdn.is_configured() && deleted.deleted_for < assets::PLAYBACK_CHANGE_SETTLE {
            // The last purge comes once no origin can still serve it.
            return Err(JobError::Retryable(
                "waiting for every origin to let go of the deleted asset".to_owned(),
            ));
        }

        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        if assets::has_live_jobs(&client, id)
            .await
            .map_err(|e| retry("looking for the asset's jobs", &e))?
        {
            return Err(JobError::Retryable(
                "a job of the deleted asset may still write; waiting for it to stop".to_owned(),
            ));
        }
        drop(client);
        // Nothing writes any more: what is stored now is all there is.
        let stored = self.stored(id).await?;
        assets::remove_objects(self.tiers.hot(), id, &deleted.uploads)
            .await
            .map_err(|e| retry("removing the asset's objects", &e))?;
        for tier in &self.tiers.all()[1..] {
            tier.store
                .delete_prefix(&ObjectKey::asset_prefix(id))
                .await
                .map_err(|e| {
                    retry(
                        &format!("removing the asset's objects in tier {}", tier.name),
                        &e,
                    )
                })?;
        }
        // Copies of what a stopping job wrote after the first purge.
        self.purge_cdn(&deleted, id, stored, last_attempt).await?;
        let mut client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        assets::finish_purge(&mut client, id)
            .await
            .map_err(|e| retry("removing the asset's rows", &e))?;
        tracing::info!(asset_id = %id, "deleted asset purged");
        Ok(())
    }

    /// What the asset has stored, in every tier.
    async fn stored(&self, id: AssetId) -> Result<Vec<ObjectKey>, JobError> {
        self.tiers
            .keys_everywhere(&ObjectKey::asset_prefix(id))
            .await
            .map_err(|e| retry("listing the asset's objects", &e))
    }

    async fn purge_cdn(
        &self,
        deleted: &assets::DeletedAsset,
        id: AssetId,
        stored: Vec<ObjectKey>,
        last_attempt: bool,
    ) -> Result<(), JobError> {
        if !self.cdn.is_configured() {
            return Ok(());
        }
        let paths = cdn_purge::paths(
            cdn_purge::Purge::Everything,
            &deleted.playback_id,
            id,
            stored,
        );
        match self.cdn.purge(&paths).await {
            Ok(purged) => {
                tracing::info!(
                    asset_id = %id,
                    urls = paths.len(),
                    nodes = purged.nodes,
                    removed = purged.removed,
                    not_cached = purged.not_cached,
                    "CDN purged of a deleted asset"
                );
                Ok(())
            }
            Err(error) if last_attempt => {
                tracing::error!(asset_id = %id, error = %error,
                    "cannot purge a deleted asset from the CDN; its copies stay there until they expire");
                Ok(())
            }
            Err(error) => Err(retry("purging the CDN", &error)),
        }
    }
}

impl JobHandler for PurgeHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move {
            let job: PurgeJob = serde_json::from_value(ctx.payload.clone())
                .map_err(|e| JobError::Permanent(format!("invalid purge payload: {e}")))?;
            handler.purge(job, ctx.attempt >= ctx.max_attempts).await
        }
        .boxed()
    }
}
