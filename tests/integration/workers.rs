//! Worker processes: crashes, graceful shutdown, health endpoints, config CLI.

use std::time::Duration;

use cascade_platform::queue::NewJob;
use cascade_platform::Queue;
use cascade_schemas::{job_kind, JobState};
use serde_json::json;

use crate::common::{cascade_bin, eventually, fresh_db, http_get, CascadeProcess};

/// Short lease timings so crash recovery is seen within seconds.
const FAST_QUEUE: &[(&str, &str)] = &[
    ("CASCADE_QUEUE__LEASE", "\"2s\""),
    ("CASCADE_QUEUE__HEARTBEAT", "\"500ms\""),
    ("CASCADE_QUEUE__REAP_INTERVAL", "\"300ms\""),
    ("CASCADE_QUEUE__POLL_INTERVAL", "\"300ms\""),
];

#[tokio::test]
async fn a_worker_killed_mid_job_loses_the_job_to_another_which_completes_it_once() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let id = queue
        .enqueue(&NewJob::new(job_kind::NOOP, json!({ "sleep_ms": 2500 })))
        .await
        .unwrap()
        .id();
    let first = CascadeProcess::serve(&db.url, "workers", FAST_QUEUE);
    let first_owner = eventually(
        "the first worker to claim the job",
        Duration::from_secs(20),
        || async {
            let job = queue.get(id).await.unwrap();
            (job.state == JobState::Running).then_some(job.lease_owner)
        },
    )
    .await;
    first.signal("KILL");
    drop(first);

    let _second = CascadeProcess::serve(&db.url, "workers", FAST_QUEUE);
    let job = eventually(
        "the job to complete on the second worker",
        Duration::from_secs(30),
        || async {
            let job = queue.get(id).await.unwrap();
            job.state.is_terminal().then_some(job)
        },
    )
    .await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(
        job.attempts, 2,
        "one attempt lost with the killed worker, one that completed"
    );
    assert!(first_owner.is_some());
}

#[tokio::test]
async fn sigterm_finishes_short_jobs_and_releases_long_ones() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let short = queue
        .enqueue(&NewJob::new(job_kind::NOOP, json!({ "sleep_ms": 400 })).priority(2))
        .await
        .unwrap()
        .id();
    let long = queue
        .enqueue(&NewJob::new(job_kind::NOOP, json!({ "sleep_ms": 60_000 })).priority(1))
        .await
        .unwrap()
        .id();
    let mut env = FAST_QUEUE.to_vec();
    env.push(("CASCADE_QUEUE__SHUTDOWN_GRACE", "\"1s\""));
    let mut worker = CascadeProcess::serve(&db.url, "workers", &env);
    eventually("both jobs running", Duration::from_secs(20), || async {
        let a = queue.get(short).await.unwrap().state;
        let b = queue.get(long).await.unwrap().state;
        (a == JobState::Running && b == JobState::Running).then_some(())
    })
    .await;
    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert_eq!(
        queue.get(short).await.unwrap().state,
        JobState::Succeeded,
        "finished within the grace period"
    );
    let released = queue.get(long).await.unwrap();
    assert_eq!(
        released.state,
        JobState::Queued,
        "released back to the queue"
    );
    assert_eq!(released.attempts, 0, "a released job keeps its attempts");
    assert!(released.lease_owner.is_none());
}

#[tokio::test]
async fn healthz_and_readyz_report_dependencies() {
    let db = fresh_db().await;
    let server = CascadeProcess::serve(&db.url, "origin", &[]);
    let addr = server.http.unwrap();
    let (status, body) = http_get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\""), "{body}");

    // A worker whose database is gone: alive, but not ready, naming the
    // database. (An origin alone stays ready, degraded: see
    // operations::an_origin_stays_ready_through_a_database_outage_and_ingest_does_not.)
    let dead_db = "postgres://cascade@127.0.0.1:9/nowhere";
    let env = [
        ("CASCADE_DATABASE__MIGRATE_ON_START", "false"),
        ("CASCADE_DATABASE__CONNECT_TIMEOUT", "\"500ms\""),
    ];
    let broken = CascadeProcess::serve(dead_db, "workers", &env);
    let addr = broken.http.unwrap();
    assert_eq!(http_get(addr, "/healthz").0, 200);
    let (status, body) = http_get(addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "dependency_unavailable");
    assert_eq!(body["checks"]["database"], "unavailable");
    assert_eq!(body["checks"]["storage"], "ok");
    assert!(body["message"].as_str().unwrap().contains("database"));
}

#[test]
fn config_command_redacts_secrets_and_names_unknown_keys() {
    let out = std::process::Command::new(cascade_bin())
        .arg("config")
        .env("CASCADE_DATABASE__URL", "postgres://u:hunter2@db/x")
        .env("CASCADE_STORAGE__S3__SECRET_ACCESS_KEY", "topsecret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("[storage.s3]") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && !text.contains("topsecret"),
        "{text}"
    );

    let out = std::process::Command::new(cascade_bin())
        .arg("config")
        .env("CASCADE_QUEUE__LEASSE", "5s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("leasse"), "{err}");
}

#[tokio::test]
async fn jobs_cli_lists_shows_cancels_and_retries() {
    let db = fresh_db().await;
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let id = queue
        .enqueue(&NewJob::new("cli", json!({ "x": 1 })))
        .await
        .unwrap()
        .id();
    let run = |args: &[&str]| {
        std::process::Command::new(cascade_bin())
            .args(args)
            .env("CASCADE_DATABASE__URL", &db.url)
            .output()
            .unwrap()
    };
    let out = run(&["jobs", "list", "--json"]);
    assert!(out.status.success());
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["id"], id.0);
    assert_eq!(line["state"], "queued");
    assert!(run(&["jobs", "cancel", &id.to_string()]).status.success());
    assert_eq!(queue.get(id).await.unwrap().state, JobState::Cancelled);
    let again = run(&["jobs", "cancel", &id.to_string()]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "cancelling a cancelled job is refused"
    );
    assert!(run(&["jobs", "retry", &id.to_string()]).status.success());
    assert_eq!(queue.get(id).await.unwrap().state, JobState::Queued);
    let show = run(&["jobs", "show", &id.to_string()]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["payload"]["x"], 1);
    assert_eq!(run(&["jobs", "show", "987654"]).status.code(), Some(1));
    let stats = run(&["jobs", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats[0]["kind"], "cli");
    assert_eq!(stats[0]["ready"], 1);
}
