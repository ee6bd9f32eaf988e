//! How many answers (HAVE / HAVE_NOT) one source address gets: a token bucket per IP address,
//! so that a forged source cannot turn this host into a stream of datagrams at a victim, and a
//! bound on all answers together. Pure and bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::tokens::Tokens;

/// Answers per second and burst for one source address. An honest peer with 20 downloads in
/// parallel asks a few questions per file: far below.
pub const PER_SOURCE_RATE: u32 = 200;
pub const PER_SOURCE_BURST: u32 = 400;
/// Answers per second for all sources together.
pub const TOTAL_RATE: u32 = 5_000;
/// Source addresses remembered; past that the one idle longest is forgotten.
pub const SOURCES: usize = 1024;

/// The interval of one token at `rate` a second.
fn per(rate: u32) -> Duration {
    Duration::from_secs(1) / rate.max(1)
}

/// The answer budget of every source.
#[derive(Debug)]
pub struct AnswerLimit {
    sources: HashMap<IpAddr, Tokens>,
    total: Tokens,
    /// Answers refused since start.
    pub refused: u64,
}

impl AnswerLimit {
    pub fn new(now: Instant) -> Self {
        AnswerLimit {
            sources: HashMap::new(),
            total: Tokens::new(now, per(TOTAL_RATE), TOTAL_RATE),
            refused: 0,
        }
    }

    /// Whether a question from `ip` may be answered now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= SOURCES {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, b)| b.last())
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.sources.remove(&k);
            }
        }
        let bucket = self
            .sources
            .entry(ip)
            .or_insert_with(|| Tokens::new(now, per(PER_SOURCE_RATE), PER_SOURCE_BURST));
        let ok = bucket.take(now) && self.total.take(now);
        if !ok {
            self.refused += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = AnswerLimit::new(t0);
        let allowed = (0..1000).filter(|_| l.allow(ip(1), t0)).count();
        assert_eq!(allowed, PER_SOURCE_BURST as usize);
        assert_eq!(l.refused, 1000 - u64::from(PER_SOURCE_BURST));
        // One second later: the rate's worth again.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..1000).filter(|_| l.allow(ip(1), t1)).count();
        assert_eq!(allowed, PER_SOURCE_RATE as usize);
        // Another source is not affected.
        assert!(l.allow(ip(2), t1));
    }

    #[test]
    fn steady_honest_traffic_is_never_refused() {
        let t0 = Instant::now();
        let mut l = AnswerLimit::new(t0);
        // 100 questions a second for a minute, 10 ms apart.
        for k in 0..6000u64 {
            assert!(l.allow(ip(1), t0 + Duration::from_millis(10 * k)));
        }
        assert_eq!(l.refused, 0);
    }

    #[test]
    fn many_sources_are_bounded_in_memory_and_in_total() {
        let t0 = Instant::now();
        let mut l = AnswerLimit::new(t0);
        let mut allowed = 0;
        for n in 0..20_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            if l.allow(a, t0) {
                allowed += 1;
            }
        }
        assert!(l.sources.len() <= SOURCES);
        assert_eq!(allowed, TOTAL_RATE);
    }
}
