//! Live streams end to end: ffmpeg publishes over RTMP in real time to
//! `cascade serve`, which transcodes the live ladder and serves live HLS
//! and DASH through its origin; hostile and refused publishers; reconnects;
//! the death of the process holding a stream; recording to a VOD asset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    create_key, eventually, fixtures_dir, fresh_db, header, http, http_bytes, repo_root,
    CascadeProcess, TestDb,
};
use crate::origin::{nginx_available, start_cdn};

/// A 12 s 720p30 H.264 + AAC file with a keyframe every 2 s: published with
/// `-c copy`, so the publisher costs no encoding.
pub(crate) fn live_fixture() -> PathBuf {
    static GENERATE: std::sync::Once = std::sync::Once::new();
    let path = fixtures_dir().join("live_720p30_12s.mp4");
    GENERATE.call_once(|| {
        if path.exists() {
            return;
        }
        let partial = path.with_extension("partial.mp4");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t", "12", "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
            ])
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-b:a", "128k",
            ])
            .arg(&partial)
            .status()
            .expect("ffmpeg");
        assert!(status.success(), "generating the live fixture failed");
        std::fs::rename(&partial, &path).unwrap();
    });
    path
}

/// Output options re-encoding the video through `filter` (a size), audio copied.
fn reencoded_at(filter: &str) -> [&str; 10] {
    [
        "-vf",
        filter,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "60",
        "-c:a",
        "copy",
    ]
}

/// ffmpeg publishing `file` in real time (`-re`) to `url`, `extra` output
/// options before the URL (default: copy the streams).
fn publish(file: &Path, url: &str, extra: &[&str]) -> Child {
    publish_looped(file, url, 0, extra)
}

