//! The creators' API in process (`test_router`): validation and the mapping
//! of every refusal to its status, stable code and headers, before any
//! database lookup. What needs the database is covered end to end by the
//! integration tests.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use cascade_platform::config::IngestConfig;
use serde_json::Value;

use crate::test_router::{call, offline_router, KEY};

const ASSET: &str = "7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10";

fn bearer() -> String {
    format!("Bearer {KEY}")
}

/// (status, code) of `POST /v1/assets` with this body and content type.
async fn create_asset(
    router: &axum::Router,
    content_type: &str,
    body: String,
) -> (StatusCode, String) {
    let auth = bearer();
    let (status, headers, value) = call(
        router,
        Method::POST,
        "/v1/assets",
        &[
            (header::AUTHORIZATION.as_str(), &auth),
            (header::CONTENT_TYPE.as_str(), content_type),
        ],
        body,
    )
    .await;
    assert!(value["message"].is_string(), "{status}: {value}");
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "errors are JSON"
    );
    (
        status,
        value["code"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn every_route_needs_a_valid_key() {
    let (router, _dir) = offline_router(IngestConfig::default()).await;
    let routes = [
        (Method::POST, "/v1/assets".to_owned()),
        (Method::GET, "/v1/assets".to_owned()),
        (Method::GET, format!("/v1/assets/{ASSET}")),
        (Method::DELETE, format!("/v1/assets/{ASSET}")),
        (Method::PUT, format!("/v1/assets/{ASSET}/source")),
        (Method::PUT, format!("/v1/assets/{ASSET}/replacement")),
        (Method::POST, "/v1/uploads".to_owned()),
        (Method::GET, "/v1/live_streams".to_owned()),
        (Method::POST, "/v1/live_streams".to_owned()),
    ];
    for (method, path) in &routes {
        for auth in [None, Some("Bearer csk_wrong"), Some("Basic Zm9vOmJhcg==")] {
            let headers: Vec<(&str, &str)> = auth
                .map(|a| vec![(header::AUTHORIZATION.as_str(), a)])
                .unwrap_or_default();
            let (status, response_headers, value) =
                call(&router, method.clone(), path, &headers, Body::empty()).await;
            assert_eq!(
                (status, value["code"].as_str().unwrap_or_default()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
                "{method} {path} with {auth:?}: {value}"
            );
            assert!(!response_headers.contains_key(header::RETRY_AFTER));
        }
    }
}

#[tokio::test]
async fn asset_creation_refuses_bad_bodies_with_their_codes() {
    let (router, _dir) = offline_router(IngestConfig::default()).await;
    let json = "application/json";
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            json,
            "{".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json,
            "[]".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json,
            r#"{"colour": "red"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json,
            r#"{"title": 5}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json,
            format!(r#"{{"title": "{}"}}"#, "t".repeat(513)),
            StatusCode::BAD_REQUEST,
            "invalid_title",
        ),
        (
            json,
            r#"{"title": "a\u0000b"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_title",
        ),
        (
            json,
            r#"{"metadata": [1, 2]}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
        (
            json,
            r#"{"metadata": "text"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
        (
            json,
            format!(r#"{{"metadata": {{"k": "{}"}}}}"#, "m".repeat(17 * 1024)),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
        (
            json,
            r#"{"metadata": {"a\u0000": 1}}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
        (
            json,
            r#"{"playback_policy": "secret"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_playback_policy",
        ),
        (
            json,
            format!(r#"{{"title": "{}"}}"#, "t".repeat(1 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "text/plain",
            "{}".to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        // Valid: it gets as far as the database, which is not there.
        (
            json,
            r#"{"title": "ok"}"#.to_owned(),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            json,
            String::new(),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let shown = format!("{content_type} {body:.60}");
        assert_eq!(
            create_asset(&router, content_type, body).await,
            (status, code.to_owned()),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn tus_creation_refuses_what_the_protocol_refuses() {
    let mut config = IngestConfig::default();
    config.max_upload_size = cascade_platform::config::ByteSize(1 << 30);
    let (router, _dir) = offline_router(config).await;
    let auth = bearer();
    let post = |headers: Vec<(&'static str, String)>| {
        let router = router.clone();
        let auth = auth.clone();
        async move {
            let mut all: Vec<(&str, &str)> = vec![(header::AUTHORIZATION.as_str(), auth.as_str())];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            call(&router, Method::POST, "/v1/uploads", &all, Body::empty()).await
        }
    };
    let resumable = ("tus-resumable", "1.0.0".to_owned());

    // Another protocol version: 412, naming the one spoken.
    let (status, headers, value) = post(vec![
        ("tus-resumable", "0.2.2".to_owned()),
        ("upload-length", "10".to_owned()),
    ])
    .await;
    assert_eq!(
        (status, &value["code"]),
        (
            StatusCode::PRECONDITION_FAILED,
            &Value::from("unsupported_tus_version")
        )
    );
    assert_eq!(
        headers.get("tus-version").and_then(|v| v.to_str().ok()),
        Some("1.0.0")
    );

    for (extra, status, code) in [
        (vec![], StatusCode::BAD_REQUEST, "missing_upload_length"),
        (
            vec![("upload-length", "ten".to_owned())],
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            vec![("upload-defer-length", "1".to_owned())],
            StatusCode::BAD_REQUEST,
            "defer_length_unsupported",
        ),
        (
            vec![("upload-length", ((1u64 << 30) + 1).to_string())],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            vec![
                ("upload-length", "10".to_owned()),
                ("upload-metadata", "filename not-base64!".to_owned()),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_upload_metadata",
        ),
        (
            vec![
                ("upload-length", "10".to_owned()),
                ("upload-concat", "sideways".to_owned()),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_upload_concat",
        ),
    ] {
        let mut headers = vec![resumable.clone()];
        headers.extend(extra.clone());
        let (got, response_headers, value) = post(headers).await;
        assert_eq!(
            (got, value["code"].as_str().unwrap_or_default()),
            (status, code),
            "{extra:?}: {value}"
        );
        assert_eq!(
            response_headers
                .get("tus-resumable")
                .and_then(|v| v.to_str().ok()),
            Some("1.0.0"),
            "every tus answer carries Tus-Resumable"
        );
    }
}

#[tokio::test]
async fn tus_discovery_and_unknown_routes_answer_without_a_database() {
    let (router, _dir) = offline_router(IngestConfig::default()).await;
    let (status, headers, _) =
        call(&router, Method::OPTIONS, "/v1/uploads", &[], Body::empty()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(get("tus-version"), "1.0.0");
    assert_eq!(get("tus-max-size"), (1u64 << 30).to_string());
    for extension in ["creation", "termination", "concatenation", "checksum"] {
        assert!(
            get("tus-extension").contains(extension),
            "{}",
            get("tus-extension")
        );
    }

    let auth = bearer();
    let authorized = [(header::AUTHORIZATION.as_str(), auth.as_str())];
    for (method, path, status, code) in [
        (
            Method::GET,
            "/v1/nothing-here",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/assets/not-a-uuid",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PATCH,
            "/v1/assets",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let (got, _, value) = call(&router, method.clone(), path, &authorized, Body::empty()).await;
        assert_eq!(
            (got, value["code"].as_str().unwrap_or_default()),
            (status, code),
            "{method} {path}: {value}"
        );
    }
}
