//! The QA report as one self-contained HTML page: inline CSS and SVG plots, nothing fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Display, Write};

use crate::report::{
    Check, Format, MediaKind, Quality, ReferenceInfo, RenditionReport, Report, SegmentReport,
    Status,
};

/// Fixed rendition palette (d3 category10): a rendition keeps its colour in every plot.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Grey for legend entries that stand for a line style rather than a rendition.
const NEUTRAL: &str = "#57606a";
/// Dashed lines are targets, not measurements.
const DASH_ATTRIBUTE: &str = " stroke-dasharray=\"6 4\"";
/// Shown for absent or non-finite values.
const NONE: &str = "–";
/// Check id prefixes, in the order a reader wants them.
const CHECK_GROUPS: [&str; 5] = ["structure", "timing", "quality", "audio", "bitrate"];
/// Per-frame lines are thinned to this many points: more adds bytes, not detail.
const MAX_LINE_POINTS: usize = 1000;

// Chart geometry, in SVG user units (the SVG scales to the page width).
const CHART_WIDTH: f64 = 1000.0;
const PLOT_LEFT: f64 = 72.0;
const PLOT_TOP: f64 = 44.0;
const PLOT_WIDTH: f64 = CHART_WIDTH - PLOT_LEFT - 24.0;
const PLOT_HEIGHT: f64 = 280.0;
const X_AXIS_SPACE: f64 = 50.0;
const LEGEND_ROW: f64 = 20.0;
const TARGET_TICKS: f64 = 6.0;
const MAX_TICKS: usize = 50;
const MAX_X_LABELS: usize = 25;

