//! What happens once an asset's source is complete in storage.

use std::sync::atomic::Ordering;
use std::time::Instant;

use cascade_platform::assets;
use cascade_platform::queue::{self, NewJob};
use cascade_platform::storage::reader::ObjectReader;
use cascade_schemas::{job_kind, AssetId, AssetState, ObjectKey};
use cascade_workers::transcode::{pipeline, TranscodeError, TranscodeJob};

use crate::api::AppState;
use crate::error::ApiError;

/// Probes the stored source (`length` bytes) where it lies, reading only
/// what the demuxer asks for (ranged GETs: the header, the index, the first
/// packets); refuses media we cannot process (asset `errored`, 422) or
/// moves the asset to `processing` and enqueues its transcode in one
/// transaction.
pub async fn source_complete(
    state: &AppState,
    asset: AssetId,
    length: u64,
) -> Result<(), ApiError> {
    let reader = ObjectReader::new(
        state.store.clone(),
        ObjectKey::source(asset),
        length,
        tokio::runtime::Handle::current(),
    );
    let fetched = reader.fetched_counter();
    let started = Instant::now();
    let probe = {
        let config = state.transcode.clone();
        tokio::task::spawn_blocking(move || pipeline::probe_reader(reader, &config))
            .await
            .map_err(|e| ApiError::Internal(format!("probe task: {e}")))?
    };
    tracing::info!(
        asset = %asset,
        bytes = length,
        read = fetched.load(Ordering::Relaxed),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "probed the source"
    );
    match probe {
        Err(TranscodeError::Input { code, message }) => {
            assets::set_errored(&state.pool, asset, code, &message).await?;
            Err(ApiError::Unprocessable { code, message })
        }
        Err(other) => Err(ApiError::Internal(format!("probing the source: {other}"))),
        Ok(summary) => {
            let job = TranscodeJob {
                asset_id: asset,
                version: 1,
            };
            let payload =
                serde_json::to_value(&job).map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut client = state.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE assets SET duration_seconds = $2, updated_at = now() WHERE id = $1",
                &[&asset.as_uuid(), &summary.duration],
            )
            .await?;
            assets::set_state(&tx, asset, AssetState::Processing).await?;
            queue::enqueue(
                &tx,
                &NewJob::new(job_kind::TRANSCODE, payload).idempotency_key(job.idempotency_key()),
                state.queue.config().max_attempts,
            )
            .await?;
            tx.commit().await?;
            state.queue.wake(job_kind::TRANSCODE);
            Ok(())
        }
    }
}
