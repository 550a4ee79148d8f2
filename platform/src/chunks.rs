//! Chunk rows of chunked transcodes (migration 0020): the pieces a
//! version's source is split into (`cascade_schemas::chunks::plan`), each
//! run as a `transcode` job of its own on any worker.
//!
//! The rules kept here:
//! - a plan is recorded once per version, with a job per chunk after the
//!   first, in one transaction (a retried first job finds its plan);
//! - a chunk is recorded done, with what it produced, only under its job's
//!   current lease ([`record_done`]), so a superseded attempt (a worker
//!   that stalled past its lease) never has its result joined;
//! - completions of one version are serialised ([`lock_version`]), so
//!   exactly one recorder is the first to see every chunk done, and
//!   growing playlists written under the lock only ever append.

use cascade_schemas::chunks::Chunk;
use cascade_schemas::jobs::TranscodeJob;
use cascade_schemas::{job_kind, AssetId};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::db::DbError;
use crate::queue::{self, Lease, NewJob};

/// Chunk jobs run before new transcodes: finishing a started video sooner
/// beats starting another.
pub const CHUNK_PRIORITY: i16 = 1;

/// A chunk as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    /// Which part of the source.
    pub chunk: Chunk,
    /// Whether its result is recorded.
    pub done: bool,
    /// Seconds of its media transcoded so far.
    pub done_seconds: f64,
    /// What it produced (the transcoder's record), once done.
    pub result: Option<serde_json::Value>,
    /// The worker whose result was recorded.
    pub done_by: Option<String>,
}

impl ChunkRow {
    fn from_row(row: &Row) -> Self {
        let index: i32 = row.get("chunk");
        let state: String = row.get("state");
        Self {
            chunk: Chunk {
                index: index.max(0) as u32,
                start: row.get("start_seconds"),
                end: row.get("end_seconds"),
            },
            done: state == "done",
            done_seconds: row.get("done_seconds"),
            result: row.get("result"),
            done_by: row.get("done_by"),
        }
    }
}

const COLUMNS: &str = "chunk, start_seconds, end_seconds, state, done_seconds, result, done_by";

/// The chunks of `version`, in order (none: it is not chunked).
pub async fn list(
    client: &impl GenericClient,
    asset: AssetId,
    version: i32,
) -> Result<Vec<ChunkRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM transcode_chunks WHERE asset_id = $1 AND version = $2 ORDER BY chunk"
            ),
            &[&asset.as_uuid(), &version],
        )
        .await?;
    Ok(rows.iter().map(ChunkRow::from_row).collect())
}

/// Records `chunks` as the plan of `job`'s version and queues a
/// `transcode` job for each chunk after the first (the caller runs chunk
/// 0), with `job`'s settings, in one transaction. Idempotent: a plan
/// already recorded is kept as it is and returned, whatever `chunks` says
/// now. The caller wakes the workers.
pub async fn plan(
    pool: &Pool,
    job: &TranscodeJob,
    chunks: &[Chunk],
    max_attempts: i32,
) -> Result<Vec<ChunkRow>, DbError> {
    let asset = job.asset_id;
    let version =
        i32::try_from(job.version).map_err(|e| DbError::Build(format!("version: {e}")))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    lock_version(&tx, asset, version).await?;
    let existing = list(&tx, asset, version).await?;
    if !existing.is_empty() {
        tx.commit().await?;
        return Ok(existing);
    }
    for chunk in chunks {
        tx.execute(
            "INSERT INTO transcode_chunks (asset_id, version, chunk, start_seconds, end_seconds)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &asset.as_uuid(),
                &version,
                &(chunk.index as i32),
                &chunk.start,
                &chunk.end,
            ],
        )
        .await?;
        if chunk.index == 0 {
            continue;
        }
        let job = job.chunk(chunk.index);
        let payload = serde_json::to_value(&job)
            .map_err(|e| DbError::Build(format!("encoding a chunk job: {e}")))?;
        let new = NewJob::new(job_kind::TRANSCODE, payload)
            .idempotency_key(job.idempotency_key())
            .priority(CHUNK_PRIORITY)
            .max_attempts(max_attempts);
        queue::enqueue(&tx, &new, max_attempts)
            .await
            .map_err(queue::QueueError::into_db)?;
    }
    let planned = list(&tx, asset, version).await?;
    tx.commit().await?;
    Ok(planned)
}

/// Serialises the completions of `version`'s chunks until the caller's
/// transaction ends.
pub async fn lock_version(
    client: &impl GenericClient,
    asset: AssetId,
    version: i32,
) -> Result<(), DbError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('transcode_chunks/' || $1::text), $2)",
            &[&asset.to_string(), &version],
        )
        .await?;
    Ok(())
}

/// What [`record_done`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The chunk is done now, with this result.
    Now,
    /// It was done before (a retry of a job whose result is recorded).
    Already,
    /// The job no longer holds its lease (or the chunk is not planned):
    /// its result is not recorded.
    LeaseLost,
}

/// Records chunk `index` of `version` done with `result`, only while
/// `lease` is the job's current claim. Call inside a transaction that
/// holds [`lock_version`].
pub async fn record_done(
    client: &impl GenericClient,
    asset: AssetId,
    version: i32,
    index: u32,
    lease: &Lease,
    result: &serde_json::Value,
) -> Result<Recorded, DbError> {
    let updated = client
        .execute(
            "UPDATE transcode_chunks
             SET state = 'done', result = $4::text::jsonb, done_at = now(),
                 done_by = (SELECT lease_owner FROM jobs WHERE id = $5),
                 done_seconds = COALESCE(end_seconds, GREATEST(done_seconds, start_seconds)) - start_seconds
             WHERE asset_id = $1 AND version = $2 AND chunk = $3 AND state = 'pending'
               AND EXISTS (SELECT 1 FROM jobs WHERE id = $5 AND lease_id = $6 AND state = 'running')",
            &[
                &asset.as_uuid(),
                &version,
                &(index as i32),
                &result.to_string(),
                &lease.job_id.0,
                &lease.lease_id,
            ],
        )
        .await?;
    if updated == 1 {
        return Ok(Recorded::Now);
    }
    let done = client
        .query_opt(
            "SELECT state = 'done' FROM transcode_chunks WHERE asset_id = $1 AND version = $2 AND chunk = $3",
            &[&asset.as_uuid(), &version, &(index as i32)],
        )
        .await?
        .is_some_and(|row| row.get::<_, bool>(0));
    Ok(if done {
        Recorded::Already
    } else {
        Recorded::LeaseLost
    })
}

/// Records that chunk `index` has transcoded `seconds` of its media, and
/// the asset's progress as the share of the whole that all its chunks
/// have done (best-effort display: the caller ignores failures).
pub async fn set_progress(
    pool: &Pool,
    asset: AssetId,
    version: i32,
    index: u32,
    seconds: f64,
) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE transcode_chunks SET done_seconds = GREATEST(done_seconds, $4)
             WHERE asset_id = $1 AND version = $2 AND chunk = $3 AND state = 'pending'",
            &[
                &asset.as_uuid(),
                &version,
                &(index as i32),
                &seconds.max(0.0),
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE assets SET progress = LEAST(99, 100 * (
                 SELECT sum(done_seconds) FROM transcode_chunks WHERE asset_id = $1 AND version = $2
             ) / duration_seconds), updated_at = now()
             WHERE id = $1 AND state = 'processing' AND source_version = $2 AND duration_seconds > 0",
            &[&asset.as_uuid(), &version],
        )
        .await?;
    Ok(())
}
