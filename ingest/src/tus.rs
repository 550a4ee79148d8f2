//! tus 1.0.0 resumable uploads: core protocol plus creation,
//! creation-with-upload, termination, checksum (sha1, sha256), expiration
//! and concatenation (parallel partial uploads; see [`concat`]).
//!
//! PATCH bodies go straight into an S3 multipart upload of the asset's
//! source: a body of known length that makes a part big enough for S3 (5 MiB
//! with what is staged) or ends the upload is streamed as one part; smaller
//! or chunked bodies are staged as objects of their own and go into the next
//! part. Postgres holds the offset, the multipart upload id, the recorded
//! parts (number, ETag, size), the staged pieces, a part-number counter and
//! the lease. A PATCH takes the lease with a conditional update (a concurrent
//! one gets 423), draws fresh part numbers under it, renews it while its
//! body streams, and records its part and the new offset only if it still
//! holds the lease at the offset it started from, so a stalled or crashed
//! writer can never corrupt the upload: its part is never recorded, and
//! CompleteMultipartUpload leaves it out. The last PATCH completes the
//! multipart upload (no copy); the probe runs after its response.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cascade_platform::assets::{self, SourceClaim};
use cascade_platform::storage::{MAX_PART_SIZE, MIN_PART_SIZE};
use cascade_platform::uploads::{self, NewUpload, RecordedPart, UploadStatus};
use cascade_platform::{ObjectStore, StorageError};
use cascade_schemas::{AssetId, ConcatKind, EnvironmentId, ObjectKey, UploadState};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;

use crate::api::{self, AppState};
use crate::auth::Caller;
use crate::body::{BodyReader, Hasher};
use crate::error::ApiError;
use crate::openapi::{BinaryBody, ErrorBody, TusResumable};
use crate::source;

mod concat;

const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str =
    "creation,creation-with-upload,termination,checksum,expiration,concatenation";
const CHECKSUMS: &str = "sha1,sha256";
pub(crate) const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";

fn require_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

fn header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(SystemTime::from(t))
}

fn parse_upload_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("upload"))
}

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

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs.
fn parse_metadata(raw: &str) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let mut out = serde_json::Map::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_upload_metadata",
                    format!("Upload-Metadata value of {key:?} is not base64 UTF-8"),
                )
            })?;
        if decoded.contains('\0') {
            // Postgres can store NUL neither in text nor in jsonb.
            return Err(ApiError::bad_request(
                "invalid_upload_metadata",
                format!("Upload-Metadata value of {key:?} contains a NUL character"),
            ));
        }
        out.insert(key.to_owned(), serde_json::Value::String(decoded));
    }
    Ok(out)
}

/// A 201 for upload `id`, with its `Location`.
fn created(state: &AppState, id: uuid::Uuid) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    header(
        &mut response,
        "location",
        &state.url(&format!("/v1/uploads/{id}")),
    );
    header(&mut response, "tus-resumable", TUS_VERSION);
    response
}

/// The raw `Upload-Metadata` header (kept to echo on HEAD) and its values.
fn upload_metadata(
    headers: &HeaderMap,
) -> Result<(&str, serde_json::Map<String, serde_json::Value>), ApiError> {
    let raw = match headers.get("upload-metadata") {
        None => "",
        Some(v) => v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_upload_metadata",
                "Upload-Metadata must be ASCII: `key base64value` pairs",
            )
        })?,
    };
    Ok((raw, parse_metadata(raw)?))
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
    let length = api::declared_length(&headers, "upload-length")?.ok_or(ApiError::bad_request(
        "missing_upload_length",
        "Upload-Length is required",
    ))?;
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
    Ok(response)
}

/// The asset upload `upload` fills, its source claimed by the upload (in
/// the caller's transaction `tx`): the waiting asset named by `asset_id` in
/// its metadata, or a new one titled from `title` or `filename`.
async fn upload_asset(
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
                .map_err(api::claim_refused)?;
            Ok(id)
        }
        None => {
            let title = metadata
                .get("title")
                .or_else(|| metadata.get("filename"))
                .and_then(|v| v.as_str());
            let fields = api::AssetFields::parse(title, None, None)?;
            let id = AssetId::new();
            assets::insert(tx, id, &fields.new_asset(caller.environment, Some(claim))).await?;
            Ok(id)
        }
    }
}

