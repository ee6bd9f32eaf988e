//! Facts about this host that discovery needs from the kernel and the file system: a random
//! seed (for the host id and the jitter), the machine architecture and the distribution id.
//!
//! Small blocking reads done once at start-up, before the event loop runs; nothing here is
//! called from the protocol core.

use std::ffi::CStr;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use super::identity::os_release_id;

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

/// The machine architecture from uname(2), e.g. `x86_64`, `aarch64`; `unknown` if uname fails.
pub fn machine_arch() -> String {
    // SAFETY: utsname is plain old data (arrays of c_char); all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a live, writable utsname for uname to fill.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_owned();
    }
    let bytes: Vec<u8> = uts.machine.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .ok()
        .and_then(|c| c.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// The distribution id: `ID` of `/etc/os-release`, else of `/usr/lib/os-release`, else `linux`
/// (the default os-release(5) gives). Reads at most 64 KiB of each file.
pub fn distro_id() -> String {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        let mut text = String::new();
        let read =
            std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_string(&mut text));
        if read.is_ok() {
            if let Some(id) = os_release_id(&text) {
                return id;
            }
        }
    }
    "linux".to_owned()
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

    #[test]
    fn arch_and_distro_are_labels() {
        let arch = machine_arch();
        assert_ne!(arch, "unknown");
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(arch, std::env::consts::ARCH);
        }
        let distro = distro_id();
        assert!(!distro.is_empty());
    }
}
