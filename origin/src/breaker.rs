//! A small circuit breaker in front of the object store: closed until
//! `threshold` consecutive reads fail, then open (reads refused at once)
//! for `cooldown`, then half-open: one probe read goes through; its outcome
//! closes or re-opens the breaker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

/// The breaker's state as a gauge value: 0 closed, 1 open, 2 half-open.
pub(crate) type StateCode = u8;

/// Guards storage reads.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a read may go to the store now; `Err(retry_after)` if not.
    pub(crate) fn admit(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probe_started: now };
                tracing::info!("storage breaker half-open: probing the store");
                Ok(())
            }
            State::Open { until } => Err(until - now),
            // A probe that never reported (its request was dropped) does not
            // hold the breaker half-open for ever.
            State::HalfOpen { probe_started } if now >= probe_started + self.cooldown => {
                *state = State::HalfOpen { probe_started: now };
                Ok(())
            }
            State::HalfOpen { .. } => Err(self.cooldown),
        }
    }

    /// The store answered (an object, or a definite "not found").
    pub(crate) fn success(&self) {
        let mut state = self.lock();
        if matches!(*state, State::HalfOpen { .. } | State::Open { .. }) {
            tracing::info!("storage breaker closed: the store answers again");
        }
        *state = State::Closed { failures: 0 };
    }

    /// A read failed for a reason other than the object's absence.
    /// Returns whether this failure opened the breaker.
    pub(crate) fn failure(&self) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        let open = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open {
                until: now + self.cooldown,
            };
            tracing::warn!(
                cooldown_ms = self.cooldown.as_millis() as u64,
                "storage breaker open: refusing storage reads"
            );
        }
        open
    }

    pub(crate) fn state_code(&self) -> StateCode {
        match *self.lock() {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let b = Breaker::new(3, Duration::from_millis(50));
        assert!(b.admit().is_ok());
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third consecutive failure opens");
        assert_eq!(b.state_code(), 1);
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok(), "one probe after the cool-down");
        assert_eq!(b.state_code(), 2);
        assert!(b.admit().is_err(), "only one probe at a time");
        assert!(b.failure(), "a failed probe re-opens");
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok());
        b.success();
        assert_eq!(b.state_code(), 0);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn lost_probe_does_not_wedge() {
        let b = Breaker::new(1, Duration::from_millis(30));
        assert!(b.failure());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
        // The probe never reports.
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "a new probe after another cool-down");
    }
}
