//! The watch folder: files dropped into `ingest.watch_dir` become assets.
//!
//! A file is taken once its size and modification time have not changed for
//! `ingest.watch_settle` (it stopped growing). Before anything else it is
//! claimed in `watch_files` by (name, size, mtime): a restart finds the claim
//! and never ingests the same file twice; a claim left unfinished by a crash
//! is resumed into the same asset. Then the file moves to `done/`, or to
//! `failed/` beside a `<name>.reason.txt`. `notify` wakes the scan at once;
//! a periodic rescan covers events it misses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cascade_platform::assets;
use cascade_platform::watch_files::{self, WatchState, WatchedFile};
use cascade_schemas::{AssetId, PlaybackPolicy};
use cascade_workers::probe::ProbeTarget;
use notify::Watcher;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::work::WorkError;

const DONE: &str = "done";
const FAILED: &str = "failed";

/// A file's identity for the claim: size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime_ns: i64,
}

fn seen(path: &Path) -> Option<Seen> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(Seen {
        size: meta.len(),
        mtime_ns: i64::try_from(mtime.as_nanos()).unwrap_or(i64::MAX),
    })
}

/// Starts watching `dir` until `cancel` fires.
pub fn spawn(
    state: Arc<AppState>,
    dir: PathBuf,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for sub in [DONE, FAILED] {
            if let Err(error) = tokio::fs::create_dir_all(dir.join(sub)).await {
                tracing::error!(error = %error, dir = %dir.display(), "cannot create the watch folder");
                return;
            }
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let watcher = {
            let wake = wake.clone();
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                wake.notify_one()
            })
        };
        let _watcher = match watcher {
            Ok(mut watcher) => match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(watcher),
                Err(error) => {
                    tracing::warn!(error = %error, "cannot watch the folder; scanning periodically instead");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(error = %error, "no file watcher; scanning periodically instead");
                None
            }
        };
        tracing::info!(dir = %dir.display(), "watching folder");
        let settle = state.config.watch_settle;
        let mut pending: HashMap<PathBuf, (Seen, tokio::time::Instant)> = HashMap::new();
        let mut retries = Retries::default();
        loop {
            scan(&state, &dir, settle, &mut pending, &mut retries).await;
            // Wake on a change, or after `settle` to re-check growing files.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(settle.max(Duration::from_millis(200)) / 2) => {}
            }
        }
    })
}

/// Files whose ingest hit a transient error (database or storage down):
/// left in the folder and tried again after a backoff (from the settle
/// time, doubling up to [`MAX_RETRY_DELAY`]), never moved to `failed/`.
#[derive(Default)]
struct Retries {
    after: HashMap<PathBuf, (tokio::time::Instant, Duration)>,
}

/// Longest wait between tries of a file hit by a transient error.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

async fn scan(
    state: &AppState,
    dir: &Path,
    settle: Duration,
    pending: &mut HashMap<PathBuf, (Seen, tokio::time::Instant)>,
    retries: &mut Retries,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = tokio::time::Instant::now();
    let mut present = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden and partial files are still being written by their tools.
        if name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp") {
            continue;
        }
        let Some(current) = seen(&path) else { continue };
        present.push(path.clone());
        match pending.get(&path) {
            Some((previous, since)) if *previous == current => {
                let waiting = retries.after.get(&path).is_some_and(|(at, _)| now < *at);
                if now.duration_since(*since) >= settle && !waiting {
                    pending.remove(&path);
                    if take(state, dir, &path, &name, current).await {
                        retries.after.remove(&path);
                    } else {
                        let delay = retries
                            .after
                            .get(&path)
                            .map_or(settle.max(Duration::from_secs(1)), |(_, d)| *d * 2)
                            .min(MAX_RETRY_DELAY);
                        retries.after.insert(path.clone(), (now + delay, delay));
                    }
                }
            }
            _ => {
                pending.insert(path, (current, now));
            }
        }
    }
    pending.retain(|path, _| present.contains(path));
    retries.after.retain(|path, _| present.contains(path));
}

