//! How long one peer takes to answer, and so how long a question waits for it.
//!
//! The estimator of TCP's retransmission timer (RFC 6298): a smoothed answer time and its
//! mean deviation, updated from clean samples only (a question sent once, answered once), and
//! a wait of `srtt + 4 × rttvar` kept within `[MIN_WAIT, ceiling]`. A peer never measured is
//! waited for the whole ceiling (the configured lookup timeout). Pure.

use std::time::Duration;

/// The shortest wait for any peer: a few scheduler ticks, so that a busy but healthy peer on
/// a fast LAN is not taken for a silent one.
pub const MIN_WAIT: Duration = Duration::from_millis(10);

/// One peer's answer times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerTime {
    /// Smoothed answer time and mean deviation, once measured.
    estimate: Option<(Duration, Duration)>,
}

impl AnswerTime {
    /// Add one clean sample.
    pub fn sample(&mut self, rtt: Duration) {
        self.estimate = Some(match self.estimate {
            None => (rtt, rtt / 2),
            Some((srtt, var)) => {
                let diff = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, var * 3 / 4 + diff / 4)
            }
        });
    }

    /// The smoothed answer time, once measured.
    pub fn smoothed(&self) -> Option<Duration> {
        self.estimate.map(|(s, _)| s)
    }

    /// How long to wait for this peer's answer.
    pub fn wait(&self, ceiling: Duration) -> Duration {
        let ceiling = ceiling.max(MIN_WAIT);
        match self.estimate {
            None => ceiling,
            Some((srtt, var)) => (srtt + var * 4).clamp(MIN_WAIT, ceiling),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEIL: Duration = Duration::from_millis(250);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn unmeasured_waits_the_ceiling() {
        assert_eq!(AnswerTime::default().wait(CEIL), CEIL);
    }

    #[test]
    fn a_fast_lan_waits_the_floor() {
        let mut t = AnswerTime::default();
        for _ in 0..20 {
            t.sample(us(300));
        }
        assert_eq!(t.wait(CEIL), MIN_WAIT);
        assert!(t.smoothed().unwrap() <= us(310));
    }

    #[test]
    fn slow_answers_raise_the_wait_within_the_ceiling() {
        let mut t = AnswerTime::default();
        t.sample(us(20_000));
        assert_eq!(t.wait(CEIL), Duration::from_millis(60));
        for _ in 0..50 {
            t.sample(Duration::from_secs(2));
        }
        assert_eq!(t.wait(CEIL), CEIL);
    }

    #[test]
    fn jitter_widens_the_wait() {
        let mut steady = AnswerTime::default();
        let mut jumpy = AnswerTime::default();
        for i in 0..40 {
            steady.sample(us(5_000));
            jumpy.sample(if i % 2 == 0 { us(1_000) } else { us(9_000) });
        }
        assert!(jumpy.wait(CEIL) > steady.wait(CEIL));
    }
}
