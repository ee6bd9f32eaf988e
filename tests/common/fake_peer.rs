//! A misbehaving LAN peer for tests: a test-process stand-in for a flocon host that takes part
//! in discovery for real (the datagrams are made and read with `flocon::discovery::wire`) on a
//! UDP socket bound to the peer port inside one lab host, says HAVE to the WHO_HAS questions it
//! is told to claim (HAVE_NOT to the others), and whose TCP file server misbehaves on purpose:
//! it stays silent, sends a response head (and perhaps a little body) and then nothing, or
//! answers garbage.
//!
//! It records what it was asked (WHO_HAS names and HTTP request heads) so tests can see that a
//! daemon really tried it. Its threads stop, and its sockets close, on drop. It is the only
//! part of these helpers that uses the crate itself (the wire format, not the daemon).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flocon::discovery::wire::{Announcement, Body, Message, emit, parse};

use super::lab::Lab;

/// The default discovery group and peer port (docs/protocol.md).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 19, 32);
pub const PORT: u16 = 19432;

/// What the fake file server does with a request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Accept, read the request, send nothing; the connection stays open.
    Silent,
    /// Answer `200` with the true `Content-Length` of `<dir>/<file asked for>`, send its first
    /// `prefix` bytes, then nothing more; the connection stays open. A file that is not in
    /// `dir` is answered 404.
    HeadThenStall { dir: PathBuf, prefix: u64 },
    /// Send these bytes whatever was asked, then close.
    Raw(Vec<u8>),
    /// Answer `200` with the true `Content-Length` of `<dir>/<file asked for>` and all of its
    /// bytes but 14 flipped in the middle (a lying or dying peer), then close. A file that is
    /// not in `dir` is answered 404.
    Corrupt { dir: PathBuf },
}

/// Which WHO_HAS questions it says HAVE to.
#[derive(Debug, Clone)]
pub enum Claims {
    All,
    Only(Vec<String>),
}

impl Claims {
    fn has(&self, name: &str) -> bool {
        match self {
            Claims::All => true,
            Claims::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

#[derive(Default)]
struct Seen {
    who_has: Vec<String>,
    requests: Vec<String>,
}

/// A running fake peer; stopped on drop.
pub struct FakePeer {
    name: String,
    host_id: u64,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl FakePeer {
    /// Start on lab host `host` (which must not run a flocon): discovery on UDP [`PORT`] with
    /// the group joined on `eth0`, the file server on TCP [`PORT`]. Announces itself as
    /// `distro`/`arch` with a HELLO and an ANNOUNCE to the group at once, and answers HELLOs.
    #[track_caller]
    pub fn start(
        lab: &Lab,
        host: usize,
        distro: &str,
        arch: &str,
        claims: Claims,
        behaviour: Behaviour,
    ) -> FakePeer {
        let ip = lab.host(host).ip();
        let (udp, tcp) = lab.run_in(host, || {
            let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT))
                .unwrap_or_else(|e| panic!("fake peer: bind UDP {PORT}: {e}"));
            udp.join_multicast_v4(&GROUP, &ip)
                .unwrap_or_else(|e| panic!("fake peer: join {GROUP} on {ip}: {e}"));
            let _ = udp.set_multicast_loop_v4(false);
            let _ = udp.set_multicast_ttl_v4(1);
            let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))
                .unwrap_or_else(|e| panic!("fake peer: bind TCP {PORT}: {e}"));
            (udp, tcp)
        });
        let host_id = 0xfa4e_0000_0000_0000
            | ((u64::from(std::process::id()) << 16) ^ (super::unique_number() << 8) ^ host as u64);
        let name = format!("fake h{host}");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let me = Announcement {
            tcp_port: PORT,
            distro: distro.to_owned(),
            arch: arch.to_owned(),
            summary: 0,
        };
        let _ = udp.set_read_timeout(Some(Duration::from_millis(50)));
        let group = SocketAddr::V4(SocketAddrV4::new(GROUP, PORT));
        for body in [Body::Hello(me.clone()), Body::Announce(me.clone())] {
            send(&udp, host_id, body, group);
        }
        eprintln!("[{name}] discovery as {host_id:016x} at {ip}:{PORT} ({distro}/{arch})");
        let mut threads = Vec::new();
        {
            let (stop, seen, name) = (Arc::clone(&stop), Arc::clone(&seen), name.clone());
            threads.push(thread::spawn(move || {
                discovery_loop(&udp, host_id, &me, &claims, &stop, &seen, &name);
            }));
        }
        {
            let (stop, seen, name) = (Arc::clone(&stop), Arc::clone(&seen), name.clone());
            threads.push(thread::spawn(move || {
                server_loop(&tcp, &behaviour, &stop, &seen, &name);
            }));
        }
        FakePeer {
            name,
            host_id,
            addr: SocketAddr::from((ip, PORT)),
            stop,
            seen,
            threads,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn host_id(&self) -> u64 {
        self.host_id
    }

    /// Its file server's address as peers see it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// File names asked about so far.
    pub fn who_has(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .who_has
            .clone()
    }

    /// HTTP request heads received so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn send(udp: &UdpSocket, host_id: u64, body: Body, to: SocketAddr) {
    let mut out = Vec::new();
    emit(&Message { host_id, body }, &mut out);
    if let Err(e) = udp.send_to(&out, to) {
        eprintln!("fake peer: send to {to}: {e}");
    }
}

fn discovery_loop(
    udp: &UdpSocket,
    host_id: u64,
    me: &Announcement,
    claims: &Claims,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
    name: &str,
) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let Ok(msg) = parse(&buf[..n]) else {
            continue;
        };
        if msg.host_id == host_id {
            continue;
        }
        match msg.body {
            Body::Hello(_) => send(udp, host_id, Body::Announce(me.clone()), from),
            Body::WhoHas {
                question,
                name: raw,
                expected: _,
            } => {
                let file = String::from_utf8_lossy(&raw).into_owned();
                let have = claims.has(&file);
                eprintln!(
                    "[{name}] WHO_HAS {file} from {from}: {}",
                    if have { "HAVE" } else { "HAVE_NOT" }
                );
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .who_has
                    .push(file);
                let body = if have {
                    Body::Have { question }
                } else {
                    Body::HaveNot { question }
                };
                send(udp, host_id, body, from);
            }
            _ => {}
        }
    }
}

