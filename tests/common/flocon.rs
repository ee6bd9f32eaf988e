//! flocon daemons in a lab, as the discovery tests drive them: start one per host with the
//! options every such test uses (its own cache dir, `--interface eth0`, debug logs), learn its
//! host id from its start-up line, read its peer table (from `GET /status` or the SIGUSR1
//! lines), ask it "who has file X" over its loopback HTTP port, and watch what reaches a host
//! on the wire with a packet socket.
//!
//! It knows the daemon's log and status texts (`discovery: peer <id> up at ...`, `peer <id>
//! <ip> port <port> <distro>/<arch> heard N s ago[, incompatible]`, `N peers, M compatible
//! (this host <id>, <distro>/<arch>)`) and the wire format (through `flocon::discovery::wire`),
//! nothing about the daemon's insides. Every wait is bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use ::flocon::discovery::wire::{self, Body, Message};

use super::http::try_http_get;
use super::lab::Lab;
use super::{Daemon, TempDir, wait_until};

/// The peer port (UDP discovery and TCP file server) every lab daemon uses.
pub const PEER_PORT: u16 = 19432;
/// The loopback port (pacman side, `/status`, `/query/`) every lab daemon uses.
pub const LOCAL_PORT: u16 = 19433;
/// The default group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 19, 32);
/// Bound for a daemon to print its start-up lines.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The daemon binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flocon")
}

/// One daemon running on one lab host.
pub struct Host {
    pub index: usize,
    pub ip: Ipv4Addr,
    pub daemon: Daemon,
    pub cache: TempDir,
    /// Its host id, from its start-up line.
    pub id: u64,
    pub distro: String,
    pub arch: String,
    /// When it was spawned.
    pub started: Instant,
}

impl Host {
    /// Put a regular file named `name` in its cache dir.
    #[track_caller]
    pub fn put(&self, name: &str, data: &[u8]) {
        let path = self.cache.join(name);
        if let Err(e) = std::fs::write(&path, data) {
            panic!("cannot write {}: {e}", path.display());
        }
    }

    /// Send `sig` to the daemon.
    #[track_caller]
    pub fn signal(&mut self, sig: libc::c_int) {
        self.daemon.signal(sig);
    }
}

