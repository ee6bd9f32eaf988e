//! The relay across hosts with the real pacman: a lab of network namespaces with an nginx
//! mirror (host 0) and three flocon hosts A, B and C (hosts 1 to 3), each with its own pacman
//! root, database and cache (the cache flocon shares), `ParallelDownloads = 5` and
//! `Server = http://127.0.0.1:19433/$repo/os/$arch` (its own relay). Extra lab hosts run fake
//! peers when a test needs one that misbehaves.
//!
//! Most scenarios run twice (see `under_pacman_6_and_7!` at the end): under Debian's pacman
//! 6.0.2 (`pacman6::NAME`) and under pacman 7, what Arch ships, built from source by
//! `ci/build-pacman7.sh` and run with `DownloadUser = alpm` and its sandbox (`pacman7::NAME`).
//!
//! What is checked: packages a peer has come from that peer (the mirror sees only the
//! databases), the others from the mirror; a `.part` is resumed with `Range` (pacman 6); a
//! peer killed in the middle of a 200 MB transfer is left within milliseconds (not after the
//! stall timeout) and continued from the mirror with a `Range`;
//! peers that stall or answer garbage are skipped (and one of another distribution is never
//! asked) and the download completes from the mirror; a peer that ignores the `Range` of a
//! resume is not passed on to pacman; without an upstream the relay answers 404, with an
//! `https://` one a 302 with `--https redirect`; a signature comes from the peer that gave its package, or from the
//! mirror when that peer lacks it; nothing in a pacman 7 download folder (nor any `.part`) is
//! served to a peer; pacman 7 with flocon as its `CacheServer` takes peer hits through flocon
//! and the rest from its mirror without an error. With sync databases read (trust): a host's
//! corrupted copies are never offered, a peer sending wrong bytes is banned and costs one run
//! at most, and identical files are shared across distributions by content while another build
//! of the same name is never used. Every download is compared byte for byte
//! with the mirror's file. One test measures: 20 packages through flocon against straight from
//! the mirror, and the daemons' peak memory during five parallel 200 MB transfers.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::fake_peer::{Behaviour, Claims, FakePeer, corrupt};
use common::http::{Response, build_request, request};
use common::lab::Addressing;
use common::mirror::{AccessLogEntry, MirrorOptions};
use common::pacman::{
    ARCH, PackageSpec, Pacman, PacmanClient, PacmanConf, Repo, Signatures, TEST_REPO, TestKey,
    make_package_spec, make_repo_signed, same_bytes,
};
use common::tls::TestCa;
use common::{Daemon, Lab, Mirror, TempDir, wait_until};

const MIRROR: usize = 0;
const A: usize = 1;
const B: usize = 2;
const C: usize = 3;
const FLOCON_HOSTS: [usize; 3] = [A, B, C];
/// pacman's `Server =` line for the relay on its own host.
const RELAY_SERVER: &str = "http://127.0.0.1:19433/$repo/os/$arch";
const DISTRO: &str = "arch";
const KB: u64 = 1000;
const MB: u64 = 1 << 20;
const START: Duration = Duration::from_secs(20);

fn relay_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 19433))
}

/// What a flocon host is given as its upstream.
#[derive(Clone)]
enum Upstream {
    /// `--upstream http://<mirror>/$repo/os/$arch`.
    Mirror,
    /// Neither `--upstream` nor a pacman.conf.
    Nothing,
    /// `--upstream <this> --https redirect`: pacman is sent to an `https://` one.
    Redirect(String),
    /// `--upstream <url> --ca-file <ca_file>`: an `https://` mirror flocon fetches itself.
    Https { url: String, ca_file: String },
}

/// One package of a test repository.
#[derive(Clone, Debug)]
struct Pkg {
    name: String,
    file: String,
}

/// The lab, the mirror, the repository and the three flocon hosts' pacman clients.
/// Fields drop in order: daemons first, the lab (and whatever still runs in it) later.
struct Lan {
    daemons: Vec<Option<Daemon>>,
    mirror: Mirror,
    clients: Vec<Option<PacmanClient>>,
    repo: Repo,
    pkgs: Vec<Pkg>,
    lab: Lab,
    _host_dirs: Vec<TempDir>,
    _work: TempDir,
}

impl Lan {
    /// A lab of 4 + `extra_hosts` hosts, a repository of `packages` (name, payload size; a
    /// name may carry `@version`) signed by `key` if given, the mirror on host 0, and pacman
    /// clients for A, B and C. No flocon runs yet. `None` when the test is skipped.
    fn new(
        pacman: Pacman,
        test: &str,
        extra_hosts: usize,
        packages: &[(&str, u64)],
        key: Option<&TestKey>,
    ) -> Option<Lan> {
        Lan::new_on(
            Addressing::DualStack,
            pacman,
            test,
            extra_hosts,
            packages,
            key,
        )
    }

    /// Like [`Lan::new`] on a lab addressed as `addressing` says; on an IPv6-only one the
    /// mirror listens on its host's ULA address.
    fn new_on(
        addressing: Addressing,
        pacman: Pacman,
        test: &str,
        extra_hosts: usize,
        packages: &[(&str, u64)],
        key: Option<&TestKey>,
    ) -> Option<Lan> {
        if !pacman.require(test) {
            return None;
        }
        eprintln!("{test}: the client is {}", pacman.label());
        let lab = Lab::with(4 + extra_hosts, addressing)?;
        let work = TempDir::new("lan");
        let build = work.mkdir("build");
        let specs: Vec<PackageSpec> = packages
            .iter()
            .map(|&(name, size)| match name.split_once('@') {
                Some((n, v)) => PackageSpec::new(n, v, size),
                None => PackageSpec::new(name, "1.0", size),
            })
            .collect();
        let paths = build_packages(&build, &specs);
        let sigs = match key {
            Some(k) => Signatures::Gpg(k),
            None => Signatures::None,
        };
        let repo = make_repo_signed(&work.mkdir("mirror"), TEST_REPO, &paths, sigs);
        let mirror_addr = match addressing {
            Addressing::DualStack => lab.host(MIRROR).addr(80),
            Addressing::Ipv6Only { .. } => SocketAddr::from((lab.host(MIRROR).ip6(), 80)),
        };
        let mirror = Mirror::start(&repo.root, Some(lab.host(MIRROR).ns()), mirror_addr);
        let mut conf = PacmanConf::new(&[RELAY_SERVER.to_string()]);
        conf.parallel_downloads = 5;
        if key.is_some() {
            conf = conf.require_package_signatures();
        }
        let mut clients = vec![None; lab.len()];
        let mut host_dirs = Vec::new();
        for h in FLOCON_HOSTS {
            let dir = TempDir::new(&format!("host{h}"));
            let client = PacmanClient::of(pacman, dir.path(), &conf);
            if let Some(k) = key {
                client.import_key(k);
            }
            clients[h] = Some(client);
            host_dirs.push(dir);
        }
        let pkgs = specs
            .iter()
            .map(|s| Pkg {
                name: s.name.clone(),
                file: s.file_name(),
            })
            .collect();
        Some(Lan {
            daemons: (0..lab.len()).map(|_| None).collect(),
            mirror,
            clients,
            repo,
            pkgs,
            lab,
            _host_dirs: host_dirs,
            _work: work,
        })
    }

    fn ns(&self, host: usize) -> &str {
        self.lab.host(host).ns()
    }

    fn client(&self, host: usize) -> &PacmanClient {
        self.clients[host].as_ref().expect("a flocon host")
    }

    fn daemon(&self, host: usize) -> &Daemon {
        self.daemons[host].as_ref().expect("flocon runs there")
    }

    fn pkg(&self, name: &str) -> &Pkg {
        self.pkgs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no package {name}"))
    }

    fn file(&self, name: &str) -> String {
        self.pkg(name).file.clone()
    }

    /// The mirror's copy of a file.
    fn mirror_file(&self, file: &str) -> PathBuf {
        self.repo.file(file)
    }

    /// Put the mirror's packages (and signatures, if any) into `host`'s cache as if its
    /// pacman had downloaded them (hard links where possible: no extra disk).
    fn seed_cache(&self, host: usize, names: &[&str]) {
        self.seed_cache_files(host, names, true);
    }

