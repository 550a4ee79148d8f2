//! The handlers at a direct upload URL, behind [`super::gate`]: tus 1.0.0
//! with the URL as its creation endpoint and as the created upload's URL
//! (the tus handlers of `crate::tus`, limited by the [`Grant`]), and the
//! simple upload (`PUT` of the whole file).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cascade_platform::direct_uploads;
use cascade_schemas::{AssetId, DirectUploadId, DirectUploadState, ObjectKey};

use super::{start_refused, DirectUploadView, Grant};
use crate::auth::Caller;
use crate::body::BodyReader;
use crate::error::ApiError;
use crate::openapi::{BinaryBody, ErrorBody, TusResumable};
use crate::request::declared_length;
use crate::state::AppState;
use crate::{source, tus};

/// tus extensions at a direct upload URL: one upload, so no concatenation.
const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";

/// The URL's tus upload, or 404 when none was created through it.
fn tus_upload(grant: &Grant) -> Result<String, ApiError> {
    grant
        .tus_upload()
        .map(|id| id.to_string())
        .ok_or(ApiError::NotFound("upload"))
}

/// Whether the URL can still start its one upload, as the gate read it.
fn startable(grant: &Grant) -> Result<(), ApiError> {
    match grant.state {
        DirectUploadState::Waiting => Ok(()),
        DirectUploadState::Uploading if grant.tus_upload().is_none() => {
            Err(start_refused(direct_uploads::StartRefused::InProgress))
        }
        state => Err(start_refused(direct_uploads::StartRefused::Used(state))),
    }
}

/// `X-HTTP-Method-Override` (tus core: for environments that cannot send
/// PATCH or DELETE), on a POST.
fn method_override(headers: &HeaderMap) -> Result<Option<Method>, ApiError> {
    let Some(value) = headers.get("x-http-method-override") else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(m) if m.eq_ignore_ascii_case("PATCH") => Ok(Some(Method::PATCH)),
        Ok(m) if m.eq_ignore_ascii_case("DELETE") => Ok(Some(Method::DELETE)),
        Ok(m) if m.eq_ignore_ascii_case("POST") => Ok(None),
        _ => Err(ApiError::bad_request(
            "invalid_header",
            "X-HTTP-Method-Override must be PATCH or DELETE",
        )),
    }
}

/// `OPTIONS` at a direct upload URL that is not a CORS preflight (those are
/// answered by the gate): tus discovery, for this URL.
#[utoipa::path(options, path = "/v1/direct_uploads/{id}/{secret}", tag = "direct uploads",
    operation_id = "direct_upload_options", security(()),
    params(
        ("id" = String, Path, format = Uuid, description = "Direct upload id."),
        ("secret" = String, Path, description = "The URL's secret (43 characters of base64url)."),
        ("Origin" = Option<String>, Header, nullable = false, description = "The page's origin (sent by browsers)."),
        ("Access-Control-Request-Method" = Option<String>, Header, nullable = false,
            description = "Makes the request a CORS preflight: answered with the grant for the URL's origin only."),
        ("Access-Control-Request-Headers" = Option<String>, Header, nullable = false, description = "Headers the page will send."),
    ),
    responses(
        (status = 204, description = "A CORS preflight's answer (with `Access-Control-Allow-*` for the URL's origin only), \
            or tus discovery for this URL.",
            headers(
                ("Access-Control-Allow-Origin" = String, description = "The URL's origin, when the request comes from it."),
                ("Access-Control-Allow-Methods" = String, description = "Preflight: `POST, PUT, HEAD, PATCH, DELETE, OPTIONS`."),
                ("Access-Control-Allow-Headers" = String, description = "Preflight: the tus request headers."),
                ("Access-Control-Max-Age" = u32, description = "Preflight: seconds the answer may be reused."),
                ("Vary" = String, description = "`Origin`."),
                ("Tus-Version" = String, description = "Discovery: `1.0.0`."),
                ("Tus-Extension" = String, description = "Discovery: `creation,creation-with-upload,termination,checksum,expiration`."),
                ("Tus-Max-Size" = u64, description = "Discovery: the URL's `max_size`."),
            )),
        (status = 403, description = "Not a preflight, from another web origin (`origin_not_allowed`).", body = ErrorBody),
        (status = 404, description = "No such upload URL, or a wrong secret (`not_found`).", body = ErrorBody),
        (status = 410, description = "Not a preflight, and the URL expired or was cancelled (`upload_url_expired`).", body = ErrorBody),
        (status = 429, description = "Too many requests: to this URL, or from this address with wrong secrets (`rate_limited`).",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ))]
