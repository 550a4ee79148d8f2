//! Asset and rendition rows: what every role reads and writes about assets.
//!
//! The state machine (`waiting -> processing -> ready | errored`) is kept
//! here, in SQL: every transition is a conditional update naming the state
//! it leaves, so a racing request loses cleanly instead of acting on a stale
//! read. An asset gets one source: a writer claims it first
//! ([`claim_source`]); only the claim's holder moves the asset on
//! ([`start_processing`], [`refuse_source`]); a writer may hand its claim
//! on to the next ([`hand_over_source_claim`]: a direct upload URL to the
//! upload made through it). Deleting tombstones the row, cancels the
//! asset's jobs and upload URLs and queues a purge ([`delete`]); a deleted
//! asset is invisible everywhere.

use std::time::Duration;

use cascade_schemas::{AssetId, AssetState, EnvironmentId, PlaybackId, PlaybackPolicy};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde::Serialize;
use tokio_postgres::Row;

use crate::db::DbError;
use crate::queue::{self, NewJob};

/// Attempts a webhook event gets per endpoint (backing off exponentially).
pub const WEBHOOK_MAX_ATTEMPTS: i32 = 8;

/// Records an asset event (`asset.created`, `asset.ready`, `asset.errored`)
/// as a `webhook` job in the caller's transaction, with a snapshot of the
/// asset as it is at that moment.
pub async fn emit(
    client: &impl GenericClient,
    event_type: &str,
    id: AssetId,
) -> Result<(), DbError> {
    let row = client
        .query_opt(
            "SELECT jsonb_build_object(
                 'asset_id', id, 'environment_id', environment_id, 'playback_id', playback_id,
                 'state', state, 'title', title,
                 'duration_seconds', duration_seconds, 'published_version', published_version,
                 'playable_version', playable_version,
                 'error', CASE WHEN error_code IS NULL THEN NULL
                               ELSE jsonb_build_object('code', error_code, 'message', error_message) END)
             FROM assets WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    enqueue_event(client, event_type, row.get(0)).await
}

/// Queues webhook event `event_type` with `data` (which names its
/// `environment_id`, so the environment's endpoints get it) in the caller's
/// transaction.
pub async fn enqueue_event(
    client: &impl GenericClient,
    event_type: &str,
    data: serde_json::Value,
) -> Result<(), DbError> {
    let event = serde_json::json!({
        "id": uuid::Uuid::new_v4(),
        "type": event_type,
        "created_at": Utc::now(),
        "data": data,
    });
    queue::enqueue(
        client,
        &NewJob::new(cascade_schemas::job_kind::WEBHOOK, event).max_attempts(WEBHOOK_MAX_ATTEMPTS),
        WEBHOOK_MAX_ATTEMPTS,
    )
    .await
    .map_err(queue::QueueError::into_db)?;
    Ok(())
}

/// An asset as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Asset {
    /// Id.
    pub id: AssetId,
    /// The environment it belongs to.
    pub environment_id: EnvironmentId,
    /// Public playback handle.
    pub playback_id: PlaybackId,
    /// Who may play it.
    pub playback_policy: PlaybackPolicy,
    /// Lifecycle state.
    pub state: AssetState,
    /// Creator's title.
    pub title: Option<String>,
    /// Creator's metadata.
    pub metadata: serde_json::Value,
    /// Percent transcoded.
    pub progress: f32,
    /// Stable error code when errored.
    pub error_code: Option<String>,
    /// Creator-readable message when errored.
    pub error_message: Option<String>,
    /// Source duration, once probed.
    pub duration_seconds: Option<f64>,
    /// Live version of the outputs.
    pub published_version: Option<i32>,
    /// The version being transcoded whose first segments already play
    /// (progressive publish), until a version is published.
    pub playable_version: Option<i32>,
    /// The output version the current source makes (a replacement in
    /// progress is one above the published version).
    pub source_version: i32,
    /// The publish gate's record of the published version (checks,
    /// failures, per-rendition measures); `None` when it was not checked.
    pub quality: Option<serde_json::Value>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl Asset {
    /// The version players get: the published one, else, while the first
    /// version is still processing, the one growing (progressive publish).
    /// An archived asset (or one being restored) has none: its objects are
    /// gone until the restore publishes the next version.
    pub fn served_version(&self) -> Option<i32> {
        if self.state.is_archived() {
            return None;
        }
        self.published_version.or(self.growing_version())
    }

    /// The version that plays while it is still being transcoded: only
    /// before any version is published (a replacement plays once ready).
    pub fn growing_version(&self) -> Option<i32> {
        self.state
            .growing_version(self.published_version, self.playable_version)
    }

    fn from_row(row: &Row) -> Result<Self, DbError> {
        let state: String = row.get("state");
        let playback_id: String = row.get("playback_id");
        let policy: String = row.get("playback_policy");
        Ok(Self {
            id: AssetId::from(row.get::<_, uuid::Uuid>("id")),
            environment_id: EnvironmentId::from(row.get::<_, uuid::Uuid>("environment_id")),
            playback_id: playback_id
                .parse()
                .map_err(|e| DbError::Build(format!("stored playback id: {e}")))?,
            playback_policy: policy
                .parse()
                .map_err(|e| DbError::Build(format!("stored playback policy: {e}")))?,
            state: state
                .parse()
                .map_err(|e| DbError::Build(format!("stored asset state: {e}")))?,
            title: row.get("title"),
            metadata: serde_json::from_str(row.get::<_, &str>("metadata"))
                .unwrap_or(serde_json::Value::Null),
            progress: row.get("progress"),
            error_code: row.get("error_code"),
            error_message: row.get("error_message"),
            duration_seconds: row.get("duration_seconds"),
            published_version: row.get("published_version"),
            playable_version: row.get("playable_version"),
            source_version: row.get("source_version"),
            quality: row
                .get::<_, Option<&str>>("quality")
                .and_then(|text| serde_json::from_str(text).ok()),
            created_at: row.get("created_at"),
        })
    }
}

