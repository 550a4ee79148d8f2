//! End-to-end: package real x264 and AAC output, then let ffmpeg's own HLS,
//! DASH and MP4 demuxers and decoders judge the result.
//!
//! `ffmpeg` and `ffprobe` must be on PATH (`make test` installs them): a
//! missing tool fails the tests rather than passing them unchecked.
//! Set `KEEP_E2E=1` to keep the packaged files in the temp dir for a look.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use cascade_packager::dash::render_mpd;
use cascade_packager::hls::{render_master_playlist, Playlist};
use cascade_packager::{
    AudioTrack, MediaSegment, Rational, Rendition, Sample, Segmenter, Track, UriLayout, VideoTrack,
};
use serde_json::Value;

const FRAMES: usize = 100;
const FPS: u32 = 30;
const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;

/// Fails the test unless `ffmpeg` and `ffprobe` run.
fn require_tools() {
    for tool in ["ffmpeg", "ffprobe"] {
        let runs = Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            runs,
            "{tool} is not on PATH: the end-to-end check needs it (scripts/deps.sh installs it)"
        );
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("cascade-packager-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_E2E").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a tool, asserts success and an empty stderr (we pass `-v error`).
fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(tool).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{tool} {args:?} failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "{tool} {args:?} reported: {stderr}"
    );
    output.stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// x264 with closed GOPs of exactly one second, and an AUD before every
/// access unit so the Annex B stream can be split without a parser.
fn encode_h264(out: &Path, b_frames: u32) {
    let b_frames = b_frames.to_string();
    let format = if out.extension().is_some_and(|e| e == "mp4") {
        "mp4"
    } else {
        "h264"
    };
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}"),
            "-frames:v",
            &FRAMES.to_string(),
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
            "-bf",
            &b_frames,
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-x264-params",
            "aud=1",
            "-f",
            format,
            path_str(out),
        ],
    );
}

/// Splits an Annex B stream into access units at each AUD NAL unit.
fn split_access_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 3 < stream.len() {
        if stream[at..at + 3] == [0, 0, 1] {
            if stream[at + 3] & 0x1f == 9 {
                let four_byte = at > 0 && stream[at - 1] == 0;
                starts.push(if four_byte { at - 1 } else { at });
            }
            at += 3;
        } else {
            at += 1;
        }
    }
    starts.push(stream.len());
    starts
        .windows(2)
        .map(|pair| &stream[pair[0]..pair[1]])
        .collect()
}

/// NAL units (without start codes) of one Annex B access unit.
fn nal_units(unit: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 3 <= unit.len() {
        if unit[at..at + 3] == [0, 0, 1] {
            starts.push(at + 3);
            at += 3;
        } else {
            at += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(index, &start)| {
            let end = starts.get(index + 1).map_or(unit.len(), |&next| next - 3);
            let nal = &unit[start..end];
            let trimmed = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            &nal[..trimmed]
        })
        .collect()
}

fn package(track: Track, samples: Vec<Sample>) -> (Bytes, Vec<MediaSegment>) {
    let mut segmenter = Segmenter::new(track, Rational::integer(1).unwrap());
    let init = segmenter.init_segment();
    let mut segments = Vec::new();
    for sample in samples {
        segments.extend(segmenter.push(sample).unwrap());
    }
    segments.extend(segmenter.finish().unwrap());
    (init, segments)
}

/// Writes `{dir}/{name}/init.mp4`, the segments and `index.m3u8`; returns the rendition.
fn write_rendition(
    dir: &Path,
    name: &str,
    track: &Track,
    init: &Bytes,
    segments: &[MediaSegment],
) -> Rendition {
    let layout = UriLayout::default();
    let rendition_dir = dir.join(name);
    std::fs::create_dir_all(&rendition_dir).unwrap();
    std::fs::write(rendition_dir.join(&layout.init_segment), init).unwrap();
    for segment in segments {
        let file = layout.media_segment_name(segment.sequence_number());
        std::fs::write(rendition_dir.join(file), segment.data()).unwrap();
    }
    let rendition = Rendition::from_track(
        name,
        track,
        segments.iter().map(MediaSegment::info).collect(),
    );
    let playlist = Playlist::for_rendition(&rendition, &layout).unwrap();
    std::fs::write(
        rendition_dir.join(&layout.media_playlist),
        playlist.render(),
    )
    .unwrap();
    rendition
}

fn probe_json(args: &[&str]) -> Value {
    let mut full = vec!["-v", "error", "-print_format", "json"];
    full.extend_from_slice(args);
    serde_json::from_slice(&run("ffprobe", &full)).unwrap()
}

struct DecodedFrame {
    pts: i64,
    key: bool,
}

/// Decoded video frames as ffprobe sees them through `input`.
fn probe_frames(input: &Path) -> Vec<DecodedFrame> {
    probe_stream_frames(input, "v:0")
}

/// Decoded frames of the stream `selector` picks.
fn probe_stream_frames(input: &Path, selector: &str) -> Vec<DecodedFrame> {
    let json = probe_json(&[
        "-select_streams",
        selector,
        "-show_entries",
        "frame=pts,key_frame",
        path_str(input),
    ]);
    json["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| DecodedFrame {
            pts: frame["pts"].as_i64().expect("frame without pts"),
            key: frame["key_frame"].as_i64() == Some(1),
        })
        .collect()
}

