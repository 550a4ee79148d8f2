//! Cascade's caching playback origin: what players and CDNs pull from.
//!
//! It serves, under playback URLs built from an asset's playback id, the
//! objects the transcoder published for the asset's live version:
//!
//! | URL | object |
//! | --- | --- |
//! | `/play/{playback_id}/master.m3u8` | HLS master playlist (RFC 8216 section 4.3.4) |
//! | `/play/{playback_id}/manifest.mpd` | DASH MPD (ISO/IEC 23009-1) |
//! | `/play/{playback_id}/{rendition}/index.m3u8` | HLS media playlist (RFC 8216 section 4.3.3) |
//! | `/play/{playback_id}/{rendition}/init.mp4` | CMAF init segment (`EXT-X-MAP`, DASH initialization) |
//! | `/play/{playback_id}/{rendition}/{seq}.m4s` | CMAF media segment |
//! | `/play/{playback_id}/s{session}/{rendition}/{msn}.{part}.m4s` | a live stream's partial segment (LL-HLS `EXT-X-PART`) |
//!
//! Low-latency live streams (draft-pantos-hls-rfc8216bis, low-latency DASH):
//! media playlists (with `_HLS_msn` / `_HLS_part` / `_HLS_skip`), parts and
//! segments not stored yet come from the relay of the process cutting the
//! stream (`relay`), which holds blocking requests until their part exists.
//!
//! Path parts are parsed into [`PlaybackId`], [`RenditionName`] and a
//! canonical `u64` first; object keys are built only through
//! [`ObjectKey`], so no request path ever reaches the store.
//!
//! - **Tiers**: a byte-bounded memory cache (L1) in front of the object
//!   store; concurrent misses share one storage read; misses are remembered
//!   for `negative_ttl`; objects above `max_cached_object` stream from the
//!   store. A circuit breaker guards the store; an L1 hit is served whatever
//!   the store's state (stale-if-error), a miss while the store fails is a
//!   fast 503 with `Retry-After`.
//! - **Assets**: playback id -> (asset, state, policy, published version,
//!   growing version, the storage tier of each rendition not in `hot`) from
//!   Postgres, reused for `asset_ttl`, and forgotten at once when a
//!   deletion or a republish is announced (`follow_changes`). A new asset
//!   plays while it grows (progressive publish): its HLS playlists and its
//!   dynamic DASH MPD are served short-lived (they change under their key,
//!   so the memory tier keeps them only `live_cache_ttl`), its segments
//!   immutable. Nothing published or growing: 404 `asset_not_ready`.
//! - **HTTP** (GET, HEAD, OPTIONS): `Content-Type` by object class; strong
//!   `ETag` and `If-None-Match` (304); single byte ranges (206, 416 with
//!   `Content-Range: bytes */size`; multiple ranges are answered with the
//!   whole object, as RFC 9110 allows); gzip of manifests when accepted
//!   (`Vary: Accept-Encoding`); CORS; `Surrogate-Key` and `Cache-Tag:
//!   asset-<asset_id>` on every response about an asset, so a CDN can purge it.
//! - **Cache-Control**: see [`cache_control`]'s table.
//! - **Views**: plays and segment fetches are counted in memory and written
//!   in batches (`count_views`) for the tiering policy.
//! - **Zero-copy**: cached objects of 16 KiB or more live in sealed `memfd`
//!   mappings that [`zero_copy::ZeroCopyStream`] sends with `sendfile`.
//! - **Signed playback**: assets with the `signed` policy need `?token=` on
//!   every object, checked against the [`Keyring`] of `playback.signing_keys`
//!   (format and rotation: [`cascade_platform::playback_token`]); manifests
//!   are rewritten so each URI in them carries the token. Such responses are
//!   `private`: shared caches never store them.

mod breaker;
mod cors;
mod error;
mod front;
#[cfg(test)]
mod fuzz;
mod http;
mod metrics;
mod relay;
mod resolve;
mod response;
mod target;
mod tier;
mod views;
pub mod zero_copy;

use response::{chunked, from_memory, streamed, WholeBody};
#[cfg(test)]
use target::parse_version;
use target::{parse_pin, Ask, Pin, Target};

pub use crate::views::Promotion;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cascade_platform::listen::Heard;
use cascade_platform::metrics::{ComputedGauge, Registry};
use cascade_platform::playback_token::{Keyring, TokenError};
use cascade_platform::storage::tiers::Tiers;
use cascade_platform::ObjectStore;
use cascade_schemas::{
    keys, AssetId, AssetState, ObjectClass, ObjectKey, PlaybackId, RenditionName,
};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

pub use crate::error::OriginError;
pub use crate::front::{Answer, Front, FrontKey, Fronted, FRONT_TTL};
pub use cascade_platform::config::OriginConfig;