/// A rendition of a published version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RenditionRow {
    /// Directory name (`1080p`, `audio`).
    pub name: String,
    /// `video` or `audio`.
    pub kind: String,
    /// RFC 6381 codecs string.
    pub codecs: String,
    /// Video width.
    pub width: Option<i32>,
    /// Video height.
    pub height: Option<i32>,
    /// Video frame rate as a rational string.
    pub frame_rate: Option<String>,
    /// Audio channels.
    pub channels: Option<i32>,
    /// Audio sample rate.
    pub sample_rate: Option<i32>,
    /// Peak bitrate, bit/s.
    pub bandwidth: i64,
    /// Average bitrate, bit/s.
    pub average_bandwidth: i64,
    /// Number of media segments.
    pub segment_count: i32,
    /// Encoder used.
    pub encoder: String,
    /// The storage tier holding its media (`renditions.tier`; a rendition
    /// is published in the hot tier, whatever this says when written).
    pub tier: String,
}

// metadata is read as text and parsed here, so a stored value serde_json
// cannot take as jsonb never turns a read into an error.
const ASSET_COLUMNS: &str =
    "id, environment_id, playback_id, playback_policy, state, title, metadata::text AS metadata, \
     progress, error_code, error_message, duration_seconds, published_version, playable_version, \
     source_version, quality::text AS quality, \
     created_at";

/// A writer's claim on an asset's source (see [`claim_source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceClaim {
    /// Who holds it: an upload id, or a request's own id.
    pub id: uuid::Uuid,
    /// How long it holds without renewal (a writer that died lets go after this).
    pub hold: Duration,
}

/// A new asset.
#[derive(Debug, Clone)]
pub struct NewAsset<'a> {
    /// The environment it belongs to.
    pub environment: EnvironmentId,
    /// Creator's title.
    pub title: Option<&'a str>,
    /// Creator's metadata (a JSON object).
    pub metadata: &'a serde_json::Value,
    /// Who may play it.
    pub policy: PlaybackPolicy,
    /// Created with its source already claimed by this writer.
    pub source_claim: Option<SourceClaim>,
}

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// Inserts a new asset `id` in `waiting` (use the caller's transaction to
/// do more with it) and records its `asset.created` event; returns its
/// playback id.
pub async fn insert(
    client: &impl GenericClient,
    id: AssetId,
    new: &NewAsset<'_>,
) -> Result<PlaybackId, DbError> {
    let playback_id = PlaybackId::new();
    let (claim, hold) = match new.source_claim {
        Some(claim) => (Some(claim.id), Some(millis(claim.hold))),
        None => (None, None),
    };
    client
        .execute(
            "INSERT INTO assets (id, environment_id, playback_id, title, metadata, playback_policy,
                                 source_claim, source_claimed_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::float8 * interval '1 millisecond')",
            &[
                &id.as_uuid(),
                &new.environment.as_uuid(),
                &playback_id.as_str(),
                &new.title,
                new.metadata,
                &new.policy.as_str(),
                &claim,
                &hold,
            ],
        )
        .await?;
    emit(client, "asset.created", id).await?;
    Ok(playback_id)
}

