//! Expiry of unfinished uploads and the restart of interrupted assemblies
//! and probes.

use std::sync::Arc;

use cascade_platform::uploads;
use cascade_schemas::ObjectKey;

use crate::state::AppState;
use crate::work::WorkError;

use super::*;

/// Removes an upload's stored bytes: its multipart upload and its staged
/// pieces. Idempotent.
pub(super) async fn discard(
    state: &AppState,
    id: uuid::Uuid,
    destination: &ObjectKey,
    multipart_id: Option<&str>,
) -> Result<(), WorkError> {
    if let Some(upload_id) = multipart_id {
        state.store.abort_multipart(destination, upload_id).await?;
    }
    state
        .store
        .delete_prefix(&ObjectKey::upload_prefix(id))
        .await?;
    Ok(())
}

/// Deletes an unfinished upload's row, then aborts a multipart upload a
/// PATCH recorded after `discard` ran (so none is left behind).
pub(super) async fn delete_row(
    state: &AppState,
    id: uuid::Uuid,
    destination: &ObjectKey,
    discarded: Option<&str>,
) -> Result<(), WorkError> {
    let mut client = state.pool.get().await?;
    let deleted = uploads::delete_unfinished(&mut client, id).await?;
    drop(client);
    if let Some(late) = deleted.flatten() {
        if Some(late.as_str()) != discarded {
            discard(state, id, destination, Some(&late)).await?;
        }
    }
    Ok(())
}

/// Removes expired unfinished uploads (their multipart uploads aborted,
/// their staged pieces deleted); returns how many. Also finishes
/// assemblies whose replica died.
pub async fn delete_expired(state: &Arc<AppState>) -> Result<usize, WorkError> {
    let rows = uploads::expired_unfinished(&state.pool.get().await?).await?;
    for (id, asset, multipart_id) in &rows {
        let (id, multipart_id) = (*id, multipart_id.clone());
        let destination = destination(id, *asset);
        discard(state, id, &destination, multipart_id.as_deref()).await?;
        delete_row(state, id, &destination, multipart_id.as_deref()).await?;
    }
    let partials = concat::delete_expired_partials(state).await?;
    // An assembly whose replica died: finish it.
    let stuck = uploads::stalled_assemblies(&state.pool.get().await?).await?;
    for id in stuck {
        if let Err(error) = assemble(state, id).await {
            tracing::warn!(error = %error, "cannot finish an interrupted assembly");
        }
    }
    // A complete upload whose probe never finished (its replica died, or
    // storage failed): probe it here.
    let lock = uuid::Uuid::new_v4();
    let orphans =
        uploads::take_stalled_probes(&state.pool.get().await?, lock, state.config.upload_lock)
            .await?;
    for (id, asset, length) in orphans {
        // Only uploads with an asset are ever probed (partials never are).
        let Some(asset) = asset else { continue };
        hand_off_under_lease(state, id, asset, length, lock).await;
    }
    Ok(rows.len() + partials)
}
