//! `cascade keys create|list|revoke`: API keys for the creators' API.

use std::process::ExitCode;

use cascade_platform::{api_keys, db, environments, Config};
use clap::Subcommand;

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// A name to tell keys apart.
        name: String,
        /// The environment (tenant) whose assets, uploads and webhook
        /// endpoints the key reaches; created if it does not exist.
        /// Default: `ingest.default_environment`.
        #[arg(long)]
        environment: Option<String>,
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
        KeysCommand::Create { name, environment } => {
            let environment =
                environment.unwrap_or_else(|| config.ingest.default_environment.clone());
            environments::validate_name(&environment)?;
            let client = pool.get().await?;
            let environment_id = environments::ensure(&client, &environment).await?;
            let (key, secret) = api_keys::create(&client, &name, environment_id).await?;
            println!(
                "created key {} ({}) in environment {}",
                key.id, key.name, key.environment
            );
            println!("secret (shown once): {secret}");
        }
        KeysCommand::List => {
            println!(
                "{:<36}  {:<20} {:<16} {:<12} {:<20} REVOKED",
                "ID", "NAME", "ENVIRONMENT", "PREFIX", "CREATED (UTC)"
            );
            for key in api_keys::list(&pool.get().await?).await? {
                println!(
                    "{:<36}  {:<20} {:<16} {:<12} {:<20} {}",
                    key.id,
                    key.name,
                    key.environment,
                    key.prefix,
                    key.created_at.format("%Y-%m-%d %H:%M:%S"),
                    key.revoked_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !api_keys::revoke(&pool.get().await?, id).await? {
                eprintln!("cascade: no active key {id}");
                return Ok(ExitCode::from(1));
            }
            println!("key {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
