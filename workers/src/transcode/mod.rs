//! The `transcode` job: from an asset's source in storage to a published
//! ladder that every player can play.
//!
//! 1. Decide what this job runs ([`chunked`]): the whole source, or, for a
//!    long one, chunk 0 with the whole audio after queueing a job per
//!    later chunk (a later chunk's own job runs just that chunk).
//! 2. Run the pipeline (in a `cascade transcode-source` child by default,
//!    [`child`]) over the stored source read by ranges: probe, decode once,
//!    scale and encode every rung, package CMAF (ISO/IEC 23000-19)
//!    segments.
//! 3. Upload init and media segments as they are cut (bounded channel, so
//!    memory stays flat). A new asset plays while it grows
//!    ([`progressive`]): once every rendition has a segment stored, growing
//!    HLS playlists, a dynamic DASH MPD and a declared master are written
//!    and the asset is marked playable.
//! 4. After the last segment (of the last chunk to finish): the HLS media
//!    playlists (RFC 8216), and last the master playlist and the static
//!    DASH MPD (ISO/IEC 23009-1): a reader never sees a manifest naming a
//!    missing segment.
//! 5. The publish gate ([`gate`]), then record the renditions and turn the
//!    asset `ready` in one transaction.
//!
//! Keys are deterministic (`assets/{id}/v{version}/...`), so a rerun after a
//! crash overwrites the same objects and ends with one correct result. Bad
//! input fails permanently with a creator-readable message on the asset.

// The FFmpeg side is private to the crate: other crates use the probe
// facade (`crate::probe`), the handler and the few items re-exported here.
mod audio_copy;
pub(crate) mod child;
mod chunk_jobs;
pub(crate) mod chunked;
pub(crate) mod encoders;
pub mod error;
pub mod gate;
mod graph;
pub(crate) mod hw;
pub(crate) mod isolated;
pub(crate) mod pacer;
pub(crate) mod pipeline;
mod probe;
pub(crate) mod progressive;
mod rung;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use bytes::Bytes;
use cascade_packager::{dash, hls, Bitrates, MediaKind, Track, UriLayout};
use cascade_platform::assets::{self, RenditionRow};
use cascade_platform::chunks::{self, ChunkRow, Recorded};
use cascade_platform::config::{QaGatePolicy, TranscodeConfig};
use cascade_platform::queue::{Lease, NewJob, Queue};
use cascade_platform::storage::reader::ObjectReader;
use cascade_platform::storage::StorageError;
use cascade_platform::ObjectStore;
use cascade_schemas::chunks::{Chunk, Scope};
use cascade_schemas::{job_kind, AssetId, AssetState, ObjectKey, RenditionName};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use child::{ChildTranscoder, FrameWriter};
pub use encoders::{resolve as resolve_encoder, VideoEncoder, VBV_INITIAL_FULLNESS};
pub use error::TranscodeError;
pub use pipeline::{run as run_file, run_reader, Event, Summary};

use crate::metrics::WorkerMetrics;
use crate::runner::{GaveUp, GaveUpCause, JobContext, JobError, JobHandler};

/// Initialises the FFmpeg libraries once and quiets their logging (errors
/// reach us as return values).
pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Quiet);
    });
}

pub use cascade_schemas::jobs::TranscodeJob;

/// Handler for `transcode` jobs.
#[derive(Clone)]
pub struct TranscodeHandler {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    pool: Pool,
    store: ObjectStore,
    config: TranscodeConfig,
    encoder: VideoEncoder,
    metrics: WorkerMetrics,
    /// Runs the pipeline in a child process; `None`: in this one.
    child: Option<child::ChildTranscoder>,
    /// Checks each version before it is published (`transcode.qa_gate`).
    gate: Option<Arc<dyn gate::PublishGate>>,
    /// Queues the chunks of a long source (chunked transcoding); `None`:
    /// every source is transcoded by one job.
    queue: Option<Queue>,
}

