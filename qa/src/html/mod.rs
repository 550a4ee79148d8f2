//! The QA report as one self-contained HTML page: inline CSS and SVG plots,
//! nothing fetched. The page is a maud template (every value escaped); the
//! plots are drawn by [`charts`].

mod charts;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Display, Write};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::report::{
    Check, Format, MediaKind, Quality, ReferenceInfo, RenditionReport, Report, SegmentReport,
    Status,
};

/// Fixed rendition palette (d3 category10): a rendition keeps its colour in every plot.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Shown for absent or non-finite values.
const NONE: &str = "–";
/// Check id prefixes, in the order a reader wants them.
const CHECK_GROUPS: [&str; 7] = [
    "structure",
    "timing",
    "quality",
    "audio",
    "bitrate",
    "gstreamer",
    "readers",
];
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
    page(report).into_string()
}

fn page(report: &Report) -> Markup {
    let failures: Vec<&Check> = report.failures().collect();
    let mut checks: Vec<&Check> = report.checks.iter().collect();
    // Stable sort: within a group, checks keep report order.
    checks.sort_by_key(|c| group_rank(check_group(&c.id)));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Cascade QA " (status_word(report.result)) ": " (report.url) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    (header(report))
                    section {
                        h2 { "Failed checks" }
                        @if failures.is_empty() {
                            p.ok { "No check failed." }
                        } @else {
                            (check_table(&failures, false))
                        }
                    }
                    // Pictures before the long table: what a person looks at first.
                    (renditions(report))
                    section {
                        h2 { "Plots" }
                        // The charts escape the text they draw.
                        (PreEscaped(charts::plots(report)))
                    }
                    section {
                        h2 { "All checks" }
                        @if checks.is_empty() {
                            p.empty { "No checks ran." }
                        } @else {
                            (check_table(&checks, true))
                        }
                    }
                    footer {
                        "cascade " (report.tool_version) " · report schema v" (report.schema_version)
                    }
                }
            }
        }
    }
}

