//! The whole pipeline over the fixture set: simple upload to the ingest API,
//! transcode by a worker, publish, playback through the origin, then
//! `cascade qa` over what the origin serves. Also: damaged outputs are caught
//! by `cascade qa`, naming the failing check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    cascade_bin, eventually, fixtures_dir, free_port, fresh_db, http, CascadeProcess, TestDb,
};
use crate::transcode::{fixture, verify};

const KEY: &str = "csk_test_qa_key";
const AUTH: (&str, &str) = ("Authorization", "Bearer csk_test_qa_key");

struct Stack {
    _process: CascadeProcess,
    addr: SocketAddr,
    root: PathBuf,
    /// Removed once the process (dropped first) has ended.
    _root: tempfile::TempDir,
}

/// `cascade serve` with every role, objects in a scratch directory.
fn start_stack(db: &TestDb) -> Stack {
    start_stack_with(db, &[])
}

fn start_stack_with(db: &TestDb, extra: &[(&str, &str)]) -> Stack {
    // Port 0: the process reports the port it got, and its public URL follows.
    let (listen, public) = ("127.0.0.1:0", "http://127.0.0.1:0");
    let scratch = tempfile::Builder::new()
        .prefix("cascade-qa-")
        .tempdir()
        .expect("a scratch directory");
    let root = scratch.path().to_path_buf();
    let root_text = root.display().to_string();
    let mut env = vec![
        ("CASCADE_HTTP__LISTEN", listen),
        ("CASCADE_LIVE__RTMP_LISTEN", "127.0.0.1:0"),
        ("CASCADE_INGEST__PUBLIC_URL", public),
        ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
        ("CASCADE_STORAGE__LOCAL_ROOT", root_text.as_str()),
        ("CASCADE_TRANSCODE__ENCODER", "libx264"),
        ("CASCADE_QUEUE__POLL_INTERVAL", "\"300ms\""),
    ];
    env.extend_from_slice(extra);
    let process = CascadeProcess::serve(&db.url, "ingest,workers,origin", &env);
    let addr = process.http.expect("address");
    Stack {
        _process: process,
        addr,
        root,
        _root: scratch,
    }
}

/// Creates an asset and uploads `file` as its source: (asset id, PUT status).
fn upload(stack: &Stack, file: &Path) -> (String, u16, String) {
    upload_with(stack, file, br#"{"title":"qa"}"#)
}

fn upload_with(stack: &Stack, file: &Path, asset: &[u8]) -> (String, u16, String) {
    let (status, _, body) = http(
        stack.addr,
        "POST",
        "/v1/assets",
        &[AUTH, ("Content-Type", "application/json")],
        asset,
    );
    assert_eq!(status, 201, "{body}");
    let asset: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = asset["id"].as_str().unwrap().to_owned();
    let source = std::fs::read(file).unwrap();
    let (status, _, body) = http(
        stack.addr,
        "PUT",
        &format!("/v1/assets/{id}/source"),
        &[AUTH],
        &source,
    );
    (id, status, body)
}

async fn wait_terminal(stack: &Stack, id: &str) -> serde_json::Value {
    eventually(
        "the asset to be ready or errored",
        Duration::from_secs(240),
        || async {
            let (_, _, body) = http(stack.addr, "GET", &format!("/v1/assets/{id}"), &[AUTH], b"");
            let asset: serde_json::Value = serde_json::from_str(&body).ok()?;
            matches!(asset["state"].as_str(), Some("ready" | "errored")).then_some(asset)
        },
    )
    .await
}

/// Runs `cascade qa`; returns (exit code, parsed JSON report, stdout).
pub fn run_qa(url: &str, reference: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    run_qa_with(url, reference, extra, &[])
}

/// [`run_qa`] with these environment variables (e.g. `CASCADE_CONFIG`).
pub fn run_qa_with(
    url: &str,
    reference: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    // Cascade's outputs are held to Cascade's ladder unless a test says
    // otherwise. GStreamer decodes every rung again: only the tests about
    // the second reader ask for it (the suite shares two cores with live
    // tests that must keep real time).
    let mut defaults: Vec<&str> = Vec::new();
    if !extra.contains(&"--ladder") {
        defaults.extend(["--ladder", "cascade"]);
    }
    if !extra.contains(&"--reader") {
        defaults.extend(["--reader", "ffmpeg"]);
    }
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let out = Command::new(cascade_bin())
        .arg("qa")
        .arg(url)
        .arg("--reference")
        .arg(reference)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .args(&defaults)
        .args(extra)
        .envs(env.iter().copied())
        .env("CASCADE_LOG__FILTER", "warn")
        .output()
        .expect("run cascade qa");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = match std::fs::read(&json) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => serde_json::Value::Null,
    };
    if code != 2 {
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains("<svg"), "the HTML report has plots");
    }
    (code, report, format!("{stdout}\n{stderr}"))
}

