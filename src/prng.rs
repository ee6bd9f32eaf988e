//! A small seeded pseudo-random generator (xorshift64*): announce jitter and question ids in
//! discovery.
//!
//! Not cryptographic and not meant to be: it only spreads announcements of hosts that started
//! together. The seed comes from outside (`host::random_seed` in the daemon, constants in
//! tests), so the protocol core stays deterministic under test.

use std::time::Duration;

/// xorshift64* (Vigna), seeded through splitmix64 so that similar seeds diverge at once.
#[derive(Debug, Clone)]
pub struct Xorshift64 {
    state: u64,
}

impl Xorshift64 {
    pub fn new(seed: u64) -> Self {
        // splitmix64 step: any seed, 0 included, gives a well-mixed state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Xorshift64 {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..=max` (the modulo bias is below 2^-40 for the spans used here).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }

    /// `base` moved uniformly within ±`percent` % (inclusive), at nanosecond resolution.
    pub fn jitter(&mut self, base: Duration, percent: u64) -> Duration {
        let base_ns = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        let spread = u64::try_from(u128::from(base_ns) * u128::from(percent.min(100)) / 100)
            .unwrap_or(u64::MAX);
        let low = base_ns - spread;
        let offset = self.up_to(spread.saturating_mul(2));
        Duration::from_nanos(low.saturating_add(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed_and_zero_seed_works() {
        let mut a = Xorshift64::new(0);
        let mut b = Xorshift64::new(0);
        let mut c = Xorshift64::new(1);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|&x| x != 0));
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_spreads() {
        let mut r = Xorshift64::new(42);
        let base = Duration::from_secs(60);
        let (lo, hi) = (Duration::from_secs(54), Duration::from_secs(66));
        let mut below = 0;
        let mut above = 0;
        for _ in 0..10_000 {
            let d = r.jitter(base, 10);
            assert!(d >= lo && d <= hi, "{d:?}");
            if d < Duration::from_secs(57) {
                below += 1;
            }
            if d > Duration::from_secs(63) {
                above += 1;
            }
        }
        // Roughly a quarter in each outer band.
        assert!((2000..3000).contains(&below), "{below}");
        assert!((2000..3000).contains(&above), "{above}");
    }

    #[test]
    fn jitter_edge_cases() {
        let mut r = Xorshift64::new(7);
        assert_eq!(r.jitter(Duration::ZERO, 10), Duration::ZERO);
        assert_eq!(r.jitter(Duration::from_secs(1), 0), Duration::from_secs(1));
        let huge = r.jitter(Duration::MAX, 10);
        assert!(huge > Duration::from_secs(1 << 33));
        let _ = r.up_to(u64::MAX);
        assert_eq!(r.up_to(0), 0);
    }
}