pub(crate) async fn options(Extension(grant): Extension<Grant>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
    headers.insert("tus-version", HeaderValue::from_static("1.0.0"));
    headers.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(grant.max_size));
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static("sha1,sha256"),
    );
    response
}

/// `POST` at a direct upload URL: tus creation of the URL's one upload
/// (no API key). The upload's `Location` is the URL itself.
#[utoipa::path(post, path = "/v1/direct_uploads/{id}/{secret}", tag = "direct uploads",
    operation_id = "direct_upload_tus_create", security(()),
    params(
        ("id" = String, Path, format = Uuid, description = "Direct upload id."),
        ("secret" = String, Path, description = "The URL's secret."),
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
        ("Upload-Length" = Option<u64>, Header, nullable = false, description = "Size of the file in bytes, at most the URL's `max_size`. Required."),
        ("Upload-Metadata" = Option<String>, Header, nullable = false, description = "Comma-separated `key base64(value)` pairs, echoed by HEAD \
            (the asset is the direct upload's; `asset_id` is ignored). Values must be UTF-8 without NUL characters."),
        ("Upload-Checksum" = Option<String>, Header, nullable = false, description = "With a body: `<algorithm> <base64 digest>` (`sha1` or `sha256`)."),
        ("X-HTTP-Method-Override" = Option<String>, Header, nullable = false, description = "`PATCH` or `DELETE`: the request is that \
            method's (for clients that cannot send them, tus-js-client's `overridePatchMethod`)."),
        ("Upload-Offset" = Option<u64>, Header, nullable = false, description = "With `X-HTTP-Method-Override: PATCH`: as for PATCH."),
    ),
    request_body(content = BinaryBody, content_type = "application/offset+octet-stream",
        description = "Optional: the first bytes (creation-with-upload), or with `X-HTTP-Method-Override: PATCH` the PATCH body."),
    responses(
        (status = 201, description = "The upload exists; send its bytes with PATCH to `Location`, which is this URL.",
            headers(
                ("Location" = String, description = "This URL."),
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Upload-Expires" = String, description = "HTTP-date after which the unfinished upload is removed."),
                ("Cascade-Asset-Id" = uuid::Uuid, description = "The asset the upload fills."),
                ("Upload-Offset" = u64, description = "With a body: the bytes stored so far."),
                ("Access-Control-Allow-Origin" = String, description = "The URL's origin, when the request comes from it."),
                ("Access-Control-Expose-Headers" = String, description = "The tus headers a page may read."),
            )),
        (status = 204, description = "With `X-HTTP-Method-Override`: as PATCH or DELETE answer.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Upload-Offset" = u64, description = "PATCH: the new offset."),
            )),
        (status = 400, description = "Malformed request: `invalid_header`, `missing_upload_length`, `defer_length_unsupported`, \
            `invalid_upload_metadata`, `exceeds_upload_length`, `invalid_checksum`, `unsupported_checksum_algorithm`, `body_read_failed`, \
            `concatenation_unsupported` (a direct upload URL takes one whole upload), and with an override PATCH's codes.",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 403, description = "From another web origin (`origin_not_allowed`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload URL, or a wrong secret; with an override, no upload was created through it yet (`not_found`).",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 408, description = "The body stopped arriving (`body_timeout`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "The URL was used: its one upload was created already, or the asset has its source \
            (`direct_upload_used`); a simple upload through it is in progress (`upload_in_progress`); with an override, as PATCH or DELETE.",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 410, description = "The URL expired or was cancelled (`upload_url_expired`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 413, description = "Upload-Length is over the URL's `max_size`, or the body goes past Upload-Length (`too_large`).",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 415, description = "Override PATCH: Content-Type is not application/offset+octet-stream (`unsupported_media_type`).",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 423, description = "Override PATCH or DELETE: another request is writing the upload (`upload_locked`).",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 429, description = "Too many requests (`rate_limited`), or, with a body, as many uploads in progress as the server takes (`too_many_uploads`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
        (status = 460, description = "Checksum Mismatch (`checksum_mismatch`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
    ))]
