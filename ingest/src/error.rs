//! The API's one error type: every failure becomes a status, a stable
//! `code` and a human `message` (internal details go to the log only).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The path exists but not with this method.
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// The request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The request conflicts with the resource's state.
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The request is not allowed on this resource, whoever asks.
    #[error("{message}")]
    Forbidden {
        /// Stable code.
        code: &'static str,
        /// Why not.
        message: String,
    },
    /// The resource existed and is gone for good (an expired or cancelled
    /// upload URL); unlike 404, retrying with the same URL never helps.
    #[error("{message}")]
    Gone {
        /// Stable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Another request is writing this upload right now.
    #[error("another request is writing this upload; retry shortly")]
    Locked,
    /// The declared or actual size is over the limit.
    #[error("the upload is larger than the {max} bytes allowed")]
    TooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// A small JSON request body is over its limit.
    #[error("the request body is larger than the {max} bytes allowed")]
    BodyTooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// The media is not something we can process.
    #[error("{message}")]
    Unprocessable {
        /// Stable code (from the probe).
        code: &'static str,
        /// Creator-readable reason.
        message: String,
    },
    /// tus: the checksum of the received bytes differs from the one declared.
    #[error("the checksum of the received data does not match Upload-Checksum")]
    ChecksumMismatch,
    /// tus: the client speaks a protocol version we do not.
    #[error("unsupported Tus-Resumable version; this server speaks 1.0.0")]
    TusVersion,
    /// Wrong Content-Type for the request.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// Too many requests for this key.
    #[error("rate limit exceeded; retry after {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The body did not arrive in time: it stalled, came too slowly, or
    /// took longer than its deadline (the reason, for humans).
    #[error("the request body {0}")]
    BodyTimeout(String),
    /// The key, or the process, has as many uploads in progress as it may.
    #[error("{message}")]
    TooManyUploads {
        /// Which limit, for humans.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// A dependency is down; retrying later may work.
    #[error("temporarily unavailable")]
    Unavailable(String),
    /// The object store has no space left for what this request stores.
    #[error("the server has no storage space left for this upload; try again later")]
    StorageFull(String),
    /// The deployment lacks the configuration this request needs; an
    /// operator must add it (retrying will not help until then).
    #[error("{message}")]
    NotConfigured {
        /// Stable code.
        code: &'static str,
        /// What is missing.
        message: String,
    },
    /// A bug or an unexpected failure.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for a 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::Gone { code, .. } => (StatusCode::GONE, code),
            Self::Locked => (StatusCode::LOCKED, "upload_locked"),
            Self::TooLarge { .. } | Self::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            // 460 is tus's "Checksum Mismatch".
            Self::ChecksumMismatch => (
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum_mismatch",
            ),
            Self::TusVersion => (StatusCode::PRECONDITION_FAILED, "unsupported_tus_version"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::TooManyUploads { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            Self::NotConfigured { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(detail) => tracing::error!(error = %detail, "request failed"),
            Self::Unavailable(detail) => tracing::warn!(error = %detail, "dependency unavailable"),
            Self::StorageFull(detail) => tracing::error!(error = %detail, "storage full"),
            _ => {}
        }
        let mut response = (
            status,
            Json(json!({ "code": code, "message": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Self::RateLimited { retry_after } | Self::TooManyUploads { retry_after, .. } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    headers.insert("retry-after", v);
                }
            }
            Self::Unavailable(_) => {
                headers.insert("retry-after", HeaderValue::from_static("5"));
            }
            Self::StorageFull(_) => {
                headers.insert("retry-after", HeaderValue::from_static("60"));
            }
            Self::TusVersion => {
                headers.insert("tus-version", HeaderValue::from_static("1.0.0"));
            }
            _ => {}
        }
        headers.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
        response
    }
}

impl From<cascade_platform::db::DbError> for ApiError {
    fn from(e: cascade_platform::db::DbError) -> Self {
        if e.is_retryable() {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<deadpool_postgres::tokio_postgres::Error> for ApiError {
    fn from(e: deadpool_postgres::tokio_postgres::Error) -> Self {
        Self::from(cascade_platform::db::DbError::Query(e))
    }
}

impl From<cascade_platform::StorageError> for ApiError {
    fn from(e: cascade_platform::StorageError) -> Self {
        match e {
            cascade_platform::StorageError::BodyRead(io) => crate::body::classify(&io)
                .unwrap_or_else(|| {
                    Self::bad_request("body_read_failed", "reading the request body failed")
                }),
            cascade_platform::StorageError::Full(detail) => Self::StorageFull(detail),
            e if e.is_retryable() => Self::Unavailable(e.to_string()),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<cascade_platform::queue::QueueError> for ApiError {
    fn from(e: cascade_platform::queue::QueueError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
