//! Static peers (`Peer = HOST[:PORT]`, `--peer`): which addresses the configured names stand
//! for now, and when each name is looked up again.
//!
//! Pure: it never calls the resolver itself. The event loop asks it which names are due
//! ([`StaticPeers::due`]), looks each up with the daemon's resolver (so names resolve like
//! mirror names: `getaddrinfo` on the helper thread, cached for a minute) and hands back the
//! outcome ([`StaticPeers::looked_up`], [`StaticPeers::handle_answer`]); when the addresses
//! change it gives them to the discovery core and the socket ([`StaticPeers::addresses`]).
//! A name is looked up again every [`REFRESH`], [`RETRY`] after a failure, and at once after
//! SIGUSR2 or a network change ([`StaticPeers::refresh`]); the addresses it had are kept while
//! a lookup fails.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::StaticPeer;
use crate::resolver::{Addresses, Lookup, LookupId, ResolveError};

/// A resolved name is looked up again this often (the resolver's cache lasts as long).
pub const REFRESH: Duration = Duration::from_secs(60);
/// A name that did not resolve is tried again this soon.
pub const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Entry {
    peer: StaticPeer,
    port: u16,
    /// At most one address of each family: the first `getaddrinfo` gave.
    addresses: Vec<SocketAddr>,
    lookup: Option<LookupId>,
    next: Instant,
    /// The last failure, for the status page.
    error: Option<ResolveError>,
}

/// The configured static peers and their addresses; see the module documentation.
#[derive(Debug, Default)]
pub struct StaticPeers {
    entries: Vec<Entry>,
}

