//! The tus HTTP operations: discovery, creation (with upload), HEAD,
//! PATCH and termination.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cascade_platform::assets::{self, SourceClaim};
use cascade_platform::uploads::{self, NewUpload};
use cascade_schemas::{AssetId, ConcatKind, UploadState};

use crate::asset_api;
use crate::auth::Caller;
use crate::body::Hasher;
use crate::error::ApiError;
use crate::metrics::Protocol;
use crate::openapi::{BinaryBody, ErrorBody, TusResumable};
use crate::request;
use crate::state::AppState;

use super::*;

/// `OPTIONS /v1/uploads`: what this server supports (tus discovery; no key needed).
#[utoipa::path(options, path = "/v1/uploads", tag = "tus", operation_id = "tus_options", security(()),
    responses(
        (status = 204, description = "The protocol versions, extensions and limits of this server.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
                ("Tus-Extension" = String, description = "Extensions supported: `creation,creation-with-upload,termination,checksum,expiration,concatenation`."),
                ("Tus-Max-Size" = u64, description = "Largest `Upload-Length` accepted, in bytes (`ingest.max_upload_size`)."),
                ("Tus-Checksum-Algorithm" = String, description = "Algorithms accepted in `Upload-Checksum`: `sha1,sha256`."),
            )),
    ))]
pub async fn options(State(state): State<Arc<AppState>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    header(&mut response, "tus-version", TUS_VERSION);
    header(&mut response, "tus-extension", EXTENSIONS);
    header(
        &mut response,
        "tus-max-size",
        &state.config.max_upload_size.0.to_string(),
    );
    header(&mut response, "tus-checksum-algorithm", CHECKSUMS);
    response
}

