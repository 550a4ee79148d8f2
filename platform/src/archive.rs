//! The archive tier's state rules: an asset idle long enough keeps only its
//! source, and is rebuilt from it when it is played again.
//!
//! `ready -> archived -> restoring -> ready`:
//! 1. [`archive`] turns a ready asset `archived` (origins stop serving it at
//!    once: `assets::PLAYBACK_CHANGED_CHANNEL`), queues a CDN purge, and a
//!    `drop_archived` job for once no origin can still read the version
//!    ([`crate::assets::PLAYBACK_CHANGE_SETTLE`]). That job deletes the
//!    version's objects in every tier and moves the source to the archive's
//!    tier ([`move_source`]).
//! 2. A play of an archived asset (the origin answers 503 with
//!    `Retry-After`) calls [`request_restore`]: `archived -> restoring`,
//!    and a `restore_asset` job.
//! 3. That job copies the source back to the hot tier as the next
//!    version's source and queues its transcode ([`restart_from_source`]);
//!    the transcode publishes the next version (`restoring -> ready`, a
//!    webhook `asset.restored`). The archived version is never written
//!    again, so URLs a CDN or browser holds as immutable keep naming the
//!    same bytes.
//!
//! A live recording has no source to rebuild from, so it is never archived.

use chrono::Utc;
use deadpool_postgres::{GenericClient, Pool};

use cascade_schemas::{job_kind, AssetId, AssetState};

use crate::assets::{announce_playback_change, emit, PLAYBACK_CHANGE_SETTLE};
use crate::db::DbError;
use crate::queue::{self, NewJob, QueueError};

/// Attempts an archive, drop or restore job gets (backing off) while a
/// tier is unreachable.
const ARCHIVE_MAX_ATTEMPTS: i32 = 10;

/// `ready -> archived` for `version` (the published one), in one
/// transaction with the CDN purge, the `drop_archived` job (after the
/// settle time) and the `asset.archived` event. `false` when the asset is
/// not ready with that version published, or is a live recording.
pub async fn archive(pool: &Pool, asset: AssetId, version: u32) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE assets SET state = 'archived', archived_at = now(), updated_at = now()
             WHERE id = $1 AND state = 'ready' AND published_version = $2
               AND deleted_at IS NULL AND recorded_from IS NULL
             RETURNING playback_id",
            &[&asset.as_uuid(), &version_param(version)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let playback_id: String = row.get(0);
    announce_playback_change(&tx, &playback_id).await?;
    let purge = NewJob::new(
        job_kind::PURGE_CDN,
        serde_json::json!({
            "asset_id": asset, "playback_id": playback_id, "replaced_version": version,
            "everything": true,
        }),
    )
    .idempotency_key(format!("{asset}/v{version}/archived"))
    .max_attempts(ARCHIVE_MAX_ATTEMPTS);
    let mut drop = version_job(job_kind::DROP_ARCHIVED, asset, version);
    drop.run_at =
        Some(Utc::now() + chrono::Duration::from_std(PLAYBACK_CHANGE_SETTLE).unwrap_or_default());
    for job in [&purge, &drop] {
        queue::enqueue(&tx, job, ARCHIVE_MAX_ATTEMPTS)
            .await
            .map_err(QueueError::into_db)?;
    }
    emit(&tx, "asset.archived", asset).await?;
    tx.commit().await?;
    Ok(true)
}

/// Queues the archiving of `asset`'s published version (`archive_asset`
/// job; once per version). `false` when it is not ready, has no published
/// version, or is a live recording.
pub async fn request_archive(client: &impl GenericClient, asset: AssetId) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "SELECT published_version FROM assets
             WHERE id = $1 AND state = 'ready' AND deleted_at IS NULL AND recorded_from IS NULL
               AND published_version IS NOT NULL",
            &[&asset.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let version = u32::try_from(row.get::<_, i32>(0)).unwrap_or_default();
    queue::enqueue_and_wake(
        client,
        &version_job(job_kind::ARCHIVE_ASSET, asset, version),
        ARCHIVE_MAX_ATTEMPTS,
    )
    .await?;
    Ok(true)
}

/// Ready assets idle for at least `after` (nothing of them viewed since,
/// nor published since), none of whose renditions was pinned by hand, that
/// have a source to rebuild from and no archive queued: up to `limit`, as
/// (asset, published version), longest idle first.
pub async fn archive_candidates(
    client: &impl GenericClient,
    after: std::time::Duration,
    limit: i64,
) -> Result<Vec<(AssetId, u32)>, DbError> {
    let rows = client
        .query(
            "SELECT a.id, a.published_version FROM assets a
             CROSS JOIN LATERAL (
                 SELECT max(r.published_at) AS published_at, bool_or(r.tier_pinned) AS pinned
                 FROM renditions r WHERE r.asset_id = a.id AND r.version = a.published_version
             ) r
             WHERE a.state = 'ready' AND a.deleted_at IS NULL AND a.recorded_from IS NULL
               AND a.published_version IS NOT NULL AND NOT coalesce(r.pinned, false)
               AND greatest(a.last_viewed_at, r.published_at) < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM jobs j
                    WHERE j.payload ? 'asset_id' AND j.payload->>'asset_id' = a.id::text
                      AND j.kind = 'archive_asset' AND j.state IN ('queued', 'running'))
             ORDER BY greatest(a.last_viewed_at, r.published_at)
             LIMIT $2",
            &[&after.as_secs_f64(), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                AssetId::from(r.get::<_, uuid::Uuid>(0)),
                u32::try_from(r.get::<_, i32>(1)).unwrap_or_default(),
            )
        })
        .collect())
}

