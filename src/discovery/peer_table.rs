//! The table of hosts heard on the group: who they are, where their file server is, whether
//! they can serve us (same distribution and architecture), and when they were last heard.
//!
//! Pure: every method takes `now` and nothing here sends, logs or reads the clock. The table
//! is bounded (`max_peers`); the protocol core decides what to log and which events to emit
//! from the outcomes returned here.
//!
//! A host heard on both IPv4 and IPv6 (it sends its group datagrams on both) is one entry: its
//! host id is bound to one source address per family, the first one heard in that family
//! ([`Bindings`]), and the address used to reach it is chosen among those ([`Bindings::preferred`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::rtt::AnswerTime;
use super::summary::PeerSummary;
use super::wire::Announcement;

/// How long after a host's entry is made its address in the other IP family may still be bound:
/// a dual-stack host sends every group datagram on both families, so both arrive within its
/// first HELLOs; the margin covers an IPv6 link-local address still in duplicate address
/// detection (1 to 2 s with Linux's defaults) when the host started.
pub const SECOND_FAMILY_WINDOW: Duration = Duration::from_secs(10);

/// The source addresses (IP and UDP port) a host id is bound to: one per IP family, each the
/// first heard in that family, with when it was last heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bindings {
    pub v4: Option<(SocketAddr, Instant)>,
    pub v6: Option<(SocketAddr, Instant)>,
}

impl Bindings {
    fn slot(&mut self, from: SocketAddr) -> &mut Option<(SocketAddr, Instant)> {
        if from.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Whether `from` is one of the bound addresses.
    pub fn contains(&self, from: SocketAddr) -> bool {
        [self.v4, self.v6].iter().flatten().any(|(a, _)| *a == from)
    }

    /// The bound addresses, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.v4.iter().chain(self.v6.iter()).map(|(a, _)| *a)
    }

    /// The address to reach the host at: its IPv4 one, unless only IPv6 was heard from it for
    /// longer than `gap` (then its IPv6 one). IPv4 first because it is what the host was
    /// reached at before flocon spoke IPv6 (a dual-stack LAN behaves as it did) and because
    /// the choice must be stable: both copies of each group datagram arrive within
    /// milliseconds, so "the family last heard" would flip at every announcement.
    pub fn preferred(&self, gap: Duration) -> Option<SocketAddr> {
        match (self.v4, self.v6) {
            (Some((a4, t4)), Some((a6, t6))) => Some(if t4 + gap >= t6 { a4 } else { a6 }),
            (Some((a, _)), None) | (None, Some((a, _))) => Some(a),
            (None, None) => None,
        }
    }

    /// `slept` of silence added to every binding (the host was suspended).
    fn age(&mut self, slept: Duration) {
        for (_, t) in [&mut self.v4, &mut self.v6].into_iter().flatten() {
            if let Some(earlier) = t.checked_sub(slept) {
                *t = earlier;
            }
        }
    }
}

/// `addr` with another port; an IPv6 address keeps its scope id (the interface a link-local
/// address is reached on), which `SocketAddr::new` would drop.
fn with_port(mut addr: SocketAddr, port: u16) -> SocketAddr {
    addr.set_port(port);
    addr
}

/// One host heard on the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its random per-start host id.
    pub host_id: u64,
    /// Its file server: the IP of its preferred source address (see [`Bindings::preferred`])
    /// and the TCP port it announced.
    pub addr: SocketAddr,
    /// Where its discovery datagrams come from (IP and UDP port) in the preferred family:
    /// unicast questions and answers go there.
    pub udp: SocketAddr,
    /// Every source address its host id is bound to (one per family).
    pub bound: Bindings,
    /// Its distribution id.
    pub distro: String,
    /// Its architecture.
    pub arch: String,
    /// When its last ANNOUNCE or HELLO arrived.
    pub last_heard: Instant,
    /// When its entry was made (its first ANNOUNCE or HELLO).
    pub first_heard: Instant,
    /// Same distribution and architecture as this host: only such peers are asked for files.
    pub compatible: bool,
    /// What it holds, as far as its cache summary tells.
    pub summary: PeerSummary,
    /// How long it takes to answer a question.
    pub answers: AnswerTime,
    /// It left a question unanswered: not asked (nor waited for) again until heard from.
    pub missed: bool,
    /// Our last SUMMARY_REQUEST to it and how many are unanswered in a row.
    pub summary_asked: Option<(Instant, u8)>,
    /// When we last sent it our whole summary (answers are rate-limited per peer).
    pub summary_sent: Option<Instant>,
}