/// The asset recording part `recorded_from` of a broadcast of live stream
/// `stream`: created in `processing` (its segments exist already; no
/// source, no transcode) unless an earlier attempt created it. Returns its
/// id and whether it is still to be published.
pub async fn insert_recording(
    client: &impl GenericClient,
    environment: EnvironmentId,
    policy: PlaybackPolicy,
    stream: cascade_schemas::LiveStreamId,
    recorded_from: &str,
    title: &str,
) -> Result<(AssetId, bool), DbError> {
    let id = AssetId::new();
    let inserted = client
        .query_opt(
            "INSERT INTO assets (id, environment_id, playback_id, title, playback_policy, state,
                 live_stream_id, recorded_from)
             VALUES ($1, $2, $3, $4, $5, 'processing', $6, $7)
             ON CONFLICT (recorded_from) DO NOTHING RETURNING id",
            &[
                &id.as_uuid(),
                &environment.as_uuid(),
                &PlaybackId::new().as_str(),
                &title,
                &policy.as_str(),
                &stream.as_uuid(),
                &recorded_from,
            ],
        )
        .await?;
    if inserted.is_some() {
        emit(client, "asset.created", id).await?;
        return Ok((id, true));
    }
    let row = client
        .query_one(
            "SELECT id, state = 'processing' AND deleted_at IS NULL FROM assets WHERE recorded_from = $1",
            &[&recorded_from],
        )
        .await?;
    Ok((AssetId::from(row.get::<_, uuid::Uuid>(0)), row.get(1)))
}

/// Why a writer could not claim an asset's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// No such asset in that environment (or it is deleted).
    NotFound,
    /// The asset already has its source: it left `waiting`.
    HasSource(AssetState),
    /// Another writer (another upload, a simple upload) is writing it.
    Claimed,
}

/// Claims the source of waiting asset `id` in `environment` for `claim`:
/// only one writer at a time, and none once the asset left `waiting`. A
/// claim whose hold ran out (its writer died) can be taken over.
pub async fn claim_source(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: AssetId,
    claim: SourceClaim,
) -> Result<Result<(), ClaimRefused>, DbError> {
    let row = client
        .query_opt(
            "WITH target AS (
                 SELECT id, state, source_claim, source_claimed_until FROM assets
                 WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL FOR UPDATE),
             claimed AS (
                 UPDATE assets a SET source_claim = $3,
                        source_claimed_until = now() + $4::float8 * interval '1 millisecond', updated_at = now()
                 FROM target t
                 WHERE a.id = t.id AND t.state = 'waiting'
                   AND (t.source_claim IS NULL OR t.source_claim = $3 OR t.source_claimed_until < now())
                 RETURNING a.id)
             SELECT t.state, EXISTS (SELECT 1 FROM claimed) FROM target t",
            &[&id.as_uuid(), &environment.as_uuid(), &claim.id, &millis(claim.hold)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(ClaimRefused::NotFound));
    };
    if row.get::<_, bool>(1) {
        return Ok(Ok(()));
    }
    let state: String = row.get(0);
    let state: AssetState = state
        .parse()
        .map_err(|e| DbError::Build(format!("stored asset state: {e}")))?;
    Ok(Err(if state == AssetState::Waiting {
        ClaimRefused::Claimed
    } else {
        ClaimRefused::HasSource(state)
    }))
}

/// Moves the claim on waiting asset `id`'s source from holder `from` to
/// `to` (whether or not `from`'s hold ran out): a writer hands the source
/// on to the next (a direct upload to the upload made through its URL);
/// `false` when `from` no longer holds it (the asset moved on, was deleted,
/// or another writer took over).
pub async fn hand_over_source_claim(
    client: &impl GenericClient,
    id: AssetId,
    from: uuid::Uuid,
    to: SourceClaim,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE assets SET source_claim = $3,
                 source_claimed_until = now() + $4::float8 * interval '1 millisecond', updated_at = now()
             WHERE id = $1 AND source_claim = $2 AND state = 'waiting' AND deleted_at IS NULL",
            &[&id.as_uuid(), &from, &to.id, &millis(to.hold)],
        )
        .await?;
    Ok(n == 1)
}

/// Extends a held claim; `false` when it is no longer held (taken over, or
/// the asset moved on or was deleted).
pub async fn renew_source_claim(
    client: &impl GenericClient,
    id: AssetId,
    claim: SourceClaim,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE assets SET source_claimed_until = now() + $3::float8 * interval '1 millisecond'
             WHERE id = $1 AND source_claim = $2 AND state IN ('waiting', 'ready', 'errored')
               AND deleted_at IS NULL",
            &[&id.as_uuid(), &claim.id, &millis(claim.hold)],
        )
        .await?;
    Ok(n == 1)
}

