//! One publish session: FLV bytes in; the live ladder (decode once, every
//! rung's keyframes forced on one absolute grid) out to storage; segment
//! rows recorded and the manifests re-rendered after every aligned set of
//! segments; the publisher lease renewed with what the ingest measures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_packager::{Rendition, SegmentInfo};
use cascade_platform::config::{KeptRung, LiveConfig, TranscodeConfig};
use cascade_platform::live_streams::{self, Publish, SegmentRow, SessionRendition, SessionRow};
use cascade_platform::ObjectStore;
use cascade_schemas::{ObjectKey, RenditionName};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::edge::{EdgeSettings, Edges, StreamEdge};
use super::manifests::{self, Broadcast, Window};
use super::{input, LiveError};
use crate::transcode::pacer::{Degradation, Pacer};
use crate::transcode::pipeline::{self, Event, SourceInfo};
use crate::transcode::{TranscodeError, VideoEncoder};

/// Video codecs a live input may carry (what RTMP publishers send,
/// including enhanced RTMP); anything else is refused at once.
const LIVE_VIDEO_CODECS: [&str; 3] = ["h264", "hevc", "av1"];
/// Audio codecs a live input may carry.
const LIVE_AUDIO_CODECS: [&str; 3] = ["aac", "mp3", "opus"];

/// What every session of a replica shares.
pub struct LiveContext {
    /// Postgres.
    pub pool: Pool,
    /// Where segments and manifests go.
    pub store: ObjectStore,
    /// Live settings.
    pub config: LiveConfig,
    /// The live ladder's transcode settings ([`LiveConfig::transcode`]).
    pub transcode: TranscodeConfig,
    /// The H.264 encoder (hardware when present).
    pub encoder: VideoEncoder,
    /// The parts of this replica's low-latency streams.
    pub edges: Arc<Edges>,
    /// Where origins reach [`edges`](Self::edges) (the relay), when it runs.
    pub relay_url: Option<String>,
    /// Degraded streams and the steps their ladders took.
    pub metrics: super::LiveMetrics,
}

/// Counters the connection keeps for the session.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Media bytes received.
    pub bytes: AtomicU64,
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The publisher stopped sending (or disconnected); the final segments
    /// are published and the reconnect window runs.
    PublisherLeft,
    /// The input was refused (codec, size): recorded on the stream.
    Refused {
        /// Stable code.
        code: String,
        /// Creator-readable reason.
        message: String,
    },
    /// The stream was disabled, deleted or taken over.
    LostStream,
    /// Something on our side failed.
    Failed(String),
}

/// One session's inputs.
pub struct SessionInput {
    /// The granted publish.
    pub publish: Publish,
    /// This publisher's id (the lease holder).
    pub publisher: uuid::Uuid,
    /// FLV bytes: the header, then one tag per chunk.
    pub flv: mpsc::Receiver<Bytes>,
    /// Counted by the connection.
    pub stats: Arc<IngestStats>,
}

/// Segments of one number from the renditions that have cut it, and their
/// uploads (running side by side, so a rendition's segment is not stored
/// after the others' puts in turn).
struct PendingSet {
    rows: Vec<SegmentRow>,
    puts: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

struct Driver<'a> {
    ctx: &'a LiveContext,
    publish: Publish,
    publisher: uuid::Uuid,
    media_offset: f64,
    first_media: Arc<OnceLock<DateTime<Utc>>>,
    renditions: Vec<SessionRendition>,
    source: Option<SourceInfo>,
    pending: BTreeMap<u64, PendingSet>,
    first_segments: BTreeMap<String, SegmentInfo>,
    session_recorded: bool,
    /// Media seconds encoded (for the lag behind real time).
    encoded_seconds: f64,
    /// The ladder's degradation step, and the lag that set it.
    degradation: (Degradation, f64),
    stats: Arc<IngestStats>,
    bitrate: BitrateMeter,
    /// The parts of a low-latency stream.
    edge: Option<Arc<StreamEdge>>,
    /// Renditions whose latest published segment is a gap (dropped rungs).
    absent: Vec<String>,
}

