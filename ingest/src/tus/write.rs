//! Storing PATCH bodies: under the upload's lease, as parts of the
//! destination's multipart upload or as staged pieces, recorded only under
//! the same lease and at the offset the writer started from.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use cascade_platform::storage::{MAX_PART_SIZE, MIN_PART_SIZE};
use cascade_platform::uploads::{self, RecordedPart};
use cascade_platform::{ObjectStore, StorageError};
use cascade_schemas::{ConcatKind, EnvironmentId, ObjectKey, UploadState};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;

use crate::body::BodyReader;
use crate::error::ApiError;
use crate::metrics::Protocol;
use crate::request;
use crate::state::AppState;

use super::*;

/// Renews the lease every third of its length until dropped (never returns).
pub(super) async fn keep_lease(
    state: &AppState,
    id: uuid::Uuid,
    lock: uuid::Uuid,
) -> std::convert::Infallible {
    let every = (state.config.upload_lock / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        if let Ok(client) = state.pool.get().await {
            let _ = uploads::renew_lease(&client, id, lock, state.config.upload_lock).await;
        }
    }
}

pub(super) async fn release(state: &AppState, id: uuid::Uuid, lock: uuid::Uuid) {
    if let Ok(client) = state.pool.get().await {
        let _ = uploads::release_lease(&client, id, lock).await;
    }
}

/// Part numbers PATCHes may draw; the ones above are kept for the staged
/// pieces left over at completion, so those always come last.
const LAST_PATCH_PART: u32 = 9_000;
/// First part number of the staged pieces uploaded at completion.
pub(super) const FIRST_FINAL_PART: u32 = LAST_PATCH_PART + 1;

/// Sizes of the parts `total` bytes go into: as few as S3's largest part
/// allows, of nearly equal size (so all are far above the smallest part).
pub(super) fn part_sizes(total: u64) -> Vec<u64> {
    let count = total.div_ceil(MAX_PART_SIZE).max(1);
    let (base, extra) = (total / count, total % count);
    (0..count).map(|i| base + u64::from(i < extra)).collect()
}

/// Maps a storage error met while writing an upload. A multipart upload
/// that vanished means the upload was terminated meanwhile; a staged piece
/// that cannot be read back is the store's failure, not the client's body.
pub(super) fn storage_error(error: StorageError) -> ApiError {
    match error {
        StorageError::NotFound { .. } => ApiError::NotFound("upload"),
        StorageError::BodyRead(io) => match io.get_ref().map(|inner| inner.is::<StorageError>()) {
            Some(true) => match io
                .into_inner()
                .map(|inner| inner.downcast::<StorageError>())
            {
                Some(Ok(inner)) if inner.is_retryable() => ApiError::Unavailable(inner.to_string()),
                Some(Ok(inner)) => ApiError::Internal(inner.to_string()),
                _ => ApiError::Internal("reading a staged piece failed".to_owned()),
            },
            _ => ApiError::from(StorageError::BodyRead(io)),
        },
        other => ApiError::from(other),
    }
}

/// Whether the body's digest matches the one the client declared (if any).
fn checksum_matches(reader: &mut BodyReader, expected: Option<Vec<u8>>) -> bool {
    match (expected, reader.take_hasher()) {
        (Some(expected), Some(hasher)) => hasher.finish() == expected,
        _ => true,
    }
}

/// What a PATCH learns when it takes the lease.
struct Lease {
    id: uuid::Uuid,
    lock: uuid::Uuid,
    /// Where the bytes go (see [`destination`]).
    destination: ObjectKey,
    offset: u64,
    length: u64,
    multipart_id: Option<String>,
    next_part: i32,
    staged_keys: Vec<String>,
    /// Bytes received but not in a recorded part: the staged pieces' total.
    staged_bytes: u64,
}