pub(crate) async fn tus_create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match method_override(&headers)? {
        Some(Method::PATCH) => {
            return tus_patch(
                State(state),
                Extension(caller),
                Extension(grant),
                headers,
                body,
            )
            .await
        }
        Some(_) => {
            return tus_terminate(State(state), Extension(caller), Extension(grant), headers).await
        }
        None => {}
    }
    startable(&grant)?;
    if headers.contains_key("upload-concat") {
        return Err(ApiError::bad_request(
            "concatenation_unsupported",
            "a direct upload URL takes one whole upload: Upload-Concat (parallel uploads) is not supported here",
        ));
    }
    if let Some(length) = declared_length(&headers, "upload-length")? {
        if length > grant.max_size {
            return Err(ApiError::TooLarge {
                max: grant.max_size,
            });
        }
    }
    let mut response = tus::create_upload(state, caller, Some(&grant), headers, body).await?;
    if let Ok(location) = HeaderValue::from_str(&grant.url) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// `HEAD` at a direct upload URL: the offset of its tus upload.
#[utoipa::path(head, path = "/v1/direct_uploads/{id}/{secret}", tag = "direct uploads",
    operation_id = "direct_upload_tus_head", security(()),
    params(
        ("id" = String, Path, format = Uuid, description = "Direct upload id."),
        ("secret" = String, Path, description = "The URL's secret."),
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
                ("Access-Control-Allow-Origin" = String, description = "The URL's origin, when the request comes from it."),
            )),
        (status = 403, description = "From another web origin.",
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload URL, a wrong secret, or no upload created through it (yet), or it expired unfinished.",
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 410, description = "The URL expired or was cancelled.",
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 429, description = "Too many requests.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
    ))]
pub(crate) async fn tus_head(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let upload = tus_upload(&grant)?;
    tus::head(State(state), Extension(caller), Path(upload), headers).await
}

