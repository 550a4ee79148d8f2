//! The one mapping of origin failures to HTTP: status, stable code, safe
//! message and caching headers. Internal details are logged where they
//! happen and never reach the client.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cascade_schemas::mime;

/// Why a playback request was not answered with the object.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginError {
    /// No such playback id, object or route.
    #[error("not found")]
    NotFound,
    /// The asset exists but no version of it is published yet.
    #[error("asset not ready")]
    AssetNotReady,
    /// The asset is archived and being rebuilt from its source (a play
    /// asked for it); playable again shortly. A 503, never a 404 a CDN
    /// would keep.
    #[error("asset restoring")]
    AssetRestoring {
        /// When to try again.
        retry_after: Duration,
    },
    /// A live object not (yet) there: a segment about to be written, or a
    /// manifest before the first segments. Never cached, so no CDN keeps
    /// telling players a segment is missing once it exists.
    #[error("live object not found")]
    LiveNotYet,
    /// The live stream has no broadcast under way.
    #[error("stream idle")]
    StreamIdle,
    /// A signed asset was asked for without a token.
    #[error("token required")]
    TokenRequired,
    /// The token is malformed or its signature does not match.
    #[error("token invalid")]
    TokenInvalid,
    /// The token's expiry has passed.
    #[error("token expired")]
    TokenExpired,
    /// The requested byte range lies outside the object.
    #[error("range not satisfiable for {size} bytes")]
    RangeNotSatisfiable {
        /// The object's size.
        size: u64,
    },
    /// The request's headers exceed `max_header_bytes`.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// A method other than GET, HEAD or OPTIONS.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The object store is failing or the breaker is open; retry later.
    #[error("storage unavailable")]
    StorageUnavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// Postgres could not be asked about the playback id.
    #[error("database unavailable")]
    DatabaseUnavailable,
    /// An LL-HLS delivery directive is malformed or asks too far ahead
    /// (draft-pantos-hls-rfc8216bis 6.2.5.2).
    #[error("invalid HLS delivery directive: {0}")]
    HlsDirectiveInvalid(String),
    /// A blocking request's part did not appear within three target durations.
    #[error("part not ready")]
    PartNotReady,
}

impl OriginError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::AssetNotReady | Self::LiveNotYet | Self::StreamIdle => {
                StatusCode::NOT_FOUND
            }
            Self::TokenRequired | Self::TokenInvalid | Self::TokenExpired => StatusCode::FORBIDDEN,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::StorageUnavailable { .. }
            | Self::DatabaseUnavailable
            | Self::PartNotReady
            | Self::AssetRestoring { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::HlsDirectiveInvalid(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AssetNotReady => "asset_not_ready",
            Self::AssetRestoring { .. } => "asset_restoring",
            Self::LiveNotYet => "not_found",
            Self::StreamIdle => "stream_idle",
            Self::TokenRequired => "token_required",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::HeadersTooLarge => "headers_too_large",
            Self::StorageUnavailable { .. } => "storage_unavailable",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::HlsDirectiveInvalid(_) => "invalid_hls_directive",
            Self::PartNotReady => "part_not_ready",
        }
    }

    /// A message safe to show to anyone.
    pub fn message(&self) -> &'static str {
        match self {
            Self::NotFound => "no such playback object",
            Self::AssetNotReady => "the asset is still being processed; try again shortly",
            Self::AssetRestoring { .. } => {
                "the asset is being restored from the archive; try again shortly"
            }
            Self::LiveNotYet => "no such live object (yet)",
            Self::StreamIdle => "the live stream is idle: nothing is being broadcast",
            Self::TokenRequired => "this asset needs a playback token (?token=)",
            Self::TokenInvalid => "the playback token is not valid for this asset",
            Self::TokenExpired => "the playback token has expired",
            Self::RangeNotSatisfiable { .. } => "the requested range lies outside the object",
            Self::MethodNotAllowed => "only GET, HEAD and OPTIONS are served",
            Self::HeadersTooLarge => "the request headers are too large",
            Self::StorageUnavailable { .. } => "storage is temporarily unavailable; retry shortly",
            Self::DatabaseUnavailable => {
                "the origin cannot look up assets right now; retry shortly"
            }
            Self::HlsDirectiveInvalid(_) => {
                "_HLS_msn / _HLS_part are malformed or too far past the live edge"
            }
            Self::PartNotReady => "the requested part did not appear in time; reload the playlist",
        }
    }

    /// `Cache-Control` of the error: short-lived, never long at a CDN.
    /// Not-found answers may be shared for 2 s (they absorb polling storms
    /// for assets still processing); everything else is not stored.
    pub fn cache_control(&self) -> &'static str {
        match self {
            Self::NotFound => "public, max-age=2",
            // Not playable yet, playable in a moment (progressive publish):
            // players polling for it learn at once (the origin answers
            // such polls from a lookup at most `PENDING_TTL` old).
            Self::AssetNotReady => "no-store",
            // Idle now, live in a moment: players polling an idle stream
            // learn of its start within a second.
            Self::StreamIdle => "public, max-age=1",
            Self::TokenRequired | Self::TokenInvalid | Self::TokenExpired => "private, no-store",
            _ => "no-store",
        }
    }
}

impl IntoResponse for OriginError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code(), "message": self.message() });
        let mut response = (self.status(), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime::JSON));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(self.cache_control()),
        );
        match &self {
            Self::StorageUnavailable { retry_after } | Self::AssetRestoring { retry_after } => {
                let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            Self::DatabaseUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            Self::RangeNotSatisfiable { size } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            Self::MethodNotAllowed => {
                headers.insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
            }
            _ => {}
        }
        response
    }
}
