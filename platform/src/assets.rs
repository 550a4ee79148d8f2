//! Asset and rendition rows: what every role reads and writes about assets.

use cascade_schemas::{AssetId, AssetState, PlaybackId};
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
                 'asset_id', id, 'playback_id', playback_id, 'state', state, 'title', title,
                 'duration_seconds', duration_seconds, 'published_version', published_version,
                 'error', CASE WHEN error_code IS NULL THEN NULL
                               ELSE jsonb_build_object('code', error_code, 'message', error_message) END)
             FROM assets WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let data: serde_json::Value = row.get(0);
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
    .map_err(|e| match e {
        queue::QueueError::Db(db) => db,
        other => DbError::Build(other.to_string()),
    })?;
    Ok(())
}

/// An asset as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Asset {
    /// Id.
    pub id: AssetId,
    /// Public playback handle.
    pub playback_id: PlaybackId,
    /// `public` or `signed`.
    pub playback_policy: String,
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
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl Asset {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let state: String = row.get("state");
        let playback_id: String = row.get("playback_id");
        Ok(Self {
            id: AssetId::from(row.get::<_, uuid::Uuid>("id")),
            playback_id: playback_id
                .parse()
                .map_err(|e| DbError::Build(format!("stored playback id: {e}")))?,
            playback_policy: row.get("playback_policy"),
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
}

// metadata is read as text and parsed here, so a stored value serde_json
// cannot take as jsonb never turns a read into an error.
const ASSET_COLUMNS: &str =
    "id, playback_id, playback_policy, state, title, metadata::text AS metadata, progress, \
     error_code, error_message, duration_seconds, published_version, created_at";

/// Inserts a new asset in `waiting` (use the caller's transaction to enqueue with it).
pub async fn insert(
    client: &impl GenericClient,
    id: AssetId,
    playback_id: &PlaybackId,
    title: Option<&str>,
    metadata: &serde_json::Value,
    policy: &str,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO assets (id, playback_id, title, metadata, playback_policy) VALUES ($1, $2, $3, $4, $5)",
            &[&id.as_uuid(), &playback_id.as_str(), &title, metadata, &policy],
        )
        .await?;
    emit(client, "asset.created", id).await
}

/// Sets the state (and clears any error unless errored).
pub async fn set_state(
    client: &impl GenericClient,
    id: AssetId,
    state: AssetState,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE assets SET state = $2, updated_at = now(),
                 error_code = CASE WHEN $2 = 'errored' THEN error_code END,
                 error_message = CASE WHEN $2 = 'errored' THEN error_message END
             WHERE id = $1",
            &[&id.as_uuid(), &state.as_str()],
        )
        .await?;
    Ok(())
}

/// Marks the asset errored with a stable code and a creator-readable message.
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
            "UPDATE assets SET state = 'errored', error_code = $2, error_message = $3, updated_at = now()
             WHERE id = $1 AND NOT (state = 'errored' AND error_code IS NOT DISTINCT FROM $2)",
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
             WHERE id = $1 AND state = 'processing'",
            &[&id.as_uuid(), &percent.clamp(0.0, 100.0), &duration],
        )
        .await?;
    Ok(())
}

/// Records a published version's renditions and makes it live: the asset
/// turns `ready` in the same transaction. Idempotent for a rerun.
pub async fn publish(
    pool: &Pool,
    id: AssetId,
    version: i32,
    duration: f64,
    renditions: &[RenditionRow],
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
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
             error_code = NULL, error_message = NULL, updated_at = now()
         WHERE id = $1",
        &[&id.as_uuid(), &version, &duration],
    )
    .await?;
    emit(&tx, "asset.ready", id).await?;
    tx.commit().await?;
    Ok(())
}

/// One asset.
pub async fn get(pool: &Pool, id: AssetId) -> Result<Option<Asset>, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1"),
            &[&id.as_uuid()],
        )
        .await?;
    row.as_ref().map(Asset::from_row).transpose()
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
                    average_bandwidth, segment_count, encoder
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
        })
        .collect())
}
