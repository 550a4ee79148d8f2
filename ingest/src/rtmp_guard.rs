//! A guard in front of the RTMP session (RTMP 1.0 chunk stream, AMF0):
//! commands and metadata are checked before the protocol crate decodes them.
//!
//! `scuffle-rtmp`'s AMF0 decoder (as `rml_rtmp`'s) recurses without a
//! depth limit and reserves an array or object by the count the peer
//! declares, so one crafted `connect` of a few bytes (an ECMA array that
//! claims four billion entries, or objects nested a million deep) aborts
//! the whole process, and every live stream it holds with it. The guard
//! reads the chunk stream as the session does (handshake, chunk headers of
//! every format, extended timestamps, the peer's chunk size; abort
//! messages are ignored, as the session ignores them),
//! hands the session only whole chunks, and before handing over the last
//! chunk of an AMF0 command or data message walks its values without
//! recursion: at most [`MAX_DEPTH`] containers deep, [`MAX_ENTRIES`]
//! entries declared per container, [`MAX_VALUES`] values and
//! [`MAX_MESSAGE`] bytes per message. What breaks a rule ends the
//! connection with `InvalidData` before the decoder sees it. What OBS,
//! ffmpeg and hardware encoders send (a `connect` object of a dozen
//! properties, `onMetaData` with a flat ECMA array) is far inside.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Containers (objects, arrays) inside one another in a message.
pub const MAX_DEPTH: usize = 16;
/// Entries a container may declare or hold.
pub const MAX_ENTRIES: u32 = 1024;
/// Values in one message.
pub const MAX_VALUES: usize = 8192;
/// Bytes of one AMF0 command or data message.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The client's handshake: C0 (1 byte), C1 and C2 (1536 bytes each).
const HANDSHAKE: usize = 1 + 1536 + 1536;
/// Chunk sizes the session accepts (RTMP's initial 128 to 64 KiB).
const INITIAL_CHUNK_SIZE: usize = 128;
const LARGEST_CHUNK_SIZE: usize = 64 * 1024;
/// Message types: set chunk size, AMF0 data and AMF0 command.
const SET_CHUNK_SIZE: u8 = 1;
const DATA_AMF0: u8 = 18;
const COMMAND_AMF0: u8 = 20;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// How a message's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// As AMF0 defines them: objects and ECMA arrays end with an empty key
    /// and the object-end marker. Data messages (`onMetaData`) go to the
    /// FLV demuxer, which reads them so.
    Spec,
    /// As the session's decoder (`scuffle-amf0`) reads commands: an ECMA
    /// array is exactly as many entries as it declares (then an object-end
    /// marker byte, if one follows); references and the unsupported marker
    /// are errors. Walking the bytes the way their reader does matters: a
    /// message read one way as shallow may be deeply nested read the other.
    Decoder,
}

