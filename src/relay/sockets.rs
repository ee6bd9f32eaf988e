//! The relay's side of socket ownership: asking the loop for a source
//! connection and handing back every source socket it is done with.
//!
//! The relay never creates, registers, deregisters or closes a socket. For a
//! source it first looks at the connection it kept from its last transfer
//! (the rule is [`kept_use`]); otherwise it waits in [`State::Connect`] and
//! its run ends with [`Want::Connect`]: the loop opens a connection (or takes
//! an idle one from its pool) and runs it again at once with
//! [`Input::Connected`](super::Input::Connected). A socket it lets go of (a
//! failed source, a kept connection its next request does not use, what a
//! closing connection held) becomes a [`Release`], which the loop takes with
//! [`PacmanConn::poll_release`] (or [`PacmanConn::close`]) and deregisters,
//! parks or closes. An `https://` mirror's connection carries its TLS
//! session: it is kept for the next request to the same address and host
//! name, never parked in the loop's pool (which holds plain sockets only),
//! and the loop is never asked to reuse one for it. Part of [`PacmanConn`] (another `impl` block); moving
//! bytes is in `transfer.rs`, which source is next in `plan.rs`.

use std::net::SocketAddr;

use log::debug;
use mio::net::TcpStream;

use super::conn::{PacmanConn, State};
use super::fetch::Failure;
use super::source::{Kept, RequestFields, Source, SourceKind};
use super::tls::TlsSession;
use super::{Context, Leftovers, Opened, Release, Wait, encode_path_segment};
use crate::http::url::Url;
use crate::net::{self, Want};
use crate::resolver::{Addresses, ResolveError};

/// What becomes of the connection kept from the last transfer when the next
/// source is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptUse {
    /// It carries the next request (same address, still open and quiet).
    Take,
    /// Back to the loop's idle pool, for any connection to that address.
    Park,
    /// Closed: an event came while it was idle and it is not of use now.
    Close,
}

/// The rule for the kept connection: it is taken for a source at its own
/// address when reuse is allowed and it is quiet (no event came while it was
/// idle, or one came but a peek shows it still open: `still_open`, asked
/// only then); otherwise a quiet one is parked, and one that saw an event
/// is closed.
pub fn kept_use(
    reuse: bool,
    same_addr: bool,
    saw_event: bool,
    still_open: impl FnOnce() -> bool,
) -> KeptUse {
    if reuse && same_addr && (!saw_event || still_open()) {
        KeptUse::Take
    } else if saw_event {
        KeptUse::Close
    } else {
        KeptUse::Park
    }
}

impl PacmanConn {
    /// The outbound socket the loop registers (by its id: a new id is a new
    /// socket).
    pub fn source_mut(&mut self) -> Option<(u32, &mut TcpStream)> {
        self.source.as_mut().map(|s| (s.id, &mut s.stream))
    }

    /// The loop saw the source token readable (or closed, `read_closed`):
    /// the transfer's source, or the kept connection when no transfer runs.
    pub fn source_event(&mut self, read_closed: bool) {
        match (self.source.as_mut(), self.kept.as_mut()) {
            (Some(source), _) => source.event(read_closed),
            (None, Some(kept)) => kept.event = true,
            (None, None) => {}
        }
    }

    /// A source socket this connection is done with, for the loop to
    /// deregister and park or close; the loop asks after every run until
    /// there are none.
    pub fn poll_release(&mut self) -> Option<Release> {
        self.released.pop()
    }

    /// Closes the connection: the question or lookup to cancel, and every
    /// source socket it held, to deregister and park or close. Its own socket
    /// closes when the loop drops it.
    pub fn close(&mut self) -> Leftovers {
        let wait = match self.state {
            State::Lookup { question, .. } => Some(Wait::Question(question)),
            State::Resolving { lookup, .. } => Some(Wait::Lookup(lookup)),
            _ => None,
        };
        self.set_state(State::Closed);
        self.drop_source();
        if let Some(k) = self.kept.take() {
            self.release_kept(k, KeptUse::Park);
        }
        Leftovers {
            wait,
            lead: self.job.take().filter(|j| j.leads).map(|j| j.file),
            sockets: std::mem::take(&mut self.released),
        }
    }

    /// The current source, if any, is closed.
    pub(super) fn drop_source(&mut self) {
        if let Some(source) = self.source.take() {
            self.close_source(source);
        }
    }

    /// Hands a source's socket back to the loop, to close.
    pub(super) fn close_source(&mut self, source: Source) {
        let Source { id, stream, .. } = source;
        self.released.push(Release::Close { id, stream });
    }

    /// Keeps a source connection whose answer was read to its end for this
    /// connection's next request (pacman asks the same mirror line for the
    /// next file); a request to another address parks it in the pool.
    pub(super) fn keep(&mut self, source: Source) {
        if let Some(old) = self.kept.replace(Kept::from(source)) {
            self.release_kept(old, KeptUse::Close);
        }
    }

