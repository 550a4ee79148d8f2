//! The one typed configuration tree.
//!
//! Sources, later ones winning: built-in defaults, a TOML file
//! (`--config FILE` or `CASCADE_CONFIG`), then `CASCADE_*` environment
//! variables where `__` separates levels: `CASCADE_STORAGE__S3__BUCKET=media`
//! sets `storage.s3.bucket`. Environment values are read as TOML values when
//! they parse as one (`8`, `true`, `["a"]`) and as strings otherwise; quote a
//! string that looks like a number (`CASCADE_X='"123"'`). Unknown keys, in the
//! file or the environment, are errors that name the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Environment variable naming the config file.
pub const CONFIG_FILE_ENV: &str = "CASCADE_CONFIG";
const ENV_PREFIX: &str = "CASCADE_";
/// Variables with this prefix belong to the test harness, not the config.
const TEST_ENV_PREFIX: &str = "CASCADE_TEST_";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment override names no config key or has a bad shape.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key is unknown or a value has the wrong type.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Everything Cascade reads at start-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listener shared by the enabled roles (API, playback, health, metrics).
    pub http: HttpConfig,
    /// Postgres: assets, uploads and the job queue.
    pub database: DatabaseConfig,
    /// Where originals, segments and manifests live.
    pub storage: StorageConfig,
    /// Job queue timings and worker concurrency.
    pub queue: QueueConfig,
    /// The bitrate ladder, encoders and segmenting.
    pub transcode: TranscodeConfig,
    /// The creators' API and uploads.
    pub ingest: IngestConfig,
    /// Live streams: the RTMP listener, the live ladder and packaging.
    pub live: LiveConfig,
    /// Where asset events are delivered.
    pub webhooks: WebhooksConfig,
    /// The playback origin.
    pub origin: OriginConfig,
    /// The CDN in front of the origin: where its copies are purged.
    pub cdn: CdnConfig,
    /// Signed playback: the keys of playback tokens and their lifetimes
    /// (read by ingest, which mints tokens, and the origin, which checks them).
    pub playback: PlaybackConfig,
    /// Logging.
    pub log: LogConfig,
    /// Prometheus metrics (`/metrics` on the HTTP listener).
    pub metrics: MetricsConfig,
    /// Distributed traces (OpenTelemetry, exported as OTLP over HTTP).
    pub traces: TracesConfig,
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// A connection must send a request's whole header block within this
    /// (counted from when the server starts waiting for it), or it is
    /// closed; this is also how long an idle keep-alive connection is kept.
    /// Behind a load balancer that reuses connections, keep it above the
    /// balancer's idle timeout. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// On SIGTERM, how long the listener keeps serving while `/readyz`
    /// answers 503 (`draining`), so a load balancer stops sending before the
    /// listener closes; in-flight requests then finish. Set it to the
    /// balancer's readiness period times its failure threshold (Kubernetes:
    /// `periodSeconds` x `failureThreshold`). Jobs and RTMP sessions start
    /// stopping at once. Default `0s`.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
        }
    }
}

/// Postgres connection pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style URL. Default `postgres://cascade@127.0.0.1:5432/cascade`.
    pub url: Secret,
    /// Pool size per process. Default `16`.
    pub max_connections: usize,
    /// How long to wait for a connection (new or from the pool). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Apply pending migrations when `cascade serve` starts. Default `true`.
    pub migrate_on_start: bool,
    /// Longest time one statement may run on a pooled connection before
    /// Postgres cancels it (its `statement_timeout`, set when the connection
    /// opens); `0s` means no limit. Migrations run without it. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://cascade@127.0.0.1:5432/cascade"),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            migrate_on_start: true,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// Object storage. The `s3` table selects the S3 backend; without it objects
/// go to the local directory `local_root`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the local backend. Default `.data/objects`.
    pub local_root: PathBuf,
    /// Objects larger than this are uploaded in parts. Default `16MiB`.
    pub multipart_threshold: ByteSize,
    /// Size of each multipart part, and of the buffer held per part in
    /// flight. Must be at least 5 MiB for S3. Default `8MiB`.
    pub part_size: ByteSize,
    /// Parts uploaded at once per object. Memory per upload is bounded by
    /// `part_size * (upload_concurrency + 1)`. Default `4`.
    pub upload_concurrency: usize,
    /// Local backend: multipart uploads and temporary files untouched this
    /// long were abandoned by a process that died, and are removed (what
    /// S3's lifecycle rule does for S3). Default `2days`.
    #[serde(with = "humantime_serde")]
    pub local_abandoned_after: Duration,
    /// The S3 backend; absent means the local backend.
    pub s3: Option<S3Config>,
    /// Price of a GB-month in this storage (the `hot` tier), for the cost
    /// estimates of `cascade tiers status`. Default `0.023` (S3 Standard).
    pub price_per_gb_month: f64,
    /// Colder storage tiers, warmest first. The storage above is the `hot`
    /// tier: uploads, sources, manifests and new outputs land there;
    /// renditions' media are moved between tiers (`cascade assets tier`).
    /// Default: none.
    pub tiers: Vec<TierConfig>,
    /// When renditions move between the tiers by themselves.
    pub policy: TierPolicyConfig,
}

/// The tiering policy: a `tier_policy` job, queued once per `interval`
/// (whichever worker gets there first), places every published rendition
/// by how long it has not been viewed and how often it was viewed lately
/// (the origins' counts, `origin.view_flush_interval`), and queues the
/// moves. Only with `storage.tiers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierPolicyConfig {
    /// How often the policy runs; `0s`: never (moves by hand only).
    /// Default `1h`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Idle times (no segment of the rendition served) after which a
    /// rendition belongs one tier colder: the first sends it to the first
    /// of `storage.tiers`, the second to the second, and so on. Default
    /// `["30days", "90days", "365days"]`.
    #[serde(with = "humantime_serde_vec")]
    pub idle_after: Vec<Duration>,
    /// A rendition with at least this many segments served within
    /// `views_window` belongs in `hot`, however cold it was. Default `100`.
    pub promote_views: i64,
    /// The window `promote_views` is counted over. Default `7days`.
    #[serde(with = "humantime_serde")]
    pub views_window: Duration,
    /// This many of an asset's lowest video renditions, and its audio, move
    /// down one `idle_after` threshold later than the rest (they start
    /// playback and carry weak connections while an asset cools), and at the
    /// last threshold with the rest when there is no later one. Default `1`.
    pub keep_low_rungs_warmer: u32,
    /// Moves queued per run at most. Default `1000`.
    pub max_moves_per_run: u32,
    /// The archive tier: an asset none of whose renditions was viewed for
    /// this long keeps only its source (moved to `archive_source_tier`);
    /// its renditions' objects are deleted, and rebuilt from the source
    /// when it is played again (`restoring`, then `ready`). Live
    /// recordings, which have no source, are never archived. Unset: never.
    /// Default `730days`.
    #[serde(with = "humantime_serde::option")]
    pub archive_after: Option<Duration>,
    /// The tier an archived asset's source moves to. Default: the coldest
    /// of `storage.tiers` (`hot` when there is none).
    pub archive_source_tier: Option<String>,
}

impl Default for TierPolicyConfig {
    fn default() -> Self {
        let day = 24 * 3600;
        Self {
            interval: Duration::from_secs(3600),
            idle_after: vec![
                Duration::from_secs(30 * day),
                Duration::from_secs(90 * day),
                Duration::from_secs(365 * day),
            ],
            promote_views: 100,
            views_window: Duration::from_secs(7 * day),
            keep_low_rungs_warmer: 1,
            max_moves_per_run: 1000,
            archive_after: Some(Duration::from_secs(730 * day)),
            archive_source_tier: None,
        }
    }
}

/// `Vec<Duration>` as humantime strings.
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        values
            .iter()
            .map(|d| humantime_serde::re::humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                humantime_serde::re::humantime::parse_duration(text)
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// A storage tier besides `hot`: a local directory or an S3 target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Its name (`warm`, `cold`, ...): 1-32 of a-z, 0-9, `_` and `-`; not
    /// `hot` or `policy`.
    pub name: String,
    /// A local directory holding the tier. Give this or `s3`.
    #[serde(default)]
    pub local_root: Option<PathBuf>,
    /// An S3 target (its own bucket, or another store). Give this or `local_root`.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Price of a GB-month in this tier. Default `0`.
    #[serde(default)]
    pub price_per_gb_month: f64,
}

impl StorageConfig {
    /// The tier an archived asset's source moves to
    /// (`storage.policy.archive_source_tier`, else the coldest tier).
    pub fn archive_source_tier(&self) -> &str {
        match (&self.policy.archive_source_tier, self.tiers.last()) {
            (Some(tier), _) => tier,
            (None, Some(coldest)) => &coldest.name,
            (None, None) => "hot",
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            local_root: PathBuf::from(".data/objects"),
            multipart_threshold: ByteSize::mib(16),
            part_size: ByteSize::mib(8),
            upload_concurrency: 4,
            local_abandoned_after: Duration::from_secs(2 * 24 * 3600),
            s3: None,
            price_per_gb_month: 0.023,
            tiers: Vec::new(),
            policy: TierPolicyConfig::default(),
        }
    }
}

