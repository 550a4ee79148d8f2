//! `cascade bench ttp`: time to playable and time to ready.
//!
//! A 60 s 1080p30 source (synthetic, made once) is uploaded through tus
//! into a `cascade serve --roles ingest,origin` child while a
//! `--roles workers` child transcodes (default ladder) and hls.js in
//! headless Chromium, started beforehand and polling the asset's master
//! playlist through the nginx CDN (`infra/cdn/nginx.conf`), waits to play
//! it. From the final PATCH's response it measures:
//!
//! - **time to playable**: to the first frame hls.js presents (target:
//!   median of the runs <= 1.8 s, Mux's published median for clips under
//!   a minute), with the steps of the critical path (transcode job queued,
//!   claimed, asset playable, master playlist answered at the player);
//! - **time to ready**: to the asset `ready`, and the worker process's CPU
//!   seconds, against the `ffmpeg` CLI doing the same ladder from the same
//!   file in the same run (`cascade bench ladder`'s command line), wall and
//!   CPU (target: <= 1.0x each, medians of runs alternating with
//!   Cascade's);
//! - **the publish gate**: the time its checks took within that (the
//!   asset's `quality.seconds`; target: at most 5 % of the time to ready).
//!
//! The worker runs at a lower CPU priority (nice 10): in production the
//! player, the CDN, the origin and the API are not on the transcoding
//! machine, and here the browser would otherwise wait for x264 on the two
//! shared cores. The transcode itself still has both cores.
//!
//! Then a 10-minute 720p source is transcoded with 1 and with 2 worker
//! processes, each pinned to one core (`bench/chunks.rs`): chunked
//! transcoding spreads one long video over the workers there are, and the
//! two times show the speed-up (printed, with no target).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use cascade_platform::{assets, db, Config};
use cascade_schemas::ladder;
use cascade_schemas::AssetState;
use clap::Args;
use tokio::io::AsyncBufReadExt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::live::{
    process_cpu_seconds, spawn_serve, spawn_serve_logging, start_cdn, wait_http, KEY,
};
use super::origin::{free_port, ChildGuard};
use super::{ladder as ladder_bench, median, upload};

/// Time to playable, seconds (Mux's published median for clips under a minute).
const TARGET_TTP_SECONDS: f64 = 1.8;
/// The publish gate's share of the time to ready (#18: at most 5 % of the encode).
const TARGET_GATE_SHARE: f64 = 0.05;
/// Time to ready and the worker's CPU over the ffmpeg CLI's.
const TARGET_READY_RATIO: f64 = 1.0;

/// Arguments of `cascade bench ttp`.
#[derive(Debug, Args)]
pub struct TtpBenchArgs {
    /// Uploads measured (and CLI runs); medians are compared.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Length of the source, seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Length of the long source timed with 1 and 2 workers, seconds
    /// (0: skip that part).
    #[arg(long, default_value_t = 600)]
    long_seconds: u32,
}

/// The worker's own steps, seconds after the transcode began (its log
/// lines "asset playable while transcoding" and "asset ready"; NaN until
/// logged).
#[derive(Debug, Clone, Copy)]
struct WorkerSteps {
    probed: f64,
    encoding: f64,
    first_segment: f64,
    playable: f64,
    /// Every segment encoded and stored.
    stored: f64,
    /// The final playlists and manifests stored.
    manifests: f64,
    /// The publish gate done.
    gate: f64,
    /// The version published (`ready`).
    ready: f64,
    /// When the bench read the "asset ready" line (Unix seconds).
    ready_logged_at: f64,
}

impl Default for WorkerSteps {
    fn default() -> Self {
        Self {
            probed: f64::NAN,
            encoding: f64::NAN,
            first_segment: f64::NAN,
            playable: f64::NAN,
            stored: f64::NAN,
            manifests: f64::NAN,
            gate: f64::NAN,
            ready: f64::NAN,
            ready_logged_at: f64::NAN,
        }
    }
}