    /// Lets go of a kept connection: parked when `how` says so and no event
    /// came while it was idle, else closed.
    fn release_kept(&mut self, kept: Kept, how: KeptUse) {
        let Kept {
            id,
            addr,
            stream,
            tls,
            event,
        } = kept;
        self.released
            .push(if how == KeptUse::Park && !event && tls.is_none() {
                Release::Park { id, addr, stream }
            } else {
                Release::Close { id, stream }
            });
    }

    /// Fetches from a source at `addr`.
    pub(super) fn connect(&mut self, kind: SourceKind, addr: SocketAddr, cx: &mut Context) {
        self.connect_with(kind, addr, true, cx);
    }

    /// Fetches from a source at `addr` over the connection kept from the last
    /// transfer (with `reuse`, when [`kept_use`] says so), or asks the loop
    /// for one ([`State::Connect`]: with `reuse`, an idle one from its pool).
    pub(super) fn connect_with(
        &mut self,
        kind: SourceKind,
        addr: SocketAddr,
        reuse: bool,
        cx: &mut Context,
    ) {
        if self.job.is_none() {
            return;
        }
        if let Some(k) = self.kept.take() {
            // Taken, it keeps its id: it is registered already.
            let same_name = k.tls.as_ref().map(|t| t.name()) == kind.tls_name();
            match kept_use(reuse, k.addr == addr && same_name, k.event, || {
                net::is_idle_open(&k.stream)
            }) {
                KeptUse::Take => {
                    let (id, stream) = (Some(k.id), k.stream);
                    return self.start_source(kind, addr, id, stream, k.tls, true, cx);
                }
                how => self.release_kept(k, how),
            }
        }
        self.set_state(State::Connect { kind, addr, reuse });
    }

    /// What the run ends with while it waits for the loop's connection.
    pub(super) fn want_connect(&self) -> Option<Want> {
        match &self.state {
            State::Connect { kind, addr, reuse } => Some(Want::Connect {
                addr: *addr,
                // The pool holds plain connections only.
                reuse: *reuse && kind.tls_name().is_none(),
            }),
            _ => None,
        }
    }

    /// The loop's answer to [`Want::Connect`]: the source starts on it, or,
    /// when there is no connection, the request goes on to the next address
    /// or source.
    pub(super) fn connected(
        &mut self,
        answer: Result<Opened, std::io::ErrorKind>,
        cx: &mut Context,
    ) {
        let (kind, addr) = match &self.state {
            State::Connect { kind, addr, .. } => (kind.clone(), *addr),
            _ => {
                // Not waiting for one (cannot happen): give it straight back.
                if let Ok(opened) = answer {
                    self.next_source_id = self.next_source_id.wrapping_add(1);
                    let id = self.next_source_id;
                    self.released.push(Release::Close {
                        id,
                        stream: opened.stream,
                    });
                }
                return;
            }
        };
        self.set_state(State::Fetch);
        match answer {
            Ok(opened) => {
                self.start_source(kind, addr, None, opened.stream, None, opened.reused, cx)
            }
            Err(e) => {
                debug!("connect to {addr}: {e}");
                self.fail_kind(kind, Failure::Unreachable(e), cx);
            }
        }
    }

    /// Starts the exchange with a source on `stream` (under `id` when it is
    /// the kept connection, registered already; else a new id), its request
    /// queued; over `tls` when kept with it, or over a new TLS session for an
    /// `https://` mirror (the trust store is read on the first).
    #[allow(clippy::too_many_arguments)]
    fn start_source(
        &mut self,
        kind: SourceKind,
        addr: SocketAddr,
        id: Option<u32>,
        stream: TcpStream,
        tls: Option<Box<TlsSession>>,
        reused: bool,
        cx: &mut Context,
    ) {
        let tls = match (tls, kind.tls_name()) {
            (Some(tls), Some(_)) => Ok(Some(tls)),
            (_, None) => Ok(None),
            (None, Some(name)) => cx
                .relay
                .tls
                .config()
                .and_then(|config| TlsSession::new(config, name))
                .map(|t| Some(Box::new(t))),
        };
        let failed = tls.as_ref().err().copied().filter(|_| self.job.is_some());
        let (Some(job), Ok(tls)) = (self.job.as_ref(), tls) else {
            self.next_source_id = self.next_source_id.wrapping_add(1);
            let id = id.unwrap_or(self.next_source_id);
            self.released.push(Release::Close { id, stream });
            if let Some(why) = failed {
                self.fail_kind(kind, Failure::Tls(why), cx);
            }
            return;
        };
        let range = job.asked(kind.is_peer()).range_field();
        let fields = RequestFields {
            head_only: job.head_only,
            range: range.as_deref(),
            // A continuation asks for bytes, not whether they changed.
            if_modified_since: job.if_modified_since.as_deref().filter(|_| !job.head_sent),
            secret: cx.relay.secret.as_ref(),
        };
        let request = Source::request(&kind, &encode_path_segment(&job.file), &fields);
        let id = id.unwrap_or_else(|| {
            self.next_source_id = self.next_source_id.wrapping_add(1);
            self.next_source_id
        });
        debug!("{}: fetching from {}", job.file, kind.describe());
        self.drop_source();
        self.source = Some(Source::new(
            id, kind, addr, stream, tls, reused, request, cx.now,
        ));
        self.set_state(State::Fetch);
    }

