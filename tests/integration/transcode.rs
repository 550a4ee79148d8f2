//! The transcode job over the fixture set (fixtures/fixtures.toml), checked
//! with independent tools: FFmpeg's HLS and DASH demuxers and ffprobe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cascade_platform::config::{EncoderChoice, StorageConfig, TranscodeConfig};
use cascade_platform::queue::JobNotifier;
use cascade_platform::{assets, db, ObjectStore, Queue};
use cascade_schemas::{job_kind, AssetId, AssetState};
use cascade_workers::transcode::{TranscodeHandler, VideoEncoder};
use cascade_workers::{HandlerRegistry, Runner};
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, fixtures_dir, fresh_db, repo_root, CascadeProcess, TestDb};

pub(crate) fn fixture(name: &str) -> toml::Table {
    let text = std::fs::read_to_string(repo_root().join("fixtures/fixtures.toml")).unwrap();
    let all: toml::Table = text.parse().unwrap();
    all["fixtures"][name]
        .as_table()
        .unwrap_or_else(|| panic!("fixture {name}"))
        .clone()
}

/// An in-process transcode worker (a runner of `transcode` jobs).
pub(crate) struct Worker {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

fn start_worker(db: &TestDb, store: &ObjectStore) -> Worker {
    start_worker_with(
        db,
        store,
        TranscodeConfig {
            encoder: EncoderChoice::Libx264,
            ..TranscodeConfig::default()
        },
    )
}

fn start_worker_with(db: &TestDb, store: &ObjectStore, transcode: TranscodeConfig) -> Worker {
    let mut config = db.config.queue.clone();
    config.concurrency = 1;
    config.poll_interval = Duration::from_millis(200);
    start_worker_queue(db, store, transcode, config, "test")
}

pub(crate) fn start_worker_queue(
    db: &TestDb,
    store: &ObjectStore,
    transcode: TranscodeConfig,
    config: cascade_platform::config::QueueConfig,
    owner: &str,
) -> Worker {
    let queue = Queue::new(db.pool.clone(), config);
    let stop = CancellationToken::new();
    let notifier = JobNotifier::start(db::pg_config(&db.config.database).unwrap(), stop.clone());
    let handler = TranscodeHandler::new(
        db.pool.clone(),
        store.clone(),
        transcode,
        VideoEncoder::Libx264,
    );
    let runner = Runner::new(
        queue,
        HandlerRegistry::new().register(job_kind::TRANSCODE, handler),
        notifier,
        owner,
    );
    let handle = tokio::spawn(runner.run(stop.clone()));
    Worker { stop, handle }
}

async fn local_store() -> (ObjectStore, PathBuf) {
    let root = std::env::temp_dir().join(format!(
        "cascade-transcode-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let store = ObjectStore::from_config(&StorageConfig {
        local_root: root.clone(),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    (store, root)
}

async fn import(db: &TestDb, store: &ObjectStore, file: &str) -> AssetId {
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let path = fixtures_dir().join(file);
    cascade_ingest::import_file(&queue, store, &path, Some(file))
        .await
        .unwrap()
        .0
}

/// Gives the queued transcodes two attempts (the default is five).
async fn two_transcode_attempts(client: &deadpool_postgres::Object) {
    client
        .execute(
            "UPDATE jobs SET max_attempts = 2 WHERE kind = $1",
            &[&job_kind::TRANSCODE],
        )
        .await
        .unwrap();
}

async fn wait_terminal(db: &TestDb, id: AssetId) -> assets::Asset {
    eventually(
        "the asset to be ready or errored",
        Duration::from_secs(240),
        || async {
            let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
            matches!(asset.state, AssetState::Ready | AssetState::Errored).then_some(asset)
        },
    )
    .await
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ffprobe_json(args: &[&str], target: &Path) -> serde_json::Value {
    let (ok, stdout, stderr) = run(Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(target));
    assert!(ok, "ffprobe {args:?} {}: {stderr}", target.display());
    serde_json::from_str(&stdout).unwrap()
}

/// Parses `#EXTINF` durations of a media playlist.
fn extinf(playlist: &Path) -> Vec<f64> {
    std::fs::read_to_string(playlist)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| {
            l.trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// `(attributes, uri)` of each `#EXT-X-STREAM-INF`.
fn stream_infs(master: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(master).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter_map(|w| {
            w[0].strip_prefix("#EXT-X-STREAM-INF:")
                .map(|a| (a.to_owned(), w[1].to_owned()))
        })
        .collect()
}

pub(crate) fn attribute<'a>(attributes: &'a str, name: &str) -> &'a str {
    // Quoted values may contain commas (CODECS).
    let start = attributes
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("{name} in {attributes}"))
        + name.len()
        + 1;
    let rest = &attributes[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').unwrap()]
    } else {
        rest.split(',').next().unwrap()
    }
}

fn rational(text: &str) -> f64 {
    match text.split_once('/') {
        Some((n, d)) => n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap(),
        None => text.parse().unwrap(),
    }
}

/// Checks one published asset against its fixture's expectations.
pub(crate) fn verify(version_dir: &Path, source: &Path, fx: &toml::Table) {
    let has_video = fx["has_video"].as_bool().unwrap();
    let has_audio = fx["has_audio"].as_bool().unwrap();
    let master = version_dir.join("master.m3u8");
    let mpd = version_dir.join("manifest.mpd");

    // Independent decoders read every rung with no error.
    for manifest in [&master, &mpd] {
        let (ok, _, stderr) = run(Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(manifest)
            .args(["-map", "0", "-f", "null", "-"]));
        assert!(
            ok && stderr.trim().is_empty(),
            "{}: {stderr}",
            manifest.display()
        );
    }

    let expected: Vec<String> = fx["expected_rungs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let infs = stream_infs(&master);
    let video_uris: Vec<String> = infs
        .iter()
        .filter(|(a, _)| a.contains("RESOLUTION="))
        .map(|(_, uri)| uri.trim_end_matches("/index.m3u8").to_owned())
        .collect();
    let mut names = video_uris.clone();
    names.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(names, want, "rungs published");

    let source_probe = ffprobe_json(&["-show_streams", "-show_format"], source);
    let stream_of = |kind: &str| {
        source_probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .cloned()
    };

    if has_video {
        let sizes: Vec<String> = fx["expected_rung_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let fps = rational(fx["fps"].as_str().unwrap()).min(60.0);
        let frame = 1.0 / fps;
        let mut keyframes_by_rung = Vec::new();
        let mut starts = Vec::new();
        for (attributes, uri) in &infs {
            if !attributes.contains("RESOLUTION=") {
                continue;
            }
            let rung = uri.trim_end_matches("/index.m3u8");
            let playlist = version_dir.join(uri);
            let probe = ffprobe_json(&["-show_streams", "-select_streams", "v:0"], &playlist);
            let stream = &probe["streams"][0];
            let (w, h) = (
                stream["width"].as_u64().unwrap(),
                stream["height"].as_u64().unwrap(),
            );
            // RESOLUTION, FRAME-RATE and CODECS match the real stream.
            assert_eq!(
                attribute(attributes, "RESOLUTION"),
                format!("{w}x{h}"),
                "{rung}"
            );
            let index = expected.iter().position(|n| n == rung).unwrap();
            assert_eq!(format!("{w}x{h}"), sizes[index], "{rung} size");
            let real_fps = rational(stream["r_frame_rate"].as_str().unwrap());
            let stated: f64 = attribute(attributes, "FRAME-RATE").parse().unwrap();
            assert!(
                (stated - real_fps).abs() < 0.01,
                "{rung}: FRAME-RATE {stated} vs {real_fps}"
            );
            let codecs = attribute(attributes, "CODECS");
            let avc = codecs.split(',').find(|c| c.starts_with("avc1.")).unwrap();
            let profile_idc = match stream["profile"].as_str().unwrap() {
                "High" => 100,
                "Main" => 77,
                "Baseline" | "Constrained Baseline" => 66,
                other => panic!("unexpected profile {other}"),
            };
            assert_eq!(
                &avc[5..7],
                format!("{profile_idc:02x}"),
                "{rung}: profile in {avc}"
            );
            assert_eq!(
                &avc[9..11],
                format!("{:02x}", stream["level"].as_u64().unwrap()),
                "{rung}: level in {avc}"
            );
            assert_eq!(codecs.contains("mp4a.40.2"), has_audio, "{rung}: {codecs}");
            // BANDWIDTH is a peak: at least the average.
            let peak: u64 = attribute(attributes, "BANDWIDTH").parse().unwrap();
            let average: u64 = attribute(attributes, "AVERAGE-BANDWIDTH").parse().unwrap();
            assert!(peak >= average && average > 0, "{rung}: {peak} {average}");

            // Segment durations: the short start cuts at 0.5, 1 and 2 s,
            // then the grid runs every 4 s: 0.5, 0.5, 1, 2, then 4 s, but
            // for the last.
            let durations = extinf(&playlist);
            let (last, full) = durations.split_last().unwrap();
            let expected = |i: usize| [0.5, 0.5, 1.0, 2.0].get(i).copied().unwrap_or(4.0);
            assert!(
                full.iter()
                    .enumerate()
                    .all(|(i, d)| (d - expected(i)).abs() < frame),
                "{rung}: {durations:?}"
            );
            assert!(*last <= 4.0 + frame, "{rung}: {durations:?}");

            // Every segment starts with a keyframe: probe init + segment alone.
            let dir = version_dir.join(rung);
            let init = std::fs::read(dir.join("init.mp4")).unwrap();
            for seq in 1..=durations.len() {
                let mut joined = init.clone();
                joined.extend(std::fs::read(dir.join(format!("{seq}.m4s"))).unwrap());
                let tmp = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(tmp.path(), &joined).unwrap();
                let packets = ffprobe_json(
                    &[
                        "-show_packets",
                        "-select_streams",
                        "v:0",
                        "-read_intervals",
                        "%+#1",
                    ],
                    tmp.path(),
                );
                let flags = packets["packets"][0]["flags"].as_str().unwrap_or("");
                assert!(
                    flags.starts_with('K'),
                    "{rung} segment {seq} starts with {flags:?}"
                );
            }

            let packets = ffprobe_json(&["-show_packets", "-select_streams", "v:0"], &playlist);
            let packets = packets["packets"].as_array().unwrap();
            let keyframes: Vec<String> = packets
                .iter()
                .filter(|p| p["flags"].as_str().unwrap_or("").starts_with('K'))
                .map(|p| p["pts_time"].as_str().unwrap().to_owned())
                .collect();
            keyframes_by_rung.push((rung.to_owned(), keyframes));
            let start: f64 = probe["streams"][0]["start_time"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            starts.push(start);
            // Total duration equals the source's within one frame.
            let total: f64 = durations.iter().sum();
            let source_video = stream_of("video").unwrap();
            let source_duration: f64 = source_video["duration"]
                .as_str()
                .or(source_probe["format"]["duration"].as_str())
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (total - source_duration).abs() <= frame + 0.002,
                "{rung}: {total} s vs source {source_duration} s"
            );
        }
        // Segment boundaries identical in every rung (same EXTINF lists).
        let boundaries: Vec<Vec<String>> = infs
            .iter()
            .filter(|(a, _)| a.contains("RESOLUTION="))
            .map(|(_, uri)| {
                extinf(&version_dir.join(uri))
                    .iter()
                    .map(|d| format!("{d:.6}"))
                    .collect()
            })
            .collect();
        assert!(
            boundaries.windows(2).all(|w| w[0] == w[1]),
            "segment durations differ across rungs: {boundaries:?}"
        );
        // Keyframes at identical timestamps in every rung.
        let (first_rung, first) = &keyframes_by_rung[0];
        for (rung, keyframes) in &keyframes_by_rung[1..] {
            assert_eq!(keyframes, first, "keyframes of {rung} vs {first_rung}");
        }
        if has_audio {
            let audio = ffprobe_json(
                &["-show_streams", "-select_streams", "a:0"],
                &version_dir.join("audio/index.m3u8"),
            );
            let first_packet: f64 = audio["streams"][0]["start_time"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            // The AAC encoder's 1024 samples of priming are in the media
            // from 0, and the header's edit list skips them: FFmpeg moves
            // the packets' times back by the edit (the priming before 0),
            // so the input's first sample is presented at 0, with the
            // video's first frame.
            let priming = priming_edit(&std::fs::read(version_dir.join("audio/init.mp4")).unwrap());
            assert_eq!(priming, Some(1024), "the audio header's edit list");
            assert!(
                (first_packet + 1024.0 / 48_000.0).abs() < 0.0001,
                "FFmpeg reads the first packet at {first_packet} s, not before 0 by the priming"
            );
            assert!(
                starts[0].abs() <= frame + 0.001,
                "video starts {} s, audio's first sample at 0",
                starts[0]
            );
        }
        // Upright: a portrait or rotated source stays portrait.
        let portrait = fx["height"].as_integer().unwrap() > fx["width"].as_integer().unwrap();
        let top = sizes[0]
            .split_once('x')
            .map(|(w, h)| (w.parse::<u32>().unwrap(), h.parse::<u32>().unwrap()))
            .unwrap();
        assert_eq!(top.1 > top.0, portrait, "orientation of the top rung");
    }
    if has_audio {
        let audio = ffprobe_json(
            &["-show_streams", "-select_streams", "a:0"],
            &version_dir.join("audio/index.m3u8"),
        );
        let stream = &audio["streams"][0];
        assert_eq!(stream["codec_name"], "aac");
        assert_eq!(stream["channels"], 2, "downmixed to stereo");
        assert_eq!(stream["sample_rate"], "48000");
    }
}

#[tokio::test]
async fn broken_sources_end_errored_with_their_message_and_the_worker_carries_on() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let worker = start_worker(&db, &store);
    let broken = [
        ("truncated_1080p", "mp4"),
        ("truncated_moov_at_end", "mp4"),
        ("random_bytes", "mp4"),
        ("empty", "mp4"),
        ("text_as_mp4", "mp4"),
    ];
    let mut ids = Vec::new();
    for (name, ext) in broken {
        ids.push((name, import(&db, &store, &format!("{name}.{ext}")).await));
    }
    // A good file queued after the broken ones still gets done.
    let good = import(&db, &store, "tiny_320x180_stereo.mp4").await;
    for (name, id) in ids {
        let fx = fixture(name);
        let asset = wait_terminal(&db, id).await;
        assert_eq!(asset.state, AssetState::Errored, "{name}");
        assert_eq!(
            asset.error_code.as_deref(),
            fx["expected_error"].as_str(),
            "{name}"
        );
        let message = asset.error_message.unwrap_or_default();
        let pattern = regex::RegexBuilder::new(fx["message_pattern"].as_str().unwrap())
            .case_insensitive(true)
            .build()
            .unwrap();
        assert!(
            pattern.is_match(&message),
            "{name}: {message:?} !~ {pattern}"
        );
        // The original stays in storage.
        assert!(
            root.join(format!("assets/{id}/source")).exists(),
            "{name}: source kept"
        );
        // Permanent: failed once, not retried. The asset turns errored just
        // before the runner records the job's outcome, so wait for that.
        let (state, attempts) =
            recorded_outcome(&db, &format!("payload->>'asset_id' = '{id}'")).await;
        assert_eq!((state.as_str(), attempts), ("failed", 1), "{name}");
    }
    assert_eq!(wait_terminal(&db, good).await.state, AssetState::Ready);
    worker.stop().await;
}

#[tokio::test]
async fn a_rerun_of_a_published_transcode_is_a_no_op_and_a_retry_after_a_crash_republishes() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let worker = start_worker(&db, &store);
    let id = import(&db, &store, "tiny_320x180_stereo.mp4").await;
    assert_eq!(wait_terminal(&db, id).await.state, AssetState::Ready);
    worker.stop().await;
    // Simulate a worker that died after writing some segments but before the
    // manifests: remove the manifests, mark the asset processing, run again.
    let master = root.join(format!("assets/{id}/v1/master.m3u8"));
    std::fs::remove_file(&master).unwrap();
    std::fs::remove_file(root.join(format!("assets/{id}/v1/manifest.mpd"))).unwrap();
    {
        let client = db.pool.get().await.unwrap();
        client
            .execute(
                "UPDATE assets SET state = 'processing', published_version = NULL WHERE id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap();
        client
            .execute(
                "UPDATE jobs SET state = 'queued', attempts = 0 WHERE kind = 'transcode'",
                &[],
            )
            .await
            .unwrap();
    }
    let worker = start_worker(&db, &store);
    let asset = wait_terminal(&db, id).await;
    worker.stop().await;
    assert_eq!(asset.state, AssetState::Ready);
    assert!(master.exists());
    verify(
        &root.join(format!("assets/{id}/v1")),
        &fixtures_dir().join("tiny_320x180_stereo.mp4"),
        &fixture("tiny_320x180_stereo"),
    );
}

#[tokio::test]
async fn a_worker_killed_mid_transcode_leaves_no_playlist_naming_a_missing_segment_and_the_retry_publishes_a_correct_result(
) {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let id = import(&db, &store, "landscape_1080p30_stereo.mp4").await;
    let root_text = root.display().to_string();
    let env = [
        ("CASCADE_STORAGE__LOCAL_ROOT", root_text.as_str()),
        ("CASCADE_TRANSCODE__ENCODER", "libx264"),
        ("CASCADE_QUEUE__LEASE", "\"2s\""),
        ("CASCADE_QUEUE__HEARTBEAT", "\"500ms\""),
        ("CASCADE_QUEUE__REAP_INTERVAL", "\"300ms\""),
        ("CASCADE_QUEUE__POLL_INTERVAL", "\"300ms\""),
    ];
    let version_dir = root.join(format!("assets/{id}/v1"));
    let first = CascadeProcess::serve(&db.url, "workers", &env);
    // Kill it once it has written media segments, before it can finish.
    eventually(
        "the first worker to write segments",
        Duration::from_secs(120),
        || async {
            let dir = version_dir.join("1080p");
            std::fs::read_dir(&dir).ok().and_then(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".m4s"))
                    .then_some(())
            })
        },
    )
    .await;
    first.signal("KILL");
    drop(first);
    let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(
        asset.state,
        AssetState::Processing,
        "killed before publishing"
    );
    // It played while growing (progressive publish), so the master, the
    // growing playlists and the dynamic MPD (written after them, from the
    // same segments) may exist, but no final MPD; no playlist names a
    // segment that is not stored.
    if let Ok(mpd) = std::fs::read_to_string(version_dir.join("manifest.mpd")) {
        assert!(
            mpd.contains(r#"type="dynamic""#) && !mpd.contains("mediaPresentationDuration"),
            "{mpd}"
        );
    }
    for rendition in std::fs::read_dir(&version_dir).unwrap().flatten() {
        let playlist = rendition.path().join("index.m3u8");
        let Ok(text) = std::fs::read_to_string(&playlist) else {
            continue;
        };
        assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
        for uri in text.lines().filter(|line| line.ends_with(".m4s")) {
            assert!(
                rendition.path().join(uri).exists(),
                "{} names {uri}, which is not stored",
                playlist.display()
            );
        }
    }

    let _second = CascadeProcess::serve(&db.url, "workers", &env);
    let asset = wait_terminal(&db, id).await;
    assert_eq!(asset.state, AssetState::Ready, "{:?}", asset.error_message);
    verify(
        &version_dir,
        &fixtures_dir().join("landscape_1080p30_stereo.mp4"),
        &fixture("landscape_1080p30_stereo"),
    );
    let client = db.pool.get().await.unwrap();
    let attempts: i32 = client
        .query_one("SELECT attempts FROM jobs WHERE kind = 'transcode'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn sources_beyond_the_size_limit_are_refused_with_the_reason() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let worker = start_worker_with(
        &db,
        &store,
        TranscodeConfig {
            encoder: EncoderChoice::Libx264,
            max_dimension: 100,
            ..TranscodeConfig::default()
        },
    );
    let id = import(&db, &store, "tiny_320x180_stereo.mp4").await;
    let asset = wait_terminal(&db, id).await;
    worker.stop().await;
    assert_eq!(asset.state, AssetState::Errored);
    assert_eq!(asset.error_code.as_deref(), Some("unsupported_dimensions"));
    let message = asset.error_message.unwrap_or_default();
    assert!(
        message.contains("320x180") && message.contains("100x100"),
        "{message}"
    );
    assert!(
        root.join(format!("assets/{id}/source")).exists(),
        "the original is kept"
    );
}

/// A reader that counts the bytes it hands out.
struct CountingReader {
    file: std::fs::File,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl std::io::Seek for CountingReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(to)
    }
}

/// The upload probe reads stored sources through custom I/O: it must judge
/// every fixture exactly as the probe of a local file does (summary, or
/// error code and message), and read the header and index of a large file,
/// not its media.
#[test]
fn the_probe_over_a_reader_agrees_with_the_file_probe_and_reads_little() {
    use cascade_workers::probe::{probe_file, probe_reader};
    let config = TranscodeConfig::default();
    let large = crate::common::bench_fixture();
    let dir = fixtures_dir();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n != "SHA256SUMS")
        })
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures in {}", dir.display());
    let mut large_checked = false;
    for path in names {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = CountingReader {
            file: std::fs::File::open(&path).unwrap(),
            read: read.clone(),
        };
        let by_reader = probe_reader(reader, &config);
        let by_file = probe_file(&path, &config);
        assert_eq!(
            format!("{by_reader:?}"),
            format!("{by_file:?}"),
            "{}",
            path.display()
        );
        let size = std::fs::metadata(&path).unwrap().len();
        let read = read.load(std::sync::atomic::Ordering::Relaxed);
        if path == large {
            assert!(by_reader.is_ok());
            large_checked = true;
            assert!(
                read * 10 < size,
                "probing {} read {read} of {size} bytes",
                path.display()
            );
        }
    }
    assert!(large_checked, "the 20 s bench fixture was not found");
}

