//! SHA-256 throughput of the `sha2` crate as flocon uses it: 64 KiB slices of a buffer (what
//! `trust::digests` hashes per step; the relay hashes whatever each read brought), over 1 GiB by
//! default. Prints MB/s and CPU milliseconds per GiB hashed.
//!
//!   cargo run --release --example sha256_speed [MiB]

use std::time::Instant;

use sha2::{Digest, Sha256};

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given, which is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage returned 0, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let slice: Vec<u8> = (0..64 * 1024).map(|i| (i * 131 + 7) as u8).collect();
    let slices = mib * 16;
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut hasher = Sha256::new();
    for _ in 0..slices {
        hasher.update(&slice);
    }
    let digest = hasher.finalize();
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let bytes = (slices * slice.len()) as f64;
    println!(
        "sha2 SHA-256: {mib} MiB in {wall:.3} s = {:.0} MB/s; {:.0} ms CPU per GiB (digest {:02x}{:02x}..)",
        bytes / wall / 1e6,
        cpu * 1000.0 / (bytes / (1u64 << 30) as f64),
        digest[0],
        digest[1]
    );
    // One 64 KiB slice, the trust module's step: how long it holds the loop.
    let t = Instant::now();
    let mut h = Sha256::new();
    h.update(&slice);
    let _ = h.finalize();
    println!("one 64 KiB slice: {} us", t.elapsed().as_micros());
}
