//! What the relay's transfers reuse: kept-alive source connections that no
//! transfer holds (out of the poll set), and the transfer buffers.
//!
//! Two owners, two types: the event loop owns the idle connections (a
//! [`Pool`], since it owns every socket), the relay the [`Buffers`]. Their
//! bounds: at most [`MAX_IDLE`] idle connections, each for at most
//! [`IDLE_REUSE`], closed on a timer ([`Pool::poll_timeout`],
//! [`Pool::handle_timeout`]) rather than when a later request happens to look;
//! [`LARGE_BUFFERS`] large buffers at a time and a few spares of each size.
//! It does not register sockets (the event loop deregisters a connection
//! before it parks it here) and does not read them: whether a parked
//! connection is still open is the caller's test, passed in.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The buffer each transfer streams through.
pub const BUFFER: usize = 64 * 1024;
/// The buffer of the first [`LARGE_BUFFERS`] transfers at a time: fast
/// transfers need more than [`BUFFER`] in flight, and this many of them keep
/// memory bounded whatever the number of slow ones.
pub const LARGE_BUFFER: usize = 256 * 1024;
pub const LARGE_BUFFERS: usize = 16;
/// Transfer buffers of each size kept for reuse between transfers.
const SPARE_BUFFERS: usize = 8;
const SPARE_LARGE_BUFFERS: usize = 2;
/// Kept-alive source connections: how many, and for how long.
pub const MAX_IDLE: usize = 32;
pub const IDLE_REUSE: Duration = Duration::from_secs(10);

/// A kept-alive connection to a peer or a mirror, waiting for a request.
#[derive(Debug)]
struct Idle<S> {
    addr: SocketAddr,
    stream: S,
    since: Instant,
}

/// Idle source connections (of stream type `S`).
#[derive(Debug)]
pub struct Pool<S> {
    /// Oldest first (parked in time order).
    idle: VecDeque<Idle<S>>,
}

impl<S> Default for Pool<S> {
    fn default() -> Self {
        Pool {
            idle: VecDeque::new(),
        }
    }
}

/// The transfer buffers: a few spares of each size, and how many large ones
/// are lent out.
#[derive(Debug, Default)]
pub struct Buffers {
    spare_buffers: Vec<Vec<u8>>,
    spare_large: Vec<Vec<u8>>,
    /// Large buffers lent out now.
    large_in_use: usize,
}

impl Buffers {
    /// A transfer buffer: a spare one, else a new one.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        if self.large_in_use < LARGE_BUFFERS {
            self.large_in_use += 1;
            return self
                .spare_large
                .pop()
                .unwrap_or_else(|| vec![0; LARGE_BUFFER]);
        }
        self.spare_buffers.pop().unwrap_or_else(|| vec![0; BUFFER])
    }

    /// A buffer from [`Self::take_buffer`] comes back.
    pub fn give_buffer(&mut self, mut buf: Vec<u8>) {
        if buf.len() >= LARGE_BUFFER {
            self.large_in_use = self.large_in_use.saturating_sub(1);
            if self.spare_large.len() < SPARE_LARGE_BUFFERS {
                buf.truncate(LARGE_BUFFER);
                self.spare_large.push(buf);
            }
        } else if buf.len() >= BUFFER && self.spare_buffers.len() < SPARE_BUFFERS {
            buf.truncate(BUFFER);
            self.spare_buffers.push(buf);
        }
    }
}

impl<S> Pool<S> {
    /// Parks a connection (already out of the poll set); the oldest goes
    /// (and closes) when the pool is full.
    pub fn park(&mut self, addr: SocketAddr, stream: S, now: Instant) {
        self.handle_timeout(now);
        if self.idle.len() >= MAX_IDLE {
            self.idle.pop_front();
        }
        self.idle.push_back(Idle {
            addr,
            stream,
            since: now,
        });
    }

    /// A parked connection to `addr` that `is_open` accepts, newest first;
    /// those it refuses are closed.
    pub fn take(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        is_open: impl Fn(&S) -> bool,
    ) -> Option<S> {
        self.handle_timeout(now);
        while let Some(at) = self.idle.iter().rposition(|i| i.addr == addr) {
            let idle = self.idle.remove(at)?;
            if is_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
        None
    }

    /// When the oldest idle connection expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.idle.front().map(|i| i.since + IDLE_REUSE)
    }

    /// Closes the idle connections that have expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self
            .idle
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= IDLE_REUSE)
        {
            self.idle.pop_front();
        }
    }

    /// Idle connections parked now.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn idle_connections_expire_on_a_timer() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        assert_eq!(pool.poll_timeout(), None);
        pool.park(addr(1), "a", t0);
        pool.park(addr(2), "b", t0 + Duration::from_secs(3));
        assert_eq!(pool.poll_timeout(), Some(t0 + IDLE_REUSE));
        pool.handle_timeout(t0 + IDLE_REUSE - Duration::from_millis(1));
        assert_eq!(pool.idle(), 2);
        pool.handle_timeout(t0 + IDLE_REUSE);
        assert_eq!(pool.idle(), 1, "closed without anyone asking for it");
        assert_eq!(
            pool.poll_timeout(),
            Some(t0 + Duration::from_secs(3) + IDLE_REUSE)
        );
        pool.handle_timeout(t0 + Duration::from_secs(13));
        assert_eq!(pool.idle(), 0);
        assert_eq!(pool.poll_timeout(), None);
    }

    #[test]
    fn the_newest_open_connection_to_the_address_is_taken() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.park(addr(1), "old", t0);
        pool.park(addr(2), "other", t0);
        pool.park(addr(1), "closed", t0);
        let taken = pool.take(addr(1), t0, |s| *s != "closed");
        assert_eq!(taken, Some("old"));
        assert_eq!(pool.idle(), 1, "the closed one was dropped");
        assert_eq!(pool.take(addr(1), t0, |_| true), None);
        assert_eq!(
            pool.take(addr(2), t0 + IDLE_REUSE, |_| true),
            None,
            "expired"
        );
    }

    #[test]
    fn the_pool_is_bounded() {
        let t0 = Instant::now();
        let mut pool = Pool::default();
        for i in 0..MAX_IDLE + 5 {
            pool.park(addr(i as u16), i, t0);
        }
        assert_eq!(pool.idle(), MAX_IDLE);
        assert_eq!(pool.take(addr(0), t0, |_| true), None, "the oldest went");
        assert_eq!(pool.take(addr(5), t0, |_| true), Some(5));
    }

    #[test]
    fn buffers_are_large_for_the_first_transfers_and_reused() {
        let mut pool = Buffers::default();
        let large: Vec<_> = (0..LARGE_BUFFERS).map(|_| pool.take_buffer()).collect();
        assert!(large.iter().all(|b| b.len() == LARGE_BUFFER));
        let small = pool.take_buffer();
        assert_eq!(small.len(), BUFFER);
        for b in large {
            pool.give_buffer(b);
        }
        pool.give_buffer(small);
        assert_eq!(pool.spare_large.len(), SPARE_LARGE_BUFFERS);
        assert_eq!(pool.spare_buffers.len(), 1);
        assert_eq!(pool.large_in_use, 0);
        assert_eq!(pool.take_buffer().len(), LARGE_BUFFER);
    }
}
