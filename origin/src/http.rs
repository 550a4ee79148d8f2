//! Request header parsing the origin needs: byte ranges, entity tags
//! (`If-None-Match`, `If-Range`, through the `headers` crate), content
//! negotiation for gzip; and the manifest token rewriting.
//!
//! `Range` keeps a parser of its own: the origin passes a range to storage
//! before it knows the object's length (a suffix range `bytes=-N` included),
//! and the `headers` crate's `Range` resolves ranges only against a known
//! length.

use std::io::Write as _;

use axum::http::{header, HeaderMap};
use bytes::Bytes;
use cascade_platform::storage::ByteRange;
use headers::{ETag, HeaderMapExt, IfNoneMatch, IfRange};

/// Longest decimal number accepted in a range (u64::MAX has 20 digits).
const MAX_DIGITS: usize = 20;

fn number(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a `Range` header. `None` means "serve the whole object": no
/// header, a unit other than bytes, syntax errors, `last < first`, and
/// multiple ranges (multipart/byteranges is not supported; RFC 9110 lets a
/// server ignore Range).
pub(crate) fn parse_range(value: &str) -> Option<ByteRange> {
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => Some(ByteRange::Suffix(number(last)?)),
        (false, true) => Some(ByteRange::From(number(first)?)),
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(ByteRange::Inclusive { first, last })
        }
        (true, true) => None,
    }
}

/// Whether the request's `If-None-Match` matches `etag` (weak comparison,
/// RFC 9110 section 13.1.2): the answer is then `304 Not Modified`. An
/// unparseable header matches nothing.
pub(crate) fn none_match(request: &HeaderMap, etag: &str) -> bool {
    if !tags_well_formed(request, header::IF_NONE_MATCH) {
        return false;
    }
    let (Some(condition), Ok(etag)) = (request.typed_get::<IfNoneMatch>(), etag.parse::<ETag>())
    else {
        return false;
    };
    !condition.precondition_passes(&etag)
}

/// Whether every quoted entity tag in the request's `name` headers holds
/// only `etagc` bytes (RFC 9110 section 8.8.3: `!`, `#` to `~`, obs-text).
/// The `headers` crate checks this with a debug assertion (it panics on a
/// tab or a space inside quotes, which a `HeaderValue` may hold) instead of
/// refusing the value, so such values are refused here first (the origin's
/// fuzz test found it).
fn tags_well_formed(request: &HeaderMap, name: header::HeaderName) -> bool {
    request.get_all(name).iter().all(|value| {
        let mut quoted = false;
        value.as_bytes().iter().all(|&byte| {
            if byte == b'"' {
                quoted = !quoted;
                return true;
            }
            !quoted || byte == 0x21 || (0x23..=0x7e).contains(&byte) || byte >= 0x80
        })
    })
}

/// Whether the request's `Range` may be honoured under its `If-Range`
/// (RFC 9110 section 13.1.5): yes without one; with one, only when it names
/// exactly this representation (strong comparison; the origin sends no
/// `Last-Modified`, so a date never matches). An unparseable `If-Range`
/// gets the whole object.
pub(crate) fn if_range_allows(request: &HeaderMap, etag: Option<&str>) -> bool {
    if !request.contains_key(header::IF_RANGE) {
        return true;
    }
    if !tags_well_formed(request, header::IF_RANGE) {
        return false;
    }
    let etag = etag.and_then(|e| e.parse::<ETag>().ok());
    request
        .typed_get::<IfRange>()
        .is_some_and(|condition| !condition.is_modified(etag.as_ref(), None))
}

/// Whether `Accept-Encoding` admits gzip (an explicit `gzip` entry wins over `*`).
pub(crate) fn accepts_gzip(header: &str) -> bool {
    let mut wildcard = false;
    for entry in header.split(',') {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return !refused;
        }
        if coding == "*" {
            wildcard = !refused;
        }
    }
    wildcard
}

/// Gzips a manifest. `None` only if the encoder fails (then serve identity).
pub(crate) fn gzip(bytes: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

/// The entity tag of the gzip-encoded representation of `etag`.
pub(crate) fn gzip_etag(etag: &str) -> String {
    let opaque = etag.trim().strip_prefix("W/").unwrap_or(etag.trim());
    format!("\"{}-gzip\"", opaque.trim_matches('"'))
}

/// How the origin rewrites the URIs of a manifest it serves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rewrite<'a> {
    /// Put before every relative URI: `v{n}/` on the top-level manifests,
    /// so the media they name are addressed by version and a replaced
    /// asset's new segments never share a URL (cached as immutable) with
    /// the old ones.
    pub prefix: Option<&'a str>,
    /// Signed playback: `token=` appended to every URI.
    pub token: Option<&'a str>,
}

