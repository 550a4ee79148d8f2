//! `cascade bench memory`: a worker's peak memory must not grow with the
//! source's length. Transcodes a 1-minute and a 10-minute 720p30 source
//! (generated with the ffmpeg CLI, cached under `.data/fixtures`), each by
//! its own `cascade serve --roles workers` child over local storage, and
//! prints each worker's peak RSS (VmHWM) and that of the transcode child
//! it runs the job's pipeline in (`transcode.isolate`), and for each of the
//! two processes the long source's peak over the short one's (target:
//! within 10 %).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_platform::{db, Config, ObjectStore, Queue};
use clap::Args;

use super::origin::ChildGuard;
use super::peak_rss_mb;

/// The long source's peak over the short one's may be at most this.
const TARGET_RATIO: f64 = 1.10;

/// Arguments of `cascade bench memory`.
#[derive(Debug, Args)]
pub struct MemoryBenchArgs {
    /// Length of the short source, seconds.
    #[arg(long, default_value_t = 60)]
    short: u32,
    /// Length of the long source, seconds.
    #[arg(long, default_value_t = 600)]
    long: u32,
}

/// Peak RSS, MB, of the children of process `parent` (sampled: a child's
/// VmHWM is its peak so far).
fn children_peak_rss_mb(parent: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .map(peak_rss_mb)
        .fold(0.0, f64::max)
}

/// Transcodes `input` with a fresh worker child; returns (the worker's
/// peak RSS MB, its transcode child's, seconds).
async fn measure(config: &Config, input: &Path) -> anyhow::Result<(f64, f64, f64)> {
    let scratch = tempfile::tempdir()?;
    let objects = scratch.path().join("objects");
    let mut storage = config.storage.clone();
    storage.s3 = None;
    storage.local_root = objects.clone();
    let store = ObjectStore::from_config(&storage).await?;
    let pool = db::pool(&config.database)?;
    db::migrate(&pool).await?;
    let mut worker = ChildGuard {
        name: "the worker",
        child: Command::new(std::env::current_exe()?)
            .args(["serve", "--roles", "workers"])
            .env("CASCADE_HTTP__LISTEN", "127.0.0.1:0")
            .env("CASCADE_STORAGE__LOCAL_ROOT", &objects)
            .env("CASCADE_TRANSCODE__ENCODER", "libx264")
            .env("CASCADE_LOG__FILTER", "warn")
            .env_remove("CASCADE_STORAGE__S3__ENDPOINT")
            .env_remove("CASCADE_STORAGE__S3__BUCKET")
            .stdout(Stdio::null())
            .spawn()
            .context("starting cascade serve --roles workers")?,
    };
    let queue = Queue::new(pool.clone(), config.queue.clone());
    let started = Instant::now();
    let (asset, _) = cascade_ingest::import_file(&queue, &store, input, Some("bench memory"))
        .await
        .context("importing the source")?;
    let mut child_peak = 0.0_f64;
    super::wait_until_ready(&pool, asset, Duration::from_secs(3600), || {
        child_peak = child_peak.max(children_peak_rss_mb(worker.child.id()));
        worker.check_running()
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    let peak = peak_rss_mb(worker.child.id());
    drop(worker);
    Ok((peak, child_peak, took))
}

/// Runs the benchmark.
pub async fn run(args: MemoryBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let short = super::synthetic_source(1280, 720, args.short)?;
    let long = super::synthetic_source(1280, 720, args.long)?;
    let (short_worker, short_child, short_took) = measure(&config, &short).await?;
    println!(
        "{} s source: worker peak RSS {short_worker:.0} MB, transcode child {short_child:.0} MB (transcoded in {short_took:.1} s)",
        args.short
    );
    let (long_worker, long_child, long_took) = measure(&config, &long).await?;
    println!(
        "{} s source: worker peak RSS {long_worker:.0} MB, transcode child {long_child:.0} MB (transcoded in {long_took:.1} s)",
        args.long
    );
    // Each process on its own: the worker (claims, publishing, the publish
    // gate) and the transcode child (decoding and the ladder).
    let mut met = true;
    for (process, short_peak, long_peak) in [
        ("worker", short_worker, long_worker),
        ("transcode child", short_child, long_child),
    ] {
        let ratio = long_peak / short_peak;
        let this_met = ratio <= TARGET_RATIO;
        met &= this_met;
        println!(
            "{process} peak RSS {} s / {} s: {ratio:.3}x (target <= {TARGET_RATIO:.2}x) {}",
            args.long,
            args.short,
            if this_met { "met" } else { "MISSED" }
        );
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
