//! `cascade assets import|show|tier`: create an asset from a local file,
//! look at its state, move it between storage tiers, without the HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_platform::{archive, assets, db, tiering, Config, ObjectStore, Queue};
use cascade_schemas::{job_kind, AssetId, AssetState};
use clap::Subcommand;

/// Asset subcommands.
#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Upload a local file as a new asset's source and queue its transcode.
    Import {
        /// The media file.
        file: PathBuf,
        /// Asset title.
        #[arg(long)]
        title: Option<String>,
        /// Wait until the asset is ready or errored (needs a running worker).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
        timeout: Duration,
    },
    /// An asset and its renditions, as JSON.
    Show {
        /// Asset id.
        id: AssetId,
    },
    /// Moves an asset's published renditions to a storage tier (`hot` or
    /// one of `storage.tiers`), through the queue (needs a running worker),
    /// and keeps them there: the tiering policy leaves them alone until
    /// `policy` is given as the tier, which hands them back to it.
    /// `archive` archives it (only its source is kept); a storage tier
    /// given for an archived asset restores it (rebuilt in `hot`).
    Tier {
        /// Asset id.
        id: AssetId,
        /// The tier, `archive`, or `policy`.
        tier: String,
        /// Wait until every rendition is there.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
        timeout: Duration,
    },
}