impl Rewrite<'_> {
    /// Whether the text changes at all.
    pub fn is_noop(&self) -> bool {
        self.prefix.is_none() && self.token.is_none()
    }

    fn uri(&self, uri: &str, separator: &str) -> String {
        let relative = !uri.contains("://") && !uri.starts_with('/');
        let mut out = String::with_capacity(uri.len() + 64);
        if let (Some(prefix), true) = (self.prefix, relative) {
            out.push_str(prefix);
        }
        out.push_str(uri);
        if let Some(token) = self.token {
            out.push_str(if uri.contains('?') { separator } else { "?" });
            out.push_str("token=");
            out.push_str(token);
        }
        out
    }
}

/// Rewrites every URI of an HLS playlist (RFC 8216): URI lines (variant
/// streams, segments) and `URI="..."` attributes (`EXT-X-MAP`,
/// `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`, keys).
pub(crate) fn hls_rewrite(text: &str, rewrite: Rewrite<'_>) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        let eol = &line[content.len()..];
        if content.trim().is_empty() {
            out.push_str(line);
        } else if content.starts_with('#') {
            let mut rest = content;
            while let Some(at) = rest.find("URI=\"") {
                let (head, tail) = rest.split_at(at + 5);
                out.push_str(head);
                match tail.find('"') {
                    Some(end) => {
                        out.push_str(&rewrite.uri(&tail[..end], "&"));
                        rest = &tail[end..];
                    }
                    None => {
                        rest = tail;
                        break;
                    }
                }
            }
            out.push_str(rest);
            out.push_str(eol);
        } else {
            out.push_str(&rewrite.uri(content.trim(), "&"));
            out.push_str(eol);
        }
    }
    out
}

