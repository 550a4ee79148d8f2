//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), the `esds`
//! descriptors that carry it (ISO/IEC 14496-1 7.2.6), and ADTS header
//! stripping (ISO/IEC 14496-3 1.A.2).

use crate::error::{Error, Result};

/// Sampling frequencies indexed by `samplingFrequencyIndex`.
const SAMPLING_FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// MPEG-4 Audio object type of AAC Low Complexity.
pub const AOT_AAC_LC: u8 = 2;

/// A parsed AudioSpecificConfig, with the original bytes kept for `esds`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AudioSpecificConfig {
    bytes: Vec<u8>,
    object_type: u8,
    sample_rate: u32,
    channel_configuration: u8,
}

impl AudioSpecificConfig {
    /// Parses the leading fields of an AudioSpecificConfig.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut bits = Bits {
            data: bytes,
            position: 0,
        };
        let mut object_type = bits.read(5)? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read(6)? as u8;
        }
        if object_type == 0 {
            return Err(Error::InvalidAudioSpecificConfig(
                "object type 0 is reserved",
            ));
        }
        let frequency_index = bits.read(4)? as usize;
        let sample_rate =
            if frequency_index == 0x0f {
                bits.read(24)?
            } else {
                *SAMPLING_FREQUENCIES.get(frequency_index).ok_or(
                    Error::InvalidAudioSpecificConfig("reserved sampling frequency index"),
                )?
            };
        if sample_rate == 0 {
            return Err(Error::InvalidAudioSpecificConfig("sample rate is zero"));
        }
        let channel_configuration = bits.read(4)? as u8;
        Ok(Self {
            bytes: bytes.to_vec(),
            object_type,
            sample_rate,
            channel_configuration,
        })
    }

    /// The MPEG-4 Audio object type (2 for AAC-LC).
    pub fn object_type(&self) -> u8 {
        self.object_type
    }

    /// The sampling frequency the config declares.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// `channelConfiguration`; 0 means "defined in the bitstream".
    pub fn channel_configuration(&self) -> u8 {
        self.channel_configuration
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The body of an `esds` box after its version and flags: an
    /// ES_Descriptor holding the DecoderConfigDescriptor (with this config as
    /// DecoderSpecificInfo) and an SLConfigDescriptor.
    pub(crate) fn write_es_descriptor(&self, out: &mut Vec<u8>) {
        let mut decoder_specific_info = Vec::new();
        write_descriptor(&mut decoder_specific_info, 0x05, &self.bytes);

        let mut decoder_config = vec![
            0x40, // objectTypeIndication: Audio ISO/IEC 14496-3
            0x15, // streamType 5 (audio) << 2, upStream 0, reserved 1
            0, 0, 0, // bufferSizeDB: unknown when the init segment is written
        ];
        decoder_config.extend_from_slice(&0u32.to_be_bytes()); // maxBitrate: unknown
        decoder_config.extend_from_slice(&0u32.to_be_bytes()); // avgBitrate: unknown
        decoder_config.extend_from_slice(&decoder_specific_info);

        let mut es = Vec::new();
        es.extend_from_slice(&1u16.to_be_bytes()); // ES_ID
        es.push(0); // no stream dependence, URL or OCR stream; priority 0
        write_descriptor(&mut es, 0x04, &decoder_config);
        write_descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor, predefined = MP4

        write_descriptor(out, 0x03, &es);
    }
}

/// Writes a descriptor tag, its length in the expandable 7-bits-per-byte
/// form (ISO/IEC 14496-1 8.3.3) and its body.
fn write_descriptor(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    let length = body.len();
    let mut groups = Vec::with_capacity(4);
    let mut rest = length;
    loop {
        groups.push((rest & 0x7f) as u8);
        rest >>= 7;
        if rest == 0 {
            break;
        }
    }
    for (index, group) in groups.iter().enumerate().rev() {
        out.push(if index > 0 { group | 0x80 } else { *group });
    }
    out.extend_from_slice(body);
}

/// Returns the raw AAC frame inside `frame`, without its ADTS header if it
/// has one. A header must describe exactly this one frame.
pub(crate) fn strip_adts(frame: &[u8]) -> Result<&[u8]> {
    let is_adts = frame.len() >= 2 && frame[0] == 0xff && frame[1] & 0xf6 == 0xf0;
    if !is_adts {
        return Ok(frame);
    }
    if frame.len() < 7 {
        return Err(Error::InvalidAdts("header is truncated"));
    }
    let protection_absent = frame[1] & 0x01 == 1;
    let header_length = if protection_absent { 7 } else { 9 };
    let frame_length = (usize::from(frame[3] & 0x03) << 11)
        | (usize::from(frame[4]) << 3)
        | usize::from(frame[5] >> 5);
    let raw_blocks = frame[6] & 0x03;
    if raw_blocks != 0 {
        return Err(Error::InvalidAdts("more than one raw data block per frame"));
    }
    if frame_length != frame.len() {
        return Err(Error::InvalidAdts(
            "frame length does not match the sample size",
        ));
    }
    match frame.get(header_length..) {
        Some(payload) if !payload.is_empty() => Ok(payload),
        _ => Err(Error::InvalidAdts("no payload after the header")),
    }
}

