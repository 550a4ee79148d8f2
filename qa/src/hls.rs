//! HLS (RFC 8216): master and media playlists parsed with m3u8-rs.

use m3u8_rs::{AlternativeMediaType, MediaPlaylist, Playlist};
use reqwest::Url;

use crate::fetch::{resolve, Fetcher};
use crate::presentation::{name_from_uri, Presentation, RenditionSpec, SegmentRef};
use crate::report::{Declared, Format, MediaKind, Status};

/// Parses the playlist at `url` (already fetched as `body`): a master
/// playlist and every media playlist it names, or a lone media playlist.
pub async fn load(fetcher: &Fetcher, url: &Url, body: &[u8]) -> Presentation {
    let mut presentation = Presentation::new(Format::Hls, url.clone());
    let playlist = match m3u8_rs::parse_playlist_res(body) {
        Ok(playlist) => playlist,
        Err(error) => {
            presentation.check(
                "structure.manifest_parses",
                None,
                Status::Fail,
                format!(
                    "{url} is not a valid HLS playlist: {}",
                    short(&error.to_string())
                ),
            );
            return presentation;
        }
    };
    let master = match playlist {
        Playlist::MasterPlaylist(master) => master,
        Playlist::MediaPlaylist(media) => {
            presentation.check(
                "structure.manifest_parses",
                None,
                Status::Pass,
                "a media playlist (no master): one rendition",
            );
            let name = name_from_uri(url.path());
            let mut spec = rendition(name, MediaKind::Video, url.clone(), Declared::default());
            fill_media(&mut presentation, &mut spec, &media);
            presentation.renditions.push(spec);
            return presentation;
        }
    };
    presentation.check(
        "structure.manifest_parses",
        None,
        Status::Pass,
        format!(
            "master playlist: {} variants, {} alternative renditions",
            master.variants.iter().filter(|v| !v.is_i_frame).count(),
            master.alternatives.len()
        ),
    );

    let mut specs = Vec::new();
    for variant in master.variants.iter().filter(|v| !v.is_i_frame) {
        let declared = Declared {
            bandwidth: Some(variant.bandwidth),
            average_bandwidth: variant.average_bandwidth,
            codecs: variant.codecs.clone(),
            width: variant.resolution.map(|r| r.width as u32),
            height: variant.resolution.map(|r| r.height as u32),
            frame_rate: variant.frame_rate,
            target_duration_s: None,
        };
        // A variant with no RESOLUTION and only audio codecs is audio-only.
        let audio_only = variant.resolution.is_none()
            && variant
                .codecs
                .as_deref()
                .is_some_and(|c| c.split(',').all(|c| c.trim().starts_with("mp4a")));
        let kind = if audio_only {
            MediaKind::Audio
        } else {
            MediaKind::Video
        };
        match resolve(url, &variant.uri) {
            Ok(playlist_url) => {
                let mut spec = rendition(name_from_uri(&variant.uri), kind, playlist_url, declared);
                spec.audio_group = variant.audio.clone();
                specs.push(spec);
            }
            Err(error) => {
                presentation.check("structure.manifest_parses", None, Status::Fail, error)
            }
        }
    }
    for media in &master.alternatives {
        if media.media_type != AlternativeMediaType::Audio {
            continue;
        }
        let Some(uri) = &media.uri else { continue };
        match resolve(url, uri) {
            // Also listed as an audio-only variant (as ffmpeg writes it): read once.
            Ok(playlist_url) if specs.iter().any(|s| s.playlist_url == playlist_url) => {}
            Ok(playlist_url) => {
                let mut spec = rendition(
                    name_from_uri(uri),
                    MediaKind::Audio,
                    playlist_url,
                    Declared::default(),
                );
                spec.audio_group = Some(media.group_id.clone());
                specs.push(spec);
            }
            Err(error) => {
                presentation.check("structure.manifest_parses", None, Status::Fail, error)
            }
        }
    }

    let bodies = fetcher
        .get_all(
            &specs
                .iter()
                .map(|s| s.playlist_url.clone())
                .collect::<Vec<_>>(),
        )
        .await;
    for (mut spec, fetched) in specs.into_iter().zip(bodies) {
        if let Some(error) = &fetched.error {
            presentation.check(
                "structure.manifest_parses",
                Some(&spec.name),
                Status::Fail,
                format!("media playlist {}: {error}", spec.playlist_url),
            );
            continue;
        }
        match m3u8_rs::parse_playlist_res(&fetched.body) {
            Ok(Playlist::MediaPlaylist(media)) => {
                fill_media(&mut presentation, &mut spec, &media);
                presentation.renditions.push(spec);
            }
            Ok(Playlist::MasterPlaylist(_)) => presentation.check(
                "structure.manifest_parses",
                Some(&spec.name),
                Status::Fail,
                format!(
                    "{} is a master playlist, a media playlist was expected",
                    spec.playlist_url
                ),
            ),
            Err(error) => presentation.check(
                "structure.manifest_parses",
                Some(&spec.name),
                Status::Fail,
                format!(
                    "media playlist {} does not parse: {}",
                    spec.playlist_url,
                    short(&error.to_string())
                ),
            ),
        }
    }
    presentation
}

fn rendition(
    name: String,
    kind: MediaKind,
    playlist_url: Url,
    declared: Declared,
) -> RenditionSpec {
    RenditionSpec {
        name,
        kind,
        playlist_url,
        declared,
        audio_group: None,
        init: None,
        segments: Vec::new(),
    }
}

/// Segments, init segment and target duration of one media playlist.
fn fill_media(presentation: &mut Presentation, spec: &mut RenditionSpec, media: &MediaPlaylist) {
    spec.declared.target_duration_s = Some(media.target_duration as f64);
    let mut maps = Vec::new();
    for segment in &media.segments {
        if let Some(map) = &segment.map {
            maps.push(map.uri.clone());
        }
        match resolve(&spec.playlist_url, &segment.uri) {
            Ok(url) => spec.segments.push(SegmentRef {
                url,
                uri: segment.uri.clone(),
                declared_duration_s: f64::from(segment.duration),
            }),
            Err(error) => presentation.check(
                "structure.manifest_parses",
                Some(&spec.name),
                Status::Fail,
                error,
            ),
        }
    }
    let map_on_first = media.segments.first().is_some_and(|s| s.map.is_some());
    match maps.first() {
        Some(uri) if map_on_first => match resolve(&spec.playlist_url, uri) {
            Ok(url) => spec.init = Some(url),
            Err(error) => presentation.check(
                "structure.init_segment",
                Some(&spec.name),
                Status::Fail,
                error,
            ),
        },
        Some(_) => presentation.check(
            "structure.init_segment",
            Some(&spec.name),
            Status::Fail,
            "the first EXT-X-MAP comes after the first segment",
        ),
        // MPEG-TS segments need none; fMP4 ones are failed once their bytes
        // say which they are.
        None => {}
    }
    if !media.end_list {
        presentation.check(
            "structure.manifest_parses",
            Some(&spec.name),
            Status::Fail,
            "no EXT-X-ENDLIST: a finished (VOD) presentation must end its playlists",
        );
    }
    if media.segments.is_empty() {
        presentation.check(
            "structure.segments_exist",
            Some(&spec.name),
            Status::Fail,
            "the media playlist names no segments",
        );
    }
}

/// m3u8-rs errors quote the whole input; keep the report readable.
fn short(text: &str) -> String {
    const LIMIT: usize = 200;
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