/// The arguments of a daemon on this host's loopback only (no namespace): no config file, no
/// pacman.conf, `lo` as its interface, serving `cache` on `port` and relaying on `local`.
pub fn loopback_args(cache: &Path, port: u16, local: u16) -> Vec<String> {
    let (port, local) = (port.to_string(), local.to_string());
    let cache = cache.display().to_string();
    [
        "-c",
        "/dev/null",
        "--pacman-conf",
        "/nonexistent",
        "--interface",
        "lo",
        "--port",
        &port,
        "--local-port",
        &local,
        "--cache-dir",
        &cache,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The arguments every lab daemon gets, then `extra`.
pub fn daemon_args(cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "-c",
        "/dev/null",
        "--pacman-conf",
        "/nonexistent",
        "--cache-dir",
        &cache.display().to_string(),
        "--port",
        &PEER_PORT.to_string(),
        "--local-port",
        &LOCAL_PORT.to_string(),
        "--interface",
        "eth0",
        "-d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A daemon just spawned on a lab host, whose start-up line was not awaited yet.
pub struct Spawned {
    pub index: usize,
    pub ip: Ipv4Addr,
    pub daemon: Daemon,
    pub cache: TempDir,
    pub started: Instant,
}

impl Spawned {
    /// Wait for its `listening on UDP ... host id <id>, <distro>/<arch>` line.
    #[track_caller]
    pub fn ready(self) -> Host {
        let i = self.index;
        let line = self
            .daemon
            .wait_for_line_containing("listening on UDP", START_TIMEOUT);
        let Some((id, distro, arch)) = parse_startup_line(&line) else {
            panic!("h{i}: cannot read the host id from {line:?}");
        };
        Host {
            index: i,
            ip: self.ip,
            daemon: self.daemon,
            cache: self.cache,
            id,
            distro,
            arch,
            started: self.started,
        }
    }
}

/// Start flocon on host `i` with [`daemon_args`] and `extra`, without waiting.
#[track_caller]
pub fn spawn_nowait(lab: &Lab, i: usize, extra: &[&str]) -> Spawned {
    let cache = TempDir::new(&format!("disc-h{i}"));
    let args = daemon_args(cache.path(), extra);
    let started = Instant::now();
    let daemon = lab.spawn(i, bin(), &args);
    Spawned {
        index: i,
        ip: lab.host(i).ip(),
        daemon,
        cache,
        started,
    }
}

/// Start flocon on host `i` and wait for its start-up line (not for the group join).
#[track_caller]
pub fn spawn_host(lab: &Lab, i: usize, extra: &[&str]) -> Host {
    spawn_nowait(lab, i, extra).ready()
}

/// Start flocon on each of hosts `0..n` with the same `extra` (all spawned before any wait),
/// then wait for each one's start-up line.
#[track_caller]
pub fn spawn_hosts(lab: &Lab, n: usize, extra: &[&str]) -> Vec<Host> {
    let spawned: Vec<Spawned> = (0..n).map(|i| spawn_nowait(lab, i, extra)).collect();
    spawned.into_iter().map(Spawned::ready).collect()
}

/// `(host id, distro, arch)` from `... host id 0123456789abcdef, arch/x86_64`.
pub fn parse_startup_line(line: &str) -> Option<(u64, String, String)> {
    let rest = &line[line.find("host id ")? + "host id ".len()..];
    let (id, rest) = rest.split_once(", ")?;
    let id = u64::from_str_radix(id.trim(), 16).ok()?;
    let (distro, arch) = rest.trim().split_once('/')?;
    Some((id, distro.to_string(), arch.to_string()))
}

/// One peer line of the status page / SIGUSR1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLine {
    pub id: u64,
    /// Its address (an IPv6 one without its zone).
    pub ip: IpAddr,
    pub port: u16,
    pub distro: String,
    pub arch: String,
    pub heard_secs: u64,
    pub incompatible: bool,
    /// Its cache summary is held (`, summary of N names`), so a lookup asks it only about what
    /// it lists.
    pub summary_known: bool,
}

/// `peer <16 hex> <ip> port <port> <distro>/<arch> heard N s ago[, incompatible][, notes]`, anywhere in
/// `line` (a log prefix is skipped). `None` for any other line, e.g. `discovery: peer .. up`.
pub fn parse_peer_line(line: &str) -> Option<PeerLine> {
    let mut from = 0;
    while let Some(at) = line[from..].find("peer ") {
        let start = from + at;
        from = start + 5;
        if start > 0 && !line[..start].ends_with(' ') {
            continue;
        }
        let mut words = line[start + 5..].split(' ');
        let id_text = words.next()?;
        if id_text.len() != 16 {
            continue;
        }
        let Ok(id) = u64::from_str_radix(id_text, 16) else {
            continue;
        };
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if words.next() != Some("port") {
            continue;
        }
        let port: u16 = words.next()?.parse().ok()?;
        let (distro, arch) = words.next()?.split_once('/')?;
        if words.next() != Some("heard") {
            return None;
        }
        let heard_secs: u64 = words.next()?.parse().ok()?;
        let rest: Vec<&str> = words.collect();
        let rest = rest.join(" ");
        // Then `, incompatible` and other notes (summary, answer time, silent).
        let notes = rest.strip_prefix("s ago")?;
        let incompatible = notes.split(", ").any(|n| n == "incompatible");
        let summary_known = notes.split(", ").any(|n| n.starts_with("summary of "));
        return Some(PeerLine {
            id,
            ip,
            port,
            distro: distro.to_string(),
            arch: arch.to_string(),
            heard_secs,
            incompatible,
            summary_known,
        });
    }
    None
}

/// The count line: `N peer(s), M compatible (this host <id>, <distro>/<arch>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountLine {
    pub peers: usize,
    pub compatible: usize,
    pub me: u64,
    pub distro: String,
    pub arch: String,
}

pub fn parse_count_line(line: &str) -> Option<CountLine> {
    let at = line.find(" compatible (this host ")?;
    let head = &line[..at];
    let (peers_part, compatible) = head.rsplit_once(", ")?;
    let compatible: usize = compatible.trim().parse().ok()?;
    let peers_part = peers_part
        .strip_suffix(" peers")
        .or_else(|| peers_part.strip_suffix(" peer"))?;
    let peers: usize = peers_part.rsplit(' ').next()?.parse().ok()?;
    let tail = line[at + " compatible (this host ".len()..].strip_suffix(')')?;
    let (me, labels) = tail.split_once(", ")?;
    let me = u64::from_str_radix(me, 16).ok()?;
    let (distro, arch) = labels.split_once('/')?;
    Some(CountLine {
        peers,
        compatible,
        me,
        distro: distro.to_string(),
        arch: arch.to_string(),
    })
}

/// A peer table as the status page shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub peers: Vec<PeerLine>,
    pub count: CountLine,
}

