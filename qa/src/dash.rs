//! DASH (ISO/IEC 23009-1): the MPD read as XML for the fields players need,
//! SegmentTemplate with SegmentTimeline or @duration expanded to segment URLs.

use reqwest::Url;
use roxmltree::{Document, Node};

use crate::fetch::resolve;
use crate::presentation::{Presentation, RenditionSpec, SegmentRef};
use crate::report::{Declared, Format, MediaKind, Status};

/// Upper bound on expanded segments per representation: a typo in a
/// timeline's repeat count must not allocate without limit.
const MAX_SEGMENTS: usize = 100_000;

pub fn load(url: &Url, body: &[u8]) -> Presentation {
    let mut presentation = Presentation::new(Format::Dash, url.clone());
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(_) => {
            presentation.check(
                "structure.manifest_parses",
                None,
                Status::Fail,
                "the MPD is not UTF-8",
            );
            return presentation;
        }
    };
    let document = match Document::parse(text) {
        Ok(document) => document,
        Err(error) => {
            presentation.check(
                "structure.manifest_parses",
                None,
                Status::Fail,
                format!("the MPD is not well-formed XML: {error}"),
            );
            return presentation;
        }
    };
    let mpd = document.root_element();
    if mpd.tag_name().name() != "MPD" {
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Fail,
            format!("the root element is <{}>, not <MPD>", mpd.tag_name().name()),
        );
        return presentation;
    }
    let mut missing = Vec::new();
    for attribute in ["profiles", "minBufferTime"] {
        if mpd.attribute(attribute).is_none() {
            missing.push(format!("MPD@{attribute}"));
        }
    }
    let mpd_type = mpd.attribute("type").unwrap_or("static");
    if mpd_type != "static" {
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Fail,
            format!("MPD@type is {mpd_type:?}; a published VOD asset must be static"),
        );
    }
    presentation.declared_duration_s = mpd
        .attribute("mediaPresentationDuration")
        .and_then(iso_duration);
    if presentation.declared_duration_s.is_none() {
        missing.push("MPD@mediaPresentationDuration".to_owned());
    }
    presentation.min_buffer_time_s = mpd.attribute("minBufferTime").and_then(iso_duration);
    let max_segment = mpd.attribute("maxSegmentDuration").and_then(iso_duration);
    let base = base_url(url, mpd);

    let periods: Vec<Node> = children(mpd, "Period").collect();
    let Some(period) = periods.first().copied() else {
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Fail,
            "the MPD has no Period",
        );
        return presentation;
    };
    if periods.len() > 1 {
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Skip,
            format!("{} periods: only the first is checked", periods.len()),
        );
    }
    let period_base = base_url(&base, period);
    let period_duration = period
        .attribute("duration")
        .and_then(iso_duration)
        .or(presentation.declared_duration_s);

    for set in children(period, "AdaptationSet") {
        let set_base = base_url(&period_base, set);
        for representation in children(set, "Representation") {
            let id = representation.attribute("id").unwrap_or("").to_owned();
            let label = if id.is_empty() {
                "(no id)".to_owned()
            } else {
                id.clone()
            };
            let attr = |name: &str| {
                representation
                    .attribute(name)
                    .or_else(|| set.attribute(name))
            };
            let mime = attr("mimeType").unwrap_or("");
            let content_type = set.attribute("contentType").unwrap_or("");
            let kind = if mime.starts_with("audio") || content_type == "audio" {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            if id.is_empty() {
                missing.push("Representation@id".to_owned());
            }
            if mime.is_empty() {
                missing.push(format!("mimeType of {label}"));
            }
            let bandwidth = representation
                .attribute("bandwidth")
                .and_then(|b| b.parse::<u64>().ok());
            if bandwidth.is_none() {
                missing.push(format!("Representation@bandwidth of {label}"));
            }
            let codecs = attr("codecs").map(str::to_owned);
            if codecs.is_none() {
                missing.push(format!("codecs of {label}"));
            }
            let width = attr("width").and_then(|v| v.parse().ok());
            let height = attr("height").and_then(|v| v.parse().ok());
            if kind == MediaKind::Video && (width.is_none() || height.is_none()) {
                missing.push(format!("width/height of {label}"));
            }
            let declared = Declared {
                bandwidth,
                average_bandwidth: None,
                codecs,
                width,
                height,
                frame_rate: attr("frameRate").and_then(frame_rate),
                target_duration_s: max_segment,
            };
            let rep_base = base_url(&set_base, representation);
            let template = merged_template(set, representation);
            let mut spec = RenditionSpec {
                name: label.clone(),
                kind,
                playlist_url: url.clone(),
                declared,
                audio_group: None,
                init: None,
                segments: Vec::new(),
            };
            match template {
                None => presentation.check(
                    "structure.manifest_parses",
                    Some(&label),
                    Status::Fail,
                    "no SegmentTemplate: only SegmentTemplate addressing is supported",
                ),
                Some(template) => {
                    let values = TemplateValues {
                        id: &id,
                        bandwidth: bandwidth.unwrap_or(0),
                    };
                    match expand(&template, &values, period_duration, &rep_base) {
                        Ok((init, segments)) => {
                            spec.init = init;
                            if spec.init.is_none() {
                                presentation.check(
                                    "structure.init_segment",
                                    Some(&label),
                                    Status::Fail,
                                    "SegmentTemplate has no @initialization",
                                );
                            }
                            spec.segments = segments;
                        }
                        Err(error) => presentation.check(
                            "structure.manifest_parses",
                            Some(&label),
                            Status::Fail,
                            error,
                        ),
                    }
                }
            }
            presentation.renditions.push(spec);
        }
    }
    if presentation.renditions.is_empty() {
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Fail,
            "the MPD has no Representation",
        );
    } else if missing.is_empty() {
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Pass,
            format!("MPD: {} representations", presentation.renditions.len()),
        );
    } else {
        missing.dedup();
        presentation.check(
            "structure.manifest_parses",
            None,
            Status::Fail,
            format!("the MPD lacks fields players need: {}", missing.join(", ")),
        );
    }
    presentation
}

