//! The job runner: one claim loop per worker process, up to
//! `queue.concurrency` jobs at once.
//!
//! Per job: the handler runs with a child cancellation token while a
//! heartbeat renews the lease. If a heartbeat finds the lease gone (expired
//! and taken over, or the job cancelled), the handler is cancelled and its
//! result discarded. On shutdown the loop stops claiming, waits up to
//! `queue.shutdown_grace` for running jobs, then cancels them and releases
//! their leases so another worker picks them up at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_platform::queue::{ClaimedJob, FailOutcome, JobNotifier, Lease, Queue};

use crate::metrics::{JobOutcome, WorkerMetrics};
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How a job handler failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (storage or database unavailable, ...).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (bad input, unsupported media); the message is
    /// meant for the creator or operator.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    /// Whether the queue should retry the job.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// What a handler gets to run one job.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The claim (job id and fencing token).
    pub lease: Lease,
    /// Handler input.
    pub payload: serde_json::Value,
    /// 1-based attempt number.
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// Fires when the job must stop: lease lost, cancelled, or shutdown.
    pub cancel: CancellationToken,
    /// How long a database outage is waited out (`queue.outage_grace`):
    /// handlers retry their database writes this long before failing.
    pub outage_grace: Duration,
    /// When the job was enqueued (earlier attempts included), as the
    /// instant this attempt would have started had it been enqueued now.
    pub enqueued: Instant,
}

/// When this process last failed to reach the database. A lease that
/// expired while the database was unreachable says nothing about its
/// holder (it could not renew either), so leases are reaped only once the
/// database has answered for a whole lease since.
#[derive(Default)]
struct DbTrouble {
    since_start_ms: std::sync::atomic::AtomicU64,
    started: std::sync::OnceLock<Instant>,
}

impl DbTrouble {
    fn base(&self) -> Instant {
        *self.started.get_or_init(Instant::now)
    }

    /// Records a failed database call now.
    fn note(&self) {
        let ms = self.base().elapsed().as_millis() as u64 + 1;
        self.since_start_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// No failure recorded within the last `span`.
    fn quiet_for(&self, span: Duration) -> bool {
        let last = self
            .since_start_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        last == 0 || self.base().elapsed() >= Duration::from_millis(last) + span
    }
}

/// Retries `call` while it fails (the database is unreachable), for up to
/// `grace`, recording each failure in `trouble`.
async fn through_outage<T, E, F, Fut>(grace: Duration, trouble: &DbTrouble, call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let result = cascade_platform::outage::retry(
        grace,
        None,
        |_| true,
        |error, retry_in| {
            trouble.note();
            tracing::warn!(error = %error, retry_in = ?retry_in, "database unavailable; retrying");
        },
        call,
    )
    .await;
    if result.is_err() {
        trouble.note();
    }
    result
}

/// Runs jobs of one kind. Work must be idempotent: a job may run more than
/// once (at-least-once delivery), and each run must leave one correct result.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one job to completion or failure.
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>>;

    /// Told once a job of this kind is out of attempts (`dead`): what it
    /// was working on can be marked failed for whoever waits on it. Not
    /// called for permanent failures, which the handler reported itself.
    fn gave_up(&self, job: GaveUp) -> BoxFuture<'static, ()> {
        let _ = job;
        Box::pin(async {})
    }
}

/// A job given up after its last attempt.
#[derive(Debug, Clone)]
pub struct GaveUp {
    /// Handler input.
    pub payload: serde_json::Value,
    /// Attempts spent.
    pub attempts: i32,
    /// Why the last attempt ended.
    pub cause: GaveUpCause,
}

/// How a given-up job's last attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUpCause {
    /// Its worker stopped heartbeating (crashed, was killed, or hung).
    LeaseExpired,
    /// The handler failed (or panicked) with this message.
    Failed(String),
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `kind`.
    pub fn register(mut self, kind: &str, handler: impl JobHandler) -> Self {
        self.handlers.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }
}

/// Most completions written by one statement.
const MAX_COMPLETION_BATCH: usize = 512;

type CompletionRequest = (Lease, tokio::sync::oneshot::Sender<Result<bool, String>>);