const STYLE: &str = "\
:root{--pass:#1a7f37;--fail:#cf222e;--skip:#6e7781}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;padding:24px;color:#1f2328;background:#f6f8fa}
main{max-width:1400px;margin:0 auto}
header,section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:16px 24px;margin-bottom:16px}
header{display:flex;gap:32px;align-items:center;border-left:14px solid var(--c)}
header.pass{--c:var(--pass)}header.fail{--c:var(--fail)}header.skip{--c:var(--skip)}
.verdict{font-size:64px;font-weight:800;letter-spacing:2px;color:var(--c)}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:0 0 12px}h3{font-size:15px;margin:20px 0 8px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:#57606a}dd{margin:0;overflow-wrap:anywhere}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}table.wide{font-size:12px}table.compact{width:auto}table.compact th+th{text-align:right}
th,td{padding:4px 6px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}
thead th{background:#f6f8fa;vertical-align:bottom}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.msg{overflow-wrap:anywhere}td.name{white-space:nowrap}
tr.fail{background:#ffebe9}tr.skip{color:#57606a}
td.status{font-weight:700;white-space:nowrap}
tr.pass td.status,.count.pass{color:var(--pass)}tr.fail td.status,.count.fail{color:var(--fail)}tr.skip td.status{color:var(--skip)}
tr.group th{background:#eaeef2;text-transform:uppercase;font-size:12px;letter-spacing:1px}
td.mismatch{color:var(--fail);font-weight:600}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.ok{color:var(--pass);font-weight:600}.empty{color:#6e7781;font-style:italic}
svg{display:block;width:100%;height:auto;margin:8px 0 24px}
footer{color:#6e7781;font-size:12px;text-align:center}
";

/// Renders `report` as a complete HTML document.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(64 * 1024);
    // Writing into a String cannot fail; fmt::Result only carries `?` through.
    let _ = write_page(&mut page, report);
    page
}

fn write_page(out: &mut String, report: &Report) -> fmt::Result {
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Cascade QA {}: {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n",
        status_word(report.result),
        Esc(&report.url)
    )?;
    write_header(out, report)?;
    let failures: Vec<&Check> = report.failures().collect();
    out.push_str("<section>\n<h2>Failed checks</h2>\n");
    if failures.is_empty() {
        out.push_str("<p class=\"ok\">No check failed.</p>\n");
    } else {
        write_check_table(out, &failures, false)?;
    }
    out.push_str("</section>\n");
    // Pictures before the long table: what a person looks at first.
    write_renditions(out, report)?;
    write_plots(out, report)?;
    out.push_str("<section>\n<h2>All checks</h2>\n");
    let mut checks: Vec<&Check> = report.checks.iter().collect();
    // Stable sort: within a group, checks keep report order.
    checks.sort_by_key(|c| group_rank(check_group(&c.id)));
    if checks.is_empty() {
        out.push_str("<p class=\"empty\">No checks ran.</p>\n");
    } else {
        write_check_table(out, &checks, true)?;
    }
    out.push_str("</section>\n");
    write!(
        out,
        "<footer>cascade {} · report schema v{}</footer>\n</main>\n</body>\n</html>\n",
        Esc(&report.tool_version),
        report.schema_version
    )
}

fn write_header(out: &mut String, report: &Report) -> fmt::Result {
    let format = match report.format {
        Format::Hls => "HLS",
        Format::Dash => "DASH",
    };
    let summary = &report.summary;
    let vmaf = if report.vmaf.available {
        "available".to_string()
    } else {
        format!("not computed: {}", Esc(&report.vmaf.note))
    };
    write!(
        out,
        "<header class=\"{}\">\n<div class=\"verdict\">{}</div>\n<div>\n<h1>Cascade QA report</h1>\n<dl>\n",
        status_class(report.result),
        status_word(report.result)
    )?;
    let facts: [(&str, String); 8] = [
        ("URL", format!("<code>{}</code>", Esc(&report.url))),
        ("Format", format.to_string()),
        ("Reference", format!("<code>{}</code>", Esc(&report.reference.path))),
        ("Reference media", reference_details(&report.reference)),
        ("Generated", Esc(&report.generated_at).to_string()),
        ("Elapsed", fmt_elapsed(report.elapsed_s)),
        (
            "Checks",
            format!(
                "<span class=\"count pass\">{} passed</span> · <span class=\"count fail\">{} failed</span> · {} skipped",
                summary.passed, summary.failed, summary.skipped
            ),
        ),
        ("VMAF", vmaf),
    ];
    for (label, value) in facts {
        writeln!(out, "<dt>{label}</dt><dd>{value}</dd>")?;
    }
    out.push_str("</dl>\n</div>\n</header>\n");
    Ok(())
}

fn reference_details(reference: &ReferenceInfo) -> String {
    let mut parts = Vec::new();
    if let (Some(width), Some(height)) = (reference.width, reference.height) {
        parts.push(format!("{width}×{height}"));
    }
    if let Some(fps) = reference.frame_rate {
        parts.push(format!("{} fps", fmt_rate(fps)));
    }
    parts.push(fmt_seconds(reference.duration_s));
    if let Some(frames) = reference.frames {
        parts.push(format!("{frames} frames"));
    }
    if reference.rotation != 0 {
        parts.push(format!("rotated {}°", reference.rotation));
    }
    parts.join(" · ")
}

/// A checks table; `grouped` adds a heading row whenever the id prefix changes.
fn write_check_table(out: &mut String, checks: &[&Check], grouped: bool) -> fmt::Result {
    out.push_str(
        "<div class=\"scroll\"><table>\n<thead><tr><th>Status</th><th>Check</th><th>Rendition</th>\
         <th>Message</th><th>Expected</th><th>Measured</th></tr></thead>\n<tbody>\n",
    );
    let mut current_group = None;
    for check in checks {
        let group = check_group(&check.id);
        if grouped && current_group != Some(group) {
            writeln!(
                out,
                "<tr class=\"group\"><th colspan=\"6\">{}</th></tr>",
                Esc(group)
            )?;
            current_group = Some(group);
        }
        writeln!(
            out,
            "<tr class=\"{}\"><td class=\"status\">{}</td><td><code>{}</code></td><td>{}</td>\
             <td class=\"msg\">{}</td><td class=\"msg\">{}</td><td class=\"msg\">{}</td></tr>",
            status_class(check.status),
            status_word(check.status),
            Esc(&check.id),
            Esc(check.rendition.as_deref().unwrap_or(NONE)),
            Esc(&check.message),
            Esc(check.expected.as_deref().unwrap_or(NONE)),
            Esc(check.measured.as_deref().unwrap_or(NONE)),
        )?;
    }
    out.push_str("</tbody>\n</table></div>\n");
    Ok(())
}

fn write_renditions(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Renditions</h2>\n");
    if report.renditions.is_empty() {
        out.push_str("<p class=\"empty\">No renditions.</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"wide\">\n<thead>\n<tr><th colspan=\"2\"></th>\
         <th colspan=\"5\">Declared</th><th colspan=\"7\">Measured</th><th></th></tr>\n\
         <tr><th>Name</th><th>Kind</th><th>Bandwidth</th><th>Avg bandwidth</th><th>Codecs</th>\
         <th>Resolution</th><th>Frame rate</th><th>Codecs</th><th>Resolution</th><th>Frame rate</th>\
         <th>Frames</th><th>Duration</th><th>Avg bitrate</th><th>Peak bitrate</th><th>Target</th></tr>\n\
         </thead>\n<tbody>\n",
    );
    for (position, rendition) in report.renditions.iter().enumerate() {
        let (declared, measured) = (&rendition.declared, &rendition.measured);
        let kind = match rendition.kind {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        };
        let resolution_differs = declared.width.is_some()
            && (declared.width, declared.height) != (measured.width, measured.height);
        let rate_differs = matches!(
            (declared.frame_rate, measured.frame_rate),
            (Some(d), Some(m)) if (d - m).abs() > 0.01
        );
        let flagged = |differs: bool| if differs { "num mismatch" } else { "num" };
        // (class, cell HTML with report text already escaped)
        let cells = [
            ("name", name_html(position, &rendition.name)),
            ("", kind.to_string()),
            ("num", or_none(declared.bandwidth, fmt_bitrate)),
            ("num", or_none(declared.average_bandwidth, fmt_bitrate)),
            ("", codecs_html(declared.codecs.as_deref())),
            ("num", fmt_resolution(declared.width, declared.height)),
            ("num", or_none(declared.frame_rate, fmt_rate)),
            ("", codecs_html(measured.codecs.as_deref())),
            (
                flagged(resolution_differs),
                fmt_resolution(measured.width, measured.height),
            ),
            (
                flagged(rate_differs),
                or_none(measured.frame_rate, fmt_rate),
            ),
            ("num", measured.frames.to_string()),
            ("num", fmt_seconds(measured.duration_s)),
            ("num", fmt_bitrate(measured.average_bitrate)),
            ("num", fmt_bitrate(measured.peak_bitrate)),
            ("num", or_none(rendition.target_bitrate, fmt_bitrate)),
        ];
        write_row(out, &rendition.playlist_url, &cells)?;
    }
    out.push_str("</tbody>\n</table></div>\n");
    write_quality_table(out, report)?;
    out.push_str("</section>\n");
    Ok(())
}

/// Quality against the reference, for the renditions that have it.
fn write_quality_table(out: &mut String, report: &Report) -> fmt::Result {
    let rated: Vec<(usize, &RenditionReport, &Quality)> = report
        .renditions
        .iter()
        .enumerate()
        .filter_map(|(position, r)| r.quality.as_ref().map(|q| (position, r, q)))
        .collect();
    if rated.is_empty() {
        return writeln!(out, "<p class=\"empty\">Quality: no quality data.</p>");
    }
    let with_vmaf = rated.iter().any(|(_, _, q)| q.vmaf_mean.is_some());
    writeln!(
        out,
        "<h3>Quality against the reference</h3>\n<div class=\"scroll\"><table class=\"compact\">\n<thead><tr><th>Name</th>\
         <th>Frames compared</th><th>PSNR-Y mean (dB)</th><th>PSNR-Y 1% low (dB)</th><th>SSIM-Y mean</th>\
         <th>SSIM-Y 1% low</th>{}</tr></thead>\n<tbody>",
        if with_vmaf { "<th>VMAF mean</th>" } else { "" }
    )?;
    for (position, rendition, quality) in rated {
        let mut cells = vec![
            ("name", name_html(position, &rendition.name)),
            ("num", quality.frames_compared.to_string()),
            ("num", fmt_fixed(quality.psnr_y_mean, 2)),
            ("num", fmt_fixed(quality.psnr_y_low1, 2)),
            ("num", fmt_fixed(quality.ssim_y_mean, 4)),
            ("num", fmt_fixed(quality.ssim_y_low1, 4)),
        ];
        if with_vmaf {
            cells.push(("num", or_none(quality.vmaf_mean, |v| fmt_fixed(v, 2))));
        }
        write_row(out, &rendition.playlist_url, &cells)?;
    }
    out.push_str("</tbody>\n</table></div>\n");
    Ok(())
}

/// A table row of (class, HTML) cells; hovering shows the rendition's playlist URL.
fn write_row(out: &mut String, playlist_url: &str, cells: &[(&str, String)]) -> fmt::Result {
    write!(out, "<tr title=\"{}\">", Esc(playlist_url))?;
    for (class, html) in cells {
        write!(out, "<td class=\"{class}\">{html}</td>")?;
    }
    out.push_str("</tr>\n");
    Ok(())
}

/// The rendition's name behind a swatch of its plot colour.
fn name_html(position: usize, name: &str) -> String {
    let color = color_of(position);
    format!(
        "<span class=\"swatch\" style=\"background:{color}\"></span>{}",
        Esc(name)
    )
}

fn write_plots(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<section>\n<h2>Plots</h2>\n");
    write_line_chart(out, &bitrate_chart(report))?;
    let psnr = quality_chart(report, "PSNR-Y per frame", "PSNR-Y (dB)", |q| &q.psnr_y);
    write_line_chart(out, &psnr)?;
    let ssim = quality_chart(report, "SSIM-Y per frame", "SSIM-Y", |q| &q.ssim_y);
    write_line_chart(out, &ssim)?;
    write_segment_sizes(out, report)?;
    out.push_str("</section>\n");
    Ok(())
}

/// How a line is drawn and what the legend calls it.
#[derive(Clone, Copy)]
struct Pen<'a> {
    label: &'a str,
    color: &'static str,
    dashed: bool,
}

impl<'a> Pen<'a> {
    fn solid(label: &'a str, color: &'static str) -> Self {
        Pen {
            label,
            color,
            dashed: false,
        }
    }
}

struct LineChart<'a> {
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    y_from_zero: bool,
    /// Said after the title, instead of the chart, when no line has a finite point.
    empty_note: &'static str,
    lines: Vec<(Pen<'a>, Vec<(f64, f64)>)>,
    legend: Vec<Pen<'a>>,
}

impl LineChart<'_> {
    fn new(
        title: &'static str,
        x_label: &'static str,
        y_label: &'static str,
        empty_note: &'static str,
    ) -> Self {
        LineChart {
            title,
            x_label,
            y_label,
            empty_note,
            y_from_zero: false,
            lines: Vec::new(),
            legend: Vec::new(),
        }
    }
}

fn bitrate_chart(report: &Report) -> LineChart<'_> {
    let mut chart = LineChart::new(
        "Bitrate per segment",
        "time (s)",
        "bitrate (Mbit/s)",
        "no segment data",
    );
    chart.y_from_zero = true;
    let timelines: Vec<_> = report
        .renditions
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.segments.is_empty())
        .map(|(position, r)| {
            (
                Pen::solid(&r.name, color_of(position)),
                r,
                bitrate_steps(&r.segments),
            )
        })
        .collect();
    let end_s = timelines
        .iter()
        .flat_map(|(_, _, steps)| steps.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    for (pen, rendition, steps) in timelines {
        chart.legend.push(pen);
        chart.lines.push((pen, steps));
        if let Some(target) = rendition.target_bitrate {
            let mbps = target as f64 / 1e6;
            let target_pen = Pen {
                dashed: true,
                ..pen
            };
            chart
                .lines
                .push((target_pen, vec![(0.0, mbps), (end_s, mbps)]));
        }
    }
    if chart.lines.iter().any(|(pen, _)| pen.dashed) {
        let target_pen = Pen {
            label: "target bitrate",
            color: NEUTRAL,
            dashed: true,
        };
        chart.legend.push(target_pen);
    }
    chart
}

/// Step-line vertices: each segment's bitrate held over its span of the declared timeline.
fn bitrate_steps(segments: &[SegmentReport]) -> Vec<(f64, f64)> {
    let mut start = 0.0;
    let mut points = Vec::with_capacity(segments.len() * 2);
    for segment in segments {
        // A broken duration must not shift every later segment.
        let duration = Some(segment.declared_duration_s)
            .filter(|d| d.is_finite() && *d > 0.0)
            .unwrap_or(0.0);
        let mbps = segment.bitrate as f64 / 1e6;
        points.push((start, mbps));
        points.push((start + duration, mbps));
        start += duration;
    }
    points
}

fn quality_chart<'a>(
    report: &'a Report,
    title: &'static str,
    y_label: &'static str,
    per_frame: fn(&Quality) -> &[f64],
) -> LineChart<'a> {
    let mut chart = LineChart::new(title, "frame", y_label, "no quality data");
    for (position, rendition) in report.renditions.iter().enumerate() {
        let Some(quality) = rendition
            .quality
            .as_ref()
            .filter(|_| rendition.kind == MediaKind::Video)
        else {
            continue;
        };
        let points = downsample_min(per_frame(quality), MAX_LINE_POINTS);
        if !points.is_empty() {
            let pen = Pen::solid(&rendition.name, color_of(position));
            chart.legend.push(pen);
            chart.lines.push((pen, points));
        }
    }
    chart
}

/// At most `max_points` (frame index, value) pairs, each the minimum of its bucket
/// so that dips stay visible; non-finite values are skipped.
fn downsample_min(values: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let bucket = values.len().div_ceil(max_points.max(1)).max(1);
    values
        .chunks(bucket)
        .enumerate()
        .filter_map(|(chunk_number, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(offset, v)| ((chunk_number * bucket + offset) as f64, *v))
        })
        .collect()
}

