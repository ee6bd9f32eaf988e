//! Upstream mirrors named by host name, resolved by the system resolver (`getaddrinfo` on the
//! daemon's helper thread) while the event loop goes on, in a lab of network namespaces. Host 0
//! runs the nginx mirror (port 8080, on its IPv4 and IPv6 addresses) and a fake DNS server (UDP
//! 53, written here, answering by hand-built messages: `mirror.flocon.test` -> host 0's IPv4
//! address and no IPv6 one, `v6only.flocon.test` -> host 0's IPv6 address and no IPv4 one,
//! NXDOMAIN for `nowhere.flocon.test` and any other name, and never a word about
//! `silent.flocon.test`), counting every query it gets. The daemons run on other hosts, each
//! with its own `/etc/resolv.conf` (and `/etc/hosts` when a test needs one): `ip netns exec`
//! bind-mounts `/etc/netns/<ns>/<file>` over `/etc/<file>` for the process it starts, so the
//! test writes those files before spawning and [`EtcNetns`] removes them on drop.
//!
//! What is checked: a package through a named mirror, byte for byte, with one resolution (an A
//! and an AAAA question at most) and the answer cached for the next files; a name in
//! `/etc/hosts` asks no nameserver; a `search` domain of resolv.conf completes a short name; a
//! name with only an IPv6 address is reached over IPv6; an NXDOMAIN upstream is skipped for the
//! next one, and alone gives a quick 502 with a warning, and that failure is cached; a name
//! whose nameserver never answers does not block the loop (status page and peer server answer
//! at once meanwhile) and ends in 502 when the resolver gives up as resolv.conf's `options`
//! say; resolv.conf rewritten in place is used by the next resolution, and SIGUSR2 forgets
//! cached answers.

mod common;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use common::flocon::{self, Host, PEER_PORT};
use common::http::try_http_get;
use common::pacman::{self, ARCH, TEST_REPO};
use common::{Lab, Mirror, Response, TempDir, wait_until};

/// The lab host with the mirror and the fake DNS server.
const SERVER: usize = 0;
const MIRROR_PORT: u16 = 8080;
/// Answered with the server host's address.
const MIRROR_NAME: &str = "mirror.flocon.test";
/// Answered NXDOMAIN.
const NX_NAME: &str = "nowhere.flocon.test";
/// Never answered.
const SILENT_NAME: &str = "silent.flocon.test";
/// Answered with the server host's IPv6 address only.
const V6_NAME: &str = "v6only.flocon.test";
/// The search domain of the search-domain test, and a short name in it.
const SEARCH_DOMAIN: &str = "flocon.test";
const SHORT_NAME: &str = "mirror";
/// Only in the daemon's `/etc/hosts`; the DNS server would say NXDOMAIN.
const HOSTS_NAME: &str = "hosts.flocon.test";
/// The TTL of the fake server's answers.
const ANSWER_TTL: u32 = 60;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
/// Short, so a request with no peer goes to the upstreams at once.
const LOOKUP_TIMEOUT_MS: &str = "20";
const PKG_A: &str = "dns-alpha-1.0-1-x86_64.pkg.tar.zst";
const PKG_B: &str = "dns-beta-2.1-3-x86_64.pkg.tar.zst";
const PKG_C: &str = "dns-gamma-0.9-1-any.pkg.tar.zst";
/// "Answered at once" for the status page and the peer server while a lookup hangs.
const PROMPT: Duration = Duration::from_millis(200);

// ---- the fake DNS server ----------------------------------------------------------------------

/// One query the fake server got.
#[derive(Debug, Clone)]
struct Query {
    name: String,
    qtype: u16,
    from: SocketAddr,
}

