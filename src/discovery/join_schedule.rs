//! When to try joining the multicast group, and what to say about failures.
//!
//! Pure: it decides when the shell should (re)join and which outcomes deserve a log line; the
//! shell (`multicast.rs`) does the joining and the protocol core does the logging. A failed
//! join is retried every 5 s for 15 minutes; the first failure is logged, then at most one line
//! a minute, then one line when it gives up. After that only `rejoin` (SIGUSR2) starts again.
//!
//! LIFECYCLE: `Due` (at start and after `rejoin`) -> `Joined` on success, or -> `Retrying` on
//! failure; `Retrying` -> `Joined`, or -> `GaveUp` after 15 minutes; any state -> `Due` on
//! `rejoin`.

use std::io;
use std::time::{Duration, Instant};

/// Time between two join attempts while joining fails.
pub const JOIN_RETRY_EVERY: Duration = Duration::from_secs(5);
/// How long failed joins are retried before giving up until SIGUSR2.
pub const JOIN_RETRY_FOR: Duration = Duration::from_secs(15 * 60);
/// At most one "still failing" log line per this period.
pub const JOIN_LOG_EVERY: Duration = Duration::from_secs(60);

/// What one `MulticastSocket::join` did. No joined interface counts as a failure.
#[derive(Debug, Default)]
pub struct JoinReport {
    /// Names of the interfaces the group is now joined on.
    pub joined: Vec<String>,
    /// Interfaces that could not be joined (or named interfaces that are missing or unfit),
    /// with the reason.
    pub errors: Vec<(String, io::Error)>,
}

impl JoinReport {
    pub fn is_success(&self) -> bool {
        !self.joined.is_empty()
    }

    /// One line for the log: the errors, or "no interface" when there were none.
    pub fn summary(&self) -> String {
        if self.errors.is_empty() {
            return "no up, multicast-capable interface with an IPv4 address or an IPv6 link-local address".to_owned();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .take(16)
            .map(|(name, e)| format!("{name}: {e}"))
            .collect();
        parts.join("; ")
    }
}

/// What a join outcome means; the protocol core logs accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinNote {
    /// Joined. `after_failure`: earlier attempts failed, so HELLO + ANNOUNCE must go out again.
    Joined { after_failure: bool },
    /// The first failure of a series: log it, with the retry plan.
    FirstFailure,
    /// Another failure; `log` is true at most once a minute.
    StillFailing { log: bool },
    /// 15 minutes of failures: stop retrying, log that SIGUSR2 retries.
    GaveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Due {
        at: Instant,
    },
    Joined,
    Retrying {
        first_failure: Instant,
        next_try: Instant,
        last_log: Instant,
    },
    GaveUp,
}

/// The join retry schedule.
#[derive(Debug)]
pub struct JoinSchedule {
    state: JoinState,
}

impl JoinSchedule {
    /// A schedule whose first attempt is due at `now`.
    pub fn new(now: Instant) -> Self {
        JoinSchedule {
            state: JoinState::Due { at: now },
        }
    }

    /// Whether the shell should try joining now.
    pub fn is_due(&self, now: Instant) -> bool {
        match self.state {
            JoinState::Due { at } => now >= at,
            JoinState::Retrying { next_try, .. } => now >= next_try,
            JoinState::Joined | JoinState::GaveUp => false,
        }
    }

    /// When the next attempt is due, if one is planned.
    pub fn next_try(&self) -> Option<Instant> {
        match self.state {
            JoinState::Due { at } => Some(at),
            JoinState::Retrying { next_try, .. } => Some(next_try),
            JoinState::Joined | JoinState::GaveUp => None,
        }
    }

    pub fn is_joined(&self) -> bool {
        self.state == JoinState::Joined
    }

    #[cfg(test)]
    pub fn gave_up(&self) -> bool {
        self.state == JoinState::GaveUp
    }

    /// An attempt at `now` succeeded.
    pub fn succeeded(&mut self) -> JoinNote {
        let after_failure = matches!(self.state, JoinState::Retrying { .. } | JoinState::GaveUp);
        self.state = JoinState::Joined;
        JoinNote::Joined { after_failure }
    }

    /// An attempt at `now` failed.
    pub fn failed(&mut self, now: Instant) -> JoinNote {
        match self.state {
            JoinState::Retrying {
                first_failure,
                last_log,
                ..
            } => {
                if now.saturating_duration_since(first_failure) >= JOIN_RETRY_FOR {
                    self.state = JoinState::GaveUp;
                    return JoinNote::GaveUp;
                }
                let log = now.saturating_duration_since(last_log) >= JOIN_LOG_EVERY;
                self.state = JoinState::Retrying {
                    first_failure,
                    next_try: now + JOIN_RETRY_EVERY,
                    last_log: if log { now } else { last_log },
                };
                JoinNote::StillFailing { log }
            }
            // A failure with no series running (start, after rejoin, or a stray report after
            // success or giving up) starts a new series.
            JoinState::Due { .. } | JoinState::Joined | JoinState::GaveUp => {
                self.state = JoinState::Retrying {
                    first_failure: now,
                    next_try: now + JOIN_RETRY_EVERY,
                    last_log: now,
                };
                JoinNote::FirstFailure
            }
        }
    }

