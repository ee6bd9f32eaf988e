//! The shared secret (`--secret-file`, issue 16) between real daemons in a namespace lab:
//! hosts with the right secret share; a host with a wrong secret or none is neither listed,
//! nor answered (no datagram comes back), nor served (403), and is counted; a datagram
//! captured on the wire and sent again is dropped as a replay; a secret file others can read
//! stops the daemon at start.
//!
//! The test plays the stranger itself from a lab host without flocon, sealing datagrams and
//! signing requests with the crate's own functions (with the right and a wrong secret).

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use ::flocon::discovery::wire::{self, Body, Message};
use ::flocon::secret::{self, Secret, datagram};
use common::TempDir;
use common::flocon::{self as fl};
use common::http::{build_request, request};
use common::lab::Lab;

const MESH: Duration = Duration::from_secs(5);
const FILE: &str = "shared-1.0-1-x86_64.pkg.tar.zst";
const KEY: &[u8] = b"the LAN's shared secret, 32 byte";
const WRONG: &[u8] = b"another secret entirely, 32 byte";
/// The host that runs no flocon: the test's sockets live there.
const STRANGER: usize = 4;

fn secret_file(dir: &TempDir, name: &str, key: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, [key, b"\n"].concat()).expect("write the secret file");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A WHO_HAS for `FILE` from a made-up host id.
fn who_has(question: u32) -> Vec<u8> {
    fl::encode(&Message {
        host_id: 0x5eed_0000_0000_0001,
        body: Body::WhoHas {
            question,
            name: FILE.as_bytes().to_vec(),
            expected: None,
        },
    })
}

fn sealed(key: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    datagram::seal(
        &Secret::from_bytes(key).unwrap(),
        inner,
        secret::unix_millis(),
        &mut out,
    );
    out
}

/// `GET /<FILE>` to `to`'s peer port from the stranger, with `authorization` if given.
fn peer_get(lab: &Lab, to: Ipv4Addr, authorization: Option<&str>) -> common::http::Response {
    let addr = SocketAddr::from((to, fl::PEER_PORT));
    let path = format!("/{FILE}");
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let raw = build_request("GET", &addr.to_string(), &path, &headers);
    match lab.run_in(STRANGER, || request(addr, &raw)) {
        Ok(r) => r,
        Err(e) => panic!("GET {path} from the stranger: {e}"),
    }
}