    /// Connects to the first address of upstream `index`, or goes on to the next source when
    /// its host name has none.
    pub(super) fn connect_upstream(
        &mut self,
        index: usize,
        url: Url,
        answer: Result<Addresses, ResolveError>,
        cx: &mut Context,
    ) {
        match answer {
            Ok(addresses) => {
                let addr = SocketAddr::new(addresses[0], url.port);
                let kind = SourceKind::Upstream {
                    index,
                    url,
                    addresses,
                    at: 0,
                };
                self.connect(kind, addr, cx);
            }
            Err(why) => {
                cx.relay.policy.warn_unresolved(&url.host, why, cx.now);
                self.next_source(cx);
            }
        }
    }

    /// After a failure to connect to an upstream's address: its next address, if it has one
    /// (true); when it was the last, the resolver forgets the name so that the next request
    /// asks the system again.
    pub(super) fn try_next_address(
        &mut self,
        kind: &SourceKind,
        failure: Failure,
        cx: &mut Context,
    ) -> bool {
        let SourceKind::Upstream {
            index,
            url,
            addresses,
            at,
        } = kind
        else {
            return false;
        };
        if !failure.is_connect() {
            return false;
        }
        let Some(&next) = addresses.get(at + 1) else {
            if addresses.len() > 1 {
                cx.resolver.forget(&url.host);
            }
            return false;
        };
        debug!(
            "upstream {}: {failure} at {}: trying its next address {next}",
            url.to_text(),
            addresses[*at]
        );
        let kind = SourceKind::Upstream {
            index: *index,
            url: url.clone(),
            addresses: addresses.clone(),
            at: at + 1,
        };
        self.connect(kind, SocketAddr::new(next, url.port), cx);
        true
    }

    pub(super) fn fail_kind(&mut self, kind: SourceKind, failure: Failure, cx: &mut Context) {
        if self.try_next_address(&kind, failure, cx) {
            return;
        }
        self.note_failure(&kind, failure, cx);
        self.next_source(cx);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::Upstreams;
    use crate::discovery::{Discovery, Identity, Params};
    use crate::relay::{Input, Relay};
    use crate::resolver::SystemResolver;
    use crate::trust::Trust;

    /// What a relay connection's run needs, with upstreams `templates` (IP
    /// literals: no lookup) and nothing else: no peers, no databases.
    struct World {
        relay: Relay,
        trust: Trust,
        discovery: Discovery,
        resolver: SystemResolver,
        scratch: Vec<u8>,
        _poll: mio::Poll,
    }

    impl World {
        fn new(templates: &[String], t0: Instant) -> World {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let me = Identity {
                host_id: 7,
                tcp_port: 19432,
                distro: "arch".into(),
                arch: "x86_64".into(),
            };
            World {
                relay: Relay::new(
                    Upstreams::explicit(templates.to_vec()),
                    Duration::from_secs(3600),
                ),
                trust: Trust::new(Vec::new(), t0),
                discovery: Discovery::new(me, Params::default(), t0, 1),
                resolver: SystemResolver::start(waker).unwrap(),
                scratch: vec![0; 64 * 1024],
                _poll: poll,
            }
        }

        fn run(&mut self, conn: &mut PacmanConn, now: Instant, input: Input) -> Want {
            let mut asked = Vec::new();
            conn.run(
                &mut Context {
                    now,
                    relay: &mut self.relay,
                    trust: &self.trust,
                    discovery: &mut self.discovery,
                    resolver: &mut self.resolver,
                    asked: &mut asked,
                    stopping: false,
                    scratch: &mut self.scratch,
                },
                input,
            )
        }
    }

    /// A relay connection with pacman's `request` read, and pacman's end.
    fn pacman_asks(request: &str, t0: Instant) -> (PacmanConn, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut pacman = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, remote) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        pacman.write_all(request.as_bytes()).unwrap();
        let mut conn = PacmanConn::new(TcpStream::from_std(accepted), remote, t0);
        conn.readable();
        (conn, pacman)
    }

