//! The HTTP/1.1 server side of an accepted connection, shared by the peer
//! file server (`serve`) and the pacman-facing relay (`relay`), owned by
//! neither.
//!
//! Owns what every answer on such a connection has in common: reading
//! request heads (through [`RequestReader`]), the head and idle timeouts (a
//! head begun and not finished in [`HEAD_TIMEOUT`] gets 408; a kept-alive
//! connection idle for [`IDLE_TIMEOUT`] closes), the keep-alive rule (at most
//! [`MAX_REQUESTS`], never while stopping or after a request with a body),
//! the queued response bytes and writing them, error pages, and the end of a
//! response: the next request, or a lingering close ([`LINGER`]) that drains
//! what the client still sends so that our close does not reset the answer.
//! It does not decide what to answer, stream bodies, or register sockets.

use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::http::request::RequestHead;
use crate::http::response::{self, Status};
use crate::inbound::{Drain, HeadStep, RequestReader, drain};
use crate::net::{self, Io};

/// From the first byte of a request head to its end (then 408).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no request in progress.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long leftovers are drained after our write side is shut.
pub const LINGER: Duration = Duration::from_secs(2);
/// Requests on one connection before it is closed.
pub const MAX_REQUESTS: u32 = 1000;

/// What a passed head deadline comes to ([`ServerConn::head_expired`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadExpiry {
    /// A head was begun and not finished: a 408 is queued, then close.
    RequestTimeout,
    /// Idle with no request begun: close.
    Close,
}

/// What writing the queued bytes came to ([`ServerConn::flush`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything queued went out.
    Done,
    Blocked,
    /// The client is gone.
    Closed,
}

/// The server side of one accepted connection (see the module docs).
pub struct ServerConn {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    pub reader: RequestReader,
    /// The queued response bytes, written from `out_pos`.
    pub out: Vec<u8>,
    pub out_pos: usize,
    /// The current response says `Connection: close`.
    close_after: bool,
    served: u32,
    /// The last time bytes moved for the client.
    pub last_progress: Instant,
}

impl ServerConn {
    pub fn new(stream: TcpStream, remote: SocketAddr, now: Instant) -> ServerConn {
        ServerConn {
            stream,
            remote,
            reader: RequestReader::default(),
            out: Vec::new(),
            out_pos: 0,
            close_after: false,
            served: 0,
            last_progress: now,
        }
    }

    /// Reads until a request head is complete, refused, or the socket blocks.
    pub fn read_head(
        &mut self,
        scratch: &mut [u8],
        now: Instant,
        budget: &mut usize,
        stopping: bool,
    ) -> HeadStep {
        self.reader
            .next(&mut self.stream, scratch, now, budget, stopping)
    }

    /// Whether the answer to `head` may keep the connection open: the last
    /// request a connection may carry says so in its answer.
    pub fn keep_alive(&self, head: &RequestHead, stopping: bool) -> bool {
        head.keep_alive && !head.has_body && !stopping && self.served + 1 < MAX_REQUESTS
    }

    /// The deadline while waiting for a request head.
    pub fn head_deadline(&self) -> Instant {
        match self.reader.started() {
            Some(start) => start + HEAD_TIMEOUT,
            None => self.last_progress + IDLE_TIMEOUT,
        }
    }

    /// The head deadline passed: a begun head gets a 408 (queued here).
    pub fn head_expired(&mut self) -> HeadExpiry {
        if self.reader.started().is_some() {
            self.reader.discard();
            self.queue_error(Status::RequestTimeout, false, true);
            HeadExpiry::RequestTimeout
        } else {
            HeadExpiry::Close
        }
    }

    /// Starts a response: clears what was queued, and returns the buffer to
    /// write its head (and small body) into.
    pub fn start_response(&mut self, keep_alive: bool) -> &mut Vec<u8> {
        self.out.clear();
        self.out_pos = 0;
        self.close_after = !keep_alive;
        &mut self.out
    }

    /// Queues an error page.
    pub fn queue_error(&mut self, status: Status, keep_alive: bool, with_body: bool) {
        let out = self.start_response(keep_alive);
        // Error answers carry the time (RFC 9110 wants it in every answer; the file bodies
        // leave it out to save the clock read): `flocon doctor` compares peers' clocks with it.
        let date = crate::http::date::unix_seconds(std::time::SystemTime::now());
        response::error_page_at(out, status, keep_alive, with_body, Some(date));
    }

