//! Live: the ladder of a stream an RTMP publisher sends, transcoded in the
//! process that holds the connection, packaged as CMAF (ISO/IEC 23000-19)
//! and published as live HLS (RFC 8216 6.2.2, sliding window) and dynamic
//! DASH (ISO/IEC 23009-1 5.4), or for low-latency streams Low-Latency HLS
//! (draft-pantos-hls-rfc8216bis) and low-latency DASH; and the end of a
//! broadcast (recorded as a VOD asset, or removed).
//!
//! - [`flv`]: the FLV framing of what RTMP carries (the pipeline's input);
//! - [`input`]: that byte stream read by FFmpeg through custom I/O;
//! - [`session`]: one publish session, from bytes to published segments;
//! - [`manifests`]: the manifests, rendered from the broadcast's rows;
//! - [`metrics`]: degraded streams and the steps their ladders took;
//! - [`edge`]: the parts of low-latency streams and their LL-HLS playlists,
//!   held in memory, with blocking reloads (served through the relay);
//! - [`finish`]: the `finish_broadcast` job.
//!
//! The decoder, filter graph, encoders and segmenter are the VOD pipeline's
//! (`transcode::pipeline::run_input`), with the live ladder's settings, so
//! live and VOD outputs line up the same way across rungs.

pub mod edge;
pub mod finish;
pub mod flv;
pub mod input;
pub mod manifests;
pub mod metrics;
pub mod session;

pub use metrics::LiveMetrics;
pub use session::{IngestStats, LiveContext, SessionEnd, SessionInput};

/// Why live work failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// Postgres.
    #[error("database: {0}")]
    Database(String),
    /// The object store.
    #[error("storage: {0}")]
    Storage(String),
    /// Our own inconsistency.
    #[error("{0}")]
    Internal(String),
}
