//! The relay's upstream side against the real binary on loopback: the daemon runs on `lo`, where
//! discovery finds no peers, so every package goes to the `--upstream` mirrors (nginx, or a
//! scripted fake for what nginx will not do). Whole files and ranges byte for byte with their
//! headers, a 200 MB file in bounded memory, HEAD, keep-alive and parallel downloads, databases
//! with If-Modified-Since and a sticky mirror, failover before and in the middle of a body (with
//! the exact `Range` asked of the next mirror), stalls, chunked answers, a mirror that ignores
//! `Range`, kept-alive mirror connections, `https://` redirects (`--https redirect`; fetching
//! them is `tests/https.rs`), no upstream at all, the status
//! page, bad requests and refused names, pacman's `.part` resume, and the real pacman
//! downloading through the relay.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::fake_server::{Conn, FakeServer};
use common::http::{HttpConn, Response, build_request, request};
use common::mirror::MirrorOptions;
use common::pacman::{
    self, PacmanClient, PacmanConf, Signatures, TEST_REPO, make_package, make_repo_signed,
    same_bytes,
};
use common::relay::{Relay, relay_with};
use common::{Mirror, TempDir, free_loopback_addr, free_tcp_port, http_get};

const PKG: &str = "hello-1.0-1-x86_64.pkg.tar.zst";
const DB: &str = "testrepo.db";
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

// ---- set-up --------------------------------------------------------------------------------

/// Start the daemon on `lo` with these `--upstream` templates, in order.
fn relay(upstreams: &[String]) -> Relay {
    relay_with(upstreams, &[])
}

/// A mirror document root with `testrepo/os/x86_64/`.
struct Root {
    dir: TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = TempDir::new("relay-mirror");
        dir.mkdir(repo_dir_rel());
        Root { dir }
    }

    fn put(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.join(repo_dir_rel()).join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn mirror(&self) -> Mirror {
        Mirror::start(self.path(), None, free_loopback_addr())
    }
}

fn repo_dir_rel() -> String {
    format!("{TEST_REPO}/os/{}", pacman::ARCH)
}

/// `/testrepo/os/x86_64/<file>`.
fn url(file: &str) -> String {
    format!("/{}/{file}", repo_dir_rel())
}

/// Deterministic bytes that do not compress.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state = seed | 1;
    pacman::fill_pseudo_random(&mut out, &mut state);
    out
}

/// An upstream template for a port nobody listens on (connection refused).
fn closed_upstream() -> String {
    format!("http://127.0.0.1:{}/$repo/os/$arch", free_tcp_port())
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    http_get(addr, path, headers)
}

/// The `relay:` counters line of the status page.
fn counters(addr: SocketAddr) -> String {
    let page = get(addr, "/status", &[]).text();
    page.lines()
        .find(|l| l.starts_with("relay:"))
        .unwrap_or_else(|| panic!("no relay line in the status page:\n{page}"))
        .to_string()
}

/// Wait (bounded) until the counters line contains `want`.
#[track_caller]
fn wait_counters(addr: SocketAddr, want: &str) {
    common::wait_until(
        &format!("status counters {want:?}"),
        Duration::from_secs(5),
        || counters(addr).contains(want).then_some(()),
        || counters(addr),
    );
}

/// Response checks shared by every relayed body.
#[track_caller]
fn assert_plain_body(r: &Response, what: &str) {
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "{what}: chunked answer"
    );
    assert_eq!(
        r.content_length(),
        Some(r.body.len() as u64),
        "{what}: Content-Length does not match the body"
    );
}

// ---- scripted upstreams --------------------------------------------------------------------

/// GETs [`PKG`] through the relay with each `(Range value, expected Content-Range, expected
/// bytes of data)`; each answer must be that 206, as plain bytes. Returns the answers.
#[track_caller]
fn assert_ranges<const N: usize>(
    addr: SocketAddr,
    data: &[u8],
    cases: [(&str, String, std::ops::Range<usize>); N],
) -> Vec<Response> {
    let mut answers = Vec::new();
    for (range, content_range, slice) in cases {
        let got = get(addr, &url(PKG), &[("Range", range)]);
        assert_eq!(got.status, 206, "{range}");
        assert_eq!(
            got.header("content-range"),
            Some(content_range.as_str()),
            "{range}"
        );
        assert!(got.body == data[slice], "{range}: body differs");
        assert_plain_body(&got, range);
        answers.push(got);
    }
    answers
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a representation of `len` bytes.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: usize = b.parse().ok()?;
        return Some((len - n.min(len), len - 1));
    }
    let start: usize = a.parse().ok()?;
    let end = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().ok()?.min(len - 1)
    };
    (start <= end).then_some((start, end))
}

/// The response head and body a correct server would give for `data` (Range honoured).
fn answer_for(conn: &Conn, data: &[u8]) -> (String, std::ops::Range<usize>) {
    answer_with(conn, data, "Connection: close\r\n")
}

/// [`answer_for`] with other fields (each ending in CRLF) in place of `Connection: close`.
fn answer_with(conn: &Conn, data: &[u8], fields: &str) -> (String, std::ops::Range<usize>) {
    match conn
        .header("range")
        .and_then(|r| parse_range(r, data.len()))
    {
        Some((a, b)) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\nLast-Modified: {LAST_MODIFIED}\r\n{fields}\r\n",
                b + 1 - a,
                data.len()
            ),
            a..b + 1,
        ),
        None => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\n{fields}\r\n",
                data.len()
            ),
            0..data.len(),
        ),
    }
}

/// Answers correctly (head with the full length) but sends only `cut` body bytes, then closes.
fn cut_short(data: Arc<Vec<u8>>, cut: usize) -> impl Fn(Conn) + Send + Sync + 'static {
    move |mut conn: Conn| {
        let (head, span) = answer_for(&conn, &data);
        let body = &data[span];
        conn.send(head.as_bytes());
        conn.send(&body[..cut.min(body.len())]);
    }
}

/// Answers correctly but stops after `cut` body bytes and holds the connection open.
fn stall_after(data: Arc<Vec<u8>>, cut: usize) -> impl Fn(Conn) + Send + Sync + 'static {
    move |mut conn: Conn| {
        let (head, span) = answer_for(&conn, &data);
        let body = &data[span];
        conn.send(head.as_bytes());
        conn.send(&body[..cut.min(body.len())]);
        conn.stall(Duration::from_secs(30));
    }
}

/// How a keep-alive fake mirror treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeepAlive {
    /// Answers every request on the connection.
    Always,
    /// Answers (saying nothing about closing) and then closes.
    CloseAfterEach,
    /// Answers the first request; at the second on the same connection, closes unanswered.
    DropSecond,
}

/// A keep-alive mirror of `files` (by file name at the end of the target); 404 for others.
fn keep_alive_mirror(
    files: Arc<Vec<(String, Vec<u8>)>>,
    mode: KeepAlive,
) -> impl Fn(&mut Conn) -> bool + Send + Sync + 'static {
    move |conn: &mut Conn| {
        if mode == KeepAlive::DropSecond && conn.earlier > 0 {
            return false;
        }
        let target = conn.target().to_string();
        let found = files
            .iter()
            .find(|(name, _)| target.ends_with(&format!("/{name}")));
        let Some((_, data)) = found else {
            return conn.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        };
        let (head, span) = answer_with(conn, data, "");
        // Head and body in one write, as nginx does for small files.
        let mut out = head.into_bytes();
        if !conn.head.starts_with("HEAD ") {
            out.extend_from_slice(&data[span]);
        }
        conn.send(&out) && mode == KeepAlive::Always
    }
}