/// An S3-compatible store (MinIO, SeaweedFS, AWS S3, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`. Default: none (AWS's regional endpoint).
    pub endpoint: Option<String>,
    /// Bucket holding all of Cascade's objects. Default `cascade`.
    pub bucket: String,
    /// Region used for signing. Default `us-east-1`.
    pub region: String,
    /// Access key id. Default empty (then `AWS_ACCESS_KEY_ID` is used).
    pub access_key_id: Secret,
    /// Secret access key. Default empty (then `AWS_SECRET_ACCESS_KEY` is used).
    pub secret_access_key: Secret,
    /// Path-style addressing (`endpoint/bucket/key`), which MinIO and
    /// SeaweedFS need. Default `true`.
    pub force_path_style: bool,
    /// Create the bucket at start-up when it does not exist. Default `true`.
    pub create_bucket: bool,
    /// Attempts per request, including the first, for transient errors. Default `4`.
    pub max_attempts: u32,
    /// First retry delay; later ones back off exponentially with jitter. Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// TCP connect timeout. Default `3s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of one attempt of one request. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Bucket lifecycle rules applied at start-up.
    pub lifecycle: LifecycleConfig,
    /// Storage class of every object Cascade writes here (`STANDARD_IA`,
    /// `GLACIER_IR`, ...; a colder tier's bucket). Default: none (the
    /// store's default class).
    pub storage_class: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            bucket: "cascade".to_owned(),
            region: "us-east-1".to_owned(),
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            force_path_style: true,
            create_bucket: true,
            max_attempts: 4,
            retry_initial_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(60),
            lifecycle: LifecycleConfig::default(),
            storage_class: None,
        }
    }
}

/// Bucket lifecycle rules. A rule the store refuses is logged, never fatal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Apply the rules at start-up. Default `true`.
    pub apply: bool,
    /// Abort multipart uploads left incomplete this many days. Default `2`.
    pub abort_incomplete_multipart_days: Option<u32>,
    /// Expire objects under `tmp/` after this many days. Default `1`.
    pub expire_tmp_days: Option<u32>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            apply: true,
            abort_incomplete_multipart_days: Some(2),
            expire_tmp_days: Some(1),
        }
    }
}

/// The job queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// How long a claim lasts without a heartbeat. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often a running job renews its lease. Default `10s` (a third of the lease).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Fallback poll when no notification arrives (scheduled retries,
    /// lost notifications). Default `2s`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often a worker returns expired leases to the queue. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// First retry delay after a retryable failure; doubles per attempt. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest retry delay. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts a job gets unless its enqueuer says otherwise. Default `5`.
    pub max_attempts: i32,
    /// Jobs one worker process runs at once. Default `2`.
    pub concurrency: usize,
    /// On SIGTERM, how long running jobs may take to finish before their
    /// leases are released back to the queue. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a database outage may last without costing running jobs
    /// anything: workers keep working, retry their final writes and renew
    /// their leases when it is back, and reap no lease until the database
    /// has been reachable again for a whole lease. Longer outages lose no
    /// job either (the job is reclaimed and rerun). Default `10m`.
    #[serde(with = "humantime_serde")]
    pub outage_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(2),
            reap_interval: Duration::from_secs(5),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            max_attempts: 5,
            concurrency: 2,
            shutdown_grace: Duration::from_secs(30),
            outage_grace: Duration::from_secs(600),
        }
    }
}

/// The playback origin: memory tier, storage protection, caching headers
/// and CORS (its signing keys are in [`PlaybackConfig`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// Bytes of objects the memory tier (L1) holds. Default `256MiB`.
    pub cache_capacity: ByteSize,
    /// Objects larger than this bypass the memory tier and stream from the
    /// store on every request. Default `16MiB`.
    pub max_cached_object: ByteSize,
    /// How long the memory tier remembers that an object is missing. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// How long manifests stay in the memory tier (segments stay until
    /// evicted: they are immutable). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub manifest_ttl: Duration,
    /// How long a playback id's asset lookup (state, policy, published
    /// version) is reused before Postgres is asked again. Default `3s`.
    #[serde(with = "humantime_serde")]
    pub asset_ttl: Duration,
    /// While Postgres cannot be asked, a playback id resolved within this
    /// long is still served from the last answer (stale-if-error), so a
    /// database outage does not stop playback of what is cached or stored.
    /// Default `1h`.
    #[serde(with = "humantime_serde")]
    pub asset_stale_ttl: Duration,
    /// Time limit of one storage read (a whole object into memory). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub storage_timeout: Duration,
    /// Consecutive failed storage reads that open the circuit breaker. Default `5`.
    pub breaker_threshold: u32,
    /// How long the open breaker refuses storage reads before letting one
    /// probe through. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// `max-age` of a ready asset's manifests (players and browsers). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub manifest_max_age: Duration,
    /// `s-maxage` of a ready asset's manifests (CDNs, which purge them by
    /// `Surrogate-Key`). Default `1day`.
    #[serde(with = "humantime_serde")]
    pub manifest_s_maxage: Duration,
    /// `max-age` (and `s-maxage`) of live manifests: at most half a segment,
    /// so no CDN serves a live playlist staler than that. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub live_manifest_max_age: Duration,
    /// How long the memory tier keeps a live manifest (the absence of a live
    /// object is not kept at all: a segment about to exist must not look
    /// missing). Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub live_cache_ttl: Duration,
    /// Requests whose headers add up to more than this get 431. Default `16KiB`.
    pub max_header_bytes: ByteSize,
    /// Origins browsers may play from (CORS); `"*"` allows any. Default `["*"]`.
    pub cors_allowed_origins: Vec<String>,
    /// Bound of the front cache: finished answers to plain `GET`s of public
    /// objects, reused for up to a second before routing (the bodies are
    /// shared with the memory tier, so this is mostly an upper bound on what
    /// it keeps alive after eviction). `0` turns it off. Default `64MiB`.
    pub front_cache_bytes: ByteSize,
    /// How often the views counted in memory (plays of assets, fetches of
    /// renditions' segments; storage tiering reads them) are written to
    /// Postgres, in one statement. `0s` turns counting off. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub view_flush_interval: Duration,
    /// Views are summed per bucket of this length (whole seconds): the
    /// finest window a tiering policy can look at. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub view_bucket: Duration,
    /// `Retry-After` of the 503 that answers a play of an archived asset
    /// (its restore is queued) or of one being restored. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub restore_retry_after: Duration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            cache_capacity: ByteSize::mib(256),
            max_cached_object: ByteSize::mib(16),
            negative_ttl: Duration::from_secs(2),
            manifest_ttl: Duration::from_secs(60),
            asset_ttl: Duration::from_secs(3),
            asset_stale_ttl: Duration::from_secs(3600),
            storage_timeout: Duration::from_secs(10),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            manifest_max_age: Duration::from_secs(60),
            manifest_s_maxage: Duration::from_secs(86_400),
            live_manifest_max_age: Duration::from_secs(1),
            live_cache_ttl: Duration::from_millis(250),
            max_header_bytes: ByteSize(16 * 1024),
            cors_allowed_origins: vec!["*".to_owned()],
            front_cache_bytes: ByteSize::mib(64),
            view_flush_interval: Duration::from_secs(10),
            view_bucket: Duration::from_secs(3600),
            restore_retry_after: Duration::from_secs(10),
        }
    }
}

/// Signed playback tokens (`crate::playback_token`): the keys that sign and
/// verify them, and how long minted tokens live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybackConfig {
    /// Base URL players reach the origin at (usually the CDN's), for the
    /// playback URLs the API, `cascade tokens` and `cascade qa --asset`
    /// return. Default: none, meaning `ingest.public_url` (one listener
    /// serving both).
    pub public_url: Option<String>,
    /// HMAC-SHA256 keys of playback tokens, newest first: the first signs
    /// new tokens, every one verifies. To rotate, put a new key first and
    /// keep the old one until the tokens it signed have expired
    /// (`max_token_ttl`), then remove it. In TOML an array of `{ id, secret }`;
    /// as a string (handy in the environment) `"id:secret,id:secret"`. Ids are
    /// 1-32 of `A-Z a-z 0-9 _ -`, unique; secrets at least 16 bytes. Default:
    /// none (assets with the `signed` policy get 403, and minting answers 503).
    #[serde(deserialize_with = "signing_keys")]
    pub signing_keys: Vec<SigningKeyConfig>,
    /// Longest lifetime a minted token may have. Default `1day`.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
    /// Lifetime of a minted token when none is asked for; at most
    /// `max_token_ttl`. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub default_token_ttl: Duration,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            signing_keys: Vec::new(),
            max_token_ttl: Duration::from_secs(24 * 3600),
            default_token_ttl: Duration::from_secs(3600),
        }
    }
}

impl PlaybackConfig {
    /// The base URL of playback URLs: `public_url`, else `api_public_url`
    /// (the ingest's), without a trailing slash.
    pub fn base_url<'a>(&'a self, api_public_url: &'a str) -> &'a str {
        self.public_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or(api_public_url)
            .trim_end_matches('/')
    }
}

/// Shortest signing secret accepted, in bytes.
pub const MIN_SIGNING_SECRET_BYTES: usize = 16;

/// One playback signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// Key id, carried in every token it signs: 1-32 of `A-Z a-z 0-9 _ -`.
    pub id: crate::playback_token::KeyId,
    /// HMAC-SHA256 secret, at least 16 bytes (32 random bytes recommended).
    pub secret: Secret,
}