/// Lets go of a claim (the writer gave up: a terminated upload, a failed
/// request), so another writer may upload the source.
pub async fn release_source_claim(
    client: &impl GenericClient,
    id: AssetId,
    claim: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE assets SET source_claim = NULL, source_claimed_until = NULL, updated_at = now()
             WHERE id = $1 AND source_claim = $2 AND state IN ('waiting', 'ready', 'errored')",
            &[&id.as_uuid(), &claim],
        )
        .await?;
    Ok(())
}

/// Claims asset `id` of `environment` for a replacement source: only a
/// `ready` or `errored` asset (a waiting one takes its first source through
/// [`claim_source`]; a processing one must finish first), and only one
/// writer at a time. Returns the output version the replacement will make.
pub async fn claim_replacement(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: AssetId,
    claim: SourceClaim,
) -> Result<Result<u32, ClaimRefused>, DbError> {
    let row = client
        .query_opt(
            "WITH target AS (
                 SELECT id, state, source_version FROM assets
                 WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL FOR UPDATE),
             claimed AS (
                 UPDATE assets a SET source_claim = $3,
                        source_claimed_until = now() + $4::float8 * interval '1 millisecond', updated_at = now()
                 FROM target t
                 WHERE a.id = t.id AND t.state IN ('ready', 'errored')
                   AND (a.source_claim IS NULL OR a.source_claim = $3 OR a.source_claimed_until < now())
                 RETURNING a.id)
             SELECT t.state, EXISTS (SELECT 1 FROM claimed), t.source_version + 1 FROM target t",
            &[&id.as_uuid(), &environment.as_uuid(), &claim.id, &millis(claim.hold)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(ClaimRefused::NotFound));
    };
    let state: String = row.get(0);
    let state: AssetState = state
        .parse()
        .map_err(|e| DbError::Build(format!("stored asset state: {e}")))?;
    if row.get::<_, bool>(1) {
        let version = u32::try_from(row.get::<_, i32>(2))
            .map_err(|e| DbError::Build(format!("stored source version: {e}")))?;
        return Ok(Ok(version));
    }
    Ok(Err(
        if matches!(state, AssetState::Ready | AssetState::Errored) {
            ClaimRefused::Claimed
        } else {
            ClaimRefused::HasSource(state)
        },
    ))
}

/// `ready | errored -> processing` for the holder of a replacement claim:
/// the new source (output version `version`) is complete and probed. The
/// published version stays playable until the new one is published.
/// `false` when the claim is no longer held.
pub async fn start_replacement(
    client: &impl GenericClient,
    id: AssetId,
    claim: uuid::Uuid,
    version: u32,
    duration: Option<f64>,
) -> Result<bool, DbError> {
    let version = i32::try_from(version).map_err(|e| DbError::Build(format!("version: {e}")))?;
    let n = client
        .execute(
            "UPDATE assets SET state = 'processing', source_version = $3, progress = 0,
                 playable_version = NULL, duration_seconds = COALESCE($4, duration_seconds),
                 source_claim = NULL, source_claimed_until = NULL, error_code = NULL, error_message = NULL,
                 updated_at = now()
             WHERE id = $1 AND state IN ('ready', 'errored') AND source_claim = $2 AND deleted_at IS NULL",
            &[&id.as_uuid(), &claim, &version, &duration],
        )
        .await?;
    Ok(n == 1)
}

/// `waiting -> processing` for the holder of the source claim, recording
/// the probed duration; `false` when the claim is no longer held (the asset
/// was deleted, or another writer took over). Use the transaction that
/// enqueues the transcode. A direct upload that wrote the source is
/// `complete` with it.
pub async fn start_processing(
    client: &impl GenericClient,
    id: AssetId,
    claim: uuid::Uuid,
    duration: Option<f64>,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE assets SET state = 'processing', duration_seconds = COALESCE($3, duration_seconds),
                 source_claim = NULL, source_claimed_until = NULL, error_code = NULL, error_message = NULL,
                 updated_at = now()
             WHERE id = $1 AND state = 'waiting' AND source_claim = $2 AND deleted_at IS NULL",
            &[&id.as_uuid(), &claim, &duration],
        )
        .await?;
    if n == 1 {
        crate::direct_uploads::source_arrived(client, id, claim).await?;
    }
    Ok(n == 1)
}