/// The `name` of every entry of a JSON array (renditions of a report or a
/// quality record).
fn names_of(entries: &serde_json::Value) -> Vec<&str> {
    entries
        .as_array()
        .map(|entries| entries.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default()
}

fn failed_checks(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["rendition"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn pipeline_and_qa(file: &str, name: &str, dash_too: bool) {
    let fx = fixture(name);
    let db = fresh_db().await;
    let stack = start_stack(&db);
    let source = fixtures_dir().join(file);
    let (id, status, body) = upload(&stack, &source);
    assert_eq!(status, 202, "{file}: {body}");
    let asset = wait_terminal(&stack, &id).await;
    assert_eq!(asset["state"], "ready", "{file}: {asset}");
    // The publish gate checked the version before it turned ready, and
    // keeps what it measured with the asset.
    let quality = &asset["quality"];
    assert_eq!(quality["gate"], "passed", "{file}: {quality}");
    assert_eq!(quality["version"], 1);
    assert_eq!(quality["checks_failed"], 0, "{file}: {quality}");
    assert!(
        quality["checks_passed"].as_u64().unwrap_or(0) > 10,
        "{quality}"
    );
    let gated = names_of(&quality["renditions"]);
    for rung in fx["expected_rungs"].as_array().unwrap() {
        assert!(gated.contains(&rung.as_str().unwrap()), "{file}: {quality}");
    }
    let duration = asset["duration_seconds"].as_f64().unwrap_or_default();
    let expected = fx["duration_s"].as_float().unwrap();
    assert!(
        (duration - expected).abs() < 0.15,
        "{file}: duration {duration} vs {expected}"
    );

    // Independent tools over the stored outputs.
    verify(&stack.root.join(format!("assets/{id}/v1")), &source, &fx);

    // `cascade qa` over what the origin serves, as a player fetches it.
    let mut urls = vec![asset["playback"]["hls"].as_str().unwrap().to_owned()];
    if dash_too {
        urls.push(asset["playback"]["dash"].as_str().unwrap().to_owned());
    }
    for url in urls {
        let (code, report, output) = run_qa(&url, &source, &["--quiet"]);
        assert_eq!(
            code,
            0,
            "{file} {url}: {:?}\n{output}",
            failed_checks(&report)
        );
        assert_eq!(report["result"], "pass");
        assert_eq!(report["schema_version"], 1);
        // Audio and video start as the source's do (packet times against
        // the source's, within a millisecond): the AAC priming is skipped
        // by the audio header's edit list, not presented 21 ms late.
        if let Some(offset) = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "timing.av_offset" && c["status"] == "pass")
        {
            let measured = offset["measured"].as_str().unwrap_or("");
            let against_source: f64 = measured
                .rsplit_once('(')
                .and_then(|(_, delta)| delta.trim_end_matches(" ms)").parse().ok())
                .unwrap_or_else(|| panic!("{file}: {offset}"));
            assert!(against_source.abs() < 1.0, "{file}: {offset}");
        }
        let names = names_of(&report["renditions"]);
        for rung in fx["expected_rungs"].as_array().unwrap() {
            assert!(
                names.contains(&rung.as_str().unwrap()),
                "{file}: {rung} in {names:?}"
            );
        }
        assert_eq!(
            names.contains(&"audio"),
            fx["has_audio"].as_bool().unwrap(),
            "{names:?}"
        );
        for r in report["renditions"].as_array().unwrap() {
            if r["kind"] == "video" {
                let q = &r["quality"];
                assert!(
                    q["frames_compared"].as_u64().unwrap() > 0,
                    "{file}: {}",
                    r["name"]
                );
                assert!(q["psnr_y_mean"].as_f64().unwrap() > 25.0, "{file}: {q}");
                // The combing check ran on every rung (idet judged frames).
                assert!(q["idet_frames"].as_u64().unwrap() > 0, "{file}: {q}");
                // The gate's frames, sampled across GOPs and decoded from
                // the nearest keyframes, say what every frame says, within
                // the allowance the gate gives sampling
                // (`SAMPLED_PSNR_ALLOWANCE_DB`, `SAMPLED_SSIM_ALLOWANCE`):
                // a frame paired with its neighbour would read far lower.
                let gated = quality["renditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|g| g["name"] == r["name"])
                    .unwrap_or_else(|| panic!("{file}: {} not gated: {quality}", r["name"]));
                assert!(
                    gated["frames_sampled"].as_u64().unwrap_or(0) >= 3,
                    "{file}: {gated}"
                );
                let (sampled, every) = (
                    gated["psnr_y_mean"].as_f64().unwrap(),
                    q["psnr_y_mean"].as_f64().unwrap(),
                );
                assert!(
                    (sampled - every).abs() <= 2.5,
                    "{file} {}: sampled PSNR-Y {sampled:.2} dB, every frame {every:.2} dB",
                    r["name"]
                );
                let (sampled, every) = (
                    gated["ssim_y_mean"].as_f64().unwrap(),
                    q["ssim_y_mean"].as_f64().unwrap(),
                );
                assert!(
                    (sampled - every).abs() <= 0.005,
                    "{file} {}: sampled SSIM-Y {sampled:.4}, every frame {every:.4}",
                    r["name"]
                );
            }
        }
    }
}

#[tokio::test]
async fn qa_by_asset_id_finds_the_url_and_the_stored_original_and_signs_for_signed_assets() {
    // `[playback] signing_keys` in the environment's compact form.
    const SIGNING_KEYS: &str = "qa:qa-test-signing-key";
    let db = fresh_db().await;
    let stack = start_stack_with(&db, &[("CASCADE_PLAYBACK__SIGNING_KEYS", SIGNING_KEYS)]);
    let source = fixtures_dir().join("tiny_320x180_stereo.mp4");
    let (id, status, body) = upload_with(&stack, &source, br#"{"playback_policy":"signed"}"#);
    assert_eq!(status, 202, "{body}");
    assert_eq!(wait_terminal(&stack, &id).await["state"], "ready");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(cascade_bin())
        .args([
            "qa",
            "--asset",
            &id,
            "--manifest",
            "dash",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .arg("--html")
        .arg(dir.path().join("report.html"))
        .env("CASCADE_DATABASE__URL", &db.url)
        .env("CASCADE_STORAGE__LOCAL_ROOT", &stack.root)
        .env("CASCADE_PLAYBACK__SIGNING_KEYS", SIGNING_KEYS)
        .env(
            "CASCADE_INGEST__PUBLIC_URL",
            format!("http://{}", stack.addr),
        )
        .env_remove("CASCADE_STORAGE__S3__ENDPOINT")
        .env_remove("CASCADE_STORAGE__S3__BUCKET")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}\n{}",
        failed_checks(&report),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["format"], "dash");
    // With --asset the outputs are held to Cascade's ladder by default.
    assert_eq!(check_status(&report, "structure.ladder", None), "pass");
    // Cascade's B-frame CMAF presents its first frame at 0 (version 1 trun,
    // negative composition offsets, no edit list: ISO/IEC 14496-12 and
    // CMAF). GStreamer reads it so; FFmpeg's demuxer shifts it a frame
    // late, which QA undoes. Both readers agree, through dashdemux2 too.
    let starts: Vec<&serde_json::Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "readers.start")
        .collect();
    assert!(
        !starts.is_empty()
            && starts
                .iter()
                .all(|c| c["status"] == "pass" && c["measured"] == "0.000 s (GStreamer)"),
        "{starts:?}"
    );
    assert_eq!(
        check_status(&report, "gstreamer.presentation", None),
        "pass"
    );
    let url = report["url"].as_str().unwrap();
    assert!(url.contains("/manifest.mpd?token="), "{url}");
    // The reference was the stored original: same frames as the fixture.
    assert_eq!(report["reference"]["frames"], 90);
    // Without a token the origin refuses it: the shortcut's signing was needed.
    let bare = url.split('?').next().unwrap();
    let (code, _, output) = run_qa(bare, &source, &["--quiet"]);
    assert_eq!(code, 2, "{output}");
}

macro_rules! pipeline_fixture {
    ($test:ident, $name:literal, $ext:literal, $dash:literal) => {
        #[tokio::test]
        async fn $test() {
            pipeline_and_qa(concat!($name, ".", $ext), $name, $dash).await
        }
    };
}

pipeline_fixture!(
    landscape_1080p30_with_stereo,
    "landscape_1080p30_stereo",
    "mp4",
    true
);
pipeline_fixture!(
    portrait_720x1280,
    "portrait_720x1280_30fps_stereo",
    "mp4",
    true
);
pipeline_fixture!(sixty_fps, "landscape_720p60_stereo", "mp4", false);
pipeline_fixture!(odd_size_between_rungs, "odd_853x479_mpeg4", "mkv", false);
pipeline_fixture!(
    rotated_90_comes_out_upright,
    "rotated90_1280x720_stereo",
    "mp4",
    false
);
pipeline_fixture!(audio_only, "audio_only_stereo", "m4a", true);
pipeline_fixture!(video_only, "video_only_720p30", "mp4", false);
pipeline_fixture!(surround_51_downmixed, "surround51_720p30", "mp4", false);
pipeline_fixture!(
    interlaced_top_field_first_comes_out_progressive,
    "interlaced_576i25_tff",
    "mp4",
    false
);
pipeline_fixture!(
    interlaced_bottom_field_first_comes_out_progressive,
    "interlaced_576i25_bff",
    "mp4",
    false
);
pipeline_fixture!(
    source_below_the_lowest_rung,
    "tiny_320x180_stereo",
    "mp4",
    false
);

#[tokio::test]
async fn broken_fixtures_uploaded_through_the_api_end_in_their_expected_error() {
    let db = fresh_db().await;
    let stack = start_stack(&db);
    for (name, ext) in [
        ("truncated_1080p", "mp4"),
        ("truncated_moov_at_end", "mp4"),
        ("random_bytes", "mp4"),
        ("empty", "mp4"),
        ("text_as_mp4", "mp4"),
    ] {
        let fx = fixture(name);
        let (id, status, body) = upload(&stack, &fixtures_dir().join(format!("{name}.{ext}")));
        // Refused at upload (probe) or by the worker: either way, errored
        // with the fixture's code and a message a creator can act on.
        assert!(matches!(status, 202 | 400 | 422), "{name}: {status} {body}");
        let asset = wait_terminal(&stack, &id).await;
        assert_eq!(asset["state"], "errored", "{name}: {asset}");
        assert_eq!(
            asset["error"]["code"]
                .as_str()
                .or(asset["error_code"].as_str()),
            fx["expected_error"].as_str(),
            "{name}: {asset}"
        );
        let message = asset["error"]["message"]
            .as_str()
            .or(asset["error_message"].as_str())
            .unwrap_or_default()
            .to_owned();
        let pattern = regex::RegexBuilder::new(fx["message_pattern"].as_str().unwrap())
            .case_insensitive(true)
            .build()
            .unwrap();
        assert!(pattern.is_match(&message), "{name}: {message:?}");
    }
}

/// A static file server on loopback over `dir` (python3's http.server).
struct StaticServer {
    child: Child,
    port: u16,
}

impl StaticServer {
    /// Binds port 0 and reads the port python reports ("Serving HTTP on
    /// 127.0.0.1 port N ..."): no port is picked and then rebound.
    async fn start(dir: &Path) -> Self {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let stdout = child.stdout.take().expect("stdout");
        let port = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
            let port = lines.next().and_then(|line| {
                let line = line.ok()?;
                let rest = line.split(" port ").nth(1)?;
                rest.split_whitespace().next()?.parse::<u16>().ok()
            });
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            port
        })
        .await
        .unwrap()
        .expect("python's http.server reports its port");
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces the `audio` rendition of the published copy in `dir` with the
/// ffmpeg CLI's AAC of the fixture (fMP4 HLS, the same file names), with
/// `extra` output options.
fn reencode_audio(dir: &Path, extra: &[&str]) {
    let audio = dir.join("audio");
    std::fs::remove_dir_all(&audio).unwrap();
    std::fs::create_dir_all(&audio).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(fixtures_dir().join("landscape_1080p30_stereo.mp4"))
        .args(["-vn", "-c:a", "aac", "-ac", "2", "-ar", "48000"])
        .args(extra)
        .args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"])
        .args([
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ])
        .args(["-start_number", "1", "-hls_segment_filename"])
        .arg(audio.join("%d.m4s"))
        .arg(audio.join("index.m3u8"))
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg audio re-encode");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn damaged_outputs_are_caught_with_the_failing_check_named() {
    let db = fresh_db().await;
    let stack = start_stack(&db);
    let source = fixtures_dir().join("landscape_1080p30_stereo.mp4");
    let (id, status, body) = upload(&stack, &source);
    assert_eq!(status, 202, "{body}");
    assert_eq!(wait_terminal(&stack, &id).await["state"], "ready");
    let published = stack.root.join(format!("assets/{id}/v1"));
    let work = tempfile::tempdir().unwrap();

    // The intact copy passes, so every failure below is the damage's doing.
    let intact = work.path().join("intact");
    copy_dir(&published, &intact);
    let server = StaticServer::start(&intact).await;
    let (code, report, output) = run_qa(
        &server.url("master.m3u8"),
        &source,
        &["--quiet", "--skip-quality"],
    );
    assert_eq!(code, 0, "{:?}\n{output}", failed_checks(&report));
    drop(server);

    // Audio that spends far less than its target (as a tone or speech
    // does) is no fault: the audio rendition re-encoded at 48 kbit/s by
    // the ffmpeg CLI (fMP4 HLS, same names) passes its bitrate check. The
    // master, still declaring the old audio in AVERAGE-BANDWIDTH, is
    // caught for that alone.
    let lean = work.path().join("lean_audio");
    copy_dir(&published, &lean);
    reencode_audio(&lean, &["-b:a", "48k"]);
    let server = StaticServer::start(&lean).await;
    let (code, report, output) = run_qa(
        &server.url("master.m3u8"),
        &source,
        &["--quiet", "--skip-quality"],
    );
    let failed = failed_checks(&report);
    assert!(
        code == 1
            && !failed.is_empty()
            && failed
                .iter()
                .all(|(check, _)| check == "structure.average_bandwidth"),
        "{failed:?}\n{output}"
    );
    let audio_average = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "bitrate.average" && c["rendition"] == "audio")
        .cloned()
        .unwrap_or_default();
    assert_eq!(audio_average["status"], "pass", "{audio_average}");
    drop(server);

    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str, &str); 6] = [
        (
            "audio made mono at 22.05 kHz from a stereo 48 kHz source",
            |dir| reencode_audio(dir, &["-ac", "1", "-ar", "22050"]),
            "audio.format",
            "audio",
        ),
        (
            "audio at a quarter of its amplitude (-12 dB)",
            |dir| reencode_audio(dir, &["-af", "volume=0.25"]),
            "audio.loudness",
            "audio",
        ),
        (
            "a truncated segment",
            |dir| {
                let segment = dir.join("1080p/2.m4s");
                let bytes = std::fs::read(&segment).unwrap();
                std::fs::write(&segment, &bytes[..bytes.len() / 2]).unwrap();
            },
            "structure.segment_boxes",
            "1080p",
        ),
        (
            "a removed segment",
            |dir| std::fs::remove_file(dir.join("720p/1.m4s")).unwrap(),
            "structure.segments_exist",
            "720p",
        ),
        (
            "a CODECS string changed",
            |dir| {
                let master = dir.join("master.m3u8");
                let text = std::fs::read_to_string(&master).unwrap();
                let line = text
                    .lines()
                    .find(|l| l.contains("RESOLUTION=854x480"))
                    .unwrap();
                let start = line.find("avc1.").unwrap();
                let changed = line.replace(&line[start..start + 11], "avc1.42e01e");
                std::fs::write(&master, text.replace(line, &changed)).unwrap();
            },
            "structure.codecs",
            "480p",
        ),
        (
            "a rung re-encoded with misaligned keyframes",
            |dir| {
                // Keyframes at 0 and 2.5 s instead of 0 and 4 s: two segments
                // like the other rungs, but cut at a different time.
                let rung = dir.join("480p");
                std::fs::remove_dir_all(&rung).unwrap();
                std::fs::create_dir_all(&rung).unwrap();
                let status = Command::new("ffmpeg")
                    .args(["-nostdin", "-v", "error", "-y", "-i"])
                    .arg(fixtures_dir().join("landscape_1080p30_stereo.mp4"))
                    .args([
                        "-an",
                        "-vf",
                        "scale=854:480",
                        "-c:v",
                        "libx264",
                        "-preset",
                        "veryfast",
                        "-g",
                        "300",
                        "-sc_threshold",
                        "0",
                        "-force_key_frames",
                        "expr:eq(n,0)+eq(n,75)",
                        "-f",
                        "hls",
                        "-hls_time",
                        "2",
                        "-hls_playlist_type",
                        "vod",
                        "-hls_segment_type",
                        "fmp4",
                        "-hls_fmp4_init_filename",
                        "init.mp4",
                        "-start_number",
                        "1",
                        "-hls_segment_filename",
                    ])
                    .arg(rung.join("%d.m4s"))
                    .arg(rung.join("index.m3u8"))
                    .status()
                    .unwrap();
                assert!(status.success(), "ffmpeg re-encode");
            },
            "timing.segment_alignment",
            "",
        ),
    ];
    for (what, damage, check, rendition) in cases {
        let dir = work.path().join(check);
        copy_dir(&published, &dir);
        damage(&dir);
        let server = StaticServer::start(&dir).await;
        let (code, report, output) = run_qa(
            &server.url("master.m3u8"),
            &source,
            &["--quiet", "--skip-quality"],
        );
        assert_eq!(code, 1, "{what}: qa must fail\n{output}");
        let failed = failed_checks(&report);
        assert!(
            failed.contains(&(check.to_owned(), rendition.to_owned())),
            "{what}: expected {check} [{rendition}] among {failed:?}"
        );
    }
}

