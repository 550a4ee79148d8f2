//! H.264 / AVC: codec configuration (ISO/IEC 14496-15 `avcC`), the parts of
//! the sequence parameter set (ITU-T H.264 7.3.2.1) that the packager needs,
//! and normalisation of access units to 4-byte length-prefixed NAL units.

use crate::error::{Error, Result};

const NAL_TYPE_SPS: u8 = 7;
const NAL_TYPE_PPS: u8 = 8;
const NAL_TYPE_AUD: u8 = 9;

/// Size of the NAL length prefix this crate writes in `mdat` and declares in `avcC`.
const OUTPUT_LENGTH_SIZE: usize = 4;

/// The fields of a sequence parameter set that matter for packaging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpsInfo {
    /// `profile_idc` (66 baseline, 77 main, 100 high, ...).
    pub profile_idc: u8,
    /// The byte holding `constraint_set0_flag` .. `constraint_set5_flag` and the reserved bits.
    pub constraint_flags: u8,
    /// `level_idc` (31 means level 3.1).
    pub level_idc: u8,
    /// `chroma_format_idc` (1 is 4:2:0).
    pub chroma_format_idc: u8,
    /// `bit_depth_luma_minus8 + 8`.
    pub bit_depth_luma: u8,
    /// `bit_depth_chroma_minus8 + 8`.
    pub bit_depth_chroma: u8,
    /// Displayed width in pixels, after the cropping window.
    pub width: u32,
    /// Displayed height in pixels, after the cropping window.
    pub height: u32,
}