/// Checks one AMF0 message body (a sequence of values) against the
/// limits, read as `reading` says, without recursion.
pub fn check_amf0(mut data: &[u8], reading: Reading) -> Result<(), Refused> {
    if data.len() > MAX_MESSAGE {
        return Err(Refused("AMF0 message too large"));
    }
    /// What the walk is inside of.
    enum Open {
        /// Key/value entries up to the end marker, and how many so far.
        Entries(u32),
        /// This many more key/value entries (the decoder's ECMA arrays).
        Counted(u32),
        /// This many more values (strict arrays).
        Values(u32),
    }
    fn skip(data: &mut &[u8], n: usize) -> Result<(), Refused> {
        if data.len() < n {
            return Err(Refused("AMF0 value truncated"));
        }
        data.advance(n);
        Ok(())
    }
    /// A big-endian length of `width` bytes at the start of `data`.
    fn length(data: &[u8], width: usize) -> Result<usize, Refused> {
        data.get(..width)
            .map(|b| b.iter().fold(0usize, |v, &x| (v << 8) | usize::from(x)))
            .ok_or(Refused("AMF0 value truncated"))
    }
    let mut open: Vec<Open> = Vec::new();
    let mut values = 0usize;
    loop {
        // Where the next value comes from, or a container that ends here.
        match open.last_mut() {
            None if data.is_empty() => return Ok(()),
            None => {}
            Some(Open::Values(0)) => {
                open.pop();
                continue;
            }
            Some(Open::Values(left)) => *left -= 1,
            Some(Open::Counted(0)) => {
                open.pop();
                if data.first() == Some(&9) {
                    data.advance(1);
                }
                continue;
            }
            Some(Open::Counted(left)) => {
                *left -= 1;
                let key = length(data, 2)?;
                skip(&mut data, 2 + key)?;
            }
            Some(Open::Entries(held)) => {
                let key = length(data, 2)?;
                if key == 0 && data.get(2) == Some(&9) {
                    data.advance(3);
                    open.pop();
                    continue;
                }
                *held += 1;
                if *held > MAX_ENTRIES {
                    return Err(Refused("AMF0 object with too many entries"));
                }
                skip(&mut data, 2 + key)?;
            }
        }
        values += 1;
        if values > MAX_VALUES {
            return Err(Refused("too many AMF0 values"));
        }
        let marker = *data.first().ok_or(Refused("AMF0 value truncated"))?;
        data.advance(1);
        match (marker, reading) {
            (0, _) => skip(&mut data, 8)?,   // number
            (1, _) => skip(&mut data, 1)?,   // boolean
            (11, _) => skip(&mut data, 10)?, // date
            (2, _) => {
                // string
                let len = length(data, 2)?;
                skip(&mut data, 2 + len)?;
            }
            (12 | 15, _) => {
                // long string, XML document
                let len = length(data, 4)?;
                skip(&mut data, 4usize.saturating_add(len))?;
            }
            (5 | 6, _) | (13, Reading::Spec) => {} // null, undefined, unsupported
            (7, Reading::Spec) => skip(&mut data, 2)?, // reference
            (3, _) => open.push(Open::Entries(0)), // object
            (16, _) => {
                // typed object: a class name, then entries
                let len = length(data, 2)?;
                skip(&mut data, 2 + len)?;
                open.push(Open::Entries(0));
            }
            (8 | 10, _) => {
                // ECMA and strict arrays: a declared count (decoders reserve by it)
                let count = length(data, 4)?;
                let count = u32::try_from(count)
                    .ok()
                    .filter(|c| *c <= MAX_ENTRIES)
                    .ok_or(Refused("AMF0 array declares too many entries"))?;
                data.advance(4);
                open.push(match (marker, reading) {
                    (10, _) => Open::Values(count),
                    (_, Reading::Spec) => Open::Entries(0),
                    (_, Reading::Decoder) => Open::Counted(count),
                });
            }
            _ => return Err(Refused("unsupported AMF0 type")),
        }
        if open.len() > MAX_DEPTH {
            return Err(Refused("AMF0 values nested too deep"));
        }
    }
}

/// The last full header seen on a chunk stream.
#[derive(Clone, Copy)]
struct Header {
    length: usize,
    kind: u8,
    stream: u32,
    extended_timestamp: bool,
}

/// A message being assembled from its chunks.
#[derive(Default)]
struct Partial {
    received: usize,
    /// The payload, kept only for the messages the guard checks.
    kept: Vec<u8>,
}

/// The chunk stream as the session will read it.
struct ChunkStream {
    handshake_left: usize,
    chunk_size: usize,
    headers: HashMap<u32, Header>,
    partial: HashMap<(u32, u32), Partial>,
}

impl ChunkStream {
    fn new() -> Self {
        Self {
            handshake_left: HANDSHAKE,
            chunk_size: INITIAL_CHUNK_SIZE,
            headers: HashMap::new(),
            partial: HashMap::new(),
        }
    }

    /// How many bytes at the start of `data` are whole chunks (or
    /// handshake) the session may read; an error for a message the guard
    /// refuses. Call again with the bytes after those.
    fn next(&mut self, data: &[u8]) -> Result<usize, Refused> {
        if self.handshake_left > 0 {
            let n = self.handshake_left.min(data.len());
            self.handshake_left -= n;
            return Ok(n);
        }
        let Some(parsed) = self.chunk(data)? else {
            return Ok(0);
        };
        Ok(parsed)
    }

