//! Cut rules: where segments start and end, for video and audio.

mod common;

use bytes::Bytes;
use cascade_packager::{Error, MediaSegment, Rational, Sample, Segmenter, Track};
use common::*;

fn run(track: Track, target: Rational, samples: Vec<Sample>) -> Vec<MediaSegment> {
    let mut segmenter = Segmenter::new(track, target);
    let mut segments = Vec::new();
    for sample in samples {
        segments.extend(segmenter.push(sample).unwrap());
    }
    segments.extend(segmenter.finish().unwrap());
    segments
}

/// Frame-by-frame stream without B-frames: keyframes at the given frame indices.
fn stream(
    frames: usize,
    keyframes: &[usize],
    frame_duration: i64,
    size_scale: usize,
) -> Vec<Sample> {
    (0..frames)
        .map(|index| {
            let keyframe = keyframes.contains(&index);
            let time = index as i64 * frame_duration;
            Sample {
                pts: time,
                dts: time,
                duration: frame_duration as u32,
                keyframe,
                data: access_unit(keyframe, (20 + index % 5) * size_scale, index as u32),
            }
        })
        .collect()
}

fn boundaries(segments: &[MediaSegment]) -> Vec<(u64, u64, u64)> {
    segments
        .iter()
        .map(|s| (s.sequence_number(), s.start(), s.duration()))
        .collect()
}

#[test]
fn rungs_with_aligned_keyframes_get_identical_boundaries() {
    // 30 fps at 90 kHz for 7 s; keyframes every second plus scene cuts at
    // 2.5 s and 4.1 s; 2 s target. Rungs differ in size and timescale-equal.
    let keyframes = [0, 30, 60, 75, 90, 120, 123, 150, 180];
    let high = run(
        video_track(90_000),
        Rational::integer(2).unwrap(),
        stream(210, &keyframes, 3000, 40),
    );
    let low = run(
        video_track(90_000),
        Rational::integer(2).unwrap(),
        stream(210, &keyframes, 3000, 2),
    );
    assert_eq!(boundaries(&high), boundaries(&low));
    assert_ne!(
        high.iter().map(MediaSegment::size).collect::<Vec<_>>(),
        low.iter().map(MediaSegment::size).collect::<Vec<_>>()
    );
    // Cuts at 0, 2, 4 and 6 s; the scene cuts stay inside segments.
    assert_eq!(
        boundaries(&high),
        [
            (1, 0, 180_000),
            (2, 180_000, 180_000),
            (3, 360_000, 180_000),
            (4, 540_000, 90_000)
        ]
    );
    assert_eq!(
        high.iter().map(MediaSegment::sample_count).sum::<usize>(),
        210
    );
}

#[test]
fn a_short_start_cuts_once_early_and_keeps_every_later_boundary() {
    // 30 fps at 90 kHz for 13 s, keyframes every second; target 4 s, first cut at 2 s.
    let keyframes: Vec<usize> = (0..390).step_by(30).collect();
    let cut = |short_start: Option<u64>| {
        let mut segmenter = Segmenter::new(video_track(90_000), Rational::integer(4).unwrap());
        if let Some(first) = short_start {
            segmenter = segmenter.with_short_start(Rational::integer(first).unwrap());
        }
        let mut segments = Vec::new();
        for sample in stream(390, &keyframes, 3000, 1) {
            segments.extend(segmenter.push(sample).unwrap());
        }
        segments.extend(segmenter.finish().unwrap());
        boundaries(&segments)
    };
    assert_eq!(
        cut(Some(2)),
        [
            (1, 0, 180_000),
            (2, 180_000, 180_000),
            (3, 360_000, 360_000),
            (4, 720_000, 360_000),
            (5, 1_080_000, 90_000),
        ]
    );
    // From 1 s it doubles up to the target: 1, 2, then every 4 s.
    assert_eq!(
        cut(Some(1))[..4],
        [
            (1, 0, 90_000),
            (2, 90_000, 90_000),
            (3, 180_000, 180_000),
            (4, 360_000, 360_000),
        ]
    );
    // At or past the target it changes nothing.
    assert_eq!(cut(Some(4)), cut(None));
    assert_eq!(cut(None)[0], (1, 0, 360_000));
}

