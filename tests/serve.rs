//! The peer file server against the real binary on loopback: whole files and
//! ranges byte for byte, HEAD, 304, 404, 405, 414, 416, 431, 408, every refused
//! name, keep-alive and pipelining, the connection limit, many idle
//! connections, and the signals.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{HttpConn, build_request, request};
use common::{Daemon, TempDir, free_port, http_get};

const START: Duration = Duration::from_secs(20);

struct Server {
    daemon: Daemon,
    addr: SocketAddr,
    cache: TempDir,
}

fn start_with(cache: TempDir, extra: &[&str]) -> Server {
    let port = free_port();
    let local = free_port();
    let port_s = port.to_string();
    let local_s = local.to_string();
    let mut args = vec![
        "-c",
        "/dev/null",
        "--pacman-conf",
        "/nonexistent/pacman.conf",
        "--port",
        &port_s,
        "--local-port",
        &local_s,
        "--interface",
        "lo",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "-d",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::spawn("flocon", None, env!("CARGO_BIN_EXE_flocon"), &args);
    daemon.wait_for_line_containing("listening on TCP", START);
    Server {
        daemon,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        cache,
    }
}

fn start() -> Server {
    start_with(TempDir::new("serve"), &[])
}

/// Deterministic bytes that do not compress (xorshift64).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn put(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).unwrap();
}

/// The daemon's per-address limit on the peer port.
const MAX_PER_ADDRESS: usize = flocon::event_loop::MAX_CONNECTIONS_PER_ADDRESS;
const PKG: &str = "hello-1.0-1-x86_64.pkg.tar.zst";

#[test]
fn whole_files_and_signatures_come_back_byte_for_byte() {
    let s = start();
    let small = pattern(4096, 1);
    let mid = pattern(1 << 20, 2);
    put(s.cache.path(), PKG, &mid);
    put(s.cache.path(), &format!("{PKG}.sig"), &small[..566]);
    put(s.cache.path(), "libc++-1:17.0-1-x86_64.pkg.tar.zst", &small);
    put(s.cache.path(), "empty-1-1-any.pkg.tar.zst", b"");

    let r = http_get(s.addr, &format!("/{PKG}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, mid);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
    let r = http_get(s.addr, &format!("/{PKG}.sig"), &[]);
    assert_eq!((r.status, &r.body[..]), (200, &small[..566]));
    // Epoch ':' and '+' as pacman sends them, and percent-encoded.
    let r = http_get(s.addr, "/libc++-1:17.0-1-x86_64.pkg.tar.zst", &[]);
    assert_eq!((r.status, r.body.len()), (200, 4096));
    let r = http_get(s.addr, "/libc%2B%2B-1%3A17.0-1-x86_64.pkg.tar.zst", &[]);
    assert_eq!((r.status, r.body.len()), (200, 4096));
    let r = http_get(s.addr, "/empty-1-1-any.pkg.tar.zst", &[]);
    assert_eq!(
        (r.status, r.content_length(), r.body.len()),
        (200, Some(0), 0)
    );
}

#[test]
fn a_200_mb_file_whole_and_from_an_offset() {
    let s = start();
    let len = 200 * 1024 * 1024 + 123;
    let data = pattern(len, 7);
    put(s.cache.path(), PKG, &data);
    let mut conn = HttpConn::connect_timeout(s.addr, Duration::from_secs(60)).unwrap();
    conn.send(&build_request(
        "GET",
        "x",
        &format!("/{PKG}"),
        &[("Connection", "keep-alive")],
    ))
    .unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), Some(len as u64));
    assert!(r.body == data, "200 MB body differs");
    let from = 150 * 1024 * 1024 + 7;
    conn.send(&build_request(
        "GET",
        "x",
        &format!("/{PKG}"),
        &[("Range", &format!("bytes={from}-"))],
    ))
    .unwrap();
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range").unwrap(),
        format!("bytes {from}-{}/{len}", len - 1)
    );
    assert!(r.body == data[from..], "ranged body differs");
}

