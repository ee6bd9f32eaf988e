//! When to give memory back: once the loop has been quiet (no connection open, no sync
//! database being read, no name being resolved) for [`QUIET`], after start-up and again after
//! each spell of work (files relayed or served, databases read). Pure: the loop says each turn
//! whether it is busy and how much work it has done so far, and asks when to wake.
//!
//! A connection that did no work (the status page, `/metrics` scraped every 15 s) keeps the
//! loop busy while it lasts but does not arm another give-back: the few pages it maps back
//! are the status code's, and dropping them after every scrape would only add a wake-up.

use std::time::{Duration, Instant};

/// How long the loop must stay quiet before memory is given back. Long enough that a
/// pacman run between two downloads (a database read, the next package) is not quiet;
/// short enough that a freshly started daemon is trimmed within seconds.
pub const QUIET: Duration = Duration::from_secs(10);

/// The quiet spell being watched.
#[derive(Debug, Default)]
pub struct IdleTrim {
    /// When the loop became quiet; `None` while busy, or once given back.
    quiet_since: Option<Instant>,
    /// Whether memory was given back since the last work, and the work count then.
    done: bool,
    work_then: u64,
    /// How many times memory was given back.
    pub count: u64,
}

impl IdleTrim {
    /// The end of a turn: whether anything is going on, and the work done since start (a
    /// count that only grows: requests relayed and served, turns spent on the databases).
    pub fn handle_turn(&mut self, now: Instant, busy: bool, work: u64) {
        if self.done && work != self.work_then {
            self.done = false;
        }
        if busy {
            self.quiet_since = None;
        } else if self.quiet_since.is_none() && !self.done {
            self.quiet_since = Some(now);
        }
    }

    /// When the loop must wake to give memory back, if it has to.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.quiet_since.map(|t| t + QUIET)
    }

    /// Whether to give memory back now (`work` as in [`IdleTrim::handle_turn`]). Once per
    /// quiet spell after work.
    pub fn handle_timeout(&mut self, now: Instant, work: u64) -> bool {
        match self.quiet_since {
            Some(t) if now >= t + QUIET => {
                self.quiet_since = None;
                self.done = true;
                self.work_then = work;
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

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn memory_is_given_back_once_per_quiet_spell_after_work() {
        let t0 = Instant::now();
        let mut idle = IdleTrim::default();
        assert_eq!(idle.poll_timeout(), None, "nothing before the first turn");
        // Start-up is work enough: the first quiet spell gives back.
        idle.handle_turn(t0, false, 0);
        assert_eq!(idle.poll_timeout(), Some(t0 + QUIET));
        assert!(!idle.handle_timeout(t0 + QUIET - s(1), 0));
        idle.handle_turn(t0 + s(3), false, 0);
        assert_eq!(
            idle.poll_timeout(),
            Some(t0 + QUIET),
            "quiet turns do not move it"
        );
        assert!(idle.handle_timeout(t0 + QUIET, 0));
        assert_eq!(idle.count, 1);
        // Done: no more wake-ups, however long it stays quiet.
        idle.handle_turn(t0 + s(20), false, 0);
        assert_eq!(idle.poll_timeout(), None);
        assert!(!idle.handle_timeout(t0 + s(100), 0));
        // A busy spell with work arms it again, from the end of the spell.
        idle.handle_turn(t0 + s(200), true, 0);
        assert_eq!(idle.poll_timeout(), None, "not while busy");
        idle.handle_turn(t0 + s(205), true, 3);
        assert_eq!(idle.poll_timeout(), None, "not while busy");
        idle.handle_turn(t0 + s(206), false, 3);
        assert_eq!(idle.poll_timeout(), Some(t0 + s(206) + QUIET));
        assert!(!idle.handle_timeout(t0 + s(215), 3));
        assert!(idle.handle_timeout(t0 + s(216), 3));
        assert_eq!(idle.count, 2);
    }

    #[test]
    fn a_busy_spell_without_work_gives_nothing_back_again() {
        // The status page scraped every 15 s: busy for a moment each time, no work.
        let t0 = Instant::now();
        let mut idle = IdleTrim::default();
        idle.handle_turn(t0, false, 5);
        assert!(idle.handle_timeout(t0 + QUIET, 5));
        for scrape in 1..20 {
            let t = t0 + s(15 * scrape);
            idle.handle_turn(t, true, 5);
            idle.handle_turn(t + Duration::from_millis(2), false, 5);
            assert_eq!(idle.poll_timeout(), None, "scrape {scrape}");
            assert!(!idle.handle_timeout(t + s(14), 5));
        }
        assert_eq!(idle.count, 1);
        // Work done while quiet (a database read between turns) arms it too.
        idle.handle_turn(t0 + s(400), false, 6);
        assert_eq!(idle.poll_timeout(), Some(t0 + s(400) + QUIET));
    }

    #[test]
    fn a_busy_turn_before_the_deadline_starts_the_wait_again() {
        let t0 = Instant::now();
        let mut idle = IdleTrim::default();
        idle.handle_turn(t0, false, 0);
        idle.handle_turn(t0 + s(9), true, 1);
        assert!(!idle.handle_timeout(t0 + QUIET, 1));
        idle.handle_turn(t0 + s(12), false, 1);
        assert!(!idle.handle_timeout(t0 + s(21), 1));
        assert!(idle.handle_timeout(t0 + s(22), 1));
    }
}
