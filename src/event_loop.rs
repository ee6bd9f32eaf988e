//! The one event loop: a single `mio::Poll` on a single thread.
//!
//! Owns every socket registration, the token plan, the connection slot table
//! (with generation numbers so stale timers and events are skipped), the
//! deadline heap that sets the poll timeout, the per-turn work limits, the
//! signal pipe, and the clean stop. It does not parse or decide protocol
//! matters: the state machines in `serve`, `relay` and `discovery` do, and tell
//! it what they want.
//!
//! Token plan: fixed tokens below [`FIRST_SLOT`] for the singletons (signal
//! pipe, listeners, the multicast socket); a connection in slot `i` owns tokens
//! `FIRST_SLOT + 2i` (its accepted socket) and `FIRST_SLOT + 2i + 1` (an
//! outbound socket, for relayed transfers).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

use crate::cache::Cache;
use crate::http::response::{self, Status};
use crate::net::Want;
use crate::serve::{self, PeerConn};
use crate::signals::SignalPipe;

const SIGNALS: Token = Token(0);
const PEER_LISTENER: Token = Token(1);
/// First connection token; everything below is a singleton.
pub const FIRST_SLOT: usize = 16;

/// Connections accepted per listener per turn before other work runs.
const ACCEPTS_PER_TURN: usize = 64;
/// How long transfers in flight may go on after SIGTERM/SIGINT.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the daemon needs to start; built by `main` from the settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub cache_dirs: Vec<PathBuf>,
    /// Peer port, TCP (files) and UDP (announcements).
    pub port: u16,
    /// Bind address of the peer server (all IPv4 addresses in production).
    pub bind: Ipv4Addr,
    /// Connections per listener; past it new ones get a 503.
    pub max_connections: usize,
}

/// A connection in the slot table: a closed set, dispatched by `match`.
enum Conn {
    Peer(PeerConn),
}

impl Conn {
    fn stream_mut(&mut self) -> &mut TcpStream {
        match self {
            Conn::Peer(c) => c.stream_mut(),
        }
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
    /// Interest currently registered for the accepted socket.
    interest: Option<Interest>,
    /// Earliest deadline of this slot in the heap, if any.
    armed: Option<Instant>,
}

/// The slot table: connections by index, with free-list reuse.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
}

impl Slots {
    fn insert(&mut self, conn: Conn) -> (usize, u32) {
        self.live += 1;
        if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i];
            slot.generation = slot.generation.wrapping_add(1);
            slot.conn = Some(conn);
            slot.interest = None;
            slot.armed = None;
            return (i, slot.generation);
        }
        self.slots.push(Slot {
            generation: 0,
            conn: Some(conn),
            interest: None,
            armed: None,
        });
        (self.slots.len() - 1, 0)
    }

    fn get(&mut self, index: usize, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index)
            .filter(|s| s.generation == generation && s.conn.is_some())
    }

    fn remove(&mut self, index: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(index)?.conn.take()?;
        self.live -= 1;
        self.free.push(index);
        Some(conn)
    }
}

/// The running daemon.
pub struct Daemon {
    poll: Poll,
    signals: SignalPipe,
    peer_listener: Option<TcpListener>,
    cache: Cache,
    options: Options,
    slots: Slots,
    /// (deadline, slot, generation); stale entries are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Slots to run again without waiting for an event (budget spent).
    again: VecDeque<(usize, u32)>,
    /// Listeners with connections possibly left to accept.
    accept_pending: bool,
    counters: serve::Counters,
    started: Instant,
    stop_by: Option<Instant>,
}

