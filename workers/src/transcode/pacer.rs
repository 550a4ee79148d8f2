//! Keeping a live ladder in real time.
//!
//! The lag is how far the media decoded trails the wall clock since the
//! first frame was decoded (publishers time their media by their own clock,
//! so a ladder that keeps up keeps the two together; the queues between the
//! socket and the encoders hide a slow ladder only for a second or two, then
//! the socket is read more slowly and the lag grows). Past one segment of
//! lag the ladder goes down a step, at most once per segment of time. The
//! steps, in order, are those the ladder can take of: every rung on a
//! faster x264 preset; the top rung dropped (players move to the next);
//! every other frame of the rungs left. The pipeline applies a change at
//! the next keyframe, which every rung cuts at, so no segment mixes two
//! settings. After ten seconds under half a second of lag the ladder climbs
//! back a step. A drill (`live.degradation_drill`) replaces the lag with a
//! schedule of steps by media time.

use std::time::{Duration, Instant};

pub use cascade_platform::config::{DegradationStep as Step, DrillStep};

/// How long lag must stay low before a step is undone.
const RECOVER_AFTER: Duration = Duration::from_secs(10);
/// Lag below which the ladder counts as keeping up.
const RECOVER_BELOW: f64 = 0.5;

/// What a ladder does to keep up: the steps taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Degradation {
    /// Steps taken (0: none); a deeper level is a worse one.
    pub depth: usize,
    /// The last step taken.
    pub last: Option<Step>,
    /// Every rung encodes with the degraded preset.
    pub faster_preset: bool,
    /// The top rung is not encoded.
    pub top_rung_dropped: bool,
    /// The rungs still encoding take every other frame.
    pub half_frame_rate: bool,
}

impl Degradation {
    /// The level after taking `steps`, in order.
    fn of(steps: &[Step]) -> Self {
        let taken = |step: Step| steps.contains(&step);
        Self {
            depth: steps.len(),
            last: steps.last().copied(),
            faster_preset: taken(Step::FasterPreset),
            top_rung_dropped: taken(Step::TopRungDropped),
            half_frame_rate: taken(Step::HalfFrameRate),
        }
    }

    /// A stable name (logs, the stream object): the last step taken.
    pub fn as_str(self) -> &'static str {
        self.last.map_or("none", Step::as_str)
    }
}

/// Decides the degradation from the lag (or a drill).
#[derive(Debug)]
pub struct Pacer {
    /// The first decoded frame: (when, its media time).
    start: Option<(Instant, f64)>,
    segment: f64,
    /// The steps this ladder can take, in order.
    steps: Vec<Step>,
    depth: usize,
    changed_at: Instant,
    low_since: Option<Instant>,
    drill: Vec<DrillStep>,
    /// The latest lag seen, in seconds.
    pub lag: f64,
}

impl Pacer {
    /// A pacer for segments of `segment` seconds, with every step (the
    /// pipeline narrows them to what its ladder can do: [`Self::set_steps`]).
    pub fn new(segment: Duration) -> Self {
        Self {
            start: None,
            segment: segment.as_secs_f64().max(0.5),
            steps: vec![
                Step::FasterPreset,
                Step::TopRungDropped,
                Step::HalfFrameRate,
            ],
            depth: 0,
            changed_at: Instant::now(),
            low_since: None,
            drill: Vec::new(),
            lag: 0.0,
        }
    }

    /// Follows `drill` instead of the lag (empty: the lag).
    pub fn with_drill(mut self, drill: Vec<DrillStep>) -> Self {
        self.drill = drill;
        self
    }

    /// The steps this ladder can take, in order.
    pub fn set_steps(&mut self, steps: Vec<Step>) {
        self.depth = self.depth.min(steps.len());
        self.steps = steps;
    }

    /// The current level.
    pub fn level(&self) -> Degradation {
        Degradation::of(&self.steps[..self.depth.min(self.steps.len())])
    }

    /// Takes the media time just decoded (seconds); returns the new level
    /// when it changes.
    pub fn observe(&mut self, decoded: f64, now: Instant) -> Option<Degradation> {
        let (started, first) = *self.start.get_or_insert((now, decoded));
        self.lag = now.duration_since(started).as_secs_f64() - (decoded - first);
        if !self.drill.is_empty() {
            return self.follow_drill(decoded - first, now);
        }
        self.observe_lag(self.lag, now)
    }

    fn change(&mut self, depth: usize, now: Instant) -> Option<Degradation> {
        if depth == self.depth {
            return None;
        }
        self.depth = depth;
        self.changed_at = now;
        self.low_since = None;
        Some(self.level())
    }

    /// The drill's step at `media` seconds from the first frame; a step
    /// this ladder cannot take leaves the level as it is.
    fn follow_drill(&mut self, media: f64, now: Instant) -> Option<Degradation> {
        let entry = self
            .drill
            .iter()
            .rev()
            .find(|entry| entry.at.as_secs_f64() <= media)?;
        let depth = match entry.step {
            None => 0,
            Some(step) => self.steps.iter().position(|s| *s == step)? + 1,
        };
        self.change(depth, now)
    }

