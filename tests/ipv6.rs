//! Discovery and transfers over IPv6 (issue 16): on a LAN with no IPv4 address at all (each
//! host's IPv6 link-local address only) three daemons find each other within a second with no
//! configuration, and one fetches a file from another at its link-local address; a host whose
//! link comes up 3 s after flocon started, or whose link-local address changes, is known to the
//! others within a second without a signal; on a dual-stack LAN each host is listed once, at
//! its IPv4 address, though heard on both families.
//!
//! Each test builds its own lab (tests/common/lab.rs), so they run in parallel. The real pacman
//! on an IPv6-only LAN is in tests/pacman_lan.rs.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::thread;
use std::time::{Duration, Instant};

use common::flocon::{self as fl, Host};
use common::lab::{Addressing, Lab};

/// Bound for hosts to see each other where the test does not measure it.
const MESH: Duration = Duration::from_secs(5);
const LINK_LOCAL_ONLY: Addressing = Addressing::Ipv6Only { ula: false };

#[track_caller]
fn lab(test: &str, n: usize, addressing: Addressing) -> Option<Lab> {
    if !common::require_root(test) {
        return None;
    }
    Lab::with(n, addressing)
}

/// Host `i`'s one link-local address.
#[track_caller]
fn link_local(lab: &Lab, i: usize) -> Ipv6Addr {
    match lab.host(i).link_local()[..] {
        [a] => a,
        ref other => panic!("h{i}: expected one link-local address, got {other:?}"),
    }
}

/// GET `path` on host `i`'s loopback port.
#[track_caller]
fn local_get(lab: &Lab, i: usize, path: &str) -> common::Response {
    match fl::local_get(lab, i, path) {
        Ok(r) => r,
        Err(e) => panic!("h{i}: GET {path}: {e}"),
    }
}