/// Claims and ingests one settled file, then moves it out of the way.
/// Returns `false` when a transient error left it in the folder, to be
/// tried again.
async fn take(state: &AppState, dir: &Path, path: &Path, name: &str, file: Seen) -> bool {
    let outcome = ingest(state, path, name, file).await;
    let (sub, reason) = match &outcome {
        Ok(()) => (DONE, None),
        Err(error) if error.is_transient() => {
            tracing::warn!(file = name, error = %error, "watched file hit a transient error; will try again");
            return false;
        }
        Err(reason) => (FAILED, Some(reason.to_string())),
    };
    // The reason is in place, whole, before the file shows up in `failed/`:
    // whoever watches that folder reads both together.
    if let Some(reason) = &reason {
        tracing::warn!(file = name, reason = %reason, "watched file failed");
        if let Err(error) =
            write_whole(&dir.join(FAILED), &format!("{name}.reason.txt"), reason).await
        {
            tracing::error!(error = %error, file = name, "cannot write why a watched file failed");
        }
    }
    let target = dir.join(sub).join(name);
    if let Err(error) = tokio::fs::rename(path, &target).await {
        tracing::error!(error = %error, file = name, "cannot move a watched file");
        return true;
    }
    if reason.is_none() {
        tracing::info!(file = name, "watched file ingested");
    }
    let ended = if sub == DONE {
        WatchState::Done
    } else {
        WatchState::Failed
    };
    if let Ok(client) = state.pool.get().await {
        let _ = watch_files::finish(&client, watched(name, file), ended).await;
    }
    true
}

/// Writes `text` to `dir/name` through a hidden temporary file and a rename,
/// so a reader never sees it half written.
async fn write_whole(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let partial = dir.join(format!(".{name}.partial"));
    tokio::fs::write(&partial, format!("{text}\n")).await?;
    tokio::fs::rename(&partial, dir.join(name)).await
}

fn watched(name: &str, file: Seen) -> WatchedFile<'_> {
    WatchedFile {
        name,
        size: file.size,
        mtime_ns: file.mtime_ns,
    }
}

async fn ingest(state: &AppState, path: &Path, name: &str, file: Seen) -> Result<(), WorkError> {
    let client = state.pool.get().await?;
    let candidate = AssetId::new();
    // Claim first: a restart finds the claim instead of ingesting again.
    let claim = watch_files::claim(&client, watched(name, file), candidate).await?;
    let (asset, inserted) = (claim.asset, claim.new);
    if claim.state != WatchState::Ingesting {
        return Ok(()); // Already done before a restart; only the move was left.
    }
    let existing = assets::get(&state.pool, asset).await?;
    if inserted || existing.is_none() {
        let environment = crate::auth::default_environment(state).await?;
        assets::insert(
            &client,
            asset,
            &assets::NewAsset {
                environment,
                title: Some(name),
                metadata: &serde_json::json!({ "source": "watch_folder" }),
                policy: PlaybackPolicy::Public,
                source_claim: Some(crate::import_claim(asset)),
            },
        )
        .await?;
    }
    drop(client);
    // Keep a creator-readable reason when the file is not media.
    let probe = state
        .probe(ProbeTarget::File(path.to_owned()))
        .await
        .map_err(|e| WorkError::Task(e.to_string()))?;
    let duration = match probe {
        Ok(summary) => summary.duration,
        Err(cascade_workers::transcode::TranscodeError::Input { code, message }) => {
            let _ = assets::refuse_source(
                &state.pool,
                asset,
                crate::import_claim(asset).id,
                code,
                &message,
            )
            .await;
            return Err(WorkError::Refused { code, message });
        }
        Err(_) => None,
    };
    Ok(crate::import_into(&state.queue, &state.store, path, asset, duration).await?)
}
