//! `/v1/live_streams`: streams creators go live on over RTMP. A stream has
//! a secret stream key (shown at creation and on reset only; stored as its
//! SHA-256), a playback id, and options; the RTMP server
//! (`crate::rtmp`) publishes to it, and its state and current ingest come
//! from `cascade_platform::live_streams`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_platform::live_streams::{self, LatencyMode, LiveStream, NewLiveStream};
use cascade_schemas::PlaybackPolicy;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{ErrorBody, PlaybackUrls};
use crate::request::{encode_cursor, page_request, parse_live_stream_id, ListQuery};
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// Largest metadata object accepted, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A new live stream.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLiveStream {
    /// `public` (default) or `signed` (playback needs a token).
    playback_policy: Option<String>,
    /// `standard` (default) or `low`.
    latency_mode: Option<String>,
    /// Record every broadcast as a VOD asset (default true).
    recording: Option<bool>,
    /// Seconds a dropped publisher has to come back into the same broadcast
    /// (0 to 1800; default `live.default_reconnect_window`).
    reconnect_window: Option<i64>,
    /// Creator's JSON object, returned as given.
    metadata: Option<serde_json::Value>,
}

/// Where a publisher sends.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RtmpView {
    /// The server URL (OBS: "Server").
    url: String,
    /// The stream key: only in the responses of creation and key reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_key: Option<String>,
}

/// A live stream as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveStreamView {
    /// Id.
    id: uuid::Uuid,
    /// `idle`, `active` (a broadcast is under way, also while a dropped
    /// publisher may still come back) or `disabled`.
    state: String,
    /// A publisher is connected now.
    connected: bool,
    /// Where to publish.
    rtmp: RtmpView,
    /// Public playback handle.
    playback_id: String,
    /// `public` or `signed`.
    playback_policy: String,
    /// Live playback URLs (answer 404 while the stream is idle).
    playback: PlaybackUrls,
    /// `standard` or `low`.
    latency_mode: String,
    /// Broadcasts become VOD assets.
    recording: bool,
    /// Seconds a dropped publisher has to come back.
    reconnect_window: i32,
    /// The broadcast under way.
    broadcast_id: Option<uuid::Uuid>,
    /// When the last publisher left (during the reconnect window).
    disconnected_at: Option<DateTime<Utc>>,
    /// What the publisher sends: codecs, size, frame rate, measured bitrate,
    /// when it started, the ladder and how far encoding lags real time.
    #[schema(value_type = Option<Object>)]
    ingest: Option<serde_json::Value>,
    /// The last refused publish: `code`, `message`, `at`.
    #[schema(value_type = Option<Object>)]
    last_refusal: Option<serde_json::Value>,
    /// Assets recorded from its broadcasts, newest first.
    recorded_assets: Vec<uuid::Uuid>,
    /// Creator's metadata.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    /// Creation time.
    created_at: DateTime<Utc>,
}

/// A page of live streams.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveStreamList {
    /// Newest first.
    data: Vec<LiveStreamView>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

async fn view(
    state: &AppState,
    stream: LiveStream,
    stream_key: Option<String>,
) -> Result<LiveStreamView, ApiError> {
    let recorded_assets = {
        let client = state.pool.get().await?;
        live_streams::recorded_assets(&client, stream.id).await?
    };
    let base = format!("/play/{}", stream.playback_id);
    Ok(LiveStreamView {
        id: stream.id.as_uuid(),
        state: stream.state.as_str().to_owned(),
        connected: stream.connected,
        rtmp: RtmpView {
            url: state.rtmp_url(),
            stream_key,
        },
        playback_id: stream.playback_id.to_string(),
        playback_policy: stream.playback_policy.as_str().to_owned(),
        playback: PlaybackUrls {
            hls: state.playback_url(&format!("{base}/master.m3u8")),
            dash: state.playback_url(&format!("{base}/manifest.mpd")),
        },
        latency_mode: match stream.latency_mode {
            LatencyMode::Standard => "standard",
            LatencyMode::Low => "low",
        }
        .to_owned(),
        recording: stream.recording,
        reconnect_window: stream.reconnect_window,
        broadcast_id: stream.broadcast_id,
        disconnected_at: stream.disconnected_at,
        ingest: stream.ingest,
        last_refusal: stream.last_refusal,
        recorded_assets,
        metadata: stream.metadata,
        created_at: stream.created_at,
    })
}