/// `POST /v1/uploads`: creates an upload (and, with a body, stores its first bytes).
#[utoipa::path(post, path = "/v1/uploads", tag = "tus", operation_id = "tus_create",
    params(
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
        ("Upload-Length" = Option<u64>, Header, nullable = false, description = "Size of the whole upload in bytes, at most `Tus-Max-Size`; \
            required but for a final upload (its length is the sum of its partials'). \
            (`Upload-Defer-Length` is not supported: a request carrying it gets 400 `defer_length_unsupported`.)"),
        ("Upload-Concat" = Option<String>, Header, nullable = false, description = "Concatenation: `partial` creates a piece of a file \
            (no asset; it waits, complete, for a final upload), `final;<url> <url> ...` creates the upload made of those complete \
            partial uploads in that order (and its asset), complete at once: its source is assembled in the background and probed."),
        ("Upload-Metadata" = Option<String>, Header, nullable = false, description = "Comma-separated `key base64(value)` pairs. \
            `asset_id`: fill that waiting asset; without it a new asset is created, titled from `title` or `filename`. \
            Values must be UTF-8 without NUL characters."),
        ("Upload-Checksum" = Option<String>, Header, nullable = false, description = "With a body: `<algorithm> <base64 digest>` of the body \
            (`sha1` or `sha256`); 460 when the received bytes differ."),
    ),
    request_body(content = BinaryBody, content_type = "application/offset+octet-stream",
        description = "Optional: the first bytes of the upload (creation-with-upload). \
            A body with any other `Content-Type` is ignored."),
    responses(
        (status = 201, description = "The upload exists; send its bytes to `Location` with PATCH.",
            headers(
                ("Location" = String, description = "The upload's URL."),
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Upload-Expires" = String, description = "HTTP-date after which the unfinished upload is removed."),
                ("Cascade-Asset-Id" = uuid::Uuid, description = "The asset this upload fills."),
                ("Upload-Offset" = u64, description = "With a body: the bytes stored so far."),
            )),
        (status = 400, description = "Malformed request: `invalid_header` (Upload-Length or Content-Length not a non-negative integer), \
            `missing_upload_length`, `defer_length_unsupported`, \
            `invalid_upload_metadata` (not ASCII, a value not base64 of UTF-8, or with NUL), \
            `invalid_title` (over 512 characters), `exceeds_upload_length` (Content-Length over Upload-Length), `invalid_checksum`, `unsupported_checksum_algorithm`, \
            `body_read_failed`, `invalid_upload_concat` (Upload-Concat neither `partial` nor `final;` and upload URLs), \
            `invalid_partial_upload` (a named upload does not exist, expired or is not partial), `partial_upload_incomplete`.", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 401, description = "Missing or invalid API key (`unauthorized`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "`asset_id` in Upload-Metadata names no asset (`not_found`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 408, description = "The body stalled for `ingest.body_timeout`, came slower than `ingest.body_min_rate`, \
            or took longer than `ingest.body_deadline` (`body_timeout`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "The asset in `asset_id` is no longer waiting for its source (`source_already_uploaded`), \
            or a partial upload named in Upload-Concat belongs to another final upload (`partial_upload_used`).",
            body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 413, description = "Upload-Length is over `Tus-Max-Size`, or the body goes past Upload-Length (`too_large`).",
            body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 429, description = "Rate limit of the key exceeded (`rate_limited`), or, with a body, the key \
            (`ingest.max_uploads_per_key`) or the server (`ingest.max_uploads`) has as many uploads in progress as it takes \
            (`too_many_uploads`, before the body is read).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
        (status = 460, description = "Checksum Mismatch: the body's digest differs from Upload-Checksum (`checksum_mismatch`).",
            body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_upload(state, caller, None, headers, body).await
}

/// [`create`]; with `direct`, the one upload a direct upload URL allows
/// (`crate::direct`): its id is the direct upload's, and it fills the
/// direct upload's asset, whose source claim it takes over. The caller
/// refuses concatenation and sizes over the URL's limit, and answers with
/// the URL as `Location`.
pub(crate) async fn create_upload(
    state: Arc<AppState>,
    caller: Caller,
    direct: Option<&crate::direct::Grant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
    let concat = concat::requested(&headers)?;
    if let concat::Requested::Final(partials) = concat {
        return concat::create_final(&state, &caller, &headers, partials).await;
    }
    let partial = matches!(concat, concat::Requested::Partial);
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "defer_length_unsupported",
            "Upload-Defer-Length is not supported; send Upload-Length",
        ));
    }
    let length = request::declared_length(&headers, "upload-length")?.ok_or(
        ApiError::bad_request("missing_upload_length", "Upload-Length is required"),
    )?;
    let max = state.config.max_upload_size.0;
    if length > max {
        return Err(ApiError::TooLarge { max });
    }
    let (raw_metadata, metadata) = upload_metadata(&headers)?;
    let id = direct.map_or_else(uuid::Uuid::new_v4, |grant| grant.id.as_uuid());
    // The asset's source is claimed and the upload recorded together: a
    // refused claim leaves no upload, a failed insert no claim.
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // A partial upload is a piece of a file; its final upload makes the asset.
    let asset_id = match direct {
        _ if partial => None,
        Some(grant) => Some(crate::direct::start_tus(&tx, &state, grant).await?),
        None => Some(upload_asset(&tx, &state, &caller, &metadata, id).await?),
    };
    let expires_at = uploads::insert(
        &tx,
        &NewUpload {
            id,
            environment: caller.environment,
            asset: asset_id,
            length,
            metadata: &serde_json::json!({ "raw": raw_metadata, "values": metadata }),
            expiry: state.config.upload_expiry,
            concat: if partial {
                ConcatKind::Partial
            } else {
                ConcatKind::None
            },
        },
    )
    .await?;
    tx.commit().await?;
    drop(client);
    let mut offset = None;
    let with_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(OFFSET_CONTENT_TYPE));
    if with_body {
        offset = Some(
            write_chunk(&state, caller.environment, id, 0, &headers, body)
                .await?
                .0,
        );
    }
    let mut response = created(&state, id);
    header(&mut response, "upload-expires", &http_date(expires_at));
    if let Some(asset_id) = asset_id {
        header(&mut response, "cascade-asset-id", &asset_id.to_string());
    }
    if let Some(offset) = offset {
        header(&mut response, "upload-offset", &offset.to_string());
    }
    state.metrics.upload_started(Protocol::Tus);
    Ok(response)
}

/// The asset upload `upload` fills, its source claimed by the upload (in
/// the caller's transaction `tx`): the waiting asset named by `asset_id` in
/// its metadata, or a new one titled from `title` or `filename`.
pub(super) async fn upload_asset(
    tx: &deadpool_postgres::Transaction<'_>,
    state: &AppState,
    caller: &Caller,
    metadata: &serde_json::Map<String, serde_json::Value>,
    upload: uuid::Uuid,
) -> Result<AssetId, ApiError> {
    // The upload holds the source until it expires (or is terminated).
    let claim = SourceClaim {
        id: upload,
        hold: state.config.upload_expiry,
    };
    match metadata.get("asset_id").and_then(|v| v.as_str()) {
        Some(raw) => {
            let id: AssetId = raw.parse().map_err(|_| ApiError::NotFound("asset"))?;
            assets::claim_source(tx, caller.environment, id, claim)
                .await?
                .map_err(asset_api::claim_refused)?;
            Ok(id)
        }
        None => {
            let title = metadata
                .get("title")
                .or_else(|| metadata.get("filename"))
                .and_then(|v| v.as_str());
            let fields = asset_api::AssetFields::parse(title, None, None)?;
            let id = AssetId::new();
            assets::insert(tx, id, &fields.new_asset(caller.environment, Some(claim))).await?;
            Ok(id)
        }
    }
}

