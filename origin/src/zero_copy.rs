//! Zero-copy sends of cached objects (Linux).
//!
//! A response body written with `write`/`writev` is copied from the
//! process's memory into the socket's buffers on every request; nginx
//! `sendfile`s from the page cache instead, and the kernel sends the pages
//! themselves. For objects of LL-HLS part size (50-150 KB) that copy was a
//! quarter of the origin's core and left the bytes dirty in its cache, so
//! the origin answered 0.73-0.77x nginx's requests/s (`cascade bench
//! origin`). Here the memory tier keeps each object of at least
//! [`MIN_SHARED`] bytes in a sealed `memfd` mapped read-only
//! ([`into_shared_memory`]), the `Bytes` handed around are that mapping, and
//! [`ZeroCopyStream`], the connection hyper writes to, recognises a slice
//! of such a mapping and `sendfile`s it from the `memfd`; everything else
//! is written as before.
//!
//! Soundness: the mapping is read-only and the `memfd` is sealed against
//! writes, shrinking and growing before it is mapped, so the bytes behind a
//! `&[u8]` never change; a mapping is unregistered before it is unmapped,
//! and a slice being written is kept alive by hyper (it holds the `Bytes`)
//! for the whole call. Pages the kernel still references after a `sendfile`
//! stay valid after the unmapping (they are reference counted).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::RwLock;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Objects smaller than this stay on the heap: for them one `writev` costs
/// less than a `sendfile` more, and playlists are rewritten and gzipped.
pub const MIN_SHARED: usize = 16 * 1024;

/// A mapped `memfd`: where it starts in memory, its length, its descriptor.
#[derive(Clone, Copy)]
struct Region {
    len: usize,
    fd: i32,
}

/// Every live mapping, by start address.
static REGIONS: RwLock<BTreeMap<usize, Region>> = RwLock::new(BTreeMap::new());
/// How many there are (read without the lock: most writes are of the heap).
static REGION_COUNT: AtomicUsize = AtomicUsize::new(0);
/// At most this many objects are shared at once (each holds a descriptor);
/// the rest stay on the heap. See [`reserve_descriptors`].
static MAX_REGIONS: AtomicUsize = AtomicUsize::new(1024);
/// Bytes sent by `sendfile` since start (tests and metrics read it).
static SENT_ZERO_COPY: AtomicU64 = AtomicU64::new(0);

/// Objects in shared memory now (the `cascade_origin_shared_objects` gauge).
pub fn shared_objects() -> usize {
    REGION_COUNT.load(Relaxed)
}

/// Bytes sent without a copy since the process started.
pub fn bytes_sent_zero_copy() -> u64 {
    SENT_ZERO_COPY.load(Relaxed)
}

/// Raises the process's open-files soft limit to its hard limit (as Go's
/// runtime does at start) and lets shared objects hold up to half of it, so
/// that connections always have the other half: a cache full of small
/// objects must never make `accept` fail.
pub fn reserve_descriptors() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid pointer; results checked.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    let half = usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX);
    MAX_REGIONS.store(half, Relaxed);
    tracing::debug!(
        shared_objects = half,
        "descriptors reserved for shared objects"
    );
}

/// The `memfd` and offset behind `slice`, if it lies in a registered mapping.
fn region_of(slice: &[u8]) -> Option<(i32, usize)> {
    if REGION_COUNT.load(Relaxed) == 0 || slice.is_empty() {
        return None;
    }
    let start = slice.as_ptr() as usize;
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let (&base, region) = regions.range(..=start).next_back()?;
    let offset = start - base;
    (offset + slice.len() <= region.len).then_some((region.fd, offset))
}

/// An object's bytes in a sealed, read-only mapped `memfd`.
struct SharedObject {
    ptr: *const u8,
    len: usize,
    fd: std::os::fd::OwnedFd,
}

// The mapping is read-only and sealed: shared reads from any thread are fine.
unsafe impl Send for SharedObject {}
unsafe impl Sync for SharedObject {}

