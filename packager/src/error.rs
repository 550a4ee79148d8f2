//! The one error type of the packager.
//!
//! Every variant is a problem with the input the caller handed over (codec
//! configuration, samples, timestamps, names) or with the shape of what was
//! asked for; none is retryable, because packaging the same input again gives
//! the same answer.

/// Why packaging failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The H.264 codec configuration is neither an `avcC` record nor Annex B parameter sets.
    #[error("H.264 codec configuration is neither an avcC record nor Annex B extradata")]
    UnrecognizedAvcConfig,
    /// The H.264 codec configuration is truncated or inconsistent.
    #[error("invalid avcC record: {0}")]
    InvalidAvcConfig(&'static str),
    /// The H.264 codec configuration lacks a sequence or picture parameter set.
    #[error("H.264 codec configuration has no {0}")]
    MissingParameterSet(&'static str),
    /// The sequence parameter set could not be parsed.
    #[error("invalid H.264 sequence parameter set: {0}")]
    InvalidSps(&'static str),
    /// The SPS describes a picture size other than the one the caller declared.
    #[error(
        "H.264 SPS describes {sps_width}x{sps_height} but the track was declared {width}x{height}"
    )]
    DimensionMismatch {
        /// Width decoded from the SPS (after cropping).
        sps_width: u32,
        /// Height decoded from the SPS (after cropping).
        sps_height: u32,
        /// Width the caller declared.
        width: u32,
        /// Height the caller declared.
        height: u32,
    },
    /// The AAC AudioSpecificConfig is truncated or uses a reserved value.
    #[error("invalid AAC AudioSpecificConfig: {0}")]
    InvalidAudioSpecificConfig(&'static str),
    /// The AudioSpecificConfig disagrees with the declared sample rate or channel count.
    #[error("AAC AudioSpecificConfig says {config_rate} Hz / {config_channels} channels but the track was declared {rate} Hz / {channels} channels")]
    AudioConfigMismatch {
        /// Sample rate from the AudioSpecificConfig.
        config_rate: u32,
        /// Channel configuration from the AudioSpecificConfig.
        config_channels: u16,
        /// Sample rate the caller declared.
        rate: u32,
        /// Channel count the caller declared.
        channels: u16,
    },
    /// An AAC frame starts with an ADTS header that does not describe exactly that frame.
    #[error("malformed ADTS header: {0}")]
    InvalidAdts(&'static str),
    /// A sample carries no media data (or only parameter sets and delimiters).
    #[error("sample at dts {dts} has no media data")]
    EmptySample {
        /// Decode timestamp of the offending sample.
        dts: i64,
    },
    /// A video sample is neither a valid Annex B nor a valid length-prefixed access unit.
    #[error("sample at dts {dts} is not a valid H.264 access unit: {reason}")]
    MalformedSample {
        /// Decode timestamp of the offending sample.
        dts: i64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A constructor argument is out of range (zero timescale, zero frame rate, ...).
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
    /// The first video sample is not a keyframe, so the first segment could not be decoded on its own.
    #[error("the first video sample (dts {dts}) is not a keyframe")]
    FirstSampleNotKeyframe {
        /// Decode timestamp of the offending sample.
        dts: i64,
    },
    /// Samples were not pushed in strictly increasing decode order.
    #[error("decode timestamps must increase: {current} follows {previous}")]
    NonMonotonicDts {
        /// Decode timestamp of the previous sample.
        previous: i64,
        /// Decode timestamp of the sample that broke the order.
        current: i64,
    },
    /// A sample would be presented before time zero, which fMP4 without an edit list cannot express.
    #[error("sample presented at {pts} (before 0): trim encoder priming before packaging")]
    NegativePresentationTime {
        /// The negative presentation timestamp.
        pts: i64,
    },
    /// A timestamp difference does not fit the 32-bit fields of the `trun` box.
    #[error("timestamp difference {0} does not fit a 32-bit trun field")]
    TimestampOutOfRange(i64),
    /// A segment grew past what 32-bit box sizes can describe.
    #[error("segment of {0} bytes is too large for a 32-bit mdat")]
    SegmentTooLarge(u64),
    /// A rendition name cannot be used as a path segment in playlist and MPD URIs.
    #[error("rendition name {0:?} must be non-empty and use only ASCII letters, digits, '-', '_' and '.'")]
    InvalidName(String),
    /// A URI template lacks `$Number$` or contains characters that break manifests.
    #[error("invalid URI template {0:?}")]
    InvalidUriTemplate(String),
    /// Segments handed to a playlist or manifest are not numbered consecutively.
    #[error("segment sequence numbers must be consecutive: expected {expected}, got {got}")]
    SequenceGap {
        /// The sequence number that should have come next.
        expected: u64,
        /// The sequence number that came instead.
        got: u64,
    },
    /// A manifest was asked for without anything to put in it.
    #[error("nothing to describe: {0}")]
    NothingToDescribe(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