/// A source whose worker stops heartbeating on every attempt (it crashed,
/// was killed or hung: here the "worker" claims the job and goes silent)
/// is reclaimed after a backoff, not at once, and after its last attempt
/// the asset is quarantined: errored with a clear reason, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_kills_every_worker_is_quarantined_after_backoff() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let id = import(&db, &store, "tiny_320x180_stereo.mp4").await;
    let client = db.pool.get().await.unwrap();
    two_transcode_attempts(&client).await;
    let mut config = db.config.queue.clone();
    config.lease = Duration::from_millis(500);
    config.retry_base = Duration::from_secs(1);
    let queue = Queue::new(db.pool.clone(), config);
    let stop = CancellationToken::new();
    let handler = TranscodeHandler::new(
        db.pool.clone(),
        store.clone(),
        TranscodeConfig::default(),
        VideoEncoder::Libx264,
    );
    // Only reaps (through `reap_once`): the claims below are the doomed workers'.
    let reaper = Runner::new(
        queue.clone(),
        HandlerRegistry::new().register(job_kind::TRANSCODE, handler),
        JobNotifier::start(db::pg_config(&db.config.database).unwrap(), stop.clone()),
        "reaper",
    );
    let kinds = vec![job_kind::TRANSCODE.to_owned()];
    for attempt in 1..=2 {
        let claimed = eventually(
            "the job to be claimable",
            Duration::from_secs(10),
            || async { queue.claim("doomed", &kinds, 1).await.unwrap().pop() },
        )
        .await;
        assert_eq!(claimed.attempt, attempt);
        eventually("the lease to expire", Duration::from_secs(10), || async {
            (reaper.reap_once().await.unwrap() == 1).then_some(())
        })
        .await;
        if attempt == 1 {
            // Backing off: not claimable at once.
            assert!(queue.claim("doomed", &kinds, 1).await.unwrap().is_empty());
            let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
            assert_eq!(asset.state, AssetState::Processing);
        }
    }
    let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(asset.state, AssetState::Errored);
    assert_eq!(asset.error_code.as_deref(), Some("source_quarantined"));
    let message = asset.error_message.unwrap_or_default();
    assert!(
        message.contains("quarantined") && message.contains("2 attempts"),
        "{message}"
    );
    let state: String = client
        .query_one(
            "SELECT state FROM jobs WHERE kind = $1",
            &[&job_kind::TRANSCODE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "dead");
    // Nothing left to claim.
    assert!(queue.claim("doomed", &kinds, 1).await.unwrap().is_empty());
    stop.cancel();
    let _ = std::fs::remove_dir_all(root);
}

