//! `POST /v1/assets/{id}/playback_tokens` and
//! `POST /v1/live_streams/{id}/playback_tokens`: a signed playback token for
//! an asset or live stream with the `signed` policy, and its playback URLs
//! carrying it.
//!
//! The token is minted by `cascade_platform::playback_token::mint` with the
//! first key of `playback.signing_keys` (the origin verifies it with any of
//! them), living `ttl_seconds` (1 to `playback.max_token_ttl`, default
//! `playback.default_token_ttl`). Nothing is stored: a token is valid until
//! it expires or its key is removed from the config.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_platform::assets;
use cascade_platform::playback_token::{self, MintError};
use cascade_schemas::{AssetId, PlaybackId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{ErrorBody, PlaybackUrls};
use crate::request::parse_asset_id;
use crate::state::AppState;

/// Largest request body accepted (it holds one optional number).
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// What a token is asked for with; an empty body (or `null`) takes the defaults.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlaybackToken {
    /// Lifetime in seconds, from 1 to `playback.max_token_ttl` (1 day unless
    /// configured otherwise). Default `playback.default_token_ttl` (1 hour
    /// unless configured otherwise).
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// A signed playback token and the playback URLs carrying it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaybackTokenView {
    /// The token: `<key_id>.<expiry>.<signature>`. Players pass it as
    /// `?token=`; the origin adds it to every URI of the manifests it serves.
    pub token: String,
    /// Id of the signing key.
    pub key_id: String,
    /// When the token stops working (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// The asset's HLS and DASH URLs with the token.
    pub playback: PlaybackUrls,
}

/// The HLS and DASH URLs of `playback_id` under `public_url`, carrying `token`.
pub fn signed_playback_urls(
    public_url: &str,
    playback_id: &PlaybackId,
    token: &str,
) -> PlaybackUrls {
    let base = format!("{}/play/{playback_id}", public_url.trim_end_matches('/'));
    PlaybackUrls {
        hls: format!("{base}/master.m3u8?token={token}"),
        dash: format!("{base}/manifest.mpd?token={token}"),
    }
}

/// Mints a playback token for a signed asset. The response is not to be
/// cached (`Cache-Control: no-store`).
#[utoipa::path(post, path = "/v1/assets/{id}/playback_tokens", operation_id = "create_playback_token",
    params(("id" = String, Path, format = Uuid, description = "Asset id")),
    request_body(content = Option<CreatePlaybackToken>, content_type = "application/json",
        description = "Optional; at most 4 KiB."),
    responses(
        (status = 201, body = PlaybackTokenView, description = "The token, its key id and expiry, and the signed playback URLs."),
        (status = 400, body = ErrorBody, description = "`invalid_json`, or `invalid_ttl`: `ttl_seconds` out of range."),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such asset."),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `ingest.json_body_deadline`."),
        (status = 409, body = ErrorBody, description = "`not_signed`: the asset's playback policy is public; its URLs need no token."),
        (status = 413, body = ErrorBody, description = "The body is over 4 KiB."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: a body with a Content-Type other than JSON."),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "`signing_not_configured`: no playback signing key is configured; or a dependency is down."),
    ))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_asset_id(&id)?;
    let ttl = read_ttl(&state, &headers, body).await?;
    let asset = find_asset(&state, &caller, id).await?;
    respond(
        &state,
        ttl,
        &asset.playback_id,
        asset.playback_policy,
        "asset",
    )
}

