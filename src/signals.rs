//! Signals through a self-pipe: the handler only sets a flag and writes a byte.
//!
//! Owns `sigaction` for SIGTERM, SIGINT, SIGUSR1, SIGUSR2 (and ignoring
//! SIGPIPE), and the pipe whose read end the event loop registers. It does not
//! act on signals: the loop drains the pipe, then takes the pending set with
//! [`SignalPipe::take`] and decides.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use mio::unix::pipe;

/// Which signals arrived since the last [`SignalPipe::take`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// SIGTERM or SIGINT.
    pub stop: bool,
    /// SIGUSR1: log the state.
    pub report: bool,
    /// SIGUSR2: rejoin multicast.
    pub rejoin: bool,
}

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static FLAGS: AtomicU32 = AtomicU32::new(0);

const STOP: u32 = 1;
const REPORT: u32 = 2;
const REJOIN: u32 = 4;

extern "C" fn on_signal(signal: libc::c_int) {
    // SAFETY: reading errno through its thread-local pointer is always valid.
    let saved = unsafe { *libc::__errno_location() };
    let bit = match signal {
        libc::SIGTERM | libc::SIGINT => STOP,
        libc::SIGUSR1 => REPORT,
        libc::SIGUSR2 => REJOIN,
        _ => 0,
    };
    FLAGS.fetch_or(bit, Ordering::SeqCst);
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte.
        // EAGAIN (pipe full) is fine: a wake-up is already pending.
        unsafe {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
    }
    // SAFETY: as above; restores errno for the interrupted code.
    unsafe { *libc::__errno_location() = saved };
}

/// The read end of the self-pipe, for the event loop to register.
pub struct SignalPipe {
    receiver: pipe::Receiver,
    // Kept open for the handler; its fd is in WRITE_FD.
    _sender: pipe::Sender,
}

impl SignalPipe {
    /// Creates the pipe and installs the handlers. Call once.
    pub fn install() -> io::Result<SignalPipe> {
        let (sender, receiver) = pipe::new()?;
        WRITE_FD.store(sender.as_raw_fd(), Ordering::SeqCst);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2] {
            set_handler(signal, on_signal as *const () as libc::sighandler_t)?;
        }
        set_handler(libc::SIGPIPE, libc::SIG_IGN)?;
        Ok(SignalPipe {
            receiver,
            _sender: sender,
        })
    }

    pub fn receiver(&mut self) -> &mut pipe::Receiver {
        &mut self.receiver
    }

    /// Drains the pipe, then returns and clears the pending signals.
    pub fn take(&mut self) -> Pending {
        let mut buf = [0u8; 64];
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let bits = FLAGS.swap(0, Ordering::SeqCst);
        Pending {
            stop: bits & STOP != 0,
            report: bits & REPORT != 0,
            rejoin: bits & REJOIN != 0,
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        WRITE_FD.store(-1, Ordering::SeqCst);
    }
}

fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid starting value; the mask is
    // initialised with sigemptyset before use, and the handler is either
    // SIG_IGN or an extern "C" fn that only does async-signal-safe work.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
