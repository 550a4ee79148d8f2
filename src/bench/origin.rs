//! `cascade bench origin`: objects of a transcoded fixture (10 s of 1080p
//! with film grain, so every rung spends its cap) served by Cascade's origin
//! from its memory tier, and in the same run by nginx from disk, each under
//! wrk on loopback with the server pinned to core 0 and the load to core 1,
//! at the sizes low-latency delivery serves: a media playlist (a few
//! hundred bytes), the DASH manifest (~2 KB, an LL-HLS playlist's size), a
//! part-sized segment (the one nearest 100 KB) and a full 4 s 1080p segment
//! (~2 MB).
//!
//! Both are compared saturated (64 keep-alive connections as fast as
//! they go), in alternating runs, by medians: requests/s from wrk (or,
//! where wrk's core was the ceiling in both servers' runs, requests per
//! second of server core), and latency from a probe beside it
//! ([`super::probe`]: a request every millisecond from a real-time thread
//! on the load core). wrk's own p99 is
//! printed too, but once its core is saturated (95 % and more against a
//! fast server) it counts the time responses wait in wrk's event loop. Then
//! 500 concurrent requests for one segment the origin has not cached yet,
//! counting the storage reads they cost. Last, what metrics cost: an origin
//! with metrics on, scraped by Prometheus every second, against one with
//! `metrics.enabled = false`, on the playlist, in back-to-back pairs.
//!
//! The origin runs as a `cascade serve --roles origin` child so that
//! `taskset` pins the whole server (runtime threads included) and nothing of
//! this process (wrk's parser, the import) shares its core.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cascade_platform::config::EncoderChoice;
use cascade_platform::queue::JobNotifier;
use cascade_platform::{db, Config, ObjectStore, Queue};
use cascade_schemas::keys::{DASH_MANIFEST, MEDIA_PLAYLIST};
use cascade_schemas::{job_kind, AssetId, ObjectKey, PlaybackId, RenditionName};
use cascade_workers::transcode::TranscodeHandler;
use cascade_workers::transcode::VideoEncoder;
use cascade_workers::{HandlerRegistry, Runner};

use super::probe::{Probe, ProbeFigures};
use clap::Args;
use tokio_util::sync::CancellationToken;

const TARGET_RPS_RATIO: f64 = 1.0;
const TARGET_STORAGE_READS: u64 = 1;
/// The source: 10 s of 1080p30 with film grain, so every rung spends its
/// cap and the 4 s segments come out at real footage's sizes.
const SOURCE_SECONDS: u32 = 10;
const TOP_RUNG: &str = "1080p";
/// An LL-HLS part's size: the media segment (any rung) nearest it stands in.
const PART_SIZE: u64 = 100_000;
const SERVER_CORE: &str = "0";
const LOAD_CORE: &str = "1";
/// A load core this busy means wrk, not the server, set the pace.
const LOAD_BOUND: f64 = 0.9;
const READS_METRIC: &str = "cascade_origin_storage_reads_total";
/// Requests/s with metrics on (scraped by Prometheus every second) over the
/// same with metrics off: what instrumentation may cost.
const TARGET_METRICS_RATIO: f64 = 0.97;
/// Back-to-back pairs of the metrics comparison, and the seconds of each
/// run: its target is a 3 % margin, finer than one run's noise on a shared
/// machine (a pair's ratio spreads over +-5 % here), so it takes many short
/// pairs, whose median is judged.
const METRICS_PAIRS: usize = 15;
const METRICS_SECONDS: u32 = 4;

/// The objects measured, in order (`--only` names some of them).
const OBJECTS: [&str; 4] = ["playlist", "manifest", "part-sized", "segment"];

