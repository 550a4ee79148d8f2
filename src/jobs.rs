//! `cascade jobs list|show|retry|cancel|stats`: the operators' queue tools.

use std::process::ExitCode;

use cascade_platform::queue::{JobFilter, JobRecord, QueueError};
use cascade_platform::{db, Config, Queue};
use cascade_schemas::{JobId, JobState};
use clap::Subcommand;

/// Queue subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, succeeded, failed, dead, cancelled).
        #[arg(long)]
        state: Option<JobState>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only jobs older than this id (paging).
        #[arg(long)]
        before: Option<JobId>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job in full, as JSON.
    Show {
        /// Job id.
        id: JobId,
    },
    /// Put a failed, dead or cancelled job back in the queue with fresh attempts.
    Retry {
        /// Job id.
        id: JobId,
    },
    /// Cancel a queued or running job (a running one stops at its next heartbeat).
    Cancel {
        /// Job id.
        id: JobId,
    },
    /// Queue depth and oldest waiting age per kind.
    Stats {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn summary_line(job: &JobRecord) -> String {
    let error = job.last_error.as_deref().unwrap_or("").replace('\n', " ");
    let error: String = error.chars().take(60).collect();
    // A chunk of a chunked transcode shows which: `transcode#3`.
    let kind = match job.payload.get("chunk").and_then(serde_json::Value::as_u64) {
        Some(chunk) => format!("{}#{chunk}", job.kind),
        None => job.kind.clone(),
    };
    format!(
        "{:>8}  {:<12} {:<10} {:>3}/{:<3} {:<25} {}",
        job.id.0,
        kind,
        job.state.as_str(),
        job.attempts,
        job.max_attempts,
        job.created_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        error
    )
}

/// Runs one subcommand; exit 1 when the job is missing or in the wrong state.
pub async fn run(command: JobsCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let queue = Queue::new(db::pool(&config.database)?, config.queue.clone());
    let result = match command {
        JobsCommand::List {
            state,
            kind,
            limit,
            before,
            json,
        } => {
            let jobs = queue
                .list(&JobFilter {
                    state,
                    kind,
                    before,
                    limit,
                })
                .await?;
            if json {
                for job in &jobs {
                    println!("{}", serde_json::to_string(job)?);
                }
            } else {
                println!(
                    "{:>8}  {:<12} {:<10} {:>7} {:<25} LAST ERROR",
                    "ID", "KIND", "STATE", "ATTEMPT", "CREATED (UTC)"
                );
                for job in &jobs {
                    println!("{}", summary_line(job));
                }
            }
            Ok(())
        }
        JobsCommand::Show { id } => queue.get(id).await.map(|job| {
            println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        }),
        JobsCommand::Retry { id } => queue
            .retry(id)
            .await
            .map(|()| println!("job {id} queued again")),
        JobsCommand::Cancel { id } => queue
            .cancel(id)
            .await
            .map(|()| println!("job {id} cancelled")),
        JobsCommand::Stats { json } => {
            let depth = queue.depth().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&depth)?);
            } else {
                println!(
                    "{:<12} {:>8} {:>10} {:>8} {:>12}",
                    "KIND", "READY", "SCHEDULED", "RUNNING", "OLDEST (s)"
                );
                for d in &depth {
                    println!(
                        "{:<12} {:>8} {:>10} {:>8} {:>12.1}",
                        d.kind, d.ready, d.scheduled, d.running, d.oldest_ready_age_seconds
                    );
                }
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error @ (QueueError::NotFound(_) | QueueError::InvalidState { .. })) => {
            eprintln!("cascade: {error}");
            Ok(ExitCode::from(1))
        }
        Err(error) => Err(error.into()),
    }
}
