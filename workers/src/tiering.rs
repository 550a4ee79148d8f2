//! Moving renditions between storage tiers: `move_rendition` jobs (copy,
//! verify, switch) and `drop_tier_copy` jobs (delete the copy left behind).
//! The state rules are `cascade_platform::tiering`'s; this is the I/O.
//!
//! Stores that move objects between storage classes themselves (AWS S3
//! lifecycle transitions, MinIO ILM) do it by age alone and within one
//! bucket; SeaweedFS answers NotImplemented to transitions. So Cascade
//! copies between tiers itself, object by object, streaming (memory stays
//! at one chunk per object in flight), and records where each rendition is.

use std::time::Instant;

use cascade_platform::archive as tiering_archive;
use cascade_platform::config::TierPolicyConfig;
use cascade_platform::storage::tiers::Tiers;
use cascade_platform::{tiering, ObjectStore, StorageError};
use cascade_schemas::{JobId, ObjectKey};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::runner::{JobContext, JobError, JobHandler};

pub use cascade_schemas::jobs::{DropJob, MoveJob};

/// Handler of [`cascade_schemas::job_kind::MOVE_RENDITION`]
/// ([`TierHandler::moves`]) or [`cascade_schemas::job_kind::DROP_TIER_COPY`]
/// ([`TierHandler::drops`]).
#[derive(Clone)]
pub struct TierHandler {
    pool: Pool,
    tiers: Tiers,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Move,
    Drop,
}

pub(crate) fn retry(what: &str, error: &dyn std::fmt::Display) -> JobError {
    JobError::Retryable(format!("{what}: {error}"))
}

pub(crate) fn storage(what: &str, error: StorageError) -> JobError {
    if error.is_retryable() {
        retry(what, &error)
    } else {
        JobError::Permanent(format!("{what}: {error}"))
    }
}

/// Objects copied at once per move.
const COPY_CONCURRENCY: usize = 4;

impl TierHandler {
    /// Runs `move_rendition` jobs within `tiers`, recording through `pool`.
    pub fn moves(pool: Pool, tiers: Tiers) -> Self {
        Self {
            pool,
            tiers,
            kind: Kind::Move,
        }
    }

    /// Runs `drop_tier_copy` jobs.
    pub fn drops(pool: Pool, tiers: Tiers) -> Self {
        Self {
            pool,
            tiers,
            kind: Kind::Drop,
        }
    }

    fn store(&self, tier: &str) -> Result<&ObjectStore, JobError> {
        self.tiers.store(tier).ok_or_else(|| {
            JobError::Permanent(format!("no storage tier named {tier:?} is configured"))
        })
    }

    async fn move_rendition(&self, job: MoveJob, job_id: JobId) -> Result<(), JobError> {
        let started = Instant::now();
        let target = self.store(&job.to)?;
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let Some(from) = tiering::begin_move(
            &client,
            job.asset_id,
            job.version,
            &job.rendition,
            &job.to,
            job_id,
        )
        .await
        .map_err(|e| retry("starting the move", &e))?
        else {
            // Already there, gone, or a newer move was asked for: what an
            // earlier attempt of this job copied goes.
            drop(client);
            return self.call_off(&job, job_id, target).await;
        };
        drop(client);
        let source = self.store(&from)?;
        let prefix = ObjectKey::rendition_prefix(job.asset_id, job.version, &job.rendition);
        let objects = source
            .list(&prefix)
            .await
            .map_err(|e| storage("listing the rendition", e))?;
        if objects.is_empty() {
            return Err(JobError::Permanent(format!(
                "no object of rendition {} in tier {from}",
                job.rendition
            )));
        }
        let bytes: u64 = objects.iter().map(|o| o.size).sum();
        futures::stream::iter(objects)
            .map(|meta| async move {
                let key = ObjectKey::from_stored(meta.key.clone());
                copy_object(source, &key, meta.size, target, key.clone()).await
            })
            .buffer_unordered(COPY_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let switched = tiering::finish_move(
            &self.pool,
            job.asset_id,
            job.version,
            &job.rendition,
            &from,
            &job.to,
            job_id,
        )
        .await
        .map_err(|e| retry("switching the rendition", &e))?;
        if switched {
            tracing::info!(
                asset_id = %job.asset_id, version = job.version, rendition = %job.rendition,
                from = %from, to = %job.to, bytes, elapsed_ms = started.elapsed().as_millis() as u64,
                "rendition moved"
            );
            return Ok(());
        }
        // Superseded by another move: take back this copy.
        self.call_off(&job, job_id, target).await
    }

    /// A move called off removes its copy in the target tier, holding the
    /// rendition's row while it does (see `tiering::lock_called_off`).
    async fn call_off(
        &self,
        job: &MoveJob,
        job_id: JobId,
        target: &ObjectStore,
    ) -> Result<(), JobError> {
        let mut client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| retry("database", &e))?;
        let remove = tiering::lock_called_off(
            &tx,
            job.asset_id,
            job.version,
            &job.rendition,
            &job.to,
            job_id,
        )
        .await
        .map_err(|e| retry("locking the rendition", &e))?;
        if remove {
            let prefix = ObjectKey::rendition_prefix(job.asset_id, job.version, &job.rendition);
            target
                .delete_prefix(&prefix)
                .await
                .map_err(|e| storage("removing a superseded copy", e))?;
        }
        tx.commit().await.map_err(|e| retry("database", &e))?;
        Ok(())
    }