/// Arguments of `cascade bench origin`.
#[derive(Debug, Args)]
pub struct OriginBenchArgs {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Open connections of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Alternating load runs per server; medians are compared (loopback
    /// bandwidth and other work on a shared machine make single runs noisy).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Concurrent requests for the uncached segment.
    #[arg(long, default_value_t = 500)]
    burst: usize,
    /// Measure only these objects (`playlist`, `manifest`, `part-sized`,
    /// `segment`; comma-separated), without the burst and the metrics
    /// cost: to look again at one size. All of them by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// A child process that is killed and reaped however the bench ends.
pub(crate) struct ChildGuard {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
}

impl ChildGuard {
    /// Reads and drops the child's stdout (if piped), so it never blocks
    /// on a full pipe.
    pub(crate) fn drain_stdout(&mut self) {
        if let Some(stdout) = self.child.stdout.take() {
            std::thread::spawn(move || {
                use std::io::BufRead;
                for _ in std::io::BufReader::new(stdout).lines() {}
            });
        }
    }

    /// Fails if the child already exited (a port clash, a bad config).
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first: a SIGKILLed nginx master leaves its worker running
    /// (orphaned, still listening), and the origin drains on SIGTERM. SIGKILL
    /// only if it has not exited after a grace period.
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory preconditions; the pid is our
            // unreaped child, so it cannot name another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the peers' binaries are.
struct Tools {
    wrk: PathBuf,
    nginx: PathBuf,
}

/// What wrk reported for one run.
#[derive(Debug)]
struct WrkFigures {
    requests_per_sec: f64,
    bytes_per_sec: f64,
    p99: Duration,
    /// Non-2xx/3xx responses plus socket errors: a valid run has none.
    errors: u64,
    /// Busy share of the server's core during the run (0..1).
    server_busy: f64,
    /// Busy share of the load generator's core: near 1, the run measured
    /// wrk, not the server.
    load_busy: f64,
}

impl WrkFigures {
    /// Server-core time per request, in microseconds.
    fn server_micros_per_request(&self) -> f64 {
        self.server_busy * 1e6 / self.requests_per_sec.max(1.0)
    }
}

/// `(busy, total)` jiffies of one core, from `/proc/stat`.
fn core_jiffies(core: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{core}")))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy share of `core` between two `core_jiffies` samples.
fn busy_between(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> f64 {
    match (before, after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The tool's path from `PATH`, or from `/usr/sbin` (where Debian puts
/// nginx, often outside a non-root user's `PATH`).
pub(crate) fn require_tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("`{name}` is not installed: run scripts/deps.sh"))
}

/// Imports the fixture and transcodes it in this process; returns the
/// asset, its playback id and the published version.
async fn transcode_fixture(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    store: &ObjectStore,
    input: &Path,
) -> anyhow::Result<(AssetId, PlaybackId, u32)> {
    let queue = Queue::new(pool.clone(), config.queue.clone());
    let title = input.file_name().and_then(|n| n.to_str());
    let (asset, playback) = cascade_ingest::import_file(&queue, store, input, title)
        .await
        .context("importing the fixture")?;

    let mut transcode = config.transcode.clone();
    transcode.encoder = EncoderChoice::Libx264;
    let handler = TranscodeHandler::new(
        pool.clone(),
        store.clone(),
        transcode,
        VideoEncoder::Libx264,
    );
    let mut queue_config = config.queue.clone();
    queue_config.concurrency = 1;
    let stop = CancellationToken::new();
    let notifier = JobNotifier::start(db::pg_config(&config.database)?, stop.clone());
    let runner = Runner::new(
        Queue::new(pool.clone(), queue_config),
        HandlerRegistry::new().register(job_kind::TRANSCODE, handler),
        notifier,
        "bench-origin",
    );
    let worker = tokio::spawn(runner.run(stop.clone()));

    let outcome = super::wait_until_ready(pool, asset, Duration::from_secs(600), || Ok(())).await;
    stop.cancel();
    let _ = worker.await;
    let ready = outcome?;
    let version = ready
        .published_version
        .context("a ready asset without a published version")?;
    Ok((asset, playback, u32::try_from(version)?))
}

/// `cascade serve --roles origin` over the same local directory, pinned to
/// the server core.
fn start_origin(port: u16, objects: &Path) -> anyhow::Result<ChildGuard> {
    start_origin_with(port, objects, true)
}

/// [`start_origin`], with metrics on or off (`metrics.enabled`).
fn start_origin_with(port: u16, objects: &Path, metrics: bool) -> anyhow::Result<ChildGuard> {
    let child = Command::new("taskset")
        .args(["-c", SERVER_CORE])
        .arg(std::env::current_exe()?)
        .args(["serve", "--roles", "origin"])
        .env("CASCADE_METRICS__ENABLED", metrics.to_string())
        .env("CASCADE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("CASCADE_STORAGE__LOCAL_ROOT", objects)
        .env("CASCADE_LOG__FILTER", "warn")
        // Without these the child would read from S3, not the directory the
        // segments were written to.
        .env_remove("CASCADE_STORAGE__S3__ENDPOINT")
        .env_remove("CASCADE_STORAGE__S3__BUCKET")
        .stdout(Stdio::null())
        .spawn()
        .context("starting cascade serve --roles origin")?;
    Ok(ChildGuard {
        name: "the origin",
        child,
    })
}

/// nginx serving `objects` as its document root, pinned to the server core.
/// Configured as a well-tuned static file server: one worker (one core, like
/// the origin), sendfile, cached open file descriptors, and keep-alive
/// without a request cap so neither server pays for reconnects under wrk.
fn start_nginx(nginx: &Path, port: u16, objects: &Path, dir: &Path) -> anyhow::Result<ChildGuard> {
    let prefix = dir.display();
    // As root, workers would otherwise switch to `nobody`, which cannot enter
    // the 0700 temporary directory holding the segments.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        r#"{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ video/iso.segment m4s; video/mp4 mp4; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"#,
        root = objects.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new("taskset")
        .args(["-c", SERVER_CORE])
        .arg(nginx)
        .arg("-p")
        .arg(dir)
        // -e: the compiled-in error log under /var/log may not be writable.
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok(ChildGuard {
        name: "nginx",
        child,
    })
}

/// Waits until `url` answers 200 with a body of `expected_len` bytes
/// (`None`: any non-empty body, for a manifest the origin rewrites).
async fn wait_serving(
    client: &reqwest::Client,
    server: &mut ChildGuard,
    url: &str,
    expected_len: Option<u64>,
) -> anyhow::Result<()> {
    for _ in 0..100 {
        server.check_running()?;
        if let Ok(response) = client.get(url).send().await {
            let status = response.status();
            let len = response.bytes().await?.len() as u64;
            if status.is_success() && expected_len.map_or(len > 0, |expected| len == expected) {
                return Ok(());
            }
            bail!(
                "{}: GET {url} gave {status} with {len} bytes, expected {expected_len:?}",
                server.name,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} did not answer {url} within 10 s", server.name)
}

/// Parses `1.23ms`, `456.78us`, `1.02s`, `2.00m`.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Parses `123.45MB` (wrk prints binary multiples) into bytes.
fn parse_wrk_bytes(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "" | "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0_f64.powi(4),
        _ => return None,
    };
    Some(value * scale)
}

fn parse_wrk(output: &str) -> anyhow::Result<WrkFigures> {
    let mut requests_per_sec = None;
    let mut bytes_per_sec = None;
    let mut p99 = None;
    let mut errors = 0;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = rest.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Transfer/sec:") {
            bytes_per_sec = parse_wrk_bytes(rest.trim());
        } else if let Some(rest) = line.strip_prefix("99%") {
            p99 = parse_wrk_duration(rest.trim());
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(1);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(WrkFigures {
        requests_per_sec: requests_per_sec.context("no Requests/sec in wrk's output")?,
        bytes_per_sec: bytes_per_sec.context("no Transfer/sec in wrk's output")?,
        p99: p99.context("no 99% latency in wrk's output")?,
        errors,
        server_busy: f64::NAN,
        load_busy: f64::NAN,
    })
}

/// wrk against `url` with the latency probe on `probe_path` at `addr`
/// beside it, from the load core.
async fn probed_load(
    wrk: &Path,
    url: &str,
    args: &OriginBenchArgs,
    addr: std::net::SocketAddr,
    probe_path: &str,
) -> anyhow::Result<(WrkFigures, ProbeFigures)> {
    let probe = Probe::start(addr, probe_path, LOAD_CORE.parse()?)?;
    let figures = load(wrk, url, args).await;
    let probed = probe.finish();
    Ok((figures?, probed?))
}

/// wrk on the load core against `url`.
async fn load(wrk: &Path, url: &str, args: &OriginBenchArgs) -> anyhow::Result<WrkFigures> {
    let server_before = core_jiffies(SERVER_CORE);
    let load_before = core_jiffies(LOAD_CORE);
    let output = tokio::process::Command::new("taskset")
        .args(["-c", LOAD_CORE])
        .arg(wrk)
        .arg("-t1")
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .args(["--latency", url])
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut figures = parse_wrk(&text)?;
    figures.server_busy = busy_between(server_before, core_jiffies(SERVER_CORE));
    figures.load_busy = busy_between(load_before, core_jiffies(LOAD_CORE));
    if figures.errors > 0 {
        bail!(
            "wrk saw {} failed requests against {url}:\n{text}",
            figures.errors
        );
    }
    Ok(figures)
}

/// Per-figure medians of several runs.
fn median_figures(runs: Vec<WrkFigures>) -> WrkFigures {
    let median = |mut values: Vec<f64>| super::median(&mut values);
    WrkFigures {
        requests_per_sec: median(runs.iter().map(|r| r.requests_per_sec).collect()),
        bytes_per_sec: median(runs.iter().map(|r| r.bytes_per_sec).collect()),
        p99: Duration::from_secs_f64(median(runs.iter().map(|r| r.p99.as_secs_f64()).collect())),
        errors: runs.iter().map(|r| r.errors).sum(),
        server_busy: median(runs.iter().map(|r| r.server_busy).collect()),
        load_busy: median(runs.iter().map(|r| r.load_busy).collect()),
    }
}

async fn storage_reads(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(READS_METRIC)?.strip_prefix(' ')?;
            value.trim().parse::<f64>().ok()
        })
        .map(|v| v as u64)
        .with_context(|| format!("no {READS_METRIC} in /metrics"))
}

/// `burst` requests for `url` released at once over connections opened
/// beforehand, so they reach the origin together instead of trickling in
/// behind TCP handshakes (which would turn coalescing into plain L1 hits).
async fn burst(
    client: &reqwest::Client,
    base: &str,
    url: &str,
    count: usize,
    expected_len: u64,
) -> anyhow::Result<()> {
    let open =
        futures::future::join_all((0..count).map(|_| client.get(format!("{base}/healthz")).send()))
            .await;
    for response in open {
        response.context("opening a connection for the burst")?;
    }
    let gate = Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.wait().await;
                let response = client.get(&url).send().await?;
                let status = response.status();
                let len = response.bytes().await?.len() as u64;
                anyhow::Ok((status, len))
            })
        })
        .collect();
    for task in tasks {
        let (status, len) = task.await??;
        if !status.is_success() || len != expected_len {
            bail!("burst request: {status} with {len} bytes, expected {expected_len}");
        }
    }
    Ok(())
}

/// Runs the benchmark.
pub async fn run(args: OriginBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let tools = Tools {
        wrk: require_tool("wrk")?,
        nginx: require_tool("nginx")?,
    };
    require_tool("taskset")?;
    // A misspelt --only fails before the minute of transcoding.
    let measured = selected(&OBJECTS, &args.only)?;
    let input = super::detailed_source(1920, 1080, SOURCE_SECONDS)?;
    let scratch = tempfile::tempdir()?;
    let objects = scratch.path().join("objects");
    let nginx_dir = scratch.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;

    // The local backend, so nginx can serve the very files the origin reads.
    let mut config = config;
    config.storage.s3 = None;
    config.storage.local_root = objects.clone();
    let pool = db::pool(&config.database)?;
    db::migrate(&pool).await.context("migrating the database")?;
    let store = ObjectStore::from_config(&config.storage).await?;

    println!("bench origin: transcoding {} ...", input.display());
    let (asset, playback, version) = transcode_fixture(&config, &pool, &store, &input).await?;
    let rung = RenditionName::new(TOP_RUNG)?;
    let segments = segments_on_disk(&objects, asset, version)?;
    let mut top: Vec<&SegmentFile> = segments.iter().filter(|f| f.rung == rung).collect();
    top.sort_by_key(|f| std::cmp::Reverse(f.len));
    let [loaded, uncached, ..] = top[..] else {
        bail!("the {TOP_RUNG} rendition has fewer than two segments");
    };
    let part = segments
        .iter()
        .filter(|f| !(f.rung == rung && [loaded.number, uncached.number].contains(&f.number)))
        .min_by_key(|f| f.len.abs_diff(PART_SIZE))
        .context("no part-sized segment")?;
    let uncached_len = uncached.len;
    let [playlist, manifest, part_sized, segment] = OBJECTS;
    let subjects = [
        (
            playlist,
            ObjectKey::media_playlist(asset, version, &rung),
            format!("{TOP_RUNG}/{MEDIA_PLAYLIST}"),
        ),
        // The presentation's ~2 KB text object (an LL-HLS media playlist
        // with its parts is this size).
        (
            manifest,
            ObjectKey::dash_manifest(asset, version),
            DASH_MANIFEST.to_owned(),
        ),
        (part_sized, part.key(asset, version), part.path()),
        (segment, loaded.key(asset, version), loaded.path()),
    ];

    let client = reqwest::Client::new();
    let origin_port = free_port()?;
    let nginx_port = free_port()?;
    let origin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], origin_port));
    let nginx_addr = std::net::SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let origin_base = format!("http://{origin_addr}");
    let nginx_base = format!("http://{nginx_addr}");
    let uncached_url = format!("{origin_base}/play/{playback}/{}", uncached.path());
    let mut origin = start_origin(origin_port, &objects)?;
    let mut nginx = start_nginx(&tools.nginx, nginx_port, &objects, &nginx_dir)?;
    println!(
        "wrk -t1 -c{} -d{}s, servers on core {SERVER_CORE}, wrk on core {LOAD_CORE}; medians of {} alternating runs per object",
        args.connections,
        args.seconds,
        args.runs.max(1)
    );

    let mut all_met = true;
    let mut table = Vec::new();
    for (label, key, path) in subjects
        .iter()
        .filter(|(label, ..)| measured.contains(label))
    {
        let len = std::fs::metadata(objects.join(key.as_str()))
            .with_context(|| format!("{key} on disk"))?
            .len();
        if len > config.origin.max_cached_object.0 {
            bail!("{key} ({len} B) is over origin.max_cached_object: it would not be served from memory");
        }
        let origin_path = format!("/play/{playback}/{path}");
        let nginx_path = format!("/{key}");
        let origin_url = format!("{origin_base}{origin_path}");
        let nginx_url = format!("{nginx_base}{nginx_path}");
        // The first successful GET also fills the origin's memory tier. The
        // origin names the version in the MPD's URLs, so its length differs
        // from the stored file's that nginx serves.
        let rewritten = *key == ObjectKey::dash_manifest(asset, version);
        wait_serving(
            &client,
            &mut origin,
            &origin_url,
            (!rewritten).then_some(len),
        )
        .await?;
        wait_serving(&client, &mut nginx, &nginx_url, Some(len)).await?;
        // Each server alone on its core while it is measured, in turns.
        let (mut our_runs, mut their_runs) = (Vec::new(), Vec::new());
        let (mut our_probes, mut their_probes) = (Vec::new(), Vec::new());
        for run in 1..=args.runs.max(1) {
            let (ours, our_probe) =
                probed_load(&tools.wrk, &origin_url, &args, origin_addr, &origin_path).await?;
            origin.check_running()?;
            let (theirs, their_probe) =
                probed_load(&tools.wrk, &nginx_url, &args, nginx_addr, &nginx_path).await?;
            println!(
                "{label} ({len} B) run {run}: origin {:.0} req/s, probe p50 {} p99 {}, wrk p99 {} (cores: server {:.0}%, wrk {:.0}%); nginx {:.0} req/s, probe p50 {} p99 {}, wrk p99 {} (server {:.0}%, wrk {:.0}%)",
                ours.requests_per_sec,
                ms(our_probe.p50),
                ms(our_probe.p99),
                ms(ours.p99),
                ours.server_busy * 100.0,
                ours.load_busy * 100.0,
                theirs.requests_per_sec,
                ms(their_probe.p50),
                ms(their_probe.p99),
                ms(theirs.p99),
                theirs.server_busy * 100.0,
                theirs.load_busy * 100.0,
            );
            our_runs.push(ours);
            their_runs.push(theirs);
            our_probes.push(our_probe);
            their_probes.push(their_probe);
        }
        let spread = (
            Spread::of(&our_runs, &our_probes),
            Spread::of(&their_runs, &their_probes),
        );
        let ours = median_figures(our_runs);
        let theirs = median_figures(their_runs);
        let (our_probe, their_probe) = (median_probe(&our_probes), median_probe(&their_probes));
        let throughput = Throughput::judge(&ours, &theirs);
        let met = throughput.ratio >= TARGET_RPS_RATIO && our_probe.p99 <= their_probe.p99;
        all_met &= met;
        table.push(Row {
            label,
            len,
            ours,
            theirs,
            throughput,
            our_probe,
            their_probe,
            spread,
            met,
        });
    }
    drop(nginx);

    // The burst and the metrics cost, unless only some objects are looked at.
    let everything = args.only.is_empty();
    let burst_reads = if everything {
        let reads_before = storage_reads(&client, &origin_base).await?;
        burst(
            &client,
            &origin_base,
            &uncached_url,
            args.burst,
            uncached_len,
        )
        .await?;
        Some(storage_reads(&client, &origin_base).await? - reads_before)
    } else {
        None
    };
    drop(origin);

    let (playlist_label, playlist_key, playlist_path) = &subjects[0];
    let playlist_len = std::fs::metadata(objects.join(playlist_key.as_str()))?.len();
    let cost = if everything {
        Some(
            metrics_cost(
                &tools,
                &args,
                &client,
                &objects,
                &format!("/play/{playback}/{playlist_path}"),
                playlist_len,
                scratch.path(),
            )
            .await?,
        )
    } else {
        None
    };

    println!(
        "{:<20} {:>10} {:>10} {:>6}  {:>10} {:>10} {:>6}   {:>19}   {:>21}   {:>9}  {:>9}",
        "object (medians)",
        "origin rps",
        "nginx rps",
        "ratio",
        "origin p99",
        "nginx p99",
        "ratio",
        "p50 origin / nginx",
        "wrk's p99 (info)",
        "origin us",
        "nginx us"
    );
    for row in &table {
        let (ours, theirs) = (&row.ours, &row.theirs);
        let (our_probe, their_probe) = (&row.our_probe, &row.their_probe);
        println!(
            "{:<20} {:>10.0} {:>10.0} {:>5.2}x{} {:>10} {:>10} {:>5.2}x   {:>19}   {:>21}   {:>9.2}  {:>9.2}  {}",
            format!("{} ({} KB)", row.label, row.len / 1000),
            ours.requests_per_sec,
            theirs.requests_per_sec,
            row.throughput.ratio,
            if row.throughput.per_core { "*" } else { " " },
            ms(our_probe.p99),
            ms(their_probe.p99),
            our_probe.p99.as_secs_f64() / their_probe.p99.as_secs_f64(),
            format!("{} / {}", ms(our_probe.p50), ms(their_probe.p50)),
            format!("{} / {}", ms(ours.p99), ms(theirs.p99)),
            ours.server_micros_per_request(),
            theirs.server_micros_per_request(),
            if row.met { "met" } else { "MISSED" }
        );
        println!(
            "  spread over {} runs: origin {}; nginx {}",
            args.runs.max(1),
            row.spread.0,
            row.spread.1
        );
        if row.throughput.per_core {
            println!(
                "  * {}: wrk's core was the ceiling in both servers' runs ({:.0}% and {:.0}% busy), so the ratio is of requests per second of server core, nginx's {:.2} us per request over the origin's {:.2}",
                row.label,
                ours.load_busy * 100.0,
                theirs.load_busy * 100.0,
                theirs.server_micros_per_request(),
                ours.server_micros_per_request(),
            );
        }
    }
    println!(
        "targets at every size: requests/s >= {TARGET_RPS_RATIO:.2}x nginx's (* per server core where wrk was the ceiling, >= {:.0}% busy, in both runs) and p99 <= nginx's, both saturated; p99 and p50 from a probe request every 1 ms at real-time priority beside wrk (wrk's own p99 counts its queue once its core is saturated)",
        LOAD_BOUND * 100.0
    );
    println!(
        "us: server-core time per request at saturation (the core's busy share over requests/s)"
    );
    let Some((burst_reads, cost)) = burst_reads.zip(cost) else {
        println!(
            "burst and metrics cost not measured (--only); targets of the objects measured: {}",
            if all_met { "met" } else { "MISSED" }
        );
        return Ok(if all_met {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    };
    println!(
        "{} concurrent requests for one uncached segment: {burst_reads} storage read(s) (target {TARGET_STORAGE_READS})",
        args.burst
    );

    println!(
        "metrics cost ({playlist_label}, {playlist_len} B): metrics on and scraped by Prometheus every 1 s {:.0} req/s ({:.2} us/req), off {:.0} req/s ({:.2} us/req) (medians): median of {} back-to-back pairs {:.3}x, pairs {:.3}x-{:.3}x (target >= {TARGET_METRICS_RATIO:.2}x) {}",
        cost.on.requests_per_sec,
        cost.on.server_micros_per_request(),
        cost.off.requests_per_sec,
        cost.off.server_micros_per_request(),
        cost.run_ratios.len(),
        cost.ratio(),
        cost.spread().0,
        cost.spread().1,
        if cost.met() { "met" } else { "MISSED" }
    );
    if cost.off.load_busy >= LOAD_BOUND {
        println!(
            "  wrk's core was {:.0}% busy: the server-core time per request (us/req) is the finer measure of the cost",
            cost.off.load_busy * 100.0
        );
    }
    let ok = all_met && burst_reads == TARGET_STORAGE_READS && cost.met();
    println!("targets: {}", if ok { "met" } else { "MISSED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The objects `--only` names (all of `labels` when it names none).
fn selected<'a>(labels: &[&'a str], only: &[String]) -> anyhow::Result<Vec<&'a str>> {
    if let Some(unknown) = only.iter().find(|name| !labels.contains(&name.as_str())) {
        bail!("--only {unknown}: not one of {}", labels.join(", "));
    }
    Ok(labels
        .iter()
        .copied()
        .filter(|label| only.is_empty() || only.iter().any(|name| name == label))
        .collect())
}

/// One object's figures.
struct Row<'a> {
    label: &'a str,
    len: u64,
    /// Saturated.
    ours: WrkFigures,
    theirs: WrkFigures,
    throughput: Throughput,
    our_probe: ProbeFigures,
    their_probe: ProbeFigures,
    /// The runs' ranges, origin's then nginx's, printed under the medians
    /// (the verdict is the medians'): a margin is read beside them.
    spread: (Spread, Spread),
    met: bool,
}

