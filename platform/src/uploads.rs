//! tus upload rows: the offset, the multipart upload of the destination
//! and its recorded parts, the staged pieces, the lease of the request
//! writing, and the state (`receiving -> assembling -> probing -> complete`).
//!
//! Every write that matters is fenced: a lease is taken with a conditional
//! update (`lock_id`, `locked_until`), and parts, pieces and the offset are
//! recorded only under the same lease and at the offset the writer started
//! from, so a writer whose lease lapsed can never corrupt the upload. The
//! functions here hold the SQL; `cascade_ingest`'s tus handlers decide what
//! to write and talk to the object store.

use std::time::Duration;

use cascade_schemas::{AssetId, ConcatKind, EnvironmentId, UploadState};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::assets;
use crate::db::DbError;

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, DbError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| DbError::Build(format!("stored {what}: {e}")))
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Bytes in recorded parts, in SQL (`offset` minus this is what is staged).
const PARTS_TOTAL_SQL: &str = "(SELECT coalesce(sum(s), 0)::bigint FROM unnest(part_sizes) s)";

/// Uploads of a deleted asset are not found.
const ASSET_NOT_DELETED_SQL: &str = "(asset_id IS NULL OR EXISTS (
    SELECT 1 FROM assets WHERE assets.id = uploads.asset_id AND assets.deleted_at IS NULL))";

/// Runs one `UPDATE ... RETURNING` committed without waiting for the WAL
/// flush: for updates that may be lost in a database crash without harm,
/// such as taking a lease or drawing part numbers (a later synchronous
/// commit, such as recording a part, flushes them first, since the WAL is
/// written in order). One round trip: the statement is its own transaction
/// and sets `synchronous_commit` for it (`set_config(..., true)`), instead
/// of BEGIN, SET LOCAL and COMMIT around it; it is prepared once per
/// connection.
async fn query_opt_unflushed(
    client: &deadpool_postgres::Client,
    update: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, DbError> {
    let sql = format!(
        "WITH unflushed AS (SELECT set_config('synchronous_commit', 'off', true)),
              changed AS ({update})
         SELECT changed.* FROM changed, unflushed"
    );
    let statement = client.prepare_cached(&sql).await?;
    Ok(client.query_opt(&statement, params).await?)
}

/// A new upload.
#[derive(Debug, Clone)]
pub struct NewUpload<'a> {
    /// Id (its URL's last segment).
    pub id: uuid::Uuid,
    /// The environment it belongs to.
    pub environment: EnvironmentId,
    /// The asset whose source it fills; none for a partial upload.
    pub asset: Option<AssetId>,
    /// Declared length (`Upload-Length`).
    pub length: u64,
    /// `{"raw": <Upload-Metadata header>, "values": {...}}`.
    pub metadata: &'a serde_json::Value,
    /// Removed unfinished this long after creation.
    pub expiry: Duration,
    /// Ordinary or partial (finals are made by [`insert_final`]).
    pub concat: ConcatKind,
}

/// Records a new `receiving` upload; returns when it expires.
pub async fn insert(
    client: &impl GenericClient,
    new: &NewUpload<'_>,
) -> Result<DateTime<Utc>, DbError> {
    let row = client
        .query_one(
            "INSERT INTO uploads (id, environment_id, asset_id, length, metadata, expires_at, concat)
             VALUES ($1, $2, $3, $4, $5, now() + $6::float8 * interval '1 millisecond', $7)
             RETURNING expires_at",
            &[
                &new.id,
                &new.environment.as_uuid(),
                &new.asset.map(|a| a.as_uuid()),
                &(new.length as i64),
                new.metadata,
                &millis(new.expiry),
                &new.concat.as_str(),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// An upload as `HEAD` and refused requests see it.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    /// Declared length.
    pub length: u64,
    /// Bytes durably received.
    pub offset: u64,
    /// Where it is.
    pub state: UploadState,
    /// The `Upload-Metadata` sent at creation.
    pub raw_metadata: String,
    /// When it expires unfinished.
    pub expires_at: DateTime<Utc>,
    /// Whether that time has passed.
    pub expired: bool,
    /// Ordinary, partial or final.
    pub concat: ConcatKind,
    /// A final upload's partials, in order.
    pub partial_ids: Vec<uuid::Uuid>,
}

/// Upload `id` of `environment`; another environment's, or one whose asset
/// was deleted, is not found.
pub async fn status_in(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: uuid::Uuid,
) -> Result<Option<UploadStatus>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT length, \"offset\", state, metadata->>'raw', expires_at, expires_at < now(), concat, partial_ids
                 FROM uploads WHERE id = $1 AND environment_id = $2 AND {ASSET_NOT_DELETED_SQL}"
            ),
            &[&id, &environment.as_uuid()],
        )
        .await?;
    row.map(|row| {
        Ok(UploadStatus {
            length: unsigned(row.get(0)),
            offset: unsigned(row.get(1)),
            state: parse(row.get::<_, &str>(2), "upload state")?,
            raw_metadata: row.get::<_, Option<String>>(3).unwrap_or_default(),
            expires_at: row.get(4),
            expired: row.get(5),
            concat: parse(row.get::<_, &str>(6), "concatenation")?,
            partial_ids: row.get(7),
        })
    })
    .transpose()
}

