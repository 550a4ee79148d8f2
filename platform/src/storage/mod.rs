//! Object storage: one interface, two backends.
//!
//! - [`s3::S3Store`]: any S3-compatible store through aws-sdk-s3 (custom
//!   endpoint, path-style addressing): MinIO, SeaweedFS, AWS S3.
//! - [`local::LocalStore`]: a directory, the embedded default.
//!
//! [`tiers::Tiers`] holds one store per storage tier (`hot` and the colder
//! ones of `storage.tiers`).
//!
//! Both stream: puts read the body in parts (multipart above the threshold),
//! gets hand back a stream of chunks, so memory stays bounded whatever the
//! object size. Both also expose multipart uploads directly
//! ([`ObjectStore::create_multipart`] and the calls after it), for writers
//! that produce one object over several requests (tus uploads); the local
//! backend emulates them. [`reader::ObjectReader`] reads parts of an object
//! synchronously (ranged GETs), for FFmpeg's custom I/O. Keys come from [`cascade_schemas::keys`]; content types from
//! the key's [`cascade_schemas::ObjectClass`].

pub mod local;
pub mod reader;
pub mod s3;
pub mod tiers;

use std::fmt;

use bytes::{Bytes, BytesMut};
use cascade_schemas::ObjectKey;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::StorageConfig;

/// Storage errors, classified so callers can decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under the key.
    #[error("object {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A conditional write found the object already there.
    #[error("object {key} already exists")]
    PreconditionFailed {
        /// The key.
        key: String,
    },
    /// The requested byte range lies outside the object.
    #[error("range not satisfiable for an object of {size} bytes")]
    InvalidRange {
        /// The object's size.
        size: u64,
    },
    /// The body handed to a put could not be read (e.g. the uploading client went away).
    #[error("reading the data to store failed: {0}")]
    BodyRead(#[source] std::io::Error),
    /// The store is unreachable, throttling or failing; retrying later may work.
    #[error("storage temporarily unavailable: {0}")]
    Transient(String),
    /// The store refused the request for good (credentials, bucket, config).
    #[error("storage error: {0}")]
    Permanent(String),
    /// The store has no space left (a full disk or quota; MinIO's
    /// `XMinioStorageFull`, HTTP 507). Retryable: an operator frees space
    /// or adds capacity, and writers wait as through an outage.
    #[error("storage full: {0}")]
    Full(String),
}

impl StorageError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Full(_))
    }

    /// Whether the object was not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// A byte range of an object, as in an HTTP `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first..=last`, clamped to the object's end.
    Inclusive {
        /// First byte.
        first: u64,
        /// Last byte (inclusive).
        last: u64,
    },
    /// From `first` to the end.
    From(u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Resolves against an object of `size` bytes to `(first, last)` inclusive.
    pub fn resolve(&self, size: u64) -> Result<(u64, u64), StorageError> {
        let resolved = match *self {
            Self::Inclusive { first, last } if first <= last && first < size => {
                Some((first, last.min(size - 1)))
            }
            Self::From(first) if first < size => Some((first, size - 1)),
            Self::Suffix(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size - 1)),
            _ => None,
        };
        resolved.ok_or(StorageError::InvalidRange { size })
    }

    fn header_value(&self) -> String {
        match *self {
            Self::Inclusive { first, last } => format!("bytes={first}-{last}"),
            Self::From(first) => format!("bytes={first}-"),
            Self::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// What the store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size of the whole object in bytes.
    pub size: u64,
    /// Entity tag (quoted, as HTTP carries it), when the store gives one.
    pub etag: Option<String>,
    /// Last write time, when known.
    pub last_modified: Option<DateTime<Utc>>,
    /// Storage class, when the store says (S3 `HEAD` and listings; absent
    /// on stores that do not keep one and on the local backend).
    pub storage_class: Option<String>,
}

/// Why [`ObjectBody::copy_to`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the object failed.
    #[error("{0}")]
    Read(StorageError),
    /// Writing the copy failed.
    #[error("{0}")]
    Write(std::io::Error),
}

/// A streamed object body.
pub struct ObjectBody {
    /// The object's metadata (size is the whole object's).
    pub meta: ObjectMeta,
    /// The bytes served, inclusive, when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// The bytes, in chunks.
    pub stream: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBody")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish()
    }
}

