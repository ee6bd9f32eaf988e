//! The pacman-facing relay: one loopback connection from pacman, and for each
//! of its requests, the source the answer streams from.
//!
//! Owns what happens to a request for `/$repo/os/$arch/<file>`: packages and
//! signatures are asked of the LAN peers first (a discovery question), then of
//! the upstream mirrors; databases only come from one upstream that stays the
//! same while it works. It streams the answer through one bounded buffer with
//! back-pressure, fails over before and in the middle of a body (a `Range`
//! request to the next source), fetches `https://` mirrors over TLS (or, with
//! `Https = redirect`, redirects pacman to them), and
//! answers the status pages (text, JSON, metrics: the loop writes them) and
//! `flocon query`. It does not poll, register
//! sockets, own timers or speak multicast: the event loop runs it, and the
//! discovery core answers its questions.
//!
//! Where each rule lives:
//! - `plan.rs`: which source next (origin peer, the LAN, upstreams in order,
//!   the sticky database mirror, https redirects, give up) — pure;
//! - `fetch.rs`: judging a source's response head (accept, cut a range out,
//!   continue, redirect, fail) — pure;
//! - `failure.rs`: why a source failed and whether that counts against it,
//!   the connect and stall timeouts — pure;
//! - `policy.rs`: what is remembered across requests (back-off, bans of
//!   peers caught sending wrong bytes, origins, sticky database mirror,
//!   counters) — pure;
//! - `verify.rs`: checking a body against the sync database's size and
//!   SHA-256 while it streams, the last byte held until the verdict — pure;
//! - `pool.rs`: idle kept-alive source connections (closed on a timer; the
//!   loop's) and transfer buffers; `pipe.rs`: the bounded buffer of one
//!   transfer;
//! - `source.rs`: one exchange's socket I/O; `tls.rs`: TLS under it for
//!   `https://` mirrors (rustls driven over the same socket), and the trust
//!   store; `conn.rs`: the pacman
//!   connection's states, requests and local answers; `sockets.rs`: asking
//!   the loop for a source connection and handing source sockets back;
//!   `transfer.rs`: moving an answer from a source to pacman and failing over.
//!
//! ONE OWNER PER SOCKET: the relay never creates, registers, deregisters or
//! closes a socket. It asks for a connection to an address with
//! [`Want::Connect`](crate::net::Want::Connect) (a new one, or one from the
//! loop's idle pool) and gets it back as [`Input::Connected`]; every source
//! socket it is done with leaves as a [`Release`] (park it, or close it)
//! through [`PacmanConn::poll_release`] or [`PacmanConn::close`].
//!
//! KEPT-ALIVE SOURCES: a source connection whose answer was read to its end
//! and allows another request stays with its pacman connection (still in the
//! poll set) for that connection's next request to the same address; pacman
//! asks one mirror line for file after file, so that is the common case and
//! it costs no `epoll_ctl`. Otherwise, and when pacman's connection closes,
//! it goes to the shared idle pool (out of the poll set) for any connection
//! to take.

mod conn;
pub mod failure;
pub mod fetch;
mod pipe;
pub mod plan;
pub mod policy;
pub mod pool;
mod reply;
mod sockets;
mod source;
pub mod tls;
mod transfer;
pub mod verify;

pub use conn::PacmanConn;
pub use fetch::STALL_TIMEOUT;
pub use policy::{
    Ban, Counters, LATENCY_BUCKETS_MS, LatencyHistogram, Origin, PEER_BACKOFF, PeerTally, Policy,
};
pub use pool::{BUFFER, Buffers, LARGE_BUFFER, LARGE_BUFFERS, Pool};

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::config::{HttpsMode, Upstreams};
use crate::discovery::{Discovery, PeerRef, QuestionId};
use crate::http::percent_decode;
use crate::rate_limit::RateLimit;
use crate::resolver::{Addresses, LookupId, ResolveError, SystemResolver};
use crate::trust::Trust;
use tls::TlsTrust;

/// pacman not reading what we have for it.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const TURN_BUDGET: usize = 4 << 20;