fn json_number(json: &str, key: &str) -> u64 {
    let needle = format!("\"{key}\":");
    let Some(at) = json.find(&needle) else {
        panic!("no {key} in {json}");
    };
    json[at + needle.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn only_hosts_with_the_secret_share() {
    if !common::require_root("only_hosts_with_the_secret_share") {
        return;
    }
    let Some(lab) = Lab::new(5) else { return };
    let keys = TempDir::new("secret-keys");
    let right = secret_file(&keys, "right", KEY, 0o600);
    let wrong = secret_file(&keys, "wrong", WRONG, 0o400);
    let (right, wrong) = (right.display().to_string(), wrong.display().to_string());
    let interval = ["--announce-interval", "1"];
    // h0 and h1 also list each other as static peers although on the same link: each gets
    // the other's group datagrams by multicast and by unicast (and on IPv4 and IPv6), and the
    // second copies are no refusals.
    let (ip0, ip1) = (lab.host(0).ip().to_string(), lab.host(1).ip().to_string());
    let h0 = fl::spawn_host(
        &lab,
        0,
        &[&interval[..], &["--secret-file", &right, "--peer", &ip1]].concat(),
    );
    let h1 = fl::spawn_host(
        &lab,
        1,
        &[&interval[..], &["--secret-file", &right, "--peer", &ip0]].concat(),
    );
    let h2 = fl::spawn_host(
        &lab,
        2,
        &[&interval[..], &["--secret-file", &wrong]].concat(),
    );
    let h3 = fl::spawn_host(&lab, 3, &interval);
    h0.put(FILE, b"the file body, shared only with key holders");

    // h0 and h1 list each other and nobody else; h2 and h3 list nobody.
    fl::wait_peers(&lab, 0, &[h1.id], MESH);
    fl::wait_peers(&lab, 1, &[h0.id], MESH);
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(fl::status(&lab, 0).ids(), vec![h1.id]);
    assert_eq!(fl::status(&lab, 1).ids(), vec![h0.id]);
    assert!(
        fl::status(&lab, 2).peers.is_empty(),
        "wrong secret: {:?}",
        fl::status(&lab, 2)
    );
    assert!(
        fl::status(&lab, 3).peers.is_empty(),
        "no secret: {:?}",
        fl::status(&lab, 3)
    );
    let json = fl::local_get(&lab, 0, "/.flocon/status.json")
        .unwrap()
        .text();
    assert!(json_number(&json, "datagrams_refused") >= 4, "{json}");
    assert!(
        !json.contains(&format!("{{\"address\":\"{}\",", h1.ip)),
        "h1's second copies counted as refusals: {json}"
    );
    assert!(json_number(&json, "datagrams_repeated") > 0, "{json}");
    for h in [&h2, &h3] {
        assert!(
            json.contains(&format!("{{\"address\":\"{}\",", h.ip)),
            "{} counted: {json}",
            h.ip
        );
    }
    let page = fl::local_get(&lab, 0, "/status").unwrap().text();
    assert!(
        page.contains("secret: ") && page.contains(&format!("refused from {}", h2.ip)),
        "{page}"
    );
    assert!(
        h0.daemon
            .find_line(|l| l.contains("secret: refused a datagram from"))
            .is_some(),
        "the first refusal is logged"
    );

    // A WHO_HAS without the secret, or sealed with another, gets no answer at all; sealed
    // with the right one, a sealed HAVE.
    let sock = fl::udp_socket_in(&lab, STRANGER);
    let h0_addr = SocketAddr::from((h0.ip, fl::PEER_PORT));
    sock.send_to(&who_has(1), h0_addr).unwrap();
    sock.send_to(&sealed(WRONG, &who_has(2)), h0_addr).unwrap();
    let mut truncated = sealed(KEY, &who_has(3));
    truncated.truncate(40);
    sock.send_to(&truncated, h0_addr).unwrap();
    let got = fl::drain(&sock, Duration::from_millis(1000));
    assert!(
        got.is_empty(),
        "a host without the secret was answered: {got:?}"
    );
    sock.send_to(&sealed(KEY, &who_has(4)), h0_addr).unwrap();
    let got = fl::drain(&sock, Duration::from_millis(1000));
    assert_eq!(got.len(), 1, "{got:?}");
    let key = Secret::from_bytes(KEY).unwrap();
    let (_, _, inner) =
        datagram::verify(&key, &got[0].1).expect("the answer is sealed with the secret");
    let answer = wire::parse(inner).expect("a datagram inside");
    assert_eq!(
        (answer.host_id, answer.body),
        (h0.id, Body::Have { question: 4 })
    );

    // The peer file server: 403 without the field or with another secret's, 200 with it.
    let target = format!("/{FILE}");
    let now = secret::unix_millis() / 1000;
    let bad = secret::http::authorization(&Secret::from_bytes(WRONG).unwrap(), "GET", &target, now);
    let stale = secret::http::authorization(&key, "GET", &target, now - 120);
    let good = secret::http::authorization(&key, "GET", &target, now);
    assert_eq!(peer_get(&lab, h0.ip, None).status, 403);
    assert_eq!(peer_get(&lab, h0.ip, Some(&bad)).status, 403);
    assert_eq!(peer_get(&lab, h0.ip, Some(&stale)).status, 403);
    let ok = peer_get(&lab, h0.ip, Some(&good));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"the file body, shared only with key holders");
    let json = fl::local_get(&lab, 0, "/.flocon/status.json")
        .unwrap()
        .text();
    assert_eq!(json_number(&json, "requests_refused"), 3, "{json}");
    let metrics = fl::local_get(&lab, 0, "/metrics").unwrap().text();
    assert!(
        metrics.contains("flocon_secret_refused_total{what=\"request\"} 3"),
        "{metrics}"
    );

    // h1's relay fetches the file from h0, its requests signed.
    let resp = fl::local_get(&lab, 1, &format!("/core/os/x86_64/{FILE}")).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"the file body, shared only with key holders");
    // h3 (no secret) has no peer to ask; h2's datagrams are refused, so it cannot either.
    let json = fl::local_get(&lab, 0, "/.flocon/status.json")
        .unwrap()
        .text();
    assert_eq!(
        json_number(&json, "requests_refused"),
        3,
        "h1 was served: {json}"
    );
    drop((h2, h3));

    // A replay: capture h0's sealed ANNOUNCE from the group and send it again, to h1.
    let group_sock = lab
        .run_in(STRANGER, || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, fl::PEER_PORT))?;
            s.join_multicast_v4(&fl::GROUP, &lab.host(STRANGER).ip())?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            Ok::<_, std::io::Error>(s)
        })
        .expect("join the group from the stranger");
    let deadline = Instant::now() + Duration::from_secs(5);
    let captured = loop {
        let got = fl::drain(&group_sock, Duration::from_millis(200));
        if let Some((_, bytes)) = got.into_iter().find(|(from, b)| {
            from.ip() == std::net::IpAddr::V4(h0.ip) && b.starts_with(&datagram::MAGIC)
        }) {
            break bytes;
        }
        assert!(
            Instant::now() < deadline,
            "no sealed datagram from h0 on the group"
        );
    };
    // Sent again from the stranger's address, it never reaches h1's core: there it would be
    // an announcement of h0's host id from another address, refused and counted.
    let h1_json = || {
        fl::local_get(&lab, 1, "/.flocon/status.json")
            .unwrap()
            .text()
    };
    let before = json_number(&h1_json(), "datagrams_repeated");
    let h1_addr = SocketAddr::from((h1.ip, fl::PEER_PORT));
    group_sock.send_to(&captured, h1_addr).unwrap();
    group_sock.send_to(&captured, h1_addr).unwrap();
    common::wait_until(
        "h1 to drop the two replays",
        MESH,
        || (json_number(&h1_json(), "datagrams_repeated") >= before + 2).then_some(()),
        h1_json,
    );
    let json = h1_json();
    assert_eq!(json_number(&json, "refused_announcements"), 0, "{json}");
    let stranger = lab.host(STRANGER).ip();
    assert!(
        !json.contains(&format!("{{\"address\":\"{stranger}\",")),
        "a repeat is no refusal: {json}"
    );
    // The control: the same inner datagram sealed afresh does reach the core, which refuses
    // h0's host id from the stranger's address.
    sock.send_to(&sealed(KEY, &captured[datagram::OVERHEAD..]), h1_addr)
        .unwrap();
    common::wait_until(
        "h1 to refuse the resealed announcement",
        MESH,
        || (json_number(&h1_json(), "refused_announcements") == 1).then_some(()),
        h1_json,
    );
    assert_eq!(
        fl::status(&lab, 1).ids(),
        vec![h0.id],
        "h1's table is unchanged"
    );
}

