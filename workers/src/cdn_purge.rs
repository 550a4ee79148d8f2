//! Purging the CDN's copies of an asset's URLs, and `purge_cdn` jobs.
//!
//! A CDN keeps manifests for a day and segments for a year (the origin's
//! `Cache-Control`), so a deleted asset, or the old version of a
//! republished one, would go on playing from it. The CDN nodes' purge
//! listeners (`cdn.purge_urls`; infra/cdn/nginx.conf's, Debian's
//! ngx_cache_purge) take `PURGE /play/...` and drop that URL's cached copy:
//! 200 when one was cached, 404 when none was. A purge names every URL the
//! origin may have served for the objects concerned (the object listing
//! mapped through `cascade_schemas::playback`), to every address of every
//! purge host, so each node of a CDN behind one name is reached.
//!
//! `purge_cdn` jobs are queued when another version of an asset is
//! published (`cascade_platform::assets::publish`): the top-level manifests
//! and the unversioned media URLs of the replaced version change meaning;
//! and when a version is archived (`cascade_platform::archive`): every URL
//! of it.
//! A deleted asset's CDN copies are purged by its `purge_asset` job
//! ([`crate::purge`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use cascade_platform::config::CdnConfig;
use cascade_platform::storage::tiers::Tiers;
use cascade_schemas::playback::{self, ServedAs};
use cascade_schemas::{AssetId, ObjectKey, PlaybackId};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use reqwest::{Method, StatusCode, Url};

use crate::runner::{JobContext, JobError, JobHandler};

/// Why a purge did not reach every node.
#[derive(Debug, thiserror::Error)]
pub enum CdnPurgeError {
    /// A purge host did not resolve.
    #[error("cannot resolve CDN purge host {host}: {message}")]
    Resolve {
        /// The host of a `cdn.purge_urls` entry.
        host: String,
        /// The resolver's message.
        message: String,
    },
    /// A node failed a purge request or answered something else than 200 or 404.
    #[error("CDN node {node}: purging {path}: {message}")]
    Request {
        /// The node's purge address.
        node: String,
        /// The URL path being purged.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// What a purge did, summed over nodes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Nodes reached.
    pub nodes: usize,
    /// Cached copies removed.
    pub removed: usize,
    /// URLs a node had no copy of.
    pub not_cached: usize,
}

/// Sends purge requests to the CDN nodes of `cdn.purge_urls`. Cheap to clone.
#[derive(Clone)]
pub struct CdnPurger {
    client: reqwest::Client,
    urls: Vec<Url>,
    concurrency: usize,
}

/// One node's purge listener: where to connect, and the Host to name.
struct Node {
    base: Url,
    host: Option<String>,
}

impl CdnPurger {
    /// A purger for `config`; with no `purge_urls`, purging does nothing.
    pub fn new(config: &CdnConfig) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(config.purge_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            urls: config.purge_urls.clone(),
            concurrency: config.purge_concurrency.max(1),
        })
    }

    /// Whether any CDN node is configured.
    pub fn is_configured(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Purges `paths` (`/play/...`) from every node.
    pub async fn purge(&self, paths: &BTreeSet<String>) -> Result<Purged, CdnPurgeError> {
        let mut total = Purged::default();
        if paths.is_empty() {
            return Ok(total);
        }
        for node in self.nodes().await? {
            // Owned futures: borrowed ones would not be `Send` for every
            // lifetime the job's boxed future needs.
            let node = std::sync::Arc::new(node);
            let results: Vec<Result<StatusCode, CdnPurgeError>> =
                futures::stream::iter(paths.iter().cloned())
                    .map(|path| purge_one(self.client.clone(), node.clone(), path))
                    .buffer_unordered(self.concurrency)
                    .collect()
                    .await;
            total.nodes += 1;
            for result in results {
                match result? {
                    StatusCode::NOT_FOUND => total.not_cached += 1,
                    _ => total.removed += 1,
                }
            }
        }
        Ok(total)
    }

    /// Every address of every purge URL. A plain-HTTP URL naming a host is
    /// expanded to each address the name resolves to (one per CDN node);
    /// HTTPS URLs are used as they are (the certificate names the host).
    async fn nodes(&self) -> Result<Vec<Node>, CdnPurgeError> {
        let mut nodes = Vec::new();
        for url in &self.urls {
            let host = url.host_str().unwrap_or_default().to_owned();
            let is_name = url.domain().is_some();
            if url.scheme() != "http" || !is_name {
                nodes.push(Node {
                    base: url.clone(),
                    host: None,
                });
                continue;
            }
            let port = url.port_or_known_default().unwrap_or(80);
            let addresses: BTreeSet<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| CdnPurgeError::Resolve {
                    host: host.clone(),
                    message: e.to_string(),
                })?
                .collect();
            for address in addresses {
                let mut base = url.clone();
                // An IP address is always a valid host for an http URL.
                if base.set_ip_host(address.ip()).is_ok() {
                    nodes.push(Node {
                        base,
                        host: Some(host.clone()),
                    });
                }
            }
        }
        Ok(nodes)
    }
}