    /// The file name of package `name`, and of its signature when `with_sigs`.
    fn files_of(&self, name: &str, with_sigs: bool) -> Vec<String> {
        let file = self.file(name);
        let sig = with_sigs.then(|| format!("{file}.sig"));
        std::iter::once(file).chain(sig).collect()
    }

    /// Like [`Lan::seed_cache`], leaving the signatures out unless `with_sigs`.
    fn seed_cache_files(&self, host: usize, names: &[&str], with_sigs: bool) {
        let cache = &self.client(host).cachedir;
        for name in names {
            for f in self.files_of(name, with_sigs) {
                let src = self.mirror_file(&f);
                if !src.exists() {
                    continue;
                }
                let dst = cache.join(&f);
                if fs::hard_link(&src, &dst).is_err() {
                    fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
                }
            }
        }
    }

    /// Start flocon on `host` as the test setup describes; waits until it listens.
    fn start_flocon(&mut self, host: usize, upstream: &Upstream) {
        let mut extra = vec!["--distro", DISTRO, "--architecture", ARCH];
        let url = match upstream {
            Upstream::Mirror => Some(self.mirror.server_url()),
            Upstream::Nothing => None,
            Upstream::Redirect(u) => {
                extra.extend(["--https", "redirect"]);
                Some(u.clone())
            }
            Upstream::Https { url, ca_file } => {
                extra.extend(["--ca-file", ca_file]);
                Some(url.clone())
            }
        };
        if let Some(url) = &url {
            extra.extend(["--upstream", url]);
        }
        let args = common::flocon::daemon_args(&self.client(host).cachedir, &extra);
        let name = format!("flocon {}", host_letter(host));
        let daemon = self
            .lab
            .spawn_named(host, &name, env!("CARGO_BIN_EXE_flocon"), &args);
        daemon.wait_for_line_containing("pacman downloads through here", START);
        self.daemons[host] = Some(daemon);
    }

    /// Start flocon on `host` as `distro`, with the mirror as upstream, reading `host`'s sync
    /// database (a pacman.conf for flocon naming pacman's `DBPath` and the test repository),
    /// and `extra` arguments; waits until it listens.
    fn start_trusting(&mut self, host: usize, distro: &str, extra: &[&str]) {
        let conf = self._work.join(format!("flocon-pacman-{host}.conf"));
        let text = format!(
            "[options]\nDBPath = {}/\n\n[{TEST_REPO}]\n",
            self.client(host).dbpath.display()
        );
        fs::write(&conf, text).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let (url, conf) = (self.mirror.server_url(), conf.display().to_string());
        let mut args = vec!["--distro", distro, "--architecture", ARCH];
        args.extend(["--upstream", &url, "--pacman-conf", &conf]);
        args.extend_from_slice(extra);
        let args = common::flocon::daemon_args(&self.client(host).cachedir, &args);
        let name = format!("flocon {}", host_letter(host));
        let daemon = self
            .lab
            .spawn_named(host, &name, env!("CARGO_BIN_EXE_flocon"), &args);
        daemon.wait_for_line_containing("pacman downloads through here", START);
        self.daemons[host] = Some(daemon);
    }

    /// `pacman -Sy` on `host`, then SIGUSR2 to its flocon (look at the databases now), and
    /// wait until its status page says the test repository's database is indexed.
    fn sync_and_index(&mut self, host: usize) {
        self.sync(host);
        self.daemons[host]
            .as_mut()
            .expect("flocon runs there")
            .signal(libc::SIGUSR2);
        wait_until(
            &format!("flocon {} to index its sync database", host_letter(host)),
            START,
            || {
                self.try_status(host)
                    .filter(|s| s.contains(&format!("database {TEST_REPO} (")))
                    .filter(|s| s.contains(" files indexed"))
            },
            || {
                self.try_status(host)
                    .unwrap_or_else(|| "<no status>".into())
            },
        );
    }

    /// No package of `names` is in `host`'s cache with other bytes than the mirror's.
    #[track_caller]
    fn assert_no_bad_file(&self, host: usize, names: &[&str]) {
        for name in names {
            let file = self.file(name);
            let got = self.client(host).cached(&file);
            assert!(
                !got.exists() || same_bytes(&got, &self.mirror_file(&file)),
                "a bad {file} in {}'s cache",
                host_letter(host)
            );
        }
    }

    /// Start A, B and C with the mirror as upstream and wait until each knows the others.
    fn start_all(&mut self) {
        for h in FLOCON_HOSTS {
            self.start_flocon(h, &Upstream::Mirror);
        }
        self.wait_peers(&FLOCON_HOSTS, 2);
    }

    /// Wait until each of `hosts` lists `n` compatible peers on its status page.
    fn wait_peers(&self, hosts: &[usize], n: usize) {
        self.wait_peers_compatible(hosts, n, n);
    }

    /// Wait until each of `hosts` lists `n` peers of which `compatible` are compatible.
    fn wait_peers_compatible(&self, hosts: &[usize], n: usize, compatible: usize) {
        for &h in hosts {
            wait_until(
                &format!(
                    "flocon {} to know {n} peers ({compatible} compatible)",
                    host_letter(h)
                ),
                START,
                || {
                    self.try_status(h)
                        .and_then(|s| peer_counts(&s))
                        .filter(|&counts| counts == (n, compatible))
                },
                || self.try_status(h).unwrap_or_else(|| "<no status>".into()),
            );
        }
    }

    fn try_status(&self, host: usize) -> Option<String> {
        self.lab
            .run_in(host, || {
                request(
                    relay_addr(),
                    &build_request("GET", "localhost", "/status", &[]),
                )
            })
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.text())
    }

    fn status(&self, host: usize) -> String {
        self.try_status(host)
            .unwrap_or_else(|| panic!("no status page from flocon {}", host_letter(host)))
    }

    /// A GET (or HEAD) to `host`'s relay, from inside that host.
    fn relay_request(&self, host: usize, method: &str, path: &str) -> Response {
        let raw = build_request(method, "localhost:19433", path, &[]);
        self.lab
            .run_in(host, || request(relay_addr(), &raw))
            .unwrap_or_else(|e| panic!("{method} {path} on {}'s relay: {e}", host_letter(host)))
    }

    fn sync(&self, host: usize) {
        self.client(host).sync_db(Some(self.ns(host)));
    }

    /// `pacman -Sw names` on `host`; returns how long it took.
    fn download(&self, host: usize, names: &[&str]) -> Duration {
        let t = Instant::now();
        self.client(host).download(Some(self.ns(host)), names);
        t.elapsed()
    }

    /// Each package (and its signature when `with_sigs`) is in `host`'s cache, byte for byte
    /// the mirror's.
    #[track_caller]
    fn assert_cached(&self, host: usize, names: &[&str], with_sigs: bool) {
        for name in names {
            for f in self.files_of(name, with_sigs) {
                let got = self.client(host).cached(&f);
                assert!(
                    got.exists(),
                    "{} is not in {}'s cache",
                    f,
                    host_letter(host)
                );
                assert!(
                    same_bytes(&got, &self.mirror_file(&f)),
                    "{f} in {}'s cache differs from the mirror's",
                    host_letter(host)
                );
            }
        }
    }

    /// Mirror access-log entries for one file (packages, signatures or databases).
    fn mirror_requests(&self, log: &[AccessLogEntry], file: &str) -> Vec<AccessLogEntry> {
        let path = self.repo.url_path(file);
        log.iter().filter(|e| e.uri == path).cloned().collect()
    }
}

fn host_letter(host: usize) -> String {
    match host {
        A => "A".into(),
        B => "B".into(),
        C => "C".into(),
        h => format!("h{h}"),
    }
}

/// Build packages, a few at a time.
fn build_packages(dir: &Path, specs: &[PackageSpec]) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::new(); specs.len()];
    for (chunk_specs, chunk_out) in specs.chunks(3).zip(out.chunks_mut(3)) {
        thread::scope(|s| {
            let handles: Vec<_> = chunk_specs
                .iter()
                .map(|spec| s.spawn(move || make_package_spec(dir, spec)))
                .collect();
            for (h, slot) in handles.into_iter().zip(chunk_out.iter_mut()) {
                *slot = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            }
        });
    }
    out
}