/// The MD5 of every decoded picture, in presentation order.
fn picture_hashes(input: &Path) -> Vec<String> {
    let text = String::from_utf8(run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            path_str(input),
            "-map",
            "0:v:0",
            "-f",
            "framemd5",
            "-",
        ],
    ))
    .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit(',').next().map(|hash| hash.trim().to_owned()))
        .collect()
}

/// How late FFmpeg shows pictures of a track with negative composition
/// offsets: its mov demuxer computes `pts = dts + dts_shift + offset`, with
/// `dts_shift` the largest negative offset read so far, instead of
/// `dts + offset` as ISO/IEC 14496-12 defines. Browsers (MSE), hls.js and
/// dash.js follow the standard; FFmpeg (5.1 here, and its later versions)
/// does not. Returns that shift after checking it is the same in every
/// fragment, so that FFmpeg's error is constant over the presentation.
fn ffmpeg_dts_shift(segments: &[MediaSegment]) -> i64 {
    let shifts: Vec<i64> = segments
        .iter()
        .map(|segment| {
            let fragment = common::parse_fragment(segment.data());
            let most_negative = fragment
                .samples
                .iter()
                .map(|sample| i64::from(sample.composition_offset))
                .min()
                .unwrap_or(0);
            (-most_negative).max(0)
        })
        .collect();
    assert!(shifts.iter().all(|&shift| shift == shifts[0]), "{shifts:?}");
    shifts[0]
}

/// The presentation times the fragments themselves declare, per ISO/IEC
/// 14496-12: tfdt + preceding sample durations + composition offset.
fn declared_presentation_times(segments: &[MediaSegment]) -> Vec<i64> {
    let mut times: Vec<i64> = segments
        .iter()
        .flat_map(|segment| common::parse_fragment(segment.data()).presentation_times())
        .collect();
    times.sort_unstable();
    times
}

/// Frame-accurate checks shared by both video cases. `shift` is FFmpeg's
/// `dts_shift` (0 without B-frames).
fn check_video_output(
    playlist: &Path,
    source: &Path,
    frame_ticks: i64,
    timescale: i64,
    shift: i64,
) {
    // The whole presentation decodes without a single complaint.
    run(
        "ffmpeg",
        &["-v", "error", "-i", path_str(playlist), "-f", "null", "-"],
    );

    let frames = probe_frames(playlist);
    assert_eq!(frames.len(), FRAMES);
    assert_eq!(
        frames[0].pts, shift,
        "first frame must be presented at 0 (+ FFmpeg's dts_shift)"
    );
    let pts: Vec<i64> = frames.iter().map(|frame| frame.pts).collect();
    let expected: Vec<i64> = (0..FRAMES as i64)
        .map(|index| index * frame_ticks + shift)
        .collect();
    assert_eq!(pts, expected);
    let keyframes: Vec<i64> = frames.iter().filter(|f| f.key).map(|f| f.pts).collect();
    let expected_keyframes: Vec<i64> = (0..4).map(|second| second * timescale + shift).collect();
    assert_eq!(keyframes, expected_keyframes);

    // Same pictures as decoding the encoder's own output.
    assert_eq!(picture_hashes(playlist), picture_hashes(source));
}

