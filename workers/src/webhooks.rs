//! The `webhook` job: delivers one asset event to every configured endpoint
//! that subscribes to it, as a JSON POST signed with HMAC-SHA256.
//!
//! `Cascade-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! lets receivers check both origin and freshness (reject old `t` to stop
//! replays). Each (event, endpoint) delivery is recorded in
//! `webhook_deliveries`; endpoints that acknowledged (2xx) are skipped when
//! the job is retried for the ones that did not.

use std::sync::Arc;
use std::time::Duration;

use cascade_platform::config::{WebhookEndpoint, WebhooksConfig};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::runner::{JobContext, JobError, JobHandler};

/// Handler for [`cascade_schemas::job_kind::WEBHOOK`].
#[derive(Clone)]
pub struct WebhookHandler {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: WebhooksConfig,
    client: reqwest::Client,
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
        let client = reqwest::Client::builder()
            .timeout(config.timeout.unwrap_or(Duration::from_secs(10)))
            .user_agent("cascade-webhooks/1")
            .build()
            .map_err(|e| format!("building the webhook HTTP client: {e}"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                client,
            }),
        })
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
        let mut failures = Vec::new();
        for endpoint in self
            .config
            .endpoints
            .iter()
            .filter(|e| e.events.is_empty() || e.events.contains(&event_type))
        {
            if self.delivered(event_id, endpoint).await? {
                continue;
            }
            let outcome = self.post(endpoint, &event_type, event_id, &body).await;
            let (status, error) = match &outcome {
                Ok(status) if (200..300).contains(status) => (Some(*status), None),
                Ok(status) => (Some(*status), Some(format!("HTTP {status}"))),
                Err(e) => (None, Some(e.clone())),
            };
            self.record(
                event_id,
                endpoint,
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

    async fn post(
        &self,
        endpoint: &WebhookEndpoint,
        event_type: &str,
        event_id: uuid::Uuid,
        body: &[u8],
    ) -> Result<u16, String> {
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("cascade-event", event_type)
            .header("cascade-event-id", event_id.to_string())
            .header(
                "cascade-signature",
                signature(endpoint.secret.expose().as_bytes(), timestamp, body),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        Ok(response.status().as_u16())
    }

    async fn delivered(
        &self,
        event_id: uuid::Uuid,
        endpoint: &WebhookEndpoint,
    ) -> Result<bool, JobError> {
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
        endpoint: &WebhookEndpoint,
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
