//! API keys: `Authorization: Bearer <key>`. Keys are random secrets shown
//! once at creation; Postgres keeps only their SHA-256. A bootstrap key from
//! config is accepted too (local use). Each key has a request budget per
//! minute (token bucket, per process).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// Prefix of every key Cascade issues, so leaked keys are recognisable.
const KEY_PREFIX: &str = "csk_";

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A key as operators see it (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Id.
    pub id: uuid::Uuid,
    /// Operator's name for it.
    pub name: String,
    /// First characters of the secret.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Creates a key; returns it and its secret (shown once).
pub async fn create_key(pool: &Pool, name: &str) -> Result<(ApiKey, String), ApiError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let id = uuid::Uuid::new_v4();
    let prefix: String = secret.chars().take(KEY_PREFIX.len() + 6).collect();
    let client = pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO api_keys (id, name, key_hash, prefix) VALUES ($1, $2, $3, $4) RETURNING created_at",
            &[&id, &name, &hash(&secret), &prefix],
        )
        .await?;
    let key = ApiKey {
        id,
        name: name.to_owned(),
        prefix,
        created_at: row.get(0),
        revoked_at: None,
    };
    Ok((key, secret))
}

/// Every key, newest first.
pub async fn list_keys(pool: &Pool) -> Result<Vec<ApiKey>, ApiError> {
    let client = pool.get().await?;
    let rows = client
        .query("SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at DESC", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| ApiKey {
            id: r.get(0),
            name: r.get(1),
            prefix: r.get(2),
            created_at: r.get(3),
            revoked_at: r.get(4),
        })
        .collect())
}

/// Revokes a key; `false` when no active key has that id.
pub async fn revoke_key(pool: &Pool, id: uuid::Uuid) -> Result<bool, ApiError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// Who made a request: a key id, or the bootstrap key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A key from the database.
    Key(uuid::Uuid),
    /// The bootstrap key from config.
    Bootstrap,
}

/// Per-key token buckets.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<Caller, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes one token for `caller`; `Err(seconds)` when the bucket is empty.
    fn take(&self, caller: Caller, per_minute: u32) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let refill_per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = buckets.entry(caller).or_insert((capacity, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * refill_per_sec).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / refill_per_sec).ceil() as u64)
        }
    }
}

async fn caller_of(state: &AppState, header: Option<&str>) -> Result<Caller, ApiError> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let bootstrap = state.config.bootstrap_key.expose();
    if !bootstrap.is_empty() && constant_time_eq(token.as_bytes(), bootstrap.as_bytes()) {
        return Ok(Caller::Bootstrap);
    }
    let client = state.pool.get().await?;
    // Every request asks: prepared once per connection, one round trip after.
    let lookup = client
        .prepare_cached("SELECT id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .await?;
    let row = client.query_opt(&lookup, &[&hash(token)]).await?;
    row.map(|r| Caller::Key(r.get(0)))
        .ok_or(ApiError::Unauthorized)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: authenticate, rate-limit, and pass the caller on.
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let caller = caller_of(&state, header).await?;
    state
        .limiter
        .take(caller, state.config.rate_limit_per_minute)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_refuse() {
        let limiter = RateLimiter::default();
        let caller = Caller::Bootstrap;
        for _ in 0..3 {
            limiter.take(caller, 3).unwrap();
        }
        let wait = limiter.take(caller, 3).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        // Another key has its own budget.
        limiter.take(Caller::Key(uuid::Uuid::nil()), 3).unwrap();
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
