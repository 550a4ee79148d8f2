//! Playback id -> asset or live stream, with a short-lived in-memory cache
//! so Postgres is asked once per playback id every `asset_ttl`, not once
//! per segment.
//! Concurrent lookups of one id share one query. An id asked for within
//! twice `asset_ttl` of its last answer gets that answer at once while one
//! background query refreshes it (stale-while-revalidate), so a busy
//! playback id never makes requests wait on Postgres; an id idle for longer
//! waits for a fresh answer. When Postgres cannot answer, the last answer
//! (kept `asset_stale_ttl`) is used instead (stale-if-error), so playback
//! outlives a database outage. An asset with nothing to play yet (it may
//! turn playable any moment, progressive publish) is asked again after
//! [`PENDING_TTL`], never answered stale while it refreshes, so players
//! polling for it start within that of its first segments.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_schemas::{AssetId, AssetState, LiveStreamId, PlaybackId, RenditionName};
use deadpool_postgres::Pool;

use crate::error::OriginError;
use crate::metrics::Metrics;
use cascade_platform::config::OriginConfig;

/// What the origin needs to know about an asset to serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssetInfo {
    pub(crate) id: AssetId,
    pub(crate) state: AssetState,
    /// Playback needs a token (`playback_policy = 'signed'`).
    pub(crate) signed: bool,
    /// The live version, once one is published.
    pub(crate) published_version: Option<u32>,
    /// The first version while it grows (progressive publish): playable
    /// before it is published.
    pub(crate) growing_version: Option<u32>,
    /// Renditions stored outside the hot tier: (version, rendition, the
    /// tier's position among the configured tiers).
    pub(crate) placed: Vec<(u32, RenditionName, usize)>,
}

impl AssetInfo {
    /// The position of the tier holding `version`'s `rendition` (0: hot).
    pub(crate) fn tier_of(&self, version: u32, rendition: &RenditionName) -> usize {
        self.placed
            .iter()
            .find(|(v, r, _)| *v == version && r == rendition)
            .map_or(0, |(_, _, at)| *at)
    }
}

/// What the origin needs to know about a live stream to serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveInfo {
    pub(crate) id: LiveStreamId,
    /// Playback needs a token.
    pub(crate) signed: bool,
    /// A broadcast is under way: its manifests are served.
    pub(crate) on_air: bool,
    /// Low latency: playlists and parts come from the relay.
    pub(crate) low_latency: bool,
    /// The relay of the replica cutting the stream, while one is.
    pub(crate) relay: Option<String>,
}

/// How long an answer naming an asset with nothing to play yet is reused.
pub(crate) const PENDING_TTL: Duration = Duration::from_millis(100);

/// What a playback id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Playable {
    Asset(AssetInfo),
    Live(LiveInfo),
}

impl Playable {
    /// An asset with nothing to play yet, which may turn playable any moment.
    fn is_pending(&self) -> bool {
        matches!(self, Playable::Asset(asset)
            if asset.published_version.is_none()
                && asset.growing_version.is_none()
                && matches!(asset.state, AssetState::Waiting | AssetState::Processing))
    }
}

fn is_pending(playable: &Option<Arc<Playable>>) -> bool {
    playable.as_deref().is_some_and(Playable::is_pending)
}

/// Expiry of fresh answers: `ttl`, or [`PENDING_TTL`] for a pending asset.
struct FreshExpiry {
    ttl: Duration,
}

impl moka::Expiry<PlaybackId, Option<Arc<Playable>>> for FreshExpiry {
    fn expire_after_create(
        &self,
        _: &PlaybackId,
        value: &Option<Arc<Playable>>,
        _: Instant,
    ) -> Option<Duration> {
        Some(if is_pending(value) {
            PENDING_TTL.min(self.ttl)
        } else {
            self.ttl
        })
    }
}

/// Resolves playback ids. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    /// Answers younger than `ttl`; also what concurrent queries share.
    fresh: moka::future::Cache<PlaybackId, Option<Arc<Playable>>>,
    /// Every answer Postgres gave, for `asset_stale_ttl`.
    last_known: moka::future::Cache<PlaybackId, Arc<Known>>,
    ttl: Duration,
    metrics: Arc<Metrics>,
    /// The configured storage tiers' names, `hot` first.
    tiers: Vec<String>,
    /// Playback ids forgotten so far ([`Resolver::forget`]): a lookup that
    /// was under way when one was is asked again, since it may have read
    /// the row before the change committed.
    forgets: AtomicU64,
}