impl TranscodeHandler {
    /// A handler using `encoder` (see [`encoders::resolve`]).
    pub fn new(
        pool: Pool,
        store: ObjectStore,
        config: TranscodeConfig,
        encoder: VideoEncoder,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                store,
                config,
                encoder,
                metrics: WorkerMetrics::default(),
                child: None,
                gate: None,
                queue: None,
            }),
        }
    }

    /// Runs each job's pipeline in a child process of `child`'s program.
    pub fn with_child(self, child: child::ChildTranscoder) -> Self {
        self.edited(|inner| inner.child = Some(child))
    }

    /// Checks every version with `gate` before publishing it, as
    /// `transcode.qa_gate` says (without a gate nothing is checked).
    pub fn with_gate(self, gate: Arc<dyn gate::PublishGate>) -> Self {
        self.edited(|inner| inner.gate = Some(gate))
    }

    /// Splits long sources into chunks queued on `queue`
    /// (`transcode.chunked_from`), so any workers share one video.
    pub fn with_chunks(self, queue: Queue) -> Self {
        self.edited(|inner| inner.queue = Some(queue))
    }

    /// Records transcode metrics into `metrics` (shared with the runner).
    pub fn with_metrics(self, metrics: WorkerMetrics) -> Self {
        self.edited(|inner| inner.metrics = metrics)
    }

    /// This handler with `edit` applied to its settings (a builder step,
    /// before the handler is shared).
    fn edited(self, edit: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        edit(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl JobHandler for TranscodeHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let inner = self.inner.clone();
        async move { inner.transcode(ctx).await }.boxed()
    }

    /// The asset of a transcode given up turns `errored`: a source that
    /// crashed or hung its worker on every attempt is quarantined (no
    /// automatic retry), so it cannot take down worker after worker.
    fn gave_up(&self, job: GaveUp) -> BoxFuture<'static, ()> {
        let pool = self.inner.pool.clone();
        async move {
            let Ok(payload) = serde_json::from_value::<TranscodeJob>(job.payload) else {
                return;
            };
            let (code, message) = match job.cause {
                GaveUpCause::LeaseExpired => (
                    QUARANTINED,
                    format!(
                        "processing this source stopped the worker on each of its {} attempts \
                         (it crashed, ran out of memory or hung), so it is quarantined and not \
                         retried automatically; the original is kept",
                        job.attempts
                    ),
                ),
                GaveUpCause::Failed(_) => (
                    "internal",
                    "processing failed on our side; the original is kept and can be retried"
                        .to_owned(),
                ),
            };
            // A failure the handler already reported (its own error) stays.
            let processing = matches!(
                assets::get(&pool, payload.asset_id).await,
                Ok(Some(asset)) if matches!(asset.state, AssetState::Processing | AssetState::Restoring)
            );
            if processing || code == QUARANTINED {
                if let Err(error) = assets::set_errored(&pool, payload.asset_id, code, &message).await {
                    tracing::warn!(asset_id = %payload.asset_id, error = %error, "cannot mark a given-up asset errored");
                }
            }
        }
        .boxed()
    }
}

/// The error code of an asset whose source was quarantined.
pub const QUARANTINED: &str = "source_quarantined";

fn db_error(context: &str, error: impl std::fmt::Display) -> JobError {
    JobError::Retryable(format!("{context}: {error}"))
}

