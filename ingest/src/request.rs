//! Reading what every handler reads from a request: ids and declared lengths.

use axum::http::HeaderMap;
use cascade_schemas::AssetId;

use crate::error::ApiError;

pub(crate) fn parse_asset_id(raw: &str) -> Result<AssetId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("asset"))
}

pub(crate) fn declared_length(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(ApiError::bad_request(
                "invalid_header",
                format!("{name} must be a non-negative integer"),
            )),
    }
}
