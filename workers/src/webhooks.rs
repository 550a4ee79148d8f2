//! The `webhook` job: delivers one asset event to every endpoint that
//! subscribes to it, as a JSON POST signed with HMAC-SHA256: the operator's
//! static endpoints (config) and the endpoints the asset's environment
//! registered through the API. Requests to the latter go only to public
//! addresses (unless `webhooks.allow_private_targets`): their names are
//! resolved by a resolver that drops loopback, private and link-local
//! addresses, so a name that resolves there (DNS rebinding included) is
//! never reached; redirects are never followed.
//!
//! `Cascade-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! lets receivers check both origin and freshness (reject old `t` to stop
//! replays). Each (event, endpoint) delivery is recorded in
//! `webhook_deliveries`; endpoints that acknowledged (2xx) are skipped when
//! the job is retried for the ones that did not.

use std::sync::Arc;
use std::time::Duration;

use cascade_platform::config::WebhooksConfig;
use cascade_platform::{outbound, webhook_endpoints};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tracing::Instrument;

use crate::runner::{JobContext, JobError, JobHandler};

/// Handler for [`cascade_schemas::job_kind::WEBHOOK`].
#[derive(Clone)]
pub struct WebhookHandler {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: WebhooksConfig,
    /// For the operator's endpoints.
    client: reqwest::Client,
    /// For creators' endpoints: public addresses only.
    guarded: reqwest::Client,
    metrics: crate::metrics::WorkerMetrics,
}

/// Where one delivery goes.
struct Target {
    url: String,
    secret: String,
    /// Registered by a creator: public addresses only.
    guarded: bool,
}

/// Resolves names like the system does, then keeps only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| outbound::is_public(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // HMAC takes keys of any length.
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

impl WebhookHandler {
    /// A handler delivering to `config.endpoints`.
    pub fn new(pool: Pool, config: WebhooksConfig) -> Result<Self, String> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.timeout.unwrap_or(Duration::from_secs(10)))
                .user_agent("cascade-webhooks/1")
                .redirect(reqwest::redirect::Policy::none())
        };
        let client = builder()
            .build()
            .map_err(|e| format!("building the webhook HTTP client: {e}"))?;
        let guarded = if config.allow_private_targets {
            client.clone()
        } else {
            builder()
                .dns_resolver(PublicOnly)
                .build()
                .map_err(|e| format!("building the webhook HTTP client: {e}"))?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                client,
                guarded,
                metrics: crate::metrics::WorkerMetrics::default(),
            }),
        })
    }

    /// Records delivery metrics into `metrics` (shared with the runner).
    pub fn with_metrics(self, metrics: crate::metrics::WorkerMetrics) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                pool: inner.pool.clone(),
                config: inner.config.clone(),
                client: inner.client.clone(),
                guarded: inner.guarded.clone(),
                metrics,
            }),
        }
    }
}

impl JobHandler for WebhookHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let inner = self.inner.clone();
        async move { inner.deliver(ctx).await }.boxed()
    }
}

