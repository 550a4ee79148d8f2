//! Chunked transcoding (workers/src/transcode/chunked.rs): a long source
//! split on the segment grid into chunks that separate worker processes
//! transcode, joined into one presentation. Compared with the one-job
//! transcode of the same source frame for frame; a worker killed holding a
//! chunk and a chunk that crashes every attempt.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cascade_schemas::keys::{DASH_MANIFEST, HLS_MASTER, MEDIA_PLAYLIST};
use cascade_schemas::AssetId;

use crate::common::{
    cascade_bin, count, eventually, exclusive_cores, fresh_db, http, CascadeProcess, TestDb,
};
use crate::qa::run_qa;

const KEY: &str = "csk_test_chunks_key";
const AUTH: (&str, &str) = ("Authorization", "Bearer csk_test_chunks_key");

/// Sources of a minute or more split into 32 s chunks (30 s rounded up to
/// whole 4 s segments), one job at a time per worker process.
const CHUNKED: &[(&str, &str)] = &[
    ("CASCADE_TRANSCODE__CHUNKED_FROM", "\"60s\""),
    ("CASCADE_TRANSCODE__CHUNK_DURATION", "\"30s\""),
    ("CASCADE_QUEUE__CONCURRENCY", "1"),
];

/// Lease timings short enough to see a killed worker's chunk taken over.
const FAST_QUEUE: &[(&str, &str)] = &[
    ("CASCADE_QUEUE__LEASE", "\"2s\""),
    ("CASCADE_QUEUE__HEARTBEAT", "\"500ms\""),
    ("CASCADE_QUEUE__REAP_INTERVAL", "\"300ms\""),
    ("CASCADE_QUEUE__RETRY_BASE", "\"200ms\""),
    ("CASCADE_QUEUE__RETRY_MAX", "\"1s\""),
];

/// Processes sharing one database and one object directory.
struct Stack {
    db: TestDb,
    root: PathBuf,
    api: CascadeProcess,
    addr: SocketAddr,
}

impl Stack {
    async fn start() -> Self {
        let db = fresh_db().await;
        let root =
            std::env::temp_dir().join(format!("cascade-chunks-{}", uuid::Uuid::new_v4().simple()));
        let api = Self::process(&db, &root, "ingest,origin", &[]);
        let addr = api.http.expect("address");
        Self {
            db,
            root,
            api,
            addr,
        }
    }

    fn process(db: &TestDb, root: &Path, roles: &str, extra: &[(&str, &str)]) -> CascadeProcess {
        let root = root.display().to_string();
        let mut env = vec![
            ("CASCADE_INGEST__PUBLIC_URL", "http://127.0.0.1:0"),
            ("CASCADE_INGEST__BOOTSTRAP_KEY", KEY),
            ("CASCADE_STORAGE__LOCAL_ROOT", root.as_str()),
            ("CASCADE_TRANSCODE__ENCODER", "libx264"),
            ("CASCADE_QUEUE__POLL_INTERVAL", "\"300ms\""),
        ];
        env.extend_from_slice(extra);
        CascadeProcess::serve(&db.url, roles, &env)
    }

    fn worker(&self, extra: &[(&str, &str)]) -> CascadeProcess {
        Self::process(&self.db, &self.root, "workers", extra)
    }

    /// Creates an asset and uploads `file` as its source.
    fn upload(&self, file: &Path) -> String {
        let (status, _, body) = http(
            self.addr,
            "POST",
            "/v1/assets",
            &[AUTH, ("Content-Type", "application/json")],
            br#"{"title":"chunks"}"#,
        );
        assert_eq!(status, 201, "{body}");
        let asset: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = asset["id"].as_str().unwrap().to_owned();
        let source = std::fs::read(file).unwrap();
        let (status, _, body) = http(
            self.addr,
            "PUT",
            &format!("/v1/assets/{id}/source"),
            &[AUTH],
            &source,
        );
        assert!(status < 300, "{status}: {body}");
        id
    }

    async fn wait_terminal(&self, id: &str, limit: Duration) -> serde_json::Value {
        eventually("the asset to be ready or errored", limit, || async {
            let (_, _, body) = http(self.addr, "GET", &format!("/v1/assets/{id}"), &[AUTH], b"");
            let asset: serde_json::Value = serde_json::from_str(&body).ok()?;
            matches!(asset["state"].as_str(), Some("ready" | "errored")).then_some(asset)
        })
        .await
    }

