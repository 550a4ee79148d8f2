//! Progressive publish: an asset plays while it is still being transcoded.
//!
//! As soon as every rendition has stored its first segment, the growing
//! presentation is written: each rendition's HLS media playlist as an
//! `EVENT` playlist (RFC 8216 section 4.3.3.5: it only ever grows; players
//! start at the beginning through `EXT-X-START:TIME-OFFSET=0`) and a master
//! playlist that already lists the whole planned ladder with its exact
//! codec strings and a `BANDWIDTH` from each rung's rate control (the VBV
//! bound, so it never understates the finished rung's measured peak).
//! The asset is then marked playable. Playlists are rewritten each time
//! every rendition has stored one more segment (each lists what it has
//! stored), so one set of writes per segment; the final publish appends
//! `EXT-X-ENDLIST` to the same lines and rewrites the master with the
//! measured bitrates.
//!
//! Only a new asset's first version grows (a replacement plays once
//! ready, the published version meanwhile). A rerun of a version that
//! already played writes no growing playlists (they would list fewer
//! segments than players have seen) but keeps the `EVENT` form at the end.

use std::time::Duration;

use cascade_packager::{dash, hls, Bitrates, Rendition, SegmentInfo, Track, UriLayout};

/// Whether, and how, a version grows in public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It plays once ready (progressive publish off, or a replacement).
    Off,
    /// It plays as soon as its first segments are stored.
    Growing,
    /// It played before in an earlier attempt: no growing playlists now,
    /// the final ones in the growing form (they only append).
    Resumed,
}

/// A rendition of the growing presentation.
struct Growing {
    rendition: Rendition,
    declared: Bitrates,
}

/// What to store now, in this order.
#[derive(Debug, Default)]
pub struct Update {
    /// `(rendition name, playlist text)` for every rendition.
    pub media_playlists: Vec<(String, String)>,
    /// The dynamic DASH MPD listing the same segments.
    pub mpd: Option<String>,
    /// The master playlist, the first time only; storing it (after the
    /// media playlists) makes the asset playable.
    pub master: Option<String>,
}

/// The growing presentation of one version.
pub struct Progressive {
    mode: Mode,
    renditions: Vec<Growing>,
    target_duration: u64,
    /// Segments every rendition had stored at the last update (0: none
    /// yet: not playable).
    listed: usize,
    /// When the asset was created, which places the growing DASH MPD's
    /// media time 0 (`None`: HLS only).
    created: Option<chrono::DateTime<chrono::Utc>>,
}

impl Progressive {
    /// A presentation cut into segments of `segment_duration`.
    pub fn new(mode: Mode, segment_duration: Duration) -> Self {
        Self {
            mode,
            renditions: Vec::new(),
            target_duration: declared_target_duration(segment_duration),
            listed: 0,
            created: None,
        }
    }

    /// Also grows a dynamic DASH MPD, for an asset `created` then (see
    /// [`growing_mpd`]).
    pub fn with_dash(mut self, created: chrono::DateTime<chrono::Utc>) -> Self {
        self.created = Some(created);
        self
    }

    /// A rendition whose init segment is stored.
    pub fn add_rendition(&mut self, name: &str, track: &Track, declared: Bitrates) {
        self.renditions.push(Growing {
            rendition: Rendition::from_track(name, track, Vec::new()),
            declared,
        });
    }

    /// A media segment of `name` is stored.
    pub fn segment_stored(&mut self, name: &str, info: SegmentInfo) {
        if let Some(growing) = self
            .renditions
            .iter_mut()
            .find(|growing| growing.rendition.name == name)
        {
            growing.rendition.segments.push(info);
        }
    }

    /// Whether the presentation has been made playable while growing.
    pub fn is_playable(&self) -> bool {
        self.listed > 0
    }