/// `playback.signing_keys`: an array of `{ id, secret }` tables, or the
/// string `"id:secret,id:secret"` (an empty string is no keys).
fn signing_keys<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SigningKeyConfig>, D::Error> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<SigningKeyConfig>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of { id, secret } tables or a string \"id:secret,id:secret\"")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            text.split(',')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .enumerate()
                .map(|(i, pair)| {
                    let (id, secret) = pair.split_once(':').ok_or_else(|| {
                        E::custom(format!(
                            "key {}: expected `id:secret` pairs separated by commas",
                            i + 1
                        ))
                    })?;
                    Ok(SigningKeyConfig {
                        id: id.parse().map_err(E::custom)?,
                        secret: Secret::new(secret),
                    })
                })
                .collect()
        }
    }
    deserializer.deserialize_any(Keys)
}

/// The CDN in front of the origin. When an asset is deleted or a new
/// version of it is published, a `purge_cdn` job (or the asset's purge)
/// sends `PURGE {purge_url}/play/{playback_id}/...` for each URL the CDN
/// may hold (infra/cdn/nginx.conf's purge listener).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdnConfig {
    /// Base URLs of the CDN nodes' purge listeners (`http://cdn-1:8081`).
    /// A host name is resolved at each purge and every address it names is
    /// purged, so one name for all nodes (a Kubernetes headless Service)
    /// reaches each node's cache. Default: none (no CDN purge).
    pub purge_urls: Vec<url::Url>,
    /// Timeout of one purge request. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub purge_timeout: Duration,
    /// Purge requests in flight at once, per node. Default `16`.
    pub purge_concurrency: usize,
}

impl Default for CdnConfig {
    fn default() -> Self {
        Self {
            purge_urls: Vec::new(),
            purge_timeout: Duration::from_secs(5),
            purge_concurrency: 16,
        }
    }
}

/// Webhook endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Endpoints that receive events. Default: none.
    pub endpoints: Vec<WebhookEndpoint>,
    /// Timeout of one delivery. Default `10s`.
    #[serde(with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Whether endpoints registered through the API may be on this machine
    /// or a private network (loopback, RFC 1918, link-local, ...). Off, such
    /// URLs are refused at registration and such addresses at delivery
    /// (server-side request forgery). Static `endpoints` are the operator's
    /// and always allowed. Default `false`.
    pub allow_private_targets: bool,
}

/// One webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// URL that receives POSTs.
    pub url: String,
    /// Key of the HMAC-SHA256 signature in `Cascade-Signature`.
    pub secret: Secret,
    /// Event types sent here (`asset.created`, `asset.playable`, `asset.ready`, `asset.errored`, ...); empty means all.
    #[serde(default)]
    pub events: Vec<String>,
}

/// Live streams: the RTMP listener of the ingest role, the live ladder and
/// the live packaging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// RTMP listener of the ingest role (port 0: any free port). Default
    /// `0.0.0.0:1935`.
    pub rtmp_listen: Option<SocketAddr>,
    /// The RTMP URL creators are given (OBS's "Server"). Default:
    /// `rtmp://{host of ingest.public_url}:{port of rtmp_listen}/live`.
    pub public_rtmp_url: Option<String>,
    /// This replica's name in a stream's `publisher_node`. Default: the host name.
    pub node_name: Option<String>,
    /// Video rungs of the live ladder (never above the source). Default:
    /// 720p 2.5 Mbit/s, 480p 1.2 Mbit/s, 240p 0.4 Mbit/s.
    pub ladder: Vec<RungConfig>,
    /// Target segment duration (and keyframe interval). Default `2s`.
    #[serde(with = "humantime_serde")]
    pub segment_duration: Duration,
    /// How far back the live playlists reach (the DVR window). Default `5m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// x264 preset of the live ladder. Default `veryfast`.
    pub preset: String,
    /// x264 preset a live ladder that falls behind real time switches to,
    /// its first step down (only when faster than `preset`, and never
    /// `ultrafast`, whose bitstream differs: the switch keeps the init
    /// segments players hold). Default `superfast`.
    pub degraded_preset: String,
    /// A drill: the degradation steps a live ladder goes through at given
    /// media times of each session, whatever its lag, so operators can see
    /// their players ride a dropped rung before it happens for real. A
    /// list `"6s:top_rung_dropped,14s:none"` (steps: `none`,
    /// `faster_preset`, `top_rung_dropped`, `half_frame_rate`). Default
    /// empty: steps follow the lag.
    #[serde(
        deserialize_with = "degradation_drill",
        serialize_with = "degradation_drill_text"
    )]
    pub degradation_drill: Vec<DrillStep>,
    /// B-frames (each adds a frame of delay, and their placement more).
    /// Default `0`.
    pub b_frames: u32,
    /// Frames the encoder looks ahead: each is delay before a segment can
    /// close (x264's macroblock tree needs some). Default `0`.
    pub lookahead_frames: u32,
    /// Longest part of low-latency streams (`EXT-X-PART-INF:PART-TARGET`,
    /// a CMAF chunk). Default `333ms`.
    #[serde(with = "humantime_serde")]
    pub part_duration: Duration,
    /// Where the relay listens: origins fetch the parts and low-latency
    /// playlists of the streams this replica cuts from it. Internal only
    /// (no tokens are checked there). Default `127.0.0.1:0`.
    pub relay_listen: SocketAddr,
    /// The relay URL origins are given (recorded on each stream this
    /// replica publishes). Default: `http://` and the bound address.
    pub relay_url: Option<String>,
    /// AAC bitrate of the live audio rendition, bit/s. Default `128000`.
    pub audio_bitrate: u64,
    /// Publishers this replica accepts at once; more are refused. Default `4`.
    pub max_streams: usize,
    /// Input bitrate above which a publisher is disconnected, bit/s
    /// (measured over 10 s). Default `20000000`.
    pub max_input_bitrate: u64,
    /// Largest input width; wider sources are refused. Default `1920`.
    pub max_width: u32,
    /// Largest input height. Default `1080`.
    pub max_height: u32,
    /// A connection must finish the RTMP handshake and start publishing
    /// within this. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How long a replica's hold on a stream lasts without renewal (a dead
    /// replica's streams are free again after it). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub publisher_lease: Duration,
    /// Reconnect window of new streams when the API does not say. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub default_reconnect_window: Duration,
    /// How often ended broadcasts and dead publishers are looked for. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        let rung = |name: &str, short_side: u32, bitrate: u64| RungConfig {
            name: name.to_owned(),
            short_side,
            bitrate,
        };
        Self {
            rtmp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 1935))),
            public_rtmp_url: None,
            node_name: None,
            ladder: vec![
                rung("720p", 720, 2_500_000),
                rung("480p", 480, 1_200_000),
                rung("240p", 240, 400_000),
            ],
            segment_duration: Duration::from_secs(2),
            window: Duration::from_secs(300),
            preset: "veryfast".to_owned(),
            degraded_preset: "superfast".to_owned(),
            degradation_drill: Vec::new(),
            b_frames: 0,
            lookahead_frames: 0,
            part_duration: Duration::from_millis(333),
            relay_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_url: None,
            audio_bitrate: 128_000,
            max_streams: 4,
            max_input_bitrate: 20_000_000,
            max_width: 1920,
            max_height: 1080,
            handshake_timeout: Duration::from_secs(10),
            publisher_lease: Duration::from_secs(10),
            default_reconnect_window: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(2),
        }
    }
}

impl LiveConfig {
    /// The transcode settings of the live ladder, from `base` (encoder
    /// choice, rate control, limits) with the live ladder, segment length,
    /// keyframe interval, preset and B-frames.
    pub fn transcode(&self, base: &TranscodeConfig) -> TranscodeConfig {
        TranscodeConfig {
            ladder: self.ladder.clone(),
            segment_duration: self.segment_duration,
            gop: self.segment_duration,
            preset: self.preset.clone(),
            degraded_preset: Some(self.degraded_preset.clone())
                .filter(|degraded| preset_is_faster(degraded, &self.preset)),
            b_frames: self.b_frames,
            audio_bitrate: self.audio_bitrate,
            max_frame_rate: base.max_frame_rate.min(60),
            lookahead_frames: Some(self.lookahead_frames),
            live: true,
            // Every live segment is as long as the next: no short start.
            first_segment_duration: self.segment_duration,
            ..base.clone()
        }
    }

    /// Segments in the sliding window.
    pub fn window_segments(&self) -> i64 {
        let segment = self.segment_duration.as_secs_f64().max(0.001);
        ((self.window.as_secs_f64() / segment).ceil() as i64).max(3)
    }
}