/// `PATCH` at a direct upload URL: bytes of its tus upload.
#[utoipa::path(patch, path = "/v1/direct_uploads/{id}/{secret}", tag = "direct uploads",
    operation_id = "direct_upload_tus_patch", security(()),
    params(
        ("id" = String, Path, format = Uuid, description = "Direct upload id."),
        ("secret" = String, Path, description = "The URL's secret."),
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
                ("Access-Control-Allow-Origin" = String, description = "The URL's origin, when the request comes from it."),
            )),
        (status = 400, description = "Malformed request: `invalid_header`, `missing_upload_offset`, `exceeds_upload_length`, \
            `invalid_checksum`, `unsupported_checksum_algorithm`, `body_read_failed`.", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 403, description = "From another web origin (`origin_not_allowed`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload URL, a wrong secret, no upload created through it (yet), or it expired unfinished (`not_found`).",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 408, description = "The body stopped arriving (`body_timeout`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "Upload-Offset differs from the stored offset (`offset_mismatch`), \
            or the upload is already complete (`upload_complete`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 410, description = "The URL expired or was cancelled (`upload_url_expired`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 413, description = "The body goes past Upload-Length (`too_large`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 415, description = "Content-Type is not application/offset+octet-stream (`unsupported_media_type`).",
            body = ErrorBody, headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 423, description = "Another request is writing this upload; retry shortly (`upload_locked`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 429, description = "Too many requests (`rate_limited`), or, with a body, as many uploads in progress as the server takes (`too_many_uploads`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
        (status = 460, description = "Checksum Mismatch (`checksum_mismatch`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
    ))]
pub(crate) async fn tus_patch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let upload = tus_upload(&grant)?;
    tus::patch(State(state), Extension(caller), Path(upload), headers, body).await
}

/// `DELETE` at a direct upload URL: terminates its unfinished tus upload;
/// the URL is then `cancelled` (its asset waits for a source by another path).
#[utoipa::path(delete, path = "/v1/direct_uploads/{id}/{secret}", tag = "direct uploads",
    operation_id = "direct_upload_tus_terminate", security(()),
    params(
        ("id" = String, Path, format = Uuid, description = "Direct upload id."),
        ("secret" = String, Path, description = "The URL's secret."),
        ("Tus-Resumable" = TusResumable, Header, description = "Protocol version; anything but `1.0.0` gets 412."),
    ),
    responses(
        (status = 204, description = "The upload and its stored bytes are gone; the URL is cancelled.",
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Access-Control-Allow-Origin" = String, description = "The URL's origin, when the request comes from it."),
            )),
        (status = 403, description = "From another web origin (`origin_not_allowed`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 404, description = "No such upload URL, a wrong secret, or no upload created through it (`not_found`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 409, description = "The upload is complete and can no longer be terminated (`upload_complete`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 410, description = "The URL expired or was cancelled (`upload_url_expired`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 412, description = "Unsupported protocol version (`unsupported_tus_version`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Tus-Version" = String, description = "Protocol versions supported: `1.0.0`."),
            )),
        (status = 423, description = "A PATCH is writing the upload; retry shortly (`upload_locked`).", body = ErrorBody,
            headers(("Tus-Resumable" = TusResumable, description = "The protocol version of the response."))),
        (status = 429, description = "Too many requests (`rate_limited`), or, with a body, as many uploads in progress as the server takes (`too_many_uploads`).", body = ErrorBody,
            headers(
                ("Tus-Resumable" = TusResumable, description = "The protocol version of the response."),
                ("Retry-After" = u64, description = "Seconds to wait."),
            )),
    ))]
pub(crate) async fn tus_terminate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let upload = tus_upload(&grant)?;
    let response = tus::terminate(
        State(state.clone()),
        Extension(caller),
        Path(upload),
        headers,
    )
    .await?;
    // The upload is gone (a failure here only leaves the URL reading
    // `expired` instead of `cancelled`).
    let marked = async {
        direct_uploads::tus_terminated(&state.pool.get().await?, grant.id).await?;
        Ok::<(), ApiError>(())
    };
    if let Err(error) = marked.await {
        tracing::warn!(direct_upload = %grant.id, error = %error, "cannot mark a terminated direct upload cancelled");
    }
    Ok(response)
}

