//! `cascade tokens sign`: a signed playback token for an asset, minted like
//! `POST /v1/assets/{id}/playback_tokens` does, without the HTTP API.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cascade_ingest::playback_tokens::signed_playback_urls;
use cascade_platform::playback_token::{self, MintError};
use cascade_platform::{assets, db, Config};
use cascade_schemas::AssetId;
use clap::Subcommand;

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Mint a playback token for a signed asset with the first of
    /// `playback.signing_keys`; prints it with its key id, expiry and the
    /// signed HLS and DASH URLs.
    Sign {
        /// Asset id.
        #[arg(value_name = "ASSET_ID")]
        id: AssetId,
        /// Lifetime, at most `playback.max_token_ttl` (default `playback.default_token_ttl`).
        #[arg(long, value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
        ttl: Option<Duration>,
    },
}

/// Runs one subcommand; exit 1 when the asset is missing or needs no token.
pub async fn run(command: TokensCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Sign { id, ttl } => {
            // Checked before the database is asked.
            let ttl = playback_token::token_ttl(&config.playback, ttl).map_err(explain)?;
            let pool = db::pool(&config.database)?;
            let Some(asset) = assets::get(&pool, id)
                .await
                .with_context(|| format!("looking up asset {id}"))?
            else {
                eprintln!("cascade: asset {id} not found");
                return Ok(ExitCode::from(1));
            };
            if asset.playback_policy != cascade_schemas::PlaybackPolicy::Signed {
                eprintln!(
                    "cascade: asset {id} has the {} playback policy: its URLs need no token",
                    asset.playback_policy
                );
                return Ok(ExitCode::from(1));
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let minted = playback_token::mint(&config.playback, &asset.playback_id, ttl, now)
                .map_err(explain)?;
            let urls = signed_playback_urls(
                config.playback.base_url(&config.ingest.public_url),
                &asset.playback_id,
                &minted.token,
            );
            println!("token       {}", minted.token);
            println!("key id      {}", minted.key_id);
            println!(
                "expires at  {}",
                minted
                    .expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            println!("hls         {}", urls.hls);
            println!("dash        {}", urls.dash);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn explain(error: MintError) -> anyhow::Error {
    match error {
        MintError::NoSigningKey => anyhow::anyhow!(
            "no playback signing key: set playback.signing_keys (docs/configuration.md)"
        ),
        MintError::InvalidTtl { max } => anyhow::anyhow!(
            "--ttl must be between 1s and playback.max_token_ttl ({})",
            humantime::format_duration(max)
        ),
    }
}
