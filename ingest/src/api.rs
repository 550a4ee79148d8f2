//! Routes, the asset endpoints and the simple upload.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use cascade_platform::assets::{self, ClaimRefused, NewAsset, SourceClaim};
use cascade_platform::config::{IngestConfig, PlaybackConfig, TranscodeConfig, WebhooksConfig};
use cascade_platform::{ObjectStore, Queue};
use cascade_schemas::{AssetId, AssetState, EnvironmentId, ObjectKey, PlaybackPolicy};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::{require_key, Authenticator, Caller};
use crate::body::BodyReader;
use crate::error::ApiError;
use crate::limits::{self, Limits};
use crate::openapi::{
    ApiDoc, AssetError, AssetList, AssetView, BinaryBody, ErrorBody, PlaybackUrls, RenditionView,
    SimpleUpload, TusUpload, UploadUrls,
};
use crate::source::{self, SourceOf};
use crate::{tus, webhook_endpoints};

/// Longest title accepted.
const MAX_TITLE_CHARS: usize = 512;
/// Largest metadata object accepted, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest `POST /v1/assets` body: the title and metadata at their limits,
/// escaped and spaced out generously.
pub(crate) const MAX_CREATE_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
pub struct AppState {
    /// Postgres.
    pub pool: Pool,
    /// Object store.
    pub store: ObjectStore,
    /// Job queue.
    pub queue: Queue,
    /// `[ingest]` config.
    pub config: IngestConfig,
    /// `[transcode]` config (the probe's limits).
    pub transcode: TranscodeConfig,
    /// `[playback]` config: the keys and lifetimes of minted playback
    /// tokens. No keys unless [`AppState::with_playback`] sets them.
    pub playback: PlaybackConfig,
    /// `[webhooks]` config (whether creators may register private targets).
    pub webhooks: WebhooksConfig,
    /// Key lookups, their cache and the request budgets.
    pub auth: Authenticator,
    /// Body pace and size limits, and the uploads in progress.
    pub limits: Limits,
}

impl AppState {
    /// State for the routes.
    pub fn new(
        pool: Pool,
        store: ObjectStore,
        queue: Queue,
        config: IngestConfig,
        transcode: TranscodeConfig,
    ) -> Self {
        Self {
            pool,
            store,
            queue,
            auth: Authenticator::new(config.key_cache_ttl),
            limits: Limits::from_config(&config),
            config,
            transcode,
            playback: PlaybackConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }

    /// The environment of the bootstrap key, the watch folder and imports
    /// (`ingest.default_environment`), resolved by the caller; otherwise it
    /// is looked up (and created) at first use.
    pub fn with_default_environment(self, environment: EnvironmentId) -> Self {
        let _ = self.auth.bootstrap_environment.set(environment);
        self
    }

    /// The `[webhooks]` config.
    pub fn with_webhooks(mut self, webhooks: WebhooksConfig) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// The `[playback]` config (signing keys, token lifetimes).
    pub fn with_playback(mut self, playback: PlaybackConfig) -> Self {
        self.playback = playback;
        self
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url.trim_end_matches('/'))
    }
}

/// The ingest routes (`/v1/...`), authenticated with API keys. tus's
/// `OPTIONS /v1/uploads` (discovery) needs no key.
pub fn router(state: Arc<AppState>) -> Router {
    // Requests carrying an upload's bytes hold one of the key's and the
    // process's upload slots (crate::limits).
    let uploads = Router::new()
        .route("/v1/assets/{id}/source", put(put_source))
        .route("/v1/assets/{id}/replacement", put(put_replacement))
        .route("/v1/uploads", post(tus::create))
        .route(
            "/v1/uploads/{id}",
            axum::routing::head(tus::head)
                .patch(tus::patch)
                .delete(tus::terminate),
        )
        .route_layer(from_fn_with_state(
            state.limits.slots.clone(),
            limits::upload_slot,
        ));
    let authenticated = Router::new()
        .route("/v1/assets", post(create_asset).get(list_assets))
        .route("/v1/assets/{id}", get(get_asset).delete(delete_asset))
        .route(
            "/v1/assets/{id}/playback_tokens",
            post(crate::playback_tokens::create),
        )
        .route(
            "/v1/webhook_endpoints",
            post(webhook_endpoints::create).get(webhook_endpoints::list),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhook_endpoints::get).delete(webhook_endpoints::delete),
        )
        .merge(uploads)
        .layer(from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/v1/uploads", axum::routing::options(tus::options))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(<ApiDoc as utoipa::OpenApi>::openapi()) }),
        )
        .merge(authenticated)
        .merge(crate::direct::router(state.clone()))
        // Every handler reads its body itself, under its own limits (uploads:
        // ingest.max_upload_size and the pace, as they stream; JSON: a few
        // KiB, crate::limits::read_json_body). This only bounds any
        // extractor that buffers a body (`Bytes`, `Json`), should one appear.
        .layer(DefaultBodyLimit::max(MAX_CREATE_BODY_BYTES))
        .with_state(state)
}