/// Reads the request and never answers.
fn silent(conn: Conn) {
    conn.stall(Duration::from_secs(30));
}

fn answers_500(mut conn: Conn) {
    conn.send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\nConnection: close\r\n\r\nboom!\n");
}

/// The whole file with 200 whatever the Range (a server that does not do ranges).
fn ignores_range(data: Arc<Vec<u8>>) -> impl Fn(Conn) + Send + Sync + 'static {
    move |mut conn: Conn| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        );
        conn.send(head.as_bytes());
        conn.send(&data);
    }
}

/// The whole file, chunked.
fn chunked(data: Arc<Vec<u8>>) -> impl Fn(Conn) + Send + Sync + 'static {
    move |mut conn: Conn| {
        let mut out =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for piece in data.chunks(4096) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        conn.send(&out);
    }
}

/// The whole file, `step` bytes every `every`.
fn trickle(
    data: Arc<Vec<u8>>,
    step: usize,
    every: Duration,
) -> impl Fn(Conn) + Send + Sync + 'static {
    move |mut conn: Conn| {
        let (head, span) = answer_for(&conn, &data);
        if !conn.send(head.as_bytes()) {
            return;
        }
        for piece in data[span].chunks(step) {
            if conn.stopped() || !conn.send(piece) {
                return;
            }
            thread::sleep(every);
        }
    }
}

// ---- whole files, ranges, HEAD, keep-alive -------------------------------------------------

#[test]
fn whole_files_and_ranges_pass_through_byte_for_byte() {
    let root = Root::new();
    let data = pattern(1_000_000, 1);
    root.put(PKG, &data);
    root.put(&format!("{PKG}.sig"), &data[..566]);
    let epoch = "libc++-1:17.0.6-1-x86_64.pkg.tar.zst";
    root.put(epoch, &data[..4096]);
    root.put("empty-1-1-any.pkg.tar.zst", b"");
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);

    let direct = get(mirror.addr(), &url(PKG), &[]);
    let lm = direct.header("last-modified").unwrap().to_string();
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == data, "whole body differs");
    assert_plain_body(&got, "whole file");
    assert_eq!(got.header("last-modified"), Some(lm.as_str()));

    // pacman's `localhost` may be [::1]: the relay listens there too.
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, r.addr.port()));
    if r.daemon
        .find_line(|l| l.contains(&format!("listening on TCP {v6}")))
        .is_some()
    {
        let got = get(v6, &url(PKG), &[]);
        assert_eq!(got.status, 200);
        assert!(got.body == data, "body over [::1] differs");
    }

    let sig = get(r.addr, &url(&format!("{PKG}.sig")), &[]);
    assert_eq!((sig.status, &sig.body[..]), (200, &data[..566]));

    let len = data.len();
    let cases: [(&str, String, std::ops::Range<usize>); 5] = [
        ("bytes=0-99", format!("bytes 0-99/{len}"), 0..100),
        (
            "bytes=123456-234567",
            format!("bytes 123456-234567/{len}"),
            123_456..234_568,
        ),
        (
            "bytes=999000-",
            format!("bytes 999000-999999/{len}"),
            999_000..len,
        ),
        (
            "bytes=-10",
            format!("bytes 999990-999999/{len}"),
            len - 10..len,
        ),
        (
            "bytes=500000-99999999",
            format!("bytes 500000-999999/{len}"),
            500_000..len,
        ),
    ];
    for got in assert_ranges(r.addr, &data, cases) {
        assert_eq!(got.header("last-modified"), Some(lm.as_str()));
    }
    // Past the end: the mirror's 416 is passed on.
    let got = get(r.addr, &url(PKG), &[("Range", "bytes=1000000-")]);
    assert_eq!(got.status, 416);

    // Epoch ':' and '+' reach the mirror as pacman sends them, also when the client encoded them.
    for path in [
        url(epoch),
        url("libc%2B%2B-1%3A17.0.6-1-x86_64.pkg.tar.zst"),
    ] {
        let got = get(r.addr, &path, &[]);
        assert_eq!((got.status, &got.body[..]), (200, &data[..4096]), "{path}");
    }
    assert_eq!(
        mirror.request_count(&url(epoch)),
        2,
        "{:?}",
        mirror.requested_paths()
    );

    let got = get(r.addr, &url("empty-1-1-any.pkg.tar.zst"), &[]);
    assert_eq!(
        (got.status, got.content_length(), got.body.len()),
        (200, Some(0), 0)
    );

    // Every request above went to the mirror once, with the ranges as pacman sent them.
    let log = mirror.access_log();
    for range in ["bytes=0-99", "bytes=-10", "bytes=999000-"] {
        assert!(
            log.iter().any(|e| e.uri == url(PKG) && e.range == range),
            "{range} not asked of the mirror: {log:?}"
        );
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_200_mb_package_streams_in_bounded_memory() {
    let root = Root::new();
    let len = 200 * 1024 * 1024 + 321;
    let data = pattern(len, 7);
    root.put(PKG, &data);
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    let mut conn = HttpConn::connect_timeout(r.addr, Duration::from_secs(60)).unwrap();
    conn.send(&build_request(
        "GET",
        "localhost",
        &url(PKG),
        &[("Connection", "keep-alive")],
    ))
    .unwrap();
    let got = conn.read_response(false).unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.content_length(), Some(len as u64));
    assert_eq!(got.header("transfer-encoding"), None);
    assert!(got.body == data, "200 MB body differs");
    drop(got);
    let from = 150 * 1024 * 1024 + 11;
    conn.send(&build_request(
        "GET",
        "localhost",
        &url(PKG),
        &[("Range", &format!("bytes={from}-"))],
    ))
    .unwrap();
    let got = conn.read_response(false).unwrap();
    assert_eq!(got.status, 206);
    assert_eq!(
        got.header("content-range").unwrap(),
        format!("bytes {from}-{}/{len}", len - 1)
    );
    assert!(got.body == data[from..], "ranged body differs");
    let hwm = vm_hwm_kib(r.daemon.pid());
    eprintln!("daemon VmHWM after 2 transfers of 200 MB and 50 MB: {hwm} KiB");
    assert!(
        hwm < 32 * 1024,
        "daemon peak memory {hwm} KiB for a 200 MB transfer"
    );
    wait_counters(
        r.addr,
        &format!("2 files ({} bytes) from upstream", len + len - from),
    );
}

#[test]
fn a_head_request_gets_the_mirrors_headers_and_no_body() {
    let root = Root::new();
    let data = pattern(12_345, 2);
    root.put(PKG, &data);
    root.put(DB, &data[..999]);
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    for file in [PKG, DB] {
        let direct = common::http::http_head(mirror.addr(), &url(file), &[]);
        let mut conn = HttpConn::connect(r.addr).unwrap();
        let got = head_on(&mut conn, file);
        assert_eq!(got.status, 200, "{file}");
        assert_eq!(
            got.header("last-modified"),
            direct.header("last-modified"),
            "{file}"
        );
        assert_eq!(
            got.content_length(),
            direct.content_length(),
            "{file}: HEAD through the relay must give the file's length like the mirror does: {:?}",
            got.header_list
        );
        // No body came: the next response on the connection starts right away.
        conn.send(&build_request("GET", "localhost", &url(file), &[]))
            .unwrap();
        let next = conn.read_response(false).unwrap();
        assert_eq!(next.status, 200, "{file}");
        assert_eq!(next.body.len(), direct.content_length().unwrap() as usize);
    }
    let log = mirror.access_log();
    assert!(
        log.iter().any(|e| e.method == "HEAD" && e.uri == url(PKG)),
        "{log:?}"
    );
}

