//! Property tests of the readers of encoder and demuxer output (SPS NAL
//! units, `avcC` / Annex B extradata, AudioSpecificConfig): whatever the
//! bytes, an error or a value, never a panic.

use proptest::prelude::*;

use crate::aac::AudioSpecificConfig;
use crate::avc::{AvcConfig, SpsInfo};

/// A real `avcC` (High, 320x180, from the tiny fixture) to mutate from.
const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42,
    0x99, 0x60, 0x01, 0x00, 0x04, 0x68, 0xef, 0x89, 0xcb, 0xfd, 0xf8, 0xf8, 0x00,
];
/// The SPS NAL unit inside it.
const SPS: std::ops::Range<usize> = 8..34;

fn mutated(base: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        0..=base.len(),
    )
        .prop_map(move |(edits, keep)| {
            let mut bytes = base[..keep].to_vec();
            for (at, value) in edits {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn avc_config_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = AvcConfig::parse(&bytes);
    }

    #[test]
    fn mutated_avcc_never_panics(bytes in mutated(AVCC)) {
        let _ = AvcConfig::parse(&bytes);
    }

    #[test]
    fn annex_b_never_panics(body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut bytes = vec![0, 0, 0, 1, 0x67];
        bytes.extend(body);
        let _ = AvcConfig::parse(&bytes);
    }

    #[test]
    fn sps_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = SpsInfo::parse(&bytes);
    }

    #[test]
    fn mutated_sps_never_panics(bytes in mutated(&AVCC[SPS])) {
        let _ = SpsInfo::parse(&bytes);
    }

    #[test]
    fn audio_specific_config_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let _ = AudioSpecificConfig::parse(&bytes);
    }
}

#[test]
fn the_seed_avcc_parses() {
    assert!(AvcConfig::parse(AVCC).is_ok());
    assert!(SpsInfo::parse(&AVCC[SPS]).is_ok());
}