/// Purges one URL path from one node: 200 (removed) or 404 (not cached).
async fn purge_one(
    client: reqwest::Client,
    node: std::sync::Arc<Node>,
    path: String,
) -> Result<StatusCode, CdnPurgeError> {
    let failed = |message: String| CdnPurgeError::Request {
        node: node.base.to_string(),
        path: path.clone(),
        message,
    };
    let mut url = node.base.clone();
    url.set_path(&format!("{}{path}", node.base.path().trim_end_matches('/')));
    let method = Method::from_bytes(b"PURGE").map_err(|e| failed(e.to_string()))?;
    let mut request = client.request(method, url);
    if let Some(host) = &node.host {
        request = request.header(reqwest::header::HOST, host);
    }
    let response = request.send().await.map_err(|e| failed(e.to_string()))?;
    match response.status() {
        status @ (StatusCode::OK | StatusCode::NOT_FOUND) => Ok(status),
        status => Err(failed(format!("answered {status}"))),
    }
}

/// Which of an asset's URLs a purge names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Every URL (a deleted asset): the top-level manifests and every media
    /// URL, versioned and unversioned.
    Everything,
    /// What changed meaning when another version was published than the
    /// one whose keys are given: the top-level manifests and that version's
    /// unversioned media URLs (its versioned URLs still name the same
    /// bytes and stay cached).
    Replaced,
}

/// The URL paths of `which` for asset `asset`'s stored `keys`, as played
/// under `playback_id`.
pub fn paths(
    which: Purge,
    playback_id: &PlaybackId,
    asset: AssetId,
    keys: impl IntoIterator<Item = ObjectKey>,
) -> BTreeSet<String> {
    let mut paths: BTreeSet<String> = playback::manifest_paths(playback_id).into();
    for key in keys {
        match (playback::served_as(playback_id, asset, &key), which) {
            (Some(ServedAs::Manifest(path)), _) => {
                paths.insert(path);
            }
            (
                Some(ServedAs::Media {
                    versioned,
                    unversioned,
                }),
                Purge::Everything,
            ) => {
                paths.insert(versioned);
                paths.insert(unversioned);
            }
            (Some(ServedAs::Media { unversioned, .. }), Purge::Replaced) => {
                paths.insert(unversioned);
            }
            (None, _) => {}
        }
    }
    paths
}

pub use cascade_schemas::jobs::PurgeCdnJob;

/// Handler for [`cascade_schemas::job_kind::PURGE_CDN`].
#[derive(Clone)]
pub struct PurgeCdnHandler {
    tiers: Tiers,
    purger: CdnPurger,
}

impl PurgeCdnHandler {
    /// Lists objects in every tier of `tiers`, purges through `purger`.
    pub fn new(tiers: Tiers, purger: CdnPurger) -> Self {
        Self { tiers, purger }
    }

    async fn purge(&self, job: PurgeCdnJob) -> Result<(), JobError> {
        if !self.purger.is_configured() {
            return Ok(());
        }
        let prefix = ObjectKey::version_prefix(job.asset_id, job.replaced_version);
        let keys = self
            .tiers
            .keys_everywhere(&prefix)
            .await
            .map_err(|e| JobError::Retryable(format!("the replaced version: {e}")))?;
        let which = if job.everything {
            Purge::Everything
        } else {
            Purge::Replaced
        };
        let paths = paths(which, &job.playback_id, job.asset_id, keys);
        let purged = self
            .purger
            .purge(&paths)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        tracing::info!(
            asset_id = %job.asset_id,
            replaced_version = job.replaced_version,
            urls = paths.len(),
            nodes = purged.nodes,
            removed = purged.removed,
            not_cached = purged.not_cached,
            everything = job.everything,
            "CDN purged of a republished or archived version's URLs"
        );
        Ok(())
    }
}

impl JobHandler for PurgeCdnHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move {
            let job: PurgeCdnJob = serde_json::from_value(ctx.payload.clone())
                .map_err(|e| JobError::Permanent(format!("invalid purge_cdn payload: {e}")))?;
            handler.purge(job).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_schemas::RenditionName;

    #[test]
    fn a_deleted_asset_purges_every_url_and_a_republished_one_only_what_changed() {
        let asset = AssetId::new();
        let pid: PlaybackId = "abcdefghijklmnopqrstuvwx".parse().unwrap();
        let r = RenditionName::new("360p").unwrap();
        let keys = || {
            vec![
                ObjectKey::source(asset),
                ObjectKey::hls_master(asset, 1),
                ObjectKey::dash_manifest(asset, 1),
                ObjectKey::media_playlist(asset, 1, &r),
                ObjectKey::init_segment(asset, 1, &r),
                ObjectKey::media_segment(asset, 1, &r, 0),
            ]
        };
        let p = |s: &str| format!("/play/{pid}/{s}");
        let all: Vec<String> = paths(Purge::Everything, &pid, asset, keys())
            .into_iter()
            .collect();
        let mut expected: Vec<String> = [
            "master.m3u8",
            "manifest.mpd",
            "v1/360p/index.m3u8",
            "v1/360p/init.mp4",
            "v1/360p/0.m4s",
            "360p/index.m3u8",
            "360p/init.mp4",
            "360p/0.m4s",
        ]
        .map(p)
        .into();
        expected.sort();
        assert_eq!(all, expected);
        let changed: Vec<String> = paths(Purge::Replaced, &pid, asset, keys())
            .into_iter()
            .collect();
        let mut expected: Vec<String> = [
            "master.m3u8",
            "manifest.mpd",
            "360p/index.m3u8",
            "360p/init.mp4",
            "360p/0.m4s",
        ]
        .map(p)
        .into();
        expected.sort();
        assert_eq!(changed, expected);
    }
}
