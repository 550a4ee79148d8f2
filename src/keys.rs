//! `cascade keys create|list|revoke`: API keys for the creators' API.

use std::process::ExitCode;

use cascade_ingest::auth;
use cascade_platform::{db, Config};
use clap::Subcommand;

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// A name to tell keys apart.
        name: String,
    },
    /// Every key (never the secrets).
    List,
    /// Revoke a key: requests with it get 401 from now on.
    Revoke {
        /// Key id.
        id: uuid::Uuid,
    },
}

/// Runs one subcommand; exit 1 when the key does not exist.
pub async fn run(command: KeysCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let pool = db::pool(&config.database)?;
    db::migrate(&pool).await?;
    match command {
        KeysCommand::Create { name } => {
            let (key, secret) = auth::create_key(&pool, &name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created key {} ({})", key.id, key.name);
            println!("secret (shown once): {secret}");
        }
        KeysCommand::List => {
            println!(
                "{:<36}  {:<20} {:<12} {:<20} REVOKED",
                "ID", "NAME", "PREFIX", "CREATED (UTC)"
            );
            for key in auth::list_keys(&pool)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                println!(
                    "{:<36}  {:<20} {:<12} {:<20} {}",
                    key.id,
                    key.name,
                    key.prefix,
                    key.created_at.format("%Y-%m-%d %H:%M:%S"),
                    key.revoked_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !auth::revoke_key(&pool, id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                eprintln!("cascade: no active key {id}");
                return Ok(ExitCode::from(1));
            }
            println!("key {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