/// An asset as the archive's jobs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveState {
    /// Its state.
    pub state: AssetState,
    /// Its playback id.
    pub playback_id: String,
    /// The published version.
    pub published_version: Option<u32>,
    /// The version the current source makes.
    pub source_version: u32,
    /// The tier holding the current source.
    pub source_tier: String,
}

impl ArchiveState {
    /// `version`'s objects are no longer served and never will be again:
    /// it was archived (whether or not restored since, which makes the
    /// next version).
    pub fn version_is_archived(&self, version: u32) -> bool {
        match self.state {
            AssetState::Archived | AssetState::Restoring => self.published_version == Some(version),
            _ => self.published_version.is_some_and(|p| p > version),
        }
    }
}

/// `asset`'s state for the archive's jobs; `None` when deleted.
pub async fn archive_state(
    client: &impl GenericClient,
    asset: AssetId,
) -> Result<Option<ArchiveState>, DbError> {
    let row = client
        .query_opt(
            "SELECT state, playback_id, published_version, source_version, source_tier
             FROM assets WHERE id = $1 AND deleted_at IS NULL",
            &[&asset.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state: String = row.get(0);
    Ok(Some(ArchiveState {
        state: state
            .parse()
            .map_err(|e| DbError::Build(format!("stored asset state: {e}")))?,
        playback_id: row.get(1),
        published_version: row
            .get::<_, Option<i32>>(2)
            .and_then(|v| u32::try_from(v).ok()),
        source_version: u32::try_from(row.get::<_, i32>(3)).unwrap_or_default(),
        source_tier: row.get(4),
    }))
}

/// Records that an archived asset's source (of `version`) was copied from
/// tier `from` to `to`: `true` when it now is in `to` (the copy in `from`
/// may go); `false` when the asset is no longer archived with that source
/// (a restore began: the copy in `to` may go instead).
pub async fn move_source(
    client: &impl GenericClient,
    asset: AssetId,
    version: u32,
    from: &str,
    to: &str,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE assets SET source_tier = $4
             WHERE id = $1 AND deleted_at IS NULL AND state = 'archived'
               AND source_version = $2 AND source_tier = $3",
            &[&asset.as_uuid(), &version_param(version), &from, &to],
        )
        .await?;
    Ok(n == 1)
}

/// `archived -> restoring`: queues the `restore_asset` job and wakes the
/// workers, in one transaction. `false` when the asset is not archived
/// (already restoring, or deleted).
pub async fn request_restore(pool: &Pool, asset: AssetId) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE assets SET state = 'restoring', progress = 0, updated_at = now()
             WHERE id = $1 AND state = 'archived' AND deleted_at IS NULL
             RETURNING playback_id, source_version",
            &[&asset.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let playback_id: String = row.get(0);
    let version = u32::try_from(row.get::<_, i32>(1)).unwrap_or_default();
    announce_playback_change(&tx, &playback_id).await?;
    queue::enqueue_and_wake(
        &tx,
        &version_job(job_kind::RESTORE_ASSET, asset, version),
        ARCHIVE_MAX_ATTEMPTS,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A restoring asset's source (of `version`) was copied back to the hot
/// tier as `version + 1`'s: records that, and queues `transcode` (the
/// next version's) in the same transaction. `false` when the asset is no
/// longer restoring from that source (already done, or deleted).
pub async fn restart_from_source(
    pool: &Pool,
    asset: AssetId,
    version: u32,
    transcode: &NewJob,
    max_attempts: i32,
) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE assets SET source_version = $2 + 1, source_tier = 'hot', updated_at = now()
             WHERE id = $1 AND state = 'restoring' AND source_version = $2 AND deleted_at IS NULL",
            &[&asset.as_uuid(), &version_param(version)],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    queue::enqueue_and_wake(&tx, transcode, max_attempts).await?;
    tx.commit().await?;
    Ok(true)
}

/// Archived and restoring assets (not deleted): (archived, restoring).
pub async fn counts(client: &impl GenericClient) -> Result<(i64, i64), DbError> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'archived'),
                    count(*) FILTER (WHERE state = 'restoring')
             FROM assets WHERE state IN ('archived', 'restoring') AND deleted_at IS NULL",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A job of `kind` about `version` of `asset`, once per version.
fn version_job(kind: &str, asset: AssetId, version: u32) -> NewJob {
    NewJob::new(
        kind,
        serde_json::json!({ "asset_id": asset, "version": version }),
    )
    .idempotency_key(format!("{asset}/v{version}"))
    .max_attempts(ARCHIVE_MAX_ATTEMPTS)
}

fn version_param(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(state: AssetState, published: Option<u32>) -> ArchiveState {
        ArchiveState {
            state,
            playback_id: String::new(),
            published_version: published,
            source_version: published.unwrap_or(1),
            source_tier: "hot".to_owned(),
        }
    }

    #[test]
    fn a_version_is_archived_while_the_asset_is_and_once_a_later_one_is_published() {
        assert!(state(AssetState::Archived, Some(2)).version_is_archived(2));
        assert!(state(AssetState::Restoring, Some(2)).version_is_archived(2));
        // Restored: version 3 published, version 2 stays archived.
        assert!(state(AssetState::Ready, Some(3)).version_is_archived(2));
        assert!(!state(AssetState::Ready, Some(2)).version_is_archived(2));
        assert!(!state(AssetState::Archived, Some(2)).version_is_archived(1));
        assert!(!state(AssetState::Errored, None).version_is_archived(1));
    }
}