#[test]
fn annex_b_stream_without_b_frames_plays_through_hls() {
    require_tools();
    let dir = TempDir::new("annexb");
    let source = dir.0.join("source.h264");
    encode_h264(&source, 0);
    let stream = std::fs::read(&source).unwrap();
    let units = split_access_units(&stream);
    assert_eq!(units.len(), FRAMES);

    let config: Vec<u8> = nal_units(units[0])
        .into_iter()
        .filter(|nal| matches!(nal[0] & 0x1f, 7 | 8))
        .flat_map(|nal| [&[0u8, 0, 0, 1][..], nal].concat())
        .collect();
    let timescale = 90_000;
    let frame_ticks = i64::from(timescale / FPS);
    let track: Track = VideoTrack::new(
        &config,
        WIDTH,
        HEIGHT,
        timescale,
        Rational::integer(u64::from(FPS)).unwrap(),
    )
    .unwrap()
    .into();
    assert_eq!(track.codec_string(), "avc1.64000d");

    let samples = units
        .iter()
        .enumerate()
        .map(|(index, unit)| Sample {
            pts: index as i64 * frame_ticks,
            dts: index as i64 * frame_ticks,
            duration: frame_ticks as u32,
            keyframe: nal_units(unit).iter().any(|nal| nal[0] & 0x1f == 5),
            data: Bytes::copy_from_slice(unit),
        })
        .collect();
    let (init, segments) = package(track.clone(), samples);
    assert_eq!(segments.len(), 4);
    write_rendition(&dir.0, "video", &track, &init, &segments);

    assert_eq!(ffmpeg_dts_shift(&segments), 0);
    let expected: Vec<i64> = (0..FRAMES as i64)
        .map(|index| index * frame_ticks)
        .collect();
    assert_eq!(declared_presentation_times(&segments), expected);
    let playlist = dir.0.join("video/index.m3u8");
    check_video_output(&playlist, &source, frame_ticks, i64::from(timescale), 0);
}

