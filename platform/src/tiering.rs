//! Where each published rendition's media are stored (`renditions.tier`),
//! and the state rules of moving them between storage tiers.
//!
//! A move is copy, verify, switch, drop:
//! 1. [`begin_move`] records the target (`moving_to`) on the rendition's row;
//! 2. the `move_rendition` job copies every object of the rendition to the
//!    target tier and checks each copy's size;
//! 3. [`finish_move`] switches the row to the target in one conditional
//!    update naming the tier it leaves and the one it goes to, tells the
//!    origins (`assets::PLAYBACK_CHANGED_CHANNEL`) and, in the same
//!    transaction, queues the `drop_tier_copy` job that deletes the old copy
//!    once no origin can still read it ([`crate::assets::PLAYBACK_CHANGE_SETTLE`]);
//! 4. [`lock_for_drop`] holds the row while that copy is deleted, so a new
//!    move back to that tier cannot copy into it meanwhile.
//!
//! Every step is idempotent, so a move killed anywhere is finished by the
//! job's retry: the rendition is always wholly in the tier its row names
//! (origins read it there), and once the drop has run, in that tier only.

use chrono::Utc;
use deadpool_postgres::{GenericClient, Pool};

use cascade_schemas::{AssetId, JobId, RenditionName};

use crate::assets::{announce_playback_change, PLAYBACK_CHANGE_SETTLE};
use crate::db::DbError;
use crate::queue::{self, NewJob, QueueError};

/// SQL: no move of rendition row `r` was queued after the job whose id is
/// parameter `job` (a later decision wins: a stale job retried late never
/// undoes it).
fn no_newer_move(job: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM jobs j
             WHERE j.kind = 'move_rendition' AND j.id > {job} AND j.payload ? 'asset_id'
               AND j.payload->>'asset_id' = r.asset_id::text
               AND (j.payload->>'version')::int4 = r.version
               AND j.payload->>'rendition' = r.name)"
    )
}

/// Attempts a move or a drop gets (backing off) while a tier is unreachable.
const MOVE_MAX_ATTEMPTS: i32 = 10;

/// Where one rendition's media are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The tier holding them (origins read them there).
    pub tier: String,
    /// A move under way, to this tier.
    pub moving_to: Option<String>,
}

/// Where rendition `rendition` of `asset`'s `version` is; `None` when there
/// is no such published rendition (or the asset is deleted).
pub async fn placement(
    client: &impl GenericClient,
    asset: AssetId,
    version: u32,
    rendition: &RenditionName,
) -> Result<Option<Placement>, DbError> {
    let row = client
        .query_opt(
            "SELECT r.tier, r.moving_to FROM renditions r JOIN assets a ON a.id = r.asset_id
             WHERE r.asset_id = $1 AND r.version = $2 AND r.name = $3 AND a.deleted_at IS NULL",
            &[
                &asset.as_uuid(),
                &version_param(version),
                &rendition.as_str(),
            ],
        )
        .await?;
    Ok(row.map(|r| Placement {
        tier: r.get(0),
        moving_to: r.get(1),
    }))
}

/// Starts moving a rendition to tier `to` for move job `job` (a move to
/// elsewhere under way is superseded: its switch will fail). The tier it
/// leaves; `None` when it is already there (a move elsewhere under way is
/// then called off), there is no such rendition (or
/// its asset is archived: its objects are gone), or a newer move of it was
/// requested since `job` (a stale job retried late never undoes a later
/// decision).
pub async fn begin_move(
    client: &impl GenericClient,
    asset: AssetId,
    version: u32,
    rendition: &RenditionName,
    to: &str,
    job: JobId,
) -> Result<Option<String>, DbError> {
    let (asset, version) = (asset.as_uuid(), version_param(version));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&asset, &version, &rendition.as_str(), &to, &job.0];
    let row = client
        .query_opt(
            &format!(
                "UPDATE renditions r SET moving_to = $4, move_job = $5
             FROM assets a
             WHERE a.id = r.asset_id AND a.deleted_at IS NULL
               AND a.state NOT IN ('archived', 'restoring')
               AND r.asset_id = $1 AND r.version = $2 AND r.name = $3 AND r.tier <> $4
               AND {}
             RETURNING r.tier",
                no_newer_move("$5")
            ),
            &params,
        )
        .await?;
    if row.is_none() {
        // Already there: a move elsewhere still under way is called off
        // (its switch fails, and it removes its copy).
        client
            .execute(
                &format!(
                    "UPDATE renditions r SET moving_to = NULL, move_job = NULL
                 WHERE r.asset_id = $1 AND r.version = $2 AND r.name = $3 AND r.tier = $4
                   AND r.moving_to IS NOT NULL
                   AND {}",
                    no_newer_move("$5")
                ),
                &params,
            )
            .await?;
    }
    Ok(row.map(|r| r.get(0)))
}

