//! `/v1/webhook_endpoints`: the endpoints an environment's events are
//! POSTed to (besides the operator's static ones). A URL must be a public
//! http(s) address unless the operator allows private targets
//! (`webhooks.allow_private_targets`); delivery checks every resolved
//! address again (see `cascade_workers::webhooks`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_platform::{outbound, webhook_endpoints};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most endpoints one environment may register.
pub const MAX_ENDPOINTS: usize = 20;
/// Event types an endpoint may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "asset.created",
    "asset.playable",
    "asset.ready",
    "asset.errored",
    "asset.deleted",
    "asset.archived",
    "asset.restored",
    "live_stream.active",
    "live_stream.disconnected",
    "live_stream.idle",
    "live_stream.recording.ready",
];

/// A new endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// Public `http://` or `https://` URL that receives the events.
    url: String,
    /// Event types to send (`asset.created`, `asset.playable`, `asset.ready`, `asset.errored`,
    /// `asset.deleted`, `live_stream.active`, `live_stream.disconnected`,
    /// `live_stream.idle`, `live_stream.recording.ready`); absent or empty
    /// means all.
    #[serde(default)]
    events: Vec<String>,
}

/// An endpoint as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointView {
    /// Id.
    id: uuid::Uuid,
    /// Where events are POSTed.
    url: String,
    /// Event types sent; empty means all.
    events: Vec<String>,
    /// Key of the HMAC-SHA256 `Cascade-Signature` header: only in the
    /// creation's response, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Creation time.
    created_at: DateTime<Utc>,
}

/// The caller's endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointList {
    /// Oldest first.
    data: Vec<WebhookEndpointView>,
}

fn view(endpoint: webhook_endpoints::WebhookEndpoint, with_secret: bool) -> WebhookEndpointView {
    WebhookEndpointView {
        id: endpoint.id,
        url: endpoint.url,
        events: endpoint.events,
        secret: with_secret.then_some(endpoint.secret),
        created_at: endpoint.created_at,
    }
}

fn parse_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound("webhook endpoint"))
}

/// Registers an endpoint for the caller's environment; its secret is in
/// this response only.
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks", operation_id = "create_webhook_endpoint",
    request_body(content = CreateWebhookEndpoint, content_type = "application/json"),
    responses(
        (status = 201, body = WebhookEndpointView, description = "Registered; `secret` is shown this once."),
        (status = 400, body = ErrorBody, description = "`invalid_json`, `invalid_url` (not public http(s), credentials in it, too long), `invalid_events`."),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`too_many_endpoints`: the environment has 20 already."),
        (status = 408, body = ErrorBody, description = "`body_timeout`: the body did not arrive within `ingest.json_body_deadline`."),
        (status = 413, body = ErrorBody, description = "The body is over 16 KiB."),
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
    let request: CreateWebhookEndpoint = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))?;
    let url = outbound::check_url(request.url.trim(), state.webhooks.allow_private_targets)
        .map_err(|e| ApiError::bad_request("invalid_url", e.to_string()))?;
    if let Some(unknown) = request
        .events
        .iter()
        .find(|e| !EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(ApiError::bad_request(
            "invalid_events",
            format!(
                "unknown event type {unknown:?}; known: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    let client = state.pool.get().await?;
    if webhook_endpoints::list(&client, caller.environment)
        .await?
        .len()
        >= MAX_ENDPOINTS
    {
        return Err(ApiError::Conflict {
            code: "too_many_endpoints",
            message: format!(
                "an environment may register at most {MAX_ENDPOINTS} webhook endpoints"
            ),
        });
    }
    let created =
        webhook_endpoints::create(&client, caller.environment, url.as_str(), &request.events)
            .await?;
    Ok((StatusCode::CREATED, Json(view(created, true))).into_response())
}

/// The caller's endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks", operation_id = "list_webhook_endpoints",
    responses((status = 200, body = WebhookEndpointList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<WebhookEndpointList>, ApiError> {
    let client = state.pool.get().await?;
    let data = webhook_endpoints::list(&client, caller.environment)
        .await?
        .into_iter()
        .map(|e| view(e, false))
        .collect();
    Ok(Json(WebhookEndpointList { data }))
}

/// One endpoint of the caller's.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", operation_id = "get_webhook_endpoint",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = WebhookEndpointView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointView>, ApiError> {
    let id = parse_id(&id)?;
    let client = state.pool.get().await?;
    let endpoint = webhook_endpoints::get(&client, caller.environment, id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(Json(view(endpoint, false)))
}

/// Removes one of the caller's endpoints: no event is sent there any more.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks", operation_id = "delete_webhook_endpoint",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let client = state.pool.get().await?;
    if webhook_endpoints::delete(&client, caller.environment, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("webhook endpoint"))
    }
}
