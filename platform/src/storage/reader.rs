//! A blocking `Read + Seek` view of one stored object, fetched by ranged
//! GETs as it is read.
//!
//! For libraries that read files synchronously but need only parts of a
//! large object: FFmpeg's demuxers, through custom I/O, probing an upload
//! read its header and index (a few MiB), not the whole source, and a
//! transcode decodes straight from storage. Nothing is copied to local disk,
//! so neither an ingest replica nor a worker needs scratch space sized for
//! the largest upload. Reading on from one block to the next fetches the
//! block after in the background (read-ahead), so a sequential reader such
//! as a decoder rarely waits on a GET.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cascade_schemas::ObjectKey;

use super::{ByteRange, ObjectStore};

/// Bytes per ranged GET (aligned to multiples of this).
pub const READ_BLOCK: u64 = 1024 * 1024;
/// Blocks kept: a demuxer alternates between the index and the media.
const CACHED_BLOCKS: usize = 4;

/// Reads `key` (`length` bytes) from `store` by ranged GETs of
/// [`READ_BLOCK`] bytes, keeping the last few blocks.
///
/// Blocks on `runtime`: use it from a blocking thread (such as
/// `tokio::task::spawn_blocking`), never from an async task.
pub struct ObjectReader {
    store: ObjectStore,
    key: ObjectKey,
    length: u64,
    position: u64,
    runtime: tokio::runtime::Handle,
    /// `(first byte, bytes)`, most recently used last.
    cache: VecDeque<(u64, Bytes)>,
    fetched: Arc<AtomicU64>,
    /// The next block, being fetched: `(first byte, fetch)`.
    ahead: Option<(u64, tokio::task::JoinHandle<io::Result<Bytes>>)>,
    /// How long a transiently failing GET is retried (storage outages).
    patience: std::time::Duration,
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if let Some((_, fetch)) = self.ahead.take() {
            fetch.abort();
        }
    }
}

