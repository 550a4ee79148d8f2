//! The Postgres job queue: at-least-once delivery with leases.
//!
//! - [`enqueue`] runs in the caller's transaction, so a row and the job that
//!   processes it commit together; an idempotency key refuses duplicates.
//! - [`Queue::claim`] takes runnable jobs with `FOR UPDATE SKIP LOCKED`, by
//!   priority then age, and gives each claim a fresh lease id (a fencing
//!   token): heartbeat, complete and fail only act while the caller still
//!   holds that lease, so a worker that lost its lease can never overwrite the
//!   result of the one that took over.
//! - Expired leases are returned to the queue by [`Queue::reap_expired`].
//! - After an enqueue commits, [`Queue::wake`] sends `NOTIFY` on [`CHANNEL`]
//!   and [`JobNotifier`] LISTENs, so idle workers wake at once instead of
//!   polling. The NOTIFY is deliberately not part of the enqueuing
//!   transaction: Postgres serialises the commits of notifying transactions
//!   on one global lock, which capped enqueues near 600/s here. Instead each
//!   process sends the first wake at once and coalesces the rest into at
//!   most one NOTIFY per [`WAKE_COALESCE`]. A process that dies between
//!   commit and wake leaves its job to the workers' fallback poll.

use std::sync::Arc;
use std::time::Duration;

use cascade_schemas::{JobId, JobState};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;

use crate::config::QueueConfig;
use crate::db::DbError;

/// The LISTEN/NOTIFY channel; the payload is the job kind.
pub const CHANNEL: &str = "cascade_jobs";

/// Wakes requested within this window after a NOTIFY go out together.
pub const WAKE_COALESCE: Duration = Duration::from_millis(5);

/// Queue errors.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Postgres failed or was unreachable.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The job does not exist.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job is in a state that does not allow the operation.
    #[error("job {id} is {state}: {action} is not possible")]
    InvalidState {
        /// The job.
        id: JobId,
        /// Its current state.
        state: JobState,
        /// What was attempted.
        action: &'static str,
    },
}

impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<deadpool_postgres::PoolError> for QueueError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::Unavailable(e))
    }
}

impl QueueError {
    /// As a database error, for model functions that enqueue inside their
    /// own transaction (anything but a database failure is a bug there).
    pub fn into_db(self) -> DbError {
        match self {
            QueueError::Db(db) => db,
            other => DbError::Build(other.to_string()),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Which handler runs it.
    pub kind: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Higher runs first. Default 0.
    pub priority: i16,
    /// Not before this time. Default now.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before `dead`. Default from config.
    pub max_attempts: Option<i32>,
    /// At most one job per (kind, key), whatever its state.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job of `kind` with `payload` and defaults for the rest.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: None,
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the attempt limit.
    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job was inserted.
    Created(JobId),
    /// A job with the same kind and idempotency key exists; nothing was inserted.
    Duplicate(JobId),
}

impl Enqueued {
    /// The job's id, new or existing.
    pub fn id(&self) -> JobId {
        match self {
            Self::Created(id) | Self::Duplicate(id) => *id,
        }
    }
}

/// Inserts a job using `client`, which may be the caller's transaction: the
/// job becomes visible only when it commits. Call [`Queue::wake`] with the
/// kind after the commit so idle workers start it at once.
pub async fn enqueue(
    client: &impl GenericClient,
    job: &NewJob,
    default_max_attempts: i32,
) -> Result<Enqueued, QueueError> {
    let max_attempts = job.max_attempts.unwrap_or(default_max_attempts).max(1);
    let statement = client
        .prepare_cached(
            "INSERT INTO jobs (kind, payload, priority, run_at, max_attempts, idempotency_key, trace_context)
             VALUES ($1, $2, $3, COALESCE($4, now()), $5, $6, $7)
             ON CONFLICT (kind, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &job.kind,
                &job.payload,
                &job.priority,
                &job.run_at,
                &max_attempts,
                &job.idempotency_key,
                // The enqueuer's trace, continued by the worker.
                &crate::tracecontext::current_traceparent(),
            ],
        )
        .await?;
    if let Some(row) = row {
        return Ok(Enqueued::Created(JobId(row.get(0))));
    }
    // ON CONFLICT DO NOTHING returned nothing: the key is taken.
    let existing = client
        .query_one(
            "SELECT id FROM jobs WHERE kind = $1 AND idempotency_key = $2",
            &[&job.kind, &job.idempotency_key],
        )
        .await?;
    Ok(Enqueued::Duplicate(JobId(existing.get(0))))
}

/// [`enqueue`] in the caller's transaction, and a wake-up of the workers
/// of the job's kind delivered when it commits (no [`Queue::wake`] after).
pub async fn enqueue_and_wake(
    client: &impl GenericClient,
    job: &NewJob,
    default_max_attempts: i32,
) -> Result<(), DbError> {
    enqueue(client, job, default_max_attempts)
        .await
        .map_err(QueueError::into_db)?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &job.kind])
        .await?;
    Ok(())
}

