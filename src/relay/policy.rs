//! What the relay remembers from one request to the next: which peers failed
//! and are skipped for a while (back-off), which peers sent bytes unlike the
//! sync database and are banned, by host id and by address, for the ban time
//! (bans), where each package came from (so
//! that its `.sig` comes from the same place), which upstream mirror each
//! repository's databases come from (the sticky database mirror), and the
//! totals of the status page.
//!
//! Pure: every rule takes `now`, nothing here touches a socket or the clock.
//! It does not choose a source for a request (that is [`super::plan`]) or
//! judge an answer (that is [`super::fetch`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::discovery::PeerRef;
use crate::rate_limit::RateLimit;
use crate::resolver::ResolveError;

/// How long a failing peer is skipped.
pub const PEER_BACKOFF: Duration = Duration::from_secs(60);
/// Remembered package origins (for choosing where their `.sig` comes from).
pub const ORIGINS: usize = 512;
/// Peers remembered as backed off at most (a bound on what peers can fill).
const MAX_BACKED_OFF: usize = 1024;
/// Bans kept at most; past that the one ending first is dropped.
pub const MAX_BANS: usize = 256;
/// The default ban time (`--ban-time`).
pub const DEFAULT_BAN_TIME: Duration = Duration::from_secs(3600);

/// A peer caught sending bytes unlike the sync database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub host_id: u64,
    pub ip: IpAddr,
    pub until: Instant,
    pub reason: String,
}

/// Totals since start, for the status page and SIGUSR1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub from_peers: u64,
    pub bytes_from_peers: u64,
    pub from_upstream: u64,
    pub bytes_from_upstream: u64,
    pub redirects: u64,
    pub not_found: u64,
    pub failures: u64,
    pub failovers: u64,
    /// Bodies checked against the sync database, and those that failed.
    pub verified: u64,
    pub verify_failures: u64,
    /// Databases relayed whole (`200`) to pacman: its sync databases change soon after.
    pub databases_relayed: u64,
    /// Discovery questions answered (a peer has it, nobody has, or the deadline passed), and
    /// those a peer said yes to.
    pub lookups: u64,
    pub lookups_found: u64,
    /// How long those questions took.
    pub lookup_latency: LatencyHistogram,
    /// Peers banned since start (a renewed ban counts again).
    pub bans: u64,
}

/// Upper bounds of the lookup latency buckets, in milliseconds (the lookup timeout is at
/// most 5000 ms); a last bucket, `+Inf`, holds the rest.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_MS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    pub count: u64,
    /// The sum of the observations, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&ms| micros <= ms * 1000)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Observations at or below each bound, the last one (`+Inf`) equal to `count`.
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS_MS.len() + 1] {
        let mut out = self.buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

/// What one peer served to this host since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTally {
    pub files: u64,
    pub bytes: u64,
}

/// Where a file came from, remembered so its signature comes from the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Peer(u64),
    Upstream,
}

/// The relay's memory across requests (see the module documentation).
#[derive(Debug, Default)]
pub struct Policy {
    pub counters: Counters,
    /// How long a ban lasts; zero means [`DEFAULT_BAN_TIME`].
    pub ban_time: Duration,
    bans: Vec<Ban>,
    /// repo -> index of the upstream databases come from while it works.
    db_mirror: HashMap<String, usize>,
    /// peer host id -> skipped until.
    backoff: HashMap<u64, Instant>,
    origins: VecDeque<(String, Origin)>,
    dns_warnings: RateLimit,
    /// peer host id -> what it served us (bounded like `backoff`).
    tallies: HashMap<u64, PeerTally>,
}

impl Policy {
    /// A policy whose bans last `ban_time`.
    pub fn with_ban_time(ban_time: Duration) -> Policy {
        Policy {
            ban_time,
            ..Policy::default()
        }
    }

    /// Where `package` came from last, if it is remembered.
    pub fn origin_of(&self, package: &str) -> Option<Origin> {
        self.origins
            .iter()
            .rev()
            .find(|(name, _)| name == package)
            .map(|&(_, o)| o)
    }

