//! Direct uploads: one-time upload URLs an API key holder hands to a
//! creator's or viewer's browser (Mux's direct uploads, Cloudflare Stream's
//! direct creator uploads). The URL carries a random secret ([`new_secret`]);
//! only its SHA-256 is stored.
//!
//! A direct upload owns its asset's source through the asset's source claim
//! (see [`crate::assets::claim_source`]), whoever writes it at the moment:
//!
//! | state | claim held by | hold |
//! | --- | --- | --- |
//! | `waiting` | the direct upload's id | until `expires_at` |
//! | `uploading`, tus | the direct upload's id, which is also the tus upload's | the tus upload's expiry (tus renews it) |
//! | `uploading`, simple | the PUT's lease id | at least until `expires_at`, renewed while the body streams |
//!
//! Starting an upload hands the claim over from its current holder under
//! a row lock, so the one upload a URL allows is enforced where it is
//! stored, and a simple upload whose lease lapsed (its replica died, or it
//! stalled) is fenced: the claim moved on, so it can no longer move the
//! asset on ([`crate::assets::start_processing`] names the claim). When the
//! asset takes its source, `source_arrived` marks the direct upload
//! `complete` in the same transaction.
//!
//! States are stored, but read through [`EFFECTIVE_STATE`]: a URL past its
//! expiry reads `expired` before the sweeper ([`expire`]) stores it, and a
//! simple upload whose lease lapsed reads `waiting` (the URL may be tried
//! again).

use std::time::Duration;

