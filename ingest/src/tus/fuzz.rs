//! Property tests of the tus 1.0.0 request headers (`Upload-Metadata`,
//! `Upload-Concat`, `Upload-Checksum`): whatever a client sends, a value or
//! a 400, never a panic.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use proptest::prelude::*;

use super::concat::requested;
use super::handlers::checksum;
use super::parse_metadata;

fn headers(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut map = HeaderMap::new();
    map.insert(name, value);
    Some(map)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn metadata_never_panics(raw in prop_oneof![
        any::<String>(),
        "([a-z]{0,8}( [A-Za-z0-9+/=]{0,24})?,?){0,6}",
    ]) {
        let _ = parse_metadata(&raw);
    }

    /// Well-formed metadata comes back as it was sent.
    #[test]
    fn metadata_round_trips(pairs in proptest::collection::btree_map("[a-z_]{1,12}", "[^\u{0}]{0,40}", 0..6)) {
        let raw = pairs
            .iter()
            .map(|(k, v)| format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)))
            .collect::<Vec<_>>()
            .join(",");
        let parsed = parse_metadata(&raw).unwrap();
        for (k, v) in &pairs {
            prop_assert_eq!(parsed.get(k).and_then(|x| x.as_str()), Some(v.as_str()));
        }
    }

    #[test]
    fn concat_never_panics(value in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "(partial|final;)( ?(/v1/uploads/|https://x.example/v1/uploads/)?[0-9a-f-]{0,40}){0,5}"
            .prop_map(String::into_bytes),
    ]) {
        if let Some(map) = headers("upload-concat", &value) {
            let _ = requested(&map);
        }
    }

    #[test]
    fn checksum_never_panics(value in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120),
        "(sha1|sha256|md5|)? ?[A-Za-z0-9+/=]{0,60}".prop_map(String::into_bytes),
    ]) {
        if let Some(map) = headers("upload-checksum", &value) {
            let _ = checksum(&map);
        }
    }
}
