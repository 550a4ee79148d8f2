//! tus 1.0.0 resumable uploads: core protocol plus creation,
//! creation-with-upload, termination, checksum (sha1, sha256) and expiration.
//!
//! Each PATCH stores its bytes as one part object keyed by the PATCH's lease
//! id; Postgres holds the ordered part keys, the offset and the lease. A PATCH
//! takes the lease with a conditional update (a concurrent one gets 423),
//! renews it while its body streams, and advances the offset only if it still
//! holds the lease at the offset it started from, so a stalled or crashed
//! writer can never corrupt the upload. The last PATCH assembles the parts
//! into the asset's source.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cascade_platform::ObjectStore;
use cascade_schemas::{AssetId, ObjectKey};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

use crate::api::{self, AppState};
use crate::body::{BodyReader, Hasher};
use crate::error::ApiError;
use crate::openapi::{BinaryBody, ErrorBody, TusResumable};
use crate::source;

const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
const CHECKSUMS: &str = "sha1,sha256";
const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";

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
                ("Tus-Extension" = String, description = "Extensions supported: `creation,creation-with-upload,termination,checksum,expiration`."),
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

/// `POST /v1/uploads`: creates an upload (and, with a body, stores its first bytes).
#[utoipa::path(post, path = "/v1/uploads", tag = "tus", operation_id = "tus_create",
    params(
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
        ("Upload-Length" = u64, Header, description = "Size of the whole upload in bytes, at most `Tus-Max-Size`. \
            (`Upload-Defer-Length` is not supported: a request carrying it gets 400 `defer_length_unsupported`.)"),
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
            `body_read_failed`.", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 401, description = "Missing or invalid API key (`unauthorized`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "`asset_id` in Upload-Metadata names no asset (`not_found`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 408, description = "The body stopped arriving (`body_timeout`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "The asset in `asset_id` is no longer waiting for its source (`source_already_uploaded`).",
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
        (status = 429, description = "Rate limit of the key exceeded (`rate_limited`).", body = ErrorBody,
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
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
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
    let raw_metadata = match headers.get("upload-metadata") {
        None => "",
        Some(v) => v.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_upload_metadata",
                "Upload-Metadata must be ASCII: `key base64value` pairs",
            )
        })?,
    };
    let metadata = parse_metadata(raw_metadata)?;
    let asset_id = match metadata.get("asset_id").and_then(|v| v.as_str()) {
        Some(raw) => {
            let id: AssetId = raw.parse().map_err(|_| ApiError::NotFound("asset"))?;
            api::waiting_asset(&state, id).await?;
            id
        }
        None => {
            let title = metadata
                .get("title")
                .or_else(|| metadata.get("filename"))
                .and_then(|v| v.as_str());
            api::insert_asset(&state, title, None, None).await?.id
        }
    };
    let id = uuid::Uuid::new_v4();
    let expiry_ms = state.config.upload_expiry.as_millis() as f64;
    let client = state.pool.get().await?;
    let expires_at: DateTime<Utc> = client
        .query_one(
            "INSERT INTO uploads (id, asset_id, length, metadata, expires_at)
             VALUES ($1, $2, $3, $4, now() + $5::float8 * interval '1 millisecond') RETURNING expires_at",
            &[&id, &asset_id.as_uuid(), &(length as i64), &serde_json::json!({ "raw": raw_metadata, "values": metadata }), &expiry_ms],
        )
        .await?
        .get(0);
    drop(client);
    let mut offset = None;
    let with_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(OFFSET_CONTENT_TYPE));
    if with_body {
        offset = Some(write_chunk(&state, id, 0, &headers, body).await?);
    }
    let mut response = StatusCode::CREATED.into_response();
    header(
        &mut response,
        "location",
        &state.url(&format!("/v1/uploads/{id}")),
    );
    header(&mut response, "tus-resumable", TUS_VERSION);
    header(&mut response, "upload-expires", &http_date(expires_at));
    header(&mut response, "cascade-asset-id", &asset_id.to_string());
    if let Some(offset) = offset {
        header(&mut response, "upload-offset", &offset.to_string());
    }
    Ok(response)
}

struct UploadRow {
    length: i64,
    offset: i64,
    state: String,
    raw_metadata: String,
    expires_at: DateTime<Utc>,
    expired: bool,
}