#[test]
fn mp4_stream_with_b_frames_and_aac_plays_through_hls_and_dash() {
    require_tools();
    let dir = TempDir::new("bframes");
    let source = dir.0.join("source.mp4");
    encode_h264(&source, 2);
    let file = std::fs::read(&source).unwrap();

    // The avcC record as x264 + the mp4 muxer wrote it, and length-prefixed samples.
    let avcc_at = file.windows(4).position(|w| w == b"avcC").unwrap();
    let avcc_size = common::u32_at(&file, avcc_at - 4) as usize;
    let avcc = &file[avcc_at + 4..avcc_at - 4 + avcc_size];

    let json = probe_json(&[
        "-select_streams",
        "v:0",
        "-show_streams",
        "-show_packets",
        path_str(&source),
    ]);
    let time_base = json["streams"][0]["time_base"].as_str().unwrap();
    let timescale: u32 = time_base.strip_prefix("1/").unwrap().parse().unwrap();
    let packets = json["packets"].as_array().unwrap();
    assert_eq!(packets.len(), FRAMES);
    let field = |packet: &Value, name: &str| -> i64 {
        let value = &packet[name];
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .unwrap()
    };
    let samples: Vec<Sample> = packets
        .iter()
        .map(|packet| {
            let pos = field(packet, "pos") as usize;
            let size = field(packet, "size") as usize;
            Sample {
                pts: field(packet, "pts"),
                dts: field(packet, "dts"),
                duration: field(packet, "duration") as u32,
                keyframe: packet["flags"].as_str().unwrap().starts_with('K'),
                data: Bytes::copy_from_slice(&file[pos..pos + size]),
            }
        })
        .collect();
    assert!(
        samples[0].dts < 0,
        "the source should start with a B-frame delay"
    );
    assert!(
        samples.windows(2).any(|pair| pair[1].pts < pair[0].pts),
        "the source should reorder frames (B-frames)"
    );

    let samples_pts: Vec<i64> = samples.iter().map(|sample| sample.pts).collect();
    let track: Track = VideoTrack::new(
        avcc,
        WIDTH,
        HEIGHT,
        timescale,
        Rational::integer(u64::from(FPS)).unwrap(),
    )
    .unwrap()
    .into();
    let (init, segments) = package(track.clone(), samples);
    assert_eq!(segments.len(), 4);
    let video = write_rendition(&dir.0, "video", &track, &init, &segments);
    let frame_ticks = i64::from(timescale / FPS);

    // What the file says: the first picture at 0, every picture at its source time.
    let mut source_pts: Vec<i64> = samples_pts;
    source_pts.sort_unstable();
    assert_eq!(source_pts[0], 0);
    assert_eq!(declared_presentation_times(&segments), source_pts);
    // What FFmpeg makes of it: the same, plus its dts_shift (one frame here).
    let shift = ffmpeg_dts_shift(&segments);
    assert!(
        shift > 0,
        "B-frames should give negative composition offsets"
    );
    let playlist = dir.0.join("video/index.m3u8");
    check_video_output(&playlist, &source, frame_ticks, i64::from(timescale), shift);

    // AAC from ffmpeg's encoder as ADTS, which the segmenter must strip.
    let audio_samples = aac_samples(
        &dir.0.join("source.aac"),
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "3.4",
            "-ac",
            "2",
        ],
    );
    let audio_track: Track = AudioTrack::new(common::ASC_LC_48K_STEREO, 48_000, 2)
        .unwrap()
        .into();
    let audio_frame_count = audio_samples.len();
    let (audio_init, audio_segments) = package(audio_track.clone(), audio_samples);
    let audio = write_rendition(&dir.0, "audio", &audio_track, &audio_init, &audio_segments);

    let layout = UriLayout::default();
    let renditions = [video, audio];
    std::fs::write(
        dir.0.join("master.m3u8"),
        render_master_playlist(&renditions, &layout).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.0.join("manifest.mpd"),
        render_mpd(&renditions, &layout).unwrap(),
    )
    .unwrap();

    for manifest in ["master.m3u8", "manifest.mpd"] {
        let path = dir.0.join(manifest);
        run(
            "ffmpeg",
            &["-v", "error", "-i", path_str(&path), "-f", "null", "-"],
        );
        let streams = probe_json(&["-show_streams", path_str(&path)]);
        let codecs: Vec<&str> = streams["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|stream| stream["codec_name"].as_str().unwrap())
            .collect();
        assert!(
            codecs.contains(&"h264") && codecs.contains(&"aac"),
            "{manifest}: {codecs:?}"
        );
        let frames = probe_frames(&path);
        assert_eq!(frames.len(), FRAMES, "{manifest}");
        assert_eq!(frames[0].pts, shift, "{manifest}");
        let audio_frames = probe_stream_frames(&path, "a:0");
        assert_eq!(audio_frames.len(), audio_frame_count, "{manifest}");
        assert_eq!(audio_frames[0].pts, 0, "{manifest}: audio starts at 0");
    }
}

