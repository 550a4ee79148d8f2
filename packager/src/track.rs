//! Track descriptions: what a decoder must know before the first sample.

use bytes::Bytes;

use crate::aac::{AudioSpecificConfig, AOT_AAC_LC};
use crate::avc::AvcConfig;
use crate::boxes;
use crate::error::{Error, Result};
use crate::time::Rational;

/// An H.264 video track.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VideoTrack {
    config: AvcConfig,
    width: u32,
    height: u32,
    timescale: u32,
    frame_rate: Rational,
}

impl VideoTrack {
    /// Describes an H.264 track.
    ///
    /// `codec_config` is an `avcC` record or Annex B SPS/PPS; the SPS must
    /// describe `width` x `height` (after cropping). `timescale` is the tick
    /// rate of sample timestamps; `frame_rate` is the nominal output rate
    /// that manifests advertise.
    pub fn new(
        codec_config: &[u8],
        width: u32,
        height: u32,
        timescale: u32,
        frame_rate: Rational,
    ) -> Result<Self> {
        if timescale == 0 {
            return Err(Error::InvalidParameter("video timescale must be non-zero"));
        }
        let config = AvcConfig::parse(codec_config)?;
        let sps = config.sps_info();
        if (sps.width, sps.height) != (width, height) {
            return Err(Error::DimensionMismatch {
                sps_width: sps.width,
                sps_height: sps.height,
                width,
                height,
            });
        }
        Ok(Self {
            config,
            width,
            height,
            timescale,
            frame_rate,
        })
    }

    /// The parsed decoder configuration.
    pub fn config(&self) -> &AvcConfig {
        &self.config
    }

    /// Picture width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Ticks per second of sample timestamps.
    pub fn timescale(&self) -> u32 {
        self.timescale
    }

    /// Nominal frame rate.
    pub fn frame_rate(&self) -> Rational {
        self.frame_rate
    }
}

/// An AAC audio track; its timescale is its sample rate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AudioTrack {
    config: AudioSpecificConfig,
    sample_rate: u32,
    channels: u16,
    /// Encoder delay: samples at the start of the media that are not
    /// presented (AAC priming), removed by an edit list in the header.
    #[serde(default)]
    priming: u32,
}

impl AudioTrack {
    /// Describes an AAC track from its AudioSpecificConfig.
    ///
    /// For AAC-LC the config must agree with `sample_rate`; a non-zero
    /// channel configuration must agree with `channels`. (For SBR/PS object
    /// types the config holds the core rate, so the rate is not compared.)
    pub fn new(audio_specific_config: &[u8], sample_rate: u32, channels: u16) -> Result<Self> {
        if sample_rate == 0 || channels == 0 {
            return Err(Error::InvalidParameter(
                "audio sample rate and channel count must be non-zero",
            ));
        }
        let config = AudioSpecificConfig::parse(audio_specific_config)?;
        let rate_mismatch =
            config.object_type() == AOT_AAC_LC && config.sample_rate() != sample_rate;
        let declared_channels = u16::from(config.channel_configuration());
        // Configurations 1..=6 are that many channels; 7 is 7.1 (8 channels).
        let config_channels = if declared_channels == 7 {
            8
        } else {
            declared_channels
        };
        let channel_mismatch = config_channels != 0 && config_channels != channels;
        if rate_mismatch || channel_mismatch {
            return Err(Error::AudioConfigMismatch {
                config_rate: config.sample_rate(),
                config_channels,
                rate: sample_rate,
                channels,
            });
        }
        Ok(Self {
            config,
            sample_rate,
            channels,
            priming: 0,
        })
    }

    /// The track with `samples` of encoder delay at its start (AAC
    /// priming: the encoder's first `samples` output samples precede the
    /// input's first). The media keeps them, from time 0, so every track
    /// of the presentation still starts its media timeline at 0; the
    /// header's edit list (ISO/IEC 14496-12 8.6.6, `media_time` =
    /// `samples`) tells a reader to present from after them, so the
    /// audio's first input sample plays at presentation time 0, with the
    /// video's first frame.
    pub fn with_priming(mut self, samples: u32) -> Self {
        self.priming = samples;
        self
    }

    /// Samples of encoder delay the header's edit list skips.
    pub fn priming(&self) -> u32 {
        self.priming
    }

    /// The parsed AudioSpecificConfig.
    pub fn config(&self) -> &AudioSpecificConfig {
        &self.config
    }

    /// Samples per second, also the track timescale.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of output channels.
    pub fn channels(&self) -> u16 {
        self.channels
    }
}

/// One elementary stream to package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Track {
    /// H.264 video.
    Video(VideoTrack),
    /// AAC audio.
    Audio(AudioTrack),
}

impl Track {
    /// Ticks per second of this track's timestamps.
    pub fn timescale(&self) -> u32 {
        match self {
            Track::Video(video) => video.timescale,
            Track::Audio(audio) => audio.sample_rate,
        }
    }

    /// RFC 6381 codec string: `avc1.64001f`, `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        match self {
            Track::Video(video) => video.config.codec_string(),
            Track::Audio(audio) => audio.config.codec_string(),
        }
    }

    /// The CMAF header (`ftyp` + `moov`) to serve as `init.mp4`.
    pub fn init_segment(&self) -> Bytes {
        Bytes::from(boxes::write_init_segment(self))
    }
}

impl From<VideoTrack> for Track {
    fn from(video: VideoTrack) -> Self {
        Track::Video(video)
    }
}

impl From<AudioTrack> for Track {
    fn from(audio: AudioTrack) -> Self {
        Track::Audio(audio)
    }
}