impl PeerView {
    /// The peer ids, sorted.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    }

    pub fn get(&self, id: u64) -> Option<&PeerLine> {
        self.peers.iter().find(|p| p.id == id)
    }
}

/// The peer lines and count line of a status text (or of lines logged on SIGUSR1).
pub fn parse_peer_view<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<PeerView> {
    let mut peers = Vec::new();
    for line in lines {
        if let Some(p) = parse_peer_line(line) {
            peers.push(p);
        } else if let Some(count) = parse_count_line(line) {
            return Some(PeerView { peers, count });
        }
    }
    None
}

/// GET `path` on host `i`'s loopback port, from inside its namespace.
pub fn local_get(lab: &Lab, i: usize, path: &str) -> std::io::Result<super::Response> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, LOCAL_PORT));
    lab.run_in(i, || try_http_get(addr, path, &[]))
}

/// Host `i`'s peer table from `GET /status`.
#[track_caller]
pub fn status(lab: &Lab, i: usize) -> PeerView {
    let resp = match local_get(lab, i, "/status") {
        Ok(r) => r,
        Err(e) => panic!("h{i}: GET /status failed: {e}"),
    };
    let text = resp.text();
    match parse_peer_view(text.lines()) {
        Some(v) if resp.status == 200 => v,
        _ => panic!(
            "h{i}: GET /status: status {} and no count line in {text:?}",
            resp.status
        ),
    }
}

/// Wait until host `i`'s `/status` lists exactly the peers `ids` (any order).
#[track_caller]
pub fn wait_peers(lab: &Lab, i: usize, ids: &[u64], timeout: Duration) -> PeerView {
    let mut want = ids.to_vec();
    want.sort_unstable();
    let last = std::cell::RefCell::new(None::<PeerView>);
    wait_until(
        &format!("h{i} to list peers {}", hex_ids(&want)),
        timeout,
        || {
            let v = status(lab, i);
            let ok = v.ids() == want;
            *last.borrow_mut() = Some(v.clone());
            ok.then_some(v)
        },
        || format!("{:?}", last.borrow()),
    )
}

