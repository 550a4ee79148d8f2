//! The Postgres job queue against a real Postgres.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cascade_platform::queue::{self, Enqueued, FailOutcome, JobNotifier, NewJob, Queue};
use cascade_platform::{config::QueueConfig, db};
use cascade_schemas::{JobId, JobState};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, fresh_db};

fn fast_config() -> QueueConfig {
    QueueConfig {
        lease: Duration::from_millis(600),
        heartbeat: Duration::from_millis(200),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        ..QueueConfig::default()
    }
}

fn kinds(kind: &str) -> Vec<String> {
    vec![kind.to_owned()]
}

#[tokio::test]
async fn migrations_apply_once_and_are_a_noop_the_second_time() {
    let db = fresh_db().await;
    // fresh_db already migrated; a second run applies nothing.
    assert!(db::migrate(&db.pool).await.unwrap().is_empty());
    let client = db.pool.get().await.unwrap();
    let versions: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        versions as usize,
        cascade_schemas::migrations::MIGRATIONS.len()
    );
}

#[tokio::test]
async fn concurrent_migrations_from_several_processes() {
    let admin = std::env::var("CASCADE_TEST_DATABASE_URL").expect("CASCADE_TEST_DATABASE_URL");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(crate::common::cascade_bin())
                .arg("migrate")
                .env("CASCADE_DATABASE__URL", &url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (check, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = check
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), cascade_schemas::migrations::MIGRATIONS.len());
}

#[tokio::test]
async fn eight_claimers_over_a_thousand_jobs_run_each_exactly_once() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    for n in 0..1000 {
        queue
            .enqueue(&NewJob::new("count", json!({ "n": n })))
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let mut claimers = Vec::new();
    for c in 0..8 {
        let queue = queue.clone();
        let seen = seen.clone();
        claimers.push(tokio::spawn(async move {
            loop {
                let jobs = queue
                    .claim(&format!("claimer-{c}"), &kinds("count"), 7)
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break;
                }
                for job in jobs {
                    *seen.lock().unwrap().entry(job.lease.job_id.0).or_default() += 1;
                    assert!(queue.complete(&job.lease).await.unwrap());
                }
            }
        }));
    }
    for claimer in claimers {
        claimer.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1000, "every job claimed");
    assert!(seen.values().all(|&n| n == 1), "no job claimed twice");
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'), max(attempts) FROM jobs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1000);
    assert_eq!(row.get::<_, i32>(1), 1);
}

#[tokio::test]
async fn retryable_failures_back_off_then_dead_letter() {
    let db = fresh_db().await;
    let config = fast_config();
    let queue = Queue::new(db.pool.clone(), config.clone());
    let id = queue
        .enqueue(&NewJob::new("flaky", json!({})).max_attempts(3))
        .await
        .unwrap()
        .id();
    for attempt in 1..=3 {
        let job = eventually(
            "the job to become claimable",
            Duration::from_secs(10),
            || async { queue.claim("w", &kinds("flaky"), 1).await.unwrap().pop() },
        )
        .await;
        assert_eq!(job.attempt, attempt);
        let failed_at = chrono::Utc::now();
        let outcome = queue
            .fail(&job.lease, &format!("boom {attempt}"), true)
            .await
            .unwrap();
        if attempt < 3 {
            let FailOutcome::Retrying(at) = outcome else {
                panic!("expected a retry, got {outcome:?}")
            };
            // retry_base * 2^(attempt-1), with equal jitter: between half and all of it.
            let full = config.retry_base.as_millis() as i64 * (1 << (attempt - 1));
            let delay = (at - failed_at).num_milliseconds();
            assert!(
                delay >= full / 2 - 50 && delay <= full + 50,
                "attempt {attempt}: delay {delay} ms, full {full} ms"
            );
            // Not claimable before its time.
            assert!(queue
                .claim("w", &kinds("flaky"), 1)
                .await
                .unwrap()
                .is_empty());
        } else {
            assert_eq!(outcome, FailOutcome::Dead);
        }
    }
    let record = queue.get(id).await.unwrap();
    assert_eq!(record.state, JobState::Dead);
    assert_eq!(record.last_error.as_deref(), Some("boom 3"));
    assert!(record.finished_at.is_some());

    // An operator retry gives it a fresh set of attempts.
    queue.retry(id).await.unwrap();
    let job = queue
        .claim("w", &kinds("flaky"), 1)
        .await
        .unwrap()
        .pop()
        .expect("claimable again");
    assert_eq!(job.attempt, 1);
    assert!(queue.complete(&job.lease).await.unwrap());
    assert_eq!(queue.get(id).await.unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    let id = queue
        .enqueue(&NewJob::new("bad", json!({})))
        .await
        .unwrap()
        .id();
    let job = queue
        .claim("w", &kinds("bad"), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        queue
            .fail(&job.lease, "no video or audio stream", false)
            .await
            .unwrap(),
        FailOutcome::Failed
    );
    // Permanent: nothing scheduled for later, so it is not claimable now nor after.
    assert!(queue.claim("w", &kinds("bad"), 1).await.unwrap().is_empty());
    let record = queue.get(id).await.unwrap();
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.attempts, 1);
    assert_eq!(
        record.last_error.as_deref(),
        Some("no video or audio stream")
    );
}

