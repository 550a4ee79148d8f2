//! CORS for players on other origins: the allowed list, preflights, and
//! `Vary: Origin` when the answer depends on it.

use super::*;

/// Allowed CORS origins.
pub(crate) struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    pub(crate) fn new(allowed: &[String]) -> Self {
        Self {
            any: allowed.iter().any(|o| o.trim() == "*"),
            origins: allowed.iter().map(|o| o.trim().to_owned()).collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`.
    pub(crate) fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o == text)
            .then(|| origin.clone())
    }

    pub(crate) fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if let Some(allowed) = self.allow(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
        }
        if !self.any {
            // The answer depends on Origin: caches must key on it.
            let vary = match headers.get(header::VARY).and_then(|v| v.to_str().ok()) {
                Some(existing) => format!("{existing}, Origin"),
                None => "Origin".to_owned(),
            };
            if let Ok(value) = HeaderValue::from_str(&vary) {
                headers.insert(header::VARY, value);
            }
        }
    }

    pub(crate) fn preflight(&self, origin: Option<&HeaderValue>) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if self.allow(origin).is_some() {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Range, If-None-Match, If-Range"),
            );
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(86_400u32));
        }
        response
    }
}