/// What a PATCH learns when it takes the lease of a `receiving` upload.
#[derive(Debug, Clone)]
pub struct WriteLease {
    /// The asset it fills (none for a partial upload).
    pub asset: Option<AssetId>,
    /// Bytes durably received.
    pub offset: u64,
    /// Declared length.
    pub length: u64,
    /// The destination's multipart upload, once the first part created it.
    pub multipart_id: Option<String>,
    /// The next part number a writer may draw.
    pub next_part: i32,
    /// Staged pieces not yet in a part, in order.
    pub staged_keys: Vec<String>,
    /// Their total size.
    pub staged_bytes: u64,
    /// When the upload expires unfinished.
    pub expires_at: DateTime<Utc>,
}

/// Takes the lease `lock` of upload `id` of `environment` for `hold`, if it
/// is receiving, unexpired, its asset not deleted and no other request
/// holds it. Committed without waiting for the WAL flush.
pub async fn take_write_lease(
    client: &deadpool_postgres::Client,
    environment: EnvironmentId,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    hold: Duration,
) -> Result<Option<WriteLease>, DbError> {
    let row = query_opt_unflushed(
        client,
        &format!(
            "UPDATE uploads SET locked_until = now() + $3::float8 * interval '1 millisecond', lock_id = $2, updated_at = now()
             WHERE id = $1 AND environment_id = $4 AND state = 'receiving' AND expires_at > now()
               AND (locked_until IS NULL OR locked_until < now())
               AND {ASSET_NOT_DELETED_SQL}
             RETURNING asset_id, \"offset\", length, multipart_id, next_part, staged_keys,
                       \"offset\" - {PARTS_TOTAL_SQL}, expires_at"
        ),
        &[&id, &lock, &millis(hold), &environment.as_uuid()],
    )
    .await?;
    Ok(row.map(|row| WriteLease {
        asset: row.get::<_, Option<uuid::Uuid>>(0).map(AssetId::from),
        offset: unsigned(row.get(1)),
        length: unsigned(row.get(2)),
        multipart_id: row.get(3),
        next_part: row.get(4),
        staged_keys: row.get(5),
        staged_bytes: unsigned(row.get(6)),
        expires_at: row.get(7),
    }))
}

/// Takes the lease of upload `id` of `environment` for its termination:
/// only while it is receiving and bytes are still missing (once the last
/// byte is recorded, the assembly may be starting), and no PATCH holds it.
/// Returns its asset and multipart upload id.
pub async fn take_termination_lease(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    hold: Duration,
) -> Result<Option<(Option<AssetId>, Option<String>)>, DbError> {
    let row = client
        .query_opt(
            "UPDATE uploads SET locked_until = now() + $4::float8 * interval '1 millisecond', lock_id = $3
             WHERE id = $1 AND environment_id = $2 AND state = 'receiving' AND \"offset\" < length
               AND (locked_until IS NULL OR locked_until < now())
             RETURNING asset_id, multipart_id",
            &[&id, &environment.as_uuid(), &lock, &millis(hold)],
        )
        .await?;
    Ok(row.map(|r| {
        (
            r.get::<_, Option<uuid::Uuid>>(0).map(AssetId::from),
            r.get(1),
        )
    }))
}

/// Why a termination could not take the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminationView {
    /// Where the upload is.
    pub state: UploadState,
    /// Ordinary, partial or final.
    pub concat: ConcatKind,
    /// A partial a final upload took.
    pub claimed: bool,
    /// Bytes are still missing.
    pub missing: bool,
    /// A request holds its lease now.
    pub locked: bool,
}

