//! Staged power-on: at most so many nodes switched on per period, evenly
//! spaced, so powering on a thousand nodes does not trip a breaker.
//!
//! [`Rate`] is the setting (`power_on_rate: 50/min`); [`Pacer`] hands out
//! start times in order, one interval apart, across requests.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// So many starts per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Starts per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// `50/min`, `2/s`, `600/h` (also `sec`, `second`, `m`, `minute`,
    /// `hour`); the count at least 1.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let expected = || format!("expected a rate such as 50/min, 2/s or 600/h, found {text:?}");
        let (count, unit) = text.trim().split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        if count == 0 {
            return Err(format!("a rate of 0 would never start a node: {text:?}"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        Ok(Rate { count, per })
    }

    /// The time between two starts.
    pub fn interval(self) -> Duration {
        self.per / self.count
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Start times, handed out in order, each at least one interval after the
/// one before; the first one free is now.
#[derive(Debug, Default)]
pub struct Pacer(Mutex<Option<Instant>>);

impl Pacer {
    /// The start time of the next node at `rate`, reserved, as of `now`.
    pub fn reserve(&self, rate: Rate, now: Instant) -> Instant {
        let mut next = self.0.lock().expect("pacer poisoned");
        let start = next.map_or(now, |n| n.max(now));
        *next = Some(start + rate.interval());
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r = Rate::parse("50/min").unwrap();
        assert_eq!(r.interval(), Duration::from_millis(1200));
        assert_eq!(r.to_string(), "50/min");
        assert_eq!(
            Rate::parse(" 2 / s ").unwrap().interval(),
            Duration::from_millis(500)
        );
        assert_eq!(Rate::parse("600/hour").unwrap().to_string(), "600/h");
        assert_eq!(
            Rate::parse("50").unwrap_err(),
            "expected a rate such as 50/min, 2/s or 600/h, found \"50\""
        );
        assert_eq!(
            Rate::parse("5/day").unwrap_err(),
            "expected a rate such as 50/min, 2/s or 600/h, found \"5/day\""
        );
        assert_eq!(
            Rate::parse("0/s").unwrap_err(),
            "a rate of 0 would never start a node: \"0/s\""
        );
    }

    #[test]
    fn starts_are_one_interval_apart_and_never_in_the_past() {
        let pacer = Pacer::default();
        let rate = Rate::parse("10/s").unwrap();
        let t0 = Instant::now();
        let starts: Vec<Instant> = (0..3).map(|_| pacer.reserve(rate, t0)).collect();
        assert_eq!(starts, [t0, t0 + rate.interval(), t0 + rate.interval() * 2]);
        // Long after: the next one starts at once.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pacer.reserve(rate, later), later);
    }
}