    fn read_head(pacman: &mut StdStream) -> String {
        pacman
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = pacman.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    const DB_REQUEST: &str = "GET /core/os/x86_64/core.db HTTP/1.1\r\nHost: localhost\r\n\r\n";

    #[test]
    fn the_relay_asks_the_loop_for_each_connection_and_fails_over_without_one() {
        let t0 = Instant::now();
        let (a, b): (SocketAddr, SocketAddr) =
            (([192, 0, 2, 1], 8080).into(), ([192, 0, 2, 2], 8080).into());
        let templates = [a, b].map(|x| format!("http://{x}/$repo/os/$arch"));
        let mut world = World::new(&templates, t0);
        let (mut conn, mut pacman) = pacman_asks(DB_REQUEST, t0);
        // A database: from the first upstream, over a connection the loop makes.
        let want = world.run(&mut conn, t0, Input::Ready);
        assert_eq!(
            want,
            Want::Connect {
                addr: a,
                reuse: true
            }
        );
        // Asked again before an answer, it still waits for the same one.
        let t1 = t0 + Duration::from_millis(1);
        assert_eq!(world.run(&mut conn, t1, Input::Ready), want);
        let refused = || Input::Connected(Err(std::io::ErrorKind::ConnectionRefused));
        let want = world.run(&mut conn, t1, refused());
        assert_eq!(
            want,
            Want::Connect {
                addr: b,
                reuse: true
            }
        );
        let want = world.run(&mut conn, t1, refused());
        assert!(matches!(want, Want::Io { source: None, .. }), "{want:?}");
        assert!(read_head(&mut pacman).starts_with("HTTP/1.1 502 "));
        assert!(conn.poll_release().is_none(), "it never had a socket");
        assert!(conn.close().sockets.is_empty());
    }

    #[test]
    fn a_source_socket_comes_from_the_loop_and_goes_back_to_it() {
        let t0 = Instant::now();
        let mirror = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = mirror.local_addr().unwrap();
        let mut world = World::new(&[format!("http://{addr}/$repo/os/$arch")], t0);
        let (mut conn, mut pacman) = pacman_asks(DB_REQUEST, t0);
        let want = world.run(&mut conn, t0, Input::Ready);
        assert_eq!(want, Want::Connect { addr, reuse: true });
        // The loop's part: a new connection, handed in.
        let opened = Opened {
            stream: TcpStream::connect(addr).unwrap(),
            reused: false,
        };
        let (mut upstream, _) = mirror.accept().unwrap();
        let mut now = t0;
        let mut want = world.run(&mut conn, now, Input::Connected(Ok(opened)));
        let Want::Io {
            source: Some(id), ..
        } = want
        else {
            panic!("{want:?}");
        };
        // The request reaches the mirror (runs until the connect completed).
        upstream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..250 {
            if request.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            if let Ok(n) = upstream.read(&mut buf) {
                request.extend_from_slice(&buf[..n]);
            }
            now += Duration::from_millis(1);
            want = world.run(&mut conn, now, Input::Ready);
        }
        let request = String::from_utf8_lossy(&request);
        assert!(
            request.starts_with("GET /core/os/x86_64/core.db HTTP/1.1\r\n"),
            "{request}"
        );
        // A 404 read to its end: pacman gets it, the connection is kept.
        upstream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut head = None;
        for _ in 0..250 {
            conn.source_event(false);
            now += Duration::from_millis(1);
            want = world.run(&mut conn, now, Input::Ready);
            if conn.state == State::Head {
                head = Some(read_head(&mut pacman));
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let head = head.unwrap_or_else(|| panic!("no answer for pacman: {want:?}"));
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        assert!(conn.poll_release().is_none(), "kept for the next request");
        // Closing hands the kept connection back, to be parked.
        let left = conn.close();
        assert!(matches!(
            left.sockets.as_slice(),
            [Release::Park { id: i, addr: a, .. }] if *i == id && *a == addr
        ));
    }

    #[test]
    fn the_kept_connection_carries_the_next_request_to_its_address() {
        let never = || -> bool { panic!("no peek for a quiet connection") };
        assert_eq!(kept_use(true, true, false, never), KeptUse::Take);
        // An event while idle: a peek decides.
        assert_eq!(kept_use(true, true, true, || true), KeptUse::Take);
        assert_eq!(kept_use(true, true, true, || false), KeptUse::Close);
    }

    #[test]
    fn a_kept_connection_not_used_is_parked_when_quiet_and_closed_otherwise() {
        let never = || -> bool { panic!("no peek when it cannot be taken") };
        // Another address.
        assert_eq!(kept_use(true, false, false, never), KeptUse::Park);
        assert_eq!(kept_use(true, false, true, never), KeptUse::Close);
        // A reconnect after a stale kept-alive connection: never reused.
        assert_eq!(kept_use(false, true, false, never), KeptUse::Park);
        assert_eq!(kept_use(false, true, true, never), KeptUse::Close);
    }
}
