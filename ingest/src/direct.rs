//! Direct uploads: one-time upload URLs that an API key holder hands to a
//! creator's or viewer's browser, which uploads with no API key (Mux's
//! direct uploads, Cloudflare Stream's direct creator uploads).
//!
//! - `POST /v1/direct_uploads` (API key) creates the asset (`waiting`, its
//!   source claimed by the direct upload) and the URL
//!   `{public_url}/v1/direct_uploads/{id}/{secret}`. The secret (256 random
//!   bits) is shown once; Postgres keeps its SHA-256. `GET` and
//!   `PUT .../cancel` read and cancel it in the caller's environment.
//! - The URL is a tus 1.0.0 creation endpoint (POST) and, once the upload
//!   exists, that upload's URL (HEAD, PATCH, DELETE); or it takes the whole
//!   file in one `PUT`. [`gate`] authenticates the secret, answers CORS for
//!   the URL's one origin ([`cors`]) and passes a [`Caller`] in the direct
//!   upload's environment and a [`Grant`] on to the handlers ([`url`]),
//!   which reuse `crate::tus` for that one upload only. The state machine
//!   and the source claim's hand-overs are in
//!   `cascade_platform::direct_uploads`.

mod cors;
mod gate;
pub(crate) mod url;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cascade_platform::assets::{self, SourceClaim};
use cascade_platform::direct_uploads::{
    self, CancelRefused, DirectUpload, NewDirectUpload, StartRefused,
};
use cascade_schemas::{AssetId, DirectUploadId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::asset_api::AssetFields;
use crate::auth::{require_key, Caller};
use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::state::AppState;
pub(crate) use gate::Grant;

/// Largest creation request body accepted (the asset's metadata is at most 16 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The direct upload routes: the API's (with a key) and the URLs' (with
/// their secret).
pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let keyed = Router::new()
        .route("/v1/direct_uploads", post(create))
        .route("/v1/direct_uploads/{id}", get(get_one))
        .route("/v1/direct_uploads/{id}/cancel", put(cancel))
        .layer(from_fn_with_state(state.clone(), require_key));
    let by_secret = Router::new()
        .route(
            "/v1/direct_uploads/{id}/{secret}",
            post(url::tus_create)
                .put(url::simple)
                .head(url::tus_head)
                .patch(url::tus_patch)
                .delete(url::tus_terminate)
                .options(url::options),
        )
        // Bodies hold an upload slot of the URL's and of the process (the
        // gate, outside, puts the URL's caller on the request first).
        .route_layer(from_fn_with_state(
            state.limits.slots.clone(),
            crate::limits::upload_slot,
        ))
        .route_layer(from_fn_with_state(state, gate::gate));
    keyed.merge(by_secret)
}

/// The path of a direct upload's URL.
pub(crate) fn url_path(id: DirectUploadId, secret: &str) -> String {
    format!("/v1/direct_uploads/{id}/{secret}")
}

/// Settings of the asset a direct upload creates.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAssetSettings {
    /// Title (at most 512 characters).
    pub title: Option<String>,
    /// Any JSON object (at most 16 KiB).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// `public` (default) or `signed`.
    pub playback_policy: Option<String>,
}

/// A direct upload to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDirectUpload {
    /// The web origin that will upload (`https://app.example`): browsers get
    /// CORS grants for it alone, and requests from other origins are refused.
    /// `*` only where `ingest.direct_uploads.allow_any_origin` is set.
    #[schema(
        pattern = r"^(\*|[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|[Hh][Tt][Tt][Pp][Ss]?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?)$",
        example = "https://app.example",
        max_length = 2048
    )]
    pub cors_origin: String,
    /// Largest file accepted, in bytes: 1 to `ingest.max_upload_size`
    /// (the default).
    #[schema(minimum = 1)]
    pub max_size: Option<u64>,
    /// How long the URL can start its upload, in seconds: 1 to
    /// `ingest.direct_uploads.max_expiry` (default
    /// `ingest.direct_uploads.default_expiry`, 1 hour unless configured).
    #[schema(minimum = 1)]
    pub expires_in_seconds: Option<u64>,
    /// The asset's title, metadata and playback policy.
    pub new_asset_settings: Option<NewAssetSettings>,
}

