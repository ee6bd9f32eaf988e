//! Files in flight are shared (issue 15): a lab of network namespaces with a slow nginx
//! mirror (host 0, `limit_rate`) and two flocon hosts A and B (hosts 1 and 2), each reading
//! a sync database of the test repository (so bodies are checked and spooled).
//!
//! What is checked: while A streams a package from the slow mirror, B's request for it is
//! answered FETCHING by A and served from A's spool as the bytes arrive: B's bytes are the
//! mirror's, and the mirror is asked once (by A). When A dies in the middle, B still gets the
//! whole file, byte for byte, its missing part from the mirror by `Range`. A spool file
//! changed on disk under A never reaches B's client whole. And with the real pacman 7
//! (`DownloadUser = alpm`: finished files stay in its 0700 download folder until the batch
//! ends), B takes the files A's long batch already fetched, from A, while that batch runs.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::http::{Response, build_request, request_timeout};
use common::mirror::MirrorOptions;
use common::pacman::{
    ARCH, PackageSpec, Pacman, PacmanClient, PacmanConf, Repo, Signatures, TEST_REPO,
    make_package_spec, make_repo_signed, same_bytes,
};
use common::{Daemon, Lab, Mirror, TempDir, wait_until};

const MIRROR: usize = 0;
const A: usize = 1;
const B: usize = 2;
const MB: u64 = 1 << 20;
const START: Duration = Duration::from_secs(20);
/// A whole transfer through the relay, slow mirror included.
const TRANSFER: Duration = Duration::from_secs(60);
const RELAY_SERVER: &str = "http://127.0.0.1:19433/$repo/os/$arch";

fn relay_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::flocon::LOCAL_PORT))
}

/// The lab, the slow mirror, the repository and the flocon hosts.
struct Spooled {
    daemons: Vec<Option<Daemon>>,
    mirror: Mirror,
    repo: Repo,
    files: Vec<String>,
    lab: Lab,
    work: TempDir,
}

impl Spooled {
    /// Packages `(name, payload bytes)` on a mirror sending `rate` bytes a second per
    /// connection. `None` when the lab cannot be made (not root).
    fn new(test: &str, packages: &[(&str, u64)], rate: u64) -> Option<Spooled> {
        let lab = Lab::new(3)?;
        eprintln!("{test}: lab {}", lab.id());
        let work = TempDir::new("spool");
        let build = work.mkdir("build");
        let paths: Vec<PathBuf> = packages
            .iter()
            .map(|&(name, size)| make_package_spec(&build, &PackageSpec::new(name, "1.0", size)))
            .collect();
        let files = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let repo = make_repo_signed(&work.mkdir("mirror"), TEST_REPO, &paths, Signatures::None);
        let mirror = Mirror::start_with(
            &repo.root,
            Some(lab.host(MIRROR).ns()),
            lab.host(MIRROR).addr(80),
            &MirrorOptions {
                limit_rate: Some(rate),
                ..MirrorOptions::default()
            },
        );
        Some(Spooled {
            daemons: (0..3).map(|_| None).collect(),
            mirror,
            repo,
            files,
            lab,
            work,
        })
    }

    /// A pacman.conf for flocon on `host` naming a `DBPath` that holds the repository's
    /// sync database (as `pacman -Sy` would leave it), and its cache, made empty.
    fn host_dirs(&self, host: usize) -> (PathBuf, PathBuf) {
        let dir = self.work.join(format!("host{host}"));
        let sync = dir.join("db").join("sync");
        fs::create_dir_all(&sync).unwrap();
        fs::create_dir_all(dir.join("cache")).unwrap();
        fs::copy(self.repo.db_file(), sync.join(format!("{TEST_REPO}.db"))).unwrap();
        let conf = dir.join("pacman.conf");
        let text = format!(
            "[options]\nDBPath = {}/\n\n[{TEST_REPO}]\n",
            dir.join("db").display()
        );
        fs::write(&conf, text).unwrap();
        (conf, dir.join("cache"))
    }

    fn spool_dir(&self, host: usize) -> PathBuf {
        self.work.join(format!("host{host}")).join("spool")
    }

    /// Starts flocon on `host` with the mirror upstream, reading the sync database, its
    /// spool in the host's folder; `cache` overrides the cache directory (a pacman's).
    fn start(&mut self, host: usize, cache: Option<&Path>) {
        self.start_with(host, cache, &[]);
    }

