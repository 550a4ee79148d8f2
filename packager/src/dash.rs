//! Static DASH MPDs (ISO/IEC 23009-1) for CMAF renditions, dynamic ones
//! for VOD presentations still being made ([`render_growing_mpd`]) and for
//! live presentations ([`render_live_mpd`]).
//!
//! One Period, one video AdaptationSet and one audio AdaptationSet, with
//! `SegmentTemplate` + `SegmentTimeline` addressing. Representations are
//! listed in ascending `@bandwidth`, which is the peak bitrate measured from
//! the segments (the same figure as the HLS `BANDWIDTH` of the rung alone),
//! because `@bandwidth` promises continuous delivery over a channel of that
//! rate.
//!
//! The timeline sits on the AdaptationSet when every Representation has the
//! same one (the usual case: rungs are cut at the same keyframes) and on
//! each Representation otherwise.

use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::manifest::{MediaKind, Rendition, UriLayout};
use crate::segmenter::SegmentInfo;
use crate::time::Rational;

const PROFILES: &str = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019";
const AUDIO_CHANNEL_SCHEME: &str = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011";

/// Renders a static MPD describing `renditions` laid out per `layout`.
pub fn render_mpd(renditions: &[Rendition], layout: &UriLayout) -> Result<String> {
    let measured: Vec<(&Rendition, u64)> = renditions
        .iter()
        .map(|rendition| (rendition, rendition.bitrates().peak))
        .collect();
    let presentation_millis = renditions
        .iter()
        .map(|rendition| millis_ceil(rendition.end(), rendition.timescale))
        .max()
        .unwrap_or(0);
    render_one_period(
        &measured,
        layout,
        vec![
            ("type", "static".to_owned()),
            (
                "mediaPresentationDuration",
                xs_duration(presentation_millis),
            ),
        ],
        None,
    )
}

/// `suggestedPresentationDelay` of a growing MPD: longer than any asset
/// grows, so players start at the beginning, never at the edge.
const GROWING_PRESENTATION_DELAY_MILLIS: u64 = 30 * 24 * 3_600_000;

/// What makes a growing presentation's MPD dynamic (see
/// [`render_growing_mpd`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growing {
    /// `availabilityStartTime`: early enough (before the asset existed)
    /// that every segment listed counts as available on the player's
    /// clock, which then never holds a player back; the presentation delay
    /// must exceed the time since.
    pub availability_start: chrono::DateTime<chrono::Utc>,
    /// `publishTime`, also the `UTCTiming` clock (late by at most the
    /// MPD's age: players then wait, never ask too early).
    pub publish_time: chrono::DateTime<chrono::Utc>,
    /// `minimumUpdatePeriod`, in milliseconds.
    pub update_period_millis: u64,
}

/// Renders the MPD of a VOD presentation still being made (progressive
/// publish): `type="dynamic"` with the segments stored so far, Period and
/// Representations as the final static MPD ([`render_mpd`]) will have
/// them, so a player moves on to it when it replaces this one. No
/// `timeShiftBufferDepth` (everything stays available) and a
/// `suggestedPresentationDelay` longer than the asset, so dash.js starts at
/// the first segment, not at the edge; no latency target, so it does not
/// try to catch up. `renditions` carry the `@bandwidth` each declares (its
/// rate control's bound: the measured peak is not known yet).
pub fn render_growing_mpd(
    renditions: &[(&Rendition, u64)],
    layout: &UriLayout,
    growing: &Growing,
) -> Result<String> {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    render_one_period(
        renditions,
        layout,
        vec![
            ("type", "dynamic".to_owned()),
            ("availabilityStartTime", time(&growing.availability_start)),
            ("publishTime", time(&growing.publish_time)),
            (
                "minimumUpdatePeriod",
                xs_duration(growing.update_period_millis),
            ),
            (
                "suggestedPresentationDelay",
                xs_duration(GROWING_PRESENTATION_DELAY_MILLIS),
            ),
        ],
        Some(time(&growing.publish_time)),
    )
}

