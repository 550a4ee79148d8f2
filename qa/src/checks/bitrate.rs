//! Bitrate: each rendition's average and peak against its ladder target.

use super::*;

pub(super) fn bitrate(checks: &mut Checks, inputs: &Inputs, targets: &HashMap<String, u64>) {
    let t = inputs.thresholds;
    for r in inputs.renditions {
        if r.segments.is_empty() || r.measured.total_bytes == 0 {
            continue;
        }
        let name = Some(r.spec.name.as_str());
        let Some(ladder) = inputs.ladder else {
            checks.add(
                "bitrate.average",
                name,
                Status::Skip,
                "no expected ladder (--ladder none): the declared bandwidths are checked against the segments",
            );
            continue;
        };
        if let Some(variant) = &r.muxed_in {
            checks.add(
                "bitrate.average",
                name,
                Status::Skip,
                format!("muxed into {variant}: its bytes count in that variant's bitrate"),
            );
            continue;
        }
        let Some(&target) = targets.get(&r.spec.name) else {
            checks.add(
                "bitrate.average",
                name,
                Status::Skip,
                "no ladder target for this rendition name",
            );
            continue;
        };
        let average = r.measured.average_bitrate;
        let ratio = average as f64 / target as f64;
        // Spending less than the target is no fault where the encoder
        // spends what the content needs: capped CRF video, and audio (an
        // AAC encoder spends far less on a tone or speech than on music;
        // audio is judged by its loudness, duration and offset to the video).
        let audio = r.spec.kind == MediaKind::Audio;
        let undershoot_ok = audio
            || (ladder.rate_control == RateControl::CappedCrf
                && t.allow_undershoot_with_capped_crf);
        let upper = ratio <= 1.0 + t.bitrate_average_tolerance;
        let lower = undershoot_ok || ratio >= 1.0 - t.bitrate_average_tolerance;
        checks.pass_or_fail(
            "bitrate.average",
            name,
            upper && lower,
            if audio {
                "average bitrate under the target's cap (simple audio needs fewer bits)".to_owned()
            } else if undershoot_ok {
                "average bitrate under the target's cap (capped CRF may spend less)".to_owned()
            } else {
                "average bitrate against the target".to_owned()
            },
            if undershoot_ok {
                format!(
                    "<= {} ({} +{:.0}%)",
                    kbps((target as f64 * (1.0 + t.bitrate_average_tolerance)) as u64),
                    kbps(target),
                    t.bitrate_average_tolerance * 100.0
                )
            } else {
                format!(
                    "{} +- {:.0}%",
                    kbps(target),
                    t.bitrate_average_tolerance * 100.0
                )
            },
            format!("{} ({:.2}x)", kbps(average), ratio),
        );
        let peak = r.measured.peak_bitrate;
        let peak_ratio = peak as f64 / target as f64;
        checks.pass_or_fail(
            "bitrate.peak",
            name,
            peak_ratio <= t.max_peak_to_target,
            "peak segment bit rate against the target",
            format!(
                "<= {} ({}x)",
                kbps((target as f64 * t.max_peak_to_target) as u64),
                t.max_peak_to_target
            ),
            format!("{} ({peak_ratio:.2}x)", kbps(peak)),
        );
    }
}