/// The worker's steps by asset id, read from its log as it runs; `changed`
/// wakes whoever waits for a step.
#[derive(Default)]
struct WorkerLog {
    steps: Mutex<HashMap<String, WorkerSteps>>,
    changed: tokio::sync::Notify,
}

impl WorkerLog {
    fn steps_of(&self, asset: &str) -> Option<WorkerSteps> {
        self.steps
            .lock()
            .ok()
            .and_then(|steps| steps.get(asset).copied())
    }

    /// `asset`'s steps once `done` holds for them, or as they are after
    /// `patience` without it.
    async fn wait_for(
        &self,
        asset: &str,
        patience: Duration,
        done: impl Fn(&WorkerSteps) -> bool,
    ) -> Option<WorkerSteps> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Registered before the look, so a line read in between wakes it.
            let changed = self.changed.notified();
            let steps = self.steps_of(asset);
            if steps.as_ref().is_some_and(&done) {
                return steps;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.steps_of(asset);
            }
        }
    }
}

type StepsByAsset = Arc<WorkerLog>;

/// Reads the worker's JSON log lines (stderr), keeping each asset's steps
/// to playable and to ready.
fn collect_worker_steps(guard: &mut ChildGuard) -> StepsByAsset {
    guard.drain_stdout();
    let shared: StepsByAsset = Arc::default();
    if let Some(stdout) = guard.child.stderr.take() {
        let log = shared.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let seconds =
                    |field: &str| event[field].as_f64().map_or(f64::NAN, |ms| ms / 1000.0);
                let Some(asset) = event["asset_id"].as_str() else {
                    continue;
                };
                let Ok(mut steps) = log.steps.lock() else {
                    continue;
                };
                if event["message"] == "asset playable while transcoding" {
                    let entry = steps.entry(asset.to_owned()).or_default();
                    entry.probed = seconds("probed_ms");
                    entry.encoding = seconds("encoding_ms");
                    entry.first_segment = seconds("first_segment_ms");
                    entry.playable = seconds("playable_ms");
                } else if event["message"] == "asset ready" {
                    let entry = steps.entry(asset.to_owned()).or_default();
                    entry.stored = seconds("stored_ms");
                    entry.manifests = seconds("manifests_ms");
                    entry.gate = seconds("gate_ms");
                    entry.ready = seconds("ready_ms");
                    entry.ready_logged_at = epoch_seconds();
                }
                drop(steps);
                log.changed.notify_waiters();
            }
        });
    }
    shared
}

/// One figure of a [`Measured`].
type Pick = fn(&Measured) -> f64;

