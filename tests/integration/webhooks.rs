//! Webhooks to a receiver on loopback that verifies every signature.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::common::{fresh_db, http, CascadeProcess};

const SECRET: &str = "whsec_test";
const KEY: &str = "csk_test_webhooks";

#[derive(Default)]
struct Receiver {
    /// Event types received with a valid signature.
    events: Vec<String>,
    /// Requests answered so far.
    requests: usize,
    /// Signatures that did not verify.
    bad_signatures: usize,
}

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(value) = headers
        .get("cascade-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut timestamp = None;
    let mut signature = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signature = hex::decode(s).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    // Reject stale timestamps, as receivers should against replays.
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[tokio::test]
async fn signed_events_arrive_even_after_the_receiver_failed_twice() {
    let state: Arc<Mutex<Receiver>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        post({
            let state = state.clone();
            move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let mut s = state.lock().unwrap();
                    s.requests += 1;
                    if !verify(&headers, &body) {
                        s.bad_signatures += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    // The first two deliveries fail, like a receiver being deployed.
                    if s.requests <= 2 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    s.events.push(event["type"].as_str().unwrap().to_owned());
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let db = fresh_db().await;
    let root =
        std::env::temp_dir().join(format!("cascade-hooks-{}", uuid::Uuid::new_v4().simple()));
    let root = root.display().to_string();
    let endpoints = format!("[{{ url = \"{hook}\", secret = \"{SECRET}\" }}]");
    let server = CascadeProcess::serve(
        &db.url,
        "ingest,workers",
        &[
            ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
            ("CASCADE_STORAGE__LOCAL_ROOT", &root),
            ("CASCADE_WEBHOOKS__ENDPOINTS", &endpoints),
            ("CASCADE_QUEUE__RETRY_BASE", "\"200ms\""),
            ("CASCADE_QUEUE__POLL_INTERVAL", "\"200ms\""),
            ("CASCADE_TRANSCODE__ENCODER", "libx264"),
        ],
    );
    let addr = server.http.unwrap();
    let auth = ("Authorization", "Bearer csk_test_webhooks");
    let (status, _, body) = http(addr, "POST", "/v1/assets", &[auth], b"");
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source =
        std::fs::read(crate::common::fixtures_dir().join("tiny_320x180_stereo.mp4")).unwrap();
    assert_eq!(
        http(
            addr,
            "PUT",
            &format!("/v1/assets/{id}/source"),
            &[auth],
            &source
        )
        .0,
        202
    );
    let garbage = http(addr, "POST", "/v1/assets", &[auth], b"").2;
    let bad = serde_json::from_str::<serde_json::Value>(&garbage).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        http(
            addr,
            "PUT",
            &format!("/v1/assets/{bad}/source"),
            &[auth],
            b"not media at all"
        )
        .0,
        422
    );

    // Wait for all four events; on timeout, say what arrived and how the jobs stand.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done = {
            let s = state.lock().unwrap();
            s.events.iter().filter(|e| *e == "asset.created").count() == 2 && s.events.len() >= 4
        };
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let client = db.pool.get().await.unwrap();
        let jobs = client
            .query(
                "SELECT kind, state, attempts, last_error FROM jobs ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        let jobs: Vec<String> = jobs
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {:?}",
                    r.get::<_, &str>(0),
                    r.get::<_, &str>(1),
                    r.get::<_, i32>(2),
                    r.get::<_, Option<String>>(3)
                )
            })
            .collect();
        let s = state.lock().unwrap();
        assert!(
            s.events.len() >= 4,
            "received {:?} after {} requests; jobs: {jobs:#?}",
            s.events,
            s.requests
        );
    }
    let mut events = state.lock().unwrap().events.clone();
    events.sort();
    assert_eq!(
        events,
        [
            "asset.created",
            "asset.created",
            "asset.errored",
            "asset.ready"
        ]
    );
    assert_eq!(state.lock().unwrap().bad_signatures, 0);
    // Operators see each delivery and its attempts.
    let client = db.pool.get().await.unwrap();
    let rows = client
        .query("SELECT attempts, last_status, delivered_at IS NOT NULL FROM webhook_deliveries ORDER BY created_at", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(2)),
        "all delivered in the end"
    );
    let attempts: i32 = rows.iter().map(|r| r.get::<_, i32>(0)).sum();
    assert_eq!(attempts, 6, "two failures retried, four successes");
}