/// `[0123456789abcdef, ...]`.
pub fn hex_ids(ids: &[u64]) -> String {
    let parts: Vec<String> = ids.iter().map(|id| format!("{id:016x}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The distinct peer ids host `d` logged as up so far (`discovery: peer <id> up at`).
pub fn peers_logged_up(d: &Daemon) -> Vec<u64> {
    let mut ids: Vec<u64> = d
        .lines()
        .iter()
        .filter_map(|l| {
            let at = l.find("discovery: peer ")? + "discovery: peer ".len();
            let (id, rest) = l[at..].split_once(' ')?;
            rest.starts_with("up at ")
                .then(|| u64::from_str_radix(id, 16).ok())
                .flatten()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// What `/query/<file>` said.
#[derive(Debug, Clone)]
pub struct QueryAnswer {
    pub status: u16,
    pub body: String,
    /// Wall time of the HTTP exchange, measured by the test.
    pub elapsed: Duration,
    /// The `(N ms)` the daemon reports.
    pub reported_ms: u64,
    /// `(host id, address)` of the peer that has it, for a 200.
    pub peer: Option<(u64, SocketAddrV4)>,
}

/// Parse a query answer body: `<file>: peer <id> at <ip:port> has it (N ms)` or
/// `<file>: no peer has it (N ms)`. Returns `(peer, ms)`; panics on anything else.
#[track_caller]
pub fn parse_query_body(file: &str, body: &str) -> (Option<(u64, SocketAddrV4)>, u64) {
    let bad = || -> ! { panic!("unexpected answer to the query for {file}: {body:?}") };
    let Some(rest) = body.trim_end().strip_prefix(&format!("{file}: ")) else {
        bad()
    };
    let Some((what, ms)) = rest.rsplit_once(" (") else {
        bad()
    };
    let Some(ms) = ms.strip_suffix(" ms)").and_then(|m| m.parse::<u64>().ok()) else {
        bad()
    };
    if what == "no peer has it" {
        return (None, ms);
    }
    let Some(rest) = what
        .strip_prefix("peer ")
        .and_then(|r| r.strip_suffix(" has it"))
    else {
        bad()
    };
    let Some((id, addr)) = rest.split_once(" at ") else {
        bad()
    };
    let (Ok(id), Ok(addr)) = (u64::from_str_radix(id, 16), addr.parse::<SocketAddrV4>()) else {
        bad()
    };
    (Some((id, addr)), ms)
}

/// Ask host `i` who has `file` (`GET /query/<file>` from inside its namespace).
#[track_caller]
pub fn query(lab: &Lab, i: usize, file: &str) -> QueryAnswer {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, LOCAL_PORT));
    let path = format!("/query/{file}");
    let (resp, elapsed) = lab.run_in(i, || {
        let t = Instant::now();
        let r = try_http_get(addr, &path, &[]);
        (r, t.elapsed())
    });
    let resp = match resp {
        Ok(r) => r,
        Err(e) => panic!("h{i}: GET {path} failed: {e}"),
    };
    query_answer(file, resp, elapsed)
}

/// Check and parse one `/query/` response.
#[track_caller]
pub fn query_answer(file: &str, resp: super::Response, elapsed: Duration) -> QueryAnswer {
    let body = resp.text();
    let (peer, reported_ms) = parse_query_body(file, &body);
    let expected_status = if peer.is_some() { 200 } else { 404 };
    assert_eq!(
        resp.status, expected_status,
        "status of the query for {file} answered {body:?}"
    );
    QueryAnswer {
        status: resp.status,
        body,
        elapsed,
        reported_ms,
        peer,
    }
}

/// A UDP socket on an ephemeral port inside host `i`'s namespace, with a receive timeout.
#[track_caller]
pub fn udp_socket_in(lab: &Lab, i: usize) -> UdpSocket {
    let sock = lab.run_in(i, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)));
    let sock = match sock {
        Ok(s) => s,
        Err(e) => panic!("h{i}: cannot bind a UDP socket: {e}"),
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set_read_timeout");
    sock
}

/// Encode a message with the crate's emitter.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    wire::emit(msg, &mut out);
    out
}

/// Every datagram waiting on `sock` (reading until a read times out), parsed where possible.
pub fn drain(sock: &UdpSocket, for_at_least: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + for_at_least;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((from, buf[..n].to_vec())),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if Instant::now() >= deadline {
                    return got;
                }
            }
            Err(e) => panic!("recv_from failed: {e}"),
        }
    }
}

/// One WHO_HAS seen on the wire by a [`Sniffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenWhoHas {
    pub from: Ipv4Addr,
    pub asker: u64,
    pub question: u32,
    pub name: Vec<u8>,
    /// The content the asker expects (protocol version 2), when its database knows it.
    pub expected: Option<flocon::discovery::wire::Expected>,
}

