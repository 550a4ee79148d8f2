//! Property tests of everything the origin parses from a request (RFC 9110
//! `Range`, `If-None-Match`, `If-Range`, `Accept-Encoding`; the parts of a
//! `/play/` path) and of the manifest rewriters: whatever the input, an
//! answer, never a panic; a parsed range always resolves inside the object.

use proptest::prelude::*;

use axum::http::{header, HeaderMap, HeaderValue};

use crate::http::{self, Rewrite};
use crate::{parse_pin, Target};

fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,64}",
        "(bytes|BYTES|items)?=? ?[0-9]{0,22}? ?-? ?[0-9]{0,22}(,[0-9]{0,3}-[0-9]{0,3})?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ranges_parse_to_something_that_resolves_inside(value in header_text(), size in 0u64..10_000_000) {
        if let Some(range) = http::parse_range(&value) {
            if let Ok((first, last)) = range.resolve(size) {
                prop_assert!(first <= last && last < size, "{:?} -> {}-{} of {}", value, first, last, size);
            }
        }
    }

    #[test]
    fn conditionals_and_encodings_never_panic(value in header_text(), etag in "\"[0-9a-f]{0,16}\"") {
        let mut request = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.insert(header::IF_NONE_MATCH, value.clone());
            request.insert(header::IF_RANGE, value);
        }
        let _ = http::none_match(&request, &etag);
        let _ = http::if_range_allows(&request, Some(&etag));
        let _ = http::accepts_gzip(&value);
        // A tag matches itself, in both conditionals.
        let mut itself = HeaderMap::new();
        let tag = HeaderValue::from_str(&etag).map_err(|e| TestCaseError::fail(e.to_string()))?;
        itself.insert(header::IF_NONE_MATCH, tag.clone());
        itself.insert(header::IF_RANGE, tag);
        prop_assert!(http::none_match(&itself, &etag));
        prop_assert!(http::if_range_allows(&itself, Some(&etag)));
    }

    #[test]
    fn path_parts_never_panic(part in any::<String>(), file in any::<String>()) {
        let _ = parse_pin(&part);
        let _ = Target::top_level(&file);
        let _ = Target::in_rendition(&part, &file);
    }

    #[test]
    fn pins_are_canonical(n in 1u32..u32::MAX) {
        let (plain, padded, spaced) = (format!("v{n}"), format!("v0{n}"), format!("v{n} "));
        prop_assert!(parse_pin(&plain).is_some());
        prop_assert!(parse_pin(&padded).is_none());
        prop_assert!(parse_pin(&spaced).is_none());
    }

    #[test]
    fn manifest_rewrites_never_panic(text in any::<String>(), token in "[A-Za-z0-9._-]{0,40}") {
        let rewrite = Rewrite { prefix: Some("v2/"), token: Some(&token) };
        let _ = http::hls_rewrite(&text, rewrite);
        let _ = http::dash_rewrite(&text, rewrite);
        let _ = http::utc_timing_now(&text);
    }
}