/// Input bitrate over the last ten seconds.
struct BitrateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl BitrateMeter {
    fn sample(&mut self, total: u64) -> u64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(10))
        {
            self.samples.pop_front();
        }
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                let seconds = t1.duration_since(*t0).as_secs_f64();
                ((b1 - b0) as f64 * 8.0 / seconds) as u64
            }
            _ => 0,
        }
    }
}

/// Runs one publish session to its end.
pub async fn run(ctx: Arc<LiveContext>, session: SessionInput) -> SessionEnd {
    let SessionInput {
        publish,
        publisher,
        flv,
        stats,
    } = session;
    // A reconnect continues the broadcast: its timeline, and its rungs (the
    // players are on them), whatever size the new source has.
    let (media_offset, kept_rungs) = if publish.continues {
        let client = match ctx.pool.get().await {
            Ok(client) => client,
            Err(e) => return SessionEnd::Failed(format!("database: {e}")),
        };
        let end = match live_streams::media_end(&client, publish.broadcast).await {
            Ok(end) => end,
            Err(e) => return SessionEnd::Failed(format!("reading the broadcast: {e}")),
        };
        let sessions = match live_streams::broadcast_sessions(&client, publish.broadcast).await {
            Ok(sessions) => sessions,
            Err(e) => return SessionEnd::Failed(format!("reading the broadcast: {e}")),
        };
        let kept = sessions
            .last()
            .map(|last| kept_rungs(&last.renditions, &ctx.transcode))
            .filter(|kept| !kept.is_empty());
        (end, kept)
    } else {
        (0.0, None)
    };
    let first_media = Arc::new(OnceLock::new());
    let cancel = Arc::new(AtomicBool::new(false));
    let (events, mut received) = mpsc::channel::<Event>(32);
    let edge = publish.low_latency.then(|| {
        ctx.edges.open(
            publish.stream,
            EdgeSettings {
                session: publish.session,
                part_target: ctx.config.part_duration,
                segment_duration: ctx.config.segment_duration,
            },
        )
    });
    let pipeline = {
        let mut transcode = ctx.transcode.clone();
        transcode.kept_rungs = kept_rungs;
        if edge.is_some() {
            transcode.part_duration = Some(ctx.config.part_duration);
        }
        let encoder = ctx.encoder;
        let cancel = cancel.clone();
        let reader = input::ChannelReader::new(flv, first_media.clone());
        let pacer = Pacer::new(ctx.config.segment_duration)
            .with_drill(ctx.config.degradation_drill.clone());
        tokio::task::spawn_blocking(move || {
            let input = input::open(reader)?;
            pipeline::run_input(
                input,
                &transcode,
                encoder,
                &events,
                &cancel,
                media_offset,
                Some(pacer),
            )
        })
    };
    let mut driver = Driver {
        ctx: &ctx,
        publish: publish.clone(),
        publisher,
        media_offset,
        first_media,
        renditions: Vec::new(),
        source: None,
        pending: BTreeMap::new(),
        first_segments: BTreeMap::new(),
        session_recorded: false,
        encoded_seconds: 0.0,
        degradation: (Degradation::default(), 0.0),
        stats,
        bitrate: BitrateMeter {
            samples: Default::default(),
        },
        edge: edge.clone(),
        absent: Vec::new(),
    };
    let renew_every = ctx.config.publisher_lease / 3;
    let mut renew = tokio::time::interval(renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop: Option<SessionEnd> = None;
    loop {
        tokio::select! {
            event = received.recv() => {
                let Some(event) = event else { break };
                if stop.is_some() {
                    continue; // Drain so the pipeline sees the cancel and ends.
                }
                if let Err(end) = driver.on_event(event).await {
                    cancel.store(true, Ordering::Relaxed);
                    stop = Some(end);
                }
            }
            _ = renew.tick(), if stop.is_none() => {
                if let Err(end) = driver.renew().await {
                    cancel.store(true, Ordering::Relaxed);
                    stop = Some(end);
                }
            }
        }
    }
    let outcome = match pipeline.await {
        Ok(Ok(_)) => None,
        Ok(Err(TranscodeError::Input { code, message })) => Some(SessionEnd::Refused {
            code: code.to_owned(),
            message,
        }),
        Ok(Err(TranscodeError::Cancelled)) => None,
        Ok(Err(TranscodeError::Internal(message) | TranscodeError::Crashed(message))) => {
            Some(SessionEnd::Failed(message))
        }
        Err(e) => Some(SessionEnd::Failed(format!(
            "the live pipeline panicked: {e}"
        ))),
    };
    // However the session ended, its ladder no longer counts as degraded.
    driver
        .ctx
        .metrics
        .changed(driver.degradation.0, Degradation::default());
    let end = match (stop, outcome) {
        (Some(end), _) => end,
        (None, Some(end)) => end,
        (None, None) => match driver.flush_all().await {
            Ok(()) => SessionEnd::PublisherLeft,
            Err(end) => end,
        },
    };
    if let Some(edge) = edge {
        // Requests held for parts get the playlist as it stands; parts stay
        // fetchable for as long as a request may be held, then go.
        edge.finish(false);
        let edges = ctx.edges.clone();
        let stream = publish.stream;
        let linger = edge.settings().hold_limit();
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            edges.remove(stream, &edge);
        });
    }
    if let SessionEnd::Refused { code, message } = &end {
        if let Ok(client) = ctx.pool.get().await {
            let _ = live_streams::record_refusal(&client, publish.stream, code, message).await;
        }
    }
    end
}