#[test]
fn keep_alive_and_pipelining_carry_several_requests() {
    let root = Root::new();
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let name = format!("pkg{i}-1.0-1-x86_64.pkg.tar.zst");
            let data = pattern(100_000 + i * 77_777, 10 + i as u64);
            root.put(&name, &data);
            root.put(&format!("{name}.sig"), &data[..300]);
            (name, data)
        })
        .collect();
    root.put(DB, b"database");
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    let ka = [("Connection", "keep-alive")];
    let mut conn = HttpConn::connect(r.addr).unwrap();
    // One after another, as pacman does on one connection.
    for (name, data) in &files {
        conn.send(&build_request("GET", "localhost", &url(name), &ka))
            .unwrap();
        let got = conn.read_response(false).unwrap();
        assert_eq!(got.status, 200, "{name}");
        assert!(got.body == *data, "{name}: body differs");
        assert_ne!(got.header("connection"), Some("close"));
        let sig = format!("{name}.sig");
        conn.send(&build_request("GET", "localhost", &url(&sig), &ka))
            .unwrap();
        let got = conn.read_response(false).unwrap();
        assert_eq!((got.status, &got.body[..]), (200, &data[..300]), "{sig}");
    }
    // A 404 keeps the connection too.
    conn.send(&build_request(
        "GET",
        "localhost",
        &url("missing-1-1-x86_64.pkg.tar.zst"),
        &ka,
    ))
    .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 404);
    // Pipelined: all at once, answered in order.
    let mut all = Vec::new();
    for (name, _) in &files {
        all.extend(build_request("GET", "localhost", &url(name), &ka));
    }
    all.extend(build_request(
        "GET",
        "localhost",
        &url(&files[1].0),
        &[("Range", "bytes=10-19"), ("Connection", "keep-alive")],
    ));
    all.extend(build_request("GET", "localhost", &url(DB), &[]));
    conn.send(&all).unwrap();
    for (name, data) in &files {
        let got = conn.read_response(false).unwrap();
        assert!(got.body == *data, "pipelined {name}: body differs");
    }
    let got = conn.read_response(false).unwrap();
    assert_eq!((got.status, &got.body[..]), (206, &files[1].1[10..20]));
    let got = conn.read_response(false).unwrap();
    assert_eq!((got.status, &got.body[..]), (200, &b"database"[..]));
    // The last request said Connection: close.
    let mut rest = Vec::new();
    conn.stream().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn five_parallel_downloads() {
    let root = Root::new();
    let files: Vec<(String, Arc<Vec<u8>>)> = (0..5)
        .map(|i| {
            let name = format!("par{i}-2.0-1-x86_64.pkg.tar.zst");
            let data = pattern(3_000_000 + i * 100_003, 20 + i as u64);
            root.put(&name, &data);
            (name, Arc::new(data))
        })
        .collect();
    // Slow enough that the five overlap.
    let mirror = Mirror::start_with(
        root.path(),
        None,
        free_loopback_addr(),
        &MirrorOptions {
            limit_rate: Some(4_000_000),
            ..MirrorOptions::default()
        },
    );
    let r = relay(&[mirror.server_url()]);
    let started = Instant::now();
    let threads: Vec<_> = files
        .iter()
        .map(|(name, data)| {
            let (name, data, addr) = (name.clone(), Arc::clone(data), r.addr);
            thread::spawn(move || {
                let got = get(addr, &url(&name), &[]);
                assert_eq!(got.status, 200, "{name}");
                assert!(got.body == *data, "{name}: body differs");
            })
        })
        .collect();
    // While they run, the status page lists them.
    common::wait_until(
        "several transfers in flight",
        Duration::from_secs(5),
        || {
            let page = get(r.addr, "/status", &[]).text();
            let n = files
                .iter()
                .filter(|(n, _)| page.contains(n.as_str()))
                .count();
            (n >= 3).then_some(())
        },
        || get(r.addr, "/status", &[]).text(),
    );
    for t in threads {
        t.join().unwrap();
    }
    // About 0.8 s each at 4 MB/s; one after another would take over 4 s.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "parallel downloads took {:?}",
        started.elapsed()
    );
    wait_counters(r.addr, "5 files");
}

// ---- databases -----------------------------------------------------------------------------

#[test]
fn databases_come_from_upstream_with_if_modified_since() {
    let root = Root::new();
    let db = pattern(20_000, 3);
    root.put(DB, &db);
    root.put("testrepo.files", &db[..5000]);
    root.put("testrepo.db.sig", &db[..119]);
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);

    let got = get(r.addr, &url(DB), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == db);
    assert_plain_body(&got, DB);
    let lm = got
        .header("last-modified")
        .expect("a database needs Last-Modified")
        .to_string();
    let direct = get(mirror.addr(), &url(DB), &[]);
    assert_eq!(direct.header("last-modified"), Some(lm.as_str()));

    let got = get(r.addr, &url(DB), &[("If-Modified-Since", &lm)]);
    assert_eq!((got.status, got.body.len()), (304, 0));
    assert_eq!(got.header("transfer-encoding"), None);
    let got = get(
        r.addr,
        &url(DB),
        &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    );
    assert_eq!(got.status, 200);
    assert!(got.body == db);

    // A 304 on a kept-alive connection leaves it usable.
    let mut conn = HttpConn::connect(r.addr).unwrap();
    conn.send(&build_request(
        "GET",
        "localhost",
        &url(DB),
        &[("If-Modified-Since", &lm), ("Connection", "keep-alive")],
    ))
    .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 304);
    conn.send(&build_request(
        "GET",
        "localhost",
        &url("testrepo.files"),
        &[],
    ))
    .unwrap();
    let got = conn.read_response(false).unwrap();
    assert_eq!((got.status, &got.body[..]), (200, &db[..5000]));
    let got = get(r.addr, &url("testrepo.db.sig"), &[]);
    assert_eq!((got.status, &got.body[..]), (200, &db[..119]));

    let log = mirror.access_log();
    let db_statuses: Vec<u16> = log
        .iter()
        .filter(|e| e.uri == url(DB) && e.user_agent.starts_with("flocon/"))
        .map(|e| e.status)
        .collect();
    assert_eq!(db_statuses, [200, 304, 200, 304], "{log:?}");
    assert!(
        log.iter()
            .any(|e| e.uri == url("testrepo.db.sig") && e.status == 200)
    );
}

#[test]
fn databases_stick_to_one_mirror_while_it_works() {
    let root_a = Root::new();
    let root_b = Root::new();
    let (db_a, db_b) = (pattern(3000, 31), pattern(3000, 32));
    root_a.put(DB, &db_a);
    root_b.put(DB, &db_b);
    root_a.put("testrepo.files", &db_a[..100]);
    root_b.put("testrepo.files", &db_b[..100]);
    let (pkg_a, pkg_b) = (pattern(5000, 33), pattern(5000, 34));
    root_a.put(PKG, &pkg_a);
    root_b.put(PKG, &pkg_b);
    let addr_a = free_loopback_addr();
    let mut mirror_a = Mirror::start(root_a.path(), None, addr_a);
    let mirror_b = root_b.mirror();
    let r = relay(&[mirror_a.server_url(), mirror_b.server_url()]);

    for _ in 0..3 {
        assert!(get(r.addr, &url(DB), &[]).body == db_a);
        assert!(get(r.addr, &url("testrepo.files"), &[]).body == db_a[..100]);
    }
    assert_eq!(mirror_a.request_count(&url(DB)), 3);
    assert!(
        mirror_b.access_log().is_empty(),
        "{:?}",
        mirror_b.access_log()
    );

    // The first goes down: the second answers, and stays the one after the first is back.
    mirror_a.process().kill();
    for _ in 0..3 {
        let got = get(r.addr, &url(DB), &[]);
        assert_eq!(got.status, 200);
        assert!(got.body == db_b, "database not from the second mirror");
    }
    let mirror_a2 = Mirror::start(root_a.path(), None, addr_a);
    for _ in 0..3 {
        let got = get(r.addr, &url(DB), &[]);
        assert!(
            got.body == db_b,
            "database went back to the first mirror after it came back"
        );
        assert!(get(r.addr, &url("testrepo.files"), &[]).body == db_b[..100]);
    }
    assert_eq!(mirror_b.request_count(&url(DB)), 6);
    assert_eq!(
        mirror_a2.request_count(&url(DB)),
        0,
        "{:?}",
        mirror_a2.access_log()
    );
    // Packages are not sticky: they go to the first mirror that works.
    assert!(get(r.addr, &url(PKG), &[]).body == pkg_a);
    assert_eq!(mirror_a2.request_count(&url(PKG)), 1);
}