    async fn drop_copy(&self, job: DropJob) -> Result<(), JobError> {
        let store = self.store(&job.tier)?;
        let mut client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        // The row stays locked while the copy goes: a move back to this tier
        // waits, rather than copying into what is being deleted.
        let tx = client
            .transaction()
            .await
            .map_err(|e| retry("database", &e))?;
        let may_go =
            tiering::lock_for_drop(&tx, job.asset_id, job.version, &job.rendition, &job.tier)
                .await
                .map_err(|e| retry("locking the rendition", &e))?;
        if may_go {
            let prefix = ObjectKey::rendition_prefix(job.asset_id, job.version, &job.rendition);
            let removed = store
                .delete_prefix(&prefix)
                .await
                .map_err(|e| storage("deleting the old copy", e))?;
            tracing::info!(
                asset_id = %job.asset_id, version = job.version, rendition = %job.rendition,
                tier = %job.tier, objects = removed, "old tier copy dropped"
            );
        }
        tx.commit().await.map_err(|e| retry("database", &e))?;
        Ok(())
    }
}

/// Copies object `key` of `size` bytes in `source` to `target` as `to`,
/// unless an identical-sized copy is already there (a retried move skips
/// what it copied before), then checks the copy's size against the
/// source's.
pub(crate) async fn copy_object(
    source: &ObjectStore,
    key: &ObjectKey,
    size: u64,
    target: &ObjectStore,
    to: ObjectKey,
) -> Result<(), JobError> {
    match target.head(&to).await {
        Ok(existing) if existing.size == size => return Ok(()),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(storage("checking the target", e)),
    }
    let body = source
        .get(key, None)
        .await
        .map_err(|e| storage("reading the object", e))?;
    let mut reader = tokio_util::io::StreamReader::new(
        body.stream
            .map(|chunk| chunk.map_err(|e| std::io::Error::other(e.to_string()))),
    );
    let written = target
        .put(&to, &mut reader)
        .await
        .map_err(|e| storage("writing the copy", e))?;
    let stored = target
        .head(&to)
        .await
        .map_err(|e| storage("checking the copy", e))?;
    if written != size || stored.size != size {
        return Err(JobError::Retryable(format!(
            "the copy of {key} has {} bytes, the source {size}",
            stored.size
        )));
    }
    Ok(())
}

impl JobHandler for TierHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move {
            let invalid =
                |e: serde_json::Error| JobError::Permanent(format!("invalid payload: {e}"));
            match handler.kind {
                Kind::Move => {
                    let job: MoveJob =
                        serde_json::from_value(ctx.payload.clone()).map_err(invalid)?;
                    handler.move_rendition(job, ctx.lease.job_id).await
                }
                Kind::Drop => {
                    let job: DropJob =
                        serde_json::from_value(ctx.payload.clone()).map_err(invalid)?;
                    handler.drop_copy(job).await
                }
            }
        }
        .boxed()
    }
}

/// The tier the policy puts a rendition in: the `n`th colder tier once it
/// has been idle for `idle_after[n-1]`, `hot` when viewed `promote_views`
/// times within the window. An asset's audio and its lowest
/// `keep_low_rungs_warmer` video renditions move down one threshold later
/// (`idle_after[n]` for the `n`th tier), and with the rest at the last
/// threshold when there is no later one: they start playback and carry
/// weak connections while an asset cools, but once nobody watches it a
/// warmer copy of them would be paid for every month for plays that rarely
/// come (`cascade bench tiers`: keeping the low rungs of cold assets warm
/// cost 6 points of the savings and served no play from hot). `tiers` is
/// every tier's name, `hot` first.
pub fn policy_tier<'a>(
    input: &tiering::PolicyInput,
    policy: &TierPolicyConfig,
    tiers: &'a [String],
) -> &'a str {
    let coldest = tiers.len().saturating_sub(1);
    let low = input
        .low_rank
        .is_none_or(|rank| rank < policy.keep_low_rungs_warmer);
    let thresholds = &policy.idle_after;
    let mut level = (1..=coldest.min(thresholds.len()))
        .filter(|&n| {
            let after = if low {
                thresholds.get(n).or(thresholds.last())
            } else {
                thresholds.get(n - 1)
            };
            after.is_some_and(|after| input.idle_seconds >= after.as_secs_f64())
        })
        .count();
    if input.recent_views >= policy.promote_views {
        level = 0;
    }
    tiers.get(level).map_or("hot", String::as_str)
}