impl StaticPeers {
    /// The peers as configured; a peer without a port uses `default_port`. All are due `now`.
    pub fn new(peers: &[StaticPeer], default_port: u16, now: Instant) -> StaticPeers {
        StaticPeers {
            entries: peers
                .iter()
                .map(|p| Entry {
                    peer: p.clone(),
                    port: p.port.unwrap_or(default_port),
                    addresses: Vec::new(),
                    lookup: None,
                    next: now,
                    error: None,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names whose lookup is due (none is pending for them): look each up and call
    /// [`Self::looked_up`] with its index.
    pub fn due(&self, now: Instant) -> Vec<(usize, String)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.lookup.is_none() && now >= e.next)
            .map(|(i, e)| (i, e.peer.host.clone()))
            .collect()
    }

    /// Look every name up again now (SIGUSR2, a network change: a name may stand for another
    /// address on the new network).
    pub fn refresh(&mut self, now: Instant) {
        for e in &mut self.entries {
            e.next = e.next.min(now);
        }
    }

    /// What the resolver said to the lookup of entry `index`. True when the addresses changed.
    pub fn looked_up(&mut self, index: usize, lookup: Lookup, now: Instant) -> bool {
        match lookup {
            Lookup::Ready(answer) => self.answered(index, answer, now),
            Lookup::Pending(id) => {
                if let Some(e) = self.entries.get_mut(index) {
                    e.lookup = Some(id);
                }
                false
            }
        }
    }

    /// A resolver answer: `None` when `id` is not one of ours, else whether the addresses
    /// changed.
    pub fn handle_answer(
        &mut self,
        id: LookupId,
        answer: Result<Addresses, ResolveError>,
        now: Instant,
    ) -> Option<bool> {
        let index = self.entries.iter().position(|e| e.lookup == Some(id))?;
        Some(self.answered(index, answer, now))
    }

    fn answered(
        &mut self,
        index: usize,
        answer: Result<Addresses, ResolveError>,
        now: Instant,
    ) -> bool {
        let Some(e) = self.entries.get_mut(index) else {
            return false;
        };
        e.lookup = None;
        match answer {
            Ok(ips) => {
                let mut addresses: Vec<SocketAddr> = Vec::new();
                for ip in ips.iter() {
                    if !addresses.iter().any(|a| a.is_ipv4() == ip.is_ipv4()) {
                        addresses.push(SocketAddr::new(*ip, e.port));
                    }
                }
                e.next = now + REFRESH;
                e.error = None;
                let changed = addresses != e.addresses;
                if changed {
                    log::info!(
                        "static peer {}: {}",
                        e.peer,
                        addresses
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                e.addresses = addresses;
                changed
            }
            Err(why) => {
                if e.error != Some(why) {
                    log::warn!(
                        "static peer {}: cannot resolve ({why}); trying again every {} s",
                        e.peer,
                        RETRY.as_secs()
                    );
                }
                e.error = Some(why);
                e.next = now + RETRY;
                false
            }
        }
    }

    /// When a lookup is due next (none while one is pending for every name).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.lookup.is_none())
            .map(|e| e.next)
            .min()
    }

    /// Every address of every static peer now.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.entries
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .collect()
    }

    /// The IP addresses of [`Self::addresses`]: the sources let in from off the link.
    pub fn sources(&self) -> Vec<IpAddr> {
        self.addresses().iter().map(SocketAddr::ip).collect()
    }

    /// One line per configured peer: as given, its addresses or why it has none.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| {
                let addresses: Vec<String> = e.addresses.iter().map(|a| a.to_string()).collect();
                match (&e.error, addresses.is_empty()) {
                    (Some(why), true) => format!("static peer {}: unresolved ({why})", e.peer),
                    (None, true) => format!("static peer {}: resolving", e.peer),
                    _ => format!("static peer {}: {}", e.peer, addresses.join(", ")),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer(host: &str, port: Option<u16>) -> StaticPeer {
        StaticPeer {
            host: host.into(),
            port,
        }
    }

    fn ips(list: &[&str]) -> Addresses {
        let v: Vec<IpAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
        Arc::from(v)
    }

    #[test]
    fn names_resolve_refresh_and_keep_addresses_on_failure() {
        let t0 = Instant::now();
        let mut s = StaticPeers::new(&[peer("nas", None), peer("10.2.0.5", Some(7))], 19432, t0);
        assert_eq!(s.poll_timeout(), Some(t0));
        let due = s.due(t0);
        assert_eq!(due, vec![(0, "nas".into()), (1, "10.2.0.5".into())]);
        assert!(!s.looked_up(0, Lookup::Pending(LookupId(3)), t0));
        assert!(s.looked_up(1, Lookup::Ready(Ok(ips(&["10.2.0.5"]))), t0));
        assert_eq!(s.due(t0), vec![], "nas is pending, 10.2.0.5 fresh");
        assert_eq!(
            s.handle_answer(LookupId(99), Ok(ips(&["1.1.1.1"])), t0),
            None
        );
        // Two addresses of each family: the first of each is kept.
        let answer = ips(&["fd00::1", "10.1.0.9", "fd00::2", "10.1.0.10"]);
        assert_eq!(s.handle_answer(LookupId(3), Ok(answer), t0), Some(true));
        let want: Vec<SocketAddr> = vec![
            "[fd00::1]:19432".parse().unwrap(),
            "10.1.0.9:19432".parse().unwrap(),
            "10.2.0.5:7".parse().unwrap(),
        ];
        assert_eq!(s.addresses(), want);
        assert_eq!(s.sources().len(), 3);
        assert_eq!(s.poll_timeout(), Some(t0 + REFRESH));
        // A minute later both are due; a failure keeps the addresses and retries sooner.
        let t1 = t0 + REFRESH;
        assert_eq!(s.due(t1).len(), 2);
        assert!(!s.looked_up(0, Lookup::Ready(Err(ResolveError::NotFound)), t1));
        assert_eq!(s.addresses(), want);
        assert!(!s.looked_up(1, Lookup::Ready(Ok(ips(&["10.2.0.5"]))), t1));
        assert_eq!(s.poll_timeout(), Some(t1 + RETRY));
        assert!(s.describe()[0].starts_with("static peer nas: [fd00::1]:19432"));
        s.refresh(t1);
        assert_eq!(s.due(t1).len(), 2, "a network change: both looked up again");
        assert_eq!(s.describe()[1], "static peer 10.2.0.5:7: 10.2.0.5:7");
    }
}