#[test]
fn ranges_head_304_and_416() {
    let s = start();
    let data = pattern(10_000, 3);
    put(s.cache.path(), PKG, &data);
    let path = format!("/{PKG}");
    let cases: [(&str, u16, Option<&str>, std::ops::Range<usize>); 6] = [
        ("bytes=0-99", 206, Some("bytes 0-99/10000"), 0..100),
        (
            "bytes=9990-",
            206,
            Some("bytes 9990-9999/10000"),
            9990..10_000,
        ),
        (
            "bytes=-10",
            206,
            Some("bytes 9990-9999/10000"),
            9990..10_000,
        ),
        (
            "bytes=5000-99999",
            206,
            Some("bytes 5000-9999/10000"),
            5000..10_000,
        ),
        ("bytes=0-1,5-6", 200, None, 0..10_000),
        ("bytes=10000-", 416, Some("bytes */10000"), 0..0),
    ];
    for (range, status, content_range, slice) in cases {
        let r = http_get(s.addr, &path, &[("Range", range)]);
        assert_eq!(r.status, status, "{range}");
        assert_eq!(r.header("content-range"), content_range, "{range}");
        assert_eq!(r.body, data[slice], "{range}");
    }

    let r = common::http::http_head(s.addr, &path, &[]);
    assert_eq!(
        (r.status, r.content_length(), r.body.len()),
        (200, Some(10_000), 0)
    );
    let last_modified = r.header("last-modified").unwrap().to_owned();

    let r = http_get(s.addr, &path, &[("If-Modified-Since", &last_modified)]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = http_get(
        s.addr,
        &path,
        &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    );
    assert_eq!((r.status, r.body.len()), (200, 10_000));
    let r = http_get(s.addr, &path, &[("If-Modified-Since", "garbage")]);
    assert_eq!(r.status, 200);
}

#[test]
fn refused_names_are_never_served() {
    let s = start();
    let cache = s.cache.path();
    let outside = TempDir::new("outside");
    put(outside.path(), PKG, b"secret");
    put(cache, &format!("{PKG}.part"), b"partial");
    put(cache, &format!(".{PKG}"), b"hidden");
    put(cache, "notes.txt", b"text");
    std::fs::create_dir(cache.join("download-abc")).unwrap();
    put(&cache.join("download-abc"), PKG, b"in progress");
    symlink(
        outside.path().join(PKG),
        cache.join("out-1-1-any.pkg.tar.zst"),
    )
    .unwrap();
    symlink("/etc/passwd", cache.join("passwd-1-1-any.pkg.tar.zst")).unwrap();
    put(cache, "real-1-1-any.pkg.tar.zst", b"real");
    symlink(
        cache.join("real-1-1-any.pkg.tar.zst"),
        cache.join("link-1-1-any.pkg.tar.zst"),
    )
    .unwrap();
    symlink(
        cache.join(format!("{PKG}.part")),
        cache.join("tolink-1-1-any.pkg.tar.zst"),
    )
    .unwrap();
    std::fs::create_dir(cache.join("dir-1-1-any.pkg.tar.zst")).unwrap();

    let not_found = [
        format!("/{PKG}.part"),
        format!("/.{PKG}"),
        "/notes.txt".into(),
        format!("/download-abc/{PKG}"),
        format!("/download-abc%2F{PKG}"),
        "/out-1-1-any.pkg.tar.zst".into(),
        "/passwd-1-1-any.pkg.tar.zst".into(),
        "/tolink-1-1-any.pkg.tar.zst".into(),
        "/dir-1-1-any.pkg.tar.zst".into(),
        "/".into(),
        "/download-abc/".into(),
        "/../../../../etc/passwd".into(),
        "/%2e%2e/%2e%2e/etc/passwd".into(),
        "/..%2F..%2Fetc%2Fpasswd".into(),
        format!(
            "/..%2F{}",
            outside.path().file_name().unwrap().to_str().unwrap()
        ),
        "/core.db".into(),
    ];
    for path in &not_found {
        let r = http_get(s.addr, path, &[]);
        assert_eq!(r.status, 404, "{path} must be refused, got {r:?}");
        assert!(!r.text().contains("secret") && !r.text().contains("root:"));
    }
    for path in [
        "/a%00b-1-1-any.pkg.tar.zst",
        "/%zz",
        "/a%0a-1-1-any.pkg.tar.zst",
    ] {
        assert_eq!(http_get(s.addr, path, &[]).status, 400, "{path}");
    }
    // A symlink that stays in the cache is fine.
    let r = http_get(s.addr, "/link-1-1-any.pkg.tar.zst", &[]);
    assert_eq!((r.status, &r.body[..]), (200, &b"real"[..]));
}

#[test]
fn bad_requests_get_the_right_status_and_the_server_goes_on() {
    let s = start();
    put(s.cache.path(), PKG, b"data");
    let raw = |req: &[u8]| request(s.addr, req).unwrap();
    let r = raw(b"POST /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = raw(b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
    let r = raw(b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = raw(b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 400);
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(5000));
    assert_eq!(raw(long.as_bytes()).status, 414);
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000));
    assert_eq!(raw(big.as_bytes()).status, 431);
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(100));
    assert_eq!(raw(many.as_bytes()).status, 431);
    // Oversized head without an end: refused as soon as the limit passes.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(format!("GET / HTTP/1.1\r\nX: {}", "z".repeat(20_000)).as_bytes());
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Still serving.
    assert_eq!(http_get(s.addr, &format!("/{PKG}"), &[]).body, b"data");
}