/// Renditions the policy reads at a time.
const POLICY_BATCH: i32 = 2000;

/// The advisory lock a policy run holds for its transaction ("tiering").
const POLICY_LOCK_KEY: i64 = 0x0074_6965_7269_6e67;

/// Handler of [`cascade_schemas::job_kind::TIER_POLICY`].
#[derive(Clone)]
pub struct PolicyHandler {
    pool: Pool,
    tiers: Vec<String>,
    policy: TierPolicyConfig,
    queue: cascade_platform::Queue,
}

impl PolicyHandler {
    /// Places renditions among `tiers` by `policy`, queueing moves on `queue`.
    pub fn new(queue: cascade_platform::Queue, tiers: &Tiers, policy: TierPolicyConfig) -> Self {
        Self {
            pool: queue.pool().clone(),
            tiers: tiers.all().iter().map(|t| t.name.clone()).collect(),
            policy,
            queue,
        }
    }

    async fn run_policy(&self) -> Result<(), JobError> {
        let started = Instant::now();
        let mut connection = self.pool.get().await.map_err(|e| retry("database", &e))?;
        // One run at a time: runs are queued once per interval, and one that
        // outlasts its interval would otherwise read the same placement as
        // the next and queue the same moves twice (`cascade bench tiers`
        // found renditions with five identical moves queued that way). The
        // moves are queued when the run commits.
        let client = connection
            .transaction()
            .await
            .map_err(|e| retry("database", &e))?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&POLICY_LOCK_KEY])
            .await
            .map_err(|e| retry("taking the policy's lock", &e))?
            .get(0);
        if !locked {
            tracing::info!("another tiering policy run is under way; this one has nothing to do");
            return Ok(());
        }
        // A batch at a time: the run's memory does not grow with the catalogue.
        let portal = tiering::policy_portal(&client, self.policy.views_window)
            .await
            .map_err(|e| retry("reading the renditions", &e))?;
        let mut renditions = 0usize;
        let mut moves = 0u32;
        'placing: loop {
            let batch = tiering::policy_batch(&client, &portal, POLICY_BATCH)
                .await
                .map_err(|e| retry("reading the renditions", &e))?;
            if batch.is_empty() {
                break;
            }
            renditions += batch.len();
            for input in &batch {
                if moves >= self.policy.max_moves_per_run {
                    break 'placing;
                }
                // Where it is going decides: a queued move elsewhere is
                // superseded by a newer one (even one back to where it is).
                let target = policy_tier(input, &self.policy, &self.tiers);
                if target == input.queued_to.as_deref().unwrap_or(&input.tier) {
                    continue;
                }
                tiering::request_move(
                    &client,
                    input.asset,
                    input.version,
                    &input.rendition,
                    target,
                )
                .await
                .map_err(|e| retry("queueing a move", &e))?;
                moves += 1;
            }
        }
        let mut archives = 0u32;
        if let Some(after) = self.policy.archive_after {
            let room = self.policy.max_moves_per_run.saturating_sub(moves);
            let candidates = tiering_archive::archive_candidates(&client, after, i64::from(room))
                .await
                .map_err(|e| retry("finding assets to archive", &e))?;
            for (asset, _) in candidates {
                if tiering_archive::request_archive(&client, asset)
                    .await
                    .map_err(|e| retry("queueing an archive", &e))?
                {
                    archives += 1;
                }
            }
        }
        // The longest look back the policy takes, with room to spare.
        let keep = self.policy.views_window.max(
            self.policy
                .idle_after
                .iter()
                .copied()
                .max()
                .unwrap_or_default(),
        ) * 2;
        tiering::prune_views(&client, keep)
            .await
            .map_err(|e| retry("pruning old view counts", &e))?;
        client
            .commit()
            .await
            .map_err(|e| retry("committing the policy's moves", &e))?;
        if moves > 0 {
            self.queue.wake(cascade_schemas::job_kind::MOVE_RENDITION);
        }
        tracing::info!(
            renditions,
            moves,
            archives,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tiering policy ran"
        );
        Ok(())
    }
}

