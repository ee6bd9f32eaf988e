//! The socket side of one outbound exchange: the connection to a peer or a
//! mirror, its request, reading the response head, and reading the body
//! into the [`Pipe`] (cutting off leading bytes when the source ignored
//! `Range`).
//!
//! LIFECYCLE of a [`Source`]: `Connecting` -> `Request` (writing it) ->
//! `Head` (reading until a head parses) -> `Body` (until its length, or its
//! end of file when delimited by close). A kept-alive connection being
//! reused starts at `Request`. Edge-triggered: a socket is read until it
//! would block, or, once the loop saw it closed, until its end of file.
//!
//! An `https://` mirror's exchange runs over a [`TlsSession`] on the same
//! socket: the same phases, its reads and writes going through TLS (and the
//! handshake's bytes flushed at every step). A plain socket is read and
//! written as before, with nothing in between.
//!
//! It does not judge heads ([`super::fetch::judge`]), choose sources
//! ([`super::plan`]) or register sockets: the relay connection holds the
//! source and the loop registers it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::fetch::{Failure, Timer};
use super::pipe::Pipe;
use super::policy::Counters;
use super::tls::{TlsFailure, TlsSession};
use crate::discovery::PeerRef;
use crate::http::request::Limits;
use crate::http::response::{self, ResponseHead};
use crate::http::url::Url;
use crate::net::{self, Io};
use crate::resolver::Addresses;

/// Who a source is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Peer(PeerRef),
    /// Upstream mirror `index`, at `addresses[at]` of every address its host name has.
    Upstream {
        index: usize,
        url: Url,
        addresses: Addresses,
        at: usize,
    },
}

impl SourceKind {
    pub fn is_peer(&self) -> bool {
        matches!(self, SourceKind::Peer(_))
    }

    /// The peer, for a LAN source.
    pub fn peer(&self) -> Option<PeerRef> {
        match self {
            SourceKind::Peer(p) => Some(*p),
            SourceKind::Upstream { .. } => None,
        }
    }

    /// The host name to check the certificate against, for an `https://`
    /// mirror.
    pub fn tls_name(&self) -> Option<&str> {
        match self {
            SourceKind::Upstream { url, .. } if url.https => Some(&url.host),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SourceKind::Peer(p) => format!("peer {:016x} at {}", p.host_id, p.addr),
            SourceKind::Upstream { url, .. } => format!("upstream {}", url.to_text()),
        }
    }
}

/// Where an exchange is, with what that part of it holds.
#[derive(Debug)]
pub enum SourcePhase {
    Connecting,
    /// Writing the request, `pos` bytes of it written.
    Request {
        request: Vec<u8>,
        pos: usize,
    },
    /// Reading the response head (what arrived so far).
    Head {
        buf: Vec<u8>,
    },
    Body {
        /// Body bytes still expected; `None`: until the source closes.
        remaining: Option<u64>,
        /// Leading body bytes to drop: the source ignored pacman's `Range`
        /// and sent the whole file, so flocon cuts the range out itself.
        skip: u64,
    },
}

/// The outcome of one step of a source.
pub enum SourceStep {
    /// Made progress; run again.
    Progress,
    /// Waiting for the socket (or for room in the pipe).
    Blocked,
    /// A complete response head, for the connection to judge; the bytes
    /// after it come with [`Source::take_head_bytes`].
    Head(ResponseHead),
    /// The body is complete.
    Done,
    Failed(Failure),
}

