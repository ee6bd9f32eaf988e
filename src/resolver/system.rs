//! The shell of the resolver: the daemon's one helper thread, which runs the blocking
//! `getaddrinfo` (through std's `ToSocketAddrs`, so the system's nsswitch, `/etc/hosts`,
//! `resolv.conf` with its `search`/`options` lines, systemd-resolved and mDNS all apply, and
//! glibc re-reads a changed `resolv.conf` by itself), fed through a bounded queue and answering
//! through a second one and a `mio::Waker`.
//!
//! The loop never blocks on it: requests are `try_send`, answers `try_recv` after the waker's
//! event. The thread owns no socket of the loop's and knows nothing of the daemon; when the
//! daemon drops its [`SystemResolver`] the queue closes and the thread ends after the lookup it
//! is in (it is not joined, so a hung lookup never delays a stop).

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread;
use std::time::Instant;

use log::{debug, warn};

use super::{Addresses, Lookup, LookupId, MAX_IN_FLIGHT, ResolveError, Resolver};

/// A name and what `getaddrinfo` said of it.
type Answer = (String, Result<Vec<IpAddr>, ResolveError>);

/// The resolver core driven by the helper thread.
#[derive(Debug)]
pub struct SystemResolver {
    core: Resolver,
    requests: SyncSender<String>,
    answers: Receiver<Answer>,
}

impl SystemResolver {
    /// Starts the helper thread; `waker` wakes the loop when an answer is ready.
    pub fn start(waker: Arc<mio::Waker>) -> io::Result<SystemResolver> {
        Self::start_with(waker, resolve)
    }

    /// Like [`SystemResolver::start`], with another blocking function in place of
    /// `getaddrinfo` (tests).
    pub fn start_with(
        waker: Arc<mio::Waker>,
        resolve: fn(&str) -> Result<Vec<IpAddr>, ResolveError>,
    ) -> io::Result<SystemResolver> {
        let (requests, queue) = mpsc::sync_channel::<String>(MAX_IN_FLIGHT);
        let (reply, answers) = mpsc::sync_channel::<Answer>(MAX_IN_FLIGHT);
        thread::Builder::new()
            .name("flocon-resolver".into())
            .spawn(move || {
                for name in queue {
                    let answer = resolve(&name);
                    if reply.send((name, answer)).is_err() {
                        break;
                    }
                    if let Err(e) = waker.wake() {
                        warn!("resolver: cannot wake the event loop: {e}");
                    }
                }
            })?;
        Ok(SystemResolver {
            core: Resolver::new(),
            requests,
            answers,
        })
    }

    /// The addresses of `name` now, or a [`LookupId`] whose event follows a wake-up.
    pub fn lookup(&mut self, name: &str, now: Instant) -> Lookup {
        let lookup = self.core.lookup(name, now);
        self.send_requests(now);
        lookup
    }

    pub fn cancel(&mut self, id: LookupId) {
        self.core.cancel(id);
    }

    /// Every address of `name` failed: ask the system again next time.
    pub fn forget(&mut self, name: &str) {
        self.core.forget(name);
    }

    /// SIGUSR2: forget every cached answer.
    pub fn forget_all(&mut self) {
        self.core.forget_all();
    }

    /// After the waker's event: takes the thread's answers.
    pub fn handle_wake(&mut self, now: Instant) {
        loop {
            match self.answers.try_recv() {
                Ok((name, answer)) => self.core.handle_answer(&name, answer, now),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The thread ended: whatever waits on it fails.
                    self.core.fail_in_flight(ResolveError::Unavailable, now);
                    break;
                }
            }
        }
        self.send_requests(now);
    }

    /// The next finished lookup.
    pub fn poll_event(&mut self) -> Option<(LookupId, Result<Addresses, ResolveError>)> {
        self.core.poll_event()
    }

    /// Names the thread was asked and has not answered (it may be in `getaddrinfo`).
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    fn send_requests(&mut self, now: Instant) {
        while let Some(name) = self.core.poll_request() {
            match self.requests.try_send(name) {
                Ok(()) => {}
                Err(TrySendError::Full(name)) => {
                    self.core.handle_unsent(name, false, now);
                    break;
                }
                Err(TrySendError::Disconnected(name)) => {
                    warn!("resolver: the resolver thread is gone; {name} cannot be resolved");
                    self.core.handle_unsent(name, true, now);
                }
            }
        }
    }
}

/// `getaddrinfo(name)` for a TCP connection, every address in the order it gave them.
fn resolve(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    match (name, 0u16).to_socket_addrs() {
        Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
        Err(e) => {
            debug!("resolver: {name}: {e}");
            Err(ResolveError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use mio::{Events, Poll, Token};

    const WAKE: Token = Token(7);

    fn fake(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        match name {
            "slow.example" => {
                thread::sleep(Duration::from_millis(300));
                Ok(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))])
            }
            "one.example" => Ok(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]),
            _ => Err(ResolveError::NotFound),
        }
    }

    fn wait_event(
        poll: &mut Poll,
        r: &mut SystemResolver,
    ) -> (LookupId, Result<Addresses, ResolveError>) {
        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = r.poll_event() {
                return e;
            }
            assert!(Instant::now() < deadline, "no answer within 5 s");
            poll.poll(&mut events, Some(Duration::from_secs(1)))
                .expect("poll");
            if events.iter().any(|e| e.token() == WAKE) {
                r.handle_wake(Instant::now());
            }
        }
    }

    #[test]
    fn answers_arrive_through_the_waker_and_the_loop_never_waits() {
        let mut poll = Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE).expect("waker"));
        let mut r = SystemResolver::start_with(waker, fake).expect("start");
        let t = Instant::now();
        let Lookup::Pending(slow) = r.lookup("slow.example", Instant::now()) else {
            panic!("slow.example pending")
        };
        let Lookup::Pending(nx) = r.lookup("nx.example", Instant::now()) else {
            panic!("nx.example pending")
        };
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "lookup never blocks"
        );
        let (id, answer) = wait_event(&mut poll, &mut r);
        assert_eq!(id, slow);
        assert_eq!(answer.expect("addresses").len(), 1);
        let (id, answer) = wait_event(&mut poll, &mut r);
        assert_eq!((id, answer), (nx, Err(ResolveError::NotFound)));
        assert!(matches!(
            r.lookup("slow.example", Instant::now()),
            Lookup::Ready(Ok(_))
        ));
    }

    #[test]
    fn the_real_getaddrinfo_resolves_localhost_and_literals() {
        // /etc/hosts: no network traffic.
        let addrs = resolve("localhost").expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
        assert_eq!(
            resolve("127.0.0.1"),
            Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
        );
    }
}
