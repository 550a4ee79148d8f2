//! The archive tier's jobs (the state rules are
//! `cascade_platform::archive`'s; this is the I/O):
//!
//! - `archive_asset`: turns a ready asset `archived` (origins stop serving
//!   it at once) after checking its source is there to rebuild from;
//! - `drop_archived`: once no origin can still read the archived version,
//!   deletes its objects in every tier, purges the CDN of every URL they
//!   were served under, and moves the source to the archive's tier (copy,
//!   verify, switch, delete);
//! - `restore_asset`: a play of an archived asset asked for it: copies the
//!   source back to the hot tier as the next version's and queues that
//!   version's transcode, which publishes it (`restoring -> ready`).
//!
//! Each is idempotent: a job killed anywhere is finished by its retry, and
//! the source is always wholly in the tier its row names.

use cascade_platform::archive::{self, ArchiveState};
use cascade_platform::storage::tiers::{Tiers, HOT};
use cascade_platform::{assets, NewJob, ObjectStore};
use cascade_schemas::{job_kind, AssetId, AssetState, ObjectKey};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::cdn_purge::{self, CdnPurger, Purge};
use crate::runner::{JobContext, JobError, JobHandler};
use crate::tiering::{copy_object, retry, storage};
use crate::transcode::TranscodeJob;

pub use cascade_schemas::jobs::ArchiveJob;

/// Handler of the archive's three job kinds (see [`register`]).
#[derive(Clone)]
pub struct ArchiveHandler {
    pool: Pool,
    tiers: Tiers,
    cdn: CdnPurger,
    source_tier: String,
    transcode_max_attempts: i32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Archive,
    Drop,
    Restore,
}

impl ArchiveHandler {
    fn store(&self, tier: &str) -> Result<&ObjectStore, JobError> {
        self.tiers.store(tier).ok_or_else(|| {
            JobError::Permanent(format!("no storage tier named {tier:?} is configured"))
        })
    }

    async fn state(&self, asset: AssetId) -> Result<Option<ArchiveState>, JobError> {
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        archive::archive_state(&client, asset)
            .await
            .map_err(|e| retry("loading the asset", &e))
    }

    async fn archive(&self, job: ArchiveJob) -> Result<(), JobError> {
        let Some(asset) = self.state(job.asset_id).await? else {
            return Ok(()); // Deleted.
        };
        if asset.state != AssetState::Ready || asset.published_version != Some(job.version) {
            return Ok(()); // Archived already, replaced, or not ready.
        }
        // Only what can be rebuilt is archived.
        let source = ObjectKey::source_version(job.asset_id, asset.source_version);
        match self.store(&asset.source_tier)?.head(&source).await {
            Ok(meta) if meta.size > 0 => {}
            Ok(_) => return Err(JobError::Permanent("the source is empty".to_owned())),
            Err(e) if e.is_not_found() => {
                return Err(JobError::Permanent(
                    "no source to rebuild the asset from: not archived".to_owned(),
                ))
            }
            Err(e) => return Err(storage("checking the source", e)),
        }
        let archived = archive::archive(&self.pool, job.asset_id, job.version)
            .await
            .map_err(|e| retry("archiving", &e))?;
        if archived {
            tracing::info!(asset_id = %job.asset_id, version = job.version, "asset archived");
        }
        Ok(())
    }