    /// The playlists to store now, if any: each time every rendition has
    /// one more segment stored (the first time with the master).
    pub fn due(&mut self) -> Result<Option<Update>, cascade_packager::Error> {
        if self.mode != Mode::Growing || self.renditions.is_empty() {
            return Ok(None);
        }
        let complete = self
            .renditions
            .iter()
            .map(|growing| growing.rendition.segments.len())
            .min()
            .unwrap_or(0);
        if complete <= self.listed {
            return Ok(None);
        }
        let first = self.listed == 0;
        let layout = UriLayout::default();
        let mut update = Update::default();
        for growing in &self.renditions {
            let playlist =
                hls::Playlist::growing(&growing.rendition, &layout, self.target_duration)?;
            update
                .media_playlists
                .push((growing.rendition.name.clone(), playlist.render()));
        }
        if let Some(created) = self.created {
            let listed: Vec<(&Rendition, Bitrates)> = self
                .renditions
                .iter()
                .map(|growing| (&growing.rendition, growing.declared))
                .collect();
            update.mpd = Some(growing_mpd(&listed, created)?);
        }
        if first {
            let declared: Vec<(Rendition, Bitrates)> = self
                .renditions
                .iter()
                .map(|growing| (growing.rendition.clone(), growing.declared))
                .collect();
            update.master = Some(hls::render_declared_master_playlist(&declared, &layout)?);
        }
        self.listed = complete;
        Ok(Some(update))
    }

    /// The final media playlist of `rendition`: complete, with
    /// `EXT-X-ENDLIST`; in the growing (`EVENT`) form when the version
    /// played while growing, since such a playlist may only be appended to.
    pub fn final_playlist(
        &self,
        rendition: &Rendition,
        layout: &UriLayout,
    ) -> Result<hls::Playlist, cascade_packager::Error> {
        let grew = match self.mode {
            Mode::Off => false,
            Mode::Growing => self.is_playable(),
            Mode::Resumed => true,
        };
        if grew {
            let mut playlist = hls::Playlist::growing(rendition, layout, self.target_duration)?;
            playlist.end();
            Ok(playlist)
        } else {
            hls::Playlist::for_rendition(rendition, layout)
        }
    }
}

/// How often players reload a growing MPD (`minimumUpdatePeriod`; dash.js
/// reloads at most once a second).
const MPD_UPDATE_PERIOD_MILLIS: u64 = 1000;

/// How long before the asset's creation a growing MPD's media time 0 is.
/// dash.js requests a listed segment only once `availabilityStartTime`
/// plus its end has passed on its clock, which `UTCTiming` sets from the
/// MPD's `publishTime`, so it lags by the MPD's age (a second or two
/// through a CDN): a start at the creation itself made dash.js wait up to
/// a second at each short-start segment. An hour earlier, every segment
/// listed counts as available, whatever the clocks; the start still
/// clamps to 0, the presentation delay being longer than that.
const AVAILABILITY_LEAD: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The dynamic MPD of a growing presentation: `renditions` with the
/// segments stored so far and their declared bit rates, for an asset
/// `created` then.
pub(crate) fn growing_mpd(
    renditions: &[(&Rendition, Bitrates)],
    created: chrono::DateTime<chrono::Utc>,
) -> Result<String, cascade_packager::Error> {
    let declared: Vec<(&Rendition, u64)> = renditions
        .iter()
        .map(|(rendition, declared)| (*rendition, declared.peak))
        .collect();
    dash::render_growing_mpd(
        &declared,
        &UriLayout::default(),
        &dash::Growing {
            availability_start: created - AVAILABILITY_LEAD,
            publish_time: chrono::Utc::now(),
            update_period_millis: MPD_UPDATE_PERIOD_MILLIS,
        },
    )
}

