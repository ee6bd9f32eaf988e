//! systemd readiness notification (the `sd_notify` protocol) without libsystemd.
//!
//! This module owns one thing: turning a state string such as `"READY=1\nSTATUS=serving 3 peers"`
//! or `"STOPPING=1"` into one datagram sent to the socket named by `$NOTIFY_SOCKET`. It parses that
//! variable (an absolute path, or `@name` for a Linux abstract socket) and sends from a fresh
//! unbound, non-blocking `UnixDatagram`, so a call never stalls the event loop. It does not decide
//! when to notify, does not keep a socket open, does not implement the watchdog, and does not
//! remove the variable from the environment (flocon starts no children). Outside systemd, with
//! `NOTIFY_SOCKET` unset, `notify` does nothing and returns `Ok(false)`.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Largest state message sent; systemd reads at most `PIPE_BUF` (4096) bytes of one datagram.
pub const MAX_STATE_LEN: usize = 4096;

/// Longest socket name that fits `sockaddr_un.sun_path` (108 bytes) on Linux: a path needs its
/// trailing NUL, an abstract name its leading NUL.
const MAX_NAME_LEN: usize = 107;

/// Where the notification goes, as parsed from `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddress {
    /// A socket file, `/run/systemd/notify` for system services.
    Path(PathBuf),
    /// A Linux abstract socket: the name after the `@`, without the leading NUL.
    Abstract(Vec<u8>),
}

/// Why a `$NOTIFY_SOCKET` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyAddressError {
    /// Neither an absolute path nor `@name` (relative paths and `vsock:` are not supported).
    Unsupported,
    /// `@` with nothing after it.
    EmptyName,
    /// Longer than `sockaddr_un` can hold.
    TooLong,
    /// Contains a NUL byte, which a path cannot hold.
    Nul,
}

impl fmt::Display for NotifyAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unsupported => "NOTIFY_SOCKET is neither an absolute path nor @name",
            Self::EmptyName => "NOTIFY_SOCKET names an empty abstract socket",
            Self::TooLong => "NOTIFY_SOCKET is longer than a unix socket address",
            Self::Nul => "NOTIFY_SOCKET contains a NUL byte",
        })
    }
}

impl std::error::Error for NotifyAddressError {}

impl From<NotifyAddressError> for io::Error {
    fn from(e: NotifyAddressError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

impl NotifyAddress {
    /// Parses a `$NOTIFY_SOCKET` value. Pure: no system calls.
    pub fn parse(value: &OsStr) -> Result<Self, NotifyAddressError> {
        let bytes = value.as_bytes();
        match bytes.first() {
            Some(b'@') => {
                let name = &bytes[1..];
                if name.is_empty() {
                    Err(NotifyAddressError::EmptyName)
                } else if name.len() > MAX_NAME_LEN {
                    Err(NotifyAddressError::TooLong)
                } else {
                    // An abstract name may hold any byte, NUL included.
                    Ok(Self::Abstract(name.to_vec()))
                }
            }
            Some(b'/') => {
                if bytes.contains(&0) {
                    Err(NotifyAddressError::Nul)
                } else if bytes.len() > MAX_NAME_LEN {
                    Err(NotifyAddressError::TooLong)
                } else {
                    Ok(Self::Path(PathBuf::from(value)))
                }
            }
            _ => Err(NotifyAddressError::Unsupported),
        }
    }

    fn socket_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Path(path) => SocketAddr::from_pathname(path),
            Self::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
    }
}

/// Sends `state` to `$NOTIFY_SOCKET`. Returns `Ok(false)` when the variable is unset or empty (not
/// started by systemd, or not as `Type=notify`), `Ok(true)` once the datagram is sent.
///
/// Errors: `InvalidInput` for a malformed variable, an empty state or one over `MAX_STATE_LEN`;
/// otherwise the error of `sendto` (`WouldBlock` if systemd's queue is full; the caller may retry
/// on a later loop pass). The caller logs failures; none of them should stop the daemon.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_with(std::env::var_os(NOTIFY_SOCKET_ENV).as_deref(), state)
}