#[test]
fn keep_alive_and_pipelining() {
    let s = start();
    put(s.cache.path(), PKG, b"0123456789");
    let mut conn = HttpConn::connect(s.addr).unwrap();
    let one = build_request(
        "GET",
        "x",
        &format!("/{PKG}"),
        &[("Connection", "keep-alive")],
    );
    let two = build_request(
        "GET",
        "x",
        &format!("/{PKG}"),
        &[("Range", "bytes=2-3"), ("Connection", "keep-alive")],
    );
    let three = build_request(
        "GET",
        "x",
        "/missing-1-1-any.pkg.tar.zst",
        &[("Connection", "keep-alive")],
    );
    let mut all = one.clone();
    all.extend_from_slice(&two);
    all.extend_from_slice(&three);
    conn.send(&all).unwrap();
    assert_eq!(conn.read_response(false).unwrap().body, b"0123456789");
    assert_eq!(conn.read_response(false).unwrap().body, b"23");
    assert_eq!(conn.read_response(false).unwrap().status, 404);
    conn.send(&one).unwrap();
    assert_eq!(conn.read_response(false).unwrap().body, b"0123456789");
}

#[test]
fn a_slow_request_head_gets_408() {
    let s = start();
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /x HTTP/1.1\r\nHost: slow\r\n").unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}

/// A connection to `to` from the loopback address `from` (127.0.0.0/8: any of them is this
/// host, so each stands for another LAN host).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from:?}: {e}"));
    socket
        .connect(&to.into())
        .unwrap_or_else(|e| panic!("connect {to} from {from:?}: {e}"));
    socket.into()
}