#[test]
fn late_keyframe_cuts_after_the_boundary_and_next_boundary_follows_it() {
    // Target 2 s, keyframes at 0, 2.2 s, 3.9 s, 4.5 s and 6 s.
    let keyframes = [0, 66, 117, 135, 180];
    let segments = run(
        video_track(90_000),
        Rational::integer(2).unwrap(),
        stream(200, &keyframes, 3000, 1),
    );
    // 2.2 s is the first keyframe past 2 s; the next boundary is 4 s, so
    // 3.9 s is too early and 4.5 s cuts; then 6 s.
    assert_eq!(
        boundaries(&segments),
        [
            (1, 0, 198_000),
            (2, 198_000, 207_000),
            (3, 405_000, 135_000),
            (4, 540_000, 60_000),
        ]
    );
}

#[test]
fn ntsc_boundaries_are_exact() {
    // 29.97 fps in a 30000 timescale, target 2.002 s = 60 frames; keyframes every 60 frames.
    let keyframes: Vec<usize> = (0..300).step_by(60).collect();
    let target = Rational::new(2002, 1000).unwrap();
    let segments = run(
        video_track(30_000),
        target,
        stream(300, &keyframes, 1001, 1),
    );
    assert_eq!(segments.len(), 5);
    for (index, segment) in segments.iter().enumerate() {
        assert_eq!(segment.start(), index as u64 * 60_060);
        assert_eq!(segment.duration(), 60_060);
        assert_eq!(segment.sample_count(), 60);
    }
}

#[test]
fn b_frame_segments_start_at_their_keyframe() {
    let samples = b_frame_stream(95, 30, 3000);
    let segments = run(video_track(90_000), Rational::integer(1).unwrap(), samples);
    assert_eq!(
        boundaries(&segments),
        [
            (1, 0, 90_000),
            (2, 90_000, 90_000),
            (3, 180_000, 90_000),
            (4, 270_000, 15_000)
        ]
    );
    for segment in &segments {
        let fragment = parse_fragment(segment.data());
        assert_eq!(fragment.samples[0].flags, 0x0200_0000);
        let times = fragment.presentation_times();
        assert_eq!(times.iter().min().copied(), Some(segment.start() as i64));
    }
}

#[test]
fn audio_cuts_at_the_first_frame_past_each_boundary() {
    // 48 kHz AAC, 1024-sample frames, 2 s target: 96 000 / 1024 = 93.75, so
    // frame 94 (t = 96 256) opens segment 2, frame 188 (192 512) segment 3.
    let frames: Vec<Sample> = (0..200i64)
        .map(|index| Sample {
            pts: index * 1024,
            dts: index * 1024,
            duration: 1024,
            keyframe: false,
            data: Bytes::from_static(&[0x21, 0x10, 0x05]),
        })
        .collect();
    let segments = run(audio_track(), Rational::integer(2).unwrap(), frames);
    assert_eq!(
        boundaries(&segments),
        [
            (1, 0, 94 * 1024),
            (2, 94 * 1024, 94 * 1024),
            (3, 188 * 1024, 12 * 1024),
        ]
    );
}

#[test]
fn finish_without_samples_gives_nothing() {
    let segmenter = Segmenter::new(audio_track(), Rational::integer(2).unwrap());
    assert_eq!(segmenter.finish(), Ok(None));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let target = Rational::integer(2).unwrap();
    let mut segmenter = Segmenter::new(video_track(90_000), target);
    assert_eq!(
        segmenter.push(video_sample(0, 0, 3000, false, 0)),
        Err(Error::FirstSampleNotKeyframe { dts: 0 })
    );

    let mut segmenter = Segmenter::new(video_track(90_000), target);
    segmenter.push(video_sample(0, 0, 3000, true, 0)).unwrap();
    assert_eq!(
        segmenter.push(video_sample(3000, 0, 3000, false, 1)),
        Err(Error::NonMonotonicDts {
            previous: 0,
            current: 0
        })
    );
    let empty = Sample {
        pts: 3000,
        dts: 3000,
        duration: 3000,
        keyframe: false,
        data: Bytes::new(),
    };
    assert_eq!(segmenter.push(empty), Err(Error::EmptySample { dts: 3000 }));
    // A rejected sample leaves the segmenter usable.
    segmenter
        .push(video_sample(3000, 3000, 3000, false, 1))
        .unwrap();
    let last = segmenter.finish().unwrap().unwrap();
    assert_eq!(last.sample_count(), 2);

    let mut segmenter = Segmenter::new(video_track(90_000), target);
    assert_eq!(
        segmenter.push(video_sample(-3000, -3000, 3000, true, 0)),
        Err(Error::NegativePresentationTime { pts: -3000 })
    );

    let mut audio = Segmenter::new(audio_track(), target);
    let empty_audio = Sample {
        pts: 0,
        dts: 0,
        duration: 1024,
        keyframe: true,
        data: Bytes::new(),
    };
    assert_eq!(audio.push(empty_audio), Err(Error::EmptySample { dts: 0 }));
}

