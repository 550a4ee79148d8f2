//! The second, independent reader: GStreamer (1.22, Debian's plugins good,
//! bad and libav). Its MP4 and MPEG-TS demuxers (`qtdemux`, `tsdemux`, via
//! `decodebin3`) decode each rendition's joined bytes, and its adaptive
//! demuxers (`hlsdemux2`, `dashdemux2` from adaptivedemux2, via
//! `uridecodebin3`) play the whole presentation from its URL, through the CDN
//! when given its URL. Each read reports what was decoded (frames,
//! timestamps) and any error, for the checks to compare with FFmpeg's
//! reading. Nothing here shares code with the FFmpeg side.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::report::MediaKind;

/// A reading that decodes nothing new for this long has stalled (a cut
/// segment can leave an adaptive demuxer waiting for data that never comes).
const STALL: Duration = Duration::from_secs(8);

/// The elements a reading needs; without any of them the reader is absent.
const REQUIRED_ELEMENTS: &[&str] = &[
    "filesrc",
    "decodebin3",
    "uridecodebin3",
    "appsink",
    "qtdemux",
    "tsdemux",
    "hlsdemux2",
    "dashdemux2",
    "avdec_h264",
    "avdec_aac",
];

/// What GStreamer decoded of one track.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackReading {
    /// Decoded buffers: frames for video, chunks of samples for audio.
    pub buffers: u64,
    /// Earliest presentation timestamp, seconds.
    pub start_s: Option<f64>,
    /// Latest timestamp plus duration, seconds.
    pub end_s: Option<f64>,
}

impl TrackReading {
    fn add(&mut self, pts: Option<f64>, duration: f64) {
        self.buffers += 1;
        if let Some(pts) = pts {
            self.start_s = Some(self.start_s.map_or(pts, |s| s.min(pts)));
            let end = pts + duration;
            self.end_s = Some(self.end_s.map_or(end, |e| e.max(end)));
        }
    }

    /// End minus start, seconds.
    pub fn duration_s(&self) -> f64 {
        match (self.start_s, self.end_s) {
            (Some(start), Some(end)) => end - start,
            _ => 0.0,
        }
    }
}

/// One GStreamer reading: its video and audio tracks and the first error.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub video: Option<TrackReading>,
    pub audio: Option<TrackReading>,
    pub error: Option<String>,
}

impl Reading {
    pub fn track(&self, kind: MediaKind) -> Option<&TrackReading> {
        match kind {
            MediaKind::Video => self.video.as_ref(),
            MediaKind::Audio => self.audio.as_ref(),
        }
    }
}

/// Initialises GStreamer and checks every element a reading needs: `Err`
/// says what is missing (the reader is then not used).
pub fn available() -> Result<(), String> {
    gst::init().map_err(|e| format!("GStreamer does not initialise: {e}"))?;
    let missing: Vec<&str> = REQUIRED_ELEMENTS
        .iter()
        .copied()
        .filter(|name| gst::ElementFactory::find(name).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "GStreamer lacks {} (Debian: gstreamer1.0-plugins-base, -good, -bad, -libav)",
            missing.join(", ")
        ))
    }
}

/// Decodes a rendition's joined file (init segment and media segments) with
/// `decodebin3`, which picks `qtdemux` or `tsdemux` from the bytes.
pub fn read_file(path: &Path, deadline: Duration) -> Reading {
    let Some(location) = path.to_str() else {
        return failed(format!("{} is not a UTF-8 path", path.display()));
    };
    read(deadline, |pipeline| {
        let source = element("filesrc", Some(("location", location)))?;
        let decode = element("decodebin3", None)?;
        pipeline
            .add_many([&source, &decode])
            .map_err(|e| format!("building the pipeline: {e}"))?;
        source
            .link(&decode)
            .map_err(|e| format!("linking filesrc to decodebin3: {e}"))?;
        Ok(decode)
    })
}

/// Plays a presentation from its manifest URL with `uridecodebin3`, which
/// picks `hlsdemux2` or `dashdemux2` and follows the manifest as a player
/// does (variants chosen by its own adaptation logic).
pub fn read_url(url: &str, deadline: Duration) -> Reading {
    read(deadline, |pipeline| {
        let decode = element("uridecodebin3", Some(("uri", url)))?;
        pipeline
            .add(&decode)
            .map_err(|e| format!("building the pipeline: {e}"))?;
        Ok(decode)
    })
}

/// A pipeline `build` fills, read by [`run`] from the decoding element it returns.
fn read(
    deadline: Duration,
    build: impl FnOnce(&gst::Pipeline) -> Result<gst::Element, String>,
) -> Reading {
    let pipeline = gst::Pipeline::new();
    match build(&pipeline) {
        Ok(decode) => run(pipeline, &decode, deadline),
        Err(error) => failed(error),
    }
}

