//! Self-tests of the shared test harness in `tests/common`: temp dirs and ports, the HTTP
//! client, process capture and signals, network-namespace labs (unicast, multicast, pulled
//! cables), the nginx mirror, and pacman 6 as a client of that mirror. None of these start the
//! flocon binary, so they pass while the daemon is being written.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::pacman::{
    self, PackageSpec, PacmanClient, PacmanConf, Signatures, TestKey, make_package,
    make_package_spec, make_repo, make_repo_signed, same_bytes,
};
use common::{Daemon, Lab, Mirror, TempDir, http_get, require_tools};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn temp_dir_is_removed_on_drop_and_ports_are_free() {
    let kept;
    {
        let dir = TempDir::new("selftest");
        let sub = dir.mkdir("a/b");
        std::fs::write(sub.join("f"), b"x").unwrap();
        kept = dir.path().to_path_buf();
        assert!(kept.starts_with(std::env::temp_dir()));
        assert!(TempDir::new("selftest").path() != dir.path());
    }
    assert!(!kept.exists(), "{} still exists after drop", kept.display());

    let port = common::free_port();
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("tcp port from free_port() is free");
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("udp port from free_port() is free");
    assert_ne!(common::free_tcp_port(), 0);
    assert_ne!(common::free_udp_port(), 0);
}

/// Serve the canned `responses`, one per connection, then stop.
fn canned_server(responses: Vec<&'static [u8]>) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let mut heads = Vec::new();
        for resp in responses {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(5 * SECOND)).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed before sending a request head");
                req.extend_from_slice(&buf[..n]);
            }
            heads.push(String::from_utf8_lossy(&req).into_owned());
            s.write_all(resp).unwrap();
        }
        heads
    });
    (addr, handle)
}

#[test]
fn http_client_reads_length_chunked_and_close_delimited_bodies() {
    let (addr, server) = canned_server(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhelloEXTRA",
        b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\n\r\nno such file",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
    ]);
    let r = http_get(addr, "/a+b:c", &[("Range", "bytes=0-")]);
    assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("x-a"), Some("1, 2"));
    assert_eq!(r.content_length(), Some(5));

    let r = http_get(addr, "/chunked", &[]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"abcde");

    let r = http_get(addr, "/missing", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no such file");

    let err = common::http::try_http_get(addr, "/short", &[]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");

    let heads = server.join().unwrap();
    assert!(
        heads[0].starts_with("GET /a+b:c HTTP/1.1\r\n"),
        "path sent as is: {:?}",
        heads[0]
    );
    assert!(heads[0].contains("\r\nRange: bytes=0-\r\n"));
    assert!(heads[0].contains(&format!("\r\nHost: {addr}\r\n")));
}

#[test]
fn http_client_times_out_on_a_silent_server() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let raw = common::http::build_request("GET", "x", "/", &[]);
    let err = common::http::request_timeout(addr, &raw, Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < 5 * SECOND);
    drop(listener);
}

const SH_DAEMON: &str = r#"trap 'echo got USR1' USR1; trap 'echo bye; exit 3' TERM; echo "pid=$$"; echo ready >&2; while :; do sleep 0.02; done"#;

#[test]
fn daemon_captures_lines_takes_signals_and_reports_exit() {
    let mut d = Daemon::spawn("sh", None, "/bin/sh", ["-c", SH_DAEMON]);
    let pid_line = d.wait_for_line(|l| l.starts_with("pid="), 5 * SECOND);
    assert_eq!(pid_line, format!("pid={}", d.pid()));
    d.wait_for_line_containing("ready", 5 * SECOND);
    let mark = d.line_count();
    d.signal(libc::SIGUSR1);
    let (i, _) = d.wait_for_line_after(mark, |l| l == "got USR1", 5 * SECOND);
    assert!(i >= mark);
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(5 * SECOND);
    assert_eq!(status.code(), Some(3));
    assert!(d.lines().iter().any(|l| l == "bye"));
    assert!(!d.is_running());
}

#[test]
#[should_panic(expected = "closed its output")]
fn daemon_wait_fails_fast_when_the_process_exits() {
    let d = Daemon::spawn("quitter", None, "/bin/sh", ["-c", "echo one; exit 0"]);
    d.wait_for_line(|l| l == "never printed", 30 * SECOND);
}