/// Switches a rendition from tier `from` to `to`, when that is the move
/// under way and no newer move of it was requested since `job` (`false`
/// otherwise: it was superseded, or already done), tells the origins, and
/// queues the drop of the copy in `from`.
pub async fn finish_move(
    pool: &Pool,
    asset: AssetId,
    version: u32,
    rendition: &RenditionName,
    from: &str,
    to: &str,
    job: JobId,
) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE renditions r SET tier = $5, moving_to = NULL, move_job = NULL
             FROM assets a
             WHERE a.id = r.asset_id AND a.deleted_at IS NULL
               AND r.asset_id = $1 AND r.version = $2 AND r.name = $3
               AND r.tier = $4 AND r.moving_to = $5 AND r.move_job = $6
               AND {}
             RETURNING a.playback_id",
                no_newer_move("$6")
            ),
            &[
                &asset.as_uuid(),
                &version_param(version),
                &rendition.as_str(),
                &from,
                &to,
                &job.0,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let playback_id: String = row.get(0);
    announce_playback_change(&tx, &playback_id).await?;
    let mut drop_job = NewJob::new(
        cascade_schemas::job_kind::DROP_TIER_COPY,
        serde_json::json!({
            "asset_id": asset, "version": version, "rendition": rendition, "tier": from,
        }),
    )
    .max_attempts(MOVE_MAX_ATTEMPTS);
    drop_job.run_at =
        Some(Utc::now() + chrono::Duration::from_std(PLAYBACK_CHANGE_SETTLE).unwrap_or_default());
    queue::enqueue(&tx, &drop_job, MOVE_MAX_ATTEMPTS)
        .await
        .map_err(QueueError::into_db)?;
    tx.commit().await?;
    Ok(true)
}

/// Locks rendition `rendition`'s row, in the caller's transaction, for a
/// move job `job` to `to` that was called off (superseded, refused, or
/// its switch failed): `true` when its copy in `to` must go (held while it
/// is deleted, so no new move into `to` can begin meanwhile and reuse what
/// is being deleted). The copy stays when the rendition is in `to`, or a
/// newer move to `to` has begun (it may be reusing the objects). A
/// `moving_to` this job left is cleared.
pub async fn lock_called_off(
    client: &impl GenericClient,
    asset: AssetId,
    version: u32,
    rendition: &RenditionName,
    to: &str,
    job: JobId,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "SELECT tier, moving_to, move_job FROM renditions
             WHERE asset_id = $1 AND version = $2 AND name = $3 FOR UPDATE",
            &[
                &asset.as_uuid(),
                &version_param(version),
                &rendition.as_str(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(true);
    };
    let (tier, moving_to, move_job): (String, Option<String>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    if move_job == Some(job.0) {
        client
            .execute(
                "UPDATE renditions SET moving_to = NULL, move_job = NULL
                 WHERE asset_id = $1 AND version = $2 AND name = $3 AND move_job = $4",
                &[
                    &asset.as_uuid(),
                    &version_param(version),
                    &rendition.as_str(),
                    &job.0,
                ],
            )
            .await?;
        return Ok(tier != to);
    }
    Ok(tier != to && moving_to.as_deref() != Some(to))
}

/// Locks rendition `rendition`'s row for the deletion of its copy in
/// `tier`, in the caller's transaction. `true` when the copy may go: the
/// rendition is neither in `tier` nor moving to it (or is gone: a deleted
/// asset's purge removes every tier anyway).
pub async fn lock_for_drop(
    client: &impl GenericClient,
    asset: AssetId,
    version: u32,
    rendition: &RenditionName,
    tier: &str,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "SELECT tier, moving_to FROM renditions
             WHERE asset_id = $1 AND version = $2 AND name = $3 FOR UPDATE",
            &[
                &asset.as_uuid(),
                &version_param(version),
                &rendition.as_str(),
            ],
        )
        .await?;
    Ok(match row {
        None => true,
        Some(r) => {
            let (current, moving_to): (String, Option<String>) = (r.get(0), r.get(1));
            current != tier && moving_to.as_deref() != Some(tier)
        }
    })
}

/// Queues moves of every rendition of `asset`'s published version that is
/// not in tier `to`, and pins them there (an operator's request: the
/// policy leaves pinned renditions alone, see [`unpin`]). The number of
/// moves queued; `None` when the asset has no published version.
pub async fn request_moves(
    pool: &Pool,
    asset: AssetId,
    to: &str,
) -> Result<Option<usize>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let version: Option<Option<i32>> = tx
        .query_opt(
            "SELECT published_version FROM assets WHERE id = $1 AND deleted_at IS NULL",
            &[&asset.as_uuid()],
        )
        .await?
        .map(|r| r.get(0));
    let Some(Some(version)) = version else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE renditions SET tier_pinned = true WHERE asset_id = $1 AND version = $2",
        &[&asset.as_uuid(), &version],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT name FROM renditions
             WHERE asset_id = $1 AND version = $2 AND tier <> $3
               AND moving_to IS DISTINCT FROM $3",
            &[&asset.as_uuid(), &version, &to],
        )
        .await?;
    let version = u32::try_from(version).unwrap_or_default();
    for row in &rows {
        let rendition: String = row.get(0);
        request_move(&tx, asset, version, &rendition, to).await?;
    }
    tx.commit().await?;
    Ok(Some(rows.len()))
}

