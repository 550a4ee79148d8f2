//! Whole-text golden tests for the manifests.
//!
//! The expected text lives in `tests/golden/`. After an intended change,
//! regenerate with `UPDATE_GOLDEN=1 cargo test -p cascade-packager --test
//! golden` and review the diff like code.

use std::path::PathBuf;

use cascade_packager::dash::render_mpd;
use cascade_packager::hls::{render_master_playlist, Playlist};
use cascade_packager::{MediaKind, Rational, Rendition, SegmentInfo, UriLayout};

fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    assert!(
        expected == actual,
        "{name} differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// Segments back to back from 0 with the given durations and sizes.
fn segments(durations_and_sizes: &[(u64, u64)]) -> Vec<SegmentInfo> {
    let mut start = 0;
    durations_and_sizes
        .iter()
        .zip(1..)
        .map(|(&(duration, size), sequence_number)| {
            let segment = SegmentInfo {
                sequence_number,
                start,
                duration,
                size,
            };
            start += duration;
            segment
        })
        .collect()
}

fn video(name: &str, width: u32, height: u32, codecs: &str, sizes: [u64; 4]) -> Rendition {
    // 29.97 fps in a 30000 timescale: three 2.002 s segments and a 1.001 s tail.
    let durations = [60_060, 60_060, 60_060, 30_030];
    Rendition {
        name: name.to_owned(),
        kind: MediaKind::Video {
            width,
            height,
            frame_rate: Rational::new(30_000, 1001).unwrap(),
        },
        codecs: codecs.to_owned(),
        timescale: 30_000,
        segments: segments(&durations.into_iter().zip(sizes).collect::<Vec<_>>()),
    }
}

fn audio() -> Rendition {
    // 48 kHz AAC cut at the first 1024-sample frame past each 2.002 s boundary.
    Rendition {
        name: "audio".to_owned(),
        kind: MediaKind::Audio {
            sample_rate: 48_000,
            channels: 2,
        },
        codecs: "mp4a.40.2".to_owned(),
        timescale: 48_000,
        segments: segments(&[
            (96_256, 32_100),
            (96_256, 32_050),
            (95_232, 31_900),
            (48_128, 16_200),
        ]),
    }
}

fn ladder() -> Vec<Rendition> {
    vec![
        video(
            "1080p",
            1920,
            1080,
            "avc1.640028",
            [1_250_000, 1_400_000, 1_100_000, 500_000],
        ),
        video(
            "720p",
            1280,
            720,
            "avc1.64001f",
            [600_000, 700_000, 550_000, 250_000],
        ),
        audio(),
    ]
}

#[test]
fn master_playlist() {
    let text = render_master_playlist(&ladder(), &UriLayout::default()).unwrap();
    assert_golden("master.m3u8", &text);
}

#[test]
fn master_playlist_without_audio() {
    let mut renditions = ladder();
    renditions.pop();
    let text = render_master_playlist(&renditions, &UriLayout::default()).unwrap();
    assert_golden("master_video_only.m3u8", &text);
}

#[test]
fn master_playlist_audio_only() {
    let text = render_master_playlist(&[audio()], &UriLayout::default()).unwrap();
    assert_golden("master_audio_only.m3u8", &text);
}

#[test]
fn video_media_playlist() {
    let playlist = Playlist::for_rendition(&ladder()[0], &UriLayout::default()).unwrap();
    assert_golden("1080p.m3u8", &playlist.render());
}

#[test]
fn audio_media_playlist() {
    let playlist = Playlist::for_rendition(&audio(), &UriLayout::default()).unwrap();
    assert_golden("audio.m3u8", &playlist.render());
}

#[test]
fn mpd() {
    let text = render_mpd(&ladder(), &UriLayout::default()).unwrap();
    assert_golden("manifest.mpd", &text);
}

#[test]
fn mpd_with_unaligned_rungs_and_custom_layout() {
    let mut renditions = ladder();
    // A rung in another timescale cannot share the AdaptationSet timeline.
    let low = &mut renditions[1];
    low.timescale = 90_000;
    for segment in &mut low.segments {
        segment.start *= 3;
        segment.duration *= 3;
    }
    let layout = UriLayout {
        init_segment: "header.mp4".to_owned(),
        media_segment: "chunk-$Number$.m4s".to_owned(),
        media_playlist: "playlist.m3u8".to_owned(),
    };
    let text = render_mpd(&renditions, &layout).unwrap();
    assert_golden("manifest_unaligned.mpd", &text);
}

#[test]
fn manifests_reject_bad_input() {
    use cascade_packager::Error;
    let layout = UriLayout::default();
    assert!(matches!(
        render_master_playlist(&[], &layout),
        Err(Error::NothingToDescribe(_))
    ));
    let mut renditions = ladder();
    renditions[0].name = "../1080p".to_owned();
    assert!(matches!(
        render_mpd(&renditions, &layout),
        Err(Error::InvalidName(_))
    ));
    let mut renditions = ladder();
    renditions[2].segments.remove(1);
    assert!(matches!(
        render_master_playlist(&renditions, &layout),
        Err(Error::SequenceGap {
            expected: 2,
            got: 3
        })
    ));
}
