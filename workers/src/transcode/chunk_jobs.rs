//! The transcode handler's side of chunked transcoding (see [`super::chunked`]):
//! which part a job runs, recording a chunk under its lease, growing the
//! presentation as chunks finish in order, and the join and publish once
//! the last one is done.

use bytes::Bytes;
use cascade_platform::assets::{self, Asset};
use cascade_platform::db::DbError;
use cascade_schemas::{chunks as plan, job_kind, ObjectKey, RenditionName};

use super::chunked::{self, ChunkResult};
use super::*;

impl Inner {
    /// The part of the version `job` runs; `None`: nothing (its chunk is
    /// not planned: the version was superseded).
    pub(super) async fn part_of(
        &self,
        job: &TranscodeJob,
        asset: &Asset,
        ctx: &JobContext,
    ) -> Result<Option<Part>, JobError> {
        let version = job.version as i32;
        let rows = {
            let client = self.pool.get().await.map_err(|e| db_error("database", e))?;
            chunks::list(&client, job.asset_id, version)
                .await
                .map_err(|e| db_error("loading the chunks", e))?
        };
        let index = job.chunk.unwrap_or(0);
        if rows.is_empty() {
            if job.chunk.is_some() {
                tracing::warn!(asset_id = %job.asset_id, chunk = index, "the chunk is not planned; skipping it");
                return Ok(None);
            }
            let Some(queue) = &self.queue else {
                return Ok(Some(Part::Whole));
            };
            let planned = plan::plan(
                asset.duration_seconds.unwrap_or(0.0),
                self.config.chunk_duration.as_secs_f64(),
                self.config.segment_duration.as_secs_f64(),
                self.config.gop.as_secs_f64(),
                self.config.chunked_from.as_secs_f64(),
            );
            if planned.len() < 2 {
                return Ok(Some(Part::Whole));
            }
            let rows = chunks::plan(&self.pool, job, &planned, ctx.max_attempts)
                .await
                .map_err(|e| db_error("planning the chunks", e))?;
            queue.wake(job_kind::TRANSCODE);
            tracing::info!(asset_id = %job.asset_id, version, chunks = rows.len(),
                duration = asset.duration_seconds, "transcoding in chunks");
            return Ok(rows.first().map(|row| Part::Chunk(row.chunk)));
        }
        let Some(row) = rows.iter().find(|row| row.chunk.index == index) else {
            tracing::warn!(asset_id = %job.asset_id, chunk = index, "the chunk is not planned; skipping it");
            return Ok(None);
        };
        Ok(Some(if row.done {
            Part::Recorded(row.chunk)
        } else {
            Part::Chunk(row.chunk)
        }))
    }

    /// Records what a chunk made (`ran`; `None`: an earlier attempt did)
    /// and, when every chunk is done, joins and publishes the version.
    pub(super) async fn finish_chunk(
        &self,
        job: &TranscodeJob,
        ctx: &JobContext,
        chunk: Chunk,
        ran: Option<Ran>,
    ) -> Result<Outcome, TranscodeError> {
        let result = ran
            .map(|ran| {
                ChunkResult::new(ran.summary, &ran.inits)
                    .and_then(|result| serde_json::to_value(result).map_err(|e| e.to_string()))
            })
            .transpose()
            .map_err(|e| TranscodeError::Internal(format!("recording the chunk: {e}")))?;
        // The encode is done: a database outage is waited out.
        let (recorded, rows) = cascade_platform::outage::retry(
            ctx.outage_grace,
            Some(&ctx.cancel),
            DbError::is_retryable,
            |error, retry_in| {
                tracing::warn!(error = %error, retry_in = ?retry_in, "cannot record the chunk yet; retrying");
            },
            || self.record_chunk(job, &ctx.lease, chunk.index, result.as_ref()),
        )
        .await
        .map_err(|e| TranscodeError::internal("recording the chunk", e))?;
        if recorded == Some(Recorded::LeaseLost) {
            // Another worker holds the chunk now; its result counts.
            tracing::warn!(asset_id = %job.asset_id, chunk = chunk.index,
                "the chunk's lease was lost; its result is not recorded");
            return Err(TranscodeError::Cancelled);
        }
        let done = rows.iter().filter(|row| row.done).count();
        tracing::info!(asset_id = %job.asset_id, chunk = chunk.index, done, of = rows.len(), "chunk done");
        if done < rows.len() {
            return Ok(Outcome::Done);
        }
        self.assemble(job, ctx, &rows).await
    }

