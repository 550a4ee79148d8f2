//! `cascade transcode-source`: the child process a worker runs a transcode
//! job's pipeline in (`cascade_workers::transcode::child`). It reads the
//! stored source by ranged GETs, decodes and encodes it with the same code
//! as in-process, and writes the pipeline's events (init and media
//! segments with their bytes, progress) and then its outcome to standard
//! output as frames. It needs no database: the worker stores and records
//! everything.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use cascade_platform::storage::reader::ObjectReader;
use cascade_platform::{Config, ObjectStore};
use cascade_schemas::chunks::Scope;
use cascade_schemas::{AssetId, ObjectKey};
use cascade_workers::transcode::{self as pipeline, FrameWriter, TranscodeError, VideoEncoder};
use tokio::sync::mpsc;

/// The fault tests' failpoint: a source length.
const CRASH_FAILPOINT: &str = "FAILPOINT_TRANSCODE_CRASH_SOURCE_LENGTH";
/// The chunked transcode's fault tests' failpoint: the start (seconds) of
/// the chunk whose child crashes after its first segment.
const CRASH_CHUNK_FAILPOINT: &str = "FAILPOINT_TRANSCODE_CRASH_CHUNK_FROM";
/// The publish gate's test failpoint: a source length whose second media
/// segment (of the first rung to make one) is cut in half, as a damaged
/// encoder or packager would leave it.
const CUT_SEGMENT_FAILPOINT: &str = "FAILPOINT_TRANSCODE_CUT_SEGMENT_SOURCE_LENGTH";
/// The corrective take's test failpoint: a rung name whose encoder spends
/// twice the bit rate it is asked for, in every take (an encoder whose
/// rate control overshoots, which only a correction can bring under the
/// rung's cap).
const OVERSPEND_FAILPOINT: &str = "FAILPOINT_TRANSCODE_OVERSPEND_RUNG";

/// What to transcode: a stored source.
#[derive(clap::Args)]
pub struct TranscodeSourceArgs {
    /// The asset whose stored source to transcode.
    #[arg(long)]
    asset: AssetId,
    /// The source's version.
    #[arg(long)]
    version: u32,
    /// The source's length in bytes.
    #[arg(long)]
    length: u64,
    /// FFmpeg's name of the H.264 encoder the worker resolved.
    #[arg(long)]
    encoder: String,
    /// What to transcode of it, as JSON (`cascade_schemas::chunks::Scope`:
    /// a chunk's video, with or without the audio); the whole by default.
    #[arg(long)]
    scope: Option<String>,
    /// A corrective take's rate scale per rung, as JSON (`{"720p": 0.8}`:
    /// `TranscodeConfig::rate_scale`).
    #[arg(long)]
    rate_scale: Option<String>,
    /// The W3C traceparent of the worker's span this run belongs under.
    #[arg(long)]
    traceparent: Option<String>,
}

/// Transcodes and writes frames; exit 0 whenever the outcome was written.
pub async fn run(args: TranscodeSourceArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let Some(encoder) = VideoEncoder::from_ffmpeg_name(&args.encoder) else {
        anyhow::bail!("unknown encoder {}", args.encoder);
    };
    let scope = match &args.scope {
        Some(scope) => serde_json::from_str(scope)
            .map_err(|e| anyhow::anyhow!("--scope is not a scope: {e}"))?,
        None => Scope::WHOLE,
    };
    let mut rate_scale: std::collections::BTreeMap<String, f64> = match &args.rate_scale {
        Some(scale) => serde_json::from_str(scale)
            .map_err(|e| anyhow::anyhow!("--rate-scale is not a map of rung to share: {e}"))?,
        None => Default::default(),
    };
    if let Ok(rung) = std::env::var(OVERSPEND_FAILPOINT) {
        tracing::warn!("failpoint {OVERSPEND_FAILPOINT}: {rung} spends twice its rate");
        *rate_scale.entry(rung).or_insert(1.0) *= 2.0;
    }
    // A failpoint for the fault tests: the child aborts (SIGABRT, as a
    // decoder crash would end it) right after the first media segment of
    // a source of exactly this many bytes, or of the chunk starting at
    // this second.
    let crash_after_a_segment = std::env::var(CRASH_FAILPOINT)
        .ok()
        .and_then(|length| length.parse::<u64>().ok())
        == Some(args.length)
        || std::env::var(CRASH_CHUNK_FAILPOINT)
            .ok()
            .and_then(|from| from.parse::<f64>().ok())
            .is_some_and(|from| scope.video_from > 0.0 && (from - scope.video_from).abs() < 1e-6);
    let mut cut_a_segment = std::env::var(CUT_SEGMENT_FAILPOINT)
        .ok()
        .and_then(|length| length.parse::<u64>().ok())
        == Some(args.length);
    let (events, mut received) = mpsc::channel::<pipeline::Event>(16);
    // Frames go out on a thread of their own: writing blocks while the
    // worker is busy uploading, which is the back-pressure the pipeline
    // feels through the channel, as in-process. The outcome is the last.
    let (outcome, decided) = std::sync::mpsc::channel();
    let writer = tokio::task::spawn_blocking(move || {
        let mut writer = FrameWriter::new(std::io::BufWriter::new(std::io::stdout().lock()));
        while let Some(mut event) = received.blocking_recv() {
            let segment = matches!(event, pipeline::Event::Segment { .. });
            if let pipeline::Event::Segment {
                sequence: 2, bytes, ..
            } = &mut event
            {
                if std::mem::take(&mut cut_a_segment) {
                    tracing::warn!("failpoint {CUT_SEGMENT_FAILPOINT}: cutting a segment");
                    bytes.truncate(bytes.len() / 2);
                }
            }
            if writer.event(event).is_err() {
                // The worker is gone (or gave up on this job): nobody to
                // tell; dropping the receiver stops the pipeline.
                return false;
            }
            if segment && crash_after_a_segment {
                tracing::warn!("failpoint {CRASH_FAILPOINT} or {CRASH_CHUNK_FAILPOINT}: aborting");
                std::process::abort();
            }
        }
        decided
            .recv()
            .is_ok_and(|result| writer.outcome(result).is_ok())
    });
    let result = match ObjectStore::from_config(&config.storage).await {
        Ok(store) => {
            let reader = ObjectReader::new(
                store,
                ObjectKey::source_version(args.asset, args.version),
                args.length,
                tokio::runtime::Handle::current(),
            )
            .with_patience(config.queue.outage_grace);
            let mut transcode = config.transcode.clone();
            transcode.scope = scope;
            transcode.rate_scale = rate_scale;
            let span =
                tracing::info_span!("transcode_child", asset = %args.asset, version = args.version);
            cascade_platform::tracecontext::set_parent(&span, args.traceparent.as_deref());
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let cancel = AtomicBool::new(false);
                pipeline::run_reader(reader, &transcode, encoder, &events, &cancel)
            })
            .await?
        }
        Err(e) => {
            drop(events);
            Err(TranscodeError::Internal(format!(
                "opening the object store: {e}"
            )))
        }
    };
    let _ = outcome.send(result);
    Ok(if writer.await? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