/// `(peers, compatible)` from a status page's `N peers, M compatible (this host ...)` line.
fn peer_counts(status: &str) -> Option<(usize, usize)> {
    let line = status
        .lines()
        .find(|l| l.contains(" compatible (this host"))?;
    let mut words = line.split_whitespace();
    let all = words.next()?.parse().ok()?;
    let _ = words.next()?;
    let ok = words.next()?.parse().ok()?;
    Some((all, ok))
}

/// The `relay: ...` counters of a status page by name, e.g. `from peers` is the number
/// before "files (... bytes) from peers".
fn relay_counter(status: &str, what: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("relay: "))
        .unwrap_or_else(|| panic!("no relay line in status:\n{status}"));
    let words: Vec<&str> = line.trim_start_matches("relay: ").split(", ").collect();
    for w in words {
        let (n, rest) = w.split_once(' ').unwrap_or((w, ""));
        let rest = match rest.split_once(") ") {
            Some((_, after)) => after,
            None => rest,
        };
        let rest = rest.trim_start_matches("files ");
        if rest == what {
            return n.parse().unwrap_or_else(|_| panic!("bad number in {line}"));
        }
    }
    panic!("no counter {what:?} in {line}")
}

/// The start offset of a `bytes=N-...` range, if that is what it is.
fn range_start(range: &str) -> Option<u64> {
    range
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn decode_percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// User + system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = text.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// Log lines of a daemon that are not debug lines and mention `needle`.
fn loud_lines(daemon: &Daemon, needle: &str) -> Vec<String> {
    daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains(needle) && !l.contains("DEBUG"))
        .collect()
}

// ---- the tests -------------------------------------------------------------------------------

fn packages_come_from_the_peer_that_has_them_and_the_rest_from_the_mirror(pacman: Pacman) {
    let packages = [
        ("alpha", 300 * KB),
        ("beta", 2 * MB),
        ("gamma", 64 * KB),
        ("delta", MB),
        ("epsilon", 150 * KB),
    ];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::peer_and_mirror", 0, &packages, None) else {
        return;
    };
    lan.start_all();
    let shared = ["alpha", "beta", "gamma"];
    let mirror_only = ["delta", "epsilon"];

    // A downloads the shared packages first: nobody has them, so from the mirror.
    lan.sync(A);
    lan.download(A, &shared);
    lan.assert_cached(A, &shared, false);
    let log = lan.mirror.access_log();
    for name in shared {
        let reqs = lan.mirror_requests(&log, &lan.file(name));
        assert_eq!(reqs.len(), 1, "{name} from the mirror once for A: {log:?}");
        assert!(reqs[0].user_agent.starts_with("flocon/"), "{:?}", reqs[0]);
        assert_eq!(reqs[0].client, lan.lab.host(A).ip().to_string());
    }
    lan.mirror.clear_access_log();

    // B downloads all five: three from A, two from the mirror.
    lan.sync(B);
    let mut all: Vec<&str> = shared.to_vec();
    all.extend_from_slice(&mirror_only);
    let mut args = vec!["-Sw"];
    args.extend_from_slice(&all);
    let out = lan.client(B).run_expect_ok(Some(lan.ns(B)), &args);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checking package integrity"),
        "pacman checked the sha256 sums from the database"
    );
    lan.assert_cached(B, &all, false);
    let log = lan.mirror.access_log();
    let db = format!("{TEST_REPO}.db");
    assert!(
        !lan.mirror_requests(&log, &db).is_empty(),
        "B's database from the mirror: {log:?}"
    );
    for name in shared {
        assert!(
            lan.mirror_requests(&log, &lan.file(name)).is_empty(),
            "{name} was asked of the mirror although A has it: {log:?}"
        );
        let f = lan.file(name);
        let a_served = lan.daemon(A).count_lines_when(
            |l| {
                l.contains(&format!("GET /{f} -> 200"))
                    && l.contains(&lan.lab.host(B).ip().to_string())
            },
            1,
            Duration::from_secs(5),
        );
        assert_eq!(a_served, 1, "A's peer server sent {f} to B once");
    }
    for name in mirror_only {
        let reqs = lan.mirror_requests(&log, &lan.file(name));
        assert_eq!(reqs.len(), 1, "{name} from the mirror once: {log:?}");
        assert_eq!(
            (reqs[0].status, reqs[0].client.clone()),
            (200, lan.lab.host(B).ip().to_string())
        );
    }
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "from peers"), 3, "{status}");
    assert_eq!(
        relay_counter(&status, "from upstream"),
        3,
        "db + 2 packages: {status}"
    );
    assert_eq!(relay_counter(&status, "failures"), 0, "{status}");
}

/// An IPv6-only LAN (no IPv4 address; the hosts' link-local addresses, and a ULA to reach the
/// mirror by), nothing configured: the hosts find each other by the IPv6 group and B takes
/// what A has from A's file server at A's link-local address; the mirror is not asked for it.
fn an_ipv6_only_lan_takes_packages_from_peers(pacman: Pacman) {
    let packages = [("alpha", 300 * KB), ("beta", 2 * MB), ("delta", MB)];
    let Some(mut lan) = Lan::new_on(
        Addressing::Ipv6Only { ula: true },
        pacman,
        "pacman_lan::ipv6_only",
        0,
        &packages,
        None,
    ) else {
        return;
    };
    for h in 0..lan.lab.len() {
        let out = lan
            .lab
            .exec_ok(h, "ip", ["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(out.stdout.is_empty(), "no IPv4 on the LAN");
    }
    lan.start_all();
    let a_ll = lan.lab.host(A).link_local();
    let b_ll = lan.lab.host(B).link_local();
    assert_eq!((a_ll.len(), b_ll.len()), (1, 1), "{a_ll:?} {b_ll:?}");
    let status = lan.status(B);
    assert!(
        status.contains(&format!(" {} port 19432 ", a_ll[0])),
        "B lists A at its link-local address: {status}"
    );
    let shared = ["alpha", "beta"];
    lan.sync(A);
    lan.download(A, &shared);
    lan.assert_cached(A, &shared, false);
    lan.mirror.clear_access_log();

    lan.sync(B);
    lan.download(B, &["alpha", "beta", "delta"]);
    lan.assert_cached(B, &["alpha", "beta", "delta"], false);
    let log = lan.mirror.access_log();
    for name in shared {
        assert!(
            lan.mirror_requests(&log, &lan.file(name)).is_empty(),
            "{name} was asked of the mirror although A has it: {log:?}"
        );
        let f = lan.file(name);
        let a_served = lan.daemon(A).count_lines_when(
            |l| l.contains(&format!("GET /{f} -> 200")) && l.contains(&b_ll[0].to_string()),
            1,
            Duration::from_secs(5),
        );
        assert_eq!(
            a_served, 1,
            "A's peer server sent {f} to B's link-local address"
        );
    }
    let reqs = lan.mirror_requests(&log, &lan.file("delta"));
    assert_eq!(reqs.len(), 1, "delta from the mirror once: {log:?}");
    assert_eq!(reqs[0].client, lan.lab.host(B).ip6().to_string());
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "from peers"), 2, "{status}");
    assert_eq!(relay_counter(&status, "failures"), 0, "{status}");
}

#[test]
fn a_part_file_is_resumed_with_a_range_from_the_peer_or_the_mirror() {
    // pacman 6 only: it resumes a .part left by an earlier run; pacman 7 removes its download
    // folder, partial files included, at the end of every run.
    let pacman = Pacman::V6;
    let packages = [("resume-peer", 3 * MB), ("resume-mirror", 3 * MB)];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::resume", 0, &packages, None) else {
        return;
    };
    lan.seed_cache(A, &["resume-peer"]);
    lan.start_all();
    let cut = MB;
    for name in ["resume-peer", "resume-mirror"] {
        let file = lan.file(name);
        let bytes = fs::read(lan.mirror_file(&file)).expect("mirror file");
        let part = lan.client(B).cached(&format!("{file}.part"));
        fs::write(&part, &bytes[..cut as usize]).expect("write .part");
    }
    lan.sync(B);
    lan.mirror.clear_access_log();
    lan.download(B, &["resume-peer", "resume-mirror"]);
    lan.assert_cached(B, &["resume-peer", "resume-mirror"], false);

    // From the peer: A's server answered pacman's range with 206.
    let peer_file = lan.file("resume-peer");
    let b_ip = lan.lab.host(B).ip().to_string();
    lan.daemon(A).wait_for_line(
        |l| l.contains(&format!("GET /{peer_file} -> 206")) && l.contains(&b_ip),
        Duration::from_secs(5),
    );
    let log = lan.mirror.access_log();
    assert!(lan.mirror_requests(&log, &peer_file).is_empty(), "{log:?}");
    // From the mirror: the range went through.
    let reqs = lan.mirror_requests(&log, &lan.file("resume-mirror"));
    assert_eq!(reqs.len(), 1, "{log:?}");
    assert_eq!(reqs[0].status, 206, "{:?}", reqs[0]);
    assert_eq!(range_start(&reqs[0].range), Some(cut), "{:?}", reqs[0]);
}