    /// Remembers where `package` came from (the oldest is forgotten first).
    pub fn remember_origin(&mut self, package: &str, origin: Origin) {
        if self.origin_of(package) == Some(origin) {
            return;
        }
        if self.origins.len() >= ORIGINS {
            self.origins.pop_front();
        }
        self.origins.push_back((package.to_owned(), origin));
    }

    /// A discovery question was answered after `took`; `found`: a peer has the file.
    pub fn count_lookup(&mut self, took: Duration, found: bool) {
        self.counters.lookups += 1;
        if found {
            self.counters.lookups_found += 1;
        }
        self.counters.lookup_latency.observe(took);
    }

    /// Peer `host_id` delivered a whole answer of `bytes` body bytes.
    pub fn count_peer_file(&mut self, host_id: u64, bytes: u64) {
        if self.tallies.len() >= MAX_BACKED_OFF && !self.tallies.contains_key(&host_id) {
            return;
        }
        let tally = self.tallies.entry(host_id).or_default();
        tally.files += 1;
        tally.bytes += bytes;
    }

    /// What peer `host_id` served this host since start.
    pub fn peer_tally(&self, host_id: u64) -> PeerTally {
        self.tallies.get(&host_id).copied().unwrap_or_default()
    }

    /// The bans in force at `now`.
    pub fn bans_in_force(&self, now: Instant) -> impl Iterator<Item = &Ban> {
        self.bans.iter().filter(move |b| b.until > now)
    }

    /// The peers skipped now.
    pub fn backed_off(&mut self, now: Instant) -> Vec<u64> {
        self.backoff.retain(|_, until| *until > now);
        self.backoff.keys().copied().collect()
    }

    /// Whether `host_id` is skipped now.
    pub fn is_backed_off(&self, host_id: u64, now: Instant) -> bool {
        self.backoff.get(&host_id).is_some_and(|until| *until > now)
    }

    /// A peer failed: it is skipped for [`PEER_BACKOFF`].
    pub fn penalize(&mut self, peer: &PeerRef, now: Instant, why: &str) {
        self.counters.failures += 1;
        if self.backoff.len() < MAX_BACKED_OFF {
            self.backoff.insert(peer.host_id, now + PEER_BACKOFF);
        }
        info!(
            "peer {:016x} at {} failed ({why}): skipped for {}s",
            peer.host_id,
            peer.addr,
            PEER_BACKOFF.as_secs()
        );
    }

    /// Bans `peer` (by host id and by address) for the ban time: it sent bytes unlike the
    /// sync database. A ban already there is renewed.
    pub fn ban(&mut self, peer: &PeerRef, now: Instant, reason: &str) {
        let ban_time = if self.ban_time.is_zero() {
            DEFAULT_BAN_TIME
        } else {
            self.ban_time
        };
        self.bans
            .retain(|b| b.until > now && b.host_id != peer.host_id);
        if self.bans.len() >= MAX_BANS {
            if let Some(i) = (0..self.bans.len()).min_by_key(|&i| self.bans[i].until) {
                self.bans.swap_remove(i);
            }
        }
        self.counters.bans += 1;
        warn!(
            "peer {:016x} at {} banned for {} s: {reason}",
            peer.host_id,
            peer.addr,
            ban_time.as_secs()
        );
        self.bans.push(Ban {
            host_id: peer.host_id,
            ip: peer.addr.ip(),
            until: now + ban_time,
            reason: reason.to_owned(),
        });
    }

    /// Whether a peer with this host id or at this address is banned at `now`.
    pub fn is_banned(&self, host_id: u64, ip: IpAddr, now: Instant) -> bool {
        self.bans
            .iter()
            .any(|b| b.until > now && (b.host_id == host_id || b.ip == ip))
    }