/// One Period at 0 with a video and an audio AdaptationSet; `kind`: the
/// MPD attributes of its type; `utc_timing`: the time a `UTCTiming`
/// element states (dynamic MPDs).
fn render_one_period(
    renditions: &[(&Rendition, u64)],
    layout: &UriLayout,
    kind: Vec<(&str, String)>,
    utc_timing: Option<String>,
) -> Result<String> {
    layout.validate()?;
    if renditions.is_empty() {
        return Err(Error::NothingToDescribe("no renditions for the MPD"));
    }
    for (rendition, _) in renditions {
        rendition.validate()?;
    }
    let min_buffer_seconds = renditions
        .iter()
        .map(|(rendition, _)| rendition.target_duration_seconds())
        .max()
        .unwrap_or(1);

    let mut sorted: Vec<(&Rendition, u64)> = renditions.to_vec();
    sorted.sort_by_key(|(_, bandwidth)| *bandwidth);
    let (videos, audios): (Vec<_>, Vec<_>) = sorted
        .into_iter()
        .partition(|(rendition, _)| rendition.is_video());

    let mut attributes = vec![
        ("xmlns", "urn:mpeg:dash:schema:mpd:2011".to_owned()),
        ("profiles", PROFILES.to_owned()),
    ];
    attributes.extend(kind);
    attributes.push((
        "minBufferTime",
        xs_duration(min_buffer_seconds.saturating_mul(1000)),
    ));
    let mut xml = Xml::default();
    xml.line(0, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    xml.open(0, "MPD", &attributes);
    xml.open(
        1,
        "Period",
        &[("id", "0".to_owned()), ("start", "PT0S".to_owned())],
    );
    let mut adaptation_set_id = 0;
    if !videos.is_empty() {
        write_video_set(
            &mut xml,
            adaptation_set_id,
            &videos,
            layout,
            Timing::default(),
            &[],
        );
        adaptation_set_id += 1;
    }
    if !audios.is_empty() {
        write_audio_set(
            &mut xml,
            adaptation_set_id,
            &audios,
            layout,
            Timing::default(),
        );
    }
    xml.close(1, "Period");
    if let Some(time) = utc_timing {
        xml.empty(
            1,
            "UTCTiming",
            &[
                ("schemeIdUri", "urn:mpeg:dash:utc:direct:2014".to_owned()),
                ("value", time),
            ],
        );
    }
    xml.close(0, "MPD");
    Ok(xml.text)
}

/// How a `SegmentTemplate` places its segments in time.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    /// Media time (seconds) at the Period's start (`presentationTimeOffset`).
    media_offset: f64,
    /// Low latency: `availabilityTimeOffset` (seconds a segment may be
    /// requested before it is complete), with `availabilityTimeComplete="false"`.
    availability_time_offset: Option<f64>,
}

/// `stand_ins`: Representation ids whose files are another rendition's
/// (see [`LivePeriod::stand_ins`]).
fn write_video_set(
    xml: &mut Xml,
    id: u32,
    videos: &[(&Rendition, u64)],
    layout: &UriLayout,
    timing: Timing,
    stand_ins: &[(String, String)],
) {
    let mut max_width = 0;
    let mut max_height = 0;
    let mut max_frame_rate: Option<Rational> = None;
    for (video, _) in videos {
        if let MediaKind::Video {
            width,
            height,
            frame_rate,
        } = video.kind
        {
            max_width = max_width.max(width);
            max_height = max_height.max(height);
            max_frame_rate = max_frame_rate.max(Some(frame_rate));
        }
    }
    let mut attributes = vec![
        ("id", id.to_string()),
        ("contentType", "video".to_owned()),
        ("mimeType", "video/mp4".to_owned()),
        ("segmentAlignment", "true".to_owned()),
        ("startWithSAP", "1".to_owned()),
        ("maxWidth", max_width.to_string()),
        ("maxHeight", max_height.to_string()),
    ];
    if let Some(rate) = max_frame_rate {
        attributes.push(("maxFrameRate", rate.to_string()));
    }
    xml.open(2, "AdaptationSet", &attributes);
    let shared = shared_timeline(videos);
    if shared {
        write_segment_template(xml, 3, videos[0].0, layout, timing, None);
    }
    for (video, bandwidth) in videos {
        let files_of = stand_ins
            .iter()
            .find(|(id, _)| *id == video.name)
            .map(|(_, files)| files.as_str());
        let mut attributes = vec![
            ("id", video.name.clone()),
            ("bandwidth", bandwidth.to_string()),
            ("codecs", video.codecs.clone()),
        ];
        if let MediaKind::Video {
            width,
            height,
            frame_rate,
        } = video.kind
        {
            attributes.push(("width", width.to_string()));
            attributes.push(("height", height.to_string()));
            attributes.push(("frameRate", frame_rate.to_string()));
            attributes.push(("sar", "1:1".to_owned()));
        }
        if shared && files_of.is_none() {
            xml.empty(3, "Representation", &attributes);
        } else {
            xml.open(3, "Representation", &attributes);
            write_segment_template(xml, 4, video, layout, timing, files_of);
            xml.close(3, "Representation");
        }
    }
    xml.close(2, "AdaptationSet");
}

