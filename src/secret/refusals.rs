//! What was refused for want of the secret: datagrams and peer requests, in all and per
//! source address (at most [`MAX_SOURCES`] addresses; past that the one heard from longest
//! ago is forgotten), for the status page, the JSON status and the metrics. The first
//! refusal from each address is logged as a warning, at most one a minute (a host cycling
//! through more addresses than are tallied cannot flood the log), the others at debug level.

use std::net::IpAddr;
use std::time::Instant;

/// Source addresses tallied one by one.
pub const MAX_SOURCES: usize = 32;

/// Refusals from one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTally {
    pub ip: IpAddr,
    pub datagrams: u64,
    pub requests: u64,
    pub last: Instant,
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Refusals {
    /// Datagrams refused since start.
    pub datagrams: u64,
    /// Datagrams dropped as taken once already: second copies (a host on both families, a
    /// static peer on the link) and replays alike; not refusals.
    pub repeated: u64,
    /// Peer requests answered 403 since start.
    pub requests: u64,
    sources: Vec<SourceTally>,
    warnings: crate::rate_limit::RateLimit,
}

impl Refusals {
    /// A datagram from `ip` refused for `why`.
    pub fn datagram(&mut self, ip: IpAddr, why: super::Refused, now: Instant) {
        self.datagrams += 1;
        let first = self.source(ip, now).datagrams == 0;
        self.source(ip, now).datagrams += 1;
        if let Some(held) = first.then(|| self.warnings.check(now)).flatten() {
            log::warn!(
                "secret: refused a datagram from {ip}: {why} (further ones at debug level; \
                 {held} first refusals from other addresses held back)"
            );
        } else {
            log::debug!("secret: refused a datagram from {ip}: {why}");
        }
    }

    /// A peer request from `ip` answered 403 for `why`.
    pub fn request(&mut self, ip: IpAddr, why: super::http::HttpRefused, now: Instant) {
        self.requests += 1;
        let first = self.source(ip, now).requests == 0;
        self.source(ip, now).requests += 1;
        if let Some(held) = first.then(|| self.warnings.check(now)).flatten() {
            log::warn!(
                "secret: refused a request from {ip}: {why}, 403 (further ones at debug level; \
                 {held} first refusals from other addresses held back)"
            );
        } else {
            log::debug!("secret: refused a request from {ip}: {why}, 403");
        }
    }

    fn source(&mut self, ip: IpAddr, now: Instant) -> &mut SourceTally {
        let at = match self.sources.iter().position(|s| s.ip == ip) {
            Some(at) => at,
            None => {
                if self.sources.len() >= MAX_SOURCES {
                    if let Some(oldest) =
                        (0..self.sources.len()).min_by_key(|&i| self.sources[i].last)
                    {
                        self.sources.swap_remove(oldest);
                    }
                }
                self.sources.push(SourceTally {
                    ip,
                    datagrams: 0,
                    requests: 0,
                    last: now,
                });
                self.sources.len() - 1
            }
        };
        let s = &mut self.sources[at];
        s.last = now;
        s
    }

    /// The status page's lines.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "secret: {} datagrams refused, {} peer requests refused (403), {} repeated datagrams dropped\n",
            self.datagrams, self.requests, self.repeated
        );
        for t in self.sources() {
            text.push_str(&format!(
                "  refused from {}: {} datagrams, {} requests\n",
                t.ip, t.datagrams, t.requests
            ));
        }
        text
    }

    /// What `status.json` and the metrics tell.
    pub fn status(&self) -> crate::status::SecretStatus {
        crate::status::SecretStatus {
            datagrams_refused: self.datagrams,
            datagrams_repeated: self.repeated,
            requests_refused: self.requests,
            sources: self
                .sources()
                .iter()
                .map(|t| (t.ip, t.datagrams, t.requests))
                .collect(),
        }
    }

    /// The addresses tallied, most refusals first.
    pub fn sources(&self) -> Vec<SourceTally> {
        let mut v = self.sources.clone();
        v.sort_by_key(|s| std::cmp::Reverse(s.datagrams + s.requests));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Refused;
    use crate::secret::http::HttpRefused;

    #[test]
    fn counts_per_source_bounded() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        r.datagram(ip(1), Refused::BadMac, t0);
        r.datagram(ip(1), Refused::Replayed, t0);
        r.request(ip(1), HttpRefused::Missing, t0);
        r.request(ip(2), HttpRefused::BadMac, t0);
        r.repeated += 1;
        assert_eq!((r.datagrams, r.repeated, r.requests), (2, 1, 2));
        let s = r.sources();
        assert_eq!((s[0].ip, s[0].datagrams, s[0].requests), (ip(1), 2, 1));
        for n in 3..100 {
            r.datagram(
                ip(n),
                Refused::Unsealed,
                t0 + std::time::Duration::from_secs(u64::from(n)),
            );
        }
        assert_eq!(r.sources().len(), MAX_SOURCES);
        assert!(r.sources().iter().any(|s| s.ip == ip(99)));
        assert_eq!(r.datagrams, 99);
        assert!(r.describe().starts_with(
            "secret: 99 datagrams refused, 2 peer requests refused (403), 1 repeated datagrams dropped\n"
        ));
        assert_eq!(r.status().sources.len(), MAX_SOURCES);
    }
}
