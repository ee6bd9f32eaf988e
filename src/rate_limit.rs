//! Rate-limited warnings: what a remote side can trigger is logged at most once
//! a minute, with a count of what was held back.
//!
//! Owns only the decision "may this line be logged now"; callers log.

use std::time::{Duration, Instant};

/// At most one line per this period.
pub const EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone)]
pub struct RateLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// `Some(number held back since the last line)` when a line may be logged now.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < EVERY => {
                self.suppressed = self.suppressed.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_minute_with_the_count_held_back() {
        let t0 = Instant::now();
        let mut limit = RateLimit::default();
        assert_eq!(limit.check(t0), Some(0));
        assert_eq!(limit.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.check(t0 + Duration::from_secs(59)), None);
        assert_eq!(limit.check(t0 + EVERY), Some(2));
        assert_eq!(limit.check(t0 + EVERY), None);
    }
}
