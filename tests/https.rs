//! flocon fetching `https://` mirrors itself, against the real binary on loopback: nginx mirrors
//! serving TLS with certificates from a CA this test makes (openssl) and trusts for the run
//! with `--ca-file`. A package over https is the mirror's bytes (whole, by pacman's `Range`,
//! and as the continuation of a body another mirror cut short); a certificate for another name
//! and one from an untrusted CA are refused, with the reason logged, and the next mirror is
//! used; a server that closes during the handshake, or says nothing for the stall timeout, is
//! left for the next; one TLS connection carries several requests; `--https redirect`
//! still answers pacman with a 302. Loopback only: no root needed.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::fake_server::{Conn, FakeServer};
use common::mirror::MirrorOptions;
use common::pacman::{self, TEST_REPO};
use common::relay::relay_with as relay;
use common::tls::{ServerCert, TestCa};
use common::{Mirror, Response, TempDir, free_loopback_addr, http_get};

const PKG: &str = "hello-1.0-1-x86_64.pkg.tar.zst";
const LEN: usize = 300_000;

/// A document root holding [`PKG`] (`LEN` bytes that do not compress).
struct Root {
    dir: TempDir,
    data: Arc<Vec<u8>>,
}

impl Root {
    fn new(seed: u64) -> Root {
        let dir = TempDir::new("https-mirror");
        let rel = format!("{TEST_REPO}/os/{}", pacman::ARCH);
        dir.mkdir(&rel);
        let mut data = vec![0u8; LEN];
        let mut state = seed | 1;
        pacman::fill_pseudo_random(&mut data, &mut state);
        std::fs::write(dir.join(&rel).join(PKG), &data).unwrap();
        Root {
            dir,
            data: Arc::new(data),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// nginx serving this root over TLS with `cert`, on loopback.
    fn tls_mirror(&self, cert: &ServerCert) -> Mirror {
        Mirror::start_with(
            self.path(),
            None,
            free_loopback_addr(),
            &MirrorOptions {
                tls: cert.files(),
                ..MirrorOptions::default()
            },
        )
    }
}

/// `/testrepo/os/x86_64/<file>`.
fn url(file: &str) -> String {
    format!("/{TEST_REPO}/os/{}/{file}", pacman::ARCH)
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    http_get(addr, path, headers)
}

/// A CA and a certificate it signed for `127.0.0.1` and `localhost`, when openssl and nginx
/// are there (skipped with a reason otherwise, fatal under CI=true).
fn ca_and_good_cert(test: &str) -> Option<(TestCa, ServerCert)> {
    if !common::require_tools(test, &["openssl", "nginx"]) {
        return None;
    }
    let ca = TestCa::new("flocon test CA");
    let cert = ca.issue("good", &["DNS:localhost", "IP:127.0.0.1"]);
    Some((ca, cert))
}

fn ca_file(ca: &TestCa) -> [&str; 2] {
    ["--ca-file", ca.cert.to_str().unwrap()]
}

#[test]
fn a_package_over_https_is_the_mirrors_bytes_whole_and_by_range() {
    let Some((ca, cert)) = ca_and_good_cert("a_package_over_https_is_the_mirrors_bytes") else {
        return;
    };
    let root = Root::new(11);
    let mirror = root.tls_mirror(&cert);
    assert!(mirror.server_url().starts_with("https://127.0.0.1:"));
    let r = relay(&[mirror.server_url()], &ca_file(&ca));

    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200, "{:?}", r.daemon.lines());
    assert_eq!(got.content_length(), Some(LEN as u64));
    assert!(
        got.body == *root.data,
        "body differs from the mirror's file"
    );

    // pacman resuming a .part: its Range goes to the https mirror.
    let from = 123_457;
    let got = get(r.addr, &url(PKG), &[("Range", &format!("bytes={from}-"))]);
    assert_eq!(got.status, 206);
    assert_eq!(
        got.header("content-range"),
        Some(format!("bytes {from}-{}/{LEN}", LEN - 1).as_str())
    );
    assert!(got.body == root.data[from..], "range differs");

    let log = mirror.access_log();
    let asked: Vec<_> = log.iter().filter(|e| e.uri == url(PKG)).collect();
    assert_eq!(asked.len(), 2, "{log:?}");
    assert_eq!(asked[0].range, "-");
    assert_eq!(asked[1].range, format!("bytes={from}-"));
    assert!(asked[0].user_agent.starts_with("flocon/"));
    // A name in the URL is checked against the certificate's DNS name.
    let by_name = format!("https://localhost:{}/$repo/os/$arch", mirror.addr().port());
    let r = relay(&[by_name], &ca_file(&ca));
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200, "{:?}", r.daemon.lines());
    assert!(got.body == *root.data);
}

