//! The sans-IO discovery core: announcements, the peer table, "who has file X" questions and
//! the join schedule, driven by datagrams and `now`.
//!
//! It owns every protocol decision and every deadline of discovery, and nothing else: it never
//! touches a socket or reads the clock. Datagrams and time go in through `handle_*`, `ask`,
//! `rejoin`; what it wants done comes out of `poll_transmit`, `poll_event`, `poll_timeout` and
//! `poll_join`. It logs (peers coming and going, join trouble, rate-limited warnings), which is
//! its only side effect.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::answer_limit::AnswerLimit;
use super::claims::{self, Claims, Decided, Decision, Key};
use super::identity::{Identity, Params};
use super::join_schedule::{JoinNote, JoinReport, JoinSchedule};
use super::peer_table::{GoneReason, Heard, Peer, PeerRef, PeerTable};
use super::questions::{Expired, OpenQuestions, Progress, QuestionId, Rest};
use super::summary::{self, Change, LocalSummary};
use super::tokens::Tokens;
use super::wire::{self, Announcement, Body, ClaimState, Expected, Message};
use crate::prng::Xorshift64;
use crate::rate_limit::RateLimit;

/// Most datagrams waiting in `poll_transmit`; past that new ones are dropped (with a
/// rate-limited warning) and the protocol copes as with a lost datagram. GOODBYE is always
/// queued.
pub const TRANSMIT_QUEUE_LIMIT: usize = 4096;
/// Most `PeerUp`/`PeerGone` events waiting in `poll_event`; past that they are dropped (the
/// table itself is always right). Answers are never dropped: there is one per `ask`.
pub const PEER_EVENT_LIMIT: usize = 4096;
/// A peer is forgotten after this many announce intervals of silence.
pub const EXPIRY_INTERVALS: u32 = 3;
/// Announce intervals are jittered by this many percent either way.
pub const JITTER_PERCENT: u64 = 10;
/// Most peers asked at once about one file; the next ones only if all of these say no, leave
/// or stay silent. So a lookup costs the same few datagrams whatever the size of the LAN.
pub const WAVE: usize = 3;
/// The shortest wait for a peer whose summary lists the file (a holder, most likely): long
/// enough for one that is busy answering a LAN-wide burst of questions. Misses never wait, and
/// a holder that stays silent is waited for once, so this costs only in that rare case.
pub const LISTED_WAIT: Duration = Duration::from_millis(100);
/// SUMMARY_DELTAs go out at once (the changes of one loop turn together), so a finished
/// download is known to the LAN before another host's pacman can ask for it: one small
/// datagram per finished file while pacman downloads (each also saves the LAN a question).
/// A token bucket bounds them: `DELTA_BURST` at once, then one per `DELTA_EVERY`, changes in
/// between sent together; so at most 100 a second however many files come and go.
pub const DELTA_EVERY: Duration = Duration::from_millis(10);
pub const DELTA_BURST: u32 = 20;
/// A SUMMARY_REQUEST unanswered for this long is sent again, at most `SUMMARY_TRIES` times in
/// a row (then again only when the peer announces a version we do not hold).
pub const SUMMARY_RETRY: Duration = Duration::from_secs(1);
pub const SUMMARY_TRIES: u8 = 3;
/// Most fingerprints of peers' summaries held in all (4 MiB); a summary past that is dropped
/// and its peer asked about everything.
pub const SUMMARY_BUDGET: usize = 1 << 20;
/// HELLO is sent again this long after start or a rejoin (each ±25 %), so that a host whose
/// first datagrams were lost (a link still coming up, a busy switch) is known within 2 s.
pub const HELLO_AGAIN: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(1000)];
/// A SUMMARY_REQUEST from a host not yet in the table is kept this long (at most
/// `EARLY_REQUESTS` of them) and answered when the host announces itself from that address.
pub const EARLY_REQUEST_KEPT: Duration = Duration::from_secs(2);
pub const EARLY_REQUESTS: usize = 32;
/// HELLOs are answered with an ANNOUNCE to the group: up to `HELLO_ANSWER_BURST` at once (a
/// starting host's HELLO and its two re-sends), then one per `HELLO_ANSWER_EVERY`.
pub const HELLO_ANSWER_EVERY: Duration = Duration::from_secs(1);
pub const HELLO_ANSWER_BURST: u32 = 3;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The multicast group, once on each joined interface.
    Group,
    /// One host (its discovery address: source IP and UDP port of its datagrams).
    Peer(SocketAddr),
}

/// A datagram the core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    pub payload: Vec<u8>,
}

/// What the core tells the rest of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The end of question `question`: the first peer that has the file, or `None` for nobody.
    /// Exactly one per `ask` (none after `cancel`).
    Answer {
        question: QuestionId,
        peer: Option<PeerRef>,
    },
    /// A host joined the table (compatible or not: see `Discovery::peer`).
    PeerUp(PeerRef),
    /// A host left the table.
    PeerGone(PeerRef, GoneReason),
}

/// The discovery protocol core. See the module documentation of `discovery` for how the event
/// loop drives it.
#[derive(Debug)]
pub struct Discovery {
    me: Identity,
    params: Params,
    rng: Xorshift64,
    peers: PeerTable,
    questions: OpenQuestions,
    join: JoinSchedule,
    next_announce: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    announce_payload: Vec<u8>,
    hello_payload: Vec<u8>,
    /// This host's cache summary.
    summary: LocalSummary,
    /// SUMMARY_DELTAs that may go now.
    delta_tokens: Tokens,
    /// When HELLO is due again (start, rejoin).
    hello_again: Vec<Instant>,
    /// Answers to HELLO that may go now, and when the next one is due when none is left.
    hello_tokens: Tokens,
    hello_answer_due: Option<Instant>,
    /// Answers per source address (no reflection at a forged source).
    answer_limit: AnswerLimit,
    /// One fetcher per file: claims heard, own claims, files this host leads.
    claims: Claims,
    /// SUMMARY_REQUESTs from hosts not yet heard: (host id, source, when).
    early_requests: Vec<(u64, SocketAddr, Instant)>,
    /// The latest `now` seen, for rate-limited warnings from methods that take no `now`.
    clock: Instant,
    table_full: RateLimit,
    queue_full: RateLimit,
    too_many_questions: RateLimit,
    bad_datagrams: RateLimit,
    /// Announcements refused: a host id from another address, or too many at one address.
    refused: u64,
    /// Static peers (`Peer =`): every datagram to the group also goes to each of these by
    /// unicast. At most [`MAX_STATIC_PEERS`].
    static_peers: Vec<SocketAddr>,
}

/// Most static peer addresses (each configured name gives at most two: one per family).
pub const MAX_STATIC_PEERS: usize = 128;

impl Discovery {
    /// A core for this host, started at `now`. `seed` drives the announce jitter and the first
    /// question id (use `host::random_seed()`). HELLO and ANNOUNCE to the group are queued, and
    /// a join is due at once (`poll_join`).
    ///
    /// Labels of `me` that cannot go on the wire are cleaned (see `sanitize_label`), with a
    /// warning; `params` are raised to their minimums (see `Params::clamped`).
    pub fn new(me: Identity, params: Params, now: Instant, seed: u64) -> Self {
        let clean = me.sanitized();
        if clean != me {
            warn!(
                "discovery: announcing distribution {:?} and architecture {:?} (cleaned from {:?} and {:?})",
                clean.distro, clean.arch, me.distro, me.arch
            );
        }
        let me = clean;
        let params = params.clamped();
        let mut rng = Xorshift64::new(seed);
        let first_question = rng.next_u64() as u32;
        let expiry = params.announce_interval.saturating_mul(EXPIRY_INTERVALS);
        let first_interval = rng.jitter(params.announce_interval, JITTER_PERCENT);
        let mut core = Discovery {
            peers: PeerTable::new(params.max_peers, expiry, &me.distro, &me.arch),
            me,
            params,
            rng,
            questions: OpenQuestions::new(first_question),
            join: JoinSchedule::new(now),
            next_announce: now + first_interval,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            announce_payload: Vec::new(),
            hello_payload: Vec::new(),
            summary: LocalSummary::default(),
            delta_tokens: Tokens::new(now, DELTA_EVERY, DELTA_BURST),
            hello_again: Vec::new(),
            hello_tokens: Tokens::new(now, HELLO_ANSWER_EVERY, HELLO_ANSWER_BURST),
            hello_answer_due: None,
            early_requests: Vec::new(),
            answer_limit: AnswerLimit::new(now),
            claims: Claims::default(),
            clock: now,
            table_full: RateLimit::default(),
            queue_full: RateLimit::default(),
            too_many_questions: RateLimit::default(),
            bad_datagrams: RateLimit::default(),
            refused: 0,
            static_peers: Vec::new(),
        };
        core.build_announcements();
        core.queue_hello_and_announce();
        core.schedule_hellos(now);
        core
    }

    /// Answer the HELLOs heard: our ANNOUNCE to the group.
    fn answer_hello(&mut self) {
        self.hello_answer_due = None;
        let payload = self.announce_payload.clone();
        self.queue_unique(Transmit {
            dest: Dest::Group,
            payload,
        });
    }

    /// Rebuild the ANNOUNCE and HELLO datagrams (they carry the summary version).
    fn build_announcements(&mut self) {
        let ann = Announcement {
            tcp_port: self.me.tcp_port,
            distro: self.me.distro.clone(),
            arch: self.me.arch.clone(),
            summary: self.summary.version(),
        };
        self.announce_payload.clear();
        wire::emit(
            &Message {
                host_id: self.me.host_id,
                body: Body::Announce(ann.clone()),
            },
            &mut self.announce_payload,
        );
        self.hello_payload.clear();
        wire::emit(
            &Message {
                host_id: self.me.host_id,
                body: Body::Hello(ann),
            },
            &mut self.hello_payload,
        );
    }

    /// HELLO again twice within about a second (see [`HELLO_AGAIN`]).
    fn schedule_hellos(&mut self, now: Instant) {
        self.hello_again = HELLO_AGAIN
            .iter()
            .map(|&d| now + self.rng.jitter(d, 25))
            .collect();
    }