    /// Like [`Spooled::start`], with `more` arguments.
    fn start_with(&mut self, host: usize, cache: Option<&Path>, more: &[&str]) {
        self.start_upstream(host, cache, more, true);
    }

    /// Like [`Spooled::start_with`]; without `upstream`, flocon has no mirror at all.
    fn start_upstream(&mut self, host: usize, cache: Option<&Path>, more: &[&str], upstream: bool) {
        let (conf, own_cache) = self.host_dirs(host);
        let cache = cache.map_or(own_cache, Path::to_path_buf);
        let (url, conf) = (self.mirror.server_url(), conf.display().to_string());
        let spool = self.spool_dir(host).display().to_string();
        let extra = [
            "--distro",
            "arch",
            "--architecture",
            ARCH,
            "--pacman-conf",
            &conf,
            "--spool-dir",
            &spool,
        ];
        let mut extra = extra.to_vec();
        if upstream {
            extra.extend(["--upstream", &url]);
        }
        extra.extend_from_slice(more);
        let args = common::flocon::daemon_args(&cache, &extra);
        let name = format!("flocon {}", if host == A { "A" } else { "B" });
        let daemon = self
            .lab
            .spawn_named(host, &name, env!("CARGO_BIN_EXE_flocon"), &args);
        daemon.wait_for_line_containing("pacman downloads through here", START);
        self.daemons[host] = Some(daemon);
    }

    fn try_status(&self, host: usize) -> Option<String> {
        self.lab
            .run_in(host, || {
                request_timeout(
                    relay_addr(),
                    &build_request("GET", "localhost", "/status", &[]),
                    Duration::from_secs(5),
                )
            })
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.text())
    }

    fn status(&self, host: usize) -> String {
        self.try_status(host).expect("a status page")
    }

    /// Waits until `host`'s status page passes `pred`.
    fn wait_status(&self, host: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_until(
            what,
            TRANSFER,
            || self.try_status(host).filter(|s| pred(s)),
            || self.try_status(host).unwrap_or_default(),
        )
    }

    /// Both hosts know each other and have read their database.
    fn wait_ready(&self) {
        for h in [A, B] {
            self.wait_status(h, "a peer and the database read", |s| {
                s.contains("1 compatible (this host")
                    && s.contains(&format!("database {TEST_REPO} ("))
                    && s.contains(" files indexed")
            });
        }
    }

    fn url_path(&self, i: usize) -> String {
        self.repo.url_path(&self.files[i])
    }

    fn mirror_bytes(&self, i: usize) -> Vec<u8> {
        fs::read(self.repo.file(&self.files[i])).unwrap()
    }

    /// GET of file `i` through `host`'s relay, from inside `host`, in a thread.
    fn fetch_in_background(&self, host: usize, i: usize) -> thread::JoinHandle<Response> {
        let attempt = self.try_fetch_in_background(host, i);
        thread::spawn(move || {
            attempt
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("GET through the relay: {e}"))
        })
    }

    /// Like [`Spooled::fetch_in_background`], an error (a body cut short) included.
    fn try_fetch_in_background(
        &self,
        host: usize,
        i: usize,
    ) -> thread::JoinHandle<std::io::Result<Response>> {
        let ns = self.lab.host(host).ns().to_owned();
        let raw = build_request("GET", "localhost:19433", &self.url_path(i), &[]);
        thread::spawn(move || {
            common::lab::in_netns(&ns, || request_timeout(relay_addr(), &raw, TRANSFER))
        })
    }
}

/// The number after `label` on the `spool:` line of a status page.
fn spool_counter(status: &str, label: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("spool: "))
        .unwrap_or_else(|| panic!("no spool line in:\n{status}"));
    line.split(", ")
        .find_map(|part| {
            part.strip_suffix(label)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} in {line}"))
}

