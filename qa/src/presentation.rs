//! What a manifest declares, in one shape for HLS and DASH: renditions, their
//! declared attributes, init segment and media segments with durations.

use reqwest::Url;

use crate::report::{Check, Declared, Format, MediaKind, Status};

/// One media segment named by a manifest.
#[derive(Debug, Clone)]
pub struct SegmentRef {
    pub url: Url,
    /// As the manifest names it (for the report).
    pub uri: String,
    pub declared_duration_s: f64,
}

/// One rendition named by a manifest.
#[derive(Debug, Clone)]
pub struct RenditionSpec {
    pub name: String,
    pub kind: MediaKind,
    pub playlist_url: Url,
    pub declared: Declared,
    /// HLS: the AUDIO group a variant plays with (its BANDWIDTH includes it);
    /// the group an audio rendition belongs to.
    pub audio_group: Option<String>,
    pub init: Option<Url>,
    pub segments: Vec<SegmentRef>,
}

/// A parsed presentation plus the structure checks made while parsing.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub format: Format,
    pub url: Url,
    pub renditions: Vec<RenditionSpec>,
    /// DASH MPD@mediaPresentationDuration, seconds.
    pub declared_duration_s: Option<f64>,
    /// DASH MPD@minBufferTime, seconds.
    pub min_buffer_time_s: Option<f64>,
    pub checks: Vec<Check>,
}

impl Presentation {
    pub fn new(format: Format, url: Url) -> Self {
        Self {
            format,
            url,
            renditions: Vec::new(),
            declared_duration_s: None,
            min_buffer_time_s: None,
            checks: Vec::new(),
        }
    }

    pub fn check(
        &mut self,
        id: &str,
        rendition: Option<&str>,
        status: Status,
        message: impl Into<String>,
    ) {
        self.checks.push(Check::new(id, rendition, status, message));
    }
}

/// Rendition name from a URI: its directory (`720p/index.m3u8` -> `720p`),
/// else its file stem.
pub fn name_from_uri(uri: &str) -> String {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [.., dir, _file] => (*dir).to_owned(),
        [file] => file
            .rsplit_once('.')
            .map_or(*file, |(stem, _)| stem)
            .to_owned(),
        [] => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory_or_the_stem() {
        assert_eq!(name_from_uri("720p/index.m3u8"), "720p");
        assert_eq!(name_from_uri("a/b/720p/index.m3u8?token=x"), "720p");
        assert_eq!(name_from_uri("low.m3u8"), "low");
    }
}