impl SpsInfo {
    /// Parses a whole SPS NAL unit, header byte included.
    pub fn parse(nal: &[u8]) -> Result<Self> {
        let (&header, payload) = nal
            .split_first()
            .ok_or(Error::InvalidSps("empty NAL unit"))?;
        if header & 0x80 != 0 || header & 0x1f != NAL_TYPE_SPS {
            return Err(Error::InvalidSps(
                "NAL unit is not a sequence parameter set",
            ));
        }
        let rbsp = remove_emulation_prevention(payload);
        let mut bits = BitReader::new(&rbsp);

        let profile_idc = bits.read_u8()?;
        let constraint_flags = bits.read_u8()?;
        let level_idc = bits.read_u8()?;
        let _seq_parameter_set_id = bits.read_ue_at_most(31)?;

        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8;
        let mut bit_depth_chroma = 8;
        if has_chroma_info(profile_idc) {
            chroma_format_idc = bits.read_ue_at_most(3)? as u8;
            if chroma_format_idc == 3 {
                separate_colour_plane = bits.read_flag()?;
            }
            bit_depth_luma = 8 + bits.read_ue_at_most(6)? as u8;
            bit_depth_chroma = 8 + bits.read_ue_at_most(6)? as u8;
            let _qpprime_y_zero_transform_bypass = bits.read_flag()?;
            if bits.read_flag()? {
                let list_count = if chroma_format_idc == 3 { 12 } else { 8 };
                for index in 0..list_count {
                    if bits.read_flag()? {
                        skip_scaling_list(&mut bits, if index < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }

        let _log2_max_frame_num_minus4 = bits.read_ue_at_most(12)?;
        match bits.read_ue_at_most(2)? {
            0 => {
                let _log2_max_pic_order_cnt_lsb_minus4 = bits.read_ue_at_most(12)?;
            }
            1 => {
                let _delta_pic_order_always_zero = bits.read_flag()?;
                let _offset_for_non_ref_pic = bits.read_se()?;
                let _offset_for_top_to_bottom_field = bits.read_se()?;
                let cycle_length = bits.read_ue_at_most(255)?;
                for _ in 0..cycle_length {
                    let _offset_for_ref_frame = bits.read_se()?;
                }
            }
            _ => {}
        }
        let _max_num_ref_frames = bits.read_ue()?;
        let _gaps_in_frame_num_allowed = bits.read_flag()?;
        // 2^16 macroblocks is far beyond any level limit; the bound keeps the
        // arithmetic below free of overflow.
        let width_in_mbs = bits.read_ue_at_most(0xffff)? + 1;
        let height_in_map_units = bits.read_ue_at_most(0xffff)? + 1;
        let frame_mbs_only = bits.read_flag()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = bits.read_flag()?;
        }
        let _direct_8x8_inference = bits.read_flag()?;
        let (crop_left, crop_right, crop_top, crop_bottom) = if bits.read_flag()? {
            (
                bits.read_ue()?,
                bits.read_ue()?,
                bits.read_ue()?,
                bits.read_ue()?,
            )
        } else {
            (0, 0, 0, 0)
        };

        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (crop_unit_x, crop_unit_y) = match chroma_array_type {
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let coded_width = u64::from(width_in_mbs) * 16;
        let coded_height = u64::from(height_in_map_units) * 16 * field_factor;
        let crop_x = (u64::from(crop_left) + u64::from(crop_right)) * crop_unit_x;
        let crop_y = (u64::from(crop_top) + u64::from(crop_bottom)) * crop_unit_y;
        if crop_x >= coded_width || crop_y >= coded_height {
            return Err(Error::InvalidSps(
                "cropping window is larger than the picture",
            ));
        }
        Ok(Self {
            profile_idc,
            constraint_flags,
            level_idc,
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            // Both fit: at most 2^16 * 16 * 2.
            width: (coded_width - crop_x) as u32,
            height: (coded_height - crop_y) as u32,
        })
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// Profiles whose SPS carries chroma format, bit depth and scaling lists (H.264 7.3.2.1.1).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

fn skip_scaling_list(bits: &mut BitReader<'_>, size: usize) -> Result<()> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = bits.read_se()?;
            next_scale = (last_scale + delta).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// A validated H.264 decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AvcConfig {
    sps: Vec<Vec<u8>>,
    pps: Vec<Vec<u8>>,
    info: SpsInfo,
    /// Length-prefix size the caller's length-prefixed samples use (from `avcC`).
    input_length_size: usize,
}

impl AvcConfig {
    /// Accepts either an `avcC` record (ISO/IEC 14496-15 5.3.3.1) or Annex B
    /// extradata (start-code-delimited SPS and PPS).
    pub fn parse(config: &[u8]) -> Result<Self> {
        if starts_with_start_code(config) {
            Self::from_annex_b(config)
        } else if config.first() == Some(&1) {
            Self::from_avcc(config)
        } else {
            Err(Error::UnrecognizedAvcConfig)
        }
    }

    fn from_annex_b(config: &[u8]) -> Result<Self> {
        let mut sps = Vec::new();
        let mut pps = Vec::new();
        for nal in AnnexBNals::new(config) {
            match nal_type(nal) {
                Some(NAL_TYPE_SPS) => sps.push(nal.to_vec()),
                Some(NAL_TYPE_PPS) => pps.push(nal.to_vec()),
                _ => {}
            }
        }
        Self::from_parameter_sets(sps, pps, OUTPUT_LENGTH_SIZE)
    }

    fn from_avcc(config: &[u8]) -> Result<Self> {
        let mut reader = ByteReader(config);
        let header = reader
            .take(6)
            .ok_or(Error::InvalidAvcConfig("shorter than its fixed header"))?;
        let input_length_size = usize::from(header[4] & 0x03) + 1;
        if input_length_size == 3 {
            return Err(Error::InvalidAvcConfig(
                "3-byte NAL length size is not allowed",
            ));
        }
        let sps_count = header[5] & 0x1f;
        let sps = (0..sps_count)
            .map(|_| reader.take_u16_prefixed())
            .collect::<Option<Vec<_>>>()
            .ok_or(Error::InvalidAvcConfig("SPS list is truncated"))?;
        let pps_count = reader
            .take(1)
            .ok_or(Error::InvalidAvcConfig("PPS count is missing"))?[0];
        let pps = (0..pps_count)
            .map(|_| reader.take_u16_prefixed())
            .collect::<Option<Vec<_>>>()
            .ok_or(Error::InvalidAvcConfig("PPS list is truncated"))?;
        // Any high-profile extension that follows is rebuilt from the SPS itself.
        Self::from_parameter_sets(sps, pps, input_length_size)
    }

    fn from_parameter_sets(
        sps: Vec<Vec<u8>>,
        pps: Vec<Vec<u8>>,
        input_length_size: usize,
    ) -> Result<Self> {
        let first_sps = sps.first().ok_or(Error::MissingParameterSet("SPS"))?;
        if pps.is_empty() {
            return Err(Error::MissingParameterSet("PPS"));
        }
        if sps
            .iter()
            .chain(&pps)
            .any(|nal| nal.len() > usize::from(u16::MAX))
        {
            return Err(Error::InvalidAvcConfig(
                "parameter set longer than 65535 bytes",
            ));
        }
        let info = SpsInfo::parse(first_sps)?;
        Ok(Self {
            sps,
            pps,
            info,
            input_length_size,
        })
    }

    /// What the (first) SPS says.
    pub fn sps_info(&self) -> &SpsInfo {
        &self.info
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        self.info.codec_string()
    }

    /// The body of an `avcC` box declaring 4-byte NAL lengths.
    pub(crate) fn write_avcc_body(&self, out: &mut Vec<u8>) {
        out.push(1); // configurationVersion
        out.push(self.info.profile_idc);
        out.push(self.info.constraint_flags);
        out.push(self.info.level_idc);
        out.push(0xfc | (OUTPUT_LENGTH_SIZE as u8 - 1));
        // Counts are bounded: at most 31 SPS came from the 5-bit avcC field or
        // would be rejected by parse, but clamp anyway rather than wrap.
        let sps_count = self.sps.len().min(31);
        out.push(0xe0 | sps_count as u8);
        for nal in &self.sps[..sps_count] {
            push_u16_prefixed(out, nal);
        }
        let pps_count = self.pps.len().min(255);
        out.push(pps_count as u8);
        for nal in &self.pps[..pps_count] {
            push_u16_prefixed(out, nal);
        }
        if has_chroma_info(self.info.profile_idc) {
            out.push(0xfc | (self.info.chroma_format_idc & 0x03));
            out.push(0xf8 | (self.info.bit_depth_luma.saturating_sub(8) & 0x07));
            out.push(0xf8 | (self.info.bit_depth_chroma.saturating_sub(8) & 0x07));
            out.push(0); // numOfSequenceParameterSetExt
        }
    }

    /// Appends one access unit to `out` as 4-byte length-prefixed NAL units.
    ///
    /// Accepts Annex B or length-prefixed input. Access unit delimiters are
    /// dropped (they mean nothing in MP4), as are SPS/PPS identical to the
    /// ones in `avcC`; differing parameter sets are kept in-band so the
    /// decoder still sees what the slices refer to. Returns the number of
    /// bytes appended; on error `out` is left as it was.
    pub(crate) fn append_access_unit(
        &self,
        data: &[u8],
        dts: i64,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        let start = out.len();
        let written = self.write_access_unit(data, dts, out);
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    fn write_access_unit(&self, data: &[u8], dts: i64, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        let mut append = |nal: &[u8]| -> Result<()> {
            let Some(kind) = nal_type(nal) else {
                return Err(Error::MalformedSample {
                    dts,
                    reason: "NAL unit with forbidden_zero_bit set",
                });
            };
            let redundant = match kind {
                NAL_TYPE_AUD => true,
                NAL_TYPE_SPS => self.sps.iter().any(|known| known == nal),
                NAL_TYPE_PPS => self.pps.iter().any(|known| known == nal),
                _ => false,
            };
            if redundant {
                return Ok(());
            }
            let length = u32::try_from(nal.len()).map_err(|_| Error::MalformedSample {
                dts,
                reason: "NAL unit larger than 4 GiB",
            })?;
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(nal);
            Ok(())
        };

        // A length-prefixed unit whose first NAL is 256..511 bytes long starts
        // with 00 00 01, so a start code alone does not prove Annex B; a
        // length walk that lands exactly on the end does prove the framing.
        if let Some(nals) = split_length_prefixed(data, self.input_length_size) {
            for nal in nals {
                append(nal)?;
            }
        } else if starts_with_start_code(data) {
            for nal in AnnexBNals::new(data) {
                append(nal)?;
            }
        } else if data.is_empty() {
            return Err(Error::EmptySample { dts });
        } else {
            return Err(Error::MalformedSample {
                dts,
                reason: "neither Annex B nor length-prefixed NAL units",
            });
        }
        let appended = out.len() - start;
        if appended == 0 {
            return Err(Error::EmptySample { dts });
        }
        Ok(appended)
    }
}

fn nal_type(nal: &[u8]) -> Option<u8> {
    let header = *nal.first()?;
    (header & 0x80 == 0).then_some(header & 0x1f)
}

fn push_u16_prefixed(out: &mut Vec<u8>, data: &[u8]) {
    // Callers guarantee data.len() <= u16::MAX (checked in from_parameter_sets).
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn starts_with_start_code(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

/// Splits `data` into NAL units framed by `length_size`-byte big-endian
/// lengths; `None` unless the framing covers the buffer exactly with
/// non-empty units.
fn split_length_prefixed(data: &[u8], length_size: usize) -> Option<Vec<&[u8]>> {
    let mut nals = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (prefix, tail) = rest.split_at_checked(length_size)?;
        let length = prefix
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        if length == 0 {
            return None;
        }
        let (nal, tail) = tail.split_at_checked(length)?;
        nals.push(nal);
        rest = tail;
    }
    (!nals.is_empty()).then_some(nals)
}

/// Iterator over the NAL units of an Annex B byte stream (H.264 Annex B),
/// without start codes and without trailing zero bytes.
pub(crate) struct AnnexBNals<'a> {
    rest: &'a [u8],
}

impl<'a> AnnexBNals<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        let rest = match find_start_code(data) {
            Some((_, payload_start)) => &data[payload_start..],
            None => &[],
        };
        Self { rest }
    }
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (nal, rest) = match find_start_code(self.rest) {
                Some((code_start, payload_start)) => {
                    (&self.rest[..code_start], &self.rest[payload_start..])
                }
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let end = nal.iter().rposition(|&byte| byte != 0).map_or(0, |i| i + 1);
            if end > 0 {
                return Some(&nal[..end]);
            }
        }
    }
}

/// Finds the next `00 00 01`; returns where it starts and where the payload begins.
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    data.windows(3)
        .position(|window| window == [0, 0, 1])
        .map(|at| (at, at + 3))
}

/// Strips `emulation_prevention_three_byte`s (H.264 7.4.1).
fn remove_emulation_prevention(data: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        rbsp.push(byte);
    }
    rbsp
}

struct ByteReader<'a>(&'a [u8]);