// ---- failover before the first byte --------------------------------------------------------

#[test]
fn failover_before_the_first_byte() {
    let root = Root::new();
    let data = pattern(200_000, 4);
    root.put(PKG, &data);
    root.put(DB, &data[..1000]);
    let good = root.mirror();
    let empty_root = Root::new();
    let empty = empty_root.mirror();
    let broken = FakeServer::start(answers_500);

    // Connection refused, a 500, a 404: each time the next upstream serves it.
    for first in [closed_upstream(), broken.server_url(), empty.server_url()] {
        let r = relay(&[first.clone(), good.server_url()]);
        for file in [PKG, DB] {
            let got = get(r.addr, &url(file), &[]);
            assert_eq!(got.status, 200, "{file} with {first} first");
            assert!(
                got.body[..] == data[..got.body.len()] && got.body.len() >= 1000,
                "{file} with {first} first: wrong body"
            );
        }
    }
    assert_eq!(broken.targets(), [url(PKG), url(DB)]);
    assert_eq!(empty.request_count(&url(PKG)), 1);

    // Every upstream says 404: 404 (after asking each).
    let empty_root2 = Root::new();
    let empty2 = empty_root2.mirror();
    let r = relay(&[empty.server_url(), empty2.server_url()]);
    let missing = "missing-1-1-x86_64.pkg.tar.zst";
    let got = get(r.addr, &url(missing), &[]);
    assert_eq!(got.status, 404);
    assert_eq!(empty.request_count(&url(missing)), 1);
    assert_eq!(empty2.request_count(&url(missing)), 1);
    assert_eq!(get(r.addr, &url("other.db"), &[]).status, 404);

    // Every upstream fails: 502.
    let r = relay(&[closed_upstream(), broken.server_url()]);
    for file in [PKG, DB, "missing-1-1-x86_64.pkg.tar.zst"] {
        let got = get(r.addr, &url(file), &[]);
        assert_eq!(got.status, 502, "{file}");
    }
}

#[test]
fn an_upstream_that_ignores_range_is_cut_to_the_range() {
    let len = 100_000;
    let data = Arc::new(pattern(len, 14));
    let whole = FakeServer::start(ignores_range(Arc::clone(&data)));
    let r = relay(&[whole.server_url()]);
    let cases: [(&str, String, std::ops::Range<usize>); 4] = [
        ("bytes=0-99", format!("bytes 0-99/{len}"), 0..100),
        (
            "bytes=65536-",
            format!("bytes 65536-99999/{len}"),
            65_536..len,
        ),
        (
            "bytes=-10",
            format!("bytes 99990-99999/{len}"),
            len - 10..len,
        ),
        (
            "bytes=5000-9999999",
            format!("bytes 5000-99999/{len}"),
            5000..len,
        ),
    ];
    assert_ranges(r.addr, &data, cases);
    let got = get(r.addr, &url(PKG), &[("Range", &format!("bytes={len}-"))]);
    assert_eq!(got.status, 416);
    assert_eq!(
        got.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == *data);
}

#[test]
fn a_silent_upstream_is_left_within_five_seconds() {
    let root = Root::new();
    let data = pattern(300_000, 5);
    root.put(PKG, &data);
    root.put(DB, &data[..2000]);
    let good = root.mirror();
    let quiet = FakeServer::start(silent);
    let r = relay(&[quiet.server_url(), good.server_url()]);
    let started = Instant::now();
    let got = get(r.addr, &url(PKG), &[]);
    let took = started.elapsed();
    assert_eq!(got.status, 200);
    assert!(got.body == data);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(6500),
        "moved on after {took:?}"
    );
    assert_eq!(quiet.targets(), [url(PKG)]);
    assert_eq!(good.request_count(&url(PKG)), 1);
}

#[test]
fn a_chunked_upstream_is_skipped() {
    let root = Root::new();
    let data = Arc::new(pattern(50_000, 6));
    root.put(PKG, &data);
    let good = root.mirror();
    let chunky = FakeServer::start(chunked(Arc::clone(&data)));
    let r = relay(&[chunky.server_url(), good.server_url()]);
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == *data);
    assert_plain_body(&got, "after a chunked upstream");
    assert_eq!(chunky.targets(), [url(PKG)]);
    assert_eq!(good.request_count(&url(PKG)), 1);

    let r = relay(&[chunky.server_url()]);
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 502, "{got:?}");
}

/// GETs `name`, on `conn` (kept alive, as pacman asks on one connection) or, without one, on
/// a new connection of its own (as separate pacman runs do).
fn get_on(
    conn: Option<&mut HttpConn>,
    addr: SocketAddr,
    name: &str,
    headers: &[(&str, &str)],
) -> Response {
    match conn {
        Some(conn) => {
            let mut fields = vec![("Connection", "keep-alive")];
            fields.extend_from_slice(headers);
            conn.send(&build_request("GET", "localhost", &url(name), &fields))
                .unwrap();
            conn.read_response(false).unwrap()
        }
        None => get(addr, &url(name), headers),
    }
}

/// HEAD of `name` on `conn`, kept alive.
fn head_on(conn: &mut HttpConn, name: &str) -> Response {
    conn.send(&build_request(
        "HEAD",
        "localhost",
        &url(name),
        &[("Connection", "keep-alive")],
    ))
    .unwrap();
    conn.read_response(true).unwrap()
}

#[test]
fn upstream_connections_are_kept_alive_and_reused() {
    let files = Arc::new(vec![
        (PKG.to_string(), pattern(70_000, 40)),
        (format!("{PKG}.sig"), pattern(119, 41)),
        (DB.to_string(), pattern(3000, 42)),
        ("small-1-1-any.pkg.tar.zst".to_string(), pattern(2000, 45)),
    ]);
    let requests = |addr: SocketAddr, mut conn: Option<&mut HttpConn>| {
        let mut sent = 0;
        for (name, data) in files.iter().cycle().take(files.len() * 3) {
            let got = get_on(conn.as_deref_mut(), addr, name, &[]);
            assert_eq!(got.status, 200, "{name}");
            assert!(got.body == *data, "{name}: body differs");
            sent += 1;
        }
        let got = get_on(conn, addr, PKG, &[("Range", "bytes=100-199")]);
        assert!(got.body == files[0].1[100..200]);
        sent + 1
    };

    // One mirror connection carries every request, one after another: from one pacman
    // connection to the next (through the relay's pool), and along one pacman connection
    // (kept by it between its requests).
    for one_connection in [false, true] {
        let mirror =
            FakeServer::start_keep_alive(keep_alive_mirror(Arc::clone(&files), KeepAlive::Always));
        let r = relay(&[mirror.server_url()]);
        let mut conn = one_connection.then(|| HttpConn::connect(r.addr).unwrap());
        let mut n = requests(r.addr, conn.as_mut());
        // Then a second pacman connection: it takes the mirror connection the first one
        // kept (handed to the pool when the first closed).
        drop(conn);
        if one_connection {
            let mut second = HttpConn::connect(r.addr).unwrap();
            n += requests(r.addr, Some(&mut second));
        }
        assert_eq!(mirror.heads().len(), n);
        assert_eq!(
            mirror.connections(),
            1,
            "{n} requests one after another to one mirror should share one kept-alive \
             connection (one pacman connection: {one_connection})"
        );
        wait_counters(r.addr, "0 failures, 0 failovers");
    }
}

