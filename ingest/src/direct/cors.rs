//! CORS for direct upload URLs (the Fetch standard's CORS protocol): each
//! URL allows one origin, chosen when the URL was made, so the answer
//! depends on the URL's row and is written here rather than by a static
//! `tower_http::cors::CorsLayer` (see ARCHITECTURE.md). Pure: header values
//! in, header values out.

use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Methods a page may use on a direct upload URL: tus creation (POST),
/// HEAD, PATCH and termination (DELETE), and the simple upload (PUT).
pub const ALLOW_METHODS: &str = "POST, PUT, HEAD, PATCH, DELETE, OPTIONS";

/// Request headers tus clients send (tus-js-client: `X-Request-ID` with
/// `addRequestId`, `X-HTTP-Method-Override` with `overridePatchMethod`).
pub const ALLOW_HEADERS: &str = "Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, \
    Upload-Checksum, Upload-Concat, Upload-Defer-Length, Content-Type, X-HTTP-Method-Override, \
    X-Request-ID, X-Requested-With";

/// Response headers tus clients read (a browser hides the others from the page).
pub const EXPOSE_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Expires, \
    Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, \
    Tus-Checksum-Algorithm, Cascade-Asset-Id, Retry-After";

/// How long a browser may reuse a preflight's answer, in seconds.
const MAX_AGE_SECONDS: u32 = 3600;

/// Longest origin accepted.
const MAX_ORIGIN_LEN: usize = 2048;

/// The `Access-Control-Allow-Origin` a request gets: the URL's origin
/// (`allowed`) when the request comes from it, `*` when any is allowed,
/// otherwise none.
pub fn allow(allowed: &str, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    if allowed == "*" {
        return Some(HeaderValue::from_static("*"));
    }
    let origin = origin?;
    (origin.as_bytes() == allowed.as_bytes()).then(|| origin.clone())
}

/// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`):
/// 204, with the CORS grant only for the allowed origin.
pub fn preflight(allowed: Option<&HeaderValue>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if allowed.is_some() {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECONDS));
    }
    decorate(headers, allowed);
    response
}

/// Adds the CORS headers of an actual response (and `Vary: Origin`, since
/// the answer depends on it).
pub fn decorate(headers: &mut HeaderMap, allowed: Option<&HeaderValue>) {
    if let Some(allowed) = allowed {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed.clone());
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    let vary = match headers.get(VARY).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, Origin"),
        _ => "Origin".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&vary) {
        headers.insert(VARY, value);
    }
}

/// Why a `cors_origin` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrigin {
    /// `*` where the operator does not allow it.
    #[error("\"*\" is not allowed on this deployment (ingest.direct_uploads.allow_any_origin); name the web origin that will upload, e.g. \"https://app.example\"")]
    AnyNotAllowed,
    /// Not `scheme://host[:port]`.
    #[error("cors_origin must be a web origin: http(s)://host[:port], without path, query or credentials (e.g. \"https://app.example\")")]
    Malformed,
}

/// Checks a `cors_origin` and returns it as browsers send it in `Origin`
/// (RFC 6454 serialization): scheme and host lowercased, the scheme's
/// default port dropped. `*` passes only with `allow_any`.
pub fn parse_origin(raw: &str, allow_any: bool) -> Result<String, InvalidOrigin> {
    if raw == "*" {
        return if allow_any {
            Ok("*".to_owned())
        } else {
            Err(InvalidOrigin::AnyNotAllowed)
        };
    }
    if raw.len() > MAX_ORIGIN_LEN || !raw.is_ascii() {
        return Err(InvalidOrigin::Malformed);
    }
    let (scheme, rest) = raw.split_once("://").ok_or(InvalidOrigin::Malformed)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(InvalidOrigin::Malformed),
    };
    let (host, port) = split_host_port(rest)?;
    let host = host.to_ascii_lowercase();
    if !valid_host(&host) {
        return Err(InvalidOrigin::Malformed);
    }
    Ok(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `host[:port]`, the host possibly a bracketed IPv6 literal.
fn split_host_port(rest: &str) -> Result<(&str, Option<u16>), InvalidOrigin> {
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or(InvalidOrigin::Malformed)?;
        let (host, after) = rest.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or(InvalidOrigin::Malformed)?),
            ),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = port
        .map(|p| {
            p.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|&n| n > 0)
                .ok_or(InvalidOrigin::Malformed)
        })
        .transpose()?;
    Ok((host, port))
}