impl ObjectBody {
    /// Reads the whole body into memory. For small objects only (manifests, tests).
    pub async fn collect(mut self) -> Result<Bytes, StorageError> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    /// Streams the body into `out` (a scratch file, say) and flushes it;
    /// returns the bytes written.
    pub async fn copy_to(
        mut self,
        out: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64, CopyError> {
        let mut written = 0u64;
        while let Some(chunk) = self.stream.next().await {
            let chunk = chunk.map_err(CopyError::Read)?;
            out.write_all(&chunk).await.map_err(CopyError::Write)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(CopyError::Write)?;
        Ok(written)
    }

    /// Number of bytes the stream yields.
    pub fn len(&self) -> u64 {
        match self.range {
            Some((first, last)) => last - first + 1,
            None => self.meta.size,
        }
    }

    /// Whether the stream yields nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Result of a create-if-absent write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Created,
    /// An object was already there; it was left as it was.
    AlreadyExists,
}

/// Smallest part a multipart upload accepts, except the last (S3's rule).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part a multipart upload accepts (S3's rule).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Highest part number of a multipart upload (S3's rule; the lowest is 1).
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Tuning shared by both backends.
#[derive(Debug, Clone, Copy)]
pub struct PutTuning {
    /// Bodies above this go multipart.
    pub multipart_threshold: u64,
    /// Bytes per part.
    pub part_size: usize,
    /// Parts in flight per object.
    pub upload_concurrency: usize,
}

impl From<&StorageConfig> for PutTuning {
    fn from(c: &StorageConfig) -> Self {
        Self {
            multipart_threshold: c.multipart_threshold.0,
            part_size: c.part_size.as_usize(),
            upload_concurrency: c.upload_concurrency,
        }
    }
}

/// The object store Cascade's roles share.
#[derive(Clone)]
pub enum ObjectStore {
    /// A local directory.
    Local(local::LocalStore),
    /// An S3-compatible store.
    S3(s3::S3Store),
}

impl ObjectStore {
    /// Builds the configured backend. For S3 this creates the bucket if
    /// allowed and applies lifecycle rules (refusals are logged, not fatal).
    pub async fn from_config(config: &StorageConfig) -> Result<Self, StorageError> {
        match &config.s3 {
            Some(s3) => Ok(Self::S3(
                s3::S3Store::connect(s3, PutTuning::from(config)).await?,
            )),
            None => Ok(Self::Local(
                local::LocalStore::open(&config.local_root)
                    .await?
                    .abandoning_after(config.local_abandoned_after),
            )),
        }
    }

    /// Short backend description for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(s) => format!("local directory {}", s.root().display()),
            Self::S3(s) => format!("s3 bucket {}", s.bucket()),
        }
    }

    /// Streams `body` into the object at `key`, replacing any object there.
    /// Readers see either the old object or the whole new one. Returns the
    /// number of bytes stored.
    pub async fn put(
        &self,
        key: &ObjectKey,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64, StorageError> {
        match self {
            Self::Local(s) => s.put(key, body).await,
            Self::S3(s) => s.put(key, body).await,
        }
    }

    /// Stores `bytes` at `key`.
    pub async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        match self {
            Self::Local(s) => s.put(key, &mut bytes.as_ref()).await.map(drop),
            Self::S3(s) => s.put_bytes(key, bytes).await,
        }
    }

    /// Stores `bytes` at `key` only if no object is there.
    pub async fn put_if_absent(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
    ) -> Result<PutOutcome, StorageError> {
        match self {
            Self::Local(s) => s.put_if_absent(key, bytes).await,
            Self::S3(s) => s.put_if_absent(key, bytes).await,
        }
    }

