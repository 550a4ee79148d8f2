//! `cascade`: the single binary. Loads config, builds clients, wires roles;
//! everything else lives in the crates (see ARCHITECTURE.md).

mod assets;
mod bench;
mod health;
mod http_server;
mod jobs;
mod keys;
mod live;
mod probe;
mod qa;
mod qa_gate;
mod serve;
mod telemetry;
mod tiers;
mod tokens;
mod traces;
mod transcode_source;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cascade_platform::{db, Config};
use clap::{Parser, Subcommand};

/// Cascade: HLS/DASH origin and transcode pipeline.
#[derive(Parser)]
#[command(name = "cascade", version, about)]
struct Cli {
    /// TOML config file (also `CASCADE_CONFIG`); `CASCADE_*` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run roles (ingest, workers, origin) in this process until SIGTERM/SIGINT.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Create and inspect assets from the command line.
    Assets {
        #[command(subcommand)]
        command: assets::AssetsCommand,
    },
    /// What each storage tier holds and costs.
    Tiers {
        #[command(subcommand)]
        command: tiers::TiersCommand,
    },
    /// Manage live streams.
    Live {
        #[command(subcommand)]
        command: live::LiveCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Mint signed playback tokens.
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// Inspect and steer the job queue.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Check a published presentation against its reference media (exit 0 pass, 1 fail, 2 could not run).
    Qa(qa::QaArgs),
    /// Probe one untrusted source and print a JSON report (the child the
    /// ingest role probes uploads in).
    #[command(hide = true, name = "probe-source")]
    ProbeSource(probe::ProbeSourceArgs),
    /// Run one transcode job's pipeline and write its segments as frames
    /// (the child a worker transcodes in).
    #[command(hide = true, name = "transcode-source")]
    TranscodeSource(transcode_source::TranscodeSourceArgs),
    /// Benchmarks that print figures and ratios against targets.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Allocations this large or larger are mapped on their own and returned
/// to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;

/// Fixes glibc's mmap threshold (which also turns off its dynamic
/// adjustment), for a `serve` process that encodes no video itself (a
/// worker whose transcodes run in `transcode-source` children, an origin).
/// glibc otherwise raises the threshold to the size of each large block
/// freed, and the publish gate's peak grew with the segments it read.
/// Processes that encode keep the default: there it cost about 1.5 % of
/// the ladder's CPU. Figures in ARCHITECTURE.md ("Memory that does not
/// grow with the video's length").
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("cascade: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve(args) = &cli.command {
        if !args.encodes_video(&config) {
            fix_mmap_threshold();
        }
    }
    if let Command::Config = cli.command {
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("cascade: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = telemetry::init(&config.log, &config.traces, runtime.handle());
    let mut command = cli.command;
    if let Command::Serve(args) = &mut command {
        // Its probe children load the same file.
        args.config_file.clone_from(&cli.config);
    }
    let code = match runtime.block_on(run(command, config, cli.config.clone())) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cascade failed");
            eprintln!("cascade: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans go out while the runtime still runs their requests.
    runtime
        .block_on(async { tokio::task::spawn_blocking(move || telemetry.shutdown()).await })
        .unwrap_or_default();
    code
}

/// `config_file`: the `--config` file loaded, for the children a command
/// starts (probes).
async fn run(
    command: Command,
    config: Config,
    config_file: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::serve(args, config).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate => {
            let pool = db::pool(&config.database)?;
            let applied = db::migrate(&pool).await.context("migrating the database")?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                println!("applied migrations {applied:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config => Ok(ExitCode::SUCCESS),
        Command::Jobs { command } => jobs::run(command, &config).await,
        Command::Assets { command } => assets::run(command, &config, config_file).await,
        Command::Keys { command } => keys::run(command, &config).await,
        Command::Live { command } => live::run(command, &config).await,
        Command::Tiers { command } => tiers::run(command, &config).await,
        Command::Tokens { command } => tokens::run(command, &config).await,
        Command::Bench { command } => bench::run(command, config).await,
        Command::Qa(args) => Ok(qa::run(args, &config).await),
        Command::ProbeSource(args) => probe::run(args, &config).await,
        Command::TranscodeSource(args) => transcode_source::run(args, &config).await,
    }
}
