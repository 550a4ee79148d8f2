//! Live streams: rows, the publisher lease and the broadcast lifecycle.
//!
//! A stream is `idle` until a publisher holds it ([`claim_publisher`]), then
//! `active`. The ingest replica holding the RTMP connection renews a lease
//! while it streams ([`renew_publisher`]); an expired lease means the replica
//! died, and any replica may then take the stream. A publisher that leaves
//! ([`release_publisher`]) keeps the stream `active` for the reconnect
//! window: a publisher that comes back within it continues the same
//! *broadcast* (a new publish session, a discontinuity in the playlists).
//! When the window runs out ([`end_idle_broadcasts`], run by every ingest
//! replica; a conditional update lets one win) the stream is `idle` again
//! and a `finish_broadcast` job records the broadcast as a VOD asset or
//! removes its segments. `disabled` refuses publishers and ends a running
//! broadcast.
//!
//! Segment rows ([`record_segments`]) are the broadcast's record: the
//! sliding windows are rendered from the newest, the recording from all,
//! and a replica taking over a broadcast continues from them.

use std::time::Duration;

use cascade_schemas::{EnvironmentId, LiveStreamId, LiveStreamState, PlaybackId, PlaybackPolicy};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use crate::db::DbError;
use crate::queue::{self, NewJob};

/// Attempts a `finish_broadcast` job gets (backing off) before it is dead.
pub const FINISH_MAX_ATTEMPTS: i32 = 20;

/// Prefix of every stream key, so leaked ones are recognisable.
pub const STREAM_KEY_PREFIX: &str = "lsk_";
/// Characters after the prefix: base64url of 24 random bytes.
const STREAM_KEY_BODY_LEN: usize = 32;

/// The stored form of a stream key.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `key` has the shape of a stream key Cascade issues (checked
/// before any database lookup, so garbage costs nothing).
pub fn key_well_formed(key: &str) -> bool {
    key.strip_prefix(STREAM_KEY_PREFIX).is_some_and(|body| {
        body.len() == STREAM_KEY_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn new_stream_key() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    format!(
        "{STREAM_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// How much delay a stream trades for robustness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LatencyMode {
    /// Whole segments (the default).
    #[default]
    Standard,
    /// Low-latency delivery where the player supports it.
    Low,
}

impl LatencyMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Low => "low",
        }
    }
}

/// A live stream as stored (never its key).
#[derive(Debug, Clone, Serialize)]
pub struct LiveStream {
    /// Id.
    pub id: LiveStreamId,
    /// The environment it belongs to.
    pub environment_id: EnvironmentId,
    /// Public playback handle.
    pub playback_id: PlaybackId,
    /// Who may play it.
    pub playback_policy: PlaybackPolicy,
    /// Latency mode.
    pub latency_mode: LatencyMode,
    /// Whether broadcasts become VOD assets.
    pub recording: bool,
    /// Seconds a dropped publisher has to come back into the same broadcast.
    pub reconnect_window: i32,
    /// Lifecycle state.
    pub state: LiveStreamState,
    /// A publisher is connected now.
    pub connected: bool,
    /// The ingest replica holding the publisher.
    pub publisher_node: Option<String>,
    /// The broadcast under way.
    pub broadcast_id: Option<uuid::Uuid>,
    /// When it started.
    pub broadcast_started_at: Option<DateTime<Utc>>,
    /// When the last publisher left (the reconnect window runs from here).
    pub disconnected_at: Option<DateTime<Utc>>,
    /// What the publisher sends, as measured at ingest.
    pub ingest: Option<serde_json::Value>,
    /// The last refused publish: why and when.
    pub last_refusal: Option<serde_json::Value>,
    /// Creator's metadata.
    pub metadata: serde_json::Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, environment_id, playback_id, playback_policy, latency_mode, recording, \
     reconnect_window, state, publisher_id IS NOT NULL AS connected, publisher_node, broadcast_id, \
     broadcast_started_at, disconnected_at, ingest::text AS ingest, last_refusal::text AS last_refusal, \
     metadata::text AS metadata, created_at";

fn parse_json(row: &Row, column: &str) -> Option<serde_json::Value> {
    row.get::<_, Option<&str>>(column)
        .and_then(|text| serde_json::from_str(text).ok())
}

impl LiveStream {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let stored =
            |what: &str, e: &dyn std::fmt::Display| DbError::Build(format!("stored {what}: {e}"));
        let playback_id: String = row.get("playback_id");
        let policy: String = row.get("playback_policy");
        let state: String = row.get("state");
        let latency: String = row.get("latency_mode");
        Ok(Self {
            id: LiveStreamId::from(row.get::<_, uuid::Uuid>("id")),
            environment_id: EnvironmentId::from(row.get::<_, uuid::Uuid>("environment_id")),
            playback_id: playback_id.parse().map_err(|e| stored("playback id", &e))?,
            playback_policy: policy.parse().map_err(|e| stored("playback policy", &e))?,
            latency_mode: if latency == "low" {
                LatencyMode::Low
            } else {
                LatencyMode::Standard
            },
            recording: row.get("recording"),
            reconnect_window: row.get("reconnect_window"),
            state: state.parse().map_err(|e| stored("live stream state", &e))?,
            connected: row.get("connected"),
            publisher_node: row.get("publisher_node"),
            broadcast_id: row.get("broadcast_id"),
            broadcast_started_at: row.get("broadcast_started_at"),
            disconnected_at: row.get("disconnected_at"),
            ingest: parse_json(row, "ingest"),
            last_refusal: parse_json(row, "last_refusal"),
            metadata: parse_json(row, "metadata").unwrap_or(serde_json::Value::Null),
            created_at: row.get("created_at"),
        })
    }
}

