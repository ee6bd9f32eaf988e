//! Discovery: finding the other flocon hosts of the LAN and asking them who has a file.
//!
//! Owns the multicast protocol (`docs/protocol.md`): the datagram codec (`wire`), the peer table
//! (`peer_table`), open "who has file X" questions (`questions`), the join retry schedule
//! (`join_schedule`), all tied together by the sans-IO core [`Discovery`] (`protocol`), plus a
//! thin socket shell [`MulticastSocket`] (`multicast`) and start-up facts about the host
//! (`host`). It does not own the event loop, signals, configuration, the cache check or the
//! HTTP side: the lead wires those in, as below.
//!
//! # The core
//! [`Discovery`] never does I/O and never reads the clock: feed it with
//! [`Discovery::handle_datagram`], [`Discovery::handle_timeout`], [`Discovery::ask`],
//! [`Discovery::handle_join`], [`Discovery::rejoin`]; drain [`Discovery::poll_transmit`] and
//! [`Discovery::poll_event`] until `None`; sleep no later than [`Discovery::poll_timeout`].
//! Everything is bounded: 1024 peers by default ([`Params::max_peers`]),
//! [`MAX_OPEN_QUESTIONS`] questions, [`TRANSMIT_QUEUE_LIMIT`] queued datagrams,
//! [`PEER_EVENT_LIMIT`] queued peer events.
//!
//! # Wiring it into the event loop
//! ```text
//! start:
//!   let me = Identity { host_id: random_seed(), tcp_port, distro: settings.distro, arch: settings.architecture };
//!   let mut disc = Discovery::new(me, params, now, random_seed());
//!   let mut sock = MulticastSocket::open(peer_port, group, group6)?;  // fatal if it fails
//!   for s in sock.sockets_mut() { poll.registry().register(s, DISCOVERY, Interest::READABLE)?; }
//! each loop pass (after reading `now` once and handling signals):
//!   SIGUSR2  -> disc.rejoin(now)
//!   SIGUSR1  -> for line in disc.describe_peers(now) { info!("{line}") }
//!   if disc.poll_join(now) { let r = sock.join(&cfg.interfaces); disc.handle_join(now, &r); }
//!   DISCOVERY readable -> loop (capped, e.g. 256 datagrams per pass) {
//!       match sock.recv(&mut buf) {                  // buf: [u8; 2048] (> wire::MAX_DATAGRAM)
//!           Ok(Some((n, from))) => disc.handle_datagram(from, &buf[..n], now, &mut |f| cache.has(f)),
//!           Ok(None) => {}                           // off the link: dropped, counted
//!           Err(WouldBlock) => break, Err(Interrupted) => continue, Err(e) => { warn; break }
//!       } }
//!   disc.handle_timeout(now);                        // cheap when nothing is due
//!   relay wants a source -> let q = disc.ask(file, &failed_peer_ids, now); remember q
//!   relay gives up       -> disc.cancel(q)
//!   while let Some(e) = disc.poll_event() { Answer{question, peer} -> to the relay waiting on
//!       `question` (peer.addr is the peer's HTTP address); PeerUp/PeerGone: informational,
//!       already logged }
//!   flush: keep at most one pending Transmit; while let Some(t) = pending.take().or_else(|| disc.poll_transmit()) {
//!       match sock.send(&t) { Ok | Err(non-WouldBlock, logged rate-limited) => {},
//!           Err(WouldBlock) => { pending = Some(t); want WRITABLE on DISCOVERY; break } } }
//!   timeout = min(disc.poll_timeout(), other deadlines)
//! shutdown:
//!   disc.goodbye(); flush once (best effort).
//! ```
//! The join must happen before the flush of the same pass, so the HELLO and ANNOUNCE queued by
//! `new` and `rejoin` go out on the new memberships.

mod answer_limit;
#[cfg(test)]
mod claim_tests;
mod claims;
mod host;
mod identity;
mod join_schedule;
#[cfg(test)]
mod lookup_tests;
mod multicast;
mod peer_table;
mod protocol;
mod questions;
mod rtt;
mod static_peers;
mod summary;
mod tokens;
pub mod wire;

pub use claims::{WINDOW_MAX as CLAIM_WINDOW_MAX, rank as claim_rank};
pub use host::random_seed;
pub use identity::{Identity, Params, sanitize_label};
pub use join_schedule::{JOIN_LOG_EVERY, JOIN_RETRY_EVERY, JOIN_RETRY_FOR, JoinNote, JoinReport};
pub use multicast::{
    InterfaceInfo, MulticastSocket, is_link_local, is_link_scope_multicast, list_interfaces,
    select_interfaces, show_addr, zone_of,
};
pub use peer_table::{GoneReason, Peer, PeerRef};
pub use protocol::{
    Dest, Discovery, EXPIRY_INTERVALS, Event, JITTER_PERCENT, PEER_EVENT_LIMIT,
    TRANSMIT_QUEUE_LIMIT, Transmit,
};
pub use questions::{MAX_OPEN_QUESTIONS, QuestionId};
pub use static_peers::StaticPeers;
pub use summary::fingerprint;
pub use wire::{Message, WireError, emit, parse};

/// The default peer port: UDP for discovery (and TCP for the peer file server by convention).
pub const DEFAULT_PORT: u16 = 19432;
/// The default group, in the IPv4 local scope 239.255.0.0/16 (RFC 2365).
pub const DEFAULT_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 19, 32);
/// The IPv6 group, link-local scope (`ff02::/16`): `ff02::19:432`, the port's digits as the
/// IPv4 group has them (see docs/protocol.md, "Transport", for why this number).
pub const DEFAULT_GROUP6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x19, 0x432);
