//! The random seed discovery needs from the kernel (for the host id and the jitter). The
//! host's distribution id and architecture come from the configuration (`config::host`).
//!
//! Small blocking reads done once at start-up, before the event loop runs; nothing here is
//! called from the protocol core.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

/// 64 random bits: getrandom(2) (without blocking), else `/dev/urandom`, else a mix of the
/// time, the process id and a stack address. Good enough for host ids and jitter seeds, which
/// only need to differ between hosts and starts; call it once per value needed.
pub fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: the pointer and length describe `buf`, a live writable 8-byte array.
    let n = unsafe {
        libc::getrandom(
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::GRND_NONBLOCK,
        )
    };
    if n == 8 {
        return u64::from_ne_bytes(buf);
    }
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
    {
        return u64::from_ne_bytes(buf);
    }
    fallback_seed()
}

fn fallback_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let stack = std::ptr::addr_of!(local) as u64;
    let mut z = nanos ^ u64::from(std::process::id()).rotate_left(32) ^ stack.rotate_left(17);
    // splitmix64 finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ() {
        let a = random_seed();
        let b = random_seed();
        assert_ne!(a, b);
        assert_ne!(fallback_seed(), 0);
    }
}