/// A new live stream's options.
#[derive(Debug, Clone)]
pub struct NewLiveStream<'a> {
    /// Who may play it.
    pub policy: PlaybackPolicy,
    /// Latency mode.
    pub latency_mode: LatencyMode,
    /// Record broadcasts as VOD assets.
    pub recording: bool,
    /// Seconds a dropped publisher has to come back.
    pub reconnect_window: i32,
    /// Creator's metadata (a JSON object).
    pub metadata: &'a serde_json::Value,
}

/// Creates a stream in `environment`; returns it and its stream key (shown
/// now and on reset only).
pub async fn create(
    client: &impl GenericClient,
    environment: EnvironmentId,
    new: &NewLiveStream<'_>,
) -> Result<(LiveStream, String), DbError> {
    let key = new_stream_key();
    let row = client
        .query_one(
            &format!(
                "INSERT INTO live_streams (id, environment_id, stream_key_hash, playback_id,
                     playback_policy, latency_mode, recording, reconnect_window, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb) RETURNING {COLUMNS}"
            ),
            &[
                &LiveStreamId::new().as_uuid(),
                &environment.as_uuid(),
                &key_hash(&key).as_slice(),
                &PlaybackId::new().as_str(),
                &new.policy.as_str(),
                &new.latency_mode.as_str(),
                &new.recording,
                &new.reconnect_window,
                &new.metadata.to_string(),
            ],
        )
        .await?;
    Ok((LiveStream::from_row(&row)?, key))
}

/// One stream of `environment`; another environment's, or a deleted one,
/// is not found.
pub async fn get_in(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: LiveStreamId,
) -> Result<Option<LiveStream>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM live_streams
                 WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL"
            ),
            &[&id.as_uuid(), &environment.as_uuid()],
        )
        .await?;
    row.as_ref().map(LiveStream::from_row).transpose()
}

/// One stream, whatever its environment (operators, the publisher).
pub async fn get(
    client: &impl GenericClient,
    id: LiveStreamId,
) -> Result<Option<LiveStream>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM live_streams WHERE id = $1 AND deleted_at IS NULL"),
            &[&id.as_uuid()],
        )
        .await?;
    row.as_ref().map(LiveStream::from_row).transpose()
}

/// One stream, deleted or not (the end of a broadcast of a deleted stream
/// is still recorded).
pub async fn get_any(
    client: &impl GenericClient,
    id: LiveStreamId,
) -> Result<Option<LiveStream>, DbError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM live_streams WHERE id = $1"),
            &[&id.as_uuid()],
        )
        .await?;
    row.as_ref().map(LiveStream::from_row).transpose()
}

/// A page of `environment`'s streams (all environments when `None`),
/// newest first, after the `(created_at, id)` of the previous page's last
/// one; at most `limit`.
pub async fn list(
    client: &impl GenericClient,
    environment: Option<EnvironmentId>,
    after: Option<(DateTime<Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<LiveStream>, DbError> {
    let (after_time, after_id) = after.unzip();
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM live_streams
                 WHERE ($1::uuid IS NULL OR environment_id = $1) AND deleted_at IS NULL
                   AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ),
            &[
                &environment.map(|e| e.as_uuid()),
                &after_time,
                &after_id,
                &limit,
            ],
        )
        .await?;
    rows.iter().map(LiveStream::from_row).collect()
}