impl ObjectReader {
    /// A reader of the first `length` bytes of `key`, at offset 0.
    pub fn new(
        store: ObjectStore,
        key: ObjectKey,
        length: u64,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            store,
            key,
            length,
            position: 0,
            runtime,
            cache: VecDeque::with_capacity(CACHED_BLOCKS),
            fetched: Arc::new(AtomicU64::new(0)),
            ahead: None,
            patience: std::time::Duration::ZERO,
        }
    }

    /// Retries a GET that fails transiently, with backoff, for up to
    /// `patience` (a reader that decodes a whole source waits out a storage
    /// outage instead of failing the job). Default: no retry.
    pub fn with_patience(mut self, patience: std::time::Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Fetches the block starting at `start`.
    fn fetch(
        &self,
        start: u64,
    ) -> impl std::future::Future<Output = io::Result<Bytes>> + Send + 'static {
        let last = (start + READ_BLOCK).min(self.length) - 1;
        let wanted = last - start + 1;
        let (store, key) = (self.store.clone(), self.key.clone());
        let fetched = Arc::clone(&self.fetched);
        let patience = self.patience;
        async move {
            let range = Some(ByteRange::Inclusive { first: start, last });
            let bytes = crate::outage::retry(
                patience,
                None,
                super::StorageError::is_retryable,
                |error, retry_in| {
                    tracing::warn!(key = %key, error = %error, retry_in = ?retry_in, "storage unavailable; retrying a read");
                },
                || async {
                    store.get(&key, range).await?.collect().await
                },
            )
            .await
            .map_err(io::Error::other)?;
            if bytes.len() as u64 != wanted {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{key} returned {} bytes for bytes {start}-{last}",
                        bytes.len()
                    ),
                ));
            }
            fetched.fetch_add(wanted, Ordering::Relaxed);
            Ok(bytes)
        }
    }

    /// Bytes fetched from the store so far (what reading cost).
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The count behind [`Self::bytes_fetched`], readable after the reader
    /// was handed to a library that keeps it.
    pub fn fetched_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.fetched)
    }

    /// The cached block holding `position`, fetching it if needed.
    fn block_at(&mut self, position: u64) -> io::Result<&Bytes> {
        let start = position / READ_BLOCK * READ_BLOCK;
        if let Some(found) = self.cache.iter().position(|(first, _)| *first == start) {
            // Most recently used last.
            if let Some(entry) = self.cache.remove(found) {
                self.cache.push_back(entry);
            }
        } else {
            let bytes = match self.ahead.take() {
                Some((first, fetch)) if first == start => {
                    self.runtime.block_on(fetch).map_err(io::Error::other)??
                }
                other => {
                    if let Some((_, stale)) = other {
                        stale.abort();
                    }
                    self.runtime.block_on(self.fetch(start))?
                }
            };
            // Reading on from the previous block: fetch the next one now, on
            // a runtime whose workers run it meanwhile (a current-thread
            // runtime runs tasks only while its own thread drives it).
            let next = start + READ_BLOCK;
            let sequential = start >= READ_BLOCK
                && self
                    .cache
                    .iter()
                    .any(|(first, _)| *first == start - READ_BLOCK);
            let background =
                self.runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
            if sequential && background && next < self.length {
                self.ahead = Some((next, self.runtime.spawn(self.fetch(next))));
            }
            if self.cache.len() == CACHED_BLOCKS {
                self.cache.pop_front();
            }
            self.cache.push_back((start, bytes));
        }
        self.cache
            .back()
            .map(|(_, bytes)| bytes)
            .ok_or_else(|| io::Error::other("block cache empty after a fetch"))
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.position >= self.length {
            return Ok(0);
        }
        let position = self.position;
        let block = self.block_at(position)?;
        let within = (position % READ_BLOCK) as usize;
        let n = buf.len().min(block.len() - within);
        buf[..n].copy_from_slice(&block[within..within + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => self.length.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the object",
            ));
        };
        self.position = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// `data` stored in a local store of its own (kept while the directory is).
    fn stored(
        runtime: &tokio::runtime::Runtime,
        data: &[u8],
    ) -> (tempfile::TempDir, ObjectStore, ObjectKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::scratch(uuid::Uuid::new_v4());
        let store = runtime.block_on(async {
            let store = ObjectStore::Local(LocalStore::open(dir.path()).await.unwrap());
            store
                .put_bytes(&key, Bytes::copy_from_slice(data))
                .await
                .unwrap();
            store
        });
        (dir, store, key)
    }

    #[test]
    fn reads_and_seeks_across_blocks_fetching_only_what_is_read() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let data = pattern(3 * READ_BLOCK as usize + 1000);
        let (_dir, store, key) = stored(&runtime, &data);
        let handle = runtime.handle().clone();
        // Blocking reads, as from spawn_blocking: off the runtime's thread.
        let (fetched, tail, across, end, past) = std::thread::spawn(move || {
            let mut reader = ObjectReader::new(store, key, data.len() as u64, handle);
            let mut tail = Vec::new();
            reader.seek(SeekFrom::End(-1500)).unwrap();
            reader.read_to_end(&mut tail).unwrap();
            // The two blocks the tail spans, nothing before them.
            assert_eq!(reader.bytes_fetched(), READ_BLOCK + 1000);
            // A read that spans a block boundary.
            let mut across = vec![0u8; 300];
            reader.seek(SeekFrom::Start(READ_BLOCK - 100)).unwrap();
            reader.read_exact(&mut across).unwrap();
            // Cached blocks are not fetched again.
            reader.seek(SeekFrom::End(-1500)).unwrap();
            reader.read_to_end(&mut Vec::new()).unwrap();
            let end = reader.seek(SeekFrom::End(0)).unwrap();
            let past = reader.read(&mut [0u8; 10]).unwrap();
            assert!(reader.seek(SeekFrom::Current(-(end as i64) - 1)).is_err());
            (reader.bytes_fetched(), tail, across, end, past)
        })
        .join()
        .unwrap();
        let data = pattern(3 * READ_BLOCK as usize + 1000);
        assert_eq!(tail, data[data.len() - 1500..]);
        let boundary = READ_BLOCK as usize;
        assert_eq!(across, data[boundary - 100..boundary + 200]);
        assert_eq!(end, data.len() as u64);
        assert_eq!(past, 0);
        // Four blocks touched, each fetched once.
        assert_eq!(fetched, data.len() as u64);
    }

    /// A decoder's pattern: one pass from start to end. On a multi-thread
    /// runtime the next block is fetched ahead; every byte arrives once and
    /// in order, and nothing past the end is asked for.
    #[test]
    fn a_sequential_read_fetches_ahead_and_each_block_once() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = pattern(4 * READ_BLOCK as usize + 777);
        let (_dir, store, key) = stored(&runtime, &data);
        let handle = runtime.handle().clone();
        let length = data.len() as u64;
        let (read, fetched) = std::thread::spawn(move || {
            let mut reader = ObjectReader::new(store, key, length, handle);
            let mut read = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                read.extend_from_slice(&buf[..n]);
            }
            (read, reader.bytes_fetched())
        })
        .join()
        .unwrap();
        assert_eq!(read, data);
        assert_eq!(fetched, length);
    }

    #[test]
    fn an_object_shorter_than_declared_is_an_error_not_a_short_read() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::scratch(uuid::Uuid::new_v4());
        let store = runtime.block_on(async {
            let store = ObjectStore::Local(LocalStore::open(dir.path()).await.unwrap());
            store
                .put_bytes(&key, Bytes::from(vec![1u8; 100]))
                .await
                .unwrap();
            store
        });
        let handle = runtime.handle().clone();
        let error = std::thread::spawn(move || {
            let mut reader = ObjectReader::new(store, key, 200, handle);
            reader.read_to_end(&mut Vec::new()).unwrap_err()
        })
        .join()
        .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }
}