pub struct Source {
    pub id: u32,
    pub kind: SourceKind,
    pub addr: SocketAddr,
    pub stream: TcpStream,
    /// TLS over `stream`, for an `https://` mirror.
    pub tls: Option<Box<TlsSession>>,
    /// Taken from the idle pool: a failure before any answer byte may just
    /// mean the other side closed it meanwhile, so it is retried fresh.
    pub reused: bool,
    /// A response head arrived (its buffer is emptied once it is judged):
    /// a failure after it is the source's, never a stale kept connection.
    answered: bool,
    /// The answer was read to its end and allows another request: after a
    /// failure (a 404, say) the connection is kept all the same.
    pub reusable: bool,
    /// The response allows another request on this connection.
    pub keep_alive: bool,
    phase: SourcePhase,
    /// The request, while it waits for the connection.
    request: Vec<u8>,
    pub timer: Timer,
    /// Body bytes received.
    pub bytes: u64,
    /// Bytes may be waiting: the loop saw the socket readable since a read
    /// last drained it. Polling is edge-triggered, so any byte that arrives
    /// after a drained read is announced by an event; reads while this is
    /// false would only answer `EAGAIN`.
    readable: bool,
    /// The loop saw the other side close (or the socket fail): a short read
    /// does not drain it, the end of file (or the error) is still to read.
    read_closed: bool,
}

/// The kept-alive connection of the last transfer, still registered with the
/// loop under its connection's source token: the next request to the same
/// address reuses it without touching the poll set or the shared pool.
pub struct Kept {
    pub id: u32,
    pub addr: SocketAddr,
    pub stream: TcpStream,
    /// Its TLS session, for an `https://` mirror: it carries only requests
    /// for the same host name.
    pub tls: Option<Box<TlsSession>>,
    /// An event came while it was idle (the other side closed it, or sent
    /// bytes nobody asked for): check it before use.
    pub event: bool,
}

impl From<Source> for Kept {
    fn from(source: Source) -> Kept {
        Kept {
            id: source.id,
            addr: source.addr,
            stream: source.stream,
            tls: source.tls,
            // The other side closed it while it answered: check before use.
            event: source.read_closed,
        }
    }
}

/// What a request to a source asks for beyond the file.
pub struct RequestFields<'a> {
    pub head_only: bool,
    /// The `Range` value.
    pub range: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    /// Requests to peers carry the shared secret's `Authorization` (see `crate::secret::http`).
    pub secret: Option<&'a crate::secret::Secret>,
}

