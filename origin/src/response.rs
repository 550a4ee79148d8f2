//! Responses: the headers every object carries, conditional and range
//! answers from memory, streamed and chunked bodies.

use super::*;

/// A segment streamed from the relay as it is cut: chunked, unbuffered by
/// CDNs that honour `X-Accel-Buffering` (nginx), never stored.
pub(crate) fn chunked(ask: &Ask, class: ObjectClass, response: reqwest::Response) -> Response {
    let mut headers = base_headers(class, IN_PROGRESS);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    let body = if ask.head {
        Body::empty()
    } else {
        Body::from_stream(response.bytes_stream())
    };
    let mut out = Response::new(body);
    *out.headers_mut() = headers;
    out
}

pub(crate) fn base_headers(class: ObjectClass, cache_control: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(class.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, cache_control);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if matches!(class, ObjectClass::HlsPlaylist | ObjectClass::DashManifest) {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    headers
}

pub(crate) fn insert_etag(headers: &mut HeaderMap, etag: Option<&str>) {
    if let Some(value) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(header::ETAG, value);
    }
}

pub(crate) fn not_modified(mut headers: HeaderMap) -> Response {
    headers.remove(header::ACCEPT_RANGES);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.headers_mut() = headers;
    response
}

pub(crate) fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Body,
    len: u64,
    head: bool,
) -> Response {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let mut response = Response::new(if head { Body::empty() } else { body });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pub(crate) fn from_memory(
    ask: &Ask,
    class: ObjectClass,
    object: &Cached,
    rewrite: http::Rewrite<'_>,
    cache_control: HeaderValue,
) -> Result<Response, OriginError> {
    // The version prefix is a function of the stored object (one per
    // version), so its ETag still names the bytes; a token makes a
    // manifest per-viewer, with no ETag.
    let manifest = matches!(class, ObjectClass::HlsPlaylist | ObjectClass::DashManifest);
    let etag = (!manifest || rewrite.token.is_none()).then(|| object.etag.clone());
    let (mut body, mut etag): (Bytes, Option<String>) = match class {
        _ if rewrite.is_noop() => (object.bytes.clone(), etag),
        ObjectClass::HlsPlaylist => {
            let text = String::from_utf8_lossy(&object.bytes);
            (http::hls_rewrite(&text, rewrite).into(), etag)
        }
        ObjectClass::DashManifest => {
            let text = String::from_utf8_lossy(&object.bytes);
            (http::dash_rewrite(&text, rewrite).into(), etag)
        }
        _ => (object.bytes.clone(), etag),
    };
    let mut headers = base_headers(class, cache_control);
    let range = ask
        .header(header::RANGE)
        .and_then(http::parse_range)
        .filter(|_| http::if_range_allows(&ask.headers, etag.as_deref()));
    let compressible = matches!(class, ObjectClass::HlsPlaylist | ObjectClass::DashManifest);
    if compressible
        && range.is_none()
        && ask
            .header(header::ACCEPT_ENCODING)
            .is_some_and(http::accepts_gzip)
    {
        if let Some(compressed) = http::gzip(&body) {
            body = compressed;
            etag = etag.as_deref().map(http::gzip_etag);
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    insert_etag(&mut headers, etag.as_deref());
    if etag
        .as_deref()
        .is_some_and(|etag| http::none_match(&ask.headers, etag))
    {
        return Ok(not_modified(headers));
    }
    let size = body.len() as u64;
    match range {
        Some(range) => {
            let (first, last) = range
                .resolve(size)
                .map_err(|_| OriginError::RangeNotSatisfiable { size })?;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            // first <= last < size, which fits in memory: the casts are exact.
            let part = body.slice(first as usize..=last as usize);
            let len = part.len() as u64;
            Ok(finish(
                StatusCode::PARTIAL_CONTENT,
                headers,
                part.into(),
                len,
                ask.head,
            ))
        }
        None => {
            let whole = (!ask.head).then(|| WholeBody(body.clone()));
            let mut response = finish(StatusCode::OK, headers, body.into(), size, ask.head);
            if let Some(whole) = whole {
                response.extensions_mut().insert(whole);
            }
            Ok(response)
        }
    }
}

/// The body of a whole-object `200` from memory, for the front to keep.
#[derive(Clone)]
pub(crate) struct WholeBody(pub(crate) Bytes);

/// Objects too large for memory: streamed from the store, ranges passed
/// through. `If-Range` is not evaluated here: with it, the whole object is sent.
pub(crate) async fn streamed(
    state: &OriginState,
    ask: &Ask,
    class: ObjectClass,
    key: &ObjectKey,
    cache_control: HeaderValue,
    stored_at: usize,
) -> Result<Response, OriginError> {
    let range = match ask.header(header::IF_RANGE) {
        Some(_) => None,
        None => ask.header(header::RANGE).and_then(http::parse_range),
    };
    let body = state.inner.tier.stream(key, range, stored_at).await?;
    let mut headers = base_headers(class, cache_control);
    insert_etag(&mut headers, body.meta.etag.as_deref());
    if body
        .meta
        .etag
        .as_deref()
        .is_some_and(|etag| http::none_match(&ask.headers, etag))
    {
        return Ok(not_modified(headers));
    }
    let len = body.len();
    let status = match body.range {
        Some((first, last)) => {
            let size = body.meta.size;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    Ok(finish(
        status,
        headers,
        Body::from_stream(body.stream),
        len,
        ask.head,
    ))
}