/// `PUT` at a direct upload URL: the whole file in one request (no API key).
/// A failed or cut-off upload leaves the URL `waiting`, to be tried again
/// until it expires; one that arrived completes it.
#[utoipa::path(put, path = "/v1/direct_uploads/{id}/{secret}", tag = "direct uploads",
    operation_id = "direct_upload_put", security(()),
    params(
        ("id" = String, Path, format = Uuid, description = "Direct upload id."),
        ("secret" = String, Path, description = "The URL's secret."),
    ),
    request_body(content = BinaryBody, content_type = "application/octet-stream",
        description = "The file, at most the URL's `max_size` (Content-Length or chunked)."),
    responses(
        (status = 202, body = DirectUploadView, description = "The source is stored and the asset is processing; the URL is `complete`.",
            headers(("Access-Control-Allow-Origin" = String, description = "The URL's origin, when the request comes from it."))),
        (status = 400, body = ErrorBody, description = "`invalid_header` (Content-Length), `body_read_failed`."),
        (status = 403, body = ErrorBody, description = "From another web origin (`origin_not_allowed`)."),
        (status = 404, body = ErrorBody, description = "No such upload URL, or a wrong secret (`not_found`)."),
        (status = 408, body = ErrorBody, description = "The body stopped arriving (`body_timeout`); the URL may be tried again."),
        (status = 409, body = ErrorBody, description = "The URL was used (`direct_upload_used`), or another upload through it \
            is in progress or took over (`upload_in_progress`)."),
        (status = 410, body = ErrorBody, description = "The URL expired or was cancelled (`upload_url_expired`)."),
        (status = 413, body = ErrorBody, description = "The file is over the URL's `max_size` (`too_large`)."),
        (status = 422, body = ErrorBody, description = "The file is not media we can process (the asset is `errored` with the reason; the URL is `complete`)."),
        (status = 429, body = ErrorBody, description = "Too many requests (`rate_limited`), or as many uploads in progress as the server takes (`too_many_uploads`).",
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ))]
pub(crate) async fn simple(
    State(state): State<Arc<AppState>>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let max = grant.max_size;
    startable(&grant)?;
    if declared_length(&headers, "content-length")?.is_some_and(|length| length > max) {
        return Err(ApiError::TooLarge { max });
    }
    let lease = uuid::Uuid::new_v4();
    let asset =
        direct_uploads::start_simple(&state.pool, grant.id, lease, state.config.upload_lock)
            .await?
            .map_err(start_refused)?;
    let stored = tokio::select! {
        stored = store(&state, asset, body, max) => stored,
        lost = keep_lease(&state, grant.id, lease) => Err(lost),
    };
    let completed = match stored {
        Ok(length) => {
            source::source_complete(&state, asset, lease, source::SourceOf::First, length).await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = completed {
        // The file is stored and refused (the URL is complete with the
        // asset's error), the asset is gone, or another upload took over;
        // otherwise the URL may be tried again.
        let settled = matches!(
            error,
            ApiError::Unprocessable { .. } | ApiError::NotFound(_) | ApiError::Conflict { .. }
        );
        if !settled {
            if let Err(abandon) = direct_uploads::abandon_simple(&state.pool, grant.id, lease).await
            {
                tracing::warn!(direct_upload = %grant.id, error = %abandon, "cannot reopen a direct upload after a failed upload; its lease lapses by itself");
            }
        }
        return Err(error);
    }
    let upload = direct_uploads::get(&state.pool.get().await?, grant.id)
        .await?
        .ok_or(ApiError::NotFound("upload URL"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(super::view(&state, &upload, None)),
    )
        .into_response())
}

/// Streams the body into the asset's source; returns its length.
async fn store(state: &AppState, asset: AssetId, body: Body, max: u64) -> Result<u64, ApiError> {
    let mut reader = BodyReader::new(body, max, state.limits.pace);
    Ok(state
        .store
        .put(&ObjectKey::source(asset), &mut reader)
        .await?)
}

/// Renews a simple upload's lease every third of `ingest.upload_lock`
/// while its body streams; returns the error to answer once it lost it.
async fn keep_lease(state: &AppState, id: DirectUploadId, lease: uuid::Uuid) -> ApiError {
    let hold = state.config.upload_lock;
    let every = (hold / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let renewed = async {
            Ok::<bool, ApiError>(
                direct_uploads::renew_simple(&state.pool.get().await?, id, lease, hold).await?,
            )
        };
        match renewed.await {
            Ok(true) => {}
            Ok(false) => {
                return ApiError::Conflict {
                    code: "upload_in_progress",
                    message: "this upload stalled and another upload through the URL took over"
                        .to_owned(),
                }
            }
            // Transient: the next round tries again; the lease lapses by
            // itself if the database stays away.
            Err(error) => {
                tracing::warn!(direct_upload = %id, error = %error, "cannot renew a direct upload's lease")
            }
        }
    }
}
