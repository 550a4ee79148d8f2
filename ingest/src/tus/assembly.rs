//! Once every byte arrived: the source is made from the recorded parts (or
//! a final upload's partials), then probed after the client's answer; each
//! step under a lease, so the sweeper finishes what a dead replica left.

use std::sync::Arc;

use cascade_platform::uploads;
use cascade_schemas::{AssetId, ConcatKind, ObjectKey};

use crate::error::ApiError;
use crate::source;
use crate::state::AppState;
use crate::work::WorkError;

use super::*;

/// An upload whose bytes have all arrived, as its assembly sees it.
pub(super) struct Assembly {
    pub(super) id: uuid::Uuid,
    /// Where the bytes go (see [`destination`]).
    pub(super) destination: ObjectKey,
    /// A final upload's partials, in order (empty for others).
    pub(super) partial_ids: Vec<uuid::Uuid>,
    pub(super) length: u64,
    pub(super) multipart_id: Option<String>,
    pub(super) parts: Vec<(u32, String)>,
    pub(super) staged_keys: Vec<String>,
    pub(super) staged_bytes: u64,
}

/// Makes the source object from the recorded parts and any staged pieces
/// left (as the last parts): CompleteMultipartUpload, so the bytes are not
/// copied again. Idempotent: if a previous assembly completed the upload
/// and died before recording it, the source is there with its full size.
async fn finish_source(state: &AppState, upload: &Assembly) -> Result<(), WorkError> {
    let key = upload.destination.clone();
    let Some(upload_id) = &upload.multipart_id else {
        // Everything was staged (a small upload, or bodies of unknown length).
        let mut reader = staged_reader(state.store.clone(), upload.staged_keys.clone());
        let stored = state.store.put(&key, &mut reader).await?;
        if stored != upload.length {
            return Err(WorkError::Inconsistent(format!(
                "the staged pieces hold {stored} bytes, not {}",
                upload.length
            )));
        }
        return Ok(());
    };
    let completed = async {
        let mut parts = upload.parts.clone();
        if upload.staged_bytes > 0 {
            let mut reader = staged_reader(state.store.clone(), upload.staged_keys.clone());
            for (i, size) in part_sizes(upload.staged_bytes).into_iter().enumerate() {
                let number = FIRST_FINAL_PART + i as u32;
                let etag = state
                    .store
                    .upload_part(&key, upload_id, number, size, &mut reader)
                    .await?;
                parts.push((number, etag));
            }
        }
        state
            .store
            .complete_multipart(&key, upload_id, &parts)
            .await
    }
    .await;
    if let Err(error) = completed {
        match state.store.head(&key).await {
            Ok(meta) if meta.size == upload.length => {
                tracing::info!(key = %key, error = %error, "multipart upload already completed");
            }
            _ => return Err(error.into()),
        }
    }
    Ok(())
}

/// Completes the source (see [`finish_source`]), removes the staged
/// pieces, marks the upload complete, and hands the source on to
/// [`source::source_complete`] (the probe). Runs under
/// the upload's lease, in state `assembling`, so a replica that dies midway
/// leaves it to the sweeper ([`delete_expired`]).
pub(super) async fn assemble(state: &Arc<AppState>, id: uuid::Uuid) -> Result<(), WorkError> {
    let lock = uuid::Uuid::new_v4();
    let row = {
        let client = state.pool.get().await?;
        // The source claim lasted until the upload's expiry; the assembly
        // and probe may run past it, so it starts afresh.
        uploads::begin_assembly(
            &client,
            id,
            lock,
            state.config.upload_lock,
            state.config.upload_expiry,
        )
        .await?
    };
    let Some(row) = row else { return Ok(()) };
    let asset = row.asset;
    let concat = row.concat;
    let upload = Assembly {
        id,
        destination: destination(id, asset),
        partial_ids: row.partial_ids,
        length: row.length,
        multipart_id: row.multipart_id,
        parts: row.parts,
        staged_keys: row.staged_keys,
        staged_bytes: row.staged_bytes,
    };
    let finished = async {
        if concat == ConcatKind::Final {
            concat::finish_final(state, &upload).await
        } else {
            finish_source(state, &upload).await?;
            // A partial's bytes stay (uploads/{id}/data) for its final
            // upload; only its staged pieces go.
            let leftovers = match asset {
                Some(_) => ObjectKey::upload_prefix(id),
                None => ObjectKey::upload_staged_prefix(id),
            };
            state.store.delete_prefix(&leftovers).await?;
            Ok(())
        }
    };
    let finished = tokio::select! {
        finished = finished => finished,
        never = keep_lease(state, id, lock) => match never {},
    };
    if let Err(e) = finished {
        release(state, id, lock).await;
        return Err(e);
    }
    let Some(asset) = asset else {
        // A partial upload: complete, waiting for a final upload to take it
        // (or to expire). Nothing to probe.
        let client = state.pool.get().await?;
        uploads::complete_partial(&client, id, lock).await?;
        return Ok(());
    };
    // The bytes are durable: the upload is complete for the client. The
    // probe runs after the response (state `probing`, under a new lease), so
    // the final PATCH of a large file never waits on it; a replica that dies
    // meanwhile leaves it to the sweeper.
    let handoff_lock = uuid::Uuid::new_v4();
    let client = state.pool.get().await?;
    let marked =
        uploads::begin_probe(&client, id, lock, handoff_lock, state.config.upload_lock).await?;
    drop(client);
    if !marked {
        // Our lease lapsed and another assembly took over; it hands the source on.
        return Ok(());
    }
    let background = Arc::clone(state);
    let length = upload.length;
    tokio::spawn(async move {
        hand_off_under_lease(&background, id, asset, length, handoff_lock).await
    });
    Ok(())
}

/// Runs [`hand_off`] while keeping the lease `lock`, then records its end:
/// `complete`, or the lease released so the sweeper tries again.
pub(super) async fn hand_off_under_lease(
    state: &AppState,
    id: uuid::Uuid,
    asset: AssetId,
    length: u64,
    lock: uuid::Uuid,
) {
    let handed = tokio::select! {
        handed = hand_off(state, id, asset, length) => handed,
        never = keep_lease(state, id, lock) => match never {},
    };
    match handed {
        Ok(()) => {
            let done = async {
                let client = state.pool.get().await?;
                uploads::complete(&client, id, lock).await?;
                Ok::<(), WorkError>(())
            };
            if let Err(error) = done.await {
                tracing::warn!(upload = %id, error = %error, "cannot record the upload's hand-off; the sweeper retries");
                release(state, id, lock).await;
            }
        }
        Err(error) => {
            tracing::warn!(upload = %id, error = %error, "cannot hand the upload's source on; the sweeper retries");
            release(state, id, lock).await;
        }
    }
}

/// The probe of the completed source and the asset's next state
/// ([`source::source_complete`]).
async fn hand_off(
    state: &AppState,
    id: uuid::Uuid,
    asset: AssetId,
    length: u64,
) -> Result<(), WorkError> {
    tracing::debug!(upload = %id, "probing the completed upload");
    // The upload's id is its claim on the asset's source.
    match source::source_complete(state, asset, id, source::SourceOf::First, length).await {
        // The upload itself succeeded; the asset carries the media error.
        Ok(()) | Err(ApiError::Unprocessable { .. }) => Ok(()),
        Err(e) => Err(WorkError::Probe(e.to_string())),
    }
}
