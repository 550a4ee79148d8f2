//! `cascade live list|show|create|reset-key`: live streams for operators,
//! without the HTTP API.

use std::process::ExitCode;

use cascade_platform::live_streams::{self, LatencyMode, NewLiveStream};
use cascade_platform::{db, environments, Config};
use cascade_schemas::{LiveStreamId, PlaybackPolicy};
use clap::Subcommand;

/// Live stream subcommands.
#[derive(Debug, Subcommand)]
pub enum LiveCommand {
    /// Every live stream (all environments), newest first.
    List,
    /// One live stream, as JSON.
    Show {
        /// Live stream id.
        id: LiveStreamId,
    },
    /// Create a live stream; its stream key is printed once.
    Create {
        /// The environment it belongs to (created if missing). Default:
        /// `ingest.default_environment`.
        #[arg(long)]
        environment: Option<String>,
        /// Playback needs a signed token.
        #[arg(long)]
        signed: bool,
        /// Do not record broadcasts as assets.
        #[arg(long)]
        no_recording: bool,
        /// Seconds a dropped publisher has to come back into the broadcast.
        #[arg(long)]
        reconnect_window: Option<i32>,
    },
    /// Give a stream a new key (printed once); the old one stops working.
    ResetKey {
        /// Live stream id.
        id: LiveStreamId,
    },
}

/// Runs one subcommand; exit 1 when the stream does not exist.
pub async fn run(command: LiveCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let pool = db::pool(&config.database)?;
    db::migrate(&pool).await?;
    let client = pool.get().await?;
    match command {
        LiveCommand::List => {
            println!(
                "{:<36}  {:<9} {:<9} {:<24} {:<20} NODE",
                "ID", "STATE", "CONNECTED", "PLAYBACK ID", "CREATED (UTC)"
            );
            let mut after = None;
            loop {
                let page = live_streams::list(&client, None, after, 100).await?;
                for stream in &page {
                    println!(
                        "{:<36}  {:<9} {:<9} {:<24} {:<20} {}",
                        stream.id,
                        stream.state.as_str(),
                        stream.connected,
                        stream.playback_id,
                        stream.created_at.format("%Y-%m-%d %H:%M:%S"),
                        stream.publisher_node.as_deref().unwrap_or("-")
                    );
                }
                match page.last() {
                    Some(last) if page.len() == 100 => {
                        after = Some((last.created_at, last.id.as_uuid()))
                    }
                    _ => break,
                }
            }
        }
        LiveCommand::Show { id } => {
            let Some(stream) = live_streams::get(&client, id).await? else {
                eprintln!("cascade: live stream {id} not found");
                return Ok(ExitCode::from(1));
            };
            let mut value = serde_json::to_value(&stream)?;
            value["recorded_assets"] =
                serde_json::to_value(live_streams::recorded_assets(&client, id).await?)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        LiveCommand::Create {
            environment,
            signed,
            no_recording,
            reconnect_window,
        } => {
            let environment =
                environment.unwrap_or_else(|| config.ingest.default_environment.clone());
            environments::validate_name(&environment)?;
            let environment_id = environments::ensure(&client, &environment).await?;
            let window =
                reconnect_window.unwrap_or(config.live.default_reconnect_window.as_secs() as i32);
            anyhow::ensure!(
                (0..=1800).contains(&window),
                "--reconnect-window must be 0 to 1800 seconds"
            );
            let metadata = serde_json::json!({});
            let (stream, key) = live_streams::create(
                &client,
                environment_id,
                &NewLiveStream {
                    policy: if signed {
                        PlaybackPolicy::Signed
                    } else {
                        PlaybackPolicy::Public
                    },
                    latency_mode: LatencyMode::Standard,
                    recording: !no_recording,
                    reconnect_window: window,
                    metadata: &metadata,
                },
            )
            .await?;
            println!(
                "created live stream {} (playback id {}) in environment {environment}",
                stream.id, stream.playback_id
            );
            println!("stream key (shown once): {key}");
        }
        LiveCommand::ResetKey { id } => {
            let Some(stream) = live_streams::get(&client, id).await? else {
                eprintln!("cascade: live stream {id} not found");
                return Ok(ExitCode::from(1));
            };
            let Some(key) = live_streams::reset_key(&client, stream.environment_id, id).await?
            else {
                eprintln!("cascade: live stream {id} not found");
                return Ok(ExitCode::from(1));
            };
            println!("stream key of {id} reset");
            println!("stream key (shown once): {key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