#[test]
fn a_kept_alive_upstream_connection_that_closed_is_replaced_quietly() {
    let files = Arc::new(vec![
        (PKG.to_string(), pattern(70_000, 43)),
        (DB.to_string(), pattern(3000, 44)),
    ]);
    for one_connection in [false, true] {
        for mode in [KeepAlive::CloseAfterEach, KeepAlive::DropSecond] {
            let mirror = FakeServer::start_keep_alive(keep_alive_mirror(Arc::clone(&files), mode));
            let r = relay(&[mirror.server_url()]);
            let mut conn = one_connection.then(|| HttpConn::connect(r.addr).unwrap());
            for round in 0..3 {
                for (name, data) in files.iter() {
                    let got = get_on(conn.as_mut(), r.addr, name, &[]);
                    assert_eq!(got.status, 200, "{name}, {mode:?}, round {round}");
                    assert!(got.body == *data, "{name}: body differs");
                }
            }
            wait_counters(r.addr, "6 files");
            wait_counters(r.addr, "0 failures, 0 failovers");
        }
    }
}

#[test]
fn an_upstream_404_on_a_kept_alive_connection_is_asked_once_and_keeps_it() {
    let files = Arc::new(vec![(PKG.to_string(), pattern(70_000, 46))]);
    let missing = "missing-1-1-x86_64.pkg.tar.zst";
    for one_connection in [false, true] {
        let mirror =
            FakeServer::start_keep_alive(keep_alive_mirror(Arc::clone(&files), KeepAlive::Always));
        let r = relay(&[mirror.server_url()]);
        let mut conn = one_connection.then(|| HttpConn::connect(r.addr).unwrap());
        // A 200 that leaves a kept-alive connection, then misses and hits on it (as pacman's
        // `-Sy` asks `*.db.sig` that the mirror does not have).
        let mut asked = Vec::new();
        for round in 0..3 {
            let got = get_on(conn.as_mut(), r.addr, PKG, &[]);
            assert_eq!(got.status, 200, "round {round}");
            assert!(got.body == files[0].1, "round {round}: body differs");
            asked.push(url(PKG));
            for name in [missing, "missing.db.sig"] {
                let got = get_on(conn.as_mut(), r.addr, name, &[]);
                assert_eq!(got.status, 404, "{name}, round {round}");
                asked.push(url(name));
            }
        }
        assert_eq!(
            mirror.targets(),
            asked,
            "every request asked of the mirror exactly once (one pacman connection: \
             {one_connection})"
        );
        assert_eq!(
            mirror.connections(),
            1,
            "a 404 read to its end leaves its connection for the next request (one pacman \
             connection: {one_connection})"
        );
        wait_counters(r.addr, "0 failures, 0 failovers");
    }
}

#[test]
fn every_answer_read_to_its_end_keeps_the_mirror_connection() {
    let data = Arc::new(pattern(5000, 48));
    let moved = "moved-1-1-x86_64.pkg.tar.zst";
    let missing = "missing-1-1-x86_64.pkg.tar.zst";
    let answers = Arc::clone(&data);
    let mirror = FakeServer::start_keep_alive(move |conn: &mut Conn| {
        let target = conn.target().to_string();
        let out = if target.ends_with(&format!("/{moved}")) {
            b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/x\r\nContent-Length: 0\r\n\r\n"
                .to_vec()
        } else if target.ends_with(&format!("/{DB}")) && conn.header("if-modified-since").is_some()
        {
            format!("HTTP/1.1 304 Not Modified\r\nLast-Modified: {LAST_MODIFIED}\r\n\r\n")
                .into_bytes()
        } else if target.ends_with(&format!("/{PKG}")) || target.ends_with(&format!("/{DB}")) {
            let (head, span) = answer_with(conn, &answers, "");
            let mut out = head.into_bytes();
            if !conn.head.starts_with("HEAD ") {
                out.extend_from_slice(&answers[span]);
            }
            out
        } else {
            // A 404 with a small body, all in the same segment as its head.
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n".to_vec()
        };
        conn.send(&out)
    });
    let r = relay(&[mirror.server_url()]);
    let mut conn = HttpConn::connect(r.addr).unwrap();
    let ims = [("If-Modified-Since", LAST_MODIFIED)];
    let range = [("Range", "bytes=100-199")];
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let gets: [(&str, Fields, u16); 6] = [
        (PKG, &[], 200),
        (PKG, &range, 206),
        (DB, &ims, 304),
        (missing, &[], 404),
        (moved, &[], 302),
        (DB, &[], 200),
    ];
    for round in 0..2 {
        for (name, headers, status) in gets {
            let got = get_on(Some(&mut conn), r.addr, name, headers);
            assert_eq!(got.status, status, "{name} {headers:?}, round {round}");
            if status == 206 {
                assert!(got.body == data[100..200]);
            }
        }
        let got = head_on(&mut conn, PKG);
        assert_eq!(got.status, 200, "HEAD, round {round}");
    }
    assert_eq!(mirror.heads().len(), 2 * (gets.len() + 1));
    assert_eq!(
        mirror.connections(),
        1,
        "200, 206, 304, 404, 302 and HEAD answers read to their end all leave the mirror \
         connection for the next request"
    );
    wait_counters(r.addr, "0 failures, 0 failovers");
}

#[test]
fn a_source_closed_mid_body_is_left_within_milliseconds() {
    let len = 300_000;
    let data = Arc::new(pattern(len, 47));
    let files = Arc::new(vec![(PKG.to_string(), data.to_vec())]);
    let good = FakeServer::start_keep_alive(keep_alive_mirror(files, KeepAlive::Always));
    // Cut at several places, so that the end of file arrives with the last body bytes in
    // some runs and after them in others.
    for cut in [1000, 65_536 + 17, len / 2] {
        let cutter = FakeServer::start(cut_short(Arc::clone(&data), cut));
        let r = relay(&[cutter.server_url(), good.server_url()]);
        let started = Instant::now();
        let got = get(r.addr, &url(PKG), &[]);
        let took = started.elapsed();
        assert_eq!(got.status, 200, "cut at {cut}");
        assert!(got.body == *data, "cut at {cut}: continued body differs");
        assert!(
            took < Duration::from_millis(1500),
            "cut at {cut}: the source's end of file was noticed after {took:?} (the stall \
             timeout is 4 s)"
        );
        let last = good.heads().last().cloned().unwrap_or_default();
        assert_eq!(
            common::fake_server::header_of(&last, "range"),
            Some(format!("bytes={cut}-{}", len - 1).as_str())
        );
    }
}

// ---- failover in the middle of a body ------------------------------------------------------

/// The only `flocon/` request for `path` in the mirror's log, waited for.
fn continuation_range(mirror: &Mirror, path: &str) -> String {
    let log = mirror.access_log();
    let asked: Vec<_> = log.iter().filter(|e| e.uri == path).collect();
    assert_eq!(asked.len(), 1, "{log:?}");
    asked[0].range.clone()
}

