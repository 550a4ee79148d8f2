//! The periodic sweep of expired uploads and abandoned storage.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::tus;

/// How often the local backend's directory is swept for abandoned
/// multipart uploads and temporary files (a walk of the whole tree).
const ABANDONED_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes expired, unfinished tus uploads (multipart uploads, staged pieces, rows) every
/// `ingest.cleanup_interval` until `cancel` fires; hourly, and once at start,
/// also what dead processes left in the store ([`ObjectStore::remove_abandoned`]).
pub fn spawn_cleanup(
    state: Arc<AppState>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            if last_sweep.is_none_or(|at| at.elapsed() >= ABANDONED_SWEEP_EVERY) {
                last_sweep = Some(std::time::Instant::now());
                match state.store.remove_abandoned().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        removed = n,
                        "removed abandoned multipart uploads and temporary files"
                    ),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot sweep abandoned multipart uploads")
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(state.config.cleanup_interval) => {}
            }
            match tus::delete_expired(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(uploads = n, "deleted expired uploads"),
                Err(error) => tracing::warn!(error = %error, "cannot clean up expired uploads"),
            }
            if let Err(error) = crate::direct::expire(&state).await {
                tracing::warn!(error = %error, "cannot expire direct upload URLs");
            }
        }
    })
}