/// `waiting -> errored` for the holder of the source claim: the source it
/// wrote is not media we can process (the message tells the creator why).
/// `false` when the claim is no longer held. A direct upload that wrote
/// the source is `complete` with it (the upload itself worked).
pub async fn refuse_source(
    pool: &Pool,
    id: AssetId,
    claim: uuid::Uuid,
    code: &str,
    message: &str,
) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE assets SET state = 'errored', error_code = $3, error_message = $4,
                 source_claim = NULL, source_claimed_until = NULL, updated_at = now()
             WHERE id = $1 AND state = 'waiting' AND source_claim = $2 AND deleted_at IS NULL",
            &[&id.as_uuid(), &claim, &code, &message],
        )
        .await?;
    if n == 1 {
        crate::direct_uploads::source_arrived(&tx, id, claim).await?;
        emit(&tx, "asset.errored", id).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// A transcode (re)starts: `processing` and `restoring` (a rebuild from the
/// archive) stay, `errored` (an operator's retry) goes back to
/// `processing`. `false` when the asset is in none of them (deleted, or
/// already published).
pub async fn resume_processing(client: &impl GenericClient, id: AssetId) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE assets SET state = CASE WHEN state = 'restoring' THEN 'restoring' ELSE 'processing' END,
                 error_code = NULL, error_message = NULL, updated_at = now()
             WHERE id = $1 AND state IN ('processing', 'errored', 'restoring') AND deleted_at IS NULL",
            &[&id.as_uuid()],
        )
        .await?;
    Ok(n == 1)
}

/// `processing -> errored` (the transcode failed for good) with a stable
/// code and a creator-readable message. A restore that fails leaves the
/// asset errored with nothing published (its archived version's objects
/// are gone).
pub async fn set_errored(
    pool: &Pool,
    id: AssetId,
    code: &str,
    message: &str,
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Only a change of error is an event (a retry that fails the same way is not).
    let changed = tx
        .execute(
            "UPDATE assets SET state = 'errored', error_code = $2, error_message = $3, updated_at = now(),
                 published_version = CASE WHEN state = 'restoring' THEN NULL ELSE published_version END
             WHERE id = $1 AND deleted_at IS NULL AND state IN ('processing', 'errored', 'restoring')
               AND NOT (state = 'errored' AND error_code IS NOT DISTINCT FROM $2)",
            &[&id.as_uuid(), &code, &message],
        )
        .await?;
    if changed == 1 {
        emit(&tx, "asset.errored", id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records progress (percent) and, once known, the source duration.
pub async fn set_progress(
    pool: &Pool,
    id: AssetId,
    percent: f32,
    duration: Option<f64>,
) -> Result<(), DbError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE assets SET progress = $2, duration_seconds = COALESCE($3, duration_seconds), updated_at = now()
             WHERE id = $1 AND state IN ('processing', 'restoring')",
            &[&id.as_uuid(), &percent.clamp(0.0, 100.0), &duration],
        )
        .await?;
    Ok(())
}

/// Records a published version's renditions and makes it live: the asset
/// turns `ready` in the same transaction (`processing -> ready`, sending
/// `asset.ready`, or `restoring -> ready`, sending `asset.restored`; a
/// rerun of a published version is idempotent), with the publish gate's
/// `quality` record. `false`, and nothing
/// recorded, when the asset is deleted or no longer processing.
pub async fn publish(
    pool: &Pool,
    id: AssetId,
    version: i32,
    duration: f64,
    renditions: &[RenditionRow],
    quality: Option<&serde_json::Value>,
) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let live = tx
        .query_opt(
            "SELECT playback_id, COALESCE(published_version, playable_version), state = 'restoring' FROM assets
             WHERE id = $1 AND deleted_at IS NULL
               AND (state IN ('processing', 'restoring') OR (state = 'ready' AND published_version = $2))
             FOR UPDATE",
            &[&id.as_uuid(), &version],
        )
        .await?;
    let Some(live) = live else {
        return Ok(false);
    };
    let playback_id: String = live.get(0);
    // What played before: the published version, or one that played while
    // it grew and is replaced by a corrective take ([`retake`]).
    let replaced: Option<i32> = live.get(1);
    let restored: bool = live.get(2);
    tx.execute(
        "DELETE FROM renditions WHERE asset_id = $1 AND version = $2",
        &[&id.as_uuid(), &version],
    )
    .await?;
    for r in renditions {
        tx.execute(
            "INSERT INTO renditions (asset_id, version, name, kind, codecs, width, height, frame_rate, channels,
                 sample_rate, bandwidth, average_bandwidth, segment_count, encoder)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &id.as_uuid(),
                &version,
                &r.name,
                &r.kind,
                &r.codecs,
                &r.width,
                &r.height,
                &r.frame_rate,
                &r.channels,
                &r.sample_rate,
                &r.bandwidth,
                &r.average_bandwidth,
                &r.segment_count,
                &r.encoder,
            ],
        )
        .await?;
    }
    tx.execute(
        "UPDATE assets SET state = 'ready', progress = 100, published_version = $2, duration_seconds = $3,
             playable_version = NULL, quality = $4::text::jsonb,
             error_code = NULL, error_message = NULL, updated_at = now()
         WHERE id = $1",
        &[
            &id.as_uuid(),
            &version,
            &duration,
            &quality.map(serde_json::Value::to_string),
        ],
    )
    .await?;
    emit(
        &tx,
        if restored {
            "asset.restored"
        } else {
            "asset.ready"
        },
        id,
    )
    .await?;
    if let Some(replaced) = replaced.filter(|&old| old != version) {
        // The top-level manifests (and unversioned media URLs) now name
        // another version: origins forget their lookup at once, CDNs
        // are purged through the queue.
        announce_playback_change(&tx, &playback_id).await?;
        let payload = serde_json::json!({
            "asset_id": id, "playback_id": playback_id, "replaced_version": replaced,
        });
        // Now, and again once every origin has surely let go of the old
        // version (what one served meanwhile may have been cached).
        let settled =
            Utc::now() + chrono::Duration::from_std(PLAYBACK_CHANGE_SETTLE).unwrap_or_default();
        for (pass, run_at) in [("now", None), ("settled", Some(settled))] {
            let mut job = NewJob::new(cascade_schemas::job_kind::PURGE_CDN, payload.clone())
                .idempotency_key(format!("{id}/v{replaced}/{pass}"))
                .max_attempts(PURGE_CDN_MAX_ATTEMPTS);
            job.run_at = run_at;
            queue::enqueue(&tx, &job, PURGE_CDN_MAX_ATTEMPTS)
                .await
                .map_err(queue::QueueError::into_db)?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Attempts a `purge_cdn` job gets (backing off) while a CDN is unreachable.
const PURGE_CDN_MAX_ATTEMPTS: i32 = 10;

/// How long after a playback change (see [`PLAYBACK_CHANGED_CHANNEL`])
/// every origin has stopped serving the old answer, even one whose
/// notification connection was down or that was answering a request when
/// the change came: twice the default `origin.asset_ttl` (stale while
/// revalidating) plus the front cache's second, rounded up. A CDN is purged
/// once more after it, so nothing an origin sent late stays cached.
pub const PLAYBACK_CHANGE_SETTLE: Duration = Duration::from_secs(10);

/// The LISTEN/NOTIFY channel on which a playback id is announced, at
/// commit, when what it plays changes in a way a cached lookup must not
/// outlive (deleted, another version published): the origins forget it.
pub const PLAYBACK_CHANGED_CHANNEL: &str = "cascade_playback_changed";

/// Announces on [`PLAYBACK_CHANGED_CHANNEL`], in the caller's transaction
/// (delivered only if it commits).
pub(crate) async fn announce_playback_change(
    client: &impl GenericClient,
    playback_id: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&PLAYBACK_CHANGED_CHANNEL, &playback_id],
        )
        .await?;
    Ok(())
}