/// A UDP DNS server on `<host ip>:53` inside a lab host, answering from a thread until dropped.
struct FakeDns {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<Query>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeDns {
    /// Serve on host `i` of `lab`; `MIRROR_NAME` is answered with `answer`, `V6_NAME` with
    /// `answer6`.
    #[track_caller]
    fn start(lab: &Lab, i: usize, answer: Ipv4Addr, answer6: Ipv6Addr) -> FakeDns {
        let addr = SocketAddr::new(IpAddr::V4(lab.host(i).ip()), 53);
        let socket = match lab.run_in(i, || UdpSocket::bind(addr)) {
            Ok(s) => s,
            Err(e) => panic!("fake DNS: cannot bind {addr} in h{i}: {e}"),
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set_read_timeout");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queries, stop) = (Arc::clone(&queries), Arc::clone(&stop));
            thread::spawn(move || serve_dns(&socket, (answer, answer6), &queries, &stop))
        };
        FakeDns {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    fn queries(&self) -> Vec<Query> {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Queries for `name` so far.
    fn count(&self, name: &str) -> usize {
        self.queries().iter().filter(|q| q.name == name).count()
    }

    /// Queries for `name` of type `qtype` so far.
    fn count_type(&self, name: &str, qtype: u16) -> usize {
        self.queries()
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype)
            .count()
    }

    fn total(&self) -> usize {
        self.queries().len()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_dns(
    socket: &UdpSocket,
    (answer, answer6): (Ipv4Addr, Ipv6Addr),
    log: &Mutex<Vec<Query>>,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue; // the read timeout: look at the stop flag again
        };
        let query = &buf[..n];
        let Some((name, qtype, question_end)) = parse_question(query) else {
            eprintln!("fake DNS: unparsable {n}-byte datagram from {from}");
            continue;
        };
        eprintln!("fake DNS: {name} type {qtype} from {from}");
        log.lock().unwrap_or_else(|e| e.into_inner()).push(Query {
            name: name.clone(),
            qtype,
            from,
        });
        let reply = match name.as_str() {
            SILENT_NAME => continue,
            MIRROR_NAME if qtype == TYPE_A => {
                build_reply(query, question_end, 0, Some(IpAddr::V4(answer)))
            }
            V6_NAME if qtype == TYPE_AAAA => {
                build_reply(query, question_end, 0, Some(IpAddr::V6(answer6)))
            }
            // The name exists but has no address of the other kind.
            MIRROR_NAME | V6_NAME => build_reply(query, question_end, 0, None),
            _ => build_reply(query, question_end, 3, None),
        };
        if let Err(e) = socket.send_to(&reply, from) {
            eprintln!("fake DNS: cannot answer {from}: {e}");
        }
    }
}

/// `(lower-case name without the final dot, qtype, end of the question)` of a one-question
/// query; no compression in queries.
fn parse_question(q: &[u8]) -> Option<(String, u16, usize)> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 || q[2] & 0x80 != 0 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*q.get(pos)?, *q.get(pos + 1)?]);
    let end = pos + 4; // type and class
    (q.len() >= end).then(|| (labels.join("."), qtype, end))
}

/// A reply to `query`: its id and question, QR, RD and RA set, the opcode kept, `rcode`, and
/// one A or AAAA record (a pointer to the question's name, class IN, TTL 60) when `address` is
/// given.
fn build_reply(query: &[u8], question_end: usize, rcode: u8, address: Option<IpAddr>) -> Vec<u8> {
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&query[0..2]);
    r.push(0x80 | (query[2] & 0x78) | 0x01);
    r.push(0x80 | rcode);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&u16::from(address.is_some()).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&query[12..question_end]);
    if let Some(ip) = address {
        let (qtype, data) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        r.extend_from_slice(&[0xC0, 0x0C]);
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    r
}

// ---- /etc/netns/<ns>/ -------------------------------------------------------------------------

const ETC_NETNS: &str = "/etc/netns";
/// Serialises making and removing directories under /etc/netns within this process.
static ETC_LOCK: Mutex<()> = Mutex::new(());
static ETC_SWEEP: Once = Once::new();

/// `/etc/netns/<ns>/`, whose files `ip netns exec <ns>` bind-mounts over `/etc/<file>` for the
/// program it starts. Removed on drop (also after a panic), and `/etc/netns` with it when
/// nothing else is left in it.
struct EtcNetns {
    dir: PathBuf,
}

impl EtcNetns {
    #[track_caller]
    fn new(ns: &str) -> EtcNetns {
        ETC_SWEEP.call_once(sweep_stale_etc);
        let dir = Path::new(ETC_NETNS).join(ns);
        let _guard = ETC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        EtcNetns { dir }
    }