    /// The names in this host's caches, all of them (at start, and after a rescan). The first
    /// call gives the summary its version 1 and announces it.
    pub fn set_cache_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>, now: Instant) {
        self.clock = now;
        let first = self.summary.version() == 0;
        self.summary.replace_all(names);
        if first {
            info!(
                "discovery: cache summary of {} names, version 1",
                self.summary.len()
            );
            self.build_announcements();
            let payload = self.announce_payload.clone();
            self.queue_unique(Transmit {
                dest: Dest::Group,
                payload,
            });
        }
    }

    /// A name appeared in a cache (a finished download).
    pub fn cache_added(&mut self, name: &str) {
        self.summary.add(name);
    }

    /// A name left a cache.
    pub fn cache_removed(&mut self, name: &str) {
        self.summary.remove(name);
    }

    /// Announcements refused since start (a host id heard from another address than its
    /// own, or one host too many at one address).
    pub fn refused_announcements(&self) -> u64 {
        self.refused
    }

    /// Questions not answered since start because their source asked too fast.
    pub fn refused_answers(&self) -> u64 {
        self.answer_limit.refused
    }

    /// The version of this host's summary and its size.
    pub fn summary_version(&self) -> (u32, usize) {
        (self.summary.version(), self.summary.len())
    }

    /// The host was suspended for `slept` (CLOCK_BOOTTIME moved that much more than the
    /// monotonic clock): count that time as silence of every peer, forget those now silent
    /// for too long, wait for none of the others until they are heard again, and say HELLO.
    pub fn handle_resume(&mut self, now: Instant, slept: Duration) {
        self.clock = now;
        info!(
            "discovery: resumed after {} s asleep: checking who is still here",
            slept.as_secs()
        );
        let mut gone = Vec::new();
        self.peers.age(slept, now, &mut gone);
        for peer in gone {
            self.peer_gone(peer, GoneReason::Silent);
        }
        for p in self.peers.iter_mut() {
            p.missed = true;
        }
        self.queue_hello_and_announce();
        self.schedule_hellos(now);
    }

    /// The addresses of the static peers (resolved by the shell; `Peer =` lines). From now
    /// on every datagram to the group also goes to each by unicast, so that hosts that
    /// multicast does not reach (another subnet, a VPN) hear our HELLO, ANNOUNCE, summary
    /// changes and GOODBYE; a new one gets HELLO and ANNOUNCE at once. Their datagrams are
    /// handled like any other (the shell lets them in even from off the link).
    pub fn set_static_peers(&mut self, addrs: &[SocketAddr]) {
        let mut fresh: Vec<SocketAddr> = Vec::new();
        for a in addrs.iter().take(MAX_STATIC_PEERS) {
            if !fresh.contains(a) {
                fresh.push(*a);
            }
        }
        let new: Vec<SocketAddr> = fresh
            .iter()
            .filter(|a| !self.static_peers.contains(a))
            .copied()
            .collect();
        self.static_peers = fresh;
        for addr in new {
            for payload in [self.hello_payload.clone(), self.announce_payload.clone()] {
                self.queue_unique(Transmit {
                    dest: Dest::Peer(addr),
                    payload,
                });
            }
        }
    }

    /// The static peer addresses in use.
    pub fn static_peers(&self) -> &[SocketAddr] {
        &self.static_peers
    }

    /// This host's identity as announced (labels cleaned).
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// The parameters in use (clamped).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// One datagram received on the discovery socket from `from`. `has_file` answers WHO_HAS:
    /// it is called only with a checked name (non-empty UTF-8, at most 255 bytes, no `/`, no
    /// NUL, not `.`/`..`) and the content the asker expects, if it said; other names are
    /// answered HAVE_NOT without calling it. It must say yes only for a file of exactly the
    /// expected size and SHA-256 (see `crate::trust`).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        has_file: &mut dyn FnMut(&str, Option<Expected>) -> bool,
    ) {
        self.handle_datagram_with(from, bytes, now, has_file, &mut |_, _| None);
    }

    /// [`Discovery::handle_datagram`], where a WHO_HAS for a file this host does not
    /// have but is fetching from upstream (`fetching` gives the bytes here so far) is
    /// answered FETCHING.
    pub fn handle_datagram_with(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
        has_file: &mut dyn FnMut(&str, Option<Expected>) -> bool,
        fetching: &mut dyn FnMut(&str, Option<Expected>) -> Option<u64>,
    ) {
        self.clock = now;
        let msg = match wire::parse(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                if let Some(held) = self.bad_datagrams.check(now) {
                    debug!(
                        "discovery: dropped a {}-byte datagram from {from}: {e} ({held} more dropped since the last note)",
                        bytes.len()
                    );
                }
                return;
            }
        };
        if msg.host_id == self.me.host_id {
            return; // our own, looped back by some interface or bridge
        }
        // Anything from a peer, at its address, shows it is awake again.
        let known = match self.peers.get_mut(msg.host_id) {
            Some(p) if p.is_from(from) => {
                p.missed = false;
                true
            }
            _ => false,
        };
        match msg.body {
            Body::Announce(ann) => self.heard(msg.host_id, from, &ann, now),
            Body::Hello(ann) => {
                self.heard(msg.host_id, from, &ann, now);
                // Answered to the group, never to a unicast source (which could be spoofed to
                // reflect traffic at a victim), and a storm of HELLOs costs one ANNOUNCE a
                // second after the first few.
                let waiting = self
                    .transmits
                    .iter()
                    .any(|t| t.dest == Dest::Group && t.payload == self.announce_payload);
                if waiting {
                    // Our ANNOUNCE to the group has not gone out yet: it answers this one too.
                } else if self.hello_tokens.take(now) {
                    self.answer_hello();
                } else if self.hello_answer_due.is_none() {
                    self.hello_answer_due = Some(self.hello_tokens.next_at(now));
                }
            }
            Body::Goodbye if known => {
                if let Some(peer) = self.peers.remove(msg.host_id) {
                    self.peer_gone(peer, GoneReason::Goodbye);
                }
            }
            Body::WhoHas {
                question,
                name,
                expected,
            } => {
                if !self.answer_limit.allow(from.ip(), now) {
                    if let Some(held) = self.bad_datagrams.check(now) {
                        debug!(
                            "discovery: not answering {from}: over its answer rate ({held} more dropped since the last note)"
                        );
                    }
                    return;
                }
                let name = wire::file_name(&name);
                let have = name.is_some_and(|n| has_file(n, expected));
                let in_flight = match name {
                    Some(n) if !have => fetching(n, expected),
                    _ => None,
                };
                let body = match (have, in_flight) {
                    (true, _) => Body::Have { question },
                    (false, Some(bytes)) => Body::Fetching { question, bytes },
                    (false, None) => Body::HaveNot { question },
                };
                self.queue_message(Dest::Peer(from), body);
            }
            Body::Have { question } if known => {
                self.answered(QuestionId(question), msg.host_id, true, now)
            }
            Body::HaveNot { question } if known => {
                self.answered(QuestionId(question), msg.host_id, false, now)
            }
            // A peer fetching the file streams it as it arrives: a source like a HAVE.
            Body::Fetching { question, bytes } if known => {
                debug!(
                    "discovery: peer {:016x} is fetching the file of question {question} ({bytes} bytes so far)",
                    msg.host_id
                );
                self.answered(QuestionId(question), msg.host_id, true, now)
            }
            Body::SummaryDelta {
                version,
                added,
                removed,
            } if known => {
                if let Some(p) = self.peers.get_mut(msg.host_id) {
                    if !p.summary.delta(version, &added, &removed) {
                        self.request_summary(msg.host_id, now);
                    }
                }
            }
            Body::Claim {
                state,
                name,
                expected,
            } if known => self.heard_claim(msg.host_id, from, state, &name, expected, now),
            Body::SummaryRequest if known => self.send_summary(msg.host_id, now),
            Body::SummaryRequest => {
                // From a host we have not heard announce itself yet (its ANNOUNCE answering
                // our HELLO is on its way): answered when it is, within EARLY_REQUEST_KEPT.
                self.early_requests
                    .retain(|r| now < r.2 + EARLY_REQUEST_KEPT && r.0 != msg.host_id);
                if self.early_requests.len() < EARLY_REQUESTS {
                    self.early_requests.push((msg.host_id, from, now));
                }
            }
            Body::SummaryPart {
                version,
                part,
                parts,
                fingerprints,
            } if known => self.summary_part(msg.host_id, version, part, parts, &fingerprints),
            // Answers, summaries, claims and GOODBYE count only from a peer in the table, at
            // its address.
            Body::Goodbye
            | Body::Claim { .. }
            | Body::Have { .. }
            | Body::HaveNot { .. }
            | Body::Fetching { .. }
            | Body::SummaryDelta { .. }
            | Body::SummaryPart { .. } => {
                if let Some(held) = self.bad_datagrams.check(now) {
                    debug!(
                        "discovery: dropped a {:?} from {from}, not a peer at that address ({held} more dropped since the last note)",
                        msg.body.kind()
                    );
                }
            }
        }
    }

    /// Ask peer `host` for its whole summary, unless asked within [`SUMMARY_RETRY`] or given
    /// up on (after [`SUMMARY_TRIES`] until it announces a new version).
    fn request_summary(&mut self, host: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(host) else {
            return;
        };
        let tries = match p.summary_asked {
            Some((at, _)) if now < at + SUMMARY_RETRY => return,
            Some((_, n)) if n >= SUMMARY_TRIES => return,
            Some((_, n)) => n + 1,
            None => 1,
        };
        p.summary_asked = Some((now, tries));
        let udp = p.udp;
        self.queue_message(Dest::Peer(udp), Body::SummaryRequest);
    }

    /// Peer `host` asked for our whole summary: send it, at most once per second per peer.
    fn send_summary(&mut self, host: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(host) else {
            return;
        };
        if p.summary_sent.is_some_and(|at| now < at + SUMMARY_RETRY) || self.summary.version() == 0
        {
            return;
        }
        p.summary_sent = Some(now);
        let udp = p.udp;
        let Some(parts) = self.summary.parts() else {
            return; // too big to send: the peer asks us about everything
        };
        let count = parts.len() as u16;
        let version = self.summary.version();
        for (i, fingerprints) in parts.into_iter().enumerate() {
            self.queue_message(
                Dest::Peer(udp),
                Body::SummaryPart {
                    version,
                    part: i as u16,
                    parts: count,
                    fingerprints,
                },
            );
        }
    }

    fn summary_part(&mut self, host: u64, version: u32, part: u16, parts: u16, fps: &[u32]) {
        let held: usize = self.peers.iter().map(|p| p.summary.len()).sum();
        let Some(p) = self.peers.get_mut(host) else {
            return;
        };
        if held + fps.len() > SUMMARY_BUDGET {
            p.summary.clear();
            if let Some(held) = self.table_full.check(self.clock) {
                warn!(
                    "discovery: peers' cache summaries exceed {SUMMARY_BUDGET} entries; asking peer {host:016x} about every file ({held} more since the last warning)"
                );
            }
            return;
        }
        if p.summary.part(version, part, parts, fps) {
            p.summary_asked = None;
            debug!(
                "discovery: peer {host:016x} summary version {version}: {} names",
                p.summary.len()
            );
        }
    }

    /// Let time pass: announce when due, forget silent peers, re-send and close questions.
    /// Calling it early or often is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = now;
        if self.hello_answer_due.is_some_and(|at| now >= at) {
            let _ = self.hello_tokens.take(now);
            self.answer_hello();
        }
        if self.hello_again.first().is_some_and(|&at| now >= at) {
            self.hello_again.remove(0);
            let payload = self.hello_payload.clone();
            self.queue_unique(Transmit {
                dest: Dest::Group,
                payload,
            });
        }
        if self.summary.is_dirty() && self.delta_tokens.take(now) {
            match self.summary.take_change() {
                Some(Change::Delta {
                    version,
                    added,
                    removed,
                }) => {
                    self.build_announcements();
                    self.queue_message(
                        Dest::Group,
                        Body::SummaryDelta {
                            version,
                            added,
                            removed,
                        },
                    );
                }
                Some(Change::Reset { .. }) => {
                    self.build_announcements();
                    let payload = self.announce_payload.clone();
                    self.queue_unique(Transmit {
                        dest: Dest::Group,
                        payload,
                    });
                }
                None => {}
            }
        }
        let retry: Vec<u64> = self
            .peers
            .iter()
            .filter(|p| p.summary.is_stale())
            .filter(|p| {
                p.summary_asked
                    .is_some_and(|(at, n)| n < SUMMARY_TRIES && now >= at + SUMMARY_RETRY)
            })
            .map(|p| p.host_id)
            .collect();
        for host in retry {
            self.request_summary(host, now);
        }
        if now >= self.next_announce {
            let payload = self.announce_payload.clone();
            self.queue_unique(Transmit {
                dest: Dest::Group,
                payload,
            });
            self.next_announce = now
                + self
                    .rng
                    .jitter(self.params.announce_interval, JITTER_PERCENT);
        }

        let mut gone = Vec::new();
        self.peers.expire(now, &mut gone);
        for peer in gone {
            self.peer_gone(peer, GoneReason::Silent);
        }

        for d in self.claims.expire(self.me.host_id, now) {
            self.settled(d);
        }

        let mut expired = Vec::new();
        let mut resend = Vec::new();
        self.questions.expire(now, &mut expired, &mut resend);
        for Expired { silent, rest } in expired {
            for host in silent {
                if let Some(p) = self.peers.get_mut(host) {
                    if !p.missed {
                        debug!(
                            "discovery: peer {host:016x} did not answer within {} ms; not waiting for it until it is heard again",
                            p.answers.wait(self.params.lookup_timeout).as_millis()
                        );
                    }
                    p.missed = true;
                }
            }
            self.next_wave(rest, now);
        }
        for r in resend {
            let mut payload = Vec::with_capacity(wire::MAX_DATAGRAM);
            wire::emit(
                &Message {
                    host_id: self.me.host_id,
                    body: Body::WhoHas {
                        question: r.id.0,
                        name: r.name.into_bytes(),
                        expected: r.expected,
                    },
                },
                &mut payload,
            );
            for host in r.pending {
                if let Some(udp) = self.peers.get(host).map(|p| p.udp) {
                    self.queue(Transmit {
                        dest: Dest::Peer(udp),
                        payload: payload.clone(),
                    });
                }
            }
        }
    }

    /// The earliest instant at which `handle_timeout` (or a join, see `poll_join`) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            Some(self.next_announce),
            self.hello_again.first().copied(),
            self.hello_answer_due,
            self.summary
                .is_dirty()
                .then(|| self.delta_tokens.next_at(self.clock)),
            self.peers
                .iter()
                .filter(|p| p.summary.is_stale())
                .filter_map(|p| match p.summary_asked {
                    Some((at, n)) if n < SUMMARY_TRIES => Some(at + SUMMARY_RETRY),
                    _ => None,
                })
                .min(),
            self.peers.next_expiry(),
            self.questions.next_deadline(),
            self.claims.next_deadline(),
            self.join.next_try(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send. Call until `None`; if sending would block, keep the
    /// `Transmit` and send it later.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event. Call until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Ask the peers, except those in `exclude`, who has `file`: the compatible ones (same
    /// distribution and architecture) when the content is unknown; every peer when `expected`
    /// says what it must be (a file of that size and SHA-256 is the same file whoever has it:
    /// share by content). The answer comes as
    /// one `Event::Answer` with the returned id: the first peer that says HAVE, or `None` once
    /// every asked peer said no or left, or when `lookup_timeout` has passed. The WHO_HAS is
    /// sent again at half the timeout to the peers that have not answered. With nobody to ask,
    /// an unfit name, or too many open questions, the answer `None` is queued at once.
    pub fn ask(
        &mut self,
        file: &str,
        expected: Option<Expected>,
        exclude: &[u64],
        now: Instant,
    ) -> QuestionId {
        self.ask_inner(file, expected, exclude, now, false)
    }

    /// [`Self::ask`] for a file this host is about to download: when nobody has it, the file
    /// is claimed first (see `claims.rs`, one fetcher per file), and the answer is then the
    /// peer that leads its download from upstream (follow it: fetch from its file server), or
    /// `None` when this host leads (fetch from upstream; [`Self::release`] when done). Peers
    /// in `exclude` are never followed.
    pub fn ask_to_fetch(
        &mut self,
        file: &str,
        expected: Option<Expected>,
        exclude: &[u64],
        now: Instant,
    ) -> QuestionId {
        self.ask_inner(file, expected, exclude, now, true)
    }

    fn ask_inner(
        &mut self,
        file: &str,
        expected: Option<Expected>,
        exclude: &[u64],
        now: Instant,
        fetch: bool,
    ) -> QuestionId {
        self.clock = now;
        let id = self.questions.allocate();
        if !wire::is_valid_file_name(file) {
            debug!("discovery: not asking about unfit file name {file:?}");
            self.answer_nobody(id);
            return id;
        }
        if fetch {
            let key = Key {
                name: file.to_owned(),
                expected,
            };
            let _ = self.claims.mark(id, key, exclude);
        }
        if self.questions.is_full() {
            if let Some(held) = self.too_many_questions.check(now) {
                warn!(
                    "discovery: {} questions open, answering nobody ({held} more since the last warning)",
                    self.questions.len()
                );
            }
            self.answer_nobody(id);
            return id;
        }
        let fp = summary::fingerprint(file);
        let mut listed = Vec::new();
        let mut unknown = Vec::new();
        for p in self.peers.iter() {
            if !(p.compatible || expected.is_some())
                || exclude.contains(&p.host_id)
                || p.missed
                || !p.summary.may_have(fp)
            {
                continue;
            }
            if p.summary.is_known() && !p.summary.is_stale() {
                listed.push(p.host_id);
            } else {
                unknown.push(p.host_id);
            }
        }
        // Peers whose summary lists the file first, in random order so that the load of a
        // popular file spreads over its holders; then those whose summary is not known.
        self.shuffle(&mut listed);
        self.shuffle(&mut unknown);
        listed.extend(unknown);
        self.next_wave(
            Rest {
                id,
                name: file.to_owned(),
                expected,
                later: listed,
            },
            now,
        );
        id
    }

    /// Ask the next [`WAVE`] candidates of a question (still in the table and not silent),
    /// waiting for the slowest of them; with none left, the answer is nobody.
    fn next_wave(&mut self, rest: Rest, now: Instant) {
        let Rest {
            id,
            name,
            expected,
            mut later,
        } = rest;
        later.retain(|h| self.peers.get(*h).is_some_and(|p| !p.missed));
        if later.is_empty() {
            self.answer_nobody(id);
            return;
        }
        let wave: Vec<u64> = later.drain(..later.len().min(WAVE)).collect();
        let ceiling = self.params.lookup_timeout;
        let mut wait = Duration::ZERO;
        let mut payload = Vec::with_capacity(wire::MAX_DATAGRAM);
        wire::emit(
            &Message {
                host_id: self.me.host_id,
                body: Body::WhoHas {
                    question: id.0,
                    name: name.as_bytes().to_vec(),
                    expected,
                },
            },
            &mut payload,
        );
        for &host in &wave {
            if let Some(p) = self.peers.get(host) {
                let mut own = p.answers.wait(ceiling);
                if p.summary.is_known() && !p.summary.is_stale() {
                    // Its summary lists the file: it very likely has it, and a wrong "nobody"
                    // costs a download from the internet. Give a busy holder time.
                    own = own.max(LISTED_WAIT.min(ceiling));
                }
                wait = wait.max(own);
                let udp = p.udp;
                self.queue(Transmit {
                    dest: Dest::Peer(udp),
                    payload: payload.clone(),
                });
            }
        }
        if !self
            .questions
            .open(id, &name, expected, wave, later, now, wait)
        {
            self.answer_nobody(id);
        }
    }

    fn shuffle(&mut self, v: &mut [u64]) {
        for i in (1..v.len()).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    /// Forget question `q`: no answer will come for it (a queued one is removed).
    pub fn cancel(&mut self, q: QuestionId) {
        self.questions.cancel(q);
        self.claims.forget(q);
        self.events
            .retain(|e| !matches!(e, Event::Answer { question, .. } if *question == q));
    }

    /// Number of questions still waiting for answers.
    pub fn open_questions(&self) -> usize {
        self.questions.len()
    }

    /// Every peer in the table, in host id order, compatible or not.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter()
    }

    /// The peer with this host id.
    pub fn peer(&self, host_id: u64) -> Option<&Peer> {
        self.peers.get(host_id)
    }

    /// This host moved to another address: it takes a new host id (peers bind a host id to
    /// the address they first heard it from), so they list it anew at once. The old entry
    /// expires at their end, or is skipped after one unanswered question.
    pub fn new_host_id(&mut self, host_id: u64) {
        info!(
            "discovery: this host's addresses changed: host id {:016x} is now {host_id:016x}",
            self.me.host_id
        );
        self.me.host_id = host_id;
        self.build_announcements();
    }

    /// SIGUSR2: a join is due at once (`poll_join`), and HELLO + ANNOUNCE are queued. The
    /// event loop does the join before it sends, so they go out on the new membership.
    pub fn rejoin(&mut self, now: Instant) {
        self.clock = now;
        info!("discovery: rejoining the multicast group");
        self.join.rejoin(now);
        self.queue_hello_and_announce();
        self.schedule_hellos(now);
    }

    /// Clean shutdown: queue GOODBYE to the group (even past the queue limit).
    pub fn goodbye(&mut self) {
        let mut payload = Vec::with_capacity(wire::HEADER_LEN);
        wire::emit(
            &Message {
                host_id: self.me.host_id,
                body: Body::Goodbye,
            },
            &mut payload,
        );
        for &addr in &self.static_peers {
            self.transmits.push_back(Transmit {
                dest: Dest::Peer(addr),
                payload: payload.clone(),
            });
        }
        self.transmits.push_back(Transmit {
            dest: Dest::Group,
            payload,
        });
    }

    /// Whether the last join attempt succeeded (and no rejoin is pending).
    pub fn is_joined(&self) -> bool {
        self.join.is_joined()
    }

    /// Whether the event loop should call `MulticastSocket::join` now and report the result
    /// with `handle_join`.
    pub fn poll_join(&self, now: Instant) -> bool {
        self.join.is_due(now)
    }

    /// The result of a join attempt made at `now`. Logs as the schedule says (first failure,
    /// then at most once a minute, then "giving up, SIGUSR2 retries"); after a failed series a
    /// success queues HELLO + ANNOUNCE again.
    pub fn handle_join(&mut self, now: Instant, report: &JoinReport) -> JoinNote {
        self.clock = now;
        if report.is_success() {
            for (name, e) in &report.errors {
                warn!("discovery: could not join the group on {name}: {e}");
            }
            let note = self.join.succeeded();
            let after = if note
                == (JoinNote::Joined {
                    after_failure: true,
                }) {
                self.queue_hello_and_announce();
                self.schedule_hellos(now);
                " after retrying"
            } else {
                ""
            };
            info!(
                "discovery: joined the group on {}{after}",
                report.joined.join(", ")
            );
            return note;
        }
        let note = self.join.failed(now);
        let why = report.summary();
        match note {
            JoinNote::FirstFailure => warn!(
                "discovery: could not join the multicast group ({why}); retrying every {} s for {} min",
                super::join_schedule::JOIN_RETRY_EVERY.as_secs(),
                super::join_schedule::JOIN_RETRY_FOR.as_secs() / 60
            ),
            JoinNote::StillFailing { log: true } => {
                warn!("discovery: still cannot join the multicast group ({why}); retrying")
            }
            JoinNote::GaveUp => warn!(
                "discovery: gave up joining the multicast group ({why}); send SIGUSR2 to retry"
            ),
            JoinNote::StillFailing { log: false } | JoinNote::Joined { .. } => {}
        }
        note
    }

    /// One line per peer for SIGUSR1, in host id order, then a count line:
    /// `peer 0123456789abcdef 192.168.1.5 port 8080 arch/x86_64 heard 12 s ago`
    /// (`, incompatible` appended for peers that are never asked).
    pub fn describe_peers(&self, now: Instant) -> Vec<String> {
        let mut lines = Vec::with_capacity(self.peers.len() + 1);
        let mut compatible = 0usize;
        for p in self.peers.iter() {
            let mut line = format!(
                "peer {:016x} {} port {} {}/{} heard {} s ago",
                p.host_id,
                p.addr.ip(),
                p.addr.port(),
                p.distro,
                p.arch,
                now.saturating_duration_since(p.last_heard).as_secs()
            );
            if p.compatible {
                compatible += 1;
            } else {
                line.push_str(", incompatible");
            }
            if p.summary.is_known() && !p.summary.is_stale() {
                let _ = write!(line, ", summary of {} names", p.summary.len());
            } else {
                line.push_str(", no summary (asked about every file)");
            }
            if let Some(t) = p.answers.smoothed() {
                let _ = write!(line, ", answers in {:.1} ms", t.as_secs_f64() * 1000.0);
            }
            if p.missed {
                line.push_str(", silent (not asked until heard again)");
            }
            lines.push(line);
        }
        let mut count = String::new();
        let _ = write!(
            count,
            "{} peer{}, {compatible} compatible (this host {:016x}, {}/{})",
            self.peers.len(),
            if self.peers.len() == 1 { "" } else { "s" },
            self.me.host_id,
            self.me.distro,
            self.me.arch
        );
        lines.push(count);
        lines
    }

    fn heard(&mut self, host_id: u64, from: SocketAddr, ann: &Announcement, now: Instant) {
        let outcome = self.peers.heard(host_id, from, ann, now);
        let accepted = !matches!(outcome, Heard::Moved | Heard::Crowded);
        // An early request is answered once its sender is heard at the address it came from:
        // with its first announcement, or (a host on IPv4 and IPv6, whose request and first
        // announcement came by different families) with its first one in the other family.
        if accepted && self.early_requests.iter().any(|r| r.0 == host_id) {
            let bound = |a| self.peers.get(host_id).is_some_and(|p| p.is_from(a));
            let asked = self
                .early_requests
                .iter()
                .any(|r| r.0 == host_id && bound(r.1) && now < r.2 + EARLY_REQUEST_KEPT);
            if asked {
                self.early_requests.retain(|r| r.0 != host_id);
                self.send_summary(host_id, now);
            }
        }
        if let Some(p) = self.peers.get_mut(host_id).filter(|_| accepted) {
            p.missed = false;
            p.summary.announced(ann.summary);
            if p.summary.is_stale() {
                if p.summary_asked.is_some_and(|(_, n)| n >= SUMMARY_TRIES) {
                    p.summary_asked = None; // a new version: try again
                }
                self.request_summary(host_id, now);
            }
        }
        match outcome {
            Heard::Refreshed => {}
            Heard::New(peer) => {
                info!(
                    "discovery: peer {host_id:016x} up at {} ({}/{}{})",
                    peer.addr,
                    ann.distro,
                    ann.arch,
                    if self.peers.get(host_id).is_some_and(|p| p.compatible) {
                        ""
                    } else {
                        ", incompatible"
                    }
                );
                self.push_peer_event(Event::PeerUp(peer));
            }
            Heard::Replaced { old, new } => {
                self.peer_gone(old, GoneReason::Replaced);
                info!(
                    "discovery: peer {host_id:016x} up at {} ({}/{})",
                    new.addr, ann.distro, ann.arch
                );
                self.push_peer_event(Event::PeerUp(new));
            }
            Heard::Evicted { old, new } => {
                if let Some(held) = self.table_full.check(now) {
                    warn!(
                        "discovery: peer table full ({} peers), dropping the stalest for {from} ({held} more since the last warning)",
                        self.peers.len()
                    );
                }
                self.peer_gone(old, GoneReason::Evicted);
                info!(
                    "discovery: peer {host_id:016x} up at {} ({}/{})",
                    new.addr, ann.distro, ann.arch
                );
                self.push_peer_event(Event::PeerUp(new));
            }
            Heard::Moved | Heard::Crowded => {
                self.refused += 1;
                if let Some(held) = self.bad_datagrams.check(now) {
                    debug!(
                        "discovery: ignored an announcement of {host_id:016x} from {from}: {} ({held} more dropped since the last note)",
                        if outcome == Heard::Moved {
                            "that host id is bound to another address"
                        } else {
                            "too many hosts at that address"
                        }
                    );
                }
            }
        }
    }

    fn peer_gone(&mut self, peer: PeerRef, reason: GoneReason) {
        let why = match reason {
            GoneReason::Silent => "silent",
            GoneReason::Goodbye => "said goodbye",
            GoneReason::Replaced => "restarted",
            GoneReason::Evicted => "table full, heard from longest ago",
        };
        info!(
            "discovery: peer {:016x} at {} gone ({why})",
            peer.host_id, peer.addr
        );
        self.push_peer_event(Event::PeerGone(peer, reason));
        let mut over = Vec::new();
        self.questions.forget_peer(peer.host_id, &mut over);
        for rest in over {
            self.next_wave(rest, self.clock);
        }
    }

    fn answered(&mut self, q: QuestionId, host: u64, have: bool, now: Instant) {
        let Some((progress, sample)) = self.questions.answer(q, host, have, now) else {
            return;
        };
        if let (Some(rtt), Some(p)) = (sample, self.peers.get_mut(host)) {
            p.answers.sample(rtt);
        }
        match progress {
            Progress::Found(h) => {
                self.claims.forget(q);
                let peer = self.peers.get(h).map(Peer::peer_ref);
                self.events.push_back(Event::Answer { question: q, peer });
            }
            Progress::WaveOver(rest) => self.next_wave(rest, now),
            Progress::Waiting => {}
        }
    }

    fn answer_nobody(&mut self, question: QuestionId) {
        if self.claims.is_marked(question) && self.claim(question) {
            return; // answered when the claim is settled
        }
        self.claims.forget(question);
        self.events.push_back(Event::Answer {
            question,
            peer: None,
        });
    }

    /// Nobody has the file of marked question `question`: multicast a CLAIM and wait the
    /// window. `false` (nothing sent) when no peer could claim it too.
    fn claim(&mut self, question: QuestionId) -> bool {
        let Some((key, exclude)) = self.claims.marked(question) else {
            return false;
        };
        let mut window = None;
        for p in self.peers.iter() {
            if (p.compatible || key.expected.is_some()) && !exclude.contains(&p.host_id) {
                let own = p.answers.wait(claims::WINDOW_MAX);
                window = Some(window.map_or(own, |w: Duration| w.max(own)));
            }
        }
        let Some(window) = window else {
            return false;
        };
        let body = Body::Claim {
            state: ClaimState::Claiming,
            name: key.name.as_bytes().to_vec(),
            expected: key.expected,
        };
        self.queue_message(Dest::Group, body);
        if let Some(d) = self.claims.begin(question, self.clock, window) {
            self.settled(d);
        }
        true
    }

    /// A CLAIM, LEADING or SERVING from known peer `host` at `from`.
    fn heard_claim(
        &mut self,
        host: u64,
        from: SocketAddr,
        state: ClaimState,
        name: &[u8],
        expected: Option<Expected>,
        now: Instant,
    ) {
        let Some(name) = wire::file_name(name) else {
            return;
        };
        // Without the content, only a host of this distribution and architecture has the
        // same file under that name (as for WHO_HAS).
        if expected.is_none() && !self.peers.get(host).is_some_and(|p| p.compatible) {
            return;
        }
        let key = Key {
            name: name.to_owned(),
            expected,
        };
        let ours = self.claims.lead_state(&key, now);
        if let Some(ours) = ours.filter(|_| state == ClaimState::Claiming) {
            if self.answer_limit.allow(from.ip(), now) {
                // A latecomer: it follows us at once.
                let body = Body::Claim {
                    state: ours,
                    name: key.name.as_bytes().to_vec(),
                    expected,
                };
                self.queue_message(Dest::Peer(from), body);
            }
        }
        for d in self.claims.heard(host, key, state, self.me.host_id, now) {
            self.settled(d);
        }
    }

    /// A claim was settled: answer its question, and say LEADING to the group if we lead.
    fn settled(&mut self, d: Decided) {
        let Decided {
            question,
            key,
            decision,
            won,
        } = d;
        let peer = match decision {
            Decision::Follow(host) => {
                let peer = self.peers.get(host).map(Peer::peer_ref);
                debug!(
                    "discovery: {}: following peer {host:016x}, which fetches it",
                    key.name
                );
                peer
            }
            Decision::Lead => {
                let why = if won {
                    "won the claim"
                } else {
                    "its leader never served it"
                };
                debug!("discovery: {}: leading its download ({why})", key.name);
                let body = Body::Claim {
                    state: ClaimState::Leading,
                    name: key.name.into_bytes(),
                    expected: key.expected,
                };
                self.queue_message(Dest::Group, body);
                None
            }
        };
        self.events.push_back(Event::Answer { question, peer });
    }

    /// This host downloads `file` from upstream from now on (it claimed it, or nobody else
    /// could): a CLAIM for it is answered LEADING until [`Self::release`].
    pub fn lead(&mut self, file: &str, expected: Option<Expected>, now: Instant) {
        self.clock = now;
        let key = Key {
            name: file.to_owned(),
            expected,
        };
        self.claims.lead(key, false, now);
    }

    /// This host's file server streams `file` (being downloaded from upstream) as it
    /// arrives: SERVING to the group, so that the hosts following this one fetch it now, and
    /// CLAIMs answered SERVING until [`Self::release`].
    pub fn serving(&mut self, file: &str, expected: Option<Expected>, now: Instant) {
        self.clock = now;
        let key = Key {
            name: file.to_owned(),
            expected,
        };
        if self.claims.lead(key, true, now) {
            let body = Body::Claim {
                state: ClaimState::Serving,
                name: file.as_bytes().to_vec(),
                expected,
            };
            self.queue_message(Dest::Group, body);
        }
    }

    /// The download of `file` from upstream ended (whole, failed or given up).
    pub fn release(&mut self, file: &str) {
        // Its followers wait for it to serve: tell them not to, when it never did.
        for key in self.claims.release(file) {
            let body = Body::Claim {
                state: ClaimState::Released,
                name: key.name.into_bytes(),
                expected: key.expected,
            };
            self.queue_message(Dest::Group, body);
        }
    }

    /// Whether this host leads the download of `file` (by name, any content).
    pub fn is_leading(&self, file: &str) -> bool {
        self.claims.led().any(|n| n == file)
    }

    fn push_peer_event(&mut self, e: Event) {
        if self.events.len() < PEER_EVENT_LIMIT {
            self.events.push_back(e);
        }
    }

    fn queue_hello_and_announce(&mut self) {
        let hello = self.hello_payload.clone();
        let announce = self.announce_payload.clone();
        self.queue_unique(Transmit {
            dest: Dest::Group,
            payload: hello,
        });
        self.queue_unique(Transmit {
            dest: Dest::Group,
            payload: announce,
        });
    }

    fn queue_message(&mut self, dest: Dest, body: Body) {
        let mut payload = Vec::with_capacity(wire::MAX_DATAGRAM);
        wire::emit(
            &Message {
                host_id: self.me.host_id,
                body,
            },
            &mut payload,
        );
        self.queue(Transmit { dest, payload });
    }

    /// Queue `t` unless the same datagram to the same place is already waiting.
    fn queue_unique(&mut self, t: Transmit) {
        if !self.transmits.contains(&t) {
            self.queue(t);
        }
    }

    /// Queue `t`; one to the group is also queued to each static peer.
    fn queue(&mut self, t: Transmit) {
        if t.dest == Dest::Group && !self.static_peers.is_empty() {
            for i in 0..self.static_peers.len() {
                let copy = Transmit {
                    dest: Dest::Peer(self.static_peers[i]),
                    payload: t.payload.clone(),
                };
                if !self.transmits.contains(&copy) {
                    self.queue_one(copy);
                }
            }
        }
        self.queue_one(t);
    }

    fn queue_one(&mut self, t: Transmit) {
        if self.transmits.len() >= TRANSMIT_QUEUE_LIMIT {
            if let Some(held) = self.queue_full.check(self.clock) {
                warn!(
                    "discovery: {TRANSMIT_QUEUE_LIMIT} datagrams waiting to be sent, dropping ({held} more dropped since the last warning)"
                );
            }
            return;
        }
        self.transmits.push_back(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::wire::{emit, parse};
    use std::time::Duration;

    const ME: u64 = 0xAAAA_0000_0000_0001;
    const SEED: u64 = 12345;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn me() -> Identity {
        Identity {
            host_id: ME,
            tcp_port: 19433,
            distro: "arch".into(),
            arch: "x86_64".into(),
        }
    }

    fn params() -> Params {
        Params::default()
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 19432))
    }

    fn datagram(host_id: u64, body: Body) -> Vec<u8> {
        let mut out = Vec::new();
        emit(&Message { host_id, body }, &mut out);
        out
    }

    fn announce(host_id: u64, port: u16, distro: &str, arch: &str) -> Vec<u8> {
        datagram(
            host_id,
            Body::Announce(Announcement {
                tcp_port: port,
                distro: distro.into(),
                arch: arch.into(),
                summary: 0,
            }),
        )
    }

    fn no_files(_: &str, _: Option<Expected>) -> bool {
        false
    }

    /// A started core with its start-up transmits and join handled.
    fn started(t0: Instant) -> Discovery {
        let mut d = Discovery::new(me(), params(), t0, SEED);
        d.hello_again.clear(); // tested on their own
        d.handle_join(
            t0,
            &JoinReport {
                joined: vec!["eth0".into()],
                errors: Vec::new(),
            },
        );
        drain_transmits(&mut d);
        d
    }

    fn drain_transmits(d: &mut Discovery) -> Vec<(Dest, Message)> {
        std::iter::from_fn(|| d.poll_transmit())
            .map(|t| {
                (
                    t.dest,
                    parse(&t.payload).expect("core emits valid datagrams"),
                )
            })
            .collect()
    }

    fn drain_events(d: &mut Discovery) -> Vec<Event> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    /// Add peer `n` at 10.0.0.n with TCP port 8000+n.
    fn add_peer(d: &mut Discovery, n: u8, distro: &str, arch: &str, now: Instant) {
        let bytes = announce(u64::from(n), 8000 + u16::from(n), distro, arch);
        d.handle_datagram(addr(n), &bytes, now, &mut no_files);
    }

    fn who_has_targets(sent: &[(Dest, Message)]) -> Vec<(SocketAddr, u32)> {
        sent.iter()
            .filter_map(|(dest, m)| match (dest, &m.body) {
                (Dest::Peer(a), Body::WhoHas { question, .. }) => Some((*a, *question)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_host_on_ipv4_and_ipv6_is_one_peer_and_its_early_request_is_answered() {
        let t0 = Instant::now();
        let mut d = started(t0);
        d.set_cache_names(["a-1-1-any.pkg.tar.zst"], t0);
        let _ = drain_transmits(&mut d);
        let v6 = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::9".parse().unwrap(),
            19432,
            0,
            2,
        ));
        // Its request comes over IPv6, its first announcement over IPv4: not answered yet.
        let request = datagram(9, Body::SummaryRequest);
        d.handle_datagram(v6, &request, t0, &mut no_files);
        d.handle_datagram(
            addr(9),
            &announce(9, 19432, "arch", "x86_64"),
            t0,
            &mut no_files,
        );
        let parts = |sent: &[(Dest, Message)]| {
            sent.iter()
                .filter(|(_, m)| matches!(m.body, Body::SummaryPart { .. }))
                .count()
        };
        assert_eq!(parts(&drain_transmits(&mut d)), 0);
        // Its announcement over IPv6 binds that address too: the request is answered.
        d.handle_datagram(v6, &announce(9, 19432, "arch", "x86_64"), t0, &mut no_files);
        assert_eq!(parts(&drain_transmits(&mut d)), 1);
        assert_eq!(d.peers().count(), 1);
        let p = d.peers().next().unwrap();
        assert_eq!(p.addr, "10.0.0.9:19432".parse().unwrap());
        assert!(p.is_from(v6) && p.is_from(addr(9)));
        // A GOODBYE from either address counts.
        d.handle_datagram(v6, &datagram(9, Body::Goodbye), t0, &mut no_files);
        assert_eq!(d.peers().count(), 0);
    }

    #[test]
    fn start_queues_hello_then_announce_and_a_join() {
        let t0 = Instant::now();
        let mut d = Discovery::new(me(), params(), t0, SEED);
        assert!(d.poll_join(t0));
        assert_eq!(d.poll_timeout(), Some(t0));
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, Dest::Group);
        assert!(
            matches!(&sent[0].1.body, Body::Hello(a) if a.tcp_port == 19433 && a.distro == "arch")
        );
        assert!(matches!(&sent[1].1.body, Body::Announce(a) if a.arch == "x86_64"));
        assert!(sent.iter().all(|(_, m)| m.host_id == ME));
        let note = d.handle_join(
            t0,
            &JoinReport {
                joined: vec!["eth0".into()],
                errors: vec![],
            },
        );
        assert_eq!(
            note,
            JoinNote::Joined {
                after_failure: false
            }
        );
        assert!(!d.poll_join(t0));
        assert!(
            drain_transmits(&mut d).is_empty(),
            "no second HELLO after a first-try join"
        );
    }

    #[test]
    fn hello_is_answered_to_the_group_at_most_once_a_second_and_adds_the_sender() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let hello = datagram(
            7,
            Body::Hello(Announcement {
                tcp_port: 9000,
                distro: "arch".into(),
                arch: "x86_64".into(),
                summary: 0,
            }),
        );
        d.handle_datagram(addr(7), &hello, t0, &mut no_files);
        // A duplicated HELLO before the answer went out is answered once.
        d.handle_datagram(addr(7), &hello, t0, &mut no_files);
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), 1);
        // To the group, never to the (spoofable) unicast source.
        assert_eq!(sent[0].0, Dest::Group);
        assert!(matches!(&sent[0].1.body, Body::Announce(a) if a.tcp_port == 19433));
        // A storm of HELLOs: the burst (a host's HELLO and its two re-sends), then one more
        // ANNOUNCE when a second is over.
        let mut answers = 0;
        for k in 1..100u64 {
            d.handle_datagram(addr(7), &hello, t0 + ms(k * 5), &mut no_files);
            answers += drain_transmits(&mut d).len();
        }
        assert_eq!(answers, HELLO_ANSWER_BURST as usize - 1);
        assert_eq!(d.poll_timeout(), Some(t0 + secs(1)));
        d.handle_timeout(t0 + secs(1));
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Dest::Group);
        let p = d.peer(7).unwrap();
        assert_eq!(p.addr, "10.0.0.7:9000".parse().unwrap());
        assert_eq!(p.udp, addr(7));
        assert_eq!(
            drain_events(&mut d),
            vec![Event::PeerUp(PeerRef {
                host_id: 7,
                addr: "10.0.0.7:9000".parse().unwrap()
            })]
        );
    }

    #[test]
    fn own_datagrams_are_ignored() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let hello = datagram(
            ME,
            Body::Hello(Announcement {
                tcp_port: 1,
                distro: "arch".into(),
                arch: "x86_64".into(),
                summary: 0,
            }),
        );
        d.handle_datagram(addr(1), &hello, t0, &mut no_files);
        d.handle_datagram(
            addr(1),
            &announce(ME, 1, "arch", "x86_64"),
            t0,
            &mut no_files,
        );
        let mut called = false;
        d.handle_datagram(
            addr(1),
            &datagram(
                ME,
                Body::WhoHas {
                    question: 1,
                    name: b"f".to_vec(),
                    expected: None,
                },
            ),
            t0,
            &mut |_, _| {
                called = true;
                true
            },
        );
        assert!(!called);
        assert_eq!(d.peers().count(), 0);
        assert!(drain_transmits(&mut d).is_empty());
        assert!(drain_events(&mut d).is_empty());
    }

    #[test]
    fn garbage_is_dropped() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let mut s = 99u64;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            d.handle_datagram(addr(1), &bytes, t0, &mut no_files);
        }
        assert_eq!(d.peers().count(), 0);
        assert!(drain_transmits(&mut d).is_empty());
    }

    #[test]
    fn announces_periodically_with_jitter_within_ten_percent() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let mut now = t0;
        let mut last = t0;
        let mut gaps = Vec::new();
        for _ in 0..500 {
            let next = d.poll_timeout().unwrap();
            assert!(next > now);
            now = next;
            d.handle_timeout(now);
            let sent = drain_transmits(&mut d);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].0, Dest::Group);
            assert!(matches!(sent[0].1.body, Body::Announce(_)));
            gaps.push(now - last);
            last = now;
        }
        assert!(
            gaps.iter().all(|g| *g >= secs(54) && *g <= secs(66)),
            "{gaps:?}"
        );
        let min = gaps.iter().min().unwrap();
        let max = gaps.iter().max().unwrap();
        assert!(
            *min < secs(56) && *max > secs(64),
            "jitter spreads: {min:?}..{max:?}"
        );
        // Not before its time.
        let next = d.poll_timeout().unwrap();
        d.handle_timeout(next - ms(1));
        assert!(drain_transmits(&mut d).is_empty());
    }

    #[test]
    fn different_seeds_spread_announcements() {
        let t0 = Instant::now();
        // poll_timeout is "join now" at first; compare the announce times.
        let a = Discovery::new(me(), params(), t0, 1).next_announce;
        let b = Discovery::new(me(), params(), t0, 2).next_announce;
        assert_ne!(a, b);
    }

    #[test]
    fn peers_expire_after_three_silent_intervals() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        add_peer(&mut d, 2, "arch", "x86_64", t0);
        drain_events(&mut d);
        // Peer 2 keeps announcing, peer 1 falls silent.
        for n in 1..=3 {
            let now = t0 + secs(60 * n);
            add_peer(&mut d, 2, "arch", "x86_64", now);
            d.handle_timeout(now - ms(1));
            assert!(d.peer(1).is_some(), "still there before 3 intervals");
        }
        d.handle_timeout(t0 + secs(180) - ms(1));
        assert!(d.peer(1).is_some());
        // The expiry of peer 1 is one of the core's deadlines.
        assert_eq!(d.peers.next_expiry(), Some(t0 + secs(180)));
        assert!(d.poll_timeout().unwrap() <= t0 + secs(180));
        d.handle_timeout(t0 + secs(180));
        assert!(d.peer(1).is_none());
        assert!(d.peer(2).is_some());
        let gone: Vec<Event> = drain_events(&mut d);
        assert_eq!(
            gone,
            vec![Event::PeerGone(
                PeerRef {
                    host_id: 1,
                    addr: "10.0.0.1:8001".parse().unwrap()
                },
                GoneReason::Silent
            )]
        );
        assert!(d.poll_timeout().unwrap() <= t0 + secs(360));
    }

    #[test]
    fn goodbye_removes_at_once_and_goodbye_is_sent() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        drain_events(&mut d);
        d.handle_datagram(addr(1), &datagram(1, Body::Goodbye), t0, &mut no_files);
        assert_eq!(d.peers().count(), 0);
        assert!(matches!(
            drain_events(&mut d)[..],
            [Event::PeerGone(_, GoneReason::Goodbye)]
        ));
        // A goodbye from an unknown host changes nothing.
        d.handle_datagram(addr(3), &datagram(3, Body::Goodbye), t0, &mut no_files);
        assert!(drain_events(&mut d).is_empty());
        d.goodbye();
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0],
            (
                Dest::Group,
                Message {
                    host_id: ME,
                    body: Body::Goodbye
                }
            )
        );
    }

    #[test]
    fn restarted_host_replaces_its_old_entry() {
        let t0 = Instant::now();
        let mut d = started(t0);
        d.handle_datagram(
            addr(1),
            &announce(100, 8080, "arch", "x86_64"),
            t0,
            &mut no_files,
        );
        d.handle_datagram(
            addr(1),
            &announce(200, 8080, "arch", "x86_64"),
            t0,
            &mut no_files,
        );
        let ids: Vec<u64> = d.peers().map(|p| p.host_id).collect();
        assert_eq!(ids, vec![200]);
        let ev = drain_events(&mut d);
        assert_eq!(ev.len(), 3);
        assert!(matches!(
            ev[1],
            Event::PeerGone(PeerRef { host_id: 100, .. }, GoneReason::Replaced)
        ));
        assert!(matches!(ev[2], Event::PeerUp(PeerRef { host_id: 200, .. })));
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let p = Params {
            max_peers: 3,
            ..params()
        };
        let mut d = Discovery::new(me(), p, t0, SEED);
        for n in 1..=10 {
            add_peer(&mut d, n, "arch", "x86_64", t0);
        }
        assert_eq!(d.peers().count(), 3);
        // Full: each new host took the place of the one heard from longest ago.
        assert_eq!(
            d.peers().map(|p| p.host_id).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        // Known peers are still refreshed when the table is full.
        add_peer(&mut d, 9, "arch", "x86_64", t0 + secs(10));
        assert_eq!(d.peer(9).unwrap().last_heard, t0 + secs(10));
        add_peer(&mut d, 11, "arch", "x86_64", t0 + secs(11));
        assert!(d.peer(9).is_some() && d.peer(11).is_some());

        let mut d = Discovery::new(me(), Params::default(), t0, SEED);
        for n in 0..1100u32 {
            let from = SocketAddr::from(([10, 1, (n >> 8) as u8, n as u8], 19432));
            d.handle_datagram(
                from,
                &announce(1000 + u64::from(n), 1, "arch", "x86_64"),
                t0,
                &mut no_files,
            );
        }
        assert_eq!(d.peers().count(), 1024);
    }

    #[test]
    fn incompatible_peers_are_listed_but_never_asked() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "archarm", "aarch64", t0);
        add_peer(&mut d, 2, "arch", "aarch64", t0);
        add_peer(&mut d, 3, "manjaro", "x86_64", t0);
        assert_eq!(d.peers().count(), 3);
        assert!(d.peers().all(|p| !p.compatible));
        drain_events(&mut d);
        let q = d.ask("f.pkg.tar.zst", None, &[], t0);
        assert!(drain_transmits(&mut d).is_empty());
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q,
                peer: None
            }]
        );
        add_peer(&mut d, 4, "arch", "x86_64", t0);
        let q = d.ask("f.pkg.tar.zst", None, &[], t0);
        let sent = drain_transmits(&mut d);
        assert_eq!(who_has_targets(&sent), vec![(addr(4), q.0)]);
        let lines = d.describe_peers(t0 + secs(5));
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "peer 0000000000000001 10.0.0.1 port 8001 archarm/aarch64 heard 5 s ago, incompatible, no summary (asked about every file)"
        );
        assert_eq!(
            lines[3],
            "peer 0000000000000004 10.0.0.4 port 8004 arch/x86_64 heard 5 s ago, no summary (asked about every file)"
        );
        assert!(
            lines[4].starts_with("4 peers, 1 compatible"),
            "{}",
            lines[4]
        );
    }

    #[test]
    fn first_have_answers_the_question() {
        let t0 = Instant::now();
        let mut d = started(t0);
        for n in 1..=3 {
            add_peer(&mut d, n, "arch", "x86_64", t0);
        }
        drain_events(&mut d);
        let q = d.ask("zstd-1.5.6-1-x86_64.pkg.tar.zst", None, &[], t0);
        let sent = drain_transmits(&mut d);
        let targets = who_has_targets(&sent);
        assert_eq!(targets.len(), 3);
        assert!(targets.iter().all(|(_, id)| *id == q.0));
        assert!(sent.iter().all(|(_, m)| matches!(&m.body, Body::WhoHas { name, .. } if name == b"zstd-1.5.6-1-x86_64.pkg.tar.zst")));
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::HaveNot { question: q.0 }),
            t0 + ms(5),
            &mut no_files,
        );
        assert!(drain_events(&mut d).is_empty());
        d.handle_datagram(
            addr(3),
            &datagram(3, Body::Have { question: q.0 }),
            t0 + ms(6),
            &mut no_files,
        );
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q,
                peer: Some(PeerRef {
                    host_id: 3,
                    addr: "10.0.0.3:8003".parse().unwrap()
                })
            }]
        );
        // A later HAVE for the closed question is dropped.
        d.handle_datagram(
            addr(2),
            &datagram(2, Body::Have { question: q.0 }),
            t0 + ms(7),
            &mut no_files,
        );
        assert!(drain_events(&mut d).is_empty());
        assert_eq!(d.open_questions(), 0);
    }

    #[test]
    fn all_no_answers_nobody_at_once() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        add_peer(&mut d, 2, "arch", "x86_64", t0);
        drain_events(&mut d);
        let q = d.ask("f", None, &[], t0);
        drain_transmits(&mut d);
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::HaveNot { question: q.0 }),
            t0 + ms(1),
            &mut no_files,
        );
        d.handle_datagram(
            addr(2),
            &datagram(2, Body::HaveNot { question: q.0 }),
            t0 + ms(2),
            &mut no_files,
        );
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q,
                peer: None
            }]
        );
        // Nothing else happens at the re-send time or the deadline.
        d.handle_timeout(t0 + secs(1));
        assert!(drain_events(&mut d).is_empty());
        assert!(
            drain_transmits(&mut d)
                .iter()
                .all(|(_, m)| !matches!(m.body, Body::WhoHas { .. }))
        );
    }

    #[test]
    fn lost_answers_resend_once_at_half_then_deadline() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        add_peer(&mut d, 2, "arch", "x86_64", t0);
        drain_events(&mut d);
        let q = d.ask("f", None, &[], t0);
        drain_transmits(&mut d);
        assert_eq!(d.poll_timeout(), Some(t0 + ms(125)));
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::HaveNot { question: q.0 }),
            t0 + ms(10),
            &mut no_files,
        );
        d.handle_timeout(t0 + ms(124));
        assert!(drain_transmits(&mut d).is_empty());
        d.handle_timeout(t0 + ms(125));
        let sent = drain_transmits(&mut d);
        assert_eq!(
            who_has_targets(&sent),
            vec![(addr(2), q.0)],
            "only the silent peer"
        );
        assert_eq!(d.poll_timeout(), Some(t0 + ms(250)));
        d.handle_timeout(t0 + ms(249));
        assert!(drain_transmits(&mut d).is_empty());
        assert!(drain_events(&mut d).is_empty());
        d.handle_timeout(t0 + ms(250));
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q,
                peer: None
            }]
        );
        // A late answer after the deadline is dropped.
        d.handle_datagram(
            addr(2),
            &datagram(2, Body::Have { question: q.0 }),
            t0 + ms(300),
            &mut no_files,
        );
        assert!(drain_events(&mut d).is_empty());
    }

    #[test]
    fn answer_after_the_resend_still_counts() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        let q = d.ask("f", None, &[], t0);
        d.handle_timeout(t0 + ms(125));
        drain_events(&mut d);
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::Have { question: q.0 }),
            t0 + ms(200),
            &mut no_files,
        );
        assert!(matches!(
            drain_events(&mut d)[..],
            [Event::Answer {
                peer: Some(PeerRef { host_id: 1, .. }),
                ..
            }]
        ));
    }

    #[test]
    fn answers_from_unasked_hosts_or_to_unknown_questions_are_dropped() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        add_peer(&mut d, 2, "archarm", "aarch64", t0);
        drain_events(&mut d);
        let q = d.ask("f", None, &[], t0);
        // Incompatible peer 2 was not asked; stranger 9 is not even known.
        d.handle_datagram(
            addr(2),
            &datagram(2, Body::Have { question: q.0 }),
            t0,
            &mut no_files,
        );
        d.handle_datagram(
            addr(9),
            &datagram(9, Body::Have { question: q.0 }),
            t0,
            &mut no_files,
        );
        d.handle_datagram(
            addr(1),
            &datagram(
                1,
                Body::Have {
                    question: q.0.wrapping_add(1),
                },
            ),
            t0,
            &mut no_files,
        );
        assert!(drain_events(&mut d).is_empty());
        assert_eq!(d.open_questions(), 1);
    }

    #[test]
    fn exclusion_list_is_honoured() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        add_peer(&mut d, 2, "arch", "x86_64", t0);
        drain_events(&mut d);
        let q = d.ask("f", None, &[1], t0);
        assert_eq!(
            who_has_targets(&drain_transmits(&mut d)),
            vec![(addr(2), q.0)]
        );
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::Have { question: q.0 }),
            t0,
            &mut no_files,
        );
        assert!(
            drain_events(&mut d).is_empty(),
            "excluded peer was not asked"
        );
        let q2 = d.ask("f", None, &[1, 2], t0);
        assert!(drain_transmits(&mut d).is_empty());
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q2,
                peer: None
            }]
        );
        assert_ne!(q, q2);
    }

    #[test]
    fn no_peers_or_bad_name_answers_nobody_on_next_poll() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let q = d.ask("f", None, &[], t0);
        assert_eq!(
            d.poll_event(),
            Some(Event::Answer {
                question: q,
                peer: None
            })
        );
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        drain_events(&mut d);
        for bad in ["", "a/b", "a\0b", "..", &"n".repeat(256)] {
            let q = d.ask(bad, None, &[], t0);
            assert_eq!(
                d.poll_event(),
                Some(Event::Answer {
                    question: q,
                    peer: None
                }),
                "{bad:?}"
            );
        }
        assert!(drain_transmits(&mut d).is_empty());
    }

    #[test]
    fn cancel_drops_the_question_and_its_queued_answer() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        drain_events(&mut d);
        let q = d.ask("f", None, &[], t0);
        d.cancel(q);
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::Have { question: q.0 }),
            t0,
            &mut no_files,
        );
        d.handle_timeout(t0 + secs(1));
        assert!(drain_events(&mut d).is_empty());
        let q = d.ask("", None, &[], t0);
        d.cancel(q);
        assert!(drain_events(&mut d).is_empty());
    }

    #[test]
    fn peer_leaving_mid_question_counts_as_no() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        drain_events(&mut d);
        let q = d.ask("f", None, &[], t0);
        d.handle_datagram(
            addr(1),
            &datagram(1, Body::Goodbye),
            t0 + ms(3),
            &mut no_files,
        );
        let ev = drain_events(&mut d);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[1],
            Event::Answer {
                question: q,
                peer: None
            }
        );
    }

    #[test]
    fn open_questions_are_bounded() {
        let t0 = Instant::now();
        let mut d = started(t0);
        add_peer(&mut d, 1, "arch", "x86_64", t0);
        drain_events(&mut d);
        for _ in 0..crate::discovery::questions::MAX_OPEN_QUESTIONS {
            d.ask("f", None, &[], t0);
            d.poll_transmit();
        }
        assert!(drain_events(&mut d).is_empty());
        let q = d.ask("f", None, &[], t0);
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q,
                peer: None
            }]
        );
        assert_eq!(
            d.open_questions(),
            crate::discovery::questions::MAX_OPEN_QUESTIONS
        );
    }

    #[test]
    fn who_has_is_answered_for_anyone_with_checked_names() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let mut asked = Vec::new();
        let mut has = |name: &str, _: Option<Expected>| {
            asked.push(name.to_owned());
            name == "yes.pkg.tar.zst"
        };
        // The asker is not in the table and is of unknown distribution: still answered.
        for (q, name) in [
            (1u32, &b"yes.pkg.tar.zst"[..]),
            (2, b"no.pkg.tar.zst"),
            (3, b"../etc/passwd"),
            (4, b""),
            (5, &[0xff, 0xfe]),
            (6, b"a\0b"),
        ] {
            d.handle_datagram(
                addr(9),
                &datagram(
                    9,
                    Body::WhoHas {
                        question: q,
                        name: name.to_vec(),
                        expected: None,
                    },
                ),
                t0,
                &mut has,
            );
        }
        assert_eq!(asked, vec!["yes.pkg.tar.zst", "no.pkg.tar.zst"]);
        let sent = drain_transmits(&mut d);
        let bodies: Vec<Body> = sent
            .into_iter()
            .map(|(dest, m)| {
                assert_eq!(dest, Dest::Peer(addr(9)));
                assert_eq!(m.host_id, ME);
                m.body
            })
            .collect();
        assert_eq!(
            bodies,
            vec![
                Body::Have { question: 1 },
                Body::HaveNot { question: 2 },
                Body::HaveNot { question: 3 },
                Body::HaveNot { question: 4 },
                Body::HaveNot { question: 5 },
                Body::HaveNot { question: 6 },
            ]
        );
    }

    #[test]
    fn a_file_in_flight_is_answered_fetching_and_a_cached_one_have() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let want = Expected {
            size: 10,
            sha256: crate::sync_db::Sha256([7; 32]),
        };
        for (q, name, expected) in [
            (1u32, &b"cached"[..], None),
            (2, b"in-flight", Some(want)),
            (3, b"in-flight", None),
            (4, b"neither", Some(want)),
            (5, b"../in-flight", None),
        ] {
            d.handle_datagram_with(
                addr(9),
                &datagram(
                    9,
                    Body::WhoHas {
                        question: q,
                        name: name.to_vec(),
                        expected,
                    },
                ),
                t0,
                &mut |n, _| n == "cached",
                &mut |n, e| (n == "in-flight" && e.is_none_or(|e| e == want)).then_some(4),
            );
        }
        let bodies: Vec<Body> = drain_transmits(&mut d)
            .into_iter()
            .map(|(_, m)| m.body)
            .collect();
        assert_eq!(
            bodies,
            vec![
                Body::Have { question: 1 },
                Body::Fetching {
                    question: 2,
                    bytes: 4
                },
                Body::Fetching {
                    question: 3,
                    bytes: 4
                },
                Body::HaveNot { question: 4 },
                Body::HaveNot { question: 5 },
            ]
        );
    }

    #[test]
    fn fetching_answers_a_question_like_have_only_from_the_asked_peer() {
        let t0 = Instant::now();
        let mut d = started(t0);
        for n in 1..=2 {
            add_peer(&mut d, n, "arch", "x86_64", t0);
        }
        drain_events(&mut d);
        let q = d.ask("f.pkg.tar.zst", None, &[], t0);
        drain_transmits(&mut d);
        // From an address that is not the peer's: dropped.
        d.handle_datagram(
            addr(7),
            &datagram(
                2,
                Body::Fetching {
                    question: q.0,
                    bytes: 1,
                },
            ),
            t0 + ms(1),
            &mut no_files,
        );
        assert!(drain_events(&mut d).is_empty());
        d.handle_datagram(
            addr(2),
            &datagram(
                2,
                Body::Fetching {
                    question: q.0,
                    bytes: 1,
                },
            ),
            t0 + ms(2),
            &mut no_files,
        );
        assert_eq!(
            drain_events(&mut d),
            vec![Event::Answer {
                question: q,
                peer: Some(PeerRef {
                    host_id: 2,
                    addr: "10.0.0.2:8002".parse().unwrap()
                })
            }]
        );
    }

    #[test]
    fn transmit_queue_is_bounded_but_goodbye_always_fits() {
        let t0 = Instant::now();
        let mut d = started(t0);
        for q in 0..(TRANSMIT_QUEUE_LIMIT as u32 + 100) {
            // Many askers (one source alone is held to its answer rate).
            d.handle_datagram(
                SocketAddr::from(([10, 9, (q >> 8) as u8, q as u8], 19432)),
                &datagram(
                    9,
                    Body::WhoHas {
                        question: q,
                        name: b"f".to_vec(),
                        expected: None,
                    },
                ),
                t0,
                &mut no_files,
            );
        }
        d.goodbye();
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), TRANSMIT_QUEUE_LIMIT + 1);
        assert_eq!(sent.last().unwrap().1.body, Body::Goodbye);
    }

    #[test]
    fn rejoin_queues_hello_and_announce_and_a_join() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let t1 = t0 + secs(30);
        d.rejoin(t1);
        assert!(d.poll_join(t1));
        assert_eq!(d.poll_timeout(), Some(t1));
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), 2);
        assert!(matches!(
            sent[0],
            (
                Dest::Group,
                Message {
                    body: Body::Hello(_),
                    ..
                }
            )
        ));
        assert!(matches!(
            sent[1],
            (
                Dest::Group,
                Message {
                    body: Body::Announce(_),
                    ..
                }
            )
        ));
    }

    #[test]
    fn failed_joins_retry_and_success_sends_hello_again() {
        let t0 = Instant::now();
        let mut d = Discovery::new(me(), params(), t0, SEED);
        d.hello_again.clear(); // tested on their own
        drain_transmits(&mut d);
        let fail = JoinReport::default();
        assert_eq!(d.handle_join(t0, &fail), JoinNote::FirstFailure);
        assert!(!d.poll_join(t0 + secs(4)));
        assert_eq!(d.poll_timeout(), Some(t0 + secs(5)));
        assert!(d.poll_join(t0 + secs(5)));
        assert_eq!(
            d.handle_join(t0 + secs(5), &fail),
            JoinNote::StillFailing { log: false }
        );
        let ok = JoinReport {
            joined: vec!["eth0".into()],
            errors: Vec::new(),
        };
        assert_eq!(
            d.handle_join(t0 + secs(10), &ok),
            JoinNote::Joined {
                after_failure: true
            }
        );
        let sent = drain_transmits(&mut d);
        assert_eq!(sent.len(), 2);
        assert!(matches!(sent[0].1.body, Body::Hello(_)));
        assert!(!d.poll_join(t0 + secs(3600)));
    }

    #[test]
    fn join_gives_up_after_15_minutes_until_rejoin() {
        let t0 = Instant::now();
        let mut d = Discovery::new(me(), params(), t0, SEED);
        let fail = JoinReport::default();
        let mut now = t0;
        let mut tries = 0;
        let mut last = None;
        while d.poll_join(now) || now < t0 + secs(1000) {
            if d.poll_join(now) {
                tries += 1;
                last = Some(d.handle_join(now, &fail));
            }
            now += secs(1);
        }
        assert_eq!(tries, 181);
        assert_eq!(last, Some(JoinNote::GaveUp));
        // Announcing still has a deadline; joining has none.
        assert!(d.poll_timeout().is_some());
        assert!(!d.poll_join(now + secs(86_400)));
        d.rejoin(now);
        assert!(d.poll_join(now));
    }

    #[test]
    fn rate_limit() {
        let t0 = Instant::now();
        let mut r = RateLimit::default();
        assert_eq!(r.check(t0), Some(0));
        assert_eq!(r.check(t0 + secs(1)), None);
        assert_eq!(r.check(t0 + secs(2)), None);
        assert_eq!(r.check(t0 + secs(60)), Some(2));
    }

    #[test]
    fn identity_is_cleaned() {
        let t0 = Instant::now();
        let mut weird = me();
        weird.distro = "Arch Linux".into();
        weird.arch = String::new();
        let mut d = Discovery::new(weird, params(), t0, SEED);
        assert_eq!(d.identity().distro, "ArchLinux");
        assert_eq!(d.identity().arch, "unknown");
        assert!(drain_transmits(&mut d).len() == 2);
    }

    #[test]
    fn static_peers_get_every_group_datagram_by_unicast_and_are_asked_like_others() {
        let t0 = Instant::now();
        let mut d = started(t0);
        let far = SocketAddr::from(([10, 9, 0, 7], 19432));
        let v6 = SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 7], 19432));
        d.set_static_peers(&[far, v6, far]);
        assert_eq!(d.static_peers(), &[far, v6]);
        // A new static peer gets HELLO and ANNOUNCE at once.
        let sent = drain_transmits(&mut d);
        let kinds: Vec<(Dest, wire::Kind)> =
            sent.iter().map(|(t, m)| (*t, m.body.kind())).collect();
        assert_eq!(
            kinds,
            vec![
                (Dest::Peer(far), wire::Kind::Hello),
                (Dest::Peer(far), wire::Kind::Announce),
                (Dest::Peer(v6), wire::Kind::Hello),
                (Dest::Peer(v6), wire::Kind::Announce),
            ]
        );
        // The same list again sends nothing.
        d.set_static_peers(&[far, v6]);
        assert!(drain_transmits(&mut d).is_empty());
        // The periodic ANNOUNCE goes to the group and to each static peer.
        d.handle_timeout(t0 + secs(70));
        let dests: Vec<Dest> = drain_transmits(&mut d)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert!(dests.contains(&Dest::Group));
        assert!(dests.contains(&Dest::Peer(far)));
        assert!(dests.contains(&Dest::Peer(v6)));
        // Its unicast ANNOUNCE makes it a peer; questions go to it by unicast.
        let now = t0 + secs(71);
        d.handle_datagram(
            far,
            &announce(7, 19432, "arch", "x86_64"),
            now,
            &mut no_files,
        );
        assert_eq!(d.peer(7).map(|p| p.udp), Some(far));
        drain_transmits(&mut d);
        d.ask("a-1-1-any.pkg.tar.zst", None, &[], now);
        let asked = who_has_targets(&drain_transmits(&mut d));
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].0, far);
        // A HELLO from it is answered to the group, and so to every static peer too.
        let hello = datagram(
            7,
            Body::Hello(Announcement {
                tcp_port: 19432,
                distro: "arch".into(),
                arch: "x86_64".into(),
                summary: 0,
            }),
        );
        d.handle_datagram(far, &hello, now + secs(5), &mut no_files);
        let dests: Vec<Dest> = drain_transmits(&mut d)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert!(dests.contains(&Dest::Peer(far)) && dests.contains(&Dest::Group));
        // Dropped from the list: no more copies; GOODBYE goes to those still listed.
        d.set_static_peers(&[v6]);
        d.goodbye();
        let dests: Vec<Dest> = drain_transmits(&mut d)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(dests, vec![Dest::Peer(v6), Dest::Group]);
    }
}
