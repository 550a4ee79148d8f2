//! Quality: PSNR-Y and SSIM-Y of the rungs against the reference, combing,
//! the step between rungs and VMAF where available.

use super::*;

pub(super) fn quality(checks: &mut Checks, inputs: &Inputs) {
    let videos = videos(inputs);
    if inputs.reference.video.is_none() || videos.is_empty() {
        checks.add(
            "quality.psnr_top",
            None,
            Status::Skip,
            "no video to compare",
        );
        return;
    }
    let t = inputs.thresholds;
    for r in &videos {
        match &r.quality {
            Some(Err(error)) => {
                checks.add(
                    "quality.measured",
                    Some(&r.spec.name),
                    Status::Fail,
                    error.clone(),
                );
            }
            None if r.media.is_err() => {
                checks.add(
                    "quality.measured",
                    Some(&r.spec.name),
                    Status::Fail,
                    "unreadable rendition: no quality measured",
                );
            }
            _ => {}
        }
    }
    let measured: Vec<(&str, &crate::report::Quality)> = videos
        .iter()
        .filter_map(|r| match &r.quality {
            Some(Ok(q)) => Some((r.spec.name.as_str(), q)),
            _ => None,
        })
        .collect();
    let top_name = videos[0].spec.name.as_str();
    match measured.first() {
        Some((top, q)) if *top == top_name => {
            checks.pass_or_fail(
                "quality.psnr_top",
                Some(top),
                q.psnr_y_mean >= t.min_top_psnr_y_db && q.psnr_y_low1 >= t.min_top_psnr_y_low1_db,
                format!("top rung PSNR-Y over {} frames", q.frames_compared),
                format!(
                    ">= {} dB mean, >= {} dB 1%-low",
                    t.min_top_psnr_y_db, t.min_top_psnr_y_low1_db
                ),
                format!(
                    "{:.2} dB mean, {:.2} dB 1%-low",
                    q.psnr_y_mean, q.psnr_y_low1
                ),
            );
            checks.pass_or_fail(
                "quality.ssim_top",
                Some(top),
                q.ssim_y_mean >= t.min_top_ssim_y,
                "top rung SSIM-Y",
                format!(">= {}", t.min_top_ssim_y),
                format!("{:.4} mean, {:.4} 1%-low", q.ssim_y_mean, q.ssim_y_low1),
            );
        }
        _ => {
            checks.add(
                "quality.psnr_top",
                Some(top_name),
                Status::Fail,
                "the top rung's quality could not be measured",
            );
        }
    }
    for (name, q) in &measured {
        if q.idet_frames == 0 {
            continue;
        }
        let fraction = q.combed_frames as f64 / q.idet_frames as f64;
        let baseline = if q.reference_idet_frames > 0 {
            q.reference_combed_frames as f64 / q.reference_idet_frames as f64
        } else {
            0.0
        };
        checks.pass_or_fail(
            "quality.combing",
            Some(name),
            fraction - baseline <= t.max_combed_fraction,
            "frames that look interlaced beyond the (deinterlaced) reference: combing",
            format!(
                "<= {:.0} points over the reference",
                t.max_combed_fraction * 100.0
            ),
            format!(
                "{:.1}% ({} of {} frames; reference {:.1}%, FFmpeg idet)",
                fraction * 100.0,
                q.combed_frames,
                q.idet_frames,
                baseline * 100.0
            ),
        );
    }
    for pair in measured.windows(2) {
        let ((high, qh), (low, ql)) = (pair[0], pair[1]);
        let step = qh.psnr_y_mean - ql.psnr_y_mean;
        checks.pass_or_fail(
            "quality.rung_step",
            Some(low),
            step >= t.min_adjacent_psnr_step_db,
            format!("{high} over {low}: adjacent rungs a visible step apart"),
            format!(">= {} dB", t.min_adjacent_psnr_step_db),
            format!(
                "{step:.2} dB ({:.2} vs {:.2})",
                qh.psnr_y_mean, ql.psnr_y_mean
            ),
        );
    }
    if inputs.vmaf.available {
        for (name, q) in &measured {
            let check = checks.add(
                "quality.vmaf",
                Some(name),
                if q.vmaf_mean.is_some() {
                    Status::Pass
                } else {
                    Status::Fail
                },
                "VMAF (informational: no threshold)",
            );
            check.measured = q.vmaf_mean.map(|v| format!("{v:.2}"));
        }
    } else {
        checks.add(
            "quality.vmaf",
            None,
            Status::Skip,
            format!("VMAF not computed: {}", inputs.vmaf.note),
        );
    }
}