    /// This response closes the connection after all.
    pub fn close_after(&mut self) {
        self.close_after = true;
    }

    /// Whether queued bytes wait to be written.
    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Writes the queued bytes (`more`: a body follows them, so that the
    /// kernel may put both in one segment).
    pub fn flush(&mut self, budget: &mut usize, now: Instant, more: bool) -> Flush {
        while self.out_pos < self.out.len() {
            match net::send(&self.stream, &self.out[self.out_pos..], more) {
                Io::Done(n) => {
                    self.out_pos += n;
                    *budget = budget.saturating_sub(n);
                    self.last_progress = now;
                }
                Io::WouldBlock => return Flush::Blocked,
                Io::Closed | Io::Error(_) => return Flush::Closed,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Flush::Done
    }

    /// A response is complete. `Some(until)`: the connection lingers until
    /// then (our write side is shut); `None`: it waits for the next request.
    pub fn response_done(&mut self, now: Instant, stopping: bool) -> Option<Instant> {
        self.served += 1;
        self.last_progress = now;
        if self.close_after || self.served >= MAX_REQUESTS || stopping {
            let _ = self.stream.shutdown(Shutdown::Write);
            return Some(now + LINGER);
        }
        self.close_after = false;
        self.reader.response_done(now);
        None
    }

    /// Closes both directions now, lingering briefly (a body that can't be
    /// finished: pacman sees the connection end and moves on).
    pub fn abort(&mut self, now: Instant) -> Instant {
        self.close_after = true;
        let _ = self.stream.shutdown(Shutdown::Both);
        now + LINGER
    }

    /// Reads and drops what the client sends while lingering.
    pub fn drain(&mut self, scratch: &mut [u8], budget: &mut usize) -> Drain {
        drain(&mut self.stream, scratch, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A connected pair on loopback: the client end and our server side.
    fn pair(now: Instant) -> (std::net::TcpStream, ServerConn) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let server = ServerConn::new(TcpStream::from_std(accepted), remote, now);
        (client, server)
    }

    fn read_until_blocked(server: &mut ServerConn, now: Instant) -> HeadStep {
        let mut scratch = vec![0; 4096];
        // The bytes may take a moment to cross loopback.
        for _ in 0..1000 {
            server.reader.readable();
            let mut budget = 1 << 20;
            match server.read_head(&mut scratch, now, &mut budget, false) {
                HeadStep::Blocked if server.reader.started().is_none() => {
                    std::thread::sleep(Duration::from_micros(100));
                }
                step => return step,
            }
        }
        HeadStep::Blocked
    }

    #[test]
    fn a_slow_request_head_gets_408_and_an_idle_connection_closes() {
        let t0 = Instant::now();
        let (mut client, mut server) = pair(t0);
        assert_eq!(server.head_deadline(), t0 + IDLE_TIMEOUT);
        let t1 = t0 + Duration::from_secs(3);
        client.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n").unwrap();
        assert!(matches!(
            read_until_blocked(&mut server, t1),
            HeadStep::Blocked
        ));
        assert_eq!(
            server.head_deadline(),
            t1 + HEAD_TIMEOUT,
            "from its first byte"
        );
        assert_eq!(server.head_expired(), HeadExpiry::RequestTimeout);
        let text = String::from_utf8_lossy(&server.out).into_owned();
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert_eq!(server.head_deadline(), t0 + IDLE_TIMEOUT, "head forgotten");
        let mut budget = 1 << 20;
        assert_eq!(server.flush(&mut budget, t1, false), Flush::Done);
        assert_eq!(server.response_done(t1, false), Some(t1 + LINGER));
        // Idle, nothing begun: just close.
        let (_client, mut idle) = pair(t0);
        assert_eq!(idle.head_expired(), HeadExpiry::Close);
        assert!(idle.out.is_empty());
    }

    #[test]
    fn keep_alive_ends_at_the_request_limit_a_body_or_a_stop() {
        let t0 = Instant::now();
        let (mut client, mut server) = pair(t0);
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let HeadStep::Head(head) = read_until_blocked(&mut server, t0) else {
            panic!("no head");
        };
        assert!(server.keep_alive(&head, false));
        assert!(!server.keep_alive(&head, true), "stopping");
        server.start_response(true);
        assert_eq!(server.response_done(t0, false), None, "next request");
        assert_eq!(server.response_done(t0, true), Some(t0 + LINGER));
        server.served = MAX_REQUESTS - 1;
        assert!(!server.keep_alive(&head, false), "the last one says so");
    }
}
