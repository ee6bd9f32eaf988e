//! Names of upstream mirrors, resolved the way pacman resolves them: by the system resolver
//! (`getaddrinfo`, so nsswitch, `/etc/hosts`, systemd-resolved, mDNS, `search` domains and
//! IPv6 all behave as for pacman's libcurl).
//!
//! `getaddrinfo` has no non-blocking form, so it runs on the one helper thread of the daemon
//! (`system.rs`, the shell). This file is the pure core around it: which names are cached
//! (every address, in the order `getaddrinfo` gave them, for [`CACHE_TTL`]; a failure for
//! [`FAILURE_TTL`]), which lookups wait on which name, which names go to the thread (one
//! request per name however many wait, at most [`MAX_IN_FLIGHT`] names at once), and the
//! answer each waiting lookup gets. It does no I/O and reads no clock: `lookup`/`cancel`/
//! `forget`/`handle_answer` in, `poll_request`/`poll_event` out.
//!
//! It does not own the thread, the channels or the waker (`system.rs`), nor the deadline of a
//! lookup that never ends: the relay gives up on a source after its own deadline and cancels.

mod system;

pub use system::SystemResolver;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;

use crate::rate_limit::RateLimit;

/// How long a name's addresses are used before it is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a failed name is answered "cannot resolve" without asking again.
pub const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Names at most cached (the oldest goes first).
pub const MAX_CACHED_NAMES: usize = 64;
/// Names at most waiting for, or in, `getaddrinfo`: a lookup of another name past this is
/// answered "cannot resolve" at once, with a warning.
pub const MAX_IN_FLIGHT: usize = 8;
/// Lookups at most waiting on names.
pub const MAX_WAITING: usize = 4096;
/// Addresses kept of one answer.
pub const MAX_ADDRESSES: usize = 16;
/// The longest host name (RFC 1035 text form).
pub const MAX_NAME: usize = 253;

/// Every address of a name, in the order `getaddrinfo` gave them (RFC 6724's order).
pub type Addresses = Arc<[IpAddr]>;

/// Names one pending `lookup`; its event carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u32);

/// What `lookup` gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Known now: the addresses, or the reason there are none. No event follows.
    Ready(Result<Addresses, ResolveError>),
    /// Asked: exactly one `poll_event` with this id follows, unless cancelled.
    Pending(LookupId),
}

/// Why a name has no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// Not a host name (empty, too long, a character no host name has).
    BadName,
    /// The system resolver found no address (unknown name, no network, ...).
    NotFound,
    /// Too many other names are being resolved right now.
    Busy,
    /// The resolver thread is gone.
    Unavailable,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolveError::BadName => "not a host name",
            ResolveError::NotFound => "the system resolver found no address",
            ResolveError::Busy => "too many names being resolved",
            ResolveError::Unavailable => "the resolver thread is gone",
        })
    }
}

#[derive(Debug, Clone)]
struct Cached {
    answer: Result<Addresses, ResolveError>,
    expires: Instant,
}

/// The resolver core; see the module documentation.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: HashMap<String, Cached>,
    /// Names asked of the thread (or about to be), with the lookups that wait on each.
    in_flight: HashMap<String, Vec<LookupId>>,
    /// Names to hand to the thread, oldest first.
    requests: VecDeque<String>,
    /// Pending lookup -> the name it waits on.
    waiting: HashMap<LookupId, String>,
    events: VecDeque<(LookupId, Result<Addresses, ResolveError>)>,
    next_id: u32,
    busy: RateLimit,
}

/// The name as the cache knows it: ASCII lower case, no trailing dot; `None` when it is not a
/// host name at all.
fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| name.to_ascii_lowercase())
}