/// Where an upload's bytes go: its asset's source, or for a partial upload
/// (no asset) an object of its own.
fn destination(id: uuid::Uuid, asset: Option<AssetId>) -> ObjectKey {
    match asset {
        Some(asset) => ObjectKey::source(asset),
        None => ObjectKey::upload_data(id),
    }
}

/// Upload `id` of `environment` (another environment's, or one whose
/// asset was deleted, is not found).
async fn load(
    state: &AppState,
    environment: EnvironmentId,
    id: uuid::Uuid,
) -> Result<UploadStatus, ApiError> {
    let client = state.pool.get().await?;
    uploads::status_in(&client, environment, id)
        .await?
        .ok_or(ApiError::NotFound("upload"))
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
    let offset = api::declared_length(&headers, "upload-offset")?.ok_or(ApiError::bad_request(
        "missing_upload_offset",
        "Upload-Offset is required",
    ))?;
    // No upload takes more than this: refused before the upload is looked up.
    let max = state.config.max_upload_size.0;
    if api::declared_length(&headers, "content-length")?.is_some_and(|n| n > max) {
        return Err(ApiError::TooLarge { max });
    }
    let (new_offset, expires_at) =
        write_chunk(&state, caller.environment, id, offset, &headers, body).await?;
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
        return Err(error);
    }
    delete_row(&state, id, &destination, multipart_id.as_deref()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    Ok(response)
}