/// The element `factory`, with one string property when given.
fn element(factory: &str, property: Option<(&str, &str)>) -> Result<gst::Element, String> {
    let mut builder = gst::ElementFactory::make(factory);
    if let Some((name, value)) = property {
        builder = builder.property(name, value);
    }
    builder.build().map_err(|e| format!("{factory}: {e}"))
}

fn failed(error: String) -> Reading {
    Reading {
        error: Some(error),
        ..Reading::default()
    }
}

fn seconds(time: Option<gst::ClockTime>) -> Option<f64> {
    time.map(|t| t.nseconds() as f64 / 1e9)
}

/// Links every decoded stream `decode` exposes to an appsink that records
/// its buffers, runs the pipeline to its end (or error, or `deadline`) as
/// fast as it decodes, and tears it down.
fn run(pipeline: gst::Pipeline, decode: &gst::Element, deadline: Duration) -> Reading {
    let reading = Arc::new(Mutex::new(Reading::default()));
    let decoded = Arc::new(AtomicU64::new(0));
    let sink_decoded = Arc::clone(&decoded);
    let weak_pipeline = pipeline.downgrade();
    let sink_reading = Arc::clone(&reading);
    decode.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak_pipeline.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let kind = match caps.structure(0).map(|s| s.name().as_str()) {
            Some(name) if name.starts_with("video/") => MediaKind::Video,
            Some(name) if name.starts_with("audio/") => MediaKind::Audio,
            _ => return,
        };
        let track_reading = Arc::clone(&sink_reading);
        let track_decoded = Arc::clone(&sink_decoded);
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        track_decoded.fetch_add(1, Ordering::Relaxed);
                        if let Some(buffer) = sample.buffer() {
                            // Stream time: the position in the media a player
                            // shows, after the demuxer's edit list and segment.
                            let segment = sample
                                .segment()
                                .and_then(|s| s.downcast_ref::<gst::ClockTime>());
                            let pts = buffer.pts().map(|pts| {
                                segment.and_then(|s| s.to_stream_time(pts)).unwrap_or(pts)
                            });
                            let pts = seconds(pts);
                            let duration = seconds(buffer.duration()).unwrap_or(0.0);
                            if let Ok(mut reading) = track_reading.lock() {
                                let track = match kind {
                                    MediaKind::Video => &mut reading.video,
                                    MediaKind::Audio => &mut reading.audio,
                                };
                                track
                                    .get_or_insert_with(Default::default)
                                    .add(pts, duration);
                            }
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build();
        let element = sink.upcast_ref::<gst::Element>();
        if pipeline.add(element).is_err() {
            return;
        }
        let _ = element.sync_state_with_parent();
        if let Some(sink_pad) = element.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
    });

    let outcome = drive(&pipeline, deadline, &decoded);
    let _ = pipeline.set_state(gst::State::Null);
    let mut reading = reading.lock().map(|r| r.clone()).unwrap_or_default();
    if let Err(error) = outcome {
        reading.error.get_or_insert(error);
    }
    reading
}

/// Plays the pipeline until end of stream: `Err` with GStreamer's error
/// (and the element that raised it), a stall or the deadline.
fn drive(pipeline: &gst::Pipeline, deadline: Duration, decoded: &AtomicU64) -> Result<(), String> {
    let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot start playing: {e}"))?;
    let started = Instant::now();
    let (mut seen, mut last_progress) = (0, Instant::now());
    loop {
        let now_decoded = decoded.load(Ordering::Relaxed);
        if now_decoded != seen {
            (seen, last_progress) = (now_decoded, Instant::now());
        } else if last_progress.elapsed() >= STALL {
            return Err(format!(
                "stalled: nothing decoded for {} s (after {seen} buffers)",
                STALL.as_secs()
            ));
        }
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(format!(
                "not finished after {} s",
                deadline.as_secs_f64().round()
            ));
        }
        let Some(message) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(left.as_millis().min(500) as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(error) => {
                let from = error
                    .src()
                    .map(|s| s.name().to_string())
                    .unwrap_or_default();
                return Err(format!("{from}: {}", error.error()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_readings_span_from_the_earliest_to_the_latest_end() {
        let mut track = TrackReading::default();
        track.add(Some(0.5), 0.25);
        track.add(Some(0.0), 0.25);
        track.add(None, 0.25);
        assert_eq!(track.buffers, 3);
        assert_eq!(track.start_s, Some(0.0));
        assert_eq!(track.end_s, Some(0.75));
        assert_eq!(track.duration_s(), 0.75);
    }
}
