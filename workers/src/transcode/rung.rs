//! One video rung of the ladder, encoding in its own thread: frames from
//! the decoding thread in, packets to the packager's segmenter, segments
//! out as events. A live ladder also switches a rung's preset and drops and
//! restores it here, each at a keyframe every rung cuts at.

use bytes::Bytes;
use cascade_packager::{self as packager, Rendition, Sample, Segmenter};
use cascade_platform::config::TranscodeConfig;
use ffmpeg_next as ff;
use tokio::sync::mpsc;

use super::encoders::{self, EncodeSettings, VideoEncoder};
use super::error::TranscodeError;
use super::hw::VaapiUpload;
use super::pipeline::{
    collect_last, emit_parts, emit_segment, extradata, packager_error, send, Event, VIDEO_TIMESCALE,
};
use cascade_schemas::ladder::PlannedRung;

/// One video rung being encoded.
pub(super) struct VideoRung {
    pub(super) plan: PlannedRung,
    pub(super) sink: String,
    pub(super) encoder: ff::encoder::video::Encoder,
    pub(super) time_base: ff::Rational,
    pub(super) segmenter: Segmenter,
    /// Previous packet, held until the next gives its duration.
    pub(super) pending: Option<Sample>,
    pub(super) frame_ticks: u32,
    /// Packets presented before this (the segments' timescale) are
    /// dropped: a later chunk's encoder warms up on the GOP before its
    /// start (rate control, lookahead), as one encoder running through
    /// would have, and only its own frames are packaged.
    pub(super) package_from: i64,
    pub(super) vaapi: Option<VaapiUpload>,
    /// Segments emitted so far.
    pub(super) infos: Vec<packager::SegmentInfo>,
    /// What a new encoder for this rung is opened with (a live ladder's
    /// preset switch, or a dropped rung coming back).
    pub(super) settings: EncodeSettings,
    pub(super) video_encoder: VideoEncoder,
    pub(super) config: TranscodeConfig,
}

/// What the decoding thread sends a rung.
pub(super) enum ToRung {
    /// The next frame to encode.
    Frame(ff::frame::Video),
    /// From the next frame (a keyframe), encode with this x264 preset.
    Preset(String),
    /// Stop at this time (the rung's time base; a keyframe every rung cuts
    /// at): the open segment closes there. The next frame resumes.
    Pause(i64),
    /// While paused: the segment the rung sits out ends at this time.
    Skip(i64),
}

/// The decoding thread's handle on a rung encoding in its own thread.
pub(super) struct Feed {
    pub(super) sink: String,
    pub(super) time_base: ff::Rational,
    pub(super) frames: std::sync::mpsc::SyncSender<ToRung>,
}

/// Frames queued per rung: enough to ride out an encoder's hiccup, small
/// enough that memory stays flat.
pub(super) const FRAMES_IN_FLIGHT: usize = 4;

impl VideoRung {
    fn encode(
        &mut self,
        frame: &ff::frame::Video,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        // Software encoders take the filtered frame as it is; VAAPI needs it
        // copied into a GPU surface first.
        let sent = match self.vaapi.as_mut() {
            Some(upload) => {
                let surface = upload
                    .upload(frame)
                    .map_err(|e| TranscodeError::internal("uploading a frame to VAAPI", e))?;
                self.encoder.send_frame(&surface)
            }
            None => self.encoder.send_frame(frame),
        };
        sent.map_err(|e| TranscodeError::internal(&format!("encoding {}", self.plan.name), e))?;
        receive_video_packets(self, events)
    }

    pub(super) fn take(
        &mut self,
        message: ToRung,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        match message {
            ToRung::Frame(frame) => self.encode(&frame, events),
            ToRung::Preset(preset) => self.switch_preset(preset, events),
            ToRung::Pause(at) => self.pause(at, events),
            ToRung::Skip(at) => {
                let at = self.ticks(at);
                match self.segmenter.skip(at) {
                    Some(info) => send(
                        events,
                        Event::Gap {
                            rendition: self.plan.name.clone(),
                            info,
                        },
                    ),
                    None => Ok(()),
                }
            }
        }
    }

    /// `pts` of this rung's frames in the segments' timescale.
    fn ticks(&self, pts: i64) -> i64 {
        ff::Rescale::rescale(&pts, self.time_base, ff::Rational::new(1, VIDEO_TIMESCALE))
    }

    /// An encoder for this rung on `preset`, writing the parameter sets of
    /// the preset the rung started on.
    fn open_encoder(&self, preset: &str) -> Result<ff::encoder::video::Encoder, TranscodeError> {
        let mut config = self.config.clone();
        preset.clone_into(&mut config.preset);
        encoders::open_video(
            self.video_encoder,
            &self.settings,
            &config,
            self.vaapi.as_ref(),
        )
        .map_err(|e| {
            TranscodeError::internal(
                &format!("opening {} for {}", self.video_encoder, self.plan.name),
                e,
            )
        })
    }

