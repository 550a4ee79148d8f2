//! Integrated loudness (ITU-R BS.1770 as EBU R 128 applies it, FFmpeg's
//! `ebur128` filter), channels and sample rate of a file's audio: how
//! `cascade qa` judges an audio rendition against its reference, rather
//! than by the bits it spent (an AAC encoder rightly spends far less on a
//! tone or speech than on music).

use std::path::Path;

use cascade_workers::probe::{audio_filter_graph, AudioInput};
use ffmpeg_next as ff;

/// What was measured: the reference's audio (none without audio; its
/// loudness downmixed to the renditions' channels) and each audio
/// rendition's, by name.
#[derive(Debug, Default)]
pub struct Loudness {
    pub reference: Option<Result<Measured, String>>,
    pub renditions: Vec<(String, Result<Measured, String>)>,
}

impl Loudness {
    /// Measures each audio rendition `(name, file)`, then the reference
    /// (when it has audio) downmixed to the renditions' channels.
    pub fn measure(reference: Option<&Path>, renditions: &[(String, std::path::PathBuf)]) -> Self {
        let measured: Vec<(String, Result<Measured, String>)> = renditions
            .iter()
            .map(|(name, file)| (name.clone(), integrated_lufs(file, None)))
            .collect();
        let channels = measured
            .iter()
            .filter_map(|(_, m)| m.as_ref().ok().map(|m| m.channels))
            .max();
        Self {
            reference: reference.map(|path| integrated_lufs(path, channels)),
            renditions: measured,
        }
    }
}

/// The `ebur128` filter's running integrated loudness, on each frame it outputs.
const INTEGRATED: &str = "lavfi.r128.I";

/// A file's audio as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Integrated loudness, LUFS.
    pub lufs: f64,
    /// Channels decoded (before any downmix).
    pub channels: u16,
    /// Samples per second decoded.
    pub sample_rate: u32,
}

/// Integrated loudness of the best audio stream of `path`, in LUFS, first
/// downmixed to `downmix` channels when it has more (a reference in 5.1
/// against a stereo rendition: like against like, as FFmpeg's default
/// downmix, which the transcoder uses, makes it).
pub fn integrated_lufs(path: &Path, downmix: Option<u16>) -> Result<Measured, String> {
    let mut input =
        ff::format::input(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let stream = input
        .streams()
        .best(ff::media::Type::Audio)
        .ok_or_else(|| format!("{} has no audio stream", path.display()))?;
    let index = stream.index();
    let time_base = stream.time_base();
    let mut decoder = ff::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|context| context.decoder().audio())
        .map_err(|e| format!("cannot decode the audio of {}: {e}", path.display()))?;
    let mut meter = Meter {
        graph: None,
        time_base,
        downmix,
        channels: 0,
        sample_rate: 0,
        lufs: None,
    };
    let mut decoded = ff::frame::Audio::empty();
    for (stream, packet) in input.packets() {
        if stream.index() != index || decoder.send_packet(&packet).is_err() {
            continue;
        }
        while decoder.receive_frame(&mut decoded).is_ok() {
            meter.add(&decoded)?;
        }
    }
    if decoder.send_eof().is_ok() {
        while decoder.receive_frame(&mut decoded).is_ok() {
            meter.add(&decoded)?;
        }
    }
    meter.finish()
}

/// The `ebur128` filter graph, built on the first decoded frame (its
/// format, rate and layout), and the last integrated loudness it gave.
struct Meter {
    graph: Option<ff::filter::Graph>,
    time_base: ff::Rational,
    downmix: Option<u16>,
    channels: u16,
    sample_rate: u32,
    lufs: Option<f64>,
}

impl Meter {
    fn add(&mut self, frame: &ff::frame::Audio) -> Result<(), String> {
        if self.graph.is_none() {
            self.channels = frame.channels();
            self.sample_rate = frame.rate();
            let downmix = self.downmix.filter(|to| *to < frame.channels());
            self.graph =
                Some(graph_for(frame, self.time_base, downmix).map_err(|e| e.to_string())?);
        }
        if let Some(mut source) = self.graph.as_mut().and_then(|g| g.get("in")) {
            source
                .source()
                .add(frame)
                .map_err(|e| format!("loudness filter: {e}"))?;
        }
        self.drain();
        Ok(())
    }

    fn drain(&mut self) {
        let Some(graph) = self.graph.as_mut() else {
            return;
        };
        let mut filtered = ff::frame::Audio::empty();
        while let Some(mut sink) = graph.get("out") {
            if sink.sink().frame(&mut filtered).is_err() {
                break;
            }
            if let Some(value) = filtered
                .metadata()
                .get(INTEGRATED)
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                self.lufs = Some(value);
            }
        }
    }

    fn finish(mut self) -> Result<Measured, String> {
        if let Some(mut source) = self.graph.as_mut().and_then(|g| g.get("in")) {
            let _ = source.source().flush();
        }
        self.drain();
        let lufs = self
            .lufs
            .filter(|lufs| lufs.is_finite())
            .ok_or_else(|| "no loudness measured (no audio decoded)".to_owned())?;
        Ok(Measured {
            lufs,
            channels: self.channels,
            sample_rate: self.sample_rate,
        })
    }
}

fn graph_for(
    frame: &ff::frame::Audio,
    time_base: ff::Rational,
    downmix: Option<u16>,
) -> Result<ff::filter::Graph, ff::Error> {
    let spec = match downmix {
        Some(channels) => format!(
            "aformat=channel_layouts=0x{:x},ebur128=metadata=1",
            ff::ChannelLayout::default(i32::from(channels)).bits()
        ),
        None => "ebur128=metadata=1".to_owned(),
    };
    audio_filter_graph(
        AudioInput {
            time_base,
            rate: frame.rate(),
            format: frame.format(),
            layout: frame.channel_layout(),
            channels: frame.channels(),
        },
        &spec,
    )
}