/// The proof that a worker holds a job: its id and the lease id of this claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// Fencing token of this claim.
    pub lease_id: uuid::Uuid,
}

/// A job whose lease expired, as [`Queue::reap_expired`] left it.
#[derive(Debug, Clone)]
pub struct Reaped {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Out of attempts: given up (`dead`), not queued again.
    pub dead: bool,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Attempts spent, the reclaimed one included.
    pub attempts: i32,
    /// When it may run again (when queued).
    pub run_at: chrono::DateTime<chrono::Utc>,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The lease to present when reporting.
    pub lease: Lease,
    /// Handler name.
    pub kind: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// This is attempt number `attempt` (1-based).
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// Time since the job was enqueued (earlier attempts included).
    pub since_created: Duration,
    /// Time this attempt waited runnable in the queue (since `run_at`).
    pub waited: Duration,
    /// The W3C traceparent of the enqueuer's span, if it was traced.
    pub trace_context: Option<String>,
}

/// How a failure report ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back in the queue, to run at this time.
    Retrying(DateTime<Utc>),
    /// Out of attempts: now `dead`.
    Dead,
    /// Failed permanently: now `failed`.
    Failed,
    /// The lease had been lost (expired and reclaimed, or cancelled): nothing changed.
    LeaseLost,
}

/// A job as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Handler name.
    pub kind: String,
    /// Current state.
    pub state: JobState,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Priority.
    pub priority: i16,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Worker holding the lease, while running.
    pub lease_owner: Option<String>,
    /// When the lease runs out, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Earliest time to run (next retry time while backing off).
    pub run_at: DateTime<Utc>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

const RECORD_COLUMNS: &str =
    "id, kind, state, payload, priority, attempts, max_attempts, idempotency_key, \
     lease_owner, lease_expires_at, run_at, last_error, created_at, started_at, finished_at";

impl JobRecord {
    fn from_row(row: &Row) -> Self {
        let state: String = row.get("state");
        Self {
            id: JobId(row.get("id")),
            kind: row.get("kind"),
            // The CHECK constraint limits state to known values.
            state: state.parse().unwrap_or(JobState::Failed),
            payload: row.get("payload"),
            priority: row.get("priority"),
            attempts: row.get("attempts"),
            max_attempts: row.get("max_attempts"),
            idempotency_key: row.get("idempotency_key"),
            lease_owner: row.get("lease_owner"),
            lease_expires_at: row.get("lease_expires_at"),
            run_at: row.get("run_at"),
            last_error: row.get("last_error"),
            created_at: row.get("created_at"),
            started_at: row.get("started_at"),
            finished_at: row.get("finished_at"),
        }
    }
}

/// Queue depth of one kind (operators, autoscalers).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindDepth {
    /// Job kind.
    pub kind: String,
    /// Runnable now.
    pub ready: i64,
    /// Waiting for a future `run_at` (backing off or scheduled).
    pub scheduled: i64,
    /// Held by a worker.
    pub running: i64,
    /// Seconds the oldest runnable job has waited; 0 when none.
    pub oldest_ready_age_seconds: f64,
}