/// The creators' API and uploads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Base URL clients reach this deployment at, for the URLs the API
    /// returns (playback, uploads). Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// An API key accepted besides the keys in the database (local use;
    /// `make run` sets one). Default: none.
    pub bootstrap_key: Secret,
    /// The environment (tenant) of the bootstrap key, the watch folder and
    /// `cascade assets import`; created if missing. Rows from before
    /// environments existed are in `default`. Default `default`.
    pub default_environment: String,
    /// How long a valid API key is remembered after a database lookup, so a
    /// request costs no query; revoking a key takes effect within this.
    /// Default `5s`.
    #[serde(with = "humantime_serde")]
    pub key_cache_ttl: Duration,
    /// Requests per minute per client address that carry no valid key (no
    /// key, an unknown or a revoked one); past it they get 429 before any
    /// database query. Default `60`.
    pub failed_auth_per_minute: u32,
    /// Largest upload accepted; larger declared sizes get 413 before any
    /// byte is read. Default `20GiB`.
    pub max_upload_size: ByteSize,
    /// An upload request whose body sends nothing for this long is cut off. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Slowest an upload body may arrive, in bytes per second, averaged
    /// over each `body_rate_window` spent waiting for the client once
    /// `body_rate_grace` has passed (time the server itself is not reading,
    /// its store being slow, does not count); a slower body is cut off
    /// (408). `0` turns the check off. Default `1KiB`.
    pub body_min_rate: ByteSize,
    /// The window `body_min_rate` is averaged over (time spent waiting for
    /// the client). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub body_rate_window: Duration,
    /// How long an upload body may start slower than `body_min_rate`.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub body_rate_grace: Duration,
    /// Longest one upload request's body may take, however steadily it
    /// flows (408 past it). Larger files on slow links go by tus, a PATCH
    /// at a time. Default `6h`.
    #[serde(with = "humantime_serde")]
    pub body_deadline: Duration,
    /// A JSON request body (`POST /v1/assets`, playback tokens) must
    /// arrive whole within this (408 otherwise). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub json_body_deadline: Duration,
    /// Uploads one process receives at once (simple uploads, tus PATCHes
    /// and creations with a body); more get 429 `too_many_uploads` before
    /// their body is read. Default `64`.
    pub max_uploads: usize,
    /// Uploads one API key may send at once to one process; more get 429
    /// `too_many_uploads` before their body is read. Default `16`.
    pub max_uploads_per_key: usize,
    /// Unfinished tus uploads are deleted this long after their creation. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub upload_expiry: Duration,
    /// How often expired uploads are cleaned up. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Requests per minute per API key; more get 429 with Retry-After. Default `1200`.
    pub rate_limit_per_minute: u32,
    /// A directory whose new files are ingested as assets (then moved to
    /// `done/`, or `failed/` with a reason file). Default: none.
    pub watch_dir: Option<PathBuf>,
    /// A watched file is taken once its size and modification time stay the
    /// same this long (it has stopped growing). Default `2s`.
    #[serde(with = "humantime_serde")]
    pub watch_settle: Duration,
    /// How long a tus PATCH holds its upload without renewing (renewed while
    /// the body streams); a crashed replica's hold lapses after this. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub upload_lock: Duration,
    /// Direct uploads: one-time upload URLs for browsers.
    pub direct_uploads: DirectUploadsConfig,
    /// An upload is probed in a child process (`cascade serve` runs
    /// `cascade probe-source`), so a file that crashes or stalls the media
    /// reader takes down only that child; after this long the child is
    /// killed and the file refused (`probe_timeout`). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Address space a probe child may map (`RLIMIT_AS`); a file that needs
    /// more is refused (`unreadable_media`). `0`: no limit. Default `2GiB`.
    pub probe_memory_limit: ByteSize,
}

/// Direct uploads (`POST /v1/direct_uploads`): one-time upload URLs an API
/// key holder hands to a browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectUploadsConfig {
    /// How long a URL can start its upload when the request names no
    /// `expires_in_seconds`. At most `max_expiry`. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub default_expiry: Duration,
    /// Longest `expires_in_seconds` accepted. Default `1day`.
    #[serde(with = "humantime_serde")]
    pub max_expiry: Duration,
    /// Whether `cors_origin` may be `"*"`: then any web page that learns a
    /// URL may upload with it from a browser. Default `false` (an exact
    /// origin is required).
    pub allow_any_origin: bool,
}

impl Default for DirectUploadsConfig {
    fn default() -> Self {
        Self {
            default_expiry: Duration::from_secs(3600),
            max_expiry: Duration::from_secs(24 * 3600),
            allow_any_origin: false,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".to_owned(),
            bootstrap_key: Secret::default(),
            default_environment: "default".to_owned(),
            key_cache_ttl: Duration::from_secs(5),
            failed_auth_per_minute: 60,
            max_upload_size: ByteSize(20 << 30),
            body_timeout: Duration::from_secs(60),
            body_min_rate: ByteSize(1024),
            body_rate_window: Duration::from_secs(30),
            body_rate_grace: Duration::from_secs(30),
            body_deadline: Duration::from_secs(6 * 3600),
            json_body_deadline: Duration::from_secs(10),
            max_uploads: 64,
            max_uploads_per_key: 16,
            upload_expiry: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
            rate_limit_per_minute: 1200,
            upload_lock: Duration::from_secs(20),
            direct_uploads: DirectUploadsConfig::default(),
            watch_dir: None,
            watch_settle: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(30),
            probe_memory_limit: ByteSize(2 << 30),
        }
    }
}

/// Transcoding: the ladder, encoders and segmenting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// Video rungs. Rungs above the source are dropped; a source between two
    /// rungs becomes the top rung at its own size. Default: 2160p 8 Mbit/s,
    /// 1080p 4 Mbit/s, 720p 2 Mbit/s, 480p 1 Mbit/s, 240p 0.5 Mbit/s.
    pub ladder: Vec<RungConfig>,
    /// Target media segment duration; a multiple of `gop`. Default `4s`.
    #[serde(with = "humantime_serde")]
    pub segment_duration: Duration,
    /// Keyframe interval, forced at the same timestamps in every rung
    /// (closed GOPs, no scene-cut keyframes). Default `2s`.
    #[serde(with = "humantime_serde")]
    pub gop: Duration,
    /// The first segment's length: shorter than `segment_duration`, so the
    /// first playable segment of every rung exists sooner (time to
    /// playable). The next boundaries double from it until they meet the
    /// `segment_duration` grid (0.5, 1, 2 s, then every 4 s), so each next
    /// segment is made before the ones before it have played; keyframes
    /// are forced at these boundaries too. Equal to `segment_duration`: no
    /// short start. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub first_segment_duration: Duration,
    /// H.264 encoder: `auto` probes the hardware encoders once at worker start
    /// and falls back to `libx264`. Default `auto`.
    pub encoder: EncoderChoice,
    /// x264 preset (speed/quality trade-off). Default `veryfast`.
    pub preset: String,
    /// Rate control. Default `capped_crf`.
    pub rate_control: RateControl,
    /// CRF for `capped_crf` (lower is better quality). Default `23`.
    pub crf: u8,
    /// B-frames between reference frames. Default `2`.
    pub b_frames: u32,
    /// Frame rates above this are reduced to it. Default `60`.
    pub max_frame_rate: u32,
    /// AAC bitrate of the shared audio rendition, bit/s. Default `128000`.
    pub audio_bitrate: u64,
    /// Sources wider or taller than this are refused (coded and displayed,
    /// after the sample aspect ratio). Default `8192`.
    pub max_dimension: u32,
    /// Deinterlace interlaced sources (bwdif, field order from the stream)
    /// so the ladder does not publish combed frames. Off publishes
    /// interlaced material as it is (only for sources known to be
    /// mis-flagged). Default `true`.
    pub deinterlace: bool,
    /// Sources longer than this are refused: when the file says so at
    /// upload, and while decoding when its timestamps run past it (a file
    /// that lies about its length). Default `12h`.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// A source that decodes slower than this many seconds of media per
    /// second of work, once `min_speed_after` has passed, is refused
    /// (`decode_too_slow`): crafted media can make a decoder crawl. Even a
    /// 4K ladder on two cores runs above 0.1. `0` turns the check off.
    /// Default `0.01`.
    pub min_speed: f64,
    /// Sources with more video frames than this are refused
    /// (`too_many_frames`): a crafted stream can pack an absurd frame rate
    /// into a short duration. Default: 12 hours at 240 frames/s.
    pub max_source_frames: u64,
    /// How long a transcode runs before `min_speed` is checked. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub min_speed_after: Duration,
    /// Not used any more (sources are decoded straight from storage); still
    /// accepted so existing configuration files load.
    pub scratch_dir: Option<PathBuf>,
    /// How often progress is written to the asset. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Progressive publish: a new asset plays as soon as every rendition
    /// has stored its first segment (growing HLS playlists, `playable:
    /// true`, `asset.playable`), while the rest is still encoding. Off, an
    /// asset plays only once ready. Default `true`.
    pub progressive_publish: bool,
    /// Run each job's decoding and encoding in a child process (`cascade
    /// transcode-source`, the same binary and config), so a source that
    /// crashes a decoder or exhausts memory takes down its own job, not
    /// the worker and its other jobs. Default `true`.
    pub isolate: bool,
    /// Address-space limit (`RLIMIT_AS`) of that child; `0`: none.
    /// Default `8GiB`.
    pub child_memory_limit: ByteSize,
    /// The publish gate: before an asset turns ready, its new version is
    /// read back from storage and checked as `cascade qa` checks it
    /// (structure, alignment, timing, codecs, declared bandwidth, bit-rate
    /// caps, A/V offset). `enforce`: a failing version is not published and
    /// the asset turns errored naming the failed checks; `warn`: published,
    /// the failures recorded on the asset; `off`: not checked. Default
    /// `enforce`.
    pub qa_gate: QaGatePolicy,
    /// Chunked transcoding: a source at least this long is split, on the
    /// segment grid, into chunks that run as separate jobs on any workers
    /// (the first with the whole asset's audio), so more workers finish one
    /// long video sooner; `0s`: never split. Default `2m`.
    #[serde(with = "humantime_serde")]
    pub chunked_from: Duration,
    /// The length of those chunks, rounded up to whole segments and GOPs
    /// (a last piece under half a chunk joins the one before). Default `1m`.
    #[serde(with = "humantime_serde")]
    pub chunk_duration: Duration,
    /// What one run covers of its source (set per job: a chunk's video,
    /// with or without the audio).
    #[serde(skip)]
    pub scope: cascade_schemas::chunks::Scope,
    /// Per rung name: the share of the rung's bit rate its encoder is
    /// asked for (set per job by a corrective take after the publish gate
    /// found the rung over its cap; `cascade_schemas::jobs::Corrections`).
    /// What the rung declares and is held to stays the ladder's.
    #[serde(skip)]
    pub rate_scale: std::collections::BTreeMap<String, f64>,
    /// Frames the encoder may look ahead (`None`: the preset's). Set by
    /// [`LiveConfig::transcode`], where every frame of lookahead is delay.
    #[serde(skip)]
    pub lookahead_frames: Option<u32>,
    /// Encode for live delivery: a one-second VBV buffer (VOD's is two), so
    /// segment sizes stay close to the declared bandwidth.
    #[serde(skip)]
    pub live: bool,
    /// Cut segments into parts of at most this long (low-latency live);
    /// set per stream by the live session.
    #[serde(skip)]
    pub part_duration: Option<Duration>,
    /// Encode exactly these rungs instead of planning the ladder from the
    /// source: a live broadcast's reconnect keeps the rungs players are
    /// on, whatever the new source's size (set by the live session).
    #[serde(skip)]
    pub kept_rungs: Option<Vec<KeptRung>>,
    /// The faster x264 preset a live ladder that falls behind switches to
    /// (set by [`LiveConfig::transcode`] when it is faster than `preset`).
    #[serde(skip)]
    pub degraded_preset: Option<String>,
    /// The preset whose parameter sets x264 writes whatever `preset` is:
    /// a live rung switched to the degraded preset mid-stream keeps the
    /// SPS and PPS players hold in its init segment.
    #[serde(skip)]
    pub headers_of_preset: Option<String>,
}