/// A signed playback token for a live stream with the `signed` policy.
#[utoipa::path(post, path = "/v1/live_streams/{id}/playback_tokens", tag = "live", operation_id = "create_live_playback_token",
    params(("id" = String, Path, format = Uuid, description = "Live stream id")),
    request_body(content = Option<CreatePlaybackToken>, content_type = "application/json",
        description = "Optional; at most 4 KiB."),
    responses(
        (status = 201, body = PlaybackTokenView, description = "The token, its key id and expiry, and the signed playback URLs."),
        (status = 400, body = ErrorBody, description = "`invalid_json`, or `invalid_ttl`: `ttl_seconds` out of range."),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such live stream."),
        (status = 408, body = ErrorBody, description = "The body did not arrive within `ingest.json_body_deadline`."),
        (status = 409, body = ErrorBody, description = "`not_signed`: the stream's playback policy is public; its URLs need no token."),
        (status = 413, body = ErrorBody, description = "The body is over 4 KiB."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: a body with a Content-Type other than JSON."),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "`signing_not_configured`: no playback signing key is configured; or a dependency is down."),
    ))]
pub(crate) async fn create_for_live_stream(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = crate::request::parse_live_stream_id(&id)?;
    let ttl = read_ttl(&state, &headers, body).await?;
    let stream =
        cascade_platform::live_streams::get_in(&state.pool.get().await?, caller.environment, id)
            .await?
            .ok_or(ApiError::NotFound("live stream"))?;
    respond(
        &state,
        ttl,
        &stream.playback_id,
        stream.playback_policy,
        "live stream",
    )
}

/// The request's token lifetime, checked against the config.
async fn read_ttl(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Duration, ApiError> {
    let deadline = state.limits.json_deadline;
    let body = crate::limits::read_json_body(headers, body, MAX_BODY_BYTES, deadline).await?;
    let request = parse_request(&body)?;
    playback_token::token_ttl(
        &state.playback,
        request.ttl_seconds.map(Duration::from_secs),
    )
    .map_err(mint_error)
}

/// Mints the token for `playback_id` (of a `what` with `policy`).
fn respond(
    state: &AppState,
    ttl: Duration,
    playback_id: &PlaybackId,
    policy: cascade_schemas::PlaybackPolicy,
    what: &str,
) -> Result<Response, ApiError> {
    if policy != cascade_schemas::PlaybackPolicy::Signed {
        return Err(ApiError::Conflict {
            code: "not_signed",
            message: format!(
                "the {what}'s playback policy is {policy}: its playback URLs need no token"
            ),
        });
    }
    let minted =
        playback_token::mint(&state.playback, playback_id, ttl, now_unix()).map_err(mint_error)?;
    let view = PlaybackTokenView {
        playback: signed_playback_urls(
            state.playback.base_url(&state.config.public_url),
            playback_id,
            &minted.token,
        ),
        token: minted.token,
        key_id: minted.key_id.to_string(),
        expires_at: minted.expires_at,
    };
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn find_asset(
    state: &AppState,
    caller: &Caller,
    id: AssetId,
) -> Result<assets::Asset, ApiError> {
    assets::get_in(&state.pool.get().await?, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("asset"))
}

fn parse_request(body: &[u8]) -> Result<CreatePlaybackToken, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreatePlaybackToken::default());
    }
    serde_json::from_slice::<Option<CreatePlaybackToken>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