#[test]
fn an_ipv6_only_lan_finds_its_peers_at_once_and_fetches_over_link_local() {
    let Some(lab) = lab(
        "an_ipv6_only_lan_finds_its_peers_at_once_and_fetches_over_link_local",
        3,
        LINK_LOCAL_ONLY,
    ) else {
        return;
    };
    // No IPv4 address on the LAN, only link-local IPv6.
    for h in lab.hosts() {
        let out = lab.exec_ok(h.index(), "ip", ["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let t0 = Instant::now();
    let spawned: Vec<fl::Spawned> = (0..3)
        .map(|i| fl::spawn_nowait(&lab, i, &["--announce-interval", "60"]))
        .collect();
    let mut known_at: [Option<Duration>; 3] = [None; 3];
    while known_at.iter().any(Option::is_none) {
        for (k, s) in spawned.iter().enumerate() {
            if known_at[k].is_none() && fl::peers_logged_up(&s.daemon).len() >= 2 {
                known_at[k] = Some(s.started.elapsed());
            }
        }
        assert!(
            t0.elapsed() < MESH,
            "hosts did not all see 2 peers within 5 s: {known_at:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let all_known = t0.elapsed();
    let hosts: Vec<Host> = spawned.into_iter().map(fl::Spawned::ready).collect();
    eprintln!("IPv6 only: all three knew each other {all_known:?} after the first spawn");
    assert!(
        all_known < Duration::from_secs(1),
        "all hosts should know each other within 1 s of start, took {all_known:?}"
    );
    for h in &hosts {
        assert!(
            h.daemon
                .lines()
                .iter()
                .any(|l| l.contains("multicast group ff02::19:432 joined on eth0")),
            "h{}: {:#?}",
            h.index,
            h.daemon.lines()
        );
        let view = fl::status(&lab, h.index);
        assert_eq!(view.peers.len(), 2, "h{}: {view:?}", h.index);
        for o in hosts.iter().filter(|o| o.index != h.index) {
            let Some(p) = view.get(o.id) else {
                panic!("h{} does not list h{}: {view:?}", h.index, o.index);
            };
            assert_eq!(p.ip, IpAddr::V6(link_local(&lab, o.index)), "h{}", h.index);
            assert_eq!(p.port, fl::PEER_PORT);
            assert!(!p.incompatible);
        }
    }

    // h0 has a file; h1 is told so, and fetches it through its relay from h0's file server at
    // h0's link-local address (the scope id picks h1's eth0).
    let file = "six-1.0-1-x86_64.pkg.tar.zst";
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    hosts[0].put(file, &body);
    let ll0 = link_local(&lab, 0);
    let answer = common::wait_until(
        "h1 to learn that h0 has the file",
        MESH,
        || {
            let r = local_get(&lab, 1, &format!("/query/{file}"));
            (r.status == 200).then(|| r.text())
        },
        || local_get(&lab, 1, &format!("/query/{file}")).text(),
    );
    assert!(
        answer.contains(&format!("peer {:016x} at [{ll0}%", hosts[0].id)),
        "{answer}"
    );
    let got = local_get(&lab, 1, &format!("/core/os/x86_64/{file}"));
    assert_eq!(got.status, 200, "{}", got.text());
    // No upstream is configured: the bytes can only have come from h0.
    assert!(got.body == body, "the bytes differ from h0's file");

    // `flocon status` shows the peers with their zone; `flocon doctor` finds the IPv6 group
    // joined and reaches each peer's TCP port and clock through that zone.
    let port = fl::LOCAL_PORT.to_string();
    let status = lab.exec_ok(
        1,
        fl::bin(),
        ["status", "-c", "/dev/null", "--local-port", &port],
    );
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains(&format!("[{ll0}%eth0]:{}", fl::PEER_PORT))
            && status.contains("multicast group ff02::19:432: joined on eth0"),
        "{status}"
    );
    let doctor = lab.exec(
        1,
        fl::bin(),
        ["doctor", "-c", "/dev/null", "--local-port", &port],
    );
    let doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let peer = format!("peer {:016x} at {ll0}", hosts[0].id);
    for want in [
        "ok   multicast: group ff02::19:432 joined on eth0".to_owned(),
        format!(
            "ok   {peer} ({}/{}): TCP port {} answers",
            hosts[0].distro,
            hosts[0].arch,
            fl::PEER_PORT
        ),
        format!("ok   {peer}: clock within"),
    ] {
        assert!(doctor.contains(&want), "no {want:?} in\n{doctor}");
    }
}

#[test]
fn a_dual_stack_lan_lists_each_host_once_at_its_ipv4_address() {
    let Some(lab) = lab(
        "a_dual_stack_lan_lists_each_host_once_at_its_ipv4_address",
        3,
        Addressing::DualStack,
    ) else {
        return;
    };
    let hosts = fl::spawn_hosts(&lab, 3, &["--announce-interval", "1"]);
    fl::wait_mesh(&lab, &hosts, MESH);
    for h in &hosts {
        for group in ["239.255.19.32", "ff02::19:432"] {
            h.daemon
                .wait_for_line_containing(&format!("multicast group {group} joined on eth0"), MESH);
        }
        let view = fl::status(&lab, h.index);
        assert_eq!(view.peers.len(), 2, "h{}: {view:?}", h.index);
        for o in hosts.iter().filter(|o| o.index != h.index) {
            let p = view.get(o.id).expect("listed");
            assert_eq!(p.ip, IpAddr::V4(o.ip), "h{}: {view:?}", h.index);
        }
        // Heard on both families: both addresses are in the JSON status, one entry each.
        let json = local_get(&lab, h.index, "/.flocon/status.json").text();
        for o in hosts.iter().filter(|o| o.index != h.index) {
            let ll = link_local(&lab, o.index);
            assert!(
                json.contains(&format!("\"{}:{}\"", o.ip, fl::PEER_PORT))
                    && json.contains(&format!("[{ll}%eth0]:{}", fl::PEER_PORT)),
                "h{}: h{} not heard on both families: {json}",
                h.index,
                o.index
            );
        }
    }
    // Three announcements later (each one arrives on both families), still one entry per
    // host, at its IPv4 address, with its summary held (a repeated delta is not a gap).
    thread::sleep(Duration::from_secs(3));
    for h in &hosts {
        let view = fl::status(&lab, h.index);
        assert_eq!(view.peers.len(), 2, "h{}: {view:?}", h.index);
        assert_eq!(view.count.peers, 2, "h{}: {view:?}", h.index);
        for o in hosts.iter().filter(|o| o.index != h.index) {
            let p = view.get(o.id).expect("listed");
            assert_eq!(p.ip, IpAddr::V4(o.ip), "h{}: {view:?}", h.index);
            assert!(p.summary_known, "h{}: {view:?}", h.index);
        }
    }
}

#[test]
fn an_ipv6_link_that_comes_up_late_is_joined_within_a_second_without_a_signal() {
    let Some(lab) = lab(
        "an_ipv6_link_that_comes_up_late_is_joined_within_a_second_without_a_signal",
        3,
        LINK_LOCAL_ONLY,
    ) else {
        return;
    };
    let interval = ["--announce-interval", "60"];
    let h0 = fl::spawn_host(&lab, 0, &interval);
    let h1 = fl::spawn_host(&lab, 1, &interval);
    fl::wait_peers(&lab, 0, &[h1.id], MESH);
    fl::wait_peers(&lab, 1, &[h0.id], MESH);

    // h2's interface is down (and so has no link-local address) when flocon starts, and comes
    // up 3 s later: rtnetlink tells flocon at once.
    lab.link_down(2);
    let h2 = fl::spawn_host(&lab, 2, &interval);
    let failure = h2
        .daemon
        .wait_for_line_containing("could not join the multicast group", MESH);
    assert!(failure.contains("eth0"), "{failure}");
    thread::sleep(Duration::from_secs(3));
    assert!(fl::status(&lab, 2).peers.is_empty());
    lab.link_up(2);
    let up = Instant::now();
    h2.daemon.wait_for_line_containing(
        "multicast group ff02::19:432 joined on eth0",
        Duration::from_secs(2),
    );
    let hosts = [h0, h1, h2];
    fl::wait_mesh(&lab, &hosts, Duration::from_secs(2));
    let known_after = up.elapsed();
    eprintln!("IPv6: the link came up; all knew each other {known_after:?} later");
    assert!(
        known_after < Duration::from_secs(1),
        "known only {known_after:?} after the link came up"
    );
    assert_eq!(
        fl::status(&lab, 0).get(hosts[2].id).map(|p| p.ip),
        Some(IpAddr::V6(link_local(&lab, 2)))
    );
}

#[test]
fn a_new_ipv6_link_local_address_is_known_to_the_peers_within_a_second() {
    let Some(lab) = lab(
        "a_new_ipv6_link_local_address_is_known_to_the_peers_within_a_second",
        2,
        LINK_LOCAL_ONLY,
    ) else {
        return;
    };
    let interval = ["--announce-interval", "60"];
    let hosts = [
        fl::spawn_host(&lab, 0, &interval),
        fl::spawn_host(&lab, 1, &interval),
    ];
    fl::wait_mesh(&lab, &hosts, MESH);
    let old = link_local(&lab, 1);
    let new: Ipv6Addr = "fe80::1:99".parse().expect("an address");
    assert_ne!(old, new);
    let changed = Instant::now();
    // The new one first (so the interface always has one), then the old one goes.
    lab.exec_ok(
        1,
        "ip",
        ["addr", "add", "fe80::1:99/64", "dev", "eth0", "nodad"],
    );
    lab.exec_ok(
        1,
        "ip",
        ["addr", "del", &format!("{old}/64"), "dev", "eth0"],
    );
    common::wait_until(
        "h0 to see h1 at its new link-local address",
        Duration::from_secs(3),
        || {
            fl::status(&lab, 0)
                .peers
                .iter()
                .any(|p| p.ip == IpAddr::V6(new))
                .then_some(())
        },
        || format!("{:?}", fl::status(&lab, 0).peers),
    );
    let known_after = changed.elapsed();
    eprintln!("h1's new link-local address was known to h0 {known_after:?} after the change");
    assert!(
        known_after < Duration::from_secs(1),
        "the new address was known only {known_after:?} later"
    );
}

#[test]
fn a_global_ipv6_address_coming_costs_no_rejoin() {
    let Some(lab) = lab(
        "a_global_ipv6_address_coming_costs_no_rejoin",
        2,
        LINK_LOCAL_ONLY,
    ) else {
        return;
    };
    let interval = ["--announce-interval", "60"];
    let hosts = [
        fl::spawn_host(&lab, 0, &interval),
        fl::spawn_host(&lab, 1, &interval),
    ];
    fl::wait_mesh(&lab, &hosts, MESH);
    // A router advertisement gives h1 a global address (and later refreshes its lifetime):
    // flocon uses link-local addresses only, so it neither rejoins nor says HELLO.
    let mark = hosts[1].daemon.line_count();
    lab.exec_ok(
        1,
        "ip",
        ["addr", "add", "fd66:77::1/64", "dev", "eth0", "nodad"],
    );
    let (_, line) = hosts[1].daemon.wait_for_line_after(
        mark,
        |l| l.contains("rtnetlink: the addresses in use are the same: no rejoin"),
        Duration::from_secs(3),
    );
    assert!(line.contains("no rejoin"));
    let lines = hosts[1].daemon.lines();
    assert!(
        !lines[mark..]
            .iter()
            .any(|l| l.contains("network change: rejoining")),
        "{:#?}",
        &lines[mark..]
    );
}

#[test]
fn a_link_local_address_still_in_duplicate_address_detection_is_used_once_it_is_ready() {
    let Some(lab) = lab(
        "a_link_local_address_still_in_duplicate_address_detection_is_used_once_it_is_ready",
        3,
        LINK_LOCAL_ONLY,
    ) else {
        return;
    };
    let interval = ["--announce-interval", "60"];
    let h0 = fl::spawn_host(&lab, 0, &interval);
    let h1 = fl::spawn_host(&lab, 1, &interval);
    fl::wait_peers(&lab, 0, &[h1.id], MESH);
    // h2's link comes up with duplicate address detection on, as on a real network: its
    // link-local address is tentative (not usable as a source) for about a second.
    lab.link_down(2);
    let h2 = fl::spawn_host(&lab, 2, &interval);
    h2.daemon
        .wait_for_line_containing("could not join the multicast group", MESH);
    for (knob, value) in [("accept_dad", "1"), ("dad_transmits", "1")] {
        let key = format!("net.ipv6.conf.eth0.{knob}={value}");
        lab.exec_ok(2, "sysctl", ["-q", "-w", &key]);
    }
    let mark = h2.daemon.line_count();
    lab.link_up(2);
    let up = Instant::now();
    let hosts = [h0, h1, h2];
    fl::wait_mesh(&lab, &hosts, Duration::from_secs(6));
    let known_after = up.elapsed();
    eprintln!("IPv6 with DAD: known {known_after:?} after the link came up");
    // The HELLOs sent while the address was tentative could not go out (EADDRNOTAVAIL); the
    // kernel's word that it is ready (an address event for it) schedules a second rejoin,
    // whose HELLO does (unless a re-sent HELLO got through first). Without it the host would
    // be known only at its next announcement when duplicate address detection is slow.
    let rejoins = hosts[2].daemon.lines()[mark..]
        .iter()
        .filter(|l| l.contains("rtnetlink: ") && l.contains(": rejoining in "))
        .count();
    assert!(rejoins >= 2, "{:#?}", &hosts[2].daemon.lines()[mark..]);
    // And that rejoin happens: a link-local address event is never taken for noise.
    let second = mark
        + hosts[2].daemon.lines()[mark..]
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("rtnetlink: ") && l.contains(": rejoining in "))
            .nth(1)
            .map(|(i, _)| i)
            .expect("two");
    let (_, outcome) = hosts[2].daemon.wait_for_line_after(
        second,
        |l| l.contains("network change: rejoining") || l.contains("no rejoin"),
        Duration::from_secs(3),
    );
    assert!(outcome.contains("network change: rejoining"), "{outcome}");
    assert!(
        known_after < Duration::from_secs(5),
        "known only {known_after:?} after the link came up"
    );
}

#[test]
fn a_host_with_ipv6_disabled_works_on_ipv4_alone() {
    let Some(lab) = lab(
        "a_host_with_ipv6_disabled_works_on_ipv4_alone",
        3,
        Addressing::DualStack,
    ) else {
        return;
    };
    // h2's kernel has IPv6 turned off (no link-local address, no IPv6 group to join).
    for knob in ["all", "default", "eth0"] {
        let key = format!("net.ipv6.conf.{knob}.disable_ipv6=1");
        lab.exec_ok(2, "sysctl", ["-q", "-w", &key]);
    }
    let hosts = fl::spawn_hosts(&lab, 3, &["--announce-interval", "60"]);
    fl::wait_mesh(&lab, &hosts, MESH);
    hosts[2]
        .daemon
        .wait_for_line_containing("multicast group 239.255.19.32 joined on eth0", MESH);
    assert!(
        !hosts[2]
            .daemon
            .lines()
            .iter()
            .any(|l| l.contains("ff02::19:432 joined") || l.contains("IPv6") && l.contains("WARN")),
        "{:#?}",
        hosts[2].daemon.lines()
    );
    // The others list it once, at its IPv4 address, heard on IPv4 only; it lists them once.
    for i in 0..2 {
        let view = fl::status(&lab, i);
        let p = view.get(hosts[2].id).expect("listed");
        assert_eq!(p.ip, IpAddr::V4(hosts[2].ip));
        let json = local_get(&lab, i, "/.flocon/status.json").text();
        let ll_of_h2 = json.matches(&format!("%eth0]:{}", fl::PEER_PORT)).count();
        assert_eq!(
            ll_of_h2, 1,
            "h{i}: only h0/h1's other peer is heard on IPv6: {json}"
        );
    }
    let view = fl::status(&lab, 2);
    assert_eq!(view.peers.len(), 2, "{view:?}");
}

#[test]
fn hosts_on_another_ipv6_group_do_not_hear_the_default_one() {
    let Some(lab) = lab(
        "hosts_on_another_ipv6_group_do_not_hear_the_default_one",
        3,
        LINK_LOCAL_ONLY,
    ) else {
        return;
    };
    // h0 and h1 use ff02::77 (`Group` given an IPv6 address), h2 the default group.
    let other = ["--announce-interval", "60", "--group", "ff02::77"];
    let h0 = fl::spawn_host(&lab, 0, &other);
    let h1 = fl::spawn_host(&lab, 1, &other);
    let h2 = fl::spawn_host(&lab, 2, &["--announce-interval", "60"]);
    h0.daemon
        .wait_for_line_containing("multicast group ff02::77 joined on eth0", MESH);
    fl::wait_peers(&lab, 0, &[h1.id], MESH);
    fl::wait_peers(&lab, 1, &[h0.id], MESH);
    h2.daemon
        .wait_for_line_containing("multicast group ff02::19:432 joined on eth0", MESH);
    thread::sleep(Duration::from_millis(1500));
    assert!(fl::status(&lab, 2).peers.is_empty());
    assert_eq!(fl::status(&lab, 0).ids(), vec![h1.id]);
}

#[test]
fn an_ipv6_source_that_is_not_link_local_is_not_listed() {
    use ::flocon::discovery::wire::{Announcement, Body, Message};
    use std::net::{SocketAddr, SocketAddrV6, UdpSocket};
    let Some(lab) = lab(
        "an_ipv6_source_that_is_not_link_local_is_not_listed",
        3,
        Addressing::Ipv6Only { ula: true },
    ) else {
        return;
    };
    let hosts = fl::spawn_hosts(&lab, 2, &["--announce-interval", "60"]);
    fl::wait_mesh(&lab, &hosts, MESH);
    // h2 (no flocon) sends announcements to h0's IPv6 discovery socket: from its ULA address
    // (on the link, but not link-local: not believed) and from its link-local one.
    let to = SocketAddr::V6(SocketAddrV6::new(lab.host(0).ip6(), fl::PEER_PORT, 0, 0));
    let ula = lab
        .run_in(2, || UdpSocket::bind((lab.host(2).ip6(), 0)))
        .expect("bind the ULA in h2");
    let ll2 = link_local(&lab, 2);
    let (ll, to_ll) = lab.run_in(2, || {
        let index = lab_if_index("eth0");
        let sock = UdpSocket::bind(SocketAddrV6::new(ll2, 0, 0, index)).expect("bind link-local");
        let to = SocketAddrV6::new(link_local(&lab, 0), fl::PEER_PORT, 0, index);
        (sock, to)
    });
    let announce = |host_id: u64| {
        fl::encode(&Message {
            host_id,
            body: Body::Announce(Announcement {
                tcp_port: 4242,
                distro: hosts[0].distro.clone(),
                arch: hosts[0].arch.clone(),
                summary: 0,
            }),
        })
    };
    let (stranger, neighbour) = (0x0ff6_0000_0000_0001u64, 0x0ff6_0000_0000_0002u64);
    for _ in 0..3 {
        ula.send_to(&announce(stranger), to).expect("send");
    }
    ll.send_to(&announce(neighbour), to_ll).expect("send");
    common::wait_until(
        "h0 to list the link-local neighbour",
        MESH,
        || fl::status(&lab, 0).get(neighbour).map(|_| ()),
        || format!("{:?}", fl::status(&lab, 0).peers),
    );
    assert!(
        fl::status(&lab, 0).get(stranger).is_none(),
        "the ULA source was listed"
    );
    let text = local_get(&lab, 0, "/.flocon/status.json").text();
    assert!(
        text.contains("\"off_link_datagrams\":3"),
        "the three datagrams from the ULA are counted: {text}"
    );
}

/// `if_nametoindex` in the calling thread's namespace.
fn lab_if_index(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: `c` is a valid NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}