/// The assets recorded from a stream, newest first.
pub async fn recorded_assets(
    client: &impl GenericClient,
    id: LiveStreamId,
) -> Result<Vec<uuid::Uuid>, DbError> {
    let rows = client
        .query(
            "SELECT id FROM assets WHERE live_stream_id = $1 AND deleted_at IS NULL
             ORDER BY created_at DESC, id DESC LIMIT 100",
            &[&id.as_uuid()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Gives stream `id` of `environment` a new key (the old one stops working
/// at once; a publisher already streaming keeps going). `None`: not found.
pub async fn reset_key(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: LiveStreamId,
) -> Result<Option<String>, DbError> {
    let key = new_stream_key();
    let updated = client
        .execute(
            "UPDATE live_streams SET stream_key_hash = $3, updated_at = now()
             WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL",
            &[
                &id.as_uuid(),
                &environment.as_uuid(),
                &key_hash(&key).as_slice(),
            ],
        )
        .await?;
    Ok((updated == 1).then_some(key))
}

/// The stream a key publishes to (not deleted; any state).
pub async fn find_by_key(
    client: &impl GenericClient,
    key: &str,
) -> Result<Option<LiveStream>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM live_streams WHERE stream_key_hash = $1 AND deleted_at IS NULL"
            ),
            &[&key_hash(key).as_slice()],
        )
        .await?;
    row.as_ref().map(LiveStream::from_row).transpose()
}

/// Records why a publish on stream `id` was refused (shown on the stream).
pub async fn record_refusal(
    client: &impl GenericClient,
    id: LiveStreamId,
    code: &str,
    message: &str,
) -> Result<(), DbError> {
    let refusal = serde_json::json!({"code": code, "message": message, "at": Utc::now()});
    client
        .execute(
            "UPDATE live_streams SET last_refusal = $2::text::jsonb, updated_at = now() WHERE id = $1",
            &[&id.as_uuid(), &refusal.to_string()],
        )
        .await?;
    Ok(())
}

/// A granted publish: where its segments go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The stream.
    pub stream: LiveStreamId,
    /// The broadcast this session belongs to.
    pub broadcast: uuid::Uuid,
    /// When the broadcast started.
    pub broadcast_started_at: DateTime<Utc>,
    /// The publish session (unique on the stream).
    pub session: u32,
    /// The first segment number this session may use.
    pub first_sequence: u64,
    /// The session continues a broadcast after a reconnect (or a replica's
    /// death): its first segment is a discontinuity.
    pub continues: bool,
    /// Whether the broadcast is recorded.
    pub recording: bool,
    /// Low latency: segments are cut into parts, served from the relay.
    pub low_latency: bool,
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefused {
    /// Deleted since the key was looked up.
    NotFound,
    /// The stream is disabled.
    Disabled,
    /// Another publisher holds it (its replica still renews the lease).
    Busy,
}

/// Takes stream `id` for publisher `publisher` on replica `node` for
/// `lease`. A stream within its reconnect window (or whose holder's lease
/// ran out without a release: its replica died) continues its broadcast;
/// otherwise a broadcast still waiting to be ended is ended first and a
/// new one starts. Returns the ended broadcast's events with the grant.
pub async fn claim_publisher(
    pool: &Pool,
    id: LiveStreamId,
    publisher: uuid::Uuid,
    node: &str,
    relay: Option<&str>,
    lease: Duration,
    max_attempts: i32,
) -> Result<Result<Publish, PublishRefused>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT state, publisher_id IS NOT NULL AND publisher_until >= now() AS held,
                 broadcast_id,
                 broadcast_id IS NOT NULL AND state = 'active'
                   AND COALESCE(disconnected_at, publisher_until, now())
                       + make_interval(secs => reconnect_window) >= now() AS within_window
             FROM live_streams WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            &[&id.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(PublishRefused::NotFound));
    };
    let state: String = row.get("state");
    if state == LiveStreamState::Disabled.as_str() {
        return Ok(Err(PublishRefused::Disabled));
    }
    if row.get::<_, bool>("held") {
        return Ok(Err(PublishRefused::Busy));
    }
    let old_broadcast: Option<uuid::Uuid> = row.get("broadcast_id");
    let continues = row.get::<_, bool>("within_window");
    if let (Some(old), false) = (old_broadcast, continues) {
        end_broadcast_in(&tx, id, old, max_attempts).await?;
    }
    let row = tx
        .query_one(
            "UPDATE live_streams SET state = 'active', publisher_id = $2, publisher_node = $3,
                 publisher_until = now() + make_interval(secs => $4),
                 broadcast_id = CASE WHEN $5 THEN broadcast_id ELSE gen_random_uuid() END,
                 broadcast_started_at = CASE WHEN $5 THEN broadcast_started_at ELSE now() END,
                 disconnected_at = NULL, ingest = NULL, next_session = next_session + 1,
                 publisher_relay = $6, updated_at = now()
             WHERE id = $1
             RETURNING broadcast_id, broadcast_started_at, next_session - 1 AS session,
                 next_sequence, recording, latency_mode",
            &[
                &id.as_uuid(),
                &publisher,
                &node,
                &lease.as_secs_f64(),
                &continues,
                &relay,
            ],
        )
        .await?;
    let publish = Publish {
        stream: id,
        broadcast: row.get("broadcast_id"),
        broadcast_started_at: row.get("broadcast_started_at"),
        session: u32::try_from(row.get::<_, i32>("session")).unwrap_or(1),
        first_sequence: u64::try_from(row.get::<_, i64>("next_sequence")).unwrap_or(1),
        continues,
        recording: row.get("recording"),
        low_latency: row.get::<_, String>("latency_mode") == LatencyMode::Low.as_str(),
    };
    if !continues {
        emit(&tx, "live_stream.active", id).await?;
    }
    tx.commit().await?;
    Ok(Ok(publish))
}

