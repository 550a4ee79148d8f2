//! The Postgres pool and the migration runner.

use std::str::FromStr;

use cascade_schemas::migrations::{Migration, MIGRATIONS};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;

/// Advisory lock key serialising migrations across processes ("cascade" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0063_6173_6361_6465;

/// Database errors, classified for callers.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The configured URL does not parse.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// No connection could be had from the pool in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build database pool: {0}")]
    Build(String),
}

impl DbError {
    /// Whether trying again later may succeed (connection trouble, not bad SQL).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Query(e) => e.is_closed() || e.code().is_none(),
            Self::InvalidUrl(_) | Self::Build(_) => false,
        }
    }
}

/// Parses the configured URL into a tokio-postgres config.
pub fn pg_config(config: &DatabaseConfig) -> Result<tokio_postgres::Config, DbError> {
    let mut pg = tokio_postgres::Config::from_str(config.url.expose())
        .map_err(|e| DbError::InvalidUrl(e.to_string()))?;
    pg.connect_timeout(config.connect_timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("cascade");
    }
    Ok(pg)
}

/// Builds the connection pool. Connections are opened lazily.
pub fn pool(config: &DatabaseConfig) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        pg_config(config)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.max_connections)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// Applies every pending migration and returns the versions applied.
///
/// Safe when several processes start at once: a session advisory lock lets
/// one apply while the others wait, then find nothing left to do.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, DbError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = apply_pending(&mut client, MIGRATIONS).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply_pending(
    client: &mut deadpool_postgres::Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, DbError> {
    // Checked first rather than CREATE ... IF NOT EXISTS, which logs a
    // NOTICE on every start.
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE schema_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
            )
            .await?;
    }
    let rows = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?;
    let done: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for migration in migrations.iter().filter(|m| !done.contains(&m.version)) {
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Checks that a connection can be had and answers (`/readyz`).
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
