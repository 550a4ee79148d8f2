//! `cascade bench live`: a minute of 720p30 (H.264 + AAC, copied, so the
//! publisher costs nothing) published by ffmpeg in real time over RTMP into
//! a `cascade serve --roles ingest,workers` child (default live ladder),
//! served by a second child (`--roles origin`) behind the nginx CDN of
//! `infra/cdn/nginx.conf`; and, over the same measured minute, the `ffmpeg`
//! CLI doing the same ladder from the same input in real time and writing
//! HLS (concurrently, so both see the same machine speed). The CPU
//! compared is the live process's: receiving RTMP, decoding, the ladder,
//! packaging, storage writes and rows, as the CLI reads a file, decodes,
//! encodes and writes files; serving players is the origin's, as in
//! production.
//!
//! Prints, and holds to targets (exit 1 when one is missed):
//! - CPU seconds per minute of live, Cascade's process against the CLI's
//!   (target: ratio <= 1.0);
//! - availability latency: from a segment's first frame reaching ingest
//!   (its `EXT-X-PROGRAM-DATE-TIME`) to the segment being fetchable through
//!   the CDN, median and max (target: <= one segment + 0.5 s); and, for
//!   information, until the CDN's cached playlist lists it;
//! - whether Cascade kept real time: the latency of the last quarter of
//!   segments is not above the first quarter's by more than half a segment;
//! - hls.js's latency in headless Chromium (wall clock minus the program
//!   date-time of the frame on screen), for information, played after the
//!   measured minute so the browser is not in Cascade's CPU figure;
//! - Cascade's peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cascade_platform::Config;
use cascade_schemas::ladder;
use chrono::{DateTime, Utc};
use clap::Args;

use super::origin::{free_port, require_tool, ChildGuard};
use super::{median, peak_rss_mb};

pub(super) const KEY: &str = "csk_bench_live_key_0123456789abcdefghijklmnop";
/// Cascade's CPU per minute of live over the CLI's.
const TARGET_CPU_RATIO: f64 = 1.0;
/// Added to the segment duration for the availability latency target.
const TARGET_LATENCY_SLACK: f64 = 0.5;
/// How long the CLI runs before its CPU is measured.
const CLI_WARM_UP: Duration = Duration::from_secs(3);
/// Media the CLI gets beyond the measured seconds (its warm-up and slack),
/// so it is still encoding when the measurement ends.
const CLI_SPARE_SECONDS: u32 = 10;

/// Arguments of `cascade bench live`.
#[derive(Debug, Args)]
pub struct LiveBenchArgs {
    /// Seconds of live media measured per round.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Rounds, each a minute of Cascade and the CLI side by side (a
    /// reconnect continues the broadcast); the CPU ratio is the median of
    /// the rounds' ratios.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also play the stream with hls.js in headless Chromium for its latency
    /// (needs `tests/players` installed: scripts/deps.sh).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    player: bool,
    /// Measure a low-latency stream instead: glass-to-glass latency in
    /// hls.js (LL mode) through the CDN, how long blocking reloads take
    /// after their part exists, and origin CPU for 100 LL-HLS players.
    #[arg(long)]
    pub(super) low_latency: bool,
}

impl LiveBenchArgs {
    /// Seconds measured.
    pub(super) fn seconds(&self) -> u32 {
        self.seconds.max(20)
    }
}

/// The 720p30 source (12 s, looped), generated if missing.
pub(super) fn fixture() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(".data/fixtures/live_720p30_12s.mp4");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(".data/fixtures")?;
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
        .context("running ffmpeg to make the live fixture")?;
    if !status.success() {
        bail!("ffmpeg could not make the live fixture");
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// CPU seconds (user + system) process `pid` has used so far, all threads,
/// with those of its children it has waited for (a worker's transcode
/// children: `transcode.isolate`).
pub(super) fn process_cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no memory preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces).
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks_at = |field: usize| fields.get(field)?.parse::<f64>().ok();
            // utime, stime, cutime, cstime (proc(5) fields 14 to 17).
            let used = ticks_at(11)? + ticks_at(12)? + ticks_at(13)? + ticks_at(14)?;
            Some(used / ticks)
        })
        .unwrap_or(f64::NAN)
}

