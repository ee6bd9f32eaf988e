//! A sans-IO stub resolver: turns an upstream mirror's host name into one IP address without
//! ever blocking the event loop.
//!
//! It owns the DNS message codec (`build_query`, `parse_response`: one question, A or AAAA,
//! CNAME chains, compression pointers, every read bounds-checked), the `/etc/resolv.conf` and
//! `/etc/hosts` readers (pure: text in, addresses out), and the [`Resolver`] core: in-flight
//! queries with their retry schedule (1 s per attempt, the next nameserver on each, two rounds
//! over all of them), a small positive/negative cache, and one event per pending lookup. It
//! does not own sockets, the clock, the files or signals: the event loop sends what
//! `poll_transmit` gives to `nameserver:53` from one UDP socket, feeds replies to
//! `handle_datagram`, calls `handle_timeout` and sleeps no later than `poll_timeout`, and on
//! SIGUSR2 re-reads the files and calls `set_nameservers`. No TCP fallback, no EDNS, no
//! DNSSEC, no search domains: mirror names are fully qualified and fit in 512 bytes.
//!
//! Everything is bounded: [`MAX_QUERIES`] queries in flight, [`MAX_PENDING_LOOKUPS`] pending
//! lookups (so as many queued events), [`MAX_CACHED_NAMES`] cached names,
//! [`TRANSMIT_QUEUE_LIMIT`] queued datagrams, [`MAX_HOSTS_BYTES`] of `/etc/hosts`.

use crate::prng::Xorshift64;
use crate::rate_limit::RateLimit;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, warn};

/// Nameservers listen here; replies from any other port are dropped.
pub const DNS_PORT: u16 = 53;
/// Most nameservers used (glibc's `MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// How long one attempt waits for its reply before the next nameserver is asked.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Rounds over all nameservers before a query gives up.
pub const ROUNDS: usize = 2;
/// Most queries (distinct names) in flight; past that `lookup` answers `Ready(None)` at once.
pub const MAX_QUERIES: usize = 256;
/// Most lookups waiting for an event; past that `lookup` answers `Ready(None)` at once.
pub const MAX_PENDING_LOOKUPS: usize = 4096;
/// Most names in the cache; the oldest entry is evicted first.
pub const MAX_CACHED_NAMES: usize = 256;
/// Most datagrams waiting in `poll_transmit`; past that new ones are dropped like a lost
/// datagram (the attempt times out and the next one is sent).
pub const TRANSMIT_QUEUE_LIMIT: usize = 2 * MAX_QUERIES;
/// Positive answers are cached for their TTL clamped to this range.
pub const MIN_CACHE_TTL: Duration = Duration::from_secs(30);
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Failures (no such name, no address, no answer) are cached this long.
pub const NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most bytes of `/etc/hosts` looked at (cut at the last line end before this).
pub const MAX_HOSTS_BYTES: usize = 1 << 20;
/// Most CNAME records followed from the asked name.
pub const MAX_CNAME_HOPS: usize = 8;
/// Most answer records read from one response.
pub const MAX_RECORDS: usize = 64;
/// Most compression pointers followed while reading one name.
pub const MAX_POINTER_JUMPS: usize = 64;
/// TTLs in an `Answer` are capped at one week.
pub const MAX_ANSWER_TTL: u32 = 7 * 24 * 3600;
/// Longest name in text form, without the trailing dot.
const MAX_NAME_TEXT: usize = 253;
/// Longest name in wire form, root label included.
const MAX_NAME_WIRE: usize = 255;
const MAX_LABEL: usize = 63;
const HEADER_LEN: usize = 12;
const CLASS_IN: u16 = 1;
const TYPE_CNAME: u16 = 5;

/// The record type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QType {
    /// IPv4 address (1).
    A,
    /// IPv6 address (28).
    Aaaa,
}

impl QType {
    /// The type code on the wire.
    pub fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Aaaa => 28,
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        })
    }
}

/// Why a name could not be encoded or a response gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// Not a host name we ask about (empty label, label over 63 bytes, name over 253 bytes, a
    /// byte other than letters, digits, `-`, `_`).
    BadName,
    /// The TC bit: the answer did not fit.
    Truncated,
    /// Cut short, a bad pointer or label, a bad record length, a CNAME chain too long.
    Malformed,
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// SERVFAIL, REFUSED or another error code.
    ServerFailure,
    /// Not a reply to our query: QR clear, another id, another opcode or another question.
    WrongAnswer,
    /// The name exists but has no address of the type asked.
    NoAddress,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::BadName => "not a valid host name",
            DnsError::Truncated => "truncated response",
            DnsError::Malformed => "malformed response",
            DnsError::NoSuchName => "no such name",
            DnsError::ServerFailure => "server failure",
            DnsError::WrongAnswer => "not a response to our query",
            DnsError::NoAddress => "no address of that type",
        })
    }
}

impl std::error::Error for DnsError {}

/// The addresses a response gave for the asked name (after CNAMEs), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    /// Smallest TTL of the records used (CNAMEs and addresses), in seconds, at most
    /// `MAX_ANSWER_TTL`.
    pub ttl: u32,
}

/// `name` without its trailing dot, if it is a host name we ask about.
fn check_name(name: &str) -> Result<&str, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_TEXT {
        return Err(DnsError::BadName);
    }
    let label_ok = |l: &str| {
        (1..=MAX_LABEL).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        Ok(name)
    } else {
        Err(DnsError::BadName)
    }
}

/// Appends checked `name` (see `check_name`) in wire form, root label included.
fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.') {
        // check_name keeps labels at 1..=63 bytes.
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// A standard query (RD set) for `name` (case kept, trailing dot optional), type `qtype`,
/// class IN, with id `id`.
pub fn build_query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, DnsError> {
    let name = check_name(name)?;
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 2 + 4);
    q.extend_from_slice(&id.to_be_bytes());
    // flags: RD; QDCOUNT 1; ANCOUNT, NSCOUNT, ARCOUNT 0
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(name, &mut q);
    q.extend_from_slice(&qtype.code().to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

fn be16(msg: &[u8], pos: usize) -> Result<u16, DnsError> {
    match msg.get(pos..pos.checked_add(2).ok_or(DnsError::Malformed)?) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(DnsError::Malformed),
    }
}

fn be32(msg: &[u8], pos: usize) -> Result<u32, DnsError> {
    match msg.get(pos..pos.checked_add(4).ok_or(DnsError::Malformed)?) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(DnsError::Malformed),
    }
}

/// Reads the (possibly compressed) name at `start`: its uncompressed wire form (case kept)
/// and the offset just after it in place. A pointer must point before the start of the run of
/// labels it ends, so every jump goes strictly backwards; at most `MAX_POINTER_JUMPS` jumps and
/// `MAX_NAME_WIRE` bytes.
fn read_name(msg: &[u8], start: usize) -> Result<(Vec<u8>, usize), DnsError> {
    let mut out = Vec::new();
    let mut pos = start;
    let mut run_start = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Malformed)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                out.push(0);
                if out.len() > MAX_NAME_WIRE {
                    return Err(DnsError::Malformed);
                }
                return Ok((out, end.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(DnsError::Malformed)?;
                out.push(len as u8);
                out.extend_from_slice(label);
                if out.len() >= MAX_NAME_WIRE {
                    return Err(DnsError::Malformed); // no room left for the root label
                }
                pos += 1 + len;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or(DnsError::Malformed)?;
                let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                jumps += 1;
                if target >= run_start || jumps > MAX_POINTER_JUMPS {
                    return Err(DnsError::Malformed);
                }
                end.get_or_insert(pos + 2);
                pos = target;
                run_start = target;
            }
            _ => return Err(DnsError::Malformed), // 0x40 / 0x80: extended or reserved labels
        }
    }
}

/// A TTL as RFC 2181 reads it (top bit set means 0), capped.
fn clean_ttl(ttl: u32) -> u32 {
    if ttl > i32::MAX as u32 {
        0
    } else {
        ttl.min(MAX_ANSWER_TTL)
    }
}

enum Rdata {
    Cname(Vec<u8>),
    Addr(IpAddr),
}

struct Record {
    owner: Vec<u8>,
    ttl: u32,
    data: Rdata,
}