/// A DNS name (letters, digits, hyphens; dot-separated labels) or an IP
/// literal (dotted IPv4, bracketed IPv6).
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_serialized_as_browsers_send_them() {
        for (raw, expected) in [
            ("https://app.example", "https://app.example"),
            ("HTTPS://App.Example", "https://app.example"),
            ("https://app.example:443", "https://app.example"),
            ("http://app.example:80", "http://app.example"),
            ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            (
                "https://xn--bcher-kva.example",
                "https://xn--bcher-kva.example",
            ),
        ] {
            assert_eq!(parse_origin(raw, false).as_deref(), Ok(expected), "{raw}");
        }
        for raw in [
            "",
            "app.example",
            "https://",
            "https://app.example/",
            "https://app.example/upload",
            "https://app.example?x=1",
            "https://app.example#x",
            "https://user@app.example",
            "https://app.example:0",
            "https://app.example:65536",
            "https://app.example:+80",
            "https://app.example:",
            "ftp://app.example",
            "null",
            "https://*.example",
            "https://app..example",
            "https://-app.example",
            "https://bücher.example",
            "https://[::1",
            "https://[nothost]",
            " https://app.example",
            "https://app.example ",
        ] {
            assert_eq!(
                parse_origin(raw, true),
                Err(InvalidOrigin::Malformed),
                "{raw:?}"
            );
        }
        assert_eq!(parse_origin("*", false), Err(InvalidOrigin::AnyNotAllowed));
        assert_eq!(parse_origin("*", true).as_deref(), Ok("*"));
        let long = format!("https://{}.example", "a".repeat(MAX_ORIGIN_LEN));
        assert!(parse_origin(&long, false).is_err());
    }

    #[test]
    fn only_the_allowed_origin_gets_a_grant() {
        let app = HeaderValue::from_static("https://app.example");
        let other = HeaderValue::from_static("https://evil.example");
        assert_eq!(allow("https://app.example", Some(&app)), Some(app.clone()));
        assert_eq!(allow("https://app.example", Some(&other)), None);
        assert_eq!(allow("https://app.example", None), None);
        assert_eq!(
            allow("*", Some(&other)),
            Some(HeaderValue::from_static("*"))
        );

        let granted = preflight(Some(&app));
        let headers = granted.headers();
        assert_eq!(granted.status(), StatusCode::NO_CONTENT);
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert!(headers[ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("PATCH"));
        for name in [
            "Tus-Resumable",
            "Upload-Length",
            "Upload-Offset",
            "Upload-Metadata",
            "Upload-Checksum",
            "Upload-Concat",
            "Content-Type",
            "X-HTTP-Method-Override",
        ] {
            assert!(ALLOW_HEADERS.contains(name), "{name}");
        }
        assert_eq!(headers[VARY], "Origin");
        let refused = preflight(None);
        assert!(refused.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(refused
            .headers()
            .get(ACCESS_CONTROL_ALLOW_METHODS)
            .is_none());

        let mut actual = HeaderMap::new();
        actual.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        decorate(&mut actual, Some(&app));
        assert_eq!(actual[VARY], "Accept-Encoding, Origin");
        for name in [
            "Location",
            "Upload-Offset",
            "Upload-Length",
            "Upload-Expires",
            "Tus-Resumable",
            "Tus-Version",
            "Tus-Extension",
            "Tus-Max-Size",
            "Upload-Metadata",
        ] {
            assert!(
                actual[ACCESS_CONTROL_EXPOSE_HEADERS]
                    .to_str()
                    .unwrap()
                    .contains(name),
                "{name}"
            );
        }
    }
}
