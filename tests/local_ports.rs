//! Who may hold flocon's ports on this host, against the real binary on loopback. Socket
//! activation (`flocon.socket`, `sd_listen_fds(3)`): listeners bound by someone else (here the
//! test, as systemd would) and passed as fds 3.. with `LISTEN_PID`/`LISTEN_FDS` are the ones
//! flocon serves on, so it binds nothing of its own; a passed fd that is not one of its
//! listeners is named and left alone; without activation, a port another process holds is a
//! clear error and exit status 1. And no other socket, of any user, can bind the discovery UDP
//! port beside the daemon to read the questions peers send it.

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::http::{build_request, request};
use common::{Daemon, TempDir, free_port};

const START: Duration = Duration::from_secs(20);

/// flocon on loopback serving `dir`, with these ports.
fn flocon_args(dir: &TempDir, port: u16, local: u16) -> Vec<String> {
    common::flocon::loopback_args(dir.path(), port, local)
}

/// Starts flocon with `fds` as its fds 3, 4, ... and `LISTEN_PID` set to its own pid (through
/// `sh`, which keeps its pid when it execs flocon), as systemd starts a socket-activated unit.
fn spawn_activated(name: &str, args: &[String], fds: &[RawFd]) -> Daemon {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS={} exec \"$0\" \"$@\"",
            fds.len()
        ))
        .arg(env!("CARGO_BIN_EXE_flocon"))
        .args(args);
    let fds = fds.to_vec();
    // SAFETY: between fork and exec only fcntl and dup2, which are async-signal-safe, are
    // called; the source fds stay open in the parent (the test) until the child has started.
    // Each source is first copied above the targets, so that a source that is itself 3 or 4
    // is neither overwritten nor left close-on-exec (dup2 onto itself keeps that flag).
    unsafe {
        cmd.pre_exec(move || {
            let mut high = Vec::with_capacity(fds.len());
            for &fd in &fds {
                let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(copy);
            }
            for (i, &fd) in high.iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Daemon::spawn_command(name, cmd)
}

fn status_page(local: u16) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    let r = request(addr, &build_request("GET", "localhost", "/status", &[]))
        .unwrap_or_else(|e| panic!("GET /status on {addr}: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn listeners_passed_by_systemd_are_served_and_nothing_is_bound_again() {
    let dir = TempDir::new("activation");
    let package = "passed-1.0-1-any.pkg.tar.zst";
    fs::write(dir.join(package), b"a package behind a passed socket").expect("write package");
    let (port, local) = (free_port(), free_port());
    // What flocon.socket binds: the peer port on every address (IPv4 and IPv6, IPv6-only as
    // with BindIPv6Only=ipv6-only), pacman's on loopback.
    let peer = TcpListener::bind(("0.0.0.0", port)).expect("bind peer port");
    let peer6 = listen_v6_only(port);
    let have_v6 = peer6.is_some();
    let v4 = TcpListener::bind(("127.0.0.1", local)).expect("bind local v4");
    let v6 = TcpListener::bind(("::1", local)).ok();
    let mut fds = vec![v4.as_raw_fd(), peer.as_raw_fd()];
    fds.extend(v6.as_ref().map(|l| l.as_raw_fd()));
    fds.extend(peer6.as_ref().map(|l| l.as_raw_fd()));
    let mut daemon = spawn_activated("flocon", &flocon_args(&dir, port, local), &fds);
    daemon.wait_for_line_containing("pacman downloads through here", START);
    let passed = daemon.count_lines_when(
        |l| l.contains("a socket from systemd"),
        fds.len(),
        Duration::from_secs(5),
    );
    assert_eq!(passed, fds.len(), "{:#?}", daemon.lines());
    // The test's own listeners are closed: only flocon's copies are left to accept.
    drop((peer, peer6, v4, v6));

    assert!(status_page(local).contains("peers"));
    let got = request(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &build_request("GET", "peer", &format!("/{package}"), &[]),
    )
    .expect("GET from the peer port");
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, b"a package behind a passed socket");
    if have_v6 {
        let got = request(
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            &build_request("GET", "peer", &format!("/{package}"), &[]),
        )
        .expect("GET from the peer port over IPv6");
        assert_eq!(got.status, 200, "{}", got.text());
    }

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn a_passed_fd_that_is_not_a_flocon_listener_is_named_and_its_ports_are_bound() {
    let dir = TempDir::new("activation-other");
    let (port, local) = (free_port(), free_port());
    let stranger = TcpListener::bind(("127.0.0.1", free_port())).expect("bind another port");
    let datagram = UdpSocket::bind(("127.0.0.1", 0)).expect("bind a UDP socket");
    let fds = [stranger.as_raw_fd(), datagram.as_raw_fd()];
    let mut daemon = spawn_activated("flocon", &flocon_args(&dir, port, local), &fds);
    daemon.wait_for_line_containing("pacman downloads through here", START);
    let refused = daemon.count_lines_when(
        |l| l.contains("socket passed by systemd not used"),
        2,
        Duration::from_secs(5),
    );
    assert_eq!(refused, 2, "{:#?}", daemon.lines());
    assert!(
        daemon
            .find_line(|l| l.contains("not one of flocon's ports"))
            .is_some()
    );
    assert!(
        daemon
            .find_line(|l| l.contains("not a listening TCP socket"))
            .is_some()
    );
    assert!(status_page(local).contains("peers"));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn without_activation_a_port_held_by_another_process_is_a_clear_error() {
    let dir = TempDir::new("activation-squatted");
    let (port, local) = (free_port(), free_port());
    let _squatter = TcpListener::bind(("127.0.0.1", local)).expect("bind the local port");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flocon"));
    cmd.args(flocon_args(&dir, port, local));
    let mut daemon = Daemon::spawn_command("flocon", cmd);
    let status = daemon.wait_exit(START);
    assert_eq!(status.code(), Some(1), "{:#?}", daemon.lines());
    let line = daemon
        .find_line(|l| l.contains(&format!("cannot listen on TCP 127.0.0.1:{local}")))
        .unwrap_or_else(|| panic!("no clear error: {:#?}", daemon.lines()));
    assert!(line.contains("pacman"), "{line}");
}

#[test]
fn no_socket_can_share_the_discovery_port_beside_the_daemon() {
    let dir = TempDir::new("udp-port");
    let (port, local) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flocon"));
    cmd.args(flocon_args(&dir, port, local));
    let mut daemon = Daemon::spawn_command("flocon", cmd);
    // The UDP socket is opened after the TCP listeners.
    daemon.wait_for_line_containing("listening on UDP", START);
    // What a local user would try: SO_REUSEADDR (and SO_REUSEPORT) on the same address.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .expect("a UDP socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    let err = socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .expect_err("bound the daemon's UDP port beside it");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// A listener on `[::]:port`, IPv6 only (as systemd binds it with `BindIPv6Only=ipv6-only`);
/// `None` where the kernel has no IPv6.
fn listen_v6_only(port: u16) -> Option<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).ok()?;
    socket.set_only_v6(true).ok()?;
    let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    socket.bind(&addr.into()).ok()?;
    socket.listen(16).ok()?;
    Some(socket.into())
}