    /// The peers (host id, address) that a question must leave out at `now`: backed off,
    /// or banned by id or by address. `peers`: the peers discovery knows.
    pub fn excluded(
        &mut self,
        now: Instant,
        peers: impl IntoIterator<Item = (u64, IpAddr)>,
    ) -> Vec<u64> {
        let mut out = self.backed_off(now);
        self.bans.retain(|b| {
            let live = b.until > now;
            if !live {
                info!("ban of peer {:016x} at {} is over", b.host_id, b.ip);
            }
            live
        });
        for (id, ip) in peers {
            if !out.contains(&id) && self.is_banned(id, ip, now) {
                out.push(id);
            }
        }
        for b in &self.bans {
            if !out.contains(&b.host_id) {
                out.push(b.host_id);
            }
        }
        out
    }

    /// The status page's lines about bans in force at `now`.
    pub fn describe_bans(&self, now: Instant) -> Vec<String> {
        let live: Vec<&Ban> = self.bans.iter().filter(|b| b.until > now).collect();
        let mut lines = vec![format!("{} peers banned", live.len())];
        for b in live {
            lines.push(format!(
                "  banned peer {:016x} at {} for {} s more: {}",
                b.host_id,
                b.ip,
                b.until.duration_since(now).as_secs(),
                b.reason
            ));
        }
        lines
    }

    /// The upstream (by index) `repo`'s databases are asked of first.
    pub fn db_mirror(&self, repo: &str) -> usize {
        self.db_mirror.get(repo).copied().unwrap_or(0)
    }

    /// `index` answered a database of `repo`: it stays first while it works.
    pub fn keep_db_mirror(&mut self, repo: &str, index: usize) {
        if self.db_mirror.get(repo) != Some(&index) {
            self.db_mirror.insert(repo.to_owned(), index);
        }
    }