impl AsRef<[u8]> for SharedObject {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`, and the
        // seals keep them from changing.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedObject {
    fn drop(&mut self) {
        {
            let mut regions = REGIONS.write().unwrap_or_else(|e| e.into_inner());
            if regions.remove(&(self.ptr as usize)).is_some() {
                REGION_COUNT.fetch_sub(1, Relaxed);
            }
        }
        // SAFETY: the mapping made in `share`, unregistered above so no
        // writer can look it up any more; no `&[u8]` into it outlives the
        // owner (`Bytes` holds the owner for as long as any slice exists).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        // The descriptor closes when `fd` drops.
    }
}

/// `bytes` in a sealed, read-only mapped `memfd` that [`ZeroCopyStream`]
/// sends with `sendfile`; `bytes` itself when it is smaller than
/// [`MIN_SHARED`], when the shared objects already hold their share of
/// descriptors, or when the kernel refuses (the copy path still works).
pub fn into_shared_memory(bytes: Bytes) -> Bytes {
    if bytes.len() < MIN_SHARED || REGION_COUNT.load(Relaxed) >= MAX_REGIONS.load(Relaxed) {
        return bytes;
    }
    match share(&bytes) {
        Ok(object) => Bytes::from_owner(object),
        Err(error) => {
            tracing::debug!(error = %error, size = bytes.len(), "object kept on the heap: no memfd");
            bytes
        }
    }
}

fn share(bytes: &[u8]) -> io::Result<SharedObject> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a constant C string; the result is checked.
    let raw = unsafe {
        libc::memfd_create(
            c"cascade-object".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an open descriptor; the result is checked.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: maps `len` bytes of a descriptor of that size, read-only and
    // shared; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let object = SharedObject {
        ptr: ptr as *const u8,
        len: bytes.len(),
        fd: OwnedFd::from(file),
    };
    let region = Region {
        len: object.len,
        fd: object.fd.as_raw_fd(),
    };
    REGIONS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(object.ptr as usize, region);
    REGION_COUNT.fetch_add(1, Relaxed);
    Ok(object)
}

/// A TCP connection that sends slices of shared objects with `sendfile`
/// and everything else as a `TcpStream` would.
pub struct ZeroCopyStream {
    stream: TcpStream,
}

impl ZeroCopyStream {
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream) -> Self {
        Self { stream }
    }

    /// Runs `op` once the socket is writable, again after each spurious
    /// wake-up.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_io(Interest::WRITABLE, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// `sendfile` of `len` bytes of `fd` from `offset` to `socket`.
fn send_file(socket: i32, fd: i32, offset: usize, len: usize) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: both descriptors are open (the socket by `ZeroCopyStream`,
    // the memfd by the `Bytes` the caller holds); the result is checked.
    let sent = unsafe { libc::sendfile(socket, fd, &mut off, len) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    SENT_ZERO_COPY.fetch_add(sent as u64, Relaxed);
    Ok(sent as usize)
}

/// `sendmsg` of `slices`, with `MSG_MORE` when more follows at once (the
/// headers then leave in the same packets as the body).
fn send_slices(socket: i32, slices: &[io::IoSlice<'_>], more: bool) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    message.msg_iov = slices.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = slices.len() as _;
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `message` points at `slices`, alive for the call.
    let sent = unsafe { libc::sendmsg(socket, &message, flags) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        let shared = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| region_of(b).map(|(fd, offset)| (i, fd, offset, b.len())));
        let Some((first_shared, fd, offset, len)) = shared else {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        };
        let socket = self.stream.as_raw_fd();
        if first_shared == 0 {
            return self.poll_io(cx, || send_file(socket, fd, offset, len));
        }
        // Plain slices first (the headers), then, if they all went, as
        // much of the shared one as the socket takes now.
        // At most 64 slices (hyper sends a handful; IOV_MAX is 1024).
        let plain = &bufs[..first_shared.min(64)];
        let plain_len: usize = plain.iter().map(|b| b.len()).sum();
        let sent = ready!(self.poll_io(cx, || send_slices(socket, plain, true)))?;
        if sent < plain_len || plain.len() < first_shared {
            return Poll::Ready(Ok(sent));
        }
        match self
            .stream
            .try_io(Interest::WRITABLE, || send_file(socket, fd, offset, len))
        {
            Ok(more) => Poll::Ready(Ok(sent + more)),
            // The headers went; the body waits for the next call.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Ok(sent)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn small_objects_stay_on_the_heap_large_ones_are_shared_and_unchanged() {
        let small = pattern(MIN_SHARED - 1);
        assert!(region_of(&into_shared_memory(small.clone())).is_none());
        let large = pattern(3 * MIN_SHARED + 5);
        let shared = into_shared_memory(large.clone());
        assert_eq!(shared, large);
        assert!(region_of(&shared).is_some());
        assert!(region_of(&shared.slice(100..2000)).is_some());
        let address = shared.as_ptr() as usize;
        drop(shared);
        let regions = REGIONS.read().unwrap();
        assert!(!regions.contains_key(&address), "unregistered when dropped");
    }

    /// Headers from the heap and a shared body, through a slow reader (the
    /// socket fills, sends are partial and resume): the reader gets exactly
    /// the bytes, and the body went by `sendfile`.
    #[tokio::test]
    async fn headers_and_shared_bodies_arrive_whole_through_a_slow_reader() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = into_shared_memory(pattern(4 << 20));
        let headers = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 4194304\r\n\r\n");
        let expected = [headers.clone(), body.clone()].concat();
        let before = bytes_sent_zero_copy();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = ZeroCopyStream::new(stream);
            for _ in 0..2 {
                let mut parts = [headers.clone(), body.clone()];
                let mut first = 0;
                while first < parts.len() {
                    let slices: Vec<io::IoSlice<'_>> =
                        parts[first..].iter().map(|p| io::IoSlice::new(p)).collect();
                    let mut n = stream.write_vectored(&slices).await.unwrap();
                    while first < parts.len() && n >= parts[first].len() {
                        n -= parts[first].len();
                        first += 1;
                    }
                    if first < parts.len() {
                        parts[first] = parts[first].slice(n..);
                    }
                }
            }
            stream.flush().await.unwrap();
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 7000];
        while received.len() < 2 * expected.len() {
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early at {}", received.len());
            received.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
        server.await.unwrap();
        assert_eq!(received.len(), 2 * expected.len());
        assert!(received[..expected.len()] == expected[..]);
        assert!(received[expected.len()..] == expected[..]);
        assert!(bytes_sent_zero_copy() - before >= 2 * (4 << 20));
    }
}