fn a_peer_killed_in_the_middle_of_200_mb_is_continued_from_the_mirror(pacman: Pacman) {
    let Some(mut lan) = Lan::new(
        pacman,
        "pacman_lan::peer_killed",
        0,
        &[("huge", 200 * MB)],
        None,
    ) else {
        return;
    };
    lan.seed_cache(A, &["huge"]);
    lan.start_all();
    lan.sync(B);
    lan.mirror.clear_access_log();
    let file = lan.file("huge");
    let size = fs::metadata(lan.mirror_file(&file))
        .expect("mirror file")
        .len();
    let mut run = Daemon::spawn_command(
        "pacman B -Sw huge",
        lan.client(B).command(Some(lan.ns(B)), &["-Sw", "huge"]),
    );
    // Kill A when B has more than 50 MB of it (in the cache, or pacman 7's download folder).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (seen, part) = loop {
        let part = lan.client(B).partial(&file);
        let len = part
            .as_ref()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if let Some(part) = part.filter(|_| len >= 50 * MB) {
            break (len, part);
        }
        assert!(
            Instant::now() < deadline,
            "B's .part never grew past 50 MB (now {len})"
        );
        assert!(
            run.is_running(),
            "pacman ended before 50 MB: {:?}",
            run.lines()
        );
        thread::sleep(Duration::from_micros(500));
    };
    // A dies: its kernel sends what A had queued, then the end of file. B must see that end
    // at once (edge-triggered reads go on until it), not after its stall timeout.
    let killed = Instant::now();
    lan.daemons[A].as_mut().expect("A").kill();
    lan.daemon(B).wait_for_line(
        |l| l.contains(&file) && l.contains("continuing from the next source"),
        Duration::from_secs(10),
    );
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "B left the killed peer after {took:?} (the stall timeout is {:?})",
        flocon::relay::STALL_TIMEOUT
    );
    if pacman == Pacman::V7 {
        // pacman 7 downloads as its DownloadUser, into a folder of its own.
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(&part).map(|m| m.uid()).unwrap_or(0);
        assert!(
            part.parent().is_some_and(|d| d != lan.client(B).cachedir) && owner != 0,
            "pacman 7 writes {} as root: no download user?",
            part.display()
        );
    }
    eprintln!("killed A's flocon when B's .part had {seen} of {size} bytes");
    let status = run.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "pacman failed: {:?}", run.lines());
    lan.assert_cached(B, &["huge"], false);

    let log = lan.mirror.access_log();
    let reqs = lan.mirror_requests(&log, &file);
    assert_eq!(reqs.len(), 1, "one continuation from the mirror: {log:?}");
    let start = range_start(&reqs[0].range).unwrap_or(0);
    assert!(
        reqs[0].status == 206 && start > 0 && start < size,
        "the mirror was asked for the rest with a range: {:?}",
        reqs[0]
    );
    assert_eq!(reqs[0].body_bytes, size - start);
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "failovers"), 1, "{status}");
}

fn peers_that_stall_or_answer_garbage_are_skipped_and_the_mirror_serves(pacman: Pacman) {
    let packages = [
        ("by-silent", 400 * KB),
        ("by-stopper", 2 * MB),
        ("by-garbage", 300 * KB),
        ("later", 100 * KB),
    ];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::bad_peers", 4, &packages, None) else {
        return;
    };
    let claims = |name: &str| Claims::Only(vec![lan.file(name), lan.file("later")]);
    let silent = FakePeer::start(
        &lan.lab,
        4,
        DISTRO,
        ARCH,
        claims("by-silent"),
        Behaviour::Silent,
    );
    let prefix = 100_000;
    let stopper = FakePeer::start(
        &lan.lab,
        5,
        DISTRO,
        ARCH,
        claims("by-stopper"),
        Behaviour::HeadThenStall {
            dir: lan.repo.dir.clone(),
            prefix,
        },
    );
    let garbage = FakePeer::start(
        &lan.lab,
        6,
        DISTRO,
        ARCH,
        claims("by-garbage"),
        Behaviour::Raw(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 not HTTP at all\r\n\r\n".to_vec()),
    );
    // Same file names, other distribution: never to be asked (its bytes would differ).
    let foreign = FakePeer::start(
        &lan.lab,
        7,
        "archarm",
        "aarch64",
        Claims::All,
        Behaviour::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\narm".to_vec()),
    );
    lan.start_all_with_extra_peers_compatible(4, 3);
    lan.sync(B);
    lan.mirror.clear_access_log();
    let first = ["by-silent", "by-stopper", "by-garbage"];
    let took = lan.download(B, &first);
    eprintln!("pacman -Sw past three bad peers took {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    lan.assert_cached(B, &first, false);

    let b = lan.daemon(B);
    for (fake, name) in [
        (&silent, "by-silent"),
        (&stopper, "by-stopper"),
        (&garbage, "by-garbage"),
    ] {
        let file = lan.file(name);
        assert!(
            fake.requests().iter().any(|r| r.contains(&file)),
            "{} was never asked for {file}: {:?}",
            fake.name(),
            fake.requests()
        );
        let id = format!("peer {:016x} at {} failed (", fake.host_id(), fake.addr());
        let line = b.wait_for_line(|l| l.contains(&id), Duration::from_secs(5));
        eprintln!("B on {}: {line}", fake.name());
    }
    let log = lan.mirror.access_log();
    for name in first {
        assert_eq!(
            lan.mirror_requests(&log, &lan.file(name)).len(),
            1,
            "{name}: {log:?}"
        );
    }
    // The peer that sent a head and part of the body: the rest came with a range.
    let cont = &lan.mirror_requests(&log, &lan.file("by-stopper"))[0];
    assert_eq!(cont.status, 206, "{cont:?}");
    assert_eq!(range_start(&cont.range), Some(prefix), "{cont:?}");

    // The three are skipped now: "later" (which each claims) comes from the mirror at once.
    lan.mirror.clear_access_log();
    let took = lan.download(B, &["later"]);
    lan.assert_cached(B, &["later"], false);
    let later = lan.file("later");
    for fake in [&silent, &stopper, &garbage] {
        assert!(
            !fake.requests().iter().any(|r| r.contains(&later)),
            "{} was asked for {later} although it failed a moment ago",
            fake.name()
        );
    }
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        lan.mirror_requests(&lan.mirror.access_log(), &later).len(),
        1
    );
    assert!(
        foreign.who_has().is_empty() && foreign.requests().is_empty(),
        "the archarm/aarch64 peer was asked: {:?} {:?}",
        foreign.who_has(),
        foreign.requests()
    );
}

impl Lan {
    /// Start A, B and C and wait until each knows the other two plus `extra` fake peers.
    fn start_all_with_extra_peers(&mut self, extra: usize) {
        self.start_all_with_extra_peers_compatible(extra, extra);
    }

    /// Start A, B and C and wait until each knows the other two plus `extra` fake peers, of
    /// which `compatible` are compatible.
    fn start_all_with_extra_peers_compatible(&mut self, extra: usize, compatible: usize) {
        for h in FLOCON_HOSTS {
            self.start_flocon(h, &Upstream::Mirror);
        }
        self.wait_peers_compatible(&FLOCON_HOSTS, 2 + extra, 2 + compatible);
    }
}