/// Stores one PATCH body at `client_offset`; returns the new offset, and
/// when the upload expires unless it is now complete.
///
/// A body of known length that fills a part (with what is staged: at least
/// S3's 5 MiB), or that completes the upload, streams as one part of the
/// source's multipart upload, preceded by the staged pieces. Others (small,
/// or chunked) are staged as objects of their own until a part can be made.
pub(super) async fn write_chunk(
    state: &Arc<AppState>,
    environment: EnvironmentId,
    id: uuid::Uuid,
    client_offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<(u64, Option<DateTime<Utc>>), ApiError> {
    let lock = uuid::Uuid::new_v4();
    let taken = {
        let client = state.pool.get().await?;
        uploads::take_write_lease(&client, environment, id, lock, state.config.upload_lock).await?
    };
    let Some(taken) = taken else {
        let row = load(state, environment, id).await?;
        return Err(if row.concat == ConcatKind::Final {
            ApiError::Forbidden {
                code: "final_upload",
                message: "a final upload is made of its partial uploads and takes no PATCH"
                    .to_owned(),
            }
        } else if row.expired {
            ApiError::NotFound("upload")
        } else if row.state != UploadState::Receiving {
            ApiError::Conflict {
                code: "upload_complete",
                message: "the upload is already complete".to_owned(),
            }
        } else {
            ApiError::Locked
        });
    };
    let lease = Lease {
        id,
        lock,
        destination: destination(id, taken.asset),
        offset: taken.offset,
        length: taken.length,
        multipart_id: taken.multipart_id,
        next_part: taken.next_part,
        staged_keys: taken.staged_keys,
        staged_bytes: taken.staged_bytes,
    };
    let expires_at = taken.expires_at;
    let (offset, length) = (lease.offset, lease.length);
    let result = async {
        if client_offset != offset {
            return Err(ApiError::Conflict {
                code: "offset_mismatch",
                message: format!("Upload-Offset {client_offset} does not match the stored offset {offset}"),
            });
        }
        let remaining = length - offset;
        let declared = request::declared_length(headers, "content-length")?;
        if let Some(declared) = declared {
            if declared > remaining {
                return Err(ApiError::bad_request(
                    "exceeds_upload_length",
                    format!("the body ({declared} bytes) goes past Upload-Length ({remaining} bytes remain)"),
                ));
            }
        }
        let expected_checksum = checksum(headers)?;
        let mut reader = BodyReader::new(body, remaining, state.limits.pace);
        let mut expected = None;
        if let Some((hasher, digest)) = expected_checksum {
            reader = reader.hash_with(hasher);
            expected = Some(digest);
        }
        // A part when the length is known and the part is big enough or the
        // last, and part numbers remain; otherwise staged.
        let parts = declared
            .filter(|&n| n > 0 && (lease.staged_bytes + n >= MIN_PART_SIZE || n == remaining))
            .map(|n| (n, part_sizes(lease.staged_bytes + n)))
            .filter(|(_, sizes)| {
                u32::try_from(lease.next_part).unwrap_or(u32::MAX).saturating_add(sizes.len() as u32 - 1)
                    <= LAST_PATCH_PART
            });
        match parts {
            Some((body_length, sizes)) => {
                write_parts(state, &lease, sizes, body_length, &mut reader, expected).await
            }
            None => write_staged(state, &lease, &mut reader, expected).await,
        }
    }
    .await;
    let new_offset = match result {
        Ok(new_offset) => new_offset,
        Err(e) => {
            release(state, id, lock).await;
            return Err(e);
        }
    };
    state
        .metrics
        .received(Protocol::Tus, new_offset.saturating_sub(client_offset));
    if new_offset == length {
        state.metrics.upload_finished(Protocol::Tus);
        assemble(state, id).await?;
        return Ok((new_offset, None));
    }
    Ok((new_offset, Some(expires_at)))
}

/// Uploads the staged pieces and the body as parts `sizes` of the source's
/// multipart upload (creating it if this is the first part), then records
/// them with the new offset, fenced by the lease.
async fn write_parts(
    state: &AppState,
    lease: &Lease,
    sizes: Vec<u64>,
    body_length: u64,
    reader: &mut BodyReader,
    expected: Option<Vec<u8>>,
) -> Result<u64, ApiError> {
    let key = lease.destination.clone();
    let created = match &lease.multipart_id {
        Some(_) => None,
        None => Some(state.store.create_multipart(&key).await?),
    };
    let upload_id = match lease.multipart_id.clone().or_else(|| created.clone()) {
        Some(upload_id) => upload_id,
        None => return Err(ApiError::Internal("no multipart upload id".to_owned())),
    };
    // Fresh part numbers, drawn under the lease: never handed out twice.
    let count = sizes.len() as i32;
    let drawn = async {
        let client = state.pool.get().await?;
        // A new multipart upload id must not be lost (nothing else knows it).
        let durable = created.is_some();
        Ok::<_, ApiError>(
            uploads::draw_parts(&client, lease.id, lease.lock, count, &upload_id, durable).await?,
        )
    }
    .await;
    let first = match drawn {
        Ok(Some((first, recorded))) if recorded.as_deref() == Some(upload_id.as_str()) => first,
        other => {
            if let Some(created) = &created {
                // Ours was never recorded (lease lost, or the database failed).
                if let Err(error) = state.store.abort_multipart(&key, created).await {
                    tracing::warn!(error = %error, "cannot abort an unrecorded multipart upload");
                }
            }
            return Err(match other {
                Err(e) => e,
                _ => ApiError::Locked,
            });
        }
    };
    let first =
        u32::try_from(first).map_err(|_| ApiError::Internal(format!("part number {first}")))?;
    let mut staged = staged_reader(state.store.clone(), lease.staged_keys.clone());
    let mut uploaded = Vec::with_capacity(sizes.len());
    {
        let mut combined = (&mut staged).chain(&mut *reader);
        let upload = async {
            for (i, size) in sizes.iter().enumerate() {
                let number = first + i as u32;
                let etag = state
                    .store
                    .upload_part(&key, &upload_id, number, *size, &mut combined)
                    .await?;
                uploaded.push(RecordedPart {
                    number,
                    etag,
                    size: *size,
                });
            }
            Ok::<_, StorageError>(())
        };
        tokio::select! {
            done = upload => done,
            never = keep_lease(state, lease.id, lease.lock) => match never {},
        }
        .map_err(storage_error)?;
    }
    if reader.bytes_read() != body_length {
        return Err(ApiError::Internal(format!(
            "the staged pieces of upload {} hold more than the {} bytes recorded",
            lease.id, lease.staged_bytes
        )));
    }
    // A mismatch leaves the parts unrecorded: CompleteMultipartUpload skips them.
    if !checksum_matches(reader, expected) {
        return Err(ApiError::ChecksumMismatch);
    }
    let client = state.pool.get().await?;
    let advanced = uploads::record_parts(
        &client,
        lease.id,
        lease.lock,
        lease.offset,
        body_length,
        &uploaded,
    )
    .await?;
    drop(client);
    // Our lease lapsed and another request took over: our parts never count.
    let Some(new_offset) = advanced else {
        return Err(ApiError::Locked);
    };
    // The staged pieces are in the part now; completion sweeps any left.
    for key in &lease.staged_keys {
        if let Err(error) = state
            .store
            .delete(&ObjectKey::from_stored(key.clone()))
            .await
        {
            tracing::warn!(error = %error, key, "cannot delete a staged piece");
        }
    }
    Ok(new_offset)
}

/// Stores the body as a staged piece and records it with the new offset,
/// fenced by the lease.
async fn write_staged(
    state: &AppState,
    lease: &Lease,
    reader: &mut BodyReader,
    expected: Option<Vec<u8>>,
) -> Result<u64, ApiError> {
    let seq = lease.staged_keys.len() as u32 + 1;
    let key = ObjectKey::upload_staged(lease.id, seq, lease.lock);
    let stored = tokio::select! {
        stored = state.store.put(&key, reader) => stored,
        never = keep_lease(state, lease.id, lease.lock) => match never {},
    };
    stored?;
    let written = reader.bytes_read();
    if !checksum_matches(reader, expected) {
        state.store.delete(&key).await?;
        return Err(ApiError::ChecksumMismatch);
    }
    if written == 0 {
        state.store.delete(&key).await?;
        // Nothing to record; the next PATCH must not find the upload locked.
        release(state, lease.id, lease.lock).await;
        return Ok(lease.offset);
    }
    let client = state.pool.get().await?;
    let advanced = uploads::record_staged(
        &client,
        lease.id,
        lease.lock,
        lease.offset,
        written,
        key.as_str(),
    )
    .await?;
    match advanced {
        Some(new_offset) => Ok(new_offset),
        None => {
            // Our lease lapsed and another request took over: our bytes never count.
            let _ = state.store.delete(&key).await;
            Err(ApiError::Locked)
        }
    }
}

/// Streams the staged pieces, in order, as one reader.
pub(super) fn staged_reader(
    store: ObjectStore,
    keys: Vec<String>,
) -> impl AsyncRead + Unpin + Send {
    let chunks = futures::stream::iter(keys)
        .then(move |key| {
            let store = store.clone();
            async move {
                store
                    .get(&ObjectKey::from_stored(key), None)
                    .await
                    .map(|body| body.stream)
            }
        })
        .try_flatten()
        .map_err(std::io::Error::other);
    StreamReader::new(Box::pin(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_as_few_and_as_even_as_s3_allows() {
        assert_eq!(part_sizes(8 << 20), vec![8 << 20]);
        assert_eq!(part_sizes(MAX_PART_SIZE), vec![MAX_PART_SIZE]);
        assert_eq!(
            part_sizes(MAX_PART_SIZE + 1),
            vec![MAX_PART_SIZE / 2 + 1, MAX_PART_SIZE / 2]
        );
        let sizes = part_sizes(3 * MAX_PART_SIZE + 2);
        assert_eq!(sizes.len(), 4);
        assert_eq!(sizes.iter().sum::<u64>(), 3 * MAX_PART_SIZE + 2);
        assert!(sizes
            .iter()
            .all(|s| (MIN_PART_SIZE..=MAX_PART_SIZE).contains(s)));
    }

    // The staged pieces left at completion come after every PATCH part, with
    // room for 1000 parts of 5 GiB.
    const _: () = assert!(
        FIRST_FINAL_PART > LAST_PATCH_PART
            && cascade_platform::storage::MAX_PART_NUMBER - FIRST_FINAL_PART + 1 == 1000
    );
}