#[test]
fn a_certificate_for_another_name_is_refused_and_the_next_mirror_used() {
    let Some((ca, good)) = ca_and_good_cert("a_certificate_for_another_name_is_refused") else {
        return;
    };
    let other = ca.issue("other", &["DNS:other.example", "IP:192.0.2.7"]);
    let root = Root::new(12);
    let wrong = root.tls_mirror(&other);
    let right = root.tls_mirror(&good);
    let r = relay(&[wrong.server_url(), right.server_url()], &ca_file(&ca));

    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == *root.data);
    assert_eq!(
        wrong.request_count(&url(PKG)),
        0,
        "a request went to the wrong name"
    );
    assert_eq!(right.request_count(&url(PKG)), 1);
    let line = r.daemon.wait_for_line_containing(
        "certificate not valid for this host name",
        Duration::from_secs(5),
    );
    assert!(line.contains(&wrong.base_url()), "{line}");
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let Some((ca, _)) = ca_and_good_cert("an_untrusted_certificate_is_refused") else {
        return;
    };
    // Right names, but signed by a CA nobody trusts.
    let stranger = TestCa::new("a stranger's CA");
    let untrusted = stranger.issue("untrusted", &["DNS:localhost", "IP:127.0.0.1"]);
    let root = Root::new(13);
    let mirror = root.tls_mirror(&untrusted);
    let r = relay(&[mirror.server_url()], &ca_file(&ca));
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 502, "an untrusted mirror must not be used");
    assert_eq!(mirror.request_count(&url(PKG)), 0);
    r.daemon.wait_for_line_containing(
        "certificate issued by an untrusted CA",
        Duration::from_secs(5),
    );

    // Without --ca-file the test CA is not trusted either (only the system's CAs are).
    let (_other_ca, good) = ca_and_good_cert("an_untrusted_certificate_is_refused").unwrap();
    let mirror = root.tls_mirror(&good);
    let r = relay(&[mirror.server_url()], &[]);
    assert_eq!(get(r.addr, &url(PKG), &[]).status, 502);
    assert_eq!(mirror.request_count(&url(PKG)), 0);
}

#[test]
fn a_server_that_closes_during_the_handshake_is_left_for_the_next_mirror() {
    let Some((ca, cert)) = ca_and_good_cert("a_server_that_closes_during_the_handshake") else {
        return;
    };
    // Accepts, reads the ClientHello, answers a few bytes that are no TLS, and closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let rude = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"\x16\x03\x03\x00");
        }
    });
    let root = Root::new(14);
    let good = root.tls_mirror(&cert);
    let cut = format!("https://{rude}/$repo/os/$arch");
    let r = relay(&[cut, good.server_url()], &ca_file(&ca));
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == *root.data);
    r.daemon.wait_for_line_containing(
        "connection closed during the TLS handshake",
        Duration::from_secs(5),
    );
    drop(r);
    // (The second accept may never come: the thread ends with the test process.)
    drop(handle);
}

#[test]
fn an_https_mirror_silent_in_the_handshake_is_left_within_five_seconds() {
    let Some((ca, cert)) = ca_and_good_cert("an_https_mirror_silent_in_the_handshake") else {
        return;
    };
    // Accepts and never says a word (the kernel completes the TCP handshake).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://{}/$repo/os/$arch", silent.local_addr().unwrap());
    let root = Root::new(17);
    let good = root.tls_mirror(&cert);
    let r = relay(&[silent_url, good.server_url()], &ca_file(&ca));
    let started = std::time::Instant::now();
    let got = get(r.addr, &url(PKG), &[]);
    let took = started.elapsed();
    assert_eq!(got.status, 200);
    assert!(got.body == *root.data);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(6500),
        "left the silent https mirror after {took:?}"
    );
    r.daemon
        .wait_for_line_containing("failed: stalled", Duration::from_secs(5));
    drop(silent);
}

#[test]
fn a_body_cut_short_continues_from_an_https_mirror_by_range() {
    let Some((ca, cert)) = ca_and_good_cert("a_body_cut_short_continues_from_an_https_mirror")
    else {
        return;
    };
    let root = Root::new(15);
    let good = root.tls_mirror(&cert);
    let half = LEN / 2 + 3;
    let data = Arc::clone(&root.data);
    // A plain mirror that sends the head and half the body, then closes.
    let cutter = FakeServer::start(move |mut conn: Conn| {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n");
        conn.send(head.as_bytes());
        conn.send(&data[..half]);
    });
    let r = relay(&[cutter.server_url(), good.server_url()], &ca_file(&ca));
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == *root.data, "continued body differs");
    let log = good.access_log();
    let asked: Vec<_> = log.iter().filter(|e| e.uri == url(PKG)).collect();
    assert_eq!(asked.len(), 1, "{log:?}");
    assert_eq!(asked[0].range, format!("bytes={half}-{}", LEN - 1));
    assert_eq!(asked[0].status, 206);
}

#[test]
fn kept_alive_https_connections_carry_the_next_request() {
    let Some((ca, cert)) = ca_and_good_cert("kept_alive_https_connections") else {
        return;
    };
    let root = Root::new(16);
    let mirror = root.tls_mirror(&cert);
    let r = relay(&[mirror.server_url()], &ca_file(&ca));
    let mut conn = common::HttpConn::connect(r.addr).unwrap();
    for _ in 0..3 {
        conn.send(&common::http::build_request(
            "GET",
            "localhost",
            &url(PKG),
            &[("Connection", "keep-alive")],
        ))
        .unwrap();
        let got = conn.read_response(false).unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body == *root.data);
    }
    assert_eq!(mirror.request_count(&url(PKG)), 3);
    // One TLS connection (one handshake) carried the three: nginx's connection numbers.
    let connections: std::collections::BTreeSet<String> = mirror
        .access_log()
        .iter()
        .filter(|e| e.uri == url(PKG))
        .map(|e| e.connection.clone())
        .collect();
    assert_eq!(connections.len(), 1, "{connections:?}");
}

#[test]
fn with_https_redirect_pacman_still_gets_a_302() {
    let r = relay(
        &["https://mirror.example:8443/arch/$repo/os/$arch".to_string()],
        &["--https", "redirect"],
    );
    let got = get(r.addr, &url(PKG), &[]);
    assert_eq!(got.status, 302);
    assert_eq!(
        got.header("location"),
        Some(format!("https://mirror.example:8443/arch/testrepo/os/x86_64/{PKG}").as_str())
    );
}