/// The bytes written of the spool file `file` on a status page, if it is in flight.
fn in_flight(status: &str, file: &str) -> Option<u64> {
    let prefix = format!("  in flight {file}: ");
    let rest = status.lines().find_map(|l| l.strip_prefix(&prefix))?;
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn a_file_in_flight_is_served_to_the_lan_from_the_spool() {
    let Some(mut lan) = Spooled::new("spool_lan::in_flight", &[("slow-one", 6 * MB)], MB) else {
        return;
    };
    lan.start(A, None);
    lan.start(B, None);
    lan.wait_ready();
    let file = lan.files[0].clone();
    let a_fetch = lan.fetch_in_background(A, 0);
    lan.wait_status(A, "A spooling the file", |s| {
        in_flight(s, &file).is_some_and(|n| n > 0)
    });
    let b_fetch = lan.fetch_in_background(B, 0);
    let b = b_fetch.join().unwrap();
    let a = a_fetch.join().unwrap();
    let want = lan.mirror_bytes(0);
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 200);
    assert!(a.body == want, "A's body differs from the mirror's file");
    assert!(b.body == want, "B's body differs from the mirror's file");
    let log = lan.mirror.access_log();
    let asked: Vec<_> = log.iter().filter(|e| e.uri == lan.url_path(0)).collect();
    assert_eq!(asked.len(), 1, "the mirror sent the file once: {log:?}");
    assert_eq!(asked[0].client, lan.lab.host(A).ip().to_string());
    let status = lan.status(A);
    assert_eq!(
        spool_counter(&status, "bytes served to peers from the spool"),
        want.len() as u64,
        "{status}"
    );
    assert!(status.contains("1 verified"), "{status}");
    // Kept whole and verified now: a Range of it from A's peer server.
    let a_peer = lan.lab.host(A).addr(common::flocon::PEER_PORT);
    let raw = build_request(
        "GET",
        &a_peer.to_string(),
        &format!("/{file}"),
        &[("Range", "bytes=100-199")],
    );
    let part = lan
        .lab
        .run_in(B, || request_timeout(a_peer, &raw, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(part.status, 206);
    assert!(part.body == want[100..200], "the range's bytes");
    let b_daemon = lan.daemons[B].as_ref().unwrap();
    assert!(
        b_daemon
            .find_line(|l| l.contains("is fetching the file"))
            .is_some(),
        "B was answered FETCHING: {:?}",
        b_daemon.lines()
    );
}

#[test]
fn a_leader_killed_mid_stream_leaves_the_follower_whole() {
    let Some(mut lan) = Spooled::new("spool_lan::leader_killed", &[("cut-short", 8 * MB)], MB)
    else {
        return;
    };
    lan.start(A, None);
    lan.start(B, None);
    lan.wait_ready();
    let file = lan.files[0].clone();
    // A's own client sees its connection cut: an error.
    let a_fetch = lan.try_fetch_in_background(A, 0);
    lan.wait_status(A, "A spooling the file", |s| {
        in_flight(s, &file).is_some_and(|n| n > MB)
    });
    let b_fetch = lan.fetch_in_background(B, 0);
    lan.wait_status(A, "B following A's spool", |s| {
        spool_counter(s, "bytes served to peers from the spool") > MB
    });
    lan.daemons[A].as_mut().unwrap().kill();
    let b = b_fetch.join().unwrap();
    let _ = a_fetch.join();
    assert_eq!(b.status, 200);
    assert!(
        b.body == lan.mirror_bytes(0),
        "B's body differs from the mirror's file"
    );
    let log = lan.mirror.access_log();
    let b_ip = lan.lab.host(B).ip().to_string();
    let rest: Vec<_> = log
        .iter()
        .filter(|e| e.uri == lan.url_path(0) && e.client == b_ip)
        .collect();
    assert_eq!(rest.len(), 1, "B asked the mirror for the rest: {log:?}");
    assert!(
        rest[0].range.starts_with("bytes=") && !rest[0].range.starts_with("bytes=0-"),
        "only the missing part: {:?}",
        rest[0]
    );
    let status = lan.status(B);
    assert!(status.contains("1 failovers"), "{status}");
}

#[test]
fn a_spool_file_changed_on_disk_never_reaches_a_client_whole() {
    let Some(mut lan) = Spooled::new("spool_lan::corrupt", &[("tampered", 6 * MB)], MB) else {
        return;
    };
    lan.start(A, None);
    lan.start(B, None);
    lan.wait_ready();
    let file = lan.files[0].clone();
    let a_fetch = lan.fetch_in_background(A, 0);
    lan.wait_status(A, "A spooling the file", |s| {
        in_flight(s, &file).is_some_and(|n| n > MB)
    });
    // Flip bytes A has written already, before B reads them. The spool file has no name
    // (O_TMPFILE): it is reached through A's descriptor for it.
    let pid = lan.daemons[A].as_ref().unwrap().pid();
    let spool_dir = lan.spool_dir(A);
    let spool_file =
        common::fd_under(pid, &spool_dir).expect("A's spool file among its descriptors");
    assert_eq!(
        fs::read_dir(&spool_dir).unwrap().count(),
        0,
        "no name in the spool directory"
    );
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&spool_file)
            .unwrap();
        f.write_all_at(b"not the mirror's bytes", 1000).unwrap();
    }
    let b = lan.try_fetch_in_background(B, 0).join().unwrap();
    let _ = a_fetch.join();
    let want = lan.mirror_bytes(0);
    // The relay closes its client's connection short of the last byte.
    if let Ok(b) = &b {
        assert!(
            b.body != want && b.body.len() < want.len(),
            "B's client got {} bytes; the file has {}",
            b.body.len(),
            want.len()
        );
    }
    let status = lan.status(B);
    assert!(status.contains(", 1 wrong"), "{status}");
    assert!(status.contains("banned peer"), "{status}");
}

