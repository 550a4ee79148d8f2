//! The long-source part of `cascade bench ttp`: chunked transcoding's
//! speed-up. A 10-minute 720p30 source (synthetic, made once) is uploaded
//! through tus while 1, then 2, worker processes run, each pinned to a
//! core of its own and taking one job at a time; the time from the final
//! PATCH's response to the asset `ready` is measured for each. The
//! default `transcode.chunked_from` and `chunk_duration` apply, so the
//! source runs as one-minute chunks on whichever workers are there.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cascade_platform::{assets, Config};
use cascade_schemas::AssetState;

use super::live::{serve_command, wait_http, KEY};
use super::origin::{free_port, ChildGuard};
use super::upload;

/// Pins every thread of process `pid` to `core` (threads and processes
/// it creates later inherit the mask from their creator).
fn pin(pid: u32, core: usize) {
    super::for_each_thread(pid, |tid| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity only read and write that set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(tid as i32, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    });
}

/// Seconds from the final PATCH to `ready` for `source` with `workers`
/// worker processes, each on a core of its own.
async fn time_to_ready(
    client: &reqwest::Client,
    pool: &deadpool_postgres::Pool,
    base: &str,
    objects: &Path,
    config: &Config,
    source: &Path,
    workers: usize,
) -> anyhow::Result<(f64, usize)> {
    let mut guards = Vec::new();
    for core in 0..workers {
        let port = free_port()?;
        let mut command = serve_command("workers", port, objects, config, "warn")?;
        command.env("CASCADE_QUEUE__CONCURRENCY", "1");
        let mut guard = ChildGuard {
            name: "cascade serve --roles workers",
            child: command.spawn().context("starting a worker")?,
        };
        guard.drain_stdout();
        wait_http(
            client,
            &format!("http://127.0.0.1:{port}/healthz"),
            &mut guard,
        )
        .await?;
        pin(guard.child.id(), core % num_cores());
        guards.push(guard);
    }
    let size = std::fs::metadata(source)?.len();
    let (location, asset) = upload::tus_create_asset(client, base, KEY, size).await?;
    let mut file = tokio::fs::File::open(source).await?;
    upload::tus_send(client, &location, KEY, &mut file, size, upload::TUS_PATCH).await?;
    let patched = Instant::now();
    let deadline = patched + Duration::from_secs(1800);
    loop {
        for guard in &mut guards {
            guard.check_running()?;
        }
        let current = assets::get(pool, asset)
            .await?
            .context("the asset vanished")?;
        match current.state {
            AssetState::Ready => break,
            AssetState::Errored => bail!(
                "the transcode failed: {}",
                current.error_message.unwrap_or_default()
            ),
            _ if Instant::now() > deadline => bail!("the asset was not ready in 30 minutes"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let ready = patched.elapsed().as_secs_f64();
    let client_db = pool.get().await?;
    let chunks = cascade_platform::chunks::list(&client_db, asset, 1)
        .await?
        .len();
    Ok((ready, chunks))
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Prints the time to ready of a `seconds`-long 720p source with 1 and
/// with 2 workers; `(one, two)` seconds.
pub(super) async fn long_source_speedup(
    client: &reqwest::Client,
    pool: &deadpool_postgres::Pool,
    base: &str,
    objects: &Path,
    config: &Config,
    seconds: u32,
) -> anyhow::Result<(f64, f64)> {
    let source = super::synthetic_source(1280, 720, seconds)?;
    println!(
        "a long source: {} ({seconds} s, 1280x720 30 fps), chunks of {} s from {} s on, \
         worker processes pinned to a core each, one job at a time",
        source.display(),
        config.transcode.chunk_duration.as_secs(),
        config.transcode.chunked_from.as_secs()
    );
    let (one, chunks) = time_to_ready(client, pool, base, objects, config, &source, 1).await?;
    println!("  1 worker:  ready {one:.1} s after the final PATCH ({chunks} chunks)");
    let (two, chunks) = time_to_ready(client, pool, base, objects, config, &source, 2).await?;
    println!(
        "  2 workers: ready {two:.1} s after the final PATCH ({chunks} chunks): {:.2}x faster",
        one / two
    );
    Ok((one, two))
}