/// Hands `asset`'s renditions back to the tiering policy (undoes the pin of
/// [`request_moves`]). `false` when there is no such asset.
pub async fn unpin(pool: &Pool, asset: AssetId) -> Result<bool, DbError> {
    let client = pool.get().await?;
    let found = client
        .query_opt(
            "SELECT 1 FROM assets WHERE id = $1 AND deleted_at IS NULL",
            &[&asset.as_uuid()],
        )
        .await?
        .is_some();
    client
        .execute(
            "UPDATE renditions SET tier_pinned = false WHERE asset_id = $1",
            &[&asset.as_uuid()],
        )
        .await?;
    Ok(found)
}

/// A published rendition as the tiering policy sees it.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    /// The asset.
    pub asset: AssetId,
    /// Its published version.
    pub version: u32,
    /// The rendition.
    pub rendition: String,
    /// Audio (no height), or a video rendition's position among the
    /// asset's video renditions from the lowest (0).
    pub low_rank: Option<u32>,
    /// The tier it is in.
    pub tier: String,
    /// A move under way.
    pub moving_to: Option<String>,
    /// The target of the newest move of it queued or running: where it is
    /// going (a newer move supersedes it, see [`begin_move`]).
    pub queued_to: Option<String>,
    /// Since its last segment was served (or since it was published, if
    /// none was since), in seconds. A move does not reset it.
    pub idle_seconds: f64,
    /// Segments of it served within the window asked for.
    pub recent_views: i64,
}

/// Every published rendition of every live asset not pinned by hand nor
/// archived, with
/// its idle time and its views within `window` (segment fetches counted
/// by the origins).
pub async fn policy_inputs(
    client: &impl GenericClient,
    window: std::time::Duration,
) -> Result<Vec<PolicyInput>, DbError> {
    let rows = client
        .query(POLICY_INPUTS, &[&window.as_secs_f64()])
        .await?;
    Ok(rows.iter().map(policy_input).collect())
}

/// [`policy_inputs`] a batch at a time, through a portal of the caller's
/// transaction, so that a policy run's memory does not grow with the
/// catalogue: open it with [`policy_portal`], then call
/// [`policy_batch`] until it returns nothing. Other statements may run in
/// the transaction between batches.
pub async fn policy_portal(
    tx: &tokio_postgres::Transaction<'_>,
    window: std::time::Duration,
) -> Result<tokio_postgres::Portal, DbError> {
    Ok(tx.bind(POLICY_INPUTS, &[&window.as_secs_f64()]).await?)
}

/// The next (at most) `rows` of a [`policy_portal`].
pub async fn policy_batch(
    tx: &tokio_postgres::Transaction<'_>,
    portal: &tokio_postgres::Portal,
    rows: i32,
) -> Result<Vec<PolicyInput>, DbError> {
    let rows = tx.query_portal(portal, rows).await?;
    Ok(rows.iter().map(policy_input).collect())
}