/// pacman 7 with `DownloadUser = alpm` keeps a batch's finished files in its 0700 download
/// folder until the whole batch is done. B runs `pacman -Sw` of the same packages while A's
/// batch is still running (its large package still coming from the slow mirror): B gets the
/// small ones A finished, and the large one as A receives it, all from A; the mirror sends
/// each file once.
#[test]
fn pacman7_a_host_in_the_middle_of_a_batch_shares_what_it_fetched() {
    mid_batch(true);
}

/// The control: the same batches with no spool (`--spool-size 0`) cost the mirror the files
/// A had finished twice, since they are invisible in A's download folder.
#[test]
fn pacman7_without_a_spool_the_same_batches_cost_the_mirror_twice() {
    mid_batch(false);
}

fn mid_batch(spool: bool) {
    let pacman = Pacman::V7;
    if !pacman.require("spool_lan::pacman7_mid_batch") {
        return;
    }
    let packages = [("small-a", MB), ("small-b", MB), ("large", 10 * MB)];
    let Some(mut lan) = Spooled::new("spool_lan::pacman7_mid_batch", &packages, 2 * MB) else {
        return;
    };
    let mut conf = PacmanConf::new(&[RELAY_SERVER.to_string()]);
    conf.parallel_downloads = 5;
    let dirs = [TempDir::new("pacman-a"), TempDir::new("pacman-b")];
    let clients = [
        PacmanClient::of(pacman, dirs[0].path(), &conf),
        PacmanClient::of(pacman, dirs[1].path(), &conf),
    ];
    let more: &[&str] = if spool { &[] } else { &["--spool-size", "0"] };
    lan.start_with(A, Some(&clients[0].cachedir), more);
    lan.start_with(B, Some(&clients[1].cachedir), more);
    lan.wait_ready();
    for (client, host) in clients.iter().zip([A, B]) {
        client.sync_db(Some(lan.lab.host(host).ns()));
    }
    lan.mirror.clear_access_log();
    let names = ["small-a", "small-b", "large"];
    let a_ns = lan.lab.host(A).ns().to_owned();
    let a_batch = {
        let client = clients[0].clone();
        thread::spawn(move || client.download(Some(&a_ns), &names))
    };
    // The small files are done (verified and kept in A's spool) while the large one is not.
    let (small_a, small_b, large) = (
        lan.files[0].clone(),
        lan.files[1].clone(),
        lan.files[2].clone(),
    );
    if spool {
        lan.wait_status(A, "A's small files spooled, the large one in flight", |s| {
            s.contains(&format!("  kept {small_a}:"))
                && s.contains(&format!("  kept {small_b}:"))
                && in_flight(s, &large).is_some()
        });
    } else {
        // The same moment, told by the mirror: the small files sent whole, the large not yet.
        wait_until(
            "the mirror to have sent A's small files",
            TRANSFER,
            || {
                let log = lan.mirror.access_log_now();
                let done = |f: &str| log.iter().any(|e| e.uri == lan.repo.url_path(f));
                (done(&small_a) && done(&small_b) && !done(&large)).then_some(())
            },
            || format!("{:?}", lan.mirror.access_log_now()),
        );
    }
    assert!(
        !clients[0].cached(&small_a).exists(),
        "pacman 7 keeps a batch's files out of the cache until the batch ends"
    );
    clients[1].download(Some(lan.lab.host(B).ns()), &names);
    a_batch.join().unwrap();
    for i in 0..3 {
        let f = &lan.files[i];
        for c in &clients {
            let got = c.cached(f);
            assert!(got.exists(), "{f} is not in a cache");
            assert!(
                same_bytes(&got, &lan.repo.file(f)),
                "{f} differs from the mirror's"
            );
        }
    }
    let log = lan.mirror.access_log();
    let a_ip = lan.lab.host(A).ip().to_string();
    let package_bytes: u64 = (0..3)
        .map(|i| fs::metadata(lan.repo.file(&lan.files[i])).unwrap().len())
        .sum();
    let sent: u64 = log
        .iter()
        .filter(|e| (0..3).any(|i| e.uri == lan.url_path(i)))
        .map(|e| e.body_bytes)
        .sum();
    eprintln!(
        "mid-batch, spool {}: the mirror sent {sent} package bytes for {package_bytes} ({:.2}x)",
        if spool { "on" } else { "off" },
        sent as f64 / package_bytes as f64
    );
    for i in 0..3 {
        let asked: Vec<_> = log.iter().filter(|e| e.uri == lan.url_path(i)).collect();
        if spool {
            assert_eq!(
                asked.len(),
                1,
                "{} from the mirror once: {log:?}",
                lan.files[i]
            );
            assert_eq!(asked[0].client, a_ip, "{:?}", asked[0]);
        } else if i < 2 {
            assert_eq!(
                asked.len(),
                2,
                "{} from the mirror twice: {log:?}",
                lan.files[i]
            );
        }
    }
    let status = lan.status(B);
    if spool {
        assert_eq!(sent, package_bytes);
        assert!(
            status.contains("3 files ("),
            "B got the three from A: {status}"
        );
    } else {
        assert!(sent > package_bytes);
        assert!(status.contains("spool: off"), "{status}");
    }
}