    async fn drop_archived(&self, job: ArchiveJob, last_attempt: bool) -> Result<(), JobError> {
        let Some(asset) = self.state(job.asset_id).await? else {
            return Ok(()); // Deleted: its purge removes everything.
        };
        if !asset.version_is_archived(job.version) {
            return Ok(());
        }
        let prefix = ObjectKey::version_prefix(job.asset_id, job.version);
        let mut stored = Vec::new();
        for tier in self.tiers.all() {
            let listed = tier
                .store
                .list(&prefix)
                .await
                .map_err(|e| storage("listing the archived version", e))?;
            stored.extend(
                listed
                    .into_iter()
                    .map(|object| (&tier.store, ObjectKey::from_stored(object.key))),
            );
        }
        let paths = cdn_purge::paths(
            Purge::Everything,
            &asset
                .playback_id
                .parse()
                .map_err(|e| JobError::Permanent(format!("stored playback id: {e}")))?,
            job.asset_id,
            stored.iter().map(|(_, key)| key.clone()),
        );
        // Everything of the version but its source: a version after the
        // first keeps its source under the version's prefix (a restore
        // copies it there), and that is what the asset is rebuilt from.
        let source = ObjectKey::source_version(job.asset_id, asset.source_version);
        let mut removed = 0;
        for (store, key) in &stored {
            if *key != source {
                delete_copy(store, key).await?;
                removed += 1;
            }
        }
        self.move_source(&job, &asset).await?;
        // Once no origin can still serve the version (this job runs after
        // the settle time), nothing of it stays cached either.
        if self.cdn.is_configured() {
            match self.cdn.purge(&paths).await {
                Ok(_) => {}
                // The objects are gone already: a retry could no longer
                // name the URLs, so only the last attempt gives up.
                Err(error) if last_attempt => tracing::warn!(
                    asset_id = %job.asset_id, error = %error,
                    "CDN not purged of an archived version: copies stay until they expire"
                ),
                Err(error) => return Err(JobError::Retryable(error.to_string())),
            }
        }
        tracing::info!(
            asset_id = %job.asset_id, version = job.version, objects = removed,
            "archived version's renditions dropped"
        );
        Ok(())
    }

    /// Moves an archived asset's source to the archive's tier: copy,
    /// verify, switch (unless a restore began meanwhile), delete the copy
    /// that is no longer named.
    async fn move_source(&self, job: &ArchiveJob, asset: &ArchiveState) -> Result<(), JobError> {
        let to = self.source_tier.as_str();
        let key = ObjectKey::source_version(job.asset_id, job.version);
        if asset.source_version != job.version {
            return Ok(()); // Restored since: the restore removed it.
        }
        if asset.source_tier == to {
            // Switched before (a retry): the hot copy may remain.
            if to != HOT && asset.state == AssetState::Archived {
                delete_copy(self.tiers.hot(), &key).await?;
            }
            return Ok(());
        }
        if asset.state != AssetState::Archived || asset.source_tier != HOT {
            return Ok(());
        }
        let hot = self.tiers.hot();
        let target = self.store(to)?;
        let size = hot
            .head(&key)
            .await
            .map_err(|e| storage("reading the source", e))?
            .size;
        copy_object(hot, &key, size, target, key.clone()).await?;
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let moved = archive::move_source(&client, job.asset_id, job.version, HOT, to)
            .await
            .map_err(|e| retry("switching the source's tier", &e))?;
        if moved {
            delete_copy(hot, &key).await?;
            tracing::info!(asset_id = %job.asset_id, tier = to, bytes = size, "archived source moved");
        } else if let Some(now) = archive::archive_state(&client, job.asset_id)
            .await
            .map_err(|e| retry("loading the asset", &e))?
        {
            // A restore began from the hot copy: this copy is not named.
            if now.source_tier != to {
                delete_copy(target, &key).await?;
            }
        }
        Ok(())
    }

