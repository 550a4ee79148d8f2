//! The asset endpoints: create, read, list, delete, and the asset as the API returns it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use cascade_platform::assets::{self, ClaimRefused, NewAsset, SourceClaim};
use cascade_schemas::{AssetId, AssetState, EnvironmentId, PlaybackPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::limits;
use crate::openapi::{
    AssetError, AssetList, AssetView, ErrorBody, PlaybackUrls, RenditionView, SimpleUpload,
    TusUpload, UploadUrls,
};
use crate::request::{encode_cursor, page_request, parse_asset_id, ListQuery};
use crate::state::AppState;

/// Longest title accepted.
const MAX_TITLE_CHARS: usize = 512;
/// Largest metadata object accepted, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest `POST /v1/assets` body: the title and metadata at their limits,
/// escaped and spaced out generously.
pub(crate) const MAX_CREATE_BODY_BYTES: usize = 64 * 1024;

/// The asset as the API returns it.
pub(crate) async fn asset_json(
    state: &AppState,
    asset: &assets::Asset,
) -> Result<AssetView, ApiError> {
    // An archived asset's renditions have no objects until it is restored.
    let renditions = match asset.published_version {
        Some(version) if !asset.state.is_archived() => {
            assets::renditions(&state.pool, asset.id, version).await?
        }
        _ => Vec::new(),
    };
    let base = format!("/play/{}", asset.playback_id);
    // A published version plays, also while a replacement is processing;
    // before one is, the growing first version plays (progressive publish).
    // An archived asset keeps its URLs: a play of them restores it.
    let playable = asset.served_version().is_some();
    let playback = (playable || asset.state.is_archived()).then(|| PlaybackUrls {
        hls: state.playback_url(&format!("{base}/master.m3u8")),
        dash: state.playback_url(&format!("{base}/manifest.mpd")),
    });
    let upload = (asset.state == AssetState::Waiting).then(|| UploadUrls {
        simple: SimpleUpload {
            method: "PUT".to_owned(),
            url: state.url(&format!("/v1/assets/{}/source", asset.id)),
        },
        tus: TusUpload {
            url: state.url("/v1/uploads"),
            upload_metadata: format!(
                "asset_id {}",
                base64::engine::general_purpose::STANDARD.encode(asset.id.to_string())
            ),
        },
    });
    Ok(AssetView {
        id: asset.id.as_uuid(),
        playback_id: asset.playback_id.to_string(),
        playback_policy: asset.playback_policy.to_string(),
        state: asset.state.to_string(),
        playable,
        progress: asset.progress,
        title: asset.title.clone(),
        metadata: asset.metadata.clone(),
        duration_seconds: asset.duration_seconds,
        error: asset.error_code.clone().map(|code| AssetError {
            code,
            message: asset.error_message.clone(),
        }),
        renditions: renditions.into_iter().map(RenditionView::from).collect(),
        quality: asset.quality.clone(),
        playback,
        upload,
        created_at: asset.created_at,
    })
}

/// A new asset.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAsset {
    /// Title (at most 512 characters).
    title: Option<String>,
    /// Any JSON object (at most 16 KiB).
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `public` (default) or `signed`.
    playback_policy: Option<String>,
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// What a creator may set on a new asset, validated.
pub(crate) struct AssetFields {
    title: Option<String>,
    metadata: Value,
    policy: PlaybackPolicy,
}

impl AssetFields {
    /// Validates what the creator sent.
    pub(crate) fn parse(
        title: Option<&str>,
        metadata: Option<Value>,
        policy: Option<&str>,
    ) -> Result<Self, ApiError> {
        if title.is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS) {
            return Err(ApiError::bad_request(
                "invalid_title",
                format!("title is longer than {MAX_TITLE_CHARS} characters"),
            ));
        }
        if title.is_some_and(|t| t.contains('\0')) {
            // Postgres's text cannot store NUL.
            return Err(ApiError::bad_request(
                "invalid_title",
                "title may not contain NUL (\\u0000) characters",
            ));
        }
        let metadata = metadata.unwrap_or_else(|| json!({}));
        if !metadata.is_object() || metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                format!("metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"),
            ));
        }
        if contains_nul(&metadata) {
            // Postgres's jsonb cannot store NUL characters.
            return Err(ApiError::bad_request(
                "invalid_metadata",
                "metadata keys and strings may not contain NUL (\\u0000) characters",
            ));
        }
        let policy = match policy {
            None => PlaybackPolicy::Public,
            Some(text) => text.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_playback_policy",
                    "playback_policy must be \"public\" or \"signed\"",
                )
            })?,
        };
        Ok(Self {
            title: title.map(str::to_owned),
            metadata,
            policy,
        })
    }

    /// The row to insert in `environment`, with the source already claimed
    /// by `claim` if given.
    pub(crate) fn new_asset(
        &self,
        environment: EnvironmentId,
        claim: Option<SourceClaim>,
    ) -> NewAsset<'_> {
        NewAsset {
            environment,
            title: self.title.as_deref(),
            metadata: &self.metadata,
            policy: self.policy,
            source_claim: claim,
        }
    }
}