/// A direct upload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DirectUploadView {
    /// Direct upload id.
    pub id: uuid::Uuid,
    /// The upload URL, carrying its secret: only in the creation response
    /// (it is not stored). A tus creation endpoint (`POST`, and `HEAD`,
    /// `PATCH`, `DELETE` once the upload exists), or `PUT` of the whole
    /// file; no API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub url: Option<String>,
    /// `waiting` (the URL can start one upload), `uploading`, `complete`
    /// (the asset has its source), `cancelled` or `expired` (the URL is dead).
    pub status: String,
    /// The asset the upload fills.
    pub asset_id: uuid::Uuid,
    /// The web origin allowed to use the URL (or `*`).
    pub cors_origin: String,
    /// Largest file accepted, in bytes.
    pub max_size: u64,
    /// Until when the URL can start its upload (a tus upload it started
    /// then lives by its own `Upload-Expires`).
    pub expires_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// The API's view of `upload`; `secret` (known only at creation) gives its URL.
pub(crate) fn view(
    state: &AppState,
    upload: &DirectUpload,
    secret: Option<&str>,
) -> DirectUploadView {
    DirectUploadView {
        id: upload.id.as_uuid(),
        url: secret.map(|secret| state.url(&url_path(upload.id, secret))),
        status: upload.state.to_string(),
        asset_id: upload.asset_id.as_uuid(),
        cors_origin: upload.cors_origin.clone(),
        max_size: upload.max_size,
        expires_at: upload.expires_at,
        created_at: upload.created_at,
    }
}

/// The answer when the URL cannot start an upload.
pub(crate) fn start_refused(refused: StartRefused) -> ApiError {
    match refused {
        StartRefused::NotFound => ApiError::NotFound("upload URL"),
        StartRefused::Closed(state) => gate::gone(state),
        StartRefused::Used(_) => ApiError::Conflict {
            code: "direct_upload_used",
            message: "this upload URL was used: it takes one upload".to_owned(),
        },
        StartRefused::InProgress => ApiError::Conflict {
            code: "upload_in_progress",
            message: "an upload through this URL is in progress".to_owned(),
        },
    }
}

/// Starts the URL's one tus upload in the creation's transaction `tx`
/// (`crate::tus::create_upload`): returns the asset it fills.
pub(crate) async fn start_tus(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &AppState,
    grant: &Grant,
) -> Result<AssetId, ApiError> {
    direct_uploads::start_tus(tx, grant.id, state.config.upload_expiry)
        .await?
        .map_err(start_refused)
}

/// A creation request, validated.
struct Validated {
    cors_origin: String,
    max_size: u64,
    expires_in: Duration,
    asset: AssetFields,
}

/// Parses and checks a creation request body (before any lookup).
fn validate(state: &AppState, body: &[u8]) -> Result<Validated, ApiError> {
    let request: CreateDirectUpload = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body must be a JSON object with at least cors_origin: {e}"),
        )
    })?;
    let direct = &state.config.direct_uploads;
    let cors_origin = cors::parse_origin(&request.cors_origin, direct.allow_any_origin)
        .map_err(|e| ApiError::bad_request("invalid_cors_origin", e.to_string()))?;
    let limit = state.config.max_upload_size.0;
    let max_size = request.max_size.unwrap_or(limit);
    if !(1..=limit).contains(&max_size) {
        return Err(ApiError::bad_request(
            "invalid_max_size",
            format!("max_size must be between 1 and {limit} bytes (ingest.max_upload_size)"),
        ));
    }
    let longest = direct.max_expiry.as_secs().max(1);
    let expires_in = match request.expires_in_seconds {
        None => direct.default_expiry,
        Some(seconds) if (1..=longest).contains(&seconds) => Duration::from_secs(seconds),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                format!(
                    "expires_in_seconds must be between 1 and {longest} (ingest.direct_uploads.max_expiry)"
                ),
            ))
        }
    };
    let settings = request.new_asset_settings.unwrap_or_default();
    let asset = AssetFields::parse(
        settings.title.as_deref(),
        settings.metadata,
        settings.playback_policy.as_deref(),
    )?;
    Ok(Validated {
        cors_origin,
        max_size,
        expires_in,
        asset,
    })
}