/// A packet socket on `eth0` of one lab host: sees every IPv4 packet the host receives there,
/// so tests can tell whether a host was asked a question.
pub struct Sniffer {
    fd: OwnedFd,
    ip: Ipv4Addr,
}

impl Sniffer {
    /// Open it inside host `i`'s namespace.
    #[track_caller]
    pub fn open(lab: &Lab, i: usize) -> Sniffer {
        let ip = lab.host(i).ip();
        let fd = lab.run_in(i, || -> std::io::Result<OwnedFd> {
            let proto = (libc::ETH_P_IP as u16).to_be();
            // SAFETY: plain socket(2) call; the result is checked before use.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh descriptor owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: the argument is a NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            if index == 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = index as i32;
            // SAFETY: `sll` is a valid sockaddr_ll and its size is passed with it.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast::<libc::sockaddr>(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        });
        match fd {
            Ok(fd) => Sniffer { fd, ip },
            Err(e) => panic!("h{i}: cannot open a packet socket on eth0: {e}"),
        }
    }

    /// The WHO_HAS datagrams addressed to this host's peer port since the last call.
    pub fn who_has(&self) -> Vec<SeenWhoHas> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return seen;
            }
            if let Some(w) = self.who_has_in(&buf[..n as usize]) {
                seen.push(w);
            }
        }
    }

    fn who_has_in(&self, pkt: &[u8]) -> Option<SeenWhoHas> {
        if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
            return None;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let udp = pkt.get(ihl..)?;
        if dst != self.ip || udp.len() < 8 {
            return None;
        }
        if u16::from_be_bytes([udp[2], udp[3]]) != PEER_PORT {
            return None;
        }
        match wire::parse(&udp[8..]) {
            Ok(Message {
                host_id,
                body:
                    Body::WhoHas {
                        question,
                        name,
                        expected,
                    },
            }) => Some(SeenWhoHas {
                from: src,
                asker: host_id,
                question,
                name,
                expected,
            }),
            _ => None,
        }
    }
}

/// The median and the largest of `samples` (sorted in place).
pub fn median_and_worst(samples: &mut [Duration]) -> (Duration, Duration) {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// Wait until every host of `hosts` lists exactly the others as peers (one overall bound).
#[track_caller]
pub fn wait_mesh(lab: &Lab, hosts: &[Host], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for h in hosts {
        let others: Vec<u64> = hosts
            .iter()
            .filter(|o| o.index != h.index)
            .map(|o| o.id)
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        wait_peers(lab, h.index, &others, left.max(Duration::from_millis(1)));
    }
    // And each holds the others' cache summaries (fetched by unicast right after the first
    // announcement: a lookup before then asks every peer, as flocon did before summaries).
    for h in hosts {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_until(
            &format!("h{} to hold its peers' cache summaries", h.index),
            left.max(Duration::from_millis(1)),
            || {
                let view = status(lab, h.index);
                let ids: Vec<u64> = hosts.iter().map(|o| o.id).collect();
                view.peers
                    .iter()
                    .filter(|p| ids.contains(&p.id))
                    .all(|p| p.summary_known)
                    .then_some(())
            },
            || format!("{:?}", status(lab, h.index).peers),
        );
    }
}

/// Wait until host `i`'s `eth0` is really usable after `plug`/`link_up`: carrier on and
/// operational state UP (the kernel attaches the queueing discipline, and so passes packets,
/// only when it processes the carrier change, which can lag by up to a second).
#[track_caller]
pub fn wait_link_usable(lab: &Lab, i: usize, timeout: Duration) {
    let ns = lab.host(i).ns().to_string();
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        &format!("h{i}: eth0 carrier and state UP"),
        timeout,
        || {
            let mut cmd =
                std::process::Command::new(super::which("ip").unwrap_or_else(|| "ip".into()));
            cmd.args(["-n", &ns, "-o", "link", "show", "eth0"]);
            let out = super::output_within(cmd, Duration::from_secs(10));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let ok = text.contains("LOWER_UP") && text.contains(" state UP ");
            *last.borrow_mut() = text;
            ok.then_some(())
        },
        || last.borrow().clone(),
    );
}