#[test]
fn tracks_reject_garbage_and_mismatched_configs() {
    use cascade_packager::{AudioTrack, VideoTrack};
    let fps = Rational::integer(30).unwrap();
    assert_eq!(
        VideoTrack::new(b"\x42garbage", 1280, 720, 90_000, fps),
        Err(Error::UnrecognizedAvcConfig)
    );
    let config = annex_b(&[SPS_720P_HIGH, PPS_720P_HIGH]);
    assert_eq!(
        VideoTrack::new(&config, 1920, 1080, 90_000, fps),
        Err(Error::DimensionMismatch {
            sps_width: 1280,
            sps_height: 720,
            width: 1920,
            height: 1080
        })
    );
    assert!(matches!(
        VideoTrack::new(&config, 1280, 720, 0, fps),
        Err(Error::InvalidParameter(_))
    ));
    assert!(matches!(
        AudioTrack::new(&[0xff, 0xff], 48_000, 2),
        Err(Error::InvalidAudioSpecificConfig(_))
    ));
    assert!(matches!(
        AudioTrack::new(ASC_LC_48K_STEREO, 44_100, 2),
        Err(Error::AudioConfigMismatch { .. })
    ));
    assert!(matches!(
        AudioTrack::new(ASC_LC_48K_STEREO, 48_000, 1),
        Err(Error::AudioConfigMismatch { .. })
    ));
}

fn run_parted(
    track: Track,
    target: Rational,
    part: Rational,
    samples: Vec<Sample>,
) -> (Vec<MediaSegment>, Vec<cascade_packager::Part>) {
    let mut segmenter = Segmenter::with_parts(track, target, part);
    let mut segments = Vec::new();
    let mut parts = Vec::new();
    for sample in samples {
        let closed = segmenter.push(sample).unwrap();
        parts.extend(segmenter.take_parts());
        segments.extend(closed);
    }
    let (last, last_parts) = segmenter.finish_with_parts().unwrap();
    segments.extend(last);
    parts.extend(last_parts);
    (segments, parts)
}

#[test]
fn parts_tile_their_segment_and_never_exceed_the_part_target() {
    // 30 fps at 90 kHz for 6 s, keyframes every 2 s; parts of at most 1/3 s.
    let part_target = Rational::new(1, 3).unwrap();
    let samples = stream(180, &[0, 60, 120], 3000, 30);
    let whole = run(
        video_track(90_000),
        Rational::integer(2).unwrap(),
        samples.clone(),
    );
    let (segments, parts) = run_parted(
        video_track(90_000),
        Rational::integer(2).unwrap(),
        part_target,
        samples,
    );
    // The same cuts as without parts.
    assert_eq!(boundaries(&segments), boundaries(&whole));
    for segment in &segments {
        let own: Vec<_> = parts
            .iter()
            .filter(|p| p.sequence_number == segment.sequence_number())
            .collect();
        // Ten frames make exactly 1/3 s; an eleventh would pass it.
        let frames: Vec<u64> = own.iter().map(|p| p.duration / 3000).collect();
        assert_eq!(frames, vec![10; 6], "{frames:?}");
        let indices: Vec<u32> = own.iter().map(|p| p.index).collect();
        assert_eq!(indices, (0..6).collect::<Vec<u32>>());
        // Only the first part of a segment starts with the keyframe.
        let independent: Vec<bool> = own.iter().map(|p| p.independent).collect();
        assert_eq!(independent, [true, false, false, false, false, false]);
        // Each part's decode time runs on from the previous one's end.
        let mut at = segment.start();
        for part in &own {
            assert_eq!(part.start, at);
            assert_eq!(
                parse_fragment(&part.data).base_media_decode_time,
                part.start
            );
            at += part.duration;
        }
        assert_eq!(at, segment.start() + segment.duration());
        // The segment is its parts, byte for byte.
        let joined: Vec<u8> = own.iter().flat_map(|p| p.data.iter().copied()).collect();
        assert_eq!(segment.data().as_ref(), joined.as_slice());
        assert_eq!(segment.size(), joined.len() as u64);
        assert_eq!(segment.sample_count(), 60);
    }
    // `mfhd` numbers every fragment in order.
    let numbers: Vec<u32> = parts
        .iter()
        .map(|p| parse_fragment(&p.data).sequence_number)
        .collect();
    assert_eq!(numbers, (1..=18).collect::<Vec<u32>>());
}