impl Inner {
    async fn deliver(&self, ctx: JobContext) -> Result<(), JobError> {
        let event = &ctx.payload;
        let event_id: uuid::Uuid = event
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| JobError::Permanent("webhook event without an id".to_owned()))?;
        let event_type = event
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let asset_id: Option<uuid::Uuid> = event
            .pointer("/data/asset_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok());
        let body = serde_json::to_vec(event)
            .map_err(|e| JobError::Permanent(format!("encoding the event: {e}")))?;
        let environment: Option<uuid::Uuid> = event
            .pointer("/data/environment_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok());
        let mut failures = Vec::new();
        for endpoint in self.targets(environment, &event_type).await? {
            if self.delivered(event_id, &endpoint).await? {
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = self
                .post(&endpoint, &event_type, event_id, &body)
                .instrument(tracing::info_span!("webhook.post", event_type = %event_type))
                .await;
            self.metrics
                .delivery(outcome.as_ref().ok().copied(), started.elapsed());
            let (status, error) = match &outcome {
                Ok(status) if (200..300).contains(status) => (Some(*status), None),
                Ok(status) => (Some(*status), Some(format!("HTTP {status}"))),
                Err(e) => (None, Some(e.clone())),
            };
            self.record(
                event_id,
                &endpoint,
                &event_type,
                asset_id,
                status,
                error.as_deref(),
            )
            .await?;
            if let Some(error) = error {
                failures.push(format!("{}: {error}", endpoint.url));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(JobError::Retryable(format!(
                "webhook delivery failed: {}",
                failures.join("; ")
            )))
        }
    }

    /// The endpoints subscribed to `event_type`: the static ones, and those
    /// of the event's environment.
    async fn targets(
        &self,
        environment: Option<uuid::Uuid>,
        event_type: &str,
    ) -> Result<Vec<Target>, JobError> {
        let wants = |events: &[String]| events.is_empty() || events.iter().any(|e| e == event_type);
        let mut targets: Vec<Target> = self
            .config
            .endpoints
            .iter()
            .filter(|e| wants(&e.events))
            .map(|e| Target {
                url: e.url.clone(),
                secret: e.secret.expose().to_owned(),
                guarded: false,
            })
            .collect();
        if let Some(environment) = environment {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            let registered = webhook_endpoints::list(&client, environment.into())
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            targets.extend(
                registered
                    .into_iter()
                    .filter(|e| wants(&e.events))
                    .map(|e| Target {
                        url: e.url,
                        secret: e.secret,
                        guarded: true,
                    }),
            );
        }
        Ok(targets)
    }

    async fn post(
        &self,
        endpoint: &Target,
        event_type: &str,
        event_id: uuid::Uuid,
        body: &[u8],
    ) -> Result<u16, String> {
        let client = if endpoint.guarded {
            // Literal addresses never reach the resolver: checked here.
            outbound::check_url(&endpoint.url, self.config.allow_private_targets)
                .map_err(|e| e.to_string())?;
            &self.guarded
        } else {
            &self.client
        };
        let timestamp = chrono::Utc::now().timestamp();
        let response = client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("cascade-event", event_type)
            .header("cascade-event-id", event_id.to_string())
            .header(
                "cascade-signature",
                signature(endpoint.secret.as_bytes(), timestamp, body),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        Ok(response.status().as_u16())
    }

    async fn delivered(&self, event_id: uuid::Uuid, endpoint: &Target) -> Result<bool, JobError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        let row = client
            .query_opt(
                "SELECT delivered_at IS NOT NULL FROM webhook_deliveries WHERE event_id = $1 AND endpoint = $2",
                &[&event_id, &endpoint.url],
            )
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    async fn record(
        &self,
        event_id: uuid::Uuid,
        endpoint: &Target,
        event_type: &str,
        asset_id: Option<uuid::Uuid>,
        status: Option<u16>,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        let status = status.map(i32::from);
        client
            .execute(
                "INSERT INTO webhook_deliveries (event_id, endpoint, event_type, asset_id, attempts, last_status, last_error, delivered_at)
                 VALUES ($1, $2, $3, $4, 1, $5, $6, CASE WHEN $6::text IS NULL THEN now() END)
                 ON CONFLICT (event_id, endpoint) DO UPDATE SET
                     attempts = webhook_deliveries.attempts + 1, last_status = $5, last_error = $6,
                     delivered_at = CASE WHEN $6::text IS NULL THEN now() END, updated_at = now()",
                &[&event_id, &endpoint.url, &event_type, &asset_id, &status, &error],
            )
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = signature(b"secret", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(b"secret", 1_700_000_001, b"{}"));
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{}"));
        assert_ne!(a, signature(b"secret", 1_700_000_000, b"{ }"));
    }
}