    /// Streams an object, or part of it.
    pub async fn get(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, StorageError> {
        match self {
            Self::Local(s) => s.get(key, range).await,
            Self::S3(s) => s.get(key, range).await,
        }
    }

    /// An object's metadata.
    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, StorageError> {
        match self {
            Self::Local(s) => s.head(key).await,
            Self::S3(s) => s.head(key).await,
        }
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        match self {
            Self::Local(s) => s.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }

    /// Deletes one object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self {
            Self::Local(s) => s.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }

    /// Deletes every object under `prefix`; returns how many. Idempotent.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        if prefix.is_empty() {
            return Err(StorageError::Permanent(
                "refusing to delete with an empty prefix".to_owned(),
            ));
        }
        match self {
            Self::Local(s) => s.delete_prefix(prefix).await,
            Self::S3(s) => s.delete_prefix(prefix).await,
        }
    }

    /// Starts a multipart upload of the object at `key`; returns its id.
    /// Parts are added with [`Self::upload_part`]; nothing is visible at
    /// `key` until [`Self::complete_multipart`].
    pub async fn create_multipart(&self, key: &ObjectKey) -> Result<String, StorageError> {
        match self {
            Self::Local(s) => s.create_multipart(key).await,
            Self::S3(s) => s.create_multipart(key).await,
        }
    }

    /// Streams exactly `length` bytes of `body` as part `part_number`
    /// (1..=10000) of the multipart upload `upload_id`; returns the part's
    /// ETag. Reads no further than `length`, so one reader can feed several
    /// parts; a body that ends early is a [`StorageError::BodyRead`]. The
    /// bytes are not buffered beyond a few chunks. Uploading a part number
    /// again replaces that part. Every part but the last must be at least
    /// [`MIN_PART_SIZE`] when the upload is completed.
    pub async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        length: u64,
        body: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<String, StorageError> {
        check_part(part_number, length)?;
        match self {
            Self::Local(s) => {
                s.upload_part(key, upload_id, part_number, length, body)
                    .await
            }
            Self::S3(s) => {
                s.upload_part(key, upload_id, part_number, length, body)
                    .await
            }
        }
    }

    /// Copies the whole object at `source` (`length` bytes, at most
    /// [`MAX_PART_SIZE`]) as part `part_number` of the multipart upload
    /// `upload_id` of `key`, inside the store (S3 UploadPartCopy: the bytes
    /// do not pass through this process); returns the part's ETag. The same
    /// size rules as [`Self::upload_part`] apply at completion.
    pub async fn upload_part_copy(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u32,
        source: &ObjectKey,
        length: u64,
    ) -> Result<String, StorageError> {
        check_part(part_number, length)?;
        match self {
            Self::Local(s) => {
                s.upload_part_copy(key, upload_id, part_number, source, length)
                    .await
            }
            Self::S3(s) => {
                s.upload_part_copy(key, upload_id, part_number, source, length)
                    .await
            }
        }
    }

    /// Completes a multipart upload from `parts` (part number, ETag), in
    /// ascending part-number order: the object at `key` becomes their
    /// concatenation, at once. Uploaded parts not listed are discarded. An
    /// upload that no longer exists (aborted, or completed: S3 may also
    /// answer a repeated completion as the first) is
    /// [`StorageError::NotFound`].
    pub async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), StorageError> {
        if parts.is_empty() {
            return Err(StorageError::Permanent(
                "a multipart upload needs at least one part".to_owned(),
            ));
        }
        if !parts.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(StorageError::Permanent(
                "multipart parts must be in ascending part-number order".to_owned(),
            ));
        }
        match self {
            Self::Local(s) => s.complete_multipart(key, upload_id, parts).await,
            Self::S3(s) => s.complete_multipart(key, upload_id, parts).await,
        }
    }

    /// Abandons a multipart upload and frees its parts. Idempotent: an
    /// upload that no longer exists is not an error.
    pub async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        match self {
            Self::Local(s) => s.abort_multipart(key, upload_id).await,
            Self::S3(s) => s.abort_multipart(key, upload_id).await,
        }
    }

    /// Removes multipart uploads and temporary files that a process which
    /// died left behind; returns how many. The local backend sweeps its
    /// directory (`storage.local_abandoned_after`); on S3 the bucket's
    /// lifecycle rule does this, so there is nothing to do here.
    pub async fn remove_abandoned(&self) -> Result<usize, StorageError> {
        match self {
            Self::Local(s) => s.remove_abandoned_now().await,
            Self::S3(_) => Ok(0),
        }
    }

    /// Checks the store answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self {
            Self::Local(s) => s.ping().await,
            Self::S3(s) => s.ping().await,
        }
    }
}

/// Reads from `reader` until `limit` bytes or end of input.
/// What S3 refuses of any part, checked before a request is sent.
fn check_part(part_number: u32, length: u64) -> Result<(), StorageError> {
    if !(1..=MAX_PART_NUMBER).contains(&part_number) {
        return Err(StorageError::Permanent(format!(
            "part number {part_number} is outside 1..={MAX_PART_NUMBER}"
        )));
    }
    if length > MAX_PART_SIZE {
        return Err(StorageError::Permanent(format!(
            "a part of {length} bytes is over the {MAX_PART_SIZE} bytes allowed"
        )));
    }
    Ok(())
}

pub(crate) async fn read_chunk(
    reader: &mut (dyn AsyncRead + Unpin + Send),
    limit: usize,
) -> Result<Bytes, StorageError> {
    // Grow as data arrives: a large limit must not allocate up front.
    let mut buf = BytesMut::with_capacity(limit.min(1 << 20));
    while buf.len() < limit {
        let before = buf.len();
        // Limit the read so the buffer never grows past `limit`.
        let mut take = (&mut *reader).take((limit - before) as u64);
        let n = take
            .read_buf(&mut buf)
            .await
            .map_err(StorageError::BodyRead)?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_http() {
        assert_eq!(
            ByteRange::Inclusive { first: 0, last: 9 }
                .resolve(100)
                .unwrap(),
            (0, 9)
        );
        assert_eq!(
            ByteRange::Inclusive {
                first: 90,
                last: 200
            }
            .resolve(100)
            .unwrap(),
            (90, 99)
        );
        assert_eq!(ByteRange::From(50).resolve(100).unwrap(), (50, 99));
        assert_eq!(ByteRange::Suffix(10).resolve(100).unwrap(), (90, 99));
        assert_eq!(ByteRange::Suffix(500).resolve(100).unwrap(), (0, 99));
        assert!(ByteRange::From(100).resolve(100).is_err());
        assert!(ByteRange::Inclusive { first: 5, last: 4 }
            .resolve(100)
            .is_err());
        assert!(ByteRange::Suffix(0).resolve(100).is_err());
        assert!(ByteRange::Suffix(5).resolve(0).is_err());
    }

    #[tokio::test]
    async fn read_chunk_stops_at_limit_and_eof() {
        let data = vec![7u8; 25];
        let mut reader: &[u8] = &data;
        assert_eq!(read_chunk(&mut reader, 10).await.unwrap().len(), 10);
        assert_eq!(read_chunk(&mut reader, 10).await.unwrap().len(), 10);
        assert_eq!(read_chunk(&mut reader, 10).await.unwrap().len(), 5);
        assert_eq!(read_chunk(&mut reader, 10).await.unwrap().len(), 0);
    }
}