    /// Write `/etc/netns/<ns>/<file>`; an existing file is truncated and rewritten in place
    /// (same inode), so a bind mount made of it earlier shows the new text.
    #[track_caller]
    fn write(&self, file: &str, text: &str) {
        let path = self.dir.join(file);
        if let Err(e) = fs::write(&path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _guard = ETC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
        let _ = fs::remove_dir(ETC_NETNS); // only when empty
    }
}

/// Remove `/etc/netns/flab<pid>-*` directories of lab test processes that are gone.
fn sweep_stale_etc() {
    let _guard = ETC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(entries) = fs::read_dir(ETC_NETNS) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("flab")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale {}", entry.path().display());
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let _ = fs::remove_dir(ETC_NETNS);
}

/// A resolv.conf naming `nameserver`; glibc gives up on a silent one after 2 attempts of 1 s.
fn resolv_conf(nameserver: IpAddr) -> String {
    resolv_conf_with(nameserver, "")
}

/// Like [`resolv_conf`], with `extra` lines (`search ...`).
fn resolv_conf_with(nameserver: IpAddr, extra: &str) -> String {
    format!(
        "# written by flocon's tests/dns.rs\nnameserver {nameserver}\noptions timeout:1 attempts:2\n{extra}"
    )
}

/// Give lab host `i` a resolv.conf naming `nameserver` (and `hosts` as /etc/hosts if given),
/// and check that a program started there sees them.
#[track_caller]
fn etc_for(lab: &Lab, i: usize, nameserver: IpAddr, hosts: Option<&str>) -> EtcNetns {
    etc_for_with(lab, i, &resolv_conf(nameserver), hosts)
}

/// Like [`etc_for`], with the whole resolv.conf text.
#[track_caller]
fn etc_for_with(lab: &Lab, i: usize, resolv: &str, hosts: Option<&str>) -> EtcNetns {
    let etc = EtcNetns::new(lab.host(i).ns());
    let resolv = resolv.to_string();
    etc.write("resolv.conf", &resolv);
    let mut want = vec![("/etc/resolv.conf", resolv)];
    if let Some(h) = hosts {
        etc.write("hosts", h);
        want.push(("/etc/hosts", h.to_string()));
    }
    for (file, text) in want {
        let out = lab.exec_ok(i, "cat", [file]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            text,
            "`ip netns exec` did not bind-mount /etc/netns/{}/ over {file}",
            lab.host(i).ns()
        );
    }
    etc
}

// ---- the lab ----------------------------------------------------------------------------------

/// The lab with its mirror (nginx) and fake DNS on host 0. Daemons and [`EtcNetns`] guards
/// are made by each test after this, so they drop before it.
struct World {
    files: Vec<(String, Vec<u8>)>,
    dns: FakeDns,
    mirror: Mirror,
    /// The same files on host 0's IPv6 address.
    mirror6: Mirror,
    _root: TempDir,
    lab: Lab,
}

impl World {
    /// A lab of `hosts` hosts; `None` when the test is skipped.
    fn new(test: &str, hosts: usize) -> Option<World> {
        if !common::require_root(test) || !common::require_tools(test, &["ip", "nginx"]) {
            return None;
        }
        let lab = Lab::new(hosts)?;
        let root = TempDir::new("dns-mirror");
        let dir = root.mkdir(format!("{TEST_REPO}/os/{ARCH}"));
        let mut files = Vec::new();
        for (n, (name, len)) in [(PKG_A, 300_000), (PKG_B, 1_500_000), (PKG_C, 70_001)]
            .into_iter()
            .enumerate()
        {
            let mut data = vec![0u8; len];
            let mut state = 0x5eed_0000 + n as u64;
            pacman::fill_pseudo_random(&mut data, &mut state);
            fs::write(dir.join(name), &data).expect("write a mirror file");
            files.push((name.to_string(), data));
        }
        let server = lab.host(SERVER);
        let mirror = Mirror::start(root.path(), Some(server.ns()), server.addr(MIRROR_PORT));
        let mirror6 = Mirror::start(
            root.path(),
            Some(server.ns()),
            SocketAddr::new(IpAddr::V6(server.ip6()), MIRROR_PORT),
        );
        let dns = FakeDns::start(&lab, SERVER, server.ip(), server.ip6());
        Some(World {
            files,
            dns,
            mirror,
            mirror6,
            _root: root,
            lab,
        })
    }