/// `HEAD /v1/uploads/{id}`: the stored offset, where a client resumes.
///
/// Responses to HEAD carry no body, errors included.
#[utoipa::path(head, path = "/v1/uploads/{id}", tag = "tus", operation_id = "tus_head",
    params(
        ("id" = String, Path, format = Uuid, description = "Upload id, the last segment of the creation's `Location`."),
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
    ),
    responses(
        (status = 200, description = "The upload's state.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Upload-Offset" = u64, description = "Bytes stored: where the next PATCH starts."),
                ("Upload-Length" = u64, description = "Size of the whole upload."),
                ("Upload-Expires" = String, description = "HTTP-date after which the unfinished upload is removed (absent once complete)."),
                ("Upload-Metadata" = String, description = "The Upload-Metadata sent at creation, if any."),
                ("Upload-Concat" = String, description = "`partial`, or `final;` and the partial uploads' URLs, for uploads made by concatenation."),
                ("Cache-Control" = String, description = "`no-store`."),
            )),
        (status = 401, description = "Missing or invalid API key.",
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload, or it expired unfinished.",
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 429, description = "Rate limit of the key exceeded.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
    ))]
pub async fn head(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
    let id = parse_upload_id(&id)?;
    let row = load(&state, caller.environment, id).await?;
    // `probing`: complete for the client; only the probe is still running.
    let finished = row.state.is_finished();
    // A complete partial still expires unless a final upload takes it.
    let expires = !finished || row.concat == ConcatKind::Partial;
    if row.expired && expires {
        return Err(ApiError::NotFound("upload"));
    }
    let mut response = StatusCode::OK.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    header(&mut response, "upload-offset", &row.offset.to_string());
    header(&mut response, "upload-length", &row.length.to_string());
    header(&mut response, "cache-control", "no-store");
    if expires {
        header(&mut response, "upload-expires", &http_date(row.expires_at));
    }
    if !row.raw_metadata.is_empty() {
        header(&mut response, "upload-metadata", &row.raw_metadata);
    }
    if let Some(value) = concat::header_value(&state, row.concat, &row.partial_ids) {
        header(&mut response, "upload-concat", &value);
    }
    Ok(response)
}

