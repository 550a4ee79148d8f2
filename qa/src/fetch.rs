//! Fetches manifests and segments over HTTP the way a player does: plain GETs
//! of URLs resolved against the manifest that names them.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use reqwest::Url;

/// Concurrent segment requests per rendition: enough to hide latency, few
/// enough not to look like a load test to a CDN.
const PARALLEL_REQUESTS: usize = 8;

/// The outcome of one GET.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// HTTP status; 0 when no response arrived.
    pub status: u16,
    pub body: Bytes,
    /// Transport error, or the status line of a non-2xx response.
    pub error: Option<String>,
}

impl Fetched {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("cascade-qa/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { client })
    }

    pub async fn get(&self, url: &Url) -> Fetched {
        let response = match self.client.get(url.clone()).send().await {
            Ok(response) => response,
            Err(error) => {
                return Fetched {
                    status: 0,
                    body: Bytes::new(),
                    error: Some(describe(&error)),
                }
            }
        };
        let status = response.status();
        match response.bytes().await {
            Ok(body) if status.is_success() => Fetched {
                status: status.as_u16(),
                body,
                error: None,
            },
            Ok(body) => Fetched {
                status: status.as_u16(),
                body,
                error: Some(format!("HTTP {status}")),
            },
            Err(error) => Fetched {
                status: status.as_u16(),
                body: Bytes::new(),
                error: Some(format!("reading the body: {}", describe(&error))),
            },
        }
    }

    /// GETs every URL, a few at a time, results in input order.
    pub async fn get_all(&self, urls: &[Url]) -> Vec<Fetched> {
        stream::iter(urls.iter().map(|url| self.get(url)))
            .buffered(PARALLEL_REQUESTS)
            .collect()
            .await
    }
}

fn describe(error: &reqwest::Error) -> String {
    // reqwest's Display omits the cause ("error sending request"); the chain
    // says what actually happened (connection refused, timed out...).
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves `reference` against `base` (RFC 3986), as players do.
pub fn resolve(base: &Url, reference: &str) -> Result<Url, String> {
    base.join(reference.trim())
        .map_err(|e| format!("cannot resolve {reference:?} against {base}: {e}"))
}
