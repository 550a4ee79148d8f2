//! Simple uploads: a first source, or an explicit replacement, in one request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_platform::assets::{self, ClaimRefused, SourceClaim};
use cascade_schemas::{AssetId, ObjectKey};

use crate::asset_api::{asset_json, claim_refused};
use crate::auth::Caller;
use crate::body::BodyReader;
use crate::error::ApiError;
use crate::metrics::Protocol;
use crate::openapi::{AssetView, BinaryBody, ErrorBody};
use crate::request::{declared_length, parse_asset_id};
use crate::source::{self, SourceOf};
use crate::state::AppState;

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
            with Retry-After."),
        (status = 507, body = ErrorBody, description = "`storage_full`: the object store has no space left; nothing is kept \
            and the asset waits for its source again (Retry-After).")))]
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
    state.metrics.upload_started(Protocol::Simple);
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
            state.metrics.upload_failed(Protocol::Simple);
            release_claim(state, id, claim).await;
            return Err(error.into());
        }
    };
    state.metrics.received(Protocol::Simple, stored);
    state.metrics.upload_finished(Protocol::Simple);
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