/// MSB-first bit reader over a byte slice.
struct Bits<'a> {
    data: &'a [u8],
    position: usize,
}

impl Bits<'_> {
    fn read(&mut self, count: u32) -> Result<u32> {
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self
                .data
                .get(self.position / 8)
                .ok_or(Error::InvalidAudioSpecificConfig("truncated"))?;
            value = (value << 1) | u32::from((byte >> (7 - self.position % 8)) & 1);
            self.position += 1;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AAC-LC, 48 kHz, stereo: what ffmpeg's `aac` encoder writes as extradata.
    pub(crate) const ASC_LC_48K_STEREO: &[u8] = &[0x11, 0x90];

    #[test]
    fn parses_lc_config() {
        let config = AudioSpecificConfig::parse(ASC_LC_48K_STEREO).unwrap();
        assert_eq!(config.object_type(), AOT_AAC_LC);
        assert_eq!(config.sample_rate(), 48000);
        assert_eq!(config.channel_configuration(), 2);
        assert_eq!(config.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn parses_escaped_object_type_and_explicit_frequency() {
        // AOT 31 escape + 6 bits (value 10 -> AOT 42), index 15 + 24-bit 22050 Hz, mono.
        let mut bits: u64 = 0;
        let mut count: usize = 0;
        for (value, width) in [(31u64, 5), (10, 6), (15, 4), (22050, 24), (1, 4)] {
            bits = (bits << width) | value;
            count += width;
        }
        bits <<= 64 - count;
        let bytes = &bits.to_be_bytes()[..count.div_ceil(8)];
        let config = AudioSpecificConfig::parse(bytes).unwrap();
        assert_eq!(config.object_type(), 42);
        assert_eq!(config.sample_rate(), 22050);
        assert_eq!(config.channel_configuration(), 1);
    }

    #[test]
    fn rejects_garbage_configs() {
        assert!(AudioSpecificConfig::parse(&[]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x12]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x00, 0x10]).is_err());
        // Sampling frequency index 13 is reserved.
        assert!(AudioSpecificConfig::parse(&[0x16, 0x90]).is_err());
    }

    #[test]
    fn esds_descriptor_lengths_add_up() {
        let config = AudioSpecificConfig::parse(ASC_LC_48K_STEREO).unwrap();
        let mut out = Vec::new();
        config.write_es_descriptor(&mut out);
        assert_eq!(out[0], 0x03);
        assert_eq!(usize::from(out[1]), out.len() - 2);
        // ES_ID, flags, then the DecoderConfigDescriptor.
        assert_eq!(out[5], 0x04);
        assert_eq!(usize::from(out[6]), 13 + 2 + ASC_LC_48K_STEREO.len());
        assert_eq!(&out[7..9], &[0x40, 0x15]);
        let dsi = 7 + 13;
        assert_eq!(&out[dsi..dsi + 4], &[0x05, 0x02, 0x11, 0x90]);
        assert_eq!(&out[out.len() - 3..], &[0x06, 0x01, 0x02]);
    }

    #[test]
    fn long_descriptors_use_continuation_bytes() {
        let mut out = Vec::new();
        write_descriptor(&mut out, 0x05, &[0u8; 200]);
        assert_eq!(&out[..3], &[0x05, 0x81, 0x48]);
        assert_eq!(out.len(), 203);
    }

    fn adts_header(frame_length: usize, protection_absent: bool) -> Vec<u8> {
        let length = frame_length as u32;
        vec![
            0xff,
            0xf0 | u8::from(protection_absent),
            0x4c, // LC, 48 kHz, channel configuration high bit 0
            0x80 | ((length >> 11) & 0x03) as u8,
            ((length >> 3) & 0xff) as u8,
            (((length & 0x07) << 5) as u8) | 0x1f,
            0xfc,
        ]
    }

    #[test]
    fn strips_adts_headers() {
        let raw = [0x21, 0x10, 0x05, 0x00];
        assert_eq!(strip_adts(&raw).unwrap(), &raw);

        let mut framed = adts_header(7 + raw.len(), true);
        framed.extend_from_slice(&raw);
        assert_eq!(strip_adts(&framed).unwrap(), &raw);

        let mut with_crc = adts_header(9 + raw.len(), false);
        with_crc.extend_from_slice(&[0xab, 0xcd]);
        with_crc.extend_from_slice(&raw);
        assert_eq!(strip_adts(&with_crc).unwrap(), &raw);
    }

    #[test]
    fn rejects_inconsistent_adts_headers() {
        let mut too_long = adts_header(100, true);
        too_long.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(strip_adts(&too_long), Err(Error::InvalidAdts(_))));
        assert!(matches!(
            strip_adts(&[0xff, 0xf1, 0x4c]),
            Err(Error::InvalidAdts(_))
        ));
        assert!(matches!(
            strip_adts(&adts_header(7, true)),
            Err(Error::InvalidAdts(_))
        ));
    }
}
