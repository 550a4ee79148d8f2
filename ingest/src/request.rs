//! Reading what every handler reads from a request: ids, declared lengths
//! and list pages.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::HeaderMap;
use base64::Engine;
use cascade_schemas::{AssetId, LiveStreamId};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::ApiError;

pub(crate) fn parse_asset_id(raw: &str) -> Result<AssetId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("asset"))
}

pub(crate) fn parse_live_stream_id(raw: &str) -> Result<LiveStreamId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("live stream"))
}

/// A list request's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 100 (default 20). Read as text so a bad value gets
    /// the API's JSON error rather than the framework's plain-text one.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The cursor after a page whose last item is `(created_at, id)`.
pub(crate) fn encode_cursor(created_at: DateTime<Utc>, id: uuid::Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{id}", created_at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, uuid::Uuid), ApiError> {
    let invalid = || ApiError::bad_request("invalid_cursor", "cursor is not one this API returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    Ok((
        DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id.parse().map_err(|_| invalid())?,
    ))
}

/// The page size and the position after the previous page.
pub(crate) type PageRequest = (i64, Option<(DateTime<Utc>, uuid::Uuid)>);

/// Reads a list request's page size (default 20) and cursor.
pub(crate) fn page_request(
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<PageRequest, ApiError> {
    // The framework's own rejection is plain text; the API answers JSON.
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(
            "invalid_query",
            format!("bad query string: {}", rejection.body_text()),
        )
    })?;
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(text) => text.trim().parse::<i64>().unwrap_or(0),
    };
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 100",
        ));
    }
    let cursor = query.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok((limit, cursor))
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