    /// An upstream whose host does not resolve is skipped, with a warning at
    /// most once a minute.
    pub fn warn_unresolved(&mut self, host: &str, why: ResolveError, now: Instant) {
        if let Some(held_back) = self.dns_warnings.check(now) {
            warn!(
                "upstream host {host} does not resolve, skipped: {why} ({held_back} more held back)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64) -> PeerRef {
        PeerRef {
            host_id: id,
            addr: ([127, 0, 0, 1], 7000).into(),
        }
    }

    #[test]
    fn a_failed_peer_is_skipped_for_60_seconds() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        p.penalize(&peer(7), t0, "stalled");
        assert_eq!(p.counters.failures, 1);
        assert_eq!(p.backed_off(t0), [7]);
        assert!(p.is_backed_off(7, t0 + Duration::from_secs(59)));
        assert_eq!(p.backed_off(t0 + Duration::from_secs(59)), [7]);
        assert!(!p.is_backed_off(7, t0 + PEER_BACKOFF));
        assert!(p.backed_off(t0 + PEER_BACKOFF).is_empty());
        // A second failure starts the 60 s again.
        p.penalize(&peer(7), t0 + Duration::from_secs(30), "stalled");
        assert!(p.is_backed_off(7, t0 + Duration::from_secs(89)));
        assert!(!p.is_backed_off(8, t0));
    }

    #[test]
    fn origins_are_the_latest_and_bounded() {
        let mut p = Policy::default();
        assert_eq!(p.origin_of("a"), None);
        p.remember_origin("a", Origin::Peer(1));
        p.remember_origin("a", Origin::Upstream);
        assert_eq!(p.origin_of("a"), Some(Origin::Upstream));
        for i in 0..ORIGINS {
            p.remember_origin(&format!("p{i}"), Origin::Peer(i as u64));
        }
        assert_eq!(p.origin_of("a"), None, "the oldest is forgotten first");
        assert_eq!(p.origin_of("p0"), Some(Origin::Peer(0)));
        assert_eq!(p.origins.len(), ORIGINS);
    }

    #[test]
    fn a_liar_is_banned_by_id_and_address_for_the_ban_time() {
        let t0 = Instant::now();
        let mut p = Policy {
            ban_time: Duration::from_secs(100),
            ..Policy::default()
        };
        p.ban(
            &peer(7),
            t0,
            "sent bytes unlike its sync database's SHA-256",
        );
        assert!(p.is_banned(7, [10, 9, 9, 9].into(), t0));
        // Restarted with a new host id, same address: still banned.
        assert!(p.is_banned(8, [127, 0, 0, 1].into(), t0 + Duration::from_secs(99)));
        assert!(!p.is_banned(8, [10, 0, 0, 8].into(), t0));
        let known = [
            (8u64, IpAddr::from([127, 0, 0, 1])),
            (9, [10, 0, 0, 9].into()),
        ];
        let mut excluded = p.excluded(t0, known);
        excluded.sort_unstable();
        assert_eq!(excluded, [7, 8]);
        let lines = p.describe_bans(t0 + Duration::from_secs(40));
        assert_eq!(lines[0], "1 peers banned");
        assert!(lines[1].contains("0000000000000007") && lines[1].contains("60 s more"));
        assert!(lines[1].contains("SHA-256"), "{lines:?}");
        // Over: asked again.
        let end = t0 + Duration::from_secs(100);
        assert!(!p.is_banned(7, [127, 0, 0, 1].into(), end));
        assert!(p.excluded(end, known).is_empty());
        assert_eq!(p.describe_bans(end), ["0 peers banned"]);
        // The default is an hour.
        let mut d = Policy::default();
        d.ban(&peer(1), t0, "x");
        assert!(d.is_banned(1, [1, 1, 1, 1].into(), t0 + Duration::from_secs(3599)));
        assert!(!d.is_banned(1, [1, 1, 1, 1].into(), t0 + DEFAULT_BAN_TIME));
    }

    #[test]
    fn lookup_latency_lands_in_cumulative_buckets() {
        let mut p = Policy::default();
        p.count_lookup(Duration::from_micros(300), true);
        p.count_lookup(Duration::from_millis(1), false);
        p.count_lookup(Duration::from_millis(7), true);
        p.count_lookup(Duration::from_secs(9), false);
        let c = p.counters;
        assert_eq!((c.lookups, c.lookups_found), (4, 2));
        let h = c.lookup_latency;
        assert_eq!(h.count, 4);
        assert_eq!(h.sum_micros, 300 + 1000 + 7000 + 9_000_000);
        let cum = h.cumulative();
        assert_eq!(cum[0], 2, "300 us and exactly 1 ms are <= 1 ms");
        assert_eq!(cum[3], 3, "7 ms is <= 10 ms");
        assert_eq!(cum[LATENCY_BUCKETS_MS.len() - 1], 3, "9 s is over 5 s");
        assert_eq!(cum[LATENCY_BUCKETS_MS.len()], 4);
        assert!(cum.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn tallies_per_peer_and_ban_count() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        p.count_peer_file(7, 100);
        p.count_peer_file(7, 50);
        assert_eq!(
            p.peer_tally(7),
            PeerTally {
                files: 2,
                bytes: 150
            }
        );
        assert_eq!(p.peer_tally(8), PeerTally::default());
        p.ban(&peer(7), t0, "x");
        p.ban(&peer(7), t0, "y");
        assert_eq!(p.counters.bans, 2);
        assert_eq!(p.bans_in_force(t0).count(), 1);
    }

    #[test]
    fn bans_are_bounded() {
        let t0 = Instant::now();
        let mut p = Policy::default();
        for i in 0..MAX_BANS as u64 + 10 {
            p.ban(&peer(i), t0 + Duration::from_millis(i), "x");
        }
        assert_eq!(p.bans.len(), MAX_BANS);
        assert!(p.is_banned(MAX_BANS as u64 + 9, [1, 1, 1, 1].into(), t0));
    }

    #[test]
    fn databases_stick_to_the_mirror_that_answered() {
        let mut p = Policy::default();
        assert_eq!(p.db_mirror("core"), 0);
        p.keep_db_mirror("core", 2);
        assert_eq!(p.db_mirror("core"), 2);
        assert_eq!(p.db_mirror("extra"), 0);
    }
}