/// Renews publisher `publisher`'s lease on stream `id` and records what it
/// sends. `false`: the stream was disabled, deleted or taken over; the
/// publisher must stop.
pub async fn renew_publisher(
    client: &impl GenericClient,
    id: LiveStreamId,
    publisher: uuid::Uuid,
    lease: Duration,
    ingest: &serde_json::Value,
) -> Result<bool, DbError> {
    let updated = client
        .execute(
            "UPDATE live_streams SET publisher_until = now() + make_interval(secs => $3),
                 ingest = $4::text::jsonb, updated_at = now()
             WHERE id = $1 AND publisher_id = $2 AND state = 'active' AND deleted_at IS NULL",
            &[
                &id.as_uuid(),
                &publisher,
                &lease.as_secs_f64(),
                &ingest.to_string(),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Publisher `publisher` left stream `id`: the reconnect window starts (or,
/// with none, the broadcast ends at once).
pub async fn release_publisher(
    pool: &Pool,
    id: LiveStreamId,
    publisher: uuid::Uuid,
    max_attempts: i32,
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE live_streams SET publisher_id = NULL, publisher_node = NULL,
                 publisher_relay = NULL, publisher_until = NULL, disconnected_at = now(),
                 updated_at = now()
             WHERE id = $1 AND publisher_id = $2
             RETURNING reconnect_window, broadcast_id",
            &[&id.as_uuid(), &publisher],
        )
        .await?;
    if let Some(row) = row {
        emit(&tx, "live_stream.disconnected", id).await?;
        let window: i32 = row.get(0);
        let broadcast: Option<uuid::Uuid> = row.get(1);
        if let (0, Some(broadcast)) = (window, broadcast) {
            end_broadcast_in(&tx, id, broadcast, max_attempts).await?;
        }
    }
    tx.commit().await.map_err(DbError::from)
}

/// Ends broadcast `broadcast` of stream `id` inside the caller's
/// transaction: the stream is `idle` (unless disabled) with no broadcast,
/// and a `finish_broadcast` job records or removes its segments.
async fn end_broadcast_in(
    tx: &impl GenericClient,
    id: LiveStreamId,
    broadcast: uuid::Uuid,
    max_attempts: i32,
) -> Result<(), DbError> {
    let row = tx
        .query_opt(
            "UPDATE live_streams SET
                 state = CASE WHEN state = 'disabled' THEN 'disabled' ELSE 'idle' END,
                 publisher_id = NULL, publisher_node = NULL, publisher_relay = NULL, publisher_until = NULL,
                 broadcast_id = NULL, broadcast_started_at = NULL, disconnected_at = NULL,
                 ingest = NULL, updated_at = now()
             WHERE id = $1 AND broadcast_id = $2
             RETURNING recording, environment_id",
            &[&id.as_uuid(), &broadcast],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    tx.execute(
        "UPDATE live_sessions SET ended_at = now() WHERE live_stream_id = $1 AND broadcast_id = $2 AND ended_at IS NULL",
        &[&id.as_uuid(), &broadcast],
    )
    .await?;
    let recording: bool = row.get(0);
    let payload = serde_json::json!({
        "live_stream_id": id,
        "broadcast_id": broadcast,
        "record": recording,
    });
    queue::enqueue(
        tx,
        &NewJob::new(cascade_schemas::job_kind::FINISH_BROADCAST, payload)
            .idempotency_key(format!("finish_broadcast:{broadcast}"))
            .max_attempts(max_attempts),
        max_attempts,
    )
    .await
    .map_err(queue::QueueError::into_db)?;
    emit(tx, "live_stream.idle", id).await
}

/// Ends the broadcasts whose reconnect window ran out, and marks publishers
/// whose replica stopped renewing as gone. Returns how many broadcasts ended.
pub async fn end_idle_broadcasts(pool: &Pool, max_attempts: i32) -> Result<usize, DbError> {
    let client = pool.get().await?;
    // A replica that died never released its publisher: its lease ran out.
    let orphaned = client
        .query(
            "UPDATE live_streams SET publisher_id = NULL, publisher_node = NULL,
                 publisher_relay = NULL, disconnected_at = publisher_until,
                 publisher_until = NULL, updated_at = now()
             WHERE state = 'active' AND publisher_id IS NOT NULL AND publisher_until < now()
             RETURNING id",
            &[],
        )
        .await?;
    for row in &orphaned {
        emit(
            &client,
            "live_stream.disconnected",
            LiveStreamId::from(row.get::<_, uuid::Uuid>(0)),
        )
        .await?;
    }
    let due = client
        .query(
            "SELECT id, broadcast_id FROM live_streams
             WHERE state IN ('active', 'disabled') AND publisher_id IS NULL AND broadcast_id IS NOT NULL
               AND (state = 'disabled'
                    OR disconnected_at + make_interval(secs => reconnect_window) < now())",
            &[],
        )
        .await?;
    drop(client);
    let mut ended = 0;
    for row in due {
        let id = LiveStreamId::from(row.get::<_, uuid::Uuid>(0));
        let broadcast: uuid::Uuid = row.get(1);
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        // Locked and checked again: a publisher may have come back.
        let still_due = tx
            .query_opt(
                "SELECT 1 FROM live_streams WHERE id = $1 AND broadcast_id = $2 AND publisher_id IS NULL
                   AND (state = 'disabled'
                        OR disconnected_at + make_interval(secs => reconnect_window) < now())
                 FOR UPDATE",
                &[&id.as_uuid(), &broadcast],
            )
            .await?
            .is_some();
        if still_due {
            end_broadcast_in(&tx, id, broadcast, max_attempts).await?;
            ended += 1;
        }
        tx.commit().await?;
    }
    Ok(ended)
}

/// Disables or enables stream `id` of `environment`. Disabling drops the
/// publisher (its next renewal fails) and ends the broadcast. `None`: not
/// found.
pub async fn set_enabled(
    pool: &Pool,
    environment: EnvironmentId,
    id: LiveStreamId,
    enabled: bool,
    max_attempts: i32,
) -> Result<Option<LiveStream>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT broadcast_id FROM live_streams
             WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL FOR UPDATE",
            &[&id.as_uuid(), &environment.as_uuid()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let broadcast: Option<uuid::Uuid> = row.get(0);
    if enabled {
        tx.execute(
            "UPDATE live_streams SET state = 'idle', updated_at = now() WHERE id = $1 AND state = 'disabled'",
            &[&id.as_uuid()],
        )
        .await?;
    } else {
        tx.execute(
            "UPDATE live_streams SET state = 'disabled', updated_at = now() WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await?;
        if let Some(broadcast) = broadcast {
            end_broadcast_in(&tx, id, broadcast, max_attempts).await?;
        }
    }
    let stream = get(&tx, id).await?;
    tx.commit().await?;
    Ok(stream)
}

/// Deletes stream `id` of `environment`: tombstoned (its key and playback
/// id stop working), a running broadcast ended (its recording still made).
/// `false`: not found.
pub async fn delete(
    pool: &Pool,
    environment: EnvironmentId,
    id: LiveStreamId,
    max_attempts: i32,
) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT broadcast_id FROM live_streams
             WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL FOR UPDATE",
            &[&id.as_uuid(), &environment.as_uuid()],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    if let Some(broadcast) = row.get::<_, Option<uuid::Uuid>>(0) {
        end_broadcast_in(&tx, id, broadcast, max_attempts).await?;
    }
    tx.execute(
        "UPDATE live_streams SET deleted_at = now(), state = 'disabled', updated_at = now() WHERE id = $1",
        &[&id.as_uuid()],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A rendition of a publish session, as the manifests describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRendition {
    /// Directory name.
    pub name: String,
    /// `video` or `audio`.
    pub kind: String,
    /// RFC 6381 codecs string.
    pub codecs: String,
    /// Declared peak bitrate, bit/s.
    pub bandwidth: u64,
    /// Video width.
    pub width: Option<u32>,
    /// Video height.
    pub height: Option<u32>,
    /// Video frame rate as `num/den`.
    pub frame_rate: Option<String>,
    /// Audio sample rate.
    pub sample_rate: Option<u32>,
    /// Audio channels.
    pub channels: Option<u16>,
    /// Media timescale.
    pub timescale: u32,
}

/// A publish session: its renditions and where it sits in the broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session number.
    pub session: u32,
    /// Its renditions.
    pub renditions: Vec<SessionRendition>,
    /// Wall clock of its first frame.
    pub started_at: DateTime<Utc>,
    /// Media time (seconds) of its first frame.
    pub media_offset: f64,
}

/// Records the renditions of `publish`'s session, which started at
/// `started_at` (wall clock) and `media_offset` (media time).
pub async fn record_session(
    client: &impl GenericClient,
    publish: &Publish,
    renditions: &[SessionRendition],
    started_at: DateTime<Utc>,
    media_offset: f64,
) -> Result<(), DbError> {
    let renditions =
        serde_json::to_string(renditions).map_err(|e| DbError::Build(e.to_string()))?;
    client
        .execute(
            "INSERT INTO live_sessions (live_stream_id, session, broadcast_id, renditions, started_at, media_offset)
             VALUES ($1, $2, $3, $4::text::jsonb, $5, $6)
             ON CONFLICT (live_stream_id, session) DO UPDATE SET renditions = EXCLUDED.renditions",
            &[
                &publish.stream.as_uuid(),
                &(publish.session as i32),
                &publish.broadcast,
                &renditions,
                &started_at,
                &media_offset,
            ],
        )
        .await?;
    Ok(())
}

/// The sessions of a broadcast, oldest first.
pub async fn broadcast_sessions(
    client: &impl GenericClient,
    broadcast: uuid::Uuid,
) -> Result<Vec<SessionRow>, DbError> {
    let rows = client
        .query(
            "SELECT session, renditions::text, started_at, media_offset FROM live_sessions
             WHERE broadcast_id = $1 ORDER BY session",
            &[&broadcast],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(SessionRow {
                session: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
                renditions: serde_json::from_str(row.get::<_, &str>(1))
                    .map_err(|e| DbError::Build(format!("stored session renditions: {e}")))?,
                started_at: row.get(2),
                media_offset: row.get(3),
            })
        })
        .collect()
}

/// Where the next session of `broadcast` starts on the media timeline:
/// the end of its latest segment (seconds), 0 for a new broadcast.
pub async fn media_end(client: &impl GenericClient, broadcast: uuid::Uuid) -> Result<f64, DbError> {
    let row = client
        .query_one(
            "SELECT COALESCE(max((start_ticks + duration_ticks)::float8 / timescale), 0)
             FROM live_segments WHERE broadcast_id = $1",
            &[&broadcast],
        )
        .await?;
    Ok(row.get(0))
}

/// One segment of one rendition of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    /// Rendition name.
    pub rendition: String,
    /// Segment number (shared by the renditions' aligned segments).
    pub sequence: u64,
    /// Publish session whose init segment it needs.
    pub session: u32,
    /// Media start time, in `timescale` ticks.
    pub start: u64,
    /// Duration, in `timescale` ticks.
    pub duration: u64,
    /// Ticks per second.
    pub timescale: u32,
    /// Bytes.
    pub size: u64,
    /// Wall clock at ingest of its first frame.
    pub program_time: DateTime<Utc>,
    /// The first segment after a reconnect.
    pub discontinuity: bool,
    /// A segment the rendition sat out (its rung dropped to keep up): no
    /// object, listed with `EXT-X-GAP`.
    pub gap: bool,
}

fn segment_from_row(row: &Row) -> SegmentRow {
    SegmentRow {
        rendition: row.get("rendition"),
        sequence: u64::try_from(row.get::<_, i64>("sequence")).unwrap_or(0),
        session: u32::try_from(row.get::<_, i32>("session")).unwrap_or(0),
        start: u64::try_from(row.get::<_, i64>("start_ticks")).unwrap_or(0),
        duration: u64::try_from(row.get::<_, i64>("duration_ticks")).unwrap_or(1),
        timescale: u32::try_from(row.get::<_, i32>("timescale")).unwrap_or(1),
        size: u64::try_from(row.get::<_, i64>("size")).unwrap_or(0),
        program_time: row.get("program_time"),
        discontinuity: row.get("discontinuity"),
        gap: row.get("gap"),
    }
}

const SEGMENT_COLUMNS: &str =
    "rendition, sequence, session, start_ticks, duration_ticks, timescale, size, program_time, discontinuity, gap";

/// Records segments of `publish` and moves the stream's segment counter
/// past them, in one statement. `false`: the publisher no longer holds the
/// stream (the rows are not written).
pub async fn record_segments(
    client: &impl GenericClient,
    publish: &Publish,
    publisher: uuid::Uuid,
    segments: &[SegmentRow],
) -> Result<bool, DbError> {
    if segments.is_empty() {
        return Ok(true);
    }
    let column = |f: &dyn Fn(&SegmentRow) -> i64| segments.iter().map(f).collect::<Vec<i64>>();
    let renditions: Vec<&str> = segments.iter().map(|s| s.rendition.as_str()).collect();
    let sequences = column(&|s| s.sequence as i64);
    let starts = column(&|s| s.start as i64);
    let durations = column(&|s| s.duration as i64);
    let sizes = column(&|s| s.size as i64);
    let timescales: Vec<i32> = segments.iter().map(|s| s.timescale as i32).collect();
    let times: Vec<DateTime<Utc>> = segments.iter().map(|s| s.program_time).collect();
    let discontinuities: Vec<bool> = segments.iter().map(|s| s.discontinuity).collect();
    let gaps: Vec<bool> = segments.iter().map(|s| s.gap).collect();
    let last = sequences.iter().copied().max().unwrap_or(0);
    let row = client
        .query_opt(
            "WITH held AS (
                 UPDATE live_streams SET next_sequence = GREATEST(next_sequence, $4::bigint + 1)
                 WHERE id = $1 AND publisher_id = $2 AND broadcast_id = $3
                 RETURNING id
             ), inserted AS (
                 INSERT INTO live_segments (live_stream_id, broadcast_id, session, rendition, sequence,
                     start_ticks, duration_ticks, timescale, size, program_time, discontinuity, gap)
                 SELECT held.id, $3::uuid, $5::int, r, q, st, d, ts, sz, pt, dc, g
                 FROM held, unnest($6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::int[],
                                   $11::bigint[], $12::timestamptz[], $13::bool[], $14::bool[])
                      AS u(r, q, st, d, ts, sz, pt, dc, g)
                 ON CONFLICT (live_stream_id, rendition, sequence) DO NOTHING
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM held) AS held",
            &[
                &publish.stream.as_uuid(),
                &publisher,
                &publish.broadcast,
                &last,
                &(publish.session as i32),
                &renditions,
                &sequences,
                &starts,
                &durations,
                &timescales,
                &sizes,
                &times,
                &discontinuities,
                &gaps,
            ],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, i64>(0) == 1))
}

/// The newest `count` segments of each rendition of `broadcast`, oldest
/// first per rendition, and for each rendition how many discontinuities
/// lie before its first listed segment (`EXT-X-DISCONTINUITY-SEQUENCE`).
pub async fn window(
    client: &impl GenericClient,
    broadcast: uuid::Uuid,
    count: i64,
) -> Result<Vec<(SegmentRow, i64)>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {SEGMENT_COLUMNS}, earlier_discontinuities FROM (
                     SELECT *, row_number() OVER (PARTITION BY rendition ORDER BY sequence DESC) AS newest,
                         count(*) FILTER (WHERE discontinuity)
                             OVER (PARTITION BY rendition ORDER BY sequence
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_discontinuities
                     FROM live_segments WHERE broadcast_id = $1
                 ) s WHERE newest <= $2 ORDER BY rendition, sequence"
            ),
            &[&broadcast, &count],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                segment_from_row(row),
                row.get::<_, i64>("earlier_discontinuities"),
            )
        })
        .collect())
}

