//! When to give memory back: once the loop has been quiet (no connection open, no sync
//! database being read) for [`QUIET`], and again after each busy spell. Pure: the loop says
//! each turn whether it is busy, and asks when to wake.

use std::time::{Duration, Instant};

/// How long the loop must stay quiet before memory is given back. Long enough that a
/// pacman run between two downloads (a database read, the next package) is not quiet;
/// short enough that a freshly started daemon is trimmed within seconds.
pub const QUIET: Duration = Duration::from_secs(10);

/// The quiet spell being watched.
#[derive(Debug, Default)]
pub struct IdleTrim {
    /// When the loop became quiet; `None` while busy, or once given back in this spell.
    quiet_since: Option<Instant>,
    /// Whether memory was given back since the last busy turn.
    done: bool,
    /// How many times memory was given back.
    pub count: u64,
}

impl IdleTrim {
    /// The end of a turn: whether anything was going on.
    pub fn handle_turn(&mut self, now: Instant, busy: bool) {
        if busy {
            self.quiet_since = None;
            self.done = false;
        } else if self.quiet_since.is_none() && !self.done {
            self.quiet_since = Some(now);
        }
    }

    /// When the loop must wake to give memory back, if it has to.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.quiet_since.map(|t| t + QUIET)
    }

    /// Whether to give memory back now. Once per quiet spell.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.quiet_since {
            Some(t) if now >= t + QUIET => {
                self.quiet_since = None;
                self.done = true;
                self.count += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_once_per_quiet_spell() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut idle = IdleTrim::default();
        assert_eq!(idle.poll_timeout(), None, "nothing before the first turn");
        idle.handle_turn(t0, false);
        assert_eq!(idle.poll_timeout(), Some(t0 + QUIET));
        assert!(!idle.handle_timeout(t0 + QUIET - s(1)));
        idle.handle_turn(t0 + s(3), false);
        assert_eq!(
            idle.poll_timeout(),
            Some(t0 + QUIET),
            "quiet turns do not move it"
        );
        assert!(idle.handle_timeout(t0 + QUIET));
        assert_eq!(idle.count, 1);
        // Done for this spell: no more wake-ups, however long it stays quiet.
        idle.handle_turn(t0 + s(20), false);
        assert_eq!(idle.poll_timeout(), None);
        assert!(!idle.handle_timeout(t0 + s(100)));
        // A busy spell arms it again, from the end of the spell.
        idle.handle_turn(t0 + s(200), true);
        assert_eq!(idle.poll_timeout(), None, "not while busy");
        idle.handle_turn(t0 + s(205), true);
        idle.handle_turn(t0 + s(206), false);
        assert_eq!(idle.poll_timeout(), Some(t0 + s(206) + QUIET));
        assert!(!idle.handle_timeout(t0 + s(215)));
        assert!(idle.handle_timeout(t0 + s(216)));
        assert_eq!(idle.count, 2);
    }

    #[test]
    fn a_busy_turn_before_the_deadline_starts_the_wait_again() {
        let t0 = Instant::now();
        let mut idle = IdleTrim::default();
        idle.handle_turn(t0, false);
        idle.handle_turn(t0 + Duration::from_secs(9), true);
        assert!(!idle.handle_timeout(t0 + QUIET));
        idle.handle_turn(t0 + Duration::from_secs(12), false);
        assert!(!idle.handle_timeout(t0 + Duration::from_secs(21)));
        assert!(idle.handle_timeout(t0 + Duration::from_secs(22)));
    }
}