    /// One transaction under the version's lock: records the chunk (when
    /// `result` is given), reads every chunk, and extends the growing
    /// playlists over the chunks done from the start, so they only ever
    /// append whichever chunks finish first.
    async fn record_chunk(
        &self,
        job: &TranscodeJob,
        lease: &Lease,
        index: u32,
        result: Option<&serde_json::Value>,
    ) -> Result<(Option<Recorded>, Vec<ChunkRow>), DbError> {
        let version = job.version as i32;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        chunks::lock_version(&tx, job.asset_id, version).await?;
        let recorded = match result {
            Some(result) => {
                Some(chunks::record_done(&tx, job.asset_id, version, index, lease, result).await?)
            }
            None => None,
        };
        let rows = chunks::list(&tx, job.asset_id, version).await?;
        if recorded == Some(Recorded::Now) && rows.iter().any(|row| !row.done) {
            self.extend_growing(job, &rows).await;
        }
        tx.commit().await?;
        Ok((recorded, rows))
    }

    /// Rewrites the growing media playlists of a version that plays while
    /// it is made, over the chunks done from chunk 0 on. Best-effort: a
    /// player meanwhile sees the playlists as they were.
    async fn extend_growing(&self, job: &TranscodeJob, rows: &[ChunkRow]) {
        if !self.config.progressive_publish {
            return;
        }
        let created = match assets::get(&self.pool, job.asset_id).await {
            Ok(Some(asset))
                if asset.published_version.is_none()
                    && asset.playable_version == Some(job.version as i32) =>
            {
                asset.created_at
            }
            _ => return,
        };
        let manifests = chunked::done_prefix(rows).and_then(|prefix| {
            chunked::growing_manifests(
                &prefix,
                progressive::declared_target_duration(self.config.segment_duration),
                Some(created),
            )
        });
        let manifests = match manifests {
            Ok(Some(manifests)) => manifests,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(asset_id = %job.asset_id, error = %error, "cannot extend the growing playlists");
                return;
            }
        };
        let mut puts = Vec::new();
        for (rendition, text) in manifests.playlists {
            let Ok(name) = RenditionName::new(rendition) else {
                continue;
            };
            puts.push((
                ObjectKey::media_playlist(job.asset_id, job.version, &name),
                text,
            ));
        }
        // The MPD after the playlists, as while chunk 0 grew.
        if let Some(mpd) = manifests.mpd {
            puts.push((ObjectKey::dash_manifest(job.asset_id, job.version), mpd));
        }
        for (key, text) in puts {
            if let Err(error) = self.store.put_bytes(&key, Bytes::from(text)).await {
                tracing::warn!(key = %key, error = %error, "cannot extend a growing manifest");
                return;
            }
        }
    }

    /// Every chunk is done: their results joined into the version's
    /// renditions and published as one transcode's would be. Chunks that
    /// do not join send the version back to be transcoded as one job.
    async fn assemble(
        &self,
        job: &TranscodeJob,
        ctx: &JobContext,
        rows: &[ChunkRow],
    ) -> Result<Outcome, TranscodeError> {
        let results = chunked::done_prefix(rows).map_err(TranscodeError::Internal)?;
        let asset = assets::get(&self.pool, job.asset_id)
            .await
            .map_err(|e| TranscodeError::internal("loading the asset", e))?;
        let played = asset.as_ref().is_some_and(|asset| {
            asset.published_version.is_none() && asset.playable_version == Some(job.version as i32)
        });
        let mode = if self.config.progressive_publish && played {
            progressive::Mode::Resumed
        } else {
            progressive::Mode::Off
        };
        match chunked::join(&results) {
            Ok(summary) => {
                tracing::info!(asset_id = %job.asset_id, version = job.version, chunks = rows.len(),
                    "every chunk done; publishing");
                let growing = progressive::Progressive::new(mode, self.config.segment_duration);
                let source_size = self.source_size(job).await?;
                // The join's own steps: its encode happened in other jobs.
                let milestones = Milestones::new();
                self.publish(job, summary, &growing, ctx, source_size, &milestones)
                    .await?;
                Ok(Outcome::Done)
            }
            Err(error) => {
                tracing::warn!(asset_id = %job.asset_id, version = job.version, error = %error,
                    "the chunks do not join; transcoding the version as one job");
                Ok(Outcome::Whole(mode))
            }
        }
    }
}