/// Every segment of `broadcast`, by rendition then sequence.
pub async fn broadcast_segments(
    client: &impl GenericClient,
    broadcast: uuid::Uuid,
) -> Result<Vec<SegmentRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {SEGMENT_COLUMNS} FROM live_segments WHERE broadcast_id = $1 ORDER BY rendition, sequence"
            ),
            &[&broadcast],
        )
        .await?;
    Ok(rows.iter().map(segment_from_row).collect())
}

/// Segments of `broadcast` older than the newest `keep` of their rendition
/// (the window): the ones a stream without recording may delete.
pub async fn segments_behind_window(
    client: &impl GenericClient,
    broadcast: uuid::Uuid,
    keep: i64,
) -> Result<Vec<SegmentRow>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {SEGMENT_COLUMNS} FROM (
                     SELECT *, row_number() OVER (PARTITION BY rendition ORDER BY sequence DESC) AS newest
                     FROM live_segments WHERE broadcast_id = $1
                 ) s WHERE newest > $2"
            ),
            &[&broadcast, &keep],
        )
        .await?;
    Ok(rows.iter().map(segment_from_row).collect())
}

/// Forgets segment rows (their objects were removed).
pub async fn forget_segments(
    client: &impl GenericClient,
    stream: LiveStreamId,
    segments: &[SegmentRow],
) -> Result<(), DbError> {
    let renditions: Vec<&str> = segments.iter().map(|s| s.rendition.as_str()).collect();
    let sequences: Vec<i64> = segments.iter().map(|s| s.sequence as i64).collect();
    client
        .execute(
            "DELETE FROM live_segments s USING unnest($2::text[], $3::bigint[]) AS u(r, q)
             WHERE s.live_stream_id = $1 AND s.rendition = u.r AND s.sequence = u.q",
            &[&stream.as_uuid(), &renditions, &sequences],
        )
        .await?;
    Ok(())
}

