//! `cascade bench qa`: how long `cascade qa` takes on a 20 s 1080p asset with
//! a five-rung ladder (1080p, 720p, 480p, 360p, 240p), held to 60 s. The
//! asset is made by the worker's own pipeline in this process and served by
//! a plain static-file server on loopback, so the figure is the tool's time:
//! fetching, demuxing, decoding the reference once, decoding and scaling
//! every rung, PSNR and SSIM on every frame.

use cascade_schemas::keys;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cascade_packager::{dash, hls, UriLayout};
use cascade_platform::config::{EncoderChoice, RungConfig, TranscodeConfig};
use cascade_platform::Config;
use cascade_qa::ladder::ExpectedLadder;
use cascade_qa::thresholds::Thresholds;
use cascade_qa::{Options, Progress};
use clap::Args;

const TARGET_SECONDS: f64 = 60.0;

/// Arguments of `cascade bench qa`.
#[derive(Debug, Args)]
pub struct QaBenchArgs {
    /// Source (default: the 20 s 1080p bench fixture, generated if missing).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write the reports here (default: a temporary directory).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// The configured ladder with a 360p rung: five rungs for a 1080p source.
fn five_rung_config(config: &Config) -> TranscodeConfig {
    let mut transcode = config.transcode.clone();
    transcode.encoder = EncoderChoice::Libx264;
    if !transcode.ladder.iter().any(|r| r.short_side == 360) {
        transcode.ladder.push(RungConfig {
            name: "360p".to_owned(),
            short_side: 360,
            bitrate: 700_000,
        });
    }
    transcode
}

async fn make_asset(input: &Path, transcode: TranscodeConfig, dir: &Path) -> anyhow::Result<usize> {
    let summary = super::transcode_to_dir(input, &transcode, dir).await?;
    let layout = UriLayout::default();
    let renditions: Vec<_> = summary.renditions.iter().map(|(r, _)| r.clone()).collect();
    for rendition in &renditions {
        let playlist = hls::Playlist::for_rendition(rendition, &layout)?;
        std::fs::write(
            dir.join(&rendition.name).join(keys::MEDIA_PLAYLIST),
            playlist.render(),
        )?;
    }
    std::fs::write(
        dir.join(keys::HLS_MASTER),
        hls::render_master_playlist(&renditions, &layout)?,
    )?;
    std::fs::write(
        dir.join(keys::DASH_MANIFEST),
        dash::render_mpd(&renditions, &layout)?,
    )?;
    Ok(renditions.len())
}

async fn serve_file(
    State(root): State<Arc<PathBuf>>,
    UrlPath(path): UrlPath<String>,
) -> impl IntoResponse {
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(StatusCode::NOT_FOUND);
    }
    tokio::fs::read(root.join(&path))
        .await
        .map_err(|_| StatusCode::NOT_FOUND)
}

async fn static_server(root: PathBuf) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::get(serve_file))
        .with_state(Arc::new(root));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

pub async fn run(args: QaBenchArgs, config: Config) -> anyhow::Result<ExitCode> {
    let input = match args.input {
        Some(path) => path,
        None => super::bench_fixture()?,
    };
    let scratch = tempfile::tempdir()?;
    let asset_dir = scratch.path().join("asset");
    std::fs::create_dir_all(&asset_dir)?;
    println!(
        "bench qa: transcoding {} with a five-rung ladder (not timed)",
        input.display()
    );
    let transcode = five_rung_config(&config);
    let count = make_asset(&input, transcode.clone(), &asset_dir).await?;
    let addr = static_server(asset_dir.clone()).await?;
    let url = format!("http://{addr}/master.m3u8");
    println!("bench qa: {count} renditions served at {url}; running cascade qa");
    let started = Instant::now();
    let report = cascade_qa::run(
        Options {
            url,
            reference: input.clone(),
            thresholds: Thresholds::default(),
            ladder: Some(ExpectedLadder::from_config(&transcode)),
            skip_quality: false,
            // As users run it: both readers where GStreamer is present.
            readers: None,
            request_timeout: Duration::from_secs(30),
        },
        Arc::new(|event| {
            if let Progress::Phase(phase) = event {
                println!("  {phase}");
            }
        }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cascade qa could not run: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let out = args.keep.unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("qa-report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(
        out.join("qa-report.html"),
        cascade_qa::html::render(&report),
    )?;
    print!("{}", cascade_qa::table::render(&report));
    let frames: u64 = report
        .renditions
        .iter()
        .filter_map(|r| r.quality.as_ref().map(|q| q.frames_compared))
        .sum();
    let met = seconds < TARGET_SECONDS;
    println!(
        "cascade qa: {seconds:.1} s for {} video rungs, {frames} frames compared ({:.0} frames/s); \
         target < {TARGET_SECONDS:.0} s: {}",
        report.renditions.iter().filter(|r| r.quality.is_some()).count(),
        frames as f64 / seconds,
        if met { "met" } else { "MISSED" }
    );
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