fn without_an_upstream_what_no_peer_has_is_a_quiet_404(pacman: Pacman) {
    let packages = [("shared", 500 * KB), ("nowhere", 200 * KB)];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::no_upstream", 0, &packages, None) else {
        return;
    };
    lan.seed_cache(A, &["shared"]);
    lan.start_flocon(A, &Upstream::Mirror);
    lan.start_flocon(B, &Upstream::Nothing);
    lan.start_flocon(C, &Upstream::Mirror);
    lan.wait_peers(&FLOCON_HOSTS, 2);
    lan.daemon(B)
        .wait_for_line_containing("no upstream mirror", Duration::from_secs(1));
    let (shared, nowhere) = (lan.file("shared"), lan.file("nowhere"));

    // Plain HTTP against B's relay.
    let r = lan.relay_request(B, "GET", &lan.repo.url_path(&nowhere));
    assert_eq!(r.status, 404, "{r:?}");
    let r = lan.relay_request(B, "GET", &lan.repo.url_path(&format!("{TEST_REPO}.db")));
    assert_eq!(r.status, 404, "databases come only from upstreams: {r:?}");
    let r = lan.relay_request(B, "GET", &lan.repo.url_path(&shared));
    assert_eq!(r.status, 200);
    assert!(r.body == fs::read(lan.mirror_file(&shared)).expect("mirror file"));

    // The real pacman with the relay first and the mirror second: the 404s are reported by
    // pacman, which goes on to the mirror for those.
    let mut conf = PacmanConf::new(&[RELAY_SERVER.to_string(), lan.mirror.server_url()]);
    conf.parallel_downloads = 5;
    lan.client(B).write_conf(&conf);
    lan.sync(B);
    lan.mirror.clear_access_log();
    let out = lan
        .client(B)
        .run_expect_ok(Some(lan.ns(B)), &["-Sw", "shared", "nowhere"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "failed retrieving file '{nowhere}' from 127.0.0.1:19433"
        )) && text.contains("404"),
        "pacman reports the relay's 404:\n{text}"
    );
    lan.assert_cached(B, &["shared", "nowhere"], false);
    let log = lan.mirror.access_log();
    assert!(lan.mirror_requests(&log, &shared).is_empty(), "{log:?}");
    let reqs = lan.mirror_requests(&log, &nowhere);
    assert_eq!(reqs.len(), 1, "{log:?}");
    assert!(
        reqs[0].user_agent.starts_with("pacman/"),
        "straight from pacman: {:?}",
        reqs[0]
    );
    let loud = loud_lines(lan.daemon(B), &nowhere);
    assert!(
        loud.is_empty(),
        "a 404 is not worth more than a debug line: {loud:?}"
    );
    let status = lan.status(B);
    assert!(relay_counter(&status, "not found") >= 2, "{status}");
}

fn an_https_upstream_is_a_redirect_for_what_no_peer_has(pacman: Pacman) {
    let packages = [
        ("shared", 200 * KB),
        ("nowhere", 100 * KB),
        ("lib+plus@1:2.0", 50 * KB),
    ];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::https", 0, &packages, None) else {
        return;
    };
    lan.seed_cache(A, &["shared"]);
    let upstream = "https://mirror.example.org/archlinux/$repo/os/$arch";
    lan.start_flocon(A, &Upstream::Mirror);
    lan.start_flocon(B, &Upstream::Redirect(upstream.into()));
    lan.start_flocon(C, &Upstream::Mirror);
    lan.wait_peers(&FLOCON_HOSTS, 2);
    let base = format!("https://mirror.example.org/archlinux/{TEST_REPO}/os/{ARCH}");
    for file in [
        lan.file("nowhere"),
        lan.file("lib+plus"),
        format!("{TEST_REPO}.db"),
    ] {
        for method in ["GET", "HEAD"] {
            let r = lan.relay_request(B, method, &lan.repo.url_path(&file));
            assert_eq!(r.status, 302, "{method} {file}: {r:?}");
            let location = r.header("location").unwrap_or_default();
            assert_eq!(
                decode_percent(location),
                format!("{base}/{file}"),
                "{method} {file}: {r:?}"
            );
        }
    }
    let shared = lan.file("shared");
    let r = lan.relay_request(B, "GET", &lan.repo.url_path(&shared));
    assert_eq!(r.status, 200, "a peer's file needs no redirect");
    assert!(r.body == fs::read(lan.mirror_file(&shared)).expect("mirror file"));
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "redirects"), 6, "{status}");
}

fn packages_and_databases_come_through_flocon_from_an_https_mirror(pacman: Pacman) {
    let test = "pacman_lan::https_fetch";
    let packages = [("over-tls", 300 * KB), ("also-tls", 1200 * KB)];
    let Some(mut lan) = Lan::new(pacman, test, 0, &packages, None) else {
        return;
    };
    if !common::require_tools(test, &["openssl"]) {
        return;
    }
    // The same repository over TLS on the mirror host, with a certificate for its address
    // from a CA made here and trusted by flocon for this run only.
    let ca = TestCa::new("flocon pacman test CA");
    let addr = lan.lab.host(MIRROR).addr(443);
    let cert = ca.issue("mirror", &[&format!("IP:{}", addr.ip())]);
    let tls = Mirror::start_with(
        &lan.repo.root,
        Some(lan.ns(MIRROR)),
        addr,
        &MirrorOptions {
            tls: cert.files(),
            ..MirrorOptions::default()
        },
    );
    let upstream = Upstream::Https {
        url: tls.server_url(),
        ca_file: ca.cert.display().to_string(),
    };
    lan.start_flocon(B, &upstream);
    lan.sync(B);
    let names = ["over-tls", "also-tls"];
    lan.download(B, &names);
    lan.assert_cached(B, &names, false);
    let log = tls.access_log();
    for file in [
        lan.file("over-tls"),
        lan.file("also-tls"),
        format!("{TEST_REPO}.db"),
    ] {
        let asked = lan.mirror_requests(&log, &file);
        assert!(
            asked
                .iter()
                .any(|e| e.status == 200 && e.user_agent.starts_with("flocon/")),
            "{file}: not fetched by flocon over https: {log:?}"
        );
    }
    let plain = lan.mirror.access_log();
    assert!(plain.is_empty(), "the plain mirror was asked: {plain:?}");
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "redirects"), 0, "{status}");
}

fn a_signature_comes_from_the_peer_that_gave_the_package(pacman: Pacman) {
    if !pacman.require("pacman_lan::signatures") {
        return;
    }
    let key = TestKey::generate();
    let packages = [
        ("signed-one", 500 * KB),
        ("signed-two", 1200 * KB),
        ("sigless", 300 * KB),
    ];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::signatures", 0, &packages, Some(&key)) else {
        return;
    };
    // A peer that has a package but not its signature (a known trap of LAN caches).
    lan.seed_cache_files(A, &["sigless"], false);
    lan.start_all();
    let names = ["signed-one", "signed-two"];
    lan.sync(A);
    lan.download(A, &names);
    lan.assert_cached(A, &names, true);
    lan.mirror.clear_access_log();

    lan.sync(B);
    let out = lan.client(B).run_expect_ok(
        Some(lan.ns(B)),
        &["-Sw", "signed-one", "signed-two", "sigless"],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("error"), "{text}");
    assert!(text.contains("checking package integrity"), "{text}");
    lan.assert_cached(B, &["signed-one", "signed-two", "sigless"], true);
    let log = lan.mirror.access_log();
    let b_ip = lan.lab.host(B).ip().to_string();
    let a = lan.daemon(A);
    let a_served = |f: &str| {
        a.count_lines_when(
            |l| l.contains(&format!("GET /{f} -> 200")) && l.contains(&b_ip),
            1,
            Duration::from_secs(5),
        )
    };
    for name in names {
        let file = lan.file(name);
        assert!(lan.mirror_requests(&log, &file).is_empty(), "{log:?}");
        assert!(
            lan.mirror_requests(&log, &format!("{file}.sig")).is_empty(),
            "{log:?}"
        );
        for f in [file.clone(), format!("{file}.sig")] {
            assert_eq!(a_served(&f), 1, "A served {f} to B");
        }
    }
    // The package from A, its signature (which A lacks) from the mirror.
    let sigless = lan.file("sigless");
    assert_eq!(a_served(&sigless), 1, "A served {sigless} to B");
    assert!(lan.mirror_requests(&log, &sigless).is_empty(), "{log:?}");
    let sig_reqs = lan.mirror_requests(&log, &format!("{sigless}.sig"));
    assert_eq!(sig_reqs.len(), 1, "{log:?}");
    assert!(
        sig_reqs[0].user_agent.starts_with("flocon/"),
        "{:?}",
        sig_reqs[0]
    );
    // A package whose signature went bad in B's cache would not pass: pacman really checked.
    let one = lan.file("signed-one");
    let sig = lan.client(B).cached(&format!("{one}.sig"));
    let mut bad = fs::read(&sig).expect("sig");
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    fs::write(&sig, bad).expect("write sig");
    let out = lan.client(B).run(Some(lan.ns(B)), &["-Sw", "signed-one"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("signature") && text.contains("is invalid"),
        "a broken signature must fail verification: {text}"
    );
}