fn write_line_chart(out: &mut String, chart: &LineChart) -> fmt::Result {
    let finite = || {
        chart
            .lines
            .iter()
            .flat_map(|(_, points)| points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let x_range = value_range(finite().map(|p| p.0), true);
    let y_range = value_range(finite().map(|p| p.1), chart.y_from_zero);
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (x_range, y_range) else {
        let (title, note) = (chart.title, chart.empty_note);
        return writeln!(out, "<p class=\"empty\">{title}: {note}.</p>");
    };
    let x = Axis::new(x_lo, x_hi, false);
    let y = Axis::new(y_lo, y_hi, true);
    let frame = Frame {
        title: chart.title,
        x_label: chart.x_label,
        y_label: chart.y_label,
        y: &y,
        x_ticks: x.ticks.iter().map(|&t| (x_px(&x, t), x.label(t))).collect(),
        x_grid: true,
        legend: &chart.legend,
    };
    open_chart(out, &frame)?;
    for (pen, points) in &chart.lines {
        let points: Vec<(f64, f64)> = points
            .iter()
            .filter(|(at, value)| at.is_finite() && value.is_finite())
            .map(|&(at, value)| (x_px(&x, at), y_px(&y, value)))
            .collect();
        let (color, label) = (pen.color, Esc(pen.label));
        match points.as_slice() {
            [] => {}
            // A lone point would be an invisible zero-length line.
            [(cx, cy)] => writeln!(
                out,
                "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"{color}\"><title>{label}</title></circle>"
            )?,
            _ => {
                let dash = if pen.dashed { DASH_ATTRIBUTE } else { "" };
                write!(out, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"{dash} points=\"")?;
                for (px, py) in &points {
                    write!(out, "{px:.1},{py:.1} ")?;
                }
                writeln!(out, "\"><title>{label}</title></polyline>")?;
            }
        }
    }
    out.push_str("</svg>\n");
    Ok(())
}

fn write_segment_sizes(out: &mut String, report: &Report) -> fmt::Result {
    // Renditions with segments: their pen and bytes by segment index.
    let rungs: Vec<(Pen, BTreeMap<u32, u64>)> = report
        .renditions
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.segments.is_empty())
        .map(|(position, r)| {
            let sizes = r.segments.iter().map(|s| (s.index, s.bytes)).collect();
            (Pen::solid(&r.name, color_of(position)), sizes)
        })
        .collect();
    let indices: BTreeSet<u32> = rungs
        .iter()
        .flat_map(|(_, sizes)| sizes.keys().copied())
        .collect();
    let Some(max_bytes) = rungs
        .iter()
        .flat_map(|(_, sizes)| sizes.values().copied())
        .max()
    else {
        return writeln!(
            out,
            "<p class=\"empty\">Segment sizes: no segment data.</p>"
        );
    };
    let (unit, divisor) = if max_bytes >= 1_000_000 {
        ("MB", 1e6)
    } else {
        ("kB", 1e3)
    };
    let (y_lo, y_hi) = value_range([max_bytes as f64 / divisor], true).unwrap_or((0.0, 1.0));
    let y = Axis::new(y_lo, y_hi, true);
    let slot_width = PLOT_WIDTH / indices.len().max(1) as f64;
    let label_every = indices.len().div_ceil(MAX_X_LABELS).max(1);
    let slot_center = |slot: usize| PLOT_LEFT + slot_width * (slot as f64 + 0.5);
    let legend: Vec<Pen> = rungs.iter().map(|(pen, _)| *pen).collect();
    let y_label = format!("size ({unit})");
    let frame = Frame {
        title: "Segment sizes",
        x_label: "segment index",
        y_label: &y_label,
        y: &y,
        x_ticks: indices
            .iter()
            .enumerate()
            .step_by(label_every)
            .map(|(slot, index)| (slot_center(slot), index.to_string()))
            .collect(),
        x_grid: false,
        legend: &legend,
    };
    open_chart(out, &frame)?;
    // The bars of a group fill 80% of its slot so neighbouring groups stay apart.
    let bar_width = slot_width * 0.8 / rungs.len() as f64;
    for (slot, index) in indices.iter().enumerate() {
        let group_left = slot_center(slot) - slot_width * 0.4;
        for (rung_number, (pen, sizes)) in rungs.iter().enumerate() {
            let Some(&bytes) = sizes.get(index) else {
                continue;
            };
            let value = bytes as f64 / divisor;
            let top = y_px(&y, value);
            writeln!(
                out,
                "<rect x=\"{:.2}\" y=\"{top:.1}\" width=\"{bar_width:.2}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{} · segment {index} · {value:.3} {unit}</title></rect>",
                group_left + bar_width * rung_number as f64,
                (PLOT_TOP + PLOT_HEIGHT - top).max(0.0),
                pen.color,
                Esc(pen.label),
            )?;
        }
    }
    out.push_str("</svg>\n");
    Ok(())
}

/// A numeric axis: the range it spans and where its ticks go.
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// `snap` widens the range to whole steps, so gridlines frame the data.
    fn new(lo: f64, hi: f64, snap: bool) -> Self {
        let step = nice_step((hi - lo) / TARGET_TICKS);
        let (lo, hi) = if snap {
            ((lo / step).floor() * step, (hi / step).ceil() * step)
        } else {
            (lo, hi)
        };
        let first = (lo / step).ceil() * step;
        let ticks = (0..MAX_TICKS)
            .map(|i| first + i as f64 * step)
            .take_while(|t| *t <= hi + step * 1e-9)
            .collect();
        Axis {
            lo,
            hi,
            step,
            ticks,
        }
    }

    /// Where `value` falls between `lo` (0) and `hi` (1).
    fn fraction(&self, value: f64) -> f64 {
        let span = self.hi - self.lo;
        if span > 0.0 && span.is_finite() {
            (value - self.lo) / span
        } else {
            0.5
        }
    }

    fn label(&self, tick: f64) -> String {
        let decimals = if self.step >= 1.0 {
            0
        } else {
            (-self.step.log10().floor()).clamp(0.0, 6.0) as usize
        };
        // Snap float noise so a tick reads "0", not "-0" or "1e-17".
        let tick = if tick.abs() < self.step * 1e-6 {
            0.0
        } else {
            tick
        };
        format!("{tick:.decimals$}")
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Smallest and largest finite value (with 0 when `from_zero`), widened when
/// all are equal so the axis never has zero span; `None` without finite values.
fn value_range(values: impl IntoIterator<Item = f64>, from_zero: bool) -> Option<(f64, f64)> {
    let (lo, hi) =
        values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold(None, |range, v| match range {
                None => Some((v, v)),
                Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
            })?;
    let (lo, hi) = if from_zero {
        (lo.min(0.0), hi.max(0.0))
    } else {
        (lo, hi)
    };
    if hi - lo > hi.abs().max(lo.abs()) * 1e-9 {
        return Some((lo, hi));
    }
    if hi == 0.0 {
        return Some(if from_zero { (0.0, 1.0) } else { (-1.0, 1.0) });
    }
    let pad = hi.abs() * 0.05;
    Some((lo - pad, hi + pad))
}

fn x_px(axis: &Axis, value: f64) -> f64 {
    PLOT_LEFT + PLOT_WIDTH * axis.fraction(value)
}

fn y_px(axis: &Axis, value: f64) -> f64 {
    PLOT_TOP + PLOT_HEIGHT * (1.0 - axis.fraction(value))
}

/// Everything of a chart but its data.
struct Frame<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    y: &'a Axis,
    /// Pixel position and text of each x tick.
    x_ticks: Vec<(f64, String)>,
    x_grid: bool,
    legend: &'a [Pen<'a>],
}

