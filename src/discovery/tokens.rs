//! A token bucket: up to `burst` at once, then one per `every`. Pure (the caller passes the
//! time); used for the cache summary deltas, the answers to HELLO and the answers per source.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    tokens: u32,
    /// When the last token was earned (or the bucket was last full).
    at: Instant,
    every: Duration,
    burst: u32,
}

impl Tokens {
    /// A full bucket.
    pub fn new(now: Instant, every: Duration, burst: u32) -> Self {
        Tokens {
            tokens: burst,
            at: now,
            every: every.max(Duration::from_nanos(1)),
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.burst {
            self.at = now;
            return;
        }
        let earned = now.saturating_duration_since(self.at).as_nanos() / self.every.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            self.at = if self.tokens >= self.burst {
                now
            } else {
                self.at + self.every * earned
            };
        }
    }

    /// Take a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// When a token can be taken: `now` if one is left, else when the next is earned.
    pub fn next_at(&self, now: Instant) -> Instant {
        if self.tokens > 0 {
            now
        } else {
            (self.at + self.every).max(now)
        }
    }

    /// The instant of the last refill, for ordering (least recently active first).
    pub fn last(&self) -> Instant {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let t0 = Instant::now();
        let every = Duration::from_millis(10);
        let mut t = Tokens::new(t0, every, 3);
        assert!(t.take(t0) && t.take(t0) && t.take(t0));
        assert!(!t.take(t0));
        assert_eq!(t.next_at(t0), t0 + every);
        assert!(!t.take(t0 + every - Duration::from_nanos(1)));
        assert!(t.take(t0 + every));
        assert!(!t.take(t0 + every));
        // A long pause fills it again, no more than the burst.
        let later = t0 + Duration::from_secs(5);
        assert_eq!((0..10).filter(|_| t.take(later)).count(), 3);
    }

    #[test]
    fn the_remainder_of_an_interval_is_kept() {
        let t0 = Instant::now();
        let every = Duration::from_millis(10);
        let mut t = Tokens::new(t0, every, 2);
        assert!(t.take(t0) && t.take(t0));
        // 15 ms later: one token earned, 5 ms towards the next.
        assert!(t.take(t0 + Duration::from_millis(15)));
        assert!(!t.take(t0 + Duration::from_millis(19)));
        assert!(t.take(t0 + Duration::from_millis(20)));
    }
}