/// A corrective take: the publish gate refused `version` of processing (or
/// restoring) asset `id` for a reason another encode can correct, and its
/// source was copied as `version + 1`'s. Moves the asset's source to
/// `version + 1` and queues `transcode` (that version's job, carrying the
/// corrections) in one transaction, so the job of `version` and any of its
/// chunks skip themselves from now on. A version that played while it grew
/// keeps playing until the take is published. `false` when the asset is no
/// longer making `version` (deleted, replaced, or already moved on).
pub async fn retake(
    pool: &Pool,
    id: AssetId,
    version: u32,
    transcode: &NewJob,
    max_attempts: i32,
) -> Result<bool, DbError> {
    let version = i32::try_from(version).map_err(|e| DbError::Build(format!("version: {e}")))?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE assets SET source_version = $2 + 1, progress = 0, updated_at = now()
             WHERE id = $1 AND state IN ('processing', 'restoring') AND source_version = $2
               AND deleted_at IS NULL",
            &[&id.as_uuid(), &version],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    queue::enqueue_and_wake(&tx, transcode, max_attempts).await?;
    tx.commit().await?;
    Ok(true)
}

/// Makes the growing presentation of `version` playable (progressive
/// publish: its first segments and playlists are stored) and queues
/// `asset.playable`. Only while the asset is processing that version and
/// has none published; `false` otherwise, or when it already was.
pub async fn mark_playable(pool: &Pool, id: AssetId, version: i32) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let changed = tx
        .execute(
            "UPDATE assets SET playable_version = $2, updated_at = now()
             WHERE id = $1 AND deleted_at IS NULL AND state = 'processing'
               AND published_version IS NULL AND source_version = $2
               AND playable_version IS DISTINCT FROM $2",
            &[&id.as_uuid(), &version],
        )
        .await?;
    if changed == 1 {
        emit(&tx, "asset.playable", id).await?;
    }
    tx.commit().await?;
    Ok(changed == 1)
}

