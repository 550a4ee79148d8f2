//! `cascade bench ...`: benchmark commands that print figures, the targets
//! they are held to, and (where a peer runs here) the ratio to that peer.

mod ladder;
mod origin;
mod qa;
mod queue;
mod upload;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use cascade_platform::config::TranscodeConfig;
use cascade_workers::transcode::encoders::VideoEncoder;
use cascade_workers::transcode::pipeline::{self, Event};

use cascade_platform::Config;
use clap::Subcommand;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// No-op jobs through the Postgres queue: throughput and enqueue-to-start latency.
    Queue(queue::QueueBenchArgs),
    /// The default ladder on a 20 s 1080p fixture, against the ffmpeg CLI doing the same.
    Ladder(ladder::LadderBenchArgs),
    /// 1 GiB through tus and simple upload into S3, against a direct multipart put.
    Upload(upload::UploadBenchArgs),
    /// Segments from the origin's memory tier under wrk, against nginx serving the same files.
    Origin(origin::OriginBenchArgs),
    /// `cascade qa` on a 20 s 1080p five-rung asset, held to 60 s.
    Qa(qa::QaBenchArgs),
}

/// Runs the worker's transcode pipeline on `input` in this process, writing
/// each rendition's init and media segments under `dir/{rendition}/`.
pub(crate) async fn transcode_to_dir(
    input: &Path,
    transcode: &TranscodeConfig,
    dir: &Path,
) -> anyhow::Result<pipeline::Summary> {
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let pipeline = {
        let input = input.to_owned();
        let transcode = transcode.clone();
        tokio::task::spawn_blocking(move || {
            pipeline::run(
                &input,
                &transcode,
                VideoEncoder::Libx264,
                &events,
                &AtomicBool::new(false),
            )
        })
    };
    while let Some(event) = received.recv().await {
        match event {
            Event::Init { rendition, bytes } => {
                std::fs::create_dir_all(dir.join(&rendition))?;
                std::fs::write(dir.join(&rendition).join("init.mp4"), &bytes)?;
            }
            Event::Segment {
                rendition,
                sequence,
                bytes,
            } => std::fs::write(dir.join(&rendition).join(format!("{sequence}.m4s")), &bytes)?,
            Event::Probed { .. } | Event::Progress(_) => {}
        }
    }
    pipeline
        .await?
        .map_err(|e| anyhow::anyhow!("cascade transcode failed: {e}"))
}

/// Runs one benchmark; exit 1 when a target is missed.
pub async fn run(command: BenchCommand, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Queue(args) => queue::run(args, config).await,
        BenchCommand::Ladder(args) => ladder::run(args, config).await,
        BenchCommand::Upload(args) => upload::run(args, config).await,
        BenchCommand::Origin(args) => origin::run(args, config).await,
        BenchCommand::Qa(args) => qa::run(args, config).await,
    }
}