/// [`publish`], `file` played `1 + loops` times over.
pub(crate) fn publish_looped(file: &Path, url: &str, loops: u32, extra: &[&str]) -> Child {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-stream_loop", &loops.to_string(), "-i"])
        .arg(file);
    if extra.is_empty() {
        command.args(["-c", "copy"]);
    } else {
        command.args(extra);
    }
    command
        .args(["-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

/// Waits for `child` to exit within `limit`; its exit status.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let pid = child.id();
    let (done, exited) = std::sync::mpsc::channel();
    // A watchdog kills the child at the deadline; waiting is a plain wait.
    std::thread::spawn(move || {
        if exited.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let started = Instant::now();
    let status = child.wait().expect("wait for the publisher");
    let _ = done.send(());
    assert!(
        started.elapsed() < limit,
        "the publisher did not stop within {limit:?}"
    );
    status
}

pub(crate) struct Live {
    pub(crate) process: CascadeProcess,
    pub(crate) http: SocketAddr,
    pub(crate) rtmp: SocketAddr,
}

/// A live test's object root, removed when the test ends: declared before
/// the processes that write to it, so they are dropped (and stopped) first.
fn live_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cascade-live-")
        .tempdir()
        .expect("a scratch directory")
}

/// `cascade serve` with `roles`, RTMP on a free loopback port, a live
/// ladder that keeps up on a shared 2-core machine, short timers.
fn serve(db: &TestDb, roles: &str, root: &Path) -> Live {
    serve_with(db, roles, root, &[])
}

/// [`serve`] with more (or overriding) settings.
pub(crate) fn serve_with(db: &TestDb, roles: &str, root: &Path, extra: &[(&str, &str)]) -> Live {
    let root = root.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("CASCADE_STORAGE__LOCAL_ROOT", &root),
        ("CASCADE_TRANSCODE__ENCODER", "libx264"),
        ("CASCADE_LIVE__PRESET", "ultrafast"),
        ("CASCADE_LIVE__WINDOW", "30s"),
        ("CASCADE_LIVE__HANDSHAKE_TIMEOUT", "2s"),
        ("CASCADE_LIVE__PUBLISHER_LEASE", "3s"),
        ("CASCADE_LIVE__SWEEP_INTERVAL", "500ms"),
        ("CASCADE_QUEUE__POLL_INTERVAL", "200ms"),
        (
            "CASCADE_PLAYBACK__SIGNING_KEYS",
            "live:a-signing-secret-of-32-bytes-xx",
        ),
    ];
    env.extend_from_slice(extra);
    let process = CascadeProcess::serve(&db.url, roles, &env);
    let http = process.http.expect("http address");
    let rtmp = process.rtmp.expect("rtmp address");
    Live {
        process,
        http,
        rtmp,
    }
}

/// Waits for stream `id` to turn idle with a recording, and for that
/// asset to be ready; returns the asset.
async fn recorded_asset(addr: SocketAddr, key: &str, id: &str) -> serde_json::Value {
    recorded_asset_in(addr, key, id, "ready").await
}

/// [`recorded_asset`], waiting for the asset to be in `state`.
async fn recorded_asset_in(
    addr: SocketAddr,
    key: &str,
    id: &str,
    state: &'static str,
) -> serde_json::Value {
    let asset_id = eventually("the recording", Duration::from_secs(40), || async {
        let stream = get_stream(addr, key, id);
        (stream["state"] == "idle")
            .then(|| stream["recorded_assets"][0].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    let auth = format!("Bearer {key}");
    eventually("the recorded asset ready", Duration::from_secs(30), || {
        let (auth, asset_id) = (auth.clone(), asset_id.clone());
        async move {
            let (_, _, body) = http(
                addr,
                "GET",
                &format!("/v1/assets/{asset_id}"),
                &[("Authorization", &auth)],
                b"",
            );
            let asset = json(&body);
            (asset["state"] == state).then_some(asset)
        }
    })
    .await
}

pub(crate) fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// A new live stream: (id, stream key, playback id).
pub(crate) fn create_stream(addr: SocketAddr, key: &str, body: &str) -> (String, String, String) {
    let auth = format!("Bearer {key}");
    let (status, _, text) = http(
        addr,
        "POST",
        "/v1/live_streams",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(status, 201, "{text}");
    let stream = json(&text);
    assert_eq!(stream["state"], "idle");
    (
        stream["id"].as_str().unwrap().to_owned(),
        stream["rtmp"]["stream_key"].as_str().unwrap().to_owned(),
        stream["playback_id"].as_str().unwrap().to_owned(),
    )
}

pub(crate) fn get_stream(addr: SocketAddr, key: &str, id: &str) -> serde_json::Value {
    let auth = format!("Bearer {key}");
    let (status, _, text) = http(
        addr,
        "GET",
        &format!("/v1/live_streams/{id}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(status, 200, "{text}");
    json(&text)
}

/// A connection that sends `bytes` and then waits: how long until the
/// server closes it (`None`: still open after `limit`).
/// A client handshake (C0, C1, C2) and then an `FCPublish` command (as OBS
/// sends, which the protocol crate decodes as plain AMF0 values) whose
/// argument is an ECMA array declaring 2^32 - 1 entries.
fn crafted_command() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend(std::iter::repeat_n(0u8, 2 * 1536));
    let mut command = vec![2, 0, 9];
    command.extend_from_slice(b"FCPublish");
    command.extend_from_slice(&[0, 0x40, 0x08, 0, 0, 0, 0, 0, 0, 5]);
    command.extend_from_slice(&[8, 0xff, 0xff, 0xff, 0xff, 0, 0, 9]);
    // Chunk stream 3, format 0: timestamp, length, type 20 (AMF0 command),
    // message stream 0.
    bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0, command.len() as u8, 20, 0, 0, 0, 0]);
    bytes.extend_from_slice(&command);
    bytes
}

fn closed_within(rtmp: SocketAddr, bytes: &[u8], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(rtmp).expect("connect to rtmp");
    let _ = stream.write_all(bytes);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// The media playlist of `rendition` through the origin, once it lists
/// at least `segments` segments.
pub(crate) async fn playlist_with(
    addr: SocketAddr,
    playback: &str,
    rendition: &str,
    segments: usize,
) -> String {
    let path = format!("/play/{playback}/{rendition}/index.m3u8");
    eventually(
        &format!("{rendition} listing {segments} segments"),
        Duration::from_secs(40),
        || {
            let path = path.clone();
            async move {
                let (status, _, body) = http(addr, "GET", &path, &[], b"");
                (status == 200 && body.matches("#EXTINF").count() >= segments).then_some(body)
            }
        },
    )
    .await
}

/// A live stream published by ffmpeg plays through the origin (HLS with
/// program date-times and short-lived caching, dynamic DASH, immutable
/// segments), is shown on the API, and is read by ffmpeg; garbage, a
/// silent connection, a wrong key, a second publisher and an unsupported
/// codec are refused meanwhile without disturbing it; when the publisher
/// is gone for good the stream turns idle and the broadcast becomes a
/// ready asset that `cascade qa` passes against the published file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_stream_plays_live_refuses_intruders_and_records() {
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve(&db, "ingest,workers,origin", &root);
    let key = create_key(&db, "live", "default");
    let (id, stream_key, playback) = create_stream(live.http, &key, r#"{"reconnect_window": 2}"#);
    let rtmp_url = format!("rtmp://{}/live", live.rtmp);

    let mut publisher = publish(&fixture, &format!("{rtmp_url}/{stream_key}"), &[]);
    let master = eventually(
        "the live master playlist",
        Duration::from_secs(30),
        || async {
            let (status, headers, body) = http(
                live.http,
                "GET",
                &format!("/play/{playback}/master.m3u8"),
                &[],
                b"",
            );
            (status == 200).then_some((headers, body))
        },
    )
    .await;
    assert_eq!(
        header(&master.0, "cache-control"),
        Some("public, max-age=1, s-maxage=1")
    );
    for rung in [
        "720p/index.m3u8",
        "480p/index.m3u8",
        "240p/index.m3u8",
        "audio/index.m3u8",
    ] {
        assert!(master.1.contains(rung), "{rung} missing: {}", master.1);
    }
    assert!(
        master.1.contains("RESOLUTION=1280x720") && master.1.contains(",mp4a.40.2\""),
        "{}",
        master.1
    );

    // Intruders while the stream runs.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(
        closed_within(live.rtmp, &garbage, Duration::from_secs(6)).is_some(),
        "garbage on the RTMP port is answered by closing the connection"
    );
    // A crafted command: an ECMA array declaring four billion entries,
    // which the protocol crate's decoder would reserve memory for, aborting
    // the process and every stream in it. Refused, and the stream goes on.
    assert!(
        closed_within(live.rtmp, &crafted_command(), Duration::from_secs(6)).is_some(),
        "a crafted command is answered by closing the connection"
    );
    let silent = closed_within(live.rtmp, b"", Duration::from_secs(8));
    assert!(
        silent.is_some_and(|d| d <= Duration::from_secs(5)),
        "a silent connection closes after the handshake timeout: {silent:?}"
    );
    let mut wrong = publish(&fixture, &format!("{rtmp_url}/lsk_{}", "x".repeat(32)), &[]);
    assert!(
        !exit_within(&mut wrong, Duration::from_secs(15)).success(),
        "a wrong key is refused"
    );
    let mut second = publish(&fixture, &format!("{rtmp_url}/{stream_key}"), &[]);
    assert!(
        !exit_within(&mut second, Duration::from_secs(15)).success(),
        "a second publisher is refused"
    );
    let stream = get_stream(live.http, &key, &id);
    assert_eq!(
        stream["last_refusal"]["code"], "already_publishing",
        "{stream}"
    );
    assert_eq!(stream["state"], "active", "{stream}");
    assert_eq!(stream["connected"], true, "{stream}");
    assert_eq!(stream["ingest"]["video"]["width"], 1280, "{stream}");
    assert_eq!(stream["ingest"]["video"]["codec"], "h264", "{stream}");
    assert!(
        stream
            .get("rtmp")
            .and_then(|r| r.get("stream_key"))
            .is_none(),
        "the key is not shown again"
    );

    // The first publisher is undisturbed: its playlists keep growing.
    let media = playlist_with(live.http, &playback, "720p", 3).await;
    assert!(media.contains("#EXT-X-TARGETDURATION:2"), "{media}");
    assert!(media.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{media}");
    assert!(!media.contains("#EXT-X-ENDLIST"), "{media}");
    let segment = media
        .lines()
        .find(|l| l.ends_with(".m4s"))
        .unwrap()
        .trim_start_matches("../")
        .to_owned();
    let (status, headers, bytes) = http_bytes(
        live.http,
        "GET",
        &format!("/play/{playback}/{segment}"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(bytes.windows(4).any(|w| w == b"moof"), "a CMAF fragment");
    // A segment that does not exist yet is a 404 nobody caches.
    let (status, headers, _) = http(
        live.http,
        "GET",
        &format!("/play/{playback}/s1/720p/999999.m4s"),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let (status, _, mpd) = http(
        live.http,
        "GET",
        &format!("/play/{playback}/manifest.mpd"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    for expected in [
        "type=\"dynamic\"",
        "availabilityStartTime=",
        "minimumUpdatePeriod=\"PT2S\"",
        "timeShiftBufferDepth=",
        "<UTCTiming",
        "<SegmentTimeline>",
    ] {
        assert!(mpd.contains(expected), "{expected} missing from {mpd}");
    }
    // ffmpeg reads the live HLS as a player would.
    let read = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(format!("http://{}/play/{playback}/master.m3u8", live.http))
        .args(["-t", "3", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        read.status.success(),
        "ffmpeg reads the live HLS: {}",
        String::from_utf8_lossy(&read.stderr)
    );

    // Gone for good: idle after the 2 s reconnect window, then recorded.
    assert!(exit_within(&mut publisher, Duration::from_secs(30)).success());
    let asset = recorded_asset(live.http, &key, &id).await;
    let (status, _, body) = http(
        live.http,
        "GET",
        &format!("/play/{playback}/master.m3u8"),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    assert_eq!(json(&body)["code"], "stream_idle");
    let duration = asset["duration_seconds"].as_f64().unwrap();
    assert!(
        (duration - 12.0).abs() < 1.0,
        "the recording lasts the broadcast: {asset}"
    );
    // The publish gate checked it before it turned ready.
    let quality = &asset["quality"];
    assert_eq!(quality["gate"], "passed", "{quality}");
    assert!(
        quality["checks_passed"].as_u64().unwrap_or(0) > 20,
        "{quality}"
    );
    assert_eq!(quality["checks_failed"], 0, "{quality}");
    // The publisher (`ffmpeg -c copy` into FLV, which has no edit lists)
    // sends the video 67 ms late, its B-frame delay, after the audio; a
    // recording starts at its first frame and keeps the audio from there:
    // 3 AAC frames fewer than the file, which the default (2 frames) does
    // not allow for.
    let thresholds = root.join("qa-live-thresholds.toml");
    std::fs::write(&thresholds, "audio_duration_tolerance_ms = 100.0\n").unwrap();
    let live_config = root.join("qa-live.toml");
    std::fs::write(
        &live_config,
        "[transcode]\nladder = [\n  { name = \"720p\", short_side = 720, bitrate = 2500000 },\n  \
         { name = \"480p\", short_side = 480, bitrate = 1200000 },\n  { name = \"240p\", short_side = 240, bitrate = 400000 },\n]\n",
    )
    .unwrap();
    let hls = asset["playback"]["hls"].as_str().unwrap().to_owned();
    let hls = hls.replacen(
        &hls[..hls.find("/play/").unwrap()],
        &format!("http://{}", live.http),
        1,
    );
    let (code, report, output) = crate::qa::run_qa(
        &hls,
        &fixture,
        &[
            "--config",
            live_config.to_str().unwrap(),
            "--thresholds",
            thresholds.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert_eq!(
        code, 0,
        "cascade qa passes on the recording:\n{output}\n{report:#}"
    );
    // Every step of the broadcast was announced through the webhook queue.
    let client = db.pool.get().await.unwrap();
    let events: Vec<String> = client
        .query(
            "SELECT payload->>'type' FROM jobs WHERE kind = 'webhook' AND payload->'data'->>'live_stream_id' = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for event in [
        "live_stream.active",
        "live_stream.disconnected",
        "live_stream.idle",
        "live_stream.recording.ready",
    ] {
        assert!(
            events.iter().any(|e| e == event),
            "{event} missing from {events:?}"
        );
    }
    drop(client);
    // The live segments went with the broadcast.
    let left: Vec<_> = walk(&root.join("live"));
    assert!(
        left.iter().all(|p| !p.to_string_lossy().ends_with(".m4s")),
        "{left:?}"
    );

    // An input the live ladder does not take is refused and recorded.
    let (other, other_key, _) = create_stream(live.http, &key, "{}");
    let mut flv1 = publish(
        &fixture,
        &format!("{rtmp_url}/{other_key}"),
        &["-c:v", "flv1", "-c:a", "copy"],
    );
    let _ = exit_within(&mut flv1, Duration::from_secs(30));
    let stream = eventually(
        "the refusal on the stream",
        Duration::from_secs(10),
        || async {
            let stream = get_stream(live.http, &key, &other);
            stream["last_refusal"].is_object().then_some(stream)
        },
    )
    .await;
    assert_eq!(
        stream["last_refusal"]["code"], "unsupported_codec",
        "{stream}"
    );
    drop(live);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A publisher that drops and comes back within the reconnect window
/// continues the broadcast (a discontinuity in HLS, a new Period in DASH,
/// numbers running on); a process holding a stream that is SIGKILLed lets
/// go of it within the lease, its segments stay playable through another
/// process, and the key publishes again there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_continue_the_broadcast_and_a_killed_holder_lets_go() {
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let mut first = serve(&db, "ingest,workers,origin", &root);
    let key = create_key(&db, "live", "default");
    let (id, stream_key, playback) = create_stream(first.http, &key, r#"{"reconnect_window": 60}"#);
    let url = format!("rtmp://{}/live/{stream_key}", first.rtmp);

    let mut publisher = publish(&fixture, &url, &[]);
    playlist_with(first.http, &playback, "720p", 2).await;
    let stream = get_stream(first.http, &key, &id);
    assert_eq!(
        stream["ingest"]["audio_copied"], true,
        "AAC-LC 48 kHz stereo at 128 kb/s is copied: {stream}"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
    eventually(
        "the publisher seen gone",
        Duration::from_secs(15),
        || async {
            let stream = get_stream(first.http, &key, &id);
            (stream["connected"] == false && stream["state"] == "active").then_some(())
        },
    )
    .await;
    let before = http(
        first.http,
        "GET",
        &format!("/play/{playback}/720p/index.m3u8"),
        &[],
        b"",
    )
    .2;
    let last_before: u64 = before
        .lines()
        .filter(|l| l.ends_with(".m4s"))
        .filter_map(|l| l.rsplit('/').next()?.trim_end_matches(".m4s").parse().ok())
        .max()
        .unwrap();

    let (_, _, master_before) = http(
        first.http,
        "GET",
        &format!("/play/{playback}/master.m3u8"),
        &[],
        b"",
    );
    // The encoder comes back with another picture: 640x480 (4:3), below
    // the 720p rung. The broadcast keeps its rungs, so players on any of
    // them play on; the picture is fitted into each, not stretched. Its
    // audio is now 44.1 kHz: the first session's (AAC-LC, 48 kHz, stereo)
    // was copied, this one is re-encoded into the same rendition.
    let mut second_publish = reencoded_at("scale=640:480").to_vec();
    second_publish.truncate(8);
    second_publish.extend(["-c:a", "aac", "-ar", "44100", "-b:a", "96k"]);
    let mut publisher = publish(&fixture, &url, &second_publish);
    let media = eventually(
        "the discontinuity after the reconnect",
        Duration::from_secs(40),
        || async {
            let (_, _, body) = http(
                first.http,
                "GET",
                &format!("/play/{playback}/720p/index.m3u8"),
                &[],
                b"",
            );
            (body.contains("#EXT-X-DISCONTINUITY") && body.contains("../s2/720p/")).then_some(body)
        },
    )
    .await;
    let numbers: Vec<u64> = media
        .lines()
        .filter(|l| l.ends_with(".m4s"))
        .filter_map(|l| l.rsplit('/').next()?.trim_end_matches(".m4s").parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "numbers run on: {media}"
    );
    assert!(
        numbers.contains(&(last_before + 1)),
        "the new session continues at {}: {media}",
        last_before + 1
    );
    assert!(
        media.contains("#EXT-X-MAP:URI=\"../s2/720p/init.mp4\""),
        "{media}"
    );
    let (status, _, init) = http_bytes(
        first.http,
        "GET",
        &format!("/play/{playback}/s2/720p/init.mp4"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let init_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(init_file.path(), &init).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height", "-of", "csv=p=0"])
        .arg(init_file.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "1280,720",
        "the 720p rung stays 1280x720 after the reconnect"
    );
    // Each session's init segment and a media segment of it (ffprobe names
    // the AAC profile from the frames), once the audio playlist lists one
    // of the second session's.
    let first_of_s2: u64 = eventually(
        "the second session's audio",
        Duration::from_secs(15),
        || async {
            let (_, _, body) = http(
                first.http,
                "GET",
                &format!("/play/{playback}/audio/index.m3u8"),
                &[],
                b"",
            );
            body.lines().find_map(|l| {
                l.strip_prefix("../s2/audio/")?
                    .strip_suffix(".m4s")?
                    .parse()
                    .ok()
            })
        },
    )
    .await;
    for (session, number) in [("s1", last_before), ("s2", first_of_s2)] {
        let mut audio = Vec::new();
        for name in ["init.mp4".to_owned(), format!("{number}.m4s")] {
            let (status, _, bytes) = http_bytes(
                first.http,
                "GET",
                &format!("/play/{playback}/{session}/audio/{name}"),
                &[],
                b"",
            );
            assert_eq!(status, 200, "{session}/audio/{name}");
            audio.extend_from_slice(&bytes);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &audio).unwrap();
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
            .args([
                "stream=codec_name,profile,sample_rate,channels",
                "-of",
                "csv=p=0",
            ])
            .arg(file.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&probe.stdout).trim(),
            "aac,LC,48000,2",
            "{session}'s audio is the rendition's format (copied, then re-encoded)"
        );
    }
    let (_, _, master_after) = http(
        first.http,
        "GET",
        &format!("/play/{playback}/master.m3u8"),
        &[],
        b"",
    );
    let variants = |master: &str| -> Vec<String> {
        master
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        variants(&master_after),
        variants(&master_before),
        "the same rungs before and after:\n{master_before}\n{master_after}"
    );
    // The MPD is written after the media playlists (and the origin may hold
    // the previous one for its short live TTL), so it gains Period 2 a
    // moment after the HLS discontinuity shows.
    let mpd = eventually("the second Period", Duration::from_secs(15), || async {
        let (_, _, mpd) = http(
            first.http,
            "GET",
            &format!("/play/{playback}/manifest.mpd"),
            &[],
            b"",
        );
        (mpd.contains("<Period id=\"1\"") && mpd.contains("<Period id=\"2\"")).then_some(mpd)
    })
    .await;
    assert!(
        mpd.contains("<BaseURL>s2/</BaseURL>") && mpd.contains("presentationTimeOffset="),
        "{mpd}"
    );
    let stream = get_stream(first.http, &key, &id);
    assert_eq!(stream["ingest"]["session"], 2, "{stream}");
    assert_eq!(
        stream["ingest"]["audio_copied"], false,
        "44.1 kHz: {stream}"
    );

    // The holder dies with the publisher connected.
    first.process.signal("KILL");
    let _ = first.process.wait_exit(Duration::from_secs(5));
    let _ = publisher.kill();
    let _ = publisher.wait();
    let second = serve(&db, "ingest,workers,origin", &root);
    eventually(
        "the dead holder's stream let go",
        Duration::from_secs(15),
        || async {
            let stream = get_stream(second.http, &key, &id);
            (stream["connected"] == false).then_some(())
        },
    )
    .await;
    let (_, _, media) = http(
        second.http,
        "GET",
        &format!("/play/{playback}/720p/index.m3u8"),
        &[],
        b"",
    );
    let segment = media
        .lines()
        .rfind(|l| l.ends_with(".m4s"))
        .unwrap()
        .trim_start_matches("../")
        .to_owned();
    let (status, _, _) = http_bytes(
        second.http,
        "GET",
        &format!("/play/{playback}/{segment}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "published segments stay playable");
    let url = format!("rtmp://{}/live/{stream_key}", second.rtmp);
    let mut publisher = publish(&fixture, &url, &[]);
    let stream = eventually(
        "a new publish on another process",
        Duration::from_secs(30),
        || async {
            let stream = get_stream(second.http, &key, &id);
            (stream["connected"] == true && stream["ingest"]["session"] == 3).then_some(stream)
        },
    )
    .await;
    assert_eq!(stream["state"], "active");
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(second);
}

/// `cascade live create|list|show|reset-key`: an operator's view of live
/// streams, with the key printed once and replaced on reset.
#[tokio::test]
async fn operators_manage_live_streams_from_the_cli() {
    let db = fresh_db().await;
    let cli = |args: &[&str]| {
        let out = Command::new(crate::common::cascade_bin())
            .args(args)
            .env("CASCADE_DATABASE__URL", &db.url)
            .env("CASCADE_LOG__FILTER", "warn")
            .output()
            .expect("cascade");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, created) = cli(&[
        "live",
        "create",
        "--environment",
        "studio",
        "--reconnect-window",
        "30",
    ]);
    assert_eq!(code, Some(0), "{created}");
    let id = created.split_whitespace().nth(3).unwrap().to_owned();
    let key = created
        .lines()
        .find_map(|l| l.strip_prefix("stream key (shown once): "))
        .unwrap()
        .to_owned();
    assert!(key.starts_with("lsk_"), "{created}");
    let (code, list) = cli(&["live", "list"]);
    assert_eq!(code, Some(0));
    assert!(list.contains(&id) && list.contains("idle"), "{list}");
    let (code, shown) = cli(&["live", "show", &id]);
    assert_eq!(code, Some(0));
    let shown = json(&shown);
    assert_eq!(shown["reconnect_window"], 30);
    assert!(
        !shown.to_string().contains(&key),
        "the key is never shown again"
    );
    let (code, reset) = cli(&["live", "reset-key", &id]);
    assert_eq!(code, Some(0));
    let new_key = reset
        .lines()
        .find_map(|l| l.strip_prefix("stream key (shown once): "))
        .unwrap();
    assert_ne!(new_key, key);
    let client = db.pool.get().await.unwrap();
    use cascade_platform::live_streams;
    assert!(live_streams::find_by_key(&client, &key)
        .await
        .unwrap()
        .is_none());
    assert!(live_streams::find_by_key(&client, new_key)
        .await
        .unwrap()
        .is_some());
    let (code, _) = cli(&["live", "show", &uuid::Uuid::new_v4().to_string()]);
    assert_eq!(code, Some(1));
}

/// hls.js and dash.js in headless Chromium play the live stream through the
/// nginx CDN for 20 s each, at once, with no fatal error, switching from the
/// lowest rung to the highest; hls.js reports its latency behind the wall
/// clock of ingest. Meanwhile a drill drops the top rung from 10 s to 20 s
/// of media, as a ladder that falls behind does: the players ride it (the
/// HLS playlist lists the gaps, the MPD has a Period without the rung),
/// and the stream object says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_players_play_the_live_stream_through_the_cdn() {
    let _cores = crate::common::exclusive_cores().await;
    assert!(nginx_available(), "nginx is needed (Debian package nginx)");
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve_with(
        &db,
        "ingest,workers,origin",
        &root,
        &[
            (
                "CASCADE_LIVE__DEGRADATION_DRILL",
                "10s:top_rung_dropped,20s:none",
            ),
            ("CASCADE_LIVE__WINDOW", "60s"),
        ],
    );
    let key = create_key(&db, "live", "default");
    let (id, stream_key, playback) = create_stream(live.http, &key, r#"{"recording": false}"#);
    // 48 s of media: startup, then 20 s of play for each player.
    let mut publisher = publish_looped(
        &fixture,
        &format!("rtmp://{}/live/{stream_key}", live.rtmp),
        3,
        &[],
    );
    playlist_with(live.http, &playback, "720p", 3).await;
    let cdn = start_cdn(live.http).await;
    let players = ["hls", "dash"].map(|player| {
        let manifest = if player == "hls" {
            "master.m3u8"
        } else {
            "manifest.mpd"
        };
        let url = format!("http://{}/play/{playback}/{manifest}", cdn.addr);
        tokio::process::Command::new("node")
            .arg(repo_root().join("tests/players/play.mjs"))
            .args([
                "--player",
                player,
                "--url",
                &url,
                "--seconds",
                "20",
                "--live",
                "1",
                // dash.js switches rungs itself: locked on one by hand it
                // stalls at the drill's Period boundaries (play.mjs).
                "--abr",
                "1",
            ])
            .output()
    });
    let [hls, dash] = players;
    let drilled = async {
        eventually(
            "the drill dropped the top rung",
            Duration::from_secs(40),
            || async {
                let stream = get_stream(live.http, &key, &id);
                (stream["ingest"]["degraded"] == "top_rung_dropped").then_some(())
            },
        )
        .await
    };
    let (hls, dash, ()) = tokio::join!(hls, dash, drilled);
    let (_, _, metrics) = http(live.http, "GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("cascade_live_degradation_steps_total{step=\"top_rung_dropped\"} 1\n"),
        "{metrics}"
    );
    for (player, out) in [("hls", hls), ("dash", dash)] {
        let report = crate::common::player_report(player, out);
        assert!(
            report["fatal"].is_null(),
            "{player}: {report}\nnginx: {}",
            cdn.log()
        );
        assert!(
            report["played"].as_f64().unwrap_or(0.0) >= 20.0,
            "{player}: {report}"
        );
        let video_rungs = report["renditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.as_str() != Some("audio"))
            .count();
        assert!(video_rungs >= 2, "{player} switched rungs: {report}");
        println!("{player} live: {report}");
    }
    // Segments 6 to 10 (10 s to 20 s) of the top rung are gaps; it is back
    // from segment 11.
    let top = eventually("the top rung back", Duration::from_secs(30), || async {
        let (_, _, body) = http(
            live.http,
            "GET",
            &format!("/play/{playback}/720p/index.m3u8"),
            &[],
            b"",
        );
        body.contains("/11.m4s").then_some(body)
    })
    .await;
    let gaps: Vec<&str> = top
        .lines()
        .skip_while(|line| *line != "#EXT-X-GAP")
        .filter(|line| line.ends_with(".m4s"))
        .take(6)
        .collect();
    assert_eq!(top.matches("#EXT-X-GAP").count(), 5, "{top}");
    assert_eq!(
        gaps,
        (6..=11)
            .map(|n| format!("../s1/720p/{n}.m4s"))
            .collect::<Vec<_>>(),
        "{top}"
    );
    // dash.js saw the rung leave and come back at Period boundaries.
    let (_, _, mpd) = http(
        live.http,
        "GET",
        &format!("/play/{playback}/manifest.mpd"),
        &[],
        b"",
    );
    let period = |id: &str| {
        mpd.split(&format!("<Period id=\"{id}\""))
            .nth(1)
            .and_then(|rest| rest.split("</Period>").next())
            .map(str::to_owned)
    };
    // While dropped, the rung's Representation stands in with the 480p files.
    let dropped = period("1-6").unwrap_or_else(|| panic!("{mpd}"));
    let stand_in = dropped
        .split("<Representation id=\"720p\"")
        .nth(1)
        .unwrap_or_else(|| panic!("{mpd}"));
    assert!(stand_in.contains("media=\"480p/$Number$.m4s\""), "{mpd}");
    // Back to the full ladder: no stream counts as degraded.
    let (_, _, metrics) = http(live.http, "GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("cascade_live_degraded_streams 0\n"),
        "{metrics}"
    );
    let back = period("1-11").unwrap_or_else(|| panic!("{mpd}"));
    assert!(
        back.contains("<Representation id=\"720p\"") && !back.contains("480p/$Number$"),
        "{mpd}"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(cdn);
    drop(live);
}

/// A signed live stream (low latency, so its playlists come from the
/// relay) plays only with a token minted for it: manifests, segments and
/// parts without one are refused, and the playlists served with one carry
/// it on every URI they name (segments, init, parts, the preload hint,
/// rendition reports), blocking reloads included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_live_streams_play_with_a_token_only() {
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve(&db, "ingest,workers,origin", &root);
    let key = create_key(&db, "live", "default");
    let (id, stream_key, playback) = create_stream(
        live.http,
        &key,
        r#"{"playback_policy": "signed", "recording": false, "latency_mode": "low"}"#,
    );
    let auth = format!("Bearer {key}");
    let (status, _, body) = http(
        live.http,
        "POST",
        &format!("/v1/live_streams/{id}/playback_tokens"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"ttl_seconds": 600}"#,
    );
    assert_eq!(status, 201, "{body}");
    let token = json(&body)["token"].as_str().unwrap().to_owned();
    let mut publisher = publish(
        &fixture,
        &format!("rtmp://{}/live/{stream_key}", live.rtmp),
        &[],
    );
    let media = eventually("the signed playlist", Duration::from_secs(30), || async {
        let (status, _, body) = http(
            live.http,
            "GET",
            &format!("/play/{playback}/720p/index.m3u8?token={token}"),
            &[],
            b"",
        );
        (status == 200 && body.contains("#EXTINF") && body.contains("#EXT-X-PART:")).then_some(body)
    })
    .await;
    for uri in media
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .chain(
            media
                .split("URI=\"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap()),
        )
    {
        assert!(
            uri.ends_with(&format!("?token={token}")),
            "{uri} in {media}"
        );
    }
    assert!(media.contains("#EXT-X-PRELOAD-HINT") && media.contains("#EXT-X-RENDITION-REPORT"));
    // A blocking reload keeps the token, and so does the part it names.
    let hint = media
        .split("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let (status, _, bytes) = http_bytes(
        live.http,
        "GET",
        &format!("/play/{playback}/{}", hint.trim_start_matches("../")),
        &[],
        b"",
    );
    assert_eq!((status, &bytes[4..8]), (200, &b"moof"[..]), "{hint}");
    let (status, _, _) = http(
        live.http,
        "GET",
        &format!(
            "/play/{playback}/{}",
            hint.trim_start_matches("../").split('?').next().unwrap()
        ),
        &[],
        b"",
    );
    assert_eq!(status, 403, "a part without the token");
    let msn = media.lines().filter(|l| l.starts_with("#EXTINF")).count();
    let (status, _, blocked) = http(
        live.http,
        "GET",
        &format!("/play/{playback}/720p/index.m3u8?_HLS_msn={msn}&token={token}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{blocked}");
    assert!(
        blocked.contains(&format!(".m4s?token={token}")),
        "{blocked}"
    );
    let segment = media
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(".m4s"))
        .unwrap();
    assert!(segment.ends_with(&format!("?token={token}")), "{media}");
    assert!(
        media.contains(&format!("init.mp4?token={token}")),
        "{media}"
    );
    let path = format!("/play/{playback}/{}", segment.trim_start_matches("../"));
    let (status, headers, _) = http_bytes(live.http, "GET", &path, &[], b"");
    assert_eq!(status, 200, "{path}");
    assert!(header(&headers, "cache-control").is_some_and(|c| c.starts_with("private")));
    let unsigned = path.split('?').next().unwrap();
    let (status, _, body) = http(live.http, "GET", unsigned, &[], b"");
    assert_eq!(
        (status, json(&body)["code"].as_str()),
        (403, Some("token_required"))
    );
    let (status, _, body) = http(
        live.http,
        "GET",
        &format!("/play/{playback}/master.m3u8?token=live.1.AAAA"),
        &[],
        b"",
    );
    assert_eq!(status, 403, "{body}");
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(live);
}

/// A ladder that cannot keep up (x264's slowest preset on this machine)
/// degrades in steps instead of falling ever further behind, says so on the
/// stream object, and keeps publishing segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_that_falls_behind_degrades_visibly() {
    let _cores = crate::common::exclusive_cores().await;
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve_with(
        &db,
        "ingest,workers,origin",
        &root,
        &[("CASCADE_LIVE__PRESET", "veryslow")],
    );
    let key = create_key(&db, "live", "default");
    let (id, stream_key, playback) = create_stream(live.http, &key, r#"{"recording": false}"#);
    let mut publisher = publish(
        &fixture,
        &format!("rtmp://{}/live/{stream_key}", live.rtmp),
        &[],
    );
    let stream = eventually("the ladder degraded", Duration::from_secs(20), || async {
        let stream = get_stream(live.http, &key, &id);
        let degraded = stream["ingest"]["degraded"]
            .as_str()
            .unwrap_or("none")
            .to_owned();
        (degraded != "none").then_some(stream)
    })
    .await;
    assert!(
        stream["ingest"]["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{stream}"
    );
    playlist_with(live.http, &playback, "720p", 1).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(live);
}

/// A rung dropped for part of a broadcast (a drill here) is left out of
/// its recording, which is made of the others' segments without a second
/// encode and plays to the end: a VOD rendition has no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rung_dropped_mid_broadcast_is_left_out_of_the_recording() {
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve_with(
        &db,
        "ingest,workers,origin",
        &root,
        &[(
            "CASCADE_LIVE__DEGRADATION_DRILL",
            "4s:top_rung_dropped,8s:none",
        )],
    );
    let key = create_key(&db, "live", "default");
    let (id, stream_key, _) = create_stream(live.http, &key, r#"{"reconnect_window": 1}"#);
    let mut publisher = publish(
        &fixture,
        &format!("rtmp://{}/live/{stream_key}", live.rtmp),
        &[],
    );
    assert!(exit_within(&mut publisher, Duration::from_secs(30)).success());
    let asset = recorded_asset(live.http, &key, &id).await;
    let mut names: Vec<&str> = asset["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["240p", "480p", "audio"], "{asset}");
    let duration = asset["duration_seconds"].as_f64().unwrap();
    assert!((duration - 12.0).abs() < 1.0, "{asset}");
    // The recording decodes to its end.
    let hls = asset["playback"]["hls"].as_str().unwrap().to_owned();
    let hls = hls.replacen(
        &hls[..hls.find("/play/").unwrap()],
        &format!("http://{}", live.http),
        1,
    );
    let read = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", &hls])
        .args(["-map", "0:v:0", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        read.status.success() && read.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    drop(live);
}

/// A recording is checked by the publish gate before it turns ready: one
/// whose copy was damaged (a failpoint cuts a segment in half) is refused,
/// the asset errored naming the check, nothing published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_recording_is_refused_by_the_publish_gate() {
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve_with(
        &db,
        "ingest,workers,origin",
        &root,
        &[("FAILPOINT_RECORDING_CUT_SEGMENT", "1")],
    );
    let key = create_key(&db, "live", "default");
    let (id, stream_key, _) = create_stream(live.http, &key, r#"{"reconnect_window": 1}"#);
    let mut publisher = publish(
        &fixture,
        &format!("rtmp://{}/live/{stream_key}", live.rtmp),
        &["-t", "6", "-c", "copy"],
    );
    assert!(exit_within(&mut publisher, Duration::from_secs(30)).success());
    let asset = recorded_asset_in(live.http, &key, &id, "errored").await;
    assert_eq!(asset["error"]["code"], "qa_failed", "{asset}");
    let message = asset["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("not published") && message.contains("structure.segment_boxes"),
        "{message}"
    );
    assert!(asset["quality"].is_null(), "{asset}");
    assert!(
        asset["playback"].is_null() || asset["playback"]["hls"].is_null(),
        "{asset}"
    );
    drop(live);
}

/// A process takes at most `live.max_streams` publishers (the next is
/// refused with `capacity`, recorded on its stream), and inputs above
/// `live.max_width` x `live.max_height` are refused (`input_too_large`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_beyond_the_limits_are_refused() {
    let fixture = live_fixture();
    let db = fresh_db().await;
    let scratch = live_root();
    let root = scratch.path().to_path_buf();
    let live = serve_with(
        &db,
        "ingest,workers,origin",
        &root,
        &[
            ("CASCADE_LIVE__MAX_STREAMS", "1"),
            ("CASCADE_LIVE__MAX_WIDTH", "640"),
            ("CASCADE_LIVE__MAX_HEIGHT", "360"),
        ],
    );
    let key = create_key(&db, "live", "default");
    let (small, small_key, _) = create_stream(live.http, &key, r#"{"recording": false}"#);
    let (big, big_key, _) = create_stream(live.http, &key, r#"{"recording": false}"#);
    let rtmp = format!("rtmp://{}/live", live.rtmp);
    // 640x360 fits, and takes the one slot.
    let mut fits = publish(
        &fixture,
        &format!("{rtmp}/{small_key}"),
        &reencoded_at("scale=640:360"),
    );
    eventually(
        "the small stream connected",
        Duration::from_secs(20),
        || async { (get_stream(live.http, &key, &small)["connected"] == true).then_some(()) },
    )
    .await;
    let mut refused = publish(&fixture, &format!("{rtmp}/{big_key}"), &[]);
    assert!(!exit_within(&mut refused, Duration::from_secs(15)).success());
    let stream = get_stream(live.http, &key, &big);
    assert_eq!(stream["last_refusal"]["code"], "capacity", "{stream}");
    let _ = fits.kill();
    let _ = fits.wait();
    // The slot is free again: now the size decides.
    eventually("the slot freed", Duration::from_secs(20), || async {
        (get_stream(live.http, &key, &small)["connected"] == false).then_some(())
    })
    .await;
    let mut too_large = publish(&fixture, &format!("{rtmp}/{big_key}"), &[]);
    let _ = exit_within(&mut too_large, Duration::from_secs(30));
    let stream = eventually("the size refusal", Duration::from_secs(10), || async {
        let stream = get_stream(live.http, &key, &big);
        (stream["last_refusal"]["code"] == "input_too_large").then_some(stream)
    })
    .await;
    assert!(
        stream["last_refusal"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1280x720")),
        "{stream}"
    );
    drop(live);
}