    /// Packages `sample` (its duration known) and emits what that closed.
    fn package(
        &mut self,
        sample: Sample,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        let closed = self
            .segmenter
            .push(sample)
            .map_err(|e| packager_error("packaging video", e))?;
        self.emit(closed, events)
    }

    /// Emits the parts the segmenter closed, then `closed`.
    fn emit(
        &mut self,
        closed: Option<packager::MediaSegment>,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        emit_parts(&self.plan.name, self.segmenter.take_parts(), events)?;
        if let Some(segment) = closed {
            self.infos.push(segment.info());
            emit_segment(&self.plan.name, segment, events)?;
        }
        Ok(())
    }

    /// Flushes the encoder; its packets go to the segmenter (the last one
    /// stays pending: its duration is not known yet).
    fn drain_encoder(&mut self, events: &mpsc::Sender<Event>) -> Result<(), TranscodeError> {
        self.encoder
            .send_eof()
            .map_err(|e| TranscodeError::internal("flushing the video encoder", e))?;
        receive_video_packets(self, events)
    }

    /// Drains the encoder and puts `next` in its place.
    fn replace_encoder(
        &mut self,
        next: ff::encoder::video::Encoder,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        self.drain_encoder(events)?;
        self.encoder = next;
        Ok(())
    }

    /// A new encoder with `preset` takes over at the next frame, a
    /// keyframe. Only when its SPS and PPS are the ones players already
    /// hold in the init segment; otherwise the rung keeps its encoder.
    fn switch_preset(
        &mut self,
        preset: String,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), TranscodeError> {
        if preset == self.config.preset {
            return Ok(());
        }
        let next = self.open_encoder(&preset)?;
        if extradata(&next) != extradata(&self.encoder) {
            tracing::warn!(rung = %self.plan.name, preset = %preset,
                "live: the preset would change the stream's parameter sets; the rung keeps its preset");
            return Ok(());
        }
        self.replace_encoder(next, events)?;
        tracing::info!(rung = %self.plan.name, preset = %preset, "live: the rung switched preset");
        self.config.preset = preset;
        Ok(())
    }

    /// Stops the rung at `at`: the encoder is drained, the open segment
    /// closes at `at`, and a fresh encoder waits for the frame that resumes
    /// the rung (a keyframe).
    fn pause(&mut self, at: i64, events: &mpsc::Sender<Event>) -> Result<(), TranscodeError> {
        let next = self.open_encoder(&self.config.preset.clone())?;
        self.replace_encoder(next, events)?;
        let end = self.ticks(at);
        if let Some(mut last) = self.pending.take() {
            last.duration = u32::try_from(end - last.dts)
                .unwrap_or(self.frame_ticks)
                .max(1);
            self.package(last, events)?;
        }
        let closed = self
            .segmenter
            .pause(end)
            .map_err(|e| packager_error("pausing video", e))?;
        self.emit(closed, events)?;
        tracing::info!(rung = %self.plan.name, "live: the rung is dropped");
        Ok(())
    }

    pub(super) fn finish(
        mut self,
        events: &mpsc::Sender<Event>,
    ) -> Result<Rendition, TranscodeError> {
        self.drain_encoder(events)?;
        if let Some(mut last) = self.pending.take() {
            last.duration = self.frame_ticks.max(1);
            self.package(last, events)?;
        }
        let track = self.segmenter.track().clone();
        let mut infos = std::mem::take(&mut self.infos);
        collect_last(
            &mut infos,
            self.segmenter.finish_with_parts(),
            &self.plan.name,
            events,
        )?;
        Ok(Rendition::from_track(self.plan.name.clone(), &track, infos))
    }
}

fn receive_video_packets(
    rung: &mut VideoRung,
    events: &mpsc::Sender<Event>,
) -> Result<(), TranscodeError> {
    let mut packet = ff::Packet::empty();
    while rung.encoder.receive_packet(&mut packet).is_ok() {
        packet.rescale_ts(rung.time_base, ff::Rational::new(1, VIDEO_TIMESCALE));
        let (Some(pts), Some(dts)) = (packet.pts(), packet.dts()) else {
            continue;
        };
        if pts < rung.package_from {
            continue; // The warm-up before a chunk (a closed GOP of its own).
        }
        let Some(data) = packet.data() else { continue };
        let sample = Sample {
            pts,
            dts,
            duration: 0,
            keyframe: packet.is_key(),
            data: Bytes::copy_from_slice(data),
        };
        if let Some(mut previous) = rung.pending.replace(sample) {
            previous.duration = u32::try_from(dts - previous.dts)
                .unwrap_or(rung.frame_ticks)
                .max(1);
            rung.package(previous, events)?;
        }
    }
    Ok(())
}