/// Upload `id` of `environment` as a refused termination sees it.
pub async fn termination_view(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: uuid::Uuid,
) -> Result<Option<TerminationView>, DbError> {
    let row = client
        .query_opt(
            "SELECT state, concat, claimed_by IS NOT NULL, \"offset\" < length,
                    locked_until IS NOT NULL AND locked_until >= now()
             FROM uploads WHERE id = $1 AND environment_id = $2",
            &[&id, &environment.as_uuid()],
        )
        .await?;
    row.map(|row| {
        Ok(TerminationView {
            state: parse(row.get::<_, &str>(0), "upload state")?,
            concat: parse(row.get::<_, &str>(1), "concatenation")?,
            claimed: row.get(2),
            missing: row.get(3),
            locked: row.get(4),
        })
    })
    .transpose()
}

/// Extends lease `lock` by `hold` (no-op if it was lost).
pub async fn renew_lease(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    hold: Duration,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE uploads SET locked_until = now() + $3::float8 * interval '1 millisecond'
             WHERE id = $1 AND lock_id = $2",
            &[&id, &lock, &millis(hold)],
        )
        .await?;
    Ok(())
}

/// Gives lease `lock` up (no-op if it was lost).
pub async fn release_lease(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE uploads SET locked_until = NULL, lock_id = NULL WHERE id = $1 AND lock_id = $2",
            &[&id, &lock],
        )
        .await?;
    Ok(())
}

/// Draws `count` fresh part numbers under lease `lock` (never handed out
/// twice) and records `multipart_id` if none is yet. Returns the first
/// number and the recorded multipart upload id; `None` when the lease is
/// lost. A new multipart upload id must not be lost (nothing else knows
/// it), so `durable` makes that commit wait for the flush.
pub async fn draw_parts(
    client: &deadpool_postgres::Client,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    count: i32,
    multipart_id: &str,
    durable: bool,
) -> Result<Option<(i32, Option<String>)>, DbError> {
    let sql = "UPDATE uploads SET next_part = next_part + $3, multipart_id = COALESCE(multipart_id, $4), updated_at = now()
               WHERE id = $1 AND lock_id = $2 RETURNING next_part - $3, multipart_id";
    let params: [&(dyn ToSql + Sync); 4] = [&id, &lock, &count, &multipart_id];
    let row = if durable {
        client.query_opt(sql, &params).await?
    } else {
        query_opt_unflushed(client, sql, &params).await?
    };
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// One part of the destination's multipart upload.
#[derive(Debug, Clone)]
pub struct RecordedPart {
    /// Part number.
    pub number: u32,
    /// The store's ETag for it.
    pub etag: String,
    /// Its size.
    pub size: u64,
}

/// Records uploaded `parts` (holding `added` bytes of the client's body)
/// and the new offset, under lease `lock` and only at `offset`; the staged
/// pieces are in the parts now. Releases the lease. Returns the new offset,
/// or `None` when the lease was lost (the parts never count).
pub async fn record_parts(
    client: &deadpool_postgres::Client,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    offset: u64,
    added: u64,
    parts: &[RecordedPart],
) -> Result<Option<u64>, DbError> {
    let numbers: Vec<i32> = parts.iter().map(|p| p.number as i32).collect();
    let etags: Vec<String> = parts.iter().map(|p| p.etag.clone()).collect();
    let sizes: Vec<i64> = parts.iter().map(|p| p.size as i64).collect();
    let statement = client
        .prepare_cached(
            "UPDATE uploads SET \"offset\" = \"offset\" + $4,
                 part_numbers = part_numbers || $5::integer[], part_etags = part_etags || $6::text[],
                 part_sizes = part_sizes || $7::bigint[], staged_keys = '{}', staged_sizes = '{}',
                 locked_until = NULL, lock_id = NULL, updated_at = now()
             WHERE id = $1 AND lock_id = $2 AND \"offset\" = $3 RETURNING \"offset\"",
        )
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &id,
                &lock,
                &(offset as i64),
                &(added as i64),
                &numbers,
                &etags,
                &sizes,
            ],
        )
        .await?;
    Ok(row.map(|r| unsigned(r.get(0))))
}