/// An interlaced source published without deinterlacing (the operator
/// switch off) is caught by `cascade qa`'s combing check on the rung at the
/// source's size, with the check named.
#[tokio::test]
async fn combed_outputs_fail_the_combing_check() {
    let db = fresh_db().await;
    // Published by policy: the gate's sampled frames already see pictures
    // far from the (deinterlaced) source.
    let stack = start_stack_with(
        &db,
        &[
            ("CASCADE_TRANSCODE__DEINTERLACE", "false"),
            ("CASCADE_TRANSCODE__QA_GATE", "warn"),
        ],
    );
    let source = fixtures_dir().join("interlaced_576i25_tff.mp4");
    let (id, status, body) = upload(&stack, &source);
    assert_eq!(status, 202, "{body}");
    let asset = wait_terminal(&stack, &id).await;
    assert_eq!(asset["state"], "ready", "{asset}");
    let gate_failed: Vec<&str> = asset["quality"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert!(gate_failed.contains(&"quality.psnr_top"), "{gate_failed:?}");
    let url = asset["playback"]["hls"].as_str().unwrap();
    let (code, report, output) = run_qa(url, &source, &["--quiet"]);
    assert_eq!(code, 1, "{output}");
    let failed = failed_checks(&report);
    assert!(
        failed
            .iter()
            .any(|(check, rendition)| check == "quality.combing" && rendition == "576p"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn qa_exits_2_when_it_cannot_run() {
    let source = fixtures_dir().join("tiny_320x180_stereo.mp4");
    // Nothing listens on this port.
    let url = format!("http://127.0.0.1:{}/master.m3u8", free_port());
    let (code, _, output) = run_qa(&url, &source, &["--quiet"]);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("cannot reach"), "{output}");
    // An unreadable reference.
    let dir = tempfile::tempdir().unwrap();
    let server = StaticServer::start(dir.path()).await;
    let (code, _, output) = run_qa(
        &server.url("master.m3u8"),
        &dir.path().join("missing.mp4"),
        &["--quiet"],
    );
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("reference"), "{output}");
    let not_media = fixtures_dir().join("text_as_mp4.mp4");
    let (code, _, output) = run_qa(&server.url("master.m3u8"), &not_media, &["--quiet"]);
    assert_eq!(code, 2, "{output}");
}

/// Makes a presentation of `source` with the ffmpeg CLI in `dir`: two video
/// rungs (720p, 360p) on a 2 s keyframe grid and AAC audio, with `packaging`
/// (the muxer and its options) after the encode options.
fn ffmpeg_presentation(source: &Path, dir: &Path, streams: &[&str], packaging: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(source)
        .args([
            "-filter_complex",
            "[0:v]split=2[a][b];[a]scale=-2:720[v720];[b]scale=-2:360[v360]",
            "-map",
            "[v720]",
            "-map",
            "[v360]",
        ])
        .args(streams)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-sc_threshold",
            "0",
        ])
        .args(["-force_key_frames", "expr:gte(t,n_forced*2)"])
        // Capped CRF: ffmpeg declares BANDWIDTH as the caps plus 10%, and
        // the segments stay under them (targets as bit rates would be
        // overshot by the VBV's first fill and, in MPEG-TS, the packet
        // overhead: QA then rightly fails structure.bandwidth).
        .args([
            "-crf",
            "23",
            "-maxrate:v:0",
            "2500k",
            "-bufsize:v:0",
            "2500k",
        ])
        .args(["-maxrate:v:1", "600k", "-bufsize:v:1", "600k"])
        .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(packaging)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_status(report: &serde_json::Value, id: &str, rendition: Option<&str>) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id && rendition.is_none_or(|r| c["rendition"] == r))
        .map_or_else(
            || "absent".to_owned(),
            |c| c["status"].as_str().unwrap().to_owned(),
        )
}

