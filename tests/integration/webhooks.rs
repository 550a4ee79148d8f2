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

    // Wait for all five events (the tiny fixture plays after its first 2 s
    // segment, before it is ready: asset.playable); on timeout, say what
    // arrived and how the jobs stand.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done = {
            let s = state.lock().unwrap();
            s.events.iter().filter(|e| *e == "asset.created").count() == 2 && s.events.len() >= 5
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
            s.events.len() >= 5,
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
            "asset.playable",
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
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(2)),
        "all delivered in the end"
    );
    let attempts: i32 = rows.iter().map(|r| r.get::<_, i32>(0)).sum();
    assert_eq!(attempts, 7, "two failures retried, five successes");
}

/// What a receiver got: `(event type, signature header, body)` each.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A receiver on loopback recording what it gets.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        post({
            let got = got.clone();
            move |headers: HeaderMap, body: Bytes| {
                let got = got.clone();
                async move {
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let signature = headers
                        .get("cascade-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    got.lock().unwrap().push((
                        event["type"].as_str().unwrap_or_default().to_owned(),
                        signature,
                        body.to_vec(),
                    ));
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn signed_by(secret: &str, signature: &str, body: &[u8]) -> bool {
    let mut parts = signature.split(',');
    let t = parts
        .next()
        .and_then(|p| p.strip_prefix("t="))
        .unwrap_or_default();
    let v1 = parts
        .next()
        .and_then(|p| p.strip_prefix("v1="))
        .and_then(|s| hex::decode(s).ok());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    v1.is_some_and(|v| mac.verify_slice(&v).is_ok())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn registered_endpoints_get_their_environments_events_only() {
    let (mine_url, mine) = receiver().await;
    let (theirs_url, theirs) = receiver().await;
    let db = fresh_db().await;
    let root =
        std::env::temp_dir().join(format!("cascade-hooks-{}", uuid::Uuid::new_v4().simple()));
    let root = root.display().to_string();
    let server = CascadeProcess::serve(
        &db.url,
        "ingest,workers",
        &[
            ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
            ("CASCADE_STORAGE__LOCAL_ROOT", &root),
            // The receivers are on loopback, which creators may not target by default.
            ("CASCADE_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
            ("CASCADE_QUEUE__POLL_INTERVAL", "\"200ms\""),
        ],
    );
    let addr = server.http.unwrap();
    let auth = ("Authorization", "Bearer csk_test_webhooks");
    let other_secret = crate::common::create_key(&db, "other", "other-env");
    let other_value = format!("Bearer {other_secret}");
    let other = ("Authorization", other_value.as_str());
    let register = |auth, url: &str, events: &str| {
        let body = format!(r#"{{"url": "{url}", "events": {events}}}"#);
        let (status, _, body) = http(
            addr,
            "POST",
            "/v1/webhook_endpoints",
            &[auth],
            body.as_bytes(),
        );
        assert_eq!(status, 201, "{body}");
        json(&body)
    };
    let created = register(auth, &mine_url, r#"["asset.created", "asset.deleted"]"#);
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let theirs_created = register(other, &theirs_url, "[]");
    let mine_id = created["id"].as_str().unwrap().to_owned();
    let theirs_id = theirs_created["id"].as_str().unwrap().to_owned();
    // Listing and reading are per environment, never with the secret.
    let (_, _, list) = http(addr, "GET", "/v1/webhook_endpoints", &[auth], b"");
    let list = json(&list);
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["id"], mine_id.as_str());
    assert!(list["data"][0].get("secret").is_none());
    for method in ["GET", "DELETE"] {
        let (status, _, body) = http(
            addr,
            method,
            &format!("/v1/webhook_endpoints/{theirs_id}"),
            &[auth],
            b"",
        );
        assert_eq!(status, 404, "{method}: {body}");
    }
    // An asset of mine: my endpoint hears of it, theirs does not.
    let (status, _, body) = http(addr, "POST", "/v1/assets", &[auth], b"");
    assert_eq!(status, 201, "{body}");
    let asset = json(&body)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        http(addr, "DELETE", &format!("/v1/assets/{asset}"), &[auth], b"").0,
        204
    );
    crate::common::eventually("my two events", Duration::from_secs(30), || async {
        (mine.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    {
        let got = mine.lock().unwrap();
        // Each event is its own job: they may arrive in either order.
        let mut types: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
        types.sort();
        assert_eq!(types, ["asset.created", "asset.deleted"]);
        assert!(got
            .iter()
            .all(|(_, signature, body)| signed_by(&secret, signature, body)));
    }
    // Their asset reaches only them; once I delete my endpoint, nothing
    // reaches me either.
    assert_eq!(
        http(
            addr,
            "DELETE",
            &format!("/v1/webhook_endpoints/{mine_id}"),
            &[auth],
            b""
        )
        .0,
        204
    );
    assert_eq!(
        http(
            addr,
            "GET",
            &format!("/v1/webhook_endpoints/{mine_id}"),
            &[auth],
            b""
        )
        .0,
        404
    );
    assert_eq!(http(addr, "POST", "/v1/assets", &[other], b"").0, 201);
    assert_eq!(http(addr, "POST", "/v1/assets", &[auth], b"").0, 201);
    crate::common::eventually("their event", Duration::from_secs(30), || async {
        (!theirs.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    crate::common::eventually(
        "every webhook job done",
        Duration::from_secs(30),
        || async {
            (crate::common::count(
                &db,
                "SELECT count(*) FROM jobs WHERE kind = 'webhook' AND state <> 'succeeded'",
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(theirs.lock().unwrap().len(), 1);
    assert_eq!(mine.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn creators_cannot_point_webhooks_at_private_addresses() {
    let db = fresh_db().await;
    let root =
        std::env::temp_dir().join(format!("cascade-hooks-{}", uuid::Uuid::new_v4().simple()));
    let root = root.display().to_string();
    let server = CascadeProcess::serve(
        &db.url,
        "ingest",
        &[
            ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
            ("CASCADE_STORAGE__LOCAL_ROOT", &root),
        ],
    );
    let addr = server.http.unwrap();
    let auth = ("Authorization", "Bearer csk_test_webhooks");
    for (body, code) in [
        (r#"{"url": "http://127.0.0.1:9/hook"}"#, "invalid_url"),
        (r#"{"url": "http://localhost/hook"}"#, "invalid_url"),
        (
            r#"{"url": "http://169.254.169.254/latest/meta-data/"}"#,
            "invalid_url",
        ),
        (r#"{"url": "http://[::1]/"}"#, "invalid_url"),
        (r#"{"url": "http://10.0.0.8/"}"#, "invalid_url"),
        (r#"{"url": "http://2130706433/"}"#, "invalid_url"),
        (r#"{"url": "file:///etc/passwd"}"#, "invalid_url"),
        (
            r#"{"url": "https://user:pw@hooks.example.com/"}"#,
            "invalid_url",
        ),
        (
            r#"{"url": "https://hooks.example.com/", "events": ["asset.exploded"]}"#,
            "invalid_events",
        ),
        (r#"{"url": 5}"#, "invalid_json"),
    ] {
        let (status, _, reply) = http(
            addr,
            "POST",
            "/v1/webhook_endpoints",
            &[auth],
            body.as_bytes(),
        );
        assert_eq!(
            (status, json(&reply)["code"].as_str().unwrap_or_default()),
            (400, code),
            "{body}: {reply}"
        );
    }
    let huge = format!(
        r#"{{"url": "https://hooks.example.com/{}"}}"#,
        "a".repeat(20_000)
    );
    let (status, _, reply) = http(
        addr,
        "POST",
        "/v1/webhook_endpoints",
        &[auth],
        huge.as_bytes(),
    );
    assert_eq!(status, 413, "{reply}");
    // A public URL is accepted (nothing is sent until an event).
    let (status, _, reply) = http(
        addr,
        "POST",
        "/v1/webhook_endpoints",
        &[auth],
        br#"{"url": "https://hooks.example.com/cascade"}"#,
    );
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        crate::common::count(&db, "SELECT count(*) FROM webhook_endpoints").await,
        1
    );
}
