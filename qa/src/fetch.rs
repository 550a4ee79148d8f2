//! Fetches manifests and segments over HTTP the way a player does: plain GETs
//! of URLs resolved against the manifest that names them. The publish gate
//! reads the same way from the object store, before anything is served:
//! `cascade-store:///KEY` URLs name stored objects.

use std::time::Duration;

use bytes::Bytes;
use cascade_platform::storage::StorageError;
use cascade_platform::ObjectStore;
use cascade_schemas::ObjectKey;
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

/// The URL scheme of stored objects (`cascade-store:///assets/ID/v1/master.m3u8`).
pub const STORE_SCHEME: &str = "cascade-store";

#[derive(Clone)]
pub struct Fetcher {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Http(reqwest::Client),
    Store(ObjectStore),
}

impl Fetcher {
    /// Reads `cascade-store:` URLs from `store`.
    pub fn store(store: ObjectStore) -> Self {
        Self {
            source: Source::Store(store),
        }
    }

    /// The `cascade-store:` URL of a stored object.
    pub fn store_url(key: &ObjectKey) -> Result<Url, String> {
        Url::parse(&format!("{STORE_SCHEME}:///{}", key.as_str()))
            .map_err(|e| format!("{}: {e}", key.as_str()))
    }

    async fn get_stored(store: &ObjectStore, url: &Url) -> Fetched {
        let failed = |status: u16, error: String| Fetched {
            status,
            body: Bytes::new(),
            error: Some(error),
        };
        if url.scheme() != STORE_SCHEME {
            return failed(0, format!("{url}: not a stored object"));
        }
        let key = ObjectKey::from_stored(url.path().trim_start_matches('/').to_owned());
        match store.get(&key, None).await {
            Ok(body) => match body.collect().await {
                Ok(bytes) => Fetched {
                    status: 200,
                    body: bytes,
                    error: None,
                },
                Err(error) => failed(200, format!("reading {}: {error}", key.as_str())),
            },
            Err(StorageError::NotFound { .. }) => {
                failed(404, format!("{} is not stored", key.as_str()))
            }
            Err(error) => failed(0, format!("reading {}: {error}", key.as_str())),
        }
    }

    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("cascade-qa/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            source: Source::Http(client),
        })
    }

    pub async fn get(&self, url: &Url) -> Fetched {
        let client = match &self.source {
            Source::Http(client) => client,
            Source::Store(store) => return Self::get_stored(store, url).await,
        };
        let response = match client.get(url.clone()).send().await {
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

    /// GETs every URL, a few at a time, each result as it is ready, in
    /// input order: the caller holds only the few in flight.
    pub fn get_each(&self, urls: &[Url]) -> futures::stream::BoxStream<'static, Fetched> {
        // Owned futures: a stream of futures borrowing `self` and the URLs
        // is not `Send` for every lifetime, which the publish gate needs.
        let requests: Vec<_> = urls
            .iter()
            .cloned()
            .map(|url| {
                let fetcher = self.clone();
                async move { fetcher.get(&url).await }
            })
            .collect();
        stream::iter(requests).buffered(PARALLEL_REQUESTS).boxed()
    }

    /// GETs every URL, a few at a time, results in input order.
    pub async fn get_all(&self, urls: &[Url]) -> Vec<Fetched> {
        self.get_each(urls).collect().await
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