#[test]
fn a_body_cut_short_continues_from_the_next_upstream_with_a_range() {
    let len = 300_000;
    let data = Arc::new(pattern(len, 7));
    let root = Root::new();
    root.put(PKG, &data);
    let good = root.mirror();
    let half = len / 2;
    let cutter = FakeServer::start(cut_short(Arc::clone(&data), half));
    let r = relay(&[cutter.server_url(), good.server_url()]);

    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.content_length(), Some(len as u64));
    assert!(got.body == *data, "continued body differs");
    assert_eq!(got.header("last-modified"), Some(LAST_MODIFIED));
    assert_eq!(
        continuation_range(&good, &url(PKG)),
        format!("bytes={half}-{}", len - 1)
    );
    assert_eq!(
        common::fake_server::header_of(&cutter.heads()[0], "range"),
        None
    );
    wait_counters(
        r.addr,
        &format!(
            "1 files ({len} bytes) from upstream, 0 redirects, 0 not found, 1 failures, 1 failovers"
        ),
    );

    // A ranged request (pacman resuming a .part) cut short: the rest of that range.
    good.clear_access_log();
    let from = 100_000;
    let got = get(r.addr, &url(PKG), &[("Range", &format!("bytes={from}-"))]);
    assert_eq!(got.status, 206);
    assert_eq!(
        got.header("content-range"),
        Some(format!("bytes {from}-{}/{len}", len - 1).as_str())
    );
    assert!(got.body == data[from..], "continued range differs");
    assert_eq!(
        continuation_range(&good, &url(PKG)),
        format!("bytes={}-{}", from + half, len - 1)
    );
    assert_eq!(
        common::fake_server::header_of(&cutter.heads()[1], "range"),
        Some(format!("bytes={from}-").as_str())
    );
}

#[test]
fn a_body_that_stalls_continues_from_the_next_upstream() {
    let len = 400_000;
    let data = Arc::new(pattern(len, 8));
    let root = Root::new();
    root.put(PKG, &data);
    let good = root.mirror();
    let half = len / 2 + 17;
    let staller = FakeServer::start(stall_after(Arc::clone(&data), half));
    let r = relay(&[staller.server_url(), good.server_url()]);
    let started = Instant::now();
    let got = get(r.addr, &url(PKG), &[]);
    let took = started.elapsed();
    assert_eq!(got.status, 200);
    assert!(got.body == *data, "continued body differs");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(6500),
        "gave up on the stalled upstream after {took:?}"
    );
    assert_eq!(
        continuation_range(&good, &url(PKG)),
        format!("bytes={half}-{}", len - 1)
    );
}

/// Reads a response that is expected to end early: the head, then body bytes until the relay
/// closes. Returns the head and the body bytes received.
fn read_until_closed(addr: SocketAddr, path: &str) -> (Response, Vec<u8>, Duration) {
    let mut conn = HttpConn::connect_timeout(addr, Duration::from_secs(15)).unwrap();
    let started = Instant::now();
    conn.send(&build_request(
        "GET",
        "localhost",
        path,
        &[("Connection", "keep-alive")],
    ))
    .unwrap();
    let head = conn.read_head().unwrap();
    let want = head.content_length().unwrap() as usize;
    let body = conn.read_body_bytes(want).unwrap();
    (head, body, started.elapsed())
}

#[test]
fn a_failing_body_with_no_source_left_closes_the_connection() {
    let len = 200_000;
    let data = Arc::new(pattern(len, 9));
    let half = len / 2;

    // Only a cutting upstream.
    let cutter = FakeServer::start(cut_short(Arc::clone(&data), half));
    let r = relay(&[cutter.server_url()]);
    let (head, body, _) = read_until_closed(r.addr, &url(PKG));
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), Some(len as u64));
    assert_eq!(body.len(), half, "expected a short body and a close");
    assert!(body == data[..half]);

    // Only a stalling upstream: closed after the stall timeout.
    let staller = FakeServer::start(stall_after(Arc::clone(&data), half));
    let r = relay(&[staller.server_url()]);
    let (head, body, took) = read_until_closed(r.addr, &url(PKG));
    assert_eq!(head.status, 200);
    assert_eq!(body.len(), half);
    assert!(body == data[..half]);
    assert!(took < Duration::from_millis(6500), "{took:?}");

    // The next upstream does not have it: closed after the first half.
    let empty_root = Root::new();
    let empty = empty_root.mirror();
    let r = relay(&[cutter.server_url(), empty.server_url()]);
    let (head, body, _) = read_until_closed(r.addr, &url(PKG));
    assert_eq!(head.status, 200);
    assert_eq!(body.len(), half, "expected a short body and a close");
    assert!(body == data[..half], "wrong bytes");
    // The next upstream ignores the Range and sends the whole file from byte 0: those bytes
    // must not be appended (closing, or cutting out the missing part, are both right).
    let whole = FakeServer::start(ignores_range(Arc::clone(&data)));
    let r = relay(&[cutter.server_url(), whole.server_url()]);
    let (head, body, _) = read_until_closed(r.addr, &url(PKG));
    assert_eq!(head.status, 200);
    assert!(
        body.len() >= half && body == data[..body.len()],
        "wrong bytes after a continuation that ignored the Range ({} bytes)",
        body.len()
    );
    assert_eq!(
        common::fake_server::header_of(&whole.heads()[0], "range"),
        Some(format!("bytes={half}-{}", len - 1).as_str())
    );
    // The daemon keeps serving.
    let got = get(r.addr, "/status", &[]);
    assert_eq!(got.status, 200);
}

// ---- redirects -----------------------------------------------------------------------------

#[test]
fn https_upstreams_get_a_redirect_with_https_redirect() {
    let redirect = ["--https", "redirect"];
    let r = relay_with(
        &[
            "https://mirror.example:8443/arch/$repo/os/$arch".to_string(),
            "https://second.example/$repo/os/$arch".to_string(),
        ],
        &redirect,
    );
    let epoch = "libc++-1:17.0.6-1-x86_64.pkg.tar.zst";
    for file in [PKG, epoch, DB, "testrepo.files"] {
        let got = get(r.addr, &url(file), &[]);
        assert_eq!(got.status, 302, "{file}");
        assert_eq!(
            got.header("location"),
            Some(format!("https://mirror.example:8443/arch/testrepo/os/x86_64/{file}").as_str()),
            "{file}"
        );
    }
    let mut conn = HttpConn::connect(r.addr).unwrap();
    let got = head_on(&mut conn, PKG);
    assert_eq!(got.status, 302);
    conn.send(&build_request("GET", "localhost", &url(PKG), &[]))
        .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 302);
    wait_counters(r.addr, "6 requests");
    wait_counters(r.addr, "6 redirects, 0 not found, 0 failures");

    // After a mirror that does not have it.
    let empty_root = Root::new();
    let empty = empty_root.mirror();
    let r = relay_with(
        &[
            empty.server_url(),
            "https://third.example/$repo/os/$arch".to_string(),
        ],
        &redirect,
    );
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(
        (got.status, got.header("location")),
        (
            302,
            Some(format!("https://third.example/testrepo/os/x86_64/{PKG}").as_str())
        )
    );
    assert_eq!(empty.request_count(&url(PKG)), 1);
}