fn header(report: &Report) -> Markup {
    let format = match report.format {
        Format::Hls => "HLS",
        Format::Dash => "DASH",
    };
    let summary = &report.summary;
    html! {
        header class=(status_class(report.result)) {
            div.verdict { (status_word(report.result)) }
            div {
                h1 { "Cascade QA report" }
                dl {
                    dt { "URL" } dd { code { (report.url) } }
                    dt { "Format" } dd { (format) }
                    dt { "Reference" } dd { code { (report.reference.path) } }
                    dt { "Reference media" } dd { (reference_details(&report.reference)) }
                    dt { "Generated" } dd { (report.generated_at) }
                    dt { "Elapsed" } dd { (fmt_elapsed(report.elapsed_s)) }
                    dt { "Checks" }
                    dd {
                        span.count.pass { (summary.passed) " passed" }
                        " · "
                        span.count.fail { (summary.failed) " failed" }
                        " · " (summary.skipped) " skipped"
                    }
                    dt { "VMAF" }
                    dd {
                        @if report.vmaf.available {
                            "available"
                        } @else {
                            "not computed: " (report.vmaf.note)
                        }
                    }
                }
            }
        }
    }
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
fn check_table(checks: &[&Check], grouped: bool) -> Markup {
    let group_starts = |i: usize| {
        grouped && (i == 0 || check_group(&checks[i - 1].id) != check_group(&checks[i].id))
    };
    html! {
        div.scroll {
            table {
                thead {
                    tr {
                        th { "Status" } th { "Check" } th { "Rendition" }
                        th { "Message" } th { "Expected" } th { "Measured" }
                    }
                }
                tbody {
                    @for (i, check) in checks.iter().enumerate() {
                        @if group_starts(i) {
                            tr.group { th colspan="6" { (check_group(&check.id)) } }
                        }
                        tr class=(status_class(check.status)) {
                            td.status { (status_word(check.status)) }
                            td { code { (check.id) } }
                            td { (check.rendition.as_deref().unwrap_or(NONE)) }
                            td.msg { (check.message) }
                            td.msg { (check.expected.as_deref().unwrap_or(NONE)) }
                            td.msg { (check.measured.as_deref().unwrap_or(NONE)) }
                        }
                    }
                }
            }
        }
    }
}

/// One table cell: its class and content.
type Cell = (&'static str, Markup);

fn renditions(report: &Report) -> Markup {
    html! {
        section {
            h2 { "Renditions" }
            @if report.renditions.is_empty() {
                p.empty { "No renditions." }
            } @else {
                div.scroll {
                    table.wide {
                        thead {
                            tr {
                                th colspan="2" {}
                                th colspan="5" { "Declared" }
                                th colspan="7" { "Measured" }
                                th {}
                            }
                            tr {
                                th { "Name" } th { "Kind" } th { "Bandwidth" } th { "Avg bandwidth" }
                                th { "Codecs" } th { "Resolution" } th { "Frame rate" } th { "Codecs" }
                                th { "Resolution" } th { "Frame rate" } th { "Frames" } th { "Duration" }
                                th { "Avg bitrate" } th { "Peak bitrate" } th { "Target" }
                            }
                        }
                        tbody {
                            @for (position, rendition) in report.renditions.iter().enumerate() {
                                (row(&rendition.playlist_url, &rendition_cells(position, rendition)))
                            }
                        }
                    }
                }
                (quality_table(report))
            }
        }
    }
}

fn rendition_cells(position: usize, rendition: &RenditionReport) -> Vec<Cell> {
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
    let text = |class: &'static str, value: String| (class, html! { (value) });
    vec![
        ("name", name_cell(position, &rendition.name)),
        text("", kind.to_owned()),
        text("num", or_none(declared.bandwidth, fmt_bitrate)),
        text("num", or_none(declared.average_bandwidth, fmt_bitrate)),
        ("", codecs_cell(declared.codecs.as_deref())),
        text("num", fmt_resolution(declared.width, declared.height)),
        text("num", or_none(declared.frame_rate, fmt_rate)),
        ("", codecs_cell(measured.codecs.as_deref())),
        text(
            flagged(resolution_differs),
            fmt_resolution(measured.width, measured.height),
        ),
        text(
            flagged(rate_differs),
            or_none(measured.frame_rate, fmt_rate),
        ),
        text("num", measured.frames.to_string()),
        text("num", fmt_seconds(measured.duration_s)),
        text("num", fmt_bitrate(measured.average_bitrate)),
        text("num", fmt_bitrate(measured.peak_bitrate)),
        text("num", or_none(rendition.target_bitrate, fmt_bitrate)),
    ]
}

/// Quality against the reference, for the renditions that have it.
fn quality_table(report: &Report) -> Markup {
    let rated: Vec<(usize, &RenditionReport, &Quality)> = report
        .renditions
        .iter()
        .enumerate()
        .filter_map(|(position, r)| r.quality.as_ref().map(|q| (position, r, q)))
        .collect();
    let with_vmaf = rated.iter().any(|(_, _, q)| q.vmaf_mean.is_some());
    let number = |value: String| ("num", html! { (value) });
    let rows: Vec<(&str, Vec<Cell>)> = rated
        .iter()
        .map(|(position, rendition, quality)| {
            let mut cells = vec![
                ("name", name_cell(*position, &rendition.name)),
                number(quality.frames_compared.to_string()),
                number(fmt_fixed(quality.psnr_y_mean, 2)),
                number(fmt_fixed(quality.psnr_y_low1, 2)),
                number(fmt_fixed(quality.ssim_y_mean, 4)),
                number(fmt_fixed(quality.ssim_y_low1, 4)),
            ];
            if with_vmaf {
                cells.push(number(or_none(quality.vmaf_mean, |v| fmt_fixed(v, 2))));
            }
            (rendition.playlist_url.as_str(), cells)
        })
        .collect();
    html! {
        @if rated.is_empty() {
            p.empty { "Quality: no quality data." }
        } @else {
            h3 { "Quality against the reference" }
            div.scroll {
                table.compact {
                    thead {
                        tr {
                            th { "Name" } th { "Frames compared" } th { "PSNR-Y mean (dB)" }
                            th { "PSNR-Y 1% low (dB)" } th { "SSIM-Y mean" } th { "SSIM-Y 1% low" }
                            @if with_vmaf { th { "VMAF mean" } }
                        }
                    }
                    tbody {
                        @for (playlist_url, cells) in &rows {
                            (row(playlist_url, cells))
                        }
                    }
                }
            }
        }
    }
}

/// A table row; hovering shows the rendition's playlist URL.
fn row(playlist_url: &str, cells: &[Cell]) -> Markup {
    html! {
        tr title=(playlist_url) {
            @for (class, content) in cells {
                td class=(class) { (content) }
            }
        }
    }
}

/// The rendition's name behind a swatch of its plot colour.
fn name_cell(position: usize, name: &str) -> Markup {
    html! {
        span.swatch style={ "background:" (color_of(position)) } {}
        (name)
    }
}

/// A codecs list that may wrap after each comma, to keep the table narrow.
fn codecs_cell(codecs: Option<&str>) -> Markup {
    let codecs = codecs.unwrap_or(NONE);
    html! {
        code {
            @for (i, codec) in codecs.split(',').enumerate() {
                @if i > 0 { "," wbr; }
                (codec)
            }
        }
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
    fn numbers_read_well() {
        assert_eq!(fmt_rate(29.97), "29.97");
        assert_eq!(fmt_rate(25.0), "25");
        assert_eq!(fmt_bitrate(4_500_000), "4.50 Mbit/s");
        assert_eq!(fmt_bitrate(128_000), "128 kbit/s");
        assert_eq!(fmt_elapsed(75.5), "1 min 15.5 s");
        assert_eq!(fmt_fixed(f64::NAN, 2), NONE);
    }
}