impl<'a> ByteReader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(count)?;
        self.0 = tail;
        Some(head)
    }

    fn take_u16_prefixed(&mut self) -> Option<Vec<u8>> {
        let length = self.take(2)?;
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length == 0 {
            return None;
        }
        self.take(length).map(<[u8]>::to_vec)
    }
}

/// MSB-first bit reader with Exp-Golomb decoding (H.264 9.1).
struct BitReader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, position: 0 }
    }

    fn read_bit(&mut self) -> Result<u32> {
        let byte = self
            .data
            .get(self.position / 8)
            .ok_or(Error::InvalidSps("truncated"))?;
        let bit = (byte >> (7 - self.position % 8)) & 1;
        self.position += 1;
        Ok(u32::from(bit))
    }

    fn read_flag(&mut self) -> Result<bool> {
        Ok(self.read_bit()? == 1)
    }

    fn read_u8(&mut self) -> Result<u8> {
        let mut value = 0u8;
        for _ in 0..8 {
            value = (value << 1) | self.read_bit()? as u8;
        }
        Ok(value)
    }

    fn read_ue(&mut self) -> Result<u32> {
        let mut leading_zeros = 0;
        while self.read_bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(Error::InvalidSps("Exp-Golomb code longer than 32 bits"));
            }
        }
        let mut suffix: u64 = 0;
        for _ in 0..leading_zeros {
            suffix = (suffix << 1) | u64::from(self.read_bit()?);
        }
        u32::try_from((1u64 << leading_zeros) - 1 + suffix)
            .map_err(|_| Error::InvalidSps("Exp-Golomb value exceeds 32 bits"))
    }

    fn read_ue_at_most(&mut self, max: u32) -> Result<u32> {
        let value = self.read_ue()?;
        if value > max {
            return Err(Error::InvalidSps("syntax element out of range"));
        }
        Ok(value)
    }

    fn read_se(&mut self) -> Result<i64> {
        let code = i64::from(self.read_ue()?);
        Ok(if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS and PPS from `ffmpeg -f lavfi -i testsrc2=size=1280x720:rate=30
    /// -c:v libx264 -profile:v high` (x264 core 164).
    pub(crate) const SPS_720P_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    pub(crate) const PPS_720P_HIGH: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    /// SPS from the same encoder at 1920x1080, main profile: coded as 1088
    /// lines with an 8-line cropping window.
    const SPS_1080P_MAIN: &[u8] = &[
        0x67, 0x4d, 0x40, 0x28, 0xec, 0xa0, 0x3c, 0x01, 0x13, 0xf2, 0xe0, 0x22, 0x00, 0x00, 0x03,
        0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x78, 0x1e, 0x30, 0x63, 0x2c,
    ];
    const PPS_1080P_MAIN: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x20];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0u8, 0, 0, 1][..], nal].concat())
            .collect()
    }

    #[test]
    fn parses_high_profile_720p_sps() {
        let info = SpsInfo::parse(SPS_720P_HIGH).unwrap();
        assert_eq!(info.profile_idc, 100);
        assert_eq!(info.constraint_flags, 0);
        assert_eq!(info.level_idc, 31);
        assert_eq!(info.chroma_format_idc, 1);
        assert_eq!((info.bit_depth_luma, info.bit_depth_chroma), (8, 8));
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.codec_string(), "avc1.64001f");
    }

    #[test]
    fn applies_cropping_window_for_1080p() {
        let info = SpsInfo::parse(SPS_1080P_MAIN).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
        assert_eq!(info.codec_string(), "avc1.4d4028");
    }

    #[test]
    fn truncated_or_foreign_sps_is_an_error() {
        // The fields up to the cropping window end in the tenth byte; the
        // VUI after them is not needed and not read.
        for cut in 1..10 {
            assert!(
                SpsInfo::parse(&SPS_720P_HIGH[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(SpsInfo::parse(PPS_720P_HIGH).is_err());
        assert!(SpsInfo::parse(&[]).is_err());
    }

    #[test]
    fn accepts_annex_b_and_avcc_configs_alike() {
        let from_annex_b = AvcConfig::parse(&annex_b(&[SPS_720P_HIGH, PPS_720P_HIGH])).unwrap();
        let mut avcc = Vec::new();
        from_annex_b.write_avcc_body(&mut avcc);
        let from_avcc = AvcConfig::parse(&avcc).unwrap();
        assert_eq!(from_avcc, from_annex_b);
        assert_eq!(from_avcc.codec_string(), "avc1.64001f");

        // avcC layout: header, one SPS, one PPS, high-profile extension.
        assert_eq!(&avcc[..6], &[1, 0x64, 0x00, 0x1f, 0xff, 0xe1]);
        let pps_at = 6 + 2 + SPS_720P_HIGH.len();
        assert_eq!(avcc[pps_at], 1);
        assert_eq!(&avcc[avcc.len() - 4..], &[0xfd, 0xf8, 0xf8, 0x00]);
    }

    #[test]
    fn garbage_configs_are_rejected() {
        assert_eq!(AvcConfig::parse(&[]), Err(Error::UnrecognizedAvcConfig));
        assert_eq!(
            AvcConfig::parse(b"hello"),
            Err(Error::UnrecognizedAvcConfig)
        );
        assert!(matches!(
            AvcConfig::parse(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 40, 0x67]),
            Err(Error::InvalidAvcConfig(_))
        ));
        assert_eq!(
            AvcConfig::parse(&annex_b(&[SPS_720P_HIGH])),
            Err(Error::MissingParameterSet("PPS"))
        );
        assert_eq!(
            AvcConfig::parse(&annex_b(&[PPS_720P_HIGH])),
            Err(Error::MissingParameterSet("SPS"))
        );
        assert!(matches!(
            AvcConfig::parse(&annex_b(&[&[0x67, 0x64], PPS_720P_HIGH])),
            Err(Error::InvalidSps(_))
        ));
    }

    #[test]
    fn normalises_annex_b_units_and_drops_redundant_nals() {
        let config = AvcConfig::parse(&annex_b(&[SPS_1080P_MAIN, PPS_1080P_MAIN])).unwrap();
        let aud: &[u8] = &[0x09, 0xf0];
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x10];
        // Three-byte start code and trailing zero bytes are both legal Annex B.
        let mut unit = annex_b(&[aud, SPS_1080P_MAIN, PPS_1080P_MAIN]);
        unit.extend_from_slice(&[0, 0, 1]);
        unit.extend_from_slice(idr);
        unit.extend_from_slice(&[0, 0]);

        let mut out = vec![0xaa];
        let appended = config.append_access_unit(&unit, 0, &mut out).unwrap();
        assert_eq!(appended, 4 + idr.len());
        assert_eq!(&out[1..5], &[0, 0, 0, 5]);
        assert_eq!(&out[5..], idr);
    }

    #[test]
    fn keeps_length_prefixed_units_whose_length_looks_like_a_start_code() {
        let config = AvcConfig::parse(&annex_b(&[SPS_720P_HIGH, PPS_720P_HIGH])).unwrap();
        // A 300-byte slice: its length prefix 00 00 01 2c starts like a start code.
        let mut slice = vec![0x41];
        slice.resize(300, 0x5a);
        let mut unit = 300u32.to_be_bytes().to_vec();
        unit.extend_from_slice(&slice);
        let mut out = Vec::new();
        let appended = config.append_access_unit(&unit, 7, &mut out).unwrap();
        assert_eq!(appended, unit.len());
        assert_eq!(out, unit);
    }

    #[test]
    fn empty_or_parameter_set_only_units_are_errors() {
        let config = AvcConfig::parse(&annex_b(&[SPS_720P_HIGH, PPS_720P_HIGH])).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            config.append_access_unit(&[], 3, &mut out),
            Err(Error::EmptySample { dts: 3 })
        );
        assert_eq!(
            config.append_access_unit(&annex_b(&[&[0x09, 0xf0]]), 4, &mut out),
            Err(Error::EmptySample { dts: 4 })
        );
        assert!(matches!(
            config.append_access_unit(&[0x12, 0x34, 0x56], 5, &mut out),
            Err(Error::MalformedSample { dts: 5, .. })
        ));
        assert!(out.is_empty());
    }
}