fn children<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn base_url(parent: &Url, node: Node) -> Url {
    children(node, "BaseURL")
        .next()
        .and_then(|b| b.text())
        .and_then(|text| resolve(parent, text).ok())
        .unwrap_or_else(|| parent.clone())
}

/// SegmentTemplate attributes and timeline, the Representation's over the AdaptationSet's.
#[derive(Debug, Default, Clone)]
struct Template {
    initialization: Option<String>,
    media: Option<String>,
    timescale: Option<u64>,
    start_number: Option<u64>,
    duration: Option<u64>,
    presentation_time_offset: Option<u64>,
    /// (t, d, r) of each S element.
    timeline: Option<Vec<(Option<u64>, u64, i64)>>,
}

fn read_template(node: Node) -> Option<Template> {
    let template = children(node, "SegmentTemplate").next()?;
    let number = |name: &str| template.attribute(name).and_then(|v| v.parse::<u64>().ok());
    let timeline = children(template, "SegmentTimeline")
        .next()
        .map(|timeline| {
            children(timeline, "S")
                .map(|s| {
                    (
                        s.attribute("t").and_then(|v| v.parse().ok()),
                        s.attribute("d").and_then(|v| v.parse().ok()).unwrap_or(0),
                        s.attribute("r").and_then(|v| v.parse().ok()).unwrap_or(0),
                    )
                })
                .collect()
        });
    Some(Template {
        initialization: template.attribute("initialization").map(str::to_owned),
        media: template.attribute("media").map(str::to_owned),
        timescale: number("timescale"),
        start_number: number("startNumber"),
        duration: number("duration"),
        presentation_time_offset: number("presentationTimeOffset"),
        timeline,
    })
}