/// Reads the response `bytes` to query `id` about `name`, type `qtype`: the addresses of
/// `name` or of the end of the CNAME chain that starts at it.
///
/// Checked in this order: header present (`Malformed`); QR set, same id, opcode 0, exactly
/// our question with class IN (`WrongAnswer`; names compared case-insensitively); TC
/// (`Truncated`); RCODE (`NoSuchName` for NXDOMAIN, `ServerFailure` for any other error); then
/// at most `MAX_RECORDS` answer records, each fully bounds-checked (`Malformed`), CNAMEs
/// followed for at most `MAX_CNAME_HOPS` hops, and the addresses of the type asked (4 or 16
/// bytes, else `Malformed`) of the final name collected (`NoAddress` if none). Records of other
/// names, types or classes are skipped; authority and additional sections are not read.
pub fn parse_response(bytes: &[u8], id: u16, name: &str, qtype: QType) -> Result<Answer, DnsError> {
    let asked_name = check_name(name)?;
    let mut asked = Vec::with_capacity(asked_name.len() + 2);
    encode_name(asked_name, &mut asked);

    let header = bytes.get(..HEADER_LEN).ok_or(DnsError::Malformed)?;
    let rid = u16::from_be_bytes([header[0], header[1]]);
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    let ancount = u16::from_be_bytes([header[6], header[7]]);
    if flags & 0x8000 == 0 || rid != id || (flags >> 11) & 0xF != 0 || qdcount != 1 {
        return Err(DnsError::WrongAnswer);
    }
    let (qname, mut pos) = read_name(bytes, HEADER_LEN)?;
    let qt = be16(bytes, pos)?;
    let qc = be16(bytes, pos + 2)?;
    pos += 4;
    if !qname.eq_ignore_ascii_case(&asked) || qt != qtype.code() || qc != CLASS_IN {
        return Err(DnsError::WrongAnswer);
    }
    if flags & 0x0200 != 0 {
        return Err(DnsError::Truncated);
    }
    match flags & 0x000F {
        0 => {}
        3 => return Err(DnsError::NoSuchName),
        _ => return Err(DnsError::ServerFailure),
    }

    let mut records = Vec::new();
    for _ in 0..usize::from(ancount).min(MAX_RECORDS) {
        let (owner, p) = read_name(bytes, pos)?;
        let rtype = be16(bytes, p)?;
        let class = be16(bytes, p + 2)?;
        let ttl = clean_ttl(be32(bytes, p + 4)?);
        let rdlen = usize::from(be16(bytes, p + 8)?);
        let rdata_start = p + 10;
        let rdata = bytes
            .get(rdata_start..rdata_start + rdlen)
            .ok_or(DnsError::Malformed)?;
        pos = rdata_start + rdlen;
        if class != CLASS_IN {
            continue;
        }
        let data = if rtype == TYPE_CNAME {
            let (target, end) = read_name(bytes, rdata_start)?;
            if end != pos {
                return Err(DnsError::Malformed);
            }
            Rdata::Cname(target)
        } else if rtype == qtype.code() {
            match (qtype, rdata) {
                (QType::A, &[a, b, c, d]) => Rdata::Addr(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
                (QType::Aaaa, _) if rdata.len() == 16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(rdata);
                    Rdata::Addr(IpAddr::V6(Ipv6Addr::from(octets)))
                }
                _ => return Err(DnsError::Malformed),
            }
        } else {
            continue;
        };
        records.push(Record { owner, ttl, data });
    }

    let mut current: &[u8] = &asked;
    let mut ttl = MAX_ANSWER_TTL;
    for hop in 0..=MAX_CNAME_HOPS {
        let next = records.iter().find_map(|r| match &r.data {
            Rdata::Cname(target) if r.owner.eq_ignore_ascii_case(current) => Some((target, r.ttl)),
            _ => None,
        });
        let Some((target, cname_ttl)) = next else {
            break;
        };
        if hop == MAX_CNAME_HOPS {
            return Err(DnsError::Malformed);
        }
        current = target;
        ttl = ttl.min(cname_ttl);
    }
    let mut addrs = Vec::new();
    for r in &records {
        match r.data {
            Rdata::Addr(ip) if r.owner.eq_ignore_ascii_case(current) => {
                addrs.push(ip);
                ttl = ttl.min(r.ttl);
            }
            _ => {}
        }
    }
    if addrs.is_empty() {
        return Err(DnsError::NoAddress);
    }
    Ok(Answer { addrs, ttl })
}

/// The text before a comment (`#` or `;` anywhere on the line).
fn strip_comment<'a>(line: &'a str, marks: &[char]) -> &'a str {
    match line.find(marks) {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The nameservers of `/etc/resolv.conf` text: `nameserver ADDR` lines, IPv4 or IPv6, at most
/// `MAX_NAMESERVERS`, in order. Addresses with a scope id (`fe80::1%eth0`) and unparsable
/// ones are skipped; comments start with `#` or `;`. None at all gives `[127.0.0.1]`, as
/// glibc does.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = strip_comment(line, &['#', ';']).split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) {
            out.push(ip);
            if out.len() == MAX_NAMESERVERS {
                break;
            }
        }
    }
    if out.is_empty() {
        out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    out
}

/// The address of `name` (case-insensitive, trailing dot optional on either side) in
/// `/etc/hosts` text: the first IPv4 line naming it, else the first IPv6 line. Lines are
/// `ADDR NAME [ALIAS...]`, comments start with `#`; unparsable addresses and addresses with a
/// scope id are skipped.
pub fn hosts_lookup(text: &str, name: &str) -> Option<IpAddr> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let mut v6 = None;
    for line in text.lines() {
        let mut words = strip_comment(line, &['#']).split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let named = words.any(|w| w.strip_suffix('.').unwrap_or(w).eq_ignore_ascii_case(name));
        if !named {
            continue;
        }
        match ip {
            IpAddr::V4(_) => return Some(ip),
            IpAddr::V6(_) => {
                v6.get_or_insert(ip);
            }
        }
    }
    v6
}

/// `name` as a literal address: `192.0.2.1`, `2001:db8::1` or `[2001:db8::1]`.
fn literal_ip(name: &str) -> Option<IpAddr> {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    name.parse().ok()
}

/// Names one pending `lookup`; its event carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u32);

/// What `lookup` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Known now: the address, or `None` when the name cannot be resolved (bad name, cached
    /// failure, too many queries). No event follows.
    Ready(Option<IpAddr>),
    /// Asked: exactly one `poll_event` with this id follows, unless cancelled.
    Pending(LookupId),
}

/// One question on the wire about one name, through its attempts.
#[derive(Debug)]
struct Query {
    qtype: QType,
    id: u16,
    payload: Vec<u8>,
    /// Index of the nameserver of attempt 0; attempt `k` goes to `first_server + k`.
    first_server: usize,
    attempt: usize,
    /// The nameserver of the current attempt.
    current: IpAddr,
    /// Every nameserver this question went to (a late reply from an earlier one is taken).
    tried: Vec<IpAddr>,
    deadline: Instant,
    waiters: Vec<LookupId>,
}

#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    addr: Option<IpAddr>,
    expires: Instant,
    /// Insertion order, for evicting the oldest.
    seq: u64,
}

/// The stub resolver core. Feed it with `lookup`, `cancel`, `handle_datagram`,
/// `handle_timeout`, `set_nameservers`; drain `poll_transmit` and `poll_event` until `None`;
/// sleep no later than `poll_timeout`.
///
/// LIFECYCLE of a query: A to nameserver `0`, then on timeout (1 s), truncation, server
/// failure or a malformed reply from the current nameserver, to the next one, for
/// `ROUNDS` rounds over all of them; an A answer without addresses switches the query to AAAA
/// (new id, attempts start again at the nameserver that answered); an address ends it with
/// that address, NXDOMAIN or a second empty answer or the last attempt ends it with `None`.
/// The end is cached (positive: TTL clamped to 30 s..=1 h, negative: 30 s) and every waiter
/// gets its event.
#[derive(Debug)]
pub struct Resolver {
    nameservers: Vec<IpAddr>,
    hosts_text: String,
    rng: Xorshift64,
    /// In-flight queries by lower-case name (no trailing dot).
    queries: BTreeMap<String, Query>,
    /// Query id -> name, for the queries in flight.
    by_id: BTreeMap<u16, String>,
    /// Pending lookup -> name of the query it waits on.
    pending: BTreeMap<LookupId, String>,
    next_lookup: u32,
    cache: BTreeMap<String, CacheEntry>,
    cache_seq: u64,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<(LookupId, Option<IpAddr>)>,
    too_many: RateLimit,
    queue_full: RateLimit,
    dropped: RateLimit,
    failed: RateLimit,
}