    async fn restore(&self, job: ArchiveJob) -> Result<(), JobError> {
        let Some(asset) = self.state(job.asset_id).await? else {
            return Ok(()); // Deleted.
        };
        let from_key = ObjectKey::source_version(job.asset_id, job.version);
        if asset.state == AssetState::Restoring && asset.source_version == job.version {
            let from = self.store(&asset.source_tier)?;
            let size = from
                .head(&from_key)
                .await
                .map_err(|e| storage("reading the archived source", e))?
                .size;
            let next = job.version + 1;
            copy_object(
                from,
                &from_key,
                size,
                self.tiers.hot(),
                ObjectKey::source_version(job.asset_id, next),
            )
            .await?;
            let transcode = TranscodeJob::version(job.asset_id, next);
            let payload = serde_json::to_value(&transcode)
                .map_err(|e| JobError::Permanent(format!("transcode payload: {e}")))?;
            let restarted = archive::restart_from_source(
                &self.pool,
                job.asset_id,
                job.version,
                &NewJob::new(job_kind::TRANSCODE, payload)
                    .idempotency_key(transcode.idempotency_key()),
                self.transcode_max_attempts,
            )
            .await
            .map_err(|e| retry("restarting from the source", &e))?;
            if restarted {
                tracing::info!(
                    asset_id = %job.asset_id, version = next, from = %asset.source_tier,
                    "restoring an archived asset: transcode queued"
                );
            }
        }
        match self.state(job.asset_id).await? {
            Some(now) if now.source_version > job.version => {}
            _ => return Ok(()), // Not restored from this source; or deleted.
        }
        // The source is the next version's now: the old copy goes,
        // wherever it was.
        for tier in self.tiers.all() {
            delete_copy(&tier.store, &from_key).await?;
        }
        Ok(())
    }

    /// A restore that failed for good before the asset was rebuilding from
    /// its source (the archived source gone or unreadable) turns the asset
    /// `errored` with a message for the creator, rather than leaving it
    /// `restoring` for ever (origins would answer 503 to every play).
    async fn restore_failed(
        &self,
        asset: AssetId,
        version: u32,
        reason: &str,
    ) -> Result<(), JobError> {
        match self.state(asset).await? {
            Some(now) if now.state == AssetState::Restoring && now.source_version == version => {}
            _ => return Ok(()), // Rebuilding from its source already, or gone.
        }
        tracing::warn!(asset_id = %asset, reason, "restore failed for good");
        assets::set_errored(
            &self.pool,
            asset,
            "restore_failed",
            "This video was archived and could not be restored: its archived source could not \
             be read. Upload it again to make it playable.",
        )
        .await
        .map_err(|e| retry("marking the failed restore", &e))
    }
}

/// Deletes `key` from `store` (a missing object is no error).
async fn delete_copy(store: &ObjectStore, key: &ObjectKey) -> Result<(), JobError> {
    store
        .delete(key)
        .await
        .map_err(|e| storage("deleting a copy no longer named", e))
}

impl JobHandler for ArchiveHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move {
            let job: ArchiveJob = serde_json::from_value(ctx.payload.clone())
                .map_err(|e| JobError::Permanent(format!("invalid payload: {e}")))?;
            match handler.kind {
                Kind::Archive => handler.archive(job).await,
                Kind::Drop => {
                    handler
                        .drop_archived(job, ctx.attempt >= ctx.max_attempts)
                        .await
                }
                Kind::Restore => {
                    let asset = job.asset_id;
                    let version = job.version;
                    let result = handler.restore(job).await;
                    let final_failure = match &result {
                        Err(JobError::Permanent(reason)) => Some(reason.clone()),
                        Err(error) if ctx.attempt >= ctx.max_attempts => Some(error.to_string()),
                        _ => None,
                    };
                    if let Some(reason) = final_failure {
                        handler.restore_failed(asset, version, &reason).await?;
                    }
                    result
                }
            }
        }
        .boxed()
    }
}

/// `registry` with the archive's handlers: objects in `tiers`, sources
/// archived to tier `source_tier`, the CDN purged through `cdn`, restores'
/// transcodes given `transcode_max_attempts`.
pub fn register(
    registry: crate::HandlerRegistry,
    pool: &Pool,
    tiers: &Tiers,
    cdn: &CdnPurger,
    source_tier: &str,
    transcode_max_attempts: i32,
) -> crate::HandlerRegistry {
    let handler = |kind| ArchiveHandler {
        pool: pool.clone(),
        tiers: tiers.clone(),
        cdn: cdn.clone(),
        source_tier: source_tier.to_owned(),
        transcode_max_attempts,
        kind,
    };
    registry
        .register(job_kind::ARCHIVE_ASSET, handler(Kind::Archive))
        .register(job_kind::DROP_ARCHIVED, handler(Kind::Drop))
        .register(job_kind::RESTORE_ASSET, handler(Kind::Restore))
}
