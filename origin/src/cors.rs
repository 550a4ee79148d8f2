//! CORS for players on other origins (the Fetch standard's CORS protocol),
//! through tower-http's `CorsLayer`: the allowed list from
//! `origin.cors_allowed_origins`, preflights answered by the layer, the
//! headers players read exposed, and `Vary: Origin` only when the answer
//! depends on the origin (with `*` it does not, and a CDN keeps one copy).

use std::time::Duration;

use axum::http::{header, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(86_400);

/// The CORS layer for `allowed` origins (`*` among them: any origin).
pub(crate) fn layer(allowed: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([header::RANGE, header::IF_NONE_MATCH, header::IF_RANGE])
        // What browser players read: sizes, ranges and validators.
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ETAG,
            header::ACCEPT_RANGES,
        ])
        .max_age(PREFLIGHT_MAX_AGE);
    if allowed.iter().any(|origin| origin.trim() == "*") {
        layer.allow_origin(Any).vary(Vec::new())
    } else {
        let origins: Vec<HeaderValue> = allowed
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok())
            .collect();
        layer
            .allow_origin(AllowOrigin::list(origins))
            .vary([header::ORIGIN])
    }
}