#[test]
fn audio_parts_stay_within_the_target() {
    // AAC frames of 1024 samples at 48 kHz: 15 frames (0.32 s) per part.
    let samples: Vec<Sample> = (0..300)
        .map(|index| Sample {
            pts: index * 1024,
            dts: index * 1024,
            duration: 1024,
            keyframe: true,
            data: Bytes::from(vec![0x21, 0x10, index as u8, 0x04]),
        })
        .collect();
    let (segments, parts) = run_parted(
        audio_track(),
        Rational::integer(2).unwrap(),
        Rational::new(1, 3).unwrap(),
        samples,
    );
    assert!(parts.iter().all(|p| p.duration <= 16_000 && p.independent));
    let first: Vec<_> = parts.iter().filter(|p| p.sequence_number == 1).collect();
    assert!(first[..first.len() - 1]
        .iter()
        .all(|p| p.duration == 15 * 1024));
    let total: u64 = parts.iter().map(|p| p.duration).sum();
    assert_eq!(total, segments.iter().map(|s| s.duration()).sum::<u64>());
    assert_eq!(total, 300 * 1024);
}

#[test]
fn millisecond_timestamps_never_make_a_part_too_long() {
    // 30 fps as FLV carries it: frames of 33 or 34 ms (at 90 kHz, 2970 or
    // 3060 ticks); parts of at most 333 ms (29970 ticks).
    let mut at = 0i64;
    let samples: Vec<Sample> = (0..120)
        .map(|index| {
            let duration = if index % 3 == 2 { 3060 } else { 2970 };
            let sample = Sample {
                pts: at,
                dts: at,
                duration,
                keyframe: index % 60 == 0,
                data: access_unit(index % 60 == 0, 30, index as u32),
            };
            at += i64::from(duration);
            sample
        })
        .collect();
    let (_, parts) = run_parted(
        video_track(90_000),
        Rational::integer(2).unwrap(),
        Rational::new(333, 1000).unwrap(),
        samples,
    );
    assert!(
        parts.iter().all(|p| p.duration <= 29_970),
        "{:?}",
        parts.iter().map(|p| p.duration).collect::<Vec<_>>()
    );
}

#[test]
fn a_paused_track_keeps_the_numbers_of_the_segments_it_sits_out() {
    // 30 fps at 90 kHz, a keyframe every second, 1 s segments. The track
    // stops at 2 s, sits out 2-3 s and 3-4 s, and comes back at 4 s.
    let samples = stream(180, &[0, 30, 60, 90, 120, 150], 3000, 10);
    let mut segmenter = Segmenter::new(video_track(90_000), Rational::integer(1).unwrap());
    let mut segments = Vec::new();
    for sample in samples.iter().take(60).cloned() {
        segments.extend(segmenter.push(sample).unwrap());
    }
    let closed = segmenter.pause(180_000).unwrap().unwrap();
    assert_eq!(
        (closed.sequence_number(), closed.start(), closed.duration()),
        (2, 90_000, 90_000)
    );
    assert_eq!(segmenter.skip(180_000), None, "nothing to sit out yet");
    let skipped: Vec<_> = [270_000, 360_000]
        .into_iter()
        .map(|end| segmenter.skip(end).unwrap())
        .map(|info| (info.sequence_number, info.start, info.duration, info.size))
        .collect();
    assert_eq!(skipped, [(3, 180_000, 90_000, 0), (4, 270_000, 90_000, 0)]);
    // Resuming takes a sync sample only.
    assert_eq!(
        segmenter.push(samples[121].clone()),
        Err(Error::FirstSampleNotKeyframe { dts: 363_000 })
    );
    for sample in samples.iter().skip(120).cloned() {
        segments.extend(segmenter.push(sample).unwrap());
    }
    segments.extend(segmenter.finish().unwrap());
    segments.insert(1, closed);
    assert_eq!(
        boundaries(&segments),
        [
            (1, 0, 90_000),
            (2, 90_000, 90_000),
            (5, 360_000, 90_000),
            (6, 450_000, 90_000)
        ]
    );
    let mut never_paused = Segmenter::new(video_track(90_000), Rational::integer(1).unwrap());
    assert_eq!(never_paused.skip(90_000), None);
}
