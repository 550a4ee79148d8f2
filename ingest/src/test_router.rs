//! The middle layer of ingest's tests: the whole API router driven in
//! process with `tower::ServiceExt::oneshot` (no socket), over a pool that
//! never connects. Only requests answered before any database lookup can
//! succeed; the rest must end in a clean `503 unavailable`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use cascade_platform::config::{
    ByteSize, DatabaseConfig, IngestConfig, PlaybackConfig, QueueConfig, Secret, StorageConfig,
    TranscodeConfig,
};
use cascade_platform::{db, ObjectStore, Queue};
use serde_json::Value;
use tower::ServiceExt;

use crate::state::AppState;

/// The bootstrap API key of the offline router.
pub(crate) const KEY: &str = "csk_unit_test_key";

/// The API with `config` (bootstrap key [`KEY`], 1 GiB uploads) over a pool
/// that never connects and a scratch local store.
pub(crate) async fn offline_router(config: IngestConfig) -> (Router, tempfile::TempDir) {
    offline_router_with(config, PlaybackConfig::default()).await
}

/// [`offline_router`] with these playback settings (signing keys, public URL).
pub(crate) async fn offline_router_with(
    config: IngestConfig,
    playback: PlaybackConfig,
) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("scratch directory");
    let store = ObjectStore::from_config(&StorageConfig {
        local_root: dir.path().to_owned(),
        ..StorageConfig::default()
    })
    .await
    .expect("local store");
    let pool = db::pool(&DatabaseConfig {
        url: Secret::new("postgres://nobody@127.0.0.1:1/none"),
        connect_timeout: Duration::from_millis(100),
        ..DatabaseConfig::default()
    })
    .expect("pool");
    let state = AppState::new(
        pool.clone(),
        store,
        Queue::new(pool, QueueConfig::default()),
        IngestConfig {
            bootstrap_key: Secret::new(KEY),
            max_upload_size: ByteSize(1 << 30),
            ..config
        },
        TranscodeConfig::default(),
    )
    .with_playback(playback)
    .with_default_environment(cascade_schemas::EnvironmentId::new());
    (crate::router(Arc::new(state)), dir)
}

/// One request: (status, headers, JSON body or `Null`).
pub(crate) async fn call(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(body.into()).expect("request"))
        .await
        .expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}
