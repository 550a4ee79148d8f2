//! The memory tier (L1) in front of the object store.
//!
//! Objects up to `max_cached_object` are read whole into a byte-bounded
//! moka cache. Concurrent misses for one key share one storage read (moka's
//! `try_get_with` runs one loader; the others wait for its result). A
//! missing object is remembered briefly. Larger objects are remembered only
//! as "too large" and stream from the store per request. Every storage read
//! passes the circuit breaker.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_platform::storage::{ByteRange, ObjectBody, StorageError};
use cascade_platform::ObjectStore;
use cascade_schemas::{ObjectClass, ObjectKey};
use moka::notification::RemovalCause;
use moka::Expiry;
use sha2::{Digest, Sha256};

use crate::breaker::Breaker;
use crate::error::OriginError;
use crate::metrics::Metrics;
use cascade_platform::config::OriginConfig;

/// A whole object held in memory.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The bytes.
    pub(crate) bytes: Bytes,
    /// Strong entity tag, quoted.
    pub(crate) etag: String,
}

/// What the tier knows about a key.
#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<Cached>),
    Missing,
    TooLarge,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// The object, from memory.
    Found(Arc<Cached>),
    /// The object exists but must be streamed from the store.
    TooLarge,
}

/// Why a load failed (shared by every request waiting on it).
#[derive(Debug)]
enum LoadError {
    BreakerOpen(Duration),
    Failed,
}

impl From<&LoadError> for OriginError {
    fn from(e: &LoadError) -> Self {
        match e {
            LoadError::BreakerOpen(retry_after) => OriginError::StorageUnavailable {
                retry_after: *retry_after,
            },
            LoadError::Failed => OriginError::StorageUnavailable {
                retry_after: Duration::from_secs(1),
            },
        }
    }
}

struct TierExpiry {
    negative: Duration,
    manifest: Duration,
    /// Live manifests change every segment, and live segments appear while
    /// players ask for them: both are remembered only this long.
    live: Duration,
}

impl Expiry<ObjectKey, Entry> for TierExpiry {
    fn expire_after_create(&self, key: &ObjectKey, value: &Entry, _: Instant) -> Option<Duration> {
        let manifest = matches!(
            key.class(),
            ObjectClass::HlsPlaylist | ObjectClass::DashManifest
        );
        match (value, key.is_live(), manifest) {
            // A live object that is missing now may be stored a moment
            // later: remembering its absence would delay it for everyone.
            // (Concurrent misses still share one storage read.)
            (Entry::Missing, true, _) => Some(Duration::ZERO),
            (_, true, true) => Some(self.live),
            (Entry::Missing, false, _) => Some(self.negative),
            (_, false, true) => Some(self.manifest),
            _ => None,
        }
    }
}

/// Per-entry bookkeeping beyond the payload, counted in its weight.
const ENTRY_OVERHEAD: usize = 96;

/// Expiry of objects that change under their key (a growing asset's
/// playlists): kept `ttl`, a miss not at all (it may be stored a moment later).
struct ChangingExpiry {
    ttl: Duration,
}

impl Expiry<ObjectKey, Entry> for ChangingExpiry {
    fn expire_after_create(&self, _: &ObjectKey, value: &Entry, _: Instant) -> Option<Duration> {
        match value {
            Entry::Missing => Some(Duration::ZERO),
            _ => Some(self.ttl),
        }
    }
}

/// Bytes the cache of changing objects may hold (playlists of a few KB).
const CHANGING_CAPACITY: u64 = 16 * 1024 * 1024;