/// One asset, whatever its environment (the roles' own view; the API uses
/// [`get_in`]). Deleted assets are not found.
pub async fn get(pool: &Pool, id: AssetId) -> Result<Option<Asset>, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1 AND deleted_at IS NULL"),
            &[&id.as_uuid()],
        )
        .await?;
    row.as_ref().map(Asset::from_row).transpose()
}

/// One asset of `environment`; another environment's, or a deleted one, is
/// not found.
pub async fn get_in(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: AssetId,
) -> Result<Option<Asset>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {ASSET_COLUMNS} FROM assets
                 WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL"
            ),
            &[&id.as_uuid(), &environment.as_uuid()],
        )
        .await?;
    row.as_ref().map(Asset::from_row).transpose()
}

/// A page of `environment`'s assets, newest first, after the `(created_at,
/// id)` of the previous page's last one; at most `limit`.
pub async fn list_in(
    client: &impl GenericClient,
    environment: EnvironmentId,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<Asset>, DbError> {
    let (after_time, after_id) = after.unzip();
    let rows = client
        .query(
            &format!(
                "SELECT {ASSET_COLUMNS} FROM assets
                 WHERE environment_id = $1 AND deleted_at IS NULL
                   AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ),
            &[&environment.as_uuid(), &after_time, &after_id, &limit],
        )
        .await?;
    rows.iter().map(Asset::from_row).collect()
}

/// What [`delete`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// No such asset in that environment.
    NotFound,
    /// Tombstoned now: its jobs are cancelled, origins told, and its purge
    /// (CDN, objects, uploads) is queued.
    Now,
    /// Already deleted, its purge under way.
    Already,
}

/// Deletes asset `id` of `environment`: in one transaction the row is
/// tombstoned (invisible from then on), the asset's queued and running jobs
/// are cancelled (a running worker stops at its next heartbeat), and a
/// purge job is queued that removes the objects once no job of the asset
/// can still write, then its upload and rendition rows.
pub async fn delete(
    pool: &Pool,
    environment: EnvironmentId,
    id: AssetId,
    max_attempts: i32,
) -> Result<Deleted, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT deleted_at IS NOT NULL, playback_id FROM assets
             WHERE id = $1 AND environment_id = $2 FOR UPDATE",
            &[&id.as_uuid(), &environment.as_uuid()],
        )
        .await?;
    let playback_id: String = match row.map(|r| (r.get::<_, bool>(0), r.get(1))) {
        None => return Ok(Deleted::NotFound),
        Some((true, _)) => return Ok(Deleted::Already),
        Some((false, playback_id)) => playback_id,
    };
    tx.execute(
        "UPDATE assets SET deleted_at = now(), source_claim = NULL, source_claimed_until = NULL,
             updated_at = now()
         WHERE id = $1",
        &[&id.as_uuid()],
    )
    .await?;
    tx.execute(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now(),
             last_error = 'the asset was deleted'
         WHERE payload->>'asset_id' = $1 AND payload ? 'asset_id' AND kind <> $2
           AND state IN ('queued', 'running')",
        &[&id.to_string(), &cascade_schemas::job_kind::WEBHOOK],
    )
    .await?;
    // Its upload URLs die with it.
    crate::direct_uploads::cancel_for_asset(&tx, id).await?;
    emit(&tx, "asset.deleted", id).await?;
    announce_playback_change(&tx, &playback_id).await?;
    queue::enqueue(
        &tx,
        &NewJob::new(
            cascade_schemas::job_kind::PURGE_ASSET,
            serde_json::json!({ "asset_id": id }),
        )
        .idempotency_key(id.to_string())
        .max_attempts(max_attempts),
        max_attempts,
    )
    .await
    .map_err(queue::QueueError::into_db)?;
    tx.commit().await?;
    Ok(Deleted::Now)
}