async fn load(state: &AppState, id: uuid::Uuid) -> Result<UploadRow, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT length, \"offset\", state, metadata->>'raw', expires_at, expires_at < now() FROM uploads WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(ApiError::NotFound("upload"))?;
    Ok(UploadRow {
        length: row.get(0),
        offset: row.get(1),
        state: row.get(2),
        raw_metadata: row.get::<_, Option<String>>(3).unwrap_or_default(),
        expires_at: row.get(4),
        expired: row.get(5),
    })
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
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
    let id = parse_upload_id(&id)?;
    let row = load(&state, id).await?;
    if row.expired && row.state != "complete" {
        return Err(ApiError::NotFound("upload"));
    }
    let mut response = StatusCode::OK.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    header(&mut response, "upload-offset", &row.offset.to_string());
    header(&mut response, "upload-length", &row.length.to_string());
    header(&mut response, "cache-control", "no-store");
    if row.state != "complete" {
        header(&mut response, "upload-expires", &http_date(row.expires_at));
    }
    if !row.raw_metadata.is_empty() {
        header(&mut response, "upload-metadata", &row.raw_metadata);
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
        (status = 404, description = "No such upload, or it expired unfinished (`not_found`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 408, description = "The body stopped arriving (`body_timeout`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "Upload-Offset differs from the stored offset (`offset_mismatch`), \
            or the upload is already complete (`upload_complete`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 413, description = "The body goes past Upload-Length (`too_large`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 415, description = "Content-Type is not application/offset+octet-stream (`unsupported_media_type`).",
            body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 423, description = "Another request is writing this upload; retry shortly (`upload_locked`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 429, description = "Rate limit of the key exceeded (`rate_limited`).", body = ErrorBody,
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
    let new_offset = write_chunk(&state, id, offset, &headers, body).await?;
    let row = load(&state, id).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    header(&mut response, "tus-resumable", TUS_VERSION);
    header(&mut response, "upload-offset", &new_offset.to_string());
    if row.state != "complete" {
        header(&mut response, "upload-expires", &http_date(row.expires_at));
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
            (`upload_complete`).", body = ErrorBody,
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
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_version(&headers)?;
    let id = parse_upload_id(&id)?;
    let client = state.pool.get().await?;
    let row = client
        .query_opt("SELECT state FROM uploads WHERE id = $1", &[&id])
        .await?;
    match row.map(|r| r.get::<_, String>(0)) {
        None => return Err(ApiError::NotFound("upload")),
        Some(s) if s != "receiving" => {
            return Err(ApiError::Conflict {
                code: "upload_complete",
                message: "the upload is complete and can no longer be terminated".to_owned(),
            })
        }
        Some(_) => {}
    }
    state
        .store
        .delete_prefix(&ObjectKey::upload_prefix(id))
        .await?;
    client
        .execute(
            "DELETE FROM uploads WHERE id = $1 AND state = 'receiving'",
            &[&id],
        )
        .await?;
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

fn lease_ms(state: &AppState) -> f64 {
    state.config.upload_lock.as_millis() as f64
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
            let _ = client
                .execute(
                    "UPDATE uploads SET locked_until = now() + $3::float8 * interval '1 millisecond'
                     WHERE id = $1 AND lock_id = $2",
                    &[&id, &lock, &lease_ms(state)],
                )
                .await;
        }
    }
}

async fn release(state: &AppState, id: uuid::Uuid, lock: uuid::Uuid) {
    if let Ok(client) = state.pool.get().await {
        let _ = client
            .execute("UPDATE uploads SET locked_until = NULL, lock_id = NULL WHERE id = $1 AND lock_id = $2", &[&id, &lock])
            .await;
    }
}

/// Stores one PATCH body at `client_offset`; returns the new offset.
async fn write_chunk(
    state: &AppState,
    id: uuid::Uuid,
    client_offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64, ApiError> {
    let lock = uuid::Uuid::new_v4();
    let client = state.pool.get().await?;
    let taken = client
        .query_opt(
            "UPDATE uploads SET locked_until = now() + $3::float8 * interval '1 millisecond', lock_id = $2, updated_at = now()
             WHERE id = $1 AND state = 'receiving' AND expires_at > now()
               AND (locked_until IS NULL OR locked_until < now())
             RETURNING \"offset\", length, cardinality(part_keys)",
            &[&id, &lock, &lease_ms(state)],
        )
        .await?;
    drop(client);
    let Some(row) = taken else {
        let row = load(state, id).await?;
        return Err(if row.expired {
            ApiError::NotFound("upload")
        } else if row.state != "receiving" {
            ApiError::Conflict {
                code: "upload_complete",
                message: "the upload is already complete".to_owned(),
            }
        } else {
            ApiError::Locked
        });
    };
    let (offset, length, parts): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
    let result = async {
        if client_offset != offset as u64 {
            return Err(ApiError::Conflict {
                code: "offset_mismatch",
                message: format!("Upload-Offset {client_offset} does not match the stored offset {offset}"),
            });
        }
        let remaining = (length - offset) as u64;
        if let Some(declared) = api::declared_length(headers, "content-length")? {
            if declared > remaining {
                return Err(ApiError::bad_request(
                    "exceeds_upload_length",
                    format!("the body ({declared} bytes) goes past Upload-Length ({remaining} bytes remain)"),
                ));
            }
        }
        let expected_checksum = checksum(headers)?;
        let mut reader = BodyReader::new(body, remaining, state.config.body_timeout);
        let mut expected = None;
        if let Some((hasher, digest)) = expected_checksum {
            reader = reader.hash_with(hasher);
            expected = Some(digest);
        }
        let part_key = ObjectKey::upload_part(id, (parts + 1) as u32, lock);
        let stored = tokio::select! {
            stored = state.store.put(&part_key, &mut reader) => stored,
            never = keep_lease(state, id, lock) => match never {},
        };
        stored?;
        let written = reader.bytes_read();
        if let (Some(expected), Some(hasher)) = (expected, reader.take_hasher()) {
            if hasher.finish() != expected {
                state.store.delete(&part_key).await?;
                return Err(ApiError::ChecksumMismatch);
            }
        }
        if written == 0 {
            state.store.delete(&part_key).await?;
            // Nothing to record; the next PATCH must not find the upload locked.
            release(state, id, lock).await;
            return Ok(offset as u64);
        }
        let client = state.pool.get().await?;
        let advanced = client
            .query_opt(
                "UPDATE uploads SET \"offset\" = \"offset\" + $4, part_keys = array_append(part_keys, $5),
                     locked_until = NULL, lock_id = NULL, updated_at = now()
                 WHERE id = $1 AND lock_id = $2 AND \"offset\" = $3 RETURNING \"offset\"",
                &[&id, &lock, &offset, &(written as i64), &part_key.as_str()],
            )
            .await?;
        match advanced {
            Some(row) => Ok(row.get::<_, i64>(0) as u64),
            None => {
                // Our lease lapsed and another request took over: our bytes never count.
                let _ = state.store.delete(&part_key).await;
                Err(ApiError::Locked)
            }
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
    if new_offset == length as u64 {
        assemble(state, id).await?;
    }
    Ok(new_offset)
}

/// Streams the stored parts, in order, as one reader.
fn parts_reader(store: ObjectStore, keys: Vec<String>) -> impl AsyncRead + Unpin + Send {
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

/// Joins the parts into the asset's source, removes them, and hands the
/// source on (probe, then transcode). Runs under the upload's lease.
async fn assemble(state: &AppState, id: uuid::Uuid) -> Result<(), ApiError> {
    let lock = uuid::Uuid::new_v4();
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "UPDATE uploads SET state = 'assembling', locked_until = now() + $3::float8 * interval '1 millisecond', lock_id = $2
             WHERE id = $1 AND \"offset\" = length
               AND (state = 'receiving'
                    OR (state = 'assembling' AND (locked_until IS NULL OR locked_until < now())))
             RETURNING asset_id, part_keys",
            &[&id, &lock, &lease_ms(state)],
        )
        .await?;
    drop(client);
    let Some(row) = row else { return Ok(()) };
    let asset = AssetId::from(row.get::<_, uuid::Uuid>(0));
    let keys: Vec<String> = row.get(1);
    let scratch = api::scratch_file(state)?;
    let copy = scratch
        .reopen()
        .map_err(|e| ApiError::Internal(format!("scratch file: {e}")))?;
    let mut reader = CopyingReader {
        inner: parts_reader(state.store.clone(), keys),
        copy,
    };
    let source_key = ObjectKey::source(asset);
    let stored = tokio::select! {
        stored = state.store.put(&source_key, &mut reader) => stored,
        never = keep_lease(state, id, lock) => match never {},
    };
    if let Err(e) = stored {
        release(state, id, lock).await;
        return Err(e.into());
    }
    state
        .store
        .delete_prefix(&ObjectKey::upload_prefix(id))
        .await?;
    let client = state.pool.get().await?;
    client
        .execute(
            "UPDATE uploads SET state = 'complete', part_keys = '{}', locked_until = NULL, lock_id = NULL, updated_at = now()
             WHERE id = $1 AND lock_id = $2",
            &[&id, &lock],
        )
        .await?;
    drop(client);
    match source::source_complete(state, asset, scratch.path()).await {
        // The upload itself succeeded; the asset carries the media error.
        Ok(()) | Err(ApiError::Unprocessable { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies everything read to a file (the probe's copy).
struct CopyingReader<R> {
    inner: R,
    copy: std::fs::File,
}

impl<R: AsyncRead + Unpin> AsyncRead for CopyingReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Write;
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                this.copy.write_all(&buf.filled()[before..])?;
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Removes expired unfinished uploads; returns how many.
pub async fn delete_expired(state: &AppState) -> Result<usize, ApiError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT id FROM uploads WHERE expires_at < now() AND state = 'receiving'
               AND (locked_until IS NULL OR locked_until < now())",
            &[],
        )
        .await?;
    drop(client);
    for row in &rows {
        let id: uuid::Uuid = row.get(0);
        state
            .store
            .delete_prefix(&ObjectKey::upload_prefix(id))
            .await?;
        let client = state.pool.get().await?;
        client
            .execute(
                "DELETE FROM uploads WHERE id = $1 AND state = 'receiving'",
                &[&id],
            )
            .await?;
    }
    // An assembly whose replica died: finish it.
    let client = state.pool.get().await?;
    let stuck = client
        .query(
            "SELECT id FROM uploads WHERE state = 'assembling'
               AND (locked_until IS NULL OR locked_until < now())",
            &[],
        )
        .await?;
    drop(client);
    for row in &stuck {
        if let Err(error) = assemble(state, row.get(0)).await {
            tracing::warn!(error = %error, "cannot finish an interrupted assembly");
        }
    }
    Ok(rows.len())
}
