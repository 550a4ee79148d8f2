//! Webhook endpoints an environment registers through the API. Events of
//! an environment's assets go to its endpoints (and to the operator's static
//! ones from config).

use cascade_schemas::EnvironmentId;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::db::DbError;

/// Prefix of endpoint secrets, so leaked ones are recognisable.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint as stored.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookEndpoint {
    /// Id.
    pub id: uuid::Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// Event types sent; empty means all.
    pub events: Vec<String>,
    /// HMAC-SHA256 key of `Cascade-Signature`.
    #[serde(skip)]
    pub secret: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

fn from_row(r: &tokio_postgres::Row) -> WebhookEndpoint {
    WebhookEndpoint {
        id: r.get(0),
        url: r.get(1),
        events: r.get(2),
        secret: r.get(3),
        created_at: r.get(4),
    }
}

const COLUMNS: &str = "id, url, events, secret, created_at";

/// Registers an endpoint in `environment` with a fresh secret.
pub async fn create(
    client: &impl GenericClient,
    environment: EnvironmentId,
    url: &str,
    events: &[String],
) -> Result<WebhookEndpoint, DbError> {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let row = client
        .query_one(
            &format!(
                "INSERT INTO webhook_endpoints (id, environment_id, url, secret, events)
                 VALUES (gen_random_uuid(), $1, $2, $3, $4) RETURNING {COLUMNS}"
            ),
            &[&environment.as_uuid(), &url, &secret, &events],
        )
        .await?;
    Ok(from_row(&row))
}

/// Every endpoint of `environment`, oldest first.
pub async fn list(
    client: &impl GenericClient,
    environment: EnvironmentId,
) -> Result<Vec<WebhookEndpoint>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM webhook_endpoints WHERE environment_id = $1 ORDER BY created_at, id"
            ),
            &[&environment.as_uuid()],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Endpoint `id` of `environment`.
pub async fn get(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: uuid::Uuid,
) -> Result<Option<WebhookEndpoint>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND environment_id = $2"
            ),
            &[&id, &environment.as_uuid()],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Removes endpoint `id` of `environment`; `false` when there is none.
pub async fn delete(
    client: &impl GenericClient,
    environment: EnvironmentId,
    id: uuid::Uuid,
) -> Result<bool, DbError> {
    let n = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND environment_id = $2",
            &[&id, &environment.as_uuid()],
        )
        .await?;
    Ok(n == 1)
}