pub(crate) fn parse_asset_id(raw: &str) -> Result<AssetId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("asset"))
}

/// The asset as the API returns it.
pub(crate) async fn asset_json(
    state: &AppState,
    asset: &assets::Asset,
) -> Result<AssetView, ApiError> {
    let renditions = match asset.published_version {
        Some(version) => assets::renditions(&state.pool, asset.id, version).await?,
        None => Vec::new(),
    };
    let base = format!("/play/{}", asset.playback_id);
    // A published version plays, also while a replacement is processing.
    let playback = asset.published_version.is_some().then(|| PlaybackUrls {
        hls: state.url(&format!("{base}/master.m3u8")),
        dash: state.url(&format!("{base}/manifest.mpd")),
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
        progress: asset.progress,
        title: asset.title.clone(),
        metadata: asset.metadata.clone(),
        duration_seconds: asset.duration_seconds,
        error: asset.error_code.clone().map(|code| AssetError {
            code,
            message: asset.error_message.clone(),
        }),
        renditions: renditions.into_iter().map(RenditionView::from).collect(),
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 100 (default 20). Read as text so a bad value gets
    /// the API's JSON error rather than the framework's plain-text one.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn encode_cursor(created_at: DateTime<Utc>, id: AssetId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{id}", created_at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, uuid::Uuid), ApiError> {
    let invalid = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    Ok((
        DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id.parse().map_err(|_| invalid())?,
    ))
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
    // The framework's own rejection is plain text; the API answers JSON.
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(
            "invalid_query",
            format!("bad query string: {}", rejection.body_text()),
        )
    })?;
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(text) => text.trim().parse::<i64>().unwrap_or(0),
    };
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 100",
        ));
    }
    let cursor = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = {
        let client = state.pool.get().await?;
        assets::list_in(&client, caller.environment, cursor, limit + 1).await?
    };
    let next = (page.len() as i64 > limit)
        .then(|| page.get(limit as usize - 1))
        .flatten()
        .map(|last| encode_cursor(last.created_at, last.id));
    let mut data = Vec::with_capacity(page.len());
    for asset in page.iter().take(limit as usize) {
        data.push(asset_json(&state, asset).await?);
    }
    Ok(Json(AssetList {
        data,
        next_cursor: next,
    }))
}

/// Deletes an asset: at once invisible to the API and players, its jobs
/// cancelled; its objects are removed now and, by a purge job, again once
/// no job of the asset can still write (see `assets::delete`). Deleting
/// again while the purge runs answers 204 too.
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
    let uploads = match deleted {
        assets::Deleted::NotFound => return Err(ApiError::NotFound("asset")),
        assets::Deleted::Already => return Ok(StatusCode::NO_CONTENT),
        assets::Deleted::Now { uploads } => uploads,
    };
    state.queue.wake(cascade_schemas::job_kind::PURGE_ASSET);
    // Most objects go now; the purge job removes whatever a stopping job or
    // request still writes, and the row.
    if let Err(error) = assets::remove_objects(&state.store, id, &uploads).await {
        tracing::warn!(asset = %id, error = %error, "cannot remove a deleted asset's objects yet; its purge job retries");
    }
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

pub(crate) fn declared_length(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(ApiError::bad_request(
                "invalid_header",
                format!("{name} must be a non-negative integer"),
            )),
    }
}

/// `PUT /v1/assets/{id}/source`: the whole file in one request.
#[utoipa::path(put, path = "/v1/assets/{id}/source", params(("id" = String, Path, description = "Asset id")),
    request_body(content = BinaryBody, content_type = "application/octet-stream"),
    responses((status = 202, body = AssetView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 408, body = ErrorBody, description = "`body_timeout`: the body stalled for `ingest.body_timeout`, came slower \
            than `ingest.body_min_rate`, or took longer than `ingest.body_deadline`; the asset waits for its source again."),
        (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "`rate_limited`, or `too_many_uploads`: the key (`ingest.max_uploads_per_key`) \
            or the server (`ingest.max_uploads`) has as many uploads in progress as it takes; refused before the body is read, \
            with Retry-After.")))]
pub(crate) async fn put_source(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_asset_id(&id)?;
    simple_upload(&state, &caller, id, false, &headers, body).await
}

