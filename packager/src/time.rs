//! Exact rational numbers for frame rates and durations.
//!
//! NTSC rates (30000/1001) and tick counts in arbitrary timescales do not
//! survive a trip through `f64` unchanged, and segment boundaries must be
//! computed identically in every rung, so everything that decides a cut or
//! lands in a manifest is kept as an integer fraction.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};

/// A positive fraction `num / den`, always stored reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Rational {
    num: u64,
    den: u64,
}

impl Rational {
    /// Builds `num / den`; both must be non-zero.
    pub fn new(num: u64, den: u64) -> Result<Self> {
        if num == 0 || den == 0 {
            return Err(Error::InvalidParameter(
                "a rational needs a non-zero numerator and denominator",
            ));
        }
        let divisor = gcd(num, den);
        Ok(Self {
            num: num / divisor,
            den: den / divisor,
        })
    }

    /// A whole number, e.g. a target duration of 6 seconds.
    pub fn integer(value: u64) -> Result<Self> {
        Self::new(value, 1)
    }

    /// The (reduced) numerator.
    pub fn numerator(self) -> u64 {
        self.num
    }

    /// The (reduced) denominator.
    pub fn denominator(self) -> u64 {
        self.den
    }

    /// The value as a float, for display only.
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl PartialOrd for Rational {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rational {
    fn cmp(&self, other: &Self) -> Ordering {
        (u128::from(self.num) * u128::from(other.den))
            .cmp(&(u128::from(other.num) * u128::from(self.den)))
    }
}

/// `30` for whole numbers, `30000/1001` otherwise: the DASH `frameRate` form.
impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Converts a tick count to seconds, for display only.
pub(crate) fn ticks_to_seconds(ticks: u64, timescale: u32) -> f64 {
    ticks as f64 / f64::from(timescale)
}

/// Whole seconds that are at least `ticks / timescale`.
pub(crate) fn ceil_seconds(ticks: u64, timescale: u32) -> u64 {
    ticks.div_ceil(u64::from(timescale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_and_formats() {
        assert_eq!(
            Rational::new(60000, 2002).unwrap().to_string(),
            "30000/1001"
        );
        assert_eq!(Rational::new(60, 2).unwrap().to_string(), "30");
        assert!(Rational::new(0, 1).is_err());
        assert!(Rational::new(1, 0).is_err());
    }

    #[test]
    fn orders_exactly() {
        let ntsc = Rational::new(30000, 1001).unwrap();
        let thirty = Rational::integer(30).unwrap();
        assert!(ntsc < thirty);
        assert_eq!(ntsc.max(thirty), thirty);
    }

    #[test]
    fn rounds_seconds_up() {
        assert_eq!(ceil_seconds(90_000 * 2, 90_000), 2);
        assert_eq!(ceil_seconds(90_000 * 2 + 1, 90_000), 3);
    }
}