/// QA engineers point `cascade qa` at presentations made elsewhere from the
/// same source: the ffmpeg CLI's HLS with MPEG-TS segments (audio muxed into
/// each variant), its HLS with fMP4 segments (audio in a group of its own)
/// and its DASH packager's MPD. With a URL the expected ladder defaults to
/// none, and every check passes; held to Cascade's ladder, the ladder check
/// names the difference.
#[tokio::test]
async fn qa_reads_presentations_made_elsewhere_in_ts_fmp4_and_dash() {
    let source = fixtures_dir().join("landscape_720p60_stereo.mp4");
    let work = tempfile::tempdir().unwrap();
    const HLS_VOD: &[&str] = &[
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-master_pl_name",
        "master.m3u8",
    ];
    // MPEG-TS, each variant with its own muxed audio.
    ffmpeg_presentation(
        &source,
        &work.path().join("ts"),
        &["-map", "0:a", "-map", "0:a"],
        &[
            HLS_VOD,
            &[
                "-var_stream_map",
                "v:0,a:0 v:1,a:1",
                "-hls_segment_filename",
                "v%v/%d.ts",
                "v%v/index.m3u8",
            ],
        ]
        .concat(),
    );
    // fMP4, audio as an alternative rendition shared by both variants.
    ffmpeg_presentation(
        &source,
        &work.path().join("fmp4"),
        &["-map", "0:a"],
        &[
            HLS_VOD,
            &[
                "-hls_segment_type",
                "fmp4",
                "-var_stream_map",
                "v:0,agroup:aud v:1,agroup:aud a:0,agroup:aud",
                "-hls_segment_filename",
                "v%v/%d.m4s",
                "v%v/index.m3u8",
            ],
        ]
        .concat(),
    );
    // DASH: SegmentTemplate with a SegmentTimeline, one AdaptationSet per kind.
    ffmpeg_presentation(
        &source,
        &work.path().join("dash"),
        &["-map", "0:a"],
        &[
            "-f",
            "dash",
            "-seg_duration",
            "2",
            "-use_template",
            "1",
            "-use_timeline",
            "1",
            "-adaptation_sets",
            "id=0,streams=v id=1,streams=a",
            "manifest.mpd",
        ],
    );
    let server = StaticServer::start(work.path()).await;

    for (manifest, container, video, audio) in [
        ("ts/master.m3u8", "MPEG-TS", "v0", "v0-audio"),
        ("fmp4/master.m3u8", "moof+mdat", "v0", "v2"),
        ("dash/manifest.mpd", "moof+mdat", "0", "2"),
    ] {
        let (code, report, output) = run_qa(
            &server.url(manifest),
            &source,
            &["--quiet", "--ladder", "none", "--reader", "both"],
        );
        assert_eq!(
            code,
            0,
            "{manifest}: {:?}\n{output}",
            failed_checks(&report)
        );
        let names = names_of(&report["renditions"]);
        let expected = match manifest {
            "ts/master.m3u8" => vec!["v0", "v0-audio", "v1", "v1-audio"],
            "fmp4/master.m3u8" => vec!["v0", "v1", "v2"],
            _ => vec!["0", "1", "2"],
        };
        assert_eq!(names, expected, "{manifest}: each rendition read once");
        let boxes = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "structure.segment_boxes" && c["rendition"] == video)
            .cloned()
            .unwrap_or_default();
        assert!(
            boxes["message"].as_str().unwrap_or("").contains(container),
            "{manifest}: {boxes}"
        );
        for (check, rendition, status) in [
            ("structure.ladder", None, "skip"),
            ("timing.frame_count", Some(video), "pass"),
            ("timing.segment_alignment", None, "pass"),
            ("quality.psnr_top", Some(video), "pass"),
            ("audio.loudness", Some(audio), "pass"),
            ("timing.av_offset", None, "pass"),
            ("structure.codecs", Some(video), "pass"),
        ] {
            assert_eq!(
                check_status(&report, check, rendition),
                status,
                "{manifest}: {check}"
            );
        }
        // The second reader, GStreamer, decodes every rendition and plays
        // the presentation with its own HLS or DASH demuxer; the two
        // readers agree on frames and audio duration.
        for rendition in &names {
            assert_eq!(
                check_status(&report, "gstreamer.decodes", Some(rendition)),
                "pass"
            );
        }
        assert_eq!(check_status(&report, "readers.frames", Some(video)), "pass");
        assert_eq!(
            check_status(&report, "readers.duration", Some(audio)),
            "pass"
        );
        assert_eq!(
            check_status(&report, "gstreamer.presentation", None),
            "pass",
            "{manifest}"
        );
    }

    // GStreamer alone: what needs no FFmpeg reading, and what GStreamer decodes.
    let (code, report, output) = run_qa(
        &server.url("fmp4/master.m3u8"),
        &source,
        &["--quiet", "--ladder", "none", "--reader", "gstreamer"],
    );
    assert_eq!(code, 0, "{:?}\n{output}", failed_checks(&report));
    // Checks of FFmpeg's packet reading are skipped, or not made.
    for (check, status) in [
        ("gstreamer.decodes", "pass"),
        ("structure.init_segment", "skip"),
        ("timing.frame_count", "absent"),
        ("structure.bandwidth", "pass"),
        ("readers.frames", "absent"),
    ] {
        assert_eq!(check_status(&report, check, Some("v0")), status, "{check}");
    }
    // FFmpeg alone: GStreamer is not asked.
    let (code, report, output) = run_qa(
        &server.url("fmp4/master.m3u8"),
        &source,
        &[
            "--quiet",
            "--skip-quality",
            "--ladder",
            "none",
            "--reader",
            "ffmpeg",
        ],
    );
    assert_eq!(code, 0, "{:?}\n{output}", failed_checks(&report));
    assert_eq!(check_status(&report, "gstreamer.decodes", None), "skip");

    // A cut MPEG-TS segment is named for what it is.
    let segment = work.path().join("ts/v1/1.ts");
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 100]).unwrap();
    let (code, report, output) = run_qa(
        &server.url("ts/master.m3u8"),
        &source,
        &["--quiet", "--skip-quality", "--ladder", "none"],
    );
    let boxes = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "structure.segment_boxes" && c["rendition"] == "v1")
        .cloned()
        .unwrap_or_default();
    assert!(
        code == 1
            && boxes["status"] == "fail"
            && boxes["message"]
                .as_str()
                .unwrap_or("")
                .contains("truncated"),
        "{boxes}\n{output}"
    );

    // Held to Cascade's ladder (720p, 480p, 360p ... for 1280x720), the
    // two-rung presentation fails that check and that check alone.
    let (code, report, output) = run_qa(
        &server.url("ts/master.m3u8"),
        &source,
        &["--quiet", "--skip-quality", "--ladder", "cascade"],
    );
    let failed = failed_checks(&report);
    assert!(
        code == 1 && failed.iter().any(|(id, _)| id == "structure.ladder"),
        "{failed:?}\n{output}"
    );
}