/// A file larger than the spool's cap streams to pacman unspooled, with one clear log line;
/// the LAN then gets it from the mirror as before (never a partial or unverified file).
#[test]
fn a_file_that_does_not_fit_streams_unshared_with_a_log_line() {
    let Some(mut lan) = Spooled::new("spool_lan::no_room", &[("too-big", 3 * MB)], 2 * MB) else {
        return;
    };
    lan.start_with(A, None, &["--spool-size", "1"]);
    lan.start(B, None);
    lan.wait_ready();
    let a_fetch = lan.fetch_in_background(A, 0);
    let line = lan.daemons[A].as_ref().unwrap().wait_for_line_containing(
        "streams to pacman without being shared while in flight",
        TRANSFER,
    );
    assert!(line.contains(&lan.files[0]), "{line}");
    assert!(line.contains("cap of 1048576 bytes"), "{line}");
    let b = lan.fetch_in_background(B, 0).join().unwrap();
    let a = a_fetch.join().unwrap();
    let want = lan.mirror_bytes(0);
    assert!(
        a.body == want && b.body == want,
        "both whole, the mirror's bytes"
    );
    let log = lan.mirror.access_log();
    let asked = log.iter().filter(|e| e.uri == lan.url_path(0)).count();
    assert_eq!(asked, 2, "each host from the mirror: {log:?}");
    let status = lan.status(A);
    assert!(status.contains("1 not spooled (no room)"), "{status}");
}

/// A claim whose leader never streams the file (it has no mirror to fetch it from: 404) is
/// released when the leader's request ends: the other host, which claimed the same file at
/// the same moment and follows the leader, answers at once instead of waiting out the 3 s a
/// follower gives its leader to start serving.
#[test]
fn a_leader_with_nothing_to_fetch_from_frees_its_followers_at_once() {
    let Some(mut lan) = Spooled::new("spool_lan::released", &[("gone-one", MB)], 4 * MB) else {
        return;
    };
    lan.start_upstream(A, None, &[], false);
    lan.start_upstream(B, None, &[], false);
    lan.wait_ready();
    let started = std::time::Instant::now();
    let a = lan.try_fetch_in_background(A, 0);
    let b = lan.try_fetch_in_background(B, 0);
    let (a, b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
    let took = started.elapsed();
    assert_eq!((a.status, b.status), (404, 404));
    assert!(
        took < Duration::from_secs(2),
        "both answered in {took:?}: a follower waited for a leader that had nothing to serve"
    );
}