/// Writes completions in batches: whatever has queued up while the previous
/// statement ran goes in the next one. At low load a batch is one job, so
/// latency is that of a single update; under load the database sees one
/// statement (and one commit) per batch instead of one per job.
#[derive(Clone)]
struct Completer {
    requests: tokio::sync::mpsc::Sender<CompletionRequest>,
}

impl Completer {
    fn start(queue: Queue) -> Self {
        let (requests, mut receiver) =
            tokio::sync::mpsc::channel::<CompletionRequest>(MAX_COMPLETION_BATCH * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_COMPLETION_BATCH);
            while receiver.recv_many(&mut batch, MAX_COMPLETION_BATCH).await > 0 {
                let leases: Vec<Lease> = batch.iter().map(|(lease, _)| *lease).collect();
                match queue.complete_many(&leases).await {
                    Ok(done) => {
                        for (lease, reply) in batch.drain(..) {
                            let _ = reply.send(Ok(done.contains(&lease.job_id)));
                        }
                    }
                    Err(error) => {
                        let message = error.to_string();
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(message.clone()));
                        }
                    }
                }
            }
        });
        Self { requests }
    }

    /// `Ok(false)`: the lease had been lost.
    async fn complete(&self, lease: Lease) -> Result<bool, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send((lease, reply))
            .await
            .map_err(|_| "completion writer stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "completion writer stopped".to_owned())?
    }
}

/// The claim loop of one worker process.
pub struct Runner {
    queue: Queue,
    handlers: HandlerRegistry,
    notifier: JobNotifier,
    owner: String,
    trouble: Arc<DbTrouble>,
    metrics: WorkerMetrics,
}

/// How a job's run ended, as seen by the runner.
enum RunEnd {
    Finished(Result<(), JobError>),
    LeaseLost,
    Shutdown,
}

impl Runner {
    /// A runner claiming jobs of the registered kinds as `owner` (shown to
    /// operators; the host name and pid make a good one).
    pub fn new(
        queue: Queue,
        handlers: HandlerRegistry,
        notifier: JobNotifier,
        owner: impl Into<String>,
    ) -> Self {
        Self {
            queue,
            handlers,
            notifier,
            owner: owner.into(),
            trouble: Arc::default(),
            metrics: WorkerMetrics::default(),
        }
    }