/// Opens the `<svg>` and draws title, grid, axes and legend; the caller adds data and closes it.
fn open_chart(out: &mut String, frame: &Frame) -> fmt::Result {
    // Legend entries flow left to right and wrap; text width is estimated at 7 units a character.
    let mut positions = Vec::with_capacity(frame.legend.len());
    let (mut x, mut row) = (PLOT_LEFT, 0.0);
    for entry in frame.legend {
        let width = 40.0 + 7.0 * entry.label.chars().count() as f64;
        if x > PLOT_LEFT && x + width > PLOT_LEFT + PLOT_WIDTH {
            x = PLOT_LEFT;
            row += 1.0;
        }
        positions.push((x, row));
        x += width;
    }
    let rows = if frame.legend.is_empty() {
        0.0
    } else {
        row + 1.0
    };
    let legend_top = PLOT_TOP + PLOT_HEIGHT + X_AXIS_SPACE;
    let height = legend_top + rows * LEGEND_ROW + 8.0;
    let plot_bottom = PLOT_TOP + PLOT_HEIGHT;
    writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" aria-label=\"{}\" font-size=\"12\">\n\
         <text x=\"{PLOT_LEFT}\" y=\"24\" font-size=\"15\" font-weight=\"600\" fill=\"#1f2328\">{}</text>",
        Esc(frame.title),
        Esc(frame.title)
    )?;
    for &tick in &frame.y.ticks {
        let y = y_px(frame.y, tick);
        writeln!(
            out,
            "<line x1=\"{PLOT_LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e1e4e8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#57606a\">{}</text>",
            PLOT_LEFT + PLOT_WIDTH,
            PLOT_LEFT - 8.0,
            y + 4.0,
            frame.y.label(tick)
        )?;
    }
    for (x, label) in &frame.x_ticks {
        if frame.x_grid {
            writeln!(out, "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{plot_bottom}\" stroke=\"#eef0f2\"/>")?;
        }
        writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
            plot_bottom + 18.0,
            Esc(label)
        )?;
    }
    writeln!(
        out,
        "<path d=\"M{PLOT_LEFT},{PLOT_TOP}V{plot_bottom}H{:.1}\" fill=\"none\" stroke=\"#57606a\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#1f2328\">{}</text>\n\
         <text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#1f2328\">{}</text>",
        PLOT_LEFT + PLOT_WIDTH,
        PLOT_LEFT + PLOT_WIDTH / 2.0,
        plot_bottom + 38.0,
        Esc(frame.x_label),
        PLOT_TOP + PLOT_HEIGHT / 2.0,
        Esc(frame.y_label)
    )?;
    for (entry, (x, row)) in frame.legend.iter().zip(positions) {
        let y = legend_top + row * LEGEND_ROW + 6.0;
        let dash = if entry.dashed { DASH_ATTRIBUTE } else { "" };
        writeln!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"3\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1f2328\">{}</text>",
            x + 24.0,
            entry.color,
            x + 30.0,
            y + 4.0,
            Esc(entry.label)
        )?;
    }
    Ok(())
}