/// A creation request, checked.
struct NewStreamFields {
    policy: PlaybackPolicy,
    latency_mode: LatencyMode,
    recording: bool,
    reconnect_window: i32,
    metadata: serde_json::Value,
}

fn parse_create(state: &AppState, request: CreateLiveStream) -> Result<NewStreamFields, ApiError> {
    let policy = match request.playback_policy.as_deref() {
        None => PlaybackPolicy::Public,
        Some(text) => text.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_playback_policy",
                "playback_policy must be public or signed",
            )
        })?,
    };
    let latency_mode = match request.latency_mode.as_deref() {
        None | Some("standard") => LatencyMode::Standard,
        Some("low") => LatencyMode::Low,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_latency_mode",
                "latency_mode must be standard or low",
            ))
        }
    };
    let reconnect_window = match request.reconnect_window {
        None => state.live.default_reconnect_window.as_secs() as i32,
        Some(seconds) if (0..=1800).contains(&seconds) => seconds as i32,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_reconnect_window",
                "reconnect_window must be between 0 and 1800 seconds",
            ))
        }
    };
    let metadata = match request.metadata {
        None => serde_json::json!({}),
        Some(value @ serde_json::Value::Object(_)) => {
            if value.to_string().len() > MAX_METADATA_BYTES {
                return Err(ApiError::bad_request(
                    "invalid_metadata",
                    "metadata is over 16 KiB",
                ));
            }
            value
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_metadata",
                "metadata must be a JSON object",
            ))
        }
    };
    Ok(NewStreamFields {
        policy,
        latency_mode,
        recording: request.recording.unwrap_or(true),
        reconnect_window,
        metadata,
    })
}

/// Creates a live stream; its stream key is in this response (and the
/// reset's) only.
#[utoipa::path(post, path = "/v1/live_streams", tag = "live", operation_id = "create_live_stream",
    request_body(content = CreateLiveStream, content_type = "application/json"),
    responses(
        (status = 201, body = LiveStreamView, description = "Created; `rtmp.stream_key` is shown this once."),
        (status = 400, body = ErrorBody, description = "`invalid_json`, `invalid_playback_policy`, `invalid_latency_mode`, `invalid_reconnect_window`, `invalid_metadata`."),
        (status = 401, body = ErrorBody),
        (status = 408, body = ErrorBody, description = "`body_timeout`: the body did not arrive within `ingest.json_body_deadline`."),
        (status = 413, body = ErrorBody, description = "The body is over 32 KiB."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: a body with a Content-Type other than JSON."),
        (status = 429, body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body =
        crate::limits::read_json_body(&headers, body, MAX_BODY_BYTES, state.limits.json_deadline)
            .await?;
    let request: CreateLiveStream = if body.iter().all(u8::is_ascii_whitespace) {
        CreateLiveStream::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("invalid request body: {e}"))
        })?
    };
    let fields = parse_create(&state, request)?;
    let new = NewLiveStream {
        policy: fields.policy,
        latency_mode: fields.latency_mode,
        recording: fields.recording,
        reconnect_window: fields.reconnect_window,
        metadata: &fields.metadata,
    };
    let (stream, key) = {
        let client = state.pool.get().await?;
        live_streams::create(&client, caller.environment, &new).await?
    };
    tracing::info!(live_stream_id = %stream.id, "live stream created");
    let view = view(&state, stream, Some(key)).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// One live stream: state, current ingest, recorded assets.