/// AAC priming: FFmpeg's AAC encoder puts 1024 samples of encoder delay
/// before the input's first sample, and an ADTS stream cannot say so. The
/// packager keeps them in the media from time 0 and writes an edit list
/// (`media_time` = the delay) in the CMAF header. A tone that starts 1 s
/// into the input must then be presented at 1.000 s by both FFmpeg (which
/// moves its timestamps by the edit) and GStreamer's `qtdemux` (which
/// trims the samples); without the edit, both present it one AAC frame
/// (21.3 ms) late.
#[test]
fn aac_priming_is_skipped_through_the_edit_list_by_ffmpeg_and_gstreamer() {
    require_tools();
    const RATE: usize = 48_000;
    let dir = TempDir::new("priming");
    let samples = aac_samples(
        &dir.0.join("tone.aac"),
        &[
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=48000:cl=stereo:d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000:duration=1",
            "-filter_complex",
            "[1]aformat=channel_layouts=stereo[tone];[0][tone]concat=n=2:v=0:a=1",
        ],
    );
    // The onset, seconds, in a reader's presentation of `file`: the first
    // loud sample after `first_sample` (the time of the first decoded
    // sample) in its mono 16-bit output.
    let onset = |pcm: &[u8], first_sample: f64| -> f64 {
        let index = pcm
            .chunks_exact(2)
            .position(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 1000)
            .expect("the tone");
        first_sample + index as f64 / RATE as f64
    };
    for priming in [1024u32, 0] {
        let track: Track = AudioTrack::new(common::ASC_LC_48K_STEREO, 48_000, 2)
            .unwrap()
            .with_priming(priming)
            .into();
        let (init, segments) = package(track, samples.clone());
        let mut file = init.to_vec();
        segments
            .iter()
            .for_each(|s| file.extend_from_slice(s.data()));
        let path = dir.0.join(format!("priming{priming}.mp4"));
        std::fs::write(&path, &file).unwrap();

        let packets = probe_json(&["-show_packets", "-select_streams", "a:0", path_str(&path)]);
        let first_pts: f64 = packets["packets"][0]["pts_time"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let pcm = run(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-i",
                path_str(&path),
                "-f",
                "s16le",
                "-ac",
                "1",
                "-",
            ],
        );
        let ffmpeg = onset(&pcm, first_pts);
        let raw = dir.0.join(format!("priming{priming}.gst.raw"));
        let gst = Command::new("gst-launch-1.0")
            .args(["-q", "filesrc"])
            .arg(format!("location={}", path_str(&path)))
            .args(["!", "qtdemux", "!", "avdec_aac", "!", "audioconvert", "!"])
            .args(["audio/x-raw,format=S16LE,channels=1", "!", "filesink"])
            .arg(format!("location={}", path_str(&raw)))
            .output()
            .expect("gst-launch-1.0 (scripts/deps.sh installs GStreamer)");
        assert!(
            gst.status.success(),
            "{}",
            String::from_utf8_lossy(&gst.stderr)
        );
        // GStreamer presents from 0: what it trims is not in its output.
        let gstreamer = onset(&std::fs::read(&raw).unwrap(), 0.0);
        let expected = 1.0 + f64::from(1024 - priming) / RATE as f64;
        for (reader, at) in [("FFmpeg", ffmpeg), ("GStreamer", gstreamer)] {
            assert!(
                (at - expected).abs() < 0.001,
                "priming {priming}: {reader} presents the tone at {at:.4} s, not {expected:.4} s"
            );
        }
    }
}

/// AAC frames from ffmpeg's encoder (128 kbit/s, ADTS, written to `path`)
/// of the input `input` names, as samples of 1024 from time 0: the
/// encoder's priming is the first frame, which ADTS cannot signal.
fn aac_samples(path: &Path, input: &[&str]) -> Vec<Sample> {
    let mut args = vec!["-v", "error", "-y"];
    args.extend_from_slice(input);
    args.extend_from_slice(&["-c:a", "aac", "-b:a", "128k", "-f", "adts", path_str(path)]);
    run("ffmpeg", &args);
    let adts = std::fs::read(path).unwrap();
    let mut samples = Vec::new();
    let mut at = 0;
    while at + 7 <= adts.len() {
        let length = (usize::from(adts[at + 3] & 0x03) << 11)
            | (usize::from(adts[at + 4]) << 3)
            | usize::from(adts[at + 5] >> 5);
        let time = samples.len() as i64 * 1024;
        samples.push(Sample {
            pts: time,
            dts: time,
            duration: 1024,
            keyframe: true,
            data: Bytes::copy_from_slice(&adts[at..at + length]),
        });
        at += length;
    }
    samples
}
