//! Non-blocking socket and file I/O, reduced to small outcomes.
//!
//! Owns the system calls that move bytes (`read`, `write`, `send` with
//! `MSG_MORE`, `sendfile`, `pread`) and turns their results into [`Io`]; it
//! does not decide what to send or when. `Interrupted` is retried here; every
//! other error is handed back.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The outcome of one I/O step.
#[derive(Debug)]
pub enum Io {
    /// This many bytes moved (never 0).
    Done(usize),
    /// Nothing can move now; wait for readiness.
    WouldBlock,
    /// The peer closed (read returned 0), or sendfile hit the file's end.
    Closed,
    Error(io::Error),
}

pub fn read(stream: &mut impl Read, buf: &mut [u8]) -> Io {
    loop {
        return match stream.read(buf) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Error(e),
        };
    }
}

pub fn write(stream: &mut impl Write, buf: &[u8]) -> Io {
    loop {
        return match stream.write(buf) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Error(e),
        };
    }
}

/// `send(2)` with `MSG_MORE` when `more` is set, so that a response head and
/// the first body bytes that follow leave in one segment.
pub fn send(socket: &impl AsRawFd, buf: &[u8], more: bool) -> Io {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    loop {
        // SAFETY: the pointer and length describe `buf`, which outlives the call.
        let n = unsafe { libc::send(socket.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
        if let Some(io) = outcome(n) {
            return io;
        }
    }
}

/// `writev(2)` of two slices (a response head and the body bytes behind it):
/// one call where two would do.
pub fn write2(socket: &impl AsRawFd, first: &[u8], second: &[u8]) -> Io {
    let iov = [
        libc::iovec {
            iov_base: first.as_ptr() as *mut libc::c_void,
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_ptr() as *mut libc::c_void,
            iov_len: second.len(),
        },
    ];
    let count = if second.is_empty() { 1 } else { 2 };
    loop {
        // SAFETY: both iovecs describe live slices that outlive the call;
        // writev only reads them.
        let n = unsafe { libc::writev(socket.as_raw_fd(), iov.as_ptr(), count) };
        if let Some(io) = outcome(n) {
            return io;
        }
    }
}

/// A raw `ssize_t` result as an outcome; `None`: interrupted, call again.
fn outcome(n: isize) -> Option<Io> {
    if n > 0 {
        return Some(Io::Done(n as usize));
    }
    if n == 0 {
        return Some(Io::Closed);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(Io::WouldBlock),
        _ => Some(Io::Error(e)),
    }
}

/// Largest `sendfile` request; bounded so that one call never holds the loop
/// long and the count always fits a 32-bit `size_t`. 128 KiB rather than
/// 1 MiB: likely because a call pushes its last segments when it returns,
/// smaller calls feed the receiver a steadier stream, where 1 MiB ones came
/// in bursts that filled its window (more zero-window advertisements on a
/// quiet loopback). A curl reading a 200 MiB file on loopback, on the other
/// core, got 0.72-0.90x lighttpd's rate with 1 MiB calls, 0.86-0.98x with
/// 256 KiB and 1.06-1.09x with 128 KiB, at the same CPU per byte; sharing a
/// core with the server, the size made no difference (docs/performance.md,
/// issue 11 item 9).
pub const SENDFILE_CHUNK: u64 = 128 << 10;

/// Sends up to `count` bytes of `file` from `offset` with `sendfile(2)`, the
/// large-file variant on glibc so offsets past 2 GiB work on 32-bit targets.
/// `Error` with `EINVAL`/`ENOSYS` means "use [`pread`] and [`send`] instead".
pub fn sendfile(socket: &impl AsRawFd, file: &File, offset: u64, count: u64) -> Io {
    let count = count.min(SENDFILE_CHUNK) as usize;
    loop {
        let n = sendfile_raw(socket.as_raw_fd(), file.as_raw_fd(), offset, count);
        if let Some(io) = outcome(n) {
            return io;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn sendfile_raw(out: i32, input: i32, offset: u64, count: usize) -> isize {
    let Ok(mut off) = libc::off64_t::try_from(offset) else {
        return -1;
    };
    // SAFETY: both descriptors are open for the duration of the call, and
    // `off` is a valid, exclusively borrowed off64_t.
    unsafe { libc::sendfile64(out, input, &mut off, count) }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn sendfile_raw(out: i32, input: i32, offset: u64, count: usize) -> isize {
    let Ok(mut off) = libc::off_t::try_from(offset) else {
        return -1;
    };
    // SAFETY: both descriptors are open for the duration of the call, and
    // `off` is a valid, exclusively borrowed off_t.
    unsafe { libc::sendfile(out, input, &mut off, count) }
}

/// Whether a `sendfile` error means the descriptors do not support it.
pub fn sendfile_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// Reads up to `buf.len()` bytes of `file` at `offset` (the fallback path).
pub fn pread(file: &File, buf: &mut [u8], offset: u64) -> Io {
    loop {
        return match file.read_at(buf, offset) {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Io::Error(e),
        };
    }
}

/// Whether a kept-alive connection nobody reads from is still open and quiet:
/// a peek that would block. End of stream, an error or unexpected bytes all
/// mean it must not carry another request.
pub fn is_idle_open(socket: &impl AsRawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: the buffer is one valid, writable byte that outlives the call.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// What a connection state machine wants from the loop after it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Keep it: run it again on its next event or at the deadline; `again`
    /// asks to be run once more without waiting for an event (it stopped on
    /// its per-turn budget, not on `WouldBlock`). The loop registers every
    /// socket once for both readiness kinds, edge-triggered, as nginx does:
    /// an edge comes only when something changed, so a connection that waits
    /// on one kind is not woken by the other in a loop, and switching
    /// between reading a request and writing a response costs no
    /// `epoll_ctl`.
    Io {
        deadline: Option<std::time::Instant>,
        again: bool,
        /// The connection's outbound socket to register (by its id; a new id
        /// is a new socket), if it has one.
        source: Option<u32>,
    },
    /// (The relay only.) A connection to `addr` for its next source: with
    /// `reuse`, an idle kept-alive one from the loop's pool if there is one,
    /// else a new one. The loop opens it and runs the connection again at
    /// once with the answer (`relay::Input::Connected`).
    Connect {
        addr: std::net::SocketAddr,
        reuse: bool,
    },
    /// Finished: drop it (which closes its sockets).
    Close,
}