/// The lowest and highest of one server's runs, each figure on its own.
#[derive(Debug, PartialEq)]
struct Spread {
    requests_per_sec: (f64, f64),
    micros_per_request: (f64, f64),
    probe_p99: (Duration, Duration),
}

impl Spread {
    fn of(runs: &[WrkFigures], probes: &[ProbeFigures]) -> Self {
        use super::range;
        let no_runs = (0.0, 0.0);
        Self {
            requests_per_sec: range(runs.iter().map(|r| r.requests_per_sec)).unwrap_or(no_runs),
            micros_per_request: range(runs.iter().map(WrkFigures::server_micros_per_request))
                .unwrap_or(no_runs),
            probe_p99: range(probes.iter().map(|p| p.p99)).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}-{:.0} req/s ({:.2}-{:.2} us), p99 {:.2}-{:.2} ms",
            self.requests_per_sec.0,
            self.requests_per_sec.1,
            self.micros_per_request.0,
            self.micros_per_request.1,
            self.probe_p99.0.as_secs_f64() * 1e3,
            self.probe_p99.1.as_secs_f64() * 1e3
        )
    }
}

/// The origin's throughput against nginx's, as judged.
struct Throughput {
    ratio: f64,
    /// Whether wrk's core was the ceiling in both servers' runs, so the
    /// ratio is of requests per second of server core (each server's
    /// capacity) rather than of requests/s (wrk's, twice).
    per_core: bool,
}