#[test]
fn daemon_is_killed_on_drop() {
    let d = Daemon::spawn("sleeper", None, "/bin/sleep", ["30"]);
    let pid = d.pid() as libc::pid_t;
    drop(d);
    // SAFETY: signal 0 only checks whether the pid exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "pid {pid} still exists after drop");
}

/// Send `payload` from host `from` to `to_addr` every 100 ms until `receiver` gets it.
fn send_until_received(
    lab: &Lab,
    from: usize,
    to_addr: SocketAddr,
    receivers: &[&UdpSocket],
    payload: &[u8],
) {
    let sender = lab.run_in(from, || {
        let s = UdpSocket::bind((lab.host(from).ip(), 0)).unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        s
    });
    let deadline = Instant::now() + 5 * SECOND;
    let mut got = vec![false; receivers.len()];
    while got.iter().any(|g| !g) {
        assert!(
            Instant::now() < deadline,
            "datagram from h{from} to {to_addr} not received within 5 s by receivers {got:?}"
        );
        sender.send_to(payload, to_addr).unwrap();
        for (i, r) in receivers.iter().enumerate() {
            r.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 256];
            while let Ok((n, src)) = r.recv_from(&mut buf) {
                if &buf[..n] == payload {
                    assert_eq!(src.ip(), IpAddr::V4(lab.host(from).ip()), "source address");
                    got[i] = true;
                    break;
                }
            }
        }
    }
}

#[test]
fn lab_hosts_reach_each_other() {
    let Some(lab) = Lab::new(3) else { return };
    for to in 0..3 {
        let rx = lab.run_in(to, || UdpSocket::bind((lab.host(to).ip(), 7000)).unwrap());
        for from in (0..3).filter(|f| *f != to) {
            let msg = format!("h{from}->h{to}");
            send_until_received(&lab, from, lab.host(to).addr(7000), &[&rx], msg.as_bytes());
        }
    }
    // IPv6 (no DAD delay) and TCP.
    let listener = lab.run_in(2, || TcpListener::bind((lab.host(2).ip6(), 8080)).unwrap());
    let ip6 = lab.host(2).ip6();
    let client = lab.run_in(0, move || std::net::TcpStream::connect((ip6, 8080)));
    assert!(
        client.is_ok(),
        "h0 cannot connect to [{ip6}]:8080: {client:?}"
    );
    drop(listener);
    // The namespaces are isolated from the host: the lab address is not reachable from here.
    let here = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    assert!(here.local_addr().unwrap().ip().is_loopback());

    if common::which("ping").is_some() {
        let out = lab.exec(0, "ping", ["-c1", "-W2", &lab.host(2).ip().to_string()]);
        assert!(out.status.success(), "ping: {}", common::show_output(&out));
    }
}

#[test]
fn lab_spawned_daemon_pid_is_the_program_pid() {
    let Some(lab) = Lab::new(1) else { return };
    let mut d = lab.spawn(0, "/bin/sh", ["-c", SH_DAEMON]);
    let line = d.wait_for_line(|l| l.starts_with("pid="), 5 * SECOND);
    assert_eq!(
        line,
        format!("pid={}", d.pid()),
        "ip netns exec must exec the program"
    );
    d.signal(libc::SIGUSR1);
    d.wait_for_line(|l| l == "got USR1", 5 * SECOND);
    let out = lab.exec_ok(0, "ip", ["-4", "-o", "addr", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}/24", lab.host(0).ip())), "{text}");
}

#[test]
fn lab_multicast_reaches_every_other_host() {
    let Some(lab) = Lab::new(3) else { return };
    let group = Ipv4Addr::new(239, 255, 70, 1);
    let port = 7001;
    let join = |i: usize| {
        lab.run_in(i, || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
            s.join_multicast_v4(&group, &lab.host(i).ip()).unwrap();
            s
        })
    };
    let (r1, r2) = (join(1), join(2));
    send_until_received(
        &lab,
        0,
        SocketAddr::from((group, port)),
        &[&r1, &r2],
        b"hello group",
    );
}

