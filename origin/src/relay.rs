//! The origin's side of low-latency live: playlists and parts of a stream
//! fetched from the relay of the replica cutting it (`cascade_ingest::relay`),
//! which holds blocking requests until their part exists. The relay is
//! asked over keep-alive connections; when it cannot answer (the stream
//! moved or ended, the replica is gone), the origin serves what the object
//! store holds instead.
//!
//! Identical requests are collapsed: concurrent players asking for the same
//! part or the same blocking reload share one relay request, and the answer
//! is kept briefly (parts and segments, immutable, for ten seconds; a
//! playlist for a quarter of a second), so the relay sees about one request
//! per object however many players and CDN nodes ask.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::tier::Cached;

/// The header naming when the newest part of a relayed playlist was cut.
pub(crate) static PART_CUT_AT: axum::http::HeaderName =
    axum::http::HeaderName::from_static("cascade-part-cut-at");

/// An object the relay sent.
#[derive(Debug, Clone)]
pub(crate) struct Relayed {
    /// Its bytes.
    pub(crate) object: Cached,
    /// `cascade-part-cut-at`, passed on to clients.
    pub(crate) cut_at: Option<axum::http::HeaderValue>,
}

/// What the relay said.
#[derive(Debug, Clone)]
pub(crate) enum RelayAnswer {
    /// The object.
    Found(Relayed),
    /// The request is malformed or too far ahead (400).
    BadRequest(String),
    /// The part did not come in time (503).
    Timeout,
    /// The relay does not have it, or cannot be reached.
    NotHere,
}

pub(crate) struct RelayClient {
    http: reqwest::Client,
    /// Parts and segments by URL.
    media: moka::future::Cache<String, Relayed>,
    /// Playlists by URL (with their delivery directives).
    playlists: moka::future::Cache<String, Relayed>,
}

impl RelayClient {
    pub(crate) fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            // Longer than any request the relay holds (three target durations).
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self {
            http,
            media: moka::future::Cache::builder()
                .max_capacity(4096)
                .time_to_live(Duration::from_secs(10))
                .build(),
            playlists: moka::future::Cache::builder()
                .max_capacity(4096)
                .time_to_live(Duration::from_millis(250))
                .build(),
        }
    }

    /// `GET {relay}/relay/{path}`, with `query` when given; collapsed with
    /// identical requests in flight, and answered from the last answer
    /// while it is fresh.
    pub(crate) async fn get(&self, relay: &str, path: &str, query: Option<&str>) -> RelayAnswer {
        let mut url = format!("{}/relay/{path}", relay.trim_end_matches('/'));
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        let cache = if path.ends_with(".m3u8") {
            &self.playlists
        } else {
            &self.media
        };
        let fetched = cache
            .try_get_with(url.clone(), async {
                match self.fetch(&url).await {
                    RelayAnswer::Found(object) => Ok(object),
                    other => Err(other),
                }
            })
            .await;
        match fetched {
            Ok(object) => RelayAnswer::Found(object),
            Err(answer) => (*answer).clone(),
        }
    }

    /// `GET {relay}/relay/{path}` as a stream (a segment sent part by part
    /// as it is cut); `None` unless the relay answers 200.
    pub(crate) async fn stream(&self, relay: &str, path: &str) -> Option<reqwest::Response> {
        let url = format!("{}/relay/{path}", relay.trim_end_matches('/'));
        let response = self.http.get(&url).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(response)
    }

    async fn fetch(&self, url: &str) -> RelayAnswer {
        let response = match self.http.get(url).send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(error = %e, url, "live relay unreachable");
                return RelayAnswer::NotHere;
            }
        };
        let status = response.status();
        let cut_at = response.headers().get(&PART_CUT_AT).cloned();
        let Ok(bytes) = response.bytes().await else {
            return RelayAnswer::NotHere;
        };
        match status {
            StatusCode::OK => RelayAnswer::Found(Relayed {
                object: Cached {
                    etag: etag(&bytes),
                    bytes,
                },
                cut_at,
            }),
            StatusCode::BAD_REQUEST => {
                RelayAnswer::BadRequest(String::from_utf8_lossy(&bytes).into_owned())
            }
            StatusCode::SERVICE_UNAVAILABLE => RelayAnswer::Timeout,
            _ => RelayAnswer::NotHere,
        }
    }
}

/// The LL-HLS delivery directives of a query (`_HLS_msn`, `_HLS_part`,
/// `_HLS_skip`), passed on as they came; everything else (the token,
/// cache busters) stays here.
pub(crate) fn directives(query: Option<&str>) -> String {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            matches!(key, "_HLS_msn" | "_HLS_part" | "_HLS_skip")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn etag(bytes: &Bytes) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("\"{:016x}-{}\"", hasher.finish(), bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delivery_directives_reach_the_relay() {
        assert_eq!(
            directives(Some("token=abc&_HLS_msn=4&x=1&_HLS_part=2&_HLS_skip=YES")),
            "_HLS_msn=4&_HLS_part=2&_HLS_skip=YES"
        );
        assert_eq!(directives(None), "");
        assert_eq!(directives(Some("_HLS_msnx=1")), "");
    }
}
