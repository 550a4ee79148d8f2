//! What HLS and DASH manifests are rendered from: renditions, their
//! segments, measured bitrates, and the relative URI layout.

use cascade_schemas::keys;

use crate::error::{Error, Result};
use crate::segmenter::SegmentInfo;
use crate::time::{ceil_seconds, Rational};
use crate::track::Track;

/// How a rendition's files are named relative to the manifests.
///
/// Each rendition lives in a directory named after it, next to the master
/// playlist and the MPD: `{rendition}/init.mp4`, `{rendition}/1.m4s`,
/// `{rendition}/index.m3u8` with the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriLayout {
    /// Init segment file name inside the rendition directory. Default `init.mp4`.
    pub init_segment: String,
    /// Media segment file name with `$Number$` standing for the sequence
    /// number (the DASH template syntax). Default `$Number$.m4s`.
    pub media_segment: String,
    /// Media playlist file name inside the rendition directory. Default `index.m3u8`.
    pub media_playlist: String,
}

impl Default for UriLayout {
    fn default() -> Self {
        Self {
            init_segment: keys::INIT_SEGMENT.to_owned(),
            media_segment: format!("{NUMBER_PLACEHOLDER}{}", keys::SEGMENT_EXTENSION),
            media_playlist: keys::MEDIA_PLAYLIST.to_owned(),
        }
    }
}

const NUMBER_PLACEHOLDER: &str = "$Number$";

impl UriLayout {
    /// Checks that the names are relative, need no escaping in either
    /// manifest format, and that the segment name numbers its segments.
    pub fn validate(&self) -> Result<()> {
        for name in [&self.init_segment, &self.media_playlist] {
            if !is_plain_path(name) || name.contains('$') {
                return Err(Error::InvalidUriTemplate(name.clone()));
            }
        }
        let without_number = self.media_segment.replacen(NUMBER_PLACEHOLDER, "", 1);
        if !is_plain_path(&self.media_segment) || without_number.contains('$') {
            return Err(Error::InvalidUriTemplate(self.media_segment.clone()));
        }
        if without_number.len() == self.media_segment.len() {
            return Err(Error::InvalidUriTemplate(self.media_segment.clone()));
        }
        Ok(())
    }

    /// The media segment name for `sequence_number`, e.g. `7.m4s`.
    pub fn media_segment_name(&self, sequence_number: u64) -> String {
        self.media_segment
            .replacen(NUMBER_PLACEHOLDER, &sequence_number.to_string(), 1)
    }
}

/// Relative, non-empty, and free of characters that would need quoting or
/// escaping in an m3u8 attribute or an XML attribute.
fn is_plain_path(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        && name.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'/' | b'$')
        })
}

/// Checks a rendition name, which becomes a directory and a DASH
/// `Representation@id` (`$RepresentationID$`).
pub(crate) fn validate_rendition_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// Kind-specific properties of a rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MediaKind {
    /// A video rung.
    Video {
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
        /// Nominal frame rate.
        frame_rate: Rational,
    },
    /// An audio rendition.
    Audio {
        /// Samples per second.
        sample_rate: u32,
        /// Number of channels.
        channels: u16,
    },
}

/// One packaged rendition: its name, what it is, and the segments written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rendition {
    /// Directory name and DASH `Representation@id`, e.g. `1080p` or `audio`.
    pub name: String,
    /// Video or audio properties.
    pub kind: MediaKind,
    /// RFC 6381 codec string.
    pub codecs: String,
    /// Ticks per second of the segment times.
    pub timescale: u32,
    /// The segments in order.
    pub segments: Vec<SegmentInfo>,
}

impl Rendition {
    /// Describes the rendition a [`Track`] was packaged into.
    pub fn from_track(name: impl Into<String>, track: &Track, segments: Vec<SegmentInfo>) -> Self {
        let kind = match track {
            Track::Video(video) => MediaKind::Video {
                width: video.width(),
                height: video.height(),
                frame_rate: video.frame_rate(),
            },
            Track::Audio(audio) => MediaKind::Audio {
                sample_rate: audio.sample_rate(),
                channels: audio.channels(),
            },
        };
        Self {
            name: name.into(),
            kind,
            codecs: track.codec_string(),
            timescale: track.timescale(),
            segments,
        }
    }

    /// Whether this is a video rung.
    pub fn is_video(&self) -> bool {
        matches!(self.kind, MediaKind::Video { .. })
    }

    /// Checks the name, the timescale, and that there are consecutively numbered segments.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_rendition_name(&self.name)?;
        if self.timescale == 0 {
            return Err(Error::InvalidParameter(
                "rendition timescale must be non-zero",
            ));
        }
        let first = self
            .segments
            .first()
            .ok_or(Error::NothingToDescribe("a rendition has no segments"))?;
        check_consecutive(first.sequence_number, &self.segments)
    }

    /// Sequence number of the first segment (0 when there are none).
    pub(crate) fn first_sequence_number(&self) -> u64 {
        self.segments
            .first()
            .map_or(0, |segment| segment.sequence_number)
    }

    /// End of the last segment, in ticks.
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| segment.start + segment.duration)
            .max()
            .unwrap_or(0)
    }

    /// Longest segment duration rounded up to whole seconds (HLS target duration).
    pub fn target_duration_seconds(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|segment| segment.duration)
            .max()
            .unwrap_or(0);
        ceil_seconds(longest, self.timescale).max(1)
    }

    /// Peak and average bitrate measured from the segment sizes.
    pub fn bitrates(&self) -> Bitrates {
        Bitrates::measure(
            &self.segments,
            self.timescale,
            self.target_duration_seconds(),
        )
    }
}