/// An address literal (`192.0.2.1`, `::1`, `[::1]`) needs no resolver.
fn literal(name: &str) -> Option<IpAddr> {
    let inner = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    inner.parse().ok()
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// The addresses of `name` now, or a [`LookupId`] whose event follows.
    pub fn lookup(&mut self, name: &str, now: Instant) -> Lookup {
        if let Some(ip) = literal(name) {
            return Lookup::Ready(Ok(Arc::from([ip])));
        }
        let Some(key) = normalize(name) else {
            return Lookup::Ready(Err(ResolveError::BadName));
        };
        match self.cache.get(&key) {
            Some(c) if c.expires > now => return Lookup::Ready(c.answer.clone()),
            Some(_) => {
                self.cache.remove(&key);
            }
            None => {}
        }
        if self.waiting.len() >= MAX_WAITING
            || (!self.in_flight.contains_key(&key) && self.in_flight.len() >= MAX_IN_FLIGHT)
        {
            if let Some(held) = self.busy.check(now) {
                warn!(
                    "resolver: {} names are being resolved already; {key} fails for now ({held} more held back)",
                    self.in_flight.len()
                );
            }
            return Lookup::Ready(Err(ResolveError::Busy));
        }
        let id = LookupId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let waiters = self.in_flight.entry(key.clone()).or_insert_with(|| {
            self.requests.push_back(key.clone());
            Vec::new()
        });
        waiters.push(id);
        self.waiting.insert(id, key);
        Lookup::Pending(id)
    }

    /// The lookup is no longer wanted: no event will come for it. Its name is still resolved
    /// (and cached) if it was asked already.
    pub fn cancel(&mut self, id: LookupId) {
        if let Some(key) = self.waiting.remove(&id) {
            if let Some(waiters) = self.in_flight.get_mut(&key) {
                waiters.retain(|w| *w != id);
            }
        }
    }

    /// Forget what the cache holds for `name` (every address of it failed): the next lookup
    /// asks the system resolver again.
    pub fn forget(&mut self, name: &str) {
        if let Some(key) = normalize(name) {
            self.cache.remove(&key);
        }
    }

    /// Forget every cached answer (SIGUSR2: the network may have changed).
    pub fn forget_all(&mut self) {
        self.cache.clear();
    }

    /// The next name to hand to the resolver thread.
    pub fn poll_request(&mut self) -> Option<String> {
        self.requests.pop_front()
    }

    /// A name the thread could not take (its queue was full, or it is gone): asked again by
    /// the next `poll_request`, or, when the thread is gone, failed for every lookup on it.
    pub fn handle_unsent(&mut self, name: String, thread_gone: bool, now: Instant) {
        if thread_gone {
            self.handle_answer(&name, Err(ResolveError::Unavailable), now);
        } else {
            self.requests.push_front(name);
        }
    }

    /// The thread's answer for `name`: every waiting lookup gets its event, and the answer
    /// is cached.
    pub fn handle_answer(
        &mut self,
        name: &str,
        answer: Result<Vec<IpAddr>, ResolveError>,
        now: Instant,
    ) {
        let Some(key) = normalize(name) else { return };
        let answer = answer.and_then(|mut addrs| {
            let mut seen = Vec::with_capacity(addrs.len().min(MAX_ADDRESSES));
            addrs.retain(|a| {
                let new = !seen.contains(a) && seen.len() < MAX_ADDRESSES;
                if new {
                    seen.push(*a);
                }
                new
            });
            if addrs.is_empty() {
                Err(ResolveError::NotFound)
            } else {
                Ok(Addresses::from(addrs))
            }
        });
        let ttl = if answer.is_ok() {
            CACHE_TTL
        } else {
            FAILURE_TTL
        };
        if self.cache.len() >= MAX_CACHED_NAMES && !self.cache.contains_key(&key) {
            if let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(k, _)| k.clone())
            {
                self.cache.remove(&oldest);
            }
        }
        if answer != Err(ResolveError::Unavailable) {
            self.cache.insert(
                key.clone(),
                Cached {
                    answer: answer.clone(),
                    expires: now + ttl,
                },
            );
        }
        for id in self.in_flight.remove(&key).unwrap_or_default() {
            self.waiting.remove(&id);
            self.events.push_back((id, answer.clone()));
        }
    }

    /// Every name asked and not answered fails with `error` (the thread is gone).
    pub fn fail_in_flight(&mut self, error: ResolveError, now: Instant) {
        let names: Vec<String> = self.in_flight.keys().cloned().collect();
        self.requests.clear();
        for name in names {
            self.handle_answer(&name, Err(error), now);
        }
    }

    /// The next finished lookup.
    pub fn poll_event(&mut self) -> Option<(LookupId, Result<Addresses, ResolveError>)> {
        self.events.pop_front()
    }

    /// Names asked of the thread and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, d))
    }

    fn v6(d: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d))
    }

    fn pending(r: &mut Resolver, name: &str, now: Instant) -> LookupId {
        match r.lookup(name, now) {
            Lookup::Pending(id) => id,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn literals_need_no_thread() {
        let mut r = Resolver::new();
        let now = Instant::now();
        for (name, ip) in [
            ("192.0.2.7", v4(7)),
            ("[2001:db8::9]", v6(9)),
            ("2001:db8::9", v6(9)),
        ] {
            assert_eq!(r.lookup(name, now), Lookup::Ready(Ok(Arc::from([ip]))));
        }
        assert_eq!(r.poll_request(), None);
    }

    #[test]
    fn bad_names_fail_at_once() {
        let mut r = Resolver::new();
        let now = Instant::now();
        let long = "a".repeat(MAX_NAME + 1);
        for name in ["", ".", "a b", "ex\0ample", "-x.org", "mirror/x", &long] {
            assert_eq!(
                r.lookup(name, now),
                Lookup::Ready(Err(ResolveError::BadName)),
                "{name:?}"
            );
        }
        assert_eq!(r.poll_request(), None);
    }

    #[test]
    fn one_request_per_name_and_every_waiter_answered_with_every_address_in_order() {
        let mut r = Resolver::new();
        let now = Instant::now();
        let a = pending(&mut r, "Mirror.Example.", now);
        let b = pending(&mut r, "mirror.example", now);
        assert_eq!(r.poll_request().as_deref(), Some("mirror.example"));
        assert_eq!(r.poll_request(), None, "one request for both lookups");
        r.handle_answer("mirror.example", Ok(vec![v6(1), v4(1), v6(1), v4(2)]), now);
        let want: Addresses = Arc::from([v6(1), v4(1), v4(2)]);
        assert_eq!(r.poll_event(), Some((a, Ok(want.clone()))));
        assert_eq!(r.poll_event(), Some((b, Ok(want.clone()))));
        assert_eq!(r.poll_event(), None);
        // Cached: no request, the same order.
        assert_eq!(r.lookup("MIRROR.example", now), Lookup::Ready(Ok(want)));
        assert_eq!(r.poll_request(), None);
    }

    #[test]
    fn answers_expire_and_failures_expire_sooner() {
        let mut r = Resolver::new();
        let t0 = Instant::now();
        pending(&mut r, "ok.example", t0);
        pending(&mut r, "nx.example", t0);
        r.handle_answer("ok.example", Ok(vec![v4(1)]), t0);
        r.handle_answer("nx.example", Err(ResolveError::NotFound), t0);
        while r.poll_request().is_some() {}
        while r.poll_event().is_some() {}
        let soon = t0 + FAILURE_TTL - Duration::from_millis(1);
        assert!(matches!(
            r.lookup("nx.example", soon),
            Lookup::Ready(Err(_))
        ));
        assert!(matches!(
            r.lookup("nx.example", t0 + FAILURE_TTL),
            Lookup::Pending(_)
        ));
        assert!(matches!(
            r.lookup("ok.example", t0 + FAILURE_TTL),
            Lookup::Ready(Ok(_))
        ));
        assert!(matches!(
            r.lookup("ok.example", t0 + CACHE_TTL),
            Lookup::Pending(_)
        ));
    }

    #[test]
    fn an_empty_answer_is_not_found() {
        let mut r = Resolver::new();
        let now = Instant::now();
        let id = pending(&mut r, "empty.example", now);
        r.handle_answer("empty.example", Ok(vec![]), now);
        assert_eq!(r.poll_event(), Some((id, Err(ResolveError::NotFound))));
    }

    #[test]
    fn forget_makes_the_next_lookup_ask_again() {
        let mut r = Resolver::new();
        let now = Instant::now();
        pending(&mut r, "m.example", now);
        r.handle_answer("m.example", Ok(vec![v4(3)]), now);
        r.poll_request();
        assert!(matches!(r.lookup("m.example", now), Lookup::Ready(Ok(_))));
        r.forget("M.example.");
        pending(&mut r, "m.example", now);
        assert_eq!(r.poll_request().as_deref(), Some("m.example"));
        r.handle_answer("m.example", Ok(vec![v4(3)]), now);
        r.forget_all();
        pending(&mut r, "m.example", now);
    }

    #[test]
    fn a_cancelled_lookup_gets_no_event_but_the_answer_is_cached() {
        let mut r = Resolver::new();
        let now = Instant::now();
        let a = pending(&mut r, "c.example", now);
        let b = pending(&mut r, "c.example", now);
        r.cancel(a);
        r.handle_answer("c.example", Ok(vec![v4(4)]), now);
        assert_eq!(r.poll_event().map(|e| e.0), Some(b));
        assert_eq!(r.poll_event(), None);
        r.cancel(b); // after its event: nothing happens
        assert!(matches!(r.lookup("c.example", now), Lookup::Ready(Ok(_))));
    }

    #[test]
    fn too_many_names_at_once_fail_with_busy_until_one_is_answered() {
        let mut r = Resolver::new();
        let now = Instant::now();
        for i in 0..MAX_IN_FLIGHT {
            pending(&mut r, &format!("n{i}.example"), now);
        }
        assert_eq!(
            r.lookup("one-more.example", now),
            Lookup::Ready(Err(ResolveError::Busy))
        );
        // Another lookup of a name in flight joins it.
        pending(&mut r, "n0.example", now);
        r.handle_answer("n0.example", Ok(vec![v4(5)]), now);
        pending(&mut r, "one-more.example", now);
    }

    #[test]
    fn an_unsent_name_is_asked_again_or_failed_when_the_thread_is_gone() {
        let mut r = Resolver::new();
        let now = Instant::now();
        let a = pending(&mut r, "q.example", now);
        let name = r.poll_request().expect("request");
        r.handle_unsent(name, false, now);
        let name = r.poll_request().expect("asked again");
        r.handle_unsent(name, true, now);
        assert_eq!(r.poll_event(), Some((a, Err(ResolveError::Unavailable))));
        // Not cached: a new thread (or a retry) may do better.
        assert!(matches!(r.lookup("q.example", now), Lookup::Pending(_)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut r = Resolver::new();
        let t0 = Instant::now();
        for i in 0..MAX_CACHED_NAMES + 10 {
            let name = format!("c{i}.example");
            let now = t0 + Duration::from_millis(i as u64);
            pending(&mut r, &name, now);
            r.handle_answer(&name, Ok(vec![v4(1)]), now);
        }
        assert_eq!(r.cache.len(), MAX_CACHED_NAMES);
        assert!(!r.cache.contains_key("c0.example"), "the oldest went first");
    }

    #[test]
    fn many_addresses_are_capped() {
        let mut r = Resolver::new();
        let now = Instant::now();
        let id = pending(&mut r, "big.example", now);
        let many: Vec<IpAddr> = (0..100).map(|i| v6(i + 1)).collect();
        r.handle_answer("big.example", Ok(many), now);
        let Some((got, Ok(addrs))) = r.poll_event() else {
            panic!("no addresses")
        };
        assert_eq!((got, addrs.len()), (id, MAX_ADDRESSES));
    }
}