/// A mirror whose nginx answers every `/testrepo/` request with `server_conf`'s redirect: the
/// relay passes a 302 to pacman, with the `Location` that `want(mirror, path)` gives.
fn assert_redirect_passed_on(server_conf: &str, want: impl Fn(&Mirror, &str) -> String) {
    let root = Root::new();
    let mirror = Mirror::start_with(
        root.path(),
        None,
        free_loopback_addr(),
        &MirrorOptions {
            extra_server_conf: server_conf.into(),
            ..MirrorOptions::default()
        },
    );
    let r = relay(&[mirror.server_url()]);
    for file in [PKG, DB] {
        let got = get(r.addr, &url(file), &[]);
        assert_eq!(got.status, 302, "{file}");
        assert_eq!(
            got.header("location"),
            Some(want(&mirror, &url(file)).as_str())
        );
    }
    wait_counters(r.addr, "2 redirects");
}

#[test]
fn an_upstream_redirect_is_passed_on() {
    assert_redirect_passed_on(
        "location /testrepo/ { return 302 http://elsewhere.invalid:8080$request_uri; }",
        |_, path| format!("http://elsewhere.invalid:8080{path}"),
    );
}

#[test]
fn a_relative_redirect_is_resolved_against_the_mirror() {
    // nginx sends `Location` as written: relative to the mirror. pacman is sent to the mirror,
    // not back to flocon.
    assert_redirect_passed_on(
        "absolute_redirect off; location /testrepo/ { return 302 /pool$request_uri; }",
        |mirror, path| format!("http://{}/pool{path}", mirror.addr()),
    );
}

// ---- no upstream ---------------------------------------------------------------------------

#[test]
fn without_upstreams_everything_is_a_quiet_404() {
    let r = relay(&[]);
    let mark = r.daemon.line_count();
    let files = [
        PKG.to_string(),
        format!("{PKG}.sig"),
        DB.to_string(),
        "testrepo.files".to_string(),
        "testrepo.db.sig".to_string(),
    ];
    let mut conn = HttpConn::connect(r.addr).unwrap();
    for file in &files {
        conn.send(&build_request(
            "GET",
            "localhost",
            &url(file),
            &[("Connection", "keep-alive")],
        ))
        .unwrap();
        let got = conn.read_response(false).unwrap();
        assert_eq!(got.status, 404, "{file}");
    }
    wait_counters(r.addr, "5 requests");
    wait_counters(r.addr, "0 redirects, 5 not found, 0 failures");
    let noisy: Vec<String> = r.daemon.lines()[mark..]
        .iter()
        .filter(|l| l.starts_with("ERROR") || l.starts_with("WARN"))
        .filter(|l| !l.contains("multicast"))
        .cloned()
        .collect();
    assert!(noisy.is_empty(), "404s without upstreams logged: {noisy:?}");
}

// ---- status page ---------------------------------------------------------------------------

#[test]
fn the_status_page_counts_and_shows_transfers_in_flight() {
    let root = Root::new();
    let pkg = pattern(10_000, 11);
    root.put(PKG, &pkg);
    root.put(DB, &pkg[..500]);
    let mirror = root.mirror();
    let slow_data = Arc::new(pattern(4000, 12));
    let slow = FakeServer::start(trickle(
        Arc::clone(&slow_data),
        200,
        Duration::from_millis(100),
    ));
    let broken = FakeServer::start(answers_500);
    let r = relay_with(
        &[
            broken.server_url(),
            mirror.server_url(),
            "https://redirect.example/$repo/os/$arch".to_string(),
        ],
        &["--https", "redirect"],
    );
    // 500 then served: one failure each.
    assert!(get(r.addr, &url(PKG), &[]).body == pkg);
    let got = get(r.addr, &url(PKG), &[("Range", "bytes=0-99")]);
    assert!(got.body == pkg[..100]);
    assert!(get(r.addr, &url(DB), &[]).body == pkg[..500]);
    // 500, 404, then redirected.
    assert_eq!(
        get(r.addr, &url("missing-1-1-x86_64.pkg.tar.zst"), &[]).status,
        302
    );
    // Not counted: refused names and the status page itself.
    assert_eq!(get(r.addr, &url("notes.txt"), &[]).status, 404);
    let line = counters(r.addr);
    assert_eq!(
        line,
        "relay: 4 requests, 0 files (0 bytes) from peers, 3 files (10600 bytes) from upstream, 1 redirects, 0 not found, 4 failures, 0 failovers, 0 bodies verified, 0 wrong",
    );

    // A transfer in flight shows on the page with its file, source and progress.
    let r = relay(&[slow.server_url()]);
    let addr = r.addr;
    let slow_name = "slow-1-1-x86_64.pkg.tar.zst";
    let client = thread::spawn(move || get(addr, &url(slow_name), &[]));
    let page = common::wait_until(
        "the slow transfer on the status page",
        Duration::from_secs(5),
        || {
            let page = get(r.addr, "/status", &[]).text();
            let shown = page
                .lines()
                .any(|l| l.contains(slow_name) && l.contains("/4000 bytes"));
            shown.then_some(page)
        },
        || get(r.addr, "/status", &[]).text(),
    );
    assert!(page.contains("1 transfers in flight"), "{page}");
    let transfer = page.lines().find(|l| l.contains(slow_name)).unwrap();
    assert!(
        transfer.contains(&format!("{}{}", slow.addr(), url(slow_name))),
        "{transfer}"
    );
    assert!(transfer.contains("/4000 bytes"), "{transfer}");
    let got = client.join().unwrap();
    assert!(got.body == *slow_data);
    let page = get(r.addr, "/status", &[]).text();
    assert!(page.contains("0 transfers in flight"), "{page}");
    assert!(
        page.contains(
            "relay: 1 requests, 0 files (0 bytes) from peers, 1 files (4000 bytes) from upstream"
        ),
        "{page}"
    );
    assert_eq!(get(r.addr, "/", &[]).status, 200);
}

// ---- bad requests and refused names --------------------------------------------------------

#[test]
fn a_request_for_another_host_is_refused() {
    // What a web page reaches through DNS rebinding: the loopback port, with its own name in
    // `Host`. Only this machine's names are answered.
    let root = Root::new();
    root.put(PKG, b"data");
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    let ask = |host: Option<&str>, path: &str| {
        let head = host.map_or_else(String::new, |h| format!("Host: {h}\r\n"));
        let raw = format!("GET {path} HTTP/1.1\r\n{head}Connection: close\r\n\r\n");
        request(r.addr, raw.as_bytes()).unwrap()
    };
    for host in ["attacker.example", "attacker.example:19433", "192.0.2.7"] {
        assert_eq!(ask(Some(host), &url(PKG)).status, 403, "{host}");
        assert_eq!(ask(Some(host), "/status").status, 403, "{host}");
    }
    r.daemon.wait_for_line(
        |l| l.contains("refused a request for host \"attacker.example\""),
        Duration::from_secs(5),
    );
    let port = r.addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
    ] {
        let got = ask(Some(&host), &url(PKG));
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &b"data"[..]),
            "{host}"
        );
    }
    assert_eq!(
        ask(None, "/status").status,
        200,
        "HTTP/1.1 without Host: as HTTP/1.0"
    );
}

