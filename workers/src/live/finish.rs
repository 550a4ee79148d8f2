//! `finish_broadcast` jobs: a broadcast ended (its reconnect window ran
//! out, or the stream was disabled or deleted).
//!
//! With recording on, its segments become a VOD asset without a second
//! encode: each rendition's segments are copied, renumbered from 1, under
//! the asset's version 1, and the VOD manifests (`EXT-X-ENDLIST`, static
//! MPD) are rendered from their rows. A rung dropped for part of the
//! broadcast (the ladder fell behind real time) is left out: a VOD
//! rendition has no gaps, and the other rungs cover it. Sessions whose init segments are
//! byte-identical (a publisher that reconnected with the same settings)
//! form one asset; a reconnect that changed the encoding starts another,
//! since a VOD rendition has one init segment. The recording passes the
//! publish gate before it turns `ready` (checked for itself: there is no
//! source file to compare it with), under `transcode.qa_gate`'s policy.
//! Then, recorded or not, the
//! broadcast's live objects and rows go. Idempotent: assets are keyed by
//! `recorded_from`, copies overwrite, and removal tolerates what is gone.

use bytes::Bytes;
use cascade_packager::{dash, hls, SegmentInfo, UriLayout};
use cascade_platform::assets::{self, RenditionRow};
use cascade_platform::config::QaGatePolicy;
use cascade_platform::live_streams::{self, SegmentRow, SessionRow};
use cascade_platform::{ObjectStore, StorageError};
use cascade_schemas::{AssetId, LiveStreamId, ObjectKey, RenditionName};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;

use super::manifests;
use crate::runner::{JobContext, JobError, JobHandler};
use crate::transcode::gate::{check_and_decide, Decision, GateRequest, PublishGate, QA_FAILED};
use crate::transcode::rendition_row;

pub use cascade_schemas::jobs::FinishJob;

/// Handler for [`cascade_schemas::job_kind::FINISH_BROADCAST`].
#[derive(Clone)]
pub struct FinishHandler {
    pool: Pool,
    store: ObjectStore,
    /// Checks each recording before it is published, under the policy.
    gate: Option<(Arc<dyn PublishGate>, QaGatePolicy)>,
}

/// A test failpoint: set (to anything), the second media segment of a
/// recording's first rendition is stored cut in half, as a damaged copy
/// would leave it, so that the gate has something to refuse.
const CUT_SEGMENT_FAILPOINT: &str = "FAILPOINT_RECORDING_CUT_SEGMENT";

fn retry(what: &str, error: &dyn std::fmt::Display) -> JobError {
    JobError::Retryable(format!("{what}: {error}"))
}

impl FinishHandler {
    /// Finishes broadcasts through `pool` and `store`.
    pub fn new(pool: Pool, store: ObjectStore) -> Self {
        Self {
            pool,
            store,
            gate: None,
        }
    }

    /// Checks every recording with `gate` before publishing it, as `policy`
    /// (`transcode.qa_gate`) says.
    pub fn with_gate(mut self, gate: Arc<dyn PublishGate>, policy: QaGatePolicy) -> Self {
        self.gate = (policy != QaGatePolicy::Off).then_some((gate, policy));
        self
    }

    async fn finish(&self, job: FinishJob) -> Result<(), JobError> {
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let Some(stream) = live_streams::get_any(&client, job.live_stream_id)
            .await
            .map_err(|e| retry("loading the stream", &e))?
        else {
            return Ok(()); // Gone with its rows.
        };
        let sessions = live_streams::broadcast_sessions(&client, job.broadcast_id)
            .await
            .map_err(|e| retry("loading the sessions", &e))?;
        let segments = live_streams::broadcast_segments(&client, job.broadcast_id)
            .await
            .map_err(|e| retry("loading the segments", &e))?;
        drop(client);
        if job.record && !segments.is_empty() {
            for group in self.groups(job.live_stream_id, &sessions).await? {
                self.record(&stream, &job, &group, &segments).await?;
            }
        }
        for session in &sessions {
            self.store
                .delete_prefix(&ObjectKey::live_session_prefix(
                    job.live_stream_id,
                    session.session,
                ))
                .await
                .map_err(|e| retry("removing the broadcast's segments", &e))?;
        }
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        live_streams::forget_broadcast(&client, job.broadcast_id)
            .await
            .map_err(|e| retry("forgetting the broadcast", &e))?;
        tracing::info!(live_stream_id = %job.live_stream_id, broadcast_id = %job.broadcast_id,
            recorded = job.record, "broadcast finished");
        Ok(())
    }