/// Records staged piece `key` of `written` bytes and the new offset, under
/// lease `lock` and only at `offset`. Releases the lease. `None` when the
/// lease was lost.
pub async fn record_staged(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    offset: u64,
    written: u64,
    key: &str,
) -> Result<Option<u64>, DbError> {
    let row = client
        .query_opt(
            "UPDATE uploads SET \"offset\" = \"offset\" + $4, staged_keys = array_append(staged_keys, $5),
                 staged_sizes = array_append(staged_sizes, $4), locked_until = NULL, lock_id = NULL, updated_at = now()
             WHERE id = $1 AND lock_id = $2 AND \"offset\" = $3 RETURNING \"offset\"",
            &[&id, &lock, &(offset as i64), &(written as i64), &key],
        )
        .await?;
    Ok(row.map(|r| unsigned(r.get(0))))
}

/// An upload whose bytes have all arrived, as its assembly sees it.
#[derive(Debug, Clone)]
pub struct AssemblyRow {
    /// The asset it fills (none for a partial upload).
    pub asset: Option<AssetId>,
    /// Its length.
    pub length: u64,
    /// The destination's multipart upload, if parts were uploaded.
    pub multipart_id: Option<String>,
    /// `(number, ETag)` of the recorded parts, ascending.
    pub parts: Vec<(u32, String)>,
    /// Staged pieces left, in order.
    pub staged_keys: Vec<String>,
    /// Their total size.
    pub staged_bytes: u64,
    /// Ordinary, partial or final.
    pub concat: ConcatKind,
    /// A final upload's partials, in order.
    pub partial_ids: Vec<uuid::Uuid>,
}

/// Starts (or takes over a stalled) assembly of upload `id` under lease
/// `lock`: a `receiving` upload with every byte, or an `assembling` one
/// whose lease lapsed. Its asset's source claim starts afresh for
/// `claim_hold` (the assembly and probe may outlast the upload's expiry).
pub async fn begin_assembly(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    hold: Duration,
    claim_hold: Duration,
) -> Result<Option<AssemblyRow>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE uploads SET state = 'assembling', locked_until = now() + $3::float8 * interval '1 millisecond', lock_id = $2
                 WHERE id = $1 AND \"offset\" = length
                   AND (state = 'receiving'
                        OR (state = 'assembling' AND (locked_until IS NULL OR locked_until < now())))
                 RETURNING asset_id, length, multipart_id, part_numbers, part_etags, staged_keys,
                           \"offset\" - {PARTS_TOTAL_SQL}, concat, partial_ids"
            ),
            &[&id, &lock, &millis(hold)],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let asset = row.get::<_, Option<uuid::Uuid>>(0).map(AssetId::from);
    if let Some(asset) = asset {
        let claim = assets::SourceClaim {
            id,
            hold: claim_hold,
        };
        assets::renew_source_claim(client, asset, claim).await?;
    }
    let numbers: Vec<i32> = row.get(3);
    let etags: Vec<String> = row.get(4);
    Ok(Some(AssemblyRow {
        asset,
        length: unsigned(row.get(1)),
        multipart_id: row.get(2),
        parts: numbers.into_iter().map(|n| n as u32).zip(etags).collect(),
        staged_keys: row.get(5),
        staged_bytes: unsigned(row.get(6)),
        concat: parse(row.get::<_, &str>(7), "concatenation")?,
        partial_ids: row.get(8),
    }))
}

/// `assembling -> complete` for a partial upload under lease `lock`: it
/// waits for a final upload to take it.
pub async fn complete_partial(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE uploads SET state = 'complete', multipart_id = NULL, staged_keys = '{}', staged_sizes = '{}',
                 part_numbers = '{}', part_etags = '{}', part_sizes = '{}',
                 locked_until = NULL, lock_id = NULL, updated_at = now()
             WHERE id = $1 AND lock_id = $2",
            &[&id, &lock],
        )
        .await?;
    Ok(())
}

/// `assembling -> probing` under lease `lock`, handing over to lease
/// `probe_lock` for `hold`; `false` when the lease was lost (another
/// assembly took over and hands the source on).
pub async fn begin_probe(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
    probe_lock: uuid::Uuid,
    hold: Duration,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE uploads SET state = 'probing', multipart_id = NULL, staged_keys = '{}', staged_sizes = '{}',
                 part_numbers = '{}', part_etags = '{}', part_sizes = '{}',
                 locked_until = now() + $4::float8 * interval '1 millisecond', lock_id = $3, updated_at = now()
             WHERE id = $1 AND lock_id = $2",
            &[&id, &lock, &probe_lock, &millis(hold)],
        )
        .await?;
    Ok(n == 1)
}