/// Inserts a new `waiting` asset in the caller's environment.
pub(crate) async fn insert_asset(
    state: &AppState,
    caller: &Caller,
    fields: &AssetFields,
) -> Result<assets::Asset, ApiError> {
    let id = AssetId::new();
    let client = state.pool.get().await?;
    assets::insert(&client, id, &fields.new_asset(caller.environment, None)).await?;
    assets::get_in(&client, caller.environment, id)
        .await?
        .ok_or(ApiError::Internal("asset vanished after insert".to_owned()))
}

/// Creates a waiting asset; the response carries its upload targets.
#[utoipa::path(post, path = "/v1/assets",
    request_body(content = Option<CreateAsset>, content_type = "application/json", description = "Optional; at most 64 KiB."),
    responses((status = 201, body = AssetView),
        (status = 400, body = ErrorBody, description = "`invalid_json` (malformed, unknown fields, nested deeper than 128), \
            `invalid_title`, `invalid_metadata`, `invalid_playback_policy`, `invalid_header`, `body_read_failed`."),
        (status = 401, body = ErrorBody),
        (status = 408, body = ErrorBody, description = "`body_timeout`: the body did not arrive within `ingest.json_body_deadline`."),
        (status = 413, body = ErrorBody, description = "`too_large`: the body is over 64 KiB."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: a body with a Content-Type other than JSON."),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn create_asset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = state.limits.json_deadline;
    let body = limits::read_json_body(&headers, body, MAX_CREATE_BODY_BYTES, deadline).await?;
    let request: CreateAsset = if body.iter().all(u8::is_ascii_whitespace) {
        CreateAsset {
            title: None,
            metadata: None,
            playback_policy: None,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid request body: {e}"))
        })?
    };
    let fields = AssetFields::parse(
        request.title.as_deref(),
        request.metadata,
        request.playback_policy.as_deref(),
    )?;
    let asset = insert_asset(&state, &caller, &fields).await?;
    Ok((StatusCode::CREATED, Json(asset_json(&state, &asset).await?)).into_response())
}

/// One asset: state, progress, error, renditions and playback URLs.
#[utoipa::path(get, path = "/v1/assets/{id}", params(("id" = String, Path, description = "Asset id")),
    responses((status = 200, body = AssetView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn get_asset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AssetView>, ApiError> {
    let id = parse_asset_id(&id)?;
    let asset = assets::get_in(&state.pool.get().await?, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("asset"))?;
    Ok(Json(asset_json(&state, &asset).await?))
}

/// Assets, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/assets", params(ListQuery),
    responses((status = 200, body = AssetList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn list_assets(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AssetList>, ApiError> {
    let (limit, cursor) = page_request(query)?;
    let page = {
        let client = state.pool.get().await?;
        assets::list_in(&client, caller.environment, cursor, limit + 1).await?
    };
    let next = (page.len() as i64 > limit)
        .then(|| page.get(limit as usize - 1))
        .flatten()
        .map(|last| encode_cursor(last.created_at, last.id.as_uuid()));
    let mut data = Vec::with_capacity(page.len());
    for asset in page.iter().take(limit as usize) {
        data.push(asset_json(&state, asset).await?);
    }
    Ok(Json(AssetList {
        data,
        next_cursor: next,
    }))
}

/// Deletes an asset: at once invisible to the API and players (origins
/// are told), its jobs cancelled; a purge job purges the CDN of it and
/// removes its objects once no job of the asset can still write (see
/// `assets::delete` and `cascade_workers::purge`). Deleting again while
/// the purge runs answers 204 too.
#[utoipa::path(delete, path = "/v1/assets/{id}", params(("id" = String, Path, description = "Asset id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn delete_asset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_asset_id(&id)?;
    let deleted = assets::delete(&state.pool, caller.environment, id, PURGE_MAX_ATTEMPTS).await?;
    match deleted {
        assets::Deleted::NotFound => return Err(ApiError::NotFound("asset")),
        assets::Deleted::Already => return Ok(StatusCode::NO_CONTENT),
        assets::Deleted::Now => {}
    }
    // The purge job runs at once: it purges the CDN first (listing what is
    // stored, so the objects stay until then), then removes the objects
    // once no job of the asset can still write.
    state.queue.wake(cascade_schemas::job_kind::PURGE_ASSET);
    Ok(StatusCode::NO_CONTENT)
}

/// Attempts a purge job gets (backing off) while the asset's jobs stop.
const PURGE_MAX_ATTEMPTS: i32 = 20;

/// Maps a refused source claim to the API's answer.
pub(crate) fn claim_refused(refused: ClaimRefused) -> ApiError {
    match refused {
        ClaimRefused::NotFound => ApiError::NotFound("asset"),
        ClaimRefused::HasSource(state) => ApiError::Conflict {
            code: "source_already_uploaded",
            message: format!(
                "the asset is {state}; a source can only be uploaded to a waiting asset"
            ),
        },
        ClaimRefused::Claimed => ApiError::Conflict {
            code: "upload_in_progress",
            message: "another upload of this asset's source is in progress".to_owned(),
        },
    }
}