impl Daemon {
    /// Binds every socket and installs the signal handlers. Fails (and the
    /// daemon exits 1) when a port is taken.
    pub fn new(options: Options) -> io::Result<Daemon> {
        let poll = Poll::new()?;
        let mut signals = SignalPipe::install()?;
        poll.registry()
            .register(signals.receiver(), SIGNALS, Interest::READABLE)?;
        let addr = SocketAddr::V4(SocketAddrV4::new(options.bind, options.port));
        let mut peer_listener = listen(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on TCP {addr} (peers): {e}"),
            )
        })?;
        poll.registry()
            .register(&mut peer_listener, PEER_LISTENER, Interest::READABLE)?;
        info!(
            "listening on TCP {} (peers fetch files here)",
            peer_listener.local_addr()?
        );
        let (cache, warnings) = Cache::new(&options.cache_dirs);
        for w in warnings {
            warn!("{w}");
        }
        for dir in cache.dirs() {
            info!("serving cache directory {}", dir.display());
        }
        Ok(Daemon {
            poll,
            signals,
            peer_listener: Some(peer_listener),
            cache,
            options,
            slots: Slots::default(),
            timers: BinaryHeap::new(),
            again: VecDeque::new(),
            accept_pending: false,
            counters: serve::Counters::default(),
            started: Instant::now(),
            stop_by: None,
        })
    }

    /// Runs until SIGTERM/SIGINT and the grace period are over.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(now),
                    PEER_LISTENER => self.accept_pending = true,
                    Token(t) if t >= FIRST_SLOT => {
                        let index = (t - FIRST_SLOT) / 2;
                        if let Some(generation) = self.slots.slots.get(index).map(|s| s.generation)
                        {
                            self.run_slot(index, generation, now);
                        }
                    }
                    Token(_) => {}
                }
            }
            if self.accept_pending {
                self.accept(now);
            }
            let again: Vec<_> = self.again.drain(..).collect();
            for (index, generation) in again {
                self.run_slot(index, generation, now);
            }
            self.fire_timers(now);
            if let Some(stop_by) = self.stop_by {
                if self.slots.live == 0 || now >= stop_by {
                    if self.slots.live > 0 {
                        info!("stopping with {} transfers cut short", self.slots.live);
                    }
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || self.accept_pending {
            return Some(Duration::ZERO);
        }
        let mut earliest = self.timers.peek().map(|Reverse((t, _, _))| *t);
        if let Some(stop_by) = self.stop_by {
            earliest = Some(earliest.map_or(stop_by, |t| t.min(stop_by)));
        }
        // Round up to the next millisecond: a timeout of 0 ms before a
        // deadline would spin.
        earliest.map(|t| {
            t.saturating_duration_since(now)
                .checked_add(Duration::from_micros(999))
                .unwrap_or(Duration::MAX)
        })
    }

    fn on_signals(&mut self, now: Instant) {
        let pending = self.signals.take();
        if pending.report {
            self.report(now);
        }
        if pending.rejoin {
            info!("SIGUSR2: nothing to rejoin yet");
        }
        if pending.stop && self.stop_by.is_none() {
            info!(
                "stopping: listeners closed, {} connections left",
                self.slots.live
            );
            if let Some(mut listener) = self.peer_listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            self.accept_pending = false;
            self.stop_by = Some(now + STOP_GRACE);
            // Let idle connections notice at once.
            for (index, slot) in self.slots.slots.iter().enumerate() {
                if slot.conn.is_some() {
                    self.again.push_back((index, slot.generation));
                }
            }
        }
    }

    /// SIGUSR1: one block of state in the log.
    fn report(&self, now: Instant) {
        let c = &self.counters;
        info!(
            "state: up {}s, {} peer connections, served {} requests, {} files, {} bytes, {} errors, {} refused (busy)",
            now.duration_since(self.started).as_secs(),
            self.slots.live,
            c.requests,
            c.files,
            c.bytes,
            c.errors,
            c.refused_busy
        );
        info!("peers: none known (discovery not running)");
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.peer_listener.as_mut() else {
                self.accept_pending = false;
                return;
            };
            let (stream, remote) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for
                    // now rather than spinning on them.
                    warn!("accept on the peer port failed: {e}");
                    self.accept_pending = false;
                    return;
                }
            };
            self.counters.connections += 1;
            if self.slots.live >= self.options.max_connections {
                self.counters.refused_busy += 1;
                debug!("peer {remote}: connection limit reached, 503");
                let mut page = Vec::new();
                response::error_page(&mut page, Status::ServiceUnavailable, false, true);
                let _ = crate::net::send(&stream, &page, false);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (index, generation) = self
                .slots
                .insert(Conn::Peer(PeerConn::new(stream, remote, now)));
            self.run_slot(index, generation, now);
        }
    }

    /// Runs the connection of a slot and applies what it wants.
    fn run_slot(&mut self, index: usize, generation: u32, now: Instant) {
        let stopping = self.stop_by.is_some();
        let Some(slot) = self.slots.get(index, generation) else {
            return;
        };
        let want = match slot.conn.as_mut() {
            Some(Conn::Peer(conn)) => conn.run(&mut serve::Context {
                cache: &self.cache,
                now,
                counters: &mut self.counters,
                stopping,
            }),
            None => return,
        };
        self.apply(index, generation, want);
    }

    fn apply(&mut self, index: usize, generation: u32, want: Want) {
        let registry = self.poll.registry();
        let Some(slot) = self.slots.get(index, generation) else {
            return;
        };
        match want {
            Want::Close => {
                if let Some(conn) = slot.conn.as_mut() {
                    let _ = registry.deregister(conn.stream_mut());
                }
                self.slots.remove(index);
            }
            Want::Io {
                read,
                write,
                deadline,
                again,
            } => {
                let interest = match (read, write) {
                    (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                    (false, true) => Some(Interest::WRITABLE),
                    _ => Some(Interest::READABLE),
                };
                if slot.interest != interest {
                    let token = Token(FIRST_SLOT + index * 2);
                    if let (Some(conn), Some(i)) = (slot.conn.as_mut(), interest) {
                        if let Err(e) = update_registration(
                            registry,
                            conn.stream_mut(),
                            token,
                            slot.interest,
                            i,
                        ) {
                            warn!("cannot register a connection: {e}");
                            self.slots.remove(index);
                            return;
                        }
                    }
                    slot.interest = interest;
                }
                if let Some(deadline) = deadline {
                    if slot.armed.is_none_or(|armed| deadline < armed) {
                        slot.armed = Some(deadline);
                        self.timers.push(Reverse((deadline, index, generation)));
                    }
                }
                if again {
                    self.again.push_back((index, generation));
                }
            }
        }
    }

    /// Runs every slot whose deadline passed. A slot's heap entry may be
    /// earlier than its real deadline (it moved later): it simply runs, finds
    /// nothing due, and re-arms.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((deadline, index, generation))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get(index, generation) else {
                continue;
            };
            if slot.armed != Some(deadline) {
                continue;
            }
            slot.armed = None;
            self.run_slot(index, generation, now);
        }
    }
}

fn update_registration(
    registry: &Registry,
    stream: &mut TcpStream,
    token: Token,
    old: Option<Interest>,
    new: Interest,
) -> io::Result<()> {
    match old {
        None => registry.register(stream, token, new),
        Some(_) => registry.reregister(stream, token, new),
    }
}

/// A non-blocking listener with `SO_REUSEADDR` and a deep backlog.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}