/// The whole body, at most [`MAX_BODY_BYTES`] (413 above, before reading
/// when the declared length is over), within `ingest.json_body_deadline`.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let bytes = crate::limits::read_json_body(
        headers,
        body,
        MAX_BODY_BYTES,
        state.config.json_body_deadline,
    )
    .await?;
    Ok(bytes.to_vec())
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Creates a direct upload and its asset; the response carries the upload
/// URL, shown this once (`Cache-Control: no-store`).
#[utoipa::path(post, path = "/v1/direct_uploads", tag = "direct uploads", operation_id = "create_direct_upload",
    request_body(content = CreateDirectUpload, content_type = "application/json", description = "At most 64 KiB."),
    responses(
        (status = 201, body = DirectUploadView, description = "The direct upload (`waiting`) with its `url`; its asset is `waiting`."),
        (status = 400, body = ErrorBody, description = "`invalid_json` (not the object described, unknown fields included), \
            `invalid_cors_origin` (not an exact web origin, or `*` where not allowed), `invalid_max_size`, `invalid_expiry`, \
            `invalid_title`, `invalid_metadata`, `invalid_playback_policy`, `body_read_failed`, `invalid_header`."),
        (status = 401, body = ErrorBody),
        (status = 408, body = ErrorBody, description = "The body stopped arriving."),
        (status = 413, body = ErrorBody, description = "The body is over 64 KiB."),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&state, &headers, body).await?;
    let request = validate(&state, &body)?;
    let id = DirectUploadId::new();
    let secret = direct_uploads::new_secret();
    let hash = direct_uploads::hash_secret(&secret);
    let asset = AssetId::new();
    // The asset, its source claimed by the direct upload until the URL
    // expires, and the direct upload: together or not at all.
    let claim = SourceClaim {
        id: id.as_uuid(),
        hold: request.expires_in,
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    assets::insert(
        &tx,
        asset,
        &request.asset.new_asset(caller.environment, Some(claim)),
    )
    .await?;
    let upload = direct_uploads::insert(
        &tx,
        &NewDirectUpload {
            id,
            environment: caller.environment,
            asset,
            secret_hash: &hash,
            cors_origin: &request.cors_origin,
            max_size: request.max_size,
            expires_in: request.expires_in,
        },
    )
    .await?;
    tx.commit().await?;
    let view = view(&state, &upload, Some(&secret));
    Ok(no_store((StatusCode::CREATED, Json(view)).into_response()))
}

fn parse_id(raw: &str) -> Result<DirectUploadId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("direct upload"))
}

/// One direct upload of the caller's environment (without its URL).
#[utoipa::path(get, path = "/v1/direct_uploads/{id}", tag = "direct uploads", operation_id = "get_direct_upload",
    params(("id" = String, Path, format = Uuid, description = "Direct upload id")),
    responses(
        (status = 200, body = DirectUploadView, description = "The direct upload; `url` is only in the creation response."),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such direct upload in the key's environment."),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn get_one(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<DirectUploadView>, ApiError> {
    let id = parse_id(&id)?;
    let upload = direct_uploads::get_in(&state.pool.get().await?, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("direct upload"))?;
    Ok(Json(view(&state, &upload, None)))
}