#[tokio::test]
async fn cancel_stops_queued_and_running_jobs() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    let queued = queue
        .enqueue(&NewJob::new("c", json!({})).priority(-1))
        .await
        .unwrap()
        .id();
    let running = queue
        .enqueue(&NewJob::new("c", json!({})).priority(5))
        .await
        .unwrap()
        .id();
    let job = queue
        .claim("w", &kinds("c"), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(job.lease.job_id, running, "higher priority first");

    queue.cancel(queued).await.unwrap();
    queue.cancel(running).await.unwrap();
    // The running job's worker learns at its next heartbeat; its result is refused.
    assert!(!queue.heartbeat(&job.lease).await.unwrap());
    assert!(!queue.complete(&job.lease).await.unwrap());
    assert!(queue.claim("w", &kinds("c"), 10).await.unwrap().is_empty());
    assert_eq!(queue.get(queued).await.unwrap().state, JobState::Cancelled);
    // Cancelling twice is refused with the state named; unknown ids are not found.
    assert!(matches!(
        queue.cancel(queued).await,
        Err(queue::QueueError::InvalidState { .. })
    ));
    assert!(matches!(
        queue.cancel(JobId(999_999)).await,
        Err(queue::QueueError::NotFound(_))
    ));
}

#[tokio::test]
async fn idempotency_key_refuses_duplicates_and_enqueue_joins_the_callers_transaction() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    let job = NewJob::new("transcode", json!({ "asset": "a" })).idempotency_key("asset-a-v1");
    let first = queue.enqueue(&job).await.unwrap();
    let second = queue.enqueue(&job).await.unwrap();
    assert!(matches!(first, Enqueued::Created(_)));
    assert_eq!(second, Enqueued::Duplicate(first.id()));

    let mut client = db.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    queue::enqueue(&tx, &NewJob::new("tx", json!({})), 5)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        queue.claim("w", &kinds("tx"), 1).await.unwrap().is_empty(),
        "rolled back with the transaction"
    );
    let tx = client.transaction().await.unwrap();
    queue::enqueue(&tx, &NewJob::new("tx", json!({})), 5)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(queue.claim("w", &kinds("tx"), 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn expired_leases_are_reclaimed_and_the_old_holder_is_fenced_off() {
    let db = fresh_db().await;
    let queue = Queue::new(
        db.pool.clone(),
        QueueConfig {
            retry_base: Duration::from_secs(1),
            ..fast_config()
        },
    );
    let id = queue
        .enqueue(&NewJob::new("slow", json!({})))
        .await
        .unwrap()
        .id();
    let first = queue
        .claim("dead-worker", &kinds("slow"), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    // Before expiry nothing is reaped, and only runners of the kind reap it.
    assert!(queue.reap_expired(&kinds("slow")).await.unwrap().is_empty());
    let reaped = eventually("the lease to expire", Duration::from_secs(5), || async {
        assert!(queue
            .reap_expired(&kinds("other"))
            .await
            .unwrap()
            .is_empty());
        let reaped = queue.reap_expired(&kinds("slow")).await.unwrap();
        (!reaped.is_empty()).then_some(reaped)
    })
    .await;
    assert_eq!(reaped.len(), 1);
    assert!(!reaped[0].dead);
    assert_eq!(reaped[0].attempts, 1);
    // Reclaimed after the retry backoff (a crashing source is not rerun at once).
    assert!(
        queue
            .claim("live-worker", &kinds("slow"), 1)
            .await
            .unwrap()
            .is_empty(),
        "backing off"
    );
    let second = eventually("the backoff to pass", Duration::from_secs(5), || async {
        queue
            .claim("live-worker", &kinds("slow"), 1)
            .await
            .unwrap()
            .pop()
    })
    .await;
    assert_eq!(second.lease.job_id, id);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease.lease_id, first.lease.lease_id);
    // The first holder comes back to life: it can neither renew nor complete.
    assert!(!queue.heartbeat(&first.lease).await.unwrap());
    assert!(!queue.complete(&first.lease).await.unwrap());
    assert_eq!(
        queue.fail(&first.lease, "late", true).await.unwrap(),
        FailOutcome::LeaseLost
    );
    assert!(queue.heartbeat(&second.lease).await.unwrap());
    assert!(queue.complete(&second.lease).await.unwrap());
    let record = queue.get(id).await.unwrap();
    assert_eq!((record.state, record.attempts), (JobState::Succeeded, 2));
}

#[tokio::test]
async fn release_returns_the_job_without_spending_an_attempt() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    queue.enqueue(&NewJob::new("r", json!({}))).await.unwrap();
    let job = queue
        .claim("w", &kinds("r"), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(queue.release(&job.lease).await.unwrap());
    let again = queue
        .claim("w", &kinds("r"), 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(again.attempt, 1);
}

#[tokio::test]
async fn depth_reports_ready_scheduled_running_and_oldest_age() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    for _ in 0..3 {
        queue.enqueue(&NewJob::new("d", json!({}))).await.unwrap();
    }
    let mut later = NewJob::new("d", json!({}));
    later.run_at = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    queue.enqueue(&later).await.unwrap();
    queue.claim("w", &kinds("d"), 1).await.unwrap();
    // The oldest ready job ages as time passes: wait until it is 200 ms old.
    let d = eventually(
        "the oldest ready job to be 200 ms old",
        Duration::from_secs(10),
        || async {
            let depth = queue.depth().await.unwrap();
            depth
                .into_iter()
                .find(|d| d.kind == "d" && d.oldest_ready_age_seconds >= 0.2)
        },
    )
    .await;
    assert_eq!((d.ready, d.scheduled, d.running), (2, 1, 1));
    assert!(d.oldest_ready_age_seconds >= 0.2, "{d:?}");
}

#[tokio::test]
async fn idle_workers_wake_within_100ms_of_an_enqueue() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), fast_config());
    let cancel = CancellationToken::new();
    let notifier = JobNotifier::start(db::pg_config(&db.config.database).unwrap(), cancel.clone());
    // The first permit comes from the listener connecting.
    tokio::time::timeout(Duration::from_secs(5), notifier.notified())
        .await
        .expect("listener up");
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (started, running) = tokio::sync::oneshot::channel();
        let waiter = {
            let notifier = notifier.clone();
            tokio::spawn(async move {
                let _ = started.send(());
                notifier.notified().await;
                Instant::now()
            })
        };
        // The waiter is parked (or about to be: a wake-up before it parks
        // leaves a permit, so it is not lost).
        running.await.unwrap();
        let sent = Instant::now();
        queue
            .enqueue(&NewJob::new("wake", json!({})))
            .await
            .unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken")
            .unwrap();
        worst = worst.max(woke - sent);
    }
    cancel.cancel();
    assert!(
        worst < Duration::from_millis(100),
        "slowest wake-up {worst:?}"
    );
}