fn server_loop(
    tcp: &TcpListener,
    behaviour: &Behaviour,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
    name: &str,
) {
    if let Err(e) = tcp.set_nonblocking(true) {
        eprintln!("[{name}] set_nonblocking: {e}");
        return;
    }
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match tcp.accept() {
            Ok((stream, remote)) => {
                let (stop, seen, behaviour, name) = (
                    Arc::clone(stop),
                    Arc::clone(seen),
                    behaviour.clone(),
                    name.to_owned(),
                );
                conns.push(thread::spawn(move || {
                    serve_one(stream, remote, &behaviour, &stop, &seen, &name);
                }));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn serve_one(
    mut stream: TcpStream,
    remote: SocketAddr,
    behaviour: &Behaviour,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
    name: &str,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    // Read the request head (bounded in time and size).
    let mut head = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let first = text.lines().next().unwrap_or("").to_owned();
    eprintln!("[{name}] {remote}: {first} ({behaviour:?}-ish answer)");
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(text.clone());
    match behaviour {
        Behaviour::Silent => {}
        Behaviour::HeadThenStall { dir, prefix } => {
            let file = requested_file(&first);
            match std::fs::read(dir.join(&file)) {
                Ok(bytes) => {
                    let n = usize::try_from(*prefix)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let mut out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\r\n",
                        bytes.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(&bytes[..n]);
                    let _ = stream.write_all(&out);
                }
                Err(_) => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
            }
        }
        Behaviour::Raw(bytes) => {
            let _ = stream.write_all(bytes);
            return;
        }
        Behaviour::Corrupt { dir } => {
            let file = requested_file(&first);
            let out = match std::fs::read(dir.join(&file)) {
                Ok(mut bytes) => {
                    corrupt(&mut bytes);
                    let mut out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        bytes.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(&bytes);
                    out
                }
                Err(_) => {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                }
            };
            let _ = stream.write_all(&out);
            return;
        }
    }
    // Hold the connection open, reading whatever comes, until the other side closes or the
    // fake peer stops.
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// Flips 14 bytes in the middle of `bytes`, as a dying SD card does: same size, other bytes.
pub fn corrupt(bytes: &mut [u8]) {
    let middle = bytes.len() / 2;
    for b in bytes.iter_mut().skip(middle).take(14) {
        *b ^= 0x5a;
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// The last path segment of a request line's target (`GET /a/b/file HTTP/1.1` -> `file`).
fn requested_file(request_line: &str) -> String {
    request_line
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or("")
        .to_owned()
}