impl Inner {
    async fn transcode(&self, ctx: JobContext) -> Result<(), JobError> {
        let job: TranscodeJob = serde_json::from_value(ctx.payload.clone())
            .map_err(|e| JobError::Permanent(format!("invalid transcode payload: {e}")))?;
        let Some(asset) = assets::get(&self.pool, job.asset_id)
            .await
            .map_err(|e| db_error("loading the asset", e))?
        else {
            // Deleted while queued: nothing to do.
            tracing::info!(asset_id = %job.asset_id, "asset no longer exists; skipping transcode");
            return Ok(());
        };
        if asset.state == AssetState::Ready
            && asset
                .published_version
                .is_some_and(|v| v >= job.version as i32)
        {
            return Ok(()); // Already published by an earlier run.
        }
        if job.chunk.is_some() {
            // A later chunk runs only while its version is being made: a
            // chunk that failed for good errored the asset, and a
            // replacement supersedes the version.
            let making = matches!(asset.state, AssetState::Processing | AssetState::Restoring)
                && asset.source_version == job.version as i32;
            if !making {
                tracing::info!(asset_id = %job.asset_id, chunk = ?job.chunk,
                    "the chunk's version is not being made; skipping it");
                return Ok(());
            }
        } else {
            if asset.source_version > job.version as i32 {
                // A corrective take, a replacement or a restore moved the
                // asset on to a later version: this one is not made.
                tracing::info!(asset_id = %job.asset_id, version = job.version,
                    source_version = asset.source_version, "superseded version; skipping transcode");
                return Ok(());
            }
            let client = self.pool.get().await.map_err(|e| db_error("database", e))?;
            let resumed = assets::resume_processing(&client, job.asset_id)
                .await
                .map_err(|e| db_error("marking the asset processing", e))?;
            if !resumed {
                // Deleted, or published meanwhile: nothing to do.
                tracing::info!(asset_id = %job.asset_id, "asset is not processing; skipping transcode");
                return Ok(());
            }
        }
        // A corrective take does not grow in public: the version it
        // corrects plays (complete) until the take is published.
        let mode = if job.chunk.is_some()
            || job.corrections.is_some()
            || !self.config.progressive_publish
            || asset.published_version.is_some()
        {
            progressive::Mode::Off
        } else if asset.playable_version == Some(job.version as i32) {
            progressive::Mode::Resumed
        } else {
            progressive::Mode::Growing
        };
        let Some(part) = self.part_of(&job, &asset, &ctx).await? else {
            return Ok(());
        };
        let created = asset.created_at;
        let outcome = match self.run_part(&job, &ctx, mode, part, created).await {
            Ok(Outcome::Whole(mode)) => {
                // The chunks did not join: the version as one job.
                self.run_part(&job, &ctx, mode, Part::Whole, created).await
            }
            other => other,
        };
        match outcome {
            Ok(_) => Ok(()),
            Err(TranscodeError::Input { code, message }) => {
                self.metrics.transcode_ended("refused");
                tracing::info!(asset_id = %job.asset_id, code, message = %message, "source refused");
                assets::set_errored(&self.pool, job.asset_id, code, &message)
                    .await
                    .map_err(|e| db_error("marking the asset errored", e))?;
                Err(JobError::Permanent(message))
            }
            Err(TranscodeError::Cancelled) => {
                Err(JobError::Retryable("transcode cancelled".to_owned()))
            }
            Err(TranscodeError::Crashed(message)) => {
                let reason = format!(
                    "processing this source crashed the decoder on each of its {} attempts \
                     (it may be damaged or crafted), so it is quarantined and not retried \
                     automatically; the original is kept",
                    ctx.attempt
                );
                self.retry(
                    &ctx,
                    job.asset_id,
                    "crashed",
                    (QUARANTINED, &reason),
                    message,
                )
                .await
            }
            Err(TranscodeError::Internal(message)) => {
                let reason =
                    "processing failed on our side; the original is kept and can be retried";
                self.retry(&ctx, job.asset_id, "failed", ("internal", reason), message)
                    .await
            }
        }
    }

