//! The tus concatenation extension: a client splits a file, uploads the
//! pieces in parallel as *partial* uploads (`Upload-Concat: partial`), then
//! creates the *final* upload (`Upload-Concat: final;<url> <url> ...`) that
//! names them in order. This is how tus clients go faster than one PATCH at
//! a time (tus-js-client's `parallelUploads`): an S3 store takes each part
//! only after it has received all of it, so one stream waits on every part
//! while several keep the store busy.
//!
//! A partial upload is an ordinary upload without an asset: its PATCHes go
//! into a multipart upload of its own object (`uploads/{id}/data`), and on
//! completion it waits, still expiring, for a final upload to take it. The
//! final upload takes (claims) every partial in one transaction, so a
//! partial serves one final only; it creates the asset and answers at once,
//! since the bytes are already durable. Its assembly then runs like any
//! other (state `assembling`, under a lease, finished by the sweeper if the
//! replica dies): the partials are copied into the asset's source inside
//! the store (UploadPartCopy, several at a time), or streamed through when
//! S3's part sizes forbid a copy (a partial under 5 MiB that is not the
//! last), and deleted. The probe follows as for any upload.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use cascade_platform::storage::{MAX_PART_NUMBER, MAX_PART_SIZE, MIN_PART_SIZE};
use cascade_platform::uploads;
use cascade_schemas::{ConcatKind, ObjectKey, UploadState};
use futures::{StreamExt, TryStreamExt};

use super::{header, staged_reader, upload_asset, upload_metadata, Assembly};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::work::WorkError;

/// Most partial uploads one final upload may name (S3 allows 10,000
/// parts; a thousand is far more than any client splits a file into).
const MAX_PARTIALS: usize = 1000;
/// UploadPartCopy requests in flight while assembling a final upload.
const COPY_CONCURRENCY: usize = 4;

/// What `Upload-Concat` asks for at creation.
pub(super) enum Requested {
    /// An ordinary upload.
    None,
    /// A partial upload.
    Partial,
    /// A final upload of these partial uploads, in order.
    Final(Vec<uuid::Uuid>),
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_upload_concat", message)
}