/// Uploads are untrusted: a playlist or script that would make FFmpeg open
/// other files (or URLs) is refused by name before anything it names is
/// read, by the file probe, the probe over a stored object and the worker
/// alike; a source longer than `transcode.max_duration` is refused at the
/// probe (declared length) and while decoding (timestamps); one that
/// decodes slower than `transcode.min_speed`, or has more frames than
/// `transcode.max_source_frames`, is refused too.
#[test]
fn untrusted_playlists_and_scripts_are_refused_before_they_open_anything() {
    use cascade_workers::probe::{probe_file, probe_reader};
    use cascade_workers::transcode::run_file as transcode_file;
    use cascade_workers::transcode::TranscodeError;
    let dir = tempfile::tempdir().unwrap();
    // A real MPEG-TS segment the playlist and script point at.
    let segment = dir.path().join("seg.ts");
    let (ok, _, err) = run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25:duration=1",
        ])
        .args(["-c:v", "libx264", "-f", "mpegts"])
        .arg(&segment));
    assert!(ok, "{err}");
    let config = TranscodeConfig::default();
    assert!(
        probe_file(&segment, &config).is_ok(),
        "MPEG-TS itself is accepted"
    );
    fn code<T: std::fmt::Debug>(result: Result<T, TranscodeError>) -> (&'static str, String) {
        match result {
            Err(TranscodeError::Input { code, message }) => (code, message),
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    let playlist = dir.path().join("evil.m3u8");
    std::fs::write(
        &playlist,
        format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n",
            segment.display()
        ),
    )
    .unwrap();
    let script = dir.path().join("evil.ffconcat");
    std::fs::write(&script, "ffconcat version 1.0\nfile 'seg.ts'\n").unwrap();
    for (path, what) in [(&playlist, "HLS playlist"), (&script, "concat script")] {
        let (by_file, message) = code(probe_file(path, &config));
        assert_eq!(by_file, "unsupported_container", "{message}");
        assert!(message.contains(what), "{message}");
        let bytes = std::fs::read(path).unwrap();
        let (by_reader, _) = code(probe_reader(std::io::Cursor::new(bytes), &config));
        assert_eq!(by_reader, "unsupported_container");
        let (events, _received) = tokio::sync::mpsc::channel(1024);
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let outcome = transcode_file(path, &config, VideoEncoder::Libx264, &events, &cancel);
        assert_eq!(code(outcome.map(|_| ())).0, "unsupported_container");
    }

    // Too long: the 6 s fixture against a 2 s limit.
    let long = fixtures_dir().join("landscape_1080p30_stereo.mp4");
    let short_limit = TranscodeConfig {
        max_duration: Duration::from_secs(2),
        ladder: TranscodeConfig::default().ladder.split_off(4),
        ..TranscodeConfig::default()
    };
    let (probed, message) = code(probe_file(&long, &short_limit));
    assert_eq!(probed, "source_too_long", "{message}");
    let (events, _received) = tokio::sync::mpsc::channel(4096);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let outcome = transcode_file(&long, &short_limit, VideoEncoder::Libx264, &events, &cancel);
    assert_eq!(code(outcome.map(|_| ())).0, "source_too_long");
}