/// What one upload measured, in seconds from the final PATCH's response.
struct Measured {
    queued: f64,
    claimed: f64,
    probed: f64,
    encoding: f64,
    first_segment: f64,
    /// The worker's steps to ready (its clock placed on this one).
    stored: f64,
    manifests: f64,
    gate_done: f64,
    published: f64,
    playable: f64,
    manifest_at_player: f64,
    first_frame: f64,
    ready: f64,
    /// Time the publish gate's checks took (part of `ready`).
    gate: f64,
    worker_cpu: f64,
}

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Lowers every thread of process `pid` to `niceness` (threads it creates
/// later inherit it from their creator).
fn renice(pid: u32, niceness: i32) {
    super::for_each_thread(pid, |tid| {
        // SAFETY: setpriority has no memory preconditions; `tid` is a
        // thread of our own child.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, niceness) };
    });
}

/// One upload, played as soon as it can be.
async fn measure(
    client: &reqwest::Client,
    pool: &deadpool_postgres::Pool,
    base: &str,
    cdn_port: u16,
    worker: &mut ChildGuard,
    worker_steps: &StepsByAsset,
    source: &Path,
) -> anyhow::Result<Measured> {
    let size = std::fs::metadata(source)?.len();
    let (location, asset) = upload::tus_create_asset(client, base, KEY, size).await?;
    let playback_id = assets::get(pool, asset)
        .await?
        .context("the upload's asset")?
        .playback_id;
    let url = format!("http://127.0.0.1:{cdn_port}/play/{playback_id}/master.m3u8");
    let mut player = tokio::process::Command::new("node")
        .arg("tests/players/play.mjs")
        .args([
            "--player",
            "hls",
            "--url",
            &url,
            "--seconds",
            "1",
            "--poll",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node tests/players/play.mjs (scripts/deps.sh installs it)")?;
    let mut lines =
        tokio::io::BufReader::new(player.stdout.take().context("the player's stdout")?).lines();
    // The browser is up and polling before the upload ends.
    loop {
        let line = lines
            .next_line()
            .await?
            .context("the player exited before it was ready")?;
        if line.trim() == "ready" {
            break;
        }
    }

    let cpu_before = process_cpu_seconds(worker.child.id());
    let mut file = tokio::fs::File::open(source).await?;
    upload::tus_send(client, &location, KEY, &mut file, size, upload::TUS_PATCH).await?;
    let patched = epoch_seconds();
    let deadline = Instant::now() + Duration::from_secs(600);
    let asset_key = asset.to_string();
    // The worker logs "asset ready" as it publishes: the bench wakes on
    // that line, and asks the database at it or every 250 ms (an error,
    // a worker that died), so its own polling takes next to nothing from
    // the two cores it measures.
    let (ready, gate) = loop {
        worker.check_running()?;
        let logged = worker_steps
            .wait_for(&asset_key, Duration::from_millis(250), |s| {
                !s.ready_logged_at.is_nan()
            })
            .await
            .map(|s| s.ready_logged_at)
            .filter(|at| !at.is_nan());
        let current = assets::get(pool, asset)
            .await?
            .context("the asset vanished")?;
        match current.state {
            AssetState::Ready => {
                let gate = current
                    .quality
                    .as_ref()
                    .and_then(|q| q["seconds"].as_f64())
                    .unwrap_or(f64::NAN);
                let seen = logged.unwrap_or_else(epoch_seconds);
                break (seen - patched, gate);
            }
            AssetState::Errored => bail!(
                "the transcode failed: {}",
                current.error_message.unwrap_or_default()
            ),
            _ if Instant::now() > deadline => bail!("the asset was not ready in 10 minutes"),
            _ => {}
        }
    };
    let worker_cpu = process_cpu_seconds(worker.child.id()) - cpu_before;

    let mut report = serde_json::Value::Null;
    while let Some(line) = lines.next_line().await? {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
            report = value;
        }
    }
    let epoch_ms = |field: &str| {
        report[field]
            .as_f64()
            .map(|ms| ms / 1000.0 - patched)
            .with_context(|| format!("the player reported no {field}: {report}"))
    };
    let first_frame = epoch_ms("first_frame_epoch_ms")?;
    let manifest_at_player = epoch_ms("manifest_epoch_ms")?;

    let client_db = pool.get().await?;
    let row = client_db
        .query_one(
            "SELECT
                 (SELECT extract(epoch FROM created_at)::float8 FROM jobs
                   WHERE kind = 'transcode' AND payload->>'asset_id' = $1 ORDER BY id LIMIT 1),
                 (SELECT extract(epoch FROM started_at)::float8 FROM jobs
                   WHERE kind = 'transcode' AND payload->>'asset_id' = $1 ORDER BY id LIMIT 1),
                 (SELECT extract(epoch FROM created_at)::float8 FROM jobs
                   WHERE kind = 'webhook' AND payload->>'type' = 'asset.playable'
                     AND payload->'data'->>'asset_id' = $1 LIMIT 1)",
            &[&asset.to_string()],
        )
        .await?;
    let since = |value: Option<f64>| value.map_or(f64::NAN, |at| at - patched);
    // The worker's steps count from the transcode's start, just after the
    // claim; placed on this clock by its own "playable" step.
    let playable = since(row.get(2));
    // The worker logs "asset ready" just after the state changes.
    let steps = worker_steps
        .wait_for(&asset_key, Duration::from_secs(2), |s| !s.ready.is_nan())
        .await;
    let worker_step = |pick: fn(&WorkerSteps) -> f64| {
        steps.map_or(f64::NAN, |steps| playable - steps.playable + pick(&steps))
    };
    Ok(Measured {
        queued: since(row.get(0)),
        claimed: since(row.get(1)),
        probed: worker_step(|s| s.probed),
        encoding: worker_step(|s| s.encoding),
        first_segment: worker_step(|s| s.first_segment),
        stored: worker_step(|s| s.stored),
        manifests: worker_step(|s| s.manifests),
        gate_done: worker_step(|s| s.gate),
        published: worker_step(|s| s.ready),

        playable,
        manifest_at_player,
        first_frame,
        ready,
        gate,
        worker_cpu,
    })
}

/// The ffmpeg CLI doing the same ladder: (wall, CPU) seconds.
fn cli_run(source: &Path, config: &Config, out: &Path) -> anyhow::Result<(f64, f64)> {
    let (width, height) = (1920, 1080);
    let rungs = ladder::plan(width, height, &config.transcode.ladder);
    let cpu_before = ladder_bench::cpu_seconds(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .args(ladder_bench::cli_args(
            source,
            &rungs,
            &config.transcode,
            out,
        ))
        .status()
        .context("running the ffmpeg CLI")?;
    if !status.success() {
        bail!("the ffmpeg CLI failed: {status}");
    }
    Ok((
        started.elapsed().as_secs_f64(),
        ladder_bench::cpu_seconds(libc::RUSAGE_CHILDREN) - cpu_before,
    ))
}

/// `median (min-max)` of `values`.
fn spread(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    let middle = median(&mut sorted);
    format!(
        "{middle:.2} ({:.2}-{:.2})",
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN)
    )
}

/// Runs the benchmark.
pub async fn run(args: TtpBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let source = super::synthetic_source(1920, 1080, args.seconds)?;
    let dir = tempfile::tempdir()?;
    let objects = dir.path().join("objects");
    let client = reqwest::Client::new();
    let pool = db::pool(&config.database)?;
    db::migrate(&pool).await?;

    // The API and the origin in one process, the worker in its own (its
    // CPU is the transcode's), the CDN in front of the origin.
    let port = free_port()?;
    let mut front = spawn_serve("ingest,origin", port, &objects, &config)?;
    front.drain_stdout();
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&client, &format!("{base}/healthz"), &mut front).await?;
    let worker_port = free_port()?;
    let mut worker = spawn_serve_logging(
        "workers",
        worker_port,
        &objects,
        &config,
        "warn,cascade_workers::transcode=info",
    )?;
    let worker_steps = collect_worker_steps(&mut worker);
    // Up (its runtime's threads exist): as if on a machine of its own.
    renice(worker.child.id(), 10);
    wait_http(
        &client,
        &format!("http://127.0.0.1:{worker_port}/healthz"),
        &mut worker,
    )
    .await?;
    let (mut cdn, cdn_port) = start_cdn(port, dir.path())?;
    wait_http(
        &client,
        &format!("http://127.0.0.1:{cdn_port}/play/"),
        &mut cdn,
    )
    .await?;
    println!(
        "bench ttp: {} ({} s, 1920x1080 30 fps) through tus, default ladder, hls.js through the CDN",
        source.display(),
        args.seconds
    );

    let cli_out = dir.path().join("ffmpeg-cli");
    std::fs::create_dir_all(&cli_out)?;
    let runs = args.runs.max(1);
    let mut measured = Vec::new();
    let mut cli_walls = Vec::new();
    let mut cli_cpus = Vec::new();
    // Alternating, so a slower spell of the machine hits both sides.
    for run in 1..=runs {
        let m = measure(
            &client,
            &pool,
            &base,
            cdn_port,
            &mut worker,
            &worker_steps,
            &source,
        )
        .await?;
        println!(
            "run {run}: first frame {:.3} s after the final PATCH (playable {:.3} s); ready {:.2} s, \
             worker CPU {:.2} s",
            m.first_frame, m.playable, m.ready, m.worker_cpu
        );
        measured.push(m);
        let (wall, cpu) = cli_run(&source, &config, &cli_out)?;
        println!("ffmpeg CLI run {run}: {wall:.2} s, CPU {cpu:.2} s");
        cli_walls.push(wall);
        cli_cpus.push(cpu);
    }
    drop(cdn);
    drop(worker);
    let long = if args.long_seconds > 0 {
        Some(
            super::chunks::long_source_speedup(
                &client,
                &pool,
                &base,
                &objects,
                &config,
                args.long_seconds,
            )
            .await?,
        )
    } else {
        None
    };
    drop(front);

    let column = |pick: Pick| measured.iter().map(pick).collect::<Vec<f64>>();
    println!("critical path, seconds from the final PATCH's response, median (min-max):");
    let steps: [(&str, Pick); 15] = [
        ("transcode job queued", |m| m.queued),
        ("claimed by the worker", |m| m.claimed),
        ("source probed", |m| m.probed),
        ("encoders open", |m| m.encoding),
        ("first segment stored", |m| m.first_segment),
        ("asset playable", |m| m.playable),
        ("master at the player", |m| m.manifest_at_player),
        ("first frame (TTP)", |m| m.first_frame),
        ("every segment stored", |m| m.stored),
        ("manifests stored", |m| m.manifests),
        ("publish gate done", |m| m.gate_done),
        ("published (worker)", |m| m.published),
        ("ready", |m| m.ready),
        ("publish gate, seconds", |m| m.gate),
        ("worker CPU, seconds", |m| m.worker_cpu),
    ];
    for (label, pick) in steps {
        println!("  {label:<24} {}", spread(&column(pick)));
    }

    let ttp = median(&mut column(|m| m.first_frame));
    let ready = median(&mut column(|m| m.ready));
    let gate = median(&mut column(|m| m.gate));
    let gate_met = gate / ready <= TARGET_GATE_SHARE;
    let cpu = median(&mut column(|m| m.worker_cpu));
    let cli_wall = median(&mut cli_walls.clone());
    let cli_cpu = median(&mut cli_cpus.clone());
    let ttp_met = ttp <= TARGET_TTP_SECONDS;
    let wall_ratio = ready / cli_wall;
    let cpu_ratio = cpu / cli_cpu;
    let wall_met = wall_ratio <= TARGET_READY_RATIO;
    let cpu_met = cpu_ratio <= TARGET_READY_RATIO;
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "time to playable: median {ttp:.3} s (target <= {TARGET_TTP_SECONDS} s) {}",
        verdict(ttp_met)
    );
    println!(
        "time to ready: {ready:.2} s against the CLI's {} s: {wall_ratio:.3}x (target <= {TARGET_READY_RATIO:.1}x) {}",
        spread(&cli_walls),
        verdict(wall_met)
    );
    println!(
        "worker CPU: {cpu:.2} s against the CLI's {} s: {cpu_ratio:.3}x (target <= {TARGET_READY_RATIO:.1}x) {}",
        spread(&cli_cpus),
        verdict(cpu_met)
    );
    if let Some((one, two)) = long {
        println!(
            "a {} s source: ready in {one:.1} s on 1 worker, {two:.1} s on 2 workers ({:.2}x faster)",
            args.long_seconds,
            one / two
        );
    }
    println!(
        "publish gate: {gate:.3} s, {:.2}% of the time to ready (target <= {:.0}%) {}",
        gate / ready * 100.0,
        TARGET_GATE_SHARE * 100.0,
        verdict(gate_met)
    );
    Ok(if ttp_met && wall_met && cpu_met && gate_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