#[test]
fn lab_unplugged_host_gets_nothing_until_plugged_back() {
    let Some(lab) = Lab::new(2) else { return };
    let rx = lab.run_in(1, || UdpSocket::bind((lab.host(1).ip(), 7002)).unwrap());
    send_until_received(&lab, 0, lab.host(1).addr(7002), &[&rx], b"before");

    lab.unplug(1);
    let tx = lab.run_in(0, || UdpSocket::bind((lab.host(0).ip(), 0)).unwrap());
    for _ in 0..5 {
        let _ = tx.send_to(b"lost", lab.host(1).addr(7002));
    }
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let got = rx.recv_from(&mut buf);
    assert!(
        got.is_err(),
        "unplugged host received {:?}",
        got.map(|(n, _)| buf[..n].to_vec())
    );
    lab.plug(1);
    send_until_received(&lab, 0, lab.host(1).addr(7002), &[&rx], b"after plug");

    lab.link_down(1);
    lab.link_up(1);
    let out = lab.exec_ok(1, "ip", ["route", "show", "224.0.0.0/4"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("dev eth0"),
        "multicast route restored"
    );
    send_until_received(&lab, 0, lab.host(1).addr(7002), &[&rx], b"after link up");
}

#[test]
fn lab_namespaces_are_removed_on_drop() {
    let Some(lab) = Lab::new(2) else { return };
    let names: Vec<String> = lab
        .hosts()
        .iter()
        .map(|h| h.ns().to_string())
        .chain([lab.switch_ns().to_string()])
        .collect();
    let _sleeper = lab.spawn(0, "/bin/sleep", ["30"]);
    // The lab is dropped first on purpose: it must kill what still runs inside.
    drop(lab);
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&n)),
            "{n} left: {list}"
        );
    }
}