    fn data(&self, file: &str) -> &[u8] {
        match self.files.iter().find(|(n, _)| n == file) {
            Some((_, d)) => d,
            None => panic!("no mirror file {file}"),
        }
    }

    fn server_ip(&self) -> IpAddr {
        IpAddr::V4(self.lab.host(SERVER).ip())
    }

    /// Start flocon on host `i` with these upstream host names (port 8080 unless the name has
    /// one), in order.
    fn daemon(&self, i: usize, upstream_hosts: &[&str]) -> Host {
        let mut extra = vec!["--lookup-timeout".to_string(), LOOKUP_TIMEOUT_MS.into()];
        for h in upstream_hosts {
            let hostport = if h.contains(':') {
                h.to_string()
            } else {
                format!("{h}:{MIRROR_PORT}")
            };
            extra.push("--upstream".into());
            extra.push(format!("http://{hostport}/$repo/os/$arch"));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        flocon::spawn_host(&self.lab, i, &extra)
    }

    /// GET `file` through host `i`'s relay; the response and how long it took.
    #[track_caller]
    fn fetch(&self, i: usize, file: &str) -> (Response, Duration) {
        let path = format!("/{TEST_REPO}/os/{ARCH}/{file}");
        let t = Instant::now();
        match flocon::local_get(&self.lab, i, &path) {
            Ok(r) => (r, t.elapsed()),
            Err(e) => panic!("h{i}: GET {path} through the relay failed: {e}"),
        }
    }

    /// GET `file` through host `i`'s relay and check it is the mirror's file, byte for byte.
    #[track_caller]
    fn fetch_ok(&self, i: usize, file: &str) -> Duration {
        let (r, took) = self.fetch(i, file);
        assert_eq!(r.status, 200, "h{i}: {file}: {}", r.text());
        let want = self.data(file);
        assert!(
            r.body == want,
            "h{i}: {file}: got {} bytes that differ from the mirror's {}",
            r.body.len(),
            want.len()
        );
        took
    }

    /// GET `file` through host `i`'s relay, expecting 502.
    #[track_caller]
    fn fetch_502(&self, i: usize, file: &str) -> Duration {
        let (r, took) = self.fetch(i, file);
        assert_eq!(r.status, 502, "h{i}: {file}: {}", r.text());
        took
    }

    /// How many requests from host `i` for `file` the mirror answered on its IPv4 address.
    fn mirror_requests_from(&self, i: usize, file: &str) -> usize {
        let ip = self.lab.host(i).ip().to_string();
        self.mirror
            .access_log()
            .iter()
            .filter(|e| e.uri.ends_with(&format!("/{file}")) && e.client == ip)
            .count()
    }

    /// How many requests from host `i` for `file` the mirror answered on its IPv6 address.
    fn mirror6_requests_from(&self, i: usize, file: &str) -> usize {
        let ip = self.lab.host(i).ip6().to_string();
        self.mirror6
            .access_log()
            .iter()
            .filter(|e| e.uri.ends_with(&format!("/{file}")) && e.client == ip)
            .count()
    }
}

fn unresolved_warning(name: &str) -> String {
    format!("upstream host {name} does not resolve, skipped")
}

// ---- the tests --------------------------------------------------------------------------------

#[test]
fn a_mirror_named_by_dns_serves_packages_and_the_answer_is_cached() {
    let Some(w) = World::new("dns::named_mirror", 2) else {
        return;
    };
    let _etc = etc_for(&w.lab, 1, w.dns.ip(), None);
    let h1 = w.daemon(1, &[MIRROR_NAME]);

    w.fetch_ok(1, PKG_B);
    let queries = w.dns.queries();
    assert!(
        w.dns.count_type(MIRROR_NAME, TYPE_A) == 1
            && w.dns.count_type(MIRROR_NAME, TYPE_AAAA) <= 1
            && w.dns.count(MIRROR_NAME) == queries.len(),
        "one resolution: one A question and at most one AAAA: {queries:?}"
    );
    assert!(
        queries.iter().all(|q| q.from.ip() == IpAddr::V4(h1.ip)),
        "{queries:?}"
    );
    assert_eq!(w.mirror_requests_from(1, PKG_B), 1, "the mirror served h1");

    // Other files: the addresses come from the cache (60 s).
    w.fetch_ok(1, PKG_A);
    w.fetch_ok(1, PKG_C);
    assert_eq!(
        w.dns.total(),
        queries.len(),
        "cached answer reused: {:?}",
        w.dns.queries()
    );
    assert_eq!(w.mirror_requests_from(1, PKG_A), 1);
    assert_eq!(w.mirror_requests_from(1, PKG_C), 1);
}

#[test]
fn a_name_in_etc_hosts_is_resolved_without_a_query() {
    let Some(w) = World::new("dns::etc_hosts", 2) else {
        return;
    };
    let hosts = format!(
        "127.0.0.1 localhost\n# the mirror\n{}\t{HOSTS_NAME} other-alias\n",
        w.server_ip()
    );
    let _etc = etc_for(&w.lab, 1, w.dns.ip(), Some(&hosts));
    let _h1 = w.daemon(1, &[HOSTS_NAME]);

    w.fetch_ok(1, PKG_A);
    w.fetch_ok(1, PKG_C);
    assert_eq!(
        w.dns.total(),
        0,
        "/etc/hosts answers first: {:?}",
        w.dns.queries()
    );
    assert_eq!(w.mirror_requests_from(1, PKG_A), 1);
}

#[test]
fn a_search_domain_completes_a_short_mirror_name() {
    let Some(w) = World::new("dns::search_domain", 2) else {
        return;
    };
    let resolv = resolv_conf_with(w.dns.ip(), &format!("search {SEARCH_DOMAIN}\n"));
    let _etc = etc_for_with(&w.lab, 1, &resolv, None);
    let _h1 = w.daemon(1, &[SHORT_NAME]);

    w.fetch_ok(1, PKG_A);
    assert!(
        w.dns.count_type(MIRROR_NAME, TYPE_A) >= 1,
        "the short name was asked with the search domain: {:?}",
        w.dns.queries()
    );
    assert_eq!(w.mirror_requests_from(1, PKG_A), 1);
}

#[test]
fn a_mirror_with_only_an_ipv6_address_is_reached_over_ipv6() {
    let Some(w) = World::new("dns::ipv6_only", 2) else {
        return;
    };
    let _etc = etc_for(&w.lab, 1, w.dns.ip(), None);
    let _h1 = w.daemon(1, &[V6_NAME]);

    w.fetch_ok(1, PKG_B);
    assert!(
        w.dns.count_type(V6_NAME, TYPE_AAAA) >= 1,
        "{:?}",
        w.dns.queries()
    );
    assert_eq!(w.mirror6_requests_from(1, PKG_B), 1, "over IPv6");
    assert_eq!(w.mirror_requests_from(1, PKG_B), 0, "not over IPv4");
}

#[test]
fn an_nxdomain_upstream_is_skipped_and_alone_gives_a_quick_502() {
    let Some(w) = World::new("dns::nxdomain", 3) else {
        return;
    };
    let _etc1 = etc_for(&w.lab, 1, w.dns.ip(), None);
    let _etc2 = etc_for(&w.lab, 2, w.dns.ip(), None);
    let h1 = w.daemon(1, &[NX_NAME, MIRROR_NAME]);
    let h2 = w.daemon(2, &[NX_NAME]);

    // h1: the first upstream does not exist, the second serves.
    w.fetch_ok(1, PKG_A);
    assert!(w.dns.count(NX_NAME) >= 1, "{:?}", w.dns.queries());
    assert!(w.dns.count(MIRROR_NAME) >= 1, "{:?}", w.dns.queries());
    h1.daemon
        .wait_for_line_containing(&unresolved_warning(NX_NAME), Duration::from_secs(2));
    assert!(
        h1.daemon
            .find_line(|l| l.contains(&unresolved_warning(MIRROR_NAME)))
            .is_none()
    );
    assert_eq!(w.mirror_requests_from(1, PKG_A), 1);

    // h2: no upstream left after the NXDOMAIN one: 502, quickly.
    let before = w.dns.count(NX_NAME);
    let took = w.fetch_502(2, PKG_B);
    assert!(
        took < Duration::from_millis(700),
        "an NXDOMAIN answer ends the request at once; it took {took:?}"
    );
    h2.daemon
        .wait_for_line_containing(&unresolved_warning(NX_NAME), Duration::from_secs(2));
    let asked = w.dns.count(NX_NAME);
    assert!(asked > before, "h2 resolved the name itself");
    // The failure is cached: no new query.
    let took = w.fetch_502(2, PKG_C);
    assert!(took < Duration::from_millis(700), "took {took:?}");
    assert_eq!(
        w.dns.count(NX_NAME),
        asked,
        "NXDOMAIN cached: {:?}",
        w.dns.queries()
    );
    assert_eq!(w.mirror_requests_from(2, PKG_B), 0);
}

#[test]
fn a_silent_nameserver_never_blocks_the_loop() {
    let Some(w) = World::new("dns::silent", 2) else {
        return;
    };
    let _etc = etc_for(&w.lab, 1, w.dns.ip(), None);
    let h1 = w.daemon(1, &[&format!("{SILENT_NAME}:80")]);
    // A file in h1's cache, for its peer server.
    let cached = "dns-cached-1.0-1-x86_64.pkg.tar.zst";
    let cached_data = w.data(PKG_A).to_vec();
    h1.put(cached, &cached_data);

    let (hanging, took) = thread::scope(|s| {
        let request = s.spawn(|| w.fetch(1, PKG_B));
        wait_until(
            "the daemon's query for the silent name",
            Duration::from_secs(5),
            || (w.dns.count(SILENT_NAME) >= 1).then_some(()),
            || format!("{:?}", w.dns.queries()),
        );
        // The lookup hangs for about 2 s (resolv.conf: timeout:1 attempts:2); meanwhile the
        // loop answers everything else.
        let until = Instant::now() + Duration::from_millis(1200);
        let mut rounds = 0;
        let mut slowest = (Duration::ZERO, Duration::ZERO);
        while Instant::now() < until && !request.is_finished() {
            let t = Instant::now();
            let status = flocon::local_get(&w.lab, 1, "/status").expect("GET /status");
            let status_took = t.elapsed();
            assert_eq!(status.status, 200, "{}", status.text());
            assert!(
                status_took < PROMPT,
                "/status took {status_took:?} while a lookup was pending"
            );

            let t = Instant::now();
            let peer = w
                .lab
                .run_in(SERVER, || {
                    try_http_get(
                        SocketAddr::new(IpAddr::V4(h1.ip), PEER_PORT),
                        &format!("/{cached}"),
                        &[],
                    )
                })
                .expect("GET from the peer port");
            let peer_took = t.elapsed();
            assert_eq!(peer.status, 200, "{}", peer.text());
            assert!(peer.body == cached_data, "peer server body differs");
            assert!(
                peer_took < PROMPT,
                "the peer server took {peer_took:?} while a lookup was pending"
            );
            slowest = (slowest.0.max(status_took), slowest.1.max(peer_took));
            rounds += 1;
            thread::sleep(Duration::from_millis(100));
        }
        assert!(rounds >= 5, "only {rounds} rounds before the request ended");
        eprintln!(
            "while the lookup hung: {rounds} rounds, slowest /status {:?}, slowest peer GET {:?}",
            slowest.0, slowest.1
        );
        request.join().expect("the hanging request")
    });
    assert_eq!(hanging.status, 502, "{}", hanging.text());
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(8),
        "two attempts of 1 s (resolv.conf's options), then 502; it took {took:?}"
    );
    h1.daemon
        .wait_for_line_containing(&unresolved_warning(SILENT_NAME), Duration::from_secs(2));

