//! `cascade qa`: checks a published presentation against its reference and
//! writes the terminal summary, the JSON report and the HTML report.
//! Exit status: 0 all checks pass, 1 a check failed, 2 the tool could not run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cascade_platform::playback_token::{self, MintError};
use cascade_platform::storage::CopyError;
use cascade_platform::{assets, db, Config, ObjectStore};
use cascade_qa::ladder::ExpectedLadder;
use cascade_qa::thresholds::Thresholds;
use cascade_qa::{CannotRun, Options, Progress, ProgressSink, Readers};
use cascade_schemas::{AssetId, AssetState, ObjectKey};

/// Which manifest `--asset` checks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ManifestKind {
    Hls,
    Dash,
}

/// `--reader`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReaderChoice {
    Ffmpeg,
    Gstreamer,
    Both,
}

#[derive(Debug, clap::Args)]
pub struct QaArgs {
    /// Playback URL of a master playlist (.m3u8) or an MPD (.mpd), through
    /// the CDN when given its URL.
    #[arg(required_unless_present = "asset")]
    url: Option<String>,
    /// The media file the outputs were made from.
    #[arg(long, required_unless_present = "asset")]
    reference: Option<PathBuf>,
    /// Asset id: its playback URL (from playback.public_url, else ingest.public_url; signed when the
    /// asset is) and, without --reference, its stored original.
    #[arg(long, conflicts_with = "url")]
    asset: Option<AssetId>,
    /// The ladder the outputs are held to: `cascade` (this config's
    /// `transcode.ladder`, planned for the reference), `none` (checked on
    /// what the presentation declares and contains: for presentations made
    /// elsewhere), or a TOML file of `ladder`, `audio_bitrate` and
    /// `rate_control` (docs/qa.md). Default: `cascade` with --asset, else `none`.
    #[arg(long, value_name = "cascade|none|FILE")]
    ladder: Option<String>,
    /// Which readers decode the outputs: `ffmpeg`, `gstreamer` (its MP4,
    /// MPEG-TS, HLS and DASH demuxers; the checks needing FFmpeg are
    /// skipped) or `both` (and whether they agree). Default: both where
    /// GStreamer and its plugins are present, else ffmpeg.
    #[arg(long, value_enum)]
    reader: Option<ReaderChoice>,
    /// With --asset: which manifest to check.
    #[arg(long, value_enum, default_value = "hls")]
    manifest: ManifestKind,
    /// TOML file of thresholds (docs/qa.md); unset fields keep their defaults.
    #[arg(long)]
    thresholds: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "qa-report.json")]
    json: PathBuf,
    /// Where to write the HTML report.
    #[arg(long, default_value = "qa-report.html")]
    html: PathBuf,
    /// Structure, timing and bitrate only: no PSNR/SSIM.
    #[arg(long)]
    skip_quality: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
    timeout: Duration,
    /// No progress or table on the terminal (the reports are still written).
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: QaArgs, config: &Config) -> ExitCode {
    match run_inner(args, config).await {
        Ok(code) => code,
        Err(CannotRun(reason)) => {
            eprintln!("cascade qa: could not run: {reason}");
            ExitCode::from(2)
        }
    }
}