/// nginx as the CDN in front of `origin`, from infra/cdn/nginx.conf.
pub(super) fn start_cdn(origin: u16, dir: &Path) -> anyhow::Result<(ChildGuard, u16)> {
    let template = std::fs::read_to_string("infra/cdn/nginx.conf")
        .context("reading infra/cdn/nginx.conf (run from the repository root)")?;
    let port = free_port()?;
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "root"
    } else {
        "nobody"
    };
    let conf = template
        .replace("{{USER}}", user)
        .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
        .replace("{{ORIGIN}}", &format!("127.0.0.1:{origin}"))
        .replace("{{CACHE_DIR}}", &dir.join("cache").display().to_string())
        .replace("{{PURGE_LISTEN}}", &format!("127.0.0.1:{}", free_port()?));
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(require_tool("nginx")?)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok((
        ChildGuard {
            name: "nginx",
            child,
        },
        port,
    ))
}

pub(super) async fn wait_http(
    client: &reqwest::Client,
    url: &str,
    guard: &mut ChildGuard,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut every = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < deadline {
        every.tick().await;
        guard.check_running()?;
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
    }
    bail!("{} did not answer {url} within 30 s", guard.name)
}

/// When segments became available.
struct Seen {
    /// The segment's first frame's arrival at ingest.
    program_time: DateTime<Utc>,
    /// When the segment could be fetched through the CDN.
    fetchable_at: DateTime<Utc>,
    /// When the CDN's playlist listed it.
    listed_at: DateTime<Utc>,
}

/// Watches the CDN's 720p playlist until `until`. Once a segment is
/// listed, the next one's URL (same session, next number) is asked for
/// every 25 ms through the CDN (a missing live segment is never cached),
/// from 100 ms before its last frame can have arrived, until it answers
/// 200: that is when it became fetchable. Its first
/// frame's arrival is the listed one's program date-time plus duration.
async fn watch_availability(
    client: &reqwest::Client,
    playlist: &str,
    segment: Duration,
    until: Instant,
) -> anyhow::Result<Vec<Seen>> {
    let segment = chrono::Duration::from_std(segment)?;
    let not_before = chrono::Duration::milliseconds(100);
    let base = playlist
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(playlist);
    let mut seen: Vec<Seen> = Vec::new();
    // The next segment: (uri, arrival of its first frame, fetchable at).
    let mut next: Option<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = None;
    let mut last_playlist_poll: Option<Instant> = None;
    let mut every = tokio::time::interval(Duration::from_millis(25));
    while Instant::now() < until {
        every.tick().await;
        // A segment cannot exist before its last frame arrived: asking
        // earlier would only load the origin (and Cascade's CPU figure).
        let due = |arrival: &DateTime<Utc>| Utc::now() + not_before >= *arrival + segment;
        if let Some((uri, _, fetchable @ None)) = next.as_mut().filter(|(_, a, _)| due(a)) {
            let response = client.get(format!("{base}/{uri}")).send().await?;
            if response.status().is_success() {
                let _ = response.bytes().await?;
                *fetchable = Some(Utc::now());
            }
        }
        if last_playlist_poll.is_none_or(|at| at.elapsed() >= Duration::from_millis(100)) {
            last_playlist_poll = Some(Instant::now());
            let response = client.get(playlist).send().await?;
            if response.status().is_success() {
                let text = response.text().await.unwrap_or_default();
                let listed = listed_segments(&text);

                if let Some((uri, first_frame, fetchable)) = next.take() {
                    match (listed.iter().any(|(u, ..)| *u == uri), fetchable) {
                        (true, Some(fetchable_at)) => seen.push(Seen {
                            program_time: first_frame,
                            fetchable_at,
                            listed_at: Utc::now(),
                        }),
                        // Its number came under another path (a new
                        // session after a reconnect): not timed.
                        _ if listed
                            .last()
                            .is_some_and(|(u, ..)| segment_number(u) >= segment_number(&uri)) => {}
                        _ => next = Some((uri, first_frame, fetchable)),
                    }
                }
                if next.is_none() {
                    if let Some((uri, time, duration)) = listed.last() {
                        let (dir, file) = uri.rsplit_once('/').unwrap_or(("", uri));
                        if let Ok(number) = file.trim_end_matches(".m4s").parse::<u64>() {
                            let following = format!("{dir}/{}.m4s", number + 1);
                            let arrival =
                                *time + chrono::Duration::milliseconds((duration * 1000.0) as i64);
                            next = Some((following, arrival, None));
                        }
                    }
                }
            }
        }
    }
    Ok(seen)
}