/// Rewrites the segment template URIs of an MPD (ISO/IEC 23009-1
/// `SegmentTemplate@initialization` and `@media`; `&` escaped for XML).
pub(crate) fn dash_rewrite(text: &str, rewrite: Rewrite<'_>) -> String {
    let mut out = text.to_owned();
    for attribute in [" initialization=\"", " media=\""] {
        let mut result = String::with_capacity(out.len() + 64);
        let mut rest = out.as_str();
        while let Some(at) = rest.find(attribute) {
            let (head, tail) = rest.split_at(at + attribute.len());
            result.push_str(head);
            match tail.find('"') {
                Some(end) => {
                    result.push_str(&rewrite.uri(&tail[..end], "&amp;"));
                    rest = &tail[end..];
                }
                None => {
                    rest = tail;
                    break;
                }
            }
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Sets the `urn:mpeg:dash:utc:direct:2014` `UTCTiming` value of an MPD to
/// the current time (ISO 8601, milliseconds).
pub(crate) fn utc_timing_now(text: &str) -> String {
    const SCHEME: &str = "schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"";
    let Some(at) = text.find(SCHEME) else {
        return text.to_owned();
    };
    let value_start = at + SCHEME.len();
    let Some(length) = text[value_start..].find('"') else {
        return text.to_owned();
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "{}{now}{}",
        &text[..value_start],
        &text[value_start + length..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timing_says_now() {
        let mpd = "<MPD>\n  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"2020-01-01T00:00:00.000Z\"/>\n</MPD>\n";
        let fresh = utc_timing_now(mpd);
        assert!(
            !fresh.contains("2020-01-01") && fresh.ends_with("\"/>\n</MPD>\n"),
            "{fresh}"
        );
        assert_eq!(utc_timing_now("<MPD/>"), "<MPD/>");
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-99"),
            Some(ByteRange::Inclusive { first: 0, last: 99 })
        );
        assert_eq!(parse_range("bytes=10-"), Some(ByteRange::From(10)));
        assert_eq!(parse_range("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(
            parse_range("BYTES = 1-2"),
            Some(ByteRange::Inclusive { first: 1, last: 2 })
        );
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "bytes=a-b",
            "bytes",
            "",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn etags_and_encodings() {
        let asking = |name: header::HeaderName, value: &'static str| {
            let mut request = HeaderMap::new();
            request.insert(name, axum::http::HeaderValue::from_static(value));
            request
        };
        let if_none_match = |value| asking(header::IF_NONE_MATCH, value);
        assert!(none_match(&if_none_match("\"a\""), "\"a\""));
        assert!(none_match(&if_none_match("\"x\", W/\"a\""), "\"a\""));
        assert!(none_match(&if_none_match("*"), "\"a\""));
        assert!(!none_match(&if_none_match("\"b\""), "\"a\""));
        assert!(!none_match(&if_none_match("not a tag"), "\"a\""));
        assert!(!none_match(&HeaderMap::new(), "\"a\""));
        let if_range = |value| asking(header::IF_RANGE, value);
        assert!(if_range_allows(&HeaderMap::new(), None));
        assert!(if_range_allows(&if_range("\"a\""), Some("\"a\"")));
        // Weak tags and dates never match (strong comparison, no Last-Modified).
        assert!(!if_range_allows(&if_range("W/\"a\""), Some("\"a\"")));
        assert!(!if_range_allows(&if_range("\"b\""), Some("\"a\"")));
        assert!(!if_range_allows(
            &if_range("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some("\"a\"")
        ));
        assert!(!if_range_allows(&if_range("\"a\""), None));
        assert!(!if_range_allows(&if_range("garbage"), Some("\"a\"")));
        // Tabs or spaces inside a tag are refused, not handed to the crate.
        assert!(!none_match(&if_none_match("\"a\tb\""), "\"a\""));
        assert!(!none_match(&if_none_match("\"a b\", *"), "\"a\""));
        assert!(!if_range_allows(&if_range("\"a\tb\""), Some("\"a\tb\"")));
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(!accepts_gzip("gzip;q=0, *"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("identity"));
        assert_eq!(gzip_etag("\"12-ab\""), "\"12-ab-gzip\"");
    }

    #[test]
    fn hls_rewrite_covers_every_uri() {
        let master =
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\",GROUP-ID=\"audio\"\n\
                      #EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f\"\n720p/index.m3u8\n";
        assert_eq!(
            hls_rewrite(master, Rewrite { prefix: None, token: Some("9.abc") }),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8?token=9.abc\",GROUP-ID=\"audio\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f\"\n720p/index.m3u8?token=9.abc\n"
        );
        let media =
            "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4\"\r\n#EXTINF:2.0,\r\n1.m4s\r\n\r\n#EXT-X-ENDLIST";
        assert_eq!(
            hls_rewrite(media, Rewrite { prefix: None, token: Some("t") }),
            "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4?token=t\"\r\n#EXTINF:2.0,\r\n1.m4s?token=t\r\n\r\n#EXT-X-ENDLIST"
        );
    }

    #[test]
    fn dash_rewrite_covers_templates() {
        let mpd =
            "<SegmentTemplate timescale=\"1\" initialization=\"$RepresentationID$/init.mp4\" \
                   media=\"$RepresentationID$/$Number$.m4s?x=1\" startNumber=\"1\">";
        assert_eq!(
            dash_rewrite(mpd, Rewrite { prefix: None, token: Some("t") }),
            "<SegmentTemplate timescale=\"1\" initialization=\"$RepresentationID$/init.mp4?token=t\" \
             media=\"$RepresentationID$/$Number$.m4s?x=1&amp;token=t\" startNumber=\"1\">"
        );
        assert_eq!(
            dash_rewrite(mpd, Rewrite { prefix: Some("v2/"), token: Some("t") }),
            "<SegmentTemplate timescale=\"1\" initialization=\"v2/$RepresentationID$/init.mp4?token=t\" \
             media=\"v2/$RepresentationID$/$Number$.m4s?x=1&amp;token=t\" startNumber=\"1\">"
        );
    }

    #[test]
    fn top_level_uris_gain_the_version() {
        let master = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n\
                      720p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nhttps://elsewhere/x.m3u8\n";
        assert_eq!(
            hls_rewrite(master, Rewrite { prefix: Some("v3/"), token: None }),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"v3/audio/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n\
             v3/720p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nhttps://elsewhere/x.m3u8\n"
        );
        assert!(Rewrite::default().is_noop());
    }
}
