//! What the ingest handlers share: clients, config and the authenticator.

use cascade_platform::config::{
    IngestConfig, LiveConfig, PlaybackConfig, TranscodeConfig, WebhooksConfig,
};
use cascade_platform::storage::reader::ObjectReader;
use cascade_platform::{ObjectStore, Queue};
use cascade_schemas::{EnvironmentId, ObjectKey};
use cascade_workers::probe::{self, ChildProber, ProbeSummary, ProbeTarget};
use cascade_workers::transcode::TranscodeError;
use deadpool_postgres::Pool;

use crate::auth::Authenticator;
use crate::limits::Limits;

/// What the handlers share.
pub struct AppState {
    /// Postgres.
    pub pool: Pool,
    /// Object store.
    pub store: ObjectStore,
    /// Job queue.
    pub queue: Queue,
    /// `[ingest]` config.
    pub config: IngestConfig,
    /// `[transcode]` config (the probe's limits).
    pub transcode: TranscodeConfig,
    /// `[playback]` config: the keys and lifetimes of minted playback
    /// tokens. No keys unless [`AppState::with_playback`] sets them.
    pub playback: PlaybackConfig,
    /// `[webhooks]` config (whether creators may register private targets).
    pub webhooks: WebhooksConfig,
    /// `[live]` config (reconnect window default, the RTMP URL).
    pub live: LiveConfig,
    /// The RTMP listener's bound address, once it listens.
    pub rtmp_bound: std::sync::OnceLock<std::net::SocketAddr>,
    /// Key lookups, their cache and the request budgets.
    pub auth: Authenticator,
    /// Body pace and size limits, and the uploads in progress.
    pub limits: Limits,
    /// Request, upload and RTMP metrics (`cascade serve` registers them).
    pub metrics: crate::metrics::IngestMetrics,
    /// Where uploads are probed: in child processes (`cascade serve`), or
    /// in this process when `None` (router tests, tools).
    pub prober: Option<ChildProber>,
}

impl AppState {
    /// State for the routes.
    pub fn new(
        pool: Pool,
        store: ObjectStore,
        queue: Queue,
        config: IngestConfig,
        transcode: TranscodeConfig,
    ) -> Self {
        Self {
            pool,
            store,
            queue,
            auth: Authenticator::new(config.key_cache_ttl),
            limits: Limits::from_config(&config),
            config,
            transcode,
            playback: PlaybackConfig::default(),
            webhooks: WebhooksConfig::default(),
            live: LiveConfig::default(),
            rtmp_bound: std::sync::OnceLock::new(),
            metrics: crate::metrics::IngestMetrics::default(),
            prober: None,
        }
    }

    /// Probes uploads in children of `prober` instead of in this process.
    pub fn with_prober(mut self, prober: ChildProber) -> Self {
        self.prober = Some(prober);
        self
    }

    /// Probes `target` where this state says: in a child, or here (on a
    /// blocking thread).
    pub(crate) async fn probe(
        &self,
        target: ProbeTarget,
    ) -> Result<Result<ProbeSummary, TranscodeError>, tokio::task::JoinError> {
        if let Some(prober) = &self.prober {
            return Ok(prober.probe(&target).await);
        }
        let config = self.transcode.clone();
        match target {
            ProbeTarget::File(path) => {
                tokio::task::spawn_blocking(move || probe::probe_file(&path, &config)).await
            }
            ProbeTarget::Stored {
                asset,
                version,
                length,
            } => {
                let reader = ObjectReader::new(
                    self.store.clone(),
                    ObjectKey::source_version(asset, version),
                    length,
                    tokio::runtime::Handle::current(),
                );
                tokio::task::spawn_blocking(move || probe::probe_reader(reader, &config)).await
            }
        }
    }

    /// The environment of the bootstrap key, the watch folder and imports
    /// (`ingest.default_environment`), resolved by the caller; otherwise it
    /// is looked up (and created) at first use.
    pub fn with_default_environment(self, environment: EnvironmentId) -> Self {
        let _ = self.auth.bootstrap_environment.set(environment);
        self
    }

    /// The `[webhooks]` config.
    pub fn with_webhooks(mut self, webhooks: WebhooksConfig) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// The `[playback]` config (signing keys, token lifetimes).
    pub fn with_playback(mut self, playback: PlaybackConfig) -> Self {
        self.playback = playback;
        self
    }

    /// The `[live]` config.
    pub fn with_live(mut self, live: LiveConfig) -> Self {
        self.live = live;
        self
    }

    /// The RTMP URL creators publish to.
    pub(crate) fn rtmp_url(&self) -> String {
        if let Some(url) = &self.live.public_rtmp_url {
            return url.clone();
        }
        let port = self
            .rtmp_bound
            .get()
            .map(|a| a.port())
            .or(self.live.rtmp_listen.map(|a| a.port()))
            .unwrap_or(1935);
        let host = self
            .config
            .public_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .filter(|host| !host.is_empty())
            .unwrap_or("localhost");
        format!("rtmp://{host}:{port}/live")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url.trim_end_matches('/'))
    }

    /// A playback URL: under `playback.public_url` (the CDN's) when set,
    /// else under the API's own public URL.
    pub(crate) fn playback_url(&self, path: &str) -> String {
        format!("{}{path}", self.playback.base_url(&self.config.public_url))
    }
}