impl Peer {
    /// Whether a datagram from `from` comes from this host: one of its bound addresses.
    pub fn is_from(&self, from: SocketAddr) -> bool {
        self.bound.contains(from)
    }

    /// The small copyable handle given out in events and answers.
    pub fn peer_ref(&self) -> PeerRef {
        PeerRef {
            host_id: self.host_id,
            addr: self.addr,
        }
    }
}

/// A peer as named in events and answers: its id and its file server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerRef {
    pub host_id: u64,
    /// Source IP of its announcements + the TCP port it announced.
    pub addr: SocketAddr,
}

/// Why a peer left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// Not heard for 3 announce intervals.
    Silent,
    /// It said GOODBYE.
    Goodbye,
    /// A new host id announced from the same address and TCP port (the daemon restarted).
    Replaced,
    /// The table was full and it was the entry heard from longest ago.
    Evicted,
}

/// What an announcement did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A host not in the table was added.
    New(PeerRef),
    /// A known host was refreshed (its address or labels may have changed).
    Refreshed,
    /// A new host id from the address of an old entry: the old one was removed, the new added.
    Replaced { old: PeerRef, new: PeerRef },
    /// The table was full: its stalest entry was dropped for the new host.
    Evicted { old: PeerRef, new: PeerRef },
    /// A known host id from another address than its own in that family: dropped (a host id
    /// stays bound to the address it was first heard from, in each family, until it expires; a
    /// host that moves draws a new id).
    Moved,
    /// Already [`MAX_PER_ADDRESS`] hosts at that IP address: the new one was not added.
    Crowded,
}

/// Most hosts listed at one IP address (several daemons on one host with other ports, a NAT):
/// one sender cannot fill the table with made-up host ids.
pub const MAX_PER_ADDRESS: usize = 4;

/// The bounded table of peers, keyed by host id (iterated in host id order).
#[derive(Debug)]
pub struct PeerTable {
    peers: BTreeMap<u64, Peer>,
    max_peers: usize,
    expiry: Duration,
    my_distro: String,
    my_arch: String,
}

impl PeerTable {
    /// An empty table holding at most `max_peers`, forgetting peers silent for `expiry`, and
    /// judging compatibility against this host's distribution and architecture.
    pub fn new(max_peers: usize, expiry: Duration, my_distro: &str, my_arch: &str) -> Self {
        PeerTable {
            peers: BTreeMap::new(),
            max_peers,
            expiry,
            my_distro: my_distro.to_owned(),
            my_arch: my_arch.to_owned(),
        }
    }

