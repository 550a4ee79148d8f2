//! The creators' API routes (`/v1/...`) and the layers around them.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post, put};
use axum::{Json, Router};

use crate::asset_api::{create_asset, delete_asset, get_asset, list_assets, MAX_CREATE_BODY_BYTES};
use crate::auth::require_key;
use crate::error::ApiError;
use crate::limits;
use crate::openapi::ApiDoc;
use crate::simple_upload::{put_replacement, put_source};
use crate::state::AppState;
use crate::{live_api, tus, webhook_endpoints};

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
            "/v1/live_streams",
            post(live_api::create).get(live_api::list),
        )
        .route(
            "/v1/live_streams/{id}",
            get(live_api::get).delete(live_api::delete),
        )
        .route(
            "/v1/live_streams/{id}/reset_stream_key",
            post(live_api::reset_stream_key),
        )
        .route("/v1/live_streams/{id}/disable", post(live_api::disable))
        .route("/v1/live_streams/{id}/enable", post(live_api::enable))
        .route(
            "/v1/live_streams/{id}/playback_tokens",
            post(crate::playback_tokens::create_for_live_stream),
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
        // Every answer under /v1 is JSON with a stable code, unknown paths
        // and methods included.
        .route("/v1/{*path}", any(|| async { ApiError::NotFound("route") }))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Every handler reads its body itself, under its own limits (uploads:
        // ingest.max_upload_size and the pace, as they stream; JSON: a few
        // KiB, crate::limits::read_json_body). This only bounds any
        // extractor that buffers a body (`Bytes`, `Json`), should one appear.
        .layer(DefaultBodyLimit::max(MAX_CREATE_BODY_BYTES))
        .layer(from_fn_with_state(
            state.clone(),
            crate::metrics::record_request,
        ))
        .with_state(state)
}