/// Every published rendition the policy may place, with what it decides by.
const POLICY_INPUTS: &str = "SELECT r.asset_id, r.version, r.name, r.tier, r.moving_to,
                 CASE WHEN r.kind = 'audio' THEN NULL
                      ELSE (rank() OVER (PARTITION BY r.asset_id, r.version, r.kind
                                         ORDER BY r.height NULLS LAST, r.name) - 1)::int4 END,
                 EXTRACT(EPOCH FROM now() - greatest(r.published_at, v.last_bucket))::float8,
                 coalesce(v.recent, 0)::int8,
                 (SELECT j.payload->>'to' FROM jobs j
                  WHERE j.payload ? 'asset_id' AND j.payload->>'asset_id' = r.asset_id::text
                    AND j.kind = 'move_rendition' AND j.state IN ('queued', 'running')
                    AND j.payload->>'rendition' = r.name
                  ORDER BY j.id DESC LIMIT 1)
             FROM renditions r
             JOIN assets a ON a.id = r.asset_id
             LEFT JOIN LATERAL (
                 SELECT max(bucket) AS last_bucket,
                        sum(views) FILTER (WHERE bucket >= now() - make_interval(secs => $1)) AS recent
                 FROM media_views m
                 WHERE m.asset_id = r.asset_id AND m.version = r.version AND m.rendition = r.name
             ) v ON true
             WHERE a.deleted_at IS NULL AND r.version = a.published_version
               AND a.state NOT IN ('archived', 'restoring') AND NOT r.tier_pinned
             ORDER BY r.asset_id, r.name";

fn policy_input(r: &tokio_postgres::Row) -> PolicyInput {
    PolicyInput {
        asset: AssetId::from(r.get::<_, uuid::Uuid>(0)),
        version: u32::try_from(r.get::<_, i32>(1)).unwrap_or_default(),
        rendition: r.get(2),
        tier: r.get(3),
        moving_to: r.get(4),
        low_rank: r
            .get::<_, Option<i32>>(5)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        idle_seconds: r.get(6),
        recent_views: r.get(7),
        queued_to: r.get(8),
    }
}

/// Queues a move of one rendition to tier `to`.
pub async fn request_move(
    client: &impl GenericClient,
    asset: AssetId,
    version: u32,
    rendition: &str,
    to: &str,
) -> Result<(), DbError> {
    queue::enqueue(
        client,
        &NewJob::new(
            cascade_schemas::job_kind::MOVE_RENDITION,
            serde_json::json!({
                "asset_id": asset, "version": version, "rendition": rendition, "to": to,
            }),
        )
        .max_attempts(MOVE_MAX_ATTEMPTS),
        MOVE_MAX_ATTEMPTS,
    )
    .await
    .map_err(QueueError::into_db)?;
    Ok(())
}