/// A rung encoded as it was before (see [`TranscodeConfig::kept_rungs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRung {
    /// Rendition name.
    pub name: String,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Target bitrate, bit/s.
    pub bitrate: u64,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        let rung = |name: &str, short_side: u32, bitrate: u64| RungConfig {
            name: name.to_owned(),
            short_side,
            bitrate,
        };
        Self {
            ladder: vec![
                rung("2160p", 2160, 8_000_000),
                rung("1080p", 1080, 4_000_000),
                rung("720p", 720, 2_000_000),
                rung("480p", 480, 1_000_000),
                rung("240p", 240, 500_000),
            ],
            segment_duration: Duration::from_secs(4),
            gop: Duration::from_secs(2),
            first_segment_duration: Duration::from_millis(500),
            encoder: EncoderChoice::Auto,
            preset: "veryfast".to_owned(),
            rate_control: RateControl::CappedCrf,
            crf: 23,
            b_frames: 2,
            max_frame_rate: 60,
            audio_bitrate: 128_000,
            max_dimension: 8192,
            deinterlace: true,
            max_duration: Duration::from_secs(12 * 3600),
            min_speed: 0.01,
            max_source_frames: 12 * 3600 * 240,
            min_speed_after: Duration::from_secs(60),
            scratch_dir: None,
            progress_interval: Duration::from_secs(1),
            progressive_publish: true,
            isolate: true,
            child_memory_limit: ByteSize(8 << 30),
            qa_gate: QaGatePolicy::Enforce,
            chunked_from: Duration::from_secs(120),
            chunk_duration: Duration::from_secs(60),
            scope: cascade_schemas::chunks::Scope::WHOLE,
            rate_scale: std::collections::BTreeMap::new(),
            lookahead_frames: None,
            live: false,
            part_duration: None,
            kept_rungs: None,
            degraded_preset: None,
            headers_of_preset: None,
        }
    }
}

/// x264's presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Whether x264 preset `candidate` is faster than `than` and keeps its
/// bitstream tools (CABAC, which `ultrafast` turns off).
fn preset_is_faster(candidate: &str, than: &str) -> bool {
    let rank = |preset: &str| X264_PRESETS.iter().position(|p| *p == preset);
    match (rank(candidate), rank(than)) {
        (Some(candidate), Some(than)) => candidate > 0 && candidate < than,
        _ => false,
    }
}

/// Steps a live ladder takes down when it falls behind real time, in order
/// (each keeps the ones before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradationStep {
    /// Every rung switches to `live.degraded_preset`.
    FasterPreset,
    /// The top rung stops; its playlist marks the segments it sits out as
    /// gaps, and players move to the next rung.
    TopRungDropped,
    /// The rungs still encoding take every other frame.
    HalfFrameRate,
}

impl DegradationStep {
    /// The stable name (config, logs, the stream object).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FasterPreset => "faster_preset",
            Self::TopRungDropped => "top_rung_dropped",
            Self::HalfFrameRate => "half_frame_rate",
        }
    }
}

/// One entry of [`LiveConfig::degradation_drill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrillStep {
    /// Media time from the session's first frame.
    pub at: Duration,
    /// The step the ladder is at from then on (`None`: undegraded).
    pub step: Option<DegradationStep>,
}

fn degradation_drill_text<S: serde::Serializer>(
    drill: &[DrillStep],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = drill
        .iter()
        .map(|entry| {
            format!(
                "{}:{}",
                humantime_serde::re::humantime::format_duration(entry.at),
                entry.step.map_or("none", DegradationStep::as_str)
            )
        })
        .collect();
    serializer.serialize_str(&text.join(","))
}

/// `live.degradation_drill`: `"6s:top_rung_dropped,14s:none"`.
fn degradation_drill<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<DrillStep>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (at, step) = entry.split_once(':').ok_or_else(|| {
                serde::de::Error::custom(format!("`{entry}`: expected `time:step`"))
            })?;
            let at = humantime_serde::re::humantime::parse_duration(at.trim())
                .map_err(|e| serde::de::Error::custom(format!("`{entry}`: {e}")))?;
            let step = match step.trim() {
                "none" => None,
                "faster_preset" => Some(DegradationStep::FasterPreset),
                "top_rung_dropped" => Some(DegradationStep::TopRungDropped),
                "half_frame_rate" => Some(DegradationStep::HalfFrameRate),
                other => {
                    return Err(serde::de::Error::custom(format!(
                    "`{other}`: steps are none, faster_preset, top_rung_dropped, half_frame_rate"
                )))
                }
            };
            Ok(DrillStep { at, step })
        })
        .collect()
}

/// One rung of the video ladder (vocabulary, in `schemas`).
pub use cascade_schemas::ladder::RungConfig;

/// H.264 encoder choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderChoice {
    /// First working of NVENC, VAAPI, QSV; else libx264.
    Auto,
    /// Software x264.
    Libx264,
    /// NVIDIA NVENC.
    H264Nvenc,
    /// VA-API (Intel/AMD on Linux).
    H264Vaapi,
    /// Intel Quick Sync.
    H264Qsv,
}

/// What the publish gate does with a version that fails its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaGatePolicy {
    /// Not published: the asset turns errored, naming the failed checks.
    Enforce,
    /// Published, with the failures recorded on the asset.
    Warn,
    /// No checks.
    Off,
}