/// Text escaped for HTML element content and quoted attribute values alike.
struct Esc<'a>(&'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                _ => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn color_of(position: usize) -> &'static str {
    PALETTE[position % PALETTE.len()]
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
    }
}

fn status_class(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Skip => "skip",
    }
}

/// The part of a check id before the first dot: `timing.segment_alignment` is in `timing`.
fn check_group(id: &str) -> &str {
    id.split_once('.').map_or(id, |(group, _)| group)
}

/// Known groups in reading order, unknown ones after them.
fn group_rank(group: &str) -> usize {
    CHECK_GROUPS
        .iter()
        .position(|g| *g == group)
        .unwrap_or(CHECK_GROUPS.len())
}

fn fmt_fixed(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else if value.is_nan() {
        NONE.to_string()
    } else if value > 0.0 {
        "∞".to_string()
    } else {
        "−∞".to_string()
    }
}

/// Frame rate with up to three decimals and no trailing zeros: 25, 29.97, 23.976.
fn fmt_rate(fps: f64) -> String {
    let text = fmt_fixed(fps, 3);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn fmt_bitrate(bits_per_second: u64) -> String {
    if bits_per_second >= 1_000_000 {
        format!("{:.2} Mbit/s", bits_per_second as f64 / 1e6)
    } else {
        format!("{:.0} kbit/s", bits_per_second as f64 / 1e3)
    }
}

fn or_none<T>(value: Option<T>, format: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| NONE.to_string(), format)
}

