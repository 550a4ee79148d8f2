//! Environments: the tenants that API keys, assets, uploads and webhook
//! endpoints belong to. Every lookup the creators' API makes names one.

use cascade_schemas::EnvironmentId;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::db::DbError;

/// Why an environment name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment names are 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit")]
pub struct InvalidEnvironmentName;

/// Checks a name against what the database accepts, so a bad one is a
/// clear error rather than a constraint violation.
pub fn validate_name(name: &str) -> Result<(), InvalidEnvironmentName> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(InvalidEnvironmentName)
    }
}

/// An environment as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// Id.
    pub id: EnvironmentId,
    /// Unique name (`default`, `staging`, a customer's name).
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// The environment named `name`, created if it does not exist yet (safe
/// from many processes at once).
pub async fn ensure(client: &impl GenericClient, name: &str) -> Result<EnvironmentId, DbError> {
    validate_name(name).map_err(|e| DbError::Build(e.to_string()))?;
    let row = client
        .query_one(
            "WITH created AS (
                 INSERT INTO environments (id, name) VALUES (gen_random_uuid(), $1)
                 ON CONFLICT (name) DO NOTHING RETURNING id)
             SELECT id FROM created UNION ALL SELECT id FROM environments WHERE name = $1 LIMIT 1",
            &[&name],
        )
        .await?;
    Ok(EnvironmentId::from(row.get::<_, uuid::Uuid>(0)))
}

/// Every environment, by name.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Environment>, DbError> {
    let rows = client
        .query(
            "SELECT id, name, created_at FROM environments ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Environment {
            id: EnvironmentId::from(r.get::<_, uuid::Uuid>(0)),
            name: r.get(1),
            created_at: r.get(2),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_database_rule() {
        for good in ["default", "staging", "a", "cust-42_eu", "0prod"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Prod", "-x", "_x", "a b", "é", long.as_str()] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