/// Parses `Upload-Concat`: `partial`, or `final;` and the partial uploads'
/// URLs (absolute or paths) separated by spaces.
pub(super) fn requested(headers: &HeaderMap) -> Result<Requested, ApiError> {
    let Some(raw) = headers.get("upload-concat") else {
        return Ok(Requested::None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| invalid("Upload-Concat must be ASCII"))?
        .trim();
    if raw == "partial" {
        return Ok(Requested::Partial);
    }
    let Some(list) = raw.strip_prefix("final;") else {
        return Err(invalid(
            "Upload-Concat must be `partial` or `final;` followed by the partial uploads' URLs",
        ));
    };
    let urls: Vec<&str> = list.split_whitespace().collect();
    if urls.is_empty() {
        return Err(invalid(
            "a final upload must name at least one partial upload",
        ));
    }
    if urls.len() > MAX_PARTIALS {
        return Err(invalid(format!(
            "a final upload may name at most {MAX_PARTIALS} partial uploads"
        )));
    }
    let mut ids = Vec::with_capacity(urls.len());
    for url in urls {
        let id = url
            .rsplit_once("/v1/uploads/")
            .and_then(|(_, id)| id.trim_end_matches('/').parse::<uuid::Uuid>().ok())
            .ok_or_else(|| invalid(format!("{url:?} is not an upload URL of this server")))?;
        if ids.contains(&id) {
            return Err(invalid(format!("{url:?} is named twice")));
        }
        ids.push(id);
    }
    Ok(Requested::Final(ids))
}

/// The `Upload-Concat` a HEAD reports, if the upload takes part in one.
pub(super) fn header_value(
    state: &AppState,
    concat: ConcatKind,
    partial_ids: &[uuid::Uuid],
) -> Option<String> {
    match concat {
        ConcatKind::Partial => Some("partial".to_owned()),
        ConcatKind::Final => Some(format!(
            "final;{}",
            partial_ids
                .iter()
                .map(|id| state.url(&format!("/v1/uploads/{id}")))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        ConcatKind::None => None,
    }
}

/// The lengths of the partial uploads `ids`, in order, if a final upload
/// may take them all: each a complete, unexpired partial that no final
/// upload took yet. Otherwise the reason, naming the upload.
/// Only `caller`'s environment's uploads exist for it.
async fn partial_lengths(
    state: &AppState,
    caller: &Caller,
    ids: &[uuid::Uuid],
) -> Result<Vec<u64>, ApiError> {
    let rows = uploads::partials_in(&state.pool.get().await?, caller.environment, ids).await?;
    let mut lengths = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(row) = rows.iter().find(|r| r.id == *id) else {
            return Err(ApiError::bad_request(
                "invalid_partial_upload",
                format!("upload {id} does not exist"),
            ));
        };
        let (offset, length) = (row.offset, row.length);
        if row.concat != ConcatKind::Partial {
            return Err(ApiError::bad_request(
                "invalid_partial_upload",
                format!("upload {id} is not a partial upload (create those with Upload-Concat: partial)"),
            ));
        }
        if row.claimed {
            return Err(ApiError::Conflict {
                code: "partial_upload_used",
                message: format!("partial upload {id} belongs to another final upload"),
            });
        }
        if row.expired {
            return Err(ApiError::bad_request(
                "invalid_partial_upload",
                format!("partial upload {id} expired"),
            ));
        }
        if row.state != UploadState::Complete {
            return Err(ApiError::bad_request(
                "partial_upload_incomplete",
                format!("partial upload {id} is not complete: {offset} of {length} bytes received"),
            ));
        }
        lengths.push(length);
    }
    Ok(lengths)
}

/// `POST /v1/uploads` with `Upload-Concat: final;...`: takes the partial
/// uploads, creates the asset and the final upload (complete at once), and
/// starts its assembly.
pub(super) async fn create_final(
    state: &Arc<AppState>,
    caller: &Caller,
    headers: &HeaderMap,
    partials: Vec<uuid::Uuid>,
) -> Result<Response, ApiError> {
    let (raw_metadata, metadata) = upload_metadata(headers)?;
    // Checked before anything is written, to name the partial at fault.
    let length: u64 = partial_lengths(state, caller, &partials)
        .await?
        .iter()
        .sum();
    let max = state.config.max_upload_size.0;
    if length > max {
        return Err(ApiError::TooLarge { max });
    }
    let id = uuid::Uuid::new_v4();
    // One transaction: the asset (or its claim), the final upload and the
    // partials taken, or nothing at all.
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let asset = upload_asset(&tx, state, caller, &metadata, id).await?;
    let taken = uploads::insert_final(
        &tx,
        &uploads::NewFinal {
            id,
            environment: caller.environment,
            asset,
            length,
            metadata: &serde_json::json!({ "raw": raw_metadata, "values": metadata }),
            expiry: state.config.upload_expiry,
            partials: &partials,
        },
    )
    .await?;
    if !taken {
        // Another final took one meanwhile (or it expired): say which.
        drop(tx);
        drop(client);
        partial_lengths(state, caller, &partials).await?;
        return Err(ApiError::Conflict {
            code: "partial_upload_used",
            message: "a partial upload was taken by another request meanwhile".to_owned(),
        });
    }
    tx.commit().await?;
    drop(client);
    let background = Arc::clone(state);
    tokio::spawn(async move {
        if let Err(error) = super::assemble(&background, id).await {
            tracing::warn!(upload = %id, error = %error, "cannot assemble the final upload; the sweeper retries");
        }
    });
    let mut response = super::created(state, id);
    header(&mut response, "cascade-asset-id", &asset.to_string());
    Ok(response)
}

/// Whether S3 lets the pieces be copied as parts as they are: every part
/// at most 5 GiB, and all but the last at least 5 MiB.
fn copyable(pieces: &[(ObjectKey, u64)]) -> bool {
    match pieces.split_last() {
        None => false,
        Some(((_, last), rest)) => {
            pieces.len() <= MAX_PART_NUMBER as usize
                && *last <= MAX_PART_SIZE
                && rest
                    .iter()
                    .all(|(_, n)| (MIN_PART_SIZE..=MAX_PART_SIZE).contains(n))
        }
    }
}

/// Makes a final upload's source from its partials, then deletes them.
/// Idempotent: a source already there at its full length is kept (a
/// previous assembly got that far), and deleting is repeatable.
pub(super) async fn finish_final(state: &AppState, upload: &Assembly) -> Result<(), WorkError> {
    let key = &upload.destination;
    let whole = matches!(state.store.head(key).await, Ok(meta) if meta.size == upload.length);
    if !whole {
        let taken =
            uploads::taken_partials(&state.pool.get().await?, upload.id, &upload.partial_ids)
                .await?;
        let mut pieces = Vec::with_capacity(upload.partial_ids.len());
        for partial in &upload.partial_ids {
            let length = taken
                .iter()
                .find(|(id, _)| id == partial)
                .map(|(_, length)| *length)
                .ok_or_else(|| {
                    WorkError::Inconsistent(format!(
                        "partial upload {partial} of final upload {} is gone",
                        upload.id
                    ))
                })?;
            // Empty partials add nothing (and S3 cannot copy an empty part).
            if length > 0 {
                pieces.push((ObjectKey::upload_data(*partial), length));
            }
        }
        let started = std::time::Instant::now();
        let copied = copyable(&pieces);
        if copied {
            copy_parts(state, key, &pieces).await?;
        } else {
            let keys = pieces.iter().map(|(k, _)| k.as_str().to_owned()).collect();
            let mut reader = staged_reader(state.store.clone(), keys);
            let stored = state.store.put(key, &mut reader).await?;
            if stored != upload.length {
                return Err(WorkError::Inconsistent(format!(
                    "the partial uploads hold {stored} bytes, not {}",
                    upload.length
                )));
            }
        }
        tracing::info!(
            upload = %upload.id,
            partials = pieces.len(),
            bytes = upload.length,
            how = if copied { "copied in the store" } else { "streamed" },
            elapsed_ms = started.elapsed().as_millis() as u64,
            "assembled the final upload"
        );
    }
    for partial in &upload.partial_ids {
        state
            .store
            .delete_prefix(&ObjectKey::upload_prefix(*partial))
            .await?;
    }
    uploads::delete_taken_partials(&state.pool.get().await?, upload.id, &upload.partial_ids)
        .await?;
    Ok(())
}

/// One multipart upload of `key` whose parts are copies of `pieces`, made
/// by the store, several at a time.
async fn copy_parts(
    state: &AppState,
    key: &ObjectKey,
    pieces: &[(ObjectKey, u64)],
) -> Result<(), WorkError> {
    let upload_id = state.store.create_multipart(key).await?;
    let copies: Vec<_> = pieces
        .iter()
        .enumerate()
        .map(|(i, (source, length))| {
            let number = i as u32 + 1;
            let (store, key, upload_id) = (state.store.clone(), key.clone(), upload_id.clone());
            let (source, length) = (source.clone(), *length);
            async move {
                store
                    .upload_part_copy(&key, &upload_id, number, &source, length)
                    .await
                    .map(|etag| (number, etag))
            }
        })
        .collect();
    let copied = futures::stream::iter(copies)
        .buffered(COPY_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await;
    let completed = match copied {
        Ok(parts) => {
            state
                .store
                .complete_multipart(key, &upload_id, &parts)
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = completed {
        if let Err(abort) = state.store.abort_multipart(key, &upload_id).await {
            tracing::warn!(key = %key, error = %abort, "cannot abort the copy's multipart upload");
        }
        return Err(error.into());
    }
    Ok(())
}

/// Terminates a complete partial upload no final upload took: the row
/// first, so no final can take it while its bytes go.
pub(super) async fn terminate_complete_partial(
    state: &AppState,
    id: uuid::Uuid,
) -> Result<(), ApiError> {
    if !uploads::delete_untaken_partial(&state.pool.get().await?, id).await? {
        return Err(ApiError::Conflict {
            code: "partial_upload_used",
            message: "a final upload has taken this partial upload".to_owned(),
        });
    }
    state
        .store
        .delete_prefix(&ObjectKey::upload_prefix(id))
        .await?;
    Ok(())
}

/// Removes complete partial uploads that expired before any final upload
/// took them; returns how many. Bytes first (a failure leaves the row for
/// the next sweep); no final can take them meanwhile, as finals take only
/// unexpired partials.
pub(super) async fn delete_expired_partials(state: &AppState) -> Result<usize, WorkError> {
    let expired = uploads::expired_partials(&state.pool.get().await?).await?;
    for id in &expired {
        state
            .store
            .delete_prefix(&ObjectKey::upload_prefix(*id))
            .await?;
        uploads::delete_expired_partial(&state.pool.get().await?, *id).await?;
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("upload-concat", value.parse().unwrap());
        headers
    }

    #[test]
    fn upload_concat_parses_partial_and_final_lists() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert!(matches!(requested(&HeaderMap::new()), Ok(Requested::None)));
        assert!(matches!(
            requested(&headers("partial")),
            Ok(Requested::Partial)
        ));
        let list = format!("final;https://x.example/base/v1/uploads/{a} /v1/uploads/{b}");
        match requested(&headers(&list)) {
            Ok(Requested::Final(ids)) => assert_eq!(ids, vec![a, b]),
            _ => panic!("final list not parsed"),
        }
        for bad in [
            "final;".to_owned(),
            "final; ".to_owned(),
            "full".to_owned(),
            format!("final;/v1/assets/{a}"),
            "final;/v1/uploads/not-a-uuid".to_owned(),
            format!("final;/v1/uploads/{a} /v1/uploads/{a}"),
        ] {
            assert!(requested(&headers(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn copies_only_what_s3_part_sizes_allow() {
        let key = |n: u32| ObjectKey::upload_data(uuid::Uuid::from_u128(n.into()));
        let mib = 1024 * 1024;
        assert!(copyable(&[(key(1), 8 * mib), (key(2), 1)]));
        assert!(copyable(&[(key(1), 1)]));
        assert!(!copyable(&[]));
        assert!(!copyable(&[(key(1), 4 * mib), (key(2), 8 * mib)]));
        assert!(!copyable(&[(key(1), MAX_PART_SIZE + 1)]));
    }
}