/// `PUT /v1/assets/{id}/replacement`: a new source for a ready (or
/// errored) asset, in one request. It makes the next output version; the
/// published one keeps playing until the new one is published.
#[utoipa::path(put, path = "/v1/assets/{id}/replacement", params(("id" = String, Path, description = "Asset id")),
    request_body(content = BinaryBody, content_type = "application/octet-stream"),
    responses((status = 202, body = AssetView, description = "Stored and probed: the asset is `processing` its next version."),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 408, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`replacement_not_allowed` (the asset is waiting for its first source, or processing), `upload_in_progress`."),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "Not media we can process; the asset is unchanged."),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn put_replacement(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_asset_id(&id)?;
    simple_upload(&state, &caller, id, true, &headers, body).await
}

/// A simple upload of asset `id`'s first source, or of a `replacement`.
async fn simple_upload(
    state: &Arc<AppState>,
    caller: &Caller,
    id: AssetId,
    replacement: bool,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let max = state.config.max_upload_size.0;
    if let Some(length) = declared_length(headers, "content-length")? {
        if length > max {
            return Err(ApiError::TooLarge { max });
        }
    }
    // One writer per source: a claim held (and renewed) while the body
    // streams, with no database connection held meanwhile.
    let claim = SourceClaim {
        id: uuid::Uuid::new_v4(),
        hold: state.config.upload_lock,
    };
    let of = {
        let client = state.pool.get().await?;
        if replacement {
            let version = assets::claim_replacement(&client, caller.environment, id, claim)
                .await?
                .map_err(replacement_refused)?;
            SourceOf::Replacement(version)
        } else {
            assets::claim_source(&client, caller.environment, id, claim)
                .await?
                .map_err(claim_refused)?;
            SourceOf::First
        }
    };
    let stored = {
        let mut reader = BodyReader::new(body, max, state.limits.pace);
        let key = ObjectKey::source_version(id, of.version());
        tokio::select! {
            stored = state.store.put(&key, &mut reader) => stored,
            never = keep_claim(state, id, claim) => match never {},
        }
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            release_claim(state, id, claim).await;
            return Err(error.into());
        }
    };
    if let Err(error) = source::source_complete(state, id, claim.id, of, stored).await {
        if !matches!(
            error,
            ApiError::Unprocessable { .. } | ApiError::NotFound(_)
        ) {
            release_claim(state, id, claim).await;
        }
        return Err(error);
    }
    let asset = assets::get_in(&state.pool.get().await?, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("asset"))?;
    Ok((StatusCode::ACCEPTED, Json(asset_json(state, &asset).await?)).into_response())
}

/// Maps a refused replacement claim to the API's answer.
fn replacement_refused(refused: ClaimRefused) -> ApiError {
    match refused {
        ClaimRefused::HasSource(state) => ApiError::Conflict {
            code: "replacement_not_allowed",
            message: format!(
                "the asset is {state}: a replacement needs a ready or errored asset \
                 (upload a waiting asset's first source with PUT /v1/assets/{{id}}/source)"
            ),
        },
        other => claim_refused(other),
    }
}

/// Renews a simple upload's source claim every third of its hold until
/// dropped (never returns).
async fn keep_claim(state: &AppState, id: AssetId, claim: SourceClaim) -> std::convert::Infallible {
    let every = (claim.hold / 3).max(std::time::Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        if let Ok(client) = state.pool.get().await {
            let _ = assets::renew_source_claim(&client, id, claim).await;
        }
    }
}

async fn release_claim(state: &AppState, id: AssetId, claim: SourceClaim) {
    if let Ok(client) = state.pool.get().await {
        if let Err(error) = assets::release_source_claim(&client, id, claim.id).await {
            tracing::warn!(asset = %id, error = %error, "cannot release a source claim; it lapses by itself");
        }
    }
}

/// How often the local backend's directory is swept for abandoned
/// multipart uploads and temporary files (a walk of the whole tree).
const ABANDONED_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes expired, unfinished tus uploads (multipart uploads, staged pieces, rows) every
/// `ingest.cleanup_interval` until `cancel` fires; hourly, and once at start,
/// also what dead processes left in the store ([`ObjectStore::remove_abandoned`]).
pub fn spawn_cleanup(
    state: Arc<AppState>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            if last_sweep.is_none_or(|at| at.elapsed() >= ABANDONED_SWEEP_EVERY) {
                last_sweep = Some(std::time::Instant::now());
                match state.store.remove_abandoned().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        removed = n,
                        "removed abandoned multipart uploads and temporary files"
                    ),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot sweep abandoned multipart uploads")
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(state.config.cleanup_interval) => {}
            }
            match tus::delete_expired(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(uploads = n, "deleted expired uploads"),
                Err(error) => tracing::warn!(error = %error, "cannot clean up expired uploads"),
            }
            if let Err(error) = crate::direct::expire(&state).await {
                tracing::warn!(error = %error, "cannot expire direct upload URLs");
            }
        }
    })
}
