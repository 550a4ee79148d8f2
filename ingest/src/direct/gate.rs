//! The middleware in front of every direct upload URL
//! (`/v1/direct_uploads/{id}/{secret}`): it stands in for `require_key`.
//!
//! It authenticates the URL's secret (its SHA-256 compared with the stored
//! one in constant time; a malformed or wrong one is 404, counted against
//! the client address's budget of failed authentications like a bad API
//! key), answers CORS preflights for the URL's one origin, refuses other
//! origins' requests (403), expired and cancelled URLs (410), and then
//! hands the request on with a [`Caller`] in the direct upload's
//! environment and a [`Grant`] that limits it to the URL's one upload.
//! Every answer from the URL to its origin carries the CORS headers.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cascade_platform::direct_uploads::{self, DirectUpload};
use cascade_schemas::{DirectUploadId, DirectUploadProtocol, DirectUploadState};
use subtle::ConstantTimeEq;

use super::cors;
use crate::auth::{client_address, Caller, KeyRef};
use crate::error::ApiError;
use crate::state::AppState;

/// What a request through a direct upload URL may do, as the URL's row
/// read when the request arrived (transitions re-check it under a lock).
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The direct upload (and the id of the tus upload made through it).
    pub id: DirectUploadId,
    /// Largest upload accepted, in bytes.
    pub max_size: u64,
    /// Its state then.
    pub state: DirectUploadState,
    /// How its source is being sent, once started.
    pub protocol: Option<DirectUploadProtocol>,
    /// The URL itself: the `Location` of the tus upload made through it.
    pub url: String,
}

impl Grant {
    /// The URL's tus upload, if one was created through it.
    pub fn tus_upload(&self) -> Option<uuid::Uuid> {
        (self.protocol == Some(DirectUploadProtocol::Tus)).then(|| self.id.as_uuid())
    }
}

/// The answer for a URL that does not exist (or whose secret is wrong).
fn unknown() -> ApiError {
    ApiError::NotFound("upload URL")
}

/// The answer for a dead URL.
pub(crate) fn gone(state: DirectUploadState) -> ApiError {
    ApiError::Gone {
        code: "upload_url_expired",
        message: format!(
            "this upload URL is {state} and takes no more requests; ask for a new one"
        ),
    }
}

/// The direct upload whose URL this is, if the secret matches.
async fn authenticate(
    state: &AppState,
    address: IpAddr,
    id: &str,
    secret: &str,
) -> Result<DirectUpload, ApiError> {
    let per_address = state.config.failed_auth_per_minute;
    let refused = || match state.auth.failures.take(address, per_address) {
        Ok(()) => unknown(),
        Err(retry_after) => ApiError::RateLimited { retry_after },
    };
    let Some(id) = id
        .parse::<DirectUploadId>()
        .ok()
        .filter(|_| direct_uploads::well_formed_secret(secret))
    else {
        return Err(refused());
    };
    // An address that spent its budget of failures is not looked up again
    // until it refills.
    if !state.auth.failures.has_token(address, per_address) {
        return Err(refused());
    }
    let found = direct_uploads::get(&state.pool.get().await?, id).await?;
    let hash = direct_uploads::hash_secret(secret);
    match found {
        Some(upload) if bool::from(hash.ct_eq(&upload.secret_hash)) => Ok(upload),
        _ => Err(refused()),
    }
}

/// The `{id}` and `{secret}` of a direct upload URL's path (empty when
/// the path has another shape).
fn url_segments(path: &str) -> (String, String) {
    path.strip_prefix("/v1/direct_uploads/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(_, secret)| !secret.contains('/'))
        .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
        .unwrap_or_default()
}

/// Middleware on the direct upload URL routes (see the module doc).
pub(crate) async fn gate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    // The raw segments (percent-encoding left in, so it fails the shape
    // checks): the route matched `/v1/direct_uploads/{id}/{secret}`.
    let (id, secret) = url_segments(request.uri().path());
    let origin = request.headers().get(ORIGIN).cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let address = client_address(&request);
    let upload = match authenticate(&state, address, &id, &secret).await {
        Ok(upload) => upload,
        // No grant for an unknown URL: the page cannot tell it from a network error.
        Err(error) => return error.into_response(),
    };
    let allowed = cors::allow(&upload.cors_origin, origin.as_ref());
    if preflight {
        // Whatever the URL's state: the request that follows gets its answer
        // (a 410 included) in a form the page can read.
        return cors::preflight(allowed.as_ref());
    }
    let admitted = if origin.is_some() && allowed.is_none() {
        Err(ApiError::Forbidden {
            code: "origin_not_allowed",
            message: "this upload URL is for another web origin".to_owned(),
        })
    } else if upload.state.is_closed() {
        Err(gone(upload.state))
    } else {
        state
            .auth
            .per_key
            .take(
                KeyRef::DirectUpload(upload.id),
                state.config.rate_limit_per_minute,
            )
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    };
    let mut response = match admitted {
        Err(error) => error.into_response(),
        Ok(()) => {
            request.extensions_mut().insert(Caller {
                key: KeyRef::DirectUpload(upload.id),
                environment: upload.environment_id,
            });
            request.extensions_mut().insert(Grant {
                id: upload.id,
                max_size: upload.max_size,
                state: upload.state,
                protocol: upload.protocol,
                url: state.url(&super::url_path(upload.id, &secret)),
            });
            next.run(request).await
        }
    };
    cors::decorate(response.headers_mut(), allowed.as_ref());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_taken_raw() {
        assert_eq!(
            url_segments("/v1/direct_uploads/abc/s3cr%3Dt"),
            ("abc".to_owned(), "s3cr%3Dt".to_owned())
        );
        assert_eq!(url_segments("/v1/direct_uploads/abc"), Default::default());
        assert_eq!(url_segments("/v1/direct_uploads/a/b/c"), Default::default());
    }
}