    /// Parses one chunk; `None` until it is all there.
    fn chunk(&mut self, data: &[u8]) -> Result<Option<usize>, Refused> {
        let mut at = 0usize;
        let byte = |at: usize| data.get(at).copied();
        let Some(first) = byte(at) else {
            return Ok(None);
        };
        at += 1;
        let format = first >> 6;
        let id = match u32::from(first & 0x3f) {
            0 => {
                let Some(b) = byte(at) else { return Ok(None) };
                at += 1;
                64 + u32::from(b)
            }
            1 => {
                let (Some(b1), Some(b2)) = (byte(at), byte(at + 1)) else {
                    return Ok(None);
                };
                at += 2;
                64 + u32::from(b1) + u32::from(b2) * 256
            }
            id => id,
        };
        let field = |at: usize, n: usize| -> Option<u32> {
            data.get(at..at + n)
                .map(|b| b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)))
        };
        let previous = self.headers.get(&id).copied();
        let header = match format {
            0 | 1 => {
                let (Some(timestamp), Some(length), Some(kind)) =
                    (field(at, 3), field(at + 3, 3), byte(at + 6))
                else {
                    return Ok(None);
                };
                at += 7;
                let stream = if format == 0 {
                    let Some(b) = data.get(at..at + 4) else {
                        return Ok(None);
                    };
                    at += 4;
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                } else {
                    previous
                        .ok_or(Refused("chunk without a previous header"))?
                        .stream
                };
                let extended_timestamp = timestamp == 0xFF_FFFF;
                Header {
                    length: length as usize,
                    kind,
                    stream,
                    extended_timestamp,
                }
            }
            2 => {
                let Some(timestamp) = field(at, 3) else {
                    return Ok(None);
                };
                at += 3;
                Header {
                    extended_timestamp: timestamp == 0xFF_FFFF,
                    ..previous.ok_or(Refused("chunk without a previous header"))?
                }
            }
            _ => previous.ok_or(Refused("chunk without a previous header"))?,
        };
        if header.extended_timestamp {
            at += 4;
        }
        let checked = matches!(header.kind, DATA_AMF0 | COMMAND_AMF0 | SET_CHUNK_SIZE);
        if checked && header.length > MAX_MESSAGE {
            return Err(Refused("AMF0 message too large"));
        }
        let key = (id, header.stream);
        let received = self.partial.get(&key).map_or(0, |p| p.received);
        if received >= header.length && received > 0 {
            // A new header shorter than what its message already holds: the
            // session would lose the chunk boundaries here (no encoder does
            // this), and the guard must never read the stream otherwise.
            return Err(Refused("message length changed mid-message"));
        }
        let size = (header.length - received).min(self.chunk_size);
        let end = at + size;
        if data.len() < end {
            return Ok(None);
        }
        self.headers.insert(id, header);
        let partial = self.partial.entry(key).or_default();
        partial.received += size;
        if checked {
            partial.kept.extend_from_slice(&data[at..end]);
        }
        if partial.received >= header.length {
            let message = self.partial.remove(&key).unwrap_or_default();
            self.complete(header.kind, &message.kept)?;
        }
        Ok(Some(end))
    }

    /// A whole message of a kind the guard follows.
    fn complete(&mut self, kind: u8, payload: &[u8]) -> Result<(), Refused> {
        let word = || {
            payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match kind {
            SET_CHUNK_SIZE => {
                let size = word().ok_or(Refused("short set-chunk-size"))? as usize;
                if !(INITIAL_CHUNK_SIZE..=LARGEST_CHUNK_SIZE).contains(&size) {
                    return Err(Refused("chunk size out of range"));
                }
                self.chunk_size = size;
            }
            DATA_AMF0 => check_amf0(payload, Reading::Spec)?,
            COMMAND_AMF0 => check_amf0(payload, Reading::Decoder)?,
            _ => {}
        }
        Ok(())
    }
}

/// The connection as the RTMP session sees it: reads pass only whole,
/// checked chunks; writes go straight through.
pub struct CommandGuard<S> {
    inner: S,
    stream: ChunkStream,
    /// Read from the socket, not yet parsed.
    unparsed: BytesMut,
    /// Parsed and checked: the session's to read.
    ready: BytesMut,
}

