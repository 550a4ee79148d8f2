//! `cascade bench queue`: no-op jobs enqueued, claimed and completed by N
//! worker runners (each with its own LISTEN connection and claim loop, as
//! separate worker processes would have) against the configured Postgres.
//!
//! Two phases:
//! 1. drain: `--jobs` jobs are enqueued up front; the workers' completion
//!    rate is the queue's throughput;
//! 2. steady: producers enqueue one job per statement at `--rate` jobs/s
//!    while the workers run; enqueue-to-start latency is `started_at -
//!    created_at`, both from Postgres's clock.
//!
//! Jobs use a kind unique to the run and are deleted afterwards.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_platform::queue::{self, JobNotifier, NewJob};
use cascade_platform::{db, Config, Queue};
use cascade_workers::noop::NoopHandler;
use cascade_workers::{HandlerRegistry, Runner};
use clap::Args;
use tokio_util::sync::CancellationToken;

/// Target throughput on a 2-core machine (issue #2).
const TARGET_JOBS_PER_SEC: f64 = 2000.0;
/// Target p99 enqueue-to-start latency.
const TARGET_P99_MS: f64 = 50.0;

/// Arguments of `cascade bench queue`.
#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Jobs in the drain phase.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Worker runners (simulated worker processes).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Jobs each runner holds at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Offered load in the steady phase, jobs/s.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Length of the steady phase.
    #[arg(long, default_value = "10s", value_parser = humantime_parse)]
    duration: Duration,
    /// Producer tasks (connections) in the steady phase. More than a few per
    /// core only measures the machine's scheduler.
    #[arg(long, default_value_t = 8)]
    producers: usize,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

struct Workers {
    stop: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

fn start_workers(
    config: &Config,
    queue: &Queue,
    kind: &str,
    args: &QueueBenchArgs,
) -> anyhow::Result<Workers> {
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for n in 0..args.workers {
        let notifier = JobNotifier::start(db::pg_config(&config.database)?, stop.clone());
        let handlers = HandlerRegistry::new().register(kind, NoopHandler);
        let runner = Runner::new(
            queue.clone(),
            handlers,
            notifier,
            format!("bench-worker-{n}"),
        );
        handles.push(tokio::spawn(runner.run(stop.clone())));
    }
    Ok(Workers { stop, handles })
}

impl Workers {
    async fn stop(self) {
        self.stop.cancel();
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

async fn wait_all_succeeded(
    pool: &deadpool_postgres::Pool,
    kind: &str,
    expected: i64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let client = pool.get().await?;
        let done: i64 = client
            .query_one(
                "SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'succeeded'",
                &[&kind],
            )
            .await?
            .get(0);
        if done >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {expected} jobs finished within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark.
pub async fn run(args: QueueBenchArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    config.queue.concurrency = args.concurrency.max(1);
    // The fallback poll only matters when a notification is lost.
    config.queue.poll_interval = Duration::from_millis(500);
    config.database.max_connections = config
        .database
        .max_connections
        .max(args.workers * 2 + args.producers + 4);
    let pool = db::pool(&config.database)?;
    db::migrate(&pool).await.context("migrating the database")?;
    let queue = Queue::new(pool.clone(), config.queue.clone());
    let kind = format!("bench-{}", uuid::Uuid::new_v4().simple());
    println!(
        "bench queue: {} workers x {} concurrent, {} jobs to drain, then {} jobs/s for {:?}",
        args.workers, args.concurrency, args.jobs, args.rate, args.duration
    );

    // Phase 1: drain a full queue.
    {
        let client = pool.get().await?;
        let n = i64::try_from(args.jobs)?;
        client
            .execute(
                "INSERT INTO jobs (kind, payload) SELECT $1, '{}'::jsonb FROM generate_series(1, $2::bigint)",
                &[&kind, &n],
            )
            .await?;
    }
    let started = Instant::now();
    let workers = start_workers(&config, &queue, &kind, &args)?;
    wait_all_succeeded(
        &pool,
        &kind,
        i64::try_from(args.jobs)?,
        Duration::from_secs(300),
    )
    .await?;
    let drain_secs = started.elapsed().as_secs_f64();
    let drain_rate = args.jobs as f64 / drain_secs;
    println!(
        "drain:  {} jobs in {drain_secs:.2} s = {drain_rate:.0} jobs/s",
        args.jobs
    );
    {
        let client = pool.get().await?;
        client
            .execute("DELETE FROM jobs WHERE kind = $1", &[&kind])
            .await?;
    }

    // Phase 2: steady offered load, one enqueue per statement.
    let total = (f64::from(args.rate) * args.duration.as_secs_f64()).round() as usize;
    let per_producer = total / args.producers.max(1);
    let interval = Duration::from_secs_f64(args.producers as f64 / f64::from(args.rate.max(1)));
    let steady_started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        let queue = queue.clone();
        let kind = kind.clone();
        producers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..per_producer {
                tick.tick().await;
                queue
                    .enqueue(&NewJob::new(kind.as_str(), serde_json::json!({})))
                    .await?;
            }
            Ok::<(), queue::QueueError>(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    let enqueue_secs = steady_started.elapsed().as_secs_f64();
    let enqueued = per_producer * args.producers.max(1);
    wait_all_succeeded(
        &pool,
        &kind,
        i64::try_from(enqueued)?,
        Duration::from_secs(120),
    )
    .await?;
    let steady_secs = steady_started.elapsed().as_secs_f64();
    workers.stop().await;

    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
             FROM (SELECT EXTRACT(EPOCH FROM started_at - created_at)::float8 * 1000 AS ms FROM jobs WHERE kind = $1) t",
            &[&kind],
        )
        .await?;
    let (p50, p99, max): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
    client
        .execute("DELETE FROM jobs WHERE kind = $1", &[&kind])
        .await?;
    let steady_rate = enqueued as f64 / steady_secs;
    let offered_rate = enqueued as f64 / enqueue_secs;
    println!(
        "steady: {enqueued} jobs, {} jobs/s asked, {offered_rate:.0} jobs/s enqueued, {steady_rate:.0} jobs/s completed",
        args.rate
    );
    println!("        enqueue-to-start p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");

    let throughput_ok = drain_rate >= TARGET_JOBS_PER_SEC;
    // The latency figure only counts if the load was really offered.
    let latency_ok = p99 <= TARGET_P99_MS && offered_rate >= 0.95 * f64::from(args.rate);
    println!(
        "target: >= {TARGET_JOBS_PER_SEC:.0} jobs/s: {} ({:.2}x); p99 <= {TARGET_P99_MS:.0} ms: {} ({:.2}x of budget)",
        if throughput_ok { "met" } else { "MISSED" },
        drain_rate / TARGET_JOBS_PER_SEC,
        if latency_ok { "met" } else { "MISSED" },
        p99 / TARGET_P99_MS
    );
    println!("peers for scale (published, other hardware): River ~46k jobs/s, graphile-worker ~183k jobs/s");
    Ok(if throughput_ok && latency_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