#[test]
fn mirror_serves_files_to_curl_and_logs_requests() {
    if !require_tools("mirror_serves_files_to_curl", &["nginx", "curl"]) {
        return;
    }
    let root = TempDir::new("mirror-root");
    let dir = root.mkdir("testrepo/os/x86_64");
    let mut data = vec![0u8; 300_000];
    pacman::fill_pseudo_random(&mut data, &mut 42);
    std::fs::write(dir.join("a+b-1:2.bin"), &data).unwrap();
    let mirror = Mirror::start(root.path(), None, common::free_loopback_addr());
    let out_file = root.join("fetched");
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--fail", "--max-time", "10", "-o"])
        .arg(&out_file)
        .arg(format!(
            "{}/testrepo/os/x86_64/a+b-1:2.bin",
            mirror.base_url()
        ));
    common::run_ok(curl, 15 * SECOND);
    assert_eq!(std::fs::read(&out_file).unwrap(), data);

    let r = http_get(
        mirror.addr(),
        "/testrepo/os/x86_64/a+b-1:2.bin",
        &[("Range", "bytes=10-19")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(http_get(mirror.addr(), "/nope", &[]).status, 404);

    let e = mirror.wait_for_request(|e| e.range == "bytes=10-19", 5 * SECOND);
    assert_eq!((e.status, e.body_bytes), (206, 10));
    let log = mirror.access_log();
    assert_eq!(log[0].uri, "/testrepo/os/x86_64/a+b-1:2.bin");
    assert!(log[0].user_agent.starts_with("curl/"), "{log:?}");
    assert_eq!(mirror.request_count("/nope"), 1);
}

#[test]
fn make_package_is_deterministic_and_incompressible() {
    if !require_tools("make_package", &["bsdtar", "zstd"]) {
        return;
    }
    let a = TempDir::new("pkg-a");
    let b = TempDir::new("pkg-b");
    let size = 3 << 20;
    let pa = make_package(a.path(), "foo", "1.2", size);
    let pb = make_package(b.path(), "foo", "1.2", size);
    assert_eq!(pa.file_name().unwrap(), "foo-1.2-1-x86_64.pkg.tar.zst");
    assert!(same_bytes(&pa, &pb), "same spec, same bytes");
    let len = std::fs::metadata(&pa).unwrap().len();
    assert!(
        len > size && len < size + 64 * 1024,
        "package of {len} bytes for {size} payload"
    );
    let mut other = PackageSpec::new("foo", "1.2", size);
    other.seed = Some(7);
    let pc = make_package_spec(b.path(), &other);
    assert!(!same_bytes(&pa, &pc), "another seed, other bytes");
    let listing = Command::new("bsdtar").arg("-tf").arg(&pa).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains(".PKGINFO") && listing.contains("usr/share/foo/payload.bin"),
        "{listing}"
    );
}

/// Build a repo of two packages (one of them 2 MiB) under `root`.
fn small_repo(root: &TempDir, sigs: Signatures<'_>) -> pacman::Repo {
    let build = root.mkdir("build");
    let pkgs = vec![
        make_package(&build, "alpha", "1.0", 2 << 20),
        make_package(&build, "beta", "2:0.5+git", 10_000),
    ];
    make_repo_signed(&root.join("mirror"), "testrepo", &pkgs, sigs)
}

#[test]
fn pacman_syncs_and_downloads_from_mirror_on_loopback() {
    if !pacman::require_pacman("pacman client test") || !require_tools("mirror", &["nginx"]) {
        return;
    }
    let tmp = TempDir::new("pacman-lo");
    let repo = small_repo(&tmp, Signatures::Fake);
    assert!(repo.db_file().is_file() && !repo.db_file().is_symlink());
    let mirror = Mirror::start(&repo.root, None, common::free_loopback_addr());
    let client = PacmanClient::new(
        &tmp.mkdir("client"),
        &PacmanConf::new(&[mirror.server_url()]),
    );
    client.sync_db(None);
    assert!(client.synced_db("testrepo").is_file());
    client.download(None, &["alpha", "beta"]);
    for name in repo.package_names() {
        assert!(
            same_bytes(&client.cached(&name), &repo.file(&name)),
            "{name} differs"
        );
    }
    let paths = mirror.requested_paths();
    assert!(
        paths.contains(&"/testrepo/os/x86_64/testrepo.db".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/testrepo/os/x86_64/beta-2:0.5+git-1-x86_64.pkg.tar.zst".to_string()));
    // Found by experiment: with SigLevel = Never pacman 6.0.2 asks for no signature at all.
    assert!(!paths.iter().any(|p| p.ends_with(".sig")), "{paths:?}");
    let ua = &mirror.access_log()[0].user_agent;
    assert!(ua.starts_with("pacman/"), "{ua}");
}

#[test]
fn pacman_in_a_lab_checks_real_signatures_from_a_mirror_host() {
    if !pacman::require_pacman("signed pacman test")
        || !require_tools("signed pacman test", &["nginx", "gpg", "gpgconf"])
    {
        return;
    }
    let Some(lab) = Lab::new(2) else { return };
    let tmp = TempDir::new("pacman-lab");
    let key = TestKey::generate();
    let repo = small_repo(&tmp, Signatures::Gpg(&key));
    let mirror = Mirror::start(&repo.root, Some(lab.host(0).ns()), lab.host(0).addr(80));
    let conf = PacmanConf::new(&[mirror.server_url()]).require_package_signatures();
    let client = PacmanClient::new(&tmp.mkdir("client"), &conf);
    client.import_key(&key);
    let ns = Some(lab.host(1).ns());
    client.sync_db(ns);
    client.download(ns, &["alpha"]);
    let alpha = &repo.package_names()[0];
    assert!(same_bytes(&client.cached(alpha), &repo.file(alpha)));
    let sig = format!("{alpha}.sig");
    assert!(same_bytes(&client.cached(&sig), &repo.file(&sig)));
    let e = mirror.wait_for_request(|e| e.uri.ends_with(&sig), 5 * SECOND);
    assert_eq!(
        e.client,
        lab.host(1).ip().to_string(),
        "request came from host 1"
    );

    // A signature of other bytes makes pacman reject the package.
    let beta = &repo.package_names()[1];
    std::fs::copy(repo.file(&sig), repo.file(&format!("{beta}.sig"))).unwrap();
    let out = client.run(ns, &["-Sw", "beta"]);
    assert!(!out.status.success(), "pacman accepted a bad signature");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid or corrupted package"),
        "{}",
        common::show_output(&out)
    );
}

#[test]
fn fake_signatures_sit_next_to_packages() {
    if !require_tools("make_repo", &["repo-add", "bsdtar"]) {
        return;
    }
    let tmp = TempDir::new("fake-sig");
    let p = make_package(tmp.path(), "gamma", "1", 100);
    let repo = make_repo(&tmp.join("m"), "testrepo", &[p]);
    let name = &repo.package_names()[0];
    let sig = std::fs::read(repo.file(&format!("{name}.sig"))).unwrap();
    assert_eq!(sig.len(), 119);
    assert_eq!(repo.url_path(name), format!("/testrepo/os/x86_64/{name}"));
}