fn write_audio_set(
    xml: &mut Xml,
    id: u32,
    audios: &[(&Rendition, u64)],
    layout: &UriLayout,
    timing: Timing,
) {
    xml.open(
        2,
        "AdaptationSet",
        &[
            ("id", id.to_string()),
            ("contentType", "audio".to_owned()),
            ("mimeType", "audio/mp4".to_owned()),
            ("lang", "und".to_owned()),
            ("segmentAlignment", "true".to_owned()),
            ("startWithSAP", "1".to_owned()),
        ],
    );
    let shared = shared_timeline(audios);
    if shared {
        write_segment_template(xml, 3, audios[0].0, layout, timing, None);
    }
    for (audio, bandwidth) in audios {
        let mut attributes = vec![
            ("id", audio.name.clone()),
            ("bandwidth", bandwidth.to_string()),
            ("codecs", audio.codecs.clone()),
        ];
        let mut channel_count = None;
        if let MediaKind::Audio {
            sample_rate,
            channels,
        } = audio.kind
        {
            attributes.push(("audioSamplingRate", sample_rate.to_string()));
            channel_count = Some(channels);
        }
        xml.open(3, "Representation", &attributes);
        if let Some(channels) = channel_count {
            xml.empty(
                4,
                "AudioChannelConfiguration",
                &[
                    ("schemeIdUri", AUDIO_CHANNEL_SCHEME.to_owned()),
                    ("value", channels.to_string()),
                ],
            );
        }
        if !shared {
            write_segment_template(xml, 4, audio, layout, timing, None);
        }
        xml.close(3, "Representation");
    }
    xml.close(2, "AdaptationSet");
}

/// One Period of a live presentation: a publish session's renditions.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePeriod {
    /// `Period@id` (stable while the Period is listed).
    pub id: String,
    /// Milliseconds from `availabilityStartTime` to the session's first frame.
    pub start_millis: u64,
    /// Media time (seconds) of the session's first frame: the timeline of a
    /// broadcast runs on across its sessions.
    pub media_offset: f64,
    /// Where its files are, relative to the MPD (`BaseURL`, ending in `/`).
    pub base_url: String,
    /// Renditions with the segments of this Period still in the window, and
    /// each one's declared `@bandwidth`.
    pub renditions: Vec<(Rendition, u64)>,
    /// Representations that keep a dropped rung's place: (its id, the
    /// rendition whose files it serves). Its entry in `renditions`
    /// describes those files under the dropped rung's name and
    /// `@bandwidth`, so the Period has the same Representations as the one
    /// before and a player on the rung plays on (dash.js, asked for a rung
    /// a new Period lacks, flushes what it buffered and stalls).
    pub stand_ins: Vec<(String, String)>,
}

