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
    #[error("database error: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build database pool: {0}")]
    Build(String),
}

/// The server's message when there is one (tokio-postgres's own text is
/// only "db error"), so logs say what went wrong.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

impl DbError {
    /// Whether trying again later may succeed (connection trouble, not bad SQL).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            // No SQLSTATE: the connection broke. Classes 08 (connection
            // exception) and 57 (operator intervention: shutdown, restart,
            // a terminated backend) are outages, not bad SQL.
            Self::Query(e) => {
                e.is_closed()
                    || e.code().is_none_or(|code| {
                        let code = code.code();
                        code.starts_with("08") || code.starts_with("57")
                    })
            }
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
    // Set at connection start-up (the `options` startup parameter), so every
    // statement on every pooled connection has it without a round trip; any
    // options already in the URL are kept.
    let timeout = format!(
        "-c statement_timeout={}",
        config.statement_timeout.as_millis()
    );
    let options = match pg.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {timeout}"),
        _ => timeout,
    };
    pg.options(options);
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
    // Waiting for another process's migrations, and a migration itself, may
    // take longer than `database.statement_timeout`: none applies here.
    client.batch_execute("SET statement_timeout = 0").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = apply_pending(&mut client, MIGRATIONS).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    // Back to the connection's own value (the startup option) for its next user.
    let reset = client.batch_execute("RESET statement_timeout").await;
    let applied = result?;
    unlocked?;
    reset?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    fn config(url: &str, timeout: Duration) -> DatabaseConfig {
        DatabaseConfig {
            url: Secret::new(url),
            statement_timeout: timeout,
            ..DatabaseConfig::default()
        }
    }

    #[test]
    fn connections_start_with_the_statement_timeout() {
        let pg = pg_config(&config("postgres://u@h/db", Duration::from_secs(30))).unwrap();
        assert_eq!(pg.get_options(), Some("-c statement_timeout=30000"));
        // 0 is Postgres's "no limit".
        let pg = pg_config(&config("postgres://u@h/db", Duration::ZERO)).unwrap();
        assert_eq!(pg.get_options(), Some("-c statement_timeout=0"));
        // Options of the URL are kept; the configured timeout comes last, so it wins.
        let pg = pg_config(&config(
            "postgres://u@h/db?options=-c%20search_path%3Dmedia",
            Duration::from_millis(1500),
        ))
        .unwrap();
        assert_eq!(
            pg.get_options(),
            Some("-c search_path=media -c statement_timeout=1500")
        );
    }
}
