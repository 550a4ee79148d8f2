//! Request bodies as bounded streams: a pace (per-chunk timeout, minimum
//! rate, deadline: [`crate::limits::paced`]), a byte limit and an optional
//! checksum, all while the bytes flow to storage. Memory stays at one chunk.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha1::Digest;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

use crate::limits::{paced, BodyTimedOut, Pace};

/// Marker inside the I/O error raised when a body exceeds its limit.
#[derive(Debug, thiserror::Error)]
#[error("body exceeds {max} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub max: u64,
}

/// A checksum being computed over the body.
pub enum Hasher {
    /// tus `sha1`.
    Sha1(sha1::Sha1),
    /// tus `sha256`.
    Sha256(sha2::Sha256),
}

impl Hasher {
    /// For a tus algorithm name.
    pub fn for_algorithm(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1(sha1::Sha1::new())),
            "sha256" => Some(Self::Sha256(sha2::Sha256::new())),
            _ => None,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Reads a request body under the given limits.
pub struct BodyReader {
    inner: StreamReader<ChunkStream, Bytes>,
    hasher: Option<Hasher>,
    read: u64,
}

impl BodyReader {
    /// `limit`: most bytes accepted; `pace`: how fast they must come (from
    /// the first read on).
    pub fn new(body: Body, limit: u64, pace: Pace) -> Self {
        let mut total = 0u64;
        let guarded = paced(body.into_data_stream(), pace).map(move |chunk| {
            let chunk = chunk?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(std::io::Error::other(BodyTooLarge { max: limit }));
            }
            Ok(chunk)
        });
        Self {
            inner: StreamReader::new(Box::pin(guarded) as ChunkStream),
            hasher: None,
            read: 0,
        }
    }

    /// Also hashes every byte.
    pub fn hash_with(mut self, hasher: Hasher) -> Self {
        self.hasher = Some(hasher);
        self
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The checksum, if one was asked for.
    pub fn take_hasher(&mut self) -> Option<Hasher> {
        self.hasher.take()
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                this.read += new.len() as u64;
                if let Some(hasher) = this.hasher.as_mut() {
                    hasher.update(new);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Maps an I/O error from a [`BodyReader`] back to its cause.
pub fn classify(error: &std::io::Error) -> Option<crate::error::ApiError> {
    let inner = error.get_ref()?;
    if let Some(too_large) = inner.downcast_ref::<BodyTooLarge>() {
        return Some(crate::error::ApiError::TooLarge { max: too_large.max });
    }
    if let Some(timed_out) = inner.downcast_ref::<BodyTimedOut>() {
        return Some(crate::error::ApiError::BodyTimeout(timed_out.to_string()));
    }
    None
}