/// The publish gate (`transcode.qa_gate`): a version whose stored outputs
/// fail `cascade qa`'s checks is not published under `enforce` (the asset
/// turns errored naming the failed check), and is published with the
/// failure recorded under `warn`. The damage: a failpoint cuts one media
/// segment in half on its way out of the transcode child.
/// An encoder told to throw quality away (x264 at CRF 51) makes a
/// structurally perfect version whose pictures are far from the source's:
/// the gate's sampled frames catch it before it is published.
#[tokio::test]
async fn the_publish_gate_refuses_pictures_far_from_the_source() {
    let source = fixtures_dir().join("landscape_1080p30_stereo.mp4");
    let db = fresh_db().await;
    let stack = start_stack_with(&db, &[("CASCADE_TRANSCODE__CRF", "51")]);
    let (id, status, body) = upload(&stack, &source);
    assert_eq!(status, 202, "{body}");
    let asset = wait_terminal(&stack, &id).await;
    assert_eq!(asset["state"], "errored", "{asset}");
    assert_eq!(asset["error"]["code"], "qa_failed", "{asset}");
    let message = asset["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("quality.psnr_top [1080p]: top rung PSNR-Y over"),
        "{message}"
    );
    // Nothing else was wrong with it.
    for check in ["structure.", "timing.", "bitrate."] {
        assert!(!message.contains(check), "{message}");
    }
}