/// The state and attempts of the one job matching `filter` (SQL), once
/// the runner has recorded its outcome: the asset turns ready or errored
/// just before it does.
async fn recorded_outcome(db: &TestDb, filter: &str) -> (String, i32) {
    eventually(
        "the job's outcome recorded",
        Duration::from_secs(10),
        || async {
            let client = db.pool.get().await.unwrap();
            let row = client
                .query_one(
                    &format!("SELECT state, attempts FROM jobs WHERE {filter}"),
                    &[],
                )
                .await
                .unwrap();
            let state: String = row.get(0);
            (state != "running").then(|| (state, row.get::<_, i32>(1)))
        },
    )
    .await
}

/// A database outage longer than the lease in the middle of a transcode
/// (every connection cut, none accepted, as in a Postgres restart): the
/// worker keeps encoding, renews its lease once the database is back, and
/// publishes; the other worker does not reap the job meanwhile. One
/// attempt, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_transcode_costs_no_attempt() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    let id = import(&db, &store, "landscape_1080p30_stereo.mp4").await;
    let mut config = db.config.queue.clone();
    config.concurrency = 1;
    config.poll_interval = Duration::from_millis(200);
    config.lease = Duration::from_secs(2);
    config.heartbeat = Duration::from_millis(500);
    config.reap_interval = Duration::from_millis(200);
    let lease = config.lease;
    // Two workers, as two processes: one runs the job, the other could reap it.
    let workers = [
        start_worker_queue(&db, &store, TranscodeConfig::default(), config.clone(), "a"),
        start_worker_queue(&db, &store, TranscodeConfig::default(), config, "b"),
    ];
    eventually(
        "the transcode under way",
        Duration::from_secs(60),
        || async {
            let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
            (asset.state == AssetState::Processing && asset.progress > 0.0).then_some(())
        },
    )
    .await;
    let client = db.pool.get().await.unwrap();
    let expires: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT lease_expires_at FROM jobs WHERE kind = $1",
            &[&job_kind::TRANSCODE],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    crate::common::database_outage(&db, true).await;
    // Down until the lease has run out by another lease: unrenewed, it is
    // one any reaper would take.
    eventually("the lease to run out", lease * 4, || async {
        (chrono::Utc::now() > expires + chrono::TimeDelta::from_std(lease).unwrap()).then_some(())
    })
    .await;
    crate::common::database_outage(&db, false).await;

    let asset = wait_terminal(&db, id).await;
    assert_eq!(asset.state, AssetState::Ready, "{:?}", asset.error_message);
    let (state, attempts) =
        recorded_outcome(&db, &format!("kind = '{}'", job_kind::TRANSCODE)).await;
    assert_eq!(state, "succeeded");
    assert_eq!(attempts, 1, "the outage cost an attempt");
    for worker in workers {
        worker.stop().await;
    }
    let _ = std::fs::remove_dir_all(root);
}