impl<S> CommandGuard<S> {
    /// Guards `inner`, a connection that starts with the RTMP handshake.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            stream: ChunkStream::new(),
            unparsed: BytesMut::new(),
            ready: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CommandGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The peer closed: the session sees the end too.
                return Poll::Ready(Ok(()));
            }
            this.unparsed.extend_from_slice(read.filled());
            loop {
                let n = this.stream.next(&this.unparsed).map_err(|Refused(why)| {
                    tracing::warn!(
                        reason = why,
                        "rtmp: message refused before decoding; connection closed"
                    );
                    io::Error::new(io::ErrorKind::InvalidData, why)
                })?;
                if n == 0 {
                    break;
                }
                let parsed = this.unparsed.split_to(n);
                this.ready.extend_from_slice(&parsed);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CommandGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = vec![2];
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// An OBS-like `connect`: the name, a transaction id, a command object.
    fn connect() -> Vec<u8> {
        let mut v = string("connect");
        v.extend_from_slice(&[0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        v.push(3);
        for (key, value) in [
            ("app", "live"),
            ("type", "nonprivate"),
            ("tcUrl", "rtmp://x/live"),
        ] {
            v.extend_from_slice(&(key.len() as u16).to_be_bytes());
            v.extend_from_slice(key.as_bytes());
            v.extend_from_slice(&string(value));
        }
        v.extend_from_slice(&[0, 0, 9]);
        v
    }

    #[test]
    fn what_encoders_send_passes() {
        assert_eq!(check_amf0(&connect(), Reading::Spec), Ok(()));
        // onMetaData: a string and a flat ECMA array.
        let mut meta = string("onMetaData");
        meta.extend_from_slice(&[8, 0, 0, 0, 1, 0, 5]);
        meta.extend_from_slice(b"width");
        meta.extend_from_slice(&[0, 0x40, 0x94, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(check_amf0(&meta, Reading::Spec), Ok(()));
        // Strict arrays, null, booleans, dates.
        let v = [10, 0, 0, 0, 3, 5, 1, 1, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_amf0(&v, Reading::Spec), Ok(()));
    }

    #[test]
    fn commands_are_read_as_the_decoder_reads_them() {
        assert_eq!(check_amf0(&connect(), Reading::Decoder), Ok(()));
        // OBS's FCPublish: name, transaction id, null, the stream key.
        let mut fc = string("FCPublish");
        fc.extend_from_slice(&[0, 0x40, 0x08, 0, 0, 0, 0, 0, 0, 5]);
        fc.extend_from_slice(&string("lsk_abc"));
        assert_eq!(check_amf0(&fc, Reading::Decoder), Ok(()));
        // An ECMA array that declares no entries, then one entry whose
        // 400-byte key hides nested objects: read as the spec has it, a
        // shallow array; read as the decoder does (no entries, then values),
        // objects nested a hundred deep.
        let mut hidden = string("FCPublish");
        hidden.extend_from_slice(&[8, 0, 0, 0, 0, 0x01, 0x90]);
        hidden.extend(std::iter::repeat_n([3u8, 0, 1, b'a'], 100).flatten());
        hidden.extend_from_slice(&[5, 0, 0, 9]);
        assert_eq!(check_amf0(&hidden, Reading::Spec), Ok(()));
        assert_eq!(
            check_amf0(&hidden, Reading::Decoder),
            Err(Refused("AMF0 values nested too deep"))
        );
        let mut huge = string("FCPublish");
        huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff]);
        assert!(check_amf0(&huge, Reading::Decoder).is_err());
        assert!(
            check_amf0(&[7, 0, 1], Reading::Decoder).is_err(),
            "references are errors"
        );
    }

    #[test]
    fn crafted_commands_are_refused() {
        // An ECMA array that declares four billion entries in nine bytes.
        let mut huge = string("connect");
        huge.extend_from_slice(&[8, 0xff, 0xff, 0xff, 0xff, 0, 0, 9]);
        assert!(check_amf0(&huge, Reading::Spec).is_err());
        let strict = [10, 0xff, 0xff, 0xff, 0xff];
        assert!(check_amf0(&strict, Reading::Spec).is_err());
        // Objects nested far past any real command.
        let deep: Vec<u8> = std::iter::repeat_n([3u8, 0, 1, b'a'], 10_000)
            .flatten()
            .collect();
        assert_eq!(
            check_amf0(&deep, Reading::Spec),
            Err(Refused("AMF0 values nested too deep"))
        );
        // Truncated values, unknown types, too many values.
        assert!(check_amf0(&[2, 0, 9, b'a'], Reading::Spec).is_err());
        assert!(check_amf0(&[0, 1, 2], Reading::Spec).is_err());
        assert!(check_amf0(&[17, 0], Reading::Spec).is_err());
        assert!(check_amf0(&vec![5u8; MAX_VALUES + 1], Reading::Spec).is_err());
    }

    /// A chunk of format 0 on chunk stream 3 carrying `payload` whole.
    fn chunk0(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![3, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        v.push(kind);
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    /// Feeds `bytes` one at a time, as a slow peer would: the bytes the
    /// session may read, or the refusal.
    fn feed(bytes: &[u8]) -> Result<usize, Refused> {
        let mut stream = ChunkStream::new();
        let mut pending = Vec::new();
        let mut released = 0;
        for &b in bytes {
            pending.push(b);
            loop {
                let n = stream.next(&pending)?;
                if n == 0 {
                    break;
                }
                pending.drain(..n);
                released += n;
            }
        }
        Ok(released)
    }

    #[test]
    fn whole_chunks_pass_across_chunk_sizes_and_formats() {
        let mut bytes = vec![3u8; HANDSHAKE];
        // A connect larger than the initial chunk size: one format-0 chunk
        // of 128 bytes, then format-3 chunks.
        let mut payload = connect();
        payload.resize(300, 5);
        let mut c = vec![3, 0, 0, 0];
        c.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        c.extend_from_slice(&[COMMAND_AMF0, 0, 0, 0, 0]);
        for (i, piece) in payload.chunks(128).enumerate() {
            if i > 0 {
                c.push(0xC3);
            }
            c.extend_from_slice(piece);
        }
        bytes.extend_from_slice(&c);
        // Set chunk size 4096, then a video message of 5000 bytes in two
        // chunks, the second of format 3.
        bytes.extend_from_slice(&chunk0(SET_CHUNK_SIZE, &4096u32.to_be_bytes()));
        let video = vec![0x17u8; 5000];
        let mut v = vec![4, 0, 0, 0x21];
        v.extend_from_slice(&5000u32.to_be_bytes()[1..]);
        v.extend_from_slice(&[9, 1, 0, 0, 0]);
        v.extend_from_slice(&video[..4096]);
        v.push(0xC4);
        v.extend_from_slice(&video[4096..]);
        bytes.extend_from_slice(&v);
        assert_eq!(feed(&bytes), Ok(bytes.len()));
        // The same with a hostile connect in place of the good one.
        let mut hostile = vec![3u8; HANDSHAKE];
        let mut bad = string("connect");
        bad.extend_from_slice(&[8, 0xff, 0xff, 0xff, 0xff, 0, 0, 9]);
        hostile.extend_from_slice(&chunk0(COMMAND_AMF0, &bad));
        assert!(feed(&hostile).is_err());
        // A declared command larger than any real one.
        let mut large = vec![3u8; HANDSHAKE];
        large.extend_from_slice(&[3, 0, 0, 0, 0x10, 0, 0, COMMAND_AMF0, 0, 0, 0, 0]);
        assert_eq!(feed(&large), Err(Refused("AMF0 message too large")));
    }

    /// Pieces AMF0 messages are made of, valid or not: containers with
    /// counts around the limit and anywhere, keys, end markers, scalars,
    /// stray bytes.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let counted = |marker: u8, n: u32| {
            let mut v = vec![marker];
            v.extend_from_slice(&n.to_be_bytes());
            v
        };
        prop_oneof![
            Just(vec![3u8]),
            (0..2 * MAX_ENTRIES).prop_map(move |n| counted(8, n)),
            (0..2 * MAX_ENTRIES).prop_map(move |n| counted(10, n)),
            any::<u32>().prop_map(move |n| counted(8, n)),
            any::<u32>().prop_map(move |n| counted(10, n)),
            any::<[u8; 8]>().prop_map(|b| [0u8].into_iter().chain(b).collect()),
            "[a-z]{0,6}".prop_map(|s| string(&s)),
            "[a-z]{0,6}".prop_map(|s| {
                let mut v = (s.len() as u16).to_be_bytes().to_vec();
                v.extend_from_slice(s.as_bytes());
                v
            }),
            Just(vec![0u8, 0, 9]),
            Just(vec![5u8]),
            Just(vec![16u8, 0, 1, b'T']),
            any::<u8>().prop_map(|b| vec![b]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever the guard lets through as a command, the session's
        /// decoder reads without a crash (an allocation failure or a stack
        /// overflow would abort this test's process).
        #[test]
        fn what_the_guard_passes_the_decoder_survives(
            pieces in proptest::collection::vec(piece(), 0..300)
        ) {
            let message = pieces.concat();
            let _ = check_amf0(&message, Reading::Spec);
            if check_amf0(&message, Reading::Decoder).is_ok() {
                let mut decoder =
                    scuffle_amf0::decoder::Amf0Decoder::from_buf(bytes::Bytes::from(message));
                let _ = decoder.decode_all();
            }
        }

        /// Any bytes after the handshake: whole chunks or a refusal, never
        /// a panic.
        #[test]
        fn the_chunk_reader_takes_any_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..4000)
        ) {
            let mut stream = vec![3u8; HANDSHAKE];
            stream.extend_from_slice(&bytes);
            let _ = feed(&stream);
        }
    }
}