/// Filter for [`Queue::list`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only ids below this (pagination, newest first).
    pub before: Option<JobId>,
    /// At most this many.
    pub limit: i64,
}

/// The queue operations workers and operators use.
#[derive(Clone)]
pub struct Queue {
    pool: Pool,
    config: Arc<QueueConfig>,
    waker: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<String>>>,
}

impl Queue {
    /// A queue over `pool` with `config`'s timings.
    pub fn new(pool: Pool, config: QueueConfig) -> Self {
        Self {
            pool,
            config: Arc::new(config),
            waker: Arc::default(),
        }
    }

    /// Tells idle workers that jobs of `kind` are ready (after the enqueuing
    /// transaction committed). Never blocks; wakes are coalesced per process.
    pub fn wake(&self, kind: &str) {
        let sender = self.waker.get_or_init(|| {
            let (sender, receiver) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(wake_loop(self.pool.clone(), receiver));
            sender
        });
        // A full channel already holds wakes that will go out shortly.
        let _ = sender.try_send(kind.to_owned());
    }

    /// The pool, for callers that enqueue inside their own transactions.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The timings in force.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Enqueues outside any caller transaction.
    pub async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, QueueError> {
        let client = self.pool.get().await?;
        let enqueued = enqueue(&client, job, self.config.max_attempts).await?;
        if matches!(enqueued, Enqueued::Created(_)) {
            self.wake(&job.kind);
        }
        Ok(enqueued)
    }