/// `notify` with the variable's value passed in, so tests need not touch the process environment.
pub fn notify_with(notify_socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let value = match notify_socket {
        Some(v) if !v.is_empty() => v,
        _ => return Ok(false),
    };
    let address = NotifyAddress::parse(value)?;
    send_to(&address, state)?;
    Ok(true)
}

/// Sends `state` as one datagram to `address` from a fresh unbound, non-blocking socket.
pub fn send_to(address: &NotifyAddress, state: &str) -> io::Result<()> {
    if state.is_empty() || state.len() > MAX_STATE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "notify state must be 1 to 4096 bytes",
        ));
    }
    let addr = address.socket_addr()?;
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let sent = loop {
        match socket.send_to_addr(state.as_bytes(), &addr) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notify datagram was truncated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn os(bytes: &[u8]) -> OsString {
        OsString::from_vec(bytes.to_vec())
    }

    #[test]
    fn parse_table() {
        let long_path = [b"/".as_slice(), &[b'a'; MAX_NAME_LEN]].concat();
        let max_path = [b"/".as_slice(), &[b'a'; MAX_NAME_LEN - 1]].concat();
        let long_abstract = [b"@".as_slice(), &[b'a'; MAX_NAME_LEN + 1]].concat();
        let cases: Vec<(&[u8], Result<NotifyAddress, NotifyAddressError>)> = vec![
            (
                b"/run/systemd/notify",
                Ok(NotifyAddress::Path("/run/systemd/notify".into())),
            ),
            (
                b"@/org/freedesktop/systemd1/notify/42",
                Ok(NotifyAddress::Abstract(
                    b"/org/freedesktop/systemd1/notify/42".to_vec(),
                )),
            ),
            (b"@x\0y", Ok(NotifyAddress::Abstract(b"x\0y".to_vec()))),
            (b"@", Err(NotifyAddressError::EmptyName)),
            (b"", Err(NotifyAddressError::Unsupported)),
            (b"run/notify", Err(NotifyAddressError::Unsupported)),
            (b"vsock:2:1234", Err(NotifyAddressError::Unsupported)),
            (b"/run/a\0b", Err(NotifyAddressError::Nul)),
            (&long_path, Err(NotifyAddressError::TooLong)),
            (&long_abstract, Err(NotifyAddressError::TooLong)),
        ];
        for (input, want) in cases {
            assert_eq!(
                NotifyAddress::parse(&os(input)),
                want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(NotifyAddress::parse(&os(&max_path)).is_ok());
    }

    #[test]
    fn unset_or_empty_is_not_an_error() {
        assert!(!notify_with(None, "READY=1").unwrap());
        assert!(!notify_with(Some(OsStr::new("")), "READY=1").unwrap());
    }

    #[test]
    fn malformed_value_is_invalid_input() {
        let err = notify_with(Some(OsStr::new("relative")), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    fn unique(tag: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("flocon-notify-{tag}-{}-{nanos}", std::process::id())
    }

    fn receive(listener: &UnixDatagram) -> Vec<u8> {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; MAX_STATE_LEN + 1];
        let n = listener.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = std::env::temp_dir().join(unique("path"));
        std::fs::create_dir(&dir).unwrap();
        let sock = dir.join("notify");
        let listener = UnixDatagram::bind(&sock).unwrap();

        let state = "READY=1\nSTATUS=serving 3 peers";
        let sent = notify_with(Some(sock.as_os_str()), state);
        let got = receive(&listener);
        let stopping = notify_with(Some(sock.as_os_str()), "STOPPING=1");
        let got2 = receive(&listener);
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(sent.unwrap());
        assert_eq!(got, state.as_bytes());
        assert!(stopping.unwrap());
        assert_eq!(got2, b"STOPPING=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = unique("abstract");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let value = format!("@{name}");
        assert!(notify_with(Some(OsStr::new(&value)), "STOPPING=1").unwrap());
        assert_eq!(receive(&listener), b"STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error_and_state_is_bounded() {
        let dir = std::env::temp_dir().join(unique("missing"));
        let sock = dir.join("notify");
        assert!(notify_with(Some(sock.as_os_str()), "READY=1").is_err());
        let address = NotifyAddress::Path(sock);
        let big = "X".repeat(MAX_STATE_LEN + 1);
        for state in ["", big.as_str()] {
            let err = send_to(&address, state).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
