//! The bitrate ladder: its configured rungs, and the plan of the video
//! rungs for a source: never upscale, keep the displayed aspect ratio with
//! even dimensions, portrait by its short side, and the source's own size
//! as the top rung when it sits between two ladder rungs. Vocabulary: the
//! transcoder encodes the plan, `cascade qa` and its publish gate hold the
//! outputs to it.

use serde::{Deserialize, Serialize};

/// One rung of the video ladder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Rendition name (`1080p`): lowercase letters, digits, `_`, `-`.
    pub name: String,
    /// Short side in pixels (height for landscape, width for portrait).
    pub short_side: u32,
    /// Target (and, for capped CRF, maximum) bitrate, bit/s.
    pub bitrate: u64,
}

/// One planned video rung.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRung {
    /// Rendition name (`1080p`, or `478p` for a source-sized rung).
    pub name: String,
    /// Output width (even).
    pub width: u32,
    /// Output height (even).
    pub height: u32,
    /// Target bitrate, bit/s.
    pub bitrate: u64,
}

fn even_down(x: u32) -> u32 {
    x & !1
}

/// Nearest even number to `x`, at least 2.
fn even_nearest(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// Rungs for a source displayed at `width` x `height`, highest first.
/// `ladder` is in any order.
pub fn plan(width: u32, height: u32, ladder: &[RungConfig]) -> Vec<PlannedRung> {
    if width < 2 || height < 2 {
        return Vec::new();
    }
    let portrait = height > width;
    let (short, long) = if portrait {
        (width, height)
    } else {
        (height, width)
    };
    let size = |rung_short: u32| -> (u32, u32) {
        let rung_long = even_nearest(f64::from(long) * f64::from(rung_short) / f64::from(short));
        if portrait {
            (rung_short, rung_long)
        } else {
            (rung_long, rung_short)
        }
    };
    let mut rungs: Vec<&RungConfig> = ladder.iter().filter(|r| r.short_side <= short).collect();
    rungs.sort_by_key(|r| std::cmp::Reverse(r.short_side));

    let mut planned = Vec::new();
    let top_ladder = ladder.iter().map(|r| r.short_side).max().unwrap_or(0);
    let source_short = even_down(short);
    let source_is_rung = ladder.iter().any(|r| r.short_side == source_short);
    if short < top_ladder && !source_is_rung {
        // The source sits between two rungs (or below the lowest): its own
        // size, rounded down to even, becomes the top rung. Its bitrate
        // scales with pixel count from the rung above it.
        let above = ladder
            .iter()
            .filter(|r| r.short_side > short)
            .min_by_key(|r| r.short_side)
            .map(|r| (r.short_side, r.bitrate));
        let bitrate = match above {
            Some((rung_short, rung_bitrate)) => {
                let ratio = (f64::from(source_short) / f64::from(rung_short)).powi(2);
                ((rung_bitrate as f64) * ratio).round().max(100_000.0) as u64
            }
            None => rungs.first().map(|r| r.bitrate).unwrap_or(500_000),
        };
        let (w, h) = if portrait {
            (source_short, even_down(long))
        } else {
            (even_down(long), source_short)
        };
        planned.push(PlannedRung {
            name: format!("{source_short}p"),
            width: w,
            height: h,
            bitrate,
        });
    }
    for rung in rungs {
        let (w, h) = size(rung.short_side);
        planned.push(PlannedRung {
            name: rung.name.clone(),
            width: w,
            height: h,
            bitrate: rung.bitrate,
        });
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transcode config's default ladder.
    fn default_ladder() -> Vec<RungConfig> {
        [
            ("2160p", 2160, 8_000_000),
            ("1080p", 1080, 4_000_000),
            ("720p", 720, 2_000_000),
            ("480p", 480, 1_000_000),
            ("240p", 240, 500_000),
        ]
        .into_iter()
        .map(|(name, short_side, bitrate)| RungConfig {
            name: name.to_owned(),
            short_side,
            bitrate,
        })
        .collect()
    }

    fn names(width: u32, height: u32) -> Vec<(String, u32, u32)> {
        plan(width, height, &default_ladder())
            .into_iter()
            .map(|r| (r.name, r.width, r.height))
            .collect()
    }

    fn n(name: &str, w: u32, h: u32) -> (String, u32, u32) {
        (name.to_owned(), w, h)
    }

    #[test]
    fn landscape_1080p_drops_2160p() {
        assert_eq!(
            names(1920, 1080),
            vec![
                n("1080p", 1920, 1080),
                n("720p", 1280, 720),
                n("480p", 854, 480),
                n("240p", 426, 240)
            ]
        );
    }

    #[test]
    fn portrait_uses_the_short_side() {
        assert_eq!(
            names(720, 1280),
            vec![
                n("720p", 720, 1280),
                n("480p", 480, 854),
                n("240p", 240, 426)
            ]
        );
    }

    #[test]
    fn in_between_source_becomes_the_top_rung() {
        assert_eq!(
            names(853, 479),
            // 853 * 240 / 479 = 427.4: nearest even is 428, as fixtures.toml expects.
            vec![n("478p", 852, 478), n("240p", 428, 240)]
        );
        // Rounding onto a ladder rung does not repeat it.
        assert_eq!(
            names(856, 481),
            vec![n("480p", 854, 480), n("240p", 428, 240)]
        );
    }

    #[test]
    fn tiny_source_is_a_single_rung_at_its_own_size() {
        assert_eq!(names(320, 180), vec![n("180p", 320, 180)]);
    }

    #[test]
    fn uhd_source_gets_every_rung_and_bitrates_follow_the_ladder() {
        let planned = plan(3840, 2160, &default_ladder());
        assert_eq!(planned.len(), 5);
        assert_eq!(planned[0].bitrate, 8_000_000);
        let mid = plan(853, 479, &default_ladder());
        assert!(
            // Scaled by pixel count from the rung above (480p, 1 Mbit/s).
            mid[0].bitrate < 1_000_000 && mid[0].bitrate > 950_000,
            "{mid:?}"
        );
        assert!(plan(0, 0, &default_ladder()).is_empty());
    }
}