/// `PATCH /v1/uploads/{id}`: appends bytes at `Upload-Offset`.
///
/// The PATCH that completes the upload assembles the source and starts
/// processing; media that cannot be processed turns the asset `errored`
/// (see the asset), the PATCH itself still succeeds.
#[utoipa::path(patch, path = "/v1/uploads/{id}", tag = "tus", operation_id = "tus_patch",
    params(
        ("id" = String, Path, format = Uuid, description = "Upload id, the last segment of the creation's `Location`."),
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
        ("Upload-Offset" = u64, Header, description = "Where these bytes start; must equal the stored offset (HEAD), else 409."),
        ("Upload-Checksum" = Option<String>, Header, nullable = false, description = "`<algorithm> <base64 digest>` of the body \
            (`sha1` or `sha256`); 460 when the received bytes differ, and they are discarded."),
    ),
    request_body(content = BinaryBody, content_type = "application/offset+octet-stream",
        description = "The bytes from Upload-Offset on; at most what remains of Upload-Length."),
    responses(
        (status = 204, description = "The bytes are stored.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Upload-Offset" = u64, description = "The new offset."),
                ("Upload-Expires" = String, description = "HTTP-date after which the unfinished upload is removed (absent once complete)."),
            )),
        (status = 400, description = "Malformed request: `invalid_header` (Upload-Offset or Content-Length not a non-negative integer), \
            `missing_upload_offset`, `exceeds_upload_length` (Content-Length over what remains), `invalid_checksum`, \
            `unsupported_checksum_algorithm`, `body_read_failed`.", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 507, description = "The object store has no space left (`storage_full`); nothing past the stored offset is \
            recorded, so the client resumes later (Retry-After).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 401, description = "Missing or invalid API key (`unauthorized`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 403, description = "A final upload takes no PATCH: it is made of its partial uploads (`final_upload`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload, or it expired unfinished (`not_found`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 408, description = "The body stalled for `ingest.body_timeout`, came slower than `ingest.body_min_rate`, \
            or took longer than `ingest.body_deadline` (`body_timeout`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "Upload-Offset differs from the stored offset (`offset_mismatch`), \
            or the upload is already complete (`upload_complete`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 413, description = "The body goes past Upload-Length, or its Content-Length is over `Tus-Max-Size` (`too_large`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 415, description = "Content-Type is not application/offset+octet-stream (`unsupported_media_type`).",
            body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 423, description = "Another request is writing this upload; retry shortly (`upload_locked`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 429, description = "Rate limit of the key exceeded (`rate_limited`), or, with a body, the key \
            (`ingest.max_uploads_per_key`) or the server (`ingest.max_uploads`) has as many uploads in progress as it takes \
            (`too_many_uploads`, before the body is read).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
        (status = 460, description = "Checksum Mismatch: the body's digest differs from Upload-Checksum (`checksum_mismatch`).",
            body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
    ))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
    let id = parse_upload_id(&id)?;
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(OFFSET_CONTENT_TYPE) {
        return Err(ApiError::UnsupportedMediaType(
            "PATCH bodies must be application/offset+octet-stream",
        ));
    }
    let offset = request::declared_length(&headers, "upload-offset")?.ok_or(
        ApiError::bad_request("missing_upload_offset", "Upload-Offset is required"),
    )?;
    // No upload takes more than this: refused before the upload is looked up.
    let max = state.config.max_upload_size.0;
    if request::declared_length(&headers, "content-length")?.is_some_and(|n| n > max) {
        return Err(ApiError::TooLarge { max });
    }
    let started = std::time::Instant::now();
    let written = write_chunk(&state, caller.environment, id, offset, &headers, body).await;
    state.metrics.tus_patch(started);
    let (new_offset, expires_at) = written?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    header(&mut response, "upload-offset", &new_offset.to_string());
    if let Some(expires_at) = expires_at {
        header(&mut response, "upload-expires", &http_date(expires_at));
    }
    Ok(response)
}

/// `DELETE /v1/uploads/{id}`: abandons an unfinished upload (termination).
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "tus", operation_id = "tus_terminate",
    params(
        ("id" = String, Path, format = Uuid, description = "Upload id, the last segment of the creation's `Location`."),
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
    ),
    responses(
        (status = 204, description = "The upload and its stored bytes are gone.",
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 401, description = "Missing or invalid API key (`unauthorized`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload (`not_found`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "The upload is complete (or being assembled) and can no longer be terminated \
            (`upload_complete`), or it is a partial upload a final upload has taken (`partial_upload_used`). \
            A complete partial upload no final upload took can be terminated.", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 429, description = "Rate limit of the key exceeded (`rate_limited`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
    ))]
pub async fn terminate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
    let id = parse_upload_id(&id)?;
    // Termination takes the upload's lease like a PATCH, and only while
    // bytes are missing: a PATCH in progress makes it 423, and once the last
    // byte is recorded (the assembly may be starting) it is 409. So it never
    // races the final PATCH.
    let lock = uuid::Uuid::new_v4();
    let client = state.pool.get().await?;
    let taken = uploads::take_termination_lease(
        &client,
        caller.environment,
        id,
        lock,
        state.config.upload_lock,
    )
    .await?;
    let Some((asset, multipart_id)) = taken else {
        let view = uploads::termination_view(&client, caller.environment, id)
            .await?
            .ok_or(ApiError::NotFound("upload"))?;
        drop(client);
        if view.concat == ConcatKind::Partial && view.state == UploadState::Complete {
            if view.claimed {
                return Err(ApiError::Conflict {
                    code: "partial_upload_used",
                    message: "a final upload has taken this partial upload".to_owned(),
                });
            }
            concat::terminate_complete_partial(&state, id).await?;
        } else if view.state == UploadState::Receiving && view.missing && view.locked {
            return Err(ApiError::Locked);
        } else {
            return Err(ApiError::Conflict {
                code: "upload_complete",
                message: "the upload is complete and can no longer be terminated".to_owned(),
            });
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        header(&mut response, "tus-resumable", TUS_VERSION);
        return Ok(response);
    };
    drop(client);
    let destination = destination(id, asset);
    // Bytes first: a failure leaves the row, so a retry finds them again.
    if let Err(error) = discard(&state, id, &destination, multipart_id.as_deref()).await {
        release(&state, id, lock).await;
        return Err(error.into());
    }
    delete_row(&state, id, &destination, multipart_id.as_deref()).await?;
    state.metrics.upload_failed(Protocol::Tus);
    let mut response = StatusCode::NO_CONTENT.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    Ok(response)
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
pub(super) fn checksum(headers: &HeaderMap) -> Result<Option<(Hasher, Vec<u8>)>, ApiError> {
    let Some(raw) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_checksum", "Upload-Checksum is not text"))?;
    let (algorithm, digest) = raw.trim().split_once(' ').ok_or(ApiError::bad_request(
        "invalid_checksum",
        "Upload-Checksum must be \"<algorithm> <base64>\"",
    ))?;
    let hasher = Hasher::for_algorithm(algorithm).ok_or(ApiError::bad_request(
        "unsupported_checksum_algorithm",
        format!("checksum algorithm {algorithm:?} is not supported (use {CHECKSUMS})"),
    ))?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| {
            ApiError::bad_request("invalid_checksum", "Upload-Checksum digest is not base64")
        })?;
    Ok(Some((hasher, expected)))
}