/// A rung over its cap is encoded again, once, with corrected rates. A
/// failpoint makes the 720p encoder spend twice the rate it is asked for,
/// in every take, as an encoder whose rate control overshoots would (CRF
/// 10: content that wants more bits than any cap). The gate finds 720p's
/// average over its cap, takes the version again as version 2 with only
/// that rung's rate scaled by the measured overshoot, and the asset turns
/// ready at version 2 with every rung under its cap; its `quality` names
/// what failed and what changed. The source moved with the asset.
#[tokio::test]
async fn a_rung_over_its_cap_is_encoded_again_once_with_corrected_rates() {
    let source = fixtures_dir().join("landscape_1080p30_stereo.mp4");
    let db = fresh_db().await;
    let stack = start_stack_with(
        &db,
        &[
            ("FAILPOINT_TRANSCODE_OVERSPEND_RUNG", "720p"),
            ("CASCADE_TRANSCODE__CRF", "10"),
        ],
    );
    let (id, status, body) = upload(&stack, &source);
    assert_eq!(status, 202, "{body}");
    let asset = wait_terminal(&stack, &id).await;
    assert_eq!(asset["state"], "ready", "{asset}");
    let quality = &asset["quality"];
    assert_eq!(quality["gate"], "passed", "{quality}");
    assert_eq!(quality["version"], 2, "{quality}");
    let corrected = &quality["corrected"];
    assert_eq!(corrected["failed_version"], 1, "{quality}");
    let scales = corrected["rate_scale"].as_object().unwrap();
    assert_eq!(
        scales.keys().collect::<Vec<_>>(),
        ["720p"],
        "only the rung over its cap is corrected: {quality}"
    );
    let scale = scales["720p"].as_f64().unwrap();
    assert!(scale > 0.25 && scale < 0.6, "about 0.9 / 1.9x: {quality}");
    let failed: Vec<&str> = corrected["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with("bitrate.average [720p]")),
        "{failed:?}"
    );
    assert!(
        failed.iter().all(|f| f.contains("[720p]")),
        "only 720p failed the first take: {failed:?}"
    );
    for rendition in quality["renditions"].as_array().unwrap() {
        if rendition["kind"] != "video" {
            continue;
        }
        let (average, target) = (
            rendition["average_bitrate"].as_u64().unwrap(),
            rendition["target_bitrate"].as_u64().unwrap(),
        );
        assert!(average <= target, "{rendition}");
    }
    // The source is version 2's; the segments version 1 served as it grew
    // stay where they were (versioned URLs, cached as immutable).
    let stored = |key: &str| stack.root.join(format!("assets/{id}/{key}")).exists();
    assert!(stored("v2/source") && !stored("v1/source"), "{id}");
    assert!(stored("v1/720p/init.mp4") && stored("v2/720p/init.mp4"));
    // Players get version 2: what the playback URL serves passes `cascade
    // qa`'s caps against the ladder (version 1's 720p would not).
    let url = asset["playback"]["hls"].as_str().unwrap();
    let (code, report, output) = run_qa(url, &source, &["--quiet", "--skip-quality"]);
    assert_eq!(code, 0, "{:?}\n{output}", failed_checks(&report));
}