/// Video rate control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateControl {
    /// Constant quality, capped at the rung's bitrate (VBV max rate = bitrate).
    CappedCrf,
    /// Average bitrate at the rung's bitrate, peaks up to 1.5x.
    Vbr,
    /// Constant bitrate at the rung's bitrate.
    Cbr,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`. Default `auto`.
    pub format: LogFormat,
    /// tracing filter directives, e.g. `info,cascade_workers=debug`. `RUST_LOG` wins when set. Default `info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: "info".to_owned(),
        }
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` and record request metrics. Off, requests cost no
    /// metric updates (what `cascade bench origin` compares against).
    /// Default `true`.
    pub enabled: bool,
    /// How often each process reads the queue's depth from Postgres for the
    /// `cascade_queue_*` gauges (one small query, never per scrape).
    /// Default `5s`.
    #[serde(with = "humantime_serde")]
    pub queue_sample_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_sample_interval: Duration::from_secs(5),
        }
    }
}

/// Distributed traces: spans of API requests, jobs (continued from the
/// request that enqueued them), transcode rungs and webhook deliveries,
/// exported over OTLP/HTTP with JSON encoding (what the OpenTelemetry
/// Collector, Jaeger and Tempo accept on port 4318).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The collector's traces URL, e.g. `http://otel-collector:4318/v1/traces`.
    /// Default: none (tracing off: spans stay in the logs only).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Default `cascade`.
    pub service_name: String,
    /// Share of traces kept (0 to 1), decided where a trace starts and
    /// followed by its children. Default `1.0`.
    pub sample_ratio: f64,
    /// Longest wait for one export; spans of a failed export are dropped
    /// (traces never hold up the pipeline). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "cascade".to_owned(),
            sample_ratio: 1.0,
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Loads defaults, then `file` (if any), then `CASCADE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if var == CONFIG_FILE_ENV || var.starts_with(TEST_ENV_PREFIX) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &path, env_value(&raw)).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let mut message = e.inner().to_string();
                if message.contains("unknown field `signing_key`") {
                    message = format!(
                        "{}\n(playback signing keys moved to `playback.signing_keys`: docs/configuration.md)",
                        message.trim_end()
                    );
                }
                ConfigError::Invalid {
                    key: e.path().to_string(),
                    message,
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads from the process environment, with the file from `file` or `CASCADE_CONFIG`.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        Self::load(file.or(from_env.as_deref()), std::env::vars())
    }

    /// Cross-field rules serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if self.storage.part_size.0 < ByteSize::mib(5).0 {
            return Err(invalid(
                "storage.part_size",
                "must be at least 5MiB (the S3 minimum part size)",
            ));
        }
        if self.storage.upload_concurrency == 0 {
            return Err(invalid("storage.upload_concurrency", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.traces.sample_ratio) {
            return Err(invalid("traces.sample_ratio", "must be between 0 and 1"));
        }
        if let Some(endpoint) = &self.traces.otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "traces.otlp_endpoint",
                    "must be an http:// or https:// URL (OTLP over HTTP)",
                ));
            }
        }
        let mut tier_names = vec!["hot"];
        for tier in &self.storage.tiers {
            let name_ok = (1..=32).contains(&tier.name.len())
                && tier.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            let reserved = ["policy", "archive"].contains(&tier.name.as_str());
            if !name_ok || tier_names.contains(&tier.name.as_str()) || reserved {
                return Err(invalid(
                    "storage.tiers",
                    "each tier needs a unique name of 1-32 of a-z, 0-9, '_' and '-', not `hot`, \
                     `policy` or `archive` (the archive tier keeps only sources, in any tier: \
                     see `storage.policy.archive_after`)",
                ));
            }
            tier_names.push(&tier.name);
            if tier.local_root.is_some() == tier.s3.is_some() {
                return Err(invalid(
                    "storage.tiers",
                    "each tier needs exactly one of `local_root` and `s3`",
                ));
            }
        }
        if self
            .storage
            .policy
            .idle_after
            .windows(2)
            .any(|pair| pair[0] > pair[1])
        {
            return Err(invalid(
                "storage.policy.idle_after",
                "must be in increasing order (the first sends a rendition to the first of \
                 `storage.tiers`, the next to the next)",
            ));
        }
        if let Some(tier) = &self.storage.policy.archive_source_tier {
            if !tier_names.contains(&tier.as_str()) {
                return Err(invalid(
                    "storage.policy.archive_source_tier",
                    "must name `hot` or one of `storage.tiers`",
                ));
            }
        }
        for url in &self.cdn.purge_urls {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(
                    "cdn.purge_urls",
                    "each must be an http:// or https:// URL with a host",
                ));
            }
        }
        if self.cdn.purge_concurrency == 0 {
            return Err(invalid("cdn.purge_concurrency", "must be at least 1"));
        }
        if self.queue.heartbeat >= self.queue.lease {
            return Err(invalid(
                "queue.heartbeat",
                "must be shorter than queue.lease",
            ));
        }
        if self.queue.concurrency == 0 {
            return Err(invalid("queue.concurrency", "must be at least 1"));
        }
        if self.queue.max_attempts < 1 {
            return Err(invalid("queue.max_attempts", "must be at least 1"));
        }
        let t = &self.transcode;
        if t.gop.is_zero()
            || t.segment_duration < t.gop
            || t.segment_duration.as_millis() % t.gop.as_millis() != 0
        {
            return Err(invalid(
                "transcode.segment_duration",
                "must be a whole multiple of transcode.gop",
            ));
        }
        if t.first_segment_duration.as_millis() == 0
            || t.first_segment_duration > t.segment_duration
        {
            return Err(invalid(
                "transcode.first_segment_duration",
                "must be at least 1ms and at most transcode.segment_duration",
            ));
        }
        if !t.chunked_from.is_zero() && t.chunk_duration < t.segment_duration {
            return Err(invalid(
                "transcode.chunk_duration",
                "must be at least transcode.segment_duration",
            ));
        }
        if t.ladder.is_empty()
            || t.ladder
                .iter()
                .any(|r| r.short_side < 16 || r.short_side % 2 != 0 || r.bitrate == 0)
        {
            return Err(invalid(
                "transcode.ladder",
                "needs at least one rung, each with an even short_side >= 16 and a bitrate",
            ));
        }
        if let Some(r) = t
            .ladder
            .iter()
            .find(|r| cascade_schemas::RenditionName::new(r.name.clone()).is_err())
        {
            return Err(invalid(
                "transcode.ladder",
                &format!("rung name {:?}: use 1-32 of a-z, 0-9, '_' and '-'", r.name),
            ));
        }
        if !(1..=240).contains(&t.max_frame_rate) {
            return Err(invalid(
                "transcode.max_frame_rate",
                "must be between 1 and 240",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        let direct = &self.ingest.direct_uploads;
        if direct.max_expiry < Duration::from_secs(1) {
            return Err(invalid(
                "ingest.direct_uploads.max_expiry",
                "must be at least 1s",
            ));
        }
        if direct.default_expiry < Duration::from_secs(1)
            || direct.default_expiry > direct.max_expiry
        {
            return Err(invalid(
                "ingest.direct_uploads.default_expiry",
                "must be between 1s and ingest.direct_uploads.max_expiry",
            ));
        }
        if self.http.header_read_timeout.is_zero() {
            return Err(invalid("http.header_read_timeout", "must be more than 0s"));
        }
        self.validate_ingest()?;
        self.validate_live()?;
        self.validate_playback()
    }

    fn validate_live(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let l = &self.live;
        for (key, preset) in [
            ("live.preset", &l.preset),
            ("live.degraded_preset", &l.degraded_preset),
        ] {
            if !X264_PRESETS.contains(&preset.as_str()) {
                return Err(invalid(
                    key,
                    "must be an x264 preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow or placebo",
                ));
            }
        }
        if l.degradation_drill
            .windows(2)
            .any(|pair| pair[0].at >= pair[1].at)
        {
            return Err(invalid("live.degradation_drill", "times must increase"));
        }
        if l.segment_duration < Duration::from_millis(500)
            || l.segment_duration.subsec_millis() % 100 != 0
        {
            return Err(invalid(
                "live.segment_duration",
                "must be at least 500ms, in whole tenths of a second",
            ));
        }
        if l.window < l.segment_duration * 3 {
            return Err(invalid("live.window", "must hold at least 3 segments"));
        }
        if l.part_duration < Duration::from_millis(100) || l.part_duration * 2 > l.segment_duration
        {
            return Err(invalid(
                "live.part_duration",
                "must be at least 100ms and at most half of live.segment_duration",
            ));
        }
        if l.ladder.is_empty()
            || l.ladder.iter().any(|r| {
                r.short_side < 16
                    || r.short_side % 2 != 0
                    || r.bitrate == 0
                    || cascade_schemas::RenditionName::new(r.name.clone()).is_err()
                    || r.name == "audio"
            })
        {
            return Err(invalid(
                "live.ladder",
                "needs at least one rung, each named with 1-32 of a-z, 0-9, '_' and '-' (not \"audio\"), with an even short_side >= 16 and a bitrate",
            ));
        }
        if l.max_streams == 0 {
            return Err(invalid("live.max_streams", "must be at least 1"));
        }
        for (key, value) in [
            ("live.handshake_timeout", l.handshake_timeout),
            ("live.publisher_lease", l.publisher_lease),
            ("live.sweep_interval", l.sweep_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be more than 0s"));
            }
        }
        if l.publisher_lease < Duration::from_secs(2) {
            return Err(invalid("live.publisher_lease", "must be at least 2s"));
        }
        if l.default_reconnect_window > Duration::from_secs(1800) {
            return Err(invalid(
                "live.default_reconnect_window",
                "must be at most 30m",
            ));
        }
        Ok(())
    }

    fn validate_ingest(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let i = &self.ingest;
        for (key, value) in [
            ("ingest.body_timeout", i.body_timeout),
            ("ingest.body_deadline", i.body_deadline),
            ("ingest.json_body_deadline", i.json_body_deadline),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be more than 0s"));
            }
        }
        if i.body_min_rate.0 > 0 && i.body_rate_window.is_zero() {
            return Err(invalid(
                "ingest.body_rate_window",
                "must be more than 0s while ingest.body_min_rate is set",
            ));
        }
        if i.max_uploads == 0 {
            return Err(invalid("ingest.max_uploads", "must be at least 1"));
        }
        if i.max_uploads_per_key == 0 {
            return Err(invalid("ingest.max_uploads_per_key", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_playback(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
        };
        let p = &self.playback;
        for (i, key) in p.signing_keys.iter().enumerate() {
            if key.secret.expose().len() < MIN_SIGNING_SECRET_BYTES {
                return Err(invalid(
                    "playback.signing_keys",
                    format!(
                        "key {:?}: the secret must be at least {MIN_SIGNING_SECRET_BYTES} bytes",
                        key.id.as_str()
                    ),
                ));
            }
            if p.signing_keys[..i].iter().any(|k| k.id == key.id) {
                return Err(invalid(
                    "playback.signing_keys",
                    format!("key id {:?} is listed twice", key.id.as_str()),
                ));
            }
        }
        if p.max_token_ttl < Duration::from_secs(1) {
            return Err(invalid(
                "playback.max_token_ttl",
                "must be at least 1s".to_owned(),
            ));
        }
        if p.default_token_ttl < Duration::from_secs(1) || p.default_token_ttl > p.max_token_ttl {
            return Err(invalid(
                "playback.default_token_ttl",
                "must be between 1s and playback.max_token_ttl".to_owned(),
            ));
        }
        Ok(())
    }

    /// The effective config as TOML, secrets redacted (`cascade config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn env_value(raw: &str) -> toml::Value {
    // Accept any TOML value literal; anything else is a plain string.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".to_owned());
    };
    if path.iter().any(String::is_empty) {
        return Err("empty key segment (use `__` only between keys)".to_owned());
    }
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", path[..=depth].join(".")))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// A string that never appears in logs or `cascade config` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A size in bytes, written as an integer or with a unit: `8MiB`, `512KiB`,
/// `1GiB`, `10MB` (decimal units are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// The size as `usize` (saturating on 32-bit targets).
    pub fn as_usize(&self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_parse_and_validate() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert!(config.storage.s3.is_none());
        assert_eq!(config.queue.lease, Duration::from_secs(30));
        // The rendered default config parses back to the same values.
        let rendered = config.to_redacted_toml();
        let reparsed: Config = toml::from_str(&rendered).unwrap();
        assert_eq!(reparsed.storage.part_size, config.storage.part_size);
        // The resource limits, as documented.
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(30));
        assert!(config.cdn.purge_urls.is_empty());
        assert_eq!(config.cdn.purge_timeout, Duration::from_secs(5));
        assert_eq!(config.database.statement_timeout, Duration::from_secs(30));
        let ingest = &config.ingest;
        assert_eq!(ingest.body_min_rate, ByteSize(1024));
        assert_eq!(ingest.body_rate_window, Duration::from_secs(30));
        assert_eq!(ingest.body_rate_grace, Duration::from_secs(30));
        assert_eq!(ingest.body_deadline, Duration::from_secs(6 * 3600));
        assert_eq!(ingest.json_body_deadline, Duration::from_secs(10));
        assert_eq!((ingest.max_uploads, ingest.max_uploads_per_key), (64, 16));
        assert_eq!(
            reparsed.ingest.body_deadline, ingest.body_deadline,
            "{rendered}"
        );
        assert_eq!(reparsed.ingest.body_min_rate, ingest.body_min_rate);
        assert_eq!(
            reparsed.http.header_read_timeout,
            config.http.header_read_timeout
        );
        assert_eq!(
            reparsed.database.statement_timeout,
            config.database.statement_timeout
        );
    }

    #[test]
    fn a_degradation_drill_parses_renders_and_is_checked() {
        let config = Config::load(
            None,
            env(&[
                (
                    "CASCADE_LIVE__DEGRADATION_DRILL",
                    "6s:top_rung_dropped, 14s:none,20s:faster_preset",
                ),
                ("CASCADE_LIVE__PRESET", "medium"),
            ]),
        )
        .unwrap();
        let drill = &config.live.degradation_drill;
        assert_eq!(
            drill
                .iter()
                .map(|entry| (entry.at.as_secs(), entry.step))
                .collect::<Vec<_>>(),
            [
                (6, Some(DegradationStep::TopRungDropped)),
                (14, None),
                (20, Some(DegradationStep::FasterPreset))
            ]
        );
        let reparsed: Config = toml::from_str(&config.to_redacted_toml()).unwrap();
        assert_eq!(&reparsed.live.degradation_drill, drill);
        // The faster preset applies only when it is faster.
        let transcode = config.live.transcode(&config.transcode);
        assert_eq!(transcode.degraded_preset.as_deref(), Some("superfast"));
        let default = Config::load(None, Vec::new()).unwrap();
        assert!(default.live.degradation_drill.is_empty());
        let mut slower = default.live.clone();
        slower.degraded_preset = "slow".to_owned();
        assert_eq!(slower.transcode(&default.transcode).degraded_preset, None);
        slower.degraded_preset = "ultrafast".to_owned();
        assert_eq!(slower.transcode(&default.transcode).degraded_preset, None);
        for (key, value) in [
            ("CASCADE_LIVE__DEGRADATION_DRILL", "6s:fastest"),
            ("CASCADE_LIVE__DEGRADATION_DRILL", "six:none"),
            (
                "CASCADE_LIVE__DEGRADATION_DRILL",
                "8s:none,6s:faster_preset",
            ),
            ("CASCADE_LIVE__DEGRADED_PRESET", "quick"),
        ] {
            assert!(
                Config::load(None, env(&[(key, value)])).is_err(),
                "{key}={value}"
            );
        }
    }

    #[test]
    fn limits_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cascade.toml");
        std::fs::write(
            &path,
            "[http]\nheader_read_timeout = \"5s\"\n[database]\nstatement_timeout = \"0s\"\n\
             [ingest]\nbody_min_rate = \"4KiB\"\nbody_rate_window = \"10s\"\nbody_deadline = \"1h\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("CASCADE_INGEST__MAX_UPLOADS", "8"),
                ("CASCADE_INGEST__MAX_UPLOADS_PER_KEY", "2"),
                ("CASCADE_INGEST__BODY_RATE_GRACE", "2s"),
                ("CASCADE_INGEST__JSON_BODY_DEADLINE", "500ms"),
            ]),
        )
        .unwrap();
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.database.statement_timeout, Duration::ZERO);
        let ingest = &config.ingest;
        assert_eq!(ingest.body_min_rate, ByteSize(4096));
        assert_eq!(ingest.body_rate_window, Duration::from_secs(10));
        assert_eq!(ingest.body_rate_grace, Duration::from_secs(2));
        assert_eq!(ingest.body_deadline, Duration::from_secs(3600));
        assert_eq!(ingest.json_body_deadline, Duration::from_millis(500));
        assert_eq!((ingest.max_uploads, ingest.max_uploads_per_key), (8, 2));
        // A rate of 0 turns the check off, whatever the window.
        let config = Config::load(
            None,
            env(&[
                ("CASCADE_INGEST__BODY_MIN_RATE", "0"),
                ("CASCADE_INGEST__BODY_RATE_WINDOW", "0s"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ingest.body_min_rate, ByteSize(0));
    }

    #[test]
    fn limits_that_would_refuse_everything_are_rejected() {
        for (var, value) in [
            ("CASCADE_HTTP__HEADER_READ_TIMEOUT", "0s"),
            ("CASCADE_INGEST__BODY_TIMEOUT", "0s"),
            ("CASCADE_INGEST__BODY_DEADLINE", "0s"),
            ("CASCADE_INGEST__JSON_BODY_DEADLINE", "0s"),
            ("CASCADE_INGEST__BODY_RATE_WINDOW", "0s"),
            ("CASCADE_INGEST__MAX_UPLOADS", "0"),
            ("CASCADE_INGEST__MAX_UPLOADS_PER_KEY", "0"),
        ] {
            let text = Config::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            let key = var
                .trim_start_matches("CASCADE_")
                .replace("__", ".")
                .to_ascii_lowercase();
            assert!(text.contains(&key), "{var}={value}: {text}");
        }
        let text = Config::load(None, env(&[("CASCADE_INGEST__BODY_MIN_RATE", "fast")]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("ingest.body_min_rate"), "{text}");
    }

    #[test]
    fn file_then_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cascade.toml");
        std::fs::write(
            &path,
            "[queue]\nlease = \"45s\"\n[storage.s3]\nbucket = \"media\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[
                ("CASCADE_QUEUE__CONCURRENCY", "8"),
                ("CASCADE_STORAGE__S3__ENDPOINT", "http://127.0.0.1:9000"),
                ("CASCADE_STORAGE__PART_SIZE", "16MiB"),
                ("CASCADE_CONFIG", "ignored"),
                ("CASCADE_TEST_DATABASE_URL", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.queue.lease, Duration::from_secs(45));
        assert_eq!(config.queue.concurrency, 8);
        let s3 = config.storage.s3.unwrap();
        assert_eq!(s3.bucket, "media");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.storage.part_size, ByteSize::mib(16));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::load(None, env(&[("CASCADE_QUEUE__LEASSE", "5s")])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("queue.leasse") || text.contains("leasse"),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[storage.s3]\nbukket = \"x\"\n").unwrap();
        let text = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("storage.s3") && text.contains("bukket"),
            "{text}"
        );
    }

    #[test]
    fn storage_tiers_are_named_once_and_say_where_they_are() {
        let config = Config::load(
            None,
            env(&[(
                "CASCADE_STORAGE__TIERS",
                r#"[{name = "cold", local_root = "/srv/cold", price_per_gb_month = 0.004},
                    {name = "deep", s3 = {bucket = "deep"}}]"#,
            )]),
        )
        .unwrap();
        let names: Vec<_> = config
            .storage
            .tiers
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["cold", "deep"]);
        assert_eq!(config.storage.tiers[1].s3.as_ref().unwrap().bucket, "deep");
        for bad in [
            r#"[{name = "hot", local_root = "/x"}]"#,
            r#"[{name = "archive", local_root = "/x"}]"#,
            r#"[{name = "a", local_root = "/x"}, {name = "a", local_root = "/y"}]"#,
            r#"[{name = "Cold", local_root = "/x"}]"#,
            r#"[{name = "cold"}]"#,
            r#"[{name = "cold", local_root = "/x", s3 = {bucket = "b"}}]"#,
        ] {
            let text = Config::load(None, env(&[("CASCADE_STORAGE__TIERS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(text.contains("storage.tiers"), "{bad}: {text}");
        }
    }

    #[test]
    fn cdn_purge_urls_are_urls() {
        let config = Config::load(
            None,
            env(&[(
                "CASCADE_CDN__PURGE_URLS",
                r#"["http://cdn-purge:8081", "http://127.0.0.1:9001/"]"#,
            )]),
        )
        .unwrap();
        let hosts: Vec<_> = config
            .cdn
            .purge_urls
            .iter()
            .map(|u| u.host_str().unwrap().to_owned())
            .collect();
        assert_eq!(hosts, ["cdn-purge", "127.0.0.1"]);
        for bad in [
            r#"["cdn-purge:8081"]"#,
            r#"["ftp://cdn/"]"#,
            r#"["not a url"]"#,
        ] {
            let text = Config::load(None, env(&[("CASCADE_CDN__PURGE_URLS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(text.contains("cdn.purge_urls"), "{bad}: {text}");
        }
    }

    #[test]
    fn bad_values_are_rejected_with_the_key() {
        let text = Config::load(None, env(&[("CASCADE_QUEUE__LEASE", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("queue.lease"), "{text}");
        let text = Config::load(None, env(&[("CASCADE_STORAGE__PART_SIZE", "1MiB")]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("storage.part_size"), "{text}");
        let text = Config::load(
            None,
            env(&[(
                "CASCADE_STORAGE__POLICY__IDLE_AFTER",
                r#"["90days", "30days"]"#,
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("storage.policy.idle_after"), "{text}");
    }

    #[test]
    fn secrets_are_redacted() {
        let config = Config::load(
            None,
            env(&[
                ("CASCADE_DATABASE__URL", "postgres://u:hunter2@db/cascade"),
                ("CASCADE_STORAGE__S3__SECRET_ACCESS_KEY", "topsecret"),
            ]),
        )
        .unwrap();
        let rendered = config.to_redacted_toml();
        assert!(
            !rendered.contains("hunter2") && !rendered.contains("topsecret"),
            "{rendered}"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            config.database.url.expose(),
            "postgres://u:hunter2@db/cascade"
        );
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!("8MiB".parse::<ByteSize>(), Ok(ByteSize(8 << 20)));
        assert_eq!("10MB".parse::<ByteSize>(), Ok(ByteSize(10_000_000)));
        assert_eq!("123".parse::<ByteSize>(), Ok(ByteSize(123)));
        assert!("8 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::mib(8).to_string(), "8MiB");
    }

    #[test]
    fn origin_default_parses_and_round_trips() {
        let parsed: OriginConfig = toml::from_str("").unwrap();
        assert_eq!(
            parsed.cache_capacity,
            OriginConfig::default().cache_capacity
        );
        let text = toml::to_string(&OriginConfig::default()).unwrap();
        let back: OriginConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.manifest_s_maxage, Duration::from_secs(86_400));
        assert_eq!(back.cors_allowed_origins, vec!["*".to_owned()]);
    }

    #[test]
    fn origin_units_and_unknown_keys() {
        let parsed: OriginConfig =
            toml::from_str("cache_capacity = \"64MiB\"\nnegative_ttl = \"500ms\"").unwrap();
        assert_eq!(parsed.cache_capacity, ByteSize::mib(64));
        assert_eq!(parsed.negative_ttl, Duration::from_millis(500));
        let err = toml::from_str::<OriginConfig>("cache_size = 1").unwrap_err();
        assert!(err.to_string().contains("cache_size"), "{err}");
    }

    #[test]
    fn direct_upload_defaults_env_forms_and_bounds() {
        let config = Config::load(None, Vec::new()).unwrap();
        let direct = &config.ingest.direct_uploads;
        assert_eq!(direct.default_expiry, Duration::from_secs(3600));
        assert_eq!(direct.max_expiry, Duration::from_secs(86_400));
        assert!(!direct.allow_any_origin);
        let config = Config::load(
            None,
            env(&[
                ("CASCADE_INGEST__DIRECT_UPLOADS__DEFAULT_EXPIRY", "10m"),
                ("CASCADE_INGEST__DIRECT_UPLOADS__MAX_EXPIRY", "2h"),
                ("CASCADE_INGEST__DIRECT_UPLOADS__ALLOW_ANY_ORIGIN", "true"),
            ]),
        )
        .unwrap();
        let direct = &config.ingest.direct_uploads;
        assert_eq!(
            (
                direct.default_expiry,
                direct.max_expiry,
                direct.allow_any_origin
            ),
            (Duration::from_secs(600), Duration::from_secs(7200), true)
        );
        let text = Config::load(
            None,
            env(&[("CASCADE_INGEST__DIRECT_UPLOADS__DEFAULT_EXPIRY", "2days")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            text.contains("ingest.direct_uploads.default_expiry"),
            "{text}"
        );
        let text = Config::load(
            None,
            env(&[("CASCADE_INGEST__DIRECT_UPLOADS__MAX_EXPIRIES", "1h")]),
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("max_expiries"), "{text}");
    }

    fn key_ids(config: &Config) -> Vec<&str> {
        config
            .playback
            .signing_keys
            .iter()
            .map(|k| k.id.as_str())
            .collect()
    }

    #[test]
    fn playback_default_parses_and_round_trips() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert!(config.playback.signing_keys.is_empty());
        assert_eq!(config.playback.max_token_ttl, Duration::from_secs(86_400));
        assert_eq!(config.playback.default_token_ttl, Duration::from_secs(3600));
        let text = toml::to_string(&PlaybackConfig::default()).unwrap();
        let back: PlaybackConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.max_token_ttl, Duration::from_secs(86_400));
        let err = toml::from_str::<PlaybackConfig>("signing_key = \"k\"").unwrap_err();
        assert!(err.to_string().contains("signing_key"), "{err}");
    }

    #[test]
    fn playback_keys_from_toml_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cascade.toml");
        std::fs::write(
            &path,
            "[playback]\nmax_token_ttl = \"2h\"\ndefault_token_ttl = \"10m\"\nsigning_keys = [\n  { id = \"k2\", secret = \"second secret of 16+\" },\n  { id = \"k1\", secret = \"first secret of 16+\" },\n]\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(key_ids(&config), ["k2", "k1"]);
        assert_eq!(
            config.playback.signing_keys[0].secret.expose(),
            "second secret of 16+"
        );
        assert_eq!(config.playback.max_token_ttl, Duration::from_secs(7200));
        assert_eq!(config.playback.default_token_ttl, Duration::from_secs(600));
        // Secrets never show; the rendered config still parses.
        let rendered = config.to_redacted_toml();
        assert!(!rendered.contains("secret of 16+"), "{rendered}");
        assert!(rendered.contains("id = \"k2\""), "{rendered}");
        assert!(!format!("{config:?}").contains("secret of 16+"));
        let back: Config = toml::from_str(&rendered).unwrap();
        assert_eq!(key_ids(&back), ["k2", "k1"]);
        // Unknown keys inside a key table are named.
        std::fs::write(
            &path,
            "[[playback.signing_keys]]\nid = \"k1\"\nsecrett = \"x\"\n",
        )
        .unwrap();
        let text = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(text.contains("secrett"), "{text}");
    }

    #[test]
    fn playback_keys_from_the_environment() {
        // The compact form.
        let config = Config::load(
            None,
            env(&[(
                "CASCADE_PLAYBACK__SIGNING_KEYS",
                "k2:second secret of 16+, k1:first:secret:with:colons",
            )]),
        )
        .unwrap();
        assert_eq!(key_ids(&config), ["k2", "k1"]);
        assert_eq!(
            config.playback.signing_keys[1].secret.expose(),
            "first:secret:with:colons"
        );
        assert!(!config.to_redacted_toml().contains("second secret"));
        // A TOML array, as any variable may be.
        let config = Config::load(
            None,
            env(&[
                (
                    "CASCADE_PLAYBACK__SIGNING_KEYS",
                    r#"[{ id = "k3", secret = "a,secret,with,commas" }]"#,
                ),
                ("CASCADE_PLAYBACK__MAX_TOKEN_TTL", "30m"),
                ("CASCADE_PLAYBACK__DEFAULT_TOKEN_TTL", "5m"),
            ]),
        )
        .unwrap();
        assert_eq!(key_ids(&config), ["k3"]);
        assert_eq!(
            config.playback.signing_keys[0].secret.expose(),
            "a,secret,with,commas"
        );
        assert_eq!(config.playback.max_token_ttl, Duration::from_secs(1800));
        // An empty string is no keys.
        let config = Config::load(None, env(&[("CASCADE_PLAYBACK__SIGNING_KEYS", "")])).unwrap();
        assert!(config.playback.signing_keys.is_empty());
    }

    #[test]
    fn playback_bad_keys_and_ttls_are_named() {
        for (var, value, needle) in [
            ("CASCADE_PLAYBACK__SIGNING_KEYS", "k1", "id:secret"),
            (
                "CASCADE_PLAYBACK__SIGNING_KEYS",
                "k.1:long enough secret",
                "k.1",
            ),
            ("CASCADE_PLAYBACK__SIGNING_KEYS", "k1:short", "16 bytes"),
            (
                "CASCADE_PLAYBACK__SIGNING_KEYS",
                "k1:long enough secret,k1:another long secret",
                "twice",
            ),
            ("CASCADE_PLAYBACK__MAX_TOKEN_TTL", "0s", "max_token_ttl"),
            (
                "CASCADE_PLAYBACK__DEFAULT_TOKEN_TTL",
                "2days",
                "default_token_ttl",
            ),
        ] {
            let text = Config::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(text.contains("playback"), "{var}={value}: {text}");
            assert!(text.contains(needle), "{var}={value}: {text}");
        }
        // The old single key points at its replacement.
        let text = Config::load(None, env(&[("CASCADE_ORIGIN__SIGNING_KEY", "k")]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("playback.signing_keys"), "{text}");
    }
}