impl JobHandler for PolicyHandler {
    fn run(&self, _ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move { handler.run_policy().await }.boxed()
    }
}

/// `registry` with the tiering handlers: `move_rendition` and
/// `drop_tier_copy` within `tiers`, and `tier_policy` by `policy` when
/// given (moves queued on `queue`).
pub fn register(
    registry: crate::HandlerRegistry,
    queue: &cascade_platform::Queue,
    tiers: &Tiers,
    policy: Option<TierPolicyConfig>,
) -> crate::HandlerRegistry {
    let pool = queue.pool().clone();
    let registry = registry
        .register(
            cascade_schemas::job_kind::MOVE_RENDITION,
            TierHandler::moves(pool.clone(), tiers.clone()),
        )
        .register(
            cascade_schemas::job_kind::DROP_TIER_COPY,
            TierHandler::drops(pool, tiers.clone()),
        );
    match policy {
        Some(policy) => registry.register(
            cascade_schemas::job_kind::TIER_POLICY,
            PolicyHandler::new(queue.clone(), tiers, policy),
        ),
        None => registry,
    }
}

/// Queues one `tier_policy` job per `interval` (its idempotency key is the
/// interval's number, so however many workers run this, one job is queued
/// per interval) until `cancel`.
pub async fn schedule_policy(
    queue: cascade_platform::Queue,
    interval: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval.min(std::time::Duration::from_secs(60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let period = now.as_millis() / interval.as_millis().max(1);
        let job = cascade_platform::NewJob::new(
            cascade_schemas::job_kind::TIER_POLICY,
            serde_json::json!({}),
        )
        .idempotency_key(format!("tier_policy/{}/{period}", interval.as_millis()))
        .max_attempts(3);
        if let Err(error) = queue.enqueue(&job).await {
            tracing::warn!(error = %error, "cannot queue the tiering policy; trying at the next tick");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use cascade_schemas::AssetId;

    fn input(low_rank: Option<u32>, idle_seconds: f64, recent_views: i64) -> tiering::PolicyInput {
        tiering::PolicyInput {
            asset: AssetId::new(),
            version: 1,
            rendition: "r".to_owned(),
            low_rank,
            tier: "hot".to_owned(),
            moving_to: None,
            queued_to: None,
            idle_seconds,
            recent_views,
        }
    }

    #[test]
    fn renditions_go_colder_with_idle_time_back_hot_when_watched_low_rungs_a_tier_warmer() {
        let tiers: Vec<String> = ["hot", "warm", "cold"].map(String::from).into();
        let policy = TierPolicyConfig {
            idle_after: vec![
                Duration::from_secs(10),
                Duration::from_secs(100),
                Duration::from_secs(1000),
            ],
            promote_views: 5,
            keep_low_rungs_warmer: 1,
            ..TierPolicyConfig::default()
        };
        let top = |idle, views| policy_tier(&input(Some(2), idle, views), &policy, &tiers);
        assert_eq!(top(1.0, 0), "hot");
        assert_eq!(top(10.0, 0), "warm");
        assert_eq!(top(150.0, 0), "cold");
        // No tier past the coldest, whatever the idle time.
        assert_eq!(top(5000.0, 0), "cold");
        // Watched again: hot.
        assert_eq!(top(150.0, 5), "hot");
        // The lowest video rung and the audio move down a threshold later:
        // hot while the top rung is warm, warm while it is cold, cold once
        // idle past the last threshold.
        let low =
            |idle| [Some(0), None].map(|rank| policy_tier(&input(rank, idle, 0), &policy, &tiers));
        assert_eq!(low(10.0), ["hot", "hot"]);
        assert_eq!(low(150.0), ["warm", "warm"]);
        assert_eq!(low(1000.0), ["cold", "cold"]);
        assert_eq!(top(1000.0, 0), "cold");
        // With no later threshold, they go with the rest at the last one.
        let two = TierPolicyConfig {
            idle_after: vec![Duration::from_secs(10), Duration::from_secs(100)],
            ..policy.clone()
        };
        let low_two = |idle| policy_tier(&input(Some(0), idle, 0), &two, &tiers);
        assert_eq!([low_two(10.0), low_two(100.0)], ["hot", "cold"]);
        // A rendition above the lowest is not kept warmer.
        assert_eq!(
            policy_tier(&input(Some(1), 10.0, 0), &policy, &tiers),
            "warm"
        );
        // With hot alone, everything stays hot.
        let only_hot = ["hot".to_owned()];
        assert_eq!(
            policy_tier(&input(Some(2), 5000.0, 0), &policy, &only_hot),
            "hot"
        );
    }
}
