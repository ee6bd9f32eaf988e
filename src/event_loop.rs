//! The one event loop: a single `mio::Poll` on a single thread.
//!
//! Owns every socket: it creates them (listeners, accepted connections, and
//! the relay's source connections, which the relay asks for with
//! [`Want::Connect`]), registers, deregisters and closes them, and keeps the
//! idle kept-alive source connections in a [`relay::Pool`]. Owns also the
//! token plan, the connection slot table
//! (with generation numbers so stale timers and events are skipped), the
//! deadline heap that sets the poll timeout, the per-turn work limits, the
//! signal pipe, the multicast socket's I/O, the routing of discovery answers
//! to the connections that asked, the slices of time given to reading sync
//! databases and hashing cached files ([`crate::trust`]), the state report,
//! and the clean stop. It does
//! not parse or decide protocol matters: the state machines in `serve`, `relay`
//! and `discovery` do, and tell it what they want.
//!
//! Token plan: fixed tokens below [`FIRST_SLOT`] for the singletons (signal
//! pipe, listeners, the multicast socket); a connection in slot `i` owns tokens
//! `FIRST_SLOT + 2i` (its accepted socket) and `FIRST_SLOT + 2i + 1` (its
//! outbound socket, for relayed transfers).
//!
//! One pass: poll; read the clock once; handle events (signals first);
//! accept; run connections that asked to run again; join the multicast group
//! when due; discovery timeouts; route discovery answers; look at the sync
//! databases when due and read or hash for about a millisecond; fire connection
//! deadlines; send queued datagrams; check the stop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::activation::{self, Role};
use crate::cache::Cache;
use crate::cache_watch::{self, CacheChange, CacheWatch};
use crate::config::Settings;
use crate::discovery::{
    self, Discovery, Event, Identity, MulticastSocket, Params, StaticPeers, Transmit,
};
use crate::http::response::{self, Status};
use crate::memory::{self, idle::IdleTrim};
use crate::net::Want;
use crate::netlink::LinkWatch;
use crate::rate_limit::RateLimit;
use crate::relay::{self, Input, Opened, PacmanConn, Release, Wait};
use crate::resolver::SystemResolver;
use crate::secret::{self, DatagramAuth, Refusals, Secret};
use crate::serve::{self, PeerConn};
use crate::signals::SignalPipe;
use crate::status;
use crate::suspend::{self, SleepWatch};
use crate::trust::Trust;

mod spool_turn;

const SIGNALS: Token = Token(0);
const PEER_LISTENER: Token = Token(1);
const LOCAL_V4: Token = Token(2);
const LOCAL_V6: Token = Token(3);
const DISCOVERY: Token = Token(4);
/// The resolver thread's waker: answers are ready.
const RESOLVER: Token = Token(5);
/// rtnetlink: interfaces and addresses changed.
const LINKS: Token = Token(6);
/// inotify: names came into or left the cache directories.
const CACHE_WATCH: Token = Token(7);
/// The peer file server on `[::]` (IPv6 only; `PEER_LISTENER` is on `0.0.0.0`).
const PEER_V6: Token = Token(8);
/// Listener tokens are below this (they index `accept_pending`).
const LISTENER_TOKENS: usize = 9;
/// A burst of link and address events is one rejoin, this long after the first.
const LINK_SETTLE: Duration = Duration::from_millis(200);
/// Rejoins for link and address events are at least this far apart (a flapping interface
/// cannot make a storm of HELLOs).
const LINK_REJOIN_GAP: Duration = Duration::from_secs(1);
/// First connection token; everything below is a singleton.
pub const FIRST_SLOT: usize = 16;

/// Connections accepted per listener per turn before other work runs.
const ACCEPTS_PER_TURN: usize = 64;
/// Source connections opened for one connection in one run before it waits
/// for the next pass (each failed connect moves its request on to another
/// address or source, so this is only a bound).
const CONNECTS_PER_RUN: usize = 16;
/// Datagrams read per turn.
const DATAGRAMS_PER_TURN: usize = 256;
/// Connections at most from one address to the peer port (as nginx's `limit_conn`): one host
/// cannot hold every slot with idle connections. A host's relay uses one connection per
/// parallel download, plus the idle ones it keeps (32 at most), so this never limits an honest
/// peer.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// After pacman got a database through the relay, the sync databases are looked at this
/// soon (besides every [`crate::trust::LOOK_EVERY`]).
const DB_LOOK_AFTER_RELAY: Duration = Duration::from_millis(500);
/// How long transfers in flight may go on after SIGTERM/SIGINT.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A connection in the slot table: a closed set, dispatched by `match`.
enum Conn {
    Peer(Box<PeerConn>),
    Pacman(Box<PacmanConn>),
}

impl Conn {
    fn stream_mut(&mut self) -> &mut TcpStream {
        match self {
            Conn::Peer(c) => c.stream_mut(),
            Conn::Pacman(c) => c.stream_mut(),
        }
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
    /// The accepted socket is in the poll set.
    registered: bool,
    /// The outbound socket registered (by its id), if any.
    source: Option<u32>,
    /// Earliest deadline of this slot in the heap, if any.
    armed: Option<Instant>,
    /// The address of a peer connection, counted in `Slots::per_address`.
    peer_ip: Option<IpAddr>,
}

/// The slot table: connections by index, with free-list reuse.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    peers: usize,
    pacman: usize,
    /// Peer connections by source address.
    per_address: HashMap<IpAddr, usize>,
}