/// At most `MAX_NAMESERVERS`, never empty.
fn sanitize_nameservers(mut ns: Vec<IpAddr>) -> Vec<IpAddr> {
    ns.truncate(MAX_NAMESERVERS);
    if ns.is_empty() {
        ns.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ns
}

/// At most `MAX_HOSTS_BYTES`, cut at a line end.
fn cap_hosts_text(mut text: String) -> String {
    if text.len() > MAX_HOSTS_BYTES {
        let cut = text.as_bytes()[..MAX_HOSTS_BYTES]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        text.truncate(cut); // just after a '\n' byte: a char boundary
        warn!("dns: /etc/hosts is over {MAX_HOSTS_BYTES} bytes; reading only the start");
    }
    text
}

impl Resolver {
    /// A resolver asking `nameservers` (at most `MAX_NAMESERVERS` used; none means
    /// 127.0.0.1) and looking names up in `hosts_text` (`/etc/hosts`) first. `seed` drives
    /// query ids and the first lookup id (use `discovery::host::random_seed()`).
    pub fn new(nameservers: Vec<IpAddr>, hosts_text: String, seed: u64) -> Resolver {
        let mut rng = Xorshift64::new(seed);
        let next_lookup = rng.next_u64() as u32;
        Resolver {
            nameservers: sanitize_nameservers(nameservers),
            hosts_text: cap_hosts_text(hosts_text),
            rng,
            queries: BTreeMap::new(),
            by_id: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_lookup,
            cache: BTreeMap::new(),
            cache_seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            too_many: RateLimit::default(),
            queue_full: RateLimit::default(),
            dropped: RateLimit::default(),
            failed: RateLimit::default(),
        }
    }

    /// Resolve `name` to one address. Literal IPs (`[v6]` too), `/etc/hosts` names,
    /// `localhost` and `*.localhost` (127.0.0.1 unless `/etc/hosts` says otherwise) and fresh
    /// cache entries answer `Ready` at once, as do bad names (`Ready(None)`) and lookups past
    /// the bounds (`Ready(None)`, with a rate-limited warning). Otherwise the lookup joins the
    /// query in flight for that name or starts one (A first), and `Pending` is returned.
    pub fn lookup(&mut self, name: &str, now: Instant) -> Lookup {
        if let Some(ip) = literal_ip(name) {
            return Lookup::Ready(Some(ip));
        }
        let Ok(checked) = check_name(name) else {
            debug!("dns: {name:?} is not a host name");
            return Lookup::Ready(None);
        };
        let key = checked.to_ascii_lowercase();
        if let Some(ip) = hosts_lookup(&self.hosts_text, &key) {
            return Lookup::Ready(Some(ip));
        }
        if key == "localhost" || key.ends_with(".localhost") {
            return Lookup::Ready(Some(IpAddr::V4(Ipv4Addr::LOCALHOST))); // RFC 6761
        }
        if let Some(entry) = self.cache.get(&key) {
            if now < entry.expires {
                return Lookup::Ready(entry.addr);
            }
            self.cache.remove(&key);
        }
        if self.pending.len() >= MAX_PENDING_LOOKUPS
            || (self.queries.len() >= MAX_QUERIES && !self.queries.contains_key(&key))
        {
            if let Some(held) = self.too_many.check(now) {
                warn!(
                    "dns: too many lookups in flight; {key} fails at once ({held} more since the last note)"
                );
            }
            return Lookup::Ready(None);
        }
        let id = self.allocate_lookup_id();
        if let Some(q) = self.queries.get_mut(&key) {
            q.waiters.push(id);
            self.pending.insert(id, key);
            return Lookup::Pending(id);
        }
        let qid = self.allocate_query_id();
        let Ok(payload) = build_query(qid, &key, QType::A) else {
            return Lookup::Ready(None); // not reached: the name was checked
        };
        let server = self.nameservers[0];
        self.by_id.insert(qid, key.clone());
        self.queries.insert(
            key.clone(),
            Query {
                qtype: QType::A,
                id: qid,
                payload,
                first_server: 0,
                attempt: 0,
                current: server,
                tried: Vec::new(),
                deadline: now,
                waiters: vec![id],
            },
        );
        self.pending.insert(id, key.clone());
        self.send_attempt(&key, now);
        Lookup::Pending(id)
    }

    /// Drop interest in lookup `id`: no event will come for it (one already queued is
    /// removed). The query goes on, for the cache. Unknown ids are ignored.
    pub fn cancel(&mut self, id: LookupId) {
        if let Some(key) = self.pending.remove(&id) {
            if let Some(q) = self.queries.get_mut(&key) {
                q.waiters.retain(|&w| w != id);
            }
        } else {
            self.events.retain(|&(e, _)| e != id);
        }
    }

    /// One datagram received on the resolver's socket from `from`. Taken only from port 53 of
    /// a nameserver the query with that id went to, and only if it is a reply to that exact
    /// question; anything else is dropped (rate-limited debug line).
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) {
        let source = from.ip().to_canonical();
        let found = match be16(bytes, 0) {
            Ok(id) if from.port() == DNS_PORT => self.by_id.get(&id).and_then(|key| {
                let q = self.queries.get(key)?;
                q.tried
                    .iter()
                    .any(|t| t.to_canonical() == source)
                    .then(|| (id, key.clone(), q.qtype, q.current.to_canonical() == source))
            }),
            _ => None,
        };
        let Some((id, key, qtype, from_current)) = found else {
            self.note_dropped(from, bytes.len(), "no query of ours", now);
            return;
        };
        match parse_response(bytes, id, &key, qtype) {
            Ok(answer) => {
                let ttl =
                    Duration::from_secs(u64::from(answer.ttl)).clamp(MIN_CACHE_TTL, MAX_CACHE_TTL);
                let addr = answer.addrs.first().copied();
                debug!("dns: {key} {qtype} -> {addr:?} (ttl {}s)", answer.ttl);
                self.finish(&key, addr, ttl, now);
            }
            Err(DnsError::NoAddress) if qtype == QType::A => {
                let first = self
                    .nameservers
                    .iter()
                    .position(|ns| ns.to_canonical() == source);
                self.switch_to_aaaa(&key, first, now);
            }
            Err(e @ (DnsError::NoAddress | DnsError::NoSuchName)) => {
                debug!("dns: {key}: {e}");
                self.finish(&key, None, NEGATIVE_CACHE_TTL, now);
            }
            Err(e @ DnsError::WrongAnswer) => self.note_dropped(from, bytes.len(), e, now),
            Err(
                e @ (DnsError::Truncated
                | DnsError::ServerFailure
                | DnsError::Malformed
                | DnsError::BadName),
            ) => {
                if let Some(held) = self.dropped.check(now) {
                    debug!(
                        "dns: {key} {qtype} from {from}: {e} ({held} more dropped since the last note)"
                    );
                }
                if from_current {
                    self.advance(&key, now);
                }
            }
        }
    }

    /// Let time pass: attempts whose second is up go to the next nameserver, or fail the
    /// lookup after the last one. Calling it early or often is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.advance(&key, now);
        }
    }

    /// The earliest attempt deadline, if any query is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queries.values().map(|q| q.deadline).min()
    }

    /// The next datagram to send, to `nameserver:53`. Call until `None`; if sending would
    /// block, dropping it is fine (the attempt times out and the next one is sent).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The end of a pending lookup: its address or `None`. Exactly one per `Pending` not
    /// cancelled. Call until `None`.
    pub fn poll_event(&mut self) -> Option<(LookupId, Option<IpAddr>)> {
        self.events.pop_front()
    }

    /// New nameservers (at most `MAX_NAMESERVERS`; none means 127.0.0.1) and `/etc/hosts`
    /// text. The cache is emptied; queries in flight go on, their next attempts going to the
    /// new nameservers.
    pub fn set_nameservers(&mut self, ns: Vec<IpAddr>, hosts_text: String) {
        self.nameservers = sanitize_nameservers(ns);
        self.hosts_text = cap_hosts_text(hosts_text);
        self.cache.clear();
        debug!("dns: nameservers now {:?}", self.nameservers);
    }

    /// A lookup id not pending (at most `MAX_PENDING_LOOKUPS` are, so this ends soon).
    fn allocate_lookup_id(&mut self) -> LookupId {
        loop {
            let id = LookupId(self.next_lookup);
            self.next_lookup = self.next_lookup.wrapping_add(1);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// A random query id not in flight.
    fn allocate_query_id(&mut self) -> u16 {
        for _ in 0..64 {
            let id = self.rng.next_u64() as u16;
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
        // Practically unreachable (at most MAX_QUERIES of 65536 ids are taken); a scan from a
        // random start always finds one.
        let start = self.rng.next_u64() as u16;
        (0..=u16::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|id| !self.by_id.contains_key(id))
            .unwrap_or(start)
    }

    /// Send the current attempt of query `key` and arm its deadline.
    fn send_attempt(&mut self, key: &str, now: Instant) {
        let n = self.nameservers.len();
        let Some(q) = self.queries.get_mut(key) else {
            return;
        };
        let server = self.nameservers[(q.first_server + q.attempt) % n];
        q.current = server;
        if !q.tried.contains(&server) {
            q.tried.push(server);
        }
        q.deadline = now + ATTEMPT_TIMEOUT;
        let payload = q.payload.clone();
        if self.transmits.len() >= TRANSMIT_QUEUE_LIMIT {
            if let Some(held) = self.queue_full.check(now) {
                warn!(
                    "dns: transmit queue full; dropping a query ({held} more dropped since the last note)"
                );
            }
            return;
        }
        self.transmits
            .push_back((SocketAddr::new(server, DNS_PORT), payload));
    }

    /// The current attempt of `key` failed: try the next nameserver, or give up.
    fn advance(&mut self, key: &str, now: Instant) {
        let attempts = ROUNDS * self.nameservers.len();
        let Some(q) = self.queries.get_mut(key) else {
            return;
        };
        q.attempt += 1;
        if q.attempt >= attempts {
            let qtype = q.qtype;
            if let Some(held) = self.failed.check(now) {
                warn!(
                    "dns: no answer for {key} {qtype} after {attempts} attempts ({held} more failures since the last note)"
                );
            }
            self.finish(key, None, NEGATIVE_CACHE_TTL, now);
            return;
        }
        self.send_attempt(key, now);
    }

    /// The A query of `key` found no address: ask AAAA, starting at nameserver `first`.
    fn switch_to_aaaa(&mut self, key: &str, first: Option<usize>, now: Instant) {
        let qid = self.allocate_query_id();
        let Ok(payload) = build_query(qid, key, QType::Aaaa) else {
            self.finish(key, None, NEGATIVE_CACHE_TTL, now);
            return;
        };
        let Some(q) = self.queries.get_mut(key) else {
            return;
        };
        self.by_id.remove(&q.id);
        self.by_id.insert(qid, key.to_owned());
        q.qtype = QType::Aaaa;
        q.id = qid;
        q.payload = payload;
        q.first_server = first.unwrap_or(q.first_server);
        q.attempt = 0;
        q.tried.clear();
        self.send_attempt(key, now);
    }

    /// End query `key` with `addr`: cache it for `ttl` and tell every waiter.
    fn finish(&mut self, key: &str, addr: Option<IpAddr>, ttl: Duration, now: Instant) {
        let Some(q) = self.queries.remove(key) else {
            return;
        };
        self.by_id.remove(&q.id);
        self.cache_insert(key, addr, now + ttl);
        for w in q.waiters {
            if self.pending.remove(&w).is_some() {
                self.events.push_back((w, addr));
            }
        }
    }

    fn cache_insert(&mut self, key: &str, addr: Option<IpAddr>, expires: Instant) {
        if !self.cache.contains_key(key) && self.cache.len() >= MAX_CACHED_NAMES {
            let oldest = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.cache.remove(&oldest);
            }
        }
        self.cache_seq += 1;
        self.cache.insert(
            key.to_owned(),
            CacheEntry {
                addr,
                expires,
                seq: self.cache_seq,
            },
        );
    }

    fn note_dropped(&mut self, from: SocketAddr, len: usize, why: impl fmt::Display, now: Instant) {
        if let Some(held) = self.dropped.check(now) {
            debug!(
                "dns: dropped a {len}-byte datagram from {from}: {why} ({held} more dropped since the last note)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "mirror.example.org";

    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    struct Rr {
        owner: Vec<u8>,
        rtype: u16,
        class: u16,
        ttl: u32,
        rdata: Vec<u8>,
    }

    fn a(owner: &str, ip: [u8; 4], ttl: u32) -> Rr {
        Rr {
            owner: wire(owner),
            rtype: 1,
            class: 1,
            ttl,
            rdata: ip.to_vec(),
        }
    }

    fn aaaa(owner: &str, ip: Ipv6Addr, ttl: u32) -> Rr {
        Rr {
            owner: wire(owner),
            rtype: 28,
            class: 1,
            ttl,
            rdata: ip.octets().to_vec(),
        }
    }

    fn cname(owner: &str, target: &str, ttl: u32) -> Rr {
        Rr {
            owner: wire(owner),
            rtype: 5,
            class: 1,
            ttl,
            rdata: wire(target),
        }
    }

    /// A response with `flags` (QR is up to the caller), the question (`qname`, `qtype`,
    /// class IN) and `answers`, uncompressed.
    fn response(id: u16, flags: u16, qname: &str, qtype: u16, answers: &[Rr]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&wire(qname));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        for rr in answers {
            m.extend_from_slice(&rr.owner);
            m.extend_from_slice(&rr.rtype.to_be_bytes());
            m.extend_from_slice(&rr.class.to_be_bytes());
            m.extend_from_slice(&rr.ttl.to_be_bytes());
            m.extend_from_slice(&(rr.rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(&rr.rdata);
        }
        m
    }

    const OK: u16 = 0x8180; // QR RD RA, NOERROR

    fn ok_a(id: u16, answers: &[Rr]) -> Vec<u8> {
        response(id, OK, NAME, 1, answers)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    // ---- codec ----

    #[test]
    fn query_bytes_are_exact() {
        let q = build_query(0xBEEF, "Mirror.example.org", QType::A).unwrap();
        let mut want = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x06Mirror\x07example\x03org\x00");
        want.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(q, want);
        let q6 = build_query(0xBEEF, "Mirror.example.org.", QType::Aaaa).unwrap();
        assert_eq!(&q6[..q6.len() - 4], &want[..want.len() - 4]);
        assert_eq!(&q6[q6.len() - 4..], &[0, 28, 0, 1]);
    }

    #[test]
    fn bad_names_are_refused() {
        let l63 = "a".repeat(63);
        let l64 = "a".repeat(64);
        // 4 labels of 63 + 3 dots = 255 > 253; 63+1+63+1+63+1+61 = 253
        let long = format!("{l63}.{l63}.{l63}.{}", "b".repeat(63));
        let max = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert!(build_query(1, &max, QType::A).is_ok());
        assert!(build_query(1, &format!("{max}."), QType::A).is_ok());
        assert!(build_query(1, &l63, QType::A).is_ok());
        assert!(build_query(1, "under_score-1.example", QType::A).is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a b",
            "ex\u{e4}mple.org",
            "a/b",
            "a.b..",
            &l64,
            &long,
            "a\0b",
        ] {
            assert_eq!(
                build_query(1, bad, QType::A),
                Err(DnsError::BadName),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parses_a_and_aaaa() {
        let r = ok_a(7, &[a(NAME, [192, 0, 2, 1], 300)]);
        assert_eq!(
            parse_response(&r, 7, NAME, QType::A),
            Ok(Answer {
                addrs: vec![v4(192, 0, 2, 1)],
                ttl: 300
            })
        );
        let ip6: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let r = response(9, OK, NAME, 28, &[aaaa(NAME, ip6, 60)]);
        assert_eq!(
            parse_response(&r, 9, "MIRROR.Example.ORG.", QType::Aaaa),
            Ok(Answer {
                addrs: vec![IpAddr::V6(ip6)],
                ttl: 60
            })
        );
    }

    #[test]
    fn multiple_answers_take_min_ttl_and_skip_others() {
        let mut other_class = a(NAME, [10, 0, 0, 9], 1);
        other_class.class = 3; // CH: skipped
        let r = ok_a(
            1,
            &[
                a(NAME, [192, 0, 2, 1], 300),
                a("other.example.org", [10, 0, 0, 1], 5), // another name: skipped
                other_class,
                aaaa(NAME, Ipv6Addr::LOCALHOST, 2), // another type: skipped
                a("MIRROR.example.org", [192, 0, 2, 2], 100),
            ],
        );
        assert_eq!(
            parse_response(&r, 1, NAME, QType::A),
            Ok(Answer {
                addrs: vec![v4(192, 0, 2, 1), v4(192, 0, 2, 2)],
                ttl: 100
            })
        );
    }

    #[test]
    fn ttl_top_bit_reads_as_zero_and_big_ttls_are_capped() {
        let r = ok_a(1, &[a(NAME, [192, 0, 2, 1], 0x8000_0000)]);
        assert_eq!(parse_response(&r, 1, NAME, QType::A).unwrap().ttl, 0);
        let r = ok_a(1, &[a(NAME, [192, 0, 2, 1], 0x7FFF_FFFF)]);
        assert_eq!(
            parse_response(&r, 1, NAME, QType::A).unwrap().ttl,
            MAX_ANSWER_TTL
        );
    }

    #[test]
    fn follows_cname_chains_in_any_order() {
        let chain = [
            cname(NAME, "b.cdn.example", 600),
            cname("b.cdn.example", "c.cdn.example", 50),
            a("c.cdn.example", [198, 51, 100, 7], 400),
            a(NAME, [10, 9, 9, 9], 999), // beside a CNAME: not the chain's end, ignored
        ];
        let r = ok_a(3, &chain);
        assert_eq!(
            parse_response(&r, 3, NAME, QType::A),
            Ok(Answer {
                addrs: vec![v4(198, 51, 100, 7)],
                ttl: 50
            })
        );
        let reversed = ok_a(
            3,
            &[
                a("c.cdn.example", [198, 51, 100, 7], 400),
                cname("B.cdn.example", "c.cdn.example", 50),
                cname(NAME, "b.cdn.example", 600),
            ],
        );
        assert_eq!(
            parse_response(&reversed, 3, NAME, QType::A).unwrap().addrs,
            vec![v4(198, 51, 100, 7)]
        );
        // chain to a name without addresses
        let r = ok_a(
            3,
            &[
                cname(NAME, "x.example", 60),
                a("y.example", [1, 1, 1, 1], 60),
            ],
        );
        assert_eq!(
            parse_response(&r, 3, NAME, QType::A),
            Err(DnsError::NoAddress)
        );
        // a chain that does not start at the asked name is not followed
        let r = ok_a(
            3,
            &[
                cname("z.example", NAME, 60),
                a("z.example", [1, 1, 1, 1], 60),
            ],
        );
        assert_eq!(
            parse_response(&r, 3, NAME, QType::A),
            Err(DnsError::NoAddress)
        );
    }

    #[test]
    fn cname_chains_are_bounded() {
        let names: Vec<String> = (0..=10).map(|i| format!("n{i}.example")).collect();
        let build = |hops: usize| {
            let mut rrs = vec![cname(NAME, &names[0], 60)];
            for i in 0..hops - 1 {
                rrs.push(cname(&names[i], &names[i + 1], 60));
            }
            rrs.push(a(&names[hops - 1], [192, 0, 2, 3], 60));
            ok_a(4, &rrs)
        };
        assert!(parse_response(&build(MAX_CNAME_HOPS), 4, NAME, QType::A).is_ok());
        assert_eq!(
            parse_response(&build(MAX_CNAME_HOPS + 1), 4, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        // a CNAME loop ends on the hop bound too
        let r = ok_a(
            4,
            &[cname(NAME, "l.example", 60), cname("l.example", NAME, 60)],
        );
        assert_eq!(
            parse_response(&r, 4, NAME, QType::A),
            Err(DnsError::Malformed)
        );
    }

    #[test]
    fn only_max_records_are_read() {
        let mut rrs: Vec<Rr> = (0..MAX_RECORDS)
            .map(|i| a("pad.example", [10, 0, 0, i as u8], 60))
            .collect();
        rrs.push(a(NAME, [192, 0, 2, 1], 60));
        assert_eq!(
            parse_response(&ok_a(5, &rrs), 5, NAME, QType::A),
            Err(DnsError::NoAddress)
        );
        rrs.remove(0);
        assert!(parse_response(&ok_a(5, &rrs), 5, NAME, QType::A).is_ok());
    }

    /// A hand-compressed response: the answer owners point at the question name (offset 12),
    /// the CNAME target is `cdn` + a pointer to `example.org` inside the question, the second
    /// answer's owner points at the CNAME target.
    fn compressed() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x06mirror\x07example\x03org\x00"); // offset 12
        m.extend_from_slice(&[0, 1, 0, 1]);
        // answer 1: NAME CNAME cdn.example.org
        m.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 100, 0, 6]);
        let target = m.len();
        m.extend_from_slice(&[3, b'c', b'd', b'n', 0xC0, 19]); // 19: "example.org"
        // answer 2: cdn.example.org A 203.0.113.9
        m.extend_from_slice(&[0xC0, target as u8, 0, 1, 0, 1, 0, 0, 0, 200, 0, 4]);
        m.extend_from_slice(&[203, 0, 113, 9]);
        m
    }

    #[test]
    fn compression_pointers_are_followed() {
        assert_eq!(
            parse_response(&compressed(), 0x1234, NAME, QType::A),
            Ok(Answer {
                addrs: vec![v4(203, 0, 113, 9)],
                ttl: 100
            })
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut full = vec![compressed()];
        full.push(ok_a(
            1,
            &[
                cname(NAME, "b.example", 5),
                a("b.example", [192, 0, 2, 1], 9),
            ],
        ));
        full.push(response(
            2,
            OK,
            NAME,
            28,
            &[aaaa(NAME, Ipv6Addr::LOCALHOST, 9)],
        ));
        for msg in &full {
            let id = u16::from_be_bytes([msg[0], msg[1]]);
            let qt = if be16(msg, HEADER_LEN + wire(NAME).len()).unwrap() == 28 {
                QType::Aaaa
            } else {
                QType::A
            };
            assert!(parse_response(msg, id, NAME, qt).is_ok());
            for cut in 0..msg.len() {
                assert!(
                    parse_response(&msg[..cut], id, NAME, qt).is_err(),
                    "cut at {cut} of {}",
                    msg.len()
                );
            }
        }
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        let base = |owner: &[u8]| {
            let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
            m.extend_from_slice(&wire(NAME));
            m.extend_from_slice(&[0, 1, 0, 1]);
            let at = m.len();
            m.extend_from_slice(owner);
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            (m, at)
        };
        let (ok, at) = base(&[0xC0, 12]);
        assert!(parse_response(&ok, 1, NAME, QType::A).is_ok());
        assert_eq!(at, 36);
        // a pointer to itself
        let (m, _) = base(&[0xC0, 36]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        // a forward pointer (to the A record's type field)
        let (m, _) = base(&[0xC0, 40]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        // label then a pointer back into that same label run: 36: "\x01x" ptr->36
        let (m, _) = base(&[1, b'x', 0xC0, 36]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        // a two-pointer loop: 36 -> 38 is forward; 38 -> 36 then 36 -> 38
        let (m, _) = base(&[0xC0, 38, 0xC0, 36]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        // reserved label types
        let (m, _) = base(&[0x40, 0]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        let (m, _) = base(&[0x80, 0]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
    }

    #[test]
    fn pointer_jumps_are_bounded() {
        // The answer owner points at the end of a chain of pointers, each to the one before,
        // the first to the question name; the chain sits in the rdata of a skipped record
        // (type 99). `jumps` pointers in all: 64 pass, 65 do not.
        let make = |jumps: usize| {
            let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
            m.extend_from_slice(&wire(NAME));
            m.extend_from_slice(&[0, 1, 0, 1]);
            m.extend_from_slice(&[0xC0, 12, 0, 99, 0, 1, 0, 0, 0, 60]);
            let rdlen_at = m.len();
            m.extend_from_slice(&[0, 0]);
            let rdata = m.len();
            let mut prev = 12usize;
            for _ in 0..jumps - 1 {
                let here = m.len();
                m.extend_from_slice(&[0xC0 | (prev >> 8) as u8, prev as u8]);
                prev = here;
            }
            let len = (m.len() - rdata) as u16;
            m[rdlen_at..rdlen_at + 2].copy_from_slice(&len.to_be_bytes());
            m.extend_from_slice(&[0xC0 | (prev >> 8) as u8, prev as u8]);
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            m
        };
        assert!(parse_response(&make(MAX_POINTER_JUMPS), 1, NAME, QType::A).is_ok());
        assert_eq!(
            parse_response(&make(MAX_POINTER_JUMPS + 1), 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
    }

    #[test]
    fn names_longer_than_255_bytes_are_rejected() {
        // owner: 5 labels of 63 bytes uncompressed (> 255 in wire form)
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&wire(NAME));
        m.extend_from_slice(&[0, 1, 0, 1]);
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.push(0);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert_eq!(
            parse_response(&m, 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
    }

    #[test]
    fn bad_rdata_lengths_are_rejected() {
        let mut rr = a(NAME, [1, 2, 3, 4], 60);
        rr.rdata.push(5);
        assert_eq!(
            parse_response(&ok_a(1, &[rr]), 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
        let mut rr = aaaa(NAME, Ipv6Addr::LOCALHOST, 60);
        rr.rdata.pop();
        assert_eq!(
            parse_response(&response(1, OK, NAME, 28, &[rr]), 1, NAME, QType::Aaaa),
            Err(DnsError::Malformed)
        );
        // CNAME whose name does not end at the rdata end
        let mut rr = cname(NAME, "b.example", 60);
        rr.rdata.push(0);
        assert_eq!(
            parse_response(&ok_a(1, &[rr]), 1, NAME, QType::A),
            Err(DnsError::Malformed)
        );
    }

    #[test]
    fn replies_to_other_queries_are_wrong_answers() {
        let good = [a(NAME, [192, 0, 2, 1], 60)];
        let cases = [
            ("id", ok_a(2, &good)),
            ("QR clear", response(1, 0x0180, NAME, 1, &good)),
            ("opcode", response(1, OK | 0x1000, NAME, 1, &good)),
            ("name", response(1, OK, "other.example.org", 1, &good)),
            ("type", response(1, OK, NAME, 28, &good)),
        ];
        for (what, msg) in cases {
            assert_eq!(
                parse_response(&msg, 1, NAME, QType::A),
                Err(DnsError::WrongAnswer),
                "{what}"
            );
        }
        let mut class = ok_a(1, &good);
        let at = HEADER_LEN + wire(NAME).len() + 3;
        class[at] = 3; // CH
        assert_eq!(
            parse_response(&class, 1, NAME, QType::A),
            Err(DnsError::WrongAnswer)
        );
        let mut two_questions = ok_a(1, &good);
        two_questions[5] = 2;
        assert_eq!(
            parse_response(&two_questions, 1, NAME, QType::A),
            Err(DnsError::WrongAnswer)
        );
        let mut no_question = ok_a(1, &[]);
        no_question[5] = 0;
        assert_eq!(
            parse_response(&no_question, 1, NAME, QType::A),
            Err(DnsError::WrongAnswer)
        );
        assert_eq!(
            parse_response(&ok_a(1, &good), 1, "bad..name", QType::A),
            Err(DnsError::BadName)
        );
    }

    #[test]
    fn error_codes_and_truncation() {
        let rc =
            |code: u16| parse_response(&response(1, OK | code, NAME, 1, &[]), 1, NAME, QType::A);
        assert_eq!(rc(3), Err(DnsError::NoSuchName));
        assert_eq!(rc(2), Err(DnsError::ServerFailure));
        assert_eq!(rc(5), Err(DnsError::ServerFailure));
        assert_eq!(rc(1), Err(DnsError::ServerFailure));
        assert_eq!(rc(0), Err(DnsError::NoAddress));
        let tc = response(1, OK | 0x0200, NAME, 1, &[a(NAME, [1, 2, 3, 4], 60)]);
        assert_eq!(
            parse_response(&tc, 1, NAME, QType::A),
            Err(DnsError::Truncated)
        );
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let mut rng = Xorshift64::new(42);
        let mut buf = Vec::new();
        for i in 0..4000 {
            buf.clear();
            let len = (rng.next_u64() % 600) as usize;
            buf.extend((0..len).map(|_| rng.next_u64() as u8));
            if i % 2 == 0 && buf.len() >= 4 {
                // a plausible header so the parser gets past the first checks
                buf[..4].copy_from_slice(&[0, 1, 0x81, 0x80]);
            }
            let _ = parse_response(&buf, 1, NAME, QType::A);
        }
        let seeds = [
            compressed(),
            ok_a(
                0x1234,
                &[
                    cname(NAME, "b.example", 5),
                    a("b.example", [192, 0, 2, 1], 9),
                ],
            ),
        ];
        for i in 0..4000 {
            let mut m = seeds[i % 2].clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                let at = (rng.next_u64() % m.len() as u64) as usize;
                m[at] = rng.next_u64() as u8;
            }
            let _ = parse_response(&m, 0x1234, NAME, QType::A);
        }
    }

    // ---- configuration text ----

    #[test]
    fn resolv_conf() {
        let text = "# generated\n\
                    ; another comment\n\
                    search lan\n\
                    nameserver 192.0.2.53 # inline comment\n\
                    nameserver fe80::1%eth0\n\
                    nameserver   2001:db8::53\n\
                    nameserver not-an-ip\n\
                    #nameserver 10.0.0.1\n\
                    nameserver\n\
                    options edns0\n\
                    nameserver 198.51.100.53;x\n\
                    nameserver 203.0.113.53\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                v4(192, 0, 2, 53),
                "2001:db8::53".parse().unwrap(),
                v4(198, 51, 100, 53)
            ]
        );
        assert_eq!(parse_resolv_conf(""), vec![v4(127, 0, 0, 1)]);
        assert_eq!(
            parse_resolv_conf("nameserver fe80::1%2\nsearch x\n"),
            vec![v4(127, 0, 0, 1)]
        );
    }

    #[test]
    fn hosts_file() {
        let text = "# static\n\
                    ::1        localhost ip6-localhost\n\
                    127.0.0.1  localhost\n\
                    fe80::1%lo scoped.example\n\
                    bogus      bogus.example\n\
                    2001:db8::7 Mirror.Example.org. mirror\n\
                    192.0.2.7  mirror.example.org mirror # the mirror\n\
                    192.0.2.8  mirror.example.org\n\
                    10.0.0.1   # only a comment: commented.example\n";
        assert_eq!(hosts_lookup(text, "localhost"), Some(v4(127, 0, 0, 1)));
        assert_eq!(
            hosts_lookup(text, "ip6-localhost"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            hosts_lookup(text, "MIRROR.example.org."),
            Some(v4(192, 0, 2, 7))
        );
        assert_eq!(hosts_lookup(text, "mirror"), Some(v4(192, 0, 2, 7)));
        assert_eq!(hosts_lookup(text, "scoped.example"), None);
        assert_eq!(hosts_lookup(text, "bogus.example"), None);
        assert_eq!(hosts_lookup(text, "commented.example"), None);
        assert_eq!(hosts_lookup(text, "example.org"), None);
        assert_eq!(hosts_lookup(text, ""), None);
        assert_eq!(hosts_lookup(text, "."), None);
    }

    // ---- the core ----

    const NS1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));
    const NS2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 53));
    const NS3: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 53));

    fn ns(ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, 53)
    }

    fn resolver(servers: &[IpAddr]) -> Resolver {
        Resolver::new(
            servers.to_vec(),
            "192.0.2.80 hosted.example\n".to_owned(),
            7,
        )
    }

    fn pending(l: Lookup) -> LookupId {
        match l {
            Lookup::Pending(id) => id,
            other => panic!("expected Pending, got {other:?}"),
        }
    }

    /// The one datagram queued: its destination, id and question type.
    fn sent(r: &mut Resolver) -> (SocketAddr, u16, QType) {
        let (to, bytes) = r.poll_transmit().expect("a query");
        assert!(r.poll_transmit().is_none(), "one query only");
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let qt = if bytes[bytes.len() - 3] == 28 {
            QType::Aaaa
        } else {
            QType::A
        };
        (to, id, qt)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn literals_hosts_and_bad_names_are_ready() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        assert_eq!(
            r.lookup("192.0.2.1", t0),
            Lookup::Ready(Some(v4(192, 0, 2, 1)))
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(r.lookup("2001:db8::1", t0), Lookup::Ready(Some(v6)));
        assert_eq!(r.lookup("[2001:db8::1]", t0), Lookup::Ready(Some(v6)));
        assert_eq!(
            r.lookup("Hosted.Example.", t0),
            Lookup::Ready(Some(v4(192, 0, 2, 80)))
        );
        assert_eq!(
            r.lookup("localhost", t0),
            Lookup::Ready(Some(v4(127, 0, 0, 1)))
        );
        assert_eq!(
            r.lookup("a.localhost", t0),
            Lookup::Ready(Some(v4(127, 0, 0, 1)))
        );
        assert_eq!(r.lookup("bad..name", t0), Lookup::Ready(None));
        assert_eq!(r.lookup("", t0), Lookup::Ready(None));
        assert_eq!(r.lookup("[not-v6]", t0), Lookup::Ready(None));
        assert!(r.poll_transmit().is_none());
        assert!(r.poll_event().is_none());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn query_response_event_then_cache_then_expiry() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1, NS2]);
        let id = pending(r.lookup("Mirror.Example.org", t0));
        let (to, qid, qt) = sent(&mut r);
        assert_eq!((to, qt), (ns(NS1), QType::A));
        assert_eq!(r.poll_timeout(), Some(t0 + ATTEMPT_TIMEOUT));
        assert!(r.poll_event().is_none());
        let reply = ok_a(qid, &[a(NAME, [192, 0, 2, 10], 100)]);
        r.handle_datagram(ns(NS1), &reply, t0 + Duration::from_millis(20));
        assert_eq!(r.poll_event(), Some((id, Some(v4(192, 0, 2, 10)))));
        assert!(r.poll_event().is_none());
        assert_eq!(r.poll_timeout(), None);
        // cached for the TTL (counted from the reply)
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(
            r.lookup(NAME, t1 + secs(99)),
            Lookup::Ready(Some(v4(192, 0, 2, 10)))
        );
        assert!(r.poll_transmit().is_none());
        // the same reply again is dropped (no query in flight)
        r.handle_datagram(ns(NS1), &reply, t1 + secs(1));
        assert!(r.poll_event().is_none());
        // expired: asked again
        let _ = pending(r.lookup(NAME, t1 + secs(100)));
        assert_eq!(sent(&mut r).0, ns(NS1));
    }

    #[test]
    fn cache_ttl_is_clamped() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        for (name, ttl, lasts) in [("short.example", 5, 30), ("long.example", 100_000, 3600)] {
            let _ = pending(r.lookup(name, t0));
            let (_, qid, _) = sent(&mut r);
            let reply = response(qid, OK, name, 1, &[a(name, [192, 0, 2, 1], ttl)]);
            r.handle_datagram(ns(NS1), &reply, t0);
            assert!(r.poll_event().is_some());
            assert!(matches!(
                r.lookup(name, t0 + secs(lasts - 1)),
                Lookup::Ready(Some(_))
            ));
            let _ = pending(r.lookup(name, t0 + secs(lasts)));
            let _ = sent(&mut r);
        }
    }

    #[test]
    fn nxdomain_is_cached_for_30_seconds() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        let id = pending(r.lookup(NAME, t0));
        let (_, qid, _) = sent(&mut r);
        r.handle_datagram(ns(NS1), &response(qid, OK | 3, NAME, 1, &[]), t0);
        assert_eq!(r.poll_event(), Some((id, None)));
        assert!(r.poll_transmit().is_none(), "NXDOMAIN does not ask AAAA");
        assert_eq!(r.lookup(NAME, t0 + secs(29)), Lookup::Ready(None));
        let _ = pending(r.lookup(NAME, t0 + secs(30)));
    }

    #[test]
    fn empty_a_answer_asks_aaaa() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1, NS2]);
        let id = pending(r.lookup(NAME, t0));
        // NS1 times out, NS2 answers with no A record
        let (_, qid, _) = sent(&mut r);
        r.handle_timeout(t0 + secs(1));
        let (to, qid2, _) = sent(&mut r);
        assert_eq!(to, ns(NS2));
        assert_eq!(qid, qid2, "same question, same id");
        let t1 = t0 + secs(1) + Duration::from_millis(5);
        r.handle_datagram(
            ns(NS2),
            &ok_a(qid, &[cname(NAME, "v6only.example", 60)]),
            t1,
        );
        assert!(r.poll_event().is_none());
        let (to, qid6, qt) = sent(&mut r);
        assert_eq!(
            (to, qt),
            (ns(NS2), QType::Aaaa),
            "AAAA starts at the server that answered"
        );
        assert_ne!(qid6, qid);
        assert_eq!(r.poll_timeout(), Some(t1 + ATTEMPT_TIMEOUT));
        // a late A reply (old id) is dropped now
        r.handle_datagram(ns(NS1), &ok_a(qid, &[a(NAME, [1, 1, 1, 1], 60)]), t1);
        assert!(r.poll_event().is_none());
        let ip6: Ipv6Addr = "2001:db8::80".parse().unwrap();
        let reply = response(
            qid6,
            OK,
            NAME,
            28,
            &[
                cname(NAME, "v6only.example", 60),
                aaaa("v6only.example", ip6, 60),
            ],
        );
        r.handle_datagram(ns(NS2), &reply, t1);
        assert_eq!(r.poll_event(), Some((id, Some(IpAddr::V6(ip6)))));
    }

    #[test]
    fn no_a_and_no_aaaa_gives_none() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        let id = pending(r.lookup(NAME, t0));
        let (_, qid, _) = sent(&mut r);
        r.handle_datagram(ns(NS1), &ok_a(qid, &[]), t0);
        let (_, qid6, qt) = sent(&mut r);
        assert_eq!(qt, QType::Aaaa);
        r.handle_datagram(ns(NS1), &response(qid6, OK, NAME, 28, &[]), t0);
        assert_eq!(r.poll_event(), Some((id, None)));
        assert_eq!(r.lookup(NAME, t0 + secs(29)), Lookup::Ready(None));
    }

    #[test]
    fn timeouts_walk_the_nameservers_twice_then_fail() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1, NS2, NS3]);
        let id = pending(r.lookup(NAME, t0));
        let order = [NS1, NS2, NS3, NS1, NS2, NS3];
        for (k, server) in order.iter().enumerate() {
            let at = t0 + secs(k as u64);
            assert_eq!(sent(&mut r).0, ns(*server), "attempt {k}");
            assert_eq!(r.poll_timeout(), Some(at + ATTEMPT_TIMEOUT));
            // early and repeated calls do nothing
            r.handle_timeout(at + Duration::from_millis(999));
            assert!(r.poll_transmit().is_none());
            assert!(r.poll_event().is_none());
            r.handle_timeout(at + ATTEMPT_TIMEOUT);
        }
        assert_eq!(r.poll_event(), Some((id, None)));
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.poll_timeout(), None);
        // the failure is cached 30 s
        assert_eq!(r.lookup(NAME, t0 + secs(6 + 29)), Lookup::Ready(None));
        let _ = pending(r.lookup(NAME, t0 + secs(6 + 30)));
    }

    #[test]
    fn servfail_and_truncation_move_on_at_once() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1, NS2]);
        let id = pending(r.lookup(NAME, t0));
        let (_, qid, _) = sent(&mut r);
        r.handle_datagram(ns(NS1), &response(qid, OK | 2, NAME, 1, &[]), t0);
        assert_eq!(sent(&mut r).0, ns(NS2));
        let tc = response(qid, OK | 0x0200, NAME, 1, &[]);
        r.handle_datagram(ns(NS2), &tc, t0);
        assert_eq!(sent(&mut r).0, ns(NS1));
        // a late failure from a server that is no longer current changes nothing
        r.handle_datagram(ns(NS2), &tc, t0);
        assert!(r.poll_transmit().is_none());
        // a late good answer from any server asked is taken
        r.handle_datagram(ns(NS2), &ok_a(qid, &[a(NAME, [192, 0, 2, 9], 60)]), t0);
        assert_eq!(r.poll_event(), Some((id, Some(v4(192, 0, 2, 9)))));
        // all attempts failing fast ends with None at once
        let id = pending(r.lookup("other.example", t0));
        for _ in 0..ROUNDS * 2 {
            let (to, qid, _) = sent(&mut r);
            r.handle_datagram(to, &response(qid, OK | 5, "other.example", 1, &[]), t0);
        }
        assert_eq!(r.poll_event(), Some((id, None)));
    }

    #[test]
    fn datagrams_from_elsewhere_or_with_other_ids_are_dropped() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1, NS2]);
        let id = pending(r.lookup(NAME, t0));
        let (_, qid, _) = sent(&mut r);
        let good = ok_a(qid, &[a(NAME, [192, 0, 2, 1], 60)]);
        r.handle_datagram(ns(NS2), &good, t0); // not asked yet
        r.handle_datagram(SocketAddr::new(NS1, 5353), &good, t0); // wrong port
        r.handle_datagram(ns(v4(192, 0, 2, 54)), &good, t0); // wrong address
        let other = ok_a(qid.wrapping_add(1), &[a(NAME, [192, 0, 2, 1], 60)]);
        r.handle_datagram(ns(NS1), &other, t0); // wrong id
        let mut query_echo = good.clone();
        query_echo[2] &= 0x7F; // QR clear
        r.handle_datagram(ns(NS1), &query_echo, t0);
        r.handle_datagram(ns(NS1), &good[..1], t0); // too short for an id
        r.handle_datagram(ns(NS1), &[], t0);
        assert!(r.poll_event().is_none());
        assert!(
            r.poll_transmit().is_none(),
            "drops do not move to the next server"
        );
        // IPv4-mapped source (dual-stack socket) is the same server
        let mapped = SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 53).to_ipv6_mapped()),
            53,
        );
        r.handle_datagram(mapped, &good, t0);
        assert_eq!(r.poll_event(), Some((id, Some(v4(192, 0, 2, 1)))));
    }

    #[test]
    fn lookups_of_one_name_share_the_query() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        let first = pending(r.lookup(NAME, t0));
        let second = pending(r.lookup("MIRROR.example.org.", t0));
        assert_ne!(first, second);
        let (_, qid, _) = sent(&mut r); // one datagram for both
        r.handle_datagram(ns(NS1), &ok_a(qid, &[a(NAME, [192, 0, 2, 1], 60)]), t0);
        let got = [r.poll_event(), r.poll_event(), r.poll_event()];
        let addr = Some(v4(192, 0, 2, 1));
        assert_eq!(got, [Some((first, addr)), Some((second, addr)), None]);
    }

    #[test]
    fn cancel_drops_the_event_but_not_the_query() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        let first = pending(r.lookup(NAME, t0));
        let second = pending(r.lookup(NAME, t0));
        r.cancel(first);
        r.cancel(first); // twice is harmless
        let (_, qid, _) = sent(&mut r);
        r.handle_datagram(ns(NS1), &ok_a(qid, &[a(NAME, [192, 0, 2, 1], 60)]), t0);
        assert_eq!(r.poll_event(), Some((second, Some(v4(192, 0, 2, 1)))));
        assert!(r.poll_event().is_none());

        // the only waiter cancelled: the query goes on and fills the cache
        let only = pending(r.lookup("b.example", t0));
        r.cancel(only);
        let (_, qid, _) = sent(&mut r);
        let reply = response(
            qid,
            OK,
            "b.example",
            1,
            &[a("b.example", [192, 0, 2, 2], 60)],
        );
        r.handle_datagram(ns(NS1), &reply, t0);
        assert!(r.poll_event().is_none());
        assert_eq!(
            r.lookup("b.example", t0),
            Lookup::Ready(Some(v4(192, 0, 2, 2)))
        );

        // cancelled after the end but before poll_event: the queued event goes
        let late = pending(r.lookup("c.example", t0));
        let (_, qid, _) = sent(&mut r);
        r.handle_datagram(ns(NS1), &response(qid, OK | 3, "c.example", 1, &[]), t0);
        r.cancel(late);
        assert!(r.poll_event().is_none());
        r.cancel(LookupId(12345)); // unknown: ignored
    }

    #[test]
    fn query_ids_are_unique_in_flight() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..MAX_QUERIES {
            let _ = pending(r.lookup(&format!("h{i}.example"), t0));
            let (_, qid, _) = sent(&mut r);
            assert!(ids.insert(qid), "id {qid} reused");
        }
        assert_eq!(r.by_id.len(), MAX_QUERIES);
    }

    #[test]
    fn queries_in_flight_are_bounded() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        for i in 0..MAX_QUERIES {
            let _ = pending(r.lookup(&format!("h{i}.example"), t0));
        }
        assert_eq!(r.lookup("one-too-many.example", t0), Lookup::Ready(None));
        // a name already in flight still joins its query
        let _ = pending(r.lookup("h0.example", t0));
        assert_eq!(r.queries.len(), MAX_QUERIES);
        // and after they fail, room again
        for k in 0..ROUNDS {
            r.handle_timeout(t0 + secs(1 + k as u64));
        }
        assert_eq!(r.queries.len(), 0);
        let mut events = 0;
        while r.poll_event().is_some() {
            events += 1;
        }
        assert_eq!(events, MAX_QUERIES + 1);
        let _ = pending(r.lookup("one-too-many.example", t0 + secs(3)));
        assert!(r.transmits.len() <= TRANSMIT_QUEUE_LIMIT);
    }

    #[test]
    fn pending_lookups_are_bounded() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        for _ in 0..MAX_PENDING_LOOKUPS {
            let _ = pending(r.lookup(NAME, t0));
        }
        assert_eq!(r.lookup(NAME, t0), Lookup::Ready(None));
    }

    #[test]
    fn transmit_queue_is_bounded() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1, NS2, NS3]);
        for i in 0..MAX_QUERIES {
            let _ = pending(r.lookup(&format!("h{i}.example"), t0));
        }
        for k in 1..=4 {
            r.handle_timeout(t0 + secs(k));
        }
        assert_eq!(r.transmits.len(), TRANSMIT_QUEUE_LIMIT);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        for i in 0..=MAX_CACHED_NAMES {
            let name = format!("h{i}.example");
            let _ = pending(r.lookup(&name, t0));
            let (_, qid, _) = sent(&mut r);
            let reply = response(
                qid,
                OK,
                &name,
                1,
                &[a(&name, [10, 0, (i >> 8) as u8, i as u8], 600)],
            );
            r.handle_datagram(ns(NS1), &reply, t0);
            assert!(r.poll_event().is_some());
        }
        assert_eq!(r.cache.len(), MAX_CACHED_NAMES);
        let _ = pending(r.lookup("h0.example", t0)); // evicted
        assert_eq!(
            r.lookup("h1.example", t0),
            Lookup::Ready(Some(v4(10, 0, 0, 1)))
        );
        assert_eq!(
            r.lookup(&format!("h{MAX_CACHED_NAMES}.example"), t0),
            Lookup::Ready(Some(v4(10, 0, 1, 0)))
        );
    }

    #[test]
    fn set_nameservers_empties_the_cache_and_redirects_attempts() {
        let t0 = Instant::now();
        let mut r = resolver(&[NS1]);
        let _ = pending(r.lookup(NAME, t0));
        let (_, qid, _) = sent(&mut r);
        r.handle_datagram(ns(NS1), &ok_a(qid, &[a(NAME, [192, 0, 2, 1], 600)]), t0);
        assert!(r.poll_event().is_some());
        let id = pending(r.lookup("b.example", t0));
        let (_, qid, _) = sent(&mut r);
        r.set_nameservers(vec![NS2], "192.0.2.99 newhost.example\n".to_owned());
        assert_eq!(
            r.lookup("newhost.example", t0),
            Lookup::Ready(Some(v4(192, 0, 2, 99)))
        );
        // the old hosts text is gone, and so is the cache
        let hosted = pending(r.lookup("hosted.example", t0));
        r.cancel(hosted);
        let _ = sent(&mut r);
        let _ = pending(r.lookup(NAME, t0));
        let _ = sent(&mut r);
        // the query in flight retries at the new nameserver; a late reply from the old one
        // (which it went to) is still taken
        r.handle_timeout(t0 + secs(1) - Duration::from_millis(1));
        assert!(r.poll_transmit().is_none());
        r.handle_timeout(t0 + secs(1));
        let mut to = Vec::new();
        while let Some((dest, _)) = r.poll_transmit() {
            to.push(dest);
        }
        // b.example, hosted.example and NAME were all due
        assert_eq!(to, vec![ns(NS2); 3]);
        let reply = response(
            qid,
            OK,
            "b.example",
            1,
            &[a("b.example", [192, 0, 2, 2], 60)],
        );
        r.handle_datagram(ns(NS1), &reply, t0 + secs(1));
        assert_eq!(r.poll_event(), Some((id, Some(v4(192, 0, 2, 2)))));
        // none given: 127.0.0.1; more than three: the first three
        r.set_nameservers(Vec::new(), String::new());
        assert_eq!(r.nameservers, vec![v4(127, 0, 0, 1)]);
        r.set_nameservers(vec![NS1, NS2, NS3, v4(10, 0, 0, 53)], String::new());
        assert_eq!(r.nameservers, vec![NS1, NS2, NS3]);
    }

    #[test]
    fn oversized_hosts_text_is_cut_at_a_line_end() {
        let mut text = String::from("192.0.2.1 first.example\n");
        while text.len() <= MAX_HOSTS_BYTES {
            text.push_str("# \u{e9}\u{e9}\u{e9} padding padding padding\n");
        }
        text.push_str("192.0.2.2 last.example\n");
        let r = Resolver::new(vec![NS1], text, 1);
        assert!(r.hosts_text.len() <= MAX_HOSTS_BYTES);
        assert!(r.hosts_text.ends_with('\n'));
        assert_eq!(
            hosts_lookup(&r.hosts_text, "first.example"),
            Some(v4(192, 0, 2, 1))
        );
        assert_eq!(hosts_lookup(&r.hosts_text, "last.example"), None);
    }
}