/// An answer Postgres gave, and when.
struct Known {
    playable: Option<Arc<Playable>>,
    at: Instant,
    /// A background refresh of it is under way.
    refreshing: AtomicBool,
}

#[derive(Debug)]
struct LookupFailed;

/// The one query behind every lookup (prepared once per connection).
const LOOKUP: &str =
    "SELECT false AS live, id, playback_policy, state, published_version, playable_version,
         false AS on_air, false AS low_latency, NULL::text AS relay,
         ARRAY(SELECT r.version || '/' || r.name || '/' || r.tier FROM renditions r
               WHERE r.asset_id = assets.id AND r.tier <> 'hot') AS placed
     FROM assets WHERE playback_id = $1 AND deleted_at IS NULL
     UNION ALL
     SELECT true, id, playback_policy, state, NULL, NULL, broadcast_id IS NOT NULL,
         latency_mode = 'low', publisher_relay, ARRAY[]::text[]
     FROM live_streams WHERE playback_id = $1 AND deleted_at IS NULL
     LIMIT 1";

impl Resolver {
    pub(crate) fn new(
        config: &OriginConfig,
        pool: Pool,
        tiers: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                fresh: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .expire_after(FreshExpiry {
                        ttl: config.asset_ttl,
                    })
                    .build(),
                last_known: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(config.asset_stale_ttl)
                    .build(),
                ttl: config.asset_ttl,
                metrics,
                tiers,
                forgets: AtomicU64::new(0),
            }),
        }
    }

    /// The asset or live stream behind a playback id; `None` when there is none.
    pub(crate) async fn resolve(
        &self,
        playback_id: &PlaybackId,
    ) -> Result<Option<Arc<Playable>>, OriginError> {
        let shared = &self.shared;
        if let Some(found) = shared.fresh.get(playback_id).await {
            return Ok(found);
        }
        let known = shared.last_known.get(playback_id).await;
        if let Some(known) = &known {
            if known.at.elapsed() < shared.ttl * 2 && !is_pending(&known.playable) {
                if !known.refreshing.swap(true, Relaxed) {
                    let resolver = self.clone();
                    let playback_id = playback_id.clone();
                    let known = known.clone();
                    tokio::spawn(async move {
                        if resolver.ask(&playback_id).await.is_err() {
                            // A later request tries again.
                            known.refreshing.store(false, Relaxed);
                        }
                    });
                }
                return Ok(known.playable.clone());
            }
        }
        match self.ask(playback_id).await {
            Ok(found) => Ok(found),
            Err(()) => match known {
                Some(known) => {
                    shared.metrics.asset_lookup_stale.inc();
                    Ok(known.playable.clone())
                }
                None => Err(OriginError::DatabaseUnavailable),
            },
        }
    }

    /// Forgets what is known about `playback_id` (deleted, or another
    /// version published: `assets::PLAYBACK_CHANGED_CHANNEL`), so the next
    /// request asks Postgres. Not even a database outage brings the old
    /// answer back.
    pub(crate) async fn forget(&self, playback_id: &PlaybackId) {
        let shared = &self.shared;
        shared.forgets.fetch_add(1, SeqCst);
        shared.fresh.invalidate(playback_id).await;
        shared.last_known.invalidate(playback_id).await;
    }

    /// Drops every fresh answer (notifications may have been missed); the
    /// last known ones stay for outages.
    pub(crate) fn forget_fresh(&self) {
        self.shared.forgets.fetch_add(1, SeqCst);
        self.shared.fresh.invalidate_all();
    }

    /// Asks Postgres, sharing the query with concurrent askers of the same id.
    async fn ask(&self, playback_id: &PlaybackId) -> Result<Option<Arc<Playable>>, ()> {
        let shared = &self.shared;
        shared
            .fresh
            .try_get_with(playback_id.clone(), shared.query(playback_id))
            .await
            .map_err(|_| ())
    }
}

