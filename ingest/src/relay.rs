//! The relay: how origins reach the live edge of the low-latency streams
//! this replica cuts (`cascade_workers::live::edge`). Internal HTTP on its
//! own listener (`live.relay_listen`), never exposed to players: origins
//! check tokens, rewrite URIs and set cache headers; the relay only holds
//! requests until the part they name exists (LL-HLS blocking reload and
//! preload hints, draft-pantos-hls-rfc8216bis 6.2.5.2 and 6.2.6).
//!
//! - `GET /relay/{stream}/{rendition}/index.m3u8?_HLS_msn=&_HLS_part=&_HLS_skip=`:
//!   the LL-HLS media playlist (400, 503 or 404 as the edge says);
//! - `GET /relay/{stream}/s{session}/{rendition}/{msn}.{part}.m4s`: a part,
//!   held until it is cut;
//! - `GET /relay/{stream}/s{session}/{rendition}/{msn}.m4s`: a segment in
//!   memory, being cut or next, sent part by part as the parts are cut
//!   (chunked transfer: low-latency DASH).
//!
//! 404 means "not here": the origin falls back to the object store.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cascade_schemas::LiveStreamId;
use cascade_workers::live::edge::{EdgeError, Edges, PlaylistRequest, StreamEdge};

/// When the newest part of a playlist was cut (Unix microseconds): how
/// long a blocking reload took after its part existed is measured from it
/// (`cascade bench live --low-latency`). Origins pass it on.
pub static PART_CUT_AT: axum::http::HeaderName =
    axum::http::HeaderName::from_static("cascade-part-cut-at");

/// The relay's routes.
pub fn router(edges: Arc<Edges>) -> Router {
    Router::new()
        .route("/relay/{stream}/{rendition}/index.m3u8", get(playlist))
        .route("/relay/{stream}/{session}/{rendition}/{file}", get(media))
        .with_state(edges)
}

/// Parses the LL-HLS delivery directives of a playlist request's query.
pub fn parse_directives(query: Option<&str>) -> Result<PlaylistRequest, &'static str> {
    let mut request = PlaylistRequest::default();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => {
                request.msn = Some(number(value).ok_or("_HLS_msn must be a whole number")?)
            }
            "_HLS_part" => {
                let part = number(value).ok_or("_HLS_part must be a whole number")?;
                request.part = Some(u32::try_from(part).map_err(|_| "_HLS_part is out of range")?);
            }
            "_HLS_skip" => request.skip = matches!(value, "YES" | "v2"),
            _ => {}
        }
    }
    Ok(request)
}

fn number(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn edge_of(edges: &Edges, stream: &str) -> Option<Arc<StreamEdge>> {
    let id: LiveStreamId = stream.parse().ok()?;
    edges.get(id)
}

fn error(error: EdgeError) -> Response {
    let status = match error {
        EdgeError::BadRequest(_) => StatusCode::BAD_REQUEST,
        EdgeError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        EdgeError::NotFound => StatusCode::NOT_FOUND,
    };
    (status, error.to_string()).into_response()
}

async fn playlist(
    State(edges): State<Arc<Edges>>,
    Path((stream, rendition)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let request = match parse_directives(query.as_deref()) {
        Ok(request) => request,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let Some(edge) = edge_of(&edges, &stream) else {
        return error(EdgeError::NotFound);
    };
    match edge.playlist(&rendition, request).await {
        Ok((text, newest_part_at)) => {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/vnd.apple.mpegurl"),
                )],
                text,
            )
                .into_response();
            if let Some(micros) = newest_part_at
                .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|since| since.as_micros() as u64)
            {
                response
                    .headers_mut()
                    .insert(PART_CUT_AT.clone(), HeaderValue::from(micros));
            }
            response
        }
        Err(e) => error(e),
    }
}

async fn media(
    State(edges): State<Arc<Edges>>,
    Path((stream, session, rendition, file)): Path<(String, String, String, String)>,
) -> Response {
    let Some(edge) = edge_of(&edges, &stream) else {
        return error(EdgeError::NotFound);
    };
    if session != format!("s{}", edge.settings().session) {
        return error(EdgeError::NotFound);
    }
    let Some(name) = file.strip_suffix(".m4s") else {
        return error(EdgeError::NotFound);
    };
    let bytes = match name.split_once('.') {
        Some((msn, part)) => {
            let (Some(msn), Some(part)) = (
                number(msn),
                number(part).and_then(|p| u32::try_from(p).ok()),
            ) else {
                return error(EdgeError::NotFound);
            };
            edge.part(&rendition, msn, part).await
        }
        // A segment: its parts as they are cut (chunked transfer).
        None => {
            let Some(parts) = number(name).and_then(|msn| edge.segment_parts(&rendition, msn))
            else {
                return error(EdgeError::NotFound);
            };
            let body = axum::body::Body::from_stream(futures::StreamExt::map(
                parts,
                Ok::<_, std::convert::Infallible>,
            ));
            return (
                [(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"))],
                body,
            )
                .into_response();
        }
    };
    match bytes {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"))],
            bytes,
        )
            .into_response(),
        Err(e) => error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_strictly() {
        assert_eq!(parse_directives(None), Ok(PlaylistRequest::default()));
        assert_eq!(
            parse_directives(Some("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&token=x")),
            Ok(PlaylistRequest {
                msn: Some(12),
                part: Some(3),
                skip: true
            })
        );
        assert!(parse_directives(Some("_HLS_msn=-1")).is_err());
        assert!(parse_directives(Some("_HLS_msn=1&_HLS_part=99999999999")).is_err());
        assert!(parse_directives(Some("_HLS_msn=")).is_err());
        assert!(!parse_directives(Some("_HLS_skip=NO")).unwrap().skip);
    }
}