impl Source {
    /// A source on `stream` (new, or `reused` from a kept-alive connection),
    /// over `tls` for an `https://` mirror, with its request queued.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        kind: SourceKind,
        addr: SocketAddr,
        stream: TcpStream,
        tls: Option<Box<TlsSession>>,
        reused: bool,
        request: Vec<u8>,
        now: Instant,
    ) -> Source {
        let timer = Timer::start(now, kind.is_peer(), !reused);
        let mut source = Source {
            id,
            kind,
            addr,
            stream,
            tls,
            reused,
            answered: false,
            reusable: false,
            keep_alive: false,
            phase: SourcePhase::Connecting,
            request,
            timer,
            bytes: 0,
            readable: true,
            read_closed: false,
        };
        if reused {
            // Connected already: the request goes out at once.
            let request = std::mem::take(&mut source.request);
            source.phase = SourcePhase::Request { request, pos: 0 };
        }
        source
    }

    /// The request for `file_path` (already encoded) of this source.
    ///
    /// A peer's `Host` is its address and port, an IPv6 one in brackets and without its zone
    /// (`[fe80::1]:19432`): the zone (scope id) only says which of our interfaces reaches it,
    /// means nothing to the peer, and has no place in a `Host` field (RFC 6874 allows it in a
    /// URI, as `%25`, not there).
    pub fn request(kind: &SourceKind, file_path: &str, fields: &RequestFields) -> Vec<u8> {
        let (path, authority) = match kind {
            SourceKind::Peer(p) => (format!("/{file_path}"), host_field(p.addr)),
            SourceKind::Upstream { url, .. } => (url.path.clone(), url.authority.clone()),
        };
        let mut request = Vec::with_capacity(256);
        let method = if fields.head_only { "HEAD" } else { "GET" };
        let _ = write!(
            Text(&mut request),
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: flocon/{}\r\nAccept: */*\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(range) = fields.range {
            let _ = write!(Text(&mut request), "Range: {range}\r\n");
        }
        if let Some(ims) = fields.if_modified_since {
            let _ = write!(Text(&mut request), "If-Modified-Since: {ims}\r\n");
        }
        if let (Some(secret), SourceKind::Peer(_)) = (fields.secret, kind) {
            let secs = crate::secret::unix_millis() / 1000;
            let value = crate::secret::http::authorization(secret, method, &path, secs);
            let _ = write!(Text(&mut request), "Authorization: {value}\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request
    }

    /// The loop saw the socket readable, and (`read_closed`) closed.
    pub fn event(&mut self, read_closed: bool) {
        self.readable = true;
        self.read_closed |= read_closed;
    }

    /// Nothing of an answer came: a kept connection that fails now was most
    /// likely closed by the other side while idle.
    pub fn unanswered(&self) -> bool {
        !self.answered
            && match &self.phase {
                SourcePhase::Connecting | SourcePhase::Request { .. } => true,
                SourcePhase::Head { buf } => buf.is_empty(),
                SourcePhase::Body { .. } => false,
            }
    }

    /// The head was judged: the bytes that came after its `head_len` bytes.
    pub fn take_head_bytes(&mut self, head_len: usize) -> Vec<u8> {
        self.answered = true;
        match &mut self.phase {
            SourcePhase::Head { buf } => {
                let rest = buf.split_off(head_len.min(buf.len()));
                *buf = Vec::new();
                rest
            }
            _ => Vec::new(),
        }
    }

    /// The body follows: read `remaining` bytes (`None`: until the source
    /// closes), dropping the first `skip`.
    pub fn start_body(&mut self, remaining: Option<u64>, skip: u64) {
        self.phase = SourcePhase::Body { remaining, skip };
    }

    pub fn in_body(&self) -> bool {
        matches!(self.phase, SourcePhase::Body { .. })
    }

    /// Body bytes still expected (`None`: until close, or not in the body).
    pub fn remaining(&self) -> Option<u64> {
        match self.phase {
            SourcePhase::Body { remaining, .. } => remaining,
            _ => None,
        }
    }

    /// How many of `n` bytes just read fall in the part to drop.
    pub fn take_skip(&mut self, n: usize) -> usize {
        let SourcePhase::Body { skip, .. } = &mut self.phase else {
            return 0;
        };
        let dropped = usize::try_from(*skip).unwrap_or(usize::MAX).min(n);
        *skip -= dropped as u64;
        dropped
    }

    /// Body bytes that arrived from this source.
    pub fn count(&mut self, n: usize, counters: &mut Counters) {
        let n = n as u64;
        self.bytes += n;
        if let SourcePhase::Body {
            remaining: Some(r), ..
        } = &mut self.phase
        {
            *r = r.saturating_sub(n);
        }
        match self.kind {
            SourceKind::Peer(_) => counters.bytes_from_peers += n,
            SourceKind::Upstream { .. } => counters.bytes_from_upstream += n,
        }
    }

    pub fn describe(&self) -> String {
        self.kind.describe()
    }

    /// Moves the exchange on as far as the socket allows: connects, writes
    /// the request, reads the head, reads body bytes into `pipe` (adding
    /// those pacman gets to `received`).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        pipe: &mut Pipe,
        scratch: &mut [u8],
        budget: &mut usize,
        now: Instant,
        counters: &mut Counters,
        received: &mut u64,
        head_only: bool,
        limits: &Limits,
    ) -> SourceStep {
        if let Some(tls) = self.tls.as_mut() {
            // The handshake's (or an earlier write's) bytes still to send.
            if !matches!(self.phase, SourcePhase::Connecting) {
                if let Io::Closed | Io::Error(_) = tls.flush(&mut self.stream) {
                    return SourceStep::Failed(self.lost(Failure::RequestLost));
                }
            }
        }
        let plain = self.tls.is_none();
        match &mut self.phase {
            SourcePhase::Connecting => match self.stream.take_error() {
                Ok(Some(e)) | Err(e) => SourceStep::Failed(Failure::Connect(e.kind())),
                Ok(None) => match self.stream.peer_addr() {
                    Ok(_) => {
                        let request = std::mem::take(&mut self.request);
                        self.phase = SourcePhase::Request { request, pos: 0 };
                        self.timer.connected(now);
                        SourceStep::Progress
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected => SourceStep::Blocked,
                    Err(e) => SourceStep::Failed(Failure::Connect(e.kind())),
                },
            },
            SourcePhase::Request { request, pos } => {
                let io = match self.tls.as_mut() {
                    None => net::write(&mut self.stream, &request[*pos..]),
                    Some(tls) => tls.write(&mut self.stream, &request[*pos..]),
                };
                match io {
                    Io::Done(n) => {
                        *pos += n;
                        if *pos == request.len() {
                            self.phase = SourcePhase::Head { buf: Vec::new() };
                            // The answer comes after this: its bytes raise
                            // an event (or, for a socket not registered
                            // yet, show when it is).
                            self.readable = false;
                        }
                        SourceStep::Progress
                    }
                    Io::WouldBlock => SourceStep::Blocked,
                    Io::Closed | Io::Error(_) => {
                        SourceStep::Failed(self.lost(Failure::RequestLost))
                    }
                }
            }
            SourcePhase::Head { buf } => {
                if !self.readable {
                    return SourceStep::Blocked;
                }
                let io = match self.tls.as_mut() {
                    None => net::read(&mut self.stream, scratch),
                    Some(tls) => tls.read(&mut self.stream, scratch),
                };
                match io {
                    Io::Done(n) => {
                        // A short read emptied the socket, unless its end
                        // of file is still to be read (TLS: only a read
                        // that would block says so).
                        self.readable = n == scratch.len() || self.read_closed || !plain;
                        buf.extend_from_slice(&scratch[..n]);
                        self.timer.bytes(now);
                        match response::parse_response(buf, limits, head_only) {
                            Ok(Some(head)) => SourceStep::Head(head),
                            Ok(None) => SourceStep::Progress,
                            Err(e) => SourceStep::Failed(Failure::BadResponse(e)),
                        }
                    }
                    Io::WouldBlock => {
                        self.readable = false;
                        SourceStep::Blocked
                    }
                    Io::Closed | Io::Error(_) => {
                        SourceStep::Failed(self.lost(Failure::ClosedBeforeAnswer))
                    }
                }
            }
            SourcePhase::Body { remaining, .. } => {
                let remaining = *remaining;
                if remaining == Some(0) {
                    return SourceStep::Done;
                }
                let space = pipe.space();
                if space.is_empty() || !self.readable {
                    return SourceStep::Blocked;
                }
                let want = match remaining {
                    Some(r) => space.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
                    None => space.len(),
                };
                let io = match self.tls.as_mut() {
                    None => net::read(&mut self.stream, &mut space[..want]),
                    Some(tls) => tls.read(&mut self.stream, &mut space[..want]),
                };
                match io {
                    Io::Done(n) => {
                        self.readable = n == want || self.read_closed || !plain;
                        let dropped = self.take_skip(n);
                        space.copy_within(dropped..n, 0);
                        pipe.commit(n - dropped);
                        *budget = budget.saturating_sub(n);
                        self.timer.bytes(now);
                        self.count(n, counters);
                        *received += (n - dropped) as u64;
                        if self.remaining() == Some(0) {
                            SourceStep::Done
                        } else {
                            SourceStep::Progress
                        }
                    }
                    Io::WouldBlock => {
                        self.readable = false;
                        SourceStep::Blocked
                    }
                    // (Over TLS, only after the server's close_notify.)
                    Io::Closed if remaining.is_none() && self.tls_failure().is_none() => {
                        SourceStep::Done
                    }
                    Io::Closed | Io::Error(_) => {
                        let lost = Failure::LostAfter(self.bytes);
                        SourceStep::Failed(match self.tls_failure() {
                            Some(Failure::Tls(TlsFailure::Truncated)) | None => lost,
                            Some(why) => why,
                        })
                    }
                }
            }
        }
    }
}

impl Source {
    /// Why TLS failed, if it did and said why.
    fn tls_failure(&self) -> Option<Failure> {
        self.tls
            .as_ref()
            .and_then(|t| t.failure())
            .map(Failure::Tls)
    }

    /// The failure of a lost connection: TLS's reason when it has one.
    fn lost(&self, otherwise: Failure) -> Failure {
        self.tls_failure().unwrap_or(otherwise)
    }
}

/// `fmt::Write` over a byte vector.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The `Host` field for a peer at `addr`.
fn host_field(addr: std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => a.to_string(),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::url;

    #[test]
    fn requests_ask_for_the_file_with_pacmans_fields() {
        let peer = SourceKind::Peer(PeerRef {
            host_id: 1,
            addr: ([10, 0, 0, 2], 19432).into(),
        });
        let fields = RequestFields {
            head_only: false,
            range: Some("bytes=100-"),
            if_modified_since: Some("Tue, 14 Nov 2023 22:13:20 GMT"),
            secret: None,
        };
        let text = String::from_utf8(Source::request(&peer, "a+b-1:2-1-any.pkg.tar.zst", &fields))
            .unwrap();
        assert!(
            text.starts_with("GET /a+b-1:2-1-any.pkg.tar.zst HTTP/1.1\r\nHost: 10.0.0.2:19432\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRange: bytes=100-\r\n"), "{text}");
        let v6 = SourceKind::Peer(PeerRef {
            host_id: 1,
            addr: std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::2".parse().unwrap(),
                19432,
                0,
                3,
            )),
        });
        let text6 =
            String::from_utf8(Source::request(&v6, "a-1-1-any.pkg.tar.zst", &fields)).unwrap();
        assert!(
            text6.starts_with("GET /a-1-1-any.pkg.tar.zst HTTP/1.1\r\nHost: [fe80::2]:19432\r\n"),
            "{text6}"
        );
        assert!(text.contains("\r\nIf-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!text.contains("Authorization"));
        // With a secret, a request to a peer carries a MAC over its method, path and time.
        let secret = crate::secret::Secret::from_bytes(b"a secret of the LAN").unwrap();
        let signed = RequestFields {
            secret: Some(&secret),
            ..fields
        };
        let text = String::from_utf8(Source::request(&peer, "a+b-1.pkg.tar.zst", &signed)).unwrap();
        let auth = text
            .lines()
            .find_map(|l| l.strip_prefix("Authorization: "))
            .expect("an Authorization field");
        let now = crate::secret::unix_millis() / 1000;
        let check = |m: &str, p: &str| crate::secret::http::check(&secret, Some(auth), m, p, now);
        assert_eq!(check("GET", "/a+b-1.pkg.tar.zst"), Ok(()));
        assert!(check("GET", "/other").is_err());

        let Some(base) = url::parse("http://mirror.example:8080/core/os/x86_64") else {
            panic!("url");
        };
        let upstream = SourceKind::Upstream {
            index: 0,
            url: base.join("core.db"),
            addresses: Addresses::from([std::net::IpAddr::from([192, 0, 2, 1])]),
            at: 0,
        };
        let head = RequestFields {
            head_only: true,
            range: None,
            if_modified_since: None,
            secret: Some(&secret),
        };
        let text = String::from_utf8(Source::request(&upstream, "ignored", &head)).unwrap();
        assert!(
            text.starts_with(
                "HEAD /core/os/x86_64/core.db HTTP/1.1\r\nHost: mirror.example:8080\r\n"
            ),
            "{text}"
        );
        assert!(!text.contains("Range") && !text.contains("If-Modified-Since"));
        assert!(!text.contains("Authorization"), "never sent to a mirror");
    }
}