impl Shared {
    /// `version/rendition/tier` as the tier's position; `None` for a tier
    /// this origin does not have (every origin must be given every tier).
    fn placed(&self, text: &str) -> Option<(u32, RenditionName, usize)> {
        let mut parts = text.splitn(3, '/');
        let version = parts.next()?.parse().ok()?;
        let rendition = RenditionName::new(parts.next()?).ok()?;
        let tier = parts.next()?;
        match self.tiers.iter().position(|t| t == tier) {
            Some(at) => Some((version, rendition, at)),
            None => {
                tracing::warn!(
                    tier,
                    "a rendition is stored in a tier this origin is not configured with"
                );
                None
            }
        }
    }

    async fn remember(&self, playback_id: &PlaybackId, playable: Option<Arc<Playable>>) {
        let known = Arc::new(Known {
            playable,
            at: Instant::now(),
            refreshing: AtomicBool::new(false),
        });
        self.last_known.insert(playback_id.clone(), known).await;
    }

    async fn query(&self, playback_id: &PlaybackId) -> Result<Option<Arc<Playable>>, LookupFailed> {
        // A change announced while the query ran may not be in its answer:
        // ask again (changes are rare; three tries bound a storm of them).
        let mut tries = 0;
        loop {
            tries += 1;
            let forgets = self.forgets.load(SeqCst);
            let answer = self.query_once(playback_id).await?;
            if tries == 3 || self.forgets.load(SeqCst) == forgets {
                return Ok(answer);
            }
        }
    }

    async fn query_once(
        &self,
        playback_id: &PlaybackId,
    ) -> Result<Option<Arc<Playable>>, LookupFailed> {
        self.metrics.asset_lookups.inc();
        let failed = |what: &str, error: &dyn std::fmt::Display| {
            self.metrics.asset_lookup_errors.inc();
            tracing::warn!(playback_id = %playback_id, error = %error, "asset lookup failed: {what}");
            LookupFailed
        };
        let client = self.pool.get().await.map_err(|e| failed("pool", &e))?;
        // Assets and live streams draw playback ids from one random space.
        let statement = client
            .prepare_cached(LOOKUP)
            .await
            .map_err(|e| failed("prepare", &e))?;
        let row = client
            .query_opt(&statement, &[&playback_id.as_str()])
            .await
            .map_err(|e| failed("query", &e))?;
        let Some(row) = row else {
            self.remember(playback_id, None).await;
            return Ok(None);
        };
        let policy: String = row
            .try_get("playback_policy")
            .map_err(|e| failed("row", &e))?;
        let id: uuid::Uuid = row.try_get("id").map_err(|e| failed("row", &e))?;
        let live: bool = row.try_get("live").map_err(|e| failed("row", &e))?;
        let playable = if live {
            Playable::Live(LiveInfo {
                id: LiveStreamId::from(id),
                signed: policy == "signed",
                on_air: row.try_get("on_air").map_err(|e| failed("row", &e))?,
                low_latency: row.try_get("low_latency").map_err(|e| failed("row", &e))?,
                relay: row.try_get("relay").map_err(|e| failed("row", &e))?,
            })
        } else {
            let state: String = row.try_get("state").map_err(|e| failed("row", &e))?;
            let state: AssetState = state.parse().map_err(|e| failed("state", &e))?;
            let version = |column: &str| -> Result<Option<u32>, LookupFailed> {
                let value: Option<i32> = row.try_get(column).map_err(|e| failed("row", &e))?;
                Ok(value.and_then(|v| u32::try_from(v).ok()))
            };
            let published_version = version("published_version")?;
            let growing_version =
                state.growing_version(published_version, version("playable_version")?);
            let placed: Vec<String> = row.try_get("placed").map_err(|e| failed("row", &e))?;
            Playable::Asset(AssetInfo {
                id: AssetId::from(id),
                state,
                signed: policy == "signed",
                published_version,
                growing_version,
                placed: placed.iter().filter_map(|p| self.placed(p)).collect(),
            })
        };
        let found = Some(Arc::new(playable));
        self.remember(playback_id, found.clone()).await;
        Ok(found)
    }
}