/// A dynamic MPD (ISO/IEC 23009-1 5.4, `type="dynamic"`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveMpd {
    /// `availabilityStartTime`: the wall clock media time 0 stands for.
    pub availability_start: chrono::DateTime<chrono::Utc>,
    /// `publishTime`: when this version was written; also the `UTCTiming`
    /// clock (`urn:mpeg:dash:utc:direct:2014`), late by at most the MPD's
    /// age, which only makes players ask later, never too early.
    pub publish_time: chrono::DateTime<chrono::Utc>,
    /// `minimumUpdatePeriod`, in milliseconds.
    pub minimum_update_period_millis: u64,
    /// `timeShiftBufferDepth` (the DVR window), in milliseconds.
    pub time_shift_buffer_millis: u64,
    /// `suggestedPresentationDelay`, in milliseconds.
    pub suggested_delay_millis: u64,
    /// `minBufferTime`, in milliseconds.
    pub min_buffer_millis: u64,
    /// Periods, oldest first.
    pub periods: Vec<LivePeriod>,
    /// The broadcast ended: no more updates, `mediaPresentationDuration` set.
    pub ended: bool,
    /// Low-latency DASH (chunked CMAF): segments requested before they are
    /// complete, and the latency players aim at.
    pub low_latency: Option<DashLowLatency>,
}

/// What makes a [`LiveMpd`] low latency (DASH-IF IOP low-latency modes):
/// `availabilityTimeOffset` with `availabilityTimeComplete="false"` on the
/// segment templates, and a `ServiceDescription` with latency targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DashLowLatency {
    /// Seconds before its end a segment may be requested (the segment
    /// duration less one chunk: it is sent as it is cut).
    pub availability_time_offset: f64,
    /// `Latency@target`, `@min`, `@max` in milliseconds.
    pub target_latency_millis: u64,
    /// `Latency@min`.
    pub min_latency_millis: u64,
    /// `Latency@max`.
    pub max_latency_millis: u64,
}