#[test]
fn measure_time_through_flocon_and_peak_memory() {
    // pacman 6 only: a measurement, not a behaviour; once is enough.
    let pacman = Pacman::V6;
    let mut packages: Vec<(String, u64)> = (0..20)
        .map(|i| {
            (
                format!("small{i:02}"),
                100 * KB + i * (5 * MB - 100 * KB) / 19,
            )
        })
        .collect();
    packages.extend((0..5).map(|i| (format!("big{i}"), 200 * MB)));
    let specs: Vec<(&str, u64)> = packages.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::measure", 0, &specs, None) else {
        return;
    };
    let small: Vec<&str> = packages[..20].iter().map(|(n, _)| n.as_str()).collect();
    let big: Vec<&str> = packages[20..].iter().map(|(n, _)| n.as_str()).collect();
    let all: Vec<&str> = packages.iter().map(|(n, _)| n.as_str()).collect();
    lan.seed_cache(A, &all);
    lan.start_all();
    lan.sync(B);
    lan.mirror.clear_access_log();

    let through = lan.download(B, &small);
    lan.assert_cached(B, &small, false);
    let log = lan.mirror.access_log();
    assert!(
        small
            .iter()
            .all(|n| lan.mirror_requests(&log, &lan.file(n)).is_empty()),
        "all from peer A: {log:?}"
    );
    for n in &small {
        fs::remove_file(lan.client(B).cached(&lan.file(n))).expect("remove");
    }
    let mut direct_conf = PacmanConf::new(&[lan.mirror.server_url()]);
    direct_conf.parallel_downloads = 5;
    lan.client(B).write_conf(&direct_conf);
    let direct = lan.download(B, &small);
    lan.assert_cached(B, &small, false);
    let total: u64 = small
        .iter()
        .map(|n| {
            fs::metadata(lan.mirror_file(&lan.file(n)))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    eprintln!(
        "MEASURE 20 packages, {:.1} MB: through flocon (from peer A) {:?}, straight from the mirror {:?} ({:.2}x)",
        total as f64 / 1e6,
        through,
        direct,
        through.as_secs_f64() / direct.as_secs_f64()
    );
    assert!(
        through < direct * 3 + Duration::from_secs(1),
        "through flocon {through:?} vs direct {direct:?}"
    );

    let mut relay_conf = PacmanConf::new(&[RELAY_SERVER.to_string()]);
    relay_conf.parallel_downloads = 5;
    lan.client(B).write_conf(&relay_conf);
    lan.mirror.clear_access_log();
    let (pid_a, pid_b) = (lan.daemon(A).pid(), lan.daemon(B).pid());
    let before = (vm_hwm_kib(pid_a), vm_hwm_kib(pid_b));
    let cpu_before = (cpu_seconds(pid_a), cpu_seconds(pid_b));
    let through = lan.download(B, &big);
    let after = (vm_hwm_kib(pid_a), vm_hwm_kib(pid_b));
    let cpu = (
        cpu_seconds(pid_a) - cpu_before.0,
        cpu_seconds(pid_b) - cpu_before.1,
    );
    let log = lan.mirror.access_log();
    assert!(
        big.iter()
            .all(|n| lan.mirror_requests(&log, &lan.file(n)).is_empty()),
        "all from peer A: {log:?}"
    );
    lan.assert_cached(B, &big, false);
    for n in &big {
        let _ = fs::remove_file(lan.client(B).cached(&lan.file(n)));
    }
    lan.client(B).write_conf(&direct_conf);
    let direct = lan.download(B, &big);
    lan.assert_cached(B, &big, false);
    for n in &big {
        let _ = fs::remove_file(lan.client(B).cached(&lan.file(n)));
    }
    eprintln!(
        "MEASURE 5 x 200 MB in parallel (pacman -Sw, sha256 check included): through flocon \
         (from peer A) {through:?}, straight from the mirror {direct:?} ({:.2}x); \
         VmHWM of A (serving) {} -> {} KiB, of B (relay) {} -> {} KiB; \
         CPU during the transfer: A {:.2} s, B {:.2} s",
        through.as_secs_f64() / direct.as_secs_f64(),
        before.0,
        after.0,
        before.1,
        after.1,
        cpu.0,
        cpu.1
    );
    assert!(
        through < direct * 3 + Duration::from_secs(2),
        "through flocon {through:?} vs direct {direct:?}"
    );
    assert!(
        after.0 < 64 * 1024,
        "serving peer's peak RSS {} KiB",
        after.0
    );
    assert!(after.1 < 64 * 1024, "relay's peak RSS {} KiB", after.1);
}

#[test]
fn a_peer_that_ignores_the_range_of_a_resume_is_not_passed_on() {
    // pacman 6 only: it resumes a .part left by an earlier run; pacman 7 removes its download
    // folder, partial files included, at the end of every run.
    let pacman = Pacman::V6;
    let Some(mut lan) = Lan::new(
        pacman,
        "pacman_lan::ignores_range",
        1,
        &[("resumed", 3 * MB)],
        None,
    ) else {
        return;
    };
    let file = lan.file("resumed");
    // A peer that always sends the whole file with 200, whatever Range asked for.
    let whole = FakePeer::start(
        &lan.lab,
        4,
        DISTRO,
        ARCH,
        Claims::Only(vec![file.clone()]),
        Behaviour::HeadThenStall {
            dir: lan.repo.dir.clone(),
            prefix: u64::MAX,
        },
    );
    lan.start_all_with_extra_peers(1);
    let bytes = fs::read(lan.mirror_file(&file)).expect("mirror file");
    fs::write(
        lan.client(B).cached(&format!("{file}.part")),
        &bytes[..MB as usize],
    )
    .expect("part");
    lan.sync(B);
    let out = lan.client(B).run(Some(lan.ns(B)), &["-Sw", "resumed"]);
    assert!(
        whole.requests().iter().any(|r| r.contains("Range: bytes=")),
        "the fake peer was asked for a range: {:?}",
        whole.requests()
    );
    assert!(
        out.status.success(),
        "pacman failed: the relay passed a 200 on to a resume"
    );
    lan.assert_cached(B, &["resumed"], false);
}

/// A package asked again after it was delivered whole is evidence against the peer it came
/// from (pacman found it bad, or lost it): the second request never goes straight back to it,
/// it asks the LAN afresh (a peer with a sync database then checks its copy again).
fn a_package_asked_again_never_goes_straight_back_to_its_peer(pacman: Pacman) {
    let packages = [("zeta", 200 * KB)];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::origin_left_out", 0, &packages, None) else {
        return;
    };
    lan.seed_cache(A, &["zeta"]);
    lan.seed_cache(C, &["zeta"]);
    lan.start_all();
    let path = format!("/{TEST_REPO}/os/x86_64/{}", lan.file("zeta"));
    let wait = Duration::from_secs(5);
    // B logs the lookup before the transfer and the transfer's end after it; the test reads
    // that log through a pipe, so it waits for the end line before it counts lookups.
    let lookups = |lan: &Lan| {
        lan.daemon(B)
            .count_lines(|l| l.contains("zeta") && l.contains("lookup answered"))
    };
    let transfers_done = |lan: &Lan, n: usize| {
        lan.daemon(B).count_lines_when(
            |l| l.contains("zeta") && l.contains(" bytes from peer "),
            n,
            wait,
        )
    };
    let served = |lan: &Lan, host: usize, n: usize| {
        lan.daemon(host).count_lines_when(
            |l| l.contains("GET /zeta") && l.contains("-> 200"),
            n,
            wait,
        )
    };

    let first = lan.relay_request(B, "GET", &path);
    assert_eq!(first.status, 200);
    assert_eq!(transfers_done(&lan, 1), 1);
    assert_eq!(lookups(&lan), 1, "the first request asks the peers");
    let a_ip = lan.lab.host(A).ip().to_string();
    let origin = if lan
        .daemon(B)
        .find_line(|l| l.contains(" bytes from peer ") && l.contains(&format!("{a_ip}:")))
        .is_some()
    {
        A
    } else {
        C
    };
    let other = if origin == A { C } else { A };
    assert_eq!(served(&lan, origin, 1), 1);

    let again = lan.relay_request(B, "GET", &path);
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(transfers_done(&lan, 2), 2);
    assert_eq!(lookups(&lan), 2, "asked again: a fresh question");
    let served_by = |host: usize| {
        lan.daemon(host)
            .count_lines(|l| l.contains("GET /zeta") && l.contains("-> 200"))
    };
    wait_until(
        "both requests served by a peer",
        wait,
        || (served_by(origin) + served_by(other) == 2).then_some(()),
        || format!("{} + {}", served_by(origin), served_by(other)),
    );
    assert!(same_bytes(&lan.mirror_file(&lan.file("zeta")), &{
        let p = lan._work.join("again");
        std::fs::write(&p, &again.body).unwrap();
        p
    }));
}