    // The failure is cached: the next request is answered at once, without a query.
    let asked = w.dns.count(SILENT_NAME);
    let took = w.fetch_502(1, PKG_C);
    assert!(
        took < Duration::from_millis(500),
        "the failure is cached; it took {took:?}"
    );
    assert_eq!(w.dns.count(SILENT_NAME), asked, "{:?}", w.dns.queries());
}

#[test]
fn a_rewritten_resolv_conf_is_used_and_sigusr2_forgets_cached_answers() {
    let Some(w) = World::new("dns::resolv_conf_changes", 2) else {
        return;
    };
    let server = w.lab.host(SERVER).ip().octets();
    // On the lab network, but nobody has it: queries go nowhere.
    let nobody = IpAddr::V4(Ipv4Addr::new(server[0], server[1], server[2], 250));
    let etc = etc_for(&w.lab, 1, nobody, None);
    let mut h1 = w.daemon(1, &[MIRROR_NAME]);
    let resolv = etc.path("resolv.conf");
    let inode = fs::metadata(&resolv).expect("stat resolv.conf").ino();
    let seen_by_daemon = PathBuf::from(format!("/proc/{}/root/etc/resolv.conf", h1.daemon.pid()));
    let read_seen = || fs::read_to_string(&seen_by_daemon).unwrap_or_else(|e| format!("<{e}>"));
    assert_eq!(read_seen(), resolv_conf(nobody));

    // No nameserver answers: 502 after the attempts, and that failure is cached.
    let took = w.fetch_502(1, PKG_A);
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(8),
        "took {took:?}"
    );
    assert_eq!(w.dns.total(), 0);