/// Renders a dynamic MPD: one Period per publish session in the window,
/// each with its own `BaseURL` and `presentationTimeOffset`, addressed
/// by `SegmentTemplate` + `SegmentTimeline` as the static MPD is.
pub fn render_live_mpd(mpd: &LiveMpd, layout: &UriLayout) -> Result<String> {
    layout.validate()?;
    if mpd
        .periods
        .iter()
        .all(|period| period.renditions.is_empty())
    {
        return Err(Error::NothingToDescribe("no renditions for the MPD"));
    }
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut attributes = vec![
        ("xmlns", "urn:mpeg:dash:schema:mpd:2011".to_owned()),
        ("profiles", PROFILES.to_owned()),
        ("type", "dynamic".to_owned()),
        ("availabilityStartTime", time(&mpd.availability_start)),
        ("publishTime", time(&mpd.publish_time)),
        (
            "timeShiftBufferDepth",
            xs_duration(mpd.time_shift_buffer_millis),
        ),
        ("minBufferTime", xs_duration(mpd.min_buffer_millis)),
        (
            "suggestedPresentationDelay",
            xs_duration(mpd.suggested_delay_millis),
        ),
    ];
    if mpd.ended {
        let end = mpd
            .periods
            .iter()
            .flat_map(|period| {
                period.renditions.iter().map(move |(rendition, _)| {
                    let media_end = rendition.end() as f64 / f64::from(rendition.timescale.max(1));
                    period.start_millis as f64 / 1000.0 + (media_end - period.media_offset)
                })
            })
            .fold(0.0f64, f64::max);
        attributes.push((
            "mediaPresentationDuration",
            xs_duration((end * 1000.0).ceil() as u64),
        ));
    } else {
        attributes.push((
            "minimumUpdatePeriod",
            xs_duration(mpd.minimum_update_period_millis),
        ));
    }
    let mut xml = Xml::default();
    xml.line(0, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    xml.open(0, "MPD", &attributes);
    if let Some(ll) = &mpd.low_latency {
        xml.open(1, "ServiceDescription", &[("id", "0".to_owned())]);
        xml.empty(
            2,
            "Latency",
            &[
                ("referenceId", "0".to_owned()),
                ("target", ll.target_latency_millis.to_string()),
                ("min", ll.min_latency_millis.to_string()),
                ("max", ll.max_latency_millis.to_string()),
            ],
        );
        xml.empty(
            2,
            "PlaybackRate",
            &[("min", "0.96".to_owned()), ("max", "1.04".to_owned())],
        );
        xml.close(1, "ServiceDescription");
    }
    for period in &mpd.periods {
        if period.renditions.is_empty() {
            continue;
        }
        for (rendition, _) in &period.renditions {
            rendition.validate()?;
        }
        xml.open(
            1,
            "Period",
            &[
                ("id", period.id.clone()),
                ("start", xs_duration(period.start_millis)),
            ],
        );
        xml.line(
            2,
            &format!("<BaseURL>{}</BaseURL>", escape_attribute(&period.base_url)),
        );
        let mut sorted: Vec<(&Rendition, u64)> = period
            .renditions
            .iter()
            .map(|(rendition, bandwidth)| (rendition, *bandwidth))
            .collect();
        sorted.sort_by_key(|(_, bandwidth)| *bandwidth);
        let (videos, audios): (Vec<_>, Vec<_>) = sorted
            .into_iter()
            .partition(|(rendition, _)| rendition.is_video());
        let timing = Timing {
            media_offset: period.media_offset,
            availability_time_offset: mpd.low_latency.map(|ll| ll.availability_time_offset),
        };
        let mut adaptation_set_id = 0;
        if !videos.is_empty() {
            write_video_set(
                &mut xml,
                adaptation_set_id,
                &videos,
                layout,
                timing,
                &period.stand_ins,
            );
            adaptation_set_id += 1;
        }
        if !audios.is_empty() {
            write_audio_set(&mut xml, adaptation_set_id, &audios, layout, timing);
        }
        xml.close(1, "Period");
    }
    xml.empty(
        1,
        "UTCTiming",
        &[
            ("schemeIdUri", "urn:mpeg:dash:utc:direct:2014".to_owned()),
            ("value", time(&mpd.publish_time)),
        ],
    );
    xml.close(0, "MPD");
    Ok(xml.text)
}

/// Whether all renditions share timescale, numbering and segment times.
fn shared_timeline(renditions: &[(&Rendition, u64)]) -> bool {
    let times = |rendition: &Rendition| -> Vec<(u64, u64, u64)> {
        rendition
            .segments
            .iter()
            .map(|segment| (segment.sequence_number, segment.start, segment.duration))
            .collect()
    };
    let Some(((first, _), rest)) = renditions.split_first() else {
        return true;
    };
    let first_times = times(first);
    rest.iter()
        .all(|(other, _)| other.timescale == first.timescale && times(other) == first_times)
}

/// `media_offset`: media time (seconds) at the Period's start, written as
/// `presentationTimeOffset` in the rendition's timescale. `files_of`: the
/// rendition whose files the URLs name (default: `$RepresentationID$`).
fn write_segment_template(
    xml: &mut Xml,
    depth: usize,
    rendition: &Rendition,
    layout: &UriLayout,
    timing: Timing,
    files_of: Option<&str>,
) {
    let directory = files_of.unwrap_or("$RepresentationID$");
    let media_offset = timing.media_offset;
    let mut attributes = vec![
        ("timescale", rendition.timescale.to_string()),
        (
            "initialization",
            format!("{directory}/{}", layout.init_segment),
        ),
        ("media", format!("{directory}/{}", layout.media_segment)),
        ("startNumber", rendition.first_sequence_number().to_string()),
    ];
    let offset_ticks = (media_offset * f64::from(rendition.timescale)).round() as u64;
    if offset_ticks > 0 {
        attributes.push(("presentationTimeOffset", offset_ticks.to_string()));
    }
    if let Some(offset) = timing.availability_time_offset {
        attributes.push(("availabilityTimeOffset", format!("{offset:.3}")));
        attributes.push(("availabilityTimeComplete", "false".to_owned()));
    }
    xml.open(depth, "SegmentTemplate", &attributes);
    xml.open(depth + 1, "SegmentTimeline", &[]);
    for run in timeline_runs(&rendition.segments) {
        let mut attributes = Vec::with_capacity(3);
        if let Some(start) = run.start {
            attributes.push(("t", start.to_string()));
        }
        attributes.push(("d", run.duration.to_string()));
        if run.repeat > 0 {
            attributes.push(("r", run.repeat.to_string()));
        }
        xml.empty(depth + 2, "S", &attributes);
    }
    xml.close(depth + 1, "SegmentTimeline");
    xml.close(depth, "SegmentTemplate");
}

/// One `<S>` element: `repeat + 1` segments of `duration`, back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimelineRun {
    /// Explicit `@t`, only where the timeline does not simply continue.
    start: Option<u64>,
    duration: u64,
    repeat: u64,
}

