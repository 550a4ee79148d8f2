//! The origin's side of low-latency live: playlists and parts of a stream
//! fetched from the relay of the replica cutting it (`cascade_ingest::relay`),
//! which holds blocking requests until their part exists. The relay is
//! asked over keep-alive connections; when it cannot answer (the stream
//! moved or ended, the replica is gone), the origin serves what the object
//! store holds instead.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::tier::Cached;

/// What the relay said.
#[derive(Debug)]
pub(crate) enum RelayAnswer {
    /// The object.
    Found(Cached),
    /// The request is malformed or too far ahead (400).
    BadRequest(String),
    /// The part did not come in time (503).
    Timeout,
    /// The relay does not have it, or cannot be reached.
    NotHere,
}

pub(crate) struct RelayClient {
    http: reqwest::Client,
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
        Self { http }
    }

    /// `GET {relay}/relay/{path}`, with `query` when given.
    pub(crate) async fn get(&self, relay: &str, path: &str, query: Option<&str>) -> RelayAnswer {
        let mut url = format!("{}/relay/{path}", relay.trim_end_matches('/'));
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        let response = match self.http.get(&url).send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(error = %e, url, "live relay unreachable");
                return RelayAnswer::NotHere;
            }
        };
        let status = response.status();
        let Ok(bytes) = response.bytes().await else {
            return RelayAnswer::NotHere;
        };
        match status {
            StatusCode::OK => RelayAnswer::Found(Cached {
                etag: etag(&bytes),
                bytes,
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