/// Nothing in a pacman 7 download folder (`<cache>/download-XXXXXX/`, finished files of a
/// batch still running, `.part` files) nor a `.part` at the cache's top is served to a peer or
/// offered to one: asked straight at A's peer server by every spelling of the path, refused;
/// asked through B's relay by the real pacman, they come from the mirror, not from A.
fn nothing_in_a_download_folder_is_ever_served(pacman: Pacman) {
    let packages = [("in-batch", 2 * MB), ("in-flight", MB)];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::download_folder", 0, &packages, None) else {
        return;
    };
    let (done, partial) = (lan.file("in-batch"), lan.file("in-flight"));
    let folder_name = "download-Qx7b2Z";
    let folder = lan.client(A).cachedir.join(folder_name);
    fs::create_dir(&folder).expect("mkdir download folder");
    fs::copy(lan.mirror_file(&done), folder.join(&done)).expect("copy finished file");
    let bytes = fs::read(lan.mirror_file(&partial)).expect("mirror file");
    let half = &bytes[..bytes.len() / 2];
    fs::write(folder.join(format!("{partial}.part")), half).expect("write .part");
    fs::write(lan.client(A).cached(&format!("{partial}.part")), half).expect("write .part");
    {
        use std::os::unix::fs::PermissionsExt;
        // As pacman 7 makes it (flocon runs as root here, so only its name rules keep it out).
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    lan.start_all();

    let a_peer = lan.lab.host(A).addr(common::flocon::PEER_PORT);
    let paths = [
        format!("/{folder_name}/{done}"),
        format!("/{folder_name}%2F{done}"),
        format!("/{folder_name}%2f{done}"),
        format!("/./{folder_name}/{done}"),
        format!("/{folder_name}/{partial}.part"),
        format!("/{partial}.part"),
        format!("/{folder_name}/"),
        format!("/{folder_name}"),
    ];
    for path in &paths {
        for method in ["GET", "HEAD"] {
            let raw = build_request(method, &a_peer.to_string(), path, &[]);
            let r = lan
                .lab
                .run_in(B, || request(a_peer, &raw))
                .unwrap_or_else(|e| panic!("{method} {path} to A's peer server: {e}"));
            assert!(
                (400..500).contains(&r.status),
                "{method} {path} to A's peer server answered {}",
                r.status
            );
        }
    }

    lan.sync(B);
    lan.mirror.clear_access_log();
    lan.download(B, &["in-batch", "in-flight"]);
    lan.assert_cached(B, &["in-batch", "in-flight"], false);
    let log = lan.mirror.access_log();
    for f in [&done, &partial] {
        let reqs = lan.mirror_requests(&log, f);
        assert_eq!(reqs.len(), 1, "{f} from the mirror once: {log:?}");
        assert_eq!(reqs[0].status, 200, "{:?}", reqs[0]);
        let served = lan.daemon(A).count_lines(|l| {
            l.contains(f.as_str()) && (l.contains("-> 200") || l.contains("-> 206"))
        });
        assert_eq!(served, 0, "A served {f}: {:?}", lan.daemon(A).lines());
    }
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "from peers"), 0, "{status}");
}

/// pacman 7 with flocon as its `CacheServer` and the mirror as its `Server`: what a peer has
/// comes through flocon, what no peer has is flocon's quiet 404 and pacman takes it from the
/// mirror, with no error printed (pacman 6.0.2 does not know `CacheServer`).
#[test]
fn pacman7_takes_peer_hits_from_a_cache_server_line_and_the_rest_from_its_mirror() {
    let pacman = Pacman::V7;
    let packages = [("on-a-peer", MB), ("on-the-mirror", 500 * KB)];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::cache_server", 0, &packages, None) else {
        return;
    };
    lan.seed_cache(A, &["on-a-peer"]);
    for h in FLOCON_HOSTS {
        lan.start_flocon(h, &Upstream::Nothing);
    }
    lan.wait_peers(&FLOCON_HOSTS, 2);
    let mut conf = PacmanConf::new(&[lan.mirror.server_url()]);
    conf.cache_servers = vec![RELAY_SERVER.to_string()];
    lan.client(B).write_conf(&conf);
    lan.sync(B);
    lan.mirror.clear_access_log();

    let out = lan
        .client(B)
        .run_expect_ok(Some(lan.ns(B)), &["-Sw", "on-a-peer", "on-the-mirror"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("error:"), "no error printed: {text}");
    lan.assert_cached(B, &["on-a-peer", "on-the-mirror"], false);
    let log = lan.mirror.access_log();
    let from_peer = lan.file("on-a-peer");
    assert!(
        lan.mirror_requests(&log, &from_peer).is_empty(),
        "{from_peer} was asked of the mirror although A has it: {log:?}"
    );
    let reqs = lan.mirror_requests(&log, &lan.file("on-the-mirror"));
    assert_eq!(reqs.len(), 1, "{log:?}");
    assert!(
        reqs[0].user_agent.starts_with("pacman/7."),
        "pacman 7 itself went to the mirror: {:?}",
        reqs[0]
    );
    let b_ip = lan.lab.host(B).ip().to_string();
    lan.daemon(A).wait_for_line(
        |l| l.contains(&format!("GET /{from_peer} -> 200")) && l.contains(&b_ip),
        Duration::from_secs(5),
    );
    let status = lan.status(B);
    assert_eq!(relay_counter(&status, "from peers"), 1, "{status}");
    assert_eq!(relay_counter(&status, "from upstream"), 0, "{status}");
}

