//! The request side of an accepted HTTP connection, shared by both servers
//! (the peer file server and the pacman-facing relay).
//!
//! Owns reading request heads off a non-blocking socket under the head limits:
//! the bytes received but not yet consumed (pipelined requests stay here), when
//! the current head started (for the 408 deadline), and re-parsing only when new
//! bytes came. It does not answer requests, keep other timers, or write.

use std::time::Instant;

use mio::net::TcpStream;

use crate::http::request::{self, HeadError, Limits, RequestHead};
use crate::net::{self, Io};

/// What [`RequestReader::next`] came to.
#[derive(Debug)]
pub enum HeadStep {
    /// A complete, acceptable head; the bytes after it stay buffered.
    Head(RequestHead),
    /// A head past the limits or malformed: answer `e.status()` and close.
    Refused(HeadError),
    /// Nothing more to read now.
    Blocked,
    /// The turn's budget is spent: run again soon.
    Yield,
    /// The client closed, the socket failed, or the daemon stops and no
    /// request is in progress.
    Closed,
}

#[derive(Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// `buf` changed since the last incomplete parse.
    parse_pending: bool,
    /// When the first byte of the current head arrived.
    started: Option<Instant>,
    /// The last read came back short (or would have blocked) and no
    /// readiness event came since: the socket holds nothing, and with
    /// edge-triggered polling any new byte brings an event, so reading now
    /// would only cost a system call that answers `EAGAIN`.
    drained: bool,
    limits: Limits,
}

impl RequestReader {
    /// The loop saw the socket become readable: read it on the next call.
    pub fn readable(&mut self) {
        self.drained = false;
    }

    /// When the head being read started, if one is.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Reads and parses until a head is complete, refused, or the socket
    /// blocks. `budget` is the bytes this turn may still read.
    pub fn next(
        &mut self,
        stream: &mut TcpStream,
        scratch: &mut [u8],
        now: Instant,
        budget: &mut usize,
        stopping: bool,
    ) -> HeadStep {
        loop {
            if self.parse_pending {
                self.parse_pending = false;
                match request::parse(&self.buf, &self.limits) {
                    Ok(Some(head)) => {
                        self.buf.drain(..head.len);
                        self.started = None;
                        *budget = budget.saturating_sub(head.len.max(1024));
                        return HeadStep::Head(head);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.discard();
                        return HeadStep::Refused(e);
                    }
                }
            }
            if stopping && self.started.is_none() {
                return HeadStep::Closed;
            }
            if *budget == 0 {
                return HeadStep::Yield;
            }
            if self.drained {
                return HeadStep::Blocked;
            }
            match net::read(stream, scratch) {
                Io::Done(n) => {
                    self.drained = n < scratch.len();
                    self.buf.extend_from_slice(&scratch[..n]);
                    self.parse_pending = true;
                    self.started.get_or_insert(now);
                    *budget = budget.saturating_sub(n);
                }
                Io::WouldBlock => {
                    self.drained = true;
                    return HeadStep::Blocked;
                }
                Io::Closed | Io::Error(_) => return HeadStep::Closed,
            }
        }
    }

    /// Forgets a head that will not be answered (refused, or timed out).
    pub fn discard(&mut self) {
        self.buf.clear();
        self.parse_pending = false;
        self.started = None;
    }

    /// A response is complete: a pipelined request already buffered starts
    /// its head clock now.
    pub fn response_done(&mut self, now: Instant) {
        self.parse_pending = !self.buf.is_empty();
        self.started = self.parse_pending.then_some(now);
    }
}

/// What [`drain`] came to.
pub enum Drain {
    More,
    Blocked,
    Closed,
}

/// Reads and drops what a client still sends after our write side was shut
/// (a lingering close, so that unread data does not turn our close into a
/// reset that destroys the answer).
pub fn drain(stream: &mut TcpStream, scratch: &mut [u8], budget: &mut usize) -> Drain {
    match net::read(stream, scratch) {
        Io::Done(n) => {
            *budget = budget.saturating_sub(n.max(scratch.len()));
            Drain::More
        }
        Io::WouldBlock => Drain::Blocked,
        Io::Closed | Io::Error(_) => Drain::Closed,
    }
}