#[utoipa::path(get, path = "/v1/live_streams/{id}", tag = "live", operation_id = "get_live_stream",
    params(("id" = String, Path, description = "Live stream id")),
    responses((status = 200, body = LiveStreamView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LiveStreamView>, ApiError> {
    let id = parse_live_stream_id(&id)?;
    let stream = live_streams::get_in(&state.pool.get().await?, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("live stream"))?;
    Ok(Json(view(&state, stream, None).await?))
}

/// Live streams, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/live_streams", tag = "live", operation_id = "list_live_streams", params(ListQuery),
    responses((status = 200, body = LiveStreamList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<LiveStreamList>, ApiError> {
    let (limit, cursor) = page_request(query)?;
    let page = {
        let client = state.pool.get().await?;
        live_streams::list(&client, Some(caller.environment), cursor, limit + 1).await?
    };
    let next = (page.len() as i64 > limit)
        .then(|| page.get(limit as usize - 1))
        .flatten()
        .map(|last| encode_cursor(last.created_at, last.id.as_uuid()));
    let mut data = Vec::with_capacity(page.len());
    for stream in page.into_iter().take(limit as usize) {
        data.push(view(&state, stream, None).await?);
    }
    Ok(Json(LiveStreamList {
        data,
        next_cursor: next,
    }))
}

/// Deletes a live stream: its key and playback id stop working at once; a
/// broadcast under way ends (and is still recorded).
#[utoipa::path(delete, path = "/v1/live_streams/{id}", tag = "live", operation_id = "delete_live_stream",
    params(("id" = String, Path, description = "Live stream id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_live_stream_id(&id)?;
    let deleted = live_streams::delete(
        &state.pool,
        caller.environment,
        id,
        live_streams::FINISH_MAX_ATTEMPTS,
    )
    .await?;
    if !deleted {
        return Err(ApiError::NotFound("live stream"));
    }
    state
        .queue
        .wake(cascade_schemas::job_kind::FINISH_BROADCAST);
    Ok(StatusCode::NO_CONTENT)
}

/// Gives the stream a new key; the old one stops working (a publisher
/// already streaming keeps going).
#[utoipa::path(post, path = "/v1/live_streams/{id}/reset_stream_key", tag = "live", operation_id = "reset_stream_key",
    params(("id" = String, Path, description = "Live stream id")),
    responses((status = 200, body = LiveStreamView, description = "`rtmp.stream_key` is the new key, shown this once."),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn reset_stream_key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LiveStreamView>, ApiError> {
    let id = parse_live_stream_id(&id)?;
    let client = state.pool.get().await?;
    let key = live_streams::reset_key(&client, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("live stream"))?;
    let stream = live_streams::get_in(&client, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("live stream"))?;
    drop(client);
    Ok(Json(view(&state, stream, Some(key)).await?))
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: &str,
    enabled: bool,
) -> Result<Json<LiveStreamView>, ApiError> {
    let id = parse_live_stream_id(id)?;
    let stream = live_streams::set_enabled(
        &state.pool,
        caller.environment,
        id,
        enabled,
        live_streams::FINISH_MAX_ATTEMPTS,
    )
    .await?
    .ok_or(ApiError::NotFound("live stream"))?;
    state
        .queue
        .wake(cascade_schemas::job_kind::FINISH_BROADCAST);
    Ok(Json(view(state, stream, None).await?))
}

/// Disables the stream: publishers are refused, a connected one is dropped
/// within the publisher lease, and a broadcast under way ends.
#[utoipa::path(post, path = "/v1/live_streams/{id}/disable", tag = "live", operation_id = "disable_live_stream",
    params(("id" = String, Path, description = "Live stream id")),
    responses((status = 200, body = LiveStreamView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn disable(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LiveStreamView>, ApiError> {
    set_enabled(&state, &caller, &id, false).await
}

/// Enables a disabled stream (it is `idle` again).
#[utoipa::path(post, path = "/v1/live_streams/{id}/enable", tag = "live", operation_id = "enable_live_stream",
    params(("id" = String, Path, description = "Live stream id")),
    responses((status = 200, body = LiveStreamView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn enable(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LiveStreamView>, ApiError> {
    set_enabled(&state, &caller, &id, true).await
}