/// A host whose cache holds corrupted copies (same names and sizes, 14 bytes flipped in the
/// middle: a dying SD card) never offers them: asked by content (protocol version 2), it
/// hashes its copy, finds it unlike its own sync database, says no, and logs it once; the
/// first `pacman -Sw` is clean, every file byte for byte the mirror's, and that host is never
/// asked to send one. A good copy on another host is still shared.
fn corrupted_copies_are_never_offered(pacman: Pacman) {
    let packages = [
        ("rot-a", 150 * KB),
        ("rot-b", 150 * KB),
        ("good-c", 150 * KB),
    ];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::corrupted_copies", 0, &packages, None) else {
        return;
    };
    for name in ["rot-a", "rot-b"] {
        let file = lan.file(name);
        let mut bytes = fs::read(lan.mirror_file(&file)).expect("mirror file");
        corrupt(&mut bytes);
        fs::write(lan.client(A).cachedir.join(&file), &bytes).expect("write copy");
    }
    lan.seed_cache_files(C, &["good-c"], false);
    for h in FLOCON_HOSTS {
        lan.start_trusting(h, DISTRO, &[]);
    }
    lan.wait_peers(&FLOCON_HOSTS, 2);
    for h in FLOCON_HOSTS {
        lan.sync_and_index(h);
    }
    let all = ["rot-a", "rot-b", "good-c"];
    lan.download(B, &all);
    lan.assert_cached(B, &all, false);
    let wait = Duration::from_secs(5);
    let a = lan.daemon(A);
    for name in ["rot-a", "rot-b"] {
        let file = lan.file(name);
        assert_eq!(
            a.count_lines(|l| l.contains(&format!("GET /{file}"))),
            0,
            "A was asked to send its bad {file}"
        );
        let warned = |l: &str| l.contains(&file) && l.contains("does not match its sync database");
        assert_eq!(
            a.count_lines_when(warned, 1, wait),
            1,
            "one warning for {file}"
        );
    }
    let good = lan.file("good-c");
    assert_eq!(
        lan.daemon(C).count_lines_when(
            |l| l.contains(&format!("GET /{good}")) && l.contains("-> 200"),
            1,
            wait
        ),
        1,
        "C's good copy was shared"
    );
    let status = lan.status(A);
    assert!(
        status.contains("cached files unlike their sync database: 2"),
        "{status}"
    );
}

/// A fake peer that says HAVE to every question and sends the right number of wrong bytes:
/// B's relay hashes what it streams, closes pacman's connection before the last byte, and
/// bans the peer (by address and host id). pacman (flocon first, then its usual mirror, as
/// the README advises) resumes from the mirror: at most the first run reports an error, no run
/// leaves a bad file in the cache, the second run is clean, the status page shows the ban, and
/// once the ban (`--ban-time 8`) is over the peer is asked again.
fn a_lying_peer_is_banned_and_costs_one_run_at_most(pacman: Pacman) {
    let packages = [
        ("lie-a", 150 * KB),
        ("lie-b", 150 * KB),
        ("later", 100 * KB),
    ];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::liar", 1, &packages, None) else {
        return;
    };
    let liar = FakePeer::start(
        &lan.lab,
        4,
        DISTRO,
        ARCH,
        Claims::All,
        Behaviour::Corrupt {
            dir: lan.repo.dir.clone(),
        },
    );
    let mut conf = PacmanConf::new(&[RELAY_SERVER.to_string(), lan.mirror.server_url()]);
    conf.parallel_downloads = 5;
    lan.client(B).write_conf(&conf);
    for h in FLOCON_HOSTS {
        lan.start_trusting(h, DISTRO, &["--ban-time", "8"]);
    }
    lan.wait_peers(&FLOCON_HOSTS, 3);
    lan.sync_and_index(B);
    let names = ["lie-a", "lie-b"];
    let args = ["-Sw", "lie-a", "lie-b"];
    let first = lan.client(B).run(Some(lan.ns(B)), &args);
    eprintln!("first run: {}", first.status);
    lan.assert_no_bad_file(B, &names);
    let tried = liar
        .requests()
        .iter()
        .any(|r| r.contains(&lan.file("lie-a")) || r.contains(&lan.file("lie-b")));
    assert!(tried, "the liar was never tried: the test proves nothing");
    let second = lan.client(B).run(Some(lan.ns(B)), &args);
    assert!(second.status.success(), "the second run failed");
    lan.assert_cached(B, &names, false);
    let status = lan.status(B);
    let banned = format!("banned peer {:016x}", liar.host_id());
    assert!(status.contains(&banned), "{status}");
    assert!(status.contains("1 peers banned"), "{status}");
    lan.daemon(B)
        .wait_for_line_containing("banned for 8 s", Duration::from_secs(1));

    // The ban ends: the peer is asked again.
    wait_until(
        "the ban to end",
        Duration::from_secs(15),
        || lan.try_status(B).filter(|s| s.contains("0 peers banned")),
        || lan.try_status(B).unwrap_or_default(),
    );
    let later = lan.file("later");
    // It lies again: the connection is closed short of the end, which is all this asks.
    let path = format!("/{TEST_REPO}/os/x86_64/{later}");
    let raw = build_request("GET", "localhost:19433", &path, &[]);
    let _ = lan.lab.run_in(B, || request(relay_addr(), &raw));
    assert!(
        liar.who_has().iter().any(|n| n == &later),
        "the peer was not asked again after its ban: {:?}",
        liar.who_has()
    );
}

/// Share by content: an EndeavourOS host (`--distro endeavouros`) gives an Arch host a file
/// whose SHA-256 is the Arch database's, and a compatible host holding another build under the
/// same name (other bytes; it reads no database, so it can only answer by content) is never
/// used: that file comes from the mirror.
fn identical_files_are_shared_across_distributions_by_content(pacman: Pacman) {
    let packages = [("shared", 150 * KB), ("rebuilt", 150 * KB)];
    let Some(mut lan) = Lan::new(pacman, "pacman_lan::by_content", 0, &packages, None) else {
        return;
    };
    lan.seed_cache_files(A, &["shared"], false);
    let build = lan._work.join("other-build");
    fs::create_dir_all(&build).expect("mkdir");
    let mut spec = PackageSpec::new("rebuilt", "1.0", 150 * KB);
    spec.seed = Some(0x0123_4567);
    let other = make_package_spec(&build, &spec);
    let rebuilt = lan.file("rebuilt");
    fs::copy(&other, lan.client(C).cachedir.join(&rebuilt)).expect("copy");
    assert!(!same_bytes(&other, &lan.mirror_file(&rebuilt)));
    lan.start_trusting(A, "endeavouros", &[]);
    lan.start_trusting(B, DISTRO, &[]);
    lan.start_flocon(C, &Upstream::Mirror);
    lan.wait_peers_compatible(&[B], 2, 1);
    lan.sync_and_index(A);
    lan.sync_and_index(B);
    lan.mirror.clear_access_log();
    lan.download(B, &["shared", "rebuilt"]);
    lan.assert_cached(B, &["shared", "rebuilt"], false);
    let wait = Duration::from_secs(5);
    let shared = lan.file("shared");
    assert_eq!(
        lan.daemon(A).count_lines_when(
            |l| l.contains(&format!("GET /{shared}")) && l.contains("-> 200"),
            1,
            wait
        ),
        1,
        "the EndeavourOS host gave the identical file"
    );
    assert_eq!(
        lan.daemon(C)
            .count_lines(|l| l.contains(&format!("GET /{rebuilt}"))),
        0,
        "the other build was used"
    );
    let log = lan.mirror.access_log();
    assert!(lan.mirror_requests(&log, &shared).is_empty(), "{log:?}");
    assert!(!lan.mirror_requests(&log, &rebuilt).is_empty(), "{log:?}");
}

/// Each scenario above that holds for every pacman runs twice: under Debian's pacman 6.0.2
/// (`pacman6::NAME`) and under pacman 7 with its download user and sandbox (`pacman7::NAME`).
macro_rules! under_pacman_6_and_7 {
    ($($scenario:ident),* $(,)?) => {
        mod pacman6 {
            $( #[test] fn $scenario() { super::$scenario(super::Pacman::V6) } )*
        }
        mod pacman7 {
            $( #[test] fn $scenario() { super::$scenario(super::Pacman::V7) } )*
        }
    };
}

under_pacman_6_and_7!(
    packages_come_from_the_peer_that_has_them_and_the_rest_from_the_mirror,
    a_peer_killed_in_the_middle_of_200_mb_is_continued_from_the_mirror,
    peers_that_stall_or_answer_garbage_are_skipped_and_the_mirror_serves,
    without_an_upstream_what_no_peer_has_is_a_quiet_404,
    an_https_upstream_is_a_redirect_for_what_no_peer_has,
    packages_and_databases_come_through_flocon_from_an_https_mirror,
    a_signature_comes_from_the_peer_that_gave_the_package,
    a_package_asked_again_never_goes_straight_back_to_its_peer,
    nothing_in_a_download_folder_is_ever_served,
    corrupted_copies_are_never_offered,
    a_lying_peer_is_banned_and_costs_one_run_at_most,
    identical_files_are_shared_across_distributions_by_content,
    an_ipv6_only_lan_takes_packages_from_peers,
);
