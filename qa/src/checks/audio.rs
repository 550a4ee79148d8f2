//! Audio as a listener hears it: loudness, channels and sample rate.

use super::*;

/// Audio judged by what a listener hears: its integrated loudness against
/// the reference's (a gain or downmix mistake, a silent or clipped track),
/// and its channels and sample rate (nothing lost beyond a downmix to
/// stereo and a rate of 44.1 kHz).
pub(super) fn audio(checks: &mut Checks, inputs: &Inputs) {
    let tolerance = inputs.thresholds.max_audio_loudness_difference_lu;
    for (name, measured) in &inputs.loudness.renditions {
        let name = Some(name.as_str());
        let reference = match &inputs.loudness.reference {
            None => {
                for id in ["audio.loudness", "audio.format"] {
                    checks.add(id, name, Status::Skip, "the reference has no audio");
                }
                continue;
            }
            Some(Err(error)) => {
                for id in ["audio.loudness", "audio.format"] {
                    checks.add(
                        id,
                        name,
                        Status::Skip,
                        format!("the reference's audio: {error}"),
                    );
                }
                continue;
            }
            Some(Ok(reference)) => reference,
        };
        let expected_loudness = format!("{:.1} LUFS +- {tolerance:.1} LU", reference.lufs);
        // At least what the reference has, up to stereo and 44.1 kHz.
        let min_channels = reference.channels.min(2);
        let min_rate = reference.sample_rate.min(44_100);
        let expected_format = format!(">= {min_channels} channels, >= {min_rate} Hz");
        match measured {
            Err(error) => {
                let message = format!("cannot measure the audio: {error}");
                checks.pass_or_fail(
                    "audio.loudness",
                    name,
                    false,
                    &message,
                    expected_loudness,
                    "-",
                );
                checks.pass_or_fail("audio.format", name, false, message, expected_format, "-");
            }
            Ok(audio) => {
                let difference = audio.lufs - reference.lufs;
                checks.pass_or_fail(
                    "audio.loudness",
                    name,
                    difference.abs() <= tolerance,
                    "integrated loudness (EBU R 128) against the reference's",
                    expected_loudness,
                    format!("{:.1} LUFS ({difference:+.1} LU)", audio.lufs),
                );
                checks.pass_or_fail(
                    "audio.format",
                    name,
                    audio.channels >= min_channels && audio.sample_rate >= min_rate,
                    format!(
                        "channels and sample rate against the reference's ({} channels, {} Hz)",
                        reference.channels, reference.sample_rate
                    ),
                    expected_format,
                    format!("{} channels, {} Hz", audio.channels, audio.sample_rate),
                );
            }
        }
    }
}
