//! API keys: `Authorization: Bearer <key>`. Keys are random secrets shown
//! once at creation; Postgres keeps only their SHA-256 and the environment
//! each belongs to (`cascade_platform::api_keys`). A bootstrap key from
//! config is accepted too (local use), in `ingest.default_environment`.
//!
//! What a request costs before it is known to be authentic is bounded: a
//! secret that is not shaped like an issued key is refused without a
//! query; a valid key is remembered for `ingest.key_cache_ttl` (revocation
//! takes effect within it); and requests without a valid key are counted
//! per client address, so a flood of bad keys gets 429 before reaching the
//! database. Each key also has a request budget per minute. Secrets are
//! compared in constant time (`subtle`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cascade_platform::api_keys;
use cascade_schemas::EnvironmentId;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// Who made a request, and the environment it acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The key used.
    pub key: KeyRef,
    /// Every row the request reads or writes belongs to this environment.
    pub environment: EnvironmentId,
}

/// Which key authenticated a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// A key from the database.
    Key(uuid::Uuid),
    /// The bootstrap key from config.
    Bootstrap,
    /// No key: the secret of a direct upload URL (`crate::direct`), which
    /// acts in its direct upload's environment and may only upload its
    /// asset's source.
    DirectUpload(cascade_schemas::DirectUploadId),
}

/// Token buckets by some key: `capacity` per minute, refilled continuously.
pub struct Buckets<K> {
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

/// Buckets kept at most; past it, full ones (idle long enough) are dropped,
/// so a scan from many addresses cannot grow memory without bound.
const MAX_BUCKETS: usize = 100_000;

impl<K: std::hash::Hash + Eq + Copy> Buckets<K> {
    /// Takes one token for `key`; `Err(seconds)` when its bucket is empty.
    pub fn take(&self, key: K, per_minute: u32) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let refill_per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * refill_per_sec < capacity
            });
        }
        let (tokens, last) = buckets.entry(key).or_insert((capacity, now));
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

    /// Whether `key` has a token left, without taking one.
    pub fn has_token(&self, key: K, per_minute: u32) -> bool {
        let capacity = f64::from(per_minute.max(1));
        let refill_per_sec = capacity / 60.0;
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match buckets.get(&key) {
            None => true,
            Some((tokens, last)) => *tokens + last.elapsed().as_secs_f64() * refill_per_sec >= 1.0,
        }
    }
}

/// What authentication keeps between requests (per process).
pub struct Authenticator {
    /// Request budgets per key (and per direct upload URL).
    pub(crate) per_key: Buckets<KeyRef>,
    /// Budgets of requests without a valid key (or URL secret), per client address.
    pub(crate) failures: Buckets<IpAddr>,
    /// Valid keys by secret hash, briefly.
    cache: moka::sync::Cache<[u8; 32], (uuid::Uuid, EnvironmentId)>,
    /// The bootstrap key's environment, resolved once.
    pub(crate) bootstrap_environment: tokio::sync::OnceCell<EnvironmentId>,
}

impl Authenticator {
    /// Remembers valid keys for `cache_ttl`.
    pub fn new(cache_ttl: std::time::Duration) -> Self {
        Self {
            per_key: Buckets::default(),
            failures: Buckets::default(),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl)
                .build(),
            bootstrap_environment: tokio::sync::OnceCell::new(),
        }
    }
}

/// The environment of the bootstrap key, the watch folder and imports.
pub async fn default_environment(
    state: &AppState,
) -> Result<EnvironmentId, cascade_platform::db::DbError> {
    state
        .auth
        .bootstrap_environment
        .get_or_try_init(|| async {
            let client = state.pool.get().await?;
            cascade_platform::environments::ensure(&client, &state.config.default_environment).await
        })
        .await
        .copied()
}

async fn caller_of(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    let bootstrap = state.config.bootstrap_key.expose();
    if !bootstrap.is_empty() && bool::from(token.as_bytes().ct_eq(bootstrap.as_bytes())) {
        return Ok(Some(Caller {
            key: KeyRef::Bootstrap,
            environment: default_environment(state).await?,
        }));
    }
    if !api_keys::well_formed(token) {
        return Ok(None);
    }
    let hash = api_keys::hash(token);
    if let Some((id, environment)) = state.auth.cache.get(&hash) {
        return Ok(Some(Caller {
            key: KeyRef::Key(id),
            environment,
        }));
    }
    let client = state.pool.get().await?;
    let found = api_keys::lookup(&client, &hash).await?;
    drop(client);
    Ok(found.map(|(id, environment)| {
        state.auth.cache.insert(hash, (id, environment));
        Caller {
            key: KeyRef::Key(id),
            environment,
        }
    }))
}

/// The client's address: the peer of the connection (a deployment behind a
/// load balancer limits there too). Requests served without a socket (tests
/// through `oneshot`) share one bucket.
pub(crate) fn client_address(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// Middleware: authenticate, rate-limit, and pass the [`Caller`] on.
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let address = client_address(&request);
    let per_address = state.config.failed_auth_per_minute;
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let refused = |state: &AppState| match state.auth.failures.take(address, per_address) {
        Ok(()) => ApiError::Unauthorized,
        Err(retry_after) => ApiError::RateLimited { retry_after },
    };
    let Some(token) = token else {
        return Err(refused(&state));
    };
    // An address that spent its budget of failures is not looked up again
    // until it refills (a cached valid key still passes).
    let cached =
        api_keys::well_formed(&token) && state.auth.cache.contains_key(&api_keys::hash(&token));
    if !cached
        && !state.auth.failures.has_token(address, per_address)
        && !bool::from(
            token
                .as_bytes()
                .ct_eq(state.config.bootstrap_key.expose().as_bytes()),
        )
    {
        return Err(refused(&state));
    }
    let Some(caller) = caller_of(&state, &token).await? else {
        return Err(refused(&state));
    };
    state
        .auth
        .per_key
        .take(caller.key, state.config.rate_limit_per_minute)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_refuse() {
        let limiter = Buckets::default();
        for _ in 0..3 {
            limiter.take(KeyRef::Bootstrap, 3).unwrap();
        }
        assert!(!limiter.has_token(KeyRef::Bootstrap, 3));
        let wait = limiter.take(KeyRef::Bootstrap, 3).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        // Another key has its own budget.
        assert!(limiter.has_token(KeyRef::Key(uuid::Uuid::nil()), 3));
        limiter.take(KeyRef::Key(uuid::Uuid::nil()), 3).unwrap();
    }
}