/// Cancels a waiting direct upload: its URL answers 410 from then on, and
/// its asset (still `waiting`) may get its source by another path or be
/// deleted. Cancelling a cancelled one answers the same.
#[utoipa::path(put, path = "/v1/direct_uploads/{id}/cancel", tag = "direct uploads", operation_id = "cancel_direct_upload",
    params(("id" = String, Path, format = Uuid, description = "Direct upload id")),
    responses(
        (status = 200, body = DirectUploadView, description = "The direct upload, `cancelled`."),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such direct upload in the key's environment."),
        (status = 409, body = ErrorBody, description = "`direct_upload_not_waiting`: an upload through it started, or it is complete or expired."),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<DirectUploadView>, ApiError> {
    let id = parse_id(&id)?;
    match direct_uploads::cancel(&state.pool, caller.environment, id).await? {
        Ok(upload) => Ok(Json(view(&state, &upload, None))),
        Err(CancelRefused::NotFound) => Err(ApiError::NotFound("direct upload")),
        Err(CancelRefused::NotWaiting(status)) => Err(ApiError::Conflict {
            code: "direct_upload_not_waiting",
            message: format!("the direct upload is {status}; only a waiting one can be cancelled"),
        }),
    }
}

/// Stores `expired` on URLs past their time, releasing their claims
/// (`ingest.cleanup_interval`, with the tus sweeper); returns how many.
pub(crate) async fn expire(state: &AppState) -> Result<usize, ApiError> {
    Ok(direct_uploads::expire(&state.pool).await?)
}

#[cfg(test)]
mod tests {
    use axum::http::{header, Method};
    use cascade_platform::config::IngestConfig;

    use super::*;

    use crate::test_router::{call, offline_router, KEY};

    async fn create(router: &Router, body: &str) -> (StatusCode, String) {
        let auth = format!("Bearer {KEY}");
        let (status, _, value) = call(
            router,
            Method::POST,
            "/v1/direct_uploads",
            &[
                (header::AUTHORIZATION.as_str(), &auth),
                (header::CONTENT_TYPE.as_str(), "application/json"),
            ],
            body.to_owned(),
        )
        .await;
        assert!(value["message"].is_string(), "{value}");
        (
            status,
            value["code"].as_str().unwrap_or_default().to_owned(),
        )
    }

    #[tokio::test]
    async fn creation_refuses_bad_requests_before_any_lookup() {
        let (router, _dir) = offline_router(IngestConfig::default()).await;
        let origin = r#""cors_origin": "https://app.example""#;
        let cases: Vec<(String, StatusCode, &str)> = vec![
            (String::new(), StatusCode::BAD_REQUEST, "invalid_json"),
            ("{".to_owned(), StatusCode::BAD_REQUEST, "invalid_json"),
            ("null".to_owned(), StatusCode::BAD_REQUEST, "invalid_json"),
            ("[]".to_owned(), StatusCode::BAD_REQUEST, "invalid_json"),
            ("{}".to_owned(), StatusCode::BAD_REQUEST, "invalid_json"),
            (
                r#"{"cors_origin": 5}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                format!(r#"{{{origin}, "timeout": 60}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                format!(r#"{{{origin}, "max_size": -1}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                format!(r#"{{{origin}, "new_asset_settings": {{"colour": "red"}}}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                r#"{"cors_origin": "*"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_cors_origin",
            ),
            (
                r#"{"cors_origin": "https://app.example/"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_cors_origin",
            ),
            (
                r#"{"cors_origin": "app.example"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_cors_origin",
            ),
            (
                r#"{"cors_origin": "javascript://x"}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_cors_origin",
            ),
            (
                r#"{"cors_origin": ""}"#.to_owned(),
                StatusCode::BAD_REQUEST,
                "invalid_cors_origin",
            ),
            (
                format!(r#"{{{origin}, "max_size": 0}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_max_size",
            ),
            (
                format!(r#"{{{origin}, "max_size": {}}}"#, (1u64 << 30) + 1),
                StatusCode::BAD_REQUEST,
                "invalid_max_size",
            ),
            (
                format!(r#"{{{origin}, "expires_in_seconds": 0}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_expiry",
            ),
            (
                format!(r#"{{{origin}, "expires_in_seconds": 86401}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_expiry",
            ),
            (
                format!(r#"{{{origin}, "new_asset_settings": {{"playback_policy": "secret"}}}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_playback_policy",
            ),
            (
                format!(r#"{{{origin}, "new_asset_settings": {{"metadata": [1]}}}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_metadata",
            ),
            (
                format!(r#"{{{origin}, "new_asset_settings": {{"title": "a\u0000b"}}}}"#),
                StatusCode::BAD_REQUEST,
                "invalid_title",
            ),
            (
                format!(r#"{{{origin}{}}}"#, " ".repeat(MAX_BODY_BYTES)),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
        ];
        for (body, status, code) in cases {
            assert_eq!(
                create(&router, &body).await,
                (status, code.to_owned()),
                "{body:.80}"
            );
        }
    }

    #[tokio::test]
    async fn any_origin_only_where_the_operator_allows_it() {
        let mut config = IngestConfig::default();
        config.direct_uploads.allow_any_origin = true;
        let (router, _dir) = offline_router(config).await;
        // Valid: it gets as far as the database, which is not there.
        let (status, code) = create(&router, r#"{"cors_origin": "*"}"#).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
    }

    #[tokio::test]
    async fn the_api_needs_a_key_and_the_url_a_well_formed_secret() {
        let (router, _dir) = offline_router(IngestConfig::default()).await;
        for (method, path) in [
            (Method::POST, "/v1/direct_uploads"),
            (
                Method::GET,
                "/v1/direct_uploads/7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10",
            ),
            (
                Method::PUT,
                "/v1/direct_uploads/7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10/cancel",
            ),
        ] {
            let (status, _, value) = call(&router, method.clone(), path, &[], Body::empty()).await;
            assert_eq!(
                (status, &value["code"]),
                (StatusCode::UNAUTHORIZED, &Value::from("unauthorized")),
                "{method} {path}"
            );
        }
        // Malformed URLs are unknown before any lookup, preflights included,
        // and get no CORS grant.
        let secret = "A".repeat(direct_uploads::SECRET_LEN);
        let short = "A".repeat(direct_uploads::SECRET_LEN - 1);
        for path in [
            format!("/v1/direct_uploads/not-a-uuid/{secret}"),
            format!("/v1/direct_uploads/7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10/{short}"),
            format!("/v1/direct_uploads/7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10/{short}%3D"),
        ] {
            for method in [
                Method::OPTIONS,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ] {
                let (status, headers, value) = call(
                    &router,
                    method.clone(),
                    &path,
                    &[
                        ("origin", "https://app.example"),
                        ("access-control-request-method", "PATCH"),
                        ("tus-resumable", "1.0.0"),
                    ],
                    Body::empty(),
                )
                .await;
                assert_eq!(
                    (status, &value["code"]),
                    (StatusCode::NOT_FOUND, &Value::from("not_found")),
                    "{method} {path}"
                );
                assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            }
        }
    }

    #[test]
    fn urls_and_views() {
        let id: DirectUploadId = "7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10".parse().unwrap();
        assert_eq!(
            url_path(id, "abc"),
            "/v1/direct_uploads/7d9f6a3c-1f0e-4c2b-9a57-3e1c2b9d8f10/abc"
        );
        let gone = start_refused(StartRefused::Closed(
            cascade_schemas::DirectUploadState::Expired,
        ));
        assert_eq!(gone.into_response().status(), StatusCode::GONE);
        let used = start_refused(StartRefused::Used(
            cascade_schemas::DirectUploadState::Complete,
        ));
        assert_eq!(used.into_response().status(), StatusCode::CONFLICT);
    }
}