    /// Runs of consecutive sessions with the same renditions and
    /// byte-identical init segments.
    async fn groups(
        &self,
        stream: LiveStreamId,
        sessions: &[SessionRow],
    ) -> Result<Vec<Vec<SessionRow>>, JobError> {
        let mut groups: Vec<(Vec<Bytes>, Vec<SessionRow>)> = Vec::new();
        for session in sessions {
            let mut inits = Vec::new();
            for rendition in &session.renditions {
                let name = RenditionName::new(rendition.name.clone())
                    .map_err(|e| JobError::Permanent(format!("stored rendition name: {e}")))?;
                let key = ObjectKey::live_init_segment(stream, session.session, &name);
                inits.push(self.read(&key).await?.unwrap_or_default());
            }
            match groups.last_mut() {
                Some((first_inits, members)) if *first_inits == inits => {
                    members.push(session.clone())
                }
                _ => groups.push((inits, vec![session.clone()])),
            }
        }
        Ok(groups.into_iter().map(|(_, members)| members).collect())
    }

    async fn read(&self, key: &ObjectKey) -> Result<Option<Bytes>, JobError> {
        match self.store.get(key, None).await {
            Ok(body) => body
                .collect()
                .await
                .map(Some)
                .map_err(|e| retry(&format!("reading {key}"), &e)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(retry(&format!("reading {key}"), &e)),
        }
    }

    /// Records one group of sessions as an asset.
    async fn record(
        &self,
        stream: &live_streams::LiveStream,
        job: &FinishJob,
        group: &[SessionRow],
        segments: &[SegmentRow],
    ) -> Result<(), JobError> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        let sessions: Vec<u32> = group.iter().map(|s| s.session).collect();
        let recorded_from = format!("{}:{}", job.broadcast_id, first.session);
        let title = format!(
            "Live recording {}",
            first.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
        let (asset, to_publish) = assets::insert_recording(
            &client,
            stream.environment_id,
            stream.playback_policy,
            stream.id,
            &recorded_from,
            &title,
        )
        .await
        .map_err(|e| retry("creating the recording's asset", &e))?;
        drop(client);
        if !to_publish {
            return Ok(()); // Published by an earlier attempt, or deleted since.
        }
        let layout = UriLayout::default();
        let mut renditions = Vec::new();
        let mut cut_a_segment = std::env::var_os(CUT_SEGMENT_FAILPOINT).is_some();
        for described in &first.renditions {
            let name = RenditionName::new(described.name.clone())
                .map_err(|e| JobError::Permanent(format!("stored rendition name: {e}")))?;
            let rows: Vec<&SegmentRow> = segments
                .iter()
                .filter(|row| row.rendition == described.name && sessions.contains(&row.session))
                .collect();
            if rows.is_empty() {
                continue;
            }
            if rows.iter().any(|row| row.gap) {
                // A rung dropped for a while to keep up: a VOD rendition
                // has no gaps, and the others cover that time.
                tracing::info!(live_stream_id = %stream.id, rendition = %described.name,
                    "the recording leaves out a rung that was dropped during the broadcast");
                continue;
            }
            let init_key = ObjectKey::live_init_segment(stream.id, first.session, &name);
            let init = self
                .read(&init_key)
                .await?
                .ok_or_else(|| JobError::Permanent(format!("{init_key} is missing")))?;
            self.put(&ObjectKey::init_segment(asset, 1, &name), init)
                .await?;
            let mut infos = Vec::with_capacity(rows.len());
            for row in rows {
                let from =
                    ObjectKey::live_media_segment(stream.id, row.session, &name, row.sequence);
                let Some(bytes) = self.read(&from).await? else {
                    // Removed behind the window before recording was
                    // turned on: the recording starts after it.
                    continue;
                };
                // Numbered from 1 without gaps, as VOD playlists require.
                let number = infos.len() as u64 + 1;
                let bytes = if number == 2 && std::mem::take(&mut cut_a_segment) {
                    tracing::warn!("failpoint {CUT_SEGMENT_FAILPOINT}: cutting a segment");
                    bytes.slice(..bytes.len() / 2)
                } else {
                    bytes
                };
                self.put(&ObjectKey::media_segment(asset, 1, &name, number), bytes)
                    .await?;
                infos.push(SegmentInfo {
                    sequence_number: number,
                    start: row.start,
                    duration: row.duration,
                    size: row.size,
                });
            }
            if !infos.is_empty() {
                renditions.push(manifests::rendition(described, infos));
            }
        }
        if renditions.is_empty() {
            return Ok(());
        }
        for rendition in &renditions {
            let name = RenditionName::new(rendition.name.clone())
                .map_err(|e| JobError::Permanent(format!("rendition name: {e}")))?;
            let playlist = hls::Playlist::for_rendition(rendition, &layout)
                .map_err(|e| JobError::Permanent(format!("rendering a playlist: {e}")))?;
            self.put(
                &ObjectKey::media_playlist(asset, 1, &name),
                Bytes::from(playlist.render()),
            )
            .await?;
        }
        let mpd = dash::render_mpd(&renditions, &layout)
            .map_err(|e| JobError::Permanent(format!("rendering the MPD: {e}")))?;
        self.put(&ObjectKey::dash_manifest(asset, 1), Bytes::from(mpd))
            .await?;
        let master = hls::render_master_playlist(&renditions, &layout)
            .map_err(|e| JobError::Permanent(format!("rendering the master playlist: {e}")))?;
        self.put(&ObjectKey::hls_master(asset, 1), Bytes::from(master))
            .await?;
        let duration = renditions
            .iter()
            .map(|r| {
                let start = r.segments.first().map_or(0, |s| s.start);
                (r.end() - start) as f64 / f64::from(r.timescale.max(1))
            })
            .fold(0.0, f64::max);
        let rows: Vec<RenditionRow> = renditions
            .iter()
            .map(|r| rendition_row(r, if r.is_video() { "live" } else { "aac" }))
            .collect();
        let quality = match self.gate(asset).await? {
            None => None,
            Some(Decision::Publish(record)) => {
                Some(serde_json::to_value(record).map_err(|e| {
                    JobError::Permanent(format!("recording the quality checks: {e}"))
                })?)
            }
            Some(Decision::Refuse { message, .. }) => {
                tracing::warn!(live_stream_id = %stream.id, asset_id = %asset, error = %message,
                    "recording refused by the quality checks");
                assets::set_errored(&self.pool, asset, QA_FAILED, &message)
                    .await
                    .map_err(|e| retry("recording the refusal", &e))?;
                return Ok(());
            }
        };
        let published = assets::publish(&self.pool, asset, 1, duration, &rows, quality.as_ref())
            .await
            .map_err(|e| retry("publishing the recording", &e))?;
        if published {
            let client = self.pool.get().await.map_err(|e| retry("database", &e))?;
            live_streams::emit_with(
                &client,
                "live_stream.recording.ready",
                stream.id,
                serde_json::json!({
                    "asset_id": asset,
                    "broadcast_id": job.broadcast_id,
                }),
            )
            .await
            .map_err(|e| retry("recording the webhook", &e))?;
            tracing::info!(live_stream_id = %stream.id, asset_id = %asset, "broadcast recorded");
        }
        Ok(())
    }

    /// The publish gate's decision on the recording's stored version 1
    /// (`None` without a gate). A gate that cannot run is retried.
    async fn gate(&self, asset: AssetId) -> Result<Option<Decision>, JobError> {
        let Some((gate, policy)) = &self.gate else {
            return Ok(None);
        };
        let request = GateRequest {
            asset,
            version: 1,
            source: None,
        };
        check_and_decide(gate.as_ref(), *policy, request)
            .await
            .map(Some)
            .map_err(|e| retry("the quality checks could not run", &e))
    }

    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), JobError> {
        self.store
            .put_bytes(key, bytes)
            .await
            .map_err(|e| retry(&format!("storing {key}"), &e))
    }
}

impl JobHandler for FinishHandler {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Result<(), JobError>> {
        let handler = self.clone();
        async move {
            let job: FinishJob = serde_json::from_value(ctx.payload.clone()).map_err(|e| {
                JobError::Permanent(format!("invalid finish_broadcast payload: {e}"))
            })?;
            handler.finish(job).await
        }
        .boxed()
    }
}