/// Parses `Upload-Checksum: <algorithm> <base64 digest>`.
fn checksum(headers: &HeaderMap) -> Result<Option<(Hasher, Vec<u8>)>, ApiError> {
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

/// Renews the lease every third of its length until dropped (never returns).
async fn keep_lease(
    state: &AppState,
    id: uuid::Uuid,
    lock: uuid::Uuid,
) -> std::convert::Infallible {
    let every = (state.config.upload_lock / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        if let Ok(client) = state.pool.get().await {
            let _ = uploads::renew_lease(&client, id, lock, state.config.upload_lock).await;
        }
    }
}

async fn release(state: &AppState, id: uuid::Uuid, lock: uuid::Uuid) {
    if let Ok(client) = state.pool.get().await {
        let _ = uploads::release_lease(&client, id, lock).await;
    }
}

/// Part numbers PATCHes may draw; the ones above are kept for the staged
/// pieces left over at completion, so those always come last.
const LAST_PATCH_PART: u32 = 9_000;
/// First part number of the staged pieces uploaded at completion.
const FIRST_FINAL_PART: u32 = LAST_PATCH_PART + 1;

/// Sizes of the parts `total` bytes go into: as few as S3's largest part
/// allows, of nearly equal size (so all are far above the smallest part).
fn part_sizes(total: u64) -> Vec<u64> {
    let count = total.div_ceil(MAX_PART_SIZE).max(1);
    let (base, extra) = (total / count, total % count);
    (0..count).map(|i| base + u64::from(i < extra)).collect()
}

/// Maps a storage error met while writing an upload. A multipart upload
/// that vanished means the upload was terminated meanwhile; a staged piece
/// that cannot be read back is the store's failure, not the client's body.
fn storage_error(error: StorageError) -> ApiError {
    match error {
        StorageError::NotFound { .. } => ApiError::NotFound("upload"),
        StorageError::BodyRead(io) => match io.get_ref().map(|inner| inner.is::<StorageError>()) {
            Some(true) => match io
                .into_inner()
                .map(|inner| inner.downcast::<StorageError>())
            {
                Some(Ok(inner)) if inner.is_retryable() => ApiError::Unavailable(inner.to_string()),
                Some(Ok(inner)) => ApiError::Internal(inner.to_string()),
                _ => ApiError::Internal("reading a staged piece failed".to_owned()),
            },
            _ => ApiError::from(StorageError::BodyRead(io)),
        },
        other => ApiError::from(other),
    }
}

/// Whether the body's digest matches the one the client declared (if any).
fn checksum_matches(reader: &mut BodyReader, expected: Option<Vec<u8>>) -> bool {
    match (expected, reader.take_hasher()) {
        (Some(expected), Some(hasher)) => hasher.finish() == expected,
        _ => true,
    }
}

/// What a PATCH learns when it takes the lease.
struct Lease {
    id: uuid::Uuid,
    lock: uuid::Uuid,
    /// Where the bytes go (see [`destination`]).
    destination: ObjectKey,
    offset: u64,
    length: u64,
    multipart_id: Option<String>,
    next_part: i32,
    staged_keys: Vec<String>,
    /// Bytes received but not in a recorded part: the staged pieces' total.
    staged_bytes: u64,
}

/// Stores one PATCH body at `client_offset`; returns the new offset, and
/// when the upload expires unless it is now complete.
///
/// A body of known length that fills a part (with what is staged: at least
/// S3's 5 MiB), or that completes the upload, streams as one part of the
/// source's multipart upload, preceded by the staged pieces. Others (small,
/// or chunked) are staged as objects of their own until a part can be made.
async fn write_chunk(
    state: &Arc<AppState>,
    environment: EnvironmentId,
    id: uuid::Uuid,
    client_offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<(u64, Option<DateTime<Utc>>), ApiError> {
    let lock = uuid::Uuid::new_v4();
    let taken = {
        let client = state.pool.get().await?;
        uploads::take_write_lease(&client, environment, id, lock, state.config.upload_lock).await?
    };
    let Some(taken) = taken else {
        let row = load(state, environment, id).await?;
        return Err(if row.concat == ConcatKind::Final {
            ApiError::Forbidden {
                code: "final_upload",
                message: "a final upload is made of its partial uploads and takes no PATCH"
                    .to_owned(),
            }
        } else if row.expired {
            ApiError::NotFound("upload")
        } else if row.state != UploadState::Receiving {
            ApiError::Conflict {
                code: "upload_complete",
                message: "the upload is already complete".to_owned(),
            }
        } else {
            ApiError::Locked
        });
    };
    let lease = Lease {
        id,
        lock,
        destination: destination(id, taken.asset),
        offset: taken.offset,
        length: taken.length,
        multipart_id: taken.multipart_id,
        next_part: taken.next_part,
        staged_keys: taken.staged_keys,
        staged_bytes: taken.staged_bytes,
    };
    let expires_at = taken.expires_at;
    let (offset, length) = (lease.offset, lease.length);
    let result = async {
        if client_offset != offset {
            return Err(ApiError::Conflict {
                code: "offset_mismatch",
                message: format!("Upload-Offset {client_offset} does not match the stored offset {offset}"),
            });
        }
        let remaining = length - offset;
        let declared = api::declared_length(headers, "content-length")?;
        if let Some(declared) = declared {
            if declared > remaining {
                return Err(ApiError::bad_request(
                    "exceeds_upload_length",
                    format!("the body ({declared} bytes) goes past Upload-Length ({remaining} bytes remain)"),
                ));
            }
        }
        let expected_checksum = checksum(headers)?;
        let mut reader = BodyReader::new(body, remaining, state.limits.pace);
        let mut expected = None;
        if let Some((hasher, digest)) = expected_checksum {
            reader = reader.hash_with(hasher);
            expected = Some(digest);
        }
        // A part when the length is known and the part is big enough or the
        // last, and part numbers remain; otherwise staged.
        let parts = declared
            .filter(|&n| n > 0 && (lease.staged_bytes + n >= MIN_PART_SIZE || n == remaining))
            .map(|n| (n, part_sizes(lease.staged_bytes + n)))
            .filter(|(_, sizes)| {
                u32::try_from(lease.next_part).unwrap_or(u32::MAX).saturating_add(sizes.len() as u32 - 1)
                    <= LAST_PATCH_PART
            });
        match parts {
            Some((body_length, sizes)) => {
                write_parts(state, &lease, sizes, body_length, &mut reader, expected).await
            }
            None => write_staged(state, &lease, &mut reader, expected).await,
        }
    }
    .await;
    let new_offset = match result {
        Ok(new_offset) => new_offset,
        Err(e) => {
            release(state, id, lock).await;
            return Err(e);
        }
    };
    if new_offset == length {
        assemble(state, id).await?;
        return Ok((new_offset, None));
    }
    Ok((new_offset, Some(expires_at)))
}

/// Uploads the staged pieces and the body as parts `sizes` of the source's
/// multipart upload (creating it if this is the first part), then records
/// them with the new offset, fenced by the lease.
async fn write_parts(
    state: &AppState,
    lease: &Lease,
    sizes: Vec<u64>,
    body_length: u64,
    reader: &mut BodyReader,
    expected: Option<Vec<u8>>,
) -> Result<u64, ApiError> {
    let key = lease.destination.clone();
    let created = match &lease.multipart_id {
        Some(_) => None,
        None => Some(state.store.create_multipart(&key).await?),
    };
    let upload_id = match lease.multipart_id.clone().or_else(|| created.clone()) {
        Some(upload_id) => upload_id,
        None => return Err(ApiError::Internal("no multipart upload id".to_owned())),
    };
    // Fresh part numbers, drawn under the lease: never handed out twice.
    let count = sizes.len() as i32;
    let drawn = async {
        let client = state.pool.get().await?;
        // A new multipart upload id must not be lost (nothing else knows it).
        let durable = created.is_some();
        Ok::<_, ApiError>(
            uploads::draw_parts(&client, lease.id, lease.lock, count, &upload_id, durable).await?,
        )
    }
    .await;
    let first = match drawn {
        Ok(Some((first, recorded))) if recorded.as_deref() == Some(upload_id.as_str()) => first,
        other => {
            if let Some(created) = &created {
                // Ours was never recorded (lease lost, or the database failed).
                if let Err(error) = state.store.abort_multipart(&key, created).await {
                    tracing::warn!(error = %error, "cannot abort an unrecorded multipart upload");
                }
            }
            return Err(match other {
                Err(e) => e,
                _ => ApiError::Locked,
            });
        }
    };
    let first =
        u32::try_from(first).map_err(|_| ApiError::Internal(format!("part number {first}")))?;
    let mut staged = staged_reader(state.store.clone(), lease.staged_keys.clone());
    let mut uploaded = Vec::with_capacity(sizes.len());
    {
        let mut combined = (&mut staged).chain(&mut *reader);
        let upload = async {
            for (i, size) in sizes.iter().enumerate() {
                let number = first + i as u32;
                let etag = state
                    .store
                    .upload_part(&key, &upload_id, number, *size, &mut combined)
                    .await?;
                uploaded.push(RecordedPart {
                    number,
                    etag,
                    size: *size,
                });
            }
            Ok::<_, StorageError>(())
        };
        tokio::select! {
            done = upload => done,
            never = keep_lease(state, lease.id, lease.lock) => match never {},
        }
        .map_err(storage_error)?;
    }
    if reader.bytes_read() != body_length {
        return Err(ApiError::Internal(format!(
            "the staged pieces of upload {} hold more than the {} bytes recorded",
            lease.id, lease.staged_bytes
        )));
    }
    // A mismatch leaves the parts unrecorded: CompleteMultipartUpload skips them.
    if !checksum_matches(reader, expected) {
        return Err(ApiError::ChecksumMismatch);
    }
    let client = state.pool.get().await?;
    let advanced = uploads::record_parts(
        &client,
        lease.id,
        lease.lock,
        lease.offset,
        body_length,
        &uploaded,
    )
    .await?;
    drop(client);
    // Our lease lapsed and another request took over: our parts never count.
    let Some(new_offset) = advanced else {
        return Err(ApiError::Locked);
    };
    // The staged pieces are in the part now; completion sweeps any left.
    for key in &lease.staged_keys {
        if let Err(error) = state
            .store
            .delete(&ObjectKey::from_stored(key.clone()))
            .await
        {
            tracing::warn!(error = %error, key, "cannot delete a staged piece");
        }
    }
    Ok(new_offset)
}

/// Stores the body as a staged piece and records it with the new offset,
/// fenced by the lease.
async fn write_staged(
    state: &AppState,
    lease: &Lease,
    reader: &mut BodyReader,
    expected: Option<Vec<u8>>,
) -> Result<u64, ApiError> {
    let seq = lease.staged_keys.len() as u32 + 1;
    let key = ObjectKey::upload_staged(lease.id, seq, lease.lock);
    let stored = tokio::select! {
        stored = state.store.put(&key, reader) => stored,
        never = keep_lease(state, lease.id, lease.lock) => match never {},
    };
    stored?;
    let written = reader.bytes_read();
    if !checksum_matches(reader, expected) {
        state.store.delete(&key).await?;
        return Err(ApiError::ChecksumMismatch);
    }
    if written == 0 {
        state.store.delete(&key).await?;
        // Nothing to record; the next PATCH must not find the upload locked.
        release(state, lease.id, lease.lock).await;
        return Ok(lease.offset);
    }
    let client = state.pool.get().await?;
    let advanced = uploads::record_staged(
        &client,
        lease.id,
        lease.lock,
        lease.offset,
        written,
        key.as_str(),
    )
    .await?;
    match advanced {
        Some(new_offset) => Ok(new_offset),
        None => {
            // Our lease lapsed and another request took over: our bytes never count.
            let _ = state.store.delete(&key).await;
            Err(ApiError::Locked)
        }
    }
}

/// Streams the staged pieces, in order, as one reader.
fn staged_reader(store: ObjectStore, keys: Vec<String>) -> impl AsyncRead + Unpin + Send {
    let chunks = futures::stream::iter(keys)
        .then(move |key| {
            let store = store.clone();
            async move {
                store
                    .get(&ObjectKey::from_stored(key), None)
                    .await
                    .map(|body| body.stream)
            }
        })
        .try_flatten()
        .map_err(std::io::Error::other);
    StreamReader::new(Box::pin(chunks))
}

/// An upload whose bytes have all arrived, as its assembly sees it.
struct Assembly {
    id: uuid::Uuid,
    /// Where the bytes go (see [`destination`]).
    destination: ObjectKey,
    /// A final upload's partials, in order (empty for others).
    partial_ids: Vec<uuid::Uuid>,
    length: u64,
    multipart_id: Option<String>,
    parts: Vec<(u32, String)>,
    staged_keys: Vec<String>,
    staged_bytes: u64,
}

/// Makes the source object from the recorded parts and any staged pieces
/// left (as the last parts): CompleteMultipartUpload, so the bytes are not
/// copied again. Idempotent: if a previous assembly completed the upload
/// and died before recording it, the source is there with its full size.
async fn finish_source(state: &AppState, upload: &Assembly) -> Result<(), ApiError> {
    let key = upload.destination.clone();
    let Some(upload_id) = &upload.multipart_id else {
        // Everything was staged (a small upload, or bodies of unknown length).
        let mut reader = staged_reader(state.store.clone(), upload.staged_keys.clone());
        let stored = state
            .store
            .put(&key, &mut reader)
            .await
            .map_err(storage_error)?;
        if stored != upload.length {
            return Err(ApiError::Internal(format!(
                "the staged pieces hold {stored} bytes, not {}",
                upload.length
            )));
        }
        return Ok(());
    };
    let completed = async {
        let mut parts = upload.parts.clone();
        if upload.staged_bytes > 0 {
            let mut reader = staged_reader(state.store.clone(), upload.staged_keys.clone());
            for (i, size) in part_sizes(upload.staged_bytes).into_iter().enumerate() {
                let number = FIRST_FINAL_PART + i as u32;
                let etag = state
                    .store
                    .upload_part(&key, upload_id, number, size, &mut reader)
                    .await?;
                parts.push((number, etag));
            }
        }
        state
            .store
            .complete_multipart(&key, upload_id, &parts)
            .await
    }
    .await;
    if let Err(error) = completed {
        match state.store.head(&key).await {
            Ok(meta) if meta.size == upload.length => {
                tracing::info!(key = %key, error = %error, "multipart upload already completed");
            }
            _ => return Err(ApiError::from(error)),
        }
    }
    Ok(())
}

/// Completes the source (see [`finish_source`]), removes the staged
/// pieces, marks the upload complete, and hands the source on to
/// [`source::source_complete`] (the probe). Runs under
/// the upload's lease, in state `assembling`, so a replica that dies midway
/// leaves it to the sweeper ([`delete_expired`]).
async fn assemble(state: &Arc<AppState>, id: uuid::Uuid) -> Result<(), ApiError> {
    let lock = uuid::Uuid::new_v4();
    let row = {
        let client = state.pool.get().await?;
        // The source claim lasted until the upload's expiry; the assembly
        // and probe may run past it, so it starts afresh.
        uploads::begin_assembly(
            &client,
            id,
            lock,
            state.config.upload_lock,
            state.config.upload_expiry,
        )
        .await?
    };
    let Some(row) = row else { return Ok(()) };
    let asset = row.asset;
    let concat = row.concat;
    let upload = Assembly {
        id,
        destination: destination(id, asset),
        partial_ids: row.partial_ids,
        length: row.length,
        multipart_id: row.multipart_id,
        parts: row.parts,
        staged_keys: row.staged_keys,
        staged_bytes: row.staged_bytes,
    };
    let finished = async {
        if concat == ConcatKind::Final {
            concat::finish_final(state, &upload).await
        } else {
            finish_source(state, &upload).await?;
            // A partial's bytes stay (uploads/{id}/data) for its final
            // upload; only its staged pieces go.
            let leftovers = match asset {
                Some(_) => ObjectKey::upload_prefix(id),
                None => ObjectKey::upload_staged_prefix(id),
            };
            state.store.delete_prefix(&leftovers).await?;
            Ok(())
        }
    };
    let finished = tokio::select! {
        finished = finished => finished,
        never = keep_lease(state, id, lock) => match never {},
    };
    if let Err(e) = finished {
        release(state, id, lock).await;
        return Err(e);
    }
    let Some(asset) = asset else {
        // A partial upload: complete, waiting for a final upload to take it
        // (or to expire). Nothing to probe.
        let client = state.pool.get().await?;
        uploads::complete_partial(&client, id, lock).await?;
        return Ok(());
    };
    // The bytes are durable: the upload is complete for the client. The
    // probe runs after the response (state `probing`, under a new lease), so
    // the final PATCH of a large file never waits on it; a replica that dies
    // meanwhile leaves it to the sweeper.
    let handoff_lock = uuid::Uuid::new_v4();
    let client = state.pool.get().await?;
    let marked =
        uploads::begin_probe(&client, id, lock, handoff_lock, state.config.upload_lock).await?;
    drop(client);
    if !marked {
        // Our lease lapsed and another assembly took over; it hands the source on.
        return Ok(());
    }
    let background = Arc::clone(state);
    let length = upload.length;
    tokio::spawn(async move {
        hand_off_under_lease(&background, id, asset, length, handoff_lock).await
    });
    Ok(())
}

/// Runs [`hand_off`] while keeping the lease `lock`, then records its end:
/// `complete`, or the lease released so the sweeper tries again.
async fn hand_off_under_lease(
    state: &AppState,
    id: uuid::Uuid,
    asset: AssetId,
    length: u64,
    lock: uuid::Uuid,
) {
    let handed = tokio::select! {
        handed = hand_off(state, id, asset, length) => handed,
        never = keep_lease(state, id, lock) => match never {},
    };
    match handed {
        Ok(()) => {
            let done = async {
                let client = state.pool.get().await?;
                uploads::complete(&client, id, lock).await?;
                Ok::<(), ApiError>(())
            };
            if let Err(error) = done.await {
                tracing::warn!(upload = %id, error = %error, "cannot record the upload's hand-off; the sweeper retries");
                release(state, id, lock).await;
            }
        }
        Err(error) => {
            tracing::warn!(upload = %id, error = %error, "cannot hand the upload's source on; the sweeper retries");
            release(state, id, lock).await;
        }
    }
}

/// The probe of the completed source and the asset's next state
/// ([`source::source_complete`]).
async fn hand_off(
    state: &AppState,
    id: uuid::Uuid,
    asset: AssetId,
    length: u64,
) -> Result<(), ApiError> {
    tracing::debug!(upload = %id, "probing the completed upload");
    // The upload's id is its claim on the asset's source.
    match source::source_complete(state, asset, id, source::SourceOf::First, length).await {
        // The upload itself succeeded; the asset carries the media error.
        Ok(()) | Err(ApiError::Unprocessable { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes an upload's stored bytes: its multipart upload and its staged
/// pieces. Idempotent.
async fn discard(
    state: &AppState,
    id: uuid::Uuid,
    destination: &ObjectKey,
    multipart_id: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(upload_id) = multipart_id {
        state.store.abort_multipart(destination, upload_id).await?;
    }
    state
        .store
        .delete_prefix(&ObjectKey::upload_prefix(id))
        .await?;
    Ok(())
}

/// Deletes an unfinished upload's row, then aborts a multipart upload a
/// PATCH recorded after `discard` ran (so none is left behind).
async fn delete_row(
    state: &AppState,
    id: uuid::Uuid,
    destination: &ObjectKey,
    discarded: Option<&str>,
) -> Result<(), ApiError> {
    let mut client = state.pool.get().await?;
    let deleted = uploads::delete_unfinished(&mut client, id).await?;
    drop(client);
    if let Some(late) = deleted.flatten() {
        if Some(late.as_str()) != discarded {
            discard(state, id, destination, Some(&late)).await?;
        }
    }
    Ok(())
}

/// Removes expired unfinished uploads (their multipart uploads aborted,
/// their staged pieces deleted); returns how many. Also finishes
/// assemblies whose replica died.
pub async fn delete_expired(state: &Arc<AppState>) -> Result<usize, ApiError> {
    let rows = uploads::expired_unfinished(&state.pool.get().await?).await?;
    for (id, asset, multipart_id) in &rows {
        let (id, multipart_id) = (*id, multipart_id.clone());
        let destination = destination(id, *asset);
        discard(state, id, &destination, multipart_id.as_deref()).await?;
        delete_row(state, id, &destination, multipart_id.as_deref()).await?;
    }
    let partials = concat::delete_expired_partials(state).await?;
    // An assembly whose replica died: finish it.
    let stuck = uploads::stalled_assemblies(&state.pool.get().await?).await?;
    for id in stuck {
        if let Err(error) = assemble(state, id).await {
            tracing::warn!(error = %error, "cannot finish an interrupted assembly");
        }
    }
    // A complete upload whose probe never finished (its replica died, or
    // storage failed): probe it here.
    let lock = uuid::Uuid::new_v4();
    let orphans =
        uploads::take_stalled_probes(&state.pool.get().await?, lock, state.config.upload_lock)
            .await?;
    for (id, asset, length) in orphans {
        // Only uploads with an asset are ever probed (partials never are).
        let Some(asset) = asset else { continue };
        hand_off_under_lease(state, id, asset, length, lock).await;
    }
    Ok(rows.len() + partials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_as_few_and_as_even_as_s3_allows() {
        assert_eq!(part_sizes(8 << 20), vec![8 << 20]);
        assert_eq!(part_sizes(MAX_PART_SIZE), vec![MAX_PART_SIZE]);
        assert_eq!(
            part_sizes(MAX_PART_SIZE + 1),
            vec![MAX_PART_SIZE / 2 + 1, MAX_PART_SIZE / 2]
        );
        let sizes = part_sizes(3 * MAX_PART_SIZE + 2);
        assert_eq!(sizes.len(), 4);
        assert_eq!(sizes.iter().sum::<u64>(), 3 * MAX_PART_SIZE + 2);
        assert!(sizes
            .iter()
            .all(|s| (MIN_PART_SIZE..=MAX_PART_SIZE).contains(s)));
    }

    // The staged pieces left at completion come after every PATCH part, with
    // room for 1000 parts of 5 GiB.
    const _: () = assert!(
        FIRST_FINAL_PART > LAST_PATCH_PART
            && cascade_platform::storage::MAX_PART_NUMBER - FIRST_FINAL_PART + 1 == 1000
    );
}