/// Forgets a finished broadcast's segment and session rows.
pub async fn forget_broadcast(
    client: &impl GenericClient,
    broadcast: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "DELETE FROM live_segments WHERE broadcast_id = $1",
            &[&broadcast],
        )
        .await?;
    client
        .execute(
            "DELETE FROM live_sessions WHERE broadcast_id = $1",
            &[&broadcast],
        )
        .await?;
    client
        .execute(
            "DELETE FROM live_ladder_changes WHERE broadcast_id = $1",
            &[&broadcast],
        )
        .await?;
    Ok(())
}

/// A change of a session's ladder: from `sequence` on, the renditions in
/// `absent` publish gaps (a rung dropped to keep up), or fewer do.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderChange {
    /// Session number.
    pub session: u32,
    /// First segment number the change applies to.
    pub sequence: u64,
    /// Media time (seconds) of that segment's start.
    pub media_time: f64,
    /// Renditions without segments from then on.
    pub absent: Vec<String>,
}

/// Records a ladder change of `publish`'s broadcast (idempotent).
pub async fn record_ladder_change(
    client: &impl GenericClient,
    publish: &Publish,
    change: &LadderChange,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO live_ladder_changes (live_stream_id, broadcast_id, session, sequence, media_time, absent)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &publish.stream.as_uuid(),
                &publish.broadcast,
                &(change.session as i32),
                &(change.sequence as i64),
                &change.media_time,
                &change.absent,
            ],
        )
        .await?;
    Ok(())
}