impl Throughput {
    fn judge(ours: &WrkFigures, theirs: &WrkFigures) -> Self {
        let per_core = ours.load_busy >= LOAD_BOUND && theirs.load_busy >= LOAD_BOUND;
        let ratio = if per_core {
            theirs.server_micros_per_request() / ours.server_micros_per_request().max(1e-9)
        } else {
            ours.requests_per_sec / theirs.requests_per_sec.max(1.0)
        };
        Self { ratio, per_core }
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// Per-figure medians of the probe's runs.
fn median_probe(runs: &[ProbeFigures]) -> ProbeFigures {
    let median = |pick: fn(&ProbeFigures) -> Duration| {
        let mut seconds: Vec<f64> = runs.iter().map(|r| pick(r).as_secs_f64()).collect();
        Duration::from_secs_f64(super::median(&mut seconds))
    };
    ProbeFigures {
        p50: median(|r| r.p50),
        p99: median(|r| r.p99),
    }
}

/// Medians with metrics on and off, and each run's ratio.
struct MetricsCost {
    on: WrkFigures,
    off: WrkFigures,
    run_ratios: Vec<f64>,
}

impl MetricsCost {
    /// The median of the per-pair ratios: each pair ran back to back, so a
    /// slower or faster stretch of the shared machine cancels within it.
    fn ratio(&self) -> f64 {
        super::median(&mut self.run_ratios.clone())
    }

    /// The lowest and highest per-run ratio.
    fn spread(&self) -> (f64, f64) {
        super::range(self.run_ratios.iter().copied()).unwrap_or((f64::NAN, f64::NAN))
    }

    fn met(&self) -> bool {
        self.ratio() >= TARGET_METRICS_RATIO
    }
}

/// One origin with metrics on, scraped by a real Prometheus (Debian's)
/// every second, against one with `metrics.enabled = false`, under the same
/// load in alternating runs.
async fn metrics_cost(
    tools: &Tools,
    args: &OriginBenchArgs,
    client: &reqwest::Client,
    objects: &Path,
    path: &str,
    len: u64,
    scratch: &Path,
) -> anyhow::Result<MetricsCost> {
    let prometheus = require_tool("prometheus")?;
    let (on_port, off_port, prometheus_port) = (free_port()?, free_port()?, free_port()?);
    let on_url = format!("http://127.0.0.1:{on_port}{path}");
    let off_url = format!("http://127.0.0.1:{off_port}{path}");
    let dir = scratch.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\n\
             scrape_configs:\n  - job_name: origin\n    \
             static_configs: [{{ targets: [\"127.0.0.1:{on_port}\"] }}]\n"
        ),
    )?;
    let mut on = start_origin_with(on_port, objects, true)?;
    let mut off = start_origin_with(off_port, objects, false)?;
    wait_serving(client, &mut on, &on_url, Some(len)).await?;
    wait_serving(client, &mut off, &off_url, Some(len)).await?;
    // With the load generator: the scraper is the operator's, not the origin's.
    let mut scraper = ChildGuard {
        name: "prometheus",
        child: Command::new("taskset")
            .args(["-c", LOAD_CORE])
            .arg(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?,
    };
    // Measure only once Prometheus scrapes the origin.
    let up = format!("http://127.0.0.1:{prometheus_port}/api/v1/query?query=up");
    let mut scraping = false;
    for _ in 0..100 {
        scraper.check_running()?;
        if let Ok(response) = client.get(&up).send().await {
            if response.text().await.is_ok_and(|t| t.contains("\"1\"]")) {
                scraping = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !scraping {
        bail!("prometheus did not scrape the origin within 10 s");
    }
    let mut on_runs = Vec::new();
    let mut off_runs = Vec::new();
    let mut run_ratios = Vec::new();
    let short = OriginBenchArgs {
        seconds: METRICS_SECONDS,
        only: Vec::new(),
        ..*args
    };
    let args = &short;
    for run in 1..=METRICS_PAIRS {
        // Which goes first alternates, so a drift of the machine's speed
        // during the pairs does not favour one side.
        let (with, without) = if run % 2 == 1 {
            let with = load(&tools.wrk, &on_url, args).await?;
            (with, load(&tools.wrk, &off_url, args).await?)
        } else {
            let without = load(&tools.wrk, &off_url, args).await?;
            (load(&tools.wrk, &on_url, args).await?, without)
        };
        on.check_running()?;
        off.check_running()?;
        println!(
            "metrics cost run {run}: on {:.0} req/s ({:.2} us/req), off {:.0} req/s ({:.2} us/req)",
            with.requests_per_sec,
            with.server_micros_per_request(),
            without.requests_per_sec,
            without.server_micros_per_request()
        );
        run_ratios.push(with.requests_per_sec / without.requests_per_sec.max(1.0));
        on_runs.push(with);
        off_runs.push(without);
    }
    scraper.check_running()?;
    Ok(MetricsCost {
        on: median_figures(on_runs),
        off: median_figures(off_runs),
        run_ratios,
    })
}

/// A media segment of the transcoded fixture on disk.
#[derive(Debug)]
struct SegmentFile {
    rung: RenditionName,
    number: u64,
    len: u64,
}

impl SegmentFile {
    fn key(&self, asset: AssetId, version: u32) -> ObjectKey {
        ObjectKey::media_segment(asset, version, &self.rung, self.number)
    }

    /// The path under `/play/{playback}/`.
    fn path(&self) -> String {
        format!("{}/{}.m4s", self.rung, self.number)
    }
}

/// Every video rendition's media segments (audio is packaged on its own and
/// its segments are all alike).
fn segments_on_disk(
    objects: &Path,
    asset: AssetId,
    version: u32,
) -> anyhow::Result<Vec<SegmentFile>> {
    let version_dir = objects.join(ObjectKey::version_prefix(asset, version));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&version_dir)
        .with_context(|| format!("reading {}", version_dir.display()))?
    {
        let entry = entry?;
        let Ok(rung) = RenditionName::new(entry.file_name().to_string_lossy().into_owned()) else {
            continue;
        };
        if rung.as_str() == "audio" || !entry.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(entry.path())? {
            let file = file?;
            let name = file.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".m4s"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            found.push(SegmentFile {
                rung: rung.clone(),
                number,
                len: file.metadata()?.len(),
            });
        }
    }
    if found.is_empty() {
        bail!("no rendition segments under {}", version_dir.display());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests_per_sec: f64, server_busy: f64, load_busy: f64) -> WrkFigures {
        WrkFigures {
            requests_per_sec,
            bytes_per_sec: 0.0,
            p99: Duration::ZERO,
            errors: 0,
            server_busy,
            load_busy,
        }
    }

    #[test]
    fn the_spread_is_each_figures_own_lowest_and_highest_run() {
        let runs = [
            figures(100_000.0, 1.0, 0.9),
            figures(125_000.0, 0.625, 0.9),
            figures(50_000.0, 0.375, 0.9),
        ];
        let probe = |p99_micros| ProbeFigures {
            p50: Duration::from_micros(400),
            p99: Duration::from_micros(p99_micros),
        };
        let probes = [probe(900), probe(610), probe(750)];
        let spread = Spread::of(&runs, &probes);
        assert_eq!(spread.requests_per_sec, (50_000.0, 125_000.0));
        // Not the runs with the fewest and most requests: 10 us in the
        // first, 5 us in the second, 7.5 us in the third.
        assert_eq!(spread.micros_per_request, (5.0, 10.0));
        assert_eq!(
            spread.probe_p99,
            (Duration::from_micros(610), Duration::from_micros(900))
        );
        assert_eq!(
            spread.to_string(),
            "50000-125000 req/s (5.00-10.00 us), p99 0.61-0.90 ms"
        );
    }

    #[test]
    fn only_names_objects_the_bench_serves() {
        let labels = OBJECTS;
        assert_eq!(selected(&labels, &[]).unwrap(), labels);
        let only = ["segment".to_owned(), "playlist".to_owned()];
        assert_eq!(selected(&labels, &only).unwrap(), ["playlist", "segment"]);
        let error = selected(&labels, &["part".to_owned()]).unwrap_err();
        assert!(
            error.to_string().contains("--only part: not one of"),
            "{error}"
        );
    }

    #[test]
    fn throughput_is_judged_per_server_core_only_where_wrk_capped_both_runs() {
        // wrk saturated against both: equal requests/s, but the origin's
        // core was 80 % busy and nginx's 100 %.
        let capped =
            Throughput::judge(&figures(40_000.0, 0.8, 0.99), &figures(40_000.0, 1.0, 0.97));
        assert!(capped.per_core);
        assert!((capped.ratio - 1.25).abs() < 1e-9, "{}", capped.ratio);
        // wrk had room in nginx's runs: requests/s are the servers' own.
        let free = Throughput::judge(&figures(2_000.0, 0.8, 0.99), &figures(1_500.0, 1.0, 0.7));
        assert!(!free.per_core);
        assert!((free.ratio - 2_000.0 / 1_500.0).abs() < 1e-9);
    }

    #[test]
    fn parses_wrk_latency_output() {
        let output = "Running 10s test @ http://127.0.0.1:1/x
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  512.00us  14.20ms   90.00%
    Req/Sec    30.12k     1.01k   32.00k    80.00%
  Latency Distribution
     50%    2.00ms
     75%    2.30ms
     90%    2.70ms
     99%  850.00us
  300000 requests in 10.00s, 1.50GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  30000.50
Transfer/sec:    153.60MB
";
        let figures = parse_wrk(output).unwrap();
        assert_eq!(figures.requests_per_sec, 30000.5);
        assert_eq!(figures.bytes_per_sec, 153.6 * 1024.0 * 1024.0);
        assert_eq!(figures.p99, Duration::from_micros(850));
        assert_eq!(figures.errors, 3);
    }
}
