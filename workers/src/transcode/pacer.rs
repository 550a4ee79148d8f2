//! Keeping a live ladder in real time.
//!
//! The lag is how far the media decoded trails the wall clock since the
//! first frame was decoded (publishers time their media by their own clock,
//! so a ladder that keeps up keeps the two together; the queues between the
//! socket and the encoders hide a slow ladder only for a second or two, then
//! the socket is read more slowly and the lag grows). Past one segment of
//! lag the ladder degrades a step, at most once per segment of
//! time: first the top rung encodes every other frame, then every rung
//! does. Keyframe decisions are never dropped, so rungs stay cut at the
//! same instants. After ten seconds under half a second of lag it climbs
//! back a step.

use std::time::{Duration, Instant};

/// How long lag must stay low before a step is undone.
const RECOVER_AFTER: Duration = Duration::from_secs(10);
/// Lag below which the ladder counts as keeping up.
const RECOVER_BELOW: f64 = 0.5;

/// Degradation steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Degradation {
    /// Every rung at full frame rate.
    None,
    /// The top rung encodes every other frame.
    TopRungHalfRate,
    /// Every rung encodes every other frame.
    AllRungsHalfRate,
}

impl Degradation {
    /// Whether rung `index` (0: the top) skips its odd frames.
    pub fn halves(self, index: usize) -> bool {
        match self {
            Self::None => false,
            Self::TopRungHalfRate => index == 0,
            Self::AllRungsHalfRate => true,
        }
    }

    /// A stable name (logs, the stream object).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::TopRungHalfRate => "top_rung_half_frame_rate",
            Self::AllRungsHalfRate => "all_rungs_half_frame_rate",
        }
    }

    fn worse(self) -> Self {
        match self {
            Self::None => Self::TopRungHalfRate,
            _ => Self::AllRungsHalfRate,
        }
    }

    fn better(self) -> Self {
        match self {
            Self::AllRungsHalfRate => Self::TopRungHalfRate,
            _ => Self::None,
        }
    }
}

/// Decides the degradation from the lag.
#[derive(Debug)]
pub struct Pacer {
    /// The first decoded frame: (when, its media time).
    start: Option<(Instant, f64)>,
    segment: f64,
    level: Degradation,
    changed_at: Instant,
    low_since: Option<Instant>,
    /// The latest lag seen, in seconds.
    pub lag: f64,
}

impl Pacer {
    /// A pacer for segments of `segment` seconds.
    pub fn new(segment: Duration) -> Self {
        Self {
            start: None,
            segment: segment.as_secs_f64().max(0.5),
            level: Degradation::None,
            changed_at: Instant::now(),
            low_since: None,
            lag: 0.0,
        }
    }

    /// The current step.
    pub fn level(&self) -> Degradation {
        self.level
    }

    /// Takes the media time just decoded (seconds from the first frame);
    /// returns the new step when it changes.
    pub fn observe(&mut self, decoded: f64, now: Instant) -> Option<Degradation> {
        let (started, first) = *self.start.get_or_insert((now, decoded));
        let lag = now.duration_since(started).as_secs_f64() - (decoded - first);
        self.observe_lag(lag, now)
    }

    fn observe_lag(&mut self, lag: f64, now: Instant) -> Option<Degradation> {
        self.lag = lag;
        let since_change = now.duration_since(self.changed_at).as_secs_f64();
        if lag > self.segment
            && self.level != Degradation::AllRungsHalfRate
            && since_change >= self.segment
        {
            self.level = self.level.worse();
            self.changed_at = now;
            self.low_since = None;
            return Some(self.level);
        }
        if lag < RECOVER_BELOW {
            let low_since = *self.low_since.get_or_insert(now);
            if self.level != Degradation::None && now.duration_since(low_since) >= RECOVER_AFTER {
                self.level = self.level.better();
                self.changed_at = now;
                self.low_since = None;
                return Some(self.level);
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
        assert_eq!(pacer.observe_lag(0.3, at(1.0)), None);
        // Lag past a segment: one step, then no second step within a segment.
        assert_eq!(
            pacer.observe_lag(2.5, at(3.0)),
            Some(Degradation::TopRungHalfRate)
        );
        assert_eq!(pacer.observe_lag(3.0, at(4.0)), None);
        assert_eq!(
            pacer.observe_lag(3.0, at(5.0)),
            Some(Degradation::AllRungsHalfRate)
        );
        assert_eq!(
            pacer.observe_lag(4.0, at(8.0)),
            None,
            "nothing below the last step"
        );
        // Keeping up: back a step only after 10 s of low lag.
        assert_eq!(pacer.observe_lag(0.2, at(9.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(18.0)), None);
        assert_eq!(
            pacer.observe_lag(0.2, at(19.5)),
            Some(Degradation::TopRungHalfRate)
        );
        // A lag spike resets the recovery clock.
        assert_eq!(pacer.observe_lag(1.0, at(25.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(26.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(35.0)), None);
        assert_eq!(pacer.observe_lag(0.2, at(36.5)), Some(Degradation::None));
        assert!(Degradation::TopRungHalfRate.halves(0) && !Degradation::TopRungHalfRate.halves(1));
        assert!(Degradation::AllRungsHalfRate.halves(2));
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
        assert_eq!(step, Some(Degradation::TopRungHalfRate));
    }
}
