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
//!
//! The module is split by what each part does: [`handlers`] (the HTTP
//! operations), `write` (storing PATCH bodies under the lease), `assembly`
//! (making the source once every byte arrived, then the probe), `sweep`
//! (expiry and interrupted work) and [`concat`].

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cascade_platform::uploads::{self, UploadStatus};
use cascade_schemas::{AssetId, EnvironmentId, ObjectKey};
use chrono::{DateTime, Utc};

use crate::error::ApiError;
use crate::state::AppState;

mod assembly;
mod concat;
#[cfg(test)]
mod fuzz;
pub(crate) mod handlers;
mod sweep;
mod write;

use assembly::{assemble, hand_off_under_lease, Assembly};
use handlers::{checksum, upload_asset};
use sweep::{delete_row, discard};
use write::{keep_lease, part_sizes, release, staged_reader, write_chunk, FIRST_FINAL_PART};

pub(crate) use handlers::create_upload;
pub use handlers::{create, head, options, patch, terminate};
pub use sweep::delete_expired;

pub(crate) const TUS_VERSION: &str = "1.0.0";
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