pub(crate) fn check_consecutive(first: u64, segments: &[SegmentInfo]) -> Result<()> {
    for (expected, segment) in (first..).zip(segments) {
        if segment.sequence_number != expected {
            return Err(Error::SequenceGap {
                expected,
                got: segment.sequence_number,
            });
        }
    }
    Ok(())
}

/// Bitrates of a rendition in bits per second, measured from its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Bitrates {
    /// Peak segment bitrate as RFC 8216 4.3.4.2 defines it.
    pub peak: u64,
    /// Total bits over total duration.
    pub average: u64,
}

impl Bitrates {
    /// Measures `segments` in a track with `timescale`, for a playlist whose
    /// target duration is `target_duration_seconds`.
    ///
    /// The peak is the highest bitrate of any run of consecutive segments
    /// lasting between 0.5 and 1.5 target durations (RFC 8216 4.3.4.2), so
    /// one short tail segment cannot inflate it. If no run qualifies (a
    /// single very short segment), the highest single-segment bitrate is used.
    pub fn measure(segments: &[SegmentInfo], timescale: u32, target_duration_seconds: u64) -> Self {
        let target = u128::from(target_duration_seconds) * u128::from(timescale);
        let rate = |bytes: u128, ticks: u128| -> u64 {
            if ticks == 0 {
                return 0;
            }
            u64::try_from((bytes * 8 * u128::from(timescale)).div_ceil(ticks)).unwrap_or(u64::MAX)
        };

        let mut peak = None;
        for start in 0..segments.len() {
            let (mut bytes, mut ticks) = (0u128, 0u128);
            for segment in &segments[start..] {
                bytes += u128::from(segment.size);
                ticks += u128::from(segment.duration);
                // ticks in [0.5, 1.5] * target, compared without division.
                if 2 * ticks > 3 * target {
                    break;
                }
                if 2 * ticks >= target {
                    peak = peak.max(Some(rate(bytes, ticks)));
                }
            }
        }
        let peak = peak.unwrap_or_else(|| {
            segments
                .iter()
                .map(|segment| segment.bitrate(timescale))
                .max()
                .unwrap_or(0)
        });
        let total_bytes = segments
            .iter()
            .map(|segment| u128::from(segment.size))
            .sum();
        let total_ticks = segments
            .iter()
            .map(|segment| u128::from(segment.duration))
            .sum();
        Self {
            peak,
            average: rate(total_bytes, total_ticks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(sequence_number: u64, start: u64, duration: u64, size: u64) -> SegmentInfo {
        SegmentInfo {
            sequence_number,
            start,
            duration,
            size,
        }
    }

    #[test]
    fn default_layout_is_valid_and_numbers_segments() {
        let layout = UriLayout::default();
        layout.validate().unwrap();
        assert_eq!(layout.media_segment_name(12), "12.m4s");
    }

    #[test]
    fn rejects_unsafe_names() {
        for bad in ["", "../x", "/abs", "a b", "a\"b", "a&b", "$x"] {
            assert!(validate_rendition_name(bad).is_err(), "{bad:?}");
        }
        validate_rendition_name("1080p").unwrap();
        let no_number = UriLayout {
            media_segment: "segment.m4s".into(),
            ..UriLayout::default()
        };
        assert!(no_number.validate().is_err());
        let two_numbers = UriLayout {
            media_segment: "$Number$-$Number$.m4s".into(),
            ..UriLayout::default()
        };
        assert!(two_numbers.validate().is_err());
        let escaping = UriLayout {
            init_segment: "../init.mp4".into(),
            ..UriLayout::default()
        };
        assert!(escaping.validate().is_err());
    }

    #[test]
    fn peak_ignores_a_short_tail_segment() {
        // Two 2 s segments of 250 kB (1 Mbit/s), then a 0.1 s tail of 25 kB
        // (2 Mbit/s on its own, too short to count alone).
        let segments = [
            segment(1, 0, 180_000, 250_000),
            segment(2, 180_000, 180_000, 250_000),
            segment(3, 360_000, 9_000, 25_000),
        ];
        let bitrates = Bitrates::measure(&segments, 90_000, 2);
        // The busiest qualifying run is segments 2 and 3: 275 kB over 2.1 s.
        assert_eq!(bitrates.peak, (275_000u64 * 8 * 10).div_ceil(21));
        // 525 kB over 4.1 s.
        assert_eq!(bitrates.average, (525_000u64 * 8 * 10).div_ceil(41));
    }

    #[test]
    fn peak_takes_the_busiest_window() {
        let segments = [
            segment(1, 0, 90_000, 100_000),
            segment(2, 90_000, 90_000, 300_000),
            segment(3, 180_000, 90_000, 100_000),
        ];
        assert_eq!(Bitrates::measure(&segments, 90_000, 1).peak, 2_400_000);
    }

    #[test]
    fn a_single_short_segment_still_has_a_peak() {
        let segments = [segment(1, 0, 9_000, 1_000)];
        assert_eq!(Bitrates::measure(&segments, 90_000, 6).peak, 80_000);
    }
}