/// The number in a segment URI (`../s2/720p/41.m4s`: 41).
fn segment_number(uri: &str) -> Option<u64> {
    uri.rsplit('/').next()?.strip_suffix(".m4s")?.parse().ok()
}

/// A media playlist's segments: (uri, program date-time, duration in s).
fn listed_segments(text: &str) -> Vec<(String, DateTime<Utc>, f64)> {
    let mut listed = Vec::new();
    let mut program_time = None;
    let mut duration = 0.0;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            program_time = DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc));
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d.trim_end_matches(',').parse::<f64>().unwrap_or(0.0);
        } else if line.ends_with(".m4s") {
            if let Some(time) = program_time {
                listed.push((line.to_owned(), time, duration));
            }
        }
    }
    listed
}

/// The ffmpeg CLI doing the live ladder from `input` in real time for
/// `seconds`, writing fMP4 HLS into `out`.
fn cli_command(
    input: &Path,
    seconds: u32,
    rungs: &[ladder::PlannedRung],
    config: &Config,
    out: &Path,
) -> Command {
    let live = &config.live;
    let gop = live.segment_duration.as_secs_f64();
    let gop_frames = (gop * 30.0).round() as u32;
    let mut command = Command::new("ffmpeg");
    command
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(input)
        .args(["-t", &seconds.to_string()]);
    let labels: String = (0..rungs.len()).map(|i| format!("[s{i}]")).collect();
    let mut graph = format!("[0:v]split={}{labels}", rungs.len());
    for (i, r) in rungs.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={}:{}:flags=bicubic,setsar=1,format=yuv420p[v{i}]",
            r.width, r.height
        ));
    }
    command.args(["-filter_complex", &graph]);
    for i in 0..rungs.len() {
        command.args(["-map", &format!("[v{i}]")]);
    }
    command.args(["-map", "0:a"]);
    command.args([
        "-c:v",
        "libx264",
        "-preset",
        &live.preset,
        "-crf",
        &config.transcode.crf.to_string(),
    ]);
    command.args(["-bf", &live.b_frames.to_string()]);
    command.args([
        "-x264-params",
        &format!(
            "keyint={}:min-keyint={gop_frames}:scenecut=0:open-gop=0:b-pyramid=none:rc-lookahead={}:sliced-threads=1:stitchable=1:vbv-init={}",
            gop_frames * 2,
            live.lookahead_frames,
            cascade_workers::transcode::VBV_INITIAL_FULLNESS
        ),
    ]);
    command.args(["-force_key_frames", &format!("expr:gte(t,n_forced*{gop})")]);
    for (i, r) in rungs.iter().enumerate() {
        command.args([&format!("-maxrate:v:{i}"), &r.bitrate.to_string()]);
        command.args([&format!("-bufsize:v:{i}"), &r.bitrate.to_string()]);
        let profile = if r.width.min(r.height) > 480 {
            "high"
        } else {
            "main"
        };
        command.args([&format!("-profile:v:{i}"), profile]);
    }
    command.args([
        "-c:a",
        "aac",
        "-b:a",
        &live.audio_bitrate.to_string(),
        "-ac",
        "2",
        "-ar",
        "48000",
    ]);
    let streams: Vec<String> = (0..rungs.len())
        .map(|i| format!("v:{i},agroup:aud"))
        .chain(["a:0,agroup:aud".to_owned()])
        .collect();
    command
        .args([
            "-f",
            "hls",
            "-hls_time",
            &gop.to_string(),
            "-hls_segment_type",
            "fmp4",
        ])
        .args(["-hls_list_size", &live.window_segments().to_string()])
        .args(["-var_stream_map", &streams.join(" ")])
        .args(["-master_pl_name", "master.m3u8"])
        .arg(out.join("%v/index.m3u8"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// `cascade serve --roles {roles}` on `port`, objects under `objects` when
/// the stack has no S3, the bench's API key bootstrapped.
pub(super) fn spawn_serve(
    roles: &str,
    port: u16,
    objects: &Path,
    config: &Config,
) -> anyhow::Result<ChildGuard> {
    let mut serve = serve_command(roles, port, objects, config, "warn")?;
    serve.stderr(Stdio::inherit());
    Ok(ChildGuard {
        name: "cascade serve",
        child: serve.spawn().context("starting cascade serve")?,
    })
}

/// [`spawn_serve`] logging what `log_filter` lets through, its log (JSON
/// lines) on a pipe for the caller to read (`child.stderr`).
pub(super) fn spawn_serve_logging(
    roles: &str,
    port: u16,
    objects: &Path,
    config: &Config,
    log_filter: &str,
) -> anyhow::Result<ChildGuard> {
    let mut serve = serve_command(roles, port, objects, config, log_filter)?;
    serve.stderr(Stdio::piped());
    Ok(ChildGuard {
        name: "cascade serve",
        child: serve.spawn().context("starting cascade serve")?,
    })
}

/// `cascade serve --roles {roles}` on `port`, objects under `objects` when
/// the stack has no S3, stdout piped.
pub(super) fn serve_command(
    roles: &str,
    port: u16,
    objects: &Path,
    config: &Config,
    log_filter: &str,
) -> anyhow::Result<Command> {
    let mut serve = Command::new(std::env::current_exe()?);
    serve
        .args(["serve", "--roles", roles])
        .env("CASCADE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CASCADE_LIVE__RTMP_LISTEN", "127.0.0.1:0")
        .env(
            "CASCADE_INGEST__PUBLIC_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .env("CASCADE_INGEST__BOOTSTRAP_KEY", KEY)
        .env("CASCADE_LOG__FILTER", log_filter)
        .stdout(Stdio::piped());
    if config.storage.s3.is_none() {
        serve.env("CASCADE_STORAGE__LOCAL_ROOT", objects);
    }
    Ok(serve)
}

/// The processes a live bench runs: the live process (ingest and the
/// ladder), an origin of its own, and the nginx CDN in front of it.
pub(super) struct LiveStack {
    /// `cascade serve --roles ingest,workers`.
    pub(super) live: ChildGuard,
    /// Its API, `http://127.0.0.1:{port}`.
    pub(super) base: String,
    /// Its RTMP URL (`rtmp://.../live`).
    pub(super) rtmp: String,
    /// `cascade serve --roles origin`.
    pub(super) origin: ChildGuard,
    /// The origin, `http://127.0.0.1:{port}`.
    pub(super) origin_base: String,
    /// nginx.
    pub(super) cdn: ChildGuard,
    /// nginx's port.
    pub(super) cdn_port: u16,
}

/// Starts a [`LiveStack`] with objects under `dir` (when the stack has no
/// S3) and waits until every process answers.
pub(super) async fn start_live_stack(
    client: &reqwest::Client,
    config: &Config,
    dir: &Path,
) -> anyhow::Result<LiveStack> {
    let objects = dir.join("objects");
    let live_port = free_port()?;
    let mut live = spawn_serve("ingest,workers", live_port, &objects, config)?;
    let stdout = live.child.stdout.take().context("cascade's stdout")?;
    let rtmp = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let found = lines.by_ref().map_while(Result::ok).find_map(|line| {
            line.split("rtmp listening on ")
                .nth(1)
                .map(|url| url.trim().to_owned())
        });
        std::thread::spawn(move || for _ in lines {});
        found
    })
    .await?
    .context("cascade serve did not report its RTMP listener")?;
    let base = format!("http://127.0.0.1:{live_port}");
    wait_http(client, &format!("{base}/healthz"), &mut live).await?;
    let origin_port = free_port()?;
    let mut origin = spawn_serve("origin", origin_port, &objects, config)?;
    origin.drain_stdout();
    let origin_base = format!("http://127.0.0.1:{origin_port}");
    wait_http(client, &format!("{origin_base}/healthz"), &mut origin).await?;
    let (mut cdn, cdn_port) = start_cdn(origin_port, dir)?;
    wait_http(
        client,
        &format!("http://127.0.0.1:{cdn_port}/play/"),
        &mut cdn,
    )
    .await?;
    Ok(LiveStack {
        live,
        base,
        rtmp,
        origin,
        origin_base,
        cdn,
        cdn_port,
    })
}

/// hls.js in headless Chromium on `url` for `seconds`, at the live edge:
/// its report (with every latency sample when `samples`).
pub(super) async fn play_hls(
    url: &str,
    seconds: u32,
    samples: bool,
) -> anyhow::Result<serde_json::Value> {
    let out = tokio::process::Command::new("node")
        .arg("tests/players/play.mjs")
        .args(["--player", "hls", "--url", url, "--live", "1"])
        .args(["--seconds", &seconds.to_string()])
        .args(["--samples", if samples { "1" } else { "0" }])
        .output()
        .await
        .context("node tests/players/play.mjs (scripts/deps.sh installs it)")?;
    let last = out
        .stdout
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    Ok(serde_json::from_slice(last).unwrap_or(serde_json::Value::Null))
}

/// Runs the benchmark.
pub async fn run(args: LiveBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    if args.low_latency {
        return super::live_low_latency::run(&args, config).await;
    }
    let input = fixture()?;
    require_tool("nginx")?;
    let seconds = args.seconds.max(20);
    let segment = config.live.segment_duration.as_secs_f64();
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    println!(
        "bench live: {seconds} s of 720p30 published in real time; ladder {:?}",
        config
            .live
            .ladder
            .iter()
            .map(|r| &r.name)
            .collect::<Vec<_>>()
    );

    // The live process (ingest and the ladder) in a process of its own, so
    // its CPU and memory are the ladder's; the origin that serves the CDN
    // (and this bench's polling) is another process, as in production.
    let LiveStack {
        live: mut cascade,
        base,
        rtmp,
        mut origin,
        cdn,
        cdn_port,
        ..
    } = start_live_stack(&client, &config, dir.path()).await?;

    let response = client
        .post(format!("{base}/v1/live_streams"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(r#"{"recording": false}"#)
        .send()
        .await?
        .error_for_status()?;
    let created: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
    let stream_id = created["id"].as_str().context("stream id")?.to_owned();
    let key = created["rtmp"]["stream_key"]
        .as_str()
        .context("stream key")?;
    let playback = created["playback_id"].as_str().context("playback id")?;

    let playlist = format!("http://127.0.0.1:{cdn_port}/play/{playback}/720p/index.m3u8");
    let plan = ladder::plan(1280, 720, &config.live.ladder);
    let cli_out = dir.path().join("cli");
    std::fs::create_dir_all(&cli_out)?;
    let rounds = args.rounds.max(1);
    let mut ratios = Vec::new();
    let (mut ours_all, mut theirs_all) = (Vec::new(), Vec::new());
    let mut seen = Vec::new();
    let mut lags = Vec::new();
    let mut player = Ok(serde_json::Value::Null);
    for round in 1..=rounds {
        // A minute of live into Cascade (a reconnect continues the broadcast)...
        let publisher = publish(&input, &format!("{rtmp}/{key}"), seconds + 45)?;
        let mut publisher = ChildGuard {
            name: "ffmpeg publisher",
            child: publisher,
        };
        let mut every = tokio::time::interval(Duration::from_millis(50));
        let started = Instant::now();
        let first_seen = seen.len();
        loop {
            every.tick().await;
            publisher.check_running()?;
            cascade.check_running()?;
            origin.check_running()?;
            let connected = client
                .get(format!("{base}/v1/live_streams/{stream_id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .ok();
            let body = match connected {
                Some(response) => response.bytes().await.unwrap_or_default(),
                None => Default::default(),
            };
            let stream: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let ready = stream["connected"] == true
                && stream["ingest"]["session"].as_u64() == Some(round as u64)
                && client
                    .get(&playlist)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the live stream did not start within 30 s");
            }
        }
        // ...and, over the same minute, the ffmpeg CLI doing the same ladder
        // from the same input: both see the same machine, whose speed drifts
        // by several percent from one minute to the next (identical CLI runs
        // a minute apart differ by up to 7 % here), so sequential minutes
        // compare the drift as much as the pipelines. Each uses under half a
        // core of the two.
        let mut cli = ChildGuard {
            name: "ffmpeg CLI",
            child: cli_command(
                &input,
                seconds + CLI_SPARE_SECONDS,
                &plan,
                &config,
                &cli_out,
            )
            .spawn()
            .context("starting the ffmpeg CLI")?,
        };
        // Past its start-up (opening encoders), as Cascade's ladder is.
        tokio::time::sleep(CLI_WARM_UP).await;
        cli.check_running()?;
        let cpu_start = process_cpu_seconds(cascade.child.id());
        let cli_cpu_start = process_cpu_seconds(cli.child.id());
        let measure_start = Instant::now();
        let until = measure_start + Duration::from_secs(u64::from(seconds));
        let (round_seen, round_lags) = tokio::join!(
            watch_availability(&client, &playlist, config.live.segment_duration, until),
            ingest_lags(&client, &base, &stream_id, until)
        );
        seen.extend(round_seen?);
        lags.extend(round_lags);
        cli.check_running()?;
        let cascade_cpu = process_cpu_seconds(cascade.child.id()) - cpu_start;
        let cli_cpu = process_cpu_seconds(cli.child.id()) - cli_cpu_start;
        let measured = measure_start.elapsed().as_secs_f64();
        drop(cli);
        if round == 1 && args.player {
            // After the measured minute, so Chromium's decoding and the
            // player's requests are not in Cascade's CPU figure.
            player = play_hls(
                &format!("http://127.0.0.1:{cdn_port}/play/{playback}/master.m3u8"),
                20,
                false,
            )
            .await;
        }
        drop(publisher);
        let per_minute = |cpu: f64| cpu / measured * 60.0;
        let (ours, theirs) = (per_minute(cascade_cpu), per_minute(cli_cpu));
        println!(
            "round {round}/{rounds}: CPU per minute cascade {ours:.1} s, ffmpeg {theirs:.1} s ({:.2}x); {} segments timed",
            ours / theirs,
            seen.len() - first_seen
        );
        ours_all.push(ours);
        theirs_all.push(theirs);
        ratios.push(ours / theirs);
    }
    let rss = peak_rss_mb(cascade.child.id());
    drop(cdn);
    drop(cascade);

    let ratio = median(&mut ratios.clone());
    let ours = median(&mut ours_all);
    let theirs = median(&mut theirs_all);
    let ratio_range = (
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    let mut latencies: Vec<f64> = seen
        .iter()
        .map(|s| (s.fetchable_at - s.program_time).num_milliseconds() as f64 / 1000.0)
        .collect();
    let mut listed: Vec<f64> = seen
        .iter()
        .map(|s| (s.listed_at - s.program_time).num_milliseconds() as f64 / 1000.0)
        .collect();
    let listed_median = if listed.is_empty() {
        f64::NAN
    } else {
        median(&mut listed)
    };
    if latencies.len() < 4 {
        bail!(
            "only {} segments were seen through the CDN",
            latencies.len()
        );
    }
    let quarter = latencies.len() / 4;
    let first = median(&mut latencies[..quarter.max(1)].to_vec());
    let last = median(&mut latencies[latencies.len() - quarter.max(1)..].to_vec());
    let max = latencies.iter().copied().fold(0.0, f64::max);
    let min = latencies.iter().copied().fold(f64::INFINITY, f64::min);
    let median_latency = median(&mut latencies);
    let latency_target = segment + TARGET_LATENCY_SLACK;
    let kept_up = last - first <= segment / 2.0;

    println!("medians of {rounds} rounds");
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "", "cascade", "ffmpeg", "ratio"
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>7.2}x  (rounds {:.2}-{:.2}x; target <= {TARGET_CPU_RATIO:.2}x)",
        "CPU seconds per minute of live", ours, theirs, ratio, ratio_range.0, ratio_range.1
    );
    println!(
        "availability latency (first frame at ingest to fetchable at the CDN), {} segments: median {median_latency:.2} s, max {max:.2} s, range {min:.2}-{max:.2} s (target <= {latency_target:.1} s)",
        seen.len(),
    );
    println!(
        "listed in the CDN's playlist (cached up to origin.live_manifest_max_age): median {listed_median:.2} s"
    );
    println!(
        "kept real time: {} (latency first quarter {first:.2} s, last quarter {last:.2} s; ingest lag samples {:?})",
        if kept_up { "yes" } else { "NO" },
        lags
    );
    match player {
        Ok(serde_json::Value::Null) => {}
        Ok(report) => println!(
            "hls.js latency behind ingest (wall clock minus the program date-time on screen): {} s (played {} s, fatal: {})",
            report["latency"], report["played"], report["fatal"]
        ),
        Err(e) => println!("hls.js: not run ({e:#})"),
    }
    println!("cascade peak RSS: {rss:.0} MB");
    let ok = ratio <= TARGET_CPU_RATIO
        && median_latency <= latency_target
        && max <= latency_target
        && kept_up;
    println!("targets: {}", if ok { "met" } else { "MISSED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// ffmpeg publishing `input` (looped, copied) in real time to `url` for
/// `seconds`.
pub(super) fn publish(
    input: &Path,
    url: &str,
    seconds: u32,
) -> anyhow::Result<std::process::Child> {
    Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
        .args(["-stream_loop", "-1", "-i"])
        .arg(input)
        .args(["-t", &seconds.to_string(), "-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the ffmpeg publisher")
}

/// The stream's `ingest.lag_seconds` every 5 s until `until`.
async fn ingest_lags(
    client: &reqwest::Client,
    base: &str,
    stream_id: &str,
    until: Instant,
) -> Vec<f64> {
    let mut lags = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    while Instant::now() < until {
        every.tick().await;
        if let Ok(response) = client
            .get(format!("{base}/v1/live_streams/{stream_id}"))
            .bearer_auth(KEY)
            .send()
            .await
        {
            let body = response.bytes().await.unwrap_or_default();
            if let Ok(stream) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(lag) = stream["ingest"]["lag_seconds"].as_f64() {
                    lags.push(lag);
                }
            }
        }
    }
    lags
}