fn merged_template(set: Node, representation: Node) -> Option<Template> {
    let outer = read_template(set);
    let inner = read_template(representation);
    match (outer, inner) {
        (None, None) => None,
        (Some(t), None) | (None, Some(t)) => Some(t),
        (Some(o), Some(i)) => Some(Template {
            initialization: i.initialization.or(o.initialization),
            media: i.media.or(o.media),
            timescale: i.timescale.or(o.timescale),
            start_number: i.start_number.or(o.start_number),
            duration: i.duration.or(o.duration),
            presentation_time_offset: i.presentation_time_offset.or(o.presentation_time_offset),
            timeline: i.timeline.or(o.timeline),
        }),
    }
}

struct TemplateValues<'a> {
    id: &'a str,
    bandwidth: u64,
}

/// `$RepresentationID$`, `$Number$`, `$Time$`, `$Bandwidth$` (with `%0Nd`) and `$$`.
fn substitute(
    pattern: &str,
    values: &TemplateValues,
    number: u64,
    time: u64,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('$')
            .ok_or_else(|| format!("unterminated $ identifier in {pattern:?}"))?;
        let identifier = &after[..end];
        let (name, format) = identifier.split_once('%').unwrap_or((identifier, ""));
        let width = if format.is_empty() {
            0
        } else {
            format
                .trim_start_matches('0')
                .trim_end_matches('d')
                .parse::<usize>()
                .map_err(|_| format!("bad format {format:?} in {pattern:?}"))?
        };
        match name {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(values.id),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            "Bandwidth" => out.push_str(&format!("{:0width$}", values.bandwidth)),
            other => return Err(format!("unknown identifier ${other}$ in {pattern:?}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

type Expanded = (Option<Url>, Vec<SegmentRef>);

fn expand(
    template: &Template,
    values: &TemplateValues,
    period_s: Option<f64>,
    base: &Url,
) -> Result<Expanded, String> {
    let timescale = template.timescale.unwrap_or(1).max(1);
    let media = template
        .media
        .as_deref()
        .ok_or("SegmentTemplate has no @media")?;
    let init = match &template.initialization {
        Some(pattern) => Some(resolve(base, &substitute(pattern, values, 0, 0)?)?),
        None => None,
    };
    let mut number = template.start_number.unwrap_or(1);
    let mut segments = Vec::new();
    let mut push = |time: u64, duration: u64, number: u64| -> Result<(), String> {
        if segments.len() >= MAX_SEGMENTS {
            return Err(format!("more than {MAX_SEGMENTS} segments"));
        }
        let uri = substitute(media, values, number, time)?;
        segments.push(SegmentRef {
            url: resolve(base, &uri)?,
            uri,
            declared_duration_s: duration as f64 / timescale as f64,
        });
        Ok(())
    };
    if let Some(timeline) = &template.timeline {
        let end_time = period_s.map(|p| (p * timescale as f64).round() as u64);
        let mut time = template.presentation_time_offset.unwrap_or(0);
        for (i, &(t, d, r)) in timeline.iter().enumerate() {
            if let Some(t) = t {
                time = t;
            }
            if d == 0 {
                return Err("a SegmentTimeline S element has no @d".to_owned());
            }
            // r = -1: repeat up to the next S@t or the end of the period.
            let repeats = if r < 0 {
                let until = timeline
                    .get(i + 1)
                    .and_then(|next| next.0)
                    .or(end_time)
                    .ok_or("S@r=-1 with no end to repeat to")?;
                until.saturating_sub(time).div_ceil(d).saturating_sub(1)
            } else {
                r as u64
            };
            for _ in 0..=repeats {
                push(time, d, number)?;
                time += d;
                number += 1;
            }
        }
    } else if let Some(duration) = template.duration.filter(|d| *d > 0) {
        let period = period_s.ok_or("SegmentTemplate@duration needs a period duration")?;
        let total = (period * timescale as f64).round() as u64;
        let count = total.div_ceil(duration);
        let mut time = 0;
        for _ in 0..count {
            let this = duration.min(total - time);
            push(time, this, number)?;
            time += this;
            number += 1;
        }
    } else {
        return Err("SegmentTemplate has neither a SegmentTimeline nor @duration".to_owned());
    }
    Ok((init, segments))
}

/// `PT1H2M3.5S` (the day/time subset MPDs use) in seconds.
pub fn iso_duration(text: &str) -> Option<f64> {
    let rest = text.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut seconds = 0.0;
    if !days.is_empty() {
        seconds += days.strip_suffix('D')?.parse::<f64>().ok()? * 86_400.0;
    }
    let mut number = String::new();
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' | 'M' | 'S' => {
                let value: f64 = number.parse().ok()?;
                seconds += value
                    * match c {
                        'H' => 3600.0,
                        'M' => 60.0,
                        _ => 1.0,
                    };
                number.clear();
            }
            _ => return None,
        }
    }
    number.is_empty().then_some(seconds)
}

fn frame_rate(text: &str) -> Option<f64> {
    match text.split_once('/') {
        Some((n, d)) => {
            let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
            (d > 0.0).then(|| n / d)
        }
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(iso_duration("PT3.03S"), Some(3.03));
        assert_eq!(iso_duration("PT1H2M3S"), Some(3723.0));
        assert_eq!(iso_duration("P1DT0S"), Some(86_400.0));
        assert_eq!(iso_duration("3S"), None);
        assert_eq!(iso_duration("PT3"), None);
    }

    #[test]
    fn templates_substitute_identifiers_with_widths() {
        let values = TemplateValues {
            id: "720p",
            bandwidth: 5,
        };
        assert_eq!(
            substitute("$RepresentationID$/$Number%05d$.m4s", &values, 7, 0).unwrap(),
            "720p/00007.m4s"
        );
        assert_eq!(
            substitute("t$Time$-$$-$Bandwidth$", &values, 1, 90).unwrap(),
            "t90-$-5"
        );
        assert!(substitute("$Nope$", &values, 1, 0).is_err());
        assert!(substitute("$Number", &values, 1, 0).is_err());
    }

    #[test]
    fn a_timeline_expands_with_repeats_and_numbers() {
        let mpd = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="p" type="static" mediaPresentationDuration="PT10S" minBufferTime="PT4S">
 <Period><AdaptationSet contentType="video" mimeType="video/mp4">
  <SegmentTemplate timescale="90000" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number$.m4s" startNumber="1">
   <SegmentTimeline><S t="0" d="360000" r="1"/><S d="180000"/></SegmentTimeline>
  </SegmentTemplate>
  <Representation id="720p" bandwidth="1000" codecs="avc1.64001f" width="1280" height="720" frameRate="30000/1001"/>
 </AdaptationSet></Period></MPD>"#;
        let url = Url::parse("http://h/play/x/manifest.mpd").unwrap();
        let p = load(&url, mpd.as_bytes());
        assert!(
            p.checks.iter().all(|c| c.status == Status::Pass),
            "{:?}",
            p.checks
        );
        let r = &p.renditions[0];
        assert_eq!(
            r.init.as_ref().unwrap().as_str(),
            "http://h/play/x/720p/init.mp4"
        );
        let uris: Vec<&str> = r.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["720p/1.m4s", "720p/2.m4s", "720p/3.m4s"]);
        assert_eq!(r.segments[2].declared_duration_s, 2.0);
        assert!((r.declared.frame_rate.unwrap() - 29.97).abs() < 0.01);
    }

    #[test]
    fn missing_fields_are_named() {
        let mpd = r#"<MPD type="static"><Period><AdaptationSet mimeType="video/mp4">
          <SegmentTemplate media="$Number$.m4s" duration="4" /><Representation id="a"/></AdaptationSet></Period></MPD>"#;
        let url = Url::parse("http://h/m.mpd").unwrap();
        let p = load(&url, mpd.as_bytes());
        let failure = p
            .checks
            .iter()
            .find(|c| c.message.contains("lacks"))
            .unwrap();
        assert!(
            failure.message.contains("Representation@bandwidth of a"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("codecs of a"));
    }
}