/// `EXT-X-TARGETDURATION` of a growing playlist, which must not change as
/// it grows: the segment duration rounded up, plus a second for a
/// segment that ends a frame (or a source's timestamp gap) past the grid.
pub(crate) fn declared_target_duration(segment_duration: Duration) -> u64 {
    segment_duration.as_secs_f64().ceil() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_packager::{AudioTrack, Rational, VideoTrack};

    fn tracks() -> (Track, Track) {
        // A real avcC (High, 320x180, from the tiny fixture) and an AAC-LC ASC.
        let avcc = [
            0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9,
            0x41, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
            0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x04, 0x68, 0xef, 0x89, 0xcb, 0xfd,
            0xf8, 0xf8, 0x00,
        ];
        let video = VideoTrack::new(&avcc, 320, 180, 90_000, Rational::new(30, 1).unwrap())
            .expect("a valid avcC");
        let audio = AudioTrack::new(&[0x11, 0x90], 48_000, 2).expect("a valid ASC");
        (Track::Video(video), Track::Audio(audio))
    }

    fn segment(sequence_number: u64, timescale: u64) -> SegmentInfo {
        SegmentInfo {
            sequence_number,
            start: (sequence_number - 1) * 4 * timescale,
            duration: 4 * timescale,
            size: 100_000,
        }
    }

    fn declared() -> Bitrates {
        Bitrates {
            peak: 900_000,
            average: 600_000,
        }
    }

    #[test]
    fn plays_once_every_rendition_has_a_segment_and_then_only_appends() {
        let (video, audio) = tracks();
        let mut growing = Progressive::new(Mode::Growing, Duration::from_secs(4));
        growing.add_rendition("240p", &video, declared());
        growing.add_rendition("audio", &audio, declared());
        growing.segment_stored("240p", segment(1, 90_000));
        assert!(growing.due().unwrap().is_none(), "audio has nothing yet");
        growing.segment_stored("audio", segment(1, 48_000));
        let first = growing.due().unwrap().expect("playable");
        let master = first
            .master
            .expect("the master comes with the first playlists");
        assert!(
            master.contains("BANDWIDTH=1800000,AVERAGE-BANDWIDTH=1200000"),
            "{master}"
        );
        assert!(
            master.contains("CODECS=\"avc1.64000d,mp4a.40.2\""),
            "{master}"
        );
        let (_, video_first) = &first.media_playlists[0];
        assert!(
            video_first.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            "{video_first}"
        );
        assert!(
            video_first.contains("#EXT-X-TARGETDURATION:5\n"),
            "{video_first}"
        );
        assert!(!video_first.contains("#EXT-X-ENDLIST"), "{video_first}");

        // A rendition's next segment waits for the others'.
        growing.segment_stored("240p", segment(2, 90_000));
        assert!(growing.due().unwrap().is_none());
        growing.segment_stored("audio", segment(2, 48_000));
        let later = growing
            .due()
            .unwrap()
            .expect("a new segment in every rendition");
        assert!(later.master.is_none(), "the master is written once");
        let (_, video_later) = &later.media_playlists[0];
        assert!(
            video_later.starts_with(video_first.as_str()),
            "{video_later}"
        );
        assert!(video_later.ends_with("2.m4s\n"), "{video_later}");
        assert!(growing.due().unwrap().is_none(), "nothing new");

        let rendition =
            Rendition::from_track("240p", &video, vec![segment(1, 90_000), segment(2, 90_000)]);
        let last = growing
            .final_playlist(&rendition, &UriLayout::default())
            .unwrap()
            .render();
        assert_eq!(last, format!("{video_later}#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn off_and_resumed_write_nothing_while_growing() {
        let (video, _) = tracks();
        let rendition = Rendition::from_track("240p", &video, vec![segment(1, 90_000)]);
        for (mode, final_type) in [(Mode::Off, "VOD"), (Mode::Resumed, "EVENT")] {
            let mut progressive = Progressive::new(mode, Duration::from_secs(4));
            progressive.add_rendition("240p", &video, declared());
            progressive.segment_stored("240p", segment(1, 90_000));
            assert!(progressive.due().unwrap().is_none(), "{mode:?}");
            let last = progressive
                .final_playlist(&rendition, &UriLayout::default())
                .unwrap()
                .render();
            assert!(
                last.contains(&format!("#EXT-X-PLAYLIST-TYPE:{final_type}\n")),
                "{mode:?}: {last}"
            );
            assert!(last.ends_with("#EXT-X-ENDLIST\n"), "{mode:?}: {last}");
        }
    }
}