    /// Records job metrics into `metrics` (shared with the handlers and
    /// registered by `cascade serve`).
    pub fn with_metrics(mut self, metrics: WorkerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` fires, then drains as described in the module docs.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.queue.config().clone();
        let kinds = self.handlers.kinds();
        let concurrency = config.concurrency;
        // Cancelled only after the grace period, to stop jobs still running.
        let hard_stop = CancellationToken::new();
        let mut running: JoinSet<()> = JoinSet::new();
        let mut last_reap = Instant::now() - config.reap_interval;
        let mut db_backoff = Duration::from_millis(100);
        let completer = Completer::start(self.queue.clone());
        tracing::info!(owner = %self.owner, kinds = ?kinds, concurrency, "worker started");

        // Whether runnable jobs may be waiting: set by a notification, the
        // fallback poll, or a claim that filled every free slot; cleared by a
        // claim that found fewer jobs than it asked for. A finished job alone
        // is no reason to query the queue.
        let mut may_have_work = true;
        while !shutdown.is_cancelled() {
            if last_reap.elapsed() >= config.reap_interval {
                last_reap = Instant::now();
                if let Err(error) = self.reap_once().await {
                    self.trouble.note();
                    tracing::warn!(error = %error, "cannot reap expired leases");
                }
            }
            let free = concurrency.saturating_sub(running.len());
            if free > 0 && may_have_work {
                match self.queue.claim(&self.owner, &kinds, free as i64).await {
                    Ok(jobs) => {
                        db_backoff = Duration::from_millis(100);
                        may_have_work = jobs.len() == free;
                        for job in jobs {
                            self.spawn_job(
                                &mut running,
                                job,
                                hard_stop.child_token(),
                                completer.clone(),
                            );
                        }
                        if may_have_work {
                            // Every slot is busy; the next finished job makes room.
                            continue;
                        }
                    }
                    Err(error) => {
                        self.trouble.note();
                        tracing::warn!(error = %error, "cannot claim jobs; backing off");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(db_backoff) => {}
                        }
                        db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.notifier.notified(), if running.len() < concurrency => may_have_work = true,
                Some(_) = running.join_next(), if !running.is_empty() => {
                    // Reap every finished job so the next claim takes a batch.
                    while running.try_join_next().is_some() {}
                }
                _ = tokio::time::sleep(config.poll_interval) => may_have_work = true,
            }
        }

        if !running.is_empty() {
            tracing::info!(jobs = running.len(), grace = ?config.shutdown_grace, "shutting down: waiting for running jobs");
            let drained = tokio::time::timeout(config.shutdown_grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    jobs = running.len(),
                    "grace period over: stopping jobs and releasing their leases"
                );
                hard_stop.cancel();
                while running.join_next().await.is_some() {}
            }
        }
        tracing::info!(owner = %self.owner, "worker stopped");
    }

    /// Reclaims this runner's kinds of jobs whose lease expired, and tells
    /// their handlers about those given up. Returns how many were reclaimed.
    /// Nothing is reaped until the database has been reachable from here
    /// for a whole lease (their holders could not renew while it was not).
    pub async fn reap_once(&self) -> Result<usize, cascade_platform::queue::QueueError> {
        if !self.trouble.quiet_for(self.queue.config().lease) {
            return Ok(0);
        }
        let reaped = self.queue.reap_expired(&self.handlers.kinds()).await?;
        for job in &reaped {
            let outcome = if job.dead {
                JobOutcome::Dead
            } else {
                JobOutcome::Reaped
            };
            self.metrics.finished(&job.kind, outcome, None);
        }
        for job in reaped.iter().filter(|job| job.dead) {
            tracing::error!(job_id = %job.id, kind = %job.kind, attempts = job.attempts, "job given up: its worker stopped heartbeating on every attempt");
            if let Some(handler) = self.handlers.handlers.get(&job.kind) {
                handler
                    .gave_up(GaveUp {
                        payload: job.payload.clone(),
                        attempts: job.attempts,
                        cause: GaveUpCause::LeaseExpired,
                    })
                    .await;
            }
        }
        Ok(reaped.len())
    }

    fn spawn_job(
        &self,
        running: &mut JoinSet<()>,
        job: ClaimedJob,
        stop: CancellationToken,
        completer: Completer,
    ) {
        let Some(handler) = self.handlers.handlers.get(&job.kind).cloned() else {
            // claim() only returns registered kinds; fail loudly if not.
            let queue = self.queue.clone();
            running.spawn(async move {
                let message = format!("no handler for job kind {:?}", job.kind);
                let _ = queue.fail(&job.lease, &message, false).await;
            });
            return;
        };
        let queue = self.queue.clone();
        let heartbeat_every = queue.config().heartbeat;
        let outage_grace = queue.config().outage_grace;
        let trouble = self.trouble.clone();
        let metrics = self.metrics.clone();
        let kind = job.kind.clone();
        let running_guard = metrics.claimed(&kind, job.waited);
        let enqueued = Instant::now()
            .checked_sub(job.since_created)
            .unwrap_or_else(Instant::now);
        let span = tracing::info_span!(
            "job",
            job_id = %job.lease.job_id,
            kind = %job.kind,
            attempt = job.attempt,
            queue_wait_ms = job.waited.as_millis() as u64,
        );
        // The trace of whatever enqueued the job (an API request, the job
        // before it) continues here.
        cascade_platform::tracecontext::set_parent(&span, job.trace_context.as_deref());
        let job_future = async move {
            let lease = job.lease;
            let job_cancel = stop.child_token();
            let payload_copy = job.payload.clone();
            let ctx = JobContext {
                lease,
                payload: job.payload,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                cancel: job_cancel.clone(),
                outage_grace,
                enqueued,
            };
            let started = Instant::now();
            let mut work = tokio::spawn(handler.run(ctx).in_current_span());
            let mut heartbeat = tokio::time::interval_at(
                tokio::time::Instant::now() + heartbeat_every,
                heartbeat_every,
            );
            let end = loop {
                tokio::select! {
                    // Shutdown first: the handler's token is a child of `stop`,
                    // so its "cancelled" result must not count as a failure.
                    biased;
                    _ = stop.cancelled() => break RunEnd::Shutdown,
                    result = &mut work => {
                        break RunEnd::Finished(result.unwrap_or_else(|join_error| {
                            Err(JobError::Retryable(format!("job handler panicked: {join_error}")))
                        }));
                    }
                    _ = heartbeat.tick() => match queue.heartbeat(&lease).await {
                        Ok(true) => {}
                        Ok(false) => break RunEnd::LeaseLost,
                        // The job keeps going through a database outage; the
                        // lease is renewed once the database is back (nobody
                        // reaps it before: see `DbTrouble`).
                        Err(error) => {
                            trouble.note();
                            tracing::warn!(error = %error, "heartbeat failed");
                        }
                    },
                }
            };
            let ran = started.elapsed();
            let elapsed_ms = ran.as_millis() as u64;
            let outcome = match end {
                RunEnd::Finished(Ok(())) => {
                    match through_outage(outage_grace, &trouble, || completer.complete(lease)).await
                    {
                        Ok(true) => {
                            tracing::info!(elapsed_ms, "job succeeded");
                            JobOutcome::Succeeded
                        }
                        Ok(false) => {
                            let _ = queue.stopped(&lease).await;
                            tracing::warn!(
                                "job finished but its lease was lost; result left to the new holder"
                            );
                            JobOutcome::LeaseLost
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "cannot record success; the lease will expire and the job rerun");
                            JobOutcome::LeaseLost
                        }
                    }
                }
                RunEnd::Finished(Err(job_error)) => {
                    let message = job_error.to_string();
                    let outcome = through_outage(outage_grace, &trouble, || {
                        queue.fail(&lease, &message, job_error.is_retryable())
                    })
                    .await;
                    if let Ok(FailOutcome::Dead) = outcome {
                        handler
                            .gave_up(GaveUp {
                                payload: payload_copy,
                                attempts: job.attempt,
                                cause: GaveUpCause::Failed(message.clone()),
                            })
                            .await;
                    }
                    match outcome {
                        Ok(FailOutcome::Retrying(at)) => {
                            tracing::warn!(error = %message, retry_at = %at, "job failed; will retry");
                            JobOutcome::Retrying
                        }
                        Ok(FailOutcome::Dead) => {
                            tracing::error!(error = %message, "job failed; out of attempts");
                            JobOutcome::Dead
                        }
                        Ok(FailOutcome::Failed) => {
                            tracing::warn!(error = %message, "job failed permanently");
                            JobOutcome::Failed
                        }
                        Ok(FailOutcome::LeaseLost) => {
                            let _ = queue.stopped(&lease).await;
                            tracing::warn!(error = %message, "job failed after its lease was lost");
                            JobOutcome::LeaseLost
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "cannot record failure; the lease will expire");
                            JobOutcome::LeaseLost
                        }
                    }
                }
                RunEnd::LeaseLost => {
                    job_cancel.cancel();
                    let _ = work.await;
                    // A cancelled job's lease ends here: nothing of it runs now.
                    if let Err(error) = queue.stopped(&lease).await {
                        tracing::warn!(error = %error, "cannot record that the cancelled job stopped; its lease will expire");
                    }
                    tracing::warn!("lease lost (cancelled or expired); job stopped");
                    JobOutcome::LeaseLost
                }
                RunEnd::Shutdown => {
                    job_cancel.cancel();
                    let _ = work.await;
                    match queue.release(&lease).await {
                        Ok(_) => tracing::info!("job stopped at shutdown; lease released"),
                        Err(error) => {
                            tracing::warn!(error = %error, "cannot release lease; it will expire")
                        }
                    }
                    JobOutcome::Released
                }
            };
            metrics.finished(&kind, outcome, Some(ran));
            drop(running_guard);
        };
        running.spawn(job_future.instrument(span));
    }
}
