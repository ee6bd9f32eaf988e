//! systemd's `Type=notify` protocol against the real binary: `READY=1` comes
//! once every listener is up, `STOPPING=1` when SIGTERM arrives.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, TempDir, free_port};

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("no sd_notify datagram within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The daemon on loopback only, serving `dir`.
fn daemon_command(dir: &TempDir, port: u16, local: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flocon"));
    cmd.args([
        "-c",
        "/dev/null",
        "--pacman-conf",
        "/nonexistent",
        "--interface",
        "lo",
    ])
    .arg("--cache-dir")
    .arg(dir.path())
    .args([
        "--port",
        &port.to_string(),
        "--local-port",
        &local.to_string(),
    ]);
    cmd
}

#[test]
fn ready_after_listeners_and_stopping_on_sigterm() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (port, local) = (free_port(), free_port());
    let mut cmd = daemon_command(&dir, port, local);
    cmd.env("NOTIFY_SOCKET", &path);
    let mut daemon = Daemon::spawn_command("flocon", cmd);

    assert_eq!(receive(&socket), "READY=1");
    // Ready means ready: both TCP listeners accept at once.
    for p in [port, local] {
        TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], p)),
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("port {p} not accepting after READY=1: {e}"));
    }
    daemon.wait_for_line_containing("listening on UDP", Duration::from_secs(5));

    daemon.signal(libc::SIGTERM);
    assert_eq!(receive(&socket), "STOPPING=1");
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_start_is_normal() {
    let dir = TempDir::new("nonotify");
    let (port, local) = (free_port(), free_port());
    let mut cmd = daemon_command(&dir, port, local);
    cmd.env_remove("NOTIFY_SOCKET");
    let mut daemon = Daemon::spawn_command("flocon", cmd);
    daemon.wait_for_line_containing("serving cache directory", Duration::from_secs(20));
    assert!(daemon.find_line(|l| l.contains("sd_notify")).is_none());
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