/// Run-length encodes segment times into `<S>` elements.
fn timeline_runs(segments: &[SegmentInfo]) -> Vec<TimelineRun> {
    let mut runs: Vec<TimelineRun> = Vec::new();
    let mut expected_start = None;
    for segment in segments {
        let continues = expected_start == Some(segment.start);
        match runs.last_mut() {
            Some(run) if continues && run.duration == segment.duration => run.repeat += 1,
            _ => runs.push(TimelineRun {
                start: (!continues).then_some(segment.start),
                duration: segment.duration,
                repeat: 0,
            }),
        }
        expected_start = Some(segment.start + segment.duration);
    }
    runs
}

/// Milliseconds in `ticks`, rounded up so the presentation never ends
/// before its last sample.
fn millis_ceil(ticks: u64, timescale: u32) -> u64 {
    let millis = (u128::from(ticks) * 1000).div_ceil(u128::from(timescale.max(1)));
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// An `xs:duration` such as `PT1H2M3.5S` or `PT10S`.
fn xs_duration(millis: u64) -> String {
    let hours = millis / 3_600_000;
    let minutes = millis / 60_000 % 60;
    let seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    let mut text = String::from("PT");
    if hours > 0 {
        let _ = write!(text, "{hours}H");
    }
    if minutes > 0 {
        let _ = write!(text, "{minutes}M");
    }
    if fraction == 0 {
        let _ = write!(text, "{seconds}S");
    } else {
        let decimals = format!("{fraction:03}");
        let _ = write!(text, "{seconds}.{}S", decimals.trim_end_matches('0'));
    }
    text
}

/// Minimal indenting XML writer; attribute values are always escaped.
#[derive(Default)]
struct Xml {
    text: String,
}

impl Xml {
    fn line(&mut self, depth: usize, content: &str) {
        for _ in 0..depth {
            self.text.push_str("  ");
        }
        self.text.push_str(content);
        self.text.push('\n');
    }

    fn tag(&mut self, depth: usize, name: &str, attributes: &[(&str, String)], self_closing: bool) {
        let mut tag = format!("<{name}");
        for (key, value) in attributes {
            let _ = write!(tag, " {key}=\"{}\"", escape_attribute(value));
        }
        tag.push_str(if self_closing { "/>" } else { ">" });
        self.line(depth, &tag);
    }

    fn open(&mut self, depth: usize, name: &str, attributes: &[(&str, String)]) {
        self.tag(depth, name, attributes, false);
    }

    fn empty(&mut self, depth: usize, name: &str, attributes: &[(&str, String)]) {
        self.tag(depth, name, attributes, true);
    }

    fn close(&mut self, depth: usize, name: &str) {
        self.line(depth, &format!("</{name}>"));
    }
}

fn escape_attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\n' => escaped.push_str("&#10;"),
            '\r' => escaped.push_str("&#13;"),
            '\t' => escaped.push_str("&#9;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(sequence_number: u64, start: u64, duration: u64) -> SegmentInfo {
        SegmentInfo {
            sequence_number,
            start,
            duration,
            size: 1,
        }
    }

    #[test]
    fn timeline_is_run_length_encoded() {
        let segments = [
            segment(1, 0, 100),
            segment(2, 100, 100),
            segment(3, 200, 100),
            segment(4, 300, 50),
            // A gap: the next start must be explicit.
            segment(5, 400, 50),
        ];
        assert_eq!(
            timeline_runs(&segments),
            vec![
                TimelineRun {
                    start: Some(0),
                    duration: 100,
                    repeat: 2
                },
                TimelineRun {
                    start: None,
                    duration: 50,
                    repeat: 0
                },
                TimelineRun {
                    start: Some(400),
                    duration: 50,
                    repeat: 0
                },
            ]
        );
    }

    #[test]
    fn formats_xs_durations() {
        assert_eq!(xs_duration(0), "PT0S");
        assert_eq!(xs_duration(10_000), "PT10S");
        assert_eq!(xs_duration(10_010), "PT10.01S");
        assert_eq!(xs_duration(3_723_500), "PT1H2M3.5S");
        assert_eq!(millis_ceil(1001, 30000), 34);
    }

    fn live_rendition(
        name: &str,
        video: bool,
        timescale: u32,
        first: u64,
        count: u64,
    ) -> Rendition {
        let duration = 2 * u64::from(timescale);
        Rendition {
            name: name.to_owned(),
            kind: if video {
                MediaKind::Video {
                    width: 1280,
                    height: 720,
                    frame_rate: Rational::new(30, 1).unwrap(),
                }
            } else {
                MediaKind::Audio {
                    sample_rate: 48_000,
                    channels: 2,
                }
            },
            codecs: if video { "avc1.64001f" } else { "mp4a.40.2" }.to_owned(),
            timescale,
            segments: (first..first + count)
                .map(|n| segment(n, n * duration, duration))
                .collect(),
        }
    }

    /// A dynamic MPD of `periods` (5 min window, 2 s updates, 6 s delay).
    fn live_mpd(periods: Vec<LivePeriod>) -> LiveMpd {
        let at = |seconds| chrono::DateTime::from_timestamp(seconds, 0).unwrap();
        LiveMpd {
            availability_start: at(1_700_000_000),
            publish_time: at(1_700_000_030),
            minimum_update_period_millis: 2000,
            time_shift_buffer_millis: 300_000,
            suggested_delay_millis: 6000,
            min_buffer_millis: 2000,
            periods,
            ended: false,
            low_latency: None,
        }
    }

    #[test]
    fn live_mpd_has_a_period_per_session() {
        let mut mpd = live_mpd(vec![
            LivePeriod {
                id: "1".to_owned(),
                start_millis: 0,
                media_offset: 0.0,
                base_url: "s1/".to_owned(),
                renditions: vec![
                    (live_rendition("720p", true, 90_000, 1, 5), 2_750_000),
                    (live_rendition("audio", false, 48_000, 1, 5), 140_000),
                ],
                stand_ins: Vec::new(),
            },
            LivePeriod {
                id: "2".to_owned(),
                // Came back 5 s after its media ended (at 12 s).
                start_millis: 17_000,
                media_offset: 12.0,
                base_url: "s2/".to_owned(),
                renditions: vec![(live_rendition("720p", true, 90_000, 6, 2), 2_750_000)],
                stand_ins: Vec::new(),
            },
        ]);
        let text = render_live_mpd(&mpd, &UriLayout::default()).unwrap();
        for expected in [
            r#"type="dynamic""#,
            r#"availabilityStartTime="2023-11-14T22:13:20.000Z""#,
            r#"minimumUpdatePeriod="PT2S""#,
            r#"timeShiftBufferDepth="PT5M0S""#,
            r#"<Period id="2" start="PT17S">"#,
            "<BaseURL>s2/</BaseURL>",
            r#"presentationTimeOffset="1080000""#,
            r#"startNumber="6""#,
            r#"<UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="2023-11-14T22:13:50.000Z"/>"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        // The first Period has no offset to state.
        assert_eq!(text.matches("presentationTimeOffset").count(), 1);
        mpd.ended = true;
        let ended = render_live_mpd(&mpd, &UriLayout::default()).unwrap();
        // Period 2 ends at 17 s + (16 s - 12 s) of media.
        assert!(
            ended.contains(r#"mediaPresentationDuration="PT21S""#),
            "{ended}"
        );
        assert!(!ended.contains("minimumUpdatePeriod"));
        // Low latency: chunks may be fetched before the segment completes,
        // and the service says what latency to aim at.
        mpd.ended = false;
        mpd.low_latency = Some(DashLowLatency {
            availability_time_offset: 1.667,
            target_latency_millis: 3000,
            min_latency_millis: 1000,
            max_latency_millis: 6000,
        });
        let low = render_live_mpd(&mpd, &UriLayout::default()).unwrap();
        assert!(
            low.contains("  <ServiceDescription id=\"0\">\n    <Latency referenceId=\"0\" target=\"3000\" min=\"1000\" max=\"6000\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>\n  <Period id=\"1\""),
            "{low}"
        );
        assert_eq!(
            low.matches(r#"availabilityTimeOffset="1.667" availabilityTimeComplete="false""#)
                .count(),
            low.matches("<SegmentTemplate").count(),
            "{low}"
        );
    }

    #[test]
    fn a_growing_mpd_is_dynamic_from_its_first_segment_and_matches_the_final_one() {
        let at = |seconds| chrono::DateTime::from_timestamp(seconds, 0).unwrap();
        let video = live_rendition("720p", true, 90_000, 1, 3);
        let audio = live_rendition("audio", false, 48_000, 1, 4);
        let growing = render_growing_mpd(
            &[(&video, 4_000_000), (&audio, 170_000)],
            &UriLayout::default(),
            &Growing {
                availability_start: at(1_700_000_000),
                publish_time: at(1_700_000_009),
                update_period_millis: 2000,
            },
        )
        .unwrap();
        for expected in [
            r#"type="dynamic""#,
            r#"availabilityStartTime="2023-11-14T22:13:20.000Z""#,
            r#"minimumUpdatePeriod="PT2S""#,
            r#"suggestedPresentationDelay="PT720H0S""#,
            r#"<Period id="0" start="PT0S">"#,
            r#"bandwidth="4000000""#,
            r#"<S t="180000" d="180000" r="2"/>"#,
            r#"<UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="2023-11-14T22:13:29.000Z"/>"#,
        ] {
            assert!(
                growing.contains(expected),
                "{expected} missing from\n{growing}"
            );
        }
        // Everything stays available, and nothing says how long it is yet.
        assert!(!growing.contains("timeShiftBufferDepth"), "{growing}");
        assert!(!growing.contains("mediaPresentationDuration"), "{growing}");
        // The final MPD has the same Period and templates: a player moves on.
        let done = render_mpd(&[video, audio], &UriLayout::default()).unwrap();
        let templates = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| line.contains("<Period") || line.contains("<SegmentTemplate"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(templates(&growing), templates(&done));
    }

    #[test]
    fn a_stand_in_keeps_a_dropped_rungs_place_with_another_renditions_files() {
        let mut stand_in = live_rendition("480p", true, 90_000, 6, 3);
        stand_in.name = "720p".to_owned();
        let mpd = live_mpd(vec![LivePeriod {
            id: "1-6".to_owned(),
            start_millis: 10_000,
            media_offset: 10.0,
            base_url: "s1/".to_owned(),
            renditions: vec![
                (live_rendition("480p", true, 90_000, 6, 3), 1_320_000),
                (stand_in, 2_750_000),
            ],
            stand_ins: vec![("720p".to_owned(), "480p".to_owned())],
        }]);
        let text = render_live_mpd(&mpd, &UriLayout::default()).unwrap();
        let template = |files: &str| {
            format!(
                "<SegmentTemplate timescale=\"90000\" initialization=\"{files}/init.mp4\" media=\"{files}/$Number$.m4s\" startNumber=\"6\" presentationTimeOffset=\"900000\">"
            )
        };
        // The rung keeps its id and bandwidth; its URLs name the 480p files.
        let stand_in = text
            .split("<Representation id=\"720p\" bandwidth=\"2750000\"")
            .nth(1)
            .and_then(|rest| rest.split("</Representation>").next())
            .unwrap_or_else(|| panic!("{text}"));
        assert!(stand_in.contains(&template("480p")), "{text}");
        assert!(text.contains(&template("$RepresentationID$")), "{text}");
        assert!(text.contains("<Representation id=\"480p\" bandwidth=\"1320000\""));
    }

    #[test]
    fn escapes_attribute_values() {
        assert_eq!(
            escape_attribute(r#"a&b<c>"d'"#),
            "a&amp;b&lt;c&gt;&quot;d&apos;"
        );
    }
}