impl Slots {
    /// Adds a connection; `peer_ip` is the source address of a peer connection.
    fn insert(&mut self, conn: Conn, peer_ip: Option<IpAddr>) -> (usize, u32) {
        let peer_ip = peer_ip.map(source_key);
        match conn {
            Conn::Peer(_) => self.peers += 1,
            Conn::Pacman(_) => self.pacman += 1,
        }
        if let Some(ip) = peer_ip {
            *self.per_address.entry(ip).or_default() += 1;
        }
        if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i];
            slot.generation = slot.generation.wrapping_add(1);
            slot.conn = Some(conn);
            slot.registered = false;
            slot.source = None;
            slot.armed = None;
            slot.peer_ip = peer_ip;
            return (i, slot.generation);
        }
        self.slots.push(Slot {
            generation: 0,
            conn: Some(conn),
            registered: false,
            source: None,
            armed: None,
            peer_ip,
        });
        (self.slots.len() - 1, 0)
    }

    fn get(&mut self, index: usize, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index)
            .filter(|s| s.generation == generation && s.conn.is_some())
    }

    fn remove(&mut self, index: usize) -> Option<Conn> {
        let slot = self.slots.get_mut(index)?;
        let conn = slot.conn.take()?;
        if let Some(ip) = slot.peer_ip.take() {
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
        match conn {
            Conn::Peer(_) => self.peers -= 1,
            Conn::Pacman(_) => self.pacman -= 1,
        }
        self.free.push(index);
        Some(conn)
    }

    fn live(&self) -> usize {
        self.peers + self.pacman
    }

    /// Peer connections open from `ip` (from its /64, for IPv6).
    fn peers_at(&self, ip: IpAddr) -> usize {
        self.per_address.get(&source_key(ip)).copied().unwrap_or(0)
    }
}

/// What the per-address connection limit counts `ip` as: an IPv4 address as itself (also when
/// mapped into IPv6), an IPv6 address as its /64, which one host can fill with as many
/// addresses as it likes.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The multicast side: the sans-IO core and its socket.
struct Multicast {
    core: Discovery,
    socket: MulticastSocket,
    interfaces: Vec<String>,
    /// A datagram that met `WouldBlock`, sent first next time.
    pending: Option<Transmit>,
    /// WRITABLE is registered (only while `pending` waits).
    writable: bool,
    /// What the last join did: interfaces joined, and those that failed with why.
    joined: Vec<String>,
    join_errors: Vec<(String, String)>,
    /// When the last HELLO went out (every successful join is followed by one).
    hello_at: Instant,
    /// The addresses of the interfaces at the last join (see `join_group`).
    addresses: Vec<IpAddr>,
    /// `Peer =` hosts, resolved on the resolver thread.
    static_peers: StaticPeers,
    /// With a shared secret: seals what goes out, opens what comes in.
    auth: Option<DatagramAuth>,
}

/// The running daemon.
pub struct Daemon {
    poll: Poll,
    signals: SignalPipe,
    /// The peer file server: on `0.0.0.0`, and on `[::]` where the kernel has IPv6.
    peer_listeners: Vec<(Token, TcpListener)>,
    local_listeners: Vec<(Token, TcpListener)>,
    cache: Cache,
    /// The sync databases and the digests of cached files.
    trust: Trust,
    max_connections: usize,
    multicast: Multicast,
    relay: relay::Relay,
    /// Kept-alive source connections no transfer holds, out of the poll set.
    idle_sources: relay::Pool<TcpStream>,
    slots: Slots,
    /// (deadline, slot, generation); stale entries are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Slots to run again without waiting for an event (budget spent).
    again: VecDeque<(usize, u32)>,
    /// Upstream host names, resolved by `getaddrinfo` on the helper thread.
    resolver: SystemResolver,
    /// Link and address events (none where rtnetlink cannot be opened: SIGUSR2 still works).
    links: Option<LinkWatch>,
    /// inotify on the cache directories (the summary peers ask by).
    cache_watch: Option<CacheWatch>,
    /// Notices a suspend (boot time jumping ahead of the monotonic clock).
    sleep: SleepWatch,
    /// When to give memory back (after start-up, and after each busy spell).
    idle_trim: IdleTrim,
    /// Turns spent reading the sync databases: work, for [`IdleTrim`].
    database_turns: u64,
    /// When a rejoin is due after link or address events, and when the last one was.
    rejoin_at: Option<Instant>,
    last_link_rejoin: Option<Instant>,
    /// An interface or an IPv6 link-local address changed (not only other addresses) since
    /// the last rejoin for such events.
    links_changed: bool,
    /// Open discovery questions and name lookups, and the slot waiting on each.
    waits: HashMap<Wait, (usize, u32)>,
    /// Listeners with connections possibly left to accept.
    accept_pending: [bool; LISTENER_TOKENS],
    /// The one read buffer, lent to each connection run.
    scratch: Vec<u8>,
    /// The multicast socket may hold more datagrams (a turn's worth was read).
    again_discovery: bool,
    counters: serve::Counters,
    /// The relay's count of databases relayed, when last seen.
    databases_relayed: u64,
    started: Instant,
    /// The loopback port, for the status pages.
    local_port: u16,
    stop_by: Option<Instant>,
    /// Peer connections refused for [`MAX_CONNECTIONS_PER_ADDRESS`], and their warnings.
    refused_per_address: u64,
    crowded_warnings: RateLimit,
    /// The shared secret, if any, and what was refused for want of it.
    secret: Option<Secret>,
    refusals: Refusals,
}