    /// SIGUSR2: try again at `now`, whatever the state.
    pub fn rejoin(&mut self, now: Instant) {
        self.state = JoinState::Due { at: now };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn due_at_start_then_joined() {
        let t0 = Instant::now();
        let mut j = JoinSchedule::new(t0);
        assert!(j.is_due(t0));
        assert_eq!(j.next_try(), Some(t0));
        assert_eq!(
            j.succeeded(),
            JoinNote::Joined {
                after_failure: false
            }
        );
        assert!(!j.is_due(t0 + secs(3600)));
        assert_eq!(j.next_try(), None);
        assert!(j.is_joined());
    }

    #[test]
    fn retries_every_5s_for_15_min_logging_once_a_minute() {
        let t0 = Instant::now();
        let mut j = JoinSchedule::new(t0);
        let mut now = t0;
        let mut tries = 0;
        let mut logged_at = Vec::new();
        let mut gave_up_at = None;
        // Drive it like the event loop would: wake at next_try, try, report a failure.
        while let Some(at) = j.next_try() {
            assert!(at >= now);
            now = at;
            assert!(j.is_due(now));
            assert!(!j.is_due(now - Duration::from_millis(1)) || tries == 0);
            tries += 1;
            match j.failed(now) {
                JoinNote::FirstFailure => logged_at.push(now - t0),
                JoinNote::StillFailing { log: true } => logged_at.push(now - t0),
                JoinNote::StillFailing { log: false } => {}
                JoinNote::GaveUp => gave_up_at = Some(now - t0),
                JoinNote::Joined { .. } => unreachable!(),
            }
            assert!(tries < 1000);
        }
        // Attempts at 0, 5, ..., 900 s: 181 of them; the one at 900 s gives up.
        assert_eq!(tries, 181);
        assert_eq!(gave_up_at, Some(secs(900)));
        let want: Vec<Duration> = (0..15).map(|m| secs(60 * m)).collect();
        assert_eq!(logged_at, want);
        assert!(j.gave_up());
        assert!(!j.is_due(now + secs(86_400)));
    }

    #[test]
    fn success_after_failure_asks_for_a_new_hello() {
        let t0 = Instant::now();
        let mut j = JoinSchedule::new(t0);
        assert_eq!(j.failed(t0), JoinNote::FirstFailure);
        assert!(!j.is_due(t0 + secs(4)));
        assert!(j.is_due(t0 + secs(5)));
        assert_eq!(
            j.succeeded(),
            JoinNote::Joined {
                after_failure: true
            }
        );
    }

    #[test]
    fn rejoin_restarts_after_giving_up() {
        let t0 = Instant::now();
        let mut j = JoinSchedule::new(t0);
        j.failed(t0);
        j.failed(t0 + secs(900));
        assert!(j.gave_up());
        let t1 = t0 + secs(5000);
        j.rejoin(t1);
        assert!(j.is_due(t1));
        assert_eq!(
            j.failed(t1),
            JoinNote::FirstFailure,
            "a new series, logged again"
        );
        assert_eq!(j.next_try(), Some(t1 + secs(5)));
        // And a rejoin while joined is due at once.
        j.succeeded();
        j.rejoin(t1 + secs(10));
        assert!(j.is_due(t1 + secs(10)));
    }

    #[test]
    fn late_attempts_keep_the_cadence_from_the_attempt() {
        let t0 = Instant::now();
        let mut j = JoinSchedule::new(t0);
        j.failed(t0);
        // The loop was busy and tried 20 s late: next try 5 s after that, and a minute has
        // not passed since the first log line.
        assert_eq!(
            j.failed(t0 + secs(25)),
            JoinNote::StillFailing { log: false }
        );
        assert_eq!(j.next_try(), Some(t0 + secs(30)));
        assert_eq!(
            j.failed(t0 + secs(61)),
            JoinNote::StillFailing { log: true }
        );
    }

    #[test]
    fn report_summary() {
        let mut r = JoinReport::default();
        assert!(!r.is_success());
        assert!(r.summary().contains("no up"));
        r.errors
            .push(("eth9".into(), io::Error::other("no such interface")));
        assert_eq!(r.summary(), "eth9: no such interface");
        r.joined.push("eth0".into());
        assert!(r.is_success());
    }
}