/// `cascade assets tier ID archive`, or a tier for an archived asset.
async fn archive_or_restore(
    pool: &deadpool_postgres::Pool,
    config: &Config,
    id: AssetId,
    tier: &str,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let (wanted, queued) = if tier == "archive" {
        let client = pool.get().await?;
        let queued = archive::request_archive(&client, id).await?;
        if !queued {
            eprintln!(
                "cascade: asset {id} is not ready with a published version (or is a live recording, which has no source to rebuild from)"
            );
            return Ok(ExitCode::from(1));
        }
        (AssetState::Archived, "archive")
    } else if tier == "policy" {
        eprintln!("cascade: asset {id} is archived; give a tier to restore it");
        return Ok(ExitCode::from(1));
    } else {
        archive::request_restore(pool, id).await?;
        (AssetState::Ready, "restore")
    };
    Queue::new(pool.clone(), config.queue.clone()).wake(job_kind::ARCHIVE_ASSET);
    println!("asset {id}: {queued} queued");
    if wait {
        poll_until(&format!("asset {id} {wanted}"), timeout, || async {
            let asset = assets::get(pool, id).await?.context("asset vanished")?;
            anyhow::ensure!(
                asset.state != AssetState::Errored,
                "asset {id} errored: {}",
                asset.error_message.unwrap_or_default()
            );
            Ok((asset.state == wanted).then_some(()))
        })
        .await?;
        println!("asset {id}: {wanted}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls `check` every 200 ms until it gives a value, failing after
/// `timeout` (an operator's `--wait`).
async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn show(
    pool: &deadpool_postgres::Pool,
    id: AssetId,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(asset) = assets::get(pool, id).await? else {
        return Ok(None);
    };
    let renditions = match asset.published_version {
        Some(version) => assets::renditions(pool, id, version).await?,
        None => Vec::new(),
    };
    let mut value = serde_json::to_value(&asset)?;
    value["playable"] = asset.served_version().is_some().into();
    value["renditions"] = serde_json::to_value(renditions)?;
    // A chunked transcode of the version being made (or last made): each
    // chunk's span, progress and the worker that did it.
    let client = pool.get().await?;
    let chunks = cascade_platform::chunks::list(&client, id, asset.source_version).await?;
    if !chunks.is_empty() {
        value["chunks"] = chunks
            .iter()
            .map(|row| {
                serde_json::json!({
                    "chunk": row.chunk.index,
                    "start_seconds": row.chunk.start,
                    "end_seconds": row.chunk.end,
                    "state": if row.done { "done" } else { "pending" },
                    "done_seconds": row.done_seconds,
                    "done_by": row.done_by,
                })
            })
            .collect();
    }
    Ok(Some(value))
}

/// Runs one subcommand; exit 1 when the asset is missing or ends errored.
/// `config_file`: the `--config` file loaded (the probe child loads it too).
pub async fn run(
    command: AssetsCommand,
    config: &Config,
    config_file: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let pool = db::pool(&config.database)?;
    match command {
        AssetsCommand::Import {
            file,
            title,
            wait,
            timeout,
        } => {
            db::migrate(&pool).await.context("migrating the database")?;
            let store = ObjectStore::from_config(&config.storage)
                .await
                .context("opening the object store")?;
            let queue = Queue::new(pool.clone(), config.queue.clone());
            // Probed in a child, as an upload is: the duration lets the
            // workers split a long source into chunks; a refusal is the
            // transcode's to report, with its reason.
            let prober = crate::serve::probe_children(config_file.as_deref(), config)?;
            let duration = prober
                .probe(&cascade_workers::probe::ProbeTarget::File(file.clone()))
                .await
                .ok()
                .and_then(|summary| summary.duration);
            let environment =
                cascade_platform::environments::ensure(&pool.get().await?, "default").await?;
            let (id, playback) = cascade_ingest::import_file_in(
                &queue,
                &store,
                environment,
                &file,
                title.as_deref(),
                duration,
            )
            .await?;
            println!("asset {id} (playback id {playback}) queued for transcoding");
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            let asset = poll_until(&format!("asset {id} ready"), timeout, || async {
                let asset = assets::get(&pool, id).await?.context("asset vanished")?;
                let done = matches!(asset.state, AssetState::Ready | AssetState::Errored);
                Ok(done.then_some(asset))
            })
            .await?;
            if asset.state == AssetState::Errored {
                eprintln!(
                    "asset {id} errored ({}): {}",
                    asset.error_code.unwrap_or_default(),
                    asset.error_message.unwrap_or_default()
                );
                return Ok(ExitCode::from(1));
            }
            if let Some(value) = show(&pool, id).await? {
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AssetsCommand::Tier {
            id,
            tier,
            wait,
            timeout,
        } => {
            let state = assets::get(&pool, id).await?.map(|a| a.state);
            let archived = matches!(state, Some(AssetState::Archived | AssetState::Restoring));
            if tier == "archive" || archived {
                return archive_or_restore(&pool, config, id, &tier, wait, timeout).await;
            }
            if tier == "policy" {
                if !tiering::unpin(&pool, id).await? {
                    eprintln!("cascade: asset {id} not found");
                    return Ok(ExitCode::from(1));
                }
                println!("asset {id}: placed by the tiering policy again");
                return Ok(ExitCode::SUCCESS);
            }
            let configured = std::iter::once("hot")
                .chain(config.storage.tiers.iter().map(|t| t.name.as_str()))
                .collect::<Vec<_>>();
            anyhow::ensure!(
                configured.contains(&tier.as_str()),
                "no storage tier {tier:?}; configured: {}",
                configured.join(", ")
            );
            let Some(queued) = tiering::request_moves(&pool, id, &tier).await? else {
                eprintln!("cascade: asset {id} not found, or nothing of it published yet");
                return Ok(ExitCode::from(1));
            };
            Queue::new(pool.clone(), config.queue.clone()).wake(job_kind::MOVE_RENDITION);
            println!("asset {id}: {queued} rendition move(s) to {tier} queued");
            if wait {
                poll_until(&format!("asset {id} wholly in {tier}"), timeout, || async {
                    let value = show(&pool, id).await?.context("asset vanished")?;
                    let renditions = value["renditions"].as_array().cloned().unwrap_or_default();
                    Ok(renditions
                        .iter()
                        .all(|r| r["tier"] == tier.as_str())
                        .then_some(()))
                })
                .await?;
                println!("asset {id}: every rendition in {tier}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AssetsCommand::Show { id } => match show(&pool, id).await? {
            Some(value) => {
                println!("{}", serde_json::to_string_pretty(&value)?);
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("cascade: asset {id} not found");
                Ok(ExitCode::from(1))
            }
        },
    }
}