    // Rewrite the file in place: the daemon sees it through its bind mount.
    etc.write("resolv.conf", &resolv_conf(w.dns.ip()));
    assert_eq!(
        fs::metadata(&resolv).expect("stat resolv.conf").ino(),
        inode,
        "rewritten in place"
    );
    assert_eq!(read_seen(), resolv_conf(w.dns.ip()));
    // The cached failure still answers, without a question.
    w.fetch_502(1, PKG_B);
    assert_eq!(w.dns.total(), 0, "{:?}", w.dns.queries());
    // SIGUSR2 forgets it; the next resolution reads the new resolv.conf.
    let mark = h1.daemon.line_count();
    h1.signal(libc::SIGUSR2);
    h1.daemon.wait_for_line_after(
        mark,
        |l| l.contains("forgetting cached mirror addresses"),
        Duration::from_secs(5),
    );
    w.fetch_ok(1, PKG_B);
    let asked = w.dns.count(MIRROR_NAME);
    assert!(asked >= 1, "{:?}", w.dns.queries());
    // The new answer is cached.
    w.fetch_ok(1, PKG_A);
    assert_eq!(w.dns.count(MIRROR_NAME), asked, "{:?}", w.dns.queries());
    assert_eq!(w.mirror_requests_from(1, PKG_B), 1);
}