    /// A failed attempt, retried by the queue; on the last one the asset
    /// turns errored with `code` and the creator-readable `reason`, so the
    /// creator learns why and no worker runs it again.
    async fn retry(
        &self,
        ctx: &JobContext,
        asset: AssetId,
        result: &'static str,
        (code, reason): (&'static str, &str),
        message: String,
    ) -> Result<(), JobError> {
        self.metrics.transcode_ended(result);
        if ctx.attempt >= ctx.max_attempts {
            let _ = assets::set_errored(&self.pool, asset, code, reason).await;
        }
        Err(JobError::Retryable(message))
    }

    /// The stored source's size, or why there is none to transcode.
    async fn source_size(&self, job: &TranscodeJob) -> Result<u64, TranscodeError> {
        let key = ObjectKey::source_version(job.asset_id, job.version);
        let meta = match self.store.head(&key).await {
            Ok(meta) => meta,
            Err(StorageError::NotFound { .. }) => {
                return Err(TranscodeError::input(
                    "no_source",
                    "no source file was uploaded for this asset",
                ))
            }
            Err(e) => return Err(TranscodeError::internal("reading the source", e)),
        };
        if meta.size == 0 {
            return Err(TranscodeError::input("empty", "the uploaded file is empty"));
        }
        Ok(meta.size)
    }

    /// Runs `part` of the version and what follows it: the publish of a
    /// whole version; a chunk's record, and the join and publish when it
    /// was the last chunk to finish.
    #[tracing::instrument(name = "transcode", skip_all, fields(asset = %job.asset_id, version = job.version, chunk = ?job.chunk))]
    async fn run_part(
        &self,
        job: &TranscodeJob,
        ctx: &JobContext,
        mode: progressive::Mode,
        part: Part,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Outcome, TranscodeError> {
        match part {
            Part::Whole => {
                let ran = self.run_pipeline(job, ctx, mode, None, created).await?;
                self.publish(
                    job,
                    ran.summary,
                    &ran.growing,
                    ctx,
                    ran.source_size,
                    &ran.milestones,
                )
                .await?;
                Ok(Outcome::Done)
            }
            Part::Chunk(chunk) => {
                let ran = self
                    .run_pipeline(job, ctx, mode, Some(chunk), created)
                    .await?;
                self.finish_chunk(job, ctx, chunk, Some(ran)).await
            }
            Part::Recorded(chunk) => self.finish_chunk(job, ctx, chunk, None).await,
        }
    }

    /// Decodes and encodes the source (the whole, or `chunk` of it) and
    /// stores what comes out as it comes; `created`: the asset's creation,
    /// which places a growing MPD's media time 0 (`progressive::growing_mpd`).
    async fn run_pipeline(
        &self,
        job: &TranscodeJob,
        ctx: &JobContext,
        mode: progressive::Mode,
        chunk: Option<Chunk>,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Ran, TranscodeError> {
        let source_size = self.source_size(job).await?;
        let key = ObjectKey::source_version(job.asset_id, job.version);
        let scope = chunk.as_ref().map_or(Scope::WHOLE, Scope::of);
        let rate_scale = job
            .corrections
            .as_ref()
            .map(|c| c.rate_scale.clone())
            .unwrap_or_default();
        // A later chunk stores its segments only: chunk 0 stores the init
        // segments (the join checks every chunk made the same) and is the
        // one that grows in public while it encodes.
        let later_chunk = chunk.filter(|c| c.index > 0);
        let mut inits: HashMap<String, (Track, Bitrates)> = HashMap::new();
        let (events, mut received) = mpsc::channel::<pipeline::Event>(16);
        let cancel = Arc::new(AtomicBool::new(false));
        let pipeline = if let Some(child) = self.child.clone() {
            let source = child::SourceTarget {
                asset: job.asset_id,
                version: job.version,
                length: source_size,
                scope,
                rate_scale,
            };
            let (encoder, cancel) = (self.encoder, cancel.clone());
            let span = tracing::info_span!("decode_and_encode", child = true);
            tokio::spawn(
                async move { child.run(source, encoder, events, cancel).await }.instrument(span),
            )
        } else {
            // Decoded straight from storage by ranged reads: no scratch
            // copy, so encoding starts at once and no worker disk can fill
            // up (the child reads the same way).
            let reader = ObjectReader::new(
                self.store.clone(),
                key,
                source_size,
                tokio::runtime::Handle::current(),
            )
            .with_patience(ctx.outage_grace);
            let config = TranscodeConfig {
                scope,
                rate_scale,
                ..self.config.clone()
            };
            let encoder = self.encoder;
            let cancel = cancel.clone();
            let span = tracing::info_span!("decode_and_encode");
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                pipeline::run_reader(reader, &config, encoder, &events, &cancel)
            })
        };
        // Upload what the pipeline produces while it runs.
        let mut growing =
            progressive::Progressive::new(mode, self.config.segment_duration).with_dash(created);
        let mut milestones = Milestones::new();
        let mut marked_playable = false;
        let mut duration = None;
        let mut upload_error = None;
        loop {
            let event = tokio::select! {
                event = received.recv() => event,
                _ = ctx.cancel.cancelled() => {
                    cancel.store(true, Ordering::Relaxed);
                    received.recv().await
                }
            };
            let Some(event) = event else { break };
            if upload_error.is_some() {
                continue; // Drain so the pipeline sees the failure and stops.
            }
            let result = match event {
                // Progress is for display: a database outage must not stop
                // the encode (it is written again at the next tick).
                pipeline::Event::Probed { duration: d } => {
                    milestones
                        .probed
                        .get_or_insert(milestones.started.elapsed());
                    duration = d;
                    if chunk.is_none() {
                        if let Err(error) =
                            assets::set_progress(&self.pool, job.asset_id, 0.0, d).await
                        {
                            tracing::warn!(error = %error, "cannot record the source duration");
                        }
                    }
                    Ok(())
                }
                pipeline::Event::Source(_)
                | pipeline::Event::Degraded { .. }
                | pipeline::Event::Gap { .. }
                | pipeline::Event::Part { .. } => Ok(()),
                pipeline::Event::Progress(seconds) if chunk.is_some() => {
                    if let Some(chunk) = &chunk {
                        // Chunk 0 reads on to the end for the audio: its
                        // share is its own span.
                        let span = chunk.end.map_or(f64::MAX, |end| end - chunk.start);
                        let done = (seconds - chunk.start).clamp(0.0, span);
                        if let Err(error) = chunks::set_progress(
                            &self.pool,
                            job.asset_id,
                            job.version as i32,
                            chunk.index,
                            done,
                        )
                        .await
                        {
                            tracing::debug!(error = %error, "cannot record progress");
                        }
                    }
                    Ok(())
                }
                pipeline::Event::Progress(seconds) => {
                    let percent = duration
                        .map(|d| (seconds / d * 100.0) as f32)
                        .unwrap_or(0.0)
                        .min(99.0);
                    if let Err(error) =
                        assets::set_progress(&self.pool, job.asset_id, percent, None).await
                    {
                        tracing::debug!(error = %error, "cannot record progress");
                    }
                    Ok(())
                }
                pipeline::Event::Init {
                    rendition,
                    bytes,
                    track,
                    declared,
                } => match RenditionName::new(rendition.clone()) {
                    Ok(_) if later_chunk.is_some() => {
                        inits.insert(rendition, (track, declared));
                        Ok(())
                    }
                    Ok(name) => {
                        milestones
                            .encoding
                            .get_or_insert(milestones.started.elapsed());
                        growing.add_rendition(&rendition, &track, declared);
                        inits.insert(rendition.clone(), (track, declared));
                        self.put_patiently(
                            ObjectKey::init_segment(job.asset_id, job.version, &name),
                            bytes,
                            ctx,
                        )
                        .await
                    }
                    Err(e) => Err(e.to_string()),
                },
                pipeline::Event::Segment {
                    rendition,
                    sequence,
                    bytes,
                    info,
                } => match RenditionName::new(rendition.clone()) {
                    Ok(name) => {
                        let stored = self
                            .put_patiently(
                                ObjectKey::media_segment(
                                    job.asset_id,
                                    job.version,
                                    &name,
                                    sequence,
                                ),
                                bytes,
                                ctx,
                            )
                            .await;
                        match stored {
                            Ok(()) => {
                                milestones
                                    .first_segment
                                    .get_or_insert(milestones.started.elapsed());
                                growing.segment_stored(&rendition, info);
                                self.publish_growing(
                                    job,
                                    ctx,
                                    &mut growing,
                                    &milestones,
                                    &mut marked_playable,
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(message) = result {
                cancel.store(true, Ordering::Relaxed);
                upload_error = Some(message);
            }
        }
        let summary = pipeline
            .await
            .map_err(|e| TranscodeError::internal("transcode thread", e))?;
        if let Some(message) = upload_error {
            return Err(TranscodeError::Internal(format!(
                "storing outputs: {message}"
            )));
        }
        milestones.stored = Some(milestones.started.elapsed());
        Ok(Ran {
            summary: summary?,
            growing,
            inits,
            source_size,
            milestones,
        })
    }

    /// Progressive publish: stores what the growing presentation has due
    /// (media playlists, then, the first time, the master) and marks the
    /// asset playable. A database that cannot be reached now is asked
    /// again at the next segment; the encode goes on.
    async fn publish_growing(
        &self,
        job: &TranscodeJob,
        ctx: &JobContext,
        growing: &mut progressive::Progressive,
        milestones: &Milestones,
        marked_playable: &mut bool,
    ) -> Result<(), String> {
        let update = growing
            .due()
            .map_err(|e| format!("rendering growing playlists: {e}"))?;
        if let Some(update) = update {
            // Side by side: the first set is on the way to playable.
            let mut puts = Vec::new();
            for (rendition, text) in update.media_playlists {
                let name = RenditionName::new(rendition).map_err(|e| e.to_string())?;
                puts.push(self.put_patiently(
                    ObjectKey::media_playlist(job.asset_id, job.version, &name),
                    Bytes::from(text),
                    ctx,
                ));
            }
            futures::future::try_join_all(puts).await?;
            if let Some(mpd) = update.mpd {
                self.put_patiently(
                    ObjectKey::dash_manifest(job.asset_id, job.version),
                    Bytes::from(mpd),
                    ctx,
                )
                .await?;
            }
            if let Some(master) = update.master {
                self.put_patiently(
                    ObjectKey::hls_master(job.asset_id, job.version),
                    Bytes::from(master),
                    ctx,
                )
                .await?;
            }
        }
        if growing.is_playable() && !*marked_playable {
            match assets::mark_playable(&self.pool, job.asset_id, job.version as i32).await {
                Ok(changed) => {
                    *marked_playable = true;
                    if changed {
                        // The steps to playable, for `cascade bench ttp` and operators.
                        let ms = Milestones::millis;
                        tracing::info!(asset_id = %job.asset_id, version = job.version,
                            probed_ms = ms(milestones.probed),
                            encoding_ms = ms(milestones.encoding),
                            first_segment_ms = ms(milestones.first_segment),
                            playable_ms = milestones.started.elapsed().as_millis() as i64,
                            "asset playable while transcoding");
                        self.metrics.playable(ctx.enqueued.elapsed());
                    }
                }
                Err(error) => {
                    tracing::warn!(asset_id = %job.asset_id, error = %error,
                        "cannot mark the asset playable yet");
                }
            }
        }
        Ok(())
    }

    /// Stores one output through a storage outage: a transient failure is
    /// retried with backoff for up to `queue.outage_grace` while the job
    /// holds its lease, so an outage pauses the encode (the bounded channel
    /// holds the pipeline back) instead of throwing it away.
    async fn put_patiently(
        &self,
        key: ObjectKey,
        bytes: Bytes,
        ctx: &JobContext,
    ) -> Result<(), String> {
        let length = bytes.len() as u64;
        cascade_platform::outage::retry(
            ctx.outage_grace,
            Some(&ctx.cancel),
            StorageError::is_retryable,
            |error, retry_in| {
                self.metrics.storage_wait();
                tracing::warn!(key = %key, error = %error, retry_in = ?retry_in, "storage unavailable; retrying");
            },
            || self.store.put_bytes(&key, bytes.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        self.metrics.wrote(length);
        Ok(())
    }

    /// Writes playlists and manifests (after every segment), then makes the
    /// version live.
    #[tracing::instrument(name = "publish", skip_all, fields(asset = %job.asset_id, version = job.version))]
    async fn publish(
        &self,
        job: &TranscodeJob,
        summary: pipeline::Summary,
        growing: &progressive::Progressive,
        ctx: &JobContext,
        source_size: u64,
        milestones: &Milestones,
    ) -> Result<(), TranscodeError> {
        let layout = UriLayout::default();
        let renditions: Vec<_> = summary.renditions.iter().map(|(r, _)| r.clone()).collect();
        let mut puts = Vec::new();
        for rendition in &renditions {
            let playlist = growing
                .final_playlist(rendition, &layout)
                .map_err(|e| TranscodeError::internal("rendering a media playlist", e))?;
            let name = RenditionName::new(rendition.name.clone())
                .map_err(|e| TranscodeError::internal("rendition name", e))?;
            puts.push(self.put_patiently(
                ObjectKey::media_playlist(job.asset_id, job.version, &name),
                Bytes::from(playlist.render()),
                ctx,
            ));
        }
        futures::future::try_join_all(puts)
            .await
            .map_err(TranscodeError::Internal)?;
        let master = hls::render_master_playlist(&renditions, &layout)
            .map_err(|e| TranscodeError::internal("rendering the master playlist", e))?;
        let mpd = dash::render_mpd(&renditions, &layout)
            .map_err(|e| TranscodeError::internal("rendering the MPD", e))?;
        self.put_patiently(
            ObjectKey::dash_manifest(job.asset_id, job.version),
            Bytes::from(mpd),
            ctx,
        )
        .await
        .map_err(TranscodeError::Internal)?;
        self.put_patiently(
            ObjectKey::hls_master(job.asset_id, job.version),
            Bytes::from(master),
            ctx,
        )
        .await
        .map_err(TranscodeError::Internal)?;

        // Everything is stored, manifests last; nothing is served as the
        // published version until the gate says so.
        let manifests_stored = milestones.started.elapsed();
        let quality = match self.gate(job, source_size).await? {
            Gated::Publish(quality) => quality,
            Gated::Retake(corrections) => {
                return self.retake(job, ctx, source_size, corrections).await;
            }
        };
        let gate_done = milestones.started.elapsed();
        let quality = quality
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| TranscodeError::internal("recording the quality checks", e))?;
        let rows: Vec<RenditionRow> = summary
            .renditions
            .iter()
            .map(|(rendition, encoder)| rendition_row(rendition, encoder))
            .collect();
        // The encode is done: a database outage now is waited out (up to
        // `queue.outage_grace`, while the lease holds) rather than thrown away.
        let published = cascade_platform::outage::retry(
            ctx.outage_grace,
            Some(&ctx.cancel),
            cascade_platform::db::DbError::is_retryable,
            |error, retry_in| {
                tracing::warn!(error = %error, retry_in = ?retry_in, "cannot publish yet; retrying");
            },
            || {
                assets::publish(
                    &self.pool,
                    job.asset_id,
                    job.version as i32,
                    summary.duration,
                    &rows,
                    quality.as_ref(),
                )
            },
        )
        .await
        .map_err(|e| TranscodeError::internal("recording the renditions", e))?;
        if !published {
            // Deleted while transcoding: its purge removes what was written.
            tracing::info!(asset_id = %job.asset_id, "asset deleted while transcoding; not published");
            return Ok(());
        }
        // The steps to ready, for `cascade bench ttp` and operators.
        let ms = Milestones::millis;
        tracing::info!(asset_id = %job.asset_id, version = job.version, renditions = rows.len(),
            duration = summary.duration,
            stored_ms = ms(milestones.stored),
            manifests_ms = ms(Some(manifests_stored)),
            gate_ms = ms(Some(gate_done)),
            ready_ms = milestones.started.elapsed().as_millis() as i64,
            "asset ready");
        self.metrics.transcode_ended("ready");
        self.metrics.ready(ctx.enqueued.elapsed());
        for (rung, busy) in &summary.rung_busy {
            let encoder = summary
                .renditions
                .iter()
                .find(|(rendition, _)| rendition.name == *rung)
                .map_or("unknown", |(_, encoder)| encoder.as_str());
            self.metrics
                .rung_encoded(rung, encoder, summary.duration, *busy);
        }
        Ok(())
    }
}

impl Inner {
    /// The publish gate over the stored version: publish (with no record
    /// when there is no gate or it is off), or take it again with corrected
    /// settings (once, when every failure says how: see
    /// [`gate::rate_corrections`]); a refusal is the creator's answer (the
    /// asset turns errored naming the checks); a gate that cannot run is
    /// retried.
    async fn gate(&self, job: &TranscodeJob, source_size: u64) -> Result<Gated, TranscodeError> {
        let policy = self.config.qa_gate;
        let Some(gate) = self.gate.as_ref().filter(|_| policy != QaGatePolicy::Off) else {
            return Ok(Gated::Publish(None));
        };
        let started = std::time::Instant::now();
        let request = gate::GateRequest {
            asset: job.asset_id,
            version: job.version,
            source: Some(gate::StoredSource {
                key: ObjectKey::source_version(job.asset_id, job.version),
                size: source_size,
            }),
        };
        let decision = gate::check_and_decide(gate.as_ref(), policy, request)
            .await
            .map_err(|e| {
                TranscodeError::Internal(format!("the quality checks could not run: {e}"))
            })?;
        self.metrics
            .gate_checked(started.elapsed(), decision.failed());
        if job.corrections.is_none() {
            if let Some(rate_scale) = gate::rate_corrections(decision.report()) {
                return Ok(Gated::Retake(gate::Corrections {
                    failed_version: job.version,
                    rate_scale,
                    failed_checks: decision
                        .report()
                        .failures
                        .iter()
                        .map(gate::GateFailure::describe)
                        .collect(),
                }));
            }
        }
        match decision {
            gate::Decision::Publish(record) => Ok(Gated::Publish(Some(gate::QualityRecord {
                corrected: job.corrections.clone(),
                ..record
            }))),
            gate::Decision::Refuse { message, .. } => Err(TranscodeError::Input {
                code: gate::QA_FAILED,
                message: match &job.corrections {
                    Some(corrections) => format!(
                        "{message} (this was already a second encode, with the bit rates of {} lowered)",
                        corrections
                            .rate_scale
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => message,
                },
            }),
        }
    }

    /// Takes the version again as the next one, with `corrections`: the
    /// source is copied to the next version's key (the segments of this
    /// one may have been served as it grew, under immutable cache
    /// headers, so nothing of it is overwritten), then the asset moves on
    /// to it and its job is queued in one transaction. This job is done;
    /// the old source copy goes once the move is recorded.
    async fn retake(
        &self,
        job: &TranscodeJob,
        ctx: &JobContext,
        source_size: u64,
        corrections: gate::Corrections,
    ) -> Result<(), TranscodeError> {
        let next = job.version + 1;
        let from = ObjectKey::source_version(job.asset_id, job.version);
        crate::tiering::copy_object(
            &self.store,
            &from,
            source_size,
            &self.store,
            ObjectKey::source_version(job.asset_id, next),
        )
        .await
        .map_err(|e| TranscodeError::Internal(format!("copying the source for a new take: {e}")))?;
        let (rate_scale, failed) = (
            format!("{:?}", corrections.rate_scale),
            format!("{:?}", corrections.failed_checks),
        );
        let take = TranscodeJob {
            corrections: Some(corrections),
            ..TranscodeJob::version(job.asset_id, next)
        };
        let payload = serde_json::to_value(&take)
            .map_err(|e| TranscodeError::internal("encoding the new take's job", e))?;
        let queued = NewJob::new(job_kind::TRANSCODE, payload)
            .idempotency_key(take.idempotency_key())
            .max_attempts(ctx.max_attempts);
        let moved = assets::retake(
            &self.pool,
            job.asset_id,
            job.version,
            &queued,
            ctx.max_attempts,
        )
        .await
        .map_err(|e| TranscodeError::internal("queueing the new take", e))?;
        if !moved {
            tracing::info!(asset_id = %job.asset_id, version = job.version,
                "the asset moved on while it was checked; no new take");
            return Ok(());
        }
        self.metrics.transcode_ended("retaken");
        tracing::warn!(asset_id = %job.asset_id, version = job.version, next, rate_scale, failed,
            "the quality checks failed on rate control: encoding again with lower rates");
        if let Err(error) = self.store.delete(&from).await {
            tracing::warn!(asset_id = %job.asset_id, key = %from, error = %error,
                "cannot delete the superseded source copy");
        }
        Ok(())
    }
}

/// What the publish gate lets a version do.
enum Gated {
    /// Publish, with the gate's record (`None`: not checked).
    Publish(Option<gate::QualityRecord>),
    /// Encode the version again, as the next, with these corrections.
    Retake(gate::Corrections),
}

/// What one `transcode` job runs.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// The whole version.
    Whole,
    /// A chunk of it (chunk 0: the version's own job).
    Chunk(Chunk),
    /// A chunk whose result an earlier attempt recorded: what follows it.
    Recorded(Chunk),
}

/// How a part ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Done (published, or recorded with chunks still to come).
    Done,
    /// The chunks did not join: transcode the version as one job, its
    /// playlists in this mode.
    Whole(progressive::Mode),
}

/// What a pipeline run left: its summary, the growing presentation, the
/// init segments' tracks and declared bit rates, the source's size.
struct Ran {
    summary: pipeline::Summary,
    growing: progressive::Progressive,
    inits: HashMap<String, (Track, Bitrates)>,
    source_size: u64,
    milestones: Milestones,
}

/// When the steps towards playable happened, since the transcode began.
struct Milestones {
    started: std::time::Instant,
    /// The source was opened and probed.
    probed: Option<std::time::Duration>,
    /// The encoders were open (the first init segment).
    encoding: Option<std::time::Duration>,
    /// The first media segment was stored.
    first_segment: Option<std::time::Duration>,
    /// Every segment was encoded and stored.
    stored: Option<std::time::Duration>,
}

impl Milestones {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            probed: None,
            encoding: None,
            first_segment: None,
            stored: None,
        }
    }

    /// A step's milliseconds for the log, -1 when it did not happen.
    fn millis(step: Option<std::time::Duration>) -> i64 {
        step.map_or(-1, |d| d.as_millis() as i64)
    }
}

/// The row recorded for a published rendition: what it is, its measured
/// bitrates and segment count, and the encoder that made it.
pub fn rendition_row(rendition: &cascade_packager::Rendition, encoder: &str) -> RenditionRow {
    let bitrates = rendition.bitrates();
    let (kind, width, height, frame_rate, channels, sample_rate) = match rendition.kind {
        MediaKind::Video {
            width,
            height,
            frame_rate,
        } => (
            "video",
            Some(width as i32),
            Some(height as i32),
            Some(frame_rate.to_string()),
            None,
            None,
        ),
        MediaKind::Audio {
            sample_rate,
            channels,
        } => (
            "audio",
            None,
            None,
            None,
            Some(i32::from(channels)),
            Some(sample_rate as i32),
        ),
    };
    RenditionRow {
        name: rendition.name.clone(),
        kind: kind.to_owned(),
        codecs: rendition.codecs.clone(),
        width,
        height,
        frame_rate,
        channels,
        sample_rate,
        bandwidth: bitrates.peak as i64,
        average_bandwidth: bitrates.average as i64,
        segment_count: rendition.segments.len() as i32,
        encoder: encoder.to_owned(),
        tier: cascade_platform::storage::tiers::HOT.to_owned(),
    }
}
