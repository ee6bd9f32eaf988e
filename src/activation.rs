//! Listening sockets handed over by systemd (socket activation, `sd_listen_fds(3)`): with
//! `flocon.socket`, systemd binds TCP 19433 on loopback and 19432 on the LAN at boot and keeps
//! them across restarts of the daemon, so no local user can take a port while flocon restarts,
//! and pacman's connections wait in the queue meanwhile.
//!
//! Owns reading `LISTEN_PID`/`LISTEN_FDS` (the first fd is 3), checking that each fd is a
//! listening TCP socket, and saying which of flocon's listeners it is by its address. It does
//! not bind anything (the event loop binds what systemd did not pass) and does not register.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;
/// More than this many passed descriptors is refused as nonsense.
pub const MAX_FDS: usize = 16;

/// Which listener of the daemon a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The LAN's file server (`--port`, any IPv4 address).
    Peer,
    /// The LAN's file server on IPv6 (`--port`, any IPv6 address; IPv6-only or dual-stack).
    PeerV6,
    /// pacman's relay on 127.0.0.1.
    LocalV4,
    /// pacman's relay on [::1].
    LocalV6,
}

/// How many descriptors systemd passed to this process: `LISTEN_FDS` when `LISTEN_PID` is our
/// pid (they were meant for us, not for a parent that exec'd us), else none.
pub fn passed_count(listen_pid: Option<&str>, listen_fds: Option<&str>, my_pid: u32) -> usize {
    let for_us = listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(my_pid);
    match listen_fds.and_then(|n| n.trim().parse::<usize>().ok()) {
        Some(n) if for_us && n <= MAX_FDS => n,
        _ => 0,
    }
}

/// The role of a listener bound to `addr`, given the daemon's ports; `None` when it is none of
/// them.
pub fn role_of(addr: SocketAddr, peer_port: u16, local_port: u16) -> Option<Role> {
    match addr {
        SocketAddr::V4(a) if a.port() == local_port && a.ip().is_loopback() => Some(Role::LocalV4),
        SocketAddr::V6(a) if a.port() == local_port && a.ip().is_loopback() => Some(Role::LocalV6),
        SocketAddr::V4(a) if a.port() == peer_port && !a.ip().is_loopback() => Some(Role::Peer),
        SocketAddr::V6(a) if a.port() == peer_port && !a.ip().is_loopback() => Some(Role::PeerV6),
        _ => None,
    }
}

/// The listeners systemd passed, each with its role, non-blocking and close-on-exec; and a
/// line for each passed descriptor that was not one of ours (closed).
pub fn take_listeners(peer_port: u16, local_port: u16) -> (Vec<(Role, TcpListener)>, Vec<String>) {
    let count = passed_count(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    );
    let mut listeners = Vec::new();
    let mut refused = Vec::new();
    for fd in (FIRST_FD..).take(count) {
        // SAFETY: F_GETFD only reads the descriptor's flags; it fails for a closed fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            refused.push(format!("fd {fd}: not open"));
            continue;
        }
        // SAFETY: systemd passed fds 3..3+LISTEN_FDS to this process (LISTEN_PID is ours) and
        // nothing else in the process owns them; the Socket takes ownership and closes it when
        // dropped.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
        let listening = socket.r#type().ok() == Some(socket2::Type::STREAM)
            && socket.is_listener().unwrap_or(false);
        let addr = socket.local_addr().ok().and_then(|a| a.as_socket());
        let role = addr.and_then(|a| role_of(a, peer_port, local_port));
        match (listening, addr, role) {
            (true, Some(_), Some(role)) => {
                if socket.set_nonblocking(true).is_ok() && socket.set_cloexec(true).is_ok() {
                    listeners.push((role, TcpListener::from(socket)));
                } else {
                    refused.push(format!("fd {fd}: cannot make it non-blocking"));
                }
            }
            (true, Some(a), None) => refused.push(format!(
                "fd {fd}: TCP {a} is not one of flocon's ports ({peer_port}, {local_port} on loopback)"
            )),
            _ => refused.push(format!("fd {fd}: not a listening TCP socket")),
        }
    }
    (listeners, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptors_meant_for_this_process_count() {
        assert_eq!(passed_count(Some("42"), Some("3"), 42), 3);
        assert_eq!(passed_count(Some("41"), Some("3"), 42), 0, "for a parent");
        assert_eq!(passed_count(None, Some("3"), 42), 0);
        assert_eq!(passed_count(Some("42"), None, 42), 0);
        assert_eq!(passed_count(Some("42"), Some("x"), 42), 0);
        assert_eq!(passed_count(Some("42"), Some("-1"), 42), 0);
        assert_eq!(passed_count(Some("42"), Some("17"), 42), 0, "too many");
    }

    #[test]
    fn roles_by_address() {
        let r = |a: &str| role_of(a.parse().expect("addr"), 19432, 19433);
        assert_eq!(r("127.0.0.1:19433"), Some(Role::LocalV4));
        assert_eq!(r("[::1]:19433"), Some(Role::LocalV6));
        assert_eq!(r("0.0.0.0:19432"), Some(Role::Peer));
        assert_eq!(r("[::]:19432"), Some(Role::PeerV6));
        assert_eq!(r("192.0.2.7:19432"), Some(Role::Peer));
        assert_eq!(r("0.0.0.0:19433"), None, "pacman's port open to the LAN");
        assert_eq!(r("127.0.0.1:19432"), None);
        assert_eq!(r("127.0.0.1:80"), None);
    }
}