async fn run_inner(args: QaArgs, config: &Config) -> Result<ExitCode, CannotRun> {
    let started = Instant::now();
    let thresholds = match &args.thresholds {
        Some(path) => Thresholds::from_file(path).map_err(CannotRun)?,
        None => Thresholds::default(),
    };
    // Holds a downloaded original until the run ends.
    let mut _scratch = None;
    let (url, reference) = match (args.asset, args.url.clone()) {
        (Some(id), _) => {
            let (url, reference, scratch) =
                resolve_asset(id, args.manifest, args.reference.clone(), config).await?;
            _scratch = scratch;
            (url, reference)
        }
        (None, Some(url)) => (
            url,
            args.reference
                .clone()
                .ok_or_else(|| CannotRun("--reference is required with a URL".to_owned()))?,
        ),
        (None, None) => return Err(CannotRun("give a playback URL or --asset".to_owned())),
    };
    if !reference.is_file() {
        return Err(CannotRun(format!(
            "cannot read the reference {}: no such file",
            reference.display()
        )));
    }
    let ladder = match args.ladder.as_deref() {
        Some("cascade") => Some(ExpectedLadder::from_config(&config.transcode)),
        Some("none") => None,
        Some(file) => Some(ExpectedLadder::from_file(Path::new(file)).map_err(CannotRun)?),
        None if args.asset.is_some() => Some(ExpectedLadder::from_config(&config.transcode)),
        None => None,
    };
    let progress = progress_sink(args.quiet);
    let report = cascade_qa::run(
        Options {
            url,
            reference,
            thresholds,
            ladder,
            skip_quality: args.skip_quality,
            readers: args.reader.map(|choice| match choice {
                ReaderChoice::Ffmpeg => Readers::Ffmpeg,
                ReaderChoice::Gstreamer => Readers::Gstreamer,
                ReaderChoice::Both => Readers::Both,
            }),
            request_timeout: args.timeout,
        },
        progress,
    )
    .await?;
    if !args.quiet && std::io::stderr().is_terminal() {
        // End the progress line.
        eprintln!();
    }
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| CannotRun(format!("encoding the report: {e}")))?;
    std::fs::write(&args.json, json)
        .map_err(|e| CannotRun(format!("writing {}: {e}", args.json.display())))?;
    std::fs::write(&args.html, cascade_qa::html::render(&report))
        .map_err(|e| CannotRun(format!("writing {}: {e}", args.html.display())))?;
    if !args.quiet {
        print!("{}", cascade_qa::table::render(&report));
        println!(
            "reports: {} and {} (finished in {:.1} s)",
            args.json.display(),
            args.html.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if report.failures().next().is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress on stderr: one rewritten line on a terminal, phases only otherwise.
fn progress_sink(quiet: bool) -> ProgressSink {
    let terminal = std::io::stderr().is_terminal();
    let frames: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    Arc::new(move |event| {
        if quiet {
            return;
        }
        match event {
            Progress::Phase(phase) => {
                if terminal {
                    eprint!("\r\x1b[2K{phase}");
                } else {
                    eprintln!("qa: {phase}");
                }
            }
            Progress::Frames {
                rendition,
                done,
                total,
            } if terminal => {
                let Ok(mut all) = frames.lock() else { return };
                match all.iter_mut().find(|(name, ..)| *name == rendition) {
                    Some(entry) => *entry = (rendition, done, total),
                    None => all.push((rendition, done, total)),
                }
                let line: Vec<String> =
                    all.iter().map(|(n, d, t)| format!("{n} {d}/{t}")).collect();
                eprint!("\r\x1b[2Kquality: {} frames", line.join("  "));
                let _ = std::io::stderr().flush();
            }
            Progress::Frames { .. } => {}
        }
    })
}

async fn resolve_asset(
    id: AssetId,
    manifest: ManifestKind,
    reference: Option<PathBuf>,
    config: &Config,
) -> Result<(String, PathBuf, Option<tempfile::TempDir>), CannotRun> {
    let pool = db::pool(&config.database).map_err(|e| CannotRun(format!("database: {e}")))?;
    let asset = assets::get(&pool, id)
        .await
        .map_err(|e| CannotRun(format!("looking up asset {id}: {e}")))?
        .ok_or_else(|| CannotRun(format!("no asset {id}")))?;
    if asset.state != AssetState::Ready {
        return Err(CannotRun(format!(
            "asset {id} is {}, not ready: nothing published to check",
            asset.state.as_str()
        )));
    }
    let file = match manifest {
        ManifestKind::Hls => cascade_schemas::keys::HLS_MASTER,
        ManifestKind::Dash => cascade_schemas::keys::DASH_MANIFEST,
    };
    let mut url = format!(
        "{}/play/{}/{file}",
        config.playback.base_url(&config.ingest.public_url),
        asset.playback_id
    );
    if asset.playback_policy == cascade_schemas::PlaybackPolicy::Signed {
        // Signed with the current (first) key, for playback.default_token_ttl.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let minted = playback_token::mint(
            &config.playback,
            &asset.playback_id,
            config.playback.default_token_ttl,
            now,
        )
        .map_err(|e| match e {
            MintError::NoSigningKey => {
                CannotRun("the asset is signed and playback.signing_keys is empty".to_owned())
            }
            e @ MintError::InvalidTtl { .. } => CannotRun(format!("signing the URL: {e}")),
        })?;
        url.push_str(&format!("?token={}", minted.token));
    }
    if let Some(reference) = reference {
        return Ok((url, reference, None));
    }
    // The stored original, streamed to a scratch file.
    let store = ObjectStore::from_config(&config.storage)
        .await
        .map_err(|e| CannotRun(format!("storage: {e}")))?;
    let scratch = tempfile::Builder::new()
        .prefix("cascade-qa-source-")
        .tempdir()
        .map_err(|e| CannotRun(format!("scratch directory: {e}")))?;
    let path = scratch.path().join("source");
    // The source the published version was made from.
    let version = asset
        .published_version
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1);
    let body = store
        .get(&ObjectKey::source_version(id, version), None)
        .await
        .map_err(|e| CannotRun(format!("reading the original of {id}: {e}")))?;
    let mut out = tokio::fs::File::create(&path)
        .await
        .map_err(|e| CannotRun(format!("{}: {e}", path.display())))?;
    body.copy_to(&mut out).await.map_err(|e| match e {
        CopyError::Read(e) => CannotRun(format!("reading the original of {id}: {e}")),
        CopyError::Write(e) => CannotRun(format!("{}: {e}", path.display())),
    })?;
    Ok((url, path, Some(scratch)))
}