#[test]
fn bad_requests_get_the_right_status() {
    let root = Root::new();
    root.put(PKG, b"data");
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    let raw = |req: &[u8]| request(r.addr, req).unwrap();
    let r405 = raw(format!("POST {} HTTP/1.1\r\nHost: x\r\n\r\n", url(PKG)).as_bytes());
    assert_eq!(
        (r405.status, r405.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(
        raw(format!("DELETE {} HTTP/1.1\r\nHost: x\r\n\r\n", url(PKG)).as_bytes()).status,
        405
    );
    assert_eq!(raw(b"GARBAGE\r\n\r\n").status, 400);
    let with_body = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        url(PKG)
    );
    assert_eq!(raw(with_body.as_bytes()).status, 400);
    let long = format!(
        "GET /testrepo/os/x86_64/{}-1-1-x86_64.pkg.tar.zst HTTP/1.1\r\n\r\n",
        "a".repeat(5000)
    );
    assert_eq!(raw(long.as_bytes()).status, 414);
    let big = format!(
        "GET {} HTTP/1.1\r\nX: {}\r\n\r\n",
        url(PKG),
        "y".repeat(9000)
    );
    assert_eq!(raw(big.as_bytes()).status, 431);
    let many = format!(
        "GET {} HTTP/1.1\r\n{}\r\n",
        url(PKG),
        "X: y\r\n".repeat(100)
    );
    assert_eq!(raw(many.as_bytes()).status, 431);
    // An oversized head that never ends: refused as soon as the limit passes.
    let mut c = TcpStream::connect(r.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(format!("GET / HTTP/1.1\r\nX: {}", "z".repeat(20_000)).as_bytes());
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // None of that reached the mirror; a good request still works.
    assert!(mirror.access_log().is_empty(), "{:?}", mirror.access_log());
    assert_eq!(get(r.addr, &url(PKG), &[]).body, b"data");
}

#[test]
fn a_slow_request_head_gets_408() {
    let r = relay(&[]);
    let mut c = TcpStream::connect(r.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /testrepo/os/x86_64/").unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let waited = started.elapsed();
    assert!(
        got.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}

#[test]
fn paths_and_names_that_are_refused_never_reach_the_mirror() {
    let root = Root::new();
    root.put(PKG, b"data");
    root.put("notes.txt", b"text");
    root.put(&format!("{PKG}.part"), b"partial");
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    let not_found = [
        "/testrepo/x86_64/hello-1.0-1-x86_64.pkg.tar.zst".to_string(),
        "/testrepo/os/x86_64".into(),
        "/testrepo/os/x86_64/".into(),
        "/testrepo/os/".into(),
        format!("/{PKG}"),
        "/favicon.ico".into(),
        "/testrepo/os/x86 64/hello-1.0-1-x86_64.pkg.tar.zst".into(),
        "/testrepo/OS/x86_64/hello-1.0-1-x86_64.pkg.tar.zst".into(),
        url("notes.txt"),
        url(&format!("{PKG}.part")),
        url(&format!(".{PKG}")),
        url(&format!("sub/{PKG}")),
        url(&format!("sub%2F{PKG}")),
        url(&format!("sub%2f{PKG}")),
        url("../../../etc/passwd"),
        url("..%2F..%2F..%2Fetc%2Fpasswd"),
        url("%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
        url(&format!("..%2F{PKG}")),
        url("a..b-1-1-x86_64.pkg.tar.zst"),
        url("..-1-1-x86_64.pkg.tar.zst"),
        "/../os/x86_64/hello-1.0-1-x86_64.pkg.tar.zst".into(),
        "/%2e%2e/os/x86_64/hello-1.0-1-x86_64.pkg.tar.zst".into(),
        "/testrepo/os/%2e%2e/hello-1.0-1-x86_64.pkg.tar.zst".into(),
        "/testrepo/os/../hello-1.0-1-x86_64.pkg.tar.zst".into(),
        "/.hidden/os/x86_64/hello-1.0-1-x86_64.pkg.tar.zst".into(),
        "/testrepo%2Fos/x86_64/hello-1.0-1-x86_64.pkg.tar.zst".into(),
    ];
    for path in &not_found {
        let got = get(r.addr, path, &[]);
        assert!(
            got.status == 404 || got.status == 400,
            "{path} must be refused, got {got:?}"
        );
    }
    for path in [
        url("a%00b-1-1-x86_64.pkg.tar.zst"),
        url("a%0ab-1-1-x86_64.pkg.tar.zst"),
        url("%zz"),
    ] {
        let got = get(r.addr, &path, &[]);
        assert!(
            got.status == 400 || got.status == 404,
            "{path} must be refused, got {got:?}"
        );
    }
    assert_eq!(
        get(r.addr, &url("a%00b-1-1-x86_64.pkg.tar.zst"), &[]).status,
        400
    );
    let log = mirror.access_log();
    assert!(log.is_empty(), "refused names reached the mirror: {log:?}");
    wait_counters(r.addr, "relay: 0 requests");
    // A good request does.
    assert_eq!(get(r.addr, &url(PKG), &[]).body, b"data");
    assert_eq!(mirror.requested_paths(), [url(PKG)]);
}

// ---- pacman's resume -----------------------------------------------------------------------

#[test]
fn a_part_file_resumes_with_a_range() {
    let root = Root::new();
    let len = 777_777;
    let data = pattern(len, 13);
    root.put(PKG, &data);
    let mirror = root.mirror();
    let r = relay(&[mirror.server_url()]);
    for from in [1usize, 65_536, 500_000, len - 1] {
        let got = get(
            r.addr,
            &url(PKG),
            &[
                ("Range", &format!("bytes={from}-")),
                ("User-Agent", "pacman/6.0.2 (Linux x86_64) libalpm/13.0.2"),
            ],
        );
        assert_eq!(got.status, 206, "from {from}");
        assert_eq!(
            got.header("content-range"),
            Some(format!("bytes {from}-{}/{len}", len - 1).as_str())
        );
        assert!(got.body == data[from..], "from {from}: body differs");
        assert_plain_body(&got, "resume");
        assert_eq!(
            mirror.access_log().last().map(|e| e.range.clone()),
            Some(format!("bytes={from}-"))
        );
    }
}

// ---- the real pacman -----------------------------------------------------------------------

#[test]
fn pacman_syncs_and_downloads_through_the_relay() {
    if !pacman::require_pacman("pacman_syncs_and_downloads_through_the_relay") {
        return;
    }
    let root = TempDir::new("relay-pacman-repo");
    let build = TempDir::new("relay-pacman-build");
    let packages: Vec<PathBuf> = [
        ("alpha", 50_000u64),
        ("beta", 1_500_000),
        ("gamma", 6_000_000),
    ]
    .iter()
    .map(|(name, size)| make_package(build.path(), name, "1.0", *size))
    .collect();
    let repo = make_repo_signed(root.path(), TEST_REPO, &packages, Signatures::None);
    let mirror = Mirror::start(root.path(), None, free_loopback_addr());
    let r = relay(&[mirror.server_url()]);
    let client_dir = TempDir::new("relay-pacman-client");
    let server = format!("http://{}/$repo/os/$arch", r.addr);
    let client = PacmanClient::new(client_dir.path(), &PacmanConf::new(&[server]));

    client.sync_db(None);
    assert!(same_bytes(&client.synced_db(TEST_REPO), &repo.db_file()));
    client.download(None, &["alpha", "beta", "gamma"]);
    for name in repo.package_names() {
        assert!(
            same_bytes(&client.cached(&name), &repo.file(&name)),
            "{name} differs from the mirror's"
        );
    }
    // A second -Sy: pacman sends If-Modified-Since, the mirror's 304 comes back through.
    let before = std::fs::read(client.synced_db(TEST_REPO)).unwrap();
    client.sync_db(None);
    assert!(std::fs::read(client.synced_db(TEST_REPO)).unwrap() == before);
    let db_statuses: Vec<u16> = mirror
        .access_log()
        .iter()
        .filter(|e| e.uri == repo.url_path(&format!("{TEST_REPO}.db")))
        .map(|e| e.status)
        .collect();
    assert_eq!(db_statuses, [200, 304]);
    for name in repo.package_names() {
        assert_eq!(mirror.request_count(&repo.url_path(&name)), 1, "{name}");
    }
}