/// `probing -> complete` under lease `lock`: the source was handed on.
pub async fn complete(
    client: &impl GenericClient,
    id: uuid::Uuid,
    lock: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE uploads SET state = 'complete', locked_until = NULL, lock_id = NULL, updated_at = now()
             WHERE id = $1 AND lock_id = $2",
            &[&id, &lock],
        )
        .await?;
    Ok(())
}

/// Deletes unfinished upload `id` (only while `receiving`) and releases its
/// asset's source claim, in one transaction. Returns its multipart upload
/// id as recorded at that moment (a PATCH may have recorded one after the
/// caller read it), or `None` when it was not deleted.
pub async fn delete_unfinished(
    client: &mut deadpool_postgres::Client,
    id: uuid::Uuid,
) -> Result<Option<Option<String>>, DbError> {
    let tx = client.transaction().await?;
    let deleted = tx
        .query_opt(
            "DELETE FROM uploads WHERE id = $1 AND state = 'receiving' RETURNING multipart_id, asset_id",
            &[&id],
        )
        .await?;
    if let Some(asset) = deleted
        .as_ref()
        .and_then(|row| row.get::<_, Option<uuid::Uuid>>(1))
    {
        // The asset waits for a source again: another upload may claim it.
        assets::release_source_claim(&tx, AssetId::from(asset), id).await?;
    }
    tx.commit().await?;
    Ok(deleted.map(|row| row.get(0)))
}

/// Unfinished uploads past their expiry that no request holds:
/// `(id, asset, multipart upload id)`.
pub async fn expired_unfinished(
    client: &impl GenericClient,
) -> Result<Vec<(uuid::Uuid, Option<AssetId>, Option<String>)>, DbError> {
    let rows = client
        .query(
            "SELECT id, asset_id, multipart_id FROM uploads WHERE expires_at < now() AND state = 'receiving'
               AND (locked_until IS NULL OR locked_until < now())",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<uuid::Uuid>>(1).map(AssetId::from),
                r.get(2),
            )
        })
        .collect())
}

/// Assemblies whose replica died (their lease lapsed).
pub async fn stalled_assemblies(client: &impl GenericClient) -> Result<Vec<uuid::Uuid>, DbError> {
    let rows = client
        .query(
            "SELECT id FROM uploads WHERE state = 'assembling'
               AND (locked_until IS NULL OR locked_until < now())",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Takes lease `lock` of every upload whose probe never finished (its
/// replica died, or storage failed): `(id, asset, length)` each.
pub async fn take_stalled_probes(
    client: &impl GenericClient,
    lock: uuid::Uuid,
    hold: Duration,
) -> Result<Vec<(uuid::Uuid, Option<AssetId>, u64)>, DbError> {
    let rows = client
        .query(
            "UPDATE uploads SET locked_until = now() + $2::float8 * interval '1 millisecond', lock_id = $1
             WHERE state = 'probing' AND (locked_until IS NULL OR locked_until < now())
             RETURNING id, asset_id, length",
            &[&lock, &millis(hold)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<uuid::Uuid>>(1).map(AssetId::from),
                unsigned(r.get(2)),
            )
        })
        .collect())
}

// ---- concatenation (partial and final uploads)

/// A partial upload as a final upload naming it sees it.
#[derive(Debug, Clone)]
pub struct PartialView {
    /// Id.
    pub id: uuid::Uuid,
    /// Ordinary, partial or final (a final may only name partials).
    pub concat: ConcatKind,
    /// Where it is.
    pub state: UploadState,
    /// Taken by a final upload already.
    pub claimed: bool,
    /// Past its expiry.
    pub expired: bool,
    /// Bytes received.
    pub offset: u64,
    /// Declared length.
    pub length: u64,
}