/// Relay state shared by every pacman connection: the upstream mirrors, what
/// is remembered across requests, and what transfers reuse.
pub struct Relay {
    pub upstreams: Upstreams,
    /// This machine's own name, which pacman may also use for the relay (`Host`).
    pub machine_name: Option<String>,
    /// Warnings about requests for other hosts, at most one a minute.
    pub foreign_hosts: RateLimit,
    pub policy: Policy,
    pub buffers: Buffers,
    /// Fetch `https://` mirrors, or send pacman to them with a 302.
    pub https: HttpsMode,
    /// The trust store for `https://` mirrors, read on the first fetch.
    pub tls: TlsTrust,
    /// The shared secret: requests to peers carry its `Authorization`.
    pub secret: Option<crate::secret::Secret>,
    /// Packages fetched from upstream, shared with the LAN while in flight.
    pub spool: crate::spool::Spool,
}

impl Relay {
    /// A relay to these upstreams that bans a lying peer for `ban_time`.
    pub fn new(upstreams: Upstreams, ban_time: Duration) -> Relay {
        Relay {
            upstreams,
            machine_name: machine_name(),
            foreign_hosts: RateLimit::default(),
            policy: Policy::with_ban_time(ban_time),
            buffers: Buffers::default(),
            https: HttpsMode::Fetch,
            tls: TlsTrust::new(None),
            secret: None,
            spool: crate::spool::Spool::off(),
        }
    }
}

/// Something a connection waits on, answered through the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wait {
    /// A discovery question: who has the file.
    Question(QuestionId),
    /// An upstream host name being resolved.
    Lookup(LookupId),
}

/// What a run of a pacman connection needs from the daemon.
pub struct Context<'a> {
    pub now: Instant,
    pub relay: &'a mut Relay,
    /// What the sync databases say each file must be.
    pub trust: &'a Trust,
    pub discovery: &'a mut Discovery,
    pub resolver: &'a mut SystemResolver,
    /// Questions and name lookups this run opened, for the loop to route
    /// their answers here.
    pub asked: &'a mut Vec<Wait>,
    pub stopping: bool,
    /// The loop's one read buffer, lent for this run.
    pub scratch: &'a mut [u8],
}

impl Context<'_> {
    /// The peers a question leaves out now: backed off, or banned by host id or address.
    pub(crate) fn excluded_peers(&mut self) -> Vec<u64> {
        let peers = self.discovery.peers().map(|p| (p.host_id, p.addr.ip()));
        self.relay.policy.excluded(self.now, peers)
    }
}

/// A source socket the relay is done with, for the loop to deregister (when
/// it is registered under the connection's source token as `id`) and then
/// park in its idle pool or close.
#[derive(Debug)]
pub enum Release {
    /// Its answer was read to the end and it allows another request: any
    /// connection to `addr` may take it.
    Park {
        id: u32,
        addr: SocketAddr,
        stream: TcpStream,
    },
    /// Failed, given up, or not reusable.
    Close { id: u32, stream: TcpStream },
}

impl Release {
    /// The id the socket was (or would have been) registered under.
    pub fn id(&self) -> u32 {
        match self {
            Release::Park { id, .. } | Release::Close { id, .. } => *id,
        }
    }
}

/// What a connection is run for.
#[derive(Debug)]
pub enum Input {
    /// Readiness, a deadline, or another turn.
    Ready,
    /// The answer to its discovery question.
    Answer(Option<PeerRef>),
    /// The addresses of the upstream host it resolves, or why there are none.
    Address(Result<Addresses, ResolveError>),
    /// The status page it waits for ([`PacmanConn::wants_status`]).
    Status(String),
    /// The connection it asked for with `Want::Connect`: a new one being
    /// established, one from the idle pool (`reused`), or why there is none.
    Connected(Result<Opened, std::io::ErrorKind>),
}

/// A source connection the loop opened (or took from its idle pool) for a
/// pacman connection; not registered yet.
#[derive(Debug)]
pub struct Opened {
    pub stream: TcpStream,
    /// Taken from the idle pool: connected already.
    pub reused: bool,
}

/// The pages of the loopback port the loop makes (not the relay): none can be a package path,
/// `/$repo/os/$arch/<file>`, since those have four parts and a repository never starts with `.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `/` and `/status`: the plain-text status page.
    Text,
    /// [`crate::status::JSON_PATH`]: the same facts for `flocon status` and `flocon doctor`.
    Json,
    /// [`crate::status::METRICS_PATH`]: Prometheus text format 0.0.4.
    Metrics,
}

