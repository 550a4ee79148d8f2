//! API keys: random secrets shown once at creation, stored as their SHA-256,
//! each belonging to one environment.

use cascade_schemas::EnvironmentId;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::DbError;

/// Prefix of every key Cascade issues, so leaked keys are recognisable.
pub const KEY_PREFIX: &str = "csk_";

/// Characters after the prefix: base64url of 32 random bytes.
const SECRET_BODY_LEN: usize = 43;

/// The stored form of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` has the shape of a key Cascade issues (checked before
/// any database lookup, so garbage costs nothing).
pub fn well_formed(secret: &str) -> bool {
    secret.strip_prefix(KEY_PREFIX).is_some_and(|body| {
        body.len() == SECRET_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A key as operators see it (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Id.
    pub id: uuid::Uuid,
    /// Operator's name for it.
    pub name: String,
    /// The environment its requests act in.
    pub environment_id: EnvironmentId,
    /// That environment's name.
    pub environment: String,
    /// First characters of the secret.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Creates a key in `environment`; returns it and its secret (shown once).
pub async fn create(
    client: &impl GenericClient,
    name: &str,
    environment: EnvironmentId,
) -> Result<(ApiKey, String), DbError> {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let id = uuid::Uuid::new_v4();
    let prefix: String = secret.chars().take(KEY_PREFIX.len() + 6).collect();
    let row = client
        .query_one(
            "INSERT INTO api_keys (id, name, key_hash, prefix, environment_id)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING created_at, (SELECT name FROM environments WHERE id = $5)",
            &[
                &id,
                &name,
                &hash(&secret).as_slice(),
                &prefix,
                &environment.as_uuid(),
            ],
        )
        .await?;
    let key = ApiKey {
        id,
        name: name.to_owned(),
        environment_id: environment,
        environment: row.get(1),
        prefix,
        created_at: row.get(0),
        revoked_at: None,
    };
    Ok((key, secret))
}

/// Every key, newest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<ApiKey>, DbError> {
    let rows = client
        .query(
            "SELECT k.id, k.name, k.environment_id, e.name, k.prefix, k.created_at, k.revoked_at
             FROM api_keys k JOIN environments e ON e.id = k.environment_id
             ORDER BY k.created_at DESC",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ApiKey {
            id: r.get(0),
            name: r.get(1),
            environment_id: EnvironmentId::from(r.get::<_, uuid::Uuid>(2)),
            environment: r.get(3),
            prefix: r.get(4),
            created_at: r.get(5),
            revoked_at: r.get(6),
        })
        .collect())
}

/// Revokes a key; `false` when no active key has that id.
pub async fn revoke(client: &impl GenericClient, id: uuid::Uuid) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// The active key whose secret hashes to `hash`: its id and environment.
pub async fn lookup(
    client: &impl GenericClient,
    hash: &[u8; 32],
) -> Result<Option<(uuid::Uuid, EnvironmentId)>, DbError> {
    // Every uncached request asks: prepared once per connection.
    let statement = client
        .prepare_cached(
            "SELECT id, environment_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .await?;
    let row = client.query_opt(&statement, &[&hash.as_slice()]).await?;
    Ok(row.map(|r| {
        (
            r.get::<_, uuid::Uuid>(0),
            EnvironmentId::from(r.get::<_, uuid::Uuid>(1)),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_issued_shapes_are_well_formed() {
        let good = format!("{KEY_PREFIX}{}", "A".repeat(SECRET_BODY_LEN));
        assert!(well_formed(&good));
        assert!(!well_formed("csk_short"));
        assert!(!well_formed(&format!(
            "xsk_{}",
            "A".repeat(SECRET_BODY_LEN)
        )));
        assert!(!well_formed(&format!(
            "{KEY_PREFIX}{}",
            "=".repeat(SECRET_BODY_LEN)
        )));
        assert!(!well_formed(&format!(
            "{KEY_PREFIX}{}",
            "A".repeat(SECRET_BODY_LEN + 1)
        )));
    }
}