/// The uploads `ids` of `environment` (another environment's are absent).
pub async fn partials_in(
    client: &impl GenericClient,
    environment: EnvironmentId,
    ids: &[uuid::Uuid],
) -> Result<Vec<PartialView>, DbError> {
    let rows = client
        .query(
            "SELECT id, concat, state, claimed_by IS NOT NULL, expires_at < now(), \"offset\", length
             FROM uploads WHERE id = ANY($1) AND environment_id = $2",
            &[&ids, &environment.as_uuid()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(PartialView {
                id: row.get(0),
                concat: parse(row.get::<_, &str>(1), "concatenation")?,
                state: parse(row.get::<_, &str>(2), "upload state")?,
                claimed: row.get(3),
                expired: row.get(4),
                offset: unsigned(row.get(5)),
                length: unsigned(row.get(6)),
            })
        })
        .collect()
}

/// A final upload: `id` of `environment` filling `asset`, made of
/// `partials` in order (`length` bytes in all), complete at once
/// (`assembling`).
#[derive(Debug, Clone)]
pub struct NewFinal<'a> {
    /// Id.
    pub id: uuid::Uuid,
    /// The environment it belongs to.
    pub environment: EnvironmentId,
    /// The asset whose source it makes.
    pub asset: AssetId,
    /// The partials' total length.
    pub length: u64,
    /// `{"raw": ..., "values": ...}`.
    pub metadata: &'a serde_json::Value,
    /// Expiry of the row (as for any upload).
    pub expiry: Duration,
    /// Its partials, in order.
    pub partials: &'a [uuid::Uuid],
}

/// Records a final upload and takes its partials, in the caller's
/// transaction: all of them (unexpired, complete, untaken partials of the
/// same environment), or `false` and the caller rolls back.
pub async fn insert_final(
    client: &impl GenericClient,
    new: &NewFinal<'_>,
) -> Result<bool, DbError> {
    client
        .execute(
            "INSERT INTO uploads (id, environment_id, asset_id, length, \"offset\", state, metadata, expires_at, concat, partial_ids)
             VALUES ($1, $2, $3, $4, $4, 'assembling', $5, now() + $6::float8 * interval '1 millisecond', 'final', $7)",
            &[
                &new.id,
                &new.environment.as_uuid(),
                &new.asset.as_uuid(),
                &(new.length as i64),
                new.metadata,
                &millis(new.expiry),
                &new.partials,
            ],
        )
        .await?;
    // One statement takes them all, or none: a partial serves one final.
    let claimed = client
        .execute(
            "UPDATE uploads SET claimed_by = $1, updated_at = now()
             WHERE id = ANY($2) AND environment_id = $3 AND concat = 'partial' AND state = 'complete'
               AND claimed_by IS NULL AND expires_at > now()",
            &[&new.id, &new.partials, &new.environment.as_uuid()],
        )
        .await?;
    Ok(claimed as usize == new.partials.len())
}

/// The lengths of the partials final upload `id` took: `(partial, length)`.
pub async fn taken_partials(
    client: &impl GenericClient,
    id: uuid::Uuid,
    partials: &[uuid::Uuid],
) -> Result<Vec<(uuid::Uuid, u64)>, DbError> {
    let rows = client
        .query(
            "SELECT id, length FROM uploads WHERE id = ANY($1) AND claimed_by = $2",
            &[&partials, &id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), unsigned(r.get(1))))
        .collect())
}

/// Deletes the rows of the partials final upload `id` took.
pub async fn delete_taken_partials(
    client: &impl GenericClient,
    id: uuid::Uuid,
    partials: &[uuid::Uuid],
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM uploads WHERE id = ANY($1) AND claimed_by = $2",
            &[&partials, &id],
        )
        .await?;
    Ok(())
}

/// Deletes complete partial upload `id` if no final took it; `false` when
/// one did (or it is gone).
pub async fn delete_untaken_partial(
    client: &impl GenericClient,
    id: uuid::Uuid,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "DELETE FROM uploads WHERE id = $1 AND concat = 'partial' AND state = 'complete' AND claimed_by IS NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// Complete partial uploads that expired before any final took them.
pub async fn expired_partials(client: &impl GenericClient) -> Result<Vec<uuid::Uuid>, DbError> {
    let rows = client
        .query(
            "SELECT id FROM uploads WHERE concat = 'partial' AND state = 'complete'
               AND claimed_by IS NULL AND expires_at < now()",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes expired partial `id` if still untaken (finals take only
/// unexpired partials, so none can take it meanwhile).
pub async fn delete_expired_partial(
    client: &impl GenericClient,
    id: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM uploads WHERE id = $1 AND claimed_by IS NULL AND expires_at < now()",
            &[&id],
        )
        .await?;
    Ok(())
}
