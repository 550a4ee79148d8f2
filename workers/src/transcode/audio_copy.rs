//! Live audio copied from the source instead of re-encoded, when the
//! source already is what the shared audio rendition would be: AAC-LC at
//! 48 kHz in stereo, at no more than the rendition's bit rate plus a
//! quarter (OBS sends 160 kb/s against the default 128 kb/s). Decoding,
//! resampling and re-encoding such audio costs about 3 % of a live
//! ladder's CPU and a generation of quality, for the same rendition.
//!
//! The packets keep the source's clock, made sample-exact: RTMP carries
//! millisecond timestamps, so a run of 1024-sample frames at 48 kHz
//! (21.33 ms) arrives with up to a millisecond of rounding either way. A
//! frame within a frame of where the last one ended continues it exactly;
//! a later one (the publisher dropped audio) starts where it says, leaving
//! a gap the previous frame's duration spans; an earlier one (it would
//! overlap what was already packaged) is dropped.

use ffmpeg_next as ff;

use super::pipeline::{AAC_FRAME, AUDIO_RATE};

/// FFmpeg's profile number for AAC-LC (`FF_PROFILE_AAC_LOW`).
const AAC_LOW_PROFILE: i32 = 1;

/// What a source audio stream is, as far as copying it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Whether it is AAC-LC.
    pub aac_lc: bool,
    /// Samples per second.
    pub rate: u32,
    /// Channels.
    pub channels: u16,
    /// Declared bit rate, bit/s (0: not declared).
    pub bitrate: u64,
}

impl AudioFormat {
    /// The format of the stream `decoder` was opened for.
    pub fn of(decoder: &ff::decoder::Audio) -> Self {
        // SAFETY: the decoder's context is valid; profile and bit_rate are plain ints.
        let (profile, bitrate) = unsafe {
            let ctx = decoder.as_ptr();
            ((*ctx).profile, (*ctx).bit_rate)
        };
        Self {
            aac_lc: decoder.id() == ff::codec::Id::AAC && profile == AAC_LOW_PROFILE,
            rate: decoder.rate(),
            channels: decoder.channels(),
            bitrate: u64::try_from(bitrate).unwrap_or(0),
        }
    }

    /// Whether a rendition of `rendition_bitrate` can be this stream as it
    /// is: AAC-LC, 48 kHz, stereo, a declared bit rate up to a quarter
    /// above the rendition's (undeclared: unknown, so re-encoded).
    pub fn copyable_as(&self, rendition_bitrate: u64) -> bool {
        self.aac_lc
            && self.rate == AUDIO_RATE as u32
            && self.channels == 2
            && self.bitrate > 0
            && self.bitrate <= rendition_bitrate * 5 / 4
    }
}

/// The AudioSpecificConfig `decoder` was opened with (empty when none).
pub fn audio_specific_config(decoder: &ff::decoder::Audio) -> Vec<u8> {
    // SAFETY: an opened decoder's context.
    unsafe { super::pipeline::context_extradata(decoder.as_ptr()) }
}

/// Places copied AAC frames on a sample-exact 48 kHz timeline.
#[derive(Debug, Default)]
pub struct AudioClock {
    /// Where the last frame placed ends.
    next: Option<i64>,
    /// Frames dropped as overlapping.
    pub dropped: u64,
}

impl AudioClock {
    /// The presentation time (48 kHz samples) of a frame the source stamps
    /// `stamped`, or `None` to drop it.
    pub fn place(&mut self, stamped: i64) -> Option<i64> {
        let frame = i64::from(AAC_FRAME);
        let placed = match self.next {
            None => stamped,
            Some(next) if stamped < next - frame => {
                self.dropped += 1;
                return None;
            }
            // A gap of more than two frames is the source's: kept.
            Some(next) if stamped > next + 2 * frame => stamped,
            Some(next) => next,
        };
        self.next = Some(placed + frame);
        Some(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Millisecond stamps of consecutive 1024-sample frames, as RTMP sends them.
    fn rtmp_stamps(frames: i64) -> Vec<i64> {
        (0..frames)
            .map(|i| (i * 1024 * 1000 / 48_000) * 48) // ms, back in 48 kHz units
            .collect()
    }

    #[test]
    fn millisecond_stamps_become_a_contiguous_sample_timeline() {
        let mut clock = AudioClock::default();
        let placed: Vec<i64> = rtmp_stamps(500)
            .into_iter()
            .map(|stamp| clock.place(stamp + 96_000).unwrap())
            .collect();
        for (i, pts) in placed.iter().enumerate() {
            assert_eq!(*pts, 96_000 + i as i64 * 1024);
        }
        assert_eq!(clock.dropped, 0);
    }

    #[test]
    fn a_gap_in_the_source_is_kept_and_an_overlap_dropped() {
        let mut clock = AudioClock::default();
        assert_eq!(clock.place(0), Some(0));
        assert_eq!(clock.place(1024), Some(1024));
        // Half a second missing: the next frame starts where it is stamped.
        assert_eq!(clock.place(26_000), Some(26_000));
        assert_eq!(clock.place(27_030), Some(27_024));
        // Stamped two frames back: it would overlap, so it goes.
        assert_eq!(clock.place(25_900), None);
        assert_eq!(clock.dropped, 1);
        assert_eq!(clock.place(28_048), Some(28_048));
    }

    #[test]
    fn only_the_rendition_format_is_copied() {
        let obs = AudioFormat {
            aac_lc: true,
            rate: 48_000,
            channels: 2,
            bitrate: 160_000,
        };
        assert!(obs.copyable_as(128_000));
        assert!(!AudioFormat {
            bitrate: 320_000,
            ..obs
        }
        .copyable_as(128_000));
        assert!(!AudioFormat {
            rate: 44_100,
            ..obs
        }
        .copyable_as(128_000));
        assert!(!AudioFormat { channels: 1, ..obs }.copyable_as(128_000));
        assert!(!AudioFormat {
            aac_lc: false,
            ..obs
        }
        .copyable_as(128_000));
        assert!(!AudioFormat { bitrate: 0, ..obs }.copyable_as(128_000));
    }
}