use cascade_schemas::{
    AssetId, DirectUploadId, DirectUploadProtocol, DirectUploadState, EnvironmentId,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use crate::assets::{self, SourceClaim};
use crate::db::DbError;

/// Characters of a secret: base64url of 32 random bytes.
pub const SECRET_LEN: usize = 43;

/// A fresh secret for a direct upload URL (256 random bits, base64url).
pub fn new_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` has the shape of one [`new_secret`] makes (checked
/// before any lookup, so garbage costs nothing).
pub fn well_formed_secret(secret: &str) -> bool {
    secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The state a reader sees (`d` is the row): a stored state the clock or
/// a lapsed lease has overtaken reads as what it has become.
pub const EFFECTIVE_STATE: &str = "CASE
    WHEN d.state = 'waiting' AND d.expires_at <= now() THEN 'expired'
    WHEN d.state = 'uploading' AND d.protocol = 'simple' AND d.leased_until < now()
        THEN CASE WHEN d.expires_at <= now() THEN 'expired' ELSE 'waiting' END
    WHEN d.state = 'uploading' AND d.protocol = 'tus'
         AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.id = d.id) THEN 'expired'
    ELSE d.state END";

/// A direct upload as stored (its state as read through [`EFFECTIVE_STATE`]).
#[derive(Debug, Clone)]
pub struct DirectUpload {
    /// Id (also the id of the tus upload made through it).
    pub id: DirectUploadId,
    /// The environment it belongs to (and its asset).
    pub environment_id: EnvironmentId,
    /// The asset it fills.
    pub asset_id: AssetId,
    /// SHA-256 of the URL's secret.
    pub secret_hash: [u8; 32],
    /// The browser origin allowed to use the URL, or `*`.
    pub cors_origin: String,
    /// Largest upload accepted, in bytes.
    pub max_size: u64,
    /// Where it is.
    pub state: DirectUploadState,
    /// How the source is sent, once `uploading` or `complete`.
    pub protocol: Option<DirectUploadProtocol>,
    /// Until when the URL can start an upload.
    pub expires_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

fn columns() -> String {
    format!(
        "d.id, d.environment_id, d.asset_id, d.secret_hash, d.cors_origin, d.max_size, d.protocol,
         d.expires_at, d.created_at, ({EFFECTIVE_STATE}) AS state"
    )
}

impl DirectUpload {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        let state: String = row.get("state");
        let state: DirectUploadState = state
            .parse()
            .map_err(|e| DbError::Build(format!("stored direct upload state: {e}")))?;
        let protocol: Option<String> = row.get("protocol");
        let protocol = match protocol {
            // A lapsed simple upload reads `waiting`: nothing is being sent.
            Some(_) if state == DirectUploadState::Waiting => None,
            Some(text) => Some(
                text.parse::<DirectUploadProtocol>()
                    .map_err(|e| DbError::Build(format!("stored direct upload protocol: {e}")))?,
            ),
            None => None,
        };
        let hash: Vec<u8> = row.get("secret_hash");
        Ok(Self {
            id: DirectUploadId::from(row.get::<_, uuid::Uuid>("id")),
            environment_id: EnvironmentId::from(row.get::<_, uuid::Uuid>("environment_id")),
            asset_id: AssetId::from(row.get::<_, uuid::Uuid>("asset_id")),
            secret_hash: hash
                .try_into()
                .map_err(|_| DbError::Build("stored secret hash is not 32 bytes".to_owned()))?,
            cors_origin: row.get("cors_origin"),
            max_size: u64::try_from(row.get::<_, i64>("max_size"))
                .map_err(|_| DbError::Build("stored max_size is negative".to_owned()))?,
            state,
            protocol,
            expires_at: row.get("expires_at"),
            created_at: row.get("created_at"),
        })
    }
}

/// A new direct upload.
#[derive(Debug, Clone)]
pub struct NewDirectUpload<'a> {
    /// Its id (the asset's source claim names it).
    pub id: DirectUploadId,
    /// The environment it belongs to.
    pub environment: EnvironmentId,
    /// Its asset, inserted in the same transaction with its source claimed
    /// by `id` for `expires_in`.
    pub asset: AssetId,
    /// [`hash_secret`] of the URL's secret.
    pub secret_hash: &'a [u8; 32],
    /// The browser origin allowed to use the URL, or `*`.
    pub cors_origin: &'a str,
    /// Largest upload accepted, in bytes.
    pub max_size: u64,
    /// How long the URL can start an upload.
    pub expires_in: Duration,
}

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// Inserts a `waiting` direct upload. Use the transaction that inserts its
/// asset with the source claimed by `new.id` for `new.expires_in`, so both
/// end at the same instant.
pub async fn insert(
    client: &impl GenericClient,
    new: &NewDirectUpload<'_>,
) -> Result<DirectUpload, DbError> {
    let max_size = i64::try_from(new.max_size)
        .map_err(|_| DbError::Build(format!("max_size {} is too large", new.max_size)))?;
    let row = client
        .query_one(
            &format!(
                "INSERT INTO direct_uploads AS d (id, environment_id, asset_id, secret_hash, cors_origin, max_size, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + $7::float8 * interval '1 millisecond')
                 RETURNING {}",
                columns()
            ),
            &[
                &new.id.as_uuid(),
                &new.environment.as_uuid(),
                &new.asset.as_uuid(),
                &new.secret_hash.as_slice(),
                &new.cors_origin,
                &max_size,
                &millis(new.expires_in),
            ],
        )
        .await?;
    DirectUpload::from_row(&row)
}

/// Direct upload `id`, whatever its environment (its URL's secret decides
/// who may use it).
pub async fn get(
    client: &impl GenericClient,
    id: DirectUploadId,
) -> Result<Option<DirectUpload>, DbError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {} FROM direct_uploads d WHERE d.id = $1",
            columns()
        ))
        .await?;
    let row = client.query_opt(&statement, &[&id.as_uuid()]).await?;
    row.as_ref().map(DirectUpload::from_row).transpose()
}

/// Direct upload `id` of `environment`; another environment's is not found.
pub async fn get_in(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: DirectUploadId,
) -> Result<Option<DirectUpload>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {} FROM direct_uploads d WHERE d.id = $1 AND d.environment_id = $2",
                columns()
            ),
            &[&id.as_uuid(), &environment.as_uuid()],
        )
        .await?;
    row.as_ref().map(DirectUpload::from_row).transpose()
}

/// Why a direct upload URL cannot start an upload now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefused {
    /// No such direct upload.
    NotFound,
    /// Expired or cancelled: the URL is dead.
    Closed(DirectUploadState),
    /// Its one upload was started (a tus upload exists) or is done.
    Used(DirectUploadState),
    /// A simple upload through the URL is streaming right now.
    InProgress,
}

/// A direct upload row locked for a transition.
struct Locked {
    id: DirectUploadId,
    asset: AssetId,
    /// Who holds the asset's source claim: the direct upload (its id) or a
    /// simple upload (its lease id).
    holder: uuid::Uuid,
    /// What a reader sees ([`EFFECTIVE_STATE`]).
    state: DirectUploadState,
    /// What is stored.
    stored: DirectUploadState,
    protocol: Option<DirectUploadProtocol>,
    /// Milliseconds until `expires_at` (negative once past).
    remaining_ms: f64,
}

/// Locks direct upload `id` (of `environment`, if given) in the caller's
/// transaction: its asset's row first, then its own, the order of every
/// transaction that changes both (an asset's deletion, its source's
/// arrival), so none deadlocks with another.
async fn lock(
    tx: &impl GenericClient,
    id: DirectUploadId,
    environment: Option<EnvironmentId>,
) -> Result<Option<Locked>, DbError> {
    let asset = tx
        .query_opt(
            "SELECT asset_id FROM direct_uploads WHERE id = $1 AND ($2::uuid IS NULL OR environment_id = $2)",
            &[&id.as_uuid(), &environment.map(|e| e.as_uuid())],
        )
        .await?;
    let Some(asset) = asset.map(|row| row.get::<_, uuid::Uuid>(0)) else {
        return Ok(None);
    };
    tx.query("SELECT 1 FROM assets WHERE id = $1 FOR UPDATE", &[&asset])
        .await?;
    let row = tx
        .query_one(
            "SELECT COALESCE(d.lease_id, d.id), d.state, d.protocol,
                    d.expires_at <= now(), d.leased_until IS NOT NULL AND d.leased_until >= now(),
                    NOT EXISTS (SELECT 1 FROM uploads u WHERE u.id = d.id),
                    EXTRACT(EPOCH FROM (d.expires_at - now()))::float8 * 1000
             FROM direct_uploads d WHERE d.id = $1
             FOR UPDATE OF d",
            &[&id.as_uuid()],
        )
        .await?;
    let stored: String = row.get(1);
    let stored: DirectUploadState = stored
        .parse()
        .map_err(|e| DbError::Build(format!("stored direct upload state: {e}")))?;
    let protocol = row
        .get::<_, Option<String>>(2)
        .map(|p| p.parse::<DirectUploadProtocol>())
        .transpose()
        .map_err(|e| DbError::Build(format!("stored direct upload protocol: {e}")))?;
    let (expired, leased, no_tus_upload): (bool, bool, bool) = (row.get(3), row.get(4), row.get(5));
    // As EFFECTIVE_STATE reads it.
    let state = match (stored, protocol) {
        (DirectUploadState::Waiting, _) if expired => DirectUploadState::Expired,
        (DirectUploadState::Uploading, Some(DirectUploadProtocol::Simple)) if !leased => {
            if expired {
                DirectUploadState::Expired
            } else {
                DirectUploadState::Waiting
            }
        }
        (DirectUploadState::Uploading, Some(DirectUploadProtocol::Tus)) if no_tus_upload => {
            DirectUploadState::Expired
        }
        (state, _) => state,
    };
    Ok(Some(Locked {
        id,
        asset: AssetId::from(asset),
        holder: row.get(0),
        state,
        stored,
        protocol,
        remaining_ms: row.get(6),
    }))
}

impl Locked {
    /// Whether an upload may start: the URL reads `waiting`.
    fn startable(&self) -> Result<(), StartRefused> {
        match self.state {
            DirectUploadState::Waiting => Ok(()),
            DirectUploadState::Uploading if self.protocol == Some(DirectUploadProtocol::Simple) => {
                Err(StartRefused::InProgress)
            }
            state if state.is_closed() => Err(StartRefused::Closed(state)),
            state => Err(StartRefused::Used(state)),
        }
    }

    /// The hold that keeps the claim at least until the URL expires.
    fn hold_at_least(&self, hold: Duration) -> Duration {
        let remaining = Duration::from_millis(self.remaining_ms.max(0.0) as u64);
        remaining.max(hold)
    }
}

/// Starts the URL's one tus upload, in the caller's transaction (the one
/// that inserts the upload row, whose id is `id`): `waiting -> uploading`,
/// and the asset's source claim handed to the upload (the same id) for
/// `hold` (the tus upload's expiry). Returns the asset; on a refusal the
/// caller must roll back.
pub async fn start_tus(
    tx: &impl GenericClient,
    id: DirectUploadId,
    hold: Duration,
) -> Result<Result<AssetId, StartRefused>, DbError> {
    let Some(locked) = lock(tx, id, None).await? else {
        return Ok(Err(StartRefused::NotFound));
    };
    if let Err(refused) = locked.startable() {
        return Ok(Err(refused));
    }
    tx.execute(
        "UPDATE direct_uploads SET state = 'uploading', protocol = 'tus', lease_id = NULL,
             leased_until = NULL, updated_at = now()
         WHERE id = $1",
        &[&id.as_uuid()],
    )
    .await?;
    let claim = SourceClaim {
        id: id.as_uuid(),
        hold,
    };
    if !assets::hand_over_source_claim(tx, locked.asset, locked.holder, claim).await? {
        // The asset was deleted meanwhile (deletion cancels its URLs).
        return Ok(Err(StartRefused::Closed(DirectUploadState::Cancelled)));
    }
    Ok(Ok(locked.asset))
}

/// Starts a simple upload through the URL, holding it with `lease` for
/// `hold` (renew with [`renew_simple`]): `waiting -> uploading`, and the
/// asset's source claim handed to `lease`, held at least until the URL
/// expires. Returns the asset.
pub async fn start_simple(
    pool: &Pool,
    id: DirectUploadId,
    lease: uuid::Uuid,
    hold: Duration,
) -> Result<Result<AssetId, StartRefused>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(locked) = lock(&tx, id, None).await? else {
        return Ok(Err(StartRefused::NotFound));
    };
    if let Err(refused) = locked.startable() {
        return Ok(Err(refused));
    }
    tx.execute(
        "UPDATE direct_uploads SET state = 'uploading', protocol = 'simple', lease_id = $2,
             leased_until = now() + $3::float8 * interval '1 millisecond', updated_at = now()
         WHERE id = $1",
        &[&id.as_uuid(), &lease, &millis(hold)],
    )
    .await?;
    let claim = SourceClaim {
        id: lease,
        hold: locked.hold_at_least(hold),
    };
    if !assets::hand_over_source_claim(&tx, locked.asset, locked.holder, claim).await? {
        return Ok(Err(StartRefused::Closed(DirectUploadState::Cancelled)));
    }
    tx.commit().await?;
    Ok(Ok(locked.asset))
}

/// Renews a simple upload's lease and its claim on the source; `false`
/// when it no longer holds them (it lapsed and another upload took over,
/// or the asset was deleted): the upload must stop.
pub async fn renew_simple(
    client: &impl GenericClient,
    id: DirectUploadId,
    lease: uuid::Uuid,
    hold: Duration,
) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "UPDATE direct_uploads SET leased_until = now() + $3::float8 * interval '1 millisecond'
             WHERE id = $1 AND lease_id = $2 AND state = 'uploading'
             RETURNING asset_id, EXTRACT(EPOCH FROM (expires_at - now()))::float8 * 1000",
            &[&id.as_uuid(), &lease, &millis(hold)],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let remaining = Duration::from_millis(row.get::<_, f64>(1).max(0.0) as u64);
    let claim = SourceClaim {
        id: lease,
        hold: remaining.max(hold),
    };
    assets::renew_source_claim(client, AssetId::from(row.get::<_, uuid::Uuid>(0)), claim).await
}

/// A simple upload failed before the asset took its source: the URL is
/// `waiting` again (until it expires) and holds the claim once more.
/// Nothing changes if the lease was lost meanwhile.
pub async fn abandon_simple(
    pool: &Pool,
    id: DirectUploadId,
    lease: uuid::Uuid,
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(locked) = lock(&tx, id, None).await? else {
        return Ok(());
    };
    if locked.stored != DirectUploadState::Uploading || locked.holder != lease {
        return Ok(());
    }
    tx.execute(
        "UPDATE direct_uploads SET state = 'waiting', protocol = NULL, lease_id = NULL,
             leased_until = NULL, updated_at = now()
         WHERE id = $1",
        &[&id.as_uuid()],
    )
    .await?;
    let claim = SourceClaim {
        id: id.as_uuid(),
        hold: locked.hold_at_least(Duration::ZERO),
    };
    assets::hand_over_source_claim(&tx, locked.asset, lease, claim).await?;
    tx.commit().await?;
    Ok(())
}

/// Why a direct upload could not be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefused {
    /// No such direct upload in that environment.
    NotFound,
    /// An upload through it started, or it is complete or expired.
    NotWaiting(DirectUploadState),
}

/// Cancels direct upload `id` of `environment` while it waits (cancelling
/// a cancelled one changes nothing): the URL is dead from then on and the
/// asset's source claim is released, so the asset waits for a source by
/// any other path.
pub async fn cancel(
    pool: &Pool,
    environment: EnvironmentId,
    id: DirectUploadId,
) -> Result<Result<DirectUpload, CancelRefused>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(locked) = lock(&tx, id, Some(environment)).await? else {
        return Ok(Err(CancelRefused::NotFound));
    };
    match locked.state {
        DirectUploadState::Waiting => {
            tx.execute(
                "UPDATE direct_uploads SET state = 'cancelled', lease_id = NULL, leased_until = NULL,
                     updated_at = now()
                 WHERE id = $1",
                &[&id.as_uuid()],
            )
            .await?;
            assets::release_source_claim(&tx, locked.asset, locked.holder).await?;
        }
        DirectUploadState::Cancelled => {}
        state => return Ok(Err(CancelRefused::NotWaiting(state))),
    }
    let cancelled = get_in(&tx, environment, id).await?;
    tx.commit().await?;
    Ok(cancelled.ok_or(CancelRefused::NotFound))
}

/// The URL's tus upload was terminated through the URL: `uploading ->
/// cancelled` (the termination released the asset's source claim).
pub async fn tus_terminated(
    client: &impl GenericClient,
    id: DirectUploadId,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE direct_uploads SET state = 'cancelled', updated_at = now()
             WHERE id = $1 AND state = 'uploading' AND protocol = 'tus'
               AND NOT EXISTS (SELECT 1 FROM uploads WHERE id = $1)",
            &[&id.as_uuid()],
        )
        .await?;
    Ok(())
}