    /// Record an ANNOUNCE or HELLO from `host_id`, received from `from`.
    pub fn heard(
        &mut self,
        host_id: u64,
        from: SocketAddr,
        ann: &Announcement,
        now: Instant,
    ) -> Heard {
        let addr = with_port(from, ann.tcp_port);
        let compatible = ann.distro == self.my_distro && ann.arch == self.my_arch;
        let gap = self.expiry / 2;
        if let Some(peer) = self.peers.get_mut(&host_id) {
            let young = now.saturating_duration_since(peer.first_heard) < SECOND_FAMILY_WINDOW;
            let slot = peer.bound.slot(from);
            match *slot {
                Some((bound, _)) if bound == from => {}
                // Bound elsewhere in this family: not this host.
                Some(_) => return Heard::Moved,
                // Not heard in this family yet: bound here only while the entry is young (a
                // host on both families is heard on both within its first HELLOs). Later, an
                // address of the other family is another host that copied the id: it could
                // otherwise dismiss, empty or answer for a peer heard on one family only.
                None if young => {}
                None => return Heard::Moved,
            }
            *slot = Some((from, now));
            let udp = peer.bound.preferred(gap).unwrap_or(from);
            peer.udp = udp;
            peer.addr = with_port(udp, ann.tcp_port);
            peer.last_heard = now;
            peer.compatible = compatible;
            if peer.distro != ann.distro {
                peer.distro.clone_from(&ann.distro);
            }
            if peer.arch != ann.arch {
                peer.arch.clone_from(&ann.arch);
            }
            return Heard::Refreshed;
        }
        let old = self
            .peers
            .values()
            .find(|p| {
                p.addr.port() == addr.port() && p.bound.addresses().any(|a| a.ip() == addr.ip())
            })
            .map(Peer::peer_ref);
        let mut evicted = None;
        if let Some(old) = old {
            self.peers.remove(&old.host_id);
        } else {
            if self
                .peers
                .values()
                .filter(|p| p.bound.addresses().any(|a| a.ip() == from.ip()))
                .count()
                >= MAX_PER_ADDRESS
            {
                return Heard::Crowded;
            }
            if self.peers.len() >= self.max_peers {
                // Full: the entry heard from longest ago makes room (a real new host is never
                // refused because made-up ones got in first).
                let stalest = self
                    .peers
                    .values()
                    .min_by_key(|p| p.last_heard)
                    .map(Peer::peer_ref);
                if let Some(s) = stalest {
                    self.peers.remove(&s.host_id);
                    evicted = Some(s);
                }
            }
        }
        let mut bound = Bindings::default();
        *bound.slot(from) = Some((from, now));
        let peer = Peer {
            host_id,
            addr,
            udp: from,
            bound,
            distro: ann.distro.clone(),
            arch: ann.arch.clone(),
            last_heard: now,
            first_heard: now,
            compatible,
            summary: PeerSummary::default(),
            answers: AnswerTime::default(),
            missed: false,
            summary_asked: None,
            summary_sent: None,
        };
        let new = peer.peer_ref();
        self.peers.insert(host_id, peer);
        match (old, evicted) {
            (Some(old), _) => Heard::Replaced { old, new },
            (None, Some(old)) => Heard::Evicted { old, new },
            (None, None) => Heard::New(new),
        }
    }

    /// Forget `host_id` (it said GOODBYE); returns what was removed.
    pub fn remove(&mut self, host_id: u64) -> Option<PeerRef> {
        self.peers.remove(&host_id).map(|p| p.peer_ref())
    }

    /// Forget every peer silent for the expiry time or longer, appending them to `gone`.
    pub fn expire(&mut self, now: Instant, gone: &mut Vec<PeerRef>) {
        let expiry = self.expiry;
        self.peers.retain(|_, p| {
            let keep = now.saturating_duration_since(p.last_heard) < expiry;
            if !keep {
                gone.push(p.peer_ref());
            }
            keep
        });
    }

    /// The host slept for `slept`: count it as silence of every peer, and forget those now
    /// silent for the expiry time or longer (appended to `gone`).
    pub fn age(&mut self, slept: Duration, now: Instant, gone: &mut Vec<PeerRef>) {
        let expiry = self.expiry;
        self.peers.retain(|_, p| {
            let silent = now.saturating_duration_since(p.last_heard) + slept;
            match p.last_heard.checked_sub(slept) {
                Some(earlier) if silent < expiry => {
                    p.last_heard = earlier;
                    p.bound.age(slept);
                    true
                }
                _ => {
                    gone.push(p.peer_ref());
                    false
                }
            }
        });
    }

