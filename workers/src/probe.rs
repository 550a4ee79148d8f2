//! The probe facade: what other crates need of the FFmpeg side without
//! reaching into the transcoder. Ingest probes uploads (here or in a
//! contained child process); `cascade qa` shares the transcoder's media
//! rules (display rotation, the downmix) so both agree on what is upright
//! and how loud.

pub use crate::transcode::init_ffmpeg;
pub use crate::transcode::isolated::{ChildProber, ProbeReport, ProbeTarget};
pub use crate::transcode::pipeline::{
    audio_filter_graph, probe_file, probe_reader, rotation_of, AudioInput, ProbeSummary,
};