    fn observe_lag(&mut self, lag: f64, now: Instant) -> Option<Degradation> {
        self.lag = lag;
        let since_change = now.duration_since(self.changed_at).as_secs_f64();
        if lag > self.segment && self.depth < self.steps.len() && since_change >= self.segment {
            return self.change(self.depth + 1, now);
        }
        if lag < RECOVER_BELOW {
            let low_since = *self.low_since.get_or_insert(now);
            if self.depth > 0 && now.duration_since(low_since) >= RECOVER_AFTER {
                return self.change(self.depth - 1, now);
            }
        } else {
            self.low_since = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrades_a_step_per_segment_of_lag_and_recovers_slowly() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let mut pacer = Pacer::new(Duration::from_secs(2));
        let name = |level: Option<Degradation>| level.map(Degradation::as_str);
        assert_eq!(pacer.observe_lag(0.3, at(1.0)), None);
        // Lag past a segment: one step, then no second step within a segment.
        assert_eq!(name(pacer.observe_lag(2.5, at(3.0))), Some("faster_preset"));
        assert_eq!(pacer.observe_lag(3.0, at(4.0)), None);
        assert_eq!(
            name(pacer.observe_lag(3.0, at(5.0))),
            Some("top_rung_dropped")
        );
        assert_eq!(
            name(pacer.observe_lag(3.0, at(7.0))),
            Some("half_frame_rate")
        );
        let level = pacer.level();
        assert!(level.faster_preset && level.top_rung_dropped && level.half_frame_rate);
        assert_eq!(
            pacer.observe_lag(4.0, at(10.0)),
            None,
            "nothing below the last step"
        );
        // Keeping up: back a step only after 10 s of low lag.
        assert_eq!(pacer.observe_lag(0.2, at(11.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(20.0)), None);
        assert_eq!(
            name(pacer.observe_lag(0.2, at(21.5))),
            Some("top_rung_dropped")
        );
        // A lag spike resets the recovery clock.
        assert_eq!(pacer.observe_lag(1.0, at(25.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(26.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(35.0)), None);
        let back = pacer.observe_lag(0.2, at(36.5)).unwrap();
        assert_eq!(back.as_str(), "faster_preset");
        assert!(back.faster_preset && !back.top_rung_dropped && !back.half_frame_rate);
    }

    #[test]
    fn a_ladder_takes_only_the_steps_it_can() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let mut pacer = Pacer::new(Duration::from_secs(2));
        // A low-latency ladder on a hardware encoder: frame rate only.
        pacer.set_steps(vec![Step::HalfFrameRate]);
        let level = pacer.observe_lag(3.0, at(3.0)).unwrap();
        assert_eq!((level.depth, level.as_str()), (1, "half_frame_rate"));
        assert!(!level.top_rung_dropped);
        assert_eq!(pacer.observe_lag(3.0, at(6.0)), None);
    }

    #[test]
    fn lag_is_wall_time_beyond_media_time() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Duration::from_secs(2));
        assert_eq!(pacer.observe(10.0, start), None);
        let _ = pacer.observe(13.0, start + Duration::from_secs(3));
        assert!(pacer.lag.abs() < 1e-9, "{}", pacer.lag);
        // Six seconds of wall time, three of media: three seconds behind.
        let step = pacer.observe(13.0, start + Duration::from_secs(6));
        assert!((pacer.lag - 3.0).abs() < 1e-9);
        assert_eq!(step.map(Degradation::as_str), Some("faster_preset"));
    }

    #[test]
    fn a_drill_sets_the_steps_by_media_time() {
        let start = Instant::now();
        let drill = |secs: u64, step| DrillStep {
            at: Duration::from_secs(secs),
            step,
        };
        let mut pacer = Pacer::new(Duration::from_secs(2)).with_drill(vec![
            drill(4, Some(Step::TopRungDropped)),
            drill(8, Some(Step::FasterPreset)),
            drill(12, None),
        ]);
        // Media runs ahead of the wall clock: no lag, and the drill rules.
        let seen: Vec<Option<&str>> = [0.0, 3.9, 4.0, 6.0, 8.0, 12.5]
            .into_iter()
            .map(|media| pacer.observe(100.0 + media, start).map(Degradation::as_str))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                None,
                Some("top_rung_dropped"),
                None,
                Some("faster_preset"),
                Some("none")
            ]
        );
        // A step the ladder cannot take leaves the level alone.
        let mut pacer = Pacer::new(Duration::from_secs(2))
            .with_drill(vec![drill(1, Some(Step::TopRungDropped))]);
        pacer.set_steps(vec![Step::FasterPreset, Step::HalfFrameRate]);
        assert_eq!(pacer.observe(0.0, start), None);
        assert_eq!(pacer.observe(2.0, start), None);
        assert_eq!(pacer.level().depth, 0);
    }
}
