//! Noticing that the host was suspended: `CLOCK_MONOTONIC` (what `Instant` reads) stops while
//! the host sleeps, `CLOCK_BOOTTIME` does not. When the gap between them grows, the host slept
//! that long, and peers heard before may be gone (a laptop resumed on another network).

use std::time::Duration;

/// A growth of the gap smaller than this is clock noise, not a suspend.
pub const MIN_SLEEP: Duration = Duration::from_secs(2);

/// Follows the gap between the two clocks. Pure: the caller reads them.
#[derive(Debug, Default)]
pub struct SleepWatch {
    /// Boot time minus monotonic time, in nanoseconds. Signed: some sandboxes start their
    /// monotonic clock ahead of their boot clock.
    gap: Option<i128>,
}

impl SleepWatch {
    /// The two clocks now; returns how long the host slept since the last look, if it did.
    pub fn observe(&mut self, boottime: Duration, monotonic: Duration) -> Option<Duration> {
        let gap = boottime.as_nanos() as i128 - monotonic.as_nanos() as i128;
        let before = self.gap.replace(gap)?;
        let slept = u64::try_from(gap - before).ok().map(Duration::from_nanos)?;
        (slept >= MIN_SLEEP).then_some(slept)
    }
}

fn read_clock(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// `CLOCK_BOOTTIME` and `CLOCK_MONOTONIC` now, when the kernel has both.
pub fn clocks() -> Option<(Duration, Duration)> {
    Some((
        read_clock(libc::CLOCK_BOOTTIME)?,
        read_clock(libc::CLOCK_MONOTONIC)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_jump_of_boottime_is_a_sleep() {
        let mut w = SleepWatch::default();
        assert_eq!(w.observe(s(100), s(90)), None, "first look");
        assert_eq!(w.observe(s(101), s(91)), None);
        assert_eq!(w.observe(s(402), s(92)), Some(s(300)));
        assert_eq!(w.observe(s(403), s(93)), None, "counted once");
        assert_eq!(
            w.observe(s(404) + Duration::from_millis(500), s(94)),
            None,
            "noise"
        );
    }

    #[test]
    fn the_real_clocks_are_readable_and_awake_is_no_sleep() {
        let mut w = SleepWatch::default();
        for _ in 0..3 {
            let (boot, mono) = clocks().unwrap();
            assert_eq!(w.observe(boot, mono), None);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_boot_clock_behind_the_monotonic_one_still_works() {
        let mut w = SleepWatch::default();
        assert_eq!(w.observe(s(10), s(50)), None);
        assert_eq!(w.observe(s(71), s(51)), Some(s(60)));
    }
}