/// The policy's promotion, applied as soon as the origins write their
/// counts rather than at its next run: each of `served_cold` (a rendition
/// just served from a tier other than `hot`) that was viewed at least
/// `promote_views` times within `window`, is not pinned and has no move to
/// `hot` queued already, gets a move to `hot` queued (and the workers
/// woken). A move elsewhere still queued (a demotion decided before it was
/// watched again) is superseded by it rather than waited for. The number
/// queued.
pub async fn promote_watched(
    client: &impl GenericClient,
    served_cold: &[(AssetId, u32, String)],
    promote_views: i64,
    window: std::time::Duration,
) -> Result<usize, DbError> {
    if served_cold.is_empty() {
        return Ok(0);
    }
    let assets: Vec<uuid::Uuid> = served_cold.iter().map(|(a, _, _)| a.as_uuid()).collect();
    let versions: Vec<i32> = served_cold
        .iter()
        .map(|(_, v, _)| version_param(*v))
        .collect();
    let renditions: Vec<&str> = served_cold.iter().map(|(_, _, r)| r.as_str()).collect();
    let rows = client
        .query(
            "SELECT r.asset_id, r.version, r.name
             FROM renditions r
             JOIN unnest($1::uuid[], $2::int4[], $3::text[]) AS t(a, v, n)
               ON r.asset_id = t.a AND r.version = t.v AND r.name = t.n
             JOIN assets s ON s.id = r.asset_id AND s.deleted_at IS NULL
             WHERE r.tier <> 'hot' AND NOT r.tier_pinned
               AND (SELECT coalesce(sum(m.views), 0)::int8 FROM media_views m
                    WHERE m.asset_id = r.asset_id AND m.version = r.version AND m.rendition = r.name
                      AND m.bucket >= now() - make_interval(secs => $5)) >= $4::int8
               AND NOT EXISTS (SELECT 1 FROM jobs j
                    WHERE j.payload ? 'asset_id' AND j.payload->>'asset_id' = r.asset_id::text
                      AND j.kind = 'move_rendition' AND j.state IN ('queued', 'running')
                      AND j.payload->>'rendition' = r.name AND j.payload->>'to' = 'hot')",
            &[
                &assets,
                &versions,
                &renditions,
                &promote_views,
                &window.as_secs_f64(),
            ],
        )
        .await?;
    for row in &rows {
        let asset = AssetId::from(row.get::<_, uuid::Uuid>(0));
        let version = u32::try_from(row.get::<_, i32>(1)).unwrap_or_default();
        let rendition: String = row.get(2);
        request_move(
            client,
            asset,
            version,
            &rendition,
            crate::storage::tiers::HOT,
        )
        .await?;
    }
    if !rows.is_empty() {
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&queue::CHANNEL, &cascade_schemas::job_kind::MOVE_RENDITION],
            )
            .await?;
    }
    Ok(rows.len())
}

/// Forgets view counts older than `keep` (the policy looks no further back).
pub async fn prune_views(
    client: &impl GenericClient,
    keep: std::time::Duration,
) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM media_views WHERE bucket < now() - make_interval(secs => $1)",
            &[&keep.as_secs_f64()],
        )
        .await?)
}

/// Renditions per tier (every published rendition of every live asset
/// not archived: an archived asset's renditions have no objects).
pub async fn renditions_per_tier(
    client: &impl GenericClient,
) -> Result<Vec<(String, i64)>, DbError> {
    let rows = client
        .query(
            "SELECT r.tier, count(*) FROM renditions r JOIN assets a ON a.id = r.asset_id
             WHERE a.deleted_at IS NULL AND a.state NOT IN ('archived', 'restoring')
             GROUP BY r.tier ORDER BY r.tier",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Views of one asset version (`rendition` `None`: plays of the asset) to add.
#[derive(Debug, Clone)]
pub struct ViewCount {
    /// The asset.
    pub asset: AssetId,
    /// Its version.
    pub version: u32,
    /// The rendition whose segments were fetched; `None` for plays.
    pub rendition: Option<String>,
    /// How many.
    pub views: i64,
}

/// Adds `counts` to the current `bucket` (a whole number of seconds, at
/// least one) and marks the assets viewed now, in one statement.
pub async fn record_views(
    client: &impl GenericClient,
    counts: &[ViewCount],
    bucket: std::time::Duration,
) -> Result<(), DbError> {
    let assets: Vec<uuid::Uuid> = counts.iter().map(|c| c.asset.as_uuid()).collect();
    let versions: Vec<i32> = counts.iter().map(|c| version_param(c.version)).collect();
    let renditions: Vec<&str> = counts
        .iter()
        .map(|c| c.rendition.as_deref().unwrap_or(""))
        .collect();
    let views: Vec<i64> = counts.iter().map(|c| c.views).collect();
    let bucket_seconds = bucket.as_secs().max(1) as f64;
    client
        .execute(
            "WITH counted AS (
                 INSERT INTO media_views (asset_id, version, rendition, bucket, views)
                 SELECT t.a, t.v, t.r,
                        to_timestamp(floor(extract(epoch FROM now())::float8 / $5) * $5), t.n
                 FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::int8[]) AS t(a, v, r, n)
                 WHERE EXISTS (SELECT 1 FROM assets WHERE id = t.a)
                 ON CONFLICT (asset_id, version, rendition, bucket)
                 DO UPDATE SET views = media_views.views + EXCLUDED.views
                 RETURNING asset_id)
             UPDATE assets SET last_viewed_at = now()
             WHERE id IN (SELECT asset_id FROM counted)",
            &[&assets, &versions, &renditions, &views, &bucket_seconds],
        )
        .await?;
    Ok(())
}

fn version_param(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}