use crate::metrics::{class_index, Gauges, Metrics, CLASS_OTHER};
use crate::resolve::{AssetInfo, LiveInfo, Playable, Resolver};
use crate::tier::{Cached, Lookup, Tier};

/// `Surrogate-Key` (Fastly, nginx purge modules) and `Cache-Tag` (Cloudflare, Akamai).
static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Immutable objects: segments and init segments of a version never change.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Anything of an asset that is not `ready` (a version may still be served).
const NOT_READY: HeaderValue = HeaderValue::from_static("no-store");
/// Token-rewritten manifests: for the one player that holds the token.
const SIGNED_MANIFEST: HeaderValue = HeaderValue::from_static("private, no-store");
/// Segments of signed assets: the browser may keep them, shared caches may not.
const SIGNED_IMMUTABLE: HeaderValue =
    HeaderValue::from_static("private, max-age=31536000, immutable");

/// Low-latency MPDs: their UTCTiming is the time of the response.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
/// A segment sent as it is cut: a cut-short copy must never be kept (the
/// stored segment, served once it exists, is immutable).
const IN_PROGRESS: HeaderValue = HeaderValue::from_static("no-store");

/// Everything the origin's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct OriginState {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Resolver,
    tier: Tier,
    metrics: Arc<Metrics>,
    /// CORS for every route (built once from the allowed origins).
    cors: tower_http::cors::CorsLayer,
    keyring: Keyring,
    manifest_cache_control: HeaderValue,
    live_manifest_cache_control: HeaderValue,
    max_header_bytes: usize,
    relay: relay::RelayClient,
    front: Front,
    views: Arc<views::Views>,
    /// Views are counted (a flusher runs: [`OriginState::count_views`]).
    counting: std::sync::atomic::AtomicBool,
    /// Reads from colder tiers are noted for promotion.
    promoting: std::sync::atomic::AtomicBool,
    /// `view_flush_interval` and `view_bucket`.
    view_timing: (std::time::Duration, std::time::Duration),
    pool: Pool,
    /// `Retry-After` of plays of archived and restoring assets.
    restore_retry_after: std::time::Duration,
    /// The storage tiers' names, and media segments served from each
    /// (by where their rendition is placed, whether or not memory held them).
    segments_by_tier: Vec<(String, std::sync::atomic::AtomicU64)>,
}

impl OriginState {
    /// Builds the origin over the shared pool and object store; `keyring`
    /// verifies playback tokens (`Keyring::from_config(&config.playback)`).
    pub fn new(config: OriginConfig, keyring: Keyring, pool: Pool, store: ObjectStore) -> Self {
        Self::with_tiers(config, keyring, pool, Tiers::only_hot(store))
    }

    /// As [`Self::new`], serving each rendition from the storage tier that
    /// Postgres says holds it (`renditions.tier`).
    pub fn with_tiers(config: OriginConfig, keyring: Keyring, pool: Pool, tiers: Tiers) -> Self {
        let metrics = Arc::new(Metrics::new());
        let manifest_cache_control = HeaderValue::from_str(&format!(
            "public, max-age={}, s-maxage={}",
            config.manifest_max_age.as_secs(),
            config.manifest_s_maxage.as_secs()
        ))
        .unwrap_or(HeaderValue::from_static("public, max-age=60"));
        let live_age = config.live_manifest_max_age.as_secs().max(1);
        let live_manifest_cache_control =
            HeaderValue::from_str(&format!("public, max-age={live_age}, s-maxage={live_age}"))
                .unwrap_or(HeaderValue::from_static("public, max-age=1"));
        if keyring.is_empty() {
            tracing::info!("playback.signing_keys is empty: assets with the signed policy get 403");
        }
        let views = Arc::new(views::Views::new());
        Self {
            inner: Arc::new(Inner {
                resolver: Resolver::new(
                    &config,
                    pool.clone(),
                    tiers.all().iter().map(|t| t.name.clone()).collect(),
                    metrics.clone(),
                ),
                tier: Tier::new(
                    &config,
                    tiers.all().iter().map(|t| t.store.clone()).collect(),
                    metrics.clone(),
                ),
                cors: cors::layer(&config.cors_allowed_origins),
                keyring,
                manifest_cache_control,
                live_manifest_cache_control,
                max_header_bytes: config.max_header_bytes.as_usize(),
                relay: relay::RelayClient::new(),
                front: Front::new(
                    config.front_cache_bytes.as_usize(),
                    config.asset_ttl,
                    config.max_header_bytes.as_usize(),
                    metrics.clone(),
                    views.clone(),
                ),
                metrics,
                views,
                counting: std::sync::atomic::AtomicBool::new(false),
                promoting: std::sync::atomic::AtomicBool::new(false),
                view_timing: (config.view_flush_interval, config.view_bucket),
                pool,
                restore_retry_after: config.restore_retry_after,
                segments_by_tier: tiers
                    .all()
                    .iter()
                    .map(|t| (t.name.clone(), std::sync::atomic::AtomicU64::new(0)))
                    .collect(),
            }),
        }
    }