#[test]
fn a_refused_address_is_followed_by_the_next_address_of_the_same_name() {
    let Some(w) = World::new("dns::next_address", 3) else {
        return;
    };
    // Two addresses for one name, in this order: host 2 (nothing listens on the mirror's
    // port: refused), then the mirror.
    const TWO_NAME: &str = "two.flocon.test";
    let hosts = format!(
        "127.0.0.1 localhost\n{} {TWO_NAME}\n{} {TWO_NAME}\n",
        w.lab.host(2).ip(),
        w.server_ip()
    );
    let _etc = etc_for(&w.lab, 1, w.dns.ip(), Some(&hosts));
    let h1 = w.daemon(1, &[TWO_NAME]);

    w.fetch_ok(1, PKG_A);
    h1.daemon.wait_for_line_containing(
        &format!("trying its next address {}", w.server_ip()),
        Duration::from_secs(2),
    );
    assert_eq!(w.mirror_requests_from(1, PKG_A), 1);
    let status = flocon::local_get(&w.lab, 1, "/status").expect("GET /status");
    assert!(
        status.text().contains(" 0 failures"),
        "a refused address of a mirror whose next address serves is no failure: {}",
        status.text()
    );
    assert_eq!(w.dns.total(), 0, "/etc/hosts only: {:?}", w.dns.queries());
}