impl Driver<'_> {
    fn window(&self) -> Window {
        Window {
            segments: self.ctx.config.window_segments(),
            segment_duration: self.ctx.config.segment_duration,
            part_duration: self.edge.as_ref().map(|_| self.ctx.config.part_duration),
        }
    }

    fn broadcast(&self) -> Broadcast {
        Broadcast {
            stream: self.publish.stream,
            id: self.publish.broadcast,
            started_at: self.publish.broadcast_started_at,
        }
    }

    /// What the stream object shows about the ingest.
    fn ingest_view(&mut self) -> serde_json::Value {
        let bitrate = self
            .bitrate
            .sample(self.stats.bytes.load(Ordering::Relaxed));
        let lag = self.first_media.get().map(|start| {
            let wall = (Utc::now() - *start).num_milliseconds() as f64 / 1000.0;
            (wall - (self.encoded_seconds - self.media_offset)).max(0.0)
        });
        serde_json::json!({
            "session": self.publish.session,
            "started_at": self.first_media.get(),
            "video": self.source.as_ref().and_then(|s| s.video.clone()),
            "audio": self.source.as_ref().and_then(|s| s.audio.clone()),
            "audio_copied": self.source.as_ref().is_some_and(|s| s.audio_copied),
            "bitrate": bitrate,
            "renditions": self.renditions.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "encoder": self.ctx.encoder.ffmpeg_name(),
            // Seconds between the newest frame received and the newest
            // encoded: growing means the ladder does not keep up.
            "lag_seconds": lag.map(|l| (l * 10.0).round() / 10.0),
            // How the ladder is degraded to keep up (`none` when it is not).
            "degraded": self.degradation.0.as_str(),
        })
    }

    async fn renew(&mut self) -> Result<(), SessionEnd> {
        let view = self.ingest_view();
        let max = self.ctx.config.max_input_bitrate;
        if let Some(bitrate) = view["bitrate"].as_u64().filter(|b| *b > max) {
            return Err(SessionEnd::Refused {
                code: "input_bitrate_too_high".to_owned(),
                message: format!(
                    "the stream sends {:.1} Mbit/s; at most {:.1} Mbit/s is accepted",
                    bitrate as f64 / 1e6,
                    max as f64 / 1e6
                ),
            });
        }
        let client = match self.ctx.pool.get().await {
            Ok(client) => client,
            // A short outage: the lease outlasts a few missed renewals.
            Err(e) => {
                tracing::warn!(error = %e, "live: cannot renew the publisher lease");
                return Ok(());
            }
        };
        match live_streams::renew_publisher(
            &client,
            self.publish.stream,
            self.publisher,
            self.ctx.config.publisher_lease,
            &view,
        )
        .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SessionEnd::LostStream),
            Err(e) => {
                tracing::warn!(error = %e, "live: cannot renew the publisher lease");
                Ok(())
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), SessionEnd> {
        match event {
            Event::Source(source) => self.on_source(source),
            Event::Probed { .. } => Ok(()),
            Event::Degraded { level, lag } => {
                if !self.ctx.config.degradation_drill.is_empty() {
                    tracing::warn!(live_stream_id = %self.publish.stream, lag_seconds = lag,
                        degraded = level.as_str(), "live: a degradation drill step (live.degradation_drill)");
                } else if level.depth > self.degradation.0.depth {
                    tracing::warn!(live_stream_id = %self.publish.stream, lag_seconds = lag,
                        degraded = level.as_str(), "live: the ladder falls behind real time; degraded");
                } else {
                    tracing::info!(live_stream_id = %self.publish.stream, lag_seconds = lag,
                        degraded = level.as_str(), "live: the ladder keeps up again");
                }
                self.ctx.metrics.changed(self.degradation.0, level);
                self.degradation = (level, lag);
                Ok(())
            }
            Event::Progress(seconds) => {
                self.encoded_seconds = self.encoded_seconds.max(seconds + self.media_offset);
                Ok(())
            }
            Event::Init {
                rendition,
                track,
                bytes,
                ..
            } => {
                let name = rendition_name(&rendition)?;
                let described = Rendition::from_track(rendition.clone(), &track, Vec::new());
                let bandwidth = self.declared_bandwidth(&rendition);
                self.renditions.push(describe(&described, bandwidth));
                if let Some(edge) = &self.edge {
                    edge.add_rendition(&rendition, described.timescale);
                }
                self.put(
                    ObjectKey::live_init_segment(self.publish.stream, self.publish.session, &name),
                    bytes,
                )
                .await
            }
            Event::Part {
                rendition,
                mut part,
            } => {
                let Some(edge) = &self.edge else {
                    return Ok(());
                };
                let local = part.sequence_number;
                part.sequence_number = self.publish.first_sequence + local.saturating_sub(1);
                let timescale = self
                    .renditions
                    .iter()
                    .find(|r| r.name == rendition)
                    .map_or(1, |r| r.timescale.max(1));
                let program_time = self.program_time(part.start as f64 / f64::from(timescale));
                let sequence = part.sequence_number;
                edge.push_part(
                    &rendition,
                    sequence,
                    program_time,
                    self.publish.continues && local == 1,
                    part,
                );
                Ok(())
            }
            Event::Gap { rendition, info } => self.on_gap(rendition, info).await,
            Event::Segment {
                rendition,
                sequence,
                info,
                bytes,
            } => {
                let name = rendition_name(&rendition)?;
                let global = self.publish.first_sequence + sequence.saturating_sub(1);
                if let Some(edge) = &self.edge {
                    edge.complete_segment(&rendition, global, info);
                }
                let key = ObjectKey::live_media_segment(
                    self.publish.stream,
                    self.publish.session,
                    &name,
                    global,
                );
                let store = self.ctx.store.clone();
                let put = tokio::spawn(async move {
                    store
                        .put_bytes(&key, bytes)
                        .await
                        .map_err(|e| format!("storing {key}: {e}"))
                });
                let mut row = self.segment_row(rendition.clone(), global, info)?;
                row.discontinuity = self.publish.continues && sequence == 1;
                let timescale = f64::from(row.timescale);
                self.encoded_seconds = self
                    .encoded_seconds
                    .max((info.start + info.duration) as f64 / timescale);
                self.first_segments.entry(rendition).or_insert(SegmentInfo {
                    sequence_number: global,
                    ..info
                });
                let set = self.pending_set(global);
                set.rows.push(row);
                set.puts.push(put);
                self.flush_complete().await
            }
        }
    }

    /// The row of `rendition`'s segment numbered `global` (no
    /// discontinuity, not a gap), timed by its wall clock at ingest.
    fn segment_row(
        &self,
        rendition: String,
        global: u64,
        info: SegmentInfo,
    ) -> Result<SegmentRow, SessionEnd> {
        let Some(described) = self.renditions.iter().find(|r| r.name == rendition) else {
            return Err(SessionEnd::Failed(format!(
                "a segment of {rendition} came before its init segment"
            )));
        };
        let timescale = described.timescale.max(1);
        Ok(SegmentRow {
            program_time: self.program_time(info.start as f64 / f64::from(timescale)),
            rendition,
            sequence: global,
            session: self.publish.session,
            start: info.start,
            duration: info.duration.max(1),
            timescale,
            size: info.size,
            discontinuity: false,
            gap: false,
        })
    }

    /// The set of segments numbered `sequence`.
    fn pending_set(&mut self, sequence: u64) -> &mut PendingSet {
        self.pending.entry(sequence).or_insert_with(|| PendingSet {
            rows: Vec::new(),
            puts: Vec::new(),
        })
    }

    /// A segment a dropped rung sat out: a row with the others' number and
    /// timing, no object; the set it belongs to completes with it.
    async fn on_gap(&mut self, rendition: String, info: SegmentInfo) -> Result<(), SessionEnd> {
        let global = self.publish.first_sequence + info.sequence_number.saturating_sub(1);
        let mut row = self.segment_row(rendition, global, info)?;
        row.size = 0;
        row.gap = true;
        self.pending_set(global).rows.push(row);
        self.flush_complete().await
    }

    fn on_source(&mut self, source: SourceInfo) -> Result<(), SessionEnd> {
        let refuse = |code: &str, message: String| {
            Err(SessionEnd::Refused {
                code: code.to_owned(),
                message,
            })
        };
        if let Some(video) = &source.video {
            if !LIVE_VIDEO_CODECS.contains(&video.codec.as_str()) {
                return refuse(
                    "unsupported_codec",
                    format!(
                        "live video must be H.264, HEVC or AV1; the stream sends {}",
                        video.codec
                    ),
                );
            }
            let (max_w, max_h) = (self.ctx.config.max_width, self.ctx.config.max_height);
            // Portrait sources are measured by their long and short sides.
            let (long, short) = (video.width.max(video.height), video.width.min(video.height));
            if long > max_w.max(max_h) || short > max_w.min(max_h) {
                return refuse(
                    "input_too_large",
                    format!(
                        "the stream is {}x{}; at most {max_w}x{max_h} is accepted",
                        video.width, video.height
                    ),
                );
            }
        } else {
            return refuse(
                "no_video",
                "the stream sends no video; live streams need video".to_owned(),
            );
        }
        if let Some(audio) = &source.audio {
            if !LIVE_AUDIO_CODECS.contains(&audio.codec.as_str()) {
                return refuse(
                    "unsupported_codec",
                    format!(
                        "live audio must be AAC, MP3 or Opus; the stream sends {}",
                        audio.codec
                    ),
                );
            }
        }
        self.source = Some(source);
        Ok(())
    }

    /// Wall clock at ingest of media time `seconds`.
    fn program_time(&self, seconds: f64) -> DateTime<Utc> {
        let wall_start = self.first_media.get().copied().unwrap_or_else(Utc::now);
        wall_start
            + chrono::Duration::milliseconds(((seconds - self.media_offset) * 1000.0).round() as i64)
    }

    /// The bitrate a rendition's playlists declare: the rung's cap plus
    /// container overhead (audio: its bitrate plus overhead).
    fn declared_bandwidth(&self, rendition: &str) -> u64 {
        let base = self
            .ctx
            .transcode
            .ladder
            .iter()
            .find(|rung| rung.name == rendition)
            .map(|rung| rung.bitrate)
            .unwrap_or(self.ctx.transcode.audio_bitrate);
        base + base / 10
    }

    async fn put(&self, key: ObjectKey, bytes: Bytes) -> Result<(), SessionEnd> {
        self.ctx
            .store
            .put_bytes(&key, bytes)
            .await
            .map_err(|e| SessionEnd::Failed(format!("storing {key}: {e}")))
    }

    /// Publishes every set all renditions have cut, and any older set a
    /// rendition skipped (a newer complete set proves it is not coming).
    async fn flush_complete(&mut self) -> Result<(), SessionEnd> {
        let expected = self.renditions.len();
        let Some(newest_complete) = self
            .pending
            .iter()
            .rev()
            .find(|(_, set)| set.rows.len() >= expected)
            .map(|(seq, _)| *seq)
        else {
            return Ok(());
        };
        let ready: Vec<u64> = self
            .pending
            .range(..=newest_complete)
            .map(|(seq, _)| *seq)
            .collect();
        let mut sets = Vec::new();
        for seq in ready {
            if let Some(set) = self.pending.remove(&seq) {
                sets.push(set);
            }
        }
        self.publish_sets(sets).await
    }

    /// Waits for the sets' segments to be stored, then publishes them.
    async fn publish_sets(&mut self, sets: Vec<PendingSet>) -> Result<(), SessionEnd> {
        let mut rows = Vec::new();
        let mut changes = Vec::new();
        for set in sets {
            let mut absent: Vec<String> = set
                .rows
                .iter()
                .filter(|row| row.gap)
                .map(|row| row.rendition.clone())
                .collect();
            absent.sort();
            if absent != self.absent {
                if let Some(first) = set.rows.first() {
                    changes.push(live_streams::LadderChange {
                        session: self.publish.session,
                        sequence: first.sequence,
                        media_time: first.start as f64 / f64::from(first.timescale.max(1)),
                        absent: absent.clone(),
                    });
                }
                self.absent = absent;
            }
            for put in set.puts {
                match put.await {
                    Ok(Ok(())) => {}
                    Ok(Err(message)) => return Err(SessionEnd::Failed(message)),
                    Err(e) => {
                        return Err(SessionEnd::Failed(format!(
                            "a segment upload panicked: {e}"
                        )))
                    }
                }
            }
            rows.extend(set.rows);
        }
        self.publish_rows(rows, changes).await
    }

    /// At the end: whatever the renditions cut last.
    async fn flush_all(&mut self) -> Result<(), SessionEnd> {
        let sets: Vec<PendingSet> = std::mem::take(&mut self.pending).into_values().collect();
        self.publish_sets(sets).await
    }

    async fn publish_rows(
        &mut self,
        rows: Vec<SegmentRow>,
        changes: Vec<live_streams::LadderChange>,
    ) -> Result<(), SessionEnd> {
        if rows.is_empty() {
            return Ok(());
        }
        let client = self
            .ctx
            .pool
            .get()
            .await
            .map_err(|e| SessionEnd::Failed(format!("database: {e}")))?;
        let failed =
            |what: &str, e: &dyn std::fmt::Display| SessionEnd::Failed(format!("{what}: {e}"));
        if !self.session_recorded {
            let started_at = self.first_media.get().copied().unwrap_or_else(Utc::now);
            live_streams::record_session(
                &client,
                &self.publish,
                &self.renditions,
                started_at,
                self.media_offset,
            )
            .await
            .map_err(|e| failed("recording the session", &e))?;
        }
        for change in &changes {
            live_streams::record_ladder_change(&client, &self.publish, change)
                .await
                .map_err(|e| failed("recording a ladder change", &e))?;
        }
        let held = live_streams::record_segments(&client, &self.publish, self.publisher, &rows)
            .await
            .map_err(|e| failed("recording segments", &e))?;
        if !held {
            return Err(SessionEnd::LostStream);
        }
        let stored = manifests::publish(
            &client,
            &self.ctx.store,
            &self.broadcast(),
            self.window(),
            false,
        )
        .await
        .map_err(|e| failed("publishing the live manifests", &e))?;
        if let Some(edge) = &self.edge {
            edge.set_stored(stored);
        }
        if !self.session_recorded {
            // The master playlist names media playlists that now exist.
            let session = SessionRow {
                session: self.publish.session,
                renditions: self.renditions.clone(),
                started_at: Utc::now(),
                media_offset: self.media_offset,
            };
            let master = manifests::master_playlist(&session, &self.first_segments)
                .map_err(|e| failed("rendering the master playlist", &e))?;
            self.put(ObjectKey::live_master(self.publish.stream), master.into())
                .await?;
            self.session_recorded = true;
        }
        if !self.publish.recording {
            self.remove_behind_window(&client).await;
        }
        Ok(())
    }

    /// Without recording, segments that slid out of the window (plus a
    /// margin for players and caches still fetching them) are removed.
    async fn remove_behind_window(&self, client: &deadpool_postgres::Object) {
        let keep = self.ctx.config.window_segments() + 3;
        let Ok(behind) =
            live_streams::segments_behind_window(client, self.publish.broadcast, keep).await
        else {
            return;
        };
        let mut removed = Vec::new();
        for row in behind {
            let Ok(name) = RenditionName::new(row.rendition.clone()) else {
                continue;
            };
            let key = ObjectKey::live_media_segment(
                self.publish.stream,
                row.session,
                &name,
                row.sequence,
            );
            if self.ctx.store.delete(&key).await.is_ok() {
                removed.push(row);
            }
        }
        if let Err(e) = live_streams::forget_segments(client, self.publish.stream, &removed).await {
            tracing::warn!(error = %e, "live: cannot forget removed segments");
        }
    }
}