    /// Claims up to `limit` runnable jobs of `kinds` for `owner`.
    pub async fn claim(
        &self,
        owner: &str,
        kinds: &[String],
        limit: i64,
    ) -> Result<Vec<ClaimedJob>, QueueError> {
        let client = self.pool.get().await?;
        let lease = interval(self.config.lease);
        let rows = client
            .query(
                &client.prepare_cached("WITH next AS (
                    SELECT id FROM jobs
                    WHERE state = 'queued' AND run_at <= now() AND kind = ANY($1)
                    ORDER BY priority DESC, run_at, id
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED
                 )
                 UPDATE jobs j
                 SET state = 'running', attempts = j.attempts + 1, lease_owner = $3,
                     lease_id = gen_random_uuid(), lease_expires_at = clock_timestamp() + $4::float8 * interval '1 millisecond',
                     started_at = clock_timestamp(), updated_at = clock_timestamp()
                 FROM next WHERE j.id = next.id
                 RETURNING j.id, j.lease_id, j.kind, j.payload, j.attempts, j.max_attempts,
                           EXTRACT(EPOCH FROM clock_timestamp() - j.created_at)::float8,
                           EXTRACT(EPOCH FROM clock_timestamp() - j.run_at)::float8,
                           j.trace_context").await?,
                &[&kinds, &limit, &owner, &lease],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ClaimedJob {
                lease: Lease {
                    job_id: JobId(row.get(0)),
                    lease_id: row.get(1),
                },
                kind: row.get(2),
                payload: row.get(3),
                attempt: row.get(4),
                max_attempts: row.get(5),
                since_created: Duration::from_secs_f64(row.get::<_, f64>(6).max(0.0)),
                waited: Duration::from_secs_f64(row.get::<_, f64>(7).max(0.0)),
                trace_context: row.get(8),
            })
            .collect())
    }

    /// Extends the lease. `false` means the lease is gone (expired and
    /// reclaimed, or the job was cancelled): the worker must stop the job.
    pub async fn heartbeat(&self, lease: &Lease) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                &client.prepare_cached("UPDATE jobs SET lease_expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond', updated_at = clock_timestamp()
                 WHERE id = $1 AND lease_id = $2 AND state = 'running'").await?,
                &[&lease.job_id.0, &lease.lease_id, &interval(self.config.lease)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Tells the queue this worker no longer runs a job that was cancelled
    /// under its lease: the lease ends now rather than at its expiry, so
    /// what waits for the job to stop writing (an asset's purge) goes on.
    pub async fn stopped(&self, lease: &Lease) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE jobs SET lease_expires_at = NULL, updated_at = clock_timestamp()
                 WHERE id = $1 AND lease_id = $2 AND state = 'cancelled'",
                &[&lease.job_id.0, &lease.lease_id],
            )
            .await?;
        Ok(())
    }

    /// Marks the job succeeded. `false` means the lease was lost and another
    /// run owns the job now (the work is idempotent, so that is harmless).
    pub async fn complete(&self, lease: &Lease) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE jobs SET state = 'succeeded', finished_at = now(), updated_at = now(),
                     lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL, last_error = NULL
                 WHERE id = $1 AND lease_id = $2 AND state = 'running'",
                &[&lease.job_id.0, &lease.lease_id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks many jobs succeeded in one statement (the runner batches
    /// completions under load). Returns the ids whose lease was still held.
    pub async fn complete_many(&self, leases: &[Lease]) -> Result<Vec<JobId>, QueueError> {
        let ids: Vec<i64> = leases.iter().map(|l| l.job_id.0).collect();
        let lease_ids: Vec<uuid::Uuid> = leases.iter().map(|l| l.lease_id).collect();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached("UPDATE jobs j SET state = 'succeeded', finished_at = now(), updated_at = now(),
                     lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL, last_error = NULL
                 FROM unnest($1::bigint[], $2::uuid[]) AS done(id, lease_id)
                 WHERE j.id = done.id AND j.lease_id = done.lease_id AND j.state = 'running'
                 RETURNING j.id").await?,
                &[&ids, &lease_ids],
            )
            .await?;
        Ok(rows.iter().map(|r| JobId(r.get(0))).collect())
    }

    /// Reports a failure. Retryable failures go back to the queue with
    /// exponential backoff until the attempts run out (`dead`); permanent ones
    /// end `failed` at once. The message is kept as `last_error`.
    pub async fn fail(
        &self,
        lease: &Lease,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        let client = self.pool.get().await?;
        let row = if retryable {
            client
                .query_opt(
                    "UPDATE jobs SET
                         state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                         -- retry_base * 2^(attempts-1), capped, with equal jitter so
                         -- jobs that failed together do not retry together.
                         run_at = CASE WHEN attempts >= max_attempts THEN run_at
                                       ELSE now() + make_interval(secs => LEAST(
                                           $4::float8 * power(2, LEAST(attempts - 1, 30)), $5::float8)
                                           * (0.5 + random() * 0.5)) END,
                         finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
                         last_error = $3, updated_at = now(),
                         lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL
                     WHERE id = $1 AND lease_id = $2 AND state = 'running'
                     RETURNING state, run_at",
                    &[
                        &lease.job_id.0,
                        &lease.lease_id,
                        &error,
                        &self.config.retry_base.as_secs_f64(),
                        &self.config.retry_max.as_secs_f64(),
                    ],
                )
                .await?
        } else {
            client
                .query_opt(
                    "UPDATE jobs SET state = 'failed', finished_at = now(), last_error = $3, updated_at = now(),
                         lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL
                     WHERE id = $1 AND lease_id = $2 AND state = 'running'
                     RETURNING state, run_at",
                    &[&lease.job_id.0, &lease.lease_id, &error],
                )
                .await?
        };
        Ok(match row {
            None => FailOutcome::LeaseLost,
            Some(row) => match row.get::<_, &str>(0) {
                "queued" => FailOutcome::Retrying(row.get(1)),
                "dead" => FailOutcome::Dead,
                _ => FailOutcome::Failed,
            },
        })
    }

    /// Gives a job back without counting the attempt (graceful shutdown).
    pub async fn release(&self, lease: &Lease) -> Result<bool, QueueError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE jobs SET state = 'queued', attempts = GREATEST(attempts - 1, 0), run_at = now(),
                     updated_at = now(), lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND lease_id = $2 AND state = 'running'",
                &[&lease.job_id.0, &lease.lease_id],
            )
            .await?;
        if n == 1 {
            client
                .execute("SELECT pg_notify($1, 'released')", &[&CHANNEL])
                .await?;
        }
        Ok(n == 1)
    }

    /// Returns jobs of `kinds` whose lease expired (their worker died or
    /// hung) to the queue after the same backoff as a retryable failure, or
    /// to `dead` when that was their last attempt: a source that crashes
    /// or hangs every worker that takes it is retried slower and slower,
    /// then given up, instead of taking down worker after worker at once.
    /// Only runners of a kind reap it, so the one reaping can also act on a
    /// job given up ([`Reaped::dead`]).
    pub async fn reap_expired(&self, kinds: &[String]) -> Result<Vec<Reaped>, QueueError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "UPDATE jobs SET
                     state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                     finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
                     last_error = 'lease expired: the worker stopped heartbeating (crashed, killed or hung)',
                     run_at = CASE WHEN attempts >= max_attempts THEN run_at
                                   ELSE now() + make_interval(secs => LEAST(
                                       $2::float8 * power(2, LEAST(attempts - 1, 30)), $3::float8)
                                       * (0.5 + random() * 0.5)) END,
                     updated_at = now(),
                     lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL
                 WHERE id IN (
                     SELECT id FROM jobs
                     WHERE state = 'running' AND lease_expires_at < now() AND kind = ANY($1)
                     FOR UPDATE SKIP LOCKED
                 )
                 RETURNING id, kind, state, payload, attempts, run_at",
                &[
                    &kinds,
                    &self.config.retry_base.as_secs_f64(),
                    &self.config.retry_max.as_secs_f64(),
                ],
            )
            .await?;
        let reaped: Vec<Reaped> = rows
            .iter()
            .map(|row| Reaped {
                id: JobId(row.get(0)),
                kind: row.get(1),
                dead: row.get::<_, &str>(2) == "dead",
                payload: row.get(3),
                attempts: row.get(4),
                run_at: row.get(5),
            })
            .collect();
        for job in &reaped {
            tracing::warn!(
                job_id = job.id.0,
                kind = %job.kind,
                attempts = job.attempts,
                dead = job.dead,
                retry_at = %job.run_at,
                "reclaimed job with expired lease"
            );
        }
        Ok(reaped)
    }

    /// Cancels a queued or running job. A running job's worker notices at its
    /// next heartbeat and stops.
    pub async fn cancel(&self, id: JobId) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now(),
                     lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL
                 WHERE id = $1 AND state IN ('queued', 'running')",
                &[&id.0],
            )
            .await?;
        if n == 1 {
            return Ok(());
        }
        Err(self.state_error(&client, id, "cancel").await)
    }

    /// Puts a failed, dead or cancelled job back in the queue with a fresh
    /// set of attempts (operators).
    pub async fn retry(&self, id: JobId) -> Result<(), QueueError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL, updated_at = now()
                 WHERE id = $1 AND state IN ('failed', 'dead', 'cancelled')",
                &[&id.0],
            )
            .await?;
        if n == 1 {
            client
                .execute("SELECT pg_notify($1, 'retry')", &[&CHANNEL])
                .await?;
            return Ok(());
        }
        Err(self.state_error(&client, id, "retry").await)
    }

    async fn state_error(
        &self,
        client: &deadpool_postgres::Client,
        id: JobId,
        action: &'static str,
    ) -> QueueError {
        match client
            .query_opt("SELECT state FROM jobs WHERE id = $1", &[&id.0])
            .await
        {
            Ok(Some(row)) => QueueError::InvalidState {
                id,
                state: row.get::<_, &str>(0).parse().unwrap_or(JobState::Failed),
                action,
            },
            Ok(None) => QueueError::NotFound(id),
            Err(e) => e.into(),
        }
    }

    /// One job.
    pub async fn get(&self, id: JobId) -> Result<JobRecord, QueueError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = $1"),
                &[&id.0],
            )
            .await?
            .ok_or(QueueError::NotFound(id))?;
        Ok(JobRecord::from_row(&row))
    }

    /// Jobs, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let client = self.pool.get().await?;
        let state = filter.state.map(|s| s.as_str());
        let before = filter.before.map(|id| id.0);
        let rows = client
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM jobs
                     WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2)
                       AND ($3::bigint IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &state,
                    &filter.kind,
                    &before,
                    &filter.limit.clamp(1, 10_000),
                ],
            )
            .await?;
        Ok(rows.iter().map(JobRecord::from_row).collect())
    }

    /// Depth and oldest waiting age per kind, over queued and running jobs.
    pub async fn depth(&self) -> Result<Vec<KindDepth>, QueueError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT kind,
                        count(*) FILTER (WHERE state = 'queued' AND run_at <= now()),
                        count(*) FILTER (WHERE state = 'queued' AND run_at > now()),
                        count(*) FILTER (WHERE state = 'running'),
                        COALESCE(EXTRACT(EPOCH FROM now() - min(run_at)
                                 FILTER (WHERE state = 'queued' AND run_at <= now()))::float8, 0)
                 FROM jobs WHERE state IN ('queued', 'running')
                 GROUP BY kind ORDER BY kind",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KindDepth {
                kind: r.get(0),
                ready: r.get(1),
                scheduled: r.get(2),
                running: r.get(3),
                oldest_ready_age_seconds: r.get(4),
            })
            .collect())
    }

    /// Dead jobs (out of attempts, kept for an operator) per kind.
    pub async fn dead_counts(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT kind, count(*) FROM jobs WHERE state = 'dead' GROUP BY kind ORDER BY kind",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// A duration as float8 milliseconds, multiplied by `interval '1 millisecond'` in SQL.
fn interval(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends the NOTIFYs [`Queue::wake`] asks for: the first at once, then at
/// most one statement per [`WAKE_COALESCE`] carrying every kind asked for.
async fn wake_loop(pool: Pool, mut requests: tokio::sync::mpsc::Receiver<String>) {
    let mut kinds: Vec<String> = Vec::new();
    while requests.recv_many(&mut kinds, 256).await > 0 {
        kinds.sort();
        kinds.dedup();
        let sent = async {
            let client = pool.get().await?;
            client
                .execute(
                    "SELECT pg_notify($1, kind) FROM unnest($2::text[]) AS kind",
                    &[&CHANNEL, &kinds],
                )
                .await?;
            Ok::<(), QueueError>(())
        }
        .await;
        if let Err(error) = sent {
            // Workers still find the jobs at their next poll.
            tracing::warn!(error = %error, "cannot notify workers of new jobs");
        }
        kinds.clear();
        tokio::time::sleep(WAKE_COALESCE).await;
    }
}

/// Wakes idle workers when jobs are enqueued, through a dedicated LISTEN
/// connection. Reconnects with backoff when the connection drops and wakes
/// the workers after each reconnect, since notifications may have been missed.
#[derive(Clone)]
pub struct JobNotifier {
    wake: Arc<Notify>,
}

impl JobNotifier {
    /// Starts listening until `cancel` fires.
    pub fn start(pg: tokio_postgres::Config, cancel: CancellationToken) -> Self {
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        // Every notification, and every reconnect (some may have been
        // missed), wakes the workers to look for work.
        crate::listen::spawn(pg, CHANNEL, cancel, move |_| waker.notify_one());
        Self { wake }
    }

    /// Resolves at the next notification, or at once if one arrived since
    /// the last call (a stored permit), so none is lost between a claim
    /// that found nothing and the wait that follows it.
    pub async fn notified(&self) {
        self.wake.notified().await;
    }

    /// Wakes the waiter by hand (tests, local enqueues).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}
