//! The terminal summary: one row per rendition, then the failed checks.

use std::fmt::Write;

use crate::report::{MediaKind, Report, Status};

fn cell(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// Renders the summary as plain text (no colour codes: it goes to logs too).
pub fn render(report: &Report) -> String {
    let header = [
        "rendition",
        "size",
        "frames",
        "duration",
        "avg kbit/s",
        "peak kbit/s",
        "target",
        "PSNR-Y dB",
        "1%-low",
        "SSIM-Y",
        "failed",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in &report.renditions {
        let failed = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail && c.rendition.as_deref() == Some(r.name.as_str()))
            .count();
        let size = match (r.kind, r.measured.width, r.measured.height) {
            (MediaKind::Video, Some(w), Some(h)) => format!("{w}x{h}"),
            (MediaKind::Audio, ..) => "audio".to_owned(),
            _ => "?".to_owned(),
        };
        let q = r.quality.as_ref();
        rows.push(vec![
            r.name.clone(),
            size,
            r.measured.frames.to_string(),
            format!("{:.3} s", r.measured.duration_s),
            format!("{:.0}", r.measured.average_bitrate as f64 / 1000.0),
            format!("{:.0}", r.measured.peak_bitrate as f64 / 1000.0),
            cell(
                r.target_bitrate
                    .map(|t| format!("{:.0}", t as f64 / 1000.0)),
            ),
            cell(q.map(|q| format!("{:.2}", q.psnr_y_mean))),
            cell(q.map(|q| format!("{:.2}", q.psnr_y_low1))),
            cell(q.map(|q| format!("{:.4}", q.ssim_y_mean))),
            failed.to_string(),
        ]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, value) in widths.iter_mut().zip(row) {
            *w = (*w).max(value.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, values: &[String]| {
        let mut text = String::new();
        for (i, (value, width)) in values.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{value:<width$}");
            } else {
                let _ = write!(text, "  {value:>width$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    let _ = writeln!(
        out,
        "{} ({:?}) against {}",
        report.url, report.format, report.reference.path
    );
    line(
        &mut out,
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    );
    for row in &rows {
        line(&mut out, row);
    }
    let failures: Vec<_> = report.failures().collect();
    if !failures.is_empty() {
        out.push_str("\nfailed checks:\n");
        for check in failures {
            let _ = write!(out, "  FAIL {}", check.id);
            if let Some(r) = &check.rendition {
                let _ = write!(out, " [{r}]");
            }
            let _ = write!(out, ": {}", check.message);
            if let (Some(e), Some(m)) = (&check.expected, &check.measured) {
                let _ = write!(out, " (expected {e}, measured {m})");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\n{}: {} checks passed, {} failed, {} skipped in {:.1} s",
        match report.result {
            Status::Pass => "PASS",
            _ => "FAIL",
        },
        report.summary.passed,
        report.summary.failed,
        report.summary.skipped,
        report.elapsed_s
    );
    out
}