    /// Registers the origin's metrics into the process's registry (the
    /// gauges read the memory tier and the breaker at each scrape).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let (size, entries, breaker) = (self.clone(), self.clone(), self.clone());
        self.inner.metrics.register(
            registry,
            Gauges {
                cache_bytes: ComputedGauge::new(move || {
                    i64::try_from(size.inner.tier.weighted_size()).unwrap_or(i64::MAX)
                }),
                cache_entries: ComputedGauge::new(move || {
                    i64::try_from(entries.inner.tier.entry_count()).unwrap_or(i64::MAX)
                }),
                breaker_state: ComputedGauge::new(move || {
                    i64::from(breaker.inner.tier.breaker_state())
                }),
                shared_objects: ComputedGauge::new(|| {
                    i64::try_from(zero_copy::shared_objects()).unwrap_or(i64::MAX)
                }),
            },
        );
    }

    /// Turns the per-request metrics off (`metrics.enabled = false`) or on.
    pub fn record_request_metrics(&self, on: bool) {
        self.inner.metrics.set_recording(on);
    }

    /// This origin's metrics alone, as OpenMetrics text, with the memory
    /// tier's bookkeeping settled first (tests and benchmarks read this).
    pub async fn metrics_text(&self) -> String {
        self.inner.tier.settle().await;
        let mut registry = Registry::default();
        self.register_metrics(&mut registry);
        cascade_platform::metrics::render(&registry)
    }

    /// Follows playback changes (`assets::PLAYBACK_CHANGED_CHANNEL`, on a
    /// LISTEN connection of its own) until `cancel`: a deleted or
    /// republished asset's lookup and front answers are forgotten at once,
    /// not after `asset_ttl`. While the connection is down (and at each
    /// reconnect, when notifications may have been missed, every fresh
    /// lookup is dropped) lookups age out as usual.
    pub fn follow_changes(&self, pg: tokio_postgres::Config, cancel: CancellationToken) {
        let state = self.clone();
        cascade_platform::listen::spawn(
            pg,
            cascade_platform::assets::PLAYBACK_CHANGED_CHANNEL,
            cancel,
            move |heard| match heard {
                Heard::Connected => state.inner.resolver.forget_fresh(),
                Heard::Notification(payload) => {
                    let Ok(playback_id) = payload.parse::<PlaybackId>() else {
                        return;
                    };
                    // The lookup first: a front answer made from the old
                    // lookup after the front forgot would be kept.
                    let state = state.clone();
                    tokio::spawn(async move {
                        state.inner.resolver.forget(&playback_id).await;
                        state.inner.front.forget_playback(playback_id.as_str());
                    });
                    tracing::debug!(playback_id = %payload, "playback changed: forgotten");
                }
            },
        );
    }

    /// Writes the views counted (plays, segment fetches) to Postgres every
    /// `view_flush_interval` until `cancel`, then once more. Without it
    /// (or with an interval of 0) nothing is counted. With `promotion`
    /// (storage tiers are configured), each flush also queues moves to hot
    /// for the renditions served from a colder tier that the counts show
    /// watched again, without waiting for the policy's next run.
    pub fn count_views(&self, cancel: CancellationToken, promotion: Option<Promotion>) {
        let (every, bucket) = self.inner.view_timing;
        if every.is_zero() {
            return;
        }
        let state = self.clone();
        state
            .inner
            .counting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if promotion.is_some() {
            state
                .inner
                .promoting
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::spawn(async move {
            let pool = state.inner.pool.clone();
            state
                .inner
                .views
                .run(pool, every, bucket, promotion, cancel)
                .await;
        });
    }

    /// Media segments served so far from each storage tier (by where their
    /// rendition is placed), `hot` first: `cascade bench tiers` reads it.
    pub fn segments_served_by_tier(&self) -> Vec<(String, u64)> {
        self.inner
            .segments_by_tier
            .iter()
            .map(|(name, n)| (name.clone(), n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    /// The front cache, which the HTTP server asks before routing.
    pub fn front(&self) -> Front {
        self.inner.front.clone()
    }

    /// Reads sent to the object store so far (benchmarks print it).
    pub fn storage_reads(&self) -> u64 {
        self.inner.metrics.storage_reads()
    }
}

/// The origin's routes: playback objects under `/play/` (`cascade serve`
/// serves `/metrics` for every role).
pub fn router(state: OriginState) -> Router {
    Router::new()
        .route("/play/{*path}", get(play))
        .route("/play/", get(unknown))
        .method_not_allowed_fallback(not_allowed)
        // CORS inside the edge, so that preflights are counted too.
        .layer(state.inner.cors.clone())
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// What an asset's request is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// The published version of a `ready` asset.
    Ready,
    /// The first version while it is still being transcoded (progressive
    /// publish): its playlists grow, its segments never change.
    Growing,
    /// A published version while a replacement processes, or of an
    /// errored asset.
    NotReady,
}

/// The `Cache-Control` of a successful response:
///
/// | asset | object | Cache-Control |
/// | --- | --- | --- |
/// | public, ready | init and media segments | `public, max-age=31536000, immutable` |
/// | public, ready | manifests | `public, max-age=60, s-maxage=86400` (configurable; purge by `Surrogate-Key`) |
/// | public, growing (progressive publish) | init and media segments | `public, max-age=31536000, immutable` |
/// | public, growing | playlists, the MPD | `public, max-age=1, s-maxage=1` (`live_manifest_max_age`: they grow) |
/// | public, not ready (a version is published, a new one is processing, or it errored) | anything | `no-store` |
/// | signed | manifests (token-rewritten) | `private, no-store` |
/// | signed | segments | `private, max-age=31536000, immutable` |
///
/// Errors: `public, max-age=2` for 404s, `private, no-store` for 403s,
/// `no-store` for the rest (see [`OriginError::cache_control`]).
pub fn cache_control(
    class: ObjectClass,
    presentation: Presentation,
    signed: bool,
    manifest_public: &HeaderValue,
    manifest_growing: &HeaderValue,
) -> HeaderValue {
    let manifest = matches!(class, ObjectClass::HlsPlaylist | ObjectClass::DashManifest);
    match (signed, presentation, manifest) {
        (true, _, true) => SIGNED_MANIFEST,
        (true, _, false) => SIGNED_IMMUTABLE,
        (false, Presentation::NotReady, _) => NOT_READY,
        (false, Presentation::Ready, true) => manifest_public.clone(),
        (false, Presentation::Growing, true) => manifest_growing.clone(),
        (false, Presentation::Ready | Presentation::Growing, false) => IMMUTABLE,
    }
}

/// The request metrics label of a response.
#[derive(Debug, Clone, Copy)]
struct ClassLabel(usize);

/// Every `/play/` URL. The raw (still percent-encoded) path is split here:
/// every valid part is plain ASCII, so a part with `%` in it is refused
/// rather than decoded (`%2F` and `%2e%2e` never become path structure).
async fn play(
    State(state): State<OriginState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let ask = Ask::new(&method, headers, &uri);
    let parts: Vec<&str> = uri
        .path()
        .strip_prefix("/play/")
        .unwrap_or_default()
        .split('/')
        .collect();
    if parts.iter().any(|p| p.contains('%')) {
        return OriginError::NotFound.into_response();
    }
    match parts.as_slice() {
        [playback_id, file] => {
            serve(&state, &ask, playback_id, None, Target::top_level(file)).await
        }
        // What the top-level manifests name: media of one version (or of
        // one publish session of a live stream).
        [playback_id, pin, rendition, file] => match parse_pin(pin) {
            Some(pin) => {
                let target = Target::in_rendition(rendition, file);
                serve(&state, &ask, playback_id, Some(pin), target).await
            }
            None => OriginError::NotFound.into_response(),
        },
        // Unversioned media URLs (manifests served before versions were in
        // URLs): the published version.
        [playback_id, rendition, file] => {
            let target = Target::in_rendition(rendition, file);
            serve(&state, &ask, playback_id, None, target).await
        }
        _ => OriginError::NotFound.into_response(),
    }
}

async fn unknown() -> Response {
    OriginError::NotFound.into_response()
}

async fn not_allowed() -> Response {
    OriginError::MethodNotAllowed.into_response()
}

async fn serve(
    state: &OriginState,
    ask: &Ask,
    playback_id: &str,
    pinned: Option<Pin>,
    target: Option<Target>,
) -> Response {
    let class = target
        .as_ref()
        .map(|t| class_index(t.class()))
        .unwrap_or(CLASS_OTHER);
    let mut surrogate = None;
    let mut response =
        match serve_object(state, ask, playback_id, pinned, target, &mut surrogate).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
    if let Some(key) = surrogate {
        if let Ok(value) = HeaderValue::from_str(&key) {
            response
                .headers_mut()
                .insert(SURROGATE_KEY.clone(), value.clone());
            response.headers_mut().insert(CACHE_TAG.clone(), value);
        }
    }
    response.extensions_mut().insert(ClassLabel(class));
    response
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Checks the request's playback token when `signed`; the token to carry
/// into rewritten manifests.
fn check_token<'a>(
    inner: &Inner,
    ask: &'a Ask,
    playback_id: &PlaybackId,
    signed: bool,
) -> Result<Option<&'a str>, OriginError> {
    if !signed {
        return Ok(None);
    }
    let token = ask.token.as_deref().ok_or(OriginError::TokenRequired)?;
    inner
        .keyring
        .verify(playback_id, token, now_unix())
        .map_err(|e| match e {
            TokenError::Expired => OriginError::TokenExpired,
            TokenError::Malformed | TokenError::UnknownKey | TokenError::BadSignature => {
                OriginError::TokenInvalid
            }
        })?;
    Ok(Some(token))
}

/// The answer to a play of an archived or restoring asset; a play of an
/// archived one queues its restore (`archived -> restoring`: every origin
/// is told, so one request per asset does it).
async fn restore(inner: &Inner, asset: &AssetInfo) -> OriginError {
    if asset.state == AssetState::Archived {
        match cascade_platform::archive::request_restore(&inner.pool, asset.id).await {
            Ok(true) => {
                inner.metrics.restores_requested.inc();
                tracing::info!(asset_id = %asset.id, "archived asset played: restore queued");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(asset_id = %asset.id, error = %error, "cannot queue the restore of an archived asset");
            }
        }
    }
    OriginError::AssetRestoring {
        retry_after: inner.restore_retry_after,
    }
}

async fn serve_object(
    state: &OriginState,
    ask: &Ask,
    playback_id: &str,
    pinned: Option<Pin>,
    target: Option<Target>,
    surrogate: &mut Option<String>,
) -> Result<Response, OriginError> {
    let playback_id: PlaybackId = playback_id.parse().map_err(|_| OriginError::NotFound)?;
    let target = target.ok_or(OriginError::NotFound)?;
    let inner = &state.inner;
    let playable = inner
        .resolver
        .resolve(&playback_id)
        .await?
        .ok_or(OriginError::NotFound)?;
    let asset = match playable.as_ref() {
        Playable::Asset(asset) => asset,
        Playable::Live(live) => {
            *surrogate = Some(format!("live-{}", live.id));
            return serve_live(state, ask, &playback_id, live, pinned, target).await;
        }
    };
    *surrogate = Some(format!("asset-{}", asset.id));
    let token = check_token(inner, ask, &playback_id, asset.signed)?;
    if matches!(asset.state, AssetState::Archived | AssetState::Restoring) {
        return Err(restore(inner, asset).await);
    }
    let (published, presentation) = match (asset.published_version, asset.growing_version) {
        (Some(version), _) if asset.state == AssetState::Ready => (version, Presentation::Ready),
        (Some(version), _) => (version, Presentation::NotReady),
        (None, Some(version)) => (version, Presentation::Growing),
        (None, None) => return Err(OriginError::AssetNotReady),
    };
    // Media of the published version or an earlier one (a manifest cached
    // before a replacement still plays); never of one not published yet.
    let version = match pinned {
        Some(Pin::Version(version)) if version <= published => version,
        Some(_) => return Err(OriginError::NotFound),
        None => published,
    };
    let prefix = match (&target, pinned) {
        (Target::Master | Target::Mpd, None) => Some(format!("v{version}/")),
        _ => None,
    };
    let rewrite = http::Rewrite {
        prefix: prefix.as_deref(),
        token,
    };
    let class = target.class();
    let cache_control = cache_control(
        class,
        presentation,
        asset.signed,
        &inner.manifest_cache_control,
        &inner.live_manifest_cache_control,
    );
    let key = target.key(asset.id, version).ok_or(OriginError::NotFound)?;
    let manifest = matches!(class, ObjectClass::HlsPlaylist | ObjectClass::DashManifest);
    // A rendition's media live in the tier Postgres names; the rest in hot.
    let stored_at = target
        .rendition()
        .map_or(0, |rendition| asset.tier_of(version, rendition));
    // A growing playlist changes under the same key: kept for moments only.
    let lookup = if presentation == Presentation::Growing && manifest {
        match inner.tier.lookup_changing(&key).await {
            // A growing version's MPD (dynamic) comes with its first
            // segments; one not written (yet) is "not ready", not gone.
            Err(OriginError::NotFound) if matches!(target, Target::Mpd) => {
                return Err(OriginError::AssetNotReady)
            }
            other => other?,
        }
    } else {
        inner.tier.lookup_at(&key, stored_at).await?
    };
    let view = match &target {
        Target::Master | Target::Mpd => Some(None),
        Target::Segment(rendition, _) => Some(Some(rendition.clone())),
        _ => None,
    }
    .filter(|_| inner.counting.load(std::sync::atomic::Ordering::Relaxed))
    .map(|rendition| views::ViewKey {
        asset: asset.id,
        version,
        rendition,
    });
    if let Some(view) = &view {
        inner.views.record(view);
    }
    if matches!(target, Target::Segment(..)) {
        if let Some((_, served)) = inner.segments_by_tier.get(stored_at) {
            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if stored_at != 0 && inner.promoting.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(view) = &view {
                inner.views.record_cold_read(view);
            }
        }
    }
    match lookup {
        Lookup::Found(object) => {
            let mut response = from_memory(ask, class, &object, rewrite, cache_control)?;
            // Public (a token would be in the query, which the front never
            // keeps) and of a version: the front may reuse the answer, but
            // for a growing playlist (the CDN's second is staleness enough).
            let growing_playlist = presentation == Presentation::Growing && manifest;
            if !asset.signed && !growing_playlist {
                if let Some(body) = response.extensions_mut().remove::<WholeBody>() {
                    response.extensions_mut().insert(front::Reusable {
                        body: body.0,
                        class: class_index(class),
                        view,
                    });
                }
            }
            Ok(response)
        }
        Lookup::TooLarge => streamed(state, ask, class, &key, cache_control, stored_at).await,
    }
}

/// A live stream's object. Manifests exist only while a broadcast is under
/// way and are cached half a segment at most; segments are immutable
/// (their numbers are never reused on a stream); a missing live object is
/// never cached, since it may be about to exist.
async fn serve_live(
    state: &OriginState,
    ask: &Ask,
    playback_id: &PlaybackId,
    live: &LiveInfo,
    pinned: Option<Pin>,
    target: Target,
) -> Result<Response, OriginError> {
    let inner = &state.inner;
    let token = check_token(inner, ask, playback_id, live.signed)?;
    let class = target.class();
    let manifest = matches!(class, ObjectClass::HlsPlaylist | ObjectClass::DashManifest);
    if manifest && !live.on_air {
        return Err(OriginError::StreamIdle);
    }
    let cache_control = match (live.signed, manifest) {
        (true, true) => SIGNED_MANIFEST,
        (true, false) => SIGNED_IMMUTABLE,
        (false, true) => inner.live_manifest_cache_control.clone(),
        (false, false) => IMMUTABLE,
    };
    let rewrite = http::Rewrite {
        prefix: None,
        token,
    };
    // Low latency: what is newer than the store comes from the relay.
    let relay = live.relay.as_deref().filter(|_| live.low_latency);
    let from_relay = |path: String, query: Option<String>| async move {
        match relay {
            Some(relay) => inner.relay.get(relay, &path, query.as_deref()).await,
            None => relay::RelayAnswer::NotHere,
        }
    };
    let key = match (&target, pinned) {
        (Target::Master, None) => ObjectKey::live_master(live.id),
        (Target::Mpd, None) => ObjectKey::live_manifest(live.id),
        (Target::MediaPlaylist(r), None) => {
            let directives = relay::directives(ask.query.as_deref());
            match from_relay(
                format!("{}/{r}/{}", live.id, keys::MEDIA_PLAYLIST),
                Some(directives),
            )
            .await
            {
                relay::RelayAnswer::Found(relayed) => {
                    let mut response =
                        from_memory(ask, class, &relayed.object, rewrite, cache_control)?;
                    if let Some(cut_at) = relayed.cut_at {
                        response
                            .headers_mut()
                            .insert(relay::PART_CUT_AT.clone(), cut_at);
                    }
                    return Ok(response);
                }
                relay::RelayAnswer::BadRequest(why) => {
                    return Err(OriginError::HlsDirectiveInvalid(why))
                }
                relay::RelayAnswer::Timeout => return Err(OriginError::PartNotReady),
                relay::RelayAnswer::NotHere => ObjectKey::live_media_playlist(live.id, r),
            }
        }
        (Target::Init(r), Some(Pin::Session(n))) => ObjectKey::live_init_segment(live.id, n, r),
        (Target::Segment(r, seq), Some(Pin::Session(n))) => {
            ObjectKey::live_media_segment(live.id, n, r, *seq)
        }
        (Target::Part(r, msn, part), Some(Pin::Session(n))) => {
            // Parts live only at the edge.
            return match from_relay(format!("{}/s{n}/{r}/{msn}.{part}.m4s", live.id), None).await {
                relay::RelayAnswer::Found(relayed) => {
                    from_memory(ask, class, &relayed.object, rewrite, cache_control)
                }
                relay::RelayAnswer::Timeout => Err(OriginError::PartNotReady),
                _ => Err(OriginError::LiveNotYet),
            };
        }
        _ => return Err(OriginError::NotFound),
    };
    match inner.tier.lookup(&key).await {
        Ok(Lookup::Found(object)) if live.low_latency && matches!(target, Target::Mpd) => {
            // Low-latency DASH players set their clock from UTCTiming: it
            // says now, not when the MPD was written, and it is not cached.
            let text = http::utc_timing_now(&String::from_utf8_lossy(&object.bytes));
            let fresh = Cached {
                etag: format!("\"utc-{}\"", now_unix()),
                bytes: text.into(),
            };
            from_memory(ask, class, &fresh, rewrite, NO_CACHE)
        }
        Ok(Lookup::Found(object)) => from_memory(ask, class, &object, rewrite, cache_control),
        Ok(Lookup::TooLarge) => streamed(state, ask, class, &key, cache_control, 0).await,
        Err(OriginError::NotFound) => match (&target, pinned) {
            // Not stored yet: complete at the edge, or being cut there (sent
            // chunk by chunk as its parts come: low-latency DASH).
            (Target::Segment(r, seq), Some(Pin::Session(n))) => {
                let path = format!("{}/s{n}/{r}/{seq}.m4s", live.id);
                match relay {
                    Some(relay) => match inner.relay.stream(relay, &path).await {
                        Some(response) => Ok(chunked(ask, class, response)),
                        None => Err(OriginError::LiveNotYet),
                    },
                    None => Err(OriginError::LiveNotYet),
                }
            }
            _ => Err(OriginError::LiveNotYet),
        },
        Err(e) => Err(e),
    }
}

/// Around every origin route (and its CORS layer): the header size limit,
/// request metrics, the access log and the request id.
async fn edge(State(state): State<OriginState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // A CDN's or load balancer's request id is echoed (players send none,
    // and making one per request is work a cache hit should not do).
    let request_id = request.headers().get(REQUEST_ID).cloned();
    let path = tracing::enabled!(target: "cascade::access", tracing::Level::DEBUG)
        .then(|| request.uri().path().to_owned());
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut response = if header_bytes > state.inner.max_header_bytes {
        OriginError::HeadersTooLarge.into_response()
    } else {
        next.run(request).await
    };
    let class = response
        .extensions()
        .get::<ClassLabel>()
        .map_or(CLASS_OTHER, |c| c.0);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.inner.metrics.request(class, &method, status, elapsed);
    if let Some(path) = path {
        tracing::debug!(
            target: "cascade::access",
            request_id = request_id.as_ref().and_then(|v| v.to_str().ok()),
            method = %method,
            path = %path,
            status,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            "playback request"
        );
    }
    if let Some(id) = request_id.filter(|v| v.len() <= 128) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// The request id header a CDN or load balancer may set.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A router over a pool that never connects: only requests that are
    /// refused before the asset lookup can be answered.
    async fn offline_router() -> (Router, OriginState, tempfile::TempDir) {
        offline_router_with(OriginConfig::default()).await
    }

    async fn offline_router_with(config: OriginConfig) -> (Router, OriginState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::from_config(&cascade_platform::config::StorageConfig {
            local_root: dir.path().to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
        let pool = cascade_platform::db::pool(&cascade_platform::config::DatabaseConfig::default())
            .unwrap();
        let state = OriginState::new(config, Keyring::default(), pool, store);
        (router(state.clone()), state, dir)
    }

    /// With a list of allowed origins, only those are answered (echoed, not
    /// `*`), and every response varies by `Origin` for caches; with `*`
    /// (the default) none varies.
    #[tokio::test]
    async fn cors_answers_the_allowed_origins_only() {
        let config = OriginConfig {
            cors_allowed_origins: vec!["https://player.example".to_owned()],
            ..OriginConfig::default()
        };
        let (router, _, _dir) = offline_router_with(config).await;
        let ask = |origin: &'static str, method: Method| {
            let router = router.clone();
            async move {
                let request = Request::builder()
                    .method(method)
                    .uri("/play/abcdefghijklmnopqrstuvwx/master.m3u8x")
                    .header(header::ORIGIN, origin)
                    .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                    .body(Body::empty())
                    .unwrap();
                router.oneshot(request).await.unwrap()
            }
        };
        let allowed = ask("https://player.example", Method::GET).await;
        assert_eq!(
            allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://player.example"
        );
        assert_eq!(allowed.headers()[header::VARY], "origin");
        let other = ask("https://elsewhere.example", Method::GET).await;
        assert!(other
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
        assert_eq!(other.headers()[header::VARY], "origin");
        let preflight = ask("https://player.example", Method::OPTIONS).await;
        assert_eq!(preflight.status(), StatusCode::OK);
        assert_eq!(preflight.headers()[header::ACCESS_CONTROL_MAX_AGE], "86400");
        let (router, _, _dir) = offline_router().await;
        let any = call(&router, Method::GET, "/play/x").await;
        assert_eq!(any.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(any.headers().get(header::VARY).is_none());
        let exposed = any.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(exposed.contains("content-range") && exposed.contains("etag"));
    }

    async fn call(router: &Router, method: Method, path: &str) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ORIGIN, "https://player.example")
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn refuses_malformed_paths_before_any_lookup() {
        let (router, state, _dir) = offline_router().await;
        for path in [
            "/play/",
            "/play/x",
            "/play/../../etc/passwd",
            "/play/%2e%2e/%2e%2e/etc/passwd",
            "/play/abcdefghijklmnopqrstuvwx/%2e%2e/index.m3u8",
            "/play/abcdefghijklmnopqrstuvwx/a%2Fb/index.m3u8",
            "/play/abcdefghijklmnopqrstuvwx/720p/01.m4s",
            "/play/abcdefghijklmnopqrstuvwx/720p/1.m4s/x",
            "/play/abcdefghijklmnopqrstuvwx/source",
            "/play/ABCDEFGHIJKLMNOPQRSTUVWX/master.m3u8",
        ] {
            let response = call(&router, Method::GET, path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                cascade_schemas::mime::JSON
            );
            assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        }
        let post = call(&router, Method::POST, "/play/x/master.m3u8").await;
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let preflight = call(&router, Method::OPTIONS, "/play/x/y/1.m4s").await;
        assert_eq!(preflight.status(), StatusCode::OK);
        // Header names are case-insensitive; tower-http writes them lowercase.
        assert!(preflight.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("range"));
        let text = state.metrics_text().await;
        assert!(
            text.contains(
                "cascade_origin_requests_total{route=\"other\",method=\"GET\",status=\"404\"} 9\n"
            ) && text.contains(
                "cascade_origin_requests_total{route=\"other\",method=\"POST\",status=\"405\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("cascade_origin_asset_lookups_total 0\n"));
    }

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(parse_version("v1"), Some(1));
        assert_eq!(parse_version("v12"), Some(12));
        for bad in ["v0", "v01", "v", "1", "vx", "v-1", "V1", "v99999999999"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn targets_parse_strictly() {
        assert!(matches!(
            Target::top_level("master.m3u8"),
            Some(Target::Master)
        ));
        assert!(matches!(
            Target::top_level("manifest.mpd"),
            Some(Target::Mpd)
        ));
        assert!(Target::top_level("source").is_none());
        assert!(Target::top_level("..").is_none());
        assert!(matches!(
            Target::in_rendition("720p", "12.m4s"),
            Some(Target::Segment(_, 12))
        ));
        assert!(matches!(
            Target::in_rendition("audio", "init.mp4"),
            Some(Target::Init(_))
        ));
        for (r, f) in [
            ("720p", "012.m4s"),
            ("720p", "-1.m4s"),
            ("720p", "+1.m4s"),
            ("720p", ".m4s"),
            ("720p", "99999999999999999999999.m4s"),
            ("720p", "1.mp4"),
            ("..", "index.m3u8"),
            ("a/b", "index.m3u8"),
            ("720P", "index.m3u8"),
            ("720p", "../../x"),
        ] {
            assert!(Target::in_rendition(r, f).is_none(), "{r}/{f}");
        }
    }

    #[test]
    fn cache_control_table() {
        let m = HeaderValue::from_static("public, max-age=60, s-maxage=86400");
        let g = HeaderValue::from_static("public, max-age=1, s-maxage=1");
        let cc = |class, presentation, signed| cache_control(class, presentation, signed, &m, &g);
        use Presentation::{Growing, NotReady, Ready};
        assert_eq!(cc(ObjectClass::MediaSegment, Ready, false), IMMUTABLE);
        assert_eq!(cc(ObjectClass::InitSegment, Ready, false), IMMUTABLE);
        assert_eq!(cc(ObjectClass::HlsPlaylist, Ready, false), m);
        assert_eq!(cc(ObjectClass::HlsPlaylist, Growing, false), g);
        assert_eq!(cc(ObjectClass::MediaSegment, Growing, false), IMMUTABLE);
        assert_eq!(cc(ObjectClass::DashManifest, NotReady, false), NOT_READY);
        assert_eq!(cc(ObjectClass::MediaSegment, NotReady, false), NOT_READY);
        assert_eq!(cc(ObjectClass::HlsPlaylist, Ready, true), SIGNED_MANIFEST);
        assert_eq!(cc(ObjectClass::HlsPlaylist, Growing, true), SIGNED_MANIFEST);
        assert_eq!(cc(ObjectClass::MediaSegment, Ready, true), SIGNED_IMMUTABLE);
    }
}
