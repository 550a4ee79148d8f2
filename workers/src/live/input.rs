//! The live input: FLV bytes from the RTMP connection, read by FFmpeg's
//! `flv` demuxer through custom I/O on the pipeline's blocking thread.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ffmpeg_next as ff;
use tokio::sync::mpsc;

use crate::transcode::TranscodeError;

/// A blocking [`Read`] over the chunks the connection sends; the end of
/// the channel (the publisher left) is the end of the stream.
pub struct ChannelReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
    /// Chunks handed over so far (the first is the FLV header).
    delivered: u64,
    /// Wall clock when the first media tag reached the demuxer: the
    /// session's media time 0.
    first_media: Arc<OnceLock<DateTime<Utc>>>,
}

impl ChannelReader {
    /// A reader over `chunks`; `first_media` is set when the first chunk
    /// after the FLV header is read.
    pub fn new(chunks: mpsc::Receiver<Bytes>, first_media: Arc<OnceLock<DateTime<Utc>>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
            delivered: 0,
            first_media,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.delivered += 1;
                    if self.delivered == 2 {
                        let _ = self.first_media.set(Utc::now());
                    }
                    self.current = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Opens the FLV stream for the pipeline. The demuxer looks at no more
/// than a second of media before decoding starts (`analyzeduration`: it is
/// delay). The packets it read to look are kept and decoded (no
/// `nobuffer`, which would drop them and start the video at the second
/// keyframe).
pub fn open(reader: ChannelReader) -> Result<ff::format::context::Input, TranscodeError> {
    crate::transcode::init_ffmpeg();
    let io = ff::format::context::StreamIo::from_read(reader)
        .map_err(|e| TranscodeError::Internal(format!("custom I/O for the live input: {e}")))?;
    let mut options = ff::Dictionary::new();
    options.set("analyzeduration", "1000000");
    options.set("probesize", "2000000");
    ff::format::input_from_stream(io, Some("live.flv"), Some(options)).map_err(|e| {
        TranscodeError::input(
            "unreadable_stream",
            format!("the stream could not be read as FLV media ({e}): it sent no audio or video FFmpeg can open"),
        )
    })
}