/// A codecs list that may wrap after each comma, to keep the table narrow.
fn codecs_html(codecs: Option<&str>) -> String {
    let escaped = Esc(codecs.unwrap_or(NONE)).to_string();
    format!("<code>{}</code>", escaped.replace(',', ",<wbr>"))
}

fn fmt_resolution(width: Option<u32>, height: Option<u32>) -> String {
    match (width, height) {
        (Some(width), Some(height)) => format!("{width}×{height}"),
        _ => NONE.to_string(),
    }
}

fn fmt_seconds(seconds: f64) -> String {
    format!("{} s", fmt_fixed(seconds, 3))
}

fn fmt_elapsed(seconds: f64) -> String {
    if seconds.is_finite() && seconds >= 60.0 {
        format!("{} min {:.1} s", (seconds / 60.0).floor(), seconds % 60.0)
    } else {
        format!("{} s", fmt_fixed(seconds, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Declared, Measured, Summary, VmafAvailability, SCHEMA_VERSION};
    use crate::thresholds::Thresholds;

    fn rendition(name: &str, kind: MediaKind, bitrate: u64) -> RenditionReport {
        let segments = (1..=3)
            .map(|index| SegmentReport {
                index,
                bytes: bitrate / 2,
                declared_duration_s: 4.0,
                bitrate: bitrate + u64::from(index) * 10_000,
                ..SegmentReport::default()
            })
            .collect();
        let declared = Declared {
            bandwidth: Some(bitrate * 2),
            codecs: Some("avc1.64001f,mp4a.40.2".to_string()),
            ..Declared::default()
        };
        RenditionReport {
            name: name.to_string(),
            kind,
            playlist_url: format!("https://cdn.example/{name}/index.m3u8"),
            declared,
            measured: Measured {
                frames: 250,
                average_bitrate: bitrate,
                ..Measured::default()
            },
            target_bitrate: Some(bitrate),
            segments,
            quality: (kind == MediaKind::Video).then(|| quality(bitrate as f64 / 1e5)),
        }
    }

    /// 2500 frames around `base` dB with one infinite and one NaN frame.
    fn quality(base: f64) -> Quality {
        let mut psnr_y: Vec<f64> = (0..2500).map(|i| base + f64::from(i % 7) * 0.1).collect();
        psnr_y[100] = f64::INFINITY;
        psnr_y[200] = f64::NAN;
        let ssim_y = psnr_y.iter().map(|p| p / 100.0).collect();
        let (psnr_y_mean, ssim_y_low1, vmaf_mean) = (base, f64::NAN, Some(93.5));
        Quality {
            psnr_y_mean,
            ssim_y_low1,
            vmaf_mean,
            psnr_y,
            ssim_y,
            ..Quality::default()
        }
    }

    fn sample_report() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            tool_version: "0.1.0".to_string(),
            url: "https://cdn.example/master.m3u8?a=1&b=2".to_string(),
            format: Format::Hls,
            generated_at: "2025-01-01T00:00:00Z".to_string(),
            elapsed_s: 75.5,
            result: Status::Fail,
            reference: ReferenceInfo {
                path: "/media/ref.mp4".to_string(),
                width: Some(1920),
                height: Some(1080),
                frame_rate: Some(25.0),
                frames: Some(250),
                duration_s: 10.0,
                ..ReferenceInfo::default()
            },
            thresholds: Thresholds::default(),
            vmaf: VmafAvailability {
                available: false,
                note: "libvmaf missing".to_string(),
            },
            renditions: vec![
                rendition("video_1080p", MediaKind::Video, 4_200_000),
                rendition("video_720p", MediaKind::Video, 3_900_000),
                rendition("audio_aac", MediaKind::Audio, 128_000),
            ],
            checks: vec![
                Check {
                    id: "timing.segment_alignment".to_string(),
                    rendition: None,
                    status: Status::Pass,
                    message: "aligned".to_string(),
                    expected: None,
                    measured: None,
                },
                Check {
                    id: "structure.codecs".to_string(),
                    rendition: Some("video_720p".to_string()),
                    status: Status::Fail,
                    message: "bad <script>alert(1)</script> \"quotes\"&".to_string(),
                    expected: Some("avc1".to_string()),
                    measured: Some("hvc1".to_string()),
                },
            ],
            summary: Summary {
                passed: 1,
                failed: 1,
                skipped: 0,
            },
        }
    }

    #[test]
    fn a_failing_report_renders_escaped_with_plots() {
        let page = render(&sample_report());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<svg"));
        assert!(page.contains("FAIL"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &quot;quotes&quot;&amp;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("master.m3u8?a=1&amp;b=2"));
        for name in ["video_1080p", "video_720p", "audio_aac"] {
            assert!(page.contains(name), "{name} missing");
        }
        assert!(!page.contains("NaN"));
        assert!(!page.contains("inf,") && !page.contains(",inf"));
        // In the full table, structure checks come before timing checks although reported after.
        let all_checks = &page[page.find("<h2>All checks").expect("all checks section")..];
        let structure = all_checks
            .find("structure.codecs")
            .expect("structure check");
        let timing = all_checks
            .find("timing.segment_alignment")
            .expect("timing check");
        assert!(structure < timing);
    }

    #[test]
    fn nothing_is_loaded_from_elsewhere() {
        let page = render(&sample_report());
        for needle in [
            "src=\"http",
            "href=\"http",
            "src='http",
            "href='http",
            "url(",
            "@import",
        ] {
            assert!(!page.contains(needle), "{needle} found");
        }
    }

    #[test]
    fn an_empty_report_renders() {
        let mut report = sample_report();
        report.renditions.clear();
        report.checks.clear();
        report.tally();
        let page = render(&report);
        assert!(page.contains("PASS"));
        assert!(page.contains("No renditions."));
        assert!(page.contains("no segment data"));
        assert!(page.contains("no quality data"));
        assert!(!page.contains("<svg"));
    }

    #[test]
    fn degenerate_data_renders_without_nan() {
        let mut report = sample_report();
        for rendition in &mut report.renditions {
            rendition.segments.truncate(1);
            rendition.segments[0].declared_duration_s = f64::NAN;
            if let Some(quality) = rendition.quality.as_mut() {
                quality.psnr_y = vec![40.0];
                quality.ssim_y = vec![f64::NAN, f64::INFINITY];
            }
        }
        report.renditions[0].segments.clear();
        let page = render(&report);
        assert!(page.contains("<circle"));
        assert!(page.contains("SSIM-Y per frame: no quality data."));
        assert!(!page.contains("NaN"));
    }

    #[test]
    fn downsampling_keeps_dips_and_skips_non_finite() {
        let mut values = vec![40.0; 10_000];
        values[5_003] = 20.0;
        values[7_000] = f64::NEG_INFINITY;
        let points = downsample_min(&values, 1000);
        assert!(points.len() <= 1000);
        assert!(points.contains(&(5_003.0, 20.0)));
        assert!(points.iter().all(|(x, y)| x.is_finite() && y.is_finite()));
        assert!(downsample_min(&[], 1000).is_empty());
    }

    #[test]
    fn ranges_never_collapse() {
        assert_eq!(value_range([5.0, 5.0], false), Some((4.75, 5.25)));
        assert_eq!(value_range([0.0], true), Some((0.0, 1.0)));
        assert_eq!(value_range([0.0], false), Some((-1.0, 1.0)));
        assert_eq!(value_range([f64::NAN, f64::INFINITY], false), None);
        assert_eq!(value_range([3.0, 7.0], true), Some((0.0, 7.0)));
    }

    #[test]
    fn axes_get_round_ticks() {
        let axis = Axis::new(0.0, 5.3, true);
        assert_eq!(axis.hi, 6.0);
        assert_eq!(axis.ticks, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let axis = Axis::new(0.9, 1.0, true);
        assert_eq!(axis.label(axis.ticks[1]), "0.92");
        assert!(Axis::new(0.0, 1e300, true).ticks.len() <= MAX_TICKS);
    }

    #[test]
    fn escaping_covers_attribute_quotes() {
        assert_eq!(
            Esc("a<b>&\"c\"'d'").to_string(),
            "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_rate(29.97), "29.97");
        assert_eq!(fmt_rate(25.0), "25");
        assert_eq!(fmt_bitrate(4_500_000), "4.50 Mbit/s");
        assert_eq!(fmt_bitrate(128_000), "128 kbit/s");
        assert_eq!(fmt_elapsed(75.5), "1 min 15.5 s");
        assert_eq!(fmt_fixed(f64::NAN, 2), NONE);
    }
}
