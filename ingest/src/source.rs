//! What happens once an asset's source is complete in storage.

use std::time::Instant;

use cascade_platform::assets;
use cascade_platform::queue::{self, NewJob};
use cascade_schemas::jobs::TranscodeJob;
use cascade_schemas::{job_kind, AssetId, ObjectKey};
use cascade_workers::probe::ProbeTarget;
use cascade_workers::transcode::TranscodeError;

use crate::error::ApiError;
use crate::state::AppState;

/// Which source is complete: the first one, or a replacement making output
/// version `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceOf {
    /// The asset's first source (`waiting -> processing | errored`).
    First,
    /// A replacement (`ready | errored -> processing`; a refused one leaves
    /// the asset as it was).
    Replacement(u32),
}

impl SourceOf {
    /// The output version this source makes.
    pub fn version(&self) -> u32 {
        match self {
            Self::First => 1,
            Self::Replacement(version) => *version,
        }
    }
}

/// Probes the stored source (`length` bytes) where it lies, reading only
/// what the demuxer asks for (ranged GETs: the header, the index, the first
/// packets); refuses media we cannot process (asset `errored`, 422) or
/// moves the asset to `processing` and enqueues its transcode in one
/// transaction. Both transitions are made only by the holder of the
/// source claim `claim`: if the asset was deleted meanwhile, the source just
/// written is removed (nothing else would) and the answer is 404; if
/// another writer took the claim over, 409.
#[tracing::instrument(name = "source.complete", skip_all, fields(asset = %asset, bytes = length))]
pub async fn source_complete(
    state: &AppState,
    asset: AssetId,
    claim: uuid::Uuid,
    of: SourceOf,
    length: u64,
) -> Result<(), ApiError> {
    let key = ObjectKey::source_version(asset, of.version());
    let started = Instant::now();
    let probe = state
        .probe(ProbeTarget::Stored {
            asset,
            version: of.version(),
            length,
        })
        .await
        .map_err(|e| ApiError::Internal(format!("probe task: {e}")))?;
    tracing::info!(
        asset = %asset,
        bytes = length,
        in_child = state.prober.is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "probed the source"
    );
    match probe {
        Err(TranscodeError::Input { code, message }) if of == SourceOf::First => {
            if !assets::refuse_source(&state.pool, asset, claim, code, &message).await? {
                return Err(lost_claim(state, asset, &key).await);
            }
            Err(ApiError::Unprocessable { code, message })
        }
        Err(TranscodeError::Input { code, message }) => {
            // A refused replacement leaves the asset as it was (its
            // published version keeps playing): only the new source goes.
            if let Err(error) = state.store.delete(&key).await {
                tracing::warn!(asset = %asset, error = %error, "cannot remove a refused replacement source");
            }
            let client = state.pool.get().await?;
            assets::release_source_claim(&client, asset, claim).await?;
            Err(ApiError::Unprocessable { code, message })
        }
        Err(other) => Err(ApiError::Internal(format!("probing the source: {other}"))),
        Ok(summary) => {
            let job = TranscodeJob::version(asset, of.version());
            let payload =
                serde_json::to_value(&job).map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut client = state.pool.get().await?;
            let tx = client.transaction().await?;
            let started = match of {
                SourceOf::First => {
                    assets::start_processing(&tx, asset, claim, summary.duration).await?
                }
                SourceOf::Replacement(version) => {
                    assets::start_replacement(&tx, asset, claim, version, summary.duration).await?
                }
            };
            if !started {
                drop(tx);
                drop(client);
                return Err(lost_claim(state, asset, &key).await);
            }
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

/// The answer when the source claim was no longer held at the end: the
/// asset was deleted (its source, written after the deletion removed the
/// asset's objects, is removed here) or another writer took over.
async fn lost_claim(state: &AppState, asset: AssetId, key: &ObjectKey) -> ApiError {
    match assets::get(&state.pool, asset).await {
        Ok(None) => {
            if let Err(error) = state.store.delete(key).await {
                tracing::warn!(asset = %asset, error = %error, "cannot remove the source of a deleted asset");
            }
            ApiError::NotFound("asset")
        }
        Ok(Some(_)) => ApiError::Conflict {
            code: "upload_in_progress",
            message: "another upload of this asset's source took over".to_owned(),
        },
        Err(error) => error.into(),
    }
}