    /// `cascade assets show ID`, as an operator runs it.
    fn show(&self, id: &str) -> serde_json::Value {
        let out = Command::new(cascade_bin())
            .args(["assets", "show", id])
            .env("CASCADE_DATABASE__URL", &self.db.url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn version_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!("assets/{id}/v1"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.api.child.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A source of `seconds` with motion and a tone, its keyframes every 5 s
/// (off the output's 2 s grid: chunks decode from an earlier keyframe),
/// its audio at 44.1 kHz (resampled and encoded by the pipeline).
fn source(dir: &Path, seconds: u32, size: &str) -> PathBuf {
    source_with(dir, seconds, size, &[])
}

/// [`source`] with more ffmpeg output options (`video`: a filter).
fn source_with(dir: &Path, seconds: u32, size: &str, video: &[&str]) -> PathBuf {
    let path = dir.join(format!("source-{seconds}s-{size}-{}.mp4", video.len()));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30"))
        .args(["-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args(video)
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "150"])
        .args([
            "-keyint_min",
            "150",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "96k", "-ac", "2"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// `(pts_time, keyframe)` of every packet of the playlist's first stream.
fn packets(playlist: &Path) -> Vec<(String, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "0", "-show_entries"])
        .args(["packet=pts_time,flags", "-of", "csv=p=0"])
        .arg(playlist)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (pts, flags) = line.split_once(',').unwrap_or((line, ""));
            (pts.to_owned(), flags.starts_with('K'))
        })
        .collect()
}

/// Segments in the first `SegmentTimeline` of an MPD (`S` runs and their
/// repeats).
fn timeline_length(mpd: &str) -> usize {
    let Some(timeline) = mpd
        .split("<SegmentTimeline>")
        .nth(1)
        .and_then(|rest| rest.split("</SegmentTimeline>").next())
    else {
        return 0;
    };
    timeline
        .split("<S ")
        .skip(1)
        .map(|run| {
            run.split("r=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|r| r.parse::<usize>().ok())
                .unwrap_or(0)
                + 1
        })
        .sum()
}

/// Video frames in the source.
fn source_frames(source: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(source)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Each rendition directory's media playlist text, by rendition.
fn playlists(version: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(version).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(path.join(MEDIA_PLAYLIST)).unwrap();
            out.insert(name, text);
        }
    }
    out
}

fn psnr_by_rung(report: &serde_json::Value) -> BTreeMap<String, f64> {
    report["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "video")
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["quality"]["psnr_y_mean"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_long_source_in_chunks_on_two_workers_matches_the_one_job_transcode_frame_for_frame() {
    let _cores = exclusive_cores().await;
    let scratch = tempfile::tempdir().unwrap();
    let source = source(scratch.path(), 120, "640x360");
    let stack = Stack::start().await;

    // Two worker processes share the chunks.
    let first = stack.worker(CHUNKED);
    let second = stack.worker(CHUNKED);
    let chunked = stack.upload(&source);
    // Watch a rung's playlist and the MPD grow while the chunks are made.
    let watched = stack
        .version_dir(&chunked)
        .join("240p")
        .join(MEDIA_PLAYLIST);
    let watched_mpd = stack.version_dir(&chunked).join(DASH_MANIFEST);
    // Sampled at each poll of the asset (its state first: once it is
    // ready, that sample shows the final manifests).
    let seen: std::cell::RefCell<Vec<(usize, bool)>> = Default::default();
    // The most segments the MPD's timeline listed while dynamic.
    let dynamic_mpd_segments = std::cell::Cell::new(0);
    let asset = eventually(
        "the chunked asset to be ready or errored",
        Duration::from_secs(300),
        || async {
            let (_, _, body) = http(
                stack.addr,
                "GET",
                &format!("/v1/assets/{chunked}"),
                &[AUTH],
                b"",
            );
            let asset: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            if let Ok(text) = std::fs::read_to_string(&watched) {
                let state = (
                    text.matches("#EXTINF").count(),
                    text.contains("#EXT-X-ENDLIST"),
                );
                let mut seen = seen.borrow_mut();
                if seen.last() != Some(&state) {
                    seen.push(state);
                }
            }
            if let Ok(mpd) = std::fs::read_to_string(&watched_mpd) {
                if mpd.contains(r#"type="dynamic""#) {
                    dynamic_mpd_segments.set(dynamic_mpd_segments.get().max(timeline_length(&mpd)));
                }
            }
            asset.filter(|a| matches!(a["state"].as_str(), Some("ready" | "errored")))
        },
    )
    .await;
    let (seen, dynamic_mpd_segments) = (seen.into_inner(), dynamic_mpd_segments.get());
    assert_eq!(asset["state"], "ready", "{asset}");
    assert_eq!(asset["quality"]["gate"], "passed", "{asset}");
    // It played while growing: the playlist only appended, and it listed
    // the second chunk's segments (19 segments end at 64 s) before the end.
    assert!(
        seen.windows(2).all(|w| w[1].0 >= w[0].0),
        "only appends: {seen:?}"
    );
    assert!(
        seen.iter().any(|(count, ended)| *count >= 19 && !ended),
        "grew past chunk 0 while chunks were made: {seen:?}"
    );
    assert_eq!(seen.last().map(|s| s.1), Some(true), "{seen:?}");
    assert!(
        dynamic_mpd_segments >= 19,
        "the dynamic MPD grew past chunk 0 too: {dynamic_mpd_segments} segments"
    );
    let shown = stack.show(&chunked);
    let chunks = shown["chunks"].as_array().expect("chunks shown").clone();
    let spans: Vec<(f64, Option<f64>)> = chunks
        .iter()
        .map(|c| {
            (
                c["start_seconds"].as_f64().unwrap(),
                c["end_seconds"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            (0.0, Some(32.0)),
            (32.0, Some(64.0)),
            (64.0, Some(96.0)),
            (96.0, None)
        ],
        "{shown}"
    );
    assert!(chunks.iter().all(|c| c["state"] == "done"), "{shown}");
    let workers: std::collections::BTreeSet<&str> = chunks
        .iter()
        .filter_map(|c| c["done_by"].as_str())
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "both worker processes did chunks: {shown}"
    );
    let chunk_jobs = count(
        &stack.db,
        &format!(
            "SELECT count(*) FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = '{chunked}'
             AND payload ? 'chunk' AND state = 'succeeded' AND attempts = 1"
        ),
    )
    .await;
    assert_eq!(chunk_jobs, 3, "one job per chunk after the first");
    drop((first, second));

    // The same source as one job.
    let single = stack.worker(&[("CASCADE_TRANSCODE__CHUNKED_FROM", "\"0s\"")]);
    let whole = stack.upload(&source);
    let asset = stack.wait_terminal(&whole, Duration::from_secs(300)).await;
    assert_eq!(asset["state"], "ready", "{asset}");
    assert!(stack.show(&whole).get("chunks").is_none());
    drop(single);

    // The same segments: numbers, durations, names.
    let (chunked_dir, whole_dir) = (stack.version_dir(&chunked), stack.version_dir(&whole));
    let (chunked_lists, whole_lists) = (playlists(&chunked_dir), playlists(&whole_dir));
    assert_eq!(
        chunked_lists.keys().collect::<Vec<_>>(),
        whole_lists.keys().collect::<Vec<_>>()
    );
    assert!(
        chunked_lists.len() >= 3,
        "two rungs and audio: {chunked_lists:?}"
    );
    for (name, text) in &chunked_lists {
        assert_eq!(text, &whole_lists[name], "{name}'s playlist");
    }
    // The same codec strings, sizes and frame rates.
    let master_lines = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join(HLS_MASTER))
            .unwrap()
            .lines()
            .map(|line| {
                line.split(',')
                    .filter(|attribute| !attribute.contains("BANDWIDTH="))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    };
    assert_eq!(master_lines(&chunked_dir), master_lines(&whole_dir));

    // Frame for frame: every rung has the source's frames at the same
    // times, keyframes at the same ones (the joins included), none doubled
    // or missing at a join.
    let frames = source_frames(&source);
    let mut video_rungs = 0;
    for name in chunked_lists.keys().filter(|name| *name != "audio") {
        video_rungs += 1;
        let got = packets(&chunked_dir.join(name).join(MEDIA_PLAYLIST));
        let want = packets(&whole_dir.join(name).join(MEDIA_PLAYLIST));
        assert_eq!(got.len(), frames, "{name}: the source's {frames} frames");
        assert_eq!(got, want, "{name}: frame times and keyframes");
        // FFmpeg reads B-frame CMAF a frame late (ARCHITECTURE.md, Timestamps).
        for join in [32.0, 64.0, 96.0] {
            assert!(
                got.iter().any(|(pts, key)| {
                    let pts: f64 = pts.parse().unwrap_or(-1.0);
                    *key && pts >= join - 1e-6 && pts < join + 0.07
                }),
                "{name}: a keyframe at the join at {join} s"
            );
        }
    }
    assert!(video_rungs >= 2);

    // The audio was encoded once, by chunk 0's job: the same bytes as the
    // one-job transcode's, and its packets follow each other without a
    // gap (1024 samples at 48 kHz) across the chunk joins.
    for entry in std::fs::read_dir(whole_dir.join("audio")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(chunked_dir.join("audio").join(&name)).unwrap(),
            "audio {name:?}"
        );
    }
    let audio = packets(&chunked_dir.join("audio").join(MEDIA_PLAYLIST));
    let times: Vec<f64> = audio.iter().map(|(pts, _)| pts.parse().unwrap()).collect();
    for pair in times.windows(2) {
        assert!(
            ((pair[1] - pair[0]) - 1024.0 / 48_000.0).abs() < 1e-4,
            "audio continues at {} -> {}",
            pair[0],
            pair[1]
        );
    }

    // The same picture quality, per rung, within 0.1 dB.
    let hls = |id: &str| {
        let (_, _, body) = http(stack.addr, "GET", &format!("/v1/assets/{id}"), &[AUTH], b"");
        let asset: serde_json::Value = serde_json::from_str(&body).unwrap();
        asset["playback"]["hls"].as_str().unwrap().to_owned()
    };
    let (code, chunked_report, output) = run_qa(&hls(&chunked), &source, &["--quiet"]);
    assert_eq!(code, 0, "{output}");
    let (code, whole_report, output) = run_qa(&hls(&whole), &source, &["--quiet"]);
    assert_eq!(code, 0, "{output}");
    let (chunked_psnr, whole_psnr) = (psnr_by_rung(&chunked_report), psnr_by_rung(&whole_report));
    assert_eq!(chunked_psnr.len(), video_rungs);
    for (rung, psnr) in &chunked_psnr {
        println!(
            "{rung}: PSNR-Y {psnr:.3} dB in chunks, {:.3} dB in one job",
            whole_psnr[rung]
        );
        assert!(
            (psnr - whole_psnr[rung]).abs() <= 0.1,
            "{rung}: {psnr:.3} dB in chunks, {:.3} dB in one job",
            whole_psnr[rung]
        );
    }
}

#[tokio::test]
async fn a_chunk_whose_worker_dies_is_redone_once_and_one_that_keeps_crashing_fails_the_asset() {
    let _cores = exclusive_cores().await;
    let scratch = tempfile::tempdir().unwrap();
    // Two chunks: [0, 32) and [32, 70).
    let source = source(scratch.path(), 70, "320x180");
    let stack = Stack::start().await;
    let env: Vec<(&str, &str)> = CHUNKED.iter().chain(FAST_QUEUE).copied().collect();

    // A worker SIGKILLed while it holds chunk 1: the chunk is redone by
    // the other worker once the lease runs out, and published once.
    let mut workers = vec![stack.worker(&env), stack.worker(&env)];
    let id = stack.upload(&source);
    let asset_id: AssetId = id.parse().unwrap();
    let owner: String = eventually(
        "a worker to hold chunk 1",
        Duration::from_secs(60),
        || async {
            let client = stack.db.pool.get().await.unwrap();
            let row = client
                .query_opt(
                    "SELECT lease_owner FROM jobs WHERE kind = 'transcode' AND state = 'running'
                     AND payload->>'asset_id' = $1 AND payload->>'chunk' = '1'",
                    &[&asset_id.to_string()],
                )
                .await
                .unwrap();
            row.and_then(|row| row.get::<_, Option<String>>(0))
        },
    )
    .await;
    let pid: u32 = owner.rsplit(':').next().unwrap().parse().unwrap();
    let holder = workers
        .iter()
        .position(|w| w.child.id() == pid)
        .expect("the holder is one of the test's workers");
    workers[holder].signal("KILL");
    drop(workers.remove(holder));
    let asset = stack.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(asset["state"], "ready", "{asset}");
    let client = stack.db.pool.get().await.unwrap();
    let chunk_job = client
        .query_one(
            "SELECT state, attempts FROM jobs WHERE kind = 'transcode'
             AND payload->>'asset_id' = $1 AND payload->>'chunk' = '1'",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(chunk_job.get::<_, String>(0), "succeeded");
    assert_eq!(
        chunk_job.get::<_, i32>(1),
        2,
        "lost with the killed worker, then redone"
    );
    let shown = stack.show(&id);
    let survivor = format!(":{}", workers[0].child.id());
    assert!(
        shown["chunks"][1]["done_by"]
            .as_str()
            .is_some_and(|by| by.ends_with(&survivor)),
        "the surviving worker's result: {shown}"
    );
    let ready_events = count(
        &stack.db,
        &format!(
            "SELECT count(*) FROM jobs WHERE kind = 'webhook' AND payload->>'type' = 'asset.ready'
             AND payload->'data'->>'asset_id' = '{id}'"
        ),
    )
    .await;
    assert_eq!(ready_events, 1, "published once");
    let (code, _, output) = run_qa(
        asset["playback"]["hls"].as_str().unwrap(),
        &source,
        &["--quiet"],
    );
    assert_eq!(code, 0, "{output}");
    drop(workers);

    // A chunk whose child crashes on every attempt fails the asset with
    // the reason; the other chunk's work is not published.
    let crashing: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("FAILPOINT_TRANSCODE_CRASH_CHUNK_FROM", "32")])
        .collect();
    let _crashing = stack.worker(&crashing);
    let id = stack.upload(&source);
    let asset = stack.wait_terminal(&id, Duration::from_secs(120)).await;
    assert_eq!(asset["state"], "errored", "{asset}");
    assert_eq!(asset["error"]["code"], "source_quarantined", "{asset}");
    let message = asset["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("crashed the decoder on each of its"),
        "{message}"
    );
    let published = count(
        &stack.db,
        &format!("SELECT count(*) FROM renditions WHERE asset_id = '{id}'"),
    )
    .await;
    assert_eq!(published, 0, "nothing of the errored asset is published");
}

#[tokio::test]
async fn a_source_whose_timestamps_break_the_grid_is_transcoded_as_one_job() {
    let _cores = exclusive_cores().await;
    let scratch = tempfile::tempdir().unwrap();
    // Its video jumps 8 s ahead at 20 s: one segment spans the hole, so
    // chunk 0 ends two numbers short of where chunk 1 (from 32 s) starts.
    // Without B-frames and growing playlists: with B-frames the hole's
    // decode-time gap lands a fragment late, and a 12 s segment does not
    // fit a growing playlist's fixed target duration; the publish gate
    // refuses both, chunked or not (ARCHITECTURE.md, left).
    let source = source_with(
        scratch.path(),
        70,
        "320x180",
        &[
            "-vf",
            "setpts='if(gte(T,20),PTS+8/TB,PTS)'",
            "-vsync",
            "vfr",
        ],
    );
    let stack = Stack::start().await;
    let env: Vec<(&str, &str)> = CHUNKED
        .iter()
        .copied()
        .chain([
            ("CASCADE_TRANSCODE__B_FRAMES", "0"),
            ("CASCADE_TRANSCODE__PROGRESSIVE_PUBLISH", "false"),
        ])
        .collect();
    let _worker = stack.worker(&env);
    let id = stack.upload(&source);
    let asset = stack.wait_terminal(&id, Duration::from_secs(180)).await;
    assert_eq!(asset["state"], "ready", "{asset}");
    let shown = stack.show(&id);
    assert_eq!(
        shown["chunks"].as_array().map(Vec::len),
        Some(2),
        "it was planned in chunks: {shown}"
    );
    // Published as one job's: every rendition numbered without a hole, as
    // DASH's $Number$ needs, and the MPD static.
    let version = stack.version_dir(&id);
    for (name, text) in playlists(&version) {
        let numbers: Vec<u64> = text
            .lines()
            .filter_map(|line| line.strip_suffix(".m4s"))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(numbers.len() > 10, "{name}: {text}");
        assert_eq!(
            numbers,
            (1..=numbers.len() as u64).collect::<Vec<_>>(),
            "{name}: numbered without a hole"
        );
    }
    let mpd = std::fs::read_to_string(version.join("manifest.mpd")).unwrap();
    assert!(mpd.contains(r#"type="static""#), "{mpd}");
    let attempts = count(
        &stack.db,
        &format!(
            "SELECT max(attempts)::bigint FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = '{id}'"
        ),
    )
    .await;
    assert_eq!(
        attempts, 1,
        "the fallback ran in the job that found the chunks done"
    );
}

/// The fencing rule of chunk results, against Postgres: only the job's
/// current claim records a chunk, once; a stale claim (a worker that
/// stalled past its lease while another took the chunk over) records
/// nothing.
#[tokio::test]
async fn a_chunk_result_is_recorded_only_under_the_current_lease_and_once() {
    use cascade_platform::chunks::{self, Recorded};
    use cascade_platform::queue::Lease;
    use cascade_schemas::chunks::plan;

    let db = fresh_db().await;
    let (asset, _) = crate::common::insert_asset(&db, "public").await;
    let planned = plan(200.0, 60.0, 4.0, 2.0, 120.0);
    // A corrective take's settings go with every chunk of it.
    let corrections = cascade_schemas::jobs::Corrections {
        failed_version: 0,
        rate_scale: [("720p".to_owned(), 0.5)].into_iter().collect(),
        failed_checks: vec!["bitrate.average [720p]".to_owned()],
    };
    let job = cascade_schemas::jobs::TranscodeJob {
        corrections: Some(corrections.clone()),
        ..cascade_schemas::jobs::TranscodeJob::version(asset, 1)
    };
    let rows = chunks::plan(&db.pool, &job, &planned, 3).await.unwrap();
    assert_eq!(rows.len(), 3);
    // Planning again keeps the plan and queues nothing more.
    let again = chunks::plan(&db.pool, &job, &planned[..1], 3)
        .await
        .unwrap();
    assert_eq!(again, rows);
    let queue = cascade_platform::Queue::new(db.pool.clone(), db.config.queue.clone());
    let claimed = queue
        .claim("test-worker", &["transcode".to_owned()], 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "a job per chunk after the first");
    for chunk in &claimed {
        let payload: cascade_schemas::jobs::TranscodeJob =
            serde_json::from_value(chunk.payload.clone()).unwrap();
        assert_eq!(payload.corrections.as_ref(), Some(&corrections));
    }
    let job = claimed
        .iter()
        .find(|job| job.payload["chunk"] == 1)
        .expect("chunk 1's job");
    let result = serde_json::json!({ "renditions": [], "rung_busy": [] });
    let record = |lease: Lease| {
        let (pool, result) = (db.pool.clone(), result.clone());
        async move {
            let mut client = pool.get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            chunks::lock_version(&tx, asset, 1).await.unwrap();
            let recorded = chunks::record_done(&tx, asset, 1, 1, &lease, &result)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            recorded
        }
    };
    let stale = Lease {
        job_id: job.lease.job_id,
        lease_id: uuid::Uuid::new_v4(),
    };
    assert_eq!(record(stale).await, Recorded::LeaseLost);
    assert_eq!(record(job.lease).await, Recorded::Now);
    assert_eq!(record(job.lease).await, Recorded::Already);
    let client = db.pool.get().await.unwrap();
    let rows = chunks::list(&client, asset, 1).await.unwrap();
    assert!(rows[1].done && !rows[0].done && !rows[2].done);
    assert_eq!(rows[1].done_by.as_deref(), Some("test-worker"));
    assert_eq!(rows[1].done_seconds, 60.0);
}