impl Page {
    /// The page at `path` (without a query string), if it is one.
    pub fn at(path: &str) -> Option<Page> {
        match path {
            "/" | "/status" => Some(Page::Text),
            crate::status::JSON_PATH => Some(Page::Json),
            crate::status::METRICS_PATH => Some(Page::Metrics),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Page::Text => "text/plain; charset=utf-8",
            Page::Json => "application/json",
            Page::Metrics => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// What a closing connection leaves to the loop: the question or lookup to
/// cancel, and its source sockets (registered or not) to park or close.
pub struct Leftovers {
    pub wait: Option<Wait>,
    /// The file whose download from upstream this connection led: release it
    /// (`Discovery::release`).
    pub lead: Option<String>,
    pub sockets: Vec<Release>,
}

/// This machine's host name (gethostname(2)), in lower case.
fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// Whether a request's `Host` names this machine's loopback service: `localhost`, a
/// 127.0.0.0/8 address, `[::1]` or the machine's own name, with any port; or no `Host` at all
/// (HTTP/1.0). Anything else is a request for another site that reached the loopback port,
/// as a web page does through DNS rebinding, and is refused.
pub fn is_local_host(host: Option<&str>, machine_name: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, port)) if port.is_empty() || port.starts_with(':') => inner.to_owned(),
            _ => return false,
        }
    } else {
        host.rsplit_once(':')
            .map_or(host.as_str(), |(n, _)| n)
            .to_owned()
    };
    let name = name.strip_suffix('.').unwrap_or(&name);
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || machine_name.is_some_and(|m| m == name)
}

/// Splits `/$repo/os/$arch/<file>`; the file name is percent-decoded once.
/// Repository and architecture must be plain tokens.
pub fn split_repo_path(path: &str) -> Option<(&str, &str, String)> {
    let mut parts = path.strip_prefix('/')?.splitn(4, '/');
    let (repo, os, arch, raw) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
    };
    if os != "os" || !token(repo) || !token(arch) {
        return None;
    }
    Some((repo, arch, percent_decode(raw)?))
}

/// Percent-encodes a file name for a request line: everything but the
/// characters a path segment may hold as they are (so `:` and `+` stay, as
/// pacman sends them).
pub fn encode_path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths() {
        assert_eq!(
            split_repo_path("/core/os/x86_64/a+b-1:2-1-x86_64.pkg.tar.zst"),
            Some(("core", "x86_64", "a+b-1:2-1-x86_64.pkg.tar.zst".to_owned()))
        );
        assert_eq!(
            split_repo_path("/extra/os/aarch64/x%3Ay"),
            Some(("extra", "aarch64", "x:y".to_owned()))
        );
        assert_eq!(
            split_repo_path("/core/os/x86_64/sub/file"),
            Some(("core", "x86_64", "sub/file".to_owned()))
        );
        for bad in [
            "/core/x86_64/f",
            "/core/os/x86_64",
            "/../os/x86_64/f",
            "/core/os/x86 64/f",
            "//os/x86_64/f",
            "core/os/x86_64/f",
            "/core/os/x86_64/%zz",
        ] {
            assert_eq!(split_repo_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_requests_for_this_machine_are_local() {
        let me = Some("archbox");
        for ok in [
            None,
            Some("localhost"),
            Some("localhost:19433"),
            Some("LOCALHOST."),
            Some("127.0.0.1:19433"),
            Some("127.1.2.3"),
            Some("[::1]:19433"),
            Some("[::1]"),
            Some("archbox:19433"),
        ] {
            assert!(is_local_host(ok, me), "{ok:?}");
        }
        for bad in [
            Some("attacker.example"),
            Some("attacker.example:19433"),
            Some("localhost.attacker.example"),
            Some("192.168.1.5:19433"),
            Some("[::2]:19433"),
            Some("[::1"),
            Some("[::1]x"),
            Some(""),
            Some("archbox.evil"),
        ] {
            assert!(!is_local_host(bad, me), "{bad:?}");
        }
        assert!(!is_local_host(Some("archbox"), None));
    }

    #[test]
    fn path_segments_are_encoded_once() {
        assert_eq!(
            encode_path_segment("libc++-1:17.0-1-x86_64.pkg.tar.zst"),
            "libc++-1:17.0-1-x86_64.pkg.tar.zst"
        );
        assert_eq!(encode_path_segment("a b%c/d?"), "a%20b%25c%2Fd%3F");
        for name in ["a b", "x%y", "ü-1-1-any.pkg.tar.zst"] {
            assert_eq!(
                percent_decode(&encode_path_segment(name)).as_deref(),
                Some(name)
            );
        }
    }
}
