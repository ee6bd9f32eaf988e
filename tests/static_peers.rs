//! Static peers (`--peer`, issue 16) between real daemons in two subnets: two labs joined by a
//! router namespace that forwards unicast and no multicast. Without `--peer` the hosts never
//! hear of each other; with it they list each other and one fetches a file from the other's
//! cache through its relay, the mirror asked for nothing. A names B by a host name that only
//! its own `/etc/hosts` knows (`ip netns exec` bind-mounts `/etc/netns/<ns>/hosts` over it):
//! static peers resolve like mirror names, through the system resolver.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::TempDir;
use common::flocon::{self as fl};
use common::lab::{Lab, Router};
use common::mirror::Mirror;

/// Bound for the two hosts to list each other.
const MESH: Duration = Duration::from_secs(5);
const FILE: &str = "remote-1.0-1-x86_64.pkg.tar.zst";
const MIRROR_PORT: u16 = 8080;

/// `/etc/netns/<ns>/hosts`, which `ip netns exec <ns>` mounts over `/etc/hosts` for the
/// program it starts; removed on drop (and `/etc/netns` when left empty).
struct NetnsHosts {
    dir: PathBuf,
}

impl NetnsHosts {
    fn write(ns: &str, text: &str) -> NetnsHosts {
        let dir = Path::new("/etc/netns").join(ns);
        fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        fs::write(dir.join("hosts"), text).expect("write its hosts file");
        NetnsHosts { dir }
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir("/etc/netns"); // only when empty
    }
}

#[test]
fn hosts_in_two_subnets_share_only_with_peer_lines() {
    if !common::require_root("hosts_in_two_subnets_share_only_with_peer_lines") {
        return;
    }
    let (Some(a), Some(b)) = (Lab::new(1), Lab::new(1)) else {
        return;
    };
    let _router = Router::between(&a, &b);
    let (ip_a, ip_b) = (a.host(0).ip(), b.host(0).ip());
    // The router forwards unicast: a datagram from A reaches B.
    let rx = b
        .run_in(0, || UdpSocket::bind((ip_b, 0)))
        .expect("bind in B");
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tx = a
        .run_in(0, || UdpSocket::bind((ip_a, 0)))
        .expect("bind in A");
    tx.send_to(b"x", rx.local_addr().unwrap()).expect("send");
    let mut buf = [0u8; 8];
    let (_, from) = rx.recv_from(&mut buf).expect("A's datagram reaches B");
    assert_eq!(from.ip(), ip_a);

    // A mirror beside A that has the file too, so a fetch that missed B would still succeed
    // and show up in its access log.
    let root = TempDir::new("static-mirror");
    let dir = root.mkdir("core/os/x86_64");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(dir.join(FILE), &data).expect("write the mirror's file");
    let mirror = Mirror::start(
        root.path(),
        Some(a.host(0).ns()),
        a.host(0).addr(MIRROR_PORT),
    );
    let upstream = mirror.server_url();

    // Without --peer: multicast stays in each subnet, nobody is heard.
    {
        let ha = fl::spawn_host(&a, 0, &["--announce-interval", "1"]);
        let hb = fl::spawn_host(&b, 0, &["--announce-interval", "1"]);
        thread::sleep(Duration::from_millis(3000));
        assert!(fl::status(&a, 0).peers.is_empty(), "A heard of B");
        assert!(fl::status(&b, 0).peers.is_empty(), "B heard of A");
        drop((ha, hb));
    }

    // With a --peer line on each side: A names B by a name of its /etc/hosts, B names A by
    // address and port.
    let _hosts = NetnsHosts::write(
        a.host(0).ns(),
        &format!("127.0.0.1 localhost\n{ip_b} peer-b.lab.test\n"),
    );
    let peer_b = "peer-b.lab.test".to_string();
    let peer_a = format!("{ip_a}:{}", fl::PEER_PORT);
    let ha = fl::spawn_host(
        &a,
        0,
        &[
            "--announce-interval",
            "1",
            "--peer",
            &peer_b,
            "--upstream",
            &upstream,
        ],
    );
    let b_args = ["--announce-interval", "1", "--peer", &peer_a];
    let mut hb = fl::spawn_host(&b, 0, &b_args);
    hb.put(FILE, &data);
    let view = fl::wait_peers(&a, 0, &[hb.id], MESH);
    assert_eq!(
        view.get(hb.id).map(|p| p.ip),
        Some(std::net::IpAddr::V4(ip_b))
    );
    fl::wait_peers(&b, 0, &[ha.id], MESH);
    // The status page names the static peer and its address.
    let page = fl::local_get(&a, 0, "/status").expect("status").text();
    assert!(
        page.contains(&format!(
            "static peer peer-b.lab.test: {ip_b}:{}",
            fl::PEER_PORT
        )),
        "{page}"
    );

    // A's relay fetches the file from B, across the router.
    mirror.clear_access_log();
    let path = format!("/core/os/x86_64/{FILE}");
    let resp = fl::local_get(&a, 0, &path).expect("GET through A's relay");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.body == data, "the body is B's file");
    let asked = mirror.requested_paths();
    assert!(
        !asked.iter().any(|p| p.contains(FILE)),
        "the mirror was asked: {asked:?}"
    );
    let json = fl::local_get(&a, 0, "/.flocon/status.json")
        .expect("status.json")
        .text();
    assert!(json.contains("\"files_from_peers\":1"), "{json}");

    // A static peer is listed like any other: B killed (no GOODBYE) is forgotten after three
    // silent intervals, and B started again is listed again, under its new host id.
    hb.daemon.kill();
    fl::wait_peers(&a, 0, &[], Duration::from_secs(6));
    let hb2 = fl::spawn_host(&b, 0, &b_args);
    fl::wait_peers(&a, 0, &[hb2.id], MESH);
    drop(ha);
}
