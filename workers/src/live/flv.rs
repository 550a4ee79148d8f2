//! FLV framing (Adobe FLV file format, version 10) of the media an RTMP
//! publisher sends: RTMP audio, video and data messages carry exactly FLV
//! tag bodies, so wrapping each in a tag header gives FFmpeg's `flv`
//! demuxer a stream it reads like a file.

use bytes::{BufMut, Bytes, BytesMut};

/// FLV tag types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// Audio (8).
    Audio,
    /// Video (9).
    Video,
    /// Script data (18): `onMetaData`.
    Script,
}

impl TagKind {
    fn code(self) -> u8 {
        match self {
            Self::Audio => 8,
            Self::Video => 9,
            Self::Script => 18,
        }
    }
}

/// The FLV file header (audio and video present) and the first
/// `PreviousTagSize` (0).
pub fn header() -> Bytes {
    Bytes::from_static(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
}

/// Largest tag body an FLV tag header can state (24-bit size).
pub const MAX_TAG_BODY: usize = 0xFF_FFFF;

/// One FLV tag with its trailing `PreviousTagSize`; `None` when the body
/// is too large for a tag.
pub fn tag(kind: TagKind, timestamp_ms: u32, body: &[u8]) -> Option<Bytes> {
    if body.len() > MAX_TAG_BODY {
        return None;
    }
    let size = body.len() as u32;
    let mut out = BytesMut::with_capacity(11 + body.len() + 4);
    out.put_u8(kind.code());
    out.put_uint(u64::from(size), 3);
    out.put_uint(u64::from(timestamp_ms & 0x00FF_FFFF), 3);
    out.put_u8((timestamp_ms >> 24) as u8);
    out.put_uint(0, 3);
    out.put_slice(body);
    out.put_u32(11 + size);
    Some(out.freeze())
}

/// The AMF0 string `@setDataFrame` that RTMP data messages start with and
/// FLV script tags do not.
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";

/// An RTMP data message as an FLV script tag body: `@setDataFrame`
/// dropped, so `onMetaData` (frame rate, size) reaches the demuxer.
/// Other data messages are of no use to it: `None`.
pub fn script_body(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(SET_DATA_FRAME).unwrap_or(data);
    rest.starts_with(b"\x02\x00\x0aonMetaData").then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_have_their_sizes_and_extended_timestamps() {
        let t = tag(TagKind::Video, 0x0123_4567, &[0x17, 0x01]).unwrap();
        assert_eq!(
            t.as_ref(),
            &[9, 0, 0, 2, 0x23, 0x45, 0x67, 0x01, 0, 0, 0, 0x17, 0x01, 0, 0, 0, 13]
        );
        assert!(tag(TagKind::Audio, 0, &vec![0; MAX_TAG_BODY + 1]).is_none());
        assert_eq!(header().len(), 13);
    }

    #[test]
    fn metadata_loses_set_data_frame() {
        let mut message = SET_DATA_FRAME.to_vec();
        message.extend_from_slice(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00");
        let body = script_body(&message).unwrap();
        assert!(body.starts_with(b"\x02\x00\x0aonMetaData"));
        assert!(script_body(b"\x02\x00\x05hello").is_none());
        assert!(script_body(b"").is_none());
    }
}