impl Daemon {
    /// Binds every socket and installs the signal handlers. Fails (and the
    /// daemon exits 1) when a port is taken.
    pub fn new(settings: &Settings) -> io::Result<Daemon> {
        let now = Instant::now();
        let credentials = std::env::var("CREDENTIALS_DIRECTORY").ok();
        let secret_file =
            crate::secret::file_to_use(settings.secret_file.as_deref(), credentials.as_deref());
        let secret = match &secret_file {
            Some(path) => {
                let secret = Secret::load(path)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                info!(
                    "shared secret from {}: datagrams and peer requests are authenticated",
                    path.display()
                );
                Some(secret)
            }
            None => None,
        };
        let poll = Poll::new()?;
        let mut signals = SignalPipe::install()?;
        poll.registry()
            .register(signals.receiver(), SIGNALS, Interest::READABLE)?;

        // Listeners systemd holds for us (flocon.socket) come first; the rest are bound here.
        let (mut passed, refused) = activation::take_listeners(settings.port, settings.local_port);
        for why in refused {
            warn!("socket passed by systemd not used: {why}");
        }
        let mut take_or_bind = |role: Role, addr: SocketAddr, what: &str| {
            if let Some(i) = passed.iter().position(|(r, _)| *r == role) {
                let (_, listener) = passed.swap_remove(i);
                let local = listener.local_addr().map_or(addr, |a| a);
                info!("listening on TCP {local} ({what}), a socket from systemd");
                return Ok(TcpListener::from_std(listener));
            }
            let listener = listen(addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on TCP {addr} ({what}): {e}"),
                )
            })?;
            info!("listening on TCP {addr} ({what})");
            Ok::<_, io::Error>(listener)
        };

        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.port));
        let mut peer_listener = take_or_bind(Role::Peer, addr, "peers fetch files here")?;
        poll.registry()
            .register(&mut peer_listener, PEER_LISTENER, Interest::READABLE)?;
        let mut peer_listeners = vec![(PEER_LISTENER, peer_listener)];
        // Two listeners rather than one dual-stack `[::]`: IPv4 peers keep plain IPv4
        // addresses (no `::ffff:` mapping), and a kernel without IPv6 only loses this one.
        let addr6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, settings.port));
        match take_or_bind(Role::PeerV6, addr6, "peers fetch files here over IPv6") {
            Ok(mut listener) => {
                poll.registry()
                    .register(&mut listener, PEER_V6, Interest::READABLE)?;
                peer_listeners.push((PEER_V6, listener));
            }
            Err(e) => debug!("no IPv6 peer listener ({e})"),
        }

        let mut local_listeners = Vec::new();
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, settings.local_port));
        let mut listener = take_or_bind(Role::LocalV4, v4, "pacman downloads through here")?;
        poll.registry()
            .register(&mut listener, LOCAL_V4, Interest::READABLE)?;
        local_listeners.push((LOCAL_V4, listener));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, settings.local_port));
        match take_or_bind(Role::LocalV6, v6, "pacman downloads through here") {
            Ok(mut listener) => {
                poll.registry()
                    .register(&mut listener, LOCAL_V6, Interest::READABLE)?;
                local_listeners.push((LOCAL_V6, listener));
            }
            Err(e) => debug!("no IPv6 loopback listener ({e})"),
        }

        let mut socket = MulticastSocket::open(settings.port, settings.group, settings.group6)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open UDP port {} (discovery): {e}", settings.port),
                )
            })?;
        for s in socket.sockets_mut() {
            poll.registry().register(s, DISCOVERY, Interest::READABLE)?;
        }
        let me = Identity {
            host_id: discovery::random_seed(),
            tcp_port: settings.port,
            distro: settings.distro.clone(),
            arch: settings.architecture.clone(),
        };
        let groups = match socket.group6() {
            Some(g6) => format!(
                "UDP 0.0.0.0:{0} and [::]:{0} (multicast groups {1} and {g6})",
                settings.port, settings.group
            ),
            None => format!(
                "UDP 0.0.0.0:{} (multicast group {})",
                settings.port, settings.group
            ),
        };
        info!(
            "listening on {groups}, host id {:016x}, {}/{}",
            me.host_id, me.distro, me.arch
        );
        let params = Params {
            announce_interval: settings.announce_interval,
            lookup_timeout: settings.lookup_timeout,
            ..Params::default()
        };
        let mut core = Discovery::new(me, params, now, discovery::random_seed());

        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), RESOLVER)?);
        let resolver = SystemResolver::start(waker)?;
        let links = match LinkWatch::open() {
            Ok(watch) => {
                poll.registry().register(
                    &mut SourceFd(&watch.raw_fd()),
                    LINKS,
                    Interest::READABLE,
                )?;
                Some(watch)
            }
            Err(e) => {
                warn!("no rtnetlink socket ({e}): after a network change, SIGUSR2 rejoins");
                None
            }
        };

        let (cache, warnings) = Cache::new(&settings.cache_dirs);
        for w in warnings {
            warn!("{w}");
        }
        for dir in cache.dirs() {
            info!("serving cache directory {}", dir.display());
        }
        // What the caches hold, for the summary peers ask by; kept current by inotify.
        let cache_watch = match CacheWatch::open(cache.dirs()) {
            Ok((watch, warnings)) => {
                for w in warnings {
                    warn!("{w}");
                }
                poll.registry().register(
                    &mut SourceFd(&watch.raw_fd()),
                    CACHE_WATCH,
                    Interest::READABLE,
                )?;
                Some(watch)
            }
            Err(e) => {
                warn!("no inotify ({e}): peers learn of new cache files at each rescan only");
                None
            }
        };
        let names = cache_watch::scan(cache.dirs());
        core.set_cache_names(names.iter().map(String::as_str), now);
        let spool = spool_turn::open(settings);
        let upstreams = settings.upstreams.clone();
        if upstreams.is_empty() {
            info!("no upstream mirror: files no peer has are answered 404");
        }
        Ok(Daemon {
            poll,
            signals,
            peer_listeners,
            local_listeners,
            cache,
            trust: Trust::new(settings.sync_databases.clone(), now),
            max_connections: settings.max_connections,
            multicast: Multicast {
                core,
                socket,
                interfaces: settings.interfaces.clone(),
                pending: None,
                writable: false,
                joined: Vec::new(),
                join_errors: Vec::new(),
                hello_at: now,
                addresses: Vec::new(),
                static_peers: StaticPeers::new(&settings.peers, settings.port, now),
                auth: secret.clone().map(DatagramAuth::new),
            },
            relay: relay::Relay {
                https: settings.https,
                tls: relay::tls::TlsTrust::new(settings.ca_file.clone()),
                secret: secret.clone(),
                spool,
                ..relay::Relay::new(upstreams, settings.ban_time)
            },
            idle_sources: relay::Pool::default(),
            slots: Slots::default(),
            timers: BinaryHeap::new(),
            again: VecDeque::new(),
            resolver,
            links,
            cache_watch,
            sleep: SleepWatch::default(),
            idle_trim: IdleTrim::default(),
            database_turns: 0,
            rejoin_at: None,
            last_link_rejoin: None,
            links_changed: false,
            waits: HashMap::new(),
            accept_pending: [false; LISTENER_TOKENS],
            again_discovery: false,
            scratch: vec![0; serve::READ_CHUNK],
            counters: serve::Counters::default(),
            databases_relayed: 0,
            started: now,
            local_port: settings.local_port,
            stop_by: None,
            refused_per_address: 0,
            crowded_warnings: RateLimit::default(),
            secret,
            refusals: Refusals::default(),
        })
    }

    /// Runs until SIGTERM/SIGINT and the grace period are over.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            self.prune_timers();
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.trust.new_turn();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals(now),
                    DISCOVERY => {
                        if event.is_readable() {
                            self.receive_datagrams(now);
                        }
                    }
                    RESOLVER => self.resolver_answers(now),
                    LINKS => self.link_events(now),
                    CACHE_WATCH => self.cache_events(now),
                    Token(t) if t < 4 || t == PEER_V6.0 => self.accept_pending[t] = true,
                    Token(t) if t >= FIRST_SLOT => {
                        let index = (t - FIRST_SLOT) / 2;
                        let client = (t - FIRST_SLOT) % 2 == 0;
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        if let Some(slot) = self.slots.slots.get_mut(index) {
                            let generation = slot.generation;
                            if readable {
                                match slot.conn.as_mut() {
                                    Some(Conn::Peer(c)) if client => c.readable(),
                                    Some(Conn::Pacman(c)) if client => c.readable(),
                                    Some(Conn::Pacman(c)) => {
                                        c.source_event(event.is_read_closed() || event.is_error())
                                    }
                                    _ => {}
                                }
                            }
                            self.run_slot(index, generation, now);
                        }
                    }
                    Token(_) => {}
                }
            }
            self.accept(now);
            // Slots queued while these run wait for the next pass.
            for _ in 0..self.again.len() {
                if let Some((index, generation)) = self.again.pop_front() {
                    self.run_slot(index, generation, now);
                }
            }
            self.rejoin_when_due(now);
            self.discovery_turn(now);
            let relayed = self.relay.policy.counters.databases_relayed;
            if relayed != self.databases_relayed {
                // pacman renames a database into place right after its download.
                self.databases_relayed = relayed;
                self.trust.databases.look_soon(now + DB_LOOK_AFTER_RELAY);
            }
            self.trust.handle_timeout(now, false);
            if self.trust.is_busy() {
                self.trust.work(&self.cache);
            }
            self.fire_timers(now);
            self.spool_turn(now);
            self.cache.expire(now);
            self.idle_sources.handle_timeout(now);
            self.flush_datagrams();
            self.give_back_when_idle(now);
            if let Some(stop_by) = self.stop_by {
                if self.slots.live() == 0 || now >= stop_by {
                    if self.slots.live() > 0 {
                        info!("stopping with {} transfers cut short", self.slots.live());
                    }
                    self.relay.spool.close();
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty()
            || self.again_discovery
            || self.accept_pending.iter().any(|&p| p)
            || self.trust.is_busy()
        {
            return Some(Duration::ZERO);
        }
        let deadlines = [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.stop_by,
            self.multicast.core.poll_timeout(),
            self.multicast.static_peers.poll_timeout(),
            self.rejoin_at,
            self.cache.next_expiry(),
            self.idle_sources.poll_timeout(),
            self.trust.poll_timeout(),
            self.relay.spool.poll_timeout(),
            self.idle_trim.poll_timeout(),
        ];
        let earliest = deadlines.into_iter().flatten().min();
        // Round up to the next millisecond: a timeout that rounds down to 0
        // before a deadline would spin.
        earliest.map(|t| {
            t.saturating_duration_since(now)
                .checked_add(Duration::from_micros(999))
                .unwrap_or(Duration::MAX)
        })
    }

    fn memory_state(&self) -> status::MemoryState {
        let resident = memory::resident();
        status::MemoryState {
            resident_bytes: resident.map(|r| r.total_kib * 1024),
            anonymous_bytes: resident.map(|r| r.anonymous_kib * 1024),
            given_back: self.idle_trim.count,
        }
    }

    /// Gives memory back once the loop has been quiet for [`memory::idle::QUIET`] after
    /// work: no connection, no sync database being read, no name being resolved (the
    /// resolver thread then maps nothing, which [`memory::give_back`] needs).
    fn give_back_when_idle(&mut self, now: Instant) {
        if self.trust.is_busy() {
            self.database_turns += 1;
        }
        let work =
            self.relay.policy.counters.requests + self.counters.requests + self.database_turns;
        let busy = self.slots.live() > 0
            || self.trust.is_busy()
            || self.resolver.in_flight() > 0
            || self.stop_by.is_some();
        self.idle_trim.handle_turn(now, busy, work);
        if self.idle_trim.handle_timeout(now, work) {
            let done = memory::give_back();
            let kib = |r: Option<memory::Resident>| r.map_or(0, |r| r.total_kib);
            debug!(
                "idle: gave memory back, resident {} KiB -> {} KiB ({} read-only mappings dropped)",
                kib(done.before),
                kib(done.after),
                done.mappings
            );
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let pending = self.signals.take();
        if pending.report {
            for line in self.status_text(now).lines() {
                info!("{line}");
            }
        }
        if pending.rejoin && self.stop_by.is_none() {
            info!(
                "SIGUSR2: rejoining the multicast group, forgetting cached mirror addresses, \
                 looking at the sync databases"
            );
            self.resolver.forget_all();
            self.multicast.static_peers.refresh(now);
            self.trust.handle_timeout(now, true);
            self.join_group(now);
            self.multicast.core.rejoin(now);
        }
        if pending.stop && self.stop_by.is_none() {
            info!(
                "stopping: listeners closed, {} connections left",
                self.slots.live()
            );
            for (_, mut listener) in self.peer_listeners.drain(..) {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            for (_, mut listener) in self.local_listeners.drain(..) {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            self.accept_pending = [false; LISTENER_TOKENS];
            self.multicast.core.goodbye();
            self.stop_by = Some(now + STOP_GRACE);
            if let Err(e) = crate::notify::notify("STOPPING=1") {
                debug!("sd_notify STOPPING=1: {e}");
            }
            // Let idle connections notice at once.
            for (index, slot) in self.slots.slots.iter().enumerate() {
                if slot.conn.is_some() {
                    self.again.push_back((index, slot.generation));
                }
            }
        }
    }

    /// A page of the loopback port.
    fn page(&self, page: relay::Page, now: Instant) -> String {
        match page {
            relay::Page::Text => self.status_text(now),
            relay::Page::Json => status::render::json(&self.snapshot(now)),
            relay::Page::Metrics => status::metrics::render(&self.snapshot(now)),
        }
    }

    /// What the JSON status and the metrics tell.
    fn snapshot(&self, now: Instant) -> status::Snapshot {
        let me = self.multicast.core.identity();
        let policy = &self.relay.policy;
        let bans: Vec<&relay::Ban> = policy.bans_in_force(now).collect();
        let peers: Vec<status::PeerStatus> = self
            .multicast
            .core
            .peers()
            .map(|p| {
                let tally = policy.peer_tally(p.host_id);
                status::PeerStatus {
                    host_id: p.host_id,
                    addr: p.addr,
                    zone: discovery::zone_of(p.addr),
                    heard_at: p.bound.addresses().map(discovery::show_addr).collect(),
                    distro: p.distro.clone(),
                    arch: p.arch.clone(),
                    compatible: p.compatible,
                    heard_secs_ago: now.saturating_duration_since(p.last_heard).as_secs(),
                    files_to_us: tally.files,
                    bytes_to_us: tally.bytes,
                    backed_off: policy.is_backed_off(p.host_id, now),
                    banned: bans
                        .iter()
                        .find(|b| b.host_id == p.host_id || b.ip == p.addr.ip())
                        .map(|b| b.reason.clone()),
                    summary_names: p.summary.current_len().map(|n| n as u64),
                    answer_us: p.answers.smoothed().map(|t| t.as_micros() as u64),
                    silent: p.missed,
                }
            })
            .collect();
        let m = &self.multicast;
        let heard_since_hello = m
            .core
            .peers()
            .filter(|p| p.last_heard >= m.hello_at)
            .count();
        status::Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: now.duration_since(self.started).as_secs(),
            host_id: me.host_id,
            distro: me.distro.clone(),
            arch: me.arch.clone(),
            peer_port: me.tcp_port,
            local_port: self.local_port,
            multicast: status::Multicast {
                group: Some(m.socket.group()),
                joined: m.socket.joined_in(false),
                group6: m.socket.group6(),
                joined6: m.socket.joined_in(true),
                join_errors: m.join_errors.clone(),
                hello_secs_ago: now.saturating_duration_since(m.hello_at).as_secs(),
                peers_heard_since_hello: heard_since_hello,
                summary_version: m.core.summary_version().0,
                summary_names: m.core.summary_version().1 as u64,
                refused_announcements: m.core.refused_announcements(),
                refused_answers: m.core.refused_answers(),
                off_link_datagrams: m.socket.off_link(),
                udp_receive_buffer_errors: std::fs::read_to_string("/proc/net/snmp")
                    .ok()
                    .and_then(|t| status::udp_rcvbuf_errors(&t)),
            },
            peers,
            bans: bans
                .iter()
                .map(|b| status::BanStatus {
                    host_id: b.host_id,
                    ip: b.ip,
                    secs_left: b.until.saturating_duration_since(now).as_secs(),
                    reason: b.reason.clone(),
                })
                .collect(),
            transfers: self
                .slots
                .slots
                .iter()
                .filter_map(|s| match &s.conn {
                    Some(Conn::Pacman(c)) => c.transfer(),
                    _ => None,
                })
                .collect(),
            relay: policy.counters,
            server: self.counters,
            server_connections: self.slots.peers,
            cache_dirs: self
                .cache
                .dirs()
                .map(|dir| status::CacheDir {
                    path: dir.to_path_buf(),
                    // Read as the daemon's own user: what `flocon doctor` wants to know.
                    error: std::fs::read_dir(dir).err().map(|e| e.to_string()),
                })
                .collect(),
            static_peers: m.static_peers.describe(),
            secret: self.secret.as_ref().map(|_| self.refusals.status()),
            spool: self.spool_state(now),
            memory: self.memory_state(),
        }
    }

    /// The status page, also logged on SIGUSR1.
    fn status_text(&self, now: Instant) -> String {
        let mut text = format!(
            "flocon {}: up {} s\n",
            env!("CARGO_PKG_VERSION"),
            now.duration_since(self.started).as_secs()
        );
        for line in self.multicast.core.describe_peers(now) {
            text.push_str(&line);
            text.push('\n');
        }
        for line in self.multicast.static_peers.describe() {
            text.push_str(&line);
            text.push('\n');
        }
        let transfers: Vec<String> = self
            .slots
            .slots
            .iter()
            .filter_map(|s| match &s.conn {
                Some(Conn::Pacman(c)) => c.describe(),
                _ => None,
            })
            .collect();
        text.push_str(&format!("{} transfers in flight\n", transfers.len()));
        for t in transfers {
            text.push_str(&format!("  {t}\n"));
        }
        text.push_str(&self.spool_text(now));
        if let Some(r) = memory::resident() {
            text.push_str(&format!(
                "memory: {} KiB resident, {} KiB of it its own; given back after {} quiet spells\n",
                r.total_kib, r.anonymous_kib, self.idle_trim.count
            ));
        }
        let r = &self.relay.policy.counters;
        text.push_str(&format!(
            "relay: {} requests, {} files ({} bytes) from peers, {} files ({} bytes) from upstream, {} redirects, {} not found, {} failures, {} failovers, {} bodies verified, {} wrong\n",
            r.requests,
            r.from_peers,
            r.bytes_from_peers,
            r.from_upstream,
            r.bytes_from_upstream,
            r.redirects,
            r.not_found,
            r.failures,
            r.failovers,
            r.verified,
            r.verify_failures
        ));
        for line in self.relay.policy.describe_bans(now) {
            text.push_str(&line);
            text.push('\n');
        }
        for line in self.trust.describe() {
            text.push_str(&line);
            text.push('\n');
        }
        if self.secret.is_some() {
            text.push_str(&self.refusals.describe());
        }
        let c = &self.counters;
        text.push_str(&format!(
            "peer server: {} connections now, {} since start, {} requests, {} files, {} bytes sent, {} errors, {} refused (busy), {} of them over {MAX_CONNECTIONS_PER_ADDRESS} from one address\n",
            self.slots.peers,
            c.connections,
            c.requests,
            c.files,
            c.bytes,
            c.errors,
            c.refused_busy,
            self.refused_per_address
        ));
        text
    }

    // ---- discovery ---------------------------------------------------------

    fn join_group(&mut self, now: Instant) {
        // Peers bind a host id to the address they first heard it from: a host whose addresses
        // changed (a new DHCP lease, another network) takes a new host id so that they list it
        // at its new address at once.
        let addresses = self.local_addresses();
        if !self.multicast.addresses.is_empty()
            && !addresses.is_empty()
            && addresses != self.multicast.addresses
        {
            self.multicast.core.new_host_id(discovery::random_seed());
        }
        if !addresses.is_empty() {
            self.multicast.addresses = addresses;
        }
        let report = self.multicast.socket.join(&self.multicast.interfaces);
        self.multicast.joined.clone_from(&report.joined);
        self.multicast.join_errors = report
            .errors
            .iter()
            .map(|(name, e)| (name.clone(), e.to_string()))
            .collect();
        if report.is_success() {
            self.multicast.hello_at = now;
            let socket = &self.multicast.socket;
            let v4 = socket.joined_in(false);
            if !v4.is_empty() {
                info!(
                    "multicast group {} joined on {}",
                    socket.group(),
                    v4.join(", ")
                );
            }
            let v6 = socket.joined_in(true);
            if let (Some(group6), false) = (socket.group6(), v6.is_empty()) {
                info!("multicast group {group6} joined on {}", v6.join(", "));
            }
        }
        self.multicast.core.handle_join(now, &report);
    }

    /// inotify said names came into or left the caches: keep the summary current.
    fn cache_events(&mut self, now: Instant) {
        let Some(watch) = &self.cache_watch else {
            return;
        };
        let mut changes = Vec::new();
        watch.read(&mut changes, 16);
        let core = &mut self.multicast.core;
        let mut rescan = false;
        for change in changes {
            match change {
                CacheChange::Added(name) => {
                    core.cache_added(&name);
                    spool_turn::landed(&mut self.relay.spool, &mut self.trust, &self.cache, &name);
                }
                CacheChange::Removed(name) => core.cache_removed(&name),
                CacheChange::Rescan => rescan = true,
            }
        }
        if rescan {
            // Spool files that went before the rescan must not be taken off the summary it
            // builds (the cache may hold the same names).
            self.relay.spool.handle_timeout(now, &mut Vec::new());
            let names = cache_watch::scan(self.cache.dirs());
            core.set_cache_names(names.iter().map(String::as_str), now);
            // The spool's files stay in the summary while shareable.
            for name in self.relay.spool.book.names() {
                core.cache_added(name);
            }
        }
    }

    fn receive_datagrams(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        let cache = &self.cache;
        let trust = &mut self.trust;
        let spool = &self.relay.spool.book;
        for _ in 0..DATAGRAMS_PER_TURN {
            match self.multicast.socket.recv(&mut buf) {
                Ok(Some((n, from))) => {
                    let auth = &mut self.multicast.auth;
                    let Some(bytes) = secret::open(auth, &mut self.refusals, &buf[..n], from, now)
                    else {
                        continue; // no secret, a wrong one, or a replay: dropped and counted
                    };
                    self.multicast.core.handle_datagram_with(
                        from,
                        bytes,
                        now,
                        &mut |name, wanted| {
                            trust.answer(cache, name, wanted)
                                || spool.holding(name, wanted)
                                    == Some(crate::spool::Holding::Complete)
                        },
                        &mut |name, wanted| match spool.holding(name, wanted) {
                            Some(crate::spool::Holding::Fetching(bytes)) => Some(bytes),
                            _ => None,
                        },
                    )
                }
                Ok(None) => {} // off the link: dropped and counted by the socket

                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("discovery receive: {e}");
                    return;
                }
            }
        }
        // More may be waiting: edge-triggered, so come back soon.
        self.again_discovery = true;
    }

    /// Joins when due, runs the core's timers and routes its answers.
    fn discovery_turn(&mut self, now: Instant) {
        if let Some(slept) =
            suspend::clocks().and_then(|(boot, mono)| self.sleep.observe(boot, mono))
        {
            self.multicast.core.handle_resume(now, slept);
        }
        // A timer that is due may decide on what arrived (a claim window ending): read what
        // came since the poll first.
        let due = self.multicast.core.poll_timeout().is_some_and(|t| t <= now);
        if self.again_discovery || due {
            self.again_discovery = false;
            self.receive_datagrams(now);
        }
        if self.multicast.core.poll_join(now) && self.stop_by.is_none() {
            self.join_group(now);
        }
        self.resolve_static_peers(now);
        self.multicast.core.handle_timeout(now);
        // Answers can lead to new questions that are answered at once (no
        // compatible peer): a few rounds, bounded.
        for _ in 0..8 {
            let mut any = false;
            while let Some(event) = self.multicast.core.poll_event() {
                if let Event::Answer { question, peer } = event {
                    any = true;
                    if let Some((index, generation)) = self.waits.remove(&Wait::Question(question))
                    {
                        self.answer_slot(index, generation, peer, now);
                    }
                }
            }
            if !any {
                break;
            }
        }
    }

    /// Looks up the static peers' names that are due; their new addresses go to the core
    /// and the socket.
    fn resolve_static_peers(&mut self, now: Instant) {
        let mut changed = false;
        for (index, name) in self.multicast.static_peers.due(now) {
            let lookup = self.resolver.lookup(&name, now);
            changed |= self.multicast.static_peers.looked_up(index, lookup, now);
        }
        if changed {
            self.static_peers_changed();
        }
    }

    fn static_peers_changed(&mut self) {
        let m = &mut self.multicast;
        m.core.set_static_peers(&m.static_peers.addresses());
        m.socket.set_static_sources(m.static_peers.sources());
    }

    /// Hands a discovery answer to the connection that asked, and runs it.
    fn answer_slot(
        &mut self,
        index: usize,
        generation: u32,
        peer: Option<discovery::PeerRef>,
        now: Instant,
    ) {
        self.run_slot_with(index, generation, now, Input::Answer(peer));
    }

    fn flush_datagrams(&mut self) {
        let m = &mut self.multicast;
        // Sealed when taken from the core, so a datagram that waits is sent again as it was.
        let (auth, core) = (&m.auth, &mut m.core);
        let mut next = || core.poll_transmit().map(|t| secret::seal(auth, t));
        while let Some(t) = m.pending.take().or_else(&mut next) {
            match m.socket.send(&t) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    m.pending = Some(t);
                    break;
                }
                Err(e) => debug!("discovery send to {:?}: {e}", t.dest),
            }
        }
        let want_writable = m.pending.is_some();
        if want_writable != m.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let registry = self.poll.registry();
            if m.socket
                .sockets_mut()
                .all(|s| registry.reregister(s, DISCOVERY, interest).is_ok())
            {
                m.writable = want_writable;
            }
        }
    }

    // ---- name resolution ---------------------------------------------------

    /// The IPv4 and IPv6 link-local addresses of the interfaces the group would be joined on,
    /// sorted.
    fn local_addresses(&self) -> Vec<IpAddr> {
        let all = discovery::list_interfaces().unwrap_or_default();
        let (chosen, _) = discovery::select_interfaces(&all, &self.multicast.interfaces);
        let mut addresses: Vec<IpAddr> = chosen
            .iter()
            .flat_map(|i| {
                let v4 = i.ipv4.map(IpAddr::V4);
                let v6 = i.ipv6_link_local.map(IpAddr::V6);
                v4.into_iter().chain(v6)
            })
            .collect();
        addresses.sort_unstable();
        addresses
    }

    /// rtnetlink said interfaces or addresses changed: rejoin soon (once per burst).
    fn link_events(&mut self, now: Instant) {
        let Some(links) = &self.links else { return };
        let mut buf = [0u8; 8192];
        let changes = links.read(&mut buf, DATAGRAMS_PER_TURN);
        if changes.malformed {
            debug!("rtnetlink: a malformed message, skipped");
        }
        self.links_changed |= changes.links > 0 || changes.link_local > 0;
        if changes.any() && self.rejoin_at.is_none() && self.stop_by.is_none() {
            let at = (now + LINK_SETTLE).max(
                self.last_link_rejoin
                    .map_or(now, |last| last + LINK_REJOIN_GAP),
            );
            debug!(
                "rtnetlink: {} link and {} address changes: rejoining in {} ms",
                changes.links,
                changes.addresses,
                at.duration_since(now).as_millis()
            );
            self.rejoin_at = Some(at);
        }
    }

    fn rejoin_when_due(&mut self, now: Instant) {
        if self.rejoin_at.is_some_and(|t| now >= t) {
            self.rejoin_at = None;
            self.last_link_rejoin = Some(now);
            // Only addresses changed, and not the ones flocon uses (IPv4 and IPv6 link-local
            // of the chosen interfaces): a router advertisement refreshing a global IPv6
            // address's lifetime, a DHCP renewal. Nothing to rejoin, no HELLO to send.
            let links_changed = std::mem::take(&mut self.links_changed);
            if !links_changed
                && !self.multicast.joined.is_empty()
                && self.local_addresses() == self.multicast.addresses
            {
                debug!("rtnetlink: the addresses in use are the same: no rejoin");
                return;
            }
            if self.stop_by.is_none() {
                info!("network change: rejoining the multicast group");
                self.multicast.static_peers.refresh(now);
                self.join_group(now);
                self.multicast.core.rejoin(now);
            }
        }
    }

    /// The resolver thread woke the loop: route its answers to the connections waiting.
    fn resolver_answers(&mut self, now: Instant) {
        self.resolver.handle_wake(now);
        while let Some((lookup, addresses)) = self.resolver.poll_event() {
            let statics = &mut self.multicast.static_peers;
            if let Some(changed) = statics.handle_answer(lookup, addresses.clone(), now) {
                if changed {
                    self.static_peers_changed();
                }
                continue;
            }
            if let Some((index, generation)) = self.waits.remove(&Wait::Lookup(lookup)) {
                self.run_slot_with(index, generation, now, Input::Address(addresses));
            }
        }
    }

    // ---- connections -------------------------------------------------------

    fn accept(&mut self, now: Instant) {
        for token in [PEER_LISTENER, PEER_V6, LOCAL_V4, LOCAL_V6] {
            if self.accept_pending[token.0] {
                self.accept_pending[token.0] = self.accept_from(token, now);
            }
        }
    }

    /// Accepts up to a turn's worth; true when more may be waiting.
    fn accept_from(&mut self, token: Token, now: Instant) -> bool {
        for _ in 0..ACCEPTS_PER_TURN {
            let listener = self
                .peer_listeners
                .iter()
                .chain(&self.local_listeners)
                .find(|(t, _)| *t == token)
                .map(|(_, l)| l);
            let Some(listener) = listener else {
                return false;
            };
            let (stream, remote) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for
                    // now rather than spinning on them.
                    warn!("accept failed: {e}");
                    return false;
                }
            };
            let peer_side = token == PEER_LISTENER || token == PEER_V6;
            let busy = if peer_side {
                self.counters.connections += 1;
                self.slots.peers >= self.max_connections
            } else {
                self.slots.pacman >= self.max_connections
            };
            let crowded =
                peer_side && self.slots.peers_at(remote.ip()) >= MAX_CONNECTIONS_PER_ADDRESS;
            if busy || crowded {
                self.counters.refused_busy += 1;
                if crowded {
                    self.refused_per_address += 1;
                    if let Some(held) = self.crowded_warnings.check(now) {
                        warn!(
                            "{}: {MAX_CONNECTIONS_PER_ADDRESS} connections from this address already, 503 ({held} more held back)",
                            remote.ip()
                        );
                    }
                } else {
                    debug!("{remote}: connection limit reached, 503");
                }
                let mut page = Vec::new();
                response::error_page(&mut page, Status::ServiceUnavailable, false, true);
                let _ = crate::net::send(&stream, &page, false);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let conn = if peer_side {
                Conn::Peer(Box::new(PeerConn::new(stream, remote, now)))
            } else {
                Conn::Pacman(Box::new(PacmanConn::new(stream, remote, now)))
            };
            let (index, generation) = self.slots.insert(conn, peer_side.then(|| remote.ip()));
            self.run_slot(index, generation, now);
        }
        true
    }

    /// Runs the connection of a slot and applies what it wants.
    fn run_slot(&mut self, index: usize, generation: u32, now: Instant) {
        self.run_slot_with(index, generation, now, Input::Ready);
    }

    /// Runs the connection of a slot after `input` (for a pacman
    /// connection) and applies what it wants. A relay connection that asks
    /// for a source connection gets it here and runs again at once.
    fn run_slot_with(&mut self, index: usize, generation: u32, now: Instant, input: Input) {
        let stopping = self.stop_by.is_some();
        let mut input = input;
        let mut want = Want::Close;
        for _ in 0..CONNECTS_PER_RUN {
            if let Some(Conn::Pacman(c)) = self
                .slots
                .get(index, generation)
                .and_then(|s| s.conn.as_ref())
            {
                if let Some(page) = c.wants_status() {
                    input = Input::Status(self.page(page, now));
                }
            }
            let mut asked = Vec::new();
            let Some(slot) = self.slots.get(index, generation) else {
                return;
            };
            let resolver = &mut self.resolver;
            want = match slot.conn.as_mut() {
                Some(Conn::Peer(conn)) => conn.run(&mut serve::Context {
                    cache: &mut self.cache,
                    trust: &mut self.trust,
                    scratch: &mut self.scratch,
                    now,
                    counters: &mut self.counters,
                    stopping,
                    secret: self.secret.as_ref(),
                    refusals: &mut self.refusals,
                    spool: &mut self.relay.spool,
                    waiter: (index, generation),
                }),
                Some(Conn::Pacman(conn)) => {
                    let want = conn.run(
                        &mut relay::Context {
                            now,
                            relay: &mut self.relay,
                            trust: &self.trust,
                            discovery: &mut self.multicast.core,
                            resolver,
                            asked: &mut asked,
                            stopping,
                            scratch: &mut self.scratch,
                        },
                        input,
                    );
                    let registry = self.poll.registry();
                    while let Some(release) = conn.poll_release() {
                        put_away(
                            registry,
                            &mut slot.source,
                            &mut self.idle_sources,
                            release,
                            now,
                        );
                    }
                    want
                }
                None => return,
            };
            for wait in asked {
                self.waits.insert(wait, (index, generation));
            }
            let Want::Connect { addr, reuse } = want else {
                break;
            };
            input = Input::Connected(self.open_source(addr, reuse, now));
        }
        // (After CONNECTS_PER_RUN connects, a `Connect` left waits for the next pass.)
        self.apply(index, generation, want);
    }

    /// A connection to `addr` for a relay source: with `reuse`, an idle one
    /// from the pool that is still open, else a new one (non-blocking: it
    /// completes later, and the relay sees that when it becomes writable).
    fn open_source(
        &mut self,
        addr: SocketAddr,
        reuse: bool,
        now: Instant,
    ) -> Result<Opened, io::ErrorKind> {
        if reuse {
            if let Some(stream) = self.idle_sources.take(addr, now, crate::net::is_idle_open) {
                return Ok(Opened {
                    stream,
                    reused: true,
                });
            }
        }
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                Ok(Opened {
                    stream,
                    reused: false,
                })
            }
            Err(e) => {
                debug!("connect to {addr}: {e}");
                Err(e.kind())
            }
        }
    }

    fn apply(&mut self, index: usize, generation: u32, want: Want) {
        let registry = self.poll.registry();
        let Some(slot) = self.slots.get(index, generation) else {
            return;
        };
        match want {
            // It waits in its `Connect` state and asks again when run.
            Want::Connect { .. } => self.again.push_back((index, generation)),
            Want::Close => {
                if let Some(conn) = slot.conn.as_mut() {
                    let _ = registry.deregister(conn.stream_mut());
                    if let Conn::Pacman(c) = conn {
                        let left = c.close();
                        if let Some(file) = &left.lead {
                            self.multicast.core.release(file);
                        }
                        if let Some(wait) = left.wait {
                            match wait {
                                Wait::Question(q) => self.multicast.core.cancel(q),
                                Wait::Lookup(l) => self.resolver.cancel(l),
                            }
                            self.waits.remove(&wait);
                        }
                        // A kept-alive source goes to the pool for the next
                        // connection; the others close.
                        let now = Instant::now();
                        for release in left.sockets {
                            put_away(
                                registry,
                                &mut slot.source,
                                &mut self.idle_sources,
                                release,
                                now,
                            );
                        }
                    }
                }
                self.slots.remove(index);
            }
            Want::Io {
                deadline,
                again,
                source,
            } => {
                // Registered once, for both kinds, edge-triggered (see `Want`).
                let both = Interest::READABLE | Interest::WRITABLE;
                let token = Token(FIRST_SLOT + index * 2);
                let mut failed = None;
                if !slot.registered {
                    if let Some(conn) = slot.conn.as_mut() {
                        match registry.register(conn.stream_mut(), token, both) {
                            Ok(()) => slot.registered = true,
                            Err(e) => failed = Some(e),
                        }
                    }
                }
                if source.is_some() && slot.source != source {
                    // A new outbound socket (the old one was closed, which
                    // removed it from epoll).
                    if let Some(Conn::Pacman(c)) = slot.conn.as_mut() {
                        if let Some((id, stream)) = c.source_mut() {
                            match registry.register(stream, Token(token.0 + 1), both) {
                                Ok(()) => slot.source = Some(id),
                                Err(e) => failed = Some(e),
                            }
                        }
                    }
                }
                if let Some(e) = failed {
                    warn!("cannot register a connection: {e}");
                    return self.apply(index, generation, Want::Close);
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

    /// Drops deadlines of connections that closed or re-armed, so that they
    /// do not wake the loop for nothing.
    fn prune_timers(&mut self) {
        while let Some(Reverse((deadline, index, generation))) = self.timers.peek().copied() {
            match self.slots.get(index, generation) {
                Some(slot) if slot.armed == Some(deadline) => break,
                _ => {
                    self.timers.pop();
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

/// A source socket a relay connection let go of: out of the poll set if it is
/// the one registered under the slot's source token (`registered`, its id),
/// then parked in the idle pool or closed.
fn put_away(
    registry: &Registry,
    registered: &mut Option<u32>,
    idle: &mut relay::Pool<TcpStream>,
    release: Release,
    now: Instant,
) {
    let id = release.id();
    let (mut stream, park) = match release {
        Release::Park { addr, stream, .. } => (stream, Some(addr)),
        Release::Close { stream, .. } => (stream, None),
    };
    if *registered == Some(id) {
        let _ = registry.deregister(&mut stream);
        *registered = None;
    }
    if let Some(addr) = park {
        idle.park(addr, stream, now);
    }
    // Otherwise dropped here: closed.
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

#[cfg(test)]
mod tests {
    use super::source_key;
    use std::net::IpAddr;

    #[test]
    fn the_connection_limit_counts_an_ipv6_host_by_its_64() {
        let key = |s: &str| source_key(s.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(key("10.0.0.7"), "10.0.0.7");
        assert_eq!(key("::ffff:10.0.0.7"), "10.0.0.7");
        assert_eq!(key("fe80::1:2:3:4"), "fe80::");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