#[test]
fn a_secret_file_others_can_read_stops_the_daemon() {
    let keys = TempDir::new("secret-mode");
    let open = secret_file(&keys, "open", KEY, 0o644);
    let cache = TempDir::new("secret-mode-cache");
    let port = common::free_port();
    let local = common::free_port();
    let mut args = fl::loopback_args(cache.path(), port, local);
    args.extend(["--secret-file".to_string(), open.display().to_string()]);
    let mut d = common::Daemon::spawn("open-secret", None, fl::bin(), &args);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    d.wait_for_line_containing(
        "mode 0644: group and others must have no access",
        Duration::from_secs(5),
    );
}

/// Under systemd, `LoadCredential=flocon-secret:PATH` alone is enough: with no `SecretFile`,
/// the credential in `$CREDENTIALS_DIRECTORY` is read (here one with a bad mode, so the
/// daemon's refusal names it), and a directory without it leaves flocon without a secret.
#[test]
fn the_systemd_credential_is_read_when_no_secret_file_is_set() {
    let creds = TempDir::new("secret-cred");
    secret_file(&creds, "flocon-secret", KEY, 0o644);
    let cache = TempDir::new("secret-cred-cache");
    let (port, local) = (common::free_port(), common::free_port());
    let mut cmd = common::netns_command(None, fl::bin());
    cmd.args(fl::loopback_args(cache.path(), port, local))
        .env("CREDENTIALS_DIRECTORY", creds.path());
    let mut d = common::Daemon::spawn_command("cred-secret", cmd);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    d.wait_for_line_containing("flocon-secret has mode 0644", Duration::from_secs(5));

    let empty = TempDir::new("secret-cred-none");
    let (port, local) = (common::free_port(), common::free_port());
    let mut cmd = common::netns_command(None, fl::bin());
    cmd.args(fl::loopback_args(cache.path(), port, local))
        .env("CREDENTIALS_DIRECTORY", empty.path());
    let d = common::Daemon::spawn_command("cred-none", cmd);
    d.wait_for_line_containing("serving cache directory", Duration::from_secs(10));
    assert!(
        d.lines().iter().all(|l| !l.contains("shared secret")),
        "no credential, no secret"
    );
}