fn mint_error(error: MintError) -> ApiError {
    match error {
        MintError::InvalidTtl { max } => ApiError::bad_request(
            "invalid_ttl",
            format!(
                "ttl_seconds must be between 1 and {} (playback.max_token_ttl)",
                max.as_secs()
            ),
        ),
        MintError::NoSigningKey => ApiError::NotConfigured {
            code: "signing_not_configured",
            message: "no playback signing key is configured on this deployment".to_owned(),
        },
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, Request};
    use axum::Router;
    use cascade_platform::config::{IngestConfig, PlaybackConfig, Secret, SigningKeyConfig};

    use tower::ServiceExt;

    use super::*;

    const KEY: &str = "csk_unit_test_key";

    /// The API over a pool that never connects: only requests refused
    /// before the asset lookup can be answered.
    async fn offline_router(playback: PlaybackConfig) -> (Router, tempfile::TempDir) {
        crate::test_router::offline_router_with(IngestConfig::default(), playback).await
    }

    fn keys() -> PlaybackConfig {
        PlaybackConfig {
            signing_keys: vec![SigningKeyConfig {
                id: "k1".parse().unwrap(),
                secret: Secret::new("a secret of sixteen bytes"),
            }],
            ..PlaybackConfig::default()
        }
    }

    async fn post(router: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, String) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(value["message"].is_string(), "{value}");
        (
            status,
            value["code"].as_str().unwrap_or_default().to_owned(),
        )
    }

    const ASSET: &str = "/v1/assets/7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10/playback_tokens";

    #[tokio::test]
    async fn refuses_bad_requests_before_any_lookup() {
        let (router, _dir) = offline_router(keys()).await;
        let cases: Vec<(&str, Body, StatusCode, &str)> = vec![
            (
                "/v1/assets/not-a-uuid/playback_tokens",
                Body::empty(),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                ASSET,
                Body::from("{"),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                ASSET,
                Body::from(r#"{"ttl": 60}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                ASSET,
                Body::from(r#"{"ttl_seconds": -1}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                ASSET,
                Body::from(r#"{"ttl_seconds": 1.5}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                ASSET,
                Body::from(r#"{"ttl_seconds": 0}"#),
                StatusCode::BAD_REQUEST,
                "invalid_ttl",
            ),
            (
                ASSET,
                Body::from(r#"{"ttl_seconds": 86401}"#),
                StatusCode::BAD_REQUEST,
                "invalid_ttl",
            ),
            (
                ASSET,
                Body::from(r#"{"ttl_seconds": 18446744073709551615}"#),
                StatusCode::BAD_REQUEST,
                "invalid_ttl",
            ),
            (
                ASSET,
                Body::from(format!(r#"{{"ttl_seconds": 60{}}}"#, " ".repeat(5000))),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
        ];
        for (path, body, status, code) in cases {
            assert_eq!(
                post(&router, path, body).await,
                (status, code.to_owned()),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_cut_off() {
        let (router, _dir) = offline_router(keys()).await;
        let chunks = futures::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
        );
        assert_eq!(
            post(&router, ASSET, Body::from_stream(chunks)).await,
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large".to_owned())
        );
    }

    #[tokio::test]
    async fn needs_an_api_key() {
        let (router, _dir) = offline_router(keys()).await;
        let request = Request::builder()
            .method(Method::POST)
            .uri(ASSET)
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn request_bodies() {
        assert_eq!(parse_request(b"").unwrap().ttl_seconds, None);
        assert_eq!(parse_request(b" \n").unwrap().ttl_seconds, None);
        assert_eq!(parse_request(b"null").unwrap().ttl_seconds, None);
        assert_eq!(parse_request(b"{}").unwrap().ttl_seconds, None);
        assert_eq!(
            parse_request(br#"{"ttl_seconds": null}"#)
                .unwrap()
                .ttl_seconds,
            None
        );
        assert_eq!(
            parse_request(br#"{"ttl_seconds": 90}"#)
                .unwrap()
                .ttl_seconds,
            Some(90)
        );
        assert!(parse_request(b"[]").is_err());
        assert!(parse_request(br#"{"ttl_seconds": "90"}"#).is_err());
    }

    #[test]
    fn no_key_is_a_stable_503() {
        let error = mint_error(MintError::NoSigningKey);
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn urls_carry_the_token() {
        let pid: PlaybackId = "abcdefghijklmnopqrstuvwx".parse().unwrap();
        let urls = signed_playback_urls("https://media.example/", &pid, "k1.5.sig");
        assert_eq!(
            urls.hls,
            "https://media.example/play/abcdefghijklmnopqrstuvwx/master.m3u8?token=k1.5.sig"
        );
        assert_eq!(
            urls.dash,
            "https://media.example/play/abcdefghijklmnopqrstuvwx/manifest.mpd?token=k1.5.sig"
        );
    }
}