#[test]
fn two_hundred_idle_connections_do_not_block_a_request() {
    let s = start();
    put(s.cache.path(), PKG, b"ok");
    // From four other hosts (each under the per-address limit).
    let idle: Vec<TcpStream> = (0..200)
        .map(|i| connect_from([127, 0, 1, 1 + (i % 4) as u8], s.addr))
        .collect();
    // Half of them started a request and stopped.
    for c in idle.iter().take(100) {
        (&*c).write_all(b"GET /x HTTP/1.1\r\n").unwrap();
    }
    let started = Instant::now();
    let r = http_get(s.addr, &format!("/{PKG}"), &[]);
    assert_eq!(r.body, b"ok");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn one_address_cannot_hold_every_connection() {
    let s = start();
    put(s.cache.path(), PKG, b"ok");
    let crowd = [127, 0, 2, 1];
    let held: Vec<TcpStream> = (0..MAX_PER_ADDRESS)
        .map(|_| connect_from(crowd, s.addr))
        .collect();
    // One more from the same address: 503 at once, once the daemon holds the others.
    common::wait_until(
        "the crowded address refused",
        Duration::from_secs(5),
        || {
            let mut c = connect_from(crowd, s.addr);
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            c.write_all(format!("GET /{PKG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .ok()?;
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.1 503").then_some(())
        },
        || "no 503 yet".into(),
    );
    // Another host is served meanwhile.
    let started = Instant::now();
    let r = http_get(s.addr, &format!("/{PKG}"), &[]);
    assert_eq!(r.body, b"ok");
    assert!(started.elapsed() < Duration::from_secs(2));
    let status = s.daemon.wait_for_line(
        |l| l.contains("connections from this address already"),
        Duration::from_secs(5),
    );
    assert!(status.contains("127.0.2.1"), "{status}");
    drop(held);
    // Once they close, that address is served again.
    common::wait_until(
        "the address served again",
        Duration::from_secs(5),
        || {
            let mut c = connect_from(crowd, s.addr);
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            c.write_all(
                format!("GET /{PKG} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .ok()?;
            let mut answer = String::new();
            let _ = c.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.1 200").then_some(())
        },
        || "still refused".into(),
    );
}

#[test]
fn past_the_connection_limit_new_connections_get_503() {
    let s = start_with(TempDir::new("limit"), &["--max-connections", "3"]);
    put(s.cache.path(), PKG, b"ok");
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    // Let the daemon accept them.
    common::wait_until(
        "three connections accepted",
        Duration::from_secs(5),
        || {
            let r = request(s.addr, &build_request("GET", "x", &format!("/{PKG}"), &[])).ok()?;
            (r.status == 503).then_some(())
        },
        || "no 503 yet".into(),
    );
    drop(held);
    common::wait_until(
        "a slot freed",
        Duration::from_secs(5),
        || {
            let r = request(s.addr, &build_request("GET", "x", &format!("/{PKG}"), &[])).ok()?;
            (r.status == 200).then_some(())
        },
        || "still refused".into(),
    );
}

#[test]
fn sigusr1_logs_state_and_sigterm_stops_cleanly() {
    let mut s = start();
    put(s.cache.path(), PKG, b"ok");
    http_get(s.addr, &format!("/{PKG}"), &[]);
    s.daemon.signal(libc::SIGUSR1);
    let line = s
        .daemon
        .wait_for_line_containing("peer server:", Duration::from_secs(5));
    assert!(line.contains("1 requests, 1 files, 2 bytes sent"), "{line}");
    s.daemon
        .wait_for_line_containing("0 peers", Duration::from_secs(5));
    s.daemon.signal(libc::SIGTERM);
    let status = s.daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(s.addr).is_err(),
        "listener still open after stop"
    );
}

#[test]
fn sigint_lets_a_transfer_in_flight_finish() {
    let mut s = start();
    let data = pattern(8 << 20, 9);
    put(s.cache.path(), PKG, &data);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&build_request("GET", "x", &format!("/{PKG}"), &[]))
        .unwrap();
    let mut first = [0u8; 1024];
    c.read_exact(&mut first).unwrap();
    s.daemon.signal(libc::SIGINT);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let status = s.daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let mut whole = first.to_vec();
    whole.extend_from_slice(&rest);
    let body_at = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        whole[body_at..] == data[..],
        "transfer cut short by the stop"
    );
}