    /// When the next peer will be forgotten if nothing is heard from it.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .map(|p| p.last_heard + self.expiry)
            .min()
    }

    pub fn get(&self, host_id: u64) -> Option<&Peer> {
        self.peers.get(&host_id)
    }

    pub fn get_mut(&mut self, host_id: u64) -> Option<&mut Peer> {
        self.peers.get_mut(&host_id)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.peers.values_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(port: u16, distro: &str, arch: &str) -> Announcement {
        Announcement {
            tcp_port: port,
            distro: distro.into(),
            arch: arch.into(),
            summary: 0,
        }
    }

    fn from(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 19432)
    }

    #[test]
    fn add_refresh_expire() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(10, Duration::from_secs(180), "arch", "x86_64");
        let a = ann(8080, "arch", "x86_64");
        let new = t.heard(1, from("10.0.0.1"), &a, t0);
        assert_eq!(
            new,
            Heard::New(PeerRef {
                host_id: 1,
                addr: "10.0.0.1:8080".parse().unwrap()
            })
        );
        assert!(t.get(1).unwrap().compatible);
        assert_eq!(t.get(1).unwrap().udp, from("10.0.0.1"));
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(t.heard(1, from("10.0.0.1"), &a, t1), Heard::Refreshed);
        assert_eq!(t.next_expiry(), Some(t1 + Duration::from_secs(180)));
        let mut gone = Vec::new();
        t.expire(t1 + Duration::from_secs(179), &mut gone);
        assert!(gone.is_empty());
        t.expire(t1 + Duration::from_secs(180), &mut gone);
        assert_eq!(gone.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn incompatible_peers_are_listed() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(10, Duration::from_secs(180), "arch", "x86_64");
        t.heard(1, from("10.0.0.1"), &ann(1, "archarm", "x86_64"), t0);
        t.heard(2, from("10.0.0.2"), &ann(1, "arch", "aarch64"), t0);
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|p| !p.compatible));
        // A peer that changes its labels is re-judged.
        t.heard(2, from("10.0.0.2"), &ann(1, "arch", "x86_64"), t0);
        assert!(t.get(2).unwrap().compatible);
        assert_eq!(t.get(2).unwrap().arch, "x86_64");
    }

    #[test]
    fn new_id_from_same_address_replaces() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(1, Duration::from_secs(180), "arch", "x86_64");
        let a = ann(8080, "arch", "x86_64");
        t.heard(1, from("10.0.0.1"), &a, t0);
        // Full table, but the replacement frees its own slot.
        match t.heard(2, from("10.0.0.1"), &a, t0) {
            Heard::Replaced { old, new } => {
                assert_eq!((old.host_id, new.host_id), (1, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(t.get(1).is_none());
        // Another port on the same IP is another daemon: it does not replace; the table being
        // full, the stalest entry makes room.
        match t.heard(3, from("10.0.0.1"), &ann(8081, "arch", "x86_64"), t0) {
            Heard::Evicted { old, new } => assert_eq!((old.host_id, new.host_id), (2, 3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_host_id_stays_bound_to_its_address() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(4, Duration::from_secs(180), "arch", "x86_64");
        let a = ann(8080, "arch", "x86_64");
        t.heard(1, from("10.0.0.1"), &a, t0);
        // Someone else announcing host 1 from another address changes nothing.
        assert_eq!(t.heard(1, from("10.0.0.9"), &a, t0), Heard::Moved);
        assert_eq!(t.get(1).unwrap().addr, "10.0.0.1:8080".parse().unwrap());
        assert_eq!(t.remove(1).map(|p| p.host_id), Some(1));
        assert_eq!(t.remove(1), None);
    }

    #[test]
    fn a_host_heard_on_both_families_is_one_entry_bound_to_one_address_per_family() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(4, Duration::from_secs(180), "arch", "x86_64");
        let a = ann(8080, "arch", "x86_64");
        let v6 = |ip: &str, scope: u32| {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.parse().unwrap(),
                19432,
                0,
                scope,
            ))
        };
        // Heard on IPv6 first: reached there.
        assert!(matches!(
            t.heard(1, v6("fe80::1", 2), &a, t0),
            Heard::New(_)
        ));
        assert_eq!(t.get(1).unwrap().addr.to_string(), "[fe80::1%2]:8080");
        // Then on IPv4: the same entry, now reached on IPv4, and both addresses are its own.
        assert_eq!(t.heard(1, from("10.0.0.1"), &a, t0), Heard::Refreshed);
        assert_eq!(t.len(), 1);
        let p = t.get(1).unwrap();
        assert_eq!(p.addr, "10.0.0.1:8080".parse().unwrap());
        assert_eq!(p.udp, from("10.0.0.1"));
        assert!(p.is_from(from("10.0.0.1")) && p.is_from(v6("fe80::1", 2)));
        assert!(
            !p.is_from(v6("fe80::1", 3)),
            "the scope is part of the address"
        );
        // Another address in either family is not this host.
        assert_eq!(t.heard(1, from("10.0.0.9"), &a, t0), Heard::Moved);
        assert_eq!(t.heard(1, v6("fe80::9", 2), &a, t0), Heard::Moved);
        // Heard on IPv6 alone for more than half the expiry: reached on IPv6.
        let t1 = t0 + Duration::from_secs(89);
        t.heard(1, v6("fe80::1", 2), &a, t1);
        assert_eq!(
            t.get(1).unwrap().udp,
            from("10.0.0.1"),
            "IPv4 is kept while recent"
        );
        let t2 = t0 + Duration::from_secs(91);
        t.heard(1, v6("fe80::1", 2), &a, t2);
        assert_eq!(t.get(1).unwrap().udp, v6("fe80::1", 2));
        // IPv4 heard again: back to it.
        t.heard(1, from("10.0.0.1"), &a, t2);
        assert_eq!(t.get(1).unwrap().udp, from("10.0.0.1"));
        // A binding silent for the expiry time does not give way to another address (a host
        // whose addresses change takes a new id).
        let t3 = t2 + Duration::from_secs(180);
        t.heard(1, v6("fe80::1", 2), &a, t3 - Duration::from_secs(1));
        assert_eq!(t.heard(1, from("10.0.0.9"), &a, t3), Heard::Moved);
        assert!(t.get(1).unwrap().is_from(from("10.0.0.1")));
        // A restart is recognised from either family's address.
        match t.heard(2, v6("fe80::1", 2), &a, t3) {
            Heard::Replaced { old, new } => assert_eq!((old.host_id, new.host_id), (1, 2)),
            other => panic!("{other:?}"),
        }
    }

    /// A host heard on IPv4 only (IPv6 off, or an older flocon): another host that copies its
    /// id cannot bind itself as that host's IPv6 address once the entry is past its first
    /// seconds, and so cannot dismiss, empty or answer for it.
    #[test]
    fn the_other_family_is_bound_only_while_the_entry_is_young() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(4, Duration::from_secs(180), "arch", "x86_64");
        let a = ann(8080, "arch", "x86_64");
        let v6 = |ip: &str| {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.parse().unwrap(),
                19432,
                0,
                2,
            ))
        };
        assert!(matches!(
            t.heard(1, from("10.0.0.5"), &a, t0),
            Heard::New(_)
        ));
        let late = t0 + SECOND_FAMILY_WINDOW;
        t.heard(1, from("10.0.0.5"), &a, late);
        assert_eq!(t.heard(1, v6("fe80::bad"), &a, late), Heard::Moved);
        assert!(!t.get(1).unwrap().is_from(v6("fe80::bad")));
        // A dual-stack host's IPv6 copy, even one delayed by duplicate address detection, is
        // bound while the entry is young.
        assert!(matches!(
            t.heard(2, from("10.0.0.6"), &a, t0),
            Heard::New(_)
        ));
        let dad = t0 + Duration::from_secs(2);
        assert_eq!(t.heard(2, v6("fe80::6"), &a, dad), Heard::Refreshed);
        assert!(t.get(2).unwrap().is_from(v6("fe80::6")));
    }

    #[test]
    fn one_address_holds_a_few_entries_and_a_full_table_evicts_the_stalest() {
        let t0 = Instant::now();
        let mut t = PeerTable::new(6, Duration::from_secs(180), "arch", "x86_64");
        for id in 0..10u64 {
            let port = 8000 + id as u16;
            let r = t.heard(id, from("10.0.0.66"), &ann(port, "arch", "x86_64"), t0);
            if (id as usize) < MAX_PER_ADDRESS {
                assert!(matches!(r, Heard::New(_)), "{r:?}");
            } else {
                assert_eq!(r, Heard::Crowded);
            }
        }
        assert_eq!(t.len(), MAX_PER_ADDRESS);
        let t1 = t0 + Duration::from_secs(1);
        t.heard(20, from("10.0.0.20"), &ann(1, "arch", "x86_64"), t1);
        t.heard(21, from("10.0.0.21"), &ann(1, "arch", "x86_64"), t1);
        // Full (6): a real new host still gets in, in place of the entry heard longest ago.
        let r = t.heard(22, from("10.0.0.22"), &ann(1, "arch", "x86_64"), t1);
        assert!(
            matches!(r, Heard::Evicted { old, .. } if old.addr.ip().to_string() == "10.0.0.66"),
            "{r:?}"
        );
        assert!(t.get(22).is_some() && t.get(20).is_some() && t.get(21).is_some());
        assert_eq!(t.len(), 6);
    }
}