/// The ladder changes of `broadcast`, by session then sequence.
pub async fn ladder_changes(
    client: &impl GenericClient,
    broadcast: uuid::Uuid,
) -> Result<Vec<LadderChange>, DbError> {
    let rows = client
        .query(
            "SELECT session, sequence, media_time, absent FROM live_ladder_changes
             WHERE broadcast_id = $1 ORDER BY session, sequence",
            &[&broadcast],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| LadderChange {
            session: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
            sequence: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            media_time: row.get(2),
            absent: row.get(3),
        })
        .collect())
}

/// Records a live stream event (`live_stream.active`, `.idle`,
/// `.disconnected`, `.recording.ready`) as a webhook job in the caller's
/// transaction, with a snapshot of the stream.
pub async fn emit(
    client: &impl GenericClient,
    event_type: &str,
    id: LiveStreamId,
) -> Result<(), DbError> {
    emit_with(client, event_type, id, serde_json::Value::Null).await
}

/// [`emit`] with extra fields merged into the event's data.
pub async fn emit_with(
    client: &impl GenericClient,
    event_type: &str,
    id: LiveStreamId,
    extra: serde_json::Value,
) -> Result<(), DbError> {
    let row = client
        .query_opt(
            "SELECT jsonb_build_object(
                 'live_stream_id', id, 'environment_id', environment_id, 'playback_id', playback_id,
                 'state', state, 'broadcast_id', broadcast_id, 'ingest', ingest)::text
             FROM live_streams WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let mut data: serde_json::Value =
        serde_json::from_str(row.get::<_, &str>(0)).unwrap_or(serde_json::Value::Null);
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    crate::assets::enqueue_event(client, event_type, data).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_well_formed_and_distinct() {
        let a = new_stream_key();
        assert!(key_well_formed(&a), "{a}");
        assert_ne!(a, new_stream_key());
        assert!(!key_well_formed("lsk_short"));
        assert!(!key_well_formed(&a.replace(STREAM_KEY_PREFIX, "csk_")));
        assert!(!key_well_formed(&format!("{a}?x=1")));
    }
}
