//! The ingest router in process (`oneshot`, no socket) over a database that
//! never answers: everything a handler refuses before the database is
//! asked — keys, ids, headers, sizes, JSON, content types, the upload
//! limits — answers with the API's JSON error. A request that passes those
//! checks reaches the database and gets 503 `unavailable`, which is how
//! these tests tell "accepted so far" from "refused".

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use cascade_ingest::auth::KeyRef;
use cascade_ingest::{router, AppState};
use cascade_platform::config::{
    ByteSize, DatabaseConfig, IngestConfig, QueueConfig, Secret, StorageConfig, TranscodeConfig,
};
use cascade_platform::{db, ObjectStore, Queue};
use futures::StreamExt;
use tower::ServiceExt;

const KEY: &str = "csk_router_test_key";
const ASSET: &str = "7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10";
const UPLOAD: &str = "0b6f4c61-4d47-4a43-9f43-0d8c8b1d4a55";
const MAX_UPLOAD: u64 = 10 << 20;

struct Offline {
    router: Router,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

/// The API over a pool that never connects, with `ingest` tweaked by `tweak`.
async fn offline(tweak: impl FnOnce(&mut IngestConfig)) -> Offline {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::from_config(&StorageConfig {
        local_root: dir.path().to_owned(),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    let pool = db::pool(&DatabaseConfig {
        url: Secret::new("postgres://nobody@127.0.0.1:1/none"),
        connect_timeout: Duration::from_millis(100),
        ..DatabaseConfig::default()
    })
    .unwrap();
    let mut config = IngestConfig {
        bootstrap_key: Secret::new(KEY),
        max_upload_size: ByteSize(MAX_UPLOAD),
        ..IngestConfig::default()
    };
    tweak(&mut config);
    let state = Arc::new(
        AppState::new(
            pool.clone(),
            store,
            Queue::new(pool, QueueConfig::default()),
            config,
            TranscodeConfig::default(),
        )
        // The bootstrap key's environment is known: no lookup.
        .with_default_environment(cascade_schemas::EnvironmentId::new()),
    );
    Offline {
        router: router(state.clone()),
        state,
        _dir: dir,
    }
}

/// An answer: status, headers, and the JSON error's code (empty if none).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    code: String,
    message: String,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let head = request.method() == Method::HEAD;
    let response = tokio::time::timeout(Duration::from_secs(10), router.clone().oneshot(request))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    if head || status.is_success() {
        return Answer {
            status,
            headers,
            code: String::new(),
            message: String::new(),
        };
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{status}"
    );
    Answer {
        status,
        headers,
        code: value["code"].as_str().expect("a code").to_owned(),
        message: value["message"].as_str().expect("a message").to_owned(),
    }
}

fn request(method: Method, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

/// Request headers, by name.
type Headers<'a> = Vec<(&'a str, &'a str)>;

const AUTH: (&str, &str) = ("authorization", "Bearer csk_router_test_key");
const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const JSON: (&str, &str) = ("content-type", "application/json");
const OFFSET: (&str, &str) = ("content-type", "application/offset+octet-stream");

/// A body that never sends anything: answered without reading it, or not at all.
fn never() -> Body {
    Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>())
}

async fn expect(
    router: &Router,
    (method, path, headers, body): (Method, &str, &[(&str, &str)], Body),
    status: StatusCode,
    code: &str,
) -> Answer {
    let what = format!("{method} {path} {headers:?}");
    let answer = send(router, request(method, path, headers, body)).await;
    assert_eq!(
        (answer.status, answer.code.as_str()),
        (status, code),
        "{what}: {}",
        answer.message
    );
    answer
}

#[tokio::test]
async fn missing_or_invalid_keys_get_401_json() {
    let api = offline(|_| {}).await;
    let asset = format!("/v1/assets/{ASSET}");
    for auth in [
        None,
        Some("Bearer "),
        Some("Bearer wrong"),
        Some("Basic Y3NrOng="),
        Some("Bearer csk_router_test_kez"),
    ] {
        for (method, path) in [
            (Method::GET, "/v1/assets"),
            (Method::POST, "/v1/assets"),
            (Method::GET, asset.as_str()),
            (Method::PUT, &format!("{asset}/source")),
            (Method::POST, "/v1/uploads"),
        ] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            expect(
                &api.router,
                (method, path, &headers, never()),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            )
            .await;
        }
    }
    // Discovery needs no key.
    let answer = send(
        &api.router,
        request(Method::OPTIONS, "/v1/uploads", &[], Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        answer.headers.get("tus-max-size").map(|v| v.as_bytes()),
        Some(MAX_UPLOAD.to_string().as_bytes())
    );
}

#[tokio::test]
async fn bad_ids_are_404_json() {
    let api = offline(|_| {}).await;
    for (method, path, headers) in [
        (Method::GET, "/v1/assets/not-a-uuid", vec![AUTH]),
        (Method::DELETE, "/v1/assets/not-a-uuid", vec![AUTH]),
        (Method::PUT, "/v1/assets/not-a-uuid/source", vec![AUTH]),
        (
            Method::POST,
            "/v1/assets/not-a-uuid/playback_tokens",
            vec![AUTH, JSON],
        ),
        (Method::DELETE, "/v1/uploads/not-a-uuid", vec![AUTH, TUS]),
        (
            Method::PATCH,
            "/v1/uploads/not-a-uuid",
            vec![AUTH, TUS, OFFSET, ("upload-offset", "0")],
        ),
    ] {
        expect(
            &api.router,
            (method, path, &headers, Body::empty()),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // HEAD answers have no body.
    let answer = send(
        &api.router,
        request(
            Method::HEAD,
            "/v1/uploads/not-a-uuid",
            &[AUTH, TUS],
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn json_bodies_over_the_limit_get_413_before_or_while_reading() {
    let api = offline(|_| {}).await;
    // Declared too large: refused without reading a byte (the body never comes).
    for (path, length) in [
        ("/v1/assets".to_owned(), "65537"),
        ("/v1/assets".to_owned(), "10000000000"),
        (format!("/v1/assets/{ASSET}/playback_tokens"), "4097"),
    ] {
        expect(
            &api.router,
            (
                Method::POST,
                &path,
                &[AUTH, JSON, ("content-length", length)],
                never(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        )
        .await;
    }
    // Chunked and endless: cut off as soon as the bytes read pass the limit.
    let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pulled.clone();
    let endless = futures::stream::repeat_with(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 8192]))
    });
    expect(
        &api.router,
        (
            Method::POST,
            "/v1/assets",
            &[AUTH, JSON],
            Body::from_stream(endless),
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    let pulled = pulled.load(std::sync::atomic::Ordering::Relaxed);
    assert!(pulled <= 64 / 8 + 1, "read {pulled} chunks of 8 KiB");
    // Right at the limit is read (and then parsed).
    let mut exact = br#"{"title": "t"}"#.to_vec();
    exact.resize(64 * 1024, b' ');
    expect(
        &api.router,
        (Method::POST, "/v1/assets", &[AUTH, JSON], Body::from(exact)),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
}

#[tokio::test]
async fn malformed_and_deeply_nested_json_get_400() {
    let api = offline(|_| {}).await;
    let deep_array = format!("{{\"metadata\": {}", "[".repeat(60_000));
    let deep_object = format!(
        "{{\"metadata\": {}1{}}}",
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    let tokens = format!("/v1/assets/{ASSET}/playback_tokens");
    for (path, body, code) in [
        ("/v1/assets", "{not json".to_owned(), "invalid_json"),
        ("/v1/assets", "[]".to_owned(), "invalid_json"),
        ("/v1/assets", "{\"title\": 5}".to_owned(), "invalid_json"),
        (
            "/v1/assets",
            "{\"titel\": \"x\"}".to_owned(),
            "invalid_json",
        ),
        ("/v1/assets", "{} {}".to_owned(), "invalid_json"),
        ("/v1/assets", deep_array.clone(), "invalid_json"),
        ("/v1/assets", deep_object.clone(), "invalid_json"),
        (
            "/v1/assets",
            format!("{{\"title\": \"{}\"}}", "x".repeat(513)),
            "invalid_title",
        ),
        (
            "/v1/assets",
            format!("{{\"metadata\": {{\"a\": \"{}\"}}}}", "x".repeat(17_000)),
            "invalid_metadata",
        ),
        (
            "/v1/assets",
            "{\"metadata\": [1]}".to_owned(),
            "invalid_metadata",
        ),
        (
            "/v1/assets",
            "{\"playback_policy\": \"secret\"}".to_owned(),
            "invalid_playback_policy",
        ),
        (tokens.as_str(), "{".repeat(3000), "invalid_json"),
        (
            tokens.as_str(),
            "{\"ttl_seconds\": 0}".to_owned(),
            "invalid_ttl",
        ),
    ] {
        let answer = expect(
            &api.router,
            (Method::POST, path, &[AUTH, JSON], Body::from(body)),
            StatusCode::BAD_REQUEST,
            code,
        )
        .await;
        assert!(!answer.message.is_empty());
    }
    // The nesting is refused at serde_json's recursion limit, not parsed.
    let answer = send(
        &api.router,
        request(
            Method::POST,
            "/v1/assets",
            &[AUTH, JSON],
            Body::from(deep_array),
        ),
    )
    .await;
    assert!(
        answer.message.contains("recursion limit"),
        "{}",
        answer.message
    );
    // Nested within the limit is fine.
    let nested = format!(
        "{{\"metadata\": {{\"a\": {}1{}}}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    expect(
        &api.router,
        (
            Method::POST,
            "/v1/assets",
            &[AUTH, JSON],
            Body::from(nested),
        ),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
}

#[tokio::test]
async fn json_bodies_must_be_json_when_typed() {
    let api = offline(|_| {}).await;
    let tokens = format!("/v1/assets/{ASSET}/playback_tokens");
    for (path, content_type) in [
        ("/v1/assets", "text/plain"),
        ("/v1/assets", "application/x-www-form-urlencoded"),
        ("/v1/assets", "application/octet-stream"),
        (tokens.as_str(), "text/plain"),
    ] {
        expect(
            &api.router,
            (
                Method::POST,
                path,
                &[AUTH, ("content-type", content_type)],
                Body::from("{}"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    // JSON types, no type at all, and empty bodies under any type pass.
    for (content_type, body) in [
        (Some("application/json; charset=utf-8"), "{}"),
        (Some("application/vnd.cascade+json"), "{}"),
        (None, "{\"title\": \"x\"}"),
        (Some("text/plain"), ""),
        (Some("application/x-www-form-urlencoded"), " \n"),
    ] {
        let headers: Vec<(&str, &str)> = std::iter::once(AUTH)
            .chain(content_type.map(|t| ("content-type", t)))
            .collect();
        expect(
            &api.router,
            (Method::POST, "/v1/assets", &headers, Body::from(body)),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_trickling_json_body_gets_408_at_its_deadline() {
    let api = offline(|config| config.json_body_deadline = Duration::from_secs(3)).await;
    let trickle = futures::stream::iter(0..).then(|_| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, std::io::Error>(Bytes::from_static(b" "))
    });
    let started = tokio::time::Instant::now();
    expect(
        &api.router,
        (
            Method::POST,
            "/v1/assets",
            &[AUTH, JSON],
            Body::from_stream(trickle),
        ),
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn simple_upload_refusals() {
    let api = offline(|_| {}).await;
    let source = format!("/v1/assets/{ASSET}/source");
    let over = (MAX_UPLOAD + 1).to_string();
    expect(
        &api.router,
        (
            Method::PUT,
            &source,
            &[AUTH, ("content-length", &over)],
            never(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    expect(
        &api.router,
        (
            Method::PUT,
            &source,
            &[AUTH, ("content-length", "many")],
            never(),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_header",
    )
    .await;
    // Within the limit it goes on to claim the source.
    expect(
        &api.router,
        (
            Method::PUT,
            &source,
            &[AUTH, ("content-length", "10")],
            Body::from("0123456789"),
        ),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
}

#[tokio::test]
async fn tus_refusals() {
    let api = offline(|_| {}).await;
    let over = (MAX_UPLOAD + 1).to_string();
    let upload = format!("/v1/uploads/{UPLOAD}");
    let answer = expect(
        &api.router,
        (
            Method::POST,
            "/v1/uploads",
            &[AUTH, ("upload-length", "10")],
            Body::empty(),
        ),
        StatusCode::PRECONDITION_FAILED,
        "unsupported_tus_version",
    )
    .await;
    assert_eq!(
        answer.headers.get("tus-version").map(|v| v.as_bytes()),
        Some(&b"1.0.0"[..])
    );
    let cases: Vec<(Method, &str, Headers, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, ("tus-resumable", "0.2.2"), ("upload-length", "10")],
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, TUS],
            StatusCode::BAD_REQUEST,
            "missing_upload_length",
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, TUS, ("upload-defer-length", "1")],
            StatusCode::BAD_REQUEST,
            "defer_length_unsupported",
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, TUS, ("upload-length", "-1")],
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, TUS, ("upload-length", &over)],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![
                AUTH,
                TUS,
                ("upload-length", "10"),
                ("upload-concat", "whole"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_upload_concat",
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![
                AUTH,
                TUS,
                ("upload-length", "10"),
                ("upload-metadata", "filename !!!"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_upload_metadata",
        ),
        (
            Method::PATCH,
            &upload,
            vec![AUTH, OFFSET, ("upload-offset", "0")],
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
        ),
        (
            Method::PATCH,
            &upload,
            vec![
                AUTH,
                TUS,
                ("content-type", "application/octet-stream"),
                ("upload-offset", "0"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Method::PATCH,
            &upload,
            vec![AUTH, TUS, OFFSET],
            StatusCode::BAD_REQUEST,
            "missing_upload_offset",
        ),
        (
            Method::PATCH,
            &upload,
            vec![AUTH, TUS, OFFSET, ("upload-offset", "one")],
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            Method::PATCH,
            &upload,
            vec![
                AUTH,
                TUS,
                OFFSET,
                ("upload-offset", "0"),
                ("content-length", &over),
            ],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::DELETE,
            &upload,
            vec![AUTH],
            StatusCode::PRECONDITION_FAILED,
            "unsupported_tus_version",
        ),
    ];
    for (method, path, headers, status, code) in cases {
        let answer = expect(&api.router, (method, path, &headers, never()), status, code).await;
        assert_eq!(
            answer.headers.get("tus-resumable").map(|v| v.as_bytes()),
            Some(&b"1.0.0"[..])
        );
    }
    // HEAD without the version: 412, no body.
    let answer = send(
        &api.router,
        request(Method::HEAD, &upload, &[AUTH], Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn uploads_past_the_key_or_process_limit_get_429_before_their_body() {
    let api = offline(|config| {
        config.max_uploads = 3;
        config.max_uploads_per_key = 2;
    })
    .await;
    let source = format!("/v1/assets/{ASSET}/source");
    let upload = format!("/v1/uploads/{UPLOAD}");
    let slots = &api.state.limits.slots;
    // The bootstrap key has two uploads in progress.
    let held = [
        slots.acquire(KeyRef::Bootstrap).unwrap(),
        slots.acquire(KeyRef::Bootstrap).unwrap(),
    ];
    let uploads: Vec<(Method, &str, Headers)> = vec![
        (Method::PUT, &source, vec![AUTH]),
        (
            Method::PATCH,
            &upload,
            vec![AUTH, TUS, OFFSET, ("upload-offset", "0")],
        ),
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, TUS, OFFSET, ("upload-length", "10")],
        ),
    ];
    for (method, path, headers) in &uploads {
        let answer = expect(
            &api.router,
            (method.clone(), path, headers, never()),
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
        )
        .await;
        assert_eq!(
            answer.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert!(answer.message.contains("API key"), "{}", answer.message);
    }
    // Requests without an upload's bytes are not counted.
    for (method, path, headers) in [
        (Method::GET, "/v1/assets", vec![AUTH]),
        (Method::DELETE, upload.as_str(), vec![AUTH, TUS]),
        (
            Method::POST,
            "/v1/uploads",
            vec![AUTH, TUS, ("upload-length", "10")],
        ),
    ] {
        expect(
            &api.router,
            (method, path, &headers, Body::empty()),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        )
        .await;
    }
    // Another key fills the process.
    let other = slots.acquire(KeyRef::Key(uuid::Uuid::nil())).unwrap();
    drop(held);
    assert_eq!(slots.in_use(KeyRef::Bootstrap), (1, 0));
    let _more = slots.acquire(KeyRef::Key(uuid::Uuid::max())).unwrap();
    let _third = slots.acquire(KeyRef::Key(uuid::Uuid::max())).unwrap();
    let answer = expect(
        &api.router,
        (Method::PUT, &source, &[AUTH], never()),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_uploads",
    )
    .await;
    assert!(answer.message.contains("server"), "{}", answer.message);
    // Once one ends, the upload goes on (to the database, here).
    drop(other);
    expect(
        &api.router,
        (Method::PUT, &source, &[AUTH], Body::from("x")),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    // And its slot is free again when it is answered.
    assert_eq!(slots.in_use(KeyRef::Bootstrap), (2, 0));
}