fn rendition_name(name: &str) -> Result<RenditionName, SessionEnd> {
    RenditionName::new(name.to_owned())
        .map_err(|e| SessionEnd::Failed(format!("rendition name: {e}")))
}

/// The video rungs a broadcast's session encoded, to encode again after a
/// reconnect: their sizes as they were, their bitrates from the ladder (or,
/// for a rung no longer configured, from the bandwidth it declared, which
/// is its cap plus 10 %).
fn kept_rungs(renditions: &[SessionRendition], transcode: &TranscodeConfig) -> Vec<KeptRung> {
    renditions
        .iter()
        .filter_map(|rendition| {
            let (width, height) = (rendition.width?, rendition.height?);
            let bitrate = transcode
                .ladder
                .iter()
                .find(|rung| rung.name == rendition.name)
                .map_or(rendition.bandwidth * 10 / 11, |rung| rung.bitrate);
            Some(KeptRung {
                name: rendition.name.clone(),
                width,
                height,
                bitrate,
            })
        })
        .collect()
}

fn describe(rendition: &Rendition, bandwidth: u64) -> SessionRendition {
    use cascade_packager::MediaKind;
    let (kind, width, height, frame_rate, sample_rate, channels) = match rendition.kind {
        MediaKind::Video {
            width,
            height,
            frame_rate,
        } => (
            "video",
            Some(width),
            Some(height),
            Some(frame_rate.to_string()),
            None,
            None,
        ),
        MediaKind::Audio {
            sample_rate,
            channels,
        } => ("audio", None, None, None, Some(sample_rate), Some(channels)),
    };
    SessionRendition {
        name: rendition.name.clone(),
        kind: kind.to_owned(),
        codecs: rendition.codecs.clone(),
        bandwidth,
        width,
        height,
        frame_rate,
        sample_rate,
        channels,
        timescale: rendition.timescale,
    }
}

impl From<cascade_platform::db::DbError> for LiveError {
    fn from(e: cascade_platform::db::DbError) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<cascade_platform::StorageError> for LiveError {
    fn from(e: cascade_platform::StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}