#[tokio::test]
async fn the_publish_gate_refuses_a_damaged_version_or_records_it_by_policy() {
    let source = fixtures_dir().join("tiny_320x180_stereo.mp4");
    let length = std::fs::metadata(&source).unwrap().len().to_string();
    for policy in ["enforce", "warn"] {
        let db = fresh_db().await;
        let stack = start_stack_with(
            &db,
            &[
                ("FAILPOINT_TRANSCODE_CUT_SEGMENT_SOURCE_LENGTH", &length),
                ("CASCADE_TRANSCODE__QA_GATE", policy),
            ],
        );
        let (id, status, body) = upload(&stack, &source);
        assert_eq!(status, 202, "{body}");
        let asset = wait_terminal(&stack, &id).await;
        if policy == "enforce" {
            assert_eq!(asset["state"], "errored", "{asset}");
            assert_eq!(asset["error"]["code"], "qa_failed", "{asset}");
            let message = asset["error"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains("not published") && message.contains("structure.segment_boxes"),
                "{message}"
            );
            assert!(asset["quality"].is_null(), "{asset}");
        } else {
            assert_eq!(asset["state"], "ready", "{asset}");
            let quality = &asset["quality"];
            assert_eq!(quality["gate"], "warned", "{quality}");
            let failed: Vec<&str> = quality["failures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["check"].as_str().unwrap())
                .collect();
            assert!(failed.contains(&"structure.segment_boxes"), "{quality}");
        }
        // Operators see it in the workers' metrics (docs/operations.md).
        let (status, _, metrics) = http(stack.addr, "GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
        };
        assert_eq!(
            value(r#"cascade_transcode_quality_checks_total{result="failed"}"#),
            1.0,
            "{policy}"
        );
        assert_eq!(
            value("cascade_transcode_quality_check_duration_seconds_count"),
            1.0,
            "{policy}"
        );
    }
}
