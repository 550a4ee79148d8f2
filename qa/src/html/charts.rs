//! The report's plots as inline SVG: bit rate per segment, PSNR-Y and
//! SSIM-Y per frame, segment sizes. Text in them is escaped here ([`Esc`]);
//! the page around them is a maud template.

use super::*;

/// Grey for legend entries that stand for a line style rather than a rendition.
const NEUTRAL: &str = "#57606a";
/// Dashed lines are targets, not measurements.
const DASH_ATTRIBUTE: &str = " stroke-dasharray=\"6 4\"";
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

/// Every plot, as SVG markup (text escaped).
pub(super) fn plots(report: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    // Writing into a String cannot fail; fmt::Result only carries `?` through.
    let _ = write_plots(&mut out, report);
    out
}

fn write_plots(out: &mut String, report: &Report) -> fmt::Result {
    write_line_chart(out, &bitrate_chart(report))?;
    let psnr = quality_chart(report, "PSNR-Y per frame", "PSNR-Y (dB)", |q| &q.psnr_y);
    write_line_chart(out, &psnr)?;
    let ssim = quality_chart(report, "SSIM-Y per frame", "SSIM-Y", |q| &q.ssim_y);
    write_line_chart(out, &ssim)?;
    write_segment_sizes(out, report)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
