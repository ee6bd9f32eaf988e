//! Why an exchange with a source failed, and when it has failed by silence: [`Failure`] (a
//! small `Copy` enum with `Display`, and whether it counts against the source) and [`Timer`]
//! (the connect timeout, then the stall timeout pushed on by every byte).
//!
//! Pure: instants in, verdicts out. It does not judge response heads (`fetch.rs`) nor decide
//! what happens to a failed source (`plan.rs`, `policy.rs`).

use std::fmt;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use super::tls::TlsFailure;
use crate::http::request::HeadError;

/// Connecting to a LAN peer.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting to an upstream mirror.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// A source that sends nothing for this long while we wait for it has
/// failed: well before pacman's own 10 s low-speed limit.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(4);

/// The clock of one exchange: a connect deadline, then a stall deadline
/// pushed on by every byte that arrives. While pacman is slow (the pipe is
/// full) the source's silence is ours: the caller does not ask then, and the
/// stall clock starts again when pacman takes bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    connecting: bool,
    deadline: Instant,
}

impl Timer {
    /// A new connection (`connecting`), or a kept-alive one being reused,
    /// to a peer or to an upstream: its connect timeout.
    pub fn start(now: Instant, to_peer: bool, connecting: bool) -> Timer {
        let timeout = if to_peer {
            PEER_CONNECT_TIMEOUT
        } else {
            UPSTREAM_CONNECT_TIMEOUT
        };
        Timer {
            connecting,
            deadline: now + timeout,
        }
    }

    /// The connection is established: the source has a stall timeout to
    /// answer in.
    pub fn connected(&mut self, now: Instant) {
        self.connecting = false;
        self.deadline = now + STALL_TIMEOUT;
    }

    /// Bytes arrived.
    pub fn bytes(&mut self, now: Instant) {
        self.deadline = now + STALL_TIMEOUT;
    }

    /// pacman took bytes from a full pipe: the source's stall clock starts
    /// now at the latest.
    pub fn pipe_drained(&mut self, now: Instant) {
        self.deadline = self.deadline.max(now + STALL_TIMEOUT);
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the source has failed by silence at `now`, and how.
    pub fn due(&self, now: Instant) -> Option<Failure> {
        (now >= self.deadline).then_some(if self.connecting {
            Failure::ConnectTimedOut
        } else {
            Failure::Stalled
        })
    }
}

/// Why a source did not deliver. Small and `Copy`, like the outcomes it
/// names; [`Failure::penalizes`] says whether it counts against the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `connect` itself failed (no route, refused on the spot).
    Unreachable(ErrorKind),
    /// The connection attempt failed later.
    Connect(ErrorKind),
    ConnectTimedOut,
    /// Nothing arrived for the stall timeout while we waited for it.
    Stalled,
    RequestLost,
    ClosedBeforeAnswer,
    BadResponse(HeadError),
    Chunked,
    /// A continuation answered with something else than the rest asked for.
    Continuation(u16),
    /// 404 or 410: the source does not have the file.
    NotFound(u16),
    /// Any other status that is not an answer to relay.
    Status(u16),
    /// The connection broke after this many body bytes.
    LostAfter(u64),
    /// The body ended before the length it announced.
    EndedEarly,
    /// The whole file is not the size the sync database says (`%CSIZE%`): refused before
    /// pacman sees a head.
    WrongSize(u64),
    /// The body's SHA-256 is not the sync database's.
    WrongHash,
    /// An `https://` mirror's TLS failed: its certificate, its name, an
    /// alert, a cut handshake.
    Tls(TlsFailure),
}

impl Failure {
    /// The connection itself could not be made (the address may be wrong, not the source):
    /// another address of the same host is worth a try.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            Failure::Unreachable(_) | Failure::Connect(_) | Failure::ConnectTimedOut
        )
    }

    /// Whether the failure counts against the source (a peer is skipped for
    /// a while; an upstream's failure is counted and logged at `info`).
    pub fn penalizes(self, from_peer: bool) -> bool {
        match self {
            Failure::Unreachable(_) => from_peer,
            Failure::Chunked | Failure::Continuation(_) | Failure::NotFound(_) => false,
            Failure::Status(code) => code >= 500 || from_peer,
            Failure::Connect(_)
            | Failure::ConnectTimedOut
            | Failure::Stalled
            | Failure::RequestLost
            | Failure::ClosedBeforeAnswer
            | Failure::BadResponse(_)
            | Failure::LostAfter(_)
            | Failure::EndedEarly
            | Failure::WrongSize(_)
            | Failure::WrongHash
            | Failure::Tls(_) => true,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(kind) | Failure::Connect(kind) => write!(f, "connect: {kind}"),
            Failure::ConnectTimedOut => f.write_str("connect timed out"),
            Failure::Stalled => f.write_str("stalled"),
            Failure::RequestLost => f.write_str("connection lost while sending the request"),
            Failure::ClosedBeforeAnswer => f.write_str("closed before answering"),
            Failure::BadResponse(e) => write!(f, "bad response: {e}"),
            Failure::Chunked => f.write_str("chunked bodies are not relayed"),
            Failure::Continuation(code) => write!(f, "answered the continuation with {code}"),
            Failure::NotFound(code) | Failure::Status(code) => write!(f, "answered {code}"),
            Failure::LostAfter(bytes) => write!(f, "connection lost after {bytes} body bytes"),
            Failure::EndedEarly => f.write_str("body ended early"),
            Failure::WrongSize(n) => {
                write!(f, "sent a file of {n} bytes, not its sync database's size")
            }
            Failure::WrongHash => f.write_str("sent bytes unlike its sync database's SHA-256"),
            Failure::Tls(why) => why.fmt(f),
        }
    }
}

impl Failure {
    /// Whether the source is caught lying about the file (a peer is then banned).
    pub fn is_lie(self) -> bool {
        matches!(self, Failure::WrongSize(_) | Failure::WrongHash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_source_has_stalled_after_4_seconds() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timer::start(t0, false, true);
        assert_eq!(t.due(t0 + ms(7999)), None);
        assert_eq!(t.due(t0 + ms(8000)), Some(Failure::ConnectTimedOut));
        let mut peer = Timer::start(t0, true, true);
        assert_eq!(peer.due(t0 + ms(2000)), Some(Failure::ConnectTimedOut));
        peer.connected(t0 + ms(100));
        assert_eq!(peer.due(t0 + ms(4099)), None);
        assert_eq!(peer.due(t0 + ms(4100)), Some(Failure::Stalled));
        // Every byte pushes the deadline on.
        t.connected(t0);
        t.bytes(t0 + ms(3000));
        assert_eq!(t.due(t0 + ms(6999)), None);
        assert_eq!(t.deadline(), t0 + ms(7000));
        assert_eq!(t.due(t0 + ms(7000)), Some(Failure::Stalled));
        // pacman was slow: the silence until it took bytes was ours.
        t.pipe_drained(t0 + ms(9000));
        assert_eq!(t.due(t0 + ms(12_999)), None);
        assert_eq!(t.due(t0 + ms(13_000)), Some(Failure::Stalled));
        t.pipe_drained(t0 + ms(5000));
        assert_eq!(t.deadline(), t0 + ms(13_000), "never earlier");
        // A reused connection that never answers has stalled, not timed out.
        let reused = Timer::start(t0, false, false);
        assert_eq!(reused.due(t0 + ms(8000)), Some(Failure::Stalled));
    }
}