/// Whether a job of deleted asset `id` may still write objects: one not
/// finished, or one whose last lease has not run out (a cancelled worker
/// stops at its next heartbeat, at the latest when its lease expires).
pub async fn has_live_jobs(client: &impl GenericClient, id: AssetId) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM jobs
                 WHERE payload->>'asset_id' = $1 AND payload ? 'asset_id' AND kind NOT IN ($2, $3)
                   AND (state IN ('queued', 'running') OR lease_expires_at > now()))",
            &[
                &id.to_string(),
                &cascade_schemas::job_kind::WEBHOOK,
                &cascade_schemas::job_kind::PURGE_ASSET,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Deleted asset `id` as its purge needs it; `None` when it is not a
/// deleted asset.
pub async fn deleted_asset(
    client: &impl GenericClient,
    id: AssetId,
) -> Result<Option<DeletedAsset>, DbError> {
    let row = client
        .query_opt(
            "SELECT playback_id, EXTRACT(EPOCH FROM now() - deleted_at)::float8
             FROM assets WHERE id = $1 AND deleted_at IS NOT NULL",
            &[&id.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let playback_id: String = row.get(0);
    let deleted_for = Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0));
    let playback_id = playback_id
        .parse()
        .map_err(|e| DbError::Build(format!("stored playback id: {e}")))?;
    let rows = client
        .query(
            "SELECT id, multipart_id FROM uploads WHERE asset_id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    Ok(Some(DeletedAsset {
        playback_id,
        deleted_for,
        uploads: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    }))
}

/// What the purge of a deleted asset needs to know.
#[derive(Debug, Clone)]
pub struct DeletedAsset {
    /// Its playback id (CDN copies are cached under it).
    pub playback_id: PlaybackId,
    /// How long ago it was deleted.
    pub deleted_for: Duration,
    /// Its uploads and their multipart uploads (see [`remove_objects`]).
    pub uploads: Vec<(uuid::Uuid, Option<String>)>,
}

/// Removes what a deleted asset has in storage: its objects, and its
/// unfinished uploads' multipart uploads and staged pieces (`uploads`: as
/// [`DeletedAsset`] lists them). Idempotent.
pub async fn remove_objects(
    store: &crate::ObjectStore,
    id: AssetId,
    uploads: &[(uuid::Uuid, Option<String>)],
) -> Result<(), crate::StorageError> {
    use cascade_schemas::ObjectKey;
    for (upload, multipart_id) in uploads {
        if let Some(upload_id) = multipart_id {
            match store
                .abort_multipart(&ObjectKey::source(id), upload_id)
                .await
            {
                Ok(()) | Err(crate::StorageError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        store
            .delete_prefix(&ObjectKey::upload_prefix(*upload))
            .await?;
    }
    store.delete_prefix(&ObjectKey::asset_prefix(id)).await?;
    Ok(())
}

/// Removes the upload and rendition rows of a deleted asset, once its
/// objects are gone. The asset's row stays as a tombstone: deleting it
/// again answers the same, and its playback id is never handed out again
/// (a CDN may still hold URLs with it).
pub async fn finish_purge(
    client: &mut deadpool_postgres::Client,
    id: AssetId,
) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    let deleted = tx
        .query_opt(
            "SELECT 1 FROM assets WHERE id = $1 AND deleted_at IS NOT NULL FOR UPDATE",
            &[&id.as_uuid()],
        )
        .await?;
    if deleted.is_some() {
        tx.execute("DELETE FROM uploads WHERE asset_id = $1", &[&id.as_uuid()])
            .await?;
        tx.execute(
            "DELETE FROM renditions WHERE asset_id = $1",
            &[&id.as_uuid()],
        )
        .await?;
        tx.execute(
            "DELETE FROM media_views WHERE asset_id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The renditions of one version, by name.
pub async fn renditions(
    pool: &Pool,
    id: AssetId,
    version: i32,
) -> Result<Vec<RenditionRow>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT name, kind, codecs, width, height, frame_rate, channels, sample_rate, bandwidth,
                    average_bandwidth, segment_count, encoder, tier
             FROM renditions WHERE asset_id = $1 AND version = $2 ORDER BY kind DESC, height DESC NULLS LAST, name",
            &[&id.as_uuid(), &version],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RenditionRow {
            name: r.get(0),
            kind: r.get(1),
            codecs: r.get(2),
            width: r.get(3),
            height: r.get(4),
            frame_rate: r.get(5),
            channels: r.get(6),
            sample_rate: r.get(7),
            bandwidth: r.get(8),
            average_bandwidth: r.get(9),
            segment_count: r.get(10),
            encoder: r.get(11),
            tier: r.get(12),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    /// jsonb gives numbers back in full: -1.7976931348623157e308 comes back
    /// as a 309-digit integer, which must parse to the same finite number
    /// (serde_json's `float_roundtrip`), not fail and lose the metadata.
    #[test]
    fn stored_metadata_numbers_read_back() {
        let stored = format!("{{\"a\": -17976931348623157{}}}", "0".repeat(292));
        let value: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(value["a"].as_f64(), Some(-f64::MAX));
    }
}