/// An entry's weight in bytes.
fn weight(key: &ObjectKey, value: &Entry) -> u32 {
    let payload = match value {
        Entry::Found(c) => c.bytes.len(),
        Entry::Missing | Entry::TooLarge => 0,
    };
    u32::try_from(payload + key.as_str().len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// The memory tier, the store behind it and the breaker guarding the store.
pub(crate) struct Tier {
    cache: moka::future::Cache<ObjectKey, Entry>,
    /// Objects that change under their key, kept only `live_cache_ttl`
    /// (apart from `cache`, whose manifests stay `manifest_ttl`).
    changing: moka::future::Cache<ObjectKey, Entry>,
    /// The storage tiers' stores, `hot` first (`Tiers::all`'s order).
    stores: Vec<ObjectStore>,
    breaker: Breaker,
    metrics: Arc<Metrics>,
    max_object: u64,
    timeout: Duration,
}

impl Tier {
    pub(crate) fn new(
        config: &OriginConfig,
        stores: Vec<ObjectStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let listener_metrics = metrics.clone();
        let cache = moka::future::Cache::builder()
            .max_capacity(config.cache_capacity.0)
            .weigher(weight)
            .expire_after(TierExpiry {
                negative: config.negative_ttl,
                manifest: config.manifest_ttl,
                live: config.live_cache_ttl,
            })
            .eviction_listener(move |_key, _value, cause| match cause {
                RemovalCause::Size => {
                    listener_metrics.cache_evictions.inc();
                }
                RemovalCause::Expired => {
                    listener_metrics.cache_expirations.inc();
                }
                _ => {}
            })
            .build();
        let changing = moka::future::Cache::builder()
            .max_capacity(CHANGING_CAPACITY)
            .weigher(weight)
            .expire_after(ChangingExpiry {
                ttl: config.live_cache_ttl,
            })
            .build();
        Self {
            cache,
            changing,
            stores,
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            metrics,
            max_object: config.max_cached_object.0,
            timeout: config.storage_timeout,
        }
    }

    /// Finds an object of the hot tier: from memory, else by one (shared)
    /// storage read.
    pub(crate) async fn lookup(&self, key: &ObjectKey) -> Result<Lookup, OriginError> {
        self.lookup_in(&self.cache, key, 0).await
    }

    /// Finds an object stored in tier `at` (its position in the tiers). A
    /// key names the same bytes in every tier, so memory is shared.
    pub(crate) async fn lookup_at(
        &self,
        key: &ObjectKey,
        at: usize,
    ) -> Result<Lookup, OriginError> {
        self.lookup_in(&self.cache, key, at).await
    }

    /// Finds an object that changes under its key (a growing asset's
    /// playlist): remembered only `live_cache_ttl`, so concurrent requests
    /// still share one storage read but nobody gets a stale copy for longer.
    pub(crate) async fn lookup_changing(&self, key: &ObjectKey) -> Result<Lookup, OriginError> {
        self.lookup_in(&self.changing, key, 0).await
    }

    async fn lookup_in(
        &self,
        cache: &moka::future::Cache<ObjectKey, Entry>,
        key: &ObjectKey,
        at: usize,
    ) -> Result<Lookup, OriginError> {
        if let Some(entry) = cache.get(key).await {
            return self.found(entry, true);
        }
        self.metrics.cache_misses.inc();
        let loaded = AtomicBool::new(false);
        let result = cache
            .try_get_with(key.clone(), async {
                loaded.store(true, Relaxed);
                self.load(key, at).await
            })
            .await;
        if !loaded.load(Relaxed) {
            self.metrics.cache_coalesced.inc();
        }
        match result {
            Ok(entry) => self.found(entry, false),
            Err(e) => Err(OriginError::from(e.as_ref())),
        }
    }

    fn found(&self, entry: Entry, hit: bool) -> Result<Lookup, OriginError> {
        match entry {
            Entry::Found(object) => {
                if hit {
                    self.metrics.cache_hits.inc();
                    self.metrics
                        .cache_hit_bytes
                        .inc_by(object.bytes.len() as u64);
                }
                Ok(Lookup::Found(object))
            }
            Entry::Missing => {
                if hit {
                    self.metrics.cache_negative_hits.inc();
                }
                Err(OriginError::NotFound)
            }
            Entry::TooLarge => {
                self.metrics.cache_bypasses.inc();
                Ok(Lookup::TooLarge)
            }
        }
    }

    /// Counts a storage read's outcome in the metrics and the breaker.
    fn record(&self, key: &ObjectKey, started: Instant, error: Option<&StorageError>) {
        self.metrics
            .storage_read_duration
            .observe_duration(started.elapsed());
        let kind = match error {
            None => {
                self.breaker.success();
                return;
            }
            Some(e) if e.is_not_found() => {
                self.breaker.success();
                0
            }
            Some(StorageError::InvalidRange { .. }) => {
                self.breaker.success();
                return;
            }
            Some(e) if e.is_retryable() => 1,
            Some(_) => 2,
        };
        self.metrics.storage_errors[kind].inc();
        if kind != 0 {
            if let Some(e) = error {
                tracing::warn!(key = %key, error = %e, "storage read failed");
            }
            self.fail();
        }
    }

    fn fail(&self) {
        if self.breaker.failure() {
            self.metrics.breaker_opened.inc();
        }
    }

    fn admit(&self) -> Result<(), Duration> {
        self.breaker.admit().inspect_err(|_| {
            self.metrics.breaker_rejections.inc();
        })
    }

    fn store(&self, at: usize) -> &ObjectStore {
        // Positions come from the resolver, which knows only these tiers.
        self.stores.get(at).unwrap_or(&self.stores[0])
    }

    async fn load(&self, key: &ObjectKey, at: usize) -> Result<Entry, LoadError> {
        self.admit().map_err(LoadError::BreakerOpen)?;
        self.metrics.storage_reads.inc();
        let started = Instant::now();
        let read = tokio::time::timeout(self.timeout, async {
            let body = self.store(at).get(key, None).await?;
            if body.meta.size > self.max_object {
                // Dropping the body closes the read; requests stream instead.
                return Ok(Entry::TooLarge);
            }
            let etag = body.meta.etag.clone();
            // Kept where connections can `sendfile` it from (zero_copy.rs).
            let bytes = crate::zero_copy::into_shared_memory(body.collect().await?);
            let etag = etag.unwrap_or_else(|| content_etag(&bytes));
            Ok::<_, StorageError>(Entry::Found(Arc::new(Cached { bytes, etag })))
        })
        .await;
        match read {
            Ok(Ok(entry)) => {
                self.record(key, started, None);
                if let Entry::Found(object) = &entry {
                    let n = object.bytes.len() as u64;
                    self.metrics.storage_read_bytes.inc_by(n);
                    self.metrics.cache_inserted_bytes.inc_by(n);
                }
                Ok(entry)
            }
            Ok(Err(e)) if e.is_not_found() => {
                self.record(key, started, Some(&e));
                Ok(Entry::Missing)
            }
            Ok(Err(e)) => {
                self.record(key, started, Some(&e));
                Err(LoadError::Failed)
            }
            Err(_) => {
                self.metrics
                    .storage_read_duration
                    .observe_duration(started.elapsed());
                self.metrics.storage_errors[3].inc();
                tracing::warn!(key = %key, timeout_ms = self.timeout.as_millis() as u64, "storage read timed out");
                self.fail();
                Err(LoadError::Failed)
            }
        }
    }

    /// Streams an object too large for memory (or part of it) from the store.
    pub(crate) async fn stream(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
        at: usize,
    ) -> Result<ObjectBody, OriginError> {
        self.admit()
            .map_err(|retry_after| OriginError::StorageUnavailable { retry_after })?;
        self.metrics.storage_reads.inc();
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, self.store(at).get(key, range)).await {
            Ok(Ok(body)) => {
                self.record(key, started, None);
                self.metrics.storage_read_bytes.inc_by(body.len());
                Ok(body)
            }
            Ok(Err(e)) => {
                self.record(key, started, Some(&e));
                Err(match e {
                    StorageError::NotFound { .. } => OriginError::NotFound,
                    StorageError::InvalidRange { size } => {
                        OriginError::RangeNotSatisfiable { size }
                    }
                    _ => OriginError::StorageUnavailable {
                        retry_after: Duration::from_secs(1),
                    },
                })
            }
            Err(_) => {
                self.metrics
                    .storage_read_duration
                    .observe_duration(started.elapsed());
                self.metrics.storage_errors[3].inc();
                tracing::warn!(key = %key, "storage open timed out");
                self.fail();
                Err(OriginError::StorageUnavailable {
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// Applies moka's pending bookkeeping so sizes and counts are current.
    pub(crate) async fn settle(&self) {
        self.cache.run_pending_tasks().await;
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub(crate) fn breaker_state(&self) -> u8 {
        self.breaker.state_code()
    }
}

/// A strong ETag from the content, for stores that give none.
fn content_etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
