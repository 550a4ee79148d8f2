//! Property tests of what `cascade qa` reads from a server it does not
//! trust: DASH MPDs, ISO BMFF segment and init boxes, codec configuration
//! records. Whatever the bytes, a finding, never a panic.

use proptest::prelude::*;
use reqwest::Url;

use crate::media::{
    codec_string, codec_string_without_config, init_box_problem, segment_box_problem, ts_problem,
    Container,
};

/// A box header: size, then a type qa knows or not.
fn boxes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (
            any::<u32>(),
            prop_oneof![
                Just(*b"moof"),
                Just(*b"mdat"),
                Just(*b"moov"),
                Just(*b"ftyp"),
                Just(*b"styp"),
                any::<[u8; 4]>()
            ],
            proptest::collection::vec(any::<u8>(), 0..24),
        ),
        0..6,
    )
    .prop_map(|boxes| {
        let mut out = Vec::new();
        for (size, kind, body) in boxes {
            // Mostly honest sizes, sometimes lies.
            let size = if size % 3 == 0 {
                size
            } else {
                8 + body.len() as u32
            };
            out.extend(size.to_be_bytes());
            out.extend(kind);
            out.extend(body);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn box_walks_never_panic(bytes in prop_oneof![boxes(), proptest::collection::vec(any::<u8>(), 0..96)]) {
        let _ = segment_box_problem(&bytes);
        let _ = init_box_problem(&bytes);
    }

    #[test]
    fn codec_strings_never_panic(
        extradata in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            // Annex B: start codes among random bytes.
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0x67u8), any::<u8>()], 0..64),
        ],
        tag in "[a-z0-9]{4}",
        profile in any::<i32>(),
    ) {
        for id in [ffmpeg_next::codec::Id::H264, ffmpeg_next::codec::Id::AAC, ffmpeg_next::codec::Id::HEVC] {
            let _ = codec_string(id, &tag, &extradata);
            let _ = codec_string_without_config(id, &extradata, profile);
        }
    }

    #[test]
    fn ts_checks_never_panic(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(prop_oneof![Just(0x47u8), any::<u8>()], 0..600),
    ]) {
        let _ = ts_problem(&bytes);
        let _ = Container::sniff(&bytes);
    }

    #[test]
    fn mpds_never_panic(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).boxed(),
        "<MPD( [a-zA-Z]{1,12}=\"[A-Z0-9.:]{0,12}\"){0,4}>(<Period( [a-z]{1,8}=\"[A-Z0-9.]{0,8}\")?>(<AdaptationSet>(<Representation id=\"[a-z0-9]{0,4}\"( bandwidth=\"[0-9-]{0,12}\")?>(<SegmentTemplate( [a-zA-Z]{1,14}=\"[$A-Za-z0-9./]{0,20}\"){0,4}>(<SegmentTimeline>(<S( [tdr]=\"-?[0-9]{0,12}\"){0,3}/>){0,4}</SegmentTimeline>)?</SegmentTemplate>)?</Representation>)?</AdaptationSet>)?</Period>)?</MPD>"
            .prop_map(String::into_bytes)
            .boxed(),
    ]) {
        let url = Url::parse("https://cdn.example/a/manifest.mpd").unwrap();
        let _ = crate::dash::load(&url, &body);
    }

    /// The HLS reader is m3u8-rs's parser, fed whatever the server sent.
    #[test]
    fn playlists_never_panic(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).boxed(),
        "#EXTM3U\n(#EXT-X-[A-Z-]{1,20}(:[A-Z0-9=,\".-]{0,30})?\n|[a-z0-9/.]{0,12}\n|#EXTINF:[0-9.-]{0,8},\n){0,8}"
            .prop_map(String::into_bytes)
            .boxed(),
    ]) {
        let _ = m3u8_rs::parse_playlist_res(&body);
    }

    #[test]
    fn iso_durations_never_panic(text in prop_oneof![any::<String>(), "-?P(T)?([0-9.]{0,20}[YMDHS]){0,5}"]) {
        let _ = crate::dash::iso_duration(&text);
    }
}