/// The object store goes away in the middle of a transcode (every
/// connection cut, new ones refused) and comes back: the worker holds the
/// encode while its writes fail, retries them, and publishes a complete
/// ladder on the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_mid_transcode_pauses_it_and_costs_no_attempt() {
    let db = fresh_db().await;
    let mut s3 = crate::common::s3_config();
    let target: std::net::SocketAddr = s3
        .endpoint
        .as_deref()
        .and_then(|e| e.strip_prefix("http://"))
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .expect("an http://host:port S3 endpoint");
    let proxy = crate::common::FaultProxy::start(target).await;
    s3.endpoint = Some(format!("http://{}", proxy.addr));
    s3.attempt_timeout = Duration::from_secs(2);
    let store = ObjectStore::from_config(&StorageConfig {
        s3: Some(s3),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    let id = import(&db, &store, "landscape_1080p30_stereo.mp4").await;
    let mut config = db.config.queue.clone();
    config.concurrency = 1;
    config.poll_interval = Duration::from_millis(200);
    let worker = start_worker_queue(&db, &store, TranscodeConfig::default(), config, "w");
    eventually(
        "the transcode under way",
        Duration::from_secs(60),
        || async {
            let asset = assets::get(&db.pool, id).await.unwrap().unwrap();
            (asset.progress > 0.0).then_some(())
        },
    )
    .await;
    proxy.set_down(true);
    // The worker's writes met the outage and were retried (refused twice).
    proxy.wait_refused(2, Duration::from_secs(30)).await;
    proxy.set_down(false);

    let asset = wait_terminal(&db, id).await;
    assert_eq!(asset.state, AssetState::Ready, "{:?}", asset.error_message);
    let client = db.pool.get().await.unwrap();
    let attempts: i32 = client
        .query_one(
            "SELECT attempts FROM jobs WHERE kind = $1",
            &[&job_kind::TRANSCODE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1, "the outage cost an attempt");
    // Every segment each media playlist names is stored, whole.
    let version = asset.published_version.unwrap() as u32;
    for rendition in assets::renditions(&db.pool, id, version as i32)
        .await
        .unwrap()
    {
        let name = cascade_schemas::RenditionName::new(rendition.name.clone()).unwrap();
        let playlist = store
            .get(
                &cascade_schemas::ObjectKey::media_playlist(id, version, &name),
                None,
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&playlist).into_owned();
        let segments: Vec<u64> = text
            .lines()
            .filter(|l| l.ends_with(".m4s"))
            .filter_map(|l| l.trim_end_matches(".m4s").rsplit('/').next()?.parse().ok())
            .collect();
        assert!(!segments.is_empty(), "{text}");
        for sequence in segments {
            let key = cascade_schemas::ObjectKey::media_segment(id, version, &name, sequence);
            let stored = store.get(&key, None).await.unwrap();
            assert!(stored.meta.size > 0, "{key}");
        }
    }
    worker.stop().await;
}

/// A source whose resolution changes mid-stream (MPEG-TS allows it: a
/// broadcast switching from 640x360 to 320x240): the ladder planned from
/// the start keeps its sizes, every frame of both parts is encoded into it,
/// and each rung decodes to the whole duration.
#[test]
fn a_resolution_change_mid_stream_is_scaled_into_the_planned_ladder() {
    use cascade_workers::transcode::{run_file as transcode_file, Event};
    let dir = tempfile::tempdir().unwrap();
    let part = |name: &str, size: &str| {
        let path = dir.path().join(name);
        let (ok, _, err) = run(Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=25:duration=2"))
            .args(["-c:v", "libx264", "-g", "25", "-f", "mpegts"])
            .arg(&path));
        assert!(ok, "{err}");
        path
    };
    let (first, second) = (part("a.ts", "640x360"), part("b.ts", "320x240"));
    let joined = dir.path().join("joined.ts");
    let (ok, _, err) = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(format!("concat:{}|{}", first.display(), second.display()))
        .args(["-c", "copy"])
        .arg(&joined));
    assert!(ok, "{err}");

    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let collector = std::thread::spawn(move || {
        let mut outputs: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        while let Some(event) = received.blocking_recv() {
            match event {
                Event::Init {
                    rendition, bytes, ..
                } => {
                    outputs.entry(rendition).or_default().splice(0..0, bytes);
                }
                Event::Segment {
                    rendition, bytes, ..
                } => {
                    outputs.entry(rendition).or_default().extend(bytes);
                }
                _ => {}
            }
        }
        outputs
    });
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let summary = transcode_file(
        &joined,
        &TranscodeConfig::default(),
        VideoEncoder::Libx264,
        &events,
        &cancel,
    )
    .expect("the transcode");
    drop(events);
    let outputs = collector.join().unwrap();
    assert!((summary.duration - 4.0).abs() < 0.2, "{}", summary.duration);
    let names: Vec<&str> = summary
        .renditions
        .iter()
        .map(|(r, _)| r.name.as_str())
        .collect();
    assert_eq!(names, ["360p", "240p"]);
    for (name, size) in [("360p", "640x360"), ("240p", "426x240")] {
        let path = dir.path().join(format!("{name}.mp4"));
        std::fs::write(&path, &outputs[name]).unwrap();
        let probe = ffprobe_json(
            &[
                "-count_frames",
                "-show_entries",
                "stream=width,height,nb_read_frames",
            ],
            &path,
        );
        let stream = &probe["streams"][0];
        assert_eq!(
            format!("{}x{}", stream["width"], stream["height"]),
            size,
            "{name}: {probe}"
        );
        assert_eq!(stream["nb_read_frames"], "100", "{name}: {probe}");
    }
}

/// Rate control keeps the ladder's promises at every rung, for short and
/// long sources: no rung's average over the whole asset above its cap, and
/// no segment's bit rate above the `BANDWIDTH` the rung declared before it
/// was measured (what a growing master playlist says). The content is
/// noise in every frame, which wants far more bits than any cap; the
/// sources cover every rung of the default ladder (2160p to 240p).
#[test]
fn short_and_long_sources_keep_every_rung_under_its_cap() {
    use cascade_workers::transcode::{run_file as transcode_file, Event};
    let dir = tempfile::tempdir().unwrap();
    let config = TranscodeConfig::default();
    let mut rungs_seen = std::collections::BTreeSet::new();
    for (size, seconds, qp) in [
        ("1280x720", 3, 12),
        ("1280x720", 10, 12),
        ("1920x1080", 3, 16),
        ("3840x2160", 2, 24),
    ] {
        let source = dir.path().join(format!("hard_{size}_{seconds}s.mp4"));
        let (ok, _, err) = run(Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(format!(
                "testsrc2=size={size}:rate=30:duration={seconds},noise=alls=25:allf=t"
            ))
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-qp"])
            .arg(qp.to_string())
            .arg(&source));
        assert!(ok, "{err}");
        let (events, mut received) = tokio::sync::mpsc::channel(64);
        let declared = std::thread::spawn(move || {
            let mut declared = std::collections::HashMap::new();
            while let Some(event) = received.blocking_recv() {
                if let Event::Init {
                    rendition,
                    declared: bitrates,
                    ..
                } = event
                {
                    declared.insert(rendition, bitrates.peak);
                }
            }
            declared
        });
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let summary = transcode_file(&source, &config, VideoEncoder::Libx264, &events, &cancel)
            .expect("the transcode");
        drop(events);
        let declared = declared.join().unwrap();
        for (rendition, _) in summary.renditions.iter().filter(|(r, _)| r.name != "audio") {
            let cap = config
                .ladder
                .iter()
                .find(|rung| rung.name == rendition.name)
                .map(|rung| rung.bitrate)
                .unwrap();
            let measured = rendition.bitrates();
            eprintln!(
                "{size} {seconds} s, {}: average {} bit/s, cap {cap} ({:.2}x); peak {} of {} declared",
                rendition.name,
                measured.average,
                measured.average as f64 / cap as f64,
                measured.peak,
                declared[&rendition.name]
            );
            assert!(
                measured.average <= cap,
                "{size} {seconds} s: {} averages {} bit/s, over its cap of {cap}",
                rendition.name,
                measured.average
            );
            assert!(
                measured.peak <= declared[&rendition.name],
                "{size} {seconds} s: {} peaks at {} bit/s, over the {} it declared",
                rendition.name,
                measured.peak,
                declared[&rendition.name]
            );
            rungs_seen.insert(rendition.name.clone());
        }
    }
    let ladder: std::collections::BTreeSet<String> =
        config.ladder.iter().map(|rung| rung.name.clone()).collect();
    assert_eq!(rungs_seen, ladder, "every rung of the ladder");
}

/// A source that crashes the decoder (here a failpoint aborts the child
/// after its first segment, as a decoder crash would end it) costs its own
/// job only: the worker process runs on, a good job on the same worker
/// concurrently becomes ready, and the poison is retried after a backoff
/// and quarantined after its last attempt with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_crashes_the_decoder_is_quarantined_and_spares_the_other_jobs() {
    let db = fresh_db().await;
    let (store, root) = local_store().await;
    // The poison: a real file with a unique length (junk after its last box).
    let dir = tempfile::tempdir().unwrap();
    let poison_path = dir.path().join("poison.mp4");
    let mut bytes = std::fs::read(fixtures_dir().join("tiny_320x180_stereo.mp4")).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 4093));
    std::fs::write(&poison_path, &bytes).unwrap();
    let queue = Queue::new(db.pool.clone(), db.config.queue.clone());
    let poison = cascade_ingest::import_file(&queue, &store, &poison_path, Some("poison.mp4"))
        .await
        .unwrap()
        .0;
    let good = import(&db, &store, "landscape_720p60_stereo.mp4").await;
    let client = db.pool.get().await.unwrap();
    two_transcode_attempts(&client).await;
    let length = bytes.len().to_string();
    let root_text = root.to_str().unwrap().to_owned();
    let mut worker = CascadeProcess::serve(
        &db.url,
        "workers",
        &[
            ("CASCADE_STORAGE__LOCAL_ROOT", &root_text),
            ("FAILPOINT_TRANSCODE_CRASH_SOURCE_LENGTH", &length),
            ("CASCADE_QUEUE__RETRY_BASE", "\"1s\""),
            ("CASCADE_QUEUE__POLL_INTERVAL", "\"300ms\""),
            ("CASCADE_QUEUE__CONCURRENCY", "2"),
        ],
    );
    let crashed = wait_terminal(&db, poison).await;
    assert_eq!(crashed.state, AssetState::Errored);
    assert_eq!(crashed.error_code.as_deref(), Some("source_quarantined"));
    let message = crashed.error_message.unwrap_or_default();
    assert!(
        message.contains("crashed the decoder") && message.contains("2 attempts"),
        "{message}"
    );
    // The asset is errored by the handler; the runner then buries the job.
    let attempts = eventually("the poison's job dead", Duration::from_secs(10), || async {
        let row = client
            .query_one(
                "SELECT state, attempts FROM jobs WHERE kind = $1 AND payload->>'asset_id' = $2",
                &[&job_kind::TRANSCODE, &poison.to_string()],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0) == "dead").then(|| row.get::<_, i32>(1))
    })
    .await;
    assert_eq!(attempts, 2);
    let spared = wait_terminal(&db, good).await;
    assert_eq!(
        spared.state,
        AssetState::Ready,
        "{:?}",
        spared.error_message
    );
    assert!(worker.is_running(), "the worker outlived the crashes");
    let _ = std::fs::remove_dir_all(root);
}

/// The `media_time` of the single edit in a CMAF header's track (`moov` /
/// `trak` / `edts` / `elst`, version 0), read without the packager's code.
fn priming_edit(init: &[u8]) -> Option<u32> {
    fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().ok()?) as usize;
            if size < 8 || at + size > data.len() {
                return None;
            }
            if &data[at + 4..at + 8] == kind {
                return Some(&data[at + 8..at + size]);
            }
            at += size;
        }
        None
    }
    let elst = child(
        child(child(child(init, b"moov")?, b"trak")?, b"edts")?,
        b"elst",
    )?;
    // version and flags, entry_count, segment_duration, media_time
    let entries = u32::from_be_bytes(elst.get(4..8)?.try_into().ok()?);
    if entries != 1 {
        return None;
    }
    Some(u32::from_be_bytes(elst.get(12..16)?.try_into().ok()?))
}