/// The asset took the source the holder of `claim` wrote (it turned
/// `processing`, or `errored` when the file is not media): the direct
/// upload that wrote it, if any, is `complete`. Called in the transaction
/// of that transition ([`assets::start_processing`], [`assets::refuse_source`]).
pub(crate) async fn source_arrived(
    client: &impl GenericClient,
    asset: AssetId,
    claim: uuid::Uuid,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE direct_uploads SET state = 'complete', lease_id = NULL, leased_until = NULL,
                 updated_at = now()
             WHERE asset_id = $1 AND state = 'uploading' AND (id = $2 OR lease_id = $2)",
            &[&asset.as_uuid(), &claim],
        )
        .await?;
    Ok(())
}

/// The asset is deleted: its open direct uploads are cancelled (in the
/// deletion's transaction).
pub(crate) async fn cancel_for_asset(
    client: &impl GenericClient,
    asset: AssetId,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE direct_uploads SET state = 'cancelled', lease_id = NULL, leased_until = NULL,
                 updated_at = now()
             WHERE asset_id = $1 AND state IN ('waiting', 'uploading')",
            &[&asset.as_uuid()],
        )
        .await?;
    Ok(())
}

/// Stores `expired` on direct uploads that read so (past their expiry
/// before an upload started, or whose tus upload expired unfinished) and
/// releases what they still hold of their asset's source claim; returns
/// how many.
pub async fn expire(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let candidates = client
        .query(
            &format!(
                "SELECT d.id FROM direct_uploads d
                 WHERE d.state IN ('waiting', 'uploading') AND ({EFFECTIVE_STATE}) = 'expired'"
            ),
            &[],
        )
        .await?;
    let mut expired = 0;
    for row in &candidates {
        let tx = client.transaction().await?;
        let Some(locked) =
            lock(&tx, DirectUploadId::from(row.get::<_, uuid::Uuid>(0)), None).await?
        else {
            continue;
        };
        // Checked again under the lock: an upload may have started meanwhile.
        if locked.state != DirectUploadState::Expired || locked.stored.is_closed() {
            continue;
        }
        tx.execute(
            "UPDATE direct_uploads SET state = 'expired', lease_id = NULL, leased_until = NULL,
                 updated_at = now()
             WHERE id = $1",
            &[&locked.id.as_uuid()],
        )
        .await?;
        assets::release_source_claim(&tx, locked.asset, locked.holder).await?;
        tx.commit().await?;
        expired += 1;
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_well_formed_and_hashed() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(well_formed_secret(&a), "{a}");
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(!well_formed_secret(&a[1..]));
        assert!(!well_formed_secret(&format!("{}=", &a[1..])));
        assert!(!well_formed_secret(&format!("{}/", &a[1..])));
        assert!(!well_formed_secret(""));
    }
}
